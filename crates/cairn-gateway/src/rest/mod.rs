//! The Sun Cloud API REST adapter: every environment the agents report is a VM, and its
//! backups are Backup resources (`../shared/specs/sun-cloud-backups.md` is the contract).
//!
//! # A request's path through the adapter
//! 1. [`gate`] (every request): HTTP Basic against [`Users`](crate::users::Users) — except
//!    `/healthz`, which load balancers probe without credentials and which says nothing but
//!    "ok" — then the handler, then the answer is made to obey the spec whatever produced
//!    it: an error without a `common.Messages` body gets one (axum's own 404, 405 and 413
//!    included, keeping `Allow`), and a 200 whose type the `Accept` header rules out
//!    becomes a 406 (a 202 always answers with a Status, as the spec says, and so does a
//!    poll of that Status, which clients send with the same `Accept`).
//! 2. The matched route's row of the authorization table (`cairn_core::auth::TABLE`) is
//!    checked against the user's role before the handler runs (`label`), so a viewer learns
//!    nothing from a bad body; then the handler parses the body field by field ([`input`]),
//!    calls the cluster's gRPC API *as the user* (the cluster decides again, with everything
//!    it knows) and maps the answer through the pure functions of [`model`].
//!
//! A backup's files (`{backup}/files/{path}`, a Cairn extension beyond the spec) are read
//! through `cairn_api::browse`: a directory answers a JSON page of its children, a file its
//! bytes, a directory with `?format=tar` a tar archive, all streamed (see `files.rs`).
//!
//! Operations that change something (back up, update, delete, restore) become cluster jobs;
//! their Status is the job, read afresh on every poll (a cheap local read on any node), and
//! it stays readable as long as the cluster keeps finished jobs (7 days).
//!
//! Roles: `viewer` reads; `operator` also backs up and restores; `admin` also updates and
//! deletes backups.

pub mod error;
mod files;
#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod golden;
mod handlers;
pub mod input;
pub mod model;
pub mod openapi;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine;

use crate::users::{Identity, LoginError, Users, BUSY_RETRY_AFTER};
use crate::ClusterLink;
use error::ApiError;
use model::Uris;

/// What every handler shares.
pub struct RestState {
    pub link: ClusterLink,
    pub users: Arc<Users>,
    /// The base of every `uri` when configured; else each request's `Host`.
    pub public_url: Option<String>,
    pub tls: bool,
    /// The listener's own address (the base when a request has no usable `Host`).
    pub local: std::net::SocketAddr,
    pub max_body_bytes: usize,
}

/// The route a request matched, passed from the inner layer to [`gate`] for the metrics.
#[derive(Clone)]
struct RouteLabel(String);

/// The routes, as the OpenAPI document lists them: (path, methods).
pub const ROUTES: &[(&str, &[&str])] = &[
    ("/", &["GET"]),
    ("/versions", &["GET"]),
    ("/vdc", &["GET"]),
    ("/clusters", &["GET"]),
    ("/clusters/{host}", &["GET"]),
    ("/vms/{eid}", &["GET"]),
    ("/vms/{eid}/back_up", &["POST"]),
    ("/vms/{eid}/backups", &["GET"]),
    ("/vms/{eid}/backups/{stamp}", &["GET", "PUT", "DELETE"]),
    ("/vms/{eid}/backups/{stamp}/restore", &["POST"]),
    ("/vms/{eid}/backups/{stamp}/files", &["GET"]),
    ("/vms/{eid}/backups/{stamp}/files/{path}", &["GET"]),
    ("/statuses/{id}", &["GET"]),
    ("/healthz", &["GET"]),
    ("/metrics", &["GET"]),
    ("/openapi.json", &["GET"]),
];

