//! Wiring of the gateway (REST adapter) into the binary: inside a node, standalone
//! (`cairn gateway`), inside `cairn dev`, the `cairn user` commands that manage its
//! users file, and `cairn init gateway`, which writes a standalone gateway's files.
//!
//! # `cairn init gateway`
//! A standalone gateway authenticates its users itself (the users file) and calls the
//! cluster with a user token of its own, acting for each user (`Client::acting_for`), so the
//! cluster decides every call. That token must have at least its users' rights: `init
//! gateway` creates an admin user token named `gateway` (the caller's `CAIRN_TOKEN` must be
//! an admin's; the catalog decides), revocable like any other (`cairn token revoke --name
//! gateway`). It writes into `--out`: `gateway.toml` (the cluster's addresses, the token
//! and CA files, the users file, `[rest]` and `[xml]` listeners), `gateway.token` (0600),
//! `ca.pem` (the CA given with `--ca`, required for `https://` nodes) and an empty
//! `users.toml` when none exists (`cairn user add` fills it). The config names its files
//! under `--etc` (default `/etc/cairn`, where the packaged unit reads `gateway.toml`). The
//! config is loaded and validated as the gateway would before the token is created, and an
//! existing `gateway.toml` is refused unless `--force`, so nothing half-written replaces a
//! working gateway's config.

use std::io::{BufRead, Write as _};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use cairn_gateway::users::{Role, Users, UsersFile};
use cairn_gateway::{ClusterLink, GatewayConfig, RestServer};

/// Starts the gateway a node's config asks for (`[gateway]`), calling the node itself.
pub async fn start_in_node(
    cfg: &cairn_node::NodeConfig,
    config_dir: &Path,
    node_url: &str,
) -> Result<Option<Adapters>> {
    let Some(table) = cfg.gateway.clone() else {
        return Ok(None);
    };
    let gw = GatewayConfig::from_table(table, config_dir)?;
    gw.validate(false)?;
    anyhow::ensure!(
        gw.cluster.is_empty() && gw.token.is_none() && gw.token_file.is_none(),
        "[gateway]: cluster and token belong to a standalone gateway's config; inside a node the gateway calls the node itself"
    );
    // The client checks the node's certificate against the node's own CA.
    let mut creds = cairn_api::Credentials::token(cfg.resolve_token()?.as_deref());
    if let Some(ca) = cfg.tls_ca.as_ref().or(cfg.tls_cert.as_ref()) {
        creds = creds.with_ca_file(ca)?;
    }
    let cluster = cairn_api::Client::connect(node_url, &creds).await?;
    let users = Arc::new(Users::open(gw.users_file.clone())?.with_limits(&gw.auth));
    warn_if_empty(&users, &gw.users_file);
    let link = ClusterLink::connected(cluster);
    Ok(Some(start_adapters(&gw, link, users).await?))
}

/// The adapters a gateway config enables, started over one cluster link.
pub struct Adapters {
    _rest: Option<RestServer>,
    _xml: Option<cairn_gateway::XmlServer>,
}

async fn start_adapters(
    gw: &GatewayConfig,
    link: ClusterLink,
    users: Arc<Users>,
) -> Result<Adapters> {
    let rest = match &gw.rest {
        Some(r) => {
            let s = cairn_gateway::serve_rest(r, link.clone(), users.clone()).await?;
            println!("REST API (Sun Cloud API) at {}", s.url());
            println!("Dashboard at {}ui/", s.url());
            Some(s)
        }
        None => None,
    };
    let xml = match &gw.xml {
        Some(x) => {
            let s = cairn_gateway::serve_xml(x, link, users).await?;
            println!("XML API (Virtuozzo backupm) at {}", s.addr);
            if let Some(t) = s.tls_addr {
                println!("XML API over TLS at {t}");
            }
            Some(s)
        }
        None => None,
    };
    Ok(Adapters {
        _rest: rest,
        _xml: xml,
    })
}

fn warn_if_empty(users: &Users, path: &Path) {
    if users.is_empty() {
        tracing::warn!(
            users_file = %path.display(),
            "the users file has no users: every request will be refused; add one with `cairn user add NAME --role admin --users-file {}`",
            path.display()
        );
    }
}

/// `cairn gateway --config FILE`: the adapters alone, in front of any nodes.
pub async fn standalone(config: &Path, stop: impl std::future::Future<Output = ()>) -> Result<()> {
    let gw = GatewayConfig::load(config)?;
    gw.validate(true)?;
    let creds = gw.cluster_credentials()?;
    let users = Arc::new(Users::open(gw.users_file.clone())?.with_limits(&gw.auth));
    warn_if_empty(&users, &gw.users_file);
    let link = ClusterLink::connecting(gw.cluster.clone(), creds);
    let adapters = start_adapters(&gw, link, users).await?;
    stop.await;
    drop(adapters);
    Ok(())
}

