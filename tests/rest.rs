//! The REST adapter (Sun Cloud API model) over real HTTP: `cairn node` processes whose
//! config enables the gateway, a `cairn agent` with two containers, users made with
//! `cairn user add`, and a hand-written HTTP client (`cairn_tests::http`) that shares no
//! code with the server. Every wait is on an observable condition with a deadline.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use cairn_tests::http::{self, basic, Resp};
use cairn_tests::{add_user, cairn_bin, noise, wait_for, Agent, KillOnDrop, TestCluster};
use serde_json::Value;

const TOKEN: &str = "rest-cluster-t0ken";
const ADMIN: (&str, &str) = ("root-admin", "admin-pass-1");
const OPERATOR: (&str, &str) = ("ops", "operator-pass-1");
const VIEWER: (&str, &str) = ("watcher", "viewer-pass-1");
const MESSAGES: &str = "application/vnd.com.sun.cloud.common.Messages+json";

fn media(t: &str) -> String {
    format!("application/vnd.com.sun.cloud.{t}+json")
}

fn user_cmd(users: &Path, args: &[&str]) -> std::process::Output {
    Command::new(cairn_bin())
        .arg("user")
        .args(args)
        .arg("--users-file")
        .arg(users)
        .stdin(Stdio::null())
        .output()
        .expect("run cairn user")
}

/// A cluster whose nodes serve the REST API, an agent (host `h1`) with containers `c1` and
/// `c2`, and three users (admin, operator, viewer).
struct Rig {
    dir: tempfile::TempDir,
    cluster: TestCluster,
    _agent: Agent,
    /// The REST base URL of each node (`http://127.0.0.1:PORT`).
    rest: Vec<String>,
    users: PathBuf,
    containers: PathBuf,
}

fn rig(nodes: usize, agent_extra: &str) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    add_user(&users, ADMIN.0, "admin", ADMIN.1);
    add_user(&users, OPERATOR.0, "operator", OPERATOR.1);
    add_user(&users, VIEWER.0, "viewer", VIEWER.1);
    let text = std::fs::read_to_string(&users).unwrap();
    assert!(
        !text.contains(ADMIN.1) && text.contains("$argon2"),
        "the users file holds argon2 hashes, never passwords"
    );
    let extra = format!(
        "[gateway]\nusers_file = \"{}\"\n[gateway.rest]\nlisten = \"127.0.0.1:0\"\n",
        users.display()
    );
    let cluster = TestCluster::start_with_token(dir.path(), nodes, &extra, Some(TOKEN));
    let rest: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| {
            wait_for(Duration::from_secs(30), "the REST listener", || {
                let log = std::fs::read_to_string(&n.log).ok()?;
                let at = log.find("REST API (Sun Cloud API) at ")?;
                let rest = &log[at + "REST API (Sun Cloud API) at ".len()..];
                Some(
                    rest.lines()
                        .next()?
                        .trim()
                        .trim_end_matches('/')
                        .to_string(),
                )
            })
        })
        .collect();
    let containers = dir.path().join("containers");
    // c1 is big enough for several upload batches (8 MiB each), so that a rate-limited
    // backup reports progress between 0 and 100.
    for (name, seed, size) in [("c1", 1, 20 << 20), ("c2", 2, 1 << 20)] {
        let root = containers.join(name);
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/hostname"), format!("{name}.example\n")).unwrap();
        std::fs::write(root.join("data.bin"), noise(size, seed)).unwrap();
        std::os::unix::fs::symlink("etc/hostname", root.join("link")).unwrap();
    }
    let token = cluster.nodes[0]
        .ok(&["agent", "token", "create", "h1"])
        .trim()
        .to_string();
    let node_urls: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("{:?}", n.url))
        .collect();
    let agent_text = format!(
        "cluster = [{}]\nhost_id = \"h1\"\nstate_dir = \"{}\"\ntoken = \"{token}\"\nregister_interval_ms = 1000\nreport_interval_ms = 200\n{agent_extra}\n[discovery]\ndirs = [\"{}\"]\n",
        node_urls.join(", "),
        dir.path().join("h1-state").display(),
        containers.display()
    );
    let agent = Agent::start(&dir.path().join("agent-h1"), &agent_text);
    let r = Rig {
        dir,
        cluster,
        _agent: agent,
        rest,
        users,
        containers,
    };
    wait_for(Duration::from_secs(30), "both VMs to appear", || {
        let c = r.get(&format!("{}/clusters/h1", r.rest[0]), ADMIN);
        (c.status == 200 && c.json()["vms"].as_array()?.len() == 2).then_some(())
    });
    r
}

impl Rig {
    fn get(&self, url: &str, who: (&str, &str)) -> Resp {
        http::request("GET", url, &[("Authorization", &basic(who.0, who.1))], b"")
    }

    fn send(&self, method: &str, url: &str, who: (&str, &str), ct: &str, body: &str) -> Resp {
        let auth = basic(who.0, who.1);
        let mut h = vec![
            ("Authorization", auth.as_str()),
            ("X-Cloud-Client-Specification-Version", "0.1"),
        ];
        if !ct.is_empty() {
            h.push(("Content-Type", ct));
        }
        http::request(method, url, &h, body.as_bytes())
    }

