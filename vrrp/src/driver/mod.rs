//! The thin Linux driver: one tokio task per virtual router that owns the
//! raw socket, the timers, the VIPs and the notify command, and executes
//! the [`Action`]s of the pure [`Router`].
//!
//! ```text
//!            priority penalty (watch<u8>)      shutdown (oneshot)
//!                       │                            │
//!   rx thread ─mpsc─▶  instance task: select! { packet | timer | penalty | shutdown | GARP repeat }
//!                       │        │ Router::handle(now, Event) -> Vec<Action>
//!                       ▼        ▼
//!        raw socket send   rtnetlink (VIPs)   pnet datalink (GARP)   notify command
//!                       │
//!                       └──▶ watch<VrrpStatus> + atomic counters (read by /v1/status, /metrics)
//! ```
//!
//! Time: the task takes `tokio::time::Instant::now()` at spawn as its epoch
//! and feeds the router `now - epoch`. Nothing in here decides protocol
//! behaviour; that is all in `crate::state`.
//!
//! Transports ([`Transport`]): `Raw` (above; production) or `Udp` (`udp.rs`):
//! the same IPv4+VRRP packets carried in UDP datagrams between known peers,
//! for demos and labs without CAP_NET_RAW. With `Udp` only the packet source
//! and the send differ; VIP add/remove and GARP are skipped (no address can
//! move without root), everything else is the same task.

mod fd;
mod garp;
mod netlink;
mod notify;
mod raw;
mod udp;

pub use raw::send_raw_ipv4;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::packet::{
    Advertisement, ChecksumAccept, ChecksumMode, DecodeError, Ipv4Header, VRRP_MULTICAST_V4,
};
use crate::state::{
    Action, AdvertInfo, ConfigError, Event, Router, RouterConfig, TransitionReason, VrrpState,
};

/// A virtual address with its prefix length, e.g. `198.18.0.100/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VirtualIp {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length used when adding it to the interface.
    pub prefix_len: u8,
}

impl fmt::Display for VirtualIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for VirtualIp {
    type Err = DriverError;

    /// `198.18.0.100/24`, or a bare address (then /32, as keepalived does).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || DriverError::BadVirtualIp(s.to_string());
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len = match p {
            Some(p) => p.trim().parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if prefix_len > max {
            return Err(bad());
        }
        Ok(VirtualIp { addr, prefix_len })
    }
}

/// Gratuitous ARP schedule on becoming master.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GarpConfig {
    /// Frames per VIP sent at once (keepalived `garp_master_repeat`: 5).
    pub count: u32,
    /// Delay before a second burst of `count` (keepalived
    /// `garp_master_delay`: 5 s); `None` for no second burst.
    pub repeat_delay: Option<Duration>,
}

impl Default for GarpConfig {
    fn default() -> Self {
        GarpConfig {
            count: 5,
            repeat_delay: Some(Duration::from_secs(5)),
        }
    }
}

/// A command run on each transition (see the `notify` module for the
/// arguments and environment it gets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifyCommand {
    /// Program to run (not through a shell).
    pub program: PathBuf,
    /// Arguments before the three the driver appends.
    pub args: Vec<String>,
}

/// How advertisements travel between the routers of one VRID.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// IP protocol 112 on the interface (raw socket, CAP_NET_RAW), VIPs added
    /// and removed (CAP_NET_ADMIN), gratuitous ARP. Interoperates with
    /// keepalived. The one for production.
    #[default]
    Raw,
    /// The same whole IPv4+VRRP packets as UDP datagrams, received on
    /// `listen` and sent to each of `peers`; no privilege needed. No VIP is
    /// installed and no GARP sent: for demos and labs only. `listen`'s
    /// address is the primary address (the source in the packets) unless
    /// `primary_addr` is set; `interface` is then only a label.
    Udp {
        /// Where this instance receives (IPv4).
        listen: SocketAddr,
        /// Where its adverts go (IPv4, at least one).
        peers: Vec<SocketAddr>,
    },
}

/// Everything one VRRP instance needs. Build with [`InstanceConfig::new`]
/// and adjust the public fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceConfig {
    /// Interface to run on, e.g. `eth0`.
    pub interface: String,
    /// Virtual router id, 1..=255.
    pub vrid: u8,
    /// Configured priority, 1..=255 (255 = address owner).
    pub priority: u8,
    /// Advertisement interval: 10 ms..=40.95 s, whole centiseconds.
    pub advert_interval: Duration,
    /// The virtual addresses (IPv4 only for now).
    pub virtual_ips: Vec<VirtualIp>,
    /// Preempt a lower-priority master.
    pub preempt: bool,
    /// Do not preempt for this long after startup.
    pub preempt_delay: Duration,
    /// Accept mode (reported; Ballast always accepts traffic to its VIPs).
    pub accept_mode: bool,
    /// Unicast peers: when non-empty, adverts go to each of them instead of
    /// 224.0.0.18, and adverts from anyone else are dropped.
    pub unicast_peers: Vec<IpAddr>,
    /// Source address of adverts; default: the interface's first IPv4
    /// address that is not a VIP.
    pub primary_addr: Option<IpAddr>,
    /// Checksum form we send (default: pseudo-header, like keepalived).
    pub checksum_send: ChecksumMode,
    /// Checksum forms we accept (default: both).
    pub checksum_accept: ChecksumAccept,
    /// Gratuitous ARP schedule.
    pub garp: GarpConfig,
    /// Command run on each transition.
    pub notify: Option<NotifyCommand>,
    /// When set, VIPs are added with this valid lifetime (whole seconds,
    /// at least 1) and renewed by the master about three times per
    /// lifetime, so a VIP left by a killed master expires by itself.
    pub vip_lifetime: Option<Duration>,
    /// Raw IP (default) or UDP for demos and labs without root.
    pub transport: Transport,
}

