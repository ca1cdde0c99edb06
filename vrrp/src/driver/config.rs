//! What an instance is configured with, validated before anything touches the system.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use crate::packet::{ChecksumAccept, ChecksumMode};
use crate::state::{ConfigError, RouterConfig};

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

/// How a new instance starts, from what the previous process of this node left
/// (a live upgrade: the old process gives its instance up with
/// [`super::VrrpHandle::abandon`], the new one starts with the result's
/// [`super::Abandoned::resume`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Resume {
    /// The normal start (RFC 9568 §6.4.1): Backup, VIPs removed, Master only
    /// after Master_Down_Interval. Also right when the predecessor was backup.
    #[default]
    Backup,
    /// The predecessor was master and left without a word: start in Master,
    /// advertise at once (before the VIPs are touched), keep the VIPs that are
    /// still on the interface, no notify command (the mastership continues;
    /// see [`crate::state::Event::ResumeMaster`]).
    Master {
        /// When the predecessor sent its last advert (wall clock, so it can
        /// cross processes), if known: only logged, as the handover's gap.
        last_advert: Option<SystemTime>,
        /// The predecessor's primary address, if known: only compared with
        /// ours (a different one is a new master address to the backups).
        primary_addr: Option<IpAddr>,
    },
}

impl Resume {
    /// [`Resume::Master`] with nothing known about the predecessor.
    pub fn master() -> Self {
        Resume::Master {
            last_advert: None,
            primary_addr: None,
        }
    }

    /// Whether the instance starts in Master.
    pub fn is_master(&self) -> bool {
        matches!(self, Resume::Master { .. })
    }
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
    /// Start normally ([`Resume::Backup`], the default) or continue the
    /// mastership of the process this one replaces ([`Resume::Master`]).
    pub resume: Resume,
}

impl InstanceConfig {
    /// A config with keepalived-like defaults: 1 s adverts, preempt, no
    /// preempt delay, accept mode, multicast, pseudo-header checksum, GARP
    /// 5 + 5 after 5 s, no notify, permanent VIPs, normal start.
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
            resume: Resume::Backup,
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
    pub(super) fn udp_endpoints(
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
    /// The instance had stopped already (its receive side ended), so there
    /// was nothing left to abandon.
    #[error("vrrp instance had already stopped")]
    Stopped,
    /// The instance task panicked or was cancelled.
    #[error("vrrp instance task failed: {0}")]
    Task(String),
}
