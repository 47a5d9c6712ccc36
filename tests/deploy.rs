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

    // The join tokens listed: hn1's used (with the agent token it gave), hn2's unused; no
    // token and no hash, in JSON or in the table.
    let listed = n.ok(&["agent", "join-token", "list", "--json"]);
    let table = n.ok(&["agent", "join-token", "list"]);
    let secrets = [
        created["token"].as_str().unwrap().to_string(),
        std::fs::read_to_string(&join2).unwrap().trim().to_string(),
    ];
    for secret in &secrets {
        let hash = cairn_core::job::token_hash(secret);
        let (_, tail) = secret.rsplit_once('.').unwrap();
        for text in [&listed, &table] {
            assert!(
                !text.contains(tail) && !text.contains(&hash),
                "a secret is listed: {text}"
            );
        }
    }
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let state = |host: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["host"] == host)
            .unwrap_or_else(|| panic!("no join token of {host}: {listed}"))
            .clone()
    };
    assert_eq!(state("hn1")["state"], "used", "{listed}");
    assert!(state("hn1")["agent_token_id"].is_string(), "{listed}");
    assert_eq!(state("hn2")["state"], "unused", "{listed}");
    assert!(
        state("hn2")["expires_ms"].as_i64().unwrap() > state("hn2")["created_ms"].as_i64().unwrap()
    );
    // Only admins list or revoke join tokens.
    assert_eq!(
        code(&n.cairn_as(Some(viewer.trim()), &["agent", "join-token", "list"])),
        "E1009"
    );
    assert_eq!(
        code(&n.cairn_as(
            Some(viewer.trim()),
            &["agent", "join-token", "revoke", "hn2"]
        )),
        "E1009"
    );
    // Revoked (by host), hn2's join token no longer enrolls: it is unknown (E1008).
    let out = n.ok(&["agent", "join-token", "revoke", "hn2"]);
    assert!(out.contains("1 join token"), "{out}");
    let revoked = enroll(
        &urls,
        &fingerprint,
        &d.join("hn2/agent.toml"),
        &join2,
        "hn2",
        &containers,
    );
    assert_eq!(code(&revoked), "E1008");
    assert!(!d.join("hn2/agent.toml").exists());
    // Revoking it again finds nothing (E1002); a used token is revoked by its id.
    assert_eq!(
        code(&n.cairn_as(None, &["agent", "join-token", "revoke", "hn2"])),
        "E1008"
    );
    assert_eq!(
        code(&n.cairn(&["agent", "join-token", "revoke", "hn2"])),
        "E1002"
    );
    let hn1_id = state("hn1")["id"].as_str().unwrap().to_string();
    n.ok(&["agent", "join-token", "revoke", &hn1_id]);
    let left: Value =
        serde_json::from_str(&n.ok(&["agent", "join-token", "list", "--json"])).unwrap();
    assert_eq!(left, serde_json::json!([]), "{left}");

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

/// The value of the series `name` whose labels contain every one of `labels` (`k="v"`),
/// summed over the matching lines of a Prometheus text exposition.
fn series(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, rest) = key.split_once('{').unwrap_or((key, ""));
        if metric != name || !labels.iter().all(|l| rest.contains(l)) {
            continue;
        }
        let v: f64 = value.parse().ok()?;
        found = Some(found.unwrap_or(0.0) + v);
    }
    found
}

fn metrics_of(node: &Node) -> String {
    let base = wait_for(Duration::from_secs(10), "metrics.addr", || {
        std::fs::read_to_string(node.data.join("metrics.addr"))
            .ok()
            .map(|s| s.trim().to_string())
    });
    let r = cairn_tests::http::request("GET", &format!("{base}/metrics"), &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.content_type().starts_with("text/plain"),
        "{}",
        r.content_type()
    );
    r.text()
}

