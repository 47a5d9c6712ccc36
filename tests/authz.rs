//! The authorization matrix: every row of `cairn_core::auth::TABLE` (gRPC methods, REST
//! routes, XML calls, dashboard routes), as every kind of caller, via the leader and via a follower, checked
//! against what the table says — never against expectations written per row.
//!
//! # The rig
//! Three `cairn node` voters with a cluster secret, each running a gateway (REST and XML)
//! with a viewer, an operator and an admin user. Hosts hn1 and hn2 each run a real agent over
//! one small directory environment (e1 on hn1, e2 on hn2); each is backed up once through a
//! job (b1, b2), then both agents are stopped so that no job the matrix queues is executed.
//! What the rows name is prepared with the agent tokens directly over gRPC: a backup job J1
//! of e1 that hn1 has claimed (so a commit by hn1 *can* be admitted: rule
//! `agent-commit-in-job`; it also keeps every further job of e1 a conflict, so no row waits
//! for an agent), a session hn1 opened (so `Gc` finds a blocking session and collects
//! nothing), and hn1's finished backup job Jf.
//!
//! # The callers
//! No credentials; a revoked user token; hn1's agent token (the host the requests name);
//! hn2's agent token; a viewer, an operator and an admin (user tokens over gRPC, users-file
//! logins over REST and XML); the cluster secret. REST and XML authenticate users only: the
//! token holders present their token (REST `Authorization: Bearer`, XML login with the token
//! as password) and must be refused.
//!
//! The dashboard (`/ui/…` on the REST listener) takes users only, by session: each user
//! signs in for each row (`POST /ui/login`) and sends the page's CSRF token with an action;
//! the other callers have no session, so a page sends them to the sign-in page (303) and an
//! action is refused (403). Its actions name a backup that does not exist, hn1's finished
//! job and a repair pass, so that an admitted one changes nothing that matters.
//!
//! # The verdicts
//! "Refused" is exactly gRPC `PermissionDenied`/`Unauthenticated`, REST 401/403, XML
//! 304/305/306; anything else got past authorization (a 404, a conflict, a bad argument, a
//! success). The expectation is `access.admits(principal)`: `Allowed` → not refused,
//! `Denied` → refused, `OwnHost` → allowed for hn1's agent and refused for hn2's (every
//! request names hn1's things). Callers without valid credentials are refused as
//! unauthenticated (gRPC `Unauthenticated`, REST 401, XML 304) except on `Public` rows; the
//! XML login itself is the authentication step, so a login with anything but a user's
//! password answers 305. The listings that filter instead of refusing (`FILTERING`) must show
//! an agent its own host's items only.
//!
//! Some rows get further requests (`grpc_variants`), judged by the same row: what a caller
//! may do must not depend on what the request carries (an empty upload stream, say).
//!
//! Every request is safe to send repeatedly: deletes name a backup of e1 that does not
//! exist, settings are set to what they were, membership changes name a node that does not
//! exist or an address that refuses, raft calls name a wrong target, job transitions name a
//! finished job, and `Sweep` has no GC start time.
//!
//! The matrix is printed (run with `--nocapture` to see it when it passes); with
//! `AUTHZ_MATRIX_DETAIL=1` every cell's answer is printed too. A mismatch fails the test
//! once, listing every differing cell: entry, caller, node, expected, got.

// Every call here answers tonic's `Status`, large as it is.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_core::auth::{Access, Admission, Interface, Principal, Role, Row, TABLE};
use cairn_proto::pb;
use cairn_proto::pb::agents_client::AgentsClient;
use cairn_proto::pb::catalog_client::CatalogClient;
use cairn_proto::pb::chunks_client::ChunksClient;
use cairn_proto::pb::raft_client::RaftClient;
use cairn_tests::fleet::{dir_host, start_agent, succeeded};
use cairn_tests::http::{self, basic};
use cairn_tests::{add_user, wait_for, Node, TestCluster};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status, Streaming};

const SECRET: &str = "authz-matrix-cluster-s3cret";
/// The users of the gateways' users file: (name, role, password).
const USERS: [(&str, Role, &str); 3] = [
    ("mx-viewer", Role::Viewer, "viewer-pass-1"),
    ("mx-operator", Role::Operator, "operator-pass-1"),
    ("mx-admin", Role::Admin, "admin-pass-1"),
];
/// The listings that leave out what a caller may not see instead of refusing it.
const FILTERING: [&str; 3] = ["Agents.ListHosts", "Agents.ListEnvs", "Agents.ListJobs"];
/// The XML login: the authentication step of that interface.
const XML_LOGIN: &str = "system/login";
/// The dashboard's sign-in, tried by every caller with what it has.
const UI_LOGIN: &str = "POST /ui/login";
/// How long one request may take before it counts as unanswered.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Marks an outcome that is the test's own failure (a preparation a row needs failed).
const SETUP: &str = "matrix setup failed: ";

// ---------------------------------------------------------------------------------------
// Callers and expectations
// ---------------------------------------------------------------------------------------

/// The kinds of caller every row is tried as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Who {
    Nobody,
    Revoked,
    OwnAgent,
    OtherAgent,
    Viewer,
    Operator,
    Admin,
    Cluster,
}

impl Who {
    const ALL: [Who; 8] = [
        Who::Nobody,
        Who::Revoked,
        Who::OwnAgent,
        Who::OtherAgent,
        Who::Viewer,
        Who::Operator,
        Who::Admin,
        Who::Cluster,
    ];

    fn label(self) -> &'static str {
        match self {
            Who::Nobody => "none",
            Who::Revoked => "revoked",
            Who::OwnAgent => "hn1",
            Who::OtherAgent => "hn2",
            Who::Viewer => "viewer",
            Who::Operator => "operator",
            Who::Admin => "admin",
            Who::Cluster => "cluster",
        }
    }

    /// The users-file user (and the user token's name) of a user caller.
    fn user(self) -> Option<(&'static str, Role, &'static str)> {
        match self {
            Who::Viewer => Some(USERS[0]),
            Who::Operator => Some(USERS[1]),
            Who::Admin => Some(USERS[2]),
            _ => None,
        }
    }

    /// The host an agent caller's token is bound to.
    fn host(self) -> Option<&'static str> {
        match self {
            Who::OwnAgent => Some("hn1"),
            Who::OtherAgent => Some("hn2"),
            _ => None,
        }
    }

    /// Whom a node should take a gRPC call with this caller's token for; `None`: nobody
    /// (no token, or a revoked one).
    fn grpc_principal(self) -> Option<Principal> {
        match self {
            Who::Nobody | Who::Revoked => None,
            Who::Cluster => Some(Principal::Cluster),
            _ => match (self.user(), self.host()) {
                (Some((name, role, _)), _) => Some(Principal::User {
                    name: name.into(),
                    role,
                }),
                (_, Some(host)) => Some(Principal::Agent { host: host.into() }),
                _ => None,
            },
        }
    }

    /// Whom a gateway of `adapter` (`rest`, `xml`) should take this caller for: its users
    /// only (tokens are no REST/XML credentials).
    fn gateway_principal(self, adapter: &str) -> Option<Principal> {
        self.user().map(|(name, role, _)| Principal::User {
            name: format!("{adapter}:{name}"),
            role,
        })
    }
}

/// What a listing must show the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    /// Items of both hosts.
    Everything,
    /// Items of the caller's own host, none of the other's.
    OwnHost(&'static str),
}

/// What the table says must happen.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expect {
    /// Gets past authorization.
    Through,
    /// Refused (any refusal).
    Refused,
    /// Refused with exactly this code: the caller is not authenticated.
    Unauthenticated(&'static str),
    /// Gets past authorization and lists exactly what the scope allows.
    Lists(Scope),
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::Through => f.write_str("not refused"),
            Expect::Refused => f.write_str("refused"),
            Expect::Unauthenticated(code) => write!(f, "refused as unauthenticated ({code})"),
            Expect::Lists(Scope::Everything) => f.write_str("lists the items of hn1 and hn2"),
            Expect::Lists(Scope::OwnHost(h)) => {
                write!(f, "lists the items of {h} and none of the other host's")
            }
        }
    }
}

/// The expectation for `who` calling `row`, from the table alone.
fn expect(row: &Row, who: Who) -> Expect {
    let admission = match row.interface {
        Interface::Grpc => match who.grpc_principal() {
            Some(p) => row.access.admits(&p),
            None => return Expect::Unauthenticated("Unauthenticated"),
        },
        Interface::Ui => match who.gateway_principal("ui") {
            // A wrong sign-in is the sign-in's own refusal (401).
            None if row.entry == UI_LOGIN => return Expect::Unauthenticated("401"),
            None if row.access == Access::Public => Admission::Allowed,
            // No session: a page sends to the sign-in page, an action is refused.
            None if row.entry.starts_with("GET ") => return Expect::Unauthenticated("303"),
            None => return Expect::Unauthenticated("403"),
            Some(p) => row.access.admits(&p),
        },
        // A node's metrics listener takes no credentials: a token changes nothing.
        Interface::Node => match who.grpc_principal() {
            Some(p) => row.access.admits(&p),
            None if row.access == Access::Public => Admission::Allowed,
            None => return Expect::Unauthenticated("401"),
        },
        Interface::Rest | Interface::Xml => {
            let adapter = if row.interface == Interface::Rest {
                "rest"
            } else {
                "xml"
            };
            match who.gateway_principal(adapter) {
                Some(p) => row.access.admits(&p),
                // A login with anything but a user's password is the login's own refusal.
                None if row.entry == XML_LOGIN => return Expect::Unauthenticated("305"),
                None if row.access == Access::Public => Admission::Allowed,
                None if row.interface == Interface::Rest => return Expect::Unauthenticated("401"),
                None => return Expect::Unauthenticated("304"),
            }
        }
    };
    let listing = row.interface == Interface::Grpc && FILTERING.contains(&row.entry);
    match admission {
        Admission::Allowed if listing => Expect::Lists(Scope::Everything),
        Admission::Allowed => Expect::Through,
        Admission::Denied(_) => Expect::Refused,
        Admission::OwnHost => match who.host() {
            Some(h) if listing => Expect::Lists(Scope::OwnHost(h)),
            Some("hn1") => Expect::Through,
            _ => Expect::Refused,
        },
    }
}

