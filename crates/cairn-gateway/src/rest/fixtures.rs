//! Records and routers the unit tests of the REST adapter share (golden files, OpenAPI).

use std::sync::Arc;

use cairn_core::job::{EnvRecord, HostRecord};
use cairn_core::{BackupRecord, BackupState, BackupType, Compression};

use super::model::Uris;
use crate::users::{Role, Users, UsersFile};

pub const EID: &str = "6f1c0d9e-2b1a-4d7e-9a55-0c3b8e1f7a21";

pub fn uris() -> Uris {
    Uris {
        base: "http://backup.example:8080".to_string(),
    }
}

pub fn env() -> EnvRecord {
    EnvRecord {
        eid: EID.parse().unwrap(),
        host: "node-a".into(),
        name: "101".into(),
        path: "/vz/private/101".into(),
        title: "web01".into(),
        hostname: "web01.example".into(),
        ip: vec!["10.0.0.11".into()],
        os: "debian-12".into(),
        description: "front web server".into(),
        kind: "virtuozzo".into(),
    }
}

pub fn host() -> HostRecord {
    HostRecord {
        id: "node-a".into(),
        hostname: "node-a.dc1".into(),
        addrs: vec!["10.0.0.1".into()],
        seen_ms: 1_795_000_000_000,
        version: "0.1.0".into(),
        max_jobs: 2,
        envs: vec![EID.parse().unwrap()],
    }
}

/// A complete full backup of [`env`] taken at `stamp` (`YYYYMMDDhhmmss`).
pub fn backup_at(stamp: &str, name: &str) -> BackupRecord {
    BackupRecord {
        id: format!("{EID}/{stamp}").parse().unwrap(),
        kind: BackupType::Full,
        parent: None,
        name: name.into(),
        description: "before upgrade".into(),
        tags: vec!["nightly".into()],
        manifest: cairn_core::ChunkId::of(b"manifest"),
        logical_size: 1_048_576,
        stored_size: 524_288,
        file_count: 12,
        chunk_count: 5,
        state: BackupState::Complete,
        errors: Vec::new(),
        error_count: 0,
        compression: Compression::default(),
        host: "node-a".into(),
        source: "/vz/private/101".into(),
        env_info: env().info(),
        includes: Vec::new(),
        excludes: Vec::new(),
        protected: false,
    }
}

/// The real router over a gateway that has not reached any cluster (cluster calls answer
/// 503), with these users.
pub fn router(
    users: &[(&str, Role, &str)],
    public_url: Option<&str>,
    max_body_bytes: usize,
) -> axum::Router {
    router_over(Arc::new(users_of(users)), public_url, max_body_bytes)
}

/// These users (name, role, password), with the default login limits.
pub fn users_of(users: &[(&str, Role, &str)]) -> Users {
    let mut file = UsersFile::default();
    for (name, role, password) in users {
        file.add(name, *role, password).expect("a test user");
    }
    Users::from_list(file)
}

/// [`router`] over users the test keeps a handle on.
pub fn router_over(
    users: Arc<Users>,
    public_url: Option<&str>,
    max_body_bytes: usize,
) -> axum::Router {
    let state = super::RestState {
        link: crate::ClusterLink::default(),
        users,
        public_url: public_url.map(str::to_string),
        tls: false,
        local: "127.0.0.1:8080".parse().unwrap(),
        max_body_bytes,
    };
    super::router(Arc::new(state))
}