/// The rest of `docs/operations.md` on the same kind of cluster: a node's metrics change
/// with a backup; `cairn init node` adds a fourth node that serves with TLS and takes its
/// share; `cairn init gateway` writes a standalone gateway that answers a REST call against
/// the TLS cluster with its own token.
#[test]
fn init_node_adds_a_tls_node_init_gateway_serves_and_nodes_serve_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("out");
    let ports = free_ports(4);
    let mut args: Vec<String> = ["init", "cluster", "--out", out.to_str().unwrap()]
        .map(String::from)
        .to_vec();
    for (i, (p, z)) in ports.iter().zip(["a", "b", "c"]).enumerate() {
        args.extend(["--node".into(), format!("{}=127.0.0.1:{p},zone={z}", i + 1)]);
    }
    args.extend([
        "--etc".into(),
        d.join("etc-{id}").to_str().unwrap().into(),
        "--data-dir".into(),
        d.join("data-{id}").to_str().unwrap().into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let made = cairn(&[], &args);
    assert!(made.status.success(), "init cluster: {}", stderr(&made));
    let admin = std::fs::read_to_string(out.join("admin.token")).unwrap();
    let admin = admin.trim().to_string();
    let ca = out.join("ca.pem");
    let secret = std::fs::read_to_string(out.join("node-1/token")).unwrap();
    let secret = secret.trim().to_string();

    // Every node serves its metrics on a port of its own (the line goes before the tables).
    let start = |id: u64, token: &str| {
        let etc_n = d.join(format!("etc-{id}"));
        copy_dir(&out.join(format!("node-{id}")), &etc_n);
        let text = std::fs::read_to_string(etc_n.join("node.toml")).unwrap();
        let text = format!("metrics_listen = \"127.0.0.1:0\"\n{text}");
        let (data, token, ca) = (d.join(format!("data-{id}")), token.to_string(), ca.clone());
        std::thread::spawn(move || Node::start_secure(&data, &text, Some(&token), Some(&ca)))
    };
    let starts: Vec<_> = (1..=3u64).map(|id| start(id, &admin)).collect();
    let nodes: Vec<Node> = starts.into_iter().map(|h| h.join().unwrap()).collect();
    let n = &nodes[0];
    let status = |n: &Node| -> Value {
        serde_json::from_str(&n.ok(&["cluster", "status", "--json"])).unwrap()
    };
    wait_for(Duration::from_secs(60), "the cluster to form", || {
        let s = status(n);
        let up = s["nodes"]
            .as_array()?
            .iter()
            .filter(|n| n["state"] == "up")
            .count();
        (s["leader"].as_u64().is_some() && s["epoch"].as_u64()? >= 1 && up == 3).then_some(())
    });

    // Metrics: the node is up, has one raft role, a term, free disk; a backup changes the
    // chunk count, the applied index and the chunk RPC counts.
    let before = metrics_of(n);
    let one = |text: &str, name: &str| {
        series(text, name, &["node=\"1\""]).unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    assert_eq!(one(&before, "cairn_node_up"), 1.0);
    assert_eq!(
        one(&before, "cairn_raft_role"),
        1.0,
        "one role at a time:\n{before}"
    );
    assert!(one(&before, "cairn_raft_term") >= 1.0);
    assert!(one(&before, "cairn_disk_available_bytes") > 0.0);
    assert_eq!(one(&before, "cairn_repair_backlog"), 0.0);
    let src = d.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let body: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(src.join("blob"), &body).unwrap();
    let env = "6f1c0d9e-2b1a-4d7e-9a55-0c3b8e1f7a21";
    let backed: Value =
        serde_json::from_str(&n.ok(&["backup", src.to_str().unwrap(), "--env", env, "--json"]))
            .unwrap();
    let backup = backed["id"].as_str().unwrap().to_string();
    let after = metrics_of(n);
    assert!(
        one(&after, "cairn_chunk_store_chunks") > one(&before, "cairn_chunk_store_chunks"),
        "{after}"
    );
    assert!(one(&after, "cairn_raft_commit_index") > one(&before, "cairn_raft_commit_index"));
    let puts = |t: &str| {
        series(
            t,
            "cairn_node_rpc_requests_total",
            &["method=\"Chunks.Put\"", "code=\"Ok\""],
        )
        .unwrap_or(0.0)
    };
    assert!(puts(&after) > puts(&before), "{after}");
    // A refusal is counted with its codes.
    assert_eq!(code(&n.cairn_as(None, &["backups", "list"])), "E1008");
    let refused = metrics_of(n);
    assert!(
        series(
            &refused,
            "cairn_node_rpc_requests_total",
            &["code=\"Unauthenticated\"", "cairn_code=\"E1008\""]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{refused}"
    );
    // A scrub's result shows as the last scrub's.
    n.ok(&["scrub"]);
    let scrubbed = metrics_of(n);
    assert_eq!(one(&scrubbed, "cairn_scrub_last_failed"), 0.0);
    assert_eq!(
        one(&scrubbed, "cairn_scrub_last_checked"),
        one(&scrubbed, "cairn_chunk_store_chunks")
    );

    // A fourth node: `init node` writes its files from ca.key and a voter's directory.
    let spec = format!("4=127.0.0.1:{},zone=d", ports[3]);
    let etc4 = d.join("etc-{id}");
    let data4 = d.join("data-{id}");
    let init_node = [
        "init",
        "node",
        "--cluster-dir",
        out.to_str().unwrap(),
        "--node",
        &spec,
        "--etc",
        etc4.to_str().unwrap(),
        "--data-dir",
        data4.to_str().unwrap(),
    ];
    let o = cairn(&[], &init_node);
    assert!(o.status.success(), "init node: {}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("cairn cluster add-node"));
    assert_eq!(mode(&out.join("node-4/node.key")), 0o600);
    // Again: refused, the key kept.
    let key = std::fs::read(out.join("node-4/node.key")).unwrap();
    assert_eq!(cairn(&[], &init_node).status.code(), Some(1));
    assert_eq!(std::fs::read(out.join("node-4/node.key")).unwrap(), key);
    // A voter's id is refused.
    let mut clash = init_node;
    let voter = format!("2=127.0.0.1:{},zone=d", ports[3]);
    clash[5] = &voter;
    assert_eq!(cairn(&[], &clash).status.code(), Some(1));

    // Started (it authenticates callers only once it has the catalog: the secret until
    // then), then added by an admin.
    let n4 = start(4, &secret).join().unwrap();
    assert!(n4.url.starts_with("https://"), "{}", n4.url);
    let added = n.ok(&[
        "cluster",
        "add-node",
        &format!("127.0.0.1:{}", ports[3]),
        "--zone",
        "d",
    ]);
    assert!(added.contains("node 4 added"), "{added}");
    wait_for(Duration::from_secs(90), "node 4 to take its share", || {
        let s = status(&n4);
        let me = s["nodes"]
            .as_array()?
            .iter()
            .find(|x| x["node_id"] == 4)?
            .clone();
        (me["state"] == "up" && me["chunks"].as_u64()? > 0 && me["zone"] == "d").then_some(())
    });
    // Chunk calls to node 4 over TLS: a scrub reads every chunk it holds.
    let scrub: Value = serde_json::from_str(&n4.ok(&["scrub", "--json"])).unwrap();
    let row = scrub["nodes"]
        .as_array()
        .or(scrub.as_array())
        .and_then(|rows| rows.iter().find(|r| r["node_id"] == 4).cloned())
        .unwrap_or_else(|| panic!("no node 4 in {scrub}"));
    assert!(row["checked"].as_u64().unwrap() > 0, "{scrub}");
    assert_eq!(row["corrupt"], 0, "{scrub}");
    assert!(
        series(
            &metrics_of(&n4),
            "cairn_chunk_store_chunks",
            &["node=\"4\""]
        )
        .unwrap()
            > 0.0
    );

    // A standalone gateway from `init gateway`, over the TLS cluster with its own token.
    let urls: Vec<&str> = nodes.iter().chain([&n4]).map(|n| n.url.as_str()).collect();
    let urls = urls.join(",");
    let gw = d.join("gw");
    let ca_s = ca.to_str().unwrap().to_string();
    let env_gw = [
        ("CAIRN_CLUSTER", urls.as_str()),
        ("CAIRN_TOKEN", admin.as_str()),
        ("CAIRN_CA", ca_s.as_str()),
    ];
    let init_gw = [
        "init",
        "gateway",
        "--out",
        gw.to_str().unwrap(),
        "--etc",
        gw.to_str().unwrap(),
        "--rest-listen",
        "127.0.0.1:0",
        "--xml-listen",
        "127.0.0.1:0",
    ];
    let o = cairn(&env_gw, &init_gw);
    assert!(o.status.success(), "init gateway: {}", stderr(&o));
    assert_eq!(mode(&gw.join("gateway.token")), 0o600);
    assert_eq!(
        std::fs::read(gw.join("ca.pem")).unwrap(),
        std::fs::read(&ca).unwrap()
    );
    assert_eq!(
        cairn(&env_gw, &init_gw).status.code(),
        Some(1),
        "a second run needs --force"
    );
    // Only an admin may make the gateway's token.
    let viewer = n.ok(&["token", "create", "watcher", "--role", "viewer"]);
    let o = cairn(
        &[
            ("CAIRN_CLUSTER", urls.as_str()),
            ("CAIRN_TOKEN", viewer.trim()),
            ("CAIRN_CA", ca_s.as_str()),
        ],
        &[
            "init",
            "gateway",
            "--out",
            d.join("gw2").to_str().unwrap(),
            "--etc",
            "/etc/cairn",
        ],
    );
    assert_eq!(code(&o), "E1009");
    assert!(!d.join("gw2/gateway.toml").exists());
    let cfg = cairn_gateway::GatewayConfig::load(&gw.join("gateway.toml")).unwrap();
    cfg.validate(true).unwrap();
    assert_eq!(cfg.cluster.len(), 4);
    let users: Value = serde_json::from_str(&n.ok(&["token", "list", "--json"])).unwrap();
    assert!(users.to_string().contains("\"gateway\""), "{users}");

    cairn_tests::add_user(&gw.join("users.toml"), "ops", "operator", "ops-pass-1");
    let log = d.join("gateway.log");
    let _gw = cairn_tests::start_gateway(&gw.join("gateway.toml"), &log);
    let rest = wait_for(
        Duration::from_secs(30),
        "the gateway's REST listener",
        || {
            let text = std::fs::read_to_string(&log).ok()?;
            let banner = "REST API (Sun Cloud API) at ";
            let at = text.find(banner)?;
            Some(
                text[at + banner.len()..]
                    .lines()
                    .next()?
                    .trim()
                    .trim_end_matches('/')
                    .to_string(),
            )
        },
    );
    let auth = cairn_tests::http::basic("ops", "ops-pass-1");
    let r = wait_for(Duration::from_secs(30), "a REST answer", || {
        let r = cairn_tests::http::request(
            "GET",
            &format!("{rest}/vms/{env}/backups"),
            &[("Authorization", &auth)],
            b"",
        );
        (r.status == 200).then_some(r)
    });
    let stamp = backup.split('/').nth(1).unwrap();
    assert!(r.text().contains(stamp), "{}", r.text());
    let wrong = cairn_tests::http::request(
        "GET",
        &format!("{rest}/clusters"),
        &[("Authorization", &cairn_tests::http::basic("ops", "nope"))],
        b"",
    );
    assert_eq!(wrong.status, 401);
}
