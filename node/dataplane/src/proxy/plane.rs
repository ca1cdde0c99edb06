//! The data plane as a whole: the current [`View`], its listeners, health checkers and
//! housekeeping. [`DataPlane::apply_model`] moves it from one model to the next in the
//! one running process: listeners are opened and closed only where binds changed,
//! runtime objects whose spec did not change are kept, and established connections —
//! which hold their own `Arc`s — are never touched. Never a reload.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ballast_model::model::{ClusterModel, HealthCheck};
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use super::handover::{
    Adopted, ConnMeta, CounterCarry, CounterOf, Handover, ListenerMeta, Parked, PlaneState,
    ServerHealthCarry, StickCarry, WaitingMeta,
};
use super::serving::{ListenerSlot, Serving};
use super::{accept_loops, conn, listen_group, now_ms, workers, ReplicationSink, ServerRt, View};
use crate::health::{self, Flip, Hysteresis};
use crate::metrics::Metrics;
use prometheus_client::metrics::counter::Counter;

/// What [`DataPlane::apply_model`] did, for the caller that feeds the plane.
#[derive(Debug, Default)]
pub struct ModelApplied {
    /// Listeners that could not be opened (retried at the next model change).
    pub errors: Vec<DataPlaneError>,
    /// Backends whose stick table was created empty by this change (a new backend, or
    /// stickiness just enabled): the only tables that need the replicated entries
    /// imported. Every other table was carried over with its entries.
    pub new_stick_tables: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FreezeError {
    #[error("the data plane is stopped")]
    Stopped,
    #[error("the data plane is frozen already (another hand-over is under way)")]
    AlreadyFrozen,
}

#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    #[error("frontend {frontend:?}: cannot listen on {addr}: {source}")]
    Bind {
        frontend: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

struct Listener {
    slot: Arc<ListenerSlot>,
    local: SocketAddr,
    /// The port's SO_REUSEPORT group. Kept here, not only in the accept loops: closing
    /// one socket of a group resets the connections in its accept queue, so a freeze
    /// stops the loops and keeps every socket open.
    sockets: Vec<std::net::TcpListener>,
    /// One accept loop per socket of the group (none while frozen).
    tasks: Vec<JoinHandle<()>>,
}

struct Checker {
    server: Arc<ServerRt>,
    check: HealthCheck,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Runtime {
    listeners: BTreeMap<SocketAddr, Listener>,
    checkers: HashMap<(String, String), Checker>,
    housekeeping: Vec<JoinHandle<()>>,
    applied_once: bool,
    stopped: bool,
    /// Frozen for a hand-over: nothing accepts, nothing relays, models wait.
    frozen: bool,
    /// Listening sockets handed over by the previous process, by configured address:
    /// the next model apply takes them instead of binding.
    inherited: BTreeMap<SocketAddr, Vec<std::net::TcpListener>>,
    bind_errors: Vec<String>,
}

pub struct DataPlane {
    /// What every connection reads (the view, the VIPs): the accept loops get this,
    /// never the plane that manages them.
    serving: Arc<Serving>,
    metrics: Arc<Metrics>,
    sink: Option<Arc<dyn ReplicationSink>>,
    /// Replaces the wildcard address of binds on this node (`[node] bind_ip`).
    bind_ip: Option<IpAddr>,
    /// A model has been applied and every listener is bound; watched by whoever waits
    /// for the plane to serve (start-up, VRRP's first election).
    ready: tokio::sync::watch::Sender<bool>,
    /// Revision of the cluster model the view was last built from.
    model_revision: std::sync::atomic::AtomicU64,
    model_applied: tokio::sync::Notify,
    /// Touched only when the model changes or the plane stops, never per connection.
    runtime: Mutex<Runtime>,
}

impl DataPlane {
    pub fn new(
        metrics: Arc<Metrics>,
        sink: Option<Arc<dyn ReplicationSink>>,
        bind_ip: Option<IpAddr>,
    ) -> Arc<Self> {
        Arc::new(DataPlane {
            serving: Arc::new(Serving::new()),
            metrics,
            sink,
            bind_ip,
            ready: tokio::sync::watch::channel(false).0,
            model_revision: std::sync::atomic::AtomicU64::new(0),
            model_applied: tokio::sync::Notify::new(),
            runtime: Mutex::new(Runtime::default()),
        })
    }

    /// The addresses VRRP moves between nodes.
    pub fn set_vips(&self, vips: Vec<IpAddr>) {
        self.serving.set_vips(vips);
    }

    /// This node no longer holds its VIPs: end the connections accepted on them, with
    /// a reset. Their packets now reach the new master, which resets them anyway; a
    /// client that only receives would otherwise notice late, and this node would hold
    /// the client's and the server's sockets for hours.
    pub fn release_vip_connections(&self) {
        self.serving.release_vip_connections();
    }

    /// Starts watching for the next accepted connection (a new master's first client).
    pub fn arm_first_accept(&self) {
        self.serving.arm_first_accept();
    }

    pub fn first_accept_ms(&self) -> Option<u64> {
        self.serving.first_accept_ms()
    }

    pub fn view(&self) -> Arc<View> {
        self.serving.view()
    }

    /// A model has been applied and every listener is bound.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Why the plane is not ready, if it is not.
    pub fn not_ready_reason(&self) -> Option<String> {
        let rt = self.runtime.lock();
        if rt.stopped {
            Some("the data plane is stopped".into())
        } else if !rt.applied_once {
            Some("no cluster model applied yet".into())
        } else if !rt.bind_errors.is_empty() {
            Some(rt.bind_errors.join("; "))
        } else {
            None
        }
    }

    /// Addresses the listeners are bound to (useful when a config asks for port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.runtime
            .lock()
            .listeners
            .values()
            .map(|l| l.local)
            .collect()
    }

    /// Moves to `model`. Listeners that cannot be bound are reported and retried at the
    /// next model change; everything else is applied.
    pub fn apply_model(self: &Arc<Self>, model: &ClusterModel) -> ModelApplied {
        let mut rt = self.runtime.lock();
        if rt.stopped || rt.frozen {
            return ModelApplied::default();
        }
        let previous = self.view();
        let next = Arc::new(View::build(model, &self.metrics, &self.sink, &previous));

        let mut wanted: BTreeMap<SocketAddr, String> = BTreeMap::new();
        for frontend in model.frontends.values() {
            for bind in &frontend.bind {
                for addr in bind.addrs() {
                    wanted.insert(self.local_addr(addr), frontend.name.clone());
                }
            }
        }
        let mut errors = Vec::new();
        let mut opened = Vec::new();
        for (addr, frontend) in &wanted {
            if let Some(existing) = rt.listeners.get(addr) {
                if **existing.slot.frontend.load() != *frontend {
                    existing.slot.frontend.store(Arc::new(frontend.clone()));
                }
                continue;
            }
            let group = match rt.inherited.remove(addr) {
                Some(inherited) => Ok(inherited),
                None => listen_group(*addr, accept_loops()),
            };
            match group {
                Ok(group) => opened.push((*addr, frontend.clone(), group)),
                Err(source) => {
                    error!(frontend = %frontend, %addr, error = %source, "cannot listen");
                    errors.push(DataPlaneError::Bind {
                        frontend: frontend.clone(),
                        addr: *addr,
                        source,
                    });
                }
            }
        }
        // The new view first: a connection accepted on a new port must find its frontend.
        self.serving.store_view(next.clone());
        for (addr, frontend, group) in opened {
            let local = group
                .first()
                .and_then(|l| l.local_addr().ok())
                .unwrap_or(addr);
            let slot = Arc::new(ListenerSlot {
                frontend: ArcSwap::from_pointee(frontend.clone()),
            });
            info!(frontend = %frontend, addr = %local, sockets = group.len(), "listening");
            let tasks = self.accept_on(&slot, &group);
            rt.listeners.insert(
                addr,
                Listener {
                    slot,
                    local,
                    sockets: group,
                    tasks,
                },
            );
        }
        // Handed over for a bind this model no longer has: closed.
        rt.inherited.clear();
        let gone: Vec<SocketAddr> = rt
            .listeners
            .keys()
            .filter(|a| !wanted.contains_key(a))
            .copied()
            .collect();
        for addr in gone {
            if let Some(l) = rt.listeners.remove(&addr) {
                info!(addr = %l.local, "closing listener (established connections stay)");
                l.tasks.iter().for_each(JoinHandle::abort);
            }
        }
        self.sync_checkers(&mut rt, &next);
        if rt.housekeeping.is_empty() {
            rt.housekeeping.push(tokio::spawn(sweep_loop(self.clone())));
            rt.housekeeping
                .push(tokio::spawn(refresh_loop(self.clone())));
        }
        rt.applied_once = true;
        rt.bind_errors = errors.iter().map(ToString::to_string).collect();
        self.ready.send_replace(errors.is_empty());
        let new_stick_tables = next
            .backends
            .iter()
            .filter(|(name, b)| {
                b.stick.is_some()
                    && previous
                        .backends
                        .get(*name)
                        .is_none_or(|p| p.stick.is_none())
            })
            .map(|(name, _)| name.clone())
            .collect();
        ModelApplied {
            errors,
            new_stick_tables,
        }
    }

    /// Starts one accept loop per socket of a port's group, on the plane threads in
    /// turn; each loop gets its own duplicate of the socket.
    fn accept_on(
        &self,
        slot: &Arc<ListenerSlot>,
        group: &[std::net::TcpListener],
    ) -> Vec<JoinHandle<()>> {
        let workers = workers::workers();
        group
            .iter()
            .zip((0..workers.len()).cycle())
            .filter_map(|(socket, here)| match socket.try_clone() {
                Ok(listener) => Some(workers[here].handle.spawn(conn::accept_loop(
                    self.serving.clone(),
                    slot.clone(),
                    listener,
                    here,
                ))),
                Err(e) => {
                    error!(frontend = %slot.frontend.load(), error = %e, "cannot duplicate a listening socket for its accept loop");
                    None
                }
            })
            .collect()
    }

    fn local_addr(&self, addr: SocketAddr) -> SocketAddr {
        match self.bind_ip {
            Some(ip) if addr.ip().is_unspecified() && ip.is_ipv4() == addr.is_ipv4() => {
                SocketAddr::new(ip, addr.port())
            }
            _ => addr,
        }
    }

    fn sync_checkers(&self, rt: &mut Runtime, view: &View) {
        let mut wanted: HashMap<(String, String), (Arc<ServerRt>, HealthCheck)> = HashMap::new();
        for backend in view.backends.values() {
            if let Some(check) = &backend.spec.health {
                for server in &backend.servers {
                    wanted.insert(
                        (backend.spec.name.clone(), server.name.to_string()),
                        (server.clone(), check.clone()),
                    );
                }
            }
        }
        rt.checkers.retain(|key, checker| {
            let keep = wanted
                .get(key)
                .is_some_and(|(s, c)| Arc::ptr_eq(s, &checker.server) && *c == checker.check);
            if !keep {
                checker.task.abort();
            }
            keep
        });
        for (key, (server, check)) in wanted {
            if rt.checkers.contains_key(&key) {
                continue;
            }
            let task = tokio::spawn(health_loop(
                server.clone(),
                check.clone(),
                self.sink.clone(),
            ));
            rt.checkers.insert(
                key,
                Checker {
                    server,
                    check,
                    task,
                },
            );
        }
    }

    /// Records that the view now reflects the model at `revision`.
    pub fn mark_applied(&self, revision: u64) {
        self.model_revision.fetch_max(revision, Ordering::Relaxed);
        self.model_applied.notify_waiters();
    }

    /// Waits (at most `timeout`) until the view reflects `revision`; false on timeout.
    pub async fn wait_applied(&self, revision: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.model_applied.notified();
            if self.model_revision.load(Ordering::Relaxed) >= revision {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.model_revision.load(Ordering::Relaxed) >= revision;
            }
        }
    }

    /// Waits until the plane is ready, at most `timeout`; whether it is.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut ready = self.ready.subscribe();
        let _ = tokio::time::timeout(timeout, ready.wait_for(|r| *r)).await;
        self.is_ready()
    }

