//! The checker: after every fault is healed, judges the history against the cluster.
//!
//! 1. Recovery: a leader among the running nodes and every placement node up.
//! 2. Replication: `cluster repair` passes until one moves nothing and leaves no backlog.
//!    A pass copies every chunk a node holds to each of its owners that lacks it, so a
//!    converged pass means every chunk held anywhere is on all RF of its owners; together
//!    with step 5 (every live backup restores, so each of its chunks is held somewhere) this
//!    is "every live chunk has RF copies". Then `scrub` (nothing left unrepaired) and repair
//!    again.
//! 3. Catalog: every running voter reports the same catalog digest at the same applied log
//!    index, and the same number of backups (`cluster status --json` answers from each
//!    node's own state: BLAKE3 over its catalog's trees, taken under its apply lock), and
//!    `backups list` through each node gives the same set.
//! 4. Deletes: no backup whose delete was acknowledged is listed.
//! 5. Backups: each acknowledged backup is listed and restores bit-identical to the tree it
//!    was taken from (lost otherwise), unless an ok/unknown delete named it or retention may
//!    have removed it (a keep-max K of its environment was set, ok or unknown, and at least K
//!    backups of that environment, acknowledged or unknown, were invoked after it). A listed
//!    backup that was never acknowledged must restore to the tree of an unknown backup of its
//!    environment (each unknown one explains at most one listed backup).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::faults::Nemesis;
use super::history::{Op, Outcome};
use super::workload::{restore_and_compare, Ctx};
use super::{cli, tree};

