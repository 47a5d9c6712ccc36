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
//!
//! A cluster answer is mapped from its stable code alone ([`cluster_error`], one table);
//! the cluster's text is passed on for people and never read.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cairn_api::Error as ClusterError;
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

/// The REST table: the HTTP status and body code a cluster's stable code is answered with.
/// Every code has its row (no wildcard), so a new code is a decision here, not a fall-through.
pub fn cluster_error(code: ErrorCode) -> (StatusCode, &'static str) {
    match code {
        ErrorCode::InvalidArgument => (StatusCode::BAD_REQUEST, "invalid_value"),
        ErrorCode::NotFound
        | ErrorCode::BackupNotFound
        | ErrorCode::EnvNotFound
        | ErrorCode::HostNotFound
        | ErrorCode::JobNotFound
        | ErrorCode::PathNotFound => (StatusCode::NOT_FOUND, "not_found"),
        ErrorCode::DuplicateName => (StatusCode::CONFLICT, "duplicate_name"),
        ErrorCode::Conflict
        | ErrorCode::JobRunning
        | ErrorCode::TargetInUse
        | ErrorCode::TargetChanged
        | ErrorCode::SessionExpired
        | ErrorCode::PlacementChanged => (StatusCode::CONFLICT, "conflict"),
        ErrorCode::Protected => (StatusCode::CONFLICT, "protected"),
        // The cluster refused the user (the gateway checks only the route's role).
        ErrorCode::PermissionDenied => (StatusCode::FORBIDDEN, "forbidden"),
        ErrorCode::Unavailable
        | ErrorCode::DiskFull
        | ErrorCode::HostOffline
        | ErrorCode::AgentLost
        // The gateway and the nodes speak different protocol versions: an upgrade is
        // half done, which the client cannot fix.
        | ErrorCode::VersionMismatch => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        ErrorCode::Unauthenticated
        | ErrorCode::ChunksMissing
        | ErrorCode::Corrupt
        | ErrorCode::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

impl From<ClusterError> for ApiError {
    /// A cluster answer becomes the HTTP error its code maps to ([`cluster_error`]). Refusals
    /// (4xx) keep the cluster's text, which names the environment or backup at fault;
    /// failures (5xx) are logged and answered with their code only, so no node address or
    /// internal detail leaks.
    fn from(e: ClusterError) -> ApiError {
        let code = e.code();
        let (status, rest) = cluster_error(code);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            tracing::warn!(error = %e, code = %code, "cluster unavailable");
            ApiError::for_status(status)
        } else if status.is_server_error() {
            tracing::error!(error = %e, code = %code, "cluster call failed");
            ApiError::for_status(status)
        } else {
            ApiError::new(status, rest, e.to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(code: ErrorCode, text: &str) -> ApiError {
        ApiError::from(ClusterError::Cluster {
            code,
            message: text.to_string(),
        })
    }

    /// Rewording a refusal in cairn-meta must never change the HTTP contract: the answer
    /// follows the code, whatever the text says.
    #[test]
    fn the_answer_follows_the_code_not_the_text() {
        let dup = answer(ErrorCode::DuplicateName, "that name is taken (reworded)");
        assert_eq!(
            (dup.status, dup.code),
            (StatusCode::CONFLICT, "duplicate_name")
        );
        assert_eq!(dup.text, "that name is taken (reworded)");
        let other = answer(
            ErrorCode::Conflict,
            "environment e already has a backup named \"n\"",
        );
        assert_eq!(
            (other.status, other.code),
            (StatusCode::CONFLICT, "conflict")
        );
        let busy = answer(ErrorCode::JobRunning, "busy");
        assert_eq!((busy.status, busy.code), (StatusCode::CONFLICT, "conflict"));
        let prot = answer(ErrorCode::Protected, "x");
        assert_eq!(
            (prot.status, prot.code),
            (StatusCode::CONFLICT, "protected")
        );
        let gone = answer(ErrorCode::BackupNotFound, "x");
        assert_eq!(
            (gone.status, gone.code),
            (StatusCode::NOT_FOUND, "not_found")
        );
    }

    #[test]
    fn every_code_has_a_row_and_fine_codes_answer_like_their_family_or_finer() {
        for c in ErrorCode::ALL {
            let (status, code) = cluster_error(c);
            let (fs, fcode) = cluster_error(c.family());
            assert_eq!(status, fs, "{c:?} answers with its family's status");
            if c != ErrorCode::DuplicateName {
                assert_eq!(code, fcode, "{c:?}");
            }
        }
        // 5xx never pass the cluster's text on.
        let e = answer(ErrorCode::AgentLost, "agent at 10.0.0.3 vanished");
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!e.text.contains("10.0.0.3"));
    }
}
