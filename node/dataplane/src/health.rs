//! Active health checks: a pure hysteresis core and a thin prober.
//!
//! [`Hysteresis`] turns a stream of probe results into up/down flips (`fall` consecutive
//! failures to go down, `rise` consecutive successes to come back). Only flips leave this
//! module, so they are what later gets proposed to Raft (STYLE item 8).
//!
//! Every server starts *up*: a node that just started must not refuse all traffic until
//! `rise` probes have passed, and a connect failure is retried on another server anyway.

use std::net::SocketAddr;
use std::time::Duration;

use ballast_model::model::HealthCheck;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flip {
    WentDown,
    CameUp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hysteresis {
    rise: u32,
    fall: u32,
    up: bool,
    /// Consecutive results that disagree with the current state.
    streak: u32,
}

impl Hysteresis {
    pub fn new(rise: u32, fall: u32) -> Self {
        Hysteresis {
            rise: rise.max(1),
            fall: fall.max(1),
            up: true,
            streak: 0,
        }
    }

    /// Starting from a known state (the replicated one) instead of up.
    pub fn starting(rise: u32, fall: u32, up: bool) -> Self {
        Hysteresis {
            up,
            ..Hysteresis::new(rise, fall)
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    pub fn observe(&mut self, ok: bool) -> Option<Flip> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up { self.fall } else { self.rise };
        if self.streak < needed {
            return None;
        }
        self.up = ok;
        self.streak = 0;
        Some(if ok { Flip::CameUp } else { Flip::WentDown })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("send: {0}")]
    Send(std::io::Error),
    #[error("read: {0}")]
    Read(std::io::Error),
    #[error("reply does not start with the expected bytes (got {0:?})")]
    UnexpectedReply(String),
}

impl ProbeError {
    pub fn as_str(&self) -> &'static str {
        match self {
            ProbeError::Connect(_) => "connect",
            ProbeError::Timeout(_) => "timeout",
            ProbeError::Send(_) => "send",
            ProbeError::Read(_) => "read",
            ProbeError::UnexpectedReply(_) => "unexpected_reply",
        }
    }
}

/// One probe: connect, optionally send, optionally expect a reply prefix; all of it
/// within `check.timeout`.
pub async fn probe(addr: SocketAddr, check: &HealthCheck) -> Result<(), ProbeError> {
    let work = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(ProbeError::Connect)?;
        if let Some(send) = &check.send {
            stream
                .write_all(send.as_bytes())
                .await
                .map_err(ProbeError::Send)?;
        }
        if let Some(expect) = &check.expect {
            let expect = expect.as_bytes();
            let mut got = Vec::with_capacity(expect.len());
            let mut buf = [0u8; 512];
            while got.len() < expect.len() {
                let n = stream.read(&mut buf).await.map_err(ProbeError::Read)?;
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            if !got.starts_with(expect) {
                return Err(ProbeError::UnexpectedReply(
                    String::from_utf8_lossy(&got).into_owned(),
                ));
            }
        }
        Ok(())
    };
    tokio::time::timeout(check.timeout, work)
        .await
        .map_err(|_| ProbeError::Timeout(check.timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use ballast_model::model::HealthKind;
    use tokio::net::TcpListener;

    #[test]
    fn falls_after_fall_failures_and_rises_after_rise_successes() {
        let mut h = Hysteresis::new(2, 3);
        assert!(h.is_up());
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), Some(Flip::WentDown));
        assert!(!h.is_up());
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(true), Some(Flip::CameUp));
    }

    #[test]
    fn starting_down_needs_rise_successes() {
        let mut h = Hysteresis::starting(2, 3, false);
        assert!(!h.is_up());
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(true), Some(Flip::CameUp));
    }

    #[test]
    fn a_single_good_probe_resets_the_failure_streak() {
        let mut h = Hysteresis::new(1, 2);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), Some(Flip::WentDown));
        assert_eq!(h.observe(true), Some(Flip::CameUp));
    }

    fn check(send: Option<&str>, expect: Option<&str>) -> HealthCheck {
        HealthCheck {
            kind: HealthKind::Tcp,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            rise: 1,
            fall: 1,
            send: send.map(Into::into),
            expect: expect.map(Into::into),
        }
    }

    #[tokio::test]
    async fn probe_sends_and_checks_the_reply_prefix() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 16];
                let n = s.read(&mut buf).await.unwrap();
                let reply: &[u8] = if &buf[..n] == b"PING\r\n" {
                    b"+PONG\r\n"
                } else {
                    b"-ERR\r\n"
                };
                s.write_all(reply).await.unwrap();
            }
        });
        probe(addr, &check(Some("PING\r\n"), Some("+PONG")))
            .await
            .unwrap();
        let err = probe(addr, &check(Some("HELLO\r\n"), Some("+PONG")))
            .await
            .unwrap_err();
        assert_eq!(err.as_str(), "unexpected_reply");
    }

    #[tokio::test]
    async fn probe_reports_refused_and_silent_servers() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        assert_eq!(
            probe(addr, &check(None, None)).await.unwrap_err().as_str(),
            "connect"
        );
        // Accepts (kernel backlog) but never answers.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let err = probe(silent.local_addr().unwrap(), &check(None, Some("x")))
            .await
            .unwrap_err();
        assert_eq!(err.as_str(), "timeout");
    }
}
