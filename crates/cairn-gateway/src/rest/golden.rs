//! Golden tests: every representation and every error answer, byte for byte, against the
//! files in `crates/cairn-gateway/tests/golden/`. A deliberate change is re-recorded with
//! `CAIRN_BLESS=1 cargo test -p cairn-gateway golden` and reviewed in the diff.
//!
//! Representations come from the pure functions of [`super::model`] over fixed records;
//! errors come from the real router (in process, without a cluster: the routes that need
//! one answer 503) or, for the answers only a cluster gives, from the conversion of its
//! stable error codes.

use std::path::PathBuf;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use cairn_api::Error as ClusterError;
use cairn_core::job::{BackupEdit, Job, JobKind, JobOptions, JobState};
use cairn_core::{BackupId, BackupState, BackupType, EnvId, ErrorCode};
use tower::ServiceExt;

use super::error::ApiError;
use super::fixtures::{self, backup_at, env, host, uris, EID};
use super::model;
use crate::users::Role;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Compares `text` with the golden file `name` (or writes it under `CAIRN_BLESS=1`).
fn golden(name: &str, text: &str) {
    let path = golden_dir().join(name);
    if std::env::var_os("CAIRN_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "{} is missing: record it with CAIRN_BLESS=1 cargo test -p cairn-gateway golden",
            path.display()
        )
    });
    assert_eq!(
        text,
        want,
        "{name} differs from its golden file (re-record with CAIRN_BLESS=1 if the change is intended)"
    );
}

fn golden_json<T: serde::Serialize>(name: &str, v: &T) {
    golden(name, &(serde_json::to_string_pretty(v).unwrap() + "\n"));
}

fn job(kind: JobKind, state: JobState) -> Job {
    let env: EnvId = EID.parse().unwrap();
    let target: BackupId = format!("{EID}/20261122081500").parse().unwrap();
    let options = JobOptions {
        backup: (kind != JobKind::Backup).then_some(target),
        edit: (kind == JobKind::Update).then(|| BackupEdit {
            tags: Some(vec!["keep".into()]),
            ..BackupEdit::default()
        }),
        ..JobOptions::default()
    };
    let mut j = Job::new(
        "01932f5e-7a00-7000-8000-000000000041".parse().unwrap(),
        kind,
        env,
        "node-a".into(),
        "rest:alice".into(),
        options,
        1_795_000_000_000,
        3_600_000,
    );
    // As the catalog admits it: a backup job holds its backup's id from the start.
    if kind == JobKind::Backup {
        j.reserved_backup = Some(target);
    }
    j.state = state;
    j.progress.percent = 42;
    match state {
        JobState::Succeeded => j.result.backup = Some(target),
        JobState::Failed => {
            j.reason = "the agent of host \"node-a\" stopped renewing its lease".into();
            j.code = Some(ErrorCode::AgentLost);
        }
        JobState::Cancelled => j.reason = "cancelled by admin".into(),
        _ => {}
    }
    j
}

/// A back_up Status names the new backup from the first answer: the catalog reserves the
/// backup's id when it admits the job (`Job::reserved_backup`), and the job's commit takes
/// exactly that id. A job admitted before reservations existed names the VM until its commit
/// writes the id into it.
#[test]
fn a_back_up_status_names_the_backup_from_the_first_answer() {
    let u = uris();
    let reserved: BackupId = format!("{EID}/20261122081500").parse().unwrap();
    for state in [JobState::Queued, JobState::Running] {
        let j = job(JobKind::Backup, state);
        assert_eq!(j.reserved_backup, Some(reserved));
        let s = model::status(&u, &j);
        assert_eq!(s.target_uri, u.backup(&reserved), "{state:?}");
        assert!(s.progress < 100 && s.status.is_none());
    }
    let mut done = job(JobKind::Backup, JobState::Succeeded);
    done.result.backup = Some(reserved);
    assert_eq!(model::status(&u, &done).target_uri, u.backup(&reserved));

    // Admitted before reservations: the VM, then the backup once committed.
    let mut old = job(JobKind::Backup, JobState::Running);
    old.reserved_backup = None;
    assert_eq!(model::status(&u, &old).target_uri, u.vm(old.env));
    let made: BackupId = format!("{EID}/20261122081501").parse().unwrap();
    old.result.backup = Some(made);
    let s = model::status(&u, &old);
    assert_eq!(s.target_uri, u.backup(&made));
    assert_eq!((s.progress, s.status), (42, None), "still running");
}

