//! A restore never turns a backup into privilege it was not asked to recreate: without owners,
//! or without `privileged`, setuid/setgid bits and file capabilities are withheld, and device
//! nodes too when not `privileged`. Every test here needs root: only root can restore other
//! users' files, capabilities and device nodes, which is where the privilege lies.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use cairn_core::{Entry, EntryKind};
use cairn_fs::testing::{build_every_kind_tree, diff_trees, make_removable, DiffOptions};
use cairn_fs::{RestoreOptions, RestoreReport, Restorer, Withheld};
use common::*;

fn needs_root(test: &str) {
    assert!(
        is_root(),
        "{test}: this test needs root (CI and the dev machines run tests as root)"
    );
}

/// A raw `security.capability` value: revision 2, effective, permitted = CAP_NET_RAW.
fn capability() -> Vec<u8> {
    let mut cap = (0x0200_0000u32 | 1).to_le_bytes().to_vec();
    for word in [1u32 << 13, 0, 0, 0] {
        cap.extend_from_slice(&word.to_le_bytes());
    }
    cap
}

/// A manifest with a setuid root binary, a setgid file, a file with a capability, a setgid
/// and a sticky directory, two device nodes and a fifo, all owned by uid 1234 but `su`.
fn privileged_manifest() -> Vec<(Entry, Vec<u8>)> {
    let owned = |mut e: Entry| {
        e.uid = 1234;
        e.gid = 5678;
        e
    };
    let mut v = Vec::new();
    v.push((owned(entry(b"", EntryKind::Dir, 0o755)), Vec::new()));
    v.push((owned(entry(b"bin", EntryKind::Dir, 0o755)), Vec::new()));
    let mut su = file_entry(b"bin/su", b"\x7fELF su");
    su.mode = 0o4755;
    su.uid = 0;
    su.gid = 0;
    v.push((su, b"\x7fELF su".to_vec()));
    let mut wall = owned(file_entry(b"bin/wall", b"\x7fELF wall"));
    wall.mode = 0o2755;
    v.push((wall, b"\x7fELF wall".to_vec()));
    let mut ping = owned(file_entry(b"bin/ping", b"\x7fELF ping"));
    ping.mode = 0o755;
    ping.xattrs = vec![
        (b"security.capability".to_vec(), capability()),
        (b"user.kept".to_vec(), b"yes".to_vec()),
    ];
    v.push((ping, b"\x7fELF ping".to_vec()));
    v.push((owned(entry(b"shared", EntryKind::Dir, 0o2775)), Vec::new()));
    v.push((owned(entry(b"tmp", EntryKind::Dir, 0o1777)), Vec::new()));
    v.push((owned(entry(b"dev", EntryKind::Dir, 0o755)), Vec::new()));
    let mut null = owned(entry(b"dev/null", EntryKind::CharDevice, 0o666));
    null.rdev = nix::sys::stat::makedev(1, 3);
    v.push((null, Vec::new()));
    let mut sda = owned(entry(b"dev/sda", EntryKind::BlockDevice, 0o666));
    sda.rdev = nix::sys::stat::makedev(8, 0);
    v.push((sda, Vec::new()));
    v.push((
        owned(entry(b"dev/fifo", EntryKind::Fifo, 0o620)),
        Vec::new(),
    ));
    v
}

fn restore_manifest(target: &Path, opts: RestoreOptions) -> RestoreReport {
    let r = Restorer::new(target, opts).unwrap();
    for (e, data) in privileged_manifest() {
        let f = r.create(&e).unwrap();
        if let Some(f) = &f {
            write_data(f, &e, &data);
        }
        r.finish_entry(&e, f).unwrap();
    }
    r.finish().unwrap()
}

fn mode(target: &Path, rel: &str) -> u32 {
    std::fs::symlink_metadata(target.join(rel)).unwrap().mode() & 0o7777
}

fn has_capability(path: &Path) -> bool {
    xattr::get(path, "security.capability").unwrap().is_some()
}

#[test]
fn as_root_without_owners_setuid_setgid_and_capabilities_are_withheld() {
    needs_root("as_root_without_owners_setuid_setgid_and_capabilities_are_withheld");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("t");
    let report = restore_manifest(
        &t,
        RestoreOptions {
            owners: false,
            privileged: true,
            into_existing: false,
        },
    );
    // Everything belongs to root, the restoring user: no bit may make it run as root.
    let su = std::fs::metadata(t.join("bin/su")).unwrap();
    assert_eq!((su.uid(), su.mode() & 0o7777), (0, 0o755));
    assert_eq!(std::fs::metadata(t.join("bin/wall")).unwrap().uid(), 0);
    assert_eq!(mode(&t, "bin/wall"), 0o755);
    assert_eq!(mode(&t, "bin/ping"), 0o755);
    assert!(
        !has_capability(&t.join("bin/ping")),
        "a root-owned file kept its capability"
    );
    // Other attributes, the sticky bit and the rest of the tree are restored as they were.
    assert_eq!(
        xattr::get(t.join("bin/ping"), "user.kept").unwrap(),
        Some(b"yes".to_vec())
    );
    assert_eq!(mode(&t, "shared"), 0o775);
    assert_eq!(mode(&t, "tmp"), 0o1777);
    assert!(std::fs::symlink_metadata(t.join("dev/null"))
        .unwrap()
        .file_type()
        .is_char_device());
    assert_eq!(
        report.withheld,
        Withheld {
            setid_modes: 3,
            capabilities: 1,
            devices: 0
        }
    );
    for note in [
        "bin/su: setuid/setgid bits not restored: owners are not restored",
        "bin/wall: setuid/setgid bits not restored: owners are not restored",
        "bin/ping: file capability (security.capability) not restored: owners are not restored",
        "shared: setuid/setgid bits not restored: owners are not restored",
    ] {
        assert!(
            report.skipped.iter().any(|n| n == note),
            "no note {note:?} in {:?}",
            report.skipped
        );
    }
    assert_eq!(report.skipped.len(), 4, "{:?}", report.skipped);
}

