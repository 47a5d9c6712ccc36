//! The XML adapter (Virtuozzo Agent XML API `backupm`) over a real TCP socket: `cairn node`
//! processes whose gateway serves it, a `cairn agent` with two containers, and a raw-socket
//! client written here, sharing no code with the server: it writes the spec's example
//! packets by hand and reads answers by splitting on NUL and searching the text.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cairn_tests::{add_user, noise, wait_for, Agent, TestCluster};

const TOKEN: &str = "xml-cluster-t0ken";

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// A raw client: writes bytes, reads NUL-terminated packets.
struct Client {
    s: Box<dyn Stream>,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: &str) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        Client::over(Box::new(s))
    }

    fn over(s: Box<dyn Stream>) -> Client {
        let mut c = Client { s, buf: Vec::new() };
        let greeting = c.packet();
        assert!(
            !greeting.contains("<error") && !greeting.contains(":error"),
            "{greeting}"
        );
        assert!(greeting.contains("packet"), "{greeting}");
        c
    }

    fn send(&mut self, xml: &str) {
        self.s.write_all(xml.as_bytes()).unwrap();
        self.s.write_all(b"\0").unwrap();
    }

    /// The next packet (without its NUL); panics at EOF.
    fn packet(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == 0) {
                let p: Vec<u8> = self.buf.drain(..=i).collect();
                return String::from_utf8(p[..p.len() - 1].to_vec()).unwrap();
            }
            let mut chunk = [0u8; 65536];
            let n = self.s.read(&mut chunk).unwrap();
            assert!(n > 0, "the server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Packets until the final answer to request `id` (progress packets carry type="1").
    fn answer(&mut self, id: &str) -> (String, Vec<String>) {
        let mut progress = Vec::new();
        loop {
            let p = self.packet();
            if !p.contains(&format!("id=\"{id}\"")) {
                continue;
            }
            if p.contains("type=\"1\"") {
                progress.push(p);
            } else {
                return (p, progress);
            }
        }
    }

    fn call(&mut self, id: &str, xml: &str) -> String {
        self.send(xml);
        self.answer(id).0
    }

    fn login(&mut self, user: &str, password: &str) -> String {
        self.call(
            "login1",
            &format!(
                "<packet version=\"4.0.0\" id=\"login1\"><data><system><login><name>{}</name><realm>00000000-0000-0000-0000-000000000000</realm><password>{}</password></login></system></data></packet>",
                b64(user),
                b64(password)
            ),
        )
    }
}

/// The text of every `<name>` / `<prefix:name>` start tag's element in a packet, in order.
fn values(p: &str, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = p[at..].find('<') {
        let start = at + i + 1;
        let Some(j) = p[start..].find('>') else { break };
        let tag = &p[start..start + j];
        let local = tag.rsplit(':').next().unwrap_or(tag);
        if !tag.starts_with('/') && !tag.ends_with('/') && local == name {
            let body = &p[start + j + 1..];
            out.push(body[..body.find('<').unwrap_or(body.len())].to_string());
        }
        at = start + j;
    }
    out
}

fn error_code(p: &str) -> Option<u32> {
    if !(p.contains(":error>") || p.contains("<error>")) {
        return None;
    }
    values(p, "code").first().and_then(|c| c.parse().ok())
}

struct Rig {
    dir: tempfile::TempDir,
    _cluster: TestCluster,
    _agent: Agent,
    xml: String,
    /// `localhost:PORT` of the TLS listener, and the CA (the self-signed certificate).
    xml_tls: String,
    ca: PathBuf,
    containers: PathBuf,
    eids: Vec<(String, String)>,
}

