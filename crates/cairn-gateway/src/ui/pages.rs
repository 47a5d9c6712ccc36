//! The dashboard's pages (GET: they read, never change anything).
//!
//! Each page makes a few cluster calls acting for the user and renders at most one page of
//! any list ([`Pager`]). No page lists backups beyond the one page it shows:
//! - the overview's backup totals and plot come from the totals the catalog keeps with every
//!   commit and delete (`Client::list_page` of one backup, whose answer carries them);
//! - the hosts page reads `ListHosts` and `ListEnvs` (one record per host and environment,
//!   each with its latest backup, found by a reverse scan, and its backup count, from the
//!   totals): no backup list;
//! - an environment's page reads one page of its backups, newest first
//!   ([`BACKUPS_PER_PAGE`]), by cursor: "Older →" carries the last id shown (`before`),
//!   so a deep page costs what the first one does;
//! - the jobs page reads `ListJobs` with a limit of the pages up to the one shown, at most
//!   [`MAX_JOBS`] (jobs are not backups; the job list is pruned by the cluster).

use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::Extension;
use cairn_api::{Client, JobFilter, JobView, NodeStatus};
use cairn_core::job::JobState;
use cairn_core::placement::PlacementNode;
use cairn_core::{BackupId, BackupRecord, EnvId};

use super::html::{self, ago, bytes, enc, esc, Pager};
use super::plot::{self, Summary};
use super::state::{Ctx, Page, UiError, UiState};

type St = State<Arc<UiState>>;

/// Most jobs the jobs page reads.
pub const MAX_JOBS: usize = 1000;
const HOSTS_PER_PAGE: usize = 50;
/// Backups on one page of an environment.
pub const BACKUPS_PER_PAGE: usize = 25;
const JOBS_PER_PAGE: usize = 50;
/// Days in the overview's plot.
const PLOT_DAYS: u32 = 30;
/// How long a node may take to answer the status call of a page.
const NODE_TIMEOUT: Duration = Duration::from_secs(3);

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Query parameters of list pages.
#[derive(serde::Deserialize, Default)]
pub struct ListQuery {
    pub page: Option<usize>,
    /// The hosts table's page (the hosts page has two lists).
    pub hpage: Option<usize>,
    pub q: Option<String>,
    pub state: Option<String>,
    /// An environment page's cursor: the stamp of the last backup the previous page showed.
    pub before: Option<String>,
}

/// An environment id from a path; one that does not parse names nothing.
pub fn parse_env(eid: &str) -> Result<EnvId, UiError> {
    eid.parse()
        .map_err(|_| UiError::NotFound(format!("{eid:?} does not name an environment")))
}

/// A backup id from its environment and stamp.
pub fn parse_backup(eid: &str, stamp: &str) -> Result<BackupId, UiError> {
    format!("{eid}/{stamp}")
        .parse()
        .map_err(|_| UiError::NotFound(format!("{eid}/{stamp} does not name a backup")))
}

/// The dashboard URL of a backup.
pub fn backup_url(id: &BackupId) -> String {
    format!("/ui/backups/{}/{}", id.env, id.stamp())
}

fn kind_label(b: &BackupRecord) -> &'static str {
    b.kind.as_str()
}

/// One node of the cluster and what it says of itself.
pub struct NodeRow {
    pub id: u64,
    pub addr: String,
    pub zone: String,
    pub draining: bool,
    pub down: bool,
    pub status: Result<NodeStatus, String>,
}

/// Every node of the placement with its own status (asked of each node, concurrently).
pub async fn nodes(c: &Client) -> (Option<cairn_core::placement::Epoch>, Vec<NodeRow>) {
    let _ = c.refresh_placement().await;
    let epoch = c.placement();
    let placed: Vec<PlacementNode> = epoch.as_ref().map(|e| e.nodes.clone()).unwrap_or_default();
    let asks = placed.iter().map(|n| {
        let c = c.clone();
        let addr = n.addr.clone();
        async move {
            match tokio::time::timeout(NODE_TIMEOUT, c.node_status_at(&addr)).await {
                Ok(Ok(s)) => Ok(s),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("no answer within 3 s".to_string()),
            }
        }
    });
    let statuses = futures::future::join_all(asks).await;
    let mut rows: Vec<NodeRow> = placed
        .into_iter()
        .zip(statuses)
        .map(|(n, status)| NodeRow {
            id: n.id,
            addr: n.addr,
            zone: n.zone,
            draining: n.draining,
            down: n.down,
            status,
        })
        .collect();
    if rows.is_empty() {
        // A single node, or a cluster still forming: the node the gateway calls.
        let status = c.node_status().await.map_err(|e| e.to_string());
        rows.push(NodeRow {
            id: status.as_ref().map(|s| s.node_id).unwrap_or(0),
            addr: status.as_ref().map(|s| s.addr.clone()).unwrap_or_default(),
            zone: status.as_ref().map(|s| s.zone.clone()).unwrap_or_default(),
            draining: false,
            down: false,
            status,
        });
    }
    rows.sort_by_key(|r| r.id);
    (epoch, rows)
}

