//! `ballast-load upgrade`: what a live upgrade costs the connections it hands over.
//!
//! Opens `conns` connections through the proxy (from spread 127.x sources), each
//! echoing a 32-byte numbered message every `interval`; sends SIGUSR2 to the process
//! the node's `/v1/status` names; waits for the new process to report; keeps echoing a
//! while. Every echo is checked (a wrong byte, an error or an end of stream is a broken
//! connection). Figures: broken connections, each connection's longest echo wait
//! (p50/p99/max over the connections: the relay pause as a client sees it), and the
//! node's own report (`process.last_upgrade`: pause, whole hand-over).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

use super::{connect_from, percentile, source, Common};

const MESSAGE: usize = 32;

pub struct Plan {
    pub conns: u32,
    pub src_net: u8,
    pub interval: Duration,
    pub api: SocketAddr,
    pub before: Duration,
    pub after: Duration,
}

/// One connection's record: its longest echo wait (µs) before the signal (what the
/// machine gives without an upgrade) and from it on, and whether it broke.
#[derive(Default)]
struct Echoes {
    longest_before_us: AtomicU64,
    longest_us: AtomicU64,
    broken: AtomicU64,
    echoed: AtomicU64,
}

pub async fn run(common: &Common, plan: Plan) -> Result<Value> {
    let targets = common.target.clone();
    let mut opening = JoinSet::new();
    for c in 0..plan.conns {
        let target = targets[c as usize % targets.len()];
        opening.spawn(async move {
            let mut stream = connect_from(Some(source(plan.src_net, c)), target).await?;
            stream.write_all(b"I").await?;
            let mut id = [0u8; 1];
            tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut id))
                .await
                .context("no backend id")??;
            anyhow::Ok(stream)
        });
    }
    let mut streams = Vec::new();
    while let Some(opened) = opening.join_next().await {
        streams.push(opened??);
    }
    let stop = Arc::new(tokio::sync::Notify::new());
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let signalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut echoing = JoinSet::new();
    let records: Vec<Arc<Echoes>> = (0..streams.len()).map(|_| Arc::default()).collect();
    for (i, mut stream) in streams.into_iter().enumerate() {
        let record = records[i].clone();
        let (stop, stopping, signalled) = (stop.clone(), stopping.clone(), signalled.clone());
        // Spread over the interval, so the pings of all connections do not come at once.
        let phase = plan.interval.mul_f64(i as f64 / plan.conns.max(1) as f64);
        let interval = plan.interval;
        echoing.spawn(async move {
            tokio::time::sleep(phase).await;
            let mut ticker = tokio::time::interval(interval);
            let mut sequence = 0u64;
            let mut back = [0u8; MESSAGE];
            while !stopping.load(Ordering::Relaxed) {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = stop.notified() => break,
                }
                sequence += 1;
                let mut message = [0u8; MESSAGE];
                for (k, byte) in message.iter_mut().enumerate() {
                    *byte = (sequence as u8)
                        .wrapping_mul(31)
                        .wrapping_add(k as u8 ^ i as u8);
                }
                let sent = Instant::now();
                let during = signalled.load(Ordering::Relaxed);
                let echoed = async {
                    stream.write_all(&message).await?;
                    stream.read_exact(&mut back).await?;
                    anyhow::Ok(())
                };
                let ok = matches!(
                    tokio::time::timeout(Duration::from_secs(10), echoed).await,
                    Ok(Ok(()))
                ) && back == message;
                if !ok {
                    record.broken.store(1, Ordering::Relaxed);
                    return;
                }
                record.echoed.fetch_add(1, Ordering::Relaxed);
                let waited = sent.elapsed().as_micros() as u64;
                let longest = if during {
                    &record.longest_us
                } else {
                    &record.longest_before_us
                };
                longest.fetch_max(waited, Ordering::Relaxed);
            }
        });
    }
    tokio::time::sleep(plan.before).await;
    let old = status(plan.api).await?;
    let old_pid = old["process"]["pid"]
        .as_u64()
        .context("no process.pid in /v1/status")?;
    signalled.store(true, Ordering::Relaxed);
    let signalled = Instant::now();
    let killed = std::process::Command::new("kill")
        .args(["-USR2", &old_pid.to_string()])
        .status()?;
    if !killed.success() {
        bail!("kill -USR2 {old_pid} failed");
    }
    let deadline = signalled + Duration::from_secs(30);
    let new = loop {
        if let Ok(now) = status(plan.api).await {
            let upgraded = now["process"]["pid"].as_u64() != Some(old_pid)
                && now["process"]["last_upgrade"]["from_pid"].as_u64() == Some(old_pid)
                && now["process"]["last_upgrade"]["duration_ms"].as_u64() > Some(0);
            if upgraded {
                break now;
            }
        }
        if Instant::now() > deadline {
            bail!("no new process 30 s after SIGUSR2 to {old_pid}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let visible_ms = signalled.elapsed().as_millis() as u64;
    tokio::time::sleep(plan.after).await;
    stopping.store(true, Ordering::Relaxed);
    stop.notify_waiters();
    while echoing.join_next().await.is_some() {}
    let broken = records
        .iter()
        .filter(|r| r.broken.load(Ordering::Relaxed) > 0)
        .count();
    let sorted = |pick: fn(&Echoes) -> &AtomicU64| {
        let mut longest: Vec<u64> = records
            .iter()
            .map(|r| pick(r).load(Ordering::Relaxed))
            .collect();
        longest.sort_unstable();
        longest
    };
    let longest = sorted(|r| &r.longest_us);
    let baseline = sorted(|r| &r.longest_before_us);
    let ms = |us: Option<u64>| us.map(|us| us as f64 / 1000.0);
    let report = &new["process"]["last_upgrade"];
    Ok(common.record(
        "upgrade",
        json!({
            "conns": plan.conns,
            "broken": broken,
            "echoes": records.iter().map(|r| r.echoed.load(Ordering::Relaxed)).sum::<u64>(),
            "longest_echo_wait_p50_ms": ms(percentile(&longest, 0.5)),
            "longest_echo_wait_p99_ms": ms(percentile(&longest, 0.99)),
            "longest_echo_wait_max_ms": ms(longest.last().copied()),
            "baseline_longest_echo_wait_p50_ms": ms(percentile(&baseline, 0.5)),
            "baseline_longest_echo_wait_p99_ms": ms(percentile(&baseline, 0.99)),
            "handed_over": report["connections"],
            "pause_ms": report["pause_ms"],
            "duration_ms": report["duration_ms"],
            "signal_to_status_ms": visible_ms,
            "from_pid": old_pid,
            "to_pid": new["process"]["pid"],
        }),
    ))
}

/// `GET /v1/status`, over a plain HTTP/1.0 connection.
async fn status(api: SocketAddr) -> Result<Value> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(api).await?;
        stream
            .write_all(b"GET /v1/status HTTP/1.0\r\nHost: ballast\r\n\r\n")
            .await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        anyhow::Ok(answer)
    };
    let answer = tokio::time::timeout(Duration::from_secs(5), exchange).await??;
    let text = String::from_utf8_lossy(&answer);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .context("no HTTP body")?;
    Ok(serde_json::from_str(body)?)
}
