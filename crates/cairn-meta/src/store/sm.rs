//! The state machine in sled: the catalog trees, the applied state and the current snapshot
//! (see the module note in `store` for the transaction and fsync rules).

use std::io::Cursor;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use cairn_core::job::{EnvRecord, HostRecord, Job, JoinTokenRecord, TokenRecord};
use cairn_core::totals::BackupTotals;
use cairn_core::{BackupId, BackupRecord, BackupType, EnvId};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
    StorageIOError, StoredMembership,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{
    ConflictableTransactionError, TransactionError, Transactional, TransactionalTree,
};

use super::snapshot::{decode, Encoder, SnapshotContents, SnapshotHeader};
use super::{
    backup_key, cluster_key, env_prefix, env_totals_key, name_key, KEY_LAST_APPLIED,
    KEY_LAST_MEMBERSHIP, KEY_PLACEMENT, KEY_SNAPSHOT_DATA, KEY_SNAPSHOT_META, KEY_TOTALS,
    PREFIX_ACTIVE, PREFIX_ENV, PREFIX_ENV_TOTALS, PREFIX_HOST, PREFIX_JOB, PREFIX_JOIN,
    PREFIX_TOKEN, SM_DATA_TREES,
};
use crate::catalog::{decide, CatalogRead, Write};
use crate::command::Response;
use crate::error::MetaError;
use crate::{LogEntry, StorageError, TypeConfig};

type Membership = StoredMembership<u64, BasicNode>;
type Meta = SnapshotMeta<u64, BasicNode>;

/// Positions of the data trees in `SM_DATA_TREES`.
const BACKUPS: usize = 0;
const NAMES: usize = 1;
const CLUSTER: usize = 2;

/// The catalog state machine of one node, in sled.
///
/// Cloning is cheap and shares the same trees: the node keeps a clone to serve catalog reads
/// while openraft owns the one it applies to.
#[derive(Clone)]
pub struct StateMachineStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    meta: sled::Tree,
    /// The data trees, in `SM_DATA_TREES` order.
    data: Vec<sled::Tree>,
    snapshot: sled::Tree,
    /// Serialises apply, snapshot build and snapshot install (see the `store` note).
    lock: Mutex<()>,
    /// The last digest and the applied log id it covers (see `digest`).
    digest_cache: Mutex<Option<(Option<LogId<u64>>, String)>>,
}

/// Builds snapshots of a [`StateMachineStore`]; it shares the store's trees and lock.
pub struct SnapshotBuilder {
    inner: Arc<Inner>,
}

/// The abort reason of a state-machine transaction: always a storage-level failure.
type TxError = ConflictableTransactionError<String>;

/// The catalog as a batch of entries decides on it: the data trees as applied so far, plus
/// the changes of the batch's earlier entries (kept here, in memory, per tree).
///
/// # Why decisions read outside the transaction
/// sled runs a transaction's closure while holding its global write lock, and a plain
/// read (a scan, which transactions cannot do) takes the read side of that lock: a scan
/// inside the closure deadlocks the whole process. So the entries of a batch decide over
/// this view (plain reads, scans included, merged with the pending changes), and one
/// transaction afterwards writes every change together with `last_applied`. Applies,
/// snapshot builds and installs hold the store's mutex, so nothing else changes the trees
/// between the reads and the write.
struct Overlay<'a> {
    /// The data trees, in `SM_DATA_TREES` order.
    trees: &'a [sled::Tree],
    /// Per tree: key → new value (`None`: removed).
    changes: std::cell::RefCell<Vec<TreeChanges>>,
}

/// The changes a batch made to one tree: key → new value (`None`: removed).
type TreeChanges = std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>>;

type ViewError = String;

impl<'a> Overlay<'a> {
    fn new(trees: &'a [sled::Tree]) -> Overlay<'a> {
        Overlay {
            trees,
            changes: std::cell::RefCell::new(vec![Default::default(); trees.len()]),
        }
    }

    fn get(&self, tree: usize, key: &[u8]) -> Result<Option<Vec<u8>>, ViewError> {
        if let Some(change) = self.changes.borrow()[tree].get(key) {
            return Ok(change.clone());
        }
        self.trees[tree]
            .get(key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| format!("reading the catalog: {e}"))
    }

    /// Every value under `prefix`, in key order, with the pending changes applied.
    fn scan(&self, tree: usize, prefix: &[u8]) -> Result<Vec<Vec<u8>>, ViewError> {
        let mut found = std::collections::BTreeMap::new();
        for item in self.trees[tree].scan_prefix(prefix) {
            let (k, v) = item.map_err(|e| format!("reading the catalog: {e}"))?;
            found.insert(k.to_vec(), v.to_vec());
        }
        for (k, change) in self.changes.borrow()[tree].range(prefix.to_vec()..) {
            if !k.starts_with(prefix) {
                break;
            }
            match change {
                Some(v) => found.insert(k.clone(), v.clone()),
                None => found.remove(k),
            };
        }
        Ok(found.into_values().collect())
    }

    fn insert(&self, tree: usize, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.changes.borrow_mut()[tree].insert(key.into(), Some(value.into()));
    }

    fn remove(&self, tree: usize, key: impl Into<Vec<u8>>) {
        self.changes.borrow_mut()[tree].insert(key.into(), None);
    }

    fn json<T: DeserializeOwned>(
        &self,
        tree: usize,
        key: &[u8],
        what: &str,
    ) -> Result<Option<T>, ViewError> {
        match self.get(tree, key)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| format!("stored {what} is corrupt: {e}")),
        }
    }

    fn into_changes(self) -> Vec<TreeChanges> {
        self.changes.into_inner()
    }
}

