//! Commit-time verification: a backup may become visible only when every chunk it needs is
//! durable in the cluster. The committing node walks the manifest itself (it does not trust
//! the client's count) and asks every owner of each chunk whether it holds it
//! ([`ClusterChunks::lacking`]): a commit needs the write quorum of copies of every chunk
//! (copies are verified when they are stored: a node decompresses and hashes every chunk it
//! accepts), and owners that lack one get a copy from a node that holds it before the commit
//! is accepted. A chunk held by too few owners with no way to copy it refuses the commit.

use std::collections::HashSet;

use cairn_core::manifest::{decode_chunk, ManifestRoot, OrderCheck};
use cairn_core::ChunkId;
use tonic::Status;

use crate::peers::ClusterChunks;

/// What a manifest references, as found by [`check_manifest`].
#[derive(Debug, Default)]
pub struct ManifestCheck {
    pub root: ManifestRoot,
    /// Chunk references, manifest chunks and root included.
    pub chunk_refs: u64,
    /// Referenced chunks the cluster does not hold (capped at `MISSING_CAP`).
    pub missing: Vec<ChunkId>,
    pub missing_count: u64,
}

const MISSING_CAP: usize = 16;

/// Why a manifest could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("manifest root {0} is not stored")]
    NoRoot(ChunkId),
    #[error("{}", .0.message())]
    Cluster(Status),
    #[error("manifest is invalid: {0}")]
    Manifest(#[from] cairn_core::manifest::ManifestError),
}

/// Reads the manifest rooted at `root_id` from the cluster and finds the chunks it lacks.
pub async fn check_manifest(
    cluster: &ClusterChunks,
    root_id: &ChunkId,
) -> Result<ManifestCheck, VerifyError> {
    let root_bytes = match cluster.content(*root_id).await {
        Ok(b) => b,
        Err(s) if is_absent(&s) => return Err(VerifyError::NoRoot(*root_id)),
        Err(s) => return Err(VerifyError::Cluster(s)),
    };
    let root = ManifestRoot::decode(&root_bytes)?;
    let mut out = ManifestCheck {
        chunk_refs: 1,
        ..Default::default()
    };
    let mut order = OrderCheck::default();
    // Recently seen ids; bounded so a huge manifest does not grow it without limit.
    let mut seen: HashSet<ChunkId> = HashSet::new();
    let note_missing = |id: ChunkId, out: &mut ManifestCheck| {
        out.missing_count += 1;
        if out.missing.len() < MISSING_CAP {
            out.missing.push(id);
        }
    };
    for mc in &root.chunks {
        out.chunk_refs += 1;
        let bytes = match cluster.content(mc.id).await {
            Ok(b) => b,
            Err(s) if is_absent(&s) => {
                note_missing(mc.id, &mut out);
                continue;
            }
            Err(s) => return Err(VerifyError::Cluster(s)),
        };
        let mut ask: Vec<ChunkId> = Vec::new();
        for e in decode_chunk(&bytes)? {
            order.check(&e)?;
            for c in &e.chunks {
                out.chunk_refs += 1;
                if seen.contains(&c.id) {
                    continue;
                }
                if seen.len() > 1 << 20 {
                    seen.clear();
                }
                seen.insert(c.id);
                ask.push(c.id);
            }
        }
        for part in ask.chunks(10_000) {
            let lacking = cluster.lacking(part).await.map_err(VerifyError::Cluster)?;
            for id in lacking {
                note_missing(id, &mut out);
            }
        }
    }
    out.root = root;
    Ok(out)
}

/// Every chunk a manifest references: the root, the manifest's own chunks and the files'
/// chunks. Read from the cluster (each chunk verified on the way).
pub async fn referenced_chunks(
    cluster: &ClusterChunks,
    root_id: &ChunkId,
) -> Result<HashSet<ChunkId>, VerifyError> {
    let root_bytes = match cluster.content(*root_id).await {
        Ok(b) => b,
        Err(s) if is_absent(&s) => return Err(VerifyError::NoRoot(*root_id)),
        Err(s) => return Err(VerifyError::Cluster(s)),
    };
    let root = ManifestRoot::decode(&root_bytes)?;
    let mut out = HashSet::from([*root_id]);
    for mc in &root.chunks {
        out.insert(mc.id);
        let bytes = cluster.content(mc.id).await.map_err(VerifyError::Cluster)?;
        for e in decode_chunk(&bytes)? {
            out.extend(e.chunks.iter().map(|c| c.id));
        }
    }
    Ok(out)
}

/// Tells whether a lookup failed because no node holds the chunk (rather than failing).
fn is_absent(s: &Status) -> bool {
    matches!(
        cairn_proto::code_of(s).family(),
        cairn_core::ErrorCode::NotFound | cairn_core::ErrorCode::ChunksMissing
    )
}
