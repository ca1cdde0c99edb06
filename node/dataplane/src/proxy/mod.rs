//! The TCP proxy data plane: the runtime objects built from the cluster model (this
//! file), the plane that owns listeners and background tasks ([`plane`]), the
//! connection path ([`conn`]) and the byte relay ([`pump`]). Connections run on the
//! plane's own threads, one per core ([`workers`]), not on the node's shared runtime.
//!
//! The connection path reads an immutable [`View`] through `ArcSwap` and never waits on
//! anything but its own sockets, its backend's stick-table mutex (held for one decision,
//! no I/O under it) and, when a server is full, that server's FIFO queue. Decisions that
//! must reach the other nodes go to a [`ReplicationSink`] (the node's journal), which
//! never blocks.

mod accept;
mod conn;
pub mod handover;
mod plane;
mod pump;
mod serving;
mod workers;

pub use plane::{DataPlane, DataPlaneError, FreezeError, ModelApplied};

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use ballast_model::model::{AdminState, Backend, ClusterModel, Frontend};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Semaphore;
use tracing::info;

use crate::balance::{self, Candidate, SmoothRoundRobin};
use crate::metrics::{self, Metrics};
use crate::stick::{ServerName, StickTable, Stickiness};

/// Where the data plane hands what the other nodes must learn. Implementations queue
/// and return at once: the connection path never waits on consensus.
pub trait ReplicationSink: Send + Sync + 'static {
    /// A client's (new or refreshed) entry.
    fn stick(&self, backend: &Arc<str>, key: IpAddr, server: &ServerName, last_seen_ms: u64);
    /// This node's health checks flipped a server.
    fn health(&self, backend: &str, server: &str, up: bool, at_ms: u64);
}

/// Unix milliseconds: the time base of stick entries, chosen so entries can be compared
/// across nodes once they are replicated.
pub use ballast_model::time::now as now_ms;

pub struct ServerRt {
    pub name: ServerName,
    pub backend: Arc<str>,
    pub addr: SocketAddr,
    pub weight: u32,
    pub maxconn: u32,
    admin: AtomicU8,
    /// What this node's own probes concluded.
    up: AtomicBool,
    /// Whether this node has probed yet; until then the replicated state decides
    /// (DESIGN principle 6: a node taking over knows which servers are down).
    probed: AtomicBool,
    replicated_up: AtomicBool,
    /// Connections assigned to this server (queued, connecting or established): the
    /// load leastconn compares.
    assigned: AtomicU32,
    /// FIFO: tokio's semaphore grants permits in request order.
    slots: Option<Arc<Semaphore>>,
    /// Set when the server is removed with `shutdown`: its connections close (they
    /// hear of it through the plane's control watch, `serving::Control::removals`).
    removed: AtomicBool,
    m_active: Gauge,
    m_total: Counter,
    m_up: Gauge,
    m_queue: Gauge,
    m_queue_timeouts: Counter,
    m_connect_failures: Counter,
    m_health_failures: Counter,
}