fn rig(agent_extra: &str) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    add_user(&users, "admin", "admin", "admin-pass-1");
    add_user(&users, "viewer", "viewer", "viewer-pass-1");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_pem, key_pem) = (dir.path().join("xml.crt"), dir.path().join("xml.key"));
    std::fs::write(&cert_pem, cert.cert.pem()).unwrap();
    std::fs::write(&key_pem, cert.key_pair.serialize_pem()).unwrap();
    let extra = format!(
        "[gateway]\nusers_file = \"{}\"\n[gateway.rest]\nlisten = \"127.0.0.1:0\"\n[gateway.xml]\nlisten = \"127.0.0.1:0\"\nidle_timeout_secs = 3\ntls_listen = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        users.display(),
        cert_pem.display(),
        key_pem.display()
    );
    let cluster = TestCluster::start_with_token(dir.path(), 1, &extra, Some(TOKEN));
    let xml = wait_for(Duration::from_secs(30), "the XML listener", || {
        let log = std::fs::read_to_string(&cluster.nodes[0].log).ok()?;
        let at = log.find("XML API (Virtuozzo backupm) at ")?;
        let rest = &log[at + "XML API (Virtuozzo backupm) at ".len()..];
        Some(rest.lines().next()?.trim().to_string())
    });
    let xml_tls = wait_for(Duration::from_secs(30), "the XML TLS listener", || {
        let log = std::fs::read_to_string(&cluster.nodes[0].log).ok()?;
        let at = log.find("XML API over TLS at ")?;
        let rest = &log[at + "XML API over TLS at ".len()..];
        Some(rest.lines().next()?.trim().to_string())
    });
    let containers = dir.path().join("containers");
    for (name, seed, size) in [("web01", 1, 20 << 20), ("db01", 2, 1 << 20)] {
        let root = containers.join(name);
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/hostname"), format!("{name}.example.net\n")).unwrap();
        std::fs::write(root.join("data.bin"), noise(size, seed)).unwrap();
    }
    let token = cluster.nodes[0]
        .ok(&["agent", "token", "create", "h1"])
        .trim()
        .to_string();
    let agent = Agent::start(
        &dir.path().join("agent-h1"),
        &format!(
            "cluster = [{:?}]\nhost_id = \"h1\"\nstate_dir = \"{}\"\ntoken = \"{token}\"\nregister_interval_ms = 1000\nreport_interval_ms = 200\n{agent_extra}\n[discovery]\ndirs = [\"{}\"]\n",
            cluster.nodes[0].url,
            dir.path().join("h1-state").display(),
            containers.display()
        ),
    );
    let node = &cluster.nodes[0];
    let eids = wait_for(Duration::from_secs(30), "two environments", || {
        let v: serde_json::Value =
            serde_json::from_str(&node.ok(&["envs", "list", "--json"])).ok()?;
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
        (list.len() == 2).then_some(list)
    });
    Rig {
        dir,
        _cluster: cluster,
        _agent: agent,
        xml,
        xml_tls: format!("localhost:{}", xml_tls.rsplit(':').next().unwrap()),
        ca: cert_pem,
        containers,
        eids,
    }
}

impl Rig {
    fn eid(&self, name: &str) -> String {
        self.eids.iter().find(|e| e.0 == name).unwrap().1.clone()
    }
}

