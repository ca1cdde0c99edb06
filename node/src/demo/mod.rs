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

mod check;
mod netns;
mod plan;
mod view;

pub use check::run_check;
use check::self_check;
use plan::*;
use view::*;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
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
    use std::path::{Path, PathBuf};

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
