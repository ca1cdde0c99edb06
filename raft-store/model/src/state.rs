//! The replicated cluster state and the commands that change it.
//!
//! [`ClusterState::apply`] is a pure, deterministic function of the state and one
//! [`Command`]: timestamps travel inside commands, maps are `BTreeMap`, no clock and no
//! randomness — every replica that applies the same log reaches the same state (STYLE
//! item 6). openraft's traits in `ballast_raft_store::store` are thin adapters around it.
//!
//! Stick entries carry the server and the last time the client was seen. Expiry is a
//! command too: the leader proposes [`Command::Sweep`] with its clock, so replicas never
//! disagree about which entries exist. A client that stays connected never expires
//! because the node holding its connections re-proposes its entry (a refresh) well
//! within `expire`; when that node dies, the entry expires `expire` after the last
//! refresh — the replicated form of "counted from the last close".

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::drill::{self, DrillEvent, DrillKind, DrillRecord, DrillStep, NodeSnapshot};
use crate::intern::Names;
use crate::model::{AdminState, Backend, ClusterModel, Frontend, ModelSpec, Server};

pub use crate::NodeId;

/// A client's replicated stick entry, as stored: 16 bytes, the server as an index into
/// its table's name list (200,000 entries must not carry 200,000 copies of "server1").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct StickRecord {
    server: u16,
    last_seen_ms: u64,
}

/// One backend's replicated stick table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StickTableState {
    /// Appended in apply order, so identical on every replica.
    names: Names,
    entries: BTreeMap<IpAddr, StickRecord>,
}

impl StickTableState {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// (server, last seen ms) of one client.
    pub fn get(&self, key: &IpAddr) -> Option<(&Arc<str>, u64)> {
        self.entries
            .get(key)
            .map(|r| (self.names.get(r.server), r.last_seen_ms))
    }

    pub fn contains_key(&self, key: &IpAddr) -> bool {
        self.entries.contains_key(key)
    }

    /// Entries in key order, starting after `after` when given.
    pub fn iter_from(
        &self,
        after: Option<IpAddr>,
    ) -> impl Iterator<Item = (IpAddr, &Arc<str>, u64)> + '_ {
        let range = match after {
            Some(a) => self
                .entries
                .range((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
            None => self.entries.range(..),
        };
        range.map(|(k, r)| (*k, self.names.get(r.server), r.last_seen_ms))
    }

    pub fn iter(&self) -> impl Iterator<Item = (IpAddr, &Arc<str>, u64)> + '_ {
        self.iter_from(None)
    }

    fn intern(&mut self, server: &Arc<str>) -> u16 {
        if self.names.is_full() {
            let remap = self.names.collect(self.entries.values().map(|r| r.server));
            for r in self.entries.values_mut() {
                r.server = Names::remapped(&remap, r.server);
            }
        }
        self.names.intern(server).index()
    }

    /// Newest decision wins; returns whether the entry changed.
    fn upsert(&mut self, key: IpAddr, server: &Arc<str>, last_seen_ms: u64) -> bool {
        if self
            .entries
            .get(&key)
            .is_some_and(|old| last_seen_ms < old.last_seen_ms)
        {
            return false;
        }
        let server = self.intern(server);
        self.entries.insert(
            key,
            StickRecord {
                server,
                last_seen_ms,
            },
        );
        true
    }

    fn retain(&mut self, mut keep: impl FnMut(&Arc<str>, u64) -> bool) {
        let names = &self.names;
        self.entries
            .retain(|_, r| keep(names.get(r.server), r.last_seen_ms));
    }
}

/// One stick decision or refresh made by a node's data plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StickUpdate {
    pub key: IpAddr,
    pub server: Arc<str>,
    pub last_seen_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StickBatch {
    pub backend: String,
    pub updates: Vec<StickUpdate>,
}

