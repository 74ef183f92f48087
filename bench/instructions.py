#!/usr/bin/env python3
"""Instructions per proxied request, counted by callgrind: nginx, the hyper floor, Portico.

Wall-clock figures on a shared 2-core VM move by ±15 % from run to run; instruction counts
for a fixed number of requests do not (the same binary and load give the same count). This
script runs each proxy under `valgrind --tool=callgrind`, sends 2,000 warm-up requests,
zeroes the counters, sends N more (`h2load --h1`, 64 connections, 5-byte answers from the same
origin nginx as bench/run.py), dumps the counters and divides. It counts user-space work only:
syscalls and the kernel's network stack are not in it, so it complements, and does not
replace, `bench/run.py`'s CPU time per request.

    cargo build --release            # builds portico and bench/floor (portico-floor)
    python3 bench/instructions.py    # about 2 minutes; needs valgrind, nginx, h2load

Options: `--requests N` (default 20000), `--proxies nginx,floor,portico` (add `haproxy`, and
`portico-chain` for Portico with the policy chain of bench/run.py: RS256 JWT, local rate limit,
metrics, access log; `portico-key`, `portico-jwt`, `portico-rl-local`, `portico-gzip` for one
policy of bench/run.py each; with any of them every contestant gets the same `Authorization`
and `X-API-Key` headers, and `Accept-Encoding: gzip` with `portico-gzip`), `--path /json`
(the 16 KiB answer instead of 5 bytes), `--connections N` (HTTP/1.1 clients, default 64),
`portico-oas` and `portico-oas-check` for the operation of bench/contract.yaml with request validation
off and on, every contestant then posting bench/order-1k.json (1,007 bytes; `--body FILE` posts
another), `portico-trace0`, `portico-trace1`, `portico-trace100` for Portico
with OpenTelemetry tracing on and 0 %, 1 % or every request sampled, exporting over OTLP/HTTP to
a sink of this script's (a separate process: the export's cost in Portico is counted, the
collector's is not), `--h2` (HTTP/2 clients, prior knowledge: 8 connections x 8 streams, as bench/run.py's
h2c-c8m8; the floor speaks HTTP/1.1 only and is skipped), `--cache` (callgrind's cache and
branch simulation too: instruction-cache misses, first-level data-cache misses and
second-level misses (the simulated second level is this machine's L2, read from sysfs) and
mispredicted branches per request; slower), `--keep` (keep the callgrind files, with costs per instruction address, to read with
`callgrind_annotate --inclusive=yes FILE`), `--syscalls` (instead of instructions, system calls
per request by name, counted by the kernel's syscall tracepoints through `perf stat -p` while the
same load runs; the proxy runs without valgrind; needs perf from Debian's linux-perf).
"""

import argparse
import glob
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as harness  # noqa: E402  (the templates and process helpers of bench/run.py)

PORTS = {"nginx": 19181, "floor": 19182, "haproxy": 19183, "portico": 19184, "portico-chain": 19185,
         "portico-key": 19186, "portico-jwt": 19187, "portico-rl-local": 19188, "portico-gzip": 19189,
         "portico-trace0": 19191, "portico-trace1": 19192, "portico-trace100": 19193,
         "portico-oas": 19194, "portico-oas-check": 19195}
# The contestants serving bench/contract.yaml's operation, with request validation off and on.
CONTRACT = {"portico-oas": False, "portico-oas-check": True}
HERE = os.path.dirname(os.path.abspath(__file__))
# The OTLP/HTTP sink the traced contestants export to.
SINK_PORT = 19190
# Sampling ratio of each traced contestant.
TRACED = {"portico-trace0": 0, "portico-trace1": 0.01, "portico-trace100": 1}


def otlp_sink(port):
    """A collector that accepts every OTLP/HTTP export and keeps nothing: 200 with an empty
    `ExportTraceServiceResponse` (an empty protobuf message is zero bytes). It counts the
    exports' bytes so the run can say that spans arrived."""
    code = (
        "import http.server, sys\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_POST(self):\n"
        "        n = int(self.headers.get('content-length', 0)); self.rfile.read(n)\n"
        "        sys.stderr.write(f'export {n}\\n'); sys.stderr.flush()\n"
        "        self.send_response(200); self.send_header('content-type', 'application/x-protobuf')\n"
        "        self.send_header('content-length', '0'); self.end_headers()\n"
        "    def log_message(self, *a): pass\n"
        f"http.server.ThreadingHTTPServer(('127.0.0.1', {port}), H).serve_forever()\n"
    )
    return code