impl CatalogRead for Overlay<'_> {
    type Error = ViewError;

    fn backup(&self, id: &BackupId) -> Result<Option<BackupRecord>, ViewError> {
        self.json(BACKUPS, &backup_key(id), "backup")
    }

    fn name_owner(&self, env: EnvId, name: &str) -> Result<Option<i64>, ViewError> {
        match self.get(NAMES, &name_key(env, name))? {
            None => Ok(None),
            Some(v) => decode_time(&v).map(Some).ok_or_else(|| {
                format!("name index entry {name:?} of environment {env} is corrupt")
            }),
        }
    }

    fn cluster_id(&self) -> Result<Option<uuid::Uuid>, ViewError> {
        match self.get(CLUSTER, super::KEY_CLUSTER_ID)? {
            None => Ok(None),
            Some(v) => uuid::Uuid::from_slice(&v)
                .map(Some)
                .map_err(|e| format!("stored cluster id is corrupt: {e}")),
        }
    }

    fn host(&self, id: &str) -> Result<Option<HostRecord>, ViewError> {
        self.json(CLUSTER, &cluster_key(PREFIX_HOST, id.as_bytes()), "host")
    }

    fn env(&self, eid: EnvId) -> Result<Option<EnvRecord>, ViewError> {
        self.json(
            CLUSTER,
            &cluster_key(PREFIX_ENV, eid.0.as_bytes()),
            "environment",
        )
    }

    fn job(&self, id: &uuid::Uuid) -> Result<Option<Job>, ViewError> {
        self.json(CLUSTER, &cluster_key(PREFIX_JOB, id.as_bytes()), "job")
    }

    fn active_job(&self, env: EnvId) -> Result<Option<uuid::Uuid>, ViewError> {
        match self.get(CLUSTER, &cluster_key(PREFIX_ACTIVE, env.0.as_bytes()))? {
            None => Ok(None),
            Some(v) => uuid::Uuid::from_slice(&v)
                .map(Some)
                .map_err(|e| format!("stored active job is corrupt: {e}")),
        }
    }

    fn token(&self, id: &str) -> Result<Option<TokenRecord>, ViewError> {
        self.json(CLUSTER, &cluster_key(PREFIX_TOKEN, id.as_bytes()), "token")
    }

    fn join_token(&self, id: &str) -> Result<Option<JoinTokenRecord>, ViewError> {
        self.json(
            CLUSTER,
            &cluster_key(PREFIX_JOIN, id.as_bytes()),
            "join token",
        )
    }

    fn join_tokens(&self) -> Result<Vec<JoinTokenRecord>, ViewError> {
        self.scan(CLUSTER, PREFIX_JOIN)?
            .iter()
            .map(|v| {
                serde_json::from_slice(v)
                    .map_err(|e| format!("a stored join token is corrupt: {e}"))
            })
            .collect()
    }

    fn placement(&self) -> Result<Option<cairn_core::placement::Epoch>, ViewError> {
        self.json(CLUSTER, KEY_PLACEMENT, "placement")
    }

    fn backups(&self, env: Option<EnvId>) -> Result<Vec<BackupRecord>, ViewError> {
        let prefix = match env {
            Some(env) => env_prefix(env).to_vec(),
            None => Vec::new(),
        };
        self.scan(BACKUPS, &prefix)?
            .iter()
            .map(|v| {
                serde_json::from_slice(v).map_err(|e| format!("a stored backup is corrupt: {e}"))
            })
            .collect()
    }

    fn env_config(&self, env: EnvId) -> Result<cairn_core::retention::EnvConfig, ViewError> {
        Ok(self
            .json(CLUSTER, &super::env_config_key(env), "environment settings")?
            .unwrap_or_default())
    }

    fn session(
        &self,
        id: &uuid::Uuid,
    ) -> Result<Option<cairn_core::retention::Session>, ViewError> {
        self.json(CLUSTER, &super::session_key(id), "backup session")
    }

    fn last_id(&self, env: EnvId) -> Result<Option<i64>, ViewError> {
        self.json(CLUSTER, &super::last_id_key(env), "last backup id")
    }
}

fn decode_time(v: &[u8]) -> Option<i64> {
    let bytes: [u8; 8] = v.try_into().ok()?;
    i64::try_from(u64::from_be_bytes(bytes)).ok()
}

fn encode_time(t: i64) -> [u8; 8] {
    (t as u64).to_be_bytes()
}

fn tx_json<T: Serialize>(v: &T) -> Result<Vec<u8>, TxError> {
    serde_json::to_vec(v).map_err(|e| ConflictableTransactionError::Abort(e.to_string()))
}

fn view_json<T: Serialize>(v: &T) -> Result<Vec<u8>, ViewError> {
    serde_json::to_vec(v).map_err(|e| e.to_string())
}

