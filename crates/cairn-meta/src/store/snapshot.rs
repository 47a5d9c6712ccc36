//! The on-disk and on-wire format of a state-machine snapshot.
//!
//! A snapshot is a dump of every state-machine data tree plus the applied state, in a small
//! binary frame so that a large catalog costs its own size and not a JSON array per byte:
//!
//! ```text
//! magic    8 bytes  "CAIRNSNP"
//! version  u32 BE   1
//! header   u32 BE length + JSON SnapshotHeader (last_applied, last_membership, tree names)
//! records  repeated: tree u16 BE (index into header.trees), key u32 BE length + bytes,
//!                    value u32 BE length + bytes
//! end      u16 BE   0xFFFF
//! crc      u32 BE   CRC-32 of every byte before it
//! ```
//!
//! Snapshots arrive from peers, so decoding checks every length and the checksum and never
//! panics on bad input. A version this node does not know is refused with a message that
//! says to upgrade.

use openraft::{BasicNode, LogId, StoredMembership};
use serde::{Deserialize, Serialize};

/// The first bytes of every snapshot.
pub const MAGIC: &[u8; 8] = b"CAIRNSNP";
/// The snapshot format this code writes and reads.
pub const VERSION: u32 = 1;
const END: u16 = 0xFFFF;

/// Why a snapshot could not be encoded or decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotFormatError {
    #[error("not a cairn metadata snapshot (bad magic)")]
    Magic,
    #[error("snapshot format version {0} is not supported by this node (it reads version {VERSION}); upgrade this node")]
    Version(u32),
    #[error("snapshot checksum mismatch: the snapshot is corrupt")]
    Checksum,
    #[error("snapshot is truncated")]
    Truncated,
    #[error("malformed snapshot: {0}")]
    Malformed(String),
}

/// What a snapshot says about the state it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    pub last_applied: Option<LogId<u64>>,
    pub last_membership: StoredMembership<u64, BasicNode>,
    /// Names of the dumped trees; a record's tree number indexes this list.
    pub trees: Vec<String>,
}

/// A decoded snapshot: the header and, per tree in `header.trees`, its key-value pairs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotContents {
    pub header: SnapshotHeader,
    pub trees: Vec<Vec<(Vec<u8>, Vec<u8>)>>,
}

/// Writes a snapshot record by record.
pub struct Encoder {
    buf: Vec<u8>,
    trees: usize,
}

impl Encoder {
    /// Starts a snapshot with this header.
    pub fn new(header: &SnapshotHeader) -> Result<Encoder, SnapshotFormatError> {
        let json = serde_json::to_vec(header)
            .map_err(|e| SnapshotFormatError::Malformed(format!("header: {e}")))?;
        let mut buf = Vec::with_capacity(64 + json.len());
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&VERSION.to_be_bytes());
        put_len(&mut buf, json.len())?;
        buf.extend_from_slice(&json);
        Ok(Encoder {
            buf,
            trees: header.trees.len(),
        })
    }

    /// Appends one key-value pair of tree number `tree`.
    pub fn record(
        &mut self,
        tree: usize,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), SnapshotFormatError> {
        if tree >= self.trees {
            return Err(SnapshotFormatError::Malformed(format!(
                "tree number {tree} not in header"
            )));
        }
        let tree = u16::try_from(tree)
            .ok()
            .filter(|t| *t != END)
            .ok_or_else(|| SnapshotFormatError::Malformed("too many trees".into()))?;
        self.buf.extend_from_slice(&tree.to_be_bytes());
        put_len(&mut self.buf, key.len())?;
        self.buf.extend_from_slice(key);
        put_len(&mut self.buf, value.len())?;
        self.buf.extend_from_slice(value);
        Ok(())
    }

    /// Ends the snapshot and returns its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&END.to_be_bytes());
        let crc = crc32fast::hash(&self.buf);
        self.buf.extend_from_slice(&crc.to_be_bytes());
        self.buf
    }
}

