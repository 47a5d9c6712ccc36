//! Recreating entries inside a target directory, with full metadata, never outside it.
//!
//! # Confinement
//! A manifest is untrusted input: it may name `../x` or `/etc/x`, or first make `a` a
//! symlink to `/etc` and then a file `a/passwd`. Every entry path is checked with
//! [`cairn_core::path::validate`] (no absolute paths, no `.`/`..`/empty components, no NUL).
//! The parent directory of an entry is then resolved one component at a time from a
//! directory fd of the target, with `openat(O_PATH | O_DIRECTORY | O_NOFOLLOW)`, and each fd
//! is checked to be a directory. A symlink anywhere in the parent chain is therefore refused,
//! not followed. The leaf is created relative to the parent fd with calls that never follow
//! a symlink at the leaf: `openat(O_CREAT | O_EXCL | O_NOFOLLOW)`, `mkdirat`, `symlinkat`,
//! `mknodat`, `linkat` (without `AT_SYMLINK_FOLLOW`). Metadata follows the rules below.
//! Symlink targets are stored verbatim: a symlink to `/etc` is fine to create, it is just
//! never followed.
//!
//! The fds of the directories on the current path are cached. Manifests come in walk order,
//! so consecutive entries share most of their parent chain and each directory is opened about
//! once per restore, however many files it holds.
//!
//! The threat model is a hostile manifest and, because selective restores write into live
//! container trees, a hostile process inside the target that renames and swaps names while
//! the restore runs. Such a process can make entries fail, or move a directory the restore
//! is writing into to another place it could write to itself; it can never make the restore
//! follow a symlink, so it cannot make it create or change anything through one.
//!
//! # Metadata never follows a symlink
//! Every metadata call acts on an inode the restorer holds an fd for, never on a name that
//! a racing process could swap for a symlink between a check and the call:
//! 1. Regular files: the fd [`Restorer::create`] returned, from
//!    `openat(O_CREAT | O_EXCL | O_NOFOLLOW)`. A file finished without it is reopened with
//!    `O_NOFOLLOW` and must be a regular file this restorer created (their device and inode
//!    numbers are remembered). `fsetxattr`, `fchown`, `fchmod` and `futimens` act on the fd.
//! 2. Directories: reopened by [`Restorer::finish`] with `O_DIRECTORY | O_NOFOLLOW`, which
//!    fails on a symlink; then the same fd calls as files.
//! 3. Symlinks, fifos, sockets and device nodes cannot be opened for I/O (a socket cannot be
//!    opened at all, opening a device has side effects), so they are held by
//!    `openat(parent, name, O_PATH | O_NOFOLLOW)`, which yields the object itself, a symlink
//!    included. `fstat` of that fd must show the entry's kind, a single link and, for a
//!    device, the entry's device number; otherwise the entry fails with [`FsError::Exists`]
//!    before any metadata is set. A symlink swapped in for a fifo is refused here.
//! 4. Owner of such an object: `fchownat(fd, "", AT_EMPTY_PATH)` acts on the fd's inode;
//!    no name is looked up.
//! 5. Mode of such an object (never of a symlink: Linux keeps no mode for one): `chmod` of
//!    `/proc/self/fd/N`. That magic link resolves to the inode the fd holds, not to a path,
//!    so no rename can redirect it, and rule 3 made sure the inode is no symlink. Without
//!    /proc, `fchmodat2(fd, "", AT_EMPTY_PATH)` (Linux 6.6 and later); without either, the
//!    entry fails. No call that follows a name (`fchmodat` without `AT_SYMLINK_NOFOLLOW`)
//!    ever sets a mode.
//! 6. Extended attributes of such an object: `setxattr` of `/proc/self/fd/N`, for the same
//!    reason (for a symlink the magic link ends at the symlink itself). Without /proc they
//!    are not set, and the report says so.
//! 7. Times of such an object: `utimensat` of `/proc/self/fd/N`, or without /proc
//!    `utimensat(fd, "", AT_EMPTY_PATH)`.
//! 8. Parents are the `O_PATH | O_NOFOLLOW` fds of the confinement rules: after
//!    [`Restorer::new`], no path is ever resolved from the target's root by name.
//!
//! # Privilege
//! A restore must not turn a backup into privilege for whoever runs it:
//! 1. Without [`RestoreOptions::owners`], every object belongs to the user running the
//!    restore (root, typically). A setuid or setgid bit would then run the backup's program
//!    as that user, and a file capability would hand its capabilities to every caller. So
//!    modes are set without `S_ISUID` and `S_ISGID` (the sticky bit stays), on files and
//!    directories alike, and `security.capability` is not set.
//! 2. Without [`RestoreOptions::privileged`], the same holds even when owners are restored,
//!    and character and block device nodes are not created: a device node with a permissive
//!    mode opens the host's disks or memory to its owner.
//!
//! What is withheld is counted in [`RestoreReport::withheld`] and listed, object by object, in
//! [`RestoreReport::skipped`].
//!
//! # Order of metadata
//! For each entry, once its content is written ([`Restorer::finish_entry`]):
//! 1. extended attributes (ACLs included), while the restorer still owns the object;
//! 2. owner (`fchown`), when restoring owners — it clears setuid/setgid and
//!    `security.capability`;
//! 3. mode (`fchmod`, not for symlinks), after the owner so setuid/setgid bits survive (when
//!    the privilege rules let them);
//! 4. `security.capability` (when the privilege rules let it), after the owner so it
//!    survives, and after the content because a write drops it too;
//! 5. access and modification times (ns precision), last, because every step above may touch
//!    them.
//!
//! Directories get all of it only in [`Restorer::finish`], deepest first: creating children
//! changes a directory's mtime, a read-only mode (`0o555`) would stop the children from being
//! created, and a default ACL would be inherited by children that never had it. Until then a
//! new directory is `0o700`.
//!
//! # Existing objects
//! Without `into_existing`, the target must be new or empty, and finding anything in the way
//! of an entry is an error. With it, directories merge, and any other existing object is
//! replaced atomically: the new one is created under a temporary name in the same directory,
//! gets its content and metadata, and is renamed over the old one in `finish_entry` — so the
//! path never shows a half-written file, and an existing symlink at the leaf is replaced, never
//! followed. A directory in the way of a non-directory is an error (it is never deleted).
//!
//! # Durability in a live tree
//! With `into_existing` the restore writes into a tree in use (a selective restore), and no
//! swap step syncs it afterwards as the in-place restore does. A rename is journaled long
//! before delayed allocation writes the data (ext4 with `noauto_da_alloc`, XFS), so a crash
//! soon after a bare rename can leave a zero-length file where a good one was. The order for
//! each replaced or new object (in [`Restorer::finish_entry`], see `settle`):
//! 1. the content is written (by the caller) and the metadata applied;
//! 2. **`fsync` of the file** (data and inode), before its name becomes visible;
//! 3. **the rename** over the old name (for an object replacing one);
//! 4. its parent directory is noted, and [`Restorer::finish`] **`fsync`s every directory**
//!    that gained or changed a name or had its metadata applied, after every rename, before
//!    it reports success.
//!
//! A crash before step 3 leaves the old object; after it, the new one, complete. Once
//! `finish` returns, everything the restore wrote survives a crash. Without `into_existing`
//! the target is new (or the staging tree of an in-place restore, which `syncfs`es it before
//! the swap), so no per-file `fsync` is paid.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use cairn_core::path;
use cairn_core::{Entry, EntryKind};
use nix::errno::Errno;
use nix::fcntl::{openat, renameat, renameat2, AtFlags, OFlag, RenameFlags};
use nix::sys::stat::{fstat, fstatat, mkdirat, mknodat, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use crate::error::{show, FsError};

/// Notes kept in a report; further ones are only counted.
const MAX_NOTES: usize = 1000;
/// The extended attribute that `chown` and writes clear.
const CAPABILITY: &[u8] = b"security.capability";

/// How a [`Restorer`] treats owners, privilege and existing files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestoreOptions {
    /// Restores the owner and group of every object (needs root for other users' ids).
    ///
    /// Without it, every object belongs to the user running the restore, so setuid and
    /// setgid bits are cleared and `security.capability` is not restored (see the module
    /// notes on privilege); what was withheld is in [`RestoreReport::withheld`].
    pub owners: bool,
    /// Recreates what grants privilege: character and block device nodes, setuid and setgid
    /// bits, and file capabilities (`security.capability`). Without it they are withheld
    /// (and reported in [`RestoreReport::withheld`]) even when owners are restored.
    ///
    /// Restores onto a host other than the backup's source run with `privileged = false`
    /// unless an operator asks otherwise.
    pub privileged: bool,
    /// Restores into a tree that may already hold files: directories merge, other objects
    /// are replaced atomically.
    pub into_existing: bool,
}

