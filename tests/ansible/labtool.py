#!/usr/bin/env python3
"""Small clients for the Ansible lab (tests/ansible/lab.sh), run inside its namespaces.

  cluster URL...        one JSON line: each node's Raft and VRRP state, the leader, the masters
  connect ADDR N        N connections through ADDR; prints each greeting (the backend's name)
  hold ADDR DIR         one connection held open: writes DIR/greeting, waits for DIR/go,
                        then checks the connection still echoes; writes DIR/result
  probe ADDR DIR        a new connection every 100 ms until DIR/stop; writes DIR/summary.json

Standard library only. Every loop is bounded in count and time.
"""

import json
import os
import socket
import sys
import time
import urllib.request


def greet(addr, timeout=1.0):
    """Connects, reads the demo backend's greeting line; returns (socket, name)."""
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=timeout)
    s.settimeout(timeout)
    data = b""
    while b"\n" not in data and len(data) < 256:
        chunk = s.recv(256)
        if not chunk:
            break
        data += chunk
    name = data.decode(errors="replace").strip()
    if not name:
        s.close()
        raise OSError("no greeting")
    return s, name


def cmd_cluster(urls):
    nodes = {}
    for url in urls:
        try:
            with urllib.request.urlopen(url + "/v1/status", timeout=3) as r:
                st = json.load(r)
            vrrp = st.get("vrrp") or {}
            nodes[str(st["node_id"])] = {
                "role": st["role"],
                "raft_state": st["raft"]["state"],
                "leader": st["raft"]["leader"],
                "revision": st["revision"],
                "vrrp": vrrp.get("state"),
                "caught_up": st.get("caught_up"),
            }
        except Exception as e:  # an unreachable node is part of the answer
            nodes[url] = {"error": str(e)}
    leaders = {n.get("leader") for n in nodes.values() if "error" not in n}
    print(json.dumps({
        "nodes": nodes,
        "leader": leaders.pop() if len(leaders) == 1 else None,
        "masters": sorted(k for k, n in nodes.items() if n.get("vrrp") == "master"),
    }))


def cmd_connect(addr, n):
    for _ in range(int(n)):
        try:
            s, name = greet(addr)
            s.close()
            print(name)
        except OSError as e:
            print(f"error: {e}")


def cmd_hold(addr, d):
    s, name = greet(addr)
    with open(os.path.join(d, "greeting"), "w") as f:
        f.write(name + "\n")
    deadline = time.time() + 900
    while not os.path.exists(os.path.join(d, "go")) and time.time() < deadline:
        time.sleep(0.1)
    result = "timeout"
    try:
        s.settimeout(5)
        s.sendall(b"still here\n")
        got = b""
        while b"\n" not in got and len(got) < 64:
            chunk = s.recv(64)
            if not chunk:
                break
            got += chunk
        result = "echo ok" if got == b"still here\n" else f"echo wrong: {got!r}"
    except OSError as e:
        result = f"error: {e}"
    with open(os.path.join(d, "result"), "w") as f:
        f.write(result + "\n")


def cmd_probe(addr, d):
    """New connections through ADDR every 100 ms. The figure that matters is the
    longest time between two connections that worked (100 ms when nothing fails)."""
    attempts = failures = 0
    last_ok = first = time.monotonic()
    max_gap = 0.0
    servers = {}
    failed_at = []  # wall-clock times, to line up with the nodes' logs
    deadline = first + 1200
    while not os.path.exists(os.path.join(d, "stop")) and time.monotonic() < deadline:
        t = time.monotonic()
        attempts += 1
        try:
            s, name = greet(addr, timeout=0.5)
            s.close()
            servers[name] = servers.get(name, 0) + 1
            max_gap = max(max_gap, t - last_ok)
            last_ok = t
        except OSError:
            failures += 1
            if len(failed_at) < 50:
                failed_at.append(time.strftime("%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}")
        time.sleep(max(0.0, 0.1 - (time.monotonic() - t)))
    # Still failing at the end counts too.
    max_gap = max(max_gap, time.monotonic() - last_ok)
    summary = {
        "attempts": attempts,
        "failures": failures,
        "max_gap_ms": round(max_gap * 1000),
        "seconds": round(time.monotonic() - first, 1),
        "servers": servers,
        "failed_at_utc": failed_at,
    }
    with open(os.path.join(d, "summary.json"), "w") as f:
        json.dump(summary, f)


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    {"cluster": lambda: cmd_cluster(args),
     "connect": lambda: cmd_connect(*args),
     "hold": lambda: cmd_hold(*args),
     "probe": lambda: cmd_probe(*args)}[cmd]()


if __name__ == "__main__":
    main()