# Request headers for every contestant (set when the chain is measured).
HEADERS = []
# The path asked for (`--path`): /hello (5 bytes) or /json (16 KiB).
PATH = ["/hello"]
# h2load's connection options: HTTP/1.1 at 64 connections, or HTTP/2 (--h2).
CLIENTS = ["--h1", "-c", "64"]
ORIGIN = harness.ORIGIN_PORT
# Extra callgrind options: `--cache` adds its cache and branch simulation.
SIM = []
# `--syscalls`: count system calls with perf instead of instructions with callgrind.
SYSCALLS = []
# `-d FILE` when every request posts a body (`--body`).
DATA = []


def h2load(port, n, cpu):
    out = subprocess.run(["taskset", "-c", str(cpu), "h2load", *CLIENTS, "-n", str(n), "-t", "1", *HEADERS, *DATA,
                          f"http://127.0.0.1:{port}{PATH[0]}"], capture_output=True, text=True, timeout=600)
    ok = [l for l in out.stdout.splitlines() if l.startswith("status codes:")]
    if not ok or not ok[0].startswith(f"status codes: {n} 2xx"):
        harness.die(f"h2load against port {port}: not every request answered 2xx:\n{out.stdout}")


def measure(name, cmd, port, n, run, cpu, listen=None):
    listen = listen or port
    if SYSCALLS:
        return measure_syscalls(name, cmd, port, n, run, cpu, listen)
    out = os.path.join(run, f"callgrind.{name}")
    log = open(os.path.join(run, f"{name}.log"), "w")
    if harness.port_open(listen):
        harness.die(f"port {listen} is in use (a proxy left from another run?)")
    proc = harness.start(["valgrind", "--tool=callgrind", "--compress-strings=no", "--compress-pos=no", *SIM,
                                 f"--callgrind-out-file={out}.%p"] + cmd, cpu, log,
                         env=dict(os.environ, PORTICO_LOG="warn"))
    # Whatever happens below (a failed load dies), the proxy does not outlive the run: a
    # leftover one kept the port, and the next run measured it instead.
    try:
        for _ in range(600):  # valgrind starts slowly
            if harness.port_open(listen):
                break
            if proc.poll() is not None:
                harness.die(f"{name} exited at start (see {run}/{name}.log)")
            time.sleep(0.1)
        else:
            harness.die(f"{name} did not open port {listen}")
        h2load(port, 2000, 1 - cpu)
        # The valgrind process is the proxy's own process (callgrind runs it in place).
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True, capture_output=True)
        h2load(port, n, 1 - cpu)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
        time.sleep(0.5)
        proc.terminate()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait()
    # The dump after zeroing is the largest `.N` part file; its `summary:` line is the total.
    parts = sorted(glob.glob(f"{out}.*.*"), key=os.path.getsize)
    if not parts:
        harness.die(f"no callgrind dump for {name}")
    events = []
    for line in open(parts[-1]):
        if line.startswith("events:"):
            events = line.split()[1:]
        if line.startswith("summary:"):
            counts = dict(zip(events, (int(x) for x in line.split()[1:])))
            if "--cache-sim=yes" in SIM:
                # Per request: instruction-cache misses, first-level data-cache misses (reads
                # and writes), second-level misses (the simulation's last level is set to this
                # machine's L2, see `l2_sim`), mispredicted branches (conditional and indirect).
                extra = (counts.get("I1mr", 0) / n, (counts.get("D1mr", 0) + counts.get("D1mw", 0)) / n,
                         (counts.get("ILmr", 0) + counts.get("DLmr", 0) + counts.get("DLmw", 0)) / n,
                         (counts.get("Bcm", 0) + counts.get("Bim", 0)) / n)
                return counts["Ir"] / n, parts[-1], extra
            return counts["Ir"] / n, parts[-1], None
    harness.die(f"no summary in {parts[-1]}")


