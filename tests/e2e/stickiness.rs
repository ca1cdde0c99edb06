//! Stickiness on source IP across the ports of a frontend, with `leastconn` for new clients.
//!
//! The reference workload of DESIGN.md: 300 clients × 3 sockets on 3 ports (one frontend
//! binding `127.0.0.1:P-P+2`), each client from its own 127.x.y.z address. Every client's
//! sockets must reach one server, and leastconn must spread the clients evenly. The
//! "simultaneous" variant opens a client's 3 sockets at the same instant (barrier), the
//! case where storing the stick entry only after connecting splits clients
//! (haproxy issues 2196, 3243).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Barrier;
use tokio::task::JoinSet;

use crate::harness::client::{bound_socket, connect_socket, greet};
use crate::harness::{open, src_ip, within, Backend, BackendCfg, Conn, FrontendCfg, Node};

const CLIENTS: usize = 300;
const SOCKETS: usize = 3;
/// Accepted deviation from the perfect 100 clients per server.
///
/// Seen 02:40 UTC: the sequential variant exceeds this about once in 40 runs (e.g.
/// {s1: 114, s2: 105, s3: 81}); the simultaneous one stays within ±6. Diagnosis:
/// leastconn weighs servers by *connections*, and while 300 clients connect at once many
/// have only 1 or 2 of their 3 sockets open, so a server full of half-connected clients
/// looks light and gets more new clients. Balancing new clients on the number of
/// clients stuck to each server (stick entries) would be exact. Reported to the lead.
const SPREAD_TOLERANCE: usize = 15;

fn three_servers() -> Vec<Backend> {
    ["s1", "s2", "s3"]
        .iter()
        .map(|n| Backend::named(n).spawn())
        .collect()
}

/// Frontend "f" on 3 consecutive ports → backend "b" (leastconn, stick on src).
fn sticky_node(servers: &[Backend]) -> Node {
    let mut b = BackendCfg::new("b").balance("leastconn").stick_src();
    for s in servers {
        b = b.server(s.name(), s.addr());
    }
    Node::new()
        .frontend(FrontendCfg::new("f", "b").ports(3))
        .backend(b)
        .spawn()
}

/// Opens the client's sockets one after the other, one per port.
async fn client_sequential(
    group: u8,
    i: usize,
    addrs: [SocketAddr; SOCKETS],
) -> Result<Vec<Conn>, String> {
    let mut conns = Vec::new();
    for (k, addr) in addrs.iter().enumerate() {
        let c = open(src_ip(group, i), *addr)
            .await
            .map_err(|e| format!("client {i} socket {k}: {e}"))?;
        conns.push(c);
    }
    Ok(conns)
}

/// Opens the client's sockets at the same instant: each socket is bound first, then all
/// three connect when a barrier releases them, from three separate tasks.
pub(crate) async fn client_simultaneous(
    group: u8,
    i: usize,
    addrs: [SocketAddr; SOCKETS],
) -> Result<Vec<Conn>, String> {
    let barrier = Arc::new(Barrier::new(SOCKETS));
    let mut tasks = Vec::new();
    for (k, addr) in addrs.into_iter().enumerate() {
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let sock = bound_socket(src_ip(group, i)).map_err(|e| e.to_string())?;
            barrier.wait().await;
            let stream = connect_socket(sock, addr)
                .await
                .map_err(|e| format!("client {i} socket {k}: connect: {e}"))?;
            greet(stream)
                .await
                .map_err(|e| format!("client {i} socket {k}: greeting: {e}"))
        }));
    }
    let mut conns = Vec::new();
    for t in tasks {
        conns.push(t.await.map_err(|e| e.to_string())??);
    }
    Ok(conns)
}

/// Runs all clients concurrently; returns each client's connections, by client index.
async fn run_clients(node: &Node, group: u8, simultaneous: bool) -> Vec<Vec<Conn>> {
    let addrs = [node.addr("f", 0), node.addr("f", 1), node.addr("f", 2)];
    let mut set = JoinSet::new();
    for i in 0..CLIENTS {
        set.spawn(async move {
            let r = if simultaneous {
                client_simultaneous(group, i, addrs).await
            } else {
                client_sequential(group, i, addrs).await
            };
            (i, r)
        });
    }
    let mut by_client: Vec<Option<Vec<Conn>>> = (0..CLIENTS).map(|_| None).collect();
    let mut errors = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined.expect("client task panicked") {
            (i, Ok(conns)) => by_client[i] = Some(conns),
            (_, Err(e)) => errors.push(e),
        }
    }
    assert!(
        errors.is_empty(),
        "{} of {CLIENTS} clients failed, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    by_client.into_iter().map(Option::unwrap).collect()
}

