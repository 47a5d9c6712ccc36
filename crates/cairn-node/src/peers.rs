//! Calls from this node to the other nodes: chunk copies, lookups across owners, and
//! forwarding catalog calls to the raft leader.
//!
//! # Where a chunk is
//! A chunk's owners are computed from the placement epoch in force (`cairn_core::placement`):
//! the first owner is its primary. A primary that accepts an upload copies it to the other
//! owners before it answers (see `chunks`), so "the primary holds it" is the normal state.
//! Lookups here ask the primary first and fall back to the other owners, then to every
//! other node, so a node that is down or holds a corrupt copy never makes a chunk unreadable.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_chunker::EncodedChunk;
use cairn_core::placement::Epoch;
use cairn_core::{ChunkId, ErrorCode};
use cairn_meta::MetaNode;
use cairn_proto::pb::agents_client::AgentsClient;
use cairn_proto::pb::catalog_client::CatalogClient;
use cairn_proto::pb::chunks_client::ChunksClient;
use cairn_proto::pb::{self};
use cairn_proto::{status, AuthChannel, Token, MAX_MESSAGE};
use cairn_store::{ChunkStore, StoreError};

use crate::config::WriteQuorum;
use futures::StreamExt;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

/// How long a call to a peer may take before it counts as down.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long dialling a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 pings on a peer connection with calls open, and how long an answer may take. A
/// connection that died under a partition (the peer's TCP never said so) fails its calls
/// within `KEEPALIVE_EVERY + KEEPALIVE_WAIT` and the channel dials anew, instead of every
/// call on it waiting out `PEER_TIMEOUT` until TCP gives up (minutes) after the network heals.
pub const KEEPALIVE_EVERY: Duration = Duration::from_secs(2);
pub const KEEPALIVE_WAIT: Duration = Duration::from_secs(5);

/// Lazily dialled channels to the other nodes, by URL, carrying the cluster token.
#[derive(Clone)]
pub struct Peers {
    token: Token,
    tls: Option<tonic::transport::ClientTlsConfig>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Peers {
    pub fn new(token: Token, tls: Option<tonic::transport::ClientTlsConfig>) -> Peers {
        Peers {
            token,
            tls,
            channels: Arc::default(),
        }
    }

    /// Returns `addr` as a URL: as given when it has a scheme, else `https://` on a
    /// cluster whose nodes speak TLS and `http://` otherwise (`cairn cluster add-node
    /// HOST:PORT` names the node the way its certificate does).
    pub fn url_of(&self, addr: &str) -> String {
        if addr.contains("://") {
            addr.to_string()
        } else if self.tls.is_some() {
            format!("https://{addr}")
        } else {
            crate::config::as_url(addr)
        }
    }

    fn channel(&self, url: &str) -> Result<AuthChannel, Status> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let ch = match map.get(url) {
            Some(c) => c.clone(),
            None => {
                let ep = Endpoint::from_shared(url.to_string())
                    .map_err(|e| {
                        status(ErrorCode::Internal, format!("bad peer address {url}: {e}"))
                    })?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .timeout(PEER_TIMEOUT)
                    .http2_keep_alive_interval(KEEPALIVE_EVERY)
                    .keep_alive_timeout(KEEPALIVE_WAIT)
                    .tcp_nodelay(true);
                let c = crate::auth::tls_for(ep, self.tls.as_ref())
                    .map_err(|e| status(ErrorCode::Unavailable, e))?
                    .connect_lazy();
                map.insert(url.to_string(), c.clone());
                c
            }
        };
        Ok(tonic::service::interceptor::InterceptedService::new(
            ch,
            self.token.clone(),
        ))
    }

