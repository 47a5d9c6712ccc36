//! The nemesis: a Jepsen-style run of a real cluster under faults, judged afterwards from
//! the history of what the clients were told (`src/bin/nemesis.rs`, `scripts/nemesis.sh`).
//!
//! # Model
//! 1. A [`crate::TestCluster`] of N voters (RF 3) runs on this machine, as root each node in
//!    a network namespace of its own ([`net`]), and a `cairn agent` serves some environments.
//!    Client workers ([`workload`]) call the real `cairn` CLI against a node chosen by their
//!    seeded RNG: one worker per environment changes its tree, backs it up (full or
//!    incremental; directly, or as a job its agent runs), restores and deletes its own
//!    backups; an admin worker runs GC, scrub, repair, listings and retention changes.
//!    Meanwhile [`faults`] injects one fault episode at a time.
//! 2. Every operation is written to `history.jsonl` ([`history`]) when it is invoked and when
//!    it completes, with its outcome:
//!    - `ok`: the CLI exited 0 (for a backup: the id and the content hash of the tree it
//!      was taken from, recorded before the call);
//!    - `fail`: the CLI exited non-zero with a node's definite refusal (a stable code other
//!      than Unavailable/Internal, see [`cli`]): the operation did not happen;
//!    - `unknown`: anything else (a timeout, a transport error, a signal, no code): the
//!      operation may or may not have happened.
//! 3. At the end every fault is healed (continue, remove ballast, restart without skew) and
//!    [`check`] judges the history against the cluster's final state: an acknowledged backup
//!    must be listed and restore bit-identical to its tree unless a delete of it (ok or
//!    unknown) or retention could have removed it; an acknowledged delete must not come
//!    back; a listed backup nobody acknowledged needs an unknown backup of its environment
//!    whose tree it restores to; repair must converge (every chunk held anywhere is on all
//!    its owners) and scrub must leave nothing unrepaired; every voter must hold the same
//!    catalog (the same digest of its catalog at the same applied index) and every node must
//!    list the same backups.
//!
//! Choices are deterministic by seed (one RNG stream per worker and one for the nemesis);
//! the interleaving is whatever the machine's scheduling makes of them.

pub mod check;
pub mod cli;
pub mod faults;
pub mod history;
pub mod net;
pub mod tree;
pub mod workload;

/// The cluster secret every node of the run requires (a node listening on an address other
/// than loopback refuses to start without one); clients send it as `CAIRN_TOKEN`.
pub const SECRET: &str = "nemesis-cluster-secret";

/// A small, seedable PRNG (SplitMix64): the same seed gives the same choices.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// An independent stream for `tag` (a worker's name), derived from this one's seed.
    pub fn fork(&self, tag: &str) -> Rng {
        let mut h = self.0 ^ 0x9e37_79b9_7f4a_7c15;
        for b in tag.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        let mut r = Rng(h);
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}
