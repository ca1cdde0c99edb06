#!/usr/bin/env bash
# The Ansible lab (issue #7): the real ansible-playbook, over SSH, against three
# hosts in network namespaces, then checks of what it built.
#
#   tests/ansible/lab.sh PATH/TO/ballast        (root; run by `cargo test` through
#                                                tests/ansible-lab, or by hand)
#
#   ctl 198.18.40.5 ──┐                   controller: runs ansible-playbook
#   lb1 198.18.40.11 ─┤                   sshd, ballast (priority 150)
#   lb2 198.18.40.12 ─┤  bridge           sshd, ballast (priority 100)
#   wit 198.18.40.13 ─┤  VIP .100/24      sshd, ballast witness
#   cl  198.18.40.50 ─┤                   client: probes through VIP:8001
#   be  198.18.40.60 ─┘                   demo backends be1-be3 on :9001-9003
#
# Each of lb1, lb2 and wit is a "host" of its own: its sshd runs in a private
# mount namespace with overlays on /etc, /var and /usr/local and its own /run, so
# the role's user, directories, binary, config and pid file are per host, and the
# machine's own files are never touched. Addresses are from 198.18.0.0/15 only,
# with no route out of the lab.
#
# Steps: lint; deploy (cluster formed, VIP on the master, traffic through it,
# user/caps/modes); a second run with changed=0; a server change in the inventory,
# first seen by a --check run that changes nothing, then applied live (same PIDs,
# a held connection survives, the new server serves); a
# rolling upgrade from a release archive (every node upgraded live, no restart)
# while clients hold 60 connections through the VIP, checking every
# echo byte for byte, and a probe connects every 100 ms: nothing breaks, nothing
# fails, the VIP never moves; a last run with changed=0.
#
# Figures go to stdout as `RESULT key=value` lines (parsed by the Rust test);
# progress to stderr. Exit 0: every check passed; 1: a check failed; 77: this
# machine cannot run the lab (the reason on stderr).
#
# Everything the lab starts runs in its namespaces and is stopped by PID (the
# namespaces' process lists), on any exit. Every wait is bounded.

set -euo pipefail

BALLAST=${1:?usage: lab.sh PATH/TO/ballast}
BALLAST=$(realpath "$BALLAST")
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
ANSIBLE_DIR=$REPO/ansible
NET=198.18.40
VIP=$NET.100
PORT=8001
# Clients holding connections through the VIP during the rolling upgrade, each
# with 1-3 connections (30: 60 connections).
STREAM_CLIENTS=${STREAM_CLIENTS:-30}

log() { printf '[lab %s] %s\n' "$(date +%T)" "$*" >&2; }
result() { printf 'RESULT %s=%s\n' "$1" "$2"; }
fail() {
  log "FAIL: $*"
  exit 1
}
cannot_run() {
  log "cannot run the lab: $*"
  exit 77
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }

[ "$(id -u)" = 0 ] || cannot_run "not running as root (network namespaces, mounts)"
for tool in ip unshare setpriv ssh ssh-keygen /usr/sbin/sshd ansible-playbook ansible-lint yamllint curl tar sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || cannot_run "$tool is missing (apt: iproute2 openssh-server openssh-client; pip: ansible-core ansible-lint yamllint)"
done
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3) || cannot_run "python3 is missing"
grep -qw overlay /proc/filesystems || cannot_run "the kernel has no overlayfs"

