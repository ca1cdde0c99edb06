//! Rendering: the API's typed answers in, aligned text out (pure, unit-tested).

use std::collections::BTreeMap;
use std::fmt::Display;

use ballast_api::types::Status;
use ballast_api::types::{
    Applied, BackendList, BackendWithStats, DrillList, DrillReport, FrontendList, StickPage,
    UpgradeReport,
};
use ballast_model::model::{format_duration, AdminState, HealthCheck, NameChanges, Stick};
use serde::Serialize;

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

/// An optional figure as table text; absent is `-`.
fn opt<T: Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// A model enum (`leastconn`, `src`, `tcp`, `ready`) by its wire name.
fn label<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "-".into(),
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
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

pub fn render_status(v: &Status) -> String {
    let raft = &v.raft;
    let process = &v.process;
    let mut process_line = if process.pid == 0 {
        "unknown (the node predates live upgrades)".to_string()
    } else {
        format!(
            "pid {}, version {}, {}; live upgrades {}",
            process.pid, process.version, process.binary, process.upgrades
        )
    };
    if let Some(last) = &process.last_upgrade {
        process_line.push_str(&format!(
            " (last from pid {}: {} connections, paused {} ms, {} ms in all)",
            last.from_pid, last.connections, last.pause_ms, last.duration_ms
        ));
    }
    let mut pairs = vec![
        ("node", format!("{} ({})", v.node_id, v.role.as_str())),
        ("process", process_line),
        ("revision", v.revision.to_string()),
        (
            "raft",
            format!(
                "{}, leader {}, term {}, last log {}, applied {}, snapshot {}",
                raft.state,
                opt(raft.leader),
                raft.term,
                opt(raft.last_log_index),
                opt(raft.last_applied),
                opt(raft.snapshot_index),
            ),
        ),
    ];
    let lag = match v.lag_entries {
        Some(n) => format!("{n} entries behind the leader"),
        None => "no leader reachable".into(),
    };
    let state = if v.caught_up {
        "caught up"
    } else {
        "not caught up"
    };
    pairs.push(("replica", format!("{state} ({lag})")));
    if let Some(pending) = v.journal_pending {
        pairs.push(("journal", format!("{pending} stick decisions pending")));
    }
    pairs.push((
        "vrrp",
        match &v.vrrp {
            Some(vrrp) => format!(
                "{} on {} vrid {}, priority {} (effective {}), VIPs {}",
                vrrp.state,
                vrrp.interface,
                vrrp.vrid,
                vrrp.priority,
                vrrp.effective_priority,
                if vrrp.virtual_ips.is_empty() {
                    "-".into()
                } else {
                    vrrp.virtual_ips.join(", ")
                }
            ),
            None => "off".into(),
        },
    ));
    if let Some(failing) = v
        .tracked_conditions_failing
        .as_ref()
        .filter(|f| !f.is_empty())
    {
        let names: Vec<&str> = failing.iter().map(|c| c.as_str()).collect();
        pairs.push(("failing", names.join(", ")));
    }
    let mut out = key_values(&pairs);

    let mut members = Table::new(&["MEMBER", "ROLE", "VOTER", "RAFT", "API", ""]);
    for (id, m) in &raft.members {
        let mut notes = Vec::new();
        if Some(*id) == raft.leader {
            notes.push("leader");
        }
        if *id == v.node_id {
            notes.push("this node");
        }
        members.row(vec![
            id.to_string(),
            m.role.as_str().into(),
            yes_no(raft.voters.contains(id)).into(),
            empty_dash(m.raft.clone()),
            empty_dash(m.api.clone()),
            notes.join(", "),
        ]);
    }
    if !members.is_empty() {
        out.push('\n');
        out.push_str(&members.render());
    }

    let mut health = Table::new(&["BACKEND", "SERVER", "HEALTH", "ADMIN"]);
    for (backend, servers) in &v.health {
        for (server, h) in servers {
            health.row(vec![
                backend.clone(),
                server.clone(),
                up_down(Some(h.effective_up)),
                h.admin.as_str().into(),
            ]);
        }
    }
    if !health.is_empty() {
        out.push('\n');
        out.push_str(&health.render());
    }
    out
}

