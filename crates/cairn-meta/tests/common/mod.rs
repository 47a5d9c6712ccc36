//! Helpers shared by the integration tests.
#![allow(dead_code)]

use cairn_core::{BackupId, BackupRecord, BackupState, BackupType, ChunkId, Compression, EnvId};

/// A plausible backup record of `env` at `time`.
pub fn record(env: EnvId, time: i64, name: &str, kind: BackupType) -> BackupRecord {
    BackupRecord {
        id: BackupId::new(env, time),
        kind,
        parent: None,
        name: name.to_string(),
        description: String::new(),
        tags: Vec::new(),
        manifest: ChunkId::of(format!("{env}/{time}/{name}").as_bytes()),
        logical_size: 1 << 20,
        stored_size: 1 << 18,
        file_count: 12,
        chunk_count: 3,
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
