//! Identifiers for devices, groups and messages.
//!
//! Group and message ids are random 16-byte values chosen by clients; they print as 32 lowercase
//! hex digits. Device ids are random 64-bit values chosen by the device itself, so a device can
//! sign its own certificate before the server has seen it.

use std::fmt;

/// Why a string or byte slice is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid {kind}: expected {expected}")]
pub struct IdParseError {
    kind: &'static str,
    expected: &'static str,
}

/// One device of an account. Every MLS leaf is a device.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(pub u64);

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({self})")
    }
}

impl std::str::FromStr for DeviceId {
    type Err = IdParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(s, 16)
            .map(Self)
            .map_err(|_| IdParseError {
                kind: "device id",
                expected: "16 hex digits",
            })
    }
}

macro_rules! random_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; 16]);

        impl $name {
            /// The id's bytes as they travel on the wire.
            pub fn as_bytes(&self) -> &[u8] {
                &self.0
            }

            /// Reads an id from wire bytes, which must be exactly 16 long.
            pub fn from_slice(bytes: &[u8]) -> Result<Self, IdParseError> {
                bytes.try_into().map(Self).map_err(|_| IdParseError {
                    kind: $kind,
                    expected: "16 bytes",
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({self})", stringify!($name))
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let mut out = [0u8; 16];
                hex::decode_to_slice(s, &mut out).map_err(|_| IdParseError {
                    kind: $kind,
                    expected: "32 hex digits",
                })?;
                Ok(Self(out))
            }
        }
    };
}

random_id!(
    /// A chat: one MLS group, 1:1 or many members. Also the MLS group id.
    GroupId,
    "group id"
);
random_id!(
    /// A message, chosen by its sender so that retries are idempotent.
    MessageId,
    "message id"
);

random_id!(
    /// A file's ciphertext on the server: chosen at random by the server when an upload is
    /// created (128 bits, so unguessable), and named by messages that carry the file.
    BlobId,
    "blob id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text() {
        let g = GroupId([7; 16]);
        assert_eq!(g.to_string().parse::<GroupId>(), Ok(g));
        let d = DeviceId(0xdead_beef);
        assert_eq!(d.to_string().parse::<DeviceId>(), Ok(d));
        assert!("xyz".parse::<GroupId>().is_err());
        assert!(GroupId::from_slice(&[1, 2, 3]).is_err());
    }
}
