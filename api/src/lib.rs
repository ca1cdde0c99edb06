//! Ballast's HTTP API (axum).
//!
//! The node implements [`NodeHandle`]; this crate routes, authenticates, decodes and
//! maps errors to DESIGN's shape. It depends on the model types (raft-store) and never
//! on the data plane. Writes become [`Command`]s that the node commits through Raft;
//! the answer comes after the commit and carries the new `revision`.
//!
//! Neighbours: server.rs accepts and bounds connections; guard.rs checks the token of
//! writes before any body is read and puts a deadline on bodies.

mod error;
mod guard;
mod server;

pub use error::ApiError;
use error::{body_error, ErrorBody, ErrorDetail, WriteErrors};

pub use server::{serve, serve_with, Limits};

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::handler::Handler;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ballast_raft_store::model::{
    AdminState, Backend, ClusterModel, Frontend, ModelSpec, Role, Server,
};
use ballast_raft_store::network::{MembershipChange, ProposeError};
use ballast_raft_store::state::{self, Command, StickBatch, StickUpdate};
use ballast_raft_store::types::Member;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi, ToSchema};

pub mod types;
use types::{
    Alive, Applied, BackendList, BackendStats, BackendWithStats, DrillList, DrillReport,
    DrillStarted, FrontendList, Imported, MemberAdded, MemberRemoved, Ready, Revision, StickPage,
};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the API needs from the node it runs in.
pub trait NodeHandle: Send + Sync + 'static {
    /// Prometheus / OpenMetrics text.
    fn render_metrics(&self) -> String;
    /// `Err(reason)` while the node should not receive traffic.
    fn readiness(&self) -> Result<(), String>;
    /// GET /v1/status.
    fn status(&self) -> types::Status;
    /// One page of a backend's stick table.
    fn stick_page(&self, backend: &str, query: &StickQuery) -> Result<StickPage, ApiError>;
    /// The bearer token writes must present; `None` when the node has none configured
    /// (then every write is refused).
    fn write_token(&self) -> Option<Arc<[u8]>>;
    /// This node's id (the origin of imported entries).
    fn node_id(&self) -> u64;
    /// Commits a command through the cluster's leader.
    fn propose(&self, command: Command) -> BoxFuture<'_, Result<state::Response, ProposeError>>;
    /// The replicated model and its revision, as this node has applied it.
    fn model(&self) -> (ClusterModel, u64);
    /// Live per-server figures of one backend on this node (`None` on a witness).
    fn backend_stats(&self, backend: &str) -> Option<BackendStats>;
    /// Adds or removes a member through the leader.
    fn change_membership(
        &self,
        change: MembershipChange,
    ) -> BoxFuture<'_, Result<(), ProposeError>>;
    /// Checks the target (any fit lb node when `None`) and opens a planned failover
    /// drill, or 409 with the reason it was refused.
    fn start_drill(&self, to: Option<u64>) -> BoxFuture<'_, Result<DrillStarted, ApiError>>;
    /// Failover records, newest first.
    fn drills(&self) -> DrillList;
    /// One failover record's report.
    fn drill(&self, id: u64) -> Option<DrillReport>;
    /// Live upgrade of this node to the binary installed at its path: answers when the
    /// new process serves (this one then exits), or why not (it serves on).
    fn upgrade(&self) -> BoxFuture<'_, Result<types::UpgradeReport, ApiError>>;
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StickQuery {
    /// One client's entry.
    #[param(value_type = Option<String>)]
    pub key: Option<IpAddr>,
    /// Page after this key (key order).
    #[param(value_type = Option<String>)]
    pub after: Option<IpAddr>,
    /// Entries per page, 1-10000 (default 1000).
    pub limit: Option<usize>,
}