/// The adapter's router.
pub fn router(state: Arc<RestState>) -> Router {
    use axum::routing::post;
    use handlers as h;
    let max_body = state.max_body_bytes;
    Router::new()
        .route("/", get(h::cloud))
        .route("/versions", get(h::versions))
        .route("/vdc", get(h::vdc))
        .route("/clusters", get(h::root_cluster))
        .route("/clusters/:host", get(h::host_cluster))
        .route("/vms/:eid", get(h::vm))
        .route("/vms/:eid/back_up", post(h::back_up))
        .route("/vms/:eid/backups", get(h::list_backups))
        .route(
            "/vms/:eid/backups/:stamp",
            get(h::get_backup)
                .put(h::update_backup)
                .delete(h::delete_backup),
        )
        .route("/vms/:eid/backups/:stamp/restore", post(h::restore))
        .route("/vms/:eid/backups/:stamp/files", get(files::root))
        .route("/vms/:eid/backups/:stamp/files/*path", get(files::path))
        .route("/statuses/:id", get(h::status))
        .route("/healthz", get(h::healthz))
        .route("/metrics", get(h::metrics))
        .route("/openapi.json", get(h::openapi))
        .route_layer(middleware::from_fn(label))
        .fallback(|| async { ApiError::not_found("no resource at this URI") })
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(state.clone(), gate))
        .with_state(state)
}

/// Records the route a request matched, and refuses (403) a user whose role the
/// authorization table does not admit to it, before the handler reads anything.
async fn label(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    if let (Some(r), Some(who)) = (&route, req.extensions().get::<Identity>()) {
        if let Some(why) = refusal(req.method(), r, who) {
            let mut resp = ApiError::new(StatusCode::FORBIDDEN, "forbidden", why).into_response();
            resp.extensions_mut().insert(RouteLabel(r.clone()));
            return resp;
        }
    }
    let mut resp = next.run(req).await;
    if let Some(r) = route {
        resp.extensions_mut().insert(RouteLabel(r));
    }
    resp
}

/// The table's entry of a route (`GET /vms/{eid}`), from the router's pattern (a wildcard
/// `*path`, which takes the rest of the path, is `{path}` too).
pub fn table_entry(method: &Method, pattern: &str) -> String {
    let path: Vec<String> = pattern
        .split('/')
        .map(
            |seg| match seg.strip_prefix(':').or_else(|| seg.strip_prefix('*')) {
                Some(name) => format!("{{{name}}}"),
                None => seg.to_string(),
            },
        )
        .collect();
    // HEAD is GET without a body.
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    format!("{method} {}", path.join("/"))
}

/// Why the table refuses `who` the route, if it does. A method the route does not serve
/// has no row and is left to the router's 405.
fn refusal(method: &Method, pattern: &str, who: &Identity) -> Option<String> {
    let entry = table_entry(method, pattern);
    cairn_core::auth::access_of(cairn_core::auth::Interface::Rest, &entry)?;
    crate::access::admit(
        cairn_core::auth::Interface::Rest,
        &entry,
        &crate::access::principal(who, "rest"),
    )
    .err()
}

impl RestState {
    /// Checks the `Authorization` header through the users' login gate (argon2 runs off the
    /// async threads, a few at a time; a failure is answered after the failure delay; when
    /// too many wait, 503 `busy` at once).
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, ApiError> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::unauthenticated(
                "credentials are required (HTTP Basic)",
            ));
        };
        let (name, password) = parse_basic(value).ok_or_else(|| {
            ApiError::unauthenticated("the Authorization header is not HTTP Basic credentials")
        })?;
        self.users
            .login(&name, &password)
            .await
            .map_err(|e| match e {
                LoginError::Refused(_) => ApiError::unauthenticated("wrong user name or password"),
                LoginError::Busy => ApiError::busy(BUSY_RETRY_AFTER),
            })
    }

    /// The base of the absolute URIs for one request.
    fn uris(&self, headers: &HeaderMap) -> Uris {
        if let Some(u) = &self.public_url {
            return Uris {
                base: u.trim_end_matches('/').to_string(),
            };
        }
        let scheme = if self.tls { "https" } else { "http" };
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| valid_host(h))
            .map(str::to_string)
            .unwrap_or_else(|| self.local.to_string());
        Uris {
            base: format!("{scheme}://{host}"),
        }
    }
}

