//! A restore never writes outside its target, whatever the manifest says.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use cairn_core::{Entry, EntryKind};
use cairn_fs::{FsError, RestoreOptions, Restorer};
use common::*;

/// A target inside `tmp/target`, and a sentinel directory beside it holding one file.
struct Setup {
    _tmp: tempfile::TempDir,
    target: std::path::PathBuf,
    outside: std::path::PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"sentinel").unwrap();
        Setup {
            target: tmp.path().join("target"),
            outside,
            _tmp: tmp,
        }
    }

    fn restorer(&self, into_existing: bool) -> Restorer {
        Restorer::new(
            &self.target,
            RestoreOptions {
                owners: false,
                privileged: true,
                into_existing,
            },
        )
        .unwrap()
    }

    /// The sentinel directory holds exactly its one untouched file, and nothing was created
    /// beside the target either.
    fn assert_untouched(&self) {
        assert_eq!(names(&self.outside), ["secret"]);
        assert_eq!(
            std::fs::read(self.outside.join("secret")).unwrap(),
            b"sentinel"
        );
        assert_eq!(
            std::fs::metadata(self.outside.join("secret"))
                .unwrap()
                .nlink(),
            1
        );
        let parent = self.outside.parent().unwrap();
        assert_eq!(names(parent), ["outside", "target"]);
    }
}

fn create_and_finish(r: &Restorer, e: &Entry) -> Result<(), FsError> {
    let f = r.create(e)?;
    r.finish_entry(e, f)
}

fn is_unsafe(r: Result<(), FsError>) -> bool {
    matches!(r, Err(FsError::UnsafePath { .. }))
}

#[test]
fn traversal_and_absolute_paths_are_refused() {
    let s = Setup::new();
    let r = s.restorer(false);
    let bad: &[&[u8]] = &[
        b"../outside/x",
        b"../x",
        b"/etc/cairn-test-x",
        b"a/../../x",
        b"./x",
        b"a//b",
        b"a/",
        b"x\0y",
    ];
    for p in bad {
        for kind in [EntryKind::File, EntryKind::Dir, EntryKind::Fifo] {
            let e = entry(p, kind, 0o644);
            let got = r.create(&e);
            assert!(
                matches!(got, Err(FsError::UnsafePath { .. })),
                "{:?} as {kind:?} was not refused: {got:?}",
                String::from_utf8_lossy(p)
            );
        }
        let got = create_and_finish(&r, &symlink_entry(p, b"/tmp"));
        assert!(is_unsafe(got), "symlink at {p:?}");
    }
    // A hardlink may not point outside either.
    for t in [&b"../outside/secret"[..], b"/etc/passwd", b""] {
        let mut e = entry(b"h", EntryKind::Hardlink, 0o644);
        e.link_target = t.to_vec();
        assert!(is_unsafe(create_and_finish(&r, &e)), "hardlink to {t:?}");
    }
    assert!(!Path::new("/etc/cairn-test-x").exists());
    r.finish().unwrap();
    assert!(names(&s.target).is_empty());
    s.assert_untouched();
}

