//! Which blobs a message keeps alive on the server, checked before the message is queued.
//!
//! The server cannot read a message, so its sender says which uploaded blobs it carries (the
//! server keeps them while some message does) and, for a delete-for-everyone, which blob the
//! deleted entry carried and where that entry is (only its references are dropped).

use chapar_types::limits::{APP_MESSAGE_BYTES_MAX, BLOBS_PER_MESSAGE_MAX};
use chapar_types::{GroupId, MessageId, Seq};
use chapar_wire::content::{AppMessage, app_message::Body};
use prost::Message as _;

use crate::history;
use crate::storage::Tx;
use crate::{CoreError, Usage};

/// Length of a blob id.
const BLOB_ID_BYTES: usize = 16;

/// What a message tells the server about blobs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct References {
    /// Blobs the message carries.
    pub carried: Vec<Vec<u8>>,
    /// Blobs the entry a delete deletes carried.
    pub dropped: Vec<Vec<u8>>,
    /// The log position of the entry a delete deletes (0: none).
    pub deleted_seq: Seq,
}

/// The references of `body`, a message to `group`. Looks up the entry a delete deletes, so it
/// must run before the delete changes local history.
pub(crate) fn of(tx: &Tx<'_>, group: GroupId, body: &[u8]) -> References {
    let Ok(message) = AppMessage::decode(body) else {
        return References::default();
    };
    match message.body {
        Some(Body::File(file)) => References {
            carried: vec![file.blob_id],
            ..References::default()
        },
        Some(Body::StickerPack(pack)) => References {
            carried: pack
                .stickers
                .into_iter()
                .filter_map(|s| s.file.map(|f| f.blob_id))
                .collect(),
            ..References::default()
        },
        Some(Body::Delete(delete)) => {
            let deleted = MessageId::from_slice(&delete.target)
                .ok()
                .and_then(|id| history::file_in(tx, group, id).ok().flatten());
            match deleted {
                Some((file, Some(seq))) => References {
                    dropped: vec![file.blob_id],
                    deleted_seq: seq,
                    ..References::default()
                },
                _ => References::default(),
            }
        }
        _ => References::default(),
    }
}

/// Refuses, before anything is queued, a message the server would refuse for good: too big,
/// too many blobs, or a blob id that is not one (a forwarded file from a careless peer).
pub(crate) fn check(body: &[u8], references: &References) -> Result<(), CoreError> {
    if body.len() > APP_MESSAGE_BYTES_MAX {
        return Err(Usage::MessageTooLarge(format!(
            "the message has {} bytes encoded; at most {APP_MESSAGE_BYTES_MAX} fit",
            body.len()
        ))
        .into());
    }
    if references.carried.len() > BLOBS_PER_MESSAGE_MAX {
        return Err(Usage::MessageTooLarge(format!(
            "a message carries at most {BLOBS_PER_MESSAGE_MAX} files"
        ))
        .into());
    }
    let malformed = references
        .carried
        .iter()
        .chain(&references.dropped)
        .any(|id| id.len() != BLOB_ID_BYTES);
    if malformed {
        return Err(Usage::MalformedFileMessage.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_crowded_and_malformed_messages_are_refused() {
        let ok = References {
            carried: vec![vec![1; 16]],
            ..References::default()
        };
        assert!(check(&[0; 100], &ok).is_ok());
        assert!(check(&vec![0; APP_MESSAGE_BYTES_MAX + 1], &ok).is_err());
        let crowded = References {
            carried: vec![vec![1; 16]; BLOBS_PER_MESSAGE_MAX + 1],
            ..References::default()
        };
        assert!(check(&[0; 100], &crowded).is_err());
        let malformed = References {
            carried: vec![vec![1; 15]],
            ..References::default()
        };
        assert!(check(&[0; 100], &malformed).is_err());
    }
}
