//! The XML adapter's connections: NUL-framed packets in both directions, a greeting on
//! connect, `system` calls (login, get_realm, cancel) answered in order, `backupm` calls run
//! concurrently (many in flight per connection), answers and progress packets written by
//! one writer task in the order they are produced.
//!
//! Nothing but `system/get_realm` and `system/login` is served before a login succeeds; the
//! session is the TCP connection. A packet over the cap, malformed XML, an unknown interface
//! or call each get an `error` packet (with the request's id whenever it could be read) and
//! the connection goes on; a connection idle for `idle_timeout` is closed.
//!
//! # The outgoing queue, and backpressure
//!
//! Every packet for the client (answers, progress packets, errors) goes into one queue per
//! connection, written by the connection's writer task in the order queued, so a call's
//! progress packets arrive in order and before its answer. The queue is bounded by
//! `max_queued_packets` and `max_queued_bytes`, and nothing is ever dropped to keep it so;
//! instead the producers wait for room:
//!
//! 1. the reader decodes one packet at a time (it feeds the decoder up to the next NUL
//!    only), and before handling each it waits until the queue is below both bounds. While it
//!    waits it does not read the socket, so the kernel's receive buffer fills and TCP's window
//!    pushes back on the client: a client that writes `x\0` forever and never reads costs one
//!    full queue, not an answer per packet;
//! 2. a running `backupm` call is polled only while the queue has room ([`paced`]): a call
//!    whose client does not read pauses between two of its awaits, and its final answer also
//!    waits for room;
//! 3. a write that takes longer than `idle_timeout` (the client reads nothing) or fails
//!    closes the connection: the queue is freed, and the reader and the calls stop waiting.
//!
//! Room is checked before a packet is added, so the queue exceeds its bounds only by packets
//! admitted while it still had room: at most one answer of the reader, and per running call
//! (at most `max_in_flight`) the packets of one step between two awaits (two progress packets
//! of `backupm`'s job wait) and its answer. So one connection holds at most about
//! `max_packet_bytes` (the unfinished packet) + 64 KiB (the read buffer) + `max_queued_bytes`
//! (+ that overshoot) — with the defaults about 1.3 MiB — and the adapter at most
//! `max_connections` times that. [`XmlState::queue_stats`] and the `cairn_xml_queue_*`
//! metrics show the high-water marks.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};

use super::answer::{b64_of, enc, error_packet, response, with_cookie};
use super::backupm;
use super::error::{code, XmlError};
use super::frame::{frame, FrameDecoder, FrameError};
use super::packet::{parse_packet, salvage_id, write_packet, Element};
use crate::users::{Identity, LoginError, Users, BUSY_RETRY_AFTER};
use crate::ClusterLink;

/// The `system` calls served.
pub const SYSTEM_CALLS: [&str; 3] = ["get_realm", "login", "cancel"];

/// The system realm, the only one users log in to.
pub const SYSTEM_REALM: &str = "00000000-0000-0000-0000-000000000000";

/// The XML listener's settings.
#[derive(Clone, Debug, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct XmlConfig {
    /// Plain TCP (the real agent's 4433).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Largest packet accepted (bytes).
    #[serde(default = "default_max_packet")]
    pub max_packet_bytes: usize,
    /// Open connections served at once (both listeners together); one more gets an error
    /// packet (311) and is closed. Each holds at most `max_packet_bytes` of an unfinished
    /// packet, so this bounds the adapter's memory.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// `backupm` requests running at once on one connection; one more is answered with
    /// error 314 at once (the connection is still read, so `system/cancel` gets through).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Packets waiting to be written to one connection (answers, progress, errors); while
    /// this many wait, the connection is not read (see the module doc).
    #[serde(default = "default_max_queued_packets")]
    pub max_queued_packets: usize,
    /// Bytes waiting to be written to one connection; the same rule as `max_queued_packets`.
    #[serde(default = "default_max_queued_bytes")]
    pub max_queued_bytes: usize,
    /// A connection that sends nothing for this long is closed (seconds); so is one that
    /// takes none of an answer for this long.
    #[serde(default = "default_idle")]
    pub idle_timeout_secs: u64,
    /// TLS listener (the real agent's 4434), served when `tls_cert` and `tls_key` are set.
    #[serde(default = "default_tls_listen")]
    pub tls_listen: SocketAddr,
    /// PEM certificate chain and key for `tls_listen`.
    #[serde(default)]
    pub tls_cert: Option<std::path::PathBuf>,
    #[serde(default)]
    pub tls_key: Option<std::path::PathBuf>,
}

