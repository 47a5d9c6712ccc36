//! The CLI side of agents and jobs: `cairn agent`, `agent token`, `envs`, `jobs`, job-based
//! `backup --env` and `restore --env`, and the backup settings (`config get|set`).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use cairn_api::{Client, JobFilter, JobRequest, JobView};
use cairn_core::job::JobState;
use cairn_core::retention::EnvConfig;
use cairn_core::EnvId;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use crate::output;

/// Creates a job and either prints its id (`no_wait`) or follows it to the end.
pub async fn submit(c: &Client, req: JobRequest, no_wait: bool, json: bool) -> Result<ExitCode> {
    let view = c.create_job(&req).await?;
    if no_wait {
        if json {
            println!("{}", job_json(&view));
        } else {
            println!("{}", view.job.id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let job = &view.job;
    if !json {
        eprintln!(
            "job {} ({} of {}) queued on host {:?}",
            job.id,
            job.kind.as_str(),
            job.env,
            job.host
        );
    }
    watch(c, &job.id.to_string(), json).await
}

fn bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(100);
    pb.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos:>3}% {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

fn progress_line(v: &JobView) -> String {
    let p = &v.job.progress;
    let mut s = format!("{}: {}", v.job.state.as_str(), p.phase);
    if p.bytes_total > 0 {
        s.push_str(&format!(
            " — {} of {}, {} files, {}/s",
            output::bytes(p.bytes_done),
            output::bytes(p.bytes_total),
            p.files_done,
            output::bytes(p.bytes_per_sec)
        ));
    }
    if let Some(w) = &v.waiting {
        s.push_str(&format!(" ({w})"));
    }
    s
}

/// Follows a job until it ends, with a progress bar on a terminal; the exit code says how it
/// ended (0 succeeded, 1 failed, 4 cancelled).
pub async fn watch(c: &Client, id: &str, json: bool) -> Result<ExitCode> {
    let id: uuid::Uuid = id
        .parse()
        .map_err(|e| anyhow::anyhow!("job id {id:?}: {e}"))?;
    let pb = if json { ProgressBar::hidden() } else { bar() };
    let mut last: Option<JobView>;
    let mut node = 0usize;
    'outer: loop {
        let urls = c.node_urls();
        let url = urls[node % urls.len()].clone();
        let mut stream = match c.watch_job(&url, id).await {
            Ok(s) => Box::pin(s),
            // A node's answer (no such job, not yours) is final; a node that is gone is not.
            Err(e) if e.is_answer() => return Err(e.into()),
            Err(_) => {
                node += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        loop {
            match stream.next().await {
                None => break,
                Some(Ok(v)) => {
                    pb.set_position(u64::from(v.job.progress.percent));
                    pb.set_message(progress_line(&v));
                    let done = v.job.state.is_final();
                    last = Some(v);
                    if done {
                        break 'outer;
                    }
                }
                Some(Err(e)) if e.is_answer() => return Err(e.into()),
                Some(Err(_)) => break,
            }
        }
        node += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    pb.finish_and_clear();
    let v = last.ok_or_else(|| anyhow::anyhow!("job {id} ended without a report"))?;
    let j = &v.job;
    if json {
        println!("{}", job_json(&v));
    } else if j.state == JobState::Succeeded {
        if let (Some(b), cairn_core::job::JobKind::Backup) = (&j.result.backup, j.kind) {
            println!("{b}");
        }
        eprintln!("job {} succeeded: {}", j.id, j.result.message);
    } else {
        eprintln!("job {} {}: {}", j.id, j.state.as_str(), j.reason);
    }
    Ok(match j.state {
        JobState::Succeeded => ExitCode::SUCCESS,
        JobState::Cancelled => ExitCode::from(4),
        _ => ExitCode::from(1),
    })
}

fn ms_rfc3339(ms: i64) -> Option<String> {
    (ms != 0)
        .then(|| chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339()))
        .flatten()
}

/// A job as JSON for `--json`.
pub fn job_json(v: &JobView) -> serde_json::Value {
    let j = &v.job;
    let p = &j.progress;
    let r = &j.result;
    let o = &j.options;
    let id = |b: &Option<cairn_core::BackupId>| b.map(|b| b.to_string()).unwrap_or_default();
    serde_json::json!({
        "id": j.id.to_string(), "kind": j.kind.as_str(), "env": j.env.to_string(),
        "host": j.host, "requester": j.requester,
        "state": j.state.as_str(), "reason": j.reason,
        "waiting": v.waiting.clone().unwrap_or_default(),
        "code": j.code.map(|c| c.as_str()),
        "created": ms_rfc3339(j.created_ms),
        "started": j.started_ms.and_then(ms_rfc3339),
        "finished": j.finished_ms.and_then(ms_rfc3339), "cancel_requested": j.cancel_requested,
        "options": {
            "type": o.backup_type.map(|t| t.code()),
            "compression": o.compression.map(|c| c.level()), "name": o.name,
            "description": o.description, "tags": o.tags, "includes": o.includes,
            "excludes": o.excludes, "backup": id(&o.backup), "force": o.force,
            "target_path": o.target_path, "paths": o.paths, "prev": o.prev,
            "allow_privileged": o.allow_privileged, "privileged": o.privileged,
        },
        "progress": {
            "phase": p.phase, "percent": p.percent, "files_done": p.files_done,
            "files_total": p.files_total, "bytes_done": p.bytes_done,
            "bytes_total": p.bytes_total, "bytes_per_sec": p.bytes_per_sec,
        },
        "result": {"backup": id(&r.backup), "message": r.message, "details": serde_json::from_str::<serde_json::Value>(&r.details).unwrap_or(serde_json::Value::Null)},
        "log": j.log.iter().map(|l| serde_json::json!({
            "at": ms_rfc3339(l.at_ms), "level": l.level.as_str(), "text": l.text,
        })).collect::<Vec<_>>(),
        "log_dropped": j.log_dropped,
    })
}

/// `cairn jobs list`.
pub async fn list(
    c: &Client,
    env: Option<String>,
    state: Option<String>,
    limit: u32,
    json: bool,
) -> Result<ExitCode> {
    let filter = JobFilter {
        env: env
            .map(|e| e.parse::<EnvId>())
            .transpose()
            .map_err(|e| anyhow::anyhow!("--env: {e}"))?,
        state: state
            .map(|s| {
                JobState::parse(&s).ok_or_else(|| {
                    anyhow::anyhow!(
                        "--state {s:?}: use queued, running, succeeded, failed or cancelled"
                    )
                })
            })
            .transpose()?,
        limit,
    };
    let jobs = c.list_jobs(&filter).await?;
    if json {
        let all: Vec<_> = jobs.iter().map(job_json).collect();
        println!("{}", serde_json::Value::Array(all));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<36}  {:<17}  {:<9}  {:>4}  {:<20}  {:<36}  HOST",
        "JOB", "KIND", "STATE", "%", "CREATED", "ENV"
    );
    for v in &jobs {
        let j = &v.job;
        println!(
            "{:<36}  {:<17}  {:<9}  {:>4}  {:<20}  {:<36}  {}",
            j.id,
            j.kind.as_str(),
            j.state.as_str(),
            j.progress.percent,
            ms_rfc3339(j.created_ms)
                .map(|s| s.chars().take(19).collect::<String>())
                .unwrap_or_default(),
            j.env,
            j.host
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn job_id(id: &str) -> Result<uuid::Uuid> {
    id.parse()
        .map_err(|e| anyhow::anyhow!("job id {id:?}: {e}"))
}

/// `cairn jobs show`.
pub async fn show(c: &Client, id: &str, json: bool) -> Result<ExitCode> {
    let v = c.get_job(job_id(id)?).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&job_json(&v))?);
    } else {
        let j = &v.job;
        println!(
            "job {} ({}) of environment {} on host {:?}",
            j.id,
            j.kind.as_str(),
            j.env,
            j.host
        );
        println!(
            "  requested by {} at {}",
            j.requester,
            ms_rfc3339(j.created_ms).unwrap_or_default()
        );
        println!("  {}", progress_line(&v));
        if !j.reason.is_empty() {
            println!("  reason: {}", j.reason);
        }
        if !j.result.message.is_empty() {
            println!("  result: {}", j.result.message);
        }
        if !j.log.is_empty() {
            println!("  log:");
        }
        for (n, l) in j.log.iter().enumerate() {
            if n == 1 && j.log_dropped > 0 {
                println!("    … {} earlier line(s) dropped", j.log_dropped);
            }
            println!(
                "    {}  {:<5}  {}",
                ms_rfc3339(l.at_ms)
                    .map(|s| s.chars().take(19).collect::<String>())
                    .unwrap_or_default(),
                l.level.as_str(),
                l.text
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `cairn jobs cancel`.
pub async fn cancel(c: &Client, id: &str) -> Result<ExitCode> {
    let j = c.cancel_job(job_id(id)?).await?.job;
    if j.state == JobState::Cancelled {
        println!("job {} cancelled", j.id);
    } else {
        println!(
            "job {} asked to stop (its agent stops at the next file)",
            j.id
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `cairn envs list`.
pub async fn envs(c: &Client, host: Option<String>, json: bool) -> Result<ExitCode> {
    let envs = c.list_envs(host.as_deref()).await?;
    if json {
        let all: Vec<_> = envs
            .iter()
            .map(|v| {
                let e = &v.record;
                serde_json::json!({
                    "eid": e.eid.to_string(), "host": e.host, "host_online": v.host_online,
                    // The host as the XML API's `parent_eid` names it.
                    "host_eid": cairn_core::EnvId::of_host(&e.host).to_string(),
                    "name": e.name,
                    "path": e.path, "title": e.title, "hostname": e.hostname, "ip": e.ip,
                    "os": e.os, "description": e.description, "kind": e.kind,
                    "latest_backup": v.latest.as_ref().map(|b| b.id.to_string()),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(all));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<36}  {:<12}  {:<16}  {:<20}  {:<16}  LATEST BACKUP",
        "EID", "HOST", "NAME", "HOSTNAME", "OS"
    );
    for v in &envs {
        let e = &v.record;
        println!(
            "{:<36}  {:<12}  {:<16}  {:<20}  {:<16}  {}",
            e.eid,
            format!("{}{}", e.host, if v.host_online { "" } else { " (off)" }),
            e.name,
            e.hostname,
            e.os,
            v.latest
                .as_ref()
                .map(|b| b.id.to_string())
                .unwrap_or_else(|| "-".into())
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `cairn agent token create|list|revoke`.
pub async fn token_create(c: &Client, host: &str, json: bool) -> Result<ExitCode> {
    let t = c.create_agent_token(host).await?;
    let secret = t.token.clone().unwrap_or_default();
    if json {
        println!(
            "{}",
            serde_json::json!({"id": t.id, "host": t.host, "token": secret})
        );
    } else {
        println!("{secret}");
        eprintln!(
            "token {} for host {:?}: put it in the agent's config (token = …) or CAIRN_TOKEN; it is shown only now",
            t.id, t.host
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn token_list(c: &Client, json: bool) -> Result<ExitCode> {
    let ts = c.list_agent_tokens().await?;
    if json {
        let all: Vec<_> = ts
            .iter()
            .map(|t| serde_json::json!({"id": t.id, "host": t.host, "created": ms_rfc3339(t.created_ms)}))
            .collect();
        println!("{}", serde_json::Value::Array(all));
    } else {
        println!("{:<14}  {:<24}  CREATED", "ID", "HOST");
        for t in ts {
            println!(
                "{:<14}  {:<24}  {}",
                t.id,
                t.host,
                ms_rfc3339(t.created_ms).unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn token_revoke(
    c: &Client,
    id: Option<String>,
    host: Option<String>,
) -> Result<ExitCode> {
    let n = c.revoke_agent_token(id.as_deref(), host.as_deref()).await?;
    println!("{n} token(s) revoked");
    Ok(ExitCode::SUCCESS)
}

/// `cairn token create`: a user token with a role, printed once.
pub async fn user_token_create(c: &Client, name: &str, role: &str, json: bool) -> Result<ExitCode> {
    let role = cairn_core::auth::Role::parse(role)
        .ok_or_else(|| anyhow::anyhow!("--role {role:?}: use viewer, operator or admin"))?;
    let t = c.create_user_token(name, role).await?;
    let secret = t.token.clone().unwrap_or_default();
    if json {
        println!(
            "{}",
            serde_json::json!({"id": t.id, "name": t.name, "role": t.role, "token": secret})
        );
    } else {
        println!("{secret}");
        eprintln!(
            "token {} for {:?} ({}): use it as CAIRN_TOKEN (or a gateway's token); it is shown only now",
            t.id, t.name, t.role
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `cairn token list`.
pub async fn user_token_list(c: &Client, json: bool) -> Result<ExitCode> {
    let ts = c.list_user_tokens().await?;
    if json {
        let all: Vec<_> = ts
            .iter()
            .map(|t| serde_json::json!({"id": t.id, "name": t.name, "role": t.role, "created": ms_rfc3339(t.created_ms)}))
            .collect();
        println!("{}", serde_json::Value::Array(all));
    } else {
        println!("{:<14}  {:<24}  {:<9}  CREATED", "ID", "NAME", "ROLE");
        for t in ts {
            println!(
                "{:<14}  {:<24}  {:<9}  {}",
                t.id,
                t.name,
                t.role,
                ms_rfc3339(t.created_ms).unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `cairn token revoke`.
pub async fn user_token_revoke(
    c: &Client,
    id: Option<String>,
    name: Option<String>,
) -> Result<ExitCode> {
    let n = c.revoke_user_token(id.as_deref(), name.as_deref()).await?;
    println!("{n} token(s) revoked");
    Ok(ExitCode::SUCCESS)
}

/// `cairn envs move EID --to HOST`.
pub async fn move_env(c: &Client, eid: EnvId, host: &str) -> Result<ExitCode> {
    let e = c.move_env(eid, host).await?;
    println!("environment {} now runs on host {:?}", e.eid, e.host);
    Ok(ExitCode::SUCCESS)
}

/// `cairn config set`: reads the settings, applies the change, writes them back.
/// `set` holds the values given (unset fields stay as they are); `unset` names fields to clear
/// (back to the cluster-wide setting or the default).
pub async fn config_set(
    c: &Client,
    env: EnvId,
    set: EnvConfig,
    unset: &[String],
) -> Result<ExitCode> {
    anyhow::ensure!(
        set != EnvConfig::default() || !unset.is_empty(),
        "nothing to set: see `cairn config set --help`"
    );
    let mut cfg = c.env_config_of(env, false).await?;
    for f in unset {
        match f.as_str() {
            "keep_max" | "keep-max" => cfg.keep_max = None,
            "chain_length" | "chain-length" => cfg.chain_length = None,
            "chain_days" | "chain-days" => cfg.chain_days = None,
            "compression" => cfg.compression = None,
            "type" => cfg.backup_type = None,
            "pre_hooks" | "pre-hooks" | "pre-hook" => cfg.pre_hooks = None,
            "post_hooks" | "post-hooks" | "post-hook" => cfg.post_hooks = None,
            "hook_timeout" | "hook-timeout" => cfg.hook_timeout_secs = None,
            "retention_grace" | "retention-grace" => cfg.retention_grace_days = None,
            other => anyhow::bail!(
                "--unset {other}: use keep_max, chain_length, chain_days, compression, type, pre_hooks, post_hooks, hook_timeout or retention_grace"
            ),
        }
    }
    // The values given win; the rest stay as stored.
    let cfg = set.merged(&cfg);
    cfg.validate().map_err(anyhow::Error::msg)?;
    let stored = c.set_env_config(env, &cfg).await?;
    print_config(env, &stored, None, false);
    Ok(ExitCode::SUCCESS)
}

/// `cairn config get`.
pub async fn config_get(c: &Client, env: EnvId, json: bool) -> Result<ExitCode> {
    let own = c.env_config_of(env, false).await?;
    let effective = if env == EnvId::GLOBAL {
        None
    } else {
        Some(c.env_config_of(env, true).await?)
    };
    print_config(env, &own, effective.as_ref(), json);
    Ok(ExitCode::SUCCESS)
}

fn config_json(c: &EnvConfig) -> serde_json::Value {
    serde_json::json!({
        "keep_max": c.keep_max, "chain_length": c.chain_length, "chain_days": c.chain_days,
        "compression": c.compression, "type": c.backup_type, "pre_hooks": c.pre_hooks,
        "post_hooks": c.post_hooks, "hook_timeout_secs": c.hook_timeout_secs,
        "retention_grace_days": c.retention_grace_days,
    })
}

fn print_config(env: EnvId, own: &EnvConfig, effective: Option<&EnvConfig>, json: bool) {
    let scope = if env == EnvId::GLOBAL {
        "cluster-wide".to_string()
    } else {
        env.to_string()
    };
    if json {
        println!(
            "{}",
            serde_json::json!({
                "env": if env == EnvId::GLOBAL { None } else { Some(env.to_string()) },
                "config": config_json(own),
                "effective": effective.map(config_json),
            })
        );
        return;
    }
    let show = |c: &EnvConfig| {
        let o = |v: Option<u32>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        let h = |v: &Option<Vec<String>>| match v {
            None => "-".to_string(),
            Some(l) => format!("{l:?}"),
        };
        format!(
            "keep_max {}, chain_length {}, chain_days {}, compression {}, type {}, pre_hooks {}, post_hooks {}, hook_timeout {}, retention_grace {}",
            o(c.keep_max),
            o(c.chain_length),
            o(c.chain_days),
            o(c.compression),
            o(c.backup_type),
            h(&c.pre_hooks),
            h(&c.post_hooks),
            o(c.hook_timeout_secs),
            o(c.retention_grace_days)
        )
    };
    println!("{scope}: {}", show(own));
    if let Some(e) = effective {
        println!("in force: {}", show(e));
    }
}
