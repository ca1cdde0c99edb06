//! Client helpers: connect from a chosen loopback source address (the whole of 127.0.0.0/8
//! is local on Linux), read the backend's greeting line to learn where we landed, echo.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

/// Bound on every single client operation (connect, greeting, echo).
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// The source address of client `i` in address group `group` (1..=254): each test uses its
/// own group so that logs and stick tables are easy to tell apart.
pub fn src_ip(group: u8, i: usize) -> Ipv4Addr {
    assert!(i < 200 * 250, "client index out of range");
    Ipv4Addr::new(127, group, (i / 200) as u8 + 1, (i % 200) as u8 + 10)
}

/// A socket bound to `src` with an ephemeral port, not yet connected.
pub fn bound_socket(src: Ipv4Addr) -> io::Result<TcpSocket> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(src.into(), 0))?;
    Ok(sock)
}

pub async fn connect_socket(sock: TcpSocket, dst: SocketAddr) -> io::Result<TcpStream> {
    let s = timeout(OP_TIMEOUT, sock.connect(dst))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Connect to `dst` from `src` (port chosen by the kernel).
pub async fn connect_from(src: Ipv4Addr, dst: SocketAddr) -> io::Result<TcpStream> {
    connect_socket(bound_socket(src)?, dst).await
}

/// Reads one line (without the "\n"), byte by byte so nothing after it is consumed.
/// Fails with `TimedOut` if the line is not complete within `within`.
pub async fn read_line(s: &mut TcpStream, within: Duration) -> io::Result<String> {
    let fut = async {
        let mut line = Vec::new();
        loop {
            let b = s.read_u8().await?;
            if b == b'\n' {
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            line.push(b);
            if line.len() > 256 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
            }
        }
    };
    timeout(within, fut)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no complete line in time"))?
}

/// Reads everything until a clean EOF, bounded by `within`; a reset is an error.
pub async fn read_to_eof(s: &mut TcpStream, within: Duration) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    timeout(within, s.read_to_end(&mut out))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no EOF in time"))??;
    Ok(out)
}

/// A connection through the balancer that has received its backend's greeting.
pub struct Conn {
    pub stream: TcpStream,
    /// Name of the backend server that greeted us.
    pub server: String,
}

impl Conn {
    /// Sends `payload` and expects it echoed back exactly.
    pub async fn echo(&mut self, payload: &[u8]) -> io::Result<()> {
        self.stream.write_all(payload).await?;
        let mut back = vec![0u8; payload.len()];
        timeout(OP_TIMEOUT, self.stream.read_exact(&mut back))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "echo timed out"))??;
        if back != payload {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "echo differs"));
        }
        Ok(())
    }
}

/// Connects from `src` to `dst` and reads the greeting.
pub async fn open(src: Ipv4Addr, dst: SocketAddr) -> io::Result<Conn> {
    let stream = connect_from(src, dst).await?;
    greet(stream).await
}

/// Reads the greeting on an already connected stream.
pub async fn greet(mut stream: TcpStream) -> io::Result<Conn> {
    let server = read_line(&mut stream, OP_TIMEOUT).await?;
    Ok(Conn { stream, server })
}
