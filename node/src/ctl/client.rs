//! The HTTP side of `ballast ctl`: a blocking client (`ureq`; the ctl runs outside
//! tokio) that answers the API's JSON, read back as the API's own types
//! ([`ballast_api::types`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::CtlError;

/// A 2xx answer: its JSON text, read as the type the route answers.
#[derive(Debug, Clone)]
pub struct Answer {
    status: u16,
    text: String,
}

impl Answer {
    pub fn typed<T: DeserializeOwned>(&self) -> Result<T, CtlError> {
        serde_json::from_str(&self.text).map_err(|_| CtlError::Http {
            status: self.status,
            body: snippet(&self.text),
        })
    }

    /// The JSON as the API sent it, indented (`--json`).
    pub fn pretty(&self) -> String {
        let value: Value = serde_json::from_str(&self.text).unwrap_or_default();
        let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
        text.push('\n');
        text
    }
}

/// The HTTP side: one agent, the base URL and (for writes) the token.
pub struct Client {
    base: String,
    agent: ureq::Agent,
    token_file: Option<PathBuf>,
}

impl Client {
    pub fn new(
        api: &str,
        token_file: Option<&Path>,
        timeout: Duration,
    ) -> Result<Client, CtlError> {
        Ok(Client {
            base: base_url(api)?,
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(5))
                .timeout(timeout)
                .build(),
            token_file: token_file.map(Path::to_path_buf),
        })
    }

    fn token(&self) -> Result<String, CtlError> {
        let Some(path) = &self.token_file else {
            return Err(CtlError::Local(
                "this command changes the cluster and needs the API token: pass \
                 --token-file FILE (or set BALLAST_TOKEN_FILE)"
                    .into(),
            ));
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            CtlError::Local(format!(
                "cannot read the token file {}: {e}",
                path.display()
            ))
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(CtlError::Local(format!(
                "the token file {} is empty",
                path.display()
            )));
        }
        Ok(token.to_string())
    }

    pub fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Answer, CtlError> {
        self.send(self.request("GET", path, query), None)
    }

    pub fn write(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Answer, CtlError> {
        let token = self.token()?;
        let request = self
            .request(method, path, query)
            .set("Authorization", &format!("Bearer {token}"));
        self.send(request, body)
    }

    fn request(&self, method: &str, path: &str, query: &[(&str, String)]) -> ureq::Request {
        let mut request = self.agent.request(method, &format!("{}{path}", self.base));
        for (k, v) in query {
            request = request.query(k, v);
        }
        request
    }

    fn send(&self, request: ureq::Request, body: Option<&Value>) -> Result<Answer, CtlError> {
        let result = match body {
            Some(body) => request
                .set("Content-Type", "application/json")
                .send_string(&body.to_string()),
            None => request.call(),
        };
        match result {
            Ok(response) => {
                let status = response.status();
                let text = response.into_string().map_err(|e| CtlError::Unreachable {
                    api: self.base.clone(),
                    detail: format!("reading the answer: {e}"),
                })?;
                let answer = Answer { status, text };
                answer.typed::<serde::de::IgnoredAny>()?;
                Ok(answer)
            }
            Err(ureq::Error::Status(status, response)) => {
                let text = response.into_string().unwrap_or_default();
                Err(api_error(status, &text))
            }
            Err(ureq::Error::Transport(transport)) => {
                let detail = transport_detail(&transport);
                let api = self.base.clone();
                // Connected, then no answer in time (not a refused or failed connect).
                let timed_out = transport.kind() == ureq::ErrorKind::Io
                    && std::error::Error::source(&transport)
                        .and_then(|e| e.downcast_ref::<std::io::Error>())
                        .is_some_and(|e| {
                            matches!(
                                e.kind(),
                                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                            )
                        });
                Err(if timed_out {
                    CtlError::NoAnswer { api, detail }
                } else {
                    CtlError::Unreachable { api, detail }
                })
            }
        }
    }
}

/// An error answer: the API's `{"error":{"code","message"}}`, or whatever came back.
pub fn api_error(status: u16, body: &str) -> CtlError {
    #[derive(Deserialize)]
    struct ErrorAnswer {
        error: ErrorDetail,
    }
    #[derive(Deserialize)]
    struct ErrorDetail {
        code: String,
        message: String,
    }
    match serde_json::from_str::<ErrorAnswer>(body) {
        Ok(ErrorAnswer {
            error: ErrorDetail { code, message },
        }) => CtlError::Api {
            status,
            code,
            message,
        },
        Err(_) => CtlError::Http {
            status,
            body: snippet(body),
        },
    }
}

