//! The `Agents` service, typed: hosts and environments, jobs (asking, following, cancelling,
//! and the agent's side: claiming, reporting, finishing), and tokens.
//!
//! Every unary call is retried on other nodes and through elections like catalog calls
//! ([`Client::agents_call`]); job creation is safe to retry because a [`JobRequest`] always
//! carries a request id (one is chosen when the caller did not). Streams
//! ([`Client::watch_job`], [`Client::agent_jobs`]) are opened on one node and end when it
//! goes away; callers reopen them on the next ([`Client::node_urls`]).

use cairn_core::job::{EnvRecord, HostRecord, Job, JobProgress, JobResult, JobState};
use cairn_core::{EnvId, ErrorCode};
use cairn_proto::pb;
use futures::{Stream, StreamExt};

use crate::client::Client;
use crate::error::Error;
use crate::types::{
    AgentToken, Env, Host, JobFilter, JobRequest, JoinToken, JoinTokenInfo, UserToken,
};

/// A job as a node answers it, with what only the answering node knows.
#[derive(Clone, Debug, PartialEq)]
pub struct JobView {
    pub job: Job,
    /// For a queued job, why it waits (e.g. its host is offline).
    pub waiting: Option<String>,
}

impl TryFrom<pb::Job> for JobView {
    type Error = Error;
    fn try_from(mut j: pb::Job) -> Result<Self, Error> {
        let waiting = std::mem::take(&mut j.waiting);
        Ok(JobView {
            job: Job::try_from(j)?,
            waiting: (!waiting.is_empty()).then_some(waiting),
        })
    }
}

fn job(j: pb::Job) -> Result<Job, Error> {
    Ok(Job::try_from(j)?)
}

/// How an agent ends a job it ran.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Succeeded(JobResult),
    /// Stopped on request; nothing was committed.
    Cancelled {
        reason: String,
    },
    Failed {
        code: ErrorCode,
        reason: String,
    },
}

impl Client {
    /// Every host the cluster knows.
    pub async fn list_hosts(&self) -> Result<Vec<Host>, Error> {
        let r = self
            .agents_call(|mut a| async move { a.list_hosts(pb::ListHostsRequest {}).await })
            .await?;
        r.hosts.into_iter().map(Host::try_from).collect()
    }

    /// The environments the cluster knows, of one host or (`None`) of all.
    pub async fn list_envs(&self, host: Option<&str>) -> Result<Vec<Env>, Error> {
        let host = host.unwrap_or_default().to_string();
        let r = self
            .agents_call(|mut a| {
                let host = host.clone();
                async move { a.list_envs(pb::ListEnvsRequest { host }).await }
            })
            .await?;
        r.envs.into_iter().map(Env::try_from).collect()
    }

    /// Moves an environment to another host (its old host is gone).
    pub async fn move_env(&self, env: EnvId, host: &str) -> Result<EnvRecord, Error> {
        let req = pb::MoveEnvRequest {
            eid: env.to_string(),
            host: host.to_string(),
        };
        let e = self
            .agents_call(|mut a| {
                let req = req.clone();
                async move { a.move_env(req).await }
            })
            .await?;
        Ok(EnvRecord::try_from(e)?)
    }

    /// Registers this agent's host and the environments it found; answers the ids of
    /// environments the cluster refused because another host holds them.
    pub async fn register_host(
        &self,
        host: &HostRecord,
        envs: &[EnvRecord],
    ) -> Result<Vec<String>, Error> {
        let mut wire_host = pb::Host::from(host);
        wire_host.online = true;
        let req = pb::RegisterHostRequest {
            host: Some(wire_host),
            envs: envs.iter().map(pb::Env::from).collect(),
        };
        let r = self
            .agents_call(|mut a| {
                let req = req.clone();
                async move { a.register_host(req).await }
            })
            .await?;
        Ok(r.conflicts)
    }

    /// Asks for a job. Retried safely: the request id (chosen here when the caller did not
    /// choose one) makes a retry after a lost answer return the job the first attempt made.
    pub async fn create_job(&self, req: &JobRequest) -> Result<JobView, Error> {
        let mut wire = req.to_wire();
        if wire.request_id.is_empty() {
            wire.request_id = uuid::Uuid::now_v7().to_string();
        }
        let j = self
            .agents_call(|mut a| {
                let r = wire.clone();
                async move { a.create_job(r).await }
            })
            .await?;
        j.try_into()
    }

