//! Bootstrap and enrollment end to end, as `docs/operations.md` tells an operator to do it:
//! `cairn init cluster` writes three nodes' files (TLS on), the nodes start from those
//! configs, the first admin token works at once, an admin creates a join token, an agent
//! enrolls with it from a file (pinning the CA by its fingerprint), runs from the config
//! enrollment wrote, and backs up and restores an environment. A second redemption, a
//! wrong host and a wrong fingerprint are refused; revoking the agent locks it out.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use cairn_tests::fleet::{dir_host, eid_of, submit, succeeded};
use cairn_tests::{cairn_bin, free_ports, wait_for, Agent, Node};
use serde_json::Value;

/// Runs `cairn` with `env` and nothing else of the caller's cluster settings.
fn cairn(env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(cairn_bin())
        .args(args)
        .env_remove("CAIRN_TOKEN")
        .env_remove("CAIRN_CA")
        .env_remove("CAIRN_CLUSTER")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run cairn")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The stable code at the end of a failed command's error line.
fn code(o: &Output) -> String {
    assert!(!o.status.success(), "expected a failure");
    let line = stderr(o);
    let line = line.trim_end();
    line.rsplit_once('[')
        .map(|(_, c)| c.trim_end_matches(']').to_string())
        .unwrap_or_else(|| panic!("no code in {line:?}"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        // std::fs::copy keeps the permission bits (0600 stays 0600).
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// `cairn agent enroll` with the join token in `token_file`.
fn enroll(
    urls: &str,
    fingerprint: &str,
    config: &Path,
    token_file: &Path,
    host: &str,
    containers: &Path,
) -> Output {
    cairn(
        &[("CAIRN_CLUSTER", urls)],
        &[
            "agent",
            "enroll",
            "--ca-fingerprint",
            fingerprint,
            "--config",
            config.to_str().unwrap(),
            "--token-file",
            token_file.to_str().unwrap(),
            "--host",
            host,
            "--state-dir",
            config.with_file_name("state").to_str().unwrap(),
            "--dir",
            containers.to_str().unwrap(),
        ],
    )
}

#[test]
fn init_cluster_enroll_an_agent_back_up_and_restore() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("out");
    let ports = free_ports(3);
    let specs: Vec<String> = ports
        .iter()
        .zip(["a", "b", "c"])
        .enumerate()
        .map(|(i, (p, z))| format!("{}=127.0.0.1:{p},zone={z}", i + 1))
        .collect();
    let mut args = vec!["init", "cluster", "--out", out.to_str().unwrap()];
    for s in &specs {
        args.extend(["--node", s.as_str()]);
    }
    let etc = d.join("etc-{id}");
    let data = d.join("data-{id}");
    args.extend([
        "--etc",
        etc.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let made = cairn(&[], &args);
    assert!(made.status.success(), "init cluster: {}", stderr(&made));
    // A second run into the same directory is refused, with nothing changed.
    let fingerprint = std::fs::read_to_string(out.join("ca.sha256")).unwrap();
    let fingerprint = fingerprint.trim().to_string();
    let again = cairn(&[], &args);
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert_eq!(
        std::fs::read_to_string(out.join("ca.sha256"))
            .unwrap()
            .trim(),
        fingerprint
    );
    assert_eq!(mode(&out.join("admin.token")), 0o600);
    assert_eq!(mode(&out.join("ca.key")), 0o600);

    // The operator copies node-N/ to that node's /etc/cairn (here: etc-N) and starts it.
    let admin = std::fs::read_to_string(out.join("admin.token")).unwrap();
    let admin = admin.trim().to_string();
    let ca = out.join("ca.pem");
    let starts: Vec<_> = (1..=3u64)
        .map(|id| {
            let etc_n = d.join(format!("etc-{id}"));
            copy_dir(&out.join(format!("node-{id}")), &etc_n);
            assert_eq!(mode(&etc_n.join("node.key")), 0o600);
            assert_eq!(mode(&etc_n.join("token")), 0o600);
            let text = std::fs::read_to_string(etc_n.join("node.toml")).unwrap();
            assert!(!text.contains(&admin), "no secret in a config");
            let (data, admin, ca) = (d.join(format!("data-{id}")), admin.clone(), ca.clone());
            // The nodes start together: a node answers the admin token only once the
            // cluster formed and stored it.
            std::thread::spawn(move || Node::start_secure(&data, &text, Some(&admin), Some(&ca)))
        })
        .collect();
    let nodes: Vec<Node> = starts.into_iter().map(|h| h.join().unwrap()).collect();
    let n = &nodes[0];
    assert!(nodes.iter().all(|n| n.url.starts_with("https://")));
    wait_for(Duration::from_secs(60), "the cluster to form", || {
        let s: Value = serde_json::from_str(&n.ok(&["cluster", "status", "--json"])).ok()?;
        let up = s["nodes"]
            .as_array()?
            .iter()
            .filter(|n| n["state"] == "up")
            .count();
        (s["leader"].as_u64().is_some() && s["epoch"].as_u64()? >= 1 && up == 3).then_some(())
    });
    // The first admin token is an admin's user token, in the catalog like any other.
    let users: Value = serde_json::from_str(&n.ok(&["token", "list", "--json"])).unwrap();
    assert!(users.to_string().contains("\"admin\""), "{users}");
    // Without a token nothing is served.
    assert_eq!(code(&n.cairn_as(None, &["backups", "list"])), "E1008");

    // An admin creates a join token for host hn1; the agent's host gets it as a file.
    let created: Value = serde_json::from_str(&n.ok(&[
        "agent",
        "join-token",
        "create",
        "hn1",
        "--ttl",
        "10m",
        "--json",
    ]))
    .unwrap();
    assert_eq!(created["ca_fingerprint"], fingerprint.as_str());
    let join = d.join("hn1.join");
    std::fs::write(&join, format!("{}\n", created["token"].as_str().unwrap())).unwrap();
    // Agents and viewers may not create join tokens (administer), even for their own host.
    let viewer = n.ok(&["token", "create", "watcher", "--role", "viewer"]);
    let o = n.cairn_as(
        Some(viewer.trim()),
        &["agent", "join-token", "create", "hn1"],
    );
    assert_eq!(code(&o), "E1009");

    let urls: Vec<&str> = nodes.iter().map(|n| n.url.as_str()).collect();
    let urls = urls.join(",");
    let containers = d.join("containers");
    dir_host(&containers, &["web"], 1 << 20);
    let agent_dir = d.join("agent");

    // A wrong fingerprint: nothing is redeemed or written.
    let wrong = enroll(
        &urls,
        &"0".repeat(64),
        &agent_dir.join("agent.toml"),
        &join,
        "hn1",
        &containers,
    );
    assert_eq!(wrong.status.code(), Some(1), "{}", stderr(&wrong));
    assert!(!agent_dir.join("agent.toml").exists());

    let config = agent_dir.join("agent.toml");
    let ok = enroll(&urls, &fingerprint, &config, &join, "hn1", &containers);
    assert!(ok.status.success(), "enroll: {}", stderr(&ok));
    assert_eq!(mode(&agent_dir.join("agent.token")), 0o600);
    assert_eq!(
        std::fs::read(agent_dir.join("ca.pem")).unwrap(),
        std::fs::read(&ca).unwrap()
    );

    // The same join token again: used (E1025), and nothing written.
    let second = enroll(
        &urls,
        &fingerprint,
        &d.join("again/agent.toml"),
        &join,
        "hn1",
        &containers,
    );
    assert_eq!(code(&second), "E1025");
    assert!(!d.join("again/agent.toml").exists());
    // A join token for hn2 does not enroll hn3 (E1009, rule join-token-holder).
    let hn2 = n.ok(&["agent", "join-token", "create", "hn2"]);
    let join2 = d.join("hn2.join");
    std::fs::write(&join2, hn2).unwrap();
    let other = enroll(
        &urls,
        &fingerprint,
        &d.join("hn3/agent.toml"),
        &join2,
        "hn3",
        &containers,
    );
    assert_eq!(code(&other), "E1009");
    // A join token is no credential for anything else.
    let o = n.cairn_as(
        Some(std::fs::read_to_string(&join2).unwrap().trim()),
        &["backups", "list"],
    );
    assert_eq!(code(&o), "E1009");

    // Without a join token, `init agent` writes the same config, minus the token.
    let template = d.join("template/agent.toml");
    let o = cairn(
        &[("CAIRN_CLUSTER", &urls)],
        &[
            "init",
            "agent",
            "--host",
            "hn1",
            "--config",
            template.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "init agent: {}", stderr(&o));
    let text = std::fs::read_to_string(&template).unwrap();
    assert!(
        text.contains("host_id = \"hn1\"") && text.contains(&nodes[1].url),
        "{text}"
    );

    // The agent runs from the config enrollment wrote, and backs up and restores.
    let text = std::fs::read_to_string(&config).unwrap();
    let mut agent = Agent::start(&d.join("agent-run"), &text);
    let eid = eid_of(&n.envs(Some("hn1"), 1), "web");
    let backed = succeeded(n, &submit(n, &["backup", "--env", &eid]));
    let backup = backed["result"]["backup"].as_str().unwrap().to_string();
    let blob = containers.join("web/blob");
    let original = std::fs::read(&blob).unwrap();
    std::fs::write(&blob, b"overwritten").unwrap();
    succeeded(
        n,
        &submit(n, &["restore", &backup, "--env", &eid, "--force"]),
    );
    assert_eq!(std::fs::read(&blob).unwrap(), original);

    // Revoking the host's agent tokens locks the agent out at once.
    let agent_token = std::fs::read_to_string(agent_dir.join("agent.token")).unwrap();
    assert!(n
        .cairn_as(Some(agent_token.trim()), &["cluster", "status"])
        .status
        .success());
    n.ok(&["agent", "token", "revoke", "--host", "hn1"]);
    wait_for(Duration::from_secs(10), "the revocation to apply", || {
        let o = n.cairn_as(Some(agent_token.trim()), &["cluster", "status"]);
        (!o.status.success() && code(&o) == "E1008").then_some(())
    });
    agent.kill();
}
