//! In-place restore of a container's private area: restore next to the original, then swap
//! the restored tree in atomically.
//!
//! # Crash-safety invariant
//! After a crash at any moment, the target path holds either the original tree or the fully
//! restored one — never a mix, never nothing (unless there was no original) — once
//! [`cleanup_leftovers`] has run. The caller runs it before every in-place restore of a target
//! (and may run it at agent start-up for known targets). The steps of one restore, with
//! `T` = the target, `S` = `.<name>.cairn-restore-<job>` and `O` = `.<name>.cairn-old-<job>`
//! (siblings of `T`, so on the same file system):
//!
//! 1. **Restore into `S`** (the caller, e.g. with [`cairn_fs::Restorer`]).
//!    Crash: `T` is the untouched original, `S` a partial tree. Cleanup removes `S`.
//! 2. **`syncfs`** ([`swap_into_place`] from here on): the restored data and metadata reach the
//!    disk *before* the tree becomes visible at `T`, so a crash after the swap cannot show
//!    empty or short files at `T`. Crash: as in step 1.
//! 3. **`renameat2(S, T, RENAME_EXCHANGE)`**: one atomic, journaled directory operation.
//!    Crash before it is durable: as in step 1. Crash after: `T` is the restored tree and `S`
//!    holds the original. Either way cleanup removes `S` — the partial restore in the first
//!    case, the original in the second — and `T` is complete.
//! 4. **`fsync` of the parent directory**: the exchange is durable. Crash: as after step 3.
//! 5. **Removal of the original, now at `S`**. Crash: `T` is the restored tree, `S` a
//!    partially removed original; cleanup removes `S`.
//!
//! When `T` does not exist, step 3 is a plain `rename(S, T)`: a crash leaves either `S`
//! (cleanup removes it; there was no original) or the restored `T`.
//!
//! When the file system does not support `RENAME_EXCHANGE` (`EINVAL`, `ENOSYS`,
//! `EOPNOTSUPP`), step 3 becomes two renames, and the window between them is covered by
//! keeping the original at `O` until the second rename is durable:
//!
//! * 3a. **`rename(T, O)`**. Crash: `T` is missing, `O` is the original, `S` the restored tree.
//!   Cleanup sees `T` missing and `O` present: it renames `O` back to `T` (the original), then
//!   removes `S`.
//! * 3b. **`rename(S, T)`**, then `fsync` of the parent. Crash: `T` is the restored tree and
//!   `O` the original; cleanup removes `O`. (Both renames are in the same directory, and
//!   journaling file systems commit them in order, so 3b cannot survive a crash that 3a did
//!   not.)
//! * 5. **Removal of `O`**. Crash: cleanup removes the rest of `O`.
//!
//! Cleanup never touches `T` itself except to put an original back where `T` is missing.
//! It removes the leftovers of *every* job of the target, so two in-place restores of the
//! same target must never run at once (the caller serialises them).
//!
//! # Failpoints
//! The end-to-end tests crash the agent at a chosen step: with `CAIRN_FAILPOINT=after_stage`
//! the process aborts once the restored tree is complete in `S`, before step 2; with
//! `CAIRN_FAILPOINT=after_exchange`, right after step 4 (the exchange is durable, the
//! original still at `S`). See [`failpoint`]; unset, they cost one environment lookup.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cairn_core::manifest::{Entry, EntryKind};
use cairn_core::path as rpath;
use nix::errno::Errno;
use nix::fcntl::{renameat2, RenameFlags};

/// Longest job id accepted.
const MAX_JOB: usize = 64;
/// Longest file name on Linux.
const NAME_MAX: usize = 255;
/// Processes named in an [`in_use`] report.
const MAX_USERS: usize = 3;
/// Paths named in a [`changes_since`] summary.
const MAX_EXAMPLES: usize = 3;

const RESTORE_TAG: &str = ".cairn-restore-";
const OLD_TAG: &str = ".cairn-old-";

/// Errors of an in-place restore; each names the path it is about.
#[derive(Debug, thiserror::Error)]
pub enum InPlaceError {
    /// The job id is not usable in a file name.
    #[error("{}: invalid restore job id {job:?} (only letters, digits and '-', at most {MAX_JOB})", .path.display())]
    BadJob { path: PathBuf, job: String },
    /// The target cannot be restored in place.
    #[error("{}: cannot restore in place: {why}", .path.display())]
    BadTarget { path: PathBuf, why: String },
    /// A file-system operation failed.
    #[error("{}: cannot {what}: {source}", .path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        source: io::Error,
    },
}

