#!/usr/bin/env python3
"""Portico side by side with nginx and HAProxy on this machine.

One command after `cargo build --release`:

    sudo python3 bench/run.py            # full run, about 8 minutes
    python3 bench/run.py --quick         # 1 round, short runs, about 2 minutes

Layout (2 cores): core 0 runs the origin (nginx, 1 worker) and the load generator (wrk or
h2load, 1 thread); core 1 runs the proxy under test, alone, with one worker/thread. Every
contestant runs once per round per scenario; the order rotates each round (and runs backwards every
other round, so two builds meet in both orders); a ratio "vs nginx"
is taken within a round and the median over rounds is reported. The derived figure to trust
most on a shared machine is the proxy's CPU time per request.

Results go to bench/results/<UTC time>/: summary.md (the tables) and raw.csv (one row per run).
See docs/benchmarks.md for the method and the latest numbers.
"""

import argparse
import csv
import datetime
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ORIGIN_PORT = 19080
PORTS = {"nginx": 19081, "haproxy": 19082, "portico": 19084, "nginx-log": 19091, "haproxy-log": 19092, "portico-log": 19094,
         "portico-key": 19085, "portico-jwt": 19086, "portico-chain": 19087,
         "portico-rl-local": 19088, "portico-rl-redis": 19089, "portico-rl-batch": 19090,
         "portico-rr2": 19095, "portico-lr2": 19096, "portico-grpc": 19097,
         "portico-agg": 19098, "portico-gzip": 19099, "portico-soap": 19100,
         "portico-warm": 19101, "floor": 19102, "portico-b": 19103,
         "portico-oas": 19104, "portico-oas-check": 19105}

# The operation of bench/contract.yaml with request validation off and on, for the
# contract-c64 scenario (`--proxies portico-oas,portico-oas-check --scenarios contract-c64`).
CONTRACT = {"portico-oas": False, "portico-oas-check": True}

# Two targets (the origin on two ports) balanced round robin or by least request, to measure
# what the least-request pick costs: `--proxies portico-rr2,portico-lr2`.
ORIGIN_PORT2 = 19078
BALANCED = {"portico-rr2": "round_robin", "portico-lr2": "least_request"}

# Portico with policies (`--proxies ...,portico-key,portico-jwt,portico-chain`): the same route
# with an API key, an RS256 JWT, or the whole chain (JWT + rate limit + access log). Every
# contestant receives the same request, headers included.
BENCH_KEY = "bench-api-key-0123456789"
KEYS_DIR = os.path.join(ROOT, "crates/portico-proxy/tests/keys")
POLICIES = {
    "portico-key": """consumers:
  - name: bench
    api_keys: ["{key_digest}"]
policies:
  - type: api_key
""",
    "portico-jwt": """policies:
  - type: jwt
    issuers:
      - issuer: https://bench.test
        algorithms: [RS256]
        keys: [{{ pem_file: "{keys}/rsa.pub" }}]
""",
    "portico-rl-local": """policies:
  - type: rate_limit
    key: client_ip
    limits: [{{ requests: 100000000, per: 1s }}]
""",
    # Needs Redis on 127.0.0.1:6379 (pin it to the load generator's core: taskset -p -c 0 PID).
    "portico-rl-redis": """redis: {{ url: "redis://127.0.0.1:6379", key_prefix: "portico-bench:" }}
policies:
  - type: rate_limit
    key: client_ip
    store: redis
    limits: [{{ requests: 100000000, per: 1s }}]
""",
    "portico-rl-batch": """redis: {{ url: "redis://127.0.0.1:6379", key_prefix: "portico-bench:" }}
policies:
  - type: rate_limit
    key: client_ip
    store: redis
    batch: 100
    limits: [{{ requests: 100000000, per: 1s }}]
""",
    # Compression on (the client sends Accept-Encoding: gzip, see LUA); run with json16k-c64.
    "portico-gzip": """policies:
  - {{ type: compression, algorithms: [gzip] }}
""",
    "portico-chain": """policies:
  - type: jwt
    issuers:
      - issuer: https://bench.test
        algorithms: [RS256]
        keys: [{{ pem_file: "{keys}/rsa.pub" }}]
  - type: rate_limit
    key: client_ip
    limits: [{{ requests: 100000000, per: 1s }}]
""",
}