    /// Stops accepting and checking. Established connections are left to finish.
    pub fn stop(&self) {
        let mut rt = self.runtime.lock();
        rt.stopped = true;
        self.ready.send_replace(false);
        for (_, l) in std::mem::take(&mut rt.listeners) {
            l.tasks.iter().for_each(JoinHandle::abort);
        }
        for (_, c) in std::mem::take(&mut rt.checkers) {
            c.task.abort();
        }
        for task in rt.housekeeping.drain(..) {
            task.abort();
        }
    }

    /// Stops the plane for a hand-over: the accept loops end (every listening socket
    /// stays open; the kernel queues new connections meanwhile), the health checks
    /// pause, and every connection parks itself with its state at its next await —
    /// within microseconds, as nothing in the connection path blocks. Waits at most
    /// `within` for the last one; those still running then are counted as
    /// `stragglers` (and the caller should [`DataPlane::thaw`]).
    ///
    /// Model changes wait while frozen (the next process applies the current model).
    pub async fn freeze(self: &Arc<Self>, within: Duration) -> Result<Handover, FreezeError> {
        let accept_tasks = {
            let mut rt = self.runtime.lock();
            if rt.stopped {
                return Err(FreezeError::Stopped);
            }
            if rt.frozen {
                return Err(FreezeError::AlreadyFrozen);
            }
            rt.frozen = true;
            for (_, checker) in std::mem::take(&mut rt.checkers) {
                checker.task.abort();
            }
            rt.listeners
                .values_mut()
                .flat_map(|l| std::mem::take(&mut l.tasks))
                .collect::<Vec<_>>()
        };
        // Stopped before the freeze is announced, so no connection is accepted after
        // the count below has started.
        for task in &accept_tasks {
            task.abort();
        }
        for task in accept_tasks {
            let _ = task.await;
        }
        let frozen_at_ms = now_ms();
        self.serving.set_frozen(true);
        let deadline = tokio::time::Instant::now() + within;
        while self.serving.live() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let stragglers = self.serving.live();
        let mut handover = Handover {
            frozen_at_ms,
            stragglers,
            state: self.export_state(),
            ..Handover::default()
        };
        for parked in self.serving.take_parked() {
            match parked {
                Parked::Established(meta, client, server) => {
                    handover.connections.push((meta, client, server));
                }
                Parked::Waiting(meta, client) => handover.waiting.push((meta, client)),
            }
        }
        let rt = self.runtime.lock();
        for (addr, listener) in &rt.listeners {
            let sockets: Vec<std::net::TcpListener> = listener
                .sockets
                .iter()
                .filter_map(|s| s.try_clone().ok())
                .collect();
            let meta = ListenerMeta {
                addr: *addr,
                frontend: listener.slot.frontend.load().to_string(),
            };
            handover.listeners.push((meta, sockets));
        }
        info!(
            connections = handover.connections.len(),
            waiting = handover.waiting.len(),
            listeners = handover.listener_sockets(),
            stragglers,
            "data plane frozen for a hand-over"
        );
        Ok(handover)
    }

