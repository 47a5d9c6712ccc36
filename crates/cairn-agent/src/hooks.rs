//! Pre- and post-backup hook commands: operator-configured shell commands run around a backup
//! (to freeze a database, flush a cache, thaw it again).
//!
//! Each command runs as `/bin/sh -c <command>`, one after the other; the first one that fails
//! stops the rest. A command runs:
//! * with stdin from `/dev/null`, and stdout and stderr captured: every line is logged at
//!   debug level, and the last ~2 KiB of stderr go into the error when the command fails;
//! * in the agent's environment plus `CAIRN_STAGE` (the stage) and the spec's extra variables
//!   (which win over both);
//! * in the spec's working directory, or `/` when it names none;
//! * in a process group of its own. When it runs longer than the timeout, the whole group gets
//!   `SIGKILL` — the shell and everything it started, such as `sleep` children — and the call
//!   returns right away, without waiting for output pipes a stray process may still hold.
//!   When the future is dropped (a cancelled job), the group is killed the same way.
//!
//! Processes a hook deliberately leaves running in the background after it exits (a
//! daemonising post hook) are not killed; their output is still drained and logged.
//!
//! # An agent that refuses hooks
//! A pre hook usually freezes something (a database) so that the backup is consistent; a
//! backup taken without it looks fine and is not. So an agent with `hooks = false` never
//! skips a configured hook: a backup job for an environment that has pre or post hooks fails
//! before anything is read ([`refusal`]), saying why and what to change.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// How much of a failed command's stderr its error keeps (the end of it).
const STDERR_TAIL: usize = 2048;
/// How long to wait for the output pipes to close once the command has exited.
const DRAIN_WAIT: Duration = Duration::from_millis(500);
/// How long to wait for a killed command to be reaped.
const REAP_WAIT: Duration = Duration::from_secs(2);

/// The hook commands of one stage and how to run them.
#[derive(Clone, Debug)]
pub struct HookSpec<'a> {
    /// The stage, `"pre"` or `"post"`: shown in messages and passed as `CAIRN_STAGE`.
    pub stage: &'a str,
    /// The commands, run in order with `/bin/sh -c`.
    pub commands: &'a [String],
    /// The time limit of each command (not of the whole list).
    pub timeout: Duration,
    /// Extra environment variables (e.g. `CAIRN_EID`, `CAIRN_PATH`, `CAIRN_JOB`,
    /// `CAIRN_RESULT`), on top of the agent's own environment.
    pub env: Vec<(String, String)>,
    /// The working directory of the commands; `/` when `None`.
    pub cwd: Option<&'a Path>,
}

/// One command that ran to completion successfully.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookRun {
    pub command: String,
    pub duration: Duration,
    /// The exit code (0, as the command succeeded).
    pub code: Option<i32>,
}

/// Why the hooks of a stage failed. `index` is the 1-based position of the command in the
/// stage's list.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The command exited with a nonzero status or was killed by a signal.
    #[error("{stage} hook {index} (`{command}`) {}", failure(*.code, *.signal, .stderr_tail))]
    Failed {
        stage: String,
        index: usize,
        command: String,
        /// The exit code; `None` when a signal killed the command.
        code: Option<i32>,
        /// The signal that killed the command, if one did.
        signal: Option<i32>,
        /// The last ~2 KiB of its stderr, trimmed.
        stderr_tail: String,
    },
    /// The command ran past the timeout; its whole process group was killed.
    #[error(
        "{stage} hook {index} (`{command}`) did not finish within {timeout_secs} s and was killed"
    )]
    TimedOut {
        stage: String,
        index: usize,
        command: String,
        timeout_secs: u64,
    },
    /// The shell could not be started.
    #[error("{stage} hook {index} (`{command}`) could not be started: {source}")]
    Spawn {
        stage: String,
        index: usize,
        command: String,
        source: std::io::Error,
    },
}

