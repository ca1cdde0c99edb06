//! The stick table's bounds: `size` with least-recently-used eviction (counted in
//! /metrics), and `expire` counted from the client's last close, never while it holds a
//! connection. Plus admin states and one table shared by every frontend of a backend.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::harness::{open, src_ip, within, Backend, BackendCfg, FrontendCfg, Node};

fn three_servers() -> Vec<Backend> {
    ["s1", "s2", "s3"]
        .iter()
        .map(|n| Backend::named(n).spawn())
        .collect()
}

fn with_servers(mut b: BackendCfg, servers: &[Backend]) -> BackendCfg {
    for s in servers {
        b = b.server(s.name(), s.addr());
    }
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stick_table_size_is_bounded_and_evictions_counted() {
    const SIZE: usize = 10;
    const CLIENTS: usize = 25;
    let servers = three_servers();
    let node = Node::new()
        .frontend(FrontendCfg::new("f", "b"))
        .backend(with_servers(
            BackendCfg::new("b").balance("leastconn").stick(SIZE, "16h"),
            &servers,
        ))
        .spawn();
    within(60, "stick size", async {
        for i in 0..CLIENTS {
            let c = open(src_ip(71, i), node.addr("f", 0))
                .await
                .unwrap_or_else(|e| panic!("client {i}: {e}"));
            drop(c);
        }
        let b = [("backend", "b")];
        let short = Duration::from_secs(3);
        node.wait_metric("ballast_stick_capacity", &b, short, |v| v == SIZE as f64)
            .await;
        node.wait_metric("ballast_stick_entries", &b, short, |v| v == SIZE as f64)
            .await;
        node.wait_metric("ballast_stick_evictions_total", &b, short, |v| {
            v == (CLIENTS - SIZE) as f64
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stick_entry_expires_after_last_close_never_while_held() {
    let servers = three_servers();
    let node = Node::new()
        .frontend(FrontendCfg::new("f", "b"))
        .backend(with_servers(
            BackendCfg::new("b").balance("leastconn").stick(1000, "2s"),
            &servers,
        ))
        .spawn();
    let f = node.addr("f", 0);
    let b = [("backend", "b")];
    within(60, "stick expire", async {
        let first = open(src_ip(72, 0), f).await.expect("first socket");
        // Held for longer than `expire`: the entry must survive. Its server is now the
        // busiest, so a fresh leastconn decision would pick another one.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(node.metric("ballast_stick_entries", &b), Some(1.0));
        let second = open(src_ip(72, 0), f).await.expect("second socket");
        assert_eq!(
            second.server, first.server,
            "the entry expired while its client held a connection"
        );

        // After the last close, the entry lives `expire` longer, then goes.
        drop((first, second));
        let closed = Instant::now();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            node.metric("ballast_stick_entries", &b),
            Some(1.0),
            "the entry went before `expire` after the last close"
        );
        node.wait_metric("ballast_stick_entries", &b, Duration::from_secs(6), |v| {
            v == 0.0
        })
        .await;
        eprintln!(
            "stick entry gone {:?} after the last close (expire 2s)",
            closed.elapsed()
        );
        assert!(closed.elapsed() >= Duration::from_millis(1900));
    })
    .await;
}

/// Two frontends using one backend share its stick table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frontends_of_one_backend_share_its_stick_table() {
    const CLIENTS: usize = 30;
    let servers = three_servers();
    let node = Node::new()
        .frontend(FrontendCfg::new("fa", "b"))
        .frontend(FrontendCfg::new("fb", "b").ports(2))
        .backend(with_servers(
            BackendCfg::new("b").balance("leastconn").stick_src(),
            &servers,
        ))
        .spawn();
    within(60, "shared stick table", async {
        let mut held = Vec::new();
        for i in 0..CLIENTS {
            let a = open(src_ip(73, i), node.addr("fa", 0)).await.expect("fa");
            for k in 0..2 {
                let c = open(src_ip(73, i), node.addr("fb", k)).await.expect("fb");
                assert_eq!(c.server, a.server, "client {i}: frontend fb port {k}");
                held.push(c);
            }
            held.push(a);
        }
        let b = [("backend", "b")];
        assert_eq!(
            node.metric("ballast_stick_entries", &b),
            Some(CLIENTS as f64)
        );
    })
    .await;
}

/// Admin states from the config: `drain` and `maint` servers take no new clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_and_maint_servers_take_no_new_clients() {
    let servers = three_servers();
    let node = Node::new()
        .frontend(FrontendCfg::new("f", "b"))
        .backend(
            BackendCfg::new("b")
                .balance("leastconn")
                .stick_src()
                .server(servers[0].name(), servers[0].addr())
                .server_with(servers[1].name(), servers[1].addr(), "admin = \"drain\"")
                .server_with(servers[2].name(), servers[2].addr(), "admin = \"maint\""),
        )
        .spawn();
    within(60, "admin states", async {
        let mut count: BTreeMap<String, usize> = BTreeMap::new();
        let mut held = Vec::new();
        for i in 0..20 {
            let c = open(src_ip(74, i), node.addr("f", 0))
                .await
                .expect("client");
            *count.entry(c.server.clone()).or_default() += 1;
            held.push(c);
        }
        assert_eq!(
            count,
            BTreeMap::from([("s1".to_string(), 20)]),
            "only the ready server takes new clients"
        );
    })
    .await;
}
