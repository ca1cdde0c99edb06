#!/usr/bin/env python3
"""Issue 24's red-team case against the API, measured: RSS of a `ballast run` process
while N unauthenticated clients each announce a 16 MiB write body and trickle it.

Starts its own node on 127.0.0.1 (free ports), samples /proc/<pid>/status VmRSS before,
during (peak) and after the attack, stops the node by its PID and prints the figures.

    usage: tests/api-memory-pinning.py [path/to/ballast] [--clients 60] [--hold 20]
"""
import argparse
import os
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request

BODY = 16 << 20
CHUNK = 64 << 10


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def attacker(api, hold_until, stats, lock):
    """Announces BODY bytes, sends all but the last one in chunks, then holds the
    connection open until `hold_until` (or until the server closes it)."""
    s = socket.create_connection(api)
    head = (
        "POST /v1/apply HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {BODY}\r\n\r\n"
    )
    sent = 0
    closed_by_server = False
    answer = b""
    try:
        s.sendall(head.encode())
        s.settimeout(0.001)
        chunk = b"x" * CHUNK
        while sent < BODY - 1:
            n = min(CHUNK, BODY - 1 - sent)
            s.settimeout(None)
            s.sendall(chunk[:n])
            sent += n
            s.settimeout(0.0)
            try:
                data = s.recv(4096)
                answer += data
                if not data:
                    closed_by_server = True
                    break
            except BlockingIOError:
                pass
            # Trickle: a little at a time, as a slow client would.
            time.sleep(0.002)
        s.settimeout(max(0.1, hold_until - time.time()))
        while time.time() < hold_until and not closed_by_server:
            data = s.recv(4096)
            answer += data
            if not data:
                closed_by_server = True
    except (BrokenPipeError, ConnectionResetError):
        closed_by_server = True
    except socket.timeout:
        pass
    finally:
        with lock:
            stats["sent"] += sent
            stats["closed_by_server"] += closed_by_server
            status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else "-"
            stats["status"][status] = stats["status"].get(status, 0) + 1
        s.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("binary", nargs="?", default="target/debug/ballast")
    p.add_argument("--clients", type=int, default=60)
    p.add_argument("--hold", type=float, default=20.0, help="seconds each client holds on")
    args = p.parse_args()

    work = tempfile.mkdtemp(prefix="ballast-rss-")
    api_port, fe_port, be_port = free_port(), free_port(), free_port()
    with open(f"{work}/token", "w") as f:
        f.write("not-the-attackers-token\n")
    os.chmod(f"{work}/token", 0o600)
    with open(f"{work}/ballast.toml", "w") as f:
        f.write(
            f"""[node]
id = 1
data_dir = "{work}/data"
api_listen = "127.0.0.1:{api_port}"
token_file = "{work}/token"

[[frontend]]
name = "f"
bind = ["127.0.0.1:{fe_port}"]
backend = "b"

[[backend]]
name = "b"
servers = [{{ name = "s1", addr = "127.0.0.1:{be_port}" }}]
"""
        )
    log = open(f"{work}/node.log", "w")
    node = subprocess.Popen([args.binary, "run", "--config", f"{work}/ballast.toml"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{api_port}/readyz", timeout=1)
                break
            except Exception:
                time.sleep(0.1)
        else:
            raise SystemExit("the node did not become ready")
        time.sleep(1)
        before = rss_kib(node.pid)

        stats = {"sent": 0, "closed_by_server": 0, "status": {}}
        lock = threading.Lock()
        start = time.time()
        hold_until = start + args.hold
        threads = [
            threading.Thread(target=attacker,
                             args=(("127.0.0.1", api_port), hold_until, stats, lock))
            for _ in range(args.clients)
        ]
        for t in threads:
            t.start()
        peak = before
        while any(t.is_alive() for t in threads):
            peak = max(peak, rss_kib(node.pid))
            time.sleep(0.1)
        for t in threads:
            t.join()
        end_of_attack = rss_kib(node.pid)
        time.sleep(5)
        after = rss_kib(node.pid)
        alive = node.poll() is None
        status = urllib.request.urlopen(
            f"http://127.0.0.1:{api_port}/healthz", timeout=2).status if alive else "-"

        mib = lambda k: f"{k / 1024:.1f} MiB"
        print(f"binary:            {args.binary}")
        print(f"clients:           {args.clients} x Content-Length {BODY} (unauthenticated)")
        print(f"body bytes sent:   {stats['sent'] / (1 << 20):.1f} MiB in total")
        print(f"answers:           {stats['status']}")
        print(f"closed by server:  {stats['closed_by_server']} of {args.clients}")
        print(f"RSS before:        {mib(before)}")
        print(f"RSS peak:          {mib(peak)}")
        print(f"RSS attack ended:  {mib(end_of_attack)} (clients gone)")
        print(f"RSS 5 s later:     {mib(after)}")
        print(f"node alive:        {alive}, /healthz {status}")
    finally:
        node.terminate()
        node.wait(timeout=10)
        log.close()


if __name__ == "__main__":
    main()
