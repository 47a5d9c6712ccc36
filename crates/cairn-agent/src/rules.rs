//! Which paths a backup takes: `--include` paths and `--exclude` globs.
//!
//! * An exclude glob without a `/` matches any single name in the tree (`*.log`, `cache`);
//!   with a `/` it matches the path from the backup root (`var/cache/*`, `/tmp` — a leading `/`
//!   anchors at the root). An excluded directory is not descended into.
//! * Include paths (relative to the root) restrict the backup to those subtrees; their parent
//!   directories are kept so the tree stays restorable.

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::error::AgentError;

/// Compiled selection rules.
pub struct Rules {
    name_globs: GlobSet,
    path_globs: GlobSet,
    includes: Vec<Vec<u8>>,
}

impl Rules {
    pub fn new(excludes: &[String], includes: &[String]) -> Result<Rules, AgentError> {
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        for ex in excludes {
            let bad = |e: globset::Error| AgentError::Invalid(format!("bad exclude {ex:?}: {e}"));
            let trimmed = ex.trim_end_matches('/');
            if trimmed.is_empty() {
                return Err(AgentError::Invalid(format!("bad exclude {ex:?}: empty")));
            }
            if trimmed.contains('/') {
                let p = trimmed.trim_start_matches('/');
                paths.add(
                    globset::GlobBuilder::new(p)
                        .literal_separator(true)
                        .backslash_escape(true)
                        .build()
                        .map_err(bad)?,
                );
            } else {
                names.add(Glob::new(trimmed).map_err(bad)?);
            }
        }
        let mut inc = Vec::new();
        for i in includes {
            let p = i.trim_matches('/').as_bytes().to_vec();
            cairn_core::path::validate(&p)
                .map_err(|e| AgentError::Invalid(format!("bad include {i:?}: {e}")))?;
            inc.push(p);
        }
        Ok(Rules {
            name_globs: names
                .build()
                .map_err(|e| AgentError::Invalid(e.to_string()))?,
            path_globs: paths
                .build()
                .map_err(|e| AgentError::Invalid(e.to_string()))?,
            includes: inc,
        })
    }

    /// True when `rel` (relative path; never the root) is left out of the backup.
    pub fn excluded(&self, rel: &[u8], is_dir: bool) -> bool {
        if rel.is_empty() {
            return false;
        }
        if !self.includes.is_empty() {
            let inside = self
                .includes
                .iter()
                .any(|i| cairn_core::path::is_within(rel, i));
            let ancestor = is_dir
                && self
                    .includes
                    .iter()
                    .any(|i| cairn_core::path::is_within(i, rel));
            if !inside && !ancestor {
                return true;
            }
        }
        let name = rel.rsplit(|b| *b == b'/').next().unwrap_or(rel);
        let name_s = String::from_utf8_lossy(name);
        if self.name_globs.is_match(name_s.as_ref()) {
            return true;
        }
        let rel_s = String::from_utf8_lossy(rel);
        self.path_globs.is_match(rel_s.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_and_path_globs() {
        let r = Rules::new(&["*.log".into(), "/var/cache".into(), "tmp/*".into()], &[]).unwrap();
        assert!(r.excluded(b"a/b/x.log", false));
        assert!(r.excluded(b"var/cache", true));
        assert!(!r.excluded(b"x/var/cache", true));
        assert!(r.excluded(b"tmp/a", false));
        assert!(!r.excluded(b"tmp/a/b", false));
        assert!(!r.excluded(b"etc/passwd", false));
        assert!(!r.excluded(b"", true));
    }

    #[test]
    fn includes_keep_ancestors() {
        let r = Rules::new(&[], &["etc/ssh".into()]).unwrap();
        assert!(!r.excluded(b"etc", true));
        assert!(!r.excluded(b"etc/ssh", true));
        assert!(!r.excluded(b"etc/ssh/sshd_config", false));
        assert!(r.excluded(b"etc/passwd", false));
        assert!(r.excluded(b"var", true));
        assert!(Rules::new(&[], &["../x".into()]).is_err());
        assert!(Rules::new(&["[".into()], &[]).is_err());
    }
}