fn node_state(r: &NodeRow) -> (&'static str, &'static str) {
    match (&r.status, r.draining) {
        (Err(_), _) => ("down", "bad"),
        (Ok(_), true) => ("draining", "warn"),
        (Ok(_), false) if r.down => ("down (marked)", "bad"),
        (Ok(_), false) => ("up", "ok"),
    }
}

/// The catalog's totals and the plot's days: one page of one backup, whose answer carries the
/// totals the catalog keeps with every commit and delete (no backup list is read).
async fn summary(c: &Client) -> Result<Summary, UiError> {
    let page = c.list_page(None, 1, None).await?;
    let today = chrono::Utc::now().date_naive();
    Ok(Summary {
        backups: page.totals.count,
        logical: page.totals.logical_bytes,
        days: plot::per_day(&page.totals, today, PLOT_DAYS),
    })
}

/// A job id for people: its last 8 digits (ids made in the same moment share their first
/// digits, which hold the time).
pub fn short_id(id: &str) -> &str {
    &id[id.len().saturating_sub(8)..]
}

/// A table of jobs (with live progress bars for those not finished).
pub fn jobs_table(jobs: &[JobView], now: i64, caption: &str) -> String {
    if jobs.is_empty() {
        return format!("<p class=\"muted\">{}: none.</p>", esc(caption));
    }
    let mut h = format!(
        "<div class=\"scroll\"><table><caption>{}</caption><thead><tr><th scope=\"col\">Job</th><th scope=\"col\">Kind</th><th scope=\"col\">Environment</th><th scope=\"col\">State</th><th scope=\"col\">Progress</th><th scope=\"col\">Created</th><th scope=\"col\">By</th></tr></thead><tbody>",
        esc(caption)
    );
    for v in jobs {
        let j = &v.job;
        let id = j.id.to_string();
        let _ = write!(
            h,
            "<tr><td><a href=\"/ui/jobs/{id}\">{short}</a></td><td>{kind}</td><td><a href=\"/ui/envs/{env}\">{envs}</a></td><td><span class=\"state {st}\" data-job-state=\"{id}\">{st}</span>{why}</td><td>{bar}</td><td>{created}</td><td>{by}</td></tr>",
            short = short_id(&id),
            kind = j.kind.as_str(),
            env = j.env,
            envs = esc(&j.env.to_string()[..8]),
            st = j.state.as_str(),
            why = match (&j.state, &v.waiting) {
                (JobState::Queued, Some(w)) => format!(" <small>{}</small>", esc(w)),
                _ => String::new(),
            },
            bar = html::progress(&id, j.progress.percent, j.state.as_str()),
            created = ago(j.created_ms, now),
            by = esc(&j.requester),
        );
    }
    h.push_str("</tbody></table></div>");
    h
}

