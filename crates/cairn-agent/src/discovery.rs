//! Finding the environments (containers) a hardware node hosts, and giving each a stable id.
//!
//! The agent looks in the places its configuration names ([`Sources`], embedded in the agent's
//! TOML configuration as a `[discovery]` table), in this order:
//!
//! 1. **Virtuozzo / OpenVZ** ([`VzSource`]): every `<CTID>.conf` in the configuration directory
//!    (`/etc/vz/conf`), a shell-style `KEY="value"` file. The private area (`VE_PRIVATE`, with
//!    `$VEID` / `${VEID}` replaced by the CTID, else `<private_root>/<CTID>`) is what is backed up.
//! 2. **LXC**: every `<lxc_root>/<name>/config` (`key = value` lines); the container's rootfs
//!    (`lxc.rootfs.path`, default `<lxc_root>/<name>/rootfs`) is backed up.
//! 3. **systemd-nspawn**: every directory `<nspawn_root>/<name>` (`.raw` images are skipped).
//! 4. **Plain directories**: every subdirectory of each listed directory is one environment.
//! 5. **Explicit** entries, listed one by one in the configuration.
//!
//! **Environment id (EID) rule.** An environment's [`EnvId`] is
//! `EnvId::derive("<host_id>/<name>")`, so the same container on the same host keeps the same EID
//! across runs and agent restarts, and the same name on another host gets another one. The only
//! exceptions are a container whose own configuration names its id: a Virtuozzo 7 container whose
//! CTID is a UUID (that UUID is the EID) and an explicit entry with an `eid`.
//!
//! Two environments with the same EID (e.g. the same name under two sources) are reported once:
//! the first in the source order above wins and the other becomes a [`Problem`].
//!
//! Discovery never fails as a whole: a root directory that does not exist just contributes no
//! environments, and a container whose configuration cannot be read or understood is skipped and
//! reported as a [`Problem`] while the others are still returned.
//!
//! Files inside a container (`etc/hostname`, `etc/os-release`) are under the container's control,
//! so they are opened one path component at a time without following any symbolic link, must be
//! regular files, and are read only up to a small size limit.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{self, File};
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};

use cairn_core::EnvId;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;
use serde::{Deserialize, Deserializer, Serialize};

/// Kind (and problem source) names, as they appear in [`DiscoveredEnv::kind`] and
/// [`Problem::source`].
const KIND_VZ: &str = "virtuozzo";
const KIND_LXC: &str = "lxc";
const KIND_NSPAWN: &str = "nspawn";
const KIND_DIR: &str = "dir";
const KIND_EXPLICIT: &str = "explicit";

/// The most read from a file inside a container (`etc/hostname`, `etc/os-release`).
const CONTAINER_FILE_LIMIT: u64 = 64 * 1024;

/// Where to look for environments. Every source is optional; the default looks nowhere.
///
/// Embedded in the agent's configuration as a `[discovery]` table:
///
/// ```toml
/// [discovery]
/// lxc_root = "/var/lib/lxc"
/// nspawn_root = "/var/lib/machines"
/// dirs = ["/srv/envs"]
///
/// [discovery.vz]            # defaults: /vz/private and /etc/vz/conf
///
/// [[discovery.explicit]]
/// name = "db"
/// path = "/srv/db"
/// eid = "6f1c0d9e-2b1a-4d7e-9a55-0c3b8e1f7a21"   # optional
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sources {
    /// Virtuozzo / OpenVZ containers.
    pub vz: Option<VzSource>,
    /// The LXC container directory (e.g. `/var/lib/lxc`).
    pub lxc_root: Option<PathBuf>,
    /// The systemd-nspawn machine directory (e.g. `/var/lib/machines`).
    pub nspawn_root: Option<PathBuf>,
    /// Directories whose every (non-hidden) subdirectory is one environment, named after it.
    pub dirs: Vec<PathBuf>,
    /// Environments listed one by one (`[[discovery.explicit]]`).
    pub explicit: Vec<ExplicitEnv>,
}

/// Where a Virtuozzo / OpenVZ node keeps its containers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VzSource {
    /// Where private areas live when a configuration has no `VE_PRIVATE` (default `/vz/private`).
    pub private_root: PathBuf,
    /// The directory of `<CTID>.conf` files (default `/etc/vz/conf`).
    pub conf_dir: PathBuf,
}

impl Default for VzSource {
    fn default() -> Self {
        VzSource {
            private_root: PathBuf::from("/vz/private"),
            conf_dir: PathBuf::from("/etc/vz/conf"),
        }
    }
}

/// One environment listed in the configuration. `name` and `path` are required.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplicitEnv {
    /// The EID (a UUID string in TOML, optionally in braces); derived from the host id and the
    /// name when absent.
    #[serde(
        default,
        deserialize_with = "deserialize_opt_eid",
        skip_serializing_if = "Option::is_none"
    )]
    pub eid: Option<EnvId>,
    /// The environment's name (unique on the host).
    pub name: String,
    /// What to back up.
    pub path: PathBuf,
    /// A human-readable title.
    #[serde(default)]
    pub title: String,
    /// The environment's host name.
    #[serde(default)]
    pub hostname: String,
    /// The environment's IP addresses.
    #[serde(default)]
    pub ip: Vec<String>,
    /// The environment's operating system.
    #[serde(default)]
    pub os: String,
}

/// Parses an optional EID with [`EnvId`]'s `FromStr` (hyphenated, optionally in braces).
fn deserialize_opt_eid<'de, D: Deserializer<'de>>(d: D) -> Result<Option<EnvId>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    match s {
        None => Ok(None),
        Some(s) => s
            .parse::<EnvId>()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("`{s}` is not a UUID"))),
    }
}

/// One environment found on this host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveredEnv {
    /// The stable environment id (see the module documentation for the rule).
    pub eid: EnvId,
    /// The name on this host: the CTID for Virtuozzo, the directory / container name otherwise.
    pub name: String,
    /// What to back up: the private area (Virtuozzo), the rootfs (LXC), the machine directory
    /// (nspawn), the subdirectory (dirs) or the given path (explicit).
    pub path: PathBuf,
    /// A human-readable title (Virtuozzo `NAME`, else the name).
    pub title: String,
    /// The host name, when known (empty otherwise).
    pub hostname: String,
    /// IP addresses as configured (may carry a `/mask`).
    pub ip: Vec<String>,
    /// The operating system (`OSTEMPLATE`, or `PRETTY_NAME` from the container's os-release).
    pub os: String,
    /// A free-form description (Virtuozzo `DESCRIPTION`).
    pub description: String,
    /// Where it was found: `"virtuozzo"`, `"lxc"`, `"nspawn"`, `"dir"` or `"explicit"`.
    pub kind: String,
}

