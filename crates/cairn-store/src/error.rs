//! The chunk store's errors.

use std::io;
use std::path::{Path, PathBuf};

use cairn_chunker::ChunkError;
use cairn_core::{ChunkId, ErrorCode};

/// Why a chunk store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The chunk is not stored on this node.
    #[error("chunk {0} is not stored on this node")]
    NotFound(ChunkId),
    /// Stored or offered bytes do not hash to the chunk's id, or their framing is damaged.
    #[error("chunk {id} is corrupt: {why}")]
    Corrupt { id: ChunkId, why: String },
    /// A chunk offered for storage is larger than any chunk Cairn produces.
    #[error("chunk {id} has a {len}-byte payload, more than the {max}-byte limit")]
    TooLarge { id: ChunkId, len: u64, max: u64 },
    /// The file system is full (or over quota); nothing of the failed write was kept.
    #[error(
        "no space left on device writing {} ({needed} bytes needed); stored chunks are intact",
        path.display()
    )]
    DiskFull { path: PathBuf, needed: u64 },
    /// An I/O operation on a store file failed.
    #[error("{context} {}: {source}", path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The sled index failed.
    #[error("chunk index error: {0}")]
    Index(String),
    /// A store file does not have the expected format (or was written by a newer version).
    #[error("chunk store format error: {0}")]
    Format(String),
    /// The configuration is unusable.
    #[error("invalid chunk store configuration: {0}")]
    Config(String),
    /// An earlier write failure could not be rolled back; only a restart (which runs recovery)
    /// brings the store back to a known state. Reads keep working.
    #[error(
        "the chunk store stopped accepting writes after a failure it could not undo ({0}); \
         restart the node to run recovery"
    )]
    WritesDisabled(String),
}

impl StoreError {
    /// Returns the stable user-facing code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            StoreError::NotFound(_) => ErrorCode::NotFound,
            StoreError::Corrupt { .. } => ErrorCode::Corrupt,
            StoreError::TooLarge { .. } | StoreError::Config(_) => ErrorCode::InvalidArgument,
            StoreError::DiskFull { .. } => ErrorCode::DiskFull,
            StoreError::WritesDisabled(_) => ErrorCode::Unavailable,
            StoreError::Io { .. } | StoreError::Index(_) | StoreError::Format(_) => {
                ErrorCode::Internal
            }
        }
    }

    /// Wraps an I/O error that happened while reading or managing `path`.
    pub(crate) fn io(context: &'static str, path: &Path, source: io::Error) -> StoreError {
        if is_disk_full(&source) {
            return StoreError::DiskFull {
                path: path.to_path_buf(),
                needed: 0,
            };
        }
        StoreError::Io {
            context,
            path: path.to_path_buf(),
            source,
        }
    }

    /// Wraps an I/O error that happened while writing `needed` bytes to `path`.
    pub(crate) fn write(path: &Path, needed: u64, source: io::Error) -> StoreError {
        if is_disk_full(&source) {
            return StoreError::DiskFull {
                path: path.to_path_buf(),
                needed,
            };
        }
        StoreError::Io {
            context: "writing",
            path: path.to_path_buf(),
            source,
        }
    }

    /// Wraps a sled error; a full disk under the index is reported as [`StoreError::DiskFull`].
    pub(crate) fn index(path: &Path, e: sled::Error) -> StoreError {
        match e {
            sled::Error::Io(source) if is_disk_full(&source) => StoreError::DiskFull {
                path: path.to_path_buf(),
                needed: 0,
            },
            other => StoreError::Index(format!("{}: {other}", path.display())),
        }
    }

    /// Returns an equivalent error, for handing one failure to every batch of a group commit
    /// (`io::Error` is not `Clone`).
    pub(crate) fn replicate(&self) -> StoreError {
        match self {
            StoreError::NotFound(id) => StoreError::NotFound(*id),
            StoreError::Corrupt { id, why } => StoreError::Corrupt {
                id: *id,
                why: why.clone(),
            },
            StoreError::TooLarge { id, len, max } => StoreError::TooLarge {
                id: *id,
                len: *len,
                max: *max,
            },
            StoreError::DiskFull { path, needed } => StoreError::DiskFull {
                path: path.clone(),
                needed: *needed,
            },
            StoreError::Io {
                context,
                path,
                source,
            } => StoreError::Io {
                context,
                path: path.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            StoreError::Index(s) => StoreError::Index(s.clone()),
            StoreError::Format(s) => StoreError::Format(s.clone()),
            StoreError::Config(s) => StoreError::Config(s.clone()),
            StoreError::WritesDisabled(s) => StoreError::WritesDisabled(s.clone()),
        }
    }
}

impl From<ChunkError> for StoreError {
    fn from(e: ChunkError) -> StoreError {
        match e {
            ChunkError::Corrupt { id, why } => StoreError::Corrupt { id, why },
            ChunkError::TooLarge { id, len, max } => StoreError::Corrupt {
                id,
                why: format!("claims {len} bytes of content, more than the {max}-byte limit"),
            },
        }
    }
}

/// Returns true for "no space left on device" and "disk quota exceeded".
pub(crate) fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::ENOSPC) | Some(nix::libc::EDQUOT)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_chunk_and_the_file() {
        let id = ChunkId::of(b"x");
        let e = StoreError::Corrupt {
            id,
            why: "checksum mismatch".into(),
        };
        assert_eq!(
            e.to_string(),
            format!("chunk {id} is corrupt: checksum mismatch")
        );
        assert_eq!(e.code(), ErrorCode::Corrupt);

        let full = StoreError::write(
            Path::new("/srv/cairn/packs/00000001.pack"),
            4096,
            io::Error::from_raw_os_error(nix::libc::ENOSPC),
        );
        assert!(matches!(full, StoreError::DiskFull { needed: 4096, .. }));
        assert!(full
            .to_string()
            .starts_with("no space left on device writing /srv/cairn/packs/00000001.pack"));
        assert_eq!(full.code(), ErrorCode::DiskFull);

        let other = StoreError::write(
            Path::new("/p"),
            1,
            io::Error::from_raw_os_error(nix::libc::EIO),
        );
        assert!(matches!(other, StoreError::Io { .. }));
        assert!(other.replicate().to_string() == other.to_string());
    }
}
