//! The byte path: half-close in each direction, reset propagation, large streams intact,
//! and the byte / connection counters that describe them in /metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::harness::backend::{ConnRecord, Mode};
use crate::harness::{
    fnv1a, open, pseudo_random_bytes, read_to_eof, src_ip, within, Backend, BackendCfg,
    FrontendCfg, Node,
};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// One frontend per backend server, named after it ("fe-<server>" → "be-<server>").
fn node_for(servers: &[&Backend]) -> Node {
    let mut n = Node::new();
    for s in servers {
        let (fe, be) = (format!("fe-{}", s.name()), format!("be-{}", s.name()));
        n = n
            .frontend(FrontendCfg::new(&fe, &be))
            .backend(BackendCfg::new(&be).server(s.name(), s.addr()));
    }
    n.spawn()
}

/// Waits (bounded) until the backend has finished `n` connections and returns the records.
async fn records(server: &Backend, n: usize) -> Vec<ConnRecord> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = server.records();
        if r.len() >= n {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {} of {n} connections finished within 5 s (active {})",
            server.name(),
            r.len(),
            server.active()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Client shuts down its write side: the server reads EOF, can still send, and the client
/// receives everything and then EOF.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_from_client_server_still_sends() {
    let trailer = Arc::new(pseudo_random_bytes(MIB, 7));
    let echo = Backend::named("echo").spawn();
    let late = Backend::named("late")
        .mode(Mode::ReplyAfterEof(trailer.clone()))
        .spawn();
    let node = node_for(&[&echo, &late]);

    within(60, "half-close from the client", async {
        // Echo server: everything sent before our FIN comes back, then the server's FIN.
        let payload = pseudo_random_bytes(256 * KIB, 1);
        let c = open(src_ip(41, 0), node.addr("fe-echo", 0))
            .await
            .expect("connect echo");
        let (mut rd, mut wr) = c.stream.into_split();
        let p = payload.clone();
        let writer = tokio::spawn(async move {
            wr.write_all(&p).await?;
            wr.shutdown().await?;
            Ok::<_, std::io::Error>(wr)
        });
        let mut back = Vec::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read_to_end(&mut rd, &mut back),
        )
        .await
        .expect("no EOF from the echo server 10 s after our FIN")
        .expect("read echo");
        let _wr = writer.await.unwrap().expect("write + shutdown");
        assert_eq!(back.len(), payload.len(), "echoed length");
        assert!(back == payload, "echoed bytes differ");
        let rec = &records(&echo, 1).await[0];
        assert!(rec.saw_eof, "echo server never saw EOF");
        assert_eq!(rec.received, payload.len() as u64);

        // Reply-after-EOF server: it only answers once it has seen our FIN.
        let mut c = open(src_ip(41, 1), node.addr("fe-late", 0))
            .await
            .expect("connect late");
        c.stream
            .write_all(&pseudo_random_bytes(64 * KIB, 2))
            .await
            .expect("write");
        c.stream.shutdown().await.expect("shutdown write");
        let got = read_to_eof(&mut c.stream, Duration::from_secs(10))
            .await
            .expect("reply after EOF: read to EOF");
        assert_eq!(
            got.len(),
            trailer.len(),
            "bytes sent by the server after our FIN"
        );
        assert_eq!(fnv1a(&got), fnv1a(&trailer), "reply after EOF differs");
        let rec = &records(&late, 1).await[0];
        assert!(rec.saw_eof);
        assert_eq!(rec.received, 64 * KIB as u64);
    })
    .await;
}

