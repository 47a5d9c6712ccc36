//! Byte layouts: the pack file header, the record header, and the index values.
//!
//! Everything here is pure (bytes in, values out) so the layouts can be tested without IO.
//! All integers are little-endian except index keys, which are big-endian so that sled
//! iterates segments in numeric order. The layouts are described in the crate documentation.

use cairn_chunker::codec::MAX_CHUNK_LEN;
use cairn_chunker::Codec;
use cairn_core::ChunkId;

/// Magic at the start of every pack file.
pub const PACK_MAGIC: [u8; 8] = *b"CAIRNPK\0";
/// Pack file format version this build writes and reads.
pub const PACK_VERSION: u32 = 1;
/// Length of the pack file header: magic, version, segment id.
pub const FILE_HEADER_LEN: u64 = 16;

/// Magic at the start of every record.
pub const RECORD_MAGIC: [u8; 4] = *b"CKR1";
/// Length of a record header.
pub const RECORD_HEADER_LEN: usize = 49;
/// The prefix of the header the CRC covers (everything before the CRC itself).
const CRC_COVERED: usize = 45;
/// Largest payload a record may carry; anything larger is refused on write and treated as
/// damage on read, so a garbled length never causes a huge allocation.
pub const MAX_STORED_LEN: u32 = MAX_CHUNK_LEN;

/// The fixed header of a pack file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHeader {
    pub version: u32,
    pub segment: u32,
}

impl FileHeader {
    /// Returns the header bytes of segment `segment` in the current format.
    pub fn encode(segment: u32) -> [u8; FILE_HEADER_LEN as usize] {
        let mut b = [0u8; FILE_HEADER_LEN as usize];
        b[..8].copy_from_slice(&PACK_MAGIC);
        b[8..12].copy_from_slice(&PACK_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&segment.to_le_bytes());
        b
    }

    /// Parses a pack file header; the caller decides what to do with the version.
    pub fn parse(b: &[u8; FILE_HEADER_LEN as usize]) -> Result<FileHeader, String> {
        if b[..8] != PACK_MAGIC {
            return Err("not a Cairn pack file (bad magic)".into());
        }
        Ok(FileHeader {
            version: u32_le(&b[8..12]),
            segment: u32_le(&b[12..16]),
        })
    }
}

/// The header in front of every chunk payload in a pack file.
///
/// ```text
/// 0   4  magic "CKR1"
/// 4  32  chunk id (BLAKE3 of the uncompressed content)
/// 36  1  codec (0 raw, 1 zstd)
/// 37  4  raw_len     content length
/// 41  4  stored_len  payload length
/// 45  4  crc32 of bytes 0..45 and the payload
/// 49     payload
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub id: ChunkId,
    pub codec: Codec,
    pub raw_len: u32,
    pub stored_len: u32,
    pub crc: u32,
}

impl RecordHeader {
    /// Builds the header for a payload, computing its checksum.
    pub fn new(id: ChunkId, codec: Codec, raw_len: u32, payload: &[u8]) -> RecordHeader {
        let mut h = RecordHeader {
            id,
            codec,
            raw_len,
            stored_len: payload.len() as u32,
            crc: 0,
        };
        h.crc = h.compute_crc(payload);
        h
    }

    /// Returns the header bytes.
    pub fn encode(&self) -> [u8; RECORD_HEADER_LEN] {
        let mut b = [0u8; RECORD_HEADER_LEN];
        self.encode_covered(&mut b);
        b[45..49].copy_from_slice(&self.crc.to_le_bytes());
        b
    }

    fn encode_covered(&self, b: &mut [u8; RECORD_HEADER_LEN]) {
        b[..4].copy_from_slice(&RECORD_MAGIC);
        b[4..36].copy_from_slice(self.id.as_bytes());
        b[36] = self.codec as u8;
        b[37..41].copy_from_slice(&self.raw_len.to_le_bytes());
        b[41..45].copy_from_slice(&self.stored_len.to_le_bytes());
    }

