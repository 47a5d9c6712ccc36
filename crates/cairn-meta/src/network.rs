//! The network of a group with no peers.
//!
//! A single voter commits on its own and never sends an RPC; [`NoPeers`] exists so that such a
//! node (`cairn dev`, tests, a one-node cluster) can run without the gRPC transport. Should a
//! peer appear in the membership anyway, every RPC to it fails as `Unreachable`, which openraft
//! retries with backoff rather than treating as fatal.

use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;

use crate::TypeConfig;

/// A [`RaftNetworkFactory`] whose clients reach nobody.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoPeers;

/// The client [`NoPeers`] hands out for one target node.
#[derive(Clone, Copy, Debug)]
pub struct NoPeerClient {
    target: u64,
}

/// The reason every [`NoPeerClient`] RPC fails.
#[derive(Debug, thiserror::Error)]
#[error("node {target} is unreachable: this metadata node runs without a peer network")]
pub struct NoPeerNetwork {
    target: u64,
}

impl NoPeerClient {
    fn unreachable<E: std::error::Error>(&self) -> RPCError<u64, BasicNode, E> {
        RPCError::Unreachable(Unreachable::new(&NoPeerNetwork {
            target: self.target,
        }))
    }
}

impl RaftNetworkFactory<TypeConfig> for NoPeers {
    type Network = NoPeerClient;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> NoPeerClient {
        NoPeerClient { target }
    }
}

impl RaftNetwork<TypeConfig> for NoPeerClient {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(self.unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        Err(self.unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(self.unreachable())
    }
}