#[test]
fn golden_representations() {
    let u = uris();
    let b1 = backup_at("20261122081500", "web01-nightly");
    let mut b2 = backup_at("20261123081500", "");
    b2.kind = BackupType::Incremental;
    b2.state = BackupState::Incomplete;
    let backups = vec![b2.clone(), b1.clone()];
    golden_json("cloud.json", &model::cloud(&u, "cairn-1a2b3c4d"));
    golden_json("versions.json", &model::versions(&u));
    golden_json("vdc.json", &model::vdc(&u, "cairn-1a2b3c4d", 3, &[host()]));
    golden_json("cluster-root.json", &model::root_cluster(&u, &[host()]));
    golden_json(
        "cluster-host.json",
        &model::host_cluster(&u, &host(), true, &[env()], &backups),
    );
    golden_json("vm.json", &model::vm(&u, &env(), &backups));
    golden_json(
        "vm-without-host.json",
        &model::vm(&u, &model::env_from_backup(&b1), std::slice::from_ref(&b1)),
    );
    golden_json("backup.json", &model::backup(&u, &b1));
    golden_json("backup-unnamed-incremental.json", &model::backup(&u, &b2));
    for (file, kind, state) in [
        (
            "status-back_up-queued.json",
            JobKind::Backup,
            JobState::Queued,
        ),
        (
            "status-back_up-running.json",
            JobKind::Backup,
            JobState::Running,
        ),
        (
            "status-back_up-done.json",
            JobKind::Backup,
            JobState::Succeeded,
        ),
        (
            "status-back_up-failed.json",
            JobKind::Backup,
            JobState::Failed,
        ),
        (
            "status-back_up-cancelled.json",
            JobKind::Backup,
            JobState::Cancelled,
        ),
        (
            "status-update-done.json",
            JobKind::Update,
            JobState::Succeeded,
        ),
        (
            "status-delete-done.json",
            JobKind::Delete,
            JobState::Succeeded,
        ),
        (
            "status-restore-running.json",
            JobKind::Restore,
            JobState::Running,
        ),
        (
            "status-restore-done.json",
            JobKind::Restore,
            JobState::Succeeded,
        ),
    ] {
        golden_json(file, &model::status(&u, &job(kind, state)));
    }
}

/// One answer as recorded: status line, the headers a client acts on, body.
async fn record(app: &axum::Router, req: Request<Body>) -> String {
    let resp = app.clone().oneshot(req).await.unwrap();
    let mut out = format!("HTTP {}\n", resp.status().as_u16());
    for h in [
        "content-type",
        "www-authenticate",
        "allow",
        "location",
        "retry-after",
    ] {
        if let Some(v) = resp.headers().get(h) {
            out.push_str(&format!("{h}: {}\n", v.to_str().unwrap()));
        }
    }
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    out.push('\n');
    // The body exactly as sent.
    out.push_str(&String::from_utf8_lossy(&body));
    out.push('\n');
    out
}

fn router() -> axum::Router {
    fixtures::router(
        &[
            ("alice", Role::Admin, "alice-password"),
            ("victor", Role::Viewer, "victor-password"),
        ],
        Some("http://backup.example:8080"),
        1024,
    )
}

fn req(method: &str, path: &str, who: Option<(&str, &str)>) -> axum::http::request::Builder {
    let mut b = Request::builder().method(method).uri(path);
    if let Some((u, p)) = who {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        b = b.header("authorization", format!("Basic {token}"));
    }
    b
}

/// A login while the gate is full: 503 `busy` with `Retry-After` at once, whatever the
/// credentials, except for a user whose success is cached.
#[tokio::test]
async fn golden_busy_login() {
    let users = fixtures::users_of(&[
        ("alice", Role::Admin, "alice-password"),
        ("victor", Role::Viewer, "victor-password"),
    ])
    .with_limits(&crate::users::AuthConfig {
        max_concurrent_hashes: 1,
        max_waiting_hashes: 0,
        failed_login_delay_ms: 0,
    });
    let users = std::sync::Arc::new(users);
    let app = fixtures::router_over(users.clone(), Some("http://backup.example:8080"), 1024);
    let alice = Some(("alice", "alice-password"));
    let versions = || req("GET", "/versions", alice).body(Body::empty()).unwrap();
    assert!(record(&app, versions()).await.starts_with("HTTP 200\n"));
    let _flood = users.occupy_gate().await;
    golden(
        "errors/503-login-busy.txt",
        &record(
            &app,
            req("GET", "/", Some(("alice", "nope")))
                .body(Body::empty())
                .unwrap(),
        )
        .await,
    );
    for who in [("victor", "victor-password"), ("mallory", "nope")] {
        let answer = record(
            &app,
            req("GET", "/", Some(who)).body(Body::empty()).unwrap(),
        )
        .await;
        assert!(answer.starts_with("HTTP 503\n"), "{who:?}: {answer}");
        assert!(answer.contains("\"code\":\"busy\""), "{who:?}: {answer}");
    }
    assert!(record(&app, versions()).await.starts_with("HTTP 200\n"));
}

