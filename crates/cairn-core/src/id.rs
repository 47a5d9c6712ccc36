//! Identifiers: chunk digests, environment ids and backup ids.
//!
//! A backup id is `EID/YYYYMMDDhhmmss` (UTC), the form the Virtuozzo `backupm` interface uses;
//! both adapters and the CLI show the same string.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// Errors from parsing an identifier a user or a peer handed us.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("malformed chunk id {0:?}: expected 64 hex digits")]
    Chunk(String),
    #[error("malformed environment id {0:?}: expected a UUID such as 6f1c0d9e-2b1a-4d7e-9a55-0c3b8e1f7a21")]
    Env(String),
    #[error("malformed backup id {0:?}: expected EID/YYYYMMDDhhmmss")]
    Backup(String),
}

/// The BLAKE3 digest of a chunk's uncompressed content: the chunk's name everywhere.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    /// Returns the id of `data` (its BLAKE3 digest).
    pub fn of(data: &[u8]) -> ChunkId {
        ChunkId(*blake3::hash(data).as_bytes())
    }

    /// Builds an id from a byte slice received on the wire.
    pub fn from_slice(bytes: &[u8]) -> Result<ChunkId, IdError> {
        <[u8; 32]>::try_from(bytes)
            .map(ChunkId)
            .map_err(|_| IdError::Chunk(hex::encode(bytes)))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Returns the first eight bytes as a number, for cheap sharding decisions.
    pub fn prefix_u64(&self) -> u64 {
        u64::from_be_bytes(self.0[..8].try_into().expect("32 > 8"))
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", &hex::encode(&self.0[..8]))
    }
}

impl FromStr for ChunkId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| IdError::Chunk(s.to_string()))?;
        Ok(ChunkId(out))
    }
}

/// The id of an environment (a container): a UUID, shown in lower-case hyphenated form.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EnvId(pub uuid::Uuid);

impl EnvId {
    /// The all-zero id under which cluster-wide settings are kept.
    pub const GLOBAL: EnvId = EnvId(uuid::Uuid::nil());

    /// Derives a stable id from a namespace string (e.g. host id + container name).
    pub fn derive(name: &str) -> EnvId {
        const NS: uuid::Uuid = uuid::Uuid::from_bytes([
            0x4f, 0x7a, 0x2c, 0x61, 0x0b, 0x3e, 0x4d, 0x10, 0x9c, 0x1e, 0x5a, 0x77, 0x00, 0xca,
            0x1e, 0x01,
        ]);
        EnvId(uuid::Uuid::new_v5(&NS, name.as_bytes()))
    }

    /// The EID of a hardware node (an agent's host), as the XML API's `parent_eid` names it:
    /// derived from the host id, so it is stable and needs no registry.
    pub fn of_host(host: &str) -> EnvId {
        EnvId::derive(&format!("cairn-host:{host}"))
    }
}

impl fmt::Display for EnvId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for EnvId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EnvId({})", self.0.hyphenated())
    }
}

impl FromStr for EnvId {
    type Err = IdError;
    /// Accepts the hyphenated form, optionally in braces (`{…}`) as Virtuozzo tools write it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let t = t
            .strip_prefix('{')
            .and_then(|x| x.strip_suffix('}'))
            .unwrap_or(t);
        if t.len() != 36 {
            return Err(IdError::Env(s.to_string()));
        }
        uuid::Uuid::parse_str(t)
            .map(EnvId)
            .map_err(|_| IdError::Env(s.to_string()))
    }
}

/// `EID/YYYYMMDDhhmmss`: an environment and the UTC second its backup was taken.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BackupId {
    pub env: EnvId,
    /// Seconds since the Unix epoch (UTC).
    pub time: i64,
}

impl BackupId {
    pub fn new(env: EnvId, time: i64) -> BackupId {
        BackupId { env, time }
    }

    /// The time part, `YYYYMMDDhhmmss`.
    pub fn stamp(&self) -> String {
        match Utc.timestamp_opt(self.time, 0).single() {
            Some(t) => t.format("%Y%m%d%H%M%S").to_string(),
            None => "00000000000000".to_string(),
        }
    }

    /// The time as a UTC date-time.
    pub fn datetime(&self) -> DateTime<Utc> {
        Utc.timestamp_opt(self.time, 0)
            .single()
            .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
    }
}

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.env, self.stamp())
    }
}

impl fmt::Debug for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BackupId({self})")
    }
}

impl FromStr for BackupId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || IdError::Backup(s.to_string());
        let (env, stamp) = s.trim().split_once('/').ok_or_else(bad)?;
        let env: EnvId = env.parse().map_err(|_| bad())?;
        if stamp.len() != 14 || !stamp.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let t = NaiveDateTime::parse_from_str(stamp, "%Y%m%d%H%M%S").map_err(|_| bad())?;
        Ok(BackupId {
            env,
            time: t.and_utc().timestamp(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: &str = "6f1c0d9e-2b1a-4d7e-9a55-0c3b8e1f7a21";

    #[test]
    fn backup_id_round_trips() {
        let id: BackupId = format!("{E}/20261122081500").parse().unwrap();
        assert_eq!(id.to_string(), format!("{E}/20261122081500"));
        assert_eq!(id.datetime().to_rfc3339(), "2026-11-22T08:15:00+00:00");
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in [
            "",
            "x/20261122081500",
            &format!("{E}/2026112208150"),
            &format!("{E}/20261322081500"),
            &format!("{E}/2026112208150a"),
            &format!("{E}20261122081500"),
            &format!("{E}/../../etc"),
        ] {
            assert!(bad.parse::<BackupId>().is_err(), "{bad:?} accepted");
        }
        assert!("6f1c0d9e2b1a4d7e9a550c3b8e1f7a21".parse::<EnvId>().is_err());
        assert!(format!("{{{E}}}").parse::<EnvId>().is_ok());
    }

    #[test]
    fn chunk_id_hex_round_trips() {
        let id = ChunkId::of(b"hello");
        assert_eq!(id.to_string().parse::<ChunkId>().unwrap(), id);
        assert!("zz".parse::<ChunkId>().is_err());
    }

    #[test]
    fn derived_env_ids_are_stable() {
        assert_eq!(EnvId::derive("host/ct1"), EnvId::derive("host/ct1"));
        assert_ne!(EnvId::derive("host/ct1"), EnvId::derive("host/ct2"));
    }
}
