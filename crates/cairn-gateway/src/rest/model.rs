//! The Sun Cloud API representations, built from catalog records by pure functions (the
//! golden tests pin every one of them byte for byte).
//!
//! URIs are opaque to clients, so their shape is ours; every representation carries the
//! absolute URIs a client follows:
//!
//! | resource | path |
//! |---|---|
//! | Cloud | `/` |
//! | VDC (the storage cluster) | `/vdc` |
//! | root Cluster, host Cluster | `/clusters`, `/clusters/{host}` |
//! | VM (one environment) | `/vms/{eid}` (`/back_up`, `/backups`) |
//! | Backup | `/vms/{eid}/backups/{YYYYMMDDhhmmss}` (`/restore`) |
//! | Status (one cluster job) | `/statuses/{job id}` |
//! | versions | `/versions` |

use cairn_api::browse::{Listing, Node};
use cairn_core::job::{EnvRecord, HostRecord, Job, JobKind, JobState};
use cairn_core::{BackupId, BackupRecord, EnvId, ErrorCode};
use serde::Serialize;

/// The version of the Sun Cloud API this adapter implements.
pub const SPEC_VERSION: &str = "0.1";

/// `application/vnd.com.sun.cloud.<Type>+json`.
pub fn media(kind: &str) -> String {
    format!("application/vnd.com.sun.cloud.{kind}+json")
}

/// The error media type.
pub const MESSAGES: &str = "common.Messages";

/// Percent-encodes everything but RFC 3986's unreserved characters (host ids in paths).
pub fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The absolute URIs of every resource, under one base (`http://host:port`, no slash).
#[derive(Clone, Debug)]
pub struct Uris {
    pub base: String,
}

