//! The nine `backupm` calls, mapped to cluster jobs and catalog calls.
//!
//! Who may make which call is the authorization table's row `backupm/<call>`
//! (`cairn_core::auth::TABLE`): `viewer` lists, searches and reads (`list`, `search`,
//! `get_info`, `get_config`); `operator` also backs up and restores; `admin` also removes
//! and protects backups and changes the configuration. Every cluster call is made for the
//! logged-in user, so the cluster decides again, with everything it knows.
//!
//! `protect` (`<backup_id>` and `<protected>1</protected>` or `0`) is a Cairn extension:
//! a protected backup is never removed (by `remove`, `backup_options/remove` or retention)
//! until an admin lifts the protection; a protected backup's `info` (in `list` with
//! `options/info`) carries a `protected` parameter.
//!
//! A `backup_server` (`connection_infoType`) is served only when it names this cluster;
//! any other server is refused (303), since the backup would not be where the client asked
//! for it. How each element of the specification is served is `CONFORMANCE.md`'s table.
//!
//! A call that runs a job (back up, restore) waits for it, polling the job; with
//! `progress="on"` it sends progress packets (started, phase messages, percent steps,
//! success or error) before the final answer with the same id.

use std::time::Duration;

use cairn_core::job::{Job, JobKind, JobOptions, JobState, Replace};
use cairn_core::{BackupId, BackupRecord, BackupType, Compression, EnvId};

use super::answer::{b64_of, enc, now_stamp, response, with_cookie};
use super::error::{cluster_code, code, XmlError};
use super::packet::Element;
use crate::users::Identity;

type Out = Result<Vec<Element>, XmlError>;

/// The nine calls, and the `protect` extension.
pub const CALLS: [&str; 10] = [
    "protect",
    "backup_env",
    "restore_env",
    "selective_restore_env",
    "list",
    "remove",
    "search",
    "get_info",
    "get_config",
    "set_config",
];

/// Other names clients use for a call: the specification's `backup_env` description sends
/// readers to `get_configuration` for the default backup server, so that name (and its
/// `set_configuration` twin) is the same call as `get_config` (`set_config`).
pub const ALIASES: [(&str, &str); 2] = [
    ("get_configuration", "get_config"),
    ("set_configuration", "set_config"),
];

/// The call a name stands for: itself, or the call an [`ALIASES`] entry maps it to.
pub fn canonical(name: &str) -> &str {
    ALIASES
        .iter()
        .find(|(alias, _)| *alias == name)
        .map_or(name, |(_, call)| call)
}

/// What a call needs of the connection it arrived on (the connection, `server`, provides
/// it): the cluster, the client's name and addresses, and a way to send progress packets.
pub(crate) trait Connection: Send + Sync {
    /// The cluster link the gateway shares.
    fn link(&self) -> &crate::ClusterLink;
    /// This connection's name as answers' `target` (`vzclientN`).
    fn client(&self) -> &str;
    /// The address the client connected to (this side of the socket), when known.
    fn local(&self) -> Option<std::net::SocketAddr>;
    /// The ports this adapter listens on.
    fn ports(&self) -> Vec<u16>;
    /// Queues a packet (a progress packet) for the client, in order.
    fn send(&self, packet: &Element);
    /// The request with packet id `request` runs cluster job `job` (`system/cancel` finds it).
    fn job_started(&self, request: &str, job: uuid::Uuid);
    /// The request's job ended.
    fn job_ended(&self, request: &str);
}

/// Runs every call in a `backupm` element (several `remove`s may share one packet) and
/// returns the answer's children.
pub(crate) async fn call(
    conn: &dyn Connection,
    who: &Identity,
    id: Option<&str>,
    progress: bool,
    cookie: Option<&Element>,
    body: &Element,
) -> Vec<Element> {
    let mut out = Vec::new();
    if body.children.is_empty() {
        out.push(XmlError::new(code::UNKNOWN_CALL, "no call in the backupm data").element());
    }
    for call in &body.children {
        let ctx = Ctx {
            conn,
            who,
            id,
            progress,
            cookie,
        };
        match ctx.run(call).await {
            Ok(els) => out.extend(els),
            Err(e) => out.push(e.element()),
        }
    }
    out
}

struct Ctx<'a> {
    conn: &'a dyn Connection,
    who: &'a Identity,
    id: Option<&'a str>,
    progress: bool,
    /// The request's `cookie`, echoed in its progress packets too.
    cookie: Option<&'a Element>,
}

/// The principal the logged-in user is to the cluster.
fn principal(who: &Identity) -> cairn_core::auth::Principal {
    crate::access::principal(who, "xml")
}

/// Refuses (306) a user the authorization table does not admit to `backupm/<entry>`.
fn admit(who: &Identity, entry: &str) -> Result<(), XmlError> {
    crate::access::admit(
        cairn_core::auth::Interface::Xml,
        &format!("backupm/{entry}"),
        &principal(who),
    )
    .map_err(|why| XmlError::new(code::FORBIDDEN, why))
}

fn bad(msg: impl Into<String>) -> XmlError {
    XmlError::new(code::BAD_PARAMETER, msg)
}

fn parse_eid(s: &str) -> Result<EnvId, XmlError> {
    s.parse()
        .map_err(|_| bad(format!("{:?} is not an environment id (a GUID)", short(s))))
}

fn parse_backup_id(s: &str) -> Result<BackupId, XmlError> {
    s.parse().map_err(|_| {
        bad(format!(
            "{:?} is not a backup id (EID/YYYYMMDDhhmmss)",
            short(s)
        ))
    })
}

fn short(s: &str) -> String {
    s.chars().take(80).collect()
}

fn number(el: &Element, name: &str, max: u32) -> Result<Option<u32>, XmlError> {
    match el.text_of(name) {
        None => Ok(None),
        Some(t) => match t.parse::<u32>() {
            Ok(n) if n <= max => Ok(Some(n)),
            _ => Err(bad(format!(
                "{name} {:?}: a number from 0 to {max}",
                short(t)
            ))),
        },
    }
}