/// Server shuts down its write side first: the client reads everything and EOF, keeps
/// sending, and the server receives all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_from_server_client_still_sends() {
    let first = Arc::new(pseudo_random_bytes(512 * KIB, 3));
    let srv = Backend::named("first")
        .mode(Mode::SendThenShutdown(first.clone()))
        .spawn();
    let node = node_for(&[&srv]);

    within(60, "half-close from the server", async {
        let mut c = open(src_ip(42, 0), node.addr("fe-first", 0))
            .await
            .expect("connect");
        let got = read_to_eof(&mut c.stream, Duration::from_secs(10))
            .await
            .expect("server's data then EOF");
        assert_eq!(got.len(), first.len());
        assert_eq!(fnv1a(&got), fnv1a(&first));

        // Our side is still open: send 1 MiB after having received the server's FIN.
        let later = pseudo_random_bytes(MIB, 4);
        c.stream
            .write_all(&later)
            .await
            .expect("write after the server's FIN");
        c.stream.shutdown().await.expect("shutdown write");
        let rec = &records(&srv, 1).await[0];
        assert!(rec.saw_eof, "server never saw our FIN");
        assert_eq!(
            rec.received,
            later.len() as u64,
            "bytes sent after the server's FIN"
        );

        // Both directions closed: the connection is gone from ballast too.
        let fe = [("frontend", "fe-first")];
        node.wait_metric(
            "ballast_frontend_connections_active",
            &fe,
            Duration::from_secs(3),
            |v| v == 0.0,
        )
        .await;
    })
    .await;
}

/// A client that resets its connection: the server side is reset too (not a clean FIN),
/// and the connection is gone on both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reset_propagates_to_the_server() {
    let echo = Backend::named("echo").spawn();
    let node = node_for(&[&echo]);
    within(30, "reset propagation", async {
        let mut c = open(src_ip(43, 0), node.addr("fe-echo", 0))
            .await
            .expect("connect");
        c.echo(b"before the reset\n").await.expect("echo");
        c.stream.set_zero_linger().expect("SO_LINGER 0");
        drop(c);
        let deadline = Instant::now() + Duration::from_secs(3);
        while echo.errors() == 0 && echo.records().is_empty() {
            assert!(
                Instant::now() < deadline,
                "server connection still open 3 s after the client's reset"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A clean FIN would have ended the echo loop normally and left a record.
        assert!(
            echo.records().is_empty(),
            "the server saw a clean FIN instead of a reset: {:?}",
            echo.records()
        );
        assert_eq!(echo.errors(), 1, "the server connection ends with a reset");
    })
    .await;
}

/// A server that resets its connection: the client is reset too (not a clean FIN).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_reset_propagates_to_the_client() {
    let mut echo = Backend::named("echo").spawn();
    let node = node_for(&[&echo]);
    within(30, "server reset propagation", async {
        let mut c = open(src_ip(45, 0), node.addr("fe-echo", 0))
            .await
            .expect("connect");
        c.echo(b"before the reset\n").await.expect("echo");
        echo.kill();
        let r = read_to_eof(&mut c.stream, Duration::from_secs(3)).await;
        match r {
            Err(e) => assert_eq!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset,
                "client after its server reset"
            ),
            Ok(rest) => panic!("the client saw a clean FIN (after {rest:?}), not a reset"),
        }
    })
    .await;
}

