//! Issue 19: live binary upgrade. `SIGUSR2` or `ballast ctl upgrade` (`POST
//! /v1/node/upgrade`) makes the node check and start the binary now installed at the path
//! it was started from, hand it every listener and every established connection (bytes
//! in flight included), and exit; a failed upgrade rolls back and the old process keeps
//! serving.
//!
//! ```text
//!   test: install new binary (PATH.new, rename over PATH) ─► kill -USR2 <pid>
//!   old pid ── PATH check --config F ── PATH run ──► new pid (old's child)
//!           ── listeners + connections over a Unix socket ──► new pid confirms
//!   old pid exits (≤ ~1 s); GET /v1/status → process.pid = new, last_upgrade.from_pid = old
//! ```
//!
//! Every node here runs from its own copy of the binary (`NodeBuilder::binary_copy`) so
//! the tests can replace it, swap in a misbehaving script, or remove it. The process
//! serving after an upgrade is not the harness's child: `Node` finds it through
//! `/v1/status` and kills it (and anything the node started) by PID on drop.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ballast_api::types::{StickPage, UpgradeReport};
use serde::Deserialize;
use tokio::task::{block_in_place, JoinSet};

use crate::harness::node::ballast_bin;
use crate::harness::process::{self, now_ms, SIGUSR2};
use crate::harness::stream::{assert_all_intact, RateClient, Streams};
use crate::harness::{http, open, src_ip, within, Backend, BackendCfg, Conn, FrontendCfg, Node};

/// How long a test waits for a started upgrade to show in `/v1/status`.
const UPGRADE_WAIT: Duration = Duration::from_secs(10);
/// How long the old process may take to exit once the new one serves.
const EXIT_WAIT: Duration = Duration::from_secs(5);

/// The API's error body: `{"error":{"code":..,"message":..}}`.
#[derive(Debug, Deserialize)]
struct ApiErrorBody {
    error: ApiErrorDetail,
}

#[derive(Debug, Deserialize)]
struct ApiErrorDetail {
    code: String,
    message: String,
}

fn servers(names: &[&str]) -> Vec<Backend> {
    names.iter().map(|n| Backend::named(n).spawn()).collect()
}

/// Frontend "f" on `ports` ports → backend "b" (leastconn, stick on src), run from a copy
/// of the binary; with `token`, a `token_file` (needed by `POST /v1/node/upgrade`).
fn upgradable_node(servers: &[Backend], ports: u16, token: bool) -> Node {
    let mut b = BackendCfg::new("b").balance("leastconn").stick_src();
    for s in servers {
        b = b.server(s.name(), s.addr());
    }
    let builder = Node::new()
        .frontend(FrontendCfg::new("f", "b").ports(ports))
        .backend(b)
        .binary_copy();
    let builder = if token { builder.token() } else { builder };
    builder.spawn()
}

/// Clients `0..n` of `group`, concurrently; each opens one socket per address of `addrs`,
/// one after the other, and reads its greeting. Returns each client's connections.
async fn open_clients(group: u8, n: usize, addrs: &[SocketAddr]) -> Vec<Vec<Conn>> {
    let mut set = JoinSet::new();
    for i in 0..n {
        let addrs = addrs.to_vec();
        set.spawn(async move {
            let mut conns = Vec::new();
            for (k, addr) in addrs.into_iter().enumerate() {
                let c = open(src_ip(group, i), addr)
                    .await
                    .map_err(|e| format!("client {i} socket {k} to {addr}: {e}"))?;
                conns.push(c);
            }
            Ok::<_, String>((i, conns))
        });
    }
    let mut by_client: Vec<Option<Vec<Conn>>> = (0..n).map(|_| None).collect();
    let mut errors = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined.expect("client task panicked") {
            Ok((i, conns)) => by_client[i] = Some(conns),
            Err(e) => errors.push(e),
        }
    }
    assert!(
        errors.is_empty(),
        "{} of {n} clients could not connect, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    by_client.into_iter().map(Option::unwrap).collect()
}

