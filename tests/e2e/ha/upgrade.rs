//! Issue 19 in the HA lab: live binary upgrades of the VRRP master (twice in a row) and
//! of the backup (once) under the mission load, with the VIP, Raft and a witness around.
//!
//! ```text
//!   test: copy binary → <lab>/lb1-bin/ballast.new, rename over <lab>/lb1-bin/ballast
//!         GET /v1/status (lb1) → process.pid = P ── kill -USR2 P
//!   lb1: P checks and starts the new binary (its child Q), hands over every listener and
//!        connection, abandons VRRP without a word (no priority 0, VIP left in place) and
//!        closes Raft; Q resumes as VRRP master ("resumed") before it reopens Raft; P exits
//!   cl:  300 clients × 3 sockets stream on; an advert recorder sees every VRRP packet
//! ```
//!
//! What counts is strict: not one client socket breaks or reconnects (each keeps the one
//! session it opened, and every byte comes back), lb2 never leaves backup (its VRRP
//! transition count does not move), no priority-0 advert and no advert from lb2 is on
//! the wire, each master upgrade hands over every connection, the stick tables hold the
//! same entries on every node afterwards, and Raft has one leader, every node caught up,
//! and takes a write. Times (pause, duration, the longest gap between lb1's adverts,
//! the longest stretch a probe could not get served) are printed with generous bounds.

use std::time::Duration;

use serde_json::{json, Value};

use super::fixture::{
    self, json as body_json, ms_between, now_ms, post, HaLab, Vrrp, BACKEND, CLIENTS, LB1, LB2,
    WITNESS,
};
use super::helper::Adverts;
use super::{load_on, raft_view};
use crate::harness::process;
use crate::vip::lab::{lab_allowed, lock, wait_until};

/// lb2's Master_Down_Interval (priority 100, adverts every 100 ms): 3 intervals and its
/// Skew_Time, (256 - 100) / 256 of an interval. A gap in lb1's adverts this long makes
/// lb2 master.
const LB2_MASTER_DOWN_MS: u64 = 300 + (256 - 100) * 100 / 256;
/// How long a probe connects (every 10 ms) around one upgrade.
const PROBE_WINDOW: Duration = Duration::from_secs(4);

fn pid_of(status: &Value) -> u32 {
    status["process"]["pid"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .unwrap_or_else(|| panic!("no process.pid in /v1/status: {status}"))
}

/// (state, transitions) of a node's VRRP instance.
fn vrrp_of(status: &Value) -> (String, u64) {
    (
        status["vrrp"]["state"].as_str().unwrap_or("").to_string(),
        status["vrrp"]["transitions"].as_u64().unwrap_or(u64::MAX),
    )
}

/// One live upgrade, as the test saw it.
struct Upgrade {
    label: String,
    node: u64,
    old: u32,
    new: u32,
    /// Unix ms of the SIGUSR2.
    t0: u64,
    /// From the signal to the new process answering `/v1/status`.
    served_ms: u64,
    /// From the signal to the old process gone.
    gone_ms: u64,
    /// Unix ms when the old process was seen gone.
    t_gone: u64,
    /// `/v1/status` of the node from the new process.
    after: Value,
    /// The other lb node's VRRP (state, transitions), sampled all along.
    other: Vec<(String, u64)>,
    /// The probe's window: attempts, greeted, failed, longest gap ms, gap start, end.
    probe: [u64; 6],
}

impl Upgrade {
    fn report(&self) -> &Value {
        &self.after["process"]["last_upgrade"]
    }
}

/// Installs the binary at node `id`'s path (copy to PATH.new, rename over PATH), sends
/// SIGUSR2 to the process `/v1/status` names, and waits (bounded) for the new process
/// to serve and the old one to be gone. Samples the other lb node's VRRP throughout, and
/// for a second after (three Master_Down_Intervals).
fn upgrade(h: &mut HaLab, id: u64, label: &str) -> Upgrade {
    let other = if id == LB1 { LB2 } else { LB1 };
    let before = h.status(id);
    let old = pid_of(&before);
    h.track_pid(old);
    h.install_binary(id);
    let exe = process::exe(old).map(|p| p.display().to_string());
    assert!(
        exe.as_deref().is_some_and(|e| e.ends_with(" (deleted)")),
        "{label}: after the rename, process {old} should run a replaced image: {exe:?}"
    );
    let trigger = h.lab.dir.join(format!("probe-{label}"));
    let probe = h.start_probe(&trigger, Duration::from_secs(30), Some(PROBE_WINDOW));
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&trigger, "go").expect("trigger");
    // The probe is served before the signal (its gap is the upgrade's).
    std::thread::sleep(Duration::from_millis(200));
    let t0 = now_ms();
    process::send_signal(old, process::SIGUSR2)
        .unwrap_or_else(|e| panic!("{label}: kill -USR2 {old}: {e}"));
    let mut after = Value::Null;
    let mut seen = Vec::new();
    let served = wait_until(Duration::from_secs(20), || {
        let s = h.statuses(&[id, other]);
        seen.push(vrrp_of(&s[1]));
        after = s[0].clone();
        let pid = after["process"]["pid"].as_u64();
        pid.is_some_and(|p| p != u64::from(old))
            && after["process"]["last_upgrade"]["from_pid"] == json!(old)
    });
    let served_ms = ms_between(t0, now_ms());
    assert!(
        served.is_some(),
        "{label}: no new process serves node {id} 20 s after SIGUSR2 to {old}: process {}",
        after["process"]
    );
    let new = pid_of(&after);
    h.track_pid(new);
    let gone = wait_until(Duration::from_secs(5), || h.is_gone(old));
    let t_gone = now_ms();
    assert!(
        gone.is_some(),
        "{label}: the old process {old} still runs 5 s after its successor {new} serves \
         (state {:?})",
        process::state(old)
    );
    for _ in 0..50 {
        if ms_between(t_gone, now_ms()) >= 3 * LB2_MASTER_DOWN_MS {
            break;
        }
        seen.push(vrrp_of(&h.status(other)));
    }
    let probe = h.probe_window(probe, Duration::from_secs(30));
    Upgrade {
        label: label.to_string(),
        node: id,
        old,
        new,
        t0,
        served_ms,
        gone_ms: ms_between(t0, t_gone),
        t_gone,
        after,
        other: seen,
        probe,
    }
}

