//! End to end on one storage node: real `cairn node` and `cairn` client processes.

use std::path::Path;
use std::time::Duration;

use cairn_tests::{is_root, noise, require_root, wait_for, Node};
use serde_json::Value;

const ENV: &str = "6f1c0d9e-2b1a-4d7e-9a55-0c3b8e1f7a21";
const ENV2: &str = "0b6a3c4e-8d2f-4f1a-9b7c-5e6d7f8a9b0c";

fn backup(node: &Node, src: &Path, env: &str, extra: &[&str]) -> Value {
    let mut args = vec!["backup", src.to_str().unwrap(), "--env", env, "--json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&node.ok(&args)).expect("backup --json output")
}

fn diff(a: &Path, b: &Path) -> Vec<String> {
    cairn_fs::testing::diff_trees(
        a,
        b,
        cairn_fs::testing::DiffOptions {
            owners: is_root(),
            atime: false,
        },
    )
}

fn small_tree(dir: &Path, files: usize) {
    std::fs::create_dir_all(dir.join("etc/conf.d")).unwrap();
    std::fs::create_dir_all(dir.join("var/log")).unwrap();
    for i in 0..files {
        std::fs::write(
            dir.join(format!("etc/conf.d/f{i:03}.conf")),
            format!("setting_{i} = {}\n", i * 7).repeat(20),
        )
        .unwrap();
    }
    std::fs::write(dir.join("var/log/big.bin"), noise(3 << 20, 99)).unwrap();
}

#[test]
fn every_file_kind_restores_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("node"));
    let src = tmp.path().join("src");
    require_root("the tree has device nodes, other owners and a file capability");
    let notes = cairn_fs::testing::build_every_kind_tree(&src);
    assert!(notes.is_empty(), "every kind of object is built: {notes:?}");
    let b = backup(&node, &src, ENV, &["--type", "full"]);
    assert_eq!(b["state"], "complete", "{b}");
    let id = b["id"].as_str().unwrap();
    assert!(id.starts_with(&format!("{ENV}/")), "{id}");

    let out = tmp.path().join("out");
    node.ok(&["restore", id, out.to_str().unwrap()]);
    let d = diff(&src, &out);
    assert!(d.is_empty(), "restored tree differs:\n{}", d.join("\n"));

    // A second restore into the now non-empty target is refused, and changes nothing.
    let again = node.cairn(&["restore", id, out.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(diff(&src, &out).is_empty());
}

/// The restore engine cuts a file larger than one fetch batch (16 MiB of chunk data) into
/// pieces that several batches fetch and write at their own offsets; the file's metadata is
/// applied only after its last piece. A sparse 54 MiB file whose data regions straddle the
/// batch boundaries, with a second name and small files before and after it, comes back
/// identical: content, holes, mode, times and the hardlink.
#[test]
fn a_file_larger_than_a_fetch_batch_restores_identical() {
    use std::os::unix::fs::{FileExt, PermissionsExt};
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("node"));
    let src = tmp.path().join("src");
    small_tree(&src, 20);
    let dir = src.join("var/lib/db");
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big.img");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(54 << 20).unwrap();
    f.write_all_at(&noise(13 << 20, 1), 0).unwrap();
    f.write_all_at(&noise(15 << 20, 2), 21 << 20).unwrap();
    f.write_all_at(&noise(3 << 20, 3), 51 << 20).unwrap();
    drop(f);
    std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::hard_link(&big, src.join("var/big-again.img")).unwrap();
    for i in 0..5 {
        std::fs::write(dir.join(format!("z{i}.txt")), format!("after {i}\n")).unwrap();
    }

    let b = backup(&node, &src, ENV, &["--type", "full"]);
    assert_eq!(b["state"], "complete", "{b}");
    let out = tmp.path().join("out");
    node.ok(&["restore", b["id"].as_str().unwrap(), out.to_str().unwrap()]);
    let d = diff(&src, &out);
    assert!(d.is_empty(), "restored tree differs:\n{}", d.join("\n"));
}

