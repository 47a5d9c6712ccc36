//! Restoring into an existing tree: directories merge, other objects are replaced atomically,
//! and an existing symlink at the leaf is replaced, never followed.

mod common;

use std::io::Read;
use std::os::unix::fs::MetadataExt;

use cairn_core::EntryKind;
use cairn_fs::{FsError, RestoreOptions, Restorer};
use common::*;

fn into_existing(target: &std::path::Path) -> Restorer {
    Restorer::new(
        target,
        RestoreOptions {
            owners: false,
            privileged: true,
            into_existing: true,
        },
    )
    .unwrap()
}

#[test]
fn an_existing_file_is_replaced_atomically() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("t");
    std::fs::create_dir_all(t.join("d")).unwrap();
    std::fs::write(t.join("d/f"), b"old content").unwrap();
    std::fs::write(t.join("d/other"), b"left alone").unwrap();
    let mut old_handle = std::fs::File::open(t.join("d/f")).unwrap();
    let old_ino = std::fs::metadata(t.join("d/f")).unwrap().ino();

    let r = into_existing(&t);
    let d = entry(b"d", EntryKind::Dir, 0o750);
    assert!(r.create(&d).unwrap().is_none());
    r.finish_entry(&d, None).unwrap();
    let e = file_entry(b"d/f", b"new content!");
    let f = r.create(&e).unwrap().expect("a file");
    write_data(&f, &e, b"new content!");
    // Until the entry is finished, the path still shows the old, complete file.
    assert_eq!(std::fs::read(t.join("d/f")).unwrap(), b"old content");
    r.finish_entry(&e, Some(f)).unwrap();
    assert_eq!(std::fs::read(t.join("d/f")).unwrap(), b"new content!");
    let md = std::fs::metadata(t.join("d/f")).unwrap();
    assert_ne!(md.ino(), old_ino);
    assert_eq!(md.mode() & 0o7777, 0o644);
    assert_eq!(md.mtime_nsec(), 123_456_789);
    // The old inode was not rewritten in place.
    let mut s = String::new();
    old_handle.read_to_string(&mut s).unwrap();
    assert_eq!(s, "old content");
    let report = r.finish().unwrap();
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    // The directory merged: its other file is still there, no temporary names are left,
    // and the directory got the entry's metadata.
    assert_eq!(names(&t.join("d")), ["f", "other"]);
    assert_eq!(
        std::fs::metadata(t.join("d")).unwrap().mode() & 0o7777,
        0o750
    );
}

#[test]
fn an_existing_symlink_at_the_leaf_is_replaced_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"sentinel").unwrap();
    let t = tmp.path().join("t");
    std::fs::create_dir(&t).unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), t.join("f")).unwrap();
    std::os::unix::fs::symlink(&outside, t.join("d")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), t.join("p")).unwrap();

    let r = into_existing(&t);
    let e = file_entry(b"f", b"restored");
    let f = r.create(&e).unwrap().unwrap();
    write_data(&f, &e, b"restored");
    r.finish_entry(&e, Some(f)).unwrap();
    // A directory entry replaces the symlink `d`; what goes beneath lands inside the target.
    let d = entry(b"d", EntryKind::Dir, 0o755);
    r.create(&d).unwrap();
    r.finish_entry(&d, None).unwrap();
    let x = file_entry(b"d/x", b"inside");
    let f = r.create(&x).unwrap().unwrap();
    write_data(&f, &x, b"inside");
    r.finish_entry(&x, Some(f)).unwrap();
    // A fifo replaces a symlink; its mode and times go to the fifo, not the symlink target.
    let p = entry(b"p", EntryKind::Fifo, 0o600);
    r.create(&p).unwrap();
    r.finish_entry(&p, None).unwrap();
    r.finish().unwrap();

    assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"sentinel");
    assert_eq!(names(&outside), ["secret"]);
    let secret = std::fs::metadata(outside.join("secret")).unwrap();
    assert_ne!(secret.mode() & 0o777, 0o600);
    assert_ne!(secret.mtime_nsec(), 123_456_789);
    assert!(std::fs::symlink_metadata(t.join("f")).unwrap().is_file());
    assert_eq!(std::fs::read(t.join("f")).unwrap(), b"restored");
    assert!(std::fs::symlink_metadata(t.join("d")).unwrap().is_dir());
    assert_eq!(std::fs::read(t.join("d/x")).unwrap(), b"inside");
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(t.join("p"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(names(&t), ["d", "f", "p"]);
}

#[test]
fn a_directory_in_the_way_is_never_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("t");
    std::fs::create_dir_all(t.join("x")).unwrap();
    std::fs::write(t.join("x/keep"), b"k").unwrap();
    let r = into_existing(&t);
    let got = r.create(&file_entry(b"x", b"data"));
    assert!(
        matches!(
            got,
            Err(FsError::Exists {
                found: "directory",
                ..
            })
        ),
        "{got:?}"
    );
    assert_eq!(std::fs::read(t.join("x/keep")).unwrap(), b"k");
}

#[test]
fn an_unfinished_replacement_keeps_the_existing_file() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("t");
    std::fs::create_dir(&t).unwrap();
    std::fs::write(t.join("a"), b"old a").unwrap();
    std::fs::write(t.join("b"), b"old b").unwrap();
    {
        let r = into_existing(&t);
        let a = file_entry(b"a", b"new");
        let f = r.create(&a).unwrap().unwrap();
        write_data(&f, &a, b"new");
        let report = r.finish().unwrap();
        assert!(report
            .skipped
            .iter()
            .any(|n| n.contains("a: never finished")));
    }
    {
        // Dropped part-way (a failed restore): the temporary file is cleaned up.
        let r = into_existing(&t);
        let b = file_entry(b"b", b"new");
        let _f = r.create(&b).unwrap().unwrap();
        assert_eq!(names(&t).len(), 3);
    }
    assert_eq!(names(&t), ["a", "b"]);
    assert_eq!(std::fs::read(t.join("a")).unwrap(), b"old a");
    assert_eq!(std::fs::read(t.join("b")).unwrap(), b"old b");
}
