//! Addresses that fail to connect, for connect-failure and `timeout_connect` tests.
//!
//! - [`refusing_addr`]: a loopback port nobody listens on: connects are refused at once.
//! - [`Blackhole`]: a listener with a full accept queue that never accepts: the kernel
//!   drops further SYNs, so a connect hangs until the caller's own timeout.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// A loopback address whose port was free a moment ago and has no listener now.
pub fn refusing_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("local_addr");
    drop(l);
    addr
}

/// A listener (backlog 0) whose accept queue has been filled and is never drained.
pub struct Blackhole {
    addr: SocketAddr,
    _listener: socket2::Socket,
    _fillers: Vec<TcpStream>,
}

impl Blackhole {
    pub fn spawn() -> Blackhole {
        let sock = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .expect("socket");
        sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .expect("bind");
        sock.listen(0).expect("listen");
        let addr = sock
            .local_addr()
            .expect("local_addr")
            .as_socket()
            .expect("inet");
        // Fill the accept queue (Linux admits backlog + 1); stop at the first connect
        // that hangs: from then on every SYN is dropped.
        let mut fillers = Vec::new();
        for _ in 0..4 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(s) => fillers.push(s),
                Err(_) => break,
            }
        }
        assert!(
            !fillers.is_empty() && fillers.len() < 4,
            "could not fill the accept queue of {addr} ({} connects succeeded)",
            fillers.len()
        );
        Blackhole {
            addr,
            _listener: sock,
            _fillers: fillers,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}
