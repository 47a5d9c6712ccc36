//! [`MetaNode`]: one member of the metadata raft group, as the node service uses it.

use crate::error::MetaError;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_core::auth::Principal;
use cairn_core::{BackupId, BackupRecord, EnvId};
use openraft::error::{CheckIsLeaderError, ClientWriteError, Fatal, InitializeError, RaftError};
use openraft::metrics::WaitError;
use openraft::{BasicNode, Raft, RaftNetworkFactory, SnapshotPolicy};

use crate::command::{Command, Proposal, Response};
use crate::store::{self, StateMachineStore};
use crate::{MetaMetrics, MetaRaft, TypeConfig};

/// How long a write waits for a quorum before it is answered `unavailable`.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default heartbeat interval of the leader.
pub const DEFAULT_HEARTBEAT_MS: u64 = 150;
/// Default lower bound of the randomised election timeout.
pub const DEFAULT_ELECTION_MIN_MS: u64 = 500;
/// Default upper bound of the randomised election timeout.
pub const DEFAULT_ELECTION_MAX_MS: u64 = 1000;
/// A snapshot is built after this many log entries since the last one.
pub const SNAPSHOT_EVERY_LOGS: u64 = 2000;
/// Entries kept in the log behind a snapshot, so a briefly lagging follower catches up from
/// the log instead of receiving the whole snapshot.
pub const LOGS_KEPT_AFTER_SNAPSHOT: u64 = 1000;
/// How long `open` waits for the database lock held by a previous instance in this process
/// (openraft's state-machine task ends shortly after `shutdown` returns).
const OPEN_LOCK_WAIT: Duration = Duration::from_secs(5);
const OPEN_LOCK_RETRY: Duration = Duration::from_millis(25);

/// Where and how a metadata node runs.
#[derive(Clone, Debug)]
pub struct MetaConfig {
    /// Directory of the node's metadata database (created if missing).
    pub dir: PathBuf,
    /// This node's id in the group; stable across restarts.
    pub node_id: u64,
    /// This node's gRPC address, as peers and clients reach it.
    pub addr: String,
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// A snapshot is built after this many log entries since the last one; half as many
    /// are kept behind it, so a follower lagging further gets the snapshot streamed.
    pub snapshot_every: u64,
}

impl MetaConfig {
    /// Returns a configuration with the default raft timings.
    pub fn new(dir: impl Into<PathBuf>, node_id: u64, addr: impl Into<String>) -> MetaConfig {
        MetaConfig {
            dir: dir.into(),
            node_id,
            addr: addr.into(),
            heartbeat_ms: DEFAULT_HEARTBEAT_MS,
            election_min_ms: DEFAULT_ELECTION_MIN_MS,
            election_max_ms: DEFAULT_ELECTION_MAX_MS,
            snapshot_every: SNAPSHOT_EVERY_LOGS,
        }
    }

    fn raft_config(&self) -> Result<openraft::Config, MetaError> {
        openraft::Config {
            cluster_name: "cairn-meta".to_string(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_min_ms,
            election_timeout_max: self.election_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every.max(1)),
            max_in_snapshot_log_to_keep: LOGS_KEPT_AFTER_SNAPSHOT.min(self.snapshot_every / 2),
            // One snapshot chunk per RPC; the default 200 ms is short for a large catalog.
            install_snapshot_timeout: 10_000,
            ..Default::default()
        }
        .validate()
        .map_err(|e| {
            MetaError::Config(format!(
                "raft timings (heartbeat_ms {}, election_min_ms {}, election_max_ms {}): {e}; \
                 heartbeat_ms must be below election_min_ms, which must be below election_max_ms",
                self.heartbeat_ms, self.election_min_ms, self.election_max_ms
            ))
        })
    }
}

fn fatal(f: Fatal<u64>) -> MetaError {
    match f {
        Fatal::StorageError(e) => MetaError::Storage(e.to_string()),
        Fatal::Panicked => {
            MetaError::Unavailable("the metadata raft task panicked; see the node's log".into())
        }
        Fatal::Stopped => MetaError::Unavailable("the metadata node is stopped".into()),
    }
}