impl ServerRt {
    /// Its counters by name (see [`handover::CounterCarry`]).
    fn counters(&self) -> [(&'static str, &Counter); 4] {
        [
            ("total", &self.m_total),
            ("queue_timeouts", &self.m_queue_timeouts),
            ("connect_failures", &self.m_connect_failures),
            ("health_failures", &self.m_health_failures),
        ]
    }

    fn new(backend: &str, spec: &ballast_model::model::Server, m: &Metrics) -> Self {
        let labels = metrics::server_labels(backend, &spec.name);
        let server = ServerRt {
            name: Arc::from(spec.name.as_str()),
            backend: Arc::from(backend),
            addr: spec.addr,
            weight: spec.weight,
            maxconn: spec.maxconn,
            admin: AtomicU8::new(admin_to_u8(spec.admin)),
            up: AtomicBool::new(true),
            probed: AtomicBool::new(false),
            replicated_up: AtomicBool::new(true),
            assigned: AtomicU32::new(0),
            slots: (spec.maxconn > 0).then(|| Arc::new(Semaphore::new(spec.maxconn as usize))),
            removed: AtomicBool::new(false),
            m_active: m.server_active.get_or_create(&labels).clone(),
            m_total: m.server_total.get_or_create(&labels).clone(),
            m_up: m.server_up.get_or_create(&labels).clone(),
            m_queue: m.server_queue.get_or_create(&labels).clone(),
            m_queue_timeouts: m.queue_timeouts.get_or_create(&labels).clone(),
            m_connect_failures: m.connect_failures.get_or_create(&labels).clone(),
            m_health_failures: m.health_failures.get_or_create(&labels).clone(),
        };
        server.m_up.set(1);
        server
    }

    pub fn admin(&self) -> AdminState {
        admin_from_u8(self.admin.load(Ordering::Relaxed))
    }

    pub fn is_up(&self) -> bool {
        if self.probed.load(Ordering::Relaxed) {
            self.up.load(Ordering::Relaxed)
        } else {
            self.replicated_up.load(Ordering::Relaxed)
        }
    }

    pub fn assigned(&self) -> u32 {
        self.assigned.load(Ordering::Relaxed)
    }

    /// May take clients that have no entry yet.
    fn takes_new_clients(&self) -> bool {
        self.is_up() && self.admin() == AdminState::Ready
    }

    /// May keep the clients already stuck to it (drain keeps them, maint does not).
    fn keeps_stuck_clients(&self) -> bool {
        self.is_up() && self.admin() != AdminState::Maint
    }

    /// Records this node's own conclusion; from now on it wins over the replicated one.
    fn set_probed_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
        self.probed.store(true, Ordering::Relaxed);
        self.m_up.set(i64::from(up));
    }

    fn set_replicated_up(&self, up: bool) {
        self.replicated_up.store(up, Ordering::Relaxed);
        if !self.probed.load(Ordering::Relaxed) {
            self.m_up.set(i64::from(up));
        }
    }

    fn shut_down(&self) {
        self.removed.store(true, Ordering::Release);
    }

    /// Removed with `shutdown`: its connections end.
    fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    fn set_admin(&self, state: AdminState) {
        self.admin.store(admin_to_u8(state), Ordering::Relaxed);
    }

    /// Same target and limits: the runtime (counters, queue, health) can be kept.
    fn same_target(&self, spec: &ballast_model::model::Server) -> bool {
        self.addr == spec.addr && self.weight == spec.weight && self.maxconn == spec.maxconn
    }

    /// Carries health over to a replacement (same server name, new address or limits).
    fn inherit_health(&self, old: &ServerRt) {
        self.up
            .store(old.up.load(Ordering::Relaxed), Ordering::Relaxed);
        self.probed
            .store(old.probed.load(Ordering::Relaxed), Ordering::Relaxed);
        self.replicated_up
            .store(old.replicated_up.load(Ordering::Relaxed), Ordering::Relaxed);
        self.m_up.set(i64::from(self.is_up()));
    }
}

fn admin_to_u8(state: AdminState) -> u8 {
    match state {
        AdminState::Ready => 0,
        AdminState::Drain => 1,
        AdminState::Maint => 2,
    }
}

fn admin_from_u8(value: u8) -> AdminState {
    match value {
        0 => AdminState::Ready,
        1 => AdminState::Drain,
        _ => AdminState::Maint,
    }
}

pub struct BackendRt {
    pub name: Arc<str>,
    pub spec: Backend,
    pub servers: Vec<Arc<ServerRt>>,
    /// Shared with the backend's previous and next runtime, so a model change never
    /// loses an entry and connections opened before it release into the same table.
    stick: Option<Arc<Mutex<StickTable>>>,
    round_robin: Mutex<SmoothRoundRobin>,
    tie_breaker: AtomicUsize,
    reported_evictions: Arc<AtomicU64>,
    sink: Option<Arc<dyn ReplicationSink>>,
    m_stick_moves: Counter,
}

