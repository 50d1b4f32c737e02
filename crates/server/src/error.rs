//! The error every request can end in: a stable code, a message safe to show to the client, and
//! for stale epochs the group's current position. Backend details go to the log, never out.

use chapar_store::StoreError;
use chapar_types::ErrorCode;

/// A request's failure as the client will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    /// Stable code.
    pub code: ErrorCode,
    /// Human-readable, sanitized.
    pub message: String,
    /// For `stale_epoch`: the group's epoch now.
    pub current_epoch: u64,
    /// For `stale_epoch`: the group's last sequence number now.
    pub head_seq: u64,
    /// For `stale_roster`: the group's roster version now.
    pub roster_version: u64,
}

impl ServiceError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            current_epoch: 0,
            head_seq: 0,
            roster_version: 0,
        }
    }

    /// A malformed or missing field.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UsernameTaken => {
                Self::new(ErrorCode::UsernameTaken, "that username is taken")
            }
            StoreError::DeviceExists => {
                Self::new(ErrorCode::DeviceExists, "a device with this id exists")
            }
            StoreError::GroupExists => {
                Self::new(ErrorCode::GroupExists, "a group with this id exists")
            }
            StoreError::UnknownGroup => Self::new(ErrorCode::UnknownGroup, "no such group"),
            StoreError::KeyPackageQuota { stored } => Self::new(
                ErrorCode::QuotaExceeded,
                format!(
                    "the account keeps {stored} bytes of key packages with these, more than it \
                     may; upload fewer"
                ),
            ),
            StoreError::OutOfRange(n) => Self::new(
                ErrorCode::BadRequest,
                format!("{n} is out of range: positions, sizes and times stay below 2^63"),
            ),
            StoreError::NotMember => Self::new(
                ErrorCode::NotMember,
                "this device is not a member of the group",
            ),
            StoreError::UnknownDevice(d) => {
                Self::new(ErrorCode::BadRequest, format!("unknown device {d}"))
            }
            StoreError::Unclaimed(d) => Self::new(
                ErrorCode::BadRequest,
                format!(
                    "device {d} can be added only with a key package this account claimed \
                     (and has not used)"
                ),
            ),
            StoreError::StaleEpoch {
                current_epoch,
                head_seq,
            } => Self {
                code: ErrorCode::StaleEpoch,
                message: format!(
                    "the group moved on (epoch {current_epoch}, entry {head_seq}); sync and retry"
                ),
                current_epoch,
                head_seq,
                roster_version: 0,
            },
            StoreError::StaleRoster { current } => Self {
                code: ErrorCode::StaleRoster,
                message: format!(
                    "the devices of a member changed (roster {current}); update the group's \
                     devices and send again"
                ),
                current_epoch: 0,
                head_seq: 0,
                roster_version: current,
            },
            StoreError::Conflict { position } => Self {
                code: ErrorCode::Conflict,
                message: "someone else changed this first; fetch the current state and retry"
                    .into(),
                current_epoch: 0,
                head_seq: position,
                roster_version: 0,
            },
            StoreError::TooManyDevices => Self::new(
                ErrorCode::TooManyDevices,
                format!(
                    "the account has {} active devices already; revoke one first",
                    chapar_types::limits::DEVICES_PER_ACCOUNT_MAX
                ),
            ),
            StoreError::LinkNotFound => Self::new(
                ErrorCode::LinkNotFound,
                "no pending link has this code: it expired, was used, or was mistyped",
            ),
            StoreError::TooManyLinks => Self::new(
                ErrorCode::Unavailable,
                "too many devices are linking right now; try again in a few minutes",
            ),
            StoreError::UnknownUser => Self::new(ErrorCode::UnknownUser, "no such user"),
            StoreError::BeyondHead => {
                Self::bad_request("an archive segment cannot reach past the group's last entry")
            }
            StoreError::Full => {
                tracing::error!("storage full: refusing writes");
                Self::new(
                    ErrorCode::StorageFull,
                    "the server's storage is full; nothing was stored, try again later",
                )
            }
            StoreError::Unavailable => Self::new(
                ErrorCode::Unavailable,
                "storage is unavailable; retry later",
            ),
            StoreError::Backend(detail) => {
                tracing::error!(%detail, "storage failure");
                Self::new(ErrorCode::Internal, "internal server error")
            }
            StoreError::UnknownBlob(id) => Self::new(
                ErrorCode::UnknownBlob,
                format!("no complete blob {id}: finish the upload before sending"),
            ),
        }
    }
}
