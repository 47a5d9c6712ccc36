//! The Virtuozzo Agent XML API `backupm` adapter: NUL-framed XML packets over TCP (the real
//! agent's port 4433), parsed by local name; the same users and roles as the REST adapter.
//!
//! - [`frame`]: splitting the byte stream on NUL, with a size cap.
//! - [`packet`]: the element tree, parsed by local name, and the namespaced response writer.
//! - [`error`]: the adapter's error codes and the cluster-code table; [`answer`]: the
//!   answer packets' envelope and base64 (leaves both modules below use).
//! - [`server`]: connections, greeting, `system` calls (login, get_realm, cancel).
//! - [`backupm`]: the nine calls, mapped to cluster jobs and catalog calls.

pub mod answer;
pub mod backupm;
pub mod error;
pub mod frame;
#[cfg(test)]
mod fuzzkit;
pub mod packet;
pub mod server;

pub use server::{serve_xml, XmlConfig, XmlServer};
pub use {backupm::CALLS, server::SYSTEM_CALLS};