fn io_err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(io::Error) -> InPlaceError + 'a {
    move |source| InPlaceError::Io {
        path: path.to_path_buf(),
        what,
        source,
    }
}

fn errno_err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(Errno) -> InPlaceError + 'a {
    move |e| InPlaceError::Io {
        path: path.to_path_buf(),
        what,
        source: io::Error::from(e),
    }
}

/// The sibling paths used by an in-place restore of `target` for one job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InPlace {
    /// The tree being restored.
    pub target: PathBuf,
    /// `<parent>/.<name>.cairn-restore-<job>`: where the caller restores to.
    pub staging: PathBuf,
    /// `<parent>/.<name>.cairn-old-<job>`: the original, only while the fallback swap runs.
    pub old: PathBuf,
}

/// The parent directory of `target` (`.` for a bare relative name) and its final name.
fn split(target: &Path) -> Result<(PathBuf, &OsStr), InPlaceError> {
    let bad = |why: &str| InPlaceError::BadTarget {
        path: target.to_path_buf(),
        why: why.to_string(),
    };
    let name = target
        .file_name()
        .ok_or_else(|| bad("the path has no final name"))?;
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name))
}

/// `.<name><tag>` followed by `job` (may be empty, for a prefix).
fn sibling_name(name: &OsStr, tag: &str, job: &str) -> OsString {
    let mut s = OsString::from(".");
    s.push(name);
    s.push(tag);
    s.push(job);
    s
}

fn valid_job(job: &str) -> bool {
    !job.is_empty()
        && job.len() <= MAX_JOB
        && job.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl InPlace {
    /// The sibling paths for restoring `target` in place for job `job` (letters, digits and
    /// `-` only). Nothing is created.
    pub fn new(target: &Path, job: &str) -> Result<InPlace, InPlaceError> {
        if !valid_job(job) {
            return Err(InPlaceError::BadJob {
                path: target.to_path_buf(),
                job: job.to_string(),
            });
        }
        let (parent, name) = split(target)?;
        if name == ".." || name == "." {
            return Err(InPlaceError::BadTarget {
                path: target.to_path_buf(),
                why: "the path must end in a real name".into(),
            });
        }
        let staging = sibling_name(name, RESTORE_TAG, job);
        let old = sibling_name(name, OLD_TAG, job);
        if staging.len().max(old.len()) > NAME_MAX {
            return Err(InPlaceError::BadTarget {
                path: target.to_path_buf(),
                why: "the name is too long for a staging directory next to it".into(),
            });
        }
        Ok(InPlace {
            target: target.to_path_buf(),
            staging: parent.join(staging),
            old: parent.join(old),
        })
    }

    fn parent(&self) -> PathBuf {
        split(&self.target)
            .map(|(p, _)| p)
            .unwrap_or_else(|_| PathBuf::from("."))
    }
}

/// Makes a directory's entries (renames, creations, removals) durable.
fn fsync_dir(dir: &Path) -> Result<(), InPlaceError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir, "sync the directory"))
}

/// Removes `path` whatever it is, never following a symlink (a symlink is removed itself).
/// A tree with read-only directories (possible when not running as root) is made writable and
/// removed again.
fn remove_tree(path: &Path) -> Result<(), InPlaceError> {
    let md = match fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(path, "inspect")(e)),
    };
    if !md.is_dir() {
        return fs::remove_file(path).map_err(io_err(path, "remove"));
    }
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            make_writable(path);
            fs::remove_dir_all(path).map_err(io_err(path, "remove the tree"))
        }
        Err(e) => Err(io_err(path, "remove the tree")(e)),
    }
}

/// Gives the owner write and search permission on every directory of the tree (best effort,
/// symlinks never followed).
fn make_writable(dir: &Path) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(md) = fs::symlink_metadata(&d) else {
            continue;
        };
        if !md.is_dir() {
            continue;
        }
        let _ = fs::set_permissions(&d, fs::Permissions::from_mode((md.mode() & 0o7777) | 0o700));
        if let Ok(rd) = fs::read_dir(&d) {
            for de in rd.flatten() {
                if de.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(de.path());
                }
            }
        }
    }
}

