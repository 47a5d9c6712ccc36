//! Who is calling a node: authentication only. What the caller may do is decided by the
//! catalog ([`cairn_meta::authz`], through [`authorize`] for reads and inside every raft
//! command's decision for writes), never here.
//!
//! A token travels as `authorization: Bearer <token>` metadata:
//! - the cluster secret (compared in constant time) is [`Principal::Cluster`];
//! - an agent token (`cairn-agent.<id>.<secret>`) or a user token (`cairn-user.<id>.<secret>`)
//!   is found by its id in the node's catalog and proven by the constant-time comparison of
//!   its BLAKE3 hash; the record says who it is (an agent bound to a host, a user with a
//!   role). The catalog never holds a usable token, and revocation is one raft write.
//!
//! - a join token (`cairn-join.<id>.<secret>`) is [`Principal::JoinToken`] with the hash of
//!   what was presented, looked up by nobody here: it admits only its own redemption, where
//!   the catalog compares the hash.
//!
//! A caller may say whom it acts for in [`ON_BEHALF`] (the JSON of a [`Principal`]): a node
//! forwarding a call to the leader passes on who asked, never its own rights, and a gateway
//! passes on its logged-in user. Only the cluster secret may act for anyone; a user token may
//! act for a user with no more rights than its own ([`Principal::delegate`]).
//!
//! A node without a cluster secret treats every caller without a token as the cluster (the
//! `cairn dev` mode, allowed on loopback only unless the config says `insecure = true`); it
//! still checks the agent and user tokens it is shown.

use std::sync::Arc;

use cairn_core::auth::Access;
pub use cairn_core::auth::Principal;
use cairn_core::job::TokenRecord;
use cairn_meta::authz::Subject;
use cairn_meta::MetaNode;
use tonic::metadata::{BinaryMetadataValue, MetadataValue};
use tonic::transport::Endpoint;
use tonic::{Request, Status};

use cairn_core::ErrorCode;

pub use cairn_proto::ON_BEHALF;

/// Credentials a client attaches to its calls.
#[derive(Clone, Default)]
pub struct ClientAuth {
    pub token: Option<String>,
    /// Trust settings for `https://` peers.
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

impl ClientAuth {
    pub fn new(token: Option<String>) -> ClientAuth {
        ClientAuth { token, tls: None }
    }

    /// Applies transport settings (TLS for `https://` peers) to an endpoint.
    pub fn configure(&self, ep: Endpoint) -> Result<Endpoint, String> {
        tls_for(ep, self.tls.as_ref())
    }

    /// Adds the bearer token to a request.
    pub fn attach<T>(&self, req: &mut Request<T>) {
        req.metadata_mut()
            .insert(cairn_proto::PROTOCOL_KEY, cairn_proto::protocol_value());
        if let Some(t) = &self.token {
            if let Ok(v) = MetadataValue::try_from(format!("Bearer {t}")) {
                req.metadata_mut().insert("authorization", v);
            }
        }
    }
}

/// Marks `req` as made for `who` (see [`ON_BEHALF`]).
pub fn act_for<T>(req: &mut Request<T>, who: &Principal) {
    if let Ok(json) = serde_json::to_vec(who) {
        req.metadata_mut()
            .insert_bin(ON_BEHALF, BinaryMetadataValue::from_bytes(&json));
    }
}

/// The caller of `req`, as the interceptor established it. A request the interceptor did
/// not see (a wiring bug) is refused rather than trusted.
pub fn caller<T>(req: &Request<T>) -> Result<Principal, Status> {
    req.extensions().get::<Principal>().cloned().ok_or_else(|| {
        cairn_proto::status(
            ErrorCode::Unauthenticated,
            "the call carries no authenticated caller",
        )
    })
}

/// Refuses `who` unless this node's catalog admits a request of `access` naming `subject`
/// (the catalog's rules; see [`cairn_meta::authz`]).
pub fn authorize(
    meta: &MetaNode,
    who: &Principal,
    access: Access,
    subject: &Subject,
) -> Result<(), Status> {
    match meta
        .authorize(who, access, subject)
        .map_err(crate::error::meta_status)?
    {
        Ok(()) => Ok(()),
        Err(r) => Err(cairn_proto::refusal(r.code, r.rule, r.message)),
    }
}

/// Finds an agent or user token's record by its id (the node's catalog).
pub type TokenLookup = Arc<dyn Fn(&str) -> Option<TokenRecord> + Send + Sync>;

/// Checks the cluster secret, an agent token or a user token on incoming calls and records
/// the caller (and whom it acts for).
#[derive(Clone, Default)]
pub struct ServerAuth {
    token: Option<Vec<u8>>,
    /// Further cluster secrets accepted (never sent) while the secret is rotated.
    also: Vec<Vec<u8>>,
    tokens: Option<TokenLookup>,
    nodes_only: bool,
}

impl ServerAuth {
    pub fn new(token: Option<String>) -> ServerAuth {
        ServerAuth {
            token: token.map(|t| t.into_bytes()),
            also: Vec::new(),
            tokens: None,
            nodes_only: false,
        }
    }

