//! Ballast's HTTP API (axum).
//!
//! The node implements [`NodeHandle`]; this crate only routes, encodes and maps errors,
//! so it depends on the model types (raft-store) and never on the data plane. Today it
//! serves liveness, readiness and metrics; the REST routes of DESIGN's API table are
//! added here with the replication work.

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

/// What the API needs from the node it runs in.
pub trait NodeHandle: Send + Sync + 'static {
    /// Prometheus / OpenMetrics text.
    fn render_metrics(&self) -> String;
    /// `Err(reason)` while the node should not receive traffic.
    fn readiness(&self) -> Result<(), String>;
}

/// DESIGN's error shape: `{"error":{"code":"not_found","message":"..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: &self.message,
            },
        };
        (status, Json(body)).into_response()
    }
}

pub fn router(node: Arc<dyn NodeHandle>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(node)
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    node: Arc<dyn NodeHandle>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(node))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(node): State<Arc<dyn NodeHandle>>) -> Response {
    match node.readiness() {
        Ok(()) => Json(serde_json::json!({ "ready": true })).into_response(),
        Err(reason) => ApiError {
            status: 503,
            code: "not_ready",
            message: reason,
        }
        .into_response(),
    }
}

async fn metrics(State(node): State<Arc<dyn NodeHandle>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        node.render_metrics(),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError {
        status: 404,
        code: "not_found",
        message: "no such route".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Fake {
        ready: AtomicBool,
    }

    impl NodeHandle for Fake {
        fn render_metrics(&self) -> String {
            "ballast_up 1\n# EOF\n".into()
        }
        fn readiness(&self) -> Result<(), String> {
            if self.ready.load(Ordering::Relaxed) {
                Ok(())
            } else {
                Err("listeners not bound yet".into())
            }
        }
    }

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn routes_answer_with_status_and_design_error_shape() {
        let fake = Arc::new(Fake {
            ready: AtomicBool::new(false),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, fake.clone(), std::future::pending()));

        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        let not_ready = get(addr, "/readyz").await;
        assert!(not_ready.starts_with("HTTP/1.1 503"), "{not_ready}");
        assert!(not_ready
            .contains(r#"{"error":{"code":"not_ready","message":"listeners not bound yet"}}"#));
        fake.ready.store(true, Ordering::Relaxed);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        let metrics = get(addr, "/metrics").await;
        assert!(
            metrics.contains("application/openmetrics-text") && metrics.contains("ballast_up 1")
        );
        let missing = get(addr, "/nope").await;
        assert!(missing.starts_with("HTTP/1.1 404") && missing.contains(r#""code":"not_found""#));
    }
}