# Short: ssh control sockets live here (108-byte limit on socket paths).
LAB=$(mktemp -d /tmp/bal-XXXXXX)
P=ba$(printf '%04x' $((RANDOM)))
HOSTS=(lb1 lb2 wit)
declare -A ADDR=([ctl]=$NET.5 [lb1]=$NET.11 [lb2]=$NET.12 [wit]=$NET.13 [cl]=$NET.50 [be]=$NET.60)
declare -A API=([lb1]=http://$NET.11:9090 [lb2]=http://$NET.12:9090 [wit]=http://$NET.13:9090)
NAMESPACES=()
STATUS=1

cleanup() {
  set +e
  trap - EXIT INT TERM
  # Every process in the lab's namespaces was started by this script (sshd and
  # what ran through it, backends, probes, the controller's ssh masters).
  local pids=() ns pid i
  for ns in "${NAMESPACES[@]}"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do pids+=("$pid"); done
  done
  [ ${#pids[@]} -gt 0 ] && kill -TERM "${pids[@]}" 2>/dev/null
  for i in $(seq 1 50); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null; done
  if [ "$STATUS" != 0 ] && [ -d "$LAB" ]; then
    for h in "${HOSTS[@]}"; do
      if [ -f "$LAB/hosts/$h/var/up/log/ballast/ballast.log" ]; then
        log "---- last lines of $h's ballast.log"
        tail -n 25 "$LAB/hosts/$h/var/up/log/ballast/ballast.log" >&2
      fi
    done
  fi
  for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null; done
  rm -rf "/tmp/.ansible-$P"
  if [ "${KEEP_LAB:-}" = 1 ]; then
    log "lab files kept in $LAB"
  else
    rm -rf "$LAB"
  fi
}
trap 'STATUS=$?; cleanup' EXIT
trap 'exit 130' INT TERM

in_ns() {
  local ns=$1
  shift
  ip netns exec "$P$ns" "$@"
}

# ---------------------------------------------------------------- lint
log "linting ansible/ (yamllint, ansible-lint, syntax check)"
(cd "$ANSIBLE_DIR" && yamllint -s .) >"$LAB/yamllint.log" 2>&1 || {
  cat "$LAB/yamllint.log" >&2
  fail "yamllint"
}
(cd "$ANSIBLE_DIR" && ansible-lint --nocolor -q) >"$LAB/ansible-lint.log" 2>&1 || {
  cat "$LAB/ansible-lint.log" >&2
  fail "ansible-lint"
}
result lint clean

# The example inventory must stay a valid cluster: render every node's config
# from it (no connection) and run `ballast check` on each.
log "rendering the example inventory's configs and checking them with ballast check"
(cd "$ANSIBLE_DIR" && ANSIBLE_CONFIG=$ANSIBLE_DIR/ansible.cfg ANSIBLE_NOCOLOR=1 ANSIBLE_LOCAL_TEMP=$LAB/ansible-local \
  ansible-playbook -i inventories/example "$HERE/render-configs.yml" \
  -e "out_dir=$LAB/example-configs ballast=$BALLAST") >"$LAB/example-configs.log" 2>&1 || {
  tail -n 40 "$LAB/example-configs.log" >&2
  fail "the example inventory does not render valid configs"
}
result example_inventory "$(find "$LAB/example-configs" -name '*.toml' | wc -l)-configs-checked"

# ---------------------------------------------------------------- network
log "building the network (prefix $P, $NET.0/24)"
ip netns add "${P}br"
NAMESPACES+=("${P}br")
ip -n "${P}br" link add br0 type bridge
ip -n "${P}br" link set br0 up
for h in ctl lb1 lb2 wit cl be; do
  ip netns add "$P$h"
  NAMESPACES+=("$P$h")
  ip -n "$P$h" link set lo up
  ip -n "${P}br" link add "b$h" type veth peer name eth0 netns "$P$h"
  ip -n "${P}br" link set "b$h" master br0 up
  ip -n "$P$h" addr add "${ADDR[$h]}/24" dev eth0
  ip -n "$P$h" link set eth0 up
done

# ---------------------------------------------------------------- binaries
# v1 is the binary under test without debug info (30 MB instead of 200 MB to copy
# three times). v2 is the same program with a marker appended after the ELF
# image: another checksum, so the role sees a new version, in a release archive
# the role downloads (file://) and checks like a real one.
mkdir -p "$LAB/dist/v1" "$LAB/dist/v2" "$LAB/cache"
if command -v strip >/dev/null 2>&1; then
  strip -o "$LAB/dist/v1/ballast" "$BALLAST"
else
  cp "$BALLAST" "$LAB/dist/v1/ballast"
fi
cp "$LAB/dist/v1/ballast" "$LAB/dist/v2/ballast"
printf '\nballast-lab-upgrade-v2\n' >>"$LAB/dist/v2/ballast"
tar -czf "$LAB/dist/ballast-v2.tar.gz" -C "$LAB/dist/v2" ballast
V1_SHA=$(sha256sum "$LAB/dist/v1/ballast" | cut -d' ' -f1)
V2_SHA=$(sha256sum "$LAB/dist/v2/ballast" | cut -d' ' -f1)
ARCHIVE_SHA=$(sha256sum "$LAB/dist/ballast-v2.tar.gz" | cut -d' ' -f1)
"$LAB/dist/v2/ballast" --version >/dev/null || fail "the v2 binary does not run"

# ---------------------------------------------------------------- hosts
log "starting an sshd on lb1, lb2, wit, each with its own /etc, /var, /usr/local, /run"
mkdir -p "$LAB/ssh" "$LAB/cp"
ssh-keygen -q -t ed25519 -N '' -f "$LAB/ssh/host_ed25519" -C lab-host
ssh-keygen -q -t ed25519 -N '' -f "$LAB/ssh/id_ed25519" -C lab-controller
cp "$LAB/ssh/id_ed25519.pub" "$LAB/ssh/authorized_keys"
: >"$LAB/ssh/known_hosts"
for h in "${HOSTS[@]}"; do
  echo "${ADDR[$h]} $(cut -d' ' -f1-2 "$LAB/ssh/host_ed25519.pub")" >>"$LAB/ssh/known_hosts"
done
cat >"$LAB/ssh/config" <<EOF
Host $NET.*
  User root
  IdentityFile $LAB/ssh/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $LAB/ssh/known_hosts
  StrictHostKeyChecking yes
  ControlMaster auto
  ControlPath $LAB/cp/%C
  ControlPersist 300s
  ConnectTimeout 10
  ServerAliveInterval 10
EOF
for h in "${HOSTS[@]}"; do
  d=$LAB/hosts/$h
  mkdir -p "$d"/{etc,var,usrlocal}/{up,work} "$d/run/sshd" "$d/run/lock"
  chmod 0755 "$d/run" "$d/run/sshd"
  cat >"$d/sshd_config" <<EOF
ListenAddress ${ADDR[$h]}:22
HostKey $LAB/ssh/host_ed25519
PidFile none
AuthorizedKeysFile $LAB/ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxSessions 50
MaxStartups 100
Subsystem sftp /usr/lib/openssh/sftp-server
LogLevel ERROR
EOF
  # sshd and everything started through it (the ballast node) see this host's
  # /etc, /var, /usr/local and /run; the lower layers stay untouched.
  in_ns "$h" unshare --mount --propagation private sh -c '
    set -e
    d=$1
    for dir in etc var usrlocal; do
      case $dir in usrlocal) target=/usr/local ;; *) target=/$dir ;; esac
      mount -t overlay overlay -o "lowerdir=$target,upperdir=$d/$dir/up,workdir=$d/$dir/work" "$target"
    done
    mount --bind "$d/run" /run
    exec /usr/sbin/sshd -D -e -f "$d/sshd_config"
  ' sh "$d" >"$d/sshd.log" 2>&1 &
done
for h in "${HOSTS[@]}"; do
  for i in $(seq 1 100); do
    in_ns ctl ssh -F "$LAB/ssh/config" -o ControlMaster=no "${ADDR[$h]}" true 2>/dev/null && break
    [ "$i" = 100 ] && {
      cat "$LAB/hosts/$h/sshd.log" >&2
      fail "sshd on $h does not answer"
    }
    sleep 0.1
  done
done
on_host() {
  local h=$1
  shift
  in_ns ctl ssh -F "$LAB/ssh/config" "${ADDR[$h]}" "$@"
}

# ---------------------------------------------------------------- backends
for i in 1 2 3; do
  in_ns be "$BALLAST" demo-backend --listen "${ADDR[be]}:900$i" --name "be$i" >"$LAB/be$i.log" 2>&1 &
done
for i in 1 2 3; do
  for n in $(seq 1 100); do
    grep -q "listening" "$LAB/be$i.log" 2>/dev/null && break
    [ "$n" = 100 ] && fail "demo backend be$i did not start"
    sleep 0.1
  done
done

# ---------------------------------------------------------------- inventory
# The checked-in lab inventory, plus the lab's connection settings, token and
# binary in a generated group_vars file.
cp -r "$ANSIBLE_DIR/inventories/lab" "$LAB/inv"
TOKEN=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
lab_vars() {
  # $1: binary lines (ballast_binary_src or the release archive)
  cat >"$LAB/inv/group_vars/ballast/lab.yml" <<EOF
---
# Generated by tests/ansible/lab.sh.
ballast_token: "$TOKEN"
ballast_release_cache_dir: $LAB/cache
$1
EOF
}
lab_vars "ballast_binary_src: $LAB/dist/v1/ballast"

export ANSIBLE_CONFIG=$ANSIBLE_DIR/ansible.cfg
export ANSIBLE_SSH_ARGS="-F $LAB/ssh/config"
export ANSIBLE_LOCAL_TEMP=$LAB/ansible-local
export ANSIBLE_REMOTE_TEMP=/tmp/.ansible-$P
export ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 ANSIBLE_RETRY_FILES_ENABLED=0
export ANSIBLE_HOST_KEY_CHECKING=True

# playbook NAME: runs site.yml from the controller; sets CHANGED, FAILED, SECS and
# PER_HOST (host:changed,...); fails the lab on a failed run.
playbook() {
  local name=$1 t0 rc
  t0=$(now_ms)
  log "ansible-playbook site.yml ($name)"
  set +e
  # shellcheck disable=SC2086 # PLAYBOOK_ARGS holds several words
  # Bounded: the role's own waits are (retries x delay), this catches anything else.
  (cd "$ANSIBLE_DIR" && in_ns ctl timeout 900 ansible-playbook -i "$LAB/inv" site.yml ${PLAYBOOK_ARGS:-}) >"$LAB/ansible-$name.log" 2>&1
  rc=$?
  set -e
  SECS=$(awk -v a="$t0" -v b="$(now_ms)" 'BEGIN { printf "%.1f", (b - a) / 1000 }')
  read -r CHANGED FAILED UNREACHABLE PER_HOST < <(awk '
    /^PLAY RECAP/ { r = 1; next }
    r && /ok=/ {
      for (i = 1; i <= NF; i++) {
        split($i, kv, "=")
        if (kv[1] == "changed") { c += kv[2]; hc = kv[2] }
        if (kv[1] == "failed") f += kv[2]
        if (kv[1] == "unreachable") u += kv[2]
      }
      per = per (per ? "," : "") $1 ":" hc
    }
    END { print c + 0, f + 0, u + 0, per }' "$LAB/ansible-$name.log")
  sed -n '/^PLAY RECAP/,$p' "$LAB/ansible-$name.log" | sed '/^$/d' >&2
  if [ "$rc" != 0 ] || [ "$FAILED" != 0 ] || [ "$UNREACHABLE" != 0 ]; then
    grep -E -B2 -A12 '^(fatal|failed):|FAILED!|ERROR!' "$LAB/ansible-$name.log" | head -n 80 >&2 || tail -n 60 "$LAB/ansible-$name.log" >&2
    fail "ansible-playbook ($name) exited $rc (failed=$FAILED unreachable=$UNREACHABLE)"
  fi
  log "$name: ${SECS}s, changed=$CHANGED ($PER_HOST)"
}

cluster() { in_ns ctl "$PY" "$HERE/labtool.py" cluster "${API[lb1]}" "${API[lb2]}" "${API[wit]}"; }
json_get() { "$PY" -c 'import json,sys; v=json.loads(sys.argv[1]); print(eval(sys.argv[2], {}, {"v": v}))' "$1" "$2"; }
pid_of() { cat "$LAB/hosts/$1/run/ballast/ballast.pid" 2>/dev/null || echo 0; }
pids() { echo "lb1:$(pid_of lb1),lb2:$(pid_of lb2),wit:$(pid_of wit)"; }
vip_holders() {
  local h out=""
  for h in lb1 lb2; do
    ip -n "$P$h" -4 addr show dev eth0 | grep -q " $VIP/" && out="$out$h "
  done
  echo "${out% }"
}

# The cluster is healthy: one leader everyone agrees on, one VRRP master, the VIP
# on that master only, and a connection through the VIP reaches a backend.
check_cluster() {
  local what=$1 c leader masters holders greeting i
  for i in $(seq 1 30); do
    c=$(cluster)
    leader=$(json_get "$c" 'v["leader"]')
    masters=$(json_get "$c" '" ".join(v["masters"])')
    holders=$(vip_holders)
    if [ "$leader" != None ] && [ "$masters" = 1 ] && [ "$holders" = lb1 ]; then break; fi
    [ "$i" = 30 ] && fail "$what: cluster not healthy: $c, VIP on [$holders]"
    sleep 1
  done
  greeting=$(in_ns cl "$PY" "$HERE/labtool.py" connect "$VIP:$PORT" 1)
  case "$greeting" in be[123]) ;; *) fail "$what: no backend through the VIP: $greeting" ;; esac
  log "$what: leader $leader, VRRP master node $masters, VIP on $holders, client reached $greeting"
  LEADER=$leader
}

