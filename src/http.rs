//! A small HTTP/1.1 client for the REST tests: one request per connection, written and read
//! by hand so that the tests share no code with the server (and can send what no well-
//! behaved client library would). HTTPS goes through rustls, trusting one CA certificate.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;

/// An answer: status, headers (names lowercase) and body.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `Authorization: Basic …` for `user:password`.
pub fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// Splits `http://host:port/path` into (https, host:port, /path).
pub fn split_url(url: &str) -> (bool, String, String) {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else {
        (false, url.strip_prefix("http://").expect("an http(s) URL"))
    };
    match rest.find('/') {
        Some(i) => (tls, rest[..i].to_string(), rest[i..].to_string()),
        None => (tls, rest.to_string(), "/".to_string()),
    }
}

/// Sends one request (with `Connection: close`) and reads the whole answer.
pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    request_tls(method, url, headers, body, None)
}

/// Like [`request`]; an `https://` URL is checked against the CA certificate `ca`.
pub fn request_tls(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    ca: Option<&Path>,
) -> Resp {
    let (tls, host, path) = split_url(url);
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    let raw = exchange(
        &host,
        &bytes,
        if tls {
            ca.or(Some(Path::new("")))
        } else {
            None
        },
    );
    parse(&raw).unwrap_or_else(|| {
        panic!(
            "{method} {url}: not an HTTP answer: {:?}",
            String::from_utf8_lossy(&raw)
        )
    })
}

/// A TLS connection to `host` (`name:port`), checked against the CA certificate `ca`.
pub fn tls_connect(
    host: &str,
    ca: &Path,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let tcp = TcpStream::connect(host).unwrap_or_else(|e| panic!("connect {host}: {e}"));
    tcp.set_read_timeout(Some(Duration::from_secs(120))).ok();
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap_or_else(|e| panic!("CA {}: {e}", ca.display()));
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(c.expect("CA PEM")).expect("CA certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    let name = rustls::pki_types::ServerName::try_from(name.to_string()).expect("server name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("TLS client");
    rustls::StreamOwned::new(conn, tcp)
}

/// Writes `bytes` to `host` and reads until the server closes.
pub fn exchange(host: &str, bytes: &[u8], tls_ca: Option<&Path>) -> Vec<u8> {
    let mut out = Vec::new();
    match tls_ca {
        None => {
            let mut tcp =
                TcpStream::connect(host).unwrap_or_else(|e| panic!("connect {host}: {e}"));
            tcp.set_read_timeout(Some(Duration::from_secs(60))).ok();
            tcp.set_write_timeout(Some(Duration::from_secs(60))).ok();
            // A server may answer and close before reading a whole oversized body.
            let _ = tcp.write_all(bytes);
            let _ = tcp.read_to_end(&mut out);
        }
        Some(ca) => {
            let mut s = tls_connect(host, ca);
            s.write_all(bytes).expect("TLS write");
            let _ = s.read_to_end(&mut out);
        }
    }
    out
}

/// Parses a whole HTTP/1.1 answer (Content-Length, chunked, or read to close).
pub fn parse(raw: &[u8]) -> Option<Resp> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        let mut body = Vec::new();
        let mut at = 0;
        loop {
            let nl = rest[at..].windows(2).position(|w| w == b"\r\n")? + at;
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[at..nl]).ok()?.trim(), 16).ok()?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(rest.get(nl + 2..nl + 2 + size)?);
            at = nl + 2 + size + 2;
        }
        body
    } else {
        match headers.iter().find(|(k, _)| k == "content-length") {
            Some((_, n)) => rest.get(..n.parse::<usize>().ok()?)?.to_vec(),
            None => rest.to_vec(),
        }
    };
    Some(Resp {
        status,
        headers,
        body,
    })
}
