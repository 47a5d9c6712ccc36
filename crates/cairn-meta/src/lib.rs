//! The raft-replicated catalog: openraft over sled.
