//! What a compromised host, or a caller with too few rights, can try — end to end with real
//! processes: 3 `cairn node` voters with a cluster secret, two hardware nodes `hn1` and `hn2`
//! as real agents, each with its own host-bound token, and operators with user tokens.
//!
//! Each attack is tried against the leader and against a follower (a follower forwards to
//! the leader with who asked, never with its own rights), and the hosts' files are checked
//! untouched. The full table of every entry point against every kind of caller is
//! `tests/authz.rs`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use cairn_tests::fleet::{
    agent_token, backups, eid_of, finished, json, start_agent_with, submit, succeeded,
    vz_discovery, vz_host,
};
use cairn_tests::http::{self, basic};
use cairn_tests::TestCluster;
use cairn_tests::{
    add_user, cairn_bin, free_ports, require_root, wait_for, Agent, KillOnDrop, Node,
};
use serde_json::Value;

const SECRET: &str = "attacks-cluster-secret";
/// hn2's container is a Virtuozzo 7 one: its CTID is a UUID, which is its EID.
const HN2_CTID: &str = "7b6f3c1e-4d2a-4e8b-9c0d-1a2b3c4d5e6f";

/// Two hosts, each with one container backed up once, and an admin user token.
struct Fleet {
    dir: tempfile::TempDir,
    c: TestCluster,
    hn1: Agent,
    hn2: Agent,
    /// The agent tokens of hn1 and hn2.
    t1: String,
    t2: String,
    /// An admin's user token (created with the cluster secret).
    admin: String,
    e1: String,
    e2: String,
    b1: String,
    b2: String,
    /// hn1's container (its private area).
    area1: PathBuf,
    /// hn1's Virtuozzo config directory.
    conf1: PathBuf,
    /// hn2's Virtuozzo config directory.
    conf2: PathBuf,
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `cairn` against `node` with `token`, expecting a refusal naming `rule`.
fn refused(node: &Node, token: &str, args: &[&str], rule: &str) -> String {
    let out = node.cairn_as(Some(token), args);
    // Most commands say why on stderr; `scrub` reports each node on stdout.
    let err = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
    assert!(
        !out.status.success(),
        "cairn {args:?} was accepted on {}: {err}",
        node.url
    );
    assert!(
        err.contains(rule),
        "cairn {args:?}: expected {rule:?}, got: {err}"
    );
    err
}

/// Runs `cairn` against `node` with `token`, expecting success; returns stdout.
fn ok_as(node: &Node, token: &str, args: &[&str]) -> String {
    let out = node.cairn_as(Some(token), args);
    assert!(
        out.status.success(),
        "cairn {args:?} failed on {}: {}",
        node.url,
        stderr(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn user_token(node: &Node, name: &str, role: &str) -> String {
    node.ok(&["token", "create", name, "--role", role])
        .trim()
        .to_string()
}

/// The leader and one follower.
fn leader_and_follower(c: &TestCluster) -> (&Node, &Node) {
    let l = c.leader() as usize;
    let f = if l == 1 { 2 } else { 1 };
    (&c.nodes[l - 1], &c.nodes[f - 1])
}

/// Every file under `root` with its bytes, for "untouched" checks.
fn tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((
                    p.strip_prefix(root).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap_or_default(),
                ));
            }
        }
    }
    out.sort();
    out
}

