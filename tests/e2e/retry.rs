//! Connect failures: a server that refuses, or does not answer within `timeout_connect`,
//! is retried on another server (at most 3 attempts) and the client is re-stuck there, so
//! all of its sockets, even simultaneous ones, end up together.
//!
//! No health checks here: the broken server stays "up", so only the retry path can save
//! the client.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::harness::dead::{refusing_addr, Blackhole};
use crate::harness::{open, src_ip, within, Backend, BackendCfg, FrontendCfg, Node};
use crate::stickiness::client_simultaneous;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connect_is_retried_elsewhere_and_the_client_restuck() {
    const CLIENTS: usize = 30;
    let s2 = Backend::named("s2").spawn();
    let s3 = Backend::named("s3").spawn();
    let node = Node::new()
        .frontend(FrontendCfg::new("f", "b").ports(3))
        .backend(
            BackendCfg::new("b")
                .balance("leastconn")
                .stick_src()
                .server("dead", refusing_addr())
                .server(s2.name(), s2.addr())
                .server(s3.name(), s3.addr()),
        )
        .spawn();
    let addrs = [node.addr("f", 0), node.addr("f", 1), node.addr("f", 2)];

    within(60, "refused connects", async {
        let mut spread: BTreeMap<String, usize> = BTreeMap::new();
        let mut held = Vec::new();
        for i in 0..CLIENTS {
            // Half the clients open their sockets one by one, half all at once.
            let conns = if i % 2 == 0 {
                let mut v = Vec::new();
                for (k, a) in addrs.iter().enumerate() {
                    v.push(
                        open(src_ip(61, i), *a)
                            .await
                            .unwrap_or_else(|e| panic!("client {i} socket {k}: {e}")),
                    );
                }
                v
            } else {
                client_simultaneous(61, i, addrs)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
            };
            let names: Vec<&str> = conns.iter().map(|c| c.server.as_str()).collect();
            assert!(
                names.iter().all(|n| *n == names[0]),
                "client {i} split after a failed connect: {names:?}"
            );
            assert!(
                names[0] == "s2" || names[0] == "s3",
                "client {i} on {names:?}"
            );
            *spread.entry(names[0].to_string()).or_default() += 1;
            held.push(conns);
        }
        eprintln!("clients after refused connects: {spread:?}");

        // Reconnecting clients go straight to their new server.
        let before = (s2.accepted(), s3.accepted());
        drop(held);
        for i in 0..CLIENTS {
            let c = open(src_ip(61, i), addrs[i % 3]).await.expect("reconnect");
            assert!(c.server == "s2" || c.server == "s3");
        }
        assert_eq!(
            s2.accepted() + s3.accepted(),
            before.0 + before.1 + CLIENTS,
            "each reconnection reaches one live server"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_connect_times_out_and_is_retried_elsewhere() {
    let hole = Blackhole::spawn();
    let s2 = Backend::named("s2").spawn();
    let node = Node::new()
        .frontend(FrontendCfg::new("f", "b"))
        .backend(
            BackendCfg::new("b")
                .balance("leastconn")
                .stick_src()
                .set("timeout_connect", "\"300ms\"")
                .server("hole", hole.addr())
                .server(s2.name(), s2.addr()),
        )
        .spawn();

    within(60, "connect timeout", async {
        let mut slow = 0;
        let mut held = Vec::new();
        for i in 0..4 {
            let t0 = Instant::now();
            let c = open(src_ip(62, i), node.addr("f", 0))
                .await
                .unwrap_or_else(|e| panic!("client {i}: {e}"));
            let took = t0.elapsed();
            assert_eq!(c.server, "s2", "client {i}");
            assert!(took < Duration::from_secs(3), "client {i} waited {took:?}");
            if took >= Duration::from_millis(250) {
                slow += 1;
            }
            held.push(c);
        }
        // The unanswering server takes no load, so leastconn offers it to new clients
        // again and again: each of those waits timeout_connect, then lands on s2.
        assert!(slow >= 1, "no client ever tried the unanswering server");
    })
    .await;
}
