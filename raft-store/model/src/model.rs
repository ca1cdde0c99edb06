//! The cluster model: frontends, backends and servers, as the config file seeds it and
//! (later) as Raft replicates it and the API changes it.
//!
//! This is the single definition of what a valid model is. The config loader
//! (`node::config`) and the API both build a [`ModelSpec`] (lists, as a user writes them)
//! and turn it into a [`ClusterModel`] (maps keyed by name) through [`ClusterModel::from_spec`],
//! so the two can never disagree on what they accept. Errors carry a [`Subject`] so each
//! front end can point at the right place (a line of the TOML file, a JSON field).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::ToSchema;

/// Largest port range one bind may open; a typo such as `8001-80010` should fail loudly
/// instead of opening thousands of listeners.
pub const MAX_PORTS_PER_BIND: u32 = 1024;

/// The model as a user writes it: ordered lists, possibly with duplicates or dangling
/// references. Only [`ClusterModel::from_spec`] turns it into something usable.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    #[serde(default, rename = "frontend")]
    pub frontends: Vec<Frontend>,
    #[serde(default, rename = "backend")]
    pub backends: Vec<Backend>,
}

/// A validated model. Maps are `BTreeMap` so that iteration order, and everything derived
/// from it, is the same on every replica.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterModel {
    pub frontends: BTreeMap<String, Frontend>,
    pub backends: BTreeMap<String, Backend>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Frontend {
    pub name: String,
    #[schema(value_type = Vec<String>, example = json!(["0.0.0.0:8001-8003"]))]
    pub bind: Vec<Bind>,
    pub backend: String,
    #[serde(default = "defaults::timeout_client", with = "duration_text")]
    #[schema(value_type = String, example = "15h")]
    pub timeout_client: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    pub name: String,
    #[serde(default)]
    pub balance: Balance,
    #[serde(default = "defaults::timeout_server", with = "duration_text")]
    #[schema(value_type = String, example = "15h")]
    pub timeout_server: Duration,
    #[serde(default = "defaults::timeout_connect", with = "duration_text")]
    #[schema(value_type = String, example = "5s")]
    pub timeout_connect: Duration,
    #[serde(default = "defaults::timeout_queue", with = "duration_text")]
    #[schema(value_type = String, example = "30s")]
    pub timeout_queue: Duration,
    #[serde(default)]
    pub stick: Option<Stick>,
    #[serde(default)]
    pub health: Option<HealthCheck>,
    #[serde(default)]
    pub servers: Vec<Server>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Balance {
    /// Fewest active connections relative to weight.
    #[default]
    Leastconn,
    /// Smooth weighted round robin.
    Roundrobin,
    /// Weighted rendezvous hash of the client address: adding or removing one of N
    /// servers moves only about 1/N of the clients.
    Source,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StickOn {
    /// The client's source IP address, without port.
    Src,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Stick {
    pub on: StickOn,
    #[serde(default = "defaults::stick_size")]
    pub size: usize,
    #[serde(default = "defaults::stick_expire", with = "duration_text")]
    #[schema(value_type = String, example = "16h")]
    pub expire: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthKind {
    Tcp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub kind: HealthKind,
    #[serde(default = "defaults::health_interval", with = "duration_text")]
    #[schema(value_type = String, example = "2s")]
    pub interval: Duration,
    #[serde(default = "defaults::health_timeout", with = "duration_text")]
    #[schema(value_type = String, example = "1s")]
    pub timeout: Duration,
    #[serde(default = "defaults::rise")]
    pub rise: u32,
    #[serde(default = "defaults::fall")]
    pub fall: u32,
    /// Sent after the connection is established.
    #[serde(default)]
    pub send: Option<String>,
    /// The reply must start with these bytes.
    #[serde(default)]
    pub expect: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub name: String,
    #[schema(value_type = String, example = "127.0.0.1:7001")]
    pub addr: SocketAddr,
    #[serde(default = "defaults::weight")]
    pub weight: u32,
    /// Concurrent connections; 0 means unlimited. Further connections wait in a FIFO
    /// queue for at most the backend's `timeout_queue`.
    #[serde(default)]
    pub maxconn: u32,
    #[serde(default)]
    pub admin: AdminState,
}

/// A node's job in the cluster (DESIGN principle 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Proxy + VRRP + Raft voter.
    #[default]
    Lb,
    /// Raft voter and API only, so that a pair of lb nodes has a quorum of three.
    Witness,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Lb => "lb",
            Role::Witness => "witness",
        }
    }
}

/// What the operator wants, independent of what health checks observe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    #[default]
    Ready,
    /// Clients already stuck to the server still land there; no new clients.
    Drain,
    /// Nothing new lands there; its stuck clients move on their next connection.
    Maint,
}

