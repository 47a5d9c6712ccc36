//! Adding and removing storage nodes (run on the raft leader).
//!
//! # Placement epochs during a change
//! - **Add**: the node must already run (its config lists the cluster's voters but not
//!   itself). It joins raft as a learner (non-voting; it receives the catalog), then one
//!   epoch includes it. Reads during the move fall back from a chunk's new owners to every
//!   other node, and commits count a chunk as present when any node holds it, so nothing is
//!   unreadable or uncommittable while repair moves the new node's share to it.
//! - **Remove**: one epoch marks the node `draining` (it owns nothing but stays readable), the
//!   node's own repair pass copies every chunk it holds to the chunk's owners and drops it,
//!   and only when it holds nothing does it leave raft and the next epoch. A node that does
//!   not answer cannot be drained, and the removal stops there, changing nothing further.
//!
//! Refused, with nothing changed (the removal rules are
//! `cairn_core::plan::membership::may_remove`): an unknown node id, removing the last voter, a removal
//! that would leave fewer storage nodes than the replication factor, adding an address that
//! does not answer, a node id already in the cluster, a node that already belongs to a cluster.

use std::time::Duration;

use cairn_core::placement::{Epoch, PlacementNode};
use cairn_core::plan::membership::Removal;
use cairn_core::ErrorCode;
use cairn_meta::{Command, MetaNode, Response as MetaResponse};
use cairn_proto::{pb, status};
use tonic::Status;

use crate::auth::Principal;
use crate::error::meta_status;
use crate::peers::Peers;
use crate::repair::Repairer;

/// Repair passes a draining node may take before the removal gives up.
const DRAIN_PASSES: usize = 50;

/// Proposes a placement for `by` (an admin's add or remove, or the cluster's own health
/// watcher).
async fn set_placement(
    meta: &MetaNode,
    by: &Principal,
    nodes: Vec<PlacementNode>,
    rf: u32,
    expect_epoch: u64,
) -> Result<u64, Status> {
    set_placement_with(meta, by, nodes, rf, None, expect_epoch).await
}

/// [`set_placement`], also setting the zone redundancy (`None` keeps the epoch's).
async fn set_placement_with(
    meta: &MetaNode,
    by: &Principal,
    nodes: Vec<PlacementNode>,
    rf: u32,
    zone_redundancy: Option<cairn_core::placement::ZoneRedundancy>,
    expect_epoch: u64,
) -> Result<u64, Status> {
    match meta
        .write(
            by,
            Command::SetPlacement {
                nodes,
                rf,
                zone_redundancy,
                expect_epoch: Some(expect_epoch),
            },
        )
        .await
        .map_err(meta_status)?
    {
        MetaResponse::Placement { epoch } => Ok(epoch),
        MetaResponse::Refused {
            code,
            message,
            rule,
        } => Err(cairn_proto::refusal(code, rule, message)),
        other => Err(status(
            ErrorCode::Internal,
            format!("unexpected catalog answer {other:?}"),
        )),
    }
}

fn current(meta: &MetaNode) -> Result<Epoch, Status> {
    meta.placement().map_err(meta_status)?.ok_or_else(|| {
        status(
            ErrorCode::Unavailable,
            "the cluster has no placement yet; retry shortly",
        )
    })
}

/// Sets the zone redundancy: a new epoch when it changes, then repair moves the chunks whose
/// owners changed.
pub async fn set_zone_redundancy(
    meta: &MetaNode,
    peers: &Peers,
    by: &Principal,
    req: pb::SetZoneRedundancyRequest,
) -> Result<pb::MembershipResponse, Status> {
    let epoch = current(meta)?;
    let wanted = match req.zone_redundancy {
        0 => cairn_core::placement::ZoneRedundancy::Maximum,
        n => cairn_core::placement::ZoneRedundancy::AtLeast(n),
    };
    let number = set_placement_with(
        meta,
        by,
        epoch.nodes.clone(),
        epoch.rf,
        Some(wanted),
        epoch.number,
    )
    .await?;
    if number != epoch.number {
        tracing::info!(zone_redundancy = %wanted, epoch = number, "zone redundancy changed");
        kick_repair(peers, meta);
    }
    Ok(pb::MembershipResponse {
        node_id: 0,
        epoch: number,
        moved: 0,
    })
}