impl Default for RestoreOptions {
    /// Owners are restored when running as root, privilege is restored (as far as owners
    /// allow), and the target must be new or empty.
    fn default() -> Self {
        RestoreOptions {
            owners: nix::unistd::geteuid().is_root(),
            privileged: true,
            into_existing: false,
        }
    }
}

/// What a restore did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Objects created (the root included).
    pub entries: u64,
    /// What could not be restored as it was, and why (e.g. `dev/null: device nodes need root`),
    /// withheld privilege included; after 1000 notes, the rest are only counted in a last one.
    pub skipped: Vec<String>,
    /// Privilege deliberately not restored (see [`RestoreOptions::owners`] and
    /// [`RestoreOptions::privileged`]). Each object counted here is also named in `skipped`.
    pub withheld: Withheld,
}

/// Counts of objects whose privilege a restore withheld, by kind of privilege.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Withheld {
    /// Objects restored without the setuid or setgid bits of their mode.
    pub setid_modes: u64,
    /// Objects restored without their `security.capability` attribute.
    pub capabilities: u64,
    /// Character and block device nodes not created.
    pub devices: u64,
}

impl Withheld {
    /// Returns true when nothing was withheld.
    pub fn is_empty(&self) -> bool {
        *self == Withheld::default()
    }
}

/// What a restore may recreate that grants privilege, decided once from its options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Grants {
    /// Setuid and setgid bits and `security.capability` are restored.
    setid: bool,
    /// Device nodes are created (when root).
    devices: bool,
    /// Why privilege is withheld, for the report.
    why: &'static str,
}

impl Grants {
    fn of(opts: &RestoreOptions) -> Grants {
        let why = if !opts.privileged {
            "the restore runs unprivileged"
        } else if !opts.owners {
            "owners are not restored"
        } else {
            ""
        };
        Grants {
            setid: opts.privileged && opts.owners,
            devices: opts.privileged,
            why,
        }
    }

    /// The permission bits to set for a mode from the manifest.
    fn mode(self, mode: u32) -> u32 {
        let mode = mode & 0o7777;
        if self.setid {
            mode
        } else {
            mode & !(libc::S_ISUID | libc::S_ISGID)
        }
    }
}

/// A kind of privilege withheld from one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Withhold {
    SetId,
    Capability,
    Device,
}

/// A new object waiting under a temporary name to replace an existing one.
struct Pending {
    parent: Arc<OwnedFd>,
    tmp: Vec<u8>,
    name: Vec<u8>,
}

#[derive(Default)]
struct State {
    /// Fds of the directories on the last used path, from the target downwards.
    chain: Vec<(Vec<u8>, Arc<OwnedFd>)>,
    /// (device, inode) of every regular file this restorer created: the only files a
    /// hardlink entry may be linked to.
    created: HashSet<(u64, u64)>,
    /// First names of hardlink groups that were restored under another name (the first name
    /// was not restored): later names link to the substitute.
    link_subst: HashMap<Vec<u8>, Vec<u8>>,
    pending: HashMap<Vec<u8>, Pending>,
    /// Entries that `create` skipped; `finish_entry` leaves them alone.
    skipped_paths: HashSet<Vec<u8>>,
    /// Directories whose metadata waits for `finish`.
    dirs: Vec<Entry>,
    /// Directories (by device and inode) that gained or changed a name, to `fsync` in
    /// `finish` (with `into_existing` only).
    dirty_dirs: HashMap<(u64, u64), Arc<OwnedFd>>,
    entries: u64,
    notes: Vec<String>,
    notes_dropped: u64,
    withheld: Withheld,
}

impl State {
    fn note(&mut self, note: String) {
        if self.notes.len() < MAX_NOTES {
            self.notes.push(note);
        } else {
            self.notes_dropped += 1;
        }
    }
}

/// Recreates manifest entries inside a target directory, safely and with full metadata.
///
/// Call [`create`](Restorer::create) for each entry in manifest order, write the content of
/// the files it returns, call [`finish_entry`](Restorer::finish_entry) for each entry once its
/// content is complete (from any thread), and [`finish`](Restorer::finish) once at the end.
pub struct Restorer {
    target: PathBuf,
    opts: RestoreOptions,
    grants: Grants,
    /// `O_PATH` fd of the target directory.
    root: Arc<OwnedFd>,
    is_root: bool,
    /// `/proc/self/fd` is available for path-based calls relative to a directory fd.
    proc_fd: bool,
    state: Mutex<State>,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn errno_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

fn split(p: &[u8]) -> (&[u8], &[u8]) {
    match p.iter().rposition(|b| *b == b'/') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => (b"", p),
    }
}

fn osstr(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

fn timespec(ns: i64) -> TimeSpec {
    TimeSpec::new(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000))
}

fn kind_name(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => "directory",
        libc::S_IFREG => "file",
        libc::S_IFLNK => "symlink",
        libc::S_IFIFO => "fifo",
        libc::S_IFSOCK => "socket",
        libc::S_IFCHR => "character device",
        libc::S_IFBLK => "block device",
        _ => "file-system object",
    }
}

