//! The dashboard on a catalog of 10,000 backups (issue 16: "fast on a cluster with 10,000
//! backups; no page loads the whole catalog").
//!
//! A 3-node cluster with the dashboard and an agent with one container. One real backup
//! (CLI) puts a manifest in the cluster; then 10,000 backups that reuse it are committed
//! through `cairn_api::Client::commit`, several in flight (the commit verifies the manifest's
//! chunks like any other): 1,000 of the container's environment, the rest spread over 90
//! other environments. Then, signed in over plain HTTP:
//! the overview counts them from the catalog's totals, the hosts page shows the count and
//! the latest backup and no other backup row, and the environment's page shows one page of
//! 25, newest first, with an "Older →" cursor that walks on without a gap or a repeat. The
//! nodes count the backup records they answered to list calls (`NodeStatus.backups_listed`):
//! loading every page costs a few pages of records, not the catalog, so the test fails if a
//! page goes back to reading everything. The time of each page is printed, not asserted.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use cairn_api::{Client, Credentials};
use cairn_core::{BackupId, EnvId};
use cairn_tests::http::request;
use cairn_tests::{add_user, wait_for, Agent, TestCluster};

const TOKEN: &str = "ui-scale-t0ken";
const ADMIN: (&str, &str) = ("scale-admin", "admin-pass-1");
const BACKUPS: usize = 10_000;
/// Of which the container's environment holds these; the rest go to [`OTHER_ENVS`] other
/// environments. (A commit reads its environment's backups for retention, so one
/// environment of 10,000 costs the commits quadratic time: minutes in a debug build.)
const IN_C1: usize = 1_000;
const OTHER_ENVS: usize = 90;
const IN_FLIGHT: usize = 16;
const PAGE: usize = 25;

fn rows(html: &str, class: &str) -> usize {
    html.matches(&format!("<tr class=\"{class}\"")).count()
}

/// The backup ids (as dashboard links) in the backups table of an environment page.
fn backup_links(html: &str) -> Vec<String> {
    let Some(at) = html.find("<table class=\"backups\"") else {
        return Vec::new();
    };
    let table = &html[at..html[at..]
        .find("</table>")
        .map(|e| at + e)
        .unwrap_or(html.len())];
    let mut out = Vec::new();
    for row in table.split("<tr>").skip(2) {
        if let Some(i) = row.find("href=\"/ui/backups/") {
            let rest = &row[i + 6..];
            out.push(rest[..rest.find('"').unwrap()].to_string());
        }
    }
    out
}

