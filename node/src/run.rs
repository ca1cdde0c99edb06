//! `ballast run`: one node from a validated config until a shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context};
use tracing::info;

use crate::config::{Config, Role};
use crate::metrics::Metrics;
use crate::proxy::DataPlane;

/// What the API sees of a running node.
struct NodeApi {
    plane: Arc<DataPlane>,
}

impl ballast_api::NodeHandle for NodeApi {
    fn render_metrics(&self) -> String {
        self.plane.render_metrics()
    }

    fn readiness(&self) -> Result<(), String> {
        if self.plane.is_ready() {
            Ok(())
        } else {
            Err("the data plane's listeners are not bound".into())
        }
    }
}

/// A node that is up: its data plane and where its API listens.
pub struct Running {
    pub plane: Arc<DataPlane>,
    pub api_addr: SocketAddr,
}

/// Binds the API and every listener, then serves in the background.
pub async fn start(config: &Config) -> anyhow::Result<Running> {
    if config.cluster.is_some() {
        bail!(
            "{}: [cluster] is not supported by this version of ballast yet (Raft replication is not built); remove it to run a single node",
            config.path.display()
        );
    }
    if config.vrrp.is_some() {
        bail!(
            "{}: [vrrp] is not supported by this version of ballast yet (the VIP driver is not wired in); remove it to run without a VIP",
            config.path.display()
        );
    }
    if config.node.role == Role::Witness {
        bail!("{}: a witness node needs [cluster]", config.path.display());
    }
    std::fs::create_dir_all(&config.node.data_dir)
        .with_context(|| format!("cannot create data_dir {}", config.node.data_dir.display()))?;
    let api_listener = tokio::net::TcpListener::bind(config.node.api_listen)
        .await
        .with_context(|| {
            format!(
                "node.api_listen: cannot listen on {}",
                config.node.api_listen
            )
        })?;
    let api_addr = api_listener.local_addr()?;
    let plane = DataPlane::new(&config.model, Arc::new(Metrics::new()));
    let handle = Arc::new(NodeApi {
        plane: plane.clone(),
    });
    tokio::spawn(async move {
        if let Err(e) = ballast_api::serve(api_listener, handle, std::future::pending()).await {
            tracing::error!(error = %e, "API server stopped");
        }
    });
    plane.start()?;
    info!(
        node = config.node.id,
        api = %api_addr,
        frontends = config.model.frontends.len(),
        backends = config.model.backends.len(),
        "ballast node running"
    );
    Ok(Running { plane, api_addr })
}

pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let running = start(&config).await?;
    shutdown.await;
    info!("shutting down");
    running.plane.stop();
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
