//! Files in PostgreSQL: upload bookkeeping, blob references and garbage collection, as in the
//! SQLite backend, with an account's usage summed from its (indexed) blob rows inside the
//! serializable transaction instead of kept by triggers: two uploads racing for the last of
//! a quota cannot both pass.

use chapar_types::limits::{FILE_QUOTA_CHARGE_MIN_BYTES, FILE_UNFINISHED_UPLOADS_PER_ACCOUNT_MAX};
use chapar_types::{BlobId, DeviceId, GroupId};
use tokio_postgres::Row;

use super::{Failure, Tx, backend, dev, exec, num, one, opt, rows, to_dev, unique_or, unum};
use crate::*;

const UPLOAD_COLUMNS: &str = "blob_id, username, device_id, length, committed, created_ms, \
     updated_ms, expires_ms, completed_ms, unreferenced_ms, \
     (SELECT COUNT(*) FROM blob_refs r WHERE r.blob_id = blobs.blob_id)";

fn upload_from_row(row: &Row) -> Result<UploadRecord, Failure> {
    Ok(UploadRecord {
        id: blob_id(row.get(0))?,
        username: row.get(1),
        device: to_dev(row.get(2)),
        length: unum(row.get(3)),
        committed: unum(row.get(4)),
        created_ms: unum(row.get(5)),
        updated_ms: unum(row.get(6)),
        expires_ms: unum(row.get(7)),
        completed_ms: row.get::<_, Option<i64>>(8).map(unum),
        unreferenced_ms: row.get::<_, Option<i64>>(9).map(unum),
        references: unum(row.get(10)),
    })
}

fn blob_id(bytes: &[u8]) -> Result<BlobId, Failure> {
    BlobId::from_slice(bytes).map_err(backend)
}

pub(super) async fn create_upload(
    tx: &Tx<'_>,
    u: &NewUpload,
    quota_bytes: u64,
) -> Result<UploadCreated, Failure> {
    let (used, unfinished) = usage(tx, &u.username).await?;
    if unfinished >= FILE_UNFINISHED_UPLOADS_PER_ACCOUNT_MAX {
        return Ok(UploadCreated::TooManyUnfinished { unfinished });
    }
    if used.saturating_add(quota_charge(u.length)) > quota_bytes {
        return Ok(UploadCreated::QuotaExceeded { used_bytes: used });
    }
    let statement = tx
        .prepare_cached(
            "INSERT INTO blobs (blob_id, username, device_id, length, committed, created_ms,
                                updated_ms, expires_ms)
             VALUES ($1, $2, $3, $4, 0, $5, $5, $6)",
        )
        .await
        .map_err(super::pg)?;
    tx.execute(
        &statement,
        &[
            &u.id.as_bytes(),
            &u.username,
            &dev(u.device),
            &num(u.length)?,
            &num(u.now_ms)?,
            &num(u.expires_ms)?,
        ],
    )
    .await
    .map_err(|e| unique_or(e, StoreError::Conflict { position: 0 }))?;
    Ok(UploadCreated::Created)
}

pub(super) async fn upload(tx: &Tx<'_>, id: BlobId) -> Result<Option<UploadRecord>, Failure> {
    opt(
        tx,
        &format!("SELECT {UPLOAD_COLUMNS} FROM blobs WHERE blob_id = $1"),
        &[&id.as_bytes()],
    )
    .await?
    .as_ref()
    .map(upload_from_row)
    .transpose()
}

pub(super) async fn commit_upload(
    tx: &Tx<'_>,
    id: BlobId,
    from: u64,
    to: u64,
    now_ms: u64,
    expires_ms: u64,
) -> Result<UploadCommitted, Failure> {
    let changed = exec(
        tx,
        "UPDATE blobs SET committed = $3, updated_ms = $4, expires_ms = $5
         WHERE blob_id = $1 AND committed = $2 AND completed_ms IS NULL AND $3 <= length",
        &[
            &id.as_bytes(),
            &num(from)?,
            &num(to)?,
            &num(now_ms)?,
            &num(expires_ms)?,
        ],
    )
    .await?;
    let Some(record) = upload(tx, id).await? else {
        return Ok(UploadCommitted::NotFound);
    };
    if changed == 1 {
        return Ok(UploadCommitted::Committed(record));
    }
    if record.committed == from && !record.is_complete() {
        // Still at `from`, so the only reason left is a length past the declared one.
        return Err(backend(format!(
            "commit to {to} past the declared length {}",
            record.length
        )));
    }
    Ok(UploadCommitted::OffsetMoved(record))
}

pub(super) async fn complete_upload(
    tx: &Tx<'_>,
    id: BlobId,
    now_ms: u64,
) -> Result<Option<UploadRecord>, Failure> {
    exec(
        tx,
        "UPDATE blobs SET completed_ms = $2::BIGINT, updated_ms = $2::BIGINT,
           unreferenced_ms = CASE WHEN EXISTS (SELECT 1 FROM blob_refs r WHERE r.blob_id = $1)
                             THEN NULL ELSE $2::BIGINT END
         WHERE blob_id = $1 AND committed = length AND completed_ms IS NULL",
        &[&id.as_bytes(), &num(now_ms)?],
    )
    .await?;
    upload(tx, id).await
}

pub(super) async fn delete_upload(
    tx: &Tx<'_>,
    id: BlobId,
    username: &str,
) -> Result<UploadDeleted, Failure> {
    let Some(record) = upload(tx, id).await? else {
        return Ok(UploadDeleted::NotFound);
    };
    if record.username != username {
        return Ok(UploadDeleted::NotFound);
    }
    if record.references > 0 {
        return Ok(UploadDeleted::Referenced);
    }
    exec(
        tx,
        "DELETE FROM blobs WHERE blob_id = $1",
        &[&id.as_bytes()],
    )
    .await?;
    Ok(UploadDeleted::Deleted)
}

