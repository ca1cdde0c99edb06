//! Issue 3: the replicated cluster, with real `ballast` processes on loopback.
//!
//! ```text
//!   clients 127.G.x.y ──▶ node N on 127.0.0.(10+N):P..P+2 ──▶ backends s1..s3 (this process)
//!                          node 1 ◀──Raft (token-authenticated TCP)──▶ node 2 ◀──▶ node 3
//! ```
//!
//! Each node binds the replicated model's wildcard frontend on its own loopback address
//! (`[node] bind_ip`), the way nodes on separate hosts bind the same ports.

mod api_stream;
mod harness;
mod live;

use std::collections::BTreeMap;
use std::time::Duration;

use ballast_api::types::{DrillList, ServerHealth};
use ballast_raft_store::model::Role;

use harness::{tail, wait_until, Cluster};

use crate::harness::{open, src_ip, Backend};

fn backends() -> Vec<Backend> {
    ["s1", "s2", "s3"]
        .iter()
        .map(|n| Backend::named(n).spawn())
        .collect()
}

fn cluster_builder(backends: &[Backend]) -> harness::ClusterBuilder {
    backends
        .iter()
        .fold(Cluster::builder(), |b, s| b.server(s.name(), s.addr()))
}

/// Connects client `i` of `group` through node `id` (port `port`) and returns the server
/// it reached; the connection is closed.
async fn land(cluster: &Cluster, id: u64, group: u8, i: usize, port: u16) -> String {
    let conn = crate::harness::within(
        15,
        "connect through ballast",
        open(src_ip(group, i), cluster.frontend_addr(id, port)),
    )
    .await
    .unwrap_or_else(|e| panic!("client {i} through node {id}: {e}"));
    conn.server
}

/// Clients `0..n` of `group` each open one socket through node `id`.
async fn traffic(cluster: &Cluster, id: u64, group: u8, n: usize) -> BTreeMap<String, String> {
    let mut placed = BTreeMap::new();
    for i in 0..n {
        let server = land(cluster, id, group, i, (i % 3) as u16).await;
        placed.insert(src_ip(group, i).to_string(), server);
    }
    placed
}

