//! The web dashboard in a real browser: headless Chromium driven over WebDriver
//! (`cairn_tests::webdriver`) against `cairn node` processes whose gateway serves `/ui/`, a
//! `cairn agent` with one container, and users made with `cairn user add`.
//!
//! One test walks what an operator does, in order, on one rig: sign in, see the nodes (and
//! run a scrub), back up with the keyboard only (Tab to the button, Enter) and watch the progress bar rise to 100 without a reload, browse the backup, download a
//! file and a directory and compare them with the source, restore one changed path and see
//! it back in the container, restore the backup onto a second host (`h2`) and find its files
//! there, cancel a backup held at a pause point and watch it end "cancelled"; then a viewer, who sees no delete button and whose forged delete
//! (with a valid session and CSRF token) the cluster refuses; then requests without the CSRF
//! token; and the 390 px layout. Screenshots of each page go to `target/ui-screenshots/`.
//! Chromium and chromedriver must be installed (`chromium chromium-driver`): without them
//! the test fails, it does not skip.

use std::path::PathBuf;
use std::time::Duration;

use cairn_tests::webdriver::{screenshot_dir, Browser};
use cairn_tests::{add_user, noise, wait_for, Agent, TestCluster};

const TOKEN: &str = "ui-cluster-t0ken";
const ADMIN: (&str, &str) = ("ui-admin", "admin-pass-1");
const VIEWER: (&str, &str) = ("ui-viewer", "viewer-pass-1");
const WAIT: Duration = Duration::from_secs(60);

/// A 3-node cluster serving the REST listener (and so the dashboard), an agent (host `h1`)
/// with container `c1`, and an admin and a viewer.
struct Rig {
    _dir: tempfile::TempDir,
    _cluster: TestCluster,
    _agent: Agent,
    /// A second host's agent (`h2`, container `c2`): a restore onto another host lands there.
    _agent2: Agent,
    /// The dashboard's origin (`http://127.0.0.1:PORT`).
    base: String,
    container: PathBuf,
    /// A directory on `h2` for a restore onto it.
    h2_target: PathBuf,
    /// `h1`'s agent's pause points (`CAIRN_FAILPOINTS`).
    points: PathBuf,
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    add_user(&users, ADMIN.0, "admin", ADMIN.1);
    add_user(&users, VIEWER.0, "viewer", VIEWER.1);
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
    let root = containers.join("c1");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/hostname"), "c1.example\n").unwrap();
    std::fs::write(root.join("etc/settings.bin"), noise(3 << 20, 7)).unwrap();
    // Big enough, with the upload limit below, for the backup to run a few seconds.
    std::fs::write(root.join("data.bin"), noise(24 << 20, 1)).unwrap();
    let token = node
        .ok(&["agent", "token", "create", "h1"])
        .trim()
        .to_string();
    let urls: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("{:?}", n.url))
        .collect();
    let points = dir.path().join("h1-points");
    std::fs::create_dir_all(&points).unwrap();
    let agent = Agent::start_with_env(
        &dir.path().join("agent-h1"),
        &format!(
            "cluster = [{}]\nhost_id = \"h1\"\nstate_dir = \"{}\"\ntoken = \"{token}\"\nregister_interval_ms = 1000\nreport_interval_ms = 200\nupload_limit_bytes_per_sec = 4000000\n[discovery]\ndirs = [\"{}\"]\n",
            urls.join(", "),
            dir.path().join("h1-state").display(),
            containers.display()
        ),
        &[("CAIRN_FAILPOINTS", points.to_str().unwrap())],
    );
    // A second host with a container of its own.
    let containers2 = dir.path().join("containers-h2");
    std::fs::create_dir_all(containers2.join("c2")).unwrap();
    std::fs::write(containers2.join("c2/motd"), "c2\n").unwrap();
    let token2 = node
        .ok(&["agent", "token", "create", "h2"])
        .trim()
        .to_string();
    let agent2 = Agent::start(
        &dir.path().join("agent-h2"),
        &format!(
            "cluster = [{}]\nhost_id = \"h2\"\nstate_dir = \"{}\"\ntoken = \"{token2}\"\nregister_interval_ms = 1000\nreport_interval_ms = 200\n[discovery]\ndirs = [\"{}\"]\n",
            urls.join(", "),
            dir.path().join("h2-state").display(),
            containers2.display()
        ),
    );
    Rig {
        h2_target: containers2.join("restored-c1"),
        _dir: dir,
        _cluster: cluster,
        _agent: agent,
        _agent2: agent2,
        base,
        container: root,
        points,
    }
}