fn default_tls_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 4434))
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 4433))
}
fn default_max_packet() -> usize {
    1 << 20
}
fn default_max_in_flight() -> usize {
    64
}
fn default_max_connections() -> usize {
    1024
}
fn default_max_queued_packets() -> usize {
    128
}
fn default_max_queued_bytes() -> usize {
    256 * 1024
}
fn default_idle() -> u64 {
    600
}

impl Default for XmlConfig {
    fn default() -> Self {
        XmlConfig {
            listen: default_listen(),
            max_packet_bytes: default_max_packet(),
            max_connections: default_max_connections(),
            max_in_flight: default_max_in_flight(),
            max_queued_packets: default_max_queued_packets(),
            max_queued_bytes: default_max_queued_bytes(),
            idle_timeout_secs: default_idle(),
            tls_listen: default_tls_listen(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// What every connection shares.
pub struct XmlState {
    pub link: ClusterLink,
    pub users: Arc<Users>,
    pub max_packet_bytes: usize,
    pub idle_timeout: Duration,
    connections: AtomicU64,
    /// One permit per connection being served.
    slots: Arc<tokio::sync::Semaphore>,
    max_connections: usize,
    max_in_flight: usize,
    max_queued_packets: usize,
    max_queued_bytes: usize,
    peaks: Arc<QueuePeaks>,
    /// The ports this adapter listens on (plain and TLS): a `backup_server` naming this
    /// host at one of them is this cluster.
    pub(crate) ports: Mutex<Vec<u16>>,
}

impl XmlState {
    fn new(cfg: &XmlConfig, link: ClusterLink, users: Arc<Users>) -> XmlState {
        XmlState {
            link,
            users,
            max_packet_bytes: cfg.max_packet_bytes,
            idle_timeout: Duration::from_secs(cfg.idle_timeout_secs.max(1)),
            connections: AtomicU64::new(0),
            slots: Arc::new(tokio::sync::Semaphore::new(cfg.max_connections.max(1))),
            max_connections: cfg.max_connections.max(1),
            max_in_flight: cfg.max_in_flight.max(1),
            max_queued_packets: cfg.max_queued_packets.max(1),
            max_queued_bytes: cfg.max_queued_bytes.max(1),
            peaks: Arc::new(QueuePeaks::default()),
            ports: Mutex::new(Vec::new()),
        }
    }

    /// The outgoing queues' high-water marks over every connection so far.
    pub fn queue_stats(&self) -> QueueStats {
        QueueStats {
            peak_packets: self.peaks.packets.load(Ordering::Relaxed),
            peak_bytes: self.peaks.bytes.load(Ordering::Relaxed),
            read_pauses: self.peaks.pauses.load(Ordering::Relaxed),
        }
    }
}

/// What the outgoing queues have held at most (see the module doc).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// The most packets one connection's queue held at once.
    pub peak_packets: usize,
    /// The most bytes one connection's queue held at once.
    pub peak_bytes: usize,
    /// How often a connection stopped reading because its queue was full.
    pub read_pauses: u64,
}

#[derive(Default)]
struct QueuePeaks {
    packets: AtomicUsize,
    bytes: AtomicUsize,
    pauses: AtomicU64,
}

/// The count of one connection's outgoing queue (the packets themselves are in a channel to
/// the writer task), and the room producers wait for.
struct Queue {
    packets: AtomicUsize,
    bytes: AtomicUsize,
    max_packets: usize,
    max_bytes: usize,
    /// Set when the writer gave up: nothing more is queued, nobody waits for room.
    closed: AtomicBool,
    /// Woken when room is made or the queue is closed.
    changed: Notify,
    peaks: Arc<QueuePeaks>,
}

impl Queue {
    fn new(state: &XmlState) -> Queue {
        Queue {
            packets: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            max_packets: state.max_queued_packets,
            max_bytes: state.max_queued_bytes,
            closed: AtomicBool::new(false),
            changed: Notify::new(),
            peaks: state.peaks.clone(),
        }
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Below both bounds (or closed: nobody should wait any more).
    fn has_room(&self) -> bool {
        self.is_closed()
            || (self.packets.load(Ordering::Acquire) < self.max_packets
                && self.bytes.load(Ordering::Acquire) < self.max_bytes)
    }

    /// Waits until [`Queue::has_room`], re-checking whenever room is made or the queue closes.
    async fn room(&self) {
        loop {
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            // Registered before the check, so a change made in between is not missed.
            changed.as_mut().enable();
            if self.has_room() {
                return;
            }
            changed.await;
        }
    }

    /// Counts a packet about to be queued.
    fn added(&self, len: usize) {
        let packets = self.packets.fetch_add(1, Ordering::AcqRel) + 1;
        let bytes = self.bytes.fetch_add(len, Ordering::AcqRel) + len;
        crate::metrics::xml_queued(1.0, len as f64);
        let p = self.peaks.packets.fetch_max(packets, Ordering::Relaxed);
        let b = self.peaks.bytes.fetch_max(bytes, Ordering::Relaxed);
        if packets > p || bytes > b {
            crate::metrics::xml_queue_peak(packets.max(p), bytes.max(b));
        }
    }

    /// Counts a packet written (or dropped with the connection) and wakes who waits for room.
    fn removed(&self, len: usize) {
        self.packets.fetch_sub(1, Ordering::AcqRel);
        self.bytes.fetch_sub(len, Ordering::AcqRel);
        crate::metrics::xml_queued(-1.0, -(len as f64));
        if self.has_room() {
            self.changed.notify_waiters();
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.changed.notify_waiters();
    }
}

/// Runs `fut`, polling it only while `queue` has room: a call whose client does not read its
/// answers pauses between two awaits instead of queueing more progress packets.
async fn paced<F: Future>(queue: &Queue, fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    loop {
        queue.room().await;
        let step = std::future::poll_fn(|cx| {
            if !queue.has_room() {
                return Poll::Ready(None);
            }
            fut.as_mut().poll(cx).map(Some)
        })
        .await;
        if let Some(out) = step {
            return out;
        }
    }
}

/// One connection's session.
pub(crate) struct Session {
    pub who: Mutex<Option<Identity>>,
    /// Running jobs by the id of the packet that asked for them (for `system/cancel`).
    pub jobs: Mutex<HashMap<String, uuid::Uuid>>,
    /// This connection's name as responses' `target` (`vzclientN`).
    pub client: String,
    /// The address the client connected to (this side of the socket), when known.
    pub local: Option<SocketAddr>,
    /// Requests still running: a connection waiting for them is not idle.
    pub in_flight: std::sync::atomic::AtomicUsize,
    out: mpsc::UnboundedSender<Vec<u8>>,
    queue: Arc<Queue>,
}

impl Session {
    /// Queues a packet for the writer. Never blocks and never drops a packet of a live
    /// connection: the bound is kept by the producers waiting for room first (module doc).
    pub fn send(&self, packet: &Element) {
        if self.queue.is_closed() {
            return;
        }
        let bytes = frame(write_packet(packet));
        let len = bytes.len();
        // Counted before it is in the channel, so the writer never uncounts it first.
        self.queue.added(len);
        if self.out.send(bytes).is_err() {
            self.queue.removed(len);
        }
    }

    /// Waits until this connection's queue has room for one more answer; false when the
    /// connection is to be closed (the writer gave up: a write failed, or the client took
    /// none of an answer for `idle_timeout`).
    async fn room_for_answer(&self, state: &XmlState) -> bool {
        if !self.queue.has_room() {
            state.peaks.pauses.fetch_add(1, Ordering::Relaxed);
            crate::metrics::xml_read_paused();
        }
        self.queue.room().await;
        !self.queue.is_closed()
    }

    /// Who logged in on this connection, or 304.
    fn identity(&self) -> Result<Identity, XmlError> {
        self.who
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| XmlError::new(code::NOT_LOGGED_IN, "log in first (system/login)"))
    }

    /// Queues the final answer to a request that arrived at `started`, counting it in the
    /// metrics by interface, `call` and outcome (the first error code, or `ok`).
    fn answer(&self, packet: &Element, call: &str, started: Instant) {
        // Interface names are the client's to choose; labels must stay few.
        let interface = packet
            .text_of("origin")
            .filter(|i| matches!(*i, "system" | "backupm"))
            .unwrap_or("other");
        let code = packet
            .child("data")
            .and_then(|d| d.children.first())
            .and_then(|i| i.child("error"))
            .and_then(|e| e.text_of("code"))
            .unwrap_or("ok");
        crate::metrics::record_xml(interface, call, code, started.elapsed());
        self.send(packet);
    }
}

/// A running XML listener (and its TLS twin when configured).
pub struct XmlServer {
    pub addr: SocketAddr,
    pub tls_addr: Option<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl XmlServer {
    pub fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Starts the XML adapter.
pub async fn serve_xml(
    cfg: &XmlConfig,
    link: ClusterLink,
    users: Arc<Users>,
) -> anyhow::Result<XmlServer> {
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} for the XML API: {e}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let state = Arc::new(XmlState::new(cfg, link, users));
    state
        .ports
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(addr.port());
    let tls = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(c), Some(k)) => Some(crate::tls_acceptor(c, k)?),
        (None, None) => None,
        _ => anyhow::bail!("xml: tls_cert and tls_key go together"),
    };
    let mut tasks = vec![tokio::spawn(accept(listener, state.clone(), None))];
    let mut tls_addr = None;
    if let Some(acceptor) = tls {
        let l = TcpListener::bind(cfg.tls_listen).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {} for the XML API over TLS: {e}",
                cfg.tls_listen
            )
        })?;
        let bound = l.local_addr()?;
        tls_addr = Some(bound);
        state
            .ports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(bound.port());
        tasks.push(tokio::spawn(accept(l, state, Some(acceptor))));
    }
    tracing::info!(addr = %addr, tls = ?tls_addr, "XML API (Virtuozzo backupm) listening");
    Ok(XmlServer {
        addr,
        tls_addr,
        tasks,
    })
}

