//! A connection to the cluster: typed calls over the gRPC clients.
//!
//! # Talking to a cluster
//! The client starts from one node (the seed URL) and learns the placement epoch from it:
//! the storage nodes with their addresses and the replication factor. From then on:
//! - chunk calls go to each chunk's primary owner (rendezvous hashing, the same computation
//!   every node makes), falling back to the next owner and then to any node when one does not
//!   answer or serves a copy that fails verification — so a dead node or a rotten copy costs
//!   a retry, never a failed restore;
//! - catalog calls go to the seed, which forwards them to the raft leader; when the seed does
//!   not answer or the cluster has no leader for a moment (an election), the call is retried
//!   with backoff on the other nodes, within a bounded time ([`CATALOG_RETRY_FOR`]).
//!
//! Every call carries the token of the [`Credentials`] the client was made with (a user
//! token, an agent token, or the cluster secret); the library never reads the environment —
//! the `cairn` command line resolves `CAIRN_TOKEN`/`CAIRN_CA`, the agent and gateway their
//! config files. A gateway's clone says whom it acts for ([`Client::acting_for`]); an
//! agent's reads name the backup they are for ([`Client::reading`]), as the cluster requires
//! of agents. A cluster at `https://` addresses is checked against the credentials' CA.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_chunker::EncodedChunk;
use cairn_core::placement::Epoch;
use cairn_core::retention::EnvConfig;
use cairn_core::{BackupId, BackupRecord, ChunkId, EnvId, ErrorCode};
use cairn_proto::pb::agents_client::AgentsClient;
use cairn_proto::pb::catalog_client::CatalogClient;
use cairn_proto::pb::chunks_client::ChunksClient;
use cairn_proto::pb::{self};
use cairn_proto::{AuthChannel, Token, MAX_MESSAGE};
use futures::{Stream, StreamExt};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::error::Error;
use crate::types::*;

/// The default cluster address (`cairn dev` listens here).
pub const DEFAULT_CLUSTER: &str = "http://127.0.0.1:7700";

/// Most chunk bytes per `Put` message.
const PUT_MESSAGE_BYTES: usize = 8 * 1024 * 1024;
/// How long a catalog call keeps retrying through elections and unreachable nodes.
pub const CATALOG_RETRY_FOR: Duration = Duration::from_secs(20);
/// How long one attempt of a catalog call may take (a node waits at most 10 s for a
/// quorum, and a commit also checks every chunk of the manifest).
const CATALOG_CALL_TIMEOUT: Duration = Duration::from_secs(600);
/// How long dialling a node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings while calls are open, and how long an answer may take: a connection that
/// died silently (a partition, a node's host gone) fails its calls and is dialled anew
/// instead of holding them until their own timeout. Generous, for agents on slow links.
const KEEPALIVE_EVERY: Duration = Duration::from_secs(10);
const KEEPALIVE_WAIT: Duration = Duration::from_secs(20);

type Catalog = CatalogClient<AuthChannel>;
/// Items grouped by the node to send them to, and the ids no node is left to try for.
type Grouped<T> = (BTreeMap<String, Vec<(ChunkId, T)>>, Vec<ChunkId>);
type Chunks = ChunksClient<AuthChannel>;

/// How a client proves who it is, and checks whom it talks to.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    /// A user token, an agent token or the cluster secret; none for a cluster without tokens.
    pub token: Option<String>,
    /// The PEM of the CA that signed the nodes' certificates (needed at `https://`).
    pub ca_pem: Option<Vec<u8>>,
}

impl Credentials {
    /// Credentials with `token` (blank is none) and no CA.
    pub fn token(token: Option<&str>) -> Credentials {
        Credentials {
            token: token.filter(|t| !t.is_empty()).map(str::to_string),
            ca_pem: None,
        }
    }

    /// These credentials checking nodes against the CA certificate in the PEM file `path`.
    pub fn with_ca_file(mut self, path: &std::path::Path) -> Result<Credentials, Error> {
        let pem = std::fs::read(path).map_err(|e| Error::Io {
            path: format!("CA certificate {}", path.display()),
            source: e,
        })?;
        self.ca_pem = Some(pem);
        Ok(self)
    }
}

/// A connected client of one cluster. Cloning is cheap; clones share connections.
#[derive(Clone)]
pub struct Client {
    pub url: String,
    /// Every address the client was given (the first that answered is `url`).
    seeds: Arc<Vec<String>>,
    inner: Arc<Inner>,
    /// The credentials of this clone's calls (and whom they are made for).
    token: Token,
    /// The backup chunk reads are for (agents must name it).
    reading: Option<BackupId>,
}

struct Inner {
    tls: Option<tonic::transport::ClientTlsConfig>,
    channels: Mutex<HashMap<String, Channel>>,
    placement: Mutex<Option<Epoch>>,
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut why = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        why = s.to_string();
        src = s.source();
    }
    why
}

/// Applies the CA to an `https://` endpoint; an https cluster without a CA is refused with
/// the fix.
fn with_tls(
    ep: Endpoint,
    tls: Option<&tonic::transport::ClientTlsConfig>,
) -> Result<Endpoint, Error> {
    cairn_proto::tls_endpoint(
        ep,
        tls,
        "give the client the PEM file of the CA that signed the cluster's certificates (the command line: CAIRN_CA; the agent and gateway: ca_file in their config)",
    )
    .map_err(Error::Invalid)
}

