//! Starting and stopping a node: open the stores, serve gRPC, then form or join the group.
//!
//! # Forming a cluster with no manual step
//! Every voter's config lists the same voters. A node always serves first (its peers need its
//! raft endpoint). Then exactly one node may form the group: the voter with the lowest id,
//! and only if it has never been part of a group (no vote, no log) and none of the other
//! voters answers that it already belongs to one — so a wiped data directory rejoins as a
//! fresh member to be re-added instead of forking a second cluster. Restarts never
//! initialise again. Whichever node leads then sets the first placement epoch from the
//! voters' list (ids, addresses, zones, weights, replication factor); later changes go
//! through `cairn cluster add-node` / `remove-node`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cairn_core::placement::PlacementNode;
use cairn_meta::{Command, MetaConfig, MetaNode};
use cairn_proto::pb::agents_server::AgentsServer;
use cairn_proto::pb::catalog_server::CatalogServer;
use cairn_proto::pb::chunks_server::ChunksServer;
use cairn_proto::pb::raft_server::RaftServer;
use cairn_proto::{Token, MAX_MESSAGE};
use cairn_store::ChunkStore;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;

use crate::auth::{ClientAuth, ServerAuth};
use crate::catalog::CatalogService;
use crate::chunks::ChunksService;
use crate::config::{NodeConfig, Voter};
use crate::peers::{ClusterChunks, Peers};
use crate::raft_net::{GrpcNetwork, RaftService};

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
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("cluster token: {0}")]
    Token(#[from] cairn_proto::WireError),
    #[error("data directory {dir} belongs to cluster {ours}, but node {peer} of the configured voters belongs to cluster {theirs}; point data_dir at this cluster's directory for node {node_id}, or at an empty one and add the node")]
    ForeignCluster {
        dir: std::path::PathBuf,
        ours: String,
        theirs: String,
        peer: u64,
        node_id: u64,
    },
}

/// A node serving on `addr` until [`RunningNode::shutdown`].
pub struct RunningNode {
    pub addr: SocketAddr,
    pub url: String,
    pub store: Arc<ChunkStore>,
    pub meta: Arc<MetaNode>,
    stop: Option<oneshot::Sender<()>>,
    serve: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    bootstrap: Option<JoinHandle<()>>,
    repair: Option<JoinHandle<()>>,
    health: Option<JoinHandle<()>>,
    jobs: Option<JoinHandle<()>>,
    heal: Option<JoinHandle<()>>,
    metrics: Option<JoinHandle<()>>,
    /// Where the metrics listener serves, when configured.
    pub metrics_addr: Option<SocketAddr>,
}

