//! Replication benchmark (issue 3): three replicas in one process, talking Raft over
//! real loopback TCP, with the node's own journal and batching in front of the leader's
//! replica. Prints, and appends to a results file when given `--out FILE`:
//!
//! - replication lag p50/p99: from a stick decision handed to a node's journal to the
//!   moment the entry is applied on each other replica (target p99 <= 200 ms);
//! - committed stick entries per second, flooding 200,000 decisions;
//! - snapshot build and install time for 200,000 entries (target < 1 s each);
//! - memory per stick entry on a replica, data plane and state machine together
//!   (RSS delta / entries; target <= 128 bytes).
//!
//! Run: `cargo run --release -p ballast --example replication-bench [-- --out FILE]`.
//! Every loop is bounded; only loopback is used.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ballast_dataplane::proxy::ReplicationSink;
use ballast_dataplane::stick::StickTable;
use ballast_node::cluster::{flush_loop, Journal, JOURNAL_CAPACITY};
use ballast_raft_store::model::{ClusterModel, ModelSpec};
use ballast_raft_store::replica::{Options, Replica, Timing};
use ballast_raft_store::state::{Change, ClusterState, Command, StickBatch, StickUpdate};
use ballast_raft_store::store::{self, Observer, StateMachine};
use ballast_raft_store::types::Member;
use openraft::storage::RaftStateMachine;
use openraft::{RaftSnapshotBuilder, SnapshotMeta};
use parking_lot::Mutex;

const SNAPSHOT_ENTRIES: usize = 200_000;

/// Records when each key was applied on this replica.
struct Stamp {
    applied: Mutex<BTreeMap<IpAddr, Instant>>,
}

impl Observer for Stamp {
    fn on_change(&self, _: &ClusterState, change: &Change) {
        if let Change::Sticks { batches, .. } = change {
            let now = Instant::now();
            let mut applied = self.applied.lock();
            for b in batches {
                for u in &b.updates {
                    applied.entry(u.key).or_insert(now);
                }
            }
        }
    }
    fn on_reset(&self, _: &ClusterState) {}
}

fn model() -> ClusterModel {
    let spec: ModelSpec = serde_json::from_value(serde_json::json!({
        "backend": [{
            "name": "b",
            "stick": { "on": "src", "size": 1_000_000 },
            "servers": [
                { "name": "s1", "addr": "127.0.0.1:7001" },
                { "name": "s2", "addr": "127.0.0.1:7002" },
                { "name": "s3", "addr": "127.0.0.1:7003" }
            ]
        }]
    }))
    .expect("model");
    ClusterModel::from_spec(spec).expect("valid")
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    l.local_addr().expect("addr")
}

fn key(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x7f20_0000 + n))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

