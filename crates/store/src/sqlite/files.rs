//! Files: upload bookkeeping, blob references and garbage collection. A blob row is created
//! with its upload and deleted only when the blob goes; references tie blobs to log entries,
//! and `unreferenced_ms` (set when the last one goes) lets garbage collection find unreferenced
//! blobs by index instead of scanning every blob.

use chapar_types::BlobId;
use chapar_types::limits::{FILE_QUOTA_CHARGE_MIN_BYTES, FILE_UNFINISHED_UPLOADS_PER_ACCOUNT_MAX};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::cache::GroupCache;
use super::ops::{self, dev, is_unique_violation, num};
use super::{backend, sql};
use crate::*;

const UPLOAD_COLUMNS: &str = "blob_id, username, device_id, length, committed, created_ms, \
     updated_ms, expires_ms, completed_ms, unreferenced_ms, \
     (SELECT COUNT(*) FROM blob_refs r WHERE r.blob_id = blobs.blob_id)";

fn upload_from_row(row: &Row<'_>) -> rusqlite::Result<(Vec<u8>, UploadRecord)> {
    let id: Vec<u8> = row.get(0)?;
    Ok((
        id,
        UploadRecord {
            id: BlobId([0; 16]),
            username: row.get(1)?,
            device: chapar_types::DeviceId(row.get::<_, i64>(2)? as u64),
            length: row.get::<_, i64>(3)? as u64,
            committed: row.get::<_, i64>(4)? as u64,
            created_ms: row.get::<_, i64>(5)? as u64,
            updated_ms: row.get::<_, i64>(6)? as u64,
            expires_ms: row.get::<_, i64>(7)? as u64,
            completed_ms: row.get::<_, Option<i64>>(8)?.map(|n| n as u64),
            unreferenced_ms: row.get::<_, Option<i64>>(9)?.map(|n| n as u64),
            references: row.get::<_, i64>(10)? as u64,
        },
    ))
}

fn blob_id(bytes: &[u8]) -> Result<BlobId, StoreError> {
    BlobId::from_slice(bytes).map_err(backend)
}

pub(super) fn create_upload(
    c: &Connection,
    u: &NewUpload,
    quota_bytes: u64,
) -> Result<UploadCreated, StoreError> {
    let (used, unfinished) = usage(c, &u.username)?;
    if unfinished >= FILE_UNFINISHED_UPLOADS_PER_ACCOUNT_MAX {
        return Ok(UploadCreated::TooManyUnfinished { unfinished });
    }
    if used.saturating_add(quota_charge(u.length)) > quota_bytes {
        return Ok(UploadCreated::QuotaExceeded { used_bytes: used });
    }
    c.prepare_cached(
        "INSERT INTO blobs (blob_id, username, device_id, length, committed, created_ms,
                            updated_ms, expires_ms)
         VALUES (?1, ?2, ?3, ?4, 0, ?5, ?5, ?6)",
    )
    .map_err(sql)?
    .execute(params![
        u.id.as_bytes(),
        u.username,
        dev(u.device),
        num(u.length)?,
        num(u.now_ms)?,
        num(u.expires_ms)?,
    ])
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::Conflict { position: 0 }
        } else {
            sql(e)
        }
    })?;
    Ok(UploadCreated::Created)
}

pub(super) fn upload(c: &Connection, id: BlobId) -> Result<Option<UploadRecord>, StoreError> {
    let found = c
        .prepare_cached(&format!(
            "SELECT {UPLOAD_COLUMNS} FROM blobs WHERE blob_id = ?1"
        ))
        .map_err(sql)?
        .query_row([id.as_bytes()], upload_from_row)
        .optional()
        .map_err(sql)?;
    found
        .map(|(bytes, record)| {
            Ok(UploadRecord {
                id: blob_id(&bytes)?,
                ..record
            })
        })
        .transpose()
}

