//! Environment trees: seeded changes between backups, and a content hash of a tree.
//!
//! The hash covers, for every entry below the root in path order: its relative path, its
//! type, its permission bits (`mode & 0o7777`), a file's content and a symlink's target.
//! Owners and times are left out (a restore as root keeps them, but the harness judges
//! content). [`entries`] gives the same per entry, to name what differs.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::Rng;
use crate::noise;

/// Every entry below `root` as (relative path, hash of type+mode+content/target), sorted.
pub fn entries(root: &Path) -> std::io::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    walk(root, root, &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        let md = std::fs::symlink_metadata(&p)?;
        let rel = p
            .strip_prefix(root)
            .unwrap_or(&p)
            .to_string_lossy()
            .into_owned();
        let mut h = blake3::Hasher::new();
        let ft = md.file_type();
        h.update(format!("mode {:o}\n", md.mode() & 0o7777).as_bytes());
        if ft.is_symlink() {
            h.update(b"symlink\n");
            h.update(std::fs::read_link(&p)?.to_string_lossy().as_bytes());
        } else if ft.is_dir() {
            h.update(b"dir\n");
        } else if ft.is_file() {
            h.update(b"file\n");
            h.update(&std::fs::read(&p)?);
        } else {
            h.update(b"other\n");
        }
        out.push((rel, h.finalize().to_hex().to_string()));
        if ft.is_dir() {
            walk(root, &p, out)?;
        }
    }
    Ok(())
}

/// The content hash of a tree (see the module note).
pub fn hash(entries: &[(String, String)]) -> String {
    let mut h = blake3::Hasher::new();
    for (p, e) in entries {
        h.update(p.as_bytes());
        h.update(b"\0");
        h.update(e.as_bytes());
        h.update(b"\n");
    }
    h.finalize().to_hex().to_string()
}

/// The paths whose entries differ between two listings (first few).
pub fn differences(a: &[(String, String)], b: &[(String, String)]) -> Vec<String> {
    let ma: std::collections::BTreeMap<_, _> = a.iter().cloned().collect();
    let mb: std::collections::BTreeMap<_, _> = b.iter().cloned().collect();
    let mut d = Vec::new();
    for (p, h) in &ma {
        match mb.get(p) {
            None => d.push(format!("missing {p}")),
            Some(h2) if h2 != h => d.push(format!("differs {p}")),
            _ => {}
        }
    }
    for p in mb.keys() {
        if !ma.contains_key(p) {
            d.push(format!("extra {p}"));
        }
    }
    d.truncate(10);
    d
}

/// Creates a fresh environment tree: a few directories, small files, one multi-MiB file, a
/// symlink and files with unusual modes.
pub fn create(root: &Path, rng: &mut Rng) -> std::io::Result<()> {
    for d in ["etc", "var/log", "home/user/docs", "opt/app"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    for i in 0..8 {
        let dir = *rng.pick(&["etc", "var/log", "home/user/docs", "opt/app"]);
        let n = rng.range(100, 40_000) as usize;
        std::fs::write(
            root.join(dir).join(format!("f{i}")),
            noise(n, rng.next_u64()),
        )?;
    }
    let big = rng.range(1 << 20, 4 << 20) as usize;
    std::fs::write(root.join("opt/app/big.bin"), noise(big, rng.next_u64()))?;
    std::fs::write(root.join("etc/hostname"), b"env\n")?;
    std::os::unix::fs::symlink("hostname", root.join("etc/link"))?;
    std::fs::set_permissions(
        root.join("etc/hostname"),
        std::fs::Permissions::from_mode(0o600),
    )?;
    Ok(())
}

fn files(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = entries(root)
        .unwrap_or_default()
        .into_iter()
        .map(|(p, _)| root.join(p))
        .filter(|p| {
            std::fs::symlink_metadata(p)
                .map(|m| m.file_type().is_file())
                .unwrap_or(false)
        })
        .collect();
    v.sort();
    v
}

/// Changes the tree the way a container changes between backups: 1–4 of modify in place,
/// append, add (sometimes a multi-MiB file), delete, chmod, retarget the symlink. Returns
/// what it did.
pub fn mutate(root: &Path, rng: &mut Rng, round: u64) -> std::io::Result<Vec<String>> {
    use std::io::{Seek, SeekFrom, Write};
    let mut did = Vec::new();
    for _ in 0..rng.range(1, 4) {
        let fs = files(root);
        let what = rng.below(100);
        if fs.is_empty() || what < 20 {
            let dir = *rng.pick(&["etc", "var/log", "home/user/docs", "opt/app"]);
            std::fs::create_dir_all(root.join(dir))?;
            let n = if rng.chance(15) {
                rng.range(1 << 20, 3 << 20)
            } else {
                rng.range(0, 30_000)
            } as usize;
            let p = root.join(dir).join(format!("n{round}-{}", rng.below(1000)));
            std::fs::write(&p, noise(n, rng.next_u64()))?;
            did.push(format!("add {} ({n} B)", rel(root, &p)));
            continue;
        }
        let f = rng.pick(&fs).clone();
        if what < 45 {
            let len = std::fs::metadata(&f)?.len();
            let at = rng.below(len.max(1));
            let mut h = std::fs::OpenOptions::new().write(true).open(&f)?;
            h.seek(SeekFrom::Start(at))?;
            let n = rng.range(1, 5000) as usize;
            h.write_all(&noise(n, rng.next_u64()))?;
            did.push(format!("modify {} at {at}", rel(root, &f)));
        } else if what < 70 {
            let mut h = std::fs::OpenOptions::new().append(true).open(&f)?;
            let n = rng.range(1, 60_000) as usize;
            h.write_all(&noise(n, rng.next_u64()))?;
            did.push(format!("append {} +{n}", rel(root, &f)));
        } else if what < 85 && fs.len() > 4 {
            std::fs::remove_file(&f)?;
            did.push(format!("delete {}", rel(root, &f)));
        } else if what < 93 {
            let mode = *rng.pick(&[0o600, 0o640, 0o644, 0o755, 0o700]);
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode))?;
            did.push(format!("chmod {:o} {}", mode, rel(root, &f)));
        } else {
            let link = root.join("etc/link");
            let _ = std::fs::remove_file(&link);
            let target = rel(root, &f);
            std::os::unix::fs::symlink(format!("../{target}"), &link)?;
            did.push(format!("relink etc/link -> ../{target}"));
        }
    }
    Ok(did)
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned()
}
