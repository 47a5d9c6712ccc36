//! The raft log and vote in sled (see the module note in `store` for the fsync order).

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, LogId, OptionalSend, RaftLogReader, StorageIOError, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{flush, KEY_COMMITTED, KEY_LAST_PURGED, KEY_VOTE};
use crate::{LogEntry, StorageError, TypeConfig};

/// The raft log, vote, committed and purge marks of one node, in sled.
///
/// Cloning is cheap and shares the same trees; a clone is also the log reader openraft's
/// replication tasks use.
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    state: sled::Tree,
}

impl LogStore {
    pub(crate) fn new(db: sled::Db, log: sled::Tree, state: sled::Tree) -> LogStore {
        LogStore { db, log, state }
    }

    fn read_state<T: DeserializeOwned>(
        &self,
        key: &[u8],
        err: fn(AnyError) -> StorageIOError<u64>,
    ) -> Result<Option<T>, StorageError> {
        match self.state.get(key) {
            Ok(None) => Ok(None),
            Ok(Some(v)) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| err(AnyError::new(&e)).into()),
            Err(e) => Err(err(AnyError::new(&e)).into()),
        }
    }

    fn write_state<T: Serialize>(
        &self,
        key: &[u8],
        value: &T,
        err: fn(AnyError) -> StorageIOError<u64>,
    ) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(value).map_err(|e| err(AnyError::new(&e)))?;
        self.state
            .insert(key, bytes)
            .map_err(|e| err(AnyError::new(&e)))?;
        Ok(())
    }

    async fn flush(&self, err: fn(AnyError) -> StorageIOError<u64>) -> Result<(), StorageError> {
        flush(&self.db)
            .await
            .map_err(|e| err(AnyError::new(&e)).into())
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId<u64>>, StorageError> {
        match self.log.last() {
            Ok(None) => Ok(None),
            Ok(Some((_, v))) => decode_entry(&v).map(|e| Some(e.log_id)),
            Err(e) => Err(StorageIOError::read_logs(&e).into()),
        }
    }

    /// Removes every entry whose key is in `range`, as one batch.
    fn remove_range<R: RangeBounds<[u8; 8]>>(
        &self,
        range: R,
        err: fn(AnyError) -> StorageIOError<u64>,
    ) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for item in self.log.range(range) {
            let (k, _) = item.map_err(|e| err(AnyError::new(&e)))?;
            batch.remove(k);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| err(AnyError::new(&e)).into())
    }
}

fn decode_entry(bytes: &[u8]) -> Result<LogEntry, StorageError> {
    serde_json::from_slice(bytes).map_err(|e| StorageIOError::read_logs(&e).into())
}

/// Converts a range of log indexes to `[start, end)` with `end == None` meaning unbounded.
fn index_bounds<R: RangeBounds<u64>>(range: &R) -> Option<(u64, Option<u64>)> {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.checked_add(1),
        Bound::Excluded(&e) => Some(e),
        Bound::Unbounded => None,
    };
    match end {
        Some(end) if end <= start => None,
        _ => Some((start, end)),
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<LogEntry>, StorageError> {
        let Some((start, end)) = index_bounds(&range) else {
            return Ok(Vec::new());
        };
        let iter = match end {
            Some(end) => self.log.range(start.to_be_bytes()..end.to_be_bytes()),
            None => self.log.range(start.to_be_bytes()..),
        };
        let mut out = Vec::new();
        for item in iter {
            let (_, v) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            out.push(decode_entry(&v)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId<u64>> =
            self.read_state(KEY_LAST_PURGED, StorageIOError::read_logs)?;
        let last_log_id = self.last_entry_log_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        self.write_state(KEY_VOTE, vote, StorageIOError::write_vote)?;
        self.flush(StorageIOError::write_vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        self.read_state(KEY_VOTE, StorageIOError::read_vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), StorageError> {
        // Not flushed: a lost committed mark only means re-learning it from the leader.
        match committed {
            Some(c) => self.write_state(KEY_COMMITTED, &c, StorageIOError::write),
            None => self
                .state
                .remove(KEY_COMMITTED)
                .map(|_| ())
                .map_err(|e| StorageIOError::write(&e).into()),
        }
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError> {
        self.read_state(KEY_COMMITTED, StorageIOError::read)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = LogEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let bytes = serde_json::to_vec(&entry)
                .map_err(|e| StorageIOError::write_log_entry(entry.log_id, &e))?;
            batch.insert(&entry.log_id.index.to_be_bytes(), bytes);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        match flush(&self.db).await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let err = StorageIOError::write_logs(&e);
                callback.log_io_completed(Err(io::Error::new(e.kind(), e.to_string())));
                Err(err.into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        tracing::debug!(index = log_id.index, "truncating raft log");
        self.remove_range(log_id.index.to_be_bytes().., StorageIOError::write_logs)?;
        self.flush(StorageIOError::write_logs).await
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        let previous: Option<LogId<u64>> =
            self.read_state(KEY_LAST_PURGED, StorageIOError::read_logs)?;
        if previous.as_ref().is_some_and(|p| p.index >= log_id.index) {
            return Ok(());
        }
        tracing::debug!(index = log_id.index, "purging raft log");
        self.write_state(KEY_LAST_PURGED, &log_id, StorageIOError::write_logs)?;
        // Makes last_purged and the state machine (applied past this point) durable before
        // any entry disappears.
        self.flush(StorageIOError::write_logs).await?;
        self.remove_range(..=log_id.index.to_be_bytes(), StorageIOError::write_logs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_bounds_cover_every_range_form() {
        assert_eq!(index_bounds(&(..)), Some((0, None)));
        assert_eq!(index_bounds(&(3..)), Some((3, None)));
        assert_eq!(index_bounds(&(3..7)), Some((3, Some(7))));
        assert_eq!(index_bounds(&(3..=7)), Some((3, Some(8))));
        assert_eq!(index_bounds(&(..=u64::MAX)), Some((0, None)));
        assert_eq!(index_bounds(&(5..5)), None);
        assert_eq!(
            index_bounds(&(Bound::Included(6), Bound::Excluded(5))),
            None
        );
        assert_eq!(
            index_bounds(&(Bound::Excluded(u64::MAX), Bound::Unbounded)),
            None
        );
        assert_eq!(
            index_bounds(&(Bound::Excluded(2), Bound::Excluded(4))),
            Some((3, Some(4)))
        );
    }
}