/// `YYYY-MM-DDThh:mm:ss+0000` of a backup.
fn backup_time(id: &BackupId) -> String {
    id.datetime().format("%Y-%m-%dT%H:%M:%S+0000").to_string()
}

/// A `parameter` of an `infoType`: `message` (base64), `name`, and the `translate` flag when
/// `translate`, in that order (the specification's own `backup/info`).
fn param(name: &str, value: &str, translate: bool) -> Element {
    let mut p = Element::new("parameter")
        .with_child(Element::new("message").with_text(enc(value)))
        .with_child(Element::new("name").with_text(name));
    if translate {
        p.push(Element::new("translate"));
    }
    p
}

/// The `info` of a backup: what its environment was, as an `infoType` shaped like the
/// specification's example: an empty top `message` and `name`, `translate`, then one
/// `parameter` per property; `os` carries its value in nested parameters (`platform`, and
/// `name`: the OS template), as the `osType` does. Cairn adds `protected` (a protected
/// backup) and `removed` (the id of the backup `backup_options/remove` deleted).
fn info(b: &BackupRecord, removed: Option<&BackupId>) -> Element {
    let i = &b.env_info;
    let os = Element::new("parameter")
        .with_child(Element::new("message"))
        .with_child(Element::new("name").with_text("os"))
        .with_child(param("platform", "Linux", false))
        .with_child(param("name", &i.os, false));
    let mut e = Element::new("info")
        .with_child(Element::new("message"))
        .with_child(Element::new("name"))
        .with_child(Element::new("translate"))
        .with_child(param("hostname", &i.hostname, true))
        .with_child(param("ip", &i.ip.join(" "), true))
        .with_child(param("name", &i.name, true))
        .with_child(os)
        .with_child(param(
            "parent_eid",
            &EnvId::of_host(&b.host).to_string(),
            true,
        ))
        .with_child(param("parent_env_title", &b.host, true))
        .with_child(param("title", &i.title, true))
        .with_child(param(
            "type",
            if i.kind.is_empty() {
                "virtuozzo"
            } else {
                &i.kind
            },
            false,
        ));
    if b.protected {
        e.push(param("protected", "1", false));
    }
    if let Some(r) = removed {
        e.push(param("removed", &r.to_string(), false));
    }
    e
}

/// A `backup` answer element.
fn backup_el(
    b: &BackupRecord,
    count: usize,
    storage: &str,
    with_info: bool,
    removed: Option<&BackupId>,
) -> Element {
    let mut e =
        Element::new("backup").with_child(Element::new("eid").with_text(b.id.env.to_string()));
    if !b.description.is_empty() {
        e.push(Element::new("description").with_text(enc(&b.description)));
    }
    e = e
        .with_child(Element::new("count").with_text(count.to_string()))
        .with_child(Element::new("id").with_text(b.id.to_string()))
        .with_child(Element::new("time").with_text(backup_time(&b.id)))
        .with_child(Element::new("size").with_text(b.logical_size.to_string()))
        .with_child(Element::new("type").with_text(b.kind.code().to_string()))
        .with_child(Element::new("storage_eid").with_text(storage));
    if with_info {
        e.push(info(b, removed));
    }
    e.with_child(Element::new("capability").with_child(Element::new("browsable")))
}

/// Reads `backup_options/remove`: `None` when absent; `Some(None)` for an empty `<remove/>`
/// (the oldest backup); `Some(Some(id))` for the backup it names, either as the
/// `backup_optionsType` has it, a child `<backup>ID</backup>` (or `<backup_id>`, which
/// lenient clients write), or as the element's bare text.
fn remove_option(options: &Element) -> Result<Option<Option<BackupId>>, XmlError> {
    let Some(r) = options.child("remove") else {
        return Ok(None);
    };
    let named = ["backup", "backup_id"]
        .iter()
        .filter_map(|n| r.text_of(n))
        .chain(std::iter::once(r.text.trim()))
        .find(|t| !t.is_empty());
    Ok(Some(named.map(parse_backup_id).transpose()?))
}

/// The template every real agent starts and ends an operation with.
pub const OPERATION_TEMPLATE: &str = "Operation %op_name% is %status%";

/// A progress `message` in the template form of the specification's progress packet:
/// `message` (base64 of [`OPERATION_TEMPLATE`]), an empty `name`, `translate`, and the
/// parameters `op_name` (the call, e.g. `backup_env`) and `status` (`started`, `succeeded`,
/// `failed`; translated).
fn operation_message(op: &str, status: &str) -> Element {
    let call = op.rsplit('.').next().unwrap_or(op);
    Element::new("message")
        .with_child(Element::new("message").with_text(enc(OPERATION_TEMPLATE)))
        .with_child(Element::new("name"))
        .with_child(Element::new("translate"))
        .with_child(param("op_name", call, false))
        .with_child(param("status", status, true))
}

/// A progress `message` holding plain text (a phase, `Percent: N`): `message`, empty `name`.
fn text_message(text: &str) -> Element {
    Element::new("message")
        .with_child(Element::new("message").with_text(enc(text)))
        .with_child(Element::new("name"))
}

/// The `progress` element of a progress packet: `op`, `message`, `status` in the
/// specification's order, then `percent`, `eid_list`, `id` and `time`.
fn progress_body(
    op: &str,
    status: u32,
    percent: u32,
    eids: &[EnvId],
    message: Element,
    id: &str,
    time: &str,
) -> Element {
    let mut list = Element::new("eid_list");
    for e in eids {
        list.push(Element::new("eid").with_text(e.to_string()));
    }
    Element::new("progress")
        .with_child(Element::new("op").with_text(op))
        .with_child(message)
        .with_child(Element::new("status").with_text(status.to_string()))
        .with_child(Element::new("percent").with_text(percent.to_string()))
        .with_child(list)
        .with_child(Element::new("id").with_text(id))
        .with_child(Element::new("time").with_text(time))
}

