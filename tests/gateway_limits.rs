//! The gateway under an unauthenticated flood, over real sockets: a `cairn node` whose
//! gateway serves REST and XML with small limits, raw clients written here. A client that
//! floods malformed XML packets and never reads is held to its queue bound (and still gets
//! every answer once it reads); a flood of wrong REST passwords is answered 401 after the
//! failure delay or 503 `busy` at once, never runs more than the allowed verifications at a
//! time, and does not hold up a logged-in user. Every wait is on an observable condition
//! (the gateway's `/metrics`) with a deadline.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_tests::http::{self, basic};
use cairn_tests::{add_user, wait_for, TestCluster};

const ADMIN: (&str, &str) = ("admin", "admin-pass-1");
/// The XML queue bound the rig configures.
const QUEUED: u64 = 16;
/// The failure delay the rig configures.
const DELAY: Duration = Duration::from_millis(1500);

struct Rig {
    _dir: tempfile::TempDir,
    _cluster: TestCluster,
    rest: String,
    xml: String,
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    add_user(&users, ADMIN.0, "admin", ADMIN.1);
    let extra = format!(
        "[gateway]\nusers_file = \"{}\"\n\
         [gateway.auth]\nmax_concurrent_hashes = 1\nmax_waiting_hashes = 2\nfailed_login_delay_ms = {}\n\
         [gateway.rest]\nlisten = \"127.0.0.1:0\"\n\
         [gateway.xml]\nlisten = \"127.0.0.1:0\"\nmax_queued_packets = {QUEUED}\nmax_queued_bytes = 65536\n",
        users.display(),
        DELAY.as_millis()
    );
    let cluster = TestCluster::start(dir.path(), 1, &extra);
    let log = cluster.nodes[0].log.clone();
    let banner = |b: &str| {
        wait_for(Duration::from_secs(30), b, || {
            let text = std::fs::read_to_string(&log).ok()?;
            let at = text.find(b)?;
            Some(text[at + b.len()..].lines().next()?.trim().to_string())
        })
    };
    let rest = banner("REST API (Sun Cloud API) at ")
        .trim_end_matches('/')
        .to_string();
    let xml = banner("XML API (Virtuozzo backupm) at ");
    Rig {
        _dir: dir,
        _cluster: cluster,
        rest,
        xml,
    }
}

impl Rig {
    fn get(&self, path: &str, who: (&str, &str)) -> http::Resp {
        http::request(
            "GET",
            &format!("{}{path}", self.rest),
            &[("Authorization", &basic(who.0, who.1))],
            b"",
        )
    }