fn up_down(up: Option<bool>) -> String {
    match up {
        Some(true) => "up".into(),
        Some(false) => "down".into(),
        None => "-".into(),
    }
}

fn empty_dash(s: String) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

/// Live figures of one backend's servers by name: (up, connections).
fn stats_by_server(b: &BackendWithStats) -> BTreeMap<&str, (bool, u32)> {
    b.stats
        .iter()
        .flat_map(|s| &s.servers)
        .map(|s| (s.name.as_str(), (s.up, s.connections)))
        .collect()
}

fn stick_text(stick: Option<&Stick>) -> String {
    match stick {
        Some(s) => format!(
            "{} (size {}, expire {})",
            label(&s.on),
            s.size,
            format_duration(s.expire)
        ),
        None => "-".into(),
    }
}

fn health_text(health: Option<&HealthCheck>) -> String {
    match health {
        Some(h) => format!(
            "{} every {} (timeout {}, rise {}, fall {})",
            label(&h.kind),
            format_duration(h.interval),
            format_duration(h.timeout),
            h.rise,
            h.fall
        ),
        None => "-".into(),
    }
}

/// GET /v1/backends: one line per backend; `servers B` has the details.
pub fn render_backends(v: &BackendList) -> String {
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
    for b in &v.backends {
        let servers = &b.backend.servers;
        let stats = stats_by_server(b);
        let up = stats.values().filter(|(up, _)| *up).count();
        let conns: u64 = stats.values().map(|(_, c)| u64::from(*c)).sum();
        let ready = servers
            .iter()
            .filter(|s| s.admin == AdminState::Ready)
            .count();
        let live = |n: String| if b.stats.is_some() { n } else { "-".into() };
        table.row(vec![
            b.backend.name.clone(),
            label(&b.backend.balance),
            servers.len().to_string(),
            live(up.to_string()),
            ready.to_string(),
            live(conns.to_string()),
            b.backend.stick.as_ref().map_or_else(
                || "-".into(),
                |s| format!("{} {}", label(&s.on), format_duration(s.expire)),
            ),
            b.backend.health.as_ref().map_or_else(
                || "-".into(),
                |h| format!("{} {}", label(&h.kind), format_duration(h.interval)),
            ),
            format_duration(b.backend.timeout_server),
        ]);
    }
    let mut out = table.render();
    out.push_str(&format!("revision {}\n", v.revision));
    out
}

/// GET /v1/backends/{b}: the backend's settings, then one line per server.
pub fn render_servers(b: &BackendWithStats) -> String {
    let stats = stats_by_server(b);
    let mut table = Table::new(&[
        "SERVER", "ADDR", "WEIGHT", "MAXCONN", "ADMIN", "HEALTH", "CONNS",
    ])
    .right(&[2, 3, 6]);
    for s in &b.backend.servers {
        let live = stats.get(s.name.as_str());
        table.row(vec![
            s.name.clone(),
            s.addr.to_string(),
            s.weight.to_string(),
            match s.maxconn {
                0 => "-".into(),
                n => n.to_string(),
            },
            s.admin.as_str().into(),
            up_down(live.map(|(up, _)| *up)),
            opt(live.map(|(_, conns)| *conns)),
        ]);
    }
    let backend = &b.backend;
    let settings = key_values(&[
        ("backend", backend.name.clone()),
        ("balance", label(&backend.balance)),
        (
            "timeouts",
            format!(
                "server {}, connect {}, queue {}",
                format_duration(backend.timeout_server),
                format_duration(backend.timeout_connect),
                format_duration(backend.timeout_queue)
            ),
        ),
        ("stick", stick_text(backend.stick.as_ref())),
        ("health", health_text(backend.health.as_ref())),
    ]);
    format!("{settings}\n{}", table.render())
}

pub fn render_frontends(v: &FrontendList) -> String {
    let mut table = Table::new(&["FRONTEND", "BIND", "BACKEND", "TIMEOUT_CLIENT"]);
    for f in &v.frontends {
        let binds: Vec<String> = f.bind.iter().map(ToString::to_string).collect();
        table.row(vec![
            f.name.clone(),
            binds.join(", "),
            f.backend.clone(),
            format_duration(f.timeout_client),
        ]);
    }
    let mut out = table.render();
    out.push_str(&format!("revision {}\n", v.revision));
    out
}

