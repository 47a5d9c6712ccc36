//! Enrolling an agent: a join token and the CA's fingerprint in, an agent token and the
//! cluster's CA out.
//!
//! The steps, each of which must hold before the next:
//! 1. **Pin the CA** ([`fetch_ca`]): a TLS handshake with a node, whose certificate chain
//!    (nodes written by `cairn init cluster` present their certificate and the CA) must
//!    hold a certificate whose SHA-256 is the fingerprint the operator gave, and the node's
//!    certificate must be valid for the node's name under that CA. Nothing is sent on this
//!    connection; it only yields the CA. Trust on first use would accept whoever answers
//!    first, which a backup system cannot afford.
//! 2. **Redeem** ([`redeem`]): a new connection that trusts only the pinned CA carries the
//!    join token as its bearer token to `Agents.RedeemJoinToken`. The catalog decides
//!    (`cairn_meta::join`): once, before expiry, for the token's host. The answer holds the
//!    agent token and the CA PEM.
//!
//! The join token never travels before the CA is pinned, and never on a command line (the
//! CLI reads it from a file or stdin).

use std::sync::{Arc, Mutex};

use cairn_proto::pb;
use cairn_proto::pb::agents_client::AgentsClient;
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use crate::client::call_error;
use crate::error::Error;
use crate::types::AgentToken;

/// What enrolling gives an agent.
#[derive(Clone, Debug)]
pub struct Enrollment {
    /// The agent token, bound to the join token's host.
    pub agent: AgentToken,
    /// The cluster's CA certificate(s), PEM.
    pub ca_pem: String,
}

/// Normalizes a SHA-256 fingerprint as people write it (`SHA256:`, colons, any case) to 64
/// lowercase hex digits.
pub fn parse_fingerprint(s: &str) -> Result<String, Error> {
    let s = s.trim();
    let s = s
        .strip_prefix("SHA256:")
        .or_else(|| s.strip_prefix("sha256:"))
        .unwrap_or(s);
    let hex: String = s
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex)
    } else {
        Err(Error::Invalid(format!(
            "{s:?} is not a SHA-256 fingerprint (64 hex digits, as `cairn init cluster` prints it and writes to ca.sha256)"
        )))
    }
}

/// The SHA-256 of a DER certificate, lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The fingerprint of the first certificate in a PEM file's contents.
pub fn pem_fingerprint(pem: &[u8]) -> Result<String, Error> {
    let der = CertificateDer::pem_slice_iter(pem)
        .next()
        .ok_or_else(|| Error::Invalid("no certificate in the PEM".into()))?
        .map_err(|e| Error::Invalid(format!("bad PEM certificate: {e}")))?;
    Ok(fingerprint(&der))
}

