//! `cairn init cluster`: everything a new cluster needs before its first start, written into
//! one directory the operator copies out, so nobody writes TOML, invents a secret or makes
//! certificates by hand.
//!
//! # What is written (`OUT`)
//! | path | mode | what |
//! |---|---|---|
//! | `ca.pem` | 0644 | the cluster CA certificate; agents pin its SHA-256 (`ca.sha256`) |
//! | `ca.key` | 0600 | the CA's private key: keep it offline, it signs new node certificates |
//! | `ca.sha256` | 0644 | the CA fingerprint (`cairn agent enroll --ca-fingerprint`) |
//! | `admin.token` | 0600 | the first admin user token (`CAIRN_TOKEN=$(cat admin.token)`) |
//! | `node-<ID>/` | 0700 | copied to `ETC` (default `/etc/cairn`) on node `ID` |
//! | `node-<ID>/node.toml` | 0644 | the node's config, naming the files below under `ETC` |
//! | `node-<ID>/node.pem`, `node.key` | 0644, 0600 | its certificate (SANs: its address) and key |
//! | `node-<ID>/ca.pem` | 0644 | the CA, to check the other nodes |
//! | `node-<ID>/token` | 0600 | the cluster secret (32 random bytes, hex), `token_file` |
//!
//! # Invariants
//! - TLS is on: every voter is an `https://` address and every node has a certificate
//!   signed by the one CA whose SANs name the address the others dial.
//! - Secrets (keys, the cluster secret, the admin token) are created with mode 0600 and never
//!   printed; only hashes of tokens reach a config (`first_admin.hash`).
//! - The first admin token: the configs carry its id and BLAKE3 hash ([`FirstAdmin`]); the
//!   node that forms the cluster stores that record in the catalog before it names the
//!   cluster (`cairn-node`'s bootstrap), so the token works from the first moment, is
//!   authorized by the catalog like every user token (role admin, the one table), and can be
//!   revoked like any other. A token derived from the cluster secret would instead carry the
//!   secret's rights and could not be revoked without changing the secret.
//! - An existing non-empty `OUT` is refused unless `--force`: a second run must not silently
//!   replace the CA of a running cluster.
//!
//!
//! # `cairn init node`: a node added to a running cluster
//! Reads what `init cluster` wrote (`ca.pem`, `ca.key`, and one voter's `node-<ID>/` for the
//! voters' list, the replication factor and the cluster secret) and writes `node-<NEW>/`
//! beside the others, with the same files as a voter's. The new node's config lists the
//! voters but not itself, so it starts as a storage node waiting for `cairn cluster
//! add-node`; it has no `[first_admin]` (only the voter that forms the cluster reads it).
//! rcgen cannot read a certificate back without a parser we do not ship, so the CA is
//! rebuilt from its key with the same parameters ([`ca_params`]: the same subject and key,
//! hence the same issuer name and signature key); the new certificate is then checked
//! against the `ca.pem` on disk before anything is written, so a `ca.key` that does not
//! belong to `ca.pem` is refused, not written into a node that could never join.
//! A new node's id and address must differ from every voter's; an existing `node-<NEW>/`
//! is refused unless `--force`.
//!
//! [`FirstAdmin`]: cairn_node::config::FirstAdmin

use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// One node as `--node ID=HOST:PORT[,zone=Z][,weight=W]` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSpec {
    pub id: u64,
    /// A DNS name or an IP address (without brackets).
    pub host: String,
    pub port: u16,
    pub zone: String,
    pub weight: u32,
}

impl NodeSpec {
    /// `HOST:PORT` as a URL authority (IPv6 in brackets).
    pub fn authority(&self) -> String {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("[{}]:{}", self.host, self.port),
            _ => format!("{}:{}", self.host, self.port),
        }
    }

    /// The address other nodes and clients dial.
    pub fn url(&self) -> String {
        format!("https://{}", self.authority())
    }

    /// Where the node listens: its own IP, or every address when it is named by DNS.
    pub fn listen(&self) -> String {
        match self.host.parse::<IpAddr>() {
            Ok(_) => self.authority(),
            Err(_) => format!("0.0.0.0:{}", self.port),
        }
    }
}

