//! The account's history archive, client side: what a device records as it decrypts, how it
//! uploads what the archive lacks, and how it follows what its siblings archived (replaying it
//! on a new device is `restore`).
//!
//! A device records one event per log entry whose history it knows (a decrypted message, its
//! own acknowledged message, a read marker, the end of its membership) in the same transaction
//! that applies the entry, so nothing is recorded twice or lost in a crash. It uploads recorded
//! events the archive does not have yet as segments encrypted under the newest archive key; the
//! server accepts a segment only if it reaches beyond the archived position.
//!
//! Who uploads: every device of the account records the same events, so one of them, the
//! *leader* (the account's device with the lowest id in the group), uploads at once, and the
//! others only what is still unarchived after [`FOLLOWER_DELAY_MS`] (the leader may be
//! offline). A device never uploads across a stretch it did not record itself (from before it
//! joined) while that stretch is unarchived, unless [`GAP_GRACE_MS`] has passed: an older
//! device may still upload it, and the server cannot take it after a later segment. It
//! forgets recorded events only once it has seen them archived (its own upload, or a
//! sibling's segment it read), never on the server's word. See `docs/multi-device.md`.

use std::collections::HashMap;

use chapar_crypto::mls;
use chapar_types::limits::{ARCHIVE_PAGE_SEGMENTS_MAX, ARCHIVE_SEGMENT_BYTES_MAX};
use chapar_types::{DeviceId, ErrorCode, GroupId, MessageId, Seq, Username};
use chapar_wire::content::{self, AppMessage, ArchiveBody, ArchiveEvent, archive_event};
use chapar_wire::v1::{self, client_frame::Request, response::Result as Reply};
use prost::Message as _;

use super::device::{Device, unexpected};
use super::segment::{self, SEGMENT_OVERHEAD_BYTES, Unopened};
use super::self_group;
use crate::CoreError;
use crate::account_keys::AccountKeys;
use crate::events::Warning;
use crate::identity::Identity;
use crate::provider::Provider;
use crate::storage::{ChainHead, Tx};

/// Field number of `ArchiveBody.events`, for counting a segment's size as it grows.
const ARCHIVE_EVENTS_FIELD: u32 = 1;
/// Pending events read from the profile at once while uploading.
const UPLOAD_BATCH_EVENTS: usize = 2_000;
/// How long a device that is not the group's archive leader waits before uploading events the
/// leader has not archived.
pub(crate) const FOLLOWER_DELAY_MS: u64 = 30_000;
/// How long a device waits for an older device to archive the stretch before it joined.
const GAP_GRACE_MS: u64 = 24 * 3600 * 1000;
/// Profile key of the restore cursor (the last archive segment replayed).
pub(super) const RESTORE_CURSOR: &str = "restore_cursor";
/// Profile key of the follow cursor (the last archive segment this device read to see what
/// its siblings archived).
pub(super) const FOLLOW_CURSOR: &str = "archive_follow_cursor";
/// How long an incompletely linked device keeps replaying the archive.
pub(crate) const RESTORE_WINDOW_MS: u64 = 24 * 3600 * 1000;

/// Records that the entry at `seq` of `group` carried `event`; uploaded later.
#[allow(clippy::too_many_arguments)] // the fields of one archive event
pub(crate) fn record(
    tx: &Tx<'_>,
    group: GroupId,
    seq: Seq,
    event: archive_event::Kind,
    sender: &Username,
    sender_device: DeviceId,
    server_ms: u64,
    now_ms: u64,
) -> Result<(), CoreError> {
    if seq == 0 {
        return Ok(());
    }
    let event = ArchiveEvent {
        seq,
        sender: sender.as_str().to_owned(),
        sender_device: sender_device.0,
        server_time_ms: server_ms,
        kind: Some(event),
    };
    tx.record_archive_event(group, seq, &event.encode_to_vec(), now_ms)
}

/// Records this device's own message, acknowledged at `seq`, if it is still in the outbox.
pub(crate) fn record_own(
    tx: &Tx<'_>,
    me: &Identity,
    group: GroupId,
    id: MessageId,
    seq: Seq,
    now_ms: u64,
) -> Result<(), CoreError> {
    let Some(body) = tx.outgoing_body(group, id)? else {
        return Ok(());
    };
    // Keys sent through the self group never go into the archive.
    if let Ok(AppMessage {
        body: Some(content::app_message::Body::AccountSync(sync)),
        ..
    }) = AppMessage::decode(body.as_slice())
        && !self_group::archivable(&sync)
    {
        return Ok(());
    }
    record(
        tx,
        group,
        seq,
        archive_event::Kind::AppMessage(body),
        &me.username,
        me.device,
        now_ms,
        now_ms,
    )
}