#[test]
fn a_symlink_in_the_parent_chain_is_never_followed() {
    let s = Setup::new();
    let r = s.restorer(false);
    create_and_finish(&r, &entry(b"", EntryKind::Dir, 0o755)).unwrap();
    // `a` points outside, then the manifest tries to write through it in every way.
    create_and_finish(
        &r,
        &symlink_entry(b"a", s.outside.as_os_str().as_encoded_bytes()),
    )
    .unwrap();
    // Through a relative symlink too, deeper down.
    create_and_finish(&r, &entry(b"b", EntryKind::Dir, 0o755)).unwrap();
    create_and_finish(&r, &symlink_entry(b"b/c", b"../../outside")).unwrap();
    for p in [&b"a/x"[..], b"a/secret", b"b/c/x", b"b/c/sub/x"] {
        for kind in [
            EntryKind::File,
            EntryKind::Dir,
            EntryKind::Fifo,
            EntryKind::Symlink,
        ] {
            let mut e = entry(p, kind, 0o644);
            e.link_target = b"whatever".to_vec();
            let got = create_and_finish(&r, &e);
            assert!(
                is_unsafe(got),
                "{p:?} as {kind:?} written through a symlink"
            );
        }
        let mut h = entry(p, EntryKind::Hardlink, 0o644);
        h.link_target = b"b".to_vec();
        assert!(is_unsafe(create_and_finish(&r, &h)));
    }
    // A directory entry over the symlink is refused, and files beneath are still refused.
    let got = create_and_finish(&r, &entry(b"a", EntryKind::Dir, 0o755));
    assert!(matches!(got, Err(FsError::Exists { .. })), "{got:?}");
    assert!(is_unsafe(create_and_finish(&r, &file_entry(b"a/x", b""))));
    // Metadata for a path beneath the symlink is refused too.
    assert!(is_unsafe(
        r.finish_entry(&symlink_entry(b"a/secret", b"x"), None)
    ));
    r.finish().unwrap();
    s.assert_untouched();
    assert!(std::fs::symlink_metadata(s.target.join("a"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn a_hardlink_is_only_made_to_a_file_this_restore_created() {
    let s = Setup::new();
    let r = s.restorer(false);
    create_and_finish(&r, &entry(b"", EntryKind::Dir, 0o755)).unwrap();
    let secret = s.outside.join("secret");
    create_and_finish(
        &r,
        &symlink_entry(b"s", secret.as_os_str().as_encoded_bytes()),
    )
    .unwrap();
    // A hardlink whose "first name" is a symlink to the outside becomes its own file.
    let mut h = file_entry(b"h", b"own data");
    h.kind = EntryKind::Hardlink;
    h.link_target = b"s".to_vec();
    let f = r.create(&h).unwrap().expect("restored as a file");
    write_data(&f, &h, b"own data");
    r.finish_entry(&h, Some(f)).unwrap();
    // A real group links.
    let a = file_entry(b"a", b"shared");
    let f = r.create(&a).unwrap().unwrap();
    write_data(&f, &a, b"shared");
    let mut b = a.clone();
    b.path = b"b".to_vec();
    b.kind = EntryKind::Hardlink;
    b.link_target = b"a".to_vec();
    assert!(r.create(&b).unwrap().is_none());
    r.finish_entry(&b, None).unwrap();
    r.finish_entry(&a, Some(f)).unwrap();
    r.finish().unwrap();
    s.assert_untouched();
    assert_eq!(std::fs::read(s.target.join("h")).unwrap(), b"own data");
    let (ma, mb) = (
        std::fs::metadata(s.target.join("a")).unwrap(),
        std::fs::metadata(s.target.join("b")).unwrap(),
    );
    assert_eq!(ma.ino(), mb.ino());
    assert_eq!(ma.mtime_nsec(), 123_456_789);
}

#[test]
fn an_existing_file_is_never_adopted_as_a_hardlink_target() {
    let s = Setup::new();
    std::fs::create_dir(&s.target).unwrap();
    std::fs::write(s.target.join("old"), b"not from this backup").unwrap();
    let r = s.restorer(true);
    let mut h = file_entry(b"h", b"mine");
    h.kind = EntryKind::Hardlink;
    h.link_target = b"old".to_vec();
    let f = r.create(&h).unwrap().expect("restored as a file");
    write_data(&f, &h, b"mine");
    r.finish_entry(&h, Some(f)).unwrap();
    // Later names of the same group link to the substitute.
    let mut h2 = h.clone();
    h2.path = b"h2".to_vec();
    assert!(r.create(&h2).unwrap().is_none());
    r.finish_entry(&h2, None).unwrap();
    r.finish().unwrap();
    assert_eq!(std::fs::metadata(s.target.join("old")).unwrap().nlink(), 1);
    assert_eq!(std::fs::metadata(s.target.join("h")).unwrap().nlink(), 2);
    assert_eq!(std::fs::read(s.target.join("h2")).unwrap(), b"mine");
}

#[test]
fn a_non_empty_target_is_refused() {
    let s = Setup::new();
    std::fs::create_dir(&s.target).unwrap();
    std::fs::write(s.target.join("keep"), b"precious").unwrap();
    let err = Restorer::new(&s.target, RestoreOptions::default())
        .err()
        .expect("refused");
    assert!(matches!(err, FsError::TargetNotEmpty { .. }), "{err}");
    assert!(
        err.to_string().contains(&*s.target.to_string_lossy()),
        "{err}"
    );
    assert_eq!(std::fs::read(s.target.join("keep")).unwrap(), b"precious");

    let file = s.outside.join("secret");
    let err = Restorer::new(&file, RestoreOptions::default())
        .err()
        .expect("refused");
    assert!(matches!(err, FsError::TargetNotDir { .. }), "{err}");

    // An empty directory, or a new one, is fine.
    let empty = s.outside.parent().unwrap().join("empty");
    std::fs::create_dir(&empty).unwrap();
    Restorer::new(&empty, RestoreOptions::default()).unwrap();
    let new = s.outside.parent().unwrap().join("new/deeper");
    Restorer::new(&new, RestoreOptions::default()).unwrap();
    assert!(new.is_dir());
}

#[test]
fn the_root_entry_must_be_a_directory() {
    let s = Setup::new();
    let r = s.restorer(false);
    let got = r.create(&file_entry(b"", b""));
    assert!(matches!(got, Err(FsError::Invalid { .. })), "{got:?}");
}

#[test]
fn a_name_in_the_way_is_an_error_without_into_existing() {
    let s = Setup::new();
    let r = s.restorer(false);
    create_and_finish(&r, &symlink_entry(b"x", b"/etc/passwd")).unwrap();
    let got = r.create(&file_entry(b"x", b"data"));
    assert!(matches!(got, Err(FsError::Exists { .. })), "{got:?}");
    let msg = got.err().unwrap().to_string();
    assert!(
        msg.contains("/target/x") && msg.contains("symlink"),
        "{msg}"
    );
}

#[test]
fn device_nodes_are_skipped_with_a_note_when_not_root() {
    if rerun_as_nobody("device_nodes_are_skipped_with_a_note_when_not_root") {
        // As root, the device itself is created.
        let s = Setup::new();
        let r = s.restorer(false);
        let mut e = entry(b"null", EntryKind::CharDevice, 0o666);
        e.rdev = nix::sys::stat::makedev(1, 3);
        create_and_finish(&r, &e).unwrap();
        let report = r.finish().unwrap();
        let md = std::fs::symlink_metadata(s.target.join("null")).unwrap();
        assert!(report.skipped.is_empty(), "{:?}", report.skipped);
        assert_eq!(md.rdev(), nix::sys::stat::makedev(1, 3));
        assert_eq!(md.mode() & 0o7777, 0o666);
        return;
    }
    let s = Setup::new();
    let r = s.restorer(false);
    let mut e = entry(b"null", EntryKind::CharDevice, 0o666);
    e.rdev = nix::sys::stat::makedev(1, 3);
    let mut b = entry(b"loop0", EntryKind::BlockDevice, 0o660);
    b.rdev = nix::sys::stat::makedev(7, 0);
    assert!(r.create(&e).unwrap().is_none());
    r.finish_entry(&e, None).unwrap();
    assert!(r.create(&b).unwrap().is_none());
    r.finish_entry(&b, None).unwrap();
    let fifo = entry(b"fifo", EntryKind::Fifo, 0o640);
    create_and_finish(&r, &fifo).unwrap();
    let report = r.finish().unwrap();
    assert_eq!(
        report.skipped,
        [
            "null: device nodes need root",
            "loop0: device nodes need root"
        ]
    );
    assert_eq!(names(&s.target), ["fifo"]);
    assert_eq!(report.entries, 1);
}
