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

use super::serving::{ListenerSlot, Serving};
use super::{accept_loops, conn, listen_group, now_ms, workers, ReplicationSink, ServerRt, View};
use crate::health::{self, Flip, Hysteresis};
use crate::metrics::Metrics;

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
    /// One accept loop per socket of the port's SO_REUSEPORT group.
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
        if rt.stopped {
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
            match listen_group(*addr, accept_loops()) {
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
            let workers = workers::workers();
            let tasks = group
                .into_iter()
                .zip((0..workers.len()).cycle())
                .map(|(listener, here)| {
                    workers[here].handle.spawn(conn::accept_loop(
                        self.serving.clone(),
                        slot.clone(),
                        listener,
                        here,
                    ))
                })
                .collect();
            rt.listeners.insert(addr, Listener { slot, local, tasks });
        }
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