impl AdminState {
    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        }
    }
}

impl Balance {
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::Leastconn => "leastconn",
            Balance::Roundrobin => "roundrobin",
            Balance::Source => "source",
        }
    }
}

mod defaults {
    use std::time::Duration;

    const HOUR: u64 = 3600;
    pub fn timeout_client() -> Duration {
        Duration::from_secs(15 * HOUR)
    }
    pub fn timeout_server() -> Duration {
        Duration::from_secs(15 * HOUR)
    }
    pub fn timeout_connect() -> Duration {
        Duration::from_secs(5)
    }
    pub fn timeout_queue() -> Duration {
        Duration::from_secs(30)
    }
    pub fn stick_size() -> usize {
        200_000
    }
    pub fn stick_expire() -> Duration {
        Duration::from_secs(16 * HOUR)
    }
    pub fn health_interval() -> Duration {
        Duration::from_secs(2)
    }
    pub fn health_timeout() -> Duration {
        Duration::from_secs(1)
    }
    pub fn rise() -> u32 {
        2
    }
    pub fn fall() -> u32 {
        3
    }
    pub fn weight() -> u32 {
        1
    }
}

/// A listen address with one port or an inclusive port range: `0.0.0.0:8001-8003`,
/// `[::1]:9000`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bind {
    pub ip: IpAddr,
    pub first_port: u16,
    pub last_port: u16,
}

impl Bind {
    pub fn addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        (self.first_port..=self.last_port).map(move |port| SocketAddr::new(self.ip, port))
    }

    /// Two binds collide when they could claim the same socket: same family, a shared
    /// port, and the same IP or a wildcard on either side.
    pub fn overlaps(&self, other: &Bind) -> bool {
        let same_family = self.ip.is_ipv4() == other.ip.is_ipv4();
        let ip_collides =
            self.ip == other.ip || self.ip.is_unspecified() || other.ip.is_unspecified();
        let ports_meet = self.first_port <= other.last_port && other.first_port <= self.last_port;
        same_family && ip_collides && ports_meet
    }
}

impl fmt::Display for Bind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            IpAddr::V4(ip) => write!(f, "{ip}:{}", self.first_port)?,
            IpAddr::V6(ip) => write!(f, "[{ip}]:{}", self.first_port)?,
        }
        if self.last_port != self.first_port {
            write!(f, "-{}", self.last_port)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindParseError {
    #[error("invalid bind address {0:?}: expected IP:PORT or IP:PORT-PORT")]
    Shape(String),
    #[error("invalid bind address {0:?}: bad IP address")]
    Ip(String),
    #[error("invalid port range {0:?}: ports are 1-65535 and the first must not exceed the last")]
    Ports(String),
    #[error("invalid port range {0:?}: at most {MAX_PORTS_PER_BIND} ports per bind")]
    TooWide(String),
}

impl FromStr for Bind {
    type Err = BindParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (host, ports) = text
            .rsplit_once(':')
            .ok_or_else(|| BindParseError::Shape(text.to_string()))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let ip: IpAddr = host
            .parse()
            .map_err(|_| BindParseError::Ip(text.to_string()))?;
        let parse_port = |p: &str| -> Result<u16, BindParseError> {
            match p.trim().parse::<u16>() {
                Ok(port) if port > 0 => Ok(port),
                _ => Err(BindParseError::Ports(text.to_string())),
            }
        };
        let (first_port, last_port) = match ports.split_once('-') {
            Some((a, b)) => (parse_port(a)?, parse_port(b)?),
            None => {
                let port = parse_port(ports)?;
                (port, port)
            }
        };
        if first_port > last_port {
            return Err(BindParseError::Ports(text.to_string()));
        }
        if u32::from(last_port - first_port) + 1 > MAX_PORTS_PER_BIND {
            return Err(BindParseError::TooWide(text.to_string()));
        }
        Ok(Bind {
            ip,
            first_port,
            last_port,
        })
    }
}