/// Removes the leftovers of earlier, interrupted in-place restores of `target`, whatever
/// their job: staging trees (`.<name>.cairn-restore-*`, from a crash before the swap, or the
/// original after a crash right after it) and old trees (`.<name>.cairn-old-*`, from the
/// fallback swap). When `target` is missing and an old tree exists — a crash between the two
/// renames of the fallback swap — the old tree (the original) is renamed back to `target`
/// first. Returns the paths removed. Never modifies an existing `target`.
///
/// Must not run while another in-place restore of the same target is in progress.
pub fn cleanup_leftovers(target: &Path) -> Result<Vec<PathBuf>, InPlaceError> {
    let (parent, name) = split(target)?;
    let restore_prefix = sibling_name(name, RESTORE_TAG, "");
    let old_prefix = sibling_name(name, OLD_TAG, "");
    let mut stagings = Vec::new();
    let mut olds = Vec::new();
    let rd = match fs::read_dir(&parent) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(&parent, "list the directory")(e)),
    };
    for de in rd {
        let de = de.map_err(io_err(&parent, "list the directory"))?;
        let file_name = de.file_name();
        let bytes = file_name.as_bytes();
        let job_of = |prefix: &OsString| {
            bytes
                .strip_prefix(prefix.as_bytes())
                .and_then(|j| std::str::from_utf8(j).ok())
                .is_some_and(valid_job)
        };
        if job_of(&restore_prefix) {
            stagings.push(de.path());
        } else if job_of(&old_prefix) {
            olds.push(de.path());
        }
    }
    stagings.sort();
    olds.sort();

    let target_exists = match fs::symlink_metadata(target) {
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(io_err(target, "inspect")(e)),
    };
    if !target_exists {
        // The newest old directory (a rename updates its ctime) is the original.
        let newest = olds
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let md = fs::symlink_metadata(p).ok()?;
                md.is_dir().then(|| ((md.ctime(), md.ctime_nsec()), i))
            })
            .max()
            .map(|(_, i)| i);
        if let Some(i) = newest {
            let old = olds.remove(i);
            fs::rename(&old, target).map_err(io_err(&old, "move the original tree back"))?;
            fsync_dir(&parent)?;
            tracing::warn!(
                from = %old.display(),
                to = %target.display(),
                "put the original tree back after an interrupted in-place restore"
            );
        }
    }

    let mut removed = Vec::new();
    for p in stagings.into_iter().chain(olds) {
        tracing::info!(path = %p.display(), "removing the leftover of an interrupted in-place restore");
        remove_tree(&p)?;
        removed.push(p);
    }
    if !removed.is_empty() {
        fsync_dir(&parent)?;
    }
    Ok(removed)
}

/// Puts the tree restored at `ip.staging` in place of `ip.target`, atomically: first
/// `syncfs` so the restored data is on disk, then `renameat2(RENAME_EXCHANGE)` of the two
/// directories, an `fsync` of their parent, and finally the recursive removal of the original
/// (which the exchange left at the staging path). A missing target gets a plain rename.
/// File systems without `RENAME_EXCHANGE` get two renames through `ip.old` instead; see the
/// module documentation for what a crash at each step leaves and how [`cleanup_leftovers`]
/// recovers.
///
/// The staging directory must be a directory on the same file system as the target, and the
/// target must not be a mount point itself. Check [`in_use`] first: processes with files open
/// in the original keep using the original.
pub fn swap_into_place(ip: &InPlace) -> Result<(), InPlaceError> {
    failpoint("after_stage");
    let old_at = exchange(ip)?;
    failpoint("after_exchange");
    remove_old(ip, old_at.as_deref())
}

/// The environment variable naming the failpoint at which the process aborts (tests only).
pub const FAILPOINT_ENV: &str = "CAIRN_FAILPOINT";

