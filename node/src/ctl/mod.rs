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
//! - [`client`]: the HTTP side; answers are read as the API's types
//!   ([`ballast_api::types`]), never indexed as untyped JSON;
//! - [`render`]: those types in, aligned text out (pure and unit-tested); the HTTP part
//!   is exercised by the end-to-end tests against a real node.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use ballast_api::types::{
    Applied, BackendWithStats, DrillList, DrillReport, DrillStarted, DrillState, Revision,
    StickPage,
};
use clap::{Args, Subcommand};
use serde::de::DeserializeOwned;

mod client;
mod render;

use ballast_model::time::now as now_ms;

use client::segment;
pub use client::{api_error, base_url, Answer, Client};
pub use render::{
    fmt_ms, render_apply, render_backends, render_drill, render_drills, render_frontends,
    render_servers, render_status, render_stick, render_upgrade, Table,
};

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
    /// Live upgrade of this node to the binary now installed at its path: every
    /// listener and established connection is handed to the new process, the old one
    /// exits. Waits for the outcome; non-zero with the reason when it did not happen.
    Upgrade,
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
    Ok(match &args.command {
        CtlCommand::Status => show(json, client.get("/v1/status", &[])?, render_status)?,
        CtlCommand::Backends => show(json, client.get("/v1/backends", &[])?, render_backends)?,
        CtlCommand::Frontends => show(json, client.get("/v1/frontends", &[])?, render_frontends)?,
        CtlCommand::Servers { backend } => show(
            json,
            client.get(&format!("/v1/backends/{}", segment(backend)), &[])?,
            |b: &BackendWithStats| render_servers(b),
        )?,
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
            show(json, page, |v: &StickPage| render_stick(v, limit, now))?
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
            show(json, answer, |v: &Applied| render_apply(v, &file))?
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
            show(json, answer, |v: &Revision| {
                format!("{what} (revision {})\n", v.revision)
            })?
        }
        CtlCommand::Members(MembersCommand::Add {
            id,
            raft,
            api,
            role,
        }) => {
            let body = serde_json::json!({ "id": id, "raft": raft, "api": api, "role": role });
            let answer = client.write("POST", "/v1/members", &[], Some(&body))?;
            show(json, answer, |_: &ballast_api::types::MemberAdded| {
                format!("member {id} added (raft {raft}, api {api}, role {role})\n")
            })?
        }
        CtlCommand::Members(MembersCommand::Remove { id }) => {
            let answer = client.write("DELETE", &format!("/v1/members/{id}"), &[], None)?;
            show(json, answer, |_: &ballast_api::types::MemberRemoved| {
                format!("member {id} removed\n")
            })?
        }
        CtlCommand::Drill(DrillCommand::Failover { to, no_wait }) => {
            let body = serde_json::json!({ "to": to });
            let answer = client.write("POST", "/v1/drills/failover", &[], Some(&body))?;
            let started: DrillStarted = answer.typed()?;
            let id = started.id;
            if *no_wait {
                return show(json, answer, |v: &DrillStarted| {
                    format!("drill {id} started: node {} -> node {}\n", v.from, v.to)
                });
            }
            let (answer, report) = wait_for_drill(&client, id)?;
            let text = show(json, answer, render_drill)?;
            if report.state != DrillState::Done {
                let state = serde_json::to_value(report.state).unwrap_or_default();
                let state = state.as_str().unwrap_or("?");
                return Err(CtlError::Local(format!("{text}drill {id} ended {state}")));
            }
            text
        }
        CtlCommand::Upgrade => show(
            json,
            client.write("POST", "/v1/node/upgrade", &[], None)?,
            render_upgrade,
        )?,
        CtlCommand::Drill(DrillCommand::List) => {
            show(json, client.get("/v1/drills", &[])?, |v: &DrillList| {
                render_drills(v)
            })?
        }
        CtlCommand::Drill(DrillCommand::Show { id }) => show(
            json,
            client.get(&format!("/v1/drills/{id}"), &[])?,
            |v: &DrillReport| render_drill(v),
        )?,
    })
}

/// The answer as the API sent it (`--json`), or read as its type and rendered.
fn show<T: DeserializeOwned>(
    json: bool,
    answer: Answer,
    render: impl FnOnce(&T) -> String,
) -> Result<String, CtlError> {
    Ok(if json {
        answer.pretty()
    } else {
        render(&answer.typed()?)
    })
}

/// How long `drill failover` waits for the report to settle.
const DRILL_WAIT: Duration = Duration::from_secs(75);
/// After the drill is done, how long to wait for the first client connection.
const FIRST_CONNECTION_GRACE: Duration = Duration::from_secs(5);

fn wait_for_drill(client: &Client, id: u64) -> Result<(Answer, DrillReport), CtlError> {
    let start = std::time::Instant::now();
    let mut done_at = None;
    loop {
        let answer = client.get(&format!("/v1/drills/{id}"), &[])?;
        let report: DrillReport = answer.typed()?;
        if report.state != DrillState::Running {
            let waited = *done_at.get_or_insert_with(std::time::Instant::now);
            let connected = report.figures.first_connection_ms.is_some();
            if report.state != DrillState::Done
                || connected
                || waited.elapsed() >= FIRST_CONNECTION_GRACE
            {
                return Ok((answer, report));
            }
        }
        if start.elapsed() >= DRILL_WAIT {
            return Ok((answer, report));
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
    show(json, answer, |v: &Revision| {
        format!("{server}: admin {admin} (revision {})\n", v.revision)
    })
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
                {"event": "drill_started", "node": 3, "at_ms": 1000, "after_ms": 0},
                {"event": "vip_released", "node": 1, "at_ms": 1021, "after_ms": 21},
                {"event": "garp_sent", "node": 2, "at_ms": 1064, "after_ms": 64}
            ],
            "figures": {"vip_released_ms": 21, "garp_ms": 64, "first_connection_ms": 90,
                        "leader_moved_ms": 2900, "stick_entries_lost": 0,
                        "stick_entries_not_mirrored": 0, "revision_gap": 3},
            "started_ms": 1000,
            "nodes": {"1": {"at_ms": 3000, "revision": 40, "replicated_entries": 300, "dataplane_entries": 300,
                            "not_replicated": 0, "not_mirrored": 0, "journal_pending": 0}},
            "missing": []
        });
        let text = render_drill(&serde_json::from_value(report.clone()).unwrap());
        assert!(
            text.starts_with("drill 12 (planned): node 1 -> node 2  done"),
            "{text}"
        );
        assert!(text.contains("+21ms     1  vip_released"), "{text}");
        assert!(text.contains("Raft leader +2s"), "{text}");
        assert!(text.contains("stick entries lost: 0"), "{text}");
        assert!(!text.contains("still missing"), "{text}");
        let list = render_drills(
            &serde_json::from_value(serde_json::json!({ "drills": [report] })).unwrap(),
        );
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
}
