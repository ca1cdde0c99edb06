#!/usr/bin/env bash
# Live upgrade benchmark (issue 19): how long the relays stand still and how long the
# whole hand-over takes, against the number of established connections.
#
#   tests/bench/upgrade.sh                 release build; 1,000 / 5,000 / 9,000
#                                          connections; rewrites docs/bench/upgrade.md
#   tests/bench/upgrade.sh --conns 1000,2000 --out FILE
#
# One node on loopback (no cluster, no VRRP), three backends (tests/bench/load), the
# clients in a third process. For each count: the clients open the connections and echo
# a numbered 32-byte message on each (every 0.2-1 s, spread), `kill -USR2` the node
# (after installing the binary again at its path, as a package upgrade does), wait for
# the new process's report, echo 3 s more. Prints one JSON line per count: connections
# broken, each connection's longest echo wait (p50/p99/max), the node's pause and
# hand-over time. Only loopback; only the processes started here are stopped, by PID.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
COUNTS="1000,5000,9000"
OUT="docs/bench/upgrade.md"
while [ $# -gt 0 ]; do
  case "$1" in
    --conns) COUNTS="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

log() { printf '%s  %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# 9,000 proxied connections hold 18,000 descriptors in the node (and as many again in
# the new process while it takes over): the most this machine allows is 20,000.
ulimit -n "$(ulimit -Hn)"

log "building (release)"
cargo build --release -q -p ballast -p ballast-load
LOAD="$ROOT/target/release/ballast-load"

WORK="$(mktemp -d /tmp/ballast-upgrade-bench.XXXXXX)"
PIDS=()
cleanup() {
  local status=$?
  if [ "$status" != 0 ]; then
    echo "---- failed ($status): the node's log, last lines ----" >&2
    tail -n 30 "$WORK/ballast.log" >&2 || true
  fi
  if [ -s "$WORK/ballast.pid" ]; then kill "$(cat "$WORK/ballast.pid")" 2>/dev/null || true; fi
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 0.5
  rm -rf "$WORK"
}
trap cleanup EXIT

BASE="${BENCH_PORT_BASE:-13000}"
API="127.0.0.1:$((BASE + 90))"
FRONT="127.0.0.1:$((BASE + 100))"
mkdir -p "$WORK/bin" "$WORK/data"
install_binary() {
  cp "$ROOT/target/release/ballast" "$WORK/bin/ballast.new"
  mv -f "$WORK/bin/ballast.new" "$WORK/bin/ballast"
}
install_binary

"$LOAD" backend --listen "127.0.0.1:$((BASE + 1)),127.0.0.1:$((BASE + 2)),127.0.0.1:$((BASE + 3))" \
  --lifetime-secs 1800 >"$WORK/backends.log" 2>&1 &
PIDS+=($!)

cat >"$WORK/ballast.toml" <<TOML
[node]
id = 1
data_dir = "$WORK/data"
api_listen = "$API"

[[frontend]]
name = "bench"
bind = ["$FRONT"]
backend = "pool"

[[backend]]
name = "pool"
balance = "leastconn"
stick = { on = "src", size = 100000, expire = "30m" }
servers = [
  { name = "s1", addr = "127.0.0.1:$((BASE + 1))" },
  { name = "s2", addr = "127.0.0.1:$((BASE + 2))" },
  { name = "s3", addr = "127.0.0.1:$((BASE + 3))" },
]
TOML

RUST_LOG="${BENCH_RUST_LOG:-warn}" "$WORK/bin/ballast" run --config "$WORK/ballast.toml" --pid-file "$WORK/ballast.pid" \
  >"$WORK/ballast.log" 2>&1 &
# Ready: the model applied and the frontend listening (GET /readyz answers 200).
ready() {
  local answer
  answer=$(exec 3<>"/dev/tcp/${API%:*}/${API#*:}" &&
    printf 'GET /readyz HTTP/1.0\r\n\r\n' >&3 && head -n 1 <&3) 2>/dev/null || return 1
  [[ "$answer" == *" 200 "* ]]
}
for _ in $(seq 200); do ready && break; sleep 0.1; done
ready || { echo "the node did not become ready" >&2; exit 1; }

RESULTS="$WORK/results.jsonl"
IFS=',' read -r -a counts <<<"$COUNTS"
for n in "${counts[@]}"; do
  interval=$(( n <= 1000 ? 200 : 1000 ))
  install_binary
  log "upgrade under $n connections (echo every ${interval} ms)"
  "$LOAD" upgrade --target "$FRONT" --label ballast --conns "$n" --api "$API" \
    --interval-ms "$interval" --src-net 3 | tee -a "$RESULTS"
  sleep 1
done
# With BENCH_RUST_LOG=info: the hand-over's steps, timed by the node's own log.
grep -E "live upgrade|frozen" "$WORK/ballast.log" >&2 || true

{
  echo "# Live upgrade: pause and hand-over time against established connections"
  echo
  echo "\`tests/bench/upgrade.sh\`, run $(date -u +%Y-%m-%d\ %H:%M) UTC on $(nproc) cores, release build,"
  echo "one node on loopback, clients and backends in their own processes. Each"
  echo "connection echoes a 32-byte message every 0.2 s (1,000) or 1 s (more), checked"
  echo "byte for byte; \`kill -USR2\` after the binary was installed again at its path."
  echo
  echo "| connections | broken | node's pause (freeze → resumed) | whole hand-over | longest echo wait per connection, upgrade window: p50 / p99 / max | same before the signal (no upgrade): p50 / p99 |"
  echo "|---:|---:|---:|---:|---|---|"
  python3 - "$RESULTS" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(f"| {r['conns']:,} | {r['broken']} | {r['pause_ms']} ms | {r['duration_ms']} ms | "
          f"{r['longest_echo_wait_p50_ms']:.1f} / {r['longest_echo_wait_p99_ms']:.1f} / {r['longest_echo_wait_max_ms']:.1f} ms | "
          f"{r['baseline_longest_echo_wait_p50_ms']:.1f} / {r['baseline_longest_echo_wait_p99_ms']:.1f} ms |")
PY
  echo
  echo "How to read it: the node's pause runs from the old process freezing its data plane"
  echo "to the last handed-over connection relaying again in the new one (every connection"
  echo "stands still for at most that long); the whole hand-over from the signal's upgrade"
  echo "start (the new binary checked and started) to the new process serving. A client"
  echo "sees the pause only if it sent during it: the echo wait columns are each"
  echo "connection's longest wait for its echo, in the upgrade window and, for comparison,"
  echo "before the signal. Both phases that grow with the count run on the two plane"
  echo "threads: parking each connection in the old process and resuming it in the new one"
  echo "(~20 µs each, pings included); see docs/design-notes.md, \"Live upgrade\"."
  echo
  echo "Raw records:"
  echo
  echo '```'
  cat "$RESULTS"
  echo '```'
} >"$OUT"
log "wrote $OUT"
