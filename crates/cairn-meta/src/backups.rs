//! The catalog's decisions about backups: commit (with the replace and retention it carries),
//! protect, delete, update, and the environment settings retention reads. [`crate::catalog::decide`]
//! dispatches to them, and so does job admission ([`crate::agents`]) for the backup operations a
//! job runs. Pure functions over a [`CatalogRead`], like every decision (see [`crate::catalog`]).
//!
//! # Backup ids, and the ones backup jobs reserve
//! A backup's id is a second (`EID/YYYYMMDDhhmmss`). The ids of one environment grow in
//! commit order and are never given twice: each is the first free second at or after the one
//! asked for and after the environment's last id (`Write::PutLastId`, kept for deleted
//! backups too). Retention ("keep the N newest") relies on that order.
//!
//! A backup job reserves its id when it is admitted (`agents::submit_job`): the first free
//! second at or after the admission time and after the last id, stored in the job
//! (`Job::reserved_backup`) and made the environment's last id in the same write. So an
//! adapter can name the new backup from its first answer. To keep the order, while the
//! environment has a queued or running backup job holding a reservation, every other commit
//! of that environment (a direct backup, or a job that is no longer the active one) is
//! refused with [`ErrorCode::JobRunning`]; the job's own commit (`CommitBackup.job`) takes
//! exactly the reserved id, which is then still newer than every id before it (checked
//! again here; refused as a `Conflict` if not, which the rules above never allow). A job that
//! fails or is cancelled leaves its id unused; the next commit gets a later one. A job
//! admitted before reservations existed (no `reserved_backup`) commits as a direct backup
//! does and blocks nothing.

use cairn_core::auth::Principal;
use cairn_core::job::{EnvRecord, HostRecord, Job, JobKind, JoinTokenRecord, TokenRecord};
use cairn_core::placement::Epoch;
use cairn_core::retention::{Candidate, EnvConfig, Session};
use cairn_core::{BackupId, BackupRecord, EnvId, ErrorCode};

use crate::command::Response;
use crate::view::{CatalogRead, Decision, Write};

/// The latest backup time the catalog accepts: 9999-12-31T23:59:59Z, the last second that
/// `YYYYMMDDhhmmss` can show.
pub const MAX_BACKUP_TIME: i64 = 253_402_300_799;

