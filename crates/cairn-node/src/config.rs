//! Node configuration (TOML). Unknown keys are refused with their name; `validate` names the
//! field at fault and the fix.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// One storage node's configuration.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id, unique in the cluster, never reused.
    pub node_id: u64,
    /// gRPC listen address. Port 0 picks a free port (tests).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Address other nodes and clients use to reach this node (defaults to `listen`).
    #[serde(default)]
    pub advertise: Option<String>,
    /// Where the chunk store and the raft catalog live.
    pub data_dir: PathBuf,
    /// The metadata raft voters of the cluster (3 or 5), the same list in every node's
    /// config. Empty: this node alone. A node whose id is not listed is a storage-only node
    /// that waits to be added (`cairn cluster add-node`).
    #[serde(default)]
    pub voters: Vec<Voter>,
    /// Copies of every chunk (capped by the number of storage nodes). Read by the node that
    /// forms the cluster; later changes go through the cluster, not the config.
    #[serde(default = "default_rf")]
    pub replication_factor: u32,
    /// How many distinct zones each chunk's copies span: `"maximum"` (default: as many as
    /// there are copies) or a number of zones. With zones of unequal size the maximum spread
    /// fills the small zone's nodes first (`cairn cluster status` shows the usable capacity
    /// and warns); e.g. `2` keeps copies in two zones and otherwise follows the weights.
    /// Read by the node that forms the cluster, like `replication_factor`.
    #[serde(default, deserialize_with = "zone_redundancy")]
    pub zone_redundancy: cairn_core::placement::ZoneRedundancy,
    /// Copies a chunk upload needs before it is acknowledged: `"all"` (default) — every owner
    /// that is up, and never fewer than a majority of the replication factor; or a number.
    /// Owners that were down get their copy from repair.
    #[serde(default)]
    pub write_quorum: WriteQuorum,
    /// The cluster secret: nodes carry it on every call to each other. Clients carry user or
    /// agent tokens (the secret also works, with every right). Unset, with no `token_file`
    /// and no `CAIRN_TOKEN` in the environment: calls without a token are not authenticated
    /// and have every right, which a node allows on a loopback listen address only, unless
    /// `insecure = true`.
    #[serde(default)]
    pub token: Option<String>,
    /// Allows a node without a cluster secret to listen on a non-loopback address (every
    /// caller that reaches it may do anything). For isolated test networks only.
    #[serde(default)]
    pub insecure: bool,
    /// A file holding the cluster token (first line), instead of `token`.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// How often (milliseconds) the node checks whether a repair pass is due (after an
    /// epoch change, or while copies are missing because an owner was down).
    #[serde(default = "default_repair_interval")]
    pub repair_interval_ms: u64,
    /// A node that does not answer the leader for this long (milliseconds) stops owning
    /// chunks until it answers again, and repair makes new copies elsewhere.
    #[serde(default = "default_down_after")]
    pub down_after_ms: u64,
    /// Raft log entries between catalog snapshots (a follower further behind than half of
    /// this gets the snapshot streamed instead of the log).
    #[serde(default = "default_snapshot_logs")]
    pub raft_snapshot_logs: u64,
    /// A queued job fails when no agent took it within this long (milliseconds); meanwhile
    /// it shows why it waits (its host offline, for instance).
    #[serde(default = "default_job_queue_timeout")]
    pub job_queue_timeout_ms: u64,
    /// A host whose agent has not registered for this long (milliseconds) is shown offline
    /// (its jobs wait; its environments stay its own until an operator moves them).
    #[serde(default = "default_host_offline_after")]
    pub host_offline_after_ms: u64,
    /// PEM certificate (chain) of this node: with `tls_key`, every gRPC listener speaks TLS
    /// and the voters' addresses must be `https://`.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s) that sign the other nodes' certificates (default: `tls_cert`,
    /// for a cluster sharing one self-signed certificate).
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// The gateway this node also runs (the REST adapter and its users): a table the
    /// `cairn` binary hands to `cairn_gateway::GatewayConfig`, which checks its keys.
    #[serde(default)]
    pub gateway: Option<toml::Table>,
    /// The first admin user token (`cairn init cluster` writes it): the node that forms the
    /// cluster stores this record in the catalog once, before it names the cluster, so the
    /// token works from the cluster's first moment and nobody has to use the cluster secret
    /// to create the first user. Only its BLAKE3 hash is here; revoking it (`cairn token
    /// revoke`) is final, because a named cluster never reads this again.
    #[serde(default)]
    pub first_admin: Option<FirstAdmin>,
    /// Serves Prometheus metrics at `http://ADDR/metrics` (`crate::metrics`): unset (the
    /// default), no metrics listener. The endpoint needs no credentials and shows counts and
    /// states only; bind it to loopback (`"127.0.0.1:9770"`) or a management network. Port 0
    /// picks a free port, written to `DATA/metrics.addr`.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
}

