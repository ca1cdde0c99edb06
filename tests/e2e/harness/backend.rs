//! `Backend`: a real TCP server in the test process, standing in for an application server.
//!
//! It runs on its own thread with its own single-threaded tokio runtime, so it keeps serving
//! whatever the test's runtime is doing (and survives a test runtime blocked in a sync call).
//!
//! ```text
//!   accept ─► write "<name>\n" ─► mode:
//!     Echo            echo every byte; on EOF from the peer shut down our write side
//!     SendThenShutdown(d)  write d, shut down our write side, then read the peer to EOF
//!     ReplyAfterEof(d)     read the peer to EOF (no echo), then write d and shut down
//! ```
//!
//! `kill()` stops accepting (the port then refuses connections) and resets every open
//! connection (SO_LINGER 0), which is what a crashed server looks like to the balancer.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// What the backend does with a connection after the greeting line.
#[derive(Clone)]
pub enum Mode {
    Echo,
    SendThenShutdown(Arc<Vec<u8>>),
    ReplyAfterEof(Arc<Vec<u8>>),
}

/// What one finished connection saw, as the server side.
#[derive(Clone, Debug)]
pub struct ConnRecord {
    /// Payload bytes received from the peer (ballast).
    pub received: u64,
    /// Bytes sent after the greeting line.
    pub sent: u64,
    /// The peer shut down its write side (we read EOF) before we finished.
    pub saw_eof: bool,
}

#[derive(Default)]
struct Stats {
    accepted: AtomicUsize,
    active: AtomicUsize,
    carried_data: AtomicUsize,
    errors: AtomicUsize,
    done: Mutex<Vec<ConnRecord>>,
}

pub struct BackendBuilder {
    name: String,
    mode: Mode,
    addr: Option<SocketAddr>,
}

