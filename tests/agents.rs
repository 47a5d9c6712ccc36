//! Agents on hardware nodes, with real processes: 3 `cairn node` voters and `cairn agent`s,
//! each agent with its own host-bound token. Jobs are created on one node and watched on
//! another; every wait is on an observable condition with a deadline.

use std::path::Path;
use std::time::Duration;

use cairn_tests::fleet::{
    agent_token, backups, dir_host, eid_of, finished, job, json, start_agent, submit, succeeded,
    urls, vz_discovery, vz_host,
};
use cairn_tests::{noise, wait_for, Agent, TestCluster};
use serde_json::Value;

const TOKEN: &str = "cluster-t0ken";

/// Also checks "Each agent runs `max_jobs` jobs at once": h1 (`max_jobs = 4`) runs its four
/// jobs at once, h2 (`max_jobs = 2`) never more than two of its four.
#[test]
fn jobs_reach_their_agent_report_progress_and_run_concurrently() {
    let dir = tempfile::tempdir().unwrap();
    let c = TestCluster::start_with_token(&dir.path().join("c"), 3, "", Some(TOKEN));
    // Host h1: four Virtuozzo containers (one big enough to watch progress) and a broken
    // config; host h2: four plain directories.
    let (private, conf) = vz_host(
        &dir.path().join("h1"),
        &[
            ("101", 24 << 20),
            ("102", 1 << 20),
            ("103", 1 << 20),
            ("104", 1 << 20),
        ],
    );
    std::fs::write(conf.join("105.conf"), "HOSTNAME=\"unterminated\n").unwrap();
    std::fs::create_dir_all(private.join("105")).unwrap();
    let h2_dirs = dir.path().join("h2");
    dir_host(&h2_dirs, &["a", "b", "c", "d"], 2 << 20);
    let a1 = start_agent(
        &c,
        dir.path(),
        "h1",
        "max_jobs = 4\nupload_limit_bytes_per_sec = 8000000\nreport_interval_ms = 300",
        &vz_discovery(&private, &conf),
    );
    let _a2 = start_agent(
        &c,
        dir.path(),
        "h2",
        "max_jobs = 2",
        &format!("dirs = [\"{}\"]", h2_dirs.display()),
    );
    let h1 = c.nodes[1].envs(Some("h1"), 4);
    let h2 = c.nodes[2].envs(Some("h2"), 4);
    assert!(
        a1.log().contains("105") && a1.log().contains("container skipped"),
        "the broken config is logged: {}",
        a1.log()
    );

    // A job created on node 3, watched on node 2: progress rises while it runs.
    let big = eid_of(&h1, "101");
    let id = submit(&c.nodes[2], &["backup", "--env", &big]);
    // A second job for the busy environment is a conflict.
    let out = c.nodes[0].cairn(&["backup", "--env", &big, "--no-wait"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already has a backup job"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut seen: Vec<u64> = Vec::new();
    let done = wait_for(Duration::from_secs(120), "the backup job to end", || {
        let j = job(&c.nodes[1], &id);
        if j["state"] == "running" {
            let p = j["progress"]["percent"].as_u64().unwrap();
            if seen.last() != Some(&p) {
                seen.push(p);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        (j["state"] != "running" && j["state"] != "queued").then_some(j)
    });
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_eq!(done["host"], "h1");
    let rising: Vec<u64> = seen
        .iter()
        .copied()
        .filter(|p| (1..100).contains(p))
        .collect();
    assert!(
        rising.len() >= 2 && rising.windows(2).all(|w| w[0] < w[1]),
        "progress rises while the job runs: {seen:?}"
    );
    let backup_id = done["result"]["backup"].as_str().unwrap().to_string();
    // The job's log, as the catalog wrote it: who asked, the host that ran it, the phases
    // its agent reported, the commit and the result, in that order.
    let log: Vec<String> = done["log"]
        .as_array()
        .expect("a log")
        .iter()
        .map(|l| {
            assert!(l["at"].is_string(), "{l}");
            format!(
                "{} {}",
                l["level"].as_str().unwrap(),
                l["text"].as_str().unwrap()
            )
        })
        .collect();
    let at = |prefix: &str| {
        log.iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?} in {log:#?}"))
    };
    let asked = at(&format!(
        "info backup of environment {big} for host \"h1\" asked by "
    ));
    let started = at("info started: claimed by the agent of host \"h1\"");
    let phase = at("info phase: ");
    let committed = at(&format!("info backup {backup_id} committed: "));
    let ended = at(&format!("info succeeded (backup {backup_id})"));
    assert_eq!(asked, 0, "{log:#?}");
    assert!(
        started < phase && phase < committed && committed < ended,
        "{log:#?}"
    );
    assert_eq!(ended, log.len() - 1, "{log:#?}");
    let text = c.nodes[2].ok(&["jobs", "show", &id]);
    assert!(
        text.contains("  log:\n") && text.contains("started: claimed by the agent of host"),
        "{text}"
    );
    let b = json(&c.nodes[0], &["backups", "show", &backup_id, "--json"]);
    assert_eq!(b["env_info"]["hostname"], "101.example.com");
    assert_eq!(
        b["env_info"]["ip"],
        serde_json::json!(["10.0.0.10", "10.0.1.10"])
    );
    assert_eq!(b["env_info"]["os"], "debian-12-x86_64");
    assert_eq!(b["env_info"]["title"], "Site 101");
    assert_eq!(b["host"], "h1");

    // Eight environments on two agents at once. A pre-backup hook holds each job until its
    // agent runs as many jobs as it may (h1: 4, h2: 2), so those run at once for certain;
    // the job records (claimed → finished) then show no agent ran more than its max_jobs.
    let marks = dir.path().join("marks");
    std::fs::create_dir_all(marks.join("h1")).unwrap();
    std::fs::create_dir_all(marks.join("h2")).unwrap();
    let barrier = dir.path().join("barrier.sh");
    std::fs::write(
        &barrier,
        format!(
            "case \"$CAIRN_PATH\" in {}/*) d={m}/h1; n=4;; *) d={m}/h2; n=2;; esac\n\
             touch \"$d/$CAIRN_JOB\"\n\
             while [ \"$(ls \"$d\" | wc -l)\" -lt \"$n\" ]; do sleep 0.05; done\n",
            private.display(),
            m = marks.display()
        ),
    )
    .unwrap();
    c.nodes[0].ok(&[
        "config",
        "set",
        "--pre-hook",
        &format!("sh {}", barrier.display()),
    ]);
    let ids: Vec<String> = h1
        .iter()
        .chain(h2.iter())
        .map(|(_, eid)| submit(&c.nodes[0], &["backup", "--env", eid]))
        .collect();
    let records: Vec<Value> = ids.iter().map(|id| succeeded(&c.nodes[1], id)).collect();
    let ms = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    };
    for (host, max_jobs) in [("h1", 4), ("h2", 2)] {
        let spans: Vec<(i64, i64)> = records
            .iter()
            .filter(|j| j["host"] == host)
            .map(|j| (ms(&j["started"]), ms(&j["finished"])))
            .collect();
        assert_eq!(spans.len(), 4, "{host}");
        // The most jobs running at one moment: at some job's start, the jobs begun by then
        // and not yet finished.
        let most = spans
            .iter()
            .map(|&(at, _)| spans.iter().filter(|&&(s, f)| s <= at && at < f).count())
            .max()
            .unwrap();
        assert_eq!(most, max_jobs, "{host} ran {most} jobs at once: {spans:?}");
    }
    for (_, eid) in h1.iter().chain(h2.iter()) {
        assert!(!backups(&c.nodes[0], eid).is_empty(), "{eid} has a backup");
    }

    // Unknown environment: refused in one line.
    let out = c.nodes[0].cairn(&["backup", "--env", "0b8a3a1e-0000-4000-8000-000000000001"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown environment"), "{err}");

    // Agent tokens: one for h1 cannot run an agent for h2, nor delete, nor manage the cluster.
    let h1_token = agent_token(&c.nodes[0], "h1");
    let text = format!(
        "cluster = {}\nhost_id = \"h2\"\nstate_dir = \"{}\"\ntoken = \"{h1_token}\"\n",
        urls(&c),
        dir.path().join("wrong-state").display()
    );
    let mut wrong = Agent::start(&dir.path().join("agent-wrong"), &text);
    let st = wrong.wait_exit(Duration::from_secs(30));
    assert!(!st.success());
    assert!(
        wrong.log().contains("rule agent-own-host"),
        "{}",
        wrong.log()
    );
    let as_agent = |args: &[&str]| {
        std::process::Command::new(cairn_tests::cairn_bin())
            .args(args)
            .env("CAIRN_CLUSTER", &c.nodes[1].url)
            .env("CAIRN_TOKEN", &h1_token)
            .output()
            .unwrap()
    };
    let del = as_agent(&["backups", "delete", &backup_id]);
    assert!(!del.status.success());
    assert!(
        String::from_utf8_lossy(&del.stderr).contains("may not delete"),
        "{}",
        String::from_utf8_lossy(&del.stderr)
    );
    let gc = as_agent(&["gc", "--wait", "1"]);
    assert!(!gc.status.success());
    let other = as_agent(&["backups", "list", "--env", &h2[0].1]);
    assert!(!other.status.success(), "another host's environment");
    let own = as_agent(&["backups", "list", "--env", &big, "--json"]);
    assert!(
        own.status.success(),
        "{}",
        String::from_utf8_lossy(&own.stderr)
    );
    // Revoked tokens stop working.
    c.nodes[0].ok(&["agent", "token", "revoke", "--host", "h1"]);
    wait_for(Duration::from_secs(10), "the revocation to apply", || {
        (!as_agent(&["backups", "list", "--env", &big])
            .status
            .success())
        .then_some(())
    });
}

#[test]
fn a_dead_agent_fails_its_job_after_the_lease_and_the_rerun_sends_only_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let c = TestCluster::start_with_token(
        &dir.path().join("c"),
        3,
        "job_queue_timeout_ms = 6000\nhost_offline_after_ms = 3000",
        Some(TOKEN),
    );
    let envs_dir = dir.path().join("envs");
    dir_host(&envs_dir, &["big"], 32 << 20);
    let discovery = format!("dirs = [\"{}\"]", envs_dir.display());
    let mut agent = start_agent(
        &c,
        dir.path(),
        "h1",
        "lease_ms = 2000\nupload_limit_bytes_per_sec = 6000000",
        &discovery,
    );
    let eid = eid_of(&c.nodes[0].envs(Some("h1"), 1), "big");
    let id = submit(&c.nodes[1], &["backup", "--env", &eid]);
    wait_for(Duration::from_secs(60), "the job to upload", || {
        let j = job(&c.nodes[0], &id);
        (j["state"] == "running" && j["progress"]["bytes_done"].as_u64().unwrap() > 8 << 20)
            .then_some(())
    });
    agent.kill();
    let failed = finished(&c.nodes[2], &id, Duration::from_secs(30));
    assert_eq!(failed["state"], "failed", "{failed:#}");
    assert!(
        failed["reason"].as_str().unwrap().contains("lease"),
        "{failed:#}"
    );
    assert!(backups(&c.nodes[0], &eid).is_empty(), "nothing committed");

    // Host offline: a new job waits with the reason, then times out.
    wait_for(Duration::from_secs(20), "the host to show offline", || {
        let v = json(&c.nodes[0], &["envs", "list", "--json"]);
        (v[0]["host_online"] == false).then_some(())
    });
    let queued = submit(&c.nodes[0], &["backup", "--env", &eid]);
    let j = job(&c.nodes[1], &queued);
    assert_eq!(j["state"], "queued");
    assert!(j["waiting"].as_str().unwrap().contains("offline"), "{j:#}");
    let timed_out = finished(&c.nodes[1], &queued, Duration::from_secs(30));
    assert_eq!(timed_out["state"], "failed");
    assert!(
        timed_out["reason"].as_str().unwrap().contains("no agent"),
        "{timed_out:#}"
    );

    // The agent comes back; the re-run sends only what the first attempt did not.
    agent.restart();
    let rerun = submit(&c.nodes[0], &["backup", "--env", &eid]);
    let done = succeeded(&c.nodes[2], &rerun);
    let details = &done["result"]["details"];
    let sent = details["bytes_sent"].as_u64().unwrap();
    let size = details["logical_size"].as_u64().unwrap();
    assert!(
        sent < size * 3 / 4,
        "the re-run sent {sent} of {size} bytes: {details:#}"
    );
}

#[test]
fn cancel_chain_rules_retention_and_hooks() {
    let dir = tempfile::tempdir().unwrap();
    let c = TestCluster::start_with_token(&dir.path().join("c"), 3, "", Some(TOKEN));
    let envs_dir = dir.path().join("envs");
    dir_host(&envs_dir, &["slow", "web"], 1 << 20);
    std::fs::write(envs_dir.join("slow/blob"), noise(40 << 20, 9)).unwrap();
    let _agent = start_agent(
        &c,
        dir.path(),
        "h1",
        "upload_limit_bytes_per_sec = 4000000",
        &format!("dirs = [\"{}\"]", envs_dir.display()),
    );
    let envs = c.nodes[0].envs(Some("h1"), 2);
    let (slow, web) = (eid_of(&envs, "slow"), eid_of(&envs, "web"));
    let n = &c.nodes[0];

    // Cancel stops a running job and leaves no backup.
    let id = submit(n, &["backup", "--env", &slow]);
    wait_for(Duration::from_secs(60), "the job to run", || {
        let j = job(n, &id);
        (j["state"] == "running" && j["progress"]["bytes_done"].as_u64().unwrap() > 0).then_some(())
    });
    n.ok(&["jobs", "cancel", &id]);
    let j = finished(n, &id, Duration::from_secs(60));
    assert_eq!(j["state"], "cancelled", "{j:#}");
    assert!(
        backups(n, &slow).is_empty(),
        "a cancelled job commits nothing"
    );

    // chain_length 1: full, incremental, then a full again; keep_max 2 keeps the newest two.
    n.ok(&[
        "config",
        "set",
        "--env",
        &web,
        "--chain-length",
        "1",
        "--keep-max",
        "2",
        // The agent commits, so retention spares the grace (7 days) unless it is 0; the
        // grace itself is tested in tests/authz.rs.
        "--retention-grace",
        "0",
    ]);
    let mut kinds = Vec::new();
    for _ in 0..3 {
        let id = submit(n, &["backup", "--env", &web, "--type", "incremental"]);
        let j = succeeded(n, &id);
        let b = j["result"]["backup"].as_str().unwrap().to_string();
        kinds.push(json(n, &["backups", "show", &b, "--json"])["type"].clone());
        std::thread::sleep(Duration::from_millis(1100)); // distinct backup seconds
    }
    assert_eq!(kinds, ["full", "incremental", "full"]);
    let kept = backups(n, &web);
    assert_eq!(kept.len(), 2, "keep_max 2: {kept:#?}");

    // Hooks run in order around the backup.
    let log = dir.path().join("hooks.log");
    let l = log.display().to_string();
    n.ok(&[
        "config",
        "set",
        "--env",
        &web,
        "--pre-hook",
        &format!("echo pre1 \"$CAIRN_EID\" >> {l}"),
        "--pre-hook",
        &format!("echo pre2 >> {l}"),
        "--post-hook",
        &format!("echo post $CAIRN_RESULT >> {l}"),
    ]);
    succeeded(n, &submit(n, &["backup", "--env", &web]));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        format!("pre1 {web}\npre2\npost succeeded\n")
    );
    // A failing pre-hook fails the job without a backup.
    let before = backups(n, &web).len();
    std::fs::remove_file(&log).unwrap();
    n.ok(&[
        "config",
        "set",
        "--env",
        &web,
        "--pre-hook",
        &format!("echo frozen >> {l}; exit 3"),
    ]);
    let j = finished(
        n,
        &submit(n, &["backup", "--env", &web]),
        Duration::from_secs(60),
    );
    assert_eq!(j["state"], "failed");
    assert!(
        j["reason"]
            .as_str()
            .unwrap()
            .contains("exited with status 3"),
        "{j:#}"
    );
    assert_eq!(backups(n, &web).len(), before);
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "frozen\npost failed\n"
    );
    // A hanging hook is killed at its timeout.
    n.ok(&[
        "config",
        "set",
        "--env",
        &web,
        "--pre-hook",
        "sleep 600",
        "--hook-timeout",
        "1",
    ]);
    let started = std::time::Instant::now();
    let j = finished(
        n,
        &submit(n, &["backup", "--env", &web]),
        Duration::from_secs(60),
    );
    assert_eq!(j["state"], "failed");
    assert!(
        j["reason"].as_str().unwrap().contains("within 1 s"),
        "{j:#}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// The tree's files and their contents (relative path → bytes).
fn snapshot(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            if p.is_dir() {
                stack.push(p);
                out.insert(rel + "/", Vec::new());
            } else {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn siblings(envs_dir: &Path) -> Vec<String> {
    std::fs::read_dir(envs_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[test]
fn restores_in_place_atomically_and_selectively() {
    let dir = tempfile::tempdir().unwrap();
    let c = TestCluster::start_with_token(&dir.path().join("c"), 3, "", Some(TOKEN));
    let envs_dir = dir.path().join("envs");
    dir_host(&envs_dir, &["ct"], 1 << 20);
    let ct = envs_dir.join("ct");
    for i in 0..40 {
        std::fs::write(ct.join(format!("etc/f{i}")), noise(512 << 10, 300 + i)).unwrap();
    }
    let mut agent = start_agent(
        &c,
        dir.path(),
        "h1",
        "lease_ms = 2000",
        &format!("dirs = [\"{}\"]", envs_dir.display()),
    );
    let eid = eid_of(&c.nodes[0].envs(Some("h1"), 1), "ct");
    let n = &c.nodes[1];
    let backed = succeeded(n, &submit(n, &["backup", "--env", &eid]));
    let backup_id = backed["result"]["backup"].as_str().unwrap().to_string();
    let original = snapshot(&ct);

    // Change the live tree: modify one file, add one.
    std::fs::write(ct.join("etc/hostname"), "changed\n").unwrap();
    std::fs::write(ct.join("etc/new"), "new\n").unwrap();
    let changed = snapshot(&ct);

    // Selective restore touches only the listed path.
    succeeded(
        n,
        &submit(n, &["restore", "--env", &eid, "--path", "etc/hostname"]),
    );
    assert_eq!(std::fs::read(ct.join("etc/hostname")).unwrap(), b"ct\n");
    assert_eq!(
        std::fs::read(ct.join("etc/new")).unwrap(),
        b"new\n",
        "untouched"
    );

    // In place without force: refused, because the tree changed since the backup.
    let j = finished(
        n,
        &submit(n, &["restore", "--env", &eid]),
        Duration::from_secs(60),
    );
    assert_eq!(j["state"], "failed");
    assert!(
        j["reason"].as_str().unwrap().contains("changed since"),
        "{j:#}"
    );
    assert!(ct.join("etc/new").exists());

    // With force: the backup's tree replaces it whole, and no staging is left behind.
    succeeded(
        n,
        &submit(n, &["restore", &backup_id, "--env", &eid, "--force"]),
    );
    assert_eq!(snapshot(&ct), original);
    assert!(siblings(&envs_dir).is_empty(), "{:?}", siblings(&envs_dir));

    // A crash at a chosen step of the restore (the agent aborts at a failpoint): the target
    // is entirely the original or entirely the restored tree, never a mix; the job fails
    // once its lease passes; the restarted agent cleans up on the next restore.
    let _ = changed;
    for (point, swapped) in [("after_stage", false), ("after_exchange", true)] {
        std::fs::write(ct.join("etc/new"), "new\n").unwrap();
        let before_crash = snapshot(&ct);
        assert_ne!(before_crash, original);
        agent.kill();
        agent.restart_with_env(&[("CAIRN_FAILPOINT", point)]);
        let id = submit(n, &["restore", &backup_id, "--env", &eid, "--force"]);
        let st = agent.wait_exit(Duration::from_secs(120));
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            st.signal(),
            Some(nix::libc::SIGABRT),
            "{point}: the agent aborts at the failpoint ({st}); log:\n{}",
            agent.log()
        );
        assert!(
            agent.log().contains(&format!("failpoint {point}")),
            "{point}"
        );
        let (whole, other) = if swapped {
            (&original, &before_crash)
        } else {
            (&before_crash, &original)
        };
        assert!(
            snapshot(&ct) == *whole,
            "{point}: after the crash the target is wholly the {} tree: {:?}",
            if swapped { "restored" } else { "original" },
            snapshot(&ct).keys().collect::<Vec<_>>()
        );
        // The other tree is the staging sibling: the finished restore before the exchange,
        // the original after it.
        let staging = format!(".ct.cairn-restore-{}", id.replace('-', ""));
        assert_eq!(siblings(&envs_dir), vec![staging.clone()], "{point}");
        assert!(snapshot(&envs_dir.join(&staging)) == *other, "{point}");
        // Nobody renews the lease: the job fails with that reason, also once the agent is
        // back (it does not adopt a job it was running when it died).
        agent.restart();
        let j = finished(n, &id, Duration::from_secs(60));
        assert_eq!(j["state"], "failed", "{point}: {j:#}");
        assert!(
            j["reason"]
                .as_str()
                .unwrap()
                .contains("stopped renewing its lease"),
            "{point}: {j:#}"
        );
        assert!(
            snapshot(&ct) == *whole,
            "{point}: the restart changed nothing"
        );
        // The next restore removes the leftover and puts the backup's tree in place.
        succeeded(
            n,
            &submit(n, &["restore", &backup_id, "--env", &eid, "--force"]),
        );
        assert_eq!(snapshot(&ct), original);
        assert!(siblings(&envs_dir).is_empty(), "{:?}", siblings(&envs_dir));
    }

    // Onto another host, when the original host is gone: h2's agent restores h1's backup.
    agent.kill();
    let h2_dir = dir.path().join("h2");
    dir_host(&h2_dir, &["other"], 1 << 10);
    let _h2 = start_agent(
        &c,
        dir.path(),
        "h2",
        "",
        &format!("dirs = [\"{}\"]", h2_dir.display()),
    );
    n.envs(Some("h2"), 1);
    let target = h2_dir.join("restored-ct");
    let t = target.display().to_string();
    succeeded(
        n,
        &submit(n, &["restore", &backup_id, "--host", "h2", "--to", &t]),
    );
    assert_eq!(snapshot(&target), original);
}

#[test]
fn cairn_dev_runs_an_agent_over_sample_containers() {
    let dir = tempfile::tempdir().unwrap();
    let port = cairn_tests::free_ports(1)[0];
    let url = format!("http://127.0.0.1:{port}");
    let log = std::fs::File::create(dir.path().join("dev.log")).unwrap();
    let mut dev = std::process::Command::new(cairn_tests::cairn_bin())
        .args([
            "dev",
            "--nodes",
            "1",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--rest-listen",
            "127.0.0.1:0",
            "--xml-listen",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(dir.path().join("data"))
        .env_remove("CAIRN_TOKEN")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let cairn = |args: &[&str]| {
        std::process::Command::new(cairn_tests::cairn_bin())
            .args(args)
            .env("CAIRN_CLUSTER", &url)
            .env_remove("CAIRN_TOKEN")
            .output()
            .unwrap()
    };
    let envs: Vec<Value> = wait_for(
        Duration::from_secs(60),
        "the dev agent's environments",
        || {
            let out = cairn(&["envs", "list", "--json"]);
            let v: Value = serde_json::from_slice(&out.stdout).ok()?;
            let list = v.as_array()?.clone();
            (list.len() == 2).then_some(list)
        },
    );
    let eid = envs[0]["eid"].as_str().unwrap().to_string();
    assert_eq!(envs[0]["host"], "dev-host");
    let out = cairn(&["backup", "--env", &eid]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(id.starts_with(&eid), "prints the backup id: {id}");
    let out = cairn(&["restore", "--env", &eid, "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = dev.kill();
    let _ = dev.wait();
}
