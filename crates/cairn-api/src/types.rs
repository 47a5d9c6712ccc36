//! The answers of the cluster API, as plain types over `cairn-core`: what callers read
//! instead of protobuf messages. Requests are the methods' arguments ([`JobRequest`] for the
//! one that has many).

use cairn_core::job::{EnvRecord, HostRecord, JobKind, JobOptions, JobState};
use cairn_core::{BackupRecord, ChunkId, EnvId};
use cairn_proto::pb;

use crate::error::Error;

/// One node's own view of itself and the cluster (`cairn cluster status`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStatus {
    pub node_id: u64,
    pub addr: String,
    /// The leader this node knows of, if any.
    pub leader: Option<u64>,
    pub term: u64,
    /// The last raft entry this node applied.
    pub commit_index: u64,
    /// The last entry in this node's raft log.
    pub last_log_index: u64,
    pub chunks: u64,
    pub stored_bytes: u64,
    pub logical_bytes: u64,
    pub backups: u64,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub role: String,
    pub voter: bool,
    pub voters: Vec<u64>,
    pub zone: String,
    /// The placement epoch in force on this node.
    pub epoch: u64,
    /// Copies the last repair pass could not make.
    pub repair_backlog: u64,
    pub draining: bool,
    /// Empty before the node joined a cluster.
    pub cluster_id: String,
    /// BLAKE3 of this node's catalog as applied up to `catalog_index`.
    pub catalog_digest: String,
    pub catalog_index: u64,
    /// The newest scrub, GC (coordinated, and this node's sweep) and repair runs of the node.
    pub last_runs: cairn_core::runs::LastRuns,
    /// Backup records this node answered to list calls since it started.
    pub backups_listed: u64,
}

impl From<pb::NodeStatusResponse> for NodeStatus {
    fn from(s: pb::NodeStatusResponse) -> Self {
        NodeStatus {
            node_id: s.node_id,
            addr: s.addr,
            leader: s.leader,
            term: s.term,
            commit_index: s.commit_index,
            last_log_index: s.last_log_index,
            chunks: s.chunks,
            stored_bytes: s.stored_bytes,
            logical_bytes: s.logical_bytes,
            backups: s.backups,
            role: s.role,
            voter: s.voter,
            voters: s.voters,
            zone: s.zone,
            epoch: s.epoch,
            repair_backlog: s.repair_backlog,
            draining: s.draining,
            cluster_id: s.cluster_id,
            catalog_digest: s.catalog_digest,
            catalog_index: s.catalog_index,
            last_runs: s.last_runs.map(Into::into).unwrap_or_default(),
            backups_listed: s.backups_listed,
        }
    }
}

/// One page of backups, newest first ([`crate::Client::list_page`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BackupPage {
    pub backups: Vec<BackupRecord>,
    /// The cursor of the next page (pass it as `before`); `None`: this was the last.
    pub next: Option<cairn_core::BackupId>,
    /// The totals of every backup the pages walk (the environment's, or the catalog's).
    pub totals: cairn_core::totals::BackupTotals,
}

/// What an upload stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PutReport {
    pub stored: u64,
    pub duplicate: u64,
    pub bytes_written: u64,
    /// Copies written on other owners.
    pub replicated: u64,
}

impl From<pb::PutResponse> for PutReport {
    fn from(p: pb::PutResponse) -> Self {
        PutReport {
            stored: p.stored,
            duplicate: p.duplicate,
            bytes_written: p.bytes_written,
            replicated: p.replicated,
        }
    }
}

/// What a garbage collection did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    pub backups: u64,
    pub referenced: u64,
    pub removed: u64,
    pub bytes_reclaimed: u64,
    pub segments_compacted: u64,
    /// Nodes that did not answer and were not swept.
    pub nodes_skipped: Vec<u64>,
}

