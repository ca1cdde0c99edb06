//! `ballast ctl`: the REST API from a shell.
//!
//! A thin, blocking client (`ureq`; the ctl runs outside tokio): each command is one or two
//! HTTP requests to a node's `api_listen`, rendered as aligned tables (or, with `--json`,
//! the API's JSON as is). Writes carry `Authorization: Bearer <token>` read from
//! `--token-file`; an unreachable node, a refused token or an API error is printed as one
//! clear line on stderr and the process exits 1.
//!
//! ```text
//!   ballast ctl drain b/s1 ──POST /v1/backends/b/servers/s1/state {"admin":"drain"}──▶ node
//!                          ◀── {"revision":42}  (after the Raft commit)
//!   prints "b/s1: admin drain (revision 42)"
//! ```
//!
//! Rendering is pure (JSON in, text out) and unit-tested; the HTTP part is exercised by the
//! end-to-end tests against a real node.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value;

pub const DEFAULT_API: &str = "http://127.0.0.1:9090";

/// Longest wait for an answer. Writes answer after the commit (or 503 without quorum
/// within seconds); adding a member waits for it to catch up, so allow a minute.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// `ballast ctl [--api URL] [--token-file F] [--json] COMMAND`.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The node's API (its `api_listen`), e.g. http://127.0.0.1:9090. Goes before the
    /// command (`members add` has an `--api` of its own).
    #[arg(long, env = "BALLAST_API", default_value = DEFAULT_API)]
    pub api: String,
    /// File holding the API token (the node's `token_file`); needed for changes.
    #[arg(long, env = "BALLAST_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// Print the API's JSON answer instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum CtlCommand {
    /// Node, Raft membership, VRRP and replicated health.
    Status,
    /// Every backend, with live figures from this node.
    Backends,
    /// Every frontend and its binds.
    Frontends,
    /// The servers of one backend: address, weight, admin state, health, connections.
    Servers { backend: String },
    /// Admin `drain`: no new clients; clients stuck to it still land there.
    Drain {
        #[arg(value_name = "BACKEND/SERVER", value_parser = parse_server_ref)]
        server: ServerRef,
    },
    /// Admin `ready`: back in service.
    Enable {
        #[arg(value_name = "BACKEND/SERVER", value_parser = parse_server_ref)]
        server: ServerRef,
    },
    /// Admin `maint`: nothing new lands there; its clients move on their next connection.
    Maint {
        #[arg(value_name = "BACKEND/SERVER", value_parser = parse_server_ref)]
        server: ServerRef,
    },
    /// Stick entries of a backend, in key order (one page).
    Stick {
        backend: String,
        /// Only this client's entry.
        #[arg(long, value_name = "IP")]
        key: Option<IpAddr>,
        /// Start after this key (the next page).
        #[arg(long, value_name = "IP")]
        after: Option<IpAddr>,
        /// Entries per page (1-10000; the node's default is 1000).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Apply a config file's frontends and backends as one change; prints the diff.
    Apply {
        /// A ballast config file (TOML); only its [[frontend]] and [[backend]] are sent.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        /// Show the diff without committing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Forget one client's stick entry, or without IP every entry of the backend.
    Forget {
        backend: String,
        key: Option<IpAddr>,
    },
    /// Add or remove a cluster member.
    #[command(subcommand)]
    Members(MembersCommand),
    /// Failover drills: hand the VIP to another lb node and report what happened.
    #[command(subcommand)]
    Drill(DrillCommand),
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum DrillCommand {
    /// Hand the VIP to another lb node, then wait for and print the report. Exits
    /// non-zero when the drill is refused (the reason is printed) or does not finish.
    Failover {
        /// The lb node to hand over to; the fittest backup when absent.
        #[arg(long)]
        to: Option<u64>,
        /// Print the drill id and return at once.
        #[arg(long)]
        no_wait: bool,
    },
    /// Past drills and unplanned takeovers, newest first.
    List,
    /// One drill's report.
    Show { id: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum MembersCommand {
    /// Add a node (started with `[cluster] join = true`) to the cluster.
    Add {
        /// Its node id (`[node] id`).
        #[arg(long)]
        id: u64,
        /// Its Raft address (`raft_listen`).
        #[arg(long, value_name = "ADDR")]
        raft: SocketAddr,
        /// Its API address (`api_listen`).
        #[arg(long, value_name = "ADDR")]
        api: SocketAddr,
        /// `lb` (proxy + VRRP + Raft voter) or `witness` (Raft and API only).
        #[arg(long, value_parser = ["lb", "witness"], default_value = "lb")]
        role: String,
    },
    /// Remove a node from the cluster.
    Remove { id: u64 },
}

/// `backend/server`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRef {
    pub backend: String,
    pub server: String,
}

impl fmt::Display for ServerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.backend, self.server)
    }
}

pub fn parse_server_ref(text: &str) -> Result<ServerRef, String> {
    match text.split_once('/') {
        Some((b, s)) if !b.is_empty() && !s.is_empty() && !s.contains('/') => Ok(ServerRef {
            backend: b.to_string(),
            server: s.to_string(),
        }),
        _ => Err(format!(
            "expected BACKEND/SERVER (e.g. tcp_back/server1), got {text:?}"
        )),
    }
}

/// Everything that makes a ctl command fail; each prints as one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CtlError {
    /// Connection refused, DNS, ...: the node was not reached.
    Unreachable { api: String, detail: String },
    /// The node took the request but did not answer within [`ANSWER_TIMEOUT`].
    NoAnswer { api: String, detail: String },
    /// The API answered with its error shape.
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// An answer that is not the API's (a proxy in between, a wrong port).
    Http { status: u16, body: String },
    /// Anything on this side: a missing token, a bad URL.
    Local(String),
    /// The config file given to `apply` is invalid: `ballast check`'s report, as is
    /// (one `error: FILE:LINE: ...` line per problem).
    Config(String),
}

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CtlError::Unreachable { api, detail } => {
                write!(f, "cannot reach the API at {api}: {detail}")
            }
            CtlError::NoAnswer { api, detail } => write!(
                f,
                "no answer from the API at {api} within {} s ({detail}); a change may \
                 still be applied: check with `ballast ctl status`",
                ANSWER_TIMEOUT.as_secs()
            ),
            CtlError::Api {
                status,
                code,
                message,
            } => {
                write!(f, "{code}: {message} (HTTP {status})")?;
                if *status == 401 {
                    write!(f, "; pass the node's token with --token-file")?;
                }
                Ok(())
            }
            CtlError::Http { status, body } => {
                write!(f, "unexpected answer HTTP {status}: {body}")
            }
            CtlError::Local(message) => f.write_str(message),
            CtlError::Config(report) => f.write_str(report.trim_end()),
        }
    }
}