/// The connections as `Streams` takes them: (client, socket, connection).
fn flatten(clients: Vec<Vec<Conn>>) -> Vec<(usize, usize, Conn)> {
    clients
        .into_iter()
        .enumerate()
        .flat_map(|(i, conns)| conns.into_iter().enumerate().map(move |(k, c)| (i, k, c)))
        .collect()
}

/// Backend "b"'s stick table, key → server (one page holds it all).
fn stick_map(node: &Node) -> BTreeMap<IpAddr, String> {
    let page: StickPage = http::get_typed(node.api(), "/v1/backends/b/stick?limit=10000")
        .unwrap_or_else(|| {
            panic!(
                "GET /v1/backends/b/stick: {:?}",
                node.get("/v1/backends/b/stick")
            )
        });
    assert_eq!(
        page.total,
        page.entries.len(),
        "the stick table fits one page"
    );
    page.entries
        .into_iter()
        .map(|e| (e.key, e.server))
        .collect()
}

/// The process `pid` runs the file now at the node's binary path, not a replaced image.
fn assert_runs_installed_image(node: &Node, pid: u32) {
    let exe = process::exe(pid).unwrap_or_else(|| panic!("no /proc/{pid}/exe"));
    let shown = exe.display().to_string();
    assert!(
        !shown.ends_with("(deleted)"),
        "process {pid} runs a replaced image: {shown}"
    );
    assert_eq!(
        exe,
        node.binary_path(),
        "process {pid} runs another file than the node's binary"
    );
}

/// The process `pid` runs an image whose file has been replaced (what a package upgrade
/// leaves behind, and what the test's atomic rename must produce).
fn assert_runs_replaced_image(pid: u32) {
    let exe = process::exe(pid).unwrap_or_else(|| panic!("no /proc/{pid}/exe"));
    assert!(
        exe.display().to_string().ends_with(" (deleted)"),
        "after the rename, process {pid} should run a deleted image: {}",
        exe.display()
    );
}

/// `after` is the status of the process an upgrade from `before` started, at `t0` (unix
/// ms, just before asking), the node's `nth` upgrade; returns its report.
fn assert_upgraded<'a>(
    node: &Node,
    before: &ballast_api::types::Status,
    after: &'a ballast_api::types::Status,
    t0: u64,
    nth: u64,
    min_listeners: usize,
) -> &'a UpgradeReport {
    let (old, new) = (&before.process, &after.process);
    let rep = new
        .last_upgrade
        .as_ref()
        .unwrap_or_else(|| panic!("no last_upgrade after an upgrade: {new:?}"));
    assert_ne!(new.pid, old.pid, "the pid must change");
    assert_eq!(rep.from_pid, old.pid, "last_upgrade.from_pid: {rep:?}");
    assert_eq!(rep.to_pid, new.pid, "last_upgrade.to_pid: {rep:?}");
    assert_eq!(new.upgrades, nth, "process.upgrades: {new:?}");
    assert_eq!(
        std::fs::canonicalize(&new.binary).ok().as_deref(),
        Some(node.binary_path()),
        "process.binary: {new:?}"
    );
    assert!(!new.version.is_empty(), "process.version: {new:?}");
    let now = now_ms();
    assert!(
        new.started_at >= t0 && new.started_at <= now,
        "process.started_at {} not between the request ({t0}) and now ({now})",
        new.started_at
    );
    assert!(
        rep.at >= t0 && rep.at <= now,
        "last_upgrade.at {} not between the request ({t0}) and now ({now})",
        rep.at
    );
    assert!(
        rep.listeners >= min_listeners,
        "last_upgrade.listeners {} < {min_listeners} (every frontend port and the API)",
        rep.listeners
    );
    assert!(
        rep.duration_ms < UPGRADE_WAIT.as_millis() as u64,
        "last_upgrade.duration_ms: {rep:?}"
    );
    assert!(
        rep.pause_ms < 5_000,
        "last_upgrade.pause_ms: relays stood still for {} ms",
        rep.pause_ms
    );
    rep
}

