//! A plane frozen for a hand-over and resumed — by another plane (as the new process
//! of a live upgrade does) or by itself (a hand-over called off) — loses, repeats and
//! reorders no byte, whatever was in flight: bulk streams in both directions are
//! running through the splice pipes and the backpressure buffers when it freezes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use ballast_dataplane::metrics::Metrics;
use ballast_dataplane::proxy::DataPlane;
use ballast_model::model::ClusterModel;

/// An echo server on loopback: every connection gets its bytes back.
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// A frontend on a port free now, in front of `server`.
fn model(server: SocketAddr) -> ClusterModel {
    let free = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    serde_json::from_value(serde_json::json!({
        "frontends": {"fe": {"name": "fe", "bind": [free.to_string()], "backend": "be"}},
        "backends": {"be": {
            "name": "be",
            "stick": {"on": "src", "size": 1000, "expire": "30m"},
            "servers": [{"name": "s1", "addr": server.to_string()}]
        }}
    }))
    .expect("model")
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

/// A client streaming through the proxy until `stop`, then closing its side, while a
/// reader thread collects the echo to the end. The writer yields what it sent, the
/// reader what came back: equal when no byte was lost, repeated or reordered.
struct Stream {
    stop: Arc<std::sync::atomic::AtomicBool>,
    write: JoinHandle<Vec<u8>>,
    read: JoinHandle<Vec<u8>>,
}

impl Stream {
    fn start(proxy: SocketAddr, seed: u32) -> Stream {
        let conn = TcpStream::connect(proxy).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut writer = conn.try_clone().unwrap();
        let mut reader = conn;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let write = std::thread::spawn(move || {
            // 32 KiB every 6 ms (~5 MB/s) until told: the freeze finds it mid-way,
            // whatever the machine's pace.
            let mut sent = Vec::new();
            let mut round = 0;
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                let chunk = pattern(32 * 1024, seed.wrapping_mul(7919).wrapping_add(round));
                writer.write_all(&chunk).unwrap();
                sent.extend_from_slice(&chunk);
                round += 1;
                std::thread::sleep(Duration::from_millis(6));
            }
            writer.shutdown(std::net::Shutdown::Write).unwrap();
            sent
        });
        let read = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 7_000];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            got
        });
        Stream { stop, write, read }
    }

    /// Stops the writer and checks the echo, byte for byte.
    async fn finish(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (sent, got) = tokio::task::spawn_blocking(move || {
            (self.write.join().unwrap(), self.read.join().unwrap())
        })
        .await
        .unwrap();
        assert!(!sent.is_empty());
        assert!(
            got == sent,
            "echo differs: {} of {} bytes back",
            got.len(),
            sent.len()
        );
    }
}

fn started_plane(model: &ClusterModel) -> Arc<DataPlane> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let plane = DataPlane::new(Arc::new(Metrics::new()), None, None);
    let applied = plane.apply_model(model);
    assert!(applied.errors.is_empty(), "{:?}", applied.errors);
    plane
}