fn wait_replicated(
    cluster: &Cluster,
    id: u64,
    expected: &BTreeMap<String, String>,
    within: Duration,
) {
    let ok = wait_until(within, || {
        let seen = cluster.sticks(id);
        expected.iter().all(|(k, s)| seen.get(k) == Some(s))
    });
    if !ok {
        let seen = cluster.sticks(id);
        let missing: Vec<_> = expected
            .iter()
            .filter(|(k, s)| seen.get(*k) != Some(*s))
            .take(5)
            .collect();
        panic!(
            "node {id} lacks {} of {} entries, e.g. {missing:?}\n{}",
            expected
                .iter()
                .filter(|(k, s)| seen.get(*k) != Some(*s))
                .count(),
            expected.len(),
            tail(&cluster.log(id), 30)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_made_on_one_node_appear_on_the_others_and_clients_keep_their_server_after_it_stops(
) {
    let servers = backends();
    let mut cluster = cluster_builder(&servers).lb(3).spawn();
    let placed = traffic(&cluster, 1, 21, 30).await;
    let used: std::collections::BTreeSet<_> = placed.values().collect();
    assert_eq!(
        used.len(),
        3,
        "leastconn spread clients over all servers: {placed:?}"
    );
    for id in [2, 3] {
        wait_replicated(&cluster, id, &placed, Duration::from_secs(10));
    }
    cluster.stop(1);
    // The same clients come back through node 2, on every port.
    for (i, (key, server)) in placed.iter().enumerate() {
        for port in 0..3 {
            let again = land(&cluster, 2, 21, i, port).await;
            assert_eq!(
                &again, server,
                "client {key} port {port} after node 1 stopped"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_elects_another_and_loses_nothing_committed() {
    let servers = backends();
    let mut cluster = cluster_builder(&servers).lb(3).spawn();
    let placed = traffic(&cluster, 1, 22, 20).await;
    for id in [1, 2, 3] {
        wait_replicated(&cluster, id, &placed, Duration::from_secs(10));
    }
    let old = cluster.leader(1).expect("a leader");
    let revision = cluster.revision(old).expect("revision");
    cluster.kill(old);
    let survivors: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != old).collect();
    let elected = wait_until(Duration::from_secs(15), || {
        survivors
            .iter()
            .all(|id| cluster.leader(*id).is_some_and(|l| l != old))
    });
    assert!(elected, "no new leader after killing node {old}");
    for id in &survivors {
        wait_replicated(&cluster, *id, &placed, Duration::from_secs(5));
        assert!(cluster.revision(*id).unwrap() >= revision);
    }
    // Writes commit under the new leader.
    let more = traffic(&cluster, survivors[0], 23, 10).await;
    wait_replicated(&cluster, survivors[1], &more, Duration::from_secs(10));
    // The killed node comes back on its data_dir and catches up.
    cluster.start(old);
    cluster.wait_ready(old, Duration::from_secs(20));
    let mut all = placed.clone();
    all.extend(more);
    wait_replicated(&cluster, old, &all, Duration::from_secs(15));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_alone_recovers_its_state_from_disk_and_serves_it() {
    let servers = backends();
    let mut cluster = cluster_builder(&servers).lb(3).spawn();
    let placed = traffic(&cluster, 1, 24, 12).await;
    for id in [1, 2, 3] {
        wait_replicated(&cluster, id, &placed, Duration::from_secs(10));
    }
    for id in [1, 2, 3] {
        cluster.kill(id);
    }
    // Alone, node 2 has no quorum: what it shows and serves comes from its own disk.
    cluster.start(2);
    cluster.wait_ready(2, Duration::from_secs(20));
    // It may still name the last leader it knew (even itself, from its persisted
    // vote), but without a quorum it cannot commit: writes are refused.
    let refused = cluster.post(
        2,
        "/v1/backends/b/stick",
        r#"{"entries":[{"key":"127.0.0.1","server":"s1"}]}"#,
    );
    assert!(
        matches!(&refused, Ok((503, _))),
        "a lone node of three cannot commit: {refused:?}"
    );
    let seen = cluster.sticks(2);
    for (key, server) in &placed {
        assert_eq!(
            seen.get(key),
            Some(server),
            "entry {key} recovered from disk"
        );
    }
    for (i, (key, server)) in placed.iter().enumerate() {
        assert_eq!(
            &land(&cluster, 2, 24, i, 1).await,
            server,
            "client {key} served from the local replica"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_catches_up_by_snapshot_with_200000_entries() {
    const ENTRIES: usize = 200_000;
    let servers = backends();
    let mut cluster = cluster_builder(&servers).lb(3).snapshot_logs(16).spawn();
    let names = ["s1", "s2", "s3"];
    for chunk in 0..(ENTRIES / 10_000) {
        let entries: Vec<String> = (0..10_000)
            .map(|j| {
                let n = (chunk * 10_000 + j) as u32;
                let ip = std::net::Ipv4Addr::from(0x7f10_0000 + n);
                format!(r#"{{"key":"{ip}","server":"{}"}}"#, names[j % 3])
            })
            .collect();
        let body = format!(r#"{{"entries":[{}]}}"#, entries.join(","));
        let (status, answer) = cluster
            .post(1, "/v1/backends/b/stick", &body)
            .expect("import");
        assert_eq!(status, 200, "import chunk {chunk}: {answer}");
    }
    for id in [1, 2, 3] {
        let ok = wait_until(Duration::from_secs(60), || {
            cluster.stick_total(id) == Some(ENTRIES as u64)
        });
        assert!(ok, "node {id} has {:?} entries", cluster.stick_total(id));
        // Served too, not only replicated: the importing node's data plane included
        // (it skips the entries its own journal proposed, never imported ones).
        let served = wait_until(Duration::from_secs(30), || {
            cluster.metric(id, "ballast_stick_entries") == Some(ENTRIES as f64)
        });
        assert!(
            served,
            "node {id}'s data plane holds {:?} entries",
            cluster.metric(id, "ballast_stick_entries")
        );
    }
    cluster.stop(3);
    cluster.wipe(3);
    cluster.start(3);
    let caught_up = wait_until(Duration::from_secs(90), || {
        cluster.stick_total(3) == Some(ENTRIES as u64)
    });
    assert!(
        caught_up,
        "wiped node 3 has {:?} entries",
        cluster.stick_total(3)
    );
    let log = cluster.log(3);
    assert!(
        log.contains("snapshot installed"),
        "node 3 caught up without a snapshot:\n{}",
        tail(&log, 30)
    );
    assert_eq!(cluster.sticks(3).len(), ENTRIES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_lb_nodes_and_a_witness_keep_serving_and_committing_with_one_lb_down() {
    let servers = backends();
    let mut cluster = cluster_builder(&servers).lb(2).witness().spawn();
    let witness = 3;
    assert_eq!(cluster.status(witness).unwrap().role, Role::Witness);
    cluster.kill(2);
    let placed = traffic(&cluster, 1, 25, 10).await;
    // Committed: the witness holds them although it serves no traffic.
    wait_replicated(&cluster, witness, &placed, Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_node_cluster_with_one_down_keeps_proxying_and_replays_its_journal() {
    let servers = backends();
    let mut cluster = cluster_builder(&servers).lb(2).spawn();
    cluster.kill(2);
    let placed = traffic(&cluster, 1, 26, 10).await;
    assert_eq!(placed.len(), 10, "node 1 proxies without quorum");
    let pending = wait_until(Duration::from_secs(10), || {
        cluster
            .metric(1, "ballast_journal_pending")
            .is_some_and(|v| v >= 10.0)
    });
    assert!(
        pending,
        "journal_pending = {:?}",
        cluster.metric(1, "ballast_journal_pending")
    );
    cluster.start(2);
    cluster.wait_ready(2, Duration::from_secs(20));
    wait_replicated(&cluster, 2, &placed, Duration::from_secs(20));
    let drained = wait_until(Duration::from_secs(10), || {
        cluster.metric(1, "ballast_journal_pending") == Some(0.0)
    });
    assert!(
        drained,
        "journal not replayed: {:?}",
        cluster.metric(1, "ballast_journal_pending")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_the_wrong_token_is_refused_and_counted() {
    let servers = backends();
    let cluster = cluster_builder(&servers).lb(3).wrong_token_for(3).spawn();
    let refused = wait_until(Duration::from_secs(10), || {
        cluster
            .metric(1, "ballast_raft_auth_failures_total")
            .is_some_and(|v| v > 0.0)
    });
    assert!(refused, "node 1 never refused node 3");
    assert!(cluster.log(1).contains("raft peer refused"));
    let placed = traffic(&cluster, 1, 27, 5).await;
    wait_replicated(&cluster, 2, &placed, Duration::from_secs(10));
    assert!(
        cluster.sticks(3).is_empty(),
        "the intruder must not receive the stick table"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_on_the_raft_ports_do_not_disturb_the_cluster() {
    use std::io::Write;
    let servers = backends();
    let cluster = cluster_builder(&servers).lb(3).spawn();
    let leader = cluster.leader(1).expect("leader");
    let term = cluster.status(1).unwrap().raft.term;
    let garbage = crate::harness::pseudo_random_bytes(70_000, 7);
    for node in &cluster.nodes {
        for round in 0..10 {
            if let Ok(mut s) = std::net::TcpStream::connect(node.raft) {
                let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
                let start = round * 1_000;
                let _ = s.write_all(&garbage[start..start + 1 + round * 5_000]);
            }
        }
        // A frame header that claims 4 GiB.
        if let Ok(mut s) = std::net::TcpStream::connect(node.raft) {
            let _ = s.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
        }
    }
    let placed = traffic(&cluster, 1, 28, 6).await;
    wait_replicated(&cluster, 3, &placed, Duration::from_secs(10));
    assert_eq!(cluster.leader(2), Some(leader), "leadership undisturbed");
    assert_eq!(cluster.status(2).map(|s| s.raft.term), Some(term));
    let counted = wait_until(Duration::from_secs(5), || {
        cluster
            .metric(1, "ballast_raft_bad_frames_total")
            .is_some_and(|v| v >= 1.0)
    });
    assert!(counted, "garbage not counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_flips_of_every_lb_node_are_committed_and_seen_by_all() {
    let mut servers = backends();
    let cluster = cluster_builder(&servers).lb(2).witness().health().spawn();
    servers[1].kill();
    let server_health = |id: u64| {
        cluster
            .status(id)
            .and_then(|s| s.health["b"].get("s2").cloned())
    };
    let down_for = |h: &ServerHealth, node: u64| h.reports.get(&node).is_some_and(|r| !r.up);
    let committed = wait_until(Duration::from_secs(10), || {
        server_health(3).is_some_and(|h| !h.effective_up && down_for(&h, 1) && down_for(&h, 2))
    });
    assert!(committed, "witness sees {:?}", server_health(3));
    // Every node agrees, and the dead server gets no new client through any lb node.
    for id in [1, 2] {
        assert!(!server_health(id).unwrap().effective_up);
        for i in 0..6 {
            assert_ne!(land(&cluster, id, 29, i + 10 * id as usize, 0).await, "s2");
        }
    }
    assert!(down_for(&server_health(3).unwrap(), 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_writes_sent_to_a_follower_are_forwarded_to_the_leader() {
    let servers = backends();
    let extra = Backend::named("s4").spawn();
    let cluster = cluster_builder(&servers).lb(3).spawn();
    let leader = cluster.leader(1).expect("leader");
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    let (status, body) = cluster
        .request(
            follower,
            "PUT",
            "/v1/backends/b/servers/s4",
            &format!(r#"{{"addr":"{}","weight":2}}"#, extra.addr()),
        )
        .expect("put through a follower");
    assert_eq!(status, 200, "{body}");
    let revision: u64 = serde_json::from_str::<serde_json::Value>(&body).unwrap()["revision"]
        .as_u64()
        .expect("revision");
    for id in [1, 2, 3] {
        let has = wait_until(Duration::from_secs(10), || {
            cluster.get(id, "/v1/backends/b").is_some_and(|(_, b)| {
                b["servers"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|x| x["name"] == "s4" && x["weight"] == 2))
            })
        });
        assert!(has, "node {id} lacks s4");
        assert!(cluster.revision(id).unwrap() >= revision);
    }
    // Without the token, a follower refuses (401) before forwarding anything.
    use std::io::{Read, Write};
    let mut raw = std::net::TcpStream::connect(cluster.node(follower).api).unwrap();
    raw.write_all(
        b"DELETE /v1/backends/b/servers/s4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(cluster
        .get(leader, "/v1/backends/b")
        .is_some_and(|(_, b)| b["servers"]
            .as_array()
            .is_some_and(|s| s.iter().any(|x| x["name"] == "s4"))));
}

/// Without VRRP there is nothing to hand over: every refusal names its reason, and the
/// nodes still report how far behind the leader they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drills_are_refused_with_a_reason_and_every_node_reports_it_is_caught_up() {
    let servers = backends();
    let cluster = cluster_builder(&servers).lb(2).witness().spawn();
    let caught_up = wait_until(Duration::from_secs(15), || {
        [1, 2, 3].iter().all(|id| {
            cluster
                .status(*id)
                .is_some_and(|s| s.caught_up && s.lag_entries.is_some())
        })
    });
    assert!(
        caught_up,
        "caught_up: {:?}",
        [1, 2, 3].map(|id| cluster.status(id).map(|s| s.lag_entries))
    );
    let refusals = [
        (r#"{"to":3}"#, "node 3 is a witness"),
        (r#"{"to":9}"#, "node 9 is not a member"),
        (r#"{"to":2}"#, "node 2 runs without VRRP"),
        ("", "no lb node other than the master is fit"),
    ];
    for (body, reason) in refusals {
        let (status, answer) = cluster.post(1, "/v1/drills/failover", body).unwrap();
        assert_eq!(status, 409, "{body}: {answer}");
        assert!(answer.contains(r#""code":"conflict""#), "{answer}");
        assert!(
            answer.contains(reason),
            "{body}: expected {reason:?} in {answer}"
        );
    }
    let (status, answer) = cluster
        .post(1, "/v1/drills/failover", r#"{"to":"two"}"#)
        .unwrap();
    assert_eq!(status, 400, "{answer}");
    let list: DrillList = crate::harness::http::get_typed(cluster.node(2).api, "/v1/drills")
        .expect("GET /v1/drills: 200");
    assert!(list.drills.is_empty(), "nothing was recorded: {list:?}");
    assert_eq!(cluster.get(2, "/v1/drills/1").map(|r| r.0), Some(404));
}
