//! The catalog's decisions about hosts, environments, jobs and agent tokens.
//!
//! Job transitions themselves are pure methods of [`cairn_core::job::Job`]; this module
//! loads the job, applies the transition, and keeps the per-environment "active job" index in
//! step: it is set when an agent job is queued and cleared in the same write that makes the
//! job final, so an environment never has two backups or restores at once and never stays
//! blocked by a finished job.

use cairn_core::job::{Job, JobRefusal};
use cairn_core::ErrorCode;

use crate::catalog::{CatalogRead, Decision, Write};
use crate::command::{Command, Response};

fn done(writes: Vec<Write>, response: Response) -> Decision {
    Decision { writes, response }
}

fn refusal(r: JobRefusal) -> Decision {
    match r {
        JobRefusal::State(m) => Decision::refuse(ErrorCode::Conflict, m),
        JobRefusal::WrongHost(m) => Decision::refuse(ErrorCode::PermissionDenied, m),
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
    Ok(view
        .job(id)?
        .ok_or_else(|| Decision::refuse(ErrorCode::NotFound, format!("job {id} does not exist"))))
}

/// Decides the agent-related commands (see [`crate::catalog::decide`]).
pub(crate) fn decide<V: CatalogRead + ?Sized>(
    view: &V,
    cmd: &Command,
) -> Result<Decision, V::Error> {
    match cmd {
        Command::RegisterHost {
            host,
            envs,
            now_ms,
            takeover_after_ms,
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
                if accepted.contains(&env.eid) {
                    continue;
                }
                if let Some(existing) = view.env(env.eid)? {
                    if existing.host != host.id {
                        let other_alive = match view.host(&existing.host)? {
                            Some(h) => now_ms - h.seen_ms < *takeover_after_ms,
                            None => false,
                        };
                        if other_alive {
                            conflicts.push(env.eid);
                            continue;
                        }
                    }
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
                                ErrorCode::Conflict,
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
        } => {
            let mut job = match load(view, id)? {
                Ok(j) => j,
                Err(d) => return Ok(d),
            };
            match job.report(host, progress.clone(), *lease_until_ms) {
                Ok(()) => job_writes(view, job),
                Err(r) => Ok(refusal(r)),
            }
        }
        Command::FinishJob {
            id,
            host,
            state,
            reason,
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
            match job.cancel(*now_ms) {
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

/// `decide` routes only the commands above here.
fn unreachable_command<E>(cmd: &Command) -> Result<Decision, E> {
    Ok(Decision::refuse(
        ErrorCode::Internal,
        format!("command {} is not an agent command", cmd.kind()),
    ))
}

#[cfg(test)]
mod tests {
    use cairn_core::job::{EnvRecord, HostRecord, JobKind, JobOptions, JobResult, JobState};
    use cairn_core::EnvId;

    use crate::catalog::tests::MemCatalog;
    use crate::command::{Command, Response};

    use super::*;

    fn env(host: &str, name: &str) -> EnvRecord {
        EnvRecord {
            eid: EnvId::derive(&format!("{host}/{name}")),
            host: host.into(),
            name: name.into(),
            path: format!("/vz/private/{name}"),
            ..Default::default()
        }
    }

    fn register(cat: &mut MemCatalog, host: &str, envs: Vec<EnvRecord>, now: i64) -> Response {
        cat.run(Command::RegisterHost {
            host: HostRecord {
                id: host.into(),
                hostname: format!("{host}.example"),
                ..Default::default()
            },
            envs,
            now_ms: now,
            takeover_after_ms: 60_000,
        })
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
        // Another live host cannot take 101 over …
        let mut stolen = a.clone();
        stolen.host = "h2".into();
        assert_eq!(
            register(&mut cat, "h2", vec![stolen.clone()], 3_000),
            Response::Registered {
                conflicts: vec![a.eid]
            }
        );
        assert_eq!(cat.env(a.eid).unwrap().unwrap().host, "h1");
        // … but takes it once h1 has been silent for the takeover time.
        register(&mut cat, "h2", vec![stolen], 2_000 + 60_000);
        assert_eq!(cat.env(a.eid).unwrap().unwrap().host, "h2");
        assert!(cat
            .run(Command::RegisterHost {
                host: HostRecord::default(),
                envs: vec![],
                now_ms: 0,
                takeover_after_ms: 0
            })
            .refusal()
            .is_some());
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
        assert_eq!(again.refusal().unwrap().0, ErrorCode::Conflict);
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
        assert_eq!(missing.refusal().unwrap().0, ErrorCode::NotFound);
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