impl From<pb::GcReport> for GcReport {
    fn from(r: pb::GcReport) -> Self {
        GcReport {
            backups: r.backups,
            referenced: r.referenced,
            removed: r.removed,
            bytes_reclaimed: r.bytes_reclaimed,
            segments_compacted: r.segments_compacted,
            nodes_skipped: r.nodes_skipped,
        }
    }
}

/// What a scrub of one node found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScrubReport {
    pub checked: u64,
    pub corrupt: u64,
    pub repaired: u64,
    /// Corrupt copies no other node could replace (kept, never served).
    pub unrepaired: Vec<ChunkId>,
    /// Copies whose read failed with an I/O error (kept, read again next time).
    pub unreadable: Vec<ChunkId>,
}

impl TryFrom<pb::ScrubResponse> for ScrubReport {
    type Error = Error;
    fn try_from(r: pb::ScrubResponse) -> Result<Self, Error> {
        let ids = |v: Vec<Vec<u8>>| -> Result<Vec<ChunkId>, Error> {
            v.iter()
                .map(|b| cairn_proto::chunk_id(b).map_err(Error::from))
                .collect()
        };
        Ok(ScrubReport {
            checked: r.checked,
            corrupt: r.corrupt,
            repaired: r.repaired,
            unrepaired: ids(r.unrepaired)?,
            unreadable: ids(r.unreadable)?,
        })
    }
}

/// What a repair pass on one node did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RepairReport {
    pub epoch: u64,
    pub checked: u64,
    /// Copies written on owners that lacked them.
    pub pushed: u64,
    /// Local copies dropped because their owners hold them.
    pub dropped: u64,
    /// Copies still to make.
    pub backlog: u64,
    /// Chunks the node stores after the pass.
    pub chunks: u64,
}

impl From<pb::RepairReport> for RepairReport {
    fn from(r: pb::RepairReport) -> Self {
        RepairReport {
            epoch: r.epoch,
            checked: r.checked,
            pushed: r.pushed,
            dropped: r.dropped,
            backlog: r.backlog,
            chunks: r.chunks,
        }
    }
}

/// The outcome of adding or removing a node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    pub node_id: u64,
    /// The placement epoch after the change.
    pub epoch: u64,
    /// Chunks copied off a removed node while it drained.
    pub moved: u64,
}

impl From<pb::MembershipResponse> for Membership {
    fn from(r: pb::MembershipResponse) -> Self {
        Membership {
            node_id: r.node_id,
            epoch: r.epoch,
            moved: r.moved,
        }
    }
}

/// A host as the cluster lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct Host {
    pub record: HostRecord,
    /// Its agent registered recently (decided by the node answering).
    pub online: bool,
}

impl TryFrom<pb::Host> for Host {
    type Error = Error;
    fn try_from(h: pb::Host) -> Result<Self, Error> {
        let online = h.online;
        Ok(Host {
            record: HostRecord::try_from(h)?,
            online,
        })
    }
}

/// An environment as the cluster lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct Env {
    pub record: EnvRecord,
    /// Its latest backup, if any.
    pub latest: Option<BackupRecord>,
    /// Its host's agent is online.
    pub host_online: bool,
    /// How many backups it has.
    pub backups: u64,
}

impl TryFrom<pb::Env> for Env {
    type Error = Error;
    fn try_from(mut e: pb::Env) -> Result<Self, Error> {
        let latest = e.latest.take().map(BackupRecord::try_from).transpose()?;
        let host_online = e.host_online;
        let backups = e.backups;
        Ok(Env {
            record: EnvRecord::try_from(e)?,
            latest,
            host_online,
            backups,
        })
    }
}

/// A join token (`cairn agent join-token create`): it enrolls one agent, once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JoinToken {
    pub id: String,
    /// The host the agent it enrolls is bound to.
    pub host: String,
    /// `cairn-join.<id>.<secret>`: only in the answer that created it.
    pub token: String,
    /// Unix milliseconds after which it no longer enrolls.
    pub expires_ms: i64,
}

