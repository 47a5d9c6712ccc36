//! A backup and restore in memory, using only this crate: what the agent does, minus the
//! chunk store.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::Path;

use cairn_core::{ChunkId, ChunkRef, Entry, EntryKind};
use cairn_fs::{FsError, RestoreOptions, RestoreReport, Restorer, WalkError};

/// One backed-up object: its entry and, for files, its data regions concatenated.
pub struct Item {
    pub entry: Entry,
    pub data: Vec<u8>,
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Walks `src` and reads every object, detecting hardlinks as the agent does.
pub fn backup(src: &Path) -> (Vec<Item>, Vec<WalkError>) {
    let mut items = Vec::new();
    let mut errors = Vec::new();
    let mut first: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    for w in cairn_fs::Walker::new(src, |_, _| false) {
        let w = match w {
            Ok(w) => w,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let mut entry = cairn_fs::read_entry(&w.abs, w.rel.clone(), &w.md).unwrap();
        let mut data = Vec::new();
        if entry.kind == EntryKind::File {
            let key = (w.md.dev(), w.md.ino());
            if w.md.nlink() > 1 {
                if let Some(first) = first.get(&key) {
                    entry.kind = EntryKind::Hardlink;
                    entry.link_target = first.clone();
                } else {
                    first.insert(key, entry.path.clone());
                }
            }
            let f = File::open(&w.abs).unwrap();
            entry.holes = cairn_fs::holes(&f, entry.size).unwrap();
            cairn_fs::DataReader::new(f, entry.size, &entry.holes)
                .read_to_end(&mut data)
                .unwrap();
            entry.chunks = data
                .chunks(4 << 20)
                .map(|c| ChunkRef {
                    id: ChunkId::of(c),
                    len: c.len() as u32,
                })
                .collect();
            entry.validate().unwrap();
        }
        items.push(Item { entry, data });
    }
    (items, errors)
}

/// Writes `data` (the concatenated data regions) into `file` around the entry's holes.
pub fn write_data(file: &File, e: &Entry, data: &[u8]) {
    let mut at = 0usize;
    for (off, len) in cairn_fs::data_regions(e.size, &e.holes) {
        let len = len as usize;
        file.write_all_at(&data[at..at + len], off).unwrap();
        at += len;
    }
    assert_eq!(
        at,
        data.len(),
        "{}: data does not fill the regions",
        cairn_fs::show(&e.path)
    );
}

/// Restores `items` into `target`: creates in order, writes and finishes files on two other
/// threads after every entry is created (as the agent's fetchers do), then finishes.
pub fn restore(
    items: &[Item],
    target: &Path,
    opts: RestoreOptions,
) -> Result<RestoreReport, FsError> {
    let r = Restorer::new(target, opts)?;
    let mut files = Vec::new();
    for it in items {
        match r.create(&it.entry)? {
            Some(f) => files.push((it, f)),
            None => r.finish_entry(&it.entry, None)?,
        }
    }
    let half = files.len() / 2;
    let second = files.split_off(half);
    std::thread::scope(|s| {
        let r = &r;
        let jobs: Vec<_> = [files, second]
            .into_iter()
            .map(|part| {
                s.spawn(move || -> Result<(), FsError> {
                    for (it, f) in part {
                        write_data(&f, &it.entry, &it.data);
                        r.finish_entry(&it.entry, Some(f))?;
                    }
                    Ok(())
                })
            })
            .collect();
        jobs.into_iter()
            .try_for_each(|j| j.join().expect("restore thread panicked"))
    })?;
    r.finish()
}

/// An entry for tests that build manifests by hand.
pub fn entry(path: &[u8], kind: EntryKind, mode: u32) -> Entry {
    let mut e = Entry::new(path.to_vec(), kind);
    e.mode = mode;
    e.uid = nix::unistd::geteuid().as_raw();
    e.gid = nix::unistd::getegid().as_raw();
    e.mtime_ns = 1_700_000_000_123_456_789;
    e.atime_ns = 1_700_000_000_000_000_001;
    e
}

pub fn file_entry(path: &[u8], data: &[u8]) -> Entry {
    let mut e = entry(path, EntryKind::File, 0o644);
    e.size = data.len() as u64;
    e
}

pub fn symlink_entry(path: &[u8], target: &[u8]) -> Entry {
    let mut e = entry(path, EntryKind::Symlink, 0o777);
    e.link_target = target.to_vec();
    e
}

/// Lists a directory's names, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

pub const AS_NOBODY: &str = "CAIRN_FS_TEST_AS_NOBODY";

/// When running as root, runs test `name` again in a child process as user `nobody`, where
/// file permissions apply, and returns true once it passed there. Returns false when the
/// caller should run the test itself (not root, or already the child).
pub fn rerun_as_nobody(name: &str) -> bool {
    if !is_root() || std::env::var_os(AS_NOBODY).is_some() {
        return false;
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(&exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(AS_NOBODY, "1")
        .env("TMPDIR", "/tmp")
        .uid(65534)
        .gid(65534)
        .output();
    match out {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.contains("1 passed"),
                "{name} failed as nobody:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            true
        }
        // Root bypasses permissions: run as root, the test would check nothing.
        Err(e) => panic!("{name}: cannot run as nobody ({e}); root bypasses permissions"),
    }
}
