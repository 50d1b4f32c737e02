//! The exact byte strings that account and device keys sign.
//!
//! Kept here, beside the identifiers, so the server (which verifies) and the clients (which sign)
//! share one definition. Every string starts with its own domain label, so no signature can be
//! replayed as another kind.

use crate::{DeviceId, Username};

const DEVICE_CERT_LABEL: &[u8] = b"chapar device certificate v1\0";
const AUTH_CHALLENGE_LABEL: &[u8] = b"chapar login challenge v1\0";

/// Length of the random login challenge the server sends, in bytes.
pub const CHALLENGE_BYTES: usize = 32;

/// The bytes an account key signs to certify `device_key` as device `device` of `username`.
pub fn device_cert_payload(username: &Username, device: DeviceId, device_key: &[u8]) -> Vec<u8> {
    let name = username.as_str().as_bytes();
    let mut out =
        Vec::with_capacity(DEVICE_CERT_LABEL.len() + 1 + name.len() + 8 + device_key.len());
    out.extend_from_slice(DEVICE_CERT_LABEL);
    // Usernames are at most 32 bytes, so one length byte suffices.
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(&device.0.to_be_bytes());
    out.extend_from_slice(device_key);
    out
}

/// The bytes a device signs to answer the server's login challenge.
pub fn challenge_payload(challenge: &[u8], device: DeviceId) -> Vec<u8> {
    let mut out = Vec::with_capacity(AUTH_CHALLENGE_LABEL.len() + challenge.len() + 8);
    out.extend_from_slice(AUTH_CHALLENGE_LABEL);
    out.extend_from_slice(challenge);
    out.extend_from_slice(&device.0.to_be_bytes());
    out
}

const RECOVERY_CHALLENGE_LABEL: &[u8] = b"chapar recovery challenge v1\0";

/// The bytes a recovery key's authentication key signs to fetch the account's recovery bundle
/// on this connection. The username is bound in, so an answer cannot be replayed for another
/// account.
pub fn recovery_challenge_payload(challenge: &[u8], username: &Username) -> Vec<u8> {
    let name = username.as_str().as_bytes();
    let mut out =
        Vec::with_capacity(RECOVERY_CHALLENGE_LABEL.len() + challenge.len() + 1 + name.len());
    out.extend_from_slice(RECOVERY_CHALLENGE_LABEL);
    out.extend_from_slice(challenge);
    // Usernames are at most 32 bytes, so one length byte suffices.
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out
}
