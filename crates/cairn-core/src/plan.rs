//! Pure planners for the storage node's background work: which chunks a garbage collection
//! sweeps ([`gc`]), when repair may drop a local copy ([`repair`]), and whether a node may be
//! removed from the cluster ([`membership`]).
//!
//! Each takes what the node has gathered (its local chunk ids, the owners' answers, the
//! placement epoch and the raft membership) and returns the decision; the node
//! (`cairn-node`'s `gc.rs`, `repair.rs`, `membership.rs`) does the IO around it and executes
//! the plan. The rules here are the safety rules of those modules: keep them in one place,
//! tested rule by rule.

/// Garbage collection's sweep set.
pub mod gc {
    use std::collections::HashSet;

    use crate::ChunkId;

    /// The sweep's decision: of the chunks a node holds (`local`), those to remove — neither
    /// referenced by a committed backup nor touched after the node's mark (a running backup
    /// found it present, or uploaded it, after the collection began). Order is kept.
    pub fn doomed(
        local: Vec<ChunkId>,
        referenced: &HashSet<ChunkId>,
        touched_after_mark: impl Fn(&ChunkId) -> bool,
    ) -> Vec<ChunkId> {
        local
            .into_iter()
            .filter(|id| !referenced.contains(id) && !touched_after_mark(id))
            .collect()
    }
}

/// Repair's keep/drop decision.
pub mod repair {
    /// Whether node `me` may drop its copy of a chunk whose owners under the epoch in force
    /// are `owners`, after `confirmed` of the other owners answered that they hold it (or
    /// received it in this pass). Only a node that is not an owner drops a copy, and only when
    /// every owner confirmed: a pass never reduces the copies below what the placement asks
    /// for. A chunk with no owner at all (no active node) is kept.
    pub fn may_drop(me: u64, owners: &[u64], confirmed: usize) -> bool {
        !owners.is_empty() && !owners.contains(&me) && confirmed == owners.len()
    }
}

/// Membership's may-remove check.
pub mod membership {
    use crate::placement::Epoch;
    use crate::ErrorCode;