#[test]
fn incremental_reads_only_changed_files_and_restores_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("node"));
    let src = tmp.path().join("src");
    small_tree(&src, 40);
    let full = backup(&node, &src, ENV, &["--type", "full"]);
    assert_eq!(full["files_read"], 41, "{full}");

    // Nothing changed: nothing is read, nothing new is sent.
    let same = backup(&node, &src, ENV, &["--type", "incremental"]);
    assert_eq!(same["files_read"], 0, "{same}");
    assert_eq!(same["files_reused"], 41, "{same}");
    assert_eq!(same["bytes_read"], 0, "{same}");
    assert_eq!(same["parent"], full["id"]);

    // One file changed: exactly that file is read.
    std::fs::write(src.join("etc/conf.d/f007.conf"), "changed = yes\n").unwrap();
    let inc = backup(&node, &src, ENV, &["--type", "incremental"]);
    assert_eq!(inc["files_read"], 1, "{inc}");
    assert_eq!(inc["files_reused"], 40, "{inc}");
    assert!(inc["bytes_sent"].as_u64().unwrap() < 100_000, "{inc}");
    assert_eq!(inc["parent"], same["id"]);

    // Differential compares against the latest full.
    let diffb = backup(&node, &src, ENV, &["--type", "differential"]);
    assert_eq!(diffb["parent"], full["id"], "{diffb}");
    assert_eq!(diffb["type"], "differential");

    let out = tmp.path().join("out");
    node.ok(&[
        "restore",
        inc["id"].as_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    let d = diff(&src, &out);
    assert!(d.is_empty(), "{}", d.join("\n"));

    // Every backup is logically full: deleting the full keeps the incremental restorable.
    node.ok(&["backups", "delete", full["id"].as_str().unwrap()]);
    let out2 = tmp.path().join("out2");
    node.ok(&[
        "restore",
        inc["id"].as_str().unwrap(),
        out2.to_str().unwrap(),
    ]);
    assert!(diff(&src, &out2).is_empty());

    let list: Value =
        serde_json::from_str(&node.ok(&["backups", "list", "--env", ENV, "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 3);
}

#[test]
fn a_similar_container_sends_only_what_differs() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("node"));
    let a = tmp.path().join("a");
    small_tree(&a, 10);
    let first = backup(&node, &a, ENV, &[]);
    let b = tmp.path().join("b");
    small_tree(&b, 10);
    std::fs::write(b.join("etc/only-in-b"), "hello").unwrap();
    let second = backup(&node, &b, ENV2, &[]);
    assert_eq!(second["files_read"], 12, "{second}");
    let sent = second["bytes_sent"].as_u64().unwrap();
    assert!(
        sent * 20 < first["bytes_sent"].as_u64().unwrap(),
        "cross-container dedup sent {sent} bytes: {second}"
    );
}

#[test]
fn selective_restore_takes_only_listed_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("node"));
    let src = tmp.path().join("src");
    small_tree(&src, 5);
    let b = backup(&node, &src, ENV, &[]);
    let out = tmp.path().join("out");
    node.ok(&[
        "restore",
        b["id"].as_str().unwrap(),
        out.to_str().unwrap(),
        "--path",
        "etc/conf.d/f001.conf",
    ]);
    assert_eq!(
        std::fs::read(out.join("etc/conf.d/f001.conf")).unwrap(),
        std::fs::read(src.join("etc/conf.d/f001.conf")).unwrap()
    );
    assert!(!out.join("etc/conf.d/f002.conf").exists());
    assert!(!out.join("var").exists());

    let missing = node.cairn(&[
        "restore",
        b["id"].as_str().unwrap(),
        tmp.path().join("out2").to_str().unwrap(),
        "--path",
        "no/such/file",
    ]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not in backup"));
}

#[test]
fn excludes_and_includes_select_what_is_backed_up() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("node"));
    let src = tmp.path().join("src");
    small_tree(&src, 3);
    std::fs::write(src.join("var/log/app.log"), "x").unwrap();
    let b = backup(
        &node,
        &src,
        ENV,
        &["--exclude", "*.log", "--exclude", "/var/log/big.bin"],
    );
    let out = tmp.path().join("out");
    node.ok(&["restore", b["id"].as_str().unwrap(), out.to_str().unwrap()]);
    assert!(out.join("etc/conf.d/f001.conf").exists());
    assert!(!out.join("var/log/app.log").exists());
    assert!(!out.join("var/log/big.bin").exists());
    assert!(out.join("var/log").is_dir());

    let b = backup(&node, &src, ENV, &["--include", "etc/conf.d/f002.conf"]);
    let out = tmp.path().join("out2");
    node.ok(&["restore", b["id"].as_str().unwrap(), out.to_str().unwrap()]);
    assert!(out.join("etc/conf.d/f002.conf").exists());
    assert!(!out.join("etc/conf.d/f001.conf").exists());
    assert!(!out.join("var").exists());
}