/// What a `backup_server` (`connection_infoType`) is compared with to tell whether it names
/// this cluster.
struct Here {
    /// The storage's EID (each backup's `storage_eid`).
    storage_eid: String,
    /// This side of the client's connection.
    local: Option<std::net::SocketAddr>,
    /// The XML listeners' ports.
    ports: Vec<u16>,
    /// The hosts of the cluster's node URLs.
    node_hosts: Vec<String>,
}

/// Why `server` is not this cluster, or `None` when it is: its `address` is empty, `local`
/// (the `agent` protocol's name for the node answering), this storage's EID, a cluster
/// node's host, or an address of this connection's host (`resolved`: what `address`
/// resolves to) with, when a `port` is given, one of the XML listeners' ports. `login` and
/// `password` are the remote server's credentials and not looked at.
fn foreign_server(server: &Element, here: &Here, resolved: &[std::net::IpAddr]) -> Option<String> {
    let address = server
        .text_of("address")
        .unwrap_or("")
        .trim_matches(['[', ']'])
        .to_ascii_lowercase();
    if address.is_empty()
        || address == "local"
        || address == here.storage_eid.to_ascii_lowercase()
        || here.node_hosts.iter().any(|h| {
            h.eq_ignore_ascii_case(&address)
                || h.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| resolved.contains(&ip))
        })
    {
        return None;
    }
    let not_this = || {
        format!(
            "backup_server {:?} is not this cluster: every backup is stored by the cluster; omit backup_server, or name \"local\" or the storage EID {}",
            short(&address),
            here.storage_eid
        )
    };
    let Some(local) = here.local.filter(|l| resolved.contains(&l.ip())) else {
        return Some(not_this());
    };
    match server.text_of("port").filter(|p| !p.is_empty()) {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p == local.port() || here.ports.contains(&p) => None,
            _ => Some(format!(
                "backup_server port {:?} is not a port of this agent ({}); omit the port or use this connection's",
                short(p),
                local.port()
            )),
        },
    }
}

/// The host of a node URL (`http://HOST:PORT/…`).
fn url_host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or("");
    match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or("").to_string(),
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(h, _)| h)
            .to_string(),
    }
}

