//! The in-namespace helper of the HA labs: this test binary, re-executed inside the
//! client namespace (`ip netns exec NS <this binary> ha::helper::in_namespace --exact
//! --ignored`), the way the VIP tests run theirs (`vip/helper.rs`). The test process
//! lives in the root namespace and cannot reach the lab; the helper can.
//!
//! Modes (`BALLAST_HA_HELPER`):
//! - `http`: a list of HTTP requests to the nodes' APIs (`BALLAST_HA_REQS`, JSON), each
//!   answered as `{"status", "body"}` (status 0: no answer, body = the error).
//! - `probe`: waits (bounded) for a trigger file, then connects to the VIP every 10 ms:
//!   until a backend greets (`ok <unix ms> <greeting> <attempts>`), or for a window,
//!   reporting the longest stretch without service (see [`probe`]); `timeout <attempts>
//!   <last error>` when it never got there.
//! - `load`: the mission workload ([`super::load`]), configured by `BALLAST_HA_LOAD`.
//! - `adverts`: every VRRP advertisement on the LAN (a raw socket for IP protocol 112
//!   that joined 224.0.0.18), stamped by the kernel on arrival, until a stop file
//!   appears (bounded): a JSON list of [`Advert`] (see [`adverts`]).
//!
//! The result is printed between [`BEGIN`] and [`END`]. Without `BALLAST_HA_HELPER` the
//! test does nothing, so running the ignored tests by hand is harmless. Every network
//! operation has a timeout; every loop a bound.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::load;

pub const TEST_NAME: &str = "ha::helper::in_namespace";
pub const MODE: &str = "BALLAST_HA_HELPER";
pub const REQS: &str = "BALLAST_HA_REQS";
pub const LOAD: &str = "BALLAST_HA_LOAD";
pub const BEGIN: &str = "\n@@ha-helper-begin@@\n";
pub const END: &str = "\n@@ha-helper-end@@\n";

/// One API request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Req {
    pub method: String,
    pub addr: SocketAddr,
    pub path: String,
    pub body: Option<String>,
    /// `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Resp {
    pub status: u16,
    pub body: String,
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

