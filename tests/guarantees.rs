//! The guarantees README.md states that no other test checks, one test each, with real
//! processes. Each test's doc comment quotes the guarantee it checks; every wait is on an
//! observable condition with a deadline.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use cairn_tests::fleet::{dir_host, eid_of, finished, start_agent, submit, succeeded};
use cairn_tests::http;
use cairn_tests::{cairn_bin, free_ports, noise, wait_for, KillOnDrop, Node, TestCluster};
use serde_json::Value;

const TOKEN: &str = "guarantees-t0ken";
const ENV: &str = "6f1c0d9e-2b1a-4d7e-9a55-0c3b8e1f7a21";

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn error_lines(o: &Output) -> usize {
    stderr(o)
        .lines()
        .filter(|l| l.starts_with("error: "))
        .count()
}

/// Every file under `dir`, recursively (symlinks not followed).
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() => out.push(p),
                _ => {}
            }
        }
    }
    out
}

/// The files under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    files(dir)
        .into_iter()
        .filter(|p| std::fs::read(p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)))
        .collect()
}

/// "When a node refused, the line ends with its stable code, e.g. `[E1004]`: the call had no
/// effect" (scripts, and the nemesis harness, tell a refusal from a call that may have
/// happened by it; the harness found every failure unclassifiable without it).
#[test]
fn a_refusal_names_its_stable_code() {
    let tmp = tempfile::tempdir().unwrap();
    let n = Node::start(&tmp.path().join("n"));
    let missing = format!("{ENV}/20200101000000");
    let out = n.cairn(&["backups", "delete", &missing]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = stderr(&out);
    // E1012, backup not found (of the E1002 family; E1002 itself before codes were fine).
    assert!(line.trim_end().ends_with("[E1012]"), "{line}");
    assert_eq!(error_lines(&out), 1, "{line}");
    // A node that does not answer is not a refusal: no code.
    let out = Command::new(cairn_bin())
        .args(["backups", "list"])
        .env("CAIRN_CLUSTER", "http://127.0.0.1:1")
        .output()
        .unwrap();
    assert!(!stderr(&out).contains("[E"), "{}", stderr(&out));
}

/// "Exit codes: 0 success, 1 failure (one line on stderr saying what and where), 2 bad
/// usage, 3 backup committed but incomplete."
///
/// Bad usage is refused before anything is contacted (no cluster listens at the address the
/// commands get); a well-formed command that fails exits 1 with one line.
#[test]
fn bad_usage_exits_2_and_a_failure_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let nobody = format!("http://127.0.0.1:{}", free_ports(1)[0]);
    let run = |args: &[&str]| {
        Command::new(cairn_bin())
            .args(args)
            .env("CAIRN_CLUSTER", &nobody)
            .env_remove("CAIRN_TOKEN")
            .stdin(Stdio::null())
            .output()
            .expect("run cairn")
    };
    let src = dir.path().to_str().unwrap();
    let out_dir = dir.path().join("out");
    let out = out_dir.to_str().unwrap();
    let bad: Vec<Vec<&str>> = vec![
        vec!["backup", src, "--env", "not-an-environment-id"],
        vec!["backup", "--env", "not-an-environment-id", "--no-wait"],
        vec!["backup", src, "--env", ENV, "--type", "sideways"],
        vec!["backup", src, "--env", ENV, "--compression", "9"],
        vec!["backup", src, "--env", ENV, "--no-such-option"],
        vec!["backups", "show", "not-a-backup-id"],
        vec!["backups", "list", "--env", "nope"],
        vec!["restore", "not-a-backup-id", out],
        vec!["restore", "--env", "nope"],
        vec!["restore"],
        vec!["restore", "--env", ENV, "--host", "h2"],
        vec!["envs", "move", "nope", "--to", "h2"],
        vec!["no-such-command"],
    ];
    for args in &bad {
        let o = run(args);
        assert_eq!(o.status.code(), Some(2), "cairn {args:?}: {}", stderr(&o));
        assert!(!stderr(&o).trim().is_empty(), "cairn {args:?} says why");
    }
    // Well-formed, but nothing answers at the cluster address: a failure, in one line.
    let o = run(&["backup", src, "--env", ENV]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(error_lines(&o), 1, "{}", stderr(&o));
}

/// "Writes give up after 10 s without a quorum ("not committed within 10s")."
///
/// The leader keeps its role when both followers die, so a write reaches raft and waits for
/// a quorum that never answers. (Issuing a token is a write with no read before it; a call
/// that reads first is refused at once with "no quorum".)
#[test]
fn a_write_without_a_quorum_gives_up_not_committed_within_10s() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = TestCluster::start(&dir.path().join("c"), 3, "");
    let leader = c.leader();
    for id in (1..=3).filter(|&i| i != leader) {
        c.node(id).kill();
    }
    let o = c.node(leader).cairn(&["agent", "token", "create", "h9"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not committed within 10s"),
        "{}",
        stderr(&o)
    );
    assert_eq!(error_lines(&o), 1, "{}", stderr(&o));
}

/// "`/healthz` (200 `ok` while the cluster has a leader)": without a leader it answers 503.
///
/// Both cases of losing the leader: a survivor that was a follower (it knows no leader), and
/// a leader whose followers died (it leads nothing: no write can commit).
#[test]
fn healthz_answers_503_without_a_leader() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    cairn_tests::add_user(&users, "admin", "admin", "admin-pass-1");
    let extra = format!(
        "[gateway]\nusers_file = \"{}\"\n[gateway.rest]\nlisten = \"127.0.0.1:0\"\n",
        users.display()
    );
    let mut c = TestCluster::start(&dir.path().join("c"), 3, &extra);
    // The REST listener of a node's `starts`-th start (its log spans restarts).
    let rest = |n: &Node, starts: usize| -> String {
        wait_for(Duration::from_secs(30), "the REST listener", || {
            let log = std::fs::read_to_string(&n.log).ok()?;
            let banner = "REST API (Sun Cloud API) at ";
            if log.matches(banner).count() < starts {
                return None;
            }
            let at = log.rfind(banner)?;
            let url = log[at + banner.len()..].lines().next()?.trim();
            Some(url.trim_end_matches('/').to_string())
        })
    };
    let health = |base: &str| http::request("GET", &format!("{base}/healthz"), &[], b"").status;
    for i in 1..=3 {
        let base = rest(&c.nodes[i - 1], 1);
        wait_for(Duration::from_secs(30), "200 with a leader", || {
            (health(&base) == 200).then_some(())
        });
    }

    // A follower whose leader and other follower died.
    let leader = c.leader();
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    for id in (1..=3).filter(|&i| i != follower) {
        c.node(id).kill();
    }
    let base = rest(&c.nodes[follower as usize - 1], 1);
    wait_for(
        Duration::from_secs(60),
        "a follower without a leader: 503",
        || (health(&base) == 503).then_some(()),
    );

    // Back to three; then a leader whose two followers died.
    for id in (1..=3).filter(|&i| i != follower) {
        c.node(id).restart();
    }
    c.wait_formed(Duration::from_secs(60));
    let leader = c.leader();
    for id in (1..=3).filter(|&i| i != leader) {
        c.node(id).kill();
    }
    let starts = if leader == follower { 1 } else { 2 };
    let base = rest(&c.nodes[leader as usize - 1], starts);
    wait_for(Duration::from_secs(60), "an isolated leader: 503", || {
        (health(&base) == 503).then_some(())
    });
}

