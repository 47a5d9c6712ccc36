//! The metadata group's durable state: raft log, vote and state machine in one sled database.
//!
//! # Layout
//!
//! One sled `Db` at `<dir>/meta.sled` holds every tree:
//!
//! | tree           | key                                   | value                          |
//! |----------------|---------------------------------------|--------------------------------|
//! | `raft_log`     | log index, u64 big-endian             | JSON `Entry<TypeConfig>`       |
//! | `raft_state`   | `vote`, `committed`, `last_purged`    | JSON `Vote` / `LogId`          |
//! | `sm_meta`      | `last_applied`, `last_membership`     | JSON `LogId` / `StoredMembership` |
//! | `backups`      | env uuid (16 bytes) + time u64 BE (8) | JSON `BackupRecord`            |
//! | `backup_names` | env uuid (16 bytes) + name (UTF-8)    | time u64 BE                    |
//! | `cluster`      | `placement`, `cluster_id`, `env/<eid>`, `session/<id>`, `host/<id>`, `envrec/<eid>`, `job/<id>`, `active/<eid>`, `token/<id>` | JSON (ids as raw 16 bytes or UTF-8) |
//! | `sm_snapshot`  | `meta`, `data`                        | JSON `SnapshotMeta`, snapshot bytes |
//!
//! The `backups` key makes a prefix scan list one environment's backups oldest first, and a
//! whole-tree scan list them by environment, then time. `backup_names` is the index that lets
//! a name-uniqueness check run inside a transaction (sled transactions cannot scan).
//! Every tree of the state machine's data is named in `SM_DATA_TREES`; snapshots dump and
//! restore exactly those, so a new catalog tree is one more name there.
//!
//! # Fsync order
//!
//! sled's `flush_async` can deadlock in 0.34.7 and is never called. Durability comes from the
//! blocking `Db::flush`, run on a blocking thread (`spawn_blocking`). One flush makes every
//! tree of the database durable, which the rules below rely on.
//!
//! - **append**: the entries go in as one sled batch, then `flush`, and only then is openraft
//!   told through `LogFlushed` that they are durable. A leader counts its own acknowledgement
//!   only after that, so a committed entry is on disk on a quorum.
//! - **save_vote**: insert, then `flush` before returning: a forgotten vote would let a node
//!   vote twice in one term.
//! - **truncate**: remove the conflicting suffix, then `flush`, so the log after a crash is the
//!   one openraft last saw.
//! - **purge**: write `last_purged`, `flush`, then delete the entries. The flush also makes the
//!   state machine durable up to `last_applied`, which openraft guarantees is at or past the
//!   purge point; so after a crash at any step, no entry is gone that the durable state machine
//!   does not already contain, and `last_purged` covers every deleted index.
//! - **apply**: no flush. If a crash loses the tail of applied entries, `last_applied` is lost
//!   with them (same transaction) and openraft applies them again from the log.
//! - **snapshot build / install**: the snapshot (and, for install, the replaced state) is
//!   written, then `flush`, before openraft hears that it is done.
//!
//! # Why one transaction per apply
//!
//! An `apply` call writes the data changes of all its entries, `last_applied` and, if an
//! entry changed membership, `last_membership` in one multi-tree sled transaction. Either
//! all of it survives a crash or none of it does, so the state machine never holds a change
//! without knowing it applied that entry (it would apply it twice) nor the reverse (it would
//! skip it). The entries decide first, in log order, over the trees plus the changes of the
//! batch's earlier entries (an in-memory overlay: exactly as if applied one by one), and the
//! transaction then only writes. Decisions read outside it because sled runs a
//! transaction's closure under its global write lock: a scan there (retention lists an
//! environment's backups) would deadlock the process.
//!
//! # Why refusals are values
//!
//! openraft stops a node on any `StorageError` it gets from the state machine. A duplicate
//! name or an unknown backup is a fact about the request, the same on every member, so
//! [`crate::catalog::decide`] answers it as `Response::Refused` and writes nothing. A
//! `StorageError` here means the disk or the stored bytes are bad, and stopping is right.
//!
//! # Concurrency
//!
//! openraft builds snapshots in a task of their own, beside further applies. sled has no
//! point-in-time read, so applying, building a snapshot and installing one take the same
//! mutex (on a blocking thread); a build therefore reads one consistent state. Plain catalog
//! reads ([`StateMachineStore::get_backup`] and friends) take no lock; callers wanting
//! linearizable reads go through `MetaNode::read_barrier` first.
//!
//! # Swapping sled
//!
//! The catalog's rules live in [`crate::catalog`] and see the data only through
//! `CatalogRead` and `Write`; only this module knows sled. Another engine means another
//! implementation of this module's two openraft traits, not new rules.

