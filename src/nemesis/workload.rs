//! The clients: one worker per environment (change the tree, back it up, restore and delete
//! its own backups) and one admin worker (GC, scrub, repair, listings, retention). Each calls
//! the CLI against a node its RNG picks, whether that node is up or not: failing over is the
//! client's job, and the history records what it was told.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::cli;
use super::history::{History, Outcome};
use super::tree;
use super::Rng;

/// One environment: its id and the directory the worker backs up.
#[derive(Clone, Debug)]
pub struct Env {
    pub name: String,
    pub eid: String,
    pub root: PathBuf,
    /// Backed up by a `cairn agent` daemon through jobs (`cairn backup --env` without a
    /// path), not by the CLI reading the tree itself.
    pub agent: bool,
}

/// The tree a backup was taken from.
#[derive(Clone, Debug)]
pub struct Taken {
    pub env: String,
    pub hash: String,
    pub entries: Vec<(String, String)>,
    /// The history operation that took it.
    pub op: u64,
}

/// What the workers share.
pub struct Ctx {
    pub history: Arc<History>,
    /// The nodes clients may talk to (grows with an added node, shrinks with a removed one).
    pub urls: RwLock<Vec<String>>,
    pub deadline: Instant,
    pub dir: PathBuf,
    pub envs: Vec<Env>,
    /// Acknowledged backups by id.
    pub acked: Mutex<HashMap<String, Taken>>,
    /// The trees of backups whose outcome is unknown, by operation.
    pub unknown: Mutex<Vec<Taken>>,
    /// Anomalies seen during the run (a restore that was not bit-identical, …).
    pub anomalies: Mutex<Vec<String>>,
    pub restores_compared: AtomicU64,
}

/// How long a CLI call of each kind may take before it counts as unknown.
pub fn timeout_of(kind: &str) -> Duration {
    Duration::from_secs(match kind {
        "backup" | "restore" | "gc" | "repair" => 180,
        "scrub" => 300,
        "remove-node" => 600,
        _ => 60,
    })
}

impl Ctx {
    pub fn pick_url(&self, rng: &mut Rng) -> String {
        let urls = self.urls.read().unwrap();
        rng.pick(&urls).clone()
    }

    /// Invokes `cairn ARGS` against `url` as operation `kind` of `process` and records it.
    pub fn call(&self, process: &str, kind: &str, url: &str, args: &[String]) -> (u64, cli::Call) {
        let mut shown = args.to_vec();
        shown.push(format!("@{url}"));
        let op = self.history.invoke(process, kind, &shown);
        let c = cli::run(url, args, timeout_of(kind));
        (op, c)
    }

    pub fn anomaly(&self, what: String) {
        eprintln!("nemesis: ANOMALY: {what}");
        self.history.note("anomaly", json!(what));
        self.anomalies.lock().unwrap().push(what);
    }

