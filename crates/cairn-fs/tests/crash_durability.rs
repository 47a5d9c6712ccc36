//! A crash right after a restore into an existing tree reported success keeps what it
//! restored. The "crash" is a copy of an ext4 disk image taken at that moment: the copy holds
//! exactly what the file system had written to its disk, which is what a power cut leaves.
//! The copy is mounted on its own (the journal is replayed) and read back.
//!
//! The file system is mounted with `noauto_da_alloc` (no implicit flush on rename-over) and a
//! long journal interval, so nothing reaches the disk unless the restorer syncs it: without
//! the `fsync`s of the durability notes in `restore.rs`, the copy shows the old file, or a
//! zero-length one.
//!
//! Needs root (loop mounts); fails without it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_core::EntryKind;
use cairn_fs::{RestoreOptions, Restorer};
use common::*;

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Loop mounts, unmounted (in reverse order) when dropped, also on a panic.
#[derive(Default)]
struct Mounts(Vec<PathBuf>);

impl Mounts {
    fn mount(&mut self, image: &Path, at: &Path, opts: &str) {
        std::fs::create_dir_all(at).unwrap();
        run(Command::new("mount")
            .args(["-t", "ext4", "-o", &format!("loop,{opts}")])
            .arg(image)
            .arg(at));
        self.0.push(at.to_path_buf());
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        for at in self.0.iter().rev() {
            let _ = Command::new("umount").arg(at).status();
        }
    }
}

#[test]
fn files_replaced_and_added_in_a_live_tree_survive_a_crash_after_success() {
    assert!(
        is_root(),
        "needs root: the crash test loop-mounts ext4 images"
    );
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("disk.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image));
    let mut mounts = Mounts::default();
    let live = tmp.path().join("live");
    mounts.mount(&image, &live, "noauto_da_alloc,commit=300");

    // The tree in use, durable before the restore starts.
    let t = live.join("t");
    std::fs::create_dir_all(t.join("d")).unwrap();
    std::fs::write(t.join("d/f"), vec![b'o'; 200_000]).unwrap();
    std::fs::write(t.join("d/keep"), b"kept").unwrap();
    nix::unistd::sync();

    // A selective restore: d/f replaced, d/new and e/g added.
    let new_f: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let r = Restorer::new(
        &t,
        RestoreOptions {
            owners: false,
            privileged: true,
            into_existing: true,
        },
    )
    .unwrap();
    let files: Vec<(&[u8], Vec<u8>)> = vec![
        (b"d/f", new_f.clone()),
        (b"d/new", b"brand new".to_vec()),
        (b"e/g", vec![b'g'; 70_000]),
    ];
    for dir in [&b"d"[..], b"e"] {
        let d = entry(dir, EntryKind::Dir, 0o755);
        assert!(r.create(&d).unwrap().is_none());
        r.finish_entry(&d, None).unwrap();
    }
    for (path, data) in &files {
        let e = file_entry(path, data);
        let f = r.create(&e).unwrap().expect("a file");
        write_data(&f, &e, data);
        r.finish_entry(&e, Some(f)).unwrap();
    }
    r.finish().unwrap();

    // The power goes out now: the disk holds what was written to it, nothing more.
    let crashed = tmp.path().join("crashed.img");
    std::fs::copy(&image, &crashed).unwrap();
    let after = tmp.path().join("after");
    mounts.mount(&crashed, &after, "noauto_da_alloc");
    let t2 = after.join("t");
    for (path, data) in &files {
        let p = t2.join(std::str::from_utf8(path).unwrap());
        let got = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(
            got == *data,
            "{} after the crash: {} bytes, not the {} restored",
            p.display(),
            got.len(),
            data.len()
        );
    }
    assert_eq!(std::fs::read(t2.join("d/keep")).unwrap(), b"kept");
    assert_eq!(names(&t2.join("d")), ["f", "keep", "new"]);
}