/// Installs the real binary, sends SIGUSR2 to the process serving, waits until the new
/// one serves and the old one is gone; checks the figures (see `assert_upgraded`).
async fn upgrade_by_signal(
    node: &Node,
    nth: u64,
    min_listeners: usize,
) -> ballast_api::types::Status {
    let before = node.status();
    let old = before.process.pid;
    block_in_place(|| node.install_real_binary());
    assert_runs_replaced_image(old);
    let t0 = now_ms();
    process::send_signal(old, SIGUSR2).unwrap_or_else(|e| panic!("kill -USR2 {old}: {e}"));
    let after = node
        .wait_status(
            &format!("upgrade {nth} from pid {old}"),
            UPGRADE_WAIT,
            |s| {
                s.process.pid != old
                    && s.process
                        .last_upgrade
                        .as_ref()
                        .is_some_and(|u| u.from_pid == old)
            },
        )
        .await;
    node.wait_gone(old, EXIT_WAIT).await;
    assert_upgraded(node, &before, &after, t0, nth, min_listeners);
    assert_runs_installed_image(node, after.process.pid);
    after
}

/// `text`, lowercased, contains one of `words`.
fn mentions_any(text: &str, words: &[&str]) -> bool {
    let text = text.to_lowercase();
    words.iter().any(|w| text.contains(w))
}

/// `text` has the number `n` as a whole word ("12", not "120").
fn mentions_number(text: &str, n: impl std::fmt::Display) -> bool {
    let n = n.to_string();
    text.split(|c: char| !c.is_ascii_digit()).any(|w| w == n)
}

/// One socket through the node from a fresh client, greeted and echoing.
async fn fresh_connection_echoes(node: &Node, group: u8, i: usize) {
    let mut c = open(src_ip(group, i), node.addr("f", 0))
        .await
        .unwrap_or_else(|e| panic!("new connection from client {i}: {e}"));
    c.echo(format!("fresh client {i}\n").as_bytes())
        .await
        .unwrap_or_else(|e| panic!("echo on the new connection of client {i}: {e}"));
}

// ---------------------------------------------------------------------------------------

/// The mission load (300 clients × 3 sockets on 3 ports, stuck by source) streams through
/// two upgrades in a row, each by SIGUSR2 after the binary was replaced on disk, while a
/// client opens short connections all along: no socket breaks, every byte comes back, no
/// connect fails, and the new process knows every connection and the whole stick table.
#[test]
fn live_upgrade_keeps_every_connection() {
    // 900 streaming sockets load the 2-core machine: not while a namespace lab measures
    // VRRP timings (its Master_Down_Interval is 0.36 s).
    let _serial = crate::vip::lab::lock();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(keeps_every_connection());
}