/// The users of `cairn dev`: one `admin` whose password is `CAIRN_DEV_PASSWORD`, or a new
/// random one (printed by the caller). Kept in `<data>/users.toml` so `cairn user` can add
/// more while dev runs.
pub fn dev_users(data: &Path) -> Result<(PathBuf, Option<String>)> {
    let path = data.join("users.toml");
    let mut file = UsersFile::load(&path)?;
    let (password, shown) = match std::env::var("CAIRN_DEV_PASSWORD") {
        Ok(p) if !p.is_empty() => (p, None),
        _ => {
            let p = random_password();
            (p.clone(), Some(p))
        }
    };
    if file.get("admin").is_some() {
        file.set_password("admin", &password)?;
        file.set_role("admin", Role::Admin)?;
    } else {
        file.add("admin", Role::Admin, &password)?;
    }
    file.save(&path)?;
    Ok((path, shown))
}

fn random_password() -> String {
    // 128 bits from the OS, in a form that is easy to paste.
    let a = uuid::Uuid::new_v4().simple().to_string();
    a[..24].to_string()
}

/// Starts the dev gateway (REST on `rest_listen`, XML on `xml_listen`) over the dev cluster.
pub async fn start_dev(
    rest_listen: std::net::SocketAddr,
    xml_listen: std::net::SocketAddr,
    users_file: PathBuf,
    cluster: cairn_api::Client,
) -> Result<(RestServer, cairn_gateway::XmlServer)> {
    let users = Arc::new(Users::open(users_file)?);
    let link = ClusterLink::connected(cluster);
    let rest = cairn_gateway::RestConfig {
        listen: rest_listen,
        ..Default::default()
    };
    let xml = cairn_gateway::XmlConfig {
        listen: xml_listen,
        ..Default::default()
    };
    let r = cairn_gateway::serve_rest(&rest, link.clone(), users.clone()).await?;
    let x = cairn_gateway::serve_xml(&xml, link, users).await?;
    Ok((r, x))
}

/// Where `cairn user` finds the users file: `--users-file`, else `CAIRN_USERS_FILE`, else
/// `/etc/cairn/users.toml`.
pub fn users_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("CAIRN_USERS_FILE").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/etc/cairn/users.toml"))
}

/// The new password: one line of stdin with `--password-stdin`, else `CAIRN_PASSWORD`, else
/// asked twice on the terminal.
pub fn read_password(stdin: bool) -> Result<String> {
    if stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    if let Ok(p) = std::env::var("CAIRN_PASSWORD") {
        return Ok(p);
    }
    let p = rpassword::prompt_password("new password: ").context(
        "cannot read a password from the terminal; use --password-stdin or CAIRN_PASSWORD",
    )?;
    let again = rpassword::prompt_password("again: ")?;
    anyhow::ensure!(p == again, "the passwords differ");
    Ok(p)
}

pub enum UserOp {
    Add { name: String, role: String },
    Passwd { name: String },
    Role { name: String, role: String },
    Remove { name: String },
    List,
}

pub fn user_cmd(path: &Path, op: UserOp, password_stdin: bool) -> Result<()> {
    let mut file = UsersFile::load(path)?;
    let parse_role = |r: &str| {
        Role::parse(r).ok_or_else(|| anyhow::anyhow!("role {r:?}: use admin, operator or viewer"))
    };
    match op {
        UserOp::Add { name, role } => {
            let role = parse_role(&role)?;
            anyhow::ensure!(file.get(&name).is_none(), "user {name:?} already exists");
            let p = read_password(password_stdin)?;
            file.add(&name, role, &p)?;
            file.save(path)?;
            println!("added {name} ({}) to {}", role.as_str(), path.display());
        }
        UserOp::Passwd { name } => {
            anyhow::ensure!(file.get(&name).is_some(), "no user named {name:?}");
            let p = read_password(password_stdin)?;
            file.set_password(&name, &p)?;
            file.save(path)?;
            println!("changed the password of {name}");
        }
        UserOp::Role { name, role } => {
            let role = parse_role(&role)?;
            file.set_role(&name, role)?;
            file.save(path)?;
            println!("{name} is now {}", role.as_str());
        }
        UserOp::Remove { name } => {
            file.remove(&name)?;
            file.save(path)?;
            println!("removed {name}");
        }
        UserOp::List => {
            for u in &file.users {
                println!("{}\t{}", u.name, u.role.as_str());
            }
        }
    }
    Ok(())
}

