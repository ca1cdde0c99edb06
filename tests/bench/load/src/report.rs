//! Turns the JSON lines of a benchmark run into Markdown: medians over repetitions,
//! ratios to the baseline (HAProxy) and whether Ballast meets each target.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

struct Metric {
    record: &'static str,
    field: &'static str,
    title: &'static str,
    higher_is_better: bool,
    /// Whether issue 8 sets a target (ratio to HAProxy) for this figure.
    target: bool,
}

const METRICS: &[Metric] = &[
    Metric {
        record: "throughput1",
        field: "gbps",
        title: "Throughput, 1 stream (Gbit/s)",
        higher_is_better: true,
        target: true,
    },
    Metric {
        record: "throughput16",
        field: "gbps",
        title: "Throughput, 16 streams (Gbit/s)",
        higher_is_better: true,
        target: true,
    },
    Metric {
        record: "latency",
        field: "p50_us",
        title: "Request/response p50 (µs, 64 B)",
        higher_is_better: false,
        target: false,
    },
    Metric {
        record: "latency",
        field: "p99_us",
        title: "Request/response p99 (µs, 64 B)",
        higher_is_better: false,
        target: true,
    },
    Metric {
        record: "connrate",
        field: "conn_per_s",
        title: "New connections per second",
        higher_is_better: true,
        target: true,
    },
    Metric {
        record: "connrate",
        field: "conn_p99_us",
        title: "Connection time p99 (µs, connect to echo, 16 loops)",
        higher_is_better: false,
        target: false,
    },
    Metric {
        record: "idle",
        field: "kib_per_conn",
        title: "Memory per idle connection (KiB, 5,000 conns)",
        higher_is_better: false,
        target: true,
    },
    Metric {
        record: "throughput16",
        field: "cpu_s_per_gb",
        title: "Proxy CPU per GB (s, 16 streams)",
        higher_is_better: false,
        target: true,
    },
    Metric {
        record: "throughput1",
        field: "cpu_s_per_gb",
        title: "Proxy CPU per GB (s, 1 stream)",
        higher_is_better: false,
        target: false,
    },
    Metric {
        record: "connrate",
        field: "cpu_us_per_conn",
        title: "Proxy CPU per new connection (µs)",
        higher_is_better: false,
        target: false,
    },
    Metric {
        record: "mission",
        field: "cpu_pct",
        title: "Mission: proxy CPU (% of one core)",
        higher_is_better: false,
        target: false,
    },
    Metric {
        record: "mission",
        field: "sticky_pct",
        title: "Mission: clients with all 3 sockets on one backend (%)",
        higher_is_better: true,
        target: false,
    },
];

const LABELS: &[&str] = &["direct", "ballast", "before", "haproxy", "nginx"];

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

