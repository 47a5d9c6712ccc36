//! `cairn agent join-token create|list|revoke` and `cairn agent enroll`: an agent joins with
//! a one-time join token instead of a hand-copied agent token and a hand-written config.
//! `list` shows what the catalog keeps of each token (host, times, state), never a secret.
//!
//! `enroll` reads the join token from a file or stdin (never the command line), pins the
//! cluster's CA by the fingerprint the operator gives (`cairn_api::enroll`), redeems the
//! token, and writes three files side by side: the agent config (default
//! `/etc/cairn/agent.toml`), `agent.token` (0600) and `ca.pem`. An existing config is kept
//! unless `--force`, so a second run cannot silently replace a working agent's identity.

use std::io::{BufRead as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use cairn_api::Client;

/// Parses a duration such as `90s`, `15m`, `1h`, `7d` into milliseconds.
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: a number and a unit, e.g. 30m, 1h, 2d"))?;
    let ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" | "" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{s:?}: the unit is s, m, h or d")),
    };
    n.checked_mul(ms)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// `cairn agent join-token create HOST`: prints the token alone on stdout (or JSON), and on
/// stderr how to enroll with it.
pub async fn join_token_create(
    c: &Client,
    host: &str,
    ttl_ms: u64,
    ca: Option<&Path>,
    urls: &str,
    json: bool,
) -> Result<ExitCode> {
    let t = c.create_join_token(host, ttl_ms).await?;
    let fingerprint = match ca {
        Some(p) => Some(cairn_api::enroll::pem_fingerprint(
            &std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?,
        )?),
        None => None,
    };
    let expires = chrono::DateTime::from_timestamp_millis(t.expires_ms)
        .map(|d| d.to_rfc3339())
        .unwrap_or_default();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "id": t.id,
                "host": t.host,
                "token": t.token,
                "expires_ms": t.expires_ms,
                "ca_fingerprint": fingerprint,
            })
        );
    } else {
        println!("{}", t.token);
        eprintln!(
            "join token {} for host {:?}, valid once until {expires}. On that host, with the token in a file:\n  cairn agent enroll --cluster {urls} --ca-fingerprint {} --host {} --token-file FILE",
            t.id,
            t.host,
            fingerprint.as_deref().unwrap_or("<ca.sha256>"),
            t.host,
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn ms_rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// `cairn agent join-token list`: id, host, created, expires, state (`unused`, `used`,
/// `expired`) and, once used, the agent token it gave.
pub async fn join_token_list(c: &Client, json: bool) -> Result<ExitCode> {
    let now = chrono::Utc::now().timestamp_millis();
    let ts = c.list_join_tokens().await?;
    if json {
        let all: Vec<_> = ts
            .iter()
            .map(|t| {
                serde_json::json!({
                    "id": t.id,
                    "host": t.host,
                    "created_ms": t.created_ms,
                    "expires_ms": t.expires_ms,
                    "state": t.state(now),
                    "redeemed_ms": t.redeemed.as_ref().map(|r| r.0),
                    "agent_token_id": t.redeemed.as_ref().map(|r| r.1.clone()),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(all));
    } else {
        println!(
            "{:<14}  {:<24}  {:<20}  {:<20}  STATE",
            "ID", "HOST", "CREATED", "EXPIRES"
        );
        for t in &ts {
            let state = match &t.redeemed {
                Some((_, agent)) => format!("used (agent token {agent})"),
                None => t.state(now).to_string(),
            };
            println!(
                "{:<14}  {:<24}  {:<20}  {:<20}  {state}",
                t.id,
                t.host,
                ms_rfc3339(t.created_ms),
                ms_rfc3339(t.expires_ms),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `cairn agent join-token revoke ID|HOST`.
pub async fn join_token_revoke(c: &Client, target: &str) -> Result<ExitCode> {
    let n = c.revoke_join_token(target).await?;
    println!("{n} join token(s) revoked");
    Ok(ExitCode::SUCCESS)
}

/// What `cairn agent enroll` was asked for.
pub struct EnrollArgs {
    pub urls: String,
    pub fingerprint: String,
    pub host: Option<String>,
    pub config: PathBuf,
    pub token_file: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub dirs: Vec<PathBuf>,
    pub force: bool,
    pub json: bool,
}

/// Reads the join token: the first line of `file`, else of stdin.
fn read_join_token(file: Option<&Path>) -> Result<String> {
    let line = match file {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("cannot read the join token file {}", p.display()))?
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
        None => {
            let mut l = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut l)
                .context("cannot read the join token from stdin")?;
            l
        }
    };
    let token = line.trim().to_string();
    if token.is_empty() {
        bail!("no join token: give --token-file FILE or the token on stdin (from cairn agent join-token create)");
    }
    Ok(token)
}

/// The agent config `enroll` writes.
pub fn agent_config(
    urls: &[String],
    host: &str,
    token_file: &Path,
    ca_file: &Path,
    state_dir: Option<&Path>,
    dirs: &[PathBuf],
) -> String {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let list = |v: Vec<String>| format!("[{}]", v.join(", "));
    let mut s = format!(
        "# Written by `cairn agent enroll` (or `cairn init agent`). Run: cairn agent --config THIS-FILE\n\
         cluster = {}\n\
         host_id = {}\n\
         token_file = {}\n\
         ca_file = {}\n",
        list(urls.iter().map(|u| q(u)).collect()),
        q(host),
        q(&token_file.to_string_lossy()),
        q(&ca_file.to_string_lossy()),
    );
    if let Some(d) = state_dir {
        s.push_str(&format!("state_dir = {}\n", q(&d.to_string_lossy())));
    }
    s.push_str("\n[discovery]\n");
    if dirs.is_empty() {
        s.push_str("# dirs = [\"/srv/containers\"]    # every subdirectory is one environment\n");
    } else {
        s.push_str(&format!(
            "dirs = {}\n",
            list(dirs.iter().map(|d| q(&d.to_string_lossy())).collect())
        ));
    }
    s.push_str(
        "\n[discovery.vz]                  # Virtuozzo / OpenVZ\n\
         private_root = \"/vz/private\"\n\
         conf_dir = \"/etc/vz/conf\"\n",
    );
    s
}

fn write_file(path: &Path, contents: &str, mode: u32) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// This host's name, for a host id nobody gave.
fn host_name() -> Result<String> {
    Ok(nix::unistd::gethostname()
        .context("cannot read the host name (give --host)")?
        .to_string_lossy()
        .into_owned())
}

fn split_urls(urls: &str) -> Vec<String> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect()
}

/// `cairn init agent`: the config `enroll` would write, without enrolling.
pub fn init_agent(
    urls: &str,
    config: &Path,
    host: Option<String>,
    dirs: &[PathBuf],
    force: bool,
) -> Result<ExitCode> {
    if config.exists() && !force {
        bail!("{} exists (pass --force to replace it)", config.display());
    }
    let host = match host {
        Some(h) => h,
        None => host_name()?,
    };
    let dir = config
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let text = agent_config(
        &split_urls(urls),
        &host,
        &dir.join("agent.token"),
        &dir.join("ca.pem"),
        None,
        dirs,
    );
    write_file(config, &text, 0o644)?;
    println!(
        "wrote {}; put the agent token in {} (cairn agent token create {host}) and the CA in {}, or run cairn agent enroll instead",
        config.display(),
        dir.join("agent.token").display(),
        dir.join("ca.pem").display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `cairn agent enroll`.
pub async fn enroll(a: EnrollArgs) -> Result<ExitCode> {
    if a.config.exists() && !a.force {
        bail!(
            "{} exists: this host looks enrolled already (pass --force to replace its config and token)",
            a.config.display()
        );
    }
    let token = read_join_token(a.token_file.as_deref())?;
    let host = match a.host {
        Some(h) => h,
        None => host_name()?,
    };
    let urls = split_urls(&a.urls);
    let mut pinned = None;
    let mut why = Vec::new();
    for url in &urls {
        match cairn_api::enroll::fetch_ca(url, &a.fingerprint).await {
            Ok(pem) => {
                pinned = Some(pem);
                break;
            }
            // A wrong fingerprint or an impostor ends here: no other node is asked to
            // change that answer.
            Err(e @ cairn_api::Error::Invalid(_)) => return Err(e.into()),
            Err(e) => why.push(e.to_string()),
        }
    }
    let Some(ca_pem) = pinned else {
        bail!("no node answered: {}", why.join("; "));
    };
    let got = cairn_api::enroll::redeem(&urls, &ca_pem, &token, &host).await?;
    let dir = a
        .config
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let token_file = dir.join("agent.token");
    let ca_file = dir.join("ca.pem");
    let secret = got.agent.token.clone().unwrap_or_default();
    write_file(&token_file, &format!("{secret}\n"), 0o600)?;
    // The pinned CA, which the handshake proved: not whatever the answer says.
    write_file(&ca_file, &ca_pem, 0o644)?;
    let cfg = agent_config(
        &urls,
        &host,
        &token_file,
        &ca_file,
        a.state_dir.as_deref(),
        &a.dirs,
    );
    write_file(&a.config, &cfg, 0o644)?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "host": host,
                "token_id": got.agent.id,
                "config": a.config,
                "token_file": token_file,
                "ca_file": ca_file,
            })
        );
    } else {
        println!(
            "enrolled host {host:?} (agent token {}): wrote {}, {} and {}; start it with: cairn agent --config {}",
            got.agent.id,
            a.config.display(),
            token_file.display(),
            ca_file.display(),
            a.config.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_read_as_people_write_them() {
        assert_eq!(parse_ttl("90s"), Ok(90_000));
        assert_eq!(parse_ttl("15m"), Ok(900_000));
        assert_eq!(parse_ttl("1h"), Ok(3_600_000));
        assert_eq!(parse_ttl("2"), Ok(7_200_000));
        assert_eq!(parse_ttl("7d"), Ok(604_800_000));
        assert!(parse_ttl("h").is_err());
        assert!(parse_ttl("1w").is_err());
    }

    #[test]
    fn the_written_agent_config_loads() {
        let dir = tempfile::tempdir().unwrap();
        let text = agent_config(
            &[
                "https://10.0.0.1:7700".into(),
                "https://10.0.0.2:7700".into(),
            ],
            "hn1",
            &dir.path().join("agent.token"),
            &dir.path().join("ca.pem"),
            Some(&dir.path().join("state")),
            &[dir.path().join("containers")],
        );
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).unwrap();
        let cfg = cairn_agent::daemon::AgentConfig::load(&path).unwrap();
        assert_eq!(cfg.cluster.len(), 2);
        assert_eq!(cfg.host_id.as_deref(), Some("hn1"));
        assert_eq!(cfg.token_file, Some(dir.path().join("agent.token")));
        assert_eq!(cfg.ca_file, Some(dir.path().join("ca.pem")));
        assert_eq!(cfg.discovery.dirs, vec![dir.path().join("containers")]);
    }
}
