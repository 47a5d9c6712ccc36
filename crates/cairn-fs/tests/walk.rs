//! The walk reports what it cannot read and goes on; it stays on one file system.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use cairn_fs::{show, Walker};
use common::*;

fn walk(root: &Path) -> (Vec<String>, Vec<(String, std::io::ErrorKind)>) {
    let mut ok = Vec::new();
    let mut errs = Vec::new();
    for w in Walker::new(root, |_, _| false) {
        match w {
            Ok(w) => ok.push(show(&w.rel)),
            Err(e) => {
                assert!(e.to_string().starts_with(&show(&e.rel)), "{e}");
                errs.push((show(&e.rel), e.error.kind()));
            }
        }
    }
    (ok, errs)
}

#[test]
fn unreadable_directories_are_reported_and_the_walk_goes_on() {
    if rerun_as_nobody("unreadable_directories_are_reported_and_the_walk_goes_on") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    for d in ["a", "closed/inner", "noexec", "z"] {
        std::fs::create_dir_all(t.join(d)).unwrap();
    }
    std::fs::write(t.join("closed/inner/f"), b"x").unwrap();
    std::fs::write(t.join("noexec/f"), b"x").unwrap();
    std::fs::write(t.join("z/f"), b"x").unwrap();
    std::fs::set_permissions(t.join("closed"), std::fs::Permissions::from_mode(0o000)).unwrap();
    // Names can be listed but not looked up.
    std::fs::set_permissions(t.join("noexec"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let (ok, errs) = walk(t);
    for d in ["closed", "noexec"] {
        std::fs::set_permissions(t.join(d), std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    assert_eq!(ok, [".", "a", "closed", "noexec", "z", "z/f"]);
    use std::io::ErrorKind::PermissionDenied;
    assert_eq!(
        errs,
        [
            ("closed".to_string(), PermissionDenied),
            ("noexec/f".to_string(), PermissionDenied)
        ]
    );
}

#[test]
fn paths_too_long_to_open_are_reported_and_the_walk_goes_on() {
    // Deeper than PATH_MAX (4096 bytes): a path-based lstat fails with ENAMETOOLONG. Built
    // with *at calls, which have no such limit.
    use nix::fcntl::{openat, OFlag};
    use nix::sys::stat::{mkdirat, Mode};
    use std::os::fd::{FromRawFd, OwnedFd};
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    std::fs::create_dir(t.join("long")).unwrap();
    std::fs::write(t.join("z"), b"after").unwrap();
    let name = "d".repeat(250);
    let mut fd = OwnedFd::from(std::fs::File::open(t.join("long")).unwrap());
    use std::os::fd::AsRawFd;
    for _ in 0..20 {
        mkdirat(
            Some(fd.as_raw_fd()),
            name.as_str(),
            Mode::from_bits_truncate(0o755),
        )
        .unwrap();
        let next = openat(
            Some(fd.as_raw_fd()),
            name.as_str(),
            OFlag::O_DIRECTORY | OFlag::O_RDONLY,
            Mode::empty(),
        )
        .unwrap();
        fd = unsafe { OwnedFd::from_raw_fd(next) };
    }
    let (ok, errs) = walk(t);
    assert_eq!(ok.last().map(String::as_str), Some("z"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].0.starts_with("long/ddd"));
    assert!(ok.len() > 10);
}

#[test]
fn objects_that_vanish_during_the_walk_are_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().to_path_buf();
    for f in ["a", "b", "c"] {
        std::fs::write(t.join(f), b"x").unwrap();
    }
    let victim = t.join("b");
    // Deletes `b` once the walk has listed the directory and reached `a`.
    let walker = Walker::new(&t, move |rel, _| {
        if rel == b"a" {
            let _ = std::fs::remove_file(&victim);
        }
        false
    });
    let got: Vec<String> = walker.map(|w| show(&w.unwrap().rel)).collect();
    assert_eq!(got, [".", "a", "c"]);
}

#[test]
fn mount_points_are_reported_as_empty_directories() {
    cairn_fs::testing::require_root("mounts a tmpfs");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    std::fs::create_dir_all(t.join("mnt")).unwrap();
    std::fs::write(t.join("z"), b"x").unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "cairn-test", t.join("mnt").to_str().unwrap()])
        .status();
    assert!(
        matches!(mounted, Ok(s) if s.success()),
        "cannot mount a tmpfs: {mounted:?}"
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(t.join("mnt"));
    std::fs::write(t.join("mnt/inside"), b"other fs").unwrap();
    let (ok, errs) = walk(t);
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(ok, [".", "mnt", "z"]);
}
