//! `ballast demo`: the embedded default, a real cluster in one command.
//!
//! Without root (the default), one process runs two lb nodes and a witness (three
//! [`crate::run::start`] calls with generated configs) plus three demo backends, all on
//! loopback:
//!
//! ```text
//!   clients ──▶ 127.0.0.11:8001-8003  node 1 (lb, VRRP 150) ─┐ Raft 127.0.0.1:9101-9103
//!               127.0.0.12:8001-8003  node 2 (lb, VRRP 100) ─┼─ node 3 (witness)
//!                    │  VRRP adverts as UDP: 127.0.0.11:9112 ↔ 127.0.0.12:9112
//!                    ▼
//!   server1..3 (demo backends, 127.0.0.1:ephemeral)     APIs 127.0.0.1:9091-9093
//! ```
//!
//! A raw VRRP socket and a VIP need root, so the lb nodes run VRRP over the UDP
//! transport (`[vrrp] transport = "udp"`): the election, status and drills are real, but
//! no address moves. Each lb node turns the model's wildcard bind into its own address
//! (`[node] bind_ip`), so clients connect to the master's own address instead of a VIP.
//!
//! With `--netns` (root) the same cluster runs as `ballast run` child processes in
//! network namespaces with a real VIP and raw VRRP (see `demo/netns.rs`).
//!
//! The demo backends greet each connection with their name and echo what they receive,
//! so `nc 127.0.0.11 8001` shows at once which server a client landed on.

mod netns;

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use ballast_api::types::{Status, VrrpState};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

use crate::config;

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// First of the three frontend ports (on each lb node's own address).
    #[arg(long, default_value_t = 8001)]
    pub port: u16,
    /// API of node 1; nodes 2 and 3 listen on the next two ports (loopback demo).
    #[arg(long, default_value = "127.0.0.1:9091")]
    pub api: SocketAddr,
    /// Raft port of node 1 on 127.0.0.1; nodes 2 and 3 use the next two (loopback demo).
    #[arg(long, default_value_t = 9101)]
    pub raft_port: u16,
    /// UDP port of the VRRP exchange, on each lb node's own address (loopback demo).
    #[arg(long, default_value_t = 9112)]
    pub vrrp_port: u16,
    /// Build a network-namespace lab with a real VIP and raw VRRP instead (root).
    #[arg(long)]
    pub netns: bool,
    /// Exit after the self-check (status 0 when it passed, 1 otherwise).
    #[arg(long)]
    pub check_only: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// Address the frontends listen on: the VIP, or the master's own address.
    #[arg(long)]
    pub target: IpAddr,
    /// First of the three frontend ports.
    #[arg(long, default_value_t = 8001)]
    pub port: u16,
    /// Source address of one client (repeat; default 127.0.0.21, .22 and .23).
    #[arg(long = "from")]
    pub from: Vec<IpAddr>,
}

const SERVERS: [&str; 3] = ["server1", "server2", "server3"];
/// The VRRP instance of both lb nodes.
const VRID: u8 = 51;
/// Named in the adverts in both modes; installed only by the namespace lab.
const VIP_CIDR: &str = "198.18.60.100/24";
/// The self-check's clients on loopback (not the nodes' own 127.0.0.11-13, so a
/// client address never reads like a node).
const LOCAL_CLIENTS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(127, 0, 0, 21),
    Ipv4Addr::new(127, 0, 0, 22),
    Ipv4Addr::new(127, 0, 0, 23),
];
/// How long the demo waits for the cluster to settle (Raft leader, model applied,
/// VRRP master) before it gives up.
const SETTLE: Duration = Duration::from_secs(45);

