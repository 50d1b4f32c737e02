//! Restoring the account archive on a new (linked or recovered) device: its segments are
//! read in order, each group's must chain (see [`check_chain`]), and their events replayed
//! into the local history. Replaying twice changes nothing, and a restore that stops (a
//! broken chain, a lost connection) resumes where it stopped.

use chapar_types::{DeviceId, Username};
use chapar_wire::content::{self, AppMessage, archive_event};
use chapar_wire::v1;
use prost::Message as _;

use super::archive::{self, FOLLOW_CURSOR, RESTORE_CURSOR};
use super::device::Device;
use super::{segment, self_group};
use crate::CoreError;
use crate::account_keys::AccountKeys;
use crate::history;
use crate::identity::Identity;
use crate::model::Restored;
use crate::storage::{ChainHead, Chat, ChatKind, ChatState, Tx};

impl Device {
    /// At the archive's end: every group reaches as far as the approving device saw it
    /// archived, or the server held its tail back.
    fn check_archive_reach(&self) -> Result<(), CoreError> {
        let short = self.read(|tx| tx.archive_short())?;
        let Some((group, reached, expected)) = short.first() else {
            return Ok(());
        };
        let reason = if reached < expected {
            format!(
                "ends at entry {reached}, but the approving device saw it archived through \
                 {expected}: the server is holding part of it back"
            )
        } else {
            format!(
                "ends at entry {reached} in another segment than the approving device saw \
                 archived there: the server replaced it"
            )
        };
        Err(CoreError::ArchiveBroken {
            group: *group,
            reason,
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

/// A group's segments form a chain ([`archive::continues`]): so a segment the server
/// dropped (the first ones included), reordered, replayed, forked or took from a revoked
/// device shows as a gap, a step back or a broken link, and restoring stops there with an
/// error instead of restoring a history with a hole. Where the approving device said how far
/// it saw the chat archived, the chain must pass through the very segment it saw there.
/// Returns whether to replay the segment: one replayed already (asked for again after a
/// rewind) is skipped.
fn check_chain(
    tx: &Tx<'_>,
    segment: &v1::ArchiveSegment,
    opened: &segment::Opened,
) -> Result<bool, CoreError> {
    let group = opened.group;
    let broken = |reason: String| CoreError::ArchiveBroken { group, reason };
    let (head, last_segment) = tx.restored(group)?.unwrap_or_default();
    if last_segment > 0 && segment.id <= last_segment {
        return Ok(false);
    }
    archive::continues(&head, segment, opened).map_err(broken)?;
    if let Some(expected) = tx.expected_archive_head(group)? {
        let passes = head.through < expected.through && segment.through_seq > expected.through;
        let replaced = segment.through_seq == expected.through
            && !expected.link.is_empty()
            && opened.link != expected.link;
        if passes || replaced {
            return Err(broken(format!(
                "does not pass through the segment the approving device saw end at entry {}: \
                 the server replaced the chat's archive",
                expected.through
            )));
        }
    }
    let end = ChainHead {
        through: segment.through_seq,
        link: opened.link.clone(),
        generation: opened.generation,
    };
    tx.set_restored(group, &end, segment.id)?;
    Ok(true)
}

/// Decrypts one segment and applies its events; returns how many were applied. A segment
/// that does not open or was not written by a device of the account is skipped: if it
/// mattered, the next segment of its chat does not continue the chain.
fn replay_segment(
    tx: &Tx<'_>,
    now_ms: u64,
    me: &Identity,
    keys: &AccountKeys,
    segment: &v1::ArchiveSegment,
) -> Result<u64, CoreError> {
    let Ok(opened) = segment::open(me, keys, segment) else {
        return Ok(0);
    };
    if !check_chain(tx, segment, &opened)? {
        return Ok(0);
    }
    let (group, body) = (opened.group, &opened.body);
    if tx.chat(group)?.is_none() {
        tx.insert_chat(
            &Chat::new(group, ChatKind::Group, ChatState::Restored, 0),
            now_ms,
        )?;
    }
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
    // Read here, so seen archived.
    tx.set_archive_head(
        group,
        &ChainHead {
            through: segment.through_seq,
            link: opened.link.clone(),
            generation: opened.generation,
        },
    )?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the report

    use chapar_types::GroupId;
    use chapar_wire::content::ArchiveBody;

    use super::*;
    use crate::storage::Profile;

    /// A segment of group 1 with id `id` over `(from, through]`, linking to `previous`, its
    /// own link being `[id]`.
    fn segment(
        id: u64,
        from: u64,
        through: u64,
        previous: &[u8],
        generation: u32,
    ) -> (v1::ArchiveSegment, segment::Opened) {
        let group = GroupId::from_slice(&[1; 16]).unwrap();
        let wire = v1::ArchiveSegment {
            id,
            group_id: group.as_bytes().to_vec(),
            from_seq: from,
            through_seq: through,
            key_generation: generation,
            ciphertext: Vec::new(),
        };
        let opened = segment::Opened {
            group,
            body: ArchiveBody::default(),
            previous: previous.to_vec(),
            link: vec![id as u8],
            generation,
        };
        (wire, opened)
    }

    fn chain(segments: &[(v1::ArchiveSegment, segment::Opened)]) -> Result<Vec<bool>, String> {
        chain_expecting(None, segments)
    }

    /// [`chain`], where the approving device saw the chat's archive end at `expected`.
    fn chain_expecting(
        expected: Option<ChainHead>,
        segments: &[(v1::ArchiveSegment, segment::Opened)],
    ) -> Result<Vec<bool>, String> {
        let profile = Profile::in_memory().unwrap();
        profile
            .write(|tx| {
                if let Some(expected) = &expected {
                    tx.expect_archive_head(GroupId::from_slice(&[1; 16]).unwrap(), expected)?;
                }
                segments
                    .iter()
                    .map(|(wire, opened)| check_chain(tx, wire, opened))
                    .collect::<Result<Vec<bool>, CoreError>>()
            })
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_linked_chain_is_replayed_once() {
        let first = segment(1, 0, 2, b"", 5);
        let second = segment(2, 2, 4, &[1], 5);
        let third = segment(3, 3, 6, &[2], 6);
        assert_eq!(
            chain(&[first.clone(), second.clone(), third, second]).unwrap(),
            [true, true, true, false]
        );
    }

    #[test]
    fn a_segment_that_does_not_link_to_the_one_before_is_refused() {
        // Same stretch as the real second segment, but another branch (a fork, or one a
        // revoked device wrote): the old rule (stretches only) took it.
        let first = segment(1, 0, 2, b"", 5);
        let forked = segment(2, 2, 4, &[9], 5);
        let error = chain(&[first, forked]).unwrap_err();
        assert!(error.contains("does not continue"), "{error}");
    }

    #[test]
    fn a_segment_under_an_older_key_than_the_one_before_is_refused() {
        let first = segment(1, 0, 2, b"", 6);
        let older = segment(2, 2, 4, &[1], 5);
        let error = chain(&[first, older]).unwrap_err();
        assert!(error.contains("older archive key"), "{error}");
    }

    #[test]
    fn a_chat_whose_first_segments_were_dropped_is_refused() {
        // Old rule: any segment was taken as a chat's first.
        let error = chain(&[segment(2, 0, 4, &[1], 5)]).unwrap_err();
        assert!(error.contains("does not start at the beginning"), "{error}");
        let error = chain(&[segment(2, 2, 4, b"", 5)]).unwrap_err();
        assert!(error.contains("has a gap"), "{error}");
    }

    #[test]
    fn a_chain_that_passes_the_approvers_end_without_its_segment_is_refused() {
        let expected = ChainHead {
            through: 4,
            link: vec![2],
            generation: 0,
        };
        // The real chain: through 2, then through 4 (the approver's end), then further.
        let real = [
            segment(1, 0, 2, b"", 5),
            segment(2, 2, 4, &[1], 5),
            segment(3, 4, 9, &[2], 5),
        ];
        assert!(chain_expecting(Some(expected.clone()), &real).is_ok());
        // Made up by a revoked device that kept its keys: it continues the first segment and
        // jumps over the approver's end.
        let error = chain_expecting(
            Some(expected.clone()),
            &[segment(1, 0, 2, b"", 5), segment(7, 2, 9, &[1], 5)],
        )
        .unwrap_err();
        assert!(error.contains("does not pass through"), "{error}");
        // Or ends where the approver's did, in another segment.
        let error = chain_expecting(
            Some(expected),
            &[segment(1, 0, 2, b"", 5), segment(8, 2, 4, &[1], 5)],
        )
        .unwrap_err();
        assert!(error.contains("does not pass through"), "{error}");
    }

    #[test]
    fn gaps_and_steps_back_are_refused() {
        let first = segment(1, 0, 4, b"", 5);
        let error = chain(&[first.clone(), segment(2, 5, 8, &[1], 5)]).unwrap_err();
        assert!(error.contains("has a gap"), "{error}");
        let error = chain(&[first, segment(2, 0, 3, &[1], 5)]).unwrap_err();
        assert!(error.contains("goes back"), "{error}");
    }
}
