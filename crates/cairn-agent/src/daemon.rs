//! `cairn agent`: the daemon of one hardware node.
//!
//! # What it does
//! - **Registers** its host (stable host id, hostname, addresses) and the environments that
//!   [`crate::discovery`] finds, at start and then every `register_interval_ms`, so the
//!   cluster's list follows containers as they appear and vanish and the host shows online.
//! - **Holds a job stream** (`AgentJobs`) on one node of the cluster, moving to the next
//!   node when it breaks. Each offered job is claimed through raft with a lease (`ClaimJob`;
//!   exactly one claim wins), but only once a slot of `max_jobs` is free, so a busy agent
//!   leaves jobs queued instead of holding leases it cannot serve.
//! - **Runs** the job (backup with its hooks and chain rules, restore in place, selective
//!   restore) while a reporter sends progress every `report_interval_ms`. Each report renews
//!   the lease and answers whether the job was cancelled; a cancelled job stops between
//!   files and commits nothing. A job the cluster no longer considers running (its lease
//!   expired during a partition) is stopped the same way.
//! - **Finishes** the job with its result, or fails it with the reason.
//!
//! If the agent dies, its leases lapse and the leader fails its running jobs with a reason;
//! a re-run uploads only the chunks the cluster lacks (chunks are content-addressed and
//! every upload first asks what is missing).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_api::Outcome;
use cairn_core::job::{JobProgress, JobResult};
use cairn_core::retention::{EnvConfig, DEFAULT_HOOK_TIMEOUT_SECS};
use cairn_core::{BackupId, BackupType, Compression, EnvId, ErrorCode};
use futures::StreamExt;
use serde::Deserialize;

use crate::discovery::{discover, DiscoveredEnv, Sources};
use crate::error::AgentError;
use crate::hooks::{run_hooks, HookSpec};
use crate::inplace::{changes_since, cleanup_leftovers, in_use, swap_into_place, InPlace};
use crate::progress::Progress;
use crate::{backup, restore, BackupRequest, RestoreRequest};
use cairn_api::manifest::{fetch_root, ManifestEntries};
use cairn_api::Client;

/// The agent's configuration (TOML). Unknown keys are refused with their name.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Nodes of the cluster to connect to (any one is enough; the others are fallbacks).
    #[serde(default = "default_cluster")]
    pub cluster: Vec<String>,
    /// This host's stable id; agent tokens are bound to it and environment ids derive from
    /// it. Default: `/etc/machine-id`, else an id generated once into `state_dir/host.id`.
    #[serde(default)]
    pub host_id: Option<String>,
    /// Default: the system's host name.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Addresses to report for this host.
    #[serde(default)]
    pub addrs: Vec<String>,
    /// Where the agent keeps its own state (the generated host id).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// The agent token (`cairn agent token create HOST`), or the cluster token. Also
    /// `token_file` or `CAIRN_TOKEN`.
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The PEM file of the CA that signed the cluster's certificates (an `https://`
    /// cluster). Also `CAIRN_CA`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Jobs run at once.
    #[serde(default = "default_max_jobs")]
    pub max_jobs: u32,
    /// How long a claim holds without a progress report (milliseconds).
    #[serde(default = "default_lease")]
    pub lease_ms: u32,
    /// How often the host and its environments are registered again (milliseconds).
    #[serde(default = "default_register_interval")]
    pub register_interval_ms: u64,
    /// How often a running job reports progress (milliseconds; at most 1000).
    #[serde(default = "default_report_interval")]
    pub report_interval_ms: u64,
    /// Upload bandwidth limit per job, bytes per second.
    #[serde(default)]
    pub upload_limit_bytes_per_sec: Option<u64>,
    /// Run the pre/post backup hooks the cluster's settings name (turn off on hosts where
    /// cluster admins must not run commands).
    #[serde(default = "default_true")]
    pub hooks: bool,
    /// Where to find containers.
    #[serde(default)]
    pub discovery: Sources,
}

