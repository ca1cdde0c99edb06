//! Tests of the harness itself, without ballast: clients talk to a `Backend` directly.
//! If these fail, the end-to-end failures say nothing about ballast.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::backend::Mode;
use super::{open, read_to_eof, src_ip, Backend};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_greets_echoes_and_half_closes() {
    let s = Backend::named("self1").spawn();
    let mut c = open(src_ip(250, 0), s.addr()).await.expect("connect");
    assert_eq!(c.server, "self1");
    c.echo(b"hello\n").await.expect("echo");
    c.stream.write_all(b"tail").await.unwrap();
    c.stream.shutdown().await.unwrap();
    let rest = read_to_eof(&mut c.stream, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(rest, b"tail");
    // The client's source address is the one we asked for.
    assert_eq!(
        c.stream.local_addr().unwrap().ip().to_string(),
        src_ip(250, 0).to_string()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while s.records().is_empty() {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = &s.records()[0];
    assert!(r.saw_eof);
    assert_eq!(r.received, 10);
    assert_eq!((s.accepted(), s.carried_data()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backend_resets_and_refuses() {
    let mut s = Backend::named("self2").spawn();
    let addr = s.addr();
    let mut c = open(src_ip(250, 1), addr).await.expect("connect");
    s.kill();
    let r = read_to_eof(&mut c.stream, Duration::from_secs(5)).await;
    let e = r.expect_err("a killed backend resets its connections");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
    let refused = open(src_ip(250, 1), addr).await;
    assert!(refused.is_err(), "a killed backend refuses new connections");
    // It can be brought back on the same address.
    let again = Backend::named("self2b").at(addr).spawn();
    let c = open(src_ip(250, 2), addr).await.expect("connect again");
    assert_eq!(c.server, "self2b");
    drop(again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_modes_send_then_shutdown_and_reply_after_eof() {
    let first = Backend::named("m1")
        .mode(Mode::SendThenShutdown(vec![7u8; 1000].into()))
        .spawn();
    let mut c = open(src_ip(250, 3), first.addr()).await.unwrap();
    let got = read_to_eof(&mut c.stream, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(got, vec![7u8; 1000]);
    c.stream.write_all(b"after").await.unwrap();
    c.stream.shutdown().await.unwrap();

    let late = Backend::named("m2")
        .mode(Mode::ReplyAfterEof(b"bye".to_vec().into()))
        .spawn();
    let mut c = open(src_ip(250, 4), late.addr()).await.unwrap();
    c.stream.write_all(b"x").await.unwrap();
    c.stream.shutdown().await.unwrap();
    let got = read_to_eof(&mut c.stream, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(got, b"bye");
}
