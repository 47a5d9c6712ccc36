//! The storage node: gRPC services over the chunk store and the raft catalog.
//!
//! A node owns two things on disk under its data directory: `chunks/` (the pack store,
//! `cairn-store`) and `meta/` (the raft log and catalog state machine, `cairn-meta`). The
//! services here translate wire requests into calls on those and errors into statuses with
//! stable codes; the decisions live in the crates below.

// tonic's service traits return `Result<_, Status>` everywhere; boxing it in our helpers would
// only add conversions at every call site.
#![allow(clippy::result_large_err)]

pub mod agents;
pub mod auth;
pub mod catalog;
pub mod chunks;
pub mod clock;
pub mod config;
pub mod error;
pub mod gc;
pub mod last_runs;
pub mod membership;
pub mod metrics;
pub mod peers;
pub mod raft_net;
pub mod repair;
pub mod scrub;
pub mod server;
pub mod touch;
pub mod verify;

pub use config::{NodeConfig, Voter, WriteQuorum};
pub use server::{start, RunningNode};