    /// A metric without labels from `/metrics` (0 when not recorded yet).
    fn metric(&self, name: &str) -> f64 {
        let r = self.get("/metrics", ADMIN);
        assert_eq!(r.status, 200, "{}", r.text());
        r.text()
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

#[test]
fn an_xml_client_that_never_reads_is_held_to_its_queue_bound() {
    let rig = rig();
    // The admin's success is cached before the flood (the metrics scrapes below use it).
    assert_eq!(rig.get("/versions", ADMIN).status, 200);
    const PACKETS: usize = 50_000;
    let mut flood = TcpStream::connect(&rig.xml).unwrap();
    let mut writer = flood.try_clone().unwrap();
    // Writes 100 KB of `x\0` (each answered by an error packet of ~400 bytes: 20 MB, more
    // than the sockets' buffers hold) and never reads while writing.
    let sent = std::thread::spawn(move || {
        writer.write_all(&b"x\0".repeat(PACKETS)).unwrap();
        writer
    });
    wait_for(
        Duration::from_secs(120),
        "the flooded connection to stop being read",
        || (rig.metric("cairn_xml_read_pauses_total") >= 1.0).then_some(()),
    );
    let peak = rig.metric("cairn_xml_queue_peak_packets");
    assert!(peak >= 1.0 && peak <= QUEUED as f64, "queue peak {peak}");
    // Another connection is served meanwhile.
    let mut other = TcpStream::connect(&rig.xml).unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    other
        .write_all(b"<packet version=\"4.0.0\" id=\"r1\"><data><system><get_realm/></system></data></packet>\0")
        .unwrap();
    let mut seen = Vec::new();
    while seen.iter().filter(|b| **b == 0).count() < 2 {
        let mut chunk = [0u8; 4096];
        let n = other.read(&mut chunk).unwrap();
        assert!(n > 0, "the other connection was closed");
        seen.extend_from_slice(&chunk[..n]);
    }
    assert!(String::from_utf8_lossy(&seen).contains("00000000-0000-0000-0000-000000000000"));

    // Once the flooding client reads, it gets every answer: none was dropped.
    flood
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let reader = std::thread::spawn(move || {
        let mut nuls = 0usize;
        let mut malformed = 0usize;
        let mut tail = Vec::new();
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            let n = flood.read(&mut chunk).unwrap();
            if n == 0 {
                return (nuls, malformed);
            }
            for &b in &chunk[..n] {
                tail.push(b);
                if b == 0 {
                    nuls += 1;
                    if String::from_utf8_lossy(&tail).contains(">300<") {
                        malformed += 1;
                    }
                    tail.clear();
                }
            }
        }
    });
    let writer = sent.join().expect("the flood is read once its answers are");
    writer.shutdown(Shutdown::Write).unwrap();
    let (answers, malformed) = reader.join().unwrap();
    assert_eq!(
        answers,
        PACKETS + 1,
        "the greeting and one answer per packet"
    );
    assert_eq!(malformed, PACKETS);
    let peak = rig.metric("cairn_xml_queue_peak_packets");
    assert!(peak <= QUEUED as f64, "queue peak {peak}");
    // Everything queued was written or freed.
    wait_for(Duration::from_secs(30), "the queues to drain", || {
        (rig.metric("cairn_xml_queued_packets") == 0.0).then_some(())
    });
}

#[test]
fn a_rest_login_flood_is_throttled_and_a_logged_in_user_is_not() {
    let rig = rig();
    assert_eq!(rig.get("/versions", ADMIN).status, 200);
    // A failed login is answered only after the delay.
    let started = Instant::now();
    let wrong = rig.get("/versions", (ADMIN.0, "wrong-password"));
    assert_eq!(wrong.status, 401, "{}", wrong.text());
    assert!(
        started.elapsed() >= DELAY,
        "answered after {:?}",
        started.elapsed()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let (refused, busy) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let flooders: Vec<_> = (0..24)
        .map(|i| {
            let (stop, refused, busy) = (stop.clone(), refused.clone(), busy.clone());
            let url = format!("{}/versions", rig.rest);
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let name = if i % 2 == 0 { "admin" } else { "nobody" };
                    let auth = basic(name, &format!("guess-{i}-{n}"));
                    let r = http::request("GET", &url, &[("Authorization", &auth)], b"");
                    n += 1;
                    match r.status {
                        401 => refused.fetch_add(1, Ordering::Relaxed),
                        503 => {
                            assert_eq!(r.json()["message"][0]["code"], "busy", "{}", r.text());
                            assert_eq!(r.header("retry-after"), Some("1"));
                            busy.fetch_add(1, Ordering::Relaxed)
                        }
                        other => panic!("a wrong password answered {other}: {}", r.text()),
                    };
                }
            })
        })
        .collect();
    // The logged-in admin keeps working throughout.
    let mut answered = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while answered < 20 || busy.load(Ordering::Relaxed) == 0 || refused.load(Ordering::Relaxed) == 0
    {
        assert!(
            Instant::now() < deadline,
            "no busy or no refused answer within 120 s"
        );
        let r = rig.get("/versions", ADMIN);
        assert_eq!(
            r.status,
            200,
            "a logged-in request during the flood: {}",
            r.text()
        );
        answered += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        f.join().unwrap();
    }
    assert_eq!(rig.metric("cairn_auth_hashing_peak"), 1.0);
    assert!(rig.metric("cairn_auth_busy_total") >= 1.0);
}
