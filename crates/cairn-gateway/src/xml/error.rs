//! The XML adapter's errors: the codes of an `error` element, and the table that answers a
//! cluster's stable code with one of them. A leaf both the connection (`server`) and the
//! calls (`backupm`) use.

use super::packet::Element;

/// Stable error codes of the XML adapter (the `code` of an `error` element).
pub mod code {
    /// The packet is not well-formed XML, or not a `packet`.
    pub const MALFORMED: u32 = 300;
    /// No such interface (`target`).
    pub const UNKNOWN_INTERFACE: u32 = 301;
    /// No such call in the interface.
    pub const UNKNOWN_CALL: u32 = 302;
    /// A parameter is missing or invalid (bad base64, bad id, bad number).
    pub const BAD_PARAMETER: u32 = 303;
    /// Not logged in.
    pub const NOT_LOGGED_IN: u32 = 304;
    /// Wrong name or password, or an unknown realm.
    pub const LOGIN_FAILED: u32 = 305;
    /// The user's role may not do this.
    pub const FORBIDDEN: u32 = 306;
    /// The packet is larger than the cap.
    pub const TOO_LARGE: u32 = 307;
    /// No local backup configuration (`get_config` with `local`), as the real agent answers.
    pub const NO_LOCAL_CONFIG: u32 = 308;
    /// No such environment, backup or request.
    pub const NOT_FOUND: u32 = 309;
    /// Conflicts with current state (an operation already running on the environment).
    pub const CONFLICT: u32 = 310;
    /// The storage cluster cannot answer now.
    pub const UNAVAILABLE: u32 = 311;
    /// The operation ran and failed (the message says why).
    pub const FAILED: u32 = 312;
    /// The operation was cancelled.
    pub const CANCELLED: u32 = 313;
    /// Too many requests in flight on this connection; wait for answers before sending more.
    pub const BUSY: u32 = 314;
    /// Too many logins are being checked across the gateway; log in again after a second.
    /// Nothing was checked: the name and password may well be right.
    pub const LOGIN_BUSY: u32 = 315;
    /// Anything else; details are in the gateway's log.
    pub const INTERNAL: u32 = 399;
}

/// A call's failure: a code of [`code`] and a plain-text message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XmlError {
    pub code: u32,
    pub message: String,
}

impl XmlError {
    pub fn new(code: u32, message: impl Into<String>) -> XmlError {
        XmlError {
            code,
            message: message.into(),
        }
    }

    pub fn element(&self) -> Element {
        Element::new("error")
            .with_child(Element::new("code").with_text(self.code.to_string()))
            .with_child(Element::new("message").with_text(self.message.clone()))
    }
}

/// The XML table: the error code a cluster's stable code is answered with. Every code has
/// its row (no wildcard), so a new code is a decision here, not a fall-through.
pub fn cluster_code(c: cairn_core::ErrorCode) -> u32 {
    use cairn_core::ErrorCode;
    match c {
        ErrorCode::InvalidArgument => code::BAD_PARAMETER,
        ErrorCode::NotFound
        | ErrorCode::BackupNotFound
        | ErrorCode::EnvNotFound
        | ErrorCode::HostNotFound
        | ErrorCode::JobNotFound
        | ErrorCode::PathNotFound => code::NOT_FOUND,
        ErrorCode::Conflict
        | ErrorCode::DuplicateName
        | ErrorCode::JobRunning
        | ErrorCode::TargetInUse
        | ErrorCode::TargetChanged
        | ErrorCode::SessionExpired
        | ErrorCode::PlacementChanged
        | ErrorCode::Protected => code::CONFLICT,
        // The cluster refused the user (the adapter checks only the call's role).
        ErrorCode::PermissionDenied => code::FORBIDDEN,
        ErrorCode::Unavailable
        | ErrorCode::DiskFull
        | ErrorCode::HostOffline
        | ErrorCode::AgentLost
        // The gateway and the nodes speak different protocol versions (an upgrade half done).
        | ErrorCode::VersionMismatch => code::UNAVAILABLE,
        ErrorCode::Unauthenticated
        | ErrorCode::ChunksMissing
        | ErrorCode::Corrupt
        | ErrorCode::Internal => code::INTERNAL,
    }
}

impl From<cairn_api::Error> for XmlError {
    /// A cluster answer becomes the XML error its code maps to ([`cluster_code`]); the
    /// cluster's text is kept for refusals and replaced for failures (logged instead).
    fn from(e: cairn_api::Error) -> XmlError {
        match cluster_code(e.code()) {
            code::UNAVAILABLE => {
                tracing::warn!(error = %e, "cluster unavailable");
                XmlError::new(
                    code::UNAVAILABLE,
                    "the storage cluster cannot answer now; try again",
                )
            }
            code::INTERNAL => {
                tracing::error!(error = %e, "cluster call failed");
                XmlError::new(code::INTERNAL, "internal error; see the gateway's log")
            }
            c => XmlError::new(c, e.to_string()),
        }
    }
}
