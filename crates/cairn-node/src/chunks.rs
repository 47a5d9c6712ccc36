//! The `Chunks` service: which chunks are missing, put, get.
//!
//! # Upload durability
//! A `Put` is answered only after every chunk in it is durable in this node's store (one
//! fsync per batch) and, for a client upload, copied to the chunk's other owners under the
//! placement epoch in force until the write quorum is met (`WriteQuorum`). Copies to owners
//! that are down are skipped and left to repair; a chunk with fewer copies than the quorum
//! fails the whole call with `unavailable`, and the client may retry (it re-sends only what
//! is missing). Replica puts (`replica = true`) are stored and never copied further, so a
//! copy cannot bounce between nodes.
//!
//! # Who reads what
//! Chunk ids are content hashes, but a manifest's chunk ids are as private as the backup:
//! an agent names the backup it reads for (`GetRequest.backup`), the catalog decides
//! whether it may read that backup (`cairn_meta::authz`, rule `agent-own-backup`), and the
//! node serves only chunks that backup references ([`BackupScopes`], a bounded cache of
//! each backup's reference set, read from its manifest). Users need the operator role to
//! read content; nodes (the cluster secret) read anything. Replica puts and sweeps are for
//! nodes only.

use std::collections::HashSet;
use std::sync::Arc;

use cairn_chunker::EncodedChunk;
use cairn_core::{ChunkId, ErrorCode};
use cairn_proto::pb::chunks_server::Chunks;
use cairn_proto::pb::{self, GetRequest, GetResponse, MissingRequest, MissingResponse};
use cairn_proto::{chunk_id, status};
use cairn_store::ChunkStore;
use futures::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use cairn_core::auth::Access;
use cairn_core::BackupId;
use cairn_meta::authz::Subject;

use crate::auth::{authorize, caller};
use crate::error::{join_status, store_status};
use crate::peers::ClusterChunks;

/// Chunks buffered before one durable `put_batch` (one fsync).
const PUT_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Most ids one request may name.
const MAX_IDS: usize = 100_000;

pub struct ChunksService {
    pub store: Arc<ChunkStore>,
    pub cluster: ClusterChunks,
    pub repairer: Arc<crate::repair::Repairer>,
    pub scopes: Arc<BackupScopes>,
}

/// Most chunk ids the scope cache holds (32 bytes each, plus the set's overhead).
const SCOPE_IDS: usize = 1_000_000;

/// The chunks each recently read backup references, so that an agent's reads can be held
/// to the backup it may read. Bounded: when a new set would pass [`SCOPE_IDS`], the oldest
/// sets are dropped (a backup read again is walked again).
#[derive(Default)]
pub struct BackupScopes {
    sets: tokio::sync::Mutex<std::collections::VecDeque<(BackupId, Arc<HashSet<ChunkId>>)>>,
}

impl BackupScopes {
    /// The chunks `backup` references (its manifest read from the cluster once).
    async fn of(
        &self,
        cluster: &ClusterChunks,
        backup: BackupId,
    ) -> Result<Arc<HashSet<ChunkId>>, Status> {
        if let Some((_, set)) = self.sets.lock().await.iter().find(|(b, _)| *b == backup) {
            return Ok(set.clone());
        }
        let record = cluster
            .meta
            .get_backup(&backup)
            .map_err(crate::error::meta_status)?
            .ok_or_else(|| {
                status(
                    ErrorCode::BackupNotFound,
                    format!("backup {backup} not found"),
                )
            })?;
        let set = Arc::new(
            crate::verify::referenced_chunks(cluster, &record.manifest)
                .await
                .map_err(|e| match e {
                    crate::verify::VerifyError::Cluster(s) => s,
                    other => status(ErrorCode::Corrupt, other.to_string()),
                })?,
        );
        let mut sets = self.sets.lock().await;
        // Another read of the same backup may have walked it meanwhile.
        if let Some((_, walked)) = sets.iter().find(|(b, _)| *b == backup) {
            return Ok(walked.clone());
        }
        let mut held: usize = sets.iter().map(|(_, s)| s.len()).sum();
        while held + set.len() > SCOPE_IDS {
            match sets.pop_front() {
                Some((_, gone)) => held -= gone.len(),
                None => break,
            }
        }
        sets.push_back((backup, set.clone()));
        Ok(set)
    }
}

