//! The file browser of a backup end to end: a node serving the REST API, an agent (host
//! `h1`) that backs up a container tree with nested directories, a file of several chunks, a
//! sparse file, a symlink and hardlinks; then the tree is listed, files downloaded and
//! directories archived through the CLI (`cairn backups ls|cat|get`) and REST
//! (`{backup}/files/{path}`), as an operator, a viewer and nobody; and a chunk corrupted on
//! its only copy makes a download fail instead of answering other bytes.

use std::io::Read;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use cairn_tests::fleet::{eid_of, start_agent, submit, succeeded};
use cairn_tests::http::{self, basic, Resp};
use cairn_tests::{add_user, noise, wait_for, TestCluster};
use serde_json::Value;

const TOKEN: &str = "browse-cluster-t0ken";
const OPERATOR: (&str, &str) = ("ops", "operator-pass-1");
const VIEWER: (&str, &str) = ("watcher", "viewer-pass-1");
const MESSAGES: &str = "application/vnd.com.sun.cloud.common.Messages+json";

const BIG: usize = 8 << 20;
const SPARSE: u64 = 8 << 20;

/// The container's tree; returns the big file's and the sparse file's content.
fn make_tree(root: &Path) -> (Vec<u8>, Vec<u8>) {
    let mkdir = |p: &str| {
        std::fs::create_dir_all(root.join(p)).unwrap();
        std::fs::set_permissions(root.join(p), std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    for d in ["etc/nginx/sites", "data", "www"] {
        mkdir(d);
    }
    std::fs::write(root.join("etc/hostname"), "c1.example\n").unwrap();
    std::fs::set_permissions(
        root.join("etc/hostname"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    // A second name inside `etc`, and one in `www` whose first name is in `data`.
    std::fs::hard_link(root.join("etc/hostname"), root.join("etc/hostname.hard")).unwrap();
    std::fs::write(root.join("data/motd.txt"), "welcome\n").unwrap();
    std::fs::hard_link(root.join("data/motd.txt"), root.join("www/motd.txt")).unwrap();
    std::fs::write(root.join("etc/nginx/nginx.conf"), "worker_processes 2;\n").unwrap();
    for (i, site) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        std::fs::write(
            root.join("etc/nginx/sites").join(site),
            format!("server {i};\n"),
        )
        .unwrap();
    }
    std::os::unix::fs::symlink("etc/hostname", root.join("link")).unwrap();
    let big = noise(BIG, 42);
    std::fs::write(root.join("data/big.bin"), &big).unwrap();
    let sparse = std::fs::File::create(root.join("data/sparse.img")).unwrap();
    sparse.set_len(SPARSE).unwrap();
    sparse.write_all_at(&noise(100 << 10, 7), 3 << 20).unwrap();
    drop(sparse);
    let sparse = std::fs::read(root.join("data/sparse.img")).unwrap();
    (big, sparse)
}

/// What an archive holds: path → (type, mode, link target, content).
type Archive = std::collections::BTreeMap<String, (tar::EntryType, u32, Option<String>, Vec<u8>)>;

fn read_tar(bytes: &[u8]) -> Archive {
    let mut out = Archive::new();
    let mut a = tar::Archive::new(bytes);
    for e in a.entries().expect("a tar archive") {
        let mut e = e.expect("an archive entry");
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let h = e.header().clone();
        let link = e
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().into_owned());
        let mut body = Vec::new();
        e.read_to_end(&mut body).unwrap();
        out.insert(path, (h.entry_type(), h.mode().unwrap(), link, body));
    }
    out
}

fn get(url: &str, who: Option<(&str, &str)>) -> Resp {
    let auth = who.map(|(u, p)| basic(u, p));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    http::request("GET", url, &headers, b"")
}

fn assert_messages(r: &Resp, status: u16, code: &str, field: Option<&str>) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.content_type(), MESSAGES, "{}", r.text());
    let m = r.json();
    assert_eq!(m["message"][0]["code"], code, "{m}");
    if let Some(f) = field {
        assert_eq!(m["message"][0]["field"], f, "{m}");
    }
}