    /// Returns a chunk client of the node at `url`.
    pub fn chunks(&self, url: &str) -> Result<ChunksClient<AuthChannel>, Status> {
        Ok(ChunksClient::new(self.channel(url)?)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    }

    /// Returns a catalog client of the node at `url`.
    pub fn catalog(&self, url: &str) -> Result<CatalogClient<AuthChannel>, Status> {
        Ok(CatalogClient::new(self.channel(url)?)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    }

    pub fn agents(&self, url: &str) -> Result<AgentsClient<AuthChannel>, Status> {
        Ok(AgentsClient::new(self.channel(url)?)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    }

    /// Stores `chunks` on the node at `url` as replica copies (it does not copy further).
    pub async fn put_replica(&self, url: &str, chunks: Vec<EncodedChunk>) -> Result<(), Status> {
        let msgs: Vec<pb::PutRequest> = chunks
            .chunks(64)
            .map(|c| pb::PutRequest {
                chunks: c.iter().cloned().map(pb::Chunk::from).collect(),
                replica: true,
            })
            .collect();
        self.chunks(url)?
            .put(futures::stream::iter(msgs))
            .await
            .map(|_| ())
    }

    /// Returns which of `ids` the node at `url` lacks in its own store (it touches the rest).
    pub async fn missing_at(&self, url: &str, ids: &[ChunkId]) -> Result<Vec<ChunkId>, Status> {
        let req = pb::MissingRequest {
            ids: ids.iter().map(|i| i.0.to_vec()).collect(),
            local: true,
        };
        let resp = self.chunks(url)?.missing(req).await?.into_inner();
        Ok(resp
            .missing
            .iter()
            .filter_map(|&i| ids.get(i as usize).copied())
            .collect())
    }

    /// Fetches one chunk from the node at `url`; the content is verified by the caller.
    pub async fn get_at(&self, url: &str, id: ChunkId) -> Result<EncodedChunk, Status> {
        let req = pb::GetRequest {
            ids: vec![id.0.to_vec()],
            backup: String::new(),
        };
        let mut s = self.chunks(url)?.get(req).await?.into_inner();
        match s.next().await {
            Some(m) => {
                let c = m?
                    .chunk
                    .ok_or_else(|| status(ErrorCode::Internal, "empty chunk message"))?;
                Ok(EncodedChunk::try_from(c)?)
            }
            None => Err(status(ErrorCode::NotFound, format!("chunk {id} not found"))),
        }
    }
}

/// The whole cluster's chunks as one node sees them: its own store plus its peers.
#[derive(Clone)]
pub struct ClusterChunks {
    pub node_id: u64,
    pub store: Arc<ChunkStore>,
    pub meta: Arc<MetaNode>,
    pub peers: Peers,
    /// Chunks written here or reported present to a client, for garbage collection.
    pub touches: Arc<crate::touch::Touches>,
    /// How many copies of a chunk an upload and a commit need.
    pub quorum: WriteQuorum,
    /// Where tests place pause files (`DATA/failpoints`, see `cairn_proto::failpoint`).
    pub failpoints: std::path::PathBuf,
    /// The node's last scrub, GC and repair runs (`crate::last_runs`).
    pub runs: Arc<crate::last_runs::RunLog>,
}

impl ClusterChunks {
    /// The placement epoch in force; `None` while the cluster is still forming.
    pub fn epoch(&self) -> Option<Epoch> {
        self.meta.placement().ok().flatten()
    }

    /// Returns the id of every chunk this node stores.
    pub async fn local_ids(&self) -> Result<Vec<ChunkId>, Status> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let mut ids = Vec::new();
            store.for_each_id(|id| {
                ids.push(id);
                true
            })?;
            Ok::<_, StoreError>(ids)
        })
        .await
        .map_err(crate::error::join_status)?
        .map_err(crate::error::store_status)
    }

    /// The nodes to ask for `id`, in order: its owners, then every other node.
    fn candidates(&self, epoch: &Epoch, id: &ChunkId) -> Vec<(u64, String)> {
        let mut out: Vec<(u64, String)> = epoch
            .owners(id)
            .into_iter()
            .filter_map(|o| epoch.node(o).map(|n| (o, n.addr.clone())))
            .collect();
        for n in &epoch.nodes {
            if !out.iter().any(|(id, _)| *id == n.id) {
                out.push((n.id, n.addr.clone()));
            }
        }
        out
    }

    /// Returns the verified content of `id` from this node or, failing that, from any peer.
    pub async fn content(&self, id: ChunkId) -> Result<bytes::Bytes, Status> {
        let store = self.store.clone();
        let local = tokio::task::spawn_blocking(move || store.get_content(&id))
            .await
            .map_err(crate::error::join_status)?;
        let first_err = match local {
            Ok(b) => return Ok(b),
            Err(StoreError::NotFound(_)) => None,
            Err(e) => {
                tracing::warn!(chunk = %id, error = %e, "local copy unreadable; trying replicas");
                Some(crate::error::store_status(e))
            }
        };
        match self.peer_copy(id).await {
            Ok(Some((_, content))) => Ok(content),
            Ok(None) => Err(first_err.unwrap_or_else(|| {
                status(
                    ErrorCode::ChunksMissing,
                    format!("chunk {id} is on no reachable node"),
                )
            })),
            Err(e) => Err(e),
        }
    }

