//! The handles a running instance gives out: to stop it, to make it resign, to watch it.

use super::config::*;
use super::status::*;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::state::VrrpState;

/// A running instance. Dropping it stops the instance gracefully in the
/// background; prefer [`VrrpHandle::shutdown`] to wait for it.
pub struct VrrpHandle {
    pub(super) status: watch::Receiver<VrrpStatus>,
    pub(super) counters: Arc<Counters>,
    pub(super) control: mpsc::UnboundedSender<Control>,
    pub(super) stop: Option<oneshot::Sender<Stop>>,
    pub(super) task: Option<JoinHandle<Option<Abandoned>>>,
}

/// How the instance task is asked to stop. A dropped sender is a graceful stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stop {
    /// Shutdown event: a master sends priority 0 and removes its VIPs.
    Graceful,
    /// Stop without a word (see [`VrrpHandle::abandon`]).
    Abandon,
}

/// What [`VrrpHandle::abandon`] leaves: the router's last state, for the process that
/// takes over (a live upgrade).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Abandoned {
    /// The state the router was in (Backup or Master).
    pub state: VrrpState,
    /// The effective priority it advertised (or would have) last.
    pub priority: u8,
    /// The source address of its adverts.
    pub primary_addr: IpAddr,
    /// When its last advert with a non-zero priority went out (wall clock), if any.
    pub last_advert: Option<SystemTime>,
}

impl Abandoned {
    /// The [`InstanceConfig::resume`] for the successor: [`Resume::Master`] when this
    /// one was master, otherwise the normal start.
    pub fn resume(&self) -> Resume {
        match self.state {
            VrrpState::Master => Resume::Master {
                last_advert: self.last_advert,
                primary_addr: Some(self.primary_addr),
            },
            VrrpState::Backup | VrrpState::Initialize => Resume::Backup,
        }
    }
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
            let _ = s.send(Stop::Graceful);
        }
        match self.task.take() {
            Some(t) => t
                .await
                .map(|_| ())
                .map_err(|e| DriverError::Task(e.to_string())),
            None => Ok(()),
        }
    }

    /// Stop without a word, for a live upgrade whose new process continues this
    /// instance (with [`Abandoned::resume`] in its [`InstanceConfig::resume`]).
    ///
    /// Unlike [`VrrpHandle::shutdown`] nothing goes out and nothing changes on the
    /// host: no priority-0 advert (the backups would take over after Skew_Time), no
    /// VIP removed (it stays on the interface for the successor, which keeps it),
    /// no gratuitous ARP, no notify command (the router never leaves its state; the
    /// status watch keeps showing it, and its sender closes). To the backups this is
    /// a master that is late: the successor must advertise within their
    /// Master_Down_Interval of [`Abandoned::last_advert`], and does so as its first
    /// act. Returns once the task has ended and its sockets are closed (a UDP
    /// `listen` address is free again for the successor).
    ///
    /// [`DriverError::Stopped`] if the task had already ended on its own.
    pub async fn abandon(mut self) -> Result<Abandoned, DriverError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(Stop::Abandon);
        }
        match self.task.take() {
            Some(t) => t
                .await
                .map_err(|e| DriverError::Task(e.to_string()))?
                .ok_or(DriverError::Stopped),
            None => Err(DriverError::Stopped),
        }
    }
}

/// Requests for a planned handover, sent to the instance task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Control {
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
    pub(super) status: watch::Receiver<VrrpStatus>,
    pub(super) counters: Arc<Counters>,
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