/// A `Host` header fit to go into URIs: a name or address and a port, nothing else.
fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

fn parse_basic(value: &HeaderValue) -> Option<(String, String)> {
    let v = value.to_str().ok()?;
    let (scheme, rest) = v.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (name, password) = text.split_once(':')?;
    Some((name.to_string(), password.to_string()))
}

/// Every request: authentication, then the spec's rules applied to whatever answered.
async fn gate(State(s): State<Arc<RestState>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let open = req.uri().path() == "/healthz";
    let resp = if open {
        next.run(req).await
    } else {
        match s.authenticate(req.headers()).await {
            Err(e) => e.into_response(),
            Ok(who) => {
                let uris = s.uris(req.headers());
                req.extensions_mut().insert(who);
                req.extensions_mut().insert(uris);
                next.run(req).await
            }
        }
    };
    let resp = conform(resp, accept.as_deref());
    let route = resp
        .extensions()
        .get::<RouteLabel>()
        .map(|r| r.0.clone())
        .unwrap_or_else(|| "unmatched".to_string());
    crate::metrics::record_request(
        &route,
        method.as_str(),
        resp.status().as_u16(),
        started.elapsed(),
    );
    resp
}

/// Makes an answer obey the spec: Messages bodies on errors, `Accept` honoured on 200s,
/// and the specification version named.
fn conform(resp: Response, accept: Option<&str>) -> Response {
    let status = resp.status();
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut resp = if status.is_client_error() || status.is_server_error() {
        if ct == model::media(model::MESSAGES) {
            resp
        } else {
            let allow = resp.headers().get(header::ALLOW).cloned();
            let route = resp.extensions().get::<RouteLabel>().cloned();
            let mut r = ApiError::for_status(status).into_response();
            if let Some(a) = allow {
                r.headers_mut().insert(header::ALLOW, a);
            }
            if let Some(l) = route {
                r.extensions_mut().insert(l);
            }
            r
        }
    } else if status == StatusCode::OK && is_json(&ct) {
        match negotiate(accept, &ct) {
            // A Status is polled with the headers of the request that made it (e.g.
            // `Accept: …Backup+json`): it answers with the Status type, as the 202 did.
            None if ct == model::media("Status") => resp,
            Some(chosen) => {
                let mut resp = resp;
                if let Ok(v) = HeaderValue::from_str(&chosen) {
                    resp.headers_mut().insert(header::CONTENT_TYPE, v);
                }
                resp
            }
            None => {
                let route = resp.extensions().get::<RouteLabel>().cloned();
                let mut r = ApiError::new(
                    StatusCode::NOT_ACCEPTABLE,
                    "not_acceptable",
                    format!("this resource is {ct} (or application/json); Accept lists neither"),
                )
                .into_response();
                if let Some(l) = route {
                    r.extensions_mut().insert(l);
                }
                r
            }
        }
    } else {
        resp
    };
    resp.headers_mut().insert(
        "x-cloud-specification-version",
        HeaderValue::from_static(model::SPEC_VERSION),
    );
    resp
}

fn is_json(ct: &str) -> bool {
    ct == "application/json"
        || (ct.starts_with("application/vnd.com.sun.cloud.") && ct.ends_with("+json"))
}

