//! A storage node's Prometheus metrics, at `/metrics` on its own HTTP listener
//! (`metrics_listen` in node.toml; off by default).
//!
//! # What is served
//! Every series carries `node="<id>"`. The names the gateway already uses for the same
//! figures (read there from `NodeStatus`) mean the same here.
//!
//! | series | what |
//! |---|---|
//! | `cairn_node_up` | 1 while the node serves |
//! | `cairn_raft_term`, `cairn_raft_leader`, `cairn_raft_commit_index` (= last applied), `cairn_raft_last_log_index` | this member's raft state |
//! | `cairn_raft_role{role}` | 1 for the role it has now (leader, follower, candidate, learner, shutdown), 0 for the others |
//! | `cairn_chunk_store_chunks`, `cairn_chunk_store_bytes`, `cairn_ingested_logical_bytes`, `cairn_chunk_store_dead_bytes` | the chunk store's counters |
//! | `cairn_disk_available_bytes`, `cairn_disk_size_bytes` | the file system of the pack files |
//! | `cairn_repair_backlog` | copies the last repair pass could not make yet |
//! | `cairn_scrub_last_*`, `cairn_gc_last_*`, `cairn_sweep_last_*`, `cairn_repair_last_*` | the last runs (`cairn_core::runs`): when they ended (`_end_seconds`), their counters, `_failed` 1 with the failure's code in `cairn_*_last_failure_info{code}` |
//! | `cairn_node_rpc_requests_total{method, code, cairn_code}` | gRPC calls answered, by method (`Chunks.Put`), gRPC status (`Ok`, `NotFound`, …) and the stable code of a refusal (`E1012`; empty otherwise) |
//!
//! # Design
//! - Figures that exist elsewhere (raft metrics, the store's counters, disk space, the
//!   repair backlog, the last runs) are read at scrape time, so a scrape shows the node as it
//!   is. Only RPC counts are recorded as calls pass, by a tower layer in front of every gRPC
//!   service ([`RpcCountLayer`]); it reads the status where gRPC puts it (the headers of a
//!   refusal, else the trailers at the end of the body), so a stream that fails midway counts
//!   as failed.
//! - The recorder is the node's own `metrics_exporter_prometheus` recorder, not the process'
//!   global one: `cairn dev` runs several nodes and a gateway in one process, and each
//!   endpoint shows only its own figures.
//! - Access: the endpoint is unauthenticated, like `/healthz` (row `GET /metrics` of
//!   interface `Node`, `Public`, in `cairn_core::auth::TABLE`). It shows counts and states only: no backup,
//!   environment, host or token name, nothing a caller could act on. Prometheus scrapers
//!   rarely carry tokens, and a token check here would sit outside the catalog's decision.
//!   It is off unless configured, and the documented setting binds it to loopback or a
//!   management network.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use ::metrics::{Key, Label, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use cairn_meta::MetaNode;
use cairn_store::ChunkStore;

use crate::last_runs::RunLog;
use crate::repair::Repairer;

static META: ::metrics::Metadata<'static> =
    ::metrics::Metadata::new(module_path!(), ::metrics::Level::INFO, Some(module_path!()));

/// The node's recorder and the RPC counts it keeps.
pub struct NodeMetrics {
    node: String,
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Roles seen so far, so that a role the node left reads 0, not its old 1.
    roles: Mutex<BTreeMap<&'static str, ()>>,
}

/// Where a scrape reads the node's figures.
#[derive(Clone)]
pub struct Sources {
    pub meta: Arc<MetaNode>,
    pub store: Arc<ChunkStore>,
    pub repairer: Arc<Repairer>,
    pub runs: Arc<RunLog>,
}

const ROLES: [&str; 5] = ["leader", "follower", "candidate", "learner", "shutdown"];

impl NodeMetrics {
    pub fn new(node_id: u64) -> Arc<NodeMetrics> {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        Arc::new(NodeMetrics {
            node: node_id.to_string(),
            recorder,
            handle,
            roles: Mutex::new(BTreeMap::new()),
        })
    }