impl std::error::Error for CtlError {}

/// Runs one ctl command, printing its result on stdout (errors on stderr).
pub fn run(args: CtlArgs) -> ExitCode {
    match execute(&args) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(CtlError::Config(report)) => {
            eprintln!("{}", report.trim_end());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the command and returns what to print.
pub fn execute(args: &CtlArgs) -> Result<String, CtlError> {
    let client = Client::new(&args.api, args.token_file.as_deref(), ANSWER_TIMEOUT)?;
    let json = args.json;
    let out = |value: Value, render: &dyn Fn(&Value) -> String| {
        if json {
            pretty(&value)
        } else {
            render(&value)
        }
    };
    Ok(match &args.command {
        CtlCommand::Status => out(client.get("/v1/status", &[])?, &render_status),
        CtlCommand::Backends => out(client.get("/v1/backends", &[])?, &render_backends),
        CtlCommand::Frontends => out(client.get("/v1/frontends", &[])?, &render_frontends),
        CtlCommand::Servers { backend } => out(
            client.get(&format!("/v1/backends/{}", segment(backend)), &[])?,
            &render_servers,
        ),
        CtlCommand::Drain { server } => set_admin(&client, server, "drain", json)?,
        CtlCommand::Enable { server } => set_admin(&client, server, "ready", json)?,
        CtlCommand::Maint { server } => set_admin(&client, server, "maint", json)?,
        CtlCommand::Stick {
            backend,
            key,
            after,
            limit,
        } => {
            let mut query = Vec::new();
            if let Some(key) = key {
                query.push(("key", key.to_string()));
            }
            if let Some(after) = after {
                query.push(("after", after.to_string()));
            }
            if let Some(limit) = limit {
                query.push(("limit", limit.to_string()));
            }
            let page = client.get(&format!("/v1/backends/{}/stick", segment(backend)), &query)?;
            let limit = limit.unwrap_or(1_000);
            let now = now_ms();
            out(page, &|v| render_stick(v, limit, now))
        }
        CtlCommand::Apply { file, dry_run } => {
            let config = crate::config::load(file).map_err(|e| CtlError::Config(e.to_string()))?;
            let body = serde_json::to_value(config.model.to_spec())
                .map_err(|e| CtlError::Local(format!("cannot encode the model: {e}")))?;
            let query = if *dry_run {
                vec![("dry_run", "true".to_string())]
            } else {
                Vec::new()
            };
            let answer = client.write("POST", "/v1/apply", &query, Some(&body))?;
            let file = file.display().to_string();
            out(answer, &|v| render_apply(v, &file))
        }
        CtlCommand::Forget { backend, key } => {
            let path = match key {
                Some(key) => format!(
                    "/v1/backends/{}/stick/{}",
                    segment(backend),
                    segment(&key.to_string())
                ),
                None => format!("/v1/backends/{}/stick", segment(backend)),
            };
            let answer = client.write("DELETE", &path, &[], None)?;
            let what = match key {
                Some(key) => format!("forgot the stick entry of {key} in backend {backend}"),
                None => format!("forgot every stick entry of backend {backend}"),
            };
            out(answer, &|v| {
                format!("{what} (revision {})\n", num(&v["revision"]))
            })
        }
        CtlCommand::Members(MembersCommand::Add {
            id,
            raft,
            api,
            role,
        }) => {
            let body = serde_json::json!({ "id": id, "raft": raft, "api": api, "role": role });
            let answer = client.write("POST", "/v1/members", &[], Some(&body))?;
            out(answer, &|_| {
                format!("member {id} added (raft {raft}, api {api}, role {role})\n")
            })
        }
        CtlCommand::Members(MembersCommand::Remove { id }) => {
            let answer = client.write("DELETE", &format!("/v1/members/{id}"), &[], None)?;
            out(answer, &|_| format!("member {id} removed\n"))
        }
        CtlCommand::Drill(DrillCommand::Failover { to, no_wait }) => {
            let body = serde_json::json!({ "to": to });
            let started = client.write("POST", "/v1/drills/failover", &[], Some(&body))?;
            let id = started["id"].as_u64().ok_or_else(|| CtlError::Http {
                status: 202,
                body: snippet(&started.to_string()),
            })?;
            if *no_wait {
                return Ok(out(started, &|v| {
                    format!(
                        "drill {id} started: node {} -> node {}\n",
                        num(&v["from"]),
                        num(&v["to"])
                    )
                }));
            }
            let report = wait_for_drill(&client, id)?;
            let state = report["state"].as_str().unwrap_or("?").to_string();
            let text = out(report, &render_drill);
            if state != "done" {
                return Err(CtlError::Local(format!("{text}drill {id} ended {state}")));
            }
            text
        }
        CtlCommand::Drill(DrillCommand::List) => {
            out(client.get("/v1/drills", &[])?, &render_drills)
        }
        CtlCommand::Drill(DrillCommand::Show { id }) => {
            out(client.get(&format!("/v1/drills/{id}"), &[])?, &render_drill)
        }
    })
}

/// How long `drill failover` waits for the report to settle.
const DRILL_WAIT: Duration = Duration::from_secs(75);
/// After the drill is done, how long to wait for the first client connection.
const FIRST_CONNECTION_GRACE: Duration = Duration::from_secs(5);

fn wait_for_drill(client: &Client, id: u64) -> Result<Value, CtlError> {
    let start = std::time::Instant::now();
    let mut done_at = None;
    loop {
        let report = client.get(&format!("/v1/drills/{id}"), &[])?;
        let state = report["state"].as_str().unwrap_or("running");
        if state != "running" {
            let waited = *done_at.get_or_insert_with(std::time::Instant::now);
            let connected = !report["figures"]["first_connection_ms"].is_null();
            if state != "done" || connected || waited.elapsed() >= FIRST_CONNECTION_GRACE {
                return Ok(report);
            }
        }
        if start.elapsed() >= DRILL_WAIT {
            return Ok(report);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn set_admin(
    client: &Client,
    server: &ServerRef,
    admin: &str,
    json: bool,
) -> Result<String, CtlError> {
    let path = format!(
        "/v1/backends/{}/servers/{}/state",
        segment(&server.backend),
        segment(&server.server)
    );
    let answer = client.write(
        "POST",
        &path,
        &[],
        Some(&serde_json::json!({ "admin": admin })),
    )?;
    Ok(if json {
        pretty(&answer)
    } else {
        format!(
            "{server}: admin {admin} (revision {})\n",
            num(&answer["revision"])
        )
    })
}

/// The HTTP side: one agent, the base URL and (for writes) the token.
struct Client {
    base: String,
    agent: ureq::Agent,
    token_file: Option<PathBuf>,
}

impl Client {
    fn new(api: &str, token_file: Option<&Path>, timeout: Duration) -> Result<Client, CtlError> {
        Ok(Client {
            base: base_url(api)?,
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(5))
                .timeout(timeout)
                .build(),
            token_file: token_file.map(Path::to_path_buf),
        })
    }

    fn token(&self) -> Result<String, CtlError> {
        let Some(path) = &self.token_file else {
            return Err(CtlError::Local(
                "this command changes the cluster and needs the API token: pass \
                 --token-file FILE (or set BALLAST_TOKEN_FILE)"
                    .into(),
            ));
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            CtlError::Local(format!(
                "cannot read the token file {}: {e}",
                path.display()
            ))
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(CtlError::Local(format!(
                "the token file {} is empty",
                path.display()
            )));
        }
        Ok(token.to_string())
    }

    fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, CtlError> {
        self.send(self.request("GET", path, query), None)
    }

    fn write(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, CtlError> {
        let token = self.token()?;
        let request = self
            .request(method, path, query)
            .set("Authorization", &format!("Bearer {token}"));
        self.send(request, body)
    }

    fn request(&self, method: &str, path: &str, query: &[(&str, String)]) -> ureq::Request {
        let mut request = self.agent.request(method, &format!("{}{path}", self.base));
        for (k, v) in query {
            request = request.query(k, v);
        }
        request
    }

    fn send(&self, request: ureq::Request, body: Option<&Value>) -> Result<Value, CtlError> {
        let result = match body {
            Some(body) => request
                .set("Content-Type", "application/json")
                .send_string(&body.to_string()),
            None => request.call(),
        };
        match result {
            Ok(response) => {
                let status = response.status();
                let text = response.into_string().map_err(|e| CtlError::Unreachable {
                    api: self.base.clone(),
                    detail: format!("reading the answer: {e}"),
                })?;
                serde_json::from_str(&text).map_err(|_| CtlError::Http {
                    status,
                    body: snippet(&text),
                })
            }
            Err(ureq::Error::Status(status, response)) => {
                let text = response.into_string().unwrap_or_default();
                Err(api_error(status, &text))
            }
            Err(ureq::Error::Transport(transport)) => {
                let detail = transport_detail(&transport);
                let api = self.base.clone();
                // Connected, then no answer in time (not a refused or failed connect).
                let timed_out = transport.kind() == ureq::ErrorKind::Io
                    && std::error::Error::source(&transport)
                        .and_then(|e| e.downcast_ref::<std::io::Error>())
                        .is_some_and(|e| {
                            matches!(
                                e.kind(),
                                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                            )
                        });
                Err(if timed_out {
                    CtlError::NoAnswer { api, detail }
                } else {
                    CtlError::Unreachable { api, detail }
                })
            }
        }
    }
}

/// An error answer: the API's `{"error":{"code","message"}}`, or whatever came back.
pub fn api_error(status: u16, body: &str) -> CtlError {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    match parsed
        .as_ref()
        .map(|v| (&v["error"]["code"], &v["error"]["message"]))
    {
        Some((Value::String(code), Value::String(message))) => CtlError::Api {
            status,
            code: code.clone(),
            message: message.clone(),
        },
        _ => CtlError::Http {
            status,
            body: snippet(body),
        },
    }
}

/// The most specific reason: the OS error (`Connection refused (os error 111)`) if any.
fn transport_detail(t: &ureq::Transport) -> String {
    match (std::error::Error::source(t), t.message()) {
        (Some(source), _) => source.to_string(),
        (None, Some(message)) => format!("{}: {message}", t.kind()),
        (None, None) => t.kind().to_string(),
    }
}

/// `127.0.0.1:9090` and `http://127.0.0.1:9090/` both mean `http://127.0.0.1:9090`.
pub fn base_url(api: &str) -> Result<String, CtlError> {
    let api = api.trim().trim_end_matches('/');
    if api.is_empty() {
        return Err(CtlError::Local("--api is empty".into()));
    }
    match api.split_once("://") {
        None => Ok(format!("http://{api}")),
        Some(("http", rest)) if !rest.is_empty() => Ok(api.to_string()),
        Some(("https", _)) => Err(CtlError::Local(format!(
            "--api {api}: https is not supported; the node's API speaks plain HTTP (use http://)"
        ))),
        Some(_) => Err(CtlError::Local(format!(
            "--api {api}: expected http://HOST:PORT"
        ))),
    }
}

/// Percent-encodes one path segment (names are plain, but IPv6 keys have colons).
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn snippet(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

use ballast_model::time::now as now_ms;

// ---------------------------------------------------------------------------------------
// Rendering: JSON in, text out.

/// Left-aligned columns (numbers right-aligned), two spaces apart, no trailing blanks.
#[derive(Debug, Clone)]
pub struct Table {
    header: Vec<String>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            right: vec![false; header.len()],
            rows: Vec::new(),
        }
    }

    /// Right-aligns the given columns (counts, figures).
    pub fn right(mut self, columns: &[usize]) -> Table {
        for &c in columns {
            if let Some(r) = self.right.get_mut(c) {
                *r = true;
            }
        }
        self
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (c, cell) in row.iter().enumerate().take(columns) {
                widths[c] = widths[c].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (c, (&width, &right)) in widths.iter().zip(&self.right).enumerate() {
                let cell = row.get(c).map_or("", String::as_str);
                let pad = width - cell.chars().count();
                if c > 0 {
                    line.push_str("  ");
                }
                if right {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    if c + 1 < columns {
                        line.push_str(&" ".repeat(pad));
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A JSON scalar as table text; null and absent are `-`.
fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        other => other.to_string(),
    }
}

fn num(v: &Value) -> String {
    v.as_u64().map_or_else(|| text(v), |n| n.to_string())
}

/// Milliseconds as a short duration: `450ms`, `59s`, `2m5s`, `15h59m`, `3d2h`.
pub fn fmt_ms(ms: u64) -> String {
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    let units = [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ];
    let mut rest = ms;
    let mut parts = Vec::new();
    for (unit, size) in units {
        if rest >= size || !parts.is_empty() {
            parts.push((rest / size, unit));
            rest %= size;
        }
    }
    parts
        .into_iter()
        .take(2)
        .filter(|(n, _)| *n > 0)
        .map(|(n, u)| format!("{n}{u}"))
        .collect()
}

fn key_values(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect()
}

pub fn render_status(v: &Value) -> String {
    let raft = &v["raft"];
    let me = v["node_id"].as_u64();
    let leader = raft["leader"].as_u64();
    let mut pairs = vec![
        (
            "node",
            format!("{} ({})", num(&v["node_id"]), text(&v["role"])),
        ),
        ("revision", num(&v["revision"])),
        (
            "raft",
            format!(
                "{}, leader {}, term {}, last log {}, applied {}, snapshot {}",
                text(&raft["state"]),
                num(&raft["leader"]),
                num(&raft["term"]),
                num(&raft["last_log_index"]),
                num(&raft["last_applied"]),
                num(&raft["snapshot_index"]),
            ),
        ),
    ];
    if !v["caught_up"].is_null() {
        let lag = match v["lag_entries"].as_u64() {
            Some(n) => format!("{n} entries behind the leader"),
            None => "no leader reachable".into(),
        };
        let state = if v["caught_up"] == true {
            "caught up"
        } else {
            "not caught up"
        };
        pairs.push(("replica", format!("{state} ({lag})")));
    }
    if !v["journal_pending"].is_null() {
        pairs.push((
            "journal",
            format!("{} stick decisions pending", num(&v["journal_pending"])),
        ));
    }
    let vrrp = &v["vrrp"];
    pairs.push((
        "vrrp",
        if vrrp.is_object() {
            let vips: Vec<String> = vrrp["virtual_ips"]
                .as_array()
                .map(|a| a.iter().map(text).collect())
                .unwrap_or_default();
            format!(
                "{} on {} vrid {}, priority {} (effective {}), VIPs {}",
                text(&vrrp["state"]),
                text(&vrrp["interface"]),
                num(&vrrp["vrid"]),
                num(&vrrp["priority"]),
                num(&vrrp["effective_priority"]),
                if vips.is_empty() {
                    "-".into()
                } else {
                    vips.join(", ")
                }
            )
        } else {
            "off".into()
        },
    ));
    if let Some(failing) = v["tracked_conditions_failing"].as_array() {
        if !failing.is_empty() {
            let names: Vec<String> = failing.iter().map(text).collect();
            pairs.push(("failing", names.join(", ")));
        }
    }
    let mut out = key_values(&pairs);

    let voters: Vec<u64> = raft["voters"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    let mut members = Table::new(&["MEMBER", "ROLE", "VOTER", "RAFT", "API", ""]);
    if let Some(map) = raft["members"].as_object() {
        for (id, m) in map {
            let n = id.parse::<u64>().ok();
            let mut notes = Vec::new();
            if n.is_some() && n == leader {
                notes.push("leader");
            }
            if n.is_some() && n == me {
                notes.push("this node");
            }
            members.row(vec![
                id.clone(),
                text(&m["role"]),
                if n.is_some_and(|n| voters.contains(&n)) {
                    "yes"
                } else {
                    "no"
                }
                .into(),
                empty_dash(text(&m["raft"])),
                empty_dash(text(&m["api"])),
                notes.join(", "),
            ]);
        }
    }
    if !members.is_empty() {
        out.push('\n');
        out.push_str(&members.render());
    }

    let mut health = Table::new(&["BACKEND", "SERVER", "HEALTH", "ADMIN"]);
    if let Some(backends) = v["health"].as_object() {
        for (backend, servers) in backends {
            for (server, h) in servers.as_object().into_iter().flatten() {
                health.row(vec![
                    backend.clone(),
                    server.clone(),
                    match h["effective_up"].as_bool() {
                        Some(true) => "up".into(),
                        Some(false) => "down".into(),
                        None => "-".into(),
                    },
                    text(&h["admin"]),
                ]);
            }
        }
    }
    if !health.is_empty() {
        out.push('\n');
        out.push_str(&health.render());
    }
    out
}

fn empty_dash(s: String) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

/// Live figures of one backend's servers by name: (up, connections).
fn stats_by_server(backend: &Value) -> std::collections::BTreeMap<String, (Option<bool>, Value)> {
    backend["stats"]["servers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                text(&s["name"]),
                (s["up"].as_bool(), s["connections"].clone()),
            )
        })
        .collect()
}

fn stick_text(stick: &Value) -> String {
    if stick.is_object() {
        format!(
            "{} (size {}, expire {})",
            text(&stick["on"]),
            num(&stick["size"]),
            text(&stick["expire"])
        )
    } else {
        "-".into()
    }
}

fn health_text(health: &Value) -> String {
    if health.is_object() {
        format!(
            "{} every {} (timeout {}, rise {}, fall {})",
            text(&health["kind"]),
            text(&health["interval"]),
            text(&health["timeout"]),
            num(&health["rise"]),
            num(&health["fall"])
        )
    } else {
        "-".into()
    }
}

/// GET /v1/backends: one line per backend; `servers B` has the details.
pub fn render_backends(v: &Value) -> String {
    let mut table = Table::new(&[
        "BACKEND",
        "BALANCE",
        "SERVERS",
        "UP",
        "READY",
        "CONNS",
        "STICK",
        "HEALTH",
        "TIMEOUT_SERVER",
    ])
    .right(&[2, 3, 4, 5]);
    for b in v["backends"].as_array().into_iter().flatten() {
        let servers = b["servers"].as_array().cloned().unwrap_or_default();
        let stats = stats_by_server(b);
        let has_stats = b["stats"].is_object();
        let up = stats.values().filter(|(up, _)| *up == Some(true)).count();
        let conns: u64 = stats.values().filter_map(|(_, c)| c.as_u64()).sum();
        let ready = servers
            .iter()
            .filter(|s| s["admin"].as_str().unwrap_or("ready") == "ready")
            .count();
        let live = |n: String| if has_stats { n } else { "-".into() };
        table.row(vec![
            text(&b["name"]),
            text(&b["balance"]),
            servers.len().to_string(),
            live(up.to_string()),
            ready.to_string(),
            live(conns.to_string()),
            pair_or_dash(&b["stick"], "on", "expire"),
            pair_or_dash(&b["health"], "kind", "interval"),
            text(&b["timeout_server"]),
        ]);
    }
    let mut out = table.render();
    out.push_str(&format!("revision {}\n", num(&v["revision"])));
    out
}

/// `"first second"` from two fields of an optional object (a backend's `stick` or
/// `health`), `-` when the object is absent.
fn pair_or_dash(object: &Value, first: &str, second: &str) -> String {
    if object.is_object() {
        format!("{} {}", text(&object[first]), text(&object[second]))
    } else {
        "-".into()
    }
}

/// GET /v1/backends/{b}: the backend's settings, then one line per server.
pub fn render_servers(b: &Value) -> String {
    let stats = stats_by_server(b);
    let mut table = Table::new(&[
        "SERVER", "ADDR", "WEIGHT", "MAXCONN", "ADMIN", "HEALTH", "CONNS",
    ])
    .right(&[2, 3, 6]);
    for s in b["servers"].as_array().into_iter().flatten() {
        let name = text(&s["name"]);
        let (up, conns) = stats.get(&name).cloned().unwrap_or((None, Value::Null));
        table.row(vec![
            name,
            text(&s["addr"]),
            num(&s["weight"]),
            match s["maxconn"].as_u64() {
                Some(0) => "-".into(),
                _ => num(&s["maxconn"]),
            },
            text(&s["admin"]),
            match up {
                Some(true) => "up".into(),
                Some(false) => "down".into(),
                None => "-".into(),
            },
            num(&conns),
        ]);
    }
    let settings = key_values(&[
        ("backend", text(&b["name"])),
        ("balance", text(&b["balance"])),
        (
            "timeouts",
            format!(
                "server {}, connect {}, queue {}",
                text(&b["timeout_server"]),
                text(&b["timeout_connect"]),
                text(&b["timeout_queue"])
            ),
        ),
        ("stick", stick_text(&b["stick"])),
        ("health", health_text(&b["health"])),
    ]);
    format!("{settings}\n{}", table.render())
}

pub fn render_frontends(v: &Value) -> String {
    let mut table = Table::new(&["FRONTEND", "BIND", "BACKEND", "TIMEOUT_CLIENT"]);
    for f in v["frontends"].as_array().into_iter().flatten() {
        let binds: Vec<String> = f["bind"]
            .as_array()
            .map(|a| a.iter().map(text).collect())
            .unwrap_or_default();
        table.row(vec![
            text(&f["name"]),
            binds.join(", "),
            text(&f["backend"]),
            text(&f["timeout_client"]),
        ]);
    }
    let mut out = table.render();
    out.push_str(&format!("revision {}\n", num(&v["revision"])));
    out
}

/// `limit` is the page size asked for, `now_ms` the wall clock (for "last seen").
pub fn render_stick(v: &Value, limit: usize, now_ms: u64) -> String {
    let entries = v["entries"].as_array().cloned().unwrap_or_default();
    let mut table =
        Table::new(&["KEY", "SERVER", "LAST_SEEN", "OPEN_HERE", "EXPIRES_IN"]).right(&[3]);
    for e in &entries {
        table.row(vec![
            text(&e["key"]),
            text(&e["server"]),
            match e["last_seen_ms"].as_u64() {
                Some(seen) => format!("{} ago", fmt_ms(now_ms.saturating_sub(seen))),
                None => "-".into(),
            },
            num(&e["open_here"]),
            match e["expires_in_ms"].as_u64() {
                Some(ms) => fmt_ms(ms),
                None if e["open_here"].as_u64().unwrap_or(0) > 0 => "connected".into(),
                None => "-".into(),
            },
        ]);
    }
    let mut out = String::new();
    if !entries.is_empty() {
        out.push_str(&table.render());
    }
    let total = v["total"].as_u64().unwrap_or(0);
    out.push_str(&format!(
        "{} of {} entries in backend {} (revision {})\n",
        entries.len(),
        total,
        text(&v["backend"]),
        num(&v["revision"])
    ));
    if entries.len() >= limit && (entries.len() as u64) < total {
        if let Some(last) = entries.last().and_then(|e| e["key"].as_str()) {
            out.push_str(&format!(
                "next page: ballast ctl stick {} --after {last} --limit {limit}\n",
                text(&v["backend"])
            ));
        }
    }
    out
}

/// The answer of POST /v1/apply: `{"dry_run","revision","diff":{frontends,backends,servers}}`.
fn after(v: &Value) -> String {
    v.as_u64()
        .map_or_else(|| "-".to_string(), |ms| format!("+{}", fmt_ms(ms)))
}

/// One drill report: the timeline, the figures and both nodes' tables.
pub fn render_drill(v: &Value) -> String {
    let mut out = format!(
        "drill {} ({}): node {} -> node {}  {}\n\n",
        num(&v["id"]),
        text(&v["kind"]),
        num(&v["from"]),
        num(&v["to"]),
        text(&v["state"]),
    );
    let mut timeline = Table::new(&["AFTER", "NODE", "EVENT"]).right(&[0, 1]);
    for e in v["timeline"].as_array().into_iter().flatten() {
        let after_ms = e["after_ms"].as_i64().unwrap_or(0);
        let shown = if after_ms < 0 {
            format!("-{}", fmt_ms(after_ms.unsigned_abs()))
        } else {
            format!("+{}", fmt_ms(after_ms as u64))
        };
        timeline.row(vec![shown, num(&e["node"]), text(&e["event"])]);
    }
    out.push_str(&timeline.render());
    let f = &v["figures"];
    out.push_str(&format!(
        "\nVIP released {}, new master {}, gratuitous ARP {}, first connection {}, Raft leader {}\n",
        after(&f["vip_released_ms"]),
        after(&f["became_master_ms"]),
        after(&f["garp_ms"]),
        after(&f["first_connection_ms"]),
        after(&f["leader_moved_ms"]),
    ));
    out.push_str(&format!(
        "stick entries lost: {}   not mirrored on the new master: {}   revision gap: {}\n",
        text(&f["stick_entries_lost"]),
        text(&f["stick_entries_not_mirrored"]),
        text(&f["revision_gap"]),
    ));
    if let Some(nodes) = v["nodes"].as_object().filter(|n| !n.is_empty()) {
        let mut table = Table::new(&[
            "NODE",
            "REVISION",
            "REPLICATED",
            "DATA PLANE",
            "NOT REPLICATED",
            "NOT MIRRORED",
            "JOURNAL",
        ])
        .right(&[0, 1, 2, 3, 4, 5, 6]);
        for (node, s) in nodes {
            table.row(vec![
                node.clone(),
                num(&s["revision"]),
                num(&s["replicated_entries"]),
                num(&s["dataplane_entries"]),
                num(&s["not_replicated"]),
                num(&s["not_mirrored"]),
                num(&s["journal_pending"]),
            ]);
        }
        out.push('\n');
        out.push_str(&table.render());
    }
    if let Some(missing) = v["missing"].as_array().filter(|m| !m.is_empty()) {
        let names: Vec<String> = missing.iter().map(text).collect();
        out.push_str(&format!("\nstill missing: {}\n", names.join(", ")));
    }
    out
}

pub fn render_drills(v: &Value) -> String {
    let mut table = Table::new(&[
        "ID",
        "KIND",
        "FROM",
        "TO",
        "STATE",
        "VIP MOVED",
        "FIRST CONN",
        "LOST",
    ])
    .right(&[0, 2, 3, 5, 6, 7]);
    for d in v["drills"].as_array().into_iter().flatten() {
        let f = &d["figures"];
        table.row(vec![
            num(&d["id"]),
            text(&d["kind"]),
            num(&d["from"]),
            num(&d["to"]),
            text(&d["state"]),
            after(&f["garp_ms"]),
            after(&f["first_connection_ms"]),
            text(&f["stick_entries_lost"]),
        ]);
    }
    if table.is_empty() {
        return "no drills or takeovers recorded\n".into();
    }
    table.render()
}

pub fn render_apply(v: &Value, file: &str) -> String {
    let diff = &v["diff"];
    let mut table = Table::new(&["CHANGE", "KIND", "NAME"]);
    let mut add = |kind: &str, changes: &Value, prefix: &str| {
        for (label, field) in [
            ("add", "added"),
            ("change", "changed"),
            ("remove", "removed"),
        ] {
            for name in changes[field].as_array().into_iter().flatten() {
                table.row(vec![
                    label.into(),
                    kind.into(),
                    format!("{prefix}{}", text(name)),
                ]);
            }
        }
    };
    add("frontend", &diff["frontends"], "");
    add("backend", &diff["backends"], "");
    if let Some(servers) = diff["servers"].as_object() {
        for (backend, changes) in servers {
            add("server", changes, &format!("{backend}/"));
        }
    }
    let revision = num(&v["revision"]);
    let dry_run = v["dry_run"].as_bool().unwrap_or(false);
    if table.is_empty() {
        return format!("no changes: the cluster already matches {file} (revision {revision})\n");
    }
    let mut out = table.render();
    if dry_run {
        out.push_str(&format!(
            "dry run: nothing committed (the cluster is at revision {revision})\n"
        ));
    } else {
        out.push_str(&format!("applied {file}: revision {revision}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    #[command(name = "ctl")]
    struct Cli {
        #[command(flatten)]
        ctl: CtlArgs,
    }

    fn parse(args: &[&str]) -> Result<CtlArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("ctl").chain(args.iter().copied())).map(|c| c.ctl)
    }

    #[test]
    fn drill_commands_parse_and_the_report_renders() {
        assert_eq!(
            parse(&["drill", "failover", "--to", "2"]).unwrap().command,
            CtlCommand::Drill(DrillCommand::Failover {
                to: Some(2),
                no_wait: false
            })
        );
        assert_eq!(
            parse(&["drill", "show", "12"]).unwrap().command,
            CtlCommand::Drill(DrillCommand::Show { id: 12 })
        );
        let report = serde_json::json!({
            "id": 12, "kind": "planned", "from": 1, "to": 2, "state": "done",
            "timeline": [
                {"event": "drill_started", "node": 3, "after_ms": 0},
                {"event": "vip_released", "node": 1, "after_ms": 21},
                {"event": "garp_sent", "node": 2, "after_ms": 64}
            ],
            "figures": {"vip_released_ms": 21, "garp_ms": 64, "first_connection_ms": 90,
                        "leader_moved_ms": 2900, "stick_entries_lost": 0,
                        "stick_entries_not_mirrored": 0, "revision_gap": 3},
            "nodes": {"1": {"revision": 40, "replicated_entries": 300, "dataplane_entries": 300,
                            "not_replicated": 0, "not_mirrored": 0, "journal_pending": 0}},
            "missing": []
        });
        let text = render_drill(&report);
        assert!(
            text.starts_with("drill 12 (planned): node 1 -> node 2  done"),
            "{text}"
        );
        assert!(text.contains("+21ms     1  vip_released"), "{text}");
        assert!(text.contains("Raft leader +2s"), "{text}");
        assert!(text.contains("stick entries lost: 0"), "{text}");
        assert!(!text.contains("still missing"), "{text}");
        let list = render_drills(&serde_json::json!({ "drills": [report] }));
        assert!(
            list.lines().nth(1).unwrap().starts_with("12  planned"),
            "{list}"
        );
    }

    #[test]
    fn parses_every_command() {
        let a = parse(&["status"]).unwrap();
        assert_eq!(a.command, CtlCommand::Status);
        assert!(!a.json);
        let a = parse(&[
            "--api",
            "http://10.0.0.1:9090",
            "--token-file",
            "/etc/ballast/token",
            "drain",
            "tcp_back/server1",
        ])
        .unwrap();
        assert_eq!(a.api, "http://10.0.0.1:9090");
        assert_eq!(a.token_file, Some(PathBuf::from("/etc/ballast/token")));
        assert_eq!(
            a.command,
            CtlCommand::Drain {
                server: ServerRef {
                    backend: "tcp_back".into(),
                    server: "server1".into()
                }
            }
        );
        // Options are global: they may follow the command too.
        let a = parse(&["backends", "--json"]).unwrap();
        assert!(a.json);
        assert_eq!(a.command, CtlCommand::Backends);
        assert!(matches!(
            parse(&["enable", "b/s"]).unwrap().command,
            CtlCommand::Enable { .. }
        ));
        assert!(matches!(
            parse(&["maint", "b/s"]).unwrap().command,
            CtlCommand::Maint { .. }
        ));
        assert_eq!(
            parse(&["servers", "b"]).unwrap().command,
            CtlCommand::Servers {
                backend: "b".into()
            }
        );
        assert_eq!(
            parse(&["stick", "b", "--key", "127.0.0.5", "--limit", "10"])
                .unwrap()
                .command,
            CtlCommand::Stick {
                backend: "b".into(),
                key: Some("127.0.0.5".parse().unwrap()),
                after: None,
                limit: Some(10)
            }
        );
        assert_eq!(
            parse(&["apply", "-f", "ballast.toml", "--dry-run"])
                .unwrap()
                .command,
            CtlCommand::Apply {
                file: "ballast.toml".into(),
                dry_run: true
            }
        );
        assert_eq!(
            parse(&["forget", "b"]).unwrap().command,
            CtlCommand::Forget {
                backend: "b".into(),
                key: None
            }
        );
        assert_eq!(
            parse(&["forget", "b", "::1"]).unwrap().command,
            CtlCommand::Forget {
                backend: "b".into(),
                key: Some("::1".parse().unwrap())
            }
        );
        assert_eq!(
            parse(&[
                "members",
                "add",
                "--id",
                "4",
                "--raft",
                "10.0.0.4:9091",
                "--api",
                "10.0.0.4:9090",
                "--role",
                "witness"
            ])
            .unwrap()
            .command,
            CtlCommand::Members(MembersCommand::Add {
                id: 4,
                raft: "10.0.0.4:9091".parse().unwrap(),
                api: "10.0.0.4:9090".parse().unwrap(),
                role: "witness".into()
            })
        );
        // `--api` before the command is the node's; after `members add`, the member's.
        let a = parse(&[
            "--api",
            "http://10.0.0.1:9090",
            "members",
            "add",
            "--id",
            "4",
            "--raft",
            "10.0.0.4:9091",
            "--api",
            "10.0.0.4:9090",
        ])
        .unwrap();
        assert_eq!(a.api, "http://10.0.0.1:9090");
        assert!(matches!(
            a.command,
            CtlCommand::Members(MembersCommand::Add { ref role, .. }) if role == "lb"
        ));
        assert_eq!(
            parse(&["members", "remove", "4"]).unwrap().command,
            CtlCommand::Members(MembersCommand::Remove { id: 4 })
        );
    }

    #[test]
    fn rejects_bad_arguments() {
        for bad in [
            &["drain", "server1"][..],
            &["drain", "b/"],
            &["drain", "/s"],
            &["drain", "b/s/x"],
            &["stick", "b", "--key", "not-an-ip"],
            &["forget", "b", "nope"],
            &[
                "members",
                "add",
                "--id",
                "4",
                "--raft",
                "x",
                "--api",
                "1.2.3.4:1",
            ],
            &[
                "members",
                "add",
                "--id",
                "4",
                "--raft",
                "1.2.3.4:1",
                "--api",
                "1.2.3.4:2",
                "--role",
                "boss",
            ],
            &["apply"],
            &["frobnicate"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
        let e = parse(&["drain", "server1"]).unwrap_err().to_string();
        assert!(e.contains("BACKEND/SERVER"), "{e}");
    }

    #[test]
    fn base_urls() {
        assert_eq!(base_url("127.0.0.1:9090").unwrap(), "http://127.0.0.1:9090");
        assert_eq!(
            base_url("http://127.0.0.1:9090/").unwrap(),
            "http://127.0.0.1:9090"
        );
        assert!(base_url("https://x:1")
            .unwrap_err()
            .to_string()
            .contains("https"));
        assert!(base_url("ftp://x:1").is_err());
        assert!(base_url("").is_err());
        assert_eq!(segment("::1"), "%3A%3A1");
        assert_eq!(segment("tcp_back-1.x"), "tcp_back-1.x");
    }

    #[test]
    fn errors_print_as_one_clear_line() {
        let e = api_error(
            404,
            r#"{"error":{"code":"not_found","message":"backend \"x\" does not exist"}}"#,
        );
        assert_eq!(
            e.to_string(),
            r#"not_found: backend "x" does not exist (HTTP 404)"#
        );
        let e = api_error(401, r#"{"error":{"code":"unauthorized","message":"no"}}"#);
        assert!(e.to_string().contains("--token-file"), "{e}");
        let e = api_error(502, "<html>bad gateway</html>");
        assert_eq!(
            e.to_string(),
            "unexpected answer HTTP 502: <html>bad gateway</html>"
        );
        let e = CtlError::Unreachable {
            api: "http://127.0.0.1:1".into(),
            detail: "Connection Failed: Connection refused (os error 111)".into(),
        };
        assert!(e
            .to_string()
            .starts_with("cannot reach the API at http://127.0.0.1:1: "));
    }

    /// A one-connection HTTP server that answers `response` (or nothing, when `None`).
    fn fake_api(response: Option<String>) -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            match response {
                Some(r) => {
                    let _ = s.write_all(r.as_bytes());
                }
                None => std::thread::sleep(Duration::from_secs(3)),
            }
        });
        format!("http://{addr}")
    }

    #[test]
    fn http_failures_are_told_apart() {
        let short = Duration::from_millis(300);
        let silent = Client::new(&fake_api(None), None, short).unwrap();
        let e = silent.get("/v1/status", &[]).unwrap_err();
        assert!(matches!(e, CtlError::NoAnswer { .. }), "{e:?}");
        assert!(e
            .to_string()
            .starts_with("no answer from the API at http://127.0.0.1:"));

        let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = refused.local_addr().unwrap();
        drop(refused);
        let e = Client::new(&addr.to_string(), None, short)
            .unwrap()
            .get("/v1/status", &[])
            .unwrap_err();
        assert!(matches!(e, CtlError::Unreachable { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with(&format!("cannot reach the API at http://{addr}: ")),
            "{e}"
        );

        let body = r#"{"error":{"code":"not_found","message":"backend \"x\" does not exist"}}"#;
        let answer = format!(
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let e = Client::new(&fake_api(Some(answer)), None, short)
            .unwrap()
            .get("/v1/backends/x", &[])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"not_found: backend "x" does not exist (HTTP 404)"#
        );

        // Writes are refused here, before any request, without a token file.
        let e = Client::new("127.0.0.1:1", None, short)
            .unwrap()
            .write("POST", "/v1/apply", &[], None)
            .unwrap_err();
        assert!(e.to_string().contains("--token-file"), "{e}");
    }

    #[test]
    fn tables_align_columns() {
        let mut t = Table::new(&["NAME", "N", "NOTE"]).right(&[1]);
        t.row(vec!["s1".into(), "5".into(), "".into()]);
        t.row(vec!["server-two".into(), "1234".into(), "x".into()]);
        assert_eq!(
            t.render(),
            "NAME           N  NOTE\n\
             s1             5\n\
             server-two  1234  x\n"
        );
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(fmt_ms(0), "0ms");
        assert_eq!(fmt_ms(450), "450ms");
        assert_eq!(fmt_ms(59_999), "59s");
        assert_eq!(fmt_ms(125_000), "2m5s");
        assert_eq!(fmt_ms(57_600_000), "16h");
        assert_eq!(fmt_ms(57_540_000), "15h59m");
        assert_eq!(fmt_ms(3_600_000 + 5_000), "1h");
        assert_eq!(fmt_ms(2 * 86_400_000 + 7_200_000), "2d2h");
    }

    #[test]
    fn renders_status() {
        let v = serde_json::json!({
            "node_id": 1, "role": "lb", "revision": 42,
            "raft": {"node_id": 1, "state": "Leader", "leader": 1, "term": 3,
                     "last_log_index": 57, "last_applied": 57, "snapshot_index": null,
                     "members": {"1": {"raft": "10.0.0.1:9091", "api": "10.0.0.1:9090", "role": "lb"},
                                 "3": {"raft": "10.0.0.3:9091", "api": "10.0.0.3:9090", "role": "witness"}},
                     "voters": [1, 3], "revision": 42},
            "caught_up": true, "lag_entries": 0,
            "journal_pending": 0,
            "health": {"b": {"s1": {"effective_up": true, "admin": "ready", "reports": {}},
                             "s2": {"effective_up": false, "admin": "drain", "reports": {}}}},
            "vrrp": null,
            "tracked_conditions_failing": []
        });
        assert_eq!(
            render_status(&v),
            "node      1 (lb)\n\
             revision  42\n\
             raft      Leader, leader 1, term 3, last log 57, applied 57, snapshot -\n\
             replica   caught up (0 entries behind the leader)\n\
             journal   0 stick decisions pending\n\
             vrrp      off\n\
             \n\
             MEMBER  ROLE     VOTER  RAFT           API\n\
             1       lb       yes    10.0.0.1:9091  10.0.0.1:9090  leader, this node\n\
             3       witness  yes    10.0.0.3:9091  10.0.0.3:9090\n\
             \n\
             BACKEND  SERVER  HEALTH  ADMIN\n\
             b        s1      up      ready\n\
             b        s2      down    drain\n"
        );
    }

    fn backends_json() -> Value {
        serde_json::json!({"revision": 9, "backends": [{
            "name": "tcp_back", "balance": "leastconn", "timeout_server": "15h",
            "timeout_connect": "5s", "timeout_queue": "30s",
            "stick": {"on": "src", "size": 200000, "expire": "16h"},
            "health": {"kind": "tcp", "interval": "2s", "timeout": "1s", "rise": 2, "fall": 3},
            "servers": [
                {"name": "server1", "addr": "127.0.0.1:7001", "weight": 1, "maxconn": 300, "admin": "ready"},
                {"name": "server2", "addr": "127.0.0.1:7002", "weight": 2, "maxconn": 0, "admin": "drain"}],
            "stats": {"node_id": 1, "servers": [
                {"name": "server1", "up": true, "admin": "ready", "connections": 12},
                {"name": "server2", "up": false, "admin": "drain", "connections": 3}]}
        }]})
    }

    #[test]
    fn renders_backends_and_servers() {
        let v = backends_json();
        assert_eq!(
            render_backends(&v),
            "BACKEND   BALANCE    SERVERS  UP  READY  CONNS  STICK    HEALTH  TIMEOUT_SERVER\n\
             tcp_back  leastconn        2   1      1     15  src 16h  tcp 2s  15h\n\
             revision 9\n"
        );
        assert_eq!(
            render_servers(&v["backends"][0]),
            "backend   tcp_back\n\
             balance   leastconn\n\
             timeouts  server 15h, connect 5s, queue 30s\n\
             stick     src (size 200000, expire 16h)\n\
             health    tcp every 2s (timeout 1s, rise 2, fall 3)\n\
             \n\
             SERVER   ADDR            WEIGHT  MAXCONN  ADMIN  HEALTH  CONNS\n\
             server1  127.0.0.1:7001       1      300  ready  up         12\n\
             server2  127.0.0.1:7002       2        -  drain  down        3\n"
        );
        // A witness has no live figures.
        let mut witness = v.clone();
        witness["backends"][0]
            .as_object_mut()
            .unwrap()
            .remove("stats");
        let text = render_backends(&witness);
        assert!(
            text.lines().nth(1).unwrap().contains("2   -      1      -"),
            "{text}"
        );
    }

    #[test]
    fn renders_frontends() {
        let v = serde_json::json!({"revision": 3, "frontends": [
            {"name": "tcp_front", "bind": ["0.0.0.0:8001-8003", "[::1]:9000"], "backend": "tcp_back", "timeout_client": "15h"}]});
        assert_eq!(
            render_frontends(&v),
            "FRONTEND   BIND                           BACKEND   TIMEOUT_CLIENT\n\
             tcp_front  0.0.0.0:8001-8003, [::1]:9000  tcp_back  15h\n\
             revision 3\n"
        );
    }

    #[test]
    fn renders_stick_pages() {
        let now = 1_000_000_000;
        let v = serde_json::json!({"backend": "b", "total": 5, "revision": 7, "entries": [
            {"key": "127.0.0.5", "server": "s1", "last_seen_ms": now - 3_000, "open_here": 3, "expires_in_ms": null},
            {"key": "127.0.0.6", "server": "s2", "last_seen_ms": now - 120_000, "open_here": 0, "expires_in_ms": 3_480_000}]});
        assert_eq!(
            render_stick(&v, 2, now),
            "KEY        SERVER  LAST_SEEN  OPEN_HERE  EXPIRES_IN\n\
             127.0.0.5  s1      3s ago             3  connected\n\
             127.0.0.6  s2      2m ago             0  58m\n\
             2 of 5 entries in backend b (revision 7)\n\
             next page: ballast ctl stick b --after 127.0.0.6 --limit 2\n"
        );
        let empty = serde_json::json!({"backend": "b", "total": 0, "revision": 7, "entries": []});
        assert_eq!(
            render_stick(&empty, 1000, now),
            "0 of 0 entries in backend b (revision 7)\n"
        );
    }

    #[test]
    fn renders_apply_diffs() {
        let v = serde_json::json!({"dry_run": true, "revision": 12, "diff": {
            "frontends": {"added": ["g"], "removed": [], "changed": []},
            "backends": {"added": [], "removed": [], "changed": ["b"]},
            "servers": {"b": {"added": ["s3"], "removed": ["s1"], "changed": ["s2"]}}}});
        assert_eq!(
            render_apply(&v, "ballast.toml"),
            "CHANGE  KIND      NAME\n\
             add     frontend  g\n\
             change  backend   b\n\
             add     server    b/s3\n\
             change  server    b/s2\n\
             remove  server    b/s1\n\
             dry run: nothing committed (the cluster is at revision 12)\n"
        );
        let mut applied = v.clone();
        applied["dry_run"] = false.into();
        applied["revision"] = 13.into();
        assert!(
            render_apply(&applied, "ballast.toml").ends_with("applied ballast.toml: revision 13\n")
        );
        let none = serde_json::json!({"dry_run": false, "revision": 12, "diff": {
            "frontends": {"added": [], "removed": [], "changed": []},
            "backends": {"added": [], "removed": [], "changed": []},
            "servers": {}}});
        assert_eq!(
            render_apply(&none, "ballast.toml"),
            "no changes: the cluster already matches ballast.toml (revision 12)\n"
        );
    }
}