/// What one observer's probes last concluded about a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HealthReport {
    pub up: bool,
    pub at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Seeds the model from the config file of the node that formed the cluster. A no-op
    /// once the cluster has a model, so racing bootstrappers cannot overwrite each other.
    Bootstrap {
        model: ClusterModel,
    },
    /// Replaces frontends and backends as a whole (declarative apply).
    ReplaceModel {
        model: ClusterModel,
    },
    PutFrontend {
        frontend: Frontend,
    },
    DeleteFrontend {
        name: String,
    },
    PutBackend {
        backend: Backend,
    },
    DeleteBackend {
        name: String,
    },
    PutServer {
        backend: String,
        server: Server,
    },
    DeleteServer {
        backend: String,
        server: String,
        /// Also close its established connections, on every node. By default they stay
        /// until they end by themselves.
        #[serde(default)]
        shutdown: bool,
    },
    SetAdmin {
        backend: String,
        server: String,
        admin: AdminState,
    },
    Stick {
        origin: NodeId,
        batches: Vec<StickBatch>,
    },
    /// Forget one client (`key`) or a whole table (`None`).
    ForgetStick {
        backend: String,
        key: Option<IpAddr>,
    },
    /// Expire entries not seen for `expire` as of `now_ms` (the proposer's clock) and
    /// trim tables over their `size`.
    Sweep {
        now_ms: u64,
    },
    Health {
        observer: NodeId,
        backend: String,
        server: String,
        report: HealthReport,
    },
    /// Opens a failover record; its id is the revision this command produces.
    DrillStart {
        kind: DrillKind,
        from: Option<NodeId>,
        to: NodeId,
        /// The proposer's clock.
        started_ms: u64,
        /// Who noticed (the API node for a drill, the new master for a takeover).
        reporter: NodeId,
    },
    DrillEvent {
        id: u64,
        event: DrillEvent,
    },
    DrillSnapshot {
        id: u64,
        node: NodeId,
        snapshot: NodeSnapshot,
    },
}

impl Command {
    /// Whether applying this command may change the model (frontends, backends,
    /// servers, admin states): what a writer waits for the data plane to take in.
    /// Exhaustive on purpose: a new command must say which it is.
    pub fn changes_model(&self) -> bool {
        match self {
            Command::Bootstrap { .. }
            | Command::ReplaceModel { .. }
            | Command::PutFrontend { .. }
            | Command::DeleteFrontend { .. }
            | Command::PutBackend { .. }
            | Command::DeleteBackend { .. }
            | Command::PutServer { .. }
            | Command::DeleteServer { .. }
            | Command::SetAdmin { .. } => true,
            Command::Stick { .. }
            | Command::ForgetStick { .. }
            | Command::Sweep { .. }
            | Command::Health { .. }
            | Command::DrillStart { .. }
            | Command::DrillEvent { .. }
            | Command::DrillSnapshot { .. } => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    Invalid,
    NotFound,
    Conflict,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Invalid => "invalid",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
        }
    }
}

/// The answer to one applied command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Response {
    /// The revision after the command (unchanged when it was rejected or a no-op).
    pub revision: u64,
    pub error: Option<(ErrorCode, String)>,
}

/// What changed, for whoever mirrors the state (the data plane).
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    None,
    Model,
    /// The model changed and a removed server's established connections must close.
    ModelAndShutdown {
        backend: String,
        server: String,
    },
    Sticks {
        origin: NodeId,
        batches: Vec<StickBatch>,
    },
    StickForgotten {
        backend: String,
        key: Option<IpAddr>,
    },
    Swept,
    Health {
        backend: String,
        server: String,
        effective_up: bool,
    },
    /// A failover record was opened or extended.
    Drill {
        id: u64,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Bumped by every command that changes something.
    pub revision: u64,
    pub bootstrapped: bool,
    pub model: ClusterModel,
    /// backend → its stick table.
    pub sticks: BTreeMap<String, StickTableState>,
    /// backend → server → observer → report.
    pub health: BTreeMap<String, BTreeMap<String, BTreeMap<NodeId, HealthReport>>>,
    /// The revision of the last change to frontends, backends or servers: what a data
    /// plane must have applied to be current (stick and drill commands bump `revision`
    /// without touching it).
    pub model_revision: u64,
    /// Failover records by id (the newest [`drill::MAX_RECORDS`]).
    pub drills: BTreeMap<u64, DrillRecord>,
}