impl RunningNode {
    /// Stops serving, then closes the catalog and flushes the stores.
    pub async fn shutdown(mut self) {
        if let Some(b) = self.bootstrap.take() {
            b.abort();
        }
        if let Some(r) = self.repair.take() {
            r.abort();
        }
        if let Some(h) = self.health.take() {
            h.abort();
        }
        if let Some(j) = self.jobs.take() {
            j.abort();
        }
        if let Some(h) = self.heal.take() {
            h.abort();
        }
        if let Some(m) = self.metrics.take() {
            m.abort();
        }
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

    let token = cfg.resolve_token()?;
    cfg.check_exposure(token.is_some())?;
    if token.is_some() && cfg.tls_cert.is_none() && !cfg.listen.ip().is_loopback() {
        tracing::warn!(listen = %cfg.listen, "tokens travel in clear text: configure tls_cert and tls_key for a listener other nodes reach over a network");
    }
    let wire_token = Token::new(token.as_deref())?;
    let mut server_auth =
        ServerAuth::new(token.clone()).also_accepting(cfg.also_accepted_tokens()?);
    let tls = cfg.tls()?;
    let peers = Peers::new(wire_token, tls.as_ref().map(|t| t.client.clone()));
    let voters = cfg.voters_or_self(&url);

    check_cluster_id(&cfg, &voters, &peers).await?;

    let mut meta_cfg = MetaConfig::new(cfg.data_dir.join("meta"), cfg.node_id, url.clone());
    meta_cfg.snapshot_every = cfg.raft_snapshot_logs;
    let network = GrpcNetwork {
        auth: ClientAuth {
            token,
            tls: tls.as_ref().map(|t| t.client.clone()),
        },
    };
    let meta = Arc::new(MetaNode::open(meta_cfg, network).await?);
    {
        let meta = meta.clone();
        server_auth =
            server_auth.with_tokens(Arc::new(move |id: &str| meta.token(id).ok().flatten()));
    }
    let cluster = ClusterChunks {
        node_id: cfg.node_id,
        store: store.clone(),
        meta: meta.clone(),
        peers: peers.clone(),
        touches: Arc::default(),
        quorum: cfg.write_quorum,
        failpoints: cfg.data_dir.join("failpoints"),
        runs: Arc::new(crate::last_runs::RunLog::open(&cfg.data_dir)),
    };
    let cluster_runs = cluster.runs.clone();
    let node_metrics = crate::metrics::NodeMetrics::new(cfg.node_id);
    // Bound before serving, so a taken port fails the start instead of a later task.
    let metrics_listener = match cfg.metrics_listen {
        Some(addr) => Some(
            crate::metrics::bind(addr)
                .await
                .map_err(|source| StartError::Listen { addr, source })?,
        ),
        None => None,
    };
    let repairer = Arc::new(crate::repair::Repairer::new(cluster.clone()));
    let zone = voters
        .iter()
        .find(|v| v.id == cfg.node_id)
        .map(|v| v.zone.clone())
        .unwrap_or_else(|| "default".into());

    let chunks = InterceptedService::new(
        ChunksServer::new(ChunksService {
            store: store.clone(),
            cluster: cluster.clone(),
            repairer: repairer.clone(),
            scopes: Arc::default(),
        })
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE),
        server_auth.clone(),
    );
    let catalog = InterceptedService::new(
        CatalogServer::new(CatalogService {
            store: store.clone(),
            meta: meta.clone(),
            node_id: cfg.node_id,
            addr: url.clone(),
            zone,
            cluster,
            peers: peers.clone(),
            repairer: repairer.clone(),
            gc_running: Default::default(),
            backups_listed: Default::default(),
        })
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE),
        server_auth.clone(),
    );
    let raft = InterceptedService::new(
        RaftServer::new(RaftService {
            meta: meta.clone(),
            node_id: cfg.node_id,
        })
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE),
        server_auth.nodes_only(),
    );
    let agents = InterceptedService::new(
        AgentsServer::new(crate::agents::AgentsService {
            meta: meta.clone(),
            node_id: cfg.node_id,
            peers: peers.clone(),
            settings: crate::agents::JobSettings {
                queue_timeout_ms: cfg.job_queue_timeout_ms as i64,
                offline_after_ms: cfg.host_offline_after_ms as i64,
            },
            ca_pem: tls
                .as_ref()
                .map(|t| String::from_utf8_lossy(&t.ca_pem).into_owned()),
        })
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE),
        server_auth.clone(),
    );

    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let incoming = TcpListenerStream::new(listener);
    let mut builder = tonic::transport::Server::builder();
    if let Some(t) = &tls {
        builder = builder.tls_config(t.server.clone()).map_err(|e| {
            crate::config::ConfigError::Invalid {
                key: "tls_cert",
                message: format!("the certificate or key cannot be used: {e}"),
            }
        })?;
    }
    let serve = tokio::spawn(
        builder
            .tcp_nodelay(true)
            .layer(crate::metrics::RpcCountLayer(node_metrics.clone()))
            .add_service(chunks)
            .add_service(catalog)
            .add_service(raft)
            .add_service(agents)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stop_rx.await;
            }),
    );

    let metrics_addr = metrics_listener.as_ref().map(|(_, a)| *a);
    let metrics_task = metrics_listener.map(|(listener, bound)| {
        write_named_addr_file(&cfg.data_dir, "metrics.addr", &format!("http://{bound}"));
        tracing::info!(addr = %bound, "metrics served at /metrics");
        tokio::spawn(crate::metrics::serve(
            listener,
            node_metrics.clone(),
            crate::metrics::Sources {
                meta: meta.clone(),
                store: store.clone(),
                repairer: repairer.clone(),
                runs: cluster_runs.clone(),
            },
        ))
    });
    let repair_task = tokio::spawn(
        repairer
            .clone()
            .run(Duration::from_millis(cfg.repair_interval_ms)),
    );
    let health_task = tokio::spawn(crate::membership::watch_health(
        meta.clone(),
        peers.clone(),
        cfg.node_id,
        Duration::from_millis(cfg.down_after_ms),
    ));
    let jobs_task = tokio::spawn(crate::agents::sweep_jobs(meta.clone(), cfg.node_id));
    let heal_task = tokio::spawn(heal_store(store.clone()));
    let alone = cfg.voters.is_empty();
    let boot = Bootstrap {
        node_id: cfg.node_id,
        voters,
        rf: cfg.replication_factor,
        zone_redundancy: cfg.zone_redundancy,
        first_admin: cfg.first_admin.clone(),
        meta: meta.clone(),
        peers,
        data_dir: cfg.data_dir.clone(),
    };
    let bootstrap = if alone {
        // One node: form the group now and serve only once it leads, as before clustering.
        boot.initialize().await?;
        meta.wait_for_leader(Duration::from_secs(30)).await?;
        Some(tokio::spawn(boot.set_first_placement()))
    } else {
        Some(tokio::spawn(async move {
            if let Err(e) = boot.initialize().await {
                tracing::error!(error = %e, "cannot form the metadata group");
                return;
            }
            boot.set_first_placement().await;
        }))
    };
    write_addr_file(&cfg.data_dir, &url);
    tracing::info!(node_id = cfg.node_id, %addr, "node serving");
    Ok(RunningNode {
        addr,
        url,
        store,
        meta,
        stop: Some(stop_tx),
        serve: Some(serve),
        bootstrap,
        repair: Some(repair_task),
        health: Some(health_task),
        jobs: Some(jobs_task),
        heal: Some(heal_task),
        metrics: metrics_task,
        metrics_addr,
    })
}

