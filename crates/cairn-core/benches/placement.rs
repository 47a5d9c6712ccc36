//! The cost of computing a chunk's owners (`Epoch::owners`), which repair, GC, scrub and
//! every client upload pay per chunk, at 10, 100 and 1000 nodes in 5 zones of mixed weights,
//! with each score hash.
//! Run: `cargo bench -p cairn-core --bench placement`.

use std::hint::black_box;

use cairn_core::placement::{Epoch, PlacementHash, PlacementNode, ZoneRedundancy};
use cairn_core::ChunkId;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

fn epoch(n: u64, zr: ZoneRedundancy, hash: PlacementHash) -> Epoch {
    Epoch {
        number: 1,
        nodes: (1..=n)
            .map(|id| PlacementNode {
                id,
                zone: format!("z{}", id % 5),
                weight: 1 + (id % 3) as u32,
                addr: String::new(),
                draining: false,
                down: false,
            })
            .collect(),
        rf: 3,
        zone_redundancy: zr,
        hash,
    }
}

fn owners(c: &mut Criterion) {
    let ids: Vec<ChunkId> = (0..1024u64)
        .map(|i| ChunkId::of(&i.to_le_bytes()))
        .collect();
    let mut g = c.benchmark_group("owners");
    for n in [10u64, 100, 1000] {
        for (name, zr, hash) in [
            (
                "blake3_maximum",
                ZoneRedundancy::Maximum,
                PlacementHash::Blake3,
            ),
            (
                "mix64_maximum",
                ZoneRedundancy::Maximum,
                PlacementHash::Mix64,
            ),
            (
                "mix64_at_least_2",
                ZoneRedundancy::AtLeast(2),
                PlacementHash::Mix64,
            ),
        ] {
            let e = epoch(n, zr, hash);
            let mut i = 0;
            g.bench_with_input(BenchmarkId::new(name, n), &e, |b, e| {
                b.iter(|| {
                    i = (i + 1) % ids.len();
                    black_box(e.owners(&ids[i]))
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, owners);
criterion_main!(benches);
