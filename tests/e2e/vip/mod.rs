//! Issue 5, end to end: the floating IP with real `ballast run` processes in network
//! namespaces (DESIGN "Test labs").
//!
//! Two nodes, lb1 (priority 150) and lb2 (priority 100), run VRRP for VRID 51 and the VIP
//! 198.18.0.100/24 on one bridge, with a frontend on VIP:8001; a backend host runs
//! `ballast demo-backend` processes (each node has its own pool: a greeting "a…" came
//! through lb1, "b…" through lb2); a client host connects to the VIP. The lab harness
//! (`vrrp/tests/lab/mod.rs`, shared with the vrrp crate's own labs) builds namespaces from
//! 198.18.0.0/15 only with no route out, under a unique name prefix, and removes every
//! process (by PID) and namespace on drop, also on panic. Node status comes from each
//! node's API through a helper re-executed inside the namespace (`helper`).
//!
//! - `election_failover_stale_vip_graceful_stop_and_preemption`: election and VIP,
//!   kill -9 failover (outage printed), a stale VIP removed on restart as backup,
//!   preemption, graceful stop (handover printed), preempt_delay.
//! - `bad_packets_are_counted_and_ignored`: crafted adverts (bad checksum, TTL 64, other
//!   VRID, version 2) counted in `ballast_vrrp_dropped_total{reason}`, no state change.
//! - `no_usable_server_lowers_priority_and_moves_the_vip`: lb1's pool dies, its effective
//!   priority drops to 1 and lb2 takes over; the pool comes back and lb1 preempts.
//!
//! Needs root and iproute2: skipped with a message otherwise, a failure under `CI=true`.
//! The labs run one at a time (timings on 2 cores); each wait is bounded.

mod fixture;
mod helper;
#[path = "../../../vrrp/tests/lab/mod.rs"]
pub(crate) mod lab;

use std::time::Duration;

use fixture::{LbOpts, VipLab};
use lab::{lab_allowed, lock, unix_ns, wait_until, VIP_CIDR};

use crate::harness::http::metric_value;

const ADVERT: Duration = Duration::from_secs(1);

/// Skew_Time of a priority at the 1 s advert interval (RFC 9568 §6.1, centiseconds).
fn skew(priority: u8) -> Duration {
    Duration::from_millis(((256 - u64::from(priority)) * 100 / 256) * 10)
}

/// Master_Down_Interval of a priority at the 1 s advert interval.
fn master_down(priority: u8) -> Duration {
    3 * ADVERT + skew(priority)
}

fn opts(priority: u8) -> LbOpts {
    LbOpts {
        priority,
        preempt_delay: "0s",
    }
}

/// Milliseconds from `since_ns` (unix ns) to `node`'s last transition, which must be to
/// `to`.
fn last_transition_after(v: &mut VipLab, node: &str, to: &str, since_ns: u128) -> Duration {
    let s = v.vrrp(node).unwrap_or_else(|| panic!("{node} status"));
    let t = &s["last_transition"];
    assert_eq!(t["to"], to, "{node}: {s}");
    let at_ms = t["at_ms"].as_u64().expect("at_ms");
    Duration::from_millis(at_ms.saturating_sub((since_ns / 1_000_000) as u64))
}

fn ns_to(since_ns: u128, at_ns: u128) -> Duration {
    Duration::from_nanos(at_ns.saturating_sub(since_ns) as u64)
}

/// Waits (bounded) until `node` is master, holds the VIP, and `other` is backup without
/// it.
fn wait_master(v: &mut VipLab, node: &str, other: &str, limit: Duration) {
    let ok = wait_until(limit, || v.lab.has_vip(node) && v.state(node) == "master");
    assert!(ok.is_some(), "{node} never became master with the VIP");
    let ok = wait_until(Duration::from_secs(3), || {
        !v.lab.has_vip(other) && v.state(other) == "backup"
    });
    assert!(
        ok.is_some(),
        "{other} did not settle as backup without the VIP"
    );
}

/// Waits (bounded) until a client connection through the VIP greets with `prefix`.
fn client_reaches(v: &mut VipLab, prefix: &str) -> String {
    let mut last = Err(String::new());
    let ok = wait_until(Duration::from_secs(5), || {
        last = v.client_greeting();
        matches!(&last, Ok(g) if g.starts_with(prefix))
    });
    assert!(
        ok.is_some(),
        "client never reached a \"{prefix}\" backend: {last:?}"
    );
    last.unwrap_or_default()
}

