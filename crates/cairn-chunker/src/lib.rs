//! The chunk format and the chunking engine.
//!
//! * [`codec`]: one chunk as it travels and rests — BLAKE3 id of the uncompressed content,
//!   zstd-compressed payload (or raw when compression does not help), verified on decode.
//! * [`cdc`]: content-defined chunking of a byte stream with FastCDC, so that inserting bytes
//!   early in a file moves only the chunks around the edit.

pub mod cdc;
pub mod codec;

pub use cdc::{ChunkerParams, StreamChunker};
pub use codec::{check, decode, encode, ChunkError, Codec, EncodedChunk};
