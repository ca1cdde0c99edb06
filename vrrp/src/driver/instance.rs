//! The instance task: opens the transport and runs the router's actions against the
//! socket, timers, VIPs and notify command.

use super::config::*;
use super::handle::*;
use super::status::*;
use super::{garp, netlink, notify, raw, udp};
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::packet::{Advertisement, ChecksumAccept, DecodeError, Ipv4Header, VRRP_MULTICAST_V4};
use crate::state::{Action, AdvertInfo, Event, Router, RouterConfig, TransitionReason, VrrpState};

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
            last_advert: None,
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
pub(super) fn open_raw(
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
pub(super) enum Io {
    Raw(RawIo),
    Udp(udp::UdpTransport),
}

pub(super) struct RawIo {
    pub(super) sock: raw::RawSocket,
    pub(super) nl: netlink::Netlink,
    pub(super) ifindex: u32,
    /// The interface as pnet sees it (for GARP).
    pub(super) iface: pnet::datalink::NetworkInterface,
    pub(super) mac: [u8; 6],
}

pub(super) struct Task {
    pub(super) cfg: InstanceConfig,
    pub(super) router: Router,
    pub(super) io: Io,
    pub(super) primary: Ipv4Addr,
    pub(super) vip_addrs: Vec<IpAddr>,
    /// Template of our advertisement (priority set per send).
    pub(super) advert: Advertisement,
    pub(super) status_tx: watch::Sender<VrrpStatus>,
    pub(super) counters: Arc<Counters>,
    /// When to send the second GARP burst (master only).
    pub(super) garp_again_at: Option<Instant>,
    /// When to renew VIP lifetimes (master with `vip_lifetime` only).
    pub(super) vip_renew_at: Option<Instant>,
    /// When our last advert with a non-zero priority went out (for an abandon).
    pub(super) last_advert: Option<SystemTime>,
}

/// Queued packets handled before a timer (see `Task::run`).
pub(super) const MAX_DRAIN: usize = 64;

pub(super) fn effective(priority: u8, penalty: u8) -> u8 {
    priority.saturating_sub(penalty).max(1)
}

pub(super) async fn sleep_until_opt(at: Option<Instant>) {
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
        mut stop_rx: oneshot::Receiver<Stop>,
    ) -> Option<Abandoned> {
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
        let start = if self.cfg.resume.is_master() {
            self.log_resume();
            Event::ResumeMaster
        } else {
            Event::Startup
        };
        let a = self.router.handle(since(Instant::now()), start);
        self.execute(a).await;
        let mut penalty_open = true;

        let stop = loop {
            let deadline = self.router.next_deadline().map(|d| epoch + d);
            tokio::select! {
                // A stop request; a dropped handle is a graceful stop.
                stop = &mut stop_rx => break stop.unwrap_or(Stop::Graceful),
                pkt = pkt_rx.recv() => match pkt {
                    Some(pkt) => self.packet(pkt, epoch).await,
                    // The receive thread ended (only on shutdown).
                    None => break Stop::Graceful,
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
        };
        let abandoned = match stop {
            Stop::Abandon => {
                // No Shutdown event: its priority-0 advert, VIP removal and
                // notify are exactly what the successor must not see.
                let a = Abandoned {
                    state: self.router.state(),
                    priority: self.router.priority(),
                    primary_addr: IpAddr::V4(self.primary),
                    last_advert: self.last_advert,
                };
                let since_last = a.last_advert.and_then(|t| t.elapsed().ok());
                info!(
                    iface = %self.cfg.interface,
                    vrid = self.cfg.vrid,
                    state = a.state.as_str(),
                    priority = a.priority,
                    since_last_advert_ms = since_last.map(|d| d.as_millis() as u64),
                    "vrrp instance abandoned: nothing sent, VIPs left in place for the successor"
                );
                Some(a)
            }
            Stop::Graceful => {
                let a = self.router.handle(since(Instant::now()), Event::Shutdown);
                self.execute(a).await;
                info!(iface = %self.cfg.interface, vrid = self.cfg.vrid, "vrrp instance stopped");
                None
            }
        };
        // Close the sockets before returning, so whoever waited on this task
        // can bind the same UDP address at once (the successor of an abandon).
        // The raw socket's receive thread closes its half within its poll
        // interval; a second raw socket on the interface is no conflict.
        if let Io::Udp(udp) = self.io {
            udp.close().await;
        }
        abandoned
    }

    /// Say that this start continues a predecessor's mastership, and how long the
    /// backups have gone without an advert.
    fn log_resume(&self) {
        let Resume::Master {
            last_advert,
            primary_addr,
        } = self.cfg.resume
        else {
            return;
        };
        let gap = last_advert.and_then(|t| t.elapsed().ok());
        info!(
            iface = %self.cfg.interface,
            vrid = self.cfg.vrid,
            priority = self.router.priority(),
            src = %self.primary,
            gap_ms = gap.map(|d| d.as_millis() as u64),
            "vrrp resuming as master: advertising at once, VIPs kept"
        );
        // Master_Down_Interval is at least three intervals: past that, a backup may
        // have taken over; our advert settles it by the usual rules (the higher
        // priority, then the higher address, stays master).
        if gap.is_some_and(|g| g >= self.cfg.advert_interval * 3) {
            warn!(
                vrid = self.cfg.vrid,
                gap_ms = gap.map(|d| d.as_millis() as u64),
                "vrrp resume: the predecessor's last advert is old; a backup may have taken over"
            );
        }
        if let Some(old) = primary_addr.filter(|a| *a != IpAddr::V4(self.primary)) {
            warn!(
                vrid = self.cfg.vrid,
                predecessor = %old,
                src = %self.primary,
                "vrrp resume: primary address differs from the predecessor's; backups see a new master address"
            );
        }
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
                    // A resumed mastership is the predecessor's, whose notify
                    // already ran for it; running it again would tell the
                    // scripts about a takeover that did not happen.
                    let notify = self
                        .cfg
                        .notify
                        .as_ref()
                        .filter(|_| reason != TransitionReason::Resumed);
                    if let Some(n) = notify {
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
                Ok(()) => {
                    bump(&self.counters.adverts_sent, 1);
                    if priority > 0 {
                        self.last_advert = Some(SystemTime::now());
                    }
                }
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
pub(super) struct ReceiveFilter<'a> {
    pub(super) accept: ChecksumAccept,
    pub(super) primary: Ipv4Addr,
    pub(super) peers: &'a [IpAddr],
    pub(super) vrid: u8,
    pub(super) vips: &'a [IpAddr],
}

/// Every receive check, in the order of RFC 9568 §7.1, plus ours: own
/// packets (looped back) and, in unicast mode, unknown senders.
pub(super) fn filter_packet(
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
pub(super) fn src_of(pkt: &[u8]) -> IpAddr {
    match pkt.get(12..16) {
        Some(b) => IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])),
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::ChecksumMode;

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