/// A user token's record known before the cluster exists (see [`NodeConfig::first_admin`]).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FirstAdmin {
    /// The user's name (`admin`).
    pub name: String,
    /// The token's id (the part after `cairn-user.`).
    pub id: String,
    /// Hex BLAKE3 of the whole token.
    pub hash: String,
}

impl FirstAdmin {
    /// The catalog record of the token, an admin user token created at `now_ms`.
    pub fn record(&self, now_ms: i64) -> cairn_core::job::TokenRecord {
        cairn_core::job::TokenRecord {
            id: self.id.clone(),
            host: String::new(),
            hash: self.hash.clone(),
            created_ms: now_ms,
            name: self.name.clone(),
            role: Some(cairn_core::auth::Role::Admin),
        }
    }
}

/// The TLS material of a node, read from the files its config names.
pub struct TlsFiles {
    pub server: tonic::transport::ServerTlsConfig,
    pub client: tonic::transport::ClientTlsConfig,
    /// The CA certificate(s) (PEM) the node checks its peers with: what an enrolling agent
    /// receives.
    pub ca_pem: Vec<u8>,
}

fn default_repair_interval() -> u64 {
    10_000
}

fn default_job_queue_timeout() -> u64 {
    3_600_000
}

fn default_host_offline_after() -> u64 {
    60_000
}

fn default_down_after() -> u64 {
    300_000
}

fn default_snapshot_logs() -> u64 {
    cairn_meta::node::SNAPSHOT_EVERY_LOGS
}

/// One metadata voter as every node's config lists it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Voter {
    pub id: u64,
    /// gRPC address (`host:port` or `http://host:port`).
    pub addr: String,
    /// Failure domain; chunk copies go to distinct zones first.
    #[serde(default = "default_zone")]
    pub zone: String,
    /// Relative capacity; a node with weight 2 receives about twice the chunks.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

impl Voter {
    /// The voter's address as a URL.
    pub fn url(&self) -> String {
        as_url(&self.addr)
    }
}

/// How many copies an upload waits for (see [`NodeConfig::write_quorum`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WriteQuorum {
    #[default]
    All,
    Copies(u32),
}

impl WriteQuorum {
    /// Returns the least number of copies a chunk needs among its `owners` in force, `up` of
    /// which answered (stored a copy, or answered that they could not for a reason of their
    /// own). `All`: every owner that is up, and never fewer than a majority of the owners.
    pub fn needed(self, owners: usize, up: usize) -> usize {
        let majority = owners / 2 + 1;
        match self {
            WriteQuorum::All => up.max(majority).min(owners),
            WriteQuorum::Copies(n) => (n as usize).clamp(1, owners.max(1)),
        }
    }
}

impl<'de> Deserialize<'de> for WriteQuorum {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            Number(u32),
        }
        match Raw::deserialize(d)? {
            Raw::Word(w) if w == "all" => Ok(WriteQuorum::All),
            Raw::Number(n) if n >= 1 => Ok(WriteQuorum::Copies(n)),
            _ => Err(serde::de::Error::custom(
                "write_quorum must be \"all\" or a number of copies (1 or more)",
            )),
        }
    }
}

/// `"maximum"` or a number of zones (1 or more).
fn zone_redundancy<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<cairn_core::placement::ZoneRedundancy, D::Error> {
    use cairn_core::placement::ZoneRedundancy;
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Word(String),
        Number(u32),
    }
    match Raw::deserialize(d)? {
        Raw::Word(w) if w == "maximum" => Ok(ZoneRedundancy::Maximum),
        Raw::Number(n) if n >= 1 => Ok(ZoneRedundancy::AtLeast(n)),
        _ => Err(serde::de::Error::custom(
            "zone_redundancy must be \"maximum\" or a number of zones (1 or more)",
        )),
    }
}

fn default_rf() -> u32 {
    cairn_core::placement::DEFAULT_RF
}

fn default_zone() -> String {
    "default".to_string()
}

fn default_weight() -> u32 {
    1
}

