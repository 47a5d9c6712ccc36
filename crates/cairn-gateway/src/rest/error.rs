//! Errors as the spec wants them: every 4xx and 5xx carries a `common.Messages+json` body
//! whose `code` is one of the stable codes below (clients may switch on it; texts may
//! change). A 5xx never says more than its code: the details go to the log.
//!
//! | code | HTTP | meaning |
//! |---|---|---|
//! | `unauthenticated` | 401 | missing or wrong credentials |
//! | `forbidden` | 403 | the user's role may not do this (the text names the rule) |
//! | `not_found` | 404 | no such resource (or a route that does not exist) |
//! | `malformed_id` | 404 | an id in the path that cannot name anything |
//! | `method_not_allowed` | 405 | wrong verb; `Allow` lists the right ones |
//! | `not_acceptable` | 406 | nothing in `Accept` can be produced |
//! | `malformed_json` | 400 | the body is not JSON (or not an object) |
//! | `unknown_field` | 400 | a field the resource does not have (`field` names it) |
//! | `wrong_type` | 400 | a field of the wrong JSON type (`field`) |
//! | `invalid_value` | 400 | a value out of range or refused by the cluster (`field` when known) |
//! | `unsupported_media_type` | 400 | a body whose `Content-Type` is not JSON |
//! | `body_too_large` | 413 | a body over the configured cap |
//! | `duplicate_name` | 409 | another backup of the VM has that name |
//! | `conflict` | 409 | conflicts with a running operation or current state |
//! | `protected` | 409 | the backup is protected; an admin lifts the protection first (PUT `"protected": false`) |
//! | `unavailable` | 503 | the storage cluster cannot answer now (no leader, unreachable) |
//! | `busy` | 503 | too many logins being checked at once; nothing was checked, retry after `Retry-After` seconds |
//! | `internal` | 500 | anything else |

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cairn_agent::AgentError;
use cairn_core::ErrorCode;

use super::model::{self, Message, Messages};

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub text: String,
    pub field: Option<String>,
    /// Seconds for a `Retry-After` header (a refusal that will pass later).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, text: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            text: text.into(),
            field: None,
            retry_after: None,
        }
    }

    /// Too many logins being checked at once (503 `busy`, with `Retry-After`).
    pub fn busy(retry_after: std::time::Duration) -> ApiError {
        let secs = retry_after.as_secs().max(1);
        ApiError {
            retry_after: Some(secs),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                format!("too many logins are being checked; retry in {secs} s"),
            )
        }
    }

    pub fn field(mut self, field: impl Into<String>) -> ApiError {
        self.field = Some(field.into());
        self
    }

    pub fn bad(code: &'static str, field: &str, text: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, text).field(field)
    }

    pub fn not_found(text: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", text)
    }

    pub fn unauthenticated(text: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", text)
    }

    /// The error a bare status (one axum or hyper produced, without a body we chose) stands
    /// for.
    pub fn for_status(status: StatusCode) -> ApiError {
        let (code, text) = match status.as_u16() {
            400 => ("malformed_json", "the request could not be read"),
            401 => ("unauthenticated", "credentials are required"),
            403 => ("forbidden", "not allowed"),
            404 => ("not_found", "no resource at this URI"),
            405 => (
                "method_not_allowed",
                "this resource does not support that method (see the Allow header)",
            ),
            406 => (
                "not_acceptable",
                "nothing the Accept header lists can be produced",
            ),
            413 => ("body_too_large", "the request body is too large"),
            415 => ("unsupported_media_type", "the request body must be JSON"),
            503 => (
                "unavailable",
                "the storage cluster cannot answer now; try again",
            ),
            s if s < 500 => ("invalid_value", "the request was refused"),
            _ => ("internal", "internal error; see the gateway's log"),
        };
        let status = if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            StatusCode::BAD_REQUEST
        } else {
            status
        };
        ApiError::new(status, code, text)
    }

    pub fn body(&self) -> Messages {
        Messages {
            message: vec![Message {
                text: self.text.clone(),
                code: self.code.to_string(),
                field: self.field.clone(),
                hint: None,
                severity: "SEVERE".to_string(),
            }],
        }
    }
}

impl From<AgentError> for ApiError {
    /// A cluster answer becomes the matching HTTP error. Refusals (4xx) keep the cluster's
    /// text, which names the environment or backup at fault; failures (5xx) are logged and
    /// answered with their code only, so no node address or internal detail leaks.
    fn from(e: AgentError) -> ApiError {
        let code = e.code();
        match code {
            ErrorCode::InvalidArgument => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_value", e.to_string())
            }
            ErrorCode::NotFound => ApiError::not_found(e.to_string()),
            ErrorCode::Conflict => {
                let text = e.to_string();
                let code = if text.contains("already has a backup named") {
                    "duplicate_name"
                } else {
                    "conflict"
                };
                ApiError::new(StatusCode::CONFLICT, code, text)
            }
            ErrorCode::Protected => ApiError::new(StatusCode::CONFLICT, "protected", e.to_string()),
            // The cluster refused the user (the gateway checks only the route's role).
            ErrorCode::PermissionDenied => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", e.to_string())
            }
            ErrorCode::Unavailable | ErrorCode::DiskFull => {
                tracing::warn!(error = %e, "cluster unavailable");
                ApiError::for_status(StatusCode::SERVICE_UNAVAILABLE)
            }
            _ => {
                tracing::error!(error = %e, code = ?code, "cluster call failed");
                ApiError::for_status(StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        let mut r = (self.status, body).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(&model::media(model::MESSAGES))
                .expect("the media type is a valid header"),
        );
        if let Some(secs) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"cairn\", charset=\"UTF-8\""),
            );
        }
        r
    }
}
