//! The in-namespace helper: this test binary, re-executed inside a lab namespace
//! (`ip netns exec NS <this binary> vip::helper::in_namespace --exact --ignored`), does
//! what the test process cannot do from the root namespace: HTTP to a node's API on its
//! loopback, client connections to the VIP, and crafted VRRP packets.
//!
//! The mode and its arguments come in `BALLAST_VIP_HELPER*` environment variables; the
//! result is printed between [`BEGIN`] and [`END`] (libtest prints its own lines around
//! it). Without `BALLAST_VIP_HELPER` the test does nothing, so running the ignored tests
//! by hand is harmless. Every network operation has a timeout; `until` is bounded by
//! `BALLAST_VIP_LIMIT_MS`.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ballast_vrrp::packet::{Advertisement, ChecksumMode, Ipv4Header};

pub const TEST_NAME: &str = "vip::helper::in_namespace";
pub const MODE: &str = "BALLAST_VIP_HELPER";
pub const BEGIN: &str = "\n@@vip-helper-begin@@\n";
pub const END: &str = "\n@@vip-helper-end@@\n";

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

fn num(name: &str) -> u64 {
    var(name).parse().unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Connect to `addr` and read the backend's greeting line.
fn greet(addr: SocketAddr, connect: Duration, read: Duration) -> std::io::Result<String> {
    let s = TcpStream::connect_timeout(&addr, connect)?;
    s.set_read_timeout(Some(read))?;
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

fn unix_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// One deliberately broken advertisement (priority 254: accepted, it would make a
/// master step down), sent from this namespace to `dst`.
fn send_bad(kind: &str, src: Ipv4Addr, dst: Ipv4Addr, vrid: u8, vip: Ipv4Addr) -> String {
    let adv = Advertisement {
        vrid: if kind == "vrid" {
            vrid.wrapping_add(1)
        } else {
            vrid
        },
        priority: 254,
        max_advert_int_cs: 100,
        addrs: vec![vip.into()],
    };
    let mut hdr = Ipv4Header::vrrp(src, dst);
    if kind == "ttl64" {
        hdr.ttl = 64;
    }
    let mut pkt = adv
        .encode_ipv4_packet(&hdr, ChecksumMode::PseudoHeader)
        .expect("encode");
    match kind {
        "ttl64" | "vrid" => {}
        // Byte 26: the VRRP checksum's high byte (20-byte IPv4 header + 6).
        "checksum" => pkt[26] ^= 0x55,
        // Byte 20: version 2 instead of 3, type 1.
        "version" => pkt[20] = 0x21,
        other => return format!("err unknown kind {other}"),
    }
    match ballast_vrrp::driver::send_raw_ipv4(&pkt, dst) {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("err {e}"),
    }
}

#[test]
#[ignore = "helper: the vip tests run it inside a lab namespace"]
fn in_namespace() {
    let Ok(mode) = std::env::var(MODE) else {
        return;
    };
    let out = match mode.as_str() {
        // GET a path on an API: "<status>\n<body>".
        "get" => {
            let addr: SocketAddr = var("BALLAST_VIP_ADDR").parse().expect("addr");
            match crate::harness::http::get(addr, &var("BALLAST_VIP_PATH")) {
                Ok((status, body)) => format!("{status}\n{body}"),
                Err(e) => format!("0\n{e}"),
            }
        }
        // One client connection: "ok <greeting>" or "err <why>".
        "greet" => {
            let addr: SocketAddr = var("BALLAST_VIP_ADDR").parse().expect("addr");
            match greet(addr, Duration::from_secs(1), Duration::from_secs(2)) {
                Ok(line) => format!("ok {line}"),
                Err(e) => format!("err {e}"),
            }
        }
        // Connect every 10 ms until a greeting starts with the prefix:
        // "ok <unix ns> <greeting> <attempts>" or "timeout <attempts> <last error>".
        "until" => {
            let addr: SocketAddr = var("BALLAST_VIP_ADDR").parse().expect("addr");
            let prefix = var("BALLAST_VIP_PREFIX");
            let limit = Duration::from_millis(num("BALLAST_VIP_LIMIT_MS"));
            let start = Instant::now();
            let mut attempts = 0u64;
            let mut last = String::new();
            let mut found = None;
            while start.elapsed() < limit && attempts < 100_000 {
                attempts += 1;
                match greet(addr, Duration::from_millis(100), Duration::from_millis(500)) {
                    Ok(line) if line.starts_with(&prefix) => {
                        found = Some(format!("ok {} {line} {attempts}", unix_ns()));
                        break;
                    }
                    Ok(line) => last = format!("greeted by {line}"),
                    Err(e) => last = e.to_string(),
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            found.unwrap_or_else(|| format!("timeout {attempts} {last}"))
        }
        // One crafted bad VRRP packet: "ok" or "err <why>".
        "send-bad" => send_bad(
            &var("BALLAST_VIP_KIND"),
            var("BALLAST_VIP_SRC").parse().expect("src"),
            var("BALLAST_VIP_DST").parse().expect("dst"),
            num("BALLAST_VIP_VRID") as u8,
            var("BALLAST_VIP_VIP").parse().expect("vip"),
        ),
        other => format!("err unknown mode {other}"),
    };
    print!("{BEGIN}{out}{END}");
}
