//! Three replicas in one process over real loopback TCP: election, forwarding,
//! replication, authentication.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ballast_raft_store::ha::VrrpState;
use ballast_raft_store::model::{ClusterModel, ModelSpec, Role};
use ballast_raft_store::replica::{Options, Replica, Timing};
use ballast_raft_store::state::{Command, StickBatch, StickUpdate};
use ballast_raft_store::store::NoObserver;
use ballast_raft_store::types::Member;

/// A free port below Linux's ephemeral range (32768+), so that no outgoing connection of
/// another test takes it between picking and binding.
fn free_port() -> SocketAddr {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 500) as u16 * 20;
    loop {
        let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % 10_000;
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return l.local_addr().unwrap();
        }
    }
}

fn seed() -> ClusterModel {
    let spec: ModelSpec = serde_json::from_value(serde_json::json!({
        "backend": [{
            "name": "b",
            "stick": { "on": "src" },
            "servers": [
                { "name": "s1", "addr": "127.0.0.1:7001" },
                { "name": "s2", "addr": "127.0.0.1:7002" }
            ]
        }]
    }))
    .unwrap();
    ClusterModel::from_spec(spec).unwrap()
}

struct Cluster {
    replicas: Vec<Arc<Replica>>,
    _dirs: Vec<tempfile::TempDir>,
    members: BTreeMap<u64, Member>,
}

fn timing() -> Timing {
    Timing {
        heartbeat: Duration::from_millis(50),
        election_min: Duration::from_millis(200),
        election_max: Duration::from_millis(400),
        ..Timing::default()
    }
}