# ---------------------------------------------------------------- 1. deploy
playbook deploy
result deploy_seconds "$SECS"
result deploy_changed "$CHANGED"
check_cluster deploy
result leader "$LEADER"
result vip_holder lb1

# The nodes run as the service user with exactly the three capabilities
# (NET_BIND_SERVICE 10, NET_ADMIN 12, NET_RAW 13 = 0x3400), and the files have
# tight modes.
for h in "${HOSTS[@]}"; do
  pid=$(pid_of "$h")
  [ "$pid" -gt 0 ] 2>/dev/null || fail "no pid file on $h"
  uid=$(awk '/^Uid:/ { print $2 }' "/proc/$pid/status")
  eff=$(awk '/^CapEff:/ { print $2 }' "/proc/$pid/status")
  bnd=$(awk '/^CapBnd:/ { print $2 }' "/proc/$pid/status")
  [ "$uid" != 0 ] || fail "$h: ballast runs as root"
  [ "$eff" = 0000000000003400 ] && [ "$bnd" = 0000000000003400 ] || fail "$h: capabilities effective $eff, bounding $bnd (want 0x3400)"
  modes=$(on_host "$h" stat -c "'%n %a %U:%G'" /etc/ballast /etc/ballast/token /etc/ballast/ballast.toml /var/lib/ballast /proc/"$pid")
  want="/etc/ballast 750 root:ballast
