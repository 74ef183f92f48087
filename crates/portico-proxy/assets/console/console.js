// The Portico console: a client of the admin API (/api/v1, described at /api/openapi.json)
// and nothing else. No library, no build step; every value from the API is written as text.
"use strict";

const API = "/api/v1";
const page = document.getElementById("page");
let refresh = null;
// A message for the next drawing of the page (what a write did), shown once.
let flash = null;

// --- The API -------------------------------------------------------------------------------

function token() {
  return sessionStorage.getItem("portico-admin-token");
}

// One prompt at a time: calls refused together wait for the same answer.
let asking = null;

function askToken() {
  if (asking) return asking;
  asking = new Promise((resolve) => {
    const dialog = document.getElementById("token-dialog");
    const form = document.getElementById("token-form");
    form.onsubmit = () => {
      sessionStorage.setItem("portico-admin-token", document.getElementById("token").value);
      resolve();
    };
    dialog.showModal();
  }).finally(() => { asking = null; });
  return asking;
}

// A JSON (or text) answer; a problem+json refusal becomes an Error with its detail.
async function api(path, options = {}) {
  for (let attempt = 0; attempt < 3; attempt++) {
    const headers = Object.assign({}, options.headers || {});
    if (token()) headers.Authorization = "Bearer " + token();
    if (options.body) headers["Content-Type"] = "application/json";
    const r = await fetch(API + path, Object.assign({}, options, { headers }));
    if (r.status === 401) {
      await askToken();
      continue;
    }
    const type = r.headers.get("content-type") || "";
    const body = type.includes("json") ? await r.json() : await r.text();
    if (!r.ok) {
      const e = new Error(body && body.detail ? body.detail : r.status + " " + r.statusText);
      e.status = r.status;
      throw e;
    }
    return body;
  }
  throw new Error("the admin port refused the token");
}

// --- Building pages ------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function fmt(n, digits = 1) {
  if (n === null || n === undefined) return "–";
  if (typeof n !== "number") return String(n);
  return Number.isInteger(n) ? n.toLocaleString() : n.toFixed(digits);
}

function pct(x) {
  return x === null || x === undefined ? "–" : (x * 100).toFixed(2) + " %";
}

function card(label, value, cls = "") {
  return el("div", { class: "card" }, el("div", { class: "muted" }, label), el("div", { class: "v " + cls }, value));
}

function table(headers, rows) {
  return el("div", { class: "scroll" },
    el("table", {},
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows)));
}

function problem(e) {
  return el("p", { class: "bad", role: "alert" }, e.message);
}

// A line chart of one or more series (same length) over the window, as SVG.
function chart(title, t, series, unit) {
  const NS = "http://www.w3.org/2000/svg";
  const w = 600, h = 140, pad = 28;
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("class", "chart");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", title);
  const values = series.flatMap((s) => s.values).filter((v) => v !== null && v !== undefined);
  const max = Math.max(1e-9, ...values) * 1.1;
  const t0 = t.length ? t[0] : 0, t1 = t.length ? t[t.length - 1] : 1;
  const x = (i) => pad + ((t[i] - t0) / Math.max(1, t1 - t0)) * (w - pad - 4);
  const y = (v) => h - 14 - (v / max) * (h - 24);
  for (const g of [0, 0.5, 1]) {
    const line = document.createElementNS(NS, "line");
    line.setAttribute("class", "grid");
    line.setAttribute("x1", pad); line.setAttribute("x2", w);
    line.setAttribute("y1", y(max * g / 1.1)); line.setAttribute("y2", y(max * g / 1.1));
    svg.append(line);
    const label = document.createElementNS(NS, "text");
    label.setAttribute("x", 0); label.setAttribute("y", y(max * g / 1.1) + 3);
    label.textContent = fmt(max * g / 1.1, 1);
    svg.append(label);
  }
  series.forEach((s, k) => {
    let d = "";
    s.values.forEach((v, i) => {
      if (v === null || v === undefined) return;
      d += (d ? "L" : "M") + x(i).toFixed(1) + " " + y(v).toFixed(1);
    });
    const p = document.createElementNS(NS, "path");
    p.setAttribute("d", d);
    p.setAttribute("class", "s" + (k % 3));
    svg.append(p);
  });
  const legend = series.map((s, k) => el("span", { class: "s" + (k % 3) }, s.name + " ")).concat(el("span", { class: "muted" }, unit));
  return el("div", { class: "card" }, el("div", {}, title, " ", ...legend), svg);
}