/// Largest page of stick entries one request returns.
pub const MAX_STICK_PAGE: usize = 10_000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct StickImport {
    entries: Vec<StickImportEntry>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct StickImportEntry {
    #[schema(value_type = String, example = "198.18.5.7")]
    key: IpAddr,
    server: String,
}

/// Entries per Raft command when importing: the journal's batch size, so no single log
/// entry is larger than what traffic makes.
const IMPORT_CHUNK: usize = 1_024;

type Node = State<Arc<dyn NodeHandle>>;

/// Largest request body, except on the bulk routes: every other body is one object.
pub const BODY_LIMIT: usize = 64 << 10;
/// Largest body of `POST /v1/apply` (a whole model) and of a stick import (10,000
/// entries are about 450 KB). Only token holders get this far (guard.rs).
pub const BULK_BODY_LIMIT: usize = 16 << 20;

/// The routes, behind the guard (token, body deadline) and the body limits. Served by
/// [`serve_with`], which adds the connection-level bounds.
pub fn router(node: Arc<dyn NodeHandle>, limits: Limits) -> Router {
    let bulk = || axum::extract::DefaultBodyLimit::max(BULK_BODY_LIMIT);
    let guard = Arc::new(guard::Guard {
        node: node.clone(),
        body_timeout: limits.body_timeout,
    });
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/openapi.json", get(openapi_json))
        .route(
            "/v1/backends/:backend/stick",
            get(stick_page)
                .post(stick_import.layer(bulk()))
                .delete(stick_forget_all),
        )
        .route(
            "/v1/backends/:backend/stick/:key",
            axum::routing::delete(stick_forget_one),
        )
        .route("/v1/frontends", get(list_frontends))
        .route(
            "/v1/frontends/:name",
            get(get_frontend).put(put_frontend).delete(delete_frontend),
        )
        .route("/v1/backends", get(list_backends))
        .route(
            "/v1/backends/:name",
            get(get_backend).put(put_backend).delete(delete_backend),
        )
        .route(
            "/v1/backends/:backend/servers/:server",
            axum::routing::put(put_server).delete(delete_server),
        )
        .route(
            "/v1/backends/:backend/servers/:server/state",
            axum::routing::post(set_admin),
        )
        .route("/v1/apply", axum::routing::post(apply.layer(bulk())))
        .route("/v1/members", axum::routing::post(add_member))
        .route("/v1/members/:id", axum::routing::delete(remove_member))
        .route("/v1/drills/failover", axum::routing::post(start_drill))
        .route("/v1/drills", get(list_drills))
        .route("/v1/drills/:id", get(get_drill))
        .route("/v1/node/upgrade", axum::routing::post(upgrade))
        // Inner to the guard: the bulk routes' own limits above override this one.
        .route_layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        // On routed requests only: an unknown path answers 404 without reading a body,
        // token or not.
        .route_layer(axum::middleware::from_fn_with_state(guard, guard::guard))
        .fallback(not_found)
        .with_state(node)
}

/// Commits and maps the state machine's answer.
async fn commit(node: &dyn NodeHandle, command: Command) -> Result<u64, ApiError> {
    let response = node.propose(command).await?;
    match response.error {
        None => Ok(response.revision),
        Some((code, message)) => {
            let status = match code {
                state::ErrorCode::Invalid => 400,
                state::ErrorCode::NotFound => 404,
                state::ErrorCode::Conflict => 409,
            };
            Err(ApiError::new(status, code.as_str(), message))
        }
    }
}

#[utoipa::path(get, path = "/healthz", tag = "probes", responses((status = 200, description = "the process runs", body = Alive)))]
async fn healthz() -> Json<Alive> {
    Json(Alive {
        status: "ok".into(),
    })
}

#[utoipa::path(get, path = "/readyz", tag = "probes", responses((status = 200, description = "ready", body = Ready), (status = 503, description = "not ready, with the reason", body = ErrorBody)))]
async fn readyz(State(node): Node) -> Response {
    match node.readiness() {
        Ok(()) => Json(Ready { ready: true }).into_response(),
        Err(reason) => ApiError::new(503, "not_ready", reason).into_response(),
    }
}

#[utoipa::path(get, path = "/metrics", tag = "probes", responses((status = 200, description = "Prometheus / OpenMetrics text", content_type = "application/openmetrics-text", body = String)))]
async fn metrics(State(node): Node) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        node.render_metrics(),
    )
        .into_response()
}

#[utoipa::path(get, path = "/v1/status", tag = "cluster", responses((status = 200, description = "node, Raft, health and VRRP state", body = types::Status)))]
async fn status(State(node): Node) -> Json<types::Status> {
    Json(node.status())
}

#[utoipa::path(get, path = "/v1/backends/{backend}/stick", tag = "stick", params(("backend" = String, Path, description = "backend name"), StickQuery), responses((status = 200, description = "a page of replicated entries", body = StickPage), (status = 400, description = "bad query", body = ErrorBody), (status = 404, description = "no such backend", body = ErrorBody)))]
async fn stick_page(
    State(node): Node,
    Path(backend): Path<String>,
    query: Result<Query<StickQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<StickPage>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if query.limit.is_some_and(|l| l == 0 || l > MAX_STICK_PAGE) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_STICK_PAGE}"
        )));
    }
    node.stick_page(&backend, &query).map(Json)
}

#[utoipa::path(post, path = "/v1/backends/{backend}/stick", tag = "stick", security(("token" = [])), params(("backend" = String, Path, description = "backend name")), request_body = StickImport, responses((status = 200, description = "committed: how many, and the new revision", body = Imported), WriteErrors))]
async fn stick_import(
    State(node): Node,
    Path(backend): Path<String>,
    body: Result<Json<StickImport>, JsonRejection>,
) -> Result<Json<Imported>, ApiError> {
    let Json(import) = body?;
    let now = ballast_raft_store::replica::now_ms();
    let total = import.entries.len();
    let mut revision = 0;
    for chunk in import.entries.chunks(IMPORT_CHUNK) {
        let updates = chunk
            .iter()
            .map(|e| StickUpdate {
                key: e.key,
                server: Arc::from(e.server.as_str()),
                last_seen_ms: now,
            })
            .collect();
        revision = commit(
            node.as_ref(),
            Command::Stick {
                origin: ballast_raft_store::IMPORTED,
                batches: vec![StickBatch {
                    backend: backend.clone(),
                    updates,
                }],
            },
        )
        .await?;
    }
    Ok(Json(Imported {
        imported: total,
        revision,
    }))
}

#[utoipa::path(delete, path = "/v1/backends/{backend}/stick", tag = "stick", security(("token" = [])), params(("backend" = String, Path, description = "backend name")), responses((status = 200, description = "committed; the new revision", body = Revision), WriteErrors))]
async fn stick_forget_all(
    State(node): Node,
    Path(backend): Path<String>,
) -> Result<Json<Revision>, ApiError> {
    commit_write(node.as_ref(), || {
        Ok(Command::ForgetStick { backend, key: None })
    })
    .await
}

#[utoipa::path(delete, path = "/v1/backends/{backend}/stick/{key}", tag = "stick", security(("token" = [])), params(("backend" = String, Path, description = "backend name"), ("key" = String, Path, description = "client IP")), responses((status = 200, description = "committed; the new revision", body = Revision), WriteErrors))]
async fn stick_forget_one(
    State(node): Node,
    Path((backend, key)): Path<(String, String)>,
) -> Result<Json<Revision>, ApiError> {
    commit_write(node.as_ref(), || {
        let key: IpAddr = key
            .parse()
            .map_err(|_| ApiError::bad_request(format!("key {key:?} is not an IP address")))?;
        Ok(Command::ForgetStick {
            backend,
            key: Some(key),
        })
    })
    .await
}

