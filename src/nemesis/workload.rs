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
    while ctx.running() {
        round += 1;
        let url = ctx.pick_url(&mut rng);
        let what = rng.below(100);
        if what < 65 || mine.is_empty() {
            let did = if changed || rng.chance(70) {
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
            let root = env.root.to_string_lossy().into_owned();
            let args = s(&["backup", &root, "--env", &env.eid, "--json", "--type", kind]);
            let (op, c) = ctx.call(&process, "backup", &url, &args);
            let mut result = json!({"tree": hash, "changes": did});
            match (c.outcome, c.json()) {
                (Outcome::Ok, Some(v)) => {
                    let id = v["id"].as_str().unwrap_or_default().to_string();
                    result["id"] = json!(id);
                    result["state"] = v["state"].clone();
                    result["parent"] = v["parent"].clone();
                    if v["state"] != "complete" {
                        // Nothing changes the tree while it is backed up.
                        ctx.anomaly(format!(
                            "{process}: backup {id} (op {op}) is {}: {}",
                            v["state"], v["errors"]
                        ));
                    }
                    ctx.acked.lock().unwrap().insert(
                        id.clone(),
                        Taken {
                            env: env.eid.clone(),
                            hash,
                            entries,
                            op,
                        },
                    );
                    mine.push(id);
                    changed = false;
                }
                (Outcome::Ok, None) => {
                    ctx.anomaly(format!(
                        "{process}: backup op {op} exited 0 without a JSON summary: {}",
                        c.stdout
                    ));
                }
                (Outcome::Unknown, _) => {
                    ctx.unknown.lock().unwrap().push(Taken {
                        env: env.eid.clone(),
                        hash,
                        entries,
                        op,
                    });
                    changed = true;
                }
                (Outcome::Fail, _) => changed = true,
            }
            finish(&ctx, op, &c, result);
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
