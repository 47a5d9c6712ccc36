//! Wire types for Cairn's gRPC API and their conversions to domain types.
//!
//! Generated code lives in [`pb`]. Every conversion between a wire type and a domain type is
//! written once, here, with a round-trip test (a dropped field in a hand-written conversion
//! is a classic replication bug). Errors travel as gRPC statuses carrying a stable
//! [`ErrorCode`] in their metadata ([`CODE_KEY`]): [`status`] builds one, [`stable_code`] and
//! [`code_of`] read it back. The message repeats the code as a `[E1003] ` prefix for people;
//! nothing reads meaning from it.

use cairn_chunker::{Codec, EncodedChunk};
use cairn_core::{
    BackupId, BackupRecord, BackupState, BackupType, ChunkId, Compression, ErrorCode,
};

pub mod failpoint;
mod jobs;
mod runs;
mod totals;
pub use jobs::{code_to_wire, env_config_from_wire, env_config_to_wire, opt_code};

/// Generated protobuf and tonic code.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("cairn.v1");
}

/// The wire protocol version this build speaks, sent on every call as [`PROTOCOL_KEY`].
///
/// It rises when a change to `cairn.proto` or to what a field means would make a node of the
/// previous version misread a call (adding a field or an RPC does not: protobuf skips what it
/// does not know). A node accepts callers from [`PROTOCOL_OLDEST`] to [`PROTOCOL`]; a call
/// without the key comes from a release before versions were sent, which spoke version 1. So
/// a rolling upgrade (one node at a time, then agents and gateways) keeps serving as long as
/// each release still accepts the previous one's version.
pub const PROTOCOL: u32 = 1;
/// The oldest protocol version this build still accepts.
pub const PROTOCOL_OLDEST: u32 = 1;
/// Metadata key of the caller's protocol version (ASCII decimal).
pub const PROTOCOL_KEY: &str = "cairn-protocol";

/// Refuses a call whose protocol version this build cannot read, with one line that says
/// which side to upgrade. A call without a version is version 1 (see [`PROTOCOL`]).
#[allow(clippy::result_large_err)]
pub fn check_protocol(md: &tonic::metadata::MetadataMap) -> Result<(), tonic::Status> {
    let Some(v) = md.get(PROTOCOL_KEY) else {
        return check_version(1);
    };
    match v.to_str().ok().and_then(|s| s.trim().parse::<u32>().ok()) {
        Some(n) => check_version(n),
        None => Err(status(
            ErrorCode::InvalidArgument,
            format!("{PROTOCOL_KEY} must be a protocol version number"),
        )),
    }
}

/// Metadata key, on a [`ErrorCode::VersionMismatch`] refusal, of the side to upgrade:
/// [`Upgrade::Node`] or [`Upgrade::Caller`] (see [`upgrade_of`]).
pub const UPGRADE_KEY: &str = "cairn-upgrade";

/// Which side of a call must be upgraded for a node to read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upgrade {
    /// The caller speaks a newer protocol than this node reads.
    Node,
    /// The caller speaks an older protocol than this node still reads.
    Caller,
}

impl Upgrade {
    pub fn as_str(self) -> &'static str {
        match self {
            Upgrade::Node => "node",
            Upgrade::Caller => "caller",
        }
    }
}

/// The side a version refusal says to upgrade, read from its metadata (never its text).
pub fn upgrade_of(s: &tonic::Status) -> Option<Upgrade> {
    match s.metadata().get(UPGRADE_KEY)?.to_str().ok()? {
        "node" => Some(Upgrade::Node),
        "caller" => Some(Upgrade::Caller),
        _ => None,
    }
}

#[allow(clippy::result_large_err)]
fn check_version(n: u32) -> Result<(), tonic::Status> {
    if (PROTOCOL_OLDEST..=PROTOCOL).contains(&n) {
        return Ok(());
    }
    let (side, fix) = if n > PROTOCOL {
        (
            Upgrade::Node,
            "upgrade this node (nodes first, then agents, gateways and the CLI)",
        )
    } else {
        (Upgrade::Caller, "upgrade the caller")
    };
    let s = status(
        ErrorCode::VersionMismatch,
        format!(
            "the caller speaks cairn protocol {n}; this node speaks {PROTOCOL_OLDEST} to {PROTOCOL}: {fix}"
        ),
    );
    let mut md = s.metadata().clone();
    md.insert(
        UPGRADE_KEY,
        tonic::metadata::MetadataValue::from_static(side.as_str()),
    );
    Err(tonic::Status::with_metadata(
        s.code(),
        s.message().to_string(),
        md,
    ))
}

