//! Authorization, decided once: whether a principal may do what a command or a read asks,
//! as a pure function of (catalog, principal, request, now).
//!
//! The table in `cairn_core::auth` says which access each entry point needs and which
//! principals that access admits. Where it admits an agent only for its own host
//! ([`Admission::OwnHost`]), this module checks the thing the request names against the
//! catalog. The rules, each named in its refusal:
//!
//! | rule | an agent of host H … |
//! |---|---|
//! | `agent-own-host` | acts for H only (registering, job streams, claims, reports) |
//! | `agent-own-env` | acts on environments registered to H only |
//! | `agent-own-backup` | reads backups of H's environments, and the one backup an active restore job on H reads (a restore onto H of another host's environment, which an operator asked for) |
//! | `agent-own-job` | sees, cancels, claims, reports and ends H's jobs only |
//! | `agent-commit-in-job` | opens a backup session and commits a backup only for the backup job of that environment H is running, recorded as taken on H |
//! | `agent-own-session` | closes only sessions H opened |
//! | `agent-own-paths` | queues restores only into the environment's own path, on H |
//!
//! A refusal about a backup, job or session reads the same whether it exists or not, so a
//! refusal is no oracle for guessed ids. Commands run [`admit`] inside the catalog's
//! `decide` (the leader, followers and a replay agree); reads run [`authorize`] over the
//! answering node's catalog (`MetaNode::authorize`).

use cairn_core::auth::{Access, Admission, Principal, Rule};
use cairn_core::job::{JobKind, JobState};
use cairn_core::{BackupId, EnvId};

use crate::command::Command;
use crate::view::CatalogRead;

pub use crate::view::Refusal;

/// What a request names, for the rules that bind agents to their own host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// Nothing: an agent is refused where the table admits it only for its own host.
    Nothing,
    Host(String),
    Env(EnvId),
    /// A backup's record or content.
    Backup(BackupId),
    Job(uuid::Uuid),
    Session(uuid::Uuid),
}

fn deny(rule: Rule, message: String) -> Refusal {
    Refusal::denied(rule, message)
}

/// Decides whether `who` may make a request of `access` naming `subject`.
pub fn authorize<V: CatalogRead + ?Sized>(
    view: &V,
    who: &Principal,
    access: Access,
    subject: &Subject,
) -> Result<Result<(), Refusal>, V::Error> {
    match access.admits(who) {
        Admission::Allowed => Ok(Ok(())),
        Admission::Denied(why) => Ok(Err(deny(Rule::AccessTable, why))),
        Admission::OwnHost => match who {
            Principal::Agent { host } => own(view, host, subject),
            // The table admits only agents for their own host.
            _ => Ok(Err(deny(
                Rule::AccessTable,
                format!("{} is not bound to a host", who.describe()),
            ))),
        },
    }
}

/// Whether `subject` belongs to `host`, for an agent of that host.
fn own<V: CatalogRead + ?Sized>(
    view: &V,
    host: &str,
    subject: &Subject,
) -> Result<Result<(), Refusal>, V::Error> {
    let who = format!("the agent token of host {host:?}");
    Ok(match subject {
        Subject::Nothing => Err(deny(Rule::AgentOwnHost, format!(
            "rule agent-own-host: {who} must name what it acts on (an environment, backup or job of its host)"
        ))),
        Subject::Host(h) if h == host => Ok(()),
        Subject::Host(h) => Err(deny(Rule::AgentOwnHost, format!(
            "rule agent-own-host: {who} acts only for its own host, not for {h:?}"
        ))),
        Subject::Env(e) => {
            if env_host(view, *e)?.as_deref() == Some(host) {
                Ok(())
            } else {
                Err(deny(Rule::AgentOwnEnv, format!(
                    "rule agent-own-env: {who} acts only on environments its host runs; {e} is not one"
                )))
            }
        }
        Subject::Backup(b) => {
            if backup_readable(view, host, b)? {
                Ok(())
            } else {
                Err(deny(Rule::AgentOwnBackup, not_own_backup(host, b)))
            }
        }
        Subject::Job(j) => match view.job(j)? {
            Some(job) if job.host == host => Ok(()),
            _ => Err(deny(Rule::AgentOwnJob, format!(
                "rule agent-own-job: {who} sees and acts on its own host's jobs only; job {j} is not one, or does not exist"
            ))),
        },
        Subject::Session(s) => match view.session(s)? {
            Some(session) if session.host != host => Err(deny(Rule::AgentOwnSession, format!(
                "rule agent-own-session: {who} closes only sessions its host opened; session {s} is not one"
            ))),
            // Closing a session that is gone changes nothing.
            _ => Ok(()),
        },
    })
}

