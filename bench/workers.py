#!/usr/bin/env python3
"""Requests per second with `--workers 2` against `--workers 1`, on a route whose work is the
proxy's own.

On a 2-core machine a proxied request needs three programs on the cores (the load generator,
the proxy, the origin), so a proxied benchmark cannot give the proxy two cores of its own. This
script takes the origin out: the route answers by itself (`respond`, a 16 KiB JSON body) and the
`compression` policy gzips every answer, so each request costs the proxy far more CPU than it
costs the load generator. With one worker the proxy is pinned to core 0 and the load generator
(`wrk -t1`, 64 connections, `Accept-Encoding: gzip`) to core 1; with two workers the proxy may use
both cores, and the load generator shares core 1 with it. The ratio of req/s, and the proxy's CPU
per request in each case, show whether a second worker adds what a second core offers: with
nothing shared between workers, req/s grows by the CPU the load generator leaves free, and the
CPU per request stays the same.

    cargo build --release
    python3 bench/workers.py               # 3 rounds of 5 s per worker count, ~1 minute

Options: `--portico PATH`, `--rounds N`, `--seconds N`.
"""

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as harness  # noqa: E402

PORT = 19240

CONF = """\
listeners:
  - {{ name: main, address: "127.0.0.1:{port}" }}
routes:
  - name: doc
    match: {{ path: {{ exact: /doc }} }}
    respond: {{ status: 200, content_type: application/json, body: '{body}' }}
    policies:
      - {{ type: compression, algorithms: [gzip] }}
"""


def one(binary, conf, workers, seconds, run):
    """req/s, the proxy's CPU µs per request, and the load generator's, for one worker count."""
    cpus = "0" if workers == 1 else "0,1"
    log = open(os.path.join(run, f"portico-{workers}.log"), "w")
    proc = harness.start([binary, "run", "--no-watch", "--workers", str(workers), "-c", conf], cpus, log,
                         env=dict(os.environ, PORTICO_LOG="warn"))
    try:
        harness.wait_port(PORT, proc, "portico")
        url = f"http://127.0.0.1:{PORT}/doc"
        gzip = ["-H", "Accept-Encoding: gzip"]
        subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c64", "-d1s", *gzip, url], capture_output=True)
        u0, s0 = harness.cpu_ticks([proc.pid])
        t0 = time.time()
        wrk = subprocess.Popen(["taskset", "-c", "1", "wrk", "-t1", "-c64", f"-d{seconds}s", *gzip, url],
                               stdout=subprocess.PIPE, text=True)
        # The load generator's own CPU, read just before it exits.
        lu = ls = 0.0
        while wrk.poll() is None:
            try:
                lu, ls = harness.cpu_ticks([wrk.pid])
            except OSError:
                pass
            time.sleep(0.2)
        out = wrk.stdout.read()
        u1, s1 = harness.cpu_ticks([proc.pid])
        m = re.search(r"(\d+) requests in", out)
        if not m or "Non-2xx" in out or "Socket errors" in out:
            harness.die(f"wrk against {workers} worker(s) did not get only 2xx answers:\n{out}")
        n = int(m.group(1))
        rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
        return float(rps.group(1)), (u1 - u0 + s1 - s0) / n * 1e6, (lu + ls) / n * 1e6, time.time() - t0
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--portico", default=os.path.join(harness.ROOT, "target/release/portico"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    args = ap.parse_args()
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            harness.die(f"`{tool}` is missing: apt-get install -y wrk util-linux")
    if os.cpu_count() < 2:
        harness.die("needs two cores")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    run = tempfile.mkdtemp(prefix="portico-workers-")
    conf = os.path.join(run, "portico.yaml")
    # 16 KiB of JSON that compresses as real documents do (not one repeated byte).
    items = ",".join(f'{{"id":{i},"name":"item {i}","price":{i * 7 % 1000}.{i % 100:02d}}}' for i in range(400))
    body = ('{"items":[' + items + "]}")[:16384 - 2] + "]}"
    open(conf, "w").write(CONF.format(port=PORT, body=body))
    rows = {1: [], 2: []}
    for r in range(args.rounds):
        order = (1, 2) if r % 2 == 0 else (2, 1)
        for w in order:
            rps, cpu, load_cpu, _ = one(args.portico, conf, w, args.seconds, run)
            rows[w].append((rps, cpu, load_cpu))
            print(f"  r{r + 1} workers {w}: {rps:9.0f} req/s  proxy {cpu:6.1f} µs/req  wrk {load_cpu:5.1f} µs/req",
                  flush=True)
    ratios = [b[0] / a[0] for a, b in zip(rows[1], rows[2])]
    print("\n| workers | req/s | proxy CPU µs/req | load generator CPU µs/req |\n|---|---:|---:|---:|")
    for w in (1, 2):
        med = lambda i: statistics.median(x[i] for x in rows[w])  # noqa: E731
        print(f"| {w} | {med(0):,.0f} | {med(1):.1f} | {med(2):.1f} |")
    print(f"\n2 workers ÷ 1: {statistics.median(ratios):.2f}× req/s "
          f"(rounds {min(ratios):.2f}–{max(ratios):.2f})")
    shutil.rmtree(run, ignore_errors=True)


if __name__ == "__main__":
    main()
