//! The dashboard's actions (POST): sign-in and sign-out, back up, restore, protect, delete,
//! cancel, and the admins' scrub, GC and repair.
//!
//! The router has checked the session and the CSRF token before any of these runs (see the
//! module above); each action then asks the cluster *as the user*, so the cluster decides
//! whether the user may (a refusal is a 403 page). An action answers with a redirect to
//! the page that shows its effect (a job's page for jobs), so reloading a result page
//! never repeats an action. A restore is asked for twice: the first POST (without
//! `confirm`) changes nothing and answers the confirmation page that says what will be
//! overwritten; the second, from that page's button, creates the job.

use std::fmt::Write;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use cairn_core::job::{JobKind, JobOptions};
use cairn_core::BackupType;

use super::html::{self, esc};
use super::pages::{backup_url, now_ms, parse_backup, parse_env};
use super::state::{html_response, Ctx, Page, Run, UiError, UiState};
use crate::users::LoginError;

type St = State<Arc<UiState>>;

/// The fields of a form body (urlencoded), in order; a name may repeat (`path`).
#[derive(Clone, Debug, Default)]
pub struct Fields(pub Vec<(String, String)>);

impl Fields {
    pub fn parse(body: &[u8]) -> Fields {
        Fields(
            form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some("on" | "true" | "yes" | "1"))
    }
}

/// Where to go after signing in: a dashboard page only (never another site).
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with("/ui/")
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.contains("://")
                && !n.starts_with("/ui/login") =>
        {
            n.to_string()
        }
        _ => "/ui/".to_string(),
    }
}

fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

