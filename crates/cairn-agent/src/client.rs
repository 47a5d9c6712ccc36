//! A connection to the cluster: typed calls over the gRPC clients.

use std::time::Duration;

use cairn_chunker::EncodedChunk;
use cairn_core::{BackupId, BackupRecord, ChunkId, EnvId};
use cairn_proto::pb::catalog_client::CatalogClient;
use cairn_proto::pb::chunks_client::ChunksClient;
use cairn_proto::pb::{self};
use cairn_proto::MAX_MESSAGE;
use futures::{Stream, StreamExt};
use tonic::transport::{Channel, Endpoint};

use crate::error::AgentError;

/// The default cluster address (`cairn dev` listens here).
pub const DEFAULT_CLUSTER: &str = "http://127.0.0.1:7700";

/// Most chunk bytes per `Put` message.
const PUT_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// A connected client of one cluster.
#[derive(Clone)]
pub struct Cluster {
    pub url: String,
    chunks: ChunksClient<Channel>,
    catalog: CatalogClient<Channel>,
}

impl Cluster {
    /// Connects to `url`, failing fast with one clear line when nobody answers.
    pub async fn connect(url: &str) -> Result<Cluster, AgentError> {
        let unreachable = |why: String| AgentError::Unreachable {
            url: url.to_string(),
            why,
        };
        let ep = Endpoint::from_shared(url.to_string())
            .map_err(|e| AgentError::Invalid(format!("bad cluster address {url:?}: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_adaptive_window(true);
        let channel = ep.connect().await.map_err(|e| {
            let mut why = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                why = s.to_string();
                src = s.source();
            }
            unreachable(why)
        })?;
        Ok(Cluster {
            url: url.to_string(),
            chunks: ChunksClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            catalog: CatalogClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        })
    }

    /// Returns the ids among `ids` that the cluster lacks.
    pub async fn missing(&self, ids: &[ChunkId]) -> Result<Vec<ChunkId>, AgentError> {
        let req = pb::MissingRequest {
            ids: ids.iter().map(|i| i.0.to_vec()).collect(),
        };
        let resp = self.chunks.clone().missing(req).await?.into_inner();
        resp.missing
            .iter()
            .map(|&i| {
                ids.get(i as usize)
                    .copied()
                    .ok_or_else(|| AgentError::Internal(format!("node named index {i}")))
            })
            .collect()
    }

    /// Uploads chunks; returns once the cluster holds them durably.
    pub async fn put(&self, chunks: Vec<EncodedChunk>) -> Result<pb::PutResponse, AgentError> {
        let mut msgs = Vec::new();
        let mut cur = pb::PutRequest::default();
        let mut bytes = 0;
        for c in chunks {
            bytes += c.data.len();
            cur.chunks.push(c.into());
            if bytes >= PUT_MESSAGE_BYTES {
                msgs.push(std::mem::take(&mut cur));
                bytes = 0;
            }
        }
        if !cur.chunks.is_empty() {
            msgs.push(cur);
        }
        let resp = self
            .chunks
            .clone()
            .put(futures::stream::iter(msgs))
            .await?
            .into_inner();
        Ok(resp)
    }

    /// Streams the given chunks, in order; each is verified by the caller with
    /// `cairn_chunker::decode`.
    pub async fn get(
        &self,
        ids: &[ChunkId],
    ) -> Result<impl Stream<Item = Result<EncodedChunk, AgentError>>, AgentError> {
        let req = pb::GetRequest {
            ids: ids.iter().map(|i| i.0.to_vec()).collect(),
        };
        let stream = self.chunks.clone().get(req).await?.into_inner();
        Ok(stream.map(|m| {
            let m = m?;
            let c = m
                .chunk
                .ok_or_else(|| AgentError::Internal("empty chunk message".into()))?;
            EncodedChunk::try_from(c).map_err(|e| AgentError::Internal(e.to_string()))
        }))
    }

    /// Fetches one chunk's verified content.
    pub async fn get_content(&self, id: ChunkId) -> Result<Vec<u8>, AgentError> {
        let mut s = Box::pin(self.get(&[id]).await?);
        match s.next().await {
            Some(c) => {
                let c = c?;
                if c.id != id {
                    return Err(AgentError::Internal(format!(
                        "asked for {id}, got {}",
                        c.id
                    )));
                }
                Ok(
                    tokio::task::spawn_blocking(move || cairn_chunker::decode(&c))
                        .await
                        .map_err(|e| AgentError::Internal(e.to_string()))??,
                )
            }
            None => Err(AgentError::Cluster {
                code: cairn_core::ErrorCode::NotFound,
                message: format!("chunk {id} not found"),
            }),
        }
    }

    pub async fn commit(&self, record: &BackupRecord) -> Result<BackupRecord, AgentError> {
        let b = self
            .catalog
            .clone()
            .commit_backup(pb::CommitBackupRequest {
                backup: Some(record.into()),
            })
            .await?
            .into_inner();
        BackupRecord::try_from(b).map_err(|e| AgentError::Internal(e.to_string()))
    }

    pub async fn list(&self, env: Option<EnvId>) -> Result<Vec<BackupRecord>, AgentError> {
        let resp = self
            .catalog
            .clone()
            .list_backups(pb::ListBackupsRequest {
                env: env.map(|e| e.to_string()).unwrap_or_default(),
            })
            .await?
            .into_inner();
        resp.backups
            .into_iter()
            .map(|b| BackupRecord::try_from(b).map_err(|e| AgentError::Internal(e.to_string())))
            .collect()
    }

    pub async fn show(&self, id: &BackupId) -> Result<BackupRecord, AgentError> {
        let b = self
            .catalog
            .clone()
            .get_backup(pb::BackupRef { id: id.to_string() })
            .await?
            .into_inner();
        BackupRecord::try_from(b).map_err(|e| AgentError::Internal(e.to_string()))
    }

    pub async fn delete(&self, id: &BackupId) -> Result<(), AgentError> {
        self.catalog
            .clone()
            .delete_backup(pb::BackupRef { id: id.to_string() })
            .await?;
        Ok(())
    }

    pub async fn latest(
        &self,
        env: EnvId,
        full_only: bool,
    ) -> Result<Option<BackupRecord>, AgentError> {
        let resp = self
            .catalog
            .clone()
            .latest_backup(pb::LatestBackupRequest {
                env: env.to_string(),
                full_only,
            })
            .await?
            .into_inner();
        resp.backup
            .map(|b| BackupRecord::try_from(b).map_err(|e| AgentError::Internal(e.to_string())))
            .transpose()
    }

    pub async fn node_status(&self) -> Result<pb::NodeStatusResponse, AgentError> {
        Ok(self
            .catalog
            .clone()
            .node_status(pb::NodeStatusRequest {})
            .await?
            .into_inner())
    }
}
