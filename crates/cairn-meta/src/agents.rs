//! The catalog's decisions about hosts, environments, jobs and tokens.
//!
//! Job transitions themselves are pure methods of [`cairn_core::job::Job`]; this module
//! loads the job, applies the transition, and keeps the per-environment "active job" index in
//! step: it is set when an agent job is queued and cleared in the same write that makes the
//! job final, so an environment never has two backups or restores at once and never stays
//! blocked by a finished job.
//!
//! A job request is resolved here too ([`Command::SubmitJob`]): which environment, which
//! host, which backup, whether the restore may bring back device nodes and setuid files,
//! and whether the proposer may run it at all (see [`crate::authz`]). Doing it inside the
//! decision means that no node's stale view and no forwarding path can admit a job the
//! catalog would not. An admitted backup job reserves its backup's id in the same write
//! (`Job::reserved_backup`; the rule is in the module doc of [`crate::backups`]).
//!
//! # Environments and hosts
//! A host registers the environments it runs. An environment registered to another host,
//! one whose backups were taken on another host, and one whose id is derived (UUIDv5) from
//! another host's id are never taken over: they are answered as conflicts. Moving an
//! environment is an operator's decision ([`Command::MoveEnv`]), so a compromised host can
//! neither claim another host's containers nor their history.

use cairn_core::auth::{Admission, Principal, Rule};
use cairn_core::job::{
    EnvRecord, Job, JobKind, JobOptions, JobRefusal, JobResult, JobState, LogLevel,
};
use cairn_core::{BackupId, BackupRecord, EnvId, ErrorCode};

use crate::authz::{backup_readable, not_own_backup};
use crate::command::{Command, JobRequest, Response};
use crate::view::{CatalogRead, Decision, Write};

fn done(writes: Vec<Write>, response: Response) -> Decision {
    Decision { writes, response }
}

fn refusal(r: JobRefusal) -> Decision {
    match r {
        JobRefusal::State(m) => Decision::refuse(ErrorCode::Conflict, m),
        JobRefusal::WrongHost(m) => Decision::deny(Rule::AgentOwnJob, m),
    }
}

/// Writes the changed job, and clears the active index when it just ended.
fn job_writes<V: CatalogRead + ?Sized>(view: &V, job: Job) -> Result<Decision, V::Error> {
    let mut writes = Vec::with_capacity(2);
    if job.state.is_final() && view.active_job(job.env)? == Some(job.id) {
        writes.push(Write::DeleteActive(job.env));
    }
    writes.push(Write::PutJob(Box::new(job.clone())));
    Ok(done(writes, Response::Job { job: Box::new(job) }))
}

/// Loads a job, or answers that it does not exist.
fn load<V: CatalogRead + ?Sized>(
    view: &V,
    id: &uuid::Uuid,
) -> Result<Result<Job, Decision>, V::Error> {
    Ok(view.job(id)?.ok_or_else(|| {
        Decision::refuse(ErrorCode::JobNotFound, format!("job {id} does not exist"))
    }))
}

/// Why a host may not register an environment it reports, if it may not.
fn registration_conflict<V: CatalogRead + ?Sized>(
    view: &V,
    host: &str,
    env: &EnvRecord,
) -> Result<Option<String>, V::Error> {
    if let Some(existing) = view.env(env.eid)? {
        return Ok((existing.host != host).then(|| {
            format!(
                "environment {} runs on host {:?}; an operator moves it (cairn envs move)",
                env.eid, existing.host
            )
        }));
    }
    // An id derived from a host id and a name (UUIDv5 in Cairn's namespace) is only ever
    // the reporting host's own: another host's derived ids can be computed, not claimed.
    if env.eid.0.get_version_num() == 5
        && env.eid != EnvId::derive(&format!("{host}/{}", env.name))
        && env.eid != EnvId::of_host(host)
    {
        return Ok(Some(format!(
            "environment {} is not derived from host {host:?} and name {:?}",
            env.eid, env.name
        )));
    }
    // History belongs to the host that made it until an operator moves the environment.
    if let Some(other) = view
        .backups(Some(env.eid))?
        .into_iter()
        .map(|b| b.host)
        .find(|h| h != host)
    {
        return Ok(Some(format!(
            "environment {} has backups taken on host {other:?}; an operator moves it (cairn envs move)",
            env.eid
        )));
    }
    Ok(None)
}

/// Decides the agent-related commands (see [`crate::catalog::decide`]); `by` is already
/// admitted for the command by [`crate::authz::admit`].
pub(crate) fn decide<V: CatalogRead + ?Sized>(
    view: &V,
    by: &Principal,
    cmd: &Command,
) -> Result<Decision, V::Error> {
    match cmd {
        Command::RegisterHost {
            host, envs, now_ms, ..
        } => {
            if host.id.is_empty() {
                return Ok(Decision::refuse(
                    ErrorCode::InvalidArgument,
                    "a host needs an id".into(),
                ));
            }
            let previous = view.host(&host.id)?;
            let mut writes = Vec::new();
            let mut conflicts = Vec::new();
            let mut accepted = Vec::new();
            for env in envs {
                if accepted.contains(&env.eid) || conflicts.contains(&env.eid) {
                    continue;
                }
                if registration_conflict(view, &host.id, env)?.is_some() {
                    conflicts.push(env.eid);
                    continue;
                }
                let mut stored = env.clone();
                stored.host = host.id.clone();
                if view.env(env.eid)?.as_ref() != Some(&stored) {
                    writes.push(Write::PutEnv(stored));
                }
                accepted.push(env.eid);
            }
            for old in previous.iter().flat_map(|p| &p.envs) {
                if !accepted.contains(old) {
                    if let Some(e) = view.env(*old)? {
                        if e.host == host.id {
                            writes.push(Write::DeleteEnv(*old));
                        }
                    }
                }
            }
            let mut stored = host.clone();
            stored.seen_ms = *now_ms;
            stored.envs = accepted;
            writes.push(Write::PutHost(stored));
            Ok(done(writes, Response::Registered { conflicts }))
        }
        Command::MoveEnv { eid, host, .. } => move_env(view, *eid, host),
        Command::SubmitJob {
            id,
            request,
            now_ms,
            queue_timeout_ms,
        } => submit_job(view, by, *id, request, *now_ms, *queue_timeout_ms),
        Command::CreateJob { job } => {
            if view.job(&job.id)?.is_some() {
                return Ok(Decision::refuse(
                    ErrorCode::Conflict,
                    format!("job {} already exists", job.id),
                ));
            }
            let mut writes = Vec::with_capacity(2);
            if job.kind.needs_agent() && !job.state.is_final() {
                if let Some(active) = view.active_job(job.env)? {
                    if let Some(other) = view.job(&active)? {
                        if !other.state.is_final() {
                            return Ok(Decision::refuse(
                                ErrorCode::JobRunning,
                                format!(
                                    "environment {} already has a {} job {} ({}); wait for it or cancel it",
                                    job.env,
                                    other.kind.as_str(),
                                    other.id,
                                    other.state.as_str()
                                ),
                            ));
                        }
                    }
                }
                writes.push(Write::PutActive(job.env, job.id));
            }
            writes.push(Write::PutJob(job.clone()));
            Ok(done(writes, Response::Job { job: job.clone() }))
        }
        Command::ClaimJob {
            id,
            host,
            now_ms,
            lease_until_ms,
        } => {
            let mut job = match load(view, id)? {
                Ok(j) => j,
                Err(d) => return Ok(d),
            };
            match job.claim(host, *now_ms, *lease_until_ms) {
                Ok(()) => job_writes(view, job),
                Err(r) => Ok(refusal(r)),
            }
        }
        Command::ReportProgress {
            id,
            host,
            progress,
            lease_until_ms,
            now_ms,
        } => {
            let mut job = match load(view, id)? {
                Ok(j) => j,
                Err(d) => return Ok(d),
            };
            match job.report(host, progress.clone(), *lease_until_ms, *now_ms) {
                Ok(()) => job_writes(view, job),
                Err(r) => Ok(refusal(r)),
            }
        }
        Command::FinishJob {
            id,
            host,
            state,
            reason,
            code,
            result,
            now_ms,
        } => {
            let mut job = match load(view, id)? {
                Ok(j) => j,
                Err(d) => return Ok(d),
            };
            match job.finish(
                host.as_deref(),
                *state,
                reason.clone(),
                *code,
                result.clone(),
                *now_ms,
            ) {
                Ok(()) => job_writes(view, job),
                Err(r) => Ok(refusal(r)),
            }
        }
        Command::CancelJob { id, now_ms } => {
            let mut job = match load(view, id)? {
                Ok(j) => j,
                Err(d) => return Ok(d),
            };
            match job.cancel(&by.name(), *now_ms) {
                Ok(()) => job_writes(view, job),
                Err(r) => Ok(refusal(r)),
            }
        }
        Command::ExpireJob { id, now_ms } => {
            let mut job = match load(view, id)? {
                Ok(j) => j,
                Err(d) => return Ok(d),
            };
            if job.expire(*now_ms) {
                job_writes(view, job)
            } else {
                Ok(Decision::refuse(
                    ErrorCode::Conflict,
                    format!("job {id} has not expired"),
                ))
            }
        }
        Command::DeleteJobs { ids } => {
            let mut writes = Vec::new();
            for id in ids {
                if let Some(job) = view.job(id)? {
                    if job.state.is_final() {
                        writes.push(Write::DeleteJob(*id));
                    }
                }
            }
            let count = writes.len() as u32;
            Ok(done(writes, Response::Removed { count }))
        }
        Command::PutToken { record } => {
            if view.token(&record.id)?.is_some() {
                return Ok(Decision::refuse(
                    ErrorCode::Conflict,
                    format!("agent token {} already exists", record.id),
                ));
            }
            Ok(done(vec![Write::PutToken(record.clone())], Response::Done))
        }
        Command::RevokeTokens { ids } => {
            let mut writes = Vec::new();
            for id in ids {
                if view.token(id)?.is_some() {
                    writes.push(Write::DeleteToken(id.clone()));
                }
            }
            let count = writes.len() as u32;
            Ok(done(writes, Response::Removed { count }))
        }
        other => unreachable_command(other),
    }
}