#[test]
fn as_root_without_owners_a_real_tree_loses_only_its_privilege() {
    needs_root("as_root_without_owners_a_real_tree_loses_only_its_privilege");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    build_every_kind_tree(&src);
    let (items, errors) = backup(&src);
    assert!(errors.is_empty(), "{errors:?}");
    let out = tmp.path().join("out");
    let opts = RestoreOptions {
        owners: false,
        privileged: true,
        into_existing: false,
    };
    let report = restore(&items, &out, opts).unwrap();
    let mut d = diff_trees(
        &src,
        &out,
        DiffOptions {
            owners: false,
            atime: false,
        },
    );
    d.sort();
    assert_eq!(d.len(), 3, "{d:?}");
    assert!(
        d[0].starts_with("caps/ping: xattrs [security.capability="),
        "{d:?}"
    );
    assert_eq!(d[1], "modes/sgid: mode 2755 vs 755");
    assert_eq!(d[2], "modes/suid: mode 4755 vs 755");
    assert_eq!(
        report.withheld,
        Withheld {
            setid_modes: 2,
            capabilities: 1,
            devices: 0
        }
    );
    make_removable(tmp.path());
}

#[test]
fn an_unprivileged_restore_withholds_devices_setid_and_capabilities_even_with_owners() {
    needs_root("an_unprivileged_restore_withholds_devices_setid_and_capabilities_even_with_owners");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("t");
    let report = restore_manifest(
        &t,
        RestoreOptions {
            owners: true,
            privileged: false,
            into_existing: false,
        },
    );
    // Owners are restored...
    let owner = |rel: &str| {
        let md = std::fs::symlink_metadata(t.join(rel)).unwrap();
        (md.uid(), md.gid())
    };
    assert_eq!(owner("bin/su"), (0, 0));
    assert_eq!(owner("bin/wall"), (1234, 5678));
    assert_eq!(owner("bin/ping"), (1234, 5678));
    assert_eq!(owner("dev/fifo"), (1234, 5678));
    // ...but no privilege: no setuid/setgid, no capability, no device nodes.
    assert_eq!(mode(&t, "bin/su"), 0o755);
    assert_eq!(mode(&t, "bin/wall"), 0o755);
    assert_eq!(mode(&t, "shared"), 0o775);
    assert_eq!(mode(&t, "tmp"), 0o1777);
    assert!(!has_capability(&t.join("bin/ping")));
    assert_eq!(names(&t.join("dev")), ["fifo"]);
    assert_eq!(mode(&t, "dev/fifo"), 0o620);
    assert_eq!(
        report.withheld,
        Withheld {
            setid_modes: 3,
            capabilities: 1,
            devices: 2
        }
    );
    for note in [
        "bin/su: setuid/setgid bits not restored: the restore runs unprivileged",
        "bin/ping: file capability (security.capability) not restored: the restore runs \
         unprivileged",
        "dev/null: device node not created: the restore runs unprivileged",
        "dev/sda: device node not created: the restore runs unprivileged",
    ] {
        assert!(
            report.skipped.iter().any(|n| n == note),
            "no note {note:?} in {:?}",
            report.skipped
        );
    }
    // The root, four directories, three files and the fifo: no device node.
    assert_eq!(report.entries, 9);
}

#[test]
fn a_privileged_restore_with_owners_keeps_every_bit() {
    needs_root("a_privileged_restore_with_owners_keeps_every_bit");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("t");
    let report = restore_manifest(
        &t,
        RestoreOptions {
            owners: true,
            privileged: true,
            into_existing: false,
        },
    );
    assert_eq!(mode(&t, "bin/su"), 0o4755);
    assert_eq!(mode(&t, "bin/wall"), 0o2755);
    assert_eq!(mode(&t, "shared"), 0o2775);
    assert!(has_capability(&t.join("bin/ping")));
    assert_eq!(
        std::fs::symlink_metadata(t.join("dev/sda")).unwrap().rdev(),
        nix::sys::stat::makedev(8, 0)
    );
    assert!(report.withheld.is_empty(), "{:?}", report.withheld);
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
}