    /// Undoes a [`DataPlane::freeze`] whose hand-over did not happen: listens and
    /// checks again and resumes every parked connection from its state, in this
    /// process. The handed-over listener duplicates are simply closed.
    pub fn thaw(self: &Arc<Self>, handover: Handover) -> Adopted {
        let (go, ready) = tokio::sync::watch::channel(true);
        {
            let mut rt = self.runtime.lock();
            if !rt.frozen {
                return Adopted::default();
            }
            rt.frozen = false;
            self.serving.set_frozen(false);
            // `accept_on` gives each loop its own duplicate of the kept sockets.
            for listener in rt.listeners.values_mut() {
                listener.tasks = self.accept_on(&listener.slot, &listener.sockets);
            }
            let view = self.view();
            self.sync_checkers(&mut rt, &view);
        }
        let adopted = self.adopt_counted(handover.connections, handover.waiting, ready, true);
        drop(go);
        info!(
            connections = adopted.connections,
            waiting = adopted.waiting,
            "data plane thawed: the hand-over did not happen, serving on"
        );
        adopted
    }

    /// Listening sockets handed over by the previous process; the next
    /// [`DataPlane::apply_model`] serves them instead of binding (call it before).
    pub fn offer_listeners(&self, listeners: Vec<(ListenerMeta, Vec<std::net::TcpListener>)>) {
        let mut rt = self.runtime.lock();
        for (meta, sockets) in listeners {
            rt.inherited.insert(meta.addr, sockets);
        }
    }