fn put_len(buf: &mut Vec<u8>, len: usize) -> Result<(), SnapshotFormatError> {
    let len = u32::try_from(len).map_err(|_| {
        SnapshotFormatError::Malformed(format!("field of {len} bytes is too large"))
    })?;
    buf.extend_from_slice(&len.to_be_bytes());
    Ok(())
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotFormatError> {
        if self.rest.len() < n {
            return Err(SnapshotFormatError::Truncated);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u16(&mut self) -> Result<u16, SnapshotFormatError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, SnapshotFormatError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn field(&mut self) -> Result<&'a [u8], SnapshotFormatError> {
        let len = self.u32()? as usize;
        self.take(len)
    }
}

/// Decodes and verifies a snapshot.
pub fn decode(bytes: &[u8]) -> Result<SnapshotContents, SnapshotFormatError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(SnapshotFormatError::Magic);
    }
    let mut r = Reader {
        rest: &bytes[MAGIC.len()..],
    };
    let version = r.u32()?;
    if version != VERSION {
        return Err(SnapshotFormatError::Version(version));
    }
    let Some(body_len) = bytes.len().checked_sub(4) else {
        return Err(SnapshotFormatError::Truncated);
    };
    if body_len < MAGIC.len() + 4 {
        return Err(SnapshotFormatError::Truncated);
    }
    let (body, crc) = bytes.split_at(body_len);
    if crc32fast::hash(body).to_be_bytes() != crc {
        return Err(SnapshotFormatError::Checksum);
    }
    let mut r = Reader {
        rest: &body[MAGIC.len() + 4..],
    };
    let header: SnapshotHeader = serde_json::from_slice(r.field()?)
        .map_err(|e| SnapshotFormatError::Malformed(format!("header: {e}")))?;
    let mut trees = vec![Vec::new(); header.trees.len()];
    loop {
        let tree = r.u16()?;
        if tree == END {
            break;
        }
        let slot = trees.get_mut(tree as usize).ok_or_else(|| {
            SnapshotFormatError::Malformed(format!("record for unknown tree number {tree}"))
        })?;
        let key = r.field()?.to_vec();
        let value = r.field()?.to_vec();
        slot.push((key, value));
    }
    if !r.rest.is_empty() {
        return Err(SnapshotFormatError::Malformed(format!(
            "{} bytes after the end marker",
            r.rest.len()
        )));
    }
    Ok(SnapshotContents { header, trees })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use openraft::{CommittedLeaderId, Membership};

    use super::*;

    fn sample() -> (SnapshotHeader, Vec<u8>) {
        let log_id = LogId::new(CommittedLeaderId::new(3, 1), 42);
        let header = SnapshotHeader {
            last_applied: Some(log_id),
            last_membership: StoredMembership::new(
                Some(log_id),
                Membership::new(vec![BTreeSet::from([1u64, 2, 3])], None),
            ),
            trees: vec!["a".into(), "b".into()],
        };
        let mut enc = Encoder::new(&header).unwrap();
        enc.record(0, b"k1", b"v1").unwrap();
        enc.record(1, b"", b"").unwrap();
        enc.record(0, b"k2", &[0xFF; 300]).unwrap();
        (header, enc.finish())
    }

    #[test]
    fn snapshots_round_trip() {
        let (header, bytes) = sample();
        let c = decode(&bytes).unwrap();
        assert_eq!(c.header, header);
        assert_eq!(
            c.trees,
            vec![
                vec![
                    (b"k1".to_vec(), b"v1".to_vec()),
                    (b"k2".to_vec(), vec![0xFF; 300])
                ],
                vec![(Vec::new(), Vec::new())],
            ]
        );
    }

    #[test]
    fn damaged_snapshots_are_refused_without_panicking() {
        let (_, bytes) = sample();
        // Every truncation and every single flipped byte is caught.
        for len in 0..bytes.len() {
            assert!(
                decode(&bytes[..len]).is_err(),
                "truncated to {len} accepted"
            );
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(decode(&b).is_err(), "flip at {i} accepted");
        }
        let mut newer = bytes.clone();
        newer[8..12].copy_from_slice(&2u32.to_be_bytes());
        assert_eq!(decode(&newer), Err(SnapshotFormatError::Version(2)));
        assert_eq!(decode(b"not a snapshot"), Err(SnapshotFormatError::Magic));
    }

    #[test]
    fn records_must_name_a_header_tree() {
        let (header, _) = sample();
        let mut enc = Encoder::new(&header).unwrap();
        assert!(enc.record(2, b"k", b"v").is_err());
    }
}
