//! Test helpers shared by the workspace's tests (compiled only for tests, or with the
//! `testing` feature that dev-dependencies enable; never part of a release build).

/// Returns `n` pseudo-random, incompressible bytes (xorshift); the same `seed` gives the same
/// bytes and different seeds different ones (the seed is mapped to an odd state injectively,
/// so seeds 0 and 1, or 2 and 3, do not collide). Content-defined chunking cuts such data into
/// many distinct chunks.
///
/// The one noise generator of the workspace: unit tests, the file-system test kit and the
/// end-to-end harness all use it, so its bytes must not change (tests compare trees and
/// chunk counts built from it).
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2).wrapping_add(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::noise;

    #[test]
    fn same_seed_same_bytes_and_seeds_do_not_collide() {
        assert_eq!(noise(64, 5), noise(64, 5));
        assert_eq!(noise(10, 5), noise(64, 5)[..10]);
        assert_ne!(noise(64, 0), noise(64, 1));
        assert_ne!(noise(64, 2), noise(64, 3));
        assert!(noise(0, 9).is_empty());
    }

    #[test]
    fn bytes_are_stable() {
        // The first bytes for seed 0 (as the end-to-end harness produced them): a change here changes every test's data.
        assert_eq!(noise(8, 0), [0, 6, 47, 3, 176, 2, 8, 193]);
    }
}