/// One member of the metadata raft group: its raft handle and its catalog.
///
/// Cloning is cheap; clones share the same raft node and database.
#[derive(Clone)]
pub struct MetaNode {
    node_id: u64,
    addr: String,
    raft: MetaRaft,
    sm: StateMachineStore,
}

impl MetaNode {
    /// Opens the node's database in `cfg.dir` and starts its raft task.
    ///
    /// A fresh directory gives a pristine node that waits for [`MetaNode::initialize_if_new`]
    /// or for a leader to contact it; an existing one resumes with its log, vote and catalog.
    pub async fn open<N: RaftNetworkFactory<TypeConfig>>(
        cfg: MetaConfig,
        network: N,
    ) -> Result<MetaNode, MetaError> {
        let config = cfg.raft_config()?;
        let db = open_db_waiting(cfg.dir.clone()).await?;
        let (log, sm) = store::stores(&db)?;
        let raft = Raft::new(cfg.node_id, Arc::new(config), network, log, sm.clone())
            .await
            .map_err(fatal)?;
        tracing::info!(
            node_id = cfg.node_id,
            addr = %cfg.addr,
            dir = %cfg.dir.display(),
            "metadata node opened"
        );
        Ok(MetaNode {
            node_id: cfg.node_id,
            addr: cfg.addr,
            raft,
            sm,
        })
    }

    /// Returns this node's id.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// Forms a new group with `members` if this node has never been part of one, and tells
    /// whether it did. An empty `members` means this node alone, at its configured address.
    ///
    /// A node that holds a vote or any log entry (a restarted node, or one a leader already
    /// reached) is never initialised again: that would fork the group.
    pub async fn initialize_if_new(
        &self,
        members: BTreeMap<u64, BasicNode>,
    ) -> Result<bool, MetaError> {
        if self.raft.is_initialized().await.map_err(fatal)? {
            return Ok(false);
        }
        let members = if members.is_empty() {
            BTreeMap::from([(self.node_id, BasicNode::new(&self.addr))])
        } else {
            members
        };
        let voters: Vec<u64> = members.keys().copied().collect();
        match self.raft.initialize(members).await {
            Ok(()) => {
                tracing::info!(
                    node_id = self.node_id,
                    ?voters,
                    "metadata group initialised"
                );
                Ok(true)
            }
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(false),
            Err(RaftError::APIError(InitializeError::NotInMembers(e))) => Err(MetaError::Config(
                format!("{e}: list this node among the initial metadata voters"),
            )),
            Err(RaftError::Fatal(f)) => Err(fatal(f)),
        }
    }

