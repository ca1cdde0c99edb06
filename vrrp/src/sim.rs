//! A simulated LAN of virtual routers with a manual clock (tests only).
//!
//! Each node is a pure [`Router`]; every `SendAdvert` a node emits is
//! delivered, with zero latency and at the same instant, to every other
//! live node as an `AdvertReceived` from the sender's primary address. The
//! clock jumps from deadline to deadline, so a minute of protocol time runs
//! in microseconds and timings are exact to the centisecond. A killed node
//! just stops (like `kill -9`: its VIP stays where it was); a shut-down
//! node goes through `Event::Shutdown` (priority 0).

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::state::{Action, AdvertInfo, Event, Router, RouterConfig, TransitionReason, VrrpState};

/// One router on the simulated LAN.
struct Node {
    router: Router,
    alive: bool,
    holds_vip: bool,
}

/// A transition seen on the LAN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    at: Duration,
    node: usize,
    from: VrrpState,
    to: VrrpState,
    reason: TransitionReason,
}

struct Lan {
    now: Duration,
    nodes: Vec<Node>,
    transitions: Vec<Seen>,
    /// (time, node, priority) of every advert sent.
    adverts: Vec<(Duration, usize, u8)>,
    /// Instants after which more than one live node was master.
    dual_master_at: Vec<Duration>,
}

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 0, last))
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Config for node `i` (address 198.18.0.11 + i) with `prio` and `cs` interval.
fn cfg(i: u8, prio: u8, interval_cs: u16) -> RouterConfig {
    let mut c = RouterConfig::new(51, prio, ip(11 + i));
    c.advert_interval_cs = interval_cs;
    c
}

impl Lan {
    fn new(cfgs: Vec<RouterConfig>) -> Self {
        Lan {
            now: Duration::ZERO,
            nodes: cfgs
                .into_iter()
                .map(|c| Node {
                    router: Router::new(c),
                    alive: false,
                    holds_vip: false,
                })
                .collect(),
            transitions: Vec::new(),
            adverts: Vec::new(),
            dual_master_at: Vec::new(),
        }
    }

    /// Start node `i` (again, with a fresh router, if it was killed).
    fn start(&mut self, i: usize) {
        if !self.nodes[i].alive {
            let c = self.nodes[i].router.config().clone();
            self.nodes[i].router = Router::new(c);
            self.nodes[i].alive = true;
        }
        self.deliver(i, Event::Startup);
    }

    /// A live upgrade's new process: a fresh router with the same config,
    /// started straight in Master (the old one was stopped with `kill`, which
    /// is what an abandon is on the wire: silence, VIP left in place).
    fn resume_master(&mut self, i: usize) {
        let c = self.nodes[i].router.config().clone();
        self.nodes[i].router = Router::new(c);
        self.nodes[i].alive = true;
        self.deliver(i, Event::ResumeMaster);
    }

    /// `kill -9`: the node stops at once, its VIP (if any) stays.
    fn kill(&mut self, i: usize) {
        self.nodes[i].alive = false;
    }

    fn shutdown(&mut self, i: usize) {
        self.deliver(i, Event::Shutdown);
        self.nodes[i].alive = false;
    }

    fn deliver(&mut self, i: usize, ev: Event) {
        let mut queue = VecDeque::from([(i, ev)]);
        while let Some((n, ev)) = queue.pop_front() {
            if !self.nodes[n].alive {
                continue;
            }
            let actions = self.nodes[n].router.handle(self.now, ev);
            for a in actions {
                match a {
                    Action::SendAdvert { priority } => {
                        self.adverts.push((self.now, n, priority));
                        let c = self.nodes[n].router.config();
                        let info = AdvertInfo {
                            src: c.primary_addr,
                            priority,
                            max_advert_int_cs: c.advert_interval_cs,
                        };
                        for m in 0..self.nodes.len() {
                            if m != n && self.nodes[m].alive {
                                queue.push_back((m, Event::AdvertReceived(info)));
                            }
                        }
                    }
                    Action::AddVips => self.nodes[n].holds_vip = true,
                    Action::RemoveVips => self.nodes[n].holds_vip = false,
                    Action::SendGratuitousArp => {}
                    Action::Transition { from, to, reason } => self.transitions.push(Seen {
                        at: self.now,
                        node: n,
                        from,
                        to,
                        reason,
                    }),
                }
            }
        }
        if self.masters().len() > 1 {
            self.dual_master_at.push(self.now);
        }
    }

