//! What the demo shows: each node's `/v1/status`, waiting for the cluster to settle,
//! and the tables it prints.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::bail;
use ballast_api::types::{Status, VrrpState};

use super::*;

/// What the nodes' APIs say: each node's `/v1/status`, when it answered.
pub(super) struct ClusterView {
    pub(super) statuses: Vec<(u64, Option<Status>)>,
}

impl ClusterView {
    /// Asks every node (blocking HTTP, a few seconds at most per node).
    pub(super) fn fetch_blocking(plan: &Plan) -> ClusterView {
        let statuses = plan
            .nodes
            .iter()
            .map(|n| (n.id, get_status(n.api)))
            .collect();
        ClusterView { statuses }
    }

    pub(super) async fn fetch(plan: &Plan) -> ClusterView {
        let apis: Vec<(u64, SocketAddr)> = plan.nodes.iter().map(|n| (n.id, n.api)).collect();
        let statuses = tokio::task::spawn_blocking(move || {
            apis.into_iter()
                .map(|(id, api)| (id, get_status(api)))
                .collect()
        })
        .await
        .unwrap_or_default();
        ClusterView { statuses }
    }

    pub(super) fn vrrp_state(&self, id: u64) -> Option<VrrpState> {
        self.statuses
            .iter()
            .find(|(i, _)| *i == id)
            .and_then(|(_, s)| s.as_ref())
            .and_then(Status::vrrp_state)
    }

    pub(super) fn masters(&self) -> Vec<u64> {
        self.statuses
            .iter()
            .filter(|(id, _)| self.vrrp_state(*id) == Some(VrrpState::Master))
            .map(|(id, _)| *id)
            .collect()
    }

    /// The Raft leader as the answering nodes see it, when they agree.
    pub(super) fn leader(&self) -> Option<u64> {
        let mut seen = self
            .statuses
            .iter()
            .filter_map(|(_, s)| s.as_ref())
            .map(Status::leader);
        let first = seen.next()??;
        seen.all(|l| l == Some(first)).then_some(first)
    }

    /// The preferred lb node (highest priority; both preempt) is the one master and
    /// every other lb node a backup, no lb node has a failing tracked condition (its
    /// data plane serves the model), and all nodes agree on a leader.
    ///
    /// Not just "one master": while the nodes start, every lb node runs at priority 1
    /// (no model applied yet), so the tie-break may elect another one first, and the
    /// preferred node then preempts it a few seconds later. Reporting the first master,
    /// or checking through a VIP that is about to move, would be reporting a moment.
    pub(super) fn settled(&self, plan: &Plan) -> bool {
        let masters = self.masters();
        let preferred = plan.lbs().max_by_key(|n| n.priority()).map(|n| n.id);
        let healthy = |id: u64| {
            self.statuses
                .iter()
                .find(|(i, _)| *i == id)
                .and_then(|(_, s)| s.as_ref())
                .is_some_and(|s| {
                    s.tracked_conditions_failing
                        .as_ref()
                        .is_none_or(Vec::is_empty)
                })
        };
        masters.len() == 1
            && masters.first().copied() == preferred
            && plan.lbs().all(|n| {
                healthy(n.id)
                    && (masters.contains(&n.id) || self.vrrp_state(n.id) == Some(VrrpState::Backup))
            })
            && self.statuses.iter().all(|(_, s)| s.is_some())
            && self.leader().is_some()
    }