/// Adds the node at `addr` and returns its id and the new epoch.
pub async fn add_node(
    meta: &MetaNode,
    peers: &Peers,
    by: &Principal,
    req: pb::AddNodeRequest,
) -> Result<pb::MembershipResponse, Status> {
    let addr = peers.url_of(req.addr.trim());
    let st = {
        let mut c = peers.catalog(&addr)?;
        let call = c.node_status(pb::NodeStatusRequest {});
        match tokio::time::timeout(Duration::from_secs(5), call).await {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(e)) => {
                return Err(status(
                    ErrorCode::InvalidArgument,
                    format!(
                        "the node at {addr} does not answer ({}); start it first",
                        e.message()
                    ),
                ))
            }
            Err(_) => {
                return Err(status(
                    ErrorCode::InvalidArgument,
                    format!("the node at {addr} does not answer within 5s; start it first"),
                ))
            }
        }
    };
    let epoch = current(meta)?;
    let (voters, learners) = meta.members();
    if let Some(n) = epoch.node(st.node_id) {
        return Err(status(
            ErrorCode::Conflict,
            format!(
                "node id {} is already in the cluster (at {}); every node needs its own id",
                st.node_id, n.addr
            ),
        ));
    }
    if voters.contains(&st.node_id) || learners.contains(&st.node_id) {
        return Err(status(
            ErrorCode::Conflict,
            format!(
                "node id {} is already a member of the cluster; every node needs its own id",
                st.node_id
            ),
        ));
    }
    if st.term > 0 {
        return Err(status(
            ErrorCode::Conflict,
            format!(
                "the node at {addr} (id {}) already belongs to a cluster (raft term {}); give it an empty data directory",
                st.node_id, st.term
            ),
        ));
    }
    meta.add_learner(st.node_id, &addr)
        .await
        .map_err(meta_status)?;
    let mut nodes = epoch.nodes.clone();
    nodes.push(PlacementNode {
        id: st.node_id,
        zone: if req.zone.is_empty() {
            st.zone.clone()
        } else {
            req.zone.clone()
        },
        weight: req.weight.max(1),
        addr: addr.clone(),
        draining: false,
        down: false,
    });
    let number = set_placement(meta, by, nodes, epoch.rf, epoch.number).await?;
    tracing::info!(node_id = st.node_id, %addr, epoch = number, "node added");
    kick_repair(peers, meta);
    Ok(pb::MembershipResponse {
        node_id: st.node_id,
        epoch: number,
        moved: 0,
    })
}

/// Starts a repair pass on every node without waiting for it.
fn kick_repair(peers: &Peers, meta: &MetaNode) {
    let Ok(Some(epoch)) = meta.placement() else {
        return;
    };
    for n in epoch.nodes {
        let peers = peers.clone();
        tokio::spawn(async move {
            if let Ok(mut c) = peers.chunks(&n.addr) {
                let _ = c.repair(pb::RepairRequest {}).await;
            }
        });
    }
}

