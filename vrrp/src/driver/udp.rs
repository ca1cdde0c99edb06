//! The UDP transport: VRRP for demos and labs that run without root.
//!
//! ```text
//!   peer ──UDP datagram: [IPv4 header | VRRP advert], the bytes the raw path sends──┐
//!                                                                                  │
//!   receive task (tokio): recv_from on `listen` ──Received──▶ same mpsc as raw.rs ─┘
//!   instance task: filter_packet (unchanged) → Router::handle → actions
//!        └─ SendAdvert: one datagram per peer (header dst = the peer's address)
//! ```
//!
//! A raw socket needs CAP_NET_RAW and a VIP needs CAP_NET_ADMIN, which `ballast demo`
//! and many labs do not have. Carrying the very packet the raw path builds (IPv4 header
//! included, TTL 255) keeps one receive path: every check of `filter_packet` applies,
//! and the state machine, status, metrics and transitions are those of production.
//! What this transport cannot do is move an address: no VIP is added or removed and no
//! gratuitous ARP is sent (the instance task skips them and says so once).

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::raw::Received;

/// Big enough for the largest VRRP packet (60 + 8 + 255 * 16 bytes).
const RECV_BUFFER: usize = 8192;
/// Packets queued between the receive task and the instance task.
const QUEUE: usize = 256;
/// Pause after a failed receive, so a persistent error cannot spin a core.
const ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The bound socket and where adverts go.
pub(super) struct UdpTransport {
    sock: Arc<UdpSocket>,
    peers: Vec<SocketAddrV4>,
}

impl UdpTransport {
    /// Bind `listen` and start the receive task on the current runtime. The task ends
    /// when the instance drops its receiver.
    pub(super) fn open(
        listen: SocketAddr,
        peers: Vec<SocketAddrV4>,
        vrid: u8,
    ) -> io::Result<(UdpTransport, mpsc::Receiver<Received>)> {
        let std_sock = std::net::UdpSocket::bind(listen)?;
        std_sock.set_nonblocking(true)?;
        let sock = Arc::new(UdpSocket::from_std(std_sock)?);
        let (pkt_tx, pkt_rx) = mpsc::channel(QUEUE);
        tokio::spawn(receive_loop(sock.clone(), pkt_tx, vrid));
        Ok((UdpTransport { sock, peers }, pkt_rx))
    }

    pub(super) fn peers(&self) -> &[SocketAddrV4] {
        &self.peers
    }

    /// Send one whole IPv4 packet to `peer`. Never waits: a full socket buffer is a
    /// failed send (counted by the caller), as a dropped frame would be on a wire.
    pub(super) fn send(&self, packet: &[u8], peer: SocketAddrV4) -> io::Result<()> {
        self.sock
            .try_send_to(packet, SocketAddr::V4(peer))
            .map(|_| ())
    }
}