async fn accept(
    listener: TcpListener,
    state: Arc<XmlState>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "XML accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok();
        let state = state.clone();
        let tls = tls.clone();
        // Taken before a TLS handshake, so handshakes count against the limit too.
        let slot = state.slots.clone().try_acquire_owned().ok();
        tokio::spawn(async move {
            match tls {
                None => {
                    let (r, w) = stream.into_split();
                    serve(state, slot, local, r, w).await;
                }
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(30), acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(s)) => {
                            let (r, w) = tokio::io::split(s);
                            serve(state, slot, local, r, w).await;
                        }
                        _ => tracing::debug!(peer = %peer, "XML TLS handshake failed"),
                    }
                }
            }
            tracing::debug!(peer = %peer, "XML connection closed");
        });
    }
}

/// Serves a connection that holds a slot; refuses one that does not with an error packet.
async fn serve<R, W>(
    state: Arc<XmlState>,
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
    local: Option<SocketAddr>,
    r: R,
    mut w: W,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let Some(_slot) = slot else {
        tracing::warn!(
            max = state.max_connections,
            "XML connection refused: too many open connections"
        );
        let refusal = error_packet(
            None,
            "vzclient",
            "system",
            &XmlError::new(
                code::UNAVAILABLE,
                format!(
                    "too many open connections (at most {}); try again later",
                    state.max_connections
                ),
            ),
        );
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = w.write_all(&frame(write_packet(&refusal))).await;
            let _ = w.shutdown().await;
        })
        .await;
        return;
    };
    connection_at(state, local, r, w).await;
}

