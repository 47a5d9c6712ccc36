//! The `Agents` service: hosts and their environments, jobs, and agent tokens.
//!
//! # How a job travels
//! 1. `CreateJob` (any node; forwarded to the leader with who asked) proposes the request
//!    through raft; the catalog resolves the environment's host and backup, decides whether
//!    the caller may run it, and stores it queued (`cairn_meta::agents`). Delete and update
//!    jobs need no agent: the catalog carries them out in the same decision.
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
//! costs the leader nothing. What a caller may see and do is the catalog's decision
//! (`cairn_meta::authz`): an agent acts for its own host only.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_core::auth::{Access, Role};
use cairn_core::job::{EnvRecord, HostRecord, Job, JobResult, JobState, TokenRecord};
use cairn_core::{EnvId, ErrorCode};
use cairn_meta::authz::Subject;
use cairn_meta::{Command, JobRequest, MetaNode, Response as MetaResponse};
use cairn_proto::pb::agents_server::Agents;
use cairn_proto::pb::{self};
use cairn_proto::status;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::auth::{authorize, caller, Principal};
use crate::catalog::{forward_error, forward_to_leader, forwarded, route_call, Route};
use crate::clock::now_ms;
use crate::error::meta_status;
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
    /// The CA (PEM) of the cluster's TLS, handed to an agent that enrolls.
    pub ca_pem: Option<String>,
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

/// A new token: `<prefix><id>.<secret>`, with 12 characters of id and 64 of secret.
fn new_token(prefix: &str) -> (String, String) {
    let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let token = format!("{prefix}{id}.{secret}");
    (id, token)
}

/// A new agent token for `host` and the record the catalog keeps of it (its hash only).
fn new_agent_token(host: &str) -> (String, TokenRecord) {
    let (id, token) = new_token(cairn_core::job::AGENT_TOKEN_PREFIX);
    let record = TokenRecord {
        id,
        host: host.to_string(),
        hash: cairn_core::job::token_hash(&token),
        created_ms: now_ms(),
        name: String::new(),
        role: None,
    };
    (token, record)
}

/// How long a join token may live: 1 minute to 30 days.
const JOIN_TTL_MS: std::ops::RangeInclusive<u64> = 60_000..=30 * 24 * 3_600_000;

/// Refuses a host id a token cannot be bound to.
#[allow(clippy::result_large_err)]
fn valid_host(host: &str) -> Result<(), Status> {
    if host.is_empty() || host.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(status(
            ErrorCode::InvalidArgument,
            "a token needs the id of the host it is for (no spaces)",
        ));
    }
    Ok(())
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

    /// Proposes `cmd` for `by`; a refusal becomes its status.
    async fn write(&self, by: &Principal, cmd: Command) -> Result<MetaResponse, Status> {
        match self.meta.write(by, cmd).await.map_err(meta_status)? {
            MetaResponse::Refused {
                code,
                message,
                rule,
            } => Err(cairn_proto::refusal(code, rule, message)),
            other => Ok(other),
        }
    }

    async fn write_job(&self, by: &Principal, cmd: Command) -> Result<Job, Status> {
        match self.write(by, cmd).await? {
            MetaResponse::Job { job } => Ok(*job),
            other => Err(unexpected(other)),
        }
    }

    /// Refuses `who` unless this node's catalog admits `access` on `subject`.
    fn authorize(&self, who: &Principal, access: Access, subject: Subject) -> Result<(), Status> {
        authorize(&self.meta, who, access, &subject)
    }

    /// Whether `who` may see what `subject` names (listings leave out the rest).
    fn sees(&self, who: &Principal, subject: Subject) -> bool {
        self.authorize(who, Access::Read, subject).is_ok()
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
    async fn find_job(&self, who: &Principal, req: Request<pb::JobRef>) -> Result<Job, Status> {
        let id = parse_uuid(&req.get_ref().id, "job id")?;
        if let Some(j) = self.meta.job(&id).map_err(meta_status)? {
            return Ok(j);
        }
        if let Route::Leader(addr) = self.route(&req).await? {
            let j = self
                .peers
                .agents(&addr)?
                .get_job(forwarded(req.into_inner(), who))
                .await
                .map_err(|e| forward_error(&addr, e))?
                .into_inner();
            return Job::try_from(j).map_err(Status::from);
        }
        self.meta.read_barrier().await.map_err(meta_status)?;
        self.meta
            .job(&id)
            .map_err(meta_status)?
            .ok_or_else(|| status(ErrorCode::JobNotFound, format!("job {id} does not exist")))
    }
}