/// Assigns an environment to a host: the operator's way to move a container's history to
/// another host (an agent never takes one over). An environment no host reports any more
/// is recreated from its latest backup.
fn move_env<V: CatalogRead + ?Sized>(
    view: &V,
    eid: EnvId,
    host: &str,
) -> Result<Decision, V::Error> {
    if view.host(host)?.is_none() {
        return Ok(Decision::refuse(
            ErrorCode::HostNotFound,
            format!("host {host:?} has never registered"),
        ));
    }
    if let Some(active) = view.active_job(eid)? {
        if view.job(&active)?.is_some_and(|j| !j.state.is_final()) {
            return Ok(Decision::refuse(
                ErrorCode::JobRunning,
                format!("environment {eid} has an active job {active}; wait for it or cancel it"),
            ));
        }
    }
    let mut writes = Vec::new();
    let record = match view.env(eid)? {
        Some(mut e) => {
            if e.host == host {
                return Ok(done(Vec::new(), Response::Done));
            }
            if let Some(mut old) = view.host(&e.host)? {
                old.envs.retain(|x| *x != eid);
                writes.push(Write::PutHost(old));
            }
            e.host = host.to_string();
            e
        }
        None => match view.backups(Some(eid))?.pop() {
            Some(latest) => EnvRecord {
                eid,
                host: host.to_string(),
                name: latest.env_info.name.clone(),
                path: latest.source.clone(),
                title: latest.env_info.title.clone(),
                hostname: latest.env_info.hostname.clone(),
                ip: latest.env_info.ip.clone(),
                os: latest.env_info.os.clone(),
                description: String::new(),
                kind: latest.env_info.kind.clone(),
            },
            None => {
                return Ok(Decision::refuse(
                    ErrorCode::EnvNotFound,
                    format!("unknown environment {eid}: no host runs it and it has no backups"),
                ))
            }
        },
    };
    if let Some(mut new_host) = view.host(host)? {
        if !new_host.envs.contains(&eid) {
            new_host.envs.push(eid);
            writes.push(Write::PutHost(new_host));
        }
    }
    writes.push(Write::PutEnv(record));
    Ok(done(writes, Response::Done))
}

fn invalid(message: impl Into<String>) -> Decision {
    Decision::refuse(ErrorCode::InvalidArgument, message.into())
}

/// A refusal for something that does not exist; `code` says what (a backup, …).
fn not_found(code: ErrorCode, message: impl Into<String>) -> Decision {
    debug_assert_eq!(code.family(), ErrorCode::NotFound);
    Decision::refuse(code, message.into())
}

fn forbidden(rule: Rule, message: impl Into<String>) -> Decision {
    Decision::deny(rule, message.into())
}

/// Admits a job request: resolves the environment, host and backup, decides whether `by`
/// may run it (the kind's access; for an agent, its own environment, its own backups, its
/// own host and the environment's own path), and stores it queued. Delete and update jobs
/// are carried out here, in the same write, and stored finished.
fn submit_job<V: CatalogRead + ?Sized>(
    view: &V,
    by: &Principal,
    id: uuid::Uuid,
    request: &JobRequest,
    now_ms: i64,
    queue_timeout_ms: i64,
) -> Result<Decision, V::Error> {
    let Some(kind) = JobKind::parse(&request.kind) else {
        return Ok(invalid(format!(
            "unknown job kind {:?}: use backup, restore, selective_restore, delete or update",
            request.kind
        )));
    };
    let admission = kind.access().admits(by);
    if let Admission::Denied(why) = admission {
        return Ok(forbidden(Rule::AccessTable, why));
    }
    let agent = by.agent_host();
    if let Some(existing) = view.job(&id)? {
        // The same request again: a client that lost the answer retries with the id it chose
        // (`CreateJobRequest.request_id`), and gets the job its first attempt created rather
        // than a conflict with itself. Someone else's id is refused without saying more.
        if existing.requester == by.name() && existing.kind == kind {
            return Ok(done(
                Vec::new(),
                Response::Job {
                    job: Box::new(existing),
                },
            ));
        }
        return Ok(Decision::refuse(
            ErrorCode::Conflict,
            format!("job {id} already exists"),
        ));
    }
    let mut options = request.options.clone();
    // Decided below, never taken from the request.
    options.privileged = false;
    if agent.is_some() {
        options.allow_privileged = false;
    }
    // The backup a restore, delete or update acts on; an agent is told the same whether
    // the backup is not its own or does not exist.
    let backup: Option<BackupRecord> = match options.backup {
        Some(b) => {
            if let Some(h) = agent {
                let own_env = view.env(b.env)?.is_some_and(|e| e.host == h);
                if !own_env || !backup_readable(view, h, &b)? {
                    return Ok(forbidden(Rule::AgentOwnBackup, not_own_backup(h, &b)));
                }
            }
            match view.backup(&b)? {
                Some(r) => Some(r),
                None => {
                    return Ok(not_found(
                        ErrorCode::BackupNotFound,
                        format!("backup {b} does not exist"),
                    ))
                }
            }
        }
        None => None,
    };
    let env = match (request.env, &backup) {
        (Some(e), Some(b)) if b.id.env != e => {
            return Ok(invalid(format!(
                "backup {} belongs to environment {}, not {e}",
                b.id, b.id.env
            )))
        }
        (Some(e), _) => e,
        (None, Some(b)) => b.id.env,
        (None, None) => return Ok(invalid("a job needs an environment id (or a backup id)")),
    };
    let registered: Option<EnvRecord> = view.env(env)?;
    if let Some(h) = agent {
        if registered.as_ref().map(|e| e.host.as_str()) != Some(h) {
            return Ok(forbidden(Rule::AgentOwnEnv, format!(
                "rule agent-own-env: the agent token of host {h:?} acts only on environments its host runs; {env} is not one"
            )));
        }
        if request.host.as_deref().is_some_and(|named| named != h) {
            return Ok(forbidden(Rule::AgentOwnHost, format!(
                "rule agent-own-host: the agent token of host {h:?} runs jobs on its own host only; restoring onto another host is an operator's decision"
            )));
        }
        if !options.target_path.is_empty() {
            return Ok(forbidden(Rule::AgentOwnPaths, format!(
                "rule agent-own-paths: the agent token of host {h:?} restores only into the environment's own path"
            )));
        }
    }
    let host = match kind {
        JobKind::Delete | JobKind::Update => {
            if backup.is_none() {
                return Ok(invalid(format!(
                    "a {} job needs the backup it acts on",
                    kind.as_str()
                )));
            }
            if kind == JobKind::Update && options.edit.is_none() {
                return Ok(invalid("an update job needs the fields to change"));
            }
            String::new()
        }
        JobKind::Backup | JobKind::SelectiveRestore => match &registered {
            Some(e) if request.host.as_deref().is_none_or(|h| h == e.host) => e.host.clone(),
            Some(e) => {
                return Ok(invalid(format!(
                    "environment {env} runs on host {:?}; only a full restore may target another host",
                    e.host
                )))
            }
            None => {
                return Ok(not_found(ErrorCode::EnvNotFound, format!(
                    "unknown environment {env}: no host has registered it (see `cairn envs list`)"
                )))
            }
        },
        JobKind::Restore => match request.host.as_deref().filter(|h| !h.is_empty()) {
            Some(named) => {
                if view.host(named)?.is_none() {
                    return Ok(not_found(ErrorCode::HostNotFound, format!("host {named:?} has never registered")));
                }
                if registered.as_ref().map(|e| e.host.as_str()) != Some(named)
                    && options.target_path.is_empty()
                {
                    return Ok(invalid(format!(
                        "environment {env} does not run on host {named:?}: name the directory to restore into (target path)"
                    )));
                }
                named.to_string()
            }
            None => match &registered {
                Some(e) => e.host.clone(),
                None => {
                    return Ok(not_found(ErrorCode::EnvNotFound, format!(
                        "unknown environment {env}: no host runs it; name a host (and target path) to restore it elsewhere"
                    )))
                }
            },
        },
    };
    if let Some(refused) = name_taken(view, kind, env, &options)? {
        return Ok(refused);
    }
    // A replace removes a backup when the job commits: only who may delete asks for it, and
    // only for a backup of the job's own environment (whether it still exists, or is
    // protected, is decided at the commit, see `backups::replace_writes`).
    if let Some(replace) = options.replace {
        if kind != JobKind::Backup {
            return Ok(invalid(format!(
                "only a backup job replaces a backup, not a {} job",
                kind.as_str()
            )));
        }
        if !crate::authz::may_delete(by) {
            return Ok(forbidden(
                Rule::MayDelete,
                format!(
                    "{} may not remove backups, so may not replace one",
                    by.name()
                ),
            ));
        }
        if let cairn_core::job::Replace::Backup(b) = replace {
            if b.env != env {
                return Ok(invalid(format!(
                    "backup {b} is not a backup of environment {env}; a backup job replaces one of its own environment"
                )));
            }
        }
    }
    if matches!(kind, JobKind::Restore | JobKind::SelectiveRestore) {
        let b = match &backup {
            Some(b) => b.clone(),
            None => match view.backups(Some(env))?.pop() {
                Some(latest) => latest,
                None => {
                    return Ok(not_found(
                        ErrorCode::BackupNotFound,
                        format!("environment {env} has no backup to restore"),
                    ))
                }
            },
        };
        if kind == JobKind::SelectiveRestore && options.paths.is_empty() {
            return Ok(invalid("a selective restore needs at least one path"));
        }
        if let Some(p) = options
            .paths
            .iter()
            .find(|p| cairn_core::path::validate(p.trim_matches('/').as_bytes()).is_err())
        {
            return Ok(invalid(format!(
                "path {p:?} is not a relative path inside the environment"
            )));
        }
        // Device nodes, setuid/setgid bits and capabilities come back only on the host
        // the backup was taken on, unless an operator asked for them elsewhere.
        options.privileged = b.host == host || options.allow_privileged;
        options.backup = Some(b.id);
    }
    let mut job = Job::new(
        id,
        kind,
        env,
        host,
        by.name(),
        options,
        now_ms,
        queue_timeout_ms,
    );
    match kind {
        JobKind::Delete => return run_delete(view, job, now_ms),
        JobKind::Update => return run_update(view, job, now_ms),
        _ => {}
    }
    if let Some(active) = view.active_job(env)? {
        if let Some(other) = view.job(&active)? {
            if !other.state.is_final() {
                return Ok(Decision::refuse(
                    ErrorCode::JobRunning,
                    format!(
                        "environment {env} already has a {} job {} ({}); wait for it or cancel it",
                        other.kind.as_str(),
                        other.id,
                        other.state.as_str()
                    ),
                ));
            }
        }
    }
    let mut writes = Vec::with_capacity(3);
    if kind == JobKind::Backup {
        // The job's backup id, reserved now so that its first answer can name the backup
        // (see `Job::reserved_backup` and the module doc of `catalog`).
        let Some(time) = crate::backups::next_free_time(view, env, now_ms.div_euclid(1000).max(0))?
        else {
            return Ok(Decision::refuse(
                ErrorCode::Conflict,
                format!("environment {env} has no free backup second left"),
            ));
        };
        let reserved = BackupId::new(env, time);
        job.reserved_backup = Some(reserved);
        job.log(
            now_ms,
            LogLevel::Info,
            format!("queued; the backup's id {reserved} is reserved"),
        );
        writes.push(Write::PutLastId { env, time });
    }
    writes.push(Write::PutActive(env, job.id));
    writes.push(Write::PutJob(Box::new(job.clone())));
    Ok(done(writes, Response::Job { job: Box::new(job) }))
}