/// Aborts the process, as a crash would (no unwinding, no cleanup), when the environment
/// variable [`FAILPOINT_ENV`] equals `name`. The crash tests use it to land a crash at a
/// chosen step of an in-place restore.
pub fn failpoint(name: &str) {
    if std::env::var_os(FAILPOINT_ENV).is_some_and(|v| v == name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}

/// Steps 2–4: checks, `syncfs`, the exchange (or the fallback renames) and the parent's
/// `fsync`. Returns where the original tree now is (`None` when there was none).
fn exchange(ip: &InPlace) -> Result<Option<PathBuf>, InPlaceError> {
    let parent = ip.parent();
    let smd = fs::symlink_metadata(&ip.staging).map_err(io_err(&ip.staging, "inspect"))?;
    if !smd.is_dir() {
        return Err(InPlaceError::BadTarget {
            path: ip.staging.clone(),
            why: "the staging path is not a directory".into(),
        });
    }
    let staging = File::open(&ip.staging).map_err(io_err(&ip.staging, "open"))?;
    nix::unistd::syncfs(staging.as_raw_fd())
        .map_err(errno_err(&ip.staging, "sync the file system"))?;
    drop(staging);

    let tmd = match fs::symlink_metadata(&ip.target) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::rename(&ip.staging, &ip.target)
                .map_err(io_err(&ip.target, "move the restored tree into place"))?;
            fsync_dir(&parent)?;
            return Ok(None);
        }
        Err(e) => return Err(io_err(&ip.target, "inspect")(e)),
    };
    if !tmd.is_dir() {
        return Err(InPlaceError::BadTarget {
            path: ip.target.clone(),
            why: "it is not a directory".into(),
        });
    }
    let pmd = fs::metadata(&parent).map_err(io_err(&parent, "inspect"))?;
    if tmd.dev() != pmd.dev() {
        return Err(InPlaceError::BadTarget {
            path: ip.target.clone(),
            why: "it is a mount point; the restored tree cannot be swapped in".into(),
        });
    }
    if smd.dev() != tmd.dev() {
        return Err(InPlaceError::BadTarget {
            path: ip.target.clone(),
            why: format!(
                "the staging directory {} is on another file system",
                ip.staging.display()
            ),
        });
    }
    match renameat2(
        None,
        &ip.staging,
        None,
        &ip.target,
        RenameFlags::RENAME_EXCHANGE,
    ) {
        Ok(()) => {
            fsync_dir(&parent)?;
            Ok(Some(ip.staging.clone()))
        }
        Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {
            tracing::info!(
                target = %ip.target.display(),
                "the file system cannot exchange directories atomically; swapping with two renames"
            );
            exchange_by_renames(ip, &parent)?;
            Ok(Some(ip.old.clone()))
        }
        Err(e) => Err(errno_err(&ip.target, "swap the restored tree into place")(
            e,
        )),
    }
}

/// The fallback of [`exchange`]: target → old, staging → target, `fsync` of the parent.
fn exchange_by_renames(ip: &InPlace, parent: &Path) -> Result<(), InPlaceError> {
    if fs::symlink_metadata(&ip.old).is_ok() {
        return Err(InPlaceError::BadTarget {
            path: ip.target.clone(),
            why: format!(
                "{} exists; run the leftover cleanup first",
                ip.old.display()
            ),
        });
    }
    fs::rename(&ip.target, &ip.old).map_err(io_err(&ip.target, "move the original aside"))?;
    if let Err(e) = fs::rename(&ip.staging, &ip.target) {
        // Put the original back; if even that fails, cleanup_leftovers will.
        let _ = fs::rename(&ip.old, &ip.target);
        let _ = fsync_dir(parent);
        return Err(io_err(&ip.target, "move the restored tree into place")(e));
    }
    fsync_dir(parent)
}

/// Step 5: removes the original tree from where the swap left it.
fn remove_old(ip: &InPlace, old_at: Option<&Path>) -> Result<(), InPlaceError> {
    if let Some(old) = old_at {
        remove_tree(old)?;
        fsync_dir(&ip.parent())?;
    }
    Ok(())
}

