//! Reading a stored manifest one chunk at a time.

use cairn_core::manifest::{decode_chunk, ManifestRoot, OrderCheck};
use cairn_core::{ChunkId, Entry};

use crate::error::AgentError;
use cairn_api::Client;

/// Fetches and decodes a manifest root.
pub async fn fetch_root(cluster: &Client, id: ChunkId) -> Result<ManifestRoot, AgentError> {
    let bytes = cluster.get_content(id).await?;
    Ok(ManifestRoot::decode(&bytes)?)
}

/// Iterates a manifest's entries, holding one manifest chunk at a time (plus one prefetched).
pub struct ManifestEntries {
    rx: tokio::sync::mpsc::Receiver<Result<Vec<Entry>, AgentError>>,
    buf: std::vec::IntoIter<Entry>,
    order: OrderCheck,
    failed: bool,
}

impl ManifestEntries {
    /// Starts fetching `root`'s chunks in the background.
    pub fn start(cluster: Client, root: &ManifestRoot) -> ManifestEntries {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let ids: Vec<ChunkId> = root.chunks.iter().map(|c| c.id).collect();
        tokio::spawn(async move {
            for id in ids {
                let r = async {
                    let bytes = cluster.get_content(id).await?;
                    let entries = tokio::task::spawn_blocking(move || decode_chunk(&bytes))
                        .await
                        .map_err(|e| AgentError::Internal(e.to_string()))??;
                    Ok(entries)
                }
                .await;
                let stop = r.is_err();
                if tx.send(r).await.is_err() || stop {
                    break;
                }
            }
        });
        ManifestEntries {
            rx,
            buf: Vec::new().into_iter(),
            order: OrderCheck::default(),
            failed: false,
        }
    }

    fn check(&mut self, e: Entry) -> Result<Entry, AgentError> {
        self.order.check(&e)?;
        Ok(e)
    }

    /// The next entry (async).
    pub async fn next(&mut self) -> Option<Result<Entry, AgentError>> {
        loop {
            if self.failed {
                return None;
            }
            if let Some(e) = self.buf.next() {
                return Some(self.check(e));
            }
            match self.rx.recv().await? {
                Ok(v) => self.buf = v.into_iter(),
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }

    /// The next entry, from a thread outside the async runtime.
    pub fn blocking_next(&mut self) -> Option<Result<Entry, AgentError>> {
        loop {
            if self.failed {
                return None;
            }
            if let Some(e) = self.buf.next() {
                return Some(self.check(e));
            }
            match self.rx.blocking_recv()? {
                Ok(v) => self.buf = v.into_iter(),
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}
