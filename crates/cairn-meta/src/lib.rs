//! The raft-replicated catalog: openraft over sled.
//!
//! This crate hides openraft (0.9, storage-v2) and sled behind one facade, [`MetaNode`], so
//! that a move to another openraft line or another embedded store touches this crate only.
//!
//! - [`command`]: the commands the group agrees on ([`Command`]) and their answers
//!   ([`Response`]). Application-level refusals are answers, never errors.
//! - [`catalog`]: the pure, deterministic decisions: what a command changes and what it answers,
//!   given a read-only view of the catalog. No IO, no sled, no raft.
//! - [`authz`]: who may do what, decided from the catalog: every command's principal is
//!   checked inside `catalog::decide`, and reads are checked by the same code.
//! - [`store`]: the raft log, the vote and the state machine in one sled database, with the
//!   durability rules written at its top.
//! - [`network`]: [`NoPeers`], the network of a single-voter group. The real transport lives in
//!   the node crate and implements [`openraft::RaftNetworkFactory`] for [`TypeConfig`].
//! - [`node`]: [`MetaNode`], what the node service uses: open, initialise, write, read.

use std::io::Cursor;

pub mod agents;
pub mod authz;
pub mod backups;
pub mod catalog;
pub mod command;
pub mod error;
pub mod join;
pub mod network;
pub mod node;
pub mod store;
pub mod view;

#[cfg(test)]
mod differential;

pub use command::{Command, JobRequest, Proposal, Response};
pub use error::MetaError;
pub use network::NoPeers;
pub use node::{MetaConfig, MetaNode};
pub use openraft::BasicNode;
pub use store::{LogStore, StateMachineStore};

/// Node ids of the metadata group.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The openraft type configuration of the metadata group.
    pub TypeConfig:
        D = Proposal,
        R = Response,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The raft handle of the metadata group.
pub type MetaRaft = openraft::Raft<TypeConfig>;
/// One entry of the metadata raft log.
pub type LogEntry = openraft::Entry<TypeConfig>;
/// Raft metrics of a metadata node (term, leader, commit and apply indexes, membership).
pub type MetaMetrics = openraft::RaftMetrics<u64, openraft::BasicNode>;
/// Storage errors as openraft wants them.
pub type StorageError = openraft::StorageError<u64>;
