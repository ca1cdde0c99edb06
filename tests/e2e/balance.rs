//! Balance algorithms through the real binary, without stick tables:
//! `roundrobin` (plain and weighted) and `source` (consistent hash of the client address).

use std::collections::BTreeMap;

use crate::harness::http::metric_value;
use crate::harness::{open, src_ip, within, Backend, BackendCfg, FrontendCfg, Node};

fn spawn_servers(prefix: &str) -> Vec<Backend> {
    (1..=3)
        .map(|i| Backend::named(&format!("{prefix}{i}")).spawn())
        .collect()
}

/// A backend named `name` balancing over `servers` with `balance`, each at weight 1.
fn backend_over<'a>(
    name: &str,
    balance: &str,
    servers: impl IntoIterator<Item = &'a Backend>,
) -> BackendCfg {
    servers
        .into_iter()
        .fold(BackendCfg::new(name).balance(balance), |b, s| {
            b.server(s.name(), s.addr())
        })
}

/// Opens `n` connections one after the other (each closed before the next) from distinct
/// client addresses and counts where they land.
async fn tally(node: &Node, frontend: &str, group: u8, n: usize) -> BTreeMap<String, usize> {
    let mut count = BTreeMap::new();
    for i in 0..n {
        let c = open(src_ip(group, i), node.addr(frontend, 0))
            .await
            .unwrap_or_else(|e| panic!("{frontend} connection {i}: {e}"));
        *count.entry(c.server).or_default() += 1;
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roundrobin_spreads_evenly_and_by_weight() {
    let plain = spawn_servers("r");
    let weighted = spawn_servers("w");
    let rr = backend_over("rr", "roundrobin", &plain);
    let mut wrr = BackendCfg::new("wrr").balance("roundrobin");
    for (w, s) in weighted.iter().enumerate() {
        wrr = wrr.server_with(s.name(), s.addr(), &format!("weight = {}", w + 1));
    }
    let node = Node::new()
        .frontend(FrontendCfg::new("frr", "rr"))
        .frontend(FrontendCfg::new("fwrr", "wrr"))
        .backend(rr)
        .backend(wrr)
        .spawn();

    within(60, "roundrobin", async {
        let count = tally(&node, "frr", 51, 30).await;
        let expect: BTreeMap<String, usize> = [("r1", 10), ("r2", 10), ("r3", 10)]
            .map(|(s, n)| (s.to_string(), n))
            .into();
        assert_eq!(count, expect, "roundrobin over 3 servers, 30 connections");

        // Weights 1:2:3 over 10 full cycles of 6.
        let count = tally(&node, "fwrr", 52, 60).await;
        let expect: BTreeMap<String, usize> = [("w1", 10), ("w2", 20), ("w3", 30)]
            .map(|(s, n)| (s.to_string(), n))
            .into();
        assert_eq!(count, expect, "weighted roundrobin 1:2:3, 60 connections");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_maps_each_client_address_to_one_server() {
    const CLIENTS: usize = 40;
    let servers = spawn_servers("h");
    let b = backend_over("src", "source", &servers);
    let node = Node::new()
        .frontend(FrontendCfg::new("fsrc", "src").ports(2))
        .backend(b)
        .spawn();

    within(60, "source hash", async {
        let mut per_server: BTreeMap<String, usize> = BTreeMap::new();
        for i in 0..CLIENTS {
            // Three connections per client, on both ports, one held while the next opens.
            let first = open(src_ip(53, i), node.addr("fsrc", 0))
                .await
                .unwrap_or_else(|e| panic!("client {i}: {e}"));
            for k in 1..3 {
                let again = open(src_ip(53, i), node.addr("fsrc", k % 2))
                    .await
                    .unwrap_or_else(|e| panic!("client {i} connection {k}: {e}"));
                assert_eq!(
                    again.server, first.server,
                    "client {i}: connection {k} hashed to another server"
                );
            }
            *per_server.entry(first.server).or_default() += 1;
        }
        // 40 addresses over 3 servers: a hash that ignores the address would use one.
        assert!(
            per_server.len() >= 2,
            "source hash put all {CLIENTS} clients on one server: {per_server:?}"
        );
        eprintln!("source hash spread of {CLIENTS} clients: {per_server:?}");
    })
    .await;
}

/// Weighted leastconn: held connections from distinct clients settle in proportion to
/// the weights (1:2:3 over 30 connections gives 5/10/15, give or take one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leastconn_follows_weights() {
    let servers = spawn_servers("l");
    let mut b = BackendCfg::new("wlc").balance("leastconn");
    for (w, s) in servers.iter().enumerate() {
        b = b.server_with(s.name(), s.addr(), &format!("weight = {}", w + 1));
    }
    let node = Node::new()
        .frontend(FrontendCfg::new("f", "wlc"))
        .backend(b)
        .spawn();
    within(60, "weighted leastconn", async {
        let mut count: BTreeMap<String, usize> = BTreeMap::new();
        let mut held = Vec::new();
        for i in 0..30 {
            let c = open(src_ip(54, i), node.addr("f", 0))
                .await
                .unwrap_or_else(|e| panic!("connection {i}: {e}"));
            *count.entry(c.server.clone()).or_default() += 1;
            held.push(c);
        }
        for (name, want) in [("l1", 5), ("l2", 10), ("l3", 15)] {
            let got = count.get(name).copied().unwrap_or(0);
            assert!(
                got.abs_diff(want) <= 1,
                "weighted leastconn 1:2:3 over 30 held connections: {count:?}"
            );
        }
    })
    .await;
}

/// Long-lived connections spread evenly over the data-plane threads, whichever thread's
/// socket the kernel's SO_REUSEPORT hash picked for each: the hash alone would leave 100
/// connections on 2 threads within 2 of each other about one time in four.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_connections_spread_evenly_over_the_plane_threads() {
    const HELD: usize = 100;
    let servers = spawn_servers("t");
    let b = backend_over("threads", "leastconn", &servers);
    let node = Node::new()
        .frontend(FrontendCfg::new("f", "threads"))
        .backend(b)
        .spawn();
    within(60, "connections over plane threads", async {
        let mut held = Vec::new();
        for i in 0..HELD {
            let c = open(src_ip(56, i), node.addr("f", 0))
                .await
                .unwrap_or_else(|e| panic!("connection {i}: {e}"));
            held.push(c);
        }
        let metrics = node.metrics();
        let per_thread: Vec<usize> = (0..)
            .map_while(|thread| {
                metric_value(
                    &metrics,
                    "ballast_plane_connections",
                    &[("thread", &thread.to_string())],
                )
            })
            .map(|v| v as usize)
            .collect();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        assert_eq!(
            per_thread.len(),
            threads,
            "one gauge per plane thread: {per_thread:?}"
        );
        assert_eq!(per_thread.iter().sum::<usize>(), HELD, "{per_thread:?}");
        let (least, most) = (per_thread.iter().min(), per_thread.iter().max());
        assert!(
            most.zip(least).is_some_and(|(m, l)| m - l <= 2),
            "{HELD} held connections over the plane threads: {per_thread:?}"
        );
        eprintln!("{HELD} held connections per plane thread: {per_thread:?}");
        drop(held);
    })
    .await;
}

/// Maps clients 0..n through a fresh node whose backend has `servers` (balance source).
async fn source_map(servers: &[&Backend], n: usize) -> Vec<String> {
    let b = backend_over("src", "source", servers.iter().copied());
    let node = Node::new()
        .frontend(FrontendCfg::new("f", "src"))
        .backend(b)
        .spawn();
    let mut out = Vec::new();
    for i in 0..n {
        let c = open(src_ip(55, i), node.addr("f", 0))
            .await
            .unwrap_or_else(|e| panic!("client {i}: {e}"));
        out.push(c.server);
    }
    out
}

/// `source` is a consistent hash: adding a server moves about 1/N of the clients, all to
/// the new server; removing one moves only that server's clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_hash_moves_few_clients_when_servers_change() {
    const N: usize = 120;
    let s = spawn_servers("c");
    let s4 = Backend::named("c4").spawn();
    within(60, "consistent hash", async {
        let three = source_map(&[&s[0], &s[1], &s[2]], N).await;
        let four = source_map(&[&s[0], &s[1], &s[2], &s4], N).await;
        let two = source_map(&[&s[0], &s[1]], N).await;

        let moved: Vec<usize> = (0..N).filter(|&i| three[i] != four[i]).collect();
        assert!(
            moved.iter().all(|&i| four[i] == "c4"),
            "adding c4 moved clients between old servers"
        );
        // Expected N/4 = 30.
        assert!(
            (12..=48).contains(&moved.len()),
            "adding a 4th server moved {} of {N} clients",
            moved.len()
        );

        for i in 0..N {
            if three[i] != "c3" {
                assert_eq!(
                    two[i], three[i],
                    "removing c3 moved client {i}, which was on {}",
                    three[i]
                );
            }
        }
        eprintln!(
            "consistent hash: adding a 4th server moved {} of {N}",
            moved.len()
        );
    })
    .await;
}
