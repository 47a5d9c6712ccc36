//! Human and machine output: tables, JSON, progress bars.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use cairn_agent::Progress;
use cairn_core::BackupRecord;
use indicatif::{ProgressBar, ProgressStyle};

/// Bytes as a short human string (KiB, MiB, …).
pub fn bytes(n: u64) -> String {
    const U: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// A backup record as JSON for `--json`.
pub fn backup_json(r: &BackupRecord) -> serde_json::Value {
    serde_json::json!({
        "id": r.id.to_string(),
        "env": r.id.env.to_string(),
        "created": r.id.datetime().to_rfc3339(),
        "type": r.kind.as_str(),
        "parent": r.parent.map(|p| p.to_string()),
        "name": r.name,
        "description": r.description,
        "tags": r.tags,
        "env_info": {
            "name": r.env_info.name, "title": r.env_info.title,
            "hostname": r.env_info.hostname, "ip": r.env_info.ip, "os": r.env_info.os,
            "kind": r.env_info.kind,
        },
        "state": r.state.as_str(),
        "logical_size": r.logical_size,
        "stored_size": r.stored_size,
        "file_count": r.file_count,
        "chunk_count": r.chunk_count,
        "compression": r.compression.level(),
        "host": r.host,
        "source": r.source,
        "manifest": r.manifest.to_string(),
        "error_count": r.error_count,
        "errors": r.errors,
        "protected": r.protected,
    })
}

/// Shows an engine's progress: a bar on a terminal, phase lines otherwise.
pub struct ProgressView {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ProgressView {
    pub fn start(progress: Arc<Progress>, verb: &'static str, quiet: bool) -> ProgressView {
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let tty = std::io::stderr().is_terminal() && !quiet;
        let task = tokio::spawn(async move {
            let bar = if tty {
                let b = ProgressBar::new(0);
                b.set_style(
                    ProgressStyle::with_template(
                        "{prefix} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                b.set_prefix(verb);
                Some(b)
            } else {
                None
            };
            let mut last_phase = String::new();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                let stop = tokio::select! {
                    _ = tick.tick() => false,
                    _ = &mut rx => true,
                };
                let phase = progress.phase();
                use std::sync::atomic::Ordering::Relaxed;
                let files = progress.files_done.load(Relaxed);
                let files_total = progress.files_total.load(Relaxed);
                match &bar {
                    Some(b) => {
                        b.set_length(progress.bytes_total.load(Relaxed));
                        b.set_position(progress.bytes_done.load(Relaxed));
                        b.set_message(format!("{files}/{files_total} files, {phase}"));
                    }
                    None => {
                        if phase != last_phase && !quiet && !phase.is_empty() {
                            eprintln!("{verb}: {phase}");
                        }
                    }
                }
                last_phase = phase;
                if stop {
                    if let Some(b) = &bar {
                        b.finish_and_clear();
                    }
                    break;
                }
            }
        });
        ProgressView {
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn finish(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}