#[tonic::async_trait]
impl Agents for AgentsService {
    #[tracing::instrument(skip_all)]
    async fn register_host(
        &self,
        req: Request<pb::RegisterHostRequest>,
    ) -> Result<Response<pb::RegisterHostResponse>, Status> {
        let who = caller(&req)?;
        forward_to_leader!(self, req, &who, agents, register_host);
        let req = req.into_inner();
        let host = HostRecord::try_from(req.host.unwrap_or_default())?;
        let envs = req
            .envs
            .into_iter()
            .map(EnvRecord::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        let host_id = host.id.clone();
        let answer = self
            .write(
                &who,
                Command::RegisterHost {
                    host,
                    envs,
                    now_ms: now_ms(),
                    takeover_after_ms: 0,
                },
            )
            .await?;
        match answer {
            MetaResponse::Registered { conflicts } => {
                for eid in &conflicts {
                    tracing::warn!(host = %host_id, env = %eid, "a host reported an environment it may not register (another host's, or with another host's backups); an operator moves it with cairn envs move");
                }
                Ok(Response::new(pb::RegisterHostResponse {
                    conflicts: conflicts.iter().map(|e| e.to_string()).collect(),
                }))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn list_hosts(
        &self,
        req: Request<pb::ListHostsRequest>,
    ) -> Result<Response<pb::ListHostsResponse>, Status> {
        // Everyone may list; each sees what the catalog lets it see (an agent: its host).
        let who = caller(&req)?;
        let now = now_ms();
        let hosts = self
            .meta
            .hosts()
            .map_err(meta_status)?
            .iter()
            .filter(|h| self.sees(&who, Subject::Host(h.id.clone())))
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
        let who = caller(&req)?;
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
            if (!only.is_empty() && e.host != only) || !self.sees(&who, Subject::Env(e.eid)) {
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
            w.backups = self
                .meta
                .backup_totals(Some(e.eid))
                .map_err(meta_status)?
                .count;
            envs.push(w);
        }
        envs.sort_by(|a, b| (&a.host, &a.name).cmp(&(&b.host, &b.name)));
        Ok(Response::new(pb::ListEnvsResponse { envs }))
    }

    #[tracing::instrument(skip_all)]
    async fn move_env(
        &self,
        req: Request<pb::MoveEnvRequest>,
    ) -> Result<Response<pb::Env>, Status> {
        let who = caller(&req)?;
        forward_to_leader!(self, req, &who, agents, move_env);
        let req = req.into_inner();
        let eid = parse_env(&req.eid)?;
        self.write(
            &who,
            Command::MoveEnv {
                eid,
                host: req.host.clone(),
                now_ms: now_ms(),
            },
        )
        .await?;
        tracing::info!(env = %eid, host = %req.host, by = %who.name(), "environment moved");
        let env =
            self.meta.env(eid).map_err(meta_status)?.ok_or_else(|| {
                status(ErrorCode::EnvNotFound, format!("environment {eid} is gone"))
            })?;
        Ok(Response::new(pb::Env::from(&env)))
    }

    #[tracing::instrument(skip_all)]
    async fn create_job(
        &self,
        req: Request<pb::CreateJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let who = caller(&req)?;
        forward_to_leader!(self, req, &who, agents, create_job);
        let req = req.into_inner();
        let id = if req.request_id.is_empty() {
            uuid::Uuid::now_v7()
        } else {
            uuid::Uuid::parse_str(&req.request_id).map_err(|_| {
                status(
                    ErrorCode::InvalidArgument,
                    format!("request_id {:?} is not a UUID", req.request_id),
                )
            })?
        };
        let request = JobRequest {
            kind: req.kind,
            env: if req.env.is_empty() {
                None
            } else {
                Some(parse_env(&req.env)?)
            },
            host: (!req.host.is_empty()).then_some(req.host),
            options: cairn_core::job::JobOptions::try_from(req.options.unwrap_or_default())?,
        };
        let job = self
            .write_job(
                &who,
                Command::SubmitJob {
                    id,
                    request,
                    now_ms: now_ms(),
                    queue_timeout_ms: self.settings.queue_timeout_ms,
                },
            )
            .await?;
        tracing::info!(job_id = %job.id, kind = job.kind.as_str(), env = %job.env, host = %job.host, by = %job.requester, state = job.state.as_str(), "job queued");
        Ok(Response::new(self.wire(&job)))
    }

    async fn get_job(&self, req: Request<pb::JobRef>) -> Result<Response<pb::Job>, Status> {
        let who = caller(&req)?;
        let job = self.find_job(&who, req).await?;
        self.authorize(&who, Access::Read, Subject::Job(job.id))?;
        Ok(Response::new(self.wire(&job)))
    }

    async fn list_jobs(
        &self,
        req: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let who = caller(&req)?;
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
            .filter(|j| self.sees(&who, Subject::Job(j.id)))
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
        let who = caller(&req)?;
        let first = self.find_job(&who, req).await?;
        self.authorize(&who, Access::Read, Subject::Job(first.id))?;
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
                                ErrorCode::JobNotFound,
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
        let who = caller(&req)?;
        forward_to_leader!(self, req, &who, agents, cancel_job);
        let id = parse_uuid(&req.get_ref().id, "job id")?;
        let job = self
            .write_job(
                &who,
                Command::CancelJob {
                    id,
                    now_ms: now_ms(),
                },
            )
            .await?;
        tracing::info!(job_id = %id, state = job.state.as_str(), by = %who.name(), "job cancel requested");
        Ok(Response::new(self.wire(&job)))
    }

    type AgentJobsStream = ReceiverStream<Result<pb::Job, Status>>;

    async fn agent_jobs(
        &self,
        req: Request<pb::AgentJobsRequest>,
    ) -> Result<Response<Self::AgentJobsStream>, Status> {
        let who = caller(&req)?;
        let host = req.get_ref().host.clone();
        if host.is_empty() {
            return Err(status(ErrorCode::InvalidArgument, "a host id is required"));
        }
        self.authorize(&who, Access::AgentWork, Subject::Host(host.clone()))?;
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
        let who = caller(&req)?;
        forward_to_leader!(self, req, &who, agents, claim_job);
        let req = req.into_inner();
        let id = parse_uuid(&req.id, "job id")?;
        let now = now_ms();
        let lease = i64::from(req.lease_ms).clamp(*LEASE_MS.start(), *LEASE_MS.end());
        let job = self
            .write_job(
                &who,
                Command::ClaimJob {
                    id,
                    host: req.host,
                    now_ms: now,
                    lease_until_ms: now + lease,
                },
            )
            .await?;
        tracing::info!(job_id = %id, host = %job.host, "job claimed");
        Ok(Response::new(self.wire(&job)))
    }

    async fn report_progress(
        &self,
        req: Request<pb::ReportProgressRequest>,
    ) -> Result<Response<pb::ReportProgressResponse>, Status> {
        let who = caller(&req)?;
        forward_to_leader!(self, req, &who, agents, report_progress);
        let req = req.into_inner();
        let id = parse_uuid(&req.id, "job id")?;
        let lease = i64::from(req.lease_ms).clamp(*LEASE_MS.start(), *LEASE_MS.end());
        let now = now_ms();
        let job = self
            .write_job(
                &who,
                Command::ReportProgress {
                    id,
                    host: req.host,
                    progress: req.progress.unwrap_or_default().into(),
                    lease_until_ms: now + lease,
                    now_ms: now,
                },
            )
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
        let who = caller(&req)?;
        forward_to_leader!(self, req, &who, agents, finish_job);
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
            .write_job(
                &who,
                Command::FinishJob {
                    id,
                    host: Some(req.host),
                    state,
                    reason: req.reason,
                    code: cairn_proto::opt_code(&req.code),
                    result: JobResult::try_from(req.result.unwrap_or_default())?,
                    now_ms: now_ms(),
                },
            )
            .await?;
        tracing::info!(job_id = %id, state = state.as_str(), reason = %job.reason, "job finished");
        Ok(Response::new(self.wire(&job)))
    }

    #[tracing::instrument(skip_all)]
    async fn create_agent_token(
        &self,
        req: Request<pb::CreateAgentTokenRequest>,
    ) -> Result<Response<pb::AgentToken>, Status> {
        let who = caller(&req)?;
        forward_to_leader!(self, req, &who, agents, create_agent_token);
        let host = req.into_inner().host;
        valid_host(&host)?;
        let (token, record) = new_agent_token(&host);
        let id = record.id.clone();
        self.write(
            &who,
            Command::PutToken {
                record: record.clone(),
            },
        )
        .await?;
        tracing::info!(token_id = %id, host = %host, by = %who.name(), "agent token issued");
        Ok(Response::new(pb::AgentToken {
            id,
            host,
            token,
            created_ms: record.created_ms,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn create_join_token(
        &self,
        req: Request<pb::CreateJoinTokenRequest>,
    ) -> Result<Response<pb::JoinToken>, Status> {
        let who = caller(&req)?;
        forward_to_leader!(self, req, &who, agents, create_join_token);
        let req = req.into_inner();
        valid_host(&req.host)?;
        if !JOIN_TTL_MS.contains(&req.ttl_ms) {
            return Err(status(
                ErrorCode::InvalidArgument,
                "a join token lives from 1 minute to 30 days (--ttl)",
            ));
        }
        let (id, token) = new_token(cairn_core::job::JOIN_TOKEN_PREFIX);
        let now = now_ms();
        let record = cairn_core::job::JoinTokenRecord {
            id: id.clone(),
            host: req.host.clone(),
            hash: cairn_core::job::token_hash(&token),
            created_ms: now,
            expires_ms: now + req.ttl_ms as i64,
            redeemed: None,
        };
        self.write(
            &who,
            Command::PutJoinToken {
                record: record.clone(),
            },
        )
        .await?;
        tracing::info!(join_token_id = %id, host = %req.host, by = %who.name(), "join token issued");
        Ok(Response::new(pb::JoinToken {
            id,
            host: req.host,
            token,
            expires_ms: record.expires_ms,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn redeem_join_token(
        &self,
        req: Request<pb::RedeemJoinTokenRequest>,
    ) -> Result<Response<pb::Enrollment>, Status> {
        let who = caller(&req)?;
        forward_to_leader!(self, req, &who, agents, redeem_join_token);
        let host = req.into_inner().host;
        valid_host(&host)?;
        // The agent token is made here and only its hash goes to the catalog, which issues
        // it only if the join token holds (`cairn_meta::join`).
        let (token, record) = new_agent_token(&host);
        let id = record.id.clone();
        self.write(
            &who,
            Command::RedeemJoinToken {
                host: host.clone(),
                agent: record.clone(),
                now_ms: record.created_ms,
            },
        )
        .await?;
        tracing::info!(token_id = %id, host = %host, by = %who.name(), "agent enrolled with a join token");
        Ok(Response::new(pb::Enrollment {
            agent: Some(pb::AgentToken {
                id,
                host,
                token,
                created_ms: record.created_ms,
            }),
            ca_pem: self.ca_pem.clone().unwrap_or_default(),
        }))
    }

    async fn list_join_tokens(
        &self,
        req: Request<pb::ListJoinTokensRequest>,
    ) -> Result<Response<pb::ListJoinTokensResponse>, Status> {
        self.authorize(&caller(&req)?, Access::Administer, Subject::Nothing)?;
        let mut tokens: Vec<pb::JoinTokenInfo> = self
            .meta
            .join_tokens()
            .map_err(meta_status)?
            .iter()
            .map(pb::JoinTokenInfo::from)
            .collect();
        tokens.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(Response::new(pb::ListJoinTokensResponse { tokens }))
    }

    #[tracing::instrument(skip_all)]
    async fn revoke_join_token(
        &self,
        req: Request<pb::RevokeJoinTokenRequest>,
    ) -> Result<Response<pb::RevokeAgentTokenResponse>, Status> {
        let who = caller(&req)?;
        forward_to_leader!(self, req, &who, agents, revoke_join_token);
        let target = req.into_inner().target;
        if target.is_empty() {
            return Err(status(
                ErrorCode::InvalidArgument,
                "name a join token's id or a host",
            ));
        }
        // The ids are picked from this (the leader's) catalog; the catalog removes those
        // that still exist and refuses the command when none does (`cairn_meta::join`).
        let ids: Vec<String> = self
            .meta
            .join_tokens()
            .map_err(meta_status)?
            .into_iter()
            .filter(|t| t.id == target || t.host == target)
            .map(|t| t.id)
            .collect();
        let revoked = match self.write(&who, Command::RevokeJoinTokens { ids }).await? {
            MetaResponse::Removed { count } => count,
            other => return Err(unexpected(other)),
        };
        tracing::info!(revoked, %target, by = %who.name(), "join tokens revoked");
        Ok(Response::new(pb::RevokeAgentTokenResponse { revoked }))
    }

    async fn list_agent_tokens(
        &self,
        req: Request<pb::ListAgentTokensRequest>,
    ) -> Result<Response<pb::ListAgentTokensResponse>, Status> {
        self.authorize(&caller(&req)?, Access::Administer, Subject::Nothing)?;
        let tokens = self
            .meta
            .tokens()
            .map_err(meta_status)?
            .into_iter()
            .filter(|t| !t.is_user())
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
        let who = caller(&req)?;
        forward_to_leader!(self, req, &who, agents, revoke_agent_token);
        let req = req.into_inner();
        if req.id.is_empty() == req.host.is_empty() {
            return Err(status(
                ErrorCode::InvalidArgument,
                "name either a token id or a host",
            ));
        }
        let revoked = self
            .revoke(&who, |t: &TokenRecord| {
                !t.is_user() && (t.id == req.id || t.host == req.host)
            })
            .await?;
        tracing::info!(revoked, by = %who.name(), "agent tokens revoked");
        Ok(Response::new(pb::RevokeAgentTokenResponse { revoked }))
    }

    #[tracing::instrument(skip_all)]
    async fn create_user_token(
        &self,
        req: Request<pb::CreateUserTokenRequest>,
    ) -> Result<Response<pb::UserToken>, Status> {
        let who = caller(&req)?;
        forward_to_leader!(self, req, &who, agents, create_user_token);
        let req = req.into_inner();
        let role = Role::parse(&req.role).ok_or_else(|| {
            status(
                ErrorCode::InvalidArgument,
                format!("unknown role {:?}: use viewer, operator or admin", req.role),
            )
        })?;
        let name = req.name;
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'));
        if !valid {
            return Err(status(
                ErrorCode::InvalidArgument,
                "a user token's name is 1–64 of letters, digits, '.', '_', '-' and '@'",
            ));
        }
        let (id, token) = new_token(cairn_core::job::USER_TOKEN_PREFIX);
        let record = TokenRecord {
            id: id.clone(),
            host: String::new(),
            hash: cairn_core::job::token_hash(&token),
            created_ms: now_ms(),
            name: name.clone(),
            role: Some(role),
        };
        self.write(
            &who,
            Command::PutToken {
                record: record.clone(),
            },
        )
        .await?;
        tracing::info!(token_id = %id, name = %name, role = %role, by = %who.name(), "user token issued");
        Ok(Response::new(pb::UserToken {
            id,
            name,
            role: role.as_str().into(),
            token,
            created_ms: record.created_ms,
        }))
    }

    async fn list_user_tokens(
        &self,
        req: Request<pb::ListUserTokensRequest>,
    ) -> Result<Response<pb::ListUserTokensResponse>, Status> {
        self.authorize(&caller(&req)?, Access::Administer, Subject::Nothing)?;
        let tokens = self
            .meta
            .tokens()
            .map_err(meta_status)?
            .into_iter()
            .filter_map(|t| {
                t.role.map(|role| pb::UserToken {
                    id: t.id,
                    name: t.name,
                    role: role.as_str().into(),
                    token: String::new(),
                    created_ms: t.created_ms,
                })
            })
            .collect();
        Ok(Response::new(pb::ListUserTokensResponse { tokens }))
    }

    #[tracing::instrument(skip_all)]
    async fn revoke_user_token(
        &self,
        req: Request<pb::RevokeUserTokenRequest>,
    ) -> Result<Response<pb::RevokeAgentTokenResponse>, Status> {
        let who = caller(&req)?;
        forward_to_leader!(self, req, &who, agents, revoke_user_token);
        let req = req.into_inner();
        if req.id.is_empty() == req.name.is_empty() {
            return Err(status(
                ErrorCode::InvalidArgument,
                "name either a token id or a user name",
            ));
        }
        let revoked = self
            .revoke(&who, |t: &TokenRecord| {
                t.is_user() && (t.id == req.id || t.name == req.name)
            })
            .await?;
        tracing::info!(revoked, by = %who.name(), "user tokens revoked");
        Ok(Response::new(pb::RevokeAgentTokenResponse { revoked }))
    }
}

impl AgentsService {
    /// Revokes, for `who`, the tokens `matches` picks: refused as the catalog decides, or
    /// not found when none matches (who may ask is decided first, so an empty match tells
    /// a caller without the right nothing).
    async fn revoke(
        &self,
        who: &Principal,
        matches: impl Fn(&TokenRecord) -> bool,
    ) -> Result<u32, Status> {
        let ids: Vec<String> = self
            .meta
            .tokens()
            .map_err(meta_status)?
            .into_iter()
            .filter(|t| matches(t))
            .map(|t| t.id)
            .collect();
        let answer = self
            .write(who, Command::RevokeTokens { ids: ids.clone() })
            .await?;
        let revoked = match answer {
            MetaResponse::Removed { count } => count,
            other => return Err(unexpected(other)),
        };
        if ids.is_empty() {
            return Err(status(ErrorCode::NotFound, "no token matches"));
        }
        Ok(revoked)
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
                    .write_system(Command::ExpireJob {
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
                    let _ = meta.write_system(Command::DeleteJobs { ids }).await;
                }
            }
        }
    }
}
