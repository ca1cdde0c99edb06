//! Pure VRRPv3 state machine of one virtual router (RFC 9568 §6, which
//! keeps RFC 5798 §6's Initialize/Backup/Master machine).
//!
//! Sans-IO: [`Router::handle`] takes the current time and an [`Event`] and
//! returns the [`Action`]s to perform; [`Router::next_deadline`] tells the
//! driver when to call back with [`Event::Timer`]. The router never reads a
//! clock and never touches a socket: the driver (`crate::driver`) owns both,
//! and tests drive it with a manual clock (see the simulated LAN in
//! `crate::sim`). Time is a [`Duration`] since any epoch the caller picks,
//! as long as it is monotonic.
//!
//! Timers are computed in **integer centiseconds**, the unit of the
//! advertisement interval on the wire (RFC 9568 §5.2.7): an implementation
//! that computes Skew_Time in whole seconds truncates it to zero.
//!
//! Additions to the RFC, all from keepalived's practice:
//! - `preempt_delay`: for this long after startup a backup does not preempt
//!   a lower-priority master (it treats it as if preemption were off), so a
//!   rebooted node can settle before taking the VIP back.
//! - Entering Backup always emits [`Action::RemoveVips`], including at
//!   startup, so a VIP left on the interface by a crashed earlier run is
//!   removed (two hosts answering ARP for the VIP is the failure keepalived
//!   shows after `kill -9`).
//! - The effective priority can be lowered at run time by tracked
//!   conditions ([`Event::PriorityChanged`]).
//! - A live upgrade: the new process's router starts straight in Master
//!   when the old process's was master ([`Event::ResumeMaster`]), so the
//!   mastership continues instead of being lost and won again.

use std::net::IpAddr;
use std::time::Duration;

use crate::packet::MAX_ADVERT_INTERVAL_CS;

/// The three states of RFC 9568 §6.4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VrrpState {
    /// Not running (before startup or after shutdown).
    Initialize,
    /// Monitoring the master; holds no VIP.
    Backup,
    /// Holds the VIPs and advertises.
    Master,
}

impl VrrpState {
    /// Stable label for logs, metrics and the notify command.
    pub fn as_str(self) -> &'static str {
        match self {
            VrrpState::Initialize => "initialize",
            VrrpState::Backup => "backup",
            VrrpState::Master => "master",
        }
    }
}

/// Why a transition happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransitionReason {
    /// Startup event, not the address owner: wait as backup (RFC 9568 §6.4.1).
    Startup,
    /// Startup as the address owner, priority 255 (RFC 9568 §6.4.1).
    AddressOwner,
    /// No advertisement for Master_Down_Interval (RFC 9568 §6.4.2).
    MasterDown,
    /// The master sent priority 0 and Skew_Time passed (RFC 9568 §6.4.2).
    MasterResigned,
    /// An advertisement with a higher priority, or equal priority and a
    /// higher primary address (RFC 9568 §6.4.3).
    Preempted,
    /// Shutdown event (RFC 9568 §6.4.2, §6.4.3).
    Shutdown,
    /// The master handed over on request (a planned failover drill).
    Resigned,
    /// Started in Master because the previous process of this node was
    /// master (a live upgrade, [`Event::ResumeMaster`]): the same mastership
    /// continuing, not a takeover.
    Resumed,
}

impl TransitionReason {
    /// Stable label for logs, metrics and the notify command.
    pub fn as_str(self) -> &'static str {
        match self {
            TransitionReason::Startup => "startup",
            TransitionReason::AddressOwner => "address_owner",
            TransitionReason::MasterDown => "master_down",
            TransitionReason::MasterResigned => "master_resigned",
            TransitionReason::Preempted => "preempted",
            TransitionReason::Shutdown => "shutdown",
            TransitionReason::Resigned => "resigned",
            TransitionReason::Resumed => "resumed",
        }
    }
}

/// The fields of a received, already validated advertisement that the state
/// machine needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdvertInfo {
    /// IP source address: the sender's primary address.
    pub src: IpAddr,
    /// Sender's priority (0 = resigning, 255 = owner).
    pub priority: u8,
    /// Sender's Max Adver Int, centiseconds (non-zero: the codec drops 0).
    pub max_advert_int_cs: u16,
}

/// An input to the state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Start the virtual router (RFC 9568 §6.4.1).
    Startup,
    /// Start the virtual router directly in Master, instead of [`Event::Startup`]:
    /// the previous process of this node (a live upgrade) was master until a moment
    /// ago and stopped without a word (no priority-0 advert, VIPs left in place).
    /// RFC 9568 §6.4.1's Initialize → Master path, taken as the address owner
    /// would take it, but the adverts keep our (effective) priority, so the backups
    /// see the same master advertising on as before and nothing changes for them.
    /// The advert comes first among the actions, before the VIPs are (re)installed,
    /// so it is not delayed by the driver's netlink round trip; no gratuitous ARP,
    /// because the VIP never moved. Afterwards a normal master: a higher priority
    /// still preempts it. Ignored unless in Initialize.
    ResumeMaster,
    /// Stop it; a master resigns with priority 0.
    Shutdown,
    /// Hand mastership over without stopping (a planned failover): a master
    /// sends priority 0, drops its VIPs and waits as backup. The caller lowers
    /// the priority first, so that the backup it hands over to keeps the role.
    Resign,
    /// A planned handover to this router is under way: when the master's
    /// priority-0 advert comes (within 10 s), take over at once instead of
    /// after Skew_Time, so the VIP is unowned for a round trip, not for
    /// Skew_Time (0.6 s at 1 s adverts and priority 100).
    ExpectHandover,
    /// A valid advertisement for our VRID.
    AdvertReceived(AdvertInfo),
    /// The time returned by [`Router::next_deadline`] has come.
    Timer,
    /// The effective priority computed from tracked conditions (clamped to
    /// 1..=254; ignored by the address owner, whose priority stays 255).
    PriorityChanged(u8),
}