/// The refusal of a backup an agent may not read, the same whether it exists or not.
pub(crate) fn not_own_backup(host: &str, b: &BackupId) -> String {
    format!(
        "rule agent-own-backup: the agent token of host {host:?} reads only backups of environments its host runs; backup {b} is not one, or does not exist"
    )
}

/// The host an environment is registered to.
fn env_host<V: CatalogRead + ?Sized>(view: &V, env: EnvId) -> Result<Option<String>, V::Error> {
    Ok(view.env(env)?.map(|e| e.host))
}

/// Whether an agent of `host` may read backup `b`: it exists, and its environment runs on
/// `host` or an active restore job on `host` reads exactly it.
pub(crate) fn backup_readable<V: CatalogRead + ?Sized>(
    view: &V,
    host: &str,
    b: &BackupId,
) -> Result<bool, V::Error> {
    if view.backup(b)?.is_none() {
        return Ok(false);
    }
    if env_host(view, b.env)?.as_deref() == Some(host) {
        return Ok(true);
    }
    let Some(active) = view.active_job(b.env)? else {
        return Ok(false);
    };
    Ok(view.job(&active)?.is_some_and(|j| {
        j.host == host
            && !j.state.is_final()
            && matches!(j.kind, JobKind::Restore | JobKind::SelectiveRestore)
            && j.options.backup == Some(*b)
    }))
}

/// Whether `who` may remove history (delete backups, or have retention remove backups
/// younger than the grace).
pub fn may_delete(who: &Principal) -> bool {
    Access::Administer.admits(who) == Admission::Allowed
}

/// Decides whether `by` may propose `cmd`. `SubmitJob` is admitted by the job decision
/// itself (it resolves the request first); everything else here.
pub fn admit<V: CatalogRead + ?Sized>(
    view: &V,
    by: &Principal,
    cmd: &Command,
) -> Result<Result<(), Refusal>, V::Error> {
    let (access, subject) = match cmd {
        Command::CommitBackup { record, .. } => (Access::Commit, Subject::Env(record.id.env)),
        Command::OpenSession { session } => (Access::Commit, Subject::Env(session.env)),
        Command::CloseSession { id } | Command::RenewSession { id, .. } => {
            (Access::Commit, Subject::Session(*id))
        }
        Command::DeleteBackup { .. }
        | Command::UpdateBackup { .. }
        | Command::ProtectBackup { .. }
        | Command::SetPlacement { .. }
        | Command::SetEnvConfig { .. }
        | Command::MoveEnv { .. }
        | Command::PutToken { .. }
        | Command::RevokeTokens { .. }
        | Command::PutJoinToken { .. }
        | Command::RevokeJoinTokens { .. } => (Access::Administer, Subject::Nothing),
        // The join token itself is checked by the decision (`crate::join`).
        Command::RedeemJoinToken { .. } => (Access::Enroll, Subject::Nothing),
        Command::RegisterHost { host, .. } => (Access::AgentWork, Subject::Host(host.id.clone())),
        Command::ClaimJob { id, host, .. } | Command::ReportProgress { id, host, .. } => {
            match own_host_first(view, by, host)? {
                Err(r) => return Ok(Err(r)),
                Ok(()) => (Access::AgentWork, Subject::Job(*id)),
            }
        }
        Command::FinishJob {
            id, host: Some(h), ..
        } => match own_host_first(view, by, h)? {
            Err(r) => return Ok(Err(r)),
            Ok(()) => (Access::AgentWork, Subject::Job(*id)),
        },
        // Jobs the cluster ends itself (delete and update jobs, expiry).
        Command::FinishJob { host: None, .. }
        | Command::ExpireJob { .. }
        | Command::DeleteJobs { .. }
        | Command::SetClusterId { .. }
        | Command::CreateJob { .. } => (Access::Internal, Subject::Nothing),
        Command::CancelJob { id, .. } => (Access::Operate, Subject::Job(*id)),
        Command::SubmitJob { .. } => return Ok(Ok(())),
    };
    let verdict = authorize(view, by, access, &subject)?;
    if verdict.is_err() {
        return Ok(verdict);
    }
    Ok(match (by, cmd) {
        (Principal::Agent { host }, Command::CommitBackup { record, job, .. }) => {
            commit_in_job(view, host, record, *job)?
        }
        (Principal::Agent { host }, Command::OpenSession { session }) if session.host != *host => {
            Err(deny(Rule::AgentOwnHost, format!(
                "rule agent-own-host: the agent token of host {host:?} opens sessions for its own host, not for {:?}",
                session.host
            )))
        }
        // A session holds garbage collection back: an agent opens one only for the backup
        // job it runs, so a compromised host cannot stall collection with sessions.
        (Principal::Agent { host }, Command::OpenSession { session }) => {
            let active = match view.active_job(session.env)? {
                Some(id) => view.job(&id)?,
                None => None,
            };
            if active.is_some_and(|j| {
                j.kind == JobKind::Backup && j.state == JobState::Running && j.host == *host
            }) {
                Ok(())
            } else {
                Err(deny(Rule::AgentCommitInJob, format!(
                    "rule agent-commit-in-job: the agent token of host {host:?} opens a backup session of {} only for a backup job of it that its host is running",
                    session.env
                )))
            }
        }
        _ => Ok(()),
    })
}

