//! `ballast demo`: the embedded default. One node and three demo backends on loopback,
//! a short self-check that shows stickiness across ports, then it serves until Ctrl-C.
//!
//! The demo backends greet each connection with their name and echo what they receive,
//! so `nc 127.0.0.1 8001` shows at once which server a client landed on.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::config;

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// First of the three frontend ports.
    #[arg(long, default_value_t = 8001)]
    pub port: u16,
    /// Where the API (metrics, health) listens.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub api: SocketAddr,
    /// Exit after the self-check instead of serving until Ctrl-C.
    #[arg(long)]
    pub check_only: bool,
}

const SERVERS: [&str; 3] = ["server1", "server2", "server3"];

/// The embedded default config; `{...}` are filled in at start.
const DEMO_CONFIG: &str = r#"
[node]
id = 1
data_dir = "{data_dir}"
api_listen = "{api}"

[[frontend]]
name = "demo"
bind = ["127.0.0.1:{first}-{last}"]
backend = "demo"
timeout_client = "15h"

[[backend]]
name = "demo"
balance = "leastconn"
timeout_server = "15h"
timeout_connect = "2s"
timeout_queue = "10s"
stick = { on = "src", size = 200000, expire = "16h" }
health = { kind = "tcp", interval = "1s", timeout = "500ms", rise = 2, fall = 2 }
servers = [
  { name = "server1", addr = "{server1}", maxconn = 300 },
  { name = "server2", addr = "{server2}", maxconn = 300 },
  { name = "server3", addr = "{server3}", maxconn = 300 },
]
"#;

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let last = args
        .port
        .checked_add(2)
        .context("--port must leave room for three ports")?;
    let mut text = DEMO_CONFIG
        .replace("{api}", &args.api.to_string())
        .replace("{first}", &args.port.to_string())
        .replace("{last}", &last.to_string());
    for name in SERVERS {
        let addr = spawn_demo_backend(name).await?;
        text = text.replace(&format!("{{{name}}}"), &addr.to_string());
    }
    let data_dir = std::env::temp_dir().join(format!("ballast-demo-{}", std::process::id()));
    text = text.replace("{data_dir}", &data_dir.display().to_string());
    let config = config::parse(Path::new("<embedded demo config>"), &text)?;
    let running = crate::run::start(&config).await.with_context(|| {
        format!(
            "demo: is another program using ports {}-{last} or {}? Try --port/--api",
            args.port, args.api
        )
    })?;
    crate::run::wait_ready(&running, Duration::from_secs(10)).await?;

    println!("Ballast demo: one node, three demo backends on loopback.");
    println!("  frontend  127.0.0.1:{}-{last}  → backend \"demo\" (leastconn, stick on source IP, maxconn 300)", args.port);
    for name in SERVERS {
        let server = &config.model.backends["demo"].servers;
        if let Some(s) = server.iter().find(|s| s.name == name) {
            println!("  server    {name} at {}", s.addr);
        }
    }
    println!(
        "  API       http://{0}/metrics  http://{0}/healthz  http://{0}/readyz",
        running.api_addr
    );
    println!();
    println!("Self-check: three clients (127.0.0.11-13), one socket on each port:");
    let mut all_sticky = true;
    for client in 11..=13u8 {
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, client));
        let mut landed = Vec::new();
        for port in args.port..=last {
            landed.push(greeting_via(source, SocketAddr::from(([127, 0, 0, 1], port))).await?);
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
    anyhow::ensure!(
        all_sticky,
        "self-check failed: a client's sockets reached different servers"
    );
    if args.check_only {
        running.stop().await;
        let _ = std::fs::remove_dir_all(&data_dir);
        return Ok(());
    }
    println!();
    println!(
        "Try it:  nc 127.0.0.1 {}   (type a line; the server echoes it)",
        args.port
    );
    println!(
        "         curl -s http://{}/metrics | grep ballast_server_connections",
        running.api_addr
    );
    println!("Ctrl-C stops the demo.");
    crate::run::shutdown_signal().await;
    running.stop().await;
    let _ = std::fs::remove_dir_all(&data_dir);
    println!("demo stopped");
    Ok(())
}

async fn spawn_demo_backend(name: &'static str) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve_backend(Arc::from(name), listener));
    Ok(addr)
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
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
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