pub async fn overview(Extension(cx): Extension<Ctx>) -> Page {
    let c = cx.cluster()?;
    let now = now_ms();
    let filter = |state: JobState, limit: u32| JobFilter {
        state: Some(state),
        limit,
        ..Default::default()
    };
    let (f_running, f_queued, f_failed) = (
        filter(JobState::Running, 50),
        filter(JobState::Queued, 50),
        filter(JobState::Failed, 100),
    );
    let ((epoch, rows), sum, running, queued, failed) = tokio::join!(
        nodes(c),
        summary(c),
        c.list_jobs(&f_running),
        c.list_jobs(&f_queued),
        c.list_jobs(&f_failed),
    );
    let sum = sum?;
    let mut active = running?;
    active.extend(queued?);
    let failed: Vec<JobView> = failed?
        .into_iter()
        .filter(|v| v.job.finished_ms.unwrap_or(v.job.created_ms) >= now - 24 * 3600 * 1000)
        .collect();

    let up = rows
        .iter()
        .filter(|r| r.status.is_ok() && !r.draining)
        .count();
    let draining = rows.iter().filter(|r| r.draining).count();
    let down = rows.iter().filter(|r| r.status.is_err()).count();
    let statuses: Vec<&NodeStatus> = rows.iter().filter_map(|r| r.status.as_ref().ok()).collect();
    let leader = statuses.iter().find_map(|s| s.leader);
    let term = statuses.iter().map(|s| s.term).max().unwrap_or(0);
    let backlog: u64 = statuses.iter().map(|s| s.repair_backlog).sum();
    let stored: u64 = statuses.iter().map(|s| s.stored_bytes).sum();
    let rf = epoch.as_ref().map(|e| e.effective_rf()).unwrap_or(1).max(1);
    let per_replica = stored / rf as u64;
    let ratio = if per_replica > 0 {
        format!("{:.2}×", sum.logical as f64 / per_replica as f64)
    } else {
        "—".into()
    };

    let mut b = String::new();
    b.push_str("<section aria-labelledby=\"h-health\"><h2 id=\"h-health\">Cluster health</h2><dl class=\"cards\">");
    let card = |b: &mut String, k: &str, v: &str, cls: &str| {
        let _ = write!(
            b,
            "<div class=\"card {cls}\"><dt>{}</dt><dd>{}</dd></div>",
            esc(k),
            esc(v)
        );
    };
    card(
        &mut b,
        "Nodes up",
        &up.to_string(),
        if down == 0 { "ok" } else { "" },
    );
    card(
        &mut b,
        "Nodes down",
        &down.to_string(),
        if down > 0 { "bad" } else { "" },
    );
    card(&mut b, "Draining", &draining.to_string(), "");
    card(
        &mut b,
        "Leader",
        &leader
            .map(|l| format!("node {l}"))
            .unwrap_or_else(|| "none".into()),
        if leader.is_some() { "ok" } else { "bad" },
    );
    card(&mut b, "Term", &term.to_string(), "");
    card(
        &mut b,
        "Placement epoch",
        &epoch
            .as_ref()
            .map(|e| e.number.to_string())
            .unwrap_or_else(|| "—".into()),
        "",
    );
    card(&mut b, "Replication factor", &rf.to_string(), "");
    if let Some(e) = &epoch {
        // Sampled placement (cairn_core::placement::Epoch::balance): 5,000 ids measure each
        // node's share to about ±2 %, in a few milliseconds at tens of nodes.
        let balance = e.balance(5_000);
        card(
            &mut b,
            "Zone redundancy",
            &e.zone_redundancy.to_string(),
            "",
        );
        card(
            &mut b,
            "Usable capacity",
            &format!("{:.0} % of raw", balance.usable * 100.0),
            if balance.is_unbalanced() { "warn" } else { "" },
        );
    }
    card(
        &mut b,
        "Repair backlog",
        &backlog.to_string(),
        if backlog > 0 { "warn" } else { "" },
    );
    b.push_str("</dl>");
    b.push_str(&last_runs_summary(&statuses, now));
    b.push_str("</section>");

    b.push_str("<section aria-labelledby=\"h-storage\"><h2 id=\"h-storage\">Storage</h2><dl class=\"cards\">");
    card(&mut b, "Backups", &sum.backups.to_string(), "");
    card(&mut b, "Logical bytes protected", &bytes(sum.logical), "");
    card(&mut b, "Stored per replica", &bytes(per_replica), "");
    card(&mut b, "Stored, all copies", &bytes(stored), "");
    card(&mut b, "Dedup × compression", &ratio, "");
    b.push_str("</dl>");
    b.push_str(&fill_table(&rows));
    b.push_str("</section>");

    b.push_str("<section aria-labelledby=\"h-plot\"><h2 id=\"h-plot\">Backups per day (last 30 days)</h2><p class=\"legend\"><span class=\"key bar\"></span> backups <span class=\"key line\"></span> logical bytes</p>");
    b.push_str(&plot::svg(&sum.days));
    b.push_str("</section>");

    b.push_str("<section aria-labelledby=\"h-jobs\"><h2 id=\"h-jobs\">Jobs now</h2>");
    b.push_str(&jobs_table(&active, now, "Running and queued jobs"));
    b.push_str(
        "</section><section aria-labelledby=\"h-fail\"><h2 id=\"h-fail\">Failures, last 24 h</h2>",
    );
    b.push_str(&jobs_table(&failed, now, "Failed jobs"));
    b.push_str("</section>");
    Ok(cx.page("Overview", "/ui/", &b))
}

/// The overview's maintenance lines: the newest scrub, GC and repair any node remembers (the
/// nodes keep them, whoever started the run; see `cairn_core::runs`). A scrub that left
/// corrupt copies, a GC or repair that failed or left work is marked.
fn last_runs_summary(statuses: &[&NodeStatus], now: i64) -> String {
    let mut h = String::from("<ul class=\"runs\" aria-label=\"Last maintenance runs\">");
    let mut any = false;
    for (kind, label) in [("scrub", "scrub"), ("gc", "GC"), ("repair", "repair")] {
        let newest = statuses
            .iter()
            .flat_map(|st| {
                st.last_runs
                    .lines()
                    .into_iter()
                    .filter(|l| l.kind == kind)
                    .map(move |l| (st.node_id, l))
            })
            .max_by_key(|(node, l)| (l.at_ms, std::cmp::Reverse(*node)));
        let Some((node, line)) = newest else {
            continue;
        };
        any = true;
        let _ = write!(
            h,
            "<li data-last-run=\"{kind}\" class=\"{}\">Last {label} (node {node}, {}): {}</li>",
            if line.attention { "warn" } else { "ok" },
            ago(line.at_ms, now),
            esc(&line.text)
        );
    }
    if !any {
        h.push_str("<li class=\"muted\">No scrub, GC or repair has run yet.</li>");
    }
    h.push_str("</ul>");
    h
}

