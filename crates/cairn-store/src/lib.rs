//! The node-local chunk store: append-only pack segments plus a sled index.
