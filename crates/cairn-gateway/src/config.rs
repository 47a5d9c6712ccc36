//! Gateway configuration (TOML), shared by the gateway inside a node (the node config's
//! `[gateway]` table) and the standalone `cairn gateway --config FILE`.
//!
//! ```toml
//! # Standalone only: the nodes to call (any one answers; the rest are learned from it)
//! # and the gateway's own credential: a user token (`cairn token create gateway --role
//! # admin`) with at least the rights of its users, for whom it calls the cluster. Inside a
//! # node both default to the node's own (the cluster secret).
//! cluster = ["http://10.0.0.1:7700", "http://10.0.0.2:7700"]
//! token_file = "/etc/cairn/gateway.token"
//! ca_file = "/etc/cairn/ca.crt"   # the CA of the nodes' certificates, for https:// nodes
//!
//! users_file = "/etc/cairn/users.toml"   # managed with `cairn user add|passwd|remove`
//!
//! [auth]                        # optional: password checks, REST and XML together
//! max_concurrent_hashes = 2     # argon2 verifications at once (~19 MiB each)
//! max_waiting_hashes = 32       # logins waiting for one; more are refused as busy at once
//! failed_login_delay_ms = 1000  # a failed login is answered this late, holding no slot
//!
//! [rest]
//! listen = "0.0.0.0:8080"
//! public_url = "https://backup.example.net:8080"   # optional: the base of every `uri`
//! tls_cert = "/etc/cairn/rest.crt"                  # optional: HTTPS
//! tls_key = "/etc/cairn/rest.key"
//! ```
//! Unknown keys are refused with their name.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// What a gateway serves and whom it calls.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Node URLs (standalone gateway); empty inside a node.
    #[serde(default)]
    pub cluster: Vec<String>,
    /// The gateway's credential (standalone): a user token with at least its users' rights
    /// (or the cluster secret); inside a node the node's own is used.
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding that token (first line), instead of `token`.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The PEM file of the CA that signed the nodes' certificates (standalone, `https://`
    /// nodes); inside a node the node's own CA is used.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The users file (`cairn user add` writes it). Relative paths are relative to the
    /// config file's directory.
    pub users_file: PathBuf,
    /// The Sun Cloud API REST adapter; absent: not served.
    #[serde(default)]
    pub rest: Option<RestConfig>,
    /// The Virtuozzo Agent XML API (`backupm`) adapter; absent: not served.
    #[serde(default)]
    pub xml: Option<crate::xml::server::XmlConfig>,
    /// How password checks are throttled (both adapters share the limits).
    #[serde(default)]
    pub auth: crate::users::AuthConfig,
}

/// The REST listener.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RestConfig {
    /// Listen address (port 0: any free port, printed at start-up).
    #[serde(default = "default_rest_listen")]
    pub listen: SocketAddr,
    /// The scheme, host and port clients reach this listener at (behind a proxy, say).
    /// Unset: taken from each request's `Host` header.
    #[serde(default)]
    pub public_url: Option<String>,
    /// PEM certificate chain: with `tls_key`, the listener speaks HTTPS only.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Largest request body accepted (bytes); larger ones are answered 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
}

fn default_rest_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_max_body() -> usize {
    64 * 1024
}

impl Default for RestConfig {
    fn default() -> Self {
        RestConfig {
            listen: default_rest_listen(),
            public_url: None,
            tls_cert: None,
            tls_key: None,
            max_body_bytes: default_max_body(),
        }
    }
}