fn default_cluster() -> Vec<String> {
    vec![cairn_api::DEFAULT_CLUSTER.to_string()]
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/cairn-agent")
}
fn default_max_jobs() -> u32 {
    2
}
fn default_lease() -> u32 {
    15_000
}
fn default_register_interval() -> u64 {
    10_000
}
fn default_report_interval() -> u64 {
    500
}
fn default_true() -> bool {
    true
}

impl AgentConfig {
    /// A config with every default and the given discovery sources.
    pub fn new(cluster: Vec<String>, state_dir: PathBuf, discovery: Sources) -> AgentConfig {
        AgentConfig {
            cluster,
            host_id: None,
            hostname: None,
            addrs: Vec::new(),
            state_dir,
            token: None,
            token_file: None,
            ca_file: None,
            max_jobs: default_max_jobs(),
            lease_ms: default_lease(),
            register_interval_ms: default_register_interval(),
            report_interval_ms: default_report_interval(),
            upload_limit_bytes_per_sec: None,
            hooks: true,
            discovery,
        }
    }

    /// Reads and checks a TOML file.
    pub fn load(path: &Path) -> Result<AgentConfig, AgentError> {
        let text = std::fs::read_to_string(path).map_err(|e| AgentError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        let cfg: AgentConfig = toml::from_str(&text)
            .map_err(|e| AgentError::Invalid(format!("{}: {e}", path.display())))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Names the field at fault and the fix.
    pub fn validate(&self) -> Result<(), AgentError> {
        let bad = |m: &str| Err(AgentError::Invalid(format!("agent config: {m}")));
        if self.cluster.is_empty() {
            return bad(
                "`cluster` lists no node; name at least one, e.g. \"http://127.0.0.1:7700\"",
            );
        }
        if self.max_jobs == 0 {
            return bad("`max_jobs` must be 1 or more");
        }
        if self.lease_ms < 1_000 {
            return bad("`lease_ms` must be at least 1000");
        }
        if self.report_interval_ms == 0 || self.report_interval_ms > 1_000 {
            return bad(
                "`report_interval_ms` must be 1..=1000 (watchers expect an update every second)",
            );
        }
        if u64::from(self.lease_ms) < 2 * self.report_interval_ms {
            return bad("`lease_ms` must be at least twice `report_interval_ms`");
        }
        if let Some(id) = &self.host_id {
            if id.is_empty() || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return bad("`host_id` must be non-empty without spaces");
            }
        }
        Ok(())
    }

    /// The host id: configured, else the machine id, else one generated and kept in
    /// `state_dir`.
    pub fn resolve_host_id(&self) -> Result<String, AgentError> {
        self.resolve_host_id_with(Path::new("/etc/machine-id"))
    }

    /// [`AgentConfig::resolve_host_id`] with the machine id read from `machine_id`.
    fn resolve_host_id_with(&self, machine_id: &Path) -> Result<String, AgentError> {
        if let Some(id) = &self.host_id {
            return Ok(id.clone());
        }
        if let Ok(m) = std::fs::read_to_string(machine_id) {
            let m = m.trim();
            if !m.is_empty() {
                return Ok(m.to_string());
            }
        }
        let path = self.state_dir.join("host.id");
        if let Ok(s) = std::fs::read_to_string(&path) {
            if !s.trim().is_empty() {
                return Ok(s.trim().to_string());
            }
        }
        let io = |e| AgentError::Io {
            path: path.display().to_string(),
            source: e,
        };
        std::fs::create_dir_all(&self.state_dir).map_err(io)?;
        let id = uuid::Uuid::new_v4().to_string();
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &id).map_err(io)?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        Ok(id)
    }

    /// The token: `token`, `token_file`, or `CAIRN_TOKEN`, by the rule of
    /// `cairn_core::secret` (a blank `token_file` is an error naming the file).
    /// The credentials the agent calls the cluster with: its token ([`Self::resolve_token`])
    /// and the CA (`ca_file`, else `CAIRN_CA`).
    pub fn resolve_credentials(&self) -> Result<cairn_api::Credentials, AgentError> {
        let token = self.resolve_token()?;
        let creds = cairn_api::Credentials::token(token.as_deref());
        let ca = self
            .ca_file
            .clone()
            .or_else(|| std::env::var_os("CAIRN_CA").map(PathBuf::from));
        Ok(match ca {
            Some(path) => creds.with_ca_file(&path)?,
            None => creds,
        })
    }

