//! Sending a message: it is stored in the history and the outbox in one transaction, then
//! encrypted for the group's current epoch (the ratchet state committed before the ciphertext
//! leaves, so no key is ever used twice, even across a crash), sent, and marked sent on the
//! acknowledgement. A message the server did not acknowledge stays in the outbox and is
//! encrypted and sent again on the next connection; the server deduplicates it by id.

use std::collections::HashMap;

use chapar_crypto::mls;
use chapar_types::{ErrorCode, GroupId, MessageId, Seq};
use chapar_wire::content::{AppMessage, app_message::Body};
use chapar_wire::v1::{self, client_frame::Request, response::Result as Reply};
use prost::Message as _;

use super::archive;
use super::commit::STALE_RETRIES_MAX;
use super::device::{Device, unexpected};
use crate::CoreError;
use crate::events::Warning;
use crate::history;
use crate::references::{self, References};
use crate::storage::Tx;

/// Whether the server refused a message for a reason that sending it again cannot change.
fn refused_for_good(e: &CoreError) -> bool {
    matches!(
        e.code(),
        Some(
            ErrorCode::BadRequest
                | ErrorCode::TooLarge
                | ErrorCode::UnknownBlob
                | ErrorCode::UnknownGroup
                | ErrorCode::NotMember
        )
    )
}

impl Device {
    /// Stores the message locally and in the outbox, then delivers it and archives it.
    pub(crate) async fn send_body(
        &self,
        group: GroupId,
        body: Body,
    ) -> Result<MessageId, CoreError> {
        self.send_body_and(group, body, |_| Ok(())).await
    }

    /// Like [`Self::send_body`], running `also` in the transaction that queues the message
    /// (what must change exactly when the message is on its way, such as forgetting the
    /// upload it carries, so that sending the file again cannot send it twice).
    pub(crate) async fn send_body_and(
        &self,
        group: GroupId,
        body: Body,
        also: impl FnOnce(&Tx<'_>) -> Result<(), CoreError>,
    ) -> Result<MessageId, CoreError> {
        let me = self.me()?;
        let id = MessageId(self.env.random());
        let now = self.now_ms();
        let message = AppMessage {
            message_id: id.as_bytes().to_vec(),
            sent_at_ms: i64::try_from(now).unwrap_or(i64::MAX),
            body: Some(body),
        };
        let bytes = message.encode_to_vec();
        let references = self.write(|tx| {
            // Before the message changes local history: a delete still finds its file here.
            let references = references::of(tx, group, &bytes);
            references::check(&bytes, &references)?;
            history::apply(tx, group, &me.username, me.device, None, &message)?;
            tx.queue_outgoing(group, id, &bytes, now)?;
            also(tx)?;
            Ok(references)
        })?;
        match self.deliver(group, id, &bytes, &references).await {
            Ok(_) => {}
            // It is in the outbox: the next connection sends it.
            Err(CoreError::Connection(e)) => return Err(CoreError::Queued(e)),
            Err(e) => return Err(e),
        }
        self.upload_archive(&HashMap::new(), false).await;
        Ok(id)
    }

    /// Encrypts for the current epoch and sends until acknowledged; re-encrypts after catching
    /// up if the epoch moved. The ratchet state is committed before the ciphertext leaves.
    pub(crate) async fn deliver(
        &self,
        group: GroupId,
        id: MessageId,
        body: &[u8],
        references: &References,
    ) -> Result<Seq, CoreError> {
        let me = self.me()?;
        let signer = me.signer();
        for _ in 0..STALE_RETRIES_MAX {
            // Never past a commit of this device whose fate is unknown (a removal it made
            // must hold before anything else is said), nor past waiting proposals.
            self.prepare_group(group).await?;
            let (ciphertext, epoch, roster_version) = self.write(|tx| {
                let provider = self.mls(tx);
                let mut state = mls::load_group(&provider, group)?
                    .ok_or_else(|| CoreError::Profile(format!("no MLS state for chat {group}")))?;
                Ok((
                    mls::encrypt(&mut state, &provider, &signer, body)?,
                    mls::epoch(&state),
                    tx.roster_checked(group)?,
                ))
            })?;
            let reply = self
                .call(Request::SendMessage(v1::SendMessage {
                    group_id: group.as_bytes().to_vec(),
                    epoch,
                    message_id: id.as_bytes().to_vec(),
                    ciphertext,
                    roster_version,
                    blob_ids: references.carried.clone(),
                    unreferenced_blob_ids: references.dropped.clone(),
                    deleted_seq: references.deleted_seq,
                }))
                .await;
            match reply {
                Ok(Reply::Appended(appended)) => {
                    self.write(|tx| {
                        archive::record_own(tx, me, group, id, appended.seq, self.now_ms())?;
                        tx.mark_sent(group, id, appended.seq)
                    })?;
                    return Ok(appended.seq);
                }
                Ok(_) => return Err(unexpected("Appended")),
                Err(e) if e.code() == Some(ErrorCode::StaleEpoch) => {
                    // The group moved on (a commit): catch up, then try again.
                    self.sync_group(group).await?;
                }
                Err(e) if e.code() == Some(ErrorCode::StaleRoster) => {
                    // A member account gained or lost a device: add or remove it first, so
                    // the message reaches exactly the devices it should. Boxed: checking may
                    // send (the chat's meta to added devices), which delivers.
                    Box::pin(self.check_roster(group)).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(CoreError::Server {
            code: ErrorCode::StaleEpoch,
            message: "the group kept changing; try again".into(),
            position: 0,
        })
    }

    /// Sends messages that were queued but never acknowledged (the server deduplicates).
    pub(crate) async fn flush_outbox(&self) -> Result<(), CoreError> {
        for (group, id, body) in self.read(|tx| tx.outbox())? {
            let references = self.write(|tx| {
                if tx.chat(group)?.is_none_or(|c| !c.is_active()) {
                    tx.mark_sent(group, id, 0)?;
                    return Ok(None);
                }
                // A retried delete no longer knows the file it deleted (the local copy is
                // gone): the blob then stays referenced, which costs space, never data.
                Ok(Some(references::of(tx, group, &body)))
            })?;
            let Some(references) = references else {
                continue;
            };
            match self.deliver(group, id, &body, &references).await {
                Ok(_) => {}
                Err(e) if e.outcome_unknown() => return Err(e),
                Err(e) if refused_for_good(&e) => {
                    // Sending it again would be refused again: drop it rather than let it
                    // block every later command.
                    self.write(|tx| tx.mark_sent(group, id, 0))?;
                    self.warn(Warning::QueuedMessageDropped {
                        group,
                        reason: e.to_string(),
                    });
                }
                // Not now (its chat cannot take a message yet): it stays queued, and logging
                // in goes on; one stuck message must not lock every command out.
                Err(e) => self.warn(Warning::QueuedMessageWaiting {
                    group,
                    reason: e.to_string(),
                }),
            }
        }
        Ok(())
    }
}