impl BackendRt {
    /// Builds the runtime for `spec`, keeping what it can of `previous` (the same
    /// backend before a model change): its stick table and every server whose address
    /// and limits did not change, with their counters, queues and health.
    fn new(
        spec: &Backend,
        m: &Metrics,
        sink: Option<Arc<dyn ReplicationSink>>,
        previous: Option<&BackendRt>,
    ) -> Self {
        let servers = spec
            .servers
            .iter()
            .map(|s| {
                let old = previous.and_then(|p| p.server(&s.name));
                match old {
                    Some(old) if old.same_target(s) => {
                        old.set_admin(s.admin);
                        old.clone()
                    }
                    _ => {
                        let fresh = ServerRt::new(&spec.name, s, m);
                        if let Some(old) = old {
                            fresh.inherit_health(old);
                        }
                        Arc::new(fresh)
                    }
                }
            })
            .collect();
        let stick = spec.stick.as_ref().map(|s| {
            m.stick_capacity
                .get_or_create(&metrics::backend_labels(&spec.name))
                .set(s.size as i64);
            let expire_ms = s.expire.as_millis() as u64;
            match previous.and_then(|p| p.stick.clone()) {
                Some(table) => {
                    table.lock().resize(s.size, expire_ms);
                    table
                }
                None => Arc::new(Mutex::new(StickTable::new(s.size, expire_ms))),
            }
        });
        BackendRt {
            name: Arc::from(spec.name.as_str()),
            spec: spec.clone(),
            servers,
            stick,
            round_robin: Mutex::new(SmoothRoundRobin::default()),
            tie_breaker: AtomicUsize::new(0),
            reported_evictions: previous
                .map(|p| p.reported_evictions.clone())
                .unwrap_or_default(),
            sink,
            m_stick_moves: m
                .stick_moves
                .get_or_create(&metrics::backend_labels(&spec.name))
                .clone(),
        }
    }

    fn replicate(&self, client: IpAddr, server: &ServerName, now_ms: u64) {
        if let Some(sink) = &self.sink {
            sink.stick(&self.name, client, server, now_ms);
        }
    }