/// The protocol version every outgoing call carries.
pub fn protocol_value() -> tonic::metadata::MetadataValue<tonic::metadata::Ascii> {
    tonic::metadata::MetadataValue::from(PROTOCOL)
}

/// Largest gRPC message either side accepts (a batch of chunks).
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// Attaches the caller's token (`authorization: Bearer <token>`: the cluster secret, a user
/// token or an agent token) to every outgoing call, and whom the calls are made for when a
/// gateway acts for its user ([`ON_BEHALF`]).
///
/// Clients of every kind (CLI, agent, node to node) wrap their channels with it, so a token
/// can never be forgotten on one call path. No token configured: calls go out bare.
#[derive(Clone, Default)]
pub struct Token {
    bearer: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    on_behalf: Option<tonic::metadata::MetadataValue<tonic::metadata::Binary>>,
}

/// Metadata key of the principal a caller acts for: the JSON of a
/// `cairn_core::auth::Principal` (see the proto file's note on credentials).
pub const ON_BEHALF: &str = "x-cairn-principal-bin";

impl Token {
    /// Builds the interceptor; a token that is not valid header text is refused.
    pub fn new(token: Option<&str>) -> Result<Token, WireError> {
        let bearer = match token {
            None => None,
            Some(t) => Some(format!("Bearer {t}").parse().map_err(|_| WireError {
                field: "token",
                why: "it must be printable ASCII without line breaks".into(),
            })?),
        };
        Ok(Token {
            bearer,
            on_behalf: None,
        })
    }

    /// The same credentials, saying the calls are made for `who` (a gateway's user).
    pub fn acting_for(&self, who: &cairn_core::auth::Principal) -> Token {
        let json = serde_json::to_vec(who).unwrap_or_default();
        Token {
            bearer: self.bearer.clone(),
            on_behalf: Some(tonic::metadata::MetadataValue::from_bytes(&json)),
        }
    }
}

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert(PROTOCOL_KEY, protocol_value());
        if let Some(v) = &self.bearer {
            req.metadata_mut().insert("authorization", v.clone());
        }
        if let Some(v) = &self.on_behalf {
            req.metadata_mut().insert_bin(ON_BEHALF, v.clone());
        }
        Ok(req)
    }
}

/// Applies `tls` to an endpoint whose URL is `https://`, and leaves `http://` ones alone. An
/// https endpoint without trust settings is refused with `missing_ca`, which names the
/// setting to fix (it differs between nodes and clients).
pub fn tls_endpoint(
    ep: tonic::transport::Endpoint,
    tls: Option<&tonic::transport::ClientTlsConfig>,
    missing_ca: &str,
) -> Result<tonic::transport::Endpoint, String> {
    if ep.uri().scheme_str() != Some("https") {
        return Ok(ep);
    }
    let uri = ep.uri().to_string();
    match tls {
        Some(t) => ep
            .tls_config(t.clone())
            .map_err(|e| format!("TLS settings for {uri}: {e}")),
        None => Err(format!("{uri} is https: {missing_ca}")),
    }
}

/// A channel whose calls carry the cluster token.
pub type AuthChannel =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Token>;

impl From<&cairn_core::placement::Epoch> for pb::Placement {
    fn from(e: &cairn_core::placement::Epoch) -> Self {
        pb::Placement {
            epoch: e.number,
            rf: e.rf,
            zone_redundancy: match e.zone_redundancy {
                cairn_core::placement::ZoneRedundancy::Maximum => 0,
                cairn_core::placement::ZoneRedundancy::AtLeast(n) => n.max(1),
            },
            hash: match e.hash {
                cairn_core::placement::PlacementHash::Blake3 => 0,
                cairn_core::placement::PlacementHash::Mix64 => 1,
            },
            nodes: e
                .nodes
                .iter()
                .map(|n| pb::PlacementNode {
                    id: n.id,
                    zone: n.zone.clone(),
                    weight: n.weight,
                    addr: n.addr.clone(),
                    draining: n.draining,
                    down: n.down,
                })
                .collect(),
        }
    }
}