fn echo_once(proxy: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut conn = TcpStream::connect(proxy).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(payload).unwrap();
    let mut back = vec![0; payload.len()];
    conn.read_exact(&mut back).unwrap();
    back
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_plane_resumed_by_another_plane_loses_no_byte() {
    let model = model(echo_server());
    let old = started_plane(&model);
    let proxy = old.local_addrs()[0];
    let back = tokio::task::spawn_blocking(move || echo_once(proxy, b"before"))
        .await
        .unwrap();
    assert_eq!(back, b"before");
    let streams: Vec<_> = (0..6).map(|i| Stream::start(proxy, i)).collect();
    tokio::time::sleep(Duration::from_millis(150)).await;

    let handover = old.freeze(Duration::from_secs(2)).await.unwrap();
    assert_eq!(handover.stragglers, 0);
    assert_eq!(handover.connections.len(), 6, "every stream parked");
    assert_eq!(handover.listener_sockets(), handover.listeners[0].1.len());
    assert!(
        handover.state.sticks[0].entries.len() == 1,
        "the client's entry"
    );

    // The new plane: listeners first, then the model, the tables, the connections.
    let new = DataPlane::new(Arc::new(Metrics::new()), None, None);
    new.offer_listeners(handover.listeners);
    assert!(new.apply_model(&model).errors.is_empty());
    assert_eq!(
        new.local_addrs(),
        vec![proxy],
        "the same port, not a new bind"
    );
    new.import_state(&handover.state);
    // Counters continue where the old plane left them (nothing has moved here yet).
    let sorted = |mut c: Vec<ballast_dataplane::proxy::handover::CounterCarry>| {
        c.sort_by(|a, b| format!("{:?}{}", a.of, a.name).cmp(&format!("{:?}{}", b.of, b.name)));
        c
    };
    assert!(!handover.state.counters.is_empty());
    assert_eq!(
        sorted(new.export_state().counters),
        sorted(handover.state.counters.clone())
    );
    let (go, ready) = tokio::sync::watch::channel(false);
    let adopted = new.adopt(handover.connections, handover.waiting, ready);
    assert_eq!(adopted.connections, 6);
    // Paused: nothing moves until `go`.
    tokio::time::sleep(Duration::from_millis(100)).await;
    go.send_replace(true);

    for stream in streams {
        stream.finish().await;
    }
    // New connections reach the new plane through the same listening sockets.
    let back = tokio::task::spawn_blocking(move || echo_once(proxy, b"after the hand-over"))
        .await
        .unwrap();
    assert_eq!(back, b"after the hand-over");
    let view = new.view();
    let server = view.backends["be"].server("s1").unwrap();
    assert!(server.is_up());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_called_off_resumes_every_connection_in_place() {
    let model = model(echo_server());
    let plane = started_plane(&model);
    let proxy = plane.local_addrs()[0];
    let streams: Vec<_> = (0..4).map(|i| Stream::start(proxy, 100 + i)).collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let handover = plane.freeze(Duration::from_secs(2)).await.unwrap();
    assert_eq!(handover.connections.len(), 4);
    // Frozen: a second freeze is refused, a new client waits in the accept queue.
    assert!(plane.freeze(Duration::from_secs(1)).await.is_err());
    let waiting = std::thread::spawn(move || echo_once(proxy, b"queued while frozen"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let adopted = plane.thaw(handover);
    assert_eq!(adopted.connections, 4);
    for stream in streams {
        stream.finish().await;
    }
    let back = tokio::task::spawn_blocking(move || waiting.join().unwrap())
        .await
        .unwrap();
    assert_eq!(back, b"queued while frozen");
}

/// A server that reads nothing for `wait`, then everything until EOF: what it got.
fn late_reader(wait: Duration) -> (SocketAddr, std::sync::mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        std::thread::sleep(wait);
        let mut got = Vec::new();
        let _ = conn.read_to_end(&mut got);
        let _ = tx.send(got);
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_stuck_in_the_relay_are_carried_across() {
    // The server does not read: the kernel's buffers fill, then the relay holds what
    // it has read and cannot write (in a splice pipe or its buffer).
    let (server, received) = late_reader(Duration::from_millis(1_500));
    let model = model(server);
    let old = started_plane(&model);
    let proxy = old.local_addrs()[0];
    let data = pattern(16_000_000, 9);
    let expected = data.clone();
    let client = std::thread::spawn(move || {
        let mut conn = TcpStream::connect(proxy).unwrap();
        conn.set_write_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        conn.write_all(&data).unwrap();
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        conn
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let handover = old.freeze(Duration::from_secs(2)).await.unwrap();
    assert_eq!(handover.connections.len(), 1);
    assert!(
        handover.bytes_in_flight() > 0,
        "the relay held bytes it had read and not written"
    );
    let new = DataPlane::new(Arc::new(Metrics::new()), None, None);
    new.offer_listeners(handover.listeners);
    assert!(new.apply_model(&model).errors.is_empty());
    let (_go, ready) = tokio::sync::watch::channel(true);
    new.adopt(handover.connections, handover.waiting, ready);
    let got = tokio::task::spawn_blocking(move || received.recv_timeout(Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("the server read to the end");
    assert!(
        got == expected,
        "the server got {} of {} bytes, or not in order",
        got.len(),
        expected.len()
    );
    drop(client.join().unwrap());
}

/// A client waiting for a `maxconn` slot keeps its place: handed over as waiting, it is
/// served by the new plane as soon as the slot frees there, with the bytes it sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_waiting_in_the_queue_keeps_its_place() {
    let server = echo_server();
    let free = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let model: ClusterModel = serde_json::from_value(serde_json::json!({
        "frontends": {"fe": {"name": "fe", "bind": [free.to_string()], "backend": "be"}},
        "backends": {"be": {
            "name": "be", "timeout_queue": "30s",
            "servers": [{"name": "s1", "addr": server.to_string(), "maxconn": 1}]
        }}
    }))
    .expect("model");
    let old = started_plane(&model);
    let proxy = old.local_addrs()[0];
    let holder = std::thread::spawn(move || {
        let mut conn = TcpStream::connect(proxy).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        conn.write_all(b"holder").unwrap();
        let mut back = [0u8; 6];
        conn.read_exact(&mut back).unwrap();
        conn
    });
    let holder = tokio::task::spawn_blocking(move || holder.join().unwrap())
        .await
        .unwrap();
    let queued = std::thread::spawn(move || {
        let mut conn = TcpStream::connect(proxy).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        conn.write_all(b"queued").unwrap();
        let mut back = [0u8; 6];
        conn.read_exact(&mut back).map(|()| back)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let handover = old.freeze(Duration::from_secs(2)).await.unwrap();
    assert_eq!(handover.connections.len(), 1, "the holder");
    assert_eq!(handover.waiting.len(), 1, "the queued client");
    // Its bytes are either read already (and carried) or still in the kernel: either
    // way they reach the server once, which the echo below checks.
    assert!(matches!(
        handover.waiting[0].0.first.as_slice(),
        b"queued" | b""
    ));
    let new = DataPlane::new(Arc::new(Metrics::new()), None, None);
    new.offer_listeners(handover.listeners);
    assert!(new.apply_model(&model).errors.is_empty());
    let (_go, ready) = tokio::sync::watch::channel(true);
    let adopted = new.adopt(handover.connections, handover.waiting, ready);
    assert_eq!((adopted.connections, adopted.waiting), (1, 1));
    // Still queued: the holder's slot is taken in the new plane too.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!queued.is_finished(), "served past maxconn");
    drop(holder);
    let back = tokio::task::spawn_blocking(move || queued.join().unwrap())
        .await
        .unwrap()
        .expect("the queued client is served once the slot frees");
    assert_eq!(&back, b"queued");
}
