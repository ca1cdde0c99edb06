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
use tokio::task::JoinHandle;
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
    /// The sending side: a duplicate of the bound socket, used directly. tokio's
    /// `try_send_to` fails with WouldBlock until the reactor has reported the new
    /// socket writable, which loses the first advert of a fresh instance; the very
    /// advert a resumed master must get out at once.
    send: std::net::UdpSocket,
    peers: Vec<SocketAddrV4>,
    /// The receive task, which holds the other reference to `sock`.
    recv: JoinHandle<()>,
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
        // Shared by both descriptors: sends never block either.
        std_sock.set_nonblocking(true)?;
        let send = std_sock.try_clone()?;
        let sock = Arc::new(UdpSocket::from_std(std_sock)?);
        let (pkt_tx, pkt_rx) = mpsc::channel(QUEUE);
        let recv = tokio::spawn(receive_loop(sock, pkt_tx, vrid));
        Ok((UdpTransport { send, peers, recv }, pkt_rx))
    }

    /// Close the socket now: stop the receive task and wait until it has dropped its
    /// reference, so the address can be bound again when this returns (a live
    /// upgrade's successor binds the same `listen`).
    pub(super) async fn close(self) {
        self.recv.abort();
        // Resolves once the task's future, and with it the receiving descriptor, is
        // dropped (cancelled or finished); `self.send` goes when this returns.
        let _ = self.recv.await;
    }

    pub(super) fn peers(&self) -> &[SocketAddrV4] {
        &self.peers
    }

    /// Send one whole IPv4 packet to `peer`. Never waits: a full socket buffer is a
    /// failed send (counted by the caller), as a dropped frame would be on a wire.
    pub(super) fn send(&self, packet: &[u8], peer: SocketAddrV4) -> io::Result<()> {
        self.send.send_to(packet, SocketAddr::V4(peer)).map(|_| ())
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
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::watch;

    use super::super::{
        DriverError, InstanceConfig, Transport, VrrpHandle, VrrpInstance, VrrpStatus,
    };
    use crate::packet::{Advertisement, ChecksumAccept};
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

    /// Every advert a peer would see: (arrival, source, priority), decoded from the
    /// datagrams sent to a plain socket listed among the instance's peers.
    type Seen = Arc<std::sync::Mutex<Vec<(std::time::Instant, IpAddr, u8)>>>;

    fn sniffer(at: SocketAddr) -> (Seen, tokio::task::JoinHandle<()>) {
        let sock = std::net::UdpSocket::bind(at).expect("bind sniffer");
        sock.set_nonblocking(true).expect("nonblocking");
        let sock = tokio::net::UdpSocket::from_std(sock).expect("tokio socket");
        let seen: Seen = Arc::default();
        let out = seen.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok(n) = sock.recv(&mut buf).await {
                let at = std::time::Instant::now();
                if let Ok(r) = Advertisement::decode_ipv4_packet(&buf[..n], ChecksumAccept::Either)
                {
                    let mut v = out.lock().expect("sniffer lock");
                    v.push((at, IpAddr::V4(r.ip.src), r.advert.priority));
                }
            }
        });
        (seen, task)
    }

    /// The live upgrade: A (150) is master and C (100) its backup; A is abandoned and
    /// B, A's very config plus `resume`, takes over. C never moves and never hears a
    /// priority 0; the adverts continue from the same address and priority, and B's
    /// first comes without waiting for any Master_Down_Interval.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abandoned_master_is_resumed_without_the_backup_noticing() {
        let ab = free_udp(Ipv4Addr::new(127, 0, 63, 1));
        let c = free_udp(Ipv4Addr::new(127, 0, 63, 3));
        let tap = free_udp(Ipv4Addr::new(127, 0, 63, 9));
        // 200 ms adverts: C's Master_Down_Interval is 3 * 200 + 156 * 200 / 256
        // = 720 ms, room for a loaded machine; the handover itself is ms.
        let interval = Duration::from_millis(200);
        let mut cfg_a = cfg(150, ab, c);
        cfg_a.advert_interval = interval;
        cfg_a.transport = Transport::Udp {
            listen: ab,
            peers: vec![c, tap],
        };
        // A notify command that logs every call: an abandon and a resume must
        // not run it (A and B share it, as the two processes share a config).
        let notified = std::env::temp_dir().join(format!(
            "ballast-vrrp-resume-notify-{}-{}",
            std::process::id(),
            ab.port()
        ));
        let _ = std::fs::remove_file(&notified);
        cfg_a.notify = Some(super::super::NotifyCommand {
            program: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                format!("echo \"$0 $1 $2\" >> '{}'", notified.display()),
            ],
        });
        let notify_log = || std::fs::read_to_string(&notified).unwrap_or_default();
        let mut cfg_c = cfg(100, c, ab);
        cfg_c.advert_interval = interval;
        let c_mdi = crate::state::cs(crate::state::master_down_interval_cs(100, 20));
        assert_eq!(c_mdi, Duration::from_millis(720));

        let (seen, tap_task) = sniffer(tap);
        let (_tc, rc) = watch::channel(0u8);
        let hc = VrrpInstance::spawn(cfg_c, rc).expect("spawn c");
        let (_ta, ra) = watch::channel(0u8);
        let ha = VrrpInstance::spawn(cfg_a.clone(), ra).expect("spawn a");
        wait_for(&ha, "a master", |s| s.state == VrrpState::Master).await;
        let c0 = wait_for(&hc, "c backup following a", |s| {
            s.state == VrrpState::Backup && s.master_addr == Some(ab.ip())
        })
        .await;

        // Everything C publishes from now on.
        let mut c_rx = hc.subscribe();
        let c_log: Arc<std::sync::Mutex<Vec<VrrpStatus>>> = Arc::default();
        let log = c_log.clone();
        let c_log_task = tokio::spawn(async move {
            loop {
                let s = c_rx.borrow_and_update().clone();
                log.lock().expect("c log lock").push(s);
                if c_rx.changed().await.is_err() {
                    break;
                }
            }
        });
        // A few adverts of A's, so the handover lands anywhere in an interval.
        tokio::time::sleep(interval * 3).await;

        let a_obs = ha.observer();
        let gone = ha.abandon().await.expect("abandon a");
        let a_sent = a_obs.metrics().adverts_sent;
        assert_eq!(gone.state, VrrpState::Master);
        assert_eq!((gone.priority, gone.primary_addr), (150, ab.ip()));
        assert!(gone.last_advert.is_some());
        let resume = gone.resume();
        assert!(resume.is_master(), "{resume:?}");

        let mut cfg_b = cfg_a.clone();
        cfg_b.resume = resume;
        let (_tb, rb) = watch::channel(0u8);
        let started = std::time::Instant::now();
        // A's socket is closed once abandon returns: the same listen address binds.
        let hb = VrrpInstance::spawn(cfg_b, rb).expect("spawn b on a's address");
        let sb = wait_for(&hb, "b master", |s| s.state == VrrpState::Master).await;
        let t = sb.last_transition.expect("b transition");
        assert_eq!(
            (t.from, t.reason, sb.transitions),
            (VrrpState::Initialize, TransitionReason::Resumed, 1)
        );

        // Past C's Master_Down_Interval counted from the abandon, and a few more
        // adverts: C would have taken over by now if B had been silent.
        tokio::time::sleep(c_mdi + interval * 3).await;
        let b_sent = hb.metrics().adverts_sent;
        let sc = hc.status();
        tap_task.abort();
        let seen = seen.lock().expect("sniffer lock").clone();

        // What the peer saw on the wire.
        assert!(
            seen.iter().all(|s| s.2 != 0),
            "a priority-0 advert: {seen:?}"
        );
        assert!(
            seen.iter().all(|s| (s.1, s.2) == (ab.ip(), 150)),
            "adverts must continue from one address at one priority: {seen:?}"
        );
        // Each advert went to C and to the tap: A's are the first a_sent / 2.
        let a_n = usize::try_from(a_sent / 2).expect("count");
        assert!(a_n >= 3 && seen.len() > a_n, "a {a_n}, seen {}", seen.len());
        let (a_last, b_first) = (seen[a_n - 1].0, seen[a_n].0);
        assert!(b_first >= started, "the advert after A's last is B's");
        let gap = b_first - a_last;
        let b_delay = b_first - started;
        eprintln!(
            "handover: A's last advert -> B's first {gap:?}; B spawn -> first advert {b_delay:?}; \
             A sent {a_n}, B sent {} (per peer)",
            b_sent / 2
        );
        // The property, not a benchmark: B did not wait for Master_Down (its own
        // would be 680 ms at 150), and the backup's timer never ran out.
        assert!(b_delay < c_mdi, "b's first advert after {b_delay:?}");
        assert!(gap < c_mdi, "gap {gap:?}");

        // C: a backup of A's address all along, not one transition, every advert
        // heard (give or take the one in flight).
        assert_eq!(sc.transitions, c0.transitions, "{sc:?}");
        assert_eq!(sc.state, VrrpState::Backup);
        c_log_task.abort();
        let log = c_log.lock().expect("c log lock").clone();
        assert!(
            log.iter().all(|s| s.state == VrrpState::Backup
                && s.master_addr == Some(ab.ip())
                && s.transitions == c0.transitions),
            "{log:?}"
        );
        assert!(hc.metrics().adverts_received + 1 >= (a_sent + b_sent) / 2);
        // The first advert of a fresh instance went out (see UdpTransport::send).
        assert_eq!(hb.metrics().send_errors, 0);
        // Notify ran for A's two transitions, long done, and for nothing since.
        assert_eq!(
            notify_log(),
            "backup initialize startup\nmaster backup master_down\n"
        );

        hb.shutdown().await.expect("shutdown b");
        // B stopped gracefully (a normal master now): C takes over.
        let sc2 = wait_for(&hc, "c master after b stopped", |s| {
            s.state == VrrpState::Master
        })
        .await;
        assert_eq!(
            sc2.last_transition.map(|t| t.reason),
            Some(TransitionReason::MasterResigned)
        );
        hc.shutdown().await.expect("shutdown c");
        // B's graceful stop is a normal one, notify included (detached: wait).
        for _ in 0..100 {
            if notify_log().lines().count() >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            notify_log().ends_with("initialize master shutdown\n"),
            "{}",
            notify_log()
        );
        let _ = std::fs::remove_file(&notified);
    }

    /// Abandoning a backup leaves the normal start to the successor, and the master
    /// hears nothing of it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abandoned_backup_resumes_as_a_normal_start() {
        let (ha, hb, _penalties, addrs) = pair(64);
        elect(&ha, &hb, addrs).await;
        let before = ha.status().transitions;
        let gone = hb.abandon().await.expect("abandon b");
        assert_eq!(gone.state, VrrpState::Backup);
        assert_eq!(gone.last_advert, None, "a backup never advertised");
        assert_eq!(gone.resume(), super::super::Resume::Backup);
        assert_eq!(ha.status().state, VrrpState::Master);
        assert_eq!(ha.status().transitions, before);
        ha.shutdown().await.expect("shutdown a");
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
