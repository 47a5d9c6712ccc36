//! `nemesis --nodes N --minutes M --seed S`: a Jepsen-style run of a real cluster under
//! faults, judged at the end (see `cairn_tests::nemesis` and scripts/README.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use cairn_tests::fleet::{agent_token, urls};
use cairn_tests::nemesis::faults::{self, Nemesis};
use cairn_tests::nemesis::history::History;
use cairn_tests::nemesis::net::Net;
use cairn_tests::nemesis::workload::{admin_worker, env_worker, Ctx, Env};
use cairn_tests::nemesis::{check, Rng, SECRET};
use cairn_tests::{is_root, Agent, Host, TestCluster};
use std::panic::AssertUnwindSafe;

struct Args {
    nodes: usize,
    minutes: f64,
    seed: u64,
    envs: usize,
    keep: bool,
    disk_mib: u64,
    faults: Vec<String>,
    agent_envs: usize,
}

const USAGE: &str = "usage: nemesis [--nodes N (3..=7, default 5)] [--minutes M (default 3)] [--seed S] [--envs E (default 3)] [--agent-envs A (of the E, backed up by a cairn agent through jobs; default 1)] [--disk-mib MiB (tmpfs per node, default 1024)] [--faults kill,pause,corrupt,disk-full,clock,membership,partition (default all)] [--keep]";

fn parse() -> Result<Args, String> {
    let mut a = Args {
        nodes: 5,
        minutes: 3.0,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1),
        envs: 3,
        keep: false,
        disk_mib: 1024,
        agent_envs: 1,
        faults: faults::ALL.iter().map(|s| s.to_string()).collect(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut val = || it.next().ok_or(format!("{k} needs a value"));
        match k.as_str() {
            "--nodes" => a.nodes = val()?.parse().map_err(|e| format!("--nodes: {e}"))?,
            "--minutes" => a.minutes = val()?.parse().map_err(|e| format!("--minutes: {e}"))?,
            "--seed" => a.seed = val()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--envs" => a.envs = val()?.parse().map_err(|e| format!("--envs: {e}"))?,
            "--agent-envs" => {
                a.agent_envs = val()?.parse().map_err(|e| format!("--agent-envs: {e}"))?
            }
            "--disk-mib" => a.disk_mib = val()?.parse().map_err(|e| format!("--disk-mib: {e}"))?,
            "--faults" => {
                a.faults = val()?.split(',').map(str::to_string).collect();
                if let Some(f) = a.faults.iter().find(|f| !faults::ALL.contains(&f.as_str())) {
                    return Err(format!(
                        "--faults: unknown kind {f}; kinds: {}",
                        faults::ALL.join(",")
                    ));
                }
            }
            "--keep" => a.keep = true,
            "-h" | "--help" => return Err(USAGE.into()),
            _ => return Err(format!("unknown argument {k}\n{USAGE}")),
        }
    }
    if !(3..=7).contains(&a.nodes) || a.envs == 0 || a.agent_envs > a.envs || a.minutes <= 0.0 {
        return Err(USAGE.into());
    }
    Ok(a)
}

/// A UUID-shaped environment id from the seed's RNG.
fn eid(rng: &mut Rng) -> String {
    let h = format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64());
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// Mounts a tmpfs of `mib` MiB on each node's data dir (root only); returns which worked.
fn mount_tmpfs(cdir: &Path, n: usize, mib: u64) -> Vec<bool> {
    (1..=n)
        .map(|i| {
            let d = cdir.join(format!("node{i}"));
            std::fs::create_dir_all(&d).is_ok()
                && std::process::Command::new("mount")
                    .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
                    .arg(&d)
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false)
        })
        .collect()
}

/// Unmounts the nodes' tmpfs, first copying their contents next to them when `save`.
fn unmount_tmpfs(cdir: &Path, mounted: &[bool], save: bool) {
    for (i, m) in mounted.iter().enumerate() {
        if !m {
            continue;
        }
        let d = cdir.join(format!("node{}", i + 1));
        if save {
            let _ = std::process::Command::new("cp")
                .arg("-a")
                .arg(&d)
                .arg(cdir.join(format!("node{}.saved", i + 1)))
                .status();
        }
        let _ = std::process::Command::new("umount").arg(&d).status();
    }
}