/// Opens one directory below `parent` without following a symlink, as an `O_PATH` fd.
fn open_dir_at(parent: RawFd, name: &[u8]) -> nix::Result<OwnedFd> {
    let fd = openat(
        Some(parent),
        osstr(name),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: `openat` just returned this fd and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // O_NOFOLLOW with O_PATH would hand out a symlink itself; the check makes sure.
    let st = fstat(fd.as_raw_fd())?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Err(Errno::ENOTDIR);
    }
    Ok(fd)
}

/// `fchmodat2(2)` (Linux 6.6), where its number is known: it takes `AT_EMPTY_PATH`, so it can
/// set the mode of an `O_PATH` fd without /proc. The number is the same on every architecture
/// that numbers new system calls from the common table.
#[cfg(any(
    all(target_arch = "x86_64", target_pointer_width = "64"),
    target_arch = "aarch64",
    target_arch = "riscv64",
    target_arch = "loongarch64"
))]
const SYS_FCHMODAT2: Option<libc::c_long> = Some(452);
#[cfg(not(any(
    all(target_arch = "x86_64", target_pointer_width = "64"),
    target_arch = "aarch64",
    target_arch = "riscv64",
    target_arch = "loongarch64"
)))]
const SYS_FCHMODAT2: Option<libc::c_long> = None;

/// A symlink, fifo, socket or device node held by an `O_PATH | O_NOFOLLOW` fd that was
/// checked to be the object the entry describes (rule 3 of the module notes).
struct PathObj {
    fd: OwnedFd,
    symlink: bool,
    /// `/proc/self/fd/N` of `fd`, when /proc is mounted: a magic link to the very inode.
    proc: Option<PathBuf>,
}

/// An object to finish, held so that no metadata call can follow a symlink (see the module
/// notes): a regular file or directory open for real, or any other object by `O_PATH` fd.
enum Obj<'a> {
    File(&'a File),
    Path(PathObj),
}

impl Obj<'_> {
    /// Whether extended attributes can be set at all without following a symlink.
    fn can_set_xattrs(&self) -> bool {
        match self {
            Obj::File(_) => true,
            Obj::Path(p) => p.proc.is_some(),
        }
    }

    fn set_xattr(&self, name: &[u8], value: &[u8]) -> io::Result<()> {
        match self {
            Obj::File(f) => xattr::FileExt::set_xattr(*f, osstr(name), value),
            // Following the magic link lands on the inode itself (rule 6).
            Obj::Path(PathObj { proc: Some(p), .. }) => xattr::set_deref(p, osstr(name), value),
            Obj::Path(PathObj { proc: None, .. }) => Err(errno_io(Errno::ENOTSUP)),
        }
    }

    fn chown(&self, uid: u32, gid: u32) -> nix::Result<()> {
        let (u, g) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
        match self {
            Obj::File(f) => nix::unistd::fchown(f.as_raw_fd(), u, g),
            Obj::Path(p) => fchownat(Some(p.fd.as_raw_fd()), "", u, g, AtFlags::AT_EMPTY_PATH),
        }
    }

    fn chmod(&self, mode: u32) -> nix::Result<()> {
        let mode = mode & 0o7777;
        match self {
            Obj::File(f) => nix::sys::stat::fchmod(f.as_raw_fd(), Mode::from_bits_truncate(mode)),
            // Linux keeps no mode for a symlink; the caller never asks.
            Obj::Path(PathObj { symlink: true, .. }) => Err(Errno::ELOOP),
            Obj::Path(PathObj {
                proc: Some(proc), ..
            }) => nix::sys::stat::fchmodat(
                None,
                proc.as_path(),
                Mode::from_bits_truncate(mode),
                // Follows the magic link only: it resolves to the fd's inode (rule 5).
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            ),
            Obj::Path(PathObj { fd, proc: None, .. }) => {
                let Some(nr) = SYS_FCHMODAT2 else {
                    return Err(Errno::ENOSYS);
                };
                // SAFETY: the path is a valid, empty C string and `fd` an fd we hold;
                // fchmodat2 reads nothing else.
                let r = unsafe {
                    libc::syscall(
                        nr,
                        fd.as_raw_fd(),
                        c"".as_ptr(),
                        mode as libc::c_uint,
                        libc::AT_EMPTY_PATH,
                    )
                };
                Errno::result(r).map(drop)
            }
        }
    }

    fn set_times(&self, atime_ns: i64, mtime_ns: i64) -> nix::Result<()> {
        let (a, m) = (timespec(atime_ns), timespec(mtime_ns));
        match self {
            Obj::File(f) => nix::sys::stat::futimens(f.as_raw_fd(), &a, &m),
            Obj::Path(PathObj {
                proc: Some(proc), ..
            }) => utimensat(
                None,
                proc.as_path(),
                &a,
                &m,
                // Follows the magic link only, which ends at the inode itself (rule 7).
                UtimensatFlags::FollowSymlink,
            ),
            Obj::Path(PathObj { fd, proc: None, .. }) => {
                let times = [*a.as_ref(), *m.as_ref()];
                // SAFETY: the path is a valid, empty C string, `times` holds two timespecs
                // and `fd` is an fd we hold.
                let r = unsafe {
                    libc::utimensat(
                        fd.as_raw_fd(),
                        c"".as_ptr(),
                        times.as_ptr(),
                        libc::AT_EMPTY_PATH,
                    )
                };
                Errno::result(r).map(drop)
            }
        }
    }
}

