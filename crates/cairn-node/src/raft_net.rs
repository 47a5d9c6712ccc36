//! Raft between storage nodes over tonic.
//!
//! Each RPC carries openraft's own request type serialized as JSON plus the id of the node it
//! is meant for; the receiving node refuses a request addressed to another id (a peer whose
//! address now belongs to a different node must not vote or append there). The reply carries
//! openraft's `Result` serialized the same way, so raft-level errors travel intact; transport
//! failures become `Unreachable` (openraft backs off) or `Network` errors.

use std::sync::Arc;
use std::time::Duration;

use cairn_core::ErrorCode;
use cairn_meta::{MetaNode, TypeConfig};
use cairn_proto::pb::raft_client::RaftClient;
use cairn_proto::pb::raft_server::Raft as RaftRpc;
use cairn_proto::pb::{RaftReply, RaftRequest};
use cairn_proto::{status, MAX_MESSAGE};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::auth::ClientAuth;

/// Creates gRPC raft clients for peers.
#[derive(Clone)]
pub struct GrpcNetwork {
    pub auth: ClientAuth,
}

/// A raft client of one peer.
pub struct GrpcPeer {
    target: u64,
    addr: String,
    auth: ClientAuth,
    client: Option<RaftClient<Channel>>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct NetErr(String);

impl RaftNetworkFactory<TypeConfig> for GrpcNetwork {
    type Network = GrpcPeer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> GrpcPeer {
        GrpcPeer {
            target,
            addr: node.addr.clone(),
            auth: self.auth.clone(),
            client: None,
        }
    }
}

impl GrpcPeer {
    fn client(&mut self) -> Result<RaftClient<Channel>, NetErr> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let ep = Endpoint::from_shared(self.addr.clone())
            .map_err(|e| NetErr(format!("bad peer address {}: {e}", self.addr)))?
            .connect_timeout(Duration::from_secs(2))
            // A connection that died under a partition is noticed and dialled anew.
            .http2_keep_alive_interval(crate::peers::KEEPALIVE_EVERY)
            .keep_alive_timeout(crate::peers::KEEPALIVE_WAIT)
            .tcp_nodelay(true);
        let ep = self.auth.configure(ep).map_err(NetErr)?;
        let c = RaftClient::new(ep.connect_lazy())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        self.client = Some(c.clone());
        Ok(c)
    }

    async fn call<Req, Resp, E>(
        &mut self,
        kind: &'static str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, BasicNode, RaftError<u64, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload = serde_json::to_vec(req)
            .map_err(|e| RPCError::Network(NetworkError::new(&NetErr(e.to_string()))))?;
        let mut client = self
            .client()
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let mut request = Request::new(RaftRequest {
            target: self.target,
            payload,
        });
        request.set_timeout(option.hard_ttl());
        self.auth.attach(&mut request);
        let fut = match kind {
            "append" => client.append_entries(request).await,
            "vote" => client.vote(request).await,
            _ => client.install_snapshot(request).await,
        };
        let reply = match fut {
            Ok(r) => r.into_inner(),
            Err(s) => {
                // A dropped connection is worth re-dialling next time.
                self.client = None;
                let e = NetErr(format!("{} ({}): {}", self.addr, s.code(), s.message()));
                return Err(match s.code() {
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                        RPCError::Unreachable(Unreachable::new(&e))
                    }
                    _ => RPCError::Network(NetworkError::new(&e)),
                });
            }
        };
        if !reply.error.is_empty() {
            return Err(RPCError::Network(NetworkError::new(&NetErr(reply.error))));
        }
        let result: Result<Resp, RaftError<u64, E>> = serde_json::from_slice(&reply.payload)
            .map_err(|e| RPCError::Network(NetworkError::new(&NetErr(e.to_string()))))?;
        result.map_err(|e| RPCError::RemoteError(openraft::error::RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for GrpcPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call("append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.call("snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call("vote", &rpc, &option).await
    }
}

/// The receiving side: hands requests to the local raft after checking they are for us.
pub struct RaftService {
    pub meta: Arc<MetaNode>,
    pub node_id: u64,
}

impl RaftService {
    fn check(&self, req: &RaftRequest) -> Result<(), Status> {
        if req.target != self.node_id {
            return Err(status(
                ErrorCode::InvalidArgument,
                format!(
                    "raft request for node {} reached node {}",
                    req.target, self.node_id
                ),
            ));
        }
        Ok(())
    }

    fn reply<T: Serialize>(r: &T) -> Result<Response<RaftReply>, Status> {
        let payload = serde_json::to_vec(r).map_err(|e| status(ErrorCode::Internal, e))?;
        Ok(Response::new(RaftReply {
            payload,
            error: String::new(),
        }))
    }

    fn parse<T: DeserializeOwned>(req: &RaftRequest) -> Result<T, Status> {
        serde_json::from_slice(&req.payload)
            .map_err(|e| status(ErrorCode::InvalidArgument, format!("bad raft payload: {e}")))
    }
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(
        &self,
        req: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let req = req.into_inner();
        self.check(&req)?;
        let rpc: AppendEntriesRequest<TypeConfig> = Self::parse(&req)?;
        Self::reply(&self.meta.raft().append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = req.into_inner();
        self.check(&req)?;
        let rpc: VoteRequest<u64> = Self::parse(&req)?;
        Self::reply(&self.meta.raft().vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let req = req.into_inner();
        self.check(&req)?;
        let rpc: InstallSnapshotRequest<TypeConfig> = Self::parse(&req)?;
        Self::reply(&self.meta.raft().install_snapshot(rpc).await)
    }
}