// openraft's storage traits return its `StorageError` (over 200 bytes); the private helpers
// that feed them return it too rather than converting twice.
#![allow(clippy::result_large_err)]

use std::path::{Path, PathBuf};

use cairn_core::{BackupId, EnvId};

use crate::error::MetaError;

mod log;
mod sm;
pub mod snapshot;

pub use log::LogStore;
pub use sm::{SnapshotBuilder, StateMachineStore};

pub(crate) const LOG_TREE: &str = "raft_log";
pub(crate) const RAFT_STATE_TREE: &str = "raft_state";
pub(crate) const SM_META_TREE: &str = "sm_meta";
pub(crate) const BACKUPS_TREE: &str = "backups";
pub(crate) const BACKUP_NAMES_TREE: &str = "backup_names";
pub(crate) const SNAPSHOT_TREE: &str = "sm_snapshot";
/// Cluster-wide settings: the placement epoch (`placement`).
pub(crate) const CLUSTER_TREE: &str = "cluster";

/// The trees that hold the state machine's data, in snapshot order.
pub(crate) const SM_DATA_TREES: [&str; 3] = [BACKUPS_TREE, BACKUP_NAMES_TREE, CLUSTER_TREE];

pub(crate) const KEY_VOTE: &[u8] = b"vote";
pub(crate) const KEY_COMMITTED: &[u8] = b"committed";
pub(crate) const KEY_LAST_PURGED: &[u8] = b"last_purged";
pub(crate) const KEY_LAST_APPLIED: &[u8] = b"last_applied";
pub(crate) const KEY_LAST_MEMBERSHIP: &[u8] = b"last_membership";
pub(crate) const KEY_SNAPSHOT_META: &[u8] = b"meta";
pub(crate) const KEY_SNAPSHOT_DATA: &[u8] = b"data";
pub(crate) const KEY_PLACEMENT: &[u8] = b"placement";
pub(crate) const KEY_CLUSTER_ID: &[u8] = b"cluster_id";
/// Key prefixes in the cluster tree: per-environment config, open backup sessions.
pub(crate) const PREFIX_ENV_CONFIG: &[u8] = b"env/";
pub(crate) const PREFIX_SESSION: &[u8] = b"session/";
/// Key prefix in the cluster tree: each environment's last backup id time.
pub(crate) const PREFIX_LAST_ID: &[u8] = b"last-id/";
/// Key prefixes in the cluster tree: hosts (by id), environments, jobs (UUIDv7, so key order
/// is creation order), each environment's active job, agent tokens (by id).
pub(crate) const PREFIX_HOST: &[u8] = b"host/";
pub(crate) const PREFIX_ENV: &[u8] = b"envrec/";
pub(crate) const PREFIX_JOB: &[u8] = b"job/";
pub(crate) const PREFIX_ACTIVE: &[u8] = b"active/";
pub(crate) const PREFIX_TOKEN: &[u8] = b"token/";
/// Key prefix in the cluster tree: join tokens (by id), kept after redemption.
pub(crate) const PREFIX_JOIN: &[u8] = b"join/";
/// Key in the cluster tree: the totals of every backup (`cairn_core::totals`), kept in the
/// same transaction as each change of the `backups` tree. Its absence means "not kept yet"
/// (a database or snapshot of a release that kept none): they are then rebuilt from the
/// records (see `StateMachineStore::ensure_totals`).
pub(crate) const KEY_TOTALS: &[u8] = b"totals";
/// Key prefix in the cluster tree: each environment's backup totals (by its 16 id bytes).
pub(crate) const PREFIX_ENV_TOTALS: &[u8] = b"totals/";