/// One environment skipped, with the reason. The caller logs it; the others are still returned.
///
/// `name` is empty when the problem concerns a whole source (e.g. a root directory that exists
/// but cannot be listed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The source: `"virtuozzo"`, `"lxc"`, `"nspawn"`, `"dir"` or `"explicit"`.
    pub source: String,
    /// The environment's name (CTID, directory name, ...), or empty for the whole source.
    pub name: String,
    /// What is wrong.
    pub reason: String,
}

impl Problem {
    fn new(source: &str, name: &str, reason: impl Into<String>) -> Problem {
        Problem {
            source: source.to_string(),
            name: name.to_string(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name.is_empty() {
            write!(f, "{}: {}", self.source, self.reason)
        } else {
            write!(f, "{} `{}`: {}", self.source, self.name, self.reason)
        }
    }
}

/// The EID of `name` on `host_id` when its configuration names none.
pub fn derive_eid(host_id: &str, name: &str) -> EnvId {
    EnvId::derive(&format!("{host_id}/{name}"))
}

/// Finds the environments `sources` describe on the host `host_id`.
///
/// Returns them sorted by name then EID, without duplicate EIDs (the first source in the order
/// Virtuozzo, LXC, nspawn, dirs, explicit wins; the dropped one is reported), together with the
/// environments that were skipped and why. Never fails as a whole and never panics.
pub fn discover(host_id: &str, sources: &Sources) -> (Vec<DiscoveredEnv>, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut found = Vec::new();

    if let Some(vz) = &sources.vz {
        found.extend(discover_vz(host_id, vz, &mut problems));
    }
    if let Some(root) = &sources.lxc_root {
        found.extend(discover_lxc(host_id, root, &mut problems));
    }
    if let Some(root) = &sources.nspawn_root {
        found.extend(discover_nspawn(host_id, root, &mut problems));
    }
    for dir in &sources.dirs {
        found.extend(discover_dir(host_id, dir, &mut problems));
    }
    found.extend(discover_explicit(host_id, &sources.explicit, &mut problems));

    let mut seen: HashMap<EnvId, (String, String)> = HashMap::new();
    let mut out = Vec::with_capacity(found.len());
    for env in found {
        if let Some((kind, name)) = seen.get(&env.eid) {
            problems.push(Problem::new(
                &env.kind,
                &env.name,
                format!(
                    "duplicate environment id {} (already used by {kind} `{name}`); skipped",
                    env.eid
                ),
            ));
            continue;
        }
        seen.insert(env.eid, (env.kind.clone(), env.name.clone()));
        out.push(env);
    }
    sort_envs(&mut out);
    (out, problems)
}

fn sort_envs(envs: &mut [DiscoveredEnv]) {
    envs.sort_by(|a, b| a.name.cmp(&b.name).then(a.eid.cmp(&b.eid)));
}

/// The entries of `root` as (name, full path), sorted by name. A root that does not exist gives
/// nothing; one that cannot be listed, and names that are not UTF-8, are problems.
fn list_dir(root: &Path, source: &str, problems: &mut Vec<Problem>) -> Vec<(String, PathBuf)> {
    let rd = match fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            problems.push(Problem::new(
                source,
                "",
                format!("cannot list {}: {e}", root.display()),
            ));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                problems.push(Problem::new(
                    source,
                    "",
                    format!("cannot list {}: {e}", root.display()),
                ));
                break;
            }
        };
        let os_name = entry.file_name();
        match os_name.to_str() {
            Some(name) => out.push((name.to_string(), entry.path())),
            None => problems.push(Problem::new(
                source,
                &os_name.to_string_lossy(),
                format!("the name in {} is not valid UTF-8", root.display()),
            )),
        }
    }
    out.sort();
    out
}

