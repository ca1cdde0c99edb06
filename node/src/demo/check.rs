//! The demo's self-check (`ballast demo check`, and the end of `ballast demo`): three
//! clients, three sockets each, and whether each client's sockets met one server.

use std::net::{IpAddr, SocketAddr};

use anyhow::Context;

use super::*;

/// Three clients, one socket on each of the three ports of `target`; prints where each
/// landed and returns whether every client stayed on one server.
pub(super) async fn self_check(
    target: IpAddr,
    first_port: u16,
    clients: &[IpAddr],
) -> anyhow::Result<bool> {
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
