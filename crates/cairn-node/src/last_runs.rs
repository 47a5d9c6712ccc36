//! The node's memory of its last scrub, GC and repair runs, kept in `last-runs.json` in its
//! data directory (the records: [`cairn_core::runs`]).
//!
//! # Format
//! JSON: `{"version": 1, "runs": LastRuns}`. A file of another version, or one that does not
//! parse, is not guessed at: it is read as "no runs yet" and replaced by the next run.
//!
//! # Durability
//! The records are a report for operators (`cairn cluster status`, the dashboard), nothing
//! decides on them; they are still written so that a restart does not lose them and a crash
//! never leaves half a file:
//!
//! 1. Change the record in memory (readers see it at once).
//! 2. On a blocking thread, holding the file lock: encode the records as they are *now*,
//!    write them to `last-runs.json.tmp`, fsync it.
//! 3. Rename it over `last-runs.json`, then fsync the directory.
//!
//! Writers are serialized by the file lock and each writes the newest state, so a slow
//! writer never puts an older state back over a newer one. A write that fails is logged and
//! the record stays in memory (the next run writes the file again). A missing, unreadable or
//! other-version file at start is logged and read as "no runs yet".

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cairn_core::runs::{LastRuns, RunError};
use tonic::Status;

/// The file's name in the data directory.
pub const FILE: &str = "last-runs.json";
/// The version of the file this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

#[derive(serde::Serialize, serde::Deserialize)]
struct FileBody {
    version: u32,
    runs: LastRuns,
}

/// Why a runs file was not read.
#[derive(Debug, thiserror::Error)]
pub enum RunsFileError {
    #[error("the file is version {0}; this build reads version {FORMAT_VERSION}")]
    Version(u32),
    #[error("the file does not parse: {0}")]
    Parse(String),
}

/// The file's bytes.
pub fn encode(runs: &LastRuns) -> Vec<u8> {
    let body = FileBody {
        version: FORMAT_VERSION,
        runs: runs.clone(),
    };
    // Plain data with string keys: serializing it cannot fail.
    serde_json::to_vec_pretty(&body).unwrap_or_default()
}

/// Reads a file [`encode`] wrote.
pub fn decode(bytes: &[u8]) -> Result<LastRuns, RunsFileError> {
    #[derive(serde::Deserialize)]
    struct Version {
        version: u32,
    }
    let v: Version =
        serde_json::from_slice(bytes).map_err(|e| RunsFileError::Parse(e.to_string()))?;
    if v.version != FORMAT_VERSION {
        return Err(RunsFileError::Version(v.version));
    }
    let body: FileBody =
        serde_json::from_slice(bytes).map_err(|e| RunsFileError::Parse(e.to_string()))?;
    Ok(body.runs)
}

/// The last runs of one node, in memory and on disk.
pub struct RunLog {
    dir: PathBuf,
    runs: Mutex<LastRuns>,
    /// Held while the file is written (step 2 and 3 of the module doc).
    file: Mutex<()>,
}

impl RunLog {
    /// Reads the records the node kept in `dir` (none when the file is absent or unusable).
    pub fn open(dir: &Path) -> RunLog {
        let path = dir.join(FILE);
        let runs = match std::fs::read(&path) {
            Ok(bytes) => decode(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "last maintenance runs not read; starting without them");
                LastRuns::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => LastRuns::default(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "last maintenance runs not read; starting without them");
                LastRuns::default()
            }
        };
        RunLog {
            dir: dir.to_path_buf(),
            runs: Mutex::new(runs),
            file: Mutex::new(()),
        }
    }

    /// The records as they are now.
    pub fn get(&self) -> LastRuns {
        self.runs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Changes the records and writes the file (see the module doc).
    pub async fn record(self: &Arc<Self>, change: impl FnOnce(&mut LastRuns)) {
        change(&mut self.runs.lock().unwrap_or_else(|p| p.into_inner()));
        let me = self.clone();
        let written = tokio::task::spawn_blocking(move || me.write()).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "last maintenance runs not written; kept in memory")
            }
            Err(e) => {
                tracing::warn!(error = %e, "writing the last maintenance runs panicked")
            }
        }
    }

    fn write(&self) -> std::io::Result<()> {
        let _alone = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = encode(&self.get());
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, self.dir.join(FILE))?;
        std::fs::File::open(&self.dir)?.sync_all()
    }
}

/// A failed run's error as a record keeps it: the status's stable code and its message.
pub fn run_error(s: &Status) -> RunError {
    RunError {
        code: cairn_proto::code_of(s),
        message: s.message().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_core::runs::ScrubRun;

    #[tokio::test]
    async fn records_survive_a_reopen_and_a_bad_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(RunLog::open(dir.path()));
        assert_eq!(log.get(), LastRuns::default());
        log.record(|r| {
            r.scrub = Some(ScrubRun {
                at_ms: 5,
                checked: 9,
                ..Default::default()
            })
        })
        .await;
        assert!(!dir.path().join(format!("{FILE}.tmp")).exists());
        let again = RunLog::open(dir.path());
        assert_eq!(again.get().scrub.unwrap().checked, 9);

        std::fs::write(dir.path().join(FILE), b"{ torn").unwrap();
        assert_eq!(RunLog::open(dir.path()).get(), LastRuns::default());
    }

    #[test]
    fn the_file_carries_its_version_and_other_versions_are_refused() {
        let runs = LastRuns {
            scrub: Some(ScrubRun {
                at_ms: 1,
                checked: 3,
                ..Default::default()
            }),
            ..Default::default()
        };
        let bytes = encode(&runs);
        assert!(String::from_utf8_lossy(&bytes).contains("\"version\": 1"));
        assert_eq!(decode(&bytes).unwrap(), runs);
        assert!(matches!(
            decode(br#"{"version": 2, "runs": {}}"#),
            Err(RunsFileError::Version(2))
        ));
        assert!(matches!(decode(b"{\"vers"), Err(RunsFileError::Parse(_))));
    }
}
