//! Commit-time verification: a backup may become visible only when every chunk it needs is
//! durable on this node. The node walks the manifest itself (it does not trust the client's
//! count) and checks every content chunk against the store index.

use std::collections::HashSet;

use cairn_core::manifest::{decode_chunk, ManifestRoot, OrderCheck};
use cairn_core::ChunkId;
use cairn_store::{ChunkStore, StoreError};

/// What a manifest references, as found by [`check_manifest`].
#[derive(Debug, Default)]
pub struct ManifestCheck {
    pub root: ManifestRoot,
    /// Chunk references, manifest chunks and root included.
    pub chunk_refs: u64,
    /// Referenced chunks this node does not hold (capped at `MISSING_CAP`).
    pub missing: Vec<ChunkId>,
    pub missing_count: u64,
}

const MISSING_CAP: usize = 16;

/// Why a manifest could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("manifest root {0} is not stored")]
    NoRoot(ChunkId),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("manifest is invalid: {0}")]
    Manifest(#[from] cairn_core::manifest::ManifestError),
}

/// Reads the manifest rooted at `root_id` from `store` and finds the chunks it lacks.
pub fn check_manifest(store: &ChunkStore, root_id: &ChunkId) -> Result<ManifestCheck, VerifyError> {
    let root_bytes = match store.get_content(root_id) {
        Ok(b) => b,
        Err(StoreError::NotFound(_)) => return Err(VerifyError::NoRoot(*root_id)),
        Err(e) => return Err(e.into()),
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
        let bytes = match store.get_content(&mc.id) {
            Ok(b) => b,
            Err(StoreError::NotFound(id)) => {
                note_missing(id, &mut out);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
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
                if !store.contains(&c.id)? {
                    note_missing(c.id, &mut out);
                }
            }
        }
    }
    out.root = root;
    Ok(out)
}
