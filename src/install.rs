//! A throwaway Debian root for package tests.
//!
//! The host's `/usr` and `/etc` appear under copy-on-write overlays (the host sees none of the
//! changes), `bin`, `sbin`, `lib`, `lib64` link into `usr` as on a merged-/usr Debian, the
//! dpkg database starts as a copy of the host's list of installed packages (so the package's
//! dependencies are met by what the overlays show), and `/dev` and `/proc` are there for the
//! maintainer scripts and the programs run in it. `dpkg --root` installs into it and runs the maintainer scripts chrooted there, so a
//! `useradd` in `postinst` edits the overlay's `/etc/passwd`, never the host's.
//!
//! [`InstallRoot::boot`] then boots the root as a machine: `systemd-nspawn --boot` runs
//! Debian's systemd as its PID 1 (in the test's network namespace for that machine, if any),
//! so the package's units run under the real service manager, with their hardening, their
//! `User=`, `StateDirectory=` and `Restart=`; [`Booted::exec`] runs a command inside it
//! (`nsenter` into its namespaces), as an operator's shell on that machine would.
//!
//! Needs root (it mounts); it fails, never skips, without.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A root file system for one test; unmounted and deleted on drop.
pub struct InstallRoot {
    pub path: PathBuf,
    mounts: Vec<PathBuf>,
    _dir: tempfile::TempDir,
}

impl InstallRoot {
    pub fn new() -> InstallRoot {
        assert!(
            crate::is_root(),
            "needs root: the package tests mount overlays"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root");
        let work = dir.path().join("overlay");
        let mut root = InstallRoot {
            path: path.clone(),
            mounts: Vec::new(),
            _dir: dir,
        };
        for d in [
            "tmp",
            "dev",
            "proc",
            "run",
            "root",
            "var/log",
            "var/lib/dpkg/info",
            "var/lib/dpkg/updates",
        ] {
            std::fs::create_dir_all(path.join(d)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path.join("tmp"), std::fs::Permissions::from_mode(0o1777))
            .unwrap();
        for d in ["bin", "sbin", "lib", "lib64"] {
            if Path::new("/").join(d).exists() {
                std::os::unix::fs::symlink(format!("usr/{d}"), path.join(d)).unwrap();
            }
        }
        for d in ["usr", "etc"] {
            let (upper, wk) = (work.join(d).join("upper"), work.join(d).join("work"));
            std::fs::create_dir_all(&upper).unwrap();
            std::fs::create_dir_all(&wk).unwrap();
            std::fs::create_dir_all(path.join(d)).unwrap();
            let opts = format!(
                "lowerdir=/{d},upperdir={},workdir={}",
                upper.display(),
                wk.display()
            );
            root.mount(&["-t", "overlay", "overlay", "-o", &opts], d);
        }
        root.mount(&["--bind", "/dev"], "dev");
        root.mount(&["--bind", "/proc"], "proc");
        std::fs::copy("/var/lib/dpkg/status", path.join("var/lib/dpkg/status")).unwrap();
        std::fs::write(path.join("var/lib/dpkg/available"), "").unwrap();
        root
    }

    fn mount(&mut self, args: &[&str], at: &str) {
        let target = self.path.join(at);
        let out = Command::new("mount")
            .args(args)
            .arg(&target)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount {args:?} {}: {}",
            target.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        self.mounts.push(target);
    }

    /// The host path of `p`, an absolute path inside the root.
    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p.trim_start_matches('/'))
    }

    /// Runs `dpkg --root=ROOT ARGS`.
    pub fn dpkg(&self, args: &[&str]) -> Output {
        Command::new("dpkg")
            .arg(format!("--root={}", self.path.display()))
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .unwrap()
    }

    /// Runs a command chrooted in the root.
    pub fn run(&self, cmd: &[&str]) -> Output {
        Command::new("chroot")
            .arg(&self.path)
            .args(cmd)
            .output()
            .unwrap()
    }
}