/// What a blob of `length` bytes counts against its account's quota.
fn quota_charge(length: u64) -> u64 {
    length.max(FILE_QUOTA_CHARGE_MIN_BYTES)
}

/// The account's storage charge (each blob at least [`quota_charge`]) and its unfinished
/// uploads.
pub(super) async fn usage(tx: &Tx<'_>, username: &str) -> Result<(u64, u64), Failure> {
    let row = one(
        tx,
        "SELECT COALESCE(SUM(GREATEST(length, $2)), 0)::BIGINT,
                COUNT(*) FILTER (WHERE completed_ms IS NULL)
           FROM blobs WHERE username = $1",
        &[&username, &num(FILE_QUOTA_CHARGE_MIN_BYTES)?],
    )
    .await?;
    Ok((unum(row.get(0)), unum(row.get(1))))
}

pub(super) async fn append_referencing(
    tx: &Tx<'_>,
    append: &Append,
    refs: &BlobRefs,
) -> Result<Appended, Failure> {
    // Check before appending: a refused message must leave no trace (the transaction would
    // roll it back anyway; checking first keeps the answer the same as SQLite's).
    for id in &refs.add {
        if opt(
            tx,
            "SELECT 1 FROM blobs WHERE blob_id = $1 AND completed_ms IS NOT NULL",
            &[&id.as_bytes()],
        )
        .await?
        .is_none()
        {
            return Err(StoreError::UnknownBlob(*id).into());
        }
    }
    let appended = super::log::append(tx, append).await?;
    if appended.duplicate {
        return Ok(appended);
    }
    record_references(
        tx,
        append.group,
        append.sender,
        appended.seq,
        append.now_ms,
        refs,
    )
    .await?;
    Ok(appended)
}

async fn record_references(
    tx: &Tx<'_>,
    group: GroupId,
    sender: DeviceId,
    seq: u64,
    now_ms: u64,
    refs: &BlobRefs,
) -> Result<(), Failure> {
    let username: String = one(
        tx,
        "SELECT username FROM devices WHERE device_id = $1",
        &[&dev(sender)],
    )
    .await?
    .get(0);
    let g = group.as_bytes();
    // Only the deleted entry's own reference, and only if the sender's account made it: the
    // same blob in another message of this chat (sent twice, or forwarded by anyone) stays.
    let drop: &[BlobId] = if refs.deleted_seq == 0 {
        &[]
    } else {
        &refs.drop
    };
    for id in drop {
        let dropped = exec(
            tx,
            "DELETE FROM blob_refs
             WHERE blob_id = $1 AND group_id = $2 AND seq = $3 AND username = $4",
            &[&id.as_bytes(), &g, &num(refs.deleted_seq)?, &username],
        )
        .await?;
        if dropped == 0 {
            continue;
        }
        exec(
            tx,
            "UPDATE blobs SET unreferenced_ms = $2
             WHERE blob_id = $1 AND completed_ms IS NOT NULL AND unreferenced_ms IS NULL
               AND NOT EXISTS (SELECT 1 FROM blob_refs r WHERE r.blob_id = $1)",
            &[&id.as_bytes(), &num(now_ms)?],
        )
        .await?;
    }
    for id in &refs.add {
        exec(
            tx,
            "INSERT INTO blob_refs (blob_id, group_id, seq, username) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
            &[&id.as_bytes(), &g, &num(seq)?, &username],
        )
        .await?;
        exec(
            tx,
            "UPDATE blobs SET unreferenced_ms = NULL WHERE blob_id = $1",
            &[&id.as_bytes()],
        )
        .await?;
    }
    Ok(())
}

pub(super) async fn collect_garbage(
    tx: &Tx<'_>,
    now_ms: u64,
    unreferenced_before_ms: u64,
    limit: u32,
) -> Result<Vec<Garbage>, Failure> {
    let mut found = Vec::new();
    // Two indexed queries rather than one OR, so each uses its partial index.
    for (query, bound, complete) in [
        (
            "SELECT blob_id FROM blobs WHERE unreferenced_ms IS NOT NULL AND unreferenced_ms < $1
             LIMIT $2",
            unreferenced_before_ms,
            true,
        ),
        (
            "SELECT blob_id FROM blobs WHERE completed_ms IS NULL AND expires_ms <= $1 LIMIT $2",
            now_ms,
            false,
        ),
    ] {
        let left = i64::from(limit) - found.len() as i64;
        if left <= 0 {
            break;
        }
        for row in rows(tx, query, &[&num(bound)?, &left]).await? {
            found.push(Garbage {
                id: blob_id(row.get(0))?,
                complete,
            });
        }
    }
    for garbage in &found {
        exec(
            tx,
            "DELETE FROM blobs WHERE blob_id = $1",
            &[&garbage.id.as_bytes()],
        )
        .await?;
    }
    Ok(found)
}

pub(super) async fn known_blobs(tx: &Tx<'_>, ids: &[BlobId]) -> Result<Vec<BlobId>, Failure> {
    let mut known = Vec::new();
    for id in ids {
        if opt(
            tx,
            "SELECT 1 FROM blobs WHERE blob_id = $1",
            &[&id.as_bytes()],
        )
        .await?
        .is_some()
        {
            known.push(*id);
        }
    }
    Ok(known)
}
