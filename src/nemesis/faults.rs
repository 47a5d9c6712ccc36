//! The faults: one episode at a time, chosen by the nemesis's RNG, each injected, held for a
//! while and healed. [`Nemesis::heal_all`] undoes whatever is still in force at the end.
//!
//! | fault      | how                                                                  |
//! |------------|----------------------------------------------------------------------|
//! | kill       | SIGKILL one or more nodes (and now and then the agent), later restart   |
//! | pause      | SIGSTOP one or more nodes, later SIGCONT                              |
//! | corrupt    | XOR one byte of a random pack segment of a running node with 0xff     |
//! | disk-full  | (root) fill the node's tmpfs data dir with a ballast file, then delete |
//! | clock      | (libfaketime) restart a node with its wall clock offset, later without |
//! | membership | add a storage node (`cluster add-node`), later drain and remove it     |
//! | partition  | (root) cut links between nodes' network namespaces, later restore them |
//!
//! Partitions ([`super::net`]) come in four shapes: a minority isolated, two halves, a
//! bridge (two sides that cannot talk and one node that talks to both) and one-way (a
//! group's packets to the others are dropped). Clients and the checker are never cut off.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::history::Outcome;
use super::net::{Net, Shape};
use super::workload::Ctx;
use super::Rng;
use crate::TestCluster;

/// Where Debian's `faketime` package puts the preload library.
const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
const BALLAST: &str = "nemesis-ballast";
/// Every fault kind, as `--faults` names them.
pub const ALL: [&str; 7] = [
    "kill",
    "pause",
    "corrupt",
    "disk-full",
    "clock",
    "membership",
    "partition",
];

#[derive(Default, Clone)]
struct NodeState {
    paused: bool,
    removed: bool,
    tmpfs: bool,
    ballast: Option<PathBuf>,
}

pub struct Nemesis {
    pub cluster: TestCluster,
    /// The nodes' network namespaces (dropped after the cluster: fields drop in order).
    pub net: Result<Net, String>,
    /// The `cairn agent` of host h1, when the run has agent-served environments.
    pub agent: Option<crate::Agent>,
    state: Vec<NodeState>,
    dir: PathBuf,
    pub faketime: bool,
    /// The fault kinds this run may inject (`--faults`).
    pub allowed: Vec<String>,
    /// Faults injected, by kind.
    pub counts: std::collections::BTreeMap<String, u64>,
}

impl Nemesis {
    /// `tmpfs[i]`: node i+1's data dir is a tmpfs of its own (disk-full can fill it); `net`:
    /// the namespaces the nodes run in, or why they run on loopback.
    pub fn new(
        cluster: TestCluster,
        net: Result<Net, String>,
        dir: &Path,
        tmpfs: Vec<bool>,
    ) -> Nemesis {
        let mut state = vec![NodeState::default(); cluster.nodes.len()];
        for (s, t) in state.iter_mut().zip(tmpfs) {
            s.tmpfs = t;
        }
        Nemesis {
            cluster,
            net,
            agent: None,
            state,
            dir: dir.to_path_buf(),
            faketime: Path::new(FAKETIME_LIB).exists(),
            allowed: ALL.iter().map(|s| s.to_string()).collect(),
            counts: Default::default(),
        }
    }

    /// The kinds of fault this run cannot inject, with why.
    pub fn not_injected(&self) -> Vec<String> {
        let mut v = vec![
            "a client cut off from some nodes (clients and the checker reach every node)".into(),
        ];
        if let Err(why) = &self.net {
            v.push(format!("partition ({why})"));
        }
        for k in ALL {
            if !self.allows(k) {
                v.push(format!("{k} (left out by --faults)"));
            }
        }
        if !self.faketime {
            v.push(format!(
                "clock (no {FAKETIME_LIB}: apt-get install faketime)"
            ));
        }
        if !self.state.iter().any(|s| s.tmpfs) {
            v.push("disk-full (needs root to mount a tmpfs per node)".into());
        }
        v
    }

    fn allows(&self, kind: &str) -> bool {
        self.allowed.iter().any(|a| a == kind)
    }

    /// Ids (1-based) of the nodes that are members and running.
    fn live(&self) -> Vec<u64> {
        (0..self.cluster.nodes.len())
            .filter(|&i| !self.state[i].removed && self.cluster.nodes[i].is_running())
            .map(|i| i as u64 + 1)
            .collect()
    }

