//! Wiring of the gateway (REST adapter) into the binary: inside a node, standalone
//! (`cairn gateway`), inside `cairn dev`, and the `cairn user` commands that manage its
//! users file.

use std::io::BufRead;
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
