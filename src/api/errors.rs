//! The token API's error answers: `{"error": "<code>", "message": "…"}` with a stable code.
//!
//! Codes and messages are `&'static str`, so no token, key or pre-auth code can ever end up
//! in an answer (or in a log line that prints one).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

/// One refused request: its status, its stable `error` code and a human-readable message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: &'static str,
    /// Seconds for `Retry-After` (503 answers only).
    pub retry_after_s: Option<u32>,
}

#[derive(Serialize)]
struct ErrorBody {
    error: &'static str,
    message: &'static str,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: &'static str) -> Self {
        Self {
            status,
            code,
            message,
            retry_after_s: None,
        }
    }

    /// 401: no `Authorization: Bearer` header, or a key that is not configured.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer key",
        )
    }

    /// 404: the path names a platform this service is not configured for.
    pub fn unknown_platform() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown_platform",
            "component_appid is not configured",
        )
    }

    /// 503 + `Retry-After: 1`: the credential is not there yet; the leader is working on it.
    pub fn not_ready(message: &'static str) -> Self {
        Self {
            retry_after_s: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message)
        }
    }

    /// 400: the request itself is wrong; retrying it unchanged cannot help.
    pub fn bad_request(message: &'static str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 503 + `Retry-After: 1`: the shared store did not answer; our fault, worth a retry.
    pub fn store_unavailable() -> Self {
        Self {
            retry_after_s: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the credential store is unavailable",
            )
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code,
            message: self.message,
        };
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(s) = self.retry_after_s {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6750 §3: a 401 names the scheme it expects.
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