fn sign_in(b: &Browser, base: &str, who: (&str, &str)) {
    b.goto(&format!("{base}/ui/"));
    b.wait_for(WAIT, "the sign-in page", |b| {
        b.url().contains("/ui/login").then_some(())
    });
    b.find("#user").type_text(who.0);
    b.find("#password").type_text(who.1);
    b.find("form.login button[type=submit]").click();
    b.wait_for(WAIT, "the overview after signing in", |b| {
        b.exists("#h-health").then_some(())
    });
}

fn text_of(b: &Browser, css: &str) -> String {
    b.find(css).text()
}

/// The text of the first element matching `css` now, or "" (read in the page, so a page
/// being replaced meanwhile gives "" instead of a stale element).
fn text_now(b: &Browser, css: &str) -> String {
    b.run(
        "var e = document.querySelector(arguments[0]); return e ? e.textContent : '';",
        vec![serde_json::json!(css)],
    )
    .as_str()
    .unwrap_or_default()
    .to_string()
}

/// The page's CSRF token (what its forms carry).
fn csrf(b: &Browser) -> String {
    b.find("meta[name=csrf-token]")
        .attr("content")
        .expect("a CSRF token in the page")
}

/// The page is no wider than the window (tables scroll inside their own box).
fn no_horizontal_overflow(b: &Browser, page: &str) {
    let v = b.run(
        "return [document.documentElement.scrollWidth, window.innerWidth];",
        vec![],
    );
    let (scroll, inner) = (v[0].as_u64().unwrap(), v[1].as_u64().unwrap());
    assert!(
        scroll <= inner,
        "{page} at 390 px: the page is {scroll} px wide in a {inner} px window"
    );
}

