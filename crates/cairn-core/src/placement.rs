//! Chunk placement: which nodes own a chunk, computed, never stored.
//!
//! # Design
//! A placement **epoch** (committed through raft) lists the storage nodes with their zone and
//! capacity weight, and the replication factor. A chunk's owners are the first RF nodes by
//! weighted rendezvous (highest-random-weight) hashing of (chunk id, node id), taking nodes in
//! distinct zones first and only then filling from zones already used. Consequences:
//! * every node computes the same owners from the same epoch, with no per-chunk metadata;
//! * adding or removing a node moves only the chunks whose owner set contains it (about
//!   RF/N of them), so repair after an epoch change is proportional to the change;
//! * weights skew the share a node receives in proportion to its capacity.
//!
//! While a repair is running after an epoch change, readers consult a chunk's owners first
//! and then every other node of the epoch, so nothing is unreadable mid-move. A node being
//! removed stays in the epoch marked `draining` (owning nothing) until repair has copied its
//! chunks to their owners; only then does the next epoch drop it.

use serde::{Deserialize, Serialize};

use crate::id::ChunkId;

/// A storage node as placement sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementNode {
    pub id: u64,
    pub zone: String,
    /// Relative capacity weight (≥ 1).
    pub weight: u32,
    /// The node's gRPC URL (`http://host:port`), as peers and clients reach it. Not part of
    /// the hash: a node keeps its chunks when its address changes.
    #[serde(default)]
    pub addr: String,
    /// A node being removed: it owns nothing under this epoch, but keeps serving its copies
    /// until repair has moved them to their owners.
    #[serde(default)]
    pub draining: bool,
    /// A node that has not answered for longer than the cluster's `down_after`: like a
    /// draining node it owns nothing, so repair restores every chunk's copies elsewhere; it
    /// owns its share again once it answers.
    #[serde(default)]
    pub down: bool,
}

/// One placement epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Epoch {
    pub number: u64,
    pub nodes: Vec<PlacementNode>,
    /// Replication factor requested; effective RF is capped by the node count.
    pub rf: u32,
}

/// The replication factor when none is configured.
pub const DEFAULT_RF: u32 = 3;

impl Epoch {
    /// Returns the node with this id, if it is in the epoch.
    pub fn node(&self, id: u64) -> Option<&PlacementNode> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// Tells whether `other` places chunks exactly as this epoch does (same nodes, zones,
    /// weights and replication factor; addresses and numbers aside).
    pub fn same_layout(&self, other: &Epoch) -> bool {
        let key = |e: &Epoch| {
            let mut v: Vec<(u64, String, u32, bool, bool)> = e
                .nodes
                .iter()
                .map(|n| (n.id, n.zone.clone(), n.weight, n.draining, n.down))
                .collect();
            v.sort();
            (v, e.rf)
        };
        key(self) == key(other)
    }

    /// The replication factor in force: `rf` capped by the number of nodes.
    pub fn effective_rf(&self) -> usize {
        (self.rf.max(1) as usize).min(self.active().count())
    }

    /// The nodes that own chunks (all but the draining and the down ones).
    pub fn active(&self) -> impl Iterator<Item = &PlacementNode> {
        self.nodes.iter().filter(|n| !n.draining && !n.down)
    }

    /// The owners of `chunk`, primary first.
    pub fn owners(&self, chunk: &ChunkId) -> Vec<u64> {
        let rf = self.effective_rf();
        if rf == 0 {
            return Vec::new();
        }
        let mut scored: Vec<(f64, &PlacementNode)> =
            self.active().map(|n| (score(chunk, n), n)).collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.id.cmp(&b.1.id)));
        let mut out: Vec<u64> = Vec::with_capacity(rf);
        let mut zones: Vec<&str> = Vec::with_capacity(rf);
        for (_, n) in &scored {
            if out.len() == rf {
                break;
            }
            if !zones.contains(&n.zone.as_str()) {
                zones.push(&n.zone);
                out.push(n.id);
            }
        }
        for (_, n) in &scored {
            if out.len() == rf {
                break;
            }
            if !out.contains(&n.id) {
                out.push(n.id);
            }
        }
        out
    }
}