/// Why a process uses the target, for [`in_use`].
fn process_use(pid_dir: &Path, target: &Path) -> Option<String> {
    let under = |p: &Path| -> bool {
        let bytes = p.as_os_str().as_bytes();
        let bytes = bytes.strip_suffix(b" (deleted)").unwrap_or(bytes);
        Path::new(OsStr::from_bytes(bytes)).starts_with(target)
    };
    if fs::read_link(pid_dir.join("cwd")).is_ok_and(|p| under(&p)) {
        return Some(format!("has its working directory in {}", target.display()));
    }
    if fs::read_link(pid_dir.join("root")).is_ok_and(|p| under(&p)) {
        return Some(format!("has its root directory in {}", target.display()));
    }
    if let Ok(fds) = fs::read_dir(pid_dir.join("fd")) {
        for fd in fds.flatten() {
            if let Ok(p) = fs::read_link(fd.path()) {
                if under(&p) {
                    return Some(format!("has {} open", p.display()));
                }
            }
        }
    }
    if let Ok(maps) = fs::read(pid_dir.join("maps")) {
        for line in maps.split(|b| *b == b'\n') {
            if let Some(i) = line.iter().position(|b| *b == b'/') {
                let p = Path::new(OsStr::from_bytes(&line[i..]));
                if under(p) {
                    return Some(format!("has {} mapped", p.display()));
                }
            }
        }
    }
    None
}

/// Describes the processes using anything under `target` — as working or root directory, as
/// an open file or as a memory-mapped file — found by scanning `/proc/<pid>/{cwd,root,fd,maps}`
/// of every process but the current one. `None` when no process uses it. Names at most a few
/// processes, e.g. "process 1234 (nginx) has its working directory in /vz/private/101".
/// Processes that vanish or cannot be inspected (permissions) are skipped.
pub fn in_use(target: &Path) -> Option<String> {
    let target = fs::canonicalize(target).unwrap_or_else(|_| target.to_path_buf());
    let me = std::process::id();
    let mut found = Vec::new();
    let mut more = 0usize;
    let rd = fs::read_dir("/proc").ok()?;
    for de in rd.flatten() {
        let Some(pid) = de.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Some(why) = process_use(&de.path(), &target) else {
            continue;
        };
        if found.len() >= MAX_USERS {
            more += 1;
            continue;
        }
        let comm = fs::read_to_string(de.path().join("comm")).unwrap_or_default();
        found.push(format!("process {pid} ({}) {why}", comm.trim()));
    }
    if found.is_empty() {
        return None;
    }
    let mut out = found.join("; ");
    if more > 0 {
        out.push_str(&format!(
            "; and {more} more process{}",
            if more == 1 { "" } else { "es" }
        ));
    }
    Some(out)
}

/// How a live object differs from its manifest entry, if it does.
fn differs(abs: &Path, md: &fs::Metadata, e: &Entry) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let ft = md.file_type();
    let same_kind = match e.kind {
        EntryKind::File | EntryKind::Hardlink => ft.is_file(),
        EntryKind::Dir => ft.is_dir(),
        EntryKind::Symlink => ft.is_symlink(),
        EntryKind::Fifo => ft.is_fifo(),
        EntryKind::CharDevice => ft.is_char_device(),
        EntryKind::BlockDevice => ft.is_block_device(),
        EntryKind::Socket => ft.is_socket(),
    };
    if !same_kind {
        return Some("type changed");
    }
    // A directory's size and mtime change with its entries, which are compared one by one.
    if e.kind == EntryKind::Dir {
        return None;
    }
    let mtime_ns = md
        .mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(md.mtime_nsec());
    let changed = mtime_ns != e.mtime_ns
        || match e.kind {
            EntryKind::File | EntryKind::Hardlink => md.len() != e.size,
            EntryKind::Symlink => {
                fs::read_link(abs).map_or(true, |t| t.into_os_string().into_vec() != e.link_target)
            }
            EntryKind::CharDevice | EntryKind::BlockDevice => md.rdev() != e.rdev,
            _ => false,
        };
    changed.then_some("modified")
}

