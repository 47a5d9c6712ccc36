//! The `Agents` service: hosts and their environments, jobs, and agent tokens.
//!
//! # How a job travels
//! 1. `CreateJob` (any node; forwarded to the leader) resolves the environment's host, checks
//!    the options and commits the job as queued through raft. Delete jobs need no agent: the
//!    leader runs them at once.
//! 2. Every node serves `AgentJobs` streams from its own catalog: an agent connected to any
//!    node sees its host's queued jobs within a poll interval of their commit.
//! 3. The agent claims the job (`ClaimJob`, a raft write: exactly one claim wins) with a
//!    lease, reports progress at least every second (`ReportProgress`, which renews the lease
//!    and answers whether the job was cancelled), and finishes it (`FinishJob`).
//! 4. The leader's sweeper ([`sweep_jobs`]) fails running jobs whose lease passed (their agent
//!    died) and queued jobs nobody took within the queue timeout (their host is offline),
//!    and prunes finished jobs after a week.
//!
//! Watchers (`WatchJob`) read the catalog of the node they are connected to, so watching
//! costs the leader nothing. Agents may only act for their own host (see [`crate::auth`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_core::job::{
    EnvRecord, HostRecord, Job, JobKind, JobOptions, JobResult, JobState, TokenRecord,
};
use cairn_core::{BackupId, EnvId, ErrorCode};
use cairn_meta::{Command, MetaNode, Response as MetaResponse};
use cairn_proto::pb::agents_server::Agents;
use cairn_proto::pb::{self};
use cairn_proto::status;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::auth::Principal;
use crate::catalog::{forward_error, forward_to_leader, forwarded, route_call, Route};
use crate::error::meta_status;
use crate::gc::now_ms;
use crate::peers::Peers;

/// How often job streams and watchers look at the catalog.
const POLL: Duration = Duration::from_millis(200);
/// A queued job offered to an agent is offered again after this long if still queued (the
/// agent may have lost the first offer).
const REOFFER: Duration = Duration::from_secs(5);
/// Finished jobs are pruned after this long.
const KEEP_FINISHED_MS: i64 = 7 * 24 * 3600 * 1000;
/// Bounds of the lease an agent may ask for.
const LEASE_MS: std::ops::RangeInclusive<i64> = 1_000..=600_000;

/// Timing settings of the job machinery (from the node's config).
#[derive(Clone, Copy, Debug)]
pub struct JobSettings {
    /// A queued job fails when no agent took it within this long.
    pub queue_timeout_ms: i64,
    /// A host that has not registered for this long counts as offline.
    pub offline_after_ms: i64,
}

pub struct AgentsService {
    pub meta: Arc<MetaNode>,
    pub node_id: u64,
    pub peers: Peers,
    pub settings: JobSettings,
}

fn parse_uuid(s: &str, what: &str) -> Result<uuid::Uuid, Status> {
    s.parse().map_err(|e| {
        status(
            ErrorCode::InvalidArgument,
            format!("malformed {what} {s:?}: {e}"),
        )
    })
}

fn parse_env(s: &str) -> Result<EnvId, Status> {
    s.parse().map_err(|e: cairn_core::IdError| {
        status(
            ErrorCode::InvalidArgument,
            format!("malformed environment id {s:?}: {e}"),
        )
    })
}

fn unexpected(r: MetaResponse) -> Status {
    status(
        ErrorCode::Internal,
        format!("unexpected catalog answer {r:?}"),
    )
}

/// Refuses an agent an environment its host does not run.
pub(crate) fn check_own_env(meta: &MetaNode, who: &Principal, env: EnvId) -> Result<(), Status> {
    let Some(host) = who.agent_host() else {
        return Ok(());
    };
    match meta.env(env).map_err(meta_status)? {
        Some(e) if e.host == host => Ok(()),
        _ => Err(status(
            ErrorCode::PermissionDenied,
            format!("environment {env} is not run by host {host:?}, whose agent token this is"),
        )),
    }
}