/// 8 MiB of pseudo-random bytes through the echo path arrive intact, and /metrics counts
/// the bytes each way, the connection and its duration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_8_mib_arrive_intact_and_are_counted() {
    const LEN: usize = 8 * MIB;
    let s1 = Backend::named("s1").spawn();
    let node = node_for(&[&s1]);
    within(60, "8 MiB stream", async {
        let data = Arc::new(pseudo_random_bytes(LEN, 0xba11a57));
        let c = open(src_ip(44, 0), node.addr("fe-s1", 0))
            .await
            .expect("connect");
        assert_eq!(c.server, "s1");
        let t0 = Instant::now();
        let (mut rd, mut wr) = c.stream.into_split();
        let d = data.clone();
        let writer = tokio::spawn(async move {
            for chunk in d.chunks(61 * KIB) {
                wr.write_all(chunk).await?;
            }
            wr.shutdown().await?;
            Ok::<_, std::io::Error>(wr)
        });
        let mut back = Vec::with_capacity(LEN);
        tokio::time::timeout(
            Duration::from_secs(30),
            tokio::io::AsyncReadExt::read_to_end(&mut rd, &mut back),
        )
        .await
        .expect("8 MiB echo did not finish within 30 s")
        .expect("read");
        let _wr = writer.await.unwrap().expect("write");
        eprintln!("8 MiB echoed through ballast in {:?}", t0.elapsed());
        assert_eq!(back.len(), LEN, "echoed length");
        assert_eq!(fnv1a(&back), fnv1a(&data), "checksum of the echoed stream");
        drop((rd, _wr));

        let fe = [("frontend", "fe-s1")];
        let short = Duration::from_secs(3);
        node.wait_metric("ballast_frontend_connections_active", &fe, short, |v| {
            v == 0.0
        })
        .await;
        let c2s = [("frontend", "fe-s1"), ("direction", "client_to_server")];
        let s2c = [("frontend", "fe-s1"), ("direction", "server_to_client")];
        node.wait_metric("ballast_bytes_total", &c2s, short, |v| v == LEN as f64)
            .await;
        // The echo plus the greeting line "s1\n".
        node.wait_metric("ballast_bytes_total", &s2c, short, |v| {
            v == (LEN + 3) as f64
        })
        .await;
        node.wait_metric("ballast_frontend_connections_total", &fe, short, |v| {
            v == 1.0
        })
        .await;
        node.wait_metric(
            "ballast_connection_duration_seconds_count",
            &fe,
            short,
            |v| v == 1.0,
        )
        .await;
        let sv = [("backend", "be-s1"), ("server", "s1")];
        node.wait_metric("ballast_server_connections_total", &sv, short, |v| v == 1.0)
            .await;

        // One log line per connection with its fields (RUST_LOG=info).
        let client = format!("client={}:", src_ip(44, 0));
        let log = node.log();
        let line = log
            .lines()
            .find(|l| l.contains("connection closed") && l.contains(&client))
            .unwrap_or_else(|| panic!("no `connection closed` line for {client} in:\n{log}"));
        for field in [
            "frontend=fe-s1",
            "server=",
            "duration_ms=",
            &format!("bytes_in={LEN}"),
            &format!("bytes_out={}", LEN + 3),
            "reason=",
        ] {
            assert!(line.contains(field), "log line lacks {field:?}: {line}");
        }
    })
    .await;
}

/// 16 connections each streaming 1 MiB both ways at once: every stream intact, none
/// mixed up with another (each carries its own seed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_streams_stay_intact_and_separate() {
    const STREAMS: usize = 16;
    let s1 = Backend::named("s1").spawn();
    let node = node_for(&[&s1]);
    let addr = node.addr("fe-s1", 0);
    within(60, "parallel streams", async {
        let mut tasks = Vec::new();
        for i in 0..STREAMS {
            tasks.push(tokio::spawn(async move {
                let data = pseudo_random_bytes(MIB, 1000 + i as u64);
                let c = open(src_ip(46, i), addr).await?;
                let (mut rd, mut wr) = c.stream.into_split();
                let d = data.clone();
                let writer = tokio::spawn(async move {
                    for chunk in d.chunks(16 * KIB + 7) {
                        wr.write_all(chunk).await?;
                    }
                    wr.shutdown().await?;
                    Ok::<_, std::io::Error>(wr)
                });
                let mut back = Vec::new();
                tokio::io::AsyncReadExt::read_to_end(&mut rd, &mut back).await?;
                writer.await.expect("writer task")?;
                Ok::<_, std::io::Error>((i, fnv1a(&back) == fnv1a(&data) && back.len() == MIB))
            }));
        }
        for t in tasks {
            let (i, intact) = t.await.unwrap().expect("stream");
            assert!(intact, "stream {i} came back altered");
        }
    })
    .await;
}
