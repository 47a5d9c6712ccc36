//! The tree walk: depth-first, directory entries sorted by raw name bytes, one file system.
//!
//! The walk yields objects in exactly the order manifests list them
//! ([`cairn_core::path::walk_cmp`]), so a new walk can be merged against the parent backup's
//! manifest as two sorted streams. It keeps one sorted list of names per directory on the
//! current path, so memory grows with depth × directory size, never with the tree.
//!
//! Symlinks are never followed (every object is `lstat`ed); only the root itself is resolved,
//! so a root given as a symlink to a directory is walked. Directories on another file system
//! than the root (mount points) are reported as empty directories and not entered.
//! Objects that vanish between the directory read and the `lstat` are skipped silently: they
//! were deleted while the walk ran. Everything else that fails becomes a [`WalkError`] item
//! and the walk goes on.

use std::ffi::OsStr;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use cairn_core::path;

use crate::error::show;

/// One object found by the walk.
#[derive(Debug)]
pub struct WalkItem {
    /// Absolute (or root-relative, as given) path to open the object with.
    pub abs: PathBuf,
    /// Path relative to the walk's root, raw bytes; the root itself is empty.
    pub rel: Vec<u8>,
    /// The object's `lstat` metadata.
    pub md: Metadata,
}

/// An object or directory the walk could not read; the walk continues after it.
#[derive(Debug, thiserror::Error)]
#[error("{}: {error}", show(rel))]
pub struct WalkError {
    /// Path relative to the walk's root.
    pub rel: Vec<u8>,
    pub error: io::Error,
}

type Exclude = Box<dyn Fn(&[u8], bool) -> bool + Send>;

struct Frame {
    abs: PathBuf,
    rel: Vec<u8>,
    names: std::vec::IntoIter<Vec<u8>>,
}

/// Iterates over a tree in walk order, yielding `Result<WalkItem, WalkError>`.
pub struct Walker {
    root: PathBuf,
    root_dev: u64,
    exclude: Exclude,
    started: bool,
    stack: Vec<Frame>,
    /// The directory yielded last, to be read before the walk moves on.
    descend: Option<(PathBuf, Vec<u8>)>,
}

impl Walker {
    /// Prepares a walk of `root`. `exclude(rel, is_dir)` is asked about every object below
    /// the root; an excluded directory is neither yielded nor entered.
    pub fn new(root: &Path, exclude: impl Fn(&[u8], bool) -> bool + Send + 'static) -> Walker {
        Walker {
            root: root.to_path_buf(),
            root_dev: 0,
            exclude: Box::new(exclude),
            started: false,
            stack: Vec::new(),
            descend: None,
        }
    }

    fn start(&mut self) -> Result<WalkItem, WalkError> {
        let err = |error| WalkError {
            rel: Vec::new(),
            error,
        };
        let md = fs::metadata(&self.root).map_err(err)?;
        if !md.is_dir() {
            return Err(err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", self.root.display()),
            )));
        }
        self.root_dev = md.dev();
        self.descend = Some((self.root.clone(), Vec::new()));
        Ok(WalkItem {
            abs: self.root.clone(),
            rel: Vec::new(),
            md,
        })
    }
}

/// Reads a directory's names, sorted by raw bytes. A failure part-way returns the names read
/// so far together with the error.
fn read_names(dir: &Path) -> (Vec<Vec<u8>>, Option<io::Error>) {
    let mut names = Vec::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => return (names, Some(e)),
    };
    let mut error = None;
    for de in rd {
        match de {
            Ok(de) => names.push(de.file_name().into_vec()),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    names.sort_unstable();
    (names, error)
}

impl Iterator for Walker {
    type Item = Result<WalkItem, WalkError>;

    fn next(&mut self) -> Option<Self::Item> {
        if !self.started {
            self.started = true;
            return Some(self.start());
        }
        if let Some((abs, rel)) = self.descend.take() {
            let (names, error) = read_names(&abs);
            let err_rel = error.is_some().then(|| rel.clone());
            self.stack.push(Frame {
                abs,
                rel,
                names: names.into_iter(),
            });
            if let (Some(rel), Some(error)) = (err_rel, error) {
                return Some(Err(WalkError { rel, error }));
            }
        }
        loop {
            let frame = self.stack.last_mut()?;
            let Some(name) = frame.names.next() else {
                self.stack.pop();
                continue;
            };
            let abs = frame.abs.join(OsStr::from_bytes(&name));
            let rel = path::join(&frame.rel, &name);
            let md = match fs::symlink_metadata(&abs) {
                Ok(md) => md,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => return Some(Err(WalkError { rel, error })),
            };
            let is_dir = md.is_dir();
            if (self.exclude)(&rel, is_dir) {
                continue;
            }
            if is_dir && md.dev() == self.root_dev {
                self.descend = Some((abs.clone(), rel.clone()));
            }
            return Some(Ok(WalkItem { abs, rel, md }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rels(root: &Path, exclude: impl Fn(&[u8], bool) -> bool + Send + 'static) -> Vec<String> {
        Walker::new(root, exclude)
            .map(|r| show(&r.expect("walk item").rel))
            .collect()
    }

    #[test]
    fn walks_depth_first_in_byte_order() {
        let t = tempfile::tempdir().unwrap();
        for d in ["a/b", "a.c", "b"] {
            fs::create_dir_all(t.path().join(d)).unwrap();
        }
        fs::write(t.path().join("a/b/f"), b"x").unwrap();
        fs::write(t.path().join("a/Z"), b"x").unwrap();
        fs::write(t.path().join("a.c/g"), b"x").unwrap();
        let got = rels(t.path(), |_, _| false);
        assert_eq!(got, [".", "a", "a/Z", "a/b", "a/b/f", "a.c", "a.c/g", "b"]);
    }

    #[test]
    fn excluded_directories_are_not_entered() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("keep/skip/deep")).unwrap();
        fs::write(t.path().join("keep/skip/deep/f"), b"x").unwrap();
        fs::write(t.path().join("keep/f.log"), b"x").unwrap();
        fs::write(t.path().join("keep/f.txt"), b"x").unwrap();
        let got = rels(t.path(), |rel, is_dir| {
            (is_dir && rel.ends_with(b"skip")) || rel.ends_with(b".log")
        });
        assert_eq!(got, [".", "keep", "keep/f.txt"]);
    }

    #[test]
    fn symlinks_are_reported_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path(), t.path().join("link")).unwrap();
        let items: Vec<WalkItem> = Walker::new(t.path(), |_, _| false)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(items.len(), 2);
        assert!(items[1].md.file_type().is_symlink());
    }

    #[test]
    fn a_root_that_is_not_a_directory_is_an_error_item() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("f");
        fs::write(&f, b"x").unwrap();
        let items: Vec<_> = Walker::new(&f, |_, _| false).collect();
        assert_eq!(items.len(), 1);
        assert!(items[0].is_err());
        let missing: Vec<_> = Walker::new(&t.path().join("nope"), |_, _| false).collect();
        assert_eq!(missing.len(), 1);
        assert!(missing[0].is_err());
    }
}
