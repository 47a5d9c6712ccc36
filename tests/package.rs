//! The Debian package, as an operator meets it: built by `scripts/build-deb.sh` from the binary
//! under test, installed with dpkg into a throwaway root (copy-on-write overlays over this
//! machine's /usr and /etc: see `cairn_tests::install`), its systemd units checked with
//! `systemd-analyze verify` and `security`, its maintainer scripts' user, directories and
//! modes, an upgrade over itself, and a purge that keeps the data. Needs root.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cairn_tests::cairn_bin;
use cairn_tests::install::InstallRoot;

const UNITS: [&str; 3] = [
    "cairn-node.service",
    "cairn-agent.service",
    "cairn-gateway.service",
];

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds the package from the binary under test; returns its path.
fn build_deb(out: &Path) -> PathBuf {
    let o = Command::new(workspace().join("scripts/build-deb.sh"))
        .arg("--binary")
        .arg(cairn_bin())
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "build-deb.sh: {}", text(&o));
    PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The uid and gid of `name` in the root's passwd file.
fn passwd_entry(root: &InstallRoot, name: &str) -> Option<(u32, u32, String)> {
    let passwd = std::fs::read_to_string(root.join("/etc/passwd")).unwrap();
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f[0] == name).then(|| {
            (
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
                f[6].to_string(),
            )
        })
    })
}

fn mode_owner(p: &Path) -> (u32, u32, u32) {
    let m = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.permissions().mode() & 0o7777, m.uid(), m.gid())
}

#[test]
fn the_package_installs_hardened_units_a_system_user_and_private_directories_and_a_purge_keeps_the_data(
) {
    let tmp = tempfile::tempdir().unwrap();
    let deb = build_deb(tmp.path());
    assert!(deb.exists(), "{}", deb.display());

    // What it holds.
    let contents = text(
        &Command::new("dpkg-deb")
            .arg("-c")
            .arg(&deb)
            .output()
            .unwrap(),
    );
    for want in [
        "./usr/bin/cairn",
        "./lib/systemd/system/cairn-node.service",
        "./lib/systemd/system/cairn-agent.service",
        "./lib/systemd/system/cairn-gateway.service",
        "./usr/share/doc/cairn/README.md",
        "./usr/share/doc/cairn/cairn-help.txt",
    ] {
        assert!(contents.contains(want), "{want} missing from\n{contents}");
    }

    let root = InstallRoot::new();
    let o = root.dpkg(&["-i", deb.to_str().unwrap()]);
    assert!(o.status.success(), "dpkg -i: {}", text(&o));

    // The maintainer scripts made a system user with no login, and the directories with the
    // owners and modes the units expect; the host's own passwd file is untouched.
    let (uid, gid, shell) = passwd_entry(&root, "cairn").expect("postinst made the cairn user");
    assert!(uid < 1000, "a system user: uid {uid}");
    assert_eq!(shell, "/usr/sbin/nologin");
    assert!(!passwd_entry_on_host("cairn"), "the host is untouched");
    assert_eq!(mode_owner(&root.join("/etc/cairn")), (0o750, 0, gid));
    assert_eq!(mode_owner(&root.join("/var/lib/cairn")), (0o750, uid, gid));
    assert_eq!(
        mode_owner(&root.join("/var/lib/cairn-agent")),
        (0o700, 0, 0)
    );

    // The installed binary runs.
    let v = root.run(&["/usr/bin/cairn", "--version"]);
    assert!(
        v.status.success() && text(&v).starts_with("cairn "),
        "{}",
        text(&v)
    );

    // The units load without a warning, start only once configured, and are hardened.
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.path.display()))
        .args(UNITS)
        .output()
        .unwrap();
    assert!(
        verify.status.success() && verify.stderr.is_empty() && verify.stdout.is_empty(),
        "systemd-analyze verify: {}",
        text(&verify)
    );
    for (unit, config, most) in [
        ("cairn-node.service", "node.toml", 2.0),
        ("cairn-gateway.service", "gateway.toml", 2.0),
        // Root with the capabilities restore needs; everything else taken away.
        ("cairn-agent.service", "agent.toml", 4.0),
    ] {
        let path = root.join(&format!("/lib/systemd/system/{unit}"));
        let body = std::fs::read_to_string(&path).unwrap();
        assert!(
            body.contains(&format!("ConditionPathExists=/etc/cairn/{config}")),
            "{unit} must not start unconfigured"
        );
        let sec = Command::new("systemd-analyze")
            .args(["security", "--offline=true"])
            .arg(&path)
            .output()
            .unwrap();
        let out = text(&sec);
        let score: f64 = out
            .lines()
            .find_map(|l| {
                l.split_once("Overall exposure level for ")?
                    .1
                    .split(": ")
                    .nth(1)
            })
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level for {unit}: {out}"));
        assert!(score <= most, "{unit}: exposure {score} > {most}\n{out}");
    }
    let agent =
        std::fs::read_to_string(root.join("/lib/systemd/system/cairn-agent.service")).unwrap();
    let caps = agent
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the agent names its capabilities");
    assert!(
        !caps.contains("CAP_SYS_ADMIN") && !caps.contains("CAP_NET_ADMIN"),
        "{caps}"
    );

    // An upgrade over itself keeps the user and the directories (postinst runs again with
    // the old version).
    std::fs::write(root.join("/var/lib/cairn/precious"), b"backups").unwrap();
    let o = root.dpkg(&["-i", deb.to_str().unwrap()]);
    assert!(o.status.success(), "reinstall: {}", text(&o));
    assert_eq!(passwd_entry(&root, "cairn").map(|e| e.0), Some(uid));

    // Purge removes the program and keeps data, keys and configuration, saying so.
    std::fs::write(root.join("/etc/cairn/node.toml"), b"node_id = 1\n").unwrap();
    let o = root.dpkg(&["--purge", "cairn"]);
    assert!(o.status.success(), "purge: {}", text(&o));
    assert!(!root.join("/usr/bin/cairn").exists());
    assert!(!root.join("/lib/systemd/system/cairn-node.service").exists());
    assert_eq!(
        std::fs::read(root.join("/var/lib/cairn/precious")).unwrap(),
        b"backups"
    );
    assert!(root.join("/etc/cairn/node.toml").exists());
    assert!(text(&o).contains("kept /var/lib/cairn"), "{}", text(&o));
}

fn passwd_entry_on_host(name: &str) -> bool {
    std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .any(|l| l.split(':').next() == Some(name))
}
