//! The `Catalog` service: commit, list, show and delete backups; placement and status.
//!
//! Commit order is the invariant that makes "a backup exists only once committed" true: the
//! leader first proves every chunk the manifest references is durable in the cluster
//! ([`crate::verify`]), and only then proposes the record through raft.
//!
//! # Any node answers
//! Writes and linearizable reads belong to the raft leader. A follower forwards such a call,
//! whole, to the leader it knows (waiting briefly for an election when none is known) and
//! relays the answer, so a client may talk to any node. A forwarded call is marked
//! (`x-cairn-forwarded`) and never forwarded again, so a stale view of who leads cannot
//! make a call bounce. One read degrades instead of failing: `GetBackup` answers from this
//! node's own catalog when no leader can be reached, because a committed backup record never
//! changes except by deletion, and restoring an existing backup must work with a majority
//! of the nodes down.

use std::sync::Arc;
use std::time::Duration;

use cairn_core::{BackupId, BackupRecord, EnvId, ErrorCode};
use cairn_meta::{Command, MetaError, MetaNode, Response as MetaResponse};
use cairn_proto::pb::catalog_server::Catalog;
use cairn_proto::pb::{self};
use cairn_proto::status;
use cairn_store::ChunkStore;
use tonic::{Request, Response, Status};

use cairn_core::auth::Access;
use cairn_meta::authz::Subject;

use crate::auth::{act_for, authorize, caller, Principal};
use crate::error::meta_status;
use crate::peers::{ClusterChunks, Peers};
use crate::verify::{check_manifest, VerifyError};

/// Metadata key that marks a call forwarded by another node.
const FORWARDED: &str = "x-cairn-forwarded";
/// How long a follower waits for a leader to be elected before it gives up on a call.
const LEADER_WAIT: Duration = Duration::from_secs(5);
/// A leader of several voters that no quorum acknowledged for this long leads nothing (its
/// followers died or are cut off; openraft keeps it leader): status reports no leader, so
/// `/healthz` answers 503. Several election timeouts, so late heartbeats on a loaded machine
/// do not make a healthy leader flap.
const LEADER_STALE_MS: u64 = 5_000;

/// The leader `m` shows, unless this node is a leader that lost its quorum.
fn effective_leader(m: &cairn_meta::MetaMetrics, voters: usize) -> Option<u64> {
    if m.state.is_leader() && voters > 1 {
        match m.millis_since_quorum_ack {
            Some(ms) if ms <= LEADER_STALE_MS => m.current_leader,
            _ => None,
        }
    } else {
        m.current_leader
    }
}

pub struct CatalogService {
    pub store: Arc<ChunkStore>,
    pub meta: Arc<MetaNode>,
    pub node_id: u64,
    pub addr: String,
    pub zone: String,
    pub cluster: ClusterChunks,
    pub peers: Peers,
    pub repairer: Arc<crate::repair::Repairer>,
    /// Collections run one at a time.
    pub gc_running: tokio::sync::Mutex<()>,
    /// Backup records answered to `ListBackups` since start (`NodeStatus.backups_listed`).
    pub backups_listed: std::sync::atomic::AtomicU64,
}

/// The most backups one page of `ListBackups` answers (a larger limit is cut to it).
pub const MAX_PAGE: u32 = 1000;

/// Where a call that needs the leader goes.
pub(crate) enum Route {
    Here,
    Leader(String),
}

fn parse_backup_id(s: &str) -> Result<BackupId, Status> {
    s.parse()
        .map_err(|e: cairn_core::IdError| status(ErrorCode::InvalidArgument, e))
}

fn parse_env(s: &str) -> Result<Option<EnvId>, Status> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|e: cairn_core::IdError| status(ErrorCode::InvalidArgument, e))
}

/// A forwarded call that the leader did not answer becomes `unavailable` naming the leader
/// (the client retries, possibly elsewhere); the leader's own answers pass through as they are.
pub(crate) fn forward_error(addr: &str, e: Status) -> Status {
    if cairn_proto::stable_code(&e).is_some() {
        e
    } else {
        status(
            ErrorCode::Unavailable,
            format!(
                "the metadata leader at {addr} does not answer ({}); a new one is elected when a majority of the voters is up",
                e.message()
            ),
        )
    }
}