    /// Takes over connections handed over by another process (or parked by this one):
    /// each is counted on its server and in its client's stick entry at once, and
    /// relays (or, waiting, is placed) when `go` turns true. Call after the model they
    /// belong to has been applied.
    pub fn adopt(
        self: &Arc<Self>,
        connections: Vec<(ConnMeta, std::net::TcpStream, std::net::TcpStream)>,
        waiting: Vec<(WaitingMeta, std::net::TcpStream)>,
        go: tokio::sync::watch::Receiver<bool>,
    ) -> Adopted {
        self.adopt_counted(connections, waiting, go, false)
    }

    /// `counted`: the connections were parked by this plane, which kept their
    /// accounting (a thaw).
    fn adopt_counted(
        self: &Arc<Self>,
        connections: Vec<(ConnMeta, std::net::TcpStream, std::net::TcpStream)>,
        waiting: Vec<(WaitingMeta, std::net::TcpStream)>,
        go: tokio::sync::watch::Receiver<bool>,
        counted: bool,
    ) -> Adopted {
        let workers = workers::workers();
        let adopted = Adopted {
            connections: connections.len(),
            waiting: waiting.len(),
        };
        self.serving.expect_resumed(connections.len());
        // Dealt to the threads evenly, then started by one task per thread: spawning
        // each from here would cross threads (and may wake one) once per connection.
        let mut dealt: Vec<Vec<_>> = (0..workers.len()).map(|_| Vec::new()).collect();
        for (i, connection) in connections.into_iter().enumerate() {
            let to = i % workers.len();
            let guards = (workers[to].carry(), self.serving.track());
            dealt[to].push((connection, guards));
        }
        for (worker, batch) in workers.iter().zip(dealt) {
            if batch.is_empty() {
                continue;
            }
            let serving = self.serving.clone();
            let go = go.clone();
            worker.handle.spawn(async move {
                for ((meta, client, server), guards) in batch {
                    let resumed = conn::Resumed {
                        go: go.clone(),
                        counted,
                    };
                    tokio::spawn(conn::resume(
                        serving.clone(),
                        meta,
                        client,
                        server,
                        resumed,
                        guards,
                    ));
                }
            });
        }
        // Oldest first, so they queue for their server in the order they arrived.
        let mut waiting = waiting;
        waiting.sort_by_key(|(meta, _)| meta.started_ms);
        for (i, (meta, client)) in waiting.into_iter().enumerate() {
            let to = conn::least_loaded(workers, i % workers.len());
            let guards = (workers[to].carry(), self.serving.track());
            workers[to].handle.spawn(conn::handle(
                self.serving.clone(),
                Arc::new(meta.frontend),
                client,
                meta.peer,
                conn::Arrival::Waiting {
                    first: meta.first,
                    started_ms: meta.started_ms,
                    go: go.clone(),
                },
                guards,
            ));
        }
        adopted
    }