impl InstanceConfig {
    /// A config with keepalived-like defaults: 1 s adverts, preempt, no
    /// preempt delay, accept mode, multicast, pseudo-header checksum, GARP
    /// 5 + 5 after 5 s, no notify, permanent VIPs.
    pub fn new(
        interface: impl Into<String>,
        vrid: u8,
        priority: u8,
        virtual_ips: Vec<VirtualIp>,
    ) -> Self {
        InstanceConfig {
            interface: interface.into(),
            vrid,
            priority,
            advert_interval: Duration::from_secs(1),
            virtual_ips,
            preempt: true,
            preempt_delay: Duration::ZERO,
            accept_mode: true,
            unicast_peers: Vec::new(),
            primary_addr: None,
            checksum_send: ChecksumMode::PseudoHeader,
            checksum_accept: ChecksumAccept::Either,
            garp: GarpConfig::default(),
            notify: None,
            vip_lifetime: None,
            transport: Transport::Raw,
        }
    }

    /// The advert interval in centiseconds, validated.
    pub fn advert_interval_cs(&self) -> Result<u16, DriverError> {
        let ms = self.advert_interval.as_millis();
        if (ms / 10) * 10 != ms || !(10..=40_950).contains(&ms) {
            return Err(DriverError::Config(ConfigError::AdvertInterval(
                u32::try_from(ms / 10).unwrap_or(u32::MAX),
            )));
        }
        Ok((ms / 10) as u16)
    }

    /// Check everything that can be checked without touching the system.
    pub fn validate(&self) -> Result<(), DriverError> {
        let cs = self.advert_interval_cs()?;
        let mut rc = RouterConfig::new(self.vrid, self.priority, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        rc.advert_interval_cs = cs;
        rc.validate()?;
        if self.virtual_ips.is_empty() {
            return Err(DriverError::NoVirtualIp);
        }
        if self.virtual_ips.len() > 255 {
            return Err(DriverError::TooManyVirtualIps(self.virtual_ips.len()));
        }
        let v6 = self
            .virtual_ips
            .iter()
            .map(|v| v.addr)
            .chain(self.unicast_peers.iter().copied())
            .chain(self.primary_addr)
            .find(IpAddr::is_ipv6);
        if let Some(a) = v6 {
            return Err(DriverError::Ipv6NotSupported(a));
        }
        if let Transport::Udp { listen, peers } = &self.transport {
            self.udp_endpoints(*listen, peers)?;
        }
        Ok(())
    }

    /// The UDP transport's primary address and peers, checked: IPv4 only (the
    /// packets are IPv4), a concrete source, and peers that are not ourselves.
    fn udp_endpoints(
        &self,
        listen: SocketAddr,
        peers: &[SocketAddr],
    ) -> Result<(Ipv4Addr, Vec<SocketAddrV4>), DriverError> {
        let bad = |why: String| Err(DriverError::UdpTransport(why));
        let SocketAddr::V4(listen4) = listen else {
            return bad(format!("listen {listen}: IPv4 only"));
        };
        let primary = match self.primary_addr {
            Some(IpAddr::V4(a)) => a,
            Some(a) => return Err(DriverError::Ipv6NotSupported(a)),
            None if listen4.ip().is_unspecified() => {
                return bad(format!(
                    "listen {listen}: a wildcard address needs primary_addr (the adverts' source)"
                ))
            }
            None => *listen4.ip(),
        };
        if peers.is_empty() {
            return bad("at least one peer is needed".into());
        }
        let mut out = Vec::with_capacity(peers.len());
        for p in peers {
            match p {
                SocketAddr::V4(a) if a.ip().is_unspecified() || a.port() == 0 => {
                    return bad(format!("peer {p}: needs a concrete address and port"))
                }
                SocketAddr::V4(a) if *a == listen4 => {
                    return bad(format!("peer {p} is this instance's own listen address"))
                }
                SocketAddr::V4(a) => out.push(*a),
                SocketAddr::V6(_) => return bad(format!("peer {p}: IPv4 only")),
            }
        }
        Ok((primary, out))
    }
}

/// Errors starting an instance.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// Invalid protocol parameters.
    #[error("vrrp config: {0}")]
    Config(#[from] ConfigError),
    /// A virtual IP string that does not parse.
    #[error("invalid virtual ip {0:?} (want ADDR or ADDR/PREFIX)")]
    BadVirtualIp(String),
    /// No virtual IP configured.
    #[error("no virtual ip configured")]
    NoVirtualIp,
    /// More than 255 virtual IPs.
    #[error("too many virtual ips ({0}, at most 255)")]
    TooManyVirtualIps(usize),
    /// IPv6 is designed for but not implemented.
    #[error("IPv6 is not supported yet ({0})")]
    Ipv6NotSupported(IpAddr),
    /// The interface does not exist.
    #[error("interface {0:?} not found")]
    NoInterface(String),
    /// The interface has no usable IPv4 address or MAC.
    #[error("interface {iface:?}: {what}")]
    Interface {
        /// Interface name.
        iface: String,
        /// What is missing.
        what: &'static str,
    },
    /// Socket setup failed (raw sockets need CAP_NET_RAW).
    #[error("vrrp socket on {iface:?}: {source}")]
    Socket {
        /// Interface name.
        iface: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A UDP transport that cannot work as configured.
    #[error("vrrp udp transport: {0}")]
    UdpTransport(String),
    /// The instance task panicked or was cancelled.
    #[error("vrrp instance task failed: {0}")]
    Task(String),
}

/// The last transition, for status and notify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastTransition {
    /// Previous state.
    pub from: VrrpState,
    /// New state.
    pub to: VrrpState,
    /// Why.
    pub reason: TransitionReason,
    /// Wall-clock time of the transition.
    pub at: SystemTime,
}

/// A snapshot of one instance, published on a `watch` channel on every
/// change of state, priority or master.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrrpStatus {
    /// Interface.
    pub interface: String,
    /// VRID.
    pub vrid: u8,
    /// Current state.
    pub state: VrrpState,
    /// Configured priority.
    pub configured_priority: u8,
    /// Effective priority after tracked conditions.
    pub effective_priority: u8,
    /// Current master's address, if known (ours when master).
    pub master_addr: Option<IpAddr>,
    /// Our primary address (source of our adverts).
    pub primary_addr: IpAddr,
    /// The virtual addresses.
    pub virtual_ips: Vec<VirtualIp>,
    /// Our advertisement interval.
    pub advert_interval: Duration,
    /// Master_Adver_Interval learnt from the master, centiseconds.
    pub master_adver_interval_cs: u16,
    /// Accept mode flag.
    pub accept_mode: bool,
    /// Number of transitions since spawn.
    pub transitions: u64,
    /// The last transition.
    pub last_transition: Option<LastTransition>,
    /// When the last gratuitous ARP burst for the VIPs went out.
    pub last_garp: Option<SystemTime>,
}

