#!/usr/bin/env python3
"""Memory per idle client connection, and memory given back after the connections go.

    python3 bench/idle_connections.py [--portico PATH] [--connections 10000] [--after 60]

Starts Portico (one worker) with a `respond` route, reads its VmRSS, opens N client
connections and sends one keep-alive request on each (so every connection has served a
request and sits idle between requests, as keep-alive clients leave them), reads VmRSS again,
closes them all, and reads VmRSS once a second for `--after` seconds. Prints the RSS before,
with the connections, per connection, and after; one run, one process, so the figures are
for this machine and allocator (mimalloc in the release build).
"""

import argparse
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--portico", default=os.path.join(ROOT, "target/release/portico"))
    ap.add_argument("--connections", type=int, default=10000)
    ap.add_argument("--after", type=int, default=60)
    ap.add_argument("--settle", type=float, default=3, help="seconds between the last connection and the reading")
    ap.add_argument("--no-request", action="store_true", help="connect only, send nothing")
    args = ap.parse_args()
    want = args.connections + 1000  # each process holds one end of every connection
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    port = free_port()
    cfg = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    cfg.write(f"listeners: [{{ address: \"127.0.0.1:{port}\" }}]\nadmin: {{ address: off }}\n"
              "server: { client_idle_timeout: 10m, request_header_timeout: 10m }\n"
              "routes:\n  - respond: { status: 200, body: ok }\n")
    cfg.close()
    proc = subprocess.Popen([args.portico, "run", "--no-watch", "--workers", "1", "-c", cfg.name],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        time.sleep(1)
        before = rss_kib(proc.pid)
        conns = []
        req = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
        for i in range(args.connections):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            if args.no_request:
                conns.append(s)
                continue
            s.sendall(req)
            got = b""
            while b"\r\n\r\nok" not in got:
                chunk = s.recv(4096)
                if not chunk:
                    sys.exit(f"connection {i} closed early")
                got += chunk
            conns.append(s)
        time.sleep(args.settle)
        during = rss_kib(proc.pid)
        per = (during - before) * 1024 / args.connections
        print(f"RSS before: {before / 1024:.1f} MiB")
        print(f"RSS with {args.connections} idle connections: {during / 1024:.1f} MiB")
        print(f"per idle connection: {per / 1024:.2f} KiB")
        for s in conns:
            s.close()
        start = time.time()
        samples = []
        while time.time() - start < args.after:
            time.sleep(1)
            samples.append(rss_kib(proc.pid))
        if samples:
            print(f"RSS 5 s after they closed: {samples[min(4, len(samples) - 1)] / 1024:.1f} MiB")
            print(f"RSS {args.after} s after: {samples[-1] / 1024:.1f} MiB "
                  f"({(samples[-1] - before) / before * 100:+.1f} % over before)")
    finally:
        proc.terminate()
        proc.wait()
        os.unlink(cfg.name)


if __name__ == "__main__":
    main()
