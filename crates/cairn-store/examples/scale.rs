//! How the chunk store's cost grows with its size: fill a store with N synthetic chunks, kill
//! the writing process with SIGKILL while it appends more (a crash at that size), then open
//! the store in a fresh process and measure start-up (recovery included), resident memory
//! and lookup rates. One line of results per size, in the README's table form.
//!
//!   cargo run --release -p cairn-store --example scale -- [--dir DIR] 1000000 10000000
//!
//! Chunks are 64 bytes (the index's cost per chunk does not depend on the chunk's size; the
//! packs stay small enough for a test machine's disk). Chunk `i`'s content is derived from
//! `i`, so the process that measures lookups knows which ids are present without reading
//! them back. Internal phases (`--fill DIR N`, `--open DIR N`) run as child processes so each
//! measurement starts from a fresh process, as a restarted node does.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn_chunker::{encode, EncodedChunk};
use cairn_core::{ChunkId, Compression};
use cairn_store::{ChunkStore, StoreConfig};

const BATCH: u64 = 10_000;
const LOOKUPS: u64 = 1_000_000;

fn content(i: u64) -> [u8; 64] {
    let mut b = [0u8; 64];
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xC0FF_EE00;
    for chunk in b.chunks_mut(8) {
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    b[..8].copy_from_slice(&i.to_le_bytes());
    b
}

fn chunk(i: u64) -> EncodedChunk {
    encode(&content(i), Compression::None)
}

/// Resident set now and at its peak, in MiB (`/proc/self/status`).
fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
}

fn dir_mib(p: &Path) -> f64 {
    fn walk(p: &Path) -> u64 {
        let Ok(rd) = std::fs::read_dir(p) else {
            return std::fs::metadata(p).map_or(0, |m| m.len());
        };
        rd.flatten()
            .map(|e| {
                let m = e.metadata().unwrap();
                if m.is_dir() {
                    walk(&e.path())
                } else {
                    m.len()
                }
            })
            .sum()
    }
    walk(p) as f64 / (1024.0 * 1024.0)
}

/// Child: fills `dir` with chunks `0..n`, prints `filled SECONDS RSS PEAK`, then keeps
/// appending until it is killed.
fn fill(dir: &Path, n: u64) {
    let store = ChunkStore::open_with(StoreConfig::new(dir)).unwrap();
    let t = Instant::now();
    let mut i = 0;
    while i < n {
        let batch: Vec<EncodedChunk> = (i..(i + BATCH).min(n)).map(chunk).collect();
        store.put_batch(&batch).unwrap();
        i += BATCH;
    }
    let secs = t.elapsed().as_secs_f64();
    let (rss, peak) = rss_mib();
    println!("filled {secs} {rss} {peak}");
    std::io::stdout().flush().unwrap();
    // Writes in flight when the kill lands: the crash the next open recovers from.
    let mut j = n + 1_000_000_000;
    loop {
        let batch: Vec<EncodedChunk> = (j..j + BATCH).map(chunk).collect();
        let _ = store.put_batch(&batch);
        j += BATCH;
    }
}

/// Child: opens `dir` (recovering from the crash), then looks up present and absent ids;
/// prints `opened OPEN_S RSS_AFTER_OPEN HIT_PER_S MISS_PER_S RSS PEAK`.
fn open(dir: &Path, n: u64) {
    let t = Instant::now();
    let store = ChunkStore::open_with(StoreConfig::new(dir)).unwrap();
    let open_s = t.elapsed().as_secs_f64();
    let (rss_open, _) = rss_mib();
    let lookups = LOOKUPS.min(n);
    // Present ids in a scattered order (a backup's chunks are not in store order).
    let present: Vec<ChunkId> = (0..lookups)
        .map(|k| chunk(k.wrapping_mul(2_654_435_761) % n).id)
        .collect();
    let absent: Vec<ChunkId> = (0..lookups).map(|k| chunk(u64::MAX - k).id).collect();
    let rate = |ids: &[ChunkId], want: bool| {
        let t = Instant::now();
        for id in ids {
            assert_eq!(store.contains(id).unwrap(), want, "{id}");
        }
        ids.len() as f64 / t.elapsed().as_secs_f64()
    };
    let hit = rate(&present, true);
    let miss = rate(&absent, false);
    let (rss, peak) = rss_mib();
    println!("opened {open_s} {rss_open} {hit} {miss} {rss} {peak}");
}

fn child(args: &[String]) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn fields(line: &str, tag: &str) -> Vec<f64> {
    line.strip_prefix(tag)
        .unwrap_or_else(|| panic!("unexpected output {line:?}"))
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect()
}

fn measure(base: &Path, n: u64) {
    let dir = base.join(format!("store-{n}"));
    let _ = std::fs::remove_dir_all(&dir);
    let mut filler = child(&["--fill".into(), dir.display().to_string(), n.to_string()]);
    let mut line = String::new();
    BufReader::new(filler.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let f = fields(line.trim(), "filled ");
    // Let the appends after the fill run a moment, then crash.
    std::thread::sleep(Duration::from_millis(300));
    filler.kill().unwrap();
    filler.wait().unwrap();
    let opener = child(&["--open".into(), dir.display().to_string(), n.to_string()]);
    let out = opener.wait_with_output().unwrap();
    assert!(out.status.success(), "the open phase failed");
    let o = fields(String::from_utf8_lossy(&out.stdout).trim(), "opened ");
    println!(
        "| {n} | {:.0} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
        n as f64 / f[0],
        o[0],
        o[1],
        o[2],
        o[3],
        o[5],
        f[2],
        dir_mib(&dir),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--fill") => return fill(Path::new(&args[1]), args[2].parse().unwrap()),
        Some("--open") => return open(Path::new(&args[1]), args[2].parse().unwrap()),
        _ => {}
    }
    let mut base: Option<PathBuf> = None;
    let mut sizes = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--dir" {
            base = it.next().map(PathBuf::from);
        } else {
            sizes.push(a.parse::<u64>().expect("a number of chunks"));
        }
    }
    if sizes.is_empty() {
        sizes = vec![1_000_000, 10_000_000];
    }
    let tmp = std::env::temp_dir().join(format!("cairn-store-scale-{}", std::process::id()));
    let base = base.unwrap_or(tmp);
    std::fs::create_dir_all(&base).unwrap();
    println!(
        "| chunks | fill (chunks/s) | open after a crash (s) | RSS after open (MiB) | lookups present (/s) | lookups absent (/s) | peak RSS opening + 2M lookups (MiB) | peak RSS filling (MiB) | on disk (MiB) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for n in sizes {
        measure(&base, n);
    }
}