/// One HTTP/1.1 request with `Connection: close`; (status, body).
pub fn request(r: &Req) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&r.addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let body = r.body.as_deref().unwrap_or("");
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: */*\r\n",
        r.method, r.path, r.addr
    );
    if let Some(t) = &r.token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if r.body.is_some() {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string());
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status code"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body).ok_or_else(|| bad("bad chunked body"))?
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    for _ in 0..100_000 {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size + 2..)?;
    }
    None
}

fn greet(addr: SocketAddr) -> std::io::Result<String> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    s.set_read_timeout(Some(Duration::from_millis(300)))?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    if line.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed before the greeting",
        ));
    }
    Ok(line.trim().to_string())
}

/// `probe`: wait for the trigger file, then connect every 10 ms. Without a window, until
/// the first greeting: `ok <unix ms> <greeting> <attempts>`. With a window (ms), for
/// that long, reporting the longest stretch without service — from the last greeting
/// before a run of failures to the first greeting after it: `window <attempts> <ok>
/// <failed> <longest gap ms> <gap start ms> <gap end ms>`.
fn probe(addr: SocketAddr, trigger: PathBuf, limit: Duration, window: Option<Duration>) -> String {
    let start = Instant::now();
    let mut armed = false;
    for _ in 0..100_000 {
        if start.elapsed() > limit {
            break;
        }
        if trigger.exists() {
            armed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    if !armed {
        return "timeout 0 never triggered".to_string();
    }
    let armed_at = Instant::now();
    let mut attempts = 0u64;
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut last = String::new();
    let mut last_ok = load::now_ms();
    let mut failing = false;
    let mut gap = (0u64, last_ok, last_ok);
    while start.elapsed() < limit && attempts < 100_000 {
        if window.is_some_and(|w| armed_at.elapsed() >= w) {
            return format!(
                "window {attempts} {ok} {failed} {} {} {}",
                gap.0, gap.1, gap.2
            );
        }
        attempts += 1;
        match greet(addr) {
            Ok(line) => {
                let now = load::now_ms();
                if window.is_none() {
                    return format!("ok {now} {line} {attempts}");
                }
                ok += 1;
                if failing && now - last_ok > gap.0 {
                    gap = (now - last_ok, last_ok, now);
                }
                failing = false;
                last_ok = now;
            }
            Err(e) => {
                failed += 1;
                failing = true;
                last = e.to_string();
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    format!("timeout {attempts} {last}")
}

/// One VRRP advertisement seen on the lab's LAN.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Advert {
    /// When it arrived (kernel receive timestamp, unix µs).
    pub at_us: u64,
    pub src: Ipv4Addr,
    pub vrid: u8,
    /// 0: a master resigning (RFC 9568 §6.4.3).
    pub priority: u8,
}

/// What the `adverts` mode saw.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Adverts {
    pub adverts: Vec<Advert>,
    /// Protocol-112 packets that were not a valid advertisement.
    pub undecodable: u64,
}

/// `adverts`: a raw socket for IP protocol 112 on `local`'s interface, member of
/// 224.0.0.18, with kernel receive timestamps (`SO_TIMESTAMP`: a busy CPU delays the
/// reading, not the stamps). Writes `<stop>.ready` once listening; runs until `stop`
/// exists or `limit` passes.
fn adverts(local: Ipv4Addr, stop: PathBuf, limit: Duration) -> String {
    use ballast_vrrp::packet::{Advertisement, ChecksumAccept};
    use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::fd::AsRawFd;

    let socket = match Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(112))) {
        Ok(s) => s,
        Err(e) => return format!("err raw socket: {e}"),
    };
    if let Err(e) = socket.join_multicast_v4(&Ipv4Addr::new(224, 0, 0, 18), &local) {
        return format!("err join 224.0.0.18 on {local}: {e}");
    }
    if let Err(e) = setsockopt(&socket, sockopt::ReceiveTimestamp, &true) {
        return format!("err SO_TIMESTAMP: {e}");
    }
    if let Err(e) = socket.set_read_timeout(Some(Duration::from_millis(50))) {
        return format!("err read timeout: {e}");
    }
    let _ = std::fs::write(stop.with_extension("ready"), "ready");
    let start = Instant::now();
    let mut seen = Adverts {
        adverts: Vec::new(),
        undecodable: 0,
    };
    let mut buf = vec![0u8; 2048];
    while start.elapsed() < limit && !stop.exists() && seen.adverts.len() < 100_000 {
        let mut space = nix::cmsg_space!(nix::sys::time::TimeVal);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let (n, stamp) = match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        ) {
            Ok(r) => {
                let stamp = r.cmsgs().ok().and_then(|mut c| {
                    c.find_map(|m| match m {
                        ControlMessageOwned::ScmTimestamp(tv) => {
                            Some(tv.tv_sec() as u64 * 1_000_000 + tv.tv_usec() as u64)
                        }
                        _ => None,
                    })
                });
                (r.bytes, stamp)
            }
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
            Err(e) => return format!("err recvmsg: {e}"),
        };
        let at_us = stamp.unwrap_or_else(|| load::now_ms() * 1_000);
        match Advertisement::decode_ipv4_packet(&buf[..n], ChecksumAccept::Either) {
            Ok(p) => seen.adverts.push(Advert {
                at_us,
                src: p.ip.src,
                vrid: p.advert.vrid,
                priority: p.advert.priority,
            }),
            Err(_) => seen.undecodable += 1,
        }
    }
    serde_json::to_string(&seen).unwrap_or_else(|e| format!("err json: {e}"))
}

#[test]
#[ignore = "helper: the ha tests run it inside a lab namespace"]
fn in_namespace() {
    let Ok(mode) = std::env::var(MODE) else {
        return;
    };
    let out = match mode.as_str() {
        "http" => {
            let reqs: Vec<Req> = serde_json::from_str(&var(REQS)).expect("requests");
            let answers: Vec<Resp> = reqs
                .iter()
                .map(|r| match request(r) {
                    Ok((status, body)) => Resp { status, body },
                    Err(e) => Resp {
                        status: 0,
                        body: e.to_string(),
                    },
                })
                .collect();
            serde_json::to_string(&answers).expect("answers")
        }
        "probe" => probe(
            var("BALLAST_HA_ADDR").parse().expect("addr"),
            PathBuf::from(var("BALLAST_HA_TRIGGER")),
            Duration::from_millis(var("BALLAST_HA_LIMIT_MS").parse().expect("limit")),
            std::env::var("BALLAST_HA_WINDOW_MS")
                .ok()
                .and_then(|w| w.parse().ok())
                .map(Duration::from_millis),
        ),
        "adverts" => adverts(
            var("BALLAST_HA_LOCAL").parse().expect("local address"),
            PathBuf::from(var("BALLAST_HA_STOP")),
            Duration::from_millis(var("BALLAST_HA_LIMIT_MS").parse().expect("limit")),
        ),
        "load" => {
            let cfg: load::LoadConfig = serde_json::from_str(&var(LOAD)).expect("load config");
            load::run(cfg)
        }
        other => format!("err unknown mode {other}"),
    };
    print!("{BEGIN}{out}{END}");
}
