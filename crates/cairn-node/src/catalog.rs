//! The `Catalog` service: commit, list, show and delete backups.
//!
//! Commit order is the invariant that makes "a backup exists only once committed" true: the
//! node first proves every chunk the manifest references is durable in its store
//! ([`crate::verify`]), and only then proposes the record through raft.

use std::sync::Arc;

use cairn_core::{BackupId, BackupRecord, EnvId, ErrorCode};
use cairn_meta::{Command, MetaNode, Response as MetaResponse};
use cairn_proto::pb::catalog_server::Catalog;
use cairn_proto::pb::{self};
use cairn_proto::status;
use cairn_store::ChunkStore;
use tonic::{Request, Response, Status};

use crate::error::{join_status, meta_status, store_status};
use crate::verify::{check_manifest, VerifyError};

pub struct CatalogService {
    pub store: Arc<ChunkStore>,
    pub meta: Arc<MetaNode>,
    pub node_id: u64,
    pub addr: String,
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

fn refused(code: ErrorCode, message: String) -> Status {
    status(code, message)
}

impl CatalogService {
    async fn record(&self, id: &BackupId) -> Result<BackupRecord, Status> {
        self.meta.read_barrier().await.map_err(meta_status)?;
        self.meta
            .get_backup(id)
            .map_err(meta_status)?
            .ok_or_else(|| status(ErrorCode::NotFound, format!("backup {id} not found")))
    }
}

#[tonic::async_trait]
impl Catalog for CatalogService {
    #[tracing::instrument(skip_all)]
    async fn commit_backup(
        &self,
        req: Request<pb::CommitBackupRequest>,
    ) -> Result<Response<pb::Backup>, Status> {
        let wire = req
            .into_inner()
            .backup
            .ok_or_else(|| status(ErrorCode::InvalidArgument, "commit without a backup"))?;
        let mut record = BackupRecord::try_from(wire)?;
        record.id.time = chrono::Utc::now().timestamp();
        let store = self.store.clone();
        let root = record.manifest;
        let check = tokio::task::spawn_blocking(move || check_manifest(&store, &root))
            .await
            .map_err(join_status)?;
        let check = match check {
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
            Err(VerifyError::Store(e)) => return Err(store_status(e)),
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
            .meta
            .write(Command::CommitBackup {
                record: record.clone(),
            })
            .await
            .map_err(meta_status)?;
        match resp {
            MetaResponse::Committed { id } => {
                record.id = id;
                tracing::info!(backup_id = %id, files = record.file_count, bytes = record.logical_size, "backup committed");
                Ok(Response::new(pb::Backup::from(&record)))
            }
            MetaResponse::Refused { code, message } => Err(refused(code, message)),
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
        let env = parse_env(&req.into_inner().env)?;
        self.meta.read_barrier().await.map_err(meta_status)?;
        let list = self.meta.list_backups(env).map_err(meta_status)?;
        Ok(Response::new(pb::ListBackupsResponse {
            backups: list.iter().map(pb::Backup::from).collect(),
        }))
    }

    async fn get_backup(
        &self,
        req: Request<pb::BackupRef>,
    ) -> Result<Response<pb::Backup>, Status> {
        let id = parse_backup_id(&req.into_inner().id)?;
        let r = self.record(&id).await?;
        Ok(Response::new(pb::Backup::from(&r)))
    }

    #[tracing::instrument(skip_all)]
    async fn delete_backup(
        &self,
        req: Request<pb::BackupRef>,
    ) -> Result<Response<pb::DeleteBackupResponse>, Status> {
        let id = parse_backup_id(&req.into_inner().id)?;
        match self
            .meta
            .write(Command::DeleteBackup { id })
            .await
            .map_err(meta_status)?
        {
            MetaResponse::Deleted => {
                tracing::info!(backup_id = %id, "backup deleted");
                Ok(Response::new(pb::DeleteBackupResponse {}))
            }
            MetaResponse::Refused { code, message } => Err(refused(code, message)),
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
        let req = req.into_inner();
        let env = parse_env(&req.env)?
            .ok_or_else(|| status(ErrorCode::InvalidArgument, "an environment id is required"))?;
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
        _req: Request<pb::NodeStatusRequest>,
    ) -> Result<Response<pb::NodeStatusResponse>, Status> {
        let m = self.meta.metrics();
        let s = self.store.stats();
        let backups = self.meta.list_backups(None).map_err(meta_status)?.len() as u64;
        Ok(Response::new(pb::NodeStatusResponse {
            node_id: self.node_id,
            addr: self.addr.clone(),
            leader: m.current_leader,
            term: m.current_term,
            commit_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            chunks: s.chunks,
            stored_bytes: s.stored_bytes,
            logical_bytes: s.logical_bytes,
            backups,
        }))
    }
}
