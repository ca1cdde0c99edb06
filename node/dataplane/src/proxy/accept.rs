//! A listening socket whose accepted connections are not yet registered with any
//! runtime, so that each can be registered once, by the plane thread that will serve it.
//!
//! tokio's `TcpListener::accept` registers every accepted socket with the accepting
//! thread's poller; a connection handed to another thread ([`super::workers::place`])
//! then has to leave that poller again before it joins the other one: two `epoll_ctl`
//! calls for nothing, and two ways to start a connection where one does.
//!
//! The one `unsafe` of the data plane lives here: tokio's safe way to watch a plain file
//! descriptor is deprecated, and its replacement is `unsafe` because tokio cannot check
//! that the descriptor outlives the registration.
#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A listening socket watched by the current thread's runtime.
pub(super) struct Acceptor {
    listener: AsyncFd<mio::net::TcpListener>,
}

impl Acceptor {
    /// Watches `listener` (non-blocking) with the runtime of the calling thread.
    pub(super) fn new(listener: std::net::TcpListener) -> io::Result<Self> {
        let listener = mio::net::TcpListener::from_std(listener);
        // SAFETY: the AsyncFd owns the listener, and with it the descriptor, which stays
        // open until the AsyncFd is dropped; `as_raw_fd` of a mio listener always returns
        // the descriptor it was made from.
        let listener = unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Self { listener })
    }

    /// The next connection: a non-blocking socket, registered nowhere yet.
    pub(super) async fn accept(&self) -> io::Result<(std::net::TcpStream, SocketAddr)> {
        loop {
            let mut ready = self.listener.readable().await?;
            match ready.try_io(|listener| listener.get_ref().accept()) {
                Ok(accepted) => return accepted.map(|(stream, peer)| (stream.into(), peer)),
                // Drained: tokio has cleared the readiness; wait for the next connection.
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepts_non_blocking_sockets_that_any_runtime_can_register() {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        std_listener.set_nonblocking(true).expect("non-blocking");
        let addr = std_listener.local_addr().expect("addr");
        let acceptor = Acceptor::new(std_listener).expect("acceptor");
        for round in 0..3 {
            let client = std::net::TcpStream::connect(addr).expect("connect");
            let (stream, peer) =
                tokio::time::timeout(std::time::Duration::from_secs(5), acceptor.accept())
                    .await
                    .expect("accepted in time")
                    .expect("accepted");
            assert_eq!(
                peer,
                client.local_addr().expect("client addr"),
                "round {round}"
            );
            // Registering it with a runtime works only for a non-blocking socket in the
            // right state; a round trip proves the socket is usable there.
            let mut stream = tokio::net::TcpStream::from_std(stream).expect("register");
            let mut client = client;
            std::io::Write::write_all(&mut client, b"ping").expect("client write");
            let mut buf = [0u8; 4];
            tokio::io::AsyncReadExt::read_exact(&mut stream, &mut buf)
                .await
                .expect("read");
            assert_eq!(&buf, b"ping");
        }
    }
}
