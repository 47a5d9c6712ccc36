//! What every dashboard handler shares: the listener's state, the signed-in user's context
//! (with a cluster client acting for them), and the error page.
//!
//! A handler never decides whether the user may do something: it calls the cluster through
//! [`Ctx::cluster`], which acts for the user, and a refusal (`PermissionDenied`) becomes a
//! 403 page. The role in [`Ctx`] only decides which buttons a page shows ([`Ctx::may`]).

use std::sync::{Arc, Mutex};

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cairn_core::auth::{Admission, Interface, Principal, Role};
use cairn_core::ErrorCode;

use super::html::{self, esc, Viewer};
use super::session::Sessions;
use crate::users::{Identity, Users};
use crate::ClusterLink;

/// The state of the dashboard on one listener.
pub struct UiState {
    pub link: ClusterLink,
    pub users: Arc<Users>,
    pub sessions: Sessions,
    /// The listener speaks TLS: cookies are `Secure`.
    pub tls: bool,
    /// The last scrub, GC and repair runs started from this dashboard.
    pub reports: Mutex<Reports>,
}

/// Maintenance runs started from the dashboard, who started them and what they answered
/// (they live as long as the gateway). Each node keeps the outcome of its own last runs,
/// whoever started them (`cairn_core::runs`, in the node status); the pages show those.
#[derive(Default, Clone)]
pub struct Reports {
    pub runs: Vec<Run>,
}

/// One maintenance run.
#[derive(Clone, Debug)]
pub struct Run {
    pub what: String,
    pub by: String,
    pub started_ms: i64,
    /// `None` while running; the report's text, or the error, when done.
    pub outcome: Option<Result<String, String>>,
}

impl UiState {
    pub fn new(link: ClusterLink, users: Arc<Users>, tls: bool) -> UiState {
        UiState {
            link,
            users,
            sessions: Sessions::default(),
            tls,
            reports: Mutex::new(Reports::default()),
        }
    }
}

/// The signed-in user of one request: set by the router's session check.
#[derive(Clone)]
pub struct Ctx {
    pub user: String,
    pub role: Role,
    pub csrf: String,
    pub session: String,
    cluster: Option<cairn_api::Client>,
}

impl Ctx {
    pub fn new(user: String, role: Role, csrf: String, session: String, link: &ClusterLink) -> Ctx {
        let principal = principal(&user, role);
        let cluster = link.get().map(|c| c.acting_for(&principal));
        Ctx {
            user,
            role,
            csrf,
            session,
            cluster,
        }
    }

    /// The cluster, acting for this user (503 page until the gateway reached it).
    pub fn cluster(&self) -> Result<&cairn_api::Client, UiError> {
        self.cluster.as_ref().ok_or(UiError::Unavailable)
    }

    /// Whether to show a button for the dashboard route `entry` (`POST /ui/…`): the table's
    /// answer for this user. It only hides what would be refused: the cluster decides when
    /// the action is used.
    pub fn allows(&self, entry: &str) -> bool {
        matches!(
            cairn_core::auth::admit(Interface::Ui, entry, &principal(&self.user, self.role)),
            Admission::Allowed
        )
    }

    pub fn viewer(&self) -> Viewer<'_> {
        Viewer {
            user: &self.user,
            role: self.role,
            csrf: &self.csrf,
        }
    }

    /// A whole page for this user.
    pub fn page(&self, title: &str, active: &str, body: &str) -> Response {
        html_response(
            StatusCode::OK,
            html::frame(title, active, Some(&self.viewer()), body),
        )
    }
}

/// The principal a dashboard user is to the cluster: `ui:NAME` with the user's role, as the
/// other adapters name theirs.
pub fn principal(user: &str, role: Role) -> Principal {
    crate::access::principal(
        &Identity {
            name: user.to_string(),
            role,
        },
        "ui",
    )
}

/// An HTML answer.
pub fn html_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Why a dashboard request failed; answered as a small page.
#[derive(Debug)]
pub enum UiError {
    /// The cluster (or the CSRF check) refused the user.
    Forbidden(String),
    NotFound(String),
    BadRequest(String),
    /// The gateway has not reached the cluster.
    Unavailable,
    /// Another answer of the cluster, mapped by its code.
    Cluster(cairn_api::Error),
}

impl From<cairn_api::Error> for UiError {
    fn from(e: cairn_api::Error) -> UiError {
        UiError::Cluster(e)
    }
}

impl UiError {
    /// The status and the text shown, from the error's code (the REST adapter's table).
    fn status_text(&self) -> (StatusCode, String) {
        match self {
            UiError::Forbidden(t) => (StatusCode::FORBIDDEN, t.clone()),
            UiError::NotFound(t) => (StatusCode::NOT_FOUND, t.clone()),
            UiError::BadRequest(t) => (StatusCode::BAD_REQUEST, t.clone()),
            UiError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "The gateway has not reached the storage cluster yet; try again.".into(),
            ),
            UiError::Cluster(e) => {
                let code = e.code();
                let (status, _) = crate::rest::error::cluster_error(code);
                if status.is_server_error() {
                    tracing::warn!(error = %e, code = %code, "dashboard: cluster call failed");
                    (
                        status,
                        format!("The cluster could not answer ({code}); try again."),
                    )
                } else if code == ErrorCode::PermissionDenied {
                    (StatusCode::FORBIDDEN, e.to_string())
                } else {
                    (status, e.to_string())
                }
            }
        }
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let (status, text) = self.status_text();
        let title = match status {
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::BAD_REQUEST => "Bad request",
            s if s.is_server_error() => "Cluster unavailable",
            _ => "Refused",
        };
        let body = format!(
            "<p class=\"error\" role=\"alert\" data-status=\"{}\">{}</p><p><a href=\"/ui/\">Back to the overview</a></p>",
            status.as_u16(),
            esc(&text)
        );
        html_response(status, html::frame(title, "", None, &body))
    }
}

/// The result type of handlers.
pub type Page = Result<Response, UiError>;
