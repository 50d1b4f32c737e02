//! The exact byte strings that account and device keys sign.
//!
//! Kept here, beside the identifiers, so the server (which verifies) and the clients (which sign)
//! share one definition. Every string starts with its own domain label, so no signature can be
//! replayed as another kind.

use crate::{DeviceId, Username};

const DEVICE_CERT_LABEL: &[u8] = b"chapar device certificate v1\0";
const AUTH_CHALLENGE_LABEL: &[u8] = b"chapar login challenge v2\0";

/// Length of the random login challenge the server sends, in bytes.
pub const CHALLENGE_BYTES: usize = 32;
/// Length of a server's identity (`HelloOk.server_id`): random bytes the server makes once
/// and keeps; what a device's login answer is bound to.
pub const SERVER_ID_BYTES: usize = 32;

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

/// The bytes a device signs to answer the server's login challenge: the challenge, the
/// device, and the identity of the server the device's account is on (the one it pinned, not
/// the address it dialled), so an answer a server relays from elsewhere is refused there,
/// while relays and proxies that pass the conversation on unchanged still work.
pub fn challenge_payload(challenge: &[u8], device: DeviceId, server_id: &[u8]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(AUTH_CHALLENGE_LABEL.len() + challenge.len() + 8 + server_id.len());
    out.extend_from_slice(AUTH_CHALLENGE_LABEL);
    out.extend_from_slice(challenge);
    out.extend_from_slice(&device.0.to_be_bytes());
    out.extend_from_slice(server_id);
    out
}

const RECOVERY_CHALLENGE_LABEL: &[u8] = b"chapar recovery challenge v2\0";

/// The bytes a recovery key's authentication key signs to fetch the account's recovery bundle
/// on this connection. The username is bound in, so an answer cannot be replayed for another
/// account, and the server's identity, so it cannot be relayed to another server.
pub fn recovery_challenge_payload(
    challenge: &[u8],
    username: &Username,
    server_id: &[u8],
) -> Vec<u8> {
    let name = username.as_str().as_bytes();
    let mut out = Vec::with_capacity(
        RECOVERY_CHALLENGE_LABEL.len() + challenge.len() + 1 + name.len() + server_id.len(),
    );
    out.extend_from_slice(RECOVERY_CHALLENGE_LABEL);
    out.extend_from_slice(challenge);
    // Usernames are at most 32 bytes, so one length byte suffices.
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(server_id);
    out
}

const REVOCATION_LABEL: &[u8] = b"chapar device revocation v1\0";

/// The bytes an account key signs to revoke device `device` of `username`: the proof a
/// contact needs before it removes the device from its groups (the server's word that the
/// device is gone is not enough).
pub fn revocation_payload(username: &Username, device: DeviceId) -> Vec<u8> {
    let name = username.as_str().as_bytes();
    let mut out = Vec::with_capacity(REVOCATION_LABEL.len() + 1 + name.len() + 8);
    out.extend_from_slice(REVOCATION_LABEL);
    // Usernames are at most 32 bytes, so one length byte suffices.
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(&device.0.to_be_bytes());
    out
}

const ARCHIVE_SEGMENT_LABEL: &[u8] = b"chapar archive segment v2\0";

/// The bytes a device signs for an archive segment it uploads: the segment's associated data
/// (account, group, stretch of the log, key generation), the link to the group's previous
/// segment, and the encoded body. Clients alone check it (the server cannot open a segment):
/// a restoring device keeps only history one of the account's certified devices wrote.
pub fn archive_segment_payload(associated_data: &[u8], previous: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        ARCHIVE_SEGMENT_LABEL.len() + 12 + associated_data.len() + previous.len() + body.len(),
    );
    out.extend_from_slice(ARCHIVE_SEGMENT_LABEL);
    for part in [associated_data, previous, body] {
        // Length-prefixed, so no two different part lists give the same bytes.
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}