/// Parses `ID=HOST:PORT[,zone=Z][,weight=W]`.
pub fn parse_node(s: &str) -> Result<NodeSpec, String> {
    let bad = |why: &str| format!("--node {s:?}: {why} (use ID=HOST:PORT[,zone=Z][,weight=W])");
    let (id, rest) = s.split_once('=').ok_or_else(|| bad("no ID="))?;
    let id: u64 = id
        .trim()
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| bad("the id must be a number of 1 or more"))?;
    let mut parts = rest.split(',');
    let addr = parts.next().unwrap_or_default().trim();
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("no :PORT"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| bad("the port must be 1-65535"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host_ok = !host.is_empty()
        && (host.parse::<IpAddr>().is_ok()
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
    if !host_ok {
        return Err(bad("the host must be an IP address or a DNS name"));
    }
    let mut spec = NodeSpec {
        id,
        host: host.to_string(),
        port,
        zone: "default".into(),
        weight: 1,
    };
    for part in parts {
        match part.split_once('=') {
            Some(("zone", z)) if !z.is_empty() => spec.zone = z.to_string(),
            Some(("weight", w)) => {
                spec.weight = w
                    .parse()
                    .ok()
                    .filter(|w| *w > 0)
                    .ok_or_else(|| bad("the weight must be 1 or more"))?
            }
            _ => return Err(bad(&format!("unknown option {part:?}"))),
        }
    }
    Ok(spec)
}

/// What `cairn init cluster` was asked for.
#[derive(Clone, Debug)]
pub struct ClusterPlan {
    pub nodes: Vec<NodeSpec>,
    pub rf: u32,
    /// Where the node's files live on the node (`/etc/cairn`).
    pub etc: PathBuf,
    /// The node's data directory (`/var/lib/cairn/node`).
    pub data_dir: PathBuf,
    /// The first admin's user name.
    pub admin: String,
}

/// One file to write, relative to the output directory.
pub struct File {
    pub path: PathBuf,
    pub contents: Vec<u8>,
    /// Written with mode 0600 (else 0644).
    pub secret: bool,
}

/// Everything `cairn init cluster` writes.
pub struct Bundle {
    pub files: Vec<File>,
    /// The CA certificate's SHA-256 (lowercase hex).
    pub ca_fingerprint: String,
}

/// Returns `n` bytes from the system's random source, as hex.
fn random_hex(n: usize) -> Result<String> {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
    Ok(hex::encode(buf))
}

/// The SHA-256 of a DER certificate, lowercase hex: what `--ca-fingerprint` compares.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, der))
}

/// A TOML string literal.
fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn q_path(p: &Path) -> String {
    q(&p.to_string_lossy())
}

/// Checks a plan: ids and addresses unique, RF possible.
pub fn check(plan: &ClusterPlan) -> Result<()> {
    if plan.nodes.is_empty() {
        bail!("name the cluster's nodes: --node 1=HOST:PORT --node 2=… (3 or 5 voters)");
    }
    let mut ids = std::collections::BTreeSet::new();
    let mut addrs = std::collections::BTreeSet::new();
    for n in &plan.nodes {
        if !ids.insert(n.id) {
            bail!("node id {} is given twice", n.id);
        }
        if !addrs.insert(n.authority()) {
            bail!("address {} is given twice", n.authority());
        }
    }
    if plan.rf == 0 {
        bail!("--rf must be 1 or more");
    }
    if !plan.etc.is_absolute() || !plan.data_dir.is_absolute() {
        bail!("--etc and --data-dir must be absolute paths (they are read on the nodes)");
    }
    let valid_name = !plan.admin.is_empty()
        && plan.admin.len() <= 64
        && plan
            .admin
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'));
    if !valid_name {
        bail!("--admin: 1-64 of letters, digits, '.', '_', '-' and '@'");
    }
    Ok(())
}

/// `path` for node `id`: `{id}` in it replaced by the id (several nodes on one machine, as
/// in tests: `--etc /srv/c/etc-{id}`).
pub fn for_node(path: &Path, id: u64) -> PathBuf {
    PathBuf::from(path.to_string_lossy().replace("{id}", &id.to_string()))
}

/// One node's config, naming its files under `plan.etc`.
pub fn node_config(plan: &ClusterPlan, me: &NodeSpec, admin_id: &str, admin_hash: &str) -> String {
    let etc = &for_node(&plan.etc, me.id);
    let mut s = format!(
        "# Node {id} of a cluster written by `cairn init cluster`. Copy this directory to\n\
         # {etc} on the node and start it: cairn node --config {cfg}\n\
         # The lowest-id voter forms the cluster on its first start; restarts rejoin it.\n",
        id = me.id,
        etc = etc.display(),
        cfg = etc.join("node.toml").display(),
    );
    s.push_str(&node_settings(
        me,
        etc,
        &for_node(&plan.data_dir, me.id),
        plan.rf,
    ));
    s.push_str(&format!(
        "\n# The first admin user token (its hash only): stored in the catalog when the cluster\n\
         # forms; `cairn token revoke --name {admin}` removes it for good.\n\
         [first_admin]\n\
         name = {admin_q}\n\
         id = {admin_id}\n\
         hash = {admin_hash}\n",
        admin = plan.admin,
        admin_q = q(&plan.admin),
        admin_id = q(admin_id),
        admin_hash = q(admin_hash),
    ));
    for v in &plan.nodes {
        s.push_str(&voter_table(v.id, &v.url(), &v.zone, v.weight));
    }
    s
}

/// The settings every node's config carries (identity, addresses, data, the secret's file,
/// TLS), naming its files under `etc`.
fn node_settings(me: &NodeSpec, etc: &Path, data: &Path, rf: u32) -> String {
    format!(
        "node_id = {id}\n\
         listen = {listen}\n\
         advertise = {url}\n\
         data_dir = {data}\n\
         replication_factor = {rf}\n\
         # The cluster secret nodes carry to each other (people and agents use their own tokens).\n\
         token_file = {token}\n\
         # TLS on the gRPC listener; the CA checks the other nodes.\n\
         tls_cert = {cert}\n\
         tls_key = {key}\n\
         tls_ca = {ca}\n\
         # Prometheus metrics at http://ADDR/metrics, without credentials: keep it on loopback.\n\
         # metrics_listen = \"127.0.0.1:9770\"\n",
        id = me.id,
        listen = q(&me.listen()),
        url = q(&me.url()),
        data = q_path(data),
        token = q_path(&etc.join("token")),
        cert = q_path(&etc.join("node.pem")),
        key = q_path(&etc.join("node.key")),
        ca = q_path(&etc.join("ca.pem")),
    )
}

/// One `[[voters]]` table.
fn voter_table(id: u64, addr: &str, zone: &str, weight: u32) -> String {
    format!(
        "\n[[voters]]\nid = {id}\naddr = {}\nzone = {}\nweight = {weight}\n",
        q(addr),
        q(zone)
    )
}

/// Makes the CA, the node certificates, the secrets and the configs (nothing is written).
pub fn generate(plan: &ClusterPlan) -> Result<Bundle> {
    use rcgen::KeyPair;
    check(plan)?;
    let ca_key = KeyPair::generate().context("cannot make the CA key")?;
    let ca_cert = ca_params()?
        .self_signed(&ca_key)
        .context("cannot make the CA")?;
    let ca_pem = ca_cert.pem();
    let ca_fingerprint = fingerprint(ca_cert.der());

    let secret = random_hex(32)?;
    let admin_id = random_hex(6)?;
    let admin_token = format!(
        "{}{admin_id}.{}",
        cairn_core::job::USER_TOKEN_PREFIX,
        random_hex(32)?
    );
    let admin_hash = cairn_core::job::token_hash(&admin_token);

    let mut files = vec![
        File {
            path: "ca.pem".into(),
            contents: ca_pem.clone().into_bytes(),
            secret: false,
        },
        File {
            path: "ca.key".into(),
            contents: ca_key.serialize_pem().into_bytes(),
            secret: true,
        },
        File {
            path: "ca.sha256".into(),
            contents: format!("{ca_fingerprint}\n").into_bytes(),
            secret: false,
        },
        File {
            path: "admin.token".into(),
            contents: format!("{admin_token}\n").into_bytes(),
            secret: true,
        },
    ];
    for n in &plan.nodes {
        let (chain, key) = node_certificate(n, &ca_cert, &ca_key, &ca_pem)?;
        files.extend(node_files(
            n,
            node_config(plan, n, &admin_id, &admin_hash),
            chain,
            key,
            &ca_pem,
            &secret,
        ));
    }
    Ok(Bundle {
        files,
        ca_fingerprint,
    })
}

/// The cluster CA's parameters: the same for `init cluster`, which signs with a new key, and
/// `init node`, which rebuilds the CA from `ca.key` to sign with it (same subject, same key:
/// the certificates it signs name and verify against the `ca.pem` on disk).
fn ca_params() -> Result<rcgen::CertificateParams> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyUsagePurpose};
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "Cairn cluster CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut ca);
    Ok(ca)
}