async fn keeps_every_connection() {
    const GROUP: u8 = 101;
    const CLIENTS: usize = 300;
    const SOCKETS: usize = 3;
    let servers = servers(&["s1", "s2", "s3"]);
    let node = upgradable_node(&servers, SOCKETS as u16, false);
    let addrs: Vec<SocketAddr> = (0..SOCKETS).map(|k| node.addr("f", k)).collect();

    within(90, "live upgrade under load", async {
        let clients = open_clients(GROUP, CLIENTS, &addrs).await;
        let split: Vec<String> = clients
            .iter()
            .enumerate()
            .filter(|(_, c)| c.iter().any(|s| s.server != c[0].server))
            .map(|(i, c)| {
                format!(
                    "client {i}: {:?}",
                    c.iter().map(|s| &s.server).collect::<Vec<_>>()
                )
            })
            .collect();
        assert!(split.is_empty(), "clients split across servers: {split:?}");
        let client_server: Vec<String> = clients.iter().map(|c| c[0].server.clone()).collect();
        let mut sockets_on: BTreeMap<String, usize> = BTreeMap::new();
        for s in &client_server {
            *sockets_on.entry(s.clone()).or_default() += SOCKETS;
        }

        let streams = Streams::start(flatten(clients));
        let rate_src = src_ip(GROUP, CLIENTS + 50);
        let rate = RateClient::start(rate_src, addrs.clone(), Duration::from_millis(20), 20_000);
        streams
            .wait_all_progressed(&vec![0; streams.len()], Duration::from_secs(10))
            .await;
        rate.wait_ok_beyond(0, Duration::from_secs(5)).await;

        let stick_before = stick_map(&node);
        for (i, server) in client_server.iter().enumerate() {
            let key = IpAddr::V4(src_ip(GROUP, i));
            assert_eq!(
                stick_before.get(&key),
                Some(server),
                "client {i}'s stick entry before the upgrades"
            );
        }
        assert_eq!(
            stick_before.len(),
            CLIENTS + 1,
            "300 clients and the rate client"
        );

        let first = node.status();
        assert_eq!(
            first.process.pid,
            node.first_pid(),
            "process.pid before any upgrade"
        );
        assert_eq!(first.process.upgrades, 0);
        assert_eq!(first.process.last_upgrade, None);
        assert_eq!(
            std::fs::canonicalize(&first.process.binary).ok().as_deref(),
            Some(node.binary_path()),
            "process.binary is the path the node was started from: {:?}",
            first.process
        );
        assert_runs_installed_image(&node, first.process.pid);

        for nth in 1..=2 {
            let ok_before = rate.ok();
            let echoed_before = streams.echoed();
            let after = upgrade_by_signal(&node, nth, SOCKETS + 1).await;
            let rep = after.process.last_upgrade.as_ref().unwrap();
            eprintln!("upgrade {nth}: {rep:?}");
            assert!(
                rep.connections >= CLIENTS * SOCKETS,
                "upgrade {nth} handed over {} connections, {} streaming",
                rep.connections,
                CLIENTS * SOCKETS
            );
            streams.assert_none_broken(&format!("after upgrade {nth}"));
            assert_eq!(rate.failed(), 0, "connects failed during upgrade {nth}");
            // Every socket streams through the new process, and new connections work.
            streams
                .wait_all_progressed(&streams.echoed(), Duration::from_secs(5))
                .await;
            rate.wait_ok_beyond(rate.ok(), Duration::from_secs(5)).await;
            assert!(rate.ok() > ok_before);
            assert!(
                streams
                    .echoed()
                    .iter()
                    .zip(&echoed_before)
                    .all(|(a, b)| a > b),
                "every socket carried data across upgrade {nth}"
            );
        }

        // At least 2 s more through the last process.
        let base = streams.echoed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        streams
            .wait_all_progressed(&base, Duration::from_secs(5))
            .await;

        let rate = rate.stop().await;
        eprintln!(
            "rate client: {} connections, {} failed, per server {:?}",
            rate.ok, rate.failed, rate.per_server
        );
        assert_eq!(
            rate.failed, 0,
            "connects failed across the upgrades: {:?}",
            rate.errors
        );

        // The new process accounts for every handed-over connection...
        let settle = Duration::from_secs(5);
        let total = (CLIENTS * SOCKETS) as f64;
        node.wait_metric(
            "ballast_frontend_connections_active",
            &[("frontend", "f")],
            settle,
            |v| v == total,
        )
        .await;
        for s in &servers {
            let expect = sockets_on.get(s.name()).copied().unwrap_or(0);
            node.wait_metric(
                "ballast_server_connections_active",
                &[("backend", "b"), ("server", s.name())],
                settle,
                |v| v == expect as f64,
            )
            .await;
        }
        // ...and every socket is still on its first server: each server holds exactly its
        // clients' connections, and no server connection was opened again.
        for s in &servers {
            let expect = sockets_on.get(s.name()).copied().unwrap_or(0);
            let deadline = tokio::time::Instant::now() + settle;
            while s.active() != expect && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(s.active(), expect, "connections open on {}", s.name());
            let rate_here = rate.per_server.get(s.name()).copied().unwrap_or(0) as usize;
            assert_eq!(
                s.carried_data(),
                expect + rate_here,
                "connections {} ever carried: its streaming sockets and the rate client's",
                s.name()
            );
        }
        assert_eq!(
            stick_map(&node),
            stick_before,
            "the stick table after two upgrades"
        );
        let last = node.status();
        assert_eq!(last.process.upgrades, 2);
        assert_runs_installed_image(&node, last.process.pid);

        let reports = streams.stop().await;
        assert_all_intact(&reports);
        let bytes: u64 = reports.iter().map(|r| r.echoed).sum();
        eprintln!("{} sockets, {bytes} bytes echoed intact", reports.len());
    })
    .await;
}