#[derive(Default, Debug)]
pub struct Verdict {
    pub lost: Vec<String>,
    pub anomalies: Vec<String>,
    pub checked: u64,
    pub restored: u64,
    pub deleted: u64,
    pub retained_out: u64,
    pub unknown_listed: u64,
    pub repair_passes: u64,
    pub repair_copies: u64,
    pub scrub: Value,
    /// Backups that restored only after failing through some nodes (node ids).
    pub restore_failovers: Vec<(String, Vec<u64>)>,
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn status(url: &str) -> Option<Value> {
    cli::run(
        url,
        &s(&["cluster", "status", "--json"]),
        Duration::from_secs(30),
    )
    .json()
}

/// Waits for a leader among `live` and every placement node up.
fn wait_recovered(nem: &Nemesis, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        for (_, url) in nem.live_urls() {
            let Some(st) = status(url.as_str()) else {
                continue;
            };
            let live: HashSet<u64> = nem.live_urls().iter().map(|(i, _)| *i).collect();
            let leader = st["leader"].as_u64();
            let down: Vec<Value> = st["nodes"]
                .as_array()
                .map(|v| v.iter().filter(|n| n["state"] != "up").cloned().collect())
                .unwrap_or_default();
            if leader.is_some_and(|l| live.contains(&l)) && down.is_empty() {
                return Ok(());
            }
            last = format!("leader {leader:?}, down {down:?}");
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(last)
}

/// Heals every fault and judges the run.
pub fn check(ctx: &Ctx, nem: &mut Nemesis) -> Verdict {
    let mut v = judge(ctx, nem);
    if let Some((id, nodes)) = v.restore_failovers.first() {
        v.anomalies.push(format!(
            "{} backup(s) restored only through another node (first: {id} failed through nodes {nodes:?})",
            v.restore_failovers.len()
        ));
    }
    v.anomalies
        .extend(ctx.anomalies.lock().unwrap().iter().cloned());
    v
}

fn judge(ctx: &Ctx, nem: &mut Nemesis) -> Verdict {
    let mut v = Verdict::default();
    let h = &ctx.history;
    h.note("check", json!("healing"));
    nem.heal_all(ctx);
    if let Err(e) = wait_recovered(nem, Duration::from_secs(180)) {
        v.anomalies
            .push(format!("the cluster did not recover after healing: {e}"));
    }
    let live = nem.live_urls();
    let Some((_, url)) = live.first().cloned() else {
        v.anomalies.push("no node runs after healing".into());
        return v;
    };

    // 2. Replication.
    repair_until_converged(ctx, &url, &mut v);
    let (op, c) = ctx.call("checker", "scrub", &url, &s(&["scrub", "--json"]));
    let sj = c.json().unwrap_or(Value::Null);
    v.scrub = json!({"checked": sj["checked"], "corrupt": sj["corrupt"],
        "repaired": sj["repaired"], "unrepaired": sj["unrepaired"],
        "nodes_failed": sj["nodes_failed"]});
    h.complete(op, c.outcome, v.scrub.clone());
    if c.outcome != Outcome::Ok {
        v.anomalies
            .push(format!("scrub after healing: {} ({})", c.error(), v.scrub));
    }
    repair_until_converged(ctx, &url, &mut v);

    // 3. Catalog on every voter: each reports a digest of its own catalog and the log index
    //    it covers; once no write is in flight they must all agree. The agent re-registers
    //    its host every second (a catalog write each time), so it stops first: with writes
    //    landing every second the voters are seldom all seen at the same index.
    if let Some(mut agent) = nem.agent.take() {
        h.note(
            "check",
            json!("agent stopped: the catalog must be quiet to compare voters"),
        );
        agent.kill();
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut views: BTreeMap<u64, (u64, String, u64)> = BTreeMap::new();
    loop {
        views.clear();
        for (id, u) in &live {
            if let Some(st) = status(u) {
                for n in st["nodes"].as_array().into_iter().flatten() {
                    if n["node_id"].as_u64() == Some(*id) && n["voter"] == true {
                        views.insert(
                            *id,
                            (
                                n["catalog_index"].as_u64().unwrap_or(0),
                                n["catalog_digest"].as_str().unwrap_or("").to_string(),
                                n["backups"].as_u64().unwrap_or(0),
                            ),
                        );
                    }
                }
            }
        }
        let distinct: HashSet<&(u64, String, u64)> = views.values().collect();
        if distinct.len() == 1 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    h.note("voters", json!(format!("{views:?}")));
    let distinct: HashSet<&(u64, String, u64)> = views.values().collect();
    if distinct.len() != 1 {
        // Same index, other digest: the members applied the same log to different catalogs.
        let mut by_index: BTreeMap<u64, HashSet<&String>> = BTreeMap::new();
        for (i, d, _) in views.values() {
            by_index.entry(*i).or_default().insert(d);
        }
        let diverged = by_index.values().any(|d| d.len() > 1);
        v.anomalies.push(format!(
            "voters disagree{} (node: (applied index, catalog digest, backups)): {views:?}",
            if diverged {
                ": DIFFERENT CATALOGS AT THE SAME INDEX"
            } else {
                ""
            }
        ));
    }
    let mut listings: BTreeMap<u64, Option<Vec<Value>>> = BTreeMap::new();
    for (id, u) in &live {
        let (op, c) = ctx.call("checker", "list", u, &s(&["backups", "list", "--json"]));
        let list = c.json().and_then(|j| j.as_array().cloned());
        h.complete(op, c.outcome, json!({"count": list.as_ref().map(Vec::len)}));
        listings.insert(*id, list);
    }
    let ids_of = |l: &Vec<Value>| -> Vec<String> {
        let mut v: Vec<String> = l
            .iter()
            .filter_map(|b| b["id"].as_str().map(str::to_string))
            .collect();
        v.sort();
        v
    };
    let Some(list) = listings.values().flatten().next().cloned() else {
        v.anomalies.push("no node lists the backups".into());
        return v;
    };
    let reference = ids_of(&list);
    for (id, l) in &listings {
        match l {
            None => v
                .anomalies
                .push(format!("node {id} does not list the backups")),
            Some(l) if ids_of(l) != reference => v
                .anomalies
                .push(format!("node {id} lists other backups than the first node")),
            _ => {}
        }
    }
    let listed: HashMap<String, String> = list
        .iter()
        .filter_map(|b| {
            Some((
                b["id"].as_str()?.to_string(),
                b["env"].as_str()?.to_string(),
            ))
        })
        .collect();

    // 4. Deletes.
    let ops = h.ops();
    let mut delete_outcome: HashMap<String, Vec<Outcome>> = HashMap::new();
    for o in ops.iter().filter(|o| o.kind == "delete") {
        if let Some(id) = o.result["id"].as_str() {
            delete_outcome
                .entry(id.to_string())
                .or_default()
                .push(o.outcome);
        }
    }
    let acked_op = |id: &str| ctx.acked.lock().unwrap().get(id).map(|t| t.op);
    for (id, outs) in &delete_outcome {
        if !outs.contains(&Outcome::Ok) || !listed.contains_key(id) {
            continue;
        }
        // The same id acknowledged again by a backup invoked after the delete completed is
        // another backup under a reused id: reported as such, not as the delete undone.
        let deleted_at = ops
            .iter()
            .rev()
            .filter(|o| o.kind == "delete" && o.outcome == Outcome::Ok)
            .filter(|o| o.result["id"].as_str() == Some(id.as_str()))
            .map(|o| (o.id, o.completed))
            .next();
        let again = acked_op(id).and_then(|b| ops.iter().find(|o| o.id == b));
        match (deleted_at, again) {
            (Some((d, done)), Some(b)) if b.invoked > done => v.anomalies.push(format!(
                "backup id {id} was deleted (op {d}) and then given to another backup (op {}): ids are reused",
                b.id
            )),
            _ => v
                .anomalies
                .push(format!("backup {id} is listed after its delete was acknowledged")),
        }
    }

    // 5. Acknowledged backups.
    let acked = ctx.acked.lock().unwrap().clone();
    let mut acked_ids: Vec<&String> = acked.keys().collect();
    acked_ids.sort();
    let mut rr = super::Rng::new(1);
    for id in acked_ids {
        let t = &acked[id];
        v.checked += 1;
        if listed.contains_key(id) {
            // Through a random node first, then through each other one: a backup is lost
            // when no node restores it bit-identical.
            let first = rr.below(live.len() as u64) as usize;
            let mut failed_via = Vec::new();
            let mut ok = false;
            let before = ctx.anomalies.lock().unwrap().len();
            for k in 0..live.len() {
                let (node, url) = &live[(first + k) % live.len()];
                match restore_and_compare(ctx, "checker", url, id, "restore") {
                    Outcome::Ok => {
                        ok = true;
                        break;
                    }
                    _ => failed_via.push(*node),
                }
            }
            if ok {
                v.restored += 1;
                if !failed_via.is_empty() {
                    v.restore_failovers.push((id.clone(), failed_via));
                }
            } else {
                let why = ctx.anomalies.lock().unwrap()[before..].join("; ");
                v.lost.push(format!(
                    "{id} (backup op {}): listed but no node restores it bit-identical {why}",
                    t.op
                ));
            }
        } else if delete_outcome
            .get(id)
            .is_some_and(|o| o.iter().any(|&x| x != Outcome::Fail))
        {
            v.deleted += 1;
        } else if retention_may_remove(&ops, t) {
            v.retained_out += 1;
        } else {
            // Ids of this environment that sort after it (retention keeps the newest by id
            // time, and an id is the first free second at or after the commit's).
            let later = listed
                .iter()
                .filter(|(l, e)| **e == t.env && l.as_str() > id.as_str())
                .count();
            v.lost.push(format!(
                "{id} (backup op {}): acknowledged, never deleted, not listed ({later} listed backups of its environment have later ids)",
                t.op
            ));
        }
    }

    // Listed backups nobody acknowledged.
    let mut unknown = ctx.unknown.lock().unwrap().clone();
    let mut extra: Vec<(&String, &String)> = listed
        .iter()
        .filter(|(id, _)| !acked.contains_key(*id))
        .collect();
    extra.sort();
    for (id, env) in extra {
        let out = ctx
            .dir
            .join("restores")
            .join(format!("x-{}", id.replace('/', "-")));
        let target = out.to_string_lossy().into_owned();
        let (op, c) = ctx.call(
            "checker",
            "restore-unacknowledged",
            &url,
            &s(&["restore", id, &target]),
        );
        let got = (c.outcome == Outcome::Ok)
            .then(|| tree::entries(&out).ok())
            .flatten()
            .map(|e| tree::hash(&e));
        let _ = std::fs::remove_dir_all(&out);
        let matched = got
            .as_ref()
            .and_then(|g| unknown.iter().position(|u| &u.env == env && &u.hash == g));
        h.complete(
            op,
            c.outcome,
            json!({"id": id, "tree": got, "matches_unknown_op": matched.map(|i| unknown[i].op)}),
        );
        match matched {
            Some(i) => {
                unknown.remove(i);
                v.unknown_listed += 1;
            }
            None => v.anomalies.push(format!(
                "backup {id} is listed but no backup of env {env} that could have made it was acknowledged or unknown (restore: {}, tree {got:?})",
                c.outcome.as_str()
            )),
        }
    }
    v
}

/// Repair passes until one copies nothing and leaves no backlog (at most 10).
fn repair_until_converged(ctx: &Ctx, url: &str, v: &mut Verdict) {
    for pass in 1..=10 {
        v.repair_passes += 1;
        let (op, c) = ctx.call(
            "checker",
            "repair",
            url,
            &s(&["cluster", "repair", "--json"]),
        );
        let j = c.json().unwrap_or(Value::Null);
        let pushed: u64 = j["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| n["pushed"].as_u64().unwrap_or(0))
            .sum();
        let backlog = j["backlog"].as_u64();
        ctx.history.complete(
            op,
            c.outcome,
            json!({"pass": pass, "pushed": pushed, "backlog": backlog}),
        );
        v.repair_copies += pushed;
        if c.outcome == Outcome::Ok && backlog == Some(0) && pushed == 0 {
            return;
        }
    }
    v.anomalies.push(
        "repair did not converge in 10 passes (some chunk lacks copies on its owners)".into(),
    );
}

/// Whether retention may have removed `t` (see the module note).
fn retention_may_remove(ops: &[Op], t: &super::workload::Taken) -> bool {
    let kmin = ops
        .iter()
        .filter(|o| o.kind == "keep-max" && o.outcome != Outcome::Fail)
        .filter(|o| o.result["env"].as_str() == Some(t.env.as_str()))
        .filter_map(|o| o.result["keep_max"].as_str()?.parse::<u64>().ok())
        .min();
    let Some(k) = kmin else {
        return false;
    };
    let Some(mine) = ops.iter().find(|o| o.id == t.op) else {
        return false;
    };
    let newer = ops
        .iter()
        .filter(|o| (o.kind == "backup" || o.kind == "backup-job") && o.outcome != Outcome::Fail)
        .filter(|o| o.process == mine.process && o.invoked > mine.invoked)
        .count() as u64;
    newer >= k
}
