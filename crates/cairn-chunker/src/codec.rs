//! One chunk on the wire and on disk.
//!
//! The chunk id is the BLAKE3 digest of the *uncompressed* content, so the same content has
//! the same id whatever compression level produced it, and dedup works across levels.
//! [`decode`] is the only way back to content and it always re-hashes: a reader can never get
//! bytes whose digest differs from the id it asked for. [`check`] is the same check for a
//! caller that only needs to know (a store verifying what it is asked to keep or to send on):
//! it reads a raw payload in place and decompresses into a reused buffer.
//!
//! zstd contexts are kept per thread and reused: creating one per chunk (what
//! `zstd::bulk::compress` does) allocated and cleared its tables every time, a few percent of
//! a backup's CPU in `scripts/profile.sh`.

use std::cell::RefCell;

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
    /// Shared, not copied, between the wire, the store and the replicas' requests.
    pub data: bytes::Bytes,
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
        data: bytes::Bytes::copy_from_slice(data),
    };
    let Some(lvl) = zstd_level(level) else {
        return raw();
    };
    if data.len() < 64 || looks_incompressible(data) {
        return raw();
    }
    match compress(data, lvl) {
        Ok(z) if (z.len() as u64) * 100 < (data.len() as u64) * 98 => EncodedChunk {
            id,
            raw_len: data.len() as u32,
            codec: Codec::Zstd,
            data: z.into(),
        },
        _ => raw(),
    }
}

/// Chunks shorter than this are always given to zstd (the probe would cost as much).
const PROBE_MIN: usize = 64 * 1024;
/// Samples the probe takes, evenly spread over the chunk, and each one's length.
const PROBE_SAMPLES: usize = 8;
const PROBE_LEN: usize = 2048;
/// Bits of byte entropy per byte above which a sample counts as incompressible. Random
/// bytes measure about 7.91 in a 2 KiB sample (the empirical entropy of a finite sample is
/// a little under 8), zstd or gzip output the same; text measures 4-5, machine code 5-6.5,
/// database pages with random blobs among text below 7.6.
const PROBE_BITS: f64 = 7.8;

/// The entropy probe: true when every one of [`PROBE_SAMPLES`] samples of the chunk looks
/// like random bytes, so compressing it would cost a full zstd pass to save nothing (an
/// already compressed file, encrypted data, random blobs). One sample that looks
/// compressible sends the whole chunk to zstd, so a chunk that mixes both is compressed as
/// before; what the probe can miss is only repetition *between* random regions of one chunk,
/// which zstd would find and the byte histogram does not. Costs a histogram of 16 KiB per
/// chunk of at least [`PROBE_MIN`] bytes.
pub fn looks_incompressible(data: &[u8]) -> bool {
    if data.len() < PROBE_MIN {
        return false;
    }
    let step = (data.len() - PROBE_LEN) / (PROBE_SAMPLES - 1);
    (0..PROBE_SAMPLES).all(|i| {
        let at = i * step;
        byte_entropy(&data[at..at + PROBE_LEN]) > PROBE_BITS
    })
}