/// The spec's exchanges with a raw socket: greeting, login, backup_env with progress, list
/// with latest, get_info, restore_env with force, remove with prev, search by hostname,
/// get_config/set_config.
#[test]
fn the_spec_exchanges_over_a_raw_socket() {
    let rig = rig("upload_limit_bytes_per_sec = 5000000");
    let web = rig.eid("web01");
    let mut c = Client::connect(&rig.xml);

    // Before login only get_realm is served.
    let refused = c.call(
        "l0",
        "<packet version=\"4.0.0\" id=\"l0\"><target>backupm</target><data><backupm><list/></backupm></data></packet>",
    );
    assert_eq!(error_code(&refused), Some(304), "{refused}");
    let realm = c.call(
        "r1",
        "<packet version=\"4.0.0\" id=\"r1\"><data><system><get_realm/></system></data></packet>",
    );
    assert!(
        realm.contains("00000000-0000-0000-0000-000000000000"),
        "{realm}"
    );
    let wrong = c.login("admin", "nope");
    assert_eq!(error_code(&wrong), Some(305), "{wrong}");
    let ok = c.login("admin", "admin-pass-1");
    assert_eq!(error_code(&ok), None, "{ok}");
    assert!(ok.contains("token"), "{ok}");

    // backup_env with progress (the spec's example packet).
    c.send(&format!(
        "<packet version=\"4.0.0\" id=\"b17\" progress=\"on\"><target>backupm</target><data><backupm>\n  <backup_env><env_list><eid>{web}</eid></env_list>\n    <backup_options><type>0</type><compression>2</compression>\n      <description>{}</description></backup_options>\n  </backup_env></backupm></data></packet>",
        b64("nightly")
    ));
    let (answer, progress) = c.answer("b17");
    assert!(
        progress.len() >= 2,
        "progress packets arrive first: {progress:?}"
    );
    assert!(progress
        .iter()
        .all(|p| p.contains("priority=\"4000\"") && values(p, "op") == ["backupm.backup_env"]));
    let percents: Vec<u32> = progress
        .iter()
        .flat_map(|p| values(p, "percent"))
        .map(|v| v.parse().unwrap())
        .collect();
    assert!(
        percents.iter().any(|p| (1..100).contains(p)),
        "percent steps: {percents:?}"
    );
    assert_eq!(values(&progress[0], "status"), ["1"], "started first");
    assert_eq!(error_code(&answer), None, "{answer}");
    assert!(answer.starts_with("<?xml"), "{answer}");
    assert!(
        answer.contains("xmlns:ns1=") && answer.contains("<ns2:backup>"),
        "{answer}"
    );
    let id = values(&answer, "id")
        .into_iter()
        .find(|v| v.starts_with(&web))
        .expect("the backup's id");
    assert_eq!(values(&answer, "eid")[0], web);
    assert_eq!(values(&answer, "description")[0], b64("nightly"));
    assert_eq!(values(&answer, "type")[0], "0");
    assert!(values(&answer, "size")[0].parse::<u64>().unwrap() >= 20 << 20);
    assert!(answer.contains("browsable"));
    assert!(
        values(&answer, "message").contains(&b64("web01.example.net")),
        "info carries the hostname: {answer}"
    );

    // A second backup, then list with latest.
    let second = c.call(
        "b18",
        &format!("<packet id=\"b18\"><target>backupm</target><data><backupm><backup_env><env_list><eid>{web}</eid></env_list><backup_options><type>1</type></backup_options></backup_env></backupm></data></packet>"),
    );
    assert_eq!(error_code(&second), None, "{second}");
    let latest_id = values(&second, "id")
        .into_iter()
        .find(|v| v.starts_with(&web))
        .unwrap();
    let list = c.call(
        "l1",
        &format!("<packet id=\"l1\"><target>backupm</target><data><backupm><list><options><eid>{web}</eid><latest/></options></list></backupm></data></packet>"),
    );
    let ids: Vec<String> = values(&list, "id")
        .into_iter()
        .filter(|v| v.contains('/'))
        .collect();
    assert_eq!(ids, vec![latest_id.clone()], "{list}");
    assert_eq!(values(&list, "count")[0], "2");

    // get_info.
    let info = c.call(
        "g1",
        &format!("<packet id=\"g1\"><target>backupm</target><data><backupm><get_info><backup_id>{id}</backup_id><options xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:type=\"get_env_info_optionsType\"><env/></options></get_info></backupm></data></packet>"),
    );
    assert_eq!(values(&info, "hostname"), ["web01.example.net"], "{info}");

    // restore_env with force brings the files back.
    let root = rig.containers.join("web01");
    let before = std::fs::read(root.join("data.bin")).unwrap();
    std::fs::write(root.join("data.bin"), b"damaged").unwrap();
    let restored = c.call(
        "r2",
        &format!("<packet id=\"r2\"><target>backupm</target><data><backupm><restore_env><backup_id>{latest_id}</backup_id><restore_options><force/></restore_options></restore_env></backupm></data></packet>"),
    );
    assert!(
        restored.contains("ok/>") && error_code(&restored).is_none(),
        "{restored}"
    );
    assert!(std::fs::read(root.join("data.bin")).unwrap() == before);

    // search by hostname wildcard.
    let found = c.call(
        "s1",
        "<packet id=\"s1\"><target>backupm</target><data><backupm><search><options><hostname>web*.example.*</hostname></options></search></backupm></data></packet>",
    );
    assert_eq!(
        values(&found, "id")
            .iter()
            .filter(|v| v.contains('/'))
            .count(),
        2,
        "{found}"
    );
    let none = c.call(
        "s2",
        "<packet id=\"s2\"><target>backupm</target><data><backupm><search><options><hostname>db*</hostname></options></search></backupm></data></packet>",
    );
    assert!(!none.contains("backup>"), "{none}");

    // get_config local (308 while unset), set_config, get_config.
    let unset = c.call(
        "c1",
        "<packet id=\"c1\"><target>backupm</target><data><backupm><get_config><local/></get_config></backupm></data></packet>",
    );
    assert_eq!(error_code(&unset), Some(308), "{unset}");
    let set = c.call(
        "c2",
        "<packet id=\"c2\"><target>backupm</target><data><backupm><set_config><backupm_config><keep_max>5</keep_max><chain_length>3</chain_length><compression>2</compression></backupm_config></set_config></backupm></data></packet>",
    );
    assert!(set.contains("ok/>"), "{set}");
    let got = c.call(
        "c3",
        "<packet id=\"c3\"><target>backupm</target><data><backupm><get_config><local/></get_config></backupm></data></packet>",
    );
    assert_eq!(values(&got, "keep_max"), ["5"], "{got}");
    assert_eq!(values(&got, "chain_length"), ["3"]);

    // remove with prev: the latest and everything before it.
    let removed = c.call(
        "d1",
        &format!("<packet id=\"d1\"><target>backupm</target><data><backupm><remove><backup_id>{latest_id}</backup_id><options><prev/></options></remove></backupm></data></packet>"),
    );
    assert!(removed.contains("ok/>"), "{removed}");
    let empty = c.call(
        "l2",
        &format!("<packet id=\"l2\"><target>backupm</target><data><backupm><list><options><eid>{web}</eid></options></list></backupm></data></packet>"),
    );
    assert!(!empty.contains("backup>"), "{empty}");
    let _ = &rig.dir;
}

