//! What every routed request passes before its handler runs (issue 24): the token check
//! of writes, made on the head alone, and a deadline on the body.
//!
//! ```text
//!   server.rs (head read, header timeout) ──▶ guard ──▶ DefaultBodyLimit ──▶ handler
//!                                             │ write without the right token:
//!                                             │   401 + `Connection: close`, body never read
//!                                             └ otherwise the body gets a deadline
//! ```
//!
//! The order matters: a handler's body extractor (`Bytes`, `Json`) reads the whole body
//! before the handler's first line runs, so a token check inside the handler came after
//! up to 16 MiB per connection had been buffered for anyone. Here the check runs on the
//! headers, and hyper, finding the body unread when the answer goes out, closes the
//! connection instead of draining it.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::BoxError;
use http_body::Frame;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{ApiError, NodeHandle};

/// The guard's state: where the token comes from and how long a body may take.
pub(crate) struct Guard {
    pub(crate) node: Arc<dyn NodeHandle>,
    pub(crate) body_timeout: Duration,
}

/// Every method but GET and HEAD changes the cluster and needs the token. Deciding by
/// method rather than per handler means a new write route is protected by default.
fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD)
}

/// The middleware (`axum::middleware::from_fn_with_state`).
pub(crate) async fn guard(
    State(guard): State<Arc<Guard>>,
    request: Request,
    next: Next,
) -> Response {
    if is_write(request.method()) {
        if let Err(refused) = authorize(guard.node.as_ref(), request.headers()) {
            tracing::warn!(
                peer = %peer(&request),
                method = %request.method(),
                path = request.uri().path(),
                reason = refused.reason(),
                "API write refused"
            );
            return closing(refused.into_error().into_response());
        }
    }
    let peer = peer(&request);
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let timeout = guard.body_timeout;
    let request = request.map(|body| Body::new(Deadline::new(body, timeout)));
    let response = next.run(request).await;
    let status = response.status();
    if matches!(
        status,
        StatusCode::REQUEST_TIMEOUT | StatusCode::PAYLOAD_TOO_LARGE
    ) {
        tracing::warn!(
            %peer,
            %method,
            path,
            status = status.as_u16(),
            "API request refused: body too slow or too large"
        );
        // Part of the body may still be on its way: reading it would only serve the
        // client that is holding the connection, so hyper closes instead.
        return closing(response);
    }
    response
}

/// The client's address, which server.rs puts on every request.
fn peer(request: &Request) -> String {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_string(), |c| c.0.to_string())
}

/// Marks the answer as the connection's last.
fn closing(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Why a write was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// The node has no `token_file`: every write is refused.
    NoTokenConfigured,
    NoToken,
    WrongToken,
}

impl Refusal {
    fn reason(self) -> &'static str {
        match self {
            Refusal::NoTokenConfigured => "no token configured",
            Refusal::NoToken => "no token",
            Refusal::WrongToken => "wrong token",
        }
    }

    fn into_error(self) -> ApiError {
        let message = match self {
            Refusal::NoTokenConfigured => "this node has no token_file: API writes are disabled",
            Refusal::NoToken | Refusal::WrongToken => {
                "writes need the header `Authorization: Bearer <token>` with the cluster token"
            }
        };
        ApiError::new(401, "unauthorized", message)
    }
}

/// Checks `Authorization: Bearer <token>`.
fn authorize(node: &dyn NodeHandle, headers: &HeaderMap) -> Result<(), Refusal> {
    let token = node.write_token().ok_or(Refusal::NoTokenConfigured)?;
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or(Refusal::NoToken)?;
    if token_matches(presented.as_bytes(), &token) {
        Ok(())
    } else {
        Err(Refusal::WrongToken)
    }
}

/// Compares in constant time without revealing the token's length: `ct_eq` on slices
/// returns at once when the lengths differ, so both sides are hashed first and the
/// fixed-size digests compared. Hashing the presented value takes time in its own length,
/// which the client already knows.
fn token_matches(presented: &[u8], token: &[u8]) -> bool {
    let presented = Sha256::digest(presented);
    let token = Sha256::digest(token);
    presented.as_slice().ct_eq(token.as_slice()).into()
}

/// The error a body gives once its deadline has passed.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub(crate) struct BodyTimeout(Duration);