impl ChunksService {
    /// Copies `chunks` (being stored here meanwhile) to their other owners and checks the
    /// quorum, counting this node's own copy. Returns how many copies were written elsewhere.
    async fn replicate(&self, chunks: &[EncodedChunk]) -> Result<u64, Status> {
        let Some(epoch) = self.cluster.epoch() else {
            return Ok(0);
        };
        if epoch.effective_rf() <= 1 {
            return Ok(0);
        }
        let me = self.cluster.node_id;
        // Per target node, the chunks it should hold; per chunk, its copies so far.
        let mut per_node: std::collections::BTreeMap<u64, Vec<EncodedChunk>> = Default::default();
        let mut copies: Vec<(ChunkId, usize, usize)> = Vec::with_capacity(chunks.len());
        for c in chunks {
            let owners = epoch.owners(&c.id);
            let here = usize::from(owners.contains(&me));
            copies.push((c.id, here, owners.len()));
            for o in owners.into_iter().filter(|o| *o != me) {
                per_node.entry(o).or_default().push(c.clone());
            }
        }
        let calls = per_node.into_iter().map(|(nid, list)| {
            let url = epoch.node(nid).map(|n| n.addr.clone()).unwrap_or_default();
            let ids: Vec<ChunkId> = list.iter().map(|c| c.id).collect();
            let peers = self.cluster.peers.clone();
            async move {
                let r = peers.put_replica(&url, list).await;
                (nid, ids, r)
            }
        });
        let mut written: std::collections::HashMap<ChunkId, usize> = Default::default();
        let mut refused: std::collections::HashMap<ChunkId, usize> = Default::default();
        let mut replicated = 0u64;
        for (nid, ids, r) in futures::future::join_all(calls).await {
            match r {
                Ok(()) => {
                    replicated += ids.len() as u64;
                    for id in ids {
                        *written.entry(id).or_default() += 1;
                    }
                }
                Err(e) => {
                    // An owner that answered with a reason of its own is up and should have
                    // held the copy; one that did not answer (or is full) is down for now.
                    if !crate::peers::owner_is_down(&e) {
                        for id in &ids {
                            *refused.entry(*id).or_default() += 1;
                        }
                    }
                    tracing::warn!(node = nid, chunks = ids.len(), error = %e, "replica copy failed; left to repair")
                }
            }
        }
        for (id, here, owners) in copies {
            let have = here + written.get(&id).copied().unwrap_or(0);
            let up = have + refused.get(&id).copied().unwrap_or(0);
            let need = self.cluster.quorum.needed(owners, up);
            if have < need {
                return Err(status(
                    ErrorCode::Unavailable,
                    format!(
                        "chunk {id} has {have} of the {need} copies the write quorum needs \
                         ({owners} owners, {up} answering); too many nodes are down or failing — retry when they are back"
                    ),
                ));
            }
        }
        Ok(replicated)
    }
}

fn parse_ids(ids: &[Vec<u8>]) -> Result<Vec<ChunkId>, Status> {
    if ids.len() > MAX_IDS {
        return Err(status(
            ErrorCode::InvalidArgument,
            format!("{} ids in one request; the limit is {MAX_IDS}", ids.len()),
        ));
    }
    ids.iter()
        .map(|b| chunk_id(b).map_err(Status::from))
        .collect()
}

