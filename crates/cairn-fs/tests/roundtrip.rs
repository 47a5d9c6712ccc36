//! A tree with every kind of object survives walk + read + restore unchanged, and the tree
//! comparison notices every kind of difference.

mod common;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use cairn_core::EntryKind;
use cairn_fs::testing::{build_every_kind_tree, diff_trees, make_removable, DiffOptions};
use cairn_fs::RestoreOptions;
use common::*;

fn opts() -> DiffOptions {
    DiffOptions {
        owners: is_root(),
        atime: false,
    }
}

/// The differences a default restore must show: none as root; without root, owners are not
/// restored, so the setuid and setgid bits are withheld.
fn expected_diffs() -> Vec<String> {
    if is_root() {
        Vec::new()
    } else {
        vec![
            "modes/sgid: mode 2755 vs 755".to_string(),
            "modes/suid: mode 4755 vs 755".to_string(),
        ]
    }
}

/// The differences between two trees, sorted.
fn diffs(src: &Path, out: &Path) -> Vec<String> {
    let mut d = diff_trees(src, out, opts());
    d.sort();
    d
}

/// Builds the tree in `tmp/src` and restores it into `tmp/out`.
fn round_trip(
    tmp: &Path,
) -> (
    std::path::PathBuf,
    std::path::PathBuf,
    cairn_fs::RestoreReport,
) {
    let src = tmp.join("src");
    let notes = build_every_kind_tree(&src);
    // As root every kind is built (CI runs as root); otherwise the notes say what is not.
    assert!(!is_root() || notes.is_empty(), "{notes:?}");
    for note in notes {
        println!("note: {note}");
    }
    let (items, errors) = backup(&src);
    assert!(errors.is_empty(), "walk errors: {errors:?}");
    let out = tmp.join("out");
    let report = restore(&items, &out, RestoreOptions::default()).unwrap();
    // Access times are restored too; check them before anything reads the copy. (The
    // source's own access times moved when the backup read it, so `diff_trees` cannot.)
    for it in items.iter().filter(|i| i.entry.kind != EntryKind::Hardlink) {
        let md = std::fs::symlink_metadata(out.join(std::ffi::OsStr::from_bytes(&it.entry.path)))
            .unwrap();
        let atime = md.atime() * 1_000_000_000 + md.atime_nsec();
        assert_eq!(
            atime,
            it.entry.atime_ns,
            "{}",
            cairn_fs::show(&it.entry.path)
        );
    }
    (src, out, report)
}

#[test]
fn every_kind_of_object_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, out, report) = round_trip(tmp.path());
    for note in &report.skipped {
        println!("restore note: {note}");
    }
    let d = diffs(&src, &out);
    assert_eq!(
        d,
        expected_diffs(),
        "restored tree differs:\n{}",
        d.join("\n")
    );

    // The features the comparison relies on are really there in the copy.
    let md = |rel: &str| std::fs::symlink_metadata(out.join(rel)).unwrap();
    assert_eq!(md("links/a").ino(), md("other/c").ino());
    assert_eq!(md("links/a").nlink(), 3);
    assert!(
        md("sparse.img").blocks() * 512 < 3 << 20,
        "holes were filled"
    );
    let suid = if is_root() { 0o4755 } else { 0o755 };
    assert_eq!(md("modes/suid").mode() & 0o7777, suid);
    assert_eq!(md("ro").mode() & 0o7777, 0o555);
    assert_eq!(
        md("").mtime_nsec(),
        std::fs::metadata(&src).unwrap().mtime_nsec()
    );
    if is_root() {
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(
            &md("special/null").file_type()
        ));
        assert_eq!(md("owned/link").uid(), 1234);
        assert!(
            xattr::get(out.join("caps/ping"), "security.capability")
                .unwrap()
                .is_some(),
            "the capability did not survive the chown"
        );
        assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    }
    if xattr::get(src.join("acl/dir"), "system.posix_acl_default")
        .ok()
        .flatten()
        .is_some()
    {
        // The default ACL was applied after the children were created.
        let acl = |rel: &str| xattr::get(out.join(rel), "system.posix_acl_access").unwrap();
        assert!(acl("acl/dir/before").is_none());
        assert!(acl("acl/dir/after").is_some());
    }
    make_removable(tmp.path());
}