/// How often the node checks whether its chunk index needs reopening.
const HEAL_EVERY: Duration = Duration::from_secs(2);

/// Reopens the chunk index in place after sled broke on an I/O error (a disk that filled up
/// under it, say), retrying until the reopen works: without this, sled answers every call
/// with its first error until the process restarts. See `ChunkStore::heal`.
async fn heal_store(store: Arc<ChunkStore>) {
    let mut tick = tokio::time::interval(HEAL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !store.index_failed() {
            continue;
        }
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.heal()).await {
            Ok(Ok(Some(report))) => {
                tracing::warn!(
                    ?report,
                    "chunk index reopened after an I/O failure; serving again"
                );
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "chunk index still failed; retrying"),
            Err(e) => tracing::error!(error = %e, "reopening the chunk index panicked"),
        }
    }
}

/// Forms the group when this node is the one to, and sets the first placement epoch.
struct Bootstrap {
    node_id: u64,
    voters: Vec<Voter>,
    rf: u32,
    zone_redundancy: cairn_core::placement::ZoneRedundancy,
    first_admin: Option<crate::config::FirstAdmin>,
    meta: Arc<MetaNode>,
    peers: Peers,
    data_dir: std::path::PathBuf,
}

impl Bootstrap {
    async fn initialize(&self) -> Result<(), cairn_meta::MetaError> {
        let lowest = self.voters.iter().map(|v| v.id).min();
        if lowest != Some(self.node_id) {
            return Ok(());
        }
        if self.meta.raft().is_initialized().await.unwrap_or(true) {
            return Ok(());
        }
        for v in self.voters.iter().filter(|v| v.id != self.node_id) {
            if let Some(term) = self.peer_term(&v.url()).await {
                if term > 0 {
                    tracing::warn!(
                        peer = v.id,
                        term,
                        "a peer already belongs to a cluster; not forming a new one (add this node back with cairn cluster add-node)"
                    );
                    return Ok(());
                }
            }
        }
        let members: BTreeMap<u64, openraft::BasicNode> = self
            .voters
            .iter()
            .map(|v| (v.id, openraft::BasicNode::new(v.url())))
            .collect();
        if self.meta.initialize_if_new(members).await? {
            tracing::info!(
                node_id = self.node_id,
                voters = self.voters.len(),
                "formed a new cluster"
            );
        }
        Ok(())
    }

    async fn refresh_own_address(&self) {
        let Ok(Some(mut epoch)) = self.meta.placement() else {
            return;
        };
        let Some(me) = self.voters.iter().find(|v| v.id == self.node_id) else {
            return;
        };
        let url = me.url();
        let Some(n) = epoch.nodes.iter_mut().find(|n| n.id == self.node_id) else {
            return;
        };
        if n.addr == url {
            return;
        }
        n.addr = url;
        let cmd = Command::SetPlacement {
            nodes: epoch.nodes,
            rf: epoch.rf,
            zone_redundancy: None,
            expect_epoch: Some(epoch.number),
        };
        if let Err(e) = self.meta.write_system(cmd).await {
            tracing::warn!(error = %e, "cannot update this node's address in the placement");
        }
    }

    /// Stores the first admin token's record; true once it is in the catalog.
    async fn seed_first_admin(&self, a: &crate::config::FirstAdmin) -> bool {
        if matches!(self.meta.token(&a.id), Ok(Some(_))) {
            return true;
        }
        let record = a.record(crate::clock::now_ms());
        match self.meta.write_system(Command::PutToken { record }).await {
            Ok(cairn_meta::Response::Done) => {
                tracing::info!(token_id = %a.id, name = %a.name, "first admin token stored");
                true
            }
            Ok(other) => {
                tracing::warn!(answer = ?other, "first admin token refused");
                false
            }
            Err(e) => {
                tracing::debug!(error = %e, "first admin token not stored yet");
                false
            }
        }
    }

    async fn peer_term(&self, url: &str) -> Option<u64> {
        let mut c = self.peers.catalog(url).ok()?;
        let call = c.node_status(cairn_proto::pb::NodeStatusRequest {});
        match tokio::time::timeout(Duration::from_secs(2), call).await {
            Ok(Ok(r)) => Some(r.into_inner().term),
            _ => None,
        }
    }