    fn key(&self, name: &'static str, extra: &[(&'static str, String)]) -> Key {
        let mut labels = vec![Label::new("node", self.node.clone())];
        labels.extend(extra.iter().map(|(k, v)| Label::new(*k, v.clone())));
        Key::from_parts(name, labels)
    }

    fn gauge(&self, name: &'static str, extra: &[(&'static str, String)], v: f64) {
        self.recorder
            .register_gauge(&self.key(name, extra), &META)
            .set(v);
    }

    /// Counts one answered gRPC call.
    pub fn rpc(&self, method: &str, code: &str, cairn_code: &str) {
        let key = self.key(
            "cairn_node_rpc_requests_total",
            &[
                ("method", method.to_string()),
                ("code", code.to_string()),
                ("cairn_code", cairn_code.to_string()),
            ],
        );
        self.recorder.register_counter(&key, &META).increment(1);
    }

    /// Reads the node's figures into gauges and renders everything in Prometheus' text
    /// format.
    pub fn render(&self, s: &Sources) -> String {
        let g = |name: &'static str, v: f64| self.gauge(name, &[], v);
        g("cairn_node_up", 1.0);
        let m = s.meta.metrics();
        g("cairn_raft_term", m.current_term as f64);
        g("cairn_raft_leader", m.current_leader.unwrap_or(0) as f64);
        let applied = m.last_applied.map(|l| l.index).unwrap_or(0) as f64;
        g("cairn_raft_commit_index", applied);
        g(
            "cairn_raft_last_log_index",
            m.last_log_index.unwrap_or(0) as f64,
        );
        let role = format!("{:?}", m.state).to_lowercase();
        {
            let mut roles = self.roles.lock().unwrap_or_else(|p| p.into_inner());
            for r in ROLES {
                if r == role || roles.contains_key(r) {
                    roles.insert(r, ());
                    let v = if r == role { 1.0 } else { 0.0 };
                    self.gauge("cairn_raft_role", &[("role", r.to_string())], v);
                }
            }
        }
        let st = s.store.stats();
        g("cairn_chunk_store_chunks", st.chunks as f64);
        g("cairn_chunk_store_bytes", st.stored_bytes as f64);
        g("cairn_ingested_logical_bytes", st.logical_bytes as f64);
        g("cairn_chunk_store_dead_bytes", st.dead_bytes as f64);
        if let Some((avail, size)) = s.store.disk_space() {
            g("cairn_disk_available_bytes", avail as f64);
            g("cairn_disk_size_bytes", size as f64);
        }
        g("cairn_repair_backlog", s.repairer.backlog() as f64);
        self.last_runs(&s.runs.get());
        self.handle.render()
    }

    fn last_runs(&self, runs: &cairn_core::runs::LastRuns) {
        let g = |name: &'static str, v: u64| self.gauge(name, &[], v as f64);
        let failed = |prefix: &'static str,
                      failed_name: &'static str,
                      e: &Option<cairn_core::runs::RunError>| {
            self.gauge(failed_name, &[], u64::from(e.is_some()) as f64);
            if let Some(e) = e {
                self.gauge(prefix, &[("code", e.code.as_str().to_string())], 1.0);
            }
        };
        let secs = |ms: i64| (ms.max(0) / 1000) as u64;
        if let Some(r) = &runs.scrub {
            g("cairn_scrub_last_end_seconds", secs(r.at_ms));
            g("cairn_scrub_last_checked", r.checked);
            g("cairn_scrub_last_corrupt", r.corrupt);
            g("cairn_scrub_last_repaired", r.repaired);
            g("cairn_scrub_last_unrepaired", r.unrepaired);
            g("cairn_scrub_last_unreadable", r.unreadable);
            failed(
                "cairn_scrub_last_failure_info",
                "cairn_scrub_last_failed",
                &r.error,
            );
        }
        if let Some(r) = &runs.gc {
            g("cairn_gc_last_end_seconds", secs(r.at_ms));
            g("cairn_gc_last_backups", r.backups);
            g("cairn_gc_last_removed", r.removed);
            g("cairn_gc_last_bytes_reclaimed", r.bytes_reclaimed);
            g("cairn_gc_last_nodes_skipped", r.nodes_skipped.len() as u64);
            failed(
                "cairn_gc_last_failure_info",
                "cairn_gc_last_failed",
                &r.error,
            );
        }
        if let Some(r) = &runs.sweep {
            g("cairn_sweep_last_end_seconds", secs(r.at_ms));
            g("cairn_sweep_last_removed", r.removed);
            g("cairn_sweep_last_bytes_reclaimed", r.bytes_reclaimed);
            failed(
                "cairn_sweep_last_failure_info",
                "cairn_sweep_last_failed",
                &r.error,
            );
        }
        if let Some(r) = &runs.repair {
            g("cairn_repair_last_end_seconds", secs(r.at_ms));
            g("cairn_repair_last_pushed", r.pushed);
            g("cairn_repair_last_dropped", r.dropped);
            g("cairn_repair_last_backlog", r.backlog);
            failed(
                "cairn_repair_last_failure_info",
                "cairn_repair_last_failed",
                &r.error,
            );
        }
    }
}

/// The routes of the metrics listener and their methods (the authorization matrix checks
/// each has a row).
pub const ROUTES: &[(&str, &[&str])] = &[("/metrics", &["GET"])];