pub(crate) fn commit_backup<V: CatalogRead + ?Sized>(
    view: &V,
    by: &Principal,
    record: &BackupRecord,
    now_ms: i64,
    session: Option<uuid::Uuid>,
    job: Option<uuid::Uuid>,
) -> Result<Decision, V::Error> {
    let env = record.id.env;
    let requested = record.id.time;
    let session = match session {
        None => None,
        Some(sid) => match view.session(&sid)? {
            None => {
                return Ok(Decision::refuse(
                    ErrorCode::SessionExpired,
                    format!(
                        "backup session {sid} is closed or expired (garbage collection may have removed chunks it uploaded); nothing was committed — run the backup again"
                    ),
                ))
            }
            Some(s) if s.env != env => {
                return Ok(Decision::refuse(
                    ErrorCode::InvalidArgument,
                    format!(
                        "backup session {sid} is for environment {}, not {env}",
                        s.env
                    ),
                ))
            }
            Some(s) => {
                if let Some(id) = s.committed {
                    // A retry of a commit whose answer was lost: the same backup again.
                    return Ok(Decision {
                        writes: Vec::new(),
                        response: Response::Committed {
                            id,
                            removed: Vec::new(),
                        },
                    });
                }
                Some(s)
            }
        },
    };
    if !(0..=MAX_BACKUP_TIME).contains(&requested) {
        return Ok(Decision::refuse(
            ErrorCode::InvalidArgument,
            format!(
                "backup time {requested} is outside 1970-01-01..9999-12-31 (seconds since the Unix epoch, UTC)"
            ),
        ));
    }
    if !record.name.is_empty() {
        if let Some(time) = view.name_owner(env, &record.name)? {
            return Ok(Decision::refuse(
                ErrorCode::DuplicateName,
                format!(
                    "environment {env} already has a backup named {:?}: {}",
                    record.name,
                    BackupId::new(env, time)
                ),
            ));
        }
    }

    // The job this commit ends, if it is still the environment's active backup job.
    let own_job = match job {
        Some(j) => view
            .job(&j)?
            .filter(|j| j.kind == JobKind::Backup && j.env == env && !j.state.is_final()),
        None => None,
    };
    // A backup job holding a reserved id: every other commit of the environment waits.
    if let Some(active) = reserving_job(view, env)? {
        if own_job.as_ref().map(|j| j.id) != Some(active.id) {
            return Ok(Decision::refuse(
                ErrorCode::JobRunning,
                format!(
                    "environment {env} has a backup job {} in progress ({}); it holds the next backup id ({}), so no other backup of {env} commits until it ends — wait for it or cancel it",
                    active.id,
                    active.state.as_str(),
                    active.reserved_backup.map(|b| b.to_string()).unwrap_or_default()
                ),
            ));
        }
    }

    let time = match own_job.as_ref().and_then(|j| j.reserved_backup) {
        Some(reserved) => {
            // Still newer than every id before it: every other commit was refused since the
            // reservation. Checked all the same; a commit never takes an id out of order.
            // The mark is at least every id ever given, so with a mark only the reserved id
            // itself can be taken already (this job committed before); only a catalog from
            // before the mark was kept is scanned. (A scan on every commit made a commit cost
            // O(backups of the environment).)
            let mark = view.last_id(env)?;
            let taken = match mark {
                Some(_) => view.backup(&reserved)?.is_some(),
                None => view
                    .backups(Some(env))?
                    .iter()
                    .any(|b| b.id.time >= reserved.time),
            };
            if reserved.env != env || mark.is_some_and(|t| t > reserved.time) || taken {
                return Ok(Decision::refuse(
                    ErrorCode::Conflict,
                    format!(
                        "the id {reserved} reserved by backup job {} is no longer the newest of environment {env} (last id given: {}); nothing was committed",
                        own_job.as_ref().map(|j| j.id).unwrap_or_default(),
                        mark.map(|t| BackupId::new(env, t).to_string()).unwrap_or_default()
                    ),
                ));
            }
            reserved.time
        }
        None => match next_free_time(view, env, requested)? {
            Some(t) => t,
            None => {
                return Ok(Decision::refuse(
                    ErrorCode::Conflict,
                    format!("environment {env} has no free backup second after {requested}"),
                ))
            }
        },
    };

    let id = BackupId::new(env, time);
    let mut stored = record.clone();
    stored.id = id;
    // Protection is an admin's act on a committed backup, never part of a commit.
    stored.protected = false;
    let mut writes = Vec::with_capacity(3);
    writes.push(Write::PutLastId { env, time });
    if !stored.name.is_empty() {
        writes.push(Write::PutName {
            env,
            name: stored.name.clone(),
            time,
        });
    }
    writes.push(Write::PutBackup(Box::new(stored)));
    if let Some(mut s) = session {
        s.committed = Some(id);
        writes.push(Write::PutSession(s));
    }
    // The environment's backups are read only when something here needs them (a backup to
    // replace, retention to apply): reading them on every commit made a commit cost
    // O(backups of the environment), and filling one environment quadratic.
    let replacing = own_job
        .as_ref()
        .is_some_and(|j| j.options.replace.is_some());
    let mut existing = if replacing || effective_config(view, env)?.keep_max.is_some() {
        view.backups(Some(env))?
    } else {
        Vec::new()
    };
    let mut removed = Vec::new();
    // The backup job it is committed in names it at once, so the job's result shows the new
    // backup before the agent reports the job finished.
    if let Some(mut j) = own_job {
        j.result.backup = Some(id);
        j.log(
            now_ms,
            cairn_core::job::LogLevel::Info,
            format!(
                "backup {id} committed: {} files, {} bytes ({} stored)",
                record.file_count, record.logical_size, record.stored_size
            ),
        );
        if let Some(replace) = j.options.replace {
            replace_writes(view, env, replace, &mut j, &mut existing, &mut writes)?;
            removed.extend(
                j.result
                    .replaced
                    .filter(|_| j.result.replace_refused.is_none()),
            );
            match (j.result.replaced, j.result.replace_refused) {
                (Some(victim), None) => j.log(
                    now_ms,
                    cairn_core::job::LogLevel::Info,
                    format!("replaced backup {victim} (removed)"),
                ),
                (Some(victim), Some(code)) => {
                    let text = format!(
                        "kept backup {victim} it was to replace [{}]: {}",
                        code.as_str(),
                        j.result.replace_reason
                    );
                    j.log(now_ms, cairn_core::job::LogLevel::Warn, text)
                }
                _ => {}
            }
        }
        writes.push(Write::PutJob(Box::new(j)));
    }
    existing.push(BackupRecord {
        id,
        protected: false,
        ..record.clone()
    });
    removed.extend(retention_writes(
        view,
        by,
        env,
        &existing,
        now_ms,
        &mut writes,
    )?);
    Ok(Decision {
        writes,
        response: Response::Committed { id, removed },
    })
}

