//! How the catalog's cost grows with the number of backups, on a real 3-node cluster: the
//! commit rate through raft, list latencies, the catalog's size on disk, and the catch-up
//! time of a node that was down while the catalog grew. One markdown row per size.
//!
//!   CAIRN_BIN=target/release/cairn cargo run -p cairn --example catalog_scale -- 1000 10000
//!
//! The sizes are cumulative: the catalog grows to each in turn. One real backup (the CLI)
//! stores a manifest; every other backup is a commit that reuses it (the commit checks its
//! chunks like any other), 16 in flight, over 100 environments. Node 3 is stopped while each
//! step's backups are committed and started again after: its catch-up is the time until it
//! reports the leader's catalog index (from its log, or a snapshot when the log was
//! compacted). Latencies are medians of 5 calls through the typed client. The snapshot
//! column is the size of the last raft snapshot node 1 built (a node snapshots every 2,000
//! log entries), read from its log line "metadata snapshot built ... bytes=N".

use std::path::Path;
use std::time::{Duration, Instant};

use cairn_api::{Client, Credentials};
use cairn_core::{BackupId, EnvId};
use cairn_tests::{wait_for, TestCluster};
use futures::StreamExt;

const TOKEN: &str = "catalog-scale-t0ken";
const IN_FLIGHT: usize = 16;
const ENVS: u64 = 100;

fn dir_bytes(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The size and last log index of the newest snapshot a node's log says it built.
fn last_snapshot(log: &Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains("metadata snapshot built"))?;
    let field = |name: &str| -> Option<u64> {
        let at = line.find(name)? + name.len();
        let rest = line[at..].trim_start_matches("Some(");
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    };
    Some((field(" bytes=")?, field(" last_index=")?))
}

fn main() {
    let sizes: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number of backups"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 10_000]
    } else {
        sizes
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start_with_token(dir.path(), 3, "", Some(TOKEN));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url.clone()).collect();
    let client = rt
        .block_on(Client::connect(
            &urls[..2].join(","),
            &Credentials::token(Some(TOKEN)),
        ))
        .unwrap();

    let src = dir.path().join("src");
    cairn_tests::fleet::dir_host(&src, &["c1"], 64 << 10);
    let source = EnvId::derive("catalog-scale/source");
    let out = cluster.nodes[0].ok(&[
        "backup",
        src.to_str().unwrap(),
        "--env",
        &source.to_string(),
        "--json",
    ]);
    let made: serde_json::Value = serde_json::from_str(&out).unwrap();
    let template = rt
        .block_on(client.show(&made["id"].as_str().unwrap().parse().unwrap()))
        .unwrap();

    println!("| backups | commits/s (16 in flight) | list one page of 25 | list every backup | list environments | catalog on disk per node | last snapshot (at log index) | node 3 catch-up after missing the step |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut have: u64 = 1;
    let first = chrono::Utc::now().timestamp() - 400 * 86_400;
    for size in sizes {
        if size <= have {
            continue;
        }
        cluster.nodes[2].stop();
        let start = Instant::now();
        let n = size - have;
        rt.block_on(async {
            futures::stream::iter(have..size)
                .map(|i| {
                    let client = client.clone();
                    let mut r = template.clone();
                    let env = EnvId::derive(&format!("catalog-scale/{}", i % ENVS));
                    r.id = BackupId::new(env, first + (i / ENVS) as i64 * 60);
                    async move {
                        if let Err(e) = client.commit(&r, None, None).await {
                            panic!("commit {i}: {e}");
                        }
                    }
                })
                .buffer_unordered(IN_FLIGHT)
                .collect::<Vec<()>>()
                .await
        });
        let rate = n as f64 / start.elapsed().as_secs_f64();
        have = size;

        let time = |f: &dyn Fn()| {
            median(
                (0..5)
                    .map(|_| {
                        let t = Instant::now();
                        f();
                        t.elapsed().as_secs_f64() * 1000.0
                    })
                    .collect(),
            )
        };
        let page = time(&|| {
            rt.block_on(client.list_page(None, 25, None)).unwrap();
        });
        // The whole catalog in one answer, as `backups list` without an environment asks.
        let all = match rt.block_on(client.list(None)) {
            Ok(v) if v.len() as u64 == have => format!(
                "{:.0} ms",
                time(&|| {
                    rt.block_on(client.list(None)).unwrap();
                })
            ),
            Ok(v) => format!("{} of {have} listed", v.len()),
            Err(e) => format!("fails: {e}"),
        };
        let envs = time(&|| {
            rt.block_on(client.list_envs(None)).unwrap();
        });
        let disk = dir_bytes(&cluster.nodes[0].data.join("meta")) as f64 / (1 << 20) as f64;

        // Node 3 missed this step: time until it has the leader's catalog.
        let leader_index = rt
            .block_on(client.node_status_at(&urls[0]))
            .unwrap()
            .catalog_index;
        let t = Instant::now();
        cluster.nodes[2].restart();
        let url3 = cluster.nodes[2].url.clone();
        wait_for(Duration::from_secs(600), "node 3 to catch up", || {
            let s = rt.block_on(client.node_status_at(&url3)).ok()?;
            (s.catalog_index >= leader_index && s.backups == have).then_some(())
        });
        let catch_up = t.elapsed().as_secs_f64();
        let snapshot = match last_snapshot(&cluster.nodes[0].log) {
            Some((bytes, index)) => {
                format!("{:.1} MiB ({index})", bytes as f64 / (1 << 20) as f64)
            }
            None => "none yet".to_string(),
        };
        println!(
            "| {have} | {rate:.0} | {page:.1} ms | {all} | {envs:.1} ms | {disk:.1} MiB | {snapshot} | {catch_up:.1} s |"
        );
    }
}
