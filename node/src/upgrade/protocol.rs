//! The conversation between the old and the new process of a live upgrade, one message
//! at a time over the hand-over socket ([`super::wire`]):
//!
//! ```text
//!   old (serving)                                   new (started by old)
//!                      ◀── Hello {format, pid, version}
//!   checks the format; freezes its data plane
//!   Offer {model, plane state, metadata} + fds ──▶  adopts listeners and connections
//!                                                   (paused), builds its plane
//!                      ◀── Prepared {counts}        (or Failed {reason}: old thaws)
//!   Commit ──▶                                      relays resume (the pause ends here)
//!   ── commit point: from here the new process owns everything ──
//!   stops the API and VRRP (silently)
//!   Vrrp {master?, last advert} ──▶                 resumes VRRP (as master: at once)
//!   stops Raft (closes raft.redb), takes its journal
//!   Released {journal} ──▶                          opens Raft, then the API
//!                      ◀── Ready {report}
//!   exits
//! ```
//!
//! Anything else, a closed socket or a timeout before the commit point makes the old
//! process take everything back (it kept its own descriptors) and kill the new one.

use ballast_api::types::UpgradeReport;
use ballast_dataplane::proxy::handover::{ConnMeta, ListenerMeta, PlaneState, WaitingMeta};
use serde::{Deserialize, Serialize};

use crate::cluster::JournalCarry;

/// The hand-over format. A new binary with another one is refused before anything is
/// frozen: change it whenever a message or the descriptor order changes.
pub const FORMAT: u32 = 1;

/// Environment variable naming the hand-over socket, set by the old process for the
/// new one; its presence makes `ballast run` take over instead of starting fresh.
pub const SOCKET_ENV: &str = "BALLAST_HANDOVER_SOCKET";

/// New → old.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromNew {
    Hello {
        format: u32,
        pid: u32,
        version: String,
    },
    /// Everything offered is adopted and paused; the old process may let go.
    Prepared { connections: usize, waiting: usize },
    /// The offer could not be taken; the old process keeps serving.
    Failed { reason: String },
    /// Serving: the old process exits.
    Ready(UpgradeReport),
}

/// Old → new.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromOld {
    /// Not this format (or not now): the new process exits.
    Refused {
        reason: String,
    },
    Offer(Box<Offer>),
    /// The connections are the new process's now: resume them.
    Commit,
    /// VRRP is let go of (without a word): where it stood.
    Vrrp(Option<VrrpCarry>),
    /// Raft and the API are let go of too.
    Released(Box<Released>),
    /// Called off before the commit point (the old process resumes serving).
    Abort {
        reason: String,
    },
}

/// What the old process hands over; its descriptors follow in this order: every
/// listener group's sockets (in `listeners` order), each connection's client then
/// server socket, each waiting client, and last the API's listening socket.
#[derive(Debug, Serialize, Deserialize)]
pub struct Offer {
    pub from_pid: u32,
    /// Unix ms when the old process started the upgrade.
    pub at_ms: u64,
    pub frozen_at_ms: u64,
    /// Upgrades in this node's lineage before this one.
    pub upgrades: u64,
    /// The cluster model the old plane serves (JSON: the model's serde uses text forms
    /// a compact binary format cannot read back).
    pub model_json: String,
    pub model_revision: u64,
    pub plane: PlaneState,
    /// Each port and how many sockets its group has.
    pub listeners: Vec<(ListenerMeta, usize)>,
    pub connections: Vec<ConnMeta>,
    pub waiting: Vec<WaitingMeta>,
    pub api_listener: bool,
}

impl Offer {
    /// Descriptors that follow this offer.
    pub fn descriptors(&self) -> usize {
        self.listeners.iter().map(|(_, n)| n).sum::<usize>()
            + 2 * self.connections.len()
            + self.waiting.len()
            + usize::from(self.api_listener)
    }
}

/// Sent once the old process has let go of Raft.
#[derive(Debug, Serialize, Deserialize)]
pub struct Released {
    /// Decisions the old process had not replicated yet.
    pub journal: JournalCarry,
}

/// The old process's VRRP instance as it left: a master's successor resumes as master
/// at once (no priority-0 advert, the VIP stays, the peers see adverts go on).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VrrpCarry {
    pub master: bool,
    /// Unix ms of its last advert, if it sent one.
    pub last_advert_ms: Option<u64>,
    pub primary_addr: std::net::IpAddr,
}

impl VrrpCarry {
    pub fn from_abandoned(gone: &ballast_vrrp::driver::Abandoned) -> Self {
        VrrpCarry {
            master: gone.state == ballast_vrrp::VrrpState::Master,
            last_advert_ms: gone.last_advert.map(ballast_model::time::unix_ms),
            primary_addr: gone.primary_addr,
        }
    }

    /// How the successor's instance starts.
    pub fn resume(&self) -> ballast_vrrp::driver::Resume {
        if !self.master {
            return ballast_vrrp::driver::Resume::Backup;
        }
        ballast_vrrp::driver::Resume::Master {
            last_advert: self
                .last_advert_ms
                .map(|ms| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)),
            primary_addr: Some(self.primary_addr),
        }
    }
}
