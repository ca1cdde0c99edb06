//! The floating IP: runs the node's VRRP instance (ballast_vrrp) and feeds it the
//! tracked conditions that should make this node a worse master.
//!
//! VRRP owns the VIP, not Raft (DESIGN principle 4): nothing here waits for the cluster.
//! Tracked conditions, checked every 200 ms:
//! - the data plane is not listening (no model applied, or a bind failed);
//! - no server of any backend is usable from this node.
//!
//! - this replica is far behind the Raft leader, or cannot reach one (it may not have
//!   the current stick table; see `crate::ha`);
//! - the node handed the VIP over in a failover drill and holds back ("yielded").
//!
//! Any one lowers the effective priority to 1, so any healthy peer takes over; the
//! owner priority 255 is never lowered (RFC 9568 §6.1).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ballast_vrrp::driver::{
    Abandoned, InstanceConfig, NotifyCommand, Resume, VirtualIp, VrrpHandle,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::VrrpSection;
use ballast_api::types::{Condition, VrrpState, VrrpStatus, VrrpTransition};
use ballast_dataplane::proxy::DataPlane;

pub struct Vip {
    handle: VrrpHandle,
    tracker: JoinHandle<()>,
    control: Arc<VipControl>,
}

/// The inputs to this node's VRRP priority that come from the cluster, not the plane.
pub struct VipControl {
    resigner: ballast_vrrp::driver::Resigner,
    /// Handed over in a drill: stay at priority 1 until a drill makes this node the
    /// target again, so a preempting node does not take the VIP straight back.
    yielded: AtomicBool,
    far_behind: AtomicBool,
    /// Wakes the tracker so a change applies now, not at its next tick.
    changed: tokio::sync::Notify,
}

impl VipControl {
    /// Planned hand-over: priority 0 now, backup afterwards (see `VrrpHandle::resign`).
    /// Set [`Self::set_yielded`] first so the new master keeps the role.
    pub fn resign(&self) {
        self.resigner.resign();
    }

    /// On a drill's target: take over the moment the master resigns.
    pub fn expect_handover(&self) {
        self.resigner.expect_handover();
    }

    pub fn set_yielded(&self, on: bool) {
        if self.yielded.swap(on, Ordering::Relaxed) != on {
            self.changed.notify_one();
        }
    }

    pub fn yielded(&self) -> bool {
        self.yielded.load(Ordering::Relaxed)
    }

    pub fn set_far_behind(&self, on: bool) {
        if self.far_behind.swap(on, Ordering::Relaxed) != on {
            self.changed.notify_one();
        }
    }

    /// Every condition that lowers the priority now, the plane's included.
    pub fn failing(&self, plane: &DataPlane) -> Vec<Condition> {
        let mut failed = failed_conditions(plane);
        if self.far_behind.load(Ordering::Relaxed) {
            failed.push(Condition::ReplicaFarBehind);
        }
        if self.yielded() {
            failed.push(Condition::Yielded);
        }
        failed
    }
}

fn instance_config(section: &VrrpSection) -> anyhow::Result<InstanceConfig> {
    use crate::config::VrrpTransport;
    use ballast_vrrp::driver::Transport;

    let vips = section
        .virtual_ips
        .iter()
        .map(|v| v.parse::<VirtualIp>())
        .collect::<Result<Vec<_>, _>>()?;
    let mut cfg = InstanceConfig::new(&section.interface, section.vrid, section.priority, vips);
    cfg.advert_interval = section.advert_interval;
    cfg.preempt = section.preempt;
    cfg.preempt_delay = section.preempt_delay;
    cfg.unicast_peers = section.unicast_peers.clone();
    cfg.notify = section.notify.as_ref().map(|program| NotifyCommand {
        program: program.clone(),
        args: Vec::new(),
    });
    cfg.vip_lifetime = section.vip_lifetime;
    cfg.transport = match section.transport {
        VrrpTransport::Raw => Transport::Raw,
        VrrpTransport::Udp => Transport::Udp {
            listen: section
                .udp_listen
                .context("vrrp.udp_listen is required with transport = \"udp\"")?,
            peers: section.udp_peers.clone(),
        },
    };
    Ok(cfg)
}

/// The conditions that make this node a bad master right now, for logs and status.
pub fn failed_conditions(plane: &DataPlane) -> Vec<Condition> {
    let mut failed = Vec::new();
    if !plane.is_ready() {
        failed.push(Condition::DataPlaneNotListening);
    }
    let view = plane.view();
    let any_usable = view
        .backends
        .values()
        .any(|b| b.servers.iter().any(|s| s.is_up()));
    if !view.backends.is_empty() && !any_usable {
        failed.push(Condition::NoUsableServer);
    }
    failed
}

impl Vip {
    /// Starts the instance. Needs CAP_NET_RAW and CAP_NET_ADMIN.
    pub fn start(section: &VrrpSection, plane: Arc<DataPlane>) -> anyhow::Result<Vip> {
        Self::start_with(section, plane, Resume::Backup)
    }