    fn running(&self) -> bool {
        Instant::now() < self.deadline
    }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// Completes `op` with the call's outcome and `result` (plus the error when not ok).
fn finish(ctx: &Ctx, op: u64, c: &cli::Call, mut result: Value) {
    if c.outcome != Outcome::Ok {
        result["error"] = json!(c.error());
    }
    ctx.history.complete(op, c.outcome, result);
}

/// One environment's client: runs until the deadline.
pub fn env_worker(ctx: Arc<Ctx>, env: Env, mut rng: Rng) {
    let process = env.name.clone();
    if let Err(e) = tree::create(&env.root, &mut rng) {
        ctx.anomaly(format!("{process}: cannot create its tree: {e}"));
        return;
    }
    // Backups of this environment acknowledged and not (knowingly) deleted, oldest first.
    let mut mine: Vec<String> = Vec::new();
    let mut round = 0;
    let mut changed = true;
    let mut frozen = false;
    while ctx.running() {
        round += 1;
        let url = ctx.pick_url(&mut rng);
        let what = rng.below(100);
        if what < 65 || mine.is_empty() {
            let did = if !frozen && (changed || rng.chance(70)) {
                tree::mutate(&env.root, &mut rng, round).unwrap_or_else(|e| vec![format!("{e}")])
            } else {
                Vec::new()
            };
            let Ok(entries) = tree::entries(&env.root) else {
                continue;
            };
            let hash = tree::hash(&entries);
            let kind = if rng.chance(20) {
                "full"
            } else {
                "incremental"
            };
            let taken = Taken {
                env: env.eid.clone(),
                hash: hash.clone(),
                entries,
                op: 0,
            };
            let done = if env.agent {
                backup_by_job(&ctx, &env, &url, kind, taken, did)
            } else {
                backup_direct(&ctx, &env, &url, kind, taken, did)
            };
            match done {
                Done::Acked(id) => {
                    mine.push(id);
                    changed = false;
                }
                Done::Failed => changed = true,
                Done::Unsettled => {
                    // A job that may still run would back up whatever the tree is then:
                    // leave the tree alone from now on.
                    ctx.history.note(
                        "frozen",
                        json!(format!(
                            "{process}: a backup job did not settle; the tree stays as it is"
                        )),
                    );
                    frozen = true;
                    changed = true;
                }
            }
        } else if what < 80 {
            let id = rng.pick(&mine).clone();
            restore_and_compare(&ctx, &process, &url, &id, "restore");
        } else if what < 90 {
            let i = rng.below(mine.len() as u64) as usize;
            let id = mine[i].clone();
            let (op, c) = ctx.call(&process, "delete", &url, &s(&["backups", "delete", &id]));
            finish(&ctx, op, &c, json!({"id": id}));
            if c.outcome != Outcome::Fail {
                mine.remove(i);
            }
        } else {
            let (op, c) = ctx.call(
                &process,
                "list",
                &url,
                &s(&["backups", "list", "--env", &env.eid, "--json"]),
            );
            let n = c.json().and_then(|v| v.as_array().map(Vec::len));
            finish(&ctx, op, &c, json!({"count": n}));
        }
        std::thread::sleep(Duration::from_millis(rng.range(50, 600)));
    }
}

/// How a backup call ended for the worker.
enum Done {
    /// Acknowledged with this backup id.
    Acked(String),
    /// Definitely not made.
    Failed,
    /// Unknown, and a job that may still make it could not be seen to end.
    Unsettled,
}

/// `cairn backup ROOT --env EID`: the CLI reads the tree itself.
fn backup_direct(
    ctx: &Ctx,
    env: &Env,
    url: &str,
    kind: &str,
    mut t: Taken,
    did: Vec<String>,
) -> Done {
    let root = env.root.to_string_lossy().into_owned();
    let args = s(&["backup", &root, "--env", &env.eid, "--json", "--type", kind]);
    let (op, c) = ctx.call(&env.name, "backup", url, &args);
    t.op = op;
    let mut result = json!({"tree": t.hash, "changes": did});
    let done = match (c.outcome, c.json()) {
        (Outcome::Ok, Some(v)) => {
            let id = v["id"].as_str().unwrap_or_default().to_string();
            result["id"] = json!(id);
            result["state"] = v["state"].clone();
            result["parent"] = v["parent"].clone();
            if v["state"] != "complete" {
                // Nothing changes the tree while it is backed up.
                ctx.anomaly(format!(
                    "{}: backup {id} (op {op}) is {}: {}",
                    env.name, v["state"], v["errors"]
                ));
            }
            ctx.acked.lock().unwrap().insert(id.clone(), t);
            Done::Acked(id)
        }
        (Outcome::Ok, None) => {
            ctx.anomaly(format!(
                "{}: backup op {op} exited 0 without a JSON summary: {}",
                env.name, c.stdout
            ));
            Done::Failed
        }
        (Outcome::Unknown, _) => {
            ctx.unknown.lock().unwrap().push(t);
            Done::Failed
        }
        (Outcome::Fail, _) => Done::Failed,
    };
    finish(ctx, op, &c, result);
    done
}

/// A backup job run by the environment's agent: created with `--no-wait`, then followed
/// with `jobs watch`. Only a job seen to succeed is acknowledged; a job that failed, was
/// cancelled or could not be followed may still have committed (the agent may have died
/// between commit and report), so it counts as unknown, and the worker waits until no job
/// of the environment is queued or running before it changes the tree again.
fn backup_by_job(
    ctx: &Ctx,
    env: &Env,
    url: &str,
    kind: &str,
    mut t: Taken,
    did: Vec<String>,
) -> Done {
    let args = s(&["backup", "--env", &env.eid, "--no-wait", "--type", kind]);
    let (op, c) = ctx.call(&env.name, "backup-job", url, &args);
    t.op = op;
    let mut result = json!({"tree": t.hash, "changes": did});
    let job = c.stdout.trim().to_string();
    match c.outcome {
        Outcome::Fail => {
            finish(ctx, op, &c, result);
            return Done::Failed;
        }
        Outcome::Ok if !job.is_empty() => {
            result["job"] = json!(job);
            let (wop, w) = ctx.call(
                &env.name,
                "watch-job",
                url,
                &s(&["jobs", "watch", &job, "--json"]),
            );
            let j = w.json().unwrap_or(Value::Null);
            finish(
                ctx,
                wop,
                &w,
                json!({"job": job, "state": j["state"], "reason": j["reason"]}),
            );
            if j["state"] == "succeeded" {
                let id = j["result"]["backup"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if !id.is_empty() {
                    result["id"] = json!(id);
                    ctx.history.complete(op, Outcome::Ok, result);
                    ctx.acked.lock().unwrap().insert(id.clone(), t);
                    return Done::Acked(id);
                }
                ctx.anomaly(format!(
                    "{}: job {job} succeeded without a backup id: {j}",
                    env.name
                ));
            }
        }
        _ => {}
    }
    result["note"] = json!("outcome unknown: the job may have committed");
    let settled = settle(ctx, env);
    result["settled"] = json!(settled);
    ctx.history.complete(
        op,
        Outcome::Unknown,
        if c.outcome == Outcome::Ok {
            result
        } else {
            let mut r = result;
            r["error"] = json!(c.error());
            r
        },
    );
    ctx.unknown.lock().unwrap().push(t);
    if settled {
        Done::Failed
    } else {
        Done::Unsettled
    }
}

/// Waits (up to 5 minutes) until the cluster lists no queued or running job of `env`.
fn settle(ctx: &Ctx, env: &Env) -> bool {
    let until = Instant::now() + Duration::from_secs(300);
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let mut rng = Rng::new(CALLS.fetch_add(1, Ordering::Relaxed) ^ 0x5e77);
    while Instant::now() < until {
        let url = ctx.pick_url(&mut rng);
        let c = cli::run(
            &url,
            &s(&["jobs", "list", "--env", &env.eid, "--json"]),
            Duration::from_secs(30),
        );
        if let Some(Value::Array(jobs)) = c.json() {
            if jobs
                .iter()
                .all(|j| j["state"] != "queued" && j["state"] != "running")
            {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(1000));
    }
    false
}

/// Restores backup `id` into a fresh directory and compares it with the tree it was taken
/// from; returns the outcome (a mismatch is reported as an anomaly and returns `Fail`).
pub fn restore_and_compare(ctx: &Ctx, process: &str, url: &str, id: &str, kind: &str) -> Outcome {
    static N: AtomicU64 = AtomicU64::new(0);
    let out = ctx
        .dir
        .join("restores")
        .join(format!("r{}", N.fetch_add(1, Ordering::Relaxed)));
    let _ = std::fs::create_dir_all(out.parent().unwrap());
    let target = out.to_string_lossy().into_owned();
    let (op, c) = ctx.call(process, kind, url, &s(&["restore", id, &target]));
    let taken = ctx.acked.lock().unwrap().get(id).cloned();
    let mut result = json!({"id": id});
    let mut outcome = c.outcome;
    if c.outcome == Outcome::Ok {
        match (tree::entries(&out), taken) {
            (Ok(got), Some(t)) => {
                let h = tree::hash(&got);
                result["tree"] = json!(h);
                ctx.restores_compared.fetch_add(1, Ordering::Relaxed);
                if h != t.hash {
                    result["mismatch"] = json!(tree::differences(&t.entries, &got));
                    ctx.anomaly(format!(
                        "restore of {id} (op {op}) differs from the tree backed up by op {}: {:?}",
                        t.op,
                        tree::differences(&t.entries, &got)
                    ));
                    outcome = Outcome::Fail;
                }
            }
            (Err(e), _) => {
                result["note"] = json!(format!("cannot read the restored tree: {e}"));
                outcome = Outcome::Fail;
            }
            (Ok(got), None) => result["tree"] = json!(tree::hash(&got)),
        }
    }
    finish(ctx, op, &c, result);
    let _ = std::fs::remove_dir_all(&out);
    outcome
}

/// The admin's client: GC, scrub, repair, retention changes and listings.
pub fn admin_worker(ctx: Arc<Ctx>, mut rng: Rng) {
    let p = "admin";
    while ctx.running() {
        std::thread::sleep(Duration::from_millis(rng.range(1000, 4000)));
        if !ctx.running() {
            break;
        }
        let url = ctx.pick_url(&mut rng);
        let what = rng.below(100);
        if what < 25 {
            let (op, c) = ctx.call(p, "gc", &url, &s(&["gc", "--wait", "60", "--json"]));
            let r = c.json().unwrap_or(Value::Null);
            finish(&ctx, op, &c, r);
        } else if what < 35 {
            let (op, c) = ctx.call(p, "scrub", &url, &s(&["scrub", "--json"]));
            let r = c.json().map(|v| {
                json!({"checked": v["checked"], "corrupt": v["corrupt"],
                       "repaired": v["repaired"], "unrepaired": v["unrepaired"],
                       "nodes_failed": v["nodes_failed"]})
            });
            finish(&ctx, op, &c, r.unwrap_or(Value::Null));
        } else if what < 45 {
            let (op, c) = ctx.call(p, "repair", &url, &s(&["cluster", "repair", "--json"]));
            let r = c.json().map(|v| json!({"backlog": v["backlog"]}));
            finish(&ctx, op, &c, r.unwrap_or(Value::Null));
        } else if what < 60 {
            let env = rng.pick(&ctx.envs).clone();
            let k = rng.range(2, 6).to_string();
            let mut args = s(&["config", "set", "--env", &env.eid, "--keep-max", &k]);
            if rng.chance(50) {
                args.extend(s(&["--retention-grace", "0"]));
            }
            let (op, c) = ctx.call(p, "keep-max", &url, &args);
            finish(&ctx, op, &c, json!({"env": env.eid, "keep_max": k}));
        } else if what < 70 {
            let env = rng.pick(&ctx.envs).clone();
            let args = s(&["config", "set", "--env", &env.eid, "--keep-all"]);
            let (op, c) = ctx.call(p, "keep-all", &url, &args);
            finish(&ctx, op, &c, json!({"env": env.eid}));
        } else {
            let (op, c) = ctx.call(p, "list", &url, &s(&["backups", "list", "--json"]));
            let n = c.json().and_then(|v| v.as_array().map(Vec::len));
            finish(&ctx, op, &c, json!({"count": n}));
        }
    }
}