/// Shannon entropy of the bytes of `sample`, in bits per byte.
fn byte_entropy(sample: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for &b in sample {
        counts[b as usize] += 1;
    }
    let n = sample.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// Returns the chunk's content after checking its length and its BLAKE3 digest (a raw
/// chunk's content shares the encoded chunk's bytes).
pub fn decode(c: &EncodedChunk) -> Result<bytes::Bytes, ChunkError> {
    check_len(c)?;
    let content = match c.codec {
        Codec::Raw => c.data.clone(),
        Codec::Zstd => {
            let mut out = Vec::new();
            decompress_into(c, &mut out)?;
            out.into()
        }
    };
    verify_content(c, &content)?;
    Ok(content)
}

/// Checks what [`decode`] checks (length, decompression, BLAKE3 digest) without returning
/// the content: a raw payload is hashed where it lies, a compressed one is decompressed into
/// a buffer this thread reuses.
pub fn check(c: &EncodedChunk) -> Result<(), ChunkError> {
    check_len(c)?;
    match c.codec {
        Codec::Raw => verify_content(c, &c.data),
        Codec::Zstd => SCRATCH.with(|s| {
            let mut buf = s.borrow_mut();
            let r = decompress_into(c, &mut buf).and_then(|()| verify_content(c, &buf));
            // A rare huge chunk does not pin its buffer in every thread that saw one.
            if buf.capacity() > SCRATCH_KEEP {
                *buf = Vec::new();
            }
            r
        }),
    }
}

/// Scratch buffers above this size are given back after use.
const SCRATCH_KEEP: usize = 8 * 1024 * 1024;

thread_local! {
    /// One compression context per zstd level this thread used.
    static COMPRESSORS: RefCell<Vec<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(Vec::new()) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// `data` compressed at `level` with this thread's context for that level.
fn compress(data: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    COMPRESSORS.with(|cs| {
        let mut cs = cs.borrow_mut();
        let i = match cs.iter().position(|(l, _)| *l == level) {
            Some(i) => i,
            None => {
                cs.push((level, zstd::bulk::Compressor::new(level)?));
                cs.len() - 1
            }
        };
        cs[i].1.compress(data)
    })
}

/// Decompresses `c` into `out` (cleared first), at most `raw_len` bytes.
fn decompress_into(c: &EncodedChunk, out: &mut Vec<u8>) -> Result<(), ChunkError> {
    let corrupt = |e: std::io::Error| ChunkError::Corrupt {
        id: c.id,
        why: format!("zstd: {e}"),
    };
    out.clear();
    // Exactly `raw_len` of room: a payload that inflates past its claimed length fails here.
    out.reserve_exact(c.raw_len as usize);
    let room = out.capacity();
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new().map_err(corrupt)?);
        }
        let d = d.as_mut().expect("set above");
        // Our frames declare their content size; zstd then checks the output against it,
        // and a reused buffer's spare room (never more than a previous chunk's length) only
        // bounds what a multi-frame payload could add before the length check fails it.
        match zstd::zstd_safe::get_frame_content_size(&c.data) {
            Ok(Some(n)) if n == u64::from(c.raw_len) => {
                d.decompress_to_buffer(&c.data, out).map_err(corrupt)?;
            }
            Ok(Some(n)) => {
                return Err(ChunkError::Corrupt {
                    id: c.id,
                    why: format!("zstd frame declares {n} bytes, the chunk {}", c.raw_len),
                });
            }
            _ if room > c.raw_len as usize => {
                // No declared size: bound the output by a slice of exactly the claimed length.
                out.resize(c.raw_len as usize, 0);
                let n = d
                    .decompress_to_buffer(&c.data, out.as_mut_slice())
                    .map_err(corrupt)?;
                out.truncate(n);
            }
            _ => {
                d.decompress_to_buffer(&c.data, out).map_err(corrupt)?;
            }
        }
        Ok(())
    })
}

fn check_len(c: &EncodedChunk) -> Result<(), ChunkError> {
    if c.raw_len > MAX_CHUNK_LEN {
        return Err(ChunkError::TooLarge {
            id: c.id,
            len: c.raw_len,
            max: MAX_CHUNK_LEN,
        });
    }
    Ok(())
}