/// See [`StateMachineStore::ensure_totals`].
fn ensure_totals(inner: &Inner) -> Result<(), MetaError> {
    let cluster = &inner.data[CLUSTER];
    if cluster.get(KEY_TOTALS).map_err(sled_read)?.is_some() {
        return Ok(());
    }
    let mut all = BackupTotals::default();
    let mut per_env: std::collections::BTreeMap<EnvId, BackupTotals> = Default::default();
    for item in inner.backups().iter() {
        let (_, v) = item.map_err(sled_read)?;
        let r = decode_record(&v)?;
        all.add(&r);
        per_env.entry(r.id.env).or_default().add(&r);
    }
    let json = |t: &BackupTotals| {
        serde_json::to_vec(t).map_err(|e| MetaError::Storage(format!("backup totals: {e}")))
    };
    let mut batch = sled::Batch::default();
    for key in cluster.scan_prefix(PREFIX_ENV_TOTALS).keys() {
        batch.remove(key.map_err(sled_read)?);
    }
    for (env, t) in &per_env {
        batch.insert(env_totals_key(*env), json(t)?);
    }
    batch.insert(KEY_TOTALS, json(&all)?);
    cluster.apply_batch(batch).map_err(sled_read)?;
    if all.count > 0 {
        tracing::info!(
            backups = all.count,
            "backup totals rebuilt from the catalog"
        );
    }
    Ok(())
}

/// Keeps the catalog's and the environment's backup totals in step with one change of the
/// `backups` tree (in the same transaction: the view's changes are written together).
fn count_change(
    view: &Overlay<'_>,
    env: EnvId,
    before: Option<&BackupRecord>,
    after: Option<&BackupRecord>,
) -> Result<(), ViewError> {
    for key in [KEY_TOTALS.to_vec(), env_totals_key(env)] {
        let mut t: BackupTotals = view
            .json(CLUSTER, &key, "backup totals")?
            .unwrap_or_default();
        t.change(before, after);
        view.insert(CLUSTER, key, view_json(&t)?);
    }
    Ok(())
}

/// Records a decision's writes in the view (the transaction writes them later).
fn write_all(view: &Overlay<'_>, writes: &[Write]) -> Result<(), ViewError> {
    for w in writes {
        match w {
            Write::PutBackup(record) => {
                let before = view.backup(&record.id)?;
                count_change(view, record.id.env, before.as_ref(), Some(record))?;
                view.insert(BACKUPS, backup_key(&record.id), view_json(&**record)?);
            }
            Write::DeleteBackup(id) => {
                if let Some(before) = view.backup(id)? {
                    count_change(view, id.env, Some(&before), None)?;
                }
                view.remove(BACKUPS, backup_key(id))
            }
            Write::PutName { env, name, time } => {
                view.insert(NAMES, name_key(*env, name), encode_time(*time));
            }
            Write::DeleteName { env, name } => view.remove(NAMES, name_key(*env, name)),
            Write::PutPlacement(epoch) => view.insert(CLUSTER, KEY_PLACEMENT, view_json(epoch)?),
            Write::PutEnvConfig(env, config) => {
                view.insert(CLUSTER, super::env_config_key(*env), view_json(config)?);
            }
            Write::PutSession(s) => {
                view.insert(CLUSTER, super::session_key(&s.id), view_json(s)?);
            }
            Write::DeleteSession(id) => view.remove(CLUSTER, super::session_key(id)),
            Write::PutLastId { env, time } => {
                view.insert(CLUSTER, super::last_id_key(*env), view_json(time)?);
            }
            Write::PutClusterId(id) => {
                view.insert(CLUSTER, super::KEY_CLUSTER_ID, id.as_bytes().as_slice());
            }
            Write::PutHost(h) => {
                view.insert(
                    CLUSTER,
                    cluster_key(PREFIX_HOST, h.id.as_bytes()),
                    view_json(h)?,
                );
            }
            Write::PutEnv(e) => {
                view.insert(
                    CLUSTER,
                    cluster_key(PREFIX_ENV, e.eid.0.as_bytes()),
                    view_json(e)?,
                );
            }
            Write::DeleteEnv(eid) => {
                view.remove(CLUSTER, cluster_key(PREFIX_ENV, eid.0.as_bytes()))
            }
            Write::PutJob(j) => {
                view.insert(
                    CLUSTER,
                    cluster_key(PREFIX_JOB, j.id.as_bytes()),
                    view_json(&**j)?,
                );
            }
            Write::DeleteJob(id) => view.remove(CLUSTER, cluster_key(PREFIX_JOB, id.as_bytes())),
            Write::PutActive(env, id) => {
                view.insert(
                    CLUSTER,
                    cluster_key(PREFIX_ACTIVE, env.0.as_bytes()),
                    id.as_bytes().as_slice(),
                );
            }
            Write::DeleteActive(env) => {
                view.remove(CLUSTER, cluster_key(PREFIX_ACTIVE, env.0.as_bytes()));
            }
            Write::PutToken(t) => {
                view.insert(
                    CLUSTER,
                    cluster_key(PREFIX_TOKEN, t.id.as_bytes()),
                    view_json(t)?,
                );
            }
            Write::DeleteToken(id) => {
                view.remove(CLUSTER, cluster_key(PREFIX_TOKEN, id.as_bytes()))
            }
            Write::PutJoinToken(t) => {
                view.insert(
                    CLUSTER,
                    cluster_key(PREFIX_JOIN, t.id.as_bytes()),
                    view_json(t)?,
                );
            }
            Write::DeleteJoinToken(id) => {
                view.remove(CLUSTER, cluster_key(PREFIX_JOIN, id.as_bytes()))
            }
        }
    }
    Ok(())
}

