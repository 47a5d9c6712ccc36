//! The web dashboard at `/ui/`, served on the gateway's REST listener (so `cairn dev` serves
//! it too): server-rendered HTML, one embedded stylesheet and one small script, no framework
//! and nothing fetched from elsewhere.
//!
//! # A request's path
//! 1. [`gate`] (every route but the catch-all): a POST's body is read (at most
//!    [`MAX_FORM_BYTES`]) and parsed as a form; a POST whose `Origin` (or `Referer`) names
//!    another host is refused (403).
//! 2. Open routes (`/ui`, `/ui/login`, `/ui/assets/…`) run now. Every other route needs a
//!    live session ([`session`]): the `cairn_session` cookie names it, and the user it
//!    belongs to must still be in the users file; their *current* role is used. Without
//!    one, a GET is sent to the sign-in page and a POST is refused (403).
//! 3. A POST must carry the session's CSRF token (form field `csrf`, or the `X-CSRF-Token`
//!    header), compared in constant time; a missing or wrong token is a 403 page. GET
//!    handlers change nothing. The sign-in POST has no session yet and so no token: the
//!    Origin check of step 1, the SameSite cookie and a fresh session id on every sign-in
//!    (no fixation) stand for it.
//! 4. The route must have a row in `cairn_core::auth::TABLE` (interface `Ui`); a route
//!    without one is refused (fail closed). The row's access is **not** checked here: the
//!    handler calls the cluster acting for the user ([`state::Ctx::cluster`], principal
//!    `ui:NAME` with the role), and the cluster decides; its refusal is a 403 page. The
//!    table only decides which buttons a page shows ([`state::Ctx::allows`]), so a viewer
//!    sees no action it may not take, and a forged request is refused by the cluster anyway.
//!
//! # Pages
//! Overview, hosts and environments, an environment, a backup with its file browser
//! (`files`), jobs and a job, nodes. Live job progress comes from [`sse`], which forwards the
//! cluster's own job streams. Lists are paginated on the server and a page renders at most
//! one page of items; what still reads a whole list from the cluster is listed in
//! [`pages`].
//!
//! Sessions live in this process's memory: a restarted gateway signs everyone out, and two
//! gateways behind one name need sticky sessions.

pub mod actions;
pub mod assets;
pub mod files;
pub mod html;
pub mod pages;
pub mod plot;
pub mod session;
pub mod sse;
pub mod state;

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get, post};
use axum::Router;
use cairn_core::auth::Interface;

use actions::Fields;
use state::{html_response, Ctx, UiError, UiState};

/// The largest form body read.
pub const MAX_FORM_BYTES: usize = 64 * 1024;

/// The dashboard's routes as the authorization table spells them: (path, methods).
pub const ROUTES: &[(&str, &[&str])] = &[
    ("/ui", &["GET"]),
    ("/ui/", &["GET"]),
    ("/ui/login", &["GET", "POST"]),
    ("/ui/logout", &["POST"]),
    ("/ui/assets/{name}", &["GET"]),
    ("/ui/hosts", &["GET"]),
    ("/ui/envs/{eid}", &["GET"]),
    ("/ui/envs/{eid}/backup", &["POST"]),
    ("/ui/backups/{eid}/{stamp}", &["GET"]),
    ("/ui/backups/{eid}/{stamp}/file", &["GET"]),
    ("/ui/backups/{eid}/{stamp}/tar", &["GET"]),
    ("/ui/backups/{eid}/{stamp}/restore", &["GET", "POST"]),
    ("/ui/backups/{eid}/{stamp}/protect", &["POST"]),
    ("/ui/backups/{eid}/{stamp}/delete", &["POST"]),
    ("/ui/jobs", &["GET"]),
    ("/ui/jobs/{id}", &["GET"]),
    ("/ui/jobs/{id}/cancel", &["POST"]),
    ("/ui/events/jobs", &["GET"]),
    ("/ui/nodes", &["GET"]),
    ("/ui/nodes/{what}", &["POST"]),
];