/// Drains and removes node `id`.
pub async fn remove_node(
    meta: &MetaNode,
    peers: &Peers,
    local: &Repairer,
    self_id: u64,
    by: &Principal,
    id: u64,
) -> Result<pb::MembershipResponse, Status> {
    let epoch = current(meta)?;
    let (voters, learners) = meta.members();
    // Whether it may go at all is the planner's rule; the IO around it is here.
    match cairn_core::plan::membership::may_remove(&epoch, &voters, &learners, id) {
        Err((code, message)) => return Err(status(code, message)),
        Ok(Removal::LeaveRaft) => {
            meta.remove_member(id).await.map_err(meta_status)?;
            return Ok(pb::MembershipResponse {
                node_id: id,
                epoch: epoch.number,
                moved: 0,
            });
        }
        Ok(Removal::Drain) => {}
    }
    let Some(node) = epoch.node(id).cloned() else {
        return Err(status(
            ErrorCode::Internal,
            format!("node {id} left the placement while it was being checked"),
        ));
    };

    // 1. Mark it draining: from this epoch on it owns nothing.
    let mut nodes = epoch.nodes.clone();
    if let Some(n) = nodes.iter_mut().find(|n| n.id == id) {
        n.draining = true;
    }
    let draining_epoch = set_placement(meta, by, nodes.clone(), epoch.rf, epoch.number).await?;
    tracing::info!(node_id = id, epoch = draining_epoch, "node draining");
    kick_repair(peers, meta);

    // 2. Its repair passes move everything it holds to the owners.
    let mut moved = 0;
    let mut done = false;
    for _ in 0..DRAIN_PASSES {
        let r = if id == self_id {
            local.pass().await?
        } else {
            peers
                .chunks(&node.addr)?
                .repair(pb::RepairRequest {})
                .await
                .map_err(|e| {
                    status(
                        ErrorCode::Unavailable,
                        format!(
                            "node {id} cannot be drained: it does not answer ({}); it stays marked draining — bring it back and run remove-node again",
                            e.message()
                        ),
                    )
                })?
                .into_inner()
        };
        moved += r.pushed;
        if r.epoch >= draining_epoch && r.chunks == 0 && r.backlog == 0 {
            done = true;
            break;
        }
        if r.pushed == 0 && r.dropped == 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    if !done {
        return Err(status(
            ErrorCode::Unavailable,
            format!("node {id} still holds chunks after {DRAIN_PASSES} repair passes; it stays draining — run remove-node again"),
        ));
    }

    // 3. It holds nothing: it leaves raft and the placement.
    meta.remove_member(id).await.map_err(meta_status)?;
    // Start from the epoch in force: the health watch may have changed it meanwhile.
    let now = current(meta)?;
    let nodes: Vec<PlacementNode> = now.nodes.iter().filter(|n| n.id != id).cloned().collect();
    let number = set_placement(meta, by, nodes, now.rf, now.number).await?;
    tracing::info!(node_id = id, epoch = number, moved, "node removed");
    Ok(pb::MembershipResponse {
        node_id: id,
        epoch: number,
        moved,
    })
}

/// Watches the other nodes from the leader: a node that has not answered for `down_after`
/// is marked `down` in a new epoch (it owns nothing, so repair gives its chunks other
/// owners and every chunk gets back to RF copies); once it answers again it owns its share
/// again. Changes are compare-and-set against the epoch they were computed from.
pub async fn watch_health(
    meta: std::sync::Arc<MetaNode>,
    peers: Peers,
    self_id: u64,
    down_after: Duration,
) {
    let tick = (down_after / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut last_seen: std::collections::HashMap<u64, tokio::time::Instant> = Default::default();
    let mut leading = false;
    loop {
        tokio::time::sleep(tick).await;
        if meta.metrics().current_leader != Some(self_id) {
            leading = false;
            continue;
        }
        if !leading {
            // A new leader gives every node a full timeout before judging it.
            last_seen.clear();
            leading = true;
        }
        let Ok(Some(epoch)) = meta.placement() else {
            continue;
        };
        let now = tokio::time::Instant::now();
        let mut nodes = epoch.nodes.clone();
        let mut changed = false;
        for n in nodes.iter_mut() {
            if n.id == self_id || n.draining {
                last_seen.insert(n.id, now);
                continue;
            }
            if answers(&peers, &n.addr).await {
                last_seen.insert(n.id, now);
                if n.down {
                    n.down = false;
                    changed = true;
                    tracing::info!(
                        node_id = n.id,
                        "node answers again; it owns its share again"
                    );
                }
            } else {
                let seen = *last_seen.entry(n.id).or_insert(now);
                if !n.down && now.duration_since(seen) >= down_after {
                    n.down = true;
                    changed = true;
                    tracing::warn!(
                        node_id = n.id,
                        down_for_ms = now.duration_since(seen).as_millis() as u64,
                        "node down past the timeout; its chunks get new owners"
                    );
                }
            }
        }
        if changed && nodes.iter().any(|n| !n.down && !n.draining) {
            match set_placement(&meta, &Principal::Cluster, nodes, epoch.rf, epoch.number).await {
                Ok(e) => {
                    tracing::info!(epoch = e, "placement updated for node health");
                    kick_repair(&peers, &meta);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "health placement change not made; next round")
                }
            }
        }
    }
}

async fn answers(peers: &Peers, addr: &str) -> bool {
    let Ok(mut c) = peers.catalog(addr) else {
        return false;
    };
    // The placement is a small local read on the node: a cheap proof of life (NodeStatus
    // counts the catalog).
    let call = c.get_placement(pb::PlacementRequest {});
    matches!(
        tokio::time::timeout(Duration::from_secs(2), call).await,
        Ok(Ok(_))
    )
}