    fn node_count(&self) -> usize {
        self.state.iter().filter(|s| !s.removed).count()
    }

    /// Restarts node `id`, reporting instead of panicking when it does not come back.
    fn restart(&mut self, id: u64) -> Result<(), String> {
        let node = &mut self.cluster.nodes[id as usize - 1];
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| node.restart()));
        match r {
            Ok(()) => Ok(()),
            Err(p) => {
                node.kill();
                Err(p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "restart panicked".into())
                    .chars()
                    .take(2000)
                    .collect())
            }
        }
    }

    fn signal(&self, id: u64, sig: nix::sys::signal::Signal) -> bool {
        match self.cluster.nodes[id as usize - 1].pid() {
            Some(pid) => {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).is_ok()
            }
            None => false,
        }
    }

    /// Waits `d`, or less when the run's deadline comes first.
    fn hold(ctx: &Ctx, d: Duration) {
        let until = (Instant::now() + d).min(ctx.deadline.max(Instant::now()));
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn targets(&self, rng: &mut Rng) -> Vec<u64> {
        let mut live = self.live();
        let n = self.node_count();
        // Usually a minority; now and then a majority, briefly (no quorum).
        let k = if rng.chance(10) {
            n / 2 + 1
        } else {
            rng.range(1, ((n - 1) / 2).max(1) as u64) as usize
        };
        let mut out = Vec::new();
        while out.len() < k && !live.is_empty() {
            let i = rng.below(live.len() as u64) as usize;
            out.push(live.remove(i));
        }
        out.sort();
        out
    }

    /// Injects fault episodes until the deadline. Membership changes come at a third and at
    /// two thirds of the run.
    pub fn run(&mut self, ctx: Arc<Ctx>, mut rng: Rng, started: Instant) {
        let total = ctx.deadline.saturating_duration_since(started);
        let (add_at, remove_at) = (started + total / 3, started + total * 2 / 3);
        let mut added: Option<u64> = None;
        let mut removed_done = false;
        while Instant::now() < ctx.deadline {
            Nemesis::hold(&ctx, Duration::from_millis(rng.range(2000, 8000)));
            if Instant::now() >= ctx.deadline {
                break;
            }
            if added.is_none() && Instant::now() >= add_at && self.allows("membership") {
                added = Some(self.add_node(&ctx, &mut rng));
                continue;
            }
            if let (Some(id), false) = (added, removed_done) {
                if id > 0 && Instant::now() >= remove_at {
                    self.remove_node(&ctx, &mut rng, id);
                    removed_done = true;
                    continue;
                }
            }
            let mut kinds = vec!["kill", "kill", "pause", "pause", "corrupt"];
            if self.state.iter().any(|s| s.tmpfs) {
                kinds.push("disk-full");
            }
            if self.faketime {
                kinds.push("clock");
            }
            if self.net.is_ok() {
                kinds.extend(["partition", "partition"]);
            }
            kinds.retain(|k| self.allows(k));
            if kinds.is_empty() {
                continue;
            }
            let kind = *rng.pick(&kinds);
            match kind {
                "kill" => self.kill(&ctx, &mut rng),
                "pause" => self.pause(&ctx, &mut rng),
                "corrupt" => self.corrupt(&ctx, &mut rng),
                "disk-full" => self.disk_full(&ctx, &mut rng),
                "partition" => self.partition(&ctx, &mut rng),
                _ => self.clock(&ctx, &mut rng),
            }
        }
    }

    fn count(&mut self, kind: &str) {
        *self.counts.entry(kind.to_string()).or_default() += 1;
    }

    fn kill(&mut self, ctx: &Ctx, rng: &mut Rng) {
        let ids = self.targets(rng);
        let agent = self.agent.is_some() && rng.chance(30);
        if ids.is_empty() && !agent {
            return;
        }
        self.count("kill");
        let hold = Duration::from_millis(rng.range(1000, 10_000));
        let op = ctx.history.invoke(
            "nemesis",
            "kill",
            &[format!("{ids:?}"), format!("agent={agent}")],
        );
        for &id in &ids {
            self.cluster.nodes[id as usize - 1].kill();
        }
        if agent {
            self.count("kill-agent");
            if let Some(a) = self.agent.as_mut() {
                a.kill();
            }
        }
        ctx.history.complete(
            op,
            Outcome::Ok,
            json!({"nodes": ids, "agent": agent, "hold_ms": hold.as_millis() as u64}),
        );
        Nemesis::hold(ctx, hold);
        for id in ids {
            self.restart_logged(ctx, id);
        }
        if agent {
            self.restart_agent(ctx);
        }
    }

    fn restart_agent(&mut self, ctx: &Ctx) {
        if let Some(a) = self.agent.as_mut() {
            let op = ctx.history.invoke("nemesis", "restart-agent", &[]);
            a.restart();
            ctx.history.complete(op, Outcome::Ok, json!({}));
        }
    }

    fn restart_logged(&mut self, ctx: &Ctx, id: u64) {
        let op = ctx.history.invoke("nemesis", "restart", &[id.to_string()]);
        match self.restart(id) {
            Ok(()) => ctx.history.complete(op, Outcome::Ok, json!({"node": id})),
            Err(e) => {
                ctx.history
                    .complete(op, Outcome::Fail, json!({"node": id, "error": e.clone()}));
                ctx.anomaly(format!("node {id} did not come back after a restart: {e}"));
            }
        }
    }

    fn pause(&mut self, ctx: &Ctx, rng: &mut Rng) {
        use nix::sys::signal::Signal;
        let ids = self.targets(rng);
        if ids.is_empty() {
            return;
        }
        self.count("pause");
        let hold = Duration::from_millis(rng.range(1000, 10_000));
        let op = ctx
            .history
            .invoke("nemesis", "pause", &[format!("{ids:?}")]);
        for &id in &ids {
            self.state[id as usize - 1].paused = self.signal(id, Signal::SIGSTOP);
        }
        ctx.history.complete(
            op,
            Outcome::Ok,
            json!({"nodes": ids, "hold_ms": hold.as_millis() as u64}),
        );
        Nemesis::hold(ctx, hold);
        let op = ctx
            .history
            .invoke("nemesis", "resume", &[format!("{ids:?}")]);
        for &id in &ids {
            self.signal(id, Signal::SIGCONT);
            self.state[id as usize - 1].paused = false;
        }
        ctx.history.complete(op, Outcome::Ok, json!({"nodes": ids}));
    }

    fn corrupt(&mut self, ctx: &Ctx, rng: &mut Rng) {
        let live = self.live();
        if live.is_empty() {
            return;
        }
        let id = *rng.pick(&live);
        let packs: Vec<PathBuf> = self.cluster.nodes[id as usize - 1]
            .pack_files()
            .into_iter()
            .filter(|p| std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false))
            .collect();
        if packs.is_empty() {
            return;
        }
        self.count("corrupt");
        let pack = rng.pick(&packs).clone();
        let len = std::fs::metadata(&pack).map(|m| m.len()).unwrap_or(0);
        let at = rng.below(len);
        let op = ctx.history.invoke(
            "nemesis",
            "corrupt",
            &[id.to_string(), pack.display().to_string(), at.to_string()],
        );
        let r = flip(&pack, at);
        ctx.history.complete(
            op,
            if r.is_ok() { Outcome::Ok } else { Outcome::Fail },
            json!({"node": id, "pack": pack, "offset": at, "error": r.err().map(|e| e.to_string())}),
        );
    }

    fn disk_full(&mut self, ctx: &Ctx, rng: &mut Rng) {
        let cands: Vec<u64> = self
            .live()
            .into_iter()
            .filter(|&id| self.state[id as usize - 1].tmpfs)
            .collect();
        if cands.is_empty() {
            return;
        }
        self.count("disk-full");
        let id = *rng.pick(&cands);
        let hold = Duration::from_millis(rng.range(3000, 15_000));
        let path = self.cluster.nodes[id as usize - 1].data.join(BALLAST);
        let op = ctx
            .history
            .invoke("nemesis", "disk-full", &[id.to_string()]);
        let written = fill(&path);
        self.state[id as usize - 1].ballast = Some(path.clone());
        ctx.history.complete(
            op,
            Outcome::Ok,
            json!({"node": id, "ballast_bytes": written, "hold_ms": hold.as_millis() as u64}),
        );
        Nemesis::hold(ctx, hold);
        let op = ctx
            .history
            .invoke("nemesis", "disk-free", &[id.to_string()]);
        let _ = std::fs::remove_file(&path);
        self.state[id as usize - 1].ballast = None;
        ctx.history.complete(op, Outcome::Ok, json!({"node": id}));
    }

    fn partition(&mut self, ctx: &Ctx, rng: &mut Rng) {
        let mut ids: Vec<u64> = (0..self.cluster.nodes.len())
            .filter(|&i| !self.state[i].removed)
            .map(|i| i as u64 + 1)
            .collect();
        for i in (1..ids.len()).rev() {
            ids.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let shape = *rng.pick(&Shape::ALL);
        let k = rng.range(1, (ids.len() / 2).max(1) as u64) as usize;
        let (links, groups) = shape.links(&ids, k);
        let Ok(net) = self.net.as_mut() else {
            return;
        };
        if links.is_empty() {
            return;
        }
        let hold = Duration::from_millis(rng.range(3000, 20_000));
        let op = ctx.history.invoke(
            "nemesis",
            "partition",
            &[shape.name().to_string(), format!("{groups:?}")],
        );
        let r: Result<(), String> = links.iter().try_for_each(|&(a, b)| net.cut(a, b));
        let cut = net.cuts();
        ctx.history.complete(
            op,
            if r.is_ok() {
                Outcome::Ok
            } else {
                Outcome::Fail
            },
            json!({"shape": shape.name(), "groups": groups, "cut": cut,
                   "hold_ms": hold.as_millis() as u64, "error": r.as_ref().err()}),
        );
        *self
            .counts
            .entry(format!("partition-{}", shape.name()))
            .or_default() += 1;
        if r.is_ok() {
            Nemesis::hold(ctx, hold);
        }
        self.heal_net(ctx);
    }

    fn heal_net(&mut self, ctx: &Ctx) {
        let Ok(net) = self.net.as_mut() else {
            return;
        };
        if net.cuts().is_empty() {
            return;
        }
        let op = ctx.history.invoke("nemesis", "heal-partition", &[]);
        match net.heal() {
            Ok(()) => ctx.history.complete(op, Outcome::Ok, json!({})),
            Err(e) => {
                ctx.history
                    .complete(op, Outcome::Fail, json!({"error": e.clone()}));
                ctx.anomaly(format!("the harness could not restore the network: {e}"));
            }
        }
    }

    fn clock(&mut self, ctx: &Ctx, rng: &mut Rng) {
        let live = self.live();
        if live.is_empty() {
            return;
        }
        self.count("clock");
        let id = *rng.pick(&live);
        let secs = rng.range(30, 7200) as i64 * if rng.chance(50) { 1 } else { -1 };
        let offset = format!("{secs:+}s");
        let hold = Duration::from_millis(rng.range(5000, 20_000));
        let op = ctx
            .history
            .invoke("nemesis", "clock", &[id.to_string(), offset.clone()]);
        {
            let n = &mut self.cluster.nodes[id as usize - 1];
            n.env = vec![
                ("LD_PRELOAD".into(), FAKETIME_LIB.into()),
                ("FAKETIME".into(), offset.clone()),
                // Timers (raft elections, deadlines) keep real time; only the wall clock is off.
                ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
            ];
            n.kill();
        }
        let r = self.restart(id);
        ctx.history.complete(
            op,
            if r.is_ok() {
                Outcome::Ok
            } else {
                Outcome::Fail
            },
            json!({"node": id, "offset": offset, "error": r.as_ref().err()}),
        );
        if let Err(e) = r {
            ctx.anomaly(format!(
                "node {id} did not start with its clock at {offset}: {e}"
            ));
        }
        Nemesis::hold(ctx, hold);
        self.cluster.nodes[id as usize - 1].env.clear();
        self.cluster.nodes[id as usize - 1].kill();
        self.restart_logged(ctx, id);
    }

    /// Starts a storage node and adds it; returns its id (0: it did not start).
    fn add_node(&mut self, ctx: &Ctx, rng: &mut Rng) -> u64 {
        self.count("add-node");
        let op = ctx.history.invoke("nemesis", "start-node", &[]);
        let dir = self.dir.clone();
        let id = self.cluster.nodes.len() as u64 + 1;
        let host = match self.net.as_mut() {
            Ok(net) => match net.host(id) {
                Ok(h) => Some(h),
                Err(e) => {
                    ctx.history
                        .complete(op, Outcome::Fail, json!({"error": e.clone()}));
                    ctx.anomaly(format!("no network namespace for a new node: {e}"));
                    return 0;
                }
            },
            Err(_) => None,
        };
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| match host {
            Some(h) => self.cluster.start_storage_node_on(&dir, h),
            None => self.cluster.start_storage_node(&dir),
        }));
        let addr = match r {
            Ok(a) => a,
            Err(_) => {
                ctx.history.complete(op, Outcome::Fail, json!({}));
                ctx.anomaly("a new storage node did not start".into());
                return 0;
            }
        };
        let id = self.cluster.nodes.len() as u64;
        self.state.push(NodeState::default());
        ctx.history
            .complete(op, Outcome::Ok, json!({"node": id, "addr": addr}));
        let url = ctx.pick_url(rng);
        let (op, c) = ctx.call(
            "nemesis",
            "add-node",
            &url,
            &[
                "cluster".into(),
                "add-node".into(),
                addr.clone(),
                "--zone".into(),
                format!("z{id}"),
            ],
        );
        let mut result = json!({"node": id});
        if c.outcome != Outcome::Ok {
            result["error"] = json!(c.error());
        }
        ctx.history.complete(op, c.outcome, result);
        ctx.urls
            .write()
            .unwrap()
            .push(self.cluster.nodes[id as usize - 1].url.clone());
        id
    }

    fn remove_node(&mut self, ctx: &Ctx, rng: &mut Rng, id: u64) {
        self.count("remove-node");
        let url = self.cluster.nodes[id as usize - 1].url.clone();
        // Clients stop using it first, as an operator would.
        ctx.urls.write().unwrap().retain(|u| *u != url);
        let via = ctx.pick_url(rng);
        let (op, c) = ctx.call(
            "nemesis",
            "remove-node",
            &via,
            &["cluster".into(), "remove-node".into(), id.to_string()],
        );
        let mut result = json!({"node": id});
        if c.outcome != Outcome::Ok {
            result["error"] = json!(c.error());
        }
        ctx.history.complete(op, c.outcome, result);
        // Removed, or refused definitely (it never became a member: its add failed): either
        // way not a member, so it stops and the checker does not count on it.
        if c.outcome != Outcome::Unknown {
            self.cluster.nodes[id as usize - 1].stop();
            self.state[id as usize - 1].removed = true;
        }
    }

    /// Undoes every fault in force: continue paused nodes, delete ballast, restart killed
    /// and clock-skewed nodes without skew. Returns the nodes that did not come back.
    pub fn heal_all(&mut self, ctx: &Ctx) -> Vec<u64> {
        use nix::sys::signal::Signal;
        self.heal_net(ctx);
        let op = ctx.history.invoke("nemesis", "heal", &[]);
        for i in 0..self.cluster.nodes.len() {
            let id = i as u64 + 1;
            if self.state[i].paused {
                self.signal(id, Signal::SIGCONT);
                self.state[i].paused = false;
            }
            if let Some(b) = self.state[i].ballast.take() {
                let _ = std::fs::remove_file(b);
            }
            if !self.cluster.nodes[i].env.is_empty() {
                self.cluster.nodes[i].env.clear();
                self.cluster.nodes[i].kill();
            }
        }
        let mut failed = Vec::new();
        for i in 0..self.cluster.nodes.len() {
            let id = i as u64 + 1;
            if !self.state[i].removed && !self.cluster.nodes[i].is_running() {
                if let Err(e) = self.restart(id) {
                    ctx.anomaly(format!("node {id} did not come back when healing: {e}"));
                    failed.push(id);
                }
            }
        }
        if self.agent.as_ref().is_some_and(|a| !a.is_running()) {
            self.restart_agent(ctx);
        }
        ctx.history
            .complete(op, Outcome::Ok, json!({"not_restarted": failed}));
        failed
    }

    /// URLs of the member nodes that run.
    pub fn live_urls(&self) -> Vec<(u64, String)> {
        self.live()
            .into_iter()
            .map(|id| (id, self.cluster.nodes[id as usize - 1].url.clone()))
            .collect()
    }
}

/// XORs the byte at `at` of `path` with 0xff.
fn flip(path: &Path, at: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at)?;
    b[0] ^= 0xff;
    f.write_all_at(&b, at)?;
    f.sync_data()
}

/// Writes zeros to `path` until the file system is full; returns the bytes written.
fn fill(path: &Path) -> u64 {
    use std::io::Write;
    let Ok(mut f) = std::fs::File::create(path) else {
        return 0;
    };
    let buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        match f.write(&buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k as u64,
        }
    }
    let _ = f.sync_all();
    n
}