/// "Agent tokens: `cairn agent token create HOST` (printed once; the catalog keeps only its
/// BLAKE3 hash)"; "The catalog keeps only BLAKE3 hashes of tokens."
///
/// Neither an agent token nor a user token is anywhere in any node's data directory (sled
/// catalog, raft log and vote, chunk store) nor in its log; their hashes are (so the scan
/// would find them).
#[test]
fn the_catalog_keeps_only_hashes_of_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = TestCluster::start_with_token(&dir.path().join("c"), 3, "", Some(TOKEN));
    let agent = c.nodes[0].ok(&["agent", "token", "create", "h1"]);
    let user = c.nodes[1].ok(&["token", "create", "alice", "--role", "operator"]);
    let (agent, user) = (agent.trim().to_string(), user.trim().to_string());
    // The user token works, so the cluster knows it.
    let o = c.nodes[2].cairn_as(Some(&user), &["backups", "list", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for id in 1..=3 {
        c.node(id).stop();
    }
    for token in [&agent, &user] {
        let (_, secret) = token.rsplit_once('.').expect("token id.secret");
        assert!(secret.len() >= 32, "{token}");
        let hash = cairn_core::job::token_hash(token);
        for n in &c.nodes {
            assert!(
                !files_containing(&n.data, hash.as_bytes()).is_empty(),
                "the hash of {token} is in {}",
                n.data.display()
            );
            let leaks = files_containing(&n.data, secret.as_bytes());
            assert!(leaks.is_empty(), "{token} in plain text: {leaks:?}");
            let log = std::fs::read_to_string(&n.log).unwrap();
            assert!(!log.contains(secret), "{token} in {}", n.log.display());
        }
    }
}

/// "The voter with the lowest id forms the cluster on its first start (only if it never
/// belonged to one and no other voter already does)."
///
/// Node 1's data directory is wiped: on its next start it forms nothing (its peers belong to
/// a cluster) and catches up as a member of the one cluster.
#[test]
fn a_wiped_lowest_id_voter_does_not_form_a_new_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = TestCluster::start(&dir.path().join("c"), 3, "");
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), noise(64 << 10, 5)).unwrap();
    c.nodes[1].ok(&["backup", src.to_str().unwrap(), "--env", ENV]);
    let cluster_id = std::fs::read_to_string(c.nodes[1].data.join("cluster.id")).unwrap();

    c.node(1).stop();
    let data = c.nodes[0].data.clone();
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    let log_before = std::fs::read_to_string(&c.nodes[0].log).unwrap().len();
    c.node(1).restart();
    let log = || std::fs::read_to_string(&c.nodes[0].log).unwrap()[log_before..].to_string();
    // It takes the cluster's id and catalog once it catches up, and the others never saw a
    // second cluster.
    wait_for(Duration::from_secs(60), "node 1 to catch up", || {
        let ours = std::fs::read_to_string(data.join("cluster.id")).ok()?;
        let list = c.nodes[0].cairn(&["backups", "list", "--json"]);
        let v: Value = serde_json::from_slice(&list.stdout).ok()?;
        (ours == cluster_id && v.as_array()?.len() == 1).then_some(())
    });
    assert!(!log().contains("formed a new cluster"), "{}", log());
    for n in &c.nodes[1..] {
        assert_eq!(
            std::fs::read_to_string(n.data.join("cluster.id")).unwrap(),
            cluster_id
        );
    }
}