/// Counters of one instance (monotonic since spawn).
#[derive(Debug, Default)]
struct Counters {
    adverts_sent: AtomicU64,
    adverts_received: AtomicU64,
    send_errors: AtomicU64,
    garp_sent: AtomicU64,
    vip_errors: AtomicU64,
    drops: [AtomicU64; DecodeError::ALL.len()],
}

/// A snapshot of the counters, for `/metrics`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrrpMetrics {
    /// Advertisements sent (each unicast copy counts).
    pub adverts_sent: u64,
    /// Valid advertisements for our VRID received.
    pub adverts_received: u64,
    /// Failed advertisement sends.
    pub send_errors: u64,
    /// Gratuitous ARP frames sent.
    pub garp_sent: u64,
    /// Failed VIP add/remove operations.
    pub vip_errors: u64,
    /// Dropped packets per reason (every reason listed, zeros included).
    pub drops: Vec<(DecodeError, u64)>,
}

impl VrrpMetrics {
    /// Drops for one reason.
    pub fn dropped(&self, reason: DecodeError) -> u64 {
        self.drops
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }
}

impl Counters {
    fn snapshot(&self) -> VrrpMetrics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        VrrpMetrics {
            adverts_sent: get(&self.adverts_sent),
            adverts_received: get(&self.adverts_received),
            send_errors: get(&self.send_errors),
            garp_sent: get(&self.garp_sent),
            vip_errors: get(&self.vip_errors),
            drops: DecodeError::ALL
                .iter()
                .map(|r| (*r, get(&self.drops[r.index()])))
                .collect(),
        }
    }
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// A running instance. Dropping it stops the instance gracefully in the
/// background; prefer [`VrrpHandle::shutdown`] to wait for it.
pub struct VrrpHandle {
    status: watch::Receiver<VrrpStatus>,
    counters: Arc<Counters>,
    control: mpsc::UnboundedSender<Control>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl VrrpHandle {
    /// The current status.
    pub fn status(&self) -> VrrpStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub fn subscribe(&self) -> watch::Receiver<VrrpStatus> {
        self.status.clone()
    }

    /// The counters.
    pub fn metrics(&self) -> VrrpMetrics {
        self.counters.snapshot()
    }

    /// A cheap, clonable read-only view for the API and metrics tasks,
    /// while the owner of the handle keeps the right to stop it.
    pub fn observer(&self) -> VrrpObserver {
        VrrpObserver {
            status: self.status.clone(),
            counters: self.counters.clone(),
        }
    }

    /// Planned handover: a master sends priority 0, removes its VIPs and
    /// waits as backup (see [`crate::state::Event::Resign`]). Lower the
    /// priority first (the penalty channel) so the new master keeps the role.
    /// Does nothing unless master.
    pub fn resign(&self) {
        let _ = self.control.send(Control::Resign);
    }

    /// A clonable handle that can only ask for [`VrrpHandle::resign`].
    pub fn resigner(&self) -> Resigner {
        Resigner(self.control.clone())
    }

    /// Graceful stop: a master sends priority 0 (backups take over after
    /// Skew_Time) and removes its VIPs. Returns when done.
    pub async fn shutdown(mut self) -> Result<(), DriverError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.task.take() {
            Some(t) => t.await.map_err(|e| DriverError::Task(e.to_string())),
            None => Ok(()),
        }
    }
}