/// The end of a [`HookError::Failed`] message.
fn failure(code: Option<i32>, signal: Option<i32>, stderr_tail: &str) -> String {
    let how = match (code, signal) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => match Signal::try_from(s) {
            Ok(sig) => format!("was killed by signal {s} ({sig})"),
            Err(_) => format!("was killed by signal {s}"),
        },
        (None, None) => "failed".to_string(),
    };
    if stderr_tail.is_empty() {
        format!("{how} (no error output)")
    } else {
        format!("{how}: {stderr_tail}")
    }
}

/// Returns why a backup must not run, when this agent refuses hooks (`enabled` is false) and
/// the environment's settings name some; `None` when it may run.
pub fn refusal(enabled: bool, env: &str, pre: &[String], post: &[String]) -> Option<String> {
    if enabled || (pre.is_empty() && post.is_empty()) {
        return None;
    }
    let stages = match (pre.is_empty(), post.is_empty()) {
        (false, false) => "pre and post hooks",
        (false, true) => "pre hooks",
        _ => "post hooks",
    };
    Some(format!(
        "environment {env} has {stages} configured, but this agent refuses hooks \
         (hooks = false in its config); nothing was read. Unset them \
         (cairn config set --env {env} --unset pre_hooks --unset post_hooks) or set \
         hooks = true on the agent"
    ))
}

/// Runs the stage's commands in order and returns what ran; stops at the first command that
/// fails, times out or cannot be started. An empty list is `Ok` with nothing run.
pub async fn run_hooks(spec: &HookSpec<'_>) -> Result<Vec<HookRun>, HookError> {
    let mut runs = Vec::with_capacity(spec.commands.len());
    for (i, command) in spec.commands.iter().enumerate() {
        runs.push(run_one(spec, i + 1, command).await?);
    }
    Ok(runs)
}

/// Kills a process group when dropped, unless disarmed: covers a cancelled future as well as
/// early returns. Armed only while the group leader is not yet reaped, so its pid (the group
/// id) cannot have been reused.
struct GroupGuard(Option<Pid>);

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            // ESRCH: the group is already gone.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Collected stderr: the last bytes only.
#[derive(Default)]
struct Tail(Vec<u8>);

impl Tail {
    fn push(&mut self, line: &[u8]) {
        self.0.extend_from_slice(line);
        if self.0.len() > 2 * STDERR_TAIL {
            let cut = self.0.len() - STDERR_TAIL;
            self.0.drain(..cut);
        }
    }

    fn text(&self) -> String {
        let start = self.0.len().saturating_sub(STDERR_TAIL);
        String::from_utf8_lossy(&self.0[start..]).trim().to_string()
    }
}

/// Logs every line of `stream` at debug level, and keeps the tail when `tail` is given.
fn drain(
    stream: impl AsyncRead + Unpin + Send + 'static,
    stage: String,
    index: usize,
    name: &'static str,
    tail: Option<Arc<Mutex<Tail>>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    tracing::debug!(
                        stage = %stage,
                        hook = index,
                        stream = name,
                        "{}",
                        String::from_utf8_lossy(&line).trim_end()
                    );
                    if let Some(t) = &tail {
                        if let Ok(mut t) = t.lock() {
                            t.push(&line);
                        }
                    }
                }
            }
        }
    })
}

/// Waits up to `limit` for the output readers to finish; readers still blocked (a process
/// outside the group, or one left in the background, holds the pipe) keep running detached.
async fn settle(readers: Vec<JoinHandle<()>>, limit: Duration) {
    let _ = tokio::time::timeout(limit, futures::future::join_all(readers)).await;
}