fn fill_table(rows: &[NodeRow]) -> String {
    let max = rows
        .iter()
        .filter_map(|r| r.status.as_ref().ok().map(|s| s.stored_bytes))
        .max()
        .unwrap_or(0)
        .max(1);
    let mut h = String::from("<div class=\"scroll\"><table class=\"fill\"><caption>Per-node fill (share of the fullest node)</caption><thead><tr><th scope=\"col\">Node</th><th scope=\"col\">Stored</th><th scope=\"col\">Fill</th></tr></thead><tbody>");
    for r in rows {
        let stored = r.status.as_ref().map(|s| s.stored_bytes).unwrap_or(0);
        let pct = (stored as f64 * 100.0 / max as f64).round() as u32;
        let _ = write!(
            h,
            "<tr><td>node {}</td><td>{}</td><td><meter min=\"0\" max=\"100\" value=\"{pct}\" aria-label=\"fill of node {}\">{pct}%</meter></td></tr>",
            r.id,
            bytes(stored),
            r.id
        );
    }
    h.push_str("</tbody></table></div>");
    h
}

pub fn run_outcome(r: &super::state::Run) -> String {
    match &r.outcome {
        None => "running…".into(),
        Some(Ok(t)) => t.clone(),
        Some(Err(e)) => format!("failed: {e}"),
    }
}

pub async fn hosts(Extension(cx): Extension<Ctx>, Query(q): Query<ListQuery>) -> Page {
    let c = cx.cluster()?;
    let now = now_ms();
    let (hosts, envs) = tokio::join!(c.list_hosts(), c.list_envs(None));
    let mut hosts = hosts?;
    hosts.sort_by(|a, b| a.record.id.cmp(&b.record.id));
    let filter = q.q.clone().unwrap_or_default();
    let needle = filter.trim().to_lowercase();
    let mut envs: Vec<_> = envs?
        .into_iter()
        .filter(|e| {
            needle.is_empty()
                || [
                    e.record.name.as_str(),
                    e.record.title.as_str(),
                    e.record.hostname.as_str(),
                    e.record.host.as_str(),
                    &e.record.eid.to_string(),
                ]
                .iter()
                .any(|f| f.to_lowercase().contains(&needle))
        })
        .collect();
    envs.sort_by(|a, b| {
        (a.record.host.as_str(), a.record.name.as_str())
            .cmp(&(b.record.host.as_str(), b.record.name.as_str()))
    });

    let mut b = String::from("<section aria-labelledby=\"h-hosts\"><h2 id=\"h-hosts\">Hosts</h2><div class=\"scroll\"><table><thead><tr><th scope=\"col\">Host</th><th scope=\"col\">Name</th><th scope=\"col\">Agent</th><th scope=\"col\">Version</th><th scope=\"col\">Last seen</th><th scope=\"col\">Environments</th></tr></thead><tbody>");
    let hp = Pager::new(q.hpage, HOSTS_PER_PAGE, hosts.len());
    for h in &hosts[hp.range()] {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td><span class=\"state {}\">{}</span></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&h.record.id),
            esc(&h.record.hostname),
            if h.online { "ok" } else { "bad" },
            if h.online { "online" } else { "offline" },
            esc(&h.record.version),
            ago(h.record.seen_ms, now),
            h.record.envs.len()
        );
    }
    b.push_str("</tbody></table></div>");
    // The hosts' pager: its links carry `hpage`, and keep the environments' filter and page.
    b.push_str(&hp.nav(&format!(
        "/ui/hosts?q={}&page={}&h",
        enc(&filter),
        q.page.unwrap_or(1)
    )));
    b.push_str("</section>");

    let _ = write!(
        b,
        "<section aria-labelledby=\"h-envs\"><h2 id=\"h-envs\">Environments</h2><form class=\"filter\" method=\"get\" action=\"/ui/hosts\" role=\"search\"><label for=\"q\">Filter</label> <input id=\"q\" name=\"q\" type=\"search\" value=\"{}\" placeholder=\"name, host, id\"> <button type=\"submit\">Filter</button></form>",
        esc(&filter)
    );
    let pager = Pager::new(q.page, HOSTS_PER_PAGE, envs.len());
    b.push_str("<div class=\"scroll\"><table><thead><tr><th scope=\"col\">Environment</th><th scope=\"col\">Host</th><th scope=\"col\">Agent</th><th scope=\"col\">Backups</th><th scope=\"col\">Latest backup</th><th scope=\"col\">Age</th><th scope=\"col\">Size</th></tr></thead><tbody>");
    for e in &envs[pager.range()] {
        let r = &e.record;
        let name = if r.title.is_empty() {
            &r.name
        } else {
            &r.title
        };
        let latest = match &e.latest {
            Some(l) => format!(
                "<td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td>",
                backup_url(&l.id),
                esc(&l.id.stamp()),
                ago(l.id.time * 1000, now),
                bytes(l.logical_size)
            ),
            None => "<td>none</td><td>—</td><td>—</td>".into(),
        };
        let _ = write!(
            b,
            "<tr class=\"envrow\"><td><a class=\"env\" href=\"/ui/envs/{}\">{}</a></td><td>{}</td><td><span class=\"state {}\">{}</span></td><td class=\"count\">{}</td>{latest}</tr>",
            r.eid,
            esc(name),
            esc(&r.host),
            if e.host_online { "ok" } else { "bad" },
            if e.host_online { "online" } else { "offline" },
            e.backups,
        );
    }
    b.push_str("</tbody></table></div>");
    b.push_str(&pager.nav(&format!(
        "/ui/hosts?q={}&hpage={}&",
        enc(&filter),
        q.hpage.unwrap_or(1)
    )));
    b.push_str("</section>");
    Ok(cx.page("Hosts and environments", "/ui/hosts", &b))
}