/// Like [`check_own_env`], but also lets an agent read the backups one of its host's active
/// jobs restores (a restore onto another host).
pub(crate) fn check_env_access(meta: &MetaNode, who: &Principal, env: EnvId) -> Result<(), Status> {
    let Some(host) = who.agent_host() else {
        return Ok(());
    };
    if check_own_env(meta, who, env).is_ok() {
        return Ok(());
    }
    let restoring = meta
        .active_jobs()
        .map_err(meta_status)?
        .iter()
        .any(|j| j.host == host && j.options.backup.map(|b| b.env) == Some(env));
    if restoring {
        return Ok(());
    }
    check_own_env(meta, who, env)
}

/// Why a queued job waits, for people watching it.
fn waiting(meta: &MetaNode, job: &Job, offline_after_ms: i64, now: i64) -> String {
    if job.state != JobState::Queued || job.host.is_empty() {
        return String::new();
    }
    match meta.host(&job.host) {
        Ok(Some(h)) if now - h.seen_ms > offline_after_ms => format!(
            "host {:?} is offline (last seen {} s ago); the job waits for its agent",
            job.host,
            (now - h.seen_ms) / 1000
        ),
        Ok(Some(_)) => format!("waiting for the agent of host {:?} to take it", job.host),
        Ok(None) => format!("host {:?} has never registered", job.host),
        Err(_) => String::new(),
    }
}

impl AgentsService {
    async fn route<T>(&self, req: &Request<T>) -> Result<Route, Status> {
        route_call(&self.meta, self.node_id, req).await
    }

    /// Proposes `cmd`; a refusal becomes its status.
    async fn write(&self, cmd: Command) -> Result<MetaResponse, Status> {
        match self.meta.write(cmd).await.map_err(meta_status)? {
            MetaResponse::Refused { code, message } => Err(status(code, message)),
            other => Ok(other),
        }
    }

    async fn write_job(&self, cmd: Command) -> Result<Job, Status> {
        match self.write(cmd).await? {
            MetaResponse::Job { job } => Ok(*job),
            other => Err(unexpected(other)),
        }
    }

    fn wire(&self, job: &Job) -> pb::Job {
        let mut w = pb::Job::from(job);
        w.waiting = waiting(&self.meta, job, self.settings.offline_after_ms, now_ms());
        w
    }

    fn online(&self, h: &HostRecord, now: i64) -> bool {
        now - h.seen_ms <= self.settings.offline_after_ms
    }

    /// A job from this node's catalog, or from the leader's when this node has not seen it
    /// yet.
    async fn find_job(&self, req: Request<pb::JobRef>) -> Result<Job, Status> {
        let id = parse_uuid(&req.get_ref().id, "job id")?;
        if let Some(j) = self.meta.job(&id).map_err(meta_status)? {
            return Ok(j);
        }
        if let Route::Leader(addr) = self.route(&req).await? {
            let j = self
                .peers
                .agents(&addr)?
                .get_job(forwarded(req.into_inner()))
                .await
                .map_err(|e| forward_error(&addr, e))?
                .into_inner();
            return Job::try_from(j).map_err(Status::from);
        }
        self.meta.read_barrier().await.map_err(meta_status)?;
        self.meta
            .job(&id)
            .map_err(meta_status)?
            .ok_or_else(|| status(ErrorCode::NotFound, format!("job {id} does not exist")))
    }

