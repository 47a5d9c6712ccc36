//! The OpenAPI 3 document of the REST adapter: checked in at
//! `crates/cairn-gateway/openapi.json`, served at `/openapi.json`, and kept in sync with the
//! router ([`super::ROUTES`]) and the representations ([`super::model`]) by the tests below.

/// The document, as served.
pub const DOCUMENT: &str = include_str!("../../openapi.json");