pub async fn env(
    Extension(cx): Extension<Ctx>,
    Path(eid): Path<String>,
    Query(q): Query<ListQuery>,
) -> Page {
    let env = parse_env(&eid)?;
    let c = cx.cluster()?;
    let now = now_ms();
    let recent = JobFilter {
        env: Some(env),
        limit: 10,
        ..Default::default()
    };
    let before = match q.before.as_deref().filter(|b| !b.is_empty()) {
        Some(stamp) => Some(parse_backup(&eid, stamp)?),
        None => None,
    };
    let (envs, page, jobs) = tokio::join!(
        c.list_envs(None),
        c.list_page(Some(env), BACKUPS_PER_PAGE as u32, before.as_ref()),
        c.list_jobs(&recent)
    );
    let record = envs?.into_iter().find(|e| e.record.eid == env);
    let page = page?;
    if record.is_none() && page.totals.count == 0 {
        return Err(UiError::NotFound(format!("no environment {env}")));
    }
    let backups = &page.backups;
    let title = match &record {
        Some(e) if !e.record.title.is_empty() => e.record.title.clone(),
        Some(e) => e.record.name.clone(),
        None => backups
            .first()
            .map(|b| b.env_info.name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| env.to_string()),
    };
    let mut b = String::new();
    b.push_str("<dl class=\"facts\">");
    let fact = |b: &mut String, k: &str, v: &str| {
        let _ = write!(b, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(v));
    };
    fact(&mut b, "Id", &env.to_string());
    if let Some(e) = &record {
        fact(&mut b, "Host", &e.record.host);
        fact(
            &mut b,
            "Agent",
            if e.host_online { "online" } else { "offline" },
        );
        fact(&mut b, "Path", &e.record.path);
        fact(&mut b, "Hostname", &e.record.hostname);
    } else {
        fact(
            &mut b,
            "Host",
            "no host runs it now (known from its backups)",
        );
    }
    fact(&mut b, "Backups", &page.totals.count.to_string());
    fact(&mut b, "Logical bytes", &bytes(page.totals.logical_bytes));
    b.push_str("</dl>");
    if cx.allows("POST /ui/envs/{eid}/backup") && record.is_some() {
        let _ = write!(
            b,
            "<form class=\"actions\" method=\"post\" action=\"/ui/envs/{env}/backup\">{}<label for=\"btype\">Type</label> <select id=\"btype\" name=\"kind\"><option value=\"\">as configured</option><option value=\"full\">full</option><option value=\"incremental\">incremental</option><option value=\"differential\">differential</option></select> <button type=\"submit\" class=\"primary\" id=\"backup-now\">Back up now</button></form>",
            html::csrf_field(&cx.csrf)
        );
    }
    b.push_str("<h2>Backups</h2>");
    b.push_str("<div class=\"scroll\"><table class=\"backups\"><thead><tr><th scope=\"col\">Taken (UTC)</th><th scope=\"col\">Type</th><th scope=\"col\">Name</th><th scope=\"col\">Size</th><th scope=\"col\">New data</th><th scope=\"col\">Files</th><th scope=\"col\">Actions</th></tr></thead><tbody>");
    for bk in backups {
        let url = backup_url(&bk.id);
        let mut actions = format!("<a href=\"{url}\">Browse</a>");
        if cx.allows("POST /ui/backups/{eid}/{stamp}/restore") {
            let _ = write!(actions, " <a href=\"{url}/restore\">Restore…</a>");
        }
        if cx.allows("POST /ui/backups/{eid}/{stamp}/protect") {
            actions.push(' ');
            actions.push_str(&html::button_form(
                &format!("{url}/protect"),
                if bk.protected { "Unprotect" } else { "Protect" },
                &cx.csrf,
                &[("protected", if bk.protected { "false" } else { "true" })],
                "",
            ));
        }
        if cx.allows("POST /ui/backups/{eid}/{stamp}/delete") && !bk.protected {
            {
                actions.push(' ');
                actions.push_str(&html::button_form(
                    &format!("{url}/delete"),
                    "Delete",
                    &cx.csrf,
                    &[],
                    "danger delete",
                ));
            }
        }
        let _ = write!(
            b,
            "<tr><td><a href=\"{url}\">{}</a> <small>{}</small></td><td>{}</td><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"acts\">{actions}</td></tr>",
            esc(&bk.id.datetime().format("%Y-%m-%d %H:%M:%S").to_string()),
            ago(bk.id.time * 1000, now),
            kind_label(bk),
            esc(&bk.name),
            if bk.protected { " <span class=\"badge\">protected</span>" } else { "" },
            bytes(bk.logical_size),
            bytes(bk.stored_size),
            bk.file_count,
        );
    }
    b.push_str("</tbody></table></div>");
    b.push_str(&older_nav(env, before.is_some(), backups.len(), &page));
    b.push_str("<h2>Recent jobs</h2>");
    b.push_str(&jobs_table(&jobs?, now, "Jobs of this environment"));
    Ok(cx.page(&title, "/ui/hosts", &b))
}