    /// Resolves and checks a job request on the leader.
    fn new_job(&self, who: &Principal, req: pb::CreateJobRequest) -> Result<Job, Status> {
        let kind = JobKind::parse(&req.kind).ok_or_else(|| {
            status(
                ErrorCode::InvalidArgument,
                format!(
                    "unknown job kind {:?}: use backup, restore, selective_restore, delete or update",
                    req.kind
                ),
            )
        })?;
        let mut options = JobOptions::try_from(req.options.unwrap_or_default())?;
        let env_given = if req.env.is_empty() {
            None
        } else {
            Some(parse_env(&req.env)?)
        };
        // The backup a restore or delete acts on; a restore without one takes the latest.
        let backup =
            match options.backup {
                Some(id) => Some(self.meta.get_backup(&id).map_err(meta_status)?.ok_or_else(
                    || status(ErrorCode::NotFound, format!("backup {id} does not exist")),
                )?),
                None => None,
            };
        let env = match (env_given, &backup) {
            (Some(e), _) => e,
            (None, Some(b)) => b.id.env,
            (None, None) => {
                return Err(status(
                    ErrorCode::InvalidArgument,
                    "a job needs an environment id (or a backup id)",
                ))
            }
        };
        let registered: Option<EnvRecord> = self.meta.env(env).map_err(meta_status)?;
        let host = match kind {
            JobKind::Delete | JobKind::Update => {
                if backup.is_none() {
                    return Err(status(
                        ErrorCode::InvalidArgument,
                        format!("a {} job needs the backup it acts on", kind.as_str()),
                    ));
                }
                if kind == JobKind::Update && options.edit.is_none() {
                    return Err(status(
                        ErrorCode::InvalidArgument,
                        "an update job needs the fields to change",
                    ));
                }
                String::new()
            }
            JobKind::Backup | JobKind::SelectiveRestore => match &registered {
                Some(e) if req.host.is_empty() || req.host == e.host => e.host.clone(),
                Some(e) => {
                    return Err(status(
                        ErrorCode::InvalidArgument,
                        format!(
                            "environment {env} runs on host {:?}; only a full restore may target another host",
                            e.host
                        ),
                    ))
                }
                None => {
                    return Err(status(
                        ErrorCode::NotFound,
                        format!("unknown environment {env}: no host has registered it (see `cairn envs list`)"),
                    ))
                }
            },
            JobKind::Restore => {
                if !req.host.is_empty() {
                    if self.meta.host(&req.host).map_err(meta_status)?.is_none() {
                        return Err(status(
                            ErrorCode::NotFound,
                            format!("host {:?} has never registered", req.host),
                        ));
                    }
                    if registered.as_ref().map(|e| e.host.as_str()) != Some(req.host.as_str())
                        && options.target_path.is_empty()
                    {
                        return Err(status(
                            ErrorCode::InvalidArgument,
                            format!(
                                "environment {env} does not run on host {:?}: name the directory to restore into (target path)",
                                req.host
                            ),
                        ));
                    }
                    req.host.clone()
                } else {
                    match &registered {
                        Some(e) => e.host.clone(),
                        None => {
                            return Err(status(
                                ErrorCode::NotFound,
                                format!("unknown environment {env}: no host runs it; name a host (and target path) to restore it elsewhere"),
                            ))
                        }
                    }
                }
            }
        };
        if let Some(h) = who.agent_host() {
            if !kind.needs_agent() {
                return Err(status(
                    ErrorCode::PermissionDenied,
                    format!("the agent token of host {h:?} may not delete or change backups"),
                ));
            }
            if host != h {
                return Err(status(
                    ErrorCode::PermissionDenied,
                    format!("host {h:?} may only run jobs for its own environments"),
                ));
            }
        }
        match kind {
            JobKind::Restore | JobKind::SelectiveRestore => {
                let b = match backup {
                    Some(b) => b,
                    None => self
                        .meta
                        .latest_backup(env, false)
                        .map_err(meta_status)?
                        .ok_or_else(|| {
                            status(
                                ErrorCode::NotFound,
                                format!("environment {env} has no backup to restore"),
                            )
                        })?,
                };
                if kind == JobKind::SelectiveRestore && options.paths.is_empty() {
                    return Err(status(
                        ErrorCode::InvalidArgument,
                        "a selective restore needs at least one path",
                    ));
                }
                if let Some(p) = options
                    .paths
                    .iter()
                    .find(|p| cairn_core::path::validate(p.trim_matches('/').as_bytes()).is_err())
                {
                    return Err(status(
                        ErrorCode::InvalidArgument,
                        format!("path {p:?} is not a relative path inside the environment"),
                    ));
                }
                options.backup = Some(b.id);
            }
            JobKind::Backup | JobKind::Delete | JobKind::Update => {}
        }
        let now = now_ms();
        Ok(Job::new(
            uuid::Uuid::now_v7(),
            kind,
            env,
            host,
            who.name(),
            options,
            now,
            self.settings.queue_timeout_ms,
        ))
    }