    /// Polls a Status until `progress` is 100; returns the final Status and every progress
    /// value seen.
    fn finish(&self, status_uri: &str) -> (Value, Vec<u64>) {
        let mut seen = Vec::new();
        let last = wait_for(Duration::from_secs(90), "the operation to finish", || {
            let r = self.get(status_uri, VIEWER);
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.content_type(), media("Status"));
            let s = r.json();
            let p = s["progress"].as_u64().unwrap();
            assert!(p <= 100);
            seen.push(p);
            if p < 100 {
                assert!(s.get("status").is_none(), "status only once finished: {s}");
                std::thread::sleep(Duration::from_millis(50));
            }
            (p == 100).then_some(s)
        });
        (last, seen)
    }
}

/// A Messages body with `code` (and `field`).
fn assert_messages(r: &Resp, status: u16, code: &str, field: Option<&str>) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.content_type(), MESSAGES, "{}", r.text());
    let m = r.json();
    let first = &m["message"][0];
    assert_eq!(first["code"], code, "{m}");
    assert!(first["text"].as_str().is_some_and(|t| !t.is_empty()), "{m}");
    if let Some(f) = field {
        assert_eq!(first["field"], f, "{m}");
    }
    let text = r.text();
    assert!(
        !text.contains("127.0.0.1:") && !text.contains("panicked") && !text.contains(".rs:"),
        "no internal addresses or traces in errors: {text}"
    );
}