/// Whether this device is the one that archives `group` for its account at once: the lowest
/// device id of the account among the group's members (or the only one that knows the group).
fn is_leader(provider: &Provider<'_>, me: &Identity, group: GroupId) -> Result<bool, CoreError> {
    let Some(state) = mls::load_group(provider, group)? else {
        return Ok(true);
    };
    Ok(mls::members(&state)
        .iter()
        .filter(|m| m.identity.username == me.username)
        .map(|m| m.identity.device)
        .min()
        .is_none_or(|lowest| lowest == me.device))
}

/// The events of one segment, starting at the first pending one, within the size limit.
fn segment_of(events: &[(Seq, Vec<u8>, u64)], group: GroupId) -> (ArchiveBody, Seq) {
    let mut body = ArchiveBody::default();
    // The body's encoded length, kept as events are added (encoding it anew each time would
    // make a batch quadratic).
    let mut body_bytes = 0;
    let mut last = 0;
    for (seq, bytes, _) in events {
        last = *seq;
        let Ok(event) = ArchiveEvent::decode(bytes.as_slice()) else {
            tracing::warn!(%group, seq, "dropping an undecodable archive event");
            continue;
        };
        body_bytes += prost::encoding::message::encoded_len(ARCHIVE_EVENTS_FIELD, &event);
        body.events.push(event);
        if body_bytes + SEGMENT_OVERHEAD_BYTES > ARCHIVE_SEGMENT_BYTES_MAX {
            // Keep at least one event; a single event is far below the limit.
            if body.events.len() > 1 {
                body.events.pop();
                last = body.events.last().map_or(last, |e| e.seq);
            }
            break;
        }
    }
    (body, last)
}