    /// Parses and sanity-checks a header (magic, codec, lengths). The checksum needs the
    /// payload: see [`RecordHeader::crc_matches`].
    pub fn parse(b: &[u8]) -> Result<RecordHeader, String> {
        if b.len() < RECORD_HEADER_LEN {
            return Err(format!("record header is {} bytes long", b.len()));
        }
        if b[..4] != RECORD_MAGIC {
            return Err("bad record magic".into());
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(&b[4..36]);
        let codec = Codec::from_u8(b[36]).ok_or_else(|| format!("unknown codec {}", b[36]))?;
        let raw_len = u32_le(&b[37..41]);
        let stored_len = u32_le(&b[41..45]);
        if raw_len > MAX_CHUNK_LEN {
            return Err(format!("content length {raw_len} exceeds {MAX_CHUNK_LEN}"));
        }
        if stored_len > MAX_STORED_LEN {
            return Err(format!(
                "payload length {stored_len} exceeds {MAX_STORED_LEN}"
            ));
        }
        Ok(RecordHeader {
            id: ChunkId(id),
            codec,
            raw_len,
            stored_len,
            crc: u32_le(&b[45..49]),
        })
    }

    /// Returns true when `payload` matches the header's checksum.
    pub fn crc_matches(&self, payload: &[u8]) -> bool {
        payload.len() == self.stored_len as usize && self.compute_crc(payload) == self.crc
    }

    fn compute_crc(&self, payload: &[u8]) -> u32 {
        let mut b = [0u8; RECORD_HEADER_LEN];
        self.encode_covered(&mut b);
        let mut h = crc32fast::Hasher::new();
        h.update(&b[..CRC_COVERED]);
        h.update(payload);
        h.finalize()
    }

    /// Returns the length of the whole record, header included.
    pub fn record_len(&self) -> u64 {
        RECORD_HEADER_LEN as u64 + u64::from(self.stored_len)
    }

    /// Returns the index location of this record when it starts at `offset` of `segment`.
    pub fn loc(&self, segment: u32, offset: u64) -> Loc {
        Loc {
            segment,
            offset,
            stored_len: self.stored_len,
            raw_len: self.raw_len,
            codec: self.codec,
        }
    }
}

/// Where a chunk's record lives: the value of the index's `chunks` tree.
///
/// Encoded as segment u32 BE, offset u64 BE, stored_len u32 LE, raw_len u32 LE, codec u8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loc {
    pub segment: u32,
    /// Offset of the record header in the pack file.
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
    pub codec: Codec,
}

impl Loc {
    pub const ENCODED_LEN: usize = 21;

    pub fn encode(&self) -> [u8; Loc::ENCODED_LEN] {
        let mut b = [0u8; Loc::ENCODED_LEN];
        b[..4].copy_from_slice(&self.segment.to_be_bytes());
        b[4..12].copy_from_slice(&self.offset.to_be_bytes());
        b[12..16].copy_from_slice(&self.stored_len.to_le_bytes());
        b[16..20].copy_from_slice(&self.raw_len.to_le_bytes());
        b[20] = self.codec as u8;
        b
    }

    pub fn decode(b: &[u8]) -> Result<Loc, String> {
        if b.len() != Loc::ENCODED_LEN {
            return Err(format!("index entry is {} bytes long", b.len()));
        }
        let codec = Codec::from_u8(b[20]).ok_or_else(|| format!("unknown codec {}", b[20]))?;
        let stored_len = u32_le(&b[12..16]);
        let raw_len = u32_le(&b[16..20]);
        if stored_len > MAX_STORED_LEN || raw_len > MAX_CHUNK_LEN {
            return Err(format!(
                "index entry claims {stored_len} stored / {raw_len} content bytes"
            ));
        }
        Ok(Loc {
            segment: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            offset: u64_be(&b[4..12]),
            stored_len,
            raw_len,
            codec,
        })
    }

    /// Returns the length of the whole record, header included.
    pub fn record_len(&self) -> u64 {
        RECORD_HEADER_LEN as u64 + u64::from(self.stored_len)
    }
}

/// Per-segment bookkeeping: the value of the index's `segments` tree.
///
/// Encoded as version u8 (1), watermark u64, live_records u64, live_bytes u64,
/// live_raw_bytes u64 (all LE), retired u8.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegMeta {
    /// Every record before this offset is reflected in the index (indexed, or known dead).
    pub watermark: u64,
    /// Records the index points at.
    pub live_records: u64,
    /// Bytes of those records, headers included.
    pub live_bytes: u64,
    /// Content bytes of those records (uncompressed).
    pub live_raw_bytes: u64,
    /// Compaction has moved everything out; the file is to be deleted.
    pub retired: bool,
}

impl SegMeta {
    pub const ENCODED_LEN: usize = 34;
    const VERSION: u8 = 1;

    /// Returns the bookkeeping of a segment nothing has been indexed from yet.
    pub fn empty() -> SegMeta {
        SegMeta {
            watermark: FILE_HEADER_LEN,
            ..SegMeta::default()
        }
    }

    pub fn encode(&self) -> [u8; SegMeta::ENCODED_LEN] {
        let mut b = [0u8; SegMeta::ENCODED_LEN];
        b[0] = SegMeta::VERSION;
        b[1..9].copy_from_slice(&self.watermark.to_le_bytes());
        b[9..17].copy_from_slice(&self.live_records.to_le_bytes());
        b[17..25].copy_from_slice(&self.live_bytes.to_le_bytes());
        b[25..33].copy_from_slice(&self.live_raw_bytes.to_le_bytes());
        b[33] = u8::from(self.retired);
        b
    }

    pub fn decode(b: &[u8]) -> Result<SegMeta, String> {
        if b.len() != SegMeta::ENCODED_LEN {
            return Err(format!("segment entry is {} bytes long", b.len()));
        }
        if b[0] != SegMeta::VERSION {
            return Err(format!("segment entry has unknown version {}", b[0]));
        }
        Ok(SegMeta {
            watermark: u64_le(&b[1..9]),
            live_records: u64_le(&b[9..17]),
            live_bytes: u64_le(&b[17..25]),
            live_raw_bytes: u64_le(&b[25..33]),
            retired: b[33] != 0,
        })
    }