/// Sets the validity of a new certificate: from the start of last year for twenty years.
fn set_validity(p: &mut rcgen::CertificateParams) {
    let year = chrono::Datelike::year(&chrono::Utc::now());
    p.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    p.not_after = rcgen::date_time_ymd(year + 20, 1, 1);
}

/// Signs a certificate for node `n` (its SANs: its host) with the CA; returns the chain the
/// node presents (its certificate, then the CA, so that a client pinning the CA's
/// fingerprint finds it in the handshake) and the node's key, both PEM.
fn node_certificate(
    n: &NodeSpec,
    ca_cert: &rcgen::Certificate,
    ca_key: &rcgen::KeyPair,
    ca_pem: &str,
) -> Result<(String, String)> {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose};
    let key = KeyPair::generate().context("cannot make a node key")?;
    let mut p = CertificateParams::new(vec![n.host.clone()])
        .with_context(|| format!("node {}: {:?} is not a valid name", n.id, n.host))?;
    p.distinguished_name
        .push(DnType::CommonName, format!("cairn node {}", n.id));
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    set_validity(&mut p);
    let cert = p
        .signed_by(&key, ca_cert, ca_key)
        .with_context(|| format!("cannot sign node {}'s certificate", n.id))?;
    Ok((format!("{}{}", cert.pem(), ca_pem), key.serialize_pem()))
}

