//! Pause points for crash and race tests, shared by node and agent processes.
//!
//! A test makes a process stop at a named point by creating the file `DIR/NAME`. When the
//! process reaches the point it creates `DIR/NAME.reached` and waits until `DIR/NAME` is
//! removed, so the test can act while the process stands exactly there (delete a backup in
//! the middle of a collection, kill a node between two steps). `DIR` is a node's
//! `DATA/failpoints`, or for a client process the directory named by `CAIRN_FAILPOINTS`.
//! Without the file a point costs one failed `stat`.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The client process's pause directory (`CAIRN_FAILPOINTS`), if any.
pub fn client_dir() -> Option<PathBuf> {
    std::env::var_os("CAIRN_FAILPOINTS").map(PathBuf::from)
}

/// Waits at point `name` while `dir/name` exists (blocking; see the module note).
pub fn pause(dir: Option<&Path>, name: &str) {
    let Some(dir) = dir else { return };
    let gate = dir.join(name);
    if !gate.exists() {
        return;
    }
    let _ = std::fs::write(dir.join(format!("{name}.reached")), b"");
    tracing::warn!(point = name, "paused at a test failpoint");
    while gate.exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`pause`] from async code.
pub async fn pause_async(dir: Option<PathBuf>, name: &'static str) {
    if dir.as_ref().is_some_and(|d| d.join(name).exists()) {
        let _ = tokio::task::spawn_blocking(move || pause(dir.as_deref(), name)).await;
    }
}
