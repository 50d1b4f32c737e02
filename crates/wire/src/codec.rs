//! Encoding and decoding of whole frames, with the size limit applied before any parsing.

use chapar_types::limits::FRAME_BYTES_MAX;
use prost::Message;

/// Why bytes did not decode into a frame.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The frame is larger than [`FRAME_BYTES_MAX`].
    #[error("frame of {0} bytes exceeds the limit of {FRAME_BYTES_MAX} bytes")]
    TooLarge(usize),
    /// The bytes are not a valid protobuf encoding of the expected message.
    #[error("malformed frame: {0}")]
    Malformed(#[from] prost::DecodeError),
}

/// Decodes one frame. Never panics, whatever the input.
pub fn decode<M: Message + Default>(bytes: &[u8]) -> Result<M, DecodeError> {
    if bytes.len() > FRAME_BYTES_MAX {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    Ok(M::decode(bytes)?)
}

/// Encodes one frame.
pub fn encode<M: Message>(message: &M) -> Vec<u8> {
    message.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{self, client_frame::Request};
    use proptest::prelude::*;

    fn arb_send() -> impl Strategy<Value = v1::ClientFrame> {
        (
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 0..40),
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 0..16),
            prop::collection::vec(any::<u8>(), 0..2000),
        )
            .prop_map(|(request_id, group_id, epoch, message_id, ciphertext)| {
                v1::ClientFrame {
                    request_id,
                    request: Some(Request::SendMessage(v1::SendMessage {
                        group_id,
                        epoch,
                        message_id,
                        ciphertext,
                        roster_version: epoch ^ 7,
                        ..Default::default()
                    })),
                }
            })
    }

    fn arb_commit() -> impl Strategy<Value = v1::ClientFrame> {
        (
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 0..600),
            prop::collection::vec(any::<u64>(), 0..20),
            prop::collection::vec(any::<u64>(), 0..20),
        )
            .prop_map(
                |(epoch, commit, added_devices, removed_devices)| v1::ClientFrame {
                    request_id: epoch ^ 7,
                    request: Some(Request::SubmitCommit(v1::SubmitCommit {
                        group_id: vec![1; 16],
                        epoch,
                        seen_seq: epoch / 2,
                        commit,
                        welcome: vec![],
                        added_key_packages: added_devices
                            .iter()
                            .map(|d| vec![*d as u8; 32])
                            .collect(),
                        added_devices,
                        removed_devices,
                    })),
                },
            )
    }

    proptest! {
        #[test]
        fn client_frames_round_trip(frame in prop_oneof![arb_send(), arb_commit()]) {
            let bytes = encode(&frame);
            let back: v1::ClientFrame = decode(&bytes).expect("own encoding decodes");
            prop_assert_eq!(back, frame);
        }

        #[test]
        fn server_frames_round_trip(seq in any::<u64>(), payload in prop::collection::vec(any::<u8>(), 0..3000)) {
            let frame = v1::ServerFrame {
                kind: Some(v1::server_frame::Kind::Push(v1::Push {
                    kind: Some(v1::push::Kind::LogEntry(v1::LogEntry {
                        group_id: vec![9; 16],
                        seq,
                        kind: v1::EntryKind::Application as i32,
                        epoch: 3,
                        sender_device: 42,
                        payload,
                        server_time_ms: 1,
                        message_id: vec![1; 16],
                    })),
                })),
            };
            let back: v1::ServerFrame = decode(&encode(&frame)).expect("own encoding decodes");
            prop_assert_eq!(back, frame);
        }

        #[test]
        fn any_bytes_decode_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
            // Either outcome is fine; a panic or hang is not.
            let _ = decode::<v1::ClientFrame>(&bytes);
            let _ = decode::<v1::ServerFrame>(&bytes);
            let _ = decode::<crate::content::AppMessage>(&bytes);
        }
    }

    #[test]
    fn oversized_frames_are_refused_before_parsing() {
        let bytes = vec![0u8; FRAME_BYTES_MAX + 1];
        assert!(matches!(
            decode::<v1::ClientFrame>(&bytes),
            Err(DecodeError::TooLarge(n)) if n == FRAME_BYTES_MAX + 1
        ));
    }
}
