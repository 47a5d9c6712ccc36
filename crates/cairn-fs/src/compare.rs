//! Comparing two trees: everything a backup and restore must preserve.
//!
//! [`diff_trees`] lists the differences between a source tree and its copy; [`require_same`]
//! turns them into an error. `cairn demo` checks its restore with it, and the tests use it
//! (through `testing`). It never panics: what it cannot read is reported as a difference.
//! It is written independently of the walker and reader of this crate, so that a bug there
//! does not hide itself.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::show;

/// What [`diff_trees`] compares besides names, kinds, content, modes, times, links, device
/// numbers, extended attributes and sparse layout.
#[derive(Clone, Copy, Debug, Default)]
pub struct DiffOptions {
    /// Compares owner and group.
    pub owners: bool,
    /// Compares access times (reading a tree changes them, so this is usually off).
    pub atime: bool,
}

/// Every object below a root, by relative path, `lstat`ed.
fn scan(root: &Path, diffs: &mut Vec<String>, side: &str) -> BTreeMap<Vec<u8>, Metadata> {
    let mut out = BTreeMap::new();
    let mut todo: Vec<(PathBuf, Vec<u8>)> = vec![(root.to_path_buf(), Vec::new())];
    while let Some((abs, rel)) = todo.pop() {
        let md = match fs::symlink_metadata(&abs) {
            Ok(md) => md,
            Err(e) => {
                diffs.push(format!("{side}: cannot stat {}: {e}", show(&rel)));
                continue;
            }
        };
        if md.is_dir() {
            match fs::read_dir(&abs) {
                Ok(rd) => {
                    for d in rd {
                        match d {
                            Ok(d) => {
                                let name = d.file_name().into_vec();
                                todo.push((d.path(), cairn_core::path::join(&rel, &name)));
                            }
                            Err(e) => {
                                diffs.push(format!("{side}: cannot list {}: {e}", show(&rel)))
                            }
                        }
                    }
                }
                Err(e) => diffs.push(format!("{side}: cannot list {}: {e}", show(&rel))),
            }
        }
        out.insert(rel, md);
    }
    out
}

fn kind(md: &Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = md.file_type();
    if t.is_file() {
        "file"
    } else if t.is_dir() {
        "directory"
    } else if t.is_symlink() {
        "symlink"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else {
        "unknown"
    }
}

/// The hole map of a file, probed with `SEEK_DATA`/`SEEK_HOLE` (no shortcuts).
fn hole_map(path: &Path) -> io::Result<Vec<(u64, u64)>> {
    let f = File::open(path)?;
    let size = f.metadata()?.len();
    let fd = f.as_raw_fd();
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        // SAFETY: lseek only reads its integer arguments; `fd` is borrowed from `f`.
        let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
        let data = if data < 0 {
            size
        } else {
            (data as u64).min(size)
        };
        if data > pos {
            out.push((pos, data - pos));
        }
        if data >= size {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data as libc::off_t, libc::SEEK_HOLE) };
        if hole < 0 || hole as u64 <= data {
            break;
        }
        pos = hole as u64;
    }
    Ok(out)
}

fn same_content(a: &Path, b: &Path) -> io::Result<bool> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// For each regular file, the smallest name of its inode within the tree.
fn link_groups(tree: &BTreeMap<Vec<u8>, Metadata>) -> HashMap<Vec<u8>, Vec<u8>> {
    let mut first: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    for (rel, md) in tree.iter().filter(|(_, md)| md.is_file()) {
        first
            .entry((md.dev(), md.ino()))
            .or_insert_with(|| rel.clone());
    }
    tree.iter()
        .filter(|(_, md)| md.is_file())
        .filter_map(|(rel, md)| Some((rel.clone(), first.get(&(md.dev(), md.ino()))?.clone())))
        .collect()
}

fn ns(sec: i64, nsec: i64) -> i64 {
    sec * 1_000_000_000 + nsec
}

