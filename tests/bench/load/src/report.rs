//! Turns the JSON lines of one or more benchmark runs into Markdown: medians over
//! repetitions, ratios to the baseline (HAProxy), whether Ballast meets each target, and
//! the same comparison round by round.
//!
//! The machine's speed drifts within a run; a median over all rounds can then compare
//! Ballast's fast rounds with HAProxy's slow ones. Proxies are measured back to back
//! within a round, so a ratio per round ("pair") cancels most of that drift, and how
//! many pairs Ballast wins says whether a median ratio is more than noise. The 95 %
//! interval of that median ([`median_interval`]) says it in one reading: ahead or behind
//! when the whole interval is on one side of 1.0×, level when it straddles it.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;

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

/// One proxy against the baseline over the pairs where both were measured.
struct Paired {
    ratios: Vec<f64>,
    /// Pairs in which the proxy did better than the baseline (ties count as not better).
    better: usize,
}

fn paired(
    by_pair: &BTreeMap<PairKey, BTreeMap<String, f64>>,
    label: &str,
    baseline: &str,
    higher_is_better: bool,
) -> Option<Paired> {
    let mut result = Paired {
        ratios: Vec::new(),
        better: 0,
    };
    for measured in by_pair.values() {
        let (Some(&v), Some(&b)) = (measured.get(label), measured.get(baseline)) else {
            continue;
        };
        if b == 0.0 {
            continue;
        }
        result.ratios.push(v / b);
        if (higher_is_better && v > b) || (!higher_is_better && v < b) {
            result.better += 1;
        }
    }
    (!result.ratios.is_empty()).then_some(result)
}

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

/// A distribution-free 95 % confidence interval for the median of `sorted` (ascending):
/// order statistics picked with the binomial distribution, as the sign test does. It
/// assumes nothing about how the ratios spread, only that pairs are independent. `None`
/// under 6 values, where even the full range covers less than 95 %, and over 1,000
/// (where 0.5^n leaves f64's range; runs have tens of pairs).
fn median_interval(sorted: &[f64]) -> Option<(f64, f64)> {
    let n = sorted.len();
    if n > 1_000 {
        return None;
    }
    // P(B <= j) for B ~ Binomial(n, 1/2), cumulated term by term.
    let mut term = 0.5f64.powi(i32::try_from(n).ok()?);
    let mut below = 0.0;
    let mut k = 0;
    for j in 0..n {
        below += term;
        if 2.0 * below > 0.05 {
            break;
        }
        k = j + 1;
        term *= (n - j) as f64 / (j + 1) as f64;
    }
    // [x(k), x(n-k+1)] in 1-based order statistics covers the median with probability
    // 1 - 2 P(B <= k-1).
    (k >= 1).then(|| (sorted[k - 1], sorted[n - k]))
}

/// What a pairs' interval says about the target's direction.
fn reading(interval: Option<(f64, f64)>, higher_is_better: bool) -> &'static str {
    let Some((low, high)) = interval else {
        return "too few pairs";
    };
    let (ahead, behind) = if higher_is_better {
        (low > 1.0, high < 1.0)
    } else {
        (high < 1.0, low > 1.0)
    };
    match (ahead, behind) {
        (true, _) => "ahead",
        (_, true) => "behind",
        _ => "level: within the noise",
    }
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

/// Where one measurement was taken: which input file (run), repetition and round.
/// Proxies measured with the same key ran back to back.
type PairKey = (usize, u64, usize);

