//! Faults an operator meets, with real processes: a storage node whose disk fills up, and an
//! agent that refuses hooks. Every wait is on an observable condition with a deadline.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cairn_tests::fleet::{
    backups, dir_host, eid_of, finished, job, start_agent, submit, succeeded,
};
use cairn_tests::{is_root, noise, wait_for, Node, TestCluster};
use serde_json::Value;

const ENV: &str = "3b5e2f10-8c4d-4a9e-b7f1-2d6c0e9a4b13";
const TOKEN: &str = "faults-t0ken";

fn backup(node: &Node, src: &Path) -> Value {
    let args = ["backup", src.to_str().unwrap(), "--env", ENV, "--json"];
    serde_json::from_str(&node.ok(&args)).expect("backup --json output")
}

/// The chunks each node reports holding (`cairn cluster status`), by node id.
fn chunks_per_node(n: &Node) -> Vec<(u64, u64)> {
    let s: Value = serde_json::from_str(&n.ok(&["cluster", "status", "--json"])).unwrap();
    s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["node_id"].as_u64().unwrap(),
                n["chunks"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn chunks_of(n: &Node, id: u64) -> u64 {
    chunks_per_node(n)
        .into_iter()
        .find(|(i, _)| *i == id)
        .map(|(_, c)| c)
        .unwrap_or_else(|| panic!("node {id} in the status"))
}

/// A tmpfs mounted at a path for the life of the value: unmounted on drop, also on a panic
/// (lazily, should a process still hold it).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        assert!(is_root(), "needs root: the disk-full test mounts a tmpfs");
        std::fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(st.success(), "mount a tmpfs at {}", at.display());
        Tmpfs(at.to_path_buf())
    }

    /// Fills the file system with a ballast file until `leave` bytes are free.
    fn fill(&self, leave: u64) -> PathBuf {
        use std::io::Write;
        let st = nix::sys::statvfs::statvfs(&self.0).unwrap();
        let free = st.blocks_available() as u64 * st.fragment_size() as u64;
        let ballast = self.0.join("ballast");
        let mut f = std::fs::File::create(&ballast).unwrap();
        let block = vec![0x5a_u8; 64 << 10];
        let mut left = free.saturating_sub(leave);
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            f.write_all(&block[..n]).unwrap();
            left -= n as u64;
        }
        ballast
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// A node whose data disk is full refuses new chunks; the other owners take them (the backup
/// succeeds); with two of three full the backup fails with one line and nothing becomes
/// visible; committed backups stay intact throughout, and once space returns the full nodes
/// take writes again, without a restart.
#[test]
fn a_full_disk_refuses_chunks_and_recovers_without_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let cdir = tmp.path().join("c");
    // Nodes 2 and 3 keep their data directory on a small file system of their own. The
    // chunk store keeps 1 MiB free on a 64 MiB file system (1/64, at least 1 MiB) for its
    // index and the catalog; "full" leaves less than that.
    let disk2 = Tmpfs::mount(&cdir.join("node2"), "64m");
    let disk3 = Tmpfs::mount(&cdir.join("node3"), "64m");
    const LEAVE: u64 = 768 << 10;
    let c = TestCluster::start(&cdir, 3, "");
    let n = &c.nodes[0];

    let src1 = tmp.path().join("src1");
    std::fs::create_dir_all(&src1).unwrap();
    std::fs::write(src1.join("a.bin"), noise(6 << 20, 1)).unwrap();
    std::fs::write(src1.join("small"), b"one\n").unwrap();
    let b1 = backup(n, &src1)["id"].as_str().unwrap().to_string();

    // Node 2's disk fills up. A backup of new data still succeeds: chunks node 2 would be
    // primary for go to the next owner, and copies to node 2 are left for repair.
    let ballast2 = disk2.fill(LEAVE);
    let held2 = chunks_of(n, 2);
    let src2 = tmp.path().join("src2");
    std::fs::create_dir_all(&src2).unwrap();
    std::fs::write(src2.join("b.bin"), noise(6 << 20, 2)).unwrap();
    let b2 = backup(n, &src2);
    assert!(b2["chunks_sent"].as_u64().unwrap() >= 4, "{b2}");
    let b2 = b2["id"].as_str().unwrap().to_string();
    assert_eq!(chunks_of(n, 2), held2, "the full node took no chunk");
    c.nodes[1].restore_identical(&b2, &src2, &tmp.path().join("out2"));

    // Node 3 fills up too: a chunk can no longer get the two copies the write quorum needs.
    // The backup fails with one clear line, and no backup becomes visible.
    let ballast3 = disk3.fill(LEAVE);
    let listed = |n: &Node| -> usize {
        let v: Value = serde_json::from_str(&n.ok(&["backups", "list", "--json"])).unwrap();
        v.as_array().unwrap().len()
    };
    let before = listed(n);
    let src3 = tmp.path().join("src3");
    std::fs::create_dir_all(&src3).unwrap();
    std::fs::write(src3.join("c.bin"), noise(6 << 20, 3)).unwrap();
    // (--json: progress phases stay off stderr, which then holds the error alone.)
    let out = n.cairn(&["backup", src3.to_str().unwrap(), "--env", ENV, "--json"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("disk space"), "{err}");
    assert_eq!(listed(n), before, "nothing partial is visible");
    // What was committed before is intact.
    c.nodes[2].restore_identical(&b1, &src1, &tmp.path().join("out1"));

    // Space returns: without a restart, the nodes take writes again, and repair gives
    // node 2 the copies it missed.
    std::fs::remove_file(ballast2).unwrap();
    std::fs::remove_file(ballast3).unwrap();
    let b3 = backup(n, &src3)["id"].as_str().unwrap().to_string();
    let grown = chunks_of(n, 2);
    assert!(
        grown > held2,
        "node 2 took the new backup's chunks: {grown} <= {held2}"
    );
    n.ok(&["cluster", "repair"]);
    wait_for(
        Duration::from_secs(60),
        "the three nodes to hold the same chunks",
        || {
            let per = chunks_per_node(n);
            let first = per[0].1;
            (per.len() == 3 && per.iter().all(|(_, c)| *c == first)).then_some(())
        },
    );
    // Every backup restores identical, through any node.
    c.nodes[1].restore_identical(&b1, &src1, &tmp.path().join("out1b"));
    c.nodes[2].restore_identical(&b2, &src2, &tmp.path().join("out2b"));
    c.nodes[0].restore_identical(&b3, &src3, &tmp.path().join("out3"));
    let scrub: Value = serde_json::from_str(&n.ok(&["scrub", "--json"])).unwrap();
    assert_eq!(scrub["corrupt"], 0, "{scrub}");
    drop(c);
}

/// A backup job for an environment with hooks, on an agent with `hooks = false`, fails before
/// anything is read and runs no hook; without hooks the same agent backs up as usual.
#[test]
fn an_agent_that_refuses_hooks_fails_the_job_instead_of_skipping_them() {
    let dir = tempfile::tempdir().unwrap();
    let c = TestCluster::start_with_token(&dir.path().join("c"), 3, "", Some(TOKEN));
    let envs_dir = dir.path().join("envs");
    dir_host(&envs_dir, &["db"], 2 << 20);
    let _agent = start_agent(
        &c,
        dir.path(),
        "h1",
        "hooks = false",
        &format!("dirs = [\"{}\"]", envs_dir.display()),
    );
    let envs = c.nodes[0].envs(Some("h1"), 1);
    let db = eid_of(&envs, "db");
    let n = &c.nodes[0];
    let log = dir.path().join("hooks.log");
    let total = |n: &Node| -> u64 { chunks_per_node(n).iter().map(|(_, c)| c).sum() };

    for (stage, flag) in [("pre hooks", "--pre-hook"), ("post hooks", "--post-hook")] {
        n.ok(&[
            "config",
            "set",
            "--env",
            &db,
            "--unset",
            "pre_hooks",
            "--unset",
            "post_hooks",
        ]);
        n.ok(&[
            "config",
            "set",
            "--env",
            &db,
            flag,
            &format!("echo ran >> {}", log.display()),
        ]);
        let held = total(n);
        let id = submit(n, &["backup", "--env", &db]);
        let j = finished(n, &id, Duration::from_secs(60));
        assert_eq!(j["state"], "failed", "{j:#}");
        let reason = j["reason"].as_str().unwrap();
        assert!(
            reason.contains(&format!("has {stage} configured")) && reason.contains("hooks = false"),
            "{j:#}"
        );
        assert!(backups(n, &db).is_empty(), "no backup: {j:#}");
        assert_eq!(job(n, &id)["progress"]["bytes_done"], 0, "{j:#}");
        assert_eq!(total(n), held, "nothing was read or sent");
        assert!(!log.exists(), "no hook ran");
    }

    n.ok(&[
        "config",
        "set",
        "--env",
        &db,
        "--unset",
        "pre_hooks",
        "--unset",
        "post_hooks",
    ]);
    succeeded(n, &submit(n, &["backup", "--env", &db]));
    assert_eq!(backups(n, &db).len(), 1);
    assert!(!log.exists());
}

/// Scrub on a node whose every copy is corrupt and that has no other node to fetch from:
/// the copies are kept and reported as not repaired (exit 1), never dropped — a second scrub
/// checks as many chunks as the first.
#[test]
fn scrub_keeps_a_corrupt_copy_that_has_no_healthy_replica() {
    let tmp = tempfile::tempdir().unwrap();
    let mut n = Node::start(&tmp.path().join("n1"));
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.bin"), noise(3 << 20, 7)).unwrap();
    backup(&n, &src);
    let clean: Value = serde_json::from_str(&n.ok(&["scrub", "--json"])).unwrap();
    let held = clean["checked"].as_u64().unwrap();
    assert!(held >= 2, "{clean}");

    // A flipped byte every 64 KiB of every pack: every chunk is corrupt.
    n.stop();
    for pack in n.pack_files() {
        let mut bytes = std::fs::read(&pack).unwrap();
        let mut at = 4096;
        while at < bytes.len() {
            bytes[at] ^= 0x40;
            at += 64 << 10;
        }
        std::fs::write(&pack, &bytes).unwrap();
    }
    n.restart();
    for _ in 0..2 {
        let out = n.cairn(&["scrub", "--json"]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "unrepaired copies fail the scrub"
        );
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["checked"].as_u64(), Some(held), "nothing dropped: {r}");
        assert!(r["corrupt"].as_u64().unwrap() >= 1, "{r}");
        assert_eq!(r["unrepaired"], r["corrupt"], "{r}");
        assert_eq!(r["repaired"], 0, "{r}");
        assert_eq!(r["unreadable"], 0, "{r}");
    }
}