/// A DER certificate as PEM.
fn to_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A verifier for a server whose chain must hold the pinned CA and chain to it.
#[derive(Debug)]
struct Pinned {
    fingerprint: String,
    found: Mutex<Option<Vec<u8>>>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = std::iter::once(end_entity)
            .chain(intermediates)
            .find(|c| fingerprint(c) == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::General(format!(
                    "the node presents no certificate with fingerprint {} (not this cluster's CA, or an impostor)",
                    self.fingerprint
                ))
            })?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone())?;
        let webpki =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        let ok = webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        *self.found.lock().unwrap_or_else(|p| p.into_inner()) = Some(ca.to_vec());
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The host and port of an `https://HOST:PORT` URL.
fn https_authority(url: &str) -> Result<(String, u16), Error> {
    let bad = || {
        Error::Invalid(format!(
            "{url:?}: enrolling needs the https:// address of a node (https://HOST:PORT)"
        ))
    };
    let rest = url.strip_prefix("https://").ok_or_else(bad)?;
    let rest = rest.split('/').next().unwrap_or_default();
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let port = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// Fetches the CA of the node at `url` (an `https://` address) and returns it as PEM, if
/// and only if the node presents a certificate with SHA-256 `fingerprint` and its own
/// certificate is valid for its name under that CA (step 1 of the module doc).
pub async fn fetch_ca(url: &str, fingerprint: &str) -> Result<String, Error> {
    let fingerprint = parse_fingerprint(fingerprint)?;
    let (host, port) = https_authority(url)?;
    let verifier = Arc::new(Pinned {
        fingerprint,
        found: Mutex::new(None),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Invalid(format!("TLS settings: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let name = ServerName::try_from(host.clone())
        .map_err(|e| Error::Invalid(format!("{host:?} is not a server name: {e}")))?;
    let unreachable = |why: String| Error::Unreachable {
        url: url.to_string(),
        why,
    };
    let tcp = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|_| unreachable("no answer within 10 s".into()))?
    .map_err(|e| unreachable(e.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let handshake = connector.connect(name, tcp).await;
    let found = verifier
        .found
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    match (handshake, found) {
        (Ok(_), Some(der)) => Ok(to_pem(&der)),
        (Err(e), _) => Err(Error::Invalid(format!(
            "cannot pin the cluster's CA at {url}: {e}"
        ))),
        (Ok(_), None) => Err(Error::Invalid(format!(
            "cannot pin the cluster's CA at {url}: the handshake checked no certificate"
        ))),
    }
}

/// Redeems `join_token` for an agent of `host` at the first of `urls` that answers,
/// trusting only `ca_pem` (step 2 of the module doc).
pub async fn redeem(
    urls: &[String],
    ca_pem: &str,
    join_token: &str,
    host: &str,
) -> Result<Enrollment, Error> {
    if cairn_core::job::join_token_id(join_token).is_none() {
        return Err(Error::Invalid(
            "that is not a join token (cairn-join.<id>.<secret>, from cairn agent join-token create)"
                .into(),
        ));
    }
    let token =
        cairn_proto::Token::new(Some(join_token)).map_err(|e| Error::Invalid(e.to_string()))?;
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem));
    let mut last = None;
    for url in urls {
        let ep = tonic::transport::Endpoint::from_shared(url.clone())
            .map_err(|e| Error::Invalid(format!("bad cluster address {url:?}: {e}")))?
            .connect_timeout(std::time::Duration::from_secs(10));
        let ep = cairn_proto::tls_endpoint(ep, Some(&tls), "").map_err(Error::Invalid)?;
        let channel = match ep.connect().await {
            Ok(c) => c,
            Err(e) => {
                last = Some(Error::Unreachable {
                    url: url.clone(),
                    why: e.to_string(),
                });
                continue;
            }
        };
        let mut client = AgentsClient::with_interceptor(channel, token.clone());
        let answer = client
            .redeem_join_token(pb::RedeemJoinTokenRequest {
                host: host.to_string(),
            })
            .await
            .map_err(|s| call_error(url, s));
        match answer {
            Ok(r) => {
                let r = r.into_inner();
                let agent = r
                    .agent
                    .ok_or_else(|| Error::Invalid("the node answered without a token".into()))?;
                return Ok(Enrollment {
                    agent: agent.into(),
                    ca_pem: r.ca_pem,
                });
            }
            Err(e @ Error::Unreachable { .. }) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::Invalid("no cluster address given".into())))
}

/// Checks that the first certificate of `chain_pem` is valid for `name` under the CA in
/// `ca_pem` (what a client checks in a handshake); for tests of generated certificates.
pub fn verify_chain(ca_pem: &[u8], chain_pem: &[u8], name: &str) -> Result<(), String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem) {
        roots
            .add(ca.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider())
            .build()
            .map_err(|e| e.to_string())?;
    let (leaf, rest) = certs.split_first().ok_or("no certificate in the chain")?;
    let name = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    verifier
        .verify_server_cert(leaf, rest, &name, &[], UnixTime::now())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_as_people_write_them() {
        let hex = "AB".repeat(32);
        let want = "ab".repeat(32);
        assert_eq!(parse_fingerprint(&hex).unwrap(), want);
        let colons: Vec<String> = (0..32).map(|_| "ab".to_string()).collect();
        assert_eq!(
            parse_fingerprint(&format!("SHA256:{}", colons.join(":"))).unwrap(),
            want
        );
        assert!(parse_fingerprint("abc").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn pem_round_trips() {
        let der: Vec<u8> = (0..200u8).collect();
        let pem = to_pem(&der);
        let back = CertificateDer::pem_slice_iter(pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(back.as_ref(), der.as_slice());
        assert_eq!(pem_fingerprint(pem.as_bytes()).unwrap(), fingerprint(&der));
    }

    #[test]
    fn only_https_addresses_enroll() {
        assert_eq!(
            https_authority("https://10.0.0.1:7700").unwrap(),
            ("10.0.0.1".to_string(), 7700)
        );
        assert_eq!(
            https_authority("https://[::1]:7700/").unwrap(),
            ("::1".to_string(), 7700)
        );
        assert!(https_authority("http://10.0.0.1:7700").is_err());
        assert!(https_authority("https://10.0.0.1").is_err());
    }
}
