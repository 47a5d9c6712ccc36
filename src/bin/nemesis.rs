//! `nemesis --nodes N --minutes M --seed S`: a Jepsen-style run of a real cluster under
//! faults, judged at the end (see `cairn_tests::nemesis` and scripts/README.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use cairn_tests::nemesis::faults::{self, Nemesis};
use cairn_tests::nemesis::history::History;
use cairn_tests::nemesis::workload::{admin_worker, env_worker, Ctx, Env};
use cairn_tests::nemesis::{check, Rng};
use cairn_tests::{is_root, TestCluster};

struct Args {
    nodes: usize,
    minutes: f64,
    seed: u64,
    envs: usize,
    keep: bool,
    disk_mib: u64,
    faults: Vec<String>,
}

const USAGE: &str = "usage: nemesis [--nodes N (3..=7, default 5)] [--minutes M (default 3)] [--seed S] [--envs E (default 3)] [--disk-mib MiB (tmpfs per node, default 1024)] [--faults kill,pause,corrupt,disk-full,clock,membership (default all)] [--keep]";

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
    if !(3..=7).contains(&a.nodes) || a.envs == 0 || a.minutes <= 0.0 {
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
        "scripts/nemesis.sh --nodes {} --minutes {} --seed {} --envs {}",
        args.nodes, args.minutes, args.seed, args.envs
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
    let cluster = match std::panic::catch_unwind(|| TestCluster::start(&cdir, args.nodes, "")) {
        Ok(c) => c,
        Err(_) => {
            eprintln!("nemesis: the cluster did not start; see {}", cdir.display());
            unmount_tmpfs(&cdir, &mounted, true);
            return ExitCode::from(2);
        }
    };
    let mut nem = Nemesis::new(cluster, &cdir, mounted.clone());
    nem.allowed = args.faults.clone();
    let mut erng = root.fork("envs");
    let envs: Vec<Env> = (1..=args.envs)
        .map(|i| Env {
            name: format!("env{i}"),
            eid: eid(&mut erng),
            root: dir.join("envs").join(format!("env{i}")),
        })
        .collect();
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
