//! Hosts, agents and jobs for the end-to-end tests: hardware nodes as temporary
//! directories (Virtuozzo-style or plain), agents started with their own host-bound tokens,
//! and the CLI calls that queue, follow and read jobs and backups.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::{noise, wait_for, Agent, Node, TestCluster};

/// The nodes' URLs as an agent config's `cluster` list.
pub fn urls(c: &TestCluster) -> String {
    let list: Vec<String> = c.nodes.iter().map(|n| format!("{:?}", n.url)).collect();
    format!("[{}]", list.join(", "))
}

/// Issues an agent token for `host`.
pub fn agent_token(node: &Node, host: &str) -> String {
    node.ok(&["agent", "token", "create", host])
        .trim()
        .to_string()
}

/// Starts an agent for `host` with `discovery` TOML (the `[discovery]` table's lines) and
/// extra top-level lines, with a new token issued for it.
pub fn start_agent(c: &TestCluster, dir: &Path, host: &str, extra: &str, discovery: &str) -> Agent {
    let token = agent_token(&c.nodes[0], host);
    start_agent_with(c, dir, host, &token, extra, discovery)
}

/// Like [`start_agent`], with the agent token given.
pub fn start_agent_with(
    c: &TestCluster,
    dir: &Path,
    host: &str,
    token: &str,
    extra: &str,
    discovery: &str,
) -> Agent {
    let text = format!(
        "cluster = {}\nhost_id = \"{host}\"\nstate_dir = \"{}\"\ntoken = \"{token}\"\nregister_interval_ms = 1000\n{extra}\n[discovery]\n{discovery}\n",
        urls(c),
        dir.join(format!("{host}-state")).display()
    );
    Agent::start(&dir.join(format!("agent-{host}")), &text)
}

pub fn json(node: &Node, args: &[&str]) -> Value {
    let out = node.ok(args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

pub fn eid_of(envs: &[(String, String)], name: &str) -> String {
    envs.iter()
        .find(|(n, _)| n == name)
        .map(|(_, e)| e.clone())
        .unwrap_or_else(|| panic!("no environment {name} in {envs:?}"))
}

pub fn job(node: &Node, id: &str) -> Value {
    json(node, &["jobs", "show", id, "--json"])
}

/// Creates a job with `--no-wait` and returns its id.
pub fn submit(node: &Node, args: &[&str]) -> String {
    let mut a = args.to_vec();
    a.push("--no-wait");
    node.ok(&a).trim().to_string()
}

/// Waits until the job ends and returns it.
pub fn finished(node: &Node, id: &str, timeout: Duration) -> Value {
    wait_for(timeout, "the job to end", || {
        let j = job(node, id);
        matches!(
            j["state"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        )
        .then_some(j)
    })
}

pub fn succeeded(node: &Node, id: &str) -> Value {
    let j = finished(node, id, Duration::from_secs(120));
    assert_eq!(j["state"], "succeeded", "job {id}: {j:#}");
    j
}

pub fn backups(node: &Node, eid: &str) -> Vec<Value> {
    json(node, &["backups", "list", "--env", eid, "--json"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A Virtuozzo-style host: `/vz/private/<CTID>` areas and `/etc/vz/conf/<CTID>.conf`.
pub fn vz_host(root: &Path, cts: &[(&str, usize)]) -> (PathBuf, PathBuf) {
    let private = root.join("vz/private");
    let conf = root.join("etc/vz/conf");
    std::fs::create_dir_all(&conf).unwrap();
    for (i, (ct, size)) in cts.iter().enumerate() {
        let area = private.join(ct);
        std::fs::create_dir_all(area.join("etc")).unwrap();
        std::fs::write(area.join("etc/motd"), format!("container {ct}\n")).unwrap();
        std::fs::write(area.join("data.bin"), noise(*size, 100 + i as u64)).unwrap();
        std::fs::write(
            conf.join(format!("{ct}.conf")),
            format!(
                "# container {ct}\nHOSTNAME=\"{ct}.example.com\"\nIP_ADDRESS=\"10.0.0.{} 10.0.1.{}\"\nOSTEMPLATE=\"debian-12-x86_64\"\nNAME='Site {ct}'\nDESCRIPTION=\"web\"\nVE_PRIVATE=\"{}/$VEID\"\n",
                i + 10,
                i + 10,
                private.display()
            ),
        )
        .unwrap();
    }
    (private, conf)
}

pub fn vz_discovery(private: &Path, conf: &Path) -> String {
    format!(
        "[discovery.vz]\nprivate_root = \"{}\"\nconf_dir = \"{}\"\n",
        private.display(),
        conf.display()
    )
}

/// Subdirectories of `dir`, each an environment with some data.
pub fn dir_host(dir: &Path, names: &[&str], size: usize) {
    for (i, n) in names.iter().enumerate() {
        let d = dir.join(n);
        std::fs::create_dir_all(d.join("etc")).unwrap();
        std::fs::write(d.join("etc/hostname"), format!("{n}\n")).unwrap();
        std::fs::write(d.join("blob"), noise(size, 200 + i as u64)).unwrap();
    }
}