def measure_syscalls(name, cmd, port, n, run, cpu, listen):
    """System calls per request: the proxy runs on its own (no valgrind), is warmed up, then
    `perf stat` counts every `syscalls:sys_enter_*` tracepoint of its threads while `n`
    requests run. Returns (total per request, the perf output, {syscall: per request})."""
    log = open(os.path.join(run, f"{name}.log"), "w")
    if harness.port_open(listen):
        harness.die(f"port {listen} is in use (a proxy left from another run?)")
    proc = harness.start(cmd, cpu, log, env=dict(os.environ, PORTICO_LOG="warn"))
    out = os.path.join(run, f"perf.{name}")
    try:
        harness.wait_port(listen, proc, name)
        h2load(port, 2000, 1 - cpu)
        perf = subprocess.Popen(["perf", "stat", "-x,", "-e", "syscalls:sys_enter_*", "-p", str(proc.pid),
                                 "-o", out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # perf opens a counter per tracepoint and thread before counting
        h2load(port, n, 1 - cpu)
        perf.send_signal(signal.SIGINT)
        perf.wait(timeout=60)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    counts = {}
    for line in open(out):
        f = line.strip().split(",")
        if len(f) > 2 and f[2].startswith("syscalls:sys_enter_") and f[0].isdigit() and int(f[0]) > 0:
            counts[f[2][len("syscalls:sys_enter_"):]] = int(f[0]) / n
    if not counts:
        harness.die(f"perf counted no system calls for {name} (see {out})")
    return sum(counts.values()), out, counts


def l2_sim():
    """callgrind simulates two cache levels, and by default takes the last one (here a 32 MiB L3
    that a proxy's working set fits in) as its second. The second level is set to this machine's
    L2 instead: at 1,000 connections the per-connection state outgrows L2, and an L2 miss is what
    costs time there."""
    base = "/sys/devices/system/cpu/cpu0/cache"
    for idx in sorted(glob.glob(f"{base}/index*")):
        try:
            level = open(f"{idx}/level").read().strip()
            size = open(f"{idx}/size").read().strip()
            ways = open(f"{idx}/ways_of_associativity").read().strip()
            line = open(f"{idx}/coherency_line_size").read().strip()
        except OSError:
            continue
        if level == "2" and size.endswith("K"):
            return [f"--LL={int(size[:-1]) * 1024},{ways},{line}"]
    return []


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--proxies", default="nginx,floor,portico")
    ap.add_argument("--portico", default=os.path.join(harness.ROOT, "target/release/portico"))
    ap.add_argument("--h2", action="store_true", help="HTTP/2 clients (8 connections x 8 streams)")
    ap.add_argument("--path", default="/hello", help="/hello (5 bytes) or /json (16 KiB of JSON)")
    ap.add_argument("--connections", type=int, default=64, help="HTTP/1.1 client connections")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--body", help="POST this file as a JSON body with every request (the origin's /hello answers "
                                   "POST too); implied by the portico-oas contestants, with bench/order-1k.json")
    ap.add_argument("--cache", action="store_true",
                    help="also simulate caches and branch prediction (slower): misses per request")
    ap.add_argument("--syscalls", action="store_true",
                    help="count system calls per request (perf) instead of instructions")
    args = ap.parse_args()
    if args.syscalls:
        SYSCALLS.append(True)
    if args.cache:
        SIM[:] = ["--cache-sim=yes", "--branch-sim=yes", *l2_sim()]
    if args.keep:
        # Costs per instruction address too, so a call can be told from another call of the same
        # function in the same caller (`callgrind_annotate --auto=yes`, or the `calls=` lines).
        SIM.append("--dump-instr=yes")
    CLIENTS[:] = ["--h1", "-c", str(args.connections)]
    if args.h2:
        CLIENTS[:] = ["-c", "8", "-m", "8"]
    # 1,000 client plus 1,000 upstream connections need the descriptors.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    for tool in (("perf",) if args.syscalls else ("valgrind", "callgrind_control")) + ("nginx", "h2load"):
        if not shutil.which(tool):
            harness.die(f"{tool} not found (apt-get install -y valgrind nginx-light nghttp2-client)")
    run = tempfile.mkdtemp(prefix="portico-instr-")
    os.chmod(run, 0o755)
    with open(os.path.join(run, "doc.json"), "w") as f:
        # The origin's /json: exactly 16,384 bytes, as in bench/run.py.
        f.write('{"pad":"' + "x" * (16384 - 10) + '"}')
    procs = []
    PATH[0] = args.path
    if args.body is None and any(p in CONTRACT for p in args.proxies.split(",")):
        args.body = os.path.join(HERE, "order-1k.json")
    if args.body:
        DATA.extend(["-d", args.body])
        HEADERS.extend(["-H", "content-type: application/json"])
    if any(p in harness.POLICIES for p in args.proxies.split(",")):
        HEADERS.extend(["-H", f"authorization: Bearer {harness.bench_token()}", "-H", f"x-api-key: {harness.BENCH_KEY}"])
    if "portico-gzip" in args.proxies.split(","):
        HEADERS.extend(["-H", "accept-encoding: gzip"])
    try:
        with open(os.path.join(run, "origin.conf"), "w") as f:
            f.write(harness.ORIGIN_CONF.format(run=run, port=ORIGIN, port2=harness.ORIGIN_PORT2, h2port=ORIGIN + 100))
        origin = harness.start(["nginx", "-c", os.path.join(run, "origin.conf"), "-p", run], 0, open(os.devnull, "w"))
        procs.append(origin)
        harness.wait_port(ORIGIN, origin, "origin")
        rows = []
        if any(p in TRACED for p in args.proxies.split(",")):
            sink_log = open(os.path.join(run, "sink.log"), "w")
            sink = harness.start([sys.executable, "-c", otlp_sink(SINK_PORT)], 0, sink_log)
            procs.append(sink)
            harness.wait_port(SINK_PORT, sink, "otlp sink")
        for name in args.proxies.split(","):
            if args.h2 and name == "floor":
                continue
            port = PORTS[name]
            listen = port
            if name == "nginx":
                os.makedirs(os.path.join(run, "nginx-tmp"), exist_ok=True)
                # nginx 1.22 speaks HTTP/2 without TLS only on a listener of its own.
                h2port = port + 1000
                conf = harness.NGINX_CONF.format(run=run, name="nginx", log="off", origin=ORIGIN, port=listen,
                                                 h2listen=f"listen 127.0.0.1:{h2port} http2;" if args.h2 else "")
                if args.h2:
                    port = h2port
                # One process: callgrind follows the process it starts, not forked workers.
                conf = "master_process off;\n" + conf
                path = os.path.join(run, "nginx.conf")
                open(path, "w").write(conf)
                cmd = ["nginx", "-c", path, "-p", run]
            elif name == "haproxy":
                # nbthread 1 and no master process: callgrind counts the one process it starts.
                path = os.path.join(run, "haproxy.cfg")
                open(path, "w").write(harness.HAPROXY_CONF.format(port=port, origin=ORIGIN, log_global="", log_defaults=""))
                cmd = ["haproxy", "-db", "-f", path]
            elif name == "floor":
                cmd = [os.path.join(os.path.dirname(args.portico), "portico-floor"), f"127.0.0.1:{port}", f"127.0.0.1:{ORIGIN}"]
            else:
                import hashlib
                path = os.path.join(run, f"{name}.yaml")
                chain = name == "portico-chain"
                conf = harness.PORTICO_CONF.format(port=port, origin=ORIGIN,
                                                   log=os.path.join(run, "access.log") if chain else "off")
                if name in TRACED:
                    # A queue deep enough for the whole run: a drop would hide export work.
                    conf += (f"tracing:\n  protocol: http/protobuf\n  endpoint: http://127.0.0.1:{SINK_PORT}\n"
                             f"  sample_ratio: {TRACED[name]}\n  max_queue: 100000\n  interval: 1s\n")
                if name in CONTRACT:
                    # The route comes from the document: no catch-all in front of it.
                    conf = conf[:conf.index("routes:")] + (
                        f"apis:\n  - openapi: {os.path.join(HERE, 'contract.yaml')}\n    upstream: origin\n"
                        f"    validate_requests: {'true' if CONTRACT[name] else 'false'}\n")
                if name in harness.POLICIES:
                    conf += harness.POLICIES[name].format(
                        keys=harness.KEYS_DIR, key_digest="sha256:" + hashlib.sha256(harness.BENCH_KEY.encode()).hexdigest())
                open(path, "w").write(conf)
                cmd = [args.portico, "run", "--no-watch", "--workers", "1", "-c", path]
            per_req, dump, extra = measure(name, cmd, port, args.requests, run, 1, listen)
            if name in TRACED:
                exports = open(os.path.join(run, "sink.log")).read().count("export ")
                print(f"  ({name}: {exports} exports received so far)", flush=True)
            rows.append((name, per_req, dump, extra))
            if SYSCALLS:
                print(f"  {name:13} {per_req:6.2f} system calls/request", flush=True)
            else:
                print(f"  {name:13} {per_req:9.0f} instructions/request", flush=True)
    finally:
        for p in procs:
            p.terminate()
    base = next((r[1] for r in rows if r[0] == "nginx"), None)
    if SYSCALLS:
        names = sorted({k for r in rows for k in r[3]}, key=lambda k: -max(r[3].get(k, 0) for r in rows))
        names = [k for k in names if max(r[3].get(k, 0) for r in rows) >= 0.01]
        print("\n| proxy | system calls per request | vs nginx | " + " | ".join(names) + " |")
        print("|---|---:|---:|" + "---:|" * len(names))
        for name, per_req, _, counts in rows:
            ratio = f"{per_req / base:.2f}" if base else ""
            print(f"| {name} | {per_req:.2f} | {ratio} | " + " | ".join(f"{counts.get(k, 0):.2f}" for k in names) + " |")
        if not args.keep:
            shutil.rmtree(run, ignore_errors=True)
        return
    if "--cache-sim=yes" in SIM:
        print("\n| proxy | instructions per request | vs nginx | I1 misses | D1 misses | L2 misses | branch mispredictions |"
              "\n|---|---:|---:|---:|---:|---:|---:|")
    else:
        print("\n| proxy | instructions per request | vs nginx |\n|---|---:|---:|")
    for name, per_req, _, extra in rows:
        ratio = f"{per_req / base:.2f}" if base else ""
        cells = "".join(f" {x:,.0f} |" for x in extra) if extra else ""
        print(f"| {name} | {per_req:,.0f} | {ratio} |{cells}")
    if args.keep:
        print(f"\ncallgrind files: {run}")
    else:
        shutil.rmtree(run, ignore_errors=True)


if __name__ == "__main__":
    main()