fn tx_failure(e: TransactionError<String>) -> AnyError {
    match e {
        TransactionError::Abort(msg) => AnyError::error(msg),
        TransactionError::Storage(e) => AnyError::new(&e),
    }
}

fn read_json<T: DeserializeOwned>(tree: &sled::Tree, key: &[u8]) -> Result<Option<T>, String> {
    match tree.get(key) {
        Ok(None) => Ok(None),
        Ok(Some(v)) => serde_json::from_slice(&v)
            .map(Some)
            .map_err(|e| format!("{} is corrupt: {e}", String::from_utf8_lossy(key))),
        Err(e) => Err(e.to_string()),
    }
}

fn decode_record(v: &[u8]) -> Result<BackupRecord, MetaError> {
    serde_json::from_slice(v).map_err(|e| MetaError::Corrupt(format!("stored backup record: {e}")))
}

fn sled_read(e: sled::Error) -> MetaError {
    MetaError::Storage(format!("reading the catalog: {e}"))
}

/// The catalog as this node has applied it, for decisions about reads (authorization):
/// plain reads, no lock (see the `store` note on concurrency).
impl CatalogRead for StateMachineStore {
    type Error = MetaError;

    fn backup(&self, id: &BackupId) -> Result<Option<BackupRecord>, MetaError> {
        self.get_backup(id)
    }

    fn name_owner(&self, env: EnvId, name: &str) -> Result<Option<i64>, MetaError> {
        match self.inner.data[NAMES]
            .get(name_key(env, name))
            .map_err(sled_read)?
        {
            None => Ok(None),
            Some(v) => decode_time(&v)
                .map(Some)
                .ok_or_else(|| MetaError::Corrupt(format!("name index entry {name:?} of {env}"))),
        }
    }

    fn placement(&self) -> Result<Option<cairn_core::placement::Epoch>, MetaError> {
        StateMachineStore::placement(self)
    }

    fn cluster_id(&self) -> Result<Option<uuid::Uuid>, MetaError> {
        StateMachineStore::cluster_id(self)
    }

    fn host(&self, id: &str) -> Result<Option<HostRecord>, MetaError> {
        StateMachineStore::host(self, id)
    }

    fn env(&self, eid: EnvId) -> Result<Option<EnvRecord>, MetaError> {
        StateMachineStore::env(self, eid)
    }

    fn job(&self, id: &uuid::Uuid) -> Result<Option<Job>, MetaError> {
        StateMachineStore::job(self, id)
    }

    fn active_job(&self, env: EnvId) -> Result<Option<uuid::Uuid>, MetaError> {
        match self.inner.data[CLUSTER]
            .get(cluster_key(PREFIX_ACTIVE, env.0.as_bytes()))
            .map_err(sled_read)?
        {
            None => Ok(None),
            Some(v) => uuid::Uuid::from_slice(&v)
                .map(Some)
                .map_err(|e| MetaError::Corrupt(format!("stored active job: {e}"))),
        }
    }

    fn token(&self, id: &str) -> Result<Option<TokenRecord>, MetaError> {
        StateMachineStore::token(self, id)
    }

    fn join_token(&self, id: &str) -> Result<Option<JoinTokenRecord>, MetaError> {
        self.get_cluster(cluster_key(PREFIX_JOIN, id.as_bytes()), "join token")
    }

    fn join_tokens(&self) -> Result<Vec<JoinTokenRecord>, MetaError> {
        StateMachineStore::join_tokens(self)
    }

    fn backups(&self, env: Option<EnvId>) -> Result<Vec<BackupRecord>, MetaError> {
        self.list_backups(env)
    }

    fn env_config(&self, env: EnvId) -> Result<cairn_core::retention::EnvConfig, MetaError> {
        StateMachineStore::env_config(self, env)
    }

    fn session(
        &self,
        id: &uuid::Uuid,
    ) -> Result<Option<cairn_core::retention::Session>, MetaError> {
        StateMachineStore::session(self, id)
    }

    fn last_id(&self, env: EnvId) -> Result<Option<i64>, MetaError> {
        self.get_cluster(super::last_id_key(env), "last backup id")
    }
}

impl StateMachineStore {
    pub(crate) fn new(
        db: sled::Db,
        meta: sled::Tree,
        data: Vec<sled::Tree>,
        snapshot: sled::Tree,
    ) -> StateMachineStore {
        debug_assert_eq!(data.len(), SM_DATA_TREES.len());
        StateMachineStore {
            inner: Arc::new(Inner {
                db,
                meta,
                data,
                snapshot,
                lock: Mutex::new(()),
                digest_cache: Mutex::new(None),
            }),
        }
    }

    /// Returns the backup with this id.
    pub fn get_backup(&self, id: &BackupId) -> Result<Option<BackupRecord>, MetaError> {
        match self
            .inner
            .backups()
            .get(backup_key(id))
            .map_err(sled_read)?
        {
            None => Ok(None),
            Some(v) => decode_record(&v).map(Some),
        }
    }

    /// Returns the backups of one environment, or of all, ordered by environment then time.
    pub fn list_backups(&self, env: Option<EnvId>) -> Result<Vec<BackupRecord>, MetaError> {
        let iter = match env {
            Some(env) => self.inner.backups().scan_prefix(env_prefix(env)),
            None => self.inner.backups().iter(),
        };
        iter.map(|item| {
            let (_, v) = item.map_err(sled_read)?;
            decode_record(&v)
        })
        .collect()
    }