/// "Membership: … Refused with nothing changed: unknown id, last voter, fewer nodes than RF
/// left, an address that does not answer, an id already in the cluster, a node of another
/// cluster."
#[test]
fn membership_changes_that_cannot_work_are_refused_with_nothing_changed() {
    let dir = tempfile::tempdir().unwrap();
    let c = TestCluster::start(&dir.path().join("c"), 3, "");
    // Another cluster: one voter, id 7.
    let other_dir = dir.path().join("other");
    let port = free_ports(1)[0];
    let other = Node::start_with(
        &other_dir,
        &format!(
            "node_id = 7\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n[[voters]]\nid = 7\naddr = \"127.0.0.1:{port}\"\nzone = \"z7\"\n",
            other_dir.display()
        ),
    );
    wait_for(Duration::from_secs(60), "the other cluster to form", || {
        let s: Value = serde_json::from_str(&other.ok(&["cluster", "status", "--json"])).ok()?;
        (s["leader"].as_u64()? == 7 && s["epoch"].as_u64()? >= 1).then_some(())
    });
    let n = &c.nodes[0];
    let shape = |n: &Node| {
        let s: Value = serde_json::from_str(&n.ok(&["cluster", "status", "--json"])).unwrap();
        let mut ids: Vec<u64> = s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["node_id"].as_u64().unwrap())
            .collect();
        ids.sort();
        (s["epoch"].as_u64().unwrap(), ids)
    };
    let before = shape(n);
    assert_eq!(before.1, vec![1, 2, 3]);
    let second = c.nodes[1].url.trim_start_matches("http://").to_string();
    let dead = format!("127.0.0.1:{}", free_ports(1)[0]);
    let other_addr = format!("127.0.0.1:{port}");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["cluster", "remove-node", "9"], "not in the cluster"),
        (
            vec!["cluster", "remove-node", "3"],
            "would leave 2 storage node(s) for replication factor 3",
        ),
        (vec!["cluster", "add-node", &dead], "does not answer"),
        (
            vec!["cluster", "add-node", &second],
            "already in the cluster",
        ),
        (
            vec!["cluster", "add-node", &other_addr],
            "already belongs to a cluster",
        ),
    ];
    for (args, why) in &cases {
        let o = n.cairn(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(why), "{args:?}: {}", stderr(&o));
        assert_eq!(shape(n), before, "{args:?} changed nothing");
    }
    // The last voter of the other cluster.
    let o = other.cairn(&["cluster", "remove-node", "7"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("is the last voter"), "{}", stderr(&o));
    let s: Value = serde_json::from_str(&other.ok(&["cluster", "status", "--json"])).unwrap();
    assert_eq!(s["nodes"].as_array().unwrap().len(), 1, "{s}");
}

