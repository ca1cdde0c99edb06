//! The config file: parse, validate, then an immutable [`Config`].
//!
//! Two passes over the same text. The first deserializes with `deny_unknown_fields`
//! into typed structs (durations, binds and addresses are parsed there, so their errors
//! carry a line and column). The second only records where each named object starts, so
//! that the model's cross-object checks (duplicates, a frontend naming a missing backend,
//! overlapping binds), which run in `ballast_raft_store::model` and are shared with the
//! API, can still point at a line. Loading never binds a port.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use ballast_raft_store::model::Role;
use ballast_raft_store::model::{
    duration_text, Backend, ClusterModel, Frontend, ModelError, ModelSpec, Subject,
};
use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub path: PathBuf,
    pub node: NodeSection,
    pub cluster: Option<ClusterSection>,
    pub vrrp: Option<VrrpSection>,
    /// Seeds the replicated model at bootstrap.
    pub model: ClusterModel,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    pub id: u64,
    #[serde(default)]
    pub role: Role,
    pub data_dir: PathBuf,
    pub api_listen: SocketAddr,
    #[serde(default)]
    pub raft_listen: Option<SocketAddr>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Frontend binds on the wildcard address (`0.0.0.0`, `::`) are bound on this
    /// address instead, on this node only. The model is shared by every node; this is
    /// how several nodes share one host (labs, tests) or keep wildcard binds off other
    /// interfaces.
    #[serde(default)]
    pub bind_ip: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    pub members: Vec<Member>,
    /// Raft log entries between snapshots (and kept after one); lower values compact
    /// sooner and make a rejoining node catch up by snapshot.
    #[serde(default = "default_snapshot_logs")]
    pub snapshot_logs: u64,
    /// This node joins a running cluster (it is added through the API's membership
    /// change) instead of forming one with `members` on its first start.
    #[serde(default)]
    pub join: bool,
}

fn default_snapshot_logs() -> u64 {
    5_000
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub id: u64,
    pub raft: SocketAddr,
    pub api: SocketAddr,
    #[serde(default)]
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VrrpSection {
    pub interface: String,
    pub vrid: u8,
    pub priority: u8,
    #[serde(default = "one_second", with = "duration_text")]
    pub advert_interval: Duration,
    pub virtual_ips: Vec<String>,
    #[serde(default = "yes")]
    pub preempt: bool,
    #[serde(default, with = "duration_text")]
    pub preempt_delay: Duration,
    #[serde(default)]
    pub unicast_peers: Vec<IpAddr>,
    /// Run on every transition with the new state as arguments (keepalived's notify).
    #[serde(default)]
    pub notify: Option<PathBuf>,
    /// When set, the master adds the VIP with this lifetime and keeps renewing it, so a
    /// VIP left behind by a killed master disappears by itself (keepalived leaves it).
    #[serde(default, with = "optional_duration")]
    pub vip_lifetime: Option<Duration>,
    /// How adverts travel: `raw` (IP protocol 112, the VIP installed) or `udp`
    /// (demos and labs without root: adverts as UDP datagrams, no VIP installed).
    #[serde(default)]
    pub transport: VrrpTransport,
    /// `transport = "udp"`: where this node receives adverts; its address is the
    /// node's VRRP address (the source in its adverts and the tie-breaker).
    #[serde(default)]
    pub udp_listen: Option<SocketAddr>,
    /// `transport = "udp"`: the other lb nodes' `udp_listen`.
    #[serde(default)]
    pub udp_peers: Vec<SocketAddr>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VrrpTransport {
    #[default]
    Raw,
    /// For demos and labs only: nothing moves an address.
    Udp,
}

mod optional_duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| {
            ballast_raft_store::model::parse_duration(&t).map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}

fn yes() -> bool {
    true
}

/// The file as written: node-local sections plus the model's lists.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node: NodeSection,
    #[serde(default)]
    cluster: Option<ClusterSection>,
    #[serde(default)]
    vrrp: Option<VrrpSection>,
    #[serde(default)]
    frontend: Vec<Frontend>,
    #[serde(default)]
    backend: Vec<Backend>,
}

/// Second pass: only where the named objects are.
#[derive(Deserialize)]
struct Locations {
    #[serde(default)]
    frontend: Vec<NamedAt>,
    #[serde(default)]
    backend: Vec<BackendAt>,
    #[serde(default)]
    node: Option<Spanned<toml::Value>>,
    #[serde(default)]
    cluster: Option<Spanned<toml::Value>>,
    #[serde(default)]
    vrrp: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
struct NamedAt {
    name: Spanned<String>,
}

/// Third pass: where each field of each frontend and backend is.
#[derive(Deserialize)]
struct FieldLocations {
    #[serde(default)]
    frontend: Vec<BTreeMap<String, Spanned<toml::Value>>>,
    #[serde(default)]
    backend: Vec<BTreeMap<String, Spanned<toml::Value>>>,
}

#[derive(Deserialize)]
struct BackendAt {
    name: Spanned<String>,
    #[serde(default)]
    servers: Vec<NamedAt>,
}

/// One problem, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("error: {path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", render(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { problems, .. } => problems,
        }
    }
}