/// Starts `cairn agent` for host "h1" with a token of its own, discovering the directories
/// of `envs` (made empty here; their workers fill them), and waits until they register.
/// Returns the agent and each environment's id by name.
fn start_agent(
    nem: &Nemesis,
    dir: &Path,
    envs: &[Env],
) -> Result<(Agent, BTreeMap<String, String>), String> {
    let roots = dir.join("envs");
    for e in envs {
        std::fs::create_dir_all(&e.root).map_err(|err| format!("{}: {err}", e.root.display()))?;
    }
    let c = &nem.cluster;
    let token = std::panic::catch_unwind(AssertUnwindSafe(|| agent_token(&c.nodes[0], "h1")))
        .map_err(|_| "cannot issue an agent token".to_string())?;
    let text = format!(
        "cluster = {}\nhost_id = \"h1\"\nstate_dir = \"{}\"\ntoken = \"{token}\"\nregister_interval_ms = 1000\nmax_jobs = 2\n[discovery]\ndirs = [\"{}\"]\n",
        urls(c),
        dir.join("state").display(),
        roots.display()
    );
    let agent = Agent::start(dir, &text);
    let listed =
        std::panic::catch_unwind(AssertUnwindSafe(|| c.nodes[0].envs(Some("h1"), envs.len())))
            .map_err(|_| {
                format!(
                    "its environments did not register; log: {}",
                    agent
                        .log()
                        .chars()
                        .rev()
                        .take(2000)
                        .collect::<String>()
                        .chars()
                        .rev()
                        .collect::<String>()
                )
            })?;
    Ok((agent, listed.into_iter().collect()))
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if std::env::var_os("CAIRN_BIN").is_none() {
        if let Some(dir) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf))
        {
            std::env::set_var("CAIRN_BIN", dir.join("cairn"));
        }
    }
    let mut reproduce = format!(
        "scripts/nemesis.sh --nodes {} --minutes {} --seed {} --envs {} --agent-envs {}",
        args.nodes, args.minutes, args.seed, args.envs, args.agent_envs
    );
    if args.faults.len() != faults::ALL.len() {
        reproduce.push_str(&format!(" --faults {}", args.faults.join(",")));
    }
    println!(
        "nemesis: seed {} ({} nodes, {} min, {} environments)",
        args.seed, args.nodes, args.minutes, args.envs
    );
    println!("nemesis: reproduce with: {reproduce}");
    let dir: PathBuf = match tempfile::Builder::new().prefix("cairn-nemesis-").tempdir() {
        Ok(d) => d.keep(),
        Err(e) => {
            eprintln!("nemesis: cannot create a temp dir: {e}");
            return ExitCode::from(2);
        }
    };
    println!("nemesis: run directory {}", dir.display());
    let cdir = dir.join("cluster");
    let mounted = if is_root() {
        mount_tmpfs(&cdir, args.nodes, args.disk_mib)
    } else {
        vec![false; args.nodes]
    };
    let history = match History::create(&dir.join("history.jsonl")) {
        Ok(h) => Arc::new(h),
        Err(e) => {
            eprintln!("nemesis: cannot write the history: {e}");
            return ExitCode::from(2);
        }
    };
    let root = Rng::new(args.seed);
    // Each node in a network namespace of its own (root), so links can be cut.
    let net = if !args.faults.iter().any(|f| f == "partition") {
        Err("left out by --faults".to_string())
    } else if !is_root() {
        Err("needs root for a network namespace per node".to_string())
    } else {
        Net::create()
    };
    let hosts = match net {
        Ok(mut net) => match (1..=args.nodes as u64)
            .map(|id| net.host(id))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(h) => (h, Ok(net)),
            Err(e) => (Host::loopback(args.nodes), Err(e)),
        },
        Err(e) => (Host::loopback(args.nodes), Err(e)),
    };
    let (hosts, net) = hosts;
    if let Err(why) = &net {
        println!("nemesis: nodes share loopback, no partitions: {why}");
    }
    let cluster = match std::panic::catch_unwind(|| {
        TestCluster::start_on(&cdir, hosts, "", Some(SECRET), None)
    }) {
        Ok(c) => c,
        Err(_) => {
            eprintln!("nemesis: the cluster did not start; see {}", cdir.display());
            unmount_tmpfs(&cdir, &mounted, true);
            return ExitCode::from(2);
        }
    };
    let mut nem = Nemesis::new(cluster, net, &cdir, mounted.clone());
    nem.allowed = args.faults.clone();
    // The first E-A environments are backed up by the CLI reading the tree; the last A are
    // directories on host "h1", found and backed up by a `cairn agent` daemon through jobs.
    let mut erng = root.fork("envs");
    let direct = args.envs - args.agent_envs;
    let agent_dir = dir.join("agent-h1");
    let mut envs: Vec<Env> = (1..=args.envs)
        .map(|i| Env {
            name: format!("env{i}"),
            eid: eid(&mut erng),
            root: if i <= direct {
                dir.join("envs").join(format!("env{i}"))
            } else {
                agent_dir.join("envs").join(format!("env{i}"))
            },
            agent: i > direct,
        })
        .collect();
    if args.agent_envs > 0 {
        match start_agent(&nem, &agent_dir, &envs[direct..]) {
            Ok((agent, eids)) => {
                for e in envs.iter_mut().filter(|e| e.agent) {
                    e.eid = eids[&e.name].clone();
                }
                nem.agent = Some(agent);
            }
            Err(e) => {
                eprintln!("nemesis: the agent did not start: {e}");
                drop(nem);
                unmount_tmpfs(&cdir, &mounted, true);
                return ExitCode::from(2);
            }
        }
    }
    let started = Instant::now();
    let ctx = Arc::new(Ctx {
        history: history.clone(),
        urls: RwLock::new(nem.cluster.nodes.iter().map(|n| n.url.clone()).collect()),
        deadline: started + Duration::from_secs_f64(args.minutes * 60.0),
        dir: dir.clone(),
        envs: envs.clone(),
        acked: Mutex::new(Default::default()),
        unknown: Mutex::new(Vec::new()),
        anomalies: Mutex::new(Vec::new()),
        restores_compared: AtomicU64::new(0),
    });
    history.note(
        "start",
        serde_json::json!({"seed": args.seed, "nodes": args.nodes, "minutes": args.minutes,
            "envs": envs.iter().map(|e| (&e.name, &e.eid)).collect::<Vec<_>>(),
            "not_injected": nem.not_injected()}),
    );
    let mut workers = Vec::new();
    for e in envs {
        let (c, r) = (ctx.clone(), root.fork(&e.name));
        workers.push(std::thread::spawn(move || env_worker(c, e, r)));
    }
    {
        let (c, r) = (ctx.clone(), root.fork("admin"));
        workers.push(std::thread::spawn(move || admin_worker(c, r)));
    }
    nem.run(ctx.clone(), root.fork("nemesis"), started);
    println!("nemesis: workload over; waiting for the last calls");
    for w in workers {
        if w.join().is_err() {
            ctx.anomaly("a worker panicked".into());
        }
    }
    println!("nemesis: healing and checking");
    let verdict = check::check(&ctx, &mut nem);

    // Summary.
    let mut by_kind: BTreeMap<String, BTreeMap<&str, u64>> = BTreeMap::new();
    for o in history.ops() {
        if o.process == "nemesis" || o.process == "checker" {
            continue;
        }
        *by_kind
            .entry(o.kind.clone())
            .or_default()
            .entry(o.outcome.as_str())
            .or_default() += 1;
    }
    for a in &verdict.anomalies {
        println!("nemesis: anomaly: {a}");
    }
    for l in &verdict.lost {
        println!("nemesis: LOST: {l}");
    }
    let ops: Vec<String> = by_kind
        .iter()
        .map(|(k, m)| {
            let parts: Vec<String> = m.iter().map(|(o, n)| format!("{o}={n}")).collect();
            format!("{k}[{}]", parts.join(" "))
        })
        .collect();
    let faults: Vec<String> = nem.counts.iter().map(|(k, n)| format!("{k}={n}")).collect();
    let failed = !verdict.lost.is_empty() || !verdict.anomalies.is_empty();
    println!("nemesis: not injected: {}", nem.not_injected().join("; "));
    println!(
        "nemesis: repair after healing: {} pass(es), {} chunk copies made; scrub: {}",
        verdict.repair_passes, verdict.repair_copies, verdict.scrub
    );
    let summary = format!(
        "nemesis: seed={} nodes={} minutes={} | ops: {} | faults: {} | backups checked={} restored={} deleted={} retention={} unknown-listed={} trees-compared={} | anomalies={} | lost = {}",
        args.seed,
        args.nodes,
        args.minutes,
        ops.join(" "),
        if faults.is_empty() { "none".into() } else { faults.join(" ") },
        verdict.checked,
        verdict.restored,
        verdict.deleted,
        verdict.retained_out,
        verdict.unknown_listed,
        ctx.restores_compared.load(std::sync::atomic::Ordering::Relaxed),
        verdict.anomalies.len(),
        verdict.lost.len()
    );
    history.note("summary", serde_json::json!(summary));
    drop(nem);
    unmount_tmpfs(&cdir, &mounted, failed || args.keep);
    println!("{summary}");
    if failed || args.keep {
        println!(
            "nemesis: {} kept: history.jsonl, cluster/node*.log (node data in cluster/node*.saved when on tmpfs)",
            dir.display()
        );
        println!("nemesis: reproduce with: {reproduce}");
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
