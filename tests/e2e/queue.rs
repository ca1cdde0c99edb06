//! Per-server `maxconn` with a FIFO queue bounded by `timeout_queue`.
//!
//! A queued client is accepted by ballast (its TCP connect succeeds) but is not connected
//! to the server yet, so it gets no greeting line until a slot frees up.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::harness::client::read_line;
use crate::harness::{
    connect_from, open, read_to_eof, src_ip, within, Backend, BackendCfg, Conn, FrontendCfg, Node,
};

fn single_server_node(server: &Backend, timeout_queue: &str) -> Node {
    Node::new()
        .frontend(FrontendCfg::new("f", "b"))
        .backend(
            BackendCfg::new("b")
                .balance("leastconn")
                .timeout_queue(timeout_queue)
                .server_with(server.name(), server.addr(), "maxconn = 2"),
        )
        .spawn()
}

fn is_timeout(r: &std::io::Result<String>) -> bool {
    matches!(r, Err(e) if e.kind() == std::io::ErrorKind::TimedOut)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maxconn_queues_in_fifo_order_until_a_slot_frees() {
    let s1 = Backend::named("s1").spawn();
    let node = single_server_node(&s1, "10s");
    let f = node.addr("f", 0);
    let q = [("backend", "b"), ("server", "s1")];
    let short = Duration::from_secs(3);
    within(60, "maxconn queue", async {
        let mut c1 = open(src_ip(21, 0), f).await.expect("c1");
        let mut c2 = open(src_ip(21, 1), f).await.expect("c2");
        assert_eq!((c1.server.as_str(), c2.server.as_str()), ("s1", "s1"));
        c1.echo(b"c1\n").await.expect("c1 echo");
        c2.echo(b"c2\n").await.expect("c2 echo");

        // Queued clients may already send: the bytes wait with them and arrive later.
        let mut c3 = connect_from(src_ip(21, 2), f).await.expect("c3 connect");
        c3.write_all(b"early 3\n").await.expect("c3 early write");
        let early = read_line(&mut c3, Duration::from_millis(700)).await;
        assert!(
            is_timeout(&early),
            "3rd connection must wait in the queue, got {early:?}"
        );
        node.wait_metric("ballast_server_queue_length", &q, short, |v| v == 1.0)
            .await;

        let mut c4 = connect_from(src_ip(21, 3), f).await.expect("c4 connect");
        c4.write_all(b"early 4\n").await.expect("c4 early write");
        node.wait_metric("ballast_server_queue_length", &q, short, |v| v == 2.0)
            .await;
        assert_eq!(
            s1.carried_data(),
            2,
            "the server must not see queued connections"
        );

        // One slot frees: the first queued (c3) proceeds, c4 keeps waiting.
        drop(c1);
        let g3 = read_line(&mut c3, short)
            .await
            .expect("c3 greeting after c1 closed");
        assert_eq!(g3, "s1");
        let e3 = read_line(&mut c3, short)
            .await
            .expect("c3's early bytes echoed");
        assert_eq!(e3, "early 3");
        let still = read_line(&mut c4, Duration::from_millis(500)).await;
        assert!(
            is_timeout(&still),
            "c4 must still be queued (FIFO), got {still:?}"
        );
        node.wait_metric("ballast_server_queue_length", &q, short, |v| v == 1.0)
            .await;

        drop(c2);
        let g4 = read_line(&mut c4, short)
            .await
            .expect("c4 greeting after c2 closed");
        assert_eq!(g4, "s1");
        let e4 = read_line(&mut c4, short)
            .await
            .expect("c4's early bytes echoed");
        assert_eq!(e4, "early 4");
        node.wait_metric("ballast_server_queue_length", &q, short, |v| v == 0.0)
            .await;
        assert_eq!(s1.carried_data(), 4);

        let mut c3 = Conn {
            stream: c3,
            server: g3,
        };
        let mut c4 = Conn {
            stream: c4,
            server: g4,
        };
        c3.echo(b"queued then served 3\n").await.expect("c3 echo");
        c4.echo(b"queued then served 4\n").await.expect("c4 echo");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_connection_is_closed_after_timeout_queue() {
    let s1 = Backend::named("s1").spawn();
    let node = single_server_node(&s1, "500ms");
    let f = node.addr("f", 0);
    within(60, "queue timeout", async {
        let mut c1 = open(src_ip(22, 0), f).await.expect("c1");
        let mut c2 = open(src_ip(22, 1), f).await.expect("c2");
        c1.echo(b"c1\n").await.expect("c1 echo");
        c2.echo(b"c2\n").await.expect("c2 echo");

        let mut c3 = connect_from(src_ip(22, 2), f).await.expect("c3 connect");
        c3.write_all(b"never delivered\n")
            .await
            .expect("c3 early write");
        let t0 = Instant::now();
        // Closed by ballast: a clean EOF or a reset, never a greeting.
        let got = read_to_eof(&mut c3, Duration::from_secs(5)).await;
        let waited = t0.elapsed();
        match &got {
            Ok(bytes) => assert!(bytes.is_empty(), "queued client got data: {bytes:?}"),
            Err(e) => assert_ne!(
                e.kind(),
                std::io::ErrorKind::TimedOut,
                "queued connection not closed within 5 s (timeout_queue 500ms)"
            ),
        }
        assert!(
            waited >= Duration::from_millis(400) && waited <= Duration::from_millis(2500),
            "queued connection closed after {waited:?}, timeout_queue is 500ms"
        );
        assert_eq!(
            s1.carried_data(),
            2,
            "a timed-out queued client must never reach the server"
        );

        let q = [("backend", "b"), ("server", "s1")];
        let short = Duration::from_secs(3);
        node.wait_metric("ballast_queue_timeouts_total", &q, short, |v| v == 1.0)
            .await;
        node.wait_metric("ballast_server_queue_length", &q, short, |v| v == 0.0)
            .await;

        // The queue still works afterwards: a freed slot serves the next client at once.
        drop(c1);
        let mut c4 = open(src_ip(22, 3), f).await.expect("c4 after a slot freed");
        assert_eq!(c4.server, "s1");
        c4.echo(b"after timeout\n").await.expect("c4 echo");
    })
    .await;
}
