//! Test helpers: a tree with every kind of file-system object, and (re-exported from
//! [`crate::compare`]) a tree comparison.
//!
//! Compiled only for tests and with the `testing` feature, which only dev-dependencies and
//! the end-to-end test package enable: these helpers are not part of the crate's API.
//! Integration tests across the workspace use them to check that a backup and restore round
//! trip loses nothing. They panic on setup failures (they are test code); what they cannot
//! build on this machine (devices when not root, for example) is returned as notes instead.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;

use nix::sys::stat::{Mode, SFlag};
use nix::sys::time::TimeSpec;

pub use crate::compare::{diff_trees, DiffOptions};

fn must<T>(what: &str, r: io::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("building the test tree: {what}: {e}"))
}

fn must_nix<T>(what: &str, r: nix::Result<T>) -> T {
    must(what, r.map_err(|e| io::Error::from_raw_os_error(e as i32)))
}

/// Pseudo-random, non-repeating bytes: the workspace's one generator, `noise(len, seed)`.
pub use cairn_core::testing::noise;

/// A raw POSIX ACL xattr value (version 2) from (tag, perm, id) entries.
fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// Panics with "needs root: `why`" unless the process runs as root. A test that needs root
/// calls this first: it fails loudly elsewhere instead of passing without checking anything
/// (CI runs the tests as root). The one way Cairn's tests say they need root.
pub fn require_root(why: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root: {why} (run the tests as root, as CI does)"
    );
}

const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;
const ACL_UNDEFINED_ID: u32 = u32::MAX;