    /// The master, once [`ClusterView::settled`]; node 1 before that.
    pub(super) fn master<'p>(&self, plan: &'p Plan) -> &'p NodePlan {
        let id = self.masters().first().copied();
        plan.nodes
            .iter()
            .find(|n| Some(n.id) == id)
            .unwrap_or(&plan.nodes[0])
    }

    pub(super) fn describe(&self) -> String {
        self.statuses
            .iter()
            .map(|(id, s)| match s {
                None => format!("node {id}: no answer"),
                Some(s) => format!(
                    "node {id}: vrrp {}, raft {} (leader {})",
                    s.vrrp_state().map_or("-", VrrpState::as_str),
                    s.raft.state,
                    s.leader()
                        .map_or_else(|| "null".to_string(), |l| l.to_string())
                ),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// `GET /v1/status` of one node; `None` when it does not answer in time.
pub(super) fn get_status(api: SocketAddr) -> Option<Status> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(2))
        .build();
    let text = agent
        .get(&format!("http://{api}/v1/status"))
        .call()
        .ok()?
        .into_string()
        .ok()?;
    serde_json::from_str(&text).ok()
}

/// Waits (bounded) until the cluster has a Raft leader and exactly one VRRP master.
pub(super) async fn settle(plan: &Plan) -> anyhow::Result<ClusterView> {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let view = ClusterView::fetch(plan).await;
        if view.settled(plan) {
            return Ok(view);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "the demo cluster did not settle within {SETTLE:?} (a Raft leader and one VRRP master): {}",
                view.describe()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// While serving: tells the user when the VRRP master changes (a drill, a stopped
/// node), since without a VIP the address clients use changes with it.
pub(super) async fn watch_master(plan: &Plan) {
    let mut last = ClusterView::fetch(plan).await.masters();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let view = ClusterView::fetch(plan).await;
        let now = view.masters();
        if now != last && !now.is_empty() {
            if let Some(node) = plan.nodes.iter().find(|n| Some(&n.id) == now.first()) {
                println!(
                    "VRRP master is now node {} ({}): nc {} {}",
                    node.id, node.addr, node.addr, plan.first_port
                );
            }
        }
        if !now.is_empty() {
            last = now;
        }
    }
}

pub(super) fn print_nodes(plan: &Plan, view: &ClusterView, with_addr: bool) {
    let leader = view.leader();
    println!(
        "  {:<4}  {:<7}  {:<12}  {:<24}  {:<18}  {:<22}  RAFT",
        "NODE", "ROLE", "ADDRESS", "API", "RAFT PORT", "VRRP"
    );
    for n in &plan.nodes {
        let vrrp = if n.witness {
            "-".to_string()
        } else {
            format!(
                "{} (priority {})",
                view.vrrp_state(n.id).map_or("?", VrrpState::as_str),
                n.priority()
            )
        };
        let addr = if with_addr || !n.witness {
            n.addr.to_string()
        } else {
            "-".to_string()
        };
        println!(
            "  {:<4}  {:<7}  {:<12}  {:<24}  {:<18}  {:<22}  {}",
            n.id,
            n.role(),
            addr,
            format!("http://{}", n.api),
            n.raft.to_string(),
            vrrp,
            if leader == Some(n.id) {
                "leader"
            } else {
                "follower"
            }
        );
    }
    let master = view.master(plan);
    println!();
    println!("VRRP master: node {} ({})", master.id, master.addr);
    match leader {
        Some(l) => println!("Raft leader: node {l}"),
        None => println!("Raft leader: none yet"),
    }
}

pub(super) fn print_servers(plan: &Plan) {
    let servers: Vec<String> = plan
        .servers
        .iter()
        .map(|(name, addr)| format!("{name} {addr}"))
        .collect();
    println!("  servers   {}", servers.join(", "));
}

pub(super) fn print_local_facts(plan: &Plan, view: &ClusterView, vrrp_port: u16) {
    println!("Ballast demo: a 3-node cluster in this process (2 lb nodes + 1 witness) and three demo backends, on loopback.");
    println!();
    print_nodes(plan, view, false);
    println!();
    let lb_addrs: Vec<String> = plan.lbs().map(|n| n.addr.to_string()).collect();
    println!(
        "  frontend  ports {}-{} on each lb node's own address ({}) → backend \"demo\" (leastconn, stick on source IP, maxconn 300)",
        plan.first_port,
        plan.last_port(),
        lb_addrs.join(" and ")
    );
    print_servers(plan);
    let udp: Vec<String> = plan
        .lbs()
        .map(|n| format!("{}:{vrrp_port}", n.addr))
        .collect();
    println!(
        "  VRRP      vrid {VRID}, 1 s adverts as UDP datagrams between {} (transport = \"udp\": no root needed)",
        udp.join(" and ")
    );
    println!(
        "  files     {} (configs, token, Raft data; removed at exit)",
        plan.dir.display()
    );
    println!();
    println!(
        "No VIP is installed without root ({} is only named in the adverts): clients connect",
        VIP_CIDR.split('/').next().unwrap_or(VIP_CIDR)
    );
    println!("to the VRRP master's own address. `ballast demo --netns` (root) runs a lab with a real VIP.");
    println!();
}

pub(super) fn print_local_try_it(plan: &Plan, view: &ClusterView) {
    let master = view.master(plan);
    let other = plan.lbs().find(|n| n.id != master.id).unwrap_or(master);
    let me = self_command();
    let api = plan.nodes[0].api;
    println!();
    println!("Try it:");
    println!(
        "  nc {} {}          # a client of the master (type a line: the server echoes it)",
        master.addr, plan.first_port
    );
    println!("  {me} ctl --api http://{api} status");
    println!(
        "  {me} ctl --api http://{api} --token-file {} drill failover --to {}",
        plan.token_file().display(),
        other.id
    );
    println!(
        "      # planned failover: node {} becomes VRRP master; then clients use nc {} {}",
        other.id, other.addr, plan.first_port
    );
    println!("  curl -s http://{api}/metrics | grep -E 'ballast_(vrrp|raft)_'");
    println!("Ctrl-C stops the demo (all three nodes, the backends, the files).");
}

/// How the user runs this binary: `ballast` when it is the one on `PATH`, else its path.
pub(super) fn self_command() -> String {
    let Ok(exe) = std::env::current_exe() else {
        return "ballast".into();
    };
    let on_path = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join("ballast") == exe));
    if on_path {
        "ballast".into()
    } else {
        exe.display().to_string()
    }
}
