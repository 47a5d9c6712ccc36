//! A process inside a live tree that swaps a restored object for a symlink while the restore
//! runs never gets a mode (or times, or attributes) applied to the link's target.

mod common;

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cairn_core::EntryKind;
use cairn_fs::{RestoreOptions, Restorer};
use common::*;

/// Rounds of the race; each restores one fifo while a second thread keeps swapping it with a
/// symlink to a file outside the target.
const ROUNDS: usize = 100_000;
/// Bounds the test's run time on a slow or busy machine.
const TIME_LIMIT: Duration = Duration::from_secs(15);

/// A temporary directory on tmpfs when there is one: renames there take a microsecond, so the
/// racing thread swaps often enough to hit a window of a few system calls.
fn race_dir() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap()
}

/// Sets its flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn a_symlink_swapped_in_before_the_mode_is_applied_is_never_followed() {
    let tmp = race_dir();
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let secret = outside.join("secret");
    std::fs::write(&secret, b"sentinel").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let before = std::fs::metadata(&secret).unwrap();

    // A live tree: the directory exists and holds a file before the restore starts.
    let t = tmp.path().join("t");
    std::fs::create_dir_all(t.join("live")).unwrap();
    std::fs::write(t.join("live/keep"), b"k").unwrap();
    let r = Restorer::new(
        &t,
        RestoreOptions {
            owners: false,
            into_existing: true,
            ..RestoreOptions::default()
        },
    )
    .unwrap();
    let d = entry(b"live", EntryKind::Dir, 0o755);
    r.create(&d).unwrap();
    r.finish_entry(&d, None).unwrap();

    let live = t.join("live");
    let current = AtomicUsize::new(usize::MAX);
    let done = AtomicBool::new(false);
    let swaps = AtomicUsize::new(0);
    let (mut refused, mut rounds) = (0usize, 0usize);
    std::thread::scope(|s| {
        s.spawn(|| {
            // The hostile process: it knows the names the restore is about to finish and
            // keeps exchanging each one with a symlink to the outside file, as fast as it can.
            let dir = std::fs::File::open(&live).unwrap();
            let dfd = dir.as_raw_fd();
            let mut last = usize::MAX;
            let (mut obj, mut link) = (CString::default(), CString::default());
            while !done.load(Ordering::Relaxed) {
                let i = current.load(Ordering::Relaxed);
                if i == usize::MAX {
                    std::hint::spin_loop();
                    continue;
                }
                if i != last {
                    obj = CString::new(format!("p{i}")).unwrap();
                    link = CString::new(format!("s{i}")).unwrap();
                    std::os::unix::fs::symlink(&secret, live.join(format!("s{i}"))).unwrap();
                    last = i;
                }
                // SAFETY: both names are valid C strings and `dfd` is a directory fd we hold.
                let r = unsafe {
                    libc::renameat2(dfd, obj.as_ptr(), dfd, link.as_ptr(), libc::RENAME_EXCHANGE)
                };
                if r == 0 {
                    swaps.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        // Stops the racing thread however this one ends, a failed assertion included.
        let _stop = StopOnDrop(&done);
        let started = Instant::now();
        for i in 0..ROUNDS {
            if started.elapsed() > TIME_LIMIT {
                break;
            }
            let mut e = entry(format!("live/p{i}").as_bytes(), EntryKind::Fifo, 0o757);
            e.xattrs = vec![(b"trusted.cairn-race".to_vec(), b"x".to_vec())];
            current.store(i, Ordering::Relaxed);
            r.create(&e).unwrap();
            // When the swap wins, finishing fails: that is the safe outcome.
            if r.finish_entry(&e, None).is_err() {
                refused += 1;
            }
            rounds += 1;
            let now = std::fs::metadata(&secret).unwrap();
            assert_eq!(
                now.mode() & 0o7777,
                0o600,
                "round {i}: the mode went through the swapped-in symlink"
            );
        }
    });
    let _ = r.finish();
    println!(
        "{rounds} rounds, {} swaps, {refused} entries refused",
        swaps.load(Ordering::Relaxed)
    );
    assert!(
        swaps.load(Ordering::Relaxed) > rounds,
        "the racing thread hardly ran; the test proved nothing"
    );
    let after = std::fs::metadata(&secret).unwrap();
    assert_eq!(after.mode() & 0o7777, 0o600);
    assert_eq!(
        (after.mtime(), after.mtime_nsec()),
        (before.mtime(), before.mtime_nsec()),
        "the times went through the swapped-in symlink"
    );
    assert_eq!(
        xattr::get(&secret, "trusted.cairn-race").unwrap_or(None),
        None,
        "an attribute went through the swapped-in symlink"
    );
    assert_eq!(std::fs::read(&secret).unwrap(), b"sentinel");
}

#[test]
fn a_leaf_that_turned_into_a_symlink_fails_its_entry_and_the_link_target_is_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = tmp.path().join("secret");
    std::fs::write(&secret, b"sentinel").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let before = std::fs::metadata(&secret).unwrap();
    let t = tmp.path().join("t");
    let r = Restorer::new(
        &t,
        RestoreOptions {
            owners: is_root(),
            ..RestoreOptions::default()
        },
    )
    .unwrap();
    for (name, kind) in [(&b"p"[..], EntryKind::Fifo), (b"s", EntryKind::Socket)] {
        let mut e = entry(name, kind, 0o757);
        e.uid = 1234;
        e.xattrs = vec![(b"trusted.cairn-swap".to_vec(), b"x".to_vec())];
        r.create(&e).unwrap();
        // Something inside the target swaps the new object for a symlink to the outside.
        let at = t.join(std::str::from_utf8(name).unwrap());
        std::fs::remove_file(&at).unwrap();
        std::os::unix::fs::symlink(&secret, &at).unwrap();
        let got = r.finish_entry(&e, None);
        assert!(
            matches!(
                got,
                Err(cairn_fs::FsError::Exists {
                    found: "symlink",
                    ..
                })
            ),
            "{got:?}"
        );
    }
    let _ = r.finish();
    let after = std::fs::metadata(&secret).unwrap();
    assert_eq!((after.mode() & 0o7777, after.uid()), (0o600, before.uid()));
    assert_eq!(
        (after.mtime(), after.mtime_nsec()),
        (before.mtime(), before.mtime_nsec())
    );
    assert_eq!(
        xattr::get(&secret, "trusted.cairn-swap").unwrap_or(None),
        None
    );
}