/// "`cairn scrub` re-hashes every chunk on every node and replaces corrupt copies from
/// healthy replicas (exit 1 if one had none)."
#[test]
fn scrub_exits_1_when_a_corrupt_chunk_has_no_healthy_copy() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(&dir.path().join("node"));
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("data.bin"), noise(2 << 20, 21)).unwrap();
    node.ok(&[
        "backup",
        src.to_str().unwrap(),
        "--env",
        ENV,
        "--compression",
        "0",
    ]);
    let clean = node.cairn(&["scrub"]);
    assert_eq!(clean.status.code(), Some(0), "{}", stderr(&clean));
    node.stop();
    let pack = node.pack_files().pop().unwrap();
    let mut bytes = std::fs::read(&pack).unwrap();
    let mid = bytes.len() / 3;
    bytes[mid] ^= 0x40;
    std::fs::write(&pack, &bytes).unwrap();
    node.restart();
    let o = node.cairn(&["scrub"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("NOT repaired"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

/// "In-place restore … Without `--force` it refuses a target that a process is using", as
/// a job through the environment's agent.
#[test]
fn an_in_place_restore_job_refuses_a_target_in_use_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let c = TestCluster::start_with_token(&dir.path().join("c"), 1, "", Some(TOKEN));
    let envs = dir.path().join("envs");
    dir_host(&envs, &["ct"], 64 << 10);
    let _agent = start_agent(
        &c,
        dir.path(),
        "h1",
        "",
        &format!("dirs = [\"{}\"]", envs.display()),
    );
    let n = &c.nodes[0];
    let eid = eid_of(&n.envs(Some("h1"), 1), "ct");
    succeeded(n, &submit(n, &["backup", "--env", &eid]));
    let ct = envs.join("ct");
    let blob = std::fs::read(ct.join("blob")).unwrap();

    // A process works in the container: its working directory is inside.
    let user = KillOnDrop(
        Command::new("sleep")
            .arg("600")
            .current_dir(ct.join("etc"))
            .spawn()
            .unwrap(),
    );
    let j = finished(
        n,
        &submit(n, &["restore", "--env", &eid]),
        Duration::from_secs(60),
    );
    assert_eq!(j["state"], "failed", "{j:#}");
    let reason = j["reason"].as_str().unwrap();
    assert!(
        reason.contains("is in use") && reason.contains(&format!("process {}", user.0.id())),
        "{reason}"
    );
    assert_eq!(std::fs::read(ct.join("blob")).unwrap(), blob);
    let siblings: Vec<_> = std::fs::read_dir(&envs)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(siblings.is_empty(), "nothing was staged");

    // With --force it goes ahead; without the process, so does a plain restore.
    succeeded(n, &submit(n, &["restore", "--env", &eid, "--force"]));
    drop(user);
    succeeded(n, &submit(n, &["restore", "--env", &eid]));
    assert_eq!(std::fs::read(ct.join("blob")).unwrap(), blob);
}