fn fmt(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 100.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else if magnitude >= 0.1 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

pub fn render(input: &Path, baseline: &str) -> Result<String> {
    let text = std::fs::read_to_string(input)
        .with_context(|| format!("cannot read {}", input.display()))?;
    let records: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("bad result line: {l}")))
        .collect::<Result<_>>()?;
    // (record, field, label) → value per repetition
    let mut values: BTreeMap<(String, String, String), Vec<(u64, f64)>> = BTreeMap::new();
    let mut failures = Vec::new();
    for r in &records {
        let name = r["name"].as_str().unwrap_or("?").to_string();
        let label = r["label"].as_str().unwrap_or("?").to_string();
        let rep = r["rep"].as_u64().unwrap_or(0);
        if let Some(e) = r.get("error").and_then(Value::as_str) {
            failures.push(format!("rep {rep}, {label}, {name}: {e}"));
        }
        for (key, failed) in [("errors", "errors"), ("sockets_short", "sockets short")] {
            if let Some(n) = r.get(key).and_then(Value::as_u64).filter(|n| *n > 0) {
                failures.push(format!(
                    "rep {rep}, {label}, {name}: {n} {failed} ({})",
                    r.get("first_error").and_then(Value::as_str).unwrap_or("-")
                ));
            }
        }
        let Some(object) = r.as_object() else {
            continue;
        };
        for (field, value) in object {
            if let Some(v) = value.as_f64() {
                values
                    .entry((name.clone(), field.clone(), label.clone()))
                    .or_default()
                    .push((rep, v));
            }
        }
    }
    let get = |m: &Metric, label: &str| -> Option<f64> {
        let mut v: Vec<f64> = values
            .get(&(m.record.into(), m.field.into(), label.into()))?
            .iter()
            .map(|(_, v)| *v)
            .collect();
        median(&mut v)
    };
    let reps = records
        .iter()
        .filter_map(|r| r["rep"].as_u64())
        .collect::<std::collections::BTreeSet<_>>()
        .len();

    let mut out = String::new();
    writeln!(
        out,
        "Medians over {reps} repetition(s) (for latency and connections/s, over every \
         round of every repetition); ratio = proxy / {baseline} (same run). \
         Target: the issue's ratio to {baseline} that Ballast must reach.\n"
    )?;
    let present: Vec<&str> = LABELS
        .iter()
        .copied()
        .filter(|l| values.keys().any(|(_, _, label)| label == l))
        .collect();
    let title = |label: &str| {
        match label {
            "direct" => "direct",
            "ballast" => "Ballast",
            "before" => "Ballast before (baseline build)",
            "haproxy" => "HAProxy",
            "nginx" => "nginx",
            other => other,
        }
        .to_string()
    };
    let ratio_labels: Vec<&str> = present
        .iter()
        .copied()
        .filter(|l| *l != baseline && *l != "direct")
        .collect();
    let mut header = String::from("| figure |");
    let mut rule = String::from("|---|");
    for l in &present {
        header += &format!(" {} |", title(l));
        rule += "---:|";
    }
    for l in &ratio_labels {
        header += &format!(" {} / {} |", title(l), title(baseline));
        rule += "---:|";
    }
    header += " target | Ballast |";
    rule += "---|---|";
    writeln!(out, "{header}\n{rule}")?;
    for m in METRICS {
        if present.iter().all(|l| get(m, l).is_none()) {
            continue;
        }
        let base = get(m, baseline);
        let ratio = |label: &str| match (get(m, label), base) {
            (Some(v), Some(b)) if b != 0.0 => Some(v / b),
            _ => None,
        };
        let ballast_ratio = ratio("ballast");
        let (target, verdict) = if m.target {
            let target = if m.higher_is_better {
                "≥ 1.0×"
            } else {
                "≤ 1.0×"
            };
            let verdict = match ballast_ratio {
                Some(r)
                    if (m.higher_is_better && r >= 1.0) || (!m.higher_is_better && r <= 1.0) =>
                {
                    "**meets**"
                }
                Some(_) => "**misses**",
                None => "not measured",
            };
            (target, verdict)
        } else {
            ("—", "")
        };
        let mut row = format!("| {} |", m.title);
        for l in &present {
            row += &format!(" {} |", get(m, l).map_or("—".to_string(), fmt));
        }
        for l in &ratio_labels {
            row += &format!(" {} |", ratio(l).map_or("—".into(), |r| format!("{r:.2}×")));
        }
        row += &format!(" {target} | {verdict} |");
        writeln!(out, "{row}")?;
    }

    writeln!(out, "\nEvery repetition (rep: value):\n")?;
    writeln!(out, "| figure | proxy | values |")?;
    writeln!(out, "|---|---|---|")?;
    for m in METRICS {
        for label in LABELS {
            if let Some(v) = values.get(&(m.record.into(), m.field.into(), (*label).into())) {
                let list: Vec<String> = v
                    .iter()
                    .map(|(rep, v)| format!("{rep}: {}", fmt(*v)))
                    .collect();
                writeln!(out, "| {} | {} | {} |", m.title, label, list.join(", "))?;
            }
        }
    }
    if !failures.is_empty() {
        writeln!(out, "\nErrors seen during the run:\n")?;
        for f in &failures {
            writeln!(out, "- {f}")?;
        }
    }
    Ok(out)
}