/// A placement whose score hash this version does not know is refused: placing chunks with
/// another hash than the cluster's would send them to the wrong nodes.
impl TryFrom<pb::Placement> for cairn_core::placement::Epoch {
    type Error = WireError;

    fn try_from(p: pb::Placement) -> Result<Self, WireError> {
        Ok(cairn_core::placement::Epoch {
            number: p.epoch,
            rf: p.rf,
            zone_redundancy: match p.zone_redundancy {
                0 => cairn_core::placement::ZoneRedundancy::Maximum,
                n => cairn_core::placement::ZoneRedundancy::AtLeast(n),
            },
            hash: match p.hash {
                0 => cairn_core::placement::PlacementHash::Blake3,
                1 => cairn_core::placement::PlacementHash::Mix64,
                n => {
                    return Err(WireError {
                        field: "placement.hash",
                        why: format!(
                            "score hash {n} is newer than this client or node knows; upgrade it"
                        ),
                    })
                }
            },
            nodes: p
                .nodes
                .into_iter()
                .map(|n| cairn_core::placement::PlacementNode {
                    id: n.id,
                    zone: n.zone,
                    weight: n.weight,
                    addr: n.addr,
                    draining: n.draining,
                    down: n.down,
                })
                .collect(),
        })
    }
}

/// A conversion that met a malformed wire value.
#[derive(Debug, thiserror::Error)]
#[error("malformed {field}: {why}")]
pub struct WireError {
    pub field: &'static str,
    pub why: String,
}

/// An optional backup id on the wire: empty is none.
pub(crate) fn opt_backup_id(s: &str, field: &'static str) -> Result<Option<BackupId>, WireError> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|e| WireError {
        field,
        why: format!("{e}"),
    })
}

impl From<WireError> for tonic::Status {
    fn from(e: WireError) -> Self {
        status(ErrorCode::InvalidArgument, e.to_string())
    }
}

/// Metadata key of the stable error code a node put on a status (ASCII, e.g. `E1011`).
pub const CODE_KEY: &str = "cairn-code";

/// Builds a gRPC status carrying a stable error code: in its metadata ([`CODE_KEY`]), where
/// [`stable_code`] reads it, and as a `[E1003] ` prefix of the message, for people. The gRPC
/// status code is the one of the code's family.
pub fn status(code: ErrorCode, msg: impl std::fmt::Display) -> tonic::Status {
    let grpc = match code.family() {
        ErrorCode::InvalidArgument => tonic::Code::InvalidArgument,
        ErrorCode::NotFound => tonic::Code::NotFound,
        ErrorCode::Conflict => tonic::Code::AlreadyExists,
        ErrorCode::ChunksMissing => tonic::Code::FailedPrecondition,
        ErrorCode::Corrupt => tonic::Code::DataLoss,
        ErrorCode::DiskFull => tonic::Code::ResourceExhausted,
        ErrorCode::Unavailable => tonic::Code::Unavailable,
        ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
        ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
        ErrorCode::Protected => tonic::Code::FailedPrecondition,
        _ => tonic::Code::Internal,
    };
    let mut md = tonic::metadata::MetadataMap::new();
    md.insert(
        CODE_KEY,
        tonic::metadata::MetadataValue::from_static(code.as_str()),
    );
    tonic::Status::with_metadata(grpc, format!("[{}] {msg}", code.as_str()), md)
}

/// Metadata key of the rule a permission refusal applies (ASCII, e.g. `agent-own-host`).
pub const RULE_KEY: &str = "cairn-rule";

/// Builds a refusal: [`status`] with its code and, for a permission refusal, the rule it
/// applies in the metadata ([`RULE_KEY`]), where [`rule_of`] reads it.
pub fn refusal(
    code: ErrorCode,
    rule: Option<cairn_core::auth::Rule>,
    msg: impl std::fmt::Display,
) -> tonic::Status {
    let s = status(code, msg);
    let Some(rule) = rule else { return s };
    let mut md = s.metadata().clone();
    md.insert(
        RULE_KEY,
        tonic::metadata::MetadataValue::from_static(rule.as_str()),
    );
    tonic::Status::with_metadata(s.code(), s.message().to_string(), md)
}