    /// Takes in entries committed by other nodes.
    pub fn merge_sticks<'a>(&self, updates: impl IntoIterator<Item = (IpAddr, &'a Arc<str>, u64)>) {
        let Some(table) = &self.stick else { return };
        let overtaken: Vec<(IpAddr, ServerName, u64)> = {
            let mut table = table.lock();
            updates
                .into_iter()
                .filter_map(|(key, server, last_seen_ms)| {
                    table
                        .merge(key, server.clone(), last_seen_ms)
                        .map(|(mine, seen)| (key, mine, seen))
                })
                .collect()
        };
        for (key, mine, seen) in overtaken {
            self.replicate(key, &mine, seen);
        }
    }

    pub fn forget_sticks(&self, key: Option<IpAddr>) {
        let Some(table) = &self.stick else { return };
        let mut table = table.lock();
        match key {
            Some(key) => {
                table.forget(&key);
            }
            None => table.clear(),
        }
    }

    /// Re-reports every client connected here, so its replicated entry never expires
    /// while it holds a connection (see `ballast_model::state`).
    fn refresh_connected(&self, now_ms: u64) -> usize {
        let (Some(table), Some(sink)) = (&self.stick, &self.sink) else {
            return 0;
        };
        let connected = table.lock().report_connected(now_ms);
        for (key, server) in &connected {
            sink.stick(&self.name, *key, server, now_ms);
        }
        connected.len()
    }

    /// Every (client, server) of this node's table, for comparing with the replicated one.
    pub fn stick_entries(&self) -> Vec<(IpAddr, ServerName)> {
        let Some(table) = &self.stick else {
            return Vec::new();
        };
        let table = table.lock();
        table.iter().map(|(k, e)| (k, e.server)).collect()
    }

    /// Up to `limit` entries after `after` in key order: the stick API's page.
    pub fn stick_page(
        &self,
        key: Option<IpAddr>,
        after: Option<IpAddr>,
        limit: usize,
        now_ms: u64,
    ) -> Vec<StickView> {
        let Some(table) = &self.stick else {
            return Vec::new();
        };
        let table = table.lock();
        let view = |k: &IpAddr, e: &crate::stick::Entry| StickView {
            key: *k,
            server: e.server.to_string(),
            open: e.open,
            last_seen_ms: e.last_seen_ms,
            expires_in_ms: table.expires_in_ms(e, now_ms),
        };
        if let Some(key) = key {
            return table
                .get(&key)
                .map(|e| view(&key, &e))
                .into_iter()
                .collect();
        }
        let mut page: Vec<StickView> = table
            .iter()
            .filter(|(k, _)| after.is_none_or(|a| *k > a))
            .map(|(k, e)| view(&k, &e))
            .collect();
        page.sort_unstable_by_key(|v| v.key);
        page.truncate(limit);
        page
    }

    pub fn server(&self, name: &str) -> Option<&Arc<ServerRt>> {
        self.servers.iter().find(|s| &*s.name == name)
    }

    /// Runs the balancer over the servers that take new clients, skipping `exclude`.
    /// With a stick table, leastconn weighs connected *clients* per server (the unit
    /// stickiness places); without one, connections.
    fn pick_new(
        &self,
        client: IpAddr,
        exclude: &[ServerName],
        table: Option<&StickTable>,
    ) -> Option<Arc<ServerRt>> {
        let eligible: Vec<&Arc<ServerRt>> = self
            .servers
            .iter()
            .filter(|s| s.takes_new_clients() && !exclude.contains(&s.name))
            .collect();
        let candidates: Vec<Candidate<'_>> = eligible
            .iter()
            .map(|s| Candidate {
                name: &s.name,
                weight: s.weight,
                load: table.map_or_else(|| s.assigned(), |t| t.active_clients(&s.name)),
            })
            .collect();
        let index = match self.spec.balance {
            ballast_model::model::Balance::Leastconn => {
                let tie = self.tie_breaker.fetch_add(1, Ordering::Relaxed);
                balance::leastconn(&candidates, tie)
            }
            ballast_model::model::Balance::Roundrobin => self.round_robin.lock().next(&candidates),
            ballast_model::model::Balance::Source => {
                balance::rendezvous(&client_key(client), &candidates)
            }
        }?;
        Some(eligible[index].clone())
    }

    /// The server for a new connection of `client`, counted as assigned to it. With a
    /// stick table the whole decision happens under its lock, so concurrent first
    /// sockets of one client agree and leastconn sees every earlier decision.
    fn decide(&self, client: IpAddr, now_ms: u64) -> Option<Arc<ServerRt>> {
        let Some(table) = &self.stick else {
            let server = self.pick_new(client, &[], None)?;
            server.assigned.fetch_add(1, Ordering::Relaxed);
            return Some(server);
        };
        let mut table = table.lock();
        let assignment = table.assign(
            client,
            now_ms,
            |name| match self.server(name) {
                Some(s) if s.keeps_stuck_clients() => Stickiness::Keep,
                _ => Stickiness::Move,
            },
            |t| self.pick_new(client, &[], Some(t)).map(|s| s.name.clone()),
        )?;
        let server = self.server(&assignment.server)?.clone();
        server.assigned.fetch_add(1, Ordering::Relaxed);
        drop(table);
        match &assignment.outcome {
            crate::stick::Outcome::Kept => {}
            crate::stick::Outcome::New => self.replicate(client, &server.name, now_ms),
            crate::stick::Outcome::Moved { from } => {
                self.m_stick_moves.inc();
                info!(%client, backend = %self.spec.name, from = %from, to = %server.name, "client re-stuck");
                self.replicate(client, &server.name, now_ms);
            }
        }
        Some(server)
    }

    /// `failed` could not be reached: choose where this connection goes next, moving
    /// the client's entry (once, for all its sockets).
    fn redispatch(
        &self,
        client: IpAddr,
        failed: &Arc<ServerRt>,
        tried: &[ServerName],
    ) -> Option<Arc<ServerRt>> {
        let now_ms = now_ms();
        let next = match &self.stick {
            Some(table) => {
                let mut table = table.lock();
                let moved = table.reassign(client, &failed.name, now_ms, |t| {
                    self.pick_new(client, tried, Some(t))
                        .map(|s| s.name.clone())
                });
                let name = moved.or_else(|| {
                    self.pick_new(client, tried, Some(&table))
                        .map(|s| s.name.clone())
                })?;
                let next = self.server(&name)?.clone();
                next.assigned.fetch_add(1, Ordering::Relaxed);
                next
            }
            None => {
                let next = self.pick_new(client, tried, None)?;
                next.assigned.fetch_add(1, Ordering::Relaxed);
                next
            }
        };
        failed.assigned.fetch_sub(1, Ordering::Relaxed);
        if next.name != failed.name && self.stick.is_some() {
            self.m_stick_moves.inc();
            self.replicate(client, &next.name, now_ms);
        }
        Some(next)
    }

    /// After a failed connect to `failed`: try it once more instead of moving the
    /// client when its other connections are established there. The server answers
    /// (a dropped SYN under a burst, say), and moving the client would split its
    /// sockets across servers for as long as they last.
    fn retry_same_server(&self, client: IpAddr, failed: &ServerRt, tried: &[ServerName]) -> bool {
        let Some(table) = &self.stick else {
            return false;
        };
        let attempts_here = tried.iter().filter(|t| **t == failed.name).count();
        let siblings_there = table
            .lock()
            .get(&client)
            .is_some_and(|e| e.server == failed.name && e.open > 1);
        attempts_here == 1 && siblings_there && failed.is_up()
    }

    /// Counts an established connection handed over by another process: on `server`,
    /// with the client's entry pointing there (it does, unless this process learnt
    /// otherwise since; the connection's server wins, as it would have here).
    fn adopt(&self, client: IpAddr, server: &ServerRt, now_ms: u64) {
        server.assigned.fetch_add(1, Ordering::Relaxed);
        let Some(table) = &self.stick else { return };
        let assignment = table.lock().assign(
            client,
            now_ms,
            |current| {
                if *current == server.name {
                    Stickiness::Keep
                } else {
                    Stickiness::Move
                }
            },
            |_| Some(server.name.clone()),
        );
        if assignment.is_some_and(|a| !matches!(a.outcome, crate::stick::Outcome::Kept)) {
            self.replicate(client, &server.name, now_ms);
        }
    }

    /// This backend's stick entries with their last-seen times, for a hand-over.
    fn export_sticks(&self) -> Vec<(IpAddr, String, u64)> {
        let Some(table) = &self.stick else {
            return Vec::new();
        };
        table
            .lock()
            .iter()
            .map(|(key, entry)| (key, entry.server.to_string(), entry.last_seen_ms))
            .collect()
    }

    fn release(&self, client: IpAddr, server: &ServerRt, now_ms: u64) {
        server.assigned.fetch_sub(1, Ordering::Relaxed);
        if let Some(table) = &self.stick {
            let last_close = table.lock().release(client, now_ms);
            // Expiry counts from here on every node.
            if let Some(stuck_to) = last_close {
                self.replicate(client, &stuck_to, now_ms);
            }
        }
    }

    fn sweep(&self, now_ms: u64) {
        if let Some(table) = &self.stick {
            table.lock().sweep(now_ms);
        }
    }

    fn export_stick_metrics(&self, m: &Metrics) {
        let Some(table) = &self.stick else { return };
        let (len, evictions) = {
            let table = table.lock();
            (table.len(), table.counters().evictions)
        };
        let labels = metrics::backend_labels(&self.spec.name);
        m.stick_entries.get_or_create(&labels).set(len as i64);
        let before = self.reported_evictions.swap(evictions, Ordering::Relaxed);
        m.stick_evictions
            .get_or_create(&labels)
            .inc_by(evictions.saturating_sub(before));
    }
}