/// Serves one connection until the peer closes it, it idles out, or a write fails or takes
/// longer than `idle_timeout`.
pub async fn connection<R, W>(state: Arc<XmlState>, r: R, w: W)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    connection_at(state, None, r, w).await
}

/// [`connection`] of a socket whose own address is `local` (what a `backup_server` naming
/// this host is compared with).
pub async fn connection_at<R, W>(state: Arc<XmlState>, local: Option<SocketAddr>, mut r: R, w: W)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let n = state.connections.fetch_add(1, Ordering::Relaxed) + 1;
    crate::metrics::xml_connections(1.0);
    let (tx, rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let queue = Arc::new(Queue::new(&state));
    let writer = tokio::spawn(write_packets(w, rx, queue.clone(), state.idle_timeout));
    let session = Arc::new(Session {
        who: Mutex::new(None),
        jobs: Mutex::new(HashMap::new()),
        client: format!("vzclient{n}"),
        local,
        in_flight: std::sync::atomic::AtomicUsize::new(0),
        out: tx,
        queue,
    });
    session.send(&greeting(&session.client));
    let mut decoder = FrameDecoder::new(state.max_packet_bytes);
    let mut buf = vec![0u8; 64 * 1024];
    'read: loop {
        let read = match tokio::time::timeout(state.idle_timeout, r.read(&mut buf)).await {
            Err(_) if session.in_flight.load(Ordering::Relaxed) > 0 => continue,
            Err(_) => {
                tracing::debug!(client = %session.client, "idle XML connection closed");
                break;
            }
            Ok(Err(_)) | Ok(Ok(0)) => break,
            Ok(Ok(n)) => n,
        };
        let mut rest = &buf[..read];
        while !rest.is_empty() {
            // Up to the next NUL only: one packet is decoded at a time, so what was read but
            // not yet answered stays in `buf` while the reader waits for room.
            let cut = rest
                .iter()
                .position(|&b| b == 0)
                .map_or(rest.len(), |i| i + 1);
            decoder.push(&rest[..cut]);
            rest = &rest[cut..];
            while let Some(next) = decoder.next_packet() {
                if !session.room_for_answer(&state).await {
                    break 'read;
                }
                match next {
                    Err(e) => {
                        let FrameError::TooLarge { head, .. } = &e;
                        session.answer(
                            &error_packet(
                                salvage_id(head).as_deref(),
                                &session.client,
                                "system",
                                &XmlError::new(code::TOO_LARGE, e.to_string()),
                            ),
                            "unknown",
                            Instant::now(),
                        )
                    }
                    Ok(bytes) => handle(&state, &session, &bytes).await,
                }
            }
        }
    }
    // Jobs the connection started go on: a disconnected client does not stop a backup. The
    // writer flushes what they still send, until the last of them drops the session.
    drop(session);
    let _ = writer.await;
    crate::metrics::xml_connections(-1.0);
}