#[test]
fn walk_order_is_manifest_order() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    build_every_kind_tree(&src);
    let (items, _) = backup(&src);
    let paths: Vec<&[u8]> = items.iter().map(|i| &i.entry.path[..]).collect();
    let mut sorted = paths.clone();
    sorted.sort_by(|a, b| cairn_core::path::walk_cmp(a, b));
    sorted.dedup();
    assert_eq!(paths, sorted);
    assert_eq!(paths[0], b"");
    assert!(paths.contains(&&b"names/caf\xe9"[..]));
    assert!(paths.contains(&&b"names/new\nline"[..]));
    // Every hardlink points at an earlier name.
    for (i, it) in items.iter().enumerate() {
        if it.entry.kind == EntryKind::Hardlink {
            assert!(paths[..i].contains(&&it.entry.link_target[..]));
        }
    }
    make_removable(tmp.path());
}

#[test]
fn diff_trees_notices_every_kind_of_difference() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, out, _) = round_trip(tmp.path());
    assert_eq!(diffs(&src, &out), expected_diffs());
    let o = |rel: &str| out.join(rel);
    let expect = |what: &str, needle: &str| {
        let d = diff_trees(&src, &out, opts());
        assert!(
            d.iter().any(|l| l.contains(needle)),
            "{what}: no difference mentioning {needle:?} in {d:?}"
        );
    };
    let keep_times = |rel: &str, f: &dyn Fn()| {
        let md = std::fs::symlink_metadata(o(rel)).unwrap();
        f();
        nix::sys::stat::utimensat(
            None,
            &o(rel),
            &nix::sys::time::TimeSpec::new(md.atime(), md.atime_nsec()),
            &nix::sys::time::TimeSpec::new(md.mtime(), md.mtime_nsec()),
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    };

    std::fs::set_permissions(o("file.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    expect("mode", "file.txt: mode");

    let md = std::fs::metadata(o("empty")).unwrap();
    nix::sys::stat::utimensat(
        None,
        &o("empty"),
        &nix::sys::time::TimeSpec::new(md.atime(), md.atime_nsec()),
        &nix::sys::time::TimeSpec::new(md.mtime(), md.mtime_nsec() + 1),
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
    expect("mtime", "empty: mtime");

    cairn_fs::testing::overwrite_keeping_times(&o("big.bin"), b"changed").unwrap();
    expect("content", "big.bin: content differs");

    keep_times("sym", &|| {
        std::fs::remove_file(o("sym/rel")).unwrap();
        std::os::unix::fs::symlink("../empty", o("sym/rel")).unwrap();
    });
    expect("symlink target", "sym/rel: symlink target");
    expect("symlink mtime", "sym/rel: mtime");

    keep_times("other", &|| {
        std::fs::copy(o("other/c"), o("other/c.tmp")).unwrap();
        std::fs::rename(o("other/c.tmp"), o("other/c")).unwrap();
    });
    expect("hardlinks", "other/c: hardlinked");

    keep_times("sparse.img", &|| {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(o("sparse.img"))
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &vec![0u8; 4 << 20], 4 << 20).unwrap();
    });
    expect("sparse layout", "sparse.img: sparse layout");

    if xattr::get(o("xattr/file"), "user.comment")
        .ok()
        .flatten()
        .is_some()
    {
        keep_times("xattr/file", &|| {
            xattr::remove(o("xattr/file"), "user.comment").unwrap();
        });
        expect("xattrs", "xattr/file: xattrs");
    }

    std::fs::write(o("extra"), b"x").unwrap();
    expect("extra name", "extra: only in the copy");
    std::fs::remove_file(o("names/new\nline")).unwrap();
    expect("missing name", "names/new\\nline: missing from the copy");

    if is_root() {
        std::os::unix::fs::lchown(o("owned/file"), Some(0), None).unwrap();
        expect("owner", "owned/file: owner");
    }
    make_removable(tmp.path());
}