impl GatewayConfig {
    /// Reads a standalone gateway's config file.
    pub fn load(path: &Path) -> anyhow::Result<GatewayConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let cfg: GatewayConfig = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message()))?;
        Ok(cfg.relative_to(path.parent().unwrap_or(Path::new("."))))
    }

    /// Parses the `[gateway]` table of a node config.
    pub fn from_table(table: toml::Table, base: &Path) -> anyhow::Result<GatewayConfig> {
        let cfg: GatewayConfig = table
            .try_into()
            .map_err(|e: toml::de::Error| anyhow::anyhow!("[gateway]: {}", e.message()))?;
        Ok(cfg.relative_to(base))
    }

    fn relative_to(mut self, base: &Path) -> GatewayConfig {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.users_file);
        if let Some(t) = &mut self.token_file {
            fix(t);
        }
        if let Some(c) = &mut self.ca_file {
            fix(c);
        }
        if let Some(r) = &mut self.rest {
            if let Some(c) = &mut r.tls_cert {
                fix(c);
            }
            if let Some(k) = &mut r.tls_key {
                fix(k);
            }
        }
        self
    }

    /// Checks what can be checked without the network; names the field at fault.
    pub fn validate(&self, standalone: bool) -> anyhow::Result<()> {
        if standalone && self.cluster.is_empty() {
            anyhow::bail!("cluster: list at least one node URL, e.g. [\"http://10.0.0.1:7700\"]");
        }
        if self.rest.is_none() && self.xml.is_none() {
            anyhow::bail!("nothing to serve: add a [rest] table (listen = \"127.0.0.1:8080\") or an [xml] table (listen = \"127.0.0.1:4433\")");
        }
        if let Some(x) = &self.xml {
            if x.max_packet_bytes < 4096 {
                anyhow::bail!("xml.max_packet_bytes: at least 4096");
            }
            if x.max_queued_packets < 4 {
                anyhow::bail!("xml.max_queued_packets: at least 4 (a call's progress packets and its answer); 128 is the default");
            }
            if x.max_queued_bytes < 4096 {
                anyhow::bail!(
                    "xml.max_queued_bytes: at least 4096; 262144 (256 KiB) is the default"
                );
            }
        }
        self.auth.validate().map_err(anyhow::Error::msg)?;
        if let Some(r) = &self.rest {
            if r.tls_cert.is_some() != r.tls_key.is_some() {
                anyhow::bail!("rest: tls_cert and tls_key go together");
            }
            if let Some(u) = &r.public_url {
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    anyhow::bail!("rest.public_url {u:?}: give the scheme, e.g. https://backup.example.net:8080");
                }
            }
            if r.max_body_bytes < 1024 {
                anyhow::bail!("rest.max_body_bytes: at least 1024");
            }
        }
        Ok(())
    }

    /// The credentials a standalone gateway calls the cluster with: [`Self::cluster_token`]
    /// and `ca_file`.
    pub fn cluster_credentials(&self) -> anyhow::Result<cairn_api::Credentials> {
        let creds = cairn_api::Credentials::token(self.cluster_token()?.as_deref());
        Ok(match &self.ca_file {
            Some(path) => creds
                .with_ca_file(path)
                .map_err(|e| anyhow::anyhow!("ca_file: {e}"))?,
            None => creds,
        })
    }

    /// The cluster token: `token`, else the first line of `token_file` (the rule of
    /// `cairn_core::secret`: a blank file is an error naming it).
    pub fn cluster_token(&self) -> anyhow::Result<Option<String>> {
        // No environment fallback here: the gateway's token is its configuration's.
        cairn_core::secret::resolve(self.token.as_deref(), self.token_file.as_deref(), None)
            .map_err(|e| anyhow::anyhow!("gateway token: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example_and_refuses_unknown_keys() {
        let text = r#"
cluster = ["http://10.0.0.1:7700"]
users_file = "users.toml"
[rest]
listen = "0.0.0.0:8080"
public_url = "https://backup.example.net:8080"
"#;
        let cfg: GatewayConfig = toml::from_str(text).unwrap();
        let cfg = cfg.relative_to(Path::new("/etc/cairn"));
        assert_eq!(cfg.users_file, PathBuf::from("/etc/cairn/users.toml"));
        assert_eq!(cfg.rest.as_ref().unwrap().max_body_bytes, 64 * 1024);
        cfg.validate(true).unwrap();
        let err = toml::from_str::<GatewayConfig>("users_file = \"u\"\nbogus = 1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus"), "{err}");
        let no_rest: GatewayConfig = toml::from_str("users_file = \"u\"").unwrap();
        assert!(no_rest.validate(false).is_err());
    }

    #[test]
    fn limits_have_defaults_and_are_checked_by_name() {
        let cfg: GatewayConfig = toml::from_str("users_file = \"u\"\n[xml]\n[auth]\n").unwrap();
        assert_eq!(cfg.auth, crate::users::AuthConfig::default());
        assert_eq!(cfg.auth.max_concurrent_hashes, 2);
        assert_eq!(cfg.auth.max_waiting_hashes, 32);
        assert_eq!(cfg.auth.failed_login_delay_ms, 1000);
        let x = cfg.xml.as_ref().unwrap();
        assert_eq!(
            (x.max_queued_packets, x.max_queued_bytes),
            (128, 256 * 1024)
        );
        cfg.validate(false).unwrap();
        // No [auth] table at all: the same defaults.
        let bare: GatewayConfig = toml::from_str("users_file = \"u\"\n[xml]\n").unwrap();
        assert_eq!(bare.auth, cfg.auth);

        for (text, field) in [
            (
                "[auth]\nmax_concurrent_hashes = 0",
                "auth.max_concurrent_hashes",
            ),
            (
                "[auth]\nmax_concurrent_hashes = 65",
                "auth.max_concurrent_hashes",
            ),
            (
                "[auth]\nfailed_login_delay_ms = 60001",
                "auth.failed_login_delay_ms",
            ),
            ("[xml]\nmax_queued_packets = 3", "xml.max_queued_packets"),
            ("[xml]\nmax_queued_bytes = 100", "xml.max_queued_bytes"),
        ] {
            let text = format!("users_file = \"u\"\n[rest]\n{text}\n");
            let cfg: GatewayConfig = toml::from_str(&text).unwrap();
            let err = cfg.validate(false).unwrap_err().to_string();
            assert!(err.starts_with(field), "{text}: {err}");
        }
        for (text, key) in [
            ("[auth]\nmax_hashes = 2", "max_hashes"),
            ("[xml]\nmax_queue = 2", "max_queue"),
        ] {
            let err = toml::from_str::<GatewayConfig>(&format!("users_file = \"u\"\n{text}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn the_example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cluster-config/gateway.toml");
        let cfg = GatewayConfig::load(&path).unwrap();
        cfg.validate(true).unwrap();
        assert_eq!(cfg.cluster.len(), 3);
        assert!(cfg.users_file.ends_with("cluster-config/users.toml"));
    }
}