/// One stick entry as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StickView {
    pub key: IpAddr,
    pub server: String,
    /// Connections this client has open through this node.
    pub open: u32,
    pub last_seen_ms: u64,
    /// `None` while the client is connected here.
    pub expires_in_ms: Option<u64>,
}

/// The stick key of a client: its IP, with IPv4-mapped IPv6 folded to IPv4 so a
/// dual-stack listener does not split one client in two.
fn canonical_client(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn client_key(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

pub struct FrontendRt {
    pub spec: Frontend,
    m_active: Gauge,
    m_total: Counter,
    m_no_server: Counter,
    m_duration: crate::metrics::DurationHistogram,
    m_bytes_in: Counter,
    m_bytes_out: Counter,
}

impl FrontendRt {
    /// Its counters by name (see [`handover::CounterCarry`]).
    fn counters(&self) -> [(&'static str, &Counter); 4] {
        [
            ("total", &self.m_total),
            ("no_server", &self.m_no_server),
            ("bytes_in", &self.m_bytes_in),
            ("bytes_out", &self.m_bytes_out),
        ]
    }

    fn new(spec: &Frontend, m: &Metrics) -> Self {
        let labels = metrics::frontend_labels(&spec.name);
        let bytes = |direction| {
            m.bytes
                .get_or_create(&metrics::BytesLabels {
                    frontend: spec.name.clone(),
                    direction,
                })
                .clone()
        };
        FrontendRt {
            spec: spec.clone(),
            m_active: m.frontend_active.get_or_create(&labels).clone(),
            m_total: m.frontend_total.get_or_create(&labels).clone(),
            m_no_server: m.frontend_no_server.get_or_create(&labels).clone(),
            m_duration: m.connection_duration.get_or_create(&labels).clone(),
            m_bytes_in: bytes("client_to_server"),
            m_bytes_out: bytes("server_to_client"),
        }
    }
}

/// One immutable snapshot of what the data plane serves.
pub struct View {
    pub frontends: HashMap<String, Arc<FrontendRt>>,
    pub backends: HashMap<String, Arc<BackendRt>>,
}

impl View {
    fn empty() -> View {
        View {
            frontends: HashMap::new(),
            backends: HashMap::new(),
        }
    }

    /// The view for `model`, reusing every runtime object of `previous` whose spec did
    /// not change, so that established connections and counters carry on.
    fn build(
        model: &ClusterModel,
        m: &Metrics,
        sink: &Option<Arc<dyn ReplicationSink>>,
        previous: &View,
    ) -> View {
        View {
            frontends: model
                .frontends
                .values()
                .map(|f| {
                    let reused = previous
                        .frontends
                        .get(&f.name)
                        .filter(|old| old.spec == *f)
                        .cloned();
                    (
                        f.name.clone(),
                        reused.unwrap_or_else(|| Arc::new(FrontendRt::new(f, m))),
                    )
                })
                .collect(),
            backends: model
                .backends
                .values()
                .map(|b| {
                    let old = previous.backends.get(&b.name);
                    let rt = match old {
                        Some(old) if old.spec == *b => old.clone(),
                        _ => Arc::new(BackendRt::new(b, m, sink.clone(), old.map(|o| &**o))),
                    };
                    (b.name.clone(), rt)
                })
                .collect(),
        }
    }
}

/// Accept loops per listening port: one per core, so accepting scales like the rest.
pub(crate) fn accept_loops() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, MAX_PLANE_THREADS))
}