#[tonic::async_trait]
impl Chunks for ChunksService {
    #[tracing::instrument(skip_all, fields(ids = req.get_ref().ids.len()))]
    async fn missing(
        &self,
        req: Request<MissingRequest>,
    ) -> Result<Response<MissingResponse>, Status> {
        let who = caller(&req)?;
        authorize(&self.cluster.meta, &who, Access::Upload, &Subject::Nothing)?;
        if req.get_ref().local {
            // One node's own answer, asked by another node.
            authorize(
                &self.cluster.meta,
                &who,
                Access::Internal,
                &Subject::Nothing,
            )?;
        }
        let req = req.into_inner();
        let ids = parse_ids(&req.ids)?;
        let missing = if req.local {
            self.cluster.local_missing(ids.clone()).await?
        } else {
            self.cluster.lacking(&ids).await?
        };
        let missing: std::collections::HashSet<ChunkId> = missing.into_iter().collect();
        let missing = ids
            .iter()
            .enumerate()
            .filter(|(_, id)| missing.contains(id))
            .map(|(i, _)| i as u32)
            .collect();
        Ok(Response::new(MissingResponse { missing }))
    }

    #[tracing::instrument(skip_all)]
    async fn put(
        &self,
        req: Request<Streaming<pb::PutRequest>>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let who = caller(&req)?;
        // Whoever may not upload is refused before anything is read, even an empty stream;
        // a replica copy (said by the first message) also needs the cluster secret.
        authorize(&self.cluster.meta, &who, Access::Upload, &Subject::Nothing)?;
        let mut stream = req.into_inner();
        let mut total = pb::PutResponse::default();
        let mut batch: Vec<EncodedChunk> = Vec::new();
        let mut batch_bytes = 0usize;
        let mut replica: Option<bool> = None;
        loop {
            let next = stream.next().await;
            let done = next.is_none();
            if let Some(msg) = next {
                let msg = msg?;
                match replica {
                    None => {
                        if msg.replica {
                            authorize(
                                &self.cluster.meta,
                                &who,
                                Access::Internal,
                                &Subject::Nothing,
                            )?;
                        }
                        replica = Some(msg.replica);
                    }
                    Some(r) if r != msg.replica => {
                        return Err(status(
                            ErrorCode::InvalidArgument,
                            "a put stream is all replica copies or none",
                        ))
                    }
                    Some(_) => {}
                }
                for c in msg.chunks {
                    let c = EncodedChunk::try_from(c)?;
                    batch_bytes += c.data.len();
                    batch.push(c);
                }
            }
            if (done && !batch.is_empty()) || batch_bytes >= PUT_BATCH_BYTES {
                let store = self.store.clone();
                let chunks = std::mem::take(&mut batch);
                batch_bytes = 0;
                let touches = self.cluster.touches.clone();
                let chunks = Arc::new(chunks);
                let here = chunks.clone();
                let local = async move {
                    tokio::task::spawn_blocking(move || {
                        // Stored and touched as one step against a sweep (see `crate::gc`).
                        let _gate = touches.gate();
                        let stats = store.put_batch(&here)?;
                        touches.touch(here.iter().map(|c| c.id));
                        Ok::<_, cairn_store::StoreError>(stats)
                    })
                    .await
                    .map_err(join_status)?
                    .map_err(store_status)
                };
                // The copies to the other owners travel while this node verifies and writes
                // its own: each owner verifies what it stores, and the client is answered
                // only when this node's copy and the quorum's are durable. A batch this node
                // refuses fails the call even when the replicas took it; their copies are
                // unreferenced then, and garbage collection removes them.
                let (stats, replicated) = if replica != Some(true) {
                    let (stats, replicated) = tokio::join!(local, self.replicate(&chunks));
                    (stats?, replicated?)
                } else {
                    (local.await?, 0)
                };
                total.replicated += replicated;
                total.stored += stats.stored;
                total.duplicate += stats.duplicate;
                total.bytes_written += stats.bytes_written;
            }
            if done {
                break;
            }
        }
        Ok(Response::new(total))
    }

