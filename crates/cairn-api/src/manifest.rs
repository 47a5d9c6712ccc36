//! Reading a stored manifest one chunk at a time.
//!
//! A manifest (format in [`cairn_core::manifest`]) is a root listing manifest chunks in walk
//! order. [`fetch_root`] reads the root; [`ManifestEntries`] yields the entries, fetching the
//! chunks in the background one at a time (plus one prefetched), so a reader holds at most
//! two manifest chunks (a few MiB) whatever the size of the tree. Every chunk is verified by
//! the client (decoded and re-hashed), every entry validated on decode (safe path, sizes that
//! add up) and checked to follow the previous one in walk order; a manifest that fails any of
//! these is [`Error::Manifest`], code `Corrupt`, and the stream ends there.
//!
//! The backup engines (restore, the parent of an incremental backup) and the file browser
//! ([`crate::browse`]) all read manifests through this module.

use cairn_core::manifest::{decode_chunk, ManifestRoot, OrderCheck};
use cairn_core::{ChunkId, Entry};

use crate::client::Client;
use crate::error::Error;

/// Fetches and decodes a manifest root.
pub async fn fetch_root(cluster: &Client, id: ChunkId) -> Result<ManifestRoot, Error> {
    let bytes = cluster.get_content(id).await?;
    Ok(ManifestRoot::decode(&bytes)?)
}

/// Iterates a manifest's entries, holding one manifest chunk at a time (plus one prefetched).
/// Dropping it stops the background fetches after the chunk in flight.
pub struct ManifestEntries {
    rx: tokio::sync::mpsc::Receiver<Result<Vec<Entry>, Error>>,
    buf: std::vec::IntoIter<Entry>,
    order: OrderCheck,
    failed: bool,
}

impl ManifestEntries {
    /// Starts fetching `root`'s chunks in the background (on the current tokio runtime).
    pub fn start(cluster: Client, root: &ManifestRoot) -> ManifestEntries {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let ids: Vec<ChunkId> = root.chunks.iter().map(|c| c.id).collect();
        tokio::spawn(async move {
            for id in ids {
                let r = async {
                    let bytes = cluster.get_content(id).await?;
                    let entries = tokio::task::spawn_blocking(move || decode_chunk(&bytes))
                        .await
                        .map_err(|e| Error::Internal(e.to_string()))??;
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

    fn check(&mut self, e: Entry) -> Result<Entry, Error> {
        if let Err(err) = self.order.check(&e) {
            self.failed = true;
            return Err(err.into());
        }
        Ok(e)
    }

    /// The next entry (async).
    pub async fn next(&mut self) -> Option<Result<Entry, Error>> {
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
    pub fn blocking_next(&mut self) -> Option<Result<Entry, Error>> {
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