fn render(path: &Path, problems: &[Problem]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("error: {}", path.display()));
        if let Some(line) = p.line {
            out.push_str(&format!(":{line}"));
            if let Some(column) = p.column {
                out.push_str(&format!(":{column}"));
            }
        }
        out.push_str(&format!(": {}", p.message));
    }
    out
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let listeners: usize = self
            .model
            .frontends
            .values()
            .flat_map(|fe| fe.bind.iter())
            .map(|b| b.addrs().count())
            .sum();
        let servers: usize = self.model.backends.values().map(|b| b.servers.len()).sum();
        write!(
            f,
            "{}: OK: node {} ({:?}), {} frontend(s) on {} port(s), {} backend(s) with {} server(s), cluster: {}, vrrp: {}",
            self.path.display(),
            self.node.id,
            self.node.role,
            self.model.frontends.len(),
            listeners,
            self.model.backends.len(),
            servers,
            self.cluster
                .as_ref()
                .map_or("single node".to_string(), |c| format!("{} members", c.members.len())),
            self.vrrp.as_ref().map_or("none".to_string(), |v| match v.transport {
                VrrpTransport::Raw => format!("vrid {} on {}", v.vrid, v.interface),
                VrrpTransport::Udp => format!(
                    "vrid {} over udp (demo/lab: no VIP installed)",
                    v.vrid
                ),
            }),
        )
    }
}

pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let invalid = |problems| ConfigError::Invalid {
        path: path.to_path_buf(),
        problems,
    };
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let (line, column) = e
            .span()
            .map(|s| line_col(text, s.start))
            .map_or((None, None), |(l, c)| (Some(l), Some(c)));
        invalid(vec![Problem {
            line,
            column,
            message: e.message().trim().to_string(),
        }])
    })?;
    // The first pass succeeded, so this one cannot fail on syntax; any error here only
    // costs us line numbers.
    let locations: Option<Locations> = toml::from_str(text).ok();
    let fields: Option<FieldLocations> = toml::from_str(text).ok();
    let field_line = |subject: &Subject, field: &str| -> Option<usize> {
        let fields = fields.as_ref()?;
        let (tables, name) = match subject {
            Subject::Frontend(name) => (&fields.frontend, name),
            Subject::Backend(name) => (&fields.backend, name),
            Subject::Server { .. } => return None,
        };
        let table = tables
            .iter()
            .rev()
            .find(|t| t.get("name").and_then(|n| n.get_ref().as_str()) == Some(name.as_str()))?;
        table.get(field).map(|v| line_col(text, v.span().start).0)
    };
    let at = |subject: &Subject| -> Option<usize> {
        let loc = locations.as_ref()?;
        let spans: Vec<&Spanned<String>> = match subject {
            Subject::Frontend(name) => loc
                .frontend
                .iter()
                .map(|f| &f.name)
                .filter(|n| n.get_ref() == name)
                .collect(),
            Subject::Backend(name) => loc
                .backend
                .iter()
                .map(|b| &b.name)
                .filter(|n| n.get_ref() == name)
                .collect(),
            Subject::Server { backend, server } => loc
                .backend
                .iter()
                .filter(|b| b.name.get_ref() == backend)
                .flat_map(|b| b.servers.iter().map(|s| &s.name))
                .filter(|n| n.get_ref() == server)
                .collect(),
        };
        // With duplicates the later occurrence is the one to fix.
        spans.last().map(|s| line_col(text, s.span().start).0)
    };
    let section_line = |value: &Option<Spanned<toml::Value>>| {
        value.as_ref().map(|v| line_col(text, v.span().start).0)
    };

    let mut problems = Vec::new();
    let model = match ClusterModel::from_spec(ModelSpec {
        frontends: raw.frontend,
        backends: raw.backend,
    }) {
        Ok(model) => Some(model),
        Err(errors) => {
            problems.extend(errors.iter().map(|e: &ModelError| {
                Problem {
                    line: e
                        .field
                        .and_then(|f| field_line(&e.subject, f))
                        .or_else(|| at(&e.subject)),
                    column: None,
                    message: e.to_string(),
                }
            }));
            None
        }
    };
    let loc = locations.as_ref();
    let node_line = loc.and_then(|l| section_line(&l.node));
    let mut push = |line, message: String| {
        problems.push(Problem {
            line,
            column: None,
            message,
        })
    };
    if raw.node.id == 0 {
        push(node_line, "node.id must be >= 1".into());
    }
    if let Some(cluster) = &raw.cluster {
        let line = loc.and_then(|l| section_line(&l.cluster));
        let mut ids = BTreeSet::new();
        for m in &cluster.members {
            if m.id == 0 || !ids.insert(m.id) {
                push(
                    line,
                    format!("cluster.members: duplicate or zero member id {}", m.id),
                );
            }
        }
        match cluster.members.iter().find(|m| m.id == raw.node.id) {
            None => push(
                line,
                format!(
                    "cluster.members: this node's id {} is not a member",
                    raw.node.id
                ),
            ),
            Some(me) if me.role != raw.node.role => push(
                line,
                format!(
                    "cluster.members: member {} has role {:?} but node.role is {:?}",
                    me.id, me.role, raw.node.role
                ),
            ),
            Some(_) => {}
        }
        if cluster.snapshot_logs == 0 {
            push(line, "cluster.snapshot_logs must be >= 1".into());
        }
        if raw.node.raft_listen.is_none() {
            push(
                node_line,
                "node.raft_listen is required with [cluster]".into(),
            );
        }
        if raw.node.token_file.is_none() {
            push(
                node_line,
                "node.token_file is required with [cluster]: peers authenticate with it".into(),
            );
        }
    }
    if let Some(vrrp) = &raw.vrrp {
        let line = loc.and_then(|l| section_line(&l.vrrp));
        if raw.node.role == Role::Witness {
            push(
                line,
                "vrrp: a witness node holds no VIP; remove [vrrp]".into(),
            );
        }
        if vrrp.vrid == 0 {
            push(line, "vrrp.vrid must be 1-255".into());
        }
        if vrrp.priority == 0 {
            push(
                line,
                "vrrp.priority must be 1-255 (0 is reserved for a master that stops)".into(),
            );
        }
        let centis = vrrp.advert_interval.as_millis() / 10;
        if vrrp.advert_interval.as_millis() % 10 != 0 || !(1..=4095).contains(&centis) {
            push(
                line,
                "vrrp.advert_interval must be whole centiseconds from 10ms to 40950ms (RFC 9568 §5.2.7)"
                    .into(),
            );
        }
        if vrrp.virtual_ips.is_empty() {
            push(line, "vrrp.virtual_ips needs at least one address".into());
        }
        for vip in &vrrp.virtual_ips {
            if vip.parse::<ballast_vrrp::driver::VirtualIp>().is_err() {
                push(
                    line,
                    format!("vrrp.virtual_ips: invalid address {vip:?}: expected IP/PREFIX"),
                );
            }
        }
        for message in udp_transport_problems(vrrp) {
            push(line, message);
        }
    }
    match (model, problems.is_empty()) {
        (Some(model), true) => Ok(Config {
            path: path.to_path_buf(),
            node: raw.node,
            cluster: raw.cluster,
            vrrp: raw.vrrp,
            model,
        }),
        _ => {
            problems.sort_by_key(|p| p.line);
            Err(invalid(problems))
        }
    }
}