/// The time of the last backup id given to `env`: the recorded mark, or for catalogs from
/// before the mark was kept, the newest stored backup.
fn last_given<V: CatalogRead + ?Sized>(view: &V, env: EnvId) -> Result<Option<i64>, V::Error> {
    Ok(match view.last_id(env)? {
        Some(t) => Some(t),
        None => view.backups(Some(env))?.iter().map(|b| b.id.time).max(),
    })
}

/// The next backup id of `env`, as a time: the first free second at or after `from` and
/// after every id the environment was given before (deleted ones too). So the newest id is
/// the newest commit (or reservation) whatever the proposers' clocks say, retention never
/// takes a backup it has just acknowledged for an older one, and an id once deleted never
/// names other content. `None` when no second up to [`MAX_BACKUP_TIME`] is free. The catalog
/// is finite, so the search ends, and every member reaches the same answer from the same
/// state.
pub(crate) fn next_free_time<V: CatalogRead + ?Sized>(
    view: &V,
    env: EnvId,
    from: i64,
) -> Result<Option<i64>, V::Error> {
    let mut time = match last_given(view, env)? {
        Some(t) if t >= from => t.saturating_add(1),
        _ => from,
    };
    if time > MAX_BACKUP_TIME {
        return Ok(None);
    }
    while view.backup(&BackupId::new(env, time))?.is_some() {
        match time.checked_add(1).filter(|t| *t <= MAX_BACKUP_TIME) {
            Some(next) => time = next,
            None => return Ok(None),
        }
    }
    Ok(Some(time))
}

/// The environment's active backup job, if it holds a reserved id (see the module doc):
/// while it does, no other backup of the environment commits.
pub(crate) fn reserving_job<V: CatalogRead + ?Sized>(
    view: &V,
    env: EnvId,
) -> Result<Option<Job>, V::Error> {
    let Some(id) = view.active_job(env)? else {
        return Ok(None);
    };
    Ok(view.job(&id)?.filter(|j| {
        j.kind == JobKind::Backup && !j.state.is_final() && j.reserved_backup.is_some()
    }))
}

/// "Replace a backup", decided in the commit of the backup job that asked for it
/// ([`cairn_core::job::JobOptions::replace`]): the backup it names, or the oldest of
/// `existing` (the environment's backups before this commit), is removed by the same write
/// that commits the new one, so there is never a moment with the new backup and the old one
/// both gone or both kept by a half-done replace. A victim that is protected, gone, or of
/// another environment is kept and the commit goes ahead: the new backup is already durable,
/// and refusing it would lose the work while removing a protected backup is never allowed.
/// The job's result records the victim and, when kept, the refusal's code and text; adds the
/// removal to `writes` and drops the victim from `existing` (retention runs after it).
fn replace_writes<V: CatalogRead + ?Sized>(
    view: &V,
    env: EnvId,
    replace: cairn_core::job::Replace,
    job: &mut Job,
    existing: &mut Vec<BackupRecord>,
    writes: &mut Vec<Write>,
) -> Result<(), V::Error> {
    let victim = match replace {
        cairn_core::job::Replace::Oldest => {
            match existing.iter().min_by_key(|b| b.id.time) {
                Some(b) => b.id,
                // Nothing to replace: the first backup of the environment.
                None => return Ok(()),
            }
        }
        cairn_core::job::Replace::Backup(b) => b,
    };
    job.result.replaced = Some(victim);
    let refusal = if victim.env != env {
        Some((
            ErrorCode::InvalidArgument,
            format!("backup {victim} is not a backup of environment {env}"),
        ))
    } else {
        let d = delete_backup(view, &victim)?;
        match d.response.refusal() {
            Some((code, message)) => Some((code, message.to_string())),
            None => {
                writes.extend(d.writes);
                existing.retain(|b| b.id != victim);
                None
            }
        }
    };
    if let Some((code, reason)) = refusal {
        job.result.replace_refused = Some(code);
        job.result.replace_reason = reason;
    }
    Ok(())
}

