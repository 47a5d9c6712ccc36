//! The gateway: adapters that put the cluster behind interfaces hosting tools already speak.
//!
//! Each adapter is thin: it parses, authenticates (the users of [`users`], shared by every
//! adapter), calls the cluster's gRPC admin API through a [`cairn_api::Client`]
//! acting for the user ([`access`]: the cluster decides what the user may do), and maps the
//! answers back. A gateway runs inside a node (its config's `[gateway]` table;
//! the client then calls the node itself, which forwards to the leader) or alone as
//! `cairn gateway --config FILE` in front of any nodes.
//!
//! - [`rest`]: the Sun Cloud API REST model (VMs, Backups, Status) over HTTP(S).
//! - [`metrics`]: Prometheus metrics on the REST listener.
//! - [`ui`]: the web dashboard at `/ui/` on the REST listener.

pub mod access;
pub mod config;
#[cfg(test)]
pub(crate) mod conformance;
pub mod metrics;
pub mod rest;
pub mod ui;
pub mod users;
pub mod xml;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cairn_api::Client;
pub use config::{GatewayConfig, RestConfig};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
pub use xml::{serve_xml, XmlConfig, XmlServer};

/// The cluster client a gateway calls through, once it has reached the cluster (a
/// standalone gateway starts serving before: until then its answers are 503).
#[derive(Clone, Default)]
pub struct ClusterLink {
    cell: Arc<tokio::sync::OnceCell<Client>>,
}

impl ClusterLink {
    /// A link over a client already connected (a gateway inside a node).
    pub fn connected(c: Client) -> ClusterLink {
        let link = ClusterLink::default();
        let _ = link.cell.set(c);
        link.keep_placement_fresh();
        link
    }

    /// Connects in the background, trying each URL in turn until one answers.
    pub fn connecting(urls: Vec<String>, creds: cairn_api::Credentials) -> ClusterLink {
        let link = ClusterLink::default();
        let l = link.clone();
        tokio::spawn(async move {
            let mut pause = Duration::from_millis(200);
            loop {
                for url in &urls {
                    match Client::connect(url, &creds).await {
                        Ok(c) => {
                            tracing::info!(url = %url, "gateway reached the cluster");
                            let _ = l.cell.set(c);
                            l.keep_placement_fresh();
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(url = %url, error = %e, "cannot reach the cluster yet")
                        }
                    }
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        });
        link
    }

    pub fn get(&self) -> Option<&Client> {
        self.cell.get()
    }

    /// Re-reads the placement now and then, so that nodes added later are tried too.
    fn keep_placement_fresh(&self) {
        let cell = self.cell.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Some(c) = cell.get() {
                    let _ = c.refresh_placement().await;
                }
            }
        });
    }
}

/// Queues a cluster job; `cluster` acts for the adapter's user, who is recorded as who
/// asked (and for whom the cluster decides). Empty `host` is the environment's own; another
/// host's agent restores onto that host.
pub(crate) async fn create_job(
    cluster: &Client,
    kind: cairn_core::job::JobKind,
    env: cairn_core::EnvId,
    host: &str,
    options: &cairn_core::job::JobOptions,
) -> Result<cairn_core::job::Job, cairn_api::Error> {
    let mut req = cairn_api::JobRequest::new(kind, env);
    req.options = options.clone();
    req.host = (!host.is_empty()).then(|| host.to_string());
    Ok(cluster.create_job(&req).await?.job)
}

/// A running REST listener.
pub struct RestServer {
    pub addr: SocketAddr,
    pub tls: bool,
    task: tokio::task::JoinHandle<()>,
}

impl RestServer {
    /// The base URL clients start from.
    pub fn url(&self) -> String {
        format!(
            "{}://{}/",
            if self.tls { "https" } else { "http" },
            self.addr
        )
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Most connections served at once; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 1024;

/// Starts the REST adapter on `cfg.listen` (HTTPS when a certificate is configured).
pub async fn serve_rest(
    cfg: &RestConfig,
    link: ClusterLink,
    users: Arc<users::Users>,
) -> anyhow::Result<RestServer> {
    metrics::install();
    let tls = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(c), Some(k)) => Some(tls_acceptor(c, k)?),
        _ => None,
    };
    let listener = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {} for the REST API", cfg.listen))?;
    let addr = listener.local_addr()?;
    let state = Arc::new(rest::RestState {
        link,
        users,
        public_url: cfg.public_url.clone(),
        tls: tls.is_some(),
        local: addr,
        max_body_bytes: cfg.max_body_bytes,
    });
    let ui_state = Arc::new(ui::state::UiState::new(
        state.link.clone(),
        state.users.clone(),
        state.tls,
    ));
    let app = ui::router(ui_state).merge(rest::router(state));
    let is_tls = tls.is_some();
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let task = tokio::spawn(async move {
        loop {
            let Ok(permit) = limit.clone().acquire_owned().await else {
                return;
            };
            let (stream, _peer) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "REST accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let app = app.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let service = hyper_util::service::TowerToHyperService::new(app);
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT);
                let result = match tls {
                    Some(acceptor) => {
                        match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => builder.serve_connection(TokioIo::new(s), service).await,
                            _ => return,
                        }
                    }
                    None => {
                        builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(error = %e, "REST connection ended with an error");
                }
            });
        }
    });
    tracing::info!(addr = %addr, tls = is_tls, "REST API (Sun Cloud API) listening");
    Ok(RestServer {
        addr,
        tls: is_tls,
        task,
    })
}

pub(crate) fn tls_acceptor(cert: &Path, key: &Path) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use tokio_rustls::rustls;
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert).with_context(|| format!("tls_cert {}", cert.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .with_context(|| format!("tls_cert {}: not PEM certificates", cert.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "tls_cert {}: no certificate in the file",
        cert.display()
    );
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key).with_context(|| format!("tls_key {}", key.display()))?,
    ))
    .with_context(|| format!("tls_key {}: not a PEM private key", key.display()))?
    .ok_or_else(|| anyhow::anyhow!("tls_key {}: no private key in the file", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not match")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
