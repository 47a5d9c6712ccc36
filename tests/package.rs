//! The Debian package, as an operator meets it: built by `scripts/build-deb.sh` from the binary
//! under test, installed with dpkg into a throwaway root (copy-on-write overlays over this
//! machine's /usr and /etc: see `cairn_tests::install`), its systemd units checked with
//! `systemd-analyze verify` and `security`, its maintainer scripts' user, directories and
//! modes, an upgrade over itself, and a purge that keeps the data. Needs root.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cairn_tests::cairn_bin;
use cairn_tests::install::InstallRoot;

const UNITS: [&str; 3] = [
    "cairn-node.service",
    "cairn-agent.service",
    "cairn-gateway.service",
];

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds the package from the binary under test; returns its path.
fn build_deb(out: &Path) -> PathBuf {
    let o = Command::new(workspace().join("scripts/build-deb.sh"))
        .arg("--binary")
        .arg(cairn_bin())
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "build-deb.sh: {}", text(&o));
    PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
}

/// Builds the package from the binary under test with version `version`.
fn build_deb_version(out: &Path, version: &str) -> PathBuf {
    let o = Command::new(workspace().join("scripts/build-deb.sh"))
        .arg("--binary")
        .arg(cairn_bin())
        .arg("--out")
        .arg(out)
        .args(["--version", version])
        .output()
        .unwrap();
    assert!(o.status.success(), "build-deb.sh: {}", text(&o));
    PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The uid and gid of `name` in the root's passwd file.
fn passwd_entry(root: &InstallRoot, name: &str) -> Option<(u32, u32, String)> {
    let passwd = std::fs::read_to_string(root.join("/etc/passwd")).unwrap();
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f[0] == name).then(|| {
            (
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
                f[6].to_string(),
            )
        })
    })
}

fn mode_owner(p: &Path) -> (u32, u32, u32) {
    let m = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.permissions().mode() & 0o7777, m.uid(), m.gid())
}

#[test]
fn the_package_installs_hardened_units_a_system_user_and_private_directories_and_a_purge_keeps_the_data(
) {
    let tmp = tempfile::tempdir().unwrap();
    let deb = build_deb(tmp.path());
    assert!(deb.exists(), "{}", deb.display());

    // What it holds.
    let contents = text(
        &Command::new("dpkg-deb")
            .arg("-c")
            .arg(&deb)
            .output()
            .unwrap(),
    );
    for want in [
        "./usr/bin/cairn",
        "./lib/systemd/system/cairn-node.service",
        "./lib/systemd/system/cairn-agent.service",
        "./lib/systemd/system/cairn-gateway.service",
        "./usr/share/doc/cairn/README.md",
        "./usr/share/doc/cairn/cairn-help.txt",
    ] {
        assert!(contents.contains(want), "{want} missing from\n{contents}");
    }

    let root = InstallRoot::new();
    let o = root.dpkg(&["-i", deb.to_str().unwrap()]);
    assert!(o.status.success(), "dpkg -i: {}", text(&o));

    // The maintainer scripts made a system user with no login, and the directories with the
    // owners and modes the units expect; the host's own passwd file is untouched.
    let (uid, gid, shell) = passwd_entry(&root, "cairn").expect("postinst made the cairn user");
    assert!(uid < 1000, "a system user: uid {uid}");
    assert_eq!(shell, "/usr/sbin/nologin");
    assert!(!passwd_entry_on_host("cairn"), "the host is untouched");
    assert_eq!(mode_owner(&root.join("/etc/cairn")), (0o750, 0, gid));
    assert_eq!(mode_owner(&root.join("/var/lib/cairn")), (0o750, uid, gid));
    assert_eq!(
        mode_owner(&root.join("/var/lib/cairn-agent")),
        (0o700, 0, 0)
    );

    // The installed binary runs.
    let v = root.run(&["/usr/bin/cairn", "--version"]);
    assert!(
        v.status.success() && text(&v).starts_with("cairn "),
        "{}",
        text(&v)
    );

    // The units load without a warning, start only once configured, and are hardened.
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.path.display()))
        .args(UNITS)
        .output()
        .unwrap();
    assert!(
        verify.status.success() && verify.stderr.is_empty() && verify.stdout.is_empty(),
        "systemd-analyze verify: {}",
        text(&verify)
    );
    for (unit, config, most) in [
        ("cairn-node.service", "node.toml", 2.0),
        ("cairn-gateway.service", "gateway.toml", 2.0),
        // Root with the capabilities restore needs; everything else taken away.
        ("cairn-agent.service", "agent.toml", 4.0),
    ] {
        let path = root.join(&format!("/lib/systemd/system/{unit}"));
        let body = std::fs::read_to_string(&path).unwrap();
        assert!(
            body.contains(&format!("ConditionPathExists=/etc/cairn/{config}")),
            "{unit} must not start unconfigured"
        );
        let sec = Command::new("systemd-analyze")
            .args(["security", "--offline=true"])
            .arg(&path)
            .output()
            .unwrap();
        let out = text(&sec);
        let score: f64 = out
            .lines()
            .find_map(|l| {
                l.split_once("Overall exposure level for ")?
                    .1
                    .split(": ")
                    .nth(1)
            })
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level for {unit}: {out}"));
        assert!(score <= most, "{unit}: exposure {score} > {most}\n{out}");
    }
    let agent =
        std::fs::read_to_string(root.join("/lib/systemd/system/cairn-agent.service")).unwrap();
    let caps = agent
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the agent names its capabilities");
    assert!(
        !caps.contains("CAP_SYS_ADMIN") && !caps.contains("CAP_NET_ADMIN"),
        "{caps}"
    );

    // An upgrade over itself keeps the user and the directories (postinst runs again with
    // the old version).
    std::fs::write(root.join("/var/lib/cairn/precious"), b"backups").unwrap();
    let o = root.dpkg(&["-i", deb.to_str().unwrap()]);
    assert!(o.status.success(), "reinstall: {}", text(&o));
    assert_eq!(passwd_entry(&root, "cairn").map(|e| e.0), Some(uid));

    // Purge removes the program and keeps data, keys and configuration, saying so.
    std::fs::write(root.join("/etc/cairn/node.toml"), b"node_id = 1\n").unwrap();
    let o = root.dpkg(&["--purge", "cairn"]);
    assert!(o.status.success(), "purge: {}", text(&o));
    assert!(!root.join("/usr/bin/cairn").exists());
    assert!(!root.join("/lib/systemd/system/cairn-node.service").exists());
    assert_eq!(
        std::fs::read(root.join("/var/lib/cairn/precious")).unwrap(),
        b"backups"
    );
    assert!(root.join("/etc/cairn/node.toml").exists());
    assert!(text(&o).contains("kept /var/lib/cairn"), "{}", text(&o));
}

