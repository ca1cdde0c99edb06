//! The raw IPv4 socket for protocol 112, through pnet's transport channel.
//!
//! ```text
//!   kernel ──raw socket (proto 112, SO_BINDTODEVICE, 224.0.0.18 joined)──┐
//!                                                                        │
//!   "vrrp-rx-<vrid>" std::thread: blocking recv (250 ms timeout)         │
//!        │  Received { at, bytes } (whole IPv4 packet, arrival time)                                  │
//!        ▼  tokio mpsc (bounded)                                         │
//!   instance task: decode (crate::packet) → Router::handle → actions ────┘ send
//! ```
//!
//! pnet's receive is a blocking `recvfrom`; running it on a tokio worker
//! would stall the runtime (STYLE anti-examples), so it has its own thread
//! that stops when the stop flag is set or the channel closes. The channel
//! is `Layer3`: the socket has `IP_HDRINCL`, so we write the IPv4 header
//! ourselves (TTL 255, TOS 0xc0, RFC 5798 §5.1.1) with the codec; the kernel
//! fills in the identification and header checksum.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pnet::packet::ip::IpNextHeaderProtocol;
use pnet::packet::ipv4::Ipv4Packet;
use pnet::packet::Packet;
use pnet::transport::{ipv4_packet_iter, transport_channel, TransportChannelType, TransportSender};
use socket2::InterfaceIndexOrAddress;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::packet::{VRRP_MULTICAST_V4, VRRP_PROTOCOL};

/// Big enough for the largest VRRP packet (60 + 8 + 255 * 16 bytes).
const RECV_BUFFER: usize = 8192;
/// How often the receive thread looks at its stop flag.
const RECV_POLL: Duration = Duration::from_millis(250);
/// Packets queued between the receive thread and the instance task.
const QUEUE: usize = 256;

/// A packet from the receive thread, stamped with its arrival time.
pub(super) struct Received {
    pub at: std::time::Instant,
    pub bytes: Vec<u8>,
}

/// The sending half plus what is needed to stop the receive thread.
pub(super) struct RawSocket {
    tx: TransportSender,
    stop: Arc<AtomicBool>,
}

impl RawSocket {
    /// Open the socket on `ifname` (index `ifindex`, our address `primary`),
    /// join 224.0.0.18 there, and start the receive thread.
    pub(super) fn open(
        ifname: &str,
        ifindex: u32,
        primary: Ipv4Addr,
        vrid: u8,
    ) -> io::Result<(RawSocket, mpsc::Receiver<Received>)> {
        let (tx, mut rx) = transport_channel(
            RECV_BUFFER,
            TransportChannelType::Layer3(IpNextHeaderProtocol::new(VRRP_PROTOCOL)),
        )?;
        super::fd::with_sockref(&rx, |s| -> io::Result<()> {
            // Only this interface's packets, and our sends leave through it.
            s.bind_device(Some(ifname.as_bytes()))?;
            s.set_multicast_if_v4(&primary)?;
            // RFC 5798 §5.1.1.2: adverts go to 224.0.0.18; join it on the
            // interface by index (an address could be on several links).
            s.join_multicast_v4_n(&VRRP_MULTICAST_V4, &InterfaceIndexOrAddress::Index(ifindex))?;
            // Do not hear our own adverts.
            s.set_multicast_loop_v4(false)?;
            s.set_read_timeout(Some(RECV_POLL))?;
            Ok(())
        })?;
        let (pkt_tx, pkt_rx) = mpsc::channel(QUEUE);
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        std::thread::Builder::new()
            .name(format!("vrrp-rx-{vrid}"))
            .spawn(move || {
                let mut iter = ipv4_packet_iter(&mut rx);
                while !thread_stop.load(Ordering::Relaxed) {
                    match iter.next() {
                        Ok((pkt, _)) => {
                            // Stamp the arrival here: the instance task may
                            // be scheduled late, and an advert that arrived
                            // before Master_Down_Timer expired must still
                            // count (see Task::run).
                            let rcv = Received {
                                at: std::time::Instant::now(),
                                bytes: pkt.packet().to_vec(),
                            };
                            if pkt_tx.blocking_send(rcv).is_err() {
                                break;
                            }
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock
                                    | io::ErrorKind::TimedOut
                                    | io::ErrorKind::Interrupted
                            ) => {}
                        Err(e) => {
                            // Transient (e.g. ENOBUFS, interface down): keep
                            // listening, but do not spin.
                            warn!(vrid, error = %e, "raw receive failed");
                            std::thread::sleep(RECV_POLL);
                        }
                    }
                }
                debug!(vrid, "receive thread stopped");
            })?;
        Ok((RawSocket { tx, stop }, pkt_rx))
    }

    /// Send a whole IPv4 packet (header included) to `dst`.
    pub(super) fn send(&mut self, packet: &[u8], dst: Ipv4Addr) -> io::Result<()> {
        let pkt = Ipv4Packet::new(packet)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "short IPv4 packet"))?;
        self.tx.send_to(pkt, IpAddr::V4(dst))?;
        Ok(())
    }
}

impl Drop for RawSocket {
    fn drop(&mut self) {
        // The thread notices within RECV_POLL and drops its half; the fd
        // closes when both halves are gone.
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Send one hand-made IPv4 packet (header included, protocol 112) to
/// `dst` from the current network namespace. For labs and diagnostics:
/// crafting bad packets to prove they are counted and dropped.
pub fn send_raw_ipv4(packet: &[u8], dst: Ipv4Addr) -> io::Result<()> {
    let (tx, _rx) = transport_channel(
        RECV_BUFFER,
        TransportChannelType::Layer3(IpNextHeaderProtocol::new(VRRP_PROTOCOL)),
    )?;
    let mut s = RawSocket {
        tx,
        stop: Arc::new(AtomicBool::new(true)),
    };
    s.send(packet, dst)
}