/// The links under an environment's backups: back to the newest, and "Older →" with the
/// cursor of the next page (the last id shown), when there is one.
fn older_nav(env: EnvId, paged: bool, shown: usize, page: &cairn_api::BackupPage) -> String {
    if !paged && page.next.is_none() {
        return String::new();
    }
    let mut h = String::from("<nav class=\"pager\" aria-label=\"Pages\">");
    if paged {
        let _ = write!(
            h,
            "<a rel=\"first\" href=\"/ui/envs/{env}\" id=\"newest\">← Newest</a>"
        );
    }
    let _ = write!(
        h,
        "<span>{shown} of {} backups, newest first</span>",
        page.totals.count
    );
    if let Some(next) = &page.next {
        let _ = write!(
            h,
            "<a rel=\"next\" href=\"/ui/envs/{env}?before={}\" id=\"older\">Older →</a>",
            next.stamp()
        );
    }
    h.push_str("</nav>");
    h
}

pub async fn jobs(Extension(cx): Extension<Ctx>, Query(q): Query<ListQuery>) -> Page {
    let c = cx.cluster()?;
    let now = now_ms();
    let state = q.state.as_deref().and_then(JobState::parse);
    let page = q.page.unwrap_or(1).max(1);
    let limit = (page * JOBS_PER_PAGE + 1).min(MAX_JOBS);
    let list = c
        .list_jobs(&JobFilter {
            state,
            limit: limit as u32,
            ..Default::default()
        })
        .await?;
    // The cluster lists newest first up to the limit: the total is known up to it.
    let pager = Pager::new(Some(page), JOBS_PER_PAGE, list.len());
    let mut b = String::from("<form class=\"filter\" method=\"get\" action=\"/ui/jobs\"><label for=\"state\">State</label> <select id=\"state\" name=\"state\"><option value=\"\">any</option>");
    for s in JobState::ALL {
        let _ = write!(
            b,
            "<option value=\"{0}\"{1}>{0}</option>",
            s.as_str(),
            if Some(s) == state { " selected" } else { "" }
        );
    }
    b.push_str("</select> <button type=\"submit\">Show</button></form>");
    b.push_str(&jobs_table(&list[pager.range()], now, "Jobs, newest first"));
    b.push_str(&pager.nav(&format!(
        "/ui/jobs?state={}&",
        state.map(|s| s.as_str()).unwrap_or("")
    )));
    Ok(cx.page("Jobs", "/ui/jobs", &b))
}