/// Whether `path` is a directory (following symbolic links: these paths are the host
/// administrator's, not a container's).
fn is_dir(path: &Path) -> bool {
    fs::metadata(path).map(|m| m.is_dir()).unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------
// Virtuozzo / OpenVZ

fn discover_vz(host_id: &str, src: &VzSource, problems: &mut Vec<Problem>) -> Vec<DiscoveredEnv> {
    let mut out = Vec::new();
    for (file_name, conf_path) in list_dir(&src.conf_dir, KIND_VZ, problems) {
        let Some(ctid) = file_name.strip_suffix(".conf") else {
            continue;
        };
        if ctid.is_empty() || ctid == "0" || ctid.starts_with('.') || ctid.starts_with("ve-") {
            continue;
        }
        match vz_env(host_id, src, ctid, &conf_path) {
            Ok(env) => out.push(env),
            Err(reason) => problems.push(Problem::new(KIND_VZ, ctid, reason)),
        }
    }
    out
}

fn vz_env(
    host_id: &str,
    src: &VzSource,
    ctid: &str,
    conf_path: &Path,
) -> Result<DiscoveredEnv, String> {
    // Virtuozzo 7 keeps the configuration in the private area and links it from `conf_dir`;
    // following that link is intended.
    let text = fs::read_to_string(conf_path)
        .map_err(|e| format!("cannot read {}: {e}", conf_path.display()))?;
    let vars = parse_shell_conf(&text).map_err(|e| format!("{}: {e}", conf_path.display()))?;
    let get = |key: &str| vars.get(key).cloned().unwrap_or_default();

    let path = match vars.get("VE_PRIVATE").filter(|v| !v.is_empty()) {
        Some(p) => {
            let p = PathBuf::from(substitute_veid(p, ctid));
            if !p.is_absolute() {
                return Err(format!(
                    "VE_PRIVATE `{}` is not an absolute path",
                    p.display()
                ));
            }
            p
        }
        None => src.private_root.join(ctid),
    };
    if !is_dir(&path) {
        return Err(format!(
            "private area {} does not exist or is not a directory",
            path.display()
        ));
    }

    let eid = ctid
        .parse::<EnvId>()
        .unwrap_or_else(|_| derive_eid(host_id, ctid));
    let title = match get("NAME") {
        t if t.is_empty() => ctid.to_string(),
        t => t,
    };
    Ok(DiscoveredEnv {
        eid,
        name: ctid.to_string(),
        path,
        title,
        hostname: get("HOSTNAME"),
        ip: get("IP_ADDRESS")
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        os: get("OSTEMPLATE"),
        description: get("DESCRIPTION"),
        kind: KIND_VZ.to_string(),
    })
}

/// Replaces `${VEID}` and `$VEID` (not `$VEIDX`) by the CTID.
fn substitute_veid(value: &str, ctid: &str) -> String {
    let value = value.replace("${VEID}", ctid);
    let mut out = String::with_capacity(value.len());
    let mut rest = value.as_str();
    while let Some(at) = rest.find("$VEID") {
        let after = &rest[at + "$VEID".len()..];
        out.push_str(&rest[..at]);
        if after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            out.push_str("$VEID");
        } else {
            out.push_str(ctid);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Parses a shell-style `KEY=value` file (`#` comments, blank lines; values unquoted, in `'…'`
/// or in `"…"`, possibly concatenated, optionally followed by a `#` comment). Later assignments
/// win. Any other line is an error `line N: …`.
fn parse_shell_conf(text: &str) -> Result<HashMap<String, String>, String> {
    let mut vars = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {n}: `{line}` is not a KEY=value assignment"));
        };
        if !is_shell_identifier(key) {
            return Err(format!("line {n}: `{key}` is not a valid variable name"));
        }
        let value = parse_shell_value(value).map_err(|e| format!("line {n}: {e}"))?;
        vars.insert(key.to_string(), value);
    }
    Ok(vars)
}

fn is_shell_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses one shell word (unquoted, `'…'` and `"…"` parts) followed by nothing but blanks and
/// an optional `#` comment.
fn parse_shell_value(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c == ' ' || c == '\t' {
            break;
        }
        chars.next();
        match c {
            '\'' => loop {
                match chars.next() {
                    None => return Err("unterminated single quote".to_string()),
                    Some('\'') => break,
                    Some(ch) => out.push(ch),
                }
            },
            '"' => loop {
                match chars.next() {
                    None => return Err("unterminated double quote".to_string()),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        None => return Err("unterminated double quote".to_string()),
                        Some(e @ ('"' | '\\' | '$' | '`')) => out.push(e),
                        Some(other) => {
                            out.push('\\');
                            out.push(other);
                        }
                    },
                    Some(ch) => out.push(ch),
                }
            },
            '\\' => match chars.next() {
                None => return Err("backslash at the end of the line".to_string()),
                Some(e) => out.push(e),
            },
            ch => out.push(ch),
        }
    }
    let rest: String = chars.collect();
    let rest = rest.trim_start();
    if rest.is_empty() || rest.starts_with('#') {
        Ok(out)
    } else {
        Err(format!("unexpected `{rest}` after the value"))
    }
}

// ---------------------------------------------------------------------------------------------
// LXC

fn discover_lxc(host_id: &str, root: &Path, problems: &mut Vec<Problem>) -> Vec<DiscoveredEnv> {
    let mut out = Vec::new();
    for (name, dir) in list_dir(root, KIND_LXC, problems) {
        if name.starts_with('.') || !is_dir(&dir) {
            continue;
        }
        let config = dir.join("config");
        if !config.exists() {
            continue;
        }
        match lxc_env(host_id, &name, &dir, &config) {
            Ok(env) => out.push(env),
            Err(reason) => problems.push(Problem::new(KIND_LXC, &name, reason)),
        }
    }
    out
}

/// What discovery needs from an LXC `config` file.
#[derive(Debug, Default, PartialEq, Eq)]
struct LxcConfig {
    hostname: String,
    /// Addresses per network index, in file order.
    ipv4: BTreeMap<u32, Vec<String>>,
    rootfs: Option<String>,
}

/// Parses LXC `key = value` lines (`#` comments). Understands `lxc.uts.name`,
/// `lxc.net.N.ipv4.address`, `lxc.rootfs.path` and their LXC 2 names (`lxc.utsname`,
/// `lxc.network.ipv4`, `lxc.rootfs`); an empty value resets the key, as LXC does.
fn parse_lxc_config(text: &str) -> Result<LxcConfig, String> {
    let mut cfg = LxcConfig::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!(
                "line {}: `{line}` is not a `key = value` line",
                i + 1
            ));
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "lxc.uts.name" | "lxc.utsname" => cfg.hostname = value.to_string(),
            "lxc.rootfs.path" | "lxc.rootfs" => {
                cfg.rootfs = Some(value.to_string()).filter(|v| !v.is_empty())
            }
            "lxc.network.ipv4" => push_or_clear(cfg.ipv4.entry(0).or_default(), value),
            _ => {
                let index = key
                    .strip_prefix("lxc.net.")
                    .and_then(|k| k.strip_suffix(".ipv4.address"))
                    .and_then(|n| n.parse::<u32>().ok());
                if let Some(index) = index {
                    push_or_clear(cfg.ipv4.entry(index).or_default(), value);
                }
            }
        }
    }
    Ok(cfg)
}

fn push_or_clear(list: &mut Vec<String>, value: &str) {
    if value.is_empty() {
        list.clear();
    } else {
        list.push(value.to_string());
    }
}

/// The rootfs directory of an `lxc.rootfs.path` value: a plain absolute path, or `dir:` /
/// `btrfs:` followed by one. Other backends (block devices, overlay, zfs, ...) have no single
/// directory to back up.
fn lxc_rootfs(value: &str) -> Result<PathBuf, String> {
    let path = if value.starts_with('/') {
        value
    } else if let Some(p) = value
        .strip_prefix("dir:")
        .or_else(|| value.strip_prefix("btrfs:"))
    {
        p
    } else {
        return match value.split_once(':') {
            Some((backend, _)) => Err(format!("unsupported rootfs backend `{backend}`")),
            None => Err(format!("rootfs `{value}` is not an absolute path")),
        };
    };
    if !path.starts_with('/') {
        return Err(format!("rootfs `{value}` is not an absolute path"));
    }
    Ok(PathBuf::from(path))
}