/// `limit` is the page size asked for, `now_ms` the wall clock (for "last seen").
pub fn render_stick(v: &StickPage, limit: usize, now_ms: u64) -> String {
    let entries = &v.entries;
    let mut table =
        Table::new(&["KEY", "SERVER", "LAST_SEEN", "OPEN_HERE", "EXPIRES_IN"]).right(&[3]);
    for e in entries {
        table.row(vec![
            e.key.to_string(),
            e.server.clone(),
            format!("{} ago", fmt_ms(now_ms.saturating_sub(e.last_seen_ms))),
            e.open_here.to_string(),
            match e.expires_in_ms {
                Some(ms) => fmt_ms(ms),
                None if e.open_here > 0 => "connected".into(),
                None => "-".into(),
            },
        ]);
    }
    let mut out = String::new();
    if !entries.is_empty() {
        out.push_str(&table.render());
    }
    out.push_str(&format!(
        "{} of {} entries in backend {} (revision {})\n",
        entries.len(),
        v.total,
        v.backend,
        v.revision
    ));
    if entries.len() >= limit && entries.len() < v.total {
        if let Some(last) = entries.last() {
            out.push_str(&format!(
                "next page: ballast ctl stick {} --after {} --limit {limit}\n",
                v.backend, last.key
            ));
        }
    }
    out
}

/// Milliseconds after a drill's start, `-` until the event is recorded.
fn after(ms: Option<u64>) -> String {
    ms.map_or_else(|| "-".to_string(), |ms| format!("+{}", fmt_ms(ms)))
}

/// One drill report: the timeline, the figures and both nodes' tables.
/// `ctl upgrade`: what the new process took over, and how long the relays stood still.
pub fn render_upgrade(v: &UpgradeReport) -> String {
    format!(
        "upgraded: pid {} -> pid {}\n\
         handed over: {} connections ({} bytes in flight), {} waiting, {} listening sockets\n\
         relays paused {} ms; whole hand-over {} ms\n",
        v.from_pid,
        v.to_pid,
        v.connections,
        v.bytes_in_flight,
        v.waiting,
        v.listeners,
        v.pause_ms,
        v.duration_ms
    )
}

pub fn render_drill(v: &DrillReport) -> String {
    let mut out = format!(
        "drill {} ({}): node {} -> node {}  {}\n\n",
        v.id,
        v.kind.as_str(),
        opt(v.from),
        v.to,
        label(&v.state),
    );
    let mut timeline = Table::new(&["AFTER", "NODE", "EVENT"]).right(&[0, 1]);
    for e in &v.timeline {
        let shown = if e.after_ms < 0 {
            format!("-{}", fmt_ms(e.after_ms.unsigned_abs()))
        } else {
            format!("+{}", fmt_ms(e.after_ms as u64))
        };
        timeline.row(vec![shown, e.node.to_string(), e.event.as_str().into()]);
    }
    out.push_str(&timeline.render());
    let f = &v.figures;
    out.push_str(&format!(
        "\nVIP released {}, new master {}, gratuitous ARP {}, first connection {}, Raft leader {}\n",
        after(f.vip_released_ms),
        after(f.became_master_ms),
        after(f.garp_ms),
        after(f.first_connection_ms),
        after(f.leader_moved_ms),
    ));
    out.push_str(&format!(
        "stick entries lost: {}   not mirrored on the new master: {}   revision gap: {}\n",
        opt(f.stick_entries_lost),
        opt(f.stick_entries_not_mirrored),
        opt(f.revision_gap),
    ));
    if !v.nodes.is_empty() {
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
        for (node, s) in &v.nodes {
            table.row(vec![
                node.to_string(),
                s.revision.to_string(),
                s.replicated_entries.to_string(),
                s.dataplane_entries.to_string(),
                s.not_replicated.to_string(),
                s.not_mirrored.to_string(),
                s.journal_pending.to_string(),
            ]);
        }
        out.push('\n');
        out.push_str(&table.render());
    }
    if !v.missing.is_empty() {
        out.push_str(&format!("\nstill missing: {}\n", v.missing.join(", ")));
    }
    out
}