    /// Also accepts these cluster secrets (a rotation's other secret; see
    /// `cairn_core::secret`). Without a secret of its own the node accepts no other.
    pub fn also_accepting(mut self, secrets: Vec<String>) -> ServerAuth {
        if self.token.is_some() {
            self.also = secrets.into_iter().map(String::into_bytes).collect();
        }
        self
    }

    /// Also accepts the agent and user tokens `lookup` finds.
    pub fn with_tokens(mut self, lookup: TokenLookup) -> ServerAuth {
        self.tokens = Some(lookup);
        self
    }

    /// The same checks, admitting only what [`Access::Internal`] admits (raft between
    /// nodes: the cluster secret).
    pub fn nodes_only(&self) -> ServerAuth {
        ServerAuth {
            nodes_only: true,
            ..self.clone()
        }
    }

    fn principal(&self, got: Option<&str>) -> Result<Principal, Status> {
        let Some(got) = got else {
            return match self.token {
                None => Ok(Principal::Cluster),
                Some(_) => Err(cairn_proto::status(
                    ErrorCode::Unauthenticated,
                    "this node requires a token: the cluster secret, a user token or an agent token (set CAIRN_TOKEN)",
                )),
            };
        };
        if let Some(want) = &self.token {
            // Every candidate is compared, so the time taken does not say which one matched.
            let matched = std::iter::once(want)
                .chain(&self.also)
                .fold(false, |m, w| constant_time_eq(got.as_bytes(), w) | m);
            if matched {
                return Ok(Principal::Cluster);
            }
        }
        // A join token is its own credential: the catalog checks its hash when it is
        // redeemed (`cairn_meta::join`), and it admits nothing else.
        if let Some(id) = cairn_core::job::join_token_id(got) {
            return Ok(Principal::JoinToken {
                id: id.to_string(),
                hash: cairn_core::job::token_hash(got),
            });
        }
        if let Some(id) = cairn_core::job::token_id(got) {
            let record = self.tokens.as_ref().and_then(|lookup| lookup(id));
            return match record {
                Some(r)
                    if constant_time_eq(
                        cairn_core::job::token_hash(got).as_bytes(),
                        r.hash.as_bytes(),
                    ) =>
                {
                    Ok(r.principal())
                }
                _ => Err(cairn_proto::status(
                    ErrorCode::Unauthenticated,
                    "unknown or revoked token",
                )),
            };
        }
        match self.token {
            None => Ok(Principal::Cluster),
            Some(_) => Err(cairn_proto::status(
                ErrorCode::Unauthenticated,
                "wrong cluster secret (and not an agent or user token)",
            )),
        }
    }