/// What came back.
#[derive(Clone, Debug)]
struct Got {
    refused: bool,
    /// gRPC code name, HTTP status, XML error code (`ok` for none).
    code: String,
    message: String,
    /// For listings: the labels (`hn1`, `e2`, `J1`, …) of the known items listed.
    seen: Option<Vec<&'static str>>,
}

impl Got {
    fn setup_failed(&self) -> bool {
        self.message.starts_with(SETUP)
    }
}

/// The items of each host a listing may show.
fn items_of(host: &str) -> &'static [&'static str] {
    match host {
        "hn1" => &["hn1", "e1", "J1", "Jf"],
        _ => &["hn2", "e2", "J2"],
    }
}

/// Whether `got` is what `expected` asks for; `Err` says how it differs.
fn judge(expected: &Expect, got: &Got) -> Result<(), String> {
    if got.setup_failed() {
        return Err("the row's preparation failed".into());
    }
    match expected {
        Expect::Through if !got.refused => Ok(()),
        Expect::Refused if got.refused => Ok(()),
        Expect::Unauthenticated(code) if got.refused && got.code == *code => Ok(()),
        Expect::Lists(scope) if !got.refused => {
            let seen = got.seen.as_deref().unwrap_or_default();
            let any = |host: &str| items_of(host).iter().any(|i| seen.contains(i));
            let ok = match scope {
                Scope::Everything => any("hn1") && any("hn2"),
                Scope::OwnHost(own) => {
                    let other = if *own == "hn1" { "hn2" } else { "hn1" };
                    any(own) && !any(other)
                }
            };
            if ok {
                Ok(())
            } else {
                Err(format!("listed {seen:?}"))
            }
        }
        _ => Err(String::new()),
    }
}

// ---------------------------------------------------------------------------------------
// What the rows name
// ---------------------------------------------------------------------------------------

/// The things of hn1 (and hn2) the requests name, and the tokens.
struct Fx {
    e1: String,
    e2: String,
    /// b1 (`EID/STAMP`), its wire record and its manifest root chunk id.
    b1: String,
    b1_wire: pb::Backup,
    root: Vec<u8>,
    /// A backup id of e1 that does not exist.
    ghost: String,
    j1: String,
    jf: String,
    j2: String,
    hn1_host: pb::Host,
    hn1_envs: Vec<pb::Env>,
    e1_config: pb::EnvConfig,
    /// A valid chunk to upload.
    chunk: pb::Chunk,
    tokens: Tokens,
    /// Known ids and hosts → their labels.
    labels: HashMap<String, &'static str>,
}

impl Fx {
    fn b1_stamp(&self) -> &str {
        stamp(&self.b1)
    }

    fn ghost_stamp(&self) -> &str {
        stamp(&self.ghost)
    }

    /// The labels of the known items among `ids`.
    fn seen<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> Option<Vec<&'static str>> {
        Some(
            ids.into_iter()
                .filter_map(|i| self.labels.get(i).copied())
                .collect(),
        )
    }
}

fn stamp(backup: &str) -> &str {
    backup.rsplit('/').next().unwrap_or_default()
}

/// The credentials of every caller.
#[derive(Clone)]
struct Tokens {
    revoked: String,
    hn1: String,
    hn2: String,
    /// User tokens by user name.
    users: HashMap<&'static str, String>,
}

impl Tokens {
    /// The bearer token a caller presents (`None`: none at all).
    fn of(&self, who: Who) -> Option<String> {
        match who {
            Who::Nobody => None,
            Who::Revoked => Some(self.revoked.clone()),
            Who::OwnAgent => Some(self.hn1.clone()),
            Who::OtherAgent => Some(self.hn2.clone()),
            Who::Cluster => Some(SECRET.to_string()),
            _ => who.user().map(|(name, _, _)| self.users[name].clone()),
        }
    }