/// Every client on one server, even spread, backends saw exactly those connections,
/// every connection echoes, and /metrics agrees.
async fn assert_sticky_and_even(node: &Node, servers: &[Backend], clients: &mut [Vec<Conn>]) {
    let split: Vec<String> = clients
        .iter()
        .enumerate()
        .filter(|(_, conns)| conns.iter().any(|c| c.server != conns[0].server))
        .map(|(i, conns)| {
            let names: Vec<&str> = conns.iter().map(|c| c.server.as_str()).collect();
            format!("client {i}: {names:?}")
        })
        .collect();
    assert!(
        split.is_empty(),
        "{} clients were split across servers: {:?}",
        split.len(),
        &split[..split.len().min(10)]
    );

    let mut per_server: BTreeMap<String, usize> = BTreeMap::new();
    for conns in clients.iter() {
        *per_server.entry(conns[0].server.clone()).or_default() += 1;
    }
    eprintln!("leastconn spread of {CLIENTS} clients: {per_server:?}");
    let ideal = CLIENTS / servers.len();
    for s in servers {
        let n = per_server.get(s.name()).copied().unwrap_or(0);
        assert!(
            n.abs_diff(ideal) <= SPREAD_TOLERANCE,
            "uneven leastconn spread: {per_server:?} (each should be {ideal}±{SPREAD_TOLERANCE})"
        );
    }

    for (i, conns) in clients.iter_mut().enumerate() {
        for (k, c) in conns.iter_mut().enumerate() {
            c.echo(format!("client {i} socket {k}\n").as_bytes())
                .await
                .unwrap_or_else(|e| panic!("echo on client {i} socket {k}: {e}"));
        }
    }
    // Each backend carried exactly the sockets of its clients (health probes excluded).
    for s in servers {
        let n = per_server.get(s.name()).copied().unwrap_or(0);
        assert_eq!(
            s.carried_data(),
            n * SOCKETS,
            "server {} carried {} connections for {n} clients",
            s.name(),
            s.carried_data()
        );
    }

    let total = (CLIENTS * SOCKETS) as f64;
    let within = Duration::from_secs(3);
    let f = [("frontend", "f")];
    node.wait_metric("ballast_frontend_connections_active", &f, within, |v| {
        v == total
    })
    .await;
    let b = [("backend", "b")];
    node.wait_metric("ballast_stick_entries", &b, within, |v| v == CLIENTS as f64)
        .await;
    for s in servers {
        let expect = (per_server[s.name()] * SOCKETS) as f64;
        let labels = [("backend", "b"), ("server", s.name())];
        node.wait_metric("ballast_server_connections_active", &labels, within, |v| {
            v == expect
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_300_x3_sockets_on_3_ports_stick_and_spread_evenly() {
    let servers = three_servers();
    let node = sticky_node(&servers);
    let t0 = Instant::now();
    let mut clients = within(60, "300 clients x 3 sockets", run_clients(&node, 11, false)).await;
    eprintln!(
        "900 sequential-per-client sockets open in {:?}",
        t0.elapsed()
    );
    within(
        60,
        "checks",
        assert_sticky_and_even(&node, &servers, &mut clients),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_300_x3_simultaneous_first_sockets_get_one_server() {
    let servers = three_servers();
    let node = sticky_node(&servers);
    let t0 = Instant::now();
    let mut clients = within(60, "300 clients x 3 simultaneous sockets", async {
        run_clients(&node, 12, true).await
    })
    .await;
    eprintln!(
        "900 simultaneous-per-client sockets open in {:?}",
        t0.elapsed()
    );
    within(
        60,
        "checks",
        assert_sticky_and_even(&node, &servers, &mut clients),
    )
    .await;
}

/// A client that disconnects and comes back (on another port of the frontend) returns to
/// its server: the stick entry outlives the connection. Clients return in reverse order,
/// so plain leastconn without the stick table would put most of them elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_clients_return_to_their_server() {
    const N: usize = 60;
    let servers = three_servers();
    let node = sticky_node(&servers);
    within(60, "reconnect", async {
        let mut first = Vec::new();
        for i in 0..N {
            let c = open(src_ip(13, i), node.addr("f", i % 3))
                .await
                .unwrap_or_else(|e| panic!("client {i} first connection: {e}"));
            first.push(c);
        }
        let first_server: Vec<String> = first.iter().map(|c| c.server.clone()).collect();
        let mut count: BTreeMap<&str, usize> = BTreeMap::new();
        for s in &first_server {
            *count.entry(s.as_str()).or_default() += 1;
        }
        assert_eq!(
            count.len(),
            3,
            "leastconn should use all 3 servers: {count:?}"
        );

        drop(first);
        let f = [("frontend", "f")];
        node.wait_metric(
            "ballast_frontend_connections_active",
            &f,
            Duration::from_secs(5),
            |v| v == 0.0,
        )
        .await;
        // Entries outlive their connections.
        let b = [("backend", "b")];
        let entries = node.metric("ballast_stick_entries", &b);
        assert_eq!(
            entries,
            Some(N as f64),
            "stick entries after all clients closed"
        );

        let mut second = Vec::new();
        let mut moved = Vec::new();
        for i in (0..N).rev() {
            let c = open(src_ip(13, i), node.addr("f", (i + 1) % 3))
                .await
                .unwrap_or_else(|e| panic!("client {i} reconnection: {e}"));
            if c.server != first_server[i] {
                moved.push(format!("client {i}: {} -> {}", first_server[i], c.server));
            }
            second.push(c);
        }
        assert!(moved.is_empty(), "clients did not return: {moved:?}");
    })
    .await;
}
