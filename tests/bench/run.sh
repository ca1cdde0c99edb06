#!/usr/bin/env bash
# Ballast's benchmark: Ballast vs HAProxy vs nginx (stream) vs a direct connection, on
# loopback, with the same backends (tests/bench/load, a separate process from the
# clients).
#
#   tests/bench/run.sh                 full run: release build, 3 repetitions, rewrites
#                                      tests/bench/results.md and results.jsonl (the repo
#                                      keeps the latest run only; earlier ones are in git
#                                      history, pooled with `ballast-load report --input
#                                      a.jsonl --input b.jsonl`)
#   tests/bench/run.sh --smoke         CI check (< 2 min after `cargo test` built the
#                                      debug binaries): 1 short repetition, fails unless
#                                      it runs and Ballast's stickiness holds
#   options: --reps N   --proxies direct,ballast,haproxy,nginx   --out FILE
#   env:     BENCH_PORT_BASE (default 11000; uses BASE+1..3, +1001..3, +2001..3, +3001..3, +4001..3)
#            BENCH_PROFILE=release|debug (default: release, debug for --smoke)
#            BENCH_BALLAST_BEFORE=/path/to/ballast: also run that build as proxy "before"
#            (ports BASE+4001..3), to measure a data-plane change in the same run;
#            BENCH_BEFORE_NOTE describes it in the results; BENCH_MACHINE_NOTE describes the
#            machine (what else ran on it)
#
# Installs haproxy, nginx and libnginx-mod-stream from Debian's packages when missing
# (as root with apt-get; otherwise the missing proxies are skipped with a note).
# Only loopback addresses; every load loop is bounded in count and time; only the
# processes started here are stopped, by PID, on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"

SMOKE=0
REPS=3
PROXIES="direct,ballast,haproxy,nginx"
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --reps) REPS="$2"; shift ;;
    --proxies) PROXIES="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

if [ "$SMOKE" = 1 ]; then
  [ "$REPS" = 3 ] && REPS=1
  IDLE_CONNS=300; TPUT_SECS=1; LAT_MSGS=2000; RATE_SECS=1; ROUNDS=1
  MISSION_CLIENTS=30; MISSION_SECS=3; PAUSE=0.3; SETTLE=0.5
else
  IDLE_CONNS=5000; TPUT_SECS=5; LAT_MSGS=10000; RATE_SECS=2; ROUNDS=3
  MISSION_CLIENTS=300; MISSION_SECS=20; PAUSE=1; SETTLE=2
fi

log() { printf '%s  %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# ---- proxies from Debian's packages -----------------------------------------------
want() { [[ ",$PROXIES," == *",$1,"* ]]; }
need=()
if want haproxy && ! command -v haproxy >/dev/null 2>&1; then need+=(haproxy); fi
if want nginx; then
  command -v nginx >/dev/null 2>&1 || need+=(nginx)
  [ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || need+=(libnginx-mod-stream)
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing ${need[*]} from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    log "cannot install ${need[*]} (needs root and apt-get); skipping what is missing"
  fi
fi
if want haproxy && ! command -v haproxy >/dev/null 2>&1; then PROXIES="${PROXIES//haproxy/}"; fi
if want nginx && ! { command -v nginx >/dev/null 2>&1 && [ -e /usr/lib/nginx/modules/ngx_stream_module.so ]; }; then
  PROXIES="${PROXIES//nginx/}"
fi
if [ -n "${BENCH_BALLAST_BEFORE:-}" ] && ! want before; then PROXIES="$PROXIES,before"; fi
IFS=',' read -r -a ORDER <<<"$PROXIES"
ORDER=($(printf '%s\n' "${ORDER[@]}" | sed '/^$/d'))

# ---- build ----------------------------------------------------------------------------
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
# The smoke run checks that the benchmark works, not how fast: the debug build that
# `cargo test` leaves behind does (BENCH_PROFILE=release|debug overrides).
if [ "$SMOKE" = 1 ]; then PROFILE="${BENCH_PROFILE:-debug}"; else PROFILE="${BENCH_PROFILE:-release}"; fi
log "building ($PROFILE) ballast and ballast-load"
if [ "$PROFILE" = release ]; then
  cargo build -q --release -p ballast -p ballast-load
else
  cargo build -q -p ballast -p ballast-load
fi
BALLAST="$TARGET_DIR/$PROFILE/ballast"
LOAD="$TARGET_DIR/$PROFILE/ballast-load"

# ---- workspace, cleanup -----------------------------------------------------------------
WORK="$(mktemp -d /tmp/ballast-bench.XXXXXX)"
STARTED=()          # every PID started here; stopped on exit
declare -A PROXY_PID=()
cleanup() {
  local pid
  for pid in "${STARTED[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${STARTED[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
CLK_TCK="$(getconf CLK_TCK)"
BASE="${BENCH_PORT_BASE:-11000}"
HOST=127.0.0.1
backend_port() { echo $((BASE + $1)); }           # 1..3
front_port() {                                       # proxy, 1..3
  case "$1" in
    direct) backend_port "$2" ;;
    ballast) echo $((BASE + 1000 + $2)) ;;
    haproxy) echo $((BASE + 2000 + $2)) ;;
    nginx) echo $((BASE + 3000 + $2)) ;;
    before) echo $((BASE + 4000 + $2)) ;;
  esac
}

