#!/usr/bin/env python3
"""A profile-guided build of Portico (PGO), for the binary you deploy.

    python3 bench/pgo.py        # about 15 minutes on 2 cores; needs nginx, h2load, llvm-tools

Three steps:

1. build the `dist` profile instrumented (`-Cprofile-generate`) into target/pgo-gen/;
2. train it: the instrumented gateway proxies a fixed mix of requests to the origin nginx of
   bench/run.py (HTTP/1.1 at 64 and 1,000 connections, a 16 KiB JSON answer, HTTP/2 clients,
   the access log on, the policy chain: RS256 JWT + local rate limit + metrics, gzip
   compression of the JSON answer), then exits cleanly so that it writes its profile;
3. merge the profile (`llvm-profdata`) and build the `dist` profile again with it
   (`-Cprofile-use`) into target/pgo/; the binary is printed at the end.

The training mix is the request path every gateway runs (parse, route, policies, pool,
forward, log). To train on your own traffic instead, pass `--train-only` to stop after
step 2, run target/pgo-gen/.../portico with your config and load, stop it with SIGTERM, and
then pass `--use-only`.

`llvm-profdata` must match rustc's LLVM: it comes with `rustup component add llvm-tools`.
Measured in docs/benchmarks.md ("Profile-guided build").
"""

import argparse
import glob
import hashlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as harness  # noqa: E402  (the templates and process helpers of bench/run.py)

ROOT = harness.ROOT
DATA = os.path.join(ROOT, "target", "pgo-data")
PORTS = {"plain": 19281, "log": 19282, "chain": 19283, "gzip": 19284}


def host_triple():
    out = subprocess.run(["rustc", "-vV"], capture_output=True, text=True, check=True).stdout
    return next(l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("host:"))


def profdata_tool(triple):
    sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True, check=True).stdout.strip()
    tool = os.path.join(sysroot, "lib", "rustlib", triple, "bin", "llvm-profdata")
    if not os.path.exists(tool):
        harness.die(f"{tool} not found: `rustup component add llvm-tools` (it must match rustc's LLVM)")
    return tool


def build(target_dir, triple, rustflags):
    # `--target` keeps RUSTFLAGS off build scripts and proc macros: only the gateway's code
    # is instrumented, then optimised.
    env = dict(os.environ, RUSTFLAGS=rustflags, CARGO_TARGET_DIR=target_dir)
    subprocess.run(["cargo", "build", "--profile", "dist", "-p", "portico", "--target", triple], cwd=ROOT, env=env,
                   check=True)
    return os.path.join(target_dir, triple, "dist", "portico")