    /// Waits until a leader is known (to this node) and returns its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<u64, MetaError> {
        let metrics = self
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a metadata leader is known")
            .await
            .map_err(|e| match e {
                WaitError::Timeout(..) => MetaError::Unavailable(format!(
                    "no metadata leader within {timeout:?}; check that a majority of the voters \
                     is running and can reach each other"
                )),
                WaitError::ShuttingDown => {
                    MetaError::Unavailable("the metadata node is shutting down".into())
                }
            })?;
        metrics
            .current_leader
            .ok_or_else(|| MetaError::Unavailable("no metadata leader is known".into()))
    }

    /// Replicates `cmd` through the group and returns the state machine's answer once it is
    /// committed and applied here. Refusals come back as [`Response::Refused`].
    ///
    /// Gives up after [`WRITE_TIMEOUT`] (a leader cut off from its quorum would wait
    /// forever). The command may still be committed later if the quorum comes back before
    /// the leader changes: callers retry only commands for which that is harmless.
    pub async fn write(&self, by: &Principal, cmd: Command) -> Result<Response, MetaError> {
        let kind = cmd.kind();
        let proposal = Proposal::new(by.clone(), cmd);
        let res = match tokio::time::timeout(WRITE_TIMEOUT, self.raft.client_write(proposal)).await
        {
            Ok(r) => r,
            Err(_) => {
                return Err(MetaError::Unavailable(format!(
                    "{kind} was not committed within {}s: a majority of the voters must be up and reachable",
                    WRITE_TIMEOUT.as_secs()
                )))
            }
        };
        match res {
            Ok(resp) => Ok(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(self.not_leader(f.leader_id, f.leader_node))
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(MetaError::Raft(e.to_string()))
            }
            Err(RaftError::Fatal(f)) => Err(fatal(f)),
        }
    }

    /// Returns once this node's catalog reflects every write committed before the call:
    /// confirms leadership with a quorum, then waits for the state machine to catch up.
    ///
    /// The quorum check is one heartbeat round with a heartbeat-interval timeout, which a
    /// loaded machine can miss while every peer is up; it is tried three times before the
    /// read is refused as unavailable.
    pub async fn read_barrier(&self) -> Result<(), MetaError> {
        let mut tries = 0;
        let answer = loop {
            tries += 1;
            match self.raft.ensure_linearizable().await {
                Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) if tries < 3 => {
                    tracing::debug!(tries, "leadership not confirmed in time; trying again");
                }
                other => break other,
            }
        };
        match answer {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(self.not_leader(f.leader_id, f.leader_node))
            }
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e))) => {
                let voters = self
                    .metrics()
                    .membership_config
                    .membership()
                    .voter_ids()
                    .count();
                let got: Vec<String> = e.got.iter().map(|n| n.to_string()).collect();
                Err(MetaError::Unavailable(format!(
                    "no quorum: only node {} of {voters} voters answers; a majority must be up",
                    got.join(", ")
                )))
            }
            Err(RaftError::Fatal(f)) => Err(fatal(f)),
        }
    }

    /// Adds a node as a non-voting member (a storage-only node): it receives the log and
    /// serves catalog reads but never votes. Returns once it has caught up.
    pub async fn add_learner(&self, id: u64, addr: &str) -> Result<(), MetaError> {
        match self.raft.add_learner(id, BasicNode::new(addr), true).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.write_error(e)),
        }
    }

    /// Removes a node from the group, as a voter or as a learner.
    pub async fn remove_member(&self, id: u64) -> Result<(), MetaError> {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let is_voter = membership.voter_ids().any(|v| v == id);
        let change = if is_voter {
            openraft::ChangeMembers::RemoveVoters(std::collections::BTreeSet::from([id]))
        } else {
            openraft::ChangeMembers::RemoveNodes(std::collections::BTreeSet::from([id]))
        };
        match self.raft.change_membership(change, false).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.write_error(e)),
        }
    }

    /// Returns the ids of the raft voters and of the learners.
    pub fn members(&self) -> (Vec<u64>, Vec<u64>) {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let learners: Vec<u64> = membership.learner_ids().collect();
        (voters, learners)
    }

    fn write_error(&self, e: RaftError<u64, ClientWriteError<u64, BasicNode>>) -> MetaError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                self.not_leader(f.leader_id, f.leader_node)
            }
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                MetaError::Raft(e.to_string())
            }
            RaftError::Fatal(f) => fatal(f),
        }
    }

    fn not_leader(&self, leader_id: Option<u64>, leader_node: Option<BasicNode>) -> MetaError {
        let leader_addr = leader_node.map(|n| n.addr).or_else(|| {
            let id = leader_id?;
            let metrics = self.metrics();
            let addr = metrics
                .membership_config
                .nodes()
                .find(|(nid, _)| **nid == id)
                .map(|(_, n)| n.addr.clone());
            addr
        });
        MetaError::NotLeader {
            leader_id,
            leader_addr,
        }
    }

    /// Proposes `cmd` as the cluster itself (the leader's sweeper, health watcher,
    /// bootstrap): see [`MetaNode::write`].
    pub async fn write_system(&self, cmd: Command) -> Result<Response, MetaError> {
        self.write(&Principal::Cluster, cmd).await
    }

    /// Decides, from this node's catalog, whether `who` may make a request of `access`
    /// naming `subject` (the same rules the catalog's decisions apply; see
    /// [`crate::authz`]). `Err` only when the catalog cannot be read.
    pub fn authorize(
        &self,
        who: &Principal,
        access: cairn_core::auth::Access,
        subject: &crate::authz::Subject,
    ) -> Result<Result<(), crate::authz::Refusal>, MetaError> {
        crate::authz::authorize(&self.sm, who, access, subject)
    }

    /// Returns an open backup session, from this node's catalog.
    pub fn session(
        &self,
        id: &uuid::Uuid,
    ) -> Result<Option<cairn_core::retention::Session>, MetaError> {
        self.sm.session(id)
    }

    /// Returns the backup with this id from this node's catalog.
    pub fn get_backup(&self, id: &BackupId) -> Result<Option<BackupRecord>, MetaError> {
        self.sm.get_backup(id)
    }

    /// The catalog's digest and the index it covers ([`StateMachineStore::digest`];
    /// blocking: call from a blocking thread).
    pub fn catalog_digest(&self) -> Result<(u64, String), MetaError> {
        self.sm.digest()
    }

    /// Returns the backups of one environment, or of all, ordered by environment then time.
    pub fn list_backups(&self, env: Option<EnvId>) -> Result<Vec<BackupRecord>, MetaError> {
        self.sm.list_backups(env)
    }

    /// Returns one page of backups, newest first, and the next page's cursor
    /// ([`StateMachineStore::backups_page`]).
    pub fn backups_page(
        &self,
        env: Option<EnvId>,
        before: Option<&BackupId>,
        limit: usize,
    ) -> Result<(Vec<BackupRecord>, Option<BackupId>), MetaError> {
        self.sm.backups_page(env, before, limit)
    }

    /// Returns the backup totals of one environment or of the whole catalog, without
    /// reading a record ([`StateMachineStore::totals`]).
    pub fn backup_totals(
        &self,
        env: Option<EnvId>,
    ) -> Result<cairn_core::totals::BackupTotals, MetaError> {
        self.sm.totals(env)
    }

    /// Returns the newest backup of an environment (the newest full one if `full_only`).
    pub fn latest_backup(
        &self,
        env: EnvId,
        full_only: bool,
    ) -> Result<Option<BackupRecord>, MetaError> {
        self.sm.latest_backup(env, full_only)
    }

    /// Returns the placement epoch in force on this node, if one was set.
    pub fn placement(&self) -> Result<Option<cairn_core::placement::Epoch>, MetaError> {
        self.sm.placement()
    }

    /// Returns an environment's settings from this node's catalog.
    pub fn env_config(&self, env: EnvId) -> Result<cairn_core::retention::EnvConfig, MetaError> {
        self.sm.env_config(env)
    }

    /// Returns the cluster's id as this node knows it.
    pub fn cluster_id(&self) -> Result<Option<uuid::Uuid>, MetaError> {
        self.sm.cluster_id()
    }

    /// Returns the open backup sessions in this node's catalog.
    pub fn sessions(&self) -> Result<Vec<cairn_core::retention::Session>, MetaError> {
        self.sm.sessions()
    }

    /// Returns every registered host, from this node's catalog.
    pub fn hosts(&self) -> Result<Vec<cairn_core::job::HostRecord>, MetaError> {
        self.sm.hosts()
    }

    /// Returns a registered host, from this node's catalog.
    pub fn host(&self, id: &str) -> Result<Option<cairn_core::job::HostRecord>, MetaError> {
        self.sm.host(id)
    }

    /// Returns every registered environment, from this node's catalog.
    pub fn envs(&self) -> Result<Vec<cairn_core::job::EnvRecord>, MetaError> {
        self.sm.envs()
    }

    /// Returns a registered environment, from this node's catalog.
    pub fn env(&self, eid: EnvId) -> Result<Option<cairn_core::job::EnvRecord>, MetaError> {
        self.sm.env(eid)
    }

    /// Returns a job, from this node's catalog.
    pub fn job(&self, id: &uuid::Uuid) -> Result<Option<cairn_core::job::Job>, MetaError> {
        self.sm.job(id)
    }

    /// Returns every job, oldest first, from this node's catalog.
    pub fn jobs(&self) -> Result<Vec<cairn_core::job::Job>, MetaError> {
        self.sm.jobs()
    }

    /// Returns the active (queued or running) agent jobs, from this node's catalog.
    pub fn active_jobs(&self) -> Result<Vec<cairn_core::job::Job>, MetaError> {
        self.sm.active_jobs()
    }

    /// Returns every join token record, from this node's catalog.
    pub fn join_tokens(&self) -> Result<Vec<cairn_core::job::JoinTokenRecord>, MetaError> {
        self.sm.join_tokens()
    }

    /// Returns every agent token record, from this node's catalog.
    pub fn tokens(&self) -> Result<Vec<cairn_core::job::TokenRecord>, MetaError> {
        self.sm.tokens()
    }

    /// Returns an agent token record, from this node's catalog.
    pub fn token(&self, id: &str) -> Result<Option<cairn_core::job::TokenRecord>, MetaError> {
        self.sm.token(id)
    }

    /// Returns the raft handle, for the node's raft RPC service.
    pub fn raft(&self) -> &openraft::Raft<TypeConfig> {
        &self.raft
    }

    /// Returns the node's current raft metrics (term, leader, indexes, membership).
    pub fn metrics(&self) -> MetaMetrics {
        self.raft.metrics().borrow().clone()
    }

    /// Resolves when the raft task has stopped for good on an error it cannot recover from
    /// (its storage failed: a metadata write hit a full disk, say), with the reason. A node
    /// in that state answers nothing useful until it is restarted.
    pub async fn fatal(&self) -> String {
        let mut rx = self.raft.metrics();
        loop {
            if let Err(e) = &rx.borrow().running_state {
                return e.to_string();
            }
            if rx.changed().await.is_err() {
                return "the metadata raft task ended".to_string();
            }
        }
    }

    /// Stops the raft task and makes the database durable.
    pub async fn shutdown(&self) -> Result<(), MetaError> {
        self.raft.shutdown().await.map_err(|e| {
            MetaError::Unavailable(format!("the metadata raft task did not stop cleanly: {e}"))
        })?;
        let sm = self.sm.clone();
        tokio::task::spawn_blocking(move || sm.flush_blocking())
            .await
            .map_err(|e| MetaError::Storage(format!("flush task failed: {e}")))??;
        tracing::info!(node_id = self.node_id, "metadata node stopped");
        Ok(())
    }
}

