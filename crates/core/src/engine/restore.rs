//! Restoring the account archive on a new (linked or recovered) device: its segments are
//! read in order, each group's must chain (see [`check_chain`]), and their events replayed
//! into the local history. Replaying twice changes nothing, and a restore that stops (a
//! broken chain, a lost connection) resumes where it stopped.

use chapar_types::{DeviceId, GroupId, Username};
use chapar_wire::content::{self, AppMessage, ArchiveBody, archive_event};
use chapar_wire::v1;
use prost::Message as _;

use super::archive::{FOLLOW_CURSOR, RESTORE_CURSOR, open_segment};
use super::device::Device;
use super::self_group;
use crate::CoreError;
use crate::account_keys::AccountKeys;
use crate::history;
use crate::identity::Identity;
use crate::model::Restored;
use crate::storage::{Chat, ChatKind, ChatState, Tx};

impl Device {
    /// At the archive's end: every group reaches as far as the approving device saw it
    /// archived, or the server held its tail back.
    fn check_archive_reach(&self) -> Result<(), CoreError> {
        let short = self.read(|tx| tx.archive_short())?;
        let Some((group, reached, expected)) = short.first() else {
            return Ok(());
        };
        Err(CoreError::ArchiveBroken {
            group: *group,
            reason: format!(
                "ends at entry {reached}, but the approving device saw it archived through \
                 {expected}: the server is holding part of it back"
            ),
        })
    }

    /// After a broken chain in `group`: the next restore starts again after the group's last
    /// replayed segment, so the segment the server held back is asked for again (what was
    /// replayed since is skipped).
    fn rewind_restore(&self, group: chapar_types::GroupId) -> Result<(), CoreError> {
        self.write(|tx| {
            let last = tx.restored(group)?.map_or(0, |(_, segment)| segment);
            if tx.counter(RESTORE_CURSOR)? > last {
                tx.set_counter(RESTORE_CURSOR, last)?;
            }
            Ok(())
        })
    }

    /// Replays the account archive from where the last replay stopped (a new or recovered
    /// device). Replaying twice changes nothing.
    pub(crate) async fn restore_archive(&self) -> Result<Restored, CoreError> {
        let me = self.me()?;
        let keys = self.account_keys()?;
        let mut restored = Restored::default();
        loop {
            let cursor = self.read(|tx| tx.counter(RESTORE_CURSOR))?;
            let segments = self.archive_page(cursor).await?;
            if segments.is_empty() {
                if let Err(e) = self.check_archive_reach() {
                    if let CoreError::ArchiveBroken { group, .. } = &e {
                        self.rewind_restore(*group)?;
                    }
                    return Err(e);
                }
                break;
            }
            for segment in segments {
                restored.segments += 1;
                restored.bytes += segment.ciphertext.len() as u64;
                let replayed = self.write(|tx| {
                    if segment.id <= tx.counter(RESTORE_CURSOR)? {
                        return Err(CoreError::Protocol(
                            "the server sent archive segments out of order".into(),
                        ));
                    }
                    let applied = replay_segment(tx, self.now_ms(), me, &keys, &segment)?;
                    tx.set_counter(RESTORE_CURSOR, segment.id)?;
                    // Nor need it be read again to see what is archived.
                    if tx.counter(FOLLOW_CURSOR)? < segment.id {
                        tx.set_counter(FOLLOW_CURSOR, segment.id)?;
                    }
                    Ok(applied)
                });
                restored.events += match replayed {
                    Ok(applied) => applied,
                    Err(CoreError::ArchiveBroken { group, reason }) => {
                        self.rewind_restore(group)?;
                        return Err(CoreError::ArchiveBroken { group, reason });
                    }
                    Err(e) => return Err(e),
                };
            }
        }
        let mut total = self.restored.get();
        total += restored;
        self.restored.set(total);
        Ok(restored)
    }
}

/// A group's segments form a chain: each reaches past the one before (the server keeps
/// only progress), and starts where it ended or earlier, unless its uploader said (inside
/// the sealed body) that it skips a stretch no device of the account held. So a segment the
/// server dropped, reordered or served from an older copy shows as a gap or a step back,
/// and restoring stops there with an error instead of restoring a history with a hole.
/// Returns whether to replay the segment: one replayed already (asked for again after a
/// rewind) is skipped.
fn check_chain(
    tx: &Tx<'_>,
    group: GroupId,
    segment: &v1::ArchiveSegment,
    body: &ArchiveBody,
) -> Result<bool, CoreError> {
    let Some((previous, last_segment)) = tx.restored(group)? else {
        tx.set_restored(group, segment.through_seq, segment.id)?;
        return Ok(true);
    };
    if segment.id <= last_segment {
        return Ok(false);
    }
    if segment.through_seq <= previous {
        return Err(CoreError::ArchiveBroken {
            group,
            reason: format!(
                "goes back (a segment through entry {} after one through {previous}): the \
                 server reordered or replayed it",
                segment.through_seq
            ),
        });
    }
    if segment.from_seq > previous && !body.starts_after_gap {
        return Err(CoreError::ArchiveBroken {
            group,
            reason: format!(
                "has a gap (entries {} to {} are missing): the server dropped a segment",
                previous + 1,
                segment.from_seq
            ),
        });
    }
    tx.set_restored(group, segment.through_seq, segment.id)?;
    Ok(true)
}

/// Decrypts one segment and applies its events; returns how many were applied.
fn replay_segment(
    tx: &Tx<'_>,
    now_ms: u64,
    me: &Identity,
    keys: &AccountKeys,
    segment: &v1::ArchiveSegment,
) -> Result<u64, CoreError> {
    let Some((group, body)) = open_segment(me, keys, segment) else {
        return Ok(0);
    };
    if !check_chain(tx, group, segment, &body)? {
        return Ok(0);
    }
    if tx.chat(group)?.is_none() {
        tx.insert_chat(
            &Chat::new(group, ChatKind::Group, ChatState::Restored, 0),
            now_ms,
        )?;
    }
    // Read here, so seen archived.
    tx.set_archived_seq(group, segment.through_seq)?;
    let mut applied = 0;
    for event in &body.events {
        // Events outside the segment's declared stretch are not what the segment says it is.
        if event.seq <= segment.from_seq || event.seq > segment.through_seq {
            continue;
        }
        match &event.kind {
            Some(archive_event::Kind::AppMessage(bytes)) => {
                let Ok(message) = AppMessage::decode(bytes.as_slice()) else {
                    continue;
                };
                let Ok(sender) = Username::parse(&event.sender) else {
                    continue;
                };
                if let Some(content::app_message::Body::AccountSync(sync)) = &message.body {
                    self_group::apply_restored(tx, sync)?;
                } else {
                    history::apply(
                        tx,
                        group,
                        &sender,
                        DeviceId(event.sender_device),
                        Some(event.seq),
                        &message,
                    )?;
                }
                applied += 1;
            }
            Some(archive_event::Kind::ChatState(state)) => {
                let active = tx.chat(group)?.is_some_and(|c| c.is_active());
                let ended = match state.as_str() {
                    "left" => Some(ChatState::Left),
                    "removed" => Some(ChatState::Removed),
                    _ => None,
                };
                if let (false, Some(ended)) = (active, ended) {
                    tx.set_state(group, ended)?;
                }
                applied += 1;
            }
            None => {}
        }
    }
    tx.set_archived_seq(group, segment.through_seq)?;
    Ok(applied)
}