    /// Run every timer up to and including `until`.
    fn run_until(&mut self, until: Duration) {
        // Bounded: a router has at most one timer and each firing moves it
        // forward by at least 1 cs, so this many steps covers an hour.
        for _ in 0..1_000_000 {
            let next = self
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.alive)
                .filter_map(|(i, n)| n.router.next_deadline().map(|d| (d, i)))
                .min();
            match next {
                Some((d, i)) if d <= until => {
                    self.now = d;
                    self.deliver(i, Event::Timer);
                }
                _ => {
                    self.now = until;
                    return;
                }
            }
        }
        panic!("simulation did not converge");
    }

    fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].alive && self.nodes[i].router.state() == VrrpState::Master)
            .collect()
    }

    fn vip_holders(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].holds_vip)
            .collect()
    }

    fn became_master(&self) -> Vec<Seen> {
        self.transitions
            .iter()
            .copied()
            .filter(|t| t.to == VrrpState::Master)
            .collect()
    }

    fn last_advert_by(&self, node: usize) -> Duration {
        self.adverts
            .iter()
            .rev()
            .find(|(_, n, _)| *n == node)
            .map(|(t, _, _)| *t)
            .expect("node advertised")
    }
}

/// Three routers, priorities 100/150/200, 1 s adverts, all started at 0.
fn trio(interval_cs: u16) -> Lan {
    let mut lan = Lan::new(vec![
        cfg(0, 100, interval_cs),
        cfg(1, 150, interval_cs),
        cfg(2, 200, interval_cs),
    ]);
    for i in 0..3 {
        lan.start(i);
    }
    lan
}

#[test]
fn one_master_is_elected_and_stays() {
    let mut lan = trio(100);
    lan.run_until(ms(60_000));
    assert_eq!(lan.masters(), vec![2]);
    assert_eq!(lan.vip_holders(), vec![2]);
    // The highest priority has the shortest Master_Down_Interval:
    // 3 * 100 + (56 * 100 / 256 = 21) cs.
    let m = lan.became_master();
    assert_eq!(m.len(), 1, "{m:?}");
    assert_eq!(m[0].at, ms(3210));
    assert_eq!(m[0].reason, TransitionReason::MasterDown);
    assert!(lan.dual_master_at.is_empty());
    // It advertises every second.
    let sent: Vec<_> = lan.adverts.iter().filter(|a| a.1 == 2).collect();
    assert_eq!(sent.len(), 57); // 3.21 s, 4.21 s, ..., 59.21 s
}

#[test]
fn killed_master_is_replaced_after_master_down_interval() {
    for interval in [100u16, 10] {
        let mut lan = trio(interval);
        lan.run_until(ms(20_000));
        assert_eq!(lan.masters(), vec![2]);
        lan.kill(2);
        let last = lan.last_advert_by(2);
        lan.run_until(ms(40_000));
        let m = lan.became_master();
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!(m[1].node, 1, "the 150 takes over, not the 100");
        let mdi = crate::state::master_down_interval_cs(150, interval);
        assert_eq!(m[1].at, last + crate::state::cs(mdi));
        assert_eq!(m[1].reason, TransitionReason::MasterDown);
        assert_eq!(lan.masters(), vec![1]);
        // The dead node's VIP is still configured (kill -9): the next test
        // shows it removed when the node comes back.
        assert_eq!(lan.vip_holders(), vec![1, 2]);
        assert!(lan.dual_master_at.is_empty());
    }
}