    /// The name and password a caller tries an XML login with.
    fn login(&self, who: Who) -> (String, String) {
        match (who.user(), who.host()) {
            (Some((name, _, password)), _) => (name.into(), password.into()),
            (_, Some(host)) => (host.into(), self.of(who).unwrap_or_default()),
            _ => match who {
                Who::Revoked => ("mx-revoked".into(), self.revoked.clone()),
                Who::Cluster => ("cluster".into(), SECRET.into()),
                _ => ("mx-nobody".into(), "no-password".into()),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------
// gRPC requests
// ---------------------------------------------------------------------------------------

type Seen = Option<Vec<&'static str>>;
type Fut = Pin<Box<dyn Future<Output = Result<Seen, Status>> + Send>>;
/// One row's request, sent on a connection as one caller.
type Probe = fn(Conn) -> Fut;

/// A plain channel to one node (no retries, no forwarding on this side) and a caller.
#[derive(Clone)]
struct Conn {
    ch: Channel,
    token: Option<String>,
    fx: Arc<Fx>,
}

impl Conn {
    fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        if let Some(t) = &self.token {
            let v = format!("Bearer {t}")
                .parse()
                .expect("a token is header text");
            r.metadata_mut().insert("authorization", v);
        }
        r
    }

    fn as_token(&self, token: &str) -> Conn {
        Conn {
            token: Some(token.to_string()),
            ..self.clone()
        }
    }

    fn catalog(&self) -> CatalogClient<Channel> {
        CatalogClient::new(self.ch.clone()).max_decoding_message_size(cairn_proto::MAX_MESSAGE)
    }

    fn agents(&self) -> AgentsClient<Channel> {
        AgentsClient::new(self.ch.clone()).max_decoding_message_size(cairn_proto::MAX_MESSAGE)
    }

    fn chunks(&self) -> ChunksClient<Channel> {
        ChunksClient::new(self.ch.clone()).max_decoding_message_size(cairn_proto::MAX_MESSAGE)
    }

    fn raft(&self) -> RaftClient<Channel> {
        RaftClient::new(self.ch.clone())
    }
}

fn unary<T>(r: Result<Response<T>, Status>) -> Result<Seen, Status> {
    r.map(|_| None)
}

/// A server stream's first message (or its error).
async fn first<T>(r: Result<Response<Streaming<T>>, Status>) -> Result<Seen, Status> {
    r?.into_inner().message().await.map(|_| None)
}

fn stream_of<T: Send + 'static>(
    items: Vec<T>,
) -> tonic::codegen::tokio_stream::Iter<std::vec::IntoIter<T>> {
    tonic::codegen::tokio_stream::iter(items)
}

fn setup(what: &str, e: Status) -> Status {
    Status::aborted(format!("{SETUP}{what}: {e}"))
}

macro_rules! probe {
    ($c:ident => $body:expr) => {
        Some((|$c: Conn| -> Fut { Box::pin(async move { $body }) }) as Probe)
    };
}

/// The request of every gRPC row; `None`: the row has no request here (a failure).
fn grpc_probe(entry: &str) -> Option<Probe> {
    match entry {
        "Chunks.Missing" => probe!(c => unary(
            c.chunks()
                .missing(c.req(pb::MissingRequest { ids: vec![c.fx.root.clone()], local: false }))
                .await,
        )),
        "Chunks.Missing(local)" => probe!(c => unary(
            c.chunks()
                .missing(c.req(pb::MissingRequest { ids: vec![c.fx.root.clone()], local: true }))
                .await,
        )),
        "Chunks.Mark" => probe!(c => unary(c.chunks().mark(c.req(pb::MarkRequest {})).await)),
        "Chunks.Put" => probe!(c => unary(
            c.chunks()
                .put(c.req(stream_of(vec![pb::PutRequest {
                    chunks: vec![c.fx.chunk.clone()],
                    replica: false,
                }])))
                .await,
        )),
        "Chunks.Put(replica)" => probe!(c => unary(
            c.chunks()
                .put(c.req(stream_of(vec![pb::PutRequest {
                    chunks: vec![c.fx.chunk.clone()],
                    replica: true,
                }])))
                .await,
        )),
        "Chunks.Get" => probe!(c => first(
            c.chunks()
                .get(c.req(pb::GetRequest {
                    ids: vec![c.fx.root.clone()],
                    backup: c.fx.b1.clone(),
                }))
                .await,
        )
        .await),
        "Chunks.Scrub" => probe!(c => unary(c.chunks().scrub(c.req(pb::ScrubRequest {})).await)),
        "Chunks.Repair" => {
            probe!(c => unary(c.chunks().repair(c.req(pb::RepairRequest {})).await))
        }
        "Chunks.Sweep" => probe!(c => unary(
            c.chunks()
                .sweep(c.req(stream_of(vec![pb::SweepRequest {
                    referenced: Vec::new(),
                    boot: String::new(),
                    seq: 0,
                }])))
                .await,
        )),
        // b1's manifest again, as J1's backup (a name makes every commit after the first
        // a conflict, so repeating it adds nothing).
        "Catalog.CommitBackup" => probe!(c => {
            let mut backup = c.fx.b1_wire.clone();
            backup.name = "matrix-commit".into();
            unary(
                c.catalog()
                    .commit_backup(c.req(pb::CommitBackupRequest {
                        backup: Some(backup),
                        job: c.fx.j1.clone(),
                        session: String::new(),
                    }))
                    .await,
            )
        }),
        "Catalog.ListBackups" => probe!(c => unary(
            c.catalog()
                .list_backups(c.req(pb::ListBackupsRequest { env: c.fx.e1.clone(), ..Default::default() }))
                .await,
        )),
        "Catalog.GetBackup" => probe!(c => unary(
            c.catalog()
                .get_backup(c.req(pb::BackupRef { id: c.fx.b1.clone() }))
                .await,
        )),
        "Catalog.DeleteBackup" => probe!(c => unary(
            c.catalog()
                .delete_backup(c.req(pb::BackupRef { id: c.fx.ghost.clone() }))
                .await,
        )),
        "Catalog.ProtectBackup" => probe!(c => unary(
            c.catalog()
                .protect_backup(c.req(pb::ProtectBackupRequest {
                    id: c.fx.b1.clone(),
                    protected: false,
                }))
                .await,
        )),
        "Catalog.LatestBackup" => probe!(c => unary(
            c.catalog()
                .latest_backup(c.req(pb::LatestBackupRequest {
                    env: c.fx.e1.clone(),
                    full_only: false,
                }))
                .await,
        )),
        "Catalog.NodeStatus" => probe!(c => unary(
            c.catalog().node_status(c.req(pb::NodeStatusRequest {})).await,
        )),
        "Catalog.GetPlacement" => probe!(c => unary(
            c.catalog().get_placement(c.req(pb::PlacementRequest {})).await,
        )),
        "Catalog.AddNode" => probe!(c => unary(
            c.catalog()
                .add_node(c.req(pb::AddNodeRequest {
                    addr: "127.0.0.1:1".into(),
                    zone: String::new(),
                    weight: 0,
                }))
                .await,
        )),
        // The setting the cluster already has: allowed callers change nothing.
        "Catalog.SetZoneRedundancy" => probe!(c => unary(
            c.catalog()
                .set_zone_redundancy(c.req(pb::SetZoneRedundancyRequest { zone_redundancy: 0 }))
                .await,
        )),
        "Catalog.RemoveNode" => probe!(c => unary(
            c.catalog()
                .remove_node(c.req(pb::RemoveNodeRequest { node_id: 999 }))
                .await,
        )),
        "Catalog.OpenSession" => probe!(c => unary(
            c.catalog()
                .open_session(c.req(pb::OpenSessionRequest {
                    env: c.fx.e1.clone(),
                    host: "hn1".into(),
                }))
                .await,
        )),
        // A fresh session of hn1's for every call: closing one that is gone changes nothing
        // and is allowed to anyone who may commit.
        "Catalog.CloseSession" => probe!(c => {
            let hn1 = c.as_token(&c.fx.tokens.hn1);
            let session = hn1
                .catalog()
                .open_session(hn1.req(pb::OpenSessionRequest {
                    env: c.fx.e1.clone(),
                    host: "hn1".into(),
                }))
                .await
                .map_err(|e| setup("hn1 opening a session", e))?
                .into_inner();
            unary(c.catalog().close_session(c.req(session)).await)
        }),
        // Renewing hn1's own fresh session; another's is refused by rule agent-own-session.
        "Catalog.RenewSession" => probe!(c => {
            let hn1 = c.as_token(&c.fx.tokens.hn1);
            let session = hn1
                .catalog()
                .open_session(hn1.req(pb::OpenSessionRequest {
                    env: c.fx.e1.clone(),
                    host: "hn1".into(),
                }))
                .await
                .map_err(|e| setup("hn1 opening a session", e))?
                .into_inner();
            unary(c.catalog().renew_session(c.req(session)).await)
        }),
        "Catalog.Gc" => probe!(c => unary(
            c.catalog().gc(c.req(pb::GcRequest { wait_secs: 1 })).await,
        )),
        "Catalog.GetEnvConfig" => probe!(c => unary(
            c.catalog()
                .get_env_config(c.req(pb::EnvRef {
                    env: c.fx.e1.clone(),
                    effective: true,
                }))
                .await,
        )),
        "Catalog.SetEnvConfig" => probe!(c => unary(
            c.catalog()
                .set_env_config(c.req(pb::SetEnvConfigRequest {
                    env: c.fx.e1.clone(),
                    config: Some(c.fx.e1_config.clone()),
                }))
                .await,
        )),
        "Agents.RegisterHost" => probe!(c => unary(
            c.agents()
                .register_host(c.req(pb::RegisterHostRequest {
                    host: Some(c.fx.hn1_host.clone()),
                    envs: c.fx.hn1_envs.clone(),
                }))
                .await,
        )),
        "Agents.ListHosts" => probe!(c => {
            let r = c.agents().list_hosts(c.req(pb::ListHostsRequest {})).await?;
            Ok(c.fx.seen(r.get_ref().hosts.iter().map(|h| h.id.as_str())))
        }),
        "Agents.ListEnvs" => probe!(c => {
            let r = c
                .agents()
                .list_envs(c.req(pb::ListEnvsRequest { host: String::new() }))
                .await?;
            Ok(c.fx.seen(r.get_ref().envs.iter().map(|e| e.eid.as_str())))
        }),
        "Agents.ListJobs" => probe!(c => {
            let r = c
                .agents()
                .list_jobs(c.req(pb::ListJobsRequest {
                    env: String::new(),
                    state: String::new(),
                    limit: 1000,
                }))
                .await?;
            Ok(c.fx.seen(r.get_ref().jobs.iter().map(|j| j.id.as_str())))
        }),
        "Agents.MoveEnv" => probe!(c => unary(
            c.agents()
                .move_env(c.req(pb::MoveEnvRequest {
                    eid: c.fx.e1.clone(),
                    host: "hn1".into(),
                }))
                .await,
        )),
        "Agents.CreateJob(backup)" => probe!(c => create_job(&c, "backup", None, Vec::new()).await),
        "Agents.CreateJob(restore)" => {
            probe!(c => create_job(&c, "restore", Some(c.fx.b1.clone()), Vec::new()).await)
        }
        "Agents.CreateJob(selective_restore)" => probe!(c => create_job(
            &c,
            "selective_restore",
            Some(c.fx.b1.clone()),
            vec!["etc/hostname".into()],
        )
        .await),
        "Agents.CreateJob(delete)" => {
            probe!(c => create_job(&c, "delete", Some(c.fx.ghost.clone()), Vec::new()).await)
        }
        "Agents.CreateJob(update)" => probe!(c => {
            let options = pb::JobOptions {
                backup: c.fx.ghost.clone(),
                edit: Some(pb::BackupEdit {
                    name: Some("matrix-edit".into()),
                    ..Default::default()
                }),
                ..Default::default()
            };
            unary(
                c.agents()
                    .create_job(c.req(pb::CreateJobRequest {
                        kind: "update".into(),
                        env: c.fx.e1.clone(),
                        options: Some(options),
                        host: String::new(),
                        request_id: String::new(),
                    }))
                    .await,
            )
        }),
        "Agents.GetJob" => probe!(c => unary(
            c.agents().get_job(c.req(pb::JobRef { id: c.fx.jf.clone() })).await,
        )),
        "Agents.WatchJob" => probe!(c => first(
            c.agents().watch_job(c.req(pb::JobRef { id: c.fx.jf.clone() })).await,
        )
        .await),
        "Agents.CancelJob" => probe!(c => unary(
            c.agents().cancel_job(c.req(pb::JobRef { id: c.fx.jf.clone() })).await,
        )),
        // The stream stays open while hn1 has no queued job: its headers are the answer.
        "Agents.AgentJobs" => probe!(c => unary(
            c.agents()
                .agent_jobs(c.req(pb::AgentJobsRequest { host: "hn1".into() }))
                .await,
        )),
        "Agents.ClaimJob" => probe!(c => unary(
            c.agents()
                .claim_job(c.req(pb::ClaimJobRequest {
                    id: c.fx.jf.clone(),
                    host: "hn1".into(),
                    lease_ms: 600_000,
                }))
                .await,
        )),
        "Agents.ReportProgress" => probe!(c => unary(
            c.agents()
                .report_progress(c.req(pb::ReportProgressRequest {
                    id: c.fx.jf.clone(),
                    host: "hn1".into(),
                    progress: Some(pb::JobProgress::default()),
                    lease_ms: 600_000,
                }))
                .await,
        )),
        "Agents.FinishJob" => probe!(c => unary(
            c.agents()
                .finish_job(c.req(pb::FinishJobRequest {
                    id: c.fx.jf.clone(),
                    host: "hn1".into(),
                    state: "failed".into(),
                    reason: "matrix".into(),
                    result: None,
                    code: String::new(),
                }))
                .await,
        )),
        "Agents.CreateAgentToken" => probe!(c => unary(
            c.agents()
                .create_agent_token(c.req(pb::CreateAgentTokenRequest {
                    host: "hn-probe".into(),
                }))
                .await,
        )),
        "Agents.ListAgentTokens" => probe!(c => unary(
            c.agents()
                .list_agent_tokens(c.req(pb::ListAgentTokensRequest {}))
                .await,
        )),
        "Agents.RevokeAgentToken" => probe!(c => unary(
            c.agents()
                .revoke_agent_token(c.req(pb::RevokeAgentTokenRequest {
                    id: "000000000000".into(),
                    host: String::new(),
                }))
                .await,
        )),
        "Agents.CreateUserToken" => probe!(c => unary(
            c.agents()
                .create_user_token(c.req(pb::CreateUserTokenRequest {
                    name: "mx-probe".into(),
                    role: "viewer".into(),
                }))
                .await,
        )),
        "Agents.ListUserTokens" => probe!(c => unary(
            c.agents()
                .list_user_tokens(c.req(pb::ListUserTokensRequest {}))
                .await,
        )),
        "Agents.RevokeUserToken" => probe!(c => unary(
            c.agents()
                .revoke_user_token(c.req(pb::RevokeUserTokenRequest {
                    id: String::new(),
                    name: "mx-nobody".into(),
                }))
                .await,
        )),
        "Agents.CreateJoinToken" => probe!(c => unary(
            c.agents()
                .create_join_token(c.req(pb::CreateJoinTokenRequest {
                    host: "hn-probe".into(),
                    ttl_ms: 600_000,
                }))
                .await,
        )),
        // No caller of the matrix holds a join token: the table refuses all but the cluster
        // secret, which gets past it and is then refused by the catalog as holding none
        // (invalid argument). A holder's own redemption is tested in tests/deploy.rs and
        // cairn_meta::join.
        "Agents.RedeemJoinToken" => probe!(c => unary(
            c.agents()
                .redeem_join_token(c.req(pb::RedeemJoinTokenRequest {
                    host: "hn-probe".into(),
                }))
                .await,
        )),
        "Agents.ListJoinTokens" => probe!(c => unary(
            c.agents()
                .list_join_tokens(c.req(pb::ListJoinTokensRequest {}))
                .await,
        )),
        // Names no join token: an admitted caller is told not found, nothing is revoked.
        "Agents.RevokeJoinToken" => probe!(c => unary(
            c.agents()
                .revoke_join_token(c.req(pb::RevokeJoinTokenRequest {
                    target: "hn-nobody".into(),
                }))
                .await,
        )),
        "Raft.AppendEntries" => probe!(c => unary(
            c.raft().append_entries(c.req(wrong_target())).await,
        )),
        "Raft.Vote" => probe!(c => unary(c.raft().vote(c.req(wrong_target())).await)),
        "Raft.InstallSnapshot" => probe!(c => unary(
            c.raft().install_snapshot(c.req(wrong_target())).await,
        )),
        _ => None,
    }
}

/// Further requests for some gRPC rows, each judged by its row's expectation: what a caller
/// may do must not depend on what the request carries. (row, variant, request)
fn grpc_variants() -> Vec<(&'static str, &'static str, Probe)> {
    vec![("Chunks.Put", "empty stream", |c: Conn| -> Fut {
        Box::pin(async move {
            unary(
                c.chunks()
                    .put(c.req(stream_of(Vec::<pb::PutRequest>::new())))
                    .await,
            )
        })
    })]
}

/// A raft request for a node that does not exist.
fn wrong_target() -> pb::RaftRequest {
    pb::RaftRequest {
        target: 999,
        payload: b"{}".to_vec(),
    }
}

async fn create_job(
    c: &Conn,
    kind: &str,
    backup: Option<String>,
    paths: Vec<String>,
) -> Result<Seen, Status> {
    let options = pb::JobOptions {
        backup: backup.unwrap_or_default(),
        paths,
        ..Default::default()
    };
    unary(
        c.agents()
            .create_job(c.req(pb::CreateJobRequest {
                kind: kind.into(),
                env: c.fx.e1.clone(),
                options: Some(options),
                host: String::new(),
                request_id: String::new(),
            }))
            .await,
    )
}

fn grpc_got(r: Result<Result<Seen, Status>, tokio::time::error::Elapsed>) -> Got {
    match r {
        Err(_) => Got {
            refused: false,
            code: "no answer".into(),
            message: format!("no answer within {CALL_TIMEOUT:?}"),
            seen: None,
        },
        Ok(Ok(seen)) => Got {
            refused: false,
            code: "OK".into(),
            message: String::new(),
            seen,
        },
        Ok(Err(s)) => Got {
            refused: matches!(s.code(), Code::PermissionDenied | Code::Unauthenticated),
            code: format!("{:?}", s.code()),
            message: s.message().to_string(),
            seen: None,
        },
    }
}

// ---------------------------------------------------------------------------------------
// REST requests
// ---------------------------------------------------------------------------------------

/// The request of every REST row: (method, path, JSON body); `None`: no request here.
fn rest_request(entry: &str, fx: &Fx) -> Option<(&'static str, String, &'static str)> {
    let e1 = &fx.e1;
    let b1 = fx.b1_stamp();
    let ghost = fx.ghost_stamp();
    Some(match entry {
        "GET /" => ("GET", "/".into(), ""),
        "GET /versions" => ("GET", "/versions".into(), ""),
        "GET /vdc" => ("GET", "/vdc".into(), ""),
        "GET /clusters" => ("GET", "/clusters".into(), ""),
        "GET /clusters/{host}" => ("GET", "/clusters/hn1".into(), ""),
        "GET /vms/{eid}" => ("GET", format!("/vms/{e1}"), ""),
        "POST /vms/{eid}/back_up" => ("POST", format!("/vms/{e1}/back_up"), "{}"),
        "GET /vms/{eid}/backups" => ("GET", format!("/vms/{e1}/backups"), ""),
        "GET /vms/{eid}/backups/{stamp}" => ("GET", format!("/vms/{e1}/backups/{b1}"), ""),
        "PUT /vms/{eid}/backups/{stamp}" => (
            "PUT",
            format!("/vms/{e1}/backups/{ghost}"),
            r#"{"tags":[]}"#,
        ),
        "DELETE /vms/{eid}/backups/{stamp}" => ("DELETE", format!("/vms/{e1}/backups/{ghost}"), ""),
        "POST /vms/{eid}/backups/{stamp}/restore" => {
            ("POST", format!("/vms/{e1}/backups/{b1}/restore"), "{}")
        }
        "GET /vms/{eid}/backups/{stamp}/files" => {
            ("GET", format!("/vms/{e1}/backups/{b1}/files"), "")
        }
        "GET /vms/{eid}/backups/{stamp}/files/{path}" => {
            ("GET", format!("/vms/{e1}/backups/{b1}/files/etc"), "")
        }
        "GET /statuses/{id}" => ("GET", format!("/statuses/{}", fx.jf), ""),
        "GET /healthz" => ("GET", "/healthz".into(), ""),
        "GET /metrics" => ("GET", "/metrics".into(), ""),
        "GET /openapi.json" => ("GET", "/openapi.json".into(), ""),
        _ => return None,
    })
}

/// The `Authorization` header a caller sends over REST: users their password, token
/// holders their token.
fn rest_auth(who: Who, tokens: &Tokens) -> Option<String> {
    match who.user() {
        Some((name, _, password)) => Some(basic(name, password)),
        None => tokens.of(who).map(|t| format!("Bearer {t}")),
    }
}

fn rest_call(base: &str, entry: &str, who: Who, fx: &Fx) -> Option<Got> {
    let (method, path, body) = rest_request(entry, fx)?;
    let auth = rest_auth(who, &fx.tokens);
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    if !body.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    let r = http::request(method, &format!("{base}{path}"), &headers, body.as_bytes());
    let text = r.text();
    Some(Got {
        refused: matches!(r.status, 401 | 403),
        code: r.status.to_string(),
        message: text.chars().take(300).collect(),
        seen: None,
    })
}

// ---------------------------------------------------------------------------------------
// A node's metrics listener
// ---------------------------------------------------------------------------------------

/// The request of every row of a node's own HTTP listener: (method, path).
fn node_request(entry: &str) -> Option<(&'static str, &'static str)> {
    match entry {
        "GET /metrics" => Some(("GET", "/metrics")),
        _ => None,
    }
}

/// Calls a node's metrics listener as `who` (token holders send their token, users their
/// user token: it must change nothing).
fn node_call(base: &str, entry: &str, who: Who, fx: &Fx) -> Option<Got> {
    let (method, path) = node_request(entry)?;
    let auth = fx.tokens.of(who).map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    let r = http::request(method, &format!("{base}{path}"), &headers, b"");
    // Anything but an answer or a refusal (a listener that is not there) is the rig's
    // failure, never a pass.
    let setup = if matches!(r.status, 200 | 401 | 403) {
        ""
    } else {
        SETUP
    };
    Some(Got {
        refused: matches!(r.status, 401 | 403),
        code: r.status.to_string(),
        message: format!("{setup}{}", r.text().chars().take(300).collect::<String>()),
        seen: None,
    })
}

// ---------------------------------------------------------------------------------------
// Dashboard requests
// ---------------------------------------------------------------------------------------

/// The request of every dashboard row: (method, path, form fields without the CSRF token);
/// `None`: no request here. Actions name things that make them cheap and harmless: a
/// backup that does not exist, a finished job, a repair pass.
fn ui_request(entry: &str, fx: &Fx) -> Option<(&'static str, String, String)> {
    let e1 = &fx.e1;
    let b1 = format!("{e1}/{}", fx.b1_stamp());
    let ghost = format!("{e1}/{}", fx.ghost_stamp());
    Some(match entry {
        "GET /ui" => ("GET", "/ui".into(), String::new()),
        "GET /ui/login" => ("GET", "/ui/login".into(), String::new()),
        // Filled in by `ui_call` with the caller's own credentials.
        "POST /ui/login" => ("POST", "/ui/login".into(), String::new()),
        "GET /ui/assets/{name}" => ("GET", "/ui/assets/app.css".into(), String::new()),
        "POST /ui/logout" => ("POST", "/ui/logout".into(), String::new()),
        "GET /ui/" => ("GET", "/ui/".into(), String::new()),
        "GET /ui/hosts" => ("GET", "/ui/hosts".into(), String::new()),
        "GET /ui/envs/{eid}" => ("GET", format!("/ui/envs/{e1}"), String::new()),
        "POST /ui/envs/{eid}/backup" => ("POST", format!("/ui/envs/{e1}/backup"), String::new()),
        "GET /ui/backups/{eid}/{stamp}" => ("GET", format!("/ui/backups/{b1}"), String::new()),
        "GET /ui/backups/{eid}/{stamp}/file" => (
            "GET",
            format!("/ui/backups/{b1}/file?path=etc%2Fhostname"),
            String::new(),
        ),
        "GET /ui/backups/{eid}/{stamp}/tar" => (
            "GET",
            format!("/ui/backups/{b1}/tar?path=etc"),
            String::new(),
        ),
        "GET /ui/backups/{eid}/{stamp}/restore" => {
            ("GET", format!("/ui/backups/{b1}/restore"), String::new())
        }
        "POST /ui/backups/{eid}/{stamp}/restore" => (
            "POST",
            format!("/ui/backups/{ghost}/restore"),
            "mode=inplace&confirm=yes".into(),
        ),
        "POST /ui/backups/{eid}/{stamp}/protect" => (
            "POST",
            format!("/ui/backups/{ghost}/protect"),
            "protected=false".into(),
        ),
        "POST /ui/backups/{eid}/{stamp}/delete" => {
            ("POST", format!("/ui/backups/{ghost}/delete"), String::new())
        }
        "GET /ui/jobs" => ("GET", "/ui/jobs".into(), String::new()),
        "GET /ui/jobs/{id}" => ("GET", format!("/ui/jobs/{}", fx.jf), String::new()),
        "POST /ui/jobs/{id}/cancel" => {
            ("POST", format!("/ui/jobs/{}/cancel", fx.jf), String::new())
        }
        "GET /ui/events/jobs" => (
            "GET",
            format!("/ui/events/jobs?ids={}", fx.jf),
            String::new(),
        ),
        "GET /ui/nodes" => ("GET", "/ui/nodes".into(), String::new()),
        "POST /ui/nodes/{what}" => ("POST", "/ui/nodes/repair".into(), String::new()),
        _ => return None,
    })
}

/// Signs a user in on the dashboard at `base`: its session cookie and CSRF token.
fn ui_session(base: &str, name: &str, password: &str) -> Option<(String, String)> {
    let body = format!("user={name}&password={password}");
    let r = http::request(
        "POST",
        &format!("{base}/ui/login"),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
    );
    let cookie = r.header("set-cookie")?.split(';').next()?.to_string();
    let page = http::request("GET", &format!("{base}/ui/"), &[("Cookie", &cookie)], b"");
    let text = page.text();
    let at = text.find("name=\"csrf-token\" content=\"")? + "name=\"csrf-token\" content=\"".len();
    let csrf = text[at..].split('"').next()?.to_string();
    Some((cookie, csrf))
}

/// A dashboard row as `who`: users sign in first (a session of their own for each row, so
/// that signing out ends only its own); every other caller has no session.
fn ui_call(base: &str, entry: &str, who: Who, fx: &Fx) -> Option<Got> {
    let (method, path, mut body) = ui_request(entry, fx)?;
    let user = who.user();
    if entry == UI_LOGIN {
        body = match user {
            Some((name, _, password)) => format!("user={name}&password={password}"),
            None => format!("user=mx-{}&password=not-a-password", who.label()),
        };
    }
    let session = match user {
        Some((name, _, password)) if entry != UI_LOGIN => match ui_session(base, name, password) {
            Some(s) => Some(s),
            None => {
                return Some(Got {
                    refused: false,
                    code: "no session".into(),
                    message: format!("{SETUP}the dashboard sign-in failed"),
                    seen: None,
                })
            }
        },
        _ => None,
    };
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some((cookie, csrf)) = &session {
        headers.push(("Cookie", cookie));
        if method == "POST" {
            body = if body.is_empty() {
                format!("csrf={csrf}")
            } else {
                format!("{body}&csrf={csrf}")
            };
        }
    }
    if method == "POST" {
        headers.push(("Content-Type", "application/x-www-form-urlencoded"));
    }
    let r = http::request(method, &format!("{base}{path}"), &headers, body.as_bytes());
    let to_login = r.status == 303
        && r.header("location")
            .is_some_and(|l| l.starts_with("/ui/login"))
        && entry != "POST /ui/logout";
    Some(Got {
        refused: matches!(r.status, 401 | 403) || to_login,
        code: r.status.to_string(),
        message: r.text().chars().take(300).collect(),
        seen: None,
    })
}

// ---------------------------------------------------------------------------------------
// XML requests
// ---------------------------------------------------------------------------------------

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The request of every XML row: (interface, the call's element); `None`: no request here.
fn xml_request(entry: &str, fx: &Fx, login: &(String, String)) -> Option<(&'static str, String)> {
    let (e1, b1, ghost) = (&fx.e1, &fx.b1, &fx.ghost);
    Some(match entry {
        "system/get_realm" => ("system", "<get_realm/>".into()),
        "system/login" => ("system", login_call(&login.0, &login.1)),
        "system/cancel" => (
            "system",
            "<cancel><message_id>matrix-none</message_id></cancel>".into(),
        ),
        "backupm/list" => (
            "backupm",
            format!("<list><options><eid>{e1}</eid></options></list>"),
        ),
        "backupm/search" => (
            "backupm",
            "<search><options><hostname>*</hostname></options></search>".into(),
        ),
        "backupm/get_info" => (
            "backupm",
            format!("<get_info><backup_id>{b1}</backup_id></get_info>"),
        ),
        "backupm/get_config" => ("backupm", "<get_config/>".into()),
        // Nothing named: the settings are written back as they are.
        "backupm/set_config" => (
            "backupm",
            "<set_config><backupm_config/></set_config>".into(),
        ),
        "backupm/remove" => (
            "backupm",
            format!("<remove><backup_id>{ghost}</backup_id></remove>"),
        ),
        "backupm/protect" => (
            "backupm",
            format!("<protect><backup_id>{b1}</backup_id><protected>0</protected></protect>"),
        ),
        "backupm/backup_env" => (
            "backupm",
            format!("<backup_env><env_list><eid>{e1}</eid></env_list></backup_env>"),
        ),
        "backupm/backup_env(remove)" => (
            "backupm",
            format!(
                "<backup_env><env_list><eid>{e1}</eid></env_list><backup_options><remove/></backup_options></backup_env>"
            ),
        ),
        "backupm/restore_env" => (
            "backupm",
            format!("<restore_env><backup_id>{b1}</backup_id></restore_env>"),
        ),
        "backupm/selective_restore_env" => (
            "backupm",
            format!(
                "<selective_restore_env><backup_id>{b1}</backup_id><path>{}</path></selective_restore_env>",
                b64("etc/hostname")
            ),
        ),
        _ => return None,
    })
}

fn login_call(name: &str, password: &str) -> String {
    format!(
        "<login><name>{}</name><realm>00000000-0000-0000-0000-000000000000</realm><password>{}</password></login>",
        b64(name),
        b64(password)
    )
}

/// A raw XML client: NUL-framed packets over one TCP connection.
struct XmlClient {
    s: TcpStream,
    buf: Vec<u8>,
    next: u64,
}

impl XmlClient {
    fn connect(addr: &str) -> XmlClient {
        let s = TcpStream::connect(addr).expect("connect to the XML listener");
        s.set_read_timeout(Some(CALL_TIMEOUT))
            .expect("read timeout");
        let mut c = XmlClient {
            s,
            buf: Vec::new(),
            next: 0,
        };
        let greeting = c.packet().expect("the XML greeting");
        assert!(greeting.contains("packet"), "{greeting}");
        c
    }

    /// The next packet, or `None` when the connection ends or times out.
    fn packet(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == 0) {
                let p: Vec<u8> = self.buf.drain(..=i).collect();
                return Some(String::from_utf8_lossy(&p[..p.len() - 1]).into_owned());
            }
            let mut chunk = [0u8; 65536];
            match self.s.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Sends `call` to `interface` and returns the final answer (progress packets skipped).
    fn call(&mut self, interface: &str, call: &str) -> Option<String> {
        self.next += 1;
        let id = format!("mx{}", self.next);
        let packet = format!(
            "<packet version=\"4.0.0\" id=\"{id}\"><target>{interface}</target><data><{interface}>{call}</{interface}></data></packet>"
        );
        self.s.write_all(packet.as_bytes()).ok()?;
        self.s.write_all(b"\0").ok()?;
        loop {
            let p = self.packet()?;
            if p.contains(&format!("id=\"{id}\"")) && !p.contains("type=\"1\"") {
                return Some(p);
            }
        }
    }
}

/// The text of the first `<name>` (any prefix) element of a packet.
fn first_value(p: &str, name: &str) -> Option<String> {
    let mut at = 0;
    while let Some(i) = p[at..].find('<') {
        let start = at + i + 1;
        let j = p[start..].find('>')?;
        let tag = &p[start..start + j];
        let local = tag.rsplit(':').next().unwrap_or(tag);
        if !tag.starts_with('/') && !tag.ends_with('/') && local == name {
            let body = &p[start + j + 1..];
            return Some(body[..body.find('<').unwrap_or(body.len())].to_string());
        }
        at = start + j;
    }
    None
}

fn xml_got(answer: Option<String>) -> Got {
    let Some(p) = answer else {
        return Got {
            refused: false,
            code: "no answer".into(),
            message: "the connection ended or timed out".into(),
            seen: None,
        };
    };
    let is_error = p.contains(":error>") || p.contains("<error>");
    let code = if is_error {
        first_value(&p, "code")
    } else {
        None
    };
    match code {
        Some(code) => {
            let message = first_value(&p, "message").unwrap_or_default();
            Got {
                refused: matches!(code.as_str(), "304" | "305" | "306"),
                code,
                message,
                seen: None,
            }
        }
        None => Got {
            refused: false,
            code: "ok".into(),
            message: String::new(),
            seen: None,
        },
    }
}

// ---------------------------------------------------------------------------------------
// Completeness
// ---------------------------------------------------------------------------------------

/// Every way the table and the test can fall behind the entry points: a gRPC method, a
/// REST route or an XML call without a row, a row naming nothing served, a row without a
/// request in this test.
fn completeness_problems() -> Vec<String> {
    let mut problems = Vec::new();
    let rows = |i: Interface| TABLE.iter().filter(move |r| r.interface == i);
    let has_row = |i: Interface, entry: &str| {
        rows(i).any(|r| r.entry == entry || r.entry.starts_with(&format!("{entry}(")))
    };
    let base = |entry: &str| entry.split('(').next().unwrap_or(entry).to_string();

    // gRPC: every `rpc Name(` of every service of the proto file.
    let proto_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto/cairn.proto");
    let proto = std::fs::read_to_string(proto_path).expect("read proto/cairn.proto");
    let mut methods = Vec::new();
    let mut service: Option<String> = None;
    for line in proto.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("service ") {
            service = rest.split_whitespace().next().map(str::to_string);
        } else if let (Some(s), Some(rest)) = (&service, line.strip_prefix("rpc ")) {
            let name = rest.split('(').next().unwrap_or_default().trim();
            methods.push(format!("{s}.{name}"));
        } else if line == "}" {
            service = None;
        }
    }
    assert!(methods.len() > 10, "no rpc found in {proto_path}");
    for m in &methods {
        if !has_row(Interface::Grpc, m) {
            problems.push(format!(
                "gRPC method {m} has no row in cairn_core::auth::TABLE"
            ));
        }
    }
    for (entry, variant, _) in grpc_variants() {
        if !rows(Interface::Grpc).any(|r| r.entry == entry) {
            problems.push(format!("variant {entry} ({variant}) names no row"));
        }
    }
    for r in rows(Interface::Grpc) {
        if !methods.contains(&base(r.entry)) {
            problems.push(format!(
                "row {} names no method of proto/cairn.proto",
                r.entry
            ));
        }
    }

    // REST: every method of every route the router serves.
    let mut routes = Vec::new();
    for (path, verbs) in cairn_gateway::rest::ROUTES {
        for v in *verbs {
            routes.push(format!("{v} {path}"));
        }
    }
    for r in &routes {
        if !has_row(Interface::Rest, r) {
            problems.push(format!(
                "REST route {r} has no row in cairn_core::auth::TABLE"
            ));
        }
    }
    for r in rows(Interface::Rest) {
        if !routes.contains(&base(r.entry)) {
            problems.push(format!("row {} names no REST route", r.entry));
        }
    }

    // XML: every system and backupm call the server serves.
    let calls: Vec<String> = cairn_gateway::xml::SYSTEM_CALLS
        .iter()
        .map(|c| format!("system/{c}"))
        .chain(
            cairn_gateway::xml::CALLS
                .iter()
                .map(|c| format!("backupm/{c}")),
        )
        .collect();
    for c in &calls {
        if !has_row(Interface::Xml, c) {
            problems.push(format!(
                "XML call {c} has no row in cairn_core::auth::TABLE"
            ));
        }
    }
    for r in rows(Interface::Xml) {
        if !calls.contains(&base(r.entry)) {
            problems.push(format!("row {} names no XML call", r.entry));
        }
    }

    // The dashboard: every method of every route it serves.
    let mut pages = Vec::new();
    for (path, verbs) in cairn_gateway::ui::ROUTES {
        for v in *verbs {
            pages.push(format!("{v} {path}"));
        }
    }
    for r in &pages {
        if !has_row(Interface::Ui, r) {
            problems.push(format!(
                "dashboard route {r} has no row in cairn_core::auth::TABLE"
            ));
        }
    }
    for r in rows(Interface::Ui) {
        if !pages.contains(&base(r.entry)) {
            problems.push(format!("row {} names no dashboard route", r.entry));
        }
    }

    // A node's own HTTP listener: every method of every route it serves.
    let mut node_routes = Vec::new();
    for (path, verbs) in cairn_node::metrics::ROUTES {
        for v in *verbs {
            node_routes.push(format!("{v} {path}"));
        }
    }
    for r in &node_routes {
        if !has_row(Interface::Node, r) {
            problems.push(format!(
                "node route {r} has no row in cairn_core::auth::TABLE"
            ));
        }
    }
    for r in rows(Interface::Node) {
        if !node_routes.contains(&base(r.entry)) {
            problems.push(format!("row {} names no node route", r.entry));
        }
    }

    // Every row has a request here (built over placeholder things).
    let fx = placeholder_fx();
    let login = ("x".to_string(), "y".to_string());
    for r in TABLE {
        let built = match r.interface {
            Interface::Grpc => grpc_probe(r.entry).is_some(),
            Interface::Rest => rest_request(r.entry, &fx).is_some(),
            Interface::Xml => xml_request(r.entry, &fx, &login).is_some(),
            Interface::Ui => ui_request(r.entry, &fx).is_some(),
            Interface::Node => node_request(r.entry).is_some(),
        };
        if !built {
            problems.push(format!(
                "row {} has no request builder in tests/authz.rs",
                r.entry
            ));
        }
    }
    problems
}

/// Things to build requests over when only their existence matters.
fn placeholder_fx() -> Fx {
    Fx {
        e1: String::new(),
        e2: String::new(),
        b1: String::new(),
        b1_wire: pb::Backup::default(),
        root: Vec::new(),
        ghost: String::new(),
        j1: String::new(),
        jf: String::new(),
        j2: String::new(),
        hn1_host: pb::Host::default(),
        hn1_envs: Vec::new(),
        e1_config: pb::EnvConfig::default(),
        chunk: pb::Chunk::default(),
        tokens: Tokens {
            revoked: String::new(),
            hn1: String::new(),
            hn2: String::new(),
            users: HashMap::new(),
        },
        labels: HashMap::new(),
    }
}

/// A new entry point without a row, a row without a request: this fails, naming them.
#[test]
fn every_entry_point_has_a_row_and_every_row_a_request() {
    let problems = completeness_problems();
    assert!(
        problems.is_empty(),
        "the authorization table or this test is incomplete:\n  {}",
        problems.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------
// The rig
// ---------------------------------------------------------------------------------------

/// The node a request goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Via {
    Leader,
    Follower,
}

impl Via {
    const ALL: [Via; 2] = [Via::Leader, Via::Follower];
}

/// A node's addresses: gRPC URL, REST base URL, XML `host:port`, metrics base URL.
#[derive(Clone)]
struct Addrs {
    id: u64,
    grpc: String,
    rest: String,
    xml: String,
    metrics: String,
}

/// The address a node printed after `banner` in its log, once it has.
fn listener(node: &Node, banner: &str) -> String {
    wait_for(Duration::from_secs(30), banner, || {
        let text = std::fs::read_to_string(&node.log).ok()?;
        let at = text.find(banner)?;
        Some(
            text[at + banner.len()..]
                .lines()
                .next()?
                .trim()
                .trim_end_matches('/')
                .to_string(),
        )
    })
}

fn grpc_url(url: &str) -> String {
    if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    }
}

/// `cairn …` as the cluster secret; stdout, trimmed.
fn ok(node: &Node, args: &[&str]) -> String {
    node.ok(args).trim().to_string()
}

/// Backs up `eid` through a job as `token` and returns (job id, backup id).
fn back_up_as(node: &Node, token: &str, eid: &str) -> (String, String) {
    let out = node.cairn_as(Some(token), &["backup", "--env", eid, "--no-wait"]);
    assert!(
        out.status.success(),
        "backup of {eid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let done = succeeded(node, &job);
    let backup = done["result"]["backup"]
        .as_str()
        .unwrap_or_else(|| panic!("job {job} made no backup: {done:#}"))
        .to_string();
    (job, backup)
}

async fn channel(url: &str) -> Channel {
    Endpoint::from_shared(url.to_string())
        .expect("a node URL")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
async fn eventually<T, F, Fu>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fu,
    Fu: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Prepares what the rows name, over gRPC: reads hn1's records, queues J1 (as the admin
/// token) and has hn1 claim it, opens a session as hn1.
async fn prepare(leader: &str, mut fx: Fx, nodes: &[Addrs]) -> Fx {
    let ch = channel(leader).await;
    let admin = Conn {
        ch: ch.clone(),
        token: Some(fx.tokens.users["mx-admin"].clone()),
        fx: Arc::new(placeholder_fx()),
    };
    let hn1 = admin.as_token(&fx.tokens.hn1);
    let cluster = admin.as_token(SECRET);

    // Every token counts on every node (the revoked one on none) before the matrix starts.
    for n in nodes {
        let c = Conn {
            ch: channel(&n.grpc).await,
            ..cluster.clone()
        };
        let mut good: Vec<String> = vec![fx.tokens.hn1.clone(), fx.tokens.hn2.clone()];
        good.extend(fx.tokens.users.values().cloned());
        for t in good {
            let c = c.as_token(&t);
            eventually(
                Duration::from_secs(20),
                "a token to reach every node",
                || {
                    let c = c.clone();
                    async move {
                        c.catalog()
                            .node_status(c.req(pb::NodeStatusRequest {}))
                            .await
                            .ok()
                            .map(|_| ())
                    }
                },
            )
            .await;
        }
        let c = c.as_token(&fx.tokens.revoked);
        eventually(
            Duration::from_secs(20),
            "the revocation to reach every node",
            || {
                let c = c.clone();
                async move {
                    let r = c
                        .catalog()
                        .node_status(c.req(pb::NodeStatusRequest {}))
                        .await;
                    matches!(r, Err(s) if s.code() == Code::Unauthenticated).then_some(())
                }
            },
        )
        .await;
    }

    fx.b1_wire = cluster
        .catalog()
        .get_backup(cluster.req(pb::BackupRef { id: fx.b1.clone() }))
        .await
        .expect("read b1")
        .into_inner();
    fx.root = fx.b1_wire.manifest.clone();
    fx.hn1_host = cluster
        .agents()
        .list_hosts(cluster.req(pb::ListHostsRequest {}))
        .await
        .expect("list hosts")
        .into_inner()
        .hosts
        .into_iter()
        .find(|h| h.id == "hn1")
        .expect("host hn1");
    fx.hn1_envs = cluster
        .agents()
        .list_envs(cluster.req(pb::ListEnvsRequest { host: "hn1".into() }))
        .await
        .expect("list hn1's environments")
        .into_inner()
        .envs;
    assert_eq!(fx.hn1_envs.len(), 1, "hn1 runs e1 only");
    fx.e1_config = cluster
        .catalog()
        .get_env_config(cluster.req(pb::EnvRef {
            env: fx.e1.clone(),
            effective: false,
        }))
        .await
        .expect("read e1's settings")
        .into_inner();
    let probe = cairn_chunker::encode(
        b"the authorization matrix's probe chunk",
        cairn_core::Compression::default(),
    );
    fx.chunk = pb::Chunk::from(probe);

    // J1: a backup job of e1 that hn1 runs (claimed with a long lease; its agent is gone).
    let j1 = admin
        .agents()
        .create_job(admin.req(pb::CreateJobRequest {
            kind: "backup".into(),
            env: fx.e1.clone(),
            options: Some(pb::JobOptions::default()),
            host: String::new(),
            request_id: String::new(),
        }))
        .await
        .expect("queue J1")
        .into_inner();
    let claimed = hn1
        .agents()
        .claim_job(hn1.req(pb::ClaimJobRequest {
            id: j1.id.clone(),
            host: "hn1".into(),
            lease_ms: 600_000,
        }))
        .await
        .expect("hn1 claims J1")
        .into_inner();
    assert_eq!(claimed.state, "running", "{claimed:?}");
    fx.j1 = j1.id;
    // A session hn1 opened: GC waits for it, so the Gc row never collects.
    hn1.catalog()
        .open_session(hn1.req(pb::OpenSessionRequest {
            env: fx.e1.clone(),
            host: "hn1".into(),
        }))
        .await
        .expect("hn1 opens a session");
    // Every node has seen J1 (job rows read the answering node's catalog).
    for n in nodes {
        let c = Conn {
            ch: channel(&n.grpc).await,
            ..cluster.clone()
        };
        let id = fx.j1.clone();
        eventually(Duration::from_secs(20), "J1 to reach every node", || {
            let (c, id) = (c.clone(), id.clone());
            async move {
                let j = c
                    .agents()
                    .get_job(c.req(pb::JobRef { id }))
                    .await
                    .ok()?
                    .into_inner();
                (j.state == "running").then_some(())
            }
        })
        .await;
    }
    for (id, label) in [
        (fx.j1.clone(), "J1"),
        (fx.jf.clone(), "Jf"),
        (fx.j2.clone(), "J2"),
        (fx.e1.clone(), "e1"),
        (fx.e2.clone(), "e2"),
        ("hn1".to_string(), "hn1"),
        ("hn2".to_string(), "hn2"),
    ] {
        fx.labels.insert(id, label);
    }
    fx
}

/// What one request got: the node, the caller, the row (and variant).
type Outcome = (Via, Who, Row, Option<&'static str>, Got);

/// One cell of the matrix: a row, a caller, a node, what was expected and what came.
struct Cell {
    row: &'static Row,
    /// A further request of the row (see [`grpc_variants`]).
    variant: Option<&'static str>,
    who: Who,
    via: Via,
    node: u64,
    expected: Expect,
    got: Got,
    verdict: Result<(), String>,
}

/// Runs every gRPC row as every caller on both nodes (callers and nodes concurrently,
/// rows one after another).
async fn grpc_matrix(fx: Arc<Fx>, nodes: BTreeMap<Via, Addrs>) -> Vec<Outcome> {
    let mut tasks = tokio::task::JoinSet::new();
    for (via, addrs) in nodes {
        let ch = channel(&addrs.grpc).await;
        for who in Who::ALL {
            let conn = Conn {
                ch: ch.clone(),
                token: fx.tokens.of(who),
                fx: fx.clone(),
            };
            tasks.spawn(async move {
                let mut out = Vec::new();
                for row in TABLE.iter().filter(|r| r.interface == Interface::Grpc) {
                    let got = match grpc_probe(row.entry) {
                        Some(probe) => {
                            grpc_got(tokio::time::timeout(CALL_TIMEOUT, probe(conn.clone())).await)
                        }
                        None => Got {
                            refused: false,
                            code: "no request".into(),
                            message: format!("{SETUP}no request builder"),
                            seen: None,
                        },
                    };
                    out.push((via, who, *row, None, got));
                }
                for (entry, variant, probe) in grpc_variants() {
                    let row = TABLE
                        .iter()
                        .find(|r| r.interface == Interface::Grpc && r.entry == entry);
                    if let Some(row) = row {
                        let got = tokio::time::timeout(CALL_TIMEOUT, probe(conn.clone())).await;
                        out.push((via, who, *row, Some(variant), grpc_got(got)));
                    }
                }
                out
            });
        }
    }
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r.expect("a gRPC caller task"));
    }
    all
}

/// Runs every REST, XML and dashboard row as every caller on both nodes' gateways (one
/// thread per caller, interface and node).
fn gateway_matrix(fx: Arc<Fx>, nodes: BTreeMap<Via, Addrs>) -> Vec<Outcome> {
    let mut threads = Vec::new();
    for (via, addrs) in nodes {
        for who in Who::ALL {
            let (rest_fx, rest) = (fx.clone(), addrs.rest.clone());
            threads.push(std::thread::spawn(move || {
                let fx = rest_fx;
                TABLE
                    .iter()
                    .filter(|r| r.interface == Interface::Rest)
                    .map(|row| {
                        let got = rest_call(&rest, row.entry, who, &fx).unwrap_or_else(|| Got {
                            refused: false,
                            code: "no request".into(),
                            message: format!("{SETUP}no request builder"),
                            seen: None,
                        });
                        (via, who, *row, None, got)
                    })
                    .collect::<Vec<_>>()
            }));
            let (ui_fx, ui) = (fx.clone(), addrs.rest.clone());
            threads.push(std::thread::spawn(move || {
                let fx = ui_fx;
                TABLE
                    .iter()
                    .filter(|r| r.interface == Interface::Ui)
                    .map(|row| {
                        let got = ui_call(&ui, row.entry, who, &fx).unwrap_or_else(|| Got {
                            refused: false,
                            code: "no request".into(),
                            message: format!("{SETUP}no request builder"),
                            seen: None,
                        });
                        (via, who, *row, None, got)
                    })
                    .collect::<Vec<_>>()
            }));
            let (node_fx, metrics) = (fx.clone(), addrs.metrics.clone());
            threads.push(std::thread::spawn(move || {
                let fx = node_fx;
                TABLE
                    .iter()
                    .filter(|r| r.interface == Interface::Node)
                    .map(|row| {
                        let got = node_call(&metrics, row.entry, who, &fx).unwrap_or_else(|| Got {
                            refused: false,
                            code: "no request".into(),
                            message: format!("{SETUP}no request builder"),
                            seen: None,
                        });
                        (via, who, *row, None, got)
                    })
                    .collect::<Vec<_>>()
            }));
            let (xml_fx, xml) = (fx.clone(), addrs.xml.clone());
            threads.push(std::thread::spawn(move || {
                let fx = xml_fx;
                let login = fx.tokens.login(who);
                let mut client = XmlClient::connect(&xml);
                // Log in first (nobody does not even try): a user gets in, a token holder
                // is refused with 305 and stays logged out.
                if who != Who::Nobody {
                    client.call("system", &login_call(&login.0, &login.1));
                }
                TABLE
                    .iter()
                    .filter(|r| r.interface == Interface::Xml)
                    .map(|row| {
                        let got = match xml_request(row.entry, &fx, &login) {
                            Some((interface, call)) => xml_got(client.call(interface, &call)),
                            None => Got {
                                refused: false,
                                code: "no request".into(),
                                message: format!("{SETUP}no request builder"),
                                seen: None,
                            },
                        };
                        (via, who, *row, None, got)
                    })
                    .collect::<Vec<_>>()
            }));
        }
    }
    threads
        .into_iter()
        .flat_map(|t| t.join().expect("a gateway caller thread"))
        .collect()
}

/// The matrix as text: one line per row (and variant), one column per caller, each cell
/// the leader's and the follower's outcome.
fn render(cells: &[Cell]) -> String {
    type Key<'a> = (Interface, &'a str, Option<&'a str>, Who, Via);
    let mut by: HashMap<Key, &Cell> = HashMap::new();
    for c in cells {
        by.insert((c.row.interface, c.row.entry, c.variant, c.who, c.via), c);
    }
    let mut out = String::from(
        "authorization matrix — each cell: via the leader, via a follower; ✓ got past authorization, ✗ refused, ! differs from the table\n",
    );
    out.push_str(&format!("{:<50}", "entry"));
    for who in Who::ALL {
        out.push_str(&format!("{:<9}", who.label()));
    }
    out.push('\n');
    let variants = grpc_variants();
    for row in TABLE {
        let extra = variants
            .iter()
            .filter(|(e, _, _)| row.interface == Interface::Grpc && *e == row.entry)
            .map(|(_, v, _)| Some(*v));
        for variant in std::iter::once(None).chain(extra) {
            let iface = match row.interface {
                Interface::Grpc => "grpc",
                Interface::Rest => "rest",
                Interface::Xml => "xml ",
                Interface::Ui => "ui  ",
                Interface::Node => "node",
            };
            let name = match variant {
                Some(v) => format!("{} [{v}]", row.entry),
                None => row.entry.to_string(),
            };
            out.push_str(&format!("{iface} {name:<45}"));
            for who in Who::ALL {
                let mut cell = String::new();
                let mut wrong = false;
                for via in Via::ALL {
                    match by.get(&(row.interface, row.entry, variant, who, via)) {
                        Some(c) => {
                            cell.push(if c.got.refused { '✗' } else { '✓' });
                            wrong |= c.verdict.is_err();
                        }
                        None => cell.push('?'),
                    }
                }
                if wrong {
                    cell.push('!');
                }
                out.push_str(&format!("{cell:<9}"));
            }
            out.push('\n');
        }
    }
    out
}

/// Every row of the table, as every kind of caller, via the leader and via a follower.
#[test]
fn every_row_as_every_caller_via_the_leader_and_a_follower() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    for (name, role, password) in USERS {
        add_user(&users, name, role.as_str(), password);
    }
    let extra = format!(
        "job_queue_timeout_ms = 5000\nmetrics_listen = \"127.0.0.1:0\"\n[gateway]\nusers_file = \"{}\"\n[gateway.rest]\nlisten = \"127.0.0.1:0\"\n[gateway.xml]\nlisten = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\n",
        users.display()
    );
    let c = TestCluster::start_with_token(&dir.path().join("c"), 3, &extra, Some(SECRET));
    let addrs: Vec<Addrs> = c
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| Addrs {
            id: i as u64 + 1,
            grpc: grpc_url(&n.url),
            rest: listener(n, "REST API (Sun Cloud API) at "),
            xml: listener(n, "XML API (Virtuozzo backupm) at "),
            metrics: wait_for(Duration::from_secs(30), "metrics.addr", || {
                let a = std::fs::read_to_string(n.data.join("metrics.addr")).ok()?;
                Some(a.trim().to_string())
            }),
        })
        .collect();

    // Callers: user tokens (one revoked), agent tokens.
    let node = &c.nodes[0];
    let mut user_tokens = HashMap::new();
    for (name, role, _) in USERS {
        let t = ok(node, &["token", "create", name, "--role", role.as_str()]);
        user_tokens.insert(name, t);
    }
    let revoked = ok(node, &["token", "create", "mx-revoked", "--role", "admin"]);
    ok(node, &["token", "revoke", "--name", "mx-revoked"]);

    // Hosts hn1 and hn2, each a real agent over one small environment, each backed up once
    // through a job as the admin; then the agents stop.
    let mut agents = Vec::new();
    for host in ["hn1", "hn2"] {
        let envs = dir.path().join(format!("{host}-envs"));
        dir_host(&envs, &[&format!("{host}-ct")], 64 << 10);
        agents.push(start_agent(
            &c,
            dir.path(),
            host,
            "",
            &format!("dirs = [\"{}\"]", envs.display()),
        ));
    }
    let e1 = node.envs(Some("hn1"), 1)[0].1.clone();
    let e2 = node.envs(Some("hn2"), 1)[0].1.clone();
    let admin = &user_tokens["mx-admin"];
    let (jf, b1) = back_up_as(node, admin, &e1);
    let (j2, _b2) = back_up_as(node, admin, &e2);
    for a in &mut agents {
        a.kill();
    }
    let tokens = Tokens {
        revoked,
        hn1: ok(node, &["agent", "token", "create", "hn1"]),
        hn2: ok(node, &["agent", "token", "create", "hn2"]),
        users: user_tokens,
    };

    let leader = c.leader();
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let nodes: BTreeMap<Via, Addrs> = [
        (Via::Leader, addrs[leader as usize - 1].clone()),
        (Via::Follower, addrs[follower as usize - 1].clone()),
    ]
    .into();
    let mut fx = placeholder_fx();
    fx.ghost = format!("{e1}/20000101000000");
    fx.e1 = e1;
    fx.e2 = e2;
    fx.b1 = b1;
    fx.jf = jf;
    fx.j2 = j2;
    fx.tokens = tokens;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let fx = Arc::new(rt.block_on(prepare(&nodes[&Via::Leader].grpc, fx, &addrs)));
    let prepared = started.elapsed();

    let gateway = {
        let (fx, nodes) = (fx.clone(), nodes.clone());
        std::thread::spawn(move || gateway_matrix(fx, nodes))
    };
    let mut results = rt.block_on(grpc_matrix(fx.clone(), nodes.clone()));
    results.extend(gateway.join().expect("the gateway matrix"));

    let mut cells: Vec<Cell> = results
        .into_iter()
        .map(|(via, who, row, variant, got)| {
            let row = TABLE
                .iter()
                .find(|r| r.interface == row.interface && r.entry == row.entry)
                .expect("a row of the table");
            let expected = expect(row, who);
            let verdict = judge(&expected, &got);
            Cell {
                row,
                variant,
                who,
                via,
                node: nodes[&via].id,
                expected,
                got,
                verdict,
            }
        })
        .collect();
    cells.sort_by_key(|c| {
        (
            TABLE.iter().position(|r| std::ptr::eq(r, c.row)),
            c.variant,
            c.who,
            c.via,
        )
    });
    println!("{}", render(&cells));
    if std::env::var_os("AUTHZ_MATRIX_DETAIL").is_some() {
        for c in &cells {
            println!(
                "{:<45} {:<9} {:?}: {} {:?} {:?}",
                format!(
                    "{}{}",
                    c.row.entry,
                    c.variant.map(|v| format!(" [{v}]")).unwrap_or_default()
                ),
                c.who.label(),
                c.via,
                c.got.code,
                c.got.message.chars().take(160).collect::<String>(),
                c.got.seen
            );
        }
    }
    println!(
        "{} requests; rig ready after {:.1?}, matrix done after {:.1?}",
        cells.len(),
        prepared,
        started.elapsed()
    );

    let mut failures: Vec<String> = completeness_problems();
    for c in &cells {
        if let Err(why) = &c.verdict {
            let via = match c.via {
                Via::Leader => "leader",
                Via::Follower => "follower",
            };
            failures.push(format!(
                "{}{} as {} via the {via} (node {}): expected {}, got {}{}{}",
                c.row.entry,
                c.variant.map(|v| format!(" [{v}]")).unwrap_or_default(),
                c.who.label(),
                c.node,
                c.expected,
                c.got.code,
                if c.got.message.is_empty() {
                    String::new()
                } else {
                    format!(" {:?}", c.got.message)
                },
                if why.is_empty() {
                    String::new()
                } else {
                    format!(" ({why})")
                }
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cells differ from cairn_core::auth::TABLE:\n  {}",
        failures.len(),
        cells.len(),
        failures.join("\n  ")
    );
}