/// The content type to answer with, given `Accept` and the resource's own type: the own
/// type when Accept allows it (or says nothing), else `application/json` when listed, else
/// `None` (406).
pub fn negotiate(accept: Option<&str>, own: &str) -> Option<String> {
    let Some(accept) = accept.map(str::trim).filter(|a| !a.is_empty()) else {
        return Some(own.to_string());
    };
    let mut json = false;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let range = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let refused = parts.any(|p| {
            let p = p.trim();
            p.strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        if refused {
            continue;
        }
        if range == "*/*" || range == "application/*" || range == own.to_ascii_lowercase() {
            return Some(own.to_string());
        }
        if range == "application/json" {
            json = true;
        }
    }
    json.then(|| "application/json".to_string())
}

/// A representation as a response: 200 (or 202 for a Status) with its media type.
pub(crate) struct Rep {
    status: StatusCode,
    content_type: String,
    body: Vec<u8>,
    location: Option<String>,
}

impl Rep {
    pub(crate) fn ok<T: serde::Serialize>(kind: &str, value: &T) -> Rep {
        Rep {
            status: StatusCode::OK,
            content_type: if kind == "json" {
                "application/json".to_string()
            } else {
                model::media(kind)
            },
            body: serde_json::to_vec(value).unwrap_or_default(),
            location: None,
        }
    }

    /// 202 with a Status body, whatever the request's `Accept` named (the spec's rule).
    pub(crate) fn accepted(status: &model::Status) -> Rep {
        Rep {
            status: StatusCode::ACCEPTED,
            content_type: model::media("Status"),
            body: serde_json::to_vec(status).unwrap_or_default(),
            location: Some(status.status_uri.clone()),
        }
    }
}

impl IntoResponse for Rep {
    fn into_response(self) -> Response {
        let mut r = Response::new(Body::from(self.body));
        *r.status_mut() = self.status;
        if let Ok(v) = HeaderValue::from_str(&self.content_type) {
            r.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        if let Some(l) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            r.headers_mut().insert(header::LOCATION, l);
        }
        r
    }
}

/// The methods a route allows, for tests that check the router against [`ROUTES`].
pub fn allowed(path: &str) -> Option<Vec<Method>> {
    ROUTES.iter().find(|(p, _)| *p == path).map(|(_, m)| {
        m.iter()
            .map(|m| Method::from_bytes(m.as_bytes()).expect("a method"))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_accept() {
        let own = "application/vnd.com.sun.cloud.VM+json";
        assert_eq!(negotiate(None, own).as_deref(), Some(own));
        assert_eq!(negotiate(Some("*/*"), own).as_deref(), Some(own));
        assert_eq!(negotiate(Some(own), own).as_deref(), Some(own));
        assert_eq!(
            negotiate(Some("text/html, application/json;q=0.5"), own).as_deref(),
            Some("application/json")
        );
        assert_eq!(negotiate(Some("text/html"), own), None);
        assert_eq!(
            negotiate(Some("application/vnd.com.sun.cloud.Backup+json"), own),
            None
        );
        assert_eq!(negotiate(Some("application/json;q=0"), own), None);
    }

    fn json_response(ct: &str) -> Response {
        let mut r = Response::new(Body::from("{}"));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        r
    }

    #[test]
    fn a_status_is_polled_with_the_requests_accept_header() {
        let backup = model::media("Backup");
        let polled = conform(json_response(&model::media("Status")), Some(&backup));
        assert_eq!(polled.status(), StatusCode::OK);
        assert_eq!(
            polled.headers()[header::CONTENT_TYPE],
            model::media("Status").as_str()
        );
        // Any other resource still answers 406 to an Accept that rules it out.
        let vm = conform(json_response(&model::media("VM")), Some(&backup));
        assert_eq!(vm.status(), StatusCode::NOT_ACCEPTABLE);
    }

    #[test]
    fn basic_credentials() {
        let v = HeaderValue::from_static("Basic YWRtaW46czNjcjM6dA==");
        assert_eq!(
            parse_basic(&v),
            Some(("admin".to_string(), "s3cr3:t".to_string()))
        );
        assert_eq!(parse_basic(&HeaderValue::from_static("Bearer x")), None);
        assert_eq!(parse_basic(&HeaderValue::from_static("Basic !!!")), None);
    }

    #[test]
    fn hosts_that_could_forge_uris_are_not_used() {
        assert!(valid_host("backup.example:8080"));
        assert!(valid_host("[::1]:8080"));
        assert!(!valid_host("evil.example/x"));
        assert!(!valid_host("a b"));
        assert!(!valid_host(""));
    }
}