    /// Returns one page of backups, newest first: those of `env` (or of every environment,
    /// in reverse key order: environment id descending, then newest first) whose id is
    /// strictly below `before`, at most `limit`; and the cursor of the next page (the last
    /// id returned) when more follow. Reads at most `limit + 1` records.
    pub fn backups_page(
        &self,
        env: Option<EnvId>,
        before: Option<&BackupId>,
        limit: usize,
    ) -> Result<(Vec<BackupRecord>, Option<BackupId>), MetaError> {
        let tree = self.inner.backups();
        let upper: Option<Vec<u8>> = before.map(|b| backup_key(b).to_vec());
        let iter: Box<dyn DoubleEndedIterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> =
            match (env, upper) {
                (Some(env), Some(u)) => Box::new(tree.range(env_prefix(env).to_vec()..u)),
                (Some(env), None) => Box::new(tree.scan_prefix(env_prefix(env))),
                (None, Some(u)) => Box::new(tree.range(..u)),
                (None, None) => Box::new(tree.iter()),
            };
        let mut page = Vec::with_capacity(limit.min(1024));
        let mut more = false;
        for item in iter.rev() {
            let (_, v) = item.map_err(sled_read)?;
            if page.len() == limit {
                more = true;
                break;
            }
            page.push(decode_record(&v)?);
        }
        let next = if more {
            page.last().map(|r| r.id)
        } else {
            None
        };
        Ok((page, next))
    }

    /// Returns the totals of the backups of `env`, or of the whole catalog (kept with every
    /// change; no record is read).
    pub fn totals(&self, env: Option<EnvId>) -> Result<BackupTotals, MetaError> {
        let key = match env {
            Some(env) => env_totals_key(env),
            None => KEY_TOTALS.to_vec(),
        };
        Ok(self.get_cluster(key, "backup totals")?.unwrap_or_default())
    }

    /// Rebuilds the backup totals from the records when the catalog holds none (a database
    /// or snapshot written by a release that kept none): once, before any apply; every
    /// member computes the same (`cairn_core::totals`).
    pub(crate) fn ensure_totals(&self) -> Result<(), MetaError> {
        ensure_totals(&self.inner)
    }

    /// Returns the newest backup of an environment (the newest full one if `full_only`).
    pub fn latest_backup(
        &self,
        env: EnvId,
        full_only: bool,
    ) -> Result<Option<BackupRecord>, MetaError> {
        for item in self.inner.backups().scan_prefix(env_prefix(env)).rev() {
            let (_, v) = item.map_err(sled_read)?;
            let record = decode_record(&v)?;
            if !full_only || record.kind == BackupType::Full {
                return Ok(Some(record));
            }
        }
        Ok(None)
    }

