//! A tiny blocking HTTP/1.1 client (GET for /readyz and /metrics; any method with a token
//! for the writes) and a Prometheus text parser. Blocking on purpose: calls are short,
//! bounded by socket timeouts, and usable from both sync code (readiness polling) and the
//! multi-threaded test runtime.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// `GET path` on `addr`; returns (status, body).
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    get_within(addr, path, Duration::from_secs(5))
}

/// `GET path` with every step (connect, write, each read) bounded by `timeout`.
pub fn get_within(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    request(addr, "GET", path, None, "", timeout)
}

/// `method path` with an optional `Authorization: Bearer <token>` and a JSON body (may be
/// empty); every step bounded by `timeout`. Returns (status, body).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, timeout.min(Duration::from_secs(2)))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: */*\r\n");
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if method != "GET" {
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

/// `GET path` on `addr`, a 200 answer read as the API's type (`ballast_api::types`);
/// `None` when the node does not answer, answers another status or another shape.
pub fn get_typed<T: serde::de::DeserializeOwned>(addr: SocketAddr, path: &str) -> Option<T> {
    match get(addr, path) {
        Ok((200, body)) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

/// Like [`get_typed`], every step bounded by `timeout`.
pub fn get_typed_within<T: serde::de::DeserializeOwned>(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Option<T> {
    match get_within(addr, path, timeout) {
        Ok((200, body)) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size + 2..)?;
    }
}

/// The value of the first sample named exactly `name` whose labels include all of
/// `labels` (other labels may be present). `None` if there is no such sample.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_sample)
        .find(|(n, ls, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| ls.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| v)
}

type Sample = (String, Vec<(String, String)>, f64);

fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = line.rfind('}')?;
            (
                &line[..open],
                parse_labels(&line[open + 1..close])?,
                &line[close + 1..],
            )
        }
        None => {
            let (n, r) = line.split_once(char::is_whitespace)?;
            (n, Vec::new(), r)
        }
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some((name.to_string(), labels, value))
}

fn parse_labels(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let (k, r) = rest.split_once('=')?;
        let r = r.trim_start().strip_prefix('"')?;
        // Label values in our tests never contain escaped quotes.
        let end = r.find('"')?;
        out.push((k.trim().to_string(), r[..end].to_string()));
        rest = r[end + 1..]
            .trim_start()
            .trim_start_matches(',')
            .trim_start();
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_samples() {
        let text = "# HELP x y\n# TYPE ballast_server_up gauge\n\
            ballast_server_up{backend=\"b\",server=\"s1\"} 1\n\
            ballast_server_up{backend=\"b\",server=\"s2\"} 0\n\
            ballast_stick_entries{backend=\"b\"} 300\n\
            plain_metric 4.5\n";
        let up = |s| {
            metric_value(
                text,
                "ballast_server_up",
                &[("backend", "b"), ("server", s)],
            )
        };
        assert_eq!(up("s1"), Some(1.0));
        assert_eq!(up("s2"), Some(0.0));
        assert_eq!(up("s3"), None);
        assert_eq!(
            metric_value(text, "ballast_stick_entries", &[("backend", "b")]),
            Some(300.0)
        );
        assert_eq!(metric_value(text, "plain_metric", &[]), Some(4.5));
        assert_eq!(
            dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").as_deref(),
            Some("abcde")
        );
    }
}