/// Requests for a planned handover, sent to the instance task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Control {
    Resign,
    ExpectHandover,
}

/// See [`VrrpHandle::resigner`].
#[derive(Clone)]
pub struct Resigner(mpsc::UnboundedSender<Control>);

impl Resigner {
    /// See [`VrrpHandle::resign`].
    pub fn resign(&self) {
        let _ = self.0.send(Control::Resign);
    }

    /// On the drill's target: take over the moment the master resigns (see
    /// [`crate::state::Event::ExpectHandover`]).
    pub fn expect_handover(&self) {
        let _ = self.0.send(Control::ExpectHandover);
    }
}

/// Read-only view of a running instance (see [`VrrpHandle::observer`]).
#[derive(Clone)]
pub struct VrrpObserver {
    status: watch::Receiver<VrrpStatus>,
    counters: Arc<Counters>,
}

impl VrrpObserver {
    /// The current status.
    pub fn status(&self) -> VrrpStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub fn subscribe(&self) -> watch::Receiver<VrrpStatus> {
        self.status.clone()
    }

    /// The counters.
    pub fn metrics(&self) -> VrrpMetrics {
        self.counters.snapshot()
    }
}

/// Entry point: spawn one VRRP instance.
pub struct VrrpInstance;

impl VrrpInstance {
    /// Validate `cfg`, open the socket and netlink connection, and spawn
    /// the instance task on the current tokio runtime. `penalty_rx`
    /// carries the total priority penalty from tracked conditions (0 = all
    /// good); the effective priority is `priority - penalty`, at least 1.
    ///
    /// With [`Transport::Raw`] it needs CAP_NET_RAW and CAP_NET_ADMIN;
    /// [`Transport::Udp`] needs nothing. Must be called inside a tokio
    /// runtime.
    pub fn spawn(
        cfg: InstanceConfig,
        penalty_rx: watch::Receiver<u8>,
    ) -> Result<VrrpHandle, DriverError> {
        cfg.validate()?;
        let interval_cs = cfg.advert_interval_cs()?;
        let vip_addrs: Vec<IpAddr> = cfg.virtual_ips.iter().map(|v| v.addr).collect();
        let (io, primary, pkt_rx) = match &cfg.transport {
            Transport::Raw => open_raw(&cfg, &vip_addrs)?,
            Transport::Udp { listen, peers } => {
                let (primary, peers) = cfg.udp_endpoints(*listen, peers)?;
                let (udp, pkt_rx) =
                    udp::UdpTransport::open(*listen, peers, cfg.vrid).map_err(|source| {
                        DriverError::Socket {
                            iface: format!("udp {listen}"),
                            source,
                        }
                    })?;
                warn!(
                    iface = %cfg.interface,
                    vrid = cfg.vrid,
                    %listen,
                    "udp transport: no VIP is installed (demo/lab without root)"
                );
                (Io::Udp(udp), primary, pkt_rx)
            }
        };

        let mut rc = RouterConfig::new(cfg.vrid, cfg.priority, IpAddr::V4(primary));
        rc.advert_interval_cs = interval_cs;
        rc.preempt = cfg.preempt;
        rc.preempt_delay = cfg.preempt_delay;
        rc.accept_mode = cfg.accept_mode;
        let router = Router::new(rc);

        let status = VrrpStatus {
            interface: cfg.interface.clone(),
            vrid: cfg.vrid,
            state: VrrpState::Initialize,
            configured_priority: cfg.priority,
            effective_priority: cfg.priority,
            master_addr: None,
            primary_addr: IpAddr::V4(primary),
            virtual_ips: cfg.virtual_ips.clone(),
            advert_interval: cfg.advert_interval,
            master_adver_interval_cs: interval_cs,
            accept_mode: cfg.accept_mode,
            transitions: 0,
            last_transition: None,
            last_garp: None,
        };
        let (status_tx, status_rx) = watch::channel(status);
        let counters = Arc::new(Counters::default());
        let (stop_tx, stop_rx) = oneshot::channel();
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let advert = Advertisement {
            vrid: cfg.vrid,
            priority: cfg.priority,
            max_advert_int_cs: interval_cs,
            addrs: vip_addrs.clone(),
        };
        let task = Task {
            router,
            io,
            primary,
            vip_addrs,
            advert,
            status_tx,
            counters: counters.clone(),
            garp_again_at: None,
            vip_renew_at: None,
            cfg,
        };
        let join = tokio::spawn(task.run(pkt_rx, penalty_rx, control_rx, stop_rx));
        Ok(VrrpHandle {
            status: status_rx,
            counters,
            control: control_tx,
            stop: Some(stop_tx),
            task: Some(join),
        })
    }
}

