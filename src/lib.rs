//! The harness Cairn's end-to-end tests share: it starts real `cairn` processes on 127.0.0.1
//! with OS-assigned ports and temporary data directories, and waits on observable conditions
//! with deadlines (never sleep-and-hope).

pub mod fleet;
pub mod http;
pub mod install;
mod layout;
pub mod nemesis;
pub mod webdriver;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `cairn` binary built alongside the tests (`target/<profile>/cairn`).
pub fn cairn_bin() -> PathBuf {
    if let Ok(p) = std::env::var("CAIRN_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/cairn
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target directory");
    let bin = dir.join("cairn");
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --workspace` so the binary is built",
        bin.display()
    );
    bin
}

/// The workspace's one noise generator: `noise(n, seed)` returns `n` incompressible bytes.
pub use cairn_core::testing::noise;

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// A `cairn node` process with its own data directory.
pub struct Node {
    child: Option<Child>,
    pub data: PathBuf,
    pub url: String,
    pub log: PathBuf,
    config: PathBuf,
    /// The cluster token client commands send (`CAIRN_TOKEN`), if the node requires one.
    pub token: Option<String>,
    /// The CA certificate client commands trust (`CAIRN_CA`), for a node speaking TLS.
    pub ca: Option<PathBuf>,
    /// Extra environment of the node process, applied at every (re)start (the nemesis sets
    /// `LD_PRELOAD`/`FAKETIME` here to skew a node's clock).
    pub env: Vec<(String, String)>,
    /// A command the node process runs under, applied at every (re)start: the nemesis puts
    /// each node in a network namespace of its own with `ip netns exec NS`.
    pub wrap: Vec<String>,
}

/// Where a cluster node runs: the address it listens on and advertises, and the command it
/// runs under (empty: directly on this host's loopback).
#[derive(Clone, Debug)]
pub struct Host {
    pub ip: String,
    pub port: u16,
    pub wrap: Vec<String>,
}

impl Host {
    /// `n` loopback hosts on ports that were free a moment ago.
    pub fn loopback(n: usize) -> Vec<Host> {
        free_ports(n)
            .into_iter()
            .map(|port| Host {
                ip: "127.0.0.1".into(),
                port,
                wrap: Vec::new(),
            })
            .collect()
    }
}

impl Node {
    /// Starts a node with data in `data` on a free port and waits until it answers.
    pub fn start(data: &Path) -> Node {
        Node::start_with(
            data,
            &format!(
                "node_id = 1\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n",
                data.display()
            ),
        )
    }

    /// Starts a node with the given config (written next to `data`) and waits until it
    /// answers.
    pub fn start_with(data: &Path, config_text: &str) -> Node {
        Node::start_with_token(data, config_text, None)
    }

    /// Like [`Node::start_with`], for a node that requires the cluster token `token`.
    pub fn start_with_token(data: &Path, config_text: &str, token: Option<&str>) -> Node {
        Node::start_secure(data, config_text, token, None)
    }

    /// Like [`Node::start_with`], with the token and the CA certificate (PEM file) that
    /// client commands need for this node.
    pub fn start_secure(
        data: &Path,
        config_text: &str,
        token: Option<&str>,
        ca: Option<&Path>,
    ) -> Node {
        Node::start_wrapped(data, config_text, token, ca, Vec::new())
    }

    /// Like [`Node::start_secure`], running under `wrap` (see [`Node::wrap`]).
    pub fn start_wrapped(
        data: &Path,
        config_text: &str,
        token: Option<&str>,
        ca: Option<&Path>,
        wrap: Vec<String>,
    ) -> Node {
        std::fs::create_dir_all(data).expect("create data dir");
        let config = data.with_extension("toml");
        std::fs::write(&config, config_text).expect("write config");
        let mut n = Node {
            child: None,
            data: data.to_path_buf(),
            url: String::new(),
            log: data.with_extension("log"),
            config,
            token: token.map(str::to_string),
            ca: ca.map(Path::to_path_buf),
            env: Vec::new(),
            wrap,
        };
        n.restart();
        n
    }

    /// (Re)starts the process and waits until it serves.
    pub fn restart(&mut self) {
        let _ = std::fs::remove_file(self.data.join("node.addr"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open log");
        let mut cmd = match self.wrap.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(cairn_bin());
                c
            }
            None => Command::new(cairn_bin()),
        };
        let child = cmd
            .args(["node", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn cairn node");
        self.child = Some(child);
        let addr_file = self.data.join("node.addr");
        let url = wait_for(Duration::from_secs(60), "the node to serve", || {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!(
                        "cairn node exited with {st}; log:\n{}",
                        std::fs::read_to_string(&self.log).unwrap_or_default()
                    );
                }
            }
            std::fs::read_to_string(&addr_file)
                .ok()
                .map(|s| s.trim().to_string())
        });
        self.url = url;
        wait_for(Duration::from_secs(30), "the node to answer", || {
            self.cairn(&["cluster", "status"])
                .status
                .success()
                .then_some(())
        });
    }

    /// The process id while the process runs (for signals such as SIGSTOP).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Tells whether the process runs: started, not stopped or killed by the harness, and
    /// not exited on its own (a node stops itself when its catalog cannot be written; its
    /// unreaped process is a zombie, state `Z` in `/proc/PID/stat`).
    pub fn is_running(&self) -> bool {
        self.child.as_ref().is_some_and(|c| alive(c.id()))
    }

    /// Kills the process with SIGKILL (no clean shutdown).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the process with SIGTERM and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix_kill(c.id());
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Runs a `cairn` client command against this node.
    pub fn cairn(&self, args: &[&str]) -> Output {
        self.cairn_as(self.token.as_deref(), args)
    }

    /// Runs a `cairn` client command against this node with `token` as `CAIRN_TOKEN` (a
    /// user or agent token; none: no token at all).
    pub fn cairn_as(&self, token: Option<&str>, args: &[&str]) -> Output {
        let mut cmd = Command::new(cairn_bin());
        match token {
            Some(t) => cmd.env("CAIRN_TOKEN", t),
            None => cmd.env_remove("CAIRN_TOKEN"),
        };
        match &self.ca {
            Some(c) => cmd.env("CAIRN_CA", c),
            None => cmd.env_remove("CAIRN_CA"),
        };
        cmd.args(args)
            .env("CAIRN_CLUSTER", &self.url)
            .stdin(Stdio::null())
            .output()
            .expect("run cairn")
    }

    /// Restores backup `id` into `out` through this node and requires the tree to be
    /// identical to `src` (content, types, modes, times, links; not owners, which a test run
    /// as a user cannot set).
    pub fn restore_identical(&self, id: &str, src: &Path, out: &Path) {
        self.ok(&["restore", id, out.to_str().unwrap()]);
        let diffs = cairn_fs::testing::diff_trees(
            src,
            out,
            cairn_fs::testing::DiffOptions {
                owners: false,
                ..Default::default()
            },
        );
        assert!(
            diffs.is_empty(),
            "{id}: the restored tree differs: {diffs:?}"
        );
    }

    /// Runs a `cairn` client command and returns stdout, panicking with stderr on failure.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cairn(args);
        assert!(
            out.status.success(),
            "cairn {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The environments registered (of `host`, or of every host), by name → eid, once there
    /// are `n`.
    pub fn envs(&self, host: Option<&str>, n: usize) -> Vec<(String, String)> {
        let mut args = vec!["envs", "list", "--json"];
        args.extend(host.map(|h| ["--host", h]).into_iter().flatten());
        wait_for(Duration::from_secs(30), "environments to register", || {
            let v: serde_json::Value = serde_json::from_str(&self.ok(&args)).ok()?;
            let list: Vec<(String, String)> = v
                .as_array()?
                .iter()
                .map(|e| {
                    (
                        e["name"].as_str().unwrap().to_string(),
                        e["eid"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            (list.len() == n).then_some(list)
        })
    }

    /// The pack segment files of this node's chunk store.
    pub fn pack_files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.data.join("chunks/packs"))
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

fn nix_kill(pid: u32) -> nix::Result<()> {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Tells whether process `pid` runs: it exists and is not a zombie (state `Z` or `X` in
/// `/proc/PID/stat`: exited, not yet reaped).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// True when the tests run as root (ownership, devices, mounts).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

pub use cairn_fs::testing::require_root;

/// Returns `n` distinct ports that were free a moment ago (the OS picked them). A cluster's
/// nodes must know each other's addresses before they start, so ports cannot be learnt
/// after the fact as a lone node's are.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// A cluster of `cairn node` processes, all raft voters, on free loopback ports.
pub struct TestCluster {
    pub nodes: Vec<Node>,
    /// The `[[voters]]` tables every node's config carries.
    voters: String,
    extra: String,
    token: Option<String>,
    ca: Option<PathBuf>,
}

impl TestCluster {
    /// Starts `n` voters under `dir` (extra config lines in `extra`), and waits until they
    /// agree on a leader and the placement lists all of them.
    pub fn start(dir: &Path, n: usize, extra: &str) -> TestCluster {
        TestCluster::start_with_token(dir, n, extra, None)
    }

    /// Like [`TestCluster::start`], with every node requiring the cluster token `token`.
    pub fn start_with_token(dir: &Path, n: usize, extra: &str, token: Option<&str>) -> TestCluster {
        TestCluster::start_secure(dir, n, extra, token, None)
    }

    /// Like [`TestCluster::start`], with every node requiring the cluster token `token`
    /// and, given `tls = (cert, key)` PEM files, speaking TLS with that certificate (which
    /// is also the CA clients and peers trust).
    pub fn start_secure(
        dir: &Path,
        n: usize,
        extra: &str,
        token: Option<&str>,
        tls: Option<(&Path, &Path)>,
    ) -> TestCluster {
        TestCluster::start_on(dir, Host::loopback(n), extra, token, tls)
    }

    /// Starts one voter per host (ids 1.., in order) under `dir`; see
    /// [`TestCluster::start_secure`].
    pub fn start_on(
        dir: &Path,
        hosts: Vec<Host>,
        extra: &str,
        token: Option<&str>,
        tls: Option<(&Path, &Path)>,
    ) -> TestCluster {
        let scheme = if tls.is_some() { "https://" } else { "" };
        let mut voters = String::new();
        for (i, h) in hosts.iter().enumerate() {
            voters.push_str(&format!(
                "[[voters]]\nid = {}\naddr = \"{scheme}{}:{}\"\nzone = \"z{}\"\n",
                i + 1,
                h.ip,
                h.port,
                i + 1
            ));
        }
        let tls_lines = match tls {
            Some((cert, key)) => format!(
                "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
                cert.display(),
                key.display()
            ),
            None => String::new(),
        };
        let extra = format!("{tls_lines}{extra}");
        let extra = extra.as_str();
        let ca = tls.map(|(cert, _)| cert.to_path_buf());
        // Start all processes first: a node waits for its peers to answer before it is
        // ready, and `Node::start_with` waits for readiness.
        let mut children = Vec::new();
        for (i, h) in hosts.into_iter().enumerate() {
            let data = dir.join(format!("node{}", i + 1));
            let token_line = token
                .map(|t| format!("token = \"{t}\"\n"))
                .unwrap_or_default();
            let text = format!(
                "node_id = {}\nlisten = \"{}:{}\"\ndata_dir = \"{}\"\n{token_line}{extra}\n{voters}",
                i + 1,
                h.ip,
                h.port,
                data.display()
            );
            let token = token.map(str::to_string);
            let ca = ca.clone();
            children.push(std::thread::spawn(move || {
                Node::start_wrapped(&data, &text, token.as_deref(), ca.as_deref(), h.wrap)
            }));
        }
        let nodes = children
            .into_iter()
            .map(|h| h.join().expect("node start"))
            .collect();
        let c = TestCluster {
            nodes,
            voters,
            extra: extra.to_string(),
            token: token.map(str::to_string),
            ca,
        };
        c.wait_formed(Duration::from_secs(60));
        c
    }

    /// Waits until some running node reports a leader, an epoch, and every running node up.
    pub fn wait_formed(&self, timeout: Duration) {
        wait_for(timeout, "the cluster to form", || {
            let s = self.status()?;
            let leader = s["leader"].as_u64()?;
            let nodes = s["nodes"].as_array()?;
            let running: Vec<u64> = self
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.is_running())
                .map(|(i, _)| i as u64 + 1)
                .collect();
            let up = |id: u64| {
                nodes
                    .iter()
                    .any(|n| n["node_id"].as_u64() == Some(id) && n["state"] == "up")
            };
            (s["epoch"].as_u64()? >= 1
                && running.contains(&leader)
                && running.iter().all(|&i| up(i)))
            .then_some(())
        });
    }

    /// `cairn cluster status --json` as seen from the first running node.
    pub fn status(&self) -> Option<serde_json::Value> {
        let n = self.any()?;
        let out = n.cairn(&["cluster", "status", "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// The current leader's id (1-based index into `nodes`), once one is known.
    pub fn leader(&self) -> u64 {
        wait_for(Duration::from_secs(30), "a leader", || {
            let id = self.status()?["leader"].as_u64()?;
            self.nodes
                .get(id as usize - 1)
                .filter(|n| n.is_running())
                .map(|_| id)
        })
    }

    /// Starts a storage-only node with id `nodes.len() + 1` (its config lists the voters but
    /// not itself), not yet added to the cluster; returns its address (`host:port`).
    pub fn start_storage_node(&mut self, dir: &Path) -> String {
        let host = Host::loopback(1).remove(0);
        self.start_storage_node_on(dir, host)
    }

    /// Like [`TestCluster::start_storage_node`], on `host`.
    pub fn start_storage_node_on(&mut self, dir: &Path, host: Host) -> String {
        let id = self.nodes.len() + 1;
        let data = dir.join(format!("node{id}"));
        let token_line = self
            .token
            .as_ref()
            .map(|t| format!("token = \"{t}\"\n"))
            .unwrap_or_default();
        let addr = format!("{}:{}", host.ip, host.port);
        let text = format!(
            "node_id = {id}\nlisten = \"{addr}\"\ndata_dir = \"{}\"\n{token_line}{}\n{}",
            data.display(),
            self.extra,
            self.voters
        );
        self.nodes.push(Node::start_wrapped(
            &data,
            &text,
            self.token.as_deref(),
            self.ca.as_deref(),
            host.wrap,
        ));
        addr
    }

    /// The first node that is running.
    pub fn any(&self) -> Option<&Node> {
        self.nodes.iter().find(|n| n.is_running())
    }

    /// Node `id` (1-based).
    pub fn node(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[id as usize - 1]
    }
}

/// A `cairn agent` process with its config and log next to `dir`.
pub struct Agent {
    child: Option<Child>,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl Agent {
    /// Starts `cairn agent --config` with `config_text` (written to `<dir>.toml`).
    pub fn start(dir: &Path, config_text: &str) -> Agent {
        Agent::start_with_env(dir, config_text, &[])
    }

    /// [`Agent::start`] with extra environment variables (a failpoint directory, say).
    pub fn start_with_env(dir: &Path, config_text: &str, env: &[(&str, &str)]) -> Agent {
        std::fs::create_dir_all(dir).expect("create agent dir");
        let config = dir.with_extension("toml");
        std::fs::write(&config, config_text).expect("write agent config");
        let mut a = Agent {
            child: None,
            config,
            log: dir.with_extension("log"),
        };
        a.restart_with_env(env);
        a
    }

    /// (Re)starts the process.
    pub fn restart(&mut self) {
        self.restart_with_env(&[]);
    }

    /// (Re)starts the process with extra environment variables (a failpoint, say).
    pub fn restart_with_env(&mut self, env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open log");
        let child = Command::new(cairn_bin())
            .args(["agent", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .env_remove("CAIRN_TOKEN")
            .env_remove("CAIRN_FAILPOINT")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn cairn agent");
        self.child = Some(child);
    }

    /// Kills the process with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Tells whether the process runs (started, not killed, not exited on its own).
    pub fn is_running(&self) -> bool {
        self.child.as_ref().is_some_and(|c| alive(c.id()))
    }

    /// Waits for the process to exit on its own and returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let c = self.child.as_mut().expect("agent running");
        let st = wait_for(timeout, "the agent to exit", || c.try_wait().ok().flatten());
        self.child = None;
        st
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `cairn user add NAME --role ROLE` into the users file `users`, the password on stdin.
pub fn add_user(users: &Path, name: &str, role: &str, password: &str) {
    use std::io::Write;
    let mut child = Command::new(cairn_bin())
        .args([
            "user",
            "add",
            name,
            "--role",
            role,
            "--password-stdin",
            "--users-file",
        ])
        .arg(users)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cairn user add");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write the password");
    let out = child.wait_with_output().expect("cairn user add");
    assert!(
        out.status.success(),
        "cairn user add {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts `cairn gateway --config CONFIG` with its output in `log`; killed when dropped.
pub fn start_gateway(config: &Path, log: &Path) -> KillOnDrop {
    let log = std::fs::File::create(log).expect("create the gateway log");
    KillOnDrop(
        Command::new(cairn_bin())
            .args(["gateway", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log"))
            .stderr(log)
            .spawn()
            .expect("start cairn gateway"),
    )
}

/// A child process killed when the test ends, panicking or not.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