/// For an agent, the `host` a job command names must be its own.
fn own_host_first<V: CatalogRead + ?Sized>(
    view: &V,
    by: &Principal,
    named: &str,
) -> Result<Result<(), Refusal>, V::Error> {
    match by {
        Principal::Agent { .. } => own(
            view,
            by.agent_host().unwrap_or_default(),
            &Subject::Host(named.to_string()),
        ),
        _ => Ok(Ok(())),
    }
}

/// An agent commits a backup only as the running backup job of that environment on its
/// host, and only as taken on its host.
fn commit_in_job<V: CatalogRead + ?Sized>(
    view: &V,
    host: &str,
    record: &cairn_core::BackupRecord,
    job: Option<uuid::Uuid>,
) -> Result<Result<(), Refusal>, V::Error> {
    let env = record.id.env;
    if record.host != host {
        return Ok(Err(deny(Rule::AgentCommitInJob, format!(
            "rule agent-commit-in-job: the agent token of host {host:?} commits backups taken on its own host, not on {:?}",
            record.host
        ))));
    }
    let running = match job {
        Some(id) => view.job(&id)?.is_some_and(|j| {
            j.kind == JobKind::Backup
                && j.state == JobState::Running
                && j.host == host
                && j.env == env
        }),
        None => false,
    };
    Ok(if running {
        Ok(())
    } else {
        Err(deny(Rule::AgentCommitInJob, format!(
            "rule agent-commit-in-job: the agent token of host {host:?} commits a backup of {env} only for a backup job of it that its host is running{}",
            match job {
                Some(id) => format!("; job {id} is not one"),
                None => "; the commit names no job".into(),
            }
        )))
    })
}

#[cfg(test)]
mod tests {
    use cairn_core::auth::Role;
    use cairn_core::job::{EnvRecord, HostRecord};
    use cairn_core::{BackupId, ErrorCode};

    use super::*;
    use crate::catalog::tests::{agent, record, user, MemCatalog};
    use crate::command::{Command, Proposal, Response};

    /// A catalog with hosts h1 and h2, each running one environment with one backup.
    fn two_hosts() -> (MemCatalog, EnvId, EnvId, BackupId, BackupId) {
        let mut cat = MemCatalog::default();
        let (e1, e2) = (EnvId::derive("h1/101"), EnvId::derive("h2/201"));
        for (h, e, n) in [("h1", e1, "101"), ("h2", e2, "201")] {
            let r = cat.run_as(
                agent(h),
                Command::RegisterHost {
                    host: HostRecord {
                        id: h.into(),
                        ..Default::default()
                    },
                    envs: vec![EnvRecord {
                        eid: e,
                        host: h.into(),
                        name: n.into(),
                        ..Default::default()
                    }],
                    now_ms: 1_000,
                    takeover_after_ms: 0,
                },
            );
            assert_eq!(r, Response::Registered { conflicts: vec![] });
        }
        let mut b1 = record(e1, 1_700_000_000, "");
        b1.host = "h1".into();
        let mut b2 = record(e2, 1_700_000_000, "");
        b2.host = "h2".into();
        for b in [b1.clone(), b2.clone()] {
            cat.run(Command::CommitBackup {
                record: b,
                job: None,
                now_ms: 0,
                session: None,
            });
        }
        (cat, e1, e2, b1.id, b2.id)
    }

