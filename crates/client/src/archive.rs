//! The account's history archive, client side: what a device records as it decrypts, how it
//! uploads what the archive lacks, and how a new or recovered device replays it.
//!
//! A device records one event per log entry whose history it knows (a decrypted message, its
//! own acknowledged message, a read marker, the end of its membership) in the same transaction
//! that applies the entry, so nothing is recorded twice or lost in a crash. After a sync or a
//! send it uploads the recorded events the archive does not have yet, as segments encrypted
//! under the newest archive key; the server accepts a segment only if it reaches beyond the
//! archived position, so the account's devices archive each stretch about once between them.
//! See `docs/multi-device.md`.

use std::collections::HashMap;

use chapar_crypto::seal;
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

/// Plaintext bytes of events put in one segment, leaving room for the AEAD and the frame.
const SEGMENT_PLAINTEXT_BYTES_MAX: usize = ARCHIVE_SEGMENT_BYTES_MAX - 4 * 1024;
/// Pending events read from the profile at once while uploading.
const UPLOAD_BATCH_EVENTS: usize = 2_000;
/// Profile key of the restore cursor (the last archive segment replayed).
const RESTORE_CURSOR: &str = "restore_cursor";
/// Profile key set while a new device still has to replay the archive.
pub(crate) const RESTORE_PENDING: &str = "restore_pending";

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
        "INSERT OR IGNORE INTO archive_pending (group_id, seq, event) VALUES (?1, ?2, ?3)",
        params![group.as_bytes(), seq as i64, event.encode_to_vec()],
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
    if let Some(body) = local.outgoing_body(group, id)? {
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
        )?;
    }
    Ok(())
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

fn pending_events(local: &Local, group: GroupId) -> Result<Vec<(Seq, Vec<u8>)>, ClientError> {
    let mut stmt = local.conn().prepare_cached(
        "SELECT seq, event FROM archive_pending WHERE group_id = ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![group.as_bytes(), UPLOAD_BATCH_EVENTS as i64], |r| {
        Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Vec<u8>>(1)?))
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

/// Uploads every recorded event the archive lacks. `archived` has the server's archived
/// position per group where the caller knows it (from `ListGroups`); elsewhere the profile's
/// last known position is used, and a `conflict` answer corrects it.
pub(crate) async fn upload(
    local: &Local,
    conn: &Connection,
    me: &Identity,
    keys: &AccountKeys,
    archived: &HashMap<GroupId, Seq>,
) -> Result<(), ClientError> {
    for group in pending_groups(local)? {
        let mut known = match archived.get(&group) {
            Some(seq) => *seq,
            None => local.archived_seq(group)?,
        };
        loop {
            forget_through(local, group, known)?;
            let events = pending_events(local, group)?;
            if events.is_empty() {
                break;
            }
            let mut body = ArchiveBody::default();
            let mut size = 0;
            for (_, event) in &events {
                if size + event.len() > SEGMENT_PLAINTEXT_BYTES_MAX && !body.events.is_empty() {
                    break;
                }
                size += event.len();
                match ArchiveEvent::decode(event.as_slice()) {
                    Ok(event) => body.events.push(event),
                    Err(_) => tracing::warn!(%group, "dropping an undecodable archive event"),
                }
            }
            let Some(through) = body.events.last().map(|e| e.seq) else {
                // Nothing decodable in this batch: drop it and go on.
                let last = events.last().map_or(known, |(seq, _)| *seq);
                forget_through(local, group, last)?;
                continue;
            };
            let (generation, key) = keys.latest();
            let ciphertext = seal::encrypt(
                &key.derive("chapar archive segments v1"),
                &segment_aad(&me.username, group, known, through, generation),
                &body.encode_to_vec(),
                &mut rand::thread_rng(),
            );
            let reply = conn
                .request(Request::AppendArchive(v1::AppendArchive {
                    group_id: group.as_bytes().to_vec(),
                    from_seq: known,
                    through_seq: through,
                    key_generation: generation,
                    ciphertext,
                }))
                .await;
            known = match reply {
                Ok(_) => through,
                Err(ClientError::Server {
                    code: ErrorCode::Conflict,
                    ..
                }) => {
                    // Another device archived further first; learn where it got to.
                    conflict_position(conn, group).await?.max(known + 1)
                }
                Err(ClientError::Server {
                    code: ErrorCode::NotMember,
                    ..
                }) => {
                    tracing::warn!(%group, "cannot archive a group this device was never in");
                    let last = events.last().map_or(known, |(seq, _)| *seq);
                    forget_through(local, group, last)?;
                    break;
                }
                Err(e) => return Err(e),
            };
        }
    }
    Ok(())
}

/// The archived position of one group, from the server.
async fn conflict_position(conn: &Connection, group: GroupId) -> Result<Seq, ClientError> {
    let Reply::GroupList(list) = conn.request(Request::ListGroups(v1::ListGroups {})).await? else {
        return Err(ClientError::Protocol("expected GroupList".into()));
    };
    Ok(list
        .groups
        .iter()
        .find(|h| h.group_id == group.as_bytes())
        .map_or(0, |h| h.archived_seq))
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

/// Replays the whole account archive into this device's history (a new or recovered device).
/// Resumable: the last segment replayed is remembered, and replaying twice changes nothing.
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
            restored.segments += 1;
            restored.bytes += segment.ciphertext.len() as u64;
            local.transaction(|l| {
                restored.events += replay_segment(l, me, keys, &segment)?;
                l.set_u64(RESTORE_CURSOR, segment.id)
            })?;
        }
    }
    local.set_u64(RESTORE_PENDING, 0)?;
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
        &key.derive("chapar archive segments v1"),
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
        local.insert_chat(
            &Chat {
                group,
                kind: "group".into(),
                name: String::new(),
                peer: None,
                position: 0,
                state: "restored".into(),
                read_seq: 0,
                roster_seen: 0,
            },
            now_ms(),
        )?;
    }
    let mut applied = 0;
    for event in &body.events {
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