pub async fn job(Extension(cx): Extension<Ctx>, Path(id): Path<String>) -> Page {
    let id = uuid::Uuid::parse_str(&id)
        .map_err(|_| UiError::NotFound(format!("{id:?} does not name a job")))?;
    let c = cx.cluster()?;
    let now = now_ms();
    let v = c.get_job(id).await?;
    let j = &v.job;
    let ids = id.to_string();
    let mut b = String::from("<dl class=\"facts\">");
    let fact = |b: &mut String, k: &str, v: String| {
        let _ = write!(b, "<dt>{}</dt><dd>{v}</dd>", esc(k));
    };
    fact(&mut b, "Id", esc(&ids));
    fact(&mut b, "Kind", j.kind.as_str().into());
    fact(
        &mut b,
        "Environment",
        format!("<a href=\"/ui/envs/{0}\">{0}</a>", j.env),
    );
    fact(&mut b, "Host", esc(&j.host));
    fact(&mut b, "Asked by", esc(&j.requester));
    fact(
        &mut b,
        "State",
        format!(
            "<span class=\"state {0}\" data-job-state=\"{ids}\">{0}</span>",
            j.state.as_str()
        ),
    );
    fact(
        &mut b,
        "Progress",
        html::progress(&ids, j.progress.percent, j.state.as_str()),
    );
    fact(
        &mut b,
        "Phase",
        format!(
            "<span data-job-phase=\"{ids}\">{}</span>",
            esc(&j.progress.phase)
        ),
    );
    fact(
        &mut b,
        "Done",
        format!(
            "<span data-job-done=\"{ids}\">{} of {} files, {} of {}</span>",
            j.progress.files_done,
            j.progress.files_total,
            bytes(j.progress.bytes_done),
            bytes(j.progress.bytes_total)
        ),
    );
    fact(
        &mut b,
        "Created",
        format!("{} ({})", html::time(j.created_ms), ago(j.created_ms, now)),
    );
    fact(
        &mut b,
        "Started",
        format!(
            "<span data-job-started=\"{ids}\">{}</span>",
            html::time(j.started_ms.unwrap_or(0))
        ),
    );
    fact(
        &mut b,
        "Finished",
        format!(
            "<span data-job-finished=\"{ids}\">{}</span>",
            html::time(j.finished_ms.unwrap_or(0))
        ),
    );
    if let Some(bk) = j.options.backup.or(j.reserved_backup) {
        fact(
            &mut b,
            "Backup",
            format!(
                "<a href=\"{}\">{}</a>",
                backup_url(&bk),
                esc(&bk.to_string())
            ),
        );
    }
    if !j.options.paths.is_empty() {
        fact(&mut b, "Paths", esc(&j.options.paths.join(", ")));
    }
    if let Some(w) = &v.waiting {
        fact(&mut b, "Waiting", esc(w));
    }
    if !j.result.details.is_empty() {
        fact(
            &mut b,
            "Counters",
            format!("<code class=\"wrap\">{}</code>", esc(&j.result.details)),
        );
    }
    b.push_str("</dl><h2>Log</h2>");
    b.push_str(&html::job_log(&ids, j));
    if cx.allows("POST /ui/jobs/{id}/cancel") && !j.state.is_final() {
        let _ = write!(b, "<div data-job-cancel=\"{ids}\">");
        b.push_str(&html::button_form(
            &format!("/ui/jobs/{ids}/cancel"),
            "Cancel job",
            &cx.csrf,
            &[],
            "danger",
        ));
        b.push_str("</div>");
    }
    Ok(cx.page(&format!("Job {}", short_id(&ids)), "/ui/jobs", &b))
}

