//! Who may call a node: the cluster token (node↔node, operators) or an agent token bound to
//! one host, on every call, over TLS when the node has a certificate.
//!
//! A token travels as `authorization: Bearer <token>` metadata. The cluster token is compared
//! in constant time; an agent token (`cairn-agent.<id>.<secret>`) is found by its id in the
//! catalog and proven by the constant-time comparison of its BLAKE3 hash, so the catalog never
//! holds a usable token and revocation is one raft write. A node without a cluster token
//! accepts tokenless calls as admin (`cairn dev` on loopback), but still checks agent tokens.
//!
//! What an agent may do is checked by each service at the top of each call, before it is
//! forwarded to the leader (the forwarding node speaks with the cluster token).

use std::sync::Arc;

use cairn_core::job::TokenRecord;
use tonic::metadata::MetadataValue;
use tonic::transport::Endpoint;
use tonic::{Request, Status};

use cairn_core::ErrorCode;

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
        if let Some(t) = &self.token {
            if let Ok(v) = MetadataValue::try_from(format!("Bearer {t}")) {
                req.metadata_mut().insert("authorization", v);
            }
        }
    }
}

/// Who is calling, as the interceptor established it; every service reads it from the
/// request's extensions to decide what the caller may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// The cluster token (operators, other nodes), or any caller of a node without a token.
    Admin,
    /// An agent token, bound to this host: it may register the host, back up and restore the
    /// host's own environments and report on its jobs; never delete, never touch other
    /// hosts' environments, never change the cluster.
    Agent { host: String },
}

impl Principal {
    /// The caller of `req` (the interceptor always sets one; a request without is treated as
    /// an agent of no host, which may do nothing).
    pub fn of<T>(req: &Request<T>) -> Principal {
        req.extensions()
            .get::<Principal>()
            .cloned()
            .unwrap_or(Principal::Agent {
                host: String::new(),
            })
    }

    /// Refuses agents: for calls only operators and nodes may make.
    pub fn require_admin(&self, what: &str) -> Result<(), Status> {
        match self {
            Principal::Admin => Ok(()),
            Principal::Agent { host } => Err(cairn_proto::status(
                ErrorCode::PermissionDenied,
                format!("the agent token of host {host:?} may not {what}; use the cluster token"),
            )),
        }
    }

    /// The host an agent is bound to; `None` for admins.
    pub fn agent_host(&self) -> Option<&str> {
        match self {
            Principal::Admin => None,
            Principal::Agent { host } => Some(host),
        }
    }

    /// Refuses an agent acting for a host other than its own.
    pub fn require_host(&self, host: &str) -> Result<(), Status> {
        match self.agent_host() {
            Some(own) if own != host => Err(cairn_proto::status(
                ErrorCode::PermissionDenied,
                format!("this agent token is bound to host {own:?}, not {host:?}"),
            )),
            _ => Ok(()),
        }
    }

    /// Who to record as a job's requester.
    pub fn name(&self) -> String {
        match self {
            Principal::Admin => "admin".into(),
            Principal::Agent { host } => format!("agent:{host}"),
        }
    }
}

/// Finds an agent token's record by its id (the node's catalog).
pub type TokenLookup = Arc<dyn Fn(&str) -> Option<TokenRecord> + Send + Sync>;

/// Checks the cluster token or an agent token on incoming calls and records the caller.
#[derive(Clone, Default)]
pub struct ServerAuth {
    token: Option<Vec<u8>>,
    agents: Option<TokenLookup>,
    admin_only: bool,
}

impl ServerAuth {
    pub fn new(token: Option<String>) -> ServerAuth {
        ServerAuth {
            token: token.map(|t| t.into_bytes()),
            agents: None,
            admin_only: false,
        }
    }

    /// Also accepts the agent tokens `lookup` finds.
    pub fn with_agent_tokens(mut self, lookup: TokenLookup) -> ServerAuth {
        self.agents = Some(lookup);
        self
    }