/// Compares the live tree at `target` with the `expected` entries (a backup's manifest in
/// walk order). `None` when every entry exists with the same kind, the same size and mtime
/// (files), the same target and mtime (symlinks), the same device number and mtime (devices)
/// — directories are compared by kind only — and the tree holds nothing else; otherwise a
/// summary such as "3 entries changed since the backup, e.g. etc/passwd (modified), var/new
/// (added)". Symlinks are never followed; directories on other file systems are not entered
/// (as in a backup). Everything under the target counts, including what the backup's rules
/// excluded.
pub fn changes_since(
    target: &Path,
    expected: impl Iterator<Item = Entry>,
) -> Result<Option<String>, InPlaceError> {
    let mut live = cairn_fs::Walker::new(target, |_, _| false).peekable();
    let mut expected = expected.peekable();
    let mut count = 0u64;
    let mut examples: Vec<String> = Vec::new();
    let mut note = |rel: &[u8], what: &str| {
        count += 1;
        if examples.len() < MAX_EXAMPLES {
            let shown = if rel.is_empty() {
                ".".to_string()
            } else {
                rpath::display(rel)
            };
            examples.push(format!("{shown} ({what})"));
        }
    };
    loop {
        let order = match (live.peek(), expected.peek()) {
            (None, None) => break,
            (Some(Err(err)), _) => {
                if err.rel.is_empty() {
                    let Some(Err(err)) = live.next() else {
                        break;
                    };
                    return Err(io_err(target, "read the tree")(err.error));
                }
                let rel = err.rel.clone();
                live.next();
                note(&rel, "unreadable");
                continue;
            }
            (Some(Ok(_)), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(Ok(item)), Some(e)) => rpath::walk_cmp(&item.rel, &e.path),
        };
        match order {
            std::cmp::Ordering::Less => {
                if let Some(Ok(item)) = live.next() {
                    note(&item.rel, "added");
                }
            }
            std::cmp::Ordering::Greater => {
                if let Some(e) = expected.next() {
                    note(&e.path, "removed");
                }
            }
            std::cmp::Ordering::Equal => {
                if let (Some(Ok(item)), Some(e)) = (live.next(), expected.next()) {
                    if let Some(what) = differs(&item.abs, &item.md, &e) {
                        note(&item.rel, what);
                    }
                }
            }
        }
    }
    Ok(match count {
        0 => None,
        1 => Some(format!(
            "1 entry changed since the backup: {}",
            examples.join(", ")
        )),
        n => Some(format!(
            "{n} entries changed since the backup, e.g. {}",
            examples.join(", ")
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    fn siblings(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// A target `ct` with an original tree and a staging tree with the restored one.
    fn setup() -> (tempfile::TempDir, InPlace) {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("ct");
        fs::create_dir_all(target.join("etc")).unwrap();
        fs::write(target.join("etc/passwd"), b"original").unwrap();
        fs::write(target.join("only-original"), b"x").unwrap();
        let ip = InPlace::new(&target, "job-1").unwrap();
        fs::create_dir_all(ip.staging.join("etc")).unwrap();
        fs::write(ip.staging.join("etc/passwd"), b"restored").unwrap();
        fs::write(ip.staging.join("only-restored"), b"y").unwrap();
        (t, ip)
    }

    fn is_restored(target: &Path) -> bool {
        fs::read(target.join("etc/passwd")).unwrap() == b"restored"
            && target.join("only-restored").exists()
            && !target.join("only-original").exists()
    }

    fn is_original(target: &Path) -> bool {
        fs::read(target.join("etc/passwd")).unwrap() == b"original"
            && target.join("only-original").exists()
            && !target.join("only-restored").exists()
    }

    #[test]
    fn sibling_paths_and_job_ids() {
        let ip = InPlace::new(Path::new("/vz/private/101"), "a1-B2").unwrap();
        assert_eq!(
            ip.staging,
            Path::new("/vz/private/.101.cairn-restore-a1-B2")
        );
        assert_eq!(ip.old, Path::new("/vz/private/.101.cairn-old-a1-B2"));
        for bad in ["", "a/b", "..", "../x", "a.b", "a b", &"x".repeat(65)] {
            let err = InPlace::new(Path::new("/vz/private/101"), bad).unwrap_err();
            assert!(matches!(err, InPlaceError::BadJob { .. }), "{bad:?}");
            assert!(err.to_string().starts_with("/vz/private/101: "), "{err}");
        }
        assert!(InPlace::new(Path::new("/"), "j").is_err());
        assert!(InPlace::new(Path::new("/vz/.."), "j").is_err());
        let rel = InPlace::new(Path::new("ct"), "j").unwrap();
        assert_eq!(rel.staging, Path::new("./.ct.cairn-restore-j"));
    }

    #[test]
    fn swap_replaces_the_contents() {
        let (t, ip) = setup();
        swap_into_place(&ip).unwrap();
        assert!(is_restored(&ip.target));
        assert_eq!(siblings(t.path()), ["ct"]);
    }

    #[test]
    fn swap_into_a_missing_target() {
        let (t, ip) = setup();
        fs::remove_dir_all(&ip.target).unwrap();
        swap_into_place(&ip).unwrap();
        assert!(is_restored(&ip.target));
        assert_eq!(siblings(t.path()), ["ct"]);
    }

    #[test]
    fn swap_refuses_a_missing_staging_tree() {
        let (_t, ip) = setup();
        fs::remove_dir_all(&ip.staging).unwrap();
        assert!(swap_into_place(&ip).is_err());
        assert!(is_original(&ip.target));
    }

    #[test]
    fn cleanup_removes_a_staging_leftover() {
        let (t, ip) = setup();
        // Another target's leftovers are not ours.
        fs::create_dir(t.path().join(".ct2.cairn-restore-x")).unwrap();
        fs::create_dir(t.path().join(".ct.cairn-restore-x.y")).unwrap();
        let removed = cleanup_leftovers(&ip.target).unwrap();
        assert_eq!(removed, std::slice::from_ref(&ip.staging));
        assert!(is_original(&ip.target));
        assert_eq!(
            siblings(t.path()),
            [".ct.cairn-restore-x.y", ".ct2.cairn-restore-x", "ct"]
        );
        assert!(cleanup_leftovers(&ip.target).unwrap().is_empty());
    }

    #[test]
    fn crash_right_after_the_exchange() {
        let (t, ip) = setup();
        exchange(&ip).unwrap();
        // Crash here: the restored tree is in place, the original at the staging path.
        assert!(is_restored(&ip.target));
        assert!(is_original(&ip.staging));
        let removed = cleanup_leftovers(&ip.target).unwrap();
        assert_eq!(removed, std::slice::from_ref(&ip.staging));
        assert!(is_restored(&ip.target));
        assert_eq!(siblings(t.path()), ["ct"]);
    }

    #[test]
    fn crash_between_the_fallback_renames() {
        let (t, ip) = setup();
        // The first rename of the fallback, then a crash.
        fs::rename(&ip.target, &ip.old).unwrap();
        let removed = cleanup_leftovers(&ip.target).unwrap();
        assert_eq!(removed, std::slice::from_ref(&ip.staging));
        assert!(is_original(&ip.target));
        assert_eq!(siblings(t.path()), ["ct"]);
    }

    #[test]
    fn fallback_renames_then_crash() {
        let (t, ip) = setup();
        exchange_by_renames(&ip, t.path()).unwrap();
        assert!(is_restored(&ip.target));
        assert!(is_original(&ip.old));
        // Crash before the old tree is removed.
        let removed = cleanup_leftovers(&ip.target).unwrap();
        assert_eq!(removed, std::slice::from_ref(&ip.old));
        assert!(is_restored(&ip.target));
        assert_eq!(siblings(t.path()), ["ct"]);
    }

    #[test]
    fn removal_handles_read_only_dirs_and_symlinks() {
        let (t, ip) = setup();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("keep"), b"k").unwrap();
        std::os::unix::fs::symlink(outside.path(), ip.target.join("link")).unwrap();
        fs::set_permissions(ip.target.join("etc"), fs::Permissions::from_mode(0o555)).unwrap();
        swap_into_place(&ip).unwrap();
        assert!(is_restored(&ip.target));
        assert_eq!(siblings(t.path()), ["ct"]);
        assert!(outside.path().join("keep").exists());
    }

    #[test]
    fn in_use_finds_a_process_in_the_tree() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("ct");
        fs::create_dir_all(target.join("var/www")).unwrap();
        assert_eq!(in_use(&target), None);
        let mut child = Command::new("sleep")
            .arg("30")
            .current_dir(target.join("var/www"))
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(5);
        let got = loop {
            // Until exec, the child is a copy of this process, named like it.
            if let Some(s) = in_use(&target) {
                if s.contains("(sleep)") {
                    break s;
                }
            }
            assert!(Instant::now() < deadline, "child not seen");
            std::thread::sleep(Duration::from_millis(20));
        };
        let want = format!(
            "process {pid} (sleep) has its working directory in {}",
            target.canonicalize().unwrap().display()
        );
        assert!(got.contains(&want), "{got}");
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(in_use(&target), None);
    }

    #[test]
    fn in_use_finds_an_open_file() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("ct");
        fs::create_dir_all(&target).unwrap();
        fs::write(target.join("log"), b"").unwrap();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("exec sleep 30 < \"$0\"")
            .arg(target.join("log"))
            .current_dir("/")
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let got = loop {
            if let Some(s) = in_use(&target) {
                if s.contains("(sleep)") {
                    break s;
                }
            }
            assert!(Instant::now() < deadline, "child not seen");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(got.ends_with("/ct/log open"), "{got}");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// The manifest of the tree at `root` as a backup would write it (by hand: kind, size,
    /// mtime, symlink target).
    fn manifest(root: &Path) -> Vec<Entry> {
        cairn_fs::Walker::new(root, |_, _| false)
            .map(|item| {
                let item = item.unwrap();
                let ft = item.md.file_type();
                let kind = if ft.is_dir() {
                    EntryKind::Dir
                } else if ft.is_symlink() {
                    EntryKind::Symlink
                } else {
                    EntryKind::File
                };
                let mut e = Entry::new(item.rel, kind);
                e.mtime_ns = item.md.mtime() * 1_000_000_000 + item.md.mtime_nsec();
                if kind == EntryKind::File {
                    e.size = item.md.len();
                }
                if kind == EntryKind::Symlink {
                    e.link_target = fs::read_link(&item.abs)
                        .unwrap()
                        .into_os_string()
                        .into_vec();
                }
                e
            })
            .collect()
    }

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("etc")).unwrap();
        fs::create_dir_all(t.path().join("var/lib")).unwrap();
        fs::write(t.path().join("etc/passwd"), b"root:x:0:0").unwrap();
        fs::write(t.path().join("var/lib/db"), b"data").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", t.path().join("link")).unwrap();
        t
    }

    #[test]
    fn changes_since_an_identical_tree() {
        let t = tree();
        let m = manifest(t.path());
        assert_eq!(m.len(), 7);
        // Directory mtimes do not count.
        fs::write(t.path().join("etc/tmp"), b"").unwrap();
        fs::remove_file(t.path().join("etc/tmp")).unwrap();
        assert_eq!(changes_since(t.path(), m.into_iter()).unwrap(), None);
    }

    #[test]
    fn changes_since_detects_changes() {
        let t = tree();
        let m = manifest(t.path());
        fs::write(t.path().join("etc/passwd"), b"root:x:0:0:changed").unwrap();
        fs::write(t.path().join("var/new"), b"n").unwrap();
        fs::remove_file(t.path().join("var/lib/db")).unwrap();
        let got = changes_since(t.path(), m.iter().cloned()).unwrap().unwrap();
        assert_eq!(
            got,
            "3 entries changed since the backup, e.g. etc/passwd (modified), var/lib/db (removed), var/new (added)"
        );

        // Same size, other mtime.
        let t = tree();
        let m = manifest(t.path());
        let f = File::options()
            .write(true)
            .open(t.path().join("var/lib/db"))
            .unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        drop(f);
        let got = changes_since(t.path(), m.into_iter()).unwrap().unwrap();
        assert_eq!(
            got,
            "1 entry changed since the backup: var/lib/db (modified)"
        );

        // A symlink retargeted, a file replaced by a directory.
        let t = tree();
        let mut m = manifest(t.path());
        for e in &mut m {
            if e.path == b"link" {
                e.link_target = b"/etc/shadow".to_vec();
                e.mtime_ns = fs::symlink_metadata(t.path().join("link"))
                    .map(|md| md.mtime() * 1_000_000_000 + md.mtime_nsec())
                    .unwrap();
            }
        }
        fs::remove_file(t.path().join("etc/passwd")).unwrap();
        fs::create_dir(t.path().join("etc/passwd")).unwrap();
        let got = changes_since(t.path(), m.into_iter()).unwrap().unwrap();
        assert_eq!(
            got,
            "2 entries changed since the backup, e.g. etc/passwd (type changed), link (modified)"
        );
    }

    #[test]
    fn changes_since_a_missing_tree_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let err = changes_since(&t.path().join("nope"), std::iter::empty()).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