fn refused(code: ErrorCode, rule: Option<cairn_core::auth::Rule>, message: String) -> Status {
    cairn_proto::refusal(code, rule, message)
}

/// Decides whether this node serves a leader-only call or forwards it to the leader.
pub(crate) async fn route_call<T>(
    meta: &MetaNode,
    node_id: u64,
    req: &Request<T>,
) -> Result<Route, Status> {
    let forwarded = req.metadata().get(FORWARDED).is_some();
    let leader = match meta.metrics().current_leader {
        Some(l) => l,
        None => meta
            .wait_for_leader(LEADER_WAIT)
            .await
            .map_err(meta_status)?,
    };
    if leader == node_id || forwarded {
        return Ok(Route::Here);
    }
    let m = meta.metrics();
    let addr = m
        .membership_config
        .nodes()
        .find(|(id, _)| **id == leader)
        .map(|(_, n)| n.addr.clone());
    match addr {
        Some(addr) => Ok(Route::Leader(addr)),
        None => Err(meta_status(MetaError::NotLeader {
            leader_id: Some(leader),
            leader_addr: None,
        })),
    }
}

/// Serves a leader-only call: when this node does not lead, forwards `$req` whole to the
/// leader's `$client` service (`catalog` or `agents`) for `$who`, and returns the leader's
/// answer. `$svc` has `route` and `peers`.
macro_rules! forward_to_leader {
    ($svc:expr, $req:ident, $who:expr, $client:ident, $method:ident) => {
        if let $crate::catalog::Route::Leader(addr) = $svc.route(&$req).await? {
            return $svc
                .peers
                .$client(&addr)?
                .$method($crate::catalog::forwarded($req.into_inner(), $who))
                .await
                .map_err(|e| $crate::catalog::forward_error(&addr, e));
        }
    };
}
pub(crate) use forward_to_leader;

/// Wraps `msg` for the leader, marked as forwarded and made for `who` (the caller this
/// node authenticated: the leader decides for it, not for this node).
pub(crate) fn forwarded<T>(msg: T, who: &Principal) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    act_for(&mut r, who);
    r
}

impl CatalogService {
    /// Decides whether this node serves a leader-only call or forwards it.
    async fn route<T>(&self, req: &Request<T>) -> Result<Route, Status> {
        route_call(&self.meta, self.node_id, req).await
    }

    async fn record(&self, id: &BackupId) -> Result<BackupRecord, Status> {
        self.meta.read_barrier().await.map_err(meta_status)?;
        self.meta
            .get_backup(id)
            .map_err(meta_status)?
            .ok_or_else(|| status(ErrorCode::BackupNotFound, format!("backup {id} not found")))
    }

    /// Proposes `cmd` for `by` and turns a refusal into its status.
    async fn write(&self, by: &Principal, cmd: Command) -> Result<MetaResponse, Status> {
        match self.meta.write(by, cmd).await.map_err(meta_status)? {
            MetaResponse::Refused {
                code,
                message,
                rule,
            } => Err(refused(code, rule, message)),
            other => Ok(other),
        }
    }

    /// Refuses `who` unless this node's catalog admits `access` on `subject`.
    fn authorize(&self, who: &Principal, access: Access, subject: Subject) -> Result<(), Status> {
        authorize(&self.meta, who, access, &subject)
    }

    /// This node's own (possibly stale) copy of a record, for when no leader answers.
    fn local_record(&self, id: &BackupId) -> Result<Option<BackupRecord>, Status> {
        self.meta.get_backup(id).map_err(meta_status)
    }
}

