#!/usr/bin/env python3
"""Memory with HTTP/2 clients that never read: RSS idle, with them, and after they are gone.

Starts an nginx origin serving a 256 KiB file and Portico in front of it (`send_timeout: 10s`),
opens CONNECTIONS HTTP/2 connections whose flow-control windows are zero, each asking for the
file on STREAMS streams, and samples Portico's RSS: before, at the peak, 5 s and 60 s after the
clients are gone. Needs nginx and the `h2` package (`pip install h2`).

    cargo build --release
    python3 bench/stalled_readers.py [--connections 10] [--streams 200] [--portico PATH]
"""

import argparse
import os
import socket
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORIGIN, PROXY, ADMIN = 19290, 19291, 19292


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_port(port):
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def main():
    import h2.config
    import h2.connection
    import h2.settings

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=10)
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--portico", default=os.path.join(ROOT, "target/release/portico"))
    args = ap.parse_args()
    run = tempfile.mkdtemp(prefix="portico-stalled-")
    # nginx's worker runs as another user and must read the file.
    os.chmod(run, 0o755)
    os.makedirs(f"{run}/www", mode=0o755)
    with open(f"{run}/www/big", "wb") as f:
        f.write(b"x" * 262144)
    with open(f"{run}/nginx.conf", "w") as f:
        f.write(f"worker_processes 1; pid {run}/nginx.pid; error_log {run}/error.log;\n"
                f"events {{ worker_connections 4096; }}\n"
                f"http {{ access_log off; server {{ listen 127.0.0.1:{ORIGIN}; root {run}/www; }} }}\n")
    with open(f"{run}/portico.yaml", "w") as f:
        f.write(f"listeners:\n  - address: 127.0.0.1:{PROXY}\nadmin: {{ address: 127.0.0.1:{ADMIN} }}\n"
                f"server: {{ send_timeout: 10s }}\nupstreams:\n  u: {{ targets: [\"http://127.0.0.1:{ORIGIN}\"] }}\n"
                f"routes:\n  - upstream: u\n")
    # Its own output is not ours: a worker left holding our stdout would keep a pipe open.
    nginx = subprocess.Popen(["nginx", "-c", f"{run}/nginx.conf", "-g", "daemon off;"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxy = subprocess.Popen([args.portico, "run", "-c", f"{run}/portico.yaml", "--no-watch"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(ORIGIN)
        wait_port(PROXY)
        probe = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                                f"http://127.0.0.1:{PROXY}/big"], capture_output=True, text=True).stdout
        if probe != "200 262144":
            raise SystemExit(f"the answer through Portico is not the 256 KiB file: {probe}")
        idle = rss_kib(proxy.pid)
        socks = []
        for _ in range(args.connections):
            s = socket.create_connection(("127.0.0.1", PROXY))
            c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            c.local_settings = h2.settings.Settings(
                client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
            c.initiate_connection()
            for _ in range(args.streams):
                c.send_headers(c.get_next_available_stream_id(),
                               [(":method", "GET"), (":path", "/big"), (":scheme", "http"), (":authority", "a")],
                               end_stream=True)
            s.sendall(c.data_to_send())
            s.setblocking(False)
            socks.append(s)
        peak = 0
        for _ in range(8):
            time.sleep(1)
            peak = max(peak, rss_kib(proxy.pid))
        start, closed = time.time(), set()
        while len(closed) < len(socks) and time.time() - start < 30:
            for i, s in enumerate(socks):
                try:
                    if s.recv(65536) == b"":
                        closed.add(i)
                except BlockingIOError:
                    pass
                except OSError:
                    closed.add(i)
            time.sleep(0.2)
        for s in socks:
            s.close()
        time.sleep(5)
        after5 = rss_kib(proxy.pid)
        time.sleep(55)
        after60 = rss_kib(proxy.pid)
        print("| | MiB |\n|---|---:|")
        for name, kib in (("RSS idle", idle), ("RSS with the stalled clients", peak),
                          ("RSS 5 s after they are gone", after5), ("RSS 60 s after they are gone", after60)):
            print(f"| {name} | {kib / 1024:.1f} |")
        print(f"\nconnections closed by the gateway within 30 s of the peak: {len(closed)} of {len(socks)}")
    finally:
        proxy.kill()
        # SIGTERM, not SIGKILL: the master then stops its worker too.
        nginx.terminate()
        nginx.wait()


if __name__ == "__main__":
    main()
