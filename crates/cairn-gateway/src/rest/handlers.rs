//! The handlers: input, one or two cluster calls made for the logged-in user, a
//! representation. Whether the user's role may use the route at all was decided before
//! (see `label` in the module above); the cluster decides the rest.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use cairn_core::job::{BackupEdit, EnvRecord, HostRecord, Job, JobKind, JobOptions};
use cairn_core::{BackupId, BackupRecord, EnvId};

use super::error::ApiError;
use super::input::{self, BackupOp};
use super::model::{self, Uris};
use super::{Rep, RestState};
use crate::users::Identity;

pub(super) type St = State<Arc<RestState>>;

/// The ids of a path; one that cannot even be decoded (bad percent-encoding, not UTF-8)
/// names nothing: 404 `malformed_id`, like any other id that cannot name a resource.
pub(super) struct Ids<T>(pub(super) T);

#[axum::async_trait]
impl<S, T> axum::extract::FromRequestParts<S> for Ids<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(Ids(v)),
            Err(_) => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "malformed_id",
                "the ids in this URI cannot be read",
            )),
        }
    }
}
type R = Result<Rep, ApiError>;

/// The PUT body type the spec itself misspells; tolerated.
const MISSPELLED_PUT_TYPE: &str = "application/vnd.com.sun.Backup.VM+json";

fn parse_env(eid: &str) -> Result<EnvId, ApiError> {
    // Only the canonical form names a VM: the braces Virtuozzo tools write are for the XML API.
    if eid.len() != 36 {
        return Err(malformed("VM", eid));
    }
    eid.parse().map_err(|_| malformed("VM", eid))
}

pub(super) fn parse_backup(eid: &str, stamp: &str) -> Result<BackupId, ApiError> {
    let env = parse_env(eid)?;
    format!("{env}/{stamp}")
        .parse()
        .map_err(|_| malformed("backup", stamp))
}

fn malformed(what: &str, id: &str) -> ApiError {
    let shown: String = id.chars().take(80).collect();
    ApiError::new(
        StatusCode::NOT_FOUND,
        "malformed_id",
        format!("{shown:?} cannot name a {what}"),
    )
}

impl RestState {
    /// This request's view of the cluster: every call made for `who`.
    pub(super) fn call(&self, who: &Identity) -> Result<Call, ApiError> {
        let link = self.link.get().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the gateway has not reached the storage cluster yet; try again",
            )
        })?;
        Ok(Call {
            cluster: link.acting_for(&crate::access::principal(who, "rest")),
        })
    }
}

/// The cluster as one request sees it: calls made for the logged-in user, so the cluster
/// decides as that user.
pub(super) struct Call {
    cluster: cairn_api::Client,
}

impl Call {
    pub(super) fn cluster(&self) -> Result<&cairn_api::Client, ApiError> {
        Ok(&self.cluster)
    }

    async fn cluster_name(&self) -> Result<String, ApiError> {
        let st = self.cluster()?.node_status().await?;
        Ok(if st.cluster_id.is_empty() {
            "cairn".to_string()
        } else {
            format!("cairn-{}", &st.cluster_id[..st.cluster_id.len().min(8)])
        })
    }

    async fn hosts(&self) -> Result<Vec<(HostRecord, bool)>, ApiError> {
        let hosts = self.cluster()?.list_hosts().await?;
        let mut out: Vec<(HostRecord, bool)> =
            hosts.into_iter().map(|h| (h.record, h.online)).collect();
        out.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        Ok(out)
    }

    async fn envs(&self, host: &str) -> Result<Vec<EnvRecord>, ApiError> {
        let host = (!host.is_empty()).then_some(host);
        let envs = self.cluster()?.list_envs(host).await?;
        Ok(envs.into_iter().map(|e| e.record).collect())
    }

    async fn backups(&self, env: Option<EnvId>) -> Result<Vec<BackupRecord>, ApiError> {
        Ok(self.cluster()?.list(env).await?)
    }

    /// The environment a VM URI names: the registered one, or — when no host runs it any
    /// more — what its latest backup recorded.
    async fn env(&self, eid: EnvId) -> Result<(EnvRecord, Vec<BackupRecord>), ApiError> {
        let backups = self.backups(Some(eid)).await?;
        if let Some(e) = self.envs("").await?.into_iter().find(|e| e.eid == eid) {
            return Ok((e, backups));
        }
        match backups.iter().max_by_key(|b| b.id.time) {
            Some(b) => Ok((model::env_from_backup(b), backups)),
            None => Err(ApiError::not_found(format!("no VM {eid}"))),
        }
    }