    /// Unix ms when the last adopted connection relayed again (after its `go`), waiting
    /// at most `timeout`: the end of a hand-over's pause. `None` if some have not.
    pub async fn wait_resumed(&self, timeout: Duration) -> Option<u64> {
        self.serving.wait_resumed(timeout).await
    }

    /// The stick entries, server health and counters of the current view.
    pub fn export_state(&self) -> PlaneState {
        let view = self.view();
        let mut state = PlaneState::default();
        let mut carry = |of: CounterOf, counters: &[(&str, &Counter)]| {
            for (name, counter) in counters {
                let value = counter.get();
                if value > 0 {
                    state.counters.push(CounterCarry {
                        of: of.clone(),
                        name: (*name).to_string(),
                        value,
                    });
                }
            }
        };
        for (name, frontend) in &view.frontends {
            carry(CounterOf::Frontend(name.clone()), &frontend.counters());
        }
        for (name, backend) in &view.backends {
            carry(
                CounterOf::Backend(name.clone()),
                &[("stick_moves", &backend.m_stick_moves)],
            );
            for server in &backend.servers {
                carry(
                    CounterOf::Server {
                        backend: name.clone(),
                        server: server.name.to_string(),
                    },
                    &server.counters(),
                );
            }
        }
        for (name, backend) in &view.backends {
            let entries = backend.export_sticks();
            if !entries.is_empty() {
                state.sticks.push(StickCarry {
                    backend: name.clone(),
                    entries,
                });
            }
            for server in &backend.servers {
                state.health.push(ServerHealthCarry {
                    backend: name.clone(),
                    server: server.name.to_string(),
                    probed: server.probed.load(Ordering::Relaxed),
                    up: server.up.load(Ordering::Relaxed),
                    replicated_up: server.replicated_up.load(Ordering::Relaxed),
                });
            }
        }
        state
    }

