//! The harness Cairn's end-to-end tests share: it starts real `cairn` processes on 127.0.0.1
//! with OS-assigned ports and temporary data directories, and waits on observable conditions
//! with deadlines (never sleep-and-hope).

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
}

impl Node {
    /// Starts a node with data in `data` on a free port and waits until it answers.
    pub fn start(data: &Path) -> Node {
        std::fs::create_dir_all(data).expect("create data dir");
        let config = data.with_extension("toml");
        std::fs::write(
            &config,
            format!(
                "node_id = 1\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n",
                data.display()
            ),
        )
        .expect("write config");
        let mut n = Node {
            child: None,
            data: data.to_path_buf(),
            url: String::new(),
            log: data.with_extension("log"),
            config,
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
        let child = Command::new(cairn_bin())
            .args(["node", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
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
        Command::new(cairn_bin())
            .args(args)
            .env("CAIRN_CLUSTER", &self.url)
            .stdin(Stdio::null())
            .output()
            .expect("run cairn")
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

/// True when the tests run as root (ownership, devices, mounts).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
