#!/usr/bin/env python3
"""Login abuse against a real `permsync serve --demo`, measured from outside.

1. A storm of LOGINS simultaneous logins for unknown users, each from a loopback
   address of its own (so neither the per-address rate limit nor the per-address
   failure limit holds them back): the server's peak RSS (VmHWM) before and
   after, its RSS once the storm is over, and the answers by status.
2. GUESSES simultaneous wrong passwords for one user (bob) from 5 addresses: how
   many were really checked (401) and how many refused by the failure limit
   (429); the limit is 10 failures per user.

  bench/scripts/login_storm.py [--bin target/release/permsync] [--logins 240] [--guesses 100]

Without --bin it builds the release binary first. Only loopback is used.
"""

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def request(source, port, body, timeout=120):
    """One POST /v1/auth/login from `source`; returns the status (or an error name)."""
    payload = json.dumps(body).encode()
    head = (
        f"POST /v1/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        f"Connection: close\r\n\r\n"
    ).encode()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0)) as s:
            s.sendall(head + payload)
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    return "closed"
                data += chunk
            return int(data.split(b" ", 2)[1])
    except OSError as e:
        return type(e).__name__


def simultaneously(jobs):
    """Runs every (source, port, body) at once (threads released by one barrier)."""
    results = [None] * len(jobs)
    barrier = threading.Barrier(len(jobs))

    def run(i, job):
        barrier.wait()
        results[i] = request(*job)

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", help="the permsync binary (default: build target/release/permsync)")
    ap.add_argument("--logins", type=int, default=240)
    ap.add_argument("--guesses", type=int, default=100)
    args = ap.parse_args()
    binary = args.bin
    if not binary:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "permsync"], cwd=ROOT, check=True)
        binary = os.path.join(ROOT, "target", "release", "permsync")

    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PERMSYNC_")}
        env["RUST_LOG"] = "warn"
        server = subprocess.Popen(
            [binary, "serve", "--demo", "--db", f"sqlite://{tmp}/storm.db", "--addr", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
        )
        try:
            port = None
            for line in server.stdout:
                m = re.search(r"permsync listening on http://127\.0\.0\.1:(\d+)", line)
                if m:
                    port = int(m.group(1))
                    break
            if port is None:
                sys.exit("the server did not start")
            threading.Thread(target=lambda: [None for _ in server.stdout], daemon=True).start()
            time.sleep(0.5)
            pid = server.pid
            before = status_kib(pid, "VmHWM")

            jobs = [
                (f"127.1.{i // 250}.{i % 250 + 1}", port, {"username": f"ghost{i}", "password": "x"})
                for i in range(args.logins)
            ]
            started = time.monotonic()
            storm = Counter(simultaneously(jobs))
            took = time.monotonic() - started
            peak = status_kib(pid, "VmHWM")
            time.sleep(2)
            settled = status_kib(pid, "VmRSS")
            print(f"login storm: {args.logins} simultaneous logins of unknown users, one address each")
            print(f"  answers: {dict(sorted(storm.items(), key=str))} in {took:.1f} s")
            print(f"  peak RSS (VmHWM): {before / 1024:.0f} MiB before, {peak / 1024:.0f} MiB after")
            print(f"  RSS 2 s after the storm: {settled / 1024:.0f} MiB")

            jobs = [
                (f"127.2.0.{i % 5 + 1}", port, {"username": "bob", "password": f"guess{i}"})
                for i in range(args.guesses)
            ]
            guesses = Counter(simultaneously(jobs))
            print(f"wrong passwords: {args.guesses} simultaneous guesses for bob from 5 addresses (limit 10)")
            print(f"  answers: {dict(sorted(guesses.items(), key=str))}")
            print(f"  really checked (401): {guesses.get(401, 0)}")
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()


if __name__ == "__main__":
    main()