    fn check(cat: &MemCatalog, who: &Principal, access: Access, s: Subject) -> bool {
        match authorize(cat, who, access, &s) {
            Ok(r) => r.is_ok(),
            Err(never) => match never {},
        }
    }

    #[test]
    fn agents_reach_their_own_host_only() {
        let (cat, e1, e2, b1, b2) = two_hosts();
        let a1 = agent("h1");
        assert!(check(&cat, &a1, Access::Read, Subject::Env(e1)));
        assert!(!check(&cat, &a1, Access::Read, Subject::Env(e2)));
        assert!(check(&cat, &a1, Access::ReadContent, Subject::Backup(b1)));
        assert!(!check(&cat, &a1, Access::ReadContent, Subject::Backup(b2)));
        assert!(!check(&cat, &a1, Access::Read, Subject::Nothing));
        assert!(check(
            &cat,
            &a1,
            Access::AgentWork,
            Subject::Host("h1".into())
        ));
        assert!(!check(
            &cat,
            &a1,
            Access::AgentWork,
            Subject::Host("h2".into())
        ));
        assert!(!check(&cat, &a1, Access::Administer, Subject::Env(e1)));
        // Users go by role, and the cluster secret may do anything.
        assert!(check(
            &cat,
            &user(Role::Viewer),
            Access::Read,
            Subject::Env(e2)
        ));
        assert!(!check(
            &cat,
            &user(Role::Viewer),
            Access::ReadContent,
            Subject::Backup(b2)
        ));
        assert!(check(
            &cat,
            &user(Role::Operator),
            Access::ReadContent,
            Subject::Backup(b2)
        ));
        assert!(check(
            &cat,
            &Principal::Cluster,
            Access::Internal,
            Subject::Nothing
        ));
    }

    #[test]
    fn a_refused_backup_reads_the_same_whether_it_exists_or_not() {
        let (cat, _, e2, _, b2) = two_hosts();
        let ghost = BackupId::new(e2, 1_600_000_000);
        let a1 = agent("h1");
        let msg = |b| match authorize(&cat, &a1, Access::ReadContent, &Subject::Backup(b)) {
            Ok(Err(r)) => (r.code, r.rule, r.message.replace(&b.to_string(), "ID")),
            other => panic!("{other:?}"),
        };
        assert_eq!(msg(b2), msg(ghost));
        assert_eq!(msg(b2).0, ErrorCode::PermissionDenied);
        assert_eq!(msg(b2).1, Some(Rule::AgentOwnBackup));
    }

    #[test]
    fn agents_commit_only_inside_their_running_backup_job() {
        let (mut cat, e1, e2, _, _) = two_hosts();
        let mut b = record(e1, 1_700_000_100, "");
        b.host = "h1".into();
        let commit = |b: &cairn_core::BackupRecord, job| Command::CommitBackup {
            record: b.clone(),
            job,
            now_ms: 0,
            session: None,
        };
        // No job: refused.
        let r = cat.run_as(agent("h1"), commit(&b, None));
        assert_eq!(r.refusal().unwrap().0, ErrorCode::PermissionDenied);
        assert_eq!(r.rule(), Some(Rule::AgentCommitInJob));
        // A queued job is not enough; a running one is.
        let job = uuid::Uuid::from_u128(7);
        let submitted = cat.run_as(
            user(Role::Operator),
            Command::SubmitJob {
                id: job,
                request: crate::command::JobRequest {
                    kind: "backup".into(),
                    env: Some(e1),
                    ..Default::default()
                },
                now_ms: 2_000,
                queue_timeout_ms: 60_000,
            },
        );
        assert!(submitted.refusal().is_none(), "{submitted:?}");
        assert!(cat
            .run_as(agent("h1"), commit(&b, Some(job)))
            .refusal()
            .is_some());
        cat.run_as(
            agent("h1"),
            Command::ClaimJob {
                id: job,
                host: "h1".into(),
                now_ms: 3_000,
                lease_until_ms: 60_000,
            },
        );
        // Another host's agent cannot use it, nor commit for another environment.
        let mut foreign = record(e2, 1_700_000_100, "");
        foreign.host = "h2".into();
        assert!(cat
            .run_as(agent("h2"), commit(&foreign, Some(job)))
            .refusal()
            .is_some());
        let mut other_env = b.clone();
        other_env.id.env = e2;
        assert!(cat
            .run_as(agent("h1"), commit(&other_env, Some(job)))
            .refusal()
            .is_some());
        // Nor pretend the backup was taken elsewhere.
        let mut elsewhere = b.clone();
        elsewhere.host = "h2".into();
        assert!(cat
            .run_as(agent("h1"), commit(&elsewhere, Some(job)))
            .refusal()
            .is_some());
        assert!(matches!(
            cat.run_as(agent("h1"), commit(&b, Some(job))),
            Response::Committed { .. }
        ));
    }

