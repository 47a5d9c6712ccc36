//! One chunk on the wire and on disk.
//!
//! The chunk id is the BLAKE3 digest of the *uncompressed* content, so the same content has
//! the same id whatever compression level produced it, and dedup works across levels.
//! [`decode`] is the only way back to content and it always re-hashes: a reader can never get
//! bytes whose digest differs from the id it asked for.

use cairn_core::{ChunkId, Compression};

/// Largest chunk content we accept anywhere (the chunker's maximum is 4 MiB; manifests may
/// cut up to 4 MiB plus one entry).
pub const MAX_CHUNK_LEN: u32 = 16 * 1024 * 1024;

/// How a chunk's payload is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Codec {
    Raw = 0,
    Zstd = 1,
}

impl Codec {
    pub fn from_u8(v: u8) -> Option<Codec> {
        match v {
            0 => Some(Codec::Raw),
            1 => Some(Codec::Zstd),
            _ => None,
        }
    }
}

/// A chunk ready to store or send: its id, its content length, and its encoded payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedChunk {
    pub id: ChunkId,
    pub raw_len: u32,
    pub codec: Codec,
    pub data: Vec<u8>,
}

/// Why a chunk could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChunkError {
    #[error("chunk {id} is corrupt: {why}")]
    Corrupt { id: ChunkId, why: String },
    #[error("chunk {id} claims {len} bytes, more than the {max}-byte limit")]
    TooLarge { id: ChunkId, len: u32, max: u32 },
}

/// The zstd level used for each Virtuozzo compression level.
///
/// Chosen by `cargo bench -p cairn-chunker` on a Debian root file system: level 3 is zstd's
/// own default and keeps a core above 250 MB/s while compressing within a few percent of
/// level 9; "high" trades half the speed for ~3% more; "maximum" is for archives.
pub fn zstd_level(c: Compression) -> Option<i32> {
    match c {
        Compression::None => None,
        Compression::Normal => Some(3),
        Compression::High => Some(9),
        Compression::Maximum => Some(19),
    }
}

/// Hashes and compresses `data`. Keeps the raw bytes when compression saves under 2%.
pub fn encode(data: &[u8], level: Compression) -> EncodedChunk {
    let id = ChunkId::of(data);
    encode_with_id(id, data, level)
}

/// Like [`encode`] for a caller that has already hashed `data`.
pub fn encode_with_id(id: ChunkId, data: &[u8], level: Compression) -> EncodedChunk {
    let raw = || EncodedChunk {
        id,
        raw_len: data.len() as u32,
        codec: Codec::Raw,
        data: data.to_vec(),
    };
    let Some(lvl) = zstd_level(level) else {
        return raw();
    };
    if data.len() < 64 {
        return raw();
    }
    match zstd::bulk::compress(data, lvl) {
        Ok(z) if (z.len() as u64) * 100 < (data.len() as u64) * 98 => EncodedChunk {
            id,
            raw_len: data.len() as u32,
            codec: Codec::Zstd,
            data: z,
        },
        _ => raw(),
    }
}

/// Returns the chunk's content after checking its length and its BLAKE3 digest.
pub fn decode(c: &EncodedChunk) -> Result<Vec<u8>, ChunkError> {
    if c.raw_len > MAX_CHUNK_LEN {
        return Err(ChunkError::TooLarge {
            id: c.id,
            len: c.raw_len,
            max: MAX_CHUNK_LEN,
        });
    }
    let content = match c.codec {
        Codec::Raw => c.data.clone(),
        Codec::Zstd => zstd::bulk::decompress(&c.data, c.raw_len as usize).map_err(|e| {
            ChunkError::Corrupt {
                id: c.id,
                why: format!("zstd: {e}"),
            }
        })?,
    };
    verify(&c.id, &content)?;
    if content.len() != c.raw_len as usize {
        return Err(ChunkError::Corrupt {
            id: c.id,
            why: format!("length {} instead of {}", content.len(), c.raw_len),
        });
    }
    Ok(content)
}

/// Checks that `content` hashes to `id`.
pub fn verify(id: &ChunkId, content: &[u8]) -> Result<(), ChunkError> {
    let got = ChunkId::of(content);
    if &got != id {
        return Err(ChunkError::Corrupt {
            id: *id,
            why: format!("content hashes to {got}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_at_every_level() {
        let text = b"hello cairn ".repeat(1000);
        for l in 0..4 {
            let c = encode(&text, Compression::from_level(l).unwrap());
            assert_eq!(c.id, ChunkId::of(&text));
            assert_eq!(decode(&c).unwrap(), text);
            assert_eq!(c.codec == Codec::Raw, l == 0);
        }
    }

    #[test]
    fn incompressible_data_is_stored_raw() {
        let mut x = 0x1234_5678_9abc_def0u64;
        let data: Vec<u8> = (0..100_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let c = encode(&data, Compression::Maximum);
        assert_eq!(c.codec, Codec::Raw);
        assert_eq!(c.data, data);
    }

    #[test]
    fn any_flipped_bit_is_detected() {
        let text = b"some content that compresses well ".repeat(200);
        for codec_level in [Compression::None, Compression::Normal] {
            let good = encode(&text, codec_level);
            for i in [0, good.data.len() / 2, good.data.len() - 1] {
                let mut bad = good.clone();
                bad.data[i] ^= 0x01;
                let err = decode(&bad).unwrap_err();
                assert!(err.to_string().contains(&good.id.to_string()), "{err}");
            }
        }
    }

    #[test]
    fn lying_lengths_are_refused() {
        let text = b"abc".repeat(1000);
        let mut c = encode(&text, Compression::Normal);
        c.raw_len = 10;
        assert!(decode(&c).is_err());
        c.raw_len = u32::MAX;
        assert!(matches!(decode(&c), Err(ChunkError::TooLarge { .. })));
    }
}