/// An effect the driver must carry out, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send an advertisement with this priority (and our configured
    /// interval and addresses).
    SendAdvert {
        /// Priority field to send (0 when resigning).
        priority: u8,
    },
    /// Configure the virtual addresses on the interface.
    AddVips,
    /// Remove the virtual addresses from the interface (idempotent).
    RemoveVips,
    /// Broadcast gratuitous ARP for each IPv4 virtual address.
    SendGratuitousArp,
    /// The state changed (run the notify command, update status).
    Transition {
        /// Previous state.
        from: VrrpState,
        /// New state.
        to: VrrpState,
        /// Why.
        reason: TransitionReason,
    },
}

/// Invalid router configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// VRID must be 1..=255.
    #[error("vrid must be 1..=255, got {0}")]
    Vrid(u8),
    /// Priority must be 1..=255 (0 is reserved for resigning).
    #[error("priority must be 1..=255, got {0}")]
    Priority(u8),
    /// Advertisement interval must be 1..=4095 centiseconds (10 ms to 40.95 s).
    #[error("advert interval must be 10ms..=40.95s (1..=4095 centiseconds), got {0} cs")]
    AdvertInterval(u32),
}

/// Static parameters of one virtual router (RFC 9568 §6.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterConfig {
    /// Virtual router id, 1..=255.
    pub vrid: u8,
    /// Configured priority; 255 means we own the addresses.
    pub priority: u8,
    /// Advertisement_Interval in centiseconds (100 = 1 s).
    pub advert_interval_cs: u16,
    /// Our primary address on the interface (source of our adverts; the
    /// tie-breaker between equal priorities).
    pub primary_addr: IpAddr,
    /// Preempt_Mode: take over from a lower-priority master.
    pub preempt: bool,
    /// Do not preempt until this long after startup (keepalived's
    /// `preempt_delay`).
    pub preempt_delay: Duration,
    /// Accept_Mode (RFC 9568 §6.1): a master accepts packets addressed to
    /// the VIPs. A load balancer must, so it defaults to true; the flag is
    /// reported, the driver does not filter.
    pub accept_mode: bool,
}

impl RouterConfig {
    /// A config with keepalived-like defaults: 1 s adverts, preempt on, no
    /// preempt delay, accept mode on.
    pub fn new(vrid: u8, priority: u8, primary_addr: IpAddr) -> Self {
        RouterConfig {
            vrid,
            priority,
            advert_interval_cs: 100,
            primary_addr,
            preempt: true,
            preempt_delay: Duration::ZERO,
            accept_mode: true,
        }
    }

    /// Check the ranges of RFC 9568 §5.2.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vrid == 0 {
            return Err(ConfigError::Vrid(self.vrid));
        }
        if self.priority == 0 {
            return Err(ConfigError::Priority(self.priority));
        }
        if self.advert_interval_cs == 0 || self.advert_interval_cs > MAX_ADVERT_INTERVAL_CS {
            return Err(ConfigError::AdvertInterval(u32::from(
                self.advert_interval_cs,
            )));
        }
        Ok(())
    }

    /// Whether this router owns the virtual addresses (priority 255).
    pub fn is_owner(&self) -> bool {
        self.priority == 255
    }
}

/// Skew_Time = ((256 - Priority) * Master_Adver_Interval) / 256, in
/// centiseconds, integer division (RFC 9568 §6.1).
pub fn skew_time_cs(priority: u8, master_adver_interval_cs: u16) -> u32 {
    (256 - u32::from(priority)) * u32::from(master_adver_interval_cs) / 256
}

/// Master_Down_Interval = 3 * Master_Adver_Interval + Skew_Time, in
/// centiseconds (RFC 9568 §6.1).
pub fn master_down_interval_cs(priority: u8, master_adver_interval_cs: u16) -> u32 {
    3 * u32::from(master_adver_interval_cs) + skew_time_cs(priority, master_adver_interval_cs)
}

/// Centiseconds to a [`Duration`].
pub fn cs(n: u32) -> Duration {
    Duration::from_millis(u64::from(n) * 10)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// Master: send the next advertisement (Adver_Timer).
    Adver(Duration),
    /// Backup: declare the master down (Master_Down_Timer). `resigned` is
    /// true when the timer was shortened by a priority-0 advert.
    MasterDown { at: Duration, resigned: bool },
}

impl Timer {
    fn at(self) -> Duration {
        match self {
            Timer::Adver(at) | Timer::MasterDown { at, .. } => at,
        }
    }
}

/// One virtual router: configuration plus the protocol state.
#[derive(Clone, Debug)]
pub struct Router {
    cfg: RouterConfig,
    state: VrrpState,
    /// Priority after tracked conditions (== cfg.priority when none).
    priority: u8,
    /// Master_Adver_Interval: learnt from the master while backup.
    master_adver_interval_cs: u16,
    timer: Option<Timer>,
    /// The current master's primary address, when known.
    master_addr: Option<IpAddr>,
    /// Preemption is allowed from this time on (startup + preempt_delay).
    preempt_from: Duration,
    /// As master, when a lower-priority master may next make us re-announce.
    reannounce_from: Duration,
    /// Until then a priority-0 advert makes this backup master at once.
    handover_until: Option<Duration>,
}