/// What `cairn init gateway` was asked for.
pub struct GatewayInit {
    /// Where to write the files.
    pub out: PathBuf,
    /// Where the files are on the gateway's machine (the config names paths under it).
    pub etc: PathBuf,
    /// The nodes' URLs (`--cluster`).
    pub urls: Vec<String>,
    /// The CA of the nodes' certificates (`--ca`).
    pub ca: Option<PathBuf>,
    pub rest_listen: Option<std::net::SocketAddr>,
    pub xml_listen: Option<std::net::SocketAddr>,
    /// The name of the gateway's user token.
    pub name: String,
    pub force: bool,
}

/// The standalone gateway's config `init gateway` writes.
pub fn gateway_config(g: &GatewayInit) -> String {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let path = |f: &str| q(&g.etc.join(f).to_string_lossy());
    let mut s = format!(
        "# A standalone gateway, written by `cairn init gateway`. Run: cairn gateway --config {cfg}\n\
         # The nodes it calls (any one answers; the others are learned from it).\n\
         cluster = [{urls}]\n\
         # Its own user token (admin, named {name:?}): it calls the cluster acting for each user.\n\
         token_file = {token}\n\
         # Its users (cairn user add NAME --role viewer|operator|admin --users-file {users_plain}).\n\
         users_file = {users}\n",
        cfg = g.etc.join("gateway.toml").display(),
        urls = g.urls.iter().map(|u| q(u)).collect::<Vec<_>>().join(", "),
        name = g.name,
        token = path("gateway.token"),
        users_plain = g.etc.join("users.toml").display(),
        users = path("users.toml"),
    );
    if g.ca.is_some() {
        s.push_str(&format!(
            "# The CA of the nodes' certificates.\nca_file = {}\n",
            path("ca.pem")
        ));
    }
    if let Some(l) = g.rest_listen {
        s.push_str(&format!(
            "\n# The Sun Cloud API REST adapter, the dashboard (/ui/) and /metrics.\n[rest]\nlisten = {}\n",
            q(&l.to_string())
        ));
    }
    if let Some(l) = g.xml_listen {
        s.push_str(&format!(
            "\n# The Virtuozzo Agent XML API (backupm).\n[xml]\nlisten = {}\n",
            q(&l.to_string())
        ));
    }
    s
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(contents)?;
    f.sync_all()?;
    Ok(())
}

/// `cairn init gateway`: checks the config it will write, creates the gateway's user token
/// over `cluster` (an admin's credentials), then writes the files (see the module doc).
pub async fn init_gateway(g: &GatewayInit, cluster: &cairn_api::Client) -> Result<()> {
    let config_path = g.out.join("gateway.toml");
    if config_path.exists() && !g.force {
        anyhow::bail!(
            "{} exists; refusing to replace a gateway's config (pass --force)",
            config_path.display()
        );
    }
    anyhow::ensure!(
        g.etc.is_absolute(),
        "--etc must be an absolute path (the config is read on the gateway's machine)"
    );
    anyhow::ensure!(
        g.rest_listen.is_some() || g.xml_listen.is_some(),
        "give --rest-listen, --xml-listen or both"
    );
    if g.urls.iter().any(|u| u.starts_with("https://")) && g.ca.is_none() {
        anyhow::bail!("the nodes speak TLS: give the CA of their certificates (--ca or CAIRN_CA; init cluster wrote ca.pem)");
    }
    let ca_pem = match &g.ca {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?),
        None => None,
    };
    let text = gateway_config(g);
    // The gateway's own check, before anything is created.
    let parsed: GatewayConfig = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("the config written would not load: {}", e.message()))?;
    parsed.validate(true)?;

    let t = cluster
        .create_user_token(&g.name, cairn_core::auth::Role::Admin)
        .await?;
    let secret = t.token.clone().unwrap_or_default();
    std::fs::create_dir_all(&g.out)
        .with_context(|| format!("cannot create {}", g.out.display()))?;
    write_file(
        &g.out.join("gateway.token"),
        format!("{secret}\n").as_bytes(),
        0o600,
    )?;
    if let Some(pem) = &ca_pem {
        write_file(&g.out.join("ca.pem"), pem, 0o644)?;
    }
    let users = g.out.join("users.toml");
    if !users.exists() {
        UsersFile::default().save(&users)?;
    }
    write_file(&config_path, text.as_bytes(), 0o644)?;
    println!(
        "wrote {} (gateway token {} named {:?}, admin); copy {}/ to {} on the gateway, add its users (cairn user add NAME --role ROLE --users-file {}), then: cairn gateway --config {}",
        config_path.display(),
        t.id,
        g.name,
        g.out.display(),
        g.etc.display(),
        g.etc.join("users.toml").display(),
        g.etc.join("gateway.toml").display(),
    );
    Ok(())
}