/etc/ballast/token 600 ballast:ballast
/etc/ballast/ballast.toml 640 root:ballast
/var/lib/ballast 700 ballast:ballast
/proc/$pid 555 ballast:ballast"
  [ "$modes" = "$want" ] || fail "$h: modes/owners are
$modes
want
$want"
done
on_host lb1 getent passwd ballast | grep -q ':/usr/sbin/nologin$' || fail "the ballast user has a login shell"
getent passwd ballast >/dev/null && fail "the ballast user leaked into the machine's own /etc/passwd"
result runtime "uid-$uid-caps-0x3400"
log "nodes run as user ballast (uid $uid) with CAP_NET_ADMIN, CAP_NET_RAW, CAP_NET_BIND_SERVICE only; modes ok"

# The systemd unit (not used in the lab: no systemd here) is checked offline.
if command -v systemd-analyze >/dev/null 2>&1; then
  unit_out=$(ansible-playbook -i localhost, "$HERE/render-unit.yml" \
    -e "unit_dest=$LAB/unit/ballast.service ballast_bin_dir=$LAB/dist/v1 ballast_node_id=1" 2>&1) ||
    {
      echo "$unit_out" >&2
      fail "rendering the systemd unit"
    }
  # The live upgrade needs systemd to follow the new process (MAINPID from it).
  grep -qx 'Type=notify' "$LAB/unit/ballast.service" && grep -qx 'NotifyAccess=all' "$LAB/unit/ballast.service" ||
    fail "the systemd unit is not Type=notify with NotifyAccess=all"
  # Unknown or misspelt keys are only warnings: any line about the unit fails too.
  if verify=$(systemd-analyze verify "$LAB/unit/ballast.service" 2>&1) && ! grep -q 'ballast.service' <<<"$verify"; then
    result systemd_unit verified
    log "systemd unit: systemd-analyze verify passed"
  else
    echo "$verify" >&2
    fail "systemd-analyze verify rejects the unit"
  fi