/// The most specific reason: the OS error (`Connection refused (os error 111)`) if any.
fn transport_detail(t: &ureq::Transport) -> String {
    match (std::error::Error::source(t), t.message()) {
        (Some(source), _) => source.to_string(),
        (None, Some(message)) => format!("{}: {message}", t.kind()),
        (None, None) => t.kind().to_string(),
    }
}

/// `127.0.0.1:9090` and `http://127.0.0.1:9090/` both mean `http://127.0.0.1:9090`.
pub fn base_url(api: &str) -> Result<String, CtlError> {
    let api = api.trim().trim_end_matches('/');
    if api.is_empty() {
        return Err(CtlError::Local("--api is empty".into()));
    }
    match api.split_once("://") {
        None => Ok(format!("http://{api}")),
        Some(("http", rest)) if !rest.is_empty() => Ok(api.to_string()),
        Some(("https", _)) => Err(CtlError::Local(format!(
            "--api {api}: https is not supported; the node's API speaks plain HTTP (use http://)"
        ))),
        Some(_) => Err(CtlError::Local(format!(
            "--api {api}: expected http://HOST:PORT"
        ))),
    }
}

/// Percent-encodes one path segment (names are plain, but IPv6 keys have colons).
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn snippet(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        assert_eq!(base_url("127.0.0.1:9090").unwrap(), "http://127.0.0.1:9090");
        assert_eq!(
            base_url("http://127.0.0.1:9090/").unwrap(),
            "http://127.0.0.1:9090"
        );
        assert!(base_url("https://x:1")
            .unwrap_err()
            .to_string()
            .contains("https"));
        assert!(base_url("ftp://x:1").is_err());
        assert!(base_url("").is_err());
        assert_eq!(segment("::1"), "%3A%3A1");
        assert_eq!(segment("tcp_back-1.x"), "tcp_back-1.x");
    }

    #[test]
    fn errors_print_as_one_clear_line() {
        let e = api_error(
            404,
            r#"{"error":{"code":"not_found","message":"backend \"x\" does not exist"}}"#,
        );
        assert_eq!(
            e.to_string(),
            r#"not_found: backend "x" does not exist (HTTP 404)"#
        );
        let e = api_error(401, r#"{"error":{"code":"unauthorized","message":"no"}}"#);
        assert!(e.to_string().contains("--token-file"), "{e}");
        let e = api_error(502, "<html>bad gateway</html>");
        assert_eq!(
            e.to_string(),
            "unexpected answer HTTP 502: <html>bad gateway</html>"
        );
        let e = CtlError::Unreachable {
            api: "http://127.0.0.1:1".into(),
            detail: "Connection Failed: Connection refused (os error 111)".into(),
        };
        assert!(e
            .to_string()
            .starts_with("cannot reach the API at http://127.0.0.1:1: "));
    }

    /// A one-connection HTTP server that answers `response` (or nothing, when `None`).
    fn fake_api(response: Option<String>) -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            match response {
                Some(r) => {
                    let _ = s.write_all(r.as_bytes());
                }
                None => std::thread::sleep(Duration::from_secs(3)),
            }
        });
        format!("http://{addr}")
    }

    #[test]
    fn http_failures_are_told_apart() {
        let short = Duration::from_millis(300);
        let silent = Client::new(&fake_api(None), None, short).unwrap();
        let e = silent.get("/v1/status", &[]).unwrap_err();
        assert!(matches!(e, CtlError::NoAnswer { .. }), "{e:?}");
        assert!(e
            .to_string()
            .starts_with("no answer from the API at http://127.0.0.1:"));

        let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = refused.local_addr().unwrap();
        drop(refused);
        let e = Client::new(&addr.to_string(), None, short)
            .unwrap()
            .get("/v1/status", &[])
            .unwrap_err();
        assert!(matches!(e, CtlError::Unreachable { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with(&format!("cannot reach the API at http://{addr}: ")),
            "{e}"
        );

        let body = r#"{"error":{"code":"not_found","message":"backend \"x\" does not exist"}}"#;
        let answer = format!(
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let e = Client::new(&fake_api(Some(answer)), None, short)
            .unwrap()
            .get("/v1/backends/x", &[])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"not_found: backend "x" does not exist (HTTP 404)"#
        );

        // Writes are refused here, before any request, without a token file.
        let e = Client::new("127.0.0.1:1", None, short)
            .unwrap()
            .write("POST", "/v1/apply", &[], None)
            .unwrap_err();
        assert!(e.to_string().contains("--token-file"), "{e}");
    }
}
