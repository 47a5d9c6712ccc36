//! The typed cluster API: the one way callers — the agent, the gateway's adapters, the
//! command line — talk to a Cairn cluster.
//!
//! - [`Client`]: a connection to one cluster, with retries and failover across its nodes
//!   (see [`client`]), made from addresses and [`Credentials`] the caller passes in; the
//!   library reads no environment variables.
//! - Requests are method arguments over `cairn-core` types ([`JobRequest`] with a
//!   [`JobKind`](cairn_core::job::JobKind), never a string kind); answers are the types of
//!   [`types`] and `cairn-core`.
//! - [`Error`] is the one error: a node's answer carries its stable
//!   [`ErrorCode`](cairn_core::ErrorCode) (fine-grained: `BackupNotFound`, `DuplicateName`,
//!   `HostOffline`, …) from the gRPC metadata, and callers decide on that code through their
//!   own tables, never on message text.
//!
//! Only this crate and the node's service shims touch protobuf types: `src/layout.rs` at the
//! workspace root fails when another crate depends on `cairn-proto`.

pub mod agents;
pub mod browse;
pub mod client;
pub mod enroll;
pub mod error;
pub mod manifest;
pub mod types;

pub use agents::{JobView, Outcome};
pub use client::{Client, Credentials, CATALOG_RETRY_FOR, DEFAULT_CLUSTER};
pub use error::Error;
pub use types::{
    AgentToken, BackupPage, Env, GcReport, Host, JobFilter, JobRequest, JoinToken, JoinTokenInfo,
    Membership, NodeStatus, PutReport, RepairReport, ScrubReport, UserToken,
};

/// Pause points for crash and race tests (see the module): a client process stops at a named
/// point while a test acts.
pub use cairn_proto::failpoint;