/// The dashboard's router (its paths are absolute: merge it beside the REST router).
pub fn router(state: Arc<UiState>) -> Router {
    use actions as a;
    use pages as p;
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(p::overview))
        .route("/ui/login", get(login_form).post(a::login))
        .route("/ui/logout", post(a::logout))
        .route("/ui/assets/:name", get(assets::asset))
        .route("/ui/hosts", get(p::hosts))
        .route("/ui/envs/:eid", get(p::env))
        .route("/ui/envs/:eid/backup", post(a::back_up))
        .route("/ui/backups/:eid/:stamp", get(files::backup))
        .route("/ui/backups/:eid/:stamp/file", get(files::file))
        .route("/ui/backups/:eid/:stamp/tar", get(files::tar))
        .route(
            "/ui/backups/:eid/:stamp/restore",
            get(a::restore_form).post(a::restore),
        )
        .route("/ui/backups/:eid/:stamp/protect", post(a::protect))
        .route("/ui/backups/:eid/:stamp/delete", post(a::delete))
        .route("/ui/jobs", get(p::jobs))
        .route("/ui/jobs/:id", get(p::job))
        .route("/ui/jobs/:id/cancel", post(a::cancel))
        .route("/ui/events/jobs", get(sse::job_events))
        .route("/ui/nodes", get(p::nodes_page))
        .route("/ui/nodes/:what", post(a::maintenance))
        .route_layer(middleware::from_fn_with_state(state.clone(), gate))
        .route(
            "/ui/*rest",
            any(|| async { UiError::NotFound("There is no such page.".into()) }),
        )
        .with_state(state)
}

async fn login_form(axum::extract::Query(q): axum::extract::Query<NextQuery>) -> Response {
    html_response(
        StatusCode::OK,
        pages::login_page(&actions::safe_next(q.next.as_deref()), None),
    )
}

#[derive(serde::Deserialize)]
struct NextQuery {
    next: Option<String>,
}

/// The table's entry of a route (`POST /ui/envs/{eid}/backup`), from the router's pattern:
/// the REST adapter's rule, shared.
pub use crate::rest::table_entry;

fn header_str(parts: &axum::http::request::Parts, name: header::HeaderName) -> Option<&str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