/// The longest gap (ms, kernel receive stamps) between two adverts from `src` that
/// arrived in `[from, to]` (unix ms), the gap's start counted from the last advert before
/// `from`.
fn advert_gap(adverts: &Adverts, src: &str, from: u64, to: u64) -> u64 {
    let stamps: Vec<u64> = adverts
        .adverts
        .iter()
        .filter(|a| a.src.to_string() == src)
        .map(|a| a.at_us)
        .collect();
    let (from_us, to_us) = (from * 1_000, to * 1_000);
    stamps
        .windows(2)
        .filter(|w| w[1] >= from_us && w[0] <= to_us)
        .map(|w| w[1].saturating_sub(w[0]) / 1_000)
        .max()
        .unwrap_or(u64::MAX)
}

/// Every session that ended otherwise than by the generator's stop: (client, port, end,
/// end ms, detail).
fn broken_sessions(summary: &super::load::Summary) -> Vec<String> {
    summary
        .clients
        .iter()
        .flat_map(|c| {
            c.sockets.iter().flat_map(move |k| {
                k.sessions
                    .iter()
                    .filter(|x| x.end.as_deref() != Some("stopped"))
                    .map(move |x| {
                        format!(
                            "{}:{} on {}: {:?} at {:?} after {} rounds; {}",
                            c.ip,
                            k.port,
                            x.backend,
                            x.end,
                            x.end_ms,
                            x.rounds,
                            x.detail.as_deref().unwrap_or("")
                        )
                    })
            })
        })
        .collect()
}

/// Each node's stick table (entries only), once all three agree; bounded.
fn agreed_stick_table(h: &mut HaLab, what: &str) -> std::collections::BTreeMap<String, String> {
    let mut tables = Vec::new();
    let same = wait_until(Duration::from_secs(15), || {
        tables = [LB1, LB2, WITNESS]
            .iter()
            .map(|&id| h.stick_table(id).0)
            .collect();
        tables.iter().all(|t| t == &tables[0])
    });
    assert!(
        same.is_some(),
        "{what}: the nodes' stick tables differ (sizes {:?})",
        tables.iter().map(|t| t.len()).collect::<Vec<_>>()
    );
    tables.swap_remove(0)
}