impl Restorer {
    /// Prepares a restore into `target`, creating it when it does not exist.
    ///
    /// Without `opts.into_existing`, an existing target must be an empty directory.
    pub fn new(target: &Path, opts: RestoreOptions) -> Result<Restorer, FsError> {
        let shown = target.display().to_string();
        match std::fs::metadata(target) {
            Ok(md) if !md.is_dir() => return Err(FsError::TargetNotDir { path: shown }),
            Ok(_) => {
                if !opts.into_existing {
                    let mut rd = std::fs::read_dir(target)
                        .map_err(|e| FsError::io(&shown, "list the restore target", e))?;
                    if rd.next().is_some() {
                        return Err(FsError::TargetNotEmpty { path: shown });
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(target)
                    .map_err(|e| FsError::io(&shown, "create the restore target", e))?;
            }
            Err(e) => return Err(FsError::io(&shown, "inspect the restore target", e)),
        }
        let fd = nix::fcntl::open(
            target,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| FsError::io(&shown, "open the restore target", errno_io(e)))?;
        // SAFETY: `open` just returned this fd and nothing else owns it.
        let root = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        Ok(Restorer {
            target: target.to_path_buf(),
            opts,
            grants: Grants::of(&opts),
            root,
            is_root: nix::unistd::geteuid().is_root(),
            proc_fd: Path::new("/proc/self/fd").is_dir(),
            state: Mutex::new(State::default()),
        })
    }

    /// The options this restorer runs with.
    pub fn options(&self) -> RestoreOptions {
        self.opts
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere leaves the state consistent enough to finish or clean up.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Shows a path inside the target for messages.
    fn shown(&self, rel: &[u8]) -> String {
        if rel.is_empty() {
            self.target.display().to_string()
        } else {
            format!("{}/{}", self.target.display(), show(rel))
        }
    }

    fn io(&self, rel: &[u8], action: &'static str, e: Errno) -> FsError {
        FsError::io(self.shown(rel), action, errno_io(e))
    }

    fn check_path(p: &[u8]) -> Result<(), FsError> {
        path::validate(p).map_err(|e| FsError::UnsafePath {
            path: show(p),
            why: e.to_string(),
        })
    }

    /// Returns an fd of directory `dir` (relative to the target), opening every component
    /// without following symlinks.
    fn dir_fd(&self, dir: &[u8]) -> Result<Arc<OwnedFd>, FsError> {
        if dir.is_empty() {
            return Ok(self.root.clone());
        }
        let comps: Vec<&[u8]> = dir.split(|b| *b == b'/').collect();
        let mut st = self.state();
        let keep = st
            .chain
            .iter()
            .zip(&comps)
            .take_while(|(c, name)| c.0 == **name)
            .count();
        st.chain.truncate(keep);
        for i in keep..comps.len() {
            let parent = st
                .chain
                .last()
                .map_or_else(|| self.root.clone(), |c| c.1.clone());
            let fd = open_dir_at(parent.as_raw_fd(), comps[i]).map_err(|e| {
                let so_far = comps[..=i].join(&b'/');
                match e {
                    Errno::ENOTDIR | Errno::ELOOP => FsError::UnsafePath {
                        path: show(dir),
                        why: format!(
                            "{} in the target is a symlink or not a directory; \
                             refusing to write through it",
                            show(&so_far)
                        ),
                    },
                    Errno::ENOENT => FsError::io(
                        self.shown(&so_far),
                        "open the parent directory (the manifest did not create it first)",
                        errno_io(e),
                    ),
                    e => self.io(&so_far, "open the directory", e),
                }
            })?;
            st.chain.push((comps[i].to_vec(), Arc::new(fd)));
        }
        Ok(st
            .chain
            .last()
            .map_or_else(|| self.root.clone(), |c| c.1.clone()))
    }

    fn temp_name() -> Vec<u8> {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        format!(".cairn-restore.{}.{n}.tmp", std::process::id()).into_bytes()
    }

    /// Creates a non-directory leaf with `make(parent fd, name)`. When something is already
    /// there and `into_existing` is set, creates it under a temporary name instead and
    /// records the pending rename.
    fn place<T>(
        &self,
        parent: &Arc<OwnedFd>,
        rel: &[u8],
        action: &'static str,
        make: impl Fn(RawFd, &[u8]) -> nix::Result<T>,
    ) -> Result<T, FsError> {
        let (_, name) = split(rel);
        let pfd = parent.as_raw_fd();
        let existing = match make(pfd, name) {
            Ok(t) => {
                self.note_dirty(parent, rel)?;
                return Ok(t);
            }
            Err(Errno::EEXIST) => fstatat(Some(pfd), osstr(name), AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(|e| self.io(rel, "inspect the existing object", e))?,
            Err(e) => return Err(self.io(rel, action, e)),
        };
        let found = kind_name(existing.st_mode);
        if existing.st_mode & libc::S_IFMT == libc::S_IFDIR {
            return Err(FsError::Exists {
                path: self.shown(rel),
                found,
                hint: "a directory is never replaced by a restore; move it away first",
            });
        }
        if !self.opts.into_existing {
            return Err(FsError::Exists {
                path: self.shown(rel),
                found,
                hint: "the manifest names it twice, or something else writes to the target",
            });
        }
        loop {
            let tmp = Self::temp_name();
            match make(pfd, &tmp) {
                Ok(t) => {
                    let old = self.state().pending.insert(
                        rel.to_vec(),
                        Pending {
                            parent: parent.clone(),
                            tmp,
                            name: name.to_vec(),
                        },
                    );
                    if let Some(old) = old {
                        let _ = unlinkat(
                            Some(old.parent.as_raw_fd()),
                            osstr(&old.tmp),
                            UnlinkatFlags::NoRemoveDir,
                        );
                    }
                    return Ok(t);
                }
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(self.io(rel, action, e)),
            }
        }
    }

    fn make_dir(&self, parent: &Arc<OwnedFd>, rel: &[u8]) -> Result<(), FsError> {
        let (_, name) = split(rel);
        let pfd = parent.as_raw_fd();
        let mode = Mode::from_bits_truncate(0o700);
        match mkdirat(Some(pfd), osstr(name), mode) {
            Ok(()) => return self.note_dirty(parent, rel),
            Err(Errno::EEXIST) => {}
            Err(e) => return Err(self.io(rel, "create the directory", e)),
        }
        let st = fstatat(Some(pfd), osstr(name), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| self.io(rel, "inspect the existing object", e))?;
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            return Ok(());
        }
        if !self.opts.into_existing {
            return Err(FsError::Exists {
                path: self.shown(rel),
                found: kind_name(st.st_mode),
                hint: "the manifest names it twice, or something else writes to the target",
            });
        }
        // Swap a new directory in for the object in the way, then drop the old object.
        let tmp = loop {
            let tmp = Self::temp_name();
            match mkdirat(Some(pfd), osstr(&tmp), mode) {
                Ok(()) => break tmp,
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(self.io(rel, "create the directory", e)),
            }
        };
        let swapped = renameat2(
            Some(pfd),
            osstr(&tmp),
            Some(pfd),
            osstr(name),
            RenameFlags::RENAME_EXCHANGE,
        );
        let result = match swapped {
            Ok(()) => unlinkat(Some(pfd), osstr(&tmp), UnlinkatFlags::NoRemoveDir),
            Err(Errno::EINVAL | Errno::ENOSYS) => {
                // No RENAME_EXCHANGE on this file system: remove, then rename.
                unlinkat(Some(pfd), osstr(name), UnlinkatFlags::NoRemoveDir)
                    .and_then(|_| renameat(Some(pfd), osstr(&tmp), Some(pfd), osstr(name)))
            }
            Err(e) => Err(e),
        };
        result.map_err(|e| {
            let _ = unlinkat(Some(pfd), osstr(&tmp), UnlinkatFlags::RemoveDir);
            self.io(rel, "replace the existing object with a directory", e)
        })?;
        // A cached fd below this path would point at the replaced object.
        self.forget_dirs(rel);
        self.note_dirty(parent, rel)
    }

    /// Notes that directory `parent` gained or changed a name (for entry `rel`), so that
    /// [`finish`](Restorer::finish) makes it durable. Only a restore into an existing tree
    /// pays for this (see the module notes on durability).
    fn note_dirty(&self, parent: &Arc<OwnedFd>, rel: &[u8]) -> Result<(), FsError> {
        if !self.opts.into_existing {
            return Ok(());
        }
        let st = fstat(parent.as_raw_fd())
            .map_err(|e| self.io(path::parent(rel), "inspect the directory", e))?;
        self.state()
            .dirty_dirs
            .entry((st.st_dev, st.st_ino))
            .or_insert_with(|| parent.clone());
        Ok(())
    }

    /// Makes a finished object durable, then moves it over the name it replaces: steps 2–4
    /// of the module notes on durability. `file` is the object's open file, if it is one.
    fn settle(
        &self,
        e: &Entry,
        file: Option<&File>,
        pending: Option<&Pending>,
    ) -> Result<(), FsError> {
        if self.opts.into_existing {
            if let Some(f) = file {
                f.sync_all().map_err(|err| {
                    FsError::io(self.shown(&e.path), "sync the restored file", err)
                })?;
            }
        }
        let Some(p) = pending else {
            return Ok(());
        };
        let pfd = p.parent.as_raw_fd();
        renameat(Some(pfd), osstr(&p.tmp), Some(pfd), osstr(&p.name))
            .map_err(|err| self.io(&e.path, "move the restored object into place", err))?;
        self.note_dirty(&p.parent, &e.path)
    }

    /// `fsync`s every directory that gained or changed a name (step 4 of the module notes on
    /// durability).
    fn sync_dirty_dirs(&self) -> Result<(), FsError> {
        let dirs: Vec<Arc<OwnedFd>> = self.state().dirty_dirs.drain().map(|(_, d)| d).collect();
        for d in dirs {
            let fd = openat(
                Some(d.as_raw_fd()),
                ".",
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| self.io(b"", "open a restored directory to sync it", e))?;
            // SAFETY: `openat` just returned this fd and nothing else owns it.
            let dir = unsafe { File::from_raw_fd(fd) };
            dir.sync_all()
                .map_err(|e| FsError::io(self.shown(b""), "sync a restored directory", e))?;
        }
        Ok(())
    }

    fn forget_dirs(&self, rel: &[u8]) {
        let mut st = self.state();
        let mut prefix: Vec<u8> = Vec::new();
        let mut cut = None;
        for (i, (name, _)) in st.chain.iter().enumerate() {
            prefix = path::join(&prefix, name);
            if path::is_within(&prefix, rel) {
                cut = Some(i);
                break;
            }
        }
        if let Some(i) = cut {
            st.chain.truncate(i);
        }
    }

    fn make_file(&self, parent: &Arc<OwnedFd>, e: &Entry) -> Result<File, FsError> {
        let file = self.place(parent, &e.path, "create the file", |pfd, name| {
            let fd = openat(
                Some(pfd),
                osstr(name),
                OFlag::O_RDWR
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )?;
            // SAFETY: `openat` just returned this fd and nothing else owns it.
            Ok(unsafe { File::from_raw_fd(fd) })
        })?;
        file.set_len(e.size)
            .map_err(|err| FsError::io(self.shown(&e.path), "set the file's size", err))?;
        let md = file
            .metadata()
            .map_err(|err| FsError::io(self.shown(&e.path), "inspect the new file", err))?;
        self.state().created.insert((md.dev(), md.ino()));
        Ok(file)
    }

    /// Links a hardlink entry to its first name when this restorer created that file.
    /// Returns false when it did not (the caller restores the entry as a file instead).
    fn try_link(&self, parent: &Arc<OwnedFd>, e: &Entry) -> Result<bool, FsError> {
        let (first, first_at) = {
            let st = self.state();
            let first = st
                .link_subst
                .get(&e.link_target)
                .cloned()
                .unwrap_or_else(|| e.link_target.clone());
            let at = st
                .pending
                .get(&first)
                .map(|p| (p.parent.clone(), p.tmp.clone()));
            (first, at)
        };
        if first == e.path {
            return Ok(false);
        }
        let (fparent, fname) = match first_at {
            Some(at) => at,
            None => {
                let (dir, name) = split(&first);
                match self.dir_fd(dir) {
                    Ok(p) => (p, name.to_vec()),
                    Err(_) => return Ok(false),
                }
            }
        };
        let Ok(st) = fstatat(
            Some(fparent.as_raw_fd()),
            osstr(&fname),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) else {
            return Ok(false);
        };
        if st.st_mode & libc::S_IFMT != libc::S_IFREG
            || !self.state().created.contains(&(st.st_dev, st.st_ino))
        {
            return Ok(false);
        }
        let linked = self.place(parent, &e.path, "create the hardlink", |pfd, name| {
            linkat(
                Some(fparent.as_raw_fd()),
                osstr(&fname),
                Some(pfd),
                osstr(name),
                AtFlags::empty(),
            )
        });
        match linked {
            Ok(()) => Ok(true),
            // Too many links, or a file system boundary in an existing tree: keep a copy.
            Err(FsError::Io { source, .. })
                if matches!(
                    source.raw_os_error(),
                    Some(libc::EMLINK | libc::EXDEV | libc::EPERM)
                ) =>
            {
                Ok(false)
            }
            Err(err) => Err(err),
        }
    }

    fn make_node(&self, parent: &Arc<OwnedFd>, e: &Entry) -> Result<bool, FsError> {
        let (kind, what) = match e.kind {
            EntryKind::Fifo => (SFlag::S_IFIFO, "create the fifo"),
            EntryKind::Socket => (SFlag::S_IFSOCK, "create the socket"),
            EntryKind::CharDevice => (SFlag::S_IFCHR, "create the device node"),
            _ => (SFlag::S_IFBLK, "create the device node"),
        };
        let device = matches!(e.kind, EntryKind::CharDevice | EntryKind::BlockDevice);
        if device && !self.grants.devices {
            self.withhold(e, Withhold::Device);
            return Ok(false);
        }
        if device && !self.is_root {
            self.skip(e, "device nodes need root");
            return Ok(false);
        }
        let rdev = if device { e.rdev } else { 0 };
        let made = self.place(parent, &e.path, what, |pfd, name| {
            mknodat(
                Some(pfd),
                osstr(name),
                kind,
                Mode::from_bits_truncate(0o600),
                rdev,
            )
        });
        match made {
            Ok(()) => Ok(true),
            Err(FsError::Io { source, .. })
                if device && source.raw_os_error() == Some(libc::EPERM) =>
            {
                self.skip(
                    e,
                    "device nodes cannot be created here (no CAP_MKNOD, e.g. in a container)",
                );
                Ok(false)
            }
            Err(err) => Err(err),
        }
    }

    fn skip(&self, e: &Entry, why: &str) {
        let mut st = self.state();
        st.skipped_paths.insert(e.path.clone());
        st.note(format!("{}: {why}", show(&e.path)));
    }

    /// Creates the object of entry `e` inside the target.
    ///
    /// Returns the open file for a `File` entry, already sized to `e.size` so that holes stay
    /// holes: the caller writes the data regions with positional writes, then calls
    /// [`finish_entry`](Restorer::finish_entry). A `Hardlink` entry is linked to its first
    /// name when this restorer created that file, and returns `None`; otherwise it is
    /// restored as a file from its own chunks. Device nodes are skipped (with a note in the
    /// report) when not running as root, and withheld when not `privileged`.
    ///
    /// Refuses paths that are absolute, contain `.`, `..` or empty components, or lead
    /// through a symlink.
    pub fn create(&self, e: &Entry) -> Result<Option<File>, FsError> {
        Self::check_path(&e.path)?;
        if e.path.is_empty() {
            if e.kind != EntryKind::Dir {
                return Err(FsError::Invalid {
                    path: self.shown(b""),
                    why: "the root entry must be a directory".into(),
                });
            }
            self.state().entries += 1;
            return Ok(None);
        }
        if e.kind == EntryKind::Hardlink {
            if e.link_target.is_empty() {
                return Err(FsError::UnsafePath {
                    path: show(&e.path),
                    why: "a hardlink to the root".into(),
                });
            }
            Self::check_path(&e.link_target)?;
        }
        let parent = self.dir_fd(path::parent(&e.path))?;
        let file = match e.kind {
            EntryKind::Dir => {
                self.make_dir(&parent, &e.path)?;
                None
            }
            EntryKind::File => Some(self.make_file(&parent, e)?),
            EntryKind::Hardlink => {
                if self.try_link(&parent, e)? {
                    None
                } else {
                    let f = self.make_file(&parent, e)?;
                    self.state()
                        .link_subst
                        .entry(e.link_target.clone())
                        .or_insert_with(|| e.path.clone());
                    Some(f)
                }
            }
            EntryKind::Symlink => {
                let target = &e.link_target;
                if target.is_empty() || target.contains(&0) {
                    return Err(FsError::Invalid {
                        path: self.shown(&e.path),
                        why: "a symlink target must be non-empty and free of NUL bytes".into(),
                    });
                }
                self.place(&parent, &e.path, "create the symlink", |pfd, name| {
                    symlinkat(osstr(target), Some(pfd), osstr(name))
                })?;
                None
            }
            EntryKind::Fifo
            | EntryKind::Socket
            | EntryKind::CharDevice
            | EntryKind::BlockDevice => {
                if !self.make_node(&parent, e)? {
                    return Ok(None);
                }
                None
            }
        };
        self.state().entries += 1;
        Ok(file)
    }

    /// Applies the metadata of entry `e` once its content is complete, and for an entry that
    /// replaces an existing object, moves it into place. `file` is what
    /// [`create`](Restorer::create) returned for it. With `into_existing`, a file is
    /// `fsync`ed before it is moved into place (see the module notes on durability).
    ///
    /// Directory metadata is recorded and applied by [`finish`](Restorer::finish).
    pub fn finish_entry(&self, e: &Entry, file: Option<File>) -> Result<(), FsError> {
        Self::check_path(&e.path)?;
        if e.kind == EntryKind::Dir {
            self.state().dirs.push(e.clone());
            return Ok(());
        }
        let pending = {
            let mut st = self.state();
            if st.skipped_paths.remove(&e.path) {
                return Ok(());
            }
            st.pending.remove(&e.path)
        };
        let result = self
            .apply_leaf(e, file.as_ref(), pending.as_ref())
            .and_then(|reopened| {
                let f = file.as_ref().or(reopened.as_ref());
                self.settle(e, f, pending.as_ref())
            });
        if let (Err(_), Some(p)) = (&result, &pending) {
            let _ = unlinkat(
                Some(p.parent.as_raw_fd()),
                osstr(&p.tmp),
                UnlinkatFlags::NoRemoveDir,
            );
        }
        result
    }

    /// Applies the metadata of a non-directory entry. Returns the file it had to reopen for
    /// that (a file entry finished without its open file), for the caller to sync.
    fn apply_leaf(
        &self,
        e: &Entry,
        file: Option<&File>,
        pending: Option<&Pending>,
    ) -> Result<Option<File>, FsError> {
        let file_like = matches!(e.kind, EntryKind::File | EntryKind::Hardlink);
        if e.kind == EntryKind::Hardlink && file.is_none() {
            // Linked to its first name: the inode's metadata comes with that name.
            return Ok(None);
        }
        if let (true, Some(file)) = (file_like, file) {
            return self.apply(&Obj::File(file), e).map(|()| None);
        }
        let (parent, name) = match pending {
            Some(p) => (p.parent.clone(), p.tmp.clone()),
            None => (
                self.dir_fd(path::parent(&e.path))?,
                split(&e.path).1.to_vec(),
            ),
        };
        if file_like {
            let file = self.open_leaf(&parent, &name, &e.path, libc::S_IFREG)?;
            let md = file
                .metadata()
                .map_err(|err| FsError::io(self.shown(&e.path), "inspect", err))?;
            if !self.state().created.contains(&(md.dev(), md.ino())) {
                return Err(FsError::Exists {
                    path: self.shown(&e.path),
                    found: "file this restore did not create",
                    hint: "something else changed the target during the restore",
                });
            }
            self.apply(&Obj::File(&file), e)?;
            return Ok(Some(file));
        }
        let obj = self.open_path(&parent, &name, e)?;
        self.apply(&Obj::Path(obj), e).map(|()| None)
    }

    /// Holds the symlink, fifo, socket or device node `name` below `parent` by an
    /// `O_PATH | O_NOFOLLOW` fd, and checks that it is the object entry `e` describes: its
    /// kind, a single link, and for a device its number (rule 3 of the module notes).
    fn open_path(&self, parent: &OwnedFd, name: &[u8], e: &Entry) -> Result<PathObj, FsError> {
        let want = match e.kind {
            EntryKind::Symlink => libc::S_IFLNK,
            EntryKind::Fifo => libc::S_IFIFO,
            EntryKind::Socket => libc::S_IFSOCK,
            EntryKind::CharDevice => libc::S_IFCHR,
            EntryKind::BlockDevice => libc::S_IFBLK,
            EntryKind::File | EntryKind::Hardlink => libc::S_IFREG,
            EntryKind::Dir => libc::S_IFDIR,
        };
        let fd = openat(
            Some(parent.as_raw_fd()),
            osstr(name),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|err| self.io(&e.path, "open the restored object", err))?;
        // SAFETY: `openat` just returned this fd and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let st = fstat(fd.as_raw_fd()).map_err(|err| self.io(&e.path, "inspect", err))?;
        let device = matches!(e.kind, EntryKind::CharDevice | EntryKind::BlockDevice);
        if st.st_mode & libc::S_IFMT != want || st.st_nlink != 1 || (device && st.st_rdev != e.rdev)
        {
            return Err(FsError::Exists {
                path: self.shown(&e.path),
                found: kind_name(st.st_mode),
                hint: "something else changed the target during the restore",
            });
        }
        let proc = self
            .proc_fd
            .then(|| PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())));
        Ok(PathObj {
            fd,
            symlink: want == libc::S_IFLNK,
            proc,
        })
    }

    /// Opens an existing regular file or directory below `parent` without following a
    /// symlink, checking its type.
    fn open_leaf(
        &self,
        parent: &OwnedFd,
        name: &[u8],
        rel: &[u8],
        want: u32,
    ) -> Result<File, FsError> {
        let mut flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        if want == libc::S_IFDIR {
            flags |= OFlag::O_DIRECTORY;
        }
        let fd = openat(Some(parent.as_raw_fd()), osstr(name), flags, Mode::empty())
            .map_err(|err| self.io(rel, "open the restored object", err))?;
        // SAFETY: `openat` just returned this fd and nothing else owns it.
        let file = unsafe { File::from_raw_fd(fd) };
        let st = fstat(file.as_raw_fd()).map_err(|err| self.io(rel, "inspect", err))?;
        if st.st_mode & libc::S_IFMT != want {
            return Err(FsError::Exists {
                path: self.shown(rel),
                found: kind_name(st.st_mode),
                hint: "something else changed the target during the restore",
            });
        }
        Ok(file)
    }

    /// Applies extended attributes, owner, mode, capabilities and times, in that order (see
    /// the module notes for why), withholding privilege as the options say.
    fn apply(&self, obj: &Obj<'_>, e: &Entry) -> Result<(), FsError> {
        for (name, value) in e.xattrs.iter().filter(|x| x.0 != CAPABILITY) {
            self.set_xattr(obj, e, name, value)?;
        }
        if self.opts.owners {
            obj.chown(e.uid, e.gid)
                .map_err(|err| self.io(&e.path, "set the owner", err))?;
        }
        if e.kind != EntryKind::Symlink {
            let mode = self.grants.mode(e.mode);
            obj.chmod(mode)
                .map_err(|err| self.io(&e.path, "set the mode", err))?;
            if mode != e.mode & 0o7777 {
                self.withhold(e, Withhold::SetId);
            }
        }
        let mut caps = e.xattrs.iter().filter(|x| x.0 == CAPABILITY).peekable();
        if !self.grants.setid {
            if caps.peek().is_some() {
                self.withhold(e, Withhold::Capability);
            }
        } else {
            for (name, value) in caps {
                self.set_xattr(obj, e, name, value)?;
            }
        }
        obj.set_times(e.atime_ns, e.mtime_ns)
            .map_err(|err| self.io(&e.path, "set the times", err))
    }

    /// Counts and notes privilege withheld from entry `e`.
    fn withhold(&self, e: &Entry, what: Withhold) {
        let why = self.grants.why;
        let mut st = self.state();
        let note = match what {
            Withhold::SetId => {
                st.withheld.setid_modes += 1;
                format!("{}: setuid/setgid bits not restored: {why}", show(&e.path))
            }
            Withhold::Capability => {
                st.withheld.capabilities += 1;
                format!(
                    "{}: file capability (security.capability) not restored: {why}",
                    show(&e.path)
                )
            }
            Withhold::Device => {
                st.withheld.devices += 1;
                st.skipped_paths.insert(e.path.clone());
                format!("{}: device node not created: {why}", show(&e.path))
            }
        };
        st.note(note);
    }

    fn set_xattr(
        &self,
        obj: &Obj<'_>,
        e: &Entry,
        name: &[u8],
        value: &[u8],
    ) -> Result<(), FsError> {
        if !obj.can_set_xattrs() {
            self.state().note(format!(
                "{}: extended attribute {} not restored: /proc is not mounted, and without it \
                 this kind of object cannot carry one safely",
                show(&e.path),
                show(name)
            ));
            return Ok(());
        }
        let Err(err) = obj.set_xattr(name, value) else {
            return Ok(());
        };
        let why = match err.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT | libc::EIO | libc::EROFS) | None => {
                return Err(FsError::io(
                    self.shown(&e.path),
                    "set an extended attribute",
                    err,
                ))
            }
            Some(libc::ENOTSUP | libc::ENOSYS) => {
                "the target file system does not support it".to_string()
            }
            Some(libc::EPERM | libc::EACCES) => {
                "not permitted (it may need root, or this kind of object cannot carry it)".into()
            }
            Some(_) => format!("refused: {err}"),
        };
        self.state().note(format!(
            "{}: extended attribute {} not restored: {why}",
            show(&e.path),
            show(name)
        ));
        Ok(())
    }

    /// Applies the metadata of every directory, deepest first (the root entry applies to the
    /// target directory itself), and returns what the restore did.
    ///
    /// Objects created to replace existing ones but never finished are removed, leaving the
    /// existing ones in place. Every directory is attempted; the first error is returned.
    /// With `into_existing`, every directory that gained or changed a name is `fsync`ed
    /// before it returns, so what it reports restored survives a crash.
    pub fn finish(&self) -> Result<RestoreReport, FsError> {
        let mut dirs = std::mem::take(&mut self.state().dirs);
        // Reverse walk order puts every directory after all of its descendants.
        dirs.sort_by(|a, b| path::walk_cmp(&b.path, &a.path));
        let mut first_err = None;
        for d in &dirs {
            if let Err(err) = self.finish_dir(d) {
                first_err.get_or_insert(err);
            }
        }
        if let Err(err) = self.sync_dirty_dirs() {
            first_err.get_or_insert(err);
        }
        let mut st = self.state();
        let leftovers: Vec<(Vec<u8>, Pending)> = st.pending.drain().collect();
        for (rel, p) in leftovers {
            let _ = unlinkat(
                Some(p.parent.as_raw_fd()),
                osstr(&p.tmp),
                UnlinkatFlags::NoRemoveDir,
            );
            st.note(format!(
                "{}: never finished; the existing object was kept",
                show(&rel)
            ));
        }
        st.chain.clear();
        if let Some(err) = first_err {
            return Err(err);
        }
        let mut skipped = st.notes.clone();
        if st.notes_dropped > 0 {
            skipped.push(format!("... and {} more", st.notes_dropped));
        }
        Ok(RestoreReport {
            entries: st.entries,
            skipped,
            withheld: st.withheld,
        })
    }

    fn finish_dir(&self, d: &Entry) -> Result<(), FsError> {
        let dir = if d.path.is_empty() {
            self.open_leaf(&self.root, b".", b"", libc::S_IFDIR)?
        } else {
            let parent = self.dir_fd(path::parent(&d.path))?;
            self.open_leaf(&parent, split(&d.path).1, &d.path, libc::S_IFDIR)?
        };
        self.apply(&Obj::File(&dir), d)?;
        if self.opts.into_existing {
            // Its metadata and its names, in one go (step 4 of the notes on durability).
            let md = dir
                .metadata()
                .map_err(|err| FsError::io(self.shown(&d.path), "inspect", err))?;
            self.state().dirty_dirs.remove(&(md.dev(), md.ino()));
            dir.sync_all()
                .map_err(|err| FsError::io(self.shown(&d.path), "sync the directory", err))?;
        }
        Ok(())
    }
}