pub fn render(inputs: &[PathBuf], baseline: &str) -> Result<String> {
    let mut records: Vec<(usize, Value)> = Vec::new();
    for (run, input) in inputs.iter().enumerate() {
        let text = std::fs::read_to_string(input)
            .with_context(|| format!("cannot read {}", input.display()))?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let record = serde_json::from_str(line)
                .with_context(|| format!("bad result line in {}: {line}", input.display()))?;
            records.push((run, record));
        }
    }
    let several = inputs.len() > 1;
    // (record, field, label) → (where, value) per measurement; "where" is the repetition,
    // prefixed by the run when there are several.
    let mut values: BTreeMap<(String, String, String), Vec<(String, f64)>> = BTreeMap::new();
    // (record, field) → pair → label → value
    let mut pairs: BTreeMap<(String, String), BTreeMap<PairKey, BTreeMap<String, f64>>> =
        BTreeMap::new();
    // Rounds are written in order: the n-th record of a proxy in a repetition is round n.
    let mut rounds_seen: BTreeMap<(usize, String, String, u64), usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for (run, r) in &records {
        let name = r["name"].as_str().unwrap_or("?").to_string();
        let label = r["label"].as_str().unwrap_or("?").to_string();
        let rep = r["rep"].as_u64().unwrap_or(0);
        let round = rounds_seen
            .entry((*run, name.clone(), label.clone(), rep))
            .or_default();
        let key: PairKey = (*run, rep, *round);
        *round += 1;
        let at = if several {
            format!("{}.{rep}", run + 1)
        } else {
            rep.to_string()
        };
        if let Some(e) = r.get("error").and_then(Value::as_str) {
            failures.push(format!("rep {at}, {label}, {name}: {e}"));
        }
        for (key, failed) in [("errors", "errors"), ("sockets_short", "sockets short")] {
            if let Some(n) = r.get(key).and_then(Value::as_u64).filter(|n| *n > 0) {
                failures.push(format!(
                    "rep {at}, {label}, {name}: {n} {failed} ({})",
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
                    .push((at.clone(), v));
                pairs
                    .entry((name.clone(), field.clone()))
                    .or_default()
                    .entry(key)
                    .or_default()
                    .insert(label.clone(), v);
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
        .filter_map(|(run, r)| Some((run, r["rep"].as_u64()?)))
        .collect::<std::collections::BTreeSet<_>>()
        .len();

    let mut out = String::new();
    let over = if several {
        format!("{} runs, {reps} repetitions in all", inputs.len())
    } else {
        format!("{reps} repetition(s)")
    };
    writeln!(
        out,
        "Medians over {over} (for latency and connections/s, over every \
         round of every repetition); ratio = proxy / {baseline}'s median. \
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

    writeln!(
        out,
        "\nRound by round: each pair is one repetition (one round, for latency and \
         connections/s) in which both proxies ran back to back; the ratio is taken \
         within the pair, then the median over pairs. The interval is a 95 % confidence \
         interval of that median (sign test): \"ahead\" or \"behind\" only when all of it \
         is on one side of 1.0×.\n"
    )?;
    writeln!(
        out,
        "| figure | proxy | pairs | median ratio to {} | better than {} in | 95 % interval | reading |",
        title(baseline),
        title(baseline)
    )?;
    writeln!(out, "|---|---|---:|---:|---|---|---|")?;
    for m in METRICS.iter().filter(|m| m.target) {
        let Some(by_pair) = pairs.get(&(m.record.into(), m.field.into())) else {
            continue;
        };
        for label in ratio_labels.iter().filter(|l| **l != "nginx") {
            let Some(mut compared) = paired(by_pair, label, baseline, m.higher_is_better) else {
                continue;
            };
            let better = compared.better;
            let n = compared.ratios.len();
            // Sorts the ratios, which the interval needs.
            let ratio = median(&mut compared.ratios).map_or("—".into(), |r| format!("{r:.2}×"));
            let interval = median_interval(&compared.ratios);
            let shown =
                interval.map_or("—".into(), |(low, high)| format!("{low:.2}×–{high:.2}×"));
            writeln!(
                out,
                "| {} | {} | {n} | {ratio} | {better} of {n} | {shown} | {} |",
                m.title,
                title(label),
                reading(interval, m.higher_is_better)
            )?;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(values: &[(&str, f64)]) -> BTreeMap<String, f64> {
        values.iter().map(|(l, v)| (l.to_string(), *v)).collect()
    }

    #[test]
    fn a_pair_counts_only_where_both_proxies_ran_and_better_follows_the_direction() {
        let by_pair: BTreeMap<PairKey, BTreeMap<String, f64>> = [
            ((0, 1, 0), pair(&[("ballast", 10.0), ("haproxy", 8.0)])),
            ((0, 1, 1), pair(&[("ballast", 5.0), ("haproxy", 10.0)])),
            ((0, 2, 0), pair(&[("ballast", 7.0)])),
            ((0, 2, 1), pair(&[("ballast", 7.0), ("haproxy", 7.0)])),
        ]
        .into();
        let higher = paired(&by_pair, "ballast", "haproxy", true).expect("pairs");
        assert_eq!(higher.ratios, vec![1.25, 0.5, 1.0]);
        assert_eq!(higher.better, 1, "a tie is not better");
        let lower = paired(&by_pair, "ballast", "haproxy", false).expect("pairs");
        assert_eq!(lower.better, 1);
        assert!(paired(&by_pair, "nginx", "haproxy", true).is_none());
    }

    #[test]
    fn the_median_interval_follows_the_sign_test() {
        let sorted: Vec<f64> = (1..=27).map(f64::from).collect();
        // n = 27: P(B <= 7) = 0.0096, P(B <= 8) = 0.0261, so x(8) to x(20).
        assert_eq!(median_interval(&sorted), Some((8.0, 20.0)));
        // n = 9: P(B <= 1) = 0.0195, P(B <= 2) = 0.0898, so x(2) to x(8).
        assert_eq!(median_interval(&sorted[..9]), Some((2.0, 8.0)));
        // n = 6: only the full range covers 95 % (1 - 2/64).
        assert_eq!(median_interval(&sorted[..6]), Some((1.0, 6.0)));
        assert_eq!(median_interval(&sorted[..5]), None);
        assert_eq!(median_interval(&[]), None);
    }

    #[test]
    fn the_reading_needs_the_whole_interval_on_one_side() {
        assert_eq!(reading(Some((1.02, 1.10)), true), "ahead");
        assert_eq!(reading(Some((0.90, 0.98)), true), "behind");
        assert_eq!(reading(Some((0.97, 1.03)), true), "level: within the noise");
        // Latency: lower is better.
        assert_eq!(reading(Some((0.80, 0.95)), false), "ahead");
        assert_eq!(reading(Some((1.01, 1.20)), false), "behind");
        assert_eq!(reading(None, true), "too few pairs");
    }

    #[test]
    fn rounds_pair_by_their_order_within_a_repetition_and_runs_pool() {
        let dir = std::env::temp_dir().join(format!("ballast-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let line = |label: &str, rate: f64| {
            format!(r#"{{"name":"connrate","label":"{label}","rep":1,"conn_per_s":{rate}}}"#)
        };
        // Run 1: round 0 Ballast 2x HAProxy, round 1 half; run 2: 3x.
        let first = dir.join("first.jsonl");
        let second = dir.join("second.jsonl");
        std::fs::write(
            &first,
            [
                line("ballast", 100.0),
                line("haproxy", 50.0),
                line("ballast", 10.0),
                line("haproxy", 20.0),
            ]
            .join("\n"),
        )
        .expect("write");
        std::fs::write(
            &second,
            [line("haproxy", 10.0), line("ballast", 30.0)].join("\n"),
        )
        .expect("write");
        let out = render(&[first, second], "haproxy").expect("report");
        std::fs::remove_dir_all(&dir).ok();
        assert!(out.contains("Medians over 2 runs"), "{out}");
        assert!(
            out.contains(
                "| New connections per second | Ballast | 3 | 2.00× | 2 of 3 | — | too few pairs |"
            ),
            "{out}"
        );
        // The pooled median: Ballast 30 (of 10, 30, 100) over HAProxy 20 (of 10, 20, 50).
        assert!(
            out.contains("| New connections per second | 30.0 | 20.0 | 1.50× |"),
            "{out}"
        );
        // Each value says which run and repetition it came from.
        assert!(
            out.contains("| ballast | 1.1: 100, 1.1: 10.0, 2.1: 30.0 |"),
            "{out}"
        );
    }
}