#[test]
fn every_dashboard_page_stays_small_at_ten_thousand_backups() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    add_user(&users, ADMIN.0, "admin", ADMIN.1);
    let extra = format!(
        "[gateway]\nusers_file = \"{}\"\n[gateway.rest]\nlisten = \"127.0.0.1:0\"\n",
        users.display()
    );
    let cluster = TestCluster::start_with_token(dir.path(), 3, &extra, Some(TOKEN));
    let node = &cluster.nodes[0];
    let base = wait_for(Duration::from_secs(30), "the dashboard's address", || {
        let log = std::fs::read_to_string(&node.log).ok()?;
        let at = log.find("Dashboard at ")?;
        let rest = &log[at + "Dashboard at ".len()..];
        Some(
            rest.lines()
                .next()?
                .trim()
                .trim_end_matches("ui/")
                .trim_end_matches('/')
                .to_string(),
        )
    });
    let containers = dir.path().join("containers");
    std::fs::create_dir_all(containers.join("c1/etc")).unwrap();
    std::fs::write(containers.join("c1/etc/hostname"), "c1.example\n").unwrap();
    let token = node
        .ok(&["agent", "token", "create", "h1"])
        .trim()
        .to_string();
    let urls: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("{:?}", n.url))
        .collect();
    let _agent = Agent::start(
        &dir.path().join("agent-h1"),
        &format!(
            "cluster = [{}]\nhost_id = \"h1\"\nstate_dir = \"{}\"\ntoken = \"{token}\"\nregister_interval_ms = 1000\n[discovery]\ndirs = [\"{}\"]\n",
            urls.join(", "),
            dir.path().join("h1-state").display(),
            containers.display()
        ),
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(async {
        let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url.clone()).collect();
        Client::connect(&urls.join(","), &Credentials::token(Some(TOKEN)))
            .await
            .unwrap()
    });
    // The container's environment, as the agent registered it.
    let env: EnvId = wait_for(Duration::from_secs(60), "the agent to register c1", || {
        rt.block_on(client.list_envs(Some("h1")))
            .ok()?
            .into_iter()
            .find(|e| e.record.name == "c1")
            .map(|e| e.record.eid)
    });

    // One real backup (elsewhere) puts a manifest and its chunks in the cluster.
    let source = EnvId::derive("ui-scale/manifest-source");
    let out = node.ok(&[
        "backup",
        containers.join("c1").to_str().unwrap(),
        "--env",
        &source.to_string(),
        "--json",
    ]);
    let made: serde_json::Value = serde_json::from_str(&out).unwrap();
    let template = rt
        .block_on(client.show(&made["id"].as_str().unwrap().parse().unwrap()))
        .unwrap();

    // 10,000 backups reusing it, several in flight (each asks for a time in the last ten
    // days; the catalog gives the next free second after its environment's last id).
    let start = Instant::now();
    let first = chrono::Utc::now().timestamp() - 10 * 86_400;
    let done = std::sync::atomic::AtomicUsize::new(0);
    let committed: Vec<BackupId> = rt.block_on(async {
        use futures::StreamExt;
        futures::stream::iter(0..BACKUPS)
            .map(|i| {
                let client = client.clone();
                let mut r = template.clone();
                let (into, n) = if i < IN_C1 {
                    (env, i)
                } else {
                    let k = i - IN_C1;
                    (
                        EnvId::derive(&format!("ui-scale/{}", k % OTHER_ENVS)),
                        k / OTHER_ENVS,
                    )
                };
                r.id = BackupId::new(into, first + n as i64 * 860);
                r.host = "h1".into();
                let done = &done;
                async move {
                    let id = match client.commit(&r, None, None).await {
                        Ok(r) => r.id,
                        Err(e) => panic!("commit {i} of {}: {e}", r.id),
                    };
                    let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    if n.is_multiple_of(1000) {
                        println!("{n} committed after {:.1} s", start.elapsed().as_secs_f64());
                    }
                    id
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await
    });
    let took = start.elapsed();
    assert_eq!(committed.iter().collect::<HashSet<_>>().len(), BACKUPS);
    println!(
        "committed {BACKUPS} backups in {:.1} s ({:.0}/s, {IN_FLIGHT} in flight)",
        took.as_secs_f64(),
        BACKUPS as f64 / took.as_secs_f64()
    );
    let mut newest_first: Vec<BackupId> = committed
        .iter()
        .copied()
        .filter(|id| id.env == env)
        .collect();
    assert_eq!(newest_first.len(), IN_C1);
    newest_first.sort_by_key(|id| std::cmp::Reverse(id.time));

    // Sign in over plain HTTP.
    let login = request(
        "POST",
        &format!("{base}/ui/login"),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        format!("user={}&password={}&next=/ui/", ADMIN.0, ADMIN.1).as_bytes(),
    );
    assert_eq!(login.status, 303, "{}", login.text());
    let cookie = login
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let listed = || -> u64 {
        cluster
            .nodes
            .iter()
            .map(|n| {
                rt.block_on(client.node_status_at(&n.url))
                    .unwrap()
                    .backups_listed
            })
            .sum()
    };
    let get = |path: &str| -> (String, Duration) {
        let t = Instant::now();
        let r = request("GET", &format!("{base}{path}"), &[("Cookie", &cookie)], b"");
        let took = t.elapsed();
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        (r.text(), took)
    };
    let before = listed();
    let mut times = Vec::new();

    // The overview counts every backup, from the catalog's totals.
    let (page, t) = get("/ui/");
    times.push(("overview", t, page.len()));
    assert!(
        page.contains(&format!("<dt>Backups</dt><dd>{}</dd>", BACKUPS + 1)),
        "the overview counts every backup"
    );
    assert!(page.contains("<svg"), "the plot is drawn");

    // The hosts page: c1 with its count and latest backup, and no list of backups.
    let (page, t) = get("/ui/hosts");
    times.push(("hosts", t, page.len()));
    assert_eq!(rows(&page, "envrow"), 1, "{page}");
    assert!(
        page.contains(&format!("<td class=\"count\">{IN_C1}</td>")),
        "the hosts page shows c1's count"
    );
    assert_eq!(
        page.matches("href=\"/ui/backups/").count(),
        1,
        "the hosts page links c1's latest backup and no other"
    );
    assert!(
        page.contains(&newest_first[0].stamp()),
        "the latest backup is c1's newest"
    );

    // The environment's page: one page of 25, newest first, then "Older →" four times.
    let mut path = format!("/ui/envs/{env}");
    let mut seen = Vec::new();
    for n in 0..4 {
        let (page, t) = get(&path);
        times.push(("environment", t, page.len()));
        let links = backup_links(&page);
        assert_eq!(links.len(), PAGE, "page {n} shows one page of backups");
        seen.extend(links);
        assert!(
            page.contains(&format!("of {IN_C1} backups, newest first")),
            "{page}"
        );
        let at = page.find("id=\"older\"").expect("an Older link");
        let href_at = page[..at].rfind("href=\"").unwrap() + 6;
        path = page[href_at..href_at + page[href_at..].find('"').unwrap()].replace("&amp;", "&");
    }
    let want: Vec<String> = newest_first[..4 * PAGE]
        .iter()
        .map(|id| format!("/ui/backups/{}/{}", id.env, id.stamp()))
        .collect();
    assert_eq!(
        seen, want,
        "the pages walk newest first without a gap or a repeat"
    );

    // The deepest page: before the tenth-oldest, nine backups and no Older link.
    let tenth_oldest = newest_first[IN_C1 - 10];
    let (page, t) = get(&format!("/ui/envs/{env}?before={}", tenth_oldest.stamp()));
    times.push(("environment, last page", t, page.len()));
    assert_eq!(backup_links(&page).len(), 9);
    assert!(!page.contains("id=\"older\""));
    assert!(page.contains("id=\"newest\""));

    // What every page load cost the nodes in backup records: pages, never the catalog.
    let cost = listed() - before;
    let pages = 1 + 4 * PAGE as u64 + 9;
    assert!(
        cost <= pages + 10,
        "the pages read {cost} backup records from the nodes; one page each is {pages}"
    );
    assert!(
        cost >= pages,
        "the nodes counted {cost} listed records, fewer than shown"
    );

    for (what, t, len) in &times {
        println!(
            "{what}: {:.0} ms, {} KiB",
            t.as_secs_f64() * 1000.0,
            len / 1024
        );
    }
    for (what, _, len) in &times {
        assert!(*len < 256 << 10, "the {what} page is {len} bytes");
    }
}