    pub fn resolve_token(&self) -> Result<Option<String>, AgentError> {
        use cairn_core::secret::{self, SecretError};
        secret::resolve(
            self.token.as_deref(),
            self.token_file.as_deref(),
            std::env::var("CAIRN_TOKEN").ok(),
        )
        .map_err(|e| match e {
            SecretError::Read { path, source } => AgentError::Io {
                path: path.display().to_string(),
                source,
            },
            e => AgentError::Invalid(e.to_string()),
        })
    }
}

/// The running agent's shared state.
struct Agent {
    cfg: AgentConfig,
    host: String,
    cluster: Client,
    envs: Mutex<HashMap<EnvId, DiscoveredEnv>>,
    slots: Arc<tokio::sync::Semaphore>,
    /// Jobs taken or waiting for a slot here (an offer repeated meanwhile is ignored).
    taken: Mutex<HashSet<uuid::Uuid>>,
    /// The last discovery problems logged (each change is logged once).
    problems: Mutex<Vec<String>>,
}

/// Connects to the first node of `cfg.cluster` that answers.
async fn connect(cfg: &AgentConfig, creds: &cairn_api::Credentials) -> Result<Client, AgentError> {
    let mut last = None;
    for url in &cfg.cluster {
        match Client::connect(url, creds).await {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e.into()),
        }
    }
    Err(last.unwrap_or_else(|| AgentError::Invalid("no cluster node configured".into())))
}

