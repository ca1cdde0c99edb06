//! Moving bytes between the client and the server socket of one connection.
//!
//! Both directions run in the connection's own task over shared `&TcpStream`s
//! (readiness + non-blocking calls), which lets one loop watch both directions and the
//! idle deadline, and keeps each socket owned by the connection so that closing
//! decisions (FIN or RST) are made in one place.
//!
//! - EOF from one side is passed on as a FIN (`shutdown(Write)`) to the other, and the
//!   other direction keeps flowing: half-close works both ways. The second FIN is
//!   delivered by the caller closing both sockets once the relay has ended.
//! - An error on either side (reset, broken pipe) ends the relay; the caller then closes
//!   both sockets with SO_LINGER 0 so the other peer sees a reset too.
//!
//! Memory: a connection owns no buffer while its bytes move. A read lands in the worker
//! thread's scratch buffer and is written on at once; only what the receiver cannot take
//! yet (backpressure) is copied into a per-connection buffer, which is freed as soon as
//! it drains. An idle connection costs its two sockets and its task, whatever it carried
//! before.
//!
//! Bulk (Linux): once a direction fills the scratch buffer in one read, it switches to
//! splice(2) through a pipe (socket → pipe → socket, no copy into user space) until its
//! reads get small again. Pipes come from a per-thread pool (no lock) and go back as soon
//! as they are empty, so an idle connection holds no pipe and no extra descriptors.
//! Small messages keep the copy path, which costs the same two system calls and less.
//! Other systems use the copy path only.

use std::cell::RefCell;
use std::io::{self, Read};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both directions finished with a FIN; `first` closed first.
    Closed { first: Side },
    /// `by` reset the connection (or failed hard); the other side must be reset.
    Reset { by: Side },
    /// Neither side sent anything within its idle timeout.
    IdleTimeout,
}

impl End {
    pub fn as_str(self) -> &'static str {
        match self {
            End::Closed {
                first: Side::Client,
            } => "client_closed",
            End::Closed {
                first: Side::Server,
            } => "server_closed",
            End::Reset { by: Side::Client } => "client_reset",
            End::Reset { by: Side::Server } => "server_reset",
            End::IdleTimeout => "idle_timeout",
        }
    }
}

/// One direction's accounting, shared with the relay loop.
#[derive(Default)]
pub struct Flow {
    pub bytes: AtomicU64,
    /// Milliseconds since the relay started when this direction last read data.
    last_read_ms: AtomicU64,
}

pub struct Idle {
    /// How long the client may stay silent.
    pub client: Duration,
    /// How long the server may stay silent.
    pub server: Duration,
}

#[derive(Debug)]
pub enum PumpError {
    Read(io::Error),
    Write(io::Error),
}

/// What a relay holds beyond its two sockets, kept by the connection rather than in
/// the relay's future: per direction the bytes read but not yet written, and which
/// sides have sent their FIN. The relay future may be dropped at any await — a live
/// upgrade freezes the plane that way — and this still says exactly where each byte
/// stream stands, so the connection can be resumed, here or in another process,
/// without losing, repeating or reordering a byte.
#[derive(Default)]
pub struct RelayState {
    /// Client → server.
    pub up: InFlight,
    /// Server → client.
    pub down: InFlight,
    /// The client has sent its FIN (and it has been passed on to the server).
    pub client_fin: AtomicBool,
    /// The server has sent its FIN (and it has been passed on to the client).
    pub server_fin: AtomicBool,
}

/// One direction's bytes read from one socket and not yet written to the other: a
/// user-space buffer on the copy path, a loaded pipe on the splice path (never both).
#[derive(Default)]
pub struct InFlight {
    pending: Vec<u8>,
    #[cfg(target_os = "linux")]
    pipe: Option<splice::Loaded>,
}

impl InFlight {
    /// Bytes to write before anything new is read (a resumed connection's).
    pub fn from_bytes(pending: Vec<u8>) -> Self {
        InFlight {
            pending,
            ..InFlight::default()
        }
    }

