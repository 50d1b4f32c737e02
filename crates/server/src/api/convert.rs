//! Conversions between wire messages and domain types, with the field checks that go with them.

use chapar_store::{BlobRefs, DeviceRecord, EntryKind, LogEntry};
use chapar_types::{BlobId, DeviceId, GroupId, MessageId};
use chapar_wire::v1;

use crate::ServiceError;
use crate::service::devices::NewDeviceRequest;

/// Reads a 16-byte group id field.
pub fn group_id(bytes: &[u8]) -> Result<GroupId, ServiceError> {
    GroupId::from_slice(bytes).map_err(|e| ServiceError::bad_request(e.to_string()))
}

/// Reads a 16-byte message id field.
pub fn message_id(bytes: &[u8]) -> Result<MessageId, ServiceError> {
    MessageId::from_slice(bytes).map_err(|e| ServiceError::bad_request(e.to_string()))
}

/// The blob references a `SendMessage` carries, if it carries any. Ids must be 16 bytes.
/// `deleted_seq` is the entry whose references `drop` names (0: none, from older clients).
pub fn blob_refs(
    add: &[Vec<u8>],
    drop: &[Vec<u8>],
    deleted_seq: u64,
) -> Result<Option<BlobRefs>, ServiceError> {
    if add.is_empty() && drop.is_empty() {
        return Ok(None);
    }
    let ids = |list: &[Vec<u8>]| {
        list.iter()
            .map(|b| BlobId::from_slice(b).map_err(|e| ServiceError::bad_request(e.to_string())))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(Some(BlobRefs {
        add: ids(add)?,
        drop: ids(drop)?,
        deleted_seq,
    }))
}

/// A device record as a certificate on the wire.
pub fn device_cert(d: &DeviceRecord) -> v1::DeviceCert {
    v1::DeviceCert {
        device_id: d.device.0,
        device_key: d.device_key.clone(),
        account_signature: d.account_signature.clone(),
    }
}

/// A new device's certificate and key material as a request (registration, recovery, link).
pub fn new_device(
    cert: Option<v1::DeviceCert>,
    key_packages: Vec<Vec<u8>>,
    last_resort_key_package: Vec<u8>,
    sealed_name: Vec<u8>,
) -> Result<NewDeviceRequest, ServiceError> {
    let cert = cert.ok_or_else(|| ServiceError::bad_request("missing device certificate"))?;
    Ok(NewDeviceRequest {
        device: DeviceId(cert.device_id),
        device_key: cert.device_key,
        account_signature: cert.account_signature,
        key_packages,
        last_resort_key_package,
        sealed_name,
    })
}

/// A device as its own account sees it (name sealed, times, revocation).
pub fn device_info(d: &DeviceRecord, key_packages: u32) -> v1::DeviceInfo {
    v1::DeviceInfo {
        key_packages,
        device: Some(device_cert(d)),
        sealed_name: d.sealed_name.clone(),
        created_ms: d.created_ms,
        last_seen_ms: d.last_seen_ms.unwrap_or(0),
        revoked_ms: d.revoked_ms.unwrap_or(0),
    }
}

/// A log entry on the wire.
pub fn log_entry(e: &LogEntry) -> v1::LogEntry {
    v1::LogEntry {
        group_id: e.group.as_bytes().to_vec(),
        seq: e.seq,
        kind: match e.kind {
            EntryKind::Application => v1::EntryKind::Application,
            EntryKind::Commit => v1::EntryKind::Commit,
            EntryKind::Proposal => v1::EntryKind::Proposal,
        } as i32,
        epoch: e.epoch,
        sender_device: e.sender.0,
        payload: e.payload.clone(),
        server_time_ms: e.server_ms,
        message_id: e
            .message_id
            .map(|m| m.as_bytes().to_vec())
            .unwrap_or_default(),
    }
}

/// The response frame for a request's outcome.
pub fn response(
    request_id: u64,
    result: Result<v1::response::Result, ServiceError>,
) -> v1::ServerFrame {
    let result = match result {
        Ok(result) => result,
        Err(e) => v1::response::Result::Error(v1::Error {
            code: e.code.as_u32(),
            message: e.message,
            current_epoch: e.current_epoch,
            head_seq: e.head_seq,
            roster_version: e.roster_version,
        }),
    };
    v1::ServerFrame {
        kind: Some(v1::server_frame::Kind::Response(v1::Response {
            request_id,
            result: Some(result),
        })),
    }
}

/// A push frame.
pub fn push(kind: v1::push::Kind) -> v1::ServerFrame {
    v1::ServerFrame {
        kind: Some(v1::server_frame::Kind::Push(v1::Push { kind: Some(kind) })),
    }
}

/// A push's frame, encoded.
pub fn encode_push(kind: &crate::hub::PushKind) -> bytes::Bytes {
    let kind = match kind {
        crate::hub::PushKind::Entry(entry) => v1::push::Kind::LogEntry(log_entry(entry)),
        crate::hub::PushKind::Welcome => v1::push::Kind::Welcome(v1::Empty {}),
    };
    bytes::Bytes::from(chapar_wire::encode(&push(kind)))
}
