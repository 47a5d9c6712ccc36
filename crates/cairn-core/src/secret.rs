//! The one rule for resolving a secret (a token) from an inline value, a file or the
//! environment. The node, the agent daemon and the gateway all resolve their token with
//! [`resolve`], so a blank file means the same thing everywhere.
//!
//! The rule, in order:
//! 1. an inline value (`token = "…"`) wins; a blank one is an error;
//! 2. else a file (`token_file`): its first line, trimmed; an unreadable file or a blank
//!    first line is an error naming the file, never "no token";
//! 3. else the environment value (`CAIRN_TOKEN`), trimmed; unset or blank means no token.
//!
//! The caller reads the environment and passes its value in, so the rule stays pure.
//!
//! # Rotation: the further lines of a storage node's token file
//! A storage node also *accepts* every further non-blank line of its `token_file`
//! ([`also_accepted`]), and never sends them. That is how the cluster secret is rotated with
//! the cluster serving: every node first accepts the new secret while sending the old one
//! (`OLD` then `NEW`), then sends the new one while still accepting the old (`NEW` then
//! `OLD`), then knows only the new one — a rolling restart per step, so at every moment each
//! node accepts what every other node sends (`docs/operations.md`, "Rotate the cluster secret
//! and certificates"). Clients (agents, gateways, the command line) send the first line and
//! have no use for the rest.

use std::path::{Path, PathBuf};

/// Why a secret could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The inline value is empty or only whitespace.
    #[error("the inline token is blank; set a token or remove the setting")]
    BlankInline,
    /// The secret file could not be read.
    #[error("cannot read token file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What reading it returned.
        source: std::io::Error,
    },
    /// The secret file's first line is empty or only whitespace.
    #[error("token file {} is empty; put the token on its first line", path.display())]
    BlankFile {
        /// The file.
        path: PathBuf,
    },
}

/// Resolves a secret by the rule of this module: `inline`, else the first line of `file`,
/// else `env` (the environment variable's value, read by the caller).
pub fn resolve(
    inline: Option<&str>,
    file: Option<&Path>,
    env: Option<String>,
) -> Result<Option<String>, SecretError> {
    if let Some(t) = inline {
        let t = t.trim();
        if t.is_empty() {
            return Err(SecretError::BlankInline);
        }
        return Ok(Some(t.to_string()));
    }
    if let Some(p) = file {
        let text = std::fs::read_to_string(p).map_err(|source| SecretError::Read {
            path: p.to_path_buf(),
            source,
        })?;
        return from_file_text(&text, p).map(Some);
    }
    Ok(env.map(|t| t.trim().to_string()).filter(|t| !t.is_empty()))
}

/// The secret in a file's text: its first line, trimmed; blank is an error naming `path`.
pub fn from_file_text(text: &str, path: &Path) -> Result<String, SecretError> {
    let t = text.lines().next().unwrap_or("").trim();
    if t.is_empty() {
        return Err(SecretError::BlankFile {
            path: path.to_path_buf(),
        });
    }
    Ok(t.to_string())
}

/// The secrets a node accepts besides the one it sends: every further non-blank line of its
/// token file, trimmed (see the module documentation). An inline token or none: none.
pub fn also_accepted(file: Option<&Path>) -> Result<Vec<String>, SecretError> {
    let Some(p) = file else {
        return Ok(Vec::new());
    };
    let text = std::fs::read_to_string(p).map_err(|source| SecretError::Read {
        path: p.to_path_buf(),
        source,
    })?;
    Ok(text
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("token");
        std::fs::write(&p, text).unwrap();
        (d, p)
    }

    #[test]
    fn inline_wins_over_file_and_environment() {
        let (_d, p) = file("from-file\n");
        let got = resolve(Some("inline"), Some(&p), Some("env".into())).unwrap();
        assert_eq!(got.as_deref(), Some("inline"));
    }

    #[test]
    fn a_blank_inline_value_is_an_error() {
        assert!(matches!(
            resolve(Some("  "), None, Some("env".into())),
            Err(SecretError::BlankInline)
        ));
    }

    #[test]
    fn a_file_gives_its_first_line_trimmed_and_wins_over_the_environment() {
        let (_d, p) = file("  secret \nsecond line\n");
        let got = resolve(None, Some(&p), Some("env".into())).unwrap();
        assert_eq!(got.as_deref(), Some("secret"));
    }

    #[test]
    fn a_blank_file_is_an_error_naming_the_file_never_no_token() {
        for text in ["", "\n", "   \nsecond\n", "\t"] {
            let (_d, p) = file(text);
            let err = resolve(None, Some(&p), Some("env".into())).unwrap_err();
            assert!(matches!(&err, SecretError::BlankFile { path } if *path == p));
            assert!(err.to_string().contains(&p.display().to_string()), "{err}");
        }
    }

    #[test]
    fn a_missing_file_is_an_error_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("absent");
        let err = resolve(None, Some(&p), None).unwrap_err();
        assert!(matches!(&err, SecretError::Read { path, .. } if *path == p));
        assert!(err.to_string().contains("absent"), "{err}");
    }

    #[test]
    fn further_lines_are_accepted_and_never_the_one_sent() {
        let (_d, p) = file("old\n\n  new  \n");
        assert_eq!(
            resolve(None, Some(&p), None).unwrap().as_deref(),
            Some("old")
        );
        assert_eq!(also_accepted(Some(&p)).unwrap(), vec!["new".to_string()]);
        let (_d, one) = file("only\n");
        assert!(also_accepted(Some(&one)).unwrap().is_empty());
        assert!(also_accepted(None).unwrap().is_empty());
    }

    #[test]
    fn the_environment_is_last_and_blank_there_means_no_token() {
        assert_eq!(
            resolve(None, None, Some(" t ".into())).unwrap().as_deref(),
            Some("t")
        );
        assert_eq!(resolve(None, None, Some("  ".into())).unwrap(), None);
        assert_eq!(resolve(None, None, None).unwrap(), None);
    }
}