    /// A job as the answering node knows it.
    pub async fn get_job(&self, id: uuid::Uuid) -> Result<JobView, Error> {
        let req = pb::JobRef { id: id.to_string() };
        let j = self
            .agents_call(|mut a| {
                let req = req.clone();
                async move { a.get_job(req).await }
            })
            .await?;
        j.try_into()
    }

    /// Asks for a job to stop; answers the job as it stands.
    pub async fn cancel_job(&self, id: uuid::Uuid) -> Result<JobView, Error> {
        let req = pb::JobRef { id: id.to_string() };
        let j = self
            .agents_call(|mut a| {
                let req = req.clone();
                async move { a.cancel_job(req).await }
            })
            .await?;
        j.try_into()
    }

    /// Jobs, newest first.
    pub async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobView>, Error> {
        let req = pb::ListJobsRequest {
            env: filter.env.map(|e| e.to_string()).unwrap_or_default(),
            state: filter
                .state
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            limit: filter.limit,
        };
        let r = self
            .agents_call(|mut a| {
                let req = req.clone();
                async move { a.list_jobs(req).await }
            })
            .await?;
        r.jobs.into_iter().map(JobView::try_from).collect()
    }

    /// Follows a job on the node at `url`: its state now, then each change, until it ends.
    /// The stream ends early when the node goes away (an item is then `Unreachable`);
    /// reopen it on another node.
    pub async fn watch_job(
        &self,
        url: &str,
        id: uuid::Uuid,
    ) -> Result<impl Stream<Item = Result<JobView, Error>>, Error> {
        let s = self
            .agents_at(url)?
            .watch_job(pb::JobRef { id: id.to_string() })
            .await
            .map_err(|s| crate::client::call_error(url, s))?
            .into_inner();
        let url = url.to_string();
        Ok(s.map(move |item| match item {
            Ok(j) => JobView::try_from(j),
            Err(s) => Err(crate::client::call_error(&url, s)),
        }))
    }

    /// The jobs offered to the agent of `host`, from the node at `url` (the agent's side).
    pub async fn agent_jobs(
        &self,
        url: &str,
        host: &str,
    ) -> Result<impl Stream<Item = Result<Job, Error>>, Error> {
        let s = self
            .agents_at(url)?
            .agent_jobs(pb::AgentJobsRequest {
                host: host.to_string(),
            })
            .await
            .map_err(|s| crate::client::call_error(url, s))?
            .into_inner();
        let url = url.to_string();
        Ok(s.map(move |item| match item {
            Ok(j) => job(j),
            Err(s) => Err(crate::client::call_error(&url, s)),
        }))
    }

    /// Claims a job offered to `host`, leasing it for `lease_ms`.
    pub async fn claim_job(&self, id: uuid::Uuid, host: &str, lease_ms: u32) -> Result<Job, Error> {
        let req = pb::ClaimJobRequest {
            id: id.to_string(),
            host: host.to_string(),
            lease_ms,
        };
        let j = self
            .agents_call(|mut a| {
                let req = req.clone();
                async move { a.claim_job(req).await }
            })
            .await?;
        job(j)
    }

    /// Reports a running job's progress and renews its lease; answers whether the job was
    /// asked to stop.
    pub async fn report_progress(
        &self,
        id: uuid::Uuid,
        host: &str,
        progress: &JobProgress,
        lease_ms: u32,
    ) -> Result<bool, Error> {
        let req = pb::ReportProgressRequest {
            id: id.to_string(),
            host: host.to_string(),
            progress: Some(progress.into()),
            lease_ms,
        };
        let r = self
            .agents_call(|mut a| {
                let req = req.clone();
                async move { a.report_progress(req).await }
            })
            .await?;
        Ok(r.cancel)
    }

    /// Ends a job this host ran.
    pub async fn finish_job(
        &self,
        id: uuid::Uuid,
        host: &str,
        outcome: &Outcome,
    ) -> Result<Job, Error> {
        let (state, reason, code, result) = match outcome {
            Outcome::Succeeded(r) => (JobState::Succeeded, String::new(), None, r.clone()),
            Outcome::Cancelled { reason } => (
                JobState::Cancelled,
                reason.clone(),
                None,
                JobResult::default(),
            ),
            Outcome::Failed { code, reason } => (
                JobState::Failed,
                reason.clone(),
                Some(*code),
                JobResult::default(),
            ),
        };
        let req = pb::FinishJobRequest {
            id: id.to_string(),
            host: host.to_string(),
            state: state.as_str().to_string(),
            reason,
            result: Some((&result).into()),
            code: cairn_proto::code_to_wire(code),
        };
        let j = self
            .agents_call(|mut a| {
                let req = req.clone();
                async move { a.finish_job(req).await }
            })
            .await?;
        job(j)
    }