impl InstallRoot {
    /// Boots the root with systemd as PID 1 (`systemd-nspawn --boot`), in the network
    /// namespace `netns` (a name under `/run/netns`) when given, with the console written to
    /// `console`. Returns once systemd has finished starting up. The `/dev` and `/proc` binds
    /// for chroot are given up: the machine has its own.
    pub fn boot(&mut self, netns: Option<&str>, console: &Path) -> Booted {
        for at in ["proc", "dev"] {
            let target = self.path.join(at);
            if let Some(i) = self.mounts.iter().position(|m| *m == target) {
                let ok = Command::new("umount")
                    .arg(&target)
                    .status()
                    .is_ok_and(|s| s.success());
                assert!(ok, "umount {}", target.display());
                self.mounts.remove(i);
            }
        }
        let out = std::fs::File::create(console).unwrap();
        let mut cmd = Command::new("systemd-nspawn");
        cmd.arg("--quiet").arg("-D").arg(&self.path).args([
            "--boot",
            "--register=no",
            "--keep-unit",
        ]);
        if let Some(ns) = netns {
            cmd.arg(format!("--network-namespace-path=/run/netns/{ns}"));
        }
        // Only the basic system: the host's enabled services (the overlay shows the host's
        // /etc) stay off; the test enables and starts the package's units itself.
        cmd.args(["--", "systemd.firstboot=off", "systemd.unit=basic.target"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let nspawn = cmd
            .spawn()
            .expect("systemd-nspawn (Debian package systemd-container)");
        let mut booted = Booted {
            nspawn,
            pid1: 0,
            console: console.to_path_buf(),
        };
        booted.pid1 = crate::wait_for(Duration::from_secs(60), "the machine's systemd", || {
            if let Ok(Some(st)) = booted.nspawn.try_wait() {
                panic!(
                    "systemd-nspawn exited with {st}:\n{}",
                    std::fs::read_to_string(console).unwrap_or_default()
                );
            }
            init_of(booted.nspawn.id())
        });
        // `offline` until systemd answers on its socket, then `starting` until it is done.
        let mut state = String::new();
        let done = |state: &str| state == "running" || state == "degraded";
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done(&state) && Instant::now() < deadline {
            let o = booted.exec(&["systemctl", "is-system-running", "--wait"]);
            state = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if !done(&state) {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        assert!(
            done(&state),
            "the machine did not finish booting ({state}):\n{}",
            booted.console()
        );
        booted
    }
}

/// A booted [`InstallRoot`]: systemd runs as its PID 1. Halted (and, if it does not halt,
/// killed) on drop; drop it before its root.
pub struct Booted {
    nspawn: Child,
    /// The host's pid of the machine's PID 1.
    pid1: u32,
    console: PathBuf,
}

impl Booted {
    /// Runs `cmd` inside the machine: its mounts, root, network, hostname and pids, with
    /// this process's environment.
    pub fn exec(&self, cmd: &[&str]) -> Output {
        self.exec_env(cmd, &[])
    }

    /// Like [`Booted::exec`], with `env` added to the environment.
    pub fn exec_env(&self, cmd: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new("nsenter")
            .arg("-t")
            .arg(self.pid1.to_string())
            .args(["-m", "-u", "-i", "-n", "-p", "-r", "-w"])
            .args(cmd)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `systemctl ARGS` inside the machine; panics with its output (and the unit's journal
    /// when one is named last) if it fails.
    pub fn systemctl(&self, args: &[&str]) -> String {
        let mut cmd = vec!["systemctl"];
        cmd.extend_from_slice(args);
        let o = self.exec(&cmd);
        assert!(
            o.status.success(),
            "systemctl {args:?}: {}{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            args.last().map(|u| self.journal(u)).unwrap_or_default()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The journal of `unit` on this machine, for failure messages.
    pub fn journal(&self, unit: &str) -> String {
        let o = self.exec(&["journalctl", "--no-pager", "-q", "-n", "200", "-u", unit]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The value of a property of `unit` (`systemctl show -p NAME --value`).
    pub fn property(&self, unit: &str, name: &str) -> String {
        self.systemctl(&["show", "-p", name, "--value", unit])
            .trim()
            .to_string()
    }

    /// What the machine printed on its console (its boot).
    pub fn console(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }
}

impl Drop for Booted {
    fn drop(&mut self) {
        // SIGTERM asks nspawn to halt the machine cleanly.
        let _ = Command::new("kill")
            .arg(self.nspawn.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Killing a pid namespace's init kills everything in it.
        let _ = Command::new("kill")
            .args(["-KILL", &self.pid1.to_string()])
            .status();
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}

/// The host pid of the PID 1 of the pid namespace below process `ancestor` (the machine's
/// init), once there is one.
fn init_of(ancestor: u32) -> Option<u32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(str::trim)
                .map(str::to_string)
        };
        let nspid = field("NSpid:").unwrap_or_default();
        let ids: Vec<&str> = nspid.split_whitespace().collect();
        if ids.len() < 2 || ids.last() != Some(&"1") {
            continue;
        }
        // Walk up: is `ancestor` above it?
        let mut p = pid;
        for _ in 0..16 {
            let Some(pp) = std::fs::read_to_string(format!("/proc/{p}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("PPid:"))
                        .and_then(|v| v.trim().parse::<u32>().ok())
                })
            else {
                break;
            };
            if pp == ancestor {
                return Some(pid);
            }
            if pp <= 1 {
                break;
            }
            p = pp;
        }
    }
    None
}

impl Default for InstallRoot {
    fn default() -> Self {
        InstallRoot::new()
    }
}

impl Drop for InstallRoot {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            let ok = Command::new("umount")
                .arg(m)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(m).status();
            }
        }
    }
}