pub async fn nodes_page(State(s): St, Extension(cx): Extension<Ctx>) -> Page {
    let c = cx.cluster()?;
    let now = now_ms();
    let (_epoch, rows) = nodes(c).await;
    let mut b = String::from("<div class=\"scroll\"><table class=\"nodes\"><thead><tr><th scope=\"col\">Node</th><th scope=\"col\">State</th><th scope=\"col\">Role</th><th scope=\"col\">Zone</th><th scope=\"col\">Chunks</th><th scope=\"col\">Stored</th><th scope=\"col\">Repair backlog</th><th scope=\"col\">Address</th></tr></thead><tbody>");
    for r in &rows {
        let (state, cls) = node_state(r);
        let (role, chunks, stored, backlog) = match &r.status {
            Ok(st) => (
                st.role.clone(),
                st.chunks.to_string(),
                bytes(st.stored_bytes),
                st.repair_backlog.to_string(),
            ),
            Err(_) => ("—".into(), "—".into(), "—".into(), "—".into()),
        };
        let _ = write!(
            b,
            "<tr class=\"node\"><td>node {}</td><td><span class=\"state {cls}\">{state}</span>{}</td><td>{}</td><td>{}</td><td>{chunks}</td><td>{stored}</td><td>{backlog}</td><td>{}</td></tr>",
            r.id,
            match &r.status {
                Err(e) => format!(" <small>{}</small>", esc(e)),
                Ok(_) => String::new(),
            },
            esc(&role),
            esc(&r.zone),
            esc(&r.addr),
        );
    }
    b.push_str("</tbody></table></div>");
    b.push_str("<h2>Last maintenance runs</h2><p class=\"muted\">As each node remembers them, whoever started them.</p><div class=\"scroll\"><table class=\"runs\"><thead><tr><th scope=\"col\">Node</th><th scope=\"col\">Run</th><th scope=\"col\">Ended</th><th scope=\"col\">Outcome</th></tr></thead><tbody>");
    let mut any = false;
    for r in &rows {
        let Ok(st) = &r.status else { continue };
        for l in st.last_runs.lines() {
            any = true;
            let _ = write!(
                b,
                "<tr data-node-run=\"{0}-{1}\" class=\"{2}\"><td>node {0}</td><td>{1}</td><td>{3} ({4})</td><td class=\"wrap\">{5}</td></tr>",
                st.node_id,
                l.kind,
                if l.attention { "warn" } else { "ok" },
                html::time(l.at_ms),
                ago(l.at_ms, now),
                esc(&l.text)
            );
        }
    }
    if !any {
        b.push_str("<tr><td colspan=\"4\" class=\"muted\">None yet.</td></tr>");
    }
    b.push_str("</tbody></table></div>");
    if cx.allows("POST /ui/nodes/{what}") {
        b.push_str("<h2>Maintenance</h2><div class=\"actions\">");
        for (what, label) in [
            ("scrub", "Start scrub"),
            ("gc", "Start GC"),
            ("repair", "Start repair"),
        ] {
            b.push_str(&html::button_form(
                &format!("/ui/nodes/{what}"),
                label,
                &cx.csrf,
                &[],
                "",
            ));
            b.push(' ');
        }
        b.push_str("</div>");
    }
    let runs = s
        .reports
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .runs
        .clone();
    b.push_str("<h2>Runs from this dashboard</h2>");
    if runs.is_empty() {
        b.push_str("<p class=\"muted\">None yet.</p>");
    } else {
        b.push_str("<div class=\"scroll\"><table><thead><tr><th scope=\"col\">What</th><th scope=\"col\">Started</th><th scope=\"col\">By</th><th scope=\"col\">Outcome</th></tr></thead><tbody>");
        for r in runs.iter().rev() {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"wrap\">{}</td></tr>",
                esc(&r.what),
                ago(r.started_ms, now),
                esc(&r.by),
                esc(&run_outcome(r)).replace("; ", "<br>")
            );
        }
        b.push_str("</tbody></table></div>");
    }
    Ok(cx.page("Nodes", "/ui/nodes", &b))
}

/// The sign-in page (also shown again after a failed attempt).
pub fn login_page(next: &str, error: Option<&str>) -> String {
    let mut b = String::new();
    if let Some(e) = error {
        let _ = write!(b, "<p class=\"error\" role=\"alert\">{}</p>", esc(e));
    }
    let _ = write!(
        b,
        "<form class=\"login\" method=\"post\" action=\"/ui/login\"><input type=\"hidden\" name=\"next\" value=\"{}\"><p><label for=\"user\">User</label><input id=\"user\" name=\"user\" autocomplete=\"username\" required autofocus></p><p><label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required></p><p><button type=\"submit\" class=\"primary\">Sign in</button></p></form>",
        esc(next)
    );
    html::frame("Sign in", "", None, &b)
}

/// A backup's summary (the file browser is beneath it, see `browser`).
pub fn backup_facts(bk: &BackupRecord, now: i64) -> String {
    let mut b = String::from("<dl class=\"facts\">");
    let fact = |b: &mut String, k: &str, v: String| {
        let _ = write!(b, "<dt>{}</dt><dd>{v}</dd>", esc(k));
    };
    fact(
        &mut b,
        "Environment",
        format!("<a href=\"/ui/envs/{0}\">{0}</a>", bk.id.env),
    );
    fact(
        &mut b,
        "Taken",
        format!(
            "{} UTC ({})",
            bk.id.datetime().format("%Y-%m-%d %H:%M:%S"),
            ago(bk.id.time * 1000, now)
        ),
    );
    fact(&mut b, "Type", kind_label(bk).into());
    if !bk.name.is_empty() {
        fact(&mut b, "Name", esc(&bk.name));
    }
    fact(
        &mut b,
        "Size",
        format!("{} in {} files", bytes(bk.logical_size), bk.file_count),
    );
    fact(&mut b, "New data stored", bytes(bk.stored_size));
    fact(
        &mut b,
        "Host, source",
        esc(&format!("{}, {}", bk.host, bk.source)),
    );
    if bk.protected {
        fact(&mut b, "Protected", "yes".into());
    }
    if bk.error_count > 0 {
        fact(&mut b, "Unreadable entries", bk.error_count.to_string());
    }
    b.push_str("</dl>");
    b
}