#[test]
fn priority_zero_shutdown_hands_over_after_skew_time() {
    for interval in [100u16, 10] {
        let mut lan = trio(interval);
        lan.run_until(ms(20_000));
        let t = lan.now;
        lan.shutdown(2);
        assert_eq!(lan.adverts.last().map(|a| (a.1, a.2)), Some((2, 0)));
        assert_eq!(lan.vip_holders(), Vec::<usize>::new());
        lan.run_until(ms(40_000));
        let m = lan.became_master();
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!(m[1].node, 1);
        assert_eq!(m[1].reason, TransitionReason::MasterResigned);
        let skew = crate::state::skew_time_cs(150, interval);
        assert_eq!(m[1].at, t + crate::state::cs(skew));
        assert_eq!(lan.vip_holders(), vec![1]);
        assert!(lan.dual_master_at.is_empty());
    }
}

#[test]
fn restarted_node_removes_its_stale_vip_and_preempts() {
    let mut lan = trio(100);
    lan.run_until(ms(20_000));
    lan.kill(2);
    lan.run_until(ms(30_000));
    assert_eq!(lan.vip_holders(), vec![1, 2]);
    lan.start(2);
    // Startup as backup removes the stale VIP at once.
    assert_eq!(lan.vip_holders(), vec![1]);
    lan.run_until(ms(60_000));
    // Preempt: the 200 ignores the 150's adverts and takes over after its
    // Master_Down_Interval from its startup; the 150 steps down.
    assert_eq!(lan.masters(), vec![2]);
    assert_eq!(lan.vip_holders(), vec![2]);
    let m = lan.became_master();
    assert_eq!(
        m.last().map(|s| (s.node, s.at)),
        Some((2, ms(30_000 + 3210)))
    );
    assert!(lan.dual_master_at.is_empty());
}

#[test]
fn preemption_without_delay() {
    let mut lan = Lan::new(vec![cfg(0, 100, 100), cfg(1, 150, 100)]);
    lan.start(0);
    lan.run_until(ms(10_000));
    assert_eq!(lan.masters(), vec![0]);
    lan.start(1);
    lan.run_until(ms(30_000));
    assert_eq!(lan.masters(), vec![1]);
    assert_eq!(lan.vip_holders(), vec![1]);
    let t = lan
        .transitions
        .iter()
        .find(|s| s.node == 0 && s.from == VrrpState::Master);
    assert_eq!(
        t.map(|s| (s.at, s.reason)),
        Some((ms(13_410), TransitionReason::Preempted))
    );
    assert!(lan.dual_master_at.is_empty());
}

#[test]
fn preemption_waits_for_preempt_delay() {
    let mut c1 = cfg(1, 150, 100);
    c1.preempt_delay = ms(10_000);
    let mut lan = Lan::new(vec![cfg(0, 100, 100), c1]);
    lan.start(0);
    lan.run_until(ms(10_000));
    lan.start(1);
    lan.run_until(ms(20_000));
    // Within the delay the 150 follows the 100.
    assert_eq!(lan.masters(), vec![0]);
    lan.run_until(ms(40_000));
    assert_eq!(lan.masters(), vec![1]);
    // It stopped listening to the lower master at 20 s: the last advert it
    // accepted came before that, and it takes over one
    // Master_Down_Interval later.
    let last_accepted = lan
        .adverts
        .iter()
        .filter(|a| a.1 == 0 && a.0 < ms(20_000))
        .map(|a| a.0)
        .max()
        .expect("adverts");
    let m = lan.became_master();
    assert_eq!(
        m.last().map(|s| (s.node, s.at)),
        Some((1, last_accepted + ms(3410)))
    );
    assert!(lan.dual_master_at.is_empty());
}