/// Serves `GET /metrics` on `listener` until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<NodeMetrics>, sources: Sources) {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let (metrics, sources) = (metrics.clone(), sources.clone());
            async move {
                let body = tokio::task::spawn_blocking(move || metrics.render(&sources))
                    .await
                    .unwrap_or_default();
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    body,
                )
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the metrics listener stopped");
    }
}

/// Binds the metrics listener (port 0: any free port); returns it and its address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    let l = tokio::net::TcpListener::bind(addr).await?;
    let bound = l.local_addr()?;
    Ok((l, bound))
}

/// `/cairn.Chunks/Put` → `Chunks.Put`.
fn method_of(path: &str) -> String {
    let path = path.trim_start_matches('/');
    match path.split_once('/') {
        Some((service, method)) => {
            let service = service.rsplit('.').next().unwrap_or(service);
            format!("{service}.{method}")
        }
        None => "unknown".into(),
    }
}

/// The gRPC status name of a `grpc-status` value (`0` → `Ok`).
fn code_name(v: &[u8]) -> String {
    let n: i32 = std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(2);
    format!("{:?}", tonic::Code::from_i32(n))
}

/// Counts every gRPC call by method and status (see the module doc).
#[derive(Clone)]
pub struct RpcCountLayer(pub Arc<NodeMetrics>);

impl<S> tower::Layer<S> for RpcCountLayer {
    type Service = RpcCount<S>;
    fn layer(&self, inner: S) -> RpcCount<S> {
        RpcCount {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// The service [`RpcCountLayer`] wraps around each gRPC service.
#[derive(Clone)]
pub struct RpcCount<S> {
    inner: S,
    metrics: Arc<NodeMetrics>,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;

impl<S, B, RB> tower::Service<http::Request<B>> for RpcCount<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Send + 'static,
    S::Future: Send + 'static,
    RB: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
{
    type Response = http::Response<Counted<RB>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = method_of(req.uri().path());
        let metrics = self.metrics.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            let mut pending = Some(Pending { metrics, method });
            // A refusal before any message is "trailers-only": its status is in the headers.
            if let Some(code) = resp.headers().get("grpc-status") {
                let cairn = resp
                    .headers()
                    .get(cairn_proto::CODE_KEY)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                if let Some(p) = pending.take() {
                    p.metrics
                        .rpc(&p.method, &code_name(code.as_bytes()), &cairn);
                }
            }
            Ok(resp.map(|body| Counted { body, pending }))
        })
    }
}

/// A call not counted yet: counted when its trailers pass (or as `Unknown` when the body
/// ends without them).
struct Pending {
    metrics: Arc<NodeMetrics>,
    method: String,
}

/// A response body that counts its call when the trailers carrying its status pass.
pub struct Counted<B> {
    body: B,
    pending: Option<Pending>,
}

impl<B> Drop for Counted<B> {
    fn drop(&mut self) {
        // The client went away before the end: the call did not complete.
        if let Some(p) = self.pending.take() {
            p.metrics.rpc(&p.method, "Cancelled", "");
        }
    }
}

impl<B> http_body::Body for Counted<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
{
    type Data = bytes::Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(t) = frame.trailers_ref() {
                    if let Some(p) = this.pending.take() {
                        let code = t
                            .get("grpc-status")
                            .map(|v| code_name(v.as_bytes()))
                            .unwrap_or_else(|| "Unknown".into());
                        let cairn = t
                            .get(cairn_proto::CODE_KEY)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default();
                        p.metrics.rpc(&p.method, &code, cairn);
                    }
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                if let Some(p) = this.pending.take() {
                    p.metrics.rpc(&p.method, "Unknown", "");
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_and_codes_read_as_people_name_them() {
        assert_eq!(method_of("/cairn.Chunks/Put"), "Chunks.Put");
        assert_eq!(
            method_of("/cairn.v1.Catalog/NodeStatus"),
            "Catalog.NodeStatus"
        );
        assert_eq!(method_of("/"), "unknown");
        assert_eq!(code_name(b"0"), "Ok");
        assert_eq!(code_name(b"5"), "NotFound");
        assert_eq!(code_name(b"junk"), "Unknown");
    }

    #[test]
    fn rpc_counts_render_with_their_labels() {
        let m = NodeMetrics::new(7);
        m.rpc("Chunks.Put", "Ok", "");
        m.rpc("Chunks.Put", "Ok", "");
        m.rpc("Catalog.GetBackup", "NotFound", "E1012");
        let text = m.handle.render();
        assert!(
            text.contains(
                "cairn_node_rpc_requests_total{node=\"7\",method=\"Chunks.Put\",code=\"Ok\",cairn_code=\"\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("code=\"NotFound\",cairn_code=\"E1012\"} 1"),
            "{text}"
        );
    }
}