/// At most this many plane threads, and sockets per listening port.
const MAX_PLANE_THREADS: usize = 8;

/// `n` sockets on `addr` sharing the port through SO_REUSEPORT, so the kernel spreads
/// new connections over `n` accept loops instead of queueing them behind one.
///
/// SO_REUSEPORT would also let a second process (same user) join the group silently;
/// a plain bind first makes a port that is already in use an error, as without it.
///
/// The sockets are plain std ones: each is registered with the runtime of the plane
/// thread that accepts on it ([`workers`]).
pub(crate) fn listen_group(
    addr: SocketAddr,
    n: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let probe = listen_socket(addr, false)?;
    let addr = probe.local_addr()?.as_socket().unwrap_or(addr);
    drop(probe);
    let reuse_port = n > 1;
    (0..n.max(1))
        .map(|_| {
            let socket = listen_socket(addr, reuse_port)?;
            socket.listen(4096)?;
            Ok(socket.into())
        })
        .collect()
}

/// A listening socket with IP_FREEBIND, so a standby can bind the VIP before it holds
/// it, and SO_REUSEADDR so a restart does not wait for TIME_WAIT.
fn listen_socket(addr: SocketAddr, reuse_port: bool) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    #[cfg(target_os = "linux")]
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    #[cfg(target_os = "linux")]
    match addr {
        SocketAddr::V4(_) => socket.set_freebind(true)?,
        SocketAddr::V6(_) => {
            socket.set_freebind_ipv6(true)?;
            socket.set_only_v6(false)?;
        }
    }
    socket.set_nonblocking(true)?;
    // Accepted sockets inherit it on Linux: one setsockopt per listener instead of one
    // per connection.
    socket.set_nodelay(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Whether sockets accepted on a [`listen_socket`] already have TCP_NODELAY (checked by
/// `accepted_sockets_inherit_nodelay`).
pub(crate) const ACCEPTED_HAVE_NODELAY: bool = cfg!(target_os = "linux");

#[cfg(test)]
mod tests {
    use super::*;
    use ballast_model::model::{Balance, Server, Stick, StickOn};
    use std::time::Duration;

    fn backend(balance: Balance, stick: bool) -> BackendRt {
        let spec = Backend {
            name: "b".into(),
            balance,
            timeout_server: Duration::from_secs(60),
            timeout_connect: Duration::from_secs(1),
            timeout_queue: Duration::from_secs(1),
            stick: stick.then(|| Stick {
                on: StickOn::Src,
                size: 1000,
                expire: Duration::from_secs(3600),
            }),
            health: None,
            servers: (1..=3)
                .map(|i| Server {
                    name: format!("s{i}"),
                    addr: SocketAddr::from(([127, 0, 0, 1], 7000 + i)),
                    weight: 1,
                    maxconn: 0,
                    admin: AdminState::Ready,
                })
                .collect(),
        };
        BackendRt::new(&spec, &Metrics::new(), None, None)
    }

    fn client(i: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x7f00_0000 + i))
    }

    fn set_admin(b: &BackendRt, server: &str, state: AdminState) {
        b.server(server).unwrap().set_admin(state);
    }

    #[test]
    fn accepted_sockets_inherit_nodelay() {
        // One socket: with a group the kernel picks which one accepts.
        let listener = listen_group(SocketAddr::from(([127, 0, 0, 1], 0)), 1)
            .unwrap()
            .remove(0);
        listener.set_nonblocking(false).unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        // The connection path relies on it instead of setting it on every socket.
        assert_eq!(accepted.nodelay().unwrap(), ACCEPTED_HAVE_NODELAY);
    }

    #[test]
    fn leastconn_with_stickiness_spreads_clients_and_keeps_their_sockets_together() {
        let b = backend(Balance::Leastconn, true);
        let mut per_server: HashMap<String, u32> = HashMap::new();
        for c in 1..=300 {
            let first = b.decide(client(c), 0).unwrap();
            for _ in 0..2 {
                assert_eq!(b.decide(client(c), 0).unwrap().name, first.name);
            }
            *per_server.entry(first.name.to_string()).or_default() += 1;
        }
        assert_eq!(
            per_server.values().copied().collect::<Vec<_>>(),
            vec![100; 3]
        );
        assert!(b.servers.iter().all(|s| s.assigned() == 300));
    }

    #[test]
    fn drain_keeps_stuck_clients_and_takes_no_new_ones() {
        let b = backend(Balance::Leastconn, true);
        let stuck = b.decide(client(1), 0).unwrap();
        set_admin(&b, &stuck.name, AdminState::Drain);
        assert_eq!(b.decide(client(1), 1).unwrap().name, stuck.name);
        for c in 2..50 {
            assert_ne!(b.decide(client(c), 1).unwrap().name, stuck.name);
        }
    }

    #[test]
    fn maint_and_down_move_the_client_and_its_later_sockets_follow() {
        let b = backend(Balance::Leastconn, true);
        let first = b.decide(client(1), 0).unwrap();
        set_admin(&b, &first.name, AdminState::Maint);
        let moved = b.decide(client(1), 1).unwrap();
        assert_ne!(moved.name, first.name);
        assert_eq!(b.decide(client(1), 2).unwrap().name, moved.name);
        set_admin(&b, &first.name, AdminState::Ready);
        // Back in service: the client stays where it was moved.
        assert_eq!(b.decide(client(1), 3).unwrap().name, moved.name);
        moved.set_probed_up(false);
        let again = b.decide(client(1), 4).unwrap();
        assert_ne!(again.name, moved.name);
        assert!(again.is_up());
    }

    #[test]
    fn nothing_usable_means_no_server_and_no_entry_change() {
        let b = backend(Balance::Roundrobin, true);
        let first = b.decide(client(1), 0).unwrap();
        for s in &b.servers {
            s.set_probed_up(false);
        }
        assert!(b.decide(client(1), 1).is_none());
        assert!(b.decide(client(2), 1).is_none());
        first.set_probed_up(true);
        assert_eq!(b.decide(client(1), 2).unwrap().name, first.name);
    }

    #[test]
    fn redispatch_moves_all_of_a_clients_sockets_once() {
        let b = backend(Balance::Leastconn, true);
        let sockets: Vec<_> = (0..3).map(|_| b.decide(client(7), 0).unwrap()).collect();
        let failed = sockets[0].clone();
        let tried = vec![failed.name.clone()];
        let next: Vec<_> = sockets
            .iter()
            .map(|s| b.redispatch(client(7), s, &tried).unwrap().name.clone())
            .collect();
        assert!(
            next.iter().all(|n| *n == next[0] && *n != failed.name),
            "{next:?}"
        );
        assert_eq!(failed.assigned(), 0);
        assert_eq!(b.server(&next[0]).unwrap().assigned(), 3);
        // A new socket of that client goes to the new server.
        assert_eq!(b.decide(client(7), 1).unwrap().name, next[0]);
    }

    #[test]
    fn source_balance_without_stick_is_deterministic() {
        let b = backend(Balance::Source, false);
        for c in 1..50 {
            let one = b.decide(client(c), 0).unwrap().name.clone();
            assert_eq!(b.decide(client(c), 0).unwrap().name, one);
        }
    }

    #[tokio::test]
    async fn a_listen_group_shares_one_port_and_a_second_group_on_it_is_refused() {
        let group: Vec<_> = listen_group(SocketAddr::from(([127, 0, 0, 1], 0)), 2)
            .unwrap()
            .into_iter()
            .map(|l| tokio::net::TcpListener::from_std(l).unwrap())
            .collect();
        assert_eq!(group.len(), 2);
        let port = group[0].local_addr().unwrap().port();
        assert!(group.iter().all(|l| l.local_addr().unwrap().port() == port));
        let again = listen_group(SocketAddr::from(([127, 0, 0, 1], port)), 2);
        assert_eq!(
            again.err().map(|e| e.kind()),
            Some(std::io::ErrorKind::AddrInUse),
            "a port in use must stay an error with SO_REUSEPORT"
        );
        // Every connection is accepted by one of the group's sockets.
        let mut accepted = 0;
        for _ in 0..8 {
            let _client = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            tokio::select! {
                r = group[0].accept() => { r.unwrap(); }
                r = group[1].accept() => { r.unwrap(); }
            }
            accepted += 1;
        }
        assert_eq!(accepted, 8);
    }

    #[test]
    fn a_failed_connect_is_retried_on_the_same_server_once_when_siblings_are_there() {
        let b = backend(Balance::Leastconn, true);
        let first = b.decide(client(7), 0).unwrap();
        let tried = vec![first.name.clone()];
        // Alone, the client moves at once.
        assert!(!b.retry_same_server(client(7), &first, &tried));
        let sibling = b.decide(client(7), 0).unwrap();
        assert_eq!(sibling.name, first.name);
        assert!(b.retry_same_server(client(7), &first, &tried));
        // Only once: a second failure there moves the client after all.
        let twice = vec![first.name.clone(), first.name.clone()];
        assert!(!b.retry_same_server(client(7), &first, &twice));
    }

    #[test]
    fn release_returns_load_and_starts_expiry() {
        let b = backend(Balance::Leastconn, true);
        let s = b.decide(client(1), 0).unwrap();
        b.release(client(1), &s, 10);
        assert_eq!(s.assigned(), 0);
        b.sweep(10 + 3_600_000);
        let table = b.stick.as_ref().unwrap().lock();
        assert!(table.is_empty());
    }

    #[test]
    fn mapped_ipv6_clients_share_their_ipv4_entry() {
        let mapped: IpAddr = "::ffff:127.0.0.5".parse().unwrap();
        assert_eq!(canonical_client(mapped), client(5));
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(canonical_client(v6), v6);
    }
}