/// How long [`Event::ExpectHandover`] holds.
const HANDOVER_WINDOW: Duration = Duration::from_secs(10);

/// At most one re-announcement (advert + gratuitous ARP) per this many
/// centiseconds when another router claims mastership with a lower priority.
const REANNOUNCE_GAP_CS: u32 = 100;

impl Router {
    /// A router in Initialize. Call `validate` on the config first; a
    /// config that fails it is clamped here rather than panicking.
    pub fn new(cfg: RouterConfig) -> Self {
        let mut cfg = cfg;
        cfg.priority = cfg.priority.max(1);
        cfg.advert_interval_cs = cfg.advert_interval_cs.clamp(1, MAX_ADVERT_INTERVAL_CS);
        Router {
            priority: cfg.priority,
            master_adver_interval_cs: cfg.advert_interval_cs,
            cfg,
            state: VrrpState::Initialize,
            timer: None,
            master_addr: None,
            preempt_from: Duration::ZERO,
            reannounce_from: Duration::ZERO,
            handover_until: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RouterConfig {
        &self.cfg
    }

    /// Current state.
    pub fn state(&self) -> VrrpState {
        self.state
    }

    /// Effective priority (configured, lowered by tracked conditions).
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// The current master's address: ours when master, the last accepted
    /// advertiser's when backup, `None` when unknown.
    pub fn master_addr(&self) -> Option<IpAddr> {
        self.master_addr
    }

    /// Master_Adver_Interval in centiseconds.
    pub fn master_adver_interval_cs(&self) -> u16 {
        self.master_adver_interval_cs
    }

    /// Skew_Time for the current priority and learnt interval.
    pub fn skew_time_cs(&self) -> u32 {
        skew_time_cs(self.priority, self.master_adver_interval_cs)
    }

    /// Master_Down_Interval for the current priority and learnt interval.
    pub fn master_down_interval_cs(&self) -> u32 {
        master_down_interval_cs(self.priority, self.master_adver_interval_cs)
    }

    /// When the driver must deliver [`Event::Timer`], if ever.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.timer.map(Timer::at)
    }

    /// Feed one event at time `now`; returns the actions to carry out in
    /// order. A timer that is already due fires before the event, so a late
    /// driver sees the same result as a punctual one — except before a
    /// shutdown, where taking over only to resign at once would be noise.
    pub fn handle(&mut self, now: Duration, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(t) = self.timer {
            if now >= t.at() && event != Event::Shutdown {
                self.fire(now, t, &mut out);
            }
        }
        match event {
            Event::Timer => {}
            Event::Startup => self.startup(now, &mut out),
            Event::ResumeMaster => self.resume_master(now, &mut out),
            Event::Shutdown => self.shutdown(&mut out),
            Event::Resign => self.resign(now, &mut out),
            Event::ExpectHandover => self.handover_until = Some(now + HANDOVER_WINDOW),
            Event::AdvertReceived(a) => self.advert(now, a, &mut out),
            Event::PriorityChanged(p) => self.priority_changed(now, p, &mut out),
        }
        out
    }

    fn transition(&mut self, to: VrrpState, reason: TransitionReason, out: &mut Vec<Action>) {
        let from = self.state;
        self.state = to;
        out.push(Action::Transition { from, to, reason });
    }

    fn become_master(&mut self, now: Duration, reason: TransitionReason, out: &mut Vec<Action>) {
        // RFC 9568 §6.4.1/§6.4.2: send an advertisement, broadcast
        // gratuitous ARP, start Adver_Timer, transition to Master. The VIPs
        // go on the interface first so that the ARP we announce is true.
        self.transition(VrrpState::Master, reason, out);
        out.push(Action::AddVips);
        out.push(Action::SendAdvert {
            priority: self.priority,
        });
        out.push(Action::SendGratuitousArp);
        self.master_addr = Some(self.cfg.primary_addr);
        self.timer = Some(Timer::Adver(
            now + cs(u32::from(self.cfg.advert_interval_cs)),
        ));
    }

    fn become_backup(
        &mut self,
        now: Duration,
        reason: TransitionReason,
        master: Option<IpAddr>,
        out: &mut Vec<Action>,
    ) {
        self.transition(VrrpState::Backup, reason, out);
        // Ballast addition: make sure we hold no VIP (stale after a crash,
        // or held until now as master; RFC 9568 §6.4.3 "MUST stop
        // responding" for the VIPs).
        out.push(Action::RemoveVips);
        self.master_addr = master;
        self.timer = Some(Timer::MasterDown {
            at: now + cs(self.master_down_interval_cs()),
            resigned: false,
        });
    }

    fn startup(&mut self, now: Duration, out: &mut Vec<Action>) {
        if self.state != VrrpState::Initialize {
            return;
        }
        self.preempt_from = now + self.cfg.preempt_delay;
        if self.cfg.is_owner() {
            // RFC 9568 §6.4.1: the owner goes straight to Master.
            self.become_master(now, TransitionReason::AddressOwner, out);
        } else {
            // RFC 9568 §6.4.1: Master_Adver_Interval starts as our own.
            self.master_adver_interval_cs = self.cfg.advert_interval_cs;
            self.become_backup(now, TransitionReason::Startup, None, out);
        }
    }

    fn resume_master(&mut self, now: Duration, out: &mut Vec<Action>) {
        if self.state != VrrpState::Initialize {
            return;
        }
        // The same bookkeeping as a startup: preempt_delay only matters if we
        // ever fall back to Backup.
        self.preempt_from = now + self.cfg.preempt_delay;
        self.master_adver_interval_cs = self.cfg.advert_interval_cs;
        // The advert first: the backups are counting down Master_Down_Interval
        // since the old process's last advert, and every action after this one
        // may wait (netlink). The VIPs are still on the interface; AddVips only
        // makes sure (and renews a finite lifetime). No gratuitous ARP: the VIP
        // stayed on this host, so the hosts' ARP entries are still right.
        out.push(Action::SendAdvert {
            priority: self.priority,
        });
        self.transition(VrrpState::Master, TransitionReason::Resumed, out);
        out.push(Action::AddVips);
        self.master_addr = Some(self.cfg.primary_addr);
        self.timer = Some(Timer::Adver(
            now + cs(u32::from(self.cfg.advert_interval_cs)),
        ));
    }

    fn shutdown(&mut self, out: &mut Vec<Action>) {
        match self.state {
            VrrpState::Initialize => {}
            VrrpState::Backup => {
                // RFC 9568 §6.4.2: cancel Master_Down_Timer, go Initialize.
                self.timer = None;
                self.master_addr = None;
                self.transition(VrrpState::Initialize, TransitionReason::Shutdown, out);
            }
            VrrpState::Master => {
                // RFC 9568 §6.4.3: cancel Adver_Timer, send priority 0 so
                // backups take over after Skew_Time instead of
                // Master_Down_Interval, go Initialize.
                self.timer = None;
                self.master_addr = None;
                out.push(Action::SendAdvert { priority: 0 });
                out.push(Action::RemoveVips);
                self.transition(VrrpState::Initialize, TransitionReason::Shutdown, out);
            }
        }
    }

    fn resign(&mut self, now: Duration, out: &mut Vec<Action>) {
        if self.state != VrrpState::Master || self.cfg.is_owner() {
            // Only a master has something to hand over; the owner cannot be
            // preempted, so it would take the VIP back at once.
            return;
        }
        // The same priority-0 advert as a shutdown (RFC 9568 §6.4.3), so the
        // best backup takes over after its Skew_Time; we stay a backup, and
        // become master again only if nobody does within Master_Down_Interval.
        out.push(Action::SendAdvert { priority: 0 });
        self.become_backup(now, TransitionReason::Resigned, None, out);
    }

    fn fire(&mut self, now: Duration, timer: Timer, out: &mut Vec<Action>) {
        match (self.state, timer) {
            (VrrpState::Master, Timer::Adver(_)) => {
                // RFC 9568 §6.4.3: send an advertisement, reset Adver_Timer.
                out.push(Action::SendAdvert {
                    priority: self.priority,
                });
                self.timer = Some(Timer::Adver(
                    now + cs(u32::from(self.cfg.advert_interval_cs)),
                ));
            }
            (VrrpState::Backup, Timer::MasterDown { resigned, .. }) => {
                // RFC 9568 §6.4.2: Master_Down_Timer fired.
                let reason = if resigned {
                    TransitionReason::MasterResigned
                } else {
                    TransitionReason::MasterDown
                };
                self.become_master(now, reason, out);
            }
            // A timer that does not belong to the state: drop it.
            _ => self.timer = None,
        }
    }

    fn advert(&mut self, now: Duration, a: AdvertInfo, out: &mut Vec<Action>) {
        if a.src == self.cfg.primary_addr {
            // Our own advertisement looped back; the driver filters these,
            // but a duplicate address would otherwise look like a peer.
            return;
        }
        if self.cfg.is_owner() {
            // RFC 5798 §7.1 (kept by RFC 9568): the address owner drops
            // every advertisement; nothing can preempt it.
            return;
        }
        let interval = a.max_advert_int_cs.clamp(1, MAX_ADVERT_INTERVAL_CS);
        match self.state {
            VrrpState::Initialize => {}
            VrrpState::Backup => {
                if a.priority == 0 {
                    if self.handover_until.take().is_some_and(|until| now <= until) {
                        // A planned handover to us: no other backup competes
                        // (they hold back at priority 1), so no Skew_Time.
                        self.become_master(now, TransitionReason::MasterResigned, out);
                        return;
                    }
                    // RFC 9568 §6.4.2: the master resigns; take over after
                    // Skew_Time, so the highest-priority backup wins.
                    self.master_addr = None;
                    self.timer = Some(Timer::MasterDown {
                        at: now + cs(self.skew_time_cs()),
                        resigned: true,
                    });
                    return;
                }
                let preempt = self.cfg.preempt && now >= self.preempt_from;
                if !preempt || a.priority >= self.priority {
                    // RFC 9568 §6.4.2: learn the master's interval, restart
                    // Master_Down_Timer.
                    self.master_adver_interval_cs = interval;
                    self.master_addr = Some(a.src);
                    self.timer = Some(Timer::MasterDown {
                        at: now + cs(self.master_down_interval_cs()),
                        resigned: false,
                    });
                }
                // Else: a lower-priority master and we preempt: discard the
                // advert and let Master_Down_Timer take us to Master.
            }
            VrrpState::Master => {
                if a.priority == 0 {
                    // RFC 9568 §6.4.3: another router resigned while we are
                    // master: advertise at once so backups see us. It may have
                    // held the VIP until now (a healed split): announce the VIP
                    // too (rate-limited).
                    out.push(Action::SendAdvert {
                        priority: self.priority,
                    });
                    if now >= self.reannounce_from {
                        out.push(Action::SendGratuitousArp);
                        self.reannounce_from = now + cs(REANNOUNCE_GAP_CS);
                    }
                    self.timer = Some(Timer::Adver(
                        now + cs(u32::from(self.cfg.advert_interval_cs)),
                    ));
                    return;
                }
                let higher = a.priority > self.priority
                    || (a.priority == self.priority && a.src > self.cfg.primary_addr);
                if higher {
                    // RFC 9568 §6.4.3: step down, learning the new master's
                    // interval for our Master_Down_Interval.
                    self.master_adver_interval_cs = interval;
                    self.become_backup(now, TransitionReason::Preempted, Some(a.src), out);
                    // Ballast addition: say so with priority 0. Hosts may still send
                    // to our MAC for the VIP (after a healed split, say); the master
                    // answers a priority 0 with its own announcement (below), so they
                    // learn where the VIP is now instead of waiting out their ARP
                    // entry.
                    out.push(Action::SendAdvert { priority: 0 });
                } else if now >= self.reannounce_from {
                    // RFC 9568 §6.4.3 discards it; our next advert makes the
                    // other step down. But two masters means a split just
                    // healed, and hosts that learnt the other's MAC for the VIP
                    // keep it until their ARP entry ages out (tens of seconds):
                    // advertise and announce the VIP now, as keepalived does
                    // (`vrrp_garp_lower_prio_repeat`). Rate-limited.
                    out.push(Action::SendAdvert {
                        priority: self.priority,
                    });
                    out.push(Action::SendGratuitousArp);
                    self.timer = Some(Timer::Adver(
                        now + cs(u32::from(self.cfg.advert_interval_cs)),
                    ));
                    self.reannounce_from = now + cs(REANNOUNCE_GAP_CS);
                }
            }
        }
    }

    fn priority_changed(&mut self, now: Duration, p: u8, out: &mut Vec<Action>) {
        if self.cfg.is_owner() {
            // The owner's priority is 255 by definition (RFC 9568 §5.2.4).
            return;
        }
        let p = p.clamp(1, 254);
        if p == self.priority {
            return;
        }
        self.priority = p;
        if self.state == VrrpState::Master {
            // Tell the backups now rather than at the next Adver_Timer, so a
            // preempting backup starts counting at once.
            out.push(Action::SendAdvert { priority: p });
            self.timer = Some(Timer::Adver(
                now + cs(u32::from(self.cfg.advert_interval_cs)),
            ));
        }
        // In Backup the new priority applies to the next comparison and the
        // next Master_Down_Interval; the running timer is left alone.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, last))
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn skew_and_master_down_at_1s() {
        assert_eq!(skew_time_cs(100, 100), 60); // 156*100/256 = 60.9
        assert_eq!(master_down_interval_cs(100, 100), 360);
        assert_eq!(skew_time_cs(150, 100), 41); // 106*100/256 = 41.4
        assert_eq!(master_down_interval_cs(150, 100), 341);
        assert_eq!(skew_time_cs(254, 100), 0); // 2*100/256 = 0.78
        assert_eq!(master_down_interval_cs(254, 100), 300);
    }

    #[test]
    fn skew_and_master_down_at_100ms() {
        assert_eq!(skew_time_cs(100, 10), 6); // 1560/256 = 6.09
        assert_eq!(master_down_interval_cs(100, 10), 36);
        assert_eq!(skew_time_cs(150, 10), 4); // 1060/256 = 4.14
        assert_eq!(master_down_interval_cs(150, 10), 34);
        assert_eq!(skew_time_cs(254, 10), 0);
        assert_eq!(master_down_interval_cs(254, 10), 30);
    }

    #[test]
    fn formulas_extremes_do_not_overflow() {
        assert_eq!(skew_time_cs(1, 4095), 255 * 4095 / 256);
        assert_eq!(
            master_down_interval_cs(1, 4095),
            3 * 4095 + 255 * 4095 / 256
        );
        assert_eq!(skew_time_cs(255, 4095), 4095 / 256);
        assert_eq!(cs(360), ms(3600));
    }

    fn router(prio: u8, last: u8) -> Router {
        Router::new(RouterConfig::new(51, prio, ip(last)))
    }

    fn adv(last: u8, priority: u8, interval: u16) -> Event {
        Event::AdvertReceived(AdvertInfo {
            src: ip(last),
            priority,
            max_advert_int_cs: interval,
        })
    }

    fn tr(from: VrrpState, to: VrrpState, reason: TransitionReason) -> Action {
        Action::Transition { from, to, reason }
    }

    use TransitionReason as R;
    use VrrpState::{Backup, Initialize, Master};

    #[test]
    fn startup_non_owner_waits_master_down_then_takes_over() {
        let mut r = router(100, 11);
        let a = r.handle(ms(0), Event::Startup);
        assert_eq!(
            a,
            vec![tr(Initialize, Backup, R::Startup), Action::RemoveVips]
        );
        assert_eq!(r.next_deadline(), Some(ms(3600)));
        assert_eq!(r.handle(ms(3599), Event::Timer), vec![]);
        let a = r.handle(ms(3600), Event::Timer);
        assert_eq!(
            a,
            vec![
                tr(Backup, Master, R::MasterDown),
                Action::AddVips,
                Action::SendAdvert { priority: 100 },
                Action::SendGratuitousArp,
            ]
        );
        assert_eq!(r.master_addr(), Some(ip(11)));
        assert_eq!(r.next_deadline(), Some(ms(4600)));
        assert_eq!(
            r.handle(ms(4600), Event::Timer),
            vec![Action::SendAdvert { priority: 100 }]
        );
        assert_eq!(r.next_deadline(), Some(ms(5600)));
    }

    #[test]
    fn owner_starts_as_master_and_ignores_priority_changes() {
        let mut r = router(255, 11);
        let a = r.handle(ms(0), Event::Startup);
        assert_eq!(a[0], tr(Initialize, Master, R::AddressOwner));
        assert!(a.contains(&Action::SendAdvert { priority: 255 }));
        assert_eq!(r.handle(ms(10), Event::PriorityChanged(50)), vec![]);
        assert_eq!(r.priority(), 255);
        // Nobody outranks the owner: a 254 with a higher address is ignored,
        // and so is another (misconfigured) owner with a higher address.
        assert_eq!(r.handle(ms(20), adv(200, 254, 100)), vec![]);
        assert_eq!(r.handle(ms(30), adv(200, 255, 100)), vec![]);
        assert_eq!(r.state(), Master);
    }

    #[test]
    fn backup_learns_master_interval() {
        let mut r = router(100, 11);
        r.handle(ms(0), Event::Startup);
        r.handle(ms(500), adv(12, 150, 10));
        assert_eq!(r.master_adver_interval_cs(), 10);
        assert_eq!(r.master_addr(), Some(ip(12)));
        // 3 * 10 + 6 cs after the advert.
        assert_eq!(r.next_deadline(), Some(ms(500 + 360)));
    }

    #[test]
    fn backup_priority_zero_takes_over_after_skew_time() {
        let mut r = router(100, 11);
        r.handle(ms(0), Event::Startup);
        r.handle(ms(1000), adv(12, 150, 100));
        assert_eq!(r.handle(ms(1500), adv(12, 0, 100)), vec![]);
        assert_eq!(r.next_deadline(), Some(ms(1500 + 600)));
        let a = r.handle(ms(2100), Event::Timer);
        assert_eq!(a[0], tr(Backup, Master, R::MasterResigned));
    }

    #[test]
    fn backup_with_preempt_ignores_lower_priority_master() {
        let mut r = router(150, 11);
        r.handle(ms(0), Event::Startup);
        r.handle(ms(100), adv(12, 100, 100));
        // Lower priority: ignored, so the timer from startup runs out.
        assert_eq!(r.next_deadline(), Some(ms(3410)));
        let a = r.handle(ms(3410), Event::Timer);
        assert_eq!(a[0], tr(Backup, Master, R::MasterDown));
    }

    #[test]
    fn backup_without_preempt_follows_lower_priority_master() {
        let mut cfg = RouterConfig::new(51, 150, ip(11));
        cfg.preempt = false;
        let mut r = Router::new(cfg);
        r.handle(ms(0), Event::Startup);
        for t in 1..20u64 {
            assert_eq!(r.handle(ms(t * 1000), adv(12, 100, 100)), vec![]);
        }
        assert_eq!(r.state(), Backup);
    }

    #[test]
    fn preempt_delay_holds_preemption_until_it_expires() {
        let mut cfg = RouterConfig::new(51, 150, ip(11));
        cfg.preempt_delay = ms(10_000);
        let mut r = Router::new(cfg);
        r.handle(ms(0), Event::Startup);
        for t in 1..=9u64 {
            assert_eq!(r.handle(ms(t * 1000), adv(12, 100, 100)), vec![]);
        }
        assert_eq!(r.state(), Backup);
        assert_eq!(r.next_deadline(), Some(ms(9_000 + 3410)));
        // From 10 s on the lower master's adverts are ignored.
        r.handle(ms(10_000), adv(12, 100, 100));
        r.handle(ms(11_000), adv(12, 100, 100));
        assert_eq!(r.next_deadline(), Some(ms(9_000 + 3410)));
        let a = r.handle(ms(12_410), Event::Timer);
        assert_eq!(a[0], tr(Backup, Master, R::MasterDown));
    }

    #[test]
    fn master_steps_down_for_higher_priority() {
        let mut r = router(100, 11);
        r.handle(ms(0), Event::Startup);
        r.handle(ms(3600), Event::Timer);
        let a = r.handle(ms(4000), adv(12, 150, 10));
        assert_eq!(
            a,
            vec![
                tr(Master, Backup, R::Preempted),
                Action::RemoveVips,
                Action::SendAdvert { priority: 0 }
            ]
        );
        assert_eq!(r.master_adver_interval_cs(), 10);
        assert_eq!(r.master_addr(), Some(ip(12)));
        assert_eq!(r.next_deadline(), Some(ms(4360)));
    }

    #[test]
    fn master_tie_break_on_primary_address() {
        let mut r = router(100, 11);
        r.handle(ms(0), Event::Startup);
        r.handle(ms(3600), Event::Timer);
        // Same priority, lower address: we stay, and re-announce (a split healed).
        assert_eq!(
            r.handle(ms(3700), adv(10, 100, 100)),
            vec![
                Action::SendAdvert { priority: 100 },
                Action::SendGratuitousArp
            ]
        );
        assert_eq!(r.state(), Master);
        // Same priority, higher address: we yield.
        let a = r.handle(ms(3800), adv(12, 100, 100));
        assert_eq!(a[0], tr(Master, Backup, R::Preempted));
    }

    #[test]
    fn master_keeps_the_role_over_lower_priority_and_answers_priority_zero() {
        let mut r = router(100, 11);
        r.handle(ms(0), Event::Startup);
        r.handle(ms(3600), Event::Timer);
        r.handle(ms(3700), adv(12, 50, 100));
        assert_eq!(r.state(), Master);
        // Re-announced at 3700 already: within a second only the advert.
        assert_eq!(
            r.handle(ms(3800), adv(12, 0, 100)),
            vec![Action::SendAdvert { priority: 100 }]
        );
        assert_eq!(r.next_deadline(), Some(ms(4800)));
        assert_eq!(
            r.handle(ms(4750), adv(12, 0, 100)),
            vec![
                Action::SendAdvert { priority: 100 },
                Action::SendGratuitousArp
            ]
        );
    }

    #[test]
    fn master_shutdown_sends_priority_zero_and_removes_vips() {
        let mut r = router(100, 11);
        r.handle(ms(0), Event::Startup);
        r.handle(ms(3600), Event::Timer);
        let a = r.handle(ms(4000), Event::Shutdown);
        assert_eq!(
            a,
            vec![
                Action::SendAdvert { priority: 0 },
                Action::RemoveVips,
                tr(Master, Initialize, R::Shutdown),
            ]
        );
        assert_eq!(r.next_deadline(), None);
        // Nothing happens afterwards.
        assert_eq!(r.handle(ms(9000), adv(12, 200, 100)), vec![]);
        assert_eq!(r.handle(ms(9000), Event::Timer), vec![]);
    }

    #[test]
    fn resign_hands_over_and_waits_as_backup() {
        let mut r = router(100, 11);
        r.handle(ms(0), Event::Startup);
        r.handle(ms(3600), Event::Timer);
        // The drill lowers our priority first, then resigns.
        r.handle(ms(3900), Event::PriorityChanged(1));
        let a = r.handle(ms(4000), Event::Resign);
        assert_eq!(
            a,
            vec![
                Action::SendAdvert { priority: 0 },
                tr(Master, Backup, R::Resigned),
                Action::RemoveVips,
            ]
        );
        // Master_Down_Interval at priority 1: 3 * 1 s + 255/256 s.
        assert_eq!(r.next_deadline(), Some(ms(4000 + 3990)));
        // The peer took over: its adverts keep us backup.
        assert_eq!(r.handle(ms(4100), adv(12, 100, 100)), vec![]);
        assert_eq!(r.state(), Backup);
        assert_eq!(r.master_addr(), Some(ip(12)));
        // A second request as backup does nothing.
        assert_eq!(r.handle(ms(4200), Event::Resign), vec![]);
    }

    #[test]
    fn resign_without_a_taker_returns_to_master() {
        let mut r = router(100, 11);
        r.handle(ms(0), Event::Startup);
        r.handle(ms(3600), Event::Timer);
        r.handle(ms(4000), Event::Resign);
        let a = r.handle(ms(4000 + 3600), Event::Timer);
        assert_eq!(a[0], tr(Backup, Master, R::MasterDown));
    }

    #[test]
    fn a_master_hearing_a_lower_master_reannounces_at_most_once_a_second() {
        let mut r = router(150, 11);
        r.handle(ms(0), Event::Startup);
        r.handle(ms(3600), Event::Timer);
        assert_eq!(r.state(), Master);
        let announce = vec![
            Action::SendAdvert { priority: 150 },
            Action::SendGratuitousArp,
        ];
        // A healed split: the other master still advertises, at priority 100.
        assert_eq!(r.handle(ms(3700), adv(12, 100, 100)), announce);
        assert_eq!(r.handle(ms(4200), adv(12, 100, 100)), vec![]);
        assert_eq!(
            r.handle(ms(4700), Event::Timer),
            vec![Action::SendAdvert { priority: 150 }]
        );
        assert_eq!(r.handle(ms(4750), adv(12, 100, 100)), announce);
        assert_eq!(r.state(), Master);
    }

    #[test]
    fn an_expected_handover_skips_skew_time_once() {
        let mut r = router(100, 12);
        r.handle(ms(0), Event::Startup);
        r.handle(ms(100), adv(11, 150, 100));
        r.handle(ms(200), Event::ExpectHandover);
        let a = r.handle(ms(300), adv(11, 0, 100));
        assert_eq!(a[0], tr(Backup, Master, R::MasterResigned));
        assert_eq!(r.state(), Master);
        // Expired: after the window the RFC's Skew_Time applies.
        let mut r = router(100, 12);
        r.handle(ms(0), Event::Startup);
        r.handle(ms(100), Event::ExpectHandover);
        r.handle(ms(19_900), adv(11, 150, 100));
        assert_eq!(r.handle(ms(20_000), adv(11, 0, 100)), vec![]);
        assert_eq!(r.state(), Backup);
        assert_eq!(r.next_deadline(), Some(ms(20_000 + 600)));
    }

    #[test]
    fn owner_does_not_resign() {
        let mut r = router(255, 11);
        r.handle(ms(0), Event::Startup);
        assert_eq!(r.handle(ms(10), Event::Resign), vec![]);
        assert_eq!(r.state(), Master);
    }

    #[test]
    fn backup_shutdown_is_quiet() {
        let mut r = router(100, 11);
        r.handle(ms(0), Event::Startup);
        assert_eq!(
            r.handle(ms(10), Event::Shutdown),
            vec![tr(Backup, Initialize, R::Shutdown)]
        );
        assert_eq!(r.handle(ms(20), Event::Shutdown), vec![]);
    }

    #[test]
    fn priority_change_as_master_is_advertised_at_once() {
        let mut r = router(150, 11);
        r.handle(ms(0), Event::Startup);
        r.handle(ms(3410), Event::Timer);
        assert_eq!(
            r.handle(ms(3500), Event::PriorityChanged(90)),
            vec![Action::SendAdvert { priority: 90 }]
        );
        assert_eq!(r.priority(), 90);
        // 0 is clamped to 1: priority 0 only means "resigning".
        assert_eq!(
            r.handle(ms(3600), Event::PriorityChanged(0)),
            vec![Action::SendAdvert { priority: 1 }]
        );
        assert_eq!(r.handle(ms(3700), Event::PriorityChanged(1)), vec![]);
    }

    #[test]
    fn own_looped_advert_is_ignored() {
        let mut r = router(100, 11);
        r.handle(ms(0), Event::Startup);
        r.handle(ms(3600), Event::Timer);
        assert_eq!(r.handle(ms(3700), adv(11, 200, 100)), vec![]);
        assert_eq!(r.state(), Master);
    }

    #[test]
    fn late_timer_fires_before_the_event() {
        let mut r = router(100, 11);
        r.handle(ms(0), Event::Startup);
        // The driver was late: the advert arrives after the deadline.
        let a = r.handle(ms(3700), adv(12, 90, 100));
        assert_eq!(a[0], tr(Backup, Master, R::MasterDown));
        assert_eq!(r.state(), Master);
    }

    #[test]
    fn shutdown_does_not_fire_a_due_timer_first() {
        let mut r = router(100, 11);
        r.handle(ms(0), Event::Startup);
        assert_eq!(
            r.handle(ms(5000), Event::Shutdown),
            vec![tr(Backup, Initialize, R::Shutdown)]
        );
    }

    #[test]
    fn resume_master_advertises_first_and_keeps_the_priority() {
        let mut r = router(150, 11);
        let a = r.handle(ms(0), Event::ResumeMaster);
        assert_eq!(
            a,
            vec![
                Action::SendAdvert { priority: 150 },
                tr(Initialize, Master, R::Resumed),
                Action::AddVips,
            ],
            "advert before anything that may wait; no GARP, the VIP never moved"
        );
        assert_eq!(r.state(), Master);
        assert_eq!(
            r.priority(),
            150,
            "not 255: the backups must see the same master"
        );
        assert_eq!(r.master_addr(), Some(ip(11)));
        // Then a normal master: the next advert one interval later.
        assert_eq!(r.next_deadline(), Some(ms(1000)));
        assert_eq!(
            r.handle(ms(1000), Event::Timer),
            vec![Action::SendAdvert { priority: 150 }]
        );
        assert_eq!(r.next_deadline(), Some(ms(2000)));
    }

    #[test]
    fn resume_master_is_preempted_by_a_higher_priority() {
        let mut r = router(100, 11);
        r.handle(ms(0), Event::ResumeMaster);
        let a = r.handle(ms(400), adv(12, 200, 100));
        assert_eq!(
            a,
            vec![
                tr(Master, Backup, R::Preempted),
                Action::RemoveVips,
                Action::SendAdvert { priority: 0 }
            ]
        );
        assert_eq!(r.master_addr(), Some(ip(12)));
        // Equal priority and a higher address wins too (RFC 9568 §6.4.3).
        let mut r = router(100, 11);
        r.handle(ms(0), Event::ResumeMaster);
        let a = r.handle(ms(400), adv(12, 100, 100));
        assert_eq!(a[0], tr(Master, Backup, R::Preempted));
    }

    #[test]
    fn resume_master_uses_the_tracked_priority_and_only_from_initialize() {
        let mut r = router(150, 11);
        // The driver applies tracked conditions before starting.
        assert_eq!(r.handle(ms(0), Event::PriorityChanged(1)), vec![]);
        let a = r.handle(ms(0), Event::ResumeMaster);
        assert_eq!(a[0], Action::SendAdvert { priority: 1 });
        // Already running: a second start of either kind does nothing.
        assert_eq!(r.handle(ms(10), Event::ResumeMaster), vec![]);
        assert_eq!(r.handle(ms(10), Event::Startup), vec![]);
        let mut r = router(150, 11);
        r.handle(ms(0), Event::Startup);
        assert_eq!(r.handle(ms(10), Event::ResumeMaster), vec![]);
        assert_eq!(r.state(), Backup);
    }

    #[test]
    fn resumed_master_shuts_down_like_any_master() {
        let mut r = router(150, 11);
        r.handle(ms(0), Event::ResumeMaster);
        assert_eq!(
            r.handle(ms(500), Event::Shutdown),
            vec![
                Action::SendAdvert { priority: 0 },
                Action::RemoveVips,
                tr(Master, Initialize, R::Shutdown),
            ]
        );
    }

    #[test]
    fn startup_twice_is_ignored() {
        let mut r = router(100, 11);
        r.handle(ms(0), Event::Startup);
        assert_eq!(r.handle(ms(1), Event::Startup), vec![]);
    }

    #[test]
    fn config_validation() {
        let mut c = RouterConfig::new(51, 100, ip(11));
        assert_eq!(c.validate(), Ok(()));
        c.vrid = 0;
        assert_eq!(c.validate(), Err(ConfigError::Vrid(0)));
        c.vrid = 1;
        c.priority = 0;
        assert_eq!(c.validate(), Err(ConfigError::Priority(0)));
        c.priority = 1;
        c.advert_interval_cs = 4096;
        assert_eq!(c.validate(), Err(ConfigError::AdvertInterval(4096)));
    }
}