    /// Everything still to be written, in order, leaving this empty.
    pub fn take_bytes(&mut self) -> io::Result<Vec<u8>> {
        let mut bytes = std::mem::take(&mut self.pending);
        #[cfg(target_os = "linux")]
        if let Some(loaded) = self.pipe.take() {
            bytes.extend_from_slice(&loaded.drain()?);
        }
        Ok(bytes)
    }
}

/// Relays until both directions are closed, one side fails, or both sides have been
/// silent past their idle timeouts (a connection that streams one way only is not idle).
/// Starts from `state` (bytes in flight first, closed directions stay closed); when the
/// future is dropped before it ends, `state` holds what a resumed relay needs.
pub async fn relay(
    client: &TcpStream,
    server: &TcpStream,
    idle: &Idle,
    client_to_server: (&Flow, &Counter),
    server_to_client: (&Flow, &Counter),
    state: &mut RelayState,
) -> End {
    let start = Instant::now();
    let RelayState {
        up: up_in_flight,
        down: down_in_flight,
        client_fin,
        server_fin,
    } = state;
    let (mut up_open, mut down_open) = (
        !client_fin.load(Ordering::Relaxed),
        !server_fin.load(Ordering::Relaxed),
    );
    let up = pump(
        client,
        server,
        client_to_server.0,
        client_to_server.1,
        start,
        (client_fin, server_fin),
        up_in_flight,
    );
    let down = pump(
        server,
        client,
        server_to_client.0,
        server_to_client.1,
        start,
        (server_fin, client_fin),
        down_in_flight,
    );
    tokio::pin!(up, down);
    let mut first_fin = None;
    let deadline = || {
        let last = |flow: &Flow| Duration::from_millis(flow.last_read_ms.load(Ordering::Relaxed));
        start + (last(client_to_server.0) + idle.client).max(last(server_to_client.0) + idle.server)
    };
    // One timer for the connection's life: activity only moves the deadline later, so
    // the timer is re-armed when it fires early instead of on every event.
    let idle_timer = tokio::time::sleep_until(deadline());
    tokio::pin!(idle_timer);
    loop {
        tokio::select! {
            result = &mut up, if up_open => match result {
                Ok(()) => {
                    up_open = false;
                    first_fin.get_or_insert(Side::Client);
                }
                Err(PumpError::Read(e)) => return failed(Side::Client, &e),
                Err(PumpError::Write(e)) => return failed(Side::Server, &e),
            },
            result = &mut down, if down_open => match result {
                Ok(()) => {
                    down_open = false;
                    first_fin.get_or_insert(Side::Server);
                }
                Err(PumpError::Read(e)) => return failed(Side::Server, &e),
                Err(PumpError::Write(e)) => return failed(Side::Client, &e),
            },
            () = &mut idle_timer => {
                let due = deadline();
                if Instant::now() >= due {
                    return End::IdleTimeout;
                }
                idle_timer.as_mut().reset(due);
            }
        }
        if !up_open && !down_open {
            return End::Closed {
                first: first_fin.unwrap_or(Side::Client),
            };
        }
    }
}

fn failed(by: Side, error: &io::Error) -> End {
    tracing::debug!(side = ?by, error = %error, "relay ended by a socket error");
    End::Reset { by }
}

/// Size of each worker thread's scratch buffer: the most one read moves on the copy path.
const SCRATCH_SIZE: usize = 64 * 1024;

thread_local! {
    /// Where reads land on the copy path. Borrowed only between a read and the write
    /// that follows it, never across an `.await`, so a task moving between worker
    /// threads never holds it.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_SIZE].into_boxed_slice());
}

/// What one read step did.
enum Step {
    /// `n > 0` bytes were read (and counted); some may still wait in `pending`.
    Moved(usize),
    /// The peer sent a FIN.
    Eof,
    /// Nothing to read after all (a spurious readiness).
    WouldBlock,
}