async fn run_one(spec: &HookSpec<'_>, index: usize, command: &str) -> Result<HookRun, HookError> {
    let stage = spec.stage.to_string();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .current_dir(spec.cwd.unwrap_or(Path::new("/")))
        .env("CAIRN_STAGE", spec.stage)
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .process_group(0)
        .kill_on_drop(true);
    tracing::info!(stage = %stage, hook = index, command, "running hook");
    let started = Instant::now();
    let mut child: Child = cmd.spawn().map_err(|source| HookError::Spawn {
        stage: stage.clone(),
        index,
        command: command.to_string(),
        source,
    })?;
    // `process_group(0)` makes the shell the leader of a new group whose id is its pid.
    let mut guard = GroupGuard(
        child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .map(Pid::from_raw),
    );
    let tail = Arc::new(Mutex::new(Tail::default()));
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(drain(out, stage.clone(), index, "stdout", None));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(drain(
            err,
            stage.clone(),
            index,
            "stderr",
            Some(tail.clone()),
        ));
    }

    let status: ExitStatus = match tokio::time::timeout(spec.timeout, child.wait()).await {
        Ok(Ok(status)) => {
            // Reaped: the pid may be reused from now on, so never signal the group again.
            guard.0 = None;
            status
        }
        Ok(Err(e)) => {
            guard.kill();
            let _ = tokio::time::timeout(REAP_WAIT, child.wait()).await;
            return Err(HookError::Spawn {
                stage,
                index,
                command: command.to_string(),
                source: e,
            });
        }
        Err(_) => {
            guard.kill();
            let _ = tokio::time::timeout(REAP_WAIT, child.wait()).await;
            settle(readers, DRAIN_WAIT).await;
            let secs = spec.timeout.as_secs() + u64::from(spec.timeout.subsec_nanos() > 0);
            tracing::warn!(stage = %stage, hook = index, command, "hook timed out and was killed");
            return Err(HookError::TimedOut {
                stage,
                index,
                command: command.to_string(),
                timeout_secs: secs,
            });
        }
    };
    settle(readers, DRAIN_WAIT).await;
    let duration = started.elapsed();
    if status.success() {
        tracing::info!(stage = %stage, hook = index, ?duration, "hook finished");
        return Ok(HookRun {
            command: command.to_string(),
            duration,
            code: status.code(),
        });
    }
    use std::os::unix::process::ExitStatusExt;
    let stderr_tail = tail.lock().map(|t| t.text()).unwrap_or_default();
    Err(HookError::Failed {
        stage,
        index,
        command: command.to_string(),
        code: status.code(),
        signal: status.signal(),
        stderr_tail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_without_hooks_refuses_an_environment_that_has_some() {
        let cmd = vec!["fsfreeze -f /data".to_string()];
        assert_eq!(refusal(true, "e", &cmd, &cmd), None);
        assert_eq!(refusal(false, "e", &[], &[]), None);
        let pre = refusal(false, "e1", &cmd, &[]).unwrap();
        assert!(pre.contains("environment e1 has pre hooks") && pre.contains("hooks = false"));
        assert!(refusal(false, "e", &[], &cmd)
            .unwrap()
            .contains("has post hooks"));
        assert!(refusal(false, "e", &cmd, &cmd)
            .unwrap()
            .contains("has pre and post hooks"));
    }
    use std::fs;

    fn spec<'a>(commands: &'a [String], timeout: Duration) -> HookSpec<'a> {
        HookSpec {
            stage: "pre",
            commands,
            timeout,
            env: Vec::new(),
            cwd: None,
        }
    }

    fn cmds(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// True when `pid` no longer runs: gone, or a zombie nobody reaped yet.
    fn dead(pid: i32) -> bool {
        if nix::sys::signal::kill(Pid::from_raw(pid), None).is_err() {
            return true;
        }
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(s) => s
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
            Err(_) => true,
        }
    }

    #[tokio::test]
    async fn runs_in_order() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("log");
        let f = f.display();
        let list = cmds(&[
            &format!("echo one >> {f}"),
            &format!("echo two >> {f}"),
            &format!("echo three >> {f}"),
        ]);
        let runs = run_hooks(&spec(&list, Duration::from_secs(10)))
            .await
            .unwrap();
        assert_eq!(runs.len(), 3);
        assert!(runs.iter().all(|r| r.code == Some(0)));
        assert_eq!(runs[1].command, list[1]);
        assert_eq!(
            fs::read_to_string(t.path().join("log")).unwrap(),
            "one\ntwo\nthree\n"
        );
    }

    #[tokio::test]
    async fn a_failure_stops_the_rest() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("log");
        let fd = f.display();
        let list = cmds(&[
            &format!("echo one >> {fd}"),
            "echo noise; echo 'cannot freeze /x' >&2; exit 3",
            &format!("echo three >> {fd}"),
        ]);
        let err = run_hooks(&spec(&list, Duration::from_secs(10)))
            .await
            .unwrap_err();
        match &err {
            HookError::Failed {
                index,
                code,
                stderr_tail,
                ..
            } => {
                assert_eq!(*index, 2);
                assert_eq!(*code, Some(3));
                assert_eq!(stderr_tail, "cannot freeze /x");
            }
            other => panic!("unexpected {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.starts_with("pre hook 2 (`echo noise;")
                && msg.ends_with("exited with status 3: cannot freeze /x"),
            "{msg}"
        );
        assert_eq!(fs::read_to_string(&f).unwrap(), "one\n");
    }

    #[tokio::test]
    async fn long_stderr_keeps_the_tail() {
        let list =
            cmds(&["i=0; while [ $i -lt 500 ]; do echo line-$i >&2; i=$((i+1)); done; kill -9 $$"]);
        let err = run_hooks(&spec(&list, Duration::from_secs(10)))
            .await
            .unwrap_err();
        let HookError::Failed {
            code,
            signal,
            stderr_tail,
            ..
        } = &err
        else {
            panic!("unexpected {err:?}");
        };
        assert_eq!((*code, *signal), (None, Some(9)));
        assert!(stderr_tail.len() <= STDERR_TAIL);
        assert!(stderr_tail.ends_with("line-499"), "{stderr_tail}");
        assert!(err.to_string().contains("killed by signal 9"), "{err}");
    }

    async fn killed_at_timeout(command: String, pidfile: &Path) {
        let list = vec![command];
        let started = Instant::now();
        let err = run_hooks(&spec(&list, Duration::from_secs(1)))
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "took {took:?}");
        assert!(
            matches!(
                err,
                HookError::TimedOut {
                    index: 1,
                    timeout_secs: 1,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .ends_with("did not finish within 1 s and was killed"),
            "{err}"
        );
        let pid: i32 = fs::read_to_string(pidfile).unwrap().trim().parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !dead(pid) {
            assert!(
                Instant::now() < deadline,
                "process {pid} survived the timeout"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_hanging_hook_is_killed() {
        let t = tempfile::tempdir().unwrap();
        let pf = t.path().join("pid");
        killed_at_timeout(format!("echo $$ > {}; exec sleep 30", pf.display()), &pf).await;
    }

    #[tokio::test]
    async fn grandchildren_are_killed_too() {
        let t = tempfile::tempdir().unwrap();
        let pf = t.path().join("pid");
        let cmd = format!("sh -c 'sleep 30 & echo $! > {}; wait'", pf.display());
        killed_at_timeout(cmd, &pf).await;
        // A background child holding stdout open does not delay the return either.
        let pf2 = t.path().join("pid2");
        let cmd = format!("sleep 30 & echo $! > {}; sleep 30", pf2.display());
        killed_at_timeout(cmd, &pf2).await;
    }

    #[tokio::test]
    async fn env_and_cwd_reach_the_command() {
        let t = tempfile::tempdir().unwrap();
        let list = cmds(&["echo \"$CAIRN_EID $CAIRN_STAGE $(pwd)\" > out"]);
        let mut s = spec(&list, Duration::from_secs(10));
        s.env = vec![("CAIRN_EID".into(), "101".into())];
        s.cwd = Some(t.path());
        run_hooks(&s).await.unwrap();
        let got = fs::read_to_string(t.path().join("out")).unwrap();
        let want = format!("101 pre {}\n", t.path().canonicalize().unwrap().display());
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn an_empty_list_runs_nothing() {
        let runs = run_hooks(&spec(&[], Duration::from_secs(1))).await.unwrap();
        assert!(runs.is_empty());
    }

    #[tokio::test]
    async fn a_missing_cwd_is_a_spawn_error() {
        let list = cmds(&["true"]);
        let mut s = spec(&list, Duration::from_secs(1));
        s.cwd = Some(Path::new("/nonexistent/cairn-hook-dir"));
        let err = run_hooks(&s).await.unwrap_err();
        assert!(matches!(err, HookError::Spawn { index: 1, .. }), "{err:?}");
    }
}