else
  result systemd_unit not-verified-no-systemd-analyze
  log "systemd-analyze is not installed: the unit is not verified"
fi

# ---------------------------------------------------------------- 2. idempotence
PIDS_BEFORE=$(pids)
playbook again
result second_run_changed "$CHANGED"
result second_run_seconds "$SECS"
[ "$CHANGED" = 0 ] || fail "second run changed $CHANGED things ($PER_HOST): see $LAB/ansible-again.log"
[ "$(pids)" = "$PIDS_BEFORE" ] || fail "second run restarted nodes: $PIDS_BEFORE -> $(pids)"

# ---------------------------------------------------------------- 3. live server change
# A client holds a connection through the VIP; the inventory then drops the very
# server it is on and adds be3. The change must reach every node through the API,
# with no process restarted, and the held connection must keep working.
mkdir -p "$LAB/hold"
in_ns cl "$PY" "$HERE/labtool.py" hold "$VIP:$PORT" "$LAB/hold" &
for i in $(seq 1 50); do
  [ -s "$LAB/hold/greeting" ] && break
  [ "$i" = 50 ] && fail "the held connection got no greeting"
  sleep 0.1
done
HELD=$(cat "$LAB/hold/greeting")
KEEP=$([ "$HELD" = be1 ] && echo be2 || echo be1)
log "a client holds a connection to $HELD through the VIP; the inventory now has $KEEP and be3"
cat >"$LAB/inv/group_vars/ballast/servers.yml" <<EOF
---
# The lab's server change: $HELD (which a client is connected to) removed, be3 added.
ballast_backends:
  - name: pool
    balance: roundrobin
    timeout_connect: 1s
    health: {kind: tcp, interval: 1s, timeout: 500ms, rise: 2, fall: 2}
    servers:
      - {name: $KEEP, addr: "${ADDR[be]}:900${KEEP#be}"}
      - {name: be3, addr: "${ADDR[be]}:9003"}