#[tokio::test]
async fn golden_error_answers() {
    let app = router();
    let alice = Some(("alice", "alice-password"));
    let victor = Some(("victor", "victor-password"));
    let vm = format!("/vms/{EID}");
    let json = "application/json";
    let cases: Vec<(&str, Request<Body>)> = vec![
        (
            "401-missing.txt",
            req("GET", "/", None).body(Body::empty()).unwrap(),
        ),
        (
            "401-wrong-password.txt",
            req("GET", "/", Some(("alice", "nope")))
                .body(Body::empty())
                .unwrap(),
        ),
        (
            "401-not-basic.txt",
            req("GET", "/", None)
                .header("authorization", "Bearer abc")
                .body(Body::empty())
                .unwrap(),
        ),
        (
            "403-viewer-backs-up.txt",
            req("POST", &format!("{vm}/back_up"), victor)
                .header("content-type", json)
                .body(Body::from("{}"))
                .unwrap(),
        ),
        (
            "403-viewer-deletes.txt",
            req("DELETE", &format!("{vm}/backups/20261122081500"), victor)
                .body(Body::empty())
                .unwrap(),
        ),
        (
            "404-no-route.txt",
            req("GET", "/nothing/here", alice)
                .body(Body::empty())
                .unwrap(),
        ),
        (
            "404-malformed-vm-id.txt",
            req("GET", "/vms/..%2Fetc", alice)
                .body(Body::empty())
                .unwrap(),
        ),
        (
            "404-malformed-backup-id.txt",
            req("GET", &format!("{vm}/backups/2026"), alice)
                .body(Body::empty())
                .unwrap(),
        ),
        (
            "404-undecodable-id.txt",
            req("GET", "/vms/%ff%fe", alice)
                .body(Body::empty())
                .unwrap(),
        ),
        (
            "404-malformed-status-id.txt",
            req("GET", "/statuses/41", alice)
                .body(Body::empty())
                .unwrap(),
        ),
        (
            "405-delete-vm.txt",
            req("DELETE", &vm, alice).body(Body::empty()).unwrap(),
        ),
        (
            "406-versions-as-html.txt",
            req("GET", "/versions", alice)
                .header("accept", "text/html")
                .body(Body::empty())
                .unwrap(),
        ),
        (
            "400-malformed-json.txt",
            req("POST", &format!("{vm}/back_up"), alice)
                .header("content-type", json)
                .body(Body::from("{\"name\":"))
                .unwrap(),
        ),
        (
            "400-wrong-type.txt",
            req("POST", &format!("{vm}/back_up"), alice)
                .header("content-type", json)
                .body(Body::from("{\"tags\":\"x\"}"))
                .unwrap(),
        ),
        (
            "400-unknown-field.txt",
            req("POST", &format!("{vm}/back_up"), alice)
                .header("content-type", json)
                .body(Body::from("{\"colour\":\"red\"}"))
                .unwrap(),
        ),
        (
            "400-invalid-type.txt",
            req("POST", &format!("{vm}/back_up"), alice)
                .header("content-type", json)
                .body(Body::from("{\"type\":\"weekly\"}"))
                .unwrap(),
        ),
        (
            "400-content-type.txt",
            req("POST", &format!("{vm}/back_up"), alice)
                .header("content-type", "text/plain")
                .body(Body::from("{}"))
                .unwrap(),
        ),
        (
            "413-body-too-large.txt",
            req("POST", &format!("{vm}/back_up"), alice)
                .header("content-type", json)
                .body(Body::from(format!("{{\"name\":\"{}\"}}", "x".repeat(4096))))
                .unwrap(),
        ),
        (
            "503-no-cluster.txt",
            req("GET", "/vdc", alice).body(Body::empty()).unwrap(),
        ),
        (
            "503-healthz.txt",
            req("GET", "/healthz", None).body(Body::empty()).unwrap(),
        ),
    ];
    for (file, r) in cases {
        golden(&format!("errors/{file}"), &record(&app, r).await);
    }
    // The answers only a cluster gives, from its stable codes.
    let from = |code, message: &str| {
        ApiError::from(ClusterError::Cluster {
            code,
            message: message.to_string(),
        })
    };
    let cluster_errors = [
        (
            "409-duplicate-name.json",
            from(
                ErrorCode::DuplicateName,
                &format!("environment {EID} already has a backup named \"n\": {EID}/20261122081500"),
            ),
        ),
        (
            "409-running.json",
            from(
                ErrorCode::JobRunning,
                &format!("environment {EID} already has an active job 01932f5e-7a00-7000-8000-000000000041"),
            ),
        ),
        ("404-cluster.json", from(ErrorCode::BackupNotFound, "backup x does not exist")),
        ("400-cluster.json", from(ErrorCode::InvalidArgument, "a selective restore needs at least one path")),
        (
            "500-internal.json",
            from(ErrorCode::Corrupt, "chunk abc at http://10.0.0.3:7700 failed verification"),
        ),
        (
            "503-unreachable.json",
            ApiError::from(ClusterError::Unreachable {
                url: "http://10.0.0.3:7700".into(),
                why: "connection refused".into(),
            }),
        ),
    ];
    for (file, e) in cluster_errors {
        assert!(
            !serde_json::to_string(&e.body())
                .unwrap()
                .contains("10.0.0.3"),
            "{file}: no internal addresses in answers"
        );
        let status: StatusCode = e.status;
        golden_json(
            &format!("errors/{file}"),
            &serde_json::json!({"status": status.as_u16(), "body": e.body()}),
        );
    }
}