/// Builds, in `dir` (created if needed), a tree holding every kind of object a restore must
/// reproduce: regular, empty, sparse and large files, a hardlink group across directories,
/// relative, absolute and dangling symlinks, a fifo, a socket, device nodes, setuid, setgid
/// and sticky modes, a read-only directory with children, non-UTF-8 and newline names,
/// extended attributes, POSIX ACLs (access and default), a file capability, other owners,
/// nanosecond times and deep nesting.
///
/// Returns notes on what could not be built here (for example device nodes when not root).
pub fn build_every_kind_tree(dir: &Path) -> Vec<String> {
    let root = nix::unistd::geteuid().is_root();
    let mut notes = Vec::new();
    let p = |rel: &str| dir.join(rel);
    let mkdir = |rel: &str| must(rel, fs::create_dir_all(p(rel)));
    let chmod = |rel: &str, mode: u32| {
        must(
            rel,
            fs::set_permissions(p(rel), fs::Permissions::from_mode(mode)),
        )
    };
    let chown = |rel: &str| {
        must(
            rel,
            std::os::unix::fs::lchown(p(rel), Some(1234), Some(5678)),
        )
    };
    mkdir("");

    // Plain files.
    must("file.txt", fs::write(p("file.txt"), b"hello, world\n"));
    must("empty", fs::write(p("empty"), b""));
    must(
        "big.bin",
        fs::write(p("big.bin"), noise(12 << 20, 0xc0ffee)),
    );

    // Sparse: data at [0, 1 MiB) and [3 MiB, 4 MiB), holes in the middle and at the end.
    {
        let f = must("sparse.img", File::create(p("sparse.img")));
        must("sparse.img", f.set_len(8 << 20));
        must("sparse.img", f.write_all_at(&noise(1 << 20, 7), 0));
        must("sparse.img", f.write_all_at(&noise(1 << 20, 8), 3 << 20));
    }

    // Hardlinks: three names of one inode, in two directories.
    mkdir("links");
    mkdir("other");
    must(
        "links/a",
        fs::write(p("links/a"), b"one inode, three names\n"),
    );
    must("links/b", fs::hard_link(p("links/a"), p("links/b")));
    must("other/c", fs::hard_link(p("links/a"), p("other/c")));

    // Symlinks.
    mkdir("sym");
    must(
        "sym/rel",
        std::os::unix::fs::symlink("../file.txt", p("sym/rel")),
    );
    must(
        "sym/abs",
        std::os::unix::fs::symlink("/etc/passwd", p("sym/abs")),
    );
    must(
        "sym/dangling",
        std::os::unix::fs::symlink("does/not/exist", p("sym/dangling")),
    );

    // Special files.
    mkdir("special");
    must_nix(
        "special/fifo",
        nix::unistd::mkfifo(&p("special/fifo"), Mode::from_bits_truncate(0o640)),
    );
    match std::os::unix::net::UnixListener::bind(p("special/sock")) {
        Ok(l) => drop(l),
        Err(e) => notes.push(format!("no socket: {e}")),
    }
    if root {
        let dev = |rel: &str, kind: SFlag, major: u64, minor: u64| {
            nix::sys::stat::mknod(
                &p(rel),
                kind,
                Mode::from_bits_truncate(0o660),
                nix::sys::stat::makedev(major, minor),
            )
        };
        if let Err(e) = dev("special/null", SFlag::S_IFCHR, 1, 3)
            .and_then(|()| dev("special/loop0", SFlag::S_IFBLK, 7, 0))
        {
            notes.push(format!("no device nodes: {e}"));
        }
    } else {
        notes.push("no device nodes: not root".into());
    }

    // Modes.
    mkdir("modes/sticky");
    mkdir("modes/sgid");
    must("modes/suid", fs::write(p("modes/suid"), b"#!/bin/sh\n"));
    must("modes/sgid/child", fs::write(p("modes/sgid/child"), b"x"));
    must("modes/private", fs::write(p("modes/private"), b"secret"));
    chmod("modes/private", 0o600);

    // Names that are not UTF-8 or hold a newline.
    mkdir("names");
    let odd = |name: &[u8]| dir.join("names").join(std::ffi::OsStr::from_bytes(name));
    must(
        "names/caf\\xe9",
        fs::write(odd(b"caf\xe9"), b"latin-1 name"),
    );
    must(
        "names/new\\nline",
        fs::write(odd(b"new\nline"), b"newline name"),
    );

    // Extended attributes.
    mkdir("xattr");
    match xattr::set(p("xattr"), "user.dir", b"d") {
        Ok(()) => {
            must("xattr/file", fs::write(p("xattr/file"), b"x"));
            must(
                "xattr",
                xattr::set(p("xattr/file"), "user.comment", b"hello"),
            );
            must(
                "xattr",
                xattr::set(p("xattr/file"), "user.binary", b"\x00\x01\x02\xff"),
            );
            if root {
                if let Err(e) = xattr::set(p("xattr/file"), "trusted.cairn", b"t") {
                    notes.push(format!("no trusted.* xattr: {e}"));
                }
            }
        }
        Err(e) => notes.push(format!("no user.* xattrs: {e}")),
    }

    // POSIX ACLs, raw: an access ACL on a file, and a default ACL on a directory that holds
    // one child created before it (no ACL) and one created after (inherits one).
    mkdir("acl/dir");
    must("acl/file", fs::write(p("acl/file"), b"x"));
    must("acl/dir/before", fs::write(p("acl/dir/before"), b"x"));
    let access = acl(&[
        (ACL_USER_OBJ, 6, ACL_UNDEFINED_ID),
        (ACL_USER, 4, 1234),
        (ACL_GROUP_OBJ, 4, ACL_UNDEFINED_ID),
        (ACL_MASK, 4, ACL_UNDEFINED_ID),
        (ACL_OTHER, 0, ACL_UNDEFINED_ID),
    ]);
    let default = acl(&[
        (ACL_USER_OBJ, 7, ACL_UNDEFINED_ID),
        (ACL_USER, 5, 1234),
        (ACL_GROUP_OBJ, 5, ACL_UNDEFINED_ID),
        (ACL_MASK, 5, ACL_UNDEFINED_ID),
        (ACL_OTHER, 5, ACL_UNDEFINED_ID),
    ]);
    match xattr::set(p("acl/file"), "system.posix_acl_access", &access)
        .and_then(|()| xattr::set(p("acl/dir"), "system.posix_acl_default", &default))
    {
        Ok(()) => must("acl/dir/after", fs::write(p("acl/dir/after"), b"x")),
        Err(e) => notes.push(format!("no POSIX ACLs: {e}")),
    }

    // Other owners, and a file capability (which a chown clears).
    mkdir("owned/dir");
    must("owned/file", fs::write(p("owned/file"), b"x"));
    must(
        "owned/link",
        std::os::unix::fs::symlink("file", p("owned/link")),
    );
    mkdir("caps");
    must("caps/ping", fs::write(p("caps/ping"), b"\x7fELF"));
    if root {
        for rel in [
            "owned/dir",
            "owned/file",
            "owned/link",
            "modes/suid",
            "caps/ping",
        ] {
            chown(rel);
        }
        chmod("caps/ping", 0o755);
        // VFS_CAP_REVISION_2 | effective; permitted = CAP_NET_RAW.
        let mut cap = (0x0200_0000u32 | 1).to_le_bytes().to_vec();
        for word in [1u32 << 13, 0, 0, 0] {
            cap.extend_from_slice(&word.to_le_bytes());
        }
        if let Err(e) = xattr::set(p("caps/ping"), "security.capability", &cap) {
            notes.push(format!("no file capability: {e}"));
        }
    } else {
        notes.push("no other owners and no file capability: not root".into());
    }
    chmod("modes/suid", 0o4755);
    chmod("modes/sgid", 0o2755);
    chmod("modes/sticky", 0o1777);

    // Deep nesting.
    let mut deep = String::from("deep");
    for i in 0..40 {
        deep.push_str(&format!("/{i}"));
    }
    mkdir(&deep);
    must("deep leaf", fs::write(p(&deep).join("leaf"), b"deep"));

    // A read-only directory with children (set last: nothing is created in it afterwards).
    mkdir("ro/sub");
    must("ro/inner.txt", fs::write(p("ro/inner.txt"), b"x"));
    must("ro/sub/deeper", fs::write(p("ro/sub/deeper"), b"x"));
    chmod("ro", 0o555);
    chmod("", 0o755);

    // Nanosecond times on everything, children before their directories.
    let mut n = 0i64;
    set_times_below(dir, &mut n);
    notes
}