    #[tracing::instrument(skip_all)]
    async fn scrub(
        &self,
        req: Request<pb::ScrubRequest>,
    ) -> Result<Response<pb::ScrubResponse>, Status> {
        authorize(
            &self.cluster.meta,
            &caller(&req)?,
            Access::Administer,
            &Subject::Nothing,
        )?;
        Ok(Response::new(
            crate::scrub::run(&self.store, &self.cluster).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn repair(
        &self,
        req: Request<pb::RepairRequest>,
    ) -> Result<Response<pb::RepairReport>, Status> {
        authorize(
            &self.cluster.meta,
            &caller(&req)?,
            Access::Administer,
            &Subject::Nothing,
        )?;
        Ok(Response::new(self.repairer.pass().await?))
    }

    #[tracing::instrument(skip_all)]
    async fn sweep(
        &self,
        req: Request<Streaming<pb::SweepRequest>>,
    ) -> Result<Response<pb::SweepReport>, Status> {
        authorize(
            &self.cluster.meta,
            &caller(&req)?,
            Access::Internal,
            &Subject::Nothing,
        )?;
        let mut stream = req.into_inner();
        let mut referenced = std::collections::HashSet::new();
        let mut mark = None;
        while let Some(msg) = stream.next().await {
            let msg = msg?;
            mark.get_or_insert(crate::touch::Mark {
                boot: msg.boot.clone(),
                seq: msg.seq,
            });
            for b in &msg.referenced {
                referenced.insert(chunk_id(b)?);
            }
        }
        let mark = mark
            .filter(|m| !m.boot.is_empty())
            .ok_or_else(|| status(ErrorCode::InvalidArgument, "sweep without a mark"))?;
        let r = crate::gc::sweep(&self.cluster, &mark, referenced).await?;
        Ok(Response::new(r))
    }

    async fn mark(
        &self,
        req: Request<pb::MarkRequest>,
    ) -> Result<Response<pb::MarkResponse>, Status> {
        authorize(
            &self.cluster.meta,
            &caller(&req)?,
            Access::Internal,
            &Subject::Nothing,
        )?;
        let m = self.cluster.touches.mark();
        Ok(Response::new(pb::MarkResponse {
            boot: m.boot,
            seq: m.seq,
        }))
    }

    type GetStream = ReceiverStream<Result<GetResponse, Status>>;

    #[tracing::instrument(skip_all, fields(ids = req.get_ref().ids.len()))]
    async fn get(&self, req: Request<GetRequest>) -> Result<Response<Self::GetStream>, Status> {
        let who = caller(&req)?;
        let req = req.into_inner();
        let backup = match req.backup.as_str() {
            "" => None,
            b => Some(b.parse::<BackupId>().map_err(|e| {
                status(
                    ErrorCode::InvalidArgument,
                    format!("malformed backup id {b:?}: {e}"),
                )
            })?),
        };
        let subject = match backup {
            Some(b) => Subject::Backup(b),
            None => Subject::Nothing,
        };
        authorize(&self.cluster.meta, &who, Access::ReadContent, &subject)?;
        let ids = parse_ids(&req.ids)?;
        if let (Some(host), Some(b)) = (who.agent_host(), backup) {
            let scope = self.scopes.of(&self.cluster, b).await?;
            if let Some(stray) = ids.iter().find(|id| !scope.contains(id)) {
                return Err(cairn_proto::refusal(
                    ErrorCode::PermissionDenied,
                    Some(cairn_core::auth::Rule::AgentOwnBackup),
                    format!(
                        "rule agent-own-backup: the agent token of host {host:?} reads only the chunks of backup {b}; chunk {stray} is not one of them"
                    ),
                ));
            }
        }
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let store = self.store.clone();
        // Framing and CRC only: every reader of this RPC decodes and re-hashes the content
        // and fetches a copy that fails from the next owner (see `ChunkStore::get_framed`).
        tokio::task::spawn_blocking(move || {
            for id in ids {
                let msg = store
                    .get_framed(&id)
                    .map(|c| GetResponse {
                        chunk: Some(c.into()),
                    })
                    .map_err(store_status);
                let failed = msg.is_err();
                if tx.blocking_send(msg).is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