EOF
# A --check --diff run first: it must see the change and change nothing.
PIDS_BEFORE=$(pids)
PLAYBOOK_ARGS="--check --diff" playbook check
result check_run_changed "$CHANGED"
[ "$CHANGED" -gt 0 ] || fail "the --check run did not see the server change"
sed -n '/TASK \[ballast : Show what changed\]/,/^$/p' "$LAB/ansible-check.log" | grep -q '"be3"' ||
  fail "the --check run did not show be3 in the model diff"
for h in "${HOSTS[@]}"; do
  servers=$(in_ns ctl curl -s -m 3 "${API[$h]}/v1/backends/pool" | "$PY" -c 'import json,sys; print(" ".join(sorted(s["name"] for s in json.load(sys.stdin)["servers"])))')
  [ "$servers" = "be1 be2" ] || fail "the --check run changed the model on $h: [$servers]"
done
[ "$(pids)" = "$PIDS_BEFORE" ] || fail "the --check run restarted nodes"
playbook change
result change_run_changed "$CHANGED"
result change_run_seconds "$SECS"
[ "$CHANGED" -gt 0 ] || fail "the server change was not applied (changed=0)"
grep -Eq 'add +server +pool/be3' "$LAB/ansible-change.log" || fail "ctl apply did not add pool/be3: see $LAB/ansible-change.log"
PIDS_AFTER=$(pids)
[ "$PIDS_AFTER" = "$PIDS_BEFORE" ] || fail "the server change restarted nodes: $PIDS_BEFORE -> $PIDS_AFTER"
result change_pids "$PIDS_AFTER"
for h in "${HOSTS[@]}"; do
  servers=$(in_ns ctl curl -s -m 3 "${API[$h]}/v1/backends/pool" | "$PY" -c 'import json,sys; print(" ".join(sorted(s["name"] for s in json.load(sys.stdin)["servers"])))')
  [ "$servers" = "$(echo "$KEEP be3" | tr ' ' '\n' | sort | tr '\n' ' ' | sed 's/ $//')" ] || fail "$h has servers [$servers]"
done
touch "$LAB/hold/go"
for i in $(seq 1 100); do
  [ -s "$LAB/hold/result" ] && break
  [ "$i" = 100 ] && fail "the held connection gave no result"
  sleep 0.1
done
[ "$(cat "$LAB/hold/result")" = "echo ok" ] || fail "the held connection to $HELD broke: $(cat "$LAB/hold/result")"
result held_connection_survived "$HELD"
seen=$(in_ns cl "$PY" "$HERE/labtool.py" connect "$VIP:$PORT" 6 | sort | uniq -c | awk '{ printf "%s%s:%s", sep, $2, $1; sep="," }')
case ",$seen," in *,be3:*) ;; *) fail "no new connection reached be3: $seen" ;; esac
case ",$seen," in *",$HELD:"*) fail "new connections still reach the removed $HELD: $seen" ;; esac
result change_new_connections "$seen"
log "server change applied live: same PIDs ($PIDS_AFTER), held connection to $HELD still echoes, new connections: $seen"