/// Name uniqueness at admission: a backup job whose requested name another backup of the
/// environment already has, or an update renaming a backup to such a name, is refused with
/// [`ErrorCode::DuplicateName`] and no job is stored. The commit (and the update) decide the
/// same rule again atomically (`backups::commit_backup`, `backups::update_backup`); this one
/// answers before an agent spends a whole backup on a name that can only be refused at its
/// commit, so no adapter lists backups to find out.
fn name_taken<V: CatalogRead + ?Sized>(
    view: &V,
    kind: JobKind,
    env: EnvId,
    options: &JobOptions,
) -> Result<Option<Decision>, V::Error> {
    let (name, except) = match kind {
        JobKind::Backup => (options.name.as_str(), None),
        JobKind::Update => match options.edit.as_ref().and_then(|e| e.name.as_deref()) {
            Some(n) => (n, options.backup.map(|b| b.time)),
            None => return Ok(None),
        },
        _ => return Ok(None),
    };
    if name.is_empty() {
        return Ok(None);
    }
    Ok(match view.name_owner(env, name)? {
        Some(time) if Some(time) != except => Some(Decision::refuse(
            ErrorCode::DuplicateName,
            format!(
                "environment {env} already has a backup named {name:?}: {}",
                BackupId::new(env, time)
            ),
        )),
        _ => None,
    })
}

/// Ends a job the cluster ran itself: succeeded, or failed with `failure` (the refusal's
/// code and message).
fn finished(
    mut job: Job,
    failure: Option<(ErrorCode, String)>,
    message: String,
    now_ms: i64,
) -> Job {
    let target = job.options.backup;
    let (state, code, reason) = match failure {
        None => (JobState::Succeeded, None, String::new()),
        Some((c, f)) => (JobState::Failed, Some(c), f),
    };
    job.state = state;
    job.reason = reason;
    job.code = code;
    job.started_ms = Some(now_ms);
    job.finished_ms = Some(now_ms);
    job.result = JobResult {
        backup: target,
        message,
        ..JobResult::default()
    };
    job.log_end(now_ms);
    job
}

/// A delete job: deletes the backup (and with `prev` every older one of its environment
/// that is not protected) in the same write that stores the finished job.
fn run_delete<V: CatalogRead + ?Sized>(
    view: &V,
    job: Job,
    now_ms: i64,
) -> Result<Decision, V::Error> {
    let Some(target) = job.options.backup else {
        return Ok(invalid("a delete job needs a backup"));
    };
    // A protected backup is refused outright (no job): nothing removes it.
    if view.backup(&target)?.is_some_and(|b| b.protected) {
        return Ok(Decision::refuse(
            ErrorCode::Protected,
            format!(
                "backup {target} is protected; an admin unprotects it before it can be removed"
            ),
        ));
    }
    let mut ids: Vec<BackupId> = vec![target];
    let mut kept = 0;
    if job.options.prev {
        for b in view.backups(Some(target.env))? {
            if b.id.time < target.time {
                if b.protected {
                    kept += 1;
                } else {
                    ids.push(b.id);
                }
            }
        }
    }
    let mut writes = Vec::new();
    let mut failure = None;
    let mut deleted = 0;
    for id in &ids {
        let d = crate::backups::delete_backup(view, id)?;
        match d.response.refusal() {
            Some((c, m)) => {
                failure = Some((c, m.to_string()));
                if *id == target {
                    // Nothing goes when the backup asked for cannot.
                    writes.clear();
                    deleted = 0;
                    break;
                }
            }
            None => {
                writes.extend(d.writes);
                deleted += 1;
            }
        }
    }
    let mut message = format!("{deleted} backup(s) deleted");
    if kept > 0 {
        message.push_str(&format!("; {kept} protected backup(s) kept"));
    }
    let job = finished(job, failure, message, now_ms);
    writes.push(Write::PutJob(Box::new(job.clone())));
    Ok(done(writes, Response::Job { job: Box::new(job) }))
}

/// An update job: changes the backup's fields (and its protection) in the same write that
/// stores the finished job; failed, with the catalog's reason, when the new name is taken.
fn run_update<V: CatalogRead + ?Sized>(
    view: &V,
    job: Job,
    now_ms: i64,
) -> Result<Decision, V::Error> {
    let (Some(target), Some(edit)) = (job.options.backup, job.options.edit.clone()) else {
        return Ok(invalid(
            "an update job needs a backup and the fields to change",
        ));
    };
    let d = crate::backups::update_backup(
        view,
        &target,
        edit.name.as_deref(),
        edit.description.as_deref(),
        edit.tags.as_deref(),
        edit.protected,
    )?;
    let (mut writes, failure) = match d.response.refusal() {
        Some((c, m)) => (Vec::new(), Some((c, m.to_string()))),
        None => (d.writes, None),
    };
    let job = finished(job, failure, "backup updated".to_string(), now_ms);
    writes.push(Write::PutJob(Box::new(job.clone())));
    Ok(done(writes, Response::Job { job: Box::new(job) }))
}

/// `decide` routes only the commands above here.
fn unreachable_command<E>(cmd: &Command) -> Result<Decision, E> {
    Ok(Decision::refuse(
        ErrorCode::Internal,
        format!("command {} is not an agent command", cmd.kind()),
    ))
}

#[cfg(test)]
mod tests {
    use cairn_core::auth::Role;
    use cairn_core::job::{EnvRecord, HostRecord, JobKind, JobOptions, JobResult, JobState};
    use cairn_core::EnvId;

    use crate::catalog::tests::{agent, env, record, user, MemCatalog};
    use crate::command::{Command, Response};

    use super::*;

    fn register(cat: &mut MemCatalog, host: &str, envs: Vec<EnvRecord>, now: i64) -> Response {
        cat.run_as(
            agent(host),
            Command::RegisterHost {
                host: HostRecord {
                    id: host.into(),
                    hostname: format!("{host}.example"),
                    ..Default::default()
                },
                envs,
                now_ms: now,
                takeover_after_ms: 0,
            },
        )
    }

    fn job(n: u128, env: EnvId) -> Box<Job> {
        Box::new(Job::new(
            uuid::Uuid::from_u128(n),
            JobKind::Backup,
            env,
            "h1".into(),
            "admin".into(),
            JobOptions::default(),
            1_000,
            60_000,
        ))
    }

    fn state(r: &Response) -> JobState {
        match r {
            Response::Job { job } => job.state,
            other => panic!("expected a job, got {other:?}"),
        }
    }

    fn submit(
        cat: &mut MemCatalog,
        by: Principal,
        n: u128,
        kind: &str,
        env: Option<EnvId>,
        options: JobOptions,
    ) -> Response {
        cat.run_as(
            by,
            Command::SubmitJob {
                id: uuid::Uuid::from_u128(n),
                request: JobRequest {
                    kind: kind.into(),
                    env,
                    host: None,
                    options,
                },
                now_ms: 5_000,
                queue_timeout_ms: 60_000,
            },
        )
    }

    fn code(r: &Response) -> Option<ErrorCode> {
        r.refusal().map(|r| r.0)
    }