/// Looks up the interface, opens the raw socket and the netlink connection.
fn open_raw(
    cfg: &InstanceConfig,
    vip_addrs: &[IpAddr],
) -> Result<(Io, Ipv4Addr, mpsc::Receiver<raw::Received>), DriverError> {
    let iface = pnet::datalink::interfaces()
        .into_iter()
        .find(|i| i.name == cfg.interface)
        .ok_or_else(|| DriverError::NoInterface(cfg.interface.clone()))?;
    let mac = iface
        .mac
        .map(|m| m.octets())
        .ok_or(DriverError::Interface {
            iface: cfg.interface.clone(),
            what: "no MAC address",
        })?;
    let primary = match cfg.primary_addr {
        Some(IpAddr::V4(a)) => a,
        _ => iface
            .ips
            .iter()
            .filter_map(|n| match n.ip() {
                IpAddr::V4(a) if !vip_addrs.contains(&IpAddr::V4(a)) => Some(a),
                _ => None,
            })
            .next()
            .ok_or(DriverError::Interface {
                iface: cfg.interface.clone(),
                what: "no IPv4 address (other than a VIP) to send from",
            })?,
    };
    let sock_err = |source| DriverError::Socket {
        iface: cfg.interface.clone(),
        source,
    };
    let (sock, pkt_rx) =
        raw::RawSocket::open(&cfg.interface, iface.index, primary, cfg.vrid).map_err(sock_err)?;
    let nl = netlink::Netlink::connect().map_err(sock_err)?;
    let io = Io::Raw(RawIo {
        sock,
        nl,
        ifindex: iface.index,
        iface,
        mac,
    });
    Ok((io, primary, pkt_rx))
}

/// The system side of one instance (see [`Transport`]).
enum Io {
    Raw(RawIo),
    Udp(udp::UdpTransport),
}

struct RawIo {
    sock: raw::RawSocket,
    nl: netlink::Netlink,
    ifindex: u32,
    /// The interface as pnet sees it (for GARP).
    iface: pnet::datalink::NetworkInterface,
    mac: [u8; 6],
}

struct Task {
    cfg: InstanceConfig,
    router: Router,
    io: Io,
    primary: Ipv4Addr,
    vip_addrs: Vec<IpAddr>,
    /// Template of our advertisement (priority set per send).
    advert: Advertisement,
    status_tx: watch::Sender<VrrpStatus>,
    counters: Arc<Counters>,
    /// When to send the second GARP burst (master only).
    garp_again_at: Option<Instant>,
    /// When to renew VIP lifetimes (master with `vip_lifetime` only).
    vip_renew_at: Option<Instant>,
}

/// Queued packets handled before a timer (see `Task::run`).
const MAX_DRAIN: usize = 64;

