//! Starting and stopping a node: open the stores, join or form the raft group, serve gRPC.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cairn_meta::{MetaConfig, MetaNode, NoPeers};
use cairn_proto::pb::catalog_server::CatalogServer;
use cairn_proto::pb::chunks_server::ChunksServer;
use cairn_proto::MAX_MESSAGE;
use cairn_store::ChunkStore;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

use crate::catalog::CatalogService;
use crate::chunks::ChunksService;
use crate::config::NodeConfig;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("chunk store: {0}")]
    Store(#[from] cairn_store::StoreError),
    #[error("catalog: {0}")]
    Meta(#[from] cairn_meta::MetaError),
}

/// A node serving on `addr` until [`RunningNode::shutdown`].
pub struct RunningNode {
    pub addr: SocketAddr,
    pub url: String,
    pub store: Arc<ChunkStore>,
    pub meta: Arc<MetaNode>,
    stop: Option<oneshot::Sender<()>>,
    serve: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl RunningNode {
    /// Stops serving, then closes the catalog and flushes the stores.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(j) = self.serve.take() {
            let _ = j.await;
        }
        if let Err(e) = self.meta.shutdown().await {
            tracing::warn!(error = %e, "catalog shutdown failed");
        }
        let store = self.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.flush()).await;
    }

    /// Waits until the server stops on its own (it does not unless it fails).
    pub async fn wait(&mut self) -> Result<(), tonic::transport::Error> {
        match self.serve.take() {
            Some(j) => j.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}

/// Opens the node's stores, starts (or rejoins) its raft group and serves gRPC.
pub async fn start(cfg: NodeConfig) -> Result<RunningNode, StartError> {
    std::fs::create_dir_all(&cfg.data_dir).map_err(|source| StartError::DataDir {
        path: cfg.data_dir.clone(),
        source,
    })?;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: cfg.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: cfg.listen,
        source,
    })?;
    let url = cfg.advertise_url(addr);

    let chunk_dir = cfg.data_dir.join("chunks");
    let store = tokio::task::spawn_blocking(move || ChunkStore::open(&chunk_dir))
        .await
        .map_err(|e| cairn_meta::MetaError::Storage(e.to_string()))??;
    let rec = store.recovery();
    if rec.truncated_bytes > 0 || rec.reindexed_chunks > 0 {
        tracing::warn!(
            truncated_bytes = rec.truncated_bytes,
            reindexed = rec.reindexed_chunks,
            "chunk store recovered after an unclean stop"
        );
    }
    let store = Arc::new(store);

    let meta_cfg = MetaConfig::new(cfg.data_dir.join("meta"), cfg.node_id, url.clone());
    let meta = Arc::new(MetaNode::open(meta_cfg, NoPeers).await?);
    let mut members = BTreeMap::new();
    members.insert(cfg.node_id, openraft::BasicNode::new(url.clone()));
    if meta.initialize_if_new(members).await? {
        tracing::info!(node_id = cfg.node_id, "formed a new single-node cluster");
    }
    meta.wait_for_leader(Duration::from_secs(30)).await?;

    let chunks = ChunksServer::new(ChunksService {
        store: store.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE)
    .max_encoding_message_size(MAX_MESSAGE);
    let catalog = CatalogServer::new(CatalogService {
        store: store.clone(),
        meta: meta.clone(),
        node_id: cfg.node_id,
        addr: url.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE)
    .max_encoding_message_size(MAX_MESSAGE);

    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let incoming = TcpListenerStream::new(listener);
    let serve = tokio::spawn(
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(chunks)
            .add_service(catalog)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stop_rx.await;
            }),
    );
    write_addr_file(&cfg.data_dir, &url);
    tracing::info!(node_id = cfg.node_id, %addr, "node serving");
    Ok(RunningNode {
        addr,
        url,
        store,
        meta,
        stop: Some(stop_tx),
        serve: Some(serve),
    })
}

/// Writes the node's URL to `DATA/node.addr` (temp file + rename), so scripts and tests that
/// started it on port 0 can find it.
fn write_addr_file(dir: &std::path::Path, url: &str) {
    let tmp = dir.join("node.addr.tmp");
    let res = std::fs::write(&tmp, format!("{url}\n"))
        .and_then(|_| std::fs::rename(&tmp, dir.join("node.addr")));
    if let Err(e) = res {
        tracing::warn!(error = %e, "cannot write node.addr");
    }
}