/// The settings in force for `env`: its own, then the cluster-wide ones.
fn effective_config<V: CatalogRead + ?Sized>(view: &V, env: EnvId) -> Result<EnvConfig, V::Error> {
    Ok(view
        .env_config(env)?
        .merged(&view.env_config(EnvId::GLOBAL)?))
}

/// Adds the removals retention makes among `backups` (all of `env`'s, as they will be) to
/// `writes`, and returns their ids. Triggered by a principal that may not delete, it spares
/// backups younger than the grace (see `cairn_core::retention`).
fn retention_writes<V: CatalogRead + ?Sized>(
    view: &V,
    by: &Principal,
    env: EnvId,
    backups: &[BackupRecord],
    now_ms: i64,
    writes: &mut Vec<Write>,
) -> Result<Vec<BackupId>, V::Error> {
    let config = effective_config(view, env)?;
    if config.keep_max.is_none() {
        return Ok(Vec::new());
    }
    let candidates: Vec<Candidate> = backups
        .iter()
        .map(|b| Candidate {
            id: b.id,
            protected: b.protected,
        })
        .collect();
    let young_from = if crate::authz::may_delete(by) {
        None
    } else {
        Some(now_ms.div_euclid(1000) - config.grace_secs())
    };
    let removed = cairn_core::retention::excess(&candidates, &config, young_from);
    for id in &removed {
        if let Some(b) = backups.iter().find(|b| b.id == *id) {
            if !b.name.is_empty() {
                writes.push(Write::DeleteName {
                    env,
                    name: b.name.clone(),
                });
            }
        }
        writes.push(Write::DeleteBackup(*id));
    }
    Ok(removed)
}

/// Stores an environment's settings (or the cluster-wide ones) and applies the retention
/// they now ask for, to that environment (or to every environment).
pub(crate) fn set_env_config<V: CatalogRead + ?Sized>(
    view: &V,
    by: &Principal,
    env: EnvId,
    config: &EnvConfig,
    now_ms: i64,
) -> Result<Decision, V::Error> {
    if let Err(why) = config.validate() {
        return Ok(Decision::refuse(ErrorCode::InvalidArgument, why));
    }
    // The retention below reads the settings through the view: decide it over a view
    // that already holds the new ones.
    let next = WithConfig {
        inner: view,
        env,
        config,
    };
    let mut writes = vec![Write::PutEnvConfig(env, config.clone())];
    let envs: Vec<EnvId> = if env == EnvId::GLOBAL {
        let mut all: Vec<EnvId> = view.backups(None)?.iter().map(|b| b.id.env).collect();
        all.sort_unstable();
        all.dedup();
        all
    } else {
        vec![env]
    };
    let mut removed = Vec::new();
    for e in envs {
        let backups = view.backups(Some(e))?;
        removed.extend(retention_writes(
            &next,
            by,
            e,
            &backups,
            now_ms,
            &mut writes,
        )?);
    }
    Ok(Decision {
        writes,
        response: Response::Configured { removed },
    })
}

/// A view in which one environment's settings are already replaced.
struct WithConfig<'a, V: ?Sized> {
    inner: &'a V,
    env: EnvId,
    config: &'a EnvConfig,
}