impl Ctx<'_> {
    /// Refuses (303) a `backup_server` that names another server than this cluster: the
    /// backup would not be where the client asked for it.
    async fn check_backup_server(&self, server: Option<&Element>) -> Result<(), XmlError> {
        let Some(server) = server else { return Ok(()) };
        let address = server
            .text_of("address")
            .unwrap_or("")
            .trim_matches(['[', ']'])
            .to_string();
        let resolved: Vec<std::net::IpAddr> = match address.parse() {
            Ok(ip) => vec![ip],
            Err(_) if address.is_empty() || address.eq_ignore_ascii_case("local") => Vec::new(),
            Err(_) => {
                let lookup = tokio::net::lookup_host((address.as_str(), 0));
                match tokio::time::timeout(Duration::from_secs(2), lookup).await {
                    Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
                    _ => Vec::new(),
                }
            }
        };
        let here = Here {
            storage_eid: self.storage_eid().await?,
            local: self.conn.local(),
            ports: self.conn.ports(),
            node_hosts: self
                .cluster()?
                .node_urls()
                .iter()
                .map(|u| url_host(u))
                .collect(),
        };
        match foreign_server(server, &here, &resolved) {
            None => Ok(()),
            Some(why) => Err(bad(why)),
        }
    }

    /// The cluster, every call made for the logged-in user.
    fn cluster(&self) -> Result<cairn_api::Client, XmlError> {
        let link = self.conn.link().get().ok_or_else(|| {
            XmlError::new(
                code::UNAVAILABLE,
                "the storage cluster cannot answer now; try again",
            )
        })?;
        Ok(link.acting_for(&principal(self.who)))
    }

    /// The storage's id: the cluster id (every backup is held by the whole cluster).
    async fn storage_eid(&self) -> Result<String, XmlError> {
        let st = self.cluster()?.node_status().await?;
        Ok(if st.cluster_id.is_empty() {
            EnvId::GLOBAL.to_string()
        } else {
            st.cluster_id
        })
    }

    async fn run(&self, call: &Element) -> Out {
        match canonical(&call.name) {
            "list" => self.list(call).await,
            "search" => self.search(call).await,
            "get_info" => self.get_info(call).await,
            "get_config" => self.get_config(call).await,
            "set_config" => self.set_config(call).await,
            "remove" => self.remove(call).await,
            "backup_env" => self.backup_env(call).await,
            "restore_env" => self.restore_env(call).await,
            "selective_restore_env" => self.selective_restore_env(call).await,
            "protect" => self.protect(call).await,
            other => Err(XmlError::new(
                code::UNKNOWN_CALL,
                format!("backupm has no call {:?}", short(other)),
            )),
        }
    }

    /// Backup elements for `backups` (counts taken over `all`).
    async fn backups_out(
        &self,
        backups: Vec<BackupRecord>,
        all: &[BackupRecord],
        with_info: bool,
    ) -> Out {
        let storage = self.storage_eid().await?;
        Ok(backups
            .iter()
            .map(|b| {
                let count = all.iter().filter(|x| x.id.env == b.id.env).count();
                backup_el(b, count, &storage, with_info, None)
            })
            .collect())
    }

    async fn list(&self, call: &Element) -> Out {
        admit(self.who, "list")?;
        let opts = call.child("options");
        let env = opts
            .and_then(|o| o.text_of("eid"))
            .map(parse_eid)
            .transpose()?;
        let ids: Vec<BackupId> = call
            .children_named("backup_id")
            .map(|b| parse_backup_id(b.text.trim()))
            .collect::<Result<_, _>>()?;
        // Every backup is held by the whole cluster: another storage's id lists nothing.
        if let Some(storage) = opts.and_then(|o| o.text_of("storage_eid")) {
            let storage = parse_eid(storage)?;
            if storage.to_string() != self.storage_eid().await? {
                return Ok(Vec::new());
            }
        }
        let all = self.cluster()?.list(env).await?;
        let mut out: Vec<BackupRecord> = all
            .iter()
            .filter(|b| ids.is_empty() || ids.contains(&b.id))
            .cloned()
            .collect();
        if opts.is_some_and(|o| o.has("latest")) {
            out.sort_by_key(|b| std::cmp::Reverse(b.id.time));
            let mut seen = std::collections::HashSet::new();
            out.retain(|b| seen.insert(b.id.env));
        }
        out.sort_by_key(|b| (b.id.env, b.id.time));
        let with_info = opts.is_some_and(|o| o.has("info"));
        self.backups_out(out, &all, with_info).await
    }

    async fn search(&self, call: &Element) -> Out {
        admit(self.who, "search")?;
        let opts = call
            .child("options")
            .ok_or_else(|| bad("search needs options (hostname, ip, start_date, end_date)"))?;
        let glob = |name: &str| -> Result<Option<globset::GlobMatcher>, XmlError> {
            opts.text_of(name)
                .filter(|s| !s.is_empty())
                .map(|p| {
                    globset::GlobBuilder::new(p)
                        .case_insensitive(true)
                        .build()
                        .map(|g| g.compile_matcher())
                        .map_err(|_| bad(format!("{name} {:?} is not a valid pattern", short(p))))
                })
                .transpose()
        };
        let (host, ip) = (glob("hostname")?, glob("ip")?);
        let date = |name: &str| -> Result<Option<chrono::NaiveDate>, XmlError> {
            opts.text_of(name)
                .filter(|s| !s.is_empty())
                .map(|d| {
                    chrono::NaiveDate::parse_from_str(&d[..d.len().min(10)], "%Y-%m-%d")
                        .map_err(|_| bad(format!("{name} {:?}: use YYYY-MM-DD", short(d))))
                })
                .transpose()
        };
        let (from, to) = (date("start_date")?, date("end_date")?);
        let all = self.cluster()?.list(None).await?;
        let out: Vec<BackupRecord> = all
            .iter()
            .filter(|b| {
                host.as_ref()
                    .is_none_or(|g| g.is_match(&b.env_info.hostname))
            })
            .filter(|b| {
                ip.as_ref()
                    .is_none_or(|g| b.env_info.ip.iter().any(|i| g.is_match(i)))
            })
            .filter(|b| from.is_none_or(|d| b.id.datetime().date_naive() >= d))
            .filter(|b| to.is_none_or(|d| b.id.datetime().date_naive() <= d))
            .cloned()
            .collect();
        self.backups_out(out, &all, true).await
    }

    async fn get_info(&self, call: &Element) -> Out {
        admit(self.who, "get_info")?;
        let id = parse_backup_id(
            call.text_of("backup_id")
                .ok_or_else(|| bad("get_info needs a backup_id"))?,
        )?;
        let b = self.cluster()?.show(&id).await?;
        let opts = call.child("options");
        let want_env = opts.is_none_or(|o| o.has("env") || !o.has("excludes"));
        let want_excludes = opts.is_some_and(|o| o.has("excludes"));
        let mut info_el = Element::new("info");
        if want_env {
            let i = &b.env_info;
            info_el.push(
                Element::new("env")
                    .with_child(Element::new("eid").with_text(b.id.env.to_string()))
                    .with_child(Element::new("hostname").with_text(&i.hostname))
                    .with_child(Element::new("name").with_text(&i.name))
                    .with_child(Element::new("title").with_text(&i.title))
                    .with_child(Element::new("os").with_text(&i.os))
                    .with_child(Element::new("ip").with_text(i.ip.join(" ")))
                    .with_child(Element::new("type").with_text(if i.kind.is_empty() {
                        "virtuozzo"
                    } else {
                        &i.kind
                    })),
            );
        }
        if want_excludes {
            let list = |name: &str, paths: &[String]| {
                let mut l = Element::new(name);
                for p in paths {
                    l.push(Element::new("path").with_text(enc(p)));
                }
                l
            };
            info_el.push(list("include_list", &b.includes));
            info_el.push(list("exclude_list", &b.excludes));
        }
        Ok(vec![info_el])
    }

    async fn get_config(&self, call: &Element) -> Out {
        admit(self.who, "get_config")?;
        let local = call.has("local");
        let c = self.cluster()?.env_config_of(EnvId::GLOBAL, !local).await?;
        let unset = c.keep_max.is_none()
            && c.chain_length.is_none()
            && c.chain_days.is_none()
            && c.compression.is_none()
            && c.backup_type.is_none();
        if local && unset {
            return Err(XmlError::new(
                code::NO_LOCAL_CONFIG,
                "no local backup configuration is set",
            ));
        }
        let mut cfg = Element::new("backupm_config").with_child(
            Element::new("backup_server")
                .with_child(Element::new("protocol").with_text("agent"))
                .with_child(Element::new("address").with_text("local")),
        );
        let mut num = |name: &str, v: Option<u32>, default: u32| {
            cfg.push(Element::new(name).with_text(v.unwrap_or(default).to_string()));
        };
        num("chain_length", c.chain_length, 0);
        num("chain_days", c.chain_days, 0);
        num("keep_max", c.keep_max, 0);
        num("compression", c.compression, Compression::default().level());
        num("type", c.backup_type, BackupType::Full.code());
        Ok(vec![cfg])
    }

    async fn set_config(&self, call: &Element) -> Out {
        admit(self.who, "set_config")?;
        let cfg = call
            .child("backupm_config")
            .ok_or_else(|| bad("set_config needs a backupm_config"))?;
        self.check_backup_server(cfg.child("backup_server")).await?;
        let cluster = self.cluster()?;
        let mut c = cluster.env_config_of(EnvId::GLOBAL, false).await?;
        if let Some(v) = number(cfg, "keep_max", 100_000)? {
            c.keep_max = (v > 0).then_some(v);
        }
        if let Some(v) = number(cfg, "chain_length", 100_000)? {
            c.chain_length = Some(v);
        }
        if let Some(v) = number(cfg, "chain_days", 100_000)? {
            c.chain_days = Some(v);
        }
        if let Some(v) = number(cfg, "compression", 3)? {
            c.compression = Some(v);
        }
        if let Some(v) = number(cfg, "type", 2)? {
            c.backup_type = Some(v);
        }
        cluster.set_env_config(EnvId::GLOBAL, &c).await?;
        Ok(vec![Element::new("ok")])
    }

    async fn remove(&self, call: &Element) -> Out {
        admit(self.who, "remove")?;
        let opts = call.child("options");
        let prev = opts.is_some_and(|o| o.has("prev"));
        let target = match (
            call.text_of("backup_id"),
            opts.and_then(|o| o.text_of("eid")),
        ) {
            (Some(id), _) => parse_backup_id(id)?,
            (None, Some(eid)) => {
                // Every backup of the environment: the newest and all before it.
                let env = parse_eid(eid)?;
                let newest = self
                    .cluster()?
                    .list(Some(env))
                    .await?
                    .into_iter()
                    .max_by_key(|b| b.id.time)
                    .ok_or_else(|| {
                        XmlError::new(code::NOT_FOUND, format!("environment {env} has no backups"))
                    })?;
                let job = self
                    .job(
                        JobKind::Delete,
                        env,
                        JobOptions {
                            backup: Some(newest.id),
                            prev: true,
                            ..JobOptions::default()
                        },
                    )
                    .await?;
                return self
                    .wait(job, "backupm.remove")
                    .await
                    .map(|_| vec![Element::new("ok")]);
            }
            (None, None) => return Err(bad("remove needs a backup_id or options/eid")),
        };
        let job = self
            .job(
                JobKind::Delete,
                target.env,
                JobOptions {
                    backup: Some(target),
                    prev,
                    ..JobOptions::default()
                },
            )
            .await?;
        self.wait(job, "backupm.remove").await?;
        Ok(vec![Element::new("ok")])
    }

    /// `protect` (a Cairn extension): protects a backup from every removal, or lifts it.
    async fn protect(&self, call: &Element) -> Out {
        admit(self.who, "protect")?;
        let id = parse_backup_id(
            call.text_of("backup_id")
                .ok_or_else(|| bad("protect needs a backup_id"))?,
        )?;
        let protected = match call.text_of("protected").map(str::trim) {
            None | Some("1") => true,
            Some("0") => false,
            Some(other) => return Err(bad(format!("protected {:?}: 1 or 0", short(other)))),
        };
        self.cluster()?.protect(&id, protected).await?;
        Ok(vec![Element::new("ok")])
    }

    async fn job(&self, kind: JobKind, env: EnvId, options: JobOptions) -> Result<Job, XmlError> {
        self.job_on(kind, env, "", options).await
    }

    /// Queues a job on `host`'s agent (empty: the environment's own host).
    async fn job_on(
        &self,
        kind: JobKind,
        env: EnvId,
        host: &str,
        options: JobOptions,
    ) -> Result<Job, XmlError> {
        let job = crate::create_job(&self.cluster()?, kind, env, host, &options).await?;
        if let Some(id) = self.id {
            self.conn.job_started(id, job.id);
        }
        Ok(job)
    }

    fn progress_packet(&self, op: &str, status: u32, percent: u32, eids: &[EnvId], msg: Element) {
        if !self.progress {
            return;
        }
        let mut p = response(self.id, self.conn.client(), "backupm", Vec::new());
        // A progress packet: unfinished (type 1), `data/progress` instead of the interface.
        p.attrs.push(("type".into(), "1".into()));
        if let Some(data) = p.children.iter_mut().find(|c| c.name == "data") {
            data.children = vec![progress_body(
                op,
                status,
                percent,
                eids,
                msg,
                self.id.unwrap_or(""),
                &now_stamp(),
            )];
        }
        self.conn.send(&with_cookie(p, self.cookie));
    }

    /// Waits for a job to end, sending progress packets on the way.
    async fn wait(&self, job: Job, op: &str) -> Result<Job, XmlError> {
        let cluster = self.cluster()?;
        let eids = [job.env];
        self.progress_packet(op, 1, 0, &eids, operation_message(op, "started"));
        let mut last = (String::new(), u32::MAX);
        let done = loop {
            let j = cluster.get_job(job.id).await?.job;
            let phase = j.progress.phase.clone();
            let pct = j.progress.percent.min(99);
            if j.state == JobState::Running && (phase != last.0 || pct != last.1) {
                if phase != last.0 && !phase.is_empty() {
                    self.progress_packet(op, 2, pct, &eids, text_message(&phase));
                }
                if pct != last.1 {
                    self.progress_packet(
                        op,
                        2,
                        pct,
                        &eids,
                        text_message(&format!("Percent: {pct}")),
                    );
                }
                last = (phase, pct);
            }
            if matches!(
                j.state,
                JobState::Succeeded | JobState::Failed | JobState::Cancelled
            ) {
                break j;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        if let Some(id) = self.id {
            self.conn.job_ended(id);
        }
        match done.state {
            JobState::Succeeded => {
                self.progress_packet(op, 3, 100, &eids, operation_message(op, "succeeded"));
                Ok(done)
            }
            JobState::Cancelled => {
                // The template's `status` is one of the words clients translate.
                self.progress_packet(op, 4, 100, &eids, operation_message(op, "failed"));
                Err(XmlError::new(
                    code::CANCELLED,
                    if done.reason.is_empty() {
                        "cancelled".to_string()
                    } else {
                        done.reason
                    },
                ))
            }
            _ => {
                self.progress_packet(op, 4, 100, &eids, operation_message(op, "failed"));
                Err(XmlError::new(code::FAILED, done.reason))
            }
        }
    }

    fn paths(el: Option<&Element>) -> Result<Vec<String>, XmlError> {
        let Some(el) = el else { return Ok(Vec::new()) };
        el.children_named("path")
            .map(|p| {
                b64_of(
                    &Element::new("x").with_child(Element::new("path").with_text(&p.text)),
                    "path",
                )
                .map(|v| v.unwrap_or_default())
            })
            .collect()
    }

    async fn backup_env(&self, call: &Element) -> Out {
        admit(self.who, "backup_env")?;
        let eids: Vec<EnvId> = call
            .child("env_list")
            .map(|l| {
                l.children_named("eid")
                    .map(|e| parse_eid(e.text.trim()))
                    .collect()
            })
            .transpose()?
            .unwrap_or_default();
        if eids.is_empty() {
            return Err(bad("backup_env needs env_list with at least one eid"));
        }
        self.check_backup_server(call.child("backup_server"))
            .await?;
        let o = call.child("backup_options");
        let policy = o.and_then(|o| o.child("policy"));
        let ignore_error = policy.is_some_and(|p| p.has("ignore_error"));
        let ignore_unexistent = policy.is_some_and(|p| p.has("ignore_unexistent"));
        let backup_type = o
            .map(|o| number(o, "type", 2))
            .transpose()?
            .flatten()
            .and_then(BackupType::from_code);
        let compression = o
            .map(|o| number(o, "compression", 3))
            .transpose()?
            .flatten()
            .and_then(Compression::from_level);
        let description = o.map(|o| b64_of(o, "description")).transpose()?.flatten();
        let includes = Self::paths(o.and_then(|o| o.child("include_list")))?;
        let excludes = Self::paths(o.and_then(|o| o.child("exclude_list")))?;
        // `remove`: a backup the new one replaces (`None` inside: the oldest other one),
        // removed by the catalog in the same decision that commits the new backup. Deleting
        // needs admin, as everywhere else: checked here before any work, and again by the
        // cluster when it admits the job.
        if o.is_some_and(|o| o.has("remove")) {
            admit(self.who, "backup_env(remove)")?;
        }
        let remove = o.map(remove_option).transpose()?.flatten();
        if let Some(Some(named)) = remove {
            if !eids.contains(&named.env) {
                return Err(bad(format!(
                    "backup_options/remove names {named}, a backup of none of the environments in env_list"
                )));
            }
        }
        let mut out = Vec::new();
        for env in eids {
            // The catalog removes the backup to replace in the same decision that commits
            // the new one (`JobOptions::replace`): the job's result says which, and why one
            // was kept (protected, gone).
            let replace = match remove {
                None => None,
                Some(None) => Some(Replace::Oldest),
                Some(Some(named)) => (named.env == env).then_some(Replace::Backup(named)),
            };
            let options = JobOptions {
                backup_type,
                compression,
                description: description.clone().unwrap_or_default(),
                includes: includes.clone(),
                excludes: excludes.clone(),
                replace,
                ..JobOptions::default()
            };
            let one = async {
                let job = self.job(JobKind::Backup, env, options).await?;
                let done = self.wait(job, "backupm.backup_env").await?;
                let id = done
                    .result
                    .backup
                    .ok_or_else(|| XmlError::new(code::INTERNAL, "the job made no backup"))?;
                let all = self.cluster()?.list(Some(env)).await?;
                let b = all.iter().find(|b| b.id == id).cloned().ok_or_else(|| {
                    XmlError::new(code::NOT_FOUND, format!("backup {id} is gone"))
                })?;
                // The backup is made: a kept victim is reported next to it, not instead.
                let mut removal_failed = None;
                let mut removed = None;
                if let Some(v) = done.result.replaced {
                    match done.result.replace_refused {
                        None => removed = Some(v),
                        Some(c) => {
                            removal_failed = Some(XmlError::new(
                                cluster_code(c),
                                format!(
                                    "backup {id} was made, but removing {v} failed: {}",
                                    done.result.replace_reason
                                ),
                            ))
                        }
                    }
                }
                let all = self.cluster()?.list(Some(env)).await?;
                let storage = self.storage_eid().await?;
                let count = all.iter().filter(|x| x.id.env == env).count();
                let mut els = vec![backup_el(&b, count, &storage, true, removed.as_ref())];
                els.extend(removal_failed.map(|e| e.element()));
                Ok::<_, XmlError>(els)
            };
            match one.await {
                Ok(els) => out.extend(els),
                Err(e) if e.code == code::NOT_FOUND && ignore_unexistent => {}
                Err(e) if ignore_error => out.push(e.element()),
                Err(e) => {
                    out.push(e.element());
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn restore_env(&self, call: &Element) -> Out {
        admit(self.who, "restore_env")?;
        let id = parse_backup_id(
            call.text_of("backup_id")
                .ok_or_else(|| bad("restore_env needs a backup_id"))?,
        )?;
        self.check_backup_server(call.child("backup_server"))
            .await?;
        let force = call
            .child("restore_options")
            .is_some_and(|o| o.has("force"));
        let mut target_path = String::new();
        // `parent_eid`: restore onto that hardware node, at the path the backup was taken
        // from (the container may be gone from its original host, or the host itself).
        let host = match call.text_of("parent_eid").filter(|p| !p.is_empty()) {
            None => String::new(),
            Some(p) => {
                let parent = parse_eid(p)?;
                let hosts = self.cluster()?.list_hosts().await?;
                let h = hosts
                    .into_iter()
                    .map(|h| h.record)
                    .find(|h| EnvId::of_host(&h.id) == parent)
                    .ok_or_else(|| {
                        XmlError::new(
                            code::NOT_FOUND,
                            format!("no hardware node has the EID {parent}"),
                        )
                    })?;
                target_path = self.cluster()?.show(&id).await?.source;
                h.id
            }
        };
        let job = self
            .job_on(
                JobKind::Restore,
                id.env,
                &host,
                JobOptions {
                    backup: Some(id),
                    force,
                    target_path,
                    ..JobOptions::default()
                },
            )
            .await?;
        self.wait(job, "backupm.restore_env").await?;
        Ok(vec![Element::new("ok")])
    }

    async fn selective_restore_env(&self, call: &Element) -> Out {
        admit(self.who, "selective_restore_env")?;
        let id = parse_backup_id(
            call.text_of("backup_id")
                .ok_or_else(|| bad("selective_restore_env needs a backup_id"))?,
        )?;
        let env = match call.text_of("eid") {
            Some(e) => parse_eid(e)?,
            None => id.env,
        };
        let paths = Self::paths(Some(call))?;
        if paths.is_empty() {
            return Err(bad("selective_restore_env needs at least one path"));
        }
        self.check_backup_server(call.child("backup_server"))
            .await?;
        let job = self
            .job(
                JobKind::SelectiveRestore,
                env,
                JobOptions {
                    backup: Some(id),
                    paths,
                    force: true,
                    ..JobOptions::default()
                },
            )
            .await?;
        self.wait(job, "backupm.selective_restore_env").await?;
        Ok(vec![Element::new("ok")])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EID: &str = "57c2cd6c-c02b-4645-bdb5-e883ea005896";

    fn options(inner: &str) -> Element {
        let xml = format!(
            "<packet><data><backupm><backup_env><backup_options>{inner}</backup_options></backup_env></backupm></data></packet>"
        );
        super::super::packet::parse_packet(xml.as_bytes())
            .unwrap()
            .path(&["data", "backupm", "backup_env", "backup_options"])
            .unwrap()
            .clone()
    }

    fn names(e: &Element) -> Vec<&str> {
        e.children.iter().map(|c| c.name.as_str()).collect()
    }

    fn decoded(e: &Element) -> String {
        use base64::Engine;
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(e.text.trim())
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn remove_names_its_backup_as_a_child_element_or_as_text() {
        let id: BackupId = format!("{EID}/20070219150134").parse().unwrap();
        // The backup_optionsType form: the id is a child element (pretty-printed too).
        for form in [
            format!("<remove><backup>{id}</backup></remove>"),
            format!("<remove>\n  <backup>\n    {id}\n  </backup>\n</remove>"),
            format!("<remove><backup_id>{id}</backup_id></remove>"),
            // Lenient clients: the bare id as the element's text.
            format!("<remove>{id}</remove>"),
        ] {
            assert_eq!(
                remove_option(&options(&form)).unwrap(),
                Some(Some(id)),
                "{form}"
            );
        }
        // An empty remove: the oldest.
        for form in [
            "<remove/>",
            "<remove>  </remove>",
            "<remove><backup/></remove>",
        ] {
            assert_eq!(remove_option(&options(form)).unwrap(), Some(None), "{form}");
        }
        assert_eq!(remove_option(&options("<type>0</type>")).unwrap(), None);
        let bad = remove_option(&options("<remove><backup>nope</backup></remove>")).unwrap_err();
        assert_eq!(bad.code, code::BAD_PARAMETER);
    }

    #[test]
    fn get_configuration_is_get_config() {
        assert_eq!(canonical("get_configuration"), "get_config");
        assert_eq!(canonical("set_configuration"), "set_config");
        assert_eq!(canonical("list"), "list");
        for (alias, call) in ALIASES {
            assert!(CALLS.contains(&call), "{alias} → {call}");
        }
    }

    /// The specification's progress packet: `op`, then `message` in the template form, then
    /// `status`.
    #[test]
    fn progress_messages_use_the_template_form_in_the_specs_order() {
        let eid: EnvId = EID.parse().unwrap();
        let p = progress_body(
            "backupm.backup_env",
            1,
            0,
            &[eid],
            operation_message("backupm.backup_env", "started"),
            "2",
            "2007-02-16T16:14:04+0000",
        );
        assert_eq!(
            names(&p)[..3],
            ["op", "message", "status"],
            "the specification's order"
        );
        assert_eq!(p.text_of("op"), Some("backupm.backup_env"));
        assert_eq!(p.text_of("status"), Some("1"));
        let m = p.child("message").unwrap();
        assert_eq!(
            names(m),
            ["message", "name", "translate", "parameter", "parameter"]
        );
        assert_eq!(decoded(m.child("message").unwrap()), OPERATION_TEMPLATE);
        // The specification's exact bytes for the template.
        assert_eq!(
            m.text_of("message"),
            Some("T3BlcmF0aW9uICVvcF9uYW1lJSBpcyAlc3RhdHVzJQ==")
        );
        assert_eq!(m.text_of("name"), Some(""));
        let params: Vec<&Element> = m.children_named("parameter").collect();
        assert_eq!(names(params[0]), ["message", "name"]);
        assert_eq!(params[0].text_of("name"), Some("op_name"));
        assert_eq!(params[0].text_of("message"), Some("YmFja3VwX2Vudg=="));
        assert_eq!(names(params[1]), ["message", "name", "translate"]);
        assert_eq!(params[1].text_of("name"), Some("status"));
        assert_eq!(params[1].text_of("message"), Some("c3RhcnRlZA=="));
        for (status, word) in [("succeeded", "succeeded"), ("failed", "failed")] {
            let m = operation_message("backupm.remove", status);
            let params: Vec<&Element> = m.children_named("parameter").collect();
            assert_eq!(decoded(params[0].child("message").unwrap()), "remove");
            assert_eq!(decoded(params[1].child("message").unwrap()), word);
        }
        let t = text_message("Percent: 54");
        assert_eq!(names(&t), ["message", "name"]);
        assert_eq!(decoded(t.child("message").unwrap()), "Percent: 54");
    }

    fn record() -> BackupRecord {
        let env: EnvId = EID.parse().unwrap();
        BackupRecord {
            id: BackupId::new(env, 1_171_915_294),
            kind: BackupType::Full,
            parent: None,
            name: String::new(),
            description: String::new(),
            tags: Vec::new(),
            manifest: cairn_core::ChunkId::of(b"m"),
            logical_size: 12_709_275,
            stored_size: 1,
            file_count: 1,
            chunk_count: 1,
            state: cairn_core::BackupState::Complete,
            errors: Vec::new(),
            error_count: 0,
            compression: Compression::default(),
            host: "Host-106".into(),
            source: "/vz/private/106".into(),
            env_info: cairn_core::EnvInfo {
                name: "Test-VE6".into(),
                title: "Test-VE6".into(),
                hostname: "Host-106".into(),
                ip: vec!["10.130.1.6".into()],
                os: "debian-12-x86_64".into(),
                kind: String::new(),
            },
            includes: Vec::new(),
            excludes: Vec::new(),
            protected: false,
        }
    }

    /// `backup/info` as the specification's answer has it: an empty top `message` and
    /// `name`, `translate`, then parameters of `message`, `name` (and `translate`), `os`
    /// with its value nested in `platform`.
    #[test]
    fn backup_info_is_an_info_type_shaped_like_the_specs() {
        let b = record();
        let i = info(&b, None);
        assert_eq!(
            names(&i)[..3],
            ["message", "name", "translate"],
            "the empty top message, name and translate"
        );
        assert_eq!(i.text_of("message"), Some(""));
        assert_eq!(i.text_of("name"), Some(""));
        let params: Vec<&Element> = i.children_named("parameter").collect();
        let order: Vec<&str> = params.iter().filter_map(|p| p.text_of("name")).collect();
        assert_eq!(
            order,
            [
                "hostname",
                "ip",
                "name",
                "os",
                "parent_eid",
                "parent_env_title",
                "title",
                "type"
            ]
        );
        for p in &params {
            let n = names(p);
            assert_eq!(n[..2], ["message", "name"], "{p:?}");
        }
        // The example's own bytes for the values it shares with this record.
        assert_eq!(params[0].text_of("message"), Some("SG9zdC0xMDY="));
        assert_eq!(names(params[0]), ["message", "name", "translate"]);
        assert_eq!(params[1].text_of("message"), Some("MTAuMTMwLjEuNg=="));
        assert_eq!(params[2].text_of("message"), Some("VGVzdC1WRTY="));
        let os = params[3];
        assert_eq!(os.text_of("message"), Some(""), "os's value is nested");
        assert_eq!(names(os)[..3], ["message", "name", "parameter"]);
        let platform = os.child("parameter").unwrap();
        assert_eq!(names(platform), ["message", "name"]);
        assert_eq!(platform.text_of("name"), Some("platform"));
        assert_eq!(platform.text_of("message"), Some("TGludXg="));
        assert_eq!(params[7].text_of("message"), Some("dmlydHVvenpv"));
        assert_eq!(names(params[7]), ["message", "name"]);

        // The backup `backup_options/remove` deleted is named in the answer's info.
        let gone = BackupId::new(b.id.env, 1_171_900_000);
        let i = info(&b, Some(&gone));
        let removed = i
            .children_named("parameter")
            .find(|p| p.text_of("name") == Some("removed"))
            .expect("a removed parameter");
        assert_eq!(decoded(removed.child("message").unwrap()), gone.to_string());
    }

    /// Every element an answer or progress packet is built of has a row in CONFORMANCE.md.
    #[test]
    fn every_answer_element_has_a_conformance_row() {
        use crate::conformance::assert_rows;
        let mut b = record();
        b.description = "d".into();
        b.protected = true;
        let gone = BackupId::new(b.id.env, 1);
        let el = backup_el(&b, 1, "s", true, Some(&gone));
        assert_rows(
            "backupType elements",
            el.children
                .iter()
                .map(|c| format!("xml.backupType.{}", c.name)),
        );
        let i = el.child("info").unwrap();
        assert_rows(
            "info parameters",
            i.children_named("parameter")
                .filter_map(|p| p.text_of("name"))
                .map(|n| format!("xml.info.{n}")),
        );
        let p = progress_body("backupm.backup_env", 1, 0, &[], text_message("x"), "1", "t");
        assert_rows(
            "progress elements",
            p.children
                .iter()
                .map(|c| format!("xml.progress.{}", c.name)),
        );
    }

    fn server(address: &str, port: Option<&str>) -> Element {
        let mut s =
            Element::new("backup_server").with_child(Element::new("address").with_text(address));
        if let Some(p) = port {
            s.push(Element::new("port").with_text(p));
        }
        s
    }

    #[test]
    fn a_backup_server_other_than_this_cluster_is_refused() {
        let here = Here {
            storage_eid: "89e27960-97b8-461f-902f-557b4b16784b".into(),
            local: Some("10.0.0.5:4433".parse().unwrap()),
            ports: vec![4433, 4434],
            node_hosts: vec![
                url_host("http://10.0.0.7:7400"),
                url_host("http://[::1]:7401/"),
            ],
        };
        let ip = |s: &str| vec![s.parse::<std::net::IpAddr>().unwrap()];
        // This cluster.
        assert_eq!(foreign_server(&server("local", None), &here, &[]), None);
        assert_eq!(foreign_server(&server("", None), &here, &[]), None);
        assert_eq!(
            foreign_server(
                &server("89E27960-97b8-461f-902f-557b4b16784b", None),
                &here,
                &[]
            ),
            None
        );
        assert_eq!(
            foreign_server(&server("10.0.0.5", Some("4434")), &here, &ip("10.0.0.5")),
            None
        );
        assert_eq!(
            foreign_server(&server("backup.example", None), &here, &ip("10.0.0.5")),
            None
        );
        assert_eq!(
            foreign_server(&server("10.0.0.7", None), &here, &ip("10.0.0.7")),
            None
        );
        assert_eq!(
            foreign_server(&server("[::1]", None), &here, &ip("::1")),
            None
        );
        // Another server.
        for (s, resolved) in [
            (server("10.9.9.9", None), ip("10.9.9.9")),
            (server("backup.elsewhere.example", None), Vec::new()),
            (server("10.0.0.5", Some("5555")), ip("10.0.0.5")),
            (
                server("0badc0de-0000-4000-8000-00000000beef", None),
                Vec::new(),
            ),
        ] {
            assert!(foreign_server(&s, &here, &resolved).is_some(), "{s:?}");
        }
    }
}
