//! The catalog's decisions: what a command changes and what it answers.
//!
//! [`decide`] reads the current catalog through [`CatalogRead`] and returns the [`Write`]s to
//! make together with the [`Response`]. It does no IO and knows nothing about sled or raft, so
//! the same code runs over the sled state machine (which decides over its trees plus the
//! batch's earlier writes, outside the transaction, then writes in one; see [`crate::store`])
//! and over the in-memory catalog of the unit tests below. `differential.rs` runs random
//! command sequences through both and requires the same answers and the same catalog.
//!
//! Every member applies the same log in the same order, so a decision must depend only on the
//! catalog and the command: no clock, no randomness, no node-local configuration. This is why
//! the "first free later second" rule for colliding backup times lives in the catalog (in
//! [`crate::backups`], with the backup ids' invariant) and not in the agent or the adapters.
//!
//! The decisions live in three modules below this one, and none of them uses another's:
//! [`crate::backups`] (commit, protect, delete, update, settings), [`crate::agents`] (hosts,
//! environments, jobs, tokens; job admission composes the backup operations) and
//! [`crate::join`]. `decide` authorizes and dispatches.
//!
//! Refusals are values ([`Response::Refused`]) with no writes: openraft stops a node on any
//! storage error, so an error here is reserved for a catalog that cannot be read.
//!
//! Every decision starts with authorization ([`crate::authz::admit`]): the proposal carries
//! who asked, and the refusal of a principal is a value like any other.
//!
//! Retention is part of the decision that triggers it (a commit, a settings change): the
//! backups it removes go in the same atomic write, so there is no window in which an
//! environment holds more than its `keep_max`, and the rule about who may trigger which
//! removal (see `cairn_core::retention`) is decided here with everything else. So is the
//! backup a backup job asked to replace (`JobOptions::replace`, see `backups::replace_writes`):
//! removed in the commit of the new one, never as a second request after it.

use cairn_core::placement::{Epoch, PlacementHash, PlacementNode, ZoneRedundancy};
use cairn_core::ErrorCode;

use crate::command::{Command, Proposal, Response};

pub use crate::backups::MAX_BACKUP_TIME;

pub use crate::view::{CatalogRead, Decision, Write};

use crate::backups::{commit_backup, delete_backup, protect_backup, set_env_config, update_backup};

/// Decides what a proposal changes in the catalog seen through `view`, and what it answers:
/// first whether its principal may make it, then what it does.
pub fn decide<V: CatalogRead + ?Sized>(view: &V, p: &Proposal) -> Result<Decision, V::Error> {
    if let Err(r) = crate::authz::admit(view, &p.by, &p.cmd)? {
        return Ok(Decision::refused(r));
    }
    let by = &p.by;
    match &p.cmd {
        Command::CommitBackup {
            record,
            now_ms,
            session,
            job,
        } => commit_backup(view, by, record, *now_ms, *session, *job),
        Command::DeleteBackup { id } => delete_backup(view, id),
        Command::ProtectBackup { id, protected } => protect_backup(view, id, *protected),
        Command::UpdateBackup {
            id,
            name,
            description,
            tags,
        } => update_backup(
            view,
            id,
            name.as_deref(),
            description.as_deref(),
            tags.as_deref(),
            None,
        ),
        Command::SetPlacement {
            nodes,
            rf,
            zone_redundancy,
            expect_epoch,
        } => {
            if let Some(expected) = expect_epoch {
                let current = view.placement()?.map(|e| e.number).unwrap_or(0);
                if current != *expected {
                    return Ok(Decision::refuse(
                        ErrorCode::PlacementChanged,
                        format!(
                            "the placement changed meanwhile (epoch {current}, expected {expected}); retry"
                        ),
                    ));
                }
            }
            set_placement(view, nodes, *rf, *zone_redundancy)
        }
        Command::SetEnvConfig {
            env,
            config,
            now_ms,
        } => set_env_config(view, by, *env, config, *now_ms),
        Command::OpenSession { session } => Ok(Decision {
            writes: vec![Write::PutSession(session.clone())],
            response: Response::Done,
        }),
        Command::RenewSession { id, now_ms } => Ok(match view.session(id)? {
            Some(mut s) => {
                s.renewed_ms = *now_ms;
                Decision {
                    writes: vec![Write::PutSession(s)],
                    response: Response::Done,
                }
            }
            None => Decision::refuse(
                ErrorCode::SessionExpired,
                format!("backup session {id} is closed or expired; its backup cannot commit — run it again"),
            ),
        }),
        Command::CloseSession { id } => Ok(Decision {
            writes: vec![Write::DeleteSession(*id)],
            response: Response::Done,
        }),
        Command::RegisterHost { .. }
        | Command::MoveEnv { .. }
        | Command::SubmitJob { .. }
        | Command::CreateJob { .. }
        | Command::ClaimJob { .. }
        | Command::ReportProgress { .. }
        | Command::FinishJob { .. }
        | Command::CancelJob { .. }
        | Command::ExpireJob { .. }
        | Command::DeleteJobs { .. }
        | Command::PutToken { .. }
        | Command::RevokeTokens { .. } => crate::agents::decide(view, by, &p.cmd),
        Command::PutJoinToken { .. }
        | Command::RedeemJoinToken { .. }
        | Command::RevokeJoinTokens { .. } => crate::join::decide(view, by, &p.cmd),
        Command::SetClusterId { id } => Ok(match view.cluster_id()? {
            Some(_) => Decision {
                writes: Vec::new(),
                response: Response::Done,
            },
            None => Decision {
                writes: vec![Write::PutClusterId(*id)],
                response: Response::Done,
            },
        }),
    }
}