#[test]
fn a_torn_pack_tail_is_cut_at_startup() {
    let tmp = tempfile::tempdir().unwrap();
    let mut node = Node::start(&tmp.path().join("node"));
    let src = tmp.path().join("src");
    small_tree(&src, 5);
    let b = backup(&node, &src, ENV, &[]);
    node.kill();
    let pack = node.pack_files().pop().expect("a pack file");
    let len = std::fs::metadata(&pack).unwrap().len();
    // A crash mid-append: a partial record after the last good one.
    let mut torn = std::fs::read(&pack).unwrap();
    torn.extend_from_slice(&noise(777, 5));
    std::fs::write(&pack, &torn).unwrap();
    node.restart();
    wait_for(Duration::from_secs(10), "the tail to be cut", || {
        (std::fs::metadata(&pack).unwrap().len() == len).then_some(())
    });
    let out = tmp.path().join("out");
    node.ok(&["restore", b["id"].as_str().unwrap(), out.to_str().unwrap()]);
    assert!(diff(&src, &out).is_empty());
    // And the store keeps working after the repair.
    std::fs::write(src.join("new-file"), noise(100_000, 3)).unwrap();
    let b2 = backup(&node, &src, ENV, &[]);
    let out2 = tmp.path().join("out2");
    node.ok(&[
        "restore",
        b2["id"].as_str().unwrap(),
        out2.to_str().unwrap(),
    ]);
    assert!(diff(&src, &out2).is_empty());
}

#[test]
fn a_corrupted_pack_byte_is_detected_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let mut node = Node::start(&tmp.path().join("node"));
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("data.bin"), noise(2 << 20, 11)).unwrap();
    let b = backup(&node, &src, ENV, &["--compression", "0"]);
    node.stop();
    // Flip one byte in the middle of the pack: inside the file's chunk payload.
    let pack = node.pack_files().pop().unwrap();
    let mut bytes = std::fs::read(&pack).unwrap();
    let mid = bytes.len() / 3;
    bytes[mid] ^= 0x40;
    std::fs::write(&pack, &bytes).unwrap();
    node.restart();
    let out = tmp.path().join("out");
    let r = node.cairn(&["restore", b["id"].as_str().unwrap(), out.to_str().unwrap()]);
    assert!(!r.status.success(), "restore of corrupt data succeeded");
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("corrupt"), "{err}");
    let named = err
        .split(|c: char| !c.is_ascii_hexdigit())
        .any(|w| w.len() == 64);
    assert!(named, "error does not name the chunk: {err}");
}

#[test]
fn bad_input_gets_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("node"));
    // A failure exits 1, bad usage (a malformed id, a level that is none) 2; both in one line.
    let fails = |code: i32, args: &[&str]| {
        let out = node.cairn(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?} did not exit {code}"
        );
        let all = String::from_utf8_lossy(&out.stderr).into_owned();
        // Progress phase lines may come first; the failure itself is exactly one line.
        let errors: Vec<&str> = all.lines().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(errors.len(), 1, "{args:?}: {all}");
        assert!(
            !all.contains("panicked") && !all.contains("backtrace"),
            "{all}"
        );
        assert!(all.trim_end().ends_with(errors[0]), "{args:?}: {all}");
        errors[0].to_string()
    };
    let err = |args: &[&str]| fails(1, args);
    let usage = |args: &[&str]| fails(2, args);
    let e = err(&["backup", "/no/such/dir", "--env", ENV]);
    assert!(e.contains("/no/such/dir"), "{e}");
    let e = usage(&["backup", "/tmp", "--env", "not-a-uuid"]);
    assert!(e.contains("malformed environment id"), "{e}");
    let e = usage(&["backup", "/tmp", "--env", ENV, "--compression", "7"]);
    assert!(e.contains("compression"), "{e}");
    let e = err(&[
        "restore",
        &format!("{ENV}/20200101000000"),
        "/tmp/x-cairn-none",
    ]);
    assert!(e.contains("not found"), "{e}");
    let e = usage(&["backups", "show", "../../etc/passwd"]);
    assert!(e.contains("malformed backup id"), "{e}");
    let e = err(&["backups", "delete", &format!("{ENV}/20200101000000")]);
    assert!(
        e.contains("not found") || e.contains("does not exist"),
        "{e}"
    );
    let e = err(&["--cluster", "http://127.0.0.1:1", "backups", "list"]);
    assert!(
        e.contains("cannot reach the cluster at http://127.0.0.1:1"),
        "{e}"
    );
    // The node keeps serving after all that.
    node.ok(&["backups", "list"]);
}