wait_port() { # port: up to 10 s for a listener
  local i
  for i in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "nothing listens on $HOST:$1 after 10 s"
  return 1
}

port_free() { ! (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }
for p in direct "${ORDER[@]}"; do
  for k in 1 2 3; do
    port="$( [ "$p" = direct ] && backend_port "$k" || front_port "$p" "$k")"
    port_free "$port" || { log "port $port is taken: set BENCH_PORT_BASE to a free range"; exit 1; }
  done
done

# ---- configs ------------------------------------------------------------------------------
mkdir -p "$WORK/ballast-data" "$WORK/before-data" "$WORK/nginx"
cat >"$WORK/ballast.toml" <<EOF
[node]
id = 1
data_dir = "$WORK/ballast-data"
api_listen = "$HOST:$((BASE + 1090))"

[[frontend]]
name = "bench"
bind = ["$HOST:$(front_port ballast 1)-$(front_port ballast 3)"]
backend = "pool"
timeout_client = "1h"

[[backend]]
name = "pool"
balance = "leastconn"
timeout_server = "1h"
timeout_connect = "5s"
stick = { on = "src", size = 200000, expire = "16h" }
servers = [
  { name = "s1", addr = "$HOST:$(backend_port 1)" },
  { name = "s2", addr = "$HOST:$(backend_port 2)" },
  { name = "s3", addr = "$HOST:$(backend_port 3)" },
]
EOF

sed -e "s|$WORK/ballast-data|$WORK/before-data|" \
    -e "s|$HOST:$((BASE + 1090))|$HOST:$((BASE + 4090))|" \
    -e "s|$HOST:$(front_port ballast 1)-$(front_port ballast 3)|$HOST:$(front_port before 1)-$(front_port before 3)|" \
    "$WORK/ballast.toml" >"$WORK/before.toml"

cat >"$WORK/haproxy.cfg" <<EOF
global
    maxconn 9000

defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h

frontend bench
    bind $HOST:$(front_port haproxy 1)-$(front_port haproxy 3)
    default_backend pool

backend pool
    balance leastconn
    stick-table type ip size 200k expire 16h
    stick on src
    server s1 $HOST:$(backend_port 1)
    server s2 $HOST:$(backend_port 2)
    server s3 $HOST:$(backend_port 3)
EOF

cat >"$WORK/nginx/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes auto;
worker_rlimit_nofile 20000;
daemon off;
master_process on;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;

events {
    worker_connections 10000;
}

stream {
    upstream pool {
        least_conn;
        server $HOST:$(backend_port 1);
        server $HOST:$(backend_port 2);
        server $HOST:$(backend_port 3);
    }
    server {
        listen $HOST:$(front_port nginx 1);
        listen $HOST:$(front_port nginx 2);
        listen $HOST:$(front_port nginx 3);
        proxy_pass pool;
        proxy_connect_timeout 5s;
        proxy_timeout 1h;
        proxy_half_close on;   # pass a FIN on and keep the other direction (as Ballast and HAProxy do)
    }
}
EOF

# ---- processes ------------------------------------------------------------------------------
start_proxy() {
  local name="$1" pid
  case "$name" in
    direct) return 0 ;;
    ballast) RUST_LOG=warn "$BALLAST" run --config "$WORK/ballast.toml" >>"$WORK/ballast.log" 2>&1 & pid=$! ;;
    before) RUST_LOG=warn "$BENCH_BALLAST_BEFORE" run --config "$WORK/before.toml" >>"$WORK/before.log" 2>&1 & pid=$! ;;
    haproxy) haproxy -db -f "$WORK/haproxy.cfg" >>"$WORK/haproxy.log" 2>&1 & pid=$! ;;
    nginx) nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" >>"$WORK/nginx.log" 2>&1 & pid=$! ;;
  esac
  STARTED+=("$pid")
  PROXY_PID[$name]=$pid
  local k
  for k in 1 2 3; do wait_port "$(front_port "$name" "$k")" || { tail -n 5 "$WORK"/*.log >&2; return 1; }; done
}

stop_proxy() {
  local name="$1" pid="${PROXY_PID[$1]:-}"
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "PROXY_PID[$name]"
}

# Every process of the proxy: its main PID and its children (nginx's workers).
proxy_pids() {
  local pid="${PROXY_PID[$1]:-}"
  [ -n "$pid" ] || return 0
  local all="$pid" child
  for child in $(pgrep -P "$pid" 2>/dev/null || true); do all="$all,$child"; done
  echo "$all"
}

RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
STICKY_FAIL=0

measure() { # name proxy rep -- ballast-load command and args
  local name="$1" proxy="$2" rep="$3"; shift 4
  local cmd="$1"; shift
  local pids; pids="$(proxy_pids "$proxy")"
  local out
  if out="$(RUST_BACKTRACE=0 "$LOAD" "$cmd" --name "$name" --label "$proxy" --rep "$rep" --clk-tck "$CLK_TCK" \
        ${pids:+--pids "$pids"} "$@" 2>"$WORK/load.err")"; then
    echo "$out" >>"$RESULTS"
  else
    [ -n "$out" ] && echo "$out" >>"$RESULTS"
    local err; err="$(grep -m1 -i 'error' "$WORK/load.err" | tr -d '"\\' | cut -c1-300)"
    log "  $proxy $name failed: $err"
    if [ "$cmd" = mission ] && [ "$proxy" = ballast ]; then STICKY_FAIL=1; fi
    [ -n "$out" ] || printf '{"name":"%s","label":"%s","rep":%s,"error":"%s"}\n' "$name" "$proxy" "$rep" "$err" >>"$RESULTS"
  fi
  log "  $proxy $name: $(tail -1 "$RESULTS" | cut -c1-220)"
  sleep "$PAUSE"
}

targets() { # proxy: the three front addresses
  echo "$HOST:$(front_port "$1" 1),$HOST:$(front_port "$1" 2),$HOST:$(front_port "$1" 3)"
}

LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
# Before the report rewrites results.md, which would make every run "+changes".
REV="${BENCH_REV:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+changes')}"
START_TIME="$(date -u '+%Y-%m-%d %H:%M UTC')"
log "work dir $WORK; proxies: ${ORDER[*]}; $REPS repetition(s); load average $LOAD_START"

"$LOAD" backend --listen "$HOST:$(backend_port 1),$HOST:$(backend_port 2),$HOST:$(backend_port 3)" \
  --lifetime-secs 7200 >"$WORK/backend.log" 2>&1 &
STARTED+=("$!")
for k in 1 2 3; do wait_port "$(backend_port "$k")"; done

for rep in $(seq 1 "$REPS"); do
  # Rotate the order each repetition so that drift (other work on the machine) spreads
  # over every proxy instead of landing on one.
  n=${#ORDER[@]}
  shift_by=$(( (rep - 1) % n ))
  order=("${ORDER[@]:$shift_by}" "${ORDER[@]:0:$shift_by}")
  log "repetition $rep/$REPS, order: ${order[*]} (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  # Fresh processes for every repetition, so the memory figure starts from a clean heap.
  for p in "${order[@]}"; do stop_proxy "$p"; start_proxy "$p"; done
  sleep 1
  for p in "${order[@]}"; do
    [ "$p" = direct ] && continue   # no proxy: nothing to weigh
    measure idle "$p" "$rep" -- idle --target "$HOST:$(front_port "$p" 1)" --conns "$IDLE_CONNS" --settle-secs "$SETTLE"
  done
  for p in "${order[@]}"; do
    measure throughput1 "$p" "$rep" -- throughput --target "$HOST:$(front_port "$p" 1)" --streams 1 --secs "$TPUT_SECS"
  done
  for p in "${order[@]}"; do
    measure throughput16 "$p" "$rep" -- throughput --target "$HOST:$(front_port "$p" 1)" --streams 16 --secs "$TPUT_SECS"
  done
  # Latency and connection rate are the most sensitive to other work on the machine:
  # several short rounds, alternating the proxies, so that every proxy samples the
  # same disturbances.
  for round in $(seq 1 "$ROUNDS"); do
    for p in "${order[@]}"; do
      measure latency "$p" "$rep" -- latency --target "$HOST:$(front_port "$p" 1)" --msgs "$LAT_MSGS"
    done
  done
  for round in $(seq 1 "$ROUNDS"); do
    for p in "${order[@]}"; do
      measure connrate "$p" "$rep" -- connrate --target "$HOST:$(front_port "$p" 1)" --secs "$RATE_SECS"
    done
  done
  for p in "${order[@]}"; do
    [ "$p" = direct ] && continue   # one socket per backend: stickiness means nothing
    sticky=()
    [ "$p" = ballast ] && sticky=(--require-sticky)
    [ "$p" = before ] && sticky=()
    measure mission "$p" "$rep" -- mission --target "$(targets "$p")" \
      --clients "$MISSION_CLIENTS" --secs "$MISSION_SECS" --src-net $((1 + rep)) "${sticky[@]}"
  done
done
LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---- report -----------------------------------------------------------------------------------
if [ -z "$OUT" ]; then
  if [ "$SMOKE" = 1 ]; then OUT="$WORK/results-smoke.md"; else OUT="$ROOT/tests/bench/results.md"; fi
fi
{
  echo "# Ballast benchmark results"
  echo
  echo "Generated by \`tests/bench/run.sh$([ "$SMOKE" = 1 ] && echo ' --smoke')\` on $START_TIME ($PROFILE build)."
  echo
  echo "- Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(uname -sr), $(free -g | awk '/Mem:/{print $2}') GiB RAM."
  echo "  ${BENCH_MACHINE_NOTE:-A shared virtual machine.} Load average $LOAD_START at the start (the benchmark's own build included), $LOAD_END at the end."
  echo "  Clients (ballast-load), backends (ballast-load backend, a separate process) and the proxy all share the 2 cores."
  echo "- Versions: ballast $REV,"
  echo "  $(haproxy -v 2>/dev/null | head -1 | cut -d' ' -f1-3 || true), $(nginx -v 2>&1 | cut -d' ' -f3 || true), $(rustc --version | cut -d' ' -f1-2)."
  echo "- Proxies: Ballast (leastconn, stick on src, RUST_LOG=warn so no per-connection log line, like the others),"
  echo "  HAProxy (mode tcp, balance leastconn, stick on src, defaults otherwise: nbthread = CPUs, no splice),"
  echo "  nginx stream (least_conn, worker_processes auto), direct = client to backend 1 (the ceiling)."
  if want before; then
    echo "- Ballast before = \`$BENCH_BALLAST_BEFORE\`: ${BENCH_BEFORE_NOTE:-another Ballast build}, run alongside to measure a change."
  fi
  echo "- $REPS repetition(s), order rotated every repetition; fresh proxy processes per repetition."
  echo "- Throughput: $TPUT_SECS s upload of 256 KiB writes per stream, counted by the backend."
  echo "  Latency: 1 persistent connection, $LAT_MSGS echoes of 64 B (after 5% warm-up), $ROUNDS rounds per repetition."
  echo "  Connections/s: 16 concurrent loops of connect, 16 B echo, close, each loop from its own 127.9.0.x address, $RATE_SECS s, $ROUNDS rounds per repetition."
  echo "  Memory: $IDLE_CONNS connections (each echoes 1 byte, then idles), RSS delta / N summed over the proxy's processes."
  echo "  CPU per GB: utime+stime of the proxy's processes during the 16-stream run / GB moved."
  echo "  Mission: $MISSION_CLIENTS clients × 3 sockets (ports 1-3 opened at once, each client from its own 127.x address),"
  echo "  15 KB/s per socket each way (echo) for $MISSION_SECS s; CPU % of one core over that window."
  echo
  "$LOAD" report --input "$RESULTS"
} >"$OUT"
if [ "$SMOKE" = 0 ] && [ -z "${BENCH_NO_RAW:-}" ]; then cp "$RESULTS" "${OUT%.md}.jsonl"; fi
cat "$OUT"
log "results in $OUT"

if [ "$STICKY_FAIL" = 1 ]; then
  log "FAILED: Ballast's stickiness did not hold (or the mission did not run)"
  exit 1
fi
if [ "$SMOKE" = 1 ] && grep -q '"label":"ballast".*"error"' "$RESULTS"; then
  log "FAILED: a Ballast measurement did not run"
  exit 1
fi