/// The rule a node named on a permission refusal ([`refusal`]), if any.
pub fn rule_of(s: &tonic::Status) -> Option<cairn_core::auth::Rule> {
    let v = s.metadata().get(RULE_KEY)?;
    cairn_core::auth::Rule::parse(v.to_str().ok()?)
}

/// The stable code a Cairn node put on a status ([`status`]), if any: a status without one
/// came from the transport (the node did not answer), not from a node's decision. This is
/// the one place the code is read back from the wire, and it reads the metadata only: the
/// message is prose, whatever it starts with.
pub fn stable_code(s: &tonic::Status) -> Option<ErrorCode> {
    let v = s.metadata().get(CODE_KEY)?;
    ErrorCode::parse(v.to_str().ok()?)
}

/// Reads the stable code back from a status (falls back on the gRPC code).
pub fn code_of(s: &tonic::Status) -> ErrorCode {
    if let Some(c) = stable_code(s) {
        return c;
    }
    match s.code() {
        tonic::Code::InvalidArgument | tonic::Code::OutOfRange => ErrorCode::InvalidArgument,
        tonic::Code::NotFound => ErrorCode::NotFound,
        tonic::Code::AlreadyExists | tonic::Code::Aborted => ErrorCode::Conflict,
        tonic::Code::FailedPrecondition => ErrorCode::ChunksMissing,
        tonic::Code::DataLoss => ErrorCode::Corrupt,
        tonic::Code::ResourceExhausted => ErrorCode::DiskFull,
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            ErrorCode::Unavailable
        }
        tonic::Code::Unauthenticated => ErrorCode::Unauthenticated,
        tonic::Code::PermissionDenied => ErrorCode::PermissionDenied,
        _ => ErrorCode::Internal,
    }
}

/// The message of a status without the code prefix [`status`] added (a status from
/// elsewhere is returned whole).
pub fn message_of(s: &tonic::Status) -> &str {
    let m = s.message();
    stable_code(s)
        .and_then(|c| {
            m.strip_prefix('[')
                .and_then(|r| r.strip_prefix(c.as_str()))
                .and_then(|r| r.strip_prefix("] "))
        })
        .unwrap_or(m)
}

pub fn chunk_id(bytes: &[u8]) -> Result<ChunkId, WireError> {
    ChunkId::from_slice(bytes).map_err(|e| WireError {
        field: "chunk id",
        why: e.to_string(),
    })
}

impl From<EncodedChunk> for pb::Chunk {
    fn from(c: EncodedChunk) -> Self {
        pb::Chunk {
            id: c.id.0.to_vec(),
            raw_len: c.raw_len,
            codec: c.codec as u32,
            data: c.data,
        }
    }
}

impl TryFrom<pb::Chunk> for EncodedChunk {
    type Error = WireError;
    fn try_from(c: pb::Chunk) -> Result<Self, WireError> {
        let codec = u8::try_from(c.codec)
            .ok()
            .and_then(Codec::from_u8)
            .ok_or(WireError {
                field: "chunk codec",
                why: format!("unknown codec {}", c.codec),
            })?;
        Ok(EncodedChunk {
            id: chunk_id(&c.id)?,
            raw_len: c.raw_len,
            codec,
            data: c.data,
        })
    }
}

impl From<&BackupRecord> for pb::Backup {
    fn from(r: &BackupRecord) -> Self {
        pb::Backup {
            id: r.id.to_string(),
            kind: r.kind.code(),
            parent: r.parent.map(|p| p.to_string()).unwrap_or_default(),
            name: r.name.clone(),
            description: r.description.clone(),
            tags: r.tags.clone(),
            manifest: r.manifest.0.to_vec(),
            logical_size: r.logical_size,
            stored_size: r.stored_size,
            file_count: r.file_count,
            chunk_count: r.chunk_count,
            state: r.state.as_str().to_string(),
            errors: r.errors.clone(),
            error_count: r.error_count,
            compression: r.compression.level(),
            host: r.host.clone(),
            source: r.source.clone(),
            env_info: Some(pb::EnvInfo::from(&r.env_info)),
            includes: r.includes.clone(),
            excludes: r.excludes.clone(),
            protected: r.protected,
        }
    }
}