/// Weighted rendezvous score: `-w / ln(u)` with `u` uniform in (0, 1) from a hash.
fn score(chunk: &ChunkId, node: &PlacementNode) -> f64 {
    let mut h = blake3::Hasher::new();
    h.update(chunk.as_bytes());
    h.update(&node.id.to_le_bytes());
    let d = h.finalize();
    let x = u64::from_le_bytes(d.as_bytes()[..8].try_into().expect("8 bytes"));
    // 53 random bits → (0, 1), never exactly 0 or 1.
    let u = ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -(node.weight.max(1) as f64) / u.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(n: u64, zones: &[&str], rf: u32) -> Epoch {
        Epoch {
            number: 1,
            nodes: (1..=n)
                .map(|id| PlacementNode {
                    id,
                    zone: zones[(id as usize - 1) % zones.len()].to_string(),
                    weight: 1,
                    addr: String::new(),
                    draining: false,
                    down: false,
                })
                .collect(),
            rf,
        }
    }

    fn ids(n: usize) -> Vec<ChunkId> {
        (0..n)
            .map(|i| ChunkId::of(&(i as u64).to_le_bytes()))
            .collect()
    }

    #[test]
    fn owners_are_distinct_and_capped() {
        let e = epoch(2, &["a"], 3);
        for c in ids(100) {
            let o = e.owners(&c);
            assert_eq!(o.len(), 2);
            assert_ne!(o[0], o[1]);
        }
        assert!(Epoch::default().owners(&ChunkId::of(b"x")).is_empty());
    }

    #[test]
    fn distinct_zones_come_first() {
        let e = epoch(6, &["a", "b", "c"], 3);
        for c in ids(500) {
            let o = e.owners(&c);
            let mut z: Vec<&str> = o
                .iter()
                .map(|id| e.nodes[*id as usize - 1].zone.as_str())
                .collect();
            z.sort();
            z.dedup();
            assert_eq!(z.len(), 3, "{o:?}");
        }
    }

    #[test]
    fn a_fourth_node_takes_about_a_quarter_and_balance_holds() {
        let three = epoch(3, &["z"], 1);
        let four = epoch(4, &["z"], 1);
        let chunks = ids(40_000);
        let mut moved = 0;
        let mut per = [0usize; 4];
        for c in &chunks {
            let a = three.owners(c)[0];
            let b = four.owners(c)[0];
            if a != b {
                moved += 1;
                assert_eq!(b, 4, "a chunk moved between old nodes");
            }
            per[b as usize - 1] += 1;
        }
        let share = moved as f64 / chunks.len() as f64;
        assert!((0.22..0.28).contains(&share), "moved {share}");
        let even = chunks.len() as f64 / 4.0;
        for p in per {
            assert!((p as f64 - even).abs() / even < 0.10, "{per:?}");
        }
    }

    #[test]
    fn weights_skew_shares() {
        let mut e = epoch(2, &["z"], 1);
        e.nodes[1].weight = 3;
        let heavy = ids(20_000).iter().filter(|c| e.owners(c)[0] == 2).count();
        let share = heavy as f64 / 20_000.0;
        assert!((0.70..0.80).contains(&share), "{share}");
    }

    #[test]
    fn draining_nodes_own_nothing_and_others_keep_their_chunks() {
        let mut e = epoch(4, &["a", "b", "c", "d"], 3);
        let before: Vec<Vec<u64>> = ids(2000).iter().map(|c| e.owners(c)).collect();
        e.nodes[3].draining = true;
        assert_eq!(e.effective_rf(), 3);
        let mut kept = 0;
        for (c, old) in ids(2000).iter().zip(&before) {
            let new = e.owners(c);
            assert!(!new.contains(&4));
            assert_eq!(new.len(), 3);
            // Only chunks node 4 owned get a new owner; the others keep theirs.
            if !old.contains(&4) {
                assert_eq!(&new, old);
                kept += 1;
            }
        }
        assert!(kept > 300, "{kept}");
    }
}