impl Drop for Restorer {
    /// Removes objects still waiting under a temporary name (a restore that failed part-way).
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        for (_, p) in st.pending.drain() {
            let _ = unlinkat(
                Some(p.parent.as_raw_fd()),
                osstr(&p.tmp),
                UnlinkatFlags::NoRemoveDir,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn restorer_is_shareable_between_threads() {
        assert_send_sync::<Restorer>();
    }

    #[test]
    fn splits_paths() {
        assert_eq!(split(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split(b"c"), (&b""[..], &b"c"[..]));
    }

    #[test]
    fn grants_follow_owners_and_privileged() {
        let g = |owners, privileged| {
            Grants::of(&RestoreOptions {
                owners,
                privileged,
                into_existing: false,
            })
        };
        let table = [
            // owners, privileged: setid and capabilities, devices, why
            (true, true, true, true, ""),
            (false, true, false, true, "owners are not restored"),
            (true, false, false, false, "the restore runs unprivileged"),
            (false, false, false, false, "the restore runs unprivileged"),
        ];
        for (owners, privileged, setid, devices, why) in table {
            let grants = g(owners, privileged);
            assert_eq!(
                (grants.setid, grants.devices, grants.why),
                (setid, devices, why),
                "owners {owners}, privileged {privileged}"
            );
        }
        // The file type never leaks into the mode; the sticky bit always stays.
        assert_eq!(g(true, true).mode(0o106_755), 0o6755);
        assert_eq!(g(false, true).mode(0o6755), 0o755);
        assert_eq!(g(false, true).mode(0o4711), 0o711);
        assert_eq!(g(true, false).mode(0o7777), 0o1777);
        assert_eq!(g(false, false).mode(0o1777), 0o1777);
        let defaults = Grants::of(&RestoreOptions::default());
        assert!(defaults.devices);
    }

    fn entry(path: &[u8], kind: EntryKind, mode: u32) -> Entry {
        let mut e = Entry::new(path.to_vec(), kind);
        e.mode = mode;
        e.uid = nix::unistd::geteuid().as_raw();
        e.gid = nix::unistd::getegid().as_raw();
        e.mtime_ns = 1_700_000_000_123_456_789;
        e.atime_ns = 1_700_000_000_000_000_001;
        e
    }

    /// Without /proc, the mode and times of a fifo or symlink still go through its `O_PATH`
    /// fd (`fchmodat2` and `utimensat` with `AT_EMPTY_PATH`), and its extended attributes
    /// are left out with a note rather than set through a path.
    #[test]
    fn without_proc_special_files_are_finished_through_their_fd() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().join("t");
        let opts = RestoreOptions {
            owners: false,
            privileged: true,
            into_existing: false,
        };
        let mut r = Restorer::new(&t, opts).unwrap();
        r.proc_fd = false;
        let mut fifo = entry(b"fifo", EntryKind::Fifo, 0o640);
        fifo.xattrs = vec![(b"trusted.x".to_vec(), b"v".to_vec())];
        let mut link = entry(b"link", EntryKind::Symlink, 0o777);
        link.link_target = b"fifo".to_vec();
        link.mtime_ns = 1_000_000_000_000_000_007;
        r.create(&fifo).unwrap();
        let finished = r.finish_entry(&fifo, None);
        r.create(&link).unwrap();
        r.finish_entry(&link, None).unwrap();
        let report = r.finish().unwrap();
        let md = |rel: &str| std::fs::symlink_metadata(t.join(rel)).unwrap();
        match finished {
            Ok(()) => {
                assert_eq!(md("fifo").mode() & 0o7777, 0o640);
                assert_eq!(md("fifo").mtime_nsec(), 123_456_789);
            }
            // A kernel before 6.6 has no fchmodat2: the entry fails, and nothing else is
            // chmod-ed in its place.
            Err(FsError::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOSYS) => {
                println!("note: no fchmodat2 here; the fifo's mode was not set");
                assert_eq!(md("fifo").mode() & 0o7777, 0o600);
            }
            Err(e) => panic!("{e}"),
        }
        // The symlink's times went to the symlink, not to the fifo it points to.
        assert_eq!(
            (md("link").mtime(), md("link").mtime_nsec()),
            (1_000_000_000, 7)
        );
        assert!(
            report.skipped[0].starts_with("fifo: extended attribute trusted.x not restored: /proc"),
            "{:?}",
            report.skipped
        );
    }

    /// Rule 8: even without /proc, no metadata call resolves a path from the target's root,
    /// so a parent directory swapped for a symlink between `create` and `finish_entry` leads
    /// nothing outside.
    #[test]
    fn as_root_without_proc_a_parent_swapped_for_a_symlink_is_not_followed() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root: trusted.* attributes are the ones a fifo can carry"
        );
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        nix::unistd::mkfifo(&outside.join("p"), Mode::from_bits_truncate(0o600)).unwrap();
        let t = tmp.path().join("t");
        let opts = RestoreOptions {
            owners: true,
            privileged: true,
            into_existing: false,
        };
        let mut r = Restorer::new(&t, opts).unwrap();
        r.proc_fd = false;
        let d = entry(b"d", EntryKind::Dir, 0o755);
        r.create(&d).unwrap();
        r.finish_entry(&d, None).unwrap();
        let mut p = entry(b"d/p", EntryKind::Fifo, 0o640);
        p.xattrs = vec![(b"trusted.x".to_vec(), b"v".to_vec())];
        r.create(&p).unwrap();
        std::fs::rename(t.join("d"), t.join("moved")).unwrap();
        std::os::unix::fs::symlink(&outside, t.join("d")).unwrap();
        let _ = r.finish_entry(&p, None);
        let _ = r.finish();
        let outside_p = outside.join("p");
        assert_eq!(xattr::get(&outside_p, "trusted.x").unwrap(), None);
        let md = std::fs::symlink_metadata(&outside_p).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o600);
        assert_ne!(md.mtime_nsec(), 123_456_789);
    }

    #[test]
    fn times_before_the_epoch_convert() {
        let t = timespec(-1);
        assert_eq!((t.tv_sec(), t.tv_nsec()), (-1, 999_999_999));
        let t = timespec(1_600_000_000_123_456_789);
        assert_eq!((t.tv_sec(), t.tv_nsec()), (1_600_000_000, 123_456_789));
    }
}
