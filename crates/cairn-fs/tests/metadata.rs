//! Metadata details of a restore: directory order, times, attributes that cannot be set.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use cairn_core::EntryKind;
use cairn_fs::{RestoreOptions, Restorer};
use common::*;

fn restorer(target: &std::path::Path) -> Restorer {
    Restorer::new(
        target,
        RestoreOptions {
            owners: false,
            privileged: true,
            into_existing: false,
        },
    )
    .unwrap()
}

#[test]
fn directory_metadata_is_applied_deepest_first() {
    // Only a user that permissions apply to notices a parent closed too early.
    if rerun_as_nobody("directory_metadata_is_applied_deepest_first") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("t");
    let r = restorer(&t);
    let mut dirs = [
        entry(b"", EntryKind::Dir, 0o750),
        entry(b"a", EntryKind::Dir, 0o000),
        entry(b"a/b", EntryKind::Dir, 0o500),
        entry(b"a/b/c", EntryKind::Dir, 0o700),
    ];
    for (i, d) in dirs.iter_mut().enumerate() {
        d.mtime_ns = 1_500_000_000_000_000_000 + i as i64;
        r.create(d).unwrap();
        r.finish_entry(d, None).unwrap();
    }
    let f = file_entry(b"a/b/c/f", b"");
    let file = r.create(&f).unwrap().unwrap();
    r.finish_entry(&f, Some(file)).unwrap();
    let report = r.finish().unwrap();
    assert_eq!(report.entries, 5);
    assert_eq!(
        std::fs::metadata(t.join("a")).unwrap().mode() & 0o7777,
        0o000
    );
    std::fs::set_permissions(t.join("a"), std::fs::Permissions::from_mode(0o700)).unwrap();
    for (rel, d) in ["", "a/b", "a/b/c"]
        .iter()
        .zip([&dirs[0], &dirs[2], &dirs[3]])
    {
        let md = std::fs::metadata(t.join(rel)).unwrap();
        assert_eq!(md.mode() & 0o7777, d.mode, "{rel}");
        assert_eq!(
            md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            d.mtime_ns,
            "{rel}"
        );
    }
    std::fs::set_permissions(t.join("a/b"), std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn times_keep_nanoseconds_and_may_predate_the_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("t");
    let r = restorer(&t);
    let mut f = file_entry(b"old", b"");
    f.mtime_ns = -1_234_567_891; // 1969-12-31T23:59:58.765432109Z
    f.atime_ns = 86_400_000_000_001;
    let file = r.create(&f).unwrap().unwrap();
    r.finish_entry(&f, Some(file)).unwrap();
    let mut l = symlink_entry(b"link", b"old");
    l.mtime_ns = 1_000_000_000_000_000_007;
    r.create(&l).unwrap();
    r.finish_entry(&l, None).unwrap();
    r.finish().unwrap();
    let md = std::fs::symlink_metadata(t.join("old")).unwrap();
    assert_eq!((md.mtime(), md.mtime_nsec()), (-2, 765_432_109));
    assert_eq!((md.atime(), md.atime_nsec()), (86_400, 1));
    let md = std::fs::symlink_metadata(t.join("link")).unwrap();
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_000_000_000, 7));
    // The symlink's times did not go to its target.
    let md = std::fs::metadata(t.join("old")).unwrap();
    assert_eq!(md.mtime(), -2);
}

#[test]
fn attributes_that_cannot_be_set_become_notes() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("t");
    let r = restorer(&t);
    // Linux allows no user.* attributes on a symlink.
    let mut l = symlink_entry(b"link", b"x");
    l.xattrs = vec![(b"user.note".to_vec(), b"v".to_vec())];
    r.create(&l).unwrap();
    r.finish_entry(&l, None).unwrap();
    let mut f = file_entry(b"f", b"");
    f.xattrs = vec![(b"nonsense.x".to_vec(), b"v".to_vec())];
    let file = r.create(&f).unwrap().unwrap();
    r.finish_entry(&f, Some(file)).unwrap();
    let report = r.finish().unwrap();
    assert_eq!(report.skipped.len(), 2, "{:?}", report.skipped);
    assert!(report.skipped[0].starts_with("link: extended attribute user.note not restored"));
    assert!(report.skipped[1].starts_with("f: extended attribute nonsense.x not restored"));
    // The rest of the metadata was still applied.
    let md = std::fs::symlink_metadata(t.join("f")).unwrap();
    assert_eq!(md.mtime_nsec(), 123_456_789);
}

#[test]
fn setuid_and_setgid_bits_survive_the_owner_change() {
    cairn_fs::testing::require_root("changes owners");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("t");
    let r = Restorer::new(
        &t,
        RestoreOptions {
            owners: true,
            privileged: true,
            into_existing: false,
        },
    )
    .unwrap();
    let mut f = file_entry(b"suid", b"#!");
    f.mode = 0o6755;
    f.uid = 1234;
    f.gid = 5678;
    let file = r.create(&f).unwrap().unwrap();
    write_data(&file, &f, b"#!");
    r.finish_entry(&f, Some(file)).unwrap();
    r.finish().unwrap();
    let md = std::fs::metadata(t.join("suid")).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o7777),
        (1234, 5678, 0o6755)
    );
}

#[test]
fn as_root_attributes_of_special_files_and_symlinks_go_to_the_object_itself() {
    cairn_fs::testing::require_root(
        "trusted.* attributes are the ones a symlink or fifo can carry",
    );
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("t");
    let r = restorer(&t);
    let f = file_entry(b"f", b"");
    let file = r.create(&f).unwrap().unwrap();
    r.finish_entry(&f, Some(file)).unwrap();
    let mut l = symlink_entry(b"link", b"f");
    l.xattrs = vec![(b"trusted.cairn".to_vec(), b"on the link".to_vec())];
    r.create(&l).unwrap();
    r.finish_entry(&l, None).unwrap();
    let mut p = entry(b"fifo", EntryKind::Fifo, 0o640);
    p.xattrs = vec![(b"trusted.cairn".to_vec(), b"on the fifo".to_vec())];
    r.create(&p).unwrap();
    r.finish_entry(&p, None).unwrap();
    let report = r.finish().unwrap();
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    // `xattr::get` does not follow symlinks.
    let get = |rel: &str| xattr::get(t.join(rel), "trusted.cairn").unwrap();
    assert_eq!(get("link"), Some(b"on the link".to_vec()));
    assert_eq!(get("fifo"), Some(b"on the fifo".to_vec()));
    assert_eq!(get("f"), None, "the symlink's attribute went to its target");
    let md = std::fs::symlink_metadata(t.join("fifo")).unwrap();
    assert_eq!((md.mode() & 0o7777, md.mtime_nsec()), (0o640, 123_456_789));
}