pub struct Backend {
    name: String,
    addr: SocketAddr,
    stats: Arc<Stats>,
    kill: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    /// A greeting + echo server called `name` (the greeting is `name` followed by "\n").
    pub fn named(name: &str) -> BackendBuilder {
        BackendBuilder {
            name: name.to_string(),
            mode: Mode::Echo,
            addr: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted since start (health probes included).
    pub fn accepted(&self) -> usize {
        self.stats.accepted.load(Ordering::SeqCst)
    }

    /// Connections that received at least one byte from the peer. Health probes (connect
    /// and close) never count here, proxied client connections that sent data do.
    pub fn carried_data(&self) -> usize {
        self.stats.carried_data.load(Ordering::SeqCst)
    }

    /// Connections that ended with an I/O error (e.g. reset by the peer).
    pub fn errors(&self) -> usize {
        self.stats.errors.load(Ordering::SeqCst)
    }

    /// Connections currently open on the server side.
    pub fn active(&self) -> usize {
        self.stats.active.load(Ordering::SeqCst)
    }

    /// Records of the connections that carried data and ended normally, in the order
    /// they ended (health probes, which send nothing, are left out).
    pub fn records(&self) -> Vec<ConnRecord> {
        let done = self.stats.done.lock().unwrap();
        done.iter().filter(|r| r.received > 0).cloned().collect()
    }

    /// Simulates a crash: stop accepting (the port refuses from now on) and reset every
    /// open connection. Returns once the server thread has finished.
    pub fn kill(&mut self) {
        let _ = self.kill.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

impl BackendBuilder {
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Bind this exact address (e.g. to bring a server back on a killed server's port).
    pub fn at(mut self, addr: SocketAddr) -> Self {
        self.addr = Some(addr);
        self
    }

    pub fn spawn(self) -> Backend {
        let std_listener = match self.addr {
            None => StdListener::bind("127.0.0.1:0").expect("bind backend on port 0"),
            Some(addr) => {
                // SO_REUSEADDR so that a port with connections in TIME_WAIT can be reused.
                let sock = socket2::Socket::new(
                    socket2::Domain::IPV4,
                    socket2::Type::STREAM,
                    Some(socket2::Protocol::TCP),
                )
                .expect("socket");
                sock.set_reuse_address(true).expect("SO_REUSEADDR");
                sock.bind(&addr.into())
                    .unwrap_or_else(|e| panic!("bind backend at {addr}: {e}"));
                sock.listen(1024).expect("listen");
                sock.into()
            }
        };
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("local_addr");
        let stats = Arc::new(Stats::default());
        let (kill, kill_rx) = watch::channel(false);
        let (name, mode, st) = (self.name.clone(), self.mode, stats.clone());
        let thread = std::thread::Builder::new()
            .name(format!("backend-{}", self.name))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("backend runtime");
                rt.block_on(serve(std_listener, name, mode, st, kill_rx));
            })
            .expect("spawn backend thread");
        Backend {
            name: self.name,
            addr,
            stats,
            kill,
            thread: Some(thread),
        }
    }
}

async fn serve(
    std_listener: StdListener,
    name: String,
    mode: Mode,
    stats: Arc<Stats>,
    mut kill: watch::Receiver<bool>,
) {
    let listener = TcpListener::from_std(std_listener).expect("tokio listener");
    let greeting: Arc<[u8]> = format!("{name}\n").into_bytes().into();
    let mut conns = JoinSet::new();
    let conn_kill = kill.clone();
    loop {
        tokio::select! {
            _ = kill.wait_for(|k| *k) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                stats.accepted.fetch_add(1, Ordering::SeqCst);
                stats.active.fetch_add(1, Ordering::SeqCst);
                conns.spawn(connection(
                    stream,
                    greeting.clone(),
                    mode.clone(),
                    stats.clone(),
                    conn_kill.clone(),
                ));
            }
        }
    }
    // Killed: the listener goes away first (the port refuses from now on), then every
    // connection task resets its socket; give them a bounded time to do so.
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
}

async fn connection(
    mut stream: TcpStream,
    greeting: Arc<[u8]>,
    mode: Mode,
    stats: Arc<Stats>,
    mut kill: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let outcome = tokio::select! {
        r = run_mode(&mut stream, &greeting, &mode, &stats) => Some(r),
        _ = kill.wait_for(|k| *k) => None,
    };
    match outcome {
        Some(Ok(rec)) => stats.done.lock().unwrap().push(rec),
        Some(Err(_)) => {
            stats.errors.fetch_add(1, Ordering::SeqCst);
        }
        None => {
            // Crash simulation: RST instead of FIN.
            let _ = stream.set_zero_linger();
        }
    }
    drop(stream);
    stats.active.fetch_sub(1, Ordering::SeqCst);
}

async fn run_mode(
    stream: &mut TcpStream,
    greeting: &[u8],
    mode: &Mode,
    stats: &Stats,
) -> std::io::Result<ConnRecord> {
    let mut rec = ConnRecord {
        received: 0,
        sent: 0,
        saw_eof: false,
    };
    stream.write_all(greeting).await?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut first_byte = true;
    let mut note = |n: usize| {
        if n > 0 && first_byte {
            first_byte = false;
            stats.carried_data.fetch_add(1, Ordering::SeqCst);
        }
    };
    match mode {
        Mode::Echo => {
            loop {
                let n = stream.read(&mut buf).await?;
                note(n);
                if n == 0 {
                    rec.saw_eof = true;
                    break;
                }
                rec.received += n as u64;
                stream.write_all(&buf[..n]).await?;
                rec.sent += n as u64;
            }
            stream.shutdown().await?;
        }
        Mode::SendThenShutdown(data) => {
            stream.write_all(data).await?;
            rec.sent = data.len() as u64;
            stream.shutdown().await?;
            loop {
                let n = stream.read(&mut buf).await?;
                note(n);
                if n == 0 {
                    rec.saw_eof = true;
                    break;
                }
                rec.received += n as u64;
            }
        }
        Mode::ReplyAfterEof(data) => {
            loop {
                let n = stream.read(&mut buf).await?;
                note(n);
                if n == 0 {
                    rec.saw_eof = true;
                    break;
                }
                rec.received += n as u64;
            }
            stream.write_all(data).await?;
            rec.sent = data.len() as u64;
            stream.shutdown().await?;
        }
    }
    Ok(rec)
}