    /// Returns a copy of `id` from another node, as stored there, with its content; both
    /// verified (decoded and re-hashed against the id). `None` when no other node answers
    /// with a healthy copy.
    pub async fn peer_copy(
        &self,
        id: ChunkId,
    ) -> Result<Option<(EncodedChunk, bytes::Bytes)>, Status> {
        let Some(epoch) = self.epoch() else {
            return Ok(None);
        };
        for (nid, url) in self.candidates(&epoch, &id) {
            if nid == self.node_id {
                continue;
            }
            match self.peers.get_at(&url, id).await {
                Ok(c) if c.id != id => {
                    tracing::warn!(chunk = %id, node = nid, other = %c.id, "replica answered with another chunk")
                }
                Ok(c) => match tokio::task::spawn_blocking(move || {
                    cairn_chunker::decode(&c).map(|bytes| (c, bytes))
                })
                .await
                {
                    Ok(Ok(copy)) => return Ok(Some(copy)),
                    Ok(Err(e)) => {
                        tracing::warn!(chunk = %id, node = nid, error = %e, "replica failed verification")
                    }
                    Err(e) => return Err(crate::error::join_status(e)),
                },
                Err(e) => {
                    tracing::debug!(chunk = %id, node = nid, error = %e, "replica unavailable")
                }
            }
        }
        Ok(None)
    }

    /// Returns which of `ids` this node's store lacks, touching the others (one step against
    /// a sweep: see `crate::gc`).
    pub async fn local_missing(&self, ids: Vec<ChunkId>) -> Result<Vec<ChunkId>, Status> {
        let store = self.store.clone();
        let touches = self.touches.clone();
        tokio::task::spawn_blocking(move || {
            let _gate = touches.gate();
            let mut missing = Vec::new();
            let mut present = Vec::with_capacity(ids.len());
            for id in ids {
                if store.contains(&id)? {
                    present.push(id);
                } else {
                    missing.push(id);
                }
            }
            touches.touch(present);
            Ok::<_, StoreError>(missing)
        })
        .await
        .map_err(crate::error::join_status)?
        .map_err(crate::error::store_status)
    }

    /// Asks node `nid` (this one or a peer) which of `ids` its own store lacks.
    async fn missing_on(
        &self,
        epoch: &Epoch,
        nid: u64,
        ids: Vec<ChunkId>,
    ) -> Result<Vec<ChunkId>, Status> {
        if nid == self.node_id {
            return self.local_missing(ids).await;
        }
        let url = epoch
            .node(nid)
            .map(|n| n.addr.clone())
            .ok_or_else(|| status(ErrorCode::Internal, format!("node {nid} has no address")))?;
        self.peers.missing_at(&url, &ids).await
    }

