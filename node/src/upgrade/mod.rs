//! Live binary upgrade: the running process hands everything it serves — listening
//! sockets, every established connection with its bytes in flight, waiting clients,
//! stick entries, health, unreplicated decisions, VRRP mastership — to a new process of
//! the binary now installed at its path, and exits. Not one connection is broken or
//! refused, and there is never a second process left behind (HAProxy's reload keeps the
//! old one for as long as its connections last; with 10-hour connections they pile up).
//!
//! - [`Upgrader`] (`hand`): the old process's side, run on `SIGUSR2` or
//!   `POST /v1/node/upgrade`; it checks the new binary, starts it, converses, and either
//!   exits or takes everything back.
//! - [`take_over`] (`take`): the new process's side, when `ballast run` finds
//!   [`protocol::SOCKET_ENV`] set.
//! - [`protocol`]: the messages and their order; [`wire`]: framing with descriptors.
//!
//! The commit point is the new process's `Prepared`: before it any failure rolls back
//! (the old process kept its own descriptors and resumes every connection from the same
//! state it offered); after it the old process has let go of Raft and VRRP, and the new
//! one serves.

mod hand;
pub mod protocol;
mod take;
pub mod wire;

pub use hand::{Parts, Upgrader};
pub use take::{take_over, TakenOver};

/// Why a live upgrade did not happen (or, for [`UpgradeError::AfterCommit`], did not
/// finish). Every variant before the commit point leaves the old process serving.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("an upgrade is already in progress")]
    Busy,
    #[error("the node is not started yet")]
    NotStarted,
    #[error("the new binary {path} is missing: {source}")]
    Missing {
        path: String,
        source: std::io::Error,
    },
    #[error("the new binary failed `check` on the node's config ({status}): {output}")]
    Check { status: String, output: String },
    #[error("the new binary did not answer `check` within {0:?}")]
    CheckTimeout(std::time::Duration),
    #[error("cannot start the new binary: {0}")]
    Spawn(std::io::Error),
    #[error("the new process exited ({0}) before taking over")]
    Exited(String),
    #[error("the new process did not confirm within {0:?}")]
    Timeout(std::time::Duration),
    #[error("the new binary speaks hand-over format {theirs}, this one {ours}")]
    Format { theirs: u32, ours: u32 },
    #[error("the data plane could not be frozen: {0}")]
    Freeze(String),
    #[error("the new process could not take the offer: {0}")]
    Prepare(String),
    #[error("the old process refused the hand-over: {0}")]
    Refused(String),
    #[error("the old process called the hand-over off: {0}")]
    Aborted(String),
    #[error("hand-over protocol: {0}")]
    Protocol(String),
    #[error(transparent)]
    Wire(#[from] wire::WireError),
    #[error("hand-over: {0}")]
    Io(#[from] std::io::Error),
    #[error("the new process failed after taking over: {0}")]
    AfterCommit(String),
    #[error("{0}")]
    Internal(String),
}

/// A hand-over step's blocking thread panicked or was cancelled.
impl From<tokio::task::JoinError> for UpgradeError {
    fn from(error: tokio::task::JoinError) -> Self {
        UpgradeError::Internal(error.to_string())
    }
}

impl UpgradeError {
    /// A closed or reset hand-over socket, or a timeout on it: the new process is gone
    /// or hung, which the caller reports as such.
    fn is_silence(&self) -> bool {
        match self {
            UpgradeError::Wire(wire::WireError::Closed) => true,
            UpgradeError::Wire(wire::WireError::Io(e)) | UpgradeError::Io(e) => matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
            ),
            _ => false,
        }
    }
}