    /// Sets the placement from the voters' list once, when the group has none yet. Runs on
    /// every node; only a leader's proposal lands, the rest find the placement set. A node
    /// alone also brings its own address up to date (it may listen on a new port after a
    /// restart); in a cluster, addresses come from the voters' list and stay put.
    async fn set_first_placement(self) {
        if self.voters.len() == 1 {
            self.refresh_own_address().await;
        }
        let nodes: Vec<PlacementNode> = self
            .voters
            .iter()
            .map(|v| PlacementNode {
                id: v.id,
                zone: v.zone.clone(),
                weight: v.weight,
                addr: v.url(),
                draining: false,
                down: false,
            })
            .collect();
        let mut pause = Duration::from_millis(50);
        loop {
            let placed = matches!(self.meta.placement(), Ok(Some(_)));
            let named = match self.meta.cluster_id() {
                Ok(Some(id)) => {
                    if let Err(e) = write_cluster_id(&self.data_dir, &id) {
                        tracing::warn!(error = %e, "cannot record the cluster id in the data directory");
                    }
                    true
                }
                _ => false,
            };
            if placed && named {
                return;
            }
            let leads = self.meta.metrics().current_leader == Some(self.node_id);
            // The first admin token goes in before the cluster is named: once named, a
            // cluster never reads it from a config again (a revoked one stays revoked).
            let seeded = match (&self.first_admin, leads && !named) {
                (Some(a), true) => self.seed_first_admin(a).await,
                _ => true,
            };
            if leads && !named && seeded {
                let id = uuid::Uuid::new_v4();
                if let Err(e) = self.meta.write_system(Command::SetClusterId { id }).await {
                    tracing::debug!(error = %e, "cluster id not set yet");
                }
            }
            if leads && !placed {
                let cmd = Command::SetPlacement {
                    nodes: nodes.clone(),
                    rf: self.rf,
                    zone_redundancy: Some(self.zone_redundancy),
                    expect_epoch: Some(0),
                };
                match self.meta.write_system(cmd).await {
                    Ok(cairn_meta::Response::Placement { epoch }) => {
                        tracing::info!(epoch, nodes = nodes.len(), rf = self.rf, "placement set");
                        continue;
                    }
                    Ok(other) => tracing::warn!(answer = ?other, "placement refused"),
                    Err(e) => tracing::debug!(error = %e, "placement not set yet"),
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }
}

/// The file in a data directory naming the cluster it belongs to.
const CLUSTER_ID_FILE: &str = "cluster.id";

/// Refuses to start on a data directory of another cluster: when the directory names a
/// cluster and a configured voter that answers names a different one.
async fn check_cluster_id(
    cfg: &NodeConfig,
    voters: &[Voter],
    peers: &Peers,
) -> Result<(), StartError> {
    let Ok(ours) = std::fs::read_to_string(cfg.data_dir.join(CLUSTER_ID_FILE)) else {
        return Ok(());
    };
    let ours = ours.trim().to_string();
    for v in voters.iter().filter(|v| v.id != cfg.node_id) {
        let Ok(mut c) = peers.catalog(&v.url()) else {
            continue;
        };
        let call = c.node_status(cairn_proto::pb::NodeStatusRequest {});
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(2), call).await {
            let theirs = r.into_inner().cluster_id;
            if !theirs.is_empty() && theirs != ours {
                return Err(StartError::ForeignCluster {
                    dir: cfg.data_dir.clone(),
                    ours,
                    theirs,
                    peer: v.id,
                    node_id: cfg.node_id,
                });
            }
        }
    }
    Ok(())
}

/// Records the cluster's id in the data directory once this node knows it (temp file,
/// fsync, rename, fsync of the directory).
fn write_cluster_id(dir: &std::path::Path, id: &uuid::Uuid) -> std::io::Result<()> {
    use std::io::Write;
    let path = dir.join(CLUSTER_ID_FILE);
    if path.exists() {
        return Ok(());
    }
    let tmp = dir.join("cluster.id.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    writeln!(f, "{id}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Writes the node's URL to `DATA/node.addr` (temp file + rename), so scripts and tests that
/// started it on port 0 can find it.
fn write_addr_file(dir: &std::path::Path, url: &str) {
    write_named_addr_file(dir, "node.addr", url)
}

/// Writes `url` to `DIR/NAME` (through a temporary name: a reader sees all of it or none).
fn write_named_addr_file(dir: &std::path::Path, name: &str, url: &str) {
    let tmp = dir.join(format!("{name}.tmp"));
    let res = std::fs::write(&tmp, format!("{url}\n"))
        .and_then(|_| std::fs::rename(&tmp, dir.join(name)));
    if let Err(e) = res {
        tracing::warn!(error = %e, file = name, "cannot write an address file");
    }
}