impl TryFrom<pb::Backup> for BackupRecord {
    type Error = WireError;
    fn try_from(b: pb::Backup) -> Result<Self, WireError> {
        let bad = |field: &'static str, why: String| WireError { field, why };
        let id: BackupId = b.id.parse().map_err(|e| bad("backup id", format!("{e}")))?;
        let parent = opt_backup_id(&b.parent, "parent backup id")?;
        Ok(BackupRecord {
            id,
            kind: BackupType::from_code(b.kind)
                .ok_or_else(|| bad("backup type", format!("unknown type {}", b.kind)))?,
            parent,
            name: b.name,
            description: b.description,
            tags: b.tags,
            manifest: chunk_id(&b.manifest)?,
            logical_size: b.logical_size,
            stored_size: b.stored_size,
            file_count: b.file_count,
            chunk_count: b.chunk_count,
            state: match b.state.as_str() {
                "complete" | "" => BackupState::Complete,
                "incomplete" => BackupState::Incomplete,
                other => return Err(bad("backup state", format!("unknown state {other:?}"))),
            },
            errors: b.errors,
            error_count: b.error_count,
            compression: Compression::from_level(b.compression)
                .ok_or_else(|| bad("compression", format!("level {} (use 0-3)", b.compression)))?,
            host: b.host,
            source: b.source,
            env_info: b.env_info.map(Into::into).unwrap_or_default(),
            includes: b.includes,
            excludes: b.excludes,
            protected: b.protected,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> BackupRecord {
        BackupRecord {
            id: "6f1c0d9e-2b1a-4d7e-9a55-0c3b8e1f7a21/20261122081500"
                .parse()
                .unwrap(),
            kind: BackupType::Incremental,
            parent: Some(
                "6f1c0d9e-2b1a-4d7e-9a55-0c3b8e1f7a21/20261121081500"
                    .parse()
                    .unwrap(),
            ),
            name: "n".into(),
            description: "d".into(),
            tags: vec!["a".into(), "b".into()],
            manifest: ChunkId::of(b"m"),
            logical_size: 1,
            stored_size: 2,
            file_count: 3,
            chunk_count: 4,
            state: BackupState::Incomplete,
            errors: vec!["e".into()],
            error_count: 5,
            compression: Compression::High,
            host: "h".into(),
            source: "/s".into(),
            env_info: cairn_core::EnvInfo {
                name: "101".into(),
                title: "web".into(),
                hostname: "web.example".into(),
                ip: vec!["10.0.0.5".into()],
                os: "debian".into(),
                kind: "virtuozzo".into(),
            },
            includes: vec!["etc".into()],
            excludes: vec!["*.tmp".into()],
            protected: true,
        }
    }

    #[test]
    fn backup_round_trips() {
        let r = record();
        let back = BackupRecord::try_from(pb::Backup::from(&r)).unwrap();
        assert_eq!(back, r);
        let mut none = r.clone();
        none.parent = None;
        assert_eq!(
            BackupRecord::try_from(pb::Backup::from(&none)).unwrap(),
            none
        );
    }

    #[test]
    fn chunk_round_trips() {
        let c = cairn_chunker::encode(&b"xyz".repeat(100), Compression::Normal);
        assert_eq!(
            EncodedChunk::try_from(pb::Chunk::from(c.clone())).unwrap(),
            c
        );
        let mut bad = pb::Chunk::from(c);
        bad.codec = 9;
        assert!(EncodedChunk::try_from(bad.clone()).is_err());
        bad.codec = 0;
        bad.id = vec![1, 2];
        assert!(EncodedChunk::try_from(bad).is_err());
    }

    #[test]
    fn malformed_backups_are_refused() {
        let mut b = pb::Backup::from(&record());
        b.id = "nope".into();
        assert!(BackupRecord::try_from(b).is_err());
        let mut b = pb::Backup::from(&record());
        b.compression = 7;
        assert!(BackupRecord::try_from(b).is_err());
    }

    #[test]
    fn placement_round_trips() {
        use cairn_core::placement::{Epoch, PlacementHash, PlacementNode, ZoneRedundancy};
        let e = Epoch {
            number: 7,
            rf: 3,
            nodes: (1..=4)
                .map(|id| PlacementNode {
                    id,
                    zone: format!("z{}", id % 2),
                    weight: id as u32,
                    addr: format!("http://10.0.0.{id}:7700"),
                    draining: id == 4,
                    down: id == 3,
                })
                .collect(),
            zone_redundancy: ZoneRedundancy::AtLeast(2),
            hash: PlacementHash::Mix64,
        };
        assert_eq!(Epoch::try_from(pb::Placement::from(&e)).unwrap(), e);
        let max = Epoch {
            zone_redundancy: ZoneRedundancy::Maximum,
            hash: PlacementHash::Blake3,
            ..e
        };
        assert_eq!(Epoch::try_from(pb::Placement::from(&max)).unwrap(), max);
        let future = pb::Placement {
            hash: 9,
            ..pb::Placement::from(&max)
        };
        assert!(Epoch::try_from(future).is_err());
    }

    #[test]
    fn tokens_must_be_header_text() {
        assert!(Token::new(Some("s3cret-token")).is_ok());
        assert!(Token::new(Some("line\nbreak")).is_err());
        assert!(Token::new(None).is_ok());
    }

    /// A status as the peer reads it: encoded into HTTP/2 headers (or trailers) the way a
    /// tonic server sends it, and decoded the way a tonic client does.
    fn over_the_wire(s: tonic::Status) -> tonic::Status {
        let http = s.into_http();
        tonic::Status::from_header_map(http.headers()).expect("a grpc-status header")
    }

    #[test]
    fn codes_survive_a_status() {
        assert_eq!(
            stable_code(&tonic::Status::unavailable("connection refused")),
            None
        );
        for c in ErrorCode::ALL {
            let s = status(c, "boom");
            assert_eq!(stable_code(&s), Some(c));
            assert_eq!(code_of(&s), c);
            assert_eq!(message_of(&s), "boom");
            let back = over_the_wire(status(c, "boom"));
            assert_eq!(stable_code(&back), Some(c), "{back:?}");
            assert_eq!(
                back.metadata().get(CODE_KEY).unwrap().to_str().unwrap(),
                c.as_str()
            );
            assert_eq!(message_of(&back), "boom");
            assert_eq!(
                back.message(),
                format!("[{c}] boom"),
                "people still read it"
            );
        }
    }

    #[test]
    fn the_code_is_read_from_metadata_never_from_the_message() {
        // A transport error (or any status a node did not build) carries no code, whatever
        // its text says; the gRPC code still gives a coarse kind.
        let bare = over_the_wire(tonic::Status::already_exists("[E1011] looks like a code"));
        assert_eq!(stable_code(&bare), None);
        assert_eq!(code_of(&bare), ErrorCode::Conflict);
        assert_eq!(message_of(&bare), "[E1011] looks like a code");
        let transport = over_the_wire(tonic::Status::unavailable("connection refused"));
        assert_eq!(stable_code(&transport), None);
        assert_eq!(code_of(&transport), ErrorCode::Unavailable);
        // The metadata decides even when the message is reworded or its prefix dropped.
        let mut md = tonic::metadata::MetadataMap::new();
        md.insert(CODE_KEY, "E1011".parse().unwrap());
        let reworded = tonic::Status::with_metadata(tonic::Code::AlreadyExists, "taken", md);
        assert_eq!(
            stable_code(&over_the_wire(reworded)),
            Some(ErrorCode::DuplicateName)
        );
        // An unknown code (a newer node's) is no code.
        let mut md = tonic::metadata::MetadataMap::new();
        md.insert(CODE_KEY, "E9999".parse().unwrap());
        let unknown = tonic::Status::with_metadata(tonic::Code::Internal, "x", md);
        assert_eq!(stable_code(&unknown), None);
    }

    #[test]
    fn fine_codes_keep_their_familys_grpc_code() {
        assert_eq!(
            status(ErrorCode::DuplicateName, "x").code(),
            status(ErrorCode::Conflict, "x").code()
        );
        assert_eq!(
            status(ErrorCode::BackupNotFound, "x").code(),
            tonic::Code::NotFound
        );
        assert_eq!(
            status(ErrorCode::HostOffline, "x").code(),
            tonic::Code::Unavailable
        );
    }
}
