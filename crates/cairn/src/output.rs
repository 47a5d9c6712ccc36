//! Human and machine output: tables, JSON, progress bars.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use cairn_agent::Progress;
use cairn_api::browse::Node;
use cairn_core::manifest::EntryKind;
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

/// `ls -l`'s mode string of a backup's object: its kind, then `rwx` for owner, group and
/// others with setuid, setgid and sticky as `s`/`S` and `t`/`T`.
pub fn mode_string(kind: EntryKind, mode: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(match kind {
        EntryKind::Dir => 'd',
        EntryKind::Symlink => 'l',
        EntryKind::Fifo => 'p',
        EntryKind::CharDevice => 'c',
        EntryKind::BlockDevice => 'b',
        EntryKind::Socket => 's',
        EntryKind::File | EntryKind::Hardlink => '-',
    });
    let special = [(0o4000, 's', 'S'), (0o2000, 's', 'S'), (0o1000, 't', 'T')];
    for (i, (bit, set, unset)) in special.into_iter().enumerate() {
        let shift = 6 - 3 * i;
        let rwx = (mode >> shift) & 7;
        s.push(if rwx & 4 != 0 { 'r' } else { '-' });
        s.push(if rwx & 2 != 0 { 'w' } else { '-' });
        let x = rwx & 1 != 0;
        s.push(match (mode & bit != 0, x) {
            (true, true) => set,
            (true, false) => unset,
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// One line of `backups ls`: mode, uid:gid, size, mtime (UTC), name, and `-> target`.
pub fn node_line(n: &Node) -> String {
    let secs = n.mtime_ns.div_euclid(1_000_000_000);
    let when = chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| "?".to_string());
    let mut line = format!(
        "{} {:>11} {:>12} {when}  {}",
        mode_string(n.kind, n.mode),
        format!("{}:{}", n.uid, n.gid),
        n.size,
        n.name
    );
    if let Some(t) = &n.link_target {
        line.push_str(" -> ");
        line.push_str(t);
    }
    line
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

/// A node's last maintenance runs, one line each: kind, when it ended (UTC), outcome.
pub fn last_runs(runs: &cairn_core::runs::LastRuns) -> Vec<String> {
    runs.lines()
        .into_iter()
        .map(|l| {
            let at = chrono::DateTime::from_timestamp_millis(l.at_ms)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default();
            format!("{:<6}  {at}  {}", l.kind, l.text)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_like_ls() {
        assert_eq!(mode_string(EntryKind::Dir, 0o755), "drwxr-xr-x");
        assert_eq!(mode_string(EntryKind::File, 0o644), "-rw-r--r--");
        assert_eq!(mode_string(EntryKind::File, 0o4755), "-rwsr-xr-x");
        assert_eq!(mode_string(EntryKind::File, 0o2644), "-rw-r-Sr--");
        assert_eq!(mode_string(EntryKind::Dir, 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string(EntryKind::Dir, 0o1770), "drwxrwx--T");
        assert_eq!(mode_string(EntryKind::Symlink, 0o777), "lrwxrwxrwx");
    }

    #[test]
    fn a_line_shows_owner_size_time_name_and_target() {
        let n = Node {
            path: "etc/rc".into(),
            name: "rc".into(),
            kind: EntryKind::Symlink,
            size: 4,
            mode: 0o777,
            uid: 0,
            gid: 10,
            mtime_ns: 1_763_799_300_000_000_000,
            link_target: Some("rc.d".into()),
        };
        assert_eq!(
            node_line(&n),
            "lrwxrwxrwx        0:10            4 2025-11-22 08:15  rc -> rc.d"
        );
    }
}