# ---------------------------------------------------------------- 4. rolling upgrade
# The inventory now names a release archive (v2): a new binary is every node's only
# difference, so the rolling play upgrades every node live (`ballast ctl upgrade`:
# no drill, no restart, no VIP move; the witness hands over its API socket and Raft). Throughout the run, STREAM_CLIENTS clients hold
# 1-3 connections each through the VIP, sending random bytes and checking every
# echo byte for byte; a probe opens a new connection every 100 ms; a watcher notes
# which lb node holds the VIP every 100 ms.
lab_vars "ballast_binary_src: \"\"
ballast_release_url: file://$LAB/dist/ballast-v2.tar.gz
ballast_release_checksum: \"sha256:$ARCHIVE_SHA\""
status_of() { in_ns ctl curl -s -m 3 "${API[$1]}/v1/status"; }
# wait_for FILE SECONDS WHAT: bounded wait for a file a lab client writes.
wait_for() {
  local i
  for i in $(seq 1 $(($2 * 10))); do
    [ -s "$1" ] && return 0
    sleep 0.1
  done
  fail "$3 (no $1 within $2 s)"
}
mkdir -p "$LAB/probe" "$LAB/stream" "$LAB/vipwatch"
in_ns cl "$PY" "$HERE/labtool.py" stream "$VIP:$PORT" "$LAB/stream" "$STREAM_CLIENTS" &
in_ns cl "$PY" "$HERE/labtool.py" probe "$VIP:$PORT" "$LAB/probe" &
in_ns ctl "$PY" "$HERE/labtool.py" watch-vip "$VIP" "$LAB/vipwatch" "lb1=${P}lb1" "lb2=${P}lb2" &
wait_for "$LAB/stream/ready" 30 "the streaming clients did not all connect and echo"
sleep 2
PIDS_BEFORE=$(pids)
declare -A BEFORE
for h in "${HOSTS[@]}"; do BEFORE[$h]=$(status_of "$h"); done
UPGRADE_START=$(date -u +%Y-%m-%dT%H:%M:%S)
playbook upgrade
result upgrade_seconds "$SECS"
result upgrade_changed "$CHANGED"
sleep 2
touch "$LAB/probe/stop" "$LAB/stream/stop" "$LAB/vipwatch/stop"
wait_for "$LAB/probe/summary.json" 5 "the probe wrote no summary"
# A connection stuck in a read takes up to labtool's ECHO_TIMEOUT (10 s) to end.
wait_for "$LAB/stream/summary.json" 30 "the streaming clients wrote no summary"
wait_for "$LAB/vipwatch/summary.json" 5 "the VIP watcher wrote no summary"
PROBE=$(cat "$LAB/probe/summary.json")
STREAM=$(cat "$LAB/stream/summary.json")
VIPW=$(cat "$LAB/vipwatch/summary.json")
log "streaming clients during the upgrade: $STREAM"
log "probe during the upgrade: $PROBE"
log "VIP holders during the upgrade: $VIPW"
log "VRRP during the upgrade (the nodes' logs, UTC):"
for h in lb1 lb2; do
  grep -h -e 'vrrp transition' -e 'vrrp resuming' -e 'vrrp instance abandoned' -e 'failover event' \
    "$LAB/hosts/$h/var/up/log/ballast/ballast.log" |
    awk -v t="$UPGRADE_START" '$1 >= t' | sed -E 's/ +INFO [a-z_:]+//; s/^/  '"$h"' /' | cut -c1-200 >&2 || true
done
sed -n '/TASK \[ballast : Show the upgrade.s figures\]/,/^$/p' "$LAB/ansible-upgrade.log" | grep '"msg"' >&2 || true

# How the rolling play dealt with each node: three live upgrades, no restart, no drill.
live=$(grep -c 'upgrades live: new binary' "$LAB/ansible-upgrade.log" || true)
restarts=$(grep -c ' restarts: ' "$LAB/ansible-upgrade.log" || true)
[ "$live" = 3 ] || fail "expected 3 live upgrades (lb1, lb2, the witness), the log shows $live"
[ "$restarts" = 0 ] || fail "expected no restart, the log shows $restarts"
if grep -A3 'TASK \[ballast : Run a failover drill' "$LAB/ansible-upgrade.log" | grep -q '^changed:'; then
  fail "a failover drill ran during the live upgrade"
fi

# Each node: a new pid, the one the pid file and /v1/status name, running v2, started
# by a live upgrade of the pid before (process.upgrades one more, last_upgrade from
# that pid).
PIDS_AFTER=$(pids)
LIVE=""
for h in "${HOSTS[@]}"; do
  before=$(echo "$PIDS_BEFORE" | tr ',' '\n' | grep "^$h:" | cut -d: -f2)
  after=$(pid_of "$h")
  [ "$before" != "$after" ] || fail "$h's pid did not change ($after)"
  sha=$(sha256sum "/proc/$after/exe" | cut -d' ' -f1)
  [ "$sha" = "$V2_SHA" ] || fail "$h runs $sha, not v2 ($V2_SHA)"
  st=$(status_of "$h")
  [ "$(json_get "$st" 'v["process"]["pid"]')" = "$after" ] || fail "$h: the pid file names $after, /v1/status: $st"
  ups_before=$(json_get "${BEFORE[$h]}" 'v["process"]["upgrades"]')
  ups=$(json_get "$st" 'v["process"]["upgrades"]')
  from=$(json_get "$st" '(v["process"]["last_upgrade"] or {}).get("from_pid")')
  [ "$ups" = $((ups_before + 1)) ] || fail "$h: process.upgrades $ups_before -> $ups (want one live upgrade)"
  [ "$from" = "$before" ] || fail "$h: pid $after was not started by a live upgrade of pid $before (last_upgrade.from_pid $from)"
  LIVE="$LIVE${LIVE:+,}$h:$(json_get "$st" '"{from_pid}-{connections}conns-{bytes_in_flight}B-{pause_ms}ms-{duration_ms}ms".format(**v["process"]["last_upgrade"])')"