/// The writer task: writes queued packets in order until every sender is gone, or a write
/// fails or takes longer than `timeout`; then closes the queue and frees what is left.
async fn write_packets<W>(
    mut w: W,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    queue: Arc<Queue>,
    timeout: Duration,
) where
    W: AsyncWrite + Unpin,
{
    let mut failed = false;
    while let Some(bytes) = rx.recv().await {
        let written = matches!(
            tokio::time::timeout(timeout, w.write_all(&bytes)).await,
            Ok(Ok(()))
        );
        queue.removed(bytes.len());
        if !written {
            tracing::debug!("XML connection closed: a write failed or its client read nothing");
            failed = true;
            break;
        }
    }
    if !failed {
        let _ = tokio::time::timeout(timeout, w.shutdown()).await;
    }
    queue.close();
    rx.close();
    while let Ok(bytes) = rx.try_recv() {
        queue.removed(bytes.len());
    }
}

fn greeting(client: &str) -> Element {
    response(
        None,
        client,
        "system",
        vec![Element::new("version").with_text(format!(
            "cairn {} (Virtuozzo Agent XML API 4.0.0 backupm)",
            env!("CARGO_PKG_VERSION")
        ))],
    )
}

/// A `backupm` call's view of its connection ([`backupm::Connection`]).
struct CallConn {
    state: Arc<XmlState>,
    session: Arc<Session>,
}

impl backupm::Connection for CallConn {
    fn link(&self) -> &ClusterLink {
        &self.state.link
    }
    fn client(&self) -> &str {
        &self.session.client
    }
    fn local(&self) -> Option<SocketAddr> {
        self.session.local
    }
    fn ports(&self) -> Vec<u16> {
        self.state
            .ports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
    fn send(&self, packet: &Element) {
        self.session.send(packet)
    }
    fn job_started(&self, request: &str, job: uuid::Uuid) {
        self.session
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(request.to_string(), job);
    }
    fn job_ended(&self, request: &str) {
        self.session
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(request);
    }
}

async fn handle(state: &Arc<XmlState>, session: &Arc<Session>, bytes: &[u8]) {
    let started = Instant::now();
    let root = match parse_packet(bytes) {
        Ok(r) => r,
        Err(e) => {
            let id = salvage_id(bytes);
            session.answer(
                &error_packet(
                    id.as_deref(),
                    &session.client,
                    "system",
                    &XmlError::new(code::MALFORMED, e.to_string()),
                ),
                "unknown",
                started,
            );
            return;
        }
    };
    let id = root.attr("id").map(str::to_string);
    let cookie = root.child("cookie").cloned();
    let interface = root
        .text_of("target")
        .filter(|t| !t.is_empty())
        .unwrap_or("system")
        .to_string();
    let Some(body) = root
        .child("data")
        .and_then(|d| d.child(&interface).or_else(|| d.children.first()))
    else {
        session.answer(
            &error_packet(
                id.as_deref(),
                &session.client,
                &interface,
                &XmlError::new(code::MALFORMED, "the packet has no data for its interface"),
            ),
            "unknown",
            started,
        );
        return;
    };
    // The call, as a metrics label: one of the interface's, or `other` (names are the
    // client's to choose, and labels must stay few).
    let call: &'static str = match body.children.first() {
        None => "none",
        Some(c) => SYSTEM_CALLS
            .iter()
            .chain(&backupm::CALLS)
            .find(|k| **k == backupm::canonical(&c.name))
            .copied()
            .unwrap_or("other"),
    };
    if body.name != interface {
        session.answer(
            &error_packet(
                id.as_deref(),
                &session.client,
                &interface,
                &XmlError::new(
                    code::MALFORMED,
                    format!(
                        "the data is for {:?}, the target is {interface:?}",
                        body.name
                    ),
                ),
            ),
            "unknown",
            started,
        );
        return;
    }
    match interface.as_str() {
        "system" => {
            let out = system(state, session, id.as_deref(), body).await;
            let packet = match out {
                Ok(els) => response(id.as_deref(), &session.client, "system", els),
                Err(e) => error_packet(id.as_deref(), &session.client, "system", &e),
            };
            let packet = with_cookie(packet, cookie.as_ref());
            session.answer(&packet, call, started);
        }
        "backupm" => {
            let who = match session.identity() {
                Ok(who) => who,
                Err(e) => {
                    let packet = error_packet(id.as_deref(), &session.client, "backupm", &e);
                    let packet = with_cookie(packet, cookie.as_ref());
                    session.answer(&packet, call, started);
                    return;
                }
            };
            if session.in_flight.fetch_add(1, Ordering::Relaxed) >= state.max_in_flight {
                session.in_flight.fetch_sub(1, Ordering::Relaxed);
                let busy = XmlError::new(
                    code::BUSY,
                    format!(
                        "too many requests in flight on this connection (at most {}); wait for answers first",
                        state.max_in_flight
                    ),
                );
                let packet = error_packet(id.as_deref(), &session.client, "backupm", &busy);
                let packet = with_cookie(packet, cookie.as_ref());
                session.answer(&packet, call, started);
                return;
            }
            let (state, session, body) = (state.clone(), session.clone(), body.clone());
            let progress = root.attr("progress") == Some("on") && id.is_some();
            tokio::spawn(async move {
                let conn = CallConn {
                    state: state.clone(),
                    session: session.clone(),
                };
                let run =
                    backupm::call(&conn, &who, id.as_deref(), progress, cookie.as_ref(), &body);
                let els = paced(&session.queue, run).await;
                let packet = response(id.as_deref(), &session.client, "backupm", els);
                let packet = with_cookie(packet, cookie.as_ref());
                session.queue.room().await;
                // Counted out before the answer goes: a client that sends its next request
                // on reading it never finds this one still counted.
                session.in_flight.fetch_sub(1, Ordering::Relaxed);
                session.answer(&packet, call, started);
            });
        }
        other => session.answer(
            &error_packet(
                id.as_deref(),
                &session.client,
                other,
                &XmlError::new(
                    code::UNKNOWN_INTERFACE,
                    format!("no interface {other:?} here: this agent serves backupm and system"),
                ),
            ),
            "other",
            started,
        ),
    }
}