    /// [`Vip::start`] for the new process of a live upgrade: `resume` is what the old
    /// process's [`Vip::abandon`] returned ([`Abandoned::resume`]). With
    /// [`Resume::Master`] the instance starts as master and advertises at once, keeping
    /// the VIPs the old process left on the interface; [`Resume::Backup`] is the
    /// normal start.
    ///
    /// The tracked conditions apply from the first tick as always: a plane that is not
    /// listening yet (or has no usable server) lowers the priority to 1 and a backup
    /// preempts. Start it once the handed-over listeners serve.
    pub fn start_with(
        section: &VrrpSection,
        plane: Arc<DataPlane>,
        resume: Resume,
    ) -> anyhow::Result<Vip> {
        let mut cfg = instance_config(section)?;
        cfg.resume = resume;
        plane.set_vips(cfg.virtual_ips.iter().map(|v| v.addr).collect());
        let hint = match cfg.transport {
            ballast_vrrp::driver::Transport::Raw => {
                "it needs CAP_NET_RAW and CAP_NET_ADMIN: run as root or grant them"
            }
            ballast_vrrp::driver::Transport::Udp { .. } => {
                "check vrrp.udp_listen: an address of this host, with the port free"
            }
        };
        let (penalty_tx, penalty_rx) = watch::channel(0u8);
        let handle = ballast_vrrp::driver::VrrpInstance::spawn(cfg, penalty_rx)
            .with_context(|| format!("vrrp on {}: cannot start ({hint})", section.interface))?;
        let floor_penalty = section.priority.saturating_sub(1);
        let control = Arc::new(VipControl {
            resigner: handle.resigner(),
            yielded: AtomicBool::new(false),
            far_behind: AtomicBool::new(false),
            changed: tokio::sync::Notify::new(),
        });
        let inputs = control.clone();
        let tracker = tokio::spawn(async move {
            let mut last: Vec<Condition> = Vec::new();
            let mut ticker = tokio::time::interval(Duration::from_millis(200));
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = inputs.changed.notified() => {}
                }
                let failed = inputs.failing(&plane);
                if failed != last {
                    if failed.is_empty() {
                        info!("tracked conditions healthy: full VRRP priority");
                    } else {
                        warn!(conditions = ?failed, "tracked conditions failing: VRRP priority lowered to 1");
                    }
                    last = failed.clone();
                }
                let penalty = if failed.is_empty() { 0 } else { floor_penalty };
                penalty_tx.send_if_modified(|p| std::mem::replace(p, penalty) != penalty);
            }
        });
        info!(
            interface = %section.interface,
            vrid = section.vrid,
            priority = section.priority,
            resumed_master = resume.is_master(),
            "vrrp started"
        );
        Ok(Vip {
            handle,
            tracker,
            control,
        })
    }

    pub fn observer(&self) -> ballast_vrrp::driver::VrrpObserver {
        self.handle.observer()
    }

    pub fn control(&self) -> Arc<VipControl> {
        self.control.clone()
    }

    /// Graceful stop: a priority-0 advert (the backup takes over after Skew_Time) and
    /// the VIPs removed.
    pub async fn stop(self) {
        self.tracker.abort();
        if let Err(e) = self.handle.shutdown().await {
            warn!(error = %e, "vrrp shutdown");
        }
    }

    /// The old process's side of a live upgrade: stop without a word (no priority-0
    /// advert, VIPs left on the interface, no notify; see `VrrpHandle::abandon`) and
    /// say what the new process should resume from ([`Abandoned::resume`] for
    /// [`Vip::start_with`]). The backups see a late advert, so the new process must
    /// start its instance within their Master_Down_Interval (3 intervals and a bit).
    pub async fn abandon(self) -> anyhow::Result<Abandoned> {
        self.tracker.abort();
        let gone = self
            .handle
            .abandon()
            .await
            .context("vrrp: cannot abandon the instance")?;
        info!(
            state = gone.state.as_str(),
            priority = gone.priority,
            "vrrp abandoned for the new process"
        );
        Ok(gone)
    }
}

/// The VRRP driver's state as the API and the peer reports name it.
pub fn wire_state(state: ballast_vrrp::VrrpState) -> VrrpState {
    match state {
        ballast_vrrp::VrrpState::Initialize => VrrpState::Initialize,
        ballast_vrrp::VrrpState::Backup => VrrpState::Backup,
        ballast_vrrp::VrrpState::Master => VrrpState::Master,
    }
}

/// What `/v1/status` shows of VRRP.
pub fn status(observer: &ballast_vrrp::driver::VrrpObserver) -> VrrpStatus {
    let s = observer.status();
    let m = observer.metrics();
    VrrpStatus {
        interface: s.interface,
        vrid: s.vrid,
        state: wire_state(s.state),
        priority: s.configured_priority,
        effective_priority: s.effective_priority,
        master: s.master_addr,
        primary_address: s.primary_addr,
        virtual_ips: s.virtual_ips.iter().map(ToString::to_string).collect(),
        advert_interval_ms: s.advert_interval.as_millis() as u64,
        transitions: s.transitions,
        last_transition: s.last_transition.as_ref().map(|t| VrrpTransition {
            from: wire_state(t.from),
            to: wire_state(t.to),
            reason: t.reason.as_str().to_string(),
            at_ms: ballast_model::time::unix_ms(t.at),
        }),
        adverts_sent: m.adverts_sent,
        adverts_received: m.adverts_received,
        dropped: m
            .drops
            .iter()
            .map(|(reason, n)| (reason.as_str().to_string(), *n))
            .collect(),
    }
}