    /// The same checks, refusing agent tokens (raft between nodes).
    pub fn admin_only(&self) -> ServerAuth {
        ServerAuth {
            admin_only: true,
            ..self.clone()
        }
    }

    fn principal(&self, got: Option<&str>) -> Result<Principal, Status> {
        let Some(got) = got else {
            return match self.token {
                None => Ok(Principal::Admin),
                Some(_) => Err(cairn_proto::status(
                    ErrorCode::Unauthenticated,
                    "this node requires a cluster or agent token (set CAIRN_TOKEN or --token)",
                )),
            };
        };
        if let Some(want) = &self.token {
            if constant_time_eq(got.as_bytes(), want) {
                return Ok(Principal::Admin);
            }
        }
        if let Some(id) = cairn_core::job::agent_token_id(got) {
            let record = self.agents.as_ref().and_then(|lookup| lookup(id));
            return match record {
                Some(r)
                    if constant_time_eq(
                        cairn_core::job::token_hash(got).as_bytes(),
                        r.hash.as_bytes(),
                    ) =>
                {
                    Ok(Principal::Agent { host: r.host })
                }
                _ => Err(cairn_proto::status(
                    ErrorCode::Unauthenticated,
                    "unknown or revoked agent token",
                )),
            };
        }
        match self.token {
            None => Ok(Principal::Admin),
            Some(_) => Err(cairn_proto::status(
                ErrorCode::Unauthenticated,
                "wrong cluster token",
            )),
        }
    }

    /// A tonic interceptor: refuses calls without a valid token with `unauthenticated` and
    /// records the caller ([`Principal`]) in the request's extensions.
    #[allow(clippy::result_large_err)]
    pub fn check(&self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let got = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string);
        let who = self.principal(got.as_deref())?;
        if self.admin_only {
            who.require_admin("call this service")?;
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

    #[test]
    fn tokens_are_checked() {
        let open = ServerAuth::new(None);
        assert!(open.check(Request::new(())).is_ok());
        let auth = ServerAuth::new(Some("s3cret".into()));
        assert_eq!(
            auth.check(Request::new(())).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let mut ok = Request::new(());
        ClientAuth::new(Some("s3cret".into())).attach(&mut ok);
        assert!(auth.check(ok).is_ok());
        let mut bad = Request::new(());
        ClientAuth::new(Some("s3cret!".into())).attach(&mut bad);
        assert!(auth.check(bad).is_err());
    }

    #[test]
    fn agent_tokens_are_bound_to_their_host() {
        let token = "cairn-agent.t1.secret";
        let record = TokenRecord {
            id: "t1".into(),
            host: "h1".into(),
            hash: cairn_core::job::token_hash(token),
            created_ms: 0,
        };
        let auth =
            ServerAuth::new(Some("cluster".into())).with_agent_tokens(Arc::new(move |id: &str| {
                (id == "t1").then(|| record.clone())
            }));
        let call = |t: &str| {
            let mut r = Request::new(());
            ClientAuth::new(Some(t.into())).attach(&mut r);
            r
        };
        let ok = auth.check(call(token)).unwrap();
        assert_eq!(Principal::of(&ok), Principal::Agent { host: "h1".into() });
        assert!(Principal::of(&ok).require_admin("delete").is_err());
        assert!(Principal::of(&ok).require_host("h2").is_err());
        assert!(Principal::of(&ok).require_host("h1").is_ok());
        assert_eq!(
            Principal::of(&auth.check(call("cluster")).unwrap()),
            Principal::Admin
        );
        // A wrong secret, an unknown id, and agents on an admin-only service are refused.
        assert!(auth.check(call("cairn-agent.t1.guess")).is_err());
        assert!(auth.check(call("cairn-agent.t9.secret")).is_err());
        assert_eq!(
            auth.admin_only().check(call(token)).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
    }
}