/// Steps 1–4 of the module doc.
async fn gate(State(s): State<Arc<UiState>>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let pattern = parts
        .extensions
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let entry = table_entry(&parts.method, &pattern);
    if cairn_core::auth::access_of(Interface::Ui, &entry).is_none() {
        return UiError::Forbidden(format!("{entry} has no row in the authorization table"))
            .into_response();
    }
    let is_post = parts.method == Method::POST;
    let bytes = if is_post {
        match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
            Ok(b) => b,
            Err(_) => {
                return UiError::BadRequest("the form is too large".into()).into_response();
            }
        }
    } else {
        Bytes::new()
    };
    if is_post
        && !session::same_origin(
            header_str(&parts, header::ORIGIN),
            header_str(&parts, header::REFERER),
            header_str(&parts, header::HOST),
        )
    {
        return UiError::Forbidden("a request from another site was refused".into())
            .into_response();
    }
    let fields = Fields::parse(&bytes);
    let open = matches!(pattern.as_str(), "/ui" | "/ui/login" | "/ui/assets/:name");
    if !open {
        let now = Instant::now();
        let found = header_str(&parts, header::COOKIE)
            .and_then(session::cookie_value)
            .map(str::to_string)
            .and_then(|id| s.sessions.get(&id, now).map(|sess| (id, sess)));
        let found = found.and_then(|(id, sess)| match s.users.role_of(&sess.user) {
            Some(role) => Some((id, sess, role)),
            None => {
                // The user was removed: the session ends with them.
                s.sessions.remove(&id);
                None
            }
        });
        let Some((id, sess, role)) = found else {
            if is_post {
                return UiError::Forbidden("sign in first (no session, or it expired)".into())
                    .into_response();
            }
            let here = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/ui/".into());
            return Redirect::to(&format!("/ui/login?next={}", html::enc(&here))).into_response();
        };
        if is_post {
            let given = header_str(&parts, header::HeaderName::from_static("x-csrf-token"))
                .or_else(|| fields.get("csrf"));
            if !session::csrf_ok(&sess.csrf, given) {
                return UiError::Forbidden(
                    "the form's CSRF token is missing or wrong; reload the page and try again"
                        .into(),
                )
                .into_response();
            }
        }
        parts
            .extensions
            .insert(Ctx::new(sess.user, role, sess.csrf, id, &s.link));
    }
    parts.extensions.insert(fields);
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::{Role, Users, UsersFile};
    use tower::ServiceExt;

    /// A router over a gateway that has not reached any cluster (every cluster call is a
    /// 503), with one operator.
    fn app() -> (Router, Arc<UiState>) {
        let mut file = UsersFile::default();
        file.add("op", Role::Operator, "operator-pass").unwrap();
        let users = Arc::new(Users::from_list(file));
        let state = Arc::new(UiState::new(crate::ClusterLink::default(), users, false));
        (router(state.clone()), state)
    }

    async fn send(app: &Router, req: axum::http::Request<Body>) -> Response {
        app.clone().oneshot(req).await.unwrap()
    }

    fn post(path: &str, cookie: Option<&str>, body: &str) -> axum::http::Request<Body> {
        let mut b = axum::http::Request::post(path)
            .header(header::HOST, "gw.example:8080")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(c) = cookie {
            b = b.header(header::COOKIE, c);
        }
        b.body(Body::from(body.to_string())).unwrap()
    }

    #[tokio::test]
    async fn the_gate_wants_a_session_and_its_csrf_token() {
        let (app, state) = app();
        // No session: a page sends to the sign-in page, an action is refused.
        let r = send(
            &app,
            axum::http::Request::get("/ui/jobs")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers()[header::LOCATION], "/ui/login?next=%2Fui%2Fjobs");
        let eid = "00000000-0000-4000-8000-000000000001";
        let r = send(&app, post(&format!("/ui/envs/{eid}/backup"), None, "")).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);

        // A wrong password, then the right one.
        let r = send(&app, post("/ui/login", None, "user=op&password=nope")).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let r = send(
            &app,
            post(
                "/ui/login",
                None,
                "user=op&password=operator-pass&next=/ui/jobs",
            ),
        )
        .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers()[header::LOCATION], "/ui/jobs");
        let set = r.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict") && !set.contains("Secure")
        );
        let cookie = set.split(';').next().unwrap().to_string();

        // The session's CSRF token (what its pages carry).
        let id = session::cookie_value(&cookie).unwrap();
        let token = state.sessions.get(id, Instant::now()).unwrap().csrf;

        let path = format!("/ui/envs/{eid}/backup");
        // Without the token, with a wrong one, from another site: 403.
        for (body, origin) in [
            (String::new(), None),
            ("csrf=00".to_string(), None),
            (format!("csrf={token}"), Some("http://evil.example")),
        ] {
            let mut req = post(&path, Some(&cookie), &body);
            if let Some(o) = origin {
                req.headers_mut().insert(header::ORIGIN, o.parse().unwrap());
            }
            assert_eq!(
                send(&app, req).await.status(),
                StatusCode::FORBIDDEN,
                "{body} {origin:?}"
            );
        }
        // With it (field or header), the action runs: here it meets no cluster (503).
        let r = send(&app, post(&path, Some(&cookie), &format!("csrf={token}"))).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let mut req = post(&path, Some(&cookie), "");
        req.headers_mut()
            .insert("x-csrf-token", token.parse().unwrap());
        req.headers_mut()
            .insert(header::ORIGIN, "http://gw.example:8080".parse().unwrap());
        assert_eq!(
            send(&app, req).await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );

        // Signing out ends the session.
        let r = send(
            &app,
            post("/ui/logout", Some(&cookie), &format!("csrf={token}")),
        )
        .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let r = send(
            &app,
            axum::http::Request::get("/ui/jobs")
                .header(header::COOKIE, &cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "signed out");
    }

    #[test]
    fn every_route_has_a_row_and_every_row_a_route() {
        let mut entries = Vec::new();
        for (path, methods) in ROUTES {
            for m in *methods {
                let e = format!("{m} {path}");
                assert!(
                    cairn_core::auth::access_of(Interface::Ui, &e).is_some(),
                    "{e} has no row in cairn_core::auth::TABLE"
                );
                entries.push(e);
            }
        }
        for row in cairn_core::auth::TABLE
            .iter()
            .filter(|r| r.interface == Interface::Ui)
        {
            assert!(
                entries.contains(&row.entry.to_string()),
                "row {} names no route",
                row.entry
            );
        }
        assert_eq!(
            table_entry(&Method::POST, "/ui/backups/:eid/:stamp/delete"),
            "POST /ui/backups/{eid}/{stamp}/delete"
        );
    }
}
