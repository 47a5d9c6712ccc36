//! Who may call a node: the cluster token on every call (node↔node and client↔node), over
//! TLS when the node has a certificate.
//!
//! The token travels as `authorization: Bearer <token>` metadata and is compared in constant
//! time. A node without a configured token accepts every call (`cairn dev` on loopback).

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

/// Checks the cluster token on incoming calls.
#[derive(Clone, Default)]
pub struct ServerAuth {
    token: Option<Vec<u8>>,
}

impl ServerAuth {
    pub fn new(token: Option<String>) -> ServerAuth {
        ServerAuth {
            token: token.map(|t| t.into_bytes()),
        }
    }

    /// A tonic interceptor: refuses calls without the right token with `unauthenticated`.
    #[allow(clippy::result_large_err)]
    pub fn check(&self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(want) = &self.token else {
            return Ok(req);
        };
        let got = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|v| v.as_bytes());
        match got {
            Some(g) if constant_time_eq(g, want) => Ok(req),
            Some(_) => Err(cairn_proto::status(
                ErrorCode::Unauthenticated,
                "wrong cluster token",
            )),
            None => Err(cairn_proto::status(
                ErrorCode::Unauthenticated,
                "this node requires a cluster token (set CAIRN_TOKEN or --token)",
            )),
        }
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
}
