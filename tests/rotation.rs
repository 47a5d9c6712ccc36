//! Rotating the cluster secret and the TLS certificates with the cluster serving, by the
//! steps of `docs/operations.md` ("Rotate the cluster secret and certificates", whose shell
//! blocks this test runs as written, on each node's directory): a second
//! `cairn init cluster` makes the new CA, node certificates and secret; three rolling
//! restarts move every node from the old to the new, each node at every moment accepting
//! what every other node sends. Between restarts the cluster has a leader and every node is
//! up; a backup taken in the middle and one taken before restore identical at the end, when
//! the old secret is refused and a client that trusts only the old CA cannot connect.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use cairn_tests::{cairn_bin, free_ports, wait_for, Node};
use serde_json::Value;

const ENV: &str = "6f1c0d9e-2b1a-4d7e-9a55-0c3b8e1f7a21";

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `cairn init cluster` for the three nodes of `ports` into `out`, with each node's files
/// meant for `d/etc-N` and its data in `d/data-N`.
fn init_cluster(d: &Path, out: &Path, ports: &[u16]) {
    let etc = d.join("etc-{id}");
    let data = d.join("data-{id}");
    let mut args: Vec<String> = vec!["init".into(), "cluster".into(), "--out".into()];
    args.push(out.display().to_string());
    for (i, p) in ports.iter().enumerate() {
        args.push("--node".into());
        args.push(format!("{}=127.0.0.1:{p}", i + 1));
    }
    args.extend([
        "--etc".into(),
        etc.display().to_string(),
        "--data-dir".into(),
        data.display().to_string(),
    ]);
    let o = Command::new(cairn_bin())
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "init cluster: {}", stderr(&o));
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Writes `text` over `p`, keeping its mode.
fn put(p: &Path, text: &str) {
    std::fs::write(p, text).unwrap();
}

/// Waits until the cluster serves through `n`: a catalog write made through it (named
/// `probe`) reaches every node (each reports the same catalog index and digest, so the
/// leader's appends are accepted by every node), and all three nodes answer with a leader.
fn serving(n: &Node, what: &str, probe: &str) {
    n.ok(&["token", "create", probe, "--role", "viewer"]);
    wait_for(Duration::from_secs(90), what, || {
        let s: Value = serde_json::from_str(&n.ok(&["cluster", "status", "--json"])).ok()?;
        let nodes = s["nodes"].as_array()?;
        let same = |f: &str| nodes.iter().all(|m| m[f] == nodes[0][f] && !m[f].is_null());
        (s["leader"].as_u64().is_some()
            && nodes.len() == 3
            && nodes.iter().all(|m| m["state"] == "up")
            && same("leader")
            && same("catalog_index")
            && same("catalog_digest"))
        .then_some(())
    });
}

/// Stops node `i`, lets `change` edit its `/etc/cairn`, starts it again, and waits until the
/// cluster serves with it.
fn rolling(nodes: &mut [Node], etc: &[PathBuf], step: &str, change: impl Fn(usize, &Path)) {
    for i in 0..nodes.len() {
        nodes[i].stop();
        change(i, &etc[i]);
        nodes[i].restart();
        let probe = format!("{}-node-{}", step.replace(' ', "-"), i + 1);
        let what = format!("{step}: node {} back and serving", i + 1);
        serving(&nodes[i], &what, &probe);
    }
}