/// The jobs the cluster knows, as the admin sees them.
fn jobs(f: &Fleet) -> Vec<Value> {
    let out = ok_as(&f.c.nodes[0], &f.admin, &["jobs", "list", "--json"]);
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn fleet(extra: &str) -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let c = TestCluster::start_with_token(
        &dir.path().join("c"),
        3,
        &format!("host_offline_after_ms = 2000\n{extra}"),
        Some(SECRET),
    );
    let admin = user_token(&c.nodes[0], "alice", "admin");
    let (private1, conf1) = vz_host(&dir.path().join("hn1"), &[("101", 64 << 10)]);
    let (private2, conf2) = vz_host(&dir.path().join("hn2"), &[(HN2_CTID, 64 << 10)]);
    let t1 = agent_token(&c.nodes[0], "hn1");
    let t2 = agent_token(&c.nodes[0], "hn2");
    let hn1 = start_agent_with(
        &c,
        dir.path(),
        "hn1",
        &t1,
        "lease_ms = 3000",
        &vz_discovery(&private1, &conf1),
    );
    let hn2 = start_agent_with(
        &c,
        dir.path(),
        "hn2",
        &t2,
        "lease_ms = 3000",
        &vz_discovery(&private2, &conf2),
    );
    let e1 = eid_of(&c.nodes[0].envs(Some("hn1"), 1), "101");
    let e2 = eid_of(&c.nodes[0].envs(Some("hn2"), 1), HN2_CTID);
    assert_eq!(e2, HN2_CTID, "a Virtuozzo 7 CTID is its EID");
    let mut made = Vec::new();
    for e in [&e1, &e2] {
        let id = submit(&c.nodes[0], &["backup", "--env", e]);
        made.push(
            succeeded(&c.nodes[0], &id)["result"]["backup"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    Fleet {
        area1: private1.join("101"),
        conf1,
        conf2,
        c,
        hn1,
        hn2,
        t1,
        t2,
        admin,
        e1,
        e2,
        b1: made[0].clone(),
        b2: made[1].clone(),
        dir,
    }
}

/// gRPC calls with a chosen token, straight to one node (no client-side retries).
mod grpc {
    use cairn_proto::pb;
    use tonic::metadata::MetadataValue;
    use tonic::transport::Channel;

    pub fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    pub async fn channel(url: &str) -> Channel {
        Channel::from_shared(url.to_string())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        let v: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
        r.metadata_mut().insert("authorization", v);
        r
    }

    /// The backup record (`GetBackup`) as the holder of `token` sees it.
    pub async fn backup(url: &str, token: &str, id: &str) -> pb::Backup {
        pb::catalog_client::CatalogClient::new(channel(url).await)
            .get_backup(with_token(pb::BackupRef { id: id.into() }, token))
            .await
            .unwrap()
            .into_inner()
    }

    /// `Chunks.Get` of `ids` for `backup`; the first answer or the refusal.
    pub async fn get(
        url: &str,
        token: &str,
        ids: Vec<Vec<u8>>,
        backup: &str,
    ) -> Result<pb::Chunk, tonic::Status> {
        let mut c = pb::chunks_client::ChunksClient::new(channel(url).await);
        let req = pb::GetRequest {
            ids,
            backup: backup.into(),
        };
        let mut s = c.get(with_token(req, token)).await?.into_inner();
        match s.message().await? {
            Some(m) => Ok(m.chunk.unwrap_or_default()),
            None => Err(tonic::Status::not_found("no chunk")),
        }
    }
}

/// Exploits 1 and 2 of the issue and their variants: a stolen agent token (hn1's) used
/// against the leader and a follower to restore onto another host, to read another host's
/// backups (with or without naming an environment), to probe for backup ids, to read
/// another host's chunks, to commit outside a job, to change hooks. Everything is refused
/// naming its rule, no job is queued, and hn1's container is untouched.
#[test]
fn a_stolen_agent_token_reaches_nothing_of_another_host() {
    let f = fleet("");
    let (leader, follower) = leader_and_follower(&f.c);
    let before = tree(&f.area1);
    let pwned = f.dir.path().join("pwned");
    let pwned_s = pwned.display().to_string();
    let jobs_before = jobs(&f).len();
    for node in [follower, leader] {
        // 1. hn1's backup restored onto hn2, anywhere on hn2.
        refused(
            node,
            &f.t1,
            &[
                "restore",
                &f.b1,
                "--host",
                "hn2",
                "--to",
                &pwned_s,
                "--no-wait",
            ],
            "rule agent-own-host",
        );
        // 2. hn2's backup restored into hn1's container, with or without naming it.
        let err = refused(
            node,
            &f.t1,
            &["restore", "--env", &f.e1, &f.b2, "--force", "--no-wait"],
            "rule agent-own-backup",
        );
        refused(
            node,
            &f.t1,
            &[
                "restore",
                &f.b2,
                "--host",
                "hn1",
                "--to",
                &pwned_s,
                "--no-wait",
            ],
            "rule agent-own-backup",
        );
        // A guessed id that does not exist reads exactly the same: no oracle.
        let ghost = format!("{}/20000101000000", f.e2);
        let err2 = refused(
            node,
            &f.t1,
            &["restore", "--env", &f.e1, &ghost, "--force", "--no-wait"],
            "rule agent-own-backup",
        );
        assert_eq!(err.replace(&f.b2, "ID"), err2.replace(&ghost, "ID"));
        // Reading another host's catalog.
        refused(
            node,
            &f.t1,
            &["backups", "show", &f.b2],
            "rule agent-own-backup",
        );
        refused(
            node,
            &f.t1,
            &["backups", "list", "--env", &f.e2],
            "rule agent-own-env",
        );
        // Changing what every agent runs as root, the cluster, tokens, history.
        // Cluster-wide settings are not even readable to an agent (only its own
        // environment's, as they apply to it).
        refused(
            node,
            &f.t1,
            &["config", "set", "--pre-hook", "touch /tmp/x"],
            "rule agent-own-env",
        );
        for args in [
            vec![
                "config",
                "set",
                "--env",
                &f.e1,
                "--pre-hook",
                "touch /tmp/x",
            ],
            vec!["config", "set", "--env", &f.e1, "--keep-max", "1"],
            vec!["agent", "token", "create", "hn1"],
            vec!["agent", "token", "revoke", "--host", "hn2"],
            vec!["token", "create", "mallory", "--role", "admin"],
            vec!["cluster", "remove-node", "3"],
            vec!["backups", "delete", &f.b1],
            vec!["backups", "protect", &f.b1],
            vec!["envs", "move", &f.e2, "--to", "hn1"],
            vec!["gc", "--wait", "1"],
            vec!["scrub"],
        ] {
            refused(node, &f.t1, &args, "rule administer");
        }
    }
    // Nothing was queued, hn2 wrote nothing, hn1's container is as it was.
    assert_eq!(jobs(&f).len(), jobs_before, "{:#?}", jobs(&f));
    assert!(!pwned.exists());
    assert_eq!(tree(&f.area1), before);

    let rt = grpc::rt();
    rt.block_on(async {
        let b2 = grpc::backup(&leader.url, SECRET, &f.b2).await;
        let b1 = grpc::backup(&leader.url, SECRET, &f.b1).await;
        for node in [follower, leader] {
            // hn2's manifest root, asked for hn2's backup, for hn1's own backup, or for
            // none: never served to hn1.
            for scope in [f.b2.as_str(), f.b1.as_str(), ""] {
                let e = grpc::get(&node.url, &f.t1, vec![b2.manifest.clone()], scope)
                    .await
                    .unwrap_err();
                assert_eq!(e.code(), tonic::Code::PermissionDenied, "{scope}: {e:?}");
                // Naming no backup breaks "acts for its own host, and says on what".
                let rule = if scope.is_empty() {
                    cairn_core::auth::Rule::AgentOwnHost
                } else {
                    cairn_core::auth::Rule::AgentOwnBackup
                };
                assert_eq!(cairn_proto::rule_of(&e), Some(rule), "{scope}: {e:?}");
            }
            // Its own backup's chunks it reads, named for that backup.
            let own = grpc::get(&node.url, &f.t1, vec![b1.manifest.clone()], &f.b1)
                .await
                .unwrap();
            assert_eq!(own.id, b1.manifest);
            // A commit outside a backup job (junk to push history out) is refused.
            let mut junk = b1.clone();
            junk.name = "junk".into();
            let e = pb_commit(&node.url, &f.t1, junk, "").await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::PermissionDenied);
            // The rule travels as metadata a client matches on, not only in the words.
            assert_eq!(
                cairn_proto::rule_of(&e),
                Some(cairn_core::auth::Rule::AgentCommitInJob),
                "{e:?}"
            );
        }
    });
    let _ = (&f.hn1, &f.hn2, &f.t2, &f.conf1, &f.conf2);
}

async fn pb_commit(
    url: &str,
    token: &str,
    backup: cairn_proto::pb::Backup,
    job: &str,
) -> Result<cairn_proto::pb::Backup, tonic::Status> {
    cairn_proto::pb::catalog_client::CatalogClient::new(grpc::channel(url).await)
        .commit_backup(grpc::with_token(
            cairn_proto::pb::CommitBackupRequest {
                backup: Some(backup),
                job: job.into(),
                session: String::new(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner())
}

/// Exploit 3 of the issue: hn2 goes silent, and hn1's agent reports a container whose CTID
/// is hn2's environment id (one config file on hn1). The cluster keeps the environment on
/// hn2 and hn1 reaches none of its backups. Once hn2's record of it is gone, its backups
/// still bind it to hn2. An operator's `cairn envs move` is the one way over.
#[test]
fn an_agent_never_takes_over_another_hosts_environment() {
    let mut f = fleet("");
    let (leader, follower) = leader_and_follower(&f.c);
    f.hn2.kill();
    wait_for(Duration::from_secs(20), "hn2 to show offline", || {
        let v = json(&f.c.nodes[0], &["envs", "list", "--json"]);
        v.as_array()?
            .iter()
            .find(|e| e["eid"] == f.e2.as_str())
            .filter(|e| e["host_online"] == false)
            .map(|_| ())
    });
    // hn1 now "runs" hn2's container: a Virtuozzo config with hn2's CTID, over a private
    // area of its own.
    let private1 = f.dir.path().join("hn1/vz/private");
    let stolen = private1.join(HN2_CTID);
    std::fs::create_dir_all(stolen.join("etc")).unwrap();
    std::fs::write(stolen.join("etc/motd"), "stolen\n").unwrap();
    std::fs::write(
        f.conf1.join(format!("{HN2_CTID}.conf")),
        format!(
            "HOSTNAME=\"stolen.example.com\"\nVE_PRIVATE=\"{}/$VEID\"\n",
            private1.display()
        ),
    )
    .unwrap();
    let refused_note = "the cluster refused this environment";
    wait_for(
        Duration::from_secs(20),
        "hn1's report to be refused",
        || {
            f.hn1
                .log()
                .lines()
                .any(|l| l.contains(refused_note) && l.contains(HN2_CTID))
                .then_some(())
        },
    );
    let owner = |f: &Fleet| -> Option<String> {
        let v = json(&f.c.nodes[0], &["envs", "list", "--json"]);
        v.as_array()?
            .iter()
            .find(|e| e["eid"] == f.e2.as_str())
            .and_then(|e| e["host"].as_str().map(str::to_string))
    };
    assert_eq!(owner(&f).as_deref(), Some("hn2"));
    for node in [follower, leader] {
        refused(
            node,
            &f.t1,
            &["restore", "--env", &f.e2, "--force", "--no-wait"],
            "rule agent-own-env",
        );
        refused(
            node,
            &f.t1,
            &["backups", "show", &f.b2],
            "rule agent-own-backup",
        );
    }

    // hn2 comes back without the container: its record goes, its backups stay — and still
    // bind the environment to hn2.
    std::fs::remove_file(f.conf2.join(format!("{HN2_CTID}.conf"))).unwrap();
    f.hn2.restart();
    wait_for(Duration::from_secs(20), "hn2 to drop the container", || {
        owner(&f).is_none().then_some(())
    });
    let log_len = f.hn1.log().len();
    wait_for(
        Duration::from_secs(20),
        "hn1's report to be refused again",
        || {
            f.hn1.log()[log_len..]
                .lines()
                .any(|l| l.contains(refused_note) && l.contains(HN2_CTID))
                .then_some(())
        },
    );
    assert_eq!(owner(&f), None);
    refused(
        leader,
        &f.t1,
        &["backups", "list", "--env", &f.e2],
        "rule agent-own-env",
    );

    // The operator's decision: move it to hn1. Then hn1 may back it up and restore it.
    let out = ok_as(leader, &f.admin, &["envs", "move", &f.e2, "--to", "hn1"]);
    assert!(out.contains("hn1"), "{out}");
    wait_for(Duration::from_secs(20), "hn1 to run it", || {
        (owner(&f).as_deref() == Some("hn1")).then_some(())
    });
    wait_for(
        Duration::from_secs(10),
        "the follower to see the move",
        || {
            follower
                .cairn_as(Some(&f.t1), &["backups", "list", "--env", &f.e2, "--json"])
                .status
                .success()
                .then_some(())
        },
    );
    let id = submit(&f.c.nodes[0], &["backup", "--env", &f.e2]);
    let job = succeeded(&f.c.nodes[0], &id);
    assert_eq!(job["host"], "hn1");
}

/// History survives a compromised host: retention that an agent's commit triggers spares
/// the grace (7 days by default) and protected backups; nothing an agent holds deletes or
/// unprotects; an admin's protection stops every removal until lifted.
#[test]
fn history_survives_a_compromised_host() {
    let f = fleet("");
    let (leader, follower) = leader_and_follower(&f.c);
    let n = &f.c.nodes[0];
    ok_as(
        n,
        &f.admin,
        &["config", "set", "--env", &f.e1, "--keep-max", "1"],
    );
    // Backups the agent commits (one per job) push nothing out within the grace.
    for _ in 0..2 {
        let id = submit(n, &["backup", "--env", &f.e1]);
        succeeded(n, &id);
        std::thread::sleep(Duration::from_millis(1100)); // distinct backup seconds
    }
    let all = backups(n, &f.e1);
    assert_eq!(
        all.len(),
        3,
        "keep_max 1, but all are inside the grace: {all:#?}"
    );

    // An admin protects the first; hn1's token can neither unprotect nor delete it.
    ok_as(follower, &f.admin, &["backups", "protect", &f.b1]);
    for node in [leader, follower] {
        refused(
            node,
            &f.t1,
            &["backups", "unprotect", &f.b1],
            "rule administer",
        );
        refused(
            node,
            &f.t1,
            &["backups", "delete", &f.b1],
            "rule administer",
        );
    }
    let shown = json(n, &["backups", "show", &f.b1, "--json"]);
    assert_eq!(shown["protected"], true);

    // The admin lifts the grace: retention applies at once, except to the protected one.
    ok_as(
        n,
        &f.admin,
        &["config", "set", "--env", &f.e1, "--retention-grace", "0"],
    );
    let left: Vec<String> = backups(n, &f.e1)
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.contains(&f.b1), "the protected backup stays: {left:?}");

    // Even an admin's delete is refused with its own code until unprotected.
    refused(n, &f.admin, &["backups", "delete", &f.b1], "is protected");
    ok_as(n, &f.admin, &["backups", "unprotect", &f.b1]);
    ok_as(n, &f.admin, &["backups", "delete", &f.b1]);
    assert!(backups(n, &f.e1).iter().all(|b| b["id"] != f.b1.as_str()));
}

/// A minimal XML client: the greeting, then one packet per call (NUL-framed).
struct Xml(std::net::TcpStream);

impl Xml {
    fn connect(addr: &str) -> Xml {
        let s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut x = Xml(s);
        x.read();
        x
    }

    fn read(&mut self) -> String {
        use std::io::Read;
        let mut out = Vec::new();
        let mut b = [0u8; 1];
        loop {
            self.0.read_exact(&mut b).unwrap();
            if b[0] == 0 {
                return String::from_utf8_lossy(&out).into_owned();
            }
            out.push(b[0]);
        }
    }

    /// Sends `body` (the `data` element's content) to `target` and returns the answer.
    fn call(&mut self, id: &str, target: &str, body: &str) -> String {
        use std::io::Write;
        let p = format!(
            "<packet version=\"4.0.0\" id=\"{id}\"><target>{target}</target><data><{target}>{body}</{target}></data></packet>\0"
        );
        self.0.write_all(p.as_bytes()).unwrap();
        loop {
            let a = self.read();
            // Progress packets of long calls come first.
            if !a.contains("type=\"1\"") {
                return a;
            }
        }
    }

    fn login(&mut self, user: &str, password: &str) -> String {
        use base64::Engine;
        let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        self.call(
            "login",
            "system",
            &format!(
                "<login><name>{}</name><realm>00000000-0000-0000-0000-000000000000</realm><password>{}</password></login>",
                b(user),
                b(password)
            ),
        )
    }
}

/// An operator's day with the new credentials: user tokens for the CLI (no cluster
/// secret), a standalone gateway whose own credential is an admin user token (not the
/// cluster secret) serving REST and XML users, protection over REST and XML, and a gateway
/// that cannot lend its users more rights than its token has.
#[test]
fn operators_work_with_user_tokens_through_cli_rest_and_xml() {
    let f = fleet("");
    let n = &f.c.nodes[1];
    let op = user_token(&f.c.nodes[0], "olga", "operator");
    let viewer = user_token(&f.c.nodes[0], "vic", "viewer");

    // CLI: an operator backs up and restores in place through the agent, and lists.
    let id = ok_as(n, &op, &["backup", "--env", &f.e1, "--no-wait"]);
    let job = finished(n, id.trim(), Duration::from_secs(120));
    assert_eq!(job["state"], "succeeded", "{job:#}");
    assert_eq!(job["requester"], "olga");
    let id = ok_as(n, &op, &["restore", "--env", &f.e1, "--force", "--no-wait"]);
    assert_eq!(
        finished(n, id.trim(), Duration::from_secs(120))["state"],
        "succeeded"
    );
    ok_as(n, &op, &["backups", "list", "--env", &f.e1, "--json"]);
    let target = f.dir.path().join("direct");
    ok_as(n, &op, &["restore", &f.b1, &target.display().to_string()]);
    assert!(target.join("etc/motd").exists());
    // A viewer reads the catalog, and nothing more.
    ok_as(n, &viewer, &["backups", "list", "--json"]);
    ok_as(n, &viewer, &["envs", "list", "--json"]);
    refused(n, &viewer, &["backup", "--env", &f.e1], "rule operate");
    let t2 = f.dir.path().join("direct2").display().to_string();
    refused(n, &viewer, &["restore", &f.b1, &t2], "rule read-content");
    refused(n, &op, &["backups", "delete", &f.b1], "rule administer");
    // An admin token manages tokens, settings, protection and the cluster.
    ok_as(n, &f.admin, &["agent", "token", "list"]);
    ok_as(n, &f.admin, &["token", "list"]);
    ok_as(
        n,
        &f.admin,
        &["config", "set", "--env", &f.e1, "--chain-length", "5"],
    );
    ok_as(n, &f.admin, &["cluster", "status"]);
    // A revoked token stops at once (every node sees the revocation once applied).
    ok_as(n, &f.admin, &["token", "revoke", "--name", "vic"]);
    wait_for(Duration::from_secs(10), "the revocation to apply", || {
        (!n.cairn_as(Some(&viewer), &["backups", "list"])
            .status
            .success())
        .then_some(())
    });

    // A standalone gateway with an admin user token as its own credential.
    let gw_token = user_token(&f.c.nodes[0], "gateway", "admin");
    let users = f.dir.path().join("users.toml");
    add_user(&users, "ada", "admin", "ada-password");
    add_user(&users, "otto", "operator", "otto-password");
    let (gw, rest, xml) = gateway(&f, &users, &gw_token);
    let admin_auth = basic("ada", "ada-password");
    let op_auth = basic("otto", "otto-password");
    let backup_uri = format!(
        "{rest}/vms/{}/backups/{}",
        f.e1,
        f.b1.split('/').nth(1).unwrap()
    );
    // An operator backs up over REST; the job is recorded as the REST user.
    let r = http::request(
        "POST",
        &format!("{rest}/vms/{}/back_up", f.e1),
        &[
            ("Authorization", &op_auth),
            ("Content-Type", "application/json"),
        ],
        b"{\"name\":\"over-rest\"}",
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let status_uri = r.json()["status_uri"].as_str().unwrap().to_string();
    let done = wait_for(
        Duration::from_secs(120),
        "the REST backup to finish",
        || {
            let s = http::request("GET", &status_uri, &[("Authorization", &op_auth)], b"");
            (s.json()["progress"] == 100).then(|| s.json())
        },
    );
    assert_eq!(done["status"], 201, "{done:#}");
    // An admin protects a backup over REST; then its DELETE is refused as protected.
    let r = http::request(
        "PUT",
        &backup_uri,
        &[
            ("Authorization", &admin_auth),
            ("Content-Type", "application/json"),
        ],
        b"{\"protected\":true}",
    );
    assert_eq!(r.status, 202, "{}", r.text());
    wait_for(Duration::from_secs(20), "the protection", || {
        let b = http::request("GET", &backup_uri, &[("Authorization", &admin_auth)], b"");
        (b.json()["protected"] == true).then_some(())
    });
    let r = http::request(
        "DELETE",
        &backup_uri,
        &[("Authorization", &admin_auth)],
        b"",
    );
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["message"][0]["code"], "protected");
    // XML: the same users, the protection shown, lifted by the `protect` extension.
    let mut x = Xml::connect(&xml);
    let login = x.login("ada", "ada-password");
    assert!(login.contains("token>"), "XML login: {login}");
    let info = x.call(
        "i1",
        "backupm",
        &format!(
            "<list><backup_id>{}</backup_id><options><info/></options></list>",
            f.b1
        ),
    );
    assert!(info.contains("protected"), "{info}");
    let removed = x.call(
        "r1",
        "backupm",
        &format!("<remove><backup_id>{}</backup_id></remove>", f.b1),
    );
    assert!(removed.contains("code>310<"), "{removed}");
    let lifted = x.call(
        "p1",
        "backupm",
        &format!(
            "<protect><backup_id>{}</backup_id><protected>0</protected></protect>",
            f.b1
        ),
    );
    assert!(lifted.contains("ok/>"), "{lifted}");
    let shown = json(&f.c.nodes[0], &["backups", "show", &f.b1, "--json"]);
    assert_eq!(shown["protected"], false);
    drop(gw);

    // A gateway whose token is a viewer's cannot lend its admin users more: the cluster
    // refuses to act for them.
    let weak = user_token(&f.c.nodes[0], "weak-gateway", "viewer");
    let (_gw, rest, _) = gateway(&f, &users, &weak);
    let weak_uri = format!(
        "{rest}/vms/{}/backups/{}",
        f.e1,
        f.b1.split('/').nth(1).unwrap()
    );
    let r = http::request("DELETE", &weak_uri, &[("Authorization", &admin_auth)], b"");
    assert_eq!(r.status, 403, "{}", r.text());
    let r = http::request("GET", &weak_uri, &[("Authorization", &admin_auth)], b"");
    assert_eq!(r.status, 403, "{}", r.text());
}

/// Starts `cairn gateway` over `f`'s cluster with `token` as its credential; returns the
/// process, the REST base URL and the XML address.
fn gateway(f: &Fleet, users: &Path, token: &str) -> (KillOnDrop, String, String) {
    let ports = free_ports(3);
    let dir = f.dir.path().join(format!("gw-{}", ports[0]));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("gateway.toml");
    let cluster: Vec<String> = f.c.nodes.iter().map(|n| format!("{:?}", n.url)).collect();
    std::fs::write(
        &config,
        format!(
            "cluster = [{}]\ntoken = \"{token}\"\nusers_file = \"{}\"\n[rest]\nlisten = \"127.0.0.1:{}\"\n[xml]\nlisten = \"127.0.0.1:{}\"\ntls_listen = \"127.0.0.1:{}\"\n",
            cluster.join(", "),
            users.display(),
            ports[0],
            ports[1],
            ports[2]
        ),
    )
    .unwrap();
    let child = cairn_tests::start_gateway(&config, &dir.join("gateway.log"));
    let rest = format!("http://127.0.0.1:{}", ports[0]);
    wait_for(
        Duration::from_secs(30),
        "the gateway to reach the cluster",
        || {
            std::net::TcpStream::connect(("127.0.0.1", ports[0])).ok()?;
            let r = http::request("GET", &format!("{rest}/healthz"), &[], b"");
            (r.status == 200).then_some(())
        },
    );
    (child, rest, format!("127.0.0.1:{}", ports[1]))
}

/// A restore onto another host than the backup's source withholds device nodes and
/// setuid/setgid bits unless an operator asks for them (`--allow-privileged`). Needs root
/// (to make a device node and a root-owned setuid file); CI runs it as root.
#[test]
fn restoring_onto_another_host_withholds_privileges_unless_asked() {
    require_root("makes a device node and a root-owned setuid file");
    let dir = tempfile::tempdir().unwrap();
    let c = TestCluster::start_with_token(&dir.path().join("c"), 3, "", Some(SECRET));
    let (private1, conf1) = vz_host(&dir.path().join("hn1"), &[("101", 4 << 10)]);
    let area = private1.join("101");
    std::fs::write(area.join("su"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        area.join("su"),
        std::os::unix::fs::PermissionsExt::from_mode(0o4755),
    )
    .unwrap();
    nix::sys::stat::mknod(
        &area.join("null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    let (private2, conf2) = vz_host(&dir.path().join("hn2"), &[]);
    let _hn1 = start_agent_with(
        &c,
        dir.path(),
        "hn1",
        &agent_token(&c.nodes[0], "hn1"),
        "",
        &vz_discovery(&private1, &conf1),
    );
    let _hn2 = start_agent_with(
        &c,
        dir.path(),
        "hn2",
        &agent_token(&c.nodes[0], "hn2"),
        "",
        &vz_discovery(&private2, &conf2),
    );
    let e1 = eid_of(&c.nodes[0].envs(Some("hn1"), 1), "101");
    let id = submit(&c.nodes[0], &["backup", "--env", &e1]);
    let b1 = succeeded(&c.nodes[0], &id)["result"]["backup"]
        .as_str()
        .unwrap()
        .to_string();
    let mode = |p: &Path| {
        std::os::unix::fs::PermissionsExt::mode(
            &std::fs::symlink_metadata(p).unwrap().permissions(),
        ) & 0o7777
    };
    // Onto hn2 without the flag: no device node, no setuid bit.
    let plain = dir.path().join("hn2/restored-plain");
    let to = plain.display().to_string();
    let id = submit(&c.nodes[1], &["restore", &b1, "--host", "hn2", "--to", &to]);
    let job = succeeded(&c.nodes[1], &id);
    assert_eq!(job["options"]["privileged"], false, "{job:#}");
    assert_eq!(mode(&plain.join("su")), 0o755);
    assert!(!plain.join("null").exists(), "no device node");
    // With the flag, everything comes back.
    let full = dir.path().join("hn2/restored-full");
    let to = full.display().to_string();
    let id = submit(
        &c.nodes[1],
        &[
            "restore",
            &b1,
            "--host",
            "hn2",
            "--to",
            &to,
            "--allow-privileged",
        ],
    );
    succeeded(&c.nodes[1], &id);
    assert_eq!(mode(&full.join("su")), 0o4755);
    let kind = std::fs::symlink_metadata(full.join("null"))
        .unwrap()
        .file_type();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(&kind));
}

/// A node without a cluster secret refuses a listen address others can reach, in one line
/// naming the fix, unless its config says `insecure = true`.
#[test]
fn an_exposed_node_without_a_secret_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    let port = free_ports(1)[0];
    let text = format!(
        "node_id = 1\nlisten = \"0.0.0.0:{port}\"\ndata_dir = \"{}\"\n",
        dir.path().join("data").display()
    );
    std::fs::write(&config, &text).unwrap();
    let out = Command::new(cairn_bin())
        .args(["node", "--config"])
        .arg(&config)
        .env_remove("CAIRN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("insecure = true") && err.contains(&format!("0.0.0.0:{port}")),
        "{err}"
    );
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error")).count(),
        1,
        "one line: {err}"
    );
    // Said explicitly, it serves.
    let data = dir.path().join("data2");
    let port = free_ports(1)[0];
    let mut node = Node::start_with(
        &data,
        &format!(
            "node_id = 1\nlisten = \"0.0.0.0:{port}\"\nadvertise = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\ninsecure = true\n",
            data.display()
        ),
    );
    node.ok(&["cluster", "status"]);
    node.stop();
}