fn tree_digest(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(p);
                out.push((rel, b"dir".to_vec()));
            } else if ft.is_symlink() {
                out.push((
                    rel,
                    std::fs::read_link(&p)
                        .unwrap()
                        .display()
                        .to_string()
                        .into_bytes(),
                ));
            } else {
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// The client's walk: from `GET /` only, by following `uri` fields, to a VM; back it up and
/// poll the Status to 201; read, update, restore and delete the backup.
#[test]
fn a_client_walks_from_the_root_and_runs_every_backup_operation() {
    // An upload limit keeps the backup running long enough to see progress and a conflict.
    let rig = rig(3, "upload_limit_bytes_per_sec = 5000000");
    // Node 3's listener: any node serves the API (it forwards to the leader).
    let base = &rig.rest[2];

    // GET / → Cloud.
    let cloud = rig.get(&format!("{base}/"), VIEWER);
    assert_eq!(cloud.status, 200);
    assert_eq!(cloud.content_type(), media("Cloud"));
    assert_eq!(cloud.header("x-cloud-specification-version"), Some("0.1"));
    let cloud = cloud.json();
    assert_eq!(cloud["specification_version"], serde_json::json!(["0.1"]));
    assert_eq!(cloud["uri"], format!("{base}/"));
    let versions = rig.get(cloud["versions"].as_str().unwrap(), VIEWER);
    assert_eq!(versions.content_type(), media("Versions"));
    assert!(versions.json()["implementation_version"]
        .as_str()
        .unwrap()
        .starts_with("cairn "));

    // → VDC → root Cluster → host Cluster → VM.
    let vdc = rig.get(cloud["vdcs"][0]["uri"].as_str().unwrap(), VIEWER);
    assert_eq!(vdc.content_type(), media("VDC"));
    let vdc = vdc.json();
    let host = vdc["cluster"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "h1")
        .expect("host h1 in the VDC's cluster");
    let hc = rig.get(host["uri"].as_str().unwrap(), VIEWER);
    assert_eq!(hc.content_type(), media("Cluster"));
    let hc = hc.json();
    assert_eq!(hc["online"], true);
    let vm_link = hc["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "c1")
        .expect("VM c1");
    let vm_uri = vm_link["uri"].as_str().unwrap().to_string();
    let vm = rig.get(&vm_uri, VIEWER);
    assert_eq!(vm.status, 200);
    assert_eq!(vm.content_type(), media("VM"));
    let vm = vm.json();
    assert_eq!(
        vm["hostname"], "c1.example",
        "read from the container's etc/hostname"
    );
    assert_eq!(vm["cluster"], host["uri"]);
    assert_eq!(vm["backups"], serde_json::json!([]));
    let back_up = vm["back_up"].as_str().unwrap().to_string();

    // Plain application/json is served too.
    let as_json = http::request(
        "GET",
        &vm_uri,
        &[
            ("Authorization", &basic(VIEWER.0, VIEWER.1)),
            ("Accept", "application/json"),
        ],
        b"",
    );
    assert_eq!(as_json.status, 200);
    assert_eq!(as_json.content_type(), "application/json");

    // POST {back_up} → 202 Status back_up.
    let r = rig.send(
        "POST",
        &back_up,
        OPERATOR,
        &media("Backup"),
        r#"{"name": "c1-nightly", "description": "before upgrade", "tags": ["nightly"], "type": "full", "uri": "ignored"}"#,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.content_type(), media("Status"));
    let st = r.json();
    assert_eq!(st["op"], "back_up");
    assert!(st["progress"].as_u64().unwrap() < 100);
    // The first answer already names the new backup (the catalog reserved its id when it
    // queued the job), not the VM.
    let first_target = st["target_uri"].as_str().unwrap().to_string();
    assert!(
        first_target.starts_with(&format!("{vm_uri}/backups/")),
        "the first Status names the new backup: {st}"
    );
    let status_uri = st["status_uri"].as_str().unwrap().to_string();
    assert_eq!(r.header("location"), Some(status_uri.as_str()));
    // The client polls with the headers it sent the request with: the Status answers, as
    // the 202 did, whatever Accept named.
    let polled = http::request(
        "GET",
        &status_uri,
        &[
            ("Authorization", &basic(VIEWER.0, VIEWER.1)),
            ("Accept", &media("Backup")),
            ("X-Cloud-Client-Specification-Version", "0.1"),
        ],
        b"",
    );
    assert_eq!(polled.status, 200, "{}", polled.text());
    assert_eq!(polled.content_type(), media("Status"));
    assert_eq!(polled.json()["op"], "back_up");
    assert_eq!(polled.json()["target_uri"], first_target.as_str());
    // Before the commit, the backup itself is not there yet; the Status is what one polls.
    let early = rig.get(&first_target, VIEWER);
    assert!(
        [200, 404].contains(&early.status),
        "{} {}",
        early.status,
        early.text()
    );

    // A second backup of the same VM while this one runs: 409.
    let busy = rig.send("POST", &back_up, OPERATOR, "application/json", "{}");
    assert_messages(&busy, 409, "conflict", None);

    let (done, seen) = rig.finish(&status_uri);
    assert_eq!(done["status"], 201, "{done}");
    assert!(
        seen.iter().any(|p| (1..100).contains(p)),
        "progress rises while the backup runs: {seen:?}"
    );
    let backup_uri = done["target_uri"].as_str().unwrap().to_string();
    assert_eq!(
        backup_uri, first_target,
        "the backup made is the one the first answer named"
    );

    // GET the backup.
    let b = rig.get(&backup_uri, VIEWER);
    assert_eq!(b.status, 200);
    assert_eq!(b.content_type(), media("Backup"));
    let b = b.json();
    assert_eq!(b["name"], "c1-nightly");
    assert_eq!(b["description"], "before upgrade");
    assert_eq!(b["tags"], serde_json::json!(["nightly"]));
    assert_eq!(b["type"], "full");
    assert_eq!(b["vm"], vm_uri);
    assert_eq!(b["uri"], backup_uri);
    assert_eq!(b["restore"], format!("{backup_uri}/restore"));
    assert_eq!(b["state"], "complete");
    assert!(b["size"].as_u64().unwrap() >= 3 << 20);
    assert!(b["stored_size"].as_u64().unwrap() > 0);
    assert!(b["created"].as_str().unwrap().ends_with('Z'));
    let id = b["id"].as_str().unwrap();
    assert_eq!(
        id,
        format!(
            "{}/{}",
            vm["id"].as_str().unwrap(),
            backup_uri.rsplit('/').next().unwrap()
        )
    );
    // The VM embeds it; the extension lists it.
    let vm_now = rig.get(&vm_uri, VIEWER).json();
    assert_eq!(vm_now["backups"][0]["uri"], backup_uri);
    let list = rig.get(&format!("{vm_uri}/backups"), VIEWER);
    assert_eq!(list.content_type(), "application/json");
    assert_eq!(list.json()[0]["uri"], backup_uri);
    // The same name again: 409 duplicate_name.
    let dup = rig.send(
        "POST",
        &back_up,
        ADMIN,
        "application/json",
        r#"{"name":"c1-nightly"}"#,
    );
    assert_messages(&dup, 409, "duplicate_name", Some("name"));

    // PUT with the spec's misspelled type: tags replaced, name kept.
    let r = rig.send(
        "PUT",
        &backup_uri,
        ADMIN,
        "application/vnd.com.sun.Backup.VM+json",
        r#"{"tags": ["nightly", "keep"], "type": "incremental"}"#,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["op"], "update-Backup");
    // The catalog edit is done when the PUT is answered: the spec's example answers the
    // finished edit.
    assert_eq!(r.json()["progress"], 100, "{}", r.text());
    assert_eq!(r.json()["status"], 200, "{}", r.text());
    assert_eq!(r.json()["target_uri"], backup_uri);
    let (done, _) = rig.finish(r.json()["status_uri"].as_str().unwrap());
    assert_eq!(done["status"], 200, "{done}");
    assert_eq!(done["target_uri"], backup_uri);
    let b = rig.get(&backup_uri, VIEWER).json();
    assert_eq!(b["tags"], serde_json::json!(["nightly", "keep"]));
    assert_eq!(b["name"], "c1-nightly");
    assert_eq!(b["type"], "full");

    // Damage the container, then restore: the files come back.
    let c1 = rig.containers.join("c1");
    let before = tree_digest(&c1);
    std::fs::remove_file(c1.join("etc/hostname")).unwrap();
    std::fs::write(c1.join("data.bin"), b"overwritten").unwrap();
    std::fs::write(c1.join("stray"), b"new file").unwrap();
    assert_ne!(tree_digest(&c1), before);
    // "`"force": false` refuses to overwrite a tree that changed or is in use, the default
    // replaces it": the changed tree stays as it is.
    let damaged = tree_digest(&c1);
    let r = rig.send(
        "POST",
        &format!("{backup_uri}/restore"),
        OPERATOR,
        "application/json",
        r#"{"force": false}"#,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let (done, _) = rig.finish(r.json()["status_uri"].as_str().unwrap());
    assert_eq!(done["status"], 409, "{done}");
    assert!(done.to_string().contains("changed since"), "{done}");
    assert_eq!(tree_digest(&c1), damaged, "force false changed nothing");
    let r = rig.send(
        "POST",
        &format!("{backup_uri}/restore"),
        OPERATOR,
        "application/json",
        // Any name/value pairs: `note` by convention, others logged and ignored.
        r#"{"note": "rolling back the upgrade", "ticket": "OPS-7", "requested_by": {"team": "ops"}}"#,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["op"], "restore-Backup");
    let (done, _) = rig.finish(r.json()["status_uri"].as_str().unwrap());
    assert_eq!(done["status"], 200, "{done}");
    assert_eq!(tree_digest(&c1), before, "the restore brings the tree back");

    // DELETE → gone.
    let r = rig.send("DELETE", &backup_uri, ADMIN, "", "");
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["op"], "delete-Backup");
    let (done, _) = rig.finish(r.json()["status_uri"].as_str().unwrap());
    assert_eq!(done["status"], 200, "{done}");
    assert_messages(&rig.get(&backup_uri, VIEWER), 404, "not_found", None);
    assert_eq!(
        rig.get(&vm_uri, VIEWER).json()["backups"],
        serde_json::json!([])
    );
    // The Status stays readable after the fact.
    assert_eq!(rig.get(&status_uri, VIEWER).json()["status"], 201);

    // Operability on the same listener.
    let m = rig.get(&format!("{base}/metrics"), VIEWER);
    assert_eq!(m.status, 200);
    let text = m.text();
    for needle in [
        "cairn_http_requests_total{",
        "cairn_jobs{state=\"succeeded\"}",
        "cairn_raft_term{",
        "cairn_raft_leader{",
        "cairn_raft_commit_index{",
        "cairn_chunk_store_bytes{",
        "cairn_ingested_logical_bytes{",
        "cairn_repair_backlog{",
    ] {
        assert!(text.contains(needle), "/metrics lacks {needle}:\n{text}");
    }
    let h = http::request("GET", &format!("{base}/healthz"), &[], b"");
    assert_eq!((h.status, h.text().trim()), (200, "ok"));
    let doc = rig.get(&format!("{base}/openapi.json"), VIEWER);
    assert_eq!(doc.status, 200);
    assert!(doc.json()["openapi"].as_str().unwrap().starts_with("3."));
}

/// Every route refuses missing and wrong credentials (401 + WWW-Authenticate) and roles that
/// may not (403); users added or removed with `cairn user` count at once.
#[test]
fn every_route_authenticates_and_checks_roles() {
    let rig = rig(1, "");
    let base = &rig.rest[0];
    let vm = rig.get(&format!("{base}/clusters/h1"), ADMIN).json()["vms"][0]["uri"]
        .as_str()
        .unwrap()
        .to_string();
    let r = rig.send(
        "POST",
        &format!("{vm}/back_up"),
        ADMIN,
        "application/json",
        "{}",
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let status = r.json()["status_uri"].as_str().unwrap().to_string();
    let (done, _) = rig.finish(&status);
    let backup = done["target_uri"].as_str().unwrap().to_string();

    let routes: Vec<(&str, String, &str)> = vec![
        ("GET", format!("{base}/"), "viewer"),
        ("GET", format!("{base}/versions"), "viewer"),
        ("GET", format!("{base}/vdc"), "viewer"),
        ("GET", format!("{base}/clusters"), "viewer"),
        ("GET", format!("{base}/clusters/h1"), "viewer"),
        ("GET", vm.clone(), "viewer"),
        ("GET", format!("{vm}/backups"), "viewer"),
        ("GET", backup.clone(), "viewer"),
        ("GET", status.clone(), "viewer"),
        ("GET", format!("{base}/metrics"), "viewer"),
        ("GET", format!("{base}/openapi.json"), "viewer"),
        ("POST", format!("{vm}/back_up"), "operator"),
        ("POST", format!("{backup}/restore"), "operator"),
        ("PUT", backup.clone(), "admin"),
        ("DELETE", backup.clone(), "admin"),
        // Even a route that does not exist asks for credentials first.
        ("GET", format!("{base}/no/such/thing"), "viewer"),
    ];
    for (method, url, _) in &routes {
        let none = http::request(method, url, &[("Content-Type", "application/json")], b"{}");
        assert_messages(&none, 401, "unauthenticated", None);
        assert!(
            none.header("www-authenticate")
                .is_some_and(|h| h.starts_with("Basic realm=")),
            "{method} {url}: 401 names the scheme"
        );
        let wrong = rig.send(
            method,
            url,
            (ADMIN.0, "not-the-password"),
            "application/json",
            "{}",
        );
        assert_messages(&wrong, 401, "unauthenticated", None);
        let unknown = rig.send(method, url, ("nobody", ADMIN.1), "application/json", "{}");
        assert_messages(&unknown, 401, "unauthenticated", None);
        let garbage = http::request(method, url, &[("Authorization", "Basic %%%")], b"");
        assert_messages(&garbage, 401, "unauthenticated", None);
    }
    // Roles: a viewer may not create, restore, update or delete; an operator may not update
    // or delete. Nothing happened: the backup is still there, unchanged.
    for (method, url, needed) in &routes {
        let denied: &[(&str, &str)] = match *needed {
            "operator" => &[VIEWER],
            "admin" => &[VIEWER, OPERATOR],
            _ => &[],
        };
        for who in denied {
            let r = rig.send(method, url, *who, "application/json", r#"{"tags":["x"]}"#);
            assert_messages(&r, 403, "forbidden", None);
        }
    }
    let b = rig.get(&backup, VIEWER);
    assert_eq!(b.status, 200);
    assert_eq!(b.json()["tags"], serde_json::json!([]));
    assert_eq!(
        rig.get(&vm, VIEWER).json()["backups"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // A viewer reads everything.
    for (method, url, needed) in &routes {
        if *method == "GET" && *needed == "viewer" && !url.ends_with("/no/such/thing") {
            let r = rig.get(url, VIEWER);
            assert_eq!(r.status, 200, "{url}: {}", r.text());
        }
    }

    // Users change while the gateway runs: no restart needed.
    let late = ("late-user", "late-pass-123");
    assert_eq!(rig.get(&format!("{base}/"), late).status, 401);
    add_user(&rig.users, late.0, "viewer", late.1);
    wait_for(
        Duration::from_secs(10),
        "the new user to be accepted",
        || (rig.get(&format!("{base}/"), late).status == 200).then_some(()),
    );
    // `cairn user passwd`: the new password works, the old one stops working.
    let mut child = Command::new(cairn_bin())
        .args(["user", "passwd", late.0, "--password-stdin", "--users-file"])
        .arg(&rig.users)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"changed-pass-456\n")
            .unwrap();
    }
    assert!(child.wait().unwrap().success());
    wait_for(Duration::from_secs(10), "the new password to count", || {
        (rig.get(&format!("{base}/"), (late.0, "changed-pass-456"))
            .status
            == 200)
            .then_some(())
    });
    assert_eq!(rig.get(&format!("{base}/"), late).status, 401);
    let out = user_cmd(&rig.users, &["remove", late.0]);
    assert!(out.status.success());
    wait_for(
        Duration::from_secs(10),
        "the removed user to be refused",
        || (rig.get(&format!("{base}/"), late).status == 401).then_some(()),
    );
    let listed = String::from_utf8(user_cmd(&rig.users, &["list"]).stdout).unwrap();
    assert!(
        listed.contains("ops\toperator") && !listed.contains(late.0),
        "{listed}"
    );
    // Bad input to `cairn user` is refused clearly.
    let out = user_cmd(&rig.users, &["remove", "ghost"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ghost"));
}

/// Malformed bodies, ids and requests: each a 4xx with a Messages body, and the server keeps
/// serving.
#[test]
fn bad_input_is_refused_in_the_apis_own_error_form() {
    let rig = rig(1, "");
    let base = &rig.rest[0];
    let vm = rig.get(&format!("{base}/clusters/h1"), ADMIN).json()["vms"][0]["uri"]
        .as_str()
        .unwrap()
        .to_string();
    let back_up = format!("{vm}/back_up");
    let json = "application/json";
    /// (method, url, content type, body, status, code, field)
    type Case<'a> = (
        &'a str,
        String,
        &'a str,
        String,
        u16,
        &'a str,
        Option<&'a str>,
    );
    let cases: Vec<Case> = vec![
        (
            "POST",
            back_up.clone(),
            json,
            "{\"name\": ".into(),
            400,
            "malformed_json",
            None,
        ),
        (
            "POST",
            back_up.clone(),
            json,
            "[1,2]".into(),
            400,
            "malformed_json",
            None,
        ),
        (
            "POST",
            back_up.clone(),
            json,
            "\u{0}\u{1}binary".into(),
            400,
            "malformed_json",
            None,
        ),
        (
            "POST",
            back_up.clone(),
            json,
            r#"{"name": 7}"#.into(),
            400,
            "wrong_type",
            Some("name"),
        ),
        (
            "POST",
            back_up.clone(),
            json,
            r#"{"tags": "x"}"#.into(),
            400,
            "wrong_type",
            Some("tags"),
        ),
        (
            "POST",
            back_up.clone(),
            json,
            r#"{"colour": "red"}"#.into(),
            400,
            "unknown_field",
            Some("colour"),
        ),
        (
            "POST",
            back_up.clone(),
            json,
            r#"{"type": "weekly"}"#.into(),
            400,
            "invalid_value",
            Some("type"),
        ),
        (
            "POST",
            back_up.clone(),
            "text/plain",
            "{}".into(),
            400,
            "unsupported_media_type",
            Some("Content-Type"),
        ),
        (
            "POST",
            back_up.clone(),
            json,
            format!("{{\"name\": \"{}\"}}", "x".repeat(100_000)),
            413,
            "body_too_large",
            None,
        ),
        (
            "POST",
            back_up.clone(),
            json,
            format!("{{\"name\": \"{}\"}}", "x".repeat(1000)),
            400,
            "invalid_value",
            Some("name"),
        ),
        (
            "GET",
            format!("{base}/vms/6f1c0d9e-2b1a-4d7e-9a55-0c3b8e1f7a21"),
            "",
            String::new(),
            404,
            "not_found",
            None,
        ),
        (
            "GET",
            format!("{base}/vms/not-a-uuid"),
            "",
            String::new(),
            404,
            "malformed_id",
            None,
        ),
        (
            "GET",
            format!("{base}/vms/..%2F..%2Fetc%2Fpasswd"),
            "",
            String::new(),
            404,
            "malformed_id",
            None,
        ),
        (
            "GET",
            format!("{base}/vms/%00%ff"),
            "",
            String::new(),
            404,
            "malformed_id",
            None,
        ),
        (
            "GET",
            format!("{vm}/backups/../../../etc/passwd"),
            "",
            String::new(),
            404,
            "not_found",
            None,
        ),
        (
            "GET",
            format!("{vm}/backups/2026"),
            "",
            String::new(),
            404,
            "malformed_id",
            None,
        ),
        (
            "GET",
            format!("{vm}/backups/20261399000000"),
            "",
            String::new(),
            404,
            "malformed_id",
            None,
        ),
        (
            "GET",
            format!("{vm}/backups/20200101000000"),
            "",
            String::new(),
            404,
            "not_found",
            None,
        ),
        (
            "GET",
            format!("{base}/statuses/42"),
            "",
            String::new(),
            404,
            "malformed_id",
            None,
        ),
        (
            "GET",
            format!("{base}/statuses/01234567-89ab-7def-8123-456789abcdef"),
            "",
            String::new(),
            404,
            "not_found",
            None,
        ),
        (
            "GET",
            format!("{base}/clusters/no-such-host"),
            "",
            String::new(),
            404,
            "not_found",
            None,
        ),
        (
            "DELETE",
            vm.clone(),
            "",
            String::new(),
            405,
            "method_not_allowed",
            None,
        ),
        (
            "PUT",
            back_up.clone(),
            json,
            "{}".into(),
            405,
            "method_not_allowed",
            None,
        ),
        (
            "POST",
            format!("{vm}/backups/20200101000000/restore"),
            json,
            r#"{"force": "maybe"}"#.into(),
            400,
            "wrong_type",
            Some("force"),
        ),
        (
            "POST",
            format!("{vm}/backups/20200101000000/restore"),
            json,
            "{}".into(),
            404,
            "not_found",
            None,
        ),
    ];
    for (method, url, ct, body, status, code, field) in &cases {
        let r = rig.send(method, url, ADMIN, ct, body);
        assert_messages(&r, *status, code, *field);
        if *status == 405 {
            let allow = r.header("allow").unwrap_or_default();
            assert!(
                allow.contains(if method == &"DELETE" { "GET" } else { "POST" }),
                "Allow: {allow}"
            );
        }
    }
    // 406: nothing acceptable; a 202 still answers with a Status whatever Accept says.
    let r = http::request(
        "GET",
        &vm,
        &[
            ("Authorization", &basic(ADMIN.0, ADMIN.1)),
            ("Accept", "text/html"),
        ],
        b"",
    );
    assert_messages(&r, 406, "not_acceptable", None);
    let r = http::request(
        "POST",
        &back_up,
        &[
            ("Authorization", &basic(ADMIN.0, ADMIN.1)),
            ("Accept", &media("Backup")),
            ("Content-Type", "application/json"),
            ("X-Compute-Client-Specification-Version", "0.9-anything"),
        ],
        b"{}",
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.content_type(), media("Status"));
    rig.finish(r.json()["status_uri"].as_str().unwrap());
    // Garbage that is not HTTP at all, then a client that vanishes mid-request.
    let host = http::split_url(base).1;
    let _ = http::exchange(&host, b"\x16\x03\x01\x00\xffGARBAGE\r\n\r\n", None);
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(&host).unwrap();
        let _ = s.write_all(
            b"POST /vms/x/back_up HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n{\"na",
        );
    }
    // Still serving.
    let r = rig.get(&format!("{base}/"), VIEWER);
    assert_eq!(r.status, 200);
}

/// `cairn gateway --config` alone in front of the cluster, over HTTPS with a configured
/// `public_url`.
#[test]
fn a_standalone_gateway_serves_https() {
    let rig = rig(1, "");
    let dir = rig.dir.path();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_pem, key_pem) = (dir.join("gw.crt"), dir.join("gw.key"));
    std::fs::write(&cert_pem, cert.cert.pem()).unwrap();
    std::fs::write(&key_pem, cert.key_pair.serialize_pem()).unwrap();
    let port = cairn_tests::free_ports(1)[0];
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "cluster = [\"{}\"]\ntoken = \"{TOKEN}\"\nusers_file = \"{}\"\n[rest]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"https://localhost:{port}\"\ntls_cert = \"gw.crt\"\ntls_key = \"gw.key\"\n",
            rig.cluster.nodes[0].url,
            rig.users.display()
        ),
    )
    .unwrap();
    let _gw = cairn_tests::start_gateway(&config, &dir.join("gateway.log"));
    let base = format!("https://localhost:{port}");
    let auth = basic(VIEWER.0, VIEWER.1);
    let cloud = wait_for(
        Duration::from_secs(30),
        "the gateway to answer over TLS",
        || {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                return None;
            }
            let r = http::request_tls(
                "GET",
                &format!("{base}/"),
                &[("Authorization", &auth)],
                b"",
                Some(&cert_pem),
            );
            (r.status == 200).then_some(r)
        },
    );
    let cloud = cloud.json();
    assert_eq!(cloud["uri"], format!("{base}/"), "URIs use public_url");
    let vdc = http::request_tls(
        "GET",
        cloud["vdcs"][0]["uri"].as_str().unwrap(),
        &[("Authorization", &auth)],
        b"",
        Some(&cert_pem),
    );
    assert_eq!(vdc.status, 200);
    assert!(vdc.json()["cluster"]["clusters"][0]["uri"]
        .as_str()
        .unwrap()
        .starts_with(&base));
    // Plain HTTP to the TLS listener gets nothing it could mistake for an answer.
    let plain = http::exchange(
        &format!("127.0.0.1:{port}"),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        None,
    );
    assert!(!String::from_utf8_lossy(&plain).starts_with("HTTP/1.1 200"));
    let _ = &rig.containers;
}

/// The keys of a JSON object, sorted.
fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
    k.sort();
    k
}

/// The specification's own examples, sent as its pages write them (headers included; the
/// client adds `Content-Length`), and
/// each answer checked against the type it names: the Backup requests page's GET, PUT (with
/// its misspelled type and `{"tags": ["foo", "bar"]}`), restore (`{"note": "Restore to
/// known state"}` with `X-Compute-Client-Specification-Version`) and DELETE, after the
/// digest's create example.
#[test]
fn the_specifications_own_examples() {
    let rig = rig(1, "");
    let base = &rig.rest[0];
    let auth = basic(ADMIN.0, ADMIN.1);
    let vm = rig.get(&format!("{base}/clusters/h1"), VIEWER).json()["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "c2")
        .expect("VM c2")
        .clone();
    let status_keys = |s: &Value, finished: bool| {
        let mut want = vec!["op", "progress", "status_uri", "target_uri"];
        if finished {
            want.extend(["message", "status"]);
        }
        want.sort();
        assert_eq!(keys(s), want, "{s}");
    };

    // Create (the digest's example).
    let r = http::request(
        "POST",
        vm["back_up"].as_str().unwrap(),
        &[
            ("Authorization", &auth),
            ("Content-Type", &media("Backup")),
            ("X-Cloud-Client-Specification-Version", "0.1"),
        ],
        br#"{"name": "web01-nightly", "description": "before upgrade", "tags": ["nightly"]}"#,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.content_type(), media("Status"));
    status_keys(&r.json(), false);
    assert_eq!(r.json()["op"], "back_up");
    // As in the example, the first Status names the new backup.
    let first_target = r.json()["target_uri"].as_str().unwrap().to_string();
    assert!(
        first_target.starts_with(&format!("{}/backups/", vm["uri"].as_str().unwrap())),
        "{}",
        r.text()
    );
    let (done, _) = rig.finish(r.json()["status_uri"].as_str().unwrap());
    status_keys(&done, true);
    assert_eq!(done["status"], 201, "{done}");
    let backup = done["target_uri"].as_str().unwrap().to_string();
    assert_eq!(backup, first_target);

    // Get Backup: Accept Backup+json, X-Cloud-Client-Specification-Version.
    let r = http::request(
        "GET",
        &backup,
        &[
            ("Authorization", &auth),
            ("Accept", &media("Backup")),
            ("X-Cloud-Client-Specification-Version", "0.1"),
        ],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.content_type(), media("Backup"));
    let b = r.json();
    for field in [
        "name",
        "uri",
        "description",
        "type",
        "created",
        "restore",
        "vm",
        "tags",
    ] {
        assert!(b.get(field).is_some(), "Backup.{field}: {b}");
    }
    assert_eq!(b["uri"], backup);
    assert_eq!(b["restore"], format!("{backup}/restore"));

    // Update Backup Properties: the page's headers, its misspelled type, its body; the
    // answer is the finished edit.
    let put = br#"{
"tags" : [ "foo", "bar" ]
}"#;
    let r = http::request(
        "PUT",
        &backup,
        &[
            ("Authorization", &auth),
            ("Accept", &media("Backup")),
            ("Content-Type", "application/vnd.com.sun.Backup.VM+json"),
            ("X-Cloud-Client-Specification-Version", "0.1"),
        ],
        put,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.content_type(), media("Status"));
    let s = r.json();
    status_keys(&s, true);
    assert_eq!(
        (&s["op"], &s["progress"], &s["status"], &s["target_uri"]),
        (
            &Value::from("update-Backup"),
            &Value::from(100),
            &Value::from(200),
            &Value::from(backup.as_str())
        ),
        "{s}"
    );
    assert_eq!(
        rig.get(&backup, VIEWER).json()["tags"],
        serde_json::json!(["foo", "bar"])
    );

    // Restore VM From Backup.
    let restore = br#"{
"note" : "Restore to known state"
}"#;
    let r = http::request(
        "POST",
        &format!("{backup}/restore"),
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
            ("X-Compute-Client-Specification-Version", "0.1"),
        ],
        restore,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.content_type(), media("Status"));
    status_keys(&r.json(), false);
    assert_eq!(r.json()["op"], "restore-Backup");
    assert_eq!(r.json()["target_uri"], backup);
    let (done, _) = rig.finish(r.json()["status_uri"].as_str().unwrap());
    assert_eq!(done["status"], 200, "{done}");

    // Delete Backup.
    let r = http::request(
        "DELETE",
        &backup,
        &[
            ("Authorization", &auth),
            ("X-Compute-Client-Specification-Version", "0.1"),
        ],
        b"",
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.content_type(), media("Status"));
    assert_eq!(r.json()["op"], "delete-Backup");
    assert_eq!(r.json()["target_uri"], backup);
    let (done, _) = rig.finish(r.json()["status_uri"].as_str().unwrap());
    assert_eq!(done["status"], 200, "{done}");
    assert_messages(&rig.get(&backup, VIEWER), 404, "not_found", None);
    let _ = (&rig.dir, &rig.cluster, &rig.users, &rig.containers);
}

/// `cairn dev` serves the REST API with a user `admin`: its password is generated and
/// printed, or `CAIRN_DEV_PASSWORD` when set.
#[test]
fn cairn_dev_serves_rest_as_admin() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = |password: Option<&str>, log_name: &str| {
        let port = cairn_tests::free_ports(1)[0];
        let log_path = dir.path().join(log_name);
        let log = std::fs::File::create(&log_path).unwrap();
        let mut cmd = Command::new(cairn_bin());
        cmd.args([
            "dev",
            "--nodes",
            "1",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args([
            "--rest-listen",
            "127.0.0.1:0",
            "--xml-listen",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(&data)
        .env_remove("CAIRN_TOKEN")
        .env_remove("CAIRN_DEV_PASSWORD")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
        if let Some(p) = password {
            cmd.env("CAIRN_DEV_PASSWORD", p);
        }
        let child = KillOnDrop(cmd.spawn().unwrap());
        // "REST API at http://127.0.0.1:PORT/: user admin, password XYZ (…)"
        let (url, shown) = wait_for(Duration::from_secs(60), "cairn dev's REST banner", || {
            let text = std::fs::read_to_string(&log_path).ok()?;
            let line = text.lines().find(|l| l.starts_with("REST API at "))?;
            let rest = line.strip_prefix("REST API at ")?;
            let (url, tail) = rest.split_once("/: ")?;
            let shown = tail
                .strip_prefix("user admin, password ")
                .and_then(|t| t.split_whitespace().next())
                .map(str::to_string);
            Some((url.to_string(), shown))
        });
        (child, url, shown)
    };
    let (dev, url, shown) = run(None, "dev1.log");
    let generated = shown.expect("a generated password is printed");
    assert!(generated.len() >= 16, "{generated}");
    let get = |url: &str, p: &str| {
        http::request(
            "GET",
            &format!("{url}/"),
            &[("Authorization", &basic("admin", p))],
            b"",
        )
    };
    let ok = get(&url, &generated);
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.content_type(), media("Cloud"));
    assert_eq!(get(&url, "guess").status, 401);
    let users = std::fs::read_to_string(data.join("users.toml")).unwrap();
    assert!(!users.contains(&generated), "only the hash is kept");
    // The dashboard's address is printed with the same user, and it answers there.
    let banner = std::fs::read_to_string(dir.path().join("dev1.log")).unwrap();
    assert!(
        banner.contains(&format!(
            "Dashboard at {url}/ui/ (user admin, password {generated})"
        )),
        "{banner}"
    );
    let login = http::request("GET", &format!("{url}/ui/login"), &[], b"");
    assert_eq!(login.status, 200);
    assert!(login.text().contains("name=\"password\""));
    drop(dev);

    let (dev, url, shown) = run(Some("chosen-password-1"), "dev2.log");
    assert_eq!(shown, None, "a chosen password is not printed");
    assert_eq!(get(&url, "chosen-password-1").status, 200);
    assert_eq!(
        get(&url, &generated).status,
        401,
        "the old password is gone"
    );
    drop(dev);
}