#[test]
fn an_operator_and_a_viewer_use_the_dashboard_in_a_real_browser() {
    let rig = rig();
    let base = rig.base.clone();
    let shots = screenshot_dir();
    let b = Browser::start(1280, 900);

    // Sign in (the dashboard sends an anonymous visitor to the sign-in page first).
    sign_in(&b, &base, ADMIN);
    b.screenshot(&shots.join("overview.png"));
    // Three nodes in three zones, RF 3: every node holds every chunk, all capacity usable.
    let page = b.source();
    assert!(
        page.contains("<dt>Zone redundancy</dt><dd>maximum</dd>"),
        "{page}"
    );
    assert!(
        page.contains("<dt>Usable capacity</dt><dd>100 % of raw</dd>"),
        "{page}"
    );

    // A scrub run from the CLI, not from this dashboard: the overview shows its result,
    // which the nodes keep.
    rig._cluster.nodes[0].ok(&["scrub"]);
    b.goto(&format!("{base}/ui/"));
    let last_scrub = b.wait_for(WAIT, "the overview's last scrub", |b| {
        if b.exists("li[data-last-run='scrub']") {
            return Some(text_of(b, "li[data-last-run='scrub']"));
        }
        b.goto(&format!("{base}/ui/"));
        None
    });
    assert!(
        last_scrub.starts_with("Last scrub (node ") && last_scrub.contains(" checked, 0 corrupt"),
        "{last_scrub}"
    );

    // The three nodes, each up.
    b.goto(&format!("{base}/ui/nodes"));
    let rows = b.wait_for(WAIT, "three nodes up", |b| {
        let rows = b.find_all("tr.node");
        (rows.len() == 3 && rows.iter().all(|r| r.text().contains(" up"))).then_some(rows)
    });
    assert_eq!(rows.len(), 3);
    // An admin starts a scrub and reads its report.
    b.find("form[action='/ui/nodes/scrub'] button").click();
    b.wait_for(WAIT, "the scrub's report", |b| {
        if b.source().contains("checked, 0 corrupt") {
            return Some(());
        }
        b.goto(&format!("{base}/ui/nodes"));
        None
    });
    for node in 1..=3 {
        let row = text_of(&b, &format!("tr[data-node-run='{node}-scrub']"));
        assert!(row.contains(" checked, 0 corrupt"), "node {node}: {row}");
    }
    b.screenshot(&shots.join("nodes.png"));

    // The container, from the hosts page.
    b.goto(&format!("{base}/ui/hosts"));
    b.wait_for(WAIT, "the container c1 on the hosts page", |b| {
        if b.exists("a.env") {
            return Some(());
        }
        b.goto(&format!("{base}/ui/hosts"));
        None
    });
    b.screenshot(&shots.join("hosts.png"));
    b.find("a.env").click();
    b.wait_for(WAIT, "the environment page", |b| {
        b.exists("#backup-now").then_some(())
    });
    let env_url = b.url();

    // Back up now, with the keyboard only: from the top of the page, Tab's first stop is
    // the skip link, every stop shows the focus ring, Tab reaches the button, and Enter
    // presses it. Then the job's page, whose bar rises to 100 without a reload.
    let mut stops: Vec<String> = Vec::new();
    while stops.len() < 60 {
        b.press("\u{E004}");
        let v = b.run(
            "var e = document.activeElement; return [e.id, e.tagName + (e.id ? '#' + e.id : '') + (e.className ? '.' + e.className : ''), getComputedStyle(e).outlineStyle];",
            vec![],
        );
        let stop = v[1].as_str().unwrap_or_default().to_string();
        assert_ne!(
            v[2], "none",
            "no focus ring at Tab stop {stop} (after {stops:?})"
        );
        stops.push(stop);
        if v[0] == "backup-now" {
            break;
        }
    }
    assert!(
        stops.last().is_some_and(|s| s.contains("#backup-now")),
        "Tab never reached Back up now: {stops:?}"
    );
    assert!(stops[0].contains("skip"), "the first Tab stop: {stops:?}");
    b.press("\u{E007}");
    b.wait_for(WAIT, "the job's page", |b| {
        b.exists("progress[data-job]").then_some(())
    });
    let job_url = b.url();
    assert!(job_url.contains("/ui/jobs/"), "{job_url}");
    b.run("window.__notReloaded = 'still here'; return null;", vec![]);
    let first: u64 = b
        .find("progress[data-job]")
        .attr("value")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(
        first < 100,
        "the backup was already done when its page loaded: nothing shows the bar moving"
    );
    let mut seen = vec![first];
    b.wait_for(Duration::from_secs(120), "the progress bar to reach 100", |b| {
        let v = b.run(
            "var p = document.querySelector('progress[data-job]'); return [p.value, document.querySelector('[data-job-state]').textContent];",
            vec![],
        );
        let value = v[0].as_f64().unwrap_or(0.0) as u64;
        if seen.last() != Some(&value) {
            seen.push(value);
        }
        let state = v[1].as_str().unwrap_or_default().to_string();
        assert_ne!(state, "failed", "the backup failed: {}", b.source());
        (value == 100 && state == "succeeded").then_some(())
    });
    assert_eq!(
        b.run("return window.__notReloaded || null;", vec![]),
        serde_json::json!("still here"),
        "the page was reloaded: the bar must move by itself"
    );
    assert_eq!(b.url(), job_url);
    // Its log, updated live too: claimed on host h1, the phases, the commit, the result.
    let log = b.wait_for(WAIT, "the job's log to show its end", |b| {
        let log = text_of(b, "ol[data-job-log]");
        log.contains("succeeded (backup ").then_some(log)
    });
    for line in [
        "asked by ui:",
        "started: claimed by the agent of host \"h1\"",
        "phase: ",
        " committed: ",
    ] {
        assert!(log.contains(line), "no {line:?} in the job's log: {log}");
    }
    b.screenshot(&shots.join("job.png"));

    // The backup's file browser.
    b.find("a[href^='/ui/backups/']").click();
    b.wait_for(WAIT, "the file browser", |b| {
        b.exists("table.files").then_some(())
    });
    let backup_url = b.url();
    b.screenshot(&shots.join("backup.png"));
    b.find("a.dir[href*='path=etc']").click();
    b.wait_for(WAIT, "the etc directory", |b| {
        b.exists("a.file[download='settings.bin']").then_some(())
    });
    b.screenshot(&shots.join("browser.png"));

    // Download a file (fetched in the page, with its session) and a directory as tar.
    let href = b
        .find("a.file[download='settings.bin']")
        .attr("href")
        .expect("a download link");
    let (status, bytes) = b.fetch_bytes(&format!("{base}{href}"));
    assert_eq!(status, 200);
    let source = std::fs::read(rig.container.join("etc/settings.bin")).unwrap();
    assert!(
        bytes == source,
        "the downloaded file differs from the source ({} bytes, not {})",
        bytes.len(),
        source.len()
    );
    let tar_href = b.find("#tar").attr("href").expect("a tar link");
    let (status, tar) = b.fetch_bytes(&format!("{base}{tar_href}"));
    assert_eq!(status, 200);
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    assert!(
        find(&tar, b"hostname") && find(&tar, b"c1.example\n"),
        "the tar holds etc/hostname"
    );
    assert!(
        find(&tar, &source[..4096]),
        "the tar holds settings.bin's content"
    );

    // Change a file in the container, tick it, restore it.
    std::fs::write(
        rig.container.join("etc/hostname"),
        "changed since the backup\n",
    )
    .unwrap();
    b.find("input[name=path][value='etc/hostname']").click();
    b.find("#restore-selected").click();
    b.wait_for(WAIT, "the confirmation", |b| {
        b.exists(".confirm").then_some(())
    });
    let confirm = text_of(&b, ".confirm");
    assert!(
        confirm.contains("etc/hostname") && confirm.contains("overwritten"),
        "{confirm}"
    );
    b.screenshot(&shots.join("restore-confirm.png"));
    b.find("main form button.primary").click();
    b.wait_for(WAIT, "the restore to succeed", |b| {
        let state = b.find("[data-job-state]").text();
        assert_ne!(state, "failed", "the restore failed: {}", b.source());
        (state == "succeeded").then_some(())
    });
    assert_eq!(
        std::fs::read_to_string(rig.container.join("etc/hostname")).unwrap(),
        "c1.example\n",
        "the restored file is back in the container"
    );

    // Restore onto another host: h2, into a new directory. The confirmation names the host
    // and the directory, and that nothing else is touched; the files land on h2.
    b.goto(&format!("{backup_url}/restore"));
    b.wait_for(WAIT, "the restore form", |b| {
        b.exists("#m-host").then_some(())
    });
    b.wait_for(WAIT, "h2 among the hosts", |b| {
        if b.exists("#host option[value='h2']") {
            return Some(());
        }
        b.goto(&format!("{backup_url}/restore"));
        None
    });
    b.find("#m-host").click();
    b.find("#host option[value='h2']").click();
    let target = rig.h2_target.display().to_string();
    b.find("#target").type_text(&target);
    b.find("form.restore button.primary").click();
    b.wait_for(WAIT, "the confirmation", |b| {
        b.exists(".confirm").then_some(())
    });
    let confirm = text_of(&b, ".confirm");
    assert!(
        confirm.contains(&target)
            && confirm.contains("on host h2")
            && confirm.contains("Nothing else is touched"),
        "{confirm}"
    );
    b.screenshot(&shots.join("restore-other-host-confirm.png"));
    b.find("main form button.primary").click();
    b.wait_for(WAIT, "the restore onto h2 to succeed", |b| {
        let state = b.find("[data-job-state]").text();
        assert_ne!(
            state,
            "failed",
            "the restore onto h2 failed: {}",
            b.source()
        );
        (state == "succeeded").then_some(())
    });
    let log = text_of(&b, "ol[data-job-log]");
    assert!(
        log.contains("claimed by the agent of host \"h2\""),
        "h2's agent ran it: {log}"
    );
    b.screenshot(&shots.join("restore-other-host-job.png"));
    assert_eq!(
        std::fs::read_to_string(rig.h2_target.join("etc/hostname")).unwrap(),
        "c1.example\n",
        "the backup's files are on h2"
    );
    assert!(
        std::fs::read(rig.h2_target.join("etc/settings.bin")).unwrap() == source,
        "settings.bin restored on h2 differs from the source"
    );

    // Cancel: a backup held at its start (a pause point of h1's agent) is cancelled from its
    // page, and the page shows it end "cancelled" by itself.
    let gate = rig.points.join("backup-before-walk");
    std::fs::write(&gate, b"").unwrap();
    b.goto(&env_url);
    b.find("#backup-now").click();
    b.wait_for(WAIT, "the job's page", |b| {
        b.exists("div[data-job-cancel] button").then_some(())
    });
    let held_url = b.url();
    wait_for(WAIT, "the backup to stand at its pause point", || {
        rig.points
            .join("backup-before-walk.reached")
            .exists()
            .then_some(())
    });
    b.find("div[data-job-cancel] button").click();
    b.wait_for(WAIT, "the cancel to be asked", |b| {
        (b.url() == held_url && text_now(b, "ol[data-job-log]").contains("cancel requested by ui:"))
            .then_some(())
    });
    assert_eq!(text_now(&b, "[data-job-state]"), "running");
    b.screenshot(&shots.join("cancel-requested.png"));
    b.run("window.__notReloaded = 'still here'; return null;", vec![]);
    std::fs::remove_file(&gate).unwrap();
    b.wait_for(WAIT, "the job to end cancelled", |b| {
        let state = text_now(b, "[data-job-state]");
        assert!(
            state == "running" || state == "cancelled",
            "the held backup ended {state}: {}",
            b.source()
        );
        (state == "cancelled").then_some(())
    });
    assert_eq!(
        b.run("return window.__notReloaded || null;", vec![]),
        serde_json::json!("still here"),
        "the page was reloaded: the state must change by itself"
    );
    // Its end time, filled in by the same event.
    b.wait_for(WAIT, "the job's end time on its page", |b| {
        let t = text_now(b, "[data-job-finished]");
        (t.len() == "2026-01-01 00:00:00".len()).then_some(())
    });
    b.screenshot(&shots.join("cancelled.png"));

    // The jobs page lists both.
    b.goto(&format!("{base}/ui/jobs"));
    b.wait_for(WAIT, "the jobs page", |b| {
        (b.find_all("progress[data-job]").len() >= 2).then_some(())
    });
    b.screenshot(&shots.join("jobs.png"));

    // The overview counts the backup (its cache was cleared when the backup was seen ending).
    b.goto(&format!("{base}/ui/"));
    b.find("svg.plot");
    b.screenshot(&shots.join("overview-after.png"));

    // No CSRF token, a wrong one: refused, and nothing happens.
    b.goto(&env_url);
    let (status, _) = b.post_form(&format!("{env_url}/backup"), &[]);
    assert_eq!(status, 403, "a POST without the CSRF token");
    let (status, _) = b.post_form(&format!("{env_url}/backup"), &[("csrf", "0000")]);
    assert_eq!(status, 403, "a POST with a wrong CSRF token");

    // At 390 px wide, no page is wider than the window.
    b.resize(390, 844);
    for (name, url) in [
        ("overview", format!("{base}/ui/")),
        ("hosts", format!("{base}/ui/hosts")),
        ("environment", env_url.clone()),
        ("backup", backup_url.clone()),
        ("jobs", format!("{base}/ui/jobs")),
        ("nodes", format!("{base}/ui/nodes")),
    ] {
        b.goto(&url);
        b.find("main h1");
        no_horizontal_overflow(&b, name);
        b.screenshot(&shots.join(format!("narrow-{name}.png")));
    }
    b.resize(1280, 900);

    // Sign out: the session is gone.
    b.goto(&format!("{base}/ui/"));
    b.find("form.signout button").click();
    b.wait_for(WAIT, "the sign-in page", |b| {
        b.exists("form.login").then_some(())
    });
    b.goto(&format!("{base}/ui/jobs"));
    b.wait_for(WAIT, "the sign-in page again", |b| {
        b.url().contains("/ui/login").then_some(())
    });

    // A viewer: no delete (nor backup) button, and a forged delete is refused by the cluster.
    sign_in(&b, &base, VIEWER);
    b.goto(&env_url);
    b.wait_for(WAIT, "the environment page", |b| {
        b.exists("table.backups").then_some(())
    });
    assert!(!b.exists("button.delete"), "a viewer sees no delete button");
    assert!(!b.exists("#backup-now"), "a viewer sees no backup button");
    assert!(
        !b.exists("a[href$='/restore']"),
        "a viewer sees no restore link"
    );
    b.screenshot(&shots.join("viewer-environment.png"));
    let token = csrf(&b);
    let (status, page) = b.post_form(&format!("{backup_url}/delete"), &[("csrf", &token)]);
    assert_eq!(status, 403, "a viewer's forged delete: {page}");
    b.goto(&backup_url);
    b.wait_for(WAIT, "the backup, still there, without its files", |b| {
        b.exists("#no-content").then_some(())
    });
}