    /// Takes in the tables of the previous process (after its model has been applied
    /// here): stick entries merge like replicated ones, and each server's health
    /// continues where it was, so its checker starts from the same verdict.
    pub fn import_state(&self, state: &PlaneState) {
        let view = self.view();
        for carry in &state.sticks {
            let Some(backend) = view.backends.get(&carry.backend) else {
                continue;
            };
            let names: Vec<(IpAddr, Arc<str>, u64)> = carry
                .entries
                .iter()
                .map(|(key, server, seen)| (*key, Arc::from(server.as_str()), *seen))
                .collect();
            backend.merge_sticks(names.iter().map(|(k, s, t)| (*k, s, *t)));
        }
        for carry in &state.health {
            let Some(server) = view
                .backends
                .get(&carry.backend)
                .and_then(|b| b.server(&carry.server))
            else {
                continue;
            };
            server.set_replicated_up(carry.replicated_up);
            if carry.probed {
                server.set_probed_up(carry.up);
            }
        }
        for carry in &state.counters {
            let counter = match &carry.of {
                CounterOf::Frontend(name) => view.frontends.get(name).and_then(|f| {
                    f.counters()
                        .into_iter()
                        .find(|(n, _)| *n == carry.name)
                        .map(|(_, c)| c.clone())
                }),
                CounterOf::Backend(name) => view
                    .backends
                    .get(name)
                    .filter(|_| carry.name == "stick_moves")
                    .map(|b| b.m_stick_moves.clone()),
                CounterOf::Server { backend, server } => view
                    .backends
                    .get(backend)
                    .and_then(|b| b.server(server))
                    .and_then(|s| {
                        s.counters()
                            .into_iter()
                            .find(|(n, _)| *n == carry.name)
                            .map(|(_, c)| c.clone())
                    }),
            };
            if let Some(counter) = counter {
                counter.inc_by(carry.value);
            }
        }
    }

    pub fn render_metrics(&self) -> String {
        for backend in self.view().backends.values() {
            backend.export_stick_metrics(&self.metrics);
        }
        for (thread, worker) in workers::running().iter().enumerate() {
            self.metrics
                .plane_connections
                .get_or_create(&crate::metrics::ThreadLabels { thread })
                .set(worker.connections() as i64);
        }
        self.metrics.render()
    }