pub(super) fn commit_upload(
    c: &Connection,
    id: BlobId,
    from: u64,
    to: u64,
    now_ms: u64,
    expires_ms: u64,
) -> Result<UploadCommitted, StoreError> {
    let changed = c
        .prepare_cached(
            "UPDATE blobs SET committed = ?3, updated_ms = ?4, expires_ms = ?5
             WHERE blob_id = ?1 AND committed = ?2 AND completed_ms IS NULL AND ?3 <= length",
        )
        .map_err(sql)?
        .execute(params![
            id.as_bytes(),
            num(from)?,
            num(to)?,
            num(now_ms)?,
            num(expires_ms)?
        ])
        .map_err(sql)?;
    let Some(record) = upload(c, id)? else {
        return Ok(UploadCommitted::NotFound);
    };
    if changed == 1 {
        return Ok(UploadCommitted::Committed(record));
    }
    if record.committed == from && !record.is_complete() {
        // Still at `from`, so the only reason left is a length past the declared one.
        return Err(StoreError::Backend(format!(
            "commit to {to} past the declared length {}",
            record.length
        )));
    }
    Ok(UploadCommitted::OffsetMoved(record))
}

pub(super) fn complete_upload(
    c: &Connection,
    id: BlobId,
    now_ms: u64,
) -> Result<Option<UploadRecord>, StoreError> {
    c.prepare_cached(
        "UPDATE blobs SET completed_ms = ?2, updated_ms = ?2,
           unreferenced_ms = CASE WHEN EXISTS (SELECT 1 FROM blob_refs r WHERE r.blob_id = ?1)
                             THEN NULL ELSE ?2 END
         WHERE blob_id = ?1 AND committed = length AND completed_ms IS NULL",
    )
    .map_err(sql)?
    .execute(params![id.as_bytes(), num(now_ms)?])
    .map_err(sql)?;
    upload(c, id)
}

pub(super) fn delete_upload(
    c: &Connection,
    id: BlobId,
    username: &str,
) -> Result<UploadDeleted, StoreError> {
    let Some(record) = upload(c, id)? else {
        return Ok(UploadDeleted::NotFound);
    };
    if record.username != username {
        return Ok(UploadDeleted::NotFound);
    }
    if record.references > 0 {
        return Ok(UploadDeleted::Referenced);
    }
    c.prepare_cached("DELETE FROM blobs WHERE blob_id = ?1")
        .map_err(sql)?
        .execute([id.as_bytes()])
        .map_err(sql)?;
    Ok(UploadDeleted::Deleted)
}

/// What a blob of `length` bytes counts against its account's quota.
fn quota_charge(length: u64) -> u64 {
    length.max(FILE_QUOTA_CHARGE_MIN_BYTES)
}

/// The account's storage charge (each blob at least [`quota_charge`]) and its unfinished
/// uploads: running totals the schema's triggers keep.
fn usage(c: &Connection, username: &str) -> Result<(u64, u64), StoreError> {
    let found = c
        .prepare_cached("SELECT bytes, unfinished FROM file_usage WHERE username = ?1")
        .map_err(sql)?
        .query_row([username], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
        })
        .optional()
        .map_err(sql)?;
    let (bytes, unfinished) = found.unwrap_or((0, 0));
    Ok((bytes.max(0) as u64, unfinished.max(0) as u64))
}

pub(super) fn file_usage(c: &Connection, username: &str) -> Result<u64, StoreError> {
    usage(c, username).map(|(bytes, _)| bytes)
}

pub(super) fn append_referencing(
    c: &Connection,
    cache: &mut GroupCache,
    append: Append,
    refs: &BlobRefs,
) -> Result<Appended, StoreError> {
    // Check before appending: a refused message must leave no trace, in the log or the cache.
    for id in &refs.add {
        let complete = c
            .prepare_cached("SELECT 1 FROM blobs WHERE blob_id = ?1 AND completed_ms IS NOT NULL")
            .map_err(sql)?
            .query_row([id.as_bytes()], |_| Ok(()))
            .optional()
            .map_err(sql)?;
        if complete.is_none() {
            return Err(StoreError::UnknownBlob(*id));
        }
    }
    let (group, sender, now_ms) = (append.group, append.sender, append.now_ms);
    let appended = ops::append(c, cache, append)?;
    if appended.duplicate {
        return Ok(appended);
    }
    let result = record_references(c, group, sender, appended.seq, now_ms, refs);
    if result.is_err() {
        // The append's changes are rolled back with this job; the writer's cache must not
        // keep them.
        cache.clear();
    }
    result.map(|()| appended)
}

