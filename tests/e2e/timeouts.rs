//! Idle timeouts: a connection on which nothing moved for `timeout_client` (client side)
//! and `timeout_server` (server side) is closed; one that keeps moving bytes never is.
//!
//! The binary's semantics (node/dataplane/src/proxy/pump.rs): the connection is idle only once
//! *both* sides have been silent past their own timeout, so that a one-way stream is not
//! cut. Hence both timeouts are set here; `timeout_client` alone (with the 15h default
//! `timeout_server`) does not close anything.

use std::time::{Duration, Instant};

use crate::harness::{open, read_to_eof, src_ip, within, Backend, BackendCfg, FrontendCfg, Node};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_is_closed_after_the_idle_timeouts() {
    let s1 = Backend::named("s1").spawn();
    let node = Node::new()
        .frontend(FrontendCfg::new("f", "b").set("timeout_client", "\"1s\""))
        .backend(
            BackendCfg::new("b")
                .set("timeout_server", "\"1s\"")
                .server(s1.name(), s1.addr()),
        )
        .spawn();
    let f = node.addr("f", 0);
    within(60, "idle timeout", async {
        let mut idle = open(src_ip(81, 0), f).await.expect("idle client");
        let mut busy = open(src_ip(81, 1), f).await.expect("busy client");
        let t0 = Instant::now();
        let idle_task = tokio::spawn(async move {
            let r = read_to_eof(&mut idle.stream, Duration::from_secs(5)).await;
            (r, t0.elapsed())
        });
        // 2.5 s of traffic every 100 ms: longer than the timeout, never idle that long
        // (a 900 ms margin for a loaded machine).
        for n in 0..25 {
            busy.echo(format!("keepalive {n}\n").as_bytes())
                .await
                .unwrap_or_else(|e| panic!("busy connection broken after {:?}: {e}", t0.elapsed()));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (r, took) = idle_task.await.unwrap();
        match r {
            Ok(rest) => assert!(rest.is_empty(), "unexpected data {rest:?}"),
            Err(e) => assert_ne!(
                e.kind(),
                std::io::ErrorKind::TimedOut,
                "idle connection still open after 5 s (idle timeouts 1s)"
            ),
        }
        assert!(
            took >= Duration::from_millis(900) && took <= Duration::from_millis(3500),
            "idle connection closed after {took:?}, idle timeouts are 1s"
        );
        busy.echo(b"still alive\n")
            .await
            .expect("busy connection after the test");
    })
    .await;
}