    /// Takes in stick entries decided elsewhere (committed by other nodes, or the
    /// replicated table of a backend this plane has just created).
    pub fn merge_sticks<'a>(
        &self,
        backend: &str,
        updates: impl IntoIterator<Item = (IpAddr, &'a Arc<str>, u64)>,
    ) {
        if let Some(b) = self.view().backends.get(backend) {
            b.merge_sticks(updates);
        }
    }

    pub fn forget_sticks(&self, backend: &str, key: Option<IpAddr>) {
        if let Some(b) = self.view().backends.get(backend) {
            b.forget_sticks(key);
        }
    }

    /// Closes the established connections of a server that is being removed.
    pub fn shutdown_server(&self, backend: &str, server: &str) {
        if let Some(s) = self
            .view()
            .backends
            .get(backend)
            .and_then(|b| b.server(server))
        {
            info!(backend, server, "closing the removed server's connections");
            s.shut_down();
            self.serving.note_server_removed();
        }
    }

    pub fn set_replicated_health(&self, backend: &str, server: &str, up: bool) {
        if let Some(s) = self
            .view()
            .backends
            .get(backend)
            .and_then(|b| b.server(server))
        {
            s.set_replicated_up(up);
        }
    }

    /// Sets the replicated health of every server from `effective_up(backend, server)`.
    pub fn set_all_replicated_health(&self, effective_up: impl Fn(&str, &str) -> bool) {
        for (name, backend) in &self.view().backends {
            for server in &backend.servers {
                server.set_replicated_up(effective_up(name, &server.name));
            }
        }
    }
}

async fn health_loop(
    server: Arc<ServerRt>,
    check: HealthCheck,
    sink: Option<Arc<dyn ReplicationSink>>,
) {
    // Start from what the cluster believes, so a node taking over neither trusts a dead
    // server nor distrusts a live one until its own probes say otherwise.
    let mut state = Hysteresis::starting(check.rise, check.fall, server.is_up());
    let mut ticker = tokio::time::interval(check.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let result = health::probe(server.addr, &check).await;
        if let Err(e) = &result {
            server.m_health_failures.inc();
            tracing::debug!(backend = %server.backend, server = %server.name, reason = e.as_str(), error = %e, "health probe failed");
        }
        let flip = state.observe(result.is_ok());
        server.set_probed_up(state.is_up());
        let Some(flip) = flip else { continue };
        let up = flip == Flip::CameUp;
        if up {
            info!(backend = %server.backend, server = %server.name, addr = %server.addr, "server up");
        } else {
            warn!(backend = %server.backend, server = %server.name, addr = %server.addr,
                  error = %result.err().map(|e| e.to_string()).unwrap_or_default(), "server down");
        }
        if let Some(sink) = &sink {
            sink.health(&server.backend, &server.name, up, now_ms());
        }
    }
}

async fn sweep_loop(plane: Arc<DataPlane>) {
    // A linear pass per table; lookups already ignore expired entries, so this only
    // returns memory.
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    loop {
        ticker.tick().await;
        let now = now_ms();
        for backend in plane.view().backends.values() {
            backend.sweep(now);
        }
    }
}

/// Re-reports connected clients a few times per `expire` (at most every 10 minutes,
/// at least every second), so their replicated entries outlive any connection.
async fn refresh_loop(plane: Arc<DataPlane>) {
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticker.tick().await;
        let now = now_ms();
        for (name, backend) in &plane.view().backends {
            let Some(stick) = &backend.spec.stick else {
                continue;
            };
            let every = (stick.expire.as_millis() as u64 / 4).clamp(1_000, 600_000);
            let due = last
                .get(name)
                .is_none_or(|t| now.saturating_sub(*t) >= every);
            if due {
                backend.refresh_connected(now);
                last.insert(name.clone(), now);
            }
        }
    }
}