    /// Returns the bytes below the watermark that no index entry points at.
    pub fn dead_bytes(&self) -> u64 {
        self.data_bytes().saturating_sub(self.live_bytes)
    }

    /// Returns the bytes of records below the watermark.
    pub fn data_bytes(&self) -> u64 {
        self.watermark.saturating_sub(FILE_HEADER_LEN)
    }

    /// Counts a record as live.
    pub fn add(&mut self, loc: &Loc) {
        self.live_records += 1;
        self.live_bytes += loc.record_len();
        self.live_raw_bytes += u64::from(loc.raw_len);
    }

    /// Counts a record as dead.
    pub fn sub(&mut self, loc: &Loc) {
        self.live_records = self.live_records.saturating_sub(1);
        self.live_bytes = self.live_bytes.saturating_sub(loc.record_len());
        self.live_raw_bytes = self.live_raw_bytes.saturating_sub(u64::from(loc.raw_len));
    }
}

fn u32_le(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn u64_le(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

fn u64_be(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(payload: &[u8]) -> RecordHeader {
        RecordHeader::new(ChunkId::of(b"content"), Codec::Zstd, 7, payload)
    }

    #[test]
    fn record_header_round_trips() {
        let h = header(b"payload");
        let b = h.encode();
        assert_eq!(&b[..4], b"CKR1");
        let back = RecordHeader::parse(&b).unwrap();
        assert_eq!(back, h);
        assert!(back.crc_matches(b"payload"));
        assert_eq!(back.record_len(), 49 + 7);
    }

    #[test]
    fn checksum_covers_every_header_field_and_the_payload() {
        let h = header(b"payload");
        let good = h.encode();
        // Every byte before the CRC, and every payload byte, changes the checksum.
        for i in 0..45 {
            let mut b = good;
            b[i] ^= 0x01;
            if let Ok(p) = RecordHeader::parse(&b) {
                assert!(!p.crc_matches(b"payload"), "byte {i} not covered");
            }
        }
        assert!(!h.crc_matches(b"paylaod"));
        assert!(!h.crc_matches(b"payload!"));
    }

    #[test]
    fn garbage_headers_are_refused() {
        let mut b = header(b"x").encode();
        b[0] = b'X';
        assert!(RecordHeader::parse(&b).is_err());

        let mut b = header(b"x").encode();
        b[36] = 9;
        assert!(RecordHeader::parse(&b).unwrap_err().contains("codec"));

        let mut b = header(b"x").encode();
        b[41..45].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(RecordHeader::parse(&b)
            .unwrap_err()
            .contains("payload length"));

        let mut b = header(b"x").encode();
        b[37..41].copy_from_slice(&(MAX_CHUNK_LEN + 1).to_le_bytes());
        assert!(RecordHeader::parse(&b).is_err());

        assert!(RecordHeader::parse(&[0u8; 10]).is_err());
    }

    #[test]
    fn file_header_round_trips() {
        let b = FileHeader::encode(0x0102_0304);
        assert_eq!(&b[..8], b"CAIRNPK\0");
        assert_eq!(
            FileHeader::parse(&b).unwrap(),
            FileHeader {
                version: PACK_VERSION,
                segment: 0x0102_0304
            }
        );
        let mut bad = b;
        bad[3] = 0;
        assert!(FileHeader::parse(&bad).is_err());
    }

    #[test]
    fn index_values_round_trip() {
        let loc = Loc {
            segment: 7,
            offset: 1 << 40,
            stored_len: 1000,
            raw_len: 4000,
            codec: Codec::Zstd,
        };
        assert_eq!(Loc::decode(&loc.encode()).unwrap(), loc);
        assert!(Loc::decode(&loc.encode()[..20]).is_err());
        let mut bad = loc.encode();
        bad[20] = 5;
        assert!(Loc::decode(&bad).is_err());

        let m = SegMeta {
            watermark: 1 << 33,
            live_records: 3,
            live_bytes: 99,
            live_raw_bytes: 1 << 35,
            retired: true,
        };
        assert_eq!(SegMeta::decode(&m.encode()).unwrap(), m);
        let mut bad = m.encode();
        bad[0] = 2;
        assert!(SegMeta::decode(&bad).is_err());
    }

    #[test]
    fn dead_bytes_are_what_the_index_does_not_reference() {
        let loc = Loc {
            segment: 1,
            offset: FILE_HEADER_LEN,
            stored_len: 51,
            raw_len: 60,
            codec: Codec::Raw,
        };
        let mut m = SegMeta::empty();
        m.watermark += 2 * loc.record_len();
        m.add(&loc);
        m.add(&loc);
        assert_eq!(m.dead_bytes(), 0);
        m.sub(&loc);
        assert_eq!(m.dead_bytes(), 100);
        assert_eq!(m.live_raw_bytes, 60);
    }
}