/// The files of one node's directory `node-<ID>/`.
fn node_files(
    n: &NodeSpec,
    config: String,
    chain: String,
    key: String,
    ca_pem: &str,
    secret: &str,
) -> Vec<File> {
    let dir = PathBuf::from(format!("node-{}", n.id));
    vec![
        File {
            path: dir.join("node.toml"),
            contents: config.into_bytes(),
            secret: false,
        },
        File {
            path: dir.join("node.pem"),
            contents: chain.into_bytes(),
            secret: false,
        },
        File {
            path: dir.join("node.key"),
            contents: key.into_bytes(),
            secret: true,
        },
        File {
            path: dir.join("ca.pem"),
            contents: ca_pem.as_bytes().to_vec(),
            secret: false,
        },
        File {
            path: dir.join("token"),
            contents: format!("{}\n", secret.trim()).into_bytes(),
            secret: true,
        },
    ]
}

/// What `cairn init node` was asked for.
#[derive(Clone, Debug)]
pub struct NodePlan {
    /// The directory `cairn init cluster --out` wrote.
    pub cluster_dir: PathBuf,
    pub node: NodeSpec,
    /// Where the node's files live on the node (`{id}`: its id).
    pub etc: PathBuf,
    /// The node's data directory (`{id}`: its id).
    pub data_dir: PathBuf,
}