    /// A client that lost the answer to a job request retries it with the same id: it gets
    /// the job its first attempt created, not "already has a backup job" from itself (found by
    /// the nemesis, seed 7: a backup job refused as a conflict with the job it had created).
    #[test]
    fn a_retried_job_request_answers_the_job_the_first_attempt_created() {
        let mut cat = MemCatalog::default();
        let a = env("h1", "101");
        register(&mut cat, "h1", vec![a.clone()], 1_000);
        let admin = user(Role::Admin);
        let first = submit(
            &mut cat,
            admin.clone(),
            7,
            "backup",
            Some(a.eid),
            JobOptions::default(),
        );
        assert_eq!(state(&first), JobState::Queued);
        let again = submit(
            &mut cat,
            admin.clone(),
            7,
            "backup",
            Some(a.eid),
            JobOptions::default(),
        );
        assert_eq!(again, first, "the retry answers the same job");
        // A new request (another id) for the busy environment is still a conflict.
        let other = submit(
            &mut cat,
            admin,
            8,
            "backup",
            Some(a.eid),
            JobOptions::default(),
        );
        assert_eq!(code(&other), Some(ErrorCode::JobRunning));
        // Someone else presenting that id learns nothing about the job.
        let viewer_like = Principal::User {
            name: "mallory".into(),
            role: Role::Admin,
        };
        let theirs = submit(
            &mut cat,
            viewer_like,
            7,
            "backup",
            Some(a.eid),
            JobOptions::default(),
        );
        assert_eq!(code(&theirs), Some(ErrorCode::Conflict));
        assert!(!format!("{theirs:?}").contains("alice"), "{theirs:?}");
    }

    /// Hosts h1 and h2 with one environment each, and one backup of each taken there.
    fn two_hosts() -> (MemCatalog, EnvRecord, EnvRecord, BackupId, BackupId) {
        let mut cat = MemCatalog::default();
        let (a, b) = (env("h1", "101"), env("h2", "201"));
        register(&mut cat, "h1", vec![a.clone()], 1_000);
        register(&mut cat, "h2", vec![b.clone()], 1_000);
        let mut ids = Vec::new();
        for (e, h) in [(&a, "h1"), (&b, "h2")] {
            let mut r = record(e.eid, 1_700_000_000, "");
            r.host = h.into();
            match cat.run(Command::CommitBackup {
                record: r,
                job: None,
                now_ms: 0,
                session: None,
            }) {
                Response::Committed { id, .. } => ids.push(id),
                other => panic!("{other:?}"),
            }
        }
        (cat, a, b, ids[0], ids[1])
    }

    #[test]
    fn hosts_register_and_replace_their_environments() {
        let mut cat = MemCatalog::default();
        let (a, b) = (env("h1", "101"), env("h1", "102"));
        assert_eq!(
            register(&mut cat, "h1", vec![a.clone(), b.clone()], 1_000),
            Response::Registered { conflicts: vec![] }
        );
        assert_eq!(cat.host("h1").unwrap().unwrap().envs, vec![a.eid, b.eid]);
        // 102 vanished.
        register(&mut cat, "h1", vec![a.clone()], 2_000);
        assert!(cat.env(b.eid).unwrap().is_none());
        assert_eq!(cat.host("h1").unwrap().unwrap().seen_ms, 2_000);
        assert!(cat
            .run(Command::RegisterHost {
                host: HostRecord::default(),
                envs: vec![],
                now_ms: 0,
                takeover_after_ms: 0
            })
            .refusal()
            .is_some());
        // A host registers only itself.
        let r = cat.run_as(
            agent("h2"),
            Command::RegisterHost {
                host: HostRecord {
                    id: "h1".into(),
                    ..Default::default()
                },
                envs: vec![],
                now_ms: 0,
                takeover_after_ms: 0,
            },
        );
        assert_eq!(code(&r), Some(ErrorCode::PermissionDenied));
    }

    #[test]
    fn an_environment_is_never_taken_over_by_a_host() {
        let (mut cat, a, b, _, _) = two_hosts();
        // h1 reports h2's environment: refused, however long h2 has been silent.
        let mut stolen = b.clone();
        stolen.host = "h1".into();
        assert_eq!(
            register(
                &mut cat,
                "h1",
                vec![a.clone(), stolen.clone()],
                10_000_000_000
            ),
            Response::Registered {
                conflicts: vec![b.eid]
            }
        );
        assert_eq!(cat.env(b.eid).unwrap().unwrap().host, "h2");
        // Not even once h2 stopped reporting it: its backups were taken on h2.
        register(&mut cat, "h2", vec![], 10_000_000_000);
        assert!(cat.env(b.eid).unwrap().is_none());
        assert_eq!(
            register(
                &mut cat,
                "h1",
                vec![a.clone(), stolen.clone()],
                10_000_000_001
            ),
            Response::Registered {
                conflicts: vec![b.eid]
            }
        );
        // Nor a future environment of h2, whose id h1 can compute.
        let future = env("h2", "202");
        let mut claimed = future.clone();
        claimed.host = "h1".into();
        assert_eq!(
            register(&mut cat, "h1", vec![a.clone(), claimed], 10_000_000_002),
            Response::Registered {
                conflicts: vec![future.eid]
            }
        );
        // An operator moves it; then h1 reports it without conflict.
        assert_eq!(
            code(&cat.run_as(
                agent("h1"),
                Command::MoveEnv {
                    eid: b.eid,
                    host: "h1".into(),
                    now_ms: 0
                }
            )),
            Some(ErrorCode::PermissionDenied)
        );
        assert_eq!(
            cat.run_as(
                user(Role::Admin),
                Command::MoveEnv {
                    eid: b.eid,
                    host: "h1".into(),
                    now_ms: 0
                }
            ),
            Response::Done
        );
        assert_eq!(cat.env(b.eid).unwrap().unwrap().host, "h1");
        assert_eq!(
            register(&mut cat, "h1", vec![a, stolen], 10_000_000_003),
            Response::Registered { conflicts: vec![] }
        );
        // Moving to a host that never registered is refused.
        assert_eq!(
            code(&cat.run(Command::MoveEnv {
                eid: b.eid,
                host: "h9".into(),
                now_ms: 0
            })),
            Some(ErrorCode::HostNotFound)
        );
    }

    #[test]
    fn agents_run_jobs_on_their_own_environments_from_their_own_backups() {
        let (mut cat, a, b, b1, b2) = two_hosts();
        let restore = |backup: Option<BackupId>| JobOptions {
            backup,
            force: true,
            ..Default::default()
        };
        // Exploit: restore h2's backup into h1's environment.
        let r = submit(
            &mut cat,
            agent("h1"),
            1,
            "restore",
            Some(a.eid),
            restore(Some(b2)),
        );
        assert_eq!(code(&r), Some(ErrorCode::PermissionDenied));
        assert_eq!(r.rule(), Some(Rule::AgentOwnBackup), "{r:?}");
        // The same without naming the environment (the backup's is taken).
        let r = submit(&mut cat, agent("h1"), 2, "restore", None, restore(Some(b2)));
        assert_eq!(code(&r), Some(ErrorCode::PermissionDenied));
        // A backup that does not exist reads the same.
        let ghost = BackupId::new(b.eid, 1_600_000_000);
        let r2 = submit(
            &mut cat,
            agent("h1"),
            3,
            "restore",
            None,
            restore(Some(ghost)),
        );
        assert_eq!(
            r.refusal().unwrap().1.replace(&b2.to_string(), "X"),
            r2.refusal().unwrap().1.replace(&ghost.to_string(), "X")
        );
        // Exploit: a restore of h1's backup onto h2, or into another path.
        let mut onto = JobRequest {
            kind: "restore".into(),
            env: Some(a.eid),
            host: Some("h2".into()),
            options: JobOptions {
                backup: Some(b1),
                target_path: "/tmp/pwned".into(),
                ..Default::default()
            },
        };
        for by in [agent("h1"), agent("h2")] {
            let r = cat.run_as(
                by,
                Command::SubmitJob {
                    id: uuid::Uuid::from_u128(4),
                    request: onto.clone(),
                    now_ms: 5_000,
                    queue_timeout_ms: 60_000,
                },
            );
            assert_eq!(code(&r), Some(ErrorCode::PermissionDenied), "{r:?}");
        }
        onto.host = None;
        let r = cat.run_as(
            agent("h1"),
            Command::SubmitJob {
                id: uuid::Uuid::from_u128(4),
                request: onto.clone(),
                now_ms: 5_000,
                queue_timeout_ms: 60_000,
            },
        );
        assert_eq!(r.rule(), Some(Rule::AgentOwnPaths), "{r:?}");
        // Deleting and editing are never an agent's.
        for kind in ["delete", "update"] {
            let r = submit(
                &mut cat,
                agent("h1"),
                5,
                kind,
                Some(a.eid),
                restore(Some(b1)),
            );
            assert_eq!(code(&r), Some(ErrorCode::PermissionDenied));
        }
        // Its own restore from its own backup is fine, and privileged (same host).
        let r = submit(
            &mut cat,
            agent("h1"),
            6,
            "restore",
            Some(a.eid),
            restore(Some(b1)),
        );
        match r {
            Response::Job { job } => {
                assert_eq!(job.host, "h1");
                assert!(job.options.privileged);
                assert_eq!(job.requester, "agent:h1");
            }
            other => panic!("{other:?}"),
        }
        // While it runs, h1 may read that backup; never h2's.
        assert!(backup_readable(&cat, "h1", &b1).unwrap());
        assert!(!backup_readable(&cat, "h1", &b2).unwrap());
    }