/// `n` clients of `group`, one socket each on the node's first port of frontend "f",
/// streaming and checked, every one echoed at least once already.
async fn held_streams(node: &Node, group: u8, n: usize) -> Streams {
    let clients = open_clients(group, n, &[node.addr("f", 0)]).await;
    let streams = Streams::start(flatten(clients));
    streams
        .wait_all_progressed(&vec![0; n], Duration::from_secs(5))
        .await;
    streams
}

/// `ballast ctl upgrade` asks for the upgrade through the API (with the token), waits for
/// the hand-over, prints its figures and exits 0; without the token the API refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_upgrade_answers_with_the_figures() {
    const GROUP: u8 = 102;
    const HELD: usize = 12;
    let servers = servers(&["s1", "s2"]);
    let node = upgradable_node(&servers, 1, true);

    within(60, "ctl upgrade", async {
        let streams = held_streams(&node, GROUP, HELD).await;
        let before = node.status();
        let old = before.process.pid;

        // No token: refused before anything starts.
        let (code, body) = block_in_place(|| {
            http::request(
                node.api(),
                "POST",
                "/v1/node/upgrade",
                None,
                "",
                Duration::from_secs(10),
            )
        })
        .expect("POST /v1/node/upgrade without a token");
        assert_eq!(code, 401, "POST /v1/node/upgrade without the token: {body}");
        assert_eq!(node.pid(), old, "a refused request upgraded the node");

        block_in_place(|| node.install_real_binary());
        let t0 = now_ms();
        let out = node.ctl(&["upgrade"]).await;
        assert!(out.success(), "ballast ctl upgrade failed:\n{out}");

        let after = node
            .wait_status("the upgraded process", UPGRADE_WAIT, |s| {
                s.process.pid != old
            })
            .await;
        node.wait_gone(old, EXIT_WAIT).await;
        let rep = assert_upgraded(&node, &before, &after, t0, 1, 2);
        assert_eq!(rep.connections, HELD, "connections handed over: {rep:?}");
        assert_runs_installed_image(&node, after.process.pid);

        // The figures: the connections handed over, from which pid to which.
        assert!(
            mentions_any(&out.stdout, &["connection"]) && mentions_number(&out.stdout, HELD),
            "ctl upgrade should say {HELD} connections were handed over:\n{out}"
        );
        for pid in [rep.from_pid, rep.to_pid] {
            assert!(
                mentions_number(&out.stdout, pid),
                "ctl upgrade should name pid {pid}:\n{out}"
            );
        }

        let base = streams.echoed();
        streams
            .wait_all_progressed(&base, Duration::from_secs(5))
            .await;
        fresh_connection_echoes(&node, GROUP, HELD + 1).await;
        assert_all_intact(&streams.stop().await);
        assert_eq!(node.status().process.upgrades, 1);
    })
    .await;
}

/// One way for an upgrade to fail.
struct FailureCase {
    name: &'static str,
    /// What the reason (ctl's stderr, the node's log) must mention, one of.
    reason: &'static [&'static str],
    /// Puts the bad binary at the node's path.
    install: fn(&Node),
    /// The script's run branch starts (it writes `<name>.pid` in the node's dir).
    starts_a_process: bool,
}

/// A script standing in for the binary: `check` runs `check_branch`, anything else (the
/// `run` of the new process) writes its pid to `<dir>/<name>.pid` and runs `run_branch`.
fn script(node: &Node, name: &str, check_branch: &str, run_branch: &str) -> String {
    let dir = node.dir().display();
    format!(
        "#!/bin/sh\n\
         # e2e upgrade test: {name}\n\
         if [ \"$1\" = check ]; then\n\
         {check_branch}\n\
         fi\n\
         echo $$ > '{dir}/{name}.pid'\n\
         {run_branch}\n"
    )
}

fn exec_real() -> String {
    format!("exec '{}' \"$@\"", ballast_bin())
}