/// What `init node` read of the running cluster from `init cluster`'s directory.
struct Existing {
    ca_pem: String,
    ca_key: String,
    voters: Vec<cairn_node::Voter>,
    rf: u32,
    secret: String,
}

fn read_existing(dir: &Path) -> Result<Existing> {
    let read = |p: PathBuf| {
        std::fs::read_to_string(&p).with_context(|| {
            format!(
                "cannot read {} (give --cluster-dir the directory `cairn init cluster --out` wrote)",
                p.display()
            )
        })
    };
    let ca_pem = read(dir.join("ca.pem"))?;
    let ca_key = read(dir.join("ca.key"))?;
    // Any voter's directory holds the voters' list and the secret; take the lowest id.
    let mut voter_dirs: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let id: u64 = name.strip_prefix("node-")?.parse().ok()?;
            Some((id, e.path()))
        })
        .filter(|(_, p)| p.join("node.toml").is_file() && p.join("token").is_file())
        .collect();
    voter_dirs.sort();
    let Some((_, voter)) = voter_dirs.into_iter().find(|(_, p)| {
        std::fs::read_to_string(p.join("node.toml"))
            .ok()
            .and_then(|t| toml::from_str::<cairn_node::NodeConfig>(&t).ok())
            .is_some_and(|c| c.voters.iter().any(|v| v.id == c.node_id))
    }) else {
        bail!(
            "{} holds no voter's node-<ID>/ (node.toml and token): give --cluster-dir the directory `cairn init cluster --out` wrote",
            dir.display()
        );
    };
    let cfg: cairn_node::NodeConfig = toml::from_str(&read(voter.join("node.toml"))?)
        .with_context(|| format!("{}", voter.join("node.toml").display()))?;
    let secret = read(voter.join("token"))?.trim().to_string();
    if secret.is_empty() {
        bail!("{} is empty", voter.join("token").display());
    }
    Ok(Existing {
        ca_pem,
        ca_key,
        voters: cfg.voters,
        rf: cfg.replication_factor,
        secret,
    })
}

/// The config of a node added to a running cluster: the voters' list, not itself.
fn added_node_config(plan: &NodePlan, voters: &[cairn_node::Voter], rf: u32) -> String {
    let me = &plan.node;
    let etc = &for_node(&plan.etc, me.id);
    let mut s = format!(
        "# Node {id}, added to a running cluster by `cairn init node`. Copy this directory to\n\
         # {etc} on the node, start it (cairn node --config {cfg}), then add it:\n\
         #   cairn cluster add-node {addr} --zone {zone} --weight {weight}\n\
         # It is not a voter: it stores chunks once added.\n",
        id = me.id,
        etc = etc.display(),
        cfg = etc.join("node.toml").display(),
        addr = me.authority(),
        zone = me.zone,
        weight = me.weight,
    );
    s.push_str(&node_settings(
        me,
        etc,
        &for_node(&plan.data_dir, me.id),
        rf,
    ));
    for v in voters {
        s.push_str(&voter_table(v.id, &v.addr, &v.zone, v.weight));
    }
    s
}