impl Device {
    /// Uploads recorded events the archive lacks. `archived` has the server's archived
    /// position per group where the caller knows it (from `ListGroups`); elsewhere the
    /// profile's last known position is used, and a `conflict` answer corrects it. With
    /// `force`, this device uploads even where it is not the leader (before handing the
    /// archive to a new device).
    ///
    /// The server's word that a stretch is archived only stops this device uploading it: the
    /// events are forgotten once the device has seen them archived itself (its own upload
    /// acknowledged, or a sibling's segment read from the archive, [`Self::follow_archive`]).
    pub(crate) async fn upload_archive_now(
        &self,
        archived: &HashMap<GroupId, Seq>,
        force: bool,
    ) -> Result<(), CoreError> {
        let me = self.me()?;
        let keys = self.account_keys()?;
        let now = self.now_ms();
        let groups = self.read(|tx| tx.archive_event_groups())?;
        // The server says a group is archived further than this device has seen: look.
        let behind = self.read(|tx| {
            for group in &groups {
                if archived.get(group).copied().unwrap_or(0) > tx.archive_head(*group)?.through {
                    return Ok(true);
                }
            }
            Ok(false)
        })?;
        if behind {
            self.follow_archive(&keys).await?;
        }
        for group in groups {
            let mut head = self.read(|tx| tx.archive_head(group))?;
            if archived.get(&group).copied().unwrap_or(0) > head.through {
                // A segment this device has not seen (or could not check) ends the chain: a
                // segment of its own would not continue it. The events wait.
                tracing::debug!(%group, "the archive reaches past what this device has seen");
                continue;
            }
            let (leader, recorded_from) = self.read(|tx| {
                Ok((
                    force || is_leader(&self.mls(tx), me, group)?,
                    tx.recorded_from(group)?,
                ))
            })?;
            loop {
                // What this device saw archived goes; what the server only claims stays.
                let events = self.write(|tx| {
                    tx.drop_archive_events(group, head.through)?;
                    tx.archive_events_after(group, head.through, UPLOAD_BATCH_EVENTS)
                })?;
                let Some(oldest_ms) = events.iter().map(|(_, _, at)| *at).min() else {
                    break;
                };
                let age = now.saturating_sub(oldest_ms);
                if !leader && age < FOLLOWER_DELAY_MS {
                    break;
                }
                if head.through < recorded_from && age < GAP_GRACE_MS {
                    // What came before this device joined is not archived yet; a device that
                    // was there may still upload it, and would be refused after a later segment.
                    break;
                }
                let (mut body, through) = segment_of(&events, group);
                if body.events.is_empty() {
                    self.write(|tx| tx.drop_archive_events(group, through))?;
                    continue;
                }
                let from = head
                    .through
                    .max(recorded_from.min(body.events[0].seq.saturating_sub(1)));
                // Starting past the archived position skips what no device of the account
                // holds; said inside the seal, so a restoring device can tell it from a
                // segment the server dropped.
                body.starts_after_gap = from > head.through;
                let stretch = segment::Stretch {
                    group,
                    from,
                    through,
                    previous: &head.link,
                };
                let ciphertext = segment::seal(&self.env, me, &keys, &stretch, &body);
                let uploaded = ChainHead {
                    through,
                    link: segment::link(&ciphertext),
                    generation: keys.latest().0,
                };
                let reply = self
                    .call(Request::AppendArchive(v1::AppendArchive {
                        group_id: group.as_bytes().to_vec(),
                        from_seq: from,
                        through_seq: through,
                        key_generation: uploaded.generation,
                        ciphertext,
                    }))
                    .await;
                match reply {
                    Ok(_) => {
                        // Seen archived: this device's own upload.
                        self.write(|tx| tx.set_archive_head(group, &uploaded))?;
                        head = uploaded;
                    }
                    Err(CoreError::Server {
                        code: ErrorCode::Conflict,
                        ..
                    }) => {
                        // Another device archived further first: its segment is read (and
                        // checked) before this device forgets or chains onto anything.
                        self.follow_archive(&keys).await?;
                        let seen = self.read(|tx| tx.archive_head(group))?;
                        if seen.through <= head.through {
                            break;
                        }
                        head = seen;
                    }
                    Err(CoreError::Server {
                        code: ErrorCode::NotMember | ErrorCode::BadRequest,
                        message,
                        ..
                    }) => {
                        // Kept, never dropped on the server's word: a later sync tries again,
                        // and a device restoring later sees a gap rather than a silent hole.
                        self.warn(Warning::ArchiveDeferred {
                            reason: format!(
                                "the server refused history of chat {group}: {message}"
                            ),
                        });
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// The account archive's segments after segment `after`, one page of them.
    pub(super) async fn archive_page(
        &self,
        after: u64,
    ) -> Result<Vec<v1::ArchiveSegment>, CoreError> {
        let Reply::ArchivePage(page) = self
            .call(Request::FetchArchive(v1::FetchArchive {
                after_id: after,
                limit: ARCHIVE_PAGE_SEGMENTS_MAX,
            }))
            .await?
        else {
            return Err(unexpected("ArchivePage"));
        };
        Ok(page.segments)
    }

    /// Reads the segments the account's other devices archived since this device last
    /// looked, and moves each group's chain head over those that continue it (so it forgets
    /// only history it has seen archived, and its own next segment links to the real end).
    /// A segment under an archive key this device does not hold yet stops the reading until
    /// the key arrives; one that does not continue its chain is refused with a warning.
    async fn follow_archive(&self, keys: &AccountKeys) -> Result<(), CoreError> {
        let me = self.me()?;
        loop {
            let cursor = self.read(|tx| tx.counter(FOLLOW_CURSOR))?;
            let segments = self.archive_page(cursor).await?;
            if segments.is_empty() {
                return Ok(());
            }
            let (refused, waiting) = self.write(|tx| {
                let mut refused = Vec::new();
                for segment in &segments {
                    if segment.id <= tx.counter(FOLLOW_CURSOR)? {
                        return Err(CoreError::Protocol(
                            "the server sent archive segments out of order".into(),
                        ));
                    }
                    match segment::open(me, keys, segment) {
                        Err(Unopened::NewerKey) => return Ok((refused, true)),
                        Err(Unopened::Refused(_)) => {}
                        Ok(opened) => {
                            if let Err(reason) = follow_segment(tx, segment, &opened)? {
                                refused.push((opened.group, reason));
                            }
                        }
                    }
                    tx.set_counter(FOLLOW_CURSOR, segment.id)?;
                }
                Ok((refused, false))
            })?;
            for (group, reason) in refused {
                self.warn(Warning::ArchiveRefused {
                    group: group.to_string(),
                    reason,
                });
            }
            if waiting {
                return Ok(());
            }
        }
    }

    /// Uploads what the archive lacks (see [`Self::upload_archive_now`]). A failure is a
    /// warning, not an error: the events stay recorded and a later sync uploads them.
    pub(crate) async fn upload_archive(&self, archived: &HashMap<GroupId, Seq>, force: bool) {
        if let Err(e) = self.upload_archive_now(archived, force).await {
            tracing::warn!(error = %e, "could not upload history to the archive; will retry");
            self.warn(Warning::ArchiveDeferred {
                reason: e.to_string(),
            });
        }
    }
}

/// Moves a group's chain head over a sibling's segment that continues it; says why not
/// where it does not (what ends at or before the head was seen already). A segment that
/// skips entries this device holds is refused too: the server kept them out of the archive
/// (by refusing the uploads of the devices that had them), and following it would forget
/// them.
fn follow_segment(
    tx: &Tx<'_>,
    segment: &v1::ArchiveSegment,
    opened: &segment::Opened,
) -> Result<Result<(), String>, CoreError> {
    let head = tx.archive_head(opened.group)?;
    if segment.through_seq <= head.through {
        return Ok(Ok(()));
    }
    if let Err(reason) = continues(&head, segment, opened) {
        return Ok(Err(reason));
    }
    if segment.from_seq > head.through
        && tx.has_archive_events_between(opened.group, head.through, segment.from_seq)?
    {
        return Ok(Err(format!(
            "a segment skips entries {} to {}, which this device holds: the server kept them \
             out of the archive",
            head.through + 1,
            segment.from_seq
        )));
    }
    tx.set_archive_head(
        opened.group,
        &ChainHead {
            through: segment.through_seq,
            link: opened.link.clone(),
            generation: opened.generation,
        },
    )?;
    Ok(Ok(()))
}

/// Whether a segment continues a chain that ends at `head` (the default head: the chain's
/// start). It must reach past the head (the server keeps only progress), start where the
/// head ends or earlier unless its uploader said inside the seal that it skips a stretch no
/// device of the account held, name the head's segment as its previous one (none, at the
/// start), and be sealed under the head's archive key generation or a newer one (a device
/// never seals under an older key than one it opened, so an older one is a device the
/// account revoked, writing with the keys it kept). So a segment the server dropped
/// (the first ones included), reordered, replayed or forked shows here.
pub(super) fn continues(
    head: &ChainHead,
    segment: &v1::ArchiveSegment,
    opened: &segment::Opened,
) -> Result<(), String> {
    if segment.through_seq <= head.through {
        return Err(format!(
            "goes back (a segment through entry {} after one through {}): the server \
             reordered or replayed it",
            segment.through_seq, head.through
        ));
    }
    if segment.from_seq > head.through && !opened.body.starts_after_gap {
        return Err(format!(
            "has a gap (entries {} to {} are missing): the server dropped a segment",
            head.through + 1,
            segment.from_seq
        ));
    }
    if opened.previous != head.link {
        return Err(if head.link.is_empty() {
            format!(
                "does not start at the beginning (a segment through entry {} names one before \
                 it that was not served): the server dropped the chat's first segments",
                segment.through_seq
            )
        } else {
            format!(
                "a segment through entry {} does not continue the one through {}: the server \
                 forked or replaced the chat's archive",
                segment.through_seq, head.through
            )
        });
    }
    if opened.generation < head.generation {
        return Err(format!(
            "a segment through entry {} is sealed under an older archive key than the one \
             before it: written by a revoked device",
            segment.through_seq
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the report

    use super::*;

    #[test]
    fn a_segment_fills_up_to_the_size_limit_and_no_further() {
        let group = GroupId::from_slice(&[7; 16]).unwrap();
        let events: Vec<(Seq, Vec<u8>, u64)> = (1..=200)
            .map(|seq| {
                let event = ArchiveEvent {
                    seq,
                    sender: "alice".into(),
                    sender_device: 3,
                    server_time_ms: 1_700_000_000_000 + seq,
                    kind: Some(archive_event::Kind::AppMessage(vec![
                        seq as u8;
                        5_000 + seq as usize
                    ])),
                };
                (seq, event.encode_to_vec(), 0)
            })
            .collect();
        let (body, through) = segment_of(&events, group);
        let taken = body.events.len();
        assert!(taken > 1 && taken < events.len());
        assert_eq!(through, body.events[taken - 1].seq);
        assert!(body.encoded_len() + SEGMENT_OVERHEAD_BYTES <= ARCHIVE_SEGMENT_BYTES_MAX);
        let mut one_more = body.clone();
        one_more
            .events
            .push(ArchiveEvent::decode(events[taken].1.as_slice()).unwrap());
        assert!(one_more.encoded_len() + SEGMENT_OVERHEAD_BYTES > ARCHIVE_SEGMENT_BYTES_MAX);
    }
}