/// How the lb nodes exchange VRRP adverts.
#[derive(Clone)]
enum VrrpWire {
    /// Loopback demo: UDP between the lb nodes' own addresses; no VIP.
    Udp { port: u16 },
    /// Namespace lab: raw VRRP on the lab interface, the VIP installed.
    Raw { interface: &'static str },
}

/// One node of the generated cluster.
#[derive(Clone)]
struct NodePlan {
    id: u64,
    witness: bool,
    /// The node's own address: its frontends (`bind_ip`) and VRRP source.
    addr: Ipv4Addr,
    api: SocketAddr,
    raft: SocketAddr,
}

impl NodePlan {
    fn role(&self) -> &'static str {
        if self.witness {
            "witness"
        } else {
            "lb"
        }
    }

    fn priority(&self) -> u8 {
        if self.id == 1 {
            150
        } else {
            100
        }
    }
}

/// Everything the generated configs share.
struct Plan {
    nodes: Vec<NodePlan>,
    dir: PathBuf,
    first_port: u16,
    servers: Vec<(&'static str, SocketAddr)>,
    wire: VrrpWire,
    /// Loopback demo: each lb node binds the model's wildcard on its own address.
    bind_own_addr: bool,
}

impl Plan {
    fn last_port(&self) -> u16 {
        self.first_port + 2
    }

    fn token_file(&self) -> PathBuf {
        self.dir.join("token")
    }

    fn config_path(&self, node: &NodePlan) -> PathBuf {
        self.dir.join(format!("node{}.toml", node.id))
    }

    fn lbs(&self) -> impl Iterator<Item = &NodePlan> {
        self.nodes.iter().filter(|n| !n.witness)
    }

    /// The config file of `node`, in the documented format, so the user can read and
    /// reuse it.
    fn config_text(&self, node: &NodePlan) -> String {
        let mut t = String::new();
        let path = |p: &Path| format!("{:?}", p.display().to_string());
        let _ = writeln!(t, "# Generated by `ballast demo`; removed when it stops.");
        let _ = writeln!(t, "[node]\nid = {}\nrole = \"{}\"", node.id, node.role());
        let _ = writeln!(
            t,
            "data_dir = {}",
            path(&self.dir.join(format!("node{}", node.id)))
        );
        let _ = writeln!(t, "api_listen = \"{}\"", node.api);
        let _ = writeln!(t, "raft_listen = \"{}\"", node.raft);
        let _ = writeln!(t, "token_file = {}", path(&self.token_file()));
        if self.bind_own_addr && !node.witness {
            let _ = writeln!(t, "bind_ip = \"{}\"", node.addr);
        }
        let _ = writeln!(t, "\n[cluster]\nmembers = [");
        for m in &self.nodes {
            let _ = writeln!(
                t,
                "  {{ id = {}, raft = \"{}\", api = \"{}\", role = \"{}\" }},",
                m.id,
                m.raft,
                m.api,
                m.role()
            );
        }
        let _ = writeln!(t, "]");
        if !node.witness {
            let interface = match &self.wire {
                VrrpWire::Udp { .. } => "lo",
                VrrpWire::Raw { interface } => interface,
            };
            let _ = writeln!(
                t,
                "\n[vrrp]\ninterface = \"{interface}\"\nvrid = {VRID}\npriority = {}\nadvert_interval = \"1s\"\nvirtual_ips = [\"{VIP_CIDR}\"]\npreempt = true",
                node.priority()
            );
            if let VrrpWire::Udp { port } = &self.wire {
                let peers: Vec<String> = self
                    .lbs()
                    .filter(|p| p.id != node.id)
                    .map(|p| format!("\"{}:{port}\"", p.addr))
                    .collect();
                let _ = writeln!(
                    t,
                    "# Demo without root: adverts as UDP datagrams, no VIP installed.\ntransport = \"udp\"\nudp_listen = \"{}:{port}\"\nudp_peers = [{}]",
                    node.addr,
                    peers.join(", ")
                );
            }
        }
        let _ = writeln!(
            t,
            "\n[[frontend]]\nname = \"demo\"\nbind = [\"0.0.0.0:{}-{}\"]\nbackend = \"demo\"\ntimeout_client = \"15h\"",
            self.first_port,
            self.last_port()
        );
        let _ = writeln!(
            t,
            "\n[[backend]]\nname = \"demo\"\nbalance = \"leastconn\"\ntimeout_server = \"15h\"\ntimeout_connect = \"2s\"\ntimeout_queue = \"10s\"\nstick = {{ on = \"src\", size = 200000, expire = \"16h\" }}\nhealth = {{ kind = \"tcp\", interval = \"1s\", timeout = \"500ms\", rise = 2, fall = 2 }}\nservers = ["
        );
        for (name, addr) in &self.servers {
            let _ = writeln!(
                t,
                "  {{ name = \"{name}\", addr = \"{addr}\", maxconn = 300 }},"
            );
        }
        let _ = writeln!(t, "]");
        t
    }