    async fn backup(&self, id: &BackupId) -> Result<BackupRecord, ApiError> {
        self.cluster()?.show(id).await.map_err(|e| {
            if e.code().family() == cairn_core::ErrorCode::NotFound {
                ApiError::not_found(format!("no backup {id}"))
            } else {
                e.into()
            }
        })
    }

    async fn create_job(
        &self,
        kind: JobKind,
        env: EnvId,
        options: JobOptions,
    ) -> Result<Job, ApiError> {
        Ok(crate::create_job(self.cluster()?, kind, env, "", &options).await?)
    }

    async fn job(&self, id: uuid::Uuid) -> Result<Job, ApiError> {
        self.cluster()?
            .get_job(id)
            .await
            .map(|j| j.job)
            .map_err(|e| {
                if e.code().family() == cairn_core::ErrorCode::NotFound {
                    ApiError::not_found(format!("no status {id}"))
                } else {
                    e.into()
                }
            })
    }
}

/// A cluster error of a request that carried a `name`: a DuplicateName refusal is about
/// that field.
fn name_error(e: ApiError) -> ApiError {
    if e.code == "duplicate_name" {
        e.field("name")
    } else {
        e
    }
}

pub(super) async fn cloud(
    State(s): St,
    Extension(u): Extension<Uris>,
    Extension(who): Extension<Identity>,
) -> R {
    let name = s.call(&who)?.cluster_name().await?;
    Ok(Rep::ok("Cloud", &model::cloud(&u, &name)))
}

pub(super) async fn versions(Extension(u): Extension<Uris>) -> R {
    Ok(Rep::ok("Versions", &model::versions(&u)))
}

pub(super) async fn vdc(
    State(s): St,
    Extension(u): Extension<Uris>,
    Extension(who): Extension<Identity>,
) -> R {
    let c = s.call(&who)?;
    let name = c.cluster_name().await?;
    let nodes = c.cluster()?.node_urls().len();
    let hosts: Vec<HostRecord> = c.hosts().await?.into_iter().map(|h| h.0).collect();
    Ok(Rep::ok("VDC", &model::vdc(&u, &name, nodes, &hosts)))
}

pub(super) async fn root_cluster(
    State(s): St,
    Extension(u): Extension<Uris>,
    Extension(who): Extension<Identity>,
) -> R {
    let hosts: Vec<HostRecord> = s
        .call(&who)?
        .hosts()
        .await?
        .into_iter()
        .map(|h| h.0)
        .collect();
    Ok(Rep::ok("Cluster", &model::root_cluster(&u, &hosts)))
}

pub(super) async fn host_cluster(
    State(s): St,
    Extension(u): Extension<Uris>,
    Extension(who): Extension<Identity>,
    Ids(host): Ids<String>,
) -> R {
    let c = s.call(&who)?;
    let (rec, online) = c
        .hosts()
        .await?
        .into_iter()
        .find(|h| h.0.id == host)
        .ok_or_else(|| ApiError::not_found(format!("no cluster (host) {:?}", short(&host))))?;
    let envs = c.envs(&host).await?;
    let backups = c.backups(None).await?;
    Ok(Rep::ok(
        "Cluster",
        &model::host_cluster(&u, &rec, online, &envs, &backups),
    ))
}

fn short(s: &str) -> String {
    s.chars().take(80).collect()
}

pub(super) async fn vm(
    State(s): St,
    Extension(u): Extension<Uris>,
    Extension(who): Extension<Identity>,
    Ids(eid): Ids<String>,
) -> R {
    let eid = parse_env(&eid)?;
    let (env, backups) = s.call(&who)?.env(eid).await?;
    Ok(Rep::ok("VM", &model::vm(&u, &env, &backups)))
}

pub(super) async fn list_backups(
    State(s): St,
    Extension(u): Extension<Uris>,
    Extension(who): Extension<Identity>,
    Ids(eid): Ids<String>,
) -> R {
    let eid = parse_env(&eid)?;
    let (env, backups) = s.call(&who)?.env(eid).await?;
    Ok(Rep::ok("json", &model::vm(&u, &env, &backups).backups))
}

pub(super) async fn back_up(
    State(s): St,
    Extension(u): Extension<Uris>,
    Extension(who): Extension<Identity>,
    Ids(eid): Ids<String>,
    headers: HeaderMap,
    body: Bytes,
) -> R {
    let env = parse_env(&eid)?;
    input::check_content_type(&headers, &body, &[&model::media("Backup")])?;
    let b = input::backup(&body, BackupOp::Create)?;
    let c = s.call(&who)?;
    // The VM must exist; one no host runs any more (known from its backups) is refused by
    // the cluster with 404, since no agent could take the job.
    c.env(env).await?;
    let options = JobOptions {
        backup_type: b.kind,
        name: b.name.unwrap_or_default(),
        description: b.description.unwrap_or_default(),
        tags: b.tags.unwrap_or_default(),
        ..JobOptions::default()
    };
    // A name another backup of the VM has is refused by the catalog's job admission
    // (DuplicateName), before any agent starts; it decides the same again at the commit.
    let job = c
        .create_job(JobKind::Backup, env, options)
        .await
        .map_err(name_error)?;
    tracing::info!(user = %who.name, job_id = %job.id, env = %env, "backup requested over REST");
    Ok(Rep::accepted(&model::status(&u, &job)))
}