/// `transport = "udp"` needs its two fields, and they mean nothing with `raw`.
fn udp_transport_problems(vrrp: &VrrpSection) -> Vec<String> {
    let mut out = Vec::new();
    if vrrp.transport == VrrpTransport::Raw {
        if vrrp.udp_listen.is_some() || !vrrp.udp_peers.is_empty() {
            out.push(
                "vrrp.udp_listen and vrrp.udp_peers are only used with transport = \"udp\"".into(),
            );
        }
        return out;
    }
    match vrrp.udp_listen {
        None => out.push("vrrp.udp_listen is required with transport = \"udp\"".into()),
        Some(listen) if !listen.is_ipv4() || listen.ip().is_unspecified() || listen.port() == 0 => {
            out.push(format!(
                "vrrp.udp_listen {listen}: needs a concrete IPv4 address and port (it is this node's VRRP address)"
            ))
        }
        Some(_) => {}
    }
    if vrrp.udp_peers.is_empty() {
        out.push("vrrp.udp_peers needs at least one peer with transport = \"udp\"".into());
    }
    for peer in &vrrp.udp_peers {
        if !peer.is_ipv4() || peer.ip().is_unspecified() || peer.port() == 0 {
            out.push(format!(
                "vrrp.udp_peers: {peer}: needs a concrete IPv4 address and port"
            ));
        } else if Some(*peer) == vrrp.udp_listen {
            out.push(format!(
                "vrrp.udp_peers: {peer} is this node's own udp_listen"
            ));
        }
    }
    out
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[node]
id = 1
role = "lb"
data_dir = "/var/lib/ballast"
api_listen = "127.0.0.1:9090"
raft_listen = "198.18.0.11:9091"
token_file = "/etc/ballast/token"

[cluster]
members = [
  { id = 1, raft = "198.18.0.11:9091", api = "198.18.0.11:9090" },
  { id = 2, raft = "198.18.0.12:9091", api = "198.18.0.12:9090" },
  { id = 3, raft = "198.18.0.13:9091", api = "198.18.0.13:9090", role = "witness" },
]

[vrrp]
interface = "eth0"
vrid = 51
priority = 150
advert_interval = "1s"
virtual_ips = ["198.18.0.100/24"]
preempt = true

[[frontend]]
name = "tcp_front"
bind = ["0.0.0.0:8001-8003"]
backend = "tcp_back"
timeout_client = "15h"

[[backend]]
name = "tcp_back"
balance = "leastconn"
timeout_server = "15h"
timeout_connect = "5s"
timeout_queue = "30s"
stick = { on = "src", size = 200000, expire = "16h" }
health = { kind = "tcp", interval = "2s", timeout = "1s", rise = 2, fall = 3 }
servers = [
  { name = "server1", addr = "127.0.0.1:7001", maxconn = 300 },
  { name = "server2", addr = "127.0.0.1:7002", maxconn = 300 },
]
"#;

    fn errors(text: &str) -> Vec<Problem> {
        parse(Path::new("test.toml"), text)
            .expect_err("should be rejected")
            .problems()
            .to_vec()
    }

    fn one_error(text: &str) -> Problem {
        let problems = errors(text);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        problems.into_iter().next().unwrap()
    }

    #[test]
    fn the_design_example_is_valid() {
        let config = parse(Path::new("x.toml"), GOOD).unwrap();
        assert_eq!(config.node.id, 1);
        assert_eq!(config.cluster.as_ref().unwrap().members.len(), 3);
        let back = &config.model.backends["tcp_back"];
        assert_eq!(back.servers[1].maxconn, 300);
        assert_eq!(
            back.stick.as_ref().unwrap().expire,
            Duration::from_secs(16 * 3600)
        );
        assert_eq!(
            config.vrrp.as_ref().unwrap().advert_interval,
            Duration::from_secs(1)
        );
        assert!(config.to_string().contains("1 frontend(s) on 3 port(s)"));
    }

    #[test]
    fn unknown_key_names_its_line() {
        let text = GOOD.replace("timeout_client = \"15h\"", "timeout_clinet = \"15h\"");
        let p = one_error(&text);
        assert!(
            p.message.contains("unknown field `timeout_clinet`"),
            "{p:?}"
        );
        assert_eq!(p.line, Some(29));
    }

    #[test]
    fn bad_duration_names_its_line() {
        let p = one_error(&GOOD.replace("timeout_connect = \"5s\"", "timeout_connect = \"5x\""));
        assert!(p.message.contains("invalid duration \"5x\""), "{p:?}");
        assert_eq!(p.line, Some(35));
    }

    #[test]
    fn bad_port_range_names_its_line() {
        let p = one_error(&GOOD.replace("8001-8003", "8003-8001"));
        assert!(p.message.contains("invalid port range"), "{p:?}");
        assert_eq!(p.line, Some(27));
    }

    #[test]
    fn duplicate_server_points_at_the_second_one() {
        let p = one_error(&GOOD.replace("name = \"server2\"", "name = \"server1\""));
        assert!(
            p.message.contains("duplicate server name \"server1\""),
            "{p:?}"
        );
        assert_eq!(p.line, Some(41));
    }

    #[test]
    fn duplicate_backend_and_missing_backend() {
        let dup = format!("{GOOD}\n[[backend]]\nname = \"tcp_back\"\n");
        let p = one_error(&dup);
        assert!(p.message.contains("duplicate backend name"), "{p:?}");
        assert_eq!(p.line, Some(45));

        let p = one_error(&GOOD.replace("backend = \"tcp_back\"", "backend = \"nope\""));
        assert!(p.message.contains("unknown backend \"nope\""), "{p:?}");
        assert_eq!(p.line, Some(28), "the line of the `backend` field");
    }

    #[test]
    fn overlapping_binds_across_frontends() {
        let text = format!(
            "{GOOD}\n[[frontend]]\nname = \"other\"\nbind = [\"127.0.0.1:8002\"]\nbackend = \"tcp_back\"\n"
        );
        let p = one_error(&text);
        assert!(
            p.message.contains("overlaps bind 0.0.0.0:8001-8003"),
            "{p:?}"
        );
        assert_eq!(p.line, Some(46), "the line of the `bind` field");
    }

    #[test]
    fn wrong_types_and_missing_sections() {
        let p = one_error(&GOOD.replace("vrid = 51", "vrid = \"51\""));
        assert!(p.message.contains("invalid type"), "{p:?}");
        let p = one_error("[[backend]]\nname = \"b\"\n");
        assert!(p.message.contains("missing field `node`"), "{p:?}");
        let p = one_error(&GOOD.replace("balance = \"leastconn\"", "balance = \"random\""));
        assert!(p.message.contains("unknown variant `random`"), "{p:?}");
        assert_eq!(p.line, Some(33));
    }

    #[test]
    fn cluster_and_vrrp_sections_are_checked() {
        let problems = errors(
            &GOOD
                .replace("{ id = 1, raft", "{ id = 4, raft")
                .replace("priority = 150", "priority = 0")
                .replace("advert_interval = \"1s\"", "advert_interval = \"5ms\"")
                .replace("198.18.0.100/24", "198.18.0.100/40"),
        );
        let text: Vec<_> = problems.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(problems.len(), 4, "{text:#?}");
        assert!(text.iter().any(|m| m.contains("id 1 is not a member")));
        assert!(text.iter().any(|m| m.contains("vrrp.priority")));
        assert!(text.iter().any(|m| m.contains("advert_interval")));
        assert!(text.iter().any(|m| m.contains("invalid address")));
        assert!(problems.iter().all(|p| p.line.is_some()));
    }

    #[test]
    fn rendered_errors_name_file_line_and_reason() {
        let err = parse(
            Path::new("/etc/ballast/ballast.toml"),
            &GOOD.replace("8001-8003", "8003-8001"),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("error: /etc/ballast/ballast.toml:27:"),
            "{text}"
        );
    }

    #[test]
    fn vrrp_udp_transport_parses() {
        let text = GOOD.replace(
            "preempt = true\n",
            "preempt = true\ntransport = \"udp\"\nudp_listen = \"127.0.0.11:9112\"\nudp_peers = [\"127.0.0.12:9112\"]\n",
        );
        let config = parse(Path::new("u.toml"), &text).unwrap();
        let vrrp = config.vrrp.as_ref().unwrap();
        assert_eq!(vrrp.transport, VrrpTransport::Udp);
        assert_eq!(vrrp.udp_listen, Some("127.0.0.11:9112".parse().unwrap()));
        assert_eq!(vrrp.udp_peers, vec!["127.0.0.12:9112".parse().unwrap()]);
        assert!(config.to_string().contains("over udp"), "{config}");
        // The default stays the raw transport.
        let raw = parse(Path::new("r.toml"), GOOD).unwrap();
        assert_eq!(raw.vrrp.unwrap().transport, VrrpTransport::Raw);
    }

    #[test]
    fn vrrp_udp_transport_errors_are_located() {
        let vrrp_line = Some(17);
        let with =
            |extra: &str| GOOD.replace("preempt = true\n", &format!("preempt = true\n{extra}"));

        let p = one_error(&with(
            "transport = \"udp\"\nudp_peers = [\"127.0.0.12:9112\"]\n",
        ));
        assert!(p.message.contains("vrrp.udp_listen is required"), "{p:?}");
        assert_eq!(p.line, vrrp_line);

        let p = one_error(&with(
            "transport = \"udp\"\nudp_listen = \"127.0.0.11:9112\"\n",
        ));
        assert!(
            p.message.contains("vrrp.udp_peers needs at least one"),
            "{p:?}"
        );
        assert_eq!(p.line, vrrp_line);

        let p = one_error(&with(
            "transport = \"udp\"\nudp_listen = \"0.0.0.0:9112\"\nudp_peers = [\"127.0.0.12:9112\"]\n",
        ));
        assert!(p.message.contains("concrete IPv4 address"), "{p:?}");

        let p = one_error(&with(
            "transport = \"udp\"\nudp_listen = \"127.0.0.11:9112\"\nudp_peers = [\"127.0.0.11:9112\"]\n",
        ));
        assert!(p.message.contains("own udp_listen"), "{p:?}");

        let p = one_error(&with("udp_listen = \"127.0.0.11:9112\"\n"));
        assert!(p.message.contains("only used with transport"), "{p:?}");
        assert_eq!(p.line, vrrp_line);

        let p = one_error(&with("transport = \"tcp\"\n"));
        assert!(p.message.contains("unknown variant `tcp`"), "{p:?}");
        assert_eq!(p.line, Some(24), "the line of the `transport` field");

        let p = one_error(&with("udp_peers = [\"nope\"]\n"));
        assert!(p.message.contains("invalid socket address"), "{p:?}");
    }

    #[test]
    fn minimal_single_node_config() {
        let text = r#"
[node]
id = 1
data_dir = "/tmp/x"
api_listen = "127.0.0.1:0"

[[frontend]]
name = "f"
bind = ["127.0.0.1:8001"]
backend = "b"

[[backend]]
name = "b"
servers = [{ name = "s1", addr = "127.0.0.1:7001" }]
"#;
        let config = parse(Path::new("m.toml"), text).unwrap();
        assert!(config.cluster.is_none() && config.vrrp.is_none());
        assert_eq!(config.node.role, Role::Lb);
        assert_eq!(
            config.model.backends["b"].timeout_queue,
            Duration::from_secs(30)
        );
    }
}