#[test]
fn no_preemption_when_disabled() {
    let mut c1 = cfg(1, 150, 100);
    c1.preempt = false;
    let mut lan = Lan::new(vec![cfg(0, 100, 100), c1]);
    lan.start(0);
    lan.run_until(ms(10_000));
    lan.start(1);
    lan.run_until(ms(120_000));
    assert_eq!(lan.masters(), vec![0]);
    assert_eq!(lan.became_master().len(), 1);
}

#[test]
fn lowered_priority_lets_a_preempting_backup_take_over() {
    let mut lan = Lan::new(vec![cfg(0, 100, 100), cfg(1, 150, 100)]);
    lan.start(0);
    lan.start(1);
    lan.run_until(ms(20_000));
    assert_eq!(lan.masters(), vec![1]);
    // A tracked condition fails on the master: 150 -> 50.
    lan.deliver(1, Event::PriorityChanged(50));
    let t = lan.now;
    lan.run_until(ms(40_000));
    assert_eq!(lan.masters(), vec![0]);
    // The 100 ignores the 50's adverts from the change on; its timer was
    // last reset by the previous 150 advert.
    let last150 = lan
        .adverts
        .iter()
        .filter(|a| a.1 == 1 && a.2 == 150 && a.0 <= t)
        .map(|a| a.0)
        .max()
        .expect("adverts");
    let m = lan.became_master();
    assert_eq!(
        m.last().map(|s| (s.node, s.at)),
        Some((0, last150 + ms(3600)))
    );
    assert!(lan.dual_master_at.is_empty());
}

#[test]
fn equal_priorities_elect_the_higher_address() {
    let mut lan = Lan::new(vec![cfg(0, 100, 100), cfg(1, 100, 100), cfg(2, 100, 100)]);
    for i in 0..3 {
        lan.start(i);
    }
    lan.run_until(ms(30_000));
    // All three time out together; the tie-break leaves the highest address.
    assert_eq!(lan.masters(), vec![2]);
    assert_eq!(lan.vip_holders(), vec![2]);
}

#[test]
fn resumed_master_continues_without_a_transition_anywhere_else() {
    for interval in [100u16, 10] {
        let mut lan = trio(interval);
        lan.run_until(ms(20_000));
        assert_eq!(lan.masters(), vec![2]);
        let before = lan.transitions.len();
        // The old process stops without a word half an interval after its
        // last advert; the new one starts a few ms later.
        let last = lan.last_advert_by(2);
        let half = crate::state::cs(u32::from(interval) / 2);
        lan.run_until(last + half);
        lan.kill(2);
        lan.run_until(last + half + ms(5));
        lan.resume_master(2);
        assert_eq!(
            lan.adverts.last().map(|a| (a.0, a.1, a.2)),
            Some((last + half + ms(5), 2, 200)),
            "the first thing the new process does is advertise, at priority 200"
        );
        lan.run_until(ms(60_000));
        // The only transition since is the new router's own Initialize ->
        // Master; the backups never moved.
        let since: Vec<_> = lan.transitions[before..].to_vec();
        assert_eq!(since.len(), 1, "{since:?}");
        assert_eq!(
            (since[0].node, since[0].reason),
            (2, TransitionReason::Resumed)
        );
        assert_eq!(lan.masters(), vec![2]);
        assert_eq!(lan.vip_holders(), vec![2]);
        assert!(lan.adverts.iter().all(|a| a.2 != 0), "no priority-0 advert");
        // The handover gap is where the old process stopped in its interval
        // plus the restart; no gap is wider than one interval.
        let sent: Vec<Duration> = lan
            .adverts
            .iter()
            .filter(|a| a.1 == 2)
            .map(|a| a.0)
            .collect();
        let gaps: Vec<Duration> = sent.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.contains(&(half + ms(5))), "{gaps:?}");
        assert_eq!(
            gaps.iter().max(),
            Some(&crate::state::cs(u32::from(interval)))
        );
        assert!(lan.dual_master_at.is_empty());
    }
}