fn set_times_below(path: &Path, n: &mut i64) {
    let md = must("stat", fs::symlink_metadata(path));
    if md.is_dir() {
        let mut names: Vec<_> = must("list", fs::read_dir(path))
            .map(|d| must("list", d).file_name())
            .collect();
        names.sort();
        for name in names {
            set_times_below(&path.join(name), n);
        }
    }
    *n += 1;
    let mtime = TimeSpec::new(1_600_000_000 + *n * 3600, (*n * 7_919_117) % 1_000_000_000);
    let atime = TimeSpec::new(1_650_000_000 + *n, (*n * 104_729) % 1_000_000_000);
    must_nix(
        "set times",
        nix::sys::stat::utimensat(
            None,
            path,
            &atime,
            &mtime,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        ),
    );
}

/// Makes every directory below `dir` writable and searchable by its owner again, so that a
/// tree built by [`build_every_kind_tree`] can be deleted by a user who is not root.
pub fn make_removable(dir: &Path) {
    let Ok(md) = fs::symlink_metadata(dir) else {
        return;
    };
    if !md.is_dir() {
        return;
    }
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(md.mode() | 0o700));
    if let Ok(rd) = fs::read_dir(dir) {
        for d in rd.flatten() {
            make_removable(&d.path());
        }
    }
}

/// Writes `data` at the start of the file at `path`, keeping its times: a helper for tests
/// that must change content without changing anything else.
pub fn overwrite_keeping_times(path: &Path, data: &[u8]) -> io::Result<()> {
    let md = fs::symlink_metadata(path)?;
    let mut f = fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(data)?;
    drop(f);
    nix::sys::stat::utimensat(
        None,
        path,
        &TimeSpec::new(md.atime(), md.atime_nsec()),
        &TimeSpec::new(md.mtime(), md.mtime_nsec()),
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| io::Error::from_raw_os_error(e as i32))
}
