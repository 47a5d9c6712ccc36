//! Running the `cairn` CLI against one node with a deadline, and reading its outcome.
//!
//! A call is `ok` when the CLI exits 0 (or 3, a backup committed as incomplete), `fail`
//! only when its error carries a node's definite refusal, and `unknown` otherwise: a call
//! cut off by its deadline, a process killed by a signal, a transport error, or a code that is
//! not definite (`ErrorCode::is_definite`: Unavailable E1007, Internal E1999, …) may all have
//! taken effect. The refusal is read from the stable code the CLI prints in its error line
//! (the first `[E####]` on stderr), never from the wording.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::history::Outcome;

/// What one CLI call returned.
#[derive(Debug)]
pub struct Call {
    pub outcome: Outcome,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

impl Call {
    /// The last `error:` line of stderr (or its tail), for the history.
    pub fn error(&self) -> String {
        if self.timed_out {
            return "timed out (killed by the harness)".into();
        }
        let line = self
            .stderr
            .lines()
            .rev()
            .find(|l| l.starts_with("error"))
            .map(str::to_string)
            .unwrap_or_else(|| {
                let t = self.stderr.trim();
                t[t.len().saturating_sub(300)..].to_string()
            });
        match self.code {
            Some(c) => format!("exit {c}: {line}"),
            None => format!("killed by a signal: {line}"),
        }
    }

    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.stdout).ok()
    }
}

/// The stable code (`E####`) in a message's first bracket, if any.
pub fn stable_code(stderr: &str) -> Option<&str> {
    let i = stderr.find("[E")?;
    let code = stderr.get(i + 1..i + 6)?;
    (stderr.get(i + 6..i + 7) == Some("]")).then_some(code)
}

/// Classifies an exited call (`code` None: killed by a signal).
pub fn classify(code: Option<i32>, stderr: &str) -> Outcome {
    match code {
        Some(0) | Some(3) => Outcome::Ok,
        Some(_) => match stable_code(stderr).and_then(cairn_core::ErrorCode::parse) {
            Some(c) if c.is_definite() => Outcome::Fail,
            _ => Outcome::Unknown,
        },
        None => Outcome::Unknown,
    }
}

/// Runs `cairn ARGS` against the node at `url`, killed after `timeout`.
pub fn run(url: &str, args: &[String], timeout: Duration) -> Call {
    let mut child = match Command::new(crate::cairn_bin())
        .args(args)
        .env("CAIRN_CLUSTER", url)
        .env("CAIRN_TOKEN", super::SECRET)
        .env_remove("CAIRN_CA")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return Call {
                outcome: Outcome::Fail,
                code: None,
                stdout: String::new(),
                stderr: format!("error: cannot start cairn: {e}"),
                timed_out: false,
            }
        }
    };
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() >= deadline => {
                timed_out = true;
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break None,
        }
    };
    let stdout = String::from_utf8_lossy(&t_out.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&t_err.join().unwrap_or_default()).into_owned();
    let code = status.and_then(|s| s.code());
    let outcome = if timed_out {
        Outcome::Unknown
    } else {
        classify(code, &stderr)
    };
    Call {
        outcome,
        code,
        stdout,
        stderr,
        timed_out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_definite_refusal_is_a_failure() {
        assert_eq!(classify(Some(0), ""), Outcome::Ok);
        assert_eq!(
            classify(
                Some(1),
                "error: commit: [E1004] backup refers to 3 chunk(s)"
            ),
            Outcome::Fail
        );
        assert_eq!(
            classify(Some(1), "error: [E1007] no leader"),
            Outcome::Unknown
        );
        // Finer codes are judged by the code's own rule, not by a list kept here.
        assert_eq!(
            classify(Some(1), "error: backup x does not exist [E1012]"),
            Outcome::Fail
        );
        assert_eq!(
            classify(Some(1), "error: the job's agent was lost [E1020]"),
            Outcome::Unknown
        );
        assert_eq!(
            classify(Some(1), "error: from a newer node [E1777]"),
            Outcome::Unknown
        );
        assert_eq!(
            classify(Some(1), "error: transport error"),
            Outcome::Unknown
        );
        assert_eq!(classify(None, ""), Outcome::Unknown);
    }
}
