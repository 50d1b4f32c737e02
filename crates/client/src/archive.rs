//! The account's history archive, client side: what a device records as it decrypts, how it
//! uploads what the archive lacks, and how a new or recovered device replays it.
//!
//! A device records one event per log entry whose history it knows (a decrypted message, its
//! own acknowledged message, a read marker, the end of its membership) in the same transaction
//! that applies the entry, so nothing is recorded twice or lost in a crash. It uploads recorded
//! events the archive does not have yet as segments encrypted under the newest archive key; the
//! server accepts a segment only if it reaches beyond the archived position.
//!
//! Who uploads: every device of the account records the same events, so one of them, the
//! *leader* (the account's device with the lowest id in the group), uploads at once, and the
//! others only what is still unarchived after [`FOLLOWER_DELAY`] (the leader may be offline).
//! A device never uploads across a stretch it did not record itself (from before it joined)
//! while that stretch is unarchived, unless [`GAP_GRACE`] has passed: an older device may still
//! upload it, and the server cannot take it after a later segment. See `docs/multi-device.md`.

use std::collections::HashMap;
use std::time::Duration;

use chapar_crypto::{mls, seal};
use chapar_types::limits::{ARCHIVE_PAGE_SEGMENTS_MAX, ARCHIVE_SEGMENT_BYTES_MAX};
use chapar_types::{DeviceId, ErrorCode, GroupId, Seq};
use chapar_wire::content::{self, AppMessage, ArchiveBody, ArchiveEvent, archive_event};
use chapar_wire::v1::{self, client_frame::Request, response::Result as Reply};
use prost::Message as _;
use rusqlite::params;

use crate::ClientError;
use crate::account_keys::{AccountKeys, segment_aad};
use crate::client::{Identity, now_ms};
use crate::connection::Connection;
use crate::history;
use crate::local::{Chat, Local};
use crate::provider::Provider;

/// Bytes of the AEAD's nonce and tag around a segment.
const SEGMENT_OVERHEAD_BYTES: usize = seal::NONCE_BYTES + seal::TAG_BYTES;
/// Key label of the archive segments' key, derived from the account's archive key.
const SEGMENT_KEY_LABEL: &str = "chapar archive segments v1";
/// Field number of `ArchiveBody.events`, for counting a segment's size as it grows.
const ARCHIVE_EVENTS_FIELD: u32 = 1;
/// Pending events read from the profile at once while uploading.
const UPLOAD_BATCH_EVENTS: usize = 2_000;
/// How long a device that is not the group's archive leader waits before uploading events the
/// leader has not archived.
pub(crate) const FOLLOWER_DELAY: Duration = Duration::from_secs(30);
/// How long a device waits for an older device to archive the stretch before it joined.
const GAP_GRACE: Duration = Duration::from_secs(24 * 3600);
/// Profile key of the restore cursor (the last archive segment replayed).
const RESTORE_CURSOR: &str = "restore_cursor";
/// Profile key: until when (ms since the epoch) a new device replays what arrives in the
/// archive on each sync; 0 once done. A link the approving device completed needs one replay;
/// one it did not complete keeps replaying for [`RESTORE_WINDOW`], as the account's other
/// devices archive what they have.
pub(crate) const RESTORE_UNTIL: &str = "restore_until";
/// How long an incompletely linked device keeps replaying the archive.
pub(crate) const RESTORE_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Records that the entry at `seq` of `group` carried `event`; uploaded later.
pub(crate) fn record(
    local: &Local,
    group: GroupId,
    seq: Seq,
    event: archive_event::Kind,
    sender: &str,
    sender_device: DeviceId,
    server_ms: u64,
) -> Result<(), ClientError> {
    if seq == 0 {
        return Ok(());
    }
    let event = ArchiveEvent {
        seq,
        sender: sender.to_owned(),
        sender_device: sender_device.0,
        server_time_ms: server_ms,
        kind: Some(event),
    };
    local.conn().execute(
        "INSERT OR IGNORE INTO archive_pending (group_id, seq, event, recorded_ms)
         VALUES (?1, ?2, ?3, ?4)",
        params![
            group.as_bytes(),
            seq as i64,
            event.encode_to_vec(),
            now_ms() as i64
        ],
    )?;
    Ok(())
}

