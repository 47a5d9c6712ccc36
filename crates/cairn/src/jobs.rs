//! The CLI side of agents and jobs: `cairn agent`, `agent token`, `envs`, `jobs`, job-based
//! `backup --env` and `restore --env`, and the backup settings (`config get|set`).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use cairn_agent::Cluster;
use cairn_core::job::JobState;
use cairn_core::retention::EnvConfig;
use cairn_core::EnvId;
use cairn_proto::pb;
use indicatif::{ProgressBar, ProgressStyle};

use crate::output;

/// Creates a job and either prints its id (`no_wait`) or follows it to the end.
pub async fn submit(
    c: &Cluster,
    req: pb::CreateJobRequest,
    no_wait: bool,
    json: bool,
) -> Result<ExitCode> {
    let job = c
        .agents_call(|mut a| {
            let req = req.clone();
            async move { a.create_job(req).await }
        })
        .await?;
    if no_wait {
        if json {
            println!("{}", job_json(&job));
        } else {
            println!("{}", job.id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !json {
        eprintln!(
            "job {} ({} of {}) queued on host {:?}",
            job.id, job.kind, job.env, job.host
        );
    }
    watch(c, &job.id, json).await
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

fn progress_line(j: &pb::Job) -> String {
    let p = j.progress.clone().unwrap_or_default();
    let mut s = format!("{}: {}", j.state, p.phase);
    if p.bytes_total > 0 {
        s.push_str(&format!(
            " — {} of {}, {} files, {}/s",
            output::bytes(p.bytes_done),
            output::bytes(p.bytes_total),
            p.files_done,
            output::bytes(p.bytes_per_sec)
        ));
    }
    if !j.waiting.is_empty() {
        s.push_str(&format!(" ({})", j.waiting));
    }
    s
}

/// Follows a job until it ends, with a progress bar on a terminal; the exit code says how it
/// ended (0 succeeded, 1 failed, 4 cancelled).
pub async fn watch(c: &Cluster, id: &str, json: bool) -> Result<ExitCode> {
    let pb = if json { ProgressBar::hidden() } else { bar() };
    let mut last: Option<pb::Job>;
    let mut node = 0usize;
    'outer: loop {
        let urls = c.node_urls();
        let url = urls[node % urls.len()].clone();
        let stream = c
            .agents_at(&url)?
            .watch_job(pb::JobRef { id: id.to_string() })
            .await;
        let mut stream = match stream {
            Ok(s) => s.into_inner(),
            Err(e) if cairn_proto::stable_code(&e).is_some() => {
                return Err(cairn_agent::AgentError::from(e).into())
            }
            Err(_) => {
                node += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        loop {
            match stream.message().await {
                Ok(None) => break,
                Ok(Some(j)) => {
                    pb.set_position(u64::from(
                        j.progress.as_ref().map(|p| p.percent).unwrap_or(0),
                    ));
                    pb.set_message(progress_line(&j));
                    let done = JobState::parse(&j.state).is_some_and(|s| s.is_final());
                    last = Some(j);
                    if done {
                        break 'outer;
                    }
                }
                Err(e) if cairn_proto::stable_code(&e).is_some() => {
                    return Err(cairn_agent::AgentError::from(e).into())
                }
                Err(_) => break,
            }
        }
        node += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    pb.finish_and_clear();
    let j = last.ok_or_else(|| anyhow::anyhow!("job {id} ended without a report"))?;
    let result = j.result.clone().unwrap_or_default();
    if json {
        println!("{}", job_json(&j));
    } else if j.state == "succeeded" {
        if !result.backup.is_empty() && j.kind == "backup" {
            println!("{}", result.backup);
        }
        eprintln!("job {} succeeded: {}", j.id, result.message);
    } else {
        eprintln!("job {} {}: {}", j.id, j.state, j.reason);
    }
    Ok(match j.state.as_str() {
        "succeeded" => ExitCode::SUCCESS,
        "cancelled" => ExitCode::from(4),
        _ => ExitCode::from(1),
    })
}

fn ms_rfc3339(ms: i64) -> Option<String> {
    (ms != 0)
        .then(|| chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339()))
        .flatten()
}

/// A job as JSON for `--json`.
pub fn job_json(j: &pb::Job) -> serde_json::Value {
    let p = j.progress.clone().unwrap_or_default();
    let r = j.result.clone().unwrap_or_default();
    let o = j.options.clone().unwrap_or_default();
    serde_json::json!({
        "id": j.id, "kind": j.kind, "env": j.env, "host": j.host, "requester": j.requester,
        "state": j.state, "reason": j.reason, "waiting": j.waiting,
        "code": (!j.code.is_empty()).then_some(&j.code),
        "created": ms_rfc3339(j.created_ms), "started": ms_rfc3339(j.started_ms),
        "finished": ms_rfc3339(j.finished_ms), "cancel_requested": j.cancel_requested,
        "options": {
            "type": o.backup_type, "compression": o.compression, "name": o.name,
            "description": o.description, "tags": o.tags, "includes": o.includes,
            "excludes": o.excludes, "backup": o.backup, "force": o.force,
            "target_path": o.target_path, "paths": o.paths, "prev": o.prev,
            "allow_privileged": o.allow_privileged, "privileged": o.privileged,
        },
        "progress": {
            "phase": p.phase, "percent": p.percent, "files_done": p.files_done,
            "files_total": p.files_total, "bytes_done": p.bytes_done,
            "bytes_total": p.bytes_total, "bytes_per_sec": p.bytes_per_sec,
        },
        "result": {"backup": r.backup, "message": r.message, "details": serde_json::from_str::<serde_json::Value>(&r.details).unwrap_or(serde_json::Value::Null)},
    })
}

/// `cairn jobs list`.
pub async fn list(
    c: &Cluster,
    env: Option<String>,
    state: Option<String>,
    limit: u32,
    json: bool,
) -> Result<ExitCode> {
    let req = pb::ListJobsRequest {
        env: env.unwrap_or_default(),
        state: state.unwrap_or_default(),
        limit,
    };
    let jobs = c
        .agents_call(|mut a| {
            let req = req.clone();
            async move { a.list_jobs(req).await }
        })
        .await?
        .jobs;
    if json {
        let all: Vec<_> = jobs.iter().map(job_json).collect();
        println!("{}", serde_json::Value::Array(all));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<36}  {:<17}  {:<9}  {:>4}  {:<20}  {:<36}  HOST",
        "JOB", "KIND", "STATE", "%", "CREATED", "ENV"
    );
    for j in &jobs {
        println!(
            "{:<36}  {:<17}  {:<9}  {:>4}  {:<20}  {:<36}  {}",
            j.id,
            j.kind,
            j.state,
            j.progress.as_ref().map(|p| p.percent).unwrap_or(0),
            ms_rfc3339(j.created_ms)
                .map(|s| s.chars().take(19).collect::<String>())
                .unwrap_or_default(),
            j.env,
            j.host
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `cairn jobs show`.
pub async fn show(c: &Cluster, id: &str, json: bool) -> Result<ExitCode> {
    let id = id.to_string();
    let j = c
        .agents_call(|mut a| {
            let id = id.clone();
            async move { a.get_job(pb::JobRef { id }).await }
        })
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&job_json(&j))?);
    } else {
        let r = j.result.clone().unwrap_or_default();
        println!(
            "job {} ({}) of environment {} on host {:?}",
            j.id, j.kind, j.env, j.host
        );
        println!(
            "  requested by {} at {}",
            j.requester,
            ms_rfc3339(j.created_ms).unwrap_or_default()
        );
        println!("  {}", progress_line(&j));
        if !j.reason.is_empty() {
            println!("  reason: {}", j.reason);
        }
        if !r.message.is_empty() {
            println!("  result: {}", r.message);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `cairn jobs cancel`.
pub async fn cancel(c: &Cluster, id: &str) -> Result<ExitCode> {
    let id = id.to_string();
    let j = c
        .agents_call(|mut a| {
            let id = id.clone();
            async move { a.cancel_job(pb::JobRef { id }).await }
        })
        .await?;
    if j.state == "cancelled" {
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
pub async fn envs(c: &Cluster, host: Option<String>, json: bool) -> Result<ExitCode> {
    let req = pb::ListEnvsRequest {
        host: host.unwrap_or_default(),
    };
    let envs = c
        .agents_call(|mut a| {
            let req = req.clone();
            async move { a.list_envs(req).await }
        })
        .await?
        .envs;
    if json {
        let all: Vec<_> = envs
            .iter()
            .map(|e| {
                serde_json::json!({
                    "eid": e.eid, "host": e.host, "host_online": e.host_online,
                    // The host as the XML API's `parent_eid` names it.
                    "host_eid": cairn_core::EnvId::of_host(&e.host).to_string(),
                    "name": e.name,
                    "path": e.path, "title": e.title, "hostname": e.hostname, "ip": e.ip,
                    "os": e.os, "description": e.description, "kind": e.kind,
                    "latest_backup": e.latest.as_ref().map(|b| b.id.clone()),
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
    for e in &envs {
        println!(
            "{:<36}  {:<12}  {:<16}  {:<20}  {:<16}  {}",
            e.eid,
            format!("{}{}", e.host, if e.host_online { "" } else { " (off)" }),
            e.name,
            e.hostname,
            e.os,
            e.latest.as_ref().map(|b| b.id.as_str()).unwrap_or("-")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `cairn agent token create|list|revoke`.
pub async fn token_create(c: &Cluster, host: &str, json: bool) -> Result<ExitCode> {
    let host = host.to_string();
    let t = c
        .agents_call(|mut a| {
            let host = host.clone();
            async move {
                a.create_agent_token(pb::CreateAgentTokenRequest { host })
                    .await
            }
        })
        .await?;
    if json {
        println!(
            "{}",
            serde_json::json!({"id": t.id, "host": t.host, "token": t.token})
        );
    } else {
        println!("{}", t.token);
        eprintln!(
            "token {} for host {:?}: put it in the agent's config (token = …) or CAIRN_TOKEN; it is shown only now",
            t.id, t.host
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn token_list(c: &Cluster, json: bool) -> Result<ExitCode> {
    let ts = c
        .agents_call(
            |mut a| async move { a.list_agent_tokens(pb::ListAgentTokensRequest {}).await },
        )
        .await?
        .tokens;
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
    c: &Cluster,
    id: Option<String>,
    host: Option<String>,
) -> Result<ExitCode> {
    let req = pb::RevokeAgentTokenRequest {
        id: id.unwrap_or_default(),
        host: host.unwrap_or_default(),
    };
    let r = c
        .agents_call(|mut a| {
            let req = req.clone();
            async move { a.revoke_agent_token(req).await }
        })
        .await?;
    println!("{} token(s) revoked", r.revoked);
    Ok(ExitCode::SUCCESS)
}

/// `cairn token create`: a user token with a role, printed once.
pub async fn user_token_create(
    c: &Cluster,
    name: &str,
    role: &str,
    json: bool,
) -> Result<ExitCode> {
    let req = pb::CreateUserTokenRequest {
        name: name.to_string(),
        role: role.to_string(),
    };
    let t = c
        .agents_call(|mut a| {
            let req = req.clone();
            async move { a.create_user_token(req).await }
        })
        .await?;
    if json {
        println!(
            "{}",
            serde_json::json!({"id": t.id, "name": t.name, "role": t.role, "token": t.token})
        );
    } else {
        println!("{}", t.token);
        eprintln!(
            "token {} for {:?} ({}): use it as CAIRN_TOKEN (or a gateway's token); it is shown only now",
            t.id, t.name, t.role
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `cairn token list`.
pub async fn user_token_list(c: &Cluster, json: bool) -> Result<ExitCode> {
    let ts = c
        .agents_call(|mut a| async move { a.list_user_tokens(pb::ListUserTokensRequest {}).await })
        .await?
        .tokens;
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
    c: &Cluster,
    id: Option<String>,
    name: Option<String>,
) -> Result<ExitCode> {
    let req = pb::RevokeUserTokenRequest {
        id: id.unwrap_or_default(),
        name: name.unwrap_or_default(),
    };
    let r = c
        .agents_call(|mut a| {
            let req = req.clone();
            async move { a.revoke_user_token(req).await }
        })
        .await?;
    println!("{} token(s) revoked", r.revoked);
    Ok(ExitCode::SUCCESS)
}

/// `cairn envs move EID --to HOST`.
pub async fn move_env(c: &Cluster, eid: EnvId, host: &str) -> Result<ExitCode> {
    let req = pb::MoveEnvRequest {
        eid: eid.to_string(),
        host: host.to_string(),
    };
    let e = c
        .agents_call(|mut a| {
            let req = req.clone();
            async move { a.move_env(req).await }
        })
        .await?;
    println!("environment {} now runs on host {:?}", e.eid, e.host);
    Ok(ExitCode::SUCCESS)
}

/// `cairn config set`: reads the settings, applies the change, writes them back.
/// `set` holds the values given (unset fields stay as they are); `unset` names fields to clear
/// (back to the cluster-wide setting or the default).
pub async fn config_set(
    c: &Cluster,
    env: EnvId,
    set: EnvConfig,
    unset: &[String],
) -> Result<ExitCode> {
    anyhow::ensure!(
        set != EnvConfig::default() || !unset.is_empty(),
        "nothing to set: see `cairn config set --help`"
    );
    let mut cfg = cairn_proto::env_config_from_wire(c.env_config_of(env, false).await?);
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
    let stored = c
        .set_env_config(env, cairn_proto::env_config_to_wire(&cfg))
        .await?;
    print_config(env, &cairn_proto::env_config_from_wire(stored), None, false);
    Ok(ExitCode::SUCCESS)
}

/// `cairn config get`.
pub async fn config_get(c: &Cluster, env: EnvId, json: bool) -> Result<ExitCode> {
    let own = cairn_proto::env_config_from_wire(c.env_config_of(env, false).await?);
    let effective = if env == EnvId::GLOBAL {
        None
    } else {
        Some(cairn_proto::env_config_from_wire(
            c.env_config_of(env, true).await?,
        ))
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