/// Turns `host:port` into `http://host:port`; URLs stay as they are.
pub fn as_url(a: &str) -> String {
    if a.starts_with("http://") || a.starts_with("https://") {
        a.to_string()
    } else {
        format!("http://{a}")
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7700))
}

/// A configuration that cannot be used, with the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

impl NodeConfig {
    /// A node with every optional setting at its default: alone unless `voters` are set.
    pub fn local(node_id: u64, listen: SocketAddr, data_dir: impl Into<PathBuf>) -> NodeConfig {
        NodeConfig {
            node_id,
            listen,
            advertise: None,
            data_dir: data_dir.into(),
            voters: Vec::new(),
            replication_factor: default_rf(),
            zone_redundancy: Default::default(),
            write_quorum: WriteQuorum::All,
            token: None,
            token_file: None,
            insecure: false,
            repair_interval_ms: default_repair_interval(),
            down_after_ms: default_down_after(),
            raft_snapshot_logs: default_snapshot_logs(),
            job_queue_timeout_ms: default_job_queue_timeout(),
            host_offline_after_ms: default_host_offline_after(),
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            gateway: None,
            first_admin: None,
            metrics_listen: None,
        }
    }

    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg: NodeConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id == 0 {
            return Err(ConfigError::Invalid {
                key: "node_id",
                message: "must be 1 or more (0 is reserved)".into(),
            });
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                key: "data_dir",
                message: "must name a directory, e.g. data_dir = \"/var/lib/cairn\"".into(),
            });
        }
        if self.replication_factor == 0 {
            return Err(ConfigError::Invalid {
                key: "replication_factor",
                message: "must be 1 or more (3 keeps data through two lost nodes)".into(),
            });
        }
        let mut ids = std::collections::BTreeSet::new();
        for v in &self.voters {
            if v.id == 0 || !ids.insert(v.id) {
                return Err(ConfigError::Invalid {
                    key: "voters",
                    message: format!(
                        "voter id {} is 0 or listed twice; give every voter its own id",
                        v.id
                    ),
                });
            }
            if v.addr.trim().is_empty() {
                return Err(ConfigError::Invalid {
                    key: "voters",
                    message: format!("voter {} has no addr, e.g. addr = \"10.0.0.1:7700\"", v.id),
                });
            }
            if v.weight == 0 {
                return Err(ConfigError::Invalid {
                    key: "voters",
                    message: format!("voter {} has weight 0; use 1 or more", v.id),
                });
            }
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Err(ConfigError::Invalid {
                    key: "tls_key",
                    message: "tls_cert is set: name the PEM file of its private key too".into(),
                })
            }
            (None, Some(_)) => {
                return Err(ConfigError::Invalid {
                    key: "tls_cert",
                    message: "tls_key is set: name the PEM certificate file too".into(),
                })
            }
            (Some(_), Some(_)) => {
                if let Some(v) = self.voters.iter().find(|v| !v.addr.starts_with("https://")) {
                    return Err(ConfigError::Invalid {
                        key: "voters",
                        message: format!(
                            "TLS is on (tls_cert): voter {} must be reached at an https:// address, not {:?}",
                            v.id, v.addr
                        ),
                    });
                }
            }
            (None, None) => {}
        }
        if self.raft_snapshot_logs < 2 {
            return Err(ConfigError::Invalid {
                key: "raft_snapshot_logs",
                message: "must be 2 or more (default 2000)".into(),
            });
        }
        if self.down_after_ms < 500 {
            return Err(ConfigError::Invalid {
                key: "down_after_ms",
                message:
                    "must be 500 or more (milliseconds); a node is judged down only after this long"
                        .into(),
            });
        }
        if self.repair_interval_ms < 10 {
            return Err(ConfigError::Invalid {
                key: "repair_interval_ms",
                message: "must be 10 or more (milliseconds)".into(),
            });
        }
        if let Some(a) = &self.first_admin {
            let probe = format!("{}{}.x", cairn_core::job::USER_TOKEN_PREFIX, a.id);
            let hex = a.hash.len() == 64 && a.hash.bytes().all(|b| b.is_ascii_hexdigit());
            if cairn_core::job::token_id(&probe) != Some(a.id.as_str()) || !hex || a.name.is_empty()
            {
                return Err(ConfigError::Invalid {
                    key: "first_admin",
                    message: "needs name, id (letters, digits, '-') and hash (64 hex digits), as `cairn init cluster` writes them".into(),
                });
            }
        }
        if self.token.is_some() && self.token_file.is_some() {
            return Err(ConfigError::Invalid {
                key: "token",
                message: "set either token or token_file, not both".into(),
            });
        }
        Ok(())
    }

    /// Refuses to serve without a cluster secret on a non-loopback address (anyone reaching
    /// it would have every right), unless `insecure` says so.
    pub fn check_exposure(&self, has_secret: bool) -> Result<(), ConfigError> {
        if has_secret || self.insecure || self.listen.ip().is_loopback() {
            return Ok(());
        }
        Err(ConfigError::Invalid {
            key: "token",
            message: format!(
                "refusing to listen on {} without a cluster secret (anyone who reaches it could do anything); set token, token_file or CAIRN_TOKEN, listen on 127.0.0.1, or set insecure = true",
                self.listen
            ),
        })
    }

    /// The voters in force: the configured list, or this node alone.
    pub fn voters_or_self(&self, url: &str) -> Vec<Voter> {
        if self.voters.is_empty() {
            vec![Voter {
                id: self.node_id,
                addr: url.to_string(),
                zone: default_zone(),
                weight: 1,
            }]
        } else {
            self.voters.clone()
        }
    }

    /// Returns the cluster token: `token`, else the first line of `token_file`, else
    /// `CAIRN_TOKEN` from the environment, by the rule of `cairn_core::secret` (a blank
    /// `token` or `token_file` is an error).
    pub fn resolve_token(&self) -> Result<Option<String>, ConfigError> {
        use cairn_core::secret::{self, SecretError};
        secret::resolve(
            self.token.as_deref(),
            self.token_file.as_deref(),
            std::env::var("CAIRN_TOKEN").ok(),
        )
        .map_err(|e| match e {
            SecretError::Read { path, source } => ConfigError::Read { path, source },
            e @ SecretError::BlankInline => ConfigError::Invalid {
                key: "token",
                message: e.to_string(),
            },
            e => ConfigError::Invalid {
                key: "token_file",
                message: e.to_string(),
            },
        })
    }

    /// The address peers and clients should use, as a URL (`https://` with TLS).
    pub fn advertise_url(&self, bound: SocketAddr) -> String {
        let scheme = if self.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        match &self.advertise {
            Some(a) if a.contains("://") => a.clone(),
            Some(a) => format!("{scheme}://{a}"),
            None => format!("{scheme}://{bound}"),
        }
    }

    /// The cluster secrets this node accepts besides the one it sends: the further lines of
    /// `token_file`, during a rotation (`cairn_core::secret::also_accepted`).
    pub fn also_accepted_tokens(&self) -> Result<Vec<String>, ConfigError> {
        if self.token.is_some() {
            return Ok(Vec::new());
        }
        cairn_core::secret::also_accepted(self.token_file.as_deref()).map_err(|e| match e {
            cairn_core::secret::SecretError::Read { path, source } => {
                ConfigError::Read { path, source }
            }
            e => ConfigError::Invalid {
                key: "token_file",
                message: e.to_string(),
            },
        })
    }

    /// Reads the TLS files, when TLS is configured.
    pub fn tls(&self) -> Result<Option<TlsFiles>, ConfigError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|source| ConfigError::Read {
                path: p.clone(),
                source,
            })
        };
        let (cert_pem, key_pem) = (read(cert)?, read(key)?);
        let ca_pem = match &self.tls_ca {
            Some(ca) => read(ca)?,
            None => cert_pem.clone(),
        };
        let identity = tonic::transport::Identity::from_pem(cert_pem, key_pem);
        Ok(Some(TlsFiles {
            server: tonic::transport::ServerTlsConfig::new().identity(identity),
            client: tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem.clone())),
            ca_pem,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let text = "node_id = 1\ndata_dir = \"x\"\nlisten_addr = \"y\"";
        let err = toml::from_str::<NodeConfig>(text).unwrap_err();
        // The error points at the unknown key (its span), whatever its wording.
        let span = err.span().expect("the error locates the key");
        assert_eq!(&text[span], "listen_addr", "{err}");
    }

    #[test]
    fn voters_and_quorum_parse_and_validate() {
        let c: NodeConfig = toml::from_str(
            "node_id = 2\ndata_dir = \"/d\"\nwrite_quorum = 2\n\
             [[voters]]\nid = 1\naddr = \"127.0.0.1:7700\"\nzone = \"a\"\n\
             [[voters]]\nid = 2\naddr = \"http://127.0.0.1:7701\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.voters[0].url(), "http://127.0.0.1:7700");
        assert_eq!(c.voters[1].zone, "default");
        assert_eq!(c.write_quorum, WriteQuorum::Copies(2));
        assert_eq!(c.replication_factor, 3);
        let text = "node_id = 1\ndata_dir = \"/d\"\nwrite_quorum = \"most\"";
        let bad = toml::from_str::<NodeConfig>(text).unwrap_err();
        let span = bad.span().expect("the error locates the value");
        assert_eq!(&text[span], "\"most\"", "{bad}");
        let dup: NodeConfig = toml::from_str(
            "node_id = 1\ndata_dir = \"/d\"\n[[voters]]\nid = 1\naddr = \"a:1\"\n[[voters]]\nid = 1\naddr = \"b:1\"",
        )
        .unwrap();
        assert!(dup.validate().unwrap_err().to_string().contains("voters"));
    }

    /// The example configs in `cluster-config/` parse and validate.
    #[test]
    fn the_shipped_node_configs_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cluster-config");
        for n in 1..=3 {
            let text = std::fs::read_to_string(dir.join(format!("node{n}.toml"))).unwrap();
            let c: NodeConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("node{n}: {e}"));
            c.validate().unwrap();
            assert_eq!(c.node_id, n);
        }
    }

    #[test]
    fn zone_redundancy_is_maximum_or_a_number_of_zones() {
        use cairn_core::placement::ZoneRedundancy;
        let parse = |v: &str| {
            toml::from_str::<NodeConfig>(&format!(
                "node_id = 1\ndata_dir = \"/d\"\nzone_redundancy = {v}"
            ))
        };
        assert_eq!(
            parse("2").unwrap().zone_redundancy,
            ZoneRedundancy::AtLeast(2)
        );
        assert_eq!(
            parse("\"maximum\"").unwrap().zone_redundancy,
            ZoneRedundancy::Maximum
        );
        let unset: NodeConfig = toml::from_str("node_id = 1\ndata_dir = \"/d\"").unwrap();
        assert_eq!(unset.zone_redundancy, ZoneRedundancy::Maximum);
        for bad in ["0", "\"most\""] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn write_quorum_all_means_every_owner_that_is_up_and_at_least_a_majority() {
        // Every owner answered: every one of them must hold a copy.
        assert_eq!(WriteQuorum::All.needed(3, 3), 3);
        assert_eq!(WriteQuorum::All.needed(5, 5), 5);
        assert_eq!(WriteQuorum::All.needed(1, 1), 1);
        // One owner down: the others, which are still a majority.
        assert_eq!(WriteQuorum::All.needed(3, 2), 2);
        // Too many down: a majority is still needed (so the write fails).
        assert_eq!(WriteQuorum::All.needed(3, 1), 2);
        assert_eq!(WriteQuorum::All.needed(5, 2), 3);
        // A number is that many copies, whoever is up.
        assert_eq!(WriteQuorum::Copies(3).needed(3, 1), 3);
        assert_eq!(WriteQuorum::Copies(9).needed(2, 2), 2);
        assert_eq!(WriteQuorum::Copies(1).needed(3, 3), 1);
    }

    #[test]
    fn defaults_and_validation() {
        let c: NodeConfig = toml::from_str("node_id = 1\ndata_dir = \"/d\"").unwrap();
        assert_eq!(c.listen.port(), 7700);
        c.validate().unwrap();
        let z: NodeConfig = toml::from_str("node_id = 0\ndata_dir = \"/d\"").unwrap();
        assert!(z.validate().unwrap_err().to_string().contains("node_id"));
    }

    #[test]
    fn an_exposed_node_needs_a_secret_unless_insecure() {
        let at = |listen: &str, extra: &str| -> NodeConfig {
            toml::from_str(&format!(
                "node_id = 1\ndata_dir = \"/d\"\nlisten = \"{listen}\"\n{extra}"
            ))
            .unwrap()
        };
        assert!(at("127.0.0.1:7700", "").check_exposure(false).is_ok());
        assert!(at("[::1]:7700", "").check_exposure(false).is_ok());
        let open = at("0.0.0.0:7700", "");
        let err = open.check_exposure(false).unwrap_err().to_string();
        assert!(
            err.contains("insecure = true") && err.contains("0.0.0.0:7700"),
            "{err}"
        );
        assert!(open.check_exposure(true).is_ok());
        assert!(at("10.0.0.5:7700", "insecure = true")
            .check_exposure(false)
            .is_ok());
    }
}