/// Decodes a JSON body, naming the field at fault (`servers[1].weight`) on error.
fn decode_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let value = json_value(body)?;
    decode_value(value)
}

fn json_value(body: Result<Bytes, BytesRejection>) -> Result<serde_json::Value, ApiError> {
    let bytes = body.map_err(|r| body_error(r.status(), r.body_text(), &r))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))
}

fn decode_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "body".to_string()
        } else {
            format!("field `{path}`")
        };
        ApiError::bad_request(format!("{field}: {}", e.inner()))
    })
}

/// A PUT body may omit `name`; when present it must match the path.
fn with_name(mut value: serde_json::Value, name: &str) -> Result<serde_json::Value, ApiError> {
    let object = value
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("body: expected a JSON object"))?;
    match object.get("name") {
        None => {
            object.insert("name".into(), serde_json::Value::String(name.into()));
        }
        Some(serde_json::Value::String(n)) if n == name => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "field `name`: {other} differs from the name in the path ({name:?})"
            )))
        }
    }
    Ok(value)
}

fn revision_json(revision: u64) -> Json<Revision> {
    Json(Revision { revision })
}

/// A write that answers the new revision: the command built from the request, committed.
/// The token was checked before (guard.rs), on the head alone.
async fn commit_write(
    node: &dyn NodeHandle,
    command: impl FnOnce() -> Result<Command, ApiError>,
) -> Result<Json<Revision>, ApiError> {
    let revision = commit(node, command()?).await?;
    Ok(revision_json(revision))
}

#[utoipa::path(get, path = "/v1/frontends", tag = "model", responses((status = 200, description = "every frontend and the revision", body = FrontendList)))]
async fn list_frontends(State(node): Node) -> Json<FrontendList> {
    let (model, revision) = node.model();
    let frontends = model.frontends.into_values().collect();
    Json(FrontendList {
        revision,
        frontends,
    })
}

#[utoipa::path(get, path = "/v1/frontends/{name}", tag = "model", params(("name" = String, Path, description = "frontend name")), responses((status = 200, description = "the frontend", body = Frontend), (status = 404, description = "no such frontend", body = ErrorBody)))]
async fn get_frontend(
    State(node): Node,
    Path(name): Path<String>,
) -> Result<Json<Frontend>, ApiError> {
    let (mut model, _) = node.model();
    let frontend = model
        .frontends
        .remove(&name)
        .ok_or_else(|| ApiError::not_found(format!("frontend {name:?} does not exist")))?;
    Ok(Json(frontend))
}