fn install_missing(node: &Node) {
    node.remove_binary();
}

fn install_failing_check(node: &Node) {
    let check = "echo 'e2e script: config rejected' >&2\nexit 2";
    node.install_script(&script(node, "check-fails", check, &exec_real()));
}

fn install_crash(node: &Node) {
    let run = "echo 'e2e script: crashing during start' >&2\nexit 3";
    node.install_script(&script(node, "crash", &exec_real(), run));
}

fn install_hang(node: &Node) {
    node.install_script(&script(node, "hang", &exec_real(), "exec sleep 120"));
}

/// A stand-in for the new process that speaks the hand-over protocol badly (run as
/// `python3 PEER MODE`): the old process must refuse or roll back, whatever it hears.
/// Frames are `u32 LE length · u32 LE descriptor count · bincode payload`; bincode's
/// standard config writes small integers as one byte and larger ones as 0xFB + u16 LE
/// or 0xFC + u32 LE.
const HANDOVER_PEER: &str = r#"
import os, socket, struct, sys, time

def varint(n):
    if n < 251:
        return bytes([n])
    if n < 1 << 16:
        return b"\xfb" + struct.pack("<H", n)
    return b"\xfc" + struct.pack("<I", n)

def hello(fmt):
    version = b"9.9.9"
    # FromNew::Hello is variant 0: format, pid, version.
    return varint(0) + varint(fmt) + varint(os.getpid()) + varint(len(version)) + version

def frame(payload):
    return struct.pack("<II", len(payload), 0) + payload

mode = sys.argv[1]
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(os.environ["BALLAST_HANDOVER_SOCKET"])
if mode == "format":
    sock.sendall(frame(hello(99)))
    sock.settimeout(10)
    sock.recv(4096)
elif mode == "garbage":
    sock.sendall(struct.pack("<II", 6, 0) + b"\xff" * 6)
    sock.settimeout(10)
    sock.recv(4096)
elif mode == "hangup":
    # A proper hello, then gone in the middle of the offer (the plane is frozen then).
    sock.sendall(frame(hello(1)))
    sock.settimeout(10)
    sock.recv(8)
sys.exit(4)
"#;

fn install_peer(node: &Node, mode: &str) {
    let peer = node.dir().join("handover_peer.py");
    std::fs::write(&peer, HANDOVER_PEER).expect("write the hand-over peer");
    let run = format!("exec python3 '{}' {mode}", peer.display());
    node.install_script(&script(node, mode, &exec_real(), &run));
}

fn install_other_format(node: &Node) {
    install_peer(node, "format");
}

fn install_garbage(node: &Node) {
    install_peer(node, "garbage");
}

fn install_hangup(node: &Node) {
    install_peer(node, "hangup");
}

const FAILURES: [FailureCase; 7] = [
    FailureCase {
        name: "missing",
        reason: &["missing", "not found", "no such file"],
        install: install_missing,
        starts_a_process: false,
    },
    FailureCase {
        name: "check-fails",
        reason: &["check"],
        install: install_failing_check,
        starts_a_process: false,
    },
    FailureCase {
        name: "crash",
        reason: &["exited", "crash", "died"],
        install: install_crash,
        starts_a_process: true,
    },
    FailureCase {
        name: "hang",
        reason: &["confirm", "time"],
        install: install_hang,
        starts_a_process: true,
    },
    // Bad input on the hand-over socket: another format, garbage, and a new process
    // that hangs up mid-way while the old one's plane is frozen (it must thaw).
    FailureCase {
        name: "format",
        reason: &["format"],
        install: install_other_format,
        starts_a_process: true,
    },
    FailureCase {
        name: "garbage",
        reason: &["not understood"],
        install: install_garbage,
        starts_a_process: true,
    },
    FailureCase {
        name: "hangup",
        reason: &["exited"],
        install: install_hangup,
        starts_a_process: true,
    },
];