fn effective(priority: u8, penalty: u8) -> u8 {
    priority.saturating_sub(penalty).max(1)
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Task {
    async fn run(
        mut self,
        mut pkt_rx: mpsc::Receiver<raw::Received>,
        mut penalty_rx: watch::Receiver<u8>,
        mut control_rx: mpsc::UnboundedReceiver<Control>,
        mut stop_rx: oneshot::Receiver<()>,
    ) {
        let epoch = Instant::now();
        let since = |t: Instant| t.saturating_duration_since(epoch);
        info!(
            iface = %self.cfg.interface,
            vrid = self.cfg.vrid,
            priority = self.cfg.priority,
            src = %self.primary,
            "vrrp instance starting"
        );
        // Tracked conditions apply before startup, so Skew_Time already
        // uses the effective priority.
        let penalty = *penalty_rx.borrow_and_update();
        if penalty > 0 {
            let a = self.router.handle(
                since(Instant::now()),
                Event::PriorityChanged(effective(self.cfg.priority, penalty)),
            );
            self.execute(a).await;
        }
        let a = self.router.handle(since(Instant::now()), Event::Startup);
        self.execute(a).await;
        let mut penalty_open = true;

        loop {
            let deadline = self.router.next_deadline().map(|d| epoch + d);
            tokio::select! {
                // Graceful stop, or the handle was dropped.
                _ = &mut stop_rx => break,
                pkt = pkt_rx.recv() => match pkt {
                    Some(pkt) => self.packet(pkt, epoch).await,
                    // The receive thread ended (only on shutdown).
                    None => break,
                },
                Some(control) = control_rx.recv() => {
                    let event = match control {
                        Control::Resign => Event::Resign,
                        Control::ExpectHandover => Event::ExpectHandover,
                    };
                    let a = self.router.handle(since(Instant::now()), event);
                    self.execute(a).await;
                }
                changed = penalty_rx.changed(), if penalty_open => {
                    match changed {
                        Ok(()) => {
                            let p = effective(self.cfg.priority, *penalty_rx.borrow_and_update());
                            let a = self.router.handle(since(Instant::now()), Event::PriorityChanged(p));
                            self.execute(a).await;
                        }
                        // The tracker is gone: keep the last priority.
                        Err(_) => penalty_open = false,
                    }
                }
                _ = sleep_until_opt(deadline) => {
                    // If this task ran late (a starved CPU), adverts that
                    // arrived before the deadline may still be queued:
                    // handle them first, at their arrival time, so a live
                    // master is not declared down. Bounded, so a packet
                    // flood cannot hold the timers back.
                    for _ in 0..MAX_DRAIN {
                        match pkt_rx.try_recv() {
                            Ok(pkt) => self.packet(pkt, epoch).await,
                            Err(_) => break,
                        }
                    }
                    let now = since(Instant::now());
                    if self.router.next_deadline().is_some_and(|d| d <= now) {
                        let a = self.router.handle(now, Event::Timer);
                        self.execute(a).await;
                    }
                }
                _ = sleep_until_opt(self.garp_again_at) => {
                    self.garp_again_at = None;
                    if self.router.state() == VrrpState::Master {
                        self.garp().await;
                    }
                }
                _ = sleep_until_opt(self.vip_renew_at) => {
                    self.vip_renew_at = None;
                    if self.router.state() == VrrpState::Master {
                        self.add_vips().await;
                    }
                }
            }
        }
        let a = self.router.handle(since(Instant::now()), Event::Shutdown);
        self.execute(a).await;
        info!(iface = %self.cfg.interface, vrid = self.cfg.vrid, "vrrp instance stopped");
    }

    /// Handle one received packet at its arrival time.
    async fn packet(&mut self, pkt: raw::Received, epoch: Instant) {
        if let Some(ev) = self.receive(&pkt.bytes) {
            let at = Instant::from_std(pkt.at).saturating_duration_since(epoch);
            let a = self.router.handle(at, ev);
            self.execute(a).await;
        }
    }

    /// Decode and filter one received packet (RFC 9568 §7.1); count drops.
    fn receive(&self, pkt: &[u8]) -> Option<Event> {
        let r = filter_packet(
            pkt,
            &ReceiveFilter {
                accept: self.cfg.checksum_accept,
                primary: self.primary,
                peers: &self.cfg.unicast_peers,
                vrid: self.cfg.vrid,
                vips: &self.vip_addrs,
            },
        );
        match r {
            Ok(r) => {
                bump(&self.counters.adverts_received, 1);
                debug!(
                    src = %r.ip.src,
                    priority = r.advert.priority,
                    interval_cs = r.advert.max_advert_int_cs,
                    checksum = r.checksum.as_str(),
                    "advert"
                );
                Some(Event::AdvertReceived(AdvertInfo {
                    src: IpAddr::V4(r.ip.src),
                    priority: r.advert.priority,
                    max_advert_int_cs: r.advert.max_advert_int_cs,
                }))
            }
            Err(e) => {
                let count = self.counters.drops[e.index()].fetch_add(1, Ordering::Relaxed) + 1;
                let src = src_of(pkt);
                // Other VRIDs on the same link are normal: no warning. A
                // flood of bad packets must not flood the log either: warn
                // for the first ten of a reason, then at powers of two.
                if e != DecodeError::WrongVrid && (count <= 10 || count.is_power_of_two()) {
                    warn!(%src, reason = e.as_str(), count, "dropped advert");
                } else {
                    debug!(%src, reason = e.as_str(), count, "dropped advert");
                }
                None
            }
        }
    }

    async fn execute(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::SendAdvert { priority } => self.send_advert(priority),
                Action::AddVips => {
                    self.add_vips().await;
                }
                Action::RemoveVips => {
                    self.vip_renew_at = None;
                    self.garp_again_at = None;
                    self.remove_vips().await;
                }
                Action::SendGratuitousArp => {
                    self.garp().await;
                    self.garp_again_at = self.cfg.garp.repeat_delay.map(|d| Instant::now() + d);
                }
                Action::Transition { from, to, reason } => {
                    info!(
                        iface = %self.cfg.interface,
                        vrid = self.cfg.vrid,
                        from = from.as_str(),
                        to = to.as_str(),
                        reason = reason.as_str(),
                        priority = self.router.priority(),
                        "vrrp transition"
                    );
                    self.status_tx.send_modify(|s| {
                        // Watchers woken by this change must see the new state too.
                        s.state = to;
                        s.transitions += 1;
                        s.last_transition = Some(LastTransition {
                            from,
                            to,
                            reason,
                            at: SystemTime::now(),
                        });
                    });
                    if let Some(n) = &self.cfg.notify {
                        notify::run(
                            n,
                            notify::Transition {
                                from,
                                to,
                                reason,
                                vrid: self.cfg.vrid,
                                interface: &self.cfg.interface,
                                priority: self.router.priority(),
                            },
                        );
                    }
                }
            }
        }
        self.publish();
    }

    /// Refresh the status fields that follow the router.
    fn publish(&self) {
        let r = &self.router;
        self.status_tx.send_if_modified(|s| {
            let new = (
                r.state(),
                r.priority(),
                r.master_addr(),
                r.master_adver_interval_cs(),
            );
            let old = (
                s.state,
                s.effective_priority,
                s.master_addr,
                s.master_adver_interval_cs,
            );
            if new == old {
                return false;
            }
            s.state = new.0;
            s.effective_priority = new.1;
            s.master_addr = new.2;
            s.master_adver_interval_cs = new.3;
            true
        });
    }

    fn send_advert(&mut self, priority: u8) {
        self.advert.priority = priority;
        // (header destination, UDP peer): with UDP each peer gets the packet
        // a unicast advert to its address would be.
        let dsts: Vec<(Ipv4Addr, Option<SocketAddrV4>)> = match &self.io {
            Io::Udp(udp) => udp.peers().iter().map(|p| (*p.ip(), Some(*p))).collect(),
            Io::Raw(_) if self.cfg.unicast_peers.is_empty() => vec![(VRRP_MULTICAST_V4, None)],
            Io::Raw(_) => self
                .cfg
                .unicast_peers
                .iter()
                .filter_map(|p| match p {
                    IpAddr::V4(a) => Some((*a, None)),
                    IpAddr::V6(_) => None,
                })
                .collect(),
        };
        for (dst, peer) in dsts {
            let hdr = Ipv4Header::vrrp(self.primary, dst);
            let res = self
                .advert
                .encode_ipv4_packet(&hdr, self.cfg.checksum_send)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
                .and_then(|p| match (&mut self.io, peer) {
                    (Io::Udp(udp), Some(peer)) => udp.send(&p, peer),
                    (Io::Raw(raw), _) => raw.sock.send(&p, dst),
                    // Not built: every UDP target above carries its peer.
                    (Io::Udp(_), None) => Ok(()),
                });
            match res {
                Ok(()) => bump(&self.counters.adverts_sent, 1),
                Err(e) => {
                    bump(&self.counters.send_errors, 1);
                    warn!(%dst, error = %e, "advert send failed");
                }
            }
        }
    }

    async fn add_vips(&mut self) {
        // UDP transport: no VIP to add (said once at spawn), so none to renew.
        let Io::Raw(raw) = &self.io else { return };
        for vip in &self.cfg.virtual_ips {
            match raw.nl.add(raw.ifindex, vip, self.cfg.vip_lifetime).await {
                Ok(()) => debug!(%vip, "vip added"),
                Err(e) => {
                    bump(&self.counters.vip_errors, 1);
                    warn!(%vip, error = %e, "vip add failed");
                }
            }
        }
        // Renew well before the lifetime runs out (several missed renewals
        // are needed before a live master loses its VIP).
        self.vip_renew_at = self
            .cfg
            .vip_lifetime
            .map(|l| Instant::now() + (l.max(Duration::from_secs(1)) / 3));
    }

    async fn remove_vips(&mut self) {
        let Io::Raw(raw) = &self.io else { return };
        for vip in &self.cfg.virtual_ips {
            match raw.nl.remove(raw.ifindex, vip).await {
                Ok(true) => info!(%vip, "vip removed"),
                Ok(false) => {}
                Err(e) => {
                    bump(&self.counters.vip_errors, 1);
                    warn!(%vip, error = %e, "vip remove failed");
                }
            }
        }
    }

    async fn garp(&mut self) {
        let v4: Vec<Ipv4Addr> = self
            .vip_addrs
            .iter()
            .filter_map(|a| match a {
                IpAddr::V4(a) => Some(*a),
                IpAddr::V6(_) => None,
            })
            .collect();
        if v4.is_empty() || self.cfg.garp.count == 0 {
            return;
        }
        let raw = match &self.io {
            Io::Raw(raw) => raw,
            Io::Udp(_) => {
                // Nothing goes out, but the moment the burst would have is
                // recorded: drill reports and timelines read `last_garp` as
                // "the new master announced the VIP", in labs too.
                let at = SystemTime::now();
                self.status_tx.send_modify(|s| s.last_garp = Some(at));
                return;
            }
        };
        let (iface, mac, count) = (raw.iface.clone(), raw.mac, self.cfg.garp.count);
        let res =
            tokio::task::spawn_blocking(move || garp::send_burst(&iface, mac, &v4, count)).await;
        match res {
            Ok(Ok(n)) => {
                bump(&self.counters.garp_sent, n);
                let at = SystemTime::now();
                self.status_tx.send_modify(|s| s.last_garp = Some(at));
            }
            Ok(Err(e)) => warn!(error = %e, "gratuitous ARP failed"),
            Err(e) => warn!(error = %e, "gratuitous ARP task failed"),
        }
    }
}