/// Compares the trees at `a` (the source) and `b` (the copy) and returns their differences
/// in human-readable form; an empty list means identical.
///
/// Compared: the set of names, kinds, file content, permission bits (setuid, setgid and
/// sticky included), owner and group (with `opts.owners`), modification times in
/// nanoseconds (access times with `opts.atime`) of every object including symlinks and the
/// roots, symlink targets, device numbers, extended attributes, hardlink structure (which
/// names share an inode), and sparse layout: the same hole map, or no more blocks allocated
/// than the source plus a little slack.
pub fn diff_trees(a: &Path, b: &Path, opts: DiffOptions) -> Vec<String> {
    let mut diffs = Vec::new();
    let ta = scan(a, &mut diffs, "source");
    let tb = scan(b, &mut diffs, "copy");
    let (ga, gb) = (link_groups(&ta), link_groups(&tb));
    let names: BTreeSet<&Vec<u8>> = ta.keys().chain(tb.keys()).collect();
    for rel in names {
        let shown = show(rel);
        let (ma, mb) = match (ta.get(rel), tb.get(rel)) {
            (Some(x), Some(y)) => (x, y),
            (Some(_), None) => {
                diffs.push(format!("{shown}: missing from the copy"));
                continue;
            }
            _ => {
                diffs.push(format!("{shown}: only in the copy"));
                continue;
            }
        };
        let mut d = |what: String| diffs.push(format!("{shown}: {what}"));
        if kind(ma) != kind(mb) {
            d(format!(
                "{} in the source, {} in the copy",
                kind(ma),
                kind(mb)
            ));
            continue;
        }
        let pa = a.join(std::ffi::OsStr::from_bytes(rel));
        let pb = b.join(std::ffi::OsStr::from_bytes(rel));
        if !ma.file_type().is_symlink() && ma.mode() & 0o7777 != mb.mode() & 0o7777 {
            d(format!(
                "mode {:o} vs {:o}",
                ma.mode() & 0o7777,
                mb.mode() & 0o7777
            ));
        }
        if opts.owners && (ma.uid(), ma.gid()) != (mb.uid(), mb.gid()) {
            d(format!(
                "owner {}:{} vs {}:{}",
                ma.uid(),
                ma.gid(),
                mb.uid(),
                mb.gid()
            ));
        }
        let (mta, mtb) = (
            ns(ma.mtime(), ma.mtime_nsec()),
            ns(mb.mtime(), mb.mtime_nsec()),
        );
        if mta != mtb {
            d(format!("mtime {mta} ns vs {mtb} ns"));
        }
        if opts.atime {
            let (ata, atb) = (
                ns(ma.atime(), ma.atime_nsec()),
                ns(mb.atime(), mb.atime_nsec()),
            );
            if ata != atb {
                d(format!("atime {ata} ns vs {atb} ns"));
            }
        }
        if ma.file_type().is_symlink() {
            match (fs::read_link(&pa), fs::read_link(&pb)) {
                (Ok(x), Ok(y)) if x == y => {}
                (x, y) => d(format!("symlink target {x:?} vs {y:?}")),
            }
        }
        if kind(ma).ends_with("device") && ma.rdev() != mb.rdev() {
            d(format!(
                "device number {:#x} vs {:#x}",
                ma.rdev(),
                mb.rdev()
            ));
        }
        match (crate::read_xattrs(&pa), crate::read_xattrs(&pb)) {
            (Ok(x), Ok(y)) if x == y => {}
            (Ok(x), Ok(y)) => {
                let names = |v: &[(Vec<u8>, Vec<u8>)]| {
                    v.iter()
                        .map(|(n, val)| format!("{}={}", show(n), val.len()))
                        .collect::<Vec<_>>()
                        .join(",")
                };
                d(format!("xattrs [{}] vs [{}]", names(&x), names(&y)));
            }
            (x, y) => d(format!("xattrs unreadable: {:?} / {:?}", x.err(), y.err())),
        }
        if ma.is_file() {
            if ma.len() != mb.len() {
                d(format!("size {} vs {}", ma.len(), mb.len()));
            } else {
                match same_content(&pa, &pb) {
                    Ok(true) => {}
                    Ok(false) => d("content differs".into()),
                    Err(e) => d(format!("cannot compare content: {e}")),
                }
            }
            if ga.get(rel) != gb.get(rel) {
                d(format!(
                    "hardlinked with {:?} in the source, with {:?} in the copy",
                    ga.get(rel).map(|r| show(r)),
                    gb.get(rel).map(|r| show(r))
                ));
            }
            match (hole_map(&pa), hole_map(&pb)) {
                (Ok(x), Ok(y)) if x == y => {}
                (Ok(x), Ok(y)) => {
                    let slack = 512 + ma.blocks() / 16;
                    if mb.blocks() > ma.blocks() + slack {
                        d(format!(
                            "sparse layout: holes {x:?} vs {y:?}, {} vs {} blocks allocated",
                            ma.blocks(),
                            mb.blocks()
                        ));
                    }
                }
                (x, y) => d(format!(
                    "hole map unreadable: {:?} / {:?}",
                    x.err(),
                    y.err()
                )),
            }
        }
    }
    diffs
}

/// The trees differ: the differences, in [`diff_trees`]'s form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreesDiffer {
    /// Every difference found (at least one).
    pub diffs: Vec<String>,
}

impl std::fmt::Display for TreesDiffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const SHOWN: usize = 20;
        write!(
            f,
            "the copy differs from the source in {} place(s)",
            self.diffs.len()
        )?;
        for d in self.diffs.iter().take(SHOWN) {
            write!(f, "\n  differs: {d}")?;
        }
        if self.diffs.len() > SHOWN {
            write!(f, "\n  … and {} more", self.diffs.len() - SHOWN)?;
        }
        Ok(())
    }
}

impl std::error::Error for TreesDiffer {}

/// `Ok` when the copy at `b` is identical to the source at `a` as [`diff_trees`] compares
/// them; otherwise the differences.
pub fn require_same(a: &Path, b: &Path, opts: DiffOptions) -> Result<(), TreesDiffer> {
    let diffs = diff_trees(a, b, opts);
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(TreesDiffer { diffs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_trees_pass_and_different_ones_say_where() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        for d in [&a, &b] {
            fs::create_dir(d).unwrap();
            fs::write(d.join("f"), b"same").unwrap();
        }
        let same = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000);
        for p in [a.join("f"), b.join("f"), a.clone(), b.clone()] {
            fs::File::options()
                .write(p.is_file())
                .read(true)
                .open(&p)
                .unwrap()
                .set_modified(same)
                .unwrap();
        }
        require_same(&a, &b, DiffOptions::default()).unwrap();
        fs::write(b.join("extra"), b"x").unwrap();
        fs::File::open(&b).unwrap().set_modified(same).unwrap();
        let err = require_same(&a, &b, DiffOptions::default()).unwrap_err();
        assert_eq!(err.diffs, vec!["extra: only in the copy".to_string()]);
        assert!(err.to_string().contains("differs: extra: only in the copy"));
    }

    #[test]
    fn an_unreadable_source_is_a_difference_not_a_panic() {
        let t = tempfile::tempdir().unwrap();
        let err =
            require_same(&t.path().join("none"), t.path(), DiffOptions::default()).unwrap_err();
        assert!(err.diffs[0].contains("cannot stat"), "{:?}", err.diffs);
    }
}