/// Makes the files of a node added to the cluster `init cluster` wrote into
/// `plan.cluster_dir` (nothing is written).
pub fn generate_node(plan: &NodePlan) -> Result<Vec<File>> {
    if !plan.etc.is_absolute() || !plan.data_dir.is_absolute() {
        bail!("--etc and --data-dir must be absolute paths (they are read on the node)");
    }
    let existing = read_existing(&plan.cluster_dir)?;
    let me = &plan.node;
    if let Some(v) = existing.voters.iter().find(|v| v.id == me.id) {
        bail!(
            "node id {} is voter {}'s; give the new node an id no node ever had",
            me.id,
            v.addr
        );
    }
    if let Some(v) = existing.voters.iter().find(|v| v.addr == me.url()) {
        bail!("{} is voter {}'s address", me.url(), v.id);
    }
    let ca_key = rcgen::KeyPair::from_pem(&existing.ca_key).context("ca.key is not a PEM key")?;
    let ca_cert = ca_params()?
        .self_signed(&ca_key)
        .context("cannot rebuild the CA from ca.key")?;
    let (chain, key) = node_certificate(me, &ca_cert, &ca_key, &existing.ca_pem)?;
    cairn_api::enroll::verify_chain(existing.ca_pem.as_bytes(), chain.as_bytes(), &me.host)
        .map_err(|e| {
            anyhow::anyhow!("the certificate signed with ca.key does not verify against ca.pem ({e}): are they from the same `cairn init cluster`?")
        })?;
    Ok(node_files(
        me,
        added_node_config(plan, &existing.voters, existing.rf),
        chain,
        key,
        &existing.ca_pem,
        &existing.secret,
    ))
}

/// Writes `files` (one node's directory) into `dir`, refusing an existing node directory
/// unless `force` (the rest of `dir` is `init cluster`'s and stays).
pub fn write_node(dir: &Path, id: u64, files: &[File], force: bool) -> Result<()> {
    let node_dir = dir.join(format!("node-{id}"));
    if node_dir.exists() && !force {
        bail!(
            "{} exists; refusing to replace node {id}'s key and certificate (pass --force)",
            node_dir.display()
        );
    }
    write(&node_dir, &[], true)?;
    std::fs::set_permissions(&node_dir, std::fs::Permissions::from_mode(0o700))?;
    write(dir, files, true)
}