fn lxc_env(host_id: &str, name: &str, dir: &Path, config: &Path) -> Result<DiscoveredEnv, String> {
    let text =
        fs::read_to_string(config).map_err(|e| format!("cannot read {}: {e}", config.display()))?;
    let cfg = parse_lxc_config(&text).map_err(|e| format!("{}: {e}", config.display()))?;
    let rootfs = match &cfg.rootfs {
        Some(v) => lxc_rootfs(v)?,
        None => dir.join("rootfs"),
    };
    if !is_dir(&rootfs) {
        return Err(format!(
            "rootfs {} does not exist or is not a directory",
            rootfs.display()
        ));
    }
    Ok(DiscoveredEnv {
        eid: derive_eid(host_id, name),
        name: name.to_string(),
        os: os_release_name(&rootfs),
        path: rootfs,
        title: name.to_string(),
        hostname: cfg.hostname,
        ip: cfg.ipv4.into_values().flatten().collect(),
        description: String::new(),
        kind: KIND_LXC.to_string(),
    })
}

// ---------------------------------------------------------------------------------------------
// systemd-nspawn and plain directories

fn discover_nspawn(host_id: &str, root: &Path, problems: &mut Vec<Problem>) -> Vec<DiscoveredEnv> {
    let mut out = Vec::new();
    for (name, dir) in list_dir(root, KIND_NSPAWN, problems) {
        // Hidden entries are machinectl's locks and temporary copies; `.raw` images are not
        // directories and are skipped like any other file.
        if name.starts_with('.') || !is_dir(&dir) {
            continue;
        }
        let hostname = container_hostname(&dir).unwrap_or_else(|| name.clone());
        out.push(DiscoveredEnv {
            eid: derive_eid(host_id, &name),
            os: os_release_name(&dir),
            title: name.clone(),
            name,
            path: dir,
            hostname,
            ip: Vec::new(),
            description: String::new(),
            kind: KIND_NSPAWN.to_string(),
        });
    }
    out
}

