//! Progress counters shared between an engine and whoever displays it.
//!
//! The engines only bump atomics; a CLI progress bar (or, later, the agent's job reporter)
//! reads them on its own schedule, so reporting never slows the data path.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

#[derive(Default, Debug)]
pub struct Progress {
    pub files_total: AtomicU64,
    pub files_done: AtomicU64,
    pub bytes_total: AtomicU64,
    pub bytes_done: AtomicU64,
    phase: Mutex<String>,
    /// Set once the engine knows its totals (restore knows them up front; a backup's walk
    /// grows them as it goes).
    pub totals_final: std::sync::atomic::AtomicBool,
    /// Bytes counted in `bytes_done` that are read but not yet stored in the cluster (a
    /// backup's upload queue): percent counts them as not done.
    bytes_pending: AtomicU64,
    /// Set by whoever runs the engine to make it stop (a cancelled job); the engine checks
    /// it between files and before it commits.
    cancel: std::sync::atomic::AtomicBool,
}

impl Progress {
    pub fn new() -> Progress {
        Progress::default()
    }

    /// Asks the engine to stop; nothing is committed after this.
    pub fn cancel(&self) {
        self.cancel.store(true, Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Relaxed)
    }

    pub fn set_phase(&self, p: &str) {
        if let Ok(mut g) = self.phase.lock() {
            *g = p.to_string();
        }
    }

    pub fn phase(&self) -> String {
        self.phase.lock().map(|g| g.clone()).unwrap_or_default()
    }

    pub fn add_total(&self, files: u64, bytes: u64) {
        self.files_total.fetch_add(files, Relaxed);
        self.bytes_total.fetch_add(bytes, Relaxed);
    }

    pub fn add_done(&self, files: u64, bytes: u64) {
        self.files_done.fetch_add(files, Relaxed);
        self.bytes_done.fetch_add(bytes, Relaxed);
    }

    /// Adds bytes read but not yet stored.
    pub fn add_pending(&self, bytes: u64) {
        self.bytes_pending.fetch_add(bytes, Relaxed);
    }

    /// Marks pending bytes as stored.
    pub fn release_pending(&self, bytes: u64) {
        let _ = self
            .bytes_pending
            .fetch_update(Relaxed, Relaxed, |p| Some(p.saturating_sub(bytes)));
    }

    /// Bytes done and stored: read (or reused), and for a backup acknowledged by the cluster.
    pub fn bytes_stored(&self) -> u64 {
        self.bytes_done
            .load(Relaxed)
            .saturating_sub(self.bytes_pending.load(Relaxed))
    }

    /// Percent done by bytes (0–100), counting a backup's bytes once they are stored.
    pub fn percent(&self) -> u32 {
        let t = self.bytes_total.load(Relaxed);
        if t == 0 {
            return 0;
        }
        ((self.bytes_stored().min(t) * 100) / t) as u32
    }
}