/// Records this device's own message, acknowledged at `seq`, if it is still in the outbox.
pub(crate) fn record_own(
    local: &Local,
    me: &Identity,
    group: GroupId,
    id: chapar_types::MessageId,
    seq: Seq,
) -> Result<(), ClientError> {
    let Some(body) = local.outgoing_body(group, id)? else {
        return Ok(());
    };
    // Keys sent through the self group never go into the archive.
    if let Ok(AppMessage {
        body: Some(content::app_message::Body::AccountSync(sync)),
        ..
    }) = AppMessage::decode(body.as_slice())
        && !crate::self_group::archivable(&sync)
    {
        return Ok(());
    }
    record(
        local,
        group,
        seq,
        archive_event::Kind::AppMessage(body),
        me.username.as_str(),
        me.device,
        now_ms(),
    )
}

/// Whether any recorded event waits for upload.
pub(crate) fn has_pending(local: &Local) -> Result<bool, ClientError> {
    Ok(local
        .conn()
        .query_row("SELECT EXISTS (SELECT 1 FROM archive_pending)", [], |r| {
            r.get::<_, bool>(0)
        })?)
}

fn pending_groups(local: &Local) -> Result<Vec<GroupId>, ClientError> {
    let mut stmt = local
        .conn()
        .prepare("SELECT DISTINCT group_id FROM archive_pending")?;
    let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
    let mut out = Vec::new();
    for row in rows {
        if let Ok(group) = GroupId::from_slice(&row?) {
            out.push(group);
        }
    }
    Ok(out)
}