impl Serialize for Bind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Bind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {text:?}: expected a number with a unit (ms, s, m, h, d), e.g. \"500ms\", \"2s\", \"15h\", \"1h30m\"")]
pub struct DurationParseError {
    pub text: String,
}

/// Parses durations the way operators write them: `100ms`, `2s`, `15h`, `1h30m`.
/// A bare number is rejected on purpose: "is 30 seconds or milliseconds?" is exactly the
/// kind of question a load balancer config must not leave open.
pub fn parse_duration(text: &str) -> Result<Duration, DurationParseError> {
    let err = || DurationParseError {
        text: text.to_string(),
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(err());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        if digits == 0 {
            return Err(err());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_ms: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(err()),
        };
        rest = &rest[unit_len..];
        let part = value.checked_mul(unit_ms).ok_or_else(err)?;
        total = total
            .checked_add(Duration::from_millis(part))
            .ok_or_else(err)?;
    }
    Ok(total)
}

/// The inverse of [`parse_duration`], choosing the largest unit that divides evenly so
/// that what the API shows reads like what the operator wrote.
pub fn format_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms > 0 && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// serde adapter for durations written as text.
pub mod duration_text {
    use super::{format_duration, parse_duration};
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_duration(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// What a validation error is about, so a front end can point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Frontend(String),
    Backend(String),
    Server { backend: String, server: String },
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Frontend(name) => write!(f, "frontend {name:?}"),
            Subject::Backend(name) => write!(f, "backend {name:?}"),
            Subject::Server { backend, server } => {
                write!(f, "backend {backend:?} server {server:?}")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{subject}: {reason}")]
pub struct ModelError {
    pub subject: Subject,
    /// The field of the subject at fault, when one is (`bind`, `backend`, `timeout_queue`).
    pub field: Option<&'static str>,
    pub reason: String,
}

impl ModelError {
    fn new(subject: Subject, reason: impl Into<String>) -> Self {
        ModelError {
            subject,
            field: None,
            reason: reason.into(),
        }
    }

    fn at(subject: Subject, field: &'static str, reason: impl Into<String>) -> Self {
        ModelError {
            field: Some(field),
            ..ModelError::new(subject, reason)
        }
    }
}

fn check_name(subject: &Subject, kind: &str, name: &str, errors: &mut Vec<ModelError>) {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !valid {
        errors.push(ModelError::new(
            subject.clone(),
            format!("invalid {kind} name {name:?}: use 1-64 characters from a-z, A-Z, 0-9, '_', '-', '.'"),
        ));
    }
}

impl ClusterModel {
    /// Validates a whole spec and returns every problem found, not just the first, so an
    /// operator fixes a file in one pass.
    pub fn from_spec(spec: ModelSpec) -> Result<ClusterModel, Vec<ModelError>> {
        let mut errors = Vec::new();
        let mut backends = BTreeMap::new();
        for backend in spec.backends {
            let subject = Subject::Backend(backend.name.clone());
            check_name(&subject, "backend", &backend.name, &mut errors);
            validate_backend(&backend, &mut errors);
            if backends.contains_key(&backend.name) {
                errors.push(ModelError::new(
                    subject,
                    format!("duplicate backend name {:?}", backend.name),
                ));
            } else {
                backends.insert(backend.name.clone(), backend);
            }
        }
        let mut frontends: BTreeMap<String, Frontend> = BTreeMap::new();
        for frontend in spec.frontends {
            let subject = Subject::Frontend(frontend.name.clone());
            check_name(&subject, "frontend", &frontend.name, &mut errors);
            if frontend.bind.is_empty() {
                errors.push(ModelError::at(
                    subject.clone(),
                    "bind",
                    "needs at least one bind",
                ));
            }
            if !backends.contains_key(&frontend.backend) {
                errors.push(ModelError::at(
                    subject.clone(),
                    "backend",
                    format!("unknown backend {:?}", frontend.backend),
                ));
            }
            if frontend.timeout_client.is_zero() {
                errors.push(ModelError::new(
                    subject.clone(),
                    "timeout_client must be > 0",
                ));
            }
            for (i, a) in frontend.bind.iter().enumerate() {
                for b in &frontend.bind[i + 1..] {
                    if a.overlaps(b) {
                        errors.push(ModelError::at(
                            subject.clone(),
                            "bind",
                            format!("binds {a} and {b} overlap"),
                        ));
                    }
                }
            }
            for other in frontends.values() {
                for a in &frontend.bind {
                    for b in other.bind.iter().filter(|b| a.overlaps(b)) {
                        errors.push(ModelError::at(
                            subject.clone(),
                            "bind",
                            format!("bind {a} overlaps bind {b} of frontend {:?}", other.name),
                        ));
                    }
                }
            }
            if frontends.contains_key(&frontend.name) {
                errors.push(ModelError::new(
                    subject,
                    format!("duplicate frontend name {:?}", frontend.name),
                ));
            } else {
                frontends.insert(frontend.name.clone(), frontend);
            }
        }
        if errors.is_empty() {
            Ok(ClusterModel {
                frontends,
                backends,
            })
        } else {
            Err(errors)
        }
    }

    /// What changes from `self` to `next`, by name: what `apply` reports (and, with
    /// `dry_run`, only reports).
    pub fn diff(&self, next: &ClusterModel) -> ModelDiff {
        fn names<T: PartialEq>(
            old: &BTreeMap<String, T>,
            new: &BTreeMap<String, T>,
        ) -> NameChanges {
            NameChanges {
                added: new
                    .keys()
                    .filter(|k| !old.contains_key(*k))
                    .cloned()
                    .collect(),
                removed: old
                    .keys()
                    .filter(|k| !new.contains_key(*k))
                    .cloned()
                    .collect(),
                changed: new
                    .iter()
                    .filter(|(k, v)| old.get(*k).is_some_and(|o| o != *v))
                    .map(|(k, _)| k.clone())
                    .collect(),
            }
        }
        let servers = next
            .backends
            .values()
            .filter_map(|b| {
                let old = self.backends.get(&b.name)?;
                let index = |list: &[Server]| -> BTreeMap<String, Server> {
                    list.iter().map(|s| (s.name.clone(), s.clone())).collect()
                };
                let changes = names(&index(&old.servers), &index(&b.servers));
                (!changes.is_empty()).then(|| (b.name.clone(), changes))
            })
            .collect();
        ModelDiff {
            frontends: names(&self.frontends, &next.frontends),
            backends: names(&self.backends, &next.backends),
            servers,
        }
    }

    pub fn to_spec(&self) -> ModelSpec {
        ModelSpec {
            frontends: self.frontends.values().cloned().collect(),
            backends: self.backends.values().cloned().collect(),
        }
    }
}

/// Names added, removed and changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NameChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl NameChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ModelDiff {
    pub frontends: NameChanges,
    pub backends: NameChanges,
    /// Per backend present before and after: its servers' changes.
    pub servers: BTreeMap<String, NameChanges>,
}

impl ModelDiff {
    pub fn is_empty(&self) -> bool {
        self.frontends.is_empty() && self.backends.is_empty() && self.servers.is_empty()
    }
}

fn validate_backend(backend: &Backend, errors: &mut Vec<ModelError>) {
    let subject = Subject::Backend(backend.name.clone());
    for (field, value) in [
        ("timeout_server", backend.timeout_server),
        ("timeout_connect", backend.timeout_connect),
        ("timeout_queue", backend.timeout_queue),
    ] {
        if value.is_zero() {
            errors.push(ModelError::new(
                subject.clone(),
                format!("{field} must be > 0"),
            ));
        }
    }
    if let Some(stick) = &backend.stick {
        if stick.size == 0 {
            errors.push(ModelError::at(
                subject.clone(),
                "stick",
                "stick.size must be > 0",
            ));
        }
        if stick.expire.is_zero() {
            errors.push(ModelError::at(
                subject.clone(),
                "stick",
                "stick.expire must be > 0",
            ));
        }
    }
    if let Some(health) = &backend.health {
        if health.interval.is_zero() || health.timeout.is_zero() {
            errors.push(ModelError::at(
                subject.clone(),
                "health",
                "health.interval and health.timeout must be > 0",
            ));
        }
        if health.rise == 0 || health.fall == 0 {
            errors.push(ModelError::at(
                subject.clone(),
                "health",
                "health.rise and health.fall must be >= 1",
            ));
        }
        if health.expect.as_deref().is_some_and(str::is_empty) {
            errors.push(ModelError::at(
                subject.clone(),
                "health",
                "health.expect must not be empty",
            ));
        }
    }
    let mut seen = BTreeSet::new();
    for server in &backend.servers {
        let subject = Subject::Server {
            backend: backend.name.clone(),
            server: server.name.clone(),
        };
        check_name(&subject, "server", &server.name, errors);
        if !seen.insert(server.name.as_str()) {
            errors.push(ModelError::new(
                subject.clone(),
                format!(
                    "duplicate server name {:?} in backend {:?}",
                    server.name, backend.name
                ),
            ));
        }
        if server.weight == 0 || server.weight > 256 {
            errors.push(ModelError::new(
                subject.clone(),
                "weight must be between 1 and 256 (use admin = \"drain\" to stop new clients)",
            ));
        }
        if server.addr.port() == 0 || server.addr.ip().is_unspecified() {
            errors.push(ModelError::new(
                subject,
                format!("addr {} needs a concrete IP and a port", server.addr),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str, port: u16) -> Server {
        Server {
            name: name.into(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            weight: 1,
            maxconn: 0,
            admin: AdminState::Ready,
        }
    }

    fn backend(name: &str, servers: Vec<Server>) -> Backend {
        Backend {
            name: name.into(),
            balance: Balance::Leastconn,
            timeout_server: defaults::timeout_server(),
            timeout_connect: defaults::timeout_connect(),
            timeout_queue: defaults::timeout_queue(),
            stick: None,
            health: None,
            servers,
        }
    }

    fn frontend(name: &str, binds: &[&str], backend: &str) -> Frontend {
        Frontend {
            name: name.into(),
            bind: binds.iter().map(|b| b.parse().unwrap()).collect(),
            backend: backend.into(),
            timeout_client: defaults::timeout_client(),
        }
    }

    #[test]
    fn durations_parse_with_units_and_reject_the_rest() {
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("15h"), Ok(Duration::from_secs(54_000)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        for bad in [
            "",
            "5",
            "5x",
            "h",
            "1.5s",
            "-1s",
            "s5",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn durations_format_back_to_their_largest_even_unit() {
        for text in ["15h", "500ms", "2s", "90m", "1d", "0ms"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }

    #[test]
    fn binds_parse_ports_and_ranges() {
        let bind: Bind = "0.0.0.0:8001-8003".parse().unwrap();
        assert_eq!((bind.first_port, bind.last_port), (8001, 8003));
        assert_eq!(bind.addrs().count(), 3);
        let v6: Bind = "[::1]:9000".parse().unwrap();
        assert_eq!(v6.to_string(), "[::1]:9000");
        assert!(matches!(
            "1.2.3.4:8003-8001".parse::<Bind>(),
            Err(BindParseError::Ports(_))
        ));
        assert!(matches!(
            "1.2.3.4:0".parse::<Bind>(),
            Err(BindParseError::Ports(_))
        ));
        assert!(matches!(
            "1.2.3.4:1-2000".parse::<Bind>(),
            Err(BindParseError::TooWide(_))
        ));
        assert!(matches!(
            "nohost:80".parse::<Bind>(),
            Err(BindParseError::Ip(_))
        ));
        assert!(matches!(
            "8080".parse::<Bind>(),
            Err(BindParseError::Shape(_))
        ));
    }

    #[test]
    fn overlap_considers_wildcards_and_families() {
        let b = |s: &str| s.parse::<Bind>().unwrap();
        assert!(b("0.0.0.0:8001-8003").overlaps(&b("127.0.0.1:8003")));
        assert!(!b("127.0.0.1:8001-8003").overlaps(&b("127.0.0.2:8001")));
        assert!(!b("0.0.0.0:8001").overlaps(&b("[::1]:8001")));
        assert!(!b("127.0.0.1:8001-8003").overlaps(&b("127.0.0.1:8004")));
    }

    #[test]
    fn a_valid_spec_becomes_a_model() {
        let spec = ModelSpec {
            frontends: vec![frontend("f", &["127.0.0.1:8001-8003"], "b")],
            backends: vec![backend("b", vec![server("s1", 7001), server("s2", 7002)])],
        };
        let model = ClusterModel::from_spec(spec.clone()).unwrap();
        assert_eq!(model.backends["b"].servers.len(), 2);
        assert_eq!(model.to_spec(), spec);
    }

    #[test]
    fn every_problem_is_reported_with_its_subject() {
        let spec = ModelSpec {
            frontends: vec![
                frontend("f1", &["0.0.0.0:8001-8003"], "missing"),
                frontend("f2", &["127.0.0.1:8002"], "b"),
                frontend("f2", &["127.0.0.1:9000"], "b"),
            ],
            backends: vec![
                backend("b", vec![server("s1", 7001), server("s1", 7002)]),
                backend("b", vec![]),
            ],
        };
        let errors = ClusterModel::from_spec(spec).unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let has = |needle: &str| text.iter().any(|t| t.contains(needle));
        assert!(
            has("frontend \"f1\": unknown backend \"missing\""),
            "{text:#?}"
        );
        assert!(has("duplicate server name \"s1\""), "{text:#?}");
        assert!(has("duplicate backend name \"b\""), "{text:#?}");
        assert!(has("duplicate frontend name \"f2\""), "{text:#?}");
        assert!(
            has("overlaps bind 0.0.0.0:8001-8003 of frontend \"f1\""),
            "{text:#?}"
        );
        assert_eq!(errors.len(), 5, "{text:#?}");
    }

    #[test]
    fn server_fields_are_checked() {
        let mut bad = server("bad name", 0);
        bad.weight = 0;
        let spec = ModelSpec {
            frontends: vec![],
            backends: vec![backend("b", vec![bad])],
        };
        let errors = ClusterModel::from_spec(spec).unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:#?}");
        assert!(errors
            .iter()
            .all(|e| matches!(e.subject, Subject::Server { .. })));
    }

    #[test]
    fn diff_names_what_changes() {
        let before = ClusterModel::from_spec(ModelSpec {
            frontends: vec![frontend("f", &["127.0.0.1:8001"], "b")],
            backends: vec![backend("b", vec![server("s1", 7001), server("s2", 7002)])],
        })
        .unwrap();
        let mut s1 = server("s1", 7001);
        s1.weight = 5;
        let after = ClusterModel::from_spec(ModelSpec {
            frontends: vec![frontend("g", &["127.0.0.1:8002"], "b")],
            backends: vec![backend("b", vec![s1, server("s3", 7003)])],
        })
        .unwrap();
        let d = before.diff(&after);
        assert_eq!(d.frontends.added, vec!["g"]);
        assert_eq!(d.frontends.removed, vec!["f"]);
        assert_eq!(d.backends.changed, vec!["b"]);
        let servers = &d.servers["b"];
        assert_eq!(
            (&servers.added, &servers.removed, &servers.changed),
            (
                &vec!["s3".to_string()],
                &vec!["s2".to_string()],
                &vec!["s1".to_string()]
            )
        );
        assert!(after.diff(&after).is_empty());
    }

    #[test]
    fn model_round_trips_through_json() {
        let model = ClusterModel::from_spec(ModelSpec {
            frontends: vec![frontend("f", &["[::1]:8001-8002"], "b")],
            backends: vec![backend("b", vec![server("s1", 7001)])],
        })
        .unwrap();
        let json = serde_json::to_string(&model).unwrap();
        assert!(json.contains("\"15h\""), "{json}");
        let back: ClusterModel = serde_json::from_str(&json).unwrap();
        assert_eq!(back, model);
    }
}