#[tonic::async_trait]
impl Catalog for CatalogService {
    #[tracing::instrument(skip_all)]
    async fn commit_backup(
        &self,
        req: Request<pb::CommitBackupRequest>,
    ) -> Result<Response<pb::Backup>, Status> {
        let who = caller(&req)?;
        let env = req
            .get_ref()
            .backup
            .as_ref()
            .map(|b| b.id.as_str())
            .unwrap_or_default();
        // Before the manifest walk, which costs the leader reads from every node.
        self.authorize(
            &who,
            Access::Commit,
            Subject::Env(parse_backup_id(env)?.env),
        )?;
        forward_to_leader!(self, req, &who, catalog, commit_backup);
        let req = req.into_inner();
        let job = match req.job.as_str() {
            "" => None,
            j => Some(j.parse::<uuid::Uuid>().map_err(|e| {
                status(
                    ErrorCode::InvalidArgument,
                    format!("malformed job id {j:?}: {e}"),
                )
            })?),
        };
        let session = match req.session.as_str() {
            "" => None,
            s => Some(s.parse::<uuid::Uuid>().map_err(|e| {
                status(
                    ErrorCode::InvalidArgument,
                    format!("malformed session id {s:?}: {e}"),
                )
            })?),
        };
        let wire = req
            .backup
            .ok_or_else(|| status(ErrorCode::InvalidArgument, "commit without a backup"))?;
        let mut record = BackupRecord::try_from(wire)?;
        record.id.time = chrono::Utc::now().timestamp();
        let check = match check_manifest(&self.cluster, &record.manifest).await {
            Ok(c) => c,
            Err(VerifyError::NoRoot(id)) => {
                return Err(status(
                    ErrorCode::ChunksMissing,
                    format!("manifest root {id} is not stored; upload it before committing"),
                ))
            }
            Err(VerifyError::Manifest(e)) => {
                return Err(status(ErrorCode::InvalidArgument, e.to_string()))
            }
            Err(VerifyError::Cluster(s)) => return Err(s),
        };
        if check.missing_count > 0 {
            let list: Vec<String> = check.missing.iter().map(|c| c.to_string()).collect();
            return Err(status(
                ErrorCode::ChunksMissing,
                format!(
                    "backup refers to {} chunk(s) the cluster does not hold (first: {}); nothing was committed",
                    check.missing_count,
                    list.join(", ")
                ),
            ));
        }
        record.chunk_count = check.chunk_refs;
        record.file_count = check.root.files;
        record.logical_size = check.root.logical_size;
        let resp = self
            .write(
                &who,
                Command::CommitBackup {
                    record: record.clone(),
                    job,
                    now_ms: crate::clock::now_ms(),
                    session,
                },
            )
            .await?;
        match resp {
            MetaResponse::Committed { id, removed } => {
                record.id = id;
                record.protected = false;
                tracing::info!(backup_id = %id, files = record.file_count, bytes = record.logical_size, by = %who.name(), "backup committed");
                for gone in removed {
                    tracing::info!(backup_id = %gone, "backup removed by retention");
                }
                Ok(Response::new(pb::Backup::from(&record)))
            }
            other => Err(status(
                ErrorCode::Internal,
                format!("unexpected catalog answer {other:?}"),
            )),
        }
    }