impl<V: CatalogRead + ?Sized> CatalogRead for WithConfig<'_, V> {
    type Error = V::Error;
    fn backup(&self, id: &BackupId) -> Result<Option<BackupRecord>, V::Error> {
        self.inner.backup(id)
    }
    fn name_owner(&self, env: EnvId, name: &str) -> Result<Option<i64>, V::Error> {
        self.inner.name_owner(env, name)
    }
    fn placement(&self) -> Result<Option<Epoch>, V::Error> {
        self.inner.placement()
    }
    fn cluster_id(&self) -> Result<Option<uuid::Uuid>, V::Error> {
        self.inner.cluster_id()
    }
    fn host(&self, id: &str) -> Result<Option<HostRecord>, V::Error> {
        self.inner.host(id)
    }
    fn env(&self, eid: EnvId) -> Result<Option<EnvRecord>, V::Error> {
        self.inner.env(eid)
    }
    fn job(&self, id: &uuid::Uuid) -> Result<Option<Job>, V::Error> {
        self.inner.job(id)
    }
    fn active_job(&self, env: EnvId) -> Result<Option<uuid::Uuid>, V::Error> {
        self.inner.active_job(env)
    }
    fn token(&self, id: &str) -> Result<Option<TokenRecord>, V::Error> {
        self.inner.token(id)
    }
    fn join_token(&self, id: &str) -> Result<Option<JoinTokenRecord>, V::Error> {
        self.inner.join_token(id)
    }
    fn join_tokens(&self) -> Result<Vec<JoinTokenRecord>, V::Error> {
        self.inner.join_tokens()
    }
    fn backups(&self, env: Option<EnvId>) -> Result<Vec<BackupRecord>, V::Error> {
        self.inner.backups(env)
    }
    fn env_config(&self, env: EnvId) -> Result<EnvConfig, V::Error> {
        if env == self.env {
            Ok(self.config.clone())
        } else {
            self.inner.env_config(env)
        }
    }
    fn session(&self, id: &uuid::Uuid) -> Result<Option<Session>, V::Error> {
        self.inner.session(id)
    }
    fn last_id(&self, env: EnvId) -> Result<Option<i64>, V::Error> {
        self.inner.last_id(env)
    }
}

/// Protects a backup or lifts the protection.
pub(crate) fn protect_backup<V: CatalogRead + ?Sized>(
    view: &V,
    id: &BackupId,
    protected: bool,
) -> Result<Decision, V::Error> {
    let Some(mut record) = view.backup(id)? else {
        return Ok(Decision::refuse(
            ErrorCode::BackupNotFound,
            format!("backup {id} does not exist"),
        ));
    };
    record.protected = protected;
    Ok(Decision {
        writes: vec![Write::PutBackup(Box::new(record.clone()))],
        response: Response::Backup {
            record: Box::new(record),
        },
    })
}

pub(crate) fn delete_backup<V: CatalogRead + ?Sized>(
    view: &V,
    id: &BackupId,
) -> Result<Decision, V::Error> {
    let Some(existing) = view.backup(id)? else {
        return Ok(Decision::refuse(
            ErrorCode::BackupNotFound,
            format!("backup {id} does not exist"),
        ));
    };
    if existing.protected {
        return Ok(Decision::refuse(
            ErrorCode::Protected,
            format!("backup {id} is protected; an admin unprotects it before it can be removed"),
        ));
    }
    let mut writes = Vec::with_capacity(2);
    if !existing.name.is_empty() {
        writes.push(Write::DeleteName {
            env: id.env,
            name: existing.name,
        });
    }
    writes.push(Write::DeleteBackup(*id));
    Ok(Decision {
        writes,
        response: Response::Deleted,
    })
}

pub(crate) fn update_backup<V: CatalogRead + ?Sized>(
    view: &V,
    id: &BackupId,
    name: Option<&str>,
    description: Option<&str>,
    tags: Option<&[String]>,
    protected: Option<bool>,
) -> Result<Decision, V::Error> {
    let Some(mut record) = view.backup(id)? else {
        return Ok(Decision::refuse(
            ErrorCode::BackupNotFound,
            format!("backup {id} does not exist"),
        ));
    };
    let env = id.env;
    let mut writes = Vec::with_capacity(3);
    if let Some(new_name) = name {
        if new_name != record.name {
            if !new_name.is_empty() {
                if let Some(time) = view.name_owner(env, new_name)? {
                    if time != id.time {
                        return Ok(Decision::refuse(
                            ErrorCode::DuplicateName,
                            format!(
                                "environment {env} already has a backup named {new_name:?}: {}",
                                BackupId::new(env, time)
                            ),
                        ));
                    }
                }
            }
            if !record.name.is_empty() {
                writes.push(Write::DeleteName {
                    env,
                    name: std::mem::take(&mut record.name),
                });
            }
            if !new_name.is_empty() {
                writes.push(Write::PutName {
                    env,
                    name: new_name.to_string(),
                    time: id.time,
                });
            }
            record.name = new_name.to_string();
        }
    }
    if let Some(description) = description {
        record.description = description.to_string();
    }
    if let Some(tags) = tags {
        record.tags = tags.to_vec();
    }
    if let Some(p) = protected {
        record.protected = p;
    }
    writes.push(Write::PutBackup(Box::new(record)));
    Ok(Decision {
        writes,
        response: Response::Updated,
    })
}