def b64url(b):
    import base64
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def bench_token():
    """An RS256 token signed with the test key (openssl does the signing)."""
    import json
    head = b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    claims = b64url(json.dumps({"iss": "https://bench.test", "sub": "bench", "exp": int(time.time()) + 86400}).encode())
    msg = f"{head}.{claims}".encode()
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", os.path.join(KEYS_DIR, "rsa.key")],
                         input=msg, capture_output=True, check=True).stdout
    return f"{head}.{claims}.{b64url(sig)}"

ORIGIN_CONF = """
worker_processes 1;
daemon off;
pid {run}/origin.pid;
error_log {run}/origin.error.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    keepalive_timeout 120s;
    keepalive_requests 1000000000;
    client_body_temp_path {run}/origin-tmp;
    proxy_temp_path {run}/origin-tmp;
    fastcgi_temp_path {run}/origin-tmp;
    uwsgi_temp_path {run}/origin-tmp;
    scgi_temp_path {run}/origin-tmp;
    open_file_cache max=16;
    sendfile on;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        listen 127.0.0.1:{port2} backlog=4096;
        location = /hello {{ default_type text/plain; return 200 "hello"; }}
        location = /json {{ default_type application/json; alias {run}/doc.json; }}
        location = /agg {{ default_type application/json; alias {run}/doc2k.json; }}
        location = /json2k {{ default_type application/json; alias {run}/doc2k.json; }}
        # POST allowed through the 405 page (static files answer GET only).
        location = /soap/Echo {{ default_type application/json; alias {run}/soap4k.json; error_page 405 =200 $uri; }}
        location = /soap11 {{ default_type "text/xml; charset=utf-8"; alias {run}/soap4k.xml; error_page 405 =200 $uri; }}
        location = /v1/shelves/7 {{ default_type application/json; return 200 '{{"id":"7","theme":"theme-7"}}'; }}
    }}
    server {{
        listen 127.0.0.1:{h2port} http2 backlog=4096;
        location = /hello {{ default_type text/plain; return 200 "hello"; }}
        # A gRPC answer (Shelf {{ id: 7, theme: "theme-7" }}) for the transcoding contestant:
        # a static file, POST allowed through the 405 page, grpc-status as a trailer.
        location = /bookstore.Bookstore/GetShelf {{
            default_type application/grpc;
            alias {run}/shelf.grpc;
            error_page 405 =200 $uri;
            add_trailer grpc-status 0 always;
        }}
    }}
}}
"""

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {run}/{name}.pid;
error_log {run}/{name}.error.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
http {{
    access_log {log};
    client_body_temp_path {run}/{name}-tmp;
    proxy_temp_path {run}/{name}-tmp;
    fastcgi_temp_path {run}/{name}-tmp;
    uwsgi_temp_path {run}/{name}-tmp;
    scgi_temp_path {run}/{name}-tmp;
    tcp_nodelay on;
    keepalive_timeout 120s;
    keepalive_requests 1000000000;
    upstream origin {{
        server 127.0.0.1:{origin};
        keepalive 1024;
        keepalive_requests 1000000000;
        keepalive_timeout 120s;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        {h2listen}
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
        }}
    }}
}}
"""

HAPROXY_CONF = """
global
    nbthread 1
    maxconn 8000
    {log_global}
defaults
    mode http
    {log_defaults}
    option http-keep-alive
    http-reuse always
    option forwardfor
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    timeout http-keep-alive 120s
    maxconn 8000
frontend fe
    bind 127.0.0.1:{port} backlog 4096
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    default_backend be
backend be
    server origin 127.0.0.1:{origin}
"""

# Portico with its default pool settings (what users run), as bench/portico.yaml.
PORTICO_CONF = """
listeners:
  - name: bench
    address: 127.0.0.1:{port}
admin: {{ address: "off" }}
access_log: {{ target: "{log}" }}
upstreams:
  origin:
    targets: ["http://127.0.0.1:{origin}"]
routes:
  - name: all
    upstream: origin