/// Missing binary, failing `check`, a new process that crashes during start, one that
/// never confirms, and three that speak the hand-over badly (another format, garbage, a
/// hang-up mid-offer while the old plane is frozen): each upgrade fails with its reason, rolls back (same pid, connections
/// streaming byte-exact, new connections accepted, nothing of the attempt left running);
/// then, with the real binary back, an upgrade works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_upgrades_roll_back() {
    const GROUP: u8 = 103;
    const HELD: usize = 20;
    let servers = servers(&["s1", "s2"]);
    let node = upgradable_node(&servers, 1, true);

    within(120, "failed upgrades", async {
        let streams = held_streams(&node, GROUP, HELD).await;
        let pid = node.pid();
        assert_eq!(pid, node.first_pid());

        for (n, case) in FAILURES.iter().enumerate() {
            let name = case.name;
            let base = streams.echoed();
            let log_mark = node.log().len();
            block_in_place(|| (case.install)(&node));

            if name == "missing" {
                // The API's answer, typed: 503 unavailable with the reason.
                let (code, body) = block_in_place(|| node.post("/v1/node/upgrade", ""));
                assert_eq!(code, 503, "{name}: POST /v1/node/upgrade answered {body}");
                let err: ApiErrorBody = serde_json::from_str(&body)
                    .unwrap_or_else(|e| panic!("{name}: error body {body:?}: {e}"));
                assert_eq!(err.error.code, "unavailable", "{name}: {err:?}");
                assert!(
                    mentions_any(&err.error.message, case.reason),
                    "{name}: the API's reason should mention one of {:?}: {err:?}",
                    case.reason
                );
            }

            let out = node.ctl(&["upgrade"]).await;
            assert!(
                !out.success() && out.code.is_some(),
                "{name}: ctl upgrade should exit non-zero:\n{out}"
            );
            assert!(
                mentions_any(&out.stderr, case.reason),
                "{name}: ctl's reason should mention one of {:?}:\n{out}",
                case.reason
            );

            // Rolled back: the same process serves, no upgrade recorded.
            let st = node.status();
            assert_eq!(st.process.pid, pid, "{name}: the pid changed");
            assert_eq!(st.process.upgrades, 0, "{name}: {:?}", st.process);
            assert_eq!(st.process.last_upgrade, None, "{name}");
            assert!(
                process::is_running(pid),
                "{name}: the node's process is gone"
            );

            // The process the attempt started (if any) is gone, and nothing else of it runs.
            let pid_file = node.dir().join(format!("{name}.pid"));
            if case.starts_a_process {
                let text = std::fs::read_to_string(&pid_file)
                    .unwrap_or_else(|e| panic!("{name}: the script never ran ({e})"));
                let started: u32 = text.trim().parse().expect("script pid");
                node.track_pid(started);
                node.wait_gone(started, EXIT_WAIT).await;
            } else {
                assert!(
                    !pid_file.exists(),
                    "{name}: the new process was started although the upgrade could not be"
                );
            }
            let deadline = tokio::time::Instant::now() + EXIT_WAIT;
            loop {
                let left: Vec<u32> = process::descendants(pid)
                    .into_iter()
                    .filter(|&p| process::is_running(p))
                    .collect();
                if left.is_empty() {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{name}: the node still has processes running: {left:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }

            // The old process logged why.
            let log = node.log();
            assert!(
                mentions_any(&log[log_mark.min(log.len())..], case.reason),
                "{name}: the log should say why (one of {:?})",
                case.reason
            );
            if name == "crash" {
                assert!(
                    log.contains("e2e script: crashing during start"),
                    "crash: the script's stderr goes to the node's log"
                );
            }

            // Everything still served.
            streams
                .wait_all_progressed(&base, Duration::from_secs(5))
                .await;
            fresh_connection_echoes(&node, GROUP, HELD + n).await;
        }

        // With the real binary back, the upgrade works (asked with a plain POST).
        let before = node.status();
        block_in_place(|| node.install_real_binary());
        let t0 = now_ms();
        let (code, body) = block_in_place(|| node.post("/v1/node/upgrade", ""));
        assert_eq!(code, 200, "POST /v1/node/upgrade: {body}");
        let answered: UpgradeReport = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("the answer is no UpgradeReport: {e}: {body}"));
        let after = node
            .wait_status("the upgraded process", UPGRADE_WAIT, |s| {
                s.process.pid != pid
            })
            .await;
        node.wait_gone(pid, EXIT_WAIT).await;
        let rep = assert_upgraded(&node, &before, &after, t0, 1, 2);
        assert_eq!(
            (answered.from_pid, answered.to_pid, answered.at),
            (rep.from_pid, rep.to_pid, rep.at),
            "the POST's answer and the new process's last_upgrade"
        );
        assert_eq!(
            (answered.listeners, answered.connections),
            (rep.listeners, rep.connections)
        );
        assert!(rep.connections >= HELD, "connections handed over: {rep:?}");
        assert_runs_installed_image(&node, after.process.pid);

        let base = streams.echoed();
        streams
            .wait_all_progressed(&base, Duration::from_secs(5))
            .await;
        assert_all_intact(&streams.stop().await);
    })
    .await;
}