// --- Pages ---------------------------------------------------------------------------------

async function overview() {
  const s = await api("/stats?window=15m");
  const last = await api("/stats?window=60s");
  const t = s.series.t;
  const errRate = s.series.requests.map((n, i) => (n ? s.series.server_errors[i] / n * 100 : 0));
  return [
    el("h2", {}, "Last minute"),
    el("div", { class: "cards" },
      card("requests / s", fmt(last.total.requests_per_second)),
      card("5xx rate", pct(last.total.error_rate), last.total.error_rate > 0.01 ? "bad" : "ok"),
      card("p50", fmt(last.total.p50_ms) + " ms"),
      card("p95", fmt(last.total.p95_ms) + " ms"),
      card("p99", fmt(last.total.p99_ms) + " ms"),
      card("4xx", fmt(last.total.client_errors)),
      card("requests, 15 min", fmt(s.total.requests))),
    el("h2", {}, "Last 15 minutes"),
    el("div", { class: "charts" },
      chart("Requests per second", t, [{ name: "requests", values: s.series.requests }], ""),
      chart("5xx rate", t, [{ name: "5xx", values: errRate }], "%"),
      chart("Latency", t, [
        { name: "p50", values: s.series.p50_ms },
        { name: "p99", values: s.series.p99_ms },
        { name: "p95", values: s.series.p95_ms },
      ], "ms")),
    el("h2", {}, "Last minute by upstream"),
    table(["upstream", "calls/s", "5xx", "p50 ms", "p99 ms"],
      Object.entries(last.upstreams || {}).map(([name, u]) => el("tr", {},
        el("td", {}, name),
        el("td", { class: "n" }, fmt(u.requests_per_second, 2)),
        el("td", { class: "n" }, pct(u.error_rate)),
        el("td", { class: "n" }, fmt(u.p50_ms)),
        el("td", { class: "n" }, fmt(u.p99_ms))))),
    el("p", { class: "muted" }, "Percentiles are latency-bucket upper bounds; /metrics has the exact histograms."),
  ];
}

function describeMatch(m) {
  if (!m) return "everything";
  const parts = [];
  if (m.host) parts.push("host " + JSON.stringify(m.host));
  if (m.path) parts.push("path " + JSON.stringify(m.path));
  if (m.methods) parts.push(m.methods.join(","));
  if (m.headers) parts.push("headers " + JSON.stringify(m.headers));
  if (m.query) parts.push("query " + JSON.stringify(m.query));
  return parts.join("; ") || "everything";
}

function describeAction(r) {
  const a = r.action;
  let text = "";
  if (a.proxy) text = "→ " + a.proxy.map((u) => u.upstream + (a.proxy.length > 1 ? " (" + u.weight + ")" : "")).join(", ");
  else if (a.respond) text = "respond " + a.respond.status;
  else if (a.redirect) text = "redirect " + a.redirect.status;
  else if (a.aggregate) text = "aggregate " + a.aggregate.map((b) => b.upstream).join(", ");
  return r.translation ? text + " · " + r.translation : text;
}