/// Opens the database on a blocking thread, waiting a little for a lock that a previous
/// instance in this process is about to release.
async fn open_db_waiting(dir: PathBuf) -> Result<sled::Db, MetaError> {
    let deadline = Instant::now() + OPEN_LOCK_WAIT;
    loop {
        let d = dir.clone();
        let res = tokio::task::spawn_blocking(move || store::open_db(&d))
            .await
            .map_err(|e| MetaError::Storage(format!("open task failed: {e}")))?;
        match res {
            Err(MetaError::InUse(_)) if Instant::now() < deadline => {
                tokio::time::sleep(OPEN_LOCK_RETRY).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_core::ErrorCode;

    #[test]
    fn not_leader_names_the_leader_when_known() {
        let e = MetaError::NotLeader {
            leader_id: Some(2),
            leader_addr: Some("10.0.0.2:7700".into()),
        };
        assert_eq!(
            e.to_string(),
            "this node is not the metadata leader; the leader is node 2 at 10.0.0.2:7700"
        );
        assert_eq!(e.code(), ErrorCode::Unavailable);
        let e = MetaError::NotLeader {
            leader_id: None,
            leader_addr: None,
        };
        assert!(e.to_string().contains("retry shortly"));
    }

    #[test]
    fn bad_timings_are_refused_with_the_fields_named() {
        let mut cfg = MetaConfig::new("/tmp/x", 1, "127.0.0.1:7700");
        assert!(cfg.raft_config().is_ok());
        cfg.election_min_ms = 100;
        let err = cfg.raft_config().unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        assert!(err.to_string().contains("election_min_ms"), "{err}");
    }
}