    /// Returns which of `ids` the cluster does not hold, and makes sure of the rest: a chunk
    /// counts as held when enough of its owners hold it for the write quorum
    /// ([`CopyCount::enough`]). Every owner is asked (each touches what it holds, so a
    /// collection spares every copy, not only the primary's). A chunk held by too few owners
    /// is copied to the owners that lack it from any node that holds a verified copy (during
    /// a move it may still be only on its former owners); one that no node holds is missing.
    /// Fails with `unavailable` when a held chunk cannot reach the quorum (too many owners
    /// down), naming it.
    pub async fn lacking(&self, ids: &[ChunkId]) -> Result<Vec<ChunkId>, Status> {
        let Some(epoch) = self.epoch().filter(|e| !e.nodes.is_empty()) else {
            return self.local_missing(ids.to_vec()).await;
        };
        // 1. Every owner of every id.
        let owners: HashMap<ChunkId, Vec<u64>> =
            ids.iter().map(|id| (*id, epoch.owners(id))).collect();
        let mut per_node: BTreeMap<u64, Vec<ChunkId>> = BTreeMap::new();
        for (id, os) in &owners {
            for o in os {
                per_node.entry(*o).or_default().push(*id);
            }
        }
        let answers = futures::future::join_all(per_node.into_iter().map(|(nid, list)| {
            let epoch = &epoch;
            async move {
                let r = self.missing_on(epoch, nid, list.clone()).await;
                (nid, list, r)
            }
        }))
        .await;
        let mut counts: HashMap<ChunkId, CopyCount> = HashMap::new();
        for (nid, list, r) in answers {
            match r {
                Ok(missing) => {
                    let missing: std::collections::HashSet<ChunkId> = missing.into_iter().collect();
                    for id in list {
                        let c = counts.entry(id).or_default();
                        if missing.contains(&id) {
                            c.lacking.push(nid);
                        } else {
                            c.held += 1;
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(node = nid, error = %e, "owner did not answer whether it holds chunks")
                }
            }
        }
        // 2. The quorum's verdict; the short ones get copies where a copy exists.
        let mut out = Vec::new();
        let mut short: Vec<(ChunkId, CopyCount, usize)> = Vec::new();
        for id in ids {
            let c = counts.remove(id).unwrap_or_default();
            let n = owners.get(id).map_or(0, Vec::len);
            if !c.enough(self.quorum, n) {
                let need = self.quorum.needed(n, c.up());
                short.push((*id, c, need));
            }
        }
        for (id, c, need) in short {
            if c.held == 0 && !self.held_elsewhere(&epoch, &owners[&id], id).await {
                out.push(id);
                continue;
            }
            let mut held = c.held;
            // Owners that took no copy for a reason of their own (not down, not full).
            let mut refused = 0;
            if !c.lacking.is_empty() {
                if let Ok(content) = self.content(id).await {
                    let chunk = cairn_chunker::codec::encode_with_id(
                        id,
                        &content,
                        cairn_core::Compression::Normal,
                    );
                    for nid in &c.lacking {
                        let Some(url) = epoch.node(*nid).map(|n| n.addr.clone()) else {
                            continue;
                        };
                        let copied = if *nid == self.node_id {
                            self.store_here(chunk.clone()).await
                        } else {
                            self.peers.put_replica(&url, vec![chunk.clone()]).await
                        };
                        match copied {
                            Ok(()) => held += 1,
                            Err(e) => {
                                if !owner_is_down(&e) {
                                    refused += 1;
                                }
                                tracing::warn!(chunk = %id, node = nid, error = %e, "could not copy a chunk to its owner")
                            }
                        }
                    }
                }
            }
            // An owner that answered "lacking" but cannot take a copy (down since, or out of
            // space) counts as down, as it does for an upload.
            let need = need.min(self.quorum.needed(owners[&id].len(), held + refused));
            if held < need {
                return Err(status(
                    ErrorCode::Unavailable,
                    format!(
                        "chunk {id} has {held} of the {need} copies the write quorum needs among its {} owners; too many nodes are down — retry when they are back",
                        owners[&id].len()
                    ),
                ));
            }
        }
        Ok(out)
    }

    /// Tells whether a node other than `owners` holds `id` (a move not finished yet).
    async fn held_elsewhere(&self, epoch: &Epoch, owners: &[u64], id: ChunkId) -> bool {
        for n in &epoch.nodes {
            if owners.contains(&n.id) {
                continue;
            }
            if let Ok(m) = self.missing_on(epoch, n.id, vec![id]).await {
                if m.is_empty() {
                    return true;
                }
            }
        }
        false
    }

    /// Stores a verified copy in this node's own store (and touches it).
    async fn store_here(&self, chunk: cairn_chunker::EncodedChunk) -> Result<(), Status> {
        let store = self.store.clone();
        let touches = self.touches.clone();
        tokio::task::spawn_blocking(move || {
            let _gate = touches.gate();
            store.put_batch(std::slice::from_ref(&chunk))?;
            touches.touch([chunk.id]);
            Ok::<_, StoreError>(())
        })
        .await
        .map_err(crate::error::join_status)?
        .map_err(crate::error::store_status)
    }
}

/// Tells whether a failed copy to an owner means it cannot take writes now (it did not
/// answer, or it is out of space) rather than that it refused for a reason of its own.
pub fn owner_is_down(e: &Status) -> bool {
    matches!(
        cairn_proto::stable_code(e),
        None | Some(ErrorCode::Unavailable) | Some(ErrorCode::DiskFull)
    )
}

/// What a chunk's owners answered: how many hold it, and which answered that they lack it.
/// Owners that did not answer are down.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyCount {
    pub held: usize,
    pub lacking: Vec<u64>,
}

impl CopyCount {
    /// Owners that answered.
    pub fn up(&self) -> usize {
        self.held + self.lacking.len()
    }

    /// Whether the copies meet the write quorum among `owners` owners.
    pub fn enough(&self, quorum: WriteQuorum, owners: usize) -> bool {
        owners > 0 && self.held >= quorum.needed(owners, self.up())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(held: usize, lacking: &[u64]) -> CopyCount {
        CopyCount {
            held,
            lacking: lacking.to_vec(),
        }
    }

    #[test]
    fn all_owners_that_answer_must_hold_a_copy() {
        let all = WriteQuorum::All;
        assert!(count(3, &[]).enough(all, 3));
        // One owner answered that it lacks the chunk: two copies are not enough for "all".
        assert!(!count(2, &[3]).enough(all, 3));
        // One owner is down: the two that answered suffice (a majority).
        assert!(count(2, &[]).enough(all, 3));
        // Only one copy, the others down: below a majority.
        assert!(!count(1, &[]).enough(all, 3));
        // A number of copies, whoever answered.
        assert!(count(2, &[3]).enough(WriteQuorum::Copies(2), 3));
        assert!(!count(1, &[2, 3]).enough(WriteQuorum::Copies(2), 3));
        // No owners at all (no placement): never enough.
        assert!(!count(0, &[]).enough(all, 0));
    }
}
