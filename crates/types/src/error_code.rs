//! Stable error codes. The numbers travel on the wire and never change meaning.

use std::fmt;

macro_rules! error_codes {
    ($($(#[$doc:meta])* $name:ident = $num:literal, $text:literal;)*) => {
        /// What went wrong with a request, in a form a client can act on.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $name,)*
        }

        impl ErrorCode {
            /// The number that travels on the wire.
            pub fn as_u32(self) -> u32 {
                match self { $(Self::$name => $num,)* }
            }

            /// Reads a wire number; unknown numbers become [`ErrorCode::Internal`].
            pub fn from_u32(n: u32) -> Self {
                match n { $($num => Self::$name,)* _ => Self::Internal }
            }

            /// A stable snake_case name, for logs and CLI output.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$name => $text,)* }
            }

            /// Reads a name [`Self::as_str`] gives (HTTP responses carry names, not numbers).
            pub fn from_name(name: &str) -> Option<Self> {
                match name { $($text => Some(Self::$name),)* _ => None }
            }
        }
    };
}

error_codes! {
    /// The frame could not be decoded, or a field is missing or malformed.
    BadRequest = 1, "bad_request";
    /// The client speaks a protocol version this server does not.
    UnsupportedVersion = 2, "unsupported_version";
    /// The request needs an authenticated device.
    Unauthenticated = 3, "unauthenticated";
    /// The signature over the server's challenge did not verify, or the device is unknown.
    AuthenticationFailed = 4, "authentication_failed";
    /// The username is already registered.
    UsernameTaken = 5, "username_taken";
    /// The username is not valid.
    InvalidUsername = 6, "invalid_username";
    /// No such user.
    UnknownUser = 7, "unknown_user";
    /// No such group, or the device may not see it.
    UnknownGroup = 8, "unknown_group";
    /// The device is not a member of the group (any more).
    NotMember = 9, "not_member";
    /// The message or commit was made against an older epoch or an older view of the group's
    /// log. Sync, then build the change again.
    StaleEpoch = 10, "stale_epoch";
    /// A payload is larger than the named limit.
    TooLarge = 11, "too_large";
    /// The user has no device with a key package left.
    NoKeyPackage = 12, "no_key_package";
    /// The device was revoked.
    DeviceRevoked = 13, "device_revoked";
    /// A group with this id exists already.
    GroupExists = 14, "group_exists";
    /// The server is overloaded or shutting down; retry later.
    Unavailable = 15, "unavailable";
    /// A device with this id exists already.
    DeviceExists = 16, "device_exists";
    /// The server's disk is full; nothing was stored. Retry later.
    StorageFull = 17, "storage_full";
    /// No pending link request has this code (it expired, was used, or was mistyped).
    LinkNotFound = 18, "link_not_found";
    /// The account has the most devices it may have; revoke one first.
    TooManyDevices = 19, "too_many_devices";
    /// Someone else changed the same thing first (an archive segment, a recovery key). Fetch the
    /// current state and try again.
    Conflict = 20, "conflict";
    /// A member account's devices changed since the sender last checked the group's devices.
    /// Bring the group's devices in line with its accounts (add the new, remove the revoked),
    /// then send again.
    StaleRoster = 21, "stale_roster";
    /// A server-side fault. Details are in the server's log, never in the response.
    Internal = 99, "internal";
    // Files use 40-49, apart from the core codes, so both can grow without colliding.
    /// The account is at one of its quotas: its file storage (delete files or wait for
    /// unfinished uploads to expire), the bytes it may write to chats and its archive per day,
    /// or the key package bytes it may keep. The message says which.
    QuotaExceeded = 40, "quota_exceeded";
    /// Files: no (complete) blob or upload has this id, or it is not the caller's.
    UnknownBlob = 41, "unknown_blob";
    /// Files: the chunk did not match its `Upload-Checksum`; nothing of it was stored.
    ChecksumMismatch = 42, "checksum_mismatch";
    /// Files: the unfinished upload expired; start a new one.
    UploadExpired = 43, "upload_expired";
    /// Files: the request's `Upload-Offset` is not the upload's offset; ask for it (HEAD).
    OffsetMismatch = 44, "offset_mismatch";
    /// Files: another request is writing to this upload right now; retry shortly.
    UploadBusy = 45, "upload_busy";
    /// Files: a message still references this blob, so it cannot be deleted.
    BlobReferenced = 46, "blob_referenced";
    /// Files: the account has the most unfinished uploads it may have. Finish or terminate
    /// one, or wait for one to expire.
    TooManyUploads = 47, "too_many_uploads";
    /// Files: this device runs the most transfers (uploads and downloads) it may run at once;
    /// retry when one has ended.
    TooManyTransfers = 48, "too_many_transfers";
    // Limits on what one client or account may do use 50-59.
    /// Too many of these requests in too short a time (registrations from one address, claims
    /// of one account's key packages, device changes); retry later.
    RateLimited = 50, "rate_limited";
    /// This server registers accounts by invitation only, and the invite code is missing or
    /// not one of its codes.
    InviteRequired = 51, "invite_required";
    /// Registration needs a proof of work over the connection's challenge (see `HelloOk`), and
    /// this one does not have the leading zero bits asked for.
    ProofOfWorkRequired = 52, "proof_of_work_required";
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::StaleEpoch,
            ErrorCode::Internal,
        ] {
            assert_eq!(ErrorCode::from_u32(code.as_u32()), code);
        }
        assert_eq!(ErrorCode::from_u32(12345), ErrorCode::Internal);
    }
}

#[cfg(test)]
mod file_code_tests {
    use super::*;

    #[test]
    fn file_codes_round_trip_with_stable_names() {
        let codes = [
            (ErrorCode::QuotaExceeded, 40, "quota_exceeded"),
            (ErrorCode::UnknownBlob, 41, "unknown_blob"),
            (ErrorCode::ChecksumMismatch, 42, "checksum_mismatch"),
            (ErrorCode::UploadExpired, 43, "upload_expired"),
            (ErrorCode::OffsetMismatch, 44, "offset_mismatch"),
            (ErrorCode::UploadBusy, 45, "upload_busy"),
            (ErrorCode::BlobReferenced, 46, "blob_referenced"),
            (ErrorCode::TooManyUploads, 47, "too_many_uploads"),
            (ErrorCode::TooManyTransfers, 48, "too_many_transfers"),
        ];
        for (code, number, name) in codes {
            assert_eq!((code.as_u32(), code.as_str()), (number, name));
            assert_eq!(ErrorCode::from_u32(number), code);
        }
    }
}