async fn wait_applied(stamps: &[Arc<Stamp>], count: usize, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if stamps.iter().all(|s| s.applied.lock().len() >= count) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let out = std::env::args().skip_while(|a| a != "--out").nth(1);
    let mut report = String::new();
    let mut line = |text: String| {
        println!("{text}");
        report.push_str(&text);
        report.push('\n');
    };

    // --- memory per entry first, while the heap is fresh: a replica's state machine
    // plus the data plane's table, built in small chunks so no large temporary buffer
    // distorts the RSS delta.
    let n = SNAPSHOT_ENTRIES as u32;
    let servers_m: Vec<Arc<str>> = ["s1", "s2", "s3"].iter().map(|s| Arc::from(*s)).collect();
    let mut state = ClusterState::default();
    state.apply(Command::Bootstrap { model: model() });
    let before = rss_bytes();
    for chunk in 0..n / 1_000 {
        let updates = (chunk * 1_000..(chunk + 1) * 1_000)
            .map(|i| StickUpdate {
                key: key(i),
                server: servers_m[(i % 3) as usize].clone(),
                last_seen_ms: 5_000 + u64::from(i),
            })
            .collect();
        state.apply(Command::Stick {
            origin: 1,
            batches: vec![StickBatch {
                backend: "b".into(),
                updates,
            }],
        });
    }
    let after_state = rss_bytes();
    let mut table = StickTable::new(1_000_000, 16 * 3_600_000);
    for (k, server, last_seen_ms) in state.sticks["b"].iter() {
        let _ = table.merge(k, server.clone(), last_seen_ms);
    }
    let after_table = rss_bytes();
    let per_state = after_state.saturating_sub(before) as f64 / f64::from(n);
    let per_table = after_table.saturating_sub(after_state) as f64 / f64::from(n);
    let memory_line = format!(
        "| memory per stick entry ({n} entries, RSS delta) | {:.0} B in all | state machine {per_state:.0} B | data plane {per_table:.0} B | <= 128 B |",
        per_state + per_table
    );
    drop(table);
    drop(state);

    // --- three replicas over loopback TCP
    let addrs: Vec<SocketAddr> = (0..3).map(|_| free_port()).collect();
    let members = Member::local_cluster(&addrs);
    let mut dirs = Vec::new();
    let mut replicas = Vec::new();
    let mut stamps = Vec::new();
    for id in 1..=3u64 {
        let dir = tempfile::tempdir()?;
        let stamp = Arc::new(Stamp {
            applied: Mutex::new(BTreeMap::new()),
        });
        let replica = Replica::start(
            Options {
                node_id: id,
                data_dir: dir.path().to_path_buf(),
                raft_listen: Some(addrs[(id - 1) as usize]),
                token: b"bench-token-0123456789".to_vec(),
                members: members.clone(),
                join: false,
                seed: model(),
                timing: Timing::default(),
            },
            stamp.clone(),
        )
        .await?;
        replicas.push(replica);
        stamps.push(stamp);
        dirs.push(dir);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !replicas
        .iter()
        .all(|r| r.leader().is_some() && r.read(|a| a.state.bootstrapped))
    {
        anyhow::ensure!(Instant::now() < deadline, "cluster did not form");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Decisions are made on a follower, the harder case: its journal forwards to the leader.
    let leader = replicas[0].leader().expect("leader");
    let origin = replicas
        .iter()
        .position(|r| r.id() != leader)
        .expect("a follower");
    let others: Vec<Arc<Stamp>> = (0..3)
        .filter(|i| *i != origin)
        .map(|i| stamps[i].clone())
        .collect();
    let journal = Arc::new(Journal::new(JOURNAL_CAPACITY));
    tokio::spawn(flush_loop(journal.clone(), replicas[origin].clone()));
    let backend: Arc<str> = Arc::from("b");
    let servers: Vec<Arc<str>> = ["s1", "s2", "s3"].iter().map(|s| Arc::from(*s)).collect();
    line(format!(
        "# Ballast replication benchmark\n\nmachine: {} cores, loopback TCP, 3 replicas in one process, decisions made on a follower (node {}) and forwarded to the leader (node {leader}); release build: {}\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        replicas[origin].id(),
        !cfg!(debug_assertions)
    ));

    line("| measure | result | | | target |\n|---|---|---|---|---|".to_string());

    // --- lag at a steady rate: 1,000 decisions/s for 5 s
    let rate = 1_000u32;
    let seconds = 5u32;
    let mut made = BTreeMap::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    for n in 0..rate * seconds {
        if n % (rate / 100) == 0 {
            ticker.tick().await;
        }
        let k = key(n);
        made.insert(k, Instant::now());
        journal.stick(
            &backend,
            k,
            &servers[(n % 3) as usize],
            1_000 + u64::from(n),
        );
    }
    let total = (rate * seconds) as usize;
    anyhow::ensure!(
        wait_applied(&others, total, Duration::from_secs(30)).await,
        "lag run did not complete"
    );
    let mut lags: Vec<Duration> = Vec::new();
    for stamp in &others {
        let applied = stamp.applied.lock();
        for (k, t0) in &made {
            if let Some(t1) = applied.get(k) {
                lags.push(t1.saturating_duration_since(*t0));
            }
        }
    }
    lags.sort();
    line(format!(
        "| replication lag, decision → applied on the other replicas ({rate}/s for {seconds} s, {} samples) | p50 {:.1} ms | p99 {:.1} ms | max {:.1} ms | p99 <= 200 ms |",
        lags.len(),
        percentile(&lags, 0.50).as_secs_f64() * 1e3,
        percentile(&lags, 0.99).as_secs_f64() * 1e3,
        lags.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    ));

    // --- throughput: flood 200,000 decisions
    for s in &stamps {
        s.applied.lock().clear();
    }
    let flood = SNAPSHOT_ENTRIES as u32;
    let started = Instant::now();
    for n in 0..flood {
        journal.stick(
            &backend,
            key(100_000_000 + n),
            &servers[(n % 3) as usize],
            2_000_000 + u64::from(n),
        );
    }
    anyhow::ensure!(
        wait_applied(&others, flood as usize, Duration::from_secs(120)).await,
        "flood did not complete"
    );
    let elapsed = started.elapsed();
    line(format!(
        "| committed stick entries per second (flood of {flood}, batches of 1,024) | {:.0} entries/s | {:.2} s in all | | (none set) |",
        f64::from(flood) / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    ));
    for r in &replicas {
        r.shutdown().await;
    }

    // --- snapshot build and install, 200,000 entries
    let observer = Arc::new(store::NoObserver);
    let dir = tempfile::tempdir()?;
    let mut source = StateMachine::open(store::open(dir.path())?, observer.clone())?;
    let updates: Vec<StickUpdate> = (0..SNAPSHOT_ENTRIES as u32)
        .map(|n| StickUpdate {
            key: key(n),
            server: servers[(n % 3) as usize].clone(),
            last_seen_ms: 5_000 + u64::from(n),
        })
        .collect();
    let entries = vec![
        openraft::Entry::<ballast_raft_store::types::TypeConfig> {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), 1),
            payload: openraft::EntryPayload::Normal(Command::Bootstrap { model: model() }),
        },
        openraft::Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), 2),
            payload: openraft::EntryPayload::Normal(Command::Stick {
                origin: 1,
                batches: vec![StickBatch {
                    backend: "b".into(),
                    updates: updates.clone(),
                }],
            }),
        },
    ];
    source.apply(entries).await?;
    let started = Instant::now();
    let snapshot = source.build_snapshot().await?;
    let build = started.elapsed();
    let bytes = snapshot.snapshot.get_ref().len();
    let dir2 = tempfile::tempdir()?;
    let mut target = StateMachine::open(store::open(dir2.path())?, observer)?;
    let meta: SnapshotMeta<u64, Member> = snapshot.meta.clone();
    let started = Instant::now();
    target.install_snapshot(&meta, snapshot.snapshot).await?;
    let install = started.elapsed();
    let installed = target.applied().read().state.stick_len();
    anyhow::ensure!(installed == SNAPSHOT_ENTRIES, "installed {installed}");
    line(format!(
        "| snapshot build, {SNAPSHOT_ENTRIES} entries ({:.1} MB, written to redb) | {:.0} ms | | | < 1 s |",
        bytes as f64 / 1e6,
        build.as_secs_f64() * 1e3
    ));
    line(format!(
        "| snapshot install, {SNAPSHOT_ENTRIES} entries (decode, persist, swap) | {:.0} ms | | | < 1 s |",
        install.as_secs_f64() * 1e3
    ));
    drop(source);
    drop(target);

    line(memory_line);

    if let Some(path) = out {
        std::fs::write(&path, &report)?;
        println!("\nwritten to {path}");
    }
    Ok(())
}