impl ClusterState {
    /// The record a `DrillStart` with these fields opened, if any.
    pub fn drill_id(&self, kind: DrillKind, to: NodeId, started_ms: u64) -> Option<u64> {
        self.drills
            .values()
            .find(|r| r.kind == kind && r.to == to && r.started_ms == started_ms)
            .map(|r| r.id)
    }

    pub fn apply(&mut self, command: Command) -> (Response, Change) {
        match self.apply_inner(command) {
            Ok(Some(change)) => {
                self.revision += 1;
                if matches!(change, Change::Model | Change::ModelAndShutdown { .. }) {
                    self.model_revision = self.revision;
                }
                (self.response(None), change)
            }
            Ok(None) => (self.response(None), Change::None),
            Err(error) => (self.response(Some(error)), Change::None),
        }
    }

    fn response(&self, error: Option<(ErrorCode, String)>) -> Response {
        Response {
            revision: self.revision,
            error,
        }
    }

    /// `Ok(None)`: valid but nothing changed.
    fn apply_inner(&mut self, command: Command) -> Result<Option<Change>, (ErrorCode, String)> {
        match command {
            Command::Bootstrap { model } => {
                if self.bootstrapped {
                    return Ok(None);
                }
                self.bootstrapped = true;
                self.set_model(model)?;
                Ok(Some(Change::Model))
            }
            Command::ReplaceModel { model } => {
                self.bootstrapped = true;
                self.set_model(model)?;
                Ok(Some(Change::Model))
            }
            Command::PutFrontend { frontend } => {
                let mut spec = self.model.to_spec();
                spec.frontends.retain(|f| f.name != frontend.name);
                spec.frontends.push(frontend);
                self.set_spec(spec)
            }
            Command::DeleteFrontend { name } => {
                let mut spec = self.model.to_spec();
                let before = spec.frontends.len();
                spec.frontends.retain(|f| f.name != name);
                if spec.frontends.len() == before {
                    return Err(not_found(format!("frontend {name:?} does not exist")));
                }
                self.set_spec(spec)
            }
            Command::PutBackend { backend } => {
                let mut spec = self.model.to_spec();
                spec.backends.retain(|b| b.name != backend.name);
                spec.backends.push(backend);
                self.set_spec(spec)
            }
            Command::DeleteBackend { name } => {
                if !self.model.backends.contains_key(&name) {
                    return Err(not_found(format!("backend {name:?} does not exist")));
                }
                let users: Vec<&str> = self
                    .model
                    .frontends
                    .values()
                    .filter(|f| f.backend == name)
                    .map(|f| f.name.as_str())
                    .collect();
                if !users.is_empty() {
                    return Err((
                        ErrorCode::Conflict,
                        format!(
                            "backend {name:?} is used by frontend(s) {}",
                            users.join(", ")
                        ),
                    ));
                }
                let mut spec = self.model.to_spec();
                spec.backends.retain(|b| b.name != name);
                self.set_spec(spec)
            }
            Command::PutServer { backend, server } => {
                let mut spec = self.model.to_spec();
                let b = find_backend(&mut spec, &backend)?;
                match b.servers.iter_mut().find(|s| s.name == server.name) {
                    Some(existing) => *existing = server,
                    None => b.servers.push(server),
                }
                self.set_spec(spec)
            }
            Command::DeleteServer {
                backend,
                server,
                shutdown,
            } => {
                let mut spec = self.model.to_spec();
                let b = find_backend(&mut spec, &backend)?;
                let before = b.servers.len();
                b.servers.retain(|s| s.name != server);
                if b.servers.len() == before {
                    return Err(not_found(format!(
                        "server {server:?} does not exist in backend {backend:?}"
                    )));
                }
                let change = self.set_spec(spec)?;
                Ok(if shutdown {
                    Some(Change::ModelAndShutdown { backend, server })
                } else {
                    change
                })
            }
            Command::SetAdmin {
                backend,
                server,
                admin,
            } => {
                let b = self
                    .model
                    .backends
                    .get_mut(&backend)
                    .ok_or_else(|| not_found(format!("backend {backend:?} does not exist")))?;
                let s = b
                    .servers
                    .iter_mut()
                    .find(|s| s.name == server)
                    .ok_or_else(|| {
                        not_found(format!(
                            "server {server:?} does not exist in backend {backend:?}"
                        ))
                    })?;
                if s.admin == admin {
                    return Ok(None);
                }
                s.admin = admin;
                Ok(Some(Change::Model))
            }
            Command::Stick { origin, batches } => {
                let mut applied = Vec::new();
                for batch in batches {
                    let Some(backend) = self.model.backends.get(&batch.backend) else {
                        continue;
                    };
                    if backend.stick.is_none() {
                        continue;
                    }
                    let known: Vec<Arc<str>> = batch
                        .updates
                        .iter()
                        .map(|u| u.server.clone())
                        .filter(|s| backend.servers.iter().any(|b| *b.name == **s))
                        .collect();
                    let table = self.sticks.entry(batch.backend.clone()).or_default();
                    let mut kept = Vec::new();
                    for update in batch.updates {
                        if !known.contains(&update.server) {
                            continue;
                        }
                        if table.upsert(update.key, &update.server, update.last_seen_ms) {
                            kept.push(update);
                        }
                    }
                    if !kept.is_empty() {
                        applied.push(StickBatch {
                            backend: batch.backend,
                            updates: kept,
                        });
                    }
                }
                Ok((!applied.is_empty()).then_some(Change::Sticks {
                    origin,
                    batches: applied,
                }))
            }
            Command::ForgetStick { backend, key } => {
                if !self.model.backends.contains_key(&backend) {
                    return Err(not_found(format!("backend {backend:?} does not exist")));
                }
                let table = self.sticks.entry(backend.clone()).or_default();
                let changed = match key {
                    Some(k) => table.entries.remove(&k).is_some(),
                    None => {
                        let had = !table.is_empty();
                        *table = StickTableState::default();
                        had
                    }
                };
                Ok(changed.then_some(Change::StickForgotten { backend, key }))
            }
            Command::Sweep { now_ms } => {
                let mut removed = 0usize;
                for (name, table) in &mut self.sticks {
                    let Some(stick) = self.model.backends.get(name).and_then(|b| b.stick.as_ref())
                    else {
                        continue;
                    };
                    let expire_ms = stick.expire.as_millis() as u64;
                    let before = table.len();
                    table.retain(|_, last_seen| now_ms.saturating_sub(last_seen) < expire_ms);
                    if table.len() > stick.size {
                        let mut by_age: Vec<(u64, IpAddr)> =
                            table.iter().map(|(k, _, seen)| (seen, k)).collect();
                        by_age.sort_unstable();
                        for (_, key) in &by_age[..table.len() - stick.size] {
                            table.entries.remove(key);
                        }
                    }
                    removed += before - table.len();
                }
                Ok((removed > 0).then_some(Change::Swept))
            }
            Command::Health {
                observer,
                backend,
                server,
                report,
            } => {
                let exists = self
                    .model
                    .backends
                    .get(&backend)
                    .is_some_and(|b| b.servers.iter().any(|s| s.name == server));
                if !exists {
                    // The server was removed after the probe was made: nothing to record.
                    return Ok(None);
                }
                let reports = self
                    .health
                    .entry(backend.clone())
                    .or_default()
                    .entry(server.clone())
                    .or_default();
                if reports.get(&observer) == Some(&report) {
                    return Ok(None);
                }
                reports.insert(observer, report);
                let effective_up = self.effective_up(&backend, &server);
                Ok(Some(Change::Health {
                    backend,
                    server,
                    effective_up,
                }))
            }
            Command::DrillStart {
                kind,
                from,
                to,
                started_ms,
                reporter,
            } => {
                // A retried proposal (its answer was lost) must not open a second record.
                if self.drill_id(kind, to, started_ms).is_some() {
                    return Ok(None);
                }
                let id = self.revision + 1;
                self.drills.insert(
                    id,
                    DrillRecord {
                        id,
                        kind,
                        from,
                        to,
                        started_ms,
                        events: vec![DrillEvent {
                            node: reporter,
                            step: DrillStep::Started,
                            at_ms: started_ms,
                        }],
                        snapshots: BTreeMap::new(),
                    },
                );
                while self.drills.len() > drill::MAX_RECORDS {
                    self.drills.pop_first();
                }
                Ok(Some(Change::Drill { id }))
            }
            Command::DrillEvent { id, event } => {
                let record = self
                    .drills
                    .get_mut(&id)
                    .ok_or_else(|| not_found(format!("drill {id} does not exist")))?;
                Ok(record.add_event(event).then_some(Change::Drill { id }))
            }
            Command::DrillSnapshot { id, node, snapshot } => {
                let record = self
                    .drills
                    .get_mut(&id)
                    .ok_or_else(|| not_found(format!("drill {id} does not exist")))?;
                if record.snapshots.contains_key(&node) {
                    return Ok(None);
                }
                record.snapshots.insert(node, snapshot);
                Ok(Some(Change::Drill { id }))
            }
        }
    }