    /// A tonic interceptor: refuses calls without valid credentials with `unauthenticated`,
    /// applies [`ON_BEHALF`], and records the caller ([`Principal`]) in the request's
    /// extensions.
    #[allow(clippy::result_large_err)]
    pub fn check(&self, mut req: Request<()>) -> Result<Request<()>, Status> {
        // A caller this node cannot understand is refused before anything is read.
        cairn_proto::check_protocol(req.metadata())?;
        let got = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string);
        let mut who = self.principal(got.as_deref())?;
        if let Some(v) = req.metadata().get_bin(ON_BEHALF) {
            let asserted: Principal = v
                .to_bytes()
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or_else(|| {
                    cairn_proto::status(
                        ErrorCode::InvalidArgument,
                        format!("{ON_BEHALF} does not hold a principal"),
                    )
                })?;
            who = who.delegate(asserted).map_err(|why| {
                cairn_proto::refusal(
                    ErrorCode::PermissionDenied,
                    Some(cairn_core::auth::Rule::Delegation),
                    why,
                )
            })?;
        }
        if self.nodes_only {
            if let cairn_core::auth::Admission::Denied(why) = Access::Internal.admits(&who) {
                return Err(cairn_proto::refusal(
                    ErrorCode::PermissionDenied,
                    Some(cairn_core::auth::Rule::AccessTable),
                    why,
                ));
            }
        }
        req.extensions_mut().insert(who);
        Ok(req)
    }
}

impl tonic::service::Interceptor for ServerAuth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        self.check(req)
    }
}

