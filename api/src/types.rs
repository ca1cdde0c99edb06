//! The API's answers, typed: what the handlers return and what `ballast ctl`, the demo
//! and the end-to-end tests read back (STYLE: typed contracts). The JSON they make is
//! the wire format: field names and nesting are the contract.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ballast_raft_store::model::{AdminState, Backend, Frontend, ModelDiff, Role};
use ballast_raft_store::NodeId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use ballast_raft_store::drill::{
    DrillKind, DrillReport, DrillState, DrillStep, Figures, NodeSnapshot, TimelineEntry,
};
pub use ballast_raft_store::ha::{Condition, VrrpState};
pub use ballast_raft_store::replica::RaftStatus;
pub use ballast_raft_store::state::HealthReport;
pub use ballast_raft_store::types::Member;

/// `GET /v1/status`: the node, its Raft replica, the replicated health and VRRP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Status {
    pub node_id: NodeId,
    pub role: Role,
    /// The replicated state's revision on this node.
    pub revision: u64,
    /// At most a few entries behind the Raft leader.
    pub caught_up: bool,
    /// Applied entries behind the leader; `None` without a reachable leader.
    pub lag_entries: Option<u64>,
    pub raft: RaftStatus,
    /// Stick decisions waiting in the journal (`None` on a witness).
    pub journal_pending: Option<usize>,
    /// Backend → server → replicated health.
    pub health: BTreeMap<String, BTreeMap<String, ServerHealth>>,
    /// `None` without `[vrrp]`.
    pub vrrp: Option<VrrpStatus>,
    /// Tracked conditions lowering the VRRP priority now (`None` on a witness).
    pub tracked_conditions_failing: Option<Vec<Condition>>,
    /// Holds back after handing the VIP over in a drill.
    pub yielded: bool,
    /// The process serving this node, and the live upgrade that started it, if one did.
    /// Absent from nodes older than live upgrades (read as pid 0): a rolling upgrade's
    /// `ctl` talks to them.
    #[serde(default)]
    pub process: ProcessInfo,
}

/// The process serving a node (`GET /v1/status` → `process`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProcessInfo {
    pub pid: u32,
    /// Unix ms when this process started.
    pub started_at: u64,
    /// `ballast --version` of the running image.
    pub version: String,
    /// The path the node was started from: a live upgrade runs the file installed there.
    pub binary: String,
    /// Live upgrades since the node was first started (this process's lineage).
    pub upgrades: u64,
    /// The hand-over that started this process; `None` for a process started by hand.
    pub last_upgrade: Option<UpgradeReport>,
}

/// One live upgrade's figures: `POST /v1/node/upgrade` answers them (200), and the new
/// process shows them in `GET /v1/status` → `process.last_upgrade`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UpgradeReport {
    pub from_pid: u32,
    pub to_pid: u32,
    /// Unix ms when the old process began the hand-over.
    pub at: u64,
    /// Listening sockets handed over (every socket of every port's SO_REUSEPORT group,
    /// and the API's).
    pub listeners: usize,
    /// Established client/server pairs handed over, with their bytes in flight.
    pub connections: usize,
    /// Client connections not yet on a server (waiting for a `maxconn` slot or still
    /// connecting) handed over to be placed by the new process.
    pub waiting: usize,
    /// Bytes read but not yet written (in user space or splice pipes) carried across.
    pub bytes_in_flight: u64,
    /// Longest time a connection's relay stood still: from the freeze of the old
    /// process's data plane to the new process resuming it.
    pub pause_ms: u64,
    /// From the upgrade's start (new binary checked and started) to the old process
    /// letting go.
    pub duration_ms: u64,
}

impl Status {
    /// This node's VRRP state, `None` without VRRP.
    pub fn vrrp_state(&self) -> Option<VrrpState> {
        self.vrrp.as_ref().map(|v| v.state)
    }

    /// The node Raft says leads, as this node sees it.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.leader
    }
}

/// What every lb node's probes concluded about one server, and the verdict they agree on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ServerHealth {
    pub effective_up: bool,
    pub admin: AdminState,
    /// Observer node → its last report (empty before any probe).
    pub reports: BTreeMap<NodeId, HealthReport>,
}

