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
use futures::StreamExt;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

/// How long a call to a peer may take before it counts as down.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long dialling a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

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

    /// Returns which of `ids` the node at `url` lacks.
    pub async fn missing_at(&self, url: &str, ids: &[ChunkId]) -> Result<Vec<ChunkId>, Status> {
        let req = pb::MissingRequest {
            ids: ids.iter().map(|i| i.0.to_vec()).collect(),
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
    pub touches: Arc<crate::gc::Touches>,
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
    pub async fn content(&self, id: ChunkId) -> Result<Vec<u8>, Status> {
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
    pub async fn peer_copy(&self, id: ChunkId) -> Result<Option<(EncodedChunk, Vec<u8>)>, Status> {
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

    /// Returns which of `ids` the cluster does not hold: each id is asked of its primary
    /// owner (this node's store when that is us), and of the next candidate (the other owners,
    /// then every other node) when the one asked lacks it or does not answer. An id any node
    /// holds counts as present — during a move, a chunk may not be on its new owners yet.
    /// Uploads are acknowledged only once the write quorum holds a chunk, so a copy anywhere
    /// is durable.
    pub async fn missing(&self, ids: &[ChunkId]) -> Result<Vec<ChunkId>, Status> {
        let Some(epoch) = self.epoch().filter(|e| !e.nodes.is_empty()) else {
            let store = self.store.clone();
            let ids = ids.to_vec();
            return tokio::task::spawn_blocking(move || store.missing(&ids))
                .await
                .map_err(crate::error::join_status)?
                .map_err(crate::error::store_status);
        };
        // Round r asks every still-undecided id of its r-th candidate.
        let mut todo: Vec<(ChunkId, Vec<(u64, String)>)> = ids
            .iter()
            .map(|id| (*id, self.candidates(&epoch, id)))
            .collect();
        let mut missing = Vec::new();
        // Ids some node answered it lacks (as opposed to only unanswered so far).
        let mut answered: std::collections::HashSet<ChunkId> = Default::default();
        let mut round = 0;
        while !todo.is_empty() {
            let mut groups: BTreeMap<(u64, String), Vec<ChunkId>> = BTreeMap::new();
            let mut next = Vec::new();
            for (id, cands) in todo {
                match cands.get(round) {
                    Some(c) => groups.entry(c.clone()).or_default().push(id),
                    None if answered.contains(&id) => {
                        missing.push(id);
                        continue;
                    }
                    None => {
                        return Err(status(
                            ErrorCode::Unavailable,
                            format!("no node that could hold chunk {id} answers"),
                        ))
                    }
                }
                next.push((id, cands));
            }
            let mut undecided: std::collections::HashSet<ChunkId> = Default::default();
            for ((nid, url), group) in groups {
                let answer = if nid == self.node_id {
                    let store = self.store.clone();
                    let g = group.clone();
                    tokio::task::spawn_blocking(move || store.missing(&g))
                        .await
                        .map_err(crate::error::join_status)?
                        .map_err(crate::error::store_status)
                } else {
                    self.peers.missing_at(&url, &group).await
                };
                match answer {
                    Ok(m) => {
                        for id in m {
                            answered.insert(id);
                            undecided.insert(id);
                        }
                    }
                    Err(e) => {
                        tracing::debug!(node = nid, error = %e, "owner did not answer; asking the next");
                        undecided.extend(group);
                    }
                }
            }
            todo = next
                .into_iter()
                .filter(|(id, _)| undecided.contains(id))
                .collect();
            round += 1;
        }
        Ok(missing)
    }
}