impl Uris {
    pub fn cloud(&self) -> String {
        format!("{}/", self.base)
    }
    pub fn vdc(&self) -> String {
        format!("{}/vdc", self.base)
    }
    pub fn root_cluster(&self) -> String {
        format!("{}/clusters", self.base)
    }
    pub fn cluster(&self, host: &str) -> String {
        format!("{}/clusters/{}", self.base, pct(host))
    }
    pub fn vm(&self, env: EnvId) -> String {
        format!("{}/vms/{env}", self.base)
    }
    pub fn backup(&self, id: &BackupId) -> String {
        format!("{}/vms/{}/backups/{}", self.base, id.env, id.stamp())
    }
    pub fn status(&self, job: uuid::Uuid) -> String {
        format!("{}/statuses/{job}", self.base)
    }
    pub fn versions(&self) -> String {
        format!("{}/versions", self.base)
    }
    /// A path of a backup's tree (`""`: its root), each name percent-encoded.
    pub fn files(&self, id: &BackupId, path: &str) -> String {
        let mut uri = format!("{}/files", self.backup(id));
        for name in path.split('/').filter(|n| !n.is_empty()) {
            uri.push('/');
            uri.push_str(&pct(name));
        }
        uri
    }
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Link {
    pub name: String,
    pub uri: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Cloud {
    pub uri: String,
    pub vdcs: Vec<Link>,
    pub specification_version: Vec<String>,
    pub implementation_version: String,
    /// Extension: where `GET` finds the versions resource.
    pub versions: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Vdc {
    pub name: String,
    pub uri: String,
    pub description: String,
    pub cluster: Cluster,
    pub addresses: Vec<String>,
    pub volumes: Vec<String>,
    pub tags: Vec<String>,
    pub vm_templates: Vec<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Cluster {
    pub name: String,
    pub uri: String,
    /// Extension: a host cluster's hostname; empty for the root cluster.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    /// Extension: whether the host's agent registered recently (host clusters only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
    pub vms: Vec<Vm>,
    pub clusters: Vec<Link>,
    pub tags: Vec<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Vm {
    pub name: String,
    pub uri: String,
    /// Extension: the environment id (EID), as the XML adapter names it.
    pub id: String,
    pub description: String,
    pub cluster: String,
    /// Not reported by agents yet: left out rather than guessed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_status: Option<String>,
    pub hostname: String,
    pub os: String,
    /// Extension: the addresses the host reported for it.
    pub ip: Vec<String>,
    pub tags: Vec<String>,
    pub back_up: String,
    pub backups: Vec<Backup>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Backup {
    pub name: String,
    pub uri: String,
    pub id: String,
    pub description: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub created: String,
    pub restore: String,
    pub vm: String,
    pub tags: Vec<String>,
    pub size: u64,
    pub stored_size: u64,
    pub state: String,
    /// Extension: protected by an admin (nothing removes it).
    pub protected: bool,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Status {
    pub op: String,
    pub progress: u32,
    pub target_uri: String,
    pub status_uri: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Versions {
    pub uri: String,
    pub implementation_version: String,
    pub specification_version: Vec<String>,
}

/// One entry of an error body.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Message {
    pub text: String,
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    pub severity: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Messages {
    pub message: Vec<Message>,
}

pub fn implementation_version() -> String {
    format!("cairn {}", env!("CARGO_PKG_VERSION"))
}

pub fn cloud(u: &Uris, cluster_name: &str) -> Cloud {
    Cloud {
        uri: u.cloud(),
        vdcs: vec![Link {
            name: cluster_name.to_string(),
            uri: u.vdc(),
        }],
        specification_version: vec![SPEC_VERSION.to_string()],
        implementation_version: implementation_version(),
        versions: u.versions(),
    }
}

pub fn versions(u: &Uris) -> Versions {
    Versions {
        uri: u.versions(),
        implementation_version: implementation_version(),
        specification_version: vec![SPEC_VERSION.to_string()],
    }
}

/// The root cluster: one child cluster per host (linked, not embedded).
pub fn root_cluster(u: &Uris, hosts: &[HostRecord]) -> Cluster {
    Cluster {
        name: "hosts".to_string(),
        uri: u.root_cluster(),
        hostname: String::new(),
        online: None,
        vms: Vec::new(),
        clusters: hosts
            .iter()
            .map(|h| Link {
                name: h.id.clone(),
                uri: u.cluster(&h.id),
            })
            .collect(),
        tags: Vec::new(),
    }
}

pub fn vdc(u: &Uris, cluster_name: &str, nodes: usize, hosts: &[HostRecord]) -> Vdc {
    Vdc {
        name: cluster_name.to_string(),
        uri: u.vdc(),
        description: format!(
            "Cairn storage cluster of {nodes} node(s) holding the backups of {} host(s)",
            hosts.len()
        ),
        cluster: root_cluster(u, hosts),
        addresses: Vec::new(),
        volumes: Vec::new(),
        tags: Vec::new(),
        vm_templates: Vec::new(),
    }
}

/// A host cluster with its VMs; `backups` holds every backup of those VMs (any order).
pub fn host_cluster(
    u: &Uris,
    host: &HostRecord,
    online: bool,
    envs: &[EnvRecord],
    backups: &[BackupRecord],
) -> Cluster {
    Cluster {
        name: host.id.clone(),
        uri: u.cluster(&host.id),
        hostname: host.hostname.clone(),
        online: Some(online),
        vms: envs
            .iter()
            .filter(|e| e.host == host.id)
            .map(|e| vm(u, e, backups))
            .collect(),
        clusters: Vec::new(),
        tags: Vec::new(),
    }
}

/// A VM; `backups` may hold other environments' backups too (they are filtered out).
pub fn vm(u: &Uris, env: &EnvRecord, backups: &[BackupRecord]) -> Vm {
    let mut own: Vec<&BackupRecord> = backups.iter().filter(|b| b.id.env == env.eid).collect();
    own.sort_by_key(|b| b.id.time);
    Vm {
        name: if env.name.is_empty() {
            env.eid.to_string()
        } else {
            env.name.clone()
        },
        uri: u.vm(env.eid),
        id: env.eid.to_string(),
        description: if env.description.is_empty() {
            env.title.clone()
        } else {
            env.description.clone()
        },
        cluster: u.cluster(&env.host),
        run_status: None,
        hostname: env.hostname.clone(),
        os: env.os.clone(),
        ip: env.ip.clone(),
        tags: Vec::new(),
        back_up: format!("{}/back_up", u.vm(env.eid)),
        backups: own.into_iter().map(|b| backup(u, b)).collect(),
    }
}

/// The environment a VM stands for when no host runs it any more: what its latest backup
/// recorded.
pub fn env_from_backup(b: &BackupRecord) -> EnvRecord {
    EnvRecord {
        eid: b.id.env,
        host: b.host.clone(),
        name: b.env_info.name.clone(),
        path: b.source.clone(),
        title: b.env_info.title.clone(),
        hostname: b.env_info.hostname.clone(),
        ip: b.env_info.ip.clone(),
        os: b.env_info.os.clone(),
        description: String::new(),
        kind: b.env_info.kind.clone(),
    }
}

/// A backup's name: its own, or its id when it was given none (names are unique per VM).
pub fn backup_name(b: &BackupRecord) -> String {
    if b.name.is_empty() {
        b.id.to_string()
    } else {
        b.name.clone()
    }
}

pub fn backup(u: &Uris, b: &BackupRecord) -> Backup {
    let uri = u.backup(&b.id);
    Backup {
        name: backup_name(b),
        restore: format!("{uri}/restore"),
        uri,
        id: b.id.to_string(),
        description: b.description.clone(),
        kind: b.kind.as_str().to_string(),
        created: b.id.datetime().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        vm: u.vm(b.id.env),
        tags: b.tags.clone(),
        size: b.logical_size,
        stored_size: b.stored_size,
        protected: b.protected,
        state: b.state.as_str().to_string(),
    }
}

/// The Status `op` of a job.
pub fn op(kind: JobKind) -> &'static str {
    match kind {
        JobKind::Backup => "back_up",
        JobKind::Restore | JobKind::SelectiveRestore => "restore-Backup",
        JobKind::Delete => "delete-Backup",
        JobKind::Update => "update-Backup",
    }
}

/// A job as a Status. While it runs, `progress` is the agent's percent capped at 99; once
/// finished, `progress` is 100 and `status` the HTTP code of the outcome. `target_uri` is
/// the backup acted on, or made: for `back_up`, the new backup's URI from the first answer
/// (the catalog reserves its id when it admits the job, `Job::reserved_backup`; until the
/// job commits, a GET of that URI answers 404 and the Status is what one polls). Only a job
/// admitted before reservations existed names the VM until its commit.
pub fn status(u: &Uris, job: &Job) -> Status {
    let finished = matches!(
        job.state,
        JobState::Succeeded | JobState::Failed | JobState::Cancelled
    );
    let backup = job
        .result
        .backup
        .or(job.reserved_backup)
        .or(job.options.backup);
    let target_uri = backup.map_or_else(|| u.vm(job.env), |b| u.backup(&b));
    let (progress, code, message) = match job.state {
        JobState::Queued => (0, None, None),
        JobState::Running => (job.progress.percent.min(99), None, None),
        JobState::Succeeded => {
            let code = if job.kind == JobKind::Backup {
                201
            } else {
                200
            };
            let text = match job.kind {
                JobKind::Backup => match backup {
                    Some(b) => format!("backup {b} created"),
                    None => "backup created".to_string(),
                },
                JobKind::Restore | JobKind::SelectiveRestore => "restored".to_string(),
                JobKind::Delete => "deleted".to_string(),
                JobKind::Update => "updated".to_string(),
            };
            (100, Some(code), Some(text))
        }
        JobState::Failed => (100, Some(failure_code(job.code)), Some(job.reason.clone())),
        JobState::Cancelled => (
            100,
            Some(409),
            Some(if job.reason.is_empty() {
                "cancelled".to_string()
            } else {
                job.reason.clone()
            }),
        ),
    };
    debug_assert!(finished == (progress == 100));
    Status {
        op: op(job.kind).to_string(),
        progress,
        target_uri,
        status_uri: u.status(job.id),
        status: code,
        message,
    }
}

/// One object of a backup's tree (extension): the browser's [`Node`] and where `GET` finds
/// it (a directory's listing, a file's bytes).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FileNode {
    #[serde(flatten)]
    pub node: Node,
    pub uri: String,
}

/// One page of a directory of a backup (extension): the directory, its children sorted by
/// name, and the next page (`next` to pass as `after`, `next_uri` to follow), `null` on the
/// last page.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Files {
    pub dir: FileNode,
    pub entries: Vec<FileNode>,
    pub next: Option<String>,
    pub next_uri: Option<String>,
}

/// The representation of one page of a listing taken with `limit`.
pub fn files(u: &Uris, id: &BackupId, listing: Listing, limit: usize) -> Files {
    let node = |n: Node| FileNode {
        uri: u.files(id, &n.path),
        node: n,
    };
    let next_uri = listing.next.as_ref().map(|after| {
        format!(
            "{}?after={}&limit={limit}",
            u.files(id, &listing.dir.path),
            pct(after)
        )
    });
    Files {
        dir: node(listing.dir),
        entries: listing.entries.into_iter().map(node).collect(),
        next: listing.next,
        next_uri,
    }
}

/// The HTTP code of a failed job, from the stable code its failure carries (never from the
/// reason, which is for people): a conflict such as a name taken meanwhile or a restore with
/// `"force": false` that met a target in use or changed (409), something gone meanwhile
/// (404), a host whose agent never came (503). Anything else (the agent's own failure, an
/// agent that was lost, a failure recorded before jobs carried codes) is 500.
pub(crate) fn failure_code(code: Option<ErrorCode>) -> u16 {
    let Some(code) = code else { return 500 };
    match code {
        ErrorCode::DuplicateName
        | ErrorCode::TargetInUse
        | ErrorCode::TargetChanged
        | ErrorCode::Conflict
        | ErrorCode::JobRunning
        | ErrorCode::SessionExpired
        | ErrorCode::PlacementChanged
        | ErrorCode::Protected => 409,
        ErrorCode::NotFound
        | ErrorCode::BackupNotFound
        | ErrorCode::EnvNotFound
        | ErrorCode::HostNotFound
        | ErrorCode::JobNotFound
        | ErrorCode::PathNotFound => 404,
        ErrorCode::HostOffline => 503,
        ErrorCode::InvalidArgument
        | ErrorCode::ChunksMissing
        | ErrorCode::Corrupt
        | ErrorCode::DiskFull
        | ErrorCode::Unavailable
        | ErrorCode::Unauthenticated
        | ErrorCode::PermissionDenied
        | ErrorCode::AgentLost
        | ErrorCode::VersionMismatch
        | ErrorCode::Internal => 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed job's HTTP code follows the code it carries, never its reason: a reason
    /// reworded (or one that merely looks like another failure) answers the same.
    #[test]
    fn a_failed_jobs_status_follows_its_code() {
        assert_eq!(failure_code(Some(ErrorCode::DuplicateName)), 409);
        assert_eq!(failure_code(Some(ErrorCode::TargetInUse)), 409);
        assert_eq!(failure_code(Some(ErrorCode::TargetChanged)), 409);
        assert_eq!(failure_code(Some(ErrorCode::BackupNotFound)), 404);
        assert_eq!(failure_code(Some(ErrorCode::HostOffline)), 503);
        assert_eq!(failure_code(Some(ErrorCode::AgentLost)), 500);
        assert_eq!(failure_code(Some(ErrorCode::Internal)), 500);
        assert_eq!(failure_code(None), 500, "a failure recorded before codes");
        let u = Uris {
            base: "http://backup.example:8080".into(),
        };
        let env = EnvId::derive("h1/101");
        let mut job = Job::new(
            uuid::Uuid::from_u128(9),
            JobKind::Restore,
            env,
            "h1".into(),
            "admin".into(),
            cairn_core::job::JobOptions::default(),
            1_000,
            0,
        );
        job.claim("h1", 2_000, 9_000).unwrap();
        let mut changed = job.clone();
        changed
            .finish(
                Some("h1"),
                JobState::Failed,
                "the tree moved on; pass force to replace it".into(),
                Some(ErrorCode::TargetChanged),
                Default::default(),
                3_000,
            )
            .unwrap();
        assert_eq!(status(&u, &changed).status, Some(409));
        let mut looks_like = job;
        looks_like
            .finish(
                Some("h1"),
                JobState::Failed,
                "environment e already has a backup named \"n\"; restore with force".into(),
                Some(ErrorCode::Corrupt),
                Default::default(),
                3_000,
            )
            .unwrap();
        assert_eq!(status(&u, &looks_like).status, Some(500));
    }

    #[test]
    fn pct_keeps_unreserved_and_encodes_the_rest() {
        assert_eq!(pct("node-1.example_x~"), "node-1.example_x~");
        assert_eq!(pct("a/b c%"), "a%2Fb%20c%25");
        assert_eq!(pct("é"), "%C3%A9");
    }
}