def h2load(args, port, path, headers=()):
    cmd = ["taskset", "-c", "0", "h2load", "-t", "1", *args, *headers, f"http://127.0.0.1:{port}{path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900).stdout
    line = next((l for l in out.splitlines() if l.startswith("status codes:")), "")
    print(f"  {' '.join(args):28} {path:6} {line}", flush=True)
    # Every request must have been answered 2xx: a profile of error paths trains the wrong code.
    want = args[args.index("-n") + 1]
    if not line.startswith(f"status codes: {want} 2xx"):
        harness.die(f"training load against port {port}: not every request answered 2xx:\n{out}")


def train(binary, scale):
    run = tempfile.mkdtemp(prefix="portico-pgo-")
    os.chmod(run, 0o755)
    with open(os.path.join(run, "doc.json"), "w") as f:
        f.write('{"pad":"' + "x" * (16384 - 10) + '"}')
    os.makedirs(os.path.join(run, "origin-tmp"), exist_ok=True)
    origin_port = harness.ORIGIN_PORT
    with open(os.path.join(run, "origin.conf"), "w") as f:
        f.write(harness.ORIGIN_CONF.format(run=run, port=origin_port, port2=harness.ORIGIN_PORT2,
                                           h2port=origin_port + 100))
    procs = {}
    devnull = open(os.devnull, "w")
    try:
        procs["origin"] = harness.start(["nginx", "-c", os.path.join(run, "origin.conf"), "-p", run], 0, devnull)
        harness.wait_port(origin_port, procs["origin"], "origin")
        chain = harness.POLICIES["portico-chain"].format(
            keys=harness.KEYS_DIR, key_digest="sha256:" + hashlib.sha256(harness.BENCH_KEY.encode()).hexdigest())
        for name, port in PORTS.items():
            log = os.path.join(run, f"{name}.access.log") if name != "plain" else "off"
            conf = harness.PORTICO_CONF.format(port=port, origin=origin_port, log=log)
            if name == "chain":
                conf += chain
            elif name == "gzip":
                conf += harness.POLICIES["portico-gzip"].format()
            path = os.path.join(run, f"{name}.yaml")
            open(path, "w").write(conf)
            env = dict(os.environ, PORTICO_LOG="warn", LLVM_PROFILE_FILE=os.path.join(DATA, "portico-%p.profraw"))
            procs[name] = harness.start([binary, "run", "--no-watch", "--workers", "1", "-c", path], 1, devnull, env=env)
            harness.wait_port(port, procs[name], f"portico ({name})")
        # At least 1,000 requests: h2load refuses fewer requests than connections.
        n = lambda k: str(max(int(k * scale), 1000))
        auth = ["-H", f"authorization: Bearer {harness.bench_token()}", "-H", f"x-api-key: {harness.BENCH_KEY}"]
        h2load(["--h1", "-c", "64", "-n", n(200_000)], PORTS["plain"], "/hello")
        h2load(["--h1", "-c", "1000", "-n", n(100_000)], PORTS["plain"], "/hello")
        h2load(["--h1", "-c", "64", "-n", n(40_000)], PORTS["plain"], "/json")
        h2load(["-c", "8", "-m", "8", "-n", n(150_000)], PORTS["plain"], "/hello")
        h2load(["--h1", "-c", "64", "-n", n(100_000)], PORTS["log"], "/hello")
        h2load(["--h1", "-c", "64", "-n", n(100_000)], PORTS["chain"], "/hello", auth)
        h2load(["-c", "8", "-m", "8", "-n", n(50_000)], PORTS["chain"], "/hello", auth)
        # Compression: code a profile would otherwise mark cold (measured: 1 % slower untrained).
        h2load(["--h1", "-c", "64", "-n", n(5_000)], PORTS["gzip"], "/json", ["-H", "accept-encoding: gzip"])
        # A clean exit writes the profile (a killed process writes none).
        for name in PORTS:
            procs[name].send_signal(signal.SIGTERM)
        for name in PORTS:
            if procs[name].wait(timeout=60) != 0:
                harness.die(f"portico ({name}) did not exit cleanly; no profile")
    finally:
        for p in procs.values():
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    pass
        shutil.rmtree(run, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-only", action="store_true", help="stop after the instrumented build and its training")
    ap.add_argument("--use-only", action="store_true", help="merge the profiles in target/pgo-data and build with them")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the training's request counts")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    triple = host_triple()
    tool = profdata_tool(triple)
    if not args.use_only:
        for t in ("nginx", "h2load", "taskset"):
            if not shutil.which(t):
                harness.die(f"`{t}` is missing: apt-get install -y nginx-light nghttp2-client util-linux")
        shutil.rmtree(DATA, ignore_errors=True)
        os.makedirs(DATA)
        gen = build(os.path.join(ROOT, "target", "pgo-gen"), triple, f"-Cprofile-generate={DATA}")
        print("== training", flush=True)
        train(gen, args.scale)
        if args.train_only:
            print(f"profiles in {DATA}")
            return
    raw = glob.glob(os.path.join(DATA, "*.profraw"))
    if not raw:
        harness.die(f"no profiles in {DATA}")
    merged = os.path.join(DATA, "portico.profdata")
    subprocess.run([tool, "merge", "-o", merged, *raw], check=True)
    # What the profile holds: a handful of functions would mean the training did not run.
    shown = subprocess.run([tool, "show", merged], capture_output=True, text=True, check=True).stdout
    print("profile: " + "; ".join(l.strip() for l in shown.splitlines()
                                  if l.startswith(("Total functions", "Total count"))), flush=True)
    out = build(os.path.join(ROOT, "target", "pgo"), triple, f"-Cprofile-use={merged}")
    print(f"profile-guided build: {out}")


if __name__ == "__main__":
    main()