    #[test]
    fn agents_act_on_their_own_jobs_and_sessions_only() {
        let (mut cat, e1, _, _, _) = two_hosts();
        let job = uuid::Uuid::from_u128(9);
        cat.run_as(
            Principal::Cluster,
            Command::SubmitJob {
                id: job,
                request: crate::command::JobRequest {
                    kind: "backup".into(),
                    env: Some(e1),
                    ..Default::default()
                },
                now_ms: 2_000,
                queue_timeout_ms: 60_000,
            },
        );
        for (who, named) in [("h2", "h1"), ("h2", "h2"), ("h1", "h2")] {
            let r = cat.run_as(
                agent(who),
                Command::ClaimJob {
                    id: job,
                    host: named.into(),
                    now_ms: 3_000,
                    lease_until_ms: 60_000,
                },
            );
            assert_eq!(
                r.refusal().map(|r| r.0),
                Some(ErrorCode::PermissionDenied),
                "{who} claiming as {named}"
            );
        }
        assert!(cat
            .run_as(agent("h2"), Command::CancelJob { id: job, now_ms: 0 })
            .refusal()
            .is_some());
        // Sessions: opened for the own host only, inside its running backup job, closed by
        // their host only.
        let session = cairn_core::retention::Session {
            id: uuid::Uuid::from_u128(5),
            env: e1,
            started_ms: 0,
            host: "h1".into(),
            committed: None,
            renewed_ms: 0,
        };
        let mut spoofed = session.clone();
        spoofed.host = "h9".into();
        assert!(cat
            .run_as(agent("h1"), Command::OpenSession { session: spoofed })
            .refusal()
            .is_some());
        let open = |cat: &mut MemCatalog| {
            cat.run_as(
                agent("h1"),
                Command::OpenSession {
                    session: session.clone(),
                },
            )
        };
        assert!(open(&mut cat).refusal().is_some(), "no running job yet");
        cat.run_as(
            agent("h1"),
            Command::ClaimJob {
                id: job,
                host: "h1".into(),
                now_ms: 3_000,
                lease_until_ms: 60_000,
            },
        );
        assert_eq!(open(&mut cat), Response::Done);
        assert!(cat
            .run_as(agent("h2"), Command::CloseSession { id: session.id })
            .refusal()
            .is_some());
        assert_eq!(
            cat.run_as(agent("h1"), Command::CloseSession { id: session.id }),
            Response::Done
        );
    }

    #[test]
    fn administration_and_internal_commands_need_their_principals() {
        let (mut cat, e1, _, b1, _) = two_hosts();
        let admin_only = [
            Command::DeleteBackup { id: b1 },
            Command::ProtectBackup {
                id: b1,
                protected: true,
            },
            Command::SetEnvConfig {
                env: e1,
                config: Default::default(),
                now_ms: 0,
            },
            Command::RevokeTokens { ids: vec![] },
            Command::MoveEnv {
                eid: e1,
                host: "h2".into(),
                now_ms: 0,
            },
        ];
        for cmd in admin_only {
            for who in [agent("h1"), user(Role::Viewer), user(Role::Operator)] {
                let r = cat.run_as(who.clone(), cmd.clone());
                assert_eq!(
                    r.refusal().map(|r| r.0),
                    Some(ErrorCode::PermissionDenied),
                    "{who:?} {}",
                    cmd.kind()
                );
            }
        }
        for cmd in [
            Command::ExpireJob {
                id: uuid::Uuid::nil(),
                now_ms: 0,
            },
            Command::DeleteJobs { ids: vec![] },
        ] {
            for who in [agent("h1"), user(Role::Admin)] {
                assert!(cat.run_as(who, cmd.clone()).refusal().is_some());
            }
        }
        // A proposal's principal is what is decided on, not who relayed it.
        let p = Proposal::new(agent("h1"), Command::DeleteBackup { id: b1 });
        assert!(cat.run_proposal(p).refusal().is_some());
        assert_eq!(
            cat.run_as(user(Role::Admin), Command::DeleteBackup { id: b1 }),
            Response::Deleted
        );
    }
}