/// The three steps' shell blocks of `docs/operations.md`'s rotation section, in order.
fn doc_steps() -> Vec<String> {
    let doc = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/operations.md"));
    let start = doc
        .find("## Rotate the cluster secret and certificates")
        .expect("the rotation section");
    let section = &doc[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    let blocks: Vec<String> = section
        .split("```sh\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap().to_string())
        .filter(|b| b.contains("cd /etc/cairn"))
        .collect();
    assert_eq!(blocks.len(), 3, "three steps in the rotation section");
    blocks
}

/// Runs a step of the documentation on one node's directory: `/etc/cairn` is `etc`, `NEW`
/// is `new`, the group is this user's (the test need not run as root), and the restart is
/// the caller's.
fn run_doc_step(block: &str, etc: &Path, new: &Path) {
    let gid = nix_gid();
    let script = block
        .replace("/etc/cairn", etc.to_str().unwrap())
        .replace("NEW/", &format!("{}/", new.display()))
        .replace("chgrp cairn", &format!("chgrp {gid}"))
        .replace("systemctl restart cairn-node", "");
    let o = Command::new("sh").args(["-ec", &script]).output().unwrap();
    assert!(o.status.success(), "{script}\n{}", stderr(&o));
}

fn nix_gid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().gid()
}

fn backup(n: &Node, src: &Path) -> String {
    let v: Value =
        serde_json::from_str(&n.ok(&["backup", src.to_str().unwrap(), "--env", ENV, "--json"]))
            .unwrap();
    v["id"].as_str().unwrap().to_string()
}

#[test]
fn the_cluster_secret_and_certificates_rotate_with_the_cluster_serving() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ports = free_ports(3);
    let (old, new) = (d.join("old"), d.join("new"));
    init_cluster(d, &old, &ports);

    let admin = read(&old.join("admin.token")).trim().to_string();
    // What clients (here: the test's commands) trust; rotated alongside the nodes.
    let clients_ca = d.join("clients-ca.pem");
    put(&clients_ca, &read(&old.join("ca.pem")));
    let etc: Vec<PathBuf> = (1..=3).map(|i| d.join(format!("etc-{i}"))).collect();
    let starts: Vec<_> = (1..=3usize)
        .map(|i| {
            let to = &etc[i - 1];
            std::fs::create_dir_all(to).unwrap();
            for e in std::fs::read_dir(old.join(format!("node-{i}"))).unwrap() {
                let e = e.unwrap();
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
            let text = read(&to.join("node.toml"));
            let (data, admin, ca) = (
                d.join(format!("data-{i}")),
                admin.clone(),
                clients_ca.clone(),
            );
            std::thread::spawn(move || Node::start_secure(&data, &text, Some(&admin), Some(&ca)))
        })
        .collect();
    let mut nodes: Vec<Node> = starts.into_iter().map(|h| h.join().unwrap()).collect();
    serving(&nodes[0], "the cluster to form", "formed");

    let src = d.join("src");
    cairn_tests::fleet::dir_host(&src, &["web"], 1 << 20);
    let before = backup(&nodes[0], &src);

    // The new CA, node certificates and secret: a second `init cluster` for the same nodes.
    init_cluster(d, &new, &ports);
    let old_secret = read(&etc[0].join("token")).trim().to_string();
    let new_secret = read(&new.join("node-1/token")).trim().to_string();
    assert_ne!(old_secret, new_secret);
    let (old_ca, new_ca) = (read(&old.join("ca.pem")), read(&new.join("ca.pem")));

    let steps = doc_steps();
    let node_dir = |i: usize| new.join(format!("node-{}", i + 1));
    // 1. Every node trusts both CAs and accepts both secrets, still sending the old one.
    put(&clients_ca, &format!("{old_ca}{new_ca}"));
    rolling(&mut nodes, &etc, "step 1", |i, etc| {
        run_doc_step(&steps[0], etc, &node_dir(i))
    });
    assert_eq!(read(&etc[0].join("ca.pem")), format!("{old_ca}{new_ca}"));
    assert_eq!(
        read(&etc[0].join("token")),
        format!("{old_secret}\n{new_secret}\n")
    );
    // 2. Every node presents its new certificate and sends the new secret, still accepting
    //    the old one.
    rolling(&mut nodes, &etc, "step 2", |i, etc| {
        run_doc_step(&steps[1], etc, &node_dir(i))
    });
    assert_eq!(
        read(&etc[0].join("token")),
        format!("{new_secret}\n{old_secret}\n")
    );
    let src2 = d.join("src2");
    cairn_tests::fleet::dir_host(&src2, &["web", "db"], 1 << 20);
    let during = backup(&nodes[1], &src2);
    // 3. The old CA and the old secret are forgotten.
    put(&clients_ca, &new_ca);
    rolling(&mut nodes, &etc, "step 3", |i, etc| {
        run_doc_step(&steps[2], etc, &node_dir(i))
    });
    assert_eq!(read(&etc[0].join("token")).trim(), new_secret);
    assert_eq!(mode(&etc[0].join("token")), 0o640);

    // Both backups restore identical (the first one from before the rotation began).
    nodes[2].restore_identical(&during, &src2, &d.join("out-during"));
    nodes[2].restore_identical(&before, &src, &d.join("out-before"));

    // The old secret is refused by every node, the new one admitted.
    for n in &nodes {
        let o = n.cairn_as(Some(&old_secret), &["backups", "list"]);
        assert!(!o.status.success());
        assert!(
            stderr(&o).trim_end().ends_with("[E1008]"),
            "the old secret: {}",
            stderr(&o)
        );
        let o = n.cairn_as(Some(&new_secret), &["backups", "list"]);
        assert!(o.status.success(), "the new secret: {}", stderr(&o));
    }
    // A client that trusts only the old CA cannot talk to the cluster any more; with the new
    // CA the same command works.
    let only_old = d.join("only-old-ca.pem");
    put(&only_old, &old_ca);
    let with_ca = |ca: &Path| {
        Command::new(cairn_bin())
            .args(["backups", "list"])
            .env("CAIRN_CLUSTER", &nodes[0].url)
            .env("CAIRN_TOKEN", &admin)
            .env("CAIRN_CA", ca)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let refused = with_ca(&only_old);
    assert!(
        !refused.status.success(),
        "a client trusting only the old CA"
    );
    let o = with_ca(&clients_ca);
    assert!(o.status.success(), "{}", stderr(&o));
}
