//! Content-defined chunking with FastCDC (the `fastcdc` crate's 2020 variant).
//!
//! Boundaries depend only on the bytes near them, so an insertion early in a file changes the
//! chunks around the edit and leaves the rest identical — the property dedup rests on.

use std::io::Read;

/// FastCDC size bounds in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkerParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Default for ChunkerParams {
    /// 256 KiB / 1 MiB / 4 MiB, as DESIGN.md proposes; see the criterion bench for the trade.
    fn default() -> Self {
        ChunkerParams {
            min: 256 * 1024,
            avg: 1024 * 1024,
            max: 4 * 1024 * 1024,
        }
    }
}

/// Cuts a reader into content-defined chunks, holding at most one maximum-size buffer.
pub struct StreamChunker<R: Read> {
    inner: fastcdc::v2020::StreamCDC<R>,
}

impl<R: Read> StreamChunker<R> {
    pub fn new(reader: R, p: ChunkerParams) -> Self {
        StreamChunker {
            inner: fastcdc::v2020::StreamCDC::new(reader, p.min, p.avg, p.max),
        }
    }
}

impl<R: Read> Iterator for StreamChunker<R> {
    type Item = std::io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next().map(|r| {
            r.map(|c| c.data).map_err(|e| match e {
                fastcdc::v2020::Error::IoError(io) => io,
                other => std::io::Error::other(other.to_string()),
            })
        })
    }
}

/// Cuts an in-memory buffer; returns the chunk lengths.
pub fn cut_lengths(data: &[u8], p: ChunkerParams) -> Vec<usize> {
    fastcdc::v2020::FastCDC::new(data, p.min, p.avg, p.max)
        .map(|c| c.length)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_core::testing::noise;
    use cairn_core::ChunkId;

    fn ids(data: &[u8]) -> Vec<ChunkId> {
        StreamChunker::new(data, ChunkerParams::default())
            .map(|c| ChunkId::of(&c.unwrap()))
            .collect()
    }

    #[test]
    fn chunks_reassemble_the_input() {
        let data = noise(9 << 20, 7);
        let parts: Vec<Vec<u8>> = StreamChunker::new(&data[..], ChunkerParams::default())
            .map(|c| c.unwrap())
            .collect();
        assert!(parts.len() > 3);
        assert!(parts.iter().all(|p| p.len() <= 4 << 20));
        assert_eq!(parts.concat(), data);
    }

    #[test]
    fn an_early_insertion_keeps_later_boundaries() {
        let data = noise(16 << 20, 42);
        let mut edited = data.clone();
        edited.splice(1000..1000, b"inserted bytes".iter().copied());
        let a = ids(&data);
        let b = ids(&edited);
        let shared = b.iter().filter(|id| a.contains(id)).count();
        // Only the chunk(s) around the edit may differ.
        assert!(
            shared + 2 >= a.len(),
            "{shared} of {} chunks survived",
            a.len()
        );
        assert_eq!(a.last(), b.last());
    }

    #[test]
    fn small_inputs_are_one_chunk() {
        assert_eq!(ids(b"tiny").len(), 1);
        assert_eq!(ids(b"").len(), 0);
    }
}