/// system/cancel stops a running backup by the request's packet id; a viewer cannot remove;
/// bad input gets error packets and the connection (and others) keep working.
#[test]
fn cancel_roles_and_bad_input() {
    let rig = rig("upload_limit_bytes_per_sec = 2000000");
    let web = rig.eid("web01");
    let mut admin = Client::connect(&rig.xml);
    assert_eq!(error_code(&admin.login("admin", "admin-pass-1")), None);

    // Cancel a running backup.
    admin.send(&format!(
        "<packet id=\"long\" progress=\"on\"><target>backupm</target><data><backupm><backup_env><env_list><eid>{web}</eid></env_list></backup_env></backupm></data></packet>"
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = admin.packet();
        if p.contains("id=\"long\"") && p.contains("type=\"1\"") && values(&p, "status") == ["2"] {
            break;
        }
        assert!(Instant::now() < deadline, "no progress before the deadline");
    }
    admin.send("<packet id=\"cx\"><data><system><cancel><message_id>long</message_id></cancel></system></data></packet>");
    let mut cancelled = None;
    let mut cancel_ok = None;
    while cancelled.is_none() || cancel_ok.is_none() {
        let p = admin.packet();
        if p.contains("id=\"cx\"") {
            cancel_ok = Some(p);
        } else if p.contains("id=\"long\"") && !p.contains("type=\"1\"") {
            cancelled = Some(p);
        }
    }
    assert!(cancel_ok.unwrap().contains("ok/>"));
    assert_eq!(error_code(&cancelled.unwrap()), Some(313));

    // A viewer lists but cannot remove.
    let mut viewer = Client::connect(&rig.xml);
    assert_eq!(error_code(&viewer.login("viewer", "viewer-pass-1")), None);
    let denied = viewer.call(
        "v1",
        &format!("<packet id=\"v1\"><target>backupm</target><data><backupm><remove><options><eid>{web}</eid></options></remove></backupm></data></packet>"),
    );
    assert_eq!(error_code(&denied), Some(306), "{denied}");

    // Bad input on one connection: each answered with an error, the connection lives on.
    let cases: Vec<(&str, Option<&str>, u32)> = vec![
        ("<packet id=\"m1\"><data><system><login>", Some("m1"), 300),
        ("\u{1}\u{2}binary garbage\u{ff}", None, 300),
        ("<packet id=\"m2\"><target>nosuch</target><data><nosuch><x/></nosuch></data></packet>", Some("m2"), 301),
        ("<packet id=\"m3\"><target>backupm</target><data><backupm><frobnicate/></backupm></data></packet>", Some("m3"), 302),
        ("<packet id=\"m4\"><data><system><login><name>!!notbase64</name><password>eA==</password></login></system></data></packet>", Some("m4"), 303),
        ("<packet id=\"m5\"><target>backupm</target><data><backupm><list><options><eid>not-a-guid</eid></options></list></backupm></data></packet>", Some("m5"), 303),
        ("<notapacket id=\"m6\"/>", None, 300),
    ];
    for (xml, id, code) in &cases {
        viewer.send(xml);
        let p = viewer.packet();
        assert_eq!(error_code(&p), Some(*code), "{xml} → {p}");
        if let Some(id) = id {
            assert!(p.contains(&format!("id=\"{id}\"")), "the id is echoed: {p}");
        }
    }
    // A packet over the cap (1 MiB): an error packet, then the next packet is served.
    let huge = format!(
        "<packet id=\"h\"><data>{}</data></packet>",
        "x".repeat(1_100_000)
    );
    viewer.send(&huge);
    assert_eq!(error_code(&viewer.packet()), Some(307));
    let still = viewer.call(
        "v2",
        &format!("<packet id=\"v2\"><target>backupm</target><data><backupm><list><options><eid>{web}</eid></options></list></backupm></data></packet>"),
    );
    assert_eq!(error_code(&still), None, "{still}");

    // Pipelined: login and a request in one write, split at odd places.
    let mut raw = TcpStream::connect(&rig.xml).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let both = format!(
        "<packet id=\"p1\"><data><system><login><name>{}</name><password>{}</password></login></system></data></packet>\0<packet id=\"p2\"><target>backupm</target><data><backupm><list/></backupm></data></packet>\0",
        b64("viewer"),
        b64("viewer-pass-1")
    );
    for piece in both.as_bytes().chunks(7) {
        raw.write_all(piece).unwrap();
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    while got.iter().filter(|b| **b == 0).count() < 3 {
        let n = raw.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.contains("id=\"p1\"") && text.contains("id=\"p2\""),
        "{text}"
    );

    // A client that disconnects mid-backup: the job still finishes.
    let mut gone = Client::connect(&rig.xml);
    assert_eq!(error_code(&gone.login("admin", "admin-pass-1")), None);
    let db = rig.eid("db01");
    gone.send(&format!(
        "<packet id=\"z\"><target>backupm</target><data><backupm><backup_env><env_list><eid>{db}</eid></env_list></backup_env></backupm></data></packet>"
    ));
    drop(gone);
    let list = wait_for(
        Duration::from_secs(60),
        "the abandoned backup to finish",
        || {
            let p = viewer.call(
            "v3",
            &format!("<packet id=\"v3\"><target>backupm</target><data><backupm><list><options><eid>{db}</eid></options></list></backupm></data></packet>"),
        );
            p.contains("backup>").then_some(p)
        },
    );
    assert_eq!(values(&list, "eid")[0], db);
}

/// TLS on the second listener: the same protocol inside; an idle connection is closed, one
/// waiting for its answer is not.
#[test]
fn tls_listener_and_idle_timeout() {
    let rig = rig("upload_limit_bytes_per_sec = 4000000");
    let tls = cairn_tests::http::tls_connect(&rig.xml_tls, &rig.ca);
    let mut c = Client::over(Box::new(tls));
    assert_eq!(error_code(&c.login("admin", "admin-pass-1")), None);
    // The backup takes longer than the 3 s idle timeout; the connection waits for it.
    let web = rig.eid("web01");
    let started = Instant::now();
    let answer = c.call(
        "t1",
        &format!("<packet id=\"t1\"><target>backupm</target><data><backupm><backup_env><env_list><eid>{web}</eid></env_list></backup_env></backupm></data></packet>"),
    );
    assert_eq!(error_code(&answer), None, "{answer}");
    assert!(
        started.elapsed() > Duration::from_secs(3),
        "the backup outlasted the idle timeout"
    );
    // An idle connection is closed after its greeting.
    let mut plain = TcpStream::connect(&rig.xml).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut all = Vec::new();
    let _ = plain.read_to_end(&mut all);
    assert!(
        String::from_utf8_lossy(&all).contains("packet"),
        "greeting, then closed"
    );
}