fn record_references(
    c: &Connection,
    group: chapar_types::GroupId,
    sender: chapar_types::DeviceId,
    seq: u64,
    now_ms: u64,
    refs: &BlobRefs,
) -> Result<(), StoreError> {
    let username: String = c
        .prepare_cached("SELECT username FROM devices WHERE device_id = ?1")
        .map_err(sql)?
        .query_row([dev(sender)], |r| r.get(0))
        .map_err(sql)?;
    // Only the deleted entry's own reference, and only if the sender's account made it: the
    // same blob in another message of this chat (sent twice, or forwarded by anyone) stays.
    let drop: &[BlobId] = if refs.deleted_seq == 0 {
        &[]
    } else {
        &refs.drop
    };
    for id in drop {
        let dropped = c
            .prepare_cached(
                "DELETE FROM blob_refs
                 WHERE blob_id = ?1 AND group_id = ?2 AND seq = ?3 AND username = ?4",
            )
            .map_err(sql)?
            .execute(params![
                id.as_bytes(),
                group.as_bytes(),
                num(refs.deleted_seq)?,
                username
            ])
            .map_err(sql)?;
        if dropped == 0 {
            continue;
        }
        c.prepare_cached(
            "UPDATE blobs SET unreferenced_ms = ?2
             WHERE blob_id = ?1 AND completed_ms IS NOT NULL AND unreferenced_ms IS NULL
               AND NOT EXISTS (SELECT 1 FROM blob_refs r WHERE r.blob_id = ?1)",
        )
        .map_err(sql)?
        .execute(params![id.as_bytes(), num(now_ms)?])
        .map_err(sql)?;
    }
    for id in &refs.add {
        c.prepare_cached(
            "INSERT OR IGNORE INTO blob_refs (blob_id, group_id, seq, username)
             VALUES (?1, ?2, ?3, ?4)",
        )
        .map_err(sql)?
        .execute(params![
            id.as_bytes(),
            group.as_bytes(),
            num(seq)?,
            username
        ])
        .map_err(sql)?;
        c.prepare_cached("UPDATE blobs SET unreferenced_ms = NULL WHERE blob_id = ?1")
            .map_err(sql)?
            .execute([id.as_bytes()])
            .map_err(sql)?;
    }
    Ok(())
}

pub(super) fn collect_garbage(
    c: &Connection,
    now_ms: u64,
    unreferenced_before_ms: u64,
    limit: u32,
) -> Result<Vec<Garbage>, StoreError> {
    let mut found = Vec::new();
    // Two indexed queries rather than one OR, so each uses its partial index.
    for (query, bound, complete) in [
        (
            "SELECT blob_id FROM blobs WHERE unreferenced_ms IS NOT NULL AND unreferenced_ms < ?1
             LIMIT ?2",
            unreferenced_before_ms,
            true,
        ),
        (
            "SELECT blob_id FROM blobs WHERE completed_ms IS NULL AND expires_ms <= ?1 LIMIT ?2",
            now_ms,
            false,
        ),
    ] {
        let left = i64::from(limit) - found.len() as i64;
        if left <= 0 {
            break;
        }
        let ids = c
            .prepare_cached(query)
            .map_err(sql)?
            .query_map(params![num(bound)?, left], |r| r.get::<_, Vec<u8>>(0))
            .map_err(sql)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql)?;
        for id in ids {
            found.push(Garbage {
                id: blob_id(&id)?,
                complete,
            });
        }
    }
    let mut delete = c
        .prepare_cached("DELETE FROM blobs WHERE blob_id = ?1")
        .map_err(sql)?;
    for garbage in &found {
        delete.execute([garbage.id.as_bytes()]).map_err(sql)?;
    }
    Ok(found)
}

pub(super) fn known_blobs(c: &Connection, ids: &[BlobId]) -> Result<Vec<BlobId>, StoreError> {
    let mut stmt = c
        .prepare_cached("SELECT 1 FROM blobs WHERE blob_id = ?1")
        .map_err(sql)?;
    let mut known = Vec::new();
    for id in ids {
        if stmt
            .query_row([id.as_bytes()], |_| Ok(()))
            .optional()
            .map_err(sql)?
            .is_some()
        {
            known.push(*id);
        }
    }
    Ok(known)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_usage_triggers_charge_what_the_quota_charges() {
        assert_eq!(
            super::super::schema::TRIGGER_CHARGE_MIN_BYTES,
            super::FILE_QUOTA_CHARGE_MIN_BYTES
        );
    }
}