#[test]
fn election_failover_stale_vip_graceful_stop_and_preemption() {
    if !lab_allowed() {
        return;
    }
    let _serial = lock();
    let mut v = VipLab::new();
    v.start_pool("lb1");
    v.start_pool("lb2");
    let lb1 = v.start_lb("lb1", opts(150));
    v.start_lb("lb2", opts(100));

    // 1. The higher priority becomes master and holds the VIP; the client reaches a
    //    backend through it.
    wait_master(&mut v, "lb1", "lb2", Duration::from_secs(10));
    let s1 = v.vrrp("lb1").expect("lb1 status");
    assert_eq!(s1["priority"], 150, "{s1}");
    assert_eq!(s1["effective_priority"], 150, "{s1}");
    assert_eq!(s1["virtual_ips"][0], VIP_CIDR, "{s1}");
    let s2 = v.vrrp("lb2").expect("lb2 status");
    assert_eq!(s2["master"], v.lab.addr("lb1"), "{s2}");
    assert_eq!(s2["effective_priority"], 100, "{s2}");
    assert!(s2["adverts_received"].as_u64() >= Some(1), "{s2}");
    let m1 = v.metrics("lb1");
    let m2 = v.metrics("lb2");
    assert_eq!(metric_value(&m1, "ballast_vrrp_master", &[]), Some(1.0));
    assert_eq!(metric_value(&m2, "ballast_vrrp_master", &[]), Some(0.0));
    assert!(metric_value(&m1, "ballast_vrrp_adverts_sent_total", &[]) >= Some(1.0));
    let g = client_reaches(&mut v, "a");
    eprintln!("client through lb1: greeted by {g}");
    assert!(
        v.lab.client_neigh().contains(v.lab.mac("lb1")),
        "{}",
        v.lab.client_neigh()
    );

    // 2. kill -9 the master: lb2 takes the VIP after Master_Down_Interval (3.61 s at
    //    priority 100; the kill lands anywhere in an advert interval) and the client
    //    gets through lb2. The outage is from the kill to the first greeting via lb2.
    let probe = v.start_probe("b", Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(300));
    let t_kill = unix_ns();
    v.lab.kill9(lb1);
    let (at, g) = v.probe_result(probe, Duration::from_secs(15));
    let outage = ns_to(t_kill, at);
    let became = last_transition_after(&mut v, "lb2", "master", t_kill);
    eprintln!(
        "kill -9 of the master: lb2 master after {became:?} (Master_Down_Interval {:?}), \
         client through lb2 ({g}) after {outage:?}",
        master_down(100)
    );
    assert!(
        became >= Duration::from_millis(2000),
        "too early: {became:?}"
    );
    assert!(
        outage <= Duration::from_millis(6000),
        "outage too long: {outage:?}"
    );
    assert!(v.lab.has_vip("lb2"));
    assert_eq!(v.state("lb2"), "master");
    // Without vip_lifetime the dead process leaves its VIP behind.
    assert!(v.lab.has_vip("lb1"), "expected a stale VIP on lb1");

    // 5 and 4. lb1 restarted: it starts as backup and removes the stale VIP at once,
    //    then preempts lb2 (preempt = true) one Master_Down_Interval later.
    let t_start = unix_ns();
    let lb1 = v.start_lb("lb1", opts(150));
    let removed = wait_until(Duration::from_secs(3), || !v.lab.has_vip("lb1"));
    let state = v.state("lb1");
    assert!(removed.is_some(), "stale VIP not removed (lb1 is {state})");
    assert_eq!(state, "backup", "the stale VIP must go while lb1 is backup");
    eprintln!(
        "stale VIP removed {:?} after lb1's restart, as backup",
        ns_to(t_start, unix_ns())
    );
    wait_master(&mut v, "lb1", "lb2", Duration::from_secs(10));
    let preempt = last_transition_after(&mut v, "lb1", "master", t_start);
    eprintln!(
        "restarted lb1 preempted after {preempt:?} (from spawn; Master_Down_Interval {:?})",
        master_down(150)
    );
    assert!(
        preempt >= Duration::from_millis(2500) && preempt <= Duration::from_millis(7000),
        "preemption after {preempt:?}"
    );
    assert_eq!(v.vrrp("lb2").expect("lb2")["master"], v.lab.addr("lb1"));
    client_reaches(&mut v, "a");

    // 3. Graceful stop: priority 0 and VIP removed; lb2 takes over after its Skew_Time
    //    (0.61 s), not Master_Down_Interval.
    let probe = v.start_probe("b", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let t_term = unix_ns();
    let exit = v.lab.stop(lb1);
    let (at, g) = v.probe_result(probe, Duration::from_secs(10));
    let outage = ns_to(t_term, at);
    let became = last_transition_after(&mut v, "lb2", "master", t_term);
    eprintln!(
        "graceful stop of the master: lb2 master after {became:?} (Skew_Time {:?}), \
         client through lb2 ({g}) after {outage:?}",
        skew(100)
    );
    assert!(
        exit.is_some_and(|s| s.success()),
        "lb1 did not exit cleanly on SIGTERM: {exit:?}"
    );
    assert!(!v.lab.has_vip("lb1"), "stopped master kept the VIP");
    let s2 = v.vrrp("lb2").expect("lb2");
    assert_eq!(s2["last_transition"]["reason"], "master_resigned", "{s2}");
    let slack = Duration::from_millis(1000);
    assert!(
        became <= skew(100) + slack,
        "handover after {became:?}, Skew_Time {:?}",
        skew(100)
    );
    assert!(
        outage <= skew(100) + 2 * slack,
        "outage {outage:?}, Skew_Time {:?}",
        skew(100)
    );

    // 4. preempt_delay = "2s": lb1 follows lb2 for 2 s before it may preempt, then
    //    takes over one Master_Down_Interval after the last advert it accepted, which
    //    arrived in the last advert interval of the delay: 1-2 s later than without it
    //    (the bounds leave room for start-up jitter on a loaded machine).
    let t_start = unix_ns();
    v.start_lb(
        "lb1",
        LbOpts {
            priority: 150,
            preempt_delay: "2s",
        },
    );
    assert_eq!(v.state("lb1"), "backup");
    wait_master(&mut v, "lb1", "lb2", Duration::from_secs(12));
    let delayed = last_transition_after(&mut v, "lb1", "master", t_start);
    eprintln!(
        "with preempt_delay 2s, lb1 preempted after {delayed:?} (without: {preempt:?}; \
         difference {:?})",
        delayed.saturating_sub(preempt)
    );
    assert!(
        delayed >= Duration::from_millis(4000) && delayed <= Duration::from_millis(9000),
        "preemption with delay after {delayed:?}"
    );
    let extra = delayed.saturating_sub(preempt);
    assert!(
        extra >= Duration::from_millis(700) && extra <= Duration::from_millis(3500),
        "preempt_delay added {extra:?}"
    );
    client_reaches(&mut v, "a");
}

#[test]
fn bad_packets_are_counted_and_ignored() {
    if !lab_allowed() {
        return;
    }
    let _serial = lock();
    let mut v = VipLab::new();
    v.start_pool("lb1");
    v.start_pool("lb2");
    v.start_lb("lb1", opts(150));
    v.start_lb("lb2", opts(100));
    wait_master(&mut v, "lb1", "lb2", Duration::from_secs(10));

    const KINDS: [(&str, &str); 4] = [
        ("checksum", "bad_checksum"),
        ("ttl64", "ttl_not_255"),
        ("vrid", "wrong_vrid"),
        ("version", "bad_version"),
    ];
    let dropped = |m: &str, reason: &str| {
        metric_value(m, "ballast_vrrp_dropped_total", &[("reason", reason)]).unwrap_or(0.0)
    };
    // (metrics, transitions, state) of each node before.
    let before: Vec<(String, u64, String)> = ["lb1", "lb2"]
        .iter()
        .map(|n| {
            let m = v.metrics(n);
            let s = v.vrrp(n).expect("status");
            (
                m,
                s["transitions"].as_u64().expect("transitions"),
                s["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();

    // Priority 254 from the client: accepted, any of them would make lb1 step down.
    for node in ["lb1", "lb2"] {
        for (kind, _) in KINDS {
            v.send_bad(kind, node);
        }
    }
    for (i, node) in ["lb1", "lb2"].into_iter().enumerate() {
        let mut m = String::new();
        let counted = wait_until(Duration::from_secs(3), || {
            m = v.metrics(node);
            KINDS
                .iter()
                .all(|(_, r)| dropped(&m, r) >= dropped(&before[i].0, r) + 1.0)
        });
        let got: Vec<_> = KINDS
            .iter()
            .map(|(_, r)| format!("{r}={}", dropped(&m, r)))
            .collect();
        eprintln!("{node} counted the crafted packets: {}", got.join(" "));
        assert!(
            counted.is_some(),
            "{node} did not count every bad packet: {got:?}"
        );
        // /v1/status shows the same counters.
        let s = v.vrrp(node).expect("status");
        for (_, r) in KINDS {
            assert!(s["dropped"][r].as_u64() >= Some(1), "{node}: {s}");
        }
    }
    // Ignored: no state change over two more advert intervals.
    std::thread::sleep(2 * ADVERT);
    for (i, node) in ["lb1", "lb2"].into_iter().enumerate() {
        let s = v.vrrp(node).expect("status");
        assert_eq!(s["state"], before[i].2.as_str(), "{node}: {s}");
        assert_eq!(s["transitions"], before[i].1, "{node}: {s}");
    }
    assert_eq!(v.vrrp("lb2").expect("lb2")["master"], v.lab.addr("lb1"));
    assert!(v.lab.has_vip("lb1") && !v.lab.has_vip("lb2"));
    client_reaches(&mut v, "a");
}

#[test]
fn no_usable_server_lowers_priority_and_moves_the_vip() {
    if !lab_allowed() {
        return;
    }
    let _serial = lock();
    let mut v = VipLab::new();
    let pool1 = v.start_pool("lb1");
    v.start_pool("lb2");
    v.start_lb("lb1", opts(150));
    v.start_lb("lb2", opts(100));
    wait_master(&mut v, "lb1", "lb2", Duration::from_secs(10));
    client_reaches(&mut v, "a");

    // lb1's whole pool dies (health 200 ms, fall 2): its effective priority drops to 1;
    // lb2 (preempt) ignores the worse master and takes over after Master_Down_Interval.
    let t_down = unix_ns();
    for i in pool1 {
        v.lab.kill9(i);
    }
    let lowered = wait_until(Duration::from_secs(5), || {
        v.vrrp("lb1").is_some_and(|s| s["effective_priority"] == 1)
    });
    assert!(lowered.is_some(), "lb1's effective priority never dropped");
    eprintln!(
        "lb1's pool killed: effective priority 1 after {:?}",
        ns_to(t_down, unix_ns())
    );
    let s1 = v.vrrp("lb1").expect("lb1");
    assert_eq!(s1["priority"], 150, "{s1}");
    let m1 = v.metrics("lb1");
    assert_eq!(
        metric_value(&m1, "ballast_vrrp_effective_priority", &[]),
        Some(1.0)
    );
    wait_master(&mut v, "lb2", "lb1", Duration::from_secs(8));
    let took = last_transition_after(&mut v, "lb2", "master", t_down);
    eprintln!("lb2 took over from the degraded master after {took:?}");
    let s2 = v.vrrp("lb2").expect("lb2");
    assert_eq!(s2["effective_priority"], 100, "{s2}");
    assert_eq!(v.vrrp("lb1").expect("lb1")["master"], v.lab.addr("lb2"));
    client_reaches(&mut v, "b");

    // The pool comes back: full priority again, and lb1 preempts.
    let t_up = unix_ns();
    v.start_pool("lb1");
    let restored = wait_until(Duration::from_secs(5), || {
        v.vrrp("lb1")
            .is_some_and(|s| s["effective_priority"] == 150)
    });
    assert!(restored.is_some(), "lb1's priority never came back");
    wait_master(&mut v, "lb1", "lb2", Duration::from_secs(8));
    eprintln!(
        "lb1's pool back: master again after {:?}",
        last_transition_after(&mut v, "lb1", "master", t_up)
    );
    client_reaches(&mut v, "a");
}