async function routes() {
  const [rl, stats, drift] = await Promise.all([api("/routes"), api("/stats?window=5m"), api("/contract/violations?limit=20")]);
  const list = rl.routes;
  const search = el("input", { type: "search", placeholder: "Filter routes", "aria-label": "Filter routes" });
  const body = el("tbody", { id: "route-rows" });
  const draw = () => {
    const q = search.value.toLowerCase();
    body.replaceChildren(...list.map((r) => {
      const name = r.name;
      const st = stats.routes[name] || {};
      const text = [name, describeMatch(r.match), describeAction(r)].join(" ").toLowerCase();
      if (q && !text.includes(q)) return null;
      return el("tr", {},
        el("td", {}, name),
        el("td", {}, describeMatch(r.match)),
        el("td", {}, r.policies.map((p) => p.type + (p.from === "global" ? " (global)" : "")).join(", ") || "–"),
        el("td", {}, describeAction(r)),
        el("td", { class: "n" }, fmt(st.requests_per_second, 2)),
        el("td", { class: "n" }, pct(st.error_rate)),
        el("td", { class: "n" }, fmt(st.p99_ms)));
    }).filter(Boolean));
  };
  search.addEventListener("input", draw);
  draw();
  const url = el("input", { type: "text", value: "/", "aria-label": "URL to explain", size: 40 });
  const method = el("select", { "aria-label": "Method" }, ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"].map((m) => el("option", {}, m)));
  const out = el("div");
  const explain = async (ev) => {
    ev.preventDefault();
    try {
      const x = await api("/explain", { method: "POST", body: JSON.stringify({ url: url.value, method: method.value }) });
      out.replaceChildren(
        el("p", {}, x.route ? "Route " + x.route.name : (x.answer || "No route")),
        table(["route", "verdict"], x.routes.map((r) => el("tr", {}, el("td", {}, r.route), el("td", {}, r.verdict + (r.because ? ": " + r.because : ""))))),
        el("pre", {}, JSON.stringify(x, null, 2)));
    } catch (e) {
      out.replaceChildren(problem(e));
    }
  };
  return [
    el("h2", {}, "Routes"),
    el("div", { class: "row" }, search, el("span", { class: "muted" }, "rates over the last 5 minutes")),
    el("div", { class: "scroll" }, el("table", {},
      el("thead", {}, el("tr", {}, ["name", "match", "policies", "action", "req/s", "5xx", "p99 ms"].map((h) => el("th", { scope: "col" }, h)))),
      body)),
    el("h2", {}, "Contract violations"),
    drift.violations.length === 0
      ? el("p", { class: "muted" }, "No upstream answer has broken its OpenAPI contract (routes of apis with check_responses).")
      : el("div", { class: "scroll", id: "violations" }, table(["when", "route", "request", "status", "kind", "first failure", "answer"],
        drift.violations.map((v) => el("tr", {},
          el("td", {}, v.at),
          el("td", {}, v.route),
          el("td", {}, v.method + " " + v.path),
          el("td", { class: "n" }, String(v.status)),
          el("td", {}, v.kind),
          el("td", {}, (v.failures[0] ? (v.failures[0].pointer || "/") + ": " + v.failures[0].detail : "") + (v.failures_total > 1 ? " (+" + (v.failures_total - 1) + " more)" : "")),
          el("td", { class: v.enforced ? "bad" : "muted" }, v.enforced ? "replaced by 502" : "passed on"))))),
    el("h2", {}, "Explain a request"),
    el("form", { class: "row", onsubmit: explain }, method, url, el("button", { type: "submit" }, "Explain")),
    out,
  ];
}

async function upstreams() {
  const [ups, stats] = await Promise.all([api("/upstreams"), api("/stats?window=5m")]);
  const rows = [];
  for (const [name, u] of Object.entries(ups)) {
    const live = (stats.upstreams || {})[name] || { targets: {} };
    for (const t of u.targets) {
      const st = live.targets[t.target] || {};
      rows.push(el("tr", {},
        el("td", {}, name),
        el("td", {}, t.target),
        el("td", { class: t.healthy && !t.ejected ? "ok" : "bad" }, t.ejected ? "ejected" : t.healthy ? "healthy" : "unhealthy"),
        el("td", { class: "n" }, fmt(t.weight)),
        el("td", { class: "n" }, fmt(t.in_flight)),
        el("td", { class: "n" }, fmt(t.connections)),
        el("td", { class: "n" }, fmt(t.ejections)),
        el("td", { class: "n" }, fmt(st.requests_per_second, 2)),
        el("td", { class: "n" }, pct(st.error_rate)),
        el("td", { class: "n" }, fmt(st.p99_ms)),
        el("td", {}, u.targets_from === "admin_api" ? "admin API" : "config")));
    }
  }
  return [el("h2", {}, "Upstreams"),
    el("p", { class: "muted" }, "Calls over the last 5 minutes, on the target that answered them."),
    table(["upstream", "target", "state", "weight", "in flight", "connections", "ejections", "calls/s", "5xx", "p99 ms", "targets from"], rows)];
}

async function policies() {
  const [consumers, caches, limits] = await Promise.all([api("/consumers"), api("/caches"), api("/rate-limits")]);
  const creds = (c) => Object.entries(c.credentials).map(([k, n]) => k + " × " + n).join(", ") || "–";
  return [
    el("h2", {}, "Rate limits"),
    table(["route", "key", "limits", "store", "keys here", "refused", "refused most"],
      limits.rate_limits.map((l) => el("tr", {},
        el("td", {}, l.route),
        el("td", {}, l.key),
        el("td", {}, l.limits.map((x) => `${x.requests} per ${fmt(x.per_seconds, 0)} s` + (x.algorithm === "sliding_window" ? " (sliding)" : "")).join(", ")),
        el("td", {}, l.store),
        el("td", { class: "n" }, fmt(l.local_keys)),
        el("td", { class: "n" }, fmt(l.refused)),
        el("td", {}, l.top_refused.slice(0, 5).map((k) => k.key + " (" + k.refused + ")").join(", ") || "–")))),
    el("h2", {}, "Response caches"),
    table(["routes", "entries", "max entries", "hits", "stale", "misses", "stored", "hit ratio"],
      caches.caches.map((c) => el("tr", {},
        el("td", {}, c.routes.join(", ")),
        el("td", { class: "n" }, fmt(c.entries)),
        el("td", { class: "n" }, fmt(c.max_entries)),
        el("td", { class: "n" }, fmt(c.hits)),
        el("td", { class: "n" }, fmt(c.stale)),
        el("td", { class: "n" }, fmt(c.misses)),
        el("td", { class: "n" }, fmt(c.stored)),
        el("td", { class: "n" }, pct(c.hit_ratio))))),
    el("h2", {}, "Consumers"),
    table(["name", "groups", "credentials", "metadata"],
      consumers.consumers.map((c) => el("tr", {},
        el("td", {}, c.name),
        el("td", {}, c.groups.join(", ") || "–"),
        el("td", {}, creds(c)),
        el("td", {}, Object.keys(c.metadata).length ? JSON.stringify(c.metadata) : "–")))),
    el("p", { class: "muted" }, "Credentials are counted, never shown. Keys from headers or claims are shown as a digest prefix."),
  ];
}

async function config() {
  const [cfg, v] = await Promise.all([api("/config"), api("/config/versions")]);
  const versions = v.versions;
  const from = el("select", { "aria-label": "From version" }, versions.map((x) => el("option", { value: x.generation }, "generation " + x.generation)));
  const to = el("select", { "aria-label": "To version" }, versions.map((x) => el("option", { value: x.generation }, "generation " + x.generation)));
  if (versions.length > 1) from.value = versions[1].generation;
  const diffOut = el("div");
  const diff = async (ev) => {
    ev.preventDefault();
    try {
      const d = await api(`/config/diff?from=${encodeURIComponent(from.value)}&to=${encodeURIComponent(to.value)}`);
      diffOut.replaceChildren(d.same ? el("p", {}, "The same config.") :
        d.changes.length ? el("pre", {}, d.changes.join("\n")) : el("p", {}, "They differ in masked secrets, comments or formatting only."));
    } catch (e) {
      diffOut.replaceChildren(problem(e));
    }
  };
  const result = el("div", { role: "status" });
  if (flash) {
    result.append(flash);
    flash = null;
  }
  const rollback = async (g) => {
    if (!confirm(`Roll the fleet back to the config of generation ${g}? It is pushed to the config store as a new version.`)) return;
    try {
      const r = await api("/config/rollback", { method: "POST", body: JSON.stringify({ generation: g }) });
      flash = el("p", { class: r.applied_here ? "ok" : "bad" },
        `Pushed as store version ${r.store_version}` + (r.applied_here ? "; applied here." : `; not applied here: ${r.error}`));
      render();
    } catch (e) {
      result.replaceChildren(problem(e));
    }
  };
  const rows = versions.map((x) => el("tr", {},
    el("td", { class: "n" }, x.generation + (x.current ? " (running)" : "")),
    el("td", {}, x.applied_at),
    el("td", {}, x.applied_by),
    el("td", {}, x.hash),
    el("td", {}, x.source),
    el("td", {}, x.current ? "" : el("button", { class: "danger", onclick: () => rollback(x.generation) }, "Roll back to this"))));
  return [
    el("h2", {}, "Running config"),
    el("div", { class: "cards" },
      card("generation", fmt(cfg.generation)),
      card("hash", cfg.hash, "small"),
      card("loaded", cfg.loaded_at, "small"),
      card("source", cfg.source, "small")),
    cfg.last_reload_error ? el("div", {}, el("h2", { class: "bad" }, "The last reload was refused"), el("pre", {}, cfg.last_reload_error)) : el("p", { class: "ok" }, "The last reload was applied."),
    cfg.store ? el("p", { class: cfg.store.reachable ? "muted" : "bad" }, `Config store ${cfg.store.url}: version ${cfg.store.version}` + (cfg.store.reachable ? "" : `, unreachable since ${cfg.store.unreachable_since} (${cfg.store.error})`)) : null,
    el("h2", {}, "Versions this node applied"),
    table(["generation", "applied", "by", "hash", "source", ""], rows),
    result,
    el("h2", {}, "Compare two versions"),
    el("form", { class: "row", onsubmit: diff }, from, el("span", {}, "→"), to, el("button", { type: "submit" }, "Diff")),
    diffOut,
  ];
}

async function fleet() {
  try {
    const f = await api("/cluster");
    return [el("h2", {}, "Fleet"),
      el("p", { class: f.drifted ? "bad" : "ok" }, f.drifted ? `${f.drifted} node(s) run another config than the newest (${f.newest_hash}).` : `Every node runs ${f.newest_hash}.`),
      table(["node", "config", "source", "generation", "loaded", "last reload error", "uptime s"], f.nodes.map((n) => el("tr", {},
        el("td", {}, n.id),
        el("td", { class: n.drift ? "bad" : "" }, n.config_hash + (n.drift ? " (drift)" : "")),
        el("td", {}, n.config_source),
        el("td", { class: "n" }, fmt(n.generation)),
        el("td", {}, n.loaded_at),
        el("td", {}, n.last_reload_error || "–"),
        el("td", { class: "n" }, fmt(n.uptime_s)))))];
  } catch (e) {
    if (e.status === 404) return [el("h2", {}, "Fleet"), el("p", { class: "muted" }, e.message)];
    throw e;
  }
}

const PAGES = { overview, routes, upstreams, policies, config, fleet };

async function render() {
  const name = (location.hash || "#overview").slice(1);
  const draw = PAGES[name] || overview;
  for (const a of document.querySelectorAll("nav a")) {
    if (a.getAttribute("href") === "#" + name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  try {
    page.replaceChildren(...(await draw()));
  } catch (e) {
    page.replaceChildren(problem(e));
  }
  header();
  clearTimeout(refresh);
  if (draw === overview || draw === upstreams || draw === fleet) refresh = setTimeout(render, 5000);
}

// The header: which config this node runs (again after every drawing: a write changes it).
function header() {
  api("/config").then((c) => {
    document.getElementById("node").textContent = `generation ${c.generation} · ${c.hash}`;
  }).catch(() => {});
}

window.addEventListener("hashchange", () => { render(); page.focus(); });
render();