/// Waits (bounded) until Raft is healthy: one leader every node names, no candidate,
/// every node caught up, no stick decision waiting in a journal. Returns the views.
fn raft_healthy(h: &mut HaLab, what: &str) -> Vec<(String, u64, Option<u64>)> {
    let mut last = String::new();
    let mut views = Vec::new();
    let ok = wait_until(Duration::from_secs(30), || {
        let s = h.statuses(&[LB1, LB2, WITNESS]);
        views = s.iter().map(raft_view).collect();
        let leader = views[0].2;
        let caught_up: Vec<Value> = s.iter().map(|v| v["caught_up"].clone()).collect();
        let journals: Vec<Value> = s[..2]
            .iter()
            .map(|v| v["journal_pending"].clone())
            .collect();
        last = format!("raft {views:?}, caught_up {caught_up:?}, journals {journals:?}");
        leader.is_some()
            && views.iter().all(|v| v.2 == leader && v.0 != "Candidate")
            && views.iter().filter(|v| v.0 == "Leader").count() == 1
            && caught_up.iter().all(|c| *c == json!(true))
            && journals.iter().all(|j| *j == json!(0))
    });
    assert!(ok.is_some(), "{what}: Raft not healthy within 30 s: {last}");
    views
}

/// A write through node `via`'s API (the admin state of server s3), then every node
/// shows it at the revision the write answered; bounded.
fn write_admin(h: &mut HaLab, via: u64, admin: &str) -> (u64, u64) {
    let t = now_ms();
    let path = format!("/v1/backends/{BACKEND}/servers/s3/state");
    let body = format!(r#"{{"admin": "{admin}"}}"#);
    let token = h.token();
    let r = h.api(&[post(via, &path, &body, token)]).remove(0);
    assert_eq!(r.status, 200, "POST {path} on node {via}: {}", r.body);
    let revision = body_json(&r)["revision"]
        .as_u64()
        .unwrap_or_else(|| panic!("POST {path}: no revision in {}", r.body));
    let mut last = Vec::new();
    let seen = wait_until(Duration::from_secs(10), || {
        let s = h.statuses(&[LB1, LB2, WITNESS]);
        last = s
            .iter()
            .map(|v| {
                (
                    v["revision"].as_u64().unwrap_or(0),
                    v["health"][BACKEND]["s3"]["admin"].clone(),
                )
            })
            .collect();
        last.iter()
            .all(|(rev, a)| *rev >= revision && *a == json!(admin))
    });
    assert!(
        seen.is_some(),
        "s3 set to {admin} through node {via} (revision {revision}): nodes show \
         (revision, admin) {last:?}"
    );
    (revision, ms_between(t, now_ms()))
}

#[test]
fn live_upgrade_of_the_master() {
    if !lab_allowed() {
        return;
    }
    let _serial = lock();
    let t_start = now_ms();
    let mut h = HaLab::new(Vrrp { priority: 150 }, Vrrp { priority: 100 });
    h.own_binaries();
    let (mut h, run) = load_on(h);
    for id in [LB1, LB2] {
        let p = h.nodes[&id];
        let pid = h.lab.pid(p);
        assert_eq!(
            process::exe(pid).as_deref(),
            Some(h.binary_of(id)),
            "node {id} runs from its own copy of the binary"
        );
    }

    // The probe's client (the client host's own address) connects once now, so that
    // its stick entry is in every table before the "before" snapshot.
    let warm = h.lab.dir.join("probe-warm");
    std::fs::write(&warm, "now").expect("trigger");
    let probe = h.start_probe(&warm, Duration::from_secs(10), None);
    h.probe_result(probe, Duration::from_secs(10));
    let sticks_before = agreed_stick_table(&mut h, "before the upgrades");
    assert_eq!(
        sticks_before.len(),
        CLIENTS + 1,
        "every client's entry and the probe's"
    );
    let s0 = h.statuses(&[LB1, LB2]);
    let (lb1_vrrp0, lb2_vrrp0) = (vrrp_of(&s0[0]), vrrp_of(&s0[1]));
    assert_eq!(
        (lb1_vrrp0.0.as_str(), lb2_vrrp0.0.as_str()),
        ("master", "backup"),
        "VRRP before the upgrades"
    );
    for (i, id) in [LB1, LB2].iter().enumerate() {
        assert_eq!(
            pid_of(&s0[i]),
            h.lab.pid(h.nodes[id]),
            "node {id}'s process.pid before any upgrade is the process the lab started"
        );
        assert_eq!(s0[i]["process"]["upgrades"], 0);
    }
    let reconnects0 = h.load_status(&run).expect("status").reconnects;
    assert_eq!(reconnects0, 0, "reconnects before the upgrades");
    let adverts = h.start_adverts(Duration::from_secs(120));
    std::thread::sleep(Duration::from_millis(500));

    // The master twice in a row, then the backup.
    let mut done: Vec<Upgrade> = Vec::new();
    for (id, label) in [(LB1, "master-1"), (LB1, "master-2"), (LB2, "backup-1")] {
        let u = upgrade(&mut h, id, label);
        println!(
            "{label}: node {id} pid {} -> {}: served after {} ms, old gone after {} ms; \
             last_upgrade {}; probe (attempts, ok, failed, longest gap ms) {:?}",
            u.old,
            u.new,
            u.served_ms,
            u.gone_ms,
            u.report(),
            &u.probe[..4]
        );
        // Every client still streams on the socket it had: no reconnect, data flowing
        // (a chunk not echoed within 2 s would have broken it) through the new process.
        let t_gone = u.t_gone;
        h.wait_streaming(
            &run,
            Duration::from_secs(10),
            &format!("clients streaming after {label}"),
            |s| s.t_ms > t_gone + 500,
        );
        let st = h.load_status(&run).expect("status");
        if st.reconnects != 0 || st.echo_mismatches != 0 {
            let summary = h.stop_load(run);
            panic!(
                "{label} (signal at {}, old process gone at {}): {} client sockets \
                 reconnected, {} echo mismatches; the broken sessions: {:#?}",
                u.t0,
                u.t_gone,
                st.reconnects,
                st.echo_mismatches,
                broken_sessions(&summary)
            );
        }
        done.push(u);
    }
    std::thread::sleep(Duration::from_secs(1));
    let s_end = h.statuses(&[LB1, LB2]);
    let recorded = h.stop_adverts(adverts);
    let t_adverts_end = now_ms();

    // Raft: one leader, every node caught up, and it takes writes through the upgraded
    // nodes' APIs.
    let views = raft_healthy(&mut h, "after the upgrades");
    let sticks_after = agreed_stick_table(&mut h, "after the upgrades");
    let (rev_drain, drain_ms) = write_admin(&mut h, LB1, "drain");
    let (rev_ready, ready_ms) = write_admin(&mut h, LB2, "ready");
    let summary = h.stop_load(run);
    let vip_on = (h.lab.has_vip("lb1"), h.lab.has_vip("lb2"));
    let client_arp = h.client_vip_mac();

    // --- figures ---
    let lb1 = fixture::HOSTS[0].1;
    let lb2 = fixture::HOSTS[1].1;
    let from_lb1 = recorded
        .adverts
        .iter()
        .filter(|a| a.src.to_string() == lb1)
        .count();
    let from_lb2 = recorded
        .adverts
        .iter()
        .filter(|a| a.src.to_string() == lb2)
        .count();
    let others: Vec<String> = recorded
        .adverts
        .iter()
        .filter(|a| a.src.to_string() != lb1 && a.src.to_string() != lb2)
        .map(|a| format!("{} prio {} vrid {}", a.src, a.priority, a.vrid))
        .collect();
    let zero: Vec<String> = recorded
        .adverts
        .iter()
        .filter(|a| a.priority == 0)
        .map(|a| format!("{} at {} µs", a.src, a.at_us))
        .collect();
    let lb1_prios: std::collections::BTreeSet<u8> = recorded
        .adverts
        .iter()
        .filter(|a| a.src.to_string() == lb1)
        .map(|a| a.priority)
        .collect();
    let gaps: Vec<u64> = done
        .iter()
        .map(|u| advert_gap(&recorded, lb1, u.t0, u.t_gone))
        .collect();
    let first_advert_ms = recorded.adverts.first().map(|a| a.at_us / 1_000);
    let last_lb1_ms = recorded
        .adverts
        .iter()
        .filter(|a| a.src.to_string() == lb1)
        .map(|a| a.at_us / 1_000)
        .max();
    let sessions: usize = summary
        .clients
        .iter()
        .flat_map(|c| &c.sockets)
        .map(|s| s.sessions.len())
        .sum();
    let per_upgrade: Vec<Value> = done
        .iter()
        .zip(&gaps)
        .map(|(u, gap)| {
            let r = u.report();
            json!({
                "upgrade": u.label,
                "node": u.node,
                "pid": [u.old, u.new],
                "connections": r["connections"],
                "waiting": r["waiting"],
                "listeners": r["listeners"],
                "bytes_in_flight": r["bytes_in_flight"],
                "pause_ms": r["pause_ms"],
                "duration_ms": r["duration_ms"],
                "new_process_serving_api_after_ms": u.served_ms,
                "old_process_gone_after_ms": u.gone_ms,
                "longest_gap_between_lb1_adverts_ms": gap,
                "probe_longest_gap_ms": u.probe[3],
                "probe_attempts_ok_failed": [u.probe[0], u.probe[1], u.probe[2]],
                "vrrp_after": u.after["vrrp"]["last_transition"],
            })
        })
        .collect();
    let figures = json!({
        "scenario": "live upgrade of the VRRP master (twice) and of the backup (once) under load",
        "upgrades": per_upgrade,
        "adverts_recorded": {
            "from_lb1": from_lb1,
            "from_lb2": from_lb2,
            "from_others": others.len(),
            "priority_zero": zero.len(),
            "lb1_priorities": lb1_prios,
            "undecodable": recorded.undecodable,
        },
        "lb2_master_down_interval_ms": LB2_MASTER_DOWN_MS,
        "raft_after": views,
        "writes_after": {
            "drain_s3_via_lb1": {"revision": rev_drain, "visible_everywhere_ms": drain_ms},
            "ready_s3_via_lb2": {"revision": rev_ready, "visible_everywhere_ms": ready_ms},
        },
        "stick_entries": [sticks_before.len(), sticks_after.len()],
        "client_sockets": CLIENTS * 3,
        "sessions": sessions,
        "reconnects": summary.reconnects,
        "failed_connect_attempts": summary.failed_attempts,
        "bytes_echoed": summary.bytes_echoed,
        "late_echoes_taken_before_a_timeout": summary.late_echoes,
        "test_ms": ms_between(t_start, now_ms()),
    });
    println!(
        "FIGURES {}",
        serde_json::to_string_pretty(&figures).unwrap_or_default()
    );

    // --- checks ---
    // The upgrades themselves.
    let mut lb1_upgrades = 0;
    let mut lb2_upgrades = 0;
    for u in &done {
        let r = u.report();
        let nth = if u.node == LB1 {
            lb1_upgrades += 1;
            lb1_upgrades
        } else {
            lb2_upgrades += 1;
            lb2_upgrades
        };
        let label = &u.label;
        assert_ne!(u.new, u.old, "{label}: the pid must change");
        assert_eq!(r["from_pid"], json!(u.old), "{label}: {r}");
        assert_eq!(r["to_pid"], json!(u.new), "{label}: {r}");
        assert_eq!(
            u.after["process"]["upgrades"],
            json!(nth),
            "{label}: process.upgrades"
        );
        let at = r["at"].as_u64().unwrap_or(0);
        assert!(
            at + 50 >= u.t0 && at <= u.t_gone,
            "{label}: last_upgrade.at {at}, signal at {}, old gone at {}",
            u.t0,
            u.t_gone
        );
        let pause = r["pause_ms"].as_u64().unwrap_or(u64::MAX);
        let duration = r["duration_ms"].as_u64().unwrap_or(u64::MAX);
        assert!(pause < 1_500, "{label}: relays stood still {pause} ms");
        // The hand-over's duration covers its pause (and is never left unset).
        assert!(
            duration >= pause && duration > 0 && duration < 15_000,
            "{label}: duration_ms {duration}, pause_ms {pause}: {r}"
        );
        assert!(
            r["listeners"].as_u64().unwrap_or(0) >= 4,
            "{label}: every frontend port's listener and the API's: {r}"
        );
        assert!(
            u.probe[1] > 0,
            "{label}: the probe was never served: {:?}",
            u.probe
        );
        let (state, transitions) = vrrp_of(&u.after);
        let last = &u.after["vrrp"]["last_transition"];
        let other_seen: std::collections::BTreeSet<&(String, u64)> = u.other.iter().collect();
        if u.node == LB1 {
            let connections = r["connections"].as_u64().unwrap_or(0);
            assert!(
                connections >= (CLIENTS * 3) as u64,
                "{label}: the master handed over {connections} connections, {} stream",
                CLIENTS * 3
            );
            // The new process resumed the mastership: one transition, "resumed".
            assert_eq!(state, "master", "{label}: lb1 after: {}", u.after["vrrp"]);
            assert_eq!(
                (last["to"].as_str(), last["reason"].as_str()),
                (Some("master"), Some("resumed")),
                "{label}: lb1's VRRP transition in the new process: {}",
                u.after["vrrp"]
            );
            assert_eq!(transitions, 1, "{label}: lb1 after: {}", u.after["vrrp"]);
            // lb2 stayed backup with the count it had, all along.
            assert!(
                other_seen.iter().all(|s| **s == lb2_vrrp0),
                "{label}: lb2's VRRP (state, transitions) moved from {lb2_vrrp0:?}: {other_seen:?}"
            );
        } else {
            assert_eq!(state, "backup", "{label}: lb2 after: {}", u.after["vrrp"]);
            assert_eq!(
                last["to"].as_str(),
                Some("backup"),
                "{label}: lb2 after: {}",
                u.after["vrrp"]
            );
            // Its only transition: from initialize, straight to backup.
            assert_eq!(
                (last["from"].as_str(), transitions),
                (Some("initialize"), 1),
                "{label}: lb2's new process: {}",
                u.after["vrrp"]
            );
            // lb1 stayed master, its (second upgrade's) count unchanged.
            assert!(
                other_seen.iter().all(|s| **s == ("master".to_string(), 1)),
                "{label}: lb1's VRRP (state, transitions) moved: {other_seen:?}"
            );
        }
    }
    // The VIP never moved: at the end lb1 is still the master of its last upgrade, with
    // the VIP; lb2 is backup; the wire carried no priority 0 and nothing from lb2.
    let (e1, e2) = (vrrp_of(&s_end[0]), vrrp_of(&s_end[1]));
    assert_eq!(
        e1,
        ("master".to_string(), 1),
        "lb1 at the end: {}",
        s_end[0]["vrrp"]
    );
    assert_eq!(
        s_end[0]["vrrp"]["last_transition"]["reason"], "resumed",
        "lb1 at the end"
    );
    assert_eq!(
        e2,
        ("backup".to_string(), 1),
        "lb2 at the end: {}",
        s_end[1]["vrrp"]
    );
    assert_eq!(vip_on, (true, false), "VIP on (lb1, lb2) at the end");
    assert!(
        client_arp.contains(fixture::HOSTS[0].2),
        "the client's ARP entry for the VIP: {client_arp}"
    );
    assert!(zero.is_empty(), "priority-0 adverts: {zero:?}");
    // lb1's adverts went on through each upgrade: never a gap that makes lb2 master.
    for (u, gap) in done.iter().zip(&gaps) {
        assert!(
            *gap < LB2_MASTER_DOWN_MS,
            "{}: {gap} ms between two of lb1's adverts (lb2's Master_Down_Interval is \
             {LB2_MASTER_DOWN_MS} ms)",
            u.label
        );
    }
    assert_eq!(from_lb2, 0, "lb2 sent adverts: it was master at some point");
    assert!(others.is_empty(), "adverts from elsewhere: {others:?}");
    assert_eq!(
        lb1_prios.into_iter().collect::<Vec<_>>(),
        vec![150],
        "lb1 advertised at another priority than its own"
    );
    assert!(
        first_advert_ms.is_some_and(|t| t < done[0].t0)
            && last_lb1_ms.is_some_and(|t| t > done[2].t_gone),
        "the recorder saw lb1's adverts from before the first upgrade (first {first_advert_ms:?}, \
         signal {}) to after the last (last {last_lb1_ms:?}, old process gone {}, recorder \
         stopped {t_adverts_end})",
        done[0].t0,
        done[2].t_gone
    );
    // Stick tables: the same entries on every node, before and after.
    assert_eq!(
        sticks_after, sticks_before,
        "the stick tables changed across the upgrades"
    );
    // The clients: each socket kept the one connection it opened, every byte echoed.
    assert_eq!(summary.reconnects, 0, "client sockets reconnected");
    assert_eq!(summary.failed_attempts, 0, "connect attempts failed");
    assert!(
        broken_sessions(&summary).is_empty(),
        "broken sessions: {:#?}",
        broken_sessions(&summary)
    );
    super::assert_clean(&summary);
    for c in &summary.clients {
        assert_eq!(c.sockets.len(), 3, "client {}", c.ip);
        for s in &c.sockets {
            let ends: Vec<(Option<&str>, u32, u64)> = s
                .sessions
                .iter()
                .map(|x| (x.end.as_deref(), x.attempts, x.rounds))
                .collect();
            assert!(
                s.sessions.len() == 1
                    && s.sessions[0].attempts == 1
                    && s.sessions[0].end.as_deref() == Some("stopped")
                    && s.sessions[0].rounds > 0,
                "client {} port {}: sessions (end, attempts, rounds) {ends:?}",
                c.ip,
                s.port
            );
        }
    }
}