pub async fn login(State(s): St, Extension(f): Extension<Fields>) -> Response {
    let next = safe_next(f.get("next"));
    let user = f.get("user").unwrap_or_default();
    let password = f.get("password").unwrap_or_default();
    match s.users.login(user, password).await {
        Ok(who) => {
            let id = s.sessions.create(&who.name, who.role, Instant::now());
            tracing::info!(user = %who.name, "dashboard sign-in");
            let mut r = see_other(&next);
            if let Ok(v) = HeaderValue::from_str(&super::session::set_cookie(&id, s.tls)) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(LoginError::Refused(_)) => html_response(
            StatusCode::UNAUTHORIZED,
            super::pages::login_page(&next, Some("Wrong user name or password.")),
        ),
        Err(LoginError::Busy) => html_response(
            StatusCode::SERVICE_UNAVAILABLE,
            super::pages::login_page(
                &next,
                Some("Too many sign-ins are being checked; try again in a second."),
            ),
        ),
    }
}

pub async fn logout(State(s): St, Extension(cx): Extension<Ctx>) -> Response {
    s.sessions.remove(&cx.session);
    let mut r = see_other("/ui/login");
    if let Ok(v) = HeaderValue::from_str(&super::session::clear_cookie(s.tls)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

pub async fn back_up(
    Extension(cx): Extension<Ctx>,
    Extension(f): Extension<Fields>,
    Path(eid): Path<String>,
) -> Page {
    let env = parse_env(&eid)?;
    let backup_type = match f.get("kind").unwrap_or_default() {
        "" => None,
        "full" => Some(BackupType::Full),
        "incremental" => Some(BackupType::Incremental),
        "differential" => Some(BackupType::Differential),
        other => {
            return Err(UiError::BadRequest(format!(
                "{other:?} is not a backup type"
            )))
        }
    };
    let options = JobOptions {
        backup_type,
        ..JobOptions::default()
    };
    let job = crate::create_job(cx.cluster()?, JobKind::Backup, env, "", &options).await?;
    tracing::info!(user = %cx.user, job_id = %job.id, env = %env, "backup requested from the dashboard");
    Ok(see_other(&format!("/ui/jobs/{}", job.id)))
}

pub async fn protect(
    Extension(cx): Extension<Ctx>,
    Extension(f): Extension<Fields>,
    Path((eid, stamp)): Path<(String, String)>,
) -> Page {
    let id = parse_backup(&eid, &stamp)?;
    let on = f.get("protected") != Some("false");
    cx.cluster()?.protect(&id, on).await?;
    Ok(see_other(&format!("/ui/envs/{}", id.env)))
}

pub async fn delete(
    Extension(cx): Extension<Ctx>,
    Path((eid, stamp)): Path<(String, String)>,
) -> Page {
    let id = parse_backup(&eid, &stamp)?;
    let options = JobOptions {
        backup: Some(id),
        ..JobOptions::default()
    };
    let job = crate::create_job(cx.cluster()?, JobKind::Delete, id.env, "", &options).await?;
    tracing::info!(user = %cx.user, backup = %id, "backup deleted from the dashboard");
    Ok(see_other(&format!("/ui/jobs/{}", job.id)))
}

pub async fn cancel(Extension(cx): Extension<Ctx>, Path(id): Path<String>) -> Page {
    let id = uuid::Uuid::parse_str(&id)
        .map_err(|_| UiError::NotFound(format!("{id:?} does not name a job")))?;
    cx.cluster()?.cancel_job(id).await?;
    Ok(see_other(&format!("/ui/jobs/{id}")))
}

/// The restore form of a backup (GET): in place, or onto another host.
pub async fn restore_form(
    Extension(cx): Extension<Ctx>,
    Path((eid, stamp)): Path<(String, String)>,
) -> Page {
    let id = parse_backup(&eid, &stamp)?;
    let c = cx.cluster()?;
    let bk = c.show(&id).await?;
    let hosts = c.list_hosts().await?;
    let url = backup_url(&id);
    let mut b = super::pages::backup_facts(&bk, now_ms());
    let _ = write!(
        b,
        "<form method=\"post\" action=\"{url}/restore\" class=\"restore\">{}<fieldset><legend>Where to</legend><p><input type=\"radio\" id=\"m-inplace\" name=\"mode\" value=\"inplace\" checked> <label for=\"m-inplace\">In place: replace the environment's live tree</label></p><p><input type=\"radio\" id=\"m-host\" name=\"mode\" value=\"host\"> <label for=\"m-host\">Onto another host, into a new directory</label></p><p><label for=\"host\">Host</label> <select id=\"host\" name=\"host\">",
        html::csrf_field(&cx.csrf)
    );
    for h in &hosts {
        let _ = write!(
            b,
            "<option value=\"{0}\">{0}{1}</option>",
            esc(&h.record.id),
            if h.online { "" } else { " (offline)" }
        );
    }
    b.push_str("</select> <label for=\"target\">Directory</label> <input id=\"target\" name=\"target\" placeholder=\"/srv/restore/ct1\"></p></fieldset><p><input type=\"checkbox\" id=\"force\" name=\"force\" value=\"on\"> <label for=\"force\">Replace even if the environment is running or changed since its last backup</label></p><p><button type=\"submit\" class=\"primary\">Continue…</button> <a href=\"");
    b.push_str(&url);
    b.push_str("\">Back</a></p></form>");
    Ok(cx.page("Restore", "/ui/hosts", &b))
}

/// The restore POST: a confirmation page first, the job once confirmed.
pub async fn restore(
    Extension(cx): Extension<Ctx>,
    Extension(f): Extension<Fields>,
    Path((eid, stamp)): Path<(String, String)>,
) -> Page {
    let id = parse_backup(&eid, &stamp)?;
    let c = cx.cluster()?;
    let mode = f.get("mode").unwrap_or("inplace");
    let force = f.flag("force");
    let paths: Vec<String> = f
        .all("path")
        .into_iter()
        .map(|p| p.trim_matches('/').to_string())
        .filter(|p| !p.is_empty())
        .collect();
    let (kind, host, target) = match mode {
        "inplace" => (JobKind::Restore, String::new(), String::new()),
        "selective" => {
            if paths.is_empty() {
                return Err(UiError::BadRequest(
                    "tick at least one path to restore".into(),
                ));
            }
            (JobKind::SelectiveRestore, String::new(), String::new())
        }
        "host" => {
            let host = f.get("host").unwrap_or_default().trim().to_string();
            let target = f.get("target").unwrap_or_default().trim().to_string();
            if host.is_empty() || !target.starts_with('/') {
                return Err(UiError::BadRequest(
                    "a restore onto another host needs the host and an absolute directory".into(),
                ));
            }
            (JobKind::Restore, host, target)
        }
        other => {
            return Err(UiError::BadRequest(format!(
                "{other:?} is not a restore mode"
            )))
        }
    };
    if f.get("confirm") != Some("yes") {
        // Nothing changes yet: say what will be overwritten, and ask.
        let bk = c.show(&id).await?;
        let env = c
            .list_envs(None)
            .await?
            .into_iter()
            .find(|e| e.record.eid == id.env);
        let (env_host, env_path) = env
            .map(|e| (e.record.host, e.record.path))
            .unwrap_or_else(|| (bk.host.clone(), bk.source.clone()));
        let taken = bk.id.datetime().format("%Y-%m-%d %H:%M:%S UTC").to_string();
        let mut b = String::from("<div class=\"confirm\" role=\"alert\">");
        match mode {
            "inplace" => {
                let _ = write!(
                    b,
                    "<p>The live tree <code>{}</code> on host <strong>{}</strong> will be <strong>replaced</strong> by the backup of {taken}: files changed since then are overwritten, and files created since then are removed.</p>",
                    esc(&env_path),
                    esc(&env_host)
                );
            }
            "selective" => {
                let _ = write!(
                    b,
                    "<p>These paths under <code>{}</code> on host <strong>{}</strong> will be <strong>overwritten</strong> with their content of {taken}:</p><ul class=\"paths\">",
                    esc(&env_path),
                    esc(&env_host)
                );
                for p in &paths {
                    let _ = write!(b, "<li><code>{}</code></li>", esc(p));
                }
                b.push_str("</ul>");
            }
            _ => {
                let _ = write!(
                    b,
                    "<p>The backup of {taken} will be restored into <code>{}</code> on host <strong>{}</strong>. Nothing else is touched; the directory must not exist or be empty.</p>",
                    esc(&target),
                    esc(&host)
                );
            }
        }
        if force {
            b.push_str("<p>With <strong>force</strong>: even if the environment is running or changed since its last backup.</p>");
        }
        b.push_str("</div>");
        let mut fields: Vec<(&str, &str)> = vec![
            ("mode", mode),
            ("confirm", "yes"),
            ("host", &host),
            ("target", &target),
        ];
        if force {
            fields.push(("force", "on"));
        }
        for p in &paths {
            fields.push(("path", p));
        }
        b.push_str(&html::button_form(
            &format!("{}/restore", backup_url(&id)),
            "Restore now",
            &cx.csrf,
            &fields,
            "primary danger",
        ));
        let _ = write!(b, " <a href=\"{}\">Cancel</a>", backup_url(&id));
        return Ok(cx.page("Confirm restore", "/ui/hosts", &b));
    }
    let options = JobOptions {
        backup: Some(id),
        force,
        target_path: target,
        paths,
        ..JobOptions::default()
    };
    let job = crate::create_job(c, kind, id.env, &host, &options).await?;
    tracing::info!(user = %cx.user, backup = %id, job_id = %job.id, kind = kind.as_str(), "restore requested from the dashboard");
    Ok(see_other(&format!("/ui/jobs/{}", job.id)))
}

/// Starts a scrub, GC or repair (as the user: the cluster decides) in the background; its
/// report shows on the nodes page.
pub async fn maintenance(
    State(s): St,
    Extension(cx): Extension<Ctx>,
    Path(what): Path<String>,
) -> Page {
    if !matches!(what.as_str(), "scrub" | "gc" | "repair") {
        return Err(UiError::NotFound(format!("no maintenance run {what:?}")));
    }
    let c = cx.cluster()?.clone();
    let index = {
        let mut r = s.reports.lock().unwrap_or_else(|e| e.into_inner());
        r.runs.push(Run {
            what: what.clone(),
            by: cx.user.clone(),
            started_ms: now_ms(),
            outcome: None,
        });
        if r.runs.len() > 50 {
            r.runs.remove(0);
        }
        r.runs.len() - 1
    };
    let state = s.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let outcome = run_maintenance(&c, &what).await;
        let shown = outcome
            .as_ref()
            .map(String::clone)
            .map_err(|e| e.to_string());
        {
            let mut r = state.reports.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(run) = r.runs.get_mut(index) {
                run.outcome = Some(shown);
            }
        }
        let _ = tx.send(outcome);
    });
    // A refusal comes at once: answer it as such. A long run goes on in the background.
    if let Ok(Ok(Err(e))) = tokio::time::timeout(MAINTENANCE_WAIT, rx).await {
        if e.code() == cairn_core::ErrorCode::PermissionDenied {
            return Err(e.into());
        }
    }
    Ok(see_other("/ui/nodes"))
}

/// How long a maintenance POST waits for its run before answering (a refusal is immediate).
const MAINTENANCE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

async fn run_maintenance(c: &cairn_api::Client, what: &str) -> Result<String, cairn_api::Error> {
    let urls: Vec<(u64, String)> = match c.placement() {
        Some(p) => p.nodes.iter().map(|n| (n.id, n.addr.clone())).collect(),
        None => vec![(0, c.url.clone())],
    };
    match what {
        "gc" => c
            .gc(std::time::Duration::from_secs(30))
            .await
            .map(|r| {
                format!(
                    "{} backups, {} chunks referenced, {} removed, {} reclaimed, {} segments compacted{}",
                    r.backups,
                    r.referenced,
                    r.removed,
                    html::bytes(r.bytes_reclaimed),
                    r.segments_compacted,
                    if r.nodes_skipped.is_empty() {
                        String::new()
                    } else {
                        format!("; nodes not swept: {:?}", r.nodes_skipped)
                    }
                )
            }),
        "scrub" => {
            let mut parts = Vec::new();
            for (id, url) in urls {
                parts.push(match c.scrub_at(&url).await {
                    Ok(r) => format!(
                        "node {id}: {} checked, {} corrupt, {} repaired, {} unrepaired, {} unreadable",
                        r.checked,
                        r.corrupt,
                        r.repaired,
                        r.unrepaired.len(),
                        r.unreadable.len()
                    ),
                    Err(e) if refused(&e) => return Err(e),
                    Err(e) => format!("node {id}: {e}"),
                });
            }
            Ok(parts.join("; "))
        }
        _ => {
            let mut parts = Vec::new();
            for (id, url) in urls {
                parts.push(match c.repair_at(&url).await {
                    Ok(r) => format!(
                        "node {id}: {} checked, {} pushed, {} dropped, backlog {}",
                        r.checked, r.pushed, r.dropped, r.backlog
                    ),
                    Err(e) if refused(&e) => return Err(e),
                    Err(e) => format!("node {id}: {e}"),
                });
            }
            Ok(parts.join("; "))
        }
    }
}

fn refused(e: &cairn_api::Error) -> bool {
    e.code() == cairn_core::ErrorCode::PermissionDenied
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_goes_back_to_dashboard_pages_only() {
        assert_eq!(safe_next(Some("/ui/jobs?page=2")), "/ui/jobs?page=2");
        for bad in [
            "https://evil.example/",
            "//evil.example/ui/",
            "/ui/login",
            "/other",
            "/ui/\\evil",
        ] {
            assert_eq!(safe_next(Some(bad)), "/ui/", "{bad}");
        }
        assert_eq!(safe_next(None), "/ui/");
    }

    #[test]
    fn form_fields_keep_repeated_names() {
        let f = Fields::parse(b"csrf=abc&path=etc%2Fhostname&path=data.bin&force=on");
        assert_eq!(f.get("csrf"), Some("abc"));
        assert_eq!(f.all("path"), vec!["etc/hostname", "data.bin"]);
        assert!(f.flag("force"));
        assert!(!f.flag("confirm"));
    }
}