async fn system(
    state: &Arc<XmlState>,
    session: &Arc<Session>,
    _id: Option<&str>,
    body: &Element,
) -> Result<Vec<Element>, XmlError> {
    let Some(call) = body.children.first() else {
        return Err(XmlError::new(
            code::UNKNOWN_CALL,
            "no call in the system data",
        ));
    };
    match call.name.as_str() {
        "get_realm" => Ok(vec![Element::new("realm")
            .with_child(Element::new("id").with_text(SYSTEM_REALM))
            .with_child(Element::new("name").with_text("system"))
            .with_child(Element::new("type").with_text("0"))]),
        "login" => {
            let name = b64_of(call, "name")?
                .ok_or_else(|| XmlError::new(code::BAD_PARAMETER, "login needs a name"))?;
            let password = b64_of(call, "password")?
                .ok_or_else(|| XmlError::new(code::BAD_PARAMETER, "login needs a password"))?;
            if let Some(realm) = call.text_of("realm") {
                if !realm.is_empty() && realm != SYSTEM_REALM {
                    return Err(XmlError::new(
                        code::LOGIN_FAILED,
                        format!(
                            "realm {realm} is not served here; use the system realm {SYSTEM_REALM}"
                        ),
                    ));
                }
            }
            let who = state
                .users
                .login(&name, &password)
                .await
                .map_err(|e| match e {
                    LoginError::Refused(_) => {
                        XmlError::new(code::LOGIN_FAILED, "wrong name or password")
                    }
                    LoginError::Busy => XmlError::new(
                        code::LOGIN_BUSY,
                        format!(
                            "too many logins are being checked; log in again in {} s",
                            BUSY_RETRY_AFTER.as_secs()
                        ),
                    ),
                })?;
            let role = who.role;
            *session.who.lock().unwrap_or_else(|p| p.into_inner()) = Some(who);
            Ok(vec![Element::new("token")
                .with_child(Element::new("user").with_text(enc(&name)))
                .with_child(Element::new("groups").with_child(
                    Element::new("sid").with_text(enc(role.as_str())),
                ))])
        }
        "cancel" => {
            let who = crate::access::principal(&session.identity()?, "xml");
            crate::access::admit(cairn_core::auth::Interface::Xml, "system/cancel", &who)
                .map_err(|why| XmlError::new(code::FORBIDDEN, why))?;
            let target = call
                .text_of("message_id")
                .ok_or_else(|| XmlError::new(code::BAD_PARAMETER, "cancel needs a message_id"))?
                .to_string();
            let job = session
                .jobs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&target)
                .copied()
                .ok_or_else(|| {
                    XmlError::new(
                        code::NOT_FOUND,
                        format!("no running request with id {target:?} on this connection"),
                    )
                })?;
            let cluster = state
                .link
                .get()
                .ok_or_else(|| {
                    XmlError::new(code::UNAVAILABLE, "the storage cluster cannot answer now")
                })?
                .acting_for(&who);
            cluster.cancel_job(job).await?;
            Ok(vec![Element::new("ok")])
        }
        other => {
            session.identity()?;
            Err(XmlError::new(
                code::UNKNOWN_CALL,
                format!("no system call {other:?} here"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::UsersFile;

    fn state(cfg: XmlConfig) -> Arc<XmlState> {
        let users = Arc::new(Users::from_list(UsersFile::default()));
        Arc::new(XmlState::new(&cfg, ClusterLink::default(), users))
    }

    /// The envelope of the specification's answers: `priority="4000"`, `origin`, `target`,
    /// `dst` with an unprefixed `director`, `data`, then `src/director`.
    #[test]
    fn answers_carry_the_specs_envelope() {
        let p = response(Some("7"), "vzclient3", "backupm", vec![Element::new("ok")]);
        assert_eq!(p.attr("priority"), Some("4000"));
        let order: Vec<&str> = p.children.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(order, ["origin", "target", "dst", "data", "src"]);
        assert_eq!(
            p.path(&["src", "director"]).map(|d| d.text.as_str()),
            Some("gend")
        );
        let text = String::from_utf8(write_packet(&p)).unwrap();
        assert!(
            text.contains("<ns1:dst><director>gend</director></ns1:dst>"),
            "{text}"
        );
        assert!(
            text.contains(
                "</ns1:data><ns1:src><ns1:director>gend</ns1:director></ns1:src></ns1:packet>"
            ),
            "{text}"
        );
        assert!(text.contains(" priority=\"4000\""), "{text}");
        // The greeting and error packets too.
        for p in [
            greeting("vzclient1"),
            error_packet(None, "vzclient1", "system", &XmlError::new(300, "x")),
        ] {
            assert_eq!(p.attr("priority"), Some("4000"));
            assert!(p.has("src"));
        }
    }

    /// Polls `ready` every few milliseconds until it holds; panics after `deadline`.
    async fn until(deadline: Duration, what: &str, ready: impl Fn() -> bool) {
        let end = Instant::now() + deadline;
        while !ready() {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The packets of a byte stream the server wrote (NUL-terminated).
    fn packets(bytes: &[u8]) -> Vec<String> {
        let mut out: Vec<String> = bytes
            .split(|b| *b == 0)
            .map(|p| String::from_utf8_lossy(p).to_string())
            .collect();
        assert_eq!(out.pop().as_deref(), Some(""), "the stream ends with a NUL");
        out
    }

    const FLOOD: usize = 5000;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_never_reads_stops_being_read() {
        let state = state(XmlConfig {
            max_queued_packets: 16,
            ..XmlConfig::default()
        });
        // The pipe holds 4 KiB each way, as a socket's buffers would.
        let (client, server) = tokio::io::duplex(4096);
        let (sr, sw) = tokio::io::split(server);
        let conn = tokio::spawn(connection(state.clone(), sr, sw));
        let (mut cr, mut cw) = tokio::io::split(client);
        // 10,000 bytes of malformed packets, each worth an error answer of ~400 bytes.
        let flood = tokio::spawn(async move {
            cw.write_all(&b"x\0".repeat(FLOOD)).await.unwrap();
            cw
        });
        until(Duration::from_secs(60), "the reader to pause", || {
            state.queue_stats().read_pauses > 0 || flood.is_finished()
        })
        .await;
        let stats = state.queue_stats();
        assert!(stats.peak_packets <= 16, "{stats:?}");
        assert!(stats.read_pauses > 0, "{stats:?}");
        // The reader stopped with most of the flood unread: the pipe pushes back.
        assert!(!flood.is_finished());

        // Once the client reads, every packet is answered, in order, none dropped.
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            cr.read_to_end(&mut all).await.unwrap();
            all
        });
        let mut cw = tokio::time::timeout(Duration::from_secs(60), flood)
            .await
            .expect("the flood is read once its answers are")
            .unwrap();
        cw.shutdown().await.unwrap();
        let all = tokio::time::timeout(Duration::from_secs(60), reader)
            .await
            .expect("the connection ends after the client's EOF")
            .unwrap();
        tokio::time::timeout(Duration::from_secs(60), conn)
            .await
            .unwrap()
            .unwrap();
        let answers = packets(&all);
        assert_eq!(answers.len(), FLOOD + 1);
        assert!(answers[0].contains("version"), "{}", answers[0]);
        for a in &answers[1..] {
            assert!(a.contains(">300<"), "{a}");
        }
        let stats = state.queue_stats();
        assert!(stats.peak_packets <= 16, "{stats:?}");
        assert!(stats.peak_bytes <= 16 * 1024, "{stats:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_reads_nothing_is_closed_after_the_idle_timeout() {
        let state = state(XmlConfig {
            max_queued_packets: 4,
            idle_timeout_secs: 1,
            ..XmlConfig::default()
        });
        let (client, server) = tokio::io::duplex(4096);
        let (sr, sw) = tokio::io::split(server);
        let conn = tokio::spawn(connection(state.clone(), sr, sw));
        let (_cr, mut cw) = tokio::io::split(client);
        let flood = tokio::spawn(async move {
            let _ = cw.write_all(&b"x\0".repeat(FLOOD)).await;
        });
        // Neither the full queue nor the stuck writer keep the connection (and its slot).
        tokio::time::timeout(Duration::from_secs(60), conn)
            .await
            .expect("the connection is closed")
            .unwrap();
        assert!(state.queue_stats().peak_packets <= 4);
        flood.abort();
    }

    /// Reads one NUL-terminated packet; panics after a minute without one.
    async fn next_packet(r: &mut (impl AsyncRead + Unpin)) -> String {
        let read = async {
            let mut p = Vec::new();
            loop {
                let b = r.read_u8().await.unwrap();
                if b == 0 {
                    return String::from_utf8(p).unwrap();
                }
                p.push(b);
            }
        };
        tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .expect("a packet within a minute")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_login_while_the_gate_is_full_is_answered_315_unless_cached() {
        let mut file = UsersFile::default();
        file.add("alice", crate::users::Role::Viewer, "alice-password")
            .unwrap();
        file.add("bob", crate::users::Role::Viewer, "bob-password")
            .unwrap();
        let users = Arc::new(Users::from_list(file));
        let state = Arc::new(XmlState::new(
            &XmlConfig::default(),
            ClusterLink::default(),
            users.clone(),
        ));
        // Alice logged in before (over REST, say): her success is cached.
        assert!(users.login("alice", "alice-password").await.is_ok());
        let full = users.occupy_gate().await;
        let (client, server) = tokio::io::duplex(1 << 16);
        let (sr, sw) = tokio::io::split(server);
        tokio::spawn(connection(state, sr, sw));
        let (mut cr, mut cw) = tokio::io::split(client);
        next_packet(&mut cr).await;
        let login = |id: &str, name: &str, password: &str| {
            format!(
                "<packet version=\"4.0.0\" id=\"{id}\"><data><system><login><name>{}</name><password>{}</password></login></system></data></packet>\0",
                enc(name),
                enc(password)
            )
        };
        cw.write_all(login("l1", "bob", "bob-password").as_bytes())
            .await
            .unwrap();
        let busy = next_packet(&mut cr).await;
        assert!(
            busy.contains("id=\"l1\"") && busy.contains(">315<"),
            "{busy}"
        );
        cw.write_all(login("l2", "alice", "alice-password").as_bytes())
            .await
            .unwrap();
        let ok = next_packet(&mut cr).await;
        assert!(ok.contains("id=\"l2\"") && ok.contains("token"), "{ok}");
        // Once the gate has room, Bob gets in too.
        drop(full);
        cw.write_all(login("l3", "bob", "bob-password").as_bytes())
            .await
            .unwrap();
        let ok = next_packet(&mut cr).await;
        assert!(ok.contains("id=\"l3\"") && ok.contains("token"), "{ok}");
    }

    #[tokio::test]
    async fn a_running_call_pauses_while_its_queue_is_full() {
        let state = state(XmlConfig {
            max_queued_packets: 4,
            ..XmlConfig::default()
        });
        let queue = Queue::new(&state);
        let steps = std::cell::Cell::new(0);
        // A call that queues one packet per step, like progress packets between polls.
        let call = async {
            for _ in 0..20 {
                queue.added(100);
                steps.set(steps.get() + 1);
                tokio::task::yield_now().await;
            }
            "answer"
        };
        let mut run = std::pin::pin!(paced(&queue, call));
        for _ in 0..50 {
            assert!(futures::poll!(run.as_mut()).is_pending());
        }
        assert_eq!(steps.get(), 4, "polled only while the queue had room");
        // One packet written: one more step, then it waits again.
        queue.removed(100);
        for _ in 0..50 {
            assert!(futures::poll!(run.as_mut()).is_pending());
        }
        assert_eq!(steps.get(), 5);
        // A writer keeping up: it runs to the end, and never past the bound.
        let out = loop {
            while queue.packets.load(Ordering::Relaxed) > 0 {
                queue.removed(100);
            }
            if let Poll::Ready(out) = futures::poll!(run.as_mut()) {
                break out;
            }
        };
        assert_eq!((out, steps.get()), ("answer", 20));
        assert_eq!(state.queue_stats().peak_packets, 4);
        // A closed queue never holds a call back.
        queue.close();
        let more = async {
            queue.added(100);
            queue.added(100);
        };
        tokio::time::timeout(Duration::from_secs(10), paced(&queue, more))
            .await
            .unwrap();
    }
}
