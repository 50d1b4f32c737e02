//! Submitting to a group's log: the size limits of messages, commits and proposals, the
//! durable append, and then the fan-out: the new entry to the group's connected members (not
//! to the connection that sent it, which gets the response), and a hint to devices a commit
//! welcomed. An entry is pushed only once it is on disk.

use chapar_store::{Append, AppendKind, Appended, BlobRefs, EntryKind, LogEntry, Store};
use chapar_types::ErrorCode;
use chapar_types::limits::{
    COMMIT_DEVICE_CHANGES_MAX, HANDSHAKE_BYTES_MAX, MESSAGE_CIPHERTEXT_BYTES_MAX,
};

use super::{Authenticated, Service};
use crate::error::ServiceError;
use crate::hub::{Push, PushKind};
use crate::metrics::LimitHit;

fn too_large(what: &str, limit: usize) -> ServiceError {
    ServiceError::new(
        ErrorCode::TooLarge,
        format!("{what} is larger than {limit} bytes"),
    )
}

/// Refuses what is over the limits for its kind.
pub fn check_size(append: &Append) -> Result<(), ServiceError> {
    match &append.kind {
        AppendKind::Application { .. } if append.payload.len() > MESSAGE_CIPHERTEXT_BYTES_MAX => {
            Err(too_large("the message", MESSAGE_CIPHERTEXT_BYTES_MAX))
        }
        AppendKind::Commit {
            welcome,
            added,
            removed,
            ..
        } => {
            let welcome = welcome.as_ref().map_or(0, Vec::len);
            if append.payload.len() + welcome > HANDSHAKE_BYTES_MAX {
                return Err(too_large("the commit", HANDSHAKE_BYTES_MAX));
            }
            if added.len() + removed.len() > COMMIT_DEVICE_CHANGES_MAX {
                return Err(ServiceError::new(
                    ErrorCode::TooLarge,
                    format!("a commit may change at most {COMMIT_DEVICE_CHANGES_MAX} devices"),
                ));
            }
            Ok(())
        }
        AppendKind::Proposal { .. } if append.payload.len() > HANDSHAKE_BYTES_MAX => {
            Err(too_large("the proposal", HANDSHAKE_BYTES_MAX))
        }
        _ => Ok(()),
    }
}

impl<S: Store> Service<S> {
    /// Appends to a group's log from `who` on connection `connection_id` (durably), then
    /// pushes the entry to the group's other connected members and a welcome hint to the
    /// devices it welcomed.
    pub async fn submit(
        &self,
        who: &Authenticated,
        connection_id: u64,
        append: Append,
        refs: Option<BlobRefs>,
    ) -> Result<Appended, ServiceError> {
        check_size(&append)?;
        let kind = match append.kind {
            AppendKind::Application { .. } => EntryKind::Application,
            AppendKind::Commit { .. } => EntryKind::Commit,
            AppendKind::Proposal { .. } => EntryKind::Proposal,
        };
        let message_id = match &append.kind {
            AppendKind::Application { message_id, .. } => Some(*message_id),
            _ => None,
        };
        let (group, epoch) = (append.group, append.epoch);
        // The store takes ownership; keep a copy for the push.
        let payload = append.payload.clone();
        let appended = self.append(who, append, refs).await?;
        if !appended.duplicate {
            let entry = LogEntry {
                group,
                seq: appended.seq,
                kind,
                epoch,
                sender: who.device,
                message_id,
                payload,
                server_ms: appended.server_ms,
            };
            let mut missed = self.hub.push(
                &appended.recipients,
                &Push::new(PushKind::Entry(entry)),
                Some(connection_id),
            );
            if !appended.welcomed.is_empty() {
                missed += self
                    .hub
                    .push(&appended.welcomed, &Push::new(PushKind::Welcome), None);
            }
            for _ in 0..missed {
                self.metrics.hit(LimitHit::ConnectionBytes);
            }
        }
        Ok(appended)
    }
}
