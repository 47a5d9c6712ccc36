//! Errors of this crate, phrased for the operator who ran the backup or restore.

use std::io;

/// An error reading or recreating a file-system object. Every message names the path.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// A manifest path that is malformed or would lead outside the restore target.
    #[error("refusing unsafe path {path}: {why}")]
    UnsafePath { path: String, why: String },
    /// A system call failed.
    #[error("{path}: cannot {action}: {source}")]
    Io {
        path: String,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    /// The restore target already holds files and `into_existing` was not chosen.
    #[error(
        "restore target {path} is not empty; restore into a new or empty directory, \
         or ask explicitly to restore into the existing tree"
    )]
    TargetNotEmpty { path: String },
    /// The restore target exists but is not a directory.
    #[error("restore target {path} exists and is not a directory")]
    TargetNotDir { path: String },
    /// Something is already in the way of an entry and may not be replaced.
    #[error("{path}: a {found} is already there; {hint}")]
    Exists {
        path: String,
        found: &'static str,
        hint: &'static str,
    },
    /// An entry whose fields do not make sense (for example a root entry that is a file).
    #[error("{path}: invalid entry: {why}")]
    Invalid { path: String, why: String },
}

impl FsError {
    pub(crate) fn io(path: impl Into<String>, action: &'static str, source: io::Error) -> Self {
        FsError::Io {
            path: path.into(),
            action,
            source,
        }
    }
}

/// Shows a raw relative path for messages: lossy UTF-8 with control characters escaped, and
/// `.` for the root.
pub fn show(path: &[u8]) -> String {
    if path.is_empty() {
        return ".".into();
    }
    let mut out = String::with_capacity(path.len());
    for c in String::from_utf8_lossy(path).chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_odd_names_on_one_line() {
        assert_eq!(show(b""), ".");
        assert_eq!(show(b"a/new\nline"), "a/new\\nline");
        assert_eq!(show(b"caf\xe9"), "caf\u{fffd}");
    }

    #[test]
    fn messages_name_the_path() {
        let e = FsError::io(
            "etc/passwd",
            "create the file",
            io::Error::other("disk full"),
        );
        assert_eq!(
            e.to_string(),
            "etc/passwd: cannot create the file: disk full"
        );
        let e = FsError::TargetNotEmpty {
            path: "/srv/out".into(),
        };
        assert!(e.to_string().contains("/srv/out"));
    }
}