    #[test]
    fn an_operator_restores_onto_another_host_without_privileges_unless_asked() {
        let (mut cat, a, _, b1, _) = two_hosts();
        let onto = |n: u128, allow: bool| Command::SubmitJob {
            id: uuid::Uuid::from_u128(n),
            request: JobRequest {
                kind: "restore".into(),
                env: None,
                host: Some("h2".into()),
                options: JobOptions {
                    backup: Some(b1),
                    target_path: "/vz/private/new".into(),
                    allow_privileged: allow,
                    privileged: true,
                    ..Default::default()
                },
            },
            now_ms: 5_000,
            queue_timeout_ms: 60_000,
        };
        // A viewer may not.
        assert_eq!(
            code(&cat.run_as(user(Role::Viewer), onto(1, false))),
            Some(ErrorCode::PermissionDenied)
        );
        let job = match cat.run_as(user(Role::Operator), onto(2, false)) {
            Response::Job { job } => job,
            other => panic!("{other:?}"),
        };
        assert_eq!((job.env, job.host.as_str()), (a.eid, "h2"));
        assert!(!job.options.privileged, "the request cannot set it");
        // While that job is active, h2's agent may read exactly that backup.
        assert!(backup_readable(&cat, "h2", &b1).unwrap());
        cat.run(Command::CancelJob {
            id: job.id,
            now_ms: 6_000,
        });
        assert!(!backup_readable(&cat, "h2", &b1).unwrap());
        match cat.run_as(user(Role::Operator), onto(3, true)) {
            Response::Job { job } => assert!(job.options.privileged),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn delete_and_update_jobs_run_in_the_decision_and_respect_protection() {
        let (mut cat, a, _, b1, _) = two_hosts();
        let on = |backup| JobOptions {
            backup: Some(backup),
            ..Default::default()
        };
        // An operator may not delete; an admin may, unless the backup is protected.
        assert_eq!(
            code(&submit(
                &mut cat,
                user(Role::Operator),
                1,
                "delete",
                None,
                on(b1)
            )),
            Some(ErrorCode::PermissionDenied)
        );
        let mut protect = on(b1);
        protect.edit = Some(cairn_core::job::BackupEdit {
            protected: Some(true),
            ..Default::default()
        });
        let r = submit(&mut cat, user(Role::Admin), 2, "update", None, protect);
        assert_eq!(state(&r), JobState::Succeeded);
        assert!(cat.backup(&b1).unwrap().unwrap().protected);
        let r = submit(
            &mut cat,
            user(Role::Admin),
            3,
            "delete",
            Some(a.eid),
            on(b1),
        );
        assert_eq!(code(&r), Some(ErrorCode::Protected), "{r:?}");
        assert!(cat.backup(&b1).unwrap().is_some());
        cat.run(Command::ProtectBackup {
            id: b1,
            protected: false,
        });
        let r = submit(&mut cat, user(Role::Admin), 4, "delete", None, on(b1));
        assert_eq!(state(&r), JobState::Succeeded);
        assert!(cat.backup(&b1).unwrap().is_none());
        // Those jobs never hold the environment's slot.
        assert_eq!(cat.active_job(a.eid).unwrap(), None);
    }

    /// Name uniqueness is decided at admission too: a backup job asking for a name another
    /// backup of the environment has (or an update renaming onto one) is refused with
    /// DuplicateName and stores no job; the same name in another environment, the backup's
    /// own name, and no name at all are admitted.
    #[test]
    fn a_job_asking_for_a_taken_name_is_refused_at_admission() {
        let (mut cat, a, b, a1, _) = two_hosts();
        let mut named = record(a.eid, 1_700_000_100, "nightly");
        named.host = "h1".into();
        let nightly = match cat.run(Command::CommitBackup {
            record: named,
            job: None,
            now_ms: 0,
            session: None,
        }) {
            Response::Committed { id, .. } => id,
            other => panic!("{other:?}"),
        };
        let backup = |name: &str| JobOptions {
            name: name.into(),
            ..Default::default()
        };
        let admin = || user(Role::Admin);
        let r = submit(
            &mut cat,
            admin(),
            10,
            "backup",
            Some(a.eid),
            backup("nightly"),
        );
        assert_eq!(code(&r), Some(ErrorCode::DuplicateName), "{r:?}");
        assert!(cat.job(&uuid::Uuid::from_u128(10)).unwrap().is_none());
        assert!(cat.active_job(a.eid).unwrap().is_none());
        // Another environment may use the name; a fresh name and no name are admitted.
        let r = submit(
            &mut cat,
            admin(),
            11,
            "backup",
            Some(b.eid),
            backup("nightly"),
        );
        assert_eq!(state(&r), JobState::Queued);
        let r = submit(
            &mut cat,
            admin(),
            12,
            "backup",
            Some(a.eid),
            backup("weekly"),
        );
        assert_eq!(state(&r), JobState::Queued);
        // Renames: onto another backup's name refused, onto its own name and a free one run.
        let rename = |target: BackupId, name: &str| JobOptions {
            backup: Some(target),
            edit: Some(cairn_core::job::BackupEdit {
                name: Some(name.into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = submit(&mut cat, admin(), 13, "update", None, rename(a1, "nightly"));
        assert_eq!(code(&r), Some(ErrorCode::DuplicateName), "{r:?}");
        assert!(cat.job(&uuid::Uuid::from_u128(13)).unwrap().is_none());
        let r = submit(
            &mut cat,
            admin(),
            14,
            "update",
            None,
            rename(nightly, "nightly"),
        );
        assert_eq!(state(&r), JobState::Succeeded);
        let r = submit(&mut cat, admin(), 15, "update", None, rename(a1, "monthly"));
        assert_eq!(state(&r), JobState::Succeeded);
    }

    /// A failed job carries the stable code of its failure, whoever ended it: what the
    /// adapters answer from (never its reason).
    #[test]
    fn failed_jobs_carry_the_code_of_their_failure() {
        let (mut cat, a, _, b1, _) = two_hosts();
        let mut named = record(a.eid, 1_700_000_100, "nightly");
        named.host = "h1".into();
        cat.run(Command::CommitBackup {
            record: named,
            job: None,
            now_ms: 0,
            session: None,
        });
        // An update job the catalog runs itself fails with the refusal's code (one admitted
        // before the name was taken; admission refuses it now, see
        // `a_job_asking_for_a_taken_name_is_refused_at_admission`).
        let mut rename = JobOptions {
            backup: Some(b1),
            ..Default::default()
        };
        rename.edit = Some(cairn_core::job::BackupEdit {
            name: Some("nightly".into()),
            ..Default::default()
        });
        let update = Job::new(
            uuid::Uuid::from_u128(1),
            JobKind::Update,
            a.eid,
            String::new(),
            "admin".into(),
            rename,
            0,
            0,
        );
        let failed = match super::run_update(&cat, update, 0).unwrap().response {
            Response::Job { job } => job,
            other => panic!("{other:?}"),
        };
        assert_eq!(failed.state, JobState::Failed);
        assert_eq!(failed.code, Some(ErrorCode::DuplicateName));
        // A delete job whose backup went meanwhile (the job was stored before).
        let ghost = BackupId::new(a.eid, 1_600_000_000);
        let mut del = Job::new(
            uuid::Uuid::from_u128(2),
            JobKind::Delete,
            a.eid,
            String::new(),
            "admin".into(),
            JobOptions {
                backup: Some(ghost),
                ..Default::default()
            },
            0,
            0,
        );
        del = *match super::run_delete(&cat, del.clone(), 0).unwrap().response {
            Response::Job { job } => job,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            (del.state, del.code),
            (JobState::Failed, Some(ErrorCode::BackupNotFound))
        );
        // An agent's failure keeps the code it reported; success keeps none.
        let id = uuid::Uuid::from_u128(3);
        cat.run(Command::CreateJob { job: job(3, a.eid) });
        cat.run(Command::ClaimJob {
            id,
            host: "h1".into(),
            now_ms: 2_000,
            lease_until_ms: 9_000,
        });
        let r = cat.run(Command::FinishJob {
            id,
            host: Some("h1".into()),
            state: JobState::Failed,
            reason: "reworded at will".into(),
            code: Some(ErrorCode::TargetChanged),
            result: JobResult::default(),
            now_ms: 3_000,
        });
        let Response::Job { job: finished } = r else {
            panic!("{r:?}")
        };
        assert_eq!(finished.code, Some(ErrorCode::TargetChanged));
        assert_eq!(
            cat.job(&id).unwrap().unwrap().code,
            Some(ErrorCode::TargetChanged)
        );
        // A job no agent took fails as its host being offline.
        cat.run(Command::CreateJob { job: job(4, a.eid) });
        let expired = cat.run(Command::ExpireJob {
            id: uuid::Uuid::from_u128(4),
            now_ms: 1_000_000,
        });
        let Response::Job { job: expired } = expired else {
            panic!("{expired:?}")
        };
        assert_eq!(expired.code, Some(ErrorCode::HostOffline));
    }

    /// Entries written before jobs carried codes still decode (no code), and a code is
    /// stored as its stable string.
    #[test]
    fn finish_entries_carry_the_code_as_its_string() {
        let cmd = Command::FinishJob {
            id: uuid::Uuid::from_u128(1),
            host: Some("h1".into()),
            state: JobState::Failed,
            reason: "r".into(),
            code: Some(ErrorCode::TargetInUse),
            result: JobResult::default(),
            now_ms: 1,
        };
        let json = serde_json::to_string(&cmd).unwrap();
        assert!(json.contains(r#""code":"E1017""#), "{json}");
        assert_eq!(serde_json::from_str::<Command>(&json).unwrap(), cmd);
        let old = json.replace(r#""code":"E1017","#, "");
        match serde_json::from_str::<Command>(&old).unwrap() {
            Command::FinishJob { code, .. } => assert_eq!(code, None),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn one_active_job_per_environment() {
        let mut cat = MemCatalog::default();
        let e = EnvId::derive("h1/101");
        assert_eq!(
            state(&cat.run(Command::CreateJob { job: job(1, e) })),
            JobState::Queued
        );
        let again = cat.run(Command::CreateJob { job: job(2, e) });
        assert_eq!(again.refusal().unwrap().0, ErrorCode::JobRunning);
        // Another environment is independent.
        let other = EnvId::derive("h1/102");
        assert!(cat
            .run(Command::CreateJob { job: job(3, other) })
            .refusal()
            .is_none());
        // Once the first ends, the slot is free.
        let id = uuid::Uuid::from_u128(1);
        cat.run(Command::ClaimJob {
            id,
            host: "h1".into(),
            now_ms: 2_000,
            lease_until_ms: 9_000,
        });
        assert_eq!(cat.active_job(e).unwrap(), Some(id));
        let r = cat.run(Command::FinishJob {
            id,
            host: Some("h1".into()),
            state: JobState::Succeeded,
            reason: String::new(),
            code: None,
            result: JobResult::default(),
            now_ms: 3_000,
        });
        assert_eq!(state(&r), JobState::Succeeded);
        assert_eq!(cat.active_job(e).unwrap(), None);
        assert!(cat
            .run(Command::CreateJob { job: job(2, e) })
            .refusal()
            .is_none());
        // Delete jobs never take the slot.
        let mut del = job(4, e);
        del.kind = JobKind::Delete;
        assert!(cat.run(Command::CreateJob { job: del }).refusal().is_none());
        assert_eq!(cat.active_job(e).unwrap(), Some(uuid::Uuid::from_u128(2)));
        // Only the cluster stores jobs as they are.
        assert_eq!(
            code(&cat.run_as(user(Role::Admin), Command::CreateJob { job: job(5, other) })),
            Some(ErrorCode::PermissionDenied)
        );
    }

    /// A backup's id is chosen when it is committed; the job it is committed in names it
    /// from then on, before the agent reports the job finished (a REST client polling the
    /// job's Status sees the new backup's URI as soon as it exists).
    #[test]
    fn a_commit_names_its_backup_in_the_running_job() {
        let mut cat = MemCatalog::default();
        let a = env("h1", "101");
        register(&mut cat, "h1", vec![a.clone()], 1_000);
        let id = uuid::Uuid::from_u128(1);
        cat.run(Command::CreateJob { job: job(1, a.eid) });
        cat.run(Command::ClaimJob {
            id,
            host: "h1".into(),
            now_ms: 2_000,
            lease_until_ms: 9_000,
        });
        let mut r = record(a.eid, 1_700_000_000, "");
        r.host = "h1".into();
        let committed = match cat.run_as(
            agent("h1"),
            Command::CommitBackup {
                record: r,
                job: Some(id),
                now_ms: 3_000,
                session: None,
            },
        ) {
            Response::Committed { id, .. } => id,
            other => panic!("{other:?}"),
        };
        let running = cat.job(&id).unwrap().unwrap();
        assert_eq!(running.state, JobState::Running);
        assert_eq!(running.result.backup, Some(committed));
        // A commit without a job (an admin's) leaves jobs alone.
        let mut other = record(a.eid, 1_700_000_100, "");
        other.host = "h1".into();
        cat.run(Command::CommitBackup {
            record: other,
            job: None,
            now_ms: 4_000,
            session: None,
        });
        assert_eq!(
            cat.job(&id).unwrap().unwrap().result.backup,
            Some(committed)
        );
    }

    /// The job's log as the catalog writes it through a whole life: each line at its
    /// command's time, naming who asked, the host that ran it, each new phase, the commit
    /// and the end; a cancel names its principal.
    #[test]
    fn the_catalog_logs_each_transition_of_a_job() {
        const T: i64 = 1_700_000_000;
        let mut cat = MemCatalog::default();
        let a = env("h1", "101");
        register(&mut cat, "h1", vec![a.clone()], 1_000);
        let job = submit_backup_at(&mut cat, 1, a.eid, T * 1000);
        let reserved = job.reserved_backup.unwrap();
        cat.run_as(
            agent("h1"),
            Command::ClaimJob {
                id: job.id,
                host: "h1".into(),
                now_ms: T * 1000 + 100,
                lease_until_ms: T * 1000 + 60_000,
            },
        );
        for (n, phase) in ["reading", "reading", "uploading"].iter().enumerate() {
            let r = cat.run_as(
                agent("h1"),
                Command::ReportProgress {
                    id: job.id,
                    host: "h1".into(),
                    progress: cairn_core::job::JobProgress {
                        phase: phase.to_string(),
                        percent: 10 * n as u32,
                        ..Default::default()
                    },
                    lease_until_ms: T * 1000 + 60_000,
                    now_ms: T * 1000 + 200 + n as i64,
                },
            );
            assert_eq!(r.refusal(), None);
        }
        cat.run_as(
            user(Role::Operator),
            Command::CancelJob {
                id: job.id,
                now_ms: T * 1000 + 250,
            },
        );
        job_commit(&mut cat, a.eid, job.id, T + 1);
        cat.run_as(
            agent("h1"),
            Command::FinishJob {
                id: job.id,
                host: Some("h1".into()),
                state: JobState::Succeeded,
                reason: String::new(),
                code: None,
                result: JobResult {
                    backup: Some(reserved),
                    message: "2 files, 5 bytes".into(),
                    ..Default::default()
                },
                now_ms: T * 1000 + 1_400,
            },
        );
        let stored = cat.job(&job.id).unwrap().unwrap();
        let lines: Vec<(i64, &str)> = stored
            .log
            .iter()
            .map(|l| (l.at_ms - T * 1000, l.text.as_str()))
            .collect();
        let alice = user(Role::Operator).name();
        let expected: Vec<(i64, String)> = vec![
            (
                0,
                format!(
                    "backup of environment {} for host \"h1\" asked by {}: the environment's default type",
                    a.eid,
                    user(Role::Admin).name()
                ),
            ),
            (0, format!("queued; the backup's id {reserved} is reserved")),
            (100, "started: claimed by the agent of host \"h1\"".into()),
            (200, "phase: reading (0 %, 0 of 0 files)".into()),
            (202, "phase: uploading (20 %, 0 of 0 files)".into()),
            (
                250,
                format!("cancel requested by {alice}; the agent stops at its next report"),
            ),
            (
                1_000,
                format!("backup {reserved} committed: 1 files, 10 bytes (5 stored)"),
            ),
            (
                1_400,
                format!("succeeded (backup {reserved}): 2 files, 5 bytes"),
            ),
        ];
        let expected: Vec<(i64, &str)> = expected.iter().map(|(t, s)| (*t, s.as_str())).collect();
        assert_eq!(lines, expected);

        // A queued job cancelled by a user; a delete the catalog runs at once.
        let queued = submit_backup_at(&mut cat, 2, a.eid, T * 1000 + 500);
        cat.run_as(
            user(Role::Operator),
            Command::CancelJob {
                id: queued.id,
                now_ms: T * 1000 + 600,
            },
        );
        let q = cat.job(&queued.id).unwrap().unwrap();
        let last = q.log.last().unwrap();
        assert_eq!(last.at_ms, T * 1000 + 600);
        assert_eq!(
            last.text,
            format!("cancelled: cancelled by {alice} before it started")
        );
        let Response::Job { job: del } = cat.run_as(
            user(Role::Admin),
            Command::SubmitJob {
                id: uuid::Uuid::from_u128(3),
                request: JobRequest {
                    kind: "delete".into(),
                    env: None,
                    host: None,
                    options: JobOptions {
                        backup: Some(reserved),
                        ..Default::default()
                    },
                },
                now_ms: T * 1000 + 700,
                queue_timeout_ms: 0,
            },
        ) else {
            panic!("delete not admitted")
        };
        assert_eq!(del.log.len(), 2, "{:?}", del.log);
        assert_eq!(
            del.log[0].text,
            format!(
                "delete of backup {reserved} asked by {}",
                user(Role::Admin).name()
            )
        );
        assert_eq!(del.log[1].at_ms, T * 1000 + 700);
        assert_eq!(
            del.log[1].text,
            format!("succeeded (backup {reserved}): 1 backup(s) deleted")
        );
    }

    /// A backup job's commit of the id it reserved reads none of the environment's backups,
    /// and neither does its repetition, refused because the id is taken (a scan there made
    /// every job commit cost O(backups of the environment)).
    #[test]
    fn a_job_commit_reads_none_of_the_environments_backups() {
        use crate::catalog::tests::Counting;
        const T: i64 = 1_700_000_000;
        let mut cat = MemCatalog::default();
        let a = env("h1", "101");
        register(&mut cat, "h1", vec![a.clone()], 1_000);
        for i in 0..300 {
            assert!(matches!(
                direct_commit(&mut cat, a.eid, T + i),
                Response::Committed { .. }
            ));
        }
        let job = submit_backup_at(&mut cat, 1, a.eid, (T + 1000) * 1000);
        let reserved = job.reserved_backup.expect("a reservation");
        let commit = crate::command::Proposal::system(Command::CommitBackup {
            record: record(a.eid, T + 2000, ""),
            job: Some(job.id),
            now_ms: (T + 2000) * 1000,
            session: None,
        });
        for round in 0..2 {
            let view = Counting {
                inner: &cat,
                records_read: Default::default(),
            };
            let d = crate::catalog::decide(&view, &commit).unwrap();
            assert_eq!(view.records_read.get(), 0, "round {round}");
            match (round, &d.response) {
                (0, Response::Committed { id, .. }) => assert_eq!(*id, reserved),
                (1, r) => assert_eq!(code(r), Some(ErrorCode::Conflict), "{r:?}"),
                (_, r) => panic!("round {round}: {r:?}"),
            }
            cat.apply(&d.writes);
        }
    }

    /// Submits a backup job `n` of `env` as an admin at `now_ms`; returns the job admitted.
    fn submit_backup_at(cat: &mut MemCatalog, n: u128, env: EnvId, now_ms: i64) -> Job {
        match cat.run_as(
            user(Role::Admin),
            Command::SubmitJob {
                id: uuid::Uuid::from_u128(n),
                request: JobRequest {
                    kind: "backup".into(),
                    env: Some(env),
                    host: None,
                    options: JobOptions::default(),
                },
                now_ms,
                queue_timeout_ms: 60_000,
            },
        ) {
            Response::Job { job } => *job,
            other => panic!("backup job {n} not admitted: {other:?}"),
        }
    }

    /// A backup as an admin commits it directly (no job).
    fn direct_commit(cat: &mut MemCatalog, env: EnvId, time: i64) -> Response {
        let mut r = record(env, time, "");
        r.host = "h1".into();
        cat.run_as(
            user(Role::Admin),
            Command::CommitBackup {
                record: r,
                job: None,
                now_ms: time * 1000,
                session: None,
            },
        )
    }

    /// The agent of h1 commits a backup (its clock says `time`) in job `job`.
    fn job_commit(cat: &mut MemCatalog, env: EnvId, job: uuid::Uuid, time: i64) -> Response {
        let mut r = record(env, time, "");
        r.host = "h1".into();
        cat.run_as(
            agent("h1"),
            Command::CommitBackup {
                record: r,
                job: Some(job),
                now_ms: time * 1000,
                session: None,
            },
        )
    }

    /// A backup job reserves its backup's id when it is admitted (after the environment's
    /// last id, at or after the admission time), so its Status can name the backup at once.
    /// While it is queued or running, no other backup of the environment commits; its own
    /// commit takes exactly the reserved id, whatever the agent's clock says, and retention
    /// then removes the oldest backup, never the job's.
    #[test]
    fn a_backup_job_reserves_its_id_and_commits_exactly_it() {
        const T: i64 = 1_700_000_000;
        let mut cat = MemCatalog::default();
        let a = env("h1", "101");
        let other = env("h1", "102");
        register(&mut cat, "h1", vec![a.clone(), other.clone()], 1_000);
        cat.run(Command::SetEnvConfig {
            env: a.eid,
            config: cairn_core::retention::EnvConfig {
                keep_max: Some(2),
                // An agent's commit triggers retention too: no grace for young backups.
                retention_grace_days: Some(0),
                ..Default::default()
            },
            now_ms: 0,
        });
        let Response::Committed { id: a1, .. } = direct_commit(&mut cat, a.eid, T) else {
            panic!("no commit")
        };
        let Response::Committed { id: a2, .. } = direct_commit(&mut cat, a.eid, T + 10) else {
            panic!("no commit")
        };

        // Admitted with a clock behind the last id: the id after it.
        let job = submit_backup_at(&mut cat, 1, a.eid, (T + 5) * 1000);
        let reserved = BackupId::new(a.eid, T + 11);
        assert_eq!(job.reserved_backup, Some(reserved));
        assert!(reserved.time > a2.time);
        assert_eq!(
            cat.last_id(a.eid).unwrap(),
            Some(T + 11),
            "the last id moves"
        );
        assert_eq!(
            cat.job(&job.id).unwrap().unwrap().reserved_backup,
            Some(reserved)
        );
        assert!(
            cat.backup(&reserved).unwrap().is_none(),
            "reserved, not made"
        );

        // A direct backup of the environment, queued job: refused, nothing written.
        let refused = direct_commit(&mut cat, a.eid, T + 20);
        assert_eq!(code(&refused), Some(ErrorCode::JobRunning), "{refused:?}");
        let (_, message) = refused.refusal().unwrap();
        assert!(
            message.contains(&format!(
                "environment {} has a backup job {} in progress",
                a.eid, job.id
            )),
            "{message}"
        );
        assert_eq!(cat.backups(Some(a.eid)).unwrap().len(), 2);
        assert_eq!(cat.last_id(a.eid).unwrap(), Some(T + 11));
        // Another environment is not held back.
        assert!(matches!(
            direct_commit(&mut cat, other.eid, T + 20),
            Response::Committed { .. }
        ));

        cat.run(Command::ClaimJob {
            id: job.id,
            host: "h1".into(),
            now_ms: (T + 30) * 1000,
            lease_until_ms: (T + 90) * 1000,
        });
        // Running: still refused.
        assert_eq!(
            code(&direct_commit(&mut cat, a.eid, T + 40)),
            Some(ErrorCode::JobRunning)
        );
        // The job's own commit gets exactly the reserved id, though its agent's clock says
        // later; retention (keep 2) removes the oldest, not the job's backup.
        let answer = job_commit(&mut cat, a.eid, job.id, T + 50);
        assert_eq!(
            answer,
            Response::Committed {
                id: reserved,
                removed: vec![a1]
            }
        );
        assert!(cat.backup(&reserved).unwrap().is_some());
        assert!(cat.backup(&a2).unwrap().is_some());
        assert!(cat.backup(&a1).unwrap().is_none());
        assert_eq!(cat.last_id(a.eid).unwrap(), Some(T + 11));
        assert_eq!(
            cat.job(&job.id).unwrap().unwrap().result.backup,
            Some(reserved)
        );
        cat.run(Command::FinishJob {
            id: job.id,
            host: Some("h1".into()),
            state: JobState::Succeeded,
            reason: String::new(),
            code: None,
            result: JobResult {
                backup: Some(reserved),
                ..Default::default()
            },
            now_ms: (T + 60) * 1000,
        });
        // Ended: direct backups commit again, after the job's id.
        let Response::Committed { id: a4, removed } = direct_commit(&mut cat, a.eid, T + 1) else {
            panic!("no commit after the job ended")
        };
        assert_eq!(a4.time, T + 12);
        assert_eq!(
            removed,
            vec![a2],
            "retention keeps the job's backup, the newer"
        );

        // Admitted with a clock ahead of the last id: the admission second itself.
        let later = submit_backup_at(&mut cat, 2, a.eid, (T + 500) * 1000 + 999);
        assert_eq!(later.reserved_backup, Some(BackupId::new(a.eid, T + 500)));
        // Restore and delete jobs reserve nothing.
        assert_eq!(
            cat.run(Command::CancelJob {
                id: later.id,
                now_ms: (T + 501) * 1000
            })
            .refusal(),
            None
        );
        let restore = submit(
            &mut cat,
            user(Role::Admin),
            3,
            "restore",
            Some(a.eid),
            JobOptions::default(),
        );
        let Response::Job { job: restore } = restore else {
            panic!("{restore:?}")
        };
        assert_eq!(restore.reserved_backup, None);
    }

    /// A backup job that fails or is cancelled leaves its reserved id unused: the next
    /// commit of the environment gets a later one (ids are never given twice), and a commit
    /// that names a job which is no longer running takes a fresh id too.
    #[test]
    fn a_failed_or_cancelled_backup_job_leaves_its_id_unused() {
        const T: i64 = 1_700_000_000;
        let mut cat = MemCatalog::default();
        let a = env("h1", "101");
        register(&mut cat, "h1", vec![a.clone()], 1_000);
        let job = submit_backup_at(&mut cat, 1, a.eid, T * 1000);
        let reserved = job.reserved_backup.unwrap();
        assert_eq!(reserved, BackupId::new(a.eid, T));
        cat.run(Command::ClaimJob {
            id: job.id,
            host: "h1".into(),
            now_ms: (T + 1) * 1000,
            lease_until_ms: (T + 90) * 1000,
        });
        assert_eq!(
            state(&cat.run(Command::FinishJob {
                id: job.id,
                host: Some("h1".into()),
                state: JobState::Failed,
                reason: "disk gone".into(),
                code: None,
                result: JobResult::default(),
                now_ms: (T + 2) * 1000,
            })),
            JobState::Failed
        );
        // A commit naming the failed job (an operator's; its agent may no longer commit in
        // it) takes a fresh id, not the reserved one.
        let mut r = record(a.eid, T, "");
        r.host = "h1".into();
        let Response::Committed { id: late, .. } = cat.run_as(
            user(Role::Admin),
            Command::CommitBackup {
                record: r,
                job: Some(job.id),
                now_ms: T * 1000,
                session: None,
            },
        ) else {
            panic!("no commit")
        };
        assert!(late.time > reserved.time, "{late} after {reserved}");
        let Response::Committed { id: direct, .. } = direct_commit(&mut cat, a.eid, T) else {
            panic!("no commit after the job failed")
        };
        assert!(direct.time > late.time);

        // Cancelled while queued: the same.
        let queued = submit_backup_at(&mut cat, 2, a.eid, T * 1000);
        let reserved = queued.reserved_backup.unwrap();
        assert!(reserved.time > direct.time);
        assert_eq!(
            code(&direct_commit(&mut cat, a.eid, T)),
            Some(ErrorCode::JobRunning)
        );
        cat.run(Command::CancelJob {
            id: queued.id,
            now_ms: (T + 3) * 1000,
        });
        let Response::Committed { id: next, .. } = direct_commit(&mut cat, a.eid, T) else {
            panic!("no commit after the job was cancelled")
        };
        assert!(next.time > reserved.time, "{next} after {reserved}");
        assert!(cat.backup(&reserved).unwrap().is_none(), "never used");
    }

    /// The job's commit refuses an id out of order rather than committing it: a catalog in
    /// which the environment was given a later id meanwhile (which the rules never allow)
    /// gets a refusal, never a backup older than one it already acknowledged.
    #[test]
    fn a_reserved_id_is_never_committed_out_of_order() {
        const T: i64 = 1_700_000_000;
        let mut cat = MemCatalog::default();
        let a = env("h1", "101");
        register(&mut cat, "h1", vec![a.clone()], 1_000);
        let job = submit_backup_at(&mut cat, 1, a.eid, T * 1000);
        cat.run(Command::ClaimJob {
            id: job.id,
            host: "h1".into(),
            now_ms: (T + 1) * 1000,
            lease_until_ms: (T + 90) * 1000,
        });
        // Forced past the rules: a later id given behind the job's back.
        cat.apply(&[Write::PutLastId {
            env: a.eid,
            time: T + 5,
        }]);
        let refused = job_commit(&mut cat, a.eid, job.id, T + 2);
        assert_eq!(code(&refused), Some(ErrorCode::Conflict), "{refused:?}");
        assert!(cat.backups(Some(a.eid)).unwrap().is_empty());
    }

    /// Submits a backup job of `env` on h1 asking to replace `replace`, claims it and
    /// commits a backup at `time` in it, as its agent would; returns the commit's answer and
    /// the job as the catalog then holds it.
    fn replace_in_commit(
        cat: &mut MemCatalog,
        n: u128,
        env: EnvId,
        time: i64,
        replace: cairn_core::job::Replace,
    ) -> (Response, Job) {
        let options = JobOptions {
            replace: Some(replace),
            ..Default::default()
        };
        let r = submit(cat, user(Role::Admin), n, "backup", Some(env), options);
        assert_eq!(state(&r), JobState::Queued, "{r:?}");
        let id = uuid::Uuid::from_u128(n);
        cat.run(Command::ClaimJob {
            id,
            host: "h1".into(),
            now_ms: 6_000,
            lease_until_ms: 60_000,
        });
        let mut rec = record(env, time, "");
        rec.host = "h1".into();
        let answer = cat.run_as(
            agent("h1"),
            Command::CommitBackup {
                record: rec,
                job: Some(id),
                now_ms: 7_000,
                session: None,
            },
        );
        (answer, cat.job(&id).unwrap().unwrap())
    }

    /// "Replace a backup" is decided in the commit of the backup job that asks for it: the
    /// named (or the oldest) backup goes in the same write as the new one arrives, the answer
    /// and the job's result name it, and the agent finishing the job cannot change that. A
    /// protected or vanished victim is kept and the backup is committed all the same, the job
    /// saying why. Admission: only who may delete asks for it, for a backup job, and for a
    /// backup of the job's own environment.
    #[test]
    fn a_backup_job_replaces_a_backup_in_its_commit() {
        use cairn_core::job::Replace;
        let (mut cat, a, b, a1, b1) = two_hosts();
        let mut named = record(a.eid, 1_700_000_100, "mid");
        named.host = "h1".into();
        let Response::Committed { id: a2, .. } = cat.run(Command::CommitBackup {
            record: named,
            job: None,
            now_ms: 0,
            session: None,
        }) else {
            panic!("no commit")
        };

        // The named one: removed with its name, in the commit's own answer.
        let (answer, job) =
            replace_in_commit(&mut cat, 20, a.eid, 1_700_000_200, Replace::Backup(a2));
        let Response::Committed { id: a3, removed } = answer else {
            panic!("{answer:?}")
        };
        assert_eq!(removed, vec![a2]);
        assert!(cat.backup(&a2).unwrap().is_none());
        assert_eq!(cat.name_owner(a.eid, "mid").unwrap(), None);
        assert_eq!(job.result.backup, Some(a3));
        assert_eq!(
            (job.result.replaced, job.result.replace_refused),
            (Some(a2), None)
        );
        // The agent's report finishes the job; what the commit decided stays.
        cat.run(Command::FinishJob {
            id: job.id,
            host: Some("h1".into()),
            state: JobState::Succeeded,
            reason: String::new(),
            code: None,
            result: JobResult {
                backup: Some(a3),
                ..Default::default()
            },
            now_ms: 8_000,
        });
        let done = cat.job(&job.id).unwrap().unwrap();
        assert_eq!(done.state, JobState::Succeeded);
        assert_eq!(done.result.replaced, Some(a2));

        // The oldest, protected: kept; the backup is committed and the job says why.
        cat.run(Command::ProtectBackup {
            id: a1,
            protected: true,
        });
        let (answer, job) = replace_in_commit(&mut cat, 21, a.eid, 1_700_000_300, Replace::Oldest);
        let Response::Committed { id: a4, removed } = answer else {
            panic!("{answer:?}")
        };
        assert!(removed.is_empty(), "{removed:?}");
        assert!(cat.backup(&a1).unwrap().is_some());
        assert!(cat.backup(&a4).unwrap().is_some());
        assert_eq!(job.result.replaced, Some(a1));
        assert_eq!(job.result.replace_refused, Some(ErrorCode::Protected));
        assert!(!job.result.replace_reason.is_empty());
        cat.run(Command::ExpireJob {
            id: job.id,
            now_ms: 100_000,
        });

        // The oldest, unprotected now: removed.
        cat.run(Command::ProtectBackup {
            id: a1,
            protected: false,
        });
        let (answer, job) = replace_in_commit(&mut cat, 22, a.eid, 1_700_000_400, Replace::Oldest);
        assert!(
            matches!(&answer, Response::Committed { removed, .. } if *removed == vec![a1]),
            "{answer:?}"
        );
        assert!(cat.backup(&a1).unwrap().is_none());
        cat.run(Command::ExpireJob {
            id: job.id,
            now_ms: 100_000,
        });

        // One that is gone (removed meanwhile): kept as not found; the commit stands.
        let (answer, job) =
            replace_in_commit(&mut cat, 23, a.eid, 1_700_000_500, Replace::Backup(a2));
        assert!(
            matches!(&answer, Response::Committed { removed, .. } if removed.is_empty()),
            "{answer:?}"
        );
        assert_eq!(job.result.replace_refused, Some(ErrorCode::BackupNotFound));

        // Admission.
        let ask = |replace| JobOptions {
            replace: Some(replace),
            ..Default::default()
        };
        let r = submit(
            &mut cat,
            user(Role::Operator),
            30,
            "backup",
            Some(a.eid),
            ask(Replace::Oldest),
        );
        assert_eq!(code(&r), Some(ErrorCode::PermissionDenied), "{r:?}");
        let r = submit(
            &mut cat,
            user(Role::Admin),
            31,
            "backup",
            Some(a.eid),
            ask(Replace::Backup(b1)),
        );
        assert_eq!(code(&r), Some(ErrorCode::InvalidArgument), "{r:?}");
        let mut restore = ask(Replace::Oldest);
        restore.backup = Some(b1);
        let r = submit(
            &mut cat,
            user(Role::Admin),
            32,
            "restore",
            Some(b.eid),
            restore,
        );
        assert_eq!(code(&r), Some(ErrorCode::InvalidArgument), "{r:?}");
        assert!(cat.backup(&b1).unwrap().is_some());
    }

    #[test]
    fn transitions_are_checked_and_expiry_frees_the_slot() {
        let mut cat = MemCatalog::default();
        let e = EnvId::derive("h1/101");
        let id = uuid::Uuid::from_u128(1);
        cat.run(Command::CreateJob { job: job(1, e) });
        let wrong = cat.run(Command::ClaimJob {
            id,
            host: "h2".into(),
            now_ms: 2_000,
            lease_until_ms: 5_000,
        });
        assert_eq!(wrong.refusal().unwrap().0, ErrorCode::PermissionDenied);
        cat.run(Command::ClaimJob {
            id,
            host: "h1".into(),
            now_ms: 2_000,
            lease_until_ms: 5_000,
        });
        let early = cat.run(Command::ExpireJob { id, now_ms: 4_000 });
        assert_eq!(early.refusal().unwrap().0, ErrorCode::Conflict);
        assert_eq!(
            state(&cat.run(Command::ExpireJob { id, now_ms: 6_000 })),
            JobState::Failed
        );
        assert_eq!(cat.active_job(e).unwrap(), None);
        let late = cat.run(Command::FinishJob {
            id,
            host: Some("h1".into()),
            state: JobState::Succeeded,
            reason: String::new(),
            code: None,
            result: JobResult::default(),
            now_ms: 7_000,
        });
        assert_eq!(
            late.refusal().unwrap().0,
            ErrorCode::Conflict,
            "a failed job stays failed"
        );
        let missing = cat.run(Command::CancelJob {
            id: uuid::Uuid::from_u128(99),
            now_ms: 0,
        });
        assert_eq!(missing.refusal().unwrap().0, ErrorCode::JobNotFound);
        assert_eq!(
            cat.run(Command::DeleteJobs {
                ids: vec![id, uuid::Uuid::from_u128(99)]
            }),
            Response::Removed { count: 1 }
        );
        assert!(cat.job(&id).unwrap().is_none());
    }

    #[test]
    fn tokens_are_stored_once_and_revoked() {
        let mut cat = MemCatalog::default();
        let rec = cairn_core::job::TokenRecord {
            id: "t1".into(),
            host: "h1".into(),
            hash: "00".into(),
            created_ms: 1,
            name: String::new(),
            role: None,
        };
        assert_eq!(
            cat.run(Command::PutToken {
                record: rec.clone()
            }),
            Response::Done
        );
        assert!(cat
            .run(Command::PutToken { record: rec })
            .refusal()
            .is_some());
        assert_eq!(
            cat.run(Command::RevokeTokens {
                ids: vec!["t1".into(), "t2".into()]
            }),
            Response::Removed { count: 1 }
        );
        assert!(cat.token("t1").unwrap().is_none());
    }
}
