//! Live job progress for the pages: `GET /ui/events/jobs?ids=A,B,…` as server-sent events.
//!
//! For each job named (at most [`MAX_JOBS`]) one task follows the cluster's own job stream
//! (`Agents.WatchJob` through [`cairn_api::Client::watch_job`], made as the signed-in user,
//! so the cluster decides whether the user may see the job). A node pushes a job's state when
//! it changes; nothing here polls. Each change is sent to the browser as an event `job` whose
//! data is a small JSON object ([`JobEvent`]). A stream that breaks (its node went away) is
//! reopened on the next node, a few times; a job that ended, or that the cluster refuses to
//! show, ends its task. When every task ended, an event `end` tells the page's script to
//! close the connection (else the browser would reconnect). A backup or delete job seen ending
//! clears the overview's cached totals. When the browser goes away, the
//! next send fails (or the channel closes) and the tasks stop, dropping their cluster streams.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::Query;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Extension;
use cairn_api::{Client, JobView};
use futures::{Stream, StreamExt};

use super::state::{Ctx, UiError};

/// Most jobs one page follows.
pub const MAX_JOBS: usize = 100;
/// Times a broken job stream is reopened.
const REOPEN: usize = 6;

#[derive(serde::Deserialize)]
pub struct Ids {
    #[serde(default)]
    pub ids: String,
}

/// What the page's script receives for a job.
#[derive(serde::Serialize, Debug, PartialEq)]
pub struct JobEvent {
    pub id: String,
    pub state: &'static str,
    pub percent: u32,
    pub phase: String,
    pub files_done: u64,
    pub files_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub reason: String,
    /// When it started and ended, as the page renders times ("—" for not yet).
    pub started: String,
    pub finished: String,
    /// The job's whole log (bounded by the cluster: `cairn_core::job::JOB_LOG_MAX` lines),
    /// which the page shows in place of what it had.
    pub log: Vec<LogLine>,
    pub log_dropped: u64,
}

/// One line of a job's log, as the page's script shows it.
#[derive(serde::Serialize, Debug, PartialEq)]
pub struct LogLine {
    /// UTC, as the page renders times.
    pub at: String,
    pub level: &'static str,
    pub text: String,
}

impl From<&JobView> for JobEvent {
    fn from(v: &JobView) -> JobEvent {
        let j = &v.job;
        JobEvent {
            id: j.id.to_string(),
            state: j.state.as_str(),
            percent: j.progress.percent.min(100),
            phase: j.progress.phase.clone(),
            files_done: j.progress.files_done,
            files_total: j.progress.files_total,
            bytes_done: j.progress.bytes_done,
            bytes_total: j.progress.bytes_total,
            reason: j.reason.clone(),
            started: super::html::time(j.started_ms.unwrap_or(0)),
            finished: super::html::time(j.finished_ms.unwrap_or(0)),
            log: j
                .log
                .iter()
                .map(|l| LogLine {
                    at: super::html::time(l.at_ms),
                    level: l.level.as_str(),
                    text: l.text.clone(),
                })
                .collect(),
            log_dropped: j.log_dropped,
        }
    }
}

/// The ids of a request: valid UUIDs, no repeats, at most [`MAX_JOBS`].
pub fn parse_ids(ids: &str) -> Vec<uuid::Uuid> {
    let mut out: Vec<uuid::Uuid> = Vec::new();
    for s in ids.split(',') {
        if let Ok(id) = uuid::Uuid::parse_str(s.trim()) {
            if !out.contains(&id) {
                out.push(id);
            }
        }
        if out.len() == MAX_JOBS {
            break;
        }
    }
    out
}

pub async fn job_events(
    Extension(cx): Extension<Ctx>,
    Query(q): Query<Ids>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, UiError> {
    let c = cx.cluster()?.clone();
    let ids = parse_ids(&q.ids);
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    for id in ids {
        tokio::spawn(follow(c.clone(), id, tx.clone()));
    }
    drop(tx);
    let events = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    })
    .chain(futures::stream::once(async {
        Ok(Event::default().event("end").data("{}"))
    }));
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Follows one job until it ends, the cluster refuses, or the browser goes away.
async fn follow(c: Client, id: uuid::Uuid, tx: tokio::sync::mpsc::Sender<Event>) {
    let urls = c.node_urls();
    if urls.is_empty() {
        return;
    }
    for attempt in 0..REOPEN {
        let url = &urls[attempt % urls.len()];
        let stream = match c.watch_job(url, id).await {
            Ok(s) => s,
            Err(e) if e.is_answer() => {
                tracing::debug!(job_id = %id, error = %e, "dashboard: job not followed");
                return;
            }
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
        };
        let mut stream = Box::pin(stream);
        loop {
            let item = tokio::select! {
                item = stream.next() => item,
                _ = tx.closed() => return,
            };
            match item {
                Some(Ok(view)) => {
                    let ended = view.job.state.is_final();
                    let data = serde_json::to_string(&JobEvent::from(&view)).unwrap_or_default();
                    if tx
                        .send(Event::default().event("job").data(data))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    if ended {
                        return;
                    }
                }
                Some(Err(e)) if e.is_answer() => return,
                // The node went away: reopen on the next one.
                Some(Err(_)) | None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_parsed_bounded_and_deduplicated() {
        let a = uuid::Uuid::new_v4();
        let b = uuid::Uuid::new_v4();
        assert_eq!(parse_ids(&format!("{a},{b}, {a},junk,")), vec![a, b]);
        assert!(parse_ids("").is_empty());
        let many: Vec<String> = (0..150).map(|_| uuid::Uuid::new_v4().to_string()).collect();
        assert_eq!(parse_ids(&many.join(",")).len(), MAX_JOBS);
    }
}