/// Runs the agent until `stop` resolves. Fails at once, with the reason, when the cluster
/// refuses this host (a token for another host, a revoked token).
pub async fn run(
    cfg: AgentConfig,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), AgentError> {
    cfg.validate()?;
    let host = cfg.resolve_host_id()?;
    let creds = cfg.resolve_credentials()?;
    let cluster = loop {
        match connect(&cfg, &creds).await {
            Ok(c) => break c,
            Err(e @ AgentError::Invalid(_)) => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the cluster; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    let agent = Arc::new(Agent {
        slots: Arc::new(tokio::sync::Semaphore::new(cfg.max_jobs as usize)),
        cfg,
        host,
        cluster,
        envs: Mutex::default(),
        taken: Mutex::default(),
        problems: Mutex::default(),
    });
    // The first registration decides whether this host may work here at all.
    loop {
        match agent.register().await {
            Ok(()) => break,
            Err(e)
                if matches!(
                    e.code(),
                    ErrorCode::PermissionDenied | ErrorCode::Unauthenticated
                ) =>
            {
                return Err(AgentError::Invalid(format!(
                    "the cluster refuses host {:?}: {e}",
                    agent.host
                )))
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot register; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    tracing::info!(host = %agent.host, envs = agent.env_count(), max_jobs = agent.cfg.max_jobs, "agent registered");
    let registrar = tokio::spawn(agent.clone().register_loop());
    let jobs = tokio::spawn(agent.clone().job_stream_loop());
    stop.await;
    registrar.abort();
    jobs.abort();
    Ok(())
}

impl Agent {
    fn env_count(&self) -> usize {
        self.envs.lock().map(|g| g.len()).unwrap_or(0)
    }

    fn env(&self, eid: EnvId) -> Option<DiscoveredEnv> {
        self.envs.lock().ok()?.get(&eid).cloned()
    }

    /// Discovers the environments and registers them with the host.
    async fn register(&self) -> Result<(), AgentError> {
        let sources = self.cfg.discovery.clone();
        let host = self.host.clone();
        let (found, problems) = tokio::task::spawn_blocking(move || discover(&host, &sources))
            .await
            .map_err(|e| AgentError::Internal(e.to_string()))?;
        let texts: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        if let Ok(mut last) = self.problems.lock() {
            if *last != texts {
                for t in &texts {
                    tracing::warn!(problem = %t, "container skipped");
                }
                *last = texts;
            }
        }
        let hostname = self.cfg.hostname.clone().unwrap_or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_default()
        });
        let host = cairn_core::job::HostRecord {
            id: self.host.clone(),
            hostname,
            addrs: self.cfg.addrs.clone(),
            seen_ms: 0,
            version: env!("CARGO_PKG_VERSION").into(),
            max_jobs: self.cfg.max_jobs,
            envs: Vec::new(),
        };
        let envs: Vec<cairn_core::job::EnvRecord> = found
            .iter()
            .map(|e| cairn_core::job::EnvRecord {
                eid: e.eid,
                host: self.host.clone(),
                name: e.name.clone(),
                path: e.path.display().to_string(),
                title: e.title.clone(),
                hostname: e.hostname.clone(),
                ip: e.ip.clone(),
                os: e.os.clone(),
                description: e.description.clone(),
                kind: e.kind.clone(),
            })
            .collect();
        let conflicts = self.cluster.register_host(&host, &envs).await?;
        let conflicts: HashSet<String> = conflicts.into_iter().collect();
        for c in &conflicts {
            tracing::warn!(env = %c, "the cluster refused this environment: it belongs to another host (or holds another host's backups); an operator moves it with cairn envs move");
        }
        if let Ok(mut g) = self.envs.lock() {
            *g = found
                .into_iter()
                .filter(|e| !conflicts.contains(&e.eid.to_string()))
                .map(|e| (e.eid, e))
                .collect();
        }
        Ok(())
    }

    async fn register_loop(self: Arc<Self>) {
        let every = Duration::from_millis(self.cfg.register_interval_ms.max(100));
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = self.register().await {
                tracing::warn!(error = %e, "registration failed; retrying");
            }
        }
    }

    /// Holds the job stream, moving to the next node when it breaks.
    async fn job_stream_loop(self: Arc<Self>) {
        let mut attempt = 0usize;
        loop {
            let nodes = self.cluster.node_urls();
            let url = nodes[attempt % nodes.len()].clone();
            attempt += 1;
            let stream = self.cluster.agent_jobs(&url, &self.host).await;
            let mut stream = match stream {
                Ok(s) => Box::pin(s),
                Err(e) => {
                    tracing::debug!(node = %url, error = %e, "job stream refused; trying another node");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            tracing::debug!(node = %url, "job stream open");
            while let Some(item) = stream.next().await {
                match item {
                    Ok(job) => self.offer(job),
                    Err(e) => {
                        tracing::debug!(node = %url, error = %e, "job stream broke");
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Takes an offered job unless it is already taken here.
    fn offer(self: &Arc<Self>, job: cairn_core::job::Job) {
        if let Ok(mut t) = self.taken.lock() {
            if !t.insert(job.id) {
                return;
            }
        }
        let agent = self.clone();
        tokio::spawn(async move {
            let id = job.id;
            agent.clone().run_job(job).await;
            if let Ok(mut t) = agent.taken.lock() {
                t.remove(&id);
            }
        });
    }

    /// Claims and runs one job, reporting progress until it ends.
    async fn run_job(self: Arc<Self>, job: cairn_core::job::Job) {
        let Ok(_slot) = self.slots.clone().acquire_owned().await else {
            return;
        };
        if let Err(e) = self
            .cluster
            .claim_job(job.id, &self.host, self.cfg.lease_ms)
            .await
        {
            tracing::debug!(job_id = %job.id, error = %e, "job not claimed");
            return;
        }
        tracing::info!(job_id = %job.id, kind = job.kind.as_str(), env = %job.env, "job started");
        let progress = Arc::new(Progress::new());
        progress.set_phase("checking parameters");
        let reporter = tokio::spawn(self.clone().report_loop(job.id, progress.clone()));
        let outcome = match job.kind {
            cairn_core::job::JobKind::Backup => self.run_backup(&job, &progress).await,
            cairn_core::job::JobKind::Restore => self.run_restore(&job, &progress).await,
            cairn_core::job::JobKind::SelectiveRestore => self.run_selective(&job, &progress).await,
            cairn_core::job::JobKind::Delete | cairn_core::job::JobKind::Update => {
                Err(AgentError::Invalid(
                    "delete and update jobs are run by the cluster, not by agents".into(),
                ))
            }
        };
        reporter.abort();
        let outcome = match outcome {
            Ok(r) => Outcome::Succeeded(r),
            Err(AgentError::Cancelled) => Outcome::Cancelled {
                reason: "cancelled on request; nothing was committed".to_string(),
            },
            Err(e) => Outcome::Failed {
                code: e.code(),
                reason: e.to_string(),
            },
        };
        match self.cluster.finish_job(job.id, &self.host, &outcome).await {
            Ok(j) => {
                tracing::info!(job_id = %job.id, state = j.state.as_str(), reason = %j.reason, "job finished")
            }
            Err(e) => {
                tracing::warn!(job_id = %job.id, error = %e, "cannot record the job's end")
            }
        }
    }

    /// Reports progress until aborted; stops the engine when the job was cancelled or the
    /// cluster no longer counts it as running here.
    async fn report_loop(self: Arc<Self>, id: uuid::Uuid, progress: Arc<Progress>) {
        let started = Instant::now();
        let every = Duration::from_millis(self.cfg.report_interval_ms);
        loop {
            tokio::time::sleep(every).await;
            let answer = self
                .cluster
                .report_progress(
                    id,
                    &self.host,
                    &snapshot(&progress, started),
                    self.cfg.lease_ms,
                )
                .await;
            match answer {
                Ok(true) => {
                    if !progress.is_cancelled() {
                        tracing::info!(job_id = %id, "job cancelled; stopping");
                    }
                    progress.cancel();
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.code().family(),
                        ErrorCode::Conflict | ErrorCode::NotFound | ErrorCode::PermissionDenied
                    ) =>
                {
                    tracing::warn!(job_id = %id, error = %e, "the cluster no longer runs this job here; stopping");
                    progress.cancel();
                }
                Err(e) => tracing::debug!(job_id = %id, error = %e, "progress report failed"),
            }
        }
    }

    async fn settings(&self, env: EnvId) -> Result<EnvConfig, AgentError> {
        Ok(self.cluster.env_config_of(env, true).await?)
    }

    /// The job's environment as this host runs it. One the agent does not know yet (an
    /// operator just moved it here, or it just appeared) is looked for again, with a fresh
    /// registration, before the job is refused.
    async fn local_env(&self, job: &cairn_core::job::Job) -> Result<DiscoveredEnv, AgentError> {
        if let Some(e) = self.env(job.env) {
            return Ok(e);
        }
        if let Err(e) = self.register().await {
            tracing::warn!(error = %e, "registration failed; retrying");
        }
        self.env(job.env).ok_or_else(|| AgentError::Cluster {
            code: ErrorCode::NotFound,
            message: format!(
                "environment {} is not (or no longer) on host {:?}",
                job.env, self.host
            ),
        })
    }

    async fn hooks(
        &self,
        stage: &str,
        commands: &[String],
        timeout: Duration,
        job: &cairn_core::job::Job,
        env: &DiscoveredEnv,
        result: &str,
    ) -> Result<(), AgentError> {
        if commands.is_empty() {
            return Ok(());
        }
        if !self.cfg.hooks {
            // `run_backup` refused the job already; never run or skip a hook silently here.
            return Err(AgentError::Invalid(format!(
                "{stage} hooks are configured, but this agent refuses hooks (hooks = false)"
            )));
        }
        let spec = HookSpec {
            stage,
            commands,
            timeout,
            env: vec![
                ("CAIRN_EID".into(), env.eid.to_string()),
                ("CAIRN_PATH".into(), env.path.display().to_string()),
                ("CAIRN_JOB".into(), job.id.to_string()),
                ("CAIRN_NAME".into(), env.name.clone()),
                ("CAIRN_RESULT".into(), result.into()),
            ],
            cwd: None,
        };
        run_hooks(&spec)
            .await
            .map(|_| ())
            .map_err(|e| AgentError::Invalid(e.to_string()))
    }

    async fn run_backup(
        &self,
        job: &cairn_core::job::Job,
        progress: &Arc<Progress>,
    ) -> Result<JobResult, AgentError> {
        let env = self.local_env(job).await?;
        let cfg = self.settings(job.env).await?;
        // A configured hook is never skipped: fail before anything is read.
        if let Some(why) = crate::hooks::refusal(
            self.cfg.hooks,
            &job.env.to_string(),
            cfg.pre_hooks.as_deref().unwrap_or_default(),
            cfg.post_hooks.as_deref().unwrap_or_default(),
        ) {
            return Err(AgentError::Invalid(why));
        }
        let requested = job
            .options
            .backup_type
            .or_else(|| cfg.backup_type.and_then(BackupType::from_code))
            .unwrap_or(BackupType::Full);
        let chain: Vec<(BackupType, i64)> = self
            .cluster
            .list(Some(job.env))
            .await?
            .iter()
            .map(|b| (b.kind, b.id.time))
            .collect();
        let (kind, why) = cairn_core::job::chain_decision(
            requested,
            &chain,
            chrono::Utc::now().timestamp(),
            cfg.chain_length,
            cfg.chain_days,
        );
        if let Some(why) = &why {
            tracing::info!(job_id = %job.id, reason = %why, "backup runs as a full one");
        }
        let compression = job
            .options
            .compression
            .or_else(|| cfg.compression.and_then(Compression::from_level))
            .unwrap_or_default();
        let timeout = Duration::from_secs(u64::from(
            cfg.hook_timeout_secs.unwrap_or(DEFAULT_HOOK_TIMEOUT_SECS),
        ));
        let pre = cfg.pre_hooks.clone().unwrap_or_default();
        let post = cfg.post_hooks.clone().unwrap_or_default();
        if !pre.is_empty() {
            progress.set_phase("running pre-backup hooks");
        }
        let pre_result = self.hooks("pre", &pre, timeout, job, &env, "").await;
        let outcome = match pre_result {
            Err(e) => Err(e),
            Ok(()) => {
                let req = BackupRequest {
                    source: env.path.clone(),
                    env: job.env,
                    kind,
                    compression,
                    excludes: job.options.excludes.clone(),
                    includes: job.options.includes.clone(),
                    name: job.options.name.clone(),
                    description: job.options.description.clone(),
                    tags: job.options.tags.clone(),
                    host: self.host.clone(),
                    env_info: cairn_core::EnvInfo {
                        name: env.name.clone(),
                        title: env.title.clone(),
                        hostname: env.hostname.clone(),
                        ip: env.ip.clone(),
                        os: env.os.clone(),
                        kind: env.kind.clone(),
                    },
                    upload_limit: self.cfg.upload_limit_bytes_per_sec,
                    job: Some(job.id),
                };
                backup(&self.cluster, req, progress.clone()).await
            }
        };
        let result_word = match &outcome {
            Ok(_) => "succeeded",
            Err(AgentError::Cancelled) => "cancelled",
            Err(_) => "failed",
        };
        if !post.is_empty() {
            progress.set_phase("running post-backup hooks");
        }
        let post_result = self
            .hooks("post", &post, timeout, job, &env, result_word)
            .await;
        let summary = outcome?;
        let mut message = format!(
            "{} backup {}: {} files read, {} reused, {} bytes sent",
            summary.kind, summary.id, summary.files_read, summary.files_reused, summary.bytes_sent
        );
        if let Some(why) = why {
            message.push_str(&format!(" (full: {why})"));
        }
        if let Err(e) = post_result {
            message.push_str(&format!("; {e}"));
        }
        Ok(JobResult {
            backup: summary.id.parse::<BackupId>().ok(),
            message,
            details: serde_json::to_string(&summary).unwrap_or_default(),
            ..JobResult::default()
        })
    }

    async fn run_restore(
        &self,
        job: &cairn_core::job::Job,
        progress: &Arc<Progress>,
    ) -> Result<JobResult, AgentError> {
        let backup_id = restore_source(job)?;
        let target = if !job.options.target_path.is_empty() {
            PathBuf::from(&job.options.target_path)
        } else {
            self.local_env(job).await?.path
        };
        if !target.is_absolute() {
            return Err(AgentError::Invalid(format!(
                "restore target {} is not an absolute path",
                target.display()
            )));
        }
        let removed = cleanup_leftovers(&target).map_err(|e| AgentError::Invalid(e.to_string()))?;
        for r in removed {
            tracing::info!(path = %r.display(), "removed the leftover of an interrupted restore");
        }
        if target.exists() && !job.options.force {
            if let Some(user) = in_use(&target) {
                return Err(AgentError::Cluster {
                    code: ErrorCode::TargetInUse,
                    message: format!(
                        "{} is in use ({user}); stop the container or restore with force",
                        target.display()
                    ),
                });
            }
            // Data written since the environment's last backup would be lost. On another
            // host than the environment's (a restore elsewhere), the tree is compared with
            // the backup being restored, the one backup of it this host may read.
            let reference = if self.env(job.env).is_some() {
                self.cluster.latest(job.env, false).await?
            } else {
                Some(self.cluster.show(&backup_id).await?)
            };
            if let Some(latest) = reference {
                let reader = self.cluster.reading(latest.id);
                let root = fetch_root(&reader, latest.manifest).await?;
                let entries = ManifestEntries::start(reader, &root);
                let t = target.clone();
                let changed = tokio::task::spawn_blocking(move || {
                    let mut entries = entries;
                    let mut failed = None;
                    let iter = std::iter::from_fn(|| match entries.blocking_next()? {
                        Ok(e) => Some(e),
                        Err(e) => {
                            failed = Some(e);
                            None
                        }
                    });
                    let r = changes_since(&t, iter);
                    (r, failed)
                })
                .await
                .map_err(|e| AgentError::Internal(e.to_string()))?;
                if let (_, Some(e)) = changed {
                    return Err(e.into());
                }
                if let Some(what) = changed.0.map_err(|e| AgentError::Invalid(e.to_string()))? {
                    return Err(AgentError::Cluster {
                        code: ErrorCode::TargetChanged,
                        message: format!(
                            "{} changed since its last backup {} ({what}); restore with force to overwrite",
                            target.display(),
                            latest.id
                        ),
                    });
                }
            }
        }
        let short = job.id.simple().to_string();
        let ip = InPlace::new(&target, &short).map_err(|e| AgentError::Invalid(e.to_string()))?;
        let req = RestoreRequest {
            backup: backup_id,
            target: ip.staging.clone(),
            paths: Vec::new(),
            owners: None,
            into_existing: false,
            privileged: job.options.privileged,
        };
        let summary = match restore(&self.cluster, req, progress.clone()).await {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&ip.staging);
                return Err(e);
            }
        };
        if progress.is_cancelled() {
            let _ = std::fs::remove_dir_all(&ip.staging);
            return Err(AgentError::Cancelled);
        }
        progress.set_phase("swapping the restored tree into place");
        let swap = ip.clone();
        tokio::task::spawn_blocking(move || swap_into_place(&swap))
            .await
            .map_err(|e| AgentError::Internal(e.to_string()))?
            .map_err(|e| AgentError::Invalid(e.to_string()))?;
        Ok(JobResult {
            backup: Some(backup_id),
            message: format!(
                "restored {} into {} ({} files, {} bytes)",
                backup_id,
                target.display(),
                summary.files,
                summary.bytes
            ),
            details: serde_json::to_string(&summary).unwrap_or_default(),
            ..JobResult::default()
        })
    }

    async fn run_selective(
        &self,
        job: &cairn_core::job::Job,
        progress: &Arc<Progress>,
    ) -> Result<JobResult, AgentError> {
        let backup_id = restore_source(job)?;
        let env = self.local_env(job).await?;
        let req = RestoreRequest {
            backup: backup_id,
            target: env.path.clone(),
            paths: job.options.paths.clone(),
            owners: None,
            into_existing: true,
            privileged: job.options.privileged,
        };
        let summary = restore(&self.cluster, req, progress.clone()).await?;
        Ok(JobResult {
            backup: Some(backup_id),
            message: format!(
                "restored {} path(s) of {} into {} ({} files, {} bytes)",
                job.options.paths.len(),
                backup_id,
                env.path.display(),
                summary.files,
                summary.bytes
            ),
            details: serde_json::to_string(&summary).unwrap_or_default(),
            ..JobResult::default()
        })
    }
}

/// The backup a restore job restores (the node resolves it when it queues the job).
fn restore_source(job: &cairn_core::job::Job) -> Result<BackupId, AgentError> {
    job.options
        .backup
        .ok_or_else(|| AgentError::Invalid("the restore job names no backup".into()))
}

/// The engine's counters as a progress report.
fn snapshot(p: &Progress, started: Instant) -> JobProgress {
    use std::sync::atomic::Ordering::Relaxed;
    let bytes_done = p.bytes_stored();
    let secs = started.elapsed().as_secs_f64().max(0.001);
    JobProgress {
        phase: p.phase(),
        percent: p.percent(),
        files_done: p.files_done.load(Relaxed),
        files_total: p.files_total.load(Relaxed),
        bytes_done,
        bytes_total: p.bytes_total.load(Relaxed),
        bytes_per_sec: (bytes_done as f64 / secs) as u64,
        updated_ms: chrono::Utc::now().timestamp_millis(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_are_checked() {
        let cfg: AgentConfig = toml::from_str(
            r#"
cluster = ["http://127.0.0.1:7700"]
host_id = "h1"
max_jobs = 4
[discovery]
dirs = ["/srv/envs"]
"#,
        )
        .unwrap();
        assert!(cfg.validate().is_ok());
        assert_eq!(cfg.max_jobs, 4);
        assert_eq!(cfg.discovery.dirs, vec![PathBuf::from("/srv/envs")]);
        let err = toml::from_str::<AgentConfig>("hostid = \"x\"").unwrap_err();
        assert!(err.to_string().contains("hostid"), "{err}");
        let mut bad = cfg.clone();
        bad.max_jobs = 0;
        assert!(bad.validate().unwrap_err().to_string().contains("max_jobs"));
        let mut slow = cfg;
        slow.report_interval_ms = 5_000;
        assert!(slow
            .validate()
            .unwrap_err()
            .to_string()
            .contains("report_interval_ms"));
    }

    #[test]
    fn the_example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cluster-config/agent.toml");
        let cfg = AgentConfig::load(&path).unwrap();
        assert_eq!(cfg.host_id.as_deref(), Some("hn1"));
        assert_eq!(cfg.cluster.len(), 3);
        assert!(cfg.discovery.vz.is_some());
    }

    #[test]
    fn a_generated_host_id_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let no_machine_id = dir.path().join("no-machine-id");
        let cfg = AgentConfig::new(vec![], state.clone(), Sources::default());
        // No host_id and no machine id: one is generated, kept in state_dir/host.id, and
        // the same one comes back, also to a new agent with the same state directory.
        let generated = cfg.resolve_host_id_with(&no_machine_id).unwrap();
        assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");
        assert_eq!(
            std::fs::read_to_string(state.join("host.id")).unwrap(),
            generated
        );
        assert!(!state.join("host.tmp").exists());
        assert_eq!(cfg.resolve_host_id_with(&no_machine_id).unwrap(), generated);
        let again = AgentConfig::new(vec![], state.clone(), Sources::default());
        assert_eq!(
            again.resolve_host_id_with(&no_machine_id).unwrap(),
            generated
        );
        // Another state directory generates another id.
        let other = AgentConfig::new(vec![], dir.path().join("other"), Sources::default());
        assert_ne!(
            other.resolve_host_id_with(&no_machine_id).unwrap(),
            generated
        );
        // An empty machine id does not count; a machine id wins over the generated one;
        // host_id wins over both.
        let machine_id = dir.path().join("machine-id");
        std::fs::write(&machine_id, "\n").unwrap();
        assert_eq!(cfg.resolve_host_id_with(&machine_id).unwrap(), generated);
        std::fs::write(&machine_id, "0123abcd\n").unwrap();
        assert_eq!(cfg.resolve_host_id_with(&machine_id).unwrap(), "0123abcd");
        let mut fixed = cfg;
        fixed.host_id = Some("fixed".into());
        assert_eq!(fixed.resolve_host_id_with(&machine_id).unwrap(), "fixed");
    }
}