    /// Runs a delete job on the leader: deletes the backup (and with `prev` every older one
    /// of its environment), then ends the job.
    async fn run_delete(&self, job: Job) -> Result<Job, Status> {
        let Some(target) = job.options.backup else {
            return Err(status(
                ErrorCode::InvalidArgument,
                "a delete job needs a backup",
            ));
        };
        let mut ids: Vec<BackupId> = vec![target];
        if job.options.prev {
            ids.extend(
                self.meta
                    .list_backups(Some(target.env))
                    .map_err(meta_status)?
                    .iter()
                    .map(|b| b.id)
                    .filter(|id| id.time < target.time),
            );
        }
        let mut deleted = 0;
        let mut failure = None;
        for id in &ids {
            match self.meta.write(Command::DeleteBackup { id: *id }).await {
                Ok(MetaResponse::Deleted) => deleted += 1,
                Ok(MetaResponse::Refused { message, .. }) => failure = Some(message),
                Ok(other) => failure = Some(format!("{other:?}")),
                Err(e) => failure = Some(e.to_string()),
            }
        }
        self.finish_here(
            &job,
            target,
            failure,
            format!("{deleted} backup(s) deleted"),
        )
        .await
    }

    /// Ends a job the cluster ran itself (delete, update): failed with `failure` when set.
    async fn finish_here(
        &self,
        job: &Job,
        target: BackupId,
        failure: Option<String>,
        message: String,
    ) -> Result<Job, Status> {
        let (state, reason) = match failure {
            None => (JobState::Succeeded, String::new()),
            Some(f) => (JobState::Failed, f),
        };
        self.write_job(Command::FinishJob {
            id: job.id,
            host: None,
            state,
            reason,
            result: JobResult {
                backup: Some(target),
                message,
                details: String::new(),
            },
            now_ms: now_ms(),
        })
        .await
    }

    /// Runs an update job on the leader: changes the backup's fields, then ends the job
    /// (failed, with the catalog's reason, when the new name is taken).
    async fn run_update(&self, job: Job) -> Result<Job, Status> {
        let (Some(target), Some(edit)) = (job.options.backup, job.options.edit.clone()) else {
            return Err(status(
                ErrorCode::InvalidArgument,
                "an update job needs a backup and the fields to change",
            ));
        };
        let failure = match self
            .meta
            .write(Command::UpdateBackup {
                id: target,
                name: edit.name,
                description: edit.description,
                tags: edit.tags,
            })
            .await
        {
            Ok(MetaResponse::Refused { message, .. }) => Some(message),
            Ok(_) => None,
            Err(e) => Some(e.to_string()),
        };
        self.finish_here(&job, target, failure, "backup updated".to_string())
            .await
    }
}