#[utoipa::path(put, path = "/v1/frontends/{name}", tag = "model", security(("token" = [])), params(("name" = String, Path, description = "frontend name")), request_body = Frontend, responses((status = 200, description = "committed; the new revision", body = Revision), WriteErrors))]
async fn put_frontend(
    State(node): Node,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Revision>, ApiError> {
    commit_write(node.as_ref(), || {
        let frontend: Frontend = decode_value(with_name(json_value(body)?, &name)?)?;
        Ok(Command::PutFrontend { frontend })
    })
    .await
}

#[utoipa::path(delete, path = "/v1/frontends/{name}", tag = "model", security(("token" = [])), params(("name" = String, Path, description = "frontend name")), responses((status = 200, description = "committed; the new revision", body = Revision), WriteErrors))]
async fn delete_frontend(
    State(node): Node,
    Path(name): Path<String>,
) -> Result<Json<Revision>, ApiError> {
    commit_write(node.as_ref(), || Ok(Command::DeleteFrontend { name })).await
}

fn with_stats(node: &dyn NodeHandle, backend: Backend) -> BackendWithStats {
    let stats = node.backend_stats(&backend.name);
    BackendWithStats { backend, stats }
}

#[utoipa::path(get, path = "/v1/backends", tag = "model", responses((status = 200, description = "every backend with live per-server stats", body = BackendList)))]
async fn list_backends(State(node): Node) -> Json<BackendList> {
    let (model, revision) = node.model();
    let backends = model
        .backends
        .into_values()
        .map(|b| with_stats(node.as_ref(), b))
        .collect();
    Json(BackendList { revision, backends })
}

#[utoipa::path(get, path = "/v1/backends/{name}", tag = "model", params(("name" = String, Path, description = "backend name")), responses((status = 200, description = "the backend with live per-server stats", body = BackendWithStats), (status = 404, description = "no such backend", body = ErrorBody)))]
async fn get_backend(
    State(node): Node,
    Path(name): Path<String>,
) -> Result<Json<BackendWithStats>, ApiError> {
    let (mut model, _) = node.model();
    let backend = model
        .backends
        .remove(&name)
        .ok_or_else(|| ApiError::not_found(format!("backend {name:?} does not exist")))?;
    Ok(Json(with_stats(node.as_ref(), backend)))
}

#[utoipa::path(put, path = "/v1/backends/{name}", tag = "model", security(("token" = [])), params(("name" = String, Path, description = "backend name")), request_body = Backend, responses((status = 200, description = "committed; the new revision", body = Revision), WriteErrors))]
async fn put_backend(
    State(node): Node,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Revision>, ApiError> {
    commit_write(node.as_ref(), || {
        let backend: Backend = decode_value(with_name(json_value(body)?, &name)?)?;
        Ok(Command::PutBackend { backend })
    })
    .await
}

#[utoipa::path(delete, path = "/v1/backends/{name}", tag = "model", security(("token" = [])), params(("name" = String, Path, description = "backend name")), responses((status = 200, description = "committed; the new revision", body = Revision), WriteErrors))]
async fn delete_backend(
    State(node): Node,
    Path(name): Path<String>,
) -> Result<Json<Revision>, ApiError> {
    commit_write(node.as_ref(), || Ok(Command::DeleteBackend { name })).await
}

#[utoipa::path(put, path = "/v1/backends/{backend}/servers/{server}", tag = "model", security(("token" = [])), params(("backend" = String, Path, description = "backend name"), ("server" = String, Path, description = "server name")), request_body = Server, responses((status = 200, description = "committed; the new revision", body = Revision), WriteErrors))]
async fn put_server(
    State(node): Node,
    Path((backend, name)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Revision>, ApiError> {
    commit_write(node.as_ref(), || {
        let server: Server = decode_value(with_name(json_value(body)?, &name)?)?;
        Ok(Command::PutServer { backend, server })
    })
    .await
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeleteServerQuery {
    /// Also close the server's established connections (default: they stay until they
    /// end by themselves).
    #[serde(default)]
    shutdown: bool,
}

#[utoipa::path(delete, path = "/v1/backends/{backend}/servers/{server}", tag = "model", security(("token" = [])), params(("backend" = String, Path, description = "backend name"), ("server" = String, Path, description = "server name"), DeleteServerQuery), responses((status = 200, description = "committed; the new revision", body = Revision), WriteErrors))]
async fn delete_server(
    State(node): Node,
    Path((backend, server)): Path<(String, String)>,
    query: Result<Query<DeleteServerQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Revision>, ApiError> {
    commit_write(node.as_ref(), || {
        let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
        Ok(Command::DeleteServer {
            backend,
            server,
            shutdown: query.shutdown,
        })
    })
    .await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AdminBody {
    admin: AdminState,
}

#[utoipa::path(post, path = "/v1/backends/{backend}/servers/{server}/state", tag = "model", security(("token" = [])), params(("backend" = String, Path, description = "backend name"), ("server" = String, Path, description = "server name")), request_body = AdminBody, responses((status = 200, description = "committed; the new revision", body = Revision), WriteErrors))]
async fn set_admin(
    State(node): Node,
    Path((backend, server)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Revision>, ApiError> {
    commit_write(node.as_ref(), || {
        let AdminBody { admin } = decode_body(body)?;
        Ok(Command::SetAdmin {
            backend,
            server,
            admin,
        })
    })
    .await
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ApplyQuery {
    #[serde(default)]
    dry_run: bool,
}

/// The whole model (the config file's `frontend` and `backend` lists, as JSON), applied
/// as one change; answers the diff.
#[utoipa::path(post, path = "/v1/apply", tag = "model", security(("token" = [])), params(ApplyQuery), request_body = ModelSpec, responses((status = 200, description = "the diff, and the new revision unless dry_run", body = Applied), WriteErrors))]
async fn apply(
    State(node): Node,
    query: Result<Query<ApplyQuery>, axum::extract::rejection::QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Applied>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let spec: ModelSpec = decode_body(body)?;
    let next = ClusterModel::from_spec(spec).map_err(|errors| {
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        ApiError::bad_request(text.join("; "))
    })?;
    let (current, revision) = node.model();
    let diff = current.diff(&next);
    if query.dry_run || diff.is_empty() {
        return Ok(Json(Applied {
            dry_run: query.dry_run,
            revision,
            diff,
        }));
    }
    let revision = commit(node.as_ref(), Command::ReplaceModel { model: next }).await?;
    Ok(Json(Applied {
        dry_run: false,
        revision,
        diff,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct MemberBody {
    id: u64,
    #[schema(value_type = String, example = "198.18.0.14:9091")]
    raft: std::net::SocketAddr,
    #[schema(value_type = String, example = "198.18.0.14:9090")]
    api: std::net::SocketAddr,
    #[serde(default)]
    role: Role,
}

#[utoipa::path(post, path = "/v1/members", tag = "cluster", security(("token" = [])), request_body = MemberBody, responses((status = 200, description = "added", body = MemberAdded), WriteErrors))]
async fn add_member(
    State(node): Node,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<MemberAdded>, ApiError> {
    let m: MemberBody = decode_body(body)?;
    let member = Member {
        raft: m.raft.to_string(),
        api: m.api.to_string(),
        role: m.role,
    };
    node.change_membership(MembershipChange::Add { id: m.id, member })
        .await?;
    Ok(Json(MemberAdded { added: m.id }))
}

#[utoipa::path(delete, path = "/v1/members/{id}", tag = "cluster", security(("token" = [])), params(("id" = u64, Path, description = "node id")), responses((status = 200, description = "removed", body = MemberRemoved), WriteErrors))]
async fn remove_member(
    State(node): Node,
    Path(id): Path<u64>,
) -> Result<Json<MemberRemoved>, ApiError> {
    node.change_membership(MembershipChange::Remove { id })
        .await?;
    Ok(Json(MemberRemoved { removed: id }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct DrillBody {
    /// The lb node to hand the VIP to; the fittest one when absent.
    to: Option<u64>,
}

#[utoipa::path(post, path = "/v1/drills/failover", tag = "drills", security(("token" = [])), request_body(content = DrillBody, description = "optional"), responses((status = 202, description = "started", body = DrillStarted), WriteErrors))]
async fn start_drill(
    State(node): Node,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<DrillStarted>), ApiError> {
    let body: DrillBody = match &body {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => DrillBody::default(),
        _ => decode_body(body)?,
    };
    let started = node.start_drill(body.to).await?;
    Ok((StatusCode::ACCEPTED, Json(started)))
}

#[utoipa::path(get, path = "/v1/drills", tag = "drills", responses((status = 200, description = "failover records, newest first", body = DrillList)))]
async fn list_drills(State(node): Node) -> Json<DrillList> {
    Json(node.drills())
}

#[utoipa::path(get, path = "/v1/drills/{id}", tag = "drills", params(("id" = u64, Path, description = "drill id")), responses((status = 200, description = "the report: timeline, figures, both nodes' tables", body = DrillReport), (status = 404, description = "no such drill", body = ErrorBody)))]
async fn get_drill(State(node): Node, Path(id): Path<u64>) -> Result<Json<DrillReport>, ApiError> {
    node.drill(id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("drill {id} does not exist")))
}

#[utoipa::path(post, path = "/v1/node/upgrade", tag = "node", security(("token" = [])), responses((status = 200, description = "the new process serves everything this one did; this one exits within a second", body = types::UpgradeReport), (status = 409, description = "an upgrade is already in progress", body = ErrorBody), (status = 503, description = "the upgrade did not happen (new binary missing, failed its check, crashed or did not confirm): this process serves on", body = ErrorBody), (status = 401, description = "missing or wrong token", body = ErrorBody)))]
async fn upgrade(State(node): Node) -> Result<Json<types::UpgradeReport>, ApiError> {
    node.upgrade().await.map(Json)
}

/// The bearer token scheme writes use.
struct TokenScheme;

impl utoipa::Modify for TokenScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document, generated from the handlers and model types above.
#[derive(OpenApi)]
#[openapi(
    info(title = "Ballast API", description = "Live changes to a Ballast cluster: every write is committed through Raft and answers the new revision."),
    paths(
        healthz, readyz, metrics, status, openapi_json,
        list_frontends, get_frontend, put_frontend, delete_frontend,
        list_backends, get_backend, put_backend, delete_backend,
        put_server, delete_server, set_admin, apply,
        stick_page, stick_import, stick_forget_all, stick_forget_one,
        add_member, remove_member,
        start_drill, list_drills, get_drill,
        upgrade
    ),
    components(schemas(ErrorBody, ErrorDetail, StickImport, StickImportEntry, AdminBody, MemberBody, DrillBody, ModelSpec, Frontend, Backend, Server)),
    modifiers(&TokenScheme)
)]
pub struct ApiDoc;

#[utoipa::path(get, path = "/v1/openapi.json", tag = "probes", responses((status = 200, description = "this document (OpenAPI 3.1)", body = Object)))]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    pub(crate) struct Fake {
        ready: AtomicBool,
        pub(crate) proposals: parking_lot::Mutex<Vec<Command>>,
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
        fn status(&self) -> types::Status {
            types::Status {
                node_id: 1,
                role: Role::Lb,
                revision: 7,
                caught_up: true,
                lag_entries: Some(0),
                raft: types::RaftStatus {
                    node_id: 1,
                    state: "Leader".into(),
                    leader: Some(1),
                    term: 1,
                    last_log_index: Some(7),
                    last_applied: Some(7),
                    snapshot_index: None,
                    members: Default::default(),
                    voters: Default::default(),
                    revision: 7,
                },
                journal_pending: Some(0),
                health: Default::default(),
                vrrp: None,
                tracked_conditions_failing: Some(vec![types::Condition::Yielded]),
                yielded: true,
                process: types::ProcessInfo {
                    pid: 42,
                    started_at: 1,
                    version: "0.0.0".into(),
                    binary: "/usr/bin/ballast".into(),
                    upgrades: 0,
                    last_upgrade: None,
                },
            }
        }
        fn stick_page(&self, backend: &str, _: &StickQuery) -> Result<StickPage, ApiError> {
            if backend == "b" {
                Ok(StickPage {
                    backend: backend.into(),
                    total: 0,
                    revision: 7,
                    entries: Vec::new(),
                })
            } else {
                Err(ApiError::not_found(format!(
                    "backend {backend:?} does not exist"
                )))
            }
        }
        fn write_token(&self) -> Option<Arc<[u8]>> {
            Some(Arc::from(&b"sekrit"[..]))
        }
        fn node_id(&self) -> u64 {
            1
        }
        fn model(&self) -> (ClusterModel, u64) {
            (ClusterModel::default(), 7)
        }
        fn backend_stats(&self, _: &str) -> Option<BackendStats> {
            None
        }
        fn change_membership(
            &self,
            _: MembershipChange,
        ) -> BoxFuture<'_, Result<(), ProposeError>> {
            Box::pin(async { Err(ProposeError::Unavailable("no quorum".into())) })
        }
        fn start_drill(&self, to: Option<u64>) -> BoxFuture<'_, Result<DrillStarted, ApiError>> {
            Box::pin(async move {
                match to {
                    Some(3) => Err(ApiError::conflict("node 3 is a witness")),
                    to => Ok(DrillStarted {
                        id: 9,
                        from: 1,
                        to: to.unwrap_or(2),
                        state: types::DrillState::Running,
                    }),
                }
            })
        }
        fn drills(&self) -> DrillList {
            DrillList {
                drills: self.drill(9).into_iter().map(Into::into).collect(),
            }
        }
        fn drill(&self, id: u64) -> Option<DrillReport> {
            (id == 9).then(|| DrillReport {
                id: 9,
                kind: types::DrillKind::Planned,
                from: Some(1),
                to: 2,
                state: types::DrillState::Done,
                started_ms: 1_000,
                timeline: Vec::new(),
                figures: types::Figures {
                    vip_released_ms: Some(40),
                    became_master_ms: Some(60),
                    garp_ms: Some(61),
                    first_connection_ms: None,
                    leader_moved_ms: Some(90),
                    stick_entries_lost: Some(0),
                    stick_entries_not_mirrored: Some(0),
                    revision_gap: Some(0),
                },
                missing: vec!["first_connection".into()],
                nodes: Default::default(),
            })
        }
        fn upgrade(&self) -> BoxFuture<'_, Result<types::UpgradeReport, ApiError>> {
            Box::pin(async { Err(ApiError::unavailable("upgrade failed: no new binary")) })
        }
        fn propose(
            &self,
            command: Command,
        ) -> BoxFuture<'_, Result<state::Response, ProposeError>> {
            let conflict =
                matches!(&command, Command::ForgetStick { backend, .. } if backend == "busy");
            self.proposals.lock().push(command);
            Box::pin(async move {
                Ok(state::Response {
                    revision: 7,
                    error: conflict.then(|| (state::ErrorCode::Conflict, "busy".to_string())),
                })
            })
        }
    }

    async fn request(addr: std::net::SocketAddr, head: &str, body: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "{head}\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    pub(crate) fn fake() -> Arc<Fake> {
        Arc::new(Fake {
            ready: AtomicBool::new(false),
            proposals: parking_lot::Mutex::new(Vec::new()),
        })
    }

    pub(crate) async fn start() -> (std::net::SocketAddr, Arc<Fake>) {
        start_with(Limits::default()).await
    }

    pub(crate) async fn start_with(limits: Limits) -> (std::net::SocketAddr, Arc<Fake>) {
        let fake = fake();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve_with(
            listener,
            fake.clone(),
            limits,
            std::future::pending(),
        ));
        (addr, fake)
    }

    /// Sends `bytes` and reads until the server closes, at the same time: the server
    /// may answer and close before taking everything (then the write's broken pipe is
    /// expected). Panics when the server has not closed `within`.
    pub(crate) async fn exchange(
        addr: std::net::SocketAddr,
        bytes: &[u8],
        within: std::time::Duration,
    ) -> String {
        let (mut rx, mut tx) = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap()
            .into_split();
        let bytes = bytes.to_vec();
        let writer = tokio::spawn(async move {
            let _ = tx.write_all(&bytes).await;
            // Keep the write side open: a half-close would end the request early.
            std::future::pending::<()>().await;
            drop(tx);
        });
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        let read = tokio::time::timeout(within, async {
            while let Ok(n) = rx.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                answer.extend_from_slice(&buf[..n]);
            }
        })
        .await;
        writer.abort();
        let answer = String::from_utf8_lossy(&answer).into_owned();
        assert!(
            read.is_ok(),
            "the server did not close the connection within {within:?}; it sent: {answer:?}"
        );
        answer
    }

    #[tokio::test]
    async fn probes_and_design_error_shape() {
        let (addr, fake) = start().await;
        assert!(request(addr, "GET /healthz HTTP/1.1", "")
            .await
            .starts_with("HTTP/1.1 200"));
        let not_ready = request(addr, "GET /readyz HTTP/1.1", "").await;
        assert!(not_ready.starts_with("HTTP/1.1 503"), "{not_ready}");
        assert!(not_ready
            .contains(r#"{"error":{"code":"not_ready","message":"listeners not bound yet"}}"#));
        fake.ready.store(true, Ordering::Relaxed);
        assert!(request(addr, "GET /readyz HTTP/1.1", "")
            .await
            .starts_with("HTTP/1.1 200"));
        let metrics = request(addr, "GET /metrics HTTP/1.1", "").await;
        assert!(
            metrics.contains("application/openmetrics-text") && metrics.contains("ballast_up 1")
        );
        let missing = request(addr, "GET /nope HTTP/1.1", "").await;
        assert!(missing.starts_with("HTTP/1.1 404") && missing.contains(r#""code":"not_found""#));
        let unknown = request(addr, "GET /v1/backends/x/stick HTTP/1.1", "").await;
        assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");
        let bad_limit = request(addr, "GET /v1/backends/b/stick?limit=0 HTTP/1.1", "").await;
        assert!(bad_limit.starts_with("HTTP/1.1 400"), "{bad_limit}");
        let bad_key = request(addr, "GET /v1/backends/b/stick?key=nope HTTP/1.1", "").await;
        assert!(bad_key.starts_with("HTTP/1.1 400"), "{bad_key}");
    }

    #[tokio::test]
    async fn writes_need_the_token() {
        let (addr, fake) = start().await;
        let body = r#"{"entries":[{"key":"127.0.0.1","server":"s1"}]}"#;
        let no_token = request(addr, "POST /v1/backends/b/stick HTTP/1.1", body).await;
        assert!(no_token.starts_with("HTTP/1.1 401"), "{no_token}");
        let wrong = request(
            addr,
            "POST /v1/backends/b/stick HTTP/1.1\r\nAuthorization: Bearer guess",
            body,
        )
        .await;
        assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
        assert!(fake.proposals.lock().is_empty());
        let ok = request(
            addr,
            "POST /v1/backends/b/stick HTTP/1.1\r\nAuthorization: Bearer sekrit",
            body,
        )
        .await;
        assert!(
            ok.starts_with("HTTP/1.1 200") && ok.contains(r#""revision":7"#),
            "{ok}"
        );
        assert_eq!(fake.proposals.lock().len(), 1);
    }

    #[tokio::test]
    async fn bad_bodies_and_conflicts_map_to_4xx() {
        let (addr, _) = start().await;
        let auth = "\r\nAuthorization: Bearer sekrit";
        let malformed = request(
            addr,
            &format!("POST /v1/backends/b/stick HTTP/1.1{auth}"),
            "{",
        )
        .await;
        assert!(malformed.starts_with("HTTP/1.1 400"), "{malformed}");
        let unknown_field = request(
            addr,
            &format!("POST /v1/backends/b/stick HTTP/1.1{auth}"),
            r#"{"entries":[],"extra":1}"#,
        )
        .await;
        assert!(
            unknown_field.starts_with("HTTP/1.1 422") || unknown_field.starts_with("HTTP/1.1 400"),
            "{unknown_field}"
        );
        assert!(unknown_field.contains("extra"), "{unknown_field}");
        let conflict = request(
            addr,
            &format!("DELETE /v1/backends/busy/stick HTTP/1.1{auth}"),
            "",
        )
        .await;
        assert!(
            conflict.starts_with("HTTP/1.1 409") && conflict.contains(r#""code":"conflict""#),
            "{conflict}"
        );
        let bad_key = request(
            addr,
            &format!("DELETE /v1/backends/b/stick/nope HTTP/1.1{auth}"),
            "",
        )
        .await;
        assert!(bad_key.starts_with("HTTP/1.1 400"), "{bad_key}");
    }

    #[tokio::test]
    async fn model_bodies_are_checked_field_by_field() {
        let (addr, fake) = start().await;
        let auth = "\r\nAuthorization: Bearer sekrit";
        let wrong_type = request(
            addr,
            &format!("PUT /v1/backends/b/servers/s1 HTTP/1.1{auth}"),
            r#"{"addr":"127.0.0.1:7001","weight":"heavy"}"#,
        )
        .await;
        assert!(
            wrong_type.starts_with("HTTP/1.1 400") && wrong_type.contains("field `weight`"),
            "{wrong_type}"
        );
        let unknown = request(
            addr,
            &format!("PUT /v1/frontends/f HTTP/1.1{auth}"),
            r#"{"bind":["127.0.0.1:8001"],"backend":"b","colour":"red"}"#,
        )
        .await;
        assert!(
            unknown.starts_with("HTTP/1.1 400") && unknown.contains("colour"),
            "{unknown}"
        );
        let renamed = request(
            addr,
            &format!("PUT /v1/frontends/f HTTP/1.1{auth}"),
            r#"{"name":"g","bind":["127.0.0.1:8001"],"backend":"b"}"#,
        )
        .await;
        assert!(
            renamed.starts_with("HTTP/1.1 400") && renamed.contains("field `name`"),
            "{renamed}"
        );
        let bad_admin = request(
            addr,
            &format!("POST /v1/backends/b/servers/s1/state HTTP/1.1{auth}"),
            r#"{"admin":"sleep"}"#,
        )
        .await;
        assert!(
            bad_admin.starts_with("HTTP/1.1 400") && bad_admin.contains("field `admin`"),
            "{bad_admin}"
        );
        assert!(
            fake.proposals.lock().is_empty(),
            "nothing invalid was proposed"
        );
        let ok = request(
            addr,
            &format!("POST /v1/backends/b/servers/s1/state HTTP/1.1{auth}"),
            r#"{"admin":"drain"}"#,
        )
        .await;
        assert!(
            ok.starts_with("HTTP/1.1 200") && ok.contains(r#""revision":7"#),
            "{ok}"
        );
        // The server answers 413 and closes while the body is still being sent.
        let mut big = format!(
            "POST /v1/apply HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer sekrit\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            17 << 20
        )
        .into_bytes();
        big.extend_from_slice(&vec![b'x'; 17 << 20]);
        let too_big = exchange(addr, &big, std::time::Duration::from_secs(30)).await;
        assert!(too_big.starts_with("HTTP/1.1 413"), "{too_big}");
        let no_quorum = request(
            addr,
            &format!("POST /v1/members HTTP/1.1{auth}"),
            r#"{"id":4,"raft":"127.0.0.1:1","api":"127.0.0.1:2"}"#,
        )
        .await;
        assert!(
            no_quorum.starts_with("HTTP/1.1 503") && no_quorum.contains(r#""code":"unavailable""#),
            "{no_quorum}"
        );
        // Passing, so the answer says when to come back.
        assert!(
            no_quorum
                .to_ascii_lowercase()
                .contains("retry-after: 1\r\n"),
            "{no_quorum}"
        );
    }

    #[tokio::test]
    async fn drills_start_with_a_token_refuse_with_409_and_report_by_id() {
        let (addr, _) = start().await;
        let auth = "Authorization: Bearer sekrit";
        let post = |body: &'static str, with_token: bool| {
            let head = if with_token {
                format!("POST /v1/drills/failover HTTP/1.1\r\n{auth}")
            } else {
                "POST /v1/drills/failover HTTP/1.1".to_string()
            };
            async move { request(addr, &head, body).await }
        };
        assert!(post(r#"{"to":2}"#, false).await.starts_with("HTTP/1.1 401"));
        let started = post(r#"{"to":2}"#, true).await;
        assert!(started.starts_with("HTTP/1.1 202"), "{started}");
        assert!(started.contains(r#""id":9"#), "{started}");
        // No body: the node picks the target.
        assert!(post("", true).await.starts_with("HTTP/1.1 202"));
        let refused = post(r#"{"to":3}"#, true).await;
        assert!(
            refused.starts_with("HTTP/1.1 409") && refused.contains(r#""code":"conflict""#),
            "{refused}"
        );
        let typo = post(r#"{"too":2}"#, true).await;
        assert!(typo.starts_with("HTTP/1.1 400"), "{typo}");
        let report = request(addr, "GET /v1/drills/9 HTTP/1.1", "").await;
        assert!(report.contains(r#""state":"done""#), "{report}");
        assert!(request(addr, "GET /v1/drills/8 HTTP/1.1", "")
            .await
            .starts_with("HTTP/1.1 404"));
        assert!(request(addr, "GET /v1/drills HTTP/1.1", "")
            .await
            .contains(r#""drills":[{"id":9,"#));
    }

    #[test]
    fn the_openapi_document_covers_every_route() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for path in [
            "/v1/status",
            "/v1/frontends/{name}",
            "/v1/backends/{backend}/servers/{server}/state",
            "/v1/apply",
            "/v1/backends/{backend}/stick",
            "/v1/members/{id}",
            "/v1/drills/failover",
            "/v1/drills/{id}",
        ] {
            assert!(paths.contains_key(path), "missing {path}");
        }
        for (path, method) in [("/v1/apply", "post"), ("/v1/drills/failover", "post")] {
            let responses = &doc["paths"][path][method]["responses"];
            for code in ["400", "401", "404", "408", "409", "413", "503"] {
                assert!(responses[code].is_object(), "{path}: no {code} answer");
            }
        }
        let server = &doc["components"]["schemas"]["Server"];
        assert_eq!(server["properties"]["addr"]["type"], "string");
        assert!(server["required"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r == "name" || r == "addr"));
        assert!(doc["components"]["securitySchemes"]["token"].is_object());
    }

    #[test]
    fn every_json_answer_names_its_body_type() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let mut answers = 0;
        for (path, methods) in doc["paths"].as_object().unwrap() {
            for (method, op) in methods.as_object().unwrap() {
                for (code, answer) in op["responses"].as_object().unwrap() {
                    let Some(schema) = answer["content"]["application/json"]["schema"].as_object()
                    else {
                        continue;
                    };
                    answers += 1;
                    if path == "/v1/openapi.json" {
                        continue;
                    }
                    let named = schema.contains_key("$ref");
                    assert!(named, "{method} {path} {code}: {schema:?}");
                    let name = schema["$ref"].as_str().unwrap().rsplit('/').next().unwrap();
                    assert!(
                        doc["components"]["schemas"][name].is_object(),
                        "{method} {path} {code}: no schema {name}"
                    );
                }
            }
        }
        assert!(answers > 40, "{answers}");
        let status = &doc["components"]["schemas"]["Status"];
        assert!(status["properties"]["vrrp"].is_object(), "{status}");
        let state = &doc["components"]["schemas"]["VrrpState"];
        assert_eq!(
            state["enum"],
            serde_json::json!(["initialize", "backup", "master"])
        );
        let condition = &doc["components"]["schemas"]["Condition"];
        assert!(
            condition["enum"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!("yielded in a failover drill")),
            "{condition}"
        );
    }

    #[test]
    fn typed_answers_read_back_as_they_were_sent() {
        let fake = Fake {
            ready: AtomicBool::new(true),
            proposals: parking_lot::Mutex::new(Vec::new()),
        };
        let status = fake.status();
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(
            json["tracked_conditions_failing"],
            serde_json::json!(["yielded in a failover drill"])
        );
        assert_eq!(json["role"], "lb");
        assert!(json["vrrp"].is_null() && json["raft"]["state"] == "Leader");
        assert_eq!(
            serde_json::from_value::<types::Status>(json).unwrap(),
            status
        );
        let report = fake.drill(9).unwrap();
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            (json["kind"].as_str(), json["state"].as_str()),
            (Some("planned"), Some("done"))
        );
        assert_eq!(serde_json::from_value::<DrillReport>(json).unwrap(), report);
        let backend: Backend = serde_json::from_str(
            r#"{"name":"b","servers":[{"name":"s1","addr":"127.0.0.1:7001"}]}"#,
        )
        .unwrap();
        let with = BackendWithStats {
            backend: backend.clone(),
            stats: Some(BackendStats {
                node_id: 1,
                servers: vec![types::ServerStats {
                    name: "s1".into(),
                    up: true,
                    admin: AdminState::Ready,
                    connections: 2,
                }],
            }),
        };
        let json = serde_json::to_value(&with).unwrap();
        assert_eq!(json["name"], "b");
        assert_eq!(json["stats"]["servers"][0]["connections"], 2);
        assert_eq!(
            serde_json::from_value::<BackendWithStats>(json).unwrap(),
            with
        );
        let bare = serde_json::to_value(BackendWithStats {
            backend,
            stats: None,
        })
        .unwrap();
        assert!(bare.get("stats").is_none(), "{bare}");
    }

    #[tokio::test]
    async fn apply_answers_the_diff_and_dry_run_commits_nothing() {
        let (addr, fake) = start().await;
        let auth = "\r\nAuthorization: Bearer sekrit";
        let spec = r#"{"frontend":[{"name":"f","bind":["127.0.0.1:8001"],"backend":"b"}],
                       "backend":[{"name":"b","servers":[{"name":"s1","addr":"127.0.0.1:7001"}]}]}"#;
        let dry = request(
            addr,
            &format!("POST /v1/apply?dry_run=true HTTP/1.1{auth}"),
            spec,
        )
        .await;
        assert!(
            dry.starts_with("HTTP/1.1 200") && dry.contains(r#""added":["f"]"#),
            "{dry}"
        );
        assert!(fake.proposals.lock().is_empty());
        let real = request(addr, &format!("POST /v1/apply HTTP/1.1{auth}"), spec).await;
        assert!(real.starts_with("HTTP/1.1 200"), "{real}");
        assert!(matches!(
            fake.proposals.lock()[0],
            Command::ReplaceModel { .. }
        ));
        let invalid = request(
            addr,
            &format!("POST /v1/apply HTTP/1.1{auth}"),
            r#"{"frontend":[{"name":"f","bind":["127.0.0.1:8001"],"backend":"missing"}]}"#,
        )
        .await;
        assert!(
            invalid.starts_with("HTTP/1.1 400") && invalid.contains("unknown backend"),
            "{invalid}"
        );
    }
}
