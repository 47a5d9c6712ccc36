//! A throwaway Debian root for package tests.
//!
//! The host's `/usr` and `/etc` appear under copy-on-write overlays (the host sees none of the
//! changes), `bin`, `sbin`, `lib`, `lib64` link into `usr` as on a merged-/usr Debian, the
//! dpkg database starts as a copy of the host's list of installed packages (so the package's
//! dependencies are met by what the overlays show), and `/dev` and `/proc` are there for the
//! maintainer scripts and the programs run in it. `dpkg --root` installs into it and runs the maintainer scripts chrooted there, so a
//! `useradd` in `postinst` edits the overlay's `/etc/passwd`, never the host's.
//!
//! Needs root (it mounts); it fails, never skips, without.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