done
# The master's connections were handed over: every streaming connection at least.
lb1_conns=$(json_get "$(status_of lb1)" 'v["process"]["last_upgrade"]["connections"]')
stream_conns=$(json_get "$STREAM" 'v["connections"]')
[ "$lb1_conns" -ge "$stream_conns" ] || fail "lb1 handed over $lb1_conns connections, the clients held $stream_conns"
result upgrade_pids "$PIDS_BEFORE->$PIDS_AFTER"
# host:old pid-connections-bytes in flight-pause-whole hand-over, per lb node.
result live_upgrades "$LIVE"

# The VIP never moved: on lb1 alone in every sample; lb2 never became master and
# lb1 never stopped being it (its new process resumed as master).
samples=$(json_get "$VIPW" 'v["samples"]')
on_lb1=$(json_get "$VIPW" 'v["holders"].get("lb1", 0)')
[ "$samples" -gt 0 ] && [ "$on_lb1" = "$samples" ] || fail "the VIP was not on lb1 alone in every sample: $VIPW"
lb_log() { awk -v t="$UPGRADE_START" '$1 >= t' "$LAB/hosts/$1/var/up/log/ballast/ballast.log"; }
# (grep -c, not -q: pipefail would read an early exit as no match.)
lb2_to_master=$(lb_log lb2 | grep 'vrrp transition' | grep -cE 'to="?master' || true)
lb1_from_master=$(lb_log lb1 | grep 'vrrp transition' | grep -cE 'from="?master' || true)
[ "$lb2_to_master" = 0 ] || fail "lb2 became VRRP master during the upgrade"
[ "$lb1_from_master" = 0 ] || fail "lb1 left VRRP master during the upgrade"
lb1_vrrp=$(json_get "$(status_of lb1)" '"{state}/{reason}".format(state=v["vrrp"]["state"], reason=(v["vrrp"]["last_transition"] or {}).get("reason"))')
[ "$lb1_vrrp" = master/resumed ] || fail "lb1's VRRP after the upgrade: $lb1_vrrp (want master, resumed)"
advert_gap=$(lb_log lb1 | grep 'vrrp resuming as master' | sed -nE 's/.*gap_ms=([0-9]+).*/\1/p' | tail -n 1 || true)
result vip_samples "$samples"
result vip_samples_off_lb1 $((samples - on_lb1))
result lb1_advert_gap_ms "${advert_gap:-unknown}"

# Every held connection kept echoing, byte for byte, to the end.
result stream_connections "$stream_conns"
result stream_clients "$(json_get "$STREAM" 'v["clients"]')"
result stream_broken "$(json_get "$STREAM" 'v["broken"]')"
result stream_stale "$(json_get "$STREAM" 'v["stale"]')"
result stream_bytes_sent "$(json_get "$STREAM" 'v["bytes_sent"]')"
result stream_bytes_echoed "$(json_get "$STREAM" 'v["bytes_echoed"]')"
result stream_rounds "$(json_get "$STREAM" 'v["rounds"]')"
result stream_max_round_ms "$(json_get "$STREAM" 'v["max_round_ms"]')"
[ "$(json_get "$STREAM" 'v["broken"] + v["stale"]')" = 0 ] || fail "held connections broke during the upgrade: $STREAM"
[ "$(json_get "$STREAM" 'v["bytes_sent"] == v["bytes_echoed"] > 0')" = True ] || fail "not every byte was echoed: $STREAM"

# New connections never failed: no gap.
result probe_attempts "$(json_get "$PROBE" 'v["attempts"]')"
result probe_failures "$(json_get "$PROBE" 'v["failures"]')"
result max_probe_gap_ms "$(json_get "$PROBE" 'v["max_gap_ms"]')"
[ "$(json_get "$PROBE" 'v["failures"]')" = 0 ] || fail "new connections through the VIP failed during the upgrade: $PROBE"
check_cluster "after upgrade"
log "rolling upgrade: every node upgraded live ($LIVE); VIP on lb1 in all $samples samples; $stream_conns held connections all echoed; 0 of $(json_get "$PROBE" 'v["attempts"]') new connections failed"

# ---------------------------------------------------------------- 5. idempotence after the upgrade
PIDS_BEFORE=$(pids)
playbook final
result final_run_changed "$CHANGED"
[ "$CHANGED" = 0 ] || fail "the run after the upgrade changed $CHANGED things ($PER_HOST)"
[ "$(pids)" = "$PIDS_BEFORE" ] || fail "the run after the upgrade restarted nodes"

result v1_sha256 "${V1_SHA:0:16}"
result v2_sha256 "${V2_SHA:0:16}"
log "all checks passed"