    /// The health every node agrees on: down only when every observer that reported says
    /// down (a server some node can reach is not dead, and that node's own probes decide
    /// for it); up when nobody has reported yet.
    pub fn effective_up(&self, backend: &str, server: &str) -> bool {
        self.health
            .get(backend)
            .and_then(|b| b.get(server))
            .is_none_or(|reports| reports.values().any(|r| r.up))
    }

    pub fn stick_len(&self) -> usize {
        self.sticks.values().map(StickTableState::len).sum()
    }

    fn set_spec(&mut self, spec: ModelSpec) -> Result<Option<Change>, (ErrorCode, String)> {
        let model = ClusterModel::from_spec(spec).map_err(invalid)?;
        self.set_model(model)?;
        Ok(Some(Change::Model))
    }

    fn set_model(&mut self, model: ClusterModel) -> Result<(), (ErrorCode, String)> {
        // Re-validate: a model can arrive from any proposer.
        let model = ClusterModel::from_spec(model.to_spec()).map_err(invalid)?;
        self.sticks
            .retain(|name, _| model.backends.get(name).is_some_and(|b| b.stick.is_some()));
        for (name, table) in &mut self.sticks {
            let backend = &model.backends[name];
            table.retain(|server, _| backend.servers.iter().any(|s| *s.name == **server));
        }
        self.health
            .retain(|name, servers| match model.backends.get(name) {
                Some(b) => {
                    servers.retain(|s, _| b.servers.iter().any(|x| &x.name == s));
                    true
                }
                None => false,
            });
        self.model = model;
        Ok(())
    }
}