/// Found by the nemesis harness (seed 1): a node whose disk fills to the last byte cannot
/// write its catalog, and its raft member stops for good. It now exits with one line naming
/// the cause instead of staying up answering nothing; the cluster serves on, and once space
/// is back a restart (its supervisor's job) brings it back.
#[test]
fn a_node_whose_catalog_cannot_be_written_stops_and_comes_back_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let cdir = tmp.path().join("c");
    let disk2 = Tmpfs::mount(&cdir.join("node2"), "64m");
    let mut c = TestCluster::start(&cdir, 3, "");
    let first = tmp.path().join("first");
    std::fs::create_dir_all(&first).unwrap();
    std::fs::write(first.join("a.bin"), noise(1 << 20, 9)).unwrap();
    let b1 = backup(&c.nodes[0], &first)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();

    // Node 2's disk fills to the very last byte.
    let ballast = disk2.fill(0);
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&ballast)
            .unwrap();
        while f.write_all(&[0u8; 4096]).is_ok() {}
        while f.write_all(&[0u8; 1]).is_ok() {}
    }
    // Backups go on through node 1; node 2's catalog receives their entries until its
    // storage fails.
    let log = c.nodes[1].log.clone();
    let mut round = 0u64;
    wait_for(
        Duration::from_secs(180),
        "node 2 to stop on its full disk",
        || {
            round += 1;
            std::fs::write(src.join(format!("f{round}")), noise(256 << 10, round)).unwrap();
            let _ = c.nodes[0].cairn(&["backup", src.to_str().unwrap(), "--env", ENV, "--json"]);
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            (!c.nodes[1].is_running() && text.contains("the node's catalog failed")).then_some(())
        },
    );
    c.nodes[0].restore_identical(&b1, &first, &tmp.path().join("out1"));

    // Space back, node 2 restarted: it serves again.
    std::fs::remove_file(ballast).unwrap();
    c.node(2).restart();
    let b2 = backup(&c.nodes[1], &src)["id"]
        .as_str()
        .unwrap()
        .to_string();
    c.nodes[1].restore_identical(&b2, &src, &tmp.path().join("out2"));
    drop(c);
}

