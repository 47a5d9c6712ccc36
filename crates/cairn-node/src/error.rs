//! Maps the lower crates' errors to gRPC statuses with stable codes.
//!
//! Internal details (file paths, sled messages) go to the node's log; the client gets the
//! code and a message it can act on.

use cairn_core::ErrorCode;
use cairn_meta::MetaError;
use cairn_proto::status;
use cairn_store::StoreError;
use tonic::Status;

pub fn store_status(e: StoreError) -> Status {
    match &e {
        StoreError::NotFound(id) => status(ErrorCode::NotFound, format!("chunk {id} not found")),
        StoreError::Corrupt { .. } => status(ErrorCode::Corrupt, e.to_string()),
        StoreError::DiskFull { .. } => status(
            ErrorCode::DiskFull,
            "the storage node is out of disk space; existing backups are intact",
        ),
        _ if e.code() != ErrorCode::Internal => status(e.code(), e.to_string()),
        _ => {
            tracing::error!(error = %e, "chunk store failed");
            status(
                ErrorCode::Internal,
                "the chunk store failed; see the node's log",
            )
        }
    }
}

pub fn meta_status(e: MetaError) -> Status {
    match &e {
        MetaError::NotLeader { .. } | MetaError::Unavailable(_) => {
            status(ErrorCode::Unavailable, e.to_string())
        }
        _ => {
            tracing::error!(error = %e, "catalog failed");
            status(
                ErrorCode::Internal,
                "the catalog failed; see the node's log",
            )
        }
    }
}

pub fn join_status(e: tokio::task::JoinError) -> Status {
    tracing::error!(error = %e, "blocking task failed");
    status(
        ErrorCode::Internal,
        "internal task failed; see the node's log",
    )
}