/// Applies `tls` to an `https://` peer's endpoint (plain `http://` ones stay as they are).
pub fn tls_for(
    ep: Endpoint,
    tls: Option<&tonic::transport::ClientTlsConfig>,
) -> Result<Endpoint, String> {
    cairn_proto::tls_endpoint(ep, tls, "no CA is configured to check it (tls_ca)")
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_core::auth::Role;

    fn call(token: Option<&str>, on_behalf: Option<&Principal>) -> Request<()> {
        let mut r = Request::new(());
        ClientAuth::new(token.map(str::to_string)).attach(&mut r);
        if let Some(p) = on_behalf {
            act_for(&mut r, p);
        }
        r
    }

    fn who(r: Result<Request<()>, Status>) -> Principal {
        caller(&r.expect("admitted")).expect("a caller")
    }

    #[test]
    fn a_rotations_other_secret_is_accepted_and_only_with_a_secret_of_its_own() {
        let auth = ServerAuth::new(Some("new".into())).also_accepting(vec!["old".into()]);
        for t in ["new", "old"] {
            assert_eq!(who(auth.check(call(Some(t), None))), Principal::Cluster);
        }
        let wrong = auth.check(call(Some("older"), None)).unwrap_err();
        assert_eq!(
            cairn_proto::stable_code(&wrong),
            Some(ErrorCode::Unauthenticated)
        );
        // A node without a secret (dev mode) takes no list of others: nothing changes.
        let open = ServerAuth::new(None).also_accepting(vec!["old".into()]);
        assert!(open.also.is_empty());
    }

    #[test]
    fn the_cluster_secret_is_checked() {
        let open = ServerAuth::new(None);
        assert_eq!(who(open.check(call(None, None))), Principal::Cluster);
        let auth = ServerAuth::new(Some("s3cret".into()));
        assert_eq!(
            auth.check(call(None, None)).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            who(auth.check(call(Some("s3cret"), None))),
            Principal::Cluster
        );
        assert_eq!(
            auth.check(call(Some("s3cret!"), None)).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        // A request the interceptor never saw has no caller.
        assert!(caller(&Request::new(())).is_err());
    }

    /// A caller of another protocol version is refused with one line and its own code,
    /// before its credentials are even read; a caller of a release that sent no version
    /// (version 1) is served, so a rolling upgrade keeps working.
    #[test]
    fn callers_of_a_protocol_this_node_cannot_read_are_refused() {
        let auth = ServerAuth::new(Some("cluster".into()));
        let with = |v: &str| {
            let mut r = call(Some("cluster"), None);
            r.metadata_mut()
                .insert(cairn_proto::PROTOCOL_KEY, v.parse().unwrap());
            r
        };
        let ours = cairn_proto::PROTOCOL.to_string();
        assert_eq!(who(auth.check(with(&ours))), Principal::Cluster);
        assert_eq!(
            who(auth.check(call(Some("cluster"), None))),
            Principal::Cluster
        );
        let newer = (cairn_proto::PROTOCOL + 1).to_string();
        for (v, side) in [
            (newer.as_str(), cairn_proto::Upgrade::Node),
            ("0", cairn_proto::Upgrade::Caller),
        ] {
            let err = auth.check(with(v)).unwrap_err();
            assert_eq!(
                cairn_proto::stable_code(&err),
                Some(ErrorCode::VersionMismatch),
                "{err:?}"
            );
            // Which side to upgrade travels as metadata; the message is one line for people.
            assert_eq!(cairn_proto::upgrade_of(&err), Some(side), "{err:?}");
            assert_eq!(err.message().lines().count(), 1);
        }
        let err = auth.check(with("two")).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        // Every client path sends this build's version.
        let mut r = Request::new(());
        ClientAuth::new(None).attach(&mut r);
        assert_eq!(
            r.metadata()
                .get(cairn_proto::PROTOCOL_KEY)
                .unwrap()
                .to_str()
                .unwrap(),
            ours
        );
    }

    fn with_tokens() -> (ServerAuth, &'static str, &'static str) {
        let agent = "cairn-agent.t1.secret";
        let user = "cairn-user.u1.secret";
        let records = [
            TokenRecord {
                id: "t1".into(),
                host: "h1".into(),
                hash: cairn_core::job::token_hash(agent),
                created_ms: 0,
                name: String::new(),
                role: None,
            },
            TokenRecord {
                id: "u1".into(),
                host: String::new(),
                hash: cairn_core::job::token_hash(user),
                created_ms: 0,
                name: "gw".into(),
                role: Some(Role::Operator),
            },
        ];
        let auth =
            ServerAuth::new(Some("cluster".into())).with_tokens(Arc::new(move |id: &str| {
                records.iter().find(|r| r.id == id).cloned()
            }));
        (auth, agent, user)
    }

    #[test]
    fn tokens_name_their_principal() {
        let (auth, agent, user) = with_tokens();
        assert_eq!(
            who(auth.check(call(Some(agent), None))),
            Principal::Agent { host: "h1".into() }
        );
        assert_eq!(
            who(auth.check(call(Some(user), None))),
            Principal::User {
                name: "gw".into(),
                role: Role::Operator
            }
        );
        // A wrong secret or an unknown id is unauthenticated.
        for bad in [
            "cairn-agent.t1.guess",
            "cairn-agent.t9.secret",
            "cairn-user.u1.x",
        ] {
            assert_eq!(
                auth.check(call(Some(bad), None)).unwrap_err().code(),
                tonic::Code::Unauthenticated
            );
        }
        // Raft admits the cluster secret only.
        assert_eq!(
            auth.nodes_only()
                .check(call(Some(agent), None))
                .unwrap_err()
                .code(),
            tonic::Code::PermissionDenied
        );
        assert!(auth.nodes_only().check(call(Some("cluster"), None)).is_ok());
    }

    #[test]
    fn only_the_secret_or_a_stronger_user_acts_for_someone() {
        let (auth, agent, user) = with_tokens();
        let h2 = Principal::Agent { host: "h2".into() };
        let viewer = Principal::User {
            name: "rest:v".into(),
            role: Role::Viewer,
        };
        let admin = Principal::User {
            name: "rest:a".into(),
            role: Role::Admin,
        };
        // A node relays who asked.
        assert_eq!(who(auth.check(call(Some("cluster"), Some(&h2)))), h2);
        // An agent acts for nobody, not even another agent.
        assert_eq!(
            auth.check(call(Some(agent), Some(&h2))).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        // A user token acts for users with no more rights.
        assert_eq!(who(auth.check(call(Some(user), Some(&viewer)))), viewer);
        assert_eq!(
            auth.check(call(Some(user), Some(&admin)))
                .unwrap_err()
                .code(),
            tonic::Code::PermissionDenied
        );
        // Garbage in the header is refused, not ignored.
        let mut r = call(Some("cluster"), None);
        r.metadata_mut()
            .insert_bin(ON_BEHALF, BinaryMetadataValue::from_bytes(b"{nope"));
        assert_eq!(
            auth.check(r).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