pub(super) async fn get_backup(
    State(s): St,
    Extension(u): Extension<Uris>,
    Extension(who): Extension<Identity>,
    Ids((eid, stamp)): Ids<(String, String)>,
) -> R {
    let id = parse_backup(&eid, &stamp)?;
    let b = s.call(&who)?.backup(&id).await?;
    Ok(Rep::ok("Backup", &model::backup(&u, &b)))
}

pub(super) async fn update_backup(
    State(s): St,
    Extension(u): Extension<Uris>,
    Extension(who): Extension<Identity>,
    Ids((eid, stamp)): Ids<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> R {
    let id = parse_backup(&eid, &stamp)?;
    input::check_content_type(
        &headers,
        &body,
        &[&model::media("Backup"), MISSPELLED_PUT_TYPE],
    )?;
    let b = input::backup(&body, BackupOp::Update)?;
    let c = s.call(&who)?;
    c.backup(&id).await?;
    let options = JobOptions {
        backup: Some(id),
        edit: Some(BackupEdit {
            name: b.name,
            description: b.description,
            tags: b.tags,
            protected: b.protected,
        }),
        ..JobOptions::default()
    };
    // The catalog refuses a rename onto another backup's name (DuplicateName) in the same
    // decision that admits and runs the update.
    let job = c
        .create_job(JobKind::Update, id.env, options)
        .await
        .map_err(name_error)?;
    Ok(Rep::accepted(&model::status(&u, &job)))
}

pub(super) async fn delete_backup(
    State(s): St,
    Extension(u): Extension<Uris>,
    Extension(who): Extension<Identity>,
    Ids((eid, stamp)): Ids<(String, String)>,
) -> R {
    let id = parse_backup(&eid, &stamp)?;
    let c = s.call(&who)?;
    c.backup(&id).await?;
    let options = JobOptions {
        backup: Some(id),
        ..JobOptions::default()
    };
    let job = c.create_job(JobKind::Delete, id.env, options).await?;
    tracing::info!(user = %who.name, backup = %id, "backup deleted over REST");
    Ok(Rep::accepted(&model::status(&u, &job)))
}

pub(super) async fn restore(
    State(s): St,
    Extension(u): Extension<Uris>,
    Extension(who): Extension<Identity>,
    Ids((eid, stamp)): Ids<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> R {
    let id = parse_backup(&eid, &stamp)?;
    input::check_content_type(&headers, &body, &[])?;
    let r = input::restore(&body)?;
    let c = s.call(&who)?;
    c.backup(&id).await?;
    let options = JobOptions {
        backup: Some(id),
        force: r.force,
        ..JobOptions::default()
    };
    let job = c.create_job(JobKind::Restore, id.env, options).await?;
    tracing::info!(
        user = %who.name,
        backup = %id,
        job_id = %job.id,
        note = r.note.as_deref().unwrap_or(""),
        ignored = ?r.ignored,
        "restore requested over REST"
    );
    Ok(Rep::accepted(&model::status(&u, &job)))
}

pub(super) async fn status(
    State(s): St,
    Extension(u): Extension<Uris>,
    Extension(who): Extension<Identity>,
    Ids(id): Ids<String>,
) -> R {
    let job_id = uuid::Uuid::parse_str(&id)
        .ok()
        .filter(|_| id.len() == 36)
        .ok_or_else(|| malformed("status", &id))?;
    let job = s.call(&who)?.job(job_id).await?;
    Ok(Rep::ok("Status", &model::status(&u, &job)))
}

/// `ok` while the gateway reaches a cluster that has a leader; 503 otherwise.
pub(super) async fn healthz(State(s): St) -> Response {
    let healthy = match s.link.get() {
        Some(c) => c.node_status().await.is_ok_and(|st| st.leader.is_some()),
        None => false,
    };
    if healthy {
        ([(header::CONTENT_TYPE, "text/plain")], "ok\n").into_response()
    } else {
        ApiError::for_status(StatusCode::SERVICE_UNAVAILABLE).into_response()
    }
}

pub(super) async fn metrics(State(s): St) -> Response {
    if let Some(c) = s.link.get() {
        crate::metrics::refresh_cluster(c).await;
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(),
    )
        .into_response()
}

pub(super) async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::openapi::DOCUMENT,
    )
        .into_response()
}
