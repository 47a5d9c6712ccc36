//! The `Chunks` service: which chunks are missing, put, get.

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

use crate::error::{join_status, store_status};

/// Chunks buffered before one durable `put_batch` (one fsync).
const PUT_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Most ids one request may name.
const MAX_IDS: usize = 100_000;

pub struct ChunksService {
    pub store: Arc<ChunkStore>,
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
        let ids = parse_ids(&req.into_inner().ids)?;
        let store = self.store.clone();
        let missing = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for (i, id) in ids.iter().enumerate() {
                if !store.contains(id)? {
                    out.push(i as u32);
                }
            }
            Ok::<_, cairn_store::StoreError>(out)
        })
        .await
        .map_err(join_status)?
        .map_err(store_status)?;
        Ok(Response::new(MissingResponse { missing }))
    }

    #[tracing::instrument(skip_all)]
    async fn put(
        &self,
        req: Request<Streaming<pb::PutRequest>>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let mut stream = req.into_inner();
        let mut total = pb::PutResponse::default();
        let mut batch: Vec<EncodedChunk> = Vec::new();
        let mut batch_bytes = 0usize;
        loop {
            let next = stream.next().await;
            let done = next.is_none();
            if let Some(msg) = next {
                for c in msg?.chunks {
                    let c = EncodedChunk::try_from(c)?;
                    batch_bytes += c.data.len();
                    batch.push(c);
                }
            }
            if (done && !batch.is_empty()) || batch_bytes >= PUT_BATCH_BYTES {
                let store = self.store.clone();
                let chunks = std::mem::take(&mut batch);
                batch_bytes = 0;
                let stats = tokio::task::spawn_blocking(move || store.put_batch(&chunks))
                    .await
                    .map_err(join_status)?
                    .map_err(store_status)?;
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

    type GetStream = ReceiverStream<Result<GetResponse, Status>>;

    #[tracing::instrument(skip_all, fields(ids = req.get_ref().ids.len()))]
    async fn get(&self, req: Request<GetRequest>) -> Result<Response<Self::GetStream>, Status> {
        let ids = parse_ids(&req.into_inner().ids)?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            for id in ids {
                let msg = store
                    .get(&id)
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