impl From<pb::JoinToken> for JoinToken {
    fn from(t: pb::JoinToken) -> Self {
        JoinToken {
            id: t.id,
            host: t.host,
            token: t.token,
            expires_ms: t.expires_ms,
        }
    }
}

/// A join token as `cairn agent join-token list` shows it: never the token or its hash.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JoinTokenInfo {
    pub id: String,
    pub host: String,
    pub created_ms: i64,
    /// Redemptions at or after this time are refused.
    pub expires_ms: i64,
    /// When it was redeemed, and the id of the agent token it gave.
    pub redeemed: Option<(i64, String)>,
}

impl JoinTokenInfo {
    /// `used` once redeemed, else `expired` at or after its expiry, else `unused`.
    pub fn state(&self, now_ms: i64) -> &'static str {
        if self.redeemed.is_some() {
            "used"
        } else if now_ms >= self.expires_ms {
            "expired"
        } else {
            "unused"
        }
    }
}

impl From<pb::JoinTokenInfo> for JoinTokenInfo {
    fn from(t: pb::JoinTokenInfo) -> Self {
        JoinTokenInfo {
            id: t.id,
            host: t.host,
            created_ms: t.created_ms,
            expires_ms: t.expires_ms,
            redeemed: (t.redeemed_ms != 0 || !t.agent_token_id.is_empty())
                .then_some((t.redeemed_ms, t.agent_token_id)),
        }
    }
}

/// An agent token as listed (the secret itself only in the answer that created it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentToken {
    pub id: String,
    pub host: String,
    /// Only when just created.
    pub token: Option<String>,
    pub created_ms: i64,
}

impl From<pb::AgentToken> for AgentToken {
    fn from(t: pb::AgentToken) -> Self {
        AgentToken {
            id: t.id,
            host: t.host,
            token: (!t.token.is_empty()).then_some(t.token),
            created_ms: t.created_ms,
        }
    }
}

/// A user token as listed (the secret itself only in the answer that created it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserToken {
    pub id: String,
    pub name: String,
    pub role: String,
    /// Only when just created.
    pub token: Option<String>,
    pub created_ms: i64,
}

impl From<pb::UserToken> for UserToken {
    fn from(t: pb::UserToken) -> Self {
        UserToken {
            id: t.id,
            name: t.name,
            role: t.role,
            token: (!t.token.is_empty()).then_some(t.token),
            created_ms: t.created_ms,
        }
    }
}

/// A request for a job.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRequest {
    pub kind: JobKind,
    pub env: EnvId,
    pub options: JobOptions,
    /// A restore onto another host than the environment's.
    pub host: Option<String>,
    /// Chosen once per request and kept across retries: it becomes the job's id, and a retry
    /// after a lost answer gets the job the first attempt created.
    pub request_id: Option<uuid::Uuid>,
}

impl JobRequest {
    /// A request of `kind` for `env` with default options.
    pub fn new(kind: JobKind, env: EnvId) -> JobRequest {
        JobRequest {
            kind,
            env,
            options: JobOptions::default(),
            host: None,
            request_id: None,
        }
    }

    pub(crate) fn to_wire(&self) -> pb::CreateJobRequest {
        pb::CreateJobRequest {
            kind: self.kind.as_str().to_string(),
            env: self.env.to_string(),
            options: Some(pb::JobOptions::from(&self.options)),
            host: self.host.clone().unwrap_or_default(),
            request_id: self.request_id.map(|u| u.to_string()).unwrap_or_default(),
        }
    }
}

