//! The catalog's view of a backup.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::id::{BackupId, ChunkId, EnvId};

/// What a backup read, in the Virtuozzo numbering (0 full, 1 incremental, 2 differential).
///
/// Every backup is logically full: the type only says which parent the agent compared
/// against (none, the latest backup, the latest full) and so what it had to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum BackupType {
    #[default]
    Full,
    Incremental,
    Differential,
}

impl BackupType {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupType::Full => "full",
            BackupType::Incremental => "incremental",
            BackupType::Differential => "differential",
        }
    }

    pub fn code(self) -> u32 {
        match self {
            BackupType::Full => 0,
            BackupType::Incremental => 1,
            BackupType::Differential => 2,
        }
    }

    pub fn from_code(c: u32) -> Option<BackupType> {
        match c {
            0 => Some(BackupType::Full),
            1 => Some(BackupType::Incremental),
            2 => Some(BackupType::Differential),
            _ => None,
        }
    }
}

impl fmt::Display for BackupType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackupType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "full" | "0" => Ok(BackupType::Full),
            "incremental" | "inc" | "1" => Ok(BackupType::Incremental),
            "differential" | "diff" | "2" => Ok(BackupType::Differential),
            _ => Err(format!(
                "unknown backup type {s:?}: use full, incremental or differential"
            )),
        }
    }
}

/// Compression levels as Virtuozzo names them; each maps to a zstd level chosen by
/// measurement (see `cairn-chunker`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Compression {
    None,
    #[default]
    Normal,
    High,
    Maximum,
}

impl Compression {
    pub fn from_level(l: u32) -> Option<Compression> {
        match l {
            0 => Some(Compression::None),
            1 => Some(Compression::Normal),
            2 => Some(Compression::High),
            3 => Some(Compression::Maximum),
            _ => None,
        }
    }

    pub fn level(self) -> u32 {
        match self {
            Compression::None => 0,
            Compression::Normal => 1,
            Compression::High => 2,
            Compression::Maximum => 3,
        }
    }
}

/// Whether a backup captured everything it was asked to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum BackupState {
    /// Every entry was read.
    #[default]
    Complete,
    /// Some entries could not be read; they are listed in the backup's errors.
    Incomplete,
}

impl BackupState {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupState::Complete => "complete",
            BackupState::Incomplete => "incomplete",
        }
    }
}

/// A committed backup as the catalog keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRecord {
    pub id: BackupId,
    pub kind: BackupType,
    /// The backup the agent compared against, if any.
    pub parent: Option<BackupId>,
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    /// Root of the manifest (itself a chunk).
    pub manifest: ChunkId,
    /// Sum of the sizes of the files in the tree.
    pub logical_size: u64,
    /// Bytes of new chunk data this backup added to the store (compressed).
    pub stored_size: u64,
    pub file_count: u64,
    /// Number of chunks the backup references (manifest included).
    pub chunk_count: u64,
    pub state: BackupState,
    /// Entries that could not be read, with the reason (capped; see `error_count`).
    pub errors: Vec<String>,
    pub error_count: u64,
    pub compression: Compression,
    /// Host that took the backup.
    pub host: String,
    /// Source path on that host.
    pub source: String,
    /// What the environment's host reported about it when the backup was taken.
    #[serde(default)]
    pub env_info: EnvInfo,
    /// The include list the backup was taken with (empty: the whole tree).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub includes: Vec<String>,
    /// The exclude patterns the backup was taken with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excludes: Vec<String>,
    /// Protected by an admin: nothing removes it (no delete, no retention) until an admin
    /// unprotects it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub protected: bool,
}

/// The description of an environment a backup carries (the `info` of a backupm answer).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EnvInfo {
    pub name: String,
    pub title: String,
    pub hostname: String,
    pub ip: Vec<String>,
    pub os: String,
    /// virtuozzo, lxc, nspawn, dir, explicit.
    pub kind: String,
}

impl BackupRecord {
    pub fn env(&self) -> EnvId {
        self.id.env
    }
}
