//! Prometheus metrics of the gateway, on the same listener as the API (`/metrics`).
//!
//! Request counts and latencies (REST and XML API calls, open XML connections) are recorded
//! as requests pass; cluster-wide figures (jobs by
//! state, every node's raft term, leader, commit index, chunk store size, bytes ingested and
//! stored, repair backlog) are read from the cluster's gRPC API at scrape time, so a scrape
//! shows the cluster as it is, not as some earlier poll saw it.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// How often the recorder folds recorded histogram samples into its buckets.
const UPKEEP: Duration = Duration::from_secs(5);

/// Installs the process-wide recorder once (a second gateway in the process shares it).
///
/// Histogram samples are held raw until a scrape or an upkeep folds them into buckets: with
/// nobody scraping, every request (an unauthenticated one too) would be kept for good. So a
/// task runs the upkeep every [`UPKEEP`].
pub fn install() {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(
                    "cairn_http_request_duration_seconds".to_string(),
                ),
                &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
            )
            .ok()?
            // XML calls include backups and restores that run for minutes.
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(
                    "cairn_xml_request_duration_seconds".to_string(),
                ),
                &[
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0, 120.0, 600.0,
                    3600.0,
                ],
            )
            .ok()?
            .build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).ok()?;
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let h = handle.clone();
            rt.spawn(async move {
                let mut tick = tokio::time::interval(UPKEEP);
                loop {
                    tick.tick().await;
                    h.run_upkeep();
                }
            });
        }
        Some(handle)
    });
}

/// Counts one answered request.
pub fn record_request(route: &str, method: &str, code: u16, took: Duration) {
    let labels = [
        ("route", route.to_string()),
        ("method", method.to_string()),
        ("code", code.to_string()),
    ];
    metrics::counter!("cairn_http_requests_total", &labels).increment(1);
    metrics::histogram!(
        "cairn_http_request_duration_seconds",
        "route" => route.to_string()
    )
    .record(took.as_secs_f64());
}

/// Counts one answered XML API call: `interface` and `call` as the packet named them
/// (`unknown` when it could not be read), `code` the first error code of the answer or `ok`.
pub fn record_xml(interface: &str, call: &str, code: &str, took: Duration) {
    let labels = [
        ("interface", interface.to_string()),
        ("call", call.to_string()),
        ("code", code.to_string()),
    ];
    metrics::counter!("cairn_xml_requests_total", &labels).increment(1);
    metrics::histogram!("cairn_xml_request_duration_seconds", "call" => call.to_string())
        .record(took.as_secs_f64());
}

/// Open XML API connections (`delta` +1 on accept, -1 on close).
pub fn xml_connections(delta: f64) {
    metrics::gauge!("cairn_xml_connections").increment(delta);
}

/// What the login gate is doing, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoginStats {
    /// Verifications running now.
    pub hashing: usize,
    /// The most verifications that ever ran at once.
    pub peak_hashing: usize,
    /// Logins waiting for a verification slot.
    pub waiting: usize,
    /// Failed logins in their delay.
    pub delaying: usize,
    /// Logins refused as busy so far.
    pub busy: u64,
}

/// The login gate's state (password verifications running, their high-water mark, logins
/// waiting for a slot, failed ones in their delay).
pub fn login_gate(s: &LoginStats) {
    metrics::gauge!("cairn_auth_hashing").set(s.hashing as f64);
    metrics::gauge!("cairn_auth_hashing_peak").set(s.peak_hashing as f64);
    metrics::gauge!("cairn_auth_waiting").set(s.waiting as f64);
    metrics::gauge!("cairn_auth_delaying").set(s.delaying as f64);
}

/// Counts one login refused at once as busy.
pub fn login_busy() {
    metrics::counter!("cairn_auth_busy_total").increment(1);
}

/// The XML adapter's outgoing queues: packets and bytes waiting to be written, summed over
/// connections (`delta` on each change), and the most packets one connection ever held.
pub fn xml_queued(packets: f64, bytes: f64) {
    metrics::gauge!("cairn_xml_queued_packets").increment(packets);
    metrics::gauge!("cairn_xml_queued_bytes").increment(bytes);
}

/// The most packets and bytes one XML connection's queue ever held (a high-water mark).
pub fn xml_queue_peak(packets: usize, bytes: usize) {
    metrics::gauge!("cairn_xml_queue_peak_packets").set(packets as f64);
    metrics::gauge!("cairn_xml_queue_peak_bytes").set(bytes as f64);
}

/// Counts one time an XML connection stopped reading because its queue was full.
pub fn xml_read_paused() {
    metrics::counter!("cairn_xml_read_pauses_total").increment(1);
}

/// Reads the cluster's figures into gauges; a node that does not answer in 2 s is shown
/// with `cairn_node_up 0`.
pub async fn refresh_cluster(c: &cairn_api::Client) {
    let jobs = c
        .list_jobs(&cairn_api::JobFilter {
            limit: u32::MAX,
            ..Default::default()
        })
        .await;
    if let Ok(jobs) = jobs {
        for state in cairn_core::job::JobState::ALL {
            let n = jobs.iter().filter(|j| j.job.state == state).count();
            metrics::gauge!("cairn_jobs", "state" => state.as_str()).set(n as f64);
        }
    }
    // Every node of the placement, by id; a node that does not answer in 2 s shows
    // `cairn_node_up 0` (a cluster still forming: the node the client knows).
    let nodes: Vec<(Option<u64>, String)> = match c.placement() {
        Some(p) => p
            .nodes
            .iter()
            .map(|n| (Some(n.id), n.addr.clone()))
            .collect(),
        None => c.node_urls().into_iter().map(|u| (None, u)).collect(),
    };
    for (id, url) in nodes {
        let st = tokio::time::timeout(Duration::from_secs(2), c.node_status_at(&url)).await;
        let st = match st {
            Ok(Ok(st)) => st,
            _ => {
                if let Some(id) = id {
                    metrics::gauge!("cairn_node_up", "node" => id.to_string()).set(0.0);
                }
                continue;
            }
        };
        let node = st.node_id.to_string();
        let g = |name: &'static str, v: u64| {
            metrics::gauge!(name, "node" => node.clone()).set(v as f64);
        };
        g("cairn_node_up", 1);
        g("cairn_raft_term", st.term);
        g("cairn_raft_leader", st.leader.unwrap_or(0));
        g("cairn_raft_commit_index", st.commit_index);
        g("cairn_raft_last_log_index", st.last_log_index);
        g("cairn_chunk_store_chunks", st.chunks);
        g("cairn_chunk_store_bytes", st.stored_bytes);
        g("cairn_ingested_logical_bytes", st.logical_bytes);
        g("cairn_repair_backlog", st.repair_backlog);
        g("cairn_catalog_backups", st.backups);
    }
}

/// The Prometheus text exposition of everything recorded.
pub fn render() -> String {
    match HANDLE.get() {
        Some(Some(h)) => h.render(),
        _ => String::new(),
    }
}