/// Returns the key of an environment's backup totals in the cluster tree.
pub(crate) fn env_totals_key(env: EnvId) -> Vec<u8> {
    [PREFIX_ENV_TOTALS, env.0.as_bytes().as_slice()].concat()
}

/// Returns `prefix` followed by `rest`: a key in the cluster tree.
pub(crate) fn cluster_key(prefix: &[u8], rest: &[u8]) -> Vec<u8> {
    [prefix, rest].concat()
}

/// Returns the key of an environment's config in the cluster tree.
pub(crate) fn env_config_key(env: EnvId) -> Vec<u8> {
    [PREFIX_ENV_CONFIG, env.0.as_bytes().as_slice()].concat()
}

/// Returns the key of a backup session in the cluster tree.
/// Key of the time of the last backup id given to an environment, in the cluster tree.
pub(crate) fn last_id_key(env: EnvId) -> Vec<u8> {
    [PREFIX_LAST_ID, env.to_string().as_bytes()].concat()
}

pub(crate) fn session_key(id: &uuid::Uuid) -> Vec<u8> {
    [PREFIX_SESSION, id.as_bytes().as_slice()].concat()
}

/// Returns the path of the sled database inside a metadata directory.
pub fn db_path(dir: &Path) -> PathBuf {
    dir.join("meta.sled")
}

/// Opens (creating if needed) the metadata database in `dir` and returns the log store and
/// the state machine over it.
pub fn open(dir: &Path) -> Result<(LogStore, StateMachineStore), MetaError> {
    let db = open_db(dir)?;
    stores(&db)
}

/// Opens the sled database of a metadata directory.
pub(crate) fn open_db(dir: &Path) -> Result<sled::Db, MetaError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        MetaError::Storage(format!(
            "cannot create metadata directory {}: {e}",
            dir.display()
        ))
    })?;
    let path = db_path(dir);
    // sled reports a held lock only in an error message: ask the lock itself first.
    let held = cairn_core::fslock::held(&path.join("db")).map_err(|e| {
        MetaError::Storage(format!("cannot read the lock of {}: {e}", path.display()))
    })?;
    if held {
        return Err(MetaError::InUse(path.display().to_string()));
    }
    let db = sled::Config::new().path(&path).open().map_err(|e| {
        MetaError::Storage(format!(
            "cannot open metadata database {}: {e}",
            path.display()
        ))
    })?;
    check_format(&db, &path)?;
    Ok(db)
}

/// Version of the catalog database's layout (its trees and the encoding of their keys and
/// values), kept under [`FORMAT_KEY`] in sled's default tree. It rises when a release
/// changes the layout in a way the previous one cannot read; that release then converts
/// older databases on open. A database written before versions were kept has no key and is
/// format 1.
pub const FORMAT: u32 = 1;
const FORMAT_KEY: &[u8] = b"cairn-meta-format";

/// Refuses a database of a format this build cannot read (with one line naming both), and
/// records the format in one that has none yet.
fn check_format(db: &sled::Db, path: &Path) -> Result<(), MetaError> {
    let storage = |e: sled::Error| {
        MetaError::Storage(format!(
            "cannot read the format of metadata database {}: {e}",
            path.display()
        ))
    };
    match db.get(FORMAT_KEY).map_err(storage)? {
        None => {
            db.insert(FORMAT_KEY, &FORMAT.to_le_bytes()[..])
                .map_err(storage)?;
            db.flush().map_err(storage)?;
            Ok(())
        }
        Some(v) => {
            let found = <[u8; 4]>::try_from(v.as_ref()).map(u32::from_le_bytes);
            match found {
                Ok(FORMAT) => Ok(()),
                Ok(n) => Err(MetaError::Format(format!(
                    "metadata database {} has format {n}; this build reads format {FORMAT}: \
                     run the release that wrote it, or a newer one",
                    path.display()
                ))),
                Err(_) => Err(MetaError::Corrupt(format!(
                    "metadata database {} has a malformed format marker {:?}",
                    path.display(),
                    v.as_ref()
                ))),
            }
        }
    }
}