/// Turns a failed call to the node at `url` into an error; transport failures name the node.
///
/// Every answer a node makes carries a stable code, so a status without one comes from the
/// transport: the node did not answer (`unavailable`), or the connection broke mid-call —
/// a node killed while it streams answers `unknown: transport error`, an h2 reset
/// `cancelled` or `internal`. All of them are worth trying on another node.
pub(crate) fn call_error(url: &str, s: tonic::Status) -> Error {
    let transport = matches!(
        s.code(),
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
            | tonic::Code::Internal
            | tonic::Code::DeadlineExceeded
    );
    if transport && cairn_proto::stable_code(&s).is_none() {
        Error::Unreachable {
            url: url.to_string(),
            why: s.message().to_string(),
        }
    } else {
        Error::from(s)
    }
}

/// Keeps the more telling of two failures: an answer from a node (a stable code, such as
/// "too few copies") says more than a node that did not answer.
fn keep_error(best: &mut Option<Error>, e: Error) {
    let replace = match best {
        None => true,
        Some(Error::Unreachable { .. }) => !matches!(e, Error::Unreachable { .. }),
        Some(_) => false,
    };
    if replace {
        *best = Some(e);
    }
}

/// The error of a call that gave up: the most telling answer, and every node tried with
/// the last reason it gave.
fn gave_up(best: Error, tried: &[(String, String)]) -> Error {
    let list = tried
        .iter()
        .map(|(u, why)| format!("{u}: {why}"))
        .collect::<Vec<_>>()
        .join("; ");
    match best {
        Error::Unreachable { url, why } if tried.len() <= 1 => Error::Unreachable { url, why },
        Error::Unreachable { .. } => Error::Cluster {
            code: ErrorCode::Unavailable,
            message: format!(
                "no node of the cluster answered within {}s (tried {list})",
                CATALOG_RETRY_FOR.as_secs()
            ),
        },
        Error::Cluster { code, message } => Error::Cluster {
            code,
            message: format!("{message} (tried {list})"),
        },
        other => other,
    }
}

/// Tells whether a failed call may succeed on another node or a moment later.
fn retryable(e: &Error) -> bool {
    match e {
        Error::Unreachable { .. } => true,
        Error::Cluster { code, .. } => *code == ErrorCode::Unavailable,
        _ => false,
    }
}

