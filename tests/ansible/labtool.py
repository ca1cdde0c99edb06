#!/usr/bin/env python3
"""Small clients for the Ansible lab (tests/ansible/lab.sh), run inside its namespaces.

  cluster URL...        one JSON line: each node's Raft and VRRP state, the leader, the masters
  connect ADDR N        N connections through ADDR; prints each greeting (the backend's name)
  hold ADDR DIR         one connection held open: writes DIR/greeting, waits for DIR/go,
                        then checks the connection still echoes; writes DIR/result
  probe ADDR DIR        a new connection every 100 ms until DIR/stop; writes DIR/summary.json
  stream ADDR DIR N     N clients holding 1-3 connections each through ADDR, each connection
                        sending random bytes every 100 ms and checking the echo byte for byte,
                        until DIR/stop; writes DIR/ready once all are up, DIR/summary.json
  watch-vip IP DIR NAME=NETNS...
                        who holds IP (on eth0 of each named namespace), every 100 ms until
                        DIR/stop; writes DIR/summary.json

Standard library only. Every loop is bounded in count and time.
"""

import json
import os
import random
import socket
import subprocess
import sys
import threading
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


def utc_now():
    t = time.time()
    return time.strftime("%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}"


# How long one echo may take before the connection counts as broken: far above the
# live upgrade's pause (milliseconds), far below the lab's budget.
ECHO_TIMEOUT = 10.0


def stream_one(addr, index, stop, state):
    """One held connection: a chunk of 1-4096 random bytes every 100 ms, the echo read
    back in full and compared byte for byte. Records its figures in `state`."""
    rng = random.Random(index)
    try:
        s, name = greet(addr, timeout=5.0)
    except OSError as e:
        state.update(error=f"connect: {e}", at=utc_now())
        return
    state["server"] = name
    s.settimeout(ECHO_TIMEOUT)
    try:
        while not stop.is_set():
            t = time.monotonic()
            chunk = rng.randbytes(rng.randint(1, 4096))
            s.sendall(chunk)
            state["sent"] += len(chunk)
            got = bytearray()
            while len(got) < len(chunk):
                part = s.recv(len(chunk) - len(got))
                if not part:
                    raise OSError("closed by the other side")
                got += part
            if bytes(got) != chunk:
                first = next(i for i in range(len(chunk)) if got[i] != chunk[i])
                raise OSError(f"echo differs at byte {state['echoed'] + first}")
            state["echoed"] += len(chunk)
            state["rounds"] += 1
            state["max_round_ms"] = max(state["max_round_ms"], (time.monotonic() - t) * 1000)
            state["last_ok"] = time.monotonic()
            stop.wait(max(0.0, 0.1 - (time.monotonic() - t)))
    except OSError as e:  # socket.timeout included
        state.update(error=str(e) or type(e).__name__, at=utc_now())
    finally:
        s.close()


def cmd_stream(addr, d, clients):
    """Client i holds 1 + i % 3 connections (30 clients: 60 connections). A connection
    broken, reset, stalled past ECHO_TIMEOUT or echoing other bytes counts as broken."""
    clients = int(clients)
    stop = threading.Event()
    states, threads = [], []
    for c in range(clients):
        for k in range(1 + c % 3):
            state = {"client": c, "sent": 0, "echoed": 0, "rounds": 0, "max_round_ms": 0.0,
                     "last_ok": None, "server": None}
            t = threading.Thread(target=stream_one, args=(addr, len(states), stop, state), daemon=True)
            states.append(state)
            threads.append(t)
            t.start()
    first = time.monotonic()
    deadline = first + 1200
    ready = False
    while not os.path.exists(os.path.join(d, "stop")) and time.monotonic() < deadline:
        if not ready and all(st["rounds"] > 0 or "error" in st for st in states):
            with open(os.path.join(d, "ready"), "w") as f:
                f.write(f"{len(states)}\n")
            ready = True
        time.sleep(0.1)
    stopped = time.monotonic()
    stop.set()
    for t in threads:
        t.join(ECHO_TIMEOUT + 5)
    broken = [st for st in states if "error" in st]
    # A connection that stopped echoing without an error would be a stalled one.
    stale = [st for st in states
             if "error" not in st and (st["last_ok"] is None or stopped - st["last_ok"] > 2.0)]
    servers = {}
    for st in states:
        if st["server"]:
            servers[st["server"]] = servers.get(st["server"], 0) + 1
    summary = {
        "clients": clients,
        "connections": len(states),
        "broken": len(broken),
        "stale": len(stale),
        "broken_detail": [f"client {st['client']}: {st['error']} at {st['at']}" for st in broken[:10]],
        "rounds": sum(st["rounds"] for st in states),
        "bytes_sent": sum(st["sent"] for st in states),
        "bytes_echoed": sum(st["echoed"] for st in states),
        "max_round_ms": round(max((st["max_round_ms"] for st in states), default=0)),
        "seconds": round(stopped - first, 1),
        "servers": servers,
    }
    with open(os.path.join(d, "summary.json"), "w") as f:
        json.dump(summary, f)


def cmd_watch_vip(ip, d, *hosts):
    """Samples which of the named namespaces has IP on eth0, every 100 ms; counts the
    samples per holder set ("lb1", "lb1+lb2", "none") and notes each change."""
    named = [h.split("=", 1) for h in hosts]
    counts, changes = {}, []
    last = None
    deadline = time.monotonic() + 1200
    while not os.path.exists(os.path.join(d, "stop")) and time.monotonic() < deadline:
        t = time.monotonic()
        holders = []
        for name, ns in named:
            out = subprocess.run(["ip", "-n", ns, "-4", "-o", "addr", "show", "dev", "eth0"],
                                 capture_output=True, text=True, timeout=5).stdout
            if f" {ip}/" in out:
                holders.append(name)
        key = "+".join(holders) or "none"
        counts[key] = counts.get(key, 0) + 1
        if key != last:
            if len(changes) < 50:
                changes.append(f"{utc_now()} {key}")
            last = key
        time.sleep(max(0.0, 0.1 - (time.monotonic() - t)))
    with open(os.path.join(d, "summary.json"), "w") as f:
        json.dump({"samples": sum(counts.values()), "holders": counts, "changes": changes}, f)


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    {"cluster": lambda: cmd_cluster(args),
     "connect": lambda: cmd_connect(*args),
     "hold": lambda: cmd_hold(*args),
     "probe": lambda: cmd_probe(*args),
     "stream": lambda: cmd_stream(*args),
     "watch-vip": lambda: cmd_watch_vip(*args)}[cmd]()


if __name__ == "__main__":
    main()