    /// What removing a node takes, when it may be removed at all.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Removal {
        /// The node is a raft member but not in the placement (it never held chunks under
        /// it): it only leaves raft.
        LeaveRaft,
        /// The node is in the placement: it is drained (marked `draining`, its chunks moved
        /// to their owners) before it leaves raft and the placement.
        Drain,
    }

    /// Decides whether node `id` may be removed, given the placement `epoch` and the raft
    /// `voters` and `learners`. Refused (with the code and the text to answer): a node
    /// neither in the placement nor in raft (`NotFound`); the last voter; a removal that
    /// would leave fewer active storage nodes than the replication factor; removing a voter
    /// when it would leave fewer than two voters (`InvalidArgument`).
    pub fn may_remove(
        epoch: &Epoch,
        voters: &[u64],
        learners: &[u64],
        id: u64,
    ) -> Result<Removal, (ErrorCode, String)> {
        if epoch.node(id).is_none() {
            if voters.contains(&id) || learners.contains(&id) {
                return Ok(Removal::LeaveRaft);
            }
            return Err((
                ErrorCode::NotFound,
                format!("node {id} is not in the cluster; cairn cluster status lists the nodes"),
            ));
        }
        if voters == [id] {
            return Err((
                ErrorCode::InvalidArgument,
                format!("node {id} is the last voter; a cluster cannot run without one"),
            ));
        }
        let remaining = epoch.active().filter(|n| n.id != id).count();
        if remaining < epoch.rf as usize {
            return Err((
                ErrorCode::InvalidArgument,
                format!(
                    "removing node {id} would leave {remaining} storage node(s) for replication factor {}; add a node first",
                    epoch.rf
                ),
            ));
        }
        if voters.contains(&id) && voters.len() <= 2 {
            return Err((
                ErrorCode::InvalidArgument,
                format!(
                    "removing voter {id} would leave {} voter(s); keep 3 or 5 so the cluster survives a failure",
                    voters.len() - 1
                ),
            ));
        }
        Ok(Removal::Drain)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::membership::{may_remove, Removal};
    use super::*;
    use crate::placement::{Epoch, PlacementNode};
    use crate::{ChunkId, ErrorCode};

    fn id(n: u8) -> ChunkId {
        ChunkId::of(&[n])
    }

    #[test]
    fn the_sweep_takes_only_what_is_neither_referenced_nor_touched_after_the_mark() {
        let referenced = HashSet::from([id(3), id(5)]);
        let touched = HashSet::from([id(2), id(5)]);
        let gone = gc::doomed(vec![id(1), id(2), id(3), id(4), id(5)], &referenced, |c| {
            touched.contains(c)
        });
        assert_eq!(
            gone,
            vec![id(1), id(4)],
            "order kept; referenced or touched spared"
        );
        // Nothing held: nothing swept; everything referenced: nothing swept.
        assert!(gc::doomed(Vec::new(), &referenced, |_| false).is_empty());
        assert!(gc::doomed(vec![id(3), id(5)], &referenced, |_| false).is_empty());
        // Nothing referenced and nothing touched: everything held goes.
        assert_eq!(
            gc::doomed(vec![id(7), id(8)], &HashSet::new(), |_| false),
            vec![id(7), id(8)]
        );
    }

    #[test]
    fn repair_drops_a_copy_only_off_its_owners_and_only_once_every_owner_holds_it() {
        // Not an owner, every owner confirmed: drop.
        assert!(repair::may_drop(1, &[2, 3], 2));
        // One owner did not confirm (down, or the copy failed): keep.
        assert!(!repair::may_drop(1, &[2, 3], 1));
        assert!(!repair::may_drop(1, &[2, 3], 0));
        // An owner keeps its copy whatever the others say.
        assert!(!repair::may_drop(2, &[2, 3], 1));
        assert!(!repair::may_drop(2, &[2], 0));
        // No owner at all (no active node): the only copy may be this one.
        assert!(!repair::may_drop(1, &[], 0));
    }

    fn node(id: u64) -> PlacementNode {
        PlacementNode {
            id,
            zone: String::new(),
            weight: 1,
            addr: format!("http://n{id}"),
            draining: false,
            down: false,
        }
    }

    fn epoch(ids: &[u64], rf: u32) -> Epoch {
        Epoch {
            number: 1,
            nodes: ids.iter().map(|i| node(*i)).collect(),
            rf,
            ..Epoch::default()
        }
    }

    #[test]
    fn a_node_is_removed_only_when_the_cluster_keeps_its_voters_and_its_copies() {
        let e = epoch(&[1, 2, 3, 4], 2);
        let voters = [1, 2, 3];
        // A storage node: drained first.
        assert_eq!(may_remove(&e, &voters, &[4], 4), Ok(Removal::Drain));
        assert_eq!(may_remove(&e, &voters, &[4], 3), Ok(Removal::Drain));
        // A learner that never entered the placement: it only leaves raft.
        assert_eq!(may_remove(&e, &voters, &[5], 5), Ok(Removal::LeaveRaft));
        assert_eq!(
            may_remove(&e, &[1, 2, 3, 5], &[], 5),
            Ok(Removal::LeaveRaft)
        );
        // Unknown everywhere.
        assert_eq!(
            may_remove(&e, &voters, &[], 9).map_err(|e| e.0),
            Err(ErrorCode::NotFound)
        );
        // The last voter.
        assert_eq!(
            may_remove(&epoch(&[1, 2], 1), &[1], &[2], 1).map_err(|e| e.0),
            Err(ErrorCode::InvalidArgument)
        );
        // Fewer active nodes than the replication factor would remain (a down or draining
        // node does not count).
        assert_eq!(
            may_remove(&epoch(&[1, 2], 2), &[1, 2, 3], &[], 2).map_err(|e| e.0),
            Err(ErrorCode::InvalidArgument)
        );
        let mut down = epoch(&[1, 2, 3], 2);
        down.nodes[2].down = true;
        assert_eq!(
            may_remove(&down, &[1, 2, 3, 4], &[], 1).map_err(|e| e.0),
            Err(ErrorCode::InvalidArgument)
        );
        assert_eq!(may_remove(&down, &[1, 2, 3, 4], &[], 3), Ok(Removal::Drain));
        // A voter whose removal would leave one voter.
        let r = may_remove(&epoch(&[1, 2, 3], 1), &[1, 2], &[3], 2);
        assert_eq!(r.as_ref().map_err(|e| e.0), Err(ErrorCode::InvalidArgument));
        assert!(r.unwrap_err().1.contains("would leave 1 voter"));
        // A non-voter in the same cluster may go.
        assert_eq!(
            may_remove(&epoch(&[1, 2, 3], 1), &[1, 2], &[3], 3),
            Ok(Removal::Drain)
        );
    }
}