fn names(listing: &Value) -> Vec<String> {
    listing["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

/// The checks an archive of `etc` passes, whoever made it.
fn check_etc_archive(a: &Archive) {
    use tar::EntryType as T;
    let paths: Vec<&str> = a.keys().map(String::as_str).collect();
    assert_eq!(
        paths,
        [
            "etc",
            "etc/hostname",
            "etc/hostname.hard",
            "etc/nginx",
            "etc/nginx/nginx.conf",
            "etc/nginx/sites",
            "etc/nginx/sites/a",
            "etc/nginx/sites/b",
            "etc/nginx/sites/c",
            "etc/nginx/sites/d",
            "etc/nginx/sites/e",
        ]
    );
    assert_eq!(a["etc"].0, T::Directory);
    assert_eq!(a["etc"].1, 0o755);
    assert_eq!(
        a["etc/hostname"],
        (T::Regular, 0o640, None, b"c1.example\n".to_vec())
    );
    assert_eq!(
        a["etc/hostname.hard"],
        (T::Link, 0o640, Some("etc/hostname".to_string()), vec![])
    );
    assert_eq!(a["etc/nginx/sites/c"].3, b"server 2;\n");
}

#[test]
fn a_backup_is_browsed_through_the_cli_and_rest() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    add_user(&users, OPERATOR.0, "operator", OPERATOR.1);
    add_user(&users, VIEWER.0, "viewer", VIEWER.1);
    let extra = format!(
        "[gateway]\nusers_file = \"{}\"\n[gateway.rest]\nlisten = \"127.0.0.1:0\"\n",
        users.display()
    );
    let cluster = TestCluster::start_with_token(dir.path(), 1, &extra, Some(TOKEN));
    let node = &cluster.nodes[0];
    let rest = wait_for(Duration::from_secs(30), "the REST listener", || {
        let log = std::fs::read_to_string(&node.log).ok()?;
        let at = log.find("REST API (Sun Cloud API) at ")?;
        let rest = &log[at + "REST API (Sun Cloud API) at ".len()..];
        Some(
            rest.lines()
                .next()?
                .trim()
                .trim_end_matches('/')
                .to_string(),
        )
    });
    let containers = dir.path().join("containers");
    let (big, sparse) = make_tree(&containers.join("c1"));
    let _agent = start_agent(
        &cluster,
        dir.path(),
        "h1",
        "",
        &format!("dirs = [\"{}\"]", containers.display()),
    );
    let eid = eid_of(&node.envs(Some("h1"), 1), "c1");
    let job = submit(node, &["backup", "--env", &eid]);
    let done = succeeded(node, &job);
    let backup = done["result"]["backup"].as_str().unwrap().to_string();
    let stamp = backup.rsplit('/').next().unwrap().to_string();

    // ---- The CLI (as the cluster's admin token). ----
    let root = node.ok(&["backups", "ls", &backup]);
    let lines: Vec<&str> = root.lines().collect();
    assert_eq!(lines.len(), 4, "{root}");
    assert!(
        lines[0].starts_with("drwxr-xr-x ") && lines[0].ends_with("  data"),
        "{root}"
    );
    assert!(
        lines[1].starts_with("drwxr-xr-x ") && lines[1].ends_with("  etc"),
        "{root}"
    );
    assert!(
        lines[2].starts_with("lrwxrwxrwx ") && lines[2].ends_with("  link -> etc/hostname"),
        "{root}"
    );
    assert!(lines[3].ends_with("  www"), "{root}");
    let etc: Value =
        serde_json::from_str(&node.ok(&["backups", "ls", &backup, "etc", "--json"])).unwrap();
    assert_eq!(names(&etc), ["hostname", "hostname.hard", "nginx"]);
    assert_eq!(etc["entries"][0]["size"], 11);
    assert_eq!(etc["entries"][0]["mode"], 0o640);
    assert_eq!(etc["entries"][1]["kind"], "Hardlink");
    assert_eq!(etc["entries"][1]["link_target"], "etc/hostname");
    assert_eq!(etc["next"], Value::Null);
    let data = node.ok(&["backups", "ls", &backup, "/data/"]);
    assert!(
        data.contains(&format!(" {BIG} ")) && data.contains("  big.bin"),
        "{data}"
    );
    assert!(
        data.contains(&format!(" {SPARSE} ")) && data.contains("  sparse.img"),
        "{data}"
    );

    let out = node.cairn(&["backups", "cat", &backup, "data/big.bin"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == big, "cat returns the big file's bytes");
    let out = node.cairn(&["backups", "cat", &backup, "data/sparse.img"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == sparse,
        "cat returns the sparse file, holes as zeros"
    );
    let one = node.ok(&["backups", "ls", &backup, "link"]);
    assert!(
        one.starts_with("lrwxrwxrwx ") && one.trim_end().ends_with("  link -> etc/hostname"),
        "{one}"
    );
    let out = node.cairn(&["backups", "cat", &backup, "www/motd.txt"]);
    assert_eq!(out.stdout, b"welcome\n");

    let archive = dir.path().join("etc.tar");
    let archive_arg = archive.display().to_string();
    node.ok(&[
        "backups",
        "get",
        &backup,
        "etc",
        "--tar",
        "-o",
        &archive_arg,
    ]);
    check_etc_archive(&read_tar(&std::fs::read(&archive).unwrap()));
    let www = node.cairn(&["backups", "get", &backup, "www", "--tar", "-o", "-"]);
    assert!(www.status.success());
    let www = read_tar(&www.stdout);
    // Its first name is outside the archive: the second one carries the content.
    assert_eq!(www["www/motd.txt"].0, tar::EntryType::Regular);
    assert_eq!(www["www/motd.txt"].3, b"welcome\n");

    // Refusals, by exit code and stable code.
    let out = node.cairn(&["backups", "cat", &backup, "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .trim_end()
        .ends_with("[E1023]"));
    let out = node.cairn(&["backups", "cat", &backup, "../etc/passwd"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a path out of the backup is bad usage"
    );
    let out = node.cairn(&["backups", "cat", &backup, "etc"]);
    assert_eq!(out.status.code(), Some(1), "a directory is not a file");
    let viewer = node.ok(&["token", "create", "viewer-t", "--role", "viewer"]);
    let out = node.cairn_as(
        Some(viewer.trim()),
        &["backups", "cat", &backup, "etc/hostname"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .trim_end()
        .ends_with("[E1009]"));
    assert!(out.stdout.is_empty());

    // ---- REST (as the operator). ----
    let files = format!("{rest}/vms/{eid}/backups/{stamp}/files");
    let r = get(&files, Some(OPERATOR));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.content_type(), "application/json");
    let top = r.json();
    assert_eq!(top["dir"]["path"], "");
    assert_eq!(top["dir"]["kind"], "Dir");
    assert_eq!(names(&top), ["data", "etc", "link", "www"]);
    assert_eq!(top["entries"][2]["link_target"], "etc/hostname");
    assert_eq!(top["entries"][1]["uri"], format!("{files}/etc"));
    assert_eq!(top["next"], Value::Null);

    // Pages of two walk every child once.
    let mut url = format!("{files}/etc/nginx/sites?limit=2");
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let r = get(&url, Some(OPERATOR));
        assert_eq!(r.status, 200, "{}", r.text());
        let page = r.json();
        pages += 1;
        assert!(page["entries"].as_array().unwrap().len() <= 2);
        seen.extend(names(&page));
        match page["next_uri"].as_str() {
            Some(next) => url = next.to_string(),
            None => break,
        }
    }
    assert_eq!(seen, ["a", "b", "c", "d", "e"]);
    assert_eq!(pages, 3);

    let r = get(&format!("{files}/data/big.bin"), Some(OPERATOR));
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type(), "application/octet-stream");
    assert_eq!(r.header("content-length"), Some(BIG.to_string().as_str()));
    assert!(r.body == big, "REST returns the big file's bytes");
    let r = get(&format!("{files}/data/sparse.img"), Some(OPERATOR));
    assert!(
        r.status == 200 && r.body == sparse,
        "REST returns the sparse file"
    );
    let r = get(&format!("{files}/etc?format=tar"), Some(OPERATOR));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.content_type(), "application/x-tar");
    assert!(r
        .header("content-disposition")
        .is_some_and(|d| d.contains("\"etc.tar\"")));
    check_etc_archive(&read_tar(&r.body));
    let r = get(&format!("{files}?format=tar"), Some(OPERATOR));
    let whole = read_tar(&r.body);
    assert!(whole["data/big.bin"].3 == big && whole["data/sparse.img"].3 == sparse);
    assert_eq!(whole["link"].2.as_deref(), Some("etc/hostname"));

    // Who may, and what is refused.
    assert_messages(&get(&files, Some(VIEWER)), 403, "forbidden", None);
    assert_messages(
        &get(&format!("{files}/data/big.bin"), Some(VIEWER)),
        403,
        "forbidden",
        None,
    );
    assert_messages(&get(&files, None), 401, "unauthenticated", None);
    for bad in ["../etc/passwd", "%2E%2E/etc/passwd", "etc/./hostname"] {
        let r = get(&format!("{files}/{bad}"), Some(OPERATOR));
        assert_messages(&r, 400, "invalid_value", Some("path"));
    }
    assert_messages(
        &get(&format!("{files}/nope"), Some(OPERATOR)),
        404,
        "not_found",
        None,
    );
    assert_messages(
        &get(&format!("{files}/data/big.bin?format=tar"), Some(OPERATOR)),
        400,
        "invalid_value",
        None,
    );
    assert_messages(
        &get(&format!("{files}?limit=0"), Some(OPERATOR)),
        400,
        "invalid_value",
        Some("limit"),
    );
    let ghost = format!("{rest}/vms/{eid}/backups/20000101000000/files");
    assert_messages(&get(&ghost, Some(OPERATOR)), 404, "not_found", None);

    // ---- A chunk of the big file corrupted on its only copy. ----
    let window = &big[6 << 20..(6 << 20) + 64];
    let mut flipped = false;
    for pack in node.pack_files() {
        let bytes = std::fs::read(&pack).unwrap();
        if let Some(at) = bytes.windows(64).position(|w| w == window) {
            let f = std::fs::OpenOptions::new().write(true).open(&pack).unwrap();
            f.write_all_at(&[bytes[at + 10] ^ 0x40], (at + 10) as u64)
                .unwrap();
            f.sync_all().unwrap();
            flipped = true;
        }
    }
    assert!(
        flipped,
        "the big file's bytes are stored as they are (noise does not compress)"
    );
    let out = node.cairn(&["backups", "cat", &backup, "data/big.bin"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a corrupt chunk fails the download"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .trim_end()
            .ends_with("[E1005]"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.len() < big.len() && big.starts_with(&out.stdout),
        "only verified bytes, never others"
    );
    let partial = dir.path().join("big.out");
    let out = node.cairn(&[
        "backups",
        "get",
        &backup,
        "data/big.bin",
        "-o",
        &partial.display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!partial.exists(), "a failed download leaves no file");
    // Over REST: an error answer, or a body cut short of its Content-Length.
    let (_, host, path) = http::split_url(&format!("{files}/data/big.bin"));
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAuthorization: {}\r\n\r\n",
        basic(OPERATOR.0, OPERATOR.1)
    );
    let raw = http::exchange(&host, req.as_bytes(), None);
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer")
        + 4;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    if head.starts_with("HTTP/1.1 200") {
        let body = &raw[end..];
        assert!(
            body.len() < big.len() && big.starts_with(body),
            "cut short, never other bytes"
        );
    } else {
        let r = http::parse(&raw).unwrap();
        assert_messages(&r, 500, "internal", None);
    }
    // The listing does not read content: it still works.
    assert_eq!(get(&files, Some(OPERATOR)).status, 200);
}