async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    flow: &Flow,
    counter: &Counter,
    start: Instant,
    fins: (&AtomicBool, &AtomicBool),
    in_flight: &mut InFlight,
) -> Result<(), PumpError> {
    let account = |n: usize| {
        flow.bytes.fetch_add(n as u64, Ordering::Relaxed);
        flow.last_read_ms
            .store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        counter.inc_by(n as u64);
    };
    // A resumed connection's bytes go first.
    if !in_flight.pending.is_empty() {
        write_pending(to, &mut in_flight.pending)
            .await
            .map_err(PumpError::Write)?;
        in_flight.pending = Vec::new();
    }
    #[cfg(target_os = "linux")]
    let mut bulk = false;
    loop {
        from.readable().await.map_err(PumpError::Read)?;
        #[cfg(target_os = "linux")]
        if bulk {
            match splice::step(from, to, &account, &mut in_flight.pipe).await? {
                splice::Step::Moved(n) => {
                    bulk = n >= splice::STAY_BULK;
                    continue;
                }
                splice::Step::Eof => {
                    finish(to, fins);
                    return Ok(());
                }
                splice::Step::WouldBlock => continue,
                // No pipe (out of descriptors): copy instead.
                splice::Step::Unavailable => bulk = false,
            }
        }
        match copy_step(from, to, &mut in_flight.pending, &account)? {
            Step::Moved(n) => {
                #[cfg(target_os = "linux")]
                {
                    bulk = n == SCRATCH_SIZE;
                }
                #[cfg(not(target_os = "linux"))]
                let _ = n;
                if !in_flight.pending.is_empty() {
                    write_pending(to, &mut in_flight.pending)
                        .await
                        .map_err(PumpError::Write)?;
                    // Give the memory back: this connection may now idle for hours.
                    in_flight.pending = Vec::new();
                }
            }
            Step::Eof => {
                finish(to, fins);
                return Ok(());
            }
            Step::WouldBlock => {}
        }
    }
}

/// `from` sent its FIN: pass it on (the peer may already be gone, which the other
/// direction reports). When `to` has sent its FIN already, the relay is over and the
/// caller's close sends this FIN: one system call less per connection.
fn finish(to: &TcpStream, (from_fin, to_fin): (&AtomicBool, &AtomicBool)) {
    from_fin.store(true, Ordering::Relaxed);
    if !to_fin.load(Ordering::Relaxed) {
        let _ = socket2::SockRef::from(to).shutdown(Shutdown::Write);
    }
}

/// One read into the thread's scratch buffer and as much of a write as `to` takes now;
/// the rest is copied into `pending`.
fn copy_step(
    from: &TcpStream,
    to: &TcpStream,
    pending: &mut Vec<u8>,
    account: &(dyn Fn(usize) + Sync),
) -> Result<Step, PumpError> {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let n = match read_counted(from, &mut scratch, account)? {
            Step::Moved(n) => n,
            nothing => return Ok(nothing),
        };
        let mut written = 0;
        while written < n {
            match to.try_write(&scratch[written..n]) {
                Ok(0) => return Err(PumpError::Write(io::ErrorKind::WriteZero.into())),
                Ok(w) => written += w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(PumpError::Write(e)),
            }
        }
        pending.extend_from_slice(&scratch[written..n]);
        Ok(Step::Moved(n))
    })
}

/// What a client sent with its connection, read before its socket joins the poller.
///
/// A client usually sends its first request right behind its handshake, so the bytes
/// are there when the connection is accepted. Reading them now, directly (tokio would
/// refuse: it does not yet know the socket is readable), lets them leave with the
/// server's connect ([`send_early`]) instead of one round through the poller later,
/// as HAProxy does. When the client has sent nothing yet (a protocol where the server
/// speaks first), this costs one read that finds nothing; a FIN stays readable and is
/// read again by the relay. An error (a reset) is returned: it has been consumed here,
/// and later reads would report a plain end of stream.
pub fn read_first(client: &std::net::TcpStream) -> io::Result<Vec<u8>> {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        match (&*client).read(&mut scratch) {
            Ok(n) => Ok(scratch[..n].to_vec()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(Vec::new())
            }
            Err(e) => Err(e),
        }
    })
}