fn passwd_entry_on_host(name: &str) -> bool {
    std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .any(|l| l.split(':').next() == Some(name))
}

/// A "host" of the deployment test: its own root with the package installed, booted with
/// systemd as PID 1 in a network namespace with its own address. (`sys` before `root`: the
/// machine halts before its root is unmounted.)
struct Machine {
    sys: cairn_tests::install::Booted,
    host: cairn_tests::Host,
    root: InstallRoot,
}

impl Machine {
    /// Runs a command on this machine, as its root user's shell would.
    fn run(&self, cmd: &[&str], env: &[(&str, &str)]) -> Output {
        self.sys.exec_env(cmd, env)
    }
}

/// The deployment an operator does, on four "machines" (each a root of its own with the
/// package installed by dpkg, booted with systemd as PID 1 by systemd-nspawn, in a network
/// namespace with its own address): `cairn init cluster` on the first, each node's directory
/// copied to its machine's /etc/cairn, `systemctl enable --now cairn-node` so the cluster
/// forms with TLS under the hardened units; an agent on the fourth enrolled with a join
/// token from a file and its unit enabled, backing up a container; the backup restored
/// identical; a node's process killed with SIGKILL is restarted by systemd (`Restart=`) and
/// rejoins and serves the catalog. Needs root (mounts, namespaces) and systemd-nspawn.
#[test]
fn a_packaged_cluster_bootstraps_with_tls_enrolls_an_agent_and_a_restarted_node_rejoins() {
    use cairn_tests::nemesis::net::Net;
    use cairn_tests::wait_for;
    use std::time::Duration;

    let tmp = tempfile::tempdir().unwrap();
    let deb = build_deb(&tmp.path().join("deb"));
    let mut net = Net::create().expect("a bridge for the machines' namespaces");
    let machines: Vec<Machine> = (1..=4)
        .map(|id| {
            let mut root = InstallRoot::new();
            let o = root.dpkg(&["-i", deb.to_str().unwrap()]);
            assert!(o.status.success(), "dpkg -i on machine {id}: {}", text(&o));
            let host = net.host(id).unwrap();
            let console = tmp.path().join(format!("machine{id}.console"));
            let sys = root.boot(Some(&host.wrap[3]), &console);
            Machine { sys, host, root }
        })
        .collect();
    let addr = |i: usize| format!("{}:{}", machines[i].host.ip, machines[i].host.port);

    // Bootstrap on machine 1, with the installed binary.
    let first = &machines[0];
    let mut init = vec![
        "/usr/bin/cairn".to_string(),
        "init".into(),
        "cluster".into(),
        "--out".into(),
        "/root/cluster".into(),
    ];
    for (i, zone) in ["a", "b", "c"].iter().enumerate() {
        init.push("--node".into());
        init.push(format!("{}={},zone={zone}", i + 1, addr(i)));
    }
    let init: Vec<&str> = init.iter().map(String::as_str).collect();
    let o = first.run(&init, &[]);
    assert!(o.status.success(), "init cluster: {}", text(&o));
    let out = first.root.join("/root/cluster");

    // Copy each node's files to its machine's /etc/cairn (modes kept), readable by the
    // cairn group the unit runs in, and enable and start its unit.
    for (i, m) in machines.iter().take(3).enumerate() {
        let from = out.join(format!("node-{}", i + 1));
        for e in std::fs::read_dir(&from).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), m.root.join("/etc/cairn").join(e.file_name())).unwrap();
        }
        let o = m.run(
            &[
                "sh",
                "-c",
                "chgrp -R cairn /etc/cairn && chmod g+r /etc/cairn/*",
            ],
            &[],
        );
        assert!(o.status.success(), "{}", text(&o));
        m.sys.systemctl(&["enable", "--now", "cairn-node.service"]);
    }

    // The operator's shell, on the bridge that reaches every machine: TLS with the CA
    // `init` wrote, and the first admin token.
    let urls: Vec<String> = (0..3).map(|i| format!("https://{}", addr(i))).collect();
    let admin = std::fs::read_to_string(out.join("admin.token")).unwrap();
    let ca = out.join("ca.pem");
    let cli = |cluster: &str, args: &[&str]| -> Output {
        Command::new(cairn_bin())
            .args(args)
            .env("CAIRN_CLUSTER", cluster)
            .env("CAIRN_CA", &ca)
            .env("CAIRN_TOKEN", admin.trim())
            .output()
            .unwrap()
    };
    let all = urls.join(",");
    let up = |s: &serde_json::Value, id: u64| {
        s["nodes"]
            .as_array()
            .is_some_and(|ns| ns.iter().any(|n| n["node_id"] == id && n["state"] == "up"))
    };
    let status = |cluster: &str| -> Option<serde_json::Value> {
        let o = cli(cluster, &["cluster", "status", "--json"]);
        o.status
            .success()
            .then(|| serde_json::from_slice(&o.stdout).ok())?
    };
    wait_for(
        Duration::from_secs(90),
        "the cluster to form with TLS",
        || {
            let s = status(&all)?;
            (s["leader"].as_u64().is_some() && (1..=3).all(|id| up(&s, id))).then_some(())
        },
    );

    // Machine 4 enrolls its agent with a join token from a file, and runs the agent unit.
    let agent = &machines[3];
    let join = cli(&all, &["agent", "join-token", "create", "hw4"]);
    assert!(join.status.success(), "join-token create: {}", text(&join));
    std::fs::write(agent.root.join("/root/join.token"), &join.stdout).unwrap();
    let fingerprint = std::fs::read_to_string(out.join("ca.sha256")).unwrap();
    let envs = agent.root.join("/srv/envs");
    cairn_tests::fleet::dir_host(&envs, &["web"], 3 << 20);
    let enroll = agent.run(
        &[
            "/usr/bin/cairn",
            "agent",
            "enroll",
            "--ca-fingerprint",
            fingerprint.trim(),
            "--token-file",
            "/root/join.token",
            "--host",
            "hw4",
            "--dir",
            "/srv/envs",
        ],
        &[("CAIRN_CLUSTER", &all)],
    );
    assert!(enroll.status.success(), "enroll: {}", text(&enroll));
    assert!(agent.root.join("/etc/cairn/agent.toml").exists());
    agent
        .sys
        .systemctl(&["enable", "--now", "cairn-agent.service"]);

    // A backup job through the agent, and the backup restored identical.
    let eid = wait_for(Duration::from_secs(60), "the agent's environment", || {
        let o = cli(&all, &["envs", "list", "--host", "hw4", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
        v.as_array()?
            .iter()
            .find(|e| e["name"] == "web")
            .and_then(|e| e["eid"].as_str().or(e["id"].as_str()).map(str::to_string))
    });
    let o = cli(&all, &["backup", "--env", &eid, "--json"]);
    assert!(o.status.success(), "backup job: {}", text(&o));
    let backups = |cluster: &str| -> Option<Vec<String>> {
        let o = cli(cluster, &["backups", "list", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
        Some(
            v.as_array()?
                .iter()
                .filter_map(|b| b["id"].as_str().map(str::to_string))
                .collect(),
        )
    };
    let first_backup = backups(&all).unwrap().pop().expect("a backup");
    let restored = tmp.path().join("restored");
    let o = cli(
        &all,
        &["restore", &first_backup, restored.to_str().unwrap()],
    );
    assert!(o.status.success(), "restore: {}", text(&o));
    assert_eq!(
        std::fs::read(restored.join("blob")).unwrap(),
        std::fs::read(envs.join("web/blob")).unwrap()
    );

    // Node 2's process dies (SIGKILL); systemd starts it again (Restart=on-failure), and it
    // rejoins: status shows it up, and it serves the catalog, the backup made meanwhile
    // included.
    let two = &machines[1].sys;
    let unit = "cairn-node.service";
    let pid = two.property(unit, "MainPID");
    two.systemctl(&["kill", "--kill-whom=main", "--signal=KILL", unit]);
    std::fs::write(envs.join("web/new"), b"made while node 2 was down").unwrap();
    let o = cli(&all, &["backup", "--env", &eid, "--json"]);
    assert!(o.status.success(), "backup with node 2 down: {}", text(&o));
    wait_for(Duration::from_secs(60), "systemd to restart node 2", || {
        let now = two.property(unit, "MainPID");
        (two.property(unit, "ActiveState") == "active"
            && now != "0"
            && now != pid
            && two.property(unit, "NRestarts") == "1")
            .then_some(())
    });
    let want = backups(&all).unwrap();
    assert_eq!(want.len(), 2);
    wait_for(Duration::from_secs(60), "node 2 to rejoin", || {
        // Each node answers its own status: node 2's catalog, as it applied it, holds both
        // backups and matches node 1's.
        let s = status(&all)?;
        let node = |id: u64| {
            s["nodes"]
                .as_array()?
                .iter()
                .find(|n| n["node_id"] == id && n["state"] == "up")
                .cloned()
        };
        let (one, two) = (node(1)?, node(2)?);
        (two["backups"].as_u64() == Some(want.len() as u64)
            && two["catalog_digest"] == one["catalog_digest"])
            .then_some(())
    });

    // A rolling upgrade, as docs/operations.md "Upgrade" says: one storage node at a time,
    // `dpkg -i` of a later package on the machine; its postinst restarts the running unit
    // under systemd, and the cluster serves throughout: a backup job after each node, and
    // the node back with the catalog before the next. (The later package holds this same
    // binary: there is no earlier release to upgrade from yet; what this rehearses is the
    // procedure and the package's part in it.)
    let later = build_deb_version(&tmp.path().join("deb-later"), "0.1.0+later1");
    let mut made = want.len();
    for (i, m) in machines.iter().take(3).enumerate() {
        let id = i as u64 + 1;
        let before = m.sys.property(unit, "MainPID");
        std::fs::copy(&later, m.root.join("/root/cairn-later.deb")).unwrap();
        let o = m.run(&["dpkg", "-i", "/root/cairn-later.deb"], &[]);
        assert!(o.status.success(), "dpkg -i on node {id}: {}", text(&o));
        let o = m.run(&["dpkg-query", "-W", "-f", "${Version}", "cairn"], &[]);
        assert_eq!(String::from_utf8_lossy(&o.stdout), "0.1.0+later1");
        let after = m.sys.property(unit, "MainPID");
        assert!(
            after != before && after != "0" && m.sys.property(unit, "ActiveState") == "active",
            "node {id}: the upgrade restarts the running unit ({before} -> {after})\n{}",
            m.sys.journal(unit)
        );
        std::fs::write(envs.join("web/upgrade"), format!("after node {id}")).unwrap();
        let o = cli(&all, &["backup", "--env", &eid, "--json"]);
        assert!(
            o.status.success(),
            "backup after upgrading node {id}: {}",
            text(&o)
        );
        made += 1;
        wait_for(
            Duration::from_secs(60),
            &format!("upgraded node {id} to serve the catalog"),
            || {
                let s = status(&all)?;
                let nodes = s["nodes"].as_array()?;
                let mine = nodes.iter().find(|n| n["node_id"] == id)?;
                (nodes.iter().all(|n| n["state"] == "up")
                    && mine["backups"].as_u64() == Some(made as u64)
                    && nodes
                        .iter()
                        .all(|n| n["catalog_digest"] == mine["catalog_digest"]))
                .then_some(())
            },
        );
    }
    assert_eq!(backups(&all).unwrap().len(), made);
}