    /// Returns the placement epoch in force, if one was set.
    pub fn placement(&self) -> Result<Option<cairn_core::placement::Epoch>, MetaError> {
        match self.inner.data[CLUSTER]
            .get(KEY_PLACEMENT)
            .map_err(sled_read)?
        {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| MetaError::Corrupt(format!("stored placement: {e}"))),
        }
    }

    /// Returns an environment's settings (defaults when none were set).
    pub fn env_config(&self, env: EnvId) -> Result<cairn_core::retention::EnvConfig, MetaError> {
        match self.inner.data[CLUSTER]
            .get(super::env_config_key(env))
            .map_err(sled_read)?
        {
            None => Ok(Default::default()),
            Some(v) => serde_json::from_slice(&v)
                .map_err(|e| MetaError::Corrupt(format!("stored config of {env}: {e}"))),
        }
    }

    /// Returns the cluster's id, once named.
    pub fn cluster_id(&self) -> Result<Option<uuid::Uuid>, MetaError> {
        match self.inner.data[CLUSTER]
            .get(super::KEY_CLUSTER_ID)
            .map_err(sled_read)?
        {
            None => Ok(None),
            Some(v) => uuid::Uuid::from_slice(&v)
                .map(Some)
                .map_err(|e| MetaError::Corrupt(format!("stored cluster id: {e}"))),
        }
    }

    /// Returns the open backup sessions.
    pub fn sessions(&self) -> Result<Vec<cairn_core::retention::Session>, MetaError> {
        self.inner.data[CLUSTER]
            .scan_prefix(super::PREFIX_SESSION)
            .map(|item| {
                let (_, v) = item.map_err(sled_read)?;
                serde_json::from_slice(&v)
                    .map_err(|e| MetaError::Corrupt(format!("stored backup session: {e}")))
            })
            .collect()
    }

    fn scan_cluster<T: DeserializeOwned>(
        &self,
        prefix: &[u8],
        what: &str,
    ) -> Result<Vec<T>, MetaError> {
        self.inner.data[CLUSTER]
            .scan_prefix(prefix)
            .map(|item| {
                let (_, v) = item.map_err(sled_read)?;
                serde_json::from_slice(&v)
                    .map_err(|e| MetaError::Corrupt(format!("stored {what}: {e}")))
            })
            .collect()
    }

    fn get_cluster<T: DeserializeOwned>(
        &self,
        key: Vec<u8>,
        what: &str,
    ) -> Result<Option<T>, MetaError> {
        match self.inner.data[CLUSTER].get(key).map_err(sled_read)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| MetaError::Corrupt(format!("stored {what}: {e}"))),
        }
    }

    /// Returns every registered host.
    pub fn hosts(&self) -> Result<Vec<HostRecord>, MetaError> {
        self.scan_cluster(PREFIX_HOST, "host")
    }

    /// Returns a registered host.
    pub fn host(&self, id: &str) -> Result<Option<HostRecord>, MetaError> {
        self.get_cluster(cluster_key(PREFIX_HOST, id.as_bytes()), "host")
    }

    /// Returns every registered environment.
    pub fn envs(&self) -> Result<Vec<EnvRecord>, MetaError> {
        self.scan_cluster(PREFIX_ENV, "environment")
    }

    /// Returns a registered environment.
    pub fn env(&self, eid: EnvId) -> Result<Option<EnvRecord>, MetaError> {
        self.get_cluster(cluster_key(PREFIX_ENV, eid.0.as_bytes()), "environment")
    }

    /// Returns a job.
    pub fn job(&self, id: &uuid::Uuid) -> Result<Option<Job>, MetaError> {
        self.get_cluster(cluster_key(PREFIX_JOB, id.as_bytes()), "job")
    }

    /// Returns every job, oldest first (job ids are time-ordered).
    pub fn jobs(&self) -> Result<Vec<Job>, MetaError> {
        self.scan_cluster(PREFIX_JOB, "job")
    }

    /// Returns the active (queued or running) agent jobs.
    pub fn active_jobs(&self) -> Result<Vec<Job>, MetaError> {
        let mut out = Vec::new();
        for item in self.inner.data[CLUSTER].scan_prefix(PREFIX_ACTIVE) {
            let (_, v) = item.map_err(sled_read)?;
            let id = uuid::Uuid::from_slice(&v)
                .map_err(|e| MetaError::Corrupt(format!("stored active job: {e}")))?;
            if let Some(job) = self.job(&id)? {
                out.push(job);
            }
        }
        Ok(out)
    }

    /// Returns every join token's record (its hash, never the token).
    pub fn join_tokens(&self) -> Result<Vec<JoinTokenRecord>, MetaError> {
        self.scan_cluster(PREFIX_JOIN, "join token")
    }

    /// Returns every token record (agent and user tokens).
    pub fn tokens(&self) -> Result<Vec<TokenRecord>, MetaError> {
        self.scan_cluster(PREFIX_TOKEN, "token")
    }

    /// Returns a token record.
    pub fn token(&self, id: &str) -> Result<Option<TokenRecord>, MetaError> {
        self.get_cluster(cluster_key(PREFIX_TOKEN, id.as_bytes()), "token")
    }

    /// Returns an open backup session.
    pub fn session(
        &self,
        id: &uuid::Uuid,
    ) -> Result<Option<cairn_core::retention::Session>, MetaError> {
        self.get_cluster(super::session_key(id), "backup session")
    }

    /// A digest of the catalog as applied here, with the log index it covers: BLAKE3 over
    /// every data tree's name and its keys and values in order. Members that applied the
    /// same log hold the same catalog, so they report the same digest at the same index; the
    /// nemesis checker compares it across voters. Taken under the apply lock (blocking), so
    /// the index and the digest belong together.
    pub fn digest(&self) -> Result<(u64, String), MetaError> {
        let inner = &self.inner;
        let _apply = inner.lock();
        let (applied, _) = inner.read_applied().map_err(MetaError::Corrupt)?;
        let index = applied.map(|l| l.index).unwrap_or(0);
        // Nothing applied since the last digest (the apply lock is held): the same answer,
        // without reading the catalog again (status calls ask for it on every page view).
        let mut cached = inner.digest_cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, d)) = cached.as_ref() {
            if *at == applied {
                return Ok((index, d.clone()));
            }
        }
        let mut h = blake3::Hasher::new();
        for (name, tree) in super::SM_DATA_TREES.iter().zip(&inner.data) {
            h.update(name.as_bytes());
            h.update(&[0]);
            for kv in tree.iter() {
                let (k, v) =
                    kv.map_err(|e| MetaError::Storage(format!("reading tree {name}: {e}")))?;
                h.update(&(k.len() as u64).to_le_bytes());
                h.update(&k);
                h.update(&(v.len() as u64).to_le_bytes());
                h.update(&v);
            }
        }
        let digest = h.finalize().to_hex().to_string();
        *cached = Some((applied, digest.clone()));
        Ok((index, digest))
    }

    /// Returns the last applied log id and the last applied membership.
    pub fn applied(&self) -> Result<(Option<LogId<u64>>, Membership), MetaError> {
        self.inner.read_applied().map_err(MetaError::Corrupt)
    }

    /// Makes everything written so far durable (blocking; call from a blocking thread).
    pub(crate) fn flush_blocking(&self) -> Result<(), MetaError> {
        self.inner
            .db
            .flush()
            .map(|_| ())
            .map_err(|e| MetaError::Storage(format!("flushing the metadata database: {e}")))
    }

    async fn run_blocking<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StorageError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StorageIOError::write_state_machine(&e))?
    }
}

