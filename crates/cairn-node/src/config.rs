//! Node configuration (TOML). Unknown keys are refused with their name; `validate` names the
//! field at fault and the fix.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// One storage node's configuration.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
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
        Ok(())
    }

    /// The address peers and clients should use, as a URL.
    pub fn advertise_url(&self, bound: SocketAddr) -> String {
        match &self.advertise {
            Some(a) if a.starts_with("http") => a.clone(),
            Some(a) => format!("http://{a}"),
            None => format!("http://{bound}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let err =
            toml::from_str::<NodeConfig>("node_id = 1\ndata_dir = \"x\"\nlisten_addr = \"y\"")
                .unwrap_err();
        assert!(err.message().contains("listen_addr"), "{}", err.message());
    }

    #[test]
    fn defaults_and_validation() {
        let c: NodeConfig = toml::from_str("node_id = 1\ndata_dir = \"/d\"").unwrap();
        assert_eq!(c.listen.port(), 7700);
        c.validate().unwrap();
        let z: NodeConfig = toml::from_str("node_id = 0\ndata_dir = \"/d\"").unwrap();
        assert!(z.validate().unwrap_err().to_string().contains("node_id"));
    }
}