    /// Writes the shared token and every node's config.
    fn write_files(&self) -> anyhow::Result<()> {
        write_private(&self.token_file(), &new_token())?;
        for node in &self.nodes {
            let path = self.config_path(node);
            std::fs::write(&path, self.config_text(node))
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }
}

/// The demo's scratch directory (configs, token, Raft data, logs); removed on drop, so
/// every exit path — error, Ctrl-C, panic — leaves nothing behind.
struct DemoDir {
    path: PathBuf,
}

impl DemoDir {
    fn create() -> anyhow::Result<DemoDir> {
        let base = std::env::temp_dir();
        // A directory left by a killed demo whose PID came round again is not ours to
        // reuse or delete: take the next free name.
        for n in 0..100u32 {
            let name = match n {
                0 => format!("ballast-demo-{}", std::process::id()),
                n => format!("ballast-demo-{}-{n}", std::process::id()),
            };
            let path = base.join(name);
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(DemoDir { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot create {}", path.display()))
                }
            }
        }
        bail!(
            "no free ballast-demo-* directory name in {}",
            base.display()
        )
    }
}

impl Drop for DemoDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!(dir = %self.path.display(), error = %e, "cannot remove the demo directory");
        }
    }
}

/// 32 hex characters from the kernel's random source (the token only has to be
/// unguessable by other local users for the demo's lifetime).
fn new_token() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        // No /dev/urandom: a hash of time and PID is still unique per demo.
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        bytes[..8].copy_from_slice(&h.finish().to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// SIGINT and SIGTERM, registered when the demo starts so that a Ctrl-C at any moment
/// (even during start-up) reaches the demo's clean-up instead of killing the process.
struct StopSignal {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl StopSignal {
    fn register() -> anyhow::Result<StopSignal> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignal {
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
        })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let stop = StopSignal::register()?;
    if args.netns {
        run_netns(args, stop).await
    } else {
        run_local(args, stop).await
    }
}

/// The namespace lab is driven by blocking `ip` commands and child processes, so it
/// runs on a blocking thread; a signal sets the flag it checks between steps.
async fn run_netns(args: DemoArgs, mut stop: StopSignal) -> anyhow::Result<()> {
    let flag = Arc::new(AtomicBool::new(false));
    let job_flag = flag.clone();
    let mut job = tokio::task::spawn_blocking(move || netns::run(&args, &job_flag));
    let joined = tokio::select! {
        r = &mut job => r,
        () = stop.wait() => {
            flag.store(true, Ordering::Relaxed);
            job.await
        }
    };
    match joined {
        Ok(result) => result,
        // The lab's guard already cleaned up while unwinding.
        Err(e) => bail!("the namespace demo failed: {e}"),
    }
}

async fn run_local(args: DemoArgs, mut stop: StopSignal) -> anyhow::Result<()> {
    let dir = DemoDir::create()?;
    let mut started: Vec<crate::run::Running> = Vec::new();
    let mut backends: Vec<JoinHandle<()>> = Vec::new();
    let outcome = tokio::select! {
        r = start_local(&args, &dir, &mut started, &mut backends) => Some(r),
        () = stop.wait() => None,
    };
    let result = match outcome {
        // Interrupted while starting: a clean stop, not an error.
        None => Ok(()),
        Some(Err(e)) => Err(e),
        Some(Ok(_)) if args.check_only => Ok(()),
        Some(Ok(plan)) => {
            tokio::select! {
                () = watch_master(&plan) => {}
                () = stop.wait() => {}
            }
            Ok(())
        }
    };
    // Every node that started is stopped, bounded, in reverse start order (the witness
    // first); a VRRP master hands over with a priority-0 advert on its way out.
    for running in started.iter().rev() {
        if tokio::time::timeout(Duration::from_secs(10), running.stop())
            .await
            .is_err()
        {
            tracing::warn!("a demo node did not stop within 10 s");
        }
    }
    for b in &backends {
        b.abort();
    }
    let path = dir.path.clone();
    drop(dir);
    if result.is_ok() && !args.check_only {
        println!(
            "demo stopped: 3 nodes stopped, backends ended, {} removed",
            path.display()
        );
    }
    result
}

/// Start-up, the facts, the self-check: everything before serving.
async fn start_local(
    args: &DemoArgs,
    dir: &DemoDir,
    started: &mut Vec<crate::run::Running>,
    backends: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<Plan> {
    let port_after = |base: u16, n: u16, flag: &str| {
        base.checked_add(n)
            .filter(|_| base != 0)
            .with_context(|| format!("{flag} must be 1-65533 (it is the first of three ports)"))
    };
    port_after(args.port, 2, "--port")?;
    port_after(args.api.port(), 2, "--api")?;
    port_after(args.raft_port, 2, "--raft-port")?;
    anyhow::ensure!(args.vrrp_port != 0, "--vrrp-port must be 1-65535");

    let mut servers = Vec::new();
    for name in SERVERS {
        let (addr, task) = spawn_demo_backend(name).await?;
        servers.push((name, addr));
        backends.push(task);
    }
    let nodes = (1..=3u16)
        .map(|i| NodePlan {
            id: u64::from(i),
            witness: i == 3,
            addr: Ipv4Addr::new(127, 0, 0, 10 + i as u8),
            api: SocketAddr::new(args.api.ip(), args.api.port() + i - 1),
            raft: SocketAddr::from(([127, 0, 0, 1], args.raft_port + i - 1)),
        })
        .collect();
    let plan = Plan {
        nodes,
        dir: dir.path.clone(),
        first_port: args.port,
        servers,
        wire: VrrpWire::Udp {
            port: args.vrrp_port,
        },
        bind_own_addr: true,
    };
    plan.write_files()?;
    for node in &plan.nodes {
        let config = config::load(&plan.config_path(node))?;
        let running = crate::run::start(&config).await.with_context(|| {
            format!(
                "demo node {}: is another program using {} (API), {} (Raft), {}:{}-{} or UDP {}:{}? Try --api, --raft-port, --port, --vrrp-port",
                node.id,
                node.api,
                node.raft,
                node.addr,
                plan.first_port,
                plan.last_port(),
                node.addr,
                args.vrrp_port
            )
        })?;
        started.push(running);
    }
    for running in started.iter() {
        crate::run::wait_ready(running, SETTLE).await?;
    }
    let view = settle(&plan).await?;
    print_local_facts(&plan, &view, args.vrrp_port);
    let master = view.master(&plan).addr;
    let passed = self_check(
        IpAddr::V4(master),
        plan.first_port,
        &LOCAL_CLIENTS.map(IpAddr::V4),
    )
    .await?;
    anyhow::ensure!(
        passed,
        "self-check failed: a client's sockets reached different servers"
    );
    println!("Self-check passed.");
    if !args.check_only {
        print_local_try_it(&plan, &view);
    }
    Ok(plan)
}

/// What the nodes' APIs say: each node's `/v1/status`, when it answered.
struct ClusterView {
    statuses: Vec<(u64, Option<Status>)>,
}

impl ClusterView {
    /// Asks every node (blocking HTTP, a few seconds at most per node).
    fn fetch_blocking(plan: &Plan) -> ClusterView {
        let statuses = plan
            .nodes
            .iter()
            .map(|n| (n.id, get_status(n.api)))
            .collect();
        ClusterView { statuses }
    }

    async fn fetch(plan: &Plan) -> ClusterView {
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

    fn vrrp_state(&self, id: u64) -> Option<VrrpState> {
        self.statuses
            .iter()
            .find(|(i, _)| *i == id)
            .and_then(|(_, s)| s.as_ref())
            .and_then(Status::vrrp_state)
    }

    fn masters(&self) -> Vec<u64> {
        self.statuses
            .iter()
            .filter(|(id, _)| self.vrrp_state(*id) == Some(VrrpState::Master))
            .map(|(id, _)| *id)
            .collect()
    }

    /// The Raft leader as the answering nodes see it, when they agree.
    fn leader(&self) -> Option<u64> {
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
    fn settled(&self, plan: &Plan) -> bool {
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
    fn master<'p>(&self, plan: &'p Plan) -> &'p NodePlan {
        let id = self.masters().first().copied();
        plan.nodes
            .iter()
            .find(|n| Some(n.id) == id)
            .unwrap_or(&plan.nodes[0])
    }

    fn describe(&self) -> String {
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
fn get_status(api: SocketAddr) -> Option<Status> {
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
async fn settle(plan: &Plan) -> anyhow::Result<ClusterView> {
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
async fn watch_master(plan: &Plan) {
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

fn print_nodes(plan: &Plan, view: &ClusterView, with_addr: bool) {
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

fn print_servers(plan: &Plan) {
    let servers: Vec<String> = plan
        .servers
        .iter()
        .map(|(name, addr)| format!("{name} {addr}"))
        .collect();
    println!("  servers   {}", servers.join(", "));
}

fn print_local_facts(plan: &Plan, view: &ClusterView, vrrp_port: u16) {
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

fn print_local_try_it(plan: &Plan, view: &ClusterView) {
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
fn self_command() -> String {
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

/// Three clients, one socket on each of the three ports of `target`; prints where each
/// landed and returns whether every client stayed on one server.
async fn self_check(target: IpAddr, first_port: u16, clients: &[IpAddr]) -> anyhow::Result<bool> {
    let last = first_port
        .checked_add(2)
        .context("the first port must leave room for three")?;
    let sources: Vec<String> = clients.iter().map(ToString::to_string).collect();
    println!(
        "Self-check: {} clients ({}), one socket on each port of {target}:{first_port}-{last}:",
        clients.len(),
        sources.join(", ")
    );
    let mut all_sticky = true;
    for &source in clients {
        let mut landed = Vec::new();
        for port in first_port..=last {
            let server = greeting_via(source, SocketAddr::new(target, port))
                .await
                .with_context(|| format!("client {source} → {target}:{port}"))?;
            landed.push(server);
        }
        let sticky = landed.iter().all(|s| *s == landed[0]);
        all_sticky &= sticky;
        println!(
            "  client {source}: {}  {}",
            landed.join(", "),
            if sticky {
                "(same server on every port)"
            } else {
                "(NOT sticky)"
            }
        );
    }
    Ok(all_sticky)
}

/// `ballast demo-check`: the demo's self-check on its own (the namespace demo runs it
/// inside the client namespace, through the VIP).
pub async fn run_check(args: CheckArgs) -> anyhow::Result<()> {
    let clients = if args.from.is_empty() {
        LOCAL_CLIENTS.map(IpAddr::V4).to_vec()
    } else {
        args.from
    };
    let passed = self_check(args.target, args.port, &clients).await?;
    anyhow::ensure!(
        passed,
        "self-check failed: a client's sockets reached different servers"
    );
    println!("Self-check passed.");
    Ok(())
}

async fn spawn_demo_backend(name: &'static str) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(serve_backend(Arc::from(name), listener));
    Ok((addr, task))
}

#[derive(Debug, Clone, clap::Args)]
pub struct BackendArgs {
    /// Address to listen on.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Name the backend greets each connection with.
    #[arg(long)]
    pub name: String,
}

/// `ballast demo-backend`: the demo's echo backend on its own, for labs (network
/// namespaces, drills, deployment tests) that need a real server process.
pub async fn run_backend(args: BackendArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!(
        "demo backend {:?} listening on {}",
        args.name,
        listener.local_addr()?
    );
    tokio::select! {
        () = serve_backend(Arc::from(args.name.as_str()), listener) => {}
        () = crate::run::shutdown_signal() => {}
    }
    Ok(())
}

async fn serve_backend(name: Arc<str>, listener: TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(echo(name.clone(), stream));
    }
}

async fn echo(name: Arc<str>, mut stream: TcpStream) {
    if stream
        .write_all(format!("{name}\n").as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = stream.shutdown().await;
}

/// Connects from `source` and returns the name the server greets with.
async fn greeting_via(source: IpAddr, target: SocketAddr) -> anyhow::Result<String> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket
        .bind(SocketAddr::new(source, 0))
        .with_context(|| format!("cannot use source address {source}"))?;
    let stream = tokio::time::timeout(Duration::from_secs(5), socket.connect(target))
        .await
        .context("connect timed out")??;
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(5),
        BufReader::new(stream).read_line(&mut line),
    )
    .await
    .context("no greeting")??;
    Ok(line.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(wire: VrrpWire, bind_own_addr: bool) -> Plan {
        Plan {
            nodes: (1..=3u16)
                .map(|i| NodePlan {
                    id: u64::from(i),
                    witness: i == 3,
                    addr: Ipv4Addr::new(127, 0, 0, 10 + i as u8),
                    api: SocketAddr::from(([127, 0, 0, 1], 9090 + i)),
                    raft: SocketAddr::from(([127, 0, 0, 1], 9100 + i)),
                })
                .collect(),
            dir: PathBuf::from("/tmp/ballast-demo-test"),
            first_port: 8001,
            servers: SERVERS
                .iter()
                .enumerate()
                .map(|(i, s)| (*s, SocketAddr::from(([127, 0, 0, 1], 7001 + i as u16))))
                .collect(),
            wire,
            bind_own_addr,
        }
    }

    /// The generated configs are valid, and say what the demo relies on.
    #[test]
    fn generated_configs_are_valid() {
        let p = plan(VrrpWire::Udp { port: 9112 }, true);
        for node in &p.nodes {
            let text = p.config_text(node);
            let config = config::parse(Path::new("demo.toml"), &text)
                .unwrap_or_else(|e| panic!("node {}: {e}\n{text}", node.id));
            assert_eq!(config.cluster.as_ref().map(|c| c.members.len()), Some(3));
            match &config.vrrp {
                Some(v) => {
                    assert!(!node.witness);
                    assert_eq!(v.transport, config::VrrpTransport::Udp);
                    assert_eq!(v.udp_listen, Some(SocketAddr::new(node.addr.into(), 9112)));
                    assert_eq!(v.udp_peers.len(), 1);
                    assert_eq!(config.node.bind_ip, Some(IpAddr::V4(node.addr)));
                }
                None => assert!(node.witness),
            }
        }
        let p = plan(VrrpWire::Raw { interface: "eth0" }, false);
        for node in &p.nodes {
            let config = config::parse(Path::new("lab.toml"), &p.config_text(node)).unwrap();
            assert_eq!(config.node.bind_ip, None);
            if let Some(v) = config.vrrp {
                assert_eq!(v.transport, config::VrrpTransport::Raw);
                assert_eq!(v.interface, "eth0");
            }
        }
    }

    #[test]
    fn tokens_are_long_and_distinct() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
