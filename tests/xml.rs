//! The XML adapter (Virtuozzo Agent XML API `backupm`) over a real TCP socket: `cairn node`
//! processes whose gateway serves it, a `cairn agent` with two containers, and a raw-socket
//! client written here, sharing no code with the server: it writes the spec's example
//! packets by hand and reads answers by splitting on NUL and searching the text.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cairn_tests::{
    add_user, cairn_bin, free_ports, noise, wait_for, Agent, KillOnDrop, TestCluster,
};

const TOKEN: &str = "xml-cluster-t0ken";
/// The rig's XML `idle_timeout_secs`.
const IDLE_TIMEOUT_SECS: u64 = 3;

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
    /// The packet the server sent on connect.
    greeting: String,
}

impl Client {
    fn connect(addr: &str) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        Client::over(Box::new(s))
    }

    fn over(s: Box<dyn Stream>) -> Client {
        let mut c = Client {
            s,
            buf: Vec::new(),
            greeting: String::new(),
        };
        let greeting = c.packet();
        assert!(
            !greeting.contains("<error") && !greeting.contains(":error"),
            "{greeting}"
        );
        assert!(greeting.contains("packet"), "{greeting}");
        c.greeting = greeting;
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

/// The address a process printed after `banner` in its log, once it has.
fn listener(log: &std::path::Path, banner: &str) -> String {
    wait_for(Duration::from_secs(30), banner, || {
        let text = std::fs::read_to_string(log).ok()?;
        let at = text.find(banner)?;
        Some(text[at + banner.len()..].lines().next()?.trim().to_string())
    })
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
    /// The REST listener's base URL (its `/metrics` count XML calls too).
    rest: String,
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
        "[gateway]\nusers_file = \"{}\"\n[gateway.rest]\nlisten = \"127.0.0.1:0\"\n[gateway.xml]\nlisten = \"127.0.0.1:0\"\nidle_timeout_secs = {IDLE_TIMEOUT_SECS}\nmax_connections = 6\nmax_in_flight = 1\ntls_listen = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        users.display(),
        cert_pem.display(),
        key_pem.display()
    );
    let cluster = TestCluster::start_with_token(dir.path(), 1, &extra, Some(TOKEN));
    let xml = listener(&cluster.nodes[0].log, "XML API (Virtuozzo backupm) at ");
    let xml_tls = listener(&cluster.nodes[0].log, "XML API over TLS at ");
    let rest = listener(&cluster.nodes[0].log, "REST API (Sun Cloud API) at ");
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
    let eids = node.envs(None, 2);
    Rig {
        dir,
        _cluster: cluster,
        _agent: agent,
        xml,
        rest,
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

    // The calls are counted in the gateway's metrics, by call and outcome.
    let text = metrics(&rig);
    for want in [
        r#"cairn_xml_requests_total{interface="backupm",call="backup_env",code="ok"} 2"#,
        r#"cairn_xml_requests_total{interface="backupm",call="get_config",code="308"} 1"#,
        r#"cairn_xml_requests_total{interface="system",call="login",code="305"} 1"#,
        r#"cairn_xml_requests_total{interface="backupm",call="list",code="304"} 1"#,
        "cairn_xml_connections 1",
        "cairn_xml_request_duration_seconds_bucket{call=\"restore_env\",le=\"600\"} 1",
    ] {
        assert!(text.contains(want), "{want} in\n{text}");
    }
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

    // Names a client made up do not become metric labels.
    let text = metrics(&rig);
    assert!(
        text.contains(r#"cairn_xml_requests_total{interface="other",call="other",code="301"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"cairn_xml_requests_total{interface="backupm",call="other",code="302"} 1"#),
        "{text}"
    );
    assert!(
        !text.contains("nosuch") && !text.contains("frobnicate"),
        "{text}"
    );
}

/// The ids of the backups in an answer, in order.
fn backup_ids(p: &str) -> Vec<String> {
    values(p, "id")
        .into_iter()
        .filter(|v| v.len() == 51 && v.as_bytes()[36] == b'/')
        .collect()
}

/// Issue 15, as a client written from the specification meets the adapter: the
/// `backup_optionsType` form of `remove` (a child `<backup>`) replaces exactly the backup it
/// names and the answer says which; the text form too; `get_configuration`; a
/// `backup_server` that is not this cluster is refused; progress packets in the template
/// form and the spec's order; the answers' envelope (`priority`, `src`, `dst`).
#[test]
fn a_client_written_from_the_specification() {
    let rig = rig("");
    let db = rig.eid("db01");
    let mut c = Client::connect(&rig.xml);
    // Deviations: credentials in a packet's `auth` do not log in (a session logs in once),
    // and there is no `sessionm` interface.
    let auth = c.call(
        "au",
        &format!("<packet version=\"4.0.0\" id=\"au\"><auth><name>{}</name><password>{}</password></auth><target>backupm</target><data><backupm><list/></backupm></data></packet>", b64("admin"), b64("admin-pass-1")),
    );
    assert_eq!(error_code(&auth), Some(304), "{auth}");
    let sessionm = c.call(
        "sm",
        &format!("<packet version=\"4.0.0\" id=\"sm\"><target>sessionm</target><data><sessionm><login><name>{}</name><realm>00000000-0000-0000-0000-000000000000</realm><password>{}</password><expiration>600</expiration></login></sessionm></data></packet>", b64("admin"), b64("admin-pass-1")),
    );
    assert_eq!(error_code(&sessionm), Some(301), "{sessionm}");
    assert_eq!(error_code(&c.login("admin", "admin-pass-1")), None);
    let backup_env = |c: &mut Client, id: &str, options: &str| {
        c.call(
            id,
            &format!("<packet version=\"4.0.0\" id=\"{id}\"><target>backupm</target><data><backupm><backup_env><env_list><eid>{db}</eid></env_list>{options}</backup_env></backupm></data></packet>"),
        )
    };
    let list = |c: &mut Client| {
        backup_ids(&c.call(
            "ls",
            &format!("<packet id=\"ls\"><target>backupm</target><data><backupm><list><options><eid>{db}</eid></options></list></backupm></data></packet>"),
        ))
    };
    let mut made = Vec::new();
    for i in 0..3 {
        let a = backup_env(&mut c, &format!("b{i}"), "");
        assert_eq!(error_code(&a), None, "{a}");
        made.extend(backup_ids(&a));
    }
    assert_eq!(list(&mut c), made);

    // The answer's envelope, as the specification's packets have it.
    let a = c.call(
        "gc",
        "<packet version=\"4.0.0\" id=\"gc\"><cookie>c-42</cookie><target>backupm</target><data><backupm><get_configuration/></backupm></data></packet>",
    );
    assert!(
        a.contains("<ns1:cookie>c-42</ns1:cookie>"),
        "the cookie is echoed: {a}"
    );
    assert!(a.contains(" priority=\"4000\""), "{a}");
    assert!(
        a.contains("<ns1:dst><director>gend</director></ns1:dst>"),
        "{a}"
    );
    assert!(
        a.ends_with("</ns1:data><ns1:src><ns1:director>gend</ns1:director></ns1:src></ns1:packet>"),
        "{a}"
    );
    // `get_configuration` (the name the specification's backup_server text uses) is get_config.
    assert_eq!(error_code(&a), None, "{a}");
    assert!(a.contains("backupm_config>"), "{a}");

    // Replace the middle one of three, named as the backup_optionsType has it.
    let replace = backup_env(
        &mut c,
        "rp",
        &format!(
            "<backup_options><remove>\n  <backup>{}</backup>\n</remove></backup_options>",
            made[1]
        ),
    );
    assert_eq!(error_code(&replace), None, "{replace}");
    let new = backup_ids(&replace);
    assert_eq!(new.len(), 1, "{replace}");
    assert!(
        replace.contains("<ns2:name>removed</ns2:name>")
            && values(&replace, "message").contains(&b64(&made[1])),
        "the answer names the backup removed: {replace}"
    );
    assert_eq!(
        list(&mut c),
        [made[0].clone(), made[2].clone(), new[0].clone()]
    );

    // The text form, from lenient clients.
    let text = backup_env(
        &mut c,
        "rt",
        &format!(
            "<backup_options><remove>{}</remove></backup_options>",
            made[2]
        ),
    );
    assert_eq!(error_code(&text), None, "{text}");
    assert!(values(&text, "message").contains(&b64(&made[2])), "{text}");
    let newer = backup_ids(&text);
    assert_eq!(
        list(&mut c),
        [made[0].clone(), new[0].clone(), newer[0].clone()]
    );
    // An empty remove: the oldest; the answer says which.
    let oldest = backup_env(&mut c, "ro", "<backup_options><remove/></backup_options>");
    assert_eq!(error_code(&oldest), None, "{oldest}");
    assert!(
        values(&oldest, "message").contains(&b64(&made[0])),
        "{oldest}"
    );
    let before = list(&mut c);
    assert!(!before.contains(&made[0]), "{before:?}");

    // A backup_server that is not this cluster is refused before anything is done; this
    // cluster, named as `local` or by this connection's address and port, is served.
    let port = rig.xml.rsplit(':').next().unwrap();
    for foreign in [
        "<backup_server><address>backup.elsewhere.invalid</address></backup_server>",
        "<backup_server><protocol>SSL</protocol><address>10.255.255.1</address><port>4434</port></backup_server>",
        "<backup_server><protocol>agent</protocol><address>0badc0de-0000-4000-8000-00000000beef</address></backup_server>",
    ] {
        let a = backup_env(&mut c, "fs", foreign);
        assert_eq!(error_code(&a), Some(303), "{foreign}: {a}");
        assert!(a.contains("not this cluster"), "{a}");
    }
    let restore_elsewhere = c.call(
        "fr",
        &format!("<packet id=\"fr\"><target>backupm</target><data><backupm><restore_env><backup_id>{}</backup_id><backup_server><address>backup.elsewhere.invalid</address></backup_server></restore_env></backupm></data></packet>", before[0]),
    );
    assert_eq!(
        error_code(&restore_elsewhere),
        Some(303),
        "{restore_elsewhere}"
    );
    assert_eq!(list(&mut c), before, "nothing was backed up elsewhere");
    for ours in [
        "<backup_server><protocol>agent</protocol><address>local</address></backup_server>"
            .to_string(),
        format!("<backup_server><address>127.0.0.1</address><port>{port}</port></backup_server>"),
    ] {
        let a = backup_env(&mut c, "ls1", &ours);
        assert_eq!(error_code(&a), None, "{ours}: {a}");
    }

    // What the adapter accepts and ignores (CONFORMANCE.md's deviations) is served, not
    // refused: the packet attributes `timeout`, `timeout_limit`, `uid`, `log`; the
    // `exclude_list` flags; `skip_locked`; `pe_backups_limit`.
    let ignored = c.call(
        "ig",
        &format!("<packet version=\"4.0.0\" id=\"ig\" timeout=\"5\" timeout_limit=\"10\" uid=\"7\" log=\"off\"><target>backupm</target><data><backupm><backup_env><env_list><eid>{db}</eid></env_list><backup_options><exclude_list><path>{}</path><hidden/><system/></exclude_list></backup_options></backup_env></backupm></data></packet>", b64("*.tmp")),
    );
    assert_eq!(error_code(&ignored), None, "{ignored}");
    let kept = backup_ids(&ignored)[0].clone();
    let selective = c.call(
        "sr",
        &format!("<packet id=\"sr\"><target>backupm</target><data><backupm><selective_restore_env><eid>{db}</eid><backup_id>{kept}</backup_id><path>{}</path><selective_restore_options><skip_locked/></selective_restore_options></selective_restore_env></backupm></data></packet>", b64("etc/hostname")),
    );
    assert!(
        selective.contains("ok/>") && error_code(&selective).is_none(),
        "{selective}"
    );
    let config = c.call(
        "sc",
        "<packet id=\"sc\"><target>backupm</target><data><backupm><set_configuration><backupm_config><backup_server><protocol>agent</protocol><address>local</address></backup_server><keep_max>0</keep_max><pe_backups_limit>3</pe_backups_limit></backupm_config></set_configuration></backupm></data></packet>",
    );
    assert!(
        config.contains("ok/>") && error_code(&config).is_none(),
        "{config}"
    );
    let elsewhere = c.call(
        "sc2",
        "<packet id=\"sc2\"><target>backupm</target><data><backupm><set_config><backupm_config><backup_server><address>backup.elsewhere.invalid</address></backup_server></backupm_config></set_config></backupm></data></packet>",
    );
    assert_eq!(error_code(&elsewhere), Some(303), "{elsewhere}");

    // A protected backup's info says so (a Cairn extension).
    let protect = c.call(
        "pr",
        &format!("<packet id=\"pr\"><target>backupm</target><data><backupm><protect><backup_id>{kept}</backup_id><protected>1</protected></protect></backupm></data></packet>"),
    );
    assert!(protect.contains("ok/>"), "{protect}");
    let listed = c.call(
        "li",
        &format!("<packet id=\"li\"><target>backupm</target><data><backupm><list><backup_id>{kept}</backup_id><options><info/></options></list></backupm></data></packet>"),
    );
    assert!(
        listed.contains("<ns2:name>protected</ns2:name>"),
        "{listed}"
    );

    // Progress packets: `op`, then `message` in the template form, then `status`.
    c.send(&format!(
        "<packet progress=\"on\" log=\"on\" id=\"2\" version=\"4.0.0\"><cookie>spec-example</cookie><target>backupm</target><data><backupm><backup_env><env_list><eid>{db}</eid></env_list><backup_options><type>0</type><compression>2</compression><description>RnVsbCBiYWNrdXAgMjAwNy0wMS0xMg==</description></backup_options></backup_env></backupm></data></packet>"
    ));
    let (answer, progress) = c.answer("2");
    assert_eq!(error_code(&answer), None, "{answer}");
    // The answer's backup in the order of the specification's example (backupType), its
    // info opening as the example's infoType does.
    let order: Vec<usize> = [
        "<ns2:eid>",
        "<ns2:description>",
        "<ns2:count>",
        "<ns2:id>",
        "<ns2:time>",
        "<ns2:size>",
        "<ns2:type>",
        "<ns2:storage_eid>",
        "<ns2:info>",
        "<ns2:capability>",
    ]
    .iter()
    .map(|tag| {
        answer
            .find(tag)
            .unwrap_or_else(|| panic!("{tag} in {answer}"))
    })
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{answer}");
    assert!(
        answer.contains(
            "<ns2:info><ns2:message/><ns2:name/><ns2:translate/><ns2:parameter><ns2:message>"
        ),
        "{answer}"
    );
    let first = &progress[0];
    let at = |tag: &str| {
        first
            .find(tag)
            .unwrap_or_else(|| panic!("{tag} in {first}"))
    };
    assert!(
        at("<ns1:op>") < at("<ns1:message>") && at("<ns1:message>") < at("<ns1:status>"),
        "{first}"
    );
    assert!(first.contains(" priority=\"4000\""), "{first}");
    for p in progress.iter().chain([&answer]) {
        assert!(p.contains("<ns1:cookie>spec-example</ns1:cookie>"), "{p}");
    }
    let texts = values(first, "message");
    assert!(
        texts.contains(&"T3BlcmF0aW9uICVvcF9uYW1lJSBpcyAlc3RhdHVzJQ==".to_string())
            && texts.contains(&b64("backup_env"))
            && texts.contains(&b64("started")),
        "Operation %op_name% is %status%, op_name backup_env, status started: {first}"
    );
    let last = progress.last().unwrap();
    assert!(
        values(last, "message").contains(&b64("succeeded")),
        "{last}"
    );
}

/// The gateway's Prometheus metrics, read over its REST listener.
fn metrics(rig: &Rig) -> String {
    let r = cairn_tests::http::request(
        "GET",
        &format!("{}metrics", rig.rest),
        &[(
            "Authorization",
            &cairn_tests::http::basic("admin", "admin-pass-1"),
        )],
        b"",
    );
    assert_eq!(r.status, 200);
    String::from_utf8_lossy(&r.body).to_string()
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
    c.send(&format!("<packet id=\"t1\"><target>backupm</target><data><backupm><backup_env><env_list><eid>{web}</eid></env_list></backup_env></backupm></data></packet>"));
    // max_in_flight is 1: a second request meanwhile is refused at once (314).
    let busy = c.call(
        "t2",
        &format!("<packet id=\"t2\"><target>backupm</target><data><backupm><list><options><eid>{web}</eid></options></list></backupm></data></packet>"),
    );
    assert_eq!(error_code(&busy), Some(314), "{busy}");
    let answer = c.answer("t1").0;
    assert_eq!(error_code(&answer), None, "{answer}");
    assert!(
        started.elapsed() > Duration::from_secs(3),
        "the backup outlasted the idle timeout"
    );
    // An idle connection is closed after its greeting: the server ends it (EOF) after the
    // configured idle timeout (3 s), not before, and well within twice that plus a margin
    // for a loaded machine. A server that never closes fails the read with a timeout.
    let idle = Duration::from_secs(IDLE_TIMEOUT_SECS);
    let bound = idle * 2 + Duration::from_secs(10);
    let connected = Instant::now();
    let mut plain = TcpStream::connect(&rig.xml).unwrap();
    plain.set_read_timeout(Some(bound)).unwrap();
    let mut all = Vec::new();
    let read = plain.read_to_end(&mut all);
    let after = connected.elapsed();
    assert!(
        read.is_ok(),
        "the idle connection was not closed within {bound:?}: {read:?}"
    );
    assert!(
        String::from_utf8_lossy(&all).contains("packet"),
        "greeting, then closed"
    );
    assert!(
        after >= idle,
        "closed after {after:?}, before the idle timeout"
    );

    // At most max_connections (6) at once: one more gets error 311 and is closed; once a
    // connection closes, a new one is served again.
    drop(c);
    let first_packet = || {
        let mut s = TcpStream::connect(&rig.xml).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        while !all.contains(&0) {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
        (s, String::from_utf8_lossy(&all).to_string())
    };
    let mut held = Vec::new();
    wait_for(Duration::from_secs(10), "six connections served", || {
        let (s, greeting) = first_packet();
        if error_code(&greeting).is_none() {
            held.push(s);
        }
        (held.len() == 6).then_some(())
    });
    let (_, refused) = first_packet();
    assert_eq!(error_code(&refused), Some(311), "{refused}");
    assert!(refused.contains("too many open connections"), "{refused}");
    drop(held.pop());
    wait_for(Duration::from_secs(10), "a freed slot", || {
        let (s, greeting) = first_packet();
        error_code(&greeting).is_none().then_some(s)
    });
}

// ---------------------------------------------------------------------------------------------
// Golden exchanges: request bytes in, exact response bytes out.

/// `tests/xml-golden/NAME.request` is sent as it is, followed by one NUL, once the `{{…}}`
/// values of this run are filled in. `NAME.response` holds the packets that answered it, one
/// per line (on the wire each is followed by its NUL, and none holds a line break). A few
/// values differ from run to run and appear there as placeholders, each standing for the same
/// value wherever it occurs:
///
/// - `{{NOW}}`: the clock (a packet's `time` attribute, a progress packet's `time`);
/// - `{{Bn}}`: the n-th backup id seen, `{{Bn.time}}` its time;
/// - `{{Un}}`: the n-th other UUID seen (the cluster's id as `storage_eid`, job ids);
/// - `{{b64:…}}`: a base64 backup id (an `info`'s `removed` parameter), decoded;
/// - `{{DIR}}`: the test's temporary directory.
///
/// Everything else is literal: EIDs are derived from the host id and the container id, so
/// they are the same in every run. `CAIRN_BLESS=1` re-records the responses.
fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/xml-golden")
}

/// Container 101 (web01) and 102 (db01) on host h1, 201 on host h2.
const CT101: &str = "17c36874-edad-579b-88cd-d9c2be1176db";
const CT102: &str = "1766d40a-adf3-5adc-b35a-34e95fb6d4d0";
/// Hosts h1 and h2 as `parent_eid` names them.
const H1: &str = "ca732fa6-9b67-55ee-adcb-ad59ccdcb928";
const H2: &str = "0e4ef9ec-7563-593a-9ba3-de3a0d55a9f0";
/// UUIDs the requests name literally: the realms and an EID no host has.
const FIXED: [&str; 7] = [
    CT101,
    CT102,
    H1,
    H2,
    "00000000-0000-0000-0000-000000000000",
    "00000000-0000-0000-0100-000000000000",
    "0badc0de-0000-4000-8000-00000000beef",
];

/// Which packets answer a request.
#[derive(Clone, Copy)]
enum Collect {
    /// The final answer with the request's id.
    Answer,
    /// The first and last progress packets and the final answer.
    Progress,
    /// The next packet, whatever its id (answers to requests whose id cannot be read).
    Next,
}

struct Golden {
    dir: String,
    /// Values of this run and their placeholders, in the order they were first seen.
    seen: Vec<(String, String)>,
    counts: [usize; 2],
    bless: bool,
    failures: Vec<String>,
}

/// Replaces the text between each `open` and the next `close` by `f(text before, value)`.
fn replace_values(s: &str, open: &str, close: &str, f: impl Fn(&str, &str) -> String) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(open) {
        let start = i + open.len();
        let end = start + rest[start..].find(close).unwrap();
        out.push_str(&rest[..start]);
        let value = f(&out, &rest[start..end]);
        out.push_str(&value);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn is_uuid(s: &[u8]) -> bool {
    s.len() >= 36
        && s[..36].iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit() && !b.is_ascii_uppercase(),
        })
}

impl Golden {
    fn new(dir: &std::path::Path) -> Golden {
        Golden {
            dir: dir.display().to_string(),
            seen: Vec::new(),
            counts: [0; 2],
            bless: std::env::var_os("CAIRN_BLESS").is_some(),
            failures: Vec::new(),
        }
    }

    /// The placeholder for `value` of kind `k` (0 backup, 1 UUID), made when new.
    fn name(&mut self, value: &str, k: usize) -> String {
        if let Some((_, n)) = self.seen.iter().find(|(v, _)| v == value) {
            return n.clone();
        }
        self.counts[k] += 1;
        let n = format!("{{{{{}{}}}}}", ["B", "U"][k], self.counts[k]);
        self.seen.push((value.to_string(), n.clone()));
        n
    }

    fn redact(&mut self, packet: &str) -> String {
        let mut p = packet.replace(&self.dir, "{{DIR}}");
        for (open, close) in [(" time=\"", "\""), ("<ns1:time>", "</ns1:time>")] {
            p = replace_values(&p, open, close, |_, _| "{{NOW}}".to_string());
        }
        // A backup id in base64 (the `removed` parameter of an `info`): `{{b64:ID}}`, the
        // id then named like any other below.
        p = replace_values(&p, "<ns2:message>", "</ns2:message>", |_, v| {
            use base64::Engine;
            let id = base64::engine::general_purpose::STANDARD
                .decode(v)
                .ok()
                .and_then(|raw| String::from_utf8(raw).ok())
                .filter(|t| t.len() == 51 && is_uuid(t.as_bytes()) && t.as_bytes()[36] == b'/');
            match id {
                Some(id) => format!("{{{{b64:{id}}}}}"),
                None => v.to_string(),
            }
        });
        // Backup ids (EID/YYYYMMDDhhmmss) and other UUIDs, but not the fixed ones.
        let b = p.as_bytes();
        let mut out = String::new();
        let mut i = 0;
        while i < b.len() {
            if is_uuid(&b[i..]) {
                let id = &p[i..i + 36];
                let is_backup = b.len() >= i + 51
                    && b[i + 36] == b'/'
                    && b[i + 37..i + 51].iter().all(u8::is_ascii_digit);
                if is_backup && &p[i + 37..i + 51] != "20000101000000" {
                    out.push_str(&self.name(&p[i..i + 51], 0));
                    i += 51;
                } else if is_backup || FIXED.contains(&id) {
                    out.push_str(id);
                    i += 36;
                } else {
                    out.push_str(&self.name(id, 1));
                    i += 36;
                }
                continue;
            }
            let ch = p[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
        // A backup's time follows its id: `{{Bn.time}}`.
        replace_values(&out, "<ns2:time>", "</ns2:time>", |before, _| {
            let at = before.rfind("{{B").expect("a backup time after its id");
            let end = at + before[at..].find("}}").unwrap();
            format!("{}.time}}}}", &before[at..end])
        })
    }

    /// The request `name` with this run's values filled in.
    fn request(&self, name: &str) -> String {
        let path = golden_dir().join(format!("{name}.request"));
        let mut r =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if r.ends_with('\n') {
            r.pop();
        }
        for (value, placeholder) in &self.seen {
            r = r.replace(placeholder, value);
        }
        r.replace("{{PAD}}", &"x".repeat(1_100_000))
    }

    /// Compares the packets that answered `name` with its golden response.
    fn record(&mut self, name: &str, packets: &[String]) {
        let mut text = String::new();
        for p in packets {
            assert!(!p.contains('\n'), "a packet holds a line break: {p}");
            text.push_str(&self.redact(p));
            text.push('\n');
        }
        let path = golden_dir().join(format!("{name}.response"));
        if self.bless {
            std::fs::write(&path, &text).unwrap();
            return;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        if text != want {
            self.failures.push(format!(
                "{name}: got\n{text}want ({})\n{want}",
                path.display()
            ));
        }
    }

    /// Sends request `name` on `c`, collects its answer and compares it; returns the packets.
    fn step(&mut self, c: &mut Client, name: &str, how: Collect) -> Vec<String> {
        let req = self.request(name);
        c.send(&req);
        let packets = collect(c, &req, how);
        self.record(name, &packets);
        packets
    }

    fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "{} golden response(s) differ (CAIRN_BLESS=1 re-records them):\n\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

/// The packets answering `req` (see [`Collect`]).
fn collect(c: &mut Client, req: &str, how: Collect) -> Vec<String> {
    let id = || {
        let at = req.find(" id=\"").expect("the request has an id") + 5;
        req[at..at + req[at..].find('"').unwrap()].to_string()
    };
    match how {
        Collect::Next => vec![c.packet()],
        Collect::Answer => vec![c.answer(&id()).0],
        Collect::Progress => {
            let (answer, progress) = c.answer(&id());
            assert!(!progress.is_empty(), "progress packets: {answer}");
            vec![
                progress[0].clone(),
                progress[progress.len() - 1].clone(),
                answer,
            ]
        }
    }
}

/// A Virtuozzo node's containers: `/etc/vz/conf/<CTID>.conf` and private areas.
fn vz_node(root: &std::path::Path, cts: &[(&str, &str, &str, &str, usize)]) -> String {
    let (conf, private) = (root.join("conf"), root.join("private"));
    std::fs::create_dir_all(&conf).unwrap();
    for (ctid, name, hostname, ip, size) in cts {
        let area = private.join(ctid);
        std::fs::create_dir_all(area.join("etc")).unwrap();
        std::fs::write(area.join("etc/hostname"), format!("{hostname}\n")).unwrap();
        std::fs::write(area.join("etc/motd"), format!("welcome to {name}\n")).unwrap();
        std::fs::write(area.join("data.bin"), noise(*size, ctid.len() as u64 + 7)).unwrap();
        std::fs::write(area.join("cache.tmp"), vec![b'c'; 1000]).unwrap();
        std::fs::write(
            conf.join(format!("{ctid}.conf")),
            format!(
                "VE_PRIVATE=\"{}/$VEID\"\nNAME=\"{name}\"\nHOSTNAME=\"{hostname}\"\nIP_ADDRESS=\"{ip}\"\nOSTEMPLATE=\"debian-12-x86_64\"\nDESCRIPTION=\"{name} container\"\n",
                private.display()
            ),
        )
        .unwrap();
    }
    format!(
        "[discovery.vz]\nconf_dir = \"{}\"\nprivate_root = \"{}\"\n",
        conf.display(),
        private.display()
    )
}

fn start_agent(dir: &std::path::Path, node_url: &str, token: &str, host: &str, vz: &str) -> Agent {
    Agent::start(
        &dir.join(format!("agent-{host}")),
        &format!(
            "cluster = [{node_url:?}]\nhost_id = \"{host}\"\nstate_dir = \"{}\"\ntoken = \"{token}\"\nregister_interval_ms = 1000\nreport_interval_ms = 200\nupload_limit_bytes_per_sec = 1000000\n{vz}",
            dir.join(format!("{host}-state")).display(),
        ),
    )
}

/// Every call and every error code, as exact bytes against the golden files, over a real
/// socket to a node with a real agent of two Virtuozzo containers (then a second host).
#[test]
fn golden_exchanges() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    add_user(&users, "admin", "admin", "admin-pass-1");
    add_user(&users, "viewer", "viewer", "viewer-pass-1");
    add_user(&users, "operator", "operator", "operator-pass-1");
    let extra = format!(
        "[gateway]\nusers_file = \"{}\"\n[gateway.xml]\nlisten = \"127.0.0.1:0\"\nmax_in_flight = 1\n",
        users.display()
    );
    let cluster = TestCluster::start_with_token(dir.path(), 1, &extra, Some(TOKEN));
    let node = &cluster.nodes[0];
    let xml = listener(&node.log, "XML API (Virtuozzo backupm) at ");
    let h1 = dir.path().join("h1");
    let vz1 = vz_node(
        &h1,
        &[
            ("101", "web01", "web01.example.net", "10.0.0.11", 8 << 20),
            (
                "102",
                "db01",
                "db01.example.net",
                "10.0.1.12 fe80::12",
                1 << 20,
            ),
        ],
    );
    let token1 = node
        .ok(&["agent", "token", "create", "h1"])
        .trim()
        .to_string();
    let mut agent1 = start_agent(dir.path(), &node.url, &token1, "h1", &vz1);
    let mut eids: Vec<String> = node.envs(None, 2).into_iter().map(|e| e.1).collect();
    eids.sort();
    assert_eq!(eids, [CT102, CT101], "derived EIDs");

    let mut g = Golden::new(dir.path());
    let mut a = Client::connect(&xml);
    g.record("greeting", &[a.greeting.clone()]);
    use Collect::*;
    for name in [
        "list-before-login",
        "get_realm",
        "cancel-before-login",
        "login-wrong-password",
        "login-unknown-realm",
        "login-bad-base64",
        "login",
    ] {
        g.step(&mut a, name, Answer);
    }
    let mut v = Client::connect(&xml);
    g.step(&mut v, "login-viewer", Answer);
    let mut c = Client::connect(&xml);
    assert_eq!(error_code(&c.login("admin", "admin-pass-1")), None);
    let mut o = Client::connect(&xml);
    assert_eq!(error_code(&o.login("operator", "operator-pass-1")), None);

    // Errors that need no backup.
    for (name, how) in [
        ("system-unknown-call", Answer),
        ("unknown-interface", Answer),
        ("backupm-unknown-call", Answer),
        ("backupm-no-call", Answer),
        ("malformed-truncated", Answer),
        ("malformed-binary", Next),
        ("malformed-root", Next),
        ("malformed-data-mismatch", Answer),
        ("too-large", Answer),
        ("list-bad-eid", Answer),
        ("get_info-bad-id", Answer),
        ("get_info-unknown", Answer),
        ("backup_env-bad-type", Answer),
    ] {
        g.step(&mut a, name, how);
    }

    // Backups: with progress; two environments at once; the policies.
    g.step(&mut a, "backup_env-progress", Progress);
    for name in [
        "backup_env-two",
        "backup_env-ignore_error",
        "backup_env-ignore_unexistent",
        "backup_env-unknown",
    ] {
        g.step(&mut a, name, Answer);
    }

    // Reading: list, get_info, search, configuration.
    for name in [
        "list-all",
        "list-latest",
        "list-ids-info",
        "list-other-storage",
        "get_info-env",
        "get_info-excludes",
        "search-hostname",
        "search-ip",
        "search-dates",
        "search-dates-none",
        "search-bad-date",
        "get_config-local-unset",
        "get_config",
        "set_config",
        "get_config-local",
        "set_config-bad",
    ] {
        g.step(&mut a, name, Answer);
    }
    for name in [
        "viewer-list",
        "viewer-remove",
        "viewer-set_config",
        "viewer-backup_env",
    ] {
        g.step(&mut v, name, Answer);
    }
    // An operator backs up, but removing old backups along needs admin.
    g.step(&mut o, "operator-backup_env-remove", Answer);

    // Restores: refused over a changed tree, forced, selective.
    let web = h1.join("private/101");
    let original = std::fs::read(web.join("data.bin")).unwrap();
    std::fs::write(web.join("data.bin"), b"damaged").unwrap();
    g.step(&mut a, "restore_env-unforced", Answer);
    assert_eq!(std::fs::read(web.join("data.bin")).unwrap(), b"damaged");
    g.step(&mut a, "restore_env-force", Answer);
    assert!(std::fs::read(web.join("data.bin")).unwrap() == original);
    std::fs::write(web.join("etc/motd"), b"defaced\n").unwrap();
    g.step(&mut a, "selective_restore_env", Answer);
    assert_eq!(
        std::fs::read_to_string(web.join("etc/motd")).unwrap(),
        "welcome to web01\n"
    );

    // A running backup: another one on the same container conflicts; cancel stops it.
    // 32 MiB of new data at the agent's 1 MB/s: the backup runs long past the cancel.
    std::fs::write(web.join("data.bin"), noise(32 << 20, 99)).unwrap();
    let long = g.request("backup_env-to-cancel");
    a.send(&long);
    let mut progress = Vec::new();
    while !progress
        .iter()
        .any(|p: &String| values(p, "status") == ["2"])
    {
        let p = a.packet();
        assert!(p.contains("id=\"long\"") && p.contains("type=\"1\""), "{p}");
        progress.push(p);
    }
    g.step(&mut c, "backup_env-conflict", Answer);
    // One request at a time per connection here (max_in_flight = 1): another is refused.
    g.step(&mut a, "busy", Answer);
    a.send(&g.request("cancel"));
    let asked = Instant::now();
    let (mut cancel, mut last) = (None, None);
    while cancel.is_none() || last.is_none() {
        let p = a.packet();
        if p.contains("id=\"cx\"") {
            cancel = Some(p);
        } else if p.contains("type=\"1\"") {
            progress.push(p);
        } else {
            last = Some(p);
        }
    }
    // The upload left would take about 30 s at 1 MB/s: the throttle does not delay the cancel.
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "the cancel took {:?}",
        asked.elapsed()
    );
    g.record("cancel", &[cancel.unwrap()]);
    g.record(
        "backup_env-to-cancel",
        &[
            progress[0].clone(),
            progress[progress.len() - 1].clone(),
            last.unwrap(),
        ],
    );
    std::fs::write(web.join("data.bin"), &original).unwrap();

    // Removing: the oldest after a backup, several in one packet, all of an environment.
    for name in [
        "cancel-unknown",
        "backup_env-remove-oldest",
        "backup_env-remove-missing",
        "remove-two",
        "remove-unknown",
        "remove-eid",
        "list-db-empty",
    ] {
        g.step(&mut a, name, Answer);
    }

    // parent_eid: host h1 is gone with container 101; restore it onto host h2.
    agent1.kill();
    std::fs::remove_dir_all(&web).unwrap();
    let vz2 = vz_node(
        &dir.path().join("h2"),
        &[("201", "mail01", "mail01.example.net", "10.0.2.13", 1 << 10)],
    );
    let token2 = node
        .ok(&["agent", "token", "create", "h2"])
        .trim()
        .to_string();
    let _agent2 = start_agent(dir.path(), &node.url, &token2, "h2", &vz2);
    wait_for(Duration::from_secs(30), "host h2", || {
        let v: serde_json::Value =
            serde_json::from_str(&node.ok(&["envs", "list", "--json"])).ok()?;
        v.as_array()?
            .iter()
            .find(|e| e["host"] == "h2")
            .map(|e| assert_eq!(e["host_eid"], H2))
    });
    g.step(&mut a, "restore_env-parent_eid-unknown", Answer);
    g.step(&mut a, "restore_env-parent_eid", Answer);
    assert!(std::fs::read(web.join("data.bin")).unwrap() == original);
    g.step(&mut a, "remove-prev", Answer);
    g.step(&mut a, "list-after-remove", Answer);

    // A gateway that cannot reach its cluster answers 311 and keeps serving.
    let port = free_ports(1)[0];
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "cluster = [\"http://127.0.0.1:{port}\"]\ntoken = \"{TOKEN}\"\nusers_file = \"{}\"\n[xml]\nlisten = \"127.0.0.1:0\"\n",
            users.display()
        ),
    )
    .unwrap();
    let log = dir.path().join("gateway.log");
    let out = std::fs::File::create(&log).unwrap();
    let _gw = KillOnDrop(
        std::process::Command::new(cairn_bin())
            .args(["gateway", "--config"])
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap(),
    );
    let alone = listener(&log, "XML API (Virtuozzo backupm) at ");

    let mut u = Client::connect(&alone);
    assert_eq!(error_code(&u.login("admin", "admin-pass-1")), None);
    g.step(&mut u, "unavailable", Answer);
    g.step(&mut u, "get_realm", Answer);
    g.finish();
}