/// A second SIGUSR2 while an upgrade runs is refused (logged), as is a POST (409), and
/// does not disturb it: exactly one upgrade happens. The upgrade is held in its `check`
/// step (a script sleeping 3 s before running the real check) so that the second signal
/// surely lands while it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_sigusr2_during_an_upgrade_is_refused() {
    const GROUP: u8 = 104;
    const HELD: usize = 12;
    let servers = servers(&["s1", "s2"]);
    let node = upgradable_node(&servers, 1, true);

    within(60, "second SIGUSR2", async {
        let streams = held_streams(&node, GROUP, HELD).await;
        let before = node.status();
        let old = before.process.pid;

        let checks = node.dir().join("checks.log");
        let slow_check = format!(
            "echo check >> '{}'\nsleep 3\n{}",
            checks.display(),
            exec_real()
        );
        let text = script(&node, "slow-check", &slow_check, &exec_real());
        block_in_place(|| node.install_script(&text));
        let log_mark = node.log().len();

        let t0 = now_ms();
        process::send_signal(old, SIGUSR2).expect("first SIGUSR2");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !checks.exists() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the upgrade did not run the check within 5 s of SIGUSR2"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The upgrade is in its check (3 s): a second signal, then a POST.
        process::send_signal(old, SIGUSR2).expect("second SIGUSR2");
        let (code, body) = block_in_place(|| node.post("/v1/node/upgrade", ""));
        assert_eq!(code, 409, "POST /v1/node/upgrade during an upgrade: {body}");
        let err: ApiErrorBody =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("error body {body:?}: {e}"));
        assert_eq!(err.error.code, "conflict", "{err:?}");

        let after = node
            .wait_status("the upgraded process", UPGRADE_WAIT, |s| {
                s.process.pid != old
                    && s.process
                        .last_upgrade
                        .as_ref()
                        .is_some_and(|u| u.from_pid == old)
            })
            .await;
        node.wait_gone(old, EXIT_WAIT).await;
        let rep = after.process.last_upgrade.as_ref().unwrap();
        assert_eq!(rep.connections, HELD, "connections handed over: {rep:?}");
        assert!(rep.at >= t0);

        // Settle: no second upgrade follows (it would run the check again at once).
        tokio::time::sleep(Duration::from_secs(2)).await;
        let settled = node.status();
        assert_eq!(
            settled.process.pid, after.process.pid,
            "a second upgrade ran"
        );
        assert_eq!(settled.process.upgrades, 1, "{:?}", settled.process);
        let runs = std::fs::read_to_string(&checks).unwrap_or_default();
        assert_eq!(
            runs.lines().count(),
            1,
            "check ran more than once: {runs:?}"
        );

        let log = node.log();
        let refused = log[log_mark.min(log.len())..]
            .lines()
            .any(|l| mentions_any(l, &["already"]) && mentions_any(l, &["upgrade"]));
        assert!(
            refused,
            "the log should have a line saying an upgrade is already in progress"
        );

        let base = streams.echoed();
        streams
            .wait_all_progressed(&base, Duration::from_secs(5))
            .await;
        fresh_connection_echoes(&node, GROUP, HELD + 1).await;
        assert_all_intact(&streams.stop().await);
    })
    .await;
}