#[test]
fn unsafe_manifest_paths_are_refused_at_commit() {
    use cairn_core::manifest::{ManifestRoot, MANIFEST_CHUNK_MAGIC, MANIFEST_VERSION};
    use cairn_core::{BackupId, BackupRecord, ChunkRef, Compression, Entry, EntryKind};
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("node"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = cairn_api::Client::connect(&node.url, &cairn_api::Credentials::default())
            .await
            .unwrap();
        for bad in ["../escape", "/etc/cron.d/evil", "a/../../b"] {
            // A hand-made manifest chunk that skips the writer's checks.
            let e = Entry::new(bad.as_bytes().to_vec(), EntryKind::Dir);
            let rec = bincode_entry(&e);
            let mut chunk = MANIFEST_CHUNK_MAGIC.to_vec();
            chunk.extend((rec.len() as u32).to_le_bytes());
            chunk.extend(rec);
            let mc = cairn_chunker::encode(&chunk, Compression::None);
            let root = ManifestRoot {
                version: MANIFEST_VERSION,
                chunks: vec![ChunkRef {
                    id: mc.id,
                    len: chunk.len() as u32,
                }],
                entries: 1,
                ..Default::default()
            };
            let rc = cairn_chunker::encode(&root.encode(), Compression::None);
            c.put(vec![mc, rc.clone()]).await.unwrap();
            let record = BackupRecord {
                id: BackupId::new(ENV.parse().unwrap(), 0),
                kind: Default::default(),
                parent: None,
                name: String::new(),
                description: String::new(),
                tags: vec![],
                manifest: rc.id,
                logical_size: 0,
                stored_size: 0,
                file_count: 0,
                chunk_count: 0,
                state: Default::default(),
                errors: vec![],
                error_count: 0,
                compression: Compression::None,
                host: "h".into(),
                source: "/".into(),
                env_info: Default::default(),
                includes: Vec::new(),
                excludes: Vec::new(),
                protected: false,
            };
            let err = c.commit(&record, None, None).await.unwrap_err();
            assert_eq!(
                err.code(),
                cairn_core::ErrorCode::InvalidArgument,
                "{bad}: {err}"
            );
            assert!(err.to_string().contains("unsafe path"), "{bad}: {err}");
        }
        assert!(c.list(None).await.unwrap().is_empty());
    });
}

/// Serializes an entry the way the manifest writer does (bincode, default options).
fn bincode_entry(e: &cairn_core::Entry) -> Vec<u8> {
    cairn_core::manifest::encode_entry(e)
}

#[test]
fn unreadable_files_make_the_backup_incomplete() {
    require_root("runs the client as another user so a file is unreadable (exit code 3)");
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("node"));
    let src = tmp.path().join("src");
    small_tree(&src, 3);
    std::fs::write(src.join("etc/secret"), "root only").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        src.join("etc/secret"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    // The temp dir itself is private; let the unprivileged client in.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(cairn_tests::cairn_bin())
        .args(["backup", src.to_str().unwrap(), "--env", ENV, "--json"])
        .env("CAIRN_CLUSTER", &node.url)
        .output()
        .expect("setpriv");
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state"], "incomplete");
    assert_eq!(v["files_skipped"], 1);
    assert!(
        v["errors"][0].as_str().unwrap().contains("etc/secret"),
        "{v}"
    );
    let shown: Value =
        serde_json::from_str(&node.ok(&["backups", "show", v["id"].as_str().unwrap(), "--json"]))
            .unwrap();
    assert_eq!(shown["state"], "incomplete");
}

#[test]
fn a_full_disk_fails_the_backup_and_keeps_existing_ones() {
    require_root("mounts a small tmpfs to fill the disk");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("node");
    let packs = data.join("chunks/packs");
    std::fs::create_dir_all(&packs).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=6m", "tmpfs"])
        .arg(&packs)
        .status();
    assert!(
        mounted.as_ref().is_ok_and(|s| s.success()),
        "cannot mount a tmpfs at {}: {mounted:?}",
        packs.display()
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(packs.clone());
    let mut node = Node::start(&data);
    let src = tmp.path().join("src");
    small_tree(&src, 3);
    let first = backup(&node, &src, ENV, &[]);

    let big = tmp.path().join("big");
    std::fs::create_dir_all(&big).unwrap();
    std::fs::write(big.join("random.bin"), noise(12 << 20, 77)).unwrap();
    let r = node.cairn(&["backup", big.to_str().unwrap(), "--env", ENV2]);
    assert_eq!(r.status.code(), Some(1));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("disk space"), "{err}");

    let list: Value = serde_json::from_str(&node.ok(&["backups", "list", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let out = tmp.path().join("out");
    node.ok(&[
        "restore",
        first["id"].as_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert!(diff(&src, &out).is_empty());
    node.stop();
}
