//! The API's errors: DESIGN's JSON shape (`{"error":{"code":...,"message":...}}`), the
//! status each maps to, and how body and Raft failures become one.

use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ballast_raft_store::network::ProposeError;
use serde::Serialize;
use utoipa::ToSchema;

use crate::guard;

/// DESIGN's error shape: `{"error":{"code":"not_found","message":"..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "not_found", message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "bad_request", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, "conflict", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "unavailable", message)
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorBody<'a> {
    pub(crate) error: ErrorDetail<'a>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorDetail<'a> {
    pub(crate) code: &'a str,
    pub(crate) message: &'a str,
}

/// The error answers of every write, for the OpenAPI document (never constructed).
#[allow(dead_code)]
#[derive(utoipa::IntoResponses)]
pub(crate) enum WriteErrors<'a> {
    /// Invalid input; the message names the field.
    #[response(status = 400)]
    BadRequest(ErrorBody<'a>),
    /// No or wrong token.
    #[response(status = 401)]
    Unauthorized(ErrorBody<'a>),
    /// No such object.
    #[response(status = 404)]
    NotFound(ErrorBody<'a>),
    /// Conflict; the message says with what (a drill: why it was refused).
    #[response(status = 409)]
    Conflict(ErrorBody<'a>),
    /// The body did not arrive within 10 s of the head.
    #[response(status = 408)]
    Timeout(ErrorBody<'a>),
    /// Body over the route's limit: 64 KiB, 16 MiB for `/v1/apply` and the stick import.
    #[response(status = 413)]
    TooLarge(ErrorBody<'a>),
    /// No quorum: not committed.
    #[response(status = 503)]
    Unavailable(ErrorBody<'a>),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: &self.message,
            },
        };
        let mut response = (status, Json(body)).into_response();
        // Unavailable is passing (no quorum yet, a live upgrade switching processes):
        // say when to try again rather than leave clients to guess.
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        body_error(rejection.status(), rejection.body_text(), &rejection)
    }
}

/// A body that could not be read: too large (413), too slow (408, see guard.rs), or bad.
pub(crate) fn body_error(
    status: StatusCode,
    text: String,
    error: &(dyn std::error::Error + 'static),
) -> ApiError {
    if guard::is_body_timeout(error) {
        ApiError::new(408, "request_timeout", error_chain(error))
    } else if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(413, "payload_too_large", text)
    } else {
        ApiError::new(status.as_u16(), "bad_request", text)
    }
}

/// The innermost error's text: axum's own says only "failed to buffer the body".
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut last = error;
    while let Some(source) = last.source() {
        last = source;
    }
    last.to_string()
}

impl From<ProposeError> for ApiError {
    fn from(e: ProposeError) -> Self {
        match e {
            ProposeError::NoSuchMember(_) => ApiError::not_found(e.to_string()),
            _ => ApiError::new(503, "unavailable", e.to_string()),
        }
    }
}