/// The content's digest is the id, and its length the claimed one.
fn verify_content(c: &EncodedChunk, content: &[u8]) -> Result<(), ChunkError> {
    verify(&c.id, content)?;
    if content.len() != c.raw_len as usize {
        return Err(ChunkError::Corrupt {
            id: c.id,
            why: format!("length {} instead of {}", content.len(), c.raw_len),
        });
    }
    Ok(())
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

    /// Text, machine-like bytes and a database-like mix of text and random blobs go to zstd;
    /// random bytes and zstd's own output do not; a chunk that is random but for one
    /// compressible stretch goes to zstd as long as a sample lands in it.
    #[test]
    fn the_probe_skips_only_what_looks_random_everywhere() {
        use cairn_core::testing::noise;
        let text = b"the quick brown fox jumps over the lazy dog; ".repeat(30_000);
        assert!(!looks_incompressible(&text));
        let random = noise(1 << 20, 7);
        assert!(looks_incompressible(&random));
        assert!(looks_incompressible(&noise(PROBE_MIN, 3)));
        assert!(
            !looks_incompressible(&noise(PROBE_MIN - 1, 3)),
            "too short to probe"
        );
        // Rows of words with a random blob of 256-1536 bytes each (bench.sh's database).
        let mut rows = Vec::new();
        let mut i = 0u64;
        while rows.len() < 1 << 20 {
            rows.extend_from_slice(
                format!(
                    "row {i} name-{i} lorem ipsum dolor sit amet, consectetur adipiscing elit; "
                )
                .repeat(3)
                .as_bytes(),
            );
            rows.extend_from_slice(&noise(256 + (i as usize * 97) % 1280, i + 1));
            i += 1;
        }
        assert!(!looks_incompressible(&rows));
        let enc = encode(&rows, Compression::Normal);
        assert_eq!(enc.codec, Codec::Zstd);
        // Random but for a compressible eighth at the end: the last sample finds it.
        let mut mostly = random.clone();
        let n = mostly.len();
        mostly[n - n / 8..].copy_from_slice(&text[..n / 8]);
        assert!(!looks_incompressible(&mostly));
        // zstd's own output (a compressed file inside a container) is not compressed twice.
        assert!(looks_incompressible(&compress(&rows, 3).unwrap()));
        for seed in 1..50 {
            let r = noise(256 * 1024, seed);
            assert!(looks_incompressible(&r), "seed {seed}");
            assert_eq!(encode(&r, Compression::Normal).codec, Codec::Raw);
        }
    }

    #[test]
    fn any_flipped_bit_is_detected() {
        let text = b"some content that compresses well ".repeat(200);
        for codec_level in [Compression::None, Compression::Normal] {
            let good = encode(&text, codec_level);
            for i in [0, good.data.len() / 2, good.data.len() - 1] {
                let mut bad = good.clone();
                let mut data = bad.data.to_vec();
                data[i] ^= 0x01;
                bad.data = data.into();
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

    /// `check` says what `decode` says, for every codec, whatever this thread's reused
    /// buffer held before (a larger chunk, a smaller one, a failed one).
    #[test]
    fn check_agrees_with_decode_across_reused_buffers() {
        let mut cases = Vec::new();
        for (i, n) in [100_000usize, 70, 3_000_000, 5_000, 1]
            .into_iter()
            .enumerate()
        {
            let text: Vec<u8> = format!("chunk {i} says hello; ")
                .into_bytes()
                .repeat(n / 20 + 1);
            let text = &text[..n];
            for level in [Compression::None, Compression::Normal, Compression::High] {
                let good = encode(text, level);
                cases.push(good.clone());
                let mut flipped = good.clone();
                let mut data = flipped.data.to_vec();
                let at = data.len() / 2;
                data[at] ^= 0x40;
                flipped.data = data.into();
                cases.push(flipped);
                let mut short = good.clone();
                short.raw_len = short.raw_len.saturating_sub(1);
                cases.push(short);
                let mut long = good;
                long.raw_len += 1;
                cases.push(long);
            }
        }
        for round in 0..2 {
            for c in &cases {
                let d = decode(c);
                if let Ok(content) = &d {
                    assert_eq!(ChunkId::of(content), c.id);
                }
                assert_eq!(check(c), d.map(|_| ()), "round {round}");
            }
        }
    }

    /// A payload of two zstd frames, the first declaring the chunk's length and the second
    /// adding more, is refused by both (the length check), never returned longer.
    #[test]
    fn a_payload_that_inflates_past_its_length_is_refused() {
        let text = b"abcdefgh".repeat(4096);
        let good = encode(&text, Compression::Normal);
        let mut twice = good.clone();
        twice.data = [&good.data[..], &good.data[..]].concat().into();
        assert!(matches!(decode(&twice), Err(ChunkError::Corrupt { .. })));
        assert!(matches!(check(&twice), Err(ChunkError::Corrupt { .. })));
    }
}