async fn receive_loop(sock: Arc<UdpSocket>, pkt_tx: mpsc::Sender<Received>, vrid: u8) {
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        tokio::select! {
            () = pkt_tx.closed() => break,
            r = sock.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    // Stamped here for the same reason as in raw.rs: the instance task
                    // may run late and must judge the advert by its arrival.
                    let rcv = Received {
                        at: std::time::Instant::now(),
                        bytes: buf[..n].to_vec(),
                    };
                    debug!(vrid, %from, len = n, "udp advert datagram");
                    if pkt_tx.send(rcv).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    warn!(vrid, error = %e, "udp receive failed");
                    tokio::time::sleep(ERROR_PAUSE).await;
                }
            },
        }
    }
    debug!(vrid, "udp receive task stopped");
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::Duration;

    use tokio::sync::watch;

    use super::super::{
        DriverError, InstanceConfig, Transport, VrrpHandle, VrrpInstance, VrrpStatus,
    };
    use crate::state::{TransitionReason, VrrpState};

    /// A UDP port free on `ip` right now. Each instance has its own loopback
    /// address: the address is the VRRP primary (tie-break, own-packet check).
    fn free_udp(ip: Ipv4Addr) -> SocketAddr {
        let s = std::net::UdpSocket::bind((ip, 0)).expect("bind probe");
        s.local_addr().expect("local addr")
    }

    fn cfg(priority: u8, listen: SocketAddr, peer: SocketAddr) -> InstanceConfig {
        let mut c = InstanceConfig::new(
            "lo",
            51,
            priority,
            vec!["198.18.60.100/24".parse().expect("vip")],
        );
        // Fast, so the test takes well under a second when the machine is idle;
        // every wait below allows for a loaded one.
        c.advert_interval = Duration::from_millis(100);
        c.transport = Transport::Udp {
            listen,
            peers: vec![peer],
        };
        c
    }

    /// Two instances on 127.0.0.x, priorities 150 and 100; penalty senders kept
    /// alive so the priorities stay as configured.
    fn pair(
        tag: u8,
    ) -> (
        VrrpHandle,
        VrrpHandle,
        [watch::Sender<u8>; 2],
        [SocketAddr; 2],
    ) {
        let a = free_udp(Ipv4Addr::new(127, 0, tag, 1));
        let b = free_udp(Ipv4Addr::new(127, 0, tag, 2));
        let (ta, ra) = watch::channel(0u8);
        let (tb, rb) = watch::channel(0u8);
        let ha = VrrpInstance::spawn(cfg(150, a, b), ra).expect("spawn a");
        let hb = VrrpInstance::spawn(cfg(100, b, a), rb).expect("spawn b");
        (ha, hb, [ta, tb], [a, b])
    }

    async fn wait_for(
        h: &VrrpHandle,
        what: &str,
        mut ok: impl FnMut(&VrrpStatus) -> bool,
    ) -> VrrpStatus {
        let mut rx = h.subscribe();
        let waited = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let s = rx.borrow_and_update().clone();
                if ok(&s) {
                    return s;
                }
                if rx.changed().await.is_err() {
                    return rx.borrow().clone();
                }
            }
        })
        .await;
        match waited {
            Ok(s) if ok(&s) => s,
            _ => panic!("{what}: not within 10 s; status {:?}", h.status()),
        }
    }

    /// Master, with the moment of its (skipped) GARP recorded: the state is published
    /// at the transition, `last_garp` a moment later in the same step.
    fn master_with_garp(s: &VrrpStatus) -> bool {
        s.state == VrrpState::Master && s.last_garp.is_some()
    }

    async fn elect(ha: &VrrpHandle, hb: &VrrpHandle, [a, b]: [SocketAddr; 2]) {
        wait_for(ha, "a master", master_with_garp).await;
        let sb = wait_for(hb, "b backup following a", |s| {
            s.state == VrrpState::Backup && s.master_addr == Some(a.ip())
        })
        .await;
        assert_eq!(sb.primary_addr, b.ip(), "the listen address is the primary");
        assert!(ha.metrics().adverts_sent >= 1);
        assert!(hb.metrics().adverts_received >= 1);
        assert_eq!(ha.metrics().garp_sent, 0, "nothing goes out on UDP");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn udp_pair_elects_and_fails_over_on_graceful_stop() {
        let (ha, hb, _penalties, addrs) = pair(61);
        elect(&ha, &hb, addrs).await;
        ha.shutdown().await.expect("shutdown a");
        let sb = wait_for(&hb, "b master after a stopped", master_with_garp).await;
        let t = sb.last_transition.expect("transition");
        assert_eq!(t.reason, TransitionReason::MasterResigned, "{sb:?}");
        hb.shutdown().await.expect("shutdown b");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn udp_pair_fails_over_when_the_master_dies() {
        let (mut ha, hb, _penalties, addrs) = pair(62);
        elect(&ha, &hb, addrs).await;
        // Like kill -9: the task is gone without a priority-0 advert.
        ha.task.take().expect("task").abort();
        let sb = wait_for(&hb, "b master after a died", master_with_garp).await;
        let t = sb.last_transition.expect("transition");
        assert_eq!(t.reason, TransitionReason::MasterDown, "{sb:?}");
        hb.shutdown().await.expect("shutdown b");
    }

    #[test]
    fn udp_transport_is_validated() {
        let a: SocketAddr = "127.0.0.11:9112".parse().expect("addr");
        let b: SocketAddr = "127.0.0.12:9112".parse().expect("addr");
        assert!(cfg(150, a, b).validate().is_ok());
        let bad = |c: InstanceConfig| match c.validate() {
            Err(DriverError::UdpTransport(why)) => why,
            other => panic!("expected a udp transport error, got {other:?}"),
        };
        let mut c = cfg(150, a, b);
        c.transport = Transport::Udp {
            listen: a,
            peers: Vec::new(),
        };
        assert!(bad(c).contains("at least one peer"));
        assert!(bad(cfg(150, a, a)).contains("own listen address"));
        let any: SocketAddr = "0.0.0.0:9112".parse().expect("addr");
        assert!(bad(cfg(150, any, b)).contains("primary_addr"));
        let mut c = cfg(150, any, b);
        c.primary_addr = Some(a.ip());
        assert!(c.validate().is_ok());
        let v6: SocketAddr = "[::1]:9112".parse().expect("addr");
        assert!(bad(cfg(150, v6, b)).contains("IPv4 only"));
        assert!(bad(cfg(150, a, v6)).contains("IPv4 only"));
        let zero: SocketAddr = "127.0.0.12:0".parse().expect("addr");
        assert!(bad(cfg(150, a, zero)).contains("concrete"));
    }
}