/// What a received packet is checked against.
struct ReceiveFilter<'a> {
    accept: ChecksumAccept,
    primary: Ipv4Addr,
    peers: &'a [IpAddr],
    vrid: u8,
    vips: &'a [IpAddr],
}

/// Every receive check, in the order of RFC 9568 §7.1, plus ours: own
/// packets (looped back) and, in unicast mode, unknown senders.
fn filter_packet(
    pkt: &[u8],
    f: &ReceiveFilter<'_>,
) -> Result<crate::packet::ReceivedV4, DecodeError> {
    let r = Advertisement::decode_ipv4_packet(pkt, f.accept)?;
    if r.ip.src == f.primary {
        return Err(DecodeError::OwnPacket);
    }
    if !f.peers.is_empty() && !f.peers.contains(&IpAddr::V4(r.ip.src)) {
        return Err(DecodeError::UnknownPeer);
    }
    r.advert.check_against(f.vrid, f.vips)?;
    Ok(r)
}

/// The IPv4 source of a packet, for logs, if the header is there at all.
fn src_of(pkt: &[u8]) -> IpAddr {
    match pkt.get(12..16) {
        Some(b) => IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])),
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_ip_parsing() {
        let v: VirtualIp = "198.18.0.100/24".parse().expect("parse");
        assert_eq!(v.addr, IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100)));
        assert_eq!(v.prefix_len, 24);
        assert_eq!(v.to_string(), "198.18.0.100/24");
        let v: VirtualIp = "198.18.0.100".parse().expect("parse");
        assert_eq!(v.prefix_len, 32);
        assert!("198.18.0.100/33".parse::<VirtualIp>().is_err());
        assert!("nope/24".parse::<VirtualIp>().is_err());
    }

    fn cfg() -> InstanceConfig {
        InstanceConfig::new(
            "eth0",
            51,
            150,
            vec!["198.18.0.100/24".parse().expect("vip")],
        )
    }

    #[test]
    fn config_validation() {
        assert!(cfg().validate().is_ok());
        assert_eq!(cfg().advert_interval_cs().ok(), Some(100));
        let mut c = cfg();
        c.advert_interval = Duration::from_millis(100);
        assert_eq!(c.advert_interval_cs().ok(), Some(10));
        c.advert_interval = Duration::from_millis(105);
        assert!(c.validate().is_err());
        c.advert_interval = Duration::from_secs(41);
        assert!(c.validate().is_err());
        let mut c = cfg();
        c.virtual_ips.clear();
        assert!(matches!(c.validate(), Err(DriverError::NoVirtualIp)));
        let mut c = cfg();
        c.vrid = 0;
        assert!(matches!(c.validate(), Err(DriverError::Config(_))));
        let mut c = cfg();
        c.virtual_ips.push("2001:db8::1/64".parse().expect("v6"));
        assert!(matches!(
            c.validate(),
            Err(DriverError::Ipv6NotSupported(_))
        ));
    }

    #[test]
    fn receive_filter() {
        let lb1 = Ipv4Addr::new(198, 18, 0, 11);
        let lb2 = Ipv4Addr::new(198, 18, 0, 12);
        let vips = [IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100))];
        let adv = Advertisement {
            vrid: 51,
            priority: 100,
            max_advert_int_cs: 100,
            addrs: vips.to_vec(),
        };
        let pkt = adv
            .encode_ipv4_packet(
                &Ipv4Header::vrrp(lb2, VRRP_MULTICAST_V4),
                ChecksumMode::PseudoHeader,
            )
            .expect("encode");
        let mut f = ReceiveFilter {
            accept: ChecksumAccept::Either,
            primary: lb1,
            peers: &[],
            vrid: 51,
            vips: &vips,
        };
        assert!(filter_packet(&pkt, &f).is_ok());
        f.primary = lb2;
        assert_eq!(filter_packet(&pkt, &f).err(), Some(DecodeError::OwnPacket));
        f.primary = lb1;
        let peers = [IpAddr::V4(Ipv4Addr::new(198, 18, 0, 13))];
        f.peers = &peers;
        assert_eq!(
            filter_packet(&pkt, &f).err(),
            Some(DecodeError::UnknownPeer)
        );
        f.peers = &[];
        f.vrid = 52;
        assert_eq!(filter_packet(&pkt, &f).err(), Some(DecodeError::WrongVrid));
        f.vrid = 51;
        let other = [IpAddr::V4(Ipv4Addr::new(198, 18, 0, 101))];
        f.vips = &other;
        assert_eq!(
            filter_packet(&pkt, &f).err(),
            Some(DecodeError::AddressMismatch)
        );
        assert_eq!(
            filter_packet(&pkt[..10], &f).err(),
            Some(DecodeError::Truncated)
        );
    }

    #[test]
    fn effective_priority_never_reaches_zero() {
        assert_eq!(effective(150, 0), 150);
        assert_eq!(effective(150, 50), 100);
        assert_eq!(effective(150, 200), 1);
    }

    #[test]
    fn metrics_snapshot_lists_every_reason() {
        let c = Counters::default();
        bump(&c.drops[DecodeError::TtlNot255.index()], 2);
        let m = c.snapshot();
        assert_eq!(m.drops.len(), DecodeError::ALL.len());
        assert_eq!(m.dropped(DecodeError::TtlNot255), 2);
        assert_eq!(m.dropped(DecodeError::BadChecksum), 0);
    }
}