impl Inner {
    fn backups(&self) -> &sled::Tree {
        &self.data[BACKUPS]
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // The mutex guards no data, so a panic elsewhere cannot leave anything half-changed.
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read_applied(&self) -> Result<(Option<LogId<u64>>, Membership), String> {
        let last_applied = read_json(&self.meta, KEY_LAST_APPLIED)?;
        let membership = read_json(&self.meta, KEY_LAST_MEMBERSHIP)?.unwrap_or_default();
        Ok((last_applied, membership))
    }

    fn apply_blocking(&self, entries: &[LogEntry]) -> Result<Vec<Response>, StorageError> {
        let Some(last) = entries.last().map(|e| e.log_id) else {
            return Ok(Vec::new());
        };
        let _guard = self.lock();
        // Decide every entry over the trees plus the batch's own changes (see `Overlay`)…
        let view = Overlay::new(&self.data);
        let mut responses = Vec::with_capacity(entries.len());
        let mut membership = None;
        let failed = |e: String| StorageIOError::apply(last, AnyError::error(e));
        for entry in entries {
            match &entry.payload {
                EntryPayload::Blank => responses.push(Response::Empty),
                EntryPayload::Normal(proposal) => {
                    let decision = decide(&view, proposal).map_err(failed)?;
                    write_all(&view, &decision.writes).map_err(failed)?;
                    responses.push(decision.response);
                }
                EntryPayload::Membership(m) => {
                    membership = Some(Membership::new(Some(entry.log_id), m.clone()));
                    responses.push(Response::Empty);
                }
            }
        }
        // … then write all of it, and `last_applied`, in one transaction that only writes.
        let changes = view.into_changes();
        let trees = (
            &self.meta,
            &self.data[BACKUPS],
            &self.data[NAMES],
            &self.data[CLUSTER],
        );
        let result = trees.transaction(|(meta, backups, names, cluster)| {
            for (tree, tx) in [backups, names, cluster].into_iter().enumerate() {
                for (k, v) in &changes[tree] {
                    match v {
                        Some(v) => {
                            tx.insert(k.as_slice(), v.as_slice())?;
                        }
                        None => {
                            tx.remove(k.as_slice())?;
                        }
                    }
                }
            }
            meta.insert(KEY_LAST_APPLIED, tx_json(&last)?)?;
            if let Some(m) = &membership {
                meta.insert(KEY_LAST_MEMBERSHIP, tx_json(m)?)?;
            }
            Ok(())
        });
        result.map_err(|e| StorageIOError::apply(last, tx_failure(e)))?;
        for (entry, response) in entries.iter().zip(&responses) {
            if let EntryPayload::Normal(p) = &entry.payload {
                let cmd = &p.cmd;
                match response {
                    Response::Refused { code, message, .. } => tracing::debug!(
                        index = entry.log_id.index,
                        command = cmd.kind(),
                        by = %p.by.name(),
                        code = %code,
                        message = %message,
                        "command refused"
                    ),
                    _ => tracing::debug!(
                        index = entry.log_id.index,
                        command = cmd.kind(),
                        "command applied"
                    ),
                }
            }
        }
        Ok(responses)
    }

    fn read_current_snapshot(&self) -> Result<Option<(Meta, Vec<u8>)>, StorageError> {
        let meta: Option<Meta> = read_json(&self.snapshot, KEY_SNAPSHOT_META)
            .map_err(|e| StorageIOError::read_snapshot(None, AnyError::error(e)))?;
        let data = self
            .snapshot
            .get(KEY_SNAPSHOT_DATA)
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        match (meta, data) {
            (None, None) => Ok(None),
            (Some(meta), Some(data)) => Ok(Some((meta, data.to_vec()))),
            _ => Err(StorageIOError::read_snapshot(
                None,
                AnyError::error("the stored snapshot has only one of its meta and data parts"),
            )
            .into()),
        }
    }

    fn build_snapshot_blocking(&self) -> Result<(Meta, Vec<u8>), StorageError> {
        let write_err = |e: AnyError| StorageIOError::write_snapshot(None, e);
        let guard = self.lock();
        let (last_applied, last_membership) = self
            .read_applied()
            .map_err(|e| StorageIOError::read_state_machine(AnyError::error(e)))?;
        let header = SnapshotHeader {
            last_applied,
            last_membership: last_membership.clone(),
            trees: SM_DATA_TREES.iter().map(|s| s.to_string()).collect(),
        };
        let mut enc = Encoder::new(&header).map_err(|e| write_err(AnyError::new(&e)))?;
        for (i, tree) in self.data.iter().enumerate() {
            for item in tree.iter() {
                let (k, v) = item.map_err(|e| StorageIOError::read_state_machine(&e))?;
                enc.record(i, &k, &v)
                    .map_err(|e| write_err(AnyError::new(&e)))?;
            }
        }
        let data = enc.finish();
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let snapshot_id = match &last_applied {
            Some(l) => format!("{}-{}-{millis}", l.leader_id.term, l.index),
            None => format!("0-0-{millis}"),
        };
        let meta = Meta {
            last_log_id: last_applied,
            last_membership,
            snapshot_id,
        };

        // An install may have put a newer snapshot in place since this build was asked for;
        // the newer one stays current.
        let current = self.read_current_snapshot()?;
        let newer_is_current = match &current {
            Some((c, _)) => c.last_log_id > meta.last_log_id,
            None => false,
        };
        if !newer_is_current {
            let mut batch = sled::Batch::default();
            batch.insert(
                KEY_SNAPSHOT_META,
                serde_json::to_vec(&meta).map_err(|e| write_err(AnyError::new(&e)))?,
            );
            batch.insert(KEY_SNAPSHOT_DATA, data.as_slice());
            self.snapshot
                .apply_batch(batch)
                .map_err(|e| write_err(AnyError::new(&e)))?;
        }
        drop(guard);
        self.db.flush().map_err(|e| write_err(AnyError::new(&e)))?;
        tracing::info!(
            snapshot_id = %meta.snapshot_id,
            last_index = meta.last_log_id.map(|l| l.index),
            bytes = data.len(),
            "metadata snapshot built"
        );
        Ok((meta, data))
    }

    fn install_snapshot_blocking(
        &self,
        meta: &Meta,
        contents: &SnapshotContents,
        data: &[u8],
    ) -> Result<(), StorageError> {
        let sig = Some(meta.signature());
        let err = |e: AnyError| StorageIOError::write_snapshot(sig.clone(), e);
        // Positions of the snapshot's trees among ours; every one must be known here.
        let mut slots = Vec::with_capacity(contents.header.trees.len());
        for name in &contents.header.trees {
            let pos = SM_DATA_TREES
                .iter()
                .position(|t| t == name)
                .ok_or_else(|| {
                    err(AnyError::error(format!(
                        "snapshot holds tree {name:?} that this node does not know; upgrade this node"
                    )))
                })?;
            slots.push(pos);
        }
        let meta_json = serde_json::to_vec(meta).map_err(|e| err(AnyError::new(&e)))?;
        let applied_json = match &meta.last_log_id {
            Some(l) => Some(serde_json::to_vec(l).map_err(|e| err(AnyError::new(&e)))?),
            None => None,
        };
        let membership_json =
            serde_json::to_vec(&meta.last_membership).map_err(|e| err(AnyError::new(&e)))?;

        let _guard = self.lock();
        let mut old_keys = Vec::with_capacity(self.data.len());
        for tree in &self.data {
            let keys = tree
                .iter()
                .keys()
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| err(AnyError::new(&e)))?;
            old_keys.push(keys);
        }
        // One transaction over [meta, data trees…, snapshot]: the old state is replaced by
        // the snapshot's, or not at all.
        let mut trees = Vec::with_capacity(self.data.len() + 2);
        trees.push(self.meta.clone());
        trees.extend(self.data.iter().cloned());
        trees.push(self.snapshot.clone());
        let n = self.data.len();
        let result: Result<(), TransactionError<String>> =
            trees
                .as_slice()
                .transaction(|views: &Vec<TransactionalTree>| {
                    let (meta_view, rest) = views
                        .split_first()
                        .ok_or_else(|| ConflictableTransactionError::Abort("no trees".into()))?;
                    let (data_views, snap_view) = rest.split_at(n);
                    for (view, keys) in data_views.iter().zip(&old_keys) {
                        for k in keys {
                            view.remove(k)?;
                        }
                    }
                    for (slot, records) in slots.iter().zip(&contents.trees) {
                        for (k, v) in records {
                            data_views[*slot].insert(k.as_slice(), v.as_slice())?;
                        }
                    }
                    match &applied_json {
                        Some(j) => meta_view.insert(KEY_LAST_APPLIED, j.as_slice())?,
                        None => meta_view.remove(KEY_LAST_APPLIED)?,
                    };
                    meta_view.insert(KEY_LAST_MEMBERSHIP, membership_json.as_slice())?;
                    let snap = snap_view.first().ok_or_else(|| {
                        ConflictableTransactionError::Abort("no snapshot tree".into())
                    })?;
                    snap.insert(KEY_SNAPSHOT_META, meta_json.as_slice())?;
                    snap.insert(KEY_SNAPSHOT_DATA, data)?;
                    Ok(())
                });
        result.map_err(|e| err(tx_failure(e)))?;
        // A snapshot of a release that kept no totals: rebuild them before any apply.
        ensure_totals(self).map_err(|e| err(AnyError::error(e.to_string())))?;
        *self.digest_cache.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.db.flush().map_err(|e| err(AnyError::new(&e)))?;
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let inner = self.inner.clone();
        let (meta, data) = tokio::task::spawn_blocking(move || inner.build_snapshot_blocking())
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e))??;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId<u64>>, Membership), StorageError> {
        self.inner
            .read_applied()
            .map_err(|e| StorageIOError::read_state_machine(AnyError::error(e)).into())
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = LogEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<LogEntry> = entries.into_iter().collect();
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        self.run_blocking(move |inner| inner.apply_blocking(&entries))
            .await
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            inner: self.inner.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let sig = Some(meta.signature());
        let contents = decode(&data).map_err(|e| StorageIOError::read_snapshot(sig.clone(), &e))?;
        if contents.header.last_applied != meta.last_log_id {
            return Err(StorageIOError::read_snapshot(
                sig,
                AnyError::error(format!(
                    "snapshot data was taken at {:?} but its meta says {:?}",
                    contents.header.last_applied, meta.last_log_id
                )),
            )
            .into());
        }
        let meta = meta.clone();
        let snapshot_id = meta.snapshot_id.clone();
        let last_index = meta.last_log_id.map(|l| l.index);
        self.run_blocking(move |inner| inner.install_snapshot_blocking(&meta, &contents, &data))
            .await?;
        tracing::info!(%snapshot_id, last_index, "metadata snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let inner = self.inner.clone();
        let current = tokio::task::spawn_blocking(move || inner.read_current_snapshot())
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, &e))??;
        Ok(current.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
