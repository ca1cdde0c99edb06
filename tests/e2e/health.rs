//! Health checks: a killed backend is marked down within `fall × interval`, receives
//! nothing new, and the clients that were stuck to it move together to one live server.
//!
//! "Receives nothing new" is checked with a tripwire: once s2 is down, a fresh server is
//! started on s2's address. Its health probes succeed, but `rise` is set so high that s2
//! stays down for the whole test; any client that gets the tripwire's greeting proves
//! that ballast sent a new connection to a server it had marked down (a plain dead port
//! would hide that, since a failed connect is retried on another server).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::harness::http::metric_value;
use crate::harness::Node;
use crate::harness::{open, read_to_eof, src_ip, within, Backend, BackendCfg, Conn, FrontendCfg};
use crate::stickiness::client_simultaneous;

const INTERVAL_MS: u64 = 200;
const TIMEOUT_MS: u64 = 100;
const FALL: u64 = 2;
/// 100 × 200 ms = 20 s: the tripwire on s2's address cannot bring s2 back during the test.
const RISE: u64 = 100;
const CLIENTS: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backend_is_marked_down_and_its_clients_move_together() {
    let mut servers: Vec<Backend> = ["s1", "s2", "s3"]
        .iter()
        .map(|n| Backend::named(n).spawn())
        .collect();
    let mut b = BackendCfg::new("b")
        .balance("leastconn")
        .stick_src()
        .health(
            &format!("{INTERVAL_MS}ms"),
            &format!("{TIMEOUT_MS}ms"),
            RISE as u32,
            FALL as u32,
        );
    for s in &servers {
        b = b.server(s.name(), s.addr());
    }
    let node = Node::new()
        .frontend(FrontendCfg::new("f", "b").ports(3))
        .backend(b)
        .spawn();
    let addrs = [node.addr("f", 0), node.addr("f", 1), node.addr("f", 2)];
    let up = |s: &'static str| [("backend", "b"), ("server", s)];
    let short = Duration::from_secs(3);

    within(90, "killed backend scenario", async {
        for s in ["s1", "s2", "s3"] {
            node.wait_metric("ballast_server_up", &up(s), short, |v| v == 1.0)
                .await;
        }

        // 30 clients × 3 sockets, held open.
        let mut clients: Vec<Vec<Conn>> = Vec::new();
        for i in 0..CLIENTS {
            let mut conns = Vec::new();
            for (k, a) in addrs.iter().enumerate() {
                let c = open(src_ip(31, i), *a)
                    .await
                    .unwrap_or_else(|e| panic!("client {i} socket {k}: {e}"));
                conns.push(c);
            }
            assert!(
                conns.iter().all(|c| c.server == conns[0].server),
                "client {i} split before any failure"
            );
            clients.push(conns);
        }
        let on_s2: Vec<usize> = (0..CLIENTS)
            .filter(|&i| clients[i][0].server == "s2")
            .collect();
        assert!(!on_s2.is_empty(), "leastconn put no client on s2");
        let s2_total_before = node.metric("ballast_server_connections_total", &up("s2"));

        // Kill s2 and time how long ballast takes to mark it down.
        let s2_addr = servers[1].addr();
        let t0 = Instant::now();
        servers[1].kill();
        let deadline = t0 + Duration::from_secs(5);
        // Read the failure count from the same scrape that first shows s2 down: it
        // must already be `fall` (a node that ignored `fall` would go down after one).
        let (took, failures) = loop {
            let text = node.metrics();
            let metric = |name| metric_value(&text, name, &up("s2"));
            if metric("ballast_server_up") == Some(0.0) {
                let failures = metric("ballast_health_check_failures_total").unwrap_or(0.0);
                break (t0.elapsed(), failures);
            }
            assert!(Instant::now() < deadline, "s2 not marked down within 5 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // fall × interval, plus up to one interval until the first probe after the kill,
        // the probe timeout, and scheduling slack on a loaded 2-core machine.
        let bound = Duration::from_millis(FALL * INTERVAL_MS + INTERVAL_MS + TIMEOUT_MS + 500);
        eprintln!(
            "s2 marked down {took:?} after the kill (fall x interval = {} ms)",
            FALL * INTERVAL_MS
        );
        assert!(
            took <= bound,
            "s2 marked down only after {took:?} (bound {bound:?})"
        );
        for s in ["s1", "s3"] {
            assert_eq!(
                node.metric("ballast_server_up", &up(s)),
                Some(1.0),
                "{s} must stay up"
            );
        }
        assert!(
            failures >= FALL as f64,
            "s2 marked down after {failures} failed probes (fall = {FALL})"
        );

        // The tripwire: a live server on s2's address, which ballast must not use.
        let tripwire = Backend::named("tripwire-on-s2").at(s2_addr).spawn();

        // The killed server's connections are reset: ballast propagates the close.
        for &i in &on_s2 {
            for (k, c) in clients[i].iter_mut().enumerate() {
                let r = read_to_eof(&mut c.stream, short).await;
                if let Err(e) = &r {
                    assert_ne!(
                        e.kind(),
                        std::io::ErrorKind::TimedOut,
                        "client {i} socket {k}: still open 3 s after its server died"
                    );
                }
            }
        }
        // Clients of the live servers are untouched.
        for (i, conns) in clients.iter_mut().enumerate() {
            if on_s2.contains(&i) {
                continue;
            }
            for (k, c) in conns.iter_mut().enumerate() {
                c.echo(b"still here\n")
                    .await
                    .unwrap_or_else(|e| panic!("client {i} socket {k} on {}: {e}", c.server));
            }
        }

        // s2's clients come back with 3 simultaneous sockets: all on one live server.
        let mut moved_to: BTreeMap<String, usize> = BTreeMap::new();
        for &i in &on_s2 {
            let conns = client_simultaneous(31, i, addrs)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let names: Vec<&str> = conns.iter().map(|c| c.server.as_str()).collect();
            assert!(
                names.iter().all(|n| *n == names[0]),
                "client {i} (was on s2) split after the failover: {names:?}"
            );
            assert!(
                names[0] == "s1" || names[0] == "s3",
                "client {i} (was on s2) landed on {:?}",
                names[0]
            );
            *moved_to.entry(names[0].to_string()).or_default() += 1;
            clients[i] = conns;
        }
        eprintln!("s2's {} clients moved to {moved_to:?}", on_s2.len());

        // New clients never land on the down server.
        for i in CLIENTS..2 * CLIENTS {
            for (k, a) in addrs.iter().enumerate() {
                let c = open(src_ip(31, i), *a)
                    .await
                    .unwrap_or_else(|e| panic!("new client {i} socket {k}: {e}"));
                assert!(
                    c.server == "s1" || c.server == "s3",
                    "new client {i} socket {k} landed on {:?} while s2 is down",
                    c.server
                );
            }
        }

        assert_eq!(
            tripwire.carried_data(),
            0,
            "a client reached the down server's address"
        );
        assert_eq!(node.metric("ballast_server_up", &up("s2")), Some(0.0));
        assert_eq!(
            node.metric("ballast_server_connections_total", &up("s2")),
            s2_total_before,
            "ballast counted new connections to s2 after it died"
        );
    })
    .await;
}

/// A server that comes back is marked up after `rise` good probes and takes new clients
/// again; a client re-stuck away from it stays where it was moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revived_backend_rises_and_takes_new_clients() {
    let s1 = Backend::named("s1").spawn();
    let mut s2 = Backend::named("s2").spawn();
    let node = Node::new()
        .frontend(FrontendCfg::new("f", "b"))
        .backend(
            BackendCfg::new("b")
                .balance("leastconn")
                .stick_src()
                .health("200ms", "100ms", 2, 2)
                .server(s1.name(), s1.addr())
                .server(s2.name(), s2.addr()),
        )
        .spawn();
    let f = node.addr("f", 0);
    let up = [("backend", "b"), ("server", "s2")];
    within(60, "rise", async {
        let s2_addr = s2.addr();
        s2.kill();
        node.wait_metric("ballast_server_up", &up, Duration::from_secs(3), |v| {
            v == 0.0
        })
        .await;
        // While s2 is down, everybody goes to s1.
        let mut held = Vec::new();
        for i in 0..4 {
            let c = open(src_ip(32, i), f)
                .await
                .expect("client while s2 is down");
            assert_eq!(c.server, "s1");
            held.push(c);
        }

        let revived = Backend::named("s2").at(s2_addr).spawn();
        let t0 = Instant::now();
        node.wait_metric("ballast_server_up", &up, Duration::from_secs(5), |v| {
            v == 1.0
        })
        .await;
        let took = t0.elapsed();
        // Every probe is a connection to the revived server, and nothing else reaches
        // it while it is down: when s2 first shows up, at least `rise` probes passed.
        // (A probe's connect can complete in the kernel just before the revived server's
        // accept loop counts it: allow 100 ms, half the gap to the next probe.)
        let settle = Instant::now() + Duration::from_millis(100);
        while revived.accepted() < 2 && Instant::now() < settle {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let probes = revived.accepted();
        eprintln!(
            "s2 marked up again {took:?} after it came back, after {probes} probes \
             (rise x interval = 400 ms)"
        );
        assert!(
            took <= Duration::from_millis(1300),
            "s2 rose only after {took:?}"
        );
        assert!(
            probes >= 2,
            "s2 marked up after {probes} probe(s), rise = 2"
        );

        // s1 holds 4 connections, s2 none: leastconn sends new clients to s2 ...
        let c = open(src_ip(32, 10), f)
            .await
            .expect("new client after the rise");
        assert_eq!(c.server, "s2", "a risen server takes new clients");
        // ... while a client stuck to s1 during the outage stays there.
        let again = open(src_ip(32, 0), f).await.expect("returning client");
        assert_eq!(again.server, "s1");
    })
    .await;
}
