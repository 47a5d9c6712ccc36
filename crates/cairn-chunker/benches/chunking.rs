//! Chunk + hash + compress throughput, per compression level, and FastCDC/BLAKE3 alone.
//!
//! Input: a corpus that looks like a root file system — if `CAIRN_BENCH_CORPUS` names a
//! directory (e.g. a debootstrap tree), up to 64 MiB of its files; otherwise a synthetic mix
//! of text-like and incompressible data. Run: `cargo bench -p cairn-chunker`.

use std::hint::black_box;

use cairn_chunker::{cdc, encode, ChunkerParams};
use cairn_core::{ChunkId, Compression};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn corpus() -> Vec<u8> {
    const LIMIT: usize = 64 << 20;
    if let Ok(dir) = std::env::var("CAIRN_BENCH_CORPUS") {
        let mut out = Vec::new();
        let mut stack = vec![std::path::PathBuf::from(dir)];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let Ok(ft) = e.file_type() else { continue };
                if ft.is_dir() {
                    stack.push(e.path());
                } else if ft.is_file() {
                    if let Ok(b) = std::fs::read(e.path()) {
                        out.extend_from_slice(&b);
                    }
                }
                if out.len() >= LIMIT {
                    return out;
                }
            }
        }
        if !out.is_empty() {
            return out;
        }
    }
    // Synthetic: 3/4 text-like (repetitive words), 1/4 noise.
    let words = [
        "config", "usr", "lib", "share", "locale", "the", "of", "binary", "\n", "=", "0x7f",
    ];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = Vec::with_capacity(32 << 20);
    while out.len() < 32 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if x.is_multiple_of(4) {
            out.extend_from_slice(&x.to_le_bytes());
        } else {
            out.extend_from_slice(words[(x % words.len() as u64) as usize].as_bytes());
            out.push(b' ');
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let data = corpus();
    let p = ChunkerParams::default();
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("fastcdc", |b| {
        b.iter(|| black_box(cdc::cut_lengths(&data, p)))
    });
    g.bench_function("fastcdc+blake3", |b| {
        b.iter(|| {
            let mut off = 0;
            for len in cdc::cut_lengths(&data, p) {
                black_box(ChunkId::of(&data[off..off + len]));
                off += len;
            }
        })
    });
    for level in 0..4 {
        let comp = Compression::from_level(level).expect("0..4 are levels");
        g.bench_with_input(
            BenchmarkId::new("fastcdc+blake3+zstd", level),
            &comp,
            |b, &comp| {
                b.iter(|| {
                    let mut off = 0;
                    let mut stored = 0usize;
                    for len in cdc::cut_lengths(&data, p) {
                        stored += encode(&data[off..off + len], comp).data.len();
                        off += len;
                    }
                    black_box(stored)
                })
            },
        );
    }
    g.finish();

    // Incompressible chunks (random bytes, as in a compressed or encrypted file): the entropy
    // probe alone against the full zstd pass it replaces.
    let random = cairn_core::testing::noise(1 << 20, 17);
    let mut g = c.benchmark_group("incompressible_1MiB");
    g.throughput(Throughput::Bytes(random.len() as u64));
    g.sample_size(20);
    g.bench_function("probe", |b| {
        b.iter(|| black_box(cairn_chunker::codec::looks_incompressible(&random)))
    });
    g.bench_function("zstd3", |b| {
        b.iter(|| black_box(zstd::bulk::compress(&random, 3).map(|z| z.len())))
    });
    g.bench_function("encode_normal", |b| {
        b.iter(|| black_box(encode(&random, Compression::Normal).data.len()))
    });
    g.finish();
    // Print the ratio each level achieves once, beside the timings.
    for level in 0..4 {
        let comp = Compression::from_level(level).expect("level");
        let mut off = 0;
        let mut stored = 0usize;
        for len in cdc::cut_lengths(&data, p) {
            stored += encode(&data[off..off + len], comp).data.len();
            off += len;
        }
        println!(
            "level {level}: {} -> {} bytes ({:.1}%)",
            data.len(),
            stored,
            stored as f64 * 100.0 / data.len() as f64
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