/// A network partition, for real (root: each node runs in a network namespace of its own, as
/// in the nemesis): the leader is cut off from both followers. The majority elects another
/// leader and a backup through it commits; the isolated node stops claiming to lead (its
/// status names no leader) instead of answering for a cluster it cannot reach. After healing
/// it catches up: the same applied log, the backup listed and restorable through it.
#[test]
fn a_leader_cut_off_by_a_partition_steps_aside_and_the_majority_keeps_backing_up() {
    cairn_tests::require_root("nodes in network namespaces of their own (ip netns)");
    let tmp = tempfile::tempdir().unwrap();
    let mut net = cairn_tests::nemesis::net::Net::create().expect("a bridge for the nodes");
    let hosts = (1..=3)
        .map(|id| net.host(id).expect("a namespace"))
        .collect();
    let c = TestCluster::start_on(&tmp.path().join("c"), hosts, "", Some(TOKEN), None);
    let old = c.leader();
    let others: Vec<u64> = (1..=3).filter(|&i| i != old).collect();
    let status = |id: u64| -> Option<Value> {
        let out = c.nodes[id as usize - 1].cairn(&["cluster", "status", "--json"]);
        serde_json::from_slice(&out.stdout).ok()
    };
    for &o in &others {
        net.cut(old, o).unwrap();
        net.cut(o, old).unwrap();
    }
    let new = wait_for(Duration::from_secs(60), "a leader in the majority", || {
        let l = status(others[0])?["leader"].as_u64()?;
        others.contains(&l).then_some(l)
    });
    wait_for(
        Duration::from_secs(60),
        "the cut-off node to stop naming itself leader",
        || {
            let s = status(old)?;
            (s["leader"].as_u64() != Some(old)).then_some(())
        },
    );
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.bin"), noise(3 << 20, 41)).unwrap();
    let b = backup(&c.nodes[new as usize - 1], &src)["id"]
        .as_str()
        .unwrap()
        .to_string();

    net.heal().unwrap();
    let applied = |id: u64| -> Option<u64> {
        status(id)?["nodes"]
            .as_array()?
            .iter()
            .find(|n| n["node_id"].as_u64() == Some(id))?["commit_index"]
            .as_u64()
    };
    wait_for(
        Duration::from_secs(60),
        "the healed node to catch up",
        || {
            let (a, b) = (applied(old)?, applied(new)?);
            (a == b).then_some(())
        },
    );
    let listed = c.nodes[old as usize - 1].ok(&["backups", "list", "--json"]);
    assert!(listed.contains(&b), "{listed}");
    c.nodes[old as usize - 1].restore_identical(&b, &src, &tmp.path().join("out"));
    drop(c);
}
