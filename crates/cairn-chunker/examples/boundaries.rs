//! How much of a changed file FastCDC keeps as unchanged chunks, for chunker parameters.
//!
//! `cargo run --release -p cairn-chunker --example boundaries -- OLD NEW [MIN AVG MAX [LEVEL]]`
//! (sizes in KiB, LEVEL the normalisation 0-3; default: the bounds and level backups use). Prints the
//! new file's chunk count and mean size, and the bytes of it that are chunks the old file had.

use std::collections::HashSet;

use fastcdc::v2020::{FastCDC, Normalization};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: boundaries OLD NEW [MIN AVG MAX [LEVEL]] (KiB)");
        std::process::exit(2);
    }
    let d = cairn_chunker::ChunkerParams::default();
    let kib = |i: usize, def: u32| {
        args.get(i)
            .map(|s| s.parse::<u32>().expect("a size in KiB") * 1024)
            .unwrap_or(def)
    };
    let (min, avg, max) = (kib(2, d.min), kib(3, d.avg), kib(4, d.max));
    let level = match args.get(5).map(String::as_str) {
        Some("0") => Normalization::Level0,
        Some("2") => Normalization::Level2,
        Some("1") => Normalization::Level1,
        Some("3") => Normalization::Level3,
        _ => Normalization::Level2,
    };
    let old = std::fs::read(&args[0]).expect("read OLD");
    let new = std::fs::read(&args[1]).expect("read NEW");
    let cut = |data: &[u8]| -> Vec<(blake3::Hash, usize)> {
        FastCDC::with_level(data, min, avg, max, level)
            .map(|c| (blake3::hash(&data[c.offset..c.offset + c.length]), c.length))
            .collect()
    };
    let before: HashSet<blake3::Hash> = cut(&old).into_iter().map(|c| c.0).collect();
    let after = cut(&new);
    let kept: usize = after
        .iter()
        .filter(|c| before.contains(&c.0))
        .map(|c| c.1)
        .sum();
    println!(
        "min {} avg {} max {} KiB: {} chunks, mean {} KiB; unchanged {:.1} MB of {:.1} MB ({:.1} %)",
        min / 1024,
        avg / 1024,
        max / 1024,
        after.len(),
        new.len() / after.len().max(1) / 1024,
        kept as f64 / 1e6,
        new.len() as f64 / 1e6,
        kept as f64 * 100.0 / new.len() as f64
    );
}