impl Client {
    /// Connects to the first node of `urls` (one address, or several separated by commas)
    /// that answers, with `creds` on every call. The other addresses stay known: calls fall
    /// back on them as on the members the cluster names. Fails fast, with one clear line,
    /// when nobody answers.
    pub async fn connect(urls: &str, creds: &Credentials) -> Result<Client, Error> {
        let list: Vec<&str> = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        let mut tried = Vec::new();
        let mut first_err = None;
        for url in &list {
            match Client::connect_one(url, creds).await {
                Ok(mut c) => {
                    c.seeds = Arc::new(list.iter().map(|u| u.to_string()).collect());
                    return Ok(c);
                }
                Err(e @ Error::Unreachable { .. }) if list.len() > 1 => {
                    if let Error::Unreachable { url, why } = &e {
                        tried.push((url.clone(), why.clone()));
                    }
                    first_err.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(match first_err {
            Some(e) => gave_up(e, &tried),
            None => Error::Invalid(format!("no cluster address in {urls:?}")),
        })
    }

    async fn connect_one(url: &str, creds: &Credentials) -> Result<Client, Error> {
        let token =
            Token::new(creds.token.as_deref()).map_err(|e| Error::Invalid(e.to_string()))?;
        let tls = creds.ca_pem.as_ref().map(|pem| {
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(pem))
        });
        let ep = Endpoint::from_shared(url.to_string())
            .map_err(|e| Error::Invalid(format!("bad cluster address {url:?}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE_EVERY)
            .keep_alive_timeout(KEEPALIVE_WAIT)
            .tcp_nodelay(true)
            .http2_adaptive_window(true);
        let ep = with_tls(ep, tls.as_ref())?;
        let channel = ep.connect().await.map_err(|e| Error::Unreachable {
            url: url.to_string(),
            why: root_cause(&e),
        })?;
        let c = Client {
            url: url.to_string(),
            seeds: Arc::default(),
            token,
            reading: None,
            inner: Arc::new(Inner {
                tls,
                channels: Mutex::new(HashMap::from([(url.to_string(), channel)])),
                placement: Mutex::new(None),
            }),
        };
        c.refresh_placement().await?;
        Ok(c)
    }

    /// A clone whose calls are made for `who` (a gateway acting for its logged-in user; the
    /// cluster decides for `who`, and accepts it only from the cluster secret or a user
    /// token with at least `who`'s rights). Shares connections with `self`.
    pub fn acting_for(&self, who: &cairn_core::auth::Principal) -> Client {
        Client {
            token: self.token.acting_for(who),
            ..self.clone()
        }
    }

    /// A clone whose chunk reads are for `backup` (an agent reads only the chunks of a
    /// backup it may read, and must say which). Shares connections with `self`.
    pub fn reading(&self, backup: BackupId) -> Client {
        Client {
            reading: Some(backup),
            ..self.clone()
        }
    }

    fn channel(&self, url: &str) -> Result<AuthChannel, Error> {
        let mut map = self
            .inner
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let ch = match map.get(url) {
            Some(c) => c.clone(),
            None => {
                let ep = Endpoint::from_shared(url.to_string())
                    .map_err(|e| Error::Invalid(format!("bad node address {url:?}: {e}")))?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .http2_keep_alive_interval(KEEPALIVE_EVERY)
                    .keep_alive_timeout(KEEPALIVE_WAIT)
                    .tcp_nodelay(true)
                    .http2_adaptive_window(true);
                let c = with_tls(ep, self.inner.tls.as_ref())?.connect_lazy();
                map.insert(url.to_string(), c.clone());
                c
            }
        };
        Ok(InterceptedService::new(ch, self.token.clone()))
    }

    fn catalog_at(&self, url: &str) -> Result<Catalog, Error> {
        Ok(CatalogClient::new(self.channel(url)?)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    }

    fn chunks_at(&self, url: &str) -> Result<Chunks, Error> {
        Ok(ChunksClient::new(self.channel(url)?)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    }

    /// Returns the placement epoch this client works with (`None`: a single node, or a
    /// cluster still forming; chunk calls then go to the seed).
    pub fn placement(&self) -> Option<Epoch> {
        self.inner
            .placement
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .filter(|e| e.number > 0 && !e.nodes.is_empty())
    }

    /// Asks the cluster for the placement epoch in force.
    pub async fn refresh_placement(&self) -> Result<(), Error> {
        let p = self
            .catalog_call(|mut c| async move { c.get_placement(pb::PlacementRequest {}).await })
            .await?;
        let epoch = Epoch::try_from(p)?;
        *self
            .inner
            .placement
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(epoch);
        Ok(())
    }

    /// The nodes to try, seed first, then every other node of the placement.
    fn nodes(&self) -> Vec<String> {
        let mut out = vec![self.url.clone()];
        if let Some(e) = self.placement() {
            for n in e.nodes {
                if !out.contains(&n.addr) {
                    out.push(n.addr);
                }
            }
        }
        for s in self.seeds.iter() {
            if !out.contains(s) {
                out.push(s.clone());
            }
        }
        out
    }

    /// The `Agents` service of the node at `url` (for streams, which are not retried).
    pub(crate) fn agents_at(&self, url: &str) -> Result<AgentsClient<AuthChannel>, Error> {
        Ok(AgentsClient::new(self.channel(url)?)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    }

    /// The nodes this client knows, the seed first.
    pub fn node_urls(&self) -> Vec<String> {
        self.nodes()
    }

    /// Runs an `Agents` call (hosts, jobs, tokens), retrying on other nodes and after
    /// elections for a bounded time, like catalog calls.
    pub(crate) async fn agents_call<T, F, Fut>(&self, f: F) -> Result<T, Error>
    where
        F: Fn(AgentsClient<AuthChannel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_on(Client::agents_at, f).await
    }

    /// Runs a catalog call, retrying on other nodes and after elections for a bounded time.
    async fn catalog_call<T, F, Fut>(&self, f: F) -> Result<T, Error>
    where
        F: Fn(Catalog) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_on(Client::catalog_at, f).await
    }

    /// Runs a call on a client `make` builds, on one node after another, retrying through
    /// unreachable nodes and elections for at most [`CATALOG_RETRY_FOR`].
    async fn call_on<C, T, F, Fut>(
        &self,
        make: fn(&Client, &str) -> Result<C, Error>,
        f: F,
    ) -> Result<T, Error>
    where
        F: Fn(C) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + CATALOG_RETRY_FOR;
        let mut pause = Duration::from_millis(100);
        let mut attempt = 0usize;
        let mut best = None;
        // Each node tried, with the last reason it gave, for the final error.
        let mut tried: Vec<(String, String)> = Vec::new();
        loop {
            let nodes = self.nodes();
            let url = &nodes[attempt % nodes.len()];
            let res = match make(self, url) {
                Ok(c) => match tokio::time::timeout(CATALOG_CALL_TIMEOUT, f(c)).await {
                    Ok(r) => r.map(|r| r.into_inner()).map_err(|s| call_error(url, s)),
                    Err(_) => Err(Error::Cluster {
                        code: ErrorCode::Unavailable,
                        message: format!(
                            "{url} did not answer within {}s",
                            CATALOG_CALL_TIMEOUT.as_secs()
                        ),
                    }),
                },
                Err(e) => Err(e),
            };
            match res {
                Err(e) if retryable(&e) => {
                    tracing::debug!(node = %url, error = %e, "call failed; retrying");
                    let why = match &e {
                        Error::Unreachable { why, .. } => why.clone(),
                        other => other.to_string(),
                    };
                    match tried.iter_mut().find(|(u, _)| u == url) {
                        Some(t) => t.1 = why,
                        None => tried.push((url.clone(), why)),
                    }
                    keep_error(&mut best, e);
                    if Instant::now() + pause >= deadline {
                        let best = best.unwrap_or_else(|| Error::Internal("no attempt".into()));
                        return Err(gave_up(best, &tried));
                    }
                    attempt += 1;
                    // The members may have changed (a node replaced): ask the next one.
                    if attempt.is_multiple_of(nodes.len()) {
                        let next = &nodes[attempt % nodes.len()];
                        let _ = self.refresh_placement_from(next).await;
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }

    /// Asks the node at `url` alone for the placement epoch and keeps it when it is newer.
    async fn refresh_placement_from(&self, url: &str) -> Result<(), Error> {
        let mut c = self.catalog_at(url)?;
        let mut req = tonic::Request::new(pb::PlacementRequest {});
        req.set_timeout(CONNECT_TIMEOUT);
        let p = c
            .get_placement(req)
            .await
            .map_err(|s| call_error(url, s))?
            .into_inner();
        let epoch = Epoch::try_from(p)?;
        let mut held = self
            .inner
            .placement
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if held.as_ref().is_none_or(|e| e.number < epoch.number) && !epoch.nodes.is_empty() {
            *held = Some(epoch);
        }
        Ok(())
    }

    /// The nodes to try for `id`, in order: its owners, then every other node; the seed
    /// alone without a placement.
    fn candidates(&self, epoch: Option<&Epoch>, id: &ChunkId) -> Vec<String> {
        let Some(e) = epoch else {
            return vec![self.url.clone()];
        };
        let mut out: Vec<String> = e
            .owners(id)
            .into_iter()
            .filter_map(|o| e.node(o).map(|n| n.addr.clone()))
            .collect();
        for n in &e.nodes {
            if !out.contains(&n.addr) {
                out.push(n.addr.clone());
            }
        }
        // Last, the node this client reached: it answers for the cluster even when the
        // placement's addresses are not reachable from here.
        if !out.contains(&self.url) {
            out.push(self.url.clone());
        }
        out
    }

    /// Groups ids by the `round`-th candidate of each; ids without one are returned apart.
    fn group<T>(
        &self,
        epoch: Option<&Epoch>,
        items: Vec<(ChunkId, T)>,
        round: usize,
    ) -> Grouped<T> {
        let mut groups: BTreeMap<String, Vec<(ChunkId, T)>> = BTreeMap::new();
        let mut exhausted = Vec::new();
        for (id, item) in items {
            match self.candidates(epoch, &id).into_iter().nth(round) {
                Some(url) => groups.entry(url).or_default().push((id, item)),
                None => exhausted.push(id),
            }
        }
        (groups, exhausted)
    }

    async fn missing_at(&self, url: &str, ids: &[ChunkId]) -> Result<Vec<ChunkId>, Error> {
        let req = pb::MissingRequest {
            ids: ids.iter().map(|i| i.0.to_vec()).collect(),
            local: false,
        };
        let resp = self
            .chunks_at(url)?
            .missing(req)
            .await
            .map_err(|s| call_error(url, s))?
            .into_inner();
        resp.missing
            .iter()
            .map(|&i| {
                ids.get(i as usize)
                    .copied()
                    .ok_or_else(|| Error::Internal(format!("node named index {i}")))
            })
            .collect()
    }

    /// Returns the ids among `ids` that the cluster lacks (asked of each chunk's primary
    /// owner, or the next one when it does not answer).
    pub async fn missing(&self, ids: &[ChunkId]) -> Result<Vec<ChunkId>, Error> {
        let epoch = self.placement();
        let mut todo: Vec<(ChunkId, ())> = ids.iter().map(|i| (*i, ())).collect();
        let mut out = Vec::new();
        let mut round = 0;
        let mut last_err = None;
        while !todo.is_empty() {
            let (groups, exhausted) = self.group(epoch.as_ref(), todo, round);
            if !exhausted.is_empty() {
                return Err(last_err.unwrap_or_else(|| Error::Cluster {
                    code: ErrorCode::Unavailable,
                    message: format!("no node answers for chunk {}", exhausted[0]),
                }));
            }
            let calls = groups.into_iter().map(|(url, items)| async move {
                let ids: Vec<ChunkId> = items.iter().map(|(id, _)| *id).collect();
                let r = self.missing_at(&url, &ids).await;
                (ids, r)
            });
            todo = Vec::new();
            for (ids, r) in futures::future::join_all(calls).await {
                match r {
                    Ok(m) => out.extend(m),
                    Err(e) if retryable(&e) => {
                        todo.extend(ids.into_iter().map(|i| (i, ())));
                        keep_error(&mut last_err, e);
                    }
                    Err(e) => return Err(e),
                }
            }
            round += 1;
        }
        Ok(out)
    }

    async fn put_at(&self, url: &str, chunks: Vec<EncodedChunk>) -> Result<pb::PutResponse, Error> {
        let mut msgs = Vec::new();
        let mut cur = pb::PutRequest::default();
        let mut bytes = 0;
        for c in chunks {
            bytes += c.data.len();
            cur.chunks.push(c.into());
            if bytes >= PUT_MESSAGE_BYTES {
                msgs.push(std::mem::take(&mut cur));
                bytes = 0;
            }
        }
        if !cur.chunks.is_empty() {
            msgs.push(cur);
        }
        Ok(self
            .chunks_at(url)?
            .put(futures::stream::iter(msgs))
            .await
            .map_err(|s| call_error(url, s))?
            .into_inner())
    }

    /// Uploads chunks, each to its primary owner (which copies it to the other owners);
    /// returns once the cluster holds them durably. An owner that does not answer, or that
    /// is out of disk space, is passed over for the next one.
    pub async fn put(&self, chunks: Vec<EncodedChunk>) -> Result<PutReport, Error> {
        let epoch = self.placement();
        let mut todo: Vec<(ChunkId, EncodedChunk)> =
            chunks.into_iter().map(|c| (c.id, c)).collect();
        let mut total = pb::PutResponse::default();
        let mut round = 0;
        let mut last_err = None;
        while !todo.is_empty() {
            let (groups, exhausted) = self.group(epoch.as_ref(), todo, round);
            if !exhausted.is_empty() {
                return Err(last_err.unwrap_or_else(|| Error::Cluster {
                    code: ErrorCode::Unavailable,
                    message: format!("no node accepts chunk {}", exhausted[0]),
                }));
            }
            let calls = groups.into_iter().map(|(url, items)| async move {
                let chunks: Vec<EncodedChunk> = items.iter().map(|(_, c)| c.clone()).collect();
                let r = self.put_at(&url, chunks).await;
                (url, items, r)
            });
            todo = Vec::new();
            for (url, items, r) in futures::future::join_all(calls).await {
                match r {
                    Ok(p) => {
                        total.stored += p.stored;
                        total.duplicate += p.duplicate;
                        total.bytes_written += p.bytes_written;
                        total.replicated += p.replicated;
                    }
                    // A full node refuses new chunks: the next owner takes them (and copies
                    // them on; repair fills the full node in once it has room again).
                    Err(e) if retryable(&e) || e.code() == ErrorCode::DiskFull => {
                        tracing::debug!(node = %url, error = %e, "upload failed; trying the next owner");
                        todo.extend(items);
                        if e.code() == ErrorCode::DiskFull {
                            // The telling reason when no owner takes a chunk: say which node.
                            last_err = Some(Error::Cluster {
                                code: ErrorCode::DiskFull,
                                message: format!("{}: {e}", url.trim_start_matches("http://")),
                            });
                        } else {
                            keep_error(&mut last_err, e);
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            round += 1;
        }
        Ok(total.into())
    }

    async fn get_at(&self, url: &str, ids: &[ChunkId]) -> Vec<Result<EncodedChunk, Error>> {
        let req = pb::GetRequest {
            ids: ids.iter().map(|i| i.0.to_vec()).collect(),
            backup: self.reading.map(|b| b.to_string()).unwrap_or_default(),
        };
        let mut out = Vec::with_capacity(ids.len());
        let stream = match self.chunks_at(url) {
            Ok(mut c) => c.get(req).await,
            Err(e) => {
                out.push(Err(e));
                return out;
            }
        };
        let mut stream = match stream {
            Ok(s) => s.into_inner(),
            Err(s) => {
                out.push(Err(call_error(url, s)));
                return out;
            }
        };
        for id in ids {
            let item = match stream.next().await {
                Some(Ok(m)) => m
                    .chunk
                    .ok_or_else(|| Error::Internal("empty chunk message".into()))
                    .and_then(|c| {
                        EncodedChunk::try_from(c).map_err(|e| Error::Internal(e.to_string()))
                    })
                    .and_then(|c| {
                        if c.id == *id {
                            Ok(c)
                        } else {
                            Err(Error::Internal(format!("asked for {id}, got {}", c.id)))
                        }
                    }),
                Some(Err(s)) => Err(call_error(url, s)),
                None => Err(Error::Cluster {
                    code: ErrorCode::NotFound,
                    message: format!("chunk {id} not found"),
                }),
            };
            let failed = item.is_err();
            out.push(item);
            if failed {
                // The node ends the stream at its first failure.
                break;
            }
        }
        out
    }

    /// Fetches the given chunks' content, in order, each verified here: decoded and
    /// re-hashed against its id ([`cairn_chunker::decode`]). Each comes from its primary owner
    /// or, when that fails (node down, copy missing, or bytes that fail verification), from
    /// the next owner. The nodes serve what they stored after checking only its record's CRC
    /// (`ChunkStore::get_framed`): this is the one BLAKE3 pass a read makes, end to end.
    pub async fn get(
        &self,
        ids: &[ChunkId],
    ) -> Result<impl Stream<Item = Result<bytes::Bytes, Error>>, Error> {
        let epoch = self.placement();
        // An id asked for twice shares one fetched content (`Bytes` clones share).
        let mut found: HashMap<ChunkId, bytes::Bytes> = HashMap::with_capacity(ids.len());
        let mut todo: Vec<(ChunkId, ())> = Vec::new();
        let mut unique = std::collections::HashSet::new();
        for id in ids {
            if unique.insert(*id) {
                todo.push((*id, ()));
            }
        }
        let mut errors: HashMap<ChunkId, Error> = HashMap::new();
        let mut round = 0;
        while !todo.is_empty() {
            let (groups, exhausted) = self.group(epoch.as_ref(), todo, round);
            for id in exhausted {
                errors.entry(id).or_insert_with(|| Error::Cluster {
                    code: ErrorCode::NotFound,
                    message: format!("chunk {id} not found"),
                });
            }
            let calls = groups.into_iter().map(|(url, items)| async move {
                let ids: Vec<ChunkId> = items.iter().map(|(id, _)| *id).collect();
                let fetched = self.get_at(&url, &ids).await;
                // Verify off the runtime; one node's answers are checked while the next
                // node's are still arriving.
                let verified = tokio::task::spawn_blocking(move || {
                    fetched
                        .into_iter()
                        .map(|r| r.and_then(|c| Ok(cairn_chunker::decode(&c)?)))
                        .collect::<Vec<_>>()
                })
                .await
                .unwrap_or_else(|e| vec![Err(Error::Internal(e.to_string()))]);
                (url, ids, verified)
            });
            todo = Vec::new();
            for (url, ids, results) in futures::future::join_all(calls).await {
                let mut results = results.into_iter();
                for id in ids {
                    match results.next() {
                        Some(Ok(content)) => {
                            errors.remove(&id);
                            found.insert(id, content);
                        }
                        Some(Err(e)) => {
                            tracing::debug!(chunk = %id, node = %url, error = %e, "fetch failed; trying another node");
                            if matches!(e, Error::Chunk(_)) {
                                tracing::warn!(chunk = %id, node = %url, error = %e, "a node's copy failed verification; fetching another");
                            }
                            errors.insert(id, e);
                            todo.push((id, ()));
                        }
                        None => todo.push((id, ())),
                    }
                }
            }
            round += 1;
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match found.get(id).cloned() {
                Some(c) => out.push(Ok(c)),
                None => {
                    out.push(Err(errors.remove(id).unwrap_or_else(|| Error::Cluster {
                        code: ErrorCode::NotFound,
                        message: format!("chunk {id} not found"),
                    })));
                    break;
                }
            }
        }
        Ok(futures::stream::iter(out))
    }

    /// Fetches one chunk's verified content.
    pub async fn get_content(&self, id: ChunkId) -> Result<bytes::Bytes, Error> {
        let mut s = Box::pin(self.get(&[id]).await?);
        match s.next().await {
            Some(c) => c,
            None => Err(Error::Cluster {
                code: ErrorCode::NotFound,
                message: format!("chunk {id} not found"),
            }),
        }
    }

    /// Commits a backup; `job` is the backup job it ends (agents commit only inside one),
    /// `session` the backup session it ends. With a session, the commit is retried on other
    /// nodes like any catalog call even when its answer was lost: the cluster answers a
    /// repeated commit in one session with the backup the first one committed.
    pub async fn commit(
        &self,
        record: &BackupRecord,
        job: Option<uuid::Uuid>,
        session: Option<&str>,
    ) -> Result<BackupRecord, Error> {
        let backup: pb::Backup = record.into();
        let job = job.map(|j| j.to_string()).unwrap_or_default();
        let session = session.unwrap_or_default().to_string();
        let b = self
            .catalog_call(|mut c| {
                let backup = backup.clone();
                let job = job.clone();
                let session = session.clone();
                async move {
                    c.commit_backup(pb::CommitBackupRequest {
                        backup: Some(backup),
                        job,
                        session,
                    })
                    .await
                }
            })
            .await?;
        BackupRecord::try_from(b).map_err(|e| Error::Internal(e.to_string()))
    }

    /// Every backup of `env` (or of the catalog), ordered by environment then time. It reads
    /// the whole list: pages for people use [`Client::list_page`].
    pub async fn list(&self, env: Option<EnvId>) -> Result<Vec<BackupRecord>, Error> {
        let env = env.map(|e| e.to_string()).unwrap_or_default();
        let resp = self
            .catalog_call(|mut c| {
                let env = env.clone();
                async move {
                    c.list_backups(pb::ListBackupsRequest {
                        env,
                        limit: 0,
                        before: String::new(),
                    })
                    .await
                }
            })
            .await?;
        resp.backups
            .into_iter()
            .map(|b| BackupRecord::try_from(b).map_err(|e| Error::Internal(e.to_string())))
            .collect()
    }

    /// One page of the backups of `env` (or of every environment), newest first: at most
    /// `limit` (1 to 1000) whose id is below `before`, the next page's cursor, and the totals
    /// of everything the pages walk. The node reads at most `limit + 1` records.
    pub async fn list_page(
        &self,
        env: Option<EnvId>,
        limit: u32,
        before: Option<&BackupId>,
    ) -> Result<crate::types::BackupPage, Error> {
        if limit == 0 {
            return Err(Error::Invalid("a page holds at least one backup".into()));
        }
        let env = env.map(|e| e.to_string()).unwrap_or_default();
        let before = before.map(|b| b.to_string()).unwrap_or_default();
        let resp = self
            .catalog_call(|mut c| {
                let (env, before) = (env.clone(), before.clone());
                async move {
                    c.list_backups(pb::ListBackupsRequest { env, limit, before })
                        .await
                }
            })
            .await?;
        let backups = resp
            .backups
            .into_iter()
            .map(|b| BackupRecord::try_from(b).map_err(|e| Error::Internal(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let next = match resp.next.as_str() {
            "" => None,
            n => Some(
                n.parse()
                    .map_err(|e| Error::Internal(format!("a page's cursor {n:?}: {e}")))?,
            ),
        };
        Ok(crate::types::BackupPage {
            backups,
            next,
            totals: resp.totals.map(Into::into).unwrap_or_default(),
        })
    }

    pub async fn show(&self, id: &BackupId) -> Result<BackupRecord, Error> {
        let id = id.to_string();
        let b = self
            .catalog_call(|mut c| {
                let id = id.clone();
                async move { c.get_backup(pb::BackupRef { id }).await }
            })
            .await?;
        BackupRecord::try_from(b).map_err(|e| Error::Internal(e.to_string()))
    }

    pub async fn delete(&self, id: &BackupId) -> Result<(), Error> {
        let id = id.to_string();
        self.catalog_call(|mut c| {
            let id = id.clone();
            async move { c.delete_backup(pb::BackupRef { id }).await }
        })
        .await?;
        Ok(())
    }

    /// Protects a backup from every removal, or lifts the protection (admins).
    pub async fn protect(&self, id: &BackupId, protected: bool) -> Result<BackupRecord, Error> {
        let id = id.to_string();
        let b = self
            .catalog_call(|mut c| {
                let id = id.clone();
                async move {
                    c.protect_backup(pb::ProtectBackupRequest { id, protected })
                        .await
                }
            })
            .await?;
        BackupRecord::try_from(b).map_err(|e| Error::Internal(e.to_string()))
    }

    pub async fn latest(&self, env: EnvId, full_only: bool) -> Result<Option<BackupRecord>, Error> {
        let env = env.to_string();
        let resp = self
            .catalog_call(|mut c| {
                let env = env.clone();
                async move {
                    c.latest_backup(pb::LatestBackupRequest { env, full_only })
                        .await
                }
            })
            .await?;
        resp.backup
            .map(|b| BackupRecord::try_from(b).map_err(|e| Error::Internal(e.to_string())))
            .transpose()
    }

    /// Runs a scrub on the node at `url` and returns its report (no time limit: a scrub
    /// reads everything the node stores).
    pub async fn scrub_at(&self, url: &str) -> Result<ScrubReport, Error> {
        let ep = Endpoint::from_shared(url.to_string())
            .map_err(|e| Error::Invalid(format!("bad node address {url:?}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT);
        let ch = with_tls(ep, self.inner.tls.as_ref())?
            .connect()
            .await
            .map_err(|e| Error::Unreachable {
                url: url.to_string(),
                why: root_cause(&e),
            })?;
        let mut c = ChunksClient::new(InterceptedService::new(ch, self.token.clone()));
        c.scrub(pb::ScrubRequest {})
            .await
            .map_err(|s| call_error(url, s))?
            .into_inner()
            .try_into()
    }

    /// Adds the storage node at `addr` to the cluster; returns its id and the new epoch.
    pub async fn add_node(&self, addr: &str, zone: &str, weight: u32) -> Result<Membership, Error> {
        let req = pb::AddNodeRequest {
            addr: addr.to_string(),
            zone: zone.to_string(),
            weight,
        };
        self.catalog_call(|mut c| {
            let req = req.clone();
            async move { c.add_node(req).await }
        })
        .await
        .map(Membership::from)
    }

    /// Sets how many zones each chunk's copies span; returns the epoch in force after it (a
    /// new one when the setting changed).
    pub async fn set_zone_redundancy(
        &self,
        zr: cairn_core::placement::ZoneRedundancy,
    ) -> Result<Membership, Error> {
        let req = pb::SetZoneRedundancyRequest {
            zone_redundancy: match zr {
                cairn_core::placement::ZoneRedundancy::Maximum => 0,
                cairn_core::placement::ZoneRedundancy::AtLeast(n) => n.max(1),
            },
        };
        self.catalog_call(|mut c| async move { c.set_zone_redundancy(req).await })
            .await
            .map(Membership::from)
    }

    /// Drains and removes node `id`; answers once it has left.
    pub async fn remove_node(&self, id: u64) -> Result<Membership, Error> {
        self.catalog_call(|mut c| async move {
            let mut r = tonic::Request::new(pb::RemoveNodeRequest { node_id: id });
            r.set_timeout(Duration::from_secs(3600));
            c.remove_node(r).await
        })
        .await
        .map(Membership::from)
    }

    /// Runs a repair pass on the node at `url` and returns its report.
    pub async fn repair_at(&self, url: &str) -> Result<RepairReport, Error> {
        Ok(self
            .chunks_at(url)?
            .repair(pb::RepairRequest {})
            .await
            .map_err(|s| call_error(url, s))?
            .into_inner()
            .into())
    }

    /// Registers a backup in progress; returns the session id to close.
    pub async fn open_session(&self, env: EnvId, host: &str) -> Result<String, Error> {
        let req = pb::OpenSessionRequest {
            env: env.to_string(),
            host: host.to_string(),
        };
        let s = self
            .catalog_call(|mut c| {
                let req = req.clone();
                async move { c.open_session(req).await }
            })
            .await?;
        Ok(s.id)
    }

    /// Ends a backup session.
    pub async fn close_session(&self, id: &str) -> Result<(), Error> {
        let s = pb::Session {
            id: id.to_string(),
            started_ms: 0,
        };
        self.catalog_call(|mut c| {
            let s = s.clone();
            async move { c.close_session(s).await }
        })
        .await?;
        Ok(())
    }

    /// Keeps a backup session open (see [`cairn_core::retention::SESSION_TTL_MS`]).
    pub async fn renew_session(&self, id: &str) -> Result<(), Error> {
        let s = pb::Session {
            id: id.to_string(),
            started_ms: 0,
        };
        self.catalog_call(|mut c| {
            let s = s.clone();
            async move { c.renew_session(s).await }
        })
        .await?;
        Ok(())
    }

    /// Runs a garbage collection, waiting up to `wait` for older backups to finish. A node
    /// that does not answer is skipped for the next one (the collection itself is not
    /// retried once a node took it: it may be running).
    pub async fn gc(&self, wait: Duration) -> Result<GcReport, Error> {
        let mut best = None;
        for url in self.nodes() {
            let mut c = self.catalog_at(&url)?;
            let mut r = tonic::Request::new(pb::GcRequest {
                wait_secs: wait.as_secs().max(1),
            });
            r.set_timeout(wait + Duration::from_secs(3600));
            match c.gc(r).await.map_err(|s| call_error(&url, s)) {
                Ok(r) => return Ok(r.into_inner().into()),
                Err(e @ Error::Unreachable { .. }) => keep_error(&mut best, e),
                Err(e) => return Err(e),
            }
        }
        Err(best.unwrap_or_else(|| Error::Internal("no node to ask".into())))
    }

    /// Returns an environment's settings.
    pub async fn env_config(&self, env: EnvId) -> Result<EnvConfig, Error> {
        self.env_config_of(env, false).await
    }

    /// Returns an environment's own settings, or (`effective`) the ones in force for it:
    /// its own, then the cluster-wide ones. [`EnvId::GLOBAL`] names the cluster-wide ones.
    pub async fn env_config_of(&self, env: EnvId, effective: bool) -> Result<EnvConfig, Error> {
        let env = if env == EnvId::GLOBAL {
            String::new()
        } else {
            env.to_string()
        };
        self.catalog_call(|mut c| {
            let env = env.clone();
            async move { c.get_env_config(pb::EnvRef { env, effective }).await }
        })
        .await
        .map(cairn_proto::env_config_from_wire)
    }

    /// Replaces an environment's settings.
    pub async fn set_env_config(&self, env: EnvId, config: &EnvConfig) -> Result<EnvConfig, Error> {
        let req = pb::SetEnvConfigRequest {
            env: if env == EnvId::GLOBAL {
                String::new()
            } else {
                env.to_string()
            },
            config: Some(cairn_proto::env_config_to_wire(config)),
        };
        self.catalog_call(|mut c| {
            let req = req.clone();
            async move { c.set_env_config(req).await }
        })
        .await
        .map(cairn_proto::env_config_from_wire)
    }

    /// Returns the status of the seed node.
    pub async fn node_status(&self) -> Result<NodeStatus, Error> {
        Ok(self
            .catalog_at(&self.url)?
            .node_status(pb::NodeStatusRequest {})
            .await?
            .into_inner()
            .into())
    }

    /// Returns the status of the node at `url` (no retries: a node that does not answer is
    /// reported as such).
    pub async fn node_status_at(&self, url: &str) -> Result<NodeStatus, Error> {
        let call = async {
            Ok::<_, Error>(
                self.catalog_at(url)?
                    .node_status(pb::NodeStatusRequest {})
                    .await?
                    .into_inner()
                    .into(),
            )
        };
        match tokio::time::timeout(Duration::from_secs(3), call).await {
            Ok(r) => r,
            Err(_) => Err(Error::Unreachable {
                url: url.to_string(),
                why: "no answer within 3s".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_take_no_blank_token_and_name_an_unreadable_ca() {
        assert_eq!(Credentials::token(Some("")).token, None);
        assert_eq!(Credentials::token(Some("t")).token.as_deref(), Some("t"));
        let e = Credentials::default()
            .with_ca_file(std::path::Path::new("/nonexistent/ca.pem"))
            .unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e:?}");
    }

    #[tokio::test]
    async fn nobody_answering_fails_fast_naming_every_address() {
        // Ports nothing listens on: bound, then released.
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
        };
        let (a, b) = (free(), free());
        let urls = format!("http://{a},http://{b}");
        let e = match Client::connect(&urls, &Credentials::default()).await {
            Err(e) => e,
            Ok(_) => panic!("connected to nothing"),
        };
        assert_eq!(e.code(), ErrorCode::Unavailable);
        let text = e.to_string();
        assert!(
            text.contains(&a.to_string()) && text.contains(&b.to_string()),
            "{text}"
        );
        // An https address without a CA is refused before dialling, with the fix.
        let e = match Client::connect(&format!("https://{a}"), &Credentials::default()).await {
            Err(e) => e,
            Ok(_) => panic!("connected to nothing"),
        };
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
    }
}