/// Which jobs to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobFilter {
    pub env: Option<EnvId>,
    pub state: Option<JobState>,
    /// At most this many, newest first (0: the node's default, 100).
    pub limit: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_core::job::{Job, JobOptions, Replace};
    use cairn_core::{BackupId, BackupType};

    #[test]
    fn a_job_request_goes_on_the_wire_with_its_kind_and_options() {
        let env = EnvId::derive("h1/101");
        let mut req = JobRequest::new(JobKind::SelectiveRestore, env);
        req.options = JobOptions {
            backup: Some(BackupId::new(env, 1_700_000_000)),
            paths: vec!["etc/hosts".into()],
            replace: Some(Replace::Oldest),
            backup_type: Some(BackupType::Differential),
            ..Default::default()
        };
        req.host = Some("h2".into());
        let id = uuid::Uuid::from_u128(7);
        req.request_id = Some(id);
        let w = req.to_wire();
        assert_eq!(w.kind, "selective_restore");
        assert_eq!(w.env, env.to_string());
        assert_eq!(w.host, "h2");
        assert_eq!(w.request_id, id.to_string());
        let back = JobOptions::try_from(w.options.unwrap()).unwrap();
        assert_eq!(back, req.options);
        // Unset host and request id are empty on the wire.
        let w = JobRequest::new(JobKind::Backup, env).to_wire();
        assert_eq!((w.host.as_str(), w.request_id.as_str()), ("", ""));
    }

    #[test]
    fn a_job_answer_keeps_what_only_the_answering_node_knows() {
        let env = EnvId::derive("h1/101");
        let job = Job::new(
            uuid::Uuid::from_u128(9),
            JobKind::Backup,
            env,
            "h1".into(),
            "admin".into(),
            JobOptions::default(),
            1,
            60_000,
        );
        let mut wire = pb::Job::from(&job);
        wire.waiting = "host h1 is offline".into();
        let v = crate::JobView::try_from(wire.clone()).unwrap();
        assert_eq!(v.job, job);
        assert_eq!(v.waiting.as_deref(), Some("host h1 is offline"));
        wire.waiting.clear();
        assert_eq!(crate::JobView::try_from(wire).unwrap().waiting, None);
    }

    #[test]
    fn join_tokens_are_listed_with_every_field_but_their_hash() {
        let mut record = cairn_core::job::JoinTokenRecord {
            id: "j1".into(),
            host: "hn1".into(),
            hash: "ab".repeat(32),
            created_ms: 5,
            expires_ms: 10,
            redeemed: None,
        };
        let info = JoinTokenInfo::from(pb::JoinTokenInfo::from(&record));
        assert_eq!(
            (
                info.id.as_str(),
                info.host.as_str(),
                info.created_ms,
                info.expires_ms
            ),
            ("j1", "hn1", 5, 10)
        );
        assert_eq!(info.redeemed, None);
        assert_eq!((info.state(9), info.state(10)), ("unused", "expired"));
        record.redeemed = Some((7, "a1".into()));
        let info = JoinTokenInfo::from(pb::JoinTokenInfo::from(&record));
        assert_eq!(info.redeemed, Some((7, "a1".to_string())));
        assert_eq!(info.state(99), "used");
    }

    #[test]
    fn malformed_answers_are_errors_not_panics() {
        let bad = pb::ScrubResponse {
            unrepaired: vec![vec![1, 2, 3]],
            ..Default::default()
        };
        assert_eq!(
            ScrubReport::try_from(bad).unwrap_err().code(),
            cairn_core::ErrorCode::Internal
        );
        let good = pb::ScrubResponse {
            checked: 3,
            unreadable: vec![vec![7; 32]],
            ..Default::default()
        };
        let r = ScrubReport::try_from(good).unwrap();
        assert_eq!((r.checked, r.unreadable.len()), (3, 1));
        let host = pb::Host {
            id: "h1".into(),
            envs: vec!["not an id".into()],
            ..Default::default()
        };
        assert!(Host::try_from(host).is_err());
    }

    #[test]
    fn a_token_is_shown_only_when_the_answer_holds_it() {
        let listed = AgentToken::from(pb::AgentToken {
            id: "t1".into(),
            host: "h1".into(),
            token: String::new(),
            created_ms: 5,
        });
        assert_eq!(listed.token, None);
        let made = UserToken::from(pb::UserToken {
            id: "t2".into(),
            token: "secret".into(),
            ..Default::default()
        });
        assert_eq!(made.token.as_deref(), Some("secret"));
    }
}
