//! The storage node: gRPC services over the chunk store and the raft catalog.