fn discover_dir(host_id: &str, root: &Path, problems: &mut Vec<Problem>) -> Vec<DiscoveredEnv> {
    let mut out = Vec::new();
    for (name, dir) in list_dir(root, KIND_DIR, problems) {
        if name.starts_with('.') || !is_dir(&dir) {
            continue;
        }
        out.push(DiscoveredEnv {
            eid: derive_eid(host_id, &name),
            hostname: container_hostname(&dir).unwrap_or_default(),
            os: os_release_name(&dir),
            title: name.clone(),
            name,
            path: dir,
            ip: Vec::new(),
            description: String::new(),
            kind: KIND_DIR.to_string(),
        });
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Explicit entries

fn discover_explicit(
    host_id: &str,
    list: &[ExplicitEnv],
    problems: &mut Vec<Problem>,
) -> Vec<DiscoveredEnv> {
    let mut out = Vec::new();
    for e in list {
        if e.name.is_empty() {
            problems.push(Problem::new(
                KIND_EXPLICIT,
                "",
                format!("an entry for {} has an empty name", e.path.display()),
            ));
            continue;
        }
        if let Err(err) = fs::metadata(&e.path) {
            problems.push(Problem::new(
                KIND_EXPLICIT,
                &e.name,
                format!("path {}: {err}", e.path.display()),
            ));
            continue;
        }
        out.push(DiscoveredEnv {
            eid: e.eid.unwrap_or_else(|| derive_eid(host_id, &e.name)),
            name: e.name.clone(),
            path: e.path.clone(),
            title: e.title.clone(),
            hostname: e.hostname.clone(),
            ip: e.ip.clone(),
            os: e.os.clone(),
            description: String::new(),
            kind: KIND_EXPLICIT.to_string(),
        });
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Files inside a container

/// Reads `root/<components…>` without following a symbolic link anywhere below `root` (so a
/// container cannot point the agent at a host file), only if it is a regular file, and at most
/// [`CONTAINER_FILE_LIMIT`] bytes of it. `None` on any failure.
fn read_in_container(root: &Path, components: &[&str]) -> Option<String> {
    let (last, dirs) = components.split_last()?;
    let mut dir = File::open(root).ok()?;
    for comp in dirs {
        let fd = openat(
            Some(dir.as_raw_fd()),
            *comp,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        // SAFETY: `openat` just returned this descriptor and nothing else owns it.
        dir = unsafe { File::from_raw_fd(fd) };
    }
    // O_NONBLOCK: opening a FIFO planted by the container must not hang the agent.
    let fd = openat(
        Some(dir.as_raw_fd()),
        *last,
        OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    // SAFETY: `openat` just returned this descriptor and nothing else owns it.
    let file = unsafe { File::from_raw_fd(fd) };
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut buf = Vec::new();
    file.take(CONTAINER_FILE_LIMIT).read_to_end(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// The first line of `root/etc/hostname`, if it is a regular file and the line is not empty.
fn container_hostname(root: &Path) -> Option<String> {
    let text = read_in_container(root, &["etc", "hostname"])?;
    let first = text.lines().next()?.trim();
    (!first.is_empty()).then(|| first.to_string())
}

/// The operating system named by `root/etc/os-release` (or, when that is missing or not a
/// regular file, `root/usr/lib/os-release`, as os-release(5) prescribes): `PRETTY_NAME`, else
/// `NAME` and `VERSION`. Empty when unknown.
fn os_release_name(root: &Path) -> String {
    let Some(text) = read_in_container(root, &["etc", "os-release"])
        .or_else(|| read_in_container(root, &["usr", "lib", "os-release"]))
    else {
        return String::new();
    };
    // Lines are parsed one by one so that one odd line does not hide the others.
    let mut vars = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            if is_shell_identifier(key) {
                if let Ok(value) = parse_shell_value(value) {
                    vars.insert(key.to_string(), value);
                }
            }
        }
    }
    if let Some(pretty) = vars.get("PRETTY_NAME").filter(|v| !v.is_empty()) {
        return pretty.clone();
    }
    match (vars.get("NAME"), vars.get("VERSION")) {
        (Some(name), Some(version)) if !version.is_empty() => format!("{name} {version}"),
        (Some(name), _) => name.clone(),
        (None, _) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const HOST: &str = "node-1";

    fn write(path: &Path, text: &str) {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(path, text).unwrap();
    }

    fn mkdir(path: &Path) {
        fs::create_dir_all(path).unwrap();
    }

    fn names(envs: &[DiscoveredEnv]) -> Vec<&str> {
        envs.iter().map(|e| e.name.as_str()).collect()
    }

    fn vz_only(tmp: &Path) -> Sources {
        Sources {
            vz: Some(VzSource {
                private_root: tmp.join("private"),
                conf_dir: tmp.join("conf"),
            }),
            ..Sources::default()
        }
    }

    const VZ7_CTID: &str = "a3c1d4e2-5b6f-4a7b-8c9d-0e1f2a3b4c5d";

    #[test]
    fn vz_configs_are_parsed() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let private = t.join("private");
        mkdir(&t.join("elsewhere/101"));
        mkdir(&private.join("102"));
        mkdir(&private.join(VZ7_CTID));
        write(
            &t.join("conf/101.conf"),
            &format!(
                "# Managed by vzctl\n\
                 \n\
                 HOSTNAME=\"web.example.com\"\n\
                 IP_ADDRESS=\"10.0.0.5 10.0.0.6/24\"   # two of them\n\
                 OSTEMPLATE='centos-7-x86_64'\n\
                 NAME=web\n\
                 DESCRIPTION=\"The \\\"main\\\" web server\"\n\
                 VE_PRIVATE=\"{}/elsewhere/$VEID\"\n\
                 HOSTNAME=\"www.example.com\"\n",
                t.display()
            ),
        );
        write(
            &t.join("conf/102.conf"),
            &format!(
                "VE_PRIVATE={}/private/${{VEID}}\nIP_ADDRESS=\"\"\n",
                t.display()
            ),
        );
        write(
            &t.join(format!("conf/{VZ7_CTID}.conf")),
            "OSTEMPLATE=\"vzlinux-8\"\nNAME=\"mail server\"\n",
        );
        // Not containers.
        write(&t.join("conf/0.conf"), "this is not even parsed\n");
        write(&t.join("conf/ve-basic.conf-sample"), "garbage\n");
        write(&t.join("conf/ve-light.conf"), "garbage\n");
        write(&t.join("conf/101.conf.destroyed"), "garbage\n");
        write(&t.join("conf/notes.txt"), "garbage\n");

        let (envs, problems) = discover(HOST, &vz_only(t));
        assert_eq!(problems, vec![]);
        assert_eq!(
            envs,
            vec![
                DiscoveredEnv {
                    eid: derive_eid(HOST, "101"),
                    name: "101".into(),
                    path: t.join("elsewhere/101"),
                    title: "web".into(),
                    hostname: "www.example.com".into(),
                    ip: vec!["10.0.0.5".into(), "10.0.0.6/24".into()],
                    os: "centos-7-x86_64".into(),
                    description: "The \"main\" web server".into(),
                    kind: "virtuozzo".into(),
                },
                DiscoveredEnv {
                    eid: derive_eid(HOST, "102"),
                    name: "102".into(),
                    path: t.join("private/102"),
                    title: "102".into(),
                    hostname: String::new(),
                    ip: vec![],
                    os: String::new(),
                    description: String::new(),
                    kind: "virtuozzo".into(),
                },
                DiscoveredEnv {
                    eid: VZ7_CTID.parse().unwrap(),
                    name: VZ7_CTID.into(),
                    path: private.join(VZ7_CTID),
                    title: "mail server".into(),
                    hostname: String::new(),
                    ip: vec![],
                    os: "vzlinux-8".into(),
                    description: String::new(),
                    kind: "virtuozzo".into(),
                },
            ]
        );
        assert_eq!(envs[2].eid.to_string(), VZ7_CTID);
    }

    #[test]
    fn a_broken_vz_config_is_a_problem_and_the_others_still_work() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        mkdir(&t.join("private/101"));
        mkdir(&t.join("private/102"));
        mkdir(&t.join("private/103"));
        write(&t.join("conf/101.conf"), "HOSTNAME=\"ok\"\n");
        write(&t.join("conf/102.conf"), "# fine\nHOSTNAME=\"broken\n");
        write(&t.join("conf/103.conf"), "HOSTNAME=a\nthis is not shell\n");
        write(&t.join("conf/104.conf"), "HOSTNAME=no-private-area\n");
        write(&t.join("conf/105.conf"), "1ABC=x\n");

        let (envs, problems) = discover(HOST, &vz_only(t));
        assert_eq!(names(&envs), vec!["101"]);
        assert_eq!(envs[0].hostname, "ok");
        let conf = |n: &str| t.join(format!("conf/{n}.conf")).display().to_string();
        assert_eq!(
            problems,
            vec![
                Problem::new(
                    "virtuozzo",
                    "102",
                    format!("{}: line 2: unterminated double quote", conf("102"))
                ),
                Problem::new(
                    "virtuozzo",
                    "103",
                    format!(
                        "{}: line 2: `this is not shell` is not a KEY=value assignment",
                        conf("103")
                    )
                ),
                Problem::new(
                    "virtuozzo",
                    "104",
                    format!(
                        "private area {} does not exist or is not a directory",
                        t.join("private/104").display()
                    )
                ),
                Problem::new(
                    "virtuozzo",
                    "105",
                    format!(
                        "{}: line 1: `1ABC` is not a valid variable name",
                        conf("105")
                    )
                ),
            ]
        );
    }

    #[test]
    fn shell_values() {
        let ok = |s: &str| parse_shell_value(s).unwrap();
        assert_eq!(ok("plain"), "plain");
        assert_eq!(ok("\"a b\""), "a b");
        assert_eq!(ok("'a $b \\n'"), "a $b \\n");
        assert_eq!(ok("\"x\\$y\\\\z\\n\""), "x$y\\z\\n");
        assert_eq!(ok("pre\"mid\"'post'"), "premidpost");
        assert_eq!(ok("a\\ b"), "a b");
        assert_eq!(ok("\"v\"  # comment"), "v");
        assert_eq!(ok(""), "");
        assert_eq!(
            parse_shell_value("'open"),
            Err("unterminated single quote".to_string())
        );
        assert_eq!(
            parse_shell_value("a b"),
            Err("unexpected `b` after the value".to_string())
        );
        assert_eq!(
            parse_shell_conf("KEY = v\n"),
            Err("line 1: `KEY ` is not a valid variable name".to_string())
        );
        let vars = parse_shell_conf("  A=1\n\n   # c\nB_2='x'\nA=3\n").unwrap();
        assert_eq!(vars.len(), 2);
        assert_eq!(vars["A"], "3");
        assert_eq!(vars["B_2"], "x");
    }

    #[test]
    fn veid_substitution() {
        assert_eq!(
            substitute_veid("/vz/private/$VEID", "101"),
            "/vz/private/101"
        );
        assert_eq!(substitute_veid("/p/${VEID}/x", "7"), "/p/7/x");
        assert_eq!(substitute_veid("/p/$VEID-$VEID", "7"), "/p/7-7");
        assert_eq!(substitute_veid("/p/$VEIDX/$VEID", "7"), "/p/$VEIDX/7");
        assert_eq!(substitute_veid("/p/none", "7"), "/p/none");
    }

    #[test]
    fn lxc_containers() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let lxc = t.join("lxc");
        let web_rootfs = t.join("storage/web");
        write(
            &lxc.join("web/config"),
            &format!(
                "# Template used to create this container\n\
                 lxc.include = /usr/share/lxc/config/common.conf\n\
                 lxc.rootfs.path = dir:{}\n\
                 lxc.uts.name = web01\n\
                 lxc.net.0.type = veth\n\
                 lxc.net.0.ipv4.address = 10.0.3.5/24\n\
                 lxc.net.0.ipv4.gateway = 10.0.3.1\n\
                 lxc.net.1.ipv4.address=192.168.1.9\n",
                web_rootfs.display()
            ),
        );
        write(
            &web_rootfs.join("etc/os-release"),
            "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n",
        );
        // Default rootfs; os-release linked as most distributions do.
        write(&lxc.join("db/config"), "lxc.uts.name = db\n");
        write(
            &lxc.join("db/rootfs/usr/lib/os-release"),
            "PRETTY_NAME='Alpine Linux v3.19'\n",
        );
        mkdir(&lxc.join("db/rootfs/etc"));
        symlink(
            "../usr/lib/os-release",
            lxc.join("db/rootfs/etc/os-release"),
        )
        .unwrap();
        // No config: not a container.
        mkdir(&lxc.join("scratch/rootfs"));
        // Broken config.
        write(&lxc.join("bad/config"), "lxc.uts.name = bad\nnonsense\n");
        mkdir(&lxc.join("bad/rootfs"));
        // Unsupported backend.
        write(
            &lxc.join("lvm/config"),
            "lxc.rootfs.path = lvm:/dev/vg/lv\n",
        );

        let sources = Sources {
            lxc_root: Some(lxc.clone()),
            ..Sources::default()
        };
        let (envs, problems) = discover(HOST, &sources);
        assert_eq!(
            problems,
            vec![
                Problem::new(
                    "lxc",
                    "bad",
                    format!(
                        "{}: line 2: `nonsense` is not a `key = value` line",
                        lxc.join("bad/config").display()
                    )
                ),
                Problem::new("lxc", "lvm", "unsupported rootfs backend `lvm`"),
            ]
        );
        assert_eq!(
            envs,
            vec![
                DiscoveredEnv {
                    eid: derive_eid(HOST, "db"),
                    name: "db".into(),
                    path: lxc.join("db/rootfs"),
                    title: "db".into(),
                    hostname: "db".into(),
                    ip: vec![],
                    os: "Alpine Linux v3.19".into(),
                    description: String::new(),
                    kind: "lxc".into(),
                },
                DiscoveredEnv {
                    eid: derive_eid(HOST, "web"),
                    name: "web".into(),
                    path: web_rootfs,
                    title: "web".into(),
                    hostname: "web01".into(),
                    ip: vec!["10.0.3.5/24".into(), "192.168.1.9".into()],
                    os: "Debian GNU/Linux 12 (bookworm)".into(),
                    description: String::new(),
                    kind: "lxc".into(),
                },
            ]
        );
    }

    #[test]
    fn lxc_config_details() {
        let cfg = parse_lxc_config(
            "lxc.utsname = old\n\
             lxc.rootfs = /srv/old\n\
             lxc.network.ipv4 = 10.1.1.1\n\
             lxc.net.2.ipv4.address = 10.2.2.2\n\
             lxc.net.1.ipv4.address = 10.9.9.9\n\
             lxc.net.1.ipv4.address =\n\
             lxc.net.1.ipv4.address = 10.1.0.1\n\
             lxc.net.x.ipv4.address = 1.2.3.4\n",
        )
        .unwrap();
        assert_eq!(cfg.hostname, "old");
        assert_eq!(cfg.rootfs.as_deref(), Some("/srv/old"));
        let ips: Vec<String> = cfg.ipv4.into_values().flatten().collect();
        assert_eq!(ips, vec!["10.1.1.1", "10.1.0.1", "10.2.2.2"]);

        assert_eq!(lxc_rootfs("/a/b"), Ok(PathBuf::from("/a/b")));
        assert_eq!(lxc_rootfs("dir:/a/b"), Ok(PathBuf::from("/a/b")));
        assert_eq!(lxc_rootfs("btrfs:/a/b"), Ok(PathBuf::from("/a/b")));
        assert_eq!(
            lxc_rootfs("dir:a/b"),
            Err("rootfs `dir:a/b` is not an absolute path".to_string())
        );
        assert_eq!(
            lxc_rootfs("overlay:/l:/u"),
            Err("unsupported rootfs backend `overlay`".to_string())
        );
        assert_eq!(
            lxc_rootfs("rootfs"),
            Err("rootfs `rootfs` is not an absolute path".to_string())
        );
    }

    #[test]
    fn nspawn_machines() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let machines = t.join("machines");
        write(&machines.join("alpha/etc/hostname"), "alpha.lan\nignored\n");
        write(
            &machines.join("alpha/etc/os-release"),
            "# comment\nPRETTY_NAME=\"Fedora Linux 40 (Container Image)\"\n",
        );
        mkdir(&machines.join("beta/etc"));
        write(
            &machines.join("beta/etc/os-release"),
            "NAME=Arch\nVERSION=rolling\n",
        );
        write(&machines.join("image.raw"), "raw image bytes");
        mkdir(&machines.join(".#alpha.lck"));
        // A hostname that links out of the container is not read.
        write(&t.join("host-secret"), "secret\n");
        mkdir(&machines.join("gamma/etc"));
        symlink(t.join("host-secret"), machines.join("gamma/etc/hostname")).unwrap();
        // Nor through a linked directory.
        mkdir(&t.join("evil/etc"));
        write(&t.join("evil/etc/os-release"), "PRETTY_NAME=evil\n");
        mkdir(&machines.join("delta"));
        symlink(t.join("evil/etc"), machines.join("delta/etc")).unwrap();

        let sources = Sources {
            nspawn_root: Some(machines.clone()),
            ..Sources::default()
        };
        let (envs, problems) = discover(HOST, &sources);
        assert_eq!(problems, vec![]);
        let expect = |name: &str, hostname: &str, os: &str| DiscoveredEnv {
            eid: derive_eid(HOST, name),
            name: name.into(),
            path: machines.join(name),
            title: name.into(),
            hostname: hostname.into(),
            ip: vec![],
            os: os.into(),
            description: String::new(),
            kind: "nspawn".into(),
        };
        assert_eq!(
            envs,
            vec![
                expect("alpha", "alpha.lan", "Fedora Linux 40 (Container Image)"),
                expect("beta", "beta", "Arch rolling"),
                expect("delta", "delta", ""),
                expect("gamma", "gamma", ""),
            ]
        );
    }

    #[test]
    fn plain_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        write(&t.join("a/one/etc/hostname"), "one.example\n");
        write(
            &t.join("a/one/etc/os-release"),
            "PRETTY_NAME=\"Ubuntu 24.04 LTS\"\n",
        );
        mkdir(&t.join("a/.hidden"));
        write(&t.join("a/file.txt"), "not an environment");
        mkdir(&t.join("b/two"));

        let sources = Sources {
            dirs: vec![t.join("b"), t.join("a"), t.join("missing")],
            ..Sources::default()
        };
        let (envs, problems) = discover(HOST, &sources);
        assert_eq!(problems, vec![]);
        assert_eq!(
            envs,
            vec![
                DiscoveredEnv {
                    eid: derive_eid(HOST, "one"),
                    name: "one".into(),
                    path: t.join("a/one"),
                    title: "one".into(),
                    hostname: "one.example".into(),
                    ip: vec![],
                    os: "Ubuntu 24.04 LTS".into(),
                    description: String::new(),
                    kind: "dir".into(),
                },
                DiscoveredEnv {
                    eid: derive_eid(HOST, "two"),
                    name: "two".into(),
                    path: t.join("b/two"),
                    title: "two".into(),
                    hostname: String::new(),
                    ip: vec![],
                    os: String::new(),
                    description: String::new(),
                    kind: "dir".into(),
                },
            ]
        );
    }

    #[test]
    fn explicit_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        mkdir(&t.join("db"));
        mkdir(&t.join("files"));
        let given: EnvId = "6f1c0d9e-2b1a-4d7e-9a55-0c3b8e1f7a21".parse().unwrap();
        let sources = Sources {
            explicit: vec![
                ExplicitEnv {
                    eid: Some(given),
                    name: "db".into(),
                    path: t.join("db"),
                    title: "Database".into(),
                    hostname: "db.lan".into(),
                    ip: vec!["10.0.0.9".into()],
                    os: "Debian 12".into(),
                },
                ExplicitEnv {
                    eid: None,
                    name: "files".into(),
                    path: t.join("files"),
                    title: String::new(),
                    hostname: String::new(),
                    ip: vec![],
                    os: String::new(),
                },
                ExplicitEnv {
                    eid: None,
                    name: "gone".into(),
                    path: t.join("gone"),
                    title: String::new(),
                    hostname: String::new(),
                    ip: vec![],
                    os: String::new(),
                },
            ],
            ..Sources::default()
        };
        let (envs, problems) = discover(HOST, &sources);
        assert_eq!(
            envs,
            vec![
                DiscoveredEnv {
                    eid: given,
                    name: "db".into(),
                    path: t.join("db"),
                    title: "Database".into(),
                    hostname: "db.lan".into(),
                    ip: vec!["10.0.0.9".into()],
                    os: "Debian 12".into(),
                    description: String::new(),
                    kind: "explicit".into(),
                },
                DiscoveredEnv {
                    eid: derive_eid(HOST, "files"),
                    name: "files".into(),
                    path: t.join("files"),
                    title: String::new(),
                    hostname: String::new(),
                    ip: vec![],
                    os: String::new(),
                    description: String::new(),
                    kind: "explicit".into(),
                },
            ]
        );
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].source, "explicit");
        assert_eq!(problems[0].name, "gone");
        assert!(
            problems[0]
                .reason
                .starts_with(&format!("path {}: ", t.join("gone").display())),
            "{}",
            problems[0].reason
        );
    }

    #[test]
    fn eids_are_stable_per_host_and_name() {
        assert_eq!(derive_eid("node-1", "101"), derive_eid("node-1", "101"));
        assert_eq!(derive_eid("node-1", "101"), EnvId::derive("node-1/101"));
        assert_ne!(derive_eid("node-1", "101"), derive_eid("node-2", "101"));
        assert_ne!(derive_eid("node-1", "101"), derive_eid("node-1", "102"));
        // Pinned: changing the rule would give every environment a new id.
        assert_eq!(
            derive_eid("node-1", "101").to_string(),
            "cedbe11d-74a6-57a2-9da1-8b921cd9a403"
        );

        // Through discovery, twice, and from another host.
        let tmp = tempfile::tempdir().unwrap();
        mkdir(&tmp.path().join("envs/web"));
        let sources = Sources {
            dirs: vec![tmp.path().join("envs")],
            ..Sources::default()
        };
        let (a, _) = discover("node-1", &sources);
        let (b, _) = discover("node-1", &sources);
        let (c, _) = discover("node-2", &sources);
        assert_eq!(a, b);
        assert_eq!(a[0].eid, EnvId::derive("node-1/web"));
        assert_eq!(c[0].eid, EnvId::derive("node-2/web"));
        assert_ne!(a[0].eid, c[0].eid);
    }

    #[test]
    fn duplicate_eids_keep_the_first_source() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        // "101" under Virtuozzo, LXC and a plain directory: the same derived EID.
        mkdir(&t.join("private/101"));
        write(&t.join("conf/101.conf"), "HOSTNAME=vz\n");
        write(&t.join("lxc/101/config"), "lxc.uts.name = lxc\n");
        mkdir(&t.join("lxc/101/rootfs"));
        mkdir(&t.join("d1/101"));
        // The same name in two plain directories: the first listed wins.
        mkdir(&t.join("d1/web"));
        mkdir(&t.join("d2/web"));
        // An explicit entry reusing a Virtuozzo 7 CTID as its EID.
        mkdir(&t.join(format!("private/{VZ7_CTID}")));
        write(&t.join(format!("conf/{VZ7_CTID}.conf")), "");
        mkdir(&t.join("other"));

        let mut sources = vz_only(t);
        sources.lxc_root = Some(t.join("lxc"));
        sources.dirs = vec![t.join("d1"), t.join("d2")];
        sources.explicit = vec![ExplicitEnv {
            eid: Some(VZ7_CTID.parse().unwrap()),
            name: "other".into(),
            path: t.join("other"),
            title: String::new(),
            hostname: String::new(),
            ip: vec![],
            os: String::new(),
        }];
        let (envs, problems) = discover(HOST, &sources);
        let got: Vec<(&str, &str, &Path)> = envs
            .iter()
            .map(|e| (e.name.as_str(), e.kind.as_str(), e.path.as_path()))
            .collect();
        let p101 = t.join("private/101");
        let pvz7 = t.join(format!("private/{VZ7_CTID}"));
        let pweb = t.join("d1/web");
        assert_eq!(
            got,
            vec![
                ("101", "virtuozzo", p101.as_path()),
                (VZ7_CTID, "virtuozzo", pvz7.as_path()),
                ("web", "dir", pweb.as_path()),
            ]
        );
        let dup = |other: &str, eid: EnvId| {
            format!("duplicate environment id {eid} (already used by {other}); skipped")
        };
        let e101 = derive_eid(HOST, "101");
        let evz7: EnvId = VZ7_CTID.parse().unwrap();
        assert_eq!(
            problems,
            vec![
                Problem::new("lxc", "101", dup("virtuozzo `101`", e101)),
                Problem::new("dir", "101", dup("virtuozzo `101`", e101)),
                Problem::new("dir", "web", dup("dir `web`", derive_eid(HOST, "web"))),
                Problem::new(
                    "explicit",
                    "other",
                    dup(&format!("virtuozzo `{VZ7_CTID}`"), evz7)
                ),
            ]
        );
    }

    #[test]
    fn missing_roots_give_nothing_and_no_problems() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().join("nothing-here");
        let sources = Sources {
            vz: Some(VzSource {
                private_root: t.join("private"),
                conf_dir: t.join("conf"),
            }),
            lxc_root: Some(t.join("lxc")),
            nspawn_root: Some(t.join("machines")),
            dirs: vec![t.join("a"), t.join("b")],
            explicit: vec![],
        };
        assert_eq!(discover(HOST, &sources), (vec![], vec![]));
        assert_eq!(discover(HOST, &Sources::default()), (vec![], vec![]));
    }

    #[test]
    fn sources_from_toml() {
        #[derive(Deserialize)]
        struct AgentConfig {
            discovery: Sources,
        }
        let cfg: AgentConfig = toml::from_str(
            r#"
            [discovery]
            lxc_root = "/var/lib/lxc"
            dirs = ["/srv/envs", "/srv/more"]

            [discovery.vz]
            conf_dir = "/etc/vz/conf.d"

            [[discovery.explicit]]
            name = "db"
            path = "/srv/db"
            eid = "{6F1C0D9E-2B1A-4D7E-9A55-0C3B8E1F7A21}"
            ip = ["10.0.0.9"]

            [[discovery.explicit]]
            name = "files"
            path = "/srv/files"
            "#,
        )
        .unwrap();
        assert_eq!(
            cfg.discovery,
            Sources {
                vz: Some(VzSource {
                    private_root: PathBuf::from("/vz/private"),
                    conf_dir: PathBuf::from("/etc/vz/conf.d"),
                }),
                lxc_root: Some(PathBuf::from("/var/lib/lxc")),
                nspawn_root: None,
                dirs: vec![PathBuf::from("/srv/envs"), PathBuf::from("/srv/more")],
                explicit: vec![
                    ExplicitEnv {
                        eid: Some("6f1c0d9e-2b1a-4d7e-9a55-0c3b8e1f7a21".parse().unwrap()),
                        name: "db".into(),
                        path: PathBuf::from("/srv/db"),
                        title: String::new(),
                        hostname: String::new(),
                        ip: vec!["10.0.0.9".into()],
                        os: String::new(),
                    },
                    ExplicitEnv {
                        eid: None,
                        name: "files".into(),
                        path: PathBuf::from("/srv/files"),
                        title: String::new(),
                        hostname: String::new(),
                        ip: vec![],
                        os: String::new(),
                    },
                ],
            }
        );

        // An empty table is the default (look nowhere); an empty vz table uses the defaults.
        assert_eq!(toml::from_str::<Sources>("").unwrap(), Sources::default());
        assert_eq!(
            toml::from_str::<Sources>("[vz]\n").unwrap().vz,
            Some(VzSource::default())
        );

        // Unknown keys, missing required keys and bad EIDs are refused.
        let err = |text: &str| toml::from_str::<Sources>(text).unwrap_err().to_string();
        assert!(err("lxc_rot = \"/x\"\n").contains("unknown field `lxc_rot`"));
        assert!(err("[vz]\nconf = \"/x\"\n").contains("unknown field `conf`"));
        assert!(
            err("[[explicit]]\nname = \"a\"\npath = \"/a\"\nuuid = \"x\"\n")
                .contains("unknown field `uuid`")
        );
        assert!(err("[[explicit]]\nname = \"a\"\n").contains("missing field `path`"));
        assert!(
            err("[[explicit]]\nname = \"a\"\npath = \"/a\"\neid = \"nope\"\n")
                .contains("`nope` is not a UUID")
        );
    }

    #[test]
    fn problems_display() {
        assert_eq!(
            Problem::new("lxc", "web", "broken").to_string(),
            "lxc `web`: broken"
        );
        assert_eq!(
            Problem::new("dir", "", "cannot list").to_string(),
            "dir: cannot list"
        );
    }
}