/// Sends `bytes` (client bytes no server has taken yet) to a server whose connect may
/// still be in progress, without waiting for it to be reported writable. The handshake
/// over loopback or a fast LAN usually completes inside connect(), so a send that
/// succeeds saves the round through the poller that waiting for "connected" costs, and
/// proves the connect did.
///
/// `Some(n)`: the server took the first `n` bytes, so it is connected. `None`: nothing
/// to send, or the server is still connecting; the caller waits for the connect as
/// usual. An error means the connect failed (refused, unreachable, reset).
pub fn send_early(server: &TcpStream, bytes: &[u8]) -> io::Result<Option<usize>> {
    if bytes.is_empty() {
        return Ok(None);
    }
    // Directly, not through tokio: it holds a socket writable only once the poller has
    // said so.
    match socket2::SockRef::from(server).send_with_flags(bytes, libc::MSG_NOSIGNAL) {
        Ok(n) => Ok(Some(n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// One read into `buf`; what it moved is counted.
fn read_counted(
    from: &TcpStream,
    buf: &mut [u8],
    account: &(dyn Fn(usize) + Sync),
) -> Result<Step, PumpError> {
    match read_draining(from, buf) {
        Ok(0) => Ok(Step::Eof),
        Ok(n) => {
            account(n);
            Ok(Step::Moved(n))
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Step::WouldBlock),
        Err(e) => Err(PumpError::Read(e)),
    }
}

/// A read that also tells tokio the socket is drained when the kernel returned less
/// than asked for (TCP returns short only when its receive queue is empty), so that the
/// next wait goes straight to the poller instead of first making a read that would
/// fail with EAGAIN: one system call less per message, as HAProxy does.
///
/// Safe against lost wakeups: tokio clears readiness only if no newer event arrived
/// since the read began (its readiness carries a tick), never clears "read closed", and
/// data arriving later raises a new edge.
fn read_draining(from: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let mut short = 0;
    match from.try_io(Interest::READABLE, || {
        let n = (&*socket2::SockRef::from(from)).read(buf)?;
        if n > 0 && n < buf.len() {
            short = n;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && short > 0 => Ok(short),
        other => other,
    }
}

pub(super) async fn write_all(to: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        to.writable().await?;
        match to.try_write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes all of `pending`, removing each part from it as the receiver takes it: a
/// freeze that drops this future mid-way leaves exactly the unwritten rest.
async fn write_pending(to: &TcpStream, pending: &mut Vec<u8>) -> io::Result<()> {
    while !pending.is_empty() {
        to.writable().await?;
        match to.try_write(pending) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                pending.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Zero-copy relay of bulk data through a pipe: `splice(from → pipe)`, then
/// `splice(pipe → to)` until the pipe is empty.
#[cfg(target_os = "linux")]
mod splice {
    use std::cell::RefCell;
    use std::io;
    use std::os::fd::OwnedFd;

    use nix::fcntl::{self, FcntlArg, OFlag, SpliceFFlags};
    use tokio::io::Interest;
    use tokio::net::TcpStream;

    use super::PumpError;

    /// Pipe capacity: the most one splice moves.
    const PIPE_SIZE: usize = 256 * 1024;
    /// A direction stays on splice while its reads move at least this much.
    pub(super) const STAY_BULK: usize = 16 * 1024;
    /// Empty pipes kept per worker thread (two descriptors each).
    const POOL_MAX: usize = 32;

    struct Pipe {
        read: OwnedFd,
        write: OwnedFd,
    }

    thread_local! {
        static POOL: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
    }

    impl Pipe {
        fn take() -> io::Result<Pipe> {
            if let Some(pipe) = POOL.with(|pool| pool.borrow_mut().pop()) {
                return Ok(pipe);
            }
            let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
            // A larger pipe moves more per call; keep the default if the system refuses
            // (pipe-max-size, or the user's pipe page budget).
            let _ = fcntl::fcntl(&write, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE as i32));
            Ok(Pipe { read, write })
        }

        /// Only empty pipes go back to the pool.
        fn give_back(self) {
            POOL.with(|pool| {
                let mut pool = pool.borrow_mut();
                if pool.len() < POOL_MAX {
                    pool.push(self);
                }
            });
        }
    }

    pub(super) enum Step {
        Moved(usize),
        Eof,
        WouldBlock,
        /// No pipe could be made: the caller copies instead.
        Unavailable,
    }

    const FLAGS: SpliceFFlags = SpliceFFlags::SPLICE_F_MOVE.union(SpliceFFlags::SPLICE_F_NONBLOCK);

    /// A pipe holding `left` bytes spliced in from one socket and not yet out to the
    /// other.
    pub(super) struct Loaded {
        pipe: Pipe,
        left: usize,
    }

    impl Loaded {
        /// The bytes still in the pipe, read out into memory (for a hand-over).
        pub(super) fn drain(self) -> io::Result<Vec<u8>> {
            let mut bytes = vec![0; self.left];
            let mut got = 0;
            while got < bytes.len() {
                match nix::unistd::read(&self.pipe.read, &mut bytes[got..]) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if got != bytes.len() {
                return Err(io::Error::other(format!(
                    "a relay pipe held {got} of the {} bytes it should",
                    bytes.len()
                )));
            }
            // Empty again: it may serve another connection.
            self.pipe.give_back();
            Ok(bytes)
        }
    }

    /// One splice in, then out until the pipe is empty. While bytes wait for the
    /// receiver the loaded pipe sits in `slot`, so dropping this future there leaves
    /// them with the connection ([`super::InFlight`]) instead of closing them away.
    pub(super) async fn step(
        from: &TcpStream,
        to: &TcpStream,
        account: &(dyn Fn(usize) + Sync),
        slot: &mut Option<Loaded>,
    ) -> Result<Step, PumpError> {
        let Ok(pipe) = Pipe::take() else {
            return Ok(Step::Unavailable);
        };
        let n = match from.try_io(Interest::READABLE, || {
            fcntl::splice(from, None, &pipe.write, None, PIPE_SIZE, FLAGS).map_err(io::Error::from)
        }) {
            Ok(0) => {
                pipe.give_back();
                return Ok(Step::Eof);
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                pipe.give_back();
                return Ok(Step::WouldBlock);
            }
            Err(e) => return Err(PumpError::Read(e)),
        };
        account(n);
        let loaded = slot.insert(Loaded { pipe, left: n });
        while loaded.left > 0 {
            to.writable().await.map_err(PumpError::Write)?;
            match to.try_io(Interest::WRITABLE, || {
                fcntl::splice(&loaded.pipe.read, None, to, None, loaded.left, FLAGS)
                    .map_err(io::Error::from)
            }) {
                Ok(0) => return Err(PumpError::Write(io::ErrorKind::WriteZero.into())),
                Ok(w) => loaded.left -= w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(PumpError::Write(e)),
            }
        }
        if let Some(empty) = slot.take() {
            empty.pipe.give_back();
        }
        Ok(Step::Moved(n))
    }
}

/// Closes with an RST instead of a FIN: the way a reset is passed on.
pub fn reset(stream: &TcpStream) {
    // Linger 0 never blocks on close (it aborts), unlike the positive values tokio
    // warns about.
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A connection as the accept loop gets it (non-blocking, registered with no
    /// poller), and the client's end.
    fn accepted_pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let front = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(front.local_addr().unwrap()).unwrap();
        let (accepted, _) = front.accept().unwrap();
        accepted.set_nonblocking(true).unwrap();
        (client, accepted)
    }

    #[test]
    fn read_first_takes_what_came_with_the_connection_and_waits_for_nothing() {
        use std::io::Write;
        let (mut client, accepted) = accepted_pair();
        assert_eq!(read_first(&accepted).unwrap(), b"", "nothing sent yet");
        // Loopback delivers a write before it returns.
        client.write_all(b"hello").unwrap();
        assert_eq!(read_first(&accepted).unwrap(), b"hello");
        client.shutdown(Shutdown::Write).unwrap();
        for _ in 0..2 {
            assert_eq!(read_first(&accepted).unwrap(), b"", "a FIN stays readable");
        }

        // A reset is reported, not taken for an end of stream.
        let (client, accepted) = accepted_pair();
        socket2::SockRef::from(&client)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(client);
        let error = read_first(&accepted).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionReset, "{error}");
    }

    #[tokio::test]
    async fn send_early_sends_while_tokio_has_not_yet_seen_the_connect() {
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM.nonblocking(),
            None,
        )
        .unwrap();
        match socket.connect(&server.local_addr().unwrap().into()) {
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            other => panic!("{other:?}"),
        }
        let stream = TcpStream::from_std(socket.into()).unwrap();
        assert_eq!(send_early(&stream, b"").unwrap(), None, "nothing to send");
        // The loopback handshake completes inside connect(); tokio learns of it only at
        // its next turn, which has not come.
        assert_eq!(send_early(&stream, b"hello").unwrap(), Some(5));
        let (mut conn, _) = server.accept().unwrap();
        let mut got = [0; 5];
        std::io::Read::read_exact(&mut conn, &mut got).unwrap();
        assert_eq!(&got, b"hello");
    }

    /// A relay between two loopback pairs: returns the test's ends and the relay task.
    async fn harness(
        idle: Idle,
    ) -> (
        TcpStream,
        TcpStream,
        tokio::task::JoinHandle<(End, u64, u64)>,
    ) {
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let back = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let user = TcpStream::connect(front.local_addr().unwrap())
            .await
            .unwrap();
        let (client_side, _) = front.accept().await.unwrap();
        let server_side = TcpStream::connect(back.local_addr().unwrap())
            .await
            .unwrap();
        let (origin, _) = back.accept().await.unwrap();
        let task = tokio::spawn(async move {
            let (up, down) = (Flow::default(), Flow::default());
            let (cu, cd) = (Counter::default(), Counter::default());
            let mut state = RelayState::default();
            let end = relay(
                &client_side,
                &server_side,
                &idle,
                (&up, &cu),
                (&down, &cd),
                &mut state,
            )
            .await;
            if let End::Reset { .. } = end {
                reset(&client_side);
                reset(&server_side);
            }
            (
                end,
                up.bytes.load(Ordering::Relaxed),
                down.bytes.load(Ordering::Relaxed),
            )
        });
        (user, origin, task)
    }

    fn long() -> Idle {
        Idle {
            client: Duration::from_secs(3600),
            server: Duration::from_secs(3600),
        }
    }

    #[tokio::test]
    async fn half_close_from_the_client_lets_the_server_keep_talking() {
        let (mut user, mut origin, task) = harness(long()).await;
        user.write_all(b"request").await.unwrap();
        user.shutdown().await.unwrap();
        let mut got = Vec::new();
        origin.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"request");
        origin
            .write_all(b"response after the client's FIN")
            .await
            .unwrap();
        origin.shutdown().await.unwrap();
        let mut reply = Vec::new();
        user.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"response after the client's FIN");
        let (end, up, down) = task.await.unwrap();
        assert_eq!(
            end,
            End::Closed {
                first: Side::Client
            }
        );
        assert_eq!((up, down), (7, 31));
    }

    #[tokio::test]
    async fn half_close_from_the_server_lets_the_client_keep_talking() {
        let (mut user, mut origin, task) = harness(long()).await;
        origin.write_all(b"banner").await.unwrap();
        origin.shutdown().await.unwrap();
        let mut banner = Vec::new();
        user.read_to_end(&mut banner).await.unwrap();
        assert_eq!(banner, b"banner");
        user.write_all(b"still sending").await.unwrap();
        user.shutdown().await.unwrap();
        let mut got = Vec::new();
        origin.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"still sending");
        assert_eq!(
            task.await.unwrap().0,
            End::Closed {
                first: Side::Server
            }
        );
    }

    #[tokio::test]
    async fn a_client_reset_is_passed_on_to_the_server() {
        let (user, mut origin, task) = harness(long()).await;
        reset(&user);
        drop(user);
        assert_eq!(task.await.unwrap().0, End::Reset { by: Side::Client });
        let mut buf = [0u8; 8];
        let err = origin.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    }

    #[tokio::test]
    async fn a_server_reset_is_passed_on_to_the_client() {
        let (mut user, origin, task) = harness(long()).await;
        reset(&origin);
        drop(origin);
        assert_eq!(task.await.unwrap().0, End::Reset { by: Side::Server });
        let mut buf = [0u8; 8];
        let err = user.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    }

    #[tokio::test]
    async fn idle_timeout_needs_both_sides_silent() {
        let idle = Idle {
            client: Duration::from_millis(300),
            server: Duration::from_millis(300),
        };
        let (mut user, mut origin, task) = harness(idle).await;
        // A one-way stream from the server keeps the connection alive although the
        // client never speaks.
        for _ in 0..6 {
            origin.write_all(b"tick").await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut buf = [0u8; 64];
        let n = user.read(&mut buf).await.unwrap();
        assert!(n > 0);
        assert!(!task.is_finished(), "a one-way stream is not idle");
        let started = std::time::Instant::now();
        let (end, _, down) = task.await.unwrap();
        assert_eq!(end, End::IdleTimeout);
        assert_eq!(down, 24);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    fn pattern(len: usize, seed: u32) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect()
    }

    /// Bulk both ways at once while each receiver starts late and reads in small bites:
    /// the splice path (Linux) and the backpressure buffer both have to wait for room.
    #[tokio::test]
    async fn bulk_both_ways_with_slow_receivers_arrives_intact() {
        let (user, origin, task) = harness(long()).await;
        let (up_data, down_data) = (pattern(3_000_000, 1), pattern(2_000_000, 7));
        let (up_expected, down_expected) = (up_data.clone(), down_data.clone());
        let (user_rd, mut user_wr) = user.into_split();
        let (origin_rd, mut origin_wr) = origin.into_split();
        let send_up = tokio::spawn(async move {
            user_wr.write_all(&up_data).await.unwrap();
            user_wr.shutdown().await.unwrap();
            user_wr
        });
        let send_down = tokio::spawn(async move {
            origin_wr.write_all(&down_data).await.unwrap();
            origin_wr.shutdown().await.unwrap();
            origin_wr
        });
        let slow_read = |mut rd: tokio::net::tcp::OwnedReadHalf| async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut got = Vec::new();
            let mut bite = [0u8; 1500];
            loop {
                let n = rd.read(&mut bite).await.unwrap();
                if n == 0 {
                    return (got, rd);
                }
                got.extend_from_slice(&bite[..n]);
            }
        };
        let (recv_up, recv_down) = tokio::join!(slow_read(origin_rd), slow_read(user_rd));
        assert!(
            recv_up.0 == up_expected,
            "upstream corrupted: {} bytes",
            recv_up.0.len()
        );
        assert!(
            recv_down.0 == down_expected,
            "downstream corrupted: {} bytes",
            recv_down.0.len()
        );
        let (_u, _o) = (send_up.await.unwrap(), send_down.await.unwrap());
        let (end, up, down) = task.await.unwrap();
        assert!(matches!(end, End::Closed { .. }), "{end:?}");
        assert_eq!((up, down), (3_000_000, 2_000_000));
        // Keep the halves alive until the relay has finished.
        drop((recv_up.1, recv_down.1));
    }

    #[tokio::test]
    async fn large_transfer_arrives_intact() {
        let (mut user, mut origin, task) = harness(long()).await;
        let data: Vec<u8> = (0..4_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let expected = data.clone();
        let writer = tokio::spawn(async move {
            user.write_all(&data).await.unwrap();
            user.shutdown().await.unwrap();
            user
        });
        let mut got = Vec::new();
        origin.read_to_end(&mut got).await.unwrap();
        assert!(got == expected, "corrupted: {} bytes", got.len());
        drop(origin);
        let _user = writer.await.unwrap();
        assert_eq!(task.await.unwrap().1, 4_000_000);
    }
}
