#!/usr/bin/env python3
"""The console in a real browser (Debian's Chromium, driven by Playwright): every page loads
with no console error and no failed request, the overview's numbers are the API's, and a
rollback made through the Config page's button changes what the node runs; the Upstreams
and Policies pages show the calls and refusals the API counts.

    console.py ADMIN_URL OUT_DIR

Run by the gateway test `console_in_a_browser`, which starts the node (from a config store,
with two versions and a known load) and checks the rollback's effect itself. Screenshots of
each page are written to OUT_DIR. Exit 0 when every check passes; a failed check raises.
"""

import json
import sys
import urllib.request

from playwright.sync_api import sync_playwright

admin, out = sys.argv[1].rstrip("/"), sys.argv[2]


def api(path):
    with urllib.request.urlopen(admin + "/api/v1" + path, timeout=10) as r:
        return json.load(r)


errors = []
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url} {r.failure}"))
    page.on("response", lambda r: errors.append(f"{r.status} for {r.url}") if r.status >= 400 else None)

    # Overview: the 15 minutes' request count is the API's (no traffic meanwhile).
    page.goto(admin + "/#overview")
    page.wait_for_selector("svg.chart")
    card = page.locator(".card", has_text="requests, 15 min").locator(".v")
    want = api("/stats?window=15m")["total"]["requests"]
    assert int(card.inner_text().replace(",", "")) == want, (card.inner_text(), want)
    assert want > 0
    page.screenshot(path=f"{out}/overview.png", full_page=True)

    # Routes: the table lists the config's routes; the filter hides the others; explain.
    page.goto(admin + "/#routes")
    page.wait_for_selector("#route-rows tr")
    names = [r["name"] for r in api("/routes")["routes"]]
    rows = page.locator("#route-rows tr")
    assert rows.count() == len(names), (rows.count(), names)
    page.fill("input[type=search]", names[0])
    assert page.locator("#route-rows tr").count() == 1
    page.fill("input[type=search]", "")
    # The upstream answers that broke their contract, as the API lists them.
    drift = api("/contract/violations?limit=20")["violations"]
    assert len(drift) > 0
    assert page.locator("#violations tbody tr").count() == len(drift), page.inner_text("main")
    assert drift[0]["route"] in page.inner_text("#violations")
    page.fill("input[aria-label='URL to explain']", "/anything")
    page.click("button:has-text('Explain')")
    try:
        page.wait_for_selector("main pre", timeout=10000)
    except Exception:
        raise AssertionError("explain showed nothing: " + page.inner_text("main") + "\n" + "\n".join(errors))
    page.screenshot(path=f"{out}/routes.png", full_page=True)

    # Upstreams: a row per target, with the calls the live view counted on it.
    page.goto(admin + "/#upstreams")
    page.wait_for_selector("table tbody tr")
    targets = [t["target"] for u in api("/upstreams").values() for t in u["targets"]]
    assert page.locator("table tbody tr").count() == len(targets), targets
    u_target = api("/upstreams")["u"]["targets"][0]["target"]
    calls = api("/stats?window=5m")["upstreams"]["u"]["targets"][u_target]["requests"]
    assert calls == 5, calls
    page.screenshot(path=f"{out}/upstreams.png", full_page=True)

    # Policies: the rate limit's refusals and the consumers, as the API has them.
    page.goto(admin + "/#policies")
    page.wait_for_selector("text=Rate limits")
    limit = api("/rate-limits")["rate_limits"][0]
    assert limit["refused"] == 3, limit
    row = page.locator("tr", has_text="client_ip")
    assert "3" in row.locator("td").nth(5).inner_text(), row.inner_text()
    assert page.locator("tr", has_text="billing").count() == 1
    assert "api_keys × 1" in page.locator("tr", has_text="billing").inner_text()
    page.screenshot(path=f"{out}/policies.png", full_page=True)

    page.goto(admin + "/#fleet")
    page.wait_for_selector("h2")
    page.screenshot(path=f"{out}/fleet.png", full_page=True)

    # Config: diff the two versions, then roll back to the first through its button.
    page.goto(admin + "/#config")
    page.wait_for_selector("text=Versions this node applied")
    page.click("text=Diff")
    page.wait_for_selector("pre")
    before = api("/config")["hash"]
    page.on("dialog", lambda d: d.accept())
    page.locator("button", has_text="Roll back to this").first.click()
    page.wait_for_selector("text=Pushed as store version")
    after = api("/config")["hash"]
    assert after != before, "the rollback changed nothing"
    page.screenshot(path=f"{out}/config.png", full_page=True)
    browser.close()

assert not errors, "\n".join(errors)
print("console: every page loaded cleanly; rollback applied", after)