fn set_placement<V: CatalogRead + ?Sized>(
    view: &V,
    nodes: &[PlacementNode],
    rf: u32,
    zone_redundancy: Option<ZoneRedundancy>,
) -> Result<Decision, V::Error> {
    if nodes.is_empty() {
        return Ok(Decision::refuse(
            ErrorCode::InvalidArgument,
            "a placement needs at least one node".into(),
        ));
    }
    if rf == 0 {
        return Ok(Decision::refuse(
            ErrorCode::InvalidArgument,
            "the replication factor must be 1 or more".into(),
        ));
    }
    let mut ids: Vec<u64> = nodes.iter().map(|n| n.id).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != nodes.len() {
        return Ok(Decision::refuse(
            ErrorCode::InvalidArgument,
            "a node id appears twice in the placement".into(),
        ));
    }
    if zone_redundancy == Some(ZoneRedundancy::AtLeast(0)) {
        return Ok(Decision::refuse(
            ErrorCode::InvalidArgument,
            "zone redundancy is \"maximum\" or a number of zones, 1 or more".into(),
        ));
    }
    let current = view.placement()?;
    let mut next = Epoch {
        number: 1,
        nodes: nodes.to_vec(),
        rf,
        zone_redundancy: zone_redundancy
            .or(current.as_ref().map(|c| c.zone_redundancy))
            .unwrap_or_default(),
        // A cluster keeps the score hash it was formed with (changing it would move nearly
        // every chunk); a new one takes the cheap one.
        hash: current
            .as_ref()
            .map(|c| c.hash)
            .unwrap_or(PlacementHash::Mix64),
    };
    next.nodes.sort_by_key(|n| n.id);
    if let Some(cur) = &current {
        next.number = if cur.same_layout(&next) {
            cur.number
        } else {
            cur.number + 1
        };
        if *cur == next {
            return Ok(Decision {
                writes: Vec::new(),
                response: Response::Placement { epoch: cur.number },
            });
        }
    }
    let epoch = next.number;
    Ok(Decision {
        writes: vec![Write::PutPlacement(next)],
        response: Response::Placement { epoch },
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;
    use std::convert::Infallible;

    use cairn_core::auth::Principal;
    use cairn_core::job::{EnvRecord, HostRecord, Job, JoinTokenRecord, TokenRecord};
    use cairn_core::retention::{EnvConfig, Session};
    use cairn_core::{
        BackupId, BackupRecord, BackupState, BackupType, ChunkId, Compression, EnvId,
    };

    use super::*;

    /// The catalog in memory: the reference the sled store is compared with
    /// (`crate::differential`).
    #[derive(Default, Debug, PartialEq, Eq)]
    pub(crate) struct MemCatalog {
        backups: BTreeMap<BackupId, BackupRecord>,
        names: BTreeMap<(EnvId, String), i64>,
        placement: Option<Epoch>,
        cluster_id: Option<uuid::Uuid>,
        hosts: BTreeMap<String, HostRecord>,
        envs: BTreeMap<EnvId, EnvRecord>,
        jobs: BTreeMap<uuid::Uuid, Job>,
        active: BTreeMap<EnvId, uuid::Uuid>,
        tokens: BTreeMap<String, TokenRecord>,
        join_tokens: BTreeMap<String, JoinTokenRecord>,
        configs: BTreeMap<EnvId, EnvConfig>,
        sessions: BTreeMap<uuid::Uuid, Session>,
        last_ids: BTreeMap<EnvId, i64>,
    }

    impl CatalogRead for MemCatalog {
        type Error = Infallible;
        fn backup(&self, id: &BackupId) -> Result<Option<BackupRecord>, Infallible> {
            Ok(self.backups.get(id).cloned())
        }
        fn name_owner(&self, env: EnvId, name: &str) -> Result<Option<i64>, Infallible> {
            Ok(self.names.get(&(env, name.to_string())).copied())
        }
        fn placement(&self) -> Result<Option<Epoch>, Infallible> {
            Ok(self.placement.clone())
        }
        fn cluster_id(&self) -> Result<Option<uuid::Uuid>, Infallible> {
            Ok(self.cluster_id)
        }
        fn host(&self, id: &str) -> Result<Option<HostRecord>, Infallible> {
            Ok(self.hosts.get(id).cloned())
        }
        fn env(&self, eid: EnvId) -> Result<Option<EnvRecord>, Infallible> {
            Ok(self.envs.get(&eid).cloned())
        }
        fn job(&self, id: &uuid::Uuid) -> Result<Option<Job>, Infallible> {
            Ok(self.jobs.get(id).cloned())
        }
        fn active_job(&self, env: EnvId) -> Result<Option<uuid::Uuid>, Infallible> {
            Ok(self.active.get(&env).copied())
        }
        fn token(&self, id: &str) -> Result<Option<TokenRecord>, Infallible> {
            Ok(self.tokens.get(id).cloned())
        }
        fn join_token(&self, id: &str) -> Result<Option<JoinTokenRecord>, Infallible> {
            Ok(self.join_tokens.get(id).cloned())
        }
        fn join_tokens(&self) -> Result<Vec<JoinTokenRecord>, Infallible> {
            Ok(self.join_tokens.values().cloned().collect())
        }
        fn backups(&self, env: Option<EnvId>) -> Result<Vec<BackupRecord>, Infallible> {
            Ok(self
                .backups
                .values()
                .filter(|b| env.is_none_or(|e| b.id.env == e))
                .cloned()
                .collect())
        }
        fn env_config(&self, env: EnvId) -> Result<EnvConfig, Infallible> {
            Ok(self.configs.get(&env).cloned().unwrap_or_default())
        }
        fn session(&self, id: &uuid::Uuid) -> Result<Option<Session>, Infallible> {
            Ok(self.sessions.get(id).cloned())
        }
        fn last_id(&self, env: EnvId) -> Result<Option<i64>, Infallible> {
            Ok(self.last_ids.get(&env).copied())
        }
    }

    impl MemCatalog {
        pub(crate) fn apply(&mut self, writes: &[Write]) {
            for w in writes {
                match w {
                    Write::PutBackup(r) => {
                        self.backups.insert(r.id, (**r).clone());
                    }
                    Write::DeleteBackup(id) => {
                        self.backups.remove(id);
                    }
                    Write::PutName { env, name, time } => {
                        self.names.insert((*env, name.clone()), *time);
                    }
                    Write::DeleteName { env, name } => {
                        self.names.remove(&(*env, name.clone()));
                    }
                    Write::PutPlacement(e) => self.placement = Some(e.clone()),
                    Write::PutClusterId(id) => self.cluster_id = Some(*id),
                    Write::PutEnvConfig(env, c) => {
                        self.configs.insert(*env, c.clone());
                    }
                    Write::PutLastId { env, time } => {
                        self.last_ids.insert(*env, *time);
                    }
                    Write::PutSession(session) => {
                        self.sessions.insert(session.id, session.clone());
                    }
                    Write::DeleteSession(id) => {
                        self.sessions.remove(id);
                    }
                    Write::PutHost(h) => {
                        self.hosts.insert(h.id.clone(), h.clone());
                    }
                    Write::PutEnv(e) => {
                        self.envs.insert(e.eid, e.clone());
                    }
                    Write::DeleteEnv(e) => {
                        self.envs.remove(e);
                    }
                    Write::PutJob(j) => {
                        self.jobs.insert(j.id, (**j).clone());
                    }
                    Write::DeleteJob(id) => {
                        self.jobs.remove(id);
                    }
                    Write::PutActive(e, id) => {
                        self.active.insert(*e, *id);
                    }
                    Write::DeleteActive(e) => {
                        self.active.remove(e);
                    }
                    Write::PutToken(t) => {
                        self.tokens.insert(t.id.clone(), t.clone());
                    }
                    Write::DeleteToken(id) => {
                        self.tokens.remove(id);
                    }
                    Write::PutJoinToken(t) => {
                        self.join_tokens.insert(t.id.clone(), t.clone());
                    }
                    Write::DeleteJoinToken(id) => {
                        self.join_tokens.remove(id);
                    }
                }
            }
        }

        /// Decides and applies `cmd` as proposed by the cluster itself.
        pub(crate) fn run(&mut self, cmd: Command) -> Response {
            self.run_proposal(Proposal::system(cmd))
        }

        /// Decides and applies `cmd` as proposed for `by`.
        pub(crate) fn run_as(&mut self, by: Principal, cmd: Command) -> Response {
            self.run_proposal(Proposal::new(by, cmd))
        }

        pub(crate) fn run_proposal(&mut self, p: Proposal) -> Response {
            let d = match decide(self, &p) {
                Ok(d) => d,
                Err(never) => match never {},
            };
            if d.response.refusal().is_some() {
                assert!(d.writes.is_empty(), "a refusal must not write: {d:?}");
            }
            self.apply(&d.writes);
            self.check_index();
            d.response
        }

        /// The name index holds exactly the non-empty names of the stored records.
        fn check_index(&self) {
            let from_records: BTreeMap<(EnvId, String), i64> = self
                .backups
                .values()
                .filter(|r| !r.name.is_empty())
                .map(|r| ((r.id.env, r.name.clone()), r.id.time))
                .collect();
            assert_eq!(from_records, self.names, "name index out of step");
        }
    }

    /// Environment `name` of host `host`, with a Virtuozzo-style private area.
    pub(crate) fn env(host: &str, name: &str) -> EnvRecord {
        EnvRecord {
            eid: EnvId::derive(&format!("{host}/{name}")),
            host: host.into(),
            name: name.into(),
            path: format!("/vz/private/{name}"),
            ..Default::default()
        }
    }

    /// An agent of host `h`.
    pub(crate) fn agent(h: &str) -> Principal {
        Principal::Agent { host: h.into() }
    }

    /// A user with `role`.
    pub(crate) fn user(role: cairn_core::auth::Role) -> Principal {
        Principal::User {
            name: "alice".into(),
            role,
        }
    }

    pub(crate) fn record(env: EnvId, time: i64, name: &str) -> BackupRecord {
        BackupRecord {
            id: BackupId::new(env, time),
            kind: BackupType::Full,
            parent: None,
            name: name.to_string(),
            description: String::new(),
            tags: Vec::new(),
            manifest: ChunkId::of(format!("{env}/{time}/{name}").as_bytes()),
            logical_size: 10,
            stored_size: 5,
            file_count: 1,
            chunk_count: 2,
            state: BackupState::Complete,
            errors: Vec::new(),
            error_count: 0,
            compression: Compression::Normal,
            host: "hn1".to_string(),
            source: "/vz/root/101".to_string(),
            env_info: Default::default(),
            includes: Vec::new(),
            excludes: Vec::new(),
            protected: false,
        }
    }

    fn commit(cat: &mut MemCatalog, env: EnvId, time: i64, name: &str) -> Response {
        cat.run(Command::CommitBackup {
            record: record(env, time, name),
            job: None,
            now_ms: 0,
            session: None,
        })
    }

    fn committed_id(r: Response) -> BackupId {
        match r {
            Response::Committed { id, .. } => id,
            other => panic!("expected Committed, got {other:?}"),
        }
    }

    fn code(r: &Response) -> Option<ErrorCode> {
        r.refusal().map(|(c, _)| c)
    }

    const T: i64 = 1_763_800_000;

    #[test]
    fn commit_stores_the_record_at_the_requested_second() {
        let env = EnvId::derive("hn1/101");
        let mut cat = MemCatalog::default();
        let id = committed_id(commit(&mut cat, env, T, "nightly"));
        assert_eq!(id, BackupId::new(env, T));
        assert_eq!(cat.backup(&id).unwrap(), Some(record(env, T, "nightly")));
        assert_eq!(cat.name_owner(env, "nightly").unwrap(), Some(T));
    }

    /// The nemesis harness found a backup listed twice (seed 3, 5 nodes): a commit whose
    /// answer was lost was retried and committed again.
    #[test]
    fn a_repeated_commit_in_one_session_answers_the_first_backup() {
        let env = EnvId::derive("hn1/101");
        let mut cat = MemCatalog::default();
        let session = cairn_core::retention::Session {
            id: uuid::Uuid::new_v4(),
            env,
            started_ms: 0,
            host: "hn1".into(),
            committed: None,
            renewed_ms: 0,
        };
        cat.run(Command::OpenSession {
            session: session.clone(),
        });
        let in_session = |time| Command::CommitBackup {
            record: record(env, time, ""),
            job: None,
            now_ms: 0,
            session: Some(session.id),
        };
        let first = committed_id(cat.run(in_session(T)));
        // The client did not hear the answer and sends the commit again, later.
        let again = committed_id(cat.run(in_session(T + 5)));
        assert_eq!(first, again);
        assert_eq!(cat.backups(Some(env)).unwrap().len(), 1);
        // Another environment's record cannot ride on the session.
        let other = EnvId::derive("hn1/102");
        let r = cat.run(Command::CommitBackup {
            record: record(other, T, ""),
            job: None,
            now_ms: 0,
            session: Some(session.id),
        });
        assert_eq!(code(&r), Some(ErrorCode::InvalidArgument), "{r:?}");
        // A renewal keeps it open; once closed (or expired and closed by GC), renewals and
        // commits in it are refused.
        let renewed = cat.run(Command::RenewSession {
            id: session.id,
            now_ms: 77,
        });
        assert_eq!(renewed, Response::Done);
        assert_eq!(cat.session(&session.id).unwrap().unwrap().renewed_ms, 77);
        cat.run(Command::CloseSession { id: session.id });
        let r = cat.run(Command::RenewSession {
            id: session.id,
            now_ms: 78,
        });
        assert_eq!(code(&r), Some(ErrorCode::SessionExpired), "{r:?}");
        let late = cat.run(in_session(T + 9));
        assert_eq!(code(&late), Some(ErrorCode::SessionExpired), "{late:?}");
        assert_eq!(cat.backups(Some(env)).unwrap().len(), 1);
    }

    /// A view of a [`MemCatalog`] that counts the backup records a decision reads.
    pub(crate) struct Counting<'a> {
        pub(crate) inner: &'a MemCatalog,
        pub(crate) records_read: std::cell::Cell<usize>,
    }

    impl CatalogRead for Counting<'_> {
        type Error = Infallible;
        fn backup(&self, id: &BackupId) -> Result<Option<BackupRecord>, Infallible> {
            self.inner.backup(id)
        }
        fn name_owner(&self, env: EnvId, name: &str) -> Result<Option<i64>, Infallible> {
            self.inner.name_owner(env, name)
        }
        fn placement(&self) -> Result<Option<Epoch>, Infallible> {
            self.inner.placement()
        }
        fn cluster_id(&self) -> Result<Option<uuid::Uuid>, Infallible> {
            self.inner.cluster_id()
        }
        fn host(&self, id: &str) -> Result<Option<HostRecord>, Infallible> {
            self.inner.host(id)
        }
        fn env(&self, eid: EnvId) -> Result<Option<EnvRecord>, Infallible> {
            self.inner.env(eid)
        }
        fn job(&self, id: &uuid::Uuid) -> Result<Option<Job>, Infallible> {
            self.inner.job(id)
        }
        fn active_job(&self, env: EnvId) -> Result<Option<uuid::Uuid>, Infallible> {
            self.inner.active_job(env)
        }
        fn token(&self, id: &str) -> Result<Option<TokenRecord>, Infallible> {
            self.inner.token(id)
        }
        fn join_token(&self, id: &str) -> Result<Option<JoinTokenRecord>, Infallible> {
            self.inner.join_token(id)
        }
        fn join_tokens(&self) -> Result<Vec<JoinTokenRecord>, Infallible> {
            self.inner.join_tokens()
        }
        fn backups(&self, env: Option<EnvId>) -> Result<Vec<BackupRecord>, Infallible> {
            let all = self.inner.backups(env)?;
            self.records_read.set(self.records_read.get() + all.len());
            Ok(all)
        }
        fn env_config(&self, env: EnvId) -> Result<EnvConfig, Infallible> {
            self.inner.env_config(env)
        }
        fn session(&self, id: &uuid::Uuid) -> Result<Option<Session>, Infallible> {
            self.inner.session(id)
        }
        fn last_id(&self, env: EnvId) -> Result<Option<i64>, Infallible> {
            self.inner.last_id(env)
        }
    }

    /// A commit into an environment without retention reads none of its backups: the cost of
    /// a commit does not grow with the environment (found filling one environment with
    /// 10,000 backups, which took quadratic time). With retention set, the environment's
    /// backups are read, and there are at most `keep_max` of them (plus protected ones).
    #[test]
    fn a_commit_reads_the_environments_backups_only_for_retention() {
        let env = EnvId::derive("hn1/big");
        let mut cat = MemCatalog::default();
        for i in 0..500 {
            committed_id(commit(&mut cat, env, T + i, ""));
        }
        let proposal = Proposal::system(Command::CommitBackup {
            record: record(env, T + 1000, "next"),
            job: None,
            now_ms: 0,
            session: None,
        });
        let view = Counting {
            inner: &cat,
            records_read: Default::default(),
        };
        let d = decide(&view, &proposal).unwrap();
        assert!(matches!(d.response, Response::Committed { .. }), "{d:?}");
        assert_eq!(view.records_read.get(), 0);

        cat.run(Command::SetEnvConfig {
            env,
            config: EnvConfig {
                keep_max: Some(3),
                ..Default::default()
            },
            now_ms: 0,
        });
        assert_eq!(cat.backups(Some(env)).unwrap().len(), 3);
        let view = Counting {
            inner: &cat,
            records_read: Default::default(),
        };
        let d = decide(&view, &proposal).unwrap();
        assert!(
            matches!(d.response, Response::Committed { ref removed, .. } if removed.len() == 1),
            "{d:?}"
        );
        assert_eq!(view.records_read.get(), 3);
    }

    /// Found by the nemesis harness (seeds 1 and 4): a commit landed in a gap before a newer
    /// backup and retention removed it in its own write; a deleted id was given again.
    #[test]
    fn ids_grow_in_commit_order_and_are_never_given_twice() {
        let env = EnvId::derive("hn1/101");
        let mut cat = MemCatalog::default();
        let cfg = EnvConfig {
            keep_max: Some(2),
            ..Default::default()
        };
        cat.run(Command::SetEnvConfig {
            env,
            config: cfg,
            now_ms: 0,
        });
        let a = committed_id(commit(&mut cat, env, T, ""));
        let b = committed_id(commit(&mut cat, env, T + 10, ""));
        // A leader whose clock is behind proposes an earlier second: the id still comes
        // after b, and retention (keep 2) removes a, not the backup just committed.
        let c = committed_id(commit(&mut cat, env, T + 1, ""));
        assert_eq!(c.time, T + 11);
        assert!(cat.backup(&c).unwrap().is_some());
        assert!(cat.backup(&a).unwrap().is_none());
        // The newest is deleted; the next commit does not reuse its id.
        assert_eq!(cat.run(Command::DeleteBackup { id: c }), Response::Deleted);
        let d = committed_id(commit(&mut cat, env, T + 11, ""));
        assert_eq!(d.time, T + 12);
        assert!(b < d);
    }

    #[test]
    fn same_second_commits_move_to_the_first_free_later_second() {
        let env = EnvId::derive("hn1/101");
        let other = EnvId::derive("hn1/102");
        let mut cat = MemCatalog::default();
        committed_id(commit(&mut cat, env, T + 2, ""));
        let ids: Vec<i64> = (0..3)
            .map(|_| committed_id(commit(&mut cat, env, T, "")).time)
            .collect();
        // Later commits get later ids, whatever second they asked for (a proposer's clock
        // behind another's, or several commits in one second).
        assert_eq!(ids, vec![T + 3, T + 4, T + 5]);
        // Another environment has its own seconds.
        assert_eq!(committed_id(commit(&mut cat, other, T, "")).time, T);
        // The stored record carries the id it was stored under.
        let stored = cat.backup(&BackupId::new(env, T + 3)).unwrap().unwrap();
        assert_eq!(stored.id, BackupId::new(env, T + 3));
    }

    #[test]
    fn duplicate_names_in_one_environment_are_refused_as_values() {
        let env = EnvId::derive("hn1/101");
        let other = EnvId::derive("hn1/102");
        let mut cat = MemCatalog::default();
        committed_id(commit(&mut cat, env, T, "before-upgrade"));
        let r = commit(&mut cat, env, T + 60, "before-upgrade");
        assert_eq!(code(&r), Some(ErrorCode::DuplicateName));
        let (_, msg) = r.refusal().unwrap();
        assert!(msg.contains("before-upgrade"), "{msg}");
        assert!(msg.contains(&BackupId::new(env, T).to_string()), "{msg}");
        assert!(cat.backup(&BackupId::new(env, T + 60)).unwrap().is_none());
        // Same name elsewhere, and empty names, never conflict.
        committed_id(commit(&mut cat, other, T, "before-upgrade"));
        committed_id(commit(&mut cat, env, T + 1, ""));
        committed_id(commit(&mut cat, env, T + 2, ""));
    }

    #[test]
    fn times_outside_the_id_range_are_refused() {
        let env = EnvId::derive("hn1/101");
        let mut cat = MemCatalog::default();
        assert_eq!(
            code(&commit(&mut cat, env, -1, "")),
            Some(ErrorCode::InvalidArgument)
        );
        assert_eq!(
            code(&commit(&mut cat, env, MAX_BACKUP_TIME + 1, "")),
            Some(ErrorCode::InvalidArgument)
        );
        committed_id(commit(&mut cat, env, MAX_BACKUP_TIME, ""));
        assert_eq!(
            code(&commit(&mut cat, env, MAX_BACKUP_TIME, "")),
            Some(ErrorCode::Conflict)
        );
    }

    #[test]
    fn delete_removes_the_record_and_frees_its_name() {
        let env = EnvId::derive("hn1/101");
        let mut cat = MemCatalog::default();
        let id = committed_id(commit(&mut cat, env, T, "weekly"));
        assert_eq!(cat.run(Command::DeleteBackup { id }), Response::Deleted);
        assert!(cat.backup(&id).unwrap().is_none());
        assert_eq!(
            code(&cat.run(Command::DeleteBackup { id })),
            Some(ErrorCode::BackupNotFound)
        );
        // The name is free again; the id is not (another backup never gets a deleted id).
        let again = committed_id(commit(&mut cat, env, T, "weekly"));
        assert_eq!(again.time, T + 1);
    }

    #[test]
    fn update_changes_fields_and_keeps_names_unique() {
        let env = EnvId::derive("hn1/101");
        let mut cat = MemCatalog::default();
        let a = committed_id(commit(&mut cat, env, T, "a"));
        let b = committed_id(commit(&mut cat, env, T + 1, "b"));
        let upd = |id, name: Option<&str>| Command::UpdateBackup {
            id,
            name: name.map(str::to_string),
            description: None,
            tags: None,
        };

        assert_eq!(
            code(&cat.run(upd(b, Some("a")))),
            Some(ErrorCode::DuplicateName)
        );
        // Renaming to its own name is no change, not a conflict.
        assert_eq!(cat.run(upd(a, Some("a"))), Response::Updated);
        assert_eq!(cat.run(upd(a, Some("c"))), Response::Updated);
        assert_eq!(cat.name_owner(env, "a").unwrap(), None);
        assert_eq!(cat.run(upd(b, Some("a"))), Response::Updated);
        assert_eq!(cat.name_owner(env, "a").unwrap(), Some(T + 1));
        // An empty name removes the name.
        assert_eq!(cat.run(upd(b, Some(""))), Response::Updated);
        assert_eq!(cat.backup(&b).unwrap().unwrap().name, "");

        let r = cat.run(Command::UpdateBackup {
            id: a,
            name: None,
            description: Some("before the upgrade".into()),
            tags: Some(vec!["keep".into(), "db".into()]),
        });
        assert_eq!(r, Response::Updated);
        let rec = cat.backup(&a).unwrap().unwrap();
        assert_eq!(rec.name, "c");
        assert_eq!(rec.description, "before the upgrade");
        assert_eq!(rec.tags, vec!["keep".to_string(), "db".to_string()]);
        // Untouched fields stay as committed.
        assert_eq!(rec.manifest, record(env, T, "a").manifest);

        let missing = BackupId::new(env, T + 99);
        assert_eq!(
            code(&cat.run(upd(missing, Some("x")))),
            Some(ErrorCode::BackupNotFound)
        );
    }

    #[test]
    fn decisions_depend_only_on_state_and_command() {
        let env = EnvId::derive("hn1/101");
        let cmds: Vec<Command> = (0..20)
            .map(|i| match i % 4 {
                0 | 1 => Command::CommitBackup {
                    record: record(env, T + (i % 3), if i % 5 == 0 { "n" } else { "" }),
                    job: None,
                    now_ms: 0,
                    session: None,
                },
                2 => Command::UpdateBackup {
                    id: BackupId::new(env, T + 1),
                    name: Some(format!("n{}", i % 2)),
                    description: None,
                    tags: None,
                },
                _ => Command::DeleteBackup {
                    id: BackupId::new(env, T + (i % 2)),
                },
            })
            .collect();
        let mut a = MemCatalog::default();
        let mut b = MemCatalog::default();
        let ra: Vec<Response> = cmds.iter().cloned().map(|c| a.run(c)).collect();
        let rb: Vec<Response> = cmds.iter().cloned().map(|c| b.run(c)).collect();
        assert_eq!(ra, rb);
        assert_eq!(a, b);
    }

    fn pnode(id: u64, zone: &str, addr: &str) -> PlacementNode {
        PlacementNode {
            id,
            zone: zone.into(),
            weight: 1,
            addr: addr.into(),
            draining: false,
            down: false,
        }
    }

    fn epoch_of(r: Response) -> u64 {
        match r {
            Response::Placement { epoch } => epoch,
            other => panic!("expected Placement, got {other:?}"),
        }
    }

    #[test]
    fn placement_epochs_count_layout_changes_only() {
        let mut cat = MemCatalog::default();
        let three = vec![
            pnode(3, "c", "x3"),
            pnode(1, "a", "x1"),
            pnode(2, "b", "x2"),
        ];
        let set = |cat: &mut MemCatalog, nodes: &[PlacementNode], rf| {
            cat.run(Command::SetPlacement {
                nodes: nodes.to_vec(),
                rf,
                zone_redundancy: None,
                expect_epoch: None,
            })
        };
        assert_eq!(epoch_of(set(&mut cat, &three, 3)), 1);
        let stored = cat.placement.clone().unwrap();
        assert_eq!(
            stored.nodes.iter().map(|n| n.id).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        // The same layout again, or with a moved address: still epoch 1.
        assert_eq!(epoch_of(set(&mut cat, &three, 3)), 1);
        let mut moved = three.clone();
        moved[0].addr = "y3".into();
        assert_eq!(epoch_of(set(&mut cat, &moved, 3)), 1);
        assert_eq!(cat.placement.as_ref().unwrap().node(3).unwrap().addr, "y3");
        // A fourth node, a new zone, a new RF: each a new epoch.
        let mut four = moved.clone();
        four.push(pnode(4, "a", "x4"));
        assert_eq!(epoch_of(set(&mut cat, &four, 3)), 2);
        four[3].zone = "d".into();
        assert_eq!(epoch_of(set(&mut cat, &four, 3)), 3);
        assert_eq!(epoch_of(set(&mut cat, &four, 2)), 4);
        // Refusals change nothing.
        let before = cat.placement.clone();
        assert!(set(&mut cat, &[], 3).refusal().is_some());
        assert!(set(&mut cat, &four, 0).refusal().is_some());
        let dup = vec![pnode(1, "a", "x"), pnode(1, "b", "y")];
        assert!(set(&mut cat, &dup, 3).refusal().is_some());
        assert_eq!(cat.placement, before);
        // A change computed from an old epoch is refused.
        let stale = cat.run(Command::SetPlacement {
            nodes: three.clone(),
            rf: 3,
            zone_redundancy: None,
            expect_epoch: Some(3),
        });
        assert_eq!(
            stale.refusal().map(|r| r.0),
            Some(ErrorCode::PlacementChanged)
        );
        assert_eq!(cat.placement, before);
        // A new cluster scores with the cheap hash; zone redundancy set once is kept by
        // later changes that do not name it.
        assert_eq!(before.as_ref().unwrap().hash, PlacementHash::Mix64);
        let zr = cat.run(Command::SetPlacement {
            nodes: four.clone(),
            rf: 2,
            zone_redundancy: Some(ZoneRedundancy::AtLeast(2)),
            expect_epoch: None,
        });
        assert_eq!(epoch_of(zr), 5);
        four.push(pnode(5, "e", "x5"));
        assert_eq!(epoch_of(set(&mut cat, &four, 2)), 6);
        let now = cat.placement.clone().unwrap();
        assert_eq!(now.zone_redundancy, ZoneRedundancy::AtLeast(2));
        assert!(set_zr(&mut cat, &four, Some(ZoneRedundancy::AtLeast(0)))
            .refusal()
            .is_some());
    }

    fn set_zr(
        cat: &mut MemCatalog,
        nodes: &[PlacementNode],
        zr: Option<ZoneRedundancy>,
    ) -> Response {
        cat.run(Command::SetPlacement {
            nodes: nodes.to_vec(),
            rf: 2,
            zone_redundancy: zr,
            expect_epoch: None,
        })
    }

    /// A cluster formed before the cheap score hash keeps BLAKE3 (its epochs in the catalog
    /// carry no `hash`): changing it would move nearly every chunk.
    #[test]
    fn an_older_clusters_placement_keeps_its_score_hash() {
        let mut cat = MemCatalog::default();
        let old: Epoch = serde_json::from_str(
            r#"{"number":3,"rf":3,"nodes":[
                {"id":1,"zone":"a","weight":1},{"id":2,"zone":"b","weight":1},
                {"id":3,"zone":"c","weight":1}]}"#,
        )
        .unwrap();
        assert_eq!(old.hash, PlacementHash::Blake3);
        cat.placement = Some(old.clone());
        let mut nodes = old.nodes.clone();
        nodes.push(pnode(4, "a", "x4"));
        assert_eq!(epoch_of(set_zr(&mut cat, &nodes, None)), 4);
        let now = cat.placement.clone().unwrap();
        assert_eq!(now.hash, PlacementHash::Blake3);
        assert_eq!(now.zone_redundancy, ZoneRedundancy::Maximum);
    }

    fn keep(cat: &mut MemCatalog, env: EnvId, keep_max: u32, grace_days: Option<u32>) {
        let r = cat.run_as(
            Principal::User {
                name: "root".into(),
                role: cairn_core::auth::Role::Admin,
            },
            Command::SetEnvConfig {
                env,
                config: EnvConfig {
                    keep_max: Some(keep_max),
                    retention_grace_days: grace_days,
                    ..Default::default()
                },
                now_ms: 0,
            },
        );
        assert!(r.refusal().is_none(), "{r:?}");
    }

    fn commit_as(cat: &mut MemCatalog, by: Principal, env: EnvId, time: i64) -> Response {
        cat.run_as(
            by,
            Command::CommitBackup {
                record: record(env, time, ""),
                job: None,
                now_ms: time * 1000,
                session: None,
            },
        )
    }

    #[test]
    fn retention_goes_with_the_commit_and_spares_protected_backups() {
        let env = EnvId::derive("hn1/101");
        let mut cat = MemCatalog::default();
        let old: Vec<BackupId> = (0..3)
            .map(|i| committed_id(commit(&mut cat, env, T + i, "")))
            .collect();
        cat.run(Command::ProtectBackup {
            id: old[0],
            protected: true,
        });
        keep(&mut cat, env, 2, Some(0));
        // Setting keep_max applies at once: of the unprotected T+1, T+2 both stay (2).
        assert_eq!(cat.backups(Some(env)).unwrap().len(), 3);
        let r = commit_as(&mut cat, Principal::Cluster, env, T + 10);
        match r {
            Response::Committed { removed, .. } => assert_eq!(removed, vec![old[1]]),
            other => panic!("{other:?}"),
        }
        assert!(cat.backup(&old[0]).unwrap().is_some(), "protected stays");
        assert!(cat.backup(&old[1]).unwrap().is_none());
        // Deleting a protected backup is refused with its own code.
        let refused = cat.run(Command::DeleteBackup { id: old[0] });
        assert_eq!(code(&refused), Some(ErrorCode::Protected));
    }

    #[test]
    fn an_agent_triggered_retention_spares_the_grace() {
        let env = EnvId::derive("hn1/101");
        let day = 86_400;
        let mut cat = MemCatalog::default();
        // Backups 30, 20 and 10 days old, then an agent's commits of junk today.
        for age in [30, 20, 10] {
            committed_id(commit(&mut cat, env, T - age * day, ""));
        }
        keep(&mut cat, env, 3, None);
        let operator = Principal::User {
            name: "op".into(),
            role: cairn_core::auth::Role::Operator,
        };
        for i in 0..5 {
            commit_as(&mut cat, operator.clone(), env, T + i);
        }
        // Nothing younger than 7 days went; the older ones went as keep_max asks.
        let left: Vec<i64> = cat
            .backups(Some(env))
            .unwrap()
            .iter()
            .map(|b| b.id.time)
            .collect();
        assert_eq!(left, (0..5).map(|i| T + i).collect::<Vec<_>>());
        // Junk can never push out what is inside the grace, however much comes.
        let mut cat = MemCatalog::default();
        committed_id(commit(&mut cat, env, T - day, ""));
        keep(&mut cat, env, 1, None);
        for i in 0..20 {
            commit_as(&mut cat, operator.clone(), env, T + i);
        }
        assert!(cat.backup(&BackupId::new(env, T - day)).unwrap().is_some());
    }

    #[test]
    fn the_cluster_is_named_once() {
        let mut cat = MemCatalog::default();
        let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        cat.run(Command::SetClusterId { id: a });
        cat.run(Command::SetClusterId { id: b });
        assert_eq!(cat.cluster_id, Some(a));
    }
}