/// Builds the log store and the state machine over an open database.
pub(crate) fn stores(db: &sled::Db) -> Result<(LogStore, StateMachineStore), MetaError> {
    let open = |name: &str| {
        db.open_tree(name)
            .map_err(|e| MetaError::Storage(format!("cannot open tree {name}: {e}")))
    };
    let log = LogStore::new(db.clone(), open(LOG_TREE)?, open(RAFT_STATE_TREE)?);
    let data = SM_DATA_TREES
        .iter()
        .map(|name| open(name))
        .collect::<Result<Vec<_>, _>>()?;
    let sm = StateMachineStore::new(db.clone(), open(SM_META_TREE)?, data, open(SNAPSHOT_TREE)?);
    sm.ensure_totals()?;
    Ok((log, sm))
}

/// Makes everything written to `db` so far durable, on a blocking thread.
pub(crate) async fn flush(db: &sled::Db) -> Result<(), std::io::Error> {
    let db = db.clone();
    tokio::task::spawn_blocking(move || db.flush().map(|_| ()))
        .await
        .map_err(|e| std::io::Error::other(format!("flush task failed: {e}")))?
        .map_err(std::io::Error::from)
}

/// Returns the key of a backup in the `backups` tree.
pub(crate) fn backup_key(id: &BackupId) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(id.env.0.as_bytes());
    // Stored times are within 0..=MAX_BACKUP_TIME (see catalog), so the cast keeps order.
    key[16..].copy_from_slice(&(id.time as u64).to_be_bytes());
    key
}

/// Returns the key prefix of one environment, in `backups` and `backup_names`.
pub(crate) fn env_prefix(env: EnvId) -> [u8; 16] {
    *env.0.as_bytes()
}

/// Returns the key of a backup name in the `backup_names` tree.
pub(crate) fn name_key(env: EnvId, name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(16 + name.len());
    key.extend_from_slice(env.0.as_bytes());
    key.extend_from_slice(name.as_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new database records its format; one of an unknown format (a newer release's) is
    /// refused with one line naming both, and left unchanged; one of a release that kept no
    /// format (format 1) opens and gets the marker.
    #[test]
    fn a_database_of_another_format_is_refused_with_one_line() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = open_db(dir.path()).unwrap();
            assert_eq!(
                db.get(FORMAT_KEY).unwrap().unwrap().as_ref(),
                FORMAT.to_le_bytes()
            );
            db.insert(FORMAT_KEY, &7u32.to_le_bytes()[..]).unwrap();
            db.flush().unwrap();
        }
        let err = open_db(dir.path()).expect_err("format 7 is refused");
        assert!(matches!(err, MetaError::Format(_)), "{err:?}");
        assert_eq!(err.code(), cairn_core::ErrorCode::VersionMismatch);
        let line = err.to_string();
        assert!(
            line.contains("has format 7") && line.contains("reads format 1"),
            "{line}"
        );
        assert_eq!(line.lines().count(), 1);

        let old = tempfile::tempdir().unwrap();
        {
            let db = open_db(old.path()).unwrap();
            db.remove(FORMAT_KEY).unwrap();
            db.flush().unwrap();
        }
        let db = open_db(old.path()).unwrap();
        assert_eq!(
            db.get(FORMAT_KEY).unwrap().unwrap().as_ref(),
            1u32.to_le_bytes()
        );
    }

    #[test]
    fn backup_keys_sort_by_env_then_time() {
        let a = EnvId::derive("a");
        let b = EnvId::derive("b");
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        let mut keys = vec![
            backup_key(&BackupId::new(hi, 1)),
            backup_key(&BackupId::new(lo, 300)),
            backup_key(&BackupId::new(lo, 2)),
            backup_key(&BackupId::new(hi, 0)),
        ];
        keys.sort();
        assert_eq!(
            keys,
            vec![
                backup_key(&BackupId::new(lo, 2)),
                backup_key(&BackupId::new(lo, 300)),
                backup_key(&BackupId::new(hi, 0)),
                backup_key(&BackupId::new(hi, 1)),
            ]
        );
        assert!(backup_key(&BackupId::new(lo, 7)).starts_with(&env_prefix(lo)));
        assert!(name_key(lo, "x").starts_with(&env_prefix(lo)));
    }
}