"""

# name, tool, path, connections, streams
SCENARIOS = {
    "hello-c1": ("wrk", "/hello", 1, 1),
    "hello-c64": ("wrk", "/hello", 64, 1),
    "hello-c1000": ("wrk", "/hello", 1000, 1),
    "json16k-c64": ("wrk", "/json", 64, 1),
    "h2c-c8m8": ("h2load", "/hello", 8, 8),
    # The same JSON (`{"id":"7","theme":"theme-7"}`), proxied as is by every contestant except
    # portico-grpc, which transcodes it to a gRPC call to the origin.
    "shelf-c64": ("wrk", "/v1/shelves/7", 64, 1),
    # A 2 KiB JSON document, proxied as is by every contestant except portico-agg, which
    # answers with three 2 KiB backend calls made concurrently and merged.
    "agg-c64": ("wrk", "/agg", 64, 1),
    # A 4 KiB JSON POST answered by a 4 KiB JSON document, proxied as is by every contestant
    # except portico-soap, which turns it into a SOAP 1.1 call (the calculator WSDL's Echo) and
    # reads a 4 KiB envelope back into JSON.
    "soap-c64": ("wrk-soap", "/soap/Echo", 64, 1),
    # bench/order-1k.json (1,007 bytes) posted to /hello, answered with 5 bytes: proxied as is,
    # and by portico-oas-check checked against bench/contract.yaml's schema on the way.
    "contract-c64": ("wrk-contract", "/hello", 64, 1),
}

SOAP_TEXT = "s" * 4000

H2_HEADERS = []

WRK_LUA = """
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout + summary.errors.status,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
"""


def die(msg):
    sys.exit(f"bench: {msg}")


def cpu_ticks(pids):
    """(utime, stime) of these processes and their children, in seconds: user space and the
    kernel apart, because on this machine the kernel is most of a proxy's CPU per request."""
    user = system = 0
    for pid in pids:
        for p in [pid] + children(pid):
            try:
                with open(f"/proc/{p}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                user += int(fields[11])
                system += int(fields[12])
            except (OSError, IndexError):
                pass
    hz = os.sysconf("SC_CLK_TCK")
    return user / hz, system / hz


def children(pid):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                for c in f.read().split():
                    out.append(int(c))
                    out.extend(children(int(c)))
    except OSError:
        pass
    return out


def peak_rss_kib(pid):
    total = 0
    for p in [pid] + children(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def start(cmd, cpu, log, env=None):
    """Starts a process pinned to `cpu`, in its own session, at high priority when root."""
    def pre():
        os.setsid()
        try:
            os.setpriority(os.PRIO_PROCESS, 0, -20)
        except PermissionError:
            pass
    full = ["taskset", "-c", str(cpu)] + cmd
    return subprocess.Popen(full, stdout=log, stderr=subprocess.STDOUT, preexec_fn=pre, env=env)


def wait_port(port, proc, what):
    for _ in range(200):
        if port_open(port):
            return
        if proc.poll() is not None:
            die(f"{what} exited at start (see the logs in the scratch folder)")
        time.sleep(0.05)
    die(f"{what} did not open port {port}")


def load(tool, port, path, conns, streams, seconds, cpu):
    pre = lambda: os.setpriority(os.PRIO_PROCESS, 0, -20) if os.geteuid() == 0 else None
    if tool in ("wrk", "wrk-soap", "wrk-contract"):
        script = {"wrk-soap": SOAP_LUA, "wrk-contract": CONTRACT_LUA}.get(tool, LUA)
        cmd = ["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "10s", "-s", script, f"http://127.0.0.1:{port}{path}"]
        out = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=pre, timeout=seconds + 30).stdout
        m = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)", out)
        if not m:
            return None
        reqs, dur_us, errs, p50, p99, p999, mx = map(int, m.groups())
        return {"requests": reqs, "rps": reqs / (dur_us / 1e6), "errors": errs, "p50_us": p50, "p99_us": p99}
    cmd = ["taskset", "-c", str(cpu), "h2load", "-t1", f"-c{conns}", f"-m{streams}", "-D", str(seconds), *H2_HEADERS, f"http://127.0.0.1:{port}{path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=pre, timeout=seconds + 30).stdout
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    lat = re.search(r"time for request:\s+([\d.]+)(\w+)\s+([\d.]+)(\w+)\s+([\d.]+)(\w+)", out)
    if not m or not done:
        return None
    unit = {"us": 1, "ms": 1000, "s": 1e6}
    mean_us = float(lat.group(5)) * unit.get(lat.group(6), 1) if lat else 0
    return {"requests": int(done.group(1)), "rps": float(m.group(1)), "errors": int(done.group(3)) + int(done.group(4)), "p50_us": mean_us, "p99_us": float("nan")}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="1 round of 2-second runs")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--proxies", default="nginx,haproxy,portico")
    ap.add_argument("--no-log", action="store_true", help="skip the access-log-on instances")
    ap.add_argument("--portico", default=os.path.join(ROOT, "target/release/portico"))
    ap.add_argument("--portico-b", help="a second Portico binary, run as contestant `portico-b` with the "
                    "plain config: an A/B of two builds in the same rounds")
    ap.add_argument("--load-cpu", type=int, default=0)
    ap.add_argument("--proxy-cpu", type=int, default=1)
    ap.add_argument("--hold", action="store_true",
                    help="start the origin and the contestants, print their ports and pids, and wait "
                    "(Ctrl-C stops them): for measuring by hand (strace -c, perf) with the harness's configs")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 2
    # Every process started here inherits this: 1,000 client plus 1,000 upstream connections.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    for tool in ["nginx", "haproxy", "wrk", "h2load", "taskset"]:
        if not shutil.which(tool):
            die(f"`{tool}` is missing: apt-get install -y nginx-light haproxy wrk nghttp2-client util-linux")
    if not os.path.exists(args.portico):
        die(f"{args.portico} not found: run `cargo build --release` first")

    global LUA
    run = tempfile.mkdtemp(prefix="portico-bench-")
    # nginx workers run as an unprivileged user when started by root: let them read the files.
    os.chmod(run, 0o755)
    LUA = os.path.join(run, "report.lua")
    token = bench_token()
    with open(LUA, "w") as f:
        # Accept-Encoding too: only contestants with compression on (portico-gzip) use it.
        f.write(f'wrk.headers["X-API-Key"] = "{BENCH_KEY}"\nwrk.headers["Authorization"] = "Bearer {token}"\n'
                'wrk.headers["Accept-Encoding"] = "gzip"\n')
        f.write(WRK_LUA)
    global H2_HEADERS
    H2_HEADERS = ["-H", f"x-api-key: {BENCH_KEY}", "-H", f"authorization: Bearer {token}"]
    global SOAP_LUA
    SOAP_LUA = os.path.join(run, "soap.lua")
    with open(SOAP_LUA, "w") as f:
        body = '{"text":"' + SOAP_TEXT + '","count":1,"color":"red"}'
        f.write(f'wrk.method = "POST"\nwrk.body = \'{body}\'\nwrk.headers["Content-Type"] = "application/json"\n')
        f.write(WRK_LUA)
    global CONTRACT_LUA
    CONTRACT_LUA = os.path.join(run, "contract.lua")
    with open(CONTRACT_LUA, "w") as f:
        body = open(os.path.join(HERE, "order-1k.json")).read().replace("\\", "\\\\").replace("'", "\\'")
        f.write(f'wrk.method = "POST"\nwrk.body = \'{body}\'\nwrk.headers["Content-Type"] = "application/json"\n')
        f.write(WRK_LUA)
    with open(os.path.join(run, "soap4k.json"), "w") as f:
        f.write('{"EchoResult":"' + SOAP_TEXT + '"}')
    with open(os.path.join(run, "soap4k.xml"), "w") as f:
        f.write("<?xml version='1.0' encoding='UTF-8'?>\n<soap11env:Envelope xmlns:soap11env=\"http://schemas.xmlsoap.org/soap/envelope/\" "
                "xmlns:tns=\"urn:portico:test:calc\"><soap11env:Body><tns:EchoResponse><tns:EchoResult>" + SOAP_TEXT
                + "</tns:EchoResult></tns:EchoResponse></soap11env:Body></soap11env:Envelope>")
    with open(os.path.join(run, "doc.json"), "w") as f:
        # Exactly 16,384 bytes of JSON.
        f.write('{"pad":"' + "x" * (16384 - 10) + '"}')
    with open(os.path.join(run, "doc2k.json"), "w") as f:
        # Exactly 2,048 bytes of JSON.
        f.write('{"pad":"' + "y" * (2048 - 10) + '"}')
    with open(os.path.join(run, "shelf.grpc"), "wb") as f:
        # One gRPC message: not compressed, length 11, Shelf { id: 7, theme: "theme-7" }.
        f.write(bytes([0, 0, 0, 0, 11, 0x08, 0x07, 0x12, 0x07]) + b"theme-7")
    os.makedirs(os.path.join(run, "origin-tmp"), exist_ok=True)

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out_dir = os.path.join(HERE, "results", stamp)
    os.makedirs(out_dir, exist_ok=True)
    procs = {}
    logf = open(os.path.join(run, "processes.log"), "w")

    def stop_all(*_):
        for p in procs.values():
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except OSError:
                pass
        time.sleep(0.5)
        for p in procs.values():
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass

    signal.signal(signal.SIGINT, lambda *a: (stop_all(), sys.exit(130)))
    try:
        for port in [ORIGIN_PORT, ORIGIN_PORT + 100] + list(PORTS.values()):
            if port_open(port):
                die(f"port {port} is in use")
        with open(os.path.join(run, "origin.conf"), "w") as f:
            f.write(ORIGIN_CONF.format(run=run, port=ORIGIN_PORT, port2=ORIGIN_PORT2, h2port=ORIGIN_PORT + 100))
        procs["origin"] = start(["nginx", "-c", os.path.join(run, "origin.conf"), "-p", run], args.load_cpu, logf)
        wait_port(ORIGIN_PORT, procs["origin"], "origin")

        contestants = []
        for proxy in args.proxies.split(","):
            for logging in ([False] if args.no_log or proxy in POLICIES or proxy in BALANCED or proxy in ("portico-grpc", "portico-agg", "portico-soap", "portico-warm", "floor", "portico-b", *CONTRACT) else [False, True]):
                name = proxy + ("-log" if logging else "")
                port = PORTS[name]
                log = os.path.join(run, f"{name}.access.log")
                if proxy == "nginx":
                    os.makedirs(os.path.join(run, f"{name}-tmp"), exist_ok=True)
                    conf = NGINX_CONF.format(run=run, name=name, log=log if logging else "off", origin=ORIGIN_PORT, port=port,
                                             h2listen="" if logging else f"listen 127.0.0.1:{port + 1000} http2;")
                    path = os.path.join(run, f"{name}.conf")
                    open(path, "w").write(conf)
                    cmd = ["nginx", "-c", path, "-p", run]
                elif proxy == "haproxy":
                    conf = HAPROXY_CONF.format(port=port, origin=ORIGIN_PORT,
                                               log_global="log stdout format raw local0" if logging else "",
                                               log_defaults="log global\n    option httplog" if logging else "")
                    path = os.path.join(run, f"{name}.cfg")
                    open(path, "w").write(conf)
                    cmd = ["haproxy", "-db", "-f", path]
                elif proxy == "floor":
                    # The smallest hyper proxy (bench/floor): what the HTTP library costs alone.
                    cmd = [os.path.join(os.path.dirname(args.portico), "portico-floor"),
                           f"127.0.0.1:{port}", f"127.0.0.1:{ORIGIN_PORT}"]
                else:
                    path = os.path.join(run, f"{name}.yaml")
                    import hashlib
                    chain = POLICIES.get(proxy, "").format(keys=KEYS_DIR, key_digest="sha256:" + hashlib.sha256(BENCH_KEY.encode()).hexdigest())
                    log_on = logging or proxy == "portico-chain"
                    conf = PORTICO_CONF.format(port=port, origin=ORIGIN_PORT, log=log if log_on else "off") + chain
                    if proxy == "portico-grpc":
                        conf = conf.replace(f'targets: ["http://127.0.0.1:{ORIGIN_PORT}"]',
                                            f'targets: ["h2c://127.0.0.1:{ORIGIN_PORT + 100}"]')
                        conf = conf.replace("    upstream: origin\n",
                                            "    upstream: origin\n    grpc_transcode:\n"
                                            f"      descriptor_set: \"{os.path.join(ROOT, 'examples/bookstore.pb')}\"\n")
                    if proxy == "portico-agg":
                        conf = conf.replace("    upstream: origin\n",
                                            "    aggregate:\n      backends:\n"
                                            + "".join(f"        - {{ name: b{i}, upstream: origin, path: /json2k }}\n" for i in range(3)))
                    if proxy == "portico-soap":
                        wsdl = os.path.join(ROOT, "crates/portico-testkit/soap/calculator11.wsdl")
                        conf = conf.replace("  - name: all\n    upstream: origin\n",
                                            "  - name: all\n    match: { path: { prefix: /soap } }\n    upstream: origin\n"
                                            f"    soap: {{ wsdl: \"{wsdl}\" }}\n")
                    if proxy == "portico-warm":
                        # Connections to the origin opened at start (`preconnect`), for the
                        # cold-pool burst at 1,000 client connections.
                        conf = conf.replace(f'    targets: ["http://127.0.0.1:{ORIGIN_PORT}"]\n',
                                            f'    targets: ["http://127.0.0.1:{ORIGIN_PORT}"]\n    preconnect: 1024\n')
                    if proxy in CONTRACT:
                        # The route comes from the document: no catch-all in front of it.
                        conf = conf[:conf.index("routes:")] + (
                            f"apis:\n  - openapi: {os.path.join(HERE, 'contract.yaml')}\n    upstream: origin\n"
                            f"    validate_requests: {'true' if CONTRACT[proxy] else 'false'}\n") + chain
                    if proxy in BALANCED:
                        conf = conf.replace(f'targets: ["http://127.0.0.1:{ORIGIN_PORT}"]',
                                            f'targets: ["http://127.0.0.1:{ORIGIN_PORT}", "http://127.0.0.1:{ORIGIN_PORT2}"]\n'
                                            f'    load_balancing: {{ algorithm: {BALANCED[proxy]} }}')
                    open(path, "w").write(conf)
                    binary = args.portico_b if proxy == "portico-b" else args.portico
                    if not binary:
                        die("contestant portico-b needs --portico-b PATH")
                    cmd = [binary, "run", "--no-watch", "--workers", "1", "-c", path]
                out = open(log, "w") if proxy == "haproxy" and logging else logf
                procs[name] = start(cmd, args.proxy_cpu, out, env=dict(os.environ, PORTICO_LOG="warn"))
                wait_port(port, procs[name], name)
                h2port = port + 1000 if proxy == "nginx" else port
                contestants.append((name, port, h2port, logging))

        if args.hold:
            for name, port, h2port, _ in contestants:
                print(f"{name:16} pid {procs[name].pid:7}  HTTP/1.1 port {port}  HTTP/2 port {h2port}")
            print(f"origin pid {procs['origin'].pid} port {ORIGIN_PORT}; scratch {run}; Ctrl-C stops all")
            sys.stdout.flush()
            while True:
                time.sleep(3600)
        rows = []
        names = [c[0] for c in contestants]
        scenarios = args.scenarios.split(",")
        print(f"== {len(contestants)} contestants x {len(scenarios)} scenarios x {args.rounds} rounds; scratch {run}")
        for r in range(args.rounds):
            for sc in scenarios:
                tool, path, conns, streams = SCENARIOS[sc]
                order = contestants[r % len(contestants):] + contestants[: r % len(contestants)]
                # Every other round runs backwards, so each pair of contestants (an A/B of two
                # builds in particular) meets in both orders, not always A right before B.
                if r % 2 == 1:
                    order.reverse()
                for name, port, h2port, logging in order:
                    # The floor speaks HTTP/1.1 only.
                    if tool == "h2load" and (logging or name == "floor"):
                        continue
                    target = h2port if tool == "h2load" else port
                    secs = max(2, args.seconds - 1) if conns == 1 or tool == "h2load" else args.seconds
                    u0, s0 = cpu_ticks([procs[name].pid])
                    res = load(tool, target, path, conns, streams, secs, args.load_cpu)
                    u1, s1 = cpu_ticks([procs[name].pid])
                    if res is None:
                        print(f"  r{r + 1} {sc:12} {name:12} FAILED")
                        continue
                    n = max(res["requests"], 1)
                    used = (u1 - u0) + (s1 - s0)
                    res.update({"round": r + 1, "scenario": sc, "proxy": name, "cpu_s": used,
                                "cpu_us_per_req": used * 1e6 / n,
                                "user_us_per_req": (u1 - u0) * 1e6 / n, "sys_us_per_req": (s1 - s0) * 1e6 / n})
                    rows.append(res)
                    print(f"  r{r + 1} {sc:12} {name:12} {res['rps']:9.0f} req/s  p50 {res['p50_us']:7.0f} us  p99 {res['p99_us']:7.0f} us  "
                          f"err {res['errors']}  cpu {res['cpu_us_per_req']:5.1f} us/req "
                          f"(user {res['user_us_per_req']:4.1f}, sys {res['sys_us_per_req']:4.1f})")
                    time.sleep(0.3)
        rss = {name: peak_rss_kib(procs[name].pid) for name in names}
    finally:
        stop_all()

    with open(os.path.join(out_dir, "raw.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["round", "scenario", "proxy", "requests", "rps", "errors", "p50_us", "p99_us", "cpu_s",
                                          "cpu_us_per_req", "user_us_per_req", "sys_us_per_req"])
        w.writeheader()
        w.writerows(rows)
    summary = summarize(rows, rss, args)
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(summary)
    print(summary)
    print(f"results in {out_dir}")


def summarize(rows, rss, args):
    def med(xs):
        xs = [x for x in xs if x == x]
        return statistics.median(xs) if xs else float("nan")

    lines = [f"# Portico vs nginx and HAProxy ({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC)", "",
             f"{args.rounds} round(s), {args.seconds} s runs; proxy on core {args.proxy_cpu}, origin and load generator on core {args.load_cpu}.",
             "Ratios are taken against nginx (same logging setting) in the same round; medians over rounds.", "",
             "CPU is the proxy's user plus system time; the user/sys column splits it (the kernel's part is",
             "much the same for every proxy: each makes four or five syscalls per request).", "",
             "| scenario | proxy | req/s | vs nginx | p50 | p99 | CPU µs/req | vs nginx | user / sys µs/req | errors |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for sc in dict.fromkeys(r["scenario"] for r in rows):
        for proxy in dict.fromkeys(r["proxy"] for r in rows if r["scenario"] == sc):
            mine = [r for r in rows if r["scenario"] == sc and r["proxy"] == proxy]
            ref_name = "nginx-log" if proxy.endswith("-log") else "nginx"
            ratios, cpu_ratios = [], []
            for r in mine:
                ref = [x for x in rows if x["scenario"] == sc and x["proxy"] == ref_name and x["round"] == r["round"]]
                if ref:
                    ratios.append(r["rps"] / ref[0]["rps"])
                    cpu_ratios.append(r["cpu_us_per_req"] / max(ref[0]["cpu_us_per_req"], 1e-9))
            lines.append(f"| {sc} | {proxy} | {med([r['rps'] for r in mine]):.0f} | {med(ratios):.2f} | "
                         f"{med([r['p50_us'] for r in mine]):.0f} µs | {med([r['p99_us'] for r in mine]):.0f} µs | "
                         f"{med([r['cpu_us_per_req'] for r in mine]):.1f} | {med(cpu_ratios):.2f} | "
                         f"{med([r['user_us_per_req'] for r in mine]):.1f} / {med([r['sys_us_per_req'] for r in mine]):.1f} | "
                         f"{sum(r['errors'] for r in mine)} |")
    lines += ["", "Peak RSS (VmHWM, process tree) at the end of the run:", ""]
    lines += [f"- {name}: {kib / 1024:.1f} MiB" for name, kib in rss.items()]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