/// What `/v1/status` shows of VRRP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VrrpStatus {
    pub interface: String,
    pub vrid: u8,
    pub state: VrrpState,
    /// Configured priority.
    pub priority: u8,
    /// After tracked conditions.
    pub effective_priority: u8,
    /// The current master's address, if known (ours when master).
    #[schema(value_type = Option<String>)]
    pub master: Option<IpAddr>,
    /// Source of this node's adverts.
    #[schema(value_type = String)]
    pub primary_address: IpAddr,
    /// `address/prefix`.
    pub virtual_ips: Vec<String>,
    pub advert_interval_ms: u64,
    pub transitions: u64,
    pub last_transition: Option<VrrpTransition>,
    pub adverts_sent: u64,
    pub adverts_received: u64,
    /// Dropped adverts by reason.
    pub dropped: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VrrpTransition {
    pub from: VrrpState,
    pub to: VrrpState,
    /// `startup`, `master_down`, `preempted`, ... (the VRRP driver's labels).
    pub reason: String,
    pub at_ms: u64,
}

/// `GET /v1/backends/{backend}/stick`: one page of a backend's replicated stick table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StickPage {
    pub backend: String,
    /// Entries in the whole table.
    pub total: usize,
    pub revision: u64,
    pub entries: Vec<StickEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StickEntry {
    #[schema(value_type = String, example = "198.18.5.7")]
    pub key: IpAddr,
    pub server: String,
    pub last_seen_ms: u64,
    /// The client's connections open on this node.
    pub open_here: u32,
    /// Until the entry expires; `None` while the client holds a connection here.
    pub expires_in_ms: Option<u64>,
}

/// Live per-server figures of one backend on the node that answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackendStats {
    pub node_id: NodeId,
    pub servers: Vec<ServerStats>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ServerStats {
    pub name: String,
    pub up: bool,
    pub admin: AdminState,
    /// Connections this node has assigned to the server and not yet closed.
    pub connections: u32,
}

/// `GET /v1/backends/{name}`: the backend as the model has it, with this node's live
/// figures (absent on a witness).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BackendWithStats {
    #[serde(flatten)]
    pub backend: Backend,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<BackendStats>,
}

/// `GET /v1/backends`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BackendList {
    pub revision: u64,
    pub backends: Vec<BackendWithStats>,
}

/// `GET /v1/frontends`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FrontendList {
    pub revision: u64,
    pub frontends: Vec<Frontend>,
}

/// A committed write: the revision it made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Revision {
    pub revision: u64,
}

/// `POST /v1/backends/{backend}/stick`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Imported {
    pub imported: usize,
    pub revision: u64,
}

/// `POST /v1/apply`: the diff, and the revision (the new one unless `dry_run` or nothing
/// changed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Applied {
    pub dry_run: bool,
    pub revision: u64,
    pub diff: ModelDiff,
}

/// `POST /v1/members`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MemberAdded {
    pub added: NodeId,
}

/// `DELETE /v1/members/{id}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MemberRemoved {
    pub removed: NodeId,
}

/// `POST /v1/drills/failover` (202): the drill opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DrillStarted {
    pub id: u64,
    pub from: NodeId,
    pub to: NodeId,
    pub state: DrillState,
}

/// `GET /v1/drills`: failover records, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DrillList {
    pub drills: Vec<DrillSummary>,
}

/// One line of [`DrillList`]: a [`DrillReport`] without its timeline and tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DrillSummary {
    pub id: u64,
    pub kind: DrillKind,
    pub from: Option<NodeId>,
    pub to: NodeId,
    pub state: DrillState,
    pub started_ms: u64,
    pub figures: Figures,
}

impl From<DrillReport> for DrillSummary {
    fn from(r: DrillReport) -> Self {
        DrillSummary {
            id: r.id,
            kind: r.kind,
            from: r.from,
            to: r.to,
            state: r.state,
            started_ms: r.started_ms,
            figures: r.figures,
        }
    }
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Alive {
    /// Always `ok`.
    pub status: String,
}

/// `GET /readyz` (200).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Ready {
    pub ready: bool,
}
