//! Prometheus metrics of one node.
//!
//! Families are registered once; the data plane resolves the labelled children it needs
//! when it builds its runtime objects, so the connection path only touches atomics,
//! never a label lookup or a lock ([`DurationHistogram`]). Values owned by other
//! structures (stick table sizes) are copied in at scrape time by the data plane.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FrontendLabels {
    pub frontend: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub backend: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    pub backend: String,
    pub server: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ThreadLabels {
    pub thread: usize,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabels {
    pub frontend: String,
    pub direction: &'static str,
}

/// Upper bounds, in seconds, of the connection-duration buckets: long-lived connections,
/// from a tenth of a second to a day.
const DURATION_BOUNDS_S: [f64; 10] = [
    0.1,
    1.0,
    10.0,
    60.0,
    600.0,
    3_600.0,
    4.0 * 3_600.0,
    10.0 * 3_600.0,
    15.0 * 3_600.0,
    24.0 * 3_600.0,
];

/// A histogram of connection durations that every closing connection observes without a
/// lock: prometheus-client's `Histogram` takes a write lock per observation, which every
/// plane thread would share for each frontend. Buckets and the sum are separate atomics,
/// so a scrape may see an observation in one and not yet in the other; the count is read
/// from the buckets, so it always matches them.
#[derive(Clone, Debug, Default)]
pub struct DurationHistogram(Arc<DurationBuckets>);

#[derive(Debug, Default)]
struct DurationBuckets {
    /// Per bucket, not cumulative; the last one is +Inf.
    counts: [AtomicU64; DURATION_BOUNDS_S.len() + 1],
    sum_us: AtomicU64,
}

impl DurationHistogram {
    pub fn observe(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        let bucket = DURATION_BOUNDS_S
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(DURATION_BOUNDS_S.len());
        let buckets = &self.0;
        buckets.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        buckets.sum_us.fetch_add(micros, Ordering::Relaxed);
    }
}

impl TypedMetric for DurationHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for DurationHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets = &self.0;
        // prometheus-client writes an upper bound of f64::MAX as +Inf.
        let bounds = DURATION_BOUNDS_S.iter().copied().chain([f64::MAX]);
        let counts: Vec<(f64, u64)> = bounds
            .zip(&buckets.counts)
            .map(|(bound, count)| (bound, count.load(Ordering::Relaxed)))
            .collect();
        let count = counts.iter().map(|(_, n)| n).sum();
        let sum = buckets.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<()>(sum, count, &counts, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

pub struct Metrics {
    registry: Registry,
    pub frontend_active: Family<FrontendLabels, Gauge>,
    pub frontend_total: Family<FrontendLabels, Counter>,
    pub frontend_no_server: Family<FrontendLabels, Counter>,
    pub connection_duration: Family<FrontendLabels, DurationHistogram>,
    pub bytes: Family<BytesLabels, Counter>,
    pub server_active: Family<ServerLabels, Gauge>,
    pub server_total: Family<ServerLabels, Counter>,
    pub server_up: Family<ServerLabels, Gauge>,
    pub server_queue: Family<ServerLabels, Gauge>,
    pub queue_timeouts: Family<ServerLabels, Counter>,
    pub connect_failures: Family<ServerLabels, Counter>,
    pub health_failures: Family<ServerLabels, Counter>,
    pub stick_entries: Family<BackendLabels, Gauge>,
    pub stick_capacity: Family<BackendLabels, Gauge>,
    pub stick_evictions: Family<BackendLabels, Counter>,
    pub stick_moves: Family<BackendLabels, Counter>,
    pub plane_connections: Family<ThreadLabels, Gauge>,
    pub cluster: ClusterMetrics,
    pub vrrp: VrrpMetrics,
}

/// VRRP figures, copied from the instance at scrape time.
#[derive(Default)]
pub struct VrrpMetrics {
    pub master: Gauge,
    pub effective_priority: Gauge,
    pub transitions: Counter,
    pub adverts_sent: Counter,
    pub adverts_received: Counter,
    pub dropped: Family<ReasonLabels, Counter>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// Replication figures, copied from the replica and the journal at scrape time.
#[derive(Default)]
pub struct ClusterMetrics {
    pub revision: Gauge,
    pub term: Gauge,
    pub is_leader: Gauge,
    pub leader_id: Gauge,
    pub last_log_index: Gauge,
    pub applied_index: Gauge,
    pub members: Gauge,
    pub journal_pending: Gauge,
    pub journal_dropped: Counter,
    pub journal_proposed: Counter,
    pub journal_failed_proposals: Counter,
    pub raft_auth_failures: Counter,
    pub raft_bad_frames: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            frontend_active: Family::default(),
            frontend_total: Family::default(),
            frontend_no_server: Family::default(),
            connection_duration: Family::default(),
            bytes: Family::default(),
            server_active: Family::default(),
            server_total: Family::default(),
            server_up: Family::default(),
            server_queue: Family::default(),
            queue_timeouts: Family::default(),
            connect_failures: Family::default(),
            health_failures: Family::default(),
            stick_entries: Family::default(),
            stick_capacity: Family::default(),
            stick_evictions: Family::default(),
            stick_moves: Family::default(),
            plane_connections: Family::default(),
            cluster: ClusterMetrics::default(),
            vrrp: VrrpMetrics::default(),
            registry: Registry::default(),
        };
        // prometheus-client appends `_total` to counters.
        let r = &mut registry;
        r.register(
            "ballast_frontend_connections_active",
            "Client connections open on a frontend",
            m.frontend_active.clone(),
        );
        r.register(
            "ballast_frontend_connections",
            "Client connections accepted by a frontend",
            m.frontend_total.clone(),
        );
        r.register(
            "ballast_frontend_no_server",
            "Client connections closed because no server could take them",
            m.frontend_no_server.clone(),
        );
        r.register(
            "ballast_connection_duration_seconds",
            "Lifetime of closed client connections",
            m.connection_duration.clone(),
        );
        r.register(
            "ballast_bytes",
            "Bytes proxied, by direction",
            m.bytes.clone(),
        );
        r.register(
            "ballast_server_connections_active",
            "Connections established or being established to a server",
            m.server_active.clone(),
        );
        r.register(
            "ballast_server_connections",
            "Connections established to a server",
            m.server_total.clone(),
        );
        r.register(
            "ballast_server_up",
            "1 when health checks see the server up",
            m.server_up.clone(),
        );
        r.register(
            "ballast_server_queue_length",
            "Connections waiting for a server's maxconn slot",
            m.server_queue.clone(),
        );
        r.register(
            "ballast_queue_timeouts",
            "Queued connections closed after timeout_queue",
            m.queue_timeouts.clone(),
        );
        r.register(
            "ballast_connect_failures",
            "Failed or timed-out connection attempts to a server",
            m.connect_failures.clone(),
        );
        r.register(
            "ballast_health_check_failures",
            "Failed health probes",
            m.health_failures.clone(),
        );
        r.register(
            "ballast_stick_entries",
            "Entries in a backend's stick table",
            m.stick_entries.clone(),
        );
        r.register(
            "ballast_stick_capacity",
            "Configured size of a backend's stick table",
            m.stick_capacity.clone(),
        );
        r.register(
            "ballast_stick_evictions",
            "Stick entries evicted because the table was full",
            m.stick_evictions.clone(),
        );
        r.register(
            "ballast_stick_moves",
            "Clients moved off a server that was down, in maint or unreachable",
            m.stick_moves.clone(),
        );
        r.register(
            "ballast_plane_connections",
            "Client connections each data-plane thread of the process serves",
            m.plane_connections.clone(),
        );
        let c = &m.cluster;
        for (name, help, gauge) in [
            (
                "ballast_cluster_revision",
                "Revision of the replicated cluster model",
                &c.revision,
            ),
            ("ballast_raft_term", "Current Raft term", &c.term),
            (
                "ballast_raft_is_leader",
                "1 when this node is the Raft leader",
                &c.is_leader,
            ),
            (
                "ballast_raft_leader_id",
                "Node id of the Raft leader, 0 when none is known",
                &c.leader_id,
            ),
            (
                "ballast_raft_last_log_index",
                "Index of the last Raft log entry",
                &c.last_log_index,
            ),
            (
                "ballast_raft_applied_index",
                "Index of the last applied Raft log entry",
                &c.applied_index,
            ),
            (
                "ballast_raft_members",
                "Members of the Raft cluster",
                &c.members,
            ),
            (
                "ballast_journal_pending",
                "Stick decisions and health flips waiting to be committed",
                &c.journal_pending,
            ),
        ] {
            r.register(name, help, gauge.clone());
        }
        for (name, help, counter) in [
            (
                "ballast_journal_dropped",
                "Journal entries dropped because the journal was full",
                &c.journal_dropped,
            ),
            (
                "ballast_journal_proposed",
                "Stick updates committed from this node's journal",
                &c.journal_proposed,
            ),
            (
                "ballast_journal_failed_proposals",
                "Journal batches that could not be committed (no quorum)",
                &c.journal_failed_proposals,
            ),
            (
                "ballast_raft_auth_failures",
                "Raft peers refused for a wrong token or node id",
                &c.raft_auth_failures,
            ),
            (
                "ballast_raft_bad_frames",
                "Raft connections dropped for malformed or oversized frames",
                &c.raft_bad_frames,
            ),
        ] {
            r.register(name, help, counter.clone());
        }
        let v = &m.vrrp;
        r.register(
            "ballast_vrrp_master",
            "1 while this node is the VRRP master",
            v.master.clone(),
        );
        r.register(
            "ballast_vrrp_effective_priority",
            "VRRP priority after tracked conditions",
            v.effective_priority.clone(),
        );
        r.register(
            "ballast_vrrp_transitions",
            "VRRP state transitions",
            v.transitions.clone(),
        );
        r.register(
            "ballast_vrrp_adverts_sent",
            "VRRP advertisements sent",
            v.adverts_sent.clone(),
        );
        r.register(
            "ballast_vrrp_adverts_received",
            "Valid VRRP advertisements received",
            v.adverts_received.clone(),
        );
        r.register(
            "ballast_vrrp_dropped",
            "VRRP packets dropped, by reason",
            v.dropped.clone(),
        );
        Metrics { registry, ..m }
    }

    /// OpenMetrics text of every family.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Sets a counter to a total kept elsewhere (monotonic by construction).
pub fn set_counter(counter: &Counter, total: u64) {
    counter
        .inner()
        .store(total, std::sync::atomic::Ordering::Relaxed);
}

pub fn frontend_labels(frontend: &str) -> FrontendLabels {
    FrontendLabels {
        frontend: frontend.to_string(),
    }
}

pub fn backend_labels(backend: &str) -> BackendLabels {
    BackendLabels {
        backend: backend.to_string(),
    }
}

pub fn server_labels(backend: &str, server: &str) -> ServerLabels {
    ServerLabels {
        backend: backend.to_string(),
        server: server.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_documented_names() {
        let m = Metrics::new();
        m.frontend_total.get_or_create(&frontend_labels("f")).inc();
        m.server_up.get_or_create(&server_labels("b", "s1")).set(1);
        m.connection_duration
            .get_or_create(&frontend_labels("f"))
            .observe(Duration::from_secs(2));
        m.bytes
            .get_or_create(&BytesLabels {
                frontend: "f".into(),
                direction: "client_to_server",
            })
            .inc_by(10);
        let text = m.render();
        for needle in [
            "ballast_frontend_connections_total{frontend=\"f\"} 1",
            "ballast_server_up{backend=\"b\",server=\"s1\"} 1",
            "ballast_connection_duration_seconds_count{frontend=\"f\"} 1",
            "ballast_bytes_total{frontend=\"f\",direction=\"client_to_server\"} 10",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }

    #[test]
    fn connection_durations_fall_into_cumulative_buckets() {
        let m = Metrics::new();
        let h = m.connection_duration.get_or_create(&frontend_labels("f"));
        for duration in [
            Duration::from_millis(50),
            Duration::from_millis(100),
            Duration::from_secs(30),
            Duration::from_secs(15 * 3_600),
            Duration::from_secs(2 * 24 * 3_600),
        ] {
            h.observe(duration);
        }
        drop(h);
        let text = m.render();
        let line = |suffix: &str| format!("ballast_connection_duration_seconds_{suffix}");
        for needle in [
            line("count{frontend=\"f\"} 5"),
            line("sum{frontend=\"f\"} 226830.15"),
            // A duration on a bound counts in that bound's bucket.
            line("bucket{le=\"0.1\",frontend=\"f\"} 2"),
            line("bucket{le=\"10.0\",frontend=\"f\"} 2"),
            line("bucket{le=\"60.0\",frontend=\"f\"} 3"),
            line("bucket{le=\"54000.0\",frontend=\"f\"} 4"),
            line("bucket{le=\"86400.0\",frontend=\"f\"} 4"),
            line("bucket{le=\"+Inf\",frontend=\"f\"} 5"),
        ] {
            assert!(text.contains(&needle), "missing {needle} in\n{text}");
        }
    }

    #[test]
    fn concurrent_observations_are_all_counted() {
        let h = DurationHistogram::default();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..10_000 {
                        h.observe(Duration::from_millis(1));
                    }
                });
            }
        });
        let buckets = &h.0;
        assert_eq!(buckets.counts[0].load(Ordering::Relaxed), 40_000);
        assert_eq!(buckets.sum_us.load(Ordering::Relaxed), 40_000 * 1_000);
    }
}
