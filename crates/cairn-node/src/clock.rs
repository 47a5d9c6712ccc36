//! The node's wall clock, in one place: what it stamps (sessions, jobs, leases) and nothing
//! it compares across nodes (see `gc.rs`: GC compares touch marks, never times).

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