pub fn render_drills(v: &DrillList) -> String {
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
    for d in &v.drills {
        let f = &d.figures;
        table.row(vec![
            d.id.to_string(),
            d.kind.as_str().into(),
            opt(d.from),
            d.to.to_string(),
            label(&d.state),
            after(f.garp_ms),
            after(f.first_connection_ms),
            opt(f.stick_entries_lost),
        ]);
    }
    if table.is_empty() {
        return "no drills or takeovers recorded\n".into();
    }
    table.render()
}

/// The answer of POST /v1/apply: the diff by kind, then what was committed.
pub fn render_apply(v: &Applied, file: &str) -> String {
    let diff = &v.diff;
    let mut table = Table::new(&["CHANGE", "KIND", "NAME"]);
    let mut add = |kind: &str, changes: &NameChanges, prefix: &str| {
        for (label, names) in [
            ("add", &changes.added),
            ("change", &changes.changed),
            ("remove", &changes.removed),
        ] {
            for name in names {
                table.row(vec![label.into(), kind.into(), format!("{prefix}{name}")]);
            }
        }
    };
    add("frontend", &diff.frontends, "");
    add("backend", &diff.backends, "");
    for (backend, changes) in &diff.servers {
        add("server", changes, &format!("{backend}/"));
    }
    let revision = v.revision;
    if table.is_empty() {
        return format!("no changes: the cluster already matches {file} (revision {revision})\n");
    }
    let mut out = table.render();
    if v.dry_run {
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
    use serde_json::Value;

    /// A JSON answer as the API's type.
    fn typed<T: serde::de::DeserializeOwned>(v: Value) -> T {
        serde_json::from_value(v).unwrap()
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
            "tracked_conditions_failing": [],
            "yielded": false
        });
        assert_eq!(
            render_status(&typed(v.clone())),
            "node      1 (lb)\n\
             process   unknown (the node predates live upgrades)\n\
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
        let mut v = v;
        v["process"] = serde_json::json!({
            "pid": 4242, "started_at": 1, "version": "0.9.0", "binary": "/usr/local/bin/ballast",
            "upgrades": 2, "last_upgrade": {"from_pid": 4100, "to_pid": 4242, "at": 1,
            "listeners": 4, "connections": 900, "waiting": 0, "bytes_in_flight": 0,
            "pause_ms": 31, "duration_ms": 412}});
        let text = render_status(&typed(v));
        assert!(
            text.contains(
                "process   pid 4242, version 0.9.0, /usr/local/bin/ballast; live upgrades 2 \
                 (last from pid 4100: 900 connections, paused 31 ms, 412 ms in all)\n"
            ),
            "{text}"
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
            render_backends(&typed(v.clone())),
            "BACKEND   BALANCE    SERVERS  UP  READY  CONNS  STICK    HEALTH  TIMEOUT_SERVER\n\
             tcp_back  leastconn        2   1      1     15  src 16h  tcp 2s  15h\n\
             revision 9\n"
        );
        assert_eq!(
            render_servers(&typed(v["backends"][0].clone())),
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
        let text = render_backends(&typed(witness));
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
            render_frontends(&typed(v)),
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
            render_stick(&typed(v), 2, now),
            "KEY        SERVER  LAST_SEEN  OPEN_HERE  EXPIRES_IN\n\
             127.0.0.5  s1      3s ago             3  connected\n\
             127.0.0.6  s2      2m ago             0  58m\n\
             2 of 5 entries in backend b (revision 7)\n\
             next page: ballast ctl stick b --after 127.0.0.6 --limit 2\n"
        );
        let empty = serde_json::json!({"backend": "b", "total": 0, "revision": 7, "entries": []});
        assert_eq!(
            render_stick(&typed(empty), 1000, now),
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
            render_apply(&typed(v.clone()), "ballast.toml"),
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
        assert!(render_apply(&typed(applied), "ballast.toml")
            .ends_with("applied ballast.toml: revision 13\n"));
        let none = serde_json::json!({"dry_run": false, "revision": 12, "diff": {
            "frontends": {"added": [], "removed": [], "changed": []},
            "backends": {"added": [], "removed": [], "changed": []},
            "servers": {}}});
        assert_eq!(
            render_apply(&typed(none), "ballast.toml"),
            "no changes: the cluster already matches ballast.toml (revision 12)\n"
        );
    }
}