    /// Creates an agent token bound to `host`; the answer holds the secret, once.
    pub async fn create_agent_token(&self, host: &str) -> Result<AgentToken, Error> {
        let host = host.to_string();
        let t = self
            .agents_call(|mut a| {
                let host = host.clone();
                async move {
                    a.create_agent_token(pb::CreateAgentTokenRequest { host })
                        .await
                }
            })
            .await?;
        Ok(t.into())
    }

    /// Creates a one-time join token for `host`, valid for `ttl_ms`; the answer holds the
    /// secret, once.
    pub async fn create_join_token(&self, host: &str, ttl_ms: u64) -> Result<JoinToken, Error> {
        let req = pb::CreateJoinTokenRequest {
            host: host.to_string(),
            ttl_ms,
        };
        let t = self
            .agents_call(|mut a| {
                let req = req.clone();
                async move { a.create_join_token(req).await }
            })
            .await?;
        Ok(t.into())
    }

    /// Lists the join tokens the catalog holds (never a token or its hash).
    pub async fn list_join_tokens(&self) -> Result<Vec<JoinTokenInfo>, Error> {
        let r = self
            .agents_call(
                |mut a| async move { a.list_join_tokens(pb::ListJoinTokensRequest {}).await },
            )
            .await?;
        Ok(r.tokens.into_iter().map(JoinTokenInfo::from).collect())
    }

    /// Revokes the join token with id `target`, or every join token of host `target`;
    /// returns how many went.
    pub async fn revoke_join_token(&self, target: &str) -> Result<u32, Error> {
        let req = pb::RevokeJoinTokenRequest {
            target: target.to_string(),
        };
        let r = self
            .agents_call(|mut a| {
                let req = req.clone();
                async move { a.revoke_join_token(req).await }
            })
            .await?;
        Ok(r.revoked)
    }

    pub async fn list_agent_tokens(&self) -> Result<Vec<AgentToken>, Error> {
        let r = self
            .agents_call(
                |mut a| async move { a.list_agent_tokens(pb::ListAgentTokensRequest {}).await },
            )
            .await?;
        Ok(r.tokens.into_iter().map(AgentToken::from).collect())
    }

    /// Revokes agent tokens: the one with `id`, or every token of `host`.
    pub async fn revoke_agent_token(
        &self,
        id: Option<&str>,
        host: Option<&str>,
    ) -> Result<u32, Error> {
        let req = pb::RevokeAgentTokenRequest {
            id: id.unwrap_or_default().to_string(),
            host: host.unwrap_or_default().to_string(),
        };
        let r = self
            .agents_call(|mut a| {
                let req = req.clone();
                async move { a.revoke_agent_token(req).await }
            })
            .await?;
        Ok(r.revoked)
    }

    /// Creates a user token for `name` with `role`; the answer holds the secret, once.
    pub async fn create_user_token(
        &self,
        name: &str,
        role: cairn_core::auth::Role,
    ) -> Result<UserToken, Error> {
        let req = pb::CreateUserTokenRequest {
            name: name.to_string(),
            role: role.as_str().to_string(),
        };
        let t = self
            .agents_call(|mut a| {
                let req = req.clone();
                async move { a.create_user_token(req).await }
            })
            .await?;
        Ok(t.into())
    }

    pub async fn list_user_tokens(&self) -> Result<Vec<UserToken>, Error> {
        let r = self
            .agents_call(
                |mut a| async move { a.list_user_tokens(pb::ListUserTokensRequest {}).await },
            )
            .await?;
        Ok(r.tokens.into_iter().map(UserToken::from).collect())
    }

    /// Revokes user tokens: the one with `id`, or every token of `name`.
    pub async fn revoke_user_token(
        &self,
        id: Option<&str>,
        name: Option<&str>,
    ) -> Result<u32, Error> {
        let req = pb::RevokeUserTokenRequest {
            id: id.unwrap_or_default().to_string(),
            name: name.unwrap_or_default().to_string(),
        };
        let r = self
            .agents_call(|mut a| {
                let req = req.clone();
                async move { a.revoke_user_token(req).await }
            })
            .await?;
        Ok(r.revoked)
    }
}