/// The oldest pending events of a group: (seq, encoded event, recorded at).
fn pending_events(local: &Local, group: GroupId) -> Result<Vec<(Seq, Vec<u8>, u64)>, ClientError> {
    let mut stmt = local.conn().prepare_cached(
        "SELECT seq, event, recorded_ms FROM archive_pending WHERE group_id = ?1
         ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![group.as_bytes(), UPLOAD_BATCH_EVENTS as i64], |r| {
        Ok((
            r.get::<_, i64>(0)? as u64,
            r.get::<_, Vec<u8>>(1)?,
            r.get::<_, i64>(2)? as u64,
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn forget_through(local: &Local, group: GroupId, seq: Seq) -> Result<(), ClientError> {
    local.conn().execute(
        "DELETE FROM archive_pending WHERE group_id = ?1 AND seq <= ?2",
        params![group.as_bytes(), seq as i64],
    )?;
    local.set_archived_seq(group, seq)
}

/// Whether this device is the one that archives `group` for its account at once: the lowest
/// device id of the account among the group's members (or the only one that knows the group).
fn is_leader(local: &Local, me: &Identity, group: GroupId) -> Result<bool, ClientError> {
    let provider = Provider::new(local.conn());
    let Some(state) = mls::load_group(&provider, group)? else {
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

/// Uploads recorded events the archive lacks. `archived` has the server's archived position
/// per group where the caller knows it (from `ListGroups`); elsewhere the profile's last known
/// position is used, and a `conflict` answer corrects it. With `force`, this device uploads
/// even where it is not the leader (before handing the archive to a new device).
pub(crate) async fn upload(
    local: &Local,
    conn: &Connection,
    me: &Identity,
    keys: &AccountKeys,
    archived: &HashMap<GroupId, Seq>,
    force: bool,
) -> Result<(), ClientError> {
    let now = now_ms();
    for group in pending_groups(local)? {
        let mut known = match archived.get(&group) {
            Some(seq) => *seq,
            None => local.archived_seq(group)?,
        };
        let leader = force || is_leader(local, me, group)?;
        let recorded_from = local.recorded_from(group)?;
        loop {
            forget_through(local, group, known)?;
            let events = pending_events(local, group)?;
            let Some(oldest_ms) = events.iter().map(|(_, _, at)| *at).min() else {
                break;
            };
            let age = Duration::from_millis(now.saturating_sub(oldest_ms));
            if !leader && age < FOLLOWER_DELAY {
                break;
            }
            if known < recorded_from && age < GAP_GRACE {
                // What came before this device joined is not archived yet; a device that was
                // there may still upload it, and would be refused after a later segment.
                break;
            }
            let (body, through) = segment_of(&events, group);
            if body.events.is_empty() {
                forget_through(local, group, through)?;
                continue;
            }
            let from = known.max(recorded_from.min(body.events[0].seq.saturating_sub(1)));
            let (generation, key) = keys.latest();
            let ciphertext = seal::encrypt(
                &key.derive(SEGMENT_KEY_LABEL),
                &segment_aad(&me.username, group, from, through, generation),
                &body.encode_to_vec(),
                &mut rand::thread_rng(),
            );
            let reply = conn
                .request(Request::AppendArchive(v1::AppendArchive {
                    group_id: group.as_bytes().to_vec(),
                    from_seq: from,
                    through_seq: through,
                    key_generation: generation,
                    ciphertext,
                }))
                .await;
            known = match reply {
                Ok(_) => through,
                Err(ClientError::Server {
                    code: ErrorCode::Conflict,
                    position,
                    ..
                }) => {
                    // Another device archived further first.
                    position.max(known.saturating_add(1))
                }
                Err(ClientError::Server {
                    code: ErrorCode::NotMember | ErrorCode::BadRequest,
                    message,
                    ..
                }) => {
                    tracing::warn!(%group, %message, "dropping history the server will not archive");
                    forget_through(local, group, through)?;
                    break;
                }
                Err(e) => return Err(e),
            };
        }
    }
    Ok(())
}

/// What a restore brought back.
#[derive(Debug, Default, Clone, Copy)]
pub struct Restored {
    /// Archive segments replayed.
    pub segments: u64,
    /// History events replayed.
    pub events: u64,
    /// Ciphertext bytes downloaded.
    pub bytes: u64,
}

impl std::ops::AddAssign for Restored {
    fn add_assign(&mut self, other: Self) {
        self.segments += other.segments;
        self.events += other.events;
        self.bytes += other.bytes;
    }
}

/// Replays the account archive from where the last replay stopped (a new or recovered
/// device). Replaying twice changes nothing.
pub(crate) async fn restore(
    local: &Local,
    conn: &Connection,
    me: &Identity,
    keys: &AccountKeys,
) -> Result<Restored, ClientError> {
    let mut restored = Restored::default();
    loop {
        let cursor = local.get_u64(RESTORE_CURSOR)?;
        let Reply::ArchivePage(page) = conn
            .request(Request::FetchArchive(v1::FetchArchive {
                after_id: cursor,
                limit: ARCHIVE_PAGE_SEGMENTS_MAX,
            }))
            .await?
        else {
            return Err(ClientError::Protocol("expected ArchivePage".into()));
        };
        if page.segments.is_empty() {
            break;
        }
        for segment in page.segments {
            if segment.id <= local.get_u64(RESTORE_CURSOR)? {
                return Err(ClientError::Protocol(
                    "the server sent archive segments out of order".into(),
                ));
            }
            restored.segments += 1;
            restored.bytes += segment.ciphertext.len() as u64;
            local.transaction(|l| {
                restored.events += replay_segment(l, me, keys, &segment)?;
                l.set_u64(RESTORE_CURSOR, segment.id)
            })?;
        }
    }
    Ok(restored)
}

/// Decrypts one segment and applies its events; returns how many were applied.
fn replay_segment(
    local: &Local,
    me: &Identity,
    keys: &AccountKeys,
    segment: &v1::ArchiveSegment,
) -> Result<u64, ClientError> {
    let Ok(group) = GroupId::from_slice(&segment.group_id) else {
        return Ok(0);
    };
    let Some(key) = keys.archive_key(segment.key_generation) else {
        tracing::warn!(%group, generation = segment.key_generation, "no key for an archive segment");
        return Ok(0);
    };
    let plaintext = match seal::decrypt(
        &key.derive(SEGMENT_KEY_LABEL),
        &segment_aad(
            &me.username,
            group,
            segment.from_seq,
            segment.through_seq,
            segment.key_generation,
        ),
        &segment.ciphertext,
    ) {
        Ok(plaintext) => plaintext,
        Err(e) => {
            tracing::warn!(%group, error = %e, "an archive segment does not open; skipped");
            return Ok(0);
        }
    };
    let Ok(body) = ArchiveBody::decode(plaintext.as_slice()) else {
        tracing::warn!(%group, "an archive segment does not decode; skipped");
        return Ok(0);
    };
    if local.chat(group)?.is_none() {
        local.insert_chat(&Chat::new(group, "group", "restored", 0), now_ms())?;
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
                if let Some(content::app_message::Body::AccountSync(sync)) = &message.body {
                    crate::self_group::apply_restored(local, sync)?;
                } else {
                    history::apply(
                        local,
                        group,
                        &event.sender,
                        DeviceId(event.sender_device),
                        Some(event.seq),
                        &message,
                    )?;
                }
                applied += 1;
            }
            Some(archive_event::Kind::ChatState(state)) => {
                let active = local.chat(group)?.is_some_and(|c| c.state == "active");
                if !active && matches!(state.as_str(), "left" | "removed") {
                    local.set_state(group, state)?;
                }
                applied += 1;
            }
            None => {}
        }
    }
    local.set_archived_seq(group, segment.through_seq)?;
    Ok(applied)
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