    async fn list_backups(
        &self,
        req: Request<pb::ListBackupsRequest>,
    ) -> Result<Response<pb::ListBackupsResponse>, Status> {
        let who = caller(&req)?;
        let subject = match parse_env(&req.get_ref().env)? {
            Some(env) => Subject::Env(env),
            None => Subject::Nothing,
        };
        self.authorize(&who, Access::Read, subject)?;
        forward_to_leader!(self, req, &who, catalog, list_backups);
        let req = req.into_inner();
        let env = parse_env(&req.env)?;
        let before = match req.before.as_str() {
            "" => None,
            b => Some(parse_backup_id(b)?),
        };
        if let (Some(env), Some(b)) = (env, &before) {
            if b.env != env {
                return Err(status(
                    ErrorCode::InvalidArgument,
                    format!("the cursor {b} is not a backup of environment {env}"),
                ));
            }
        }
        self.meta.read_barrier().await.map_err(meta_status)?;
        let answer = if req.limit == 0 {
            // No limit: everything, in key order (the listing older callers expect).
            let list = self.meta.list_backups(env).map_err(meta_status)?;
            pb::ListBackupsResponse {
                backups: list.iter().map(pb::Backup::from).collect(),
                next: String::new(),
                totals: None,
            }
        } else {
            let limit = req.limit.min(MAX_PAGE) as usize;
            let (page, next) = self
                .meta
                .backups_page(env, before.as_ref(), limit)
                .map_err(meta_status)?;
            let totals = self.meta.backup_totals(env).map_err(meta_status)?;
            pb::ListBackupsResponse {
                backups: page.iter().map(pb::Backup::from).collect(),
                next: next.map(|n| n.to_string()).unwrap_or_default(),
                totals: Some(pb::BackupTotals::from(&totals)),
            }
        };
        self.backups_listed.fetch_add(
            answer.backups.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(Response::new(answer))
    }

    async fn get_backup(
        &self,
        req: Request<pb::BackupRef>,
    ) -> Result<Response<pb::Backup>, Status> {
        let who = caller(&req)?;
        let id = parse_backup_id(&req.get_ref().id)?;
        self.authorize(&who, Access::Read, Subject::Backup(id))?;
        let answer = match self.route(&req).await {
            Ok(Route::Here) => self.record(&id).await,
            Ok(Route::Leader(addr)) => match self.peers.catalog(&addr) {
                Ok(mut c) => c
                    .get_backup(forwarded(req.into_inner(), &who))
                    .await
                    .map(|r| r.into_inner())
                    .map_err(|e| forward_error(&addr, e)),
                Err(e) => Err(e),
            }
            .and_then(|b| BackupRecord::try_from(b).map_err(Status::from)),
            Err(e) => Err(e),
        };
        match answer {
            Ok(r) => Ok(Response::new(pb::Backup::from(&r))),
            Err(e) if cairn_proto::code_of(&e) == ErrorCode::Unavailable => {
                match self.local_record(&id)? {
                    Some(r) => {
                        tracing::warn!(backup_id = %id, "no leader reachable; answering from this node's catalog");
                        Ok(Response::new(pb::Backup::from(&r)))
                    }
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    #[tracing::instrument(skip_all)]
    async fn delete_backup(
        &self,
        req: Request<pb::BackupRef>,
    ) -> Result<Response<pb::DeleteBackupResponse>, Status> {
        let who = caller(&req)?;
        forward_to_leader!(self, req, &who, catalog, delete_backup);
        let id = parse_backup_id(&req.into_inner().id)?;
        match self.write(&who, Command::DeleteBackup { id }).await? {
            MetaResponse::Deleted => {
                tracing::info!(backup_id = %id, by = %who.name(), "backup deleted");
                Ok(Response::new(pb::DeleteBackupResponse {}))
            }
            other => Err(status(
                ErrorCode::Internal,
                format!("unexpected catalog answer {other:?}"),
            )),
        }
    }

    #[tracing::instrument(skip_all)]
    async fn protect_backup(
        &self,
        req: Request<pb::ProtectBackupRequest>,
    ) -> Result<Response<pb::Backup>, Status> {
        let who = caller(&req)?;
        forward_to_leader!(self, req, &who, catalog, protect_backup);
        let req = req.into_inner();
        let id = parse_backup_id(&req.id)?;
        match self
            .write(
                &who,
                Command::ProtectBackup {
                    id,
                    protected: req.protected,
                },
            )
            .await?
        {
            MetaResponse::Backup { record } => {
                tracing::info!(backup_id = %id, protected = req.protected, by = %who.name(), "backup protection changed");
                Ok(Response::new(pb::Backup::from(&*record)))
            }
            other => Err(status(
                ErrorCode::Internal,
                format!("unexpected catalog answer {other:?}"),
            )),
        }
    }

    async fn latest_backup(
        &self,
        req: Request<pb::LatestBackupRequest>,
    ) -> Result<Response<pb::LatestBackupResponse>, Status> {
        let who = caller(&req)?;
        let env = parse_env(&req.get_ref().env)?
            .ok_or_else(|| status(ErrorCode::InvalidArgument, "an environment id is required"))?;
        self.authorize(&who, Access::Read, Subject::Env(env))?;
        forward_to_leader!(self, req, &who, catalog, latest_backup);
        let req = req.into_inner();
        self.meta.read_barrier().await.map_err(meta_status)?;
        let latest = self
            .meta
            .latest_backup(env, req.full_only)
            .map_err(meta_status)?;
        Ok(Response::new(pb::LatestBackupResponse {
            backup: latest.as_ref().map(pb::Backup::from),
        }))
    }

    async fn node_status(
        &self,
        req: Request<pb::NodeStatusRequest>,
    ) -> Result<Response<pb::NodeStatusResponse>, Status> {
        self.authorize(&caller(&req)?, Access::Status, Subject::Nothing)?;
        let m = self.meta.metrics();
        let s = self.store.stats();
        let backups = self.meta.backup_totals(None).map_err(meta_status)?.count;
        let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
        let epoch = self.meta.placement().map_err(meta_status)?;
        let meta = self.meta.clone();
        let (catalog_index, catalog_digest) =
            tokio::task::spawn_blocking(move || meta.catalog_digest())
                .await
                .map_err(|e| status(ErrorCode::Internal, format!("digest task: {e}")))?
                .map_err(meta_status)?;
        Ok(Response::new(pb::NodeStatusResponse {
            catalog_digest,
            catalog_index,
            node_id: self.node_id,
            addr: self.addr.clone(),
            leader: effective_leader(&m, voters.len()),
            term: m.current_term,
            commit_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            chunks: s.chunks,
            stored_bytes: s.stored_bytes,
            logical_bytes: s.logical_bytes,
            backups,
            role: format!("{:?}", m.state).to_lowercase(),
            voter: voters.contains(&self.node_id),
            // The zone the placement gives it (`add-node --zone`), else its config's.
            zone: epoch
                .as_ref()
                .and_then(|e| e.node(self.node_id))
                .map(|n| n.zone.clone())
                .unwrap_or_else(|| self.zone.clone()),
            draining: epoch
                .as_ref()
                .and_then(|e| e.node(self.node_id))
                .map(|n| n.draining)
                .unwrap_or(false),
            epoch: epoch.map(|e| e.number).unwrap_or(0),
            repair_backlog: self.repairer.backlog(),
            cluster_id: self
                .meta
                .cluster_id()
                .map_err(meta_status)?
                .map(|id| id.to_string())
                .unwrap_or_default(),
            last_log_index: m.last_log_index.unwrap_or(0),
            backups_listed: self
                .backups_listed
                .load(std::sync::atomic::Ordering::Relaxed),
            voters,
            last_runs: Some((&self.cluster.runs.get()).into()),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn add_node(
        &self,
        req: Request<pb::AddNodeRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let who = caller(&req)?;
        self.authorize(&who, Access::Administer, Subject::Nothing)?;
        forward_to_leader!(self, req, &who, catalog, add_node);
        crate::membership::add_node(&self.meta, &self.peers, &who, req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn set_zone_redundancy(
        &self,
        req: Request<pb::SetZoneRedundancyRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let who = caller(&req)?;
        self.authorize(&who, Access::Administer, Subject::Nothing)?;
        forward_to_leader!(self, req, &who, catalog, set_zone_redundancy);
        crate::membership::set_zone_redundancy(&self.meta, &self.peers, &who, req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn remove_node(
        &self,
        req: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let who = caller(&req)?;
        self.authorize(&who, Access::Administer, Subject::Nothing)?;
        forward_to_leader!(self, req, &who, catalog, remove_node);
        crate::membership::remove_node(
            &self.meta,
            &self.peers,
            &self.repairer,
            self.node_id,
            &who,
            req.into_inner().node_id,
        )
        .await
        .map(Response::new)
    }

    async fn open_session(
        &self,
        req: Request<pb::OpenSessionRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let who = caller(&req)?;
        forward_to_leader!(self, req, &who, catalog, open_session);
        let req = req.into_inner();
        let env = parse_env(&req.env)?
            .ok_or_else(|| status(ErrorCode::InvalidArgument, "an environment id is required"))?;
        let session = cairn_core::retention::Session {
            id: uuid::Uuid::new_v4(),
            env,
            started_ms: crate::clock::now_ms(),
            // An agent's sessions are its host's, whatever it says.
            host: who.agent_host().map(str::to_string).unwrap_or(req.host),
            committed: None,
            renewed_ms: 0,
        };
        self.write(
            &who,
            Command::OpenSession {
                session: session.clone(),
            },
        )
        .await?;
        Ok(Response::new(pb::Session {
            id: session.id.to_string(),
            started_ms: session.started_ms,
        }))
    }

    async fn close_session(
        &self,
        req: Request<pb::Session>,
    ) -> Result<Response<pb::CloseSessionResponse>, Status> {
        let who = caller(&req)?;
        forward_to_leader!(self, req, &who, catalog, close_session);
        let id: uuid::Uuid = req.into_inner().id.parse().map_err(|e| {
            status(
                ErrorCode::InvalidArgument,
                format!("malformed session id: {e}"),
            )
        })?;
        self.write(&who, Command::CloseSession { id }).await?;
        Ok(Response::new(pb::CloseSessionResponse {}))
    }

    async fn renew_session(
        &self,
        req: Request<pb::Session>,
    ) -> Result<Response<pb::Session>, Status> {
        let who = caller(&req)?;
        forward_to_leader!(self, req, &who, catalog, renew_session);
        let s = req.into_inner();
        let id: uuid::Uuid = s.id.parse().map_err(|e| {
            status(
                ErrorCode::InvalidArgument,
                format!("malformed session id: {e}"),
            )
        })?;
        self.write(
            &who,
            Command::RenewSession {
                id,
                now_ms: crate::clock::now_ms(),
            },
        )
        .await?;
        Ok(Response::new(s))
    }

    #[tracing::instrument(skip_all)]
    async fn gc(&self, req: Request<pb::GcRequest>) -> Result<Response<pb::GcReport>, Status> {
        let who = caller(&req)?;
        self.authorize(&who, Access::Administer, Subject::Nothing)?;
        forward_to_leader!(self, req, &who, catalog, gc);
        let wait = match req.into_inner().wait_secs {
            0 => Duration::from_secs(3600),
            s => Duration::from_secs(s),
        };
        let _one_at_a_time = self.gc_running.lock().await;
        crate::gc::collect(&self.meta, &self.cluster, wait)
            .await
            .map(Response::new)
    }

    async fn get_env_config(
        &self,
        req: Request<pb::EnvRef>,
    ) -> Result<Response<pb::EnvConfig>, Status> {
        let who = caller(&req)?;
        let env = parse_env(&req.get_ref().env)?.unwrap_or(EnvId::GLOBAL);
        self.authorize(&who, Access::Read, Subject::Env(env))?;
        forward_to_leader!(self, req, &who, catalog, get_env_config);
        let effective = req.into_inner().effective;
        self.meta.read_barrier().await.map_err(meta_status)?;
        let own = self.meta.env_config(env).map_err(meta_status)?;
        let c = if effective && env != EnvId::GLOBAL {
            own.merged(&self.meta.env_config(EnvId::GLOBAL).map_err(meta_status)?)
        } else {
            own
        };
        Ok(Response::new(cairn_proto::env_config_to_wire(&c)))
    }

    async fn set_env_config(
        &self,
        req: Request<pb::SetEnvConfigRequest>,
    ) -> Result<Response<pb::EnvConfig>, Status> {
        let who = caller(&req)?;
        forward_to_leader!(self, req, &who, catalog, set_env_config);
        let req = req.into_inner();
        let env = parse_env(&req.env)?.unwrap_or(EnvId::GLOBAL);
        let config = cairn_proto::env_config_from_wire(req.config.unwrap_or_default());
        if let MetaResponse::Configured { removed } = self
            .write(
                &who,
                Command::SetEnvConfig {
                    env,
                    config: config.clone(),
                    now_ms: crate::clock::now_ms(),
                },
            )
            .await?
        {
            for gone in removed {
                tracing::info!(backup_id = %gone, "backup removed by retention");
            }
        }
        Ok(Response::new(cairn_proto::env_config_to_wire(&config)))
    }

    async fn get_placement(
        &self,
        req: Request<pb::PlacementRequest>,
    ) -> Result<Response<pb::Placement>, Status> {
        self.authorize(&caller(&req)?, Access::Status, Subject::Nothing)?;
        let epoch = self.meta.placement().map_err(meta_status)?;
        Ok(Response::new(match epoch {
            Some(e) => pb::Placement::from(&e),
            None => pb::Placement::default(),
        }))
    }
}