/// Whether a body rejection (anywhere in its source chain) is a [`BodyTimeout`].
pub(crate) fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<BodyTimeout>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// A request body that fails once `timeout` has passed since the head was read: a
/// deadline for the whole body, not an idle timeout per frame, so trickling one byte at a
/// time does not keep it open either.
struct Deadline {
    inner: Body,
    timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Deadline {
    fn new(inner: Body, timeout: Duration) -> Self {
        Deadline {
            inner,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimeout(this.timeout).into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{exchange, start, start_with};
    use crate::Limits;

    #[test]
    fn tokens_match_only_when_equal_whatever_their_lengths() {
        assert!(token_matches(b"sekrit", b"sekrit"));
        for other in [
            &b""[..],
            b"s",
            b"sekri",
            b"sekrit ",
            b"sekrit-and-more",
            b"SEKRIT",
        ] {
            assert!(!token_matches(other, b"sekrit"), "{other:?}");
        }
    }

    /// The red team's case: a write announcing a 16 MB body without a token. The answer
    /// must come from the head alone; the body is never sent.
    #[tokio::test]
    async fn an_unauthenticated_write_is_refused_before_its_body_arrives() {
        let (addr, fake) = start().await;
        for token in ["", "Authorization: Bearer guess\r\n"] {
            let head = format!(
                "POST /v1/apply HTTP/1.1\r\nHost: x\r\n{token}Content-Type: application/json\r\nContent-Length: 16000000\r\n\r\n{{\"fr"
            );
            let answer = exchange(addr, head.as_bytes(), Duration::from_secs(5)).await;
            assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
            assert!(answer.contains(r#""code":"unauthorized""#), "{answer}");
            assert!(
                answer.to_ascii_lowercase().contains("connection: close"),
                "{answer}"
            );
        }
        assert!(fake.proposals.lock().is_empty());
    }

    #[tokio::test]
    async fn body_limits_are_per_route() {
        let (addr, fake) = start().await;
        let auth = "Authorization: Bearer sekrit\r\n";
        let post = |path: &str, body: &str| {
            format!(
                "{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        // A small route: 65 KiB is over its 64 KiB.
        let padded = format!(r#"{{"addr":"127.0.0.1:7001"{}}}"#, " ".repeat(65 << 10));
        let too_big = exchange(
            addr,
            post("PUT /v1/backends/b/servers/s1", &padded).as_bytes(),
            Duration::from_secs(5),
        )
        .await;
        assert!(too_big.starts_with("HTTP/1.1 413"), "{too_big}");
        assert!(
            too_big.contains(r#"{"error":{"code":"payload_too_large","#),
            "{too_big}"
        );
        assert!(fake.proposals.lock().is_empty());
        // The bulk routes take more: a 1 MiB model and a 2,000-entry stick import.
        let spec = format!(
            r#"{{"frontend":[{{"name":"f","bind":["127.0.0.1:8001"],"backend":"b"}}],"backend":[{{"name":"b","servers":[{{"name":"s1","addr":"127.0.0.1:7001"}}]}}]}}{}"#,
            " ".repeat(1 << 20)
        );
        let applied = exchange(
            addr,
            post("POST /v1/apply", &spec).as_bytes(),
            Duration::from_secs(5),
        )
        .await;
        assert!(applied.starts_with("HTTP/1.1 200"), "{applied}");
        let entries: Vec<String> = (0..2_000u32)
            .map(|n| {
                let ip = std::net::Ipv4Addr::from(0x7f00_0000 + n);
                format!(r#"{{"key":"{ip}","server":"s1"}}"#)
            })
            .collect();
        let import = format!(r#"{{"entries":[{}]}}"#, entries.join(","));
        assert!(import.len() > 64 << 10);
        let imported = exchange(
            addr,
            post("POST /v1/backends/b/stick", &import).as_bytes(),
            Duration::from_secs(5),
        )
        .await;
        assert!(imported.starts_with("HTTP/1.1 200"), "{imported}");
    }

    /// A client with the token that announces a body and stops sending it gets 408 once
    /// the body timeout has passed, and the connection is closed.
    #[tokio::test]
    async fn a_body_that_stops_arriving_is_answered_408() {
        let limits = Limits {
            body_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let (addr, fake) = start_with(limits).await;
        let head = "PUT /v1/backends/b/servers/s1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sekrit\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"addr\":";
        let answer = exchange(addr, head.as_bytes(), Duration::from_secs(10)).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(
            answer.contains(r#"{"error":{"code":"request_timeout","#),
            "{answer}"
        );
        assert!(fake.proposals.lock().is_empty());
    }

    #[tokio::test]
    async fn reads_and_unknown_routes_need_no_token() {
        let (addr, _) = start().await;
        let get = exchange(
            addr,
            b"GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(5),
        )
        .await;
        assert!(get.starts_with("HTTP/1.1 200"), "{get}");
        let missing = exchange(
            addr,
            b"POST /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            Duration::from_secs(5),
        )
        .await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    }
}