#[tonic::async_trait]
impl Agents for AgentsService {
    #[tracing::instrument(skip_all)]
    async fn register_host(
        &self,
        req: Request<pb::RegisterHostRequest>,
    ) -> Result<Response<pb::RegisterHostResponse>, Status> {
        let host_id = req
            .get_ref()
            .host
            .as_ref()
            .map(|h| h.id.clone())
            .unwrap_or_default();
        Principal::of(&req).require_host(&host_id)?;
        forward_to_leader!(self, req, agents, register_host);
        let req = req.into_inner();
        let host = HostRecord::try_from(req.host.unwrap_or_default())?;
        let envs = req
            .envs
            .into_iter()
            .map(EnvRecord::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        let answer = self
            .write(Command::RegisterHost {
                host,
                envs,
                now_ms: now_ms(),
                takeover_after_ms: self.settings.offline_after_ms,
            })
            .await?;
        match answer {
            MetaResponse::Registered { conflicts } => Ok(Response::new(pb::RegisterHostResponse {
                conflicts: conflicts.iter().map(|e| e.to_string()).collect(),
            })),
            other => Err(unexpected(other)),
        }
    }

    async fn list_hosts(
        &self,
        req: Request<pb::ListHostsRequest>,
    ) -> Result<Response<pb::ListHostsResponse>, Status> {
        let who = Principal::of(&req);
        let now = now_ms();
        let hosts = self
            .meta
            .hosts()
            .map_err(meta_status)?
            .iter()
            .filter(|h| who.require_host(&h.id).is_ok())
            .map(|h| {
                let mut w = pb::Host::from(h);
                w.online = self.online(h, now);
                w
            })
            .collect();
        Ok(Response::new(pb::ListHostsResponse { hosts }))
    }

    async fn list_envs(
        &self,
        req: Request<pb::ListEnvsRequest>,
    ) -> Result<Response<pb::ListEnvsResponse>, Status> {
        let who = Principal::of(&req);
        let only = req.into_inner().host;
        let now = now_ms();
        let hosts: HashMap<String, HostRecord> = self
            .meta
            .hosts()
            .map_err(meta_status)?
            .into_iter()
            .map(|h| (h.id.clone(), h))
            .collect();
        let mut envs = Vec::new();
        for e in self.meta.envs().map_err(meta_status)? {
            if (!only.is_empty() && e.host != only) || who.require_host(&e.host).is_err() {
                continue;
            }
            let mut w = pb::Env::from(&e);
            w.latest = self
                .meta
                .latest_backup(e.eid, false)
                .map_err(meta_status)?
                .as_ref()
                .map(pb::Backup::from);
            w.host_online = hosts.get(&e.host).is_some_and(|h| self.online(h, now));
            envs.push(w);
        }
        envs.sort_by(|a, b| (&a.host, &a.name).cmp(&(&b.host, &b.name)));
        Ok(Response::new(pb::ListEnvsResponse { envs }))
    }

    #[tracing::instrument(skip_all)]
    async fn create_job(
        &self,
        req: Request<pb::CreateJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let who = Principal::of(&req);
        if let Some(h) = who.agent_host() {
            if matches!(req.get_ref().kind.as_str(), "delete" | "update") {
                return Err(status(
                    ErrorCode::PermissionDenied,
                    format!("the agent token of host {h:?} may not delete or change backups"),
                ));
            }
            if !req.get_ref().env.is_empty() {
                check_own_env(&self.meta, &who, parse_env(&req.get_ref().env)?)?;
            }
        }
        // Who asked: an admin caller (the CLI, or a gateway acting for its user) may name
        // the person it acts for; anyone else is recorded as who they are.
        let named = req
            .metadata()
            .get("x-cairn-requester")
            .and_then(|v| v.to_str().ok())
            .filter(|_| who.agent_host().is_none())
            .map(str::to_string);
        if let Route::Leader(addr) = self.route(&req).await? {
            let mut fwd = forwarded(req.into_inner());
            // The leader records the original requester.
            if let Ok(v) = named.clone().unwrap_or_else(|| who.name()).parse() {
                fwd.metadata_mut().insert("x-cairn-requester", v);
            }
            return self
                .peers
                .agents(&addr)?
                .create_job(fwd)
                .await
                .map_err(|e| forward_error(&addr, e));
        }
        let requester = named;
        let mut job = self.new_job(&who, req.into_inner())?;
        if let Some(r) = requester {
            job.requester = r;
        }
        let kind = job.kind;
        let job = self
            .write_job(Command::CreateJob { job: Box::new(job) })
            .await?;
        tracing::info!(job_id = %job.id, kind = kind.as_str(), env = %job.env, host = %job.host, "job queued");
        let job = match kind {
            JobKind::Delete => self.run_delete(job).await?,
            JobKind::Update => self.run_update(job).await?,
            _ => job,
        };
        Ok(Response::new(self.wire(&job)))
    }

    async fn get_job(&self, req: Request<pb::JobRef>) -> Result<Response<pb::Job>, Status> {
        let who = Principal::of(&req);
        let job = self.find_job(req).await?;
        who.require_host(&job.host)?;
        Ok(Response::new(self.wire(&job)))
    }

    async fn list_jobs(
        &self,
        req: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let who = Principal::of(&req);
        let req = req.into_inner();
        let env = if req.env.is_empty() {
            None
        } else {
            Some(parse_env(&req.env)?)
        };
        let state = if req.state.is_empty() {
            None
        } else {
            Some(JobState::parse(&req.state).ok_or_else(|| {
                status(
                    ErrorCode::InvalidArgument,
                    format!("unknown job state {:?}", req.state),
                )
            })?)
        };
        let limit = if req.limit == 0 {
            100
        } else {
            req.limit as usize
        };
        let jobs = self
            .meta
            .jobs()
            .map_err(meta_status)?
            .into_iter()
            .rev()
            .filter(|j| env.is_none_or(|e| j.env == e))
            .filter(|j| state.is_none_or(|s| j.state == s))
            .filter(|j| who.require_host(&j.host).is_ok())
            .take(limit)
            .map(|j| self.wire(&j))
            .collect();
        Ok(Response::new(pb::ListJobsResponse { jobs }))
    }

    type WatchJobStream = ReceiverStream<Result<pb::Job, Status>>;

    async fn watch_job(
        &self,
        req: Request<pb::JobRef>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let who = Principal::of(&req);
        let first = self.find_job(req).await?;
        who.require_host(&first.host)?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let meta = self.meta.clone();
        let offline = self.settings.offline_after_ms;
        tokio::spawn(async move {
            let id = first.id;
            let mut last: Option<Job> = None;
            let mut current = Some(first);
            loop {
                if let Some(job) = current.take() {
                    if last.as_ref() != Some(&job) {
                        let mut w = pb::Job::from(&job);
                        w.waiting = waiting(&meta, &job, offline, now_ms());
                        if tx.send(Ok(w)).await.is_err() {
                            return;
                        }
                        let done = job.state.is_final();
                        last = Some(job);
                        if done {
                            return;
                        }
                    }
                }
                tokio::time::sleep(POLL).await;
                if tx.is_closed() {
                    return;
                }
                match meta.job(&id) {
                    Ok(Some(j)) => current = Some(j),
                    Ok(None) => {
                        let _ = tx
                            .send(Err(status(
                                ErrorCode::NotFound,
                                format!("job {id} was removed"),
                            )))
                            .await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(meta_status(e))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    #[tracing::instrument(skip_all)]
    async fn cancel_job(&self, req: Request<pb::JobRef>) -> Result<Response<pb::Job>, Status> {
        let who = Principal::of(&req);
        let id = parse_uuid(&req.get_ref().id, "job id")?;
        if who.agent_host().is_some() {
            let job = self.find_job(Request::new(req.get_ref().clone())).await?;
            who.require_host(&job.host)?;
        }
        forward_to_leader!(self, req, agents, cancel_job);
        let job = self
            .write_job(Command::CancelJob {
                id,
                now_ms: now_ms(),
            })
            .await?;
        tracing::info!(job_id = %id, state = job.state.as_str(), "job cancel requested");
        Ok(Response::new(self.wire(&job)))
    }

    type AgentJobsStream = ReceiverStream<Result<pb::Job, Status>>;

    async fn agent_jobs(
        &self,
        req: Request<pb::AgentJobsRequest>,
    ) -> Result<Response<Self::AgentJobsStream>, Status> {
        let host = req.get_ref().host.clone();
        Principal::of(&req).require_host(&host)?;
        if host.is_empty() {
            return Err(status(ErrorCode::InvalidArgument, "a host id is required"));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let meta = self.meta.clone();
        tokio::spawn(async move {
            let mut offered: HashMap<uuid::Uuid, Instant> = HashMap::new();
            loop {
                match meta.active_jobs() {
                    Ok(jobs) => {
                        let queued: Vec<Job> = jobs
                            .into_iter()
                            .filter(|j| j.state == JobState::Queued && j.host == host)
                            .collect();
                        offered.retain(|id, _| queued.iter().any(|j| j.id == *id));
                        for job in queued {
                            let due = offered
                                .get(&job.id)
                                .is_none_or(|at| at.elapsed() >= REOFFER);
                            if due {
                                offered.insert(job.id, Instant::now());
                                if tx.send(Ok(pb::Job::from(&job))).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(meta_status(e))).await;
                        return;
                    }
                }
                tokio::time::sleep(POLL).await;
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn claim_job(
        &self,
        req: Request<pb::ClaimJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        Principal::of(&req).require_host(&req.get_ref().host)?;
        forward_to_leader!(self, req, agents, claim_job);
        let req = req.into_inner();
        let id = parse_uuid(&req.id, "job id")?;
        let now = now_ms();
        let lease = i64::from(req.lease_ms).clamp(*LEASE_MS.start(), *LEASE_MS.end());
        let job = self
            .write_job(Command::ClaimJob {
                id,
                host: req.host,
                now_ms: now,
                lease_until_ms: now + lease,
            })
            .await?;
        tracing::info!(job_id = %id, host = %job.host, "job claimed");
        Ok(Response::new(self.wire(&job)))
    }

    async fn report_progress(
        &self,
        req: Request<pb::ReportProgressRequest>,
    ) -> Result<Response<pb::ReportProgressResponse>, Status> {
        Principal::of(&req).require_host(&req.get_ref().host)?;
        forward_to_leader!(self, req, agents, report_progress);
        let req = req.into_inner();
        let id = parse_uuid(&req.id, "job id")?;
        let lease = i64::from(req.lease_ms).clamp(*LEASE_MS.start(), *LEASE_MS.end());
        let job = self
            .write_job(Command::ReportProgress {
                id,
                host: req.host,
                progress: req.progress.unwrap_or_default().into(),
                lease_until_ms: now_ms() + lease,
            })
            .await?;
        Ok(Response::new(pb::ReportProgressResponse {
            cancel: job.cancel_requested,
            state: job.state.as_str().into(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn finish_job(
        &self,
        req: Request<pb::FinishJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        Principal::of(&req).require_host(&req.get_ref().host)?;
        forward_to_leader!(self, req, agents, finish_job);
        let req = req.into_inner();
        let id = parse_uuid(&req.id, "job id")?;
        let state = JobState::parse(&req.state)
            .filter(|s| s.is_final())
            .ok_or_else(|| {
                status(
                    ErrorCode::InvalidArgument,
                    format!(
                        "a job ends succeeded, failed or cancelled, not {:?}",
                        req.state
                    ),
                )
            })?;
        let job = self
            .write_job(Command::FinishJob {
                id,
                host: Some(req.host),
                state,
                reason: req.reason,
                result: JobResult::try_from(req.result.unwrap_or_default())?,
                now_ms: now_ms(),
            })
            .await?;
        tracing::info!(job_id = %id, state = state.as_str(), reason = %job.reason, "job finished");
        Ok(Response::new(self.wire(&job)))
    }

    #[tracing::instrument(skip_all)]
    async fn create_agent_token(
        &self,
        req: Request<pb::CreateAgentTokenRequest>,
    ) -> Result<Response<pb::AgentToken>, Status> {
        Principal::of(&req).require_admin("issue agent tokens")?;
        forward_to_leader!(self, req, agents, create_agent_token);
        let host = req.into_inner().host;
        if host.is_empty() || host.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(status(
                ErrorCode::InvalidArgument,
                "a token needs the id of the host it is for (no spaces)",
            ));
        }
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let secret = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let token = format!("{}{id}.{secret}", cairn_core::job::AGENT_TOKEN_PREFIX);
        let record = TokenRecord {
            id: id.clone(),
            host: host.clone(),
            hash: cairn_core::job::token_hash(&token),
            created_ms: now_ms(),
        };
        self.write(Command::PutToken {
            record: record.clone(),
        })
        .await?;
        tracing::info!(token_id = %id, host = %host, "agent token issued");
        Ok(Response::new(pb::AgentToken {
            id,
            host,
            token,
            created_ms: record.created_ms,
        }))
    }

    async fn list_agent_tokens(
        &self,
        req: Request<pb::ListAgentTokensRequest>,
    ) -> Result<Response<pb::ListAgentTokensResponse>, Status> {
        Principal::of(&req).require_admin("list agent tokens")?;
        let tokens = self
            .meta
            .tokens()
            .map_err(meta_status)?
            .into_iter()
            .map(|t| pb::AgentToken {
                id: t.id,
                host: t.host,
                token: String::new(),
                created_ms: t.created_ms,
            })
            .collect();
        Ok(Response::new(pb::ListAgentTokensResponse { tokens }))
    }

    #[tracing::instrument(skip_all)]
    async fn revoke_agent_token(
        &self,
        req: Request<pb::RevokeAgentTokenRequest>,
    ) -> Result<Response<pb::RevokeAgentTokenResponse>, Status> {
        Principal::of(&req).require_admin("revoke agent tokens")?;
        forward_to_leader!(self, req, agents, revoke_agent_token);
        let req = req.into_inner();
        if req.id.is_empty() == req.host.is_empty() {
            return Err(status(
                ErrorCode::InvalidArgument,
                "name either a token id or a host",
            ));
        }
        let ids: Vec<String> = self
            .meta
            .tokens()
            .map_err(meta_status)?
            .into_iter()
            .filter(|t| t.id == req.id || t.host == req.host)
            .map(|t| t.id)
            .collect();
        if ids.is_empty() {
            return Err(status(
                ErrorCode::NotFound,
                "no agent token matches".to_string(),
            ));
        }
        let revoked = match self.write(Command::RevokeTokens { ids }).await? {
            MetaResponse::Removed { count } => count,
            other => return Err(unexpected(other)),
        };
        tracing::info!(revoked, "agent tokens revoked");
        Ok(Response::new(pb::RevokeAgentTokenResponse { revoked }))
    }
}

/// The leader's job sweeper: fails jobs whose lease or queue timeout passed, and prunes
/// finished jobs after a week. Runs on every node; acts only while the node leads.
pub async fn sweep_jobs(meta: Arc<MetaNode>, node_id: u64) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_prune = Instant::now();
    loop {
        tick.tick().await;
        if meta.metrics().current_leader != Some(node_id) {
            continue;
        }
        let now = now_ms();
        let Ok(active) = meta.active_jobs() else {
            continue;
        };
        for job in active {
            if job.clone().expire(now) {
                match meta
                    .write(Command::ExpireJob {
                        id: job.id,
                        now_ms: now,
                    })
                    .await
                {
                    Ok(MetaResponse::Job { job }) => {
                        tracing::warn!(job_id = %job.id, host = %job.host, reason = %job.reason, "job failed")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "cannot expire a job"),
                }
            }
        }
        if last_prune.elapsed() >= Duration::from_secs(600) {
            last_prune = Instant::now();
            if let Ok(jobs) = meta.jobs() {
                let ids: Vec<uuid::Uuid> = jobs
                    .iter()
                    .filter(|j| j.finished_ms.is_some_and(|f| now - f > KEEP_FINISHED_MS))
                    .map(|j| j.id)
                    .collect();
                if !ids.is_empty() {
                    let _ = meta.write(Command::DeleteJobs { ids }).await;
                }
            }
        }
    }
}