fn find_backend<'a>(
    spec: &'a mut ModelSpec,
    name: &str,
) -> Result<&'a mut Backend, (ErrorCode, String)> {
    spec.backends
        .iter_mut()
        .find(|b| b.name == name)
        .ok_or_else(|| not_found(format!("backend {name:?} does not exist")))
}

fn not_found(message: String) -> (ErrorCode, String) {
    (ErrorCode::NotFound, message)
}

fn invalid(errors: Vec<crate::model::ModelError>) -> (ErrorCode, String) {
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    (ErrorCode::Invalid, text.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Balance, Bind, Stick, StickOn};
    use std::net::SocketAddr;
    use std::time::Duration;

    const HOUR: u64 = 3_600_000;

    fn model() -> ClusterModel {
        ClusterModel::from_spec(ModelSpec {
            frontends: vec![Frontend {
                name: "f".into(),
                bind: vec!["127.0.0.1:8001-8003".parse::<Bind>().unwrap()],
                backend: "b".into(),
                timeout_client: Duration::from_secs(60),
            }],
            backends: vec![Backend {
                name: "b".into(),
                balance: Balance::Leastconn,
                timeout_server: Duration::from_secs(60),
                timeout_connect: Duration::from_secs(1),
                timeout_queue: Duration::from_secs(1),
                stick: Some(Stick {
                    on: StickOn::Src,
                    size: 3,
                    expire: Duration::from_millis(HOUR),
                }),
                health: None,
                servers: vec![server("s1"), server("s2")],
            }],
        })
        .unwrap()
    }

    fn server(name: &str) -> Server {
        Server {
            name: name.into(),
            addr: SocketAddr::from(([127, 0, 0, 1], 7001)),
            weight: 1,
            maxconn: 0,
            admin: AdminState::Ready,
        }
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, n])
    }

    fn stick(origin: NodeId, updates: &[(u8, &str, u64)]) -> Command {
        Command::Stick {
            origin,
            batches: vec![StickBatch {
                backend: "b".into(),
                updates: updates
                    .iter()
                    .map(|&(k, s, t)| StickUpdate {
                        key: ip(k),
                        server: Arc::from(s),
                        last_seen_ms: t,
                    })
                    .collect(),
            }],
        }
    }

    fn booted() -> ClusterState {
        let mut state = ClusterState::default();
        state.apply(Command::Bootstrap { model: model() });
        state
    }

    #[test]
    fn bootstrap_seeds_once_and_bumps_revision() {
        let mut state = ClusterState::default();
        let (r, change) = state.apply(Command::Bootstrap { model: model() });
        assert_eq!((r.revision, change), (1, Change::Model));
        let mut other = model();
        other.frontends.clear();
        let (r, change) = state.apply(Command::Bootstrap { model: other });
        assert_eq!((r.revision, change), (1, Change::None));
        assert_eq!(state.model.frontends.len(), 1);
    }

    #[test]
    fn newest_stick_decision_wins_and_unknown_servers_are_ignored() {
        let mut state = booted();
        state.apply(stick(1, &[(1, "s1", 100), (2, "gone", 100)]));
        state.apply(stick(2, &[(1, "s2", 50)])); // older: a replayed journal
        assert_eq!(state.sticks["b"].get(&ip(1)).unwrap().0.as_ref(), "s1");
        assert!(!state.sticks["b"].contains_key(&ip(2)));
        let (_, change) = state.apply(stick(2, &[(1, "s2", 200)]));
        assert!(matches!(change, Change::Sticks { origin: 2, .. }));
        assert_eq!(state.sticks["b"].get(&ip(1)).unwrap().0.as_ref(), "s2");
    }

    #[test]
    fn sweep_expires_by_the_proposers_clock_and_trims_to_size() {
        let mut state = booted();
        state.apply(stick(
            1,
            &[(1, "s1", 0), (2, "s1", 10), (3, "s2", 20), (4, "s2", 30)],
        ));
        assert_eq!(state.stick_len(), 4);
        // Over size (3): the oldest goes even though nothing expired.
        state.apply(Command::Sweep { now_ms: 40 });
        assert!(!state.sticks["b"].contains_key(&ip(1)));
        // A refresh keeps ip(4) alive; the rest expire an hour after last seen.
        state.apply(stick(1, &[(4, "s2", HOUR)]));
        state.apply(Command::Sweep { now_ms: HOUR + 25 });
        let left: Vec<_> = state.sticks["b"].iter().map(|(k, _, _)| k).collect();
        assert_eq!(left, vec![ip(4)]);
    }

    #[test]
    fn effective_health_is_down_only_when_every_observer_says_so() {
        let mut state = booted();
        let report = |observer, up| Command::Health {
            observer,
            backend: "b".into(),
            server: "s1".into(),
            report: HealthReport { up, at_ms: 1 },
        };
        assert!(state.effective_up("b", "s1"));
        let (_, change) = state.apply(report(1, false));
        assert_eq!(
            change,
            Change::Health {
                backend: "b".into(),
                server: "s1".into(),
                effective_up: false
            }
        );
        state.apply(report(2, true));
        assert!(state.effective_up("b", "s1"));
        state.apply(report(2, false));
        assert!(!state.effective_up("b", "s1"));
        // Repeating a report changes nothing.
        let rev = state.revision;
        assert_eq!(state.apply(report(2, false)).1, Change::None);
        assert_eq!(state.revision, rev);
    }

    #[test]
    fn model_commands_validate_and_clean_up() {
        let mut state = booted();
        state.apply(stick(1, &[(1, "s1", 5), (2, "s2", 5)]));
        let (r, _) = state.apply(Command::DeleteBackend { name: "b".into() });
        assert_eq!(r.error.unwrap().0, ErrorCode::Conflict);
        let (r, _) = state.apply(Command::DeleteServer {
            backend: "b".into(),
            server: "nope".into(),
            shutdown: false,
        });
        assert_eq!(r.error.unwrap().0, ErrorCode::NotFound);
        let (r, change) = state.apply(Command::DeleteServer {
            backend: "b".into(),
            server: "s1".into(),
            shutdown: false,
        });
        assert!(r.error.is_none() && change == Change::Model);
        assert!(
            !state.sticks["b"].contains_key(&ip(1)),
            "entries of a removed server go"
        );
        let mut bad = server("s2");
        bad.weight = 0;
        let (r, _) = state.apply(Command::PutServer {
            backend: "b".into(),
            server: bad,
        });
        assert_eq!(r.error.unwrap().0, ErrorCode::Invalid);
        let (r, _) = state.apply(Command::SetAdmin {
            backend: "b".into(),
            server: "s2".into(),
            admin: AdminState::Drain,
        });
        assert!(r.error.is_none());
        assert_eq!(
            state.model.backends["b"].servers[0].admin,
            AdminState::Drain
        );
    }

    #[test]
    fn replicas_applying_the_same_log_agree_and_survive_a_snapshot() {
        let log = vec![
            Command::Bootstrap { model: model() },
            stick(1, &[(1, "s1", 1), (2, "s2", 2)]),
            stick(2, &[(3, "s1", 3)]),
            Command::Sweep { now_ms: HOUR + 2 },
            Command::ForgetStick {
                backend: "b".into(),
                key: Some(ip(3)),
            },
        ];
        let mut a = ClusterState::default();
        let mut b = ClusterState::default();
        for c in &log {
            a.apply(c.clone());
            b.apply(c.clone());
        }
        assert_eq!(a, b);
        let bytes = serde_json::to_vec(&a).unwrap();
        let restored: ClusterState = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(restored, a);
    }

    #[test]
    fn server_names_are_stored_once_per_table() {
        let mut state = booted();
        state.apply(stick(1, &[(1, "s1", 1), (2, "s1", 1), (3, "s2", 1)]));
        let t = &state.sticks["b"];
        assert_eq!(t.names.len(), 2);
        assert!(Arc::ptr_eq(
            t.get(&ip(1)).unwrap().0,
            t.get(&ip(2)).unwrap().0
        ));
    }
    #[test]
    fn a_drill_start_opens_one_record_even_when_proposed_twice() {
        let mut state = ClusterState::default();
        let start = Command::DrillStart {
            kind: DrillKind::Unplanned,
            from: Some(1),
            to: 2,
            started_ms: 1_000,
            reporter: 2,
        };
        let (first, change) = state.apply(start.clone());
        assert_eq!(change, Change::Drill { id: first.revision });
        let (again, change) = state.apply(start);
        assert_eq!(change, Change::None);
        assert_eq!(again.revision, first.revision);
        assert_eq!(state.drills.len(), 1);
        assert_eq!(
            state.drill_id(DrillKind::Unplanned, 2, 1_000),
            Some(first.revision)
        );
        let event = Command::DrillEvent {
            id: first.revision,
            event: DrillEvent {
                node: 2,
                step: DrillStep::BecameMaster,
                at_ms: 1_000,
            },
        };
        assert_eq!(
            state.apply(event.clone()).1,
            Change::Drill { id: first.revision }
        );
        assert_eq!(
            state.apply(event).1,
            Change::None,
            "an event is recorded once"
        );
        let missing = Command::DrillSnapshot {
            id: 99,
            node: 2,
            snapshot: NodeSnapshot::default(),
        };
        assert!(state.apply(missing).0.error.is_some());
    }
}