async fn cluster(n: u64) -> Cluster {
    let addrs: Vec<SocketAddr> = (0..n).map(|_| free_port()).collect();
    let members = Member::local_cluster(&addrs);
    let mut replicas = Vec::new();
    let mut dirs = Vec::new();
    for id in 1..=n {
        let dir = tempfile::tempdir().unwrap();
        let replica = Replica::start(
            Options {
                node_id: id,
                data_dir: dir.path().to_path_buf(),
                raft_listen: Some(addrs[(id - 1) as usize]),
                token: b"cluster-token".to_vec(),
                members: members.clone(),
                join: false,
                seed: seed(),
                timing: timing(),
            },
            Arc::new(NoObserver),
        )
        .await
        .unwrap();
        replicas.push(replica);
        dirs.push(dir);
    }
    Cluster {
        replicas,
        _dirs: dirs,
        members,
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The leader, once every replica names the same one.
async fn one_leader(c: &Cluster) -> u64 {
    eventually("a leader that every replica names", || {
        let leader = c.replicas[0].leader();
        leader.is_some() && c.replicas.iter().all(|r| r.leader() == leader)
    })
    .await;
    c.replicas[0].leader().unwrap()
}

fn stick(origin: u64, key: &str, server: &str, at: u64) -> Command {
    Command::Stick {
        origin,
        batches: vec![StickBatch {
            backend: "b".into(),
            updates: vec![StickUpdate {
                key: key.parse::<IpAddr>().unwrap(),
                server: Arc::from(server),
                // Real time: the leader sweeps entries older than `expire`.
                last_seen_ms: ballast_raft_store::replica::now_ms() + at,
            }],
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_elect_seed_and_replicate_through_a_follower() {
    let c = cluster(3).await;
    eventually("a leader and a seeded model on every replica", || {
        c.replicas
            .iter()
            .all(|r| r.leader().is_some() && r.read(|a| a.state.bootstrapped))
    })
    .await;
    let leader = c.replicas[0].leader().unwrap();
    let follower = c.replicas.iter().find(|r| r.id() != leader).unwrap();
    let response = follower
        .propose(stick(follower.id(), "127.0.0.9", "s2", 10))
        .await
        .unwrap();
    assert!(response.error.is_none());
    eventually("the entry on every replica", || {
        c.replicas.iter().all(|r| {
            r.read(|a| {
                a.state
                    .sticks
                    .get("b")
                    .and_then(|t| t.get(&"127.0.0.9".parse().unwrap()))
                    .map(|e| e.0.to_string())
            }) == Some("s2".to_string())
        })
    })
    .await;
    let revisions: Vec<u64> = c
        .replicas
        .iter()
        .map(|r| r.read(|a| a.state.revision))
        .collect();
    assert!(
        revisions.iter().all(|r| *r == revisions[0]),
        "{revisions:?}"
    );
    assert_eq!(c.members.len(), 3);
    for r in &c.replicas {
        r.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successor_wins_within_the_hand_over_and_bystanders_keep_still() {
    let c = cluster(3).await;
    let leader = one_leader(&c).await;
    let mut others = c.replicas.iter().filter(|r| r.id() != leader).cloned();
    let successor = others.next().unwrap();
    let bystander = others.next().unwrap();
    let term_before = bystander.status().term;

    // The successor's first election comes at once, while the followers' lease still
    // runs: refused, it leaves the successor a candidate with no leader in view. Its own
    // election timer is off, as its election gate turns it off when it closes first
    // (under load in CI): only the campaign's elections can make it leader. The
    // leader's agreement must let them go on; the stepping-down leader keeps the
    // bystander's gate closed meanwhile.
    successor.raft().runtime_config().elect(false);
    let started = std::time::Instant::now();
    let won = successor.campaign(Duration::from_secs(6), || true).await;
    let took = started.elapsed();
    assert!(
        won,
        "the successor did not win within 6 s (the step-down window is {:?})",
        ballast_raft_store::network::STEP_DOWN_WINDOW
    );
    eventually("every replica names the successor", || {
        c.replicas
            .iter()
            .all(|r| r.leader() == Some(successor.id()))
    })
    .await;
    let status = bystander.status();
    assert_eq!(status.state, "Follower", "{status:?}");
    // One election, the successor's (its refused attempts may add a term or two).
    assert!(
        status.term <= term_before + 3,
        "terms went from {term_before} to {} while handing over",
        status.term
    );
    println!("the successor won after {took:?}");
    for r in &c.replicas {
        r.shutdown().await;
    }
}

/// A report for `node` in VRRP state `vrrp`.
fn report(node: u64, vrrp: VrrpState) -> ballast_raft_store::network::NodeReport {
    ballast_raft_store::network::NodeReport {
        node_id: node,
        role: Role::Lb,
        vrrp_state: Some(vrrp),
        configured_priority: Some(100),
        effective_priority: Some(100),
        failing: Vec::new(),
        yielded: false,
        lag_entries: Some(0),
        caught_up: true,
        revision: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vrrp_master_keeps_raft_leadership_until_it_is_backup() {
    let c = cluster(3).await;
    let leader_id = one_leader(&c).await;
    let leader = c.replicas.iter().find(|r| r.id() == leader_id).unwrap();
    let successor = c.replicas.iter().find(|r| r.id() != leader_id).unwrap();
    let master = Arc::new(std::sync::atomic::AtomicBool::new(true));
    leader.set_reporter({
        let master = master.clone();
        Arc::new(move || {
            let state = if master.load(std::sync::atomic::Ordering::Relaxed) {
                VrrpState::Master
            } else {
                VrrpState::Backup
            };
            report(leader_id, state)
        })
    });

    // Two VRRP masters, as while a healed partition settles: the leader, master too,
    // keeps leading and keeps its heartbeats on.
    assert!(!successor.campaign(Duration::from_secs(2), || true).await);
    assert_eq!(leader.leader(), Some(leader_id));
    assert!(
        c.replicas.iter().all(|r| r.leader() == Some(leader_id)),
        "every replica still hears the leader"
    );

    // Back to backup: the same campaign now gets leadership.
    master.store(false, std::sync::atomic::Ordering::Relaxed);
    assert!(successor.campaign(Duration::from_secs(6), || true).await);
    eventually("every replica names the successor", || {
        c.replicas
            .iter()
            .all(|r| r.leader() == Some(successor.id()))
    })
    .await;
    for r in &c.replicas {
        r.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_the_wrong_token_is_refused_and_counted() {
    let c = cluster(1).await;
    eventually("leader", || c.replicas[0].is_leader()).await;
    let addr = c.members[&1].raft.clone();
    let mut intruder =
        ballast_raft_store::network::Network::new(9, Arc::from(&b"wrong"[..])).client(1, &addr);
    let result = intruder
        .call(
            &ballast_raft_store::network::Request::Propose(stick(9, "127.0.0.1", "s1", 1)),
            Duration::from_secs(2),
        )
        .await;
    assert!(result.is_err());
    eventually("auth failure counted", || {
        c.replicas[0]
            .stats()
            .auth_failures
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1
    })
    .await;
    assert!(c.replicas[0].read(|a| a.state.stick_len()) == 0);
    // Random bytes do not disturb it either.
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let _ = s.write_all(&[0x13; 300]).await;
    drop(s);
    let ok = c.replicas[0]
        .propose(stick(1, "127.0.0.2", "s1", 1))
        .await
        .unwrap();
    assert!(ok.error.is_none());
    c.replicas[0].shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_added_and_another_removed_while_the_cluster_serves() {
    let mut c = cluster(3).await;
    eventually("a leader", || {
        c.replicas.iter().all(|r| r.leader().is_some())
    })
    .await;
    let before = c.replicas[0]
        .propose(stick(1, "127.0.0.1", "s1", 1))
        .await
        .unwrap();
    assert!(before.error.is_none());

    // Node 4 starts empty and waits to be added.
    let addr = free_port();
    let dir = tempfile::tempdir().unwrap();
    let joiner = Replica::start(
        Options {
            node_id: 4,
            data_dir: dir.path().to_path_buf(),
            raft_listen: Some(addr),
            token: b"cluster-token".to_vec(),
            members: BTreeMap::new(),
            join: true,
            seed: seed(),
            timing: timing(),
        },
        Arc::new(NoObserver),
    )
    .await
    .unwrap();
    let leader_id = c.replicas[0].leader().unwrap();
    let leader = c
        .replicas
        .iter()
        .find(|r| r.id() == leader_id)
        .unwrap()
        .clone();
    leader
        .add_member(
            4,
            Member {
                raft: addr.to_string(),
                api: String::new(),
                role: Role::Witness,
            },
        )
        .await
        .unwrap();
    eventually("node 4 a voter with the state", || {
        joiner.status().voters.contains(&4) && joiner.read(|a| a.state.stick_len()) == 1
    })
    .await;

    // A node that is not a member cannot be removed.
    assert_eq!(
        leader.remove_member(99).await,
        Err(ballast_raft_store::network::ProposeError::NoSuchMember(99))
    );

    // Remove a node that is not the leader; the rest keep committing.
    let victim = c
        .replicas
        .iter()
        .find(|r| r.id() != leader_id)
        .unwrap()
        .id();
    leader.remove_member(victim).await.unwrap();
    eventually("membership without the victim", || {
        !leader.status().members.contains_key(&victim)
    })
    .await;
    let idx = c.replicas.iter().position(|r| r.id() == victim).unwrap();
    let removed = c.replicas.remove(idx);
    removed.shutdown().await;
    let after = leader
        .propose(stick(leader_id, "127.0.0.2", "s2", 2))
        .await
        .unwrap();
    assert!(after.error.is_none());
    eventually("node 4 has the new entry", || {
        joiner.read(|a| a.state.stick_len()) == 2
    })
    .await;
    assert_eq!(leader.status().voters.len(), 3);
    joiner.shutdown().await;
    for r in &c.replicas {
        r.shutdown().await;
    }
    drop(dir);
}