/// Writes `files` under `out`: directories 0700, secrets 0600, the rest 0644. Refuses a
/// non-empty `out` unless `force`.
pub fn write(out: &Path, files: &[File], force: bool) -> Result<()> {
    if let Ok(mut entries) = std::fs::read_dir(out) {
        if entries.next().is_some() && !force {
            bail!(
                "{} is not empty; refusing to overwrite it (it may hold a running cluster's CA): choose another --out or pass --force",
                out.display()
            );
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for f in files {
        let path = out.join(&f.path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            if dir != out {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            }
        }
        let mode = if f.secret { 0o600 } else { 0o644 };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        // An existing file keeps its old mode on open: set it.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(&f.contents)?;
        file.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> ClusterPlan {
        ClusterPlan {
            nodes: [
                "1=10.0.0.1:7700,zone=a",
                "2=node2.example:7700,zone=b",
                "3=[::1]:7702",
            ]
            .iter()
            .map(|s| parse_node(s).unwrap())
            .collect(),
            rf: 3,
            etc: "/etc/cairn".into(),
            data_dir: "/var/lib/cairn/node".into(),
            admin: "admin".into(),
        }
    }

    #[test]
    fn node_specs_parse_and_refuse_with_the_fix() {
        let n = parse_node("2=node2.example:7701,zone=b,weight=3").unwrap();
        assert_eq!(
            (n.id, n.host.as_str(), n.port, n.zone.as_str(), n.weight),
            (2, "node2.example", 7701, "b", 3)
        );
        assert_eq!(n.url(), "https://node2.example:7701");
        assert_eq!(n.listen(), "0.0.0.0:7701");
        let v6 = parse_node("3=[::1]:7702").unwrap();
        assert_eq!(v6.url(), "https://[::1]:7702");
        assert_eq!(v6.listen(), "[::1]:7702");
        for bad in [
            "x=a:1",
            "0=a:1",
            "1=a",
            "1=a:0",
            "1=a b:7",
            "1=a:7,colour=red",
            "1=:7",
        ] {
            let e = parse_node(bad).unwrap_err();
            assert!(e.contains("ID=HOST:PORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn paths_may_name_the_node() {
        let mut p = plan();
        p.etc = "/srv/c/etc-{id}".into();
        p.data_dir = "/srv/c/data-{id}".into();
        let text = node_config(&p, &p.nodes[1], "abc", &"0".repeat(64));
        let cfg: cairn_node::NodeConfig = toml::from_str(&text).unwrap();
        assert_eq!(cfg.data_dir, Path::new("/srv/c/data-2"));
        assert_eq!(
            cfg.tls_key.as_deref(),
            Some(Path::new("/srv/c/etc-2/node.key"))
        );
    }

    #[test]
    fn plans_refuse_duplicates_and_relative_paths() {
        let mut p = plan();
        p.nodes.push(p.nodes[0].clone());
        assert!(check(&p).is_err());
        let mut p = plan();
        p.etc = "etc".into();
        assert!(check(&p).is_err());
        let mut p = plan();
        p.nodes.clear();
        assert!(check(&p).is_err());
        assert!(check(&plan()).is_ok());
    }

    #[test]
    fn every_node_config_loads_with_tls_the_voters_and_the_first_admin() {
        let p = plan();
        let bundle = generate(&p).unwrap();
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &bundle.files, false).unwrap();
        let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
        let token = token.trim();
        for n in &p.nodes {
            let cfg =
                cairn_node::NodeConfig::load(&dir.path().join(format!("node-{}/node.toml", n.id)))
                    .unwrap();
            assert_eq!(cfg.node_id, n.id);
            assert_eq!(cfg.voters.len(), 3);
            assert!(cfg.voters.iter().all(|v| v.addr.starts_with("https://")));
            assert_eq!(cfg.voters[0].zone, "a");
            assert_eq!(cfg.replication_factor, 3);
            assert_eq!(
                cfg.tls_cert.as_deref(),
                Some(Path::new("/etc/cairn/node.pem"))
            );
            assert_eq!(
                cfg.token_file.as_deref(),
                Some(Path::new("/etc/cairn/token"))
            );
            assert_eq!(cfg.data_dir, Path::new("/var/lib/cairn/node"));
            assert_eq!(cfg.advertise_url("0.0.0.0:1".parse().unwrap()), n.url());
            let admin = cfg.first_admin.unwrap();
            assert_eq!(cairn_core::job::token_id(token), Some(admin.id.as_str()));
            assert_eq!(cairn_core::job::token_hash(token), admin.hash);
            assert!(
                !std::fs::read_to_string(dir.path().join(format!("node-{}/node.toml", n.id)))
                    .unwrap()
                    .contains(token)
            );
        }
        // The secret is the same on every node, 32 bytes.
        let secrets: std::collections::BTreeSet<String> = p
            .nodes
            .iter()
            .map(|n| {
                std::fs::read_to_string(dir.path().join(format!("node-{}/token", n.id))).unwrap()
            })
            .collect();
        assert_eq!(secrets.len(), 1);
        assert_eq!(secrets.iter().next().unwrap().trim().len(), 64);
    }

    #[test]
    fn secrets_are_0600_and_a_second_run_needs_force() {
        let bundle = generate(&plan()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &bundle.files, false).unwrap();
        for (f, mode) in [
            ("ca.key", 0o600),
            ("admin.token", 0o600),
            ("node-1/node.key", 0o600),
            ("node-1/token", 0o600),
            ("ca.pem", 0o644),
            ("node-1/node.toml", 0o644),
        ] {
            let m = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(m & 0o777, mode, "{f}");
        }
        assert!(write(dir.path(), &bundle.files, false).is_err());
        write(dir.path(), &bundle.files, true).unwrap();
        let fp = std::fs::read_to_string(dir.path().join("ca.sha256")).unwrap();
        assert_eq!(fp.trim(), bundle.ca_fingerprint);
        assert_eq!(bundle.ca_fingerprint.len(), 64);
    }

    #[test]
    fn node_certificates_chain_to_the_ca_and_name_their_address() {
        use tokio_rustls_check::check_chain;
        let bundle = generate(&plan()).unwrap();
        let get = |p: &str| {
            bundle
                .files
                .iter()
                .find(|f| f.path == Path::new(p))
                .map(|f| f.contents.clone())
                .unwrap()
        };
        check_chain(&get("ca.pem"), &get("node-1/node.pem"), "10.0.0.1").unwrap();
        check_chain(&get("ca.pem"), &get("node-2/node.pem"), "node2.example").unwrap();
        assert!(check_chain(&get("ca.pem"), &get("node-2/node.pem"), "node3.example").is_err());
        let other = generate(&plan()).unwrap();
        let other_ca = other
            .files
            .iter()
            .find(|f| f.path == Path::new("ca.pem"))
            .unwrap();
        assert!(check_chain(&other_ca.contents, &get("node-1/node.pem"), "10.0.0.1").is_err());
    }

    #[test]
    fn an_added_node_gets_a_certificate_of_the_same_ca_and_the_voters_list() {
        let p = plan();
        let bundle = generate(&p).unwrap();
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &bundle.files, false).unwrap();
        let add = NodePlan {
            cluster_dir: dir.path().to_path_buf(),
            node: parse_node("4=10.0.0.4:7700,zone=d").unwrap(),
            etc: "/etc/cairn".into(),
            data_dir: "/var/lib/cairn/node".into(),
        };
        let files = generate_node(&add).unwrap();
        write_node(dir.path(), 4, &files, false).unwrap();
        let d = dir.path().join("node-4");
        let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
        let chain = std::fs::read(d.join("node.pem")).unwrap();
        tokio_rustls_check::check_chain(&ca, &chain, "10.0.0.4").unwrap();
        assert!(tokio_rustls_check::check_chain(&ca, &chain, "10.0.0.1").is_err());
        let cfg = cairn_node::NodeConfig::load(&d.join("node.toml")).unwrap();
        assert_eq!(cfg.node_id, 4);
        assert_eq!(cfg.voters.len(), 3);
        assert!(!cfg.voters.iter().any(|v| v.id == 4), "not a voter");
        assert!(cfg.first_admin.is_none());
        assert_eq!(
            cfg.advertise_url("0.0.0.0:1".parse().unwrap()),
            "https://10.0.0.4:7700"
        );
        assert_eq!(
            std::fs::read(d.join("token")).unwrap(),
            std::fs::read(dir.path().join("node-1/token")).unwrap()
        );
        for (f, mode) in [("node.key", 0o600), ("token", 0o600), ("node.pem", 0o644)] {
            let m = std::fs::metadata(d.join(f)).unwrap().permissions().mode();
            assert_eq!(m & 0o777, mode, "{f}");
        }
        // Again: refused without --force; a voter's id or address is refused.
        assert!(write_node(dir.path(), 4, &files, false).is_err());
        for bad in ["2=10.0.0.9:7700", "9=10.0.0.1:7700"] {
            let mut a = add.clone();
            a.node = parse_node(bad).unwrap();
            assert!(generate_node(&a).is_err(), "{bad}");
        }
        // A ca.key of another cluster does not sign for this ca.pem.
        let other = generate(&plan()).unwrap();
        let key = other
            .files
            .iter()
            .find(|f| f.path == Path::new("ca.key"))
            .unwrap();
        std::fs::write(dir.path().join("ca.key"), &key.contents).unwrap();
        assert!(generate_node(&add).is_err());
    }

    /// Checks a node certificate against a CA with rustls' own verifier.
    mod tokio_rustls_check {
        pub fn check_chain(ca_pem: &[u8], chain_pem: &[u8], name: &str) -> Result<(), String> {
            cairn_api::enroll::verify_chain(ca_pem, chain_pem, name)
        }
    }
}
