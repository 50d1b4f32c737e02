//! The rendezvous for linking a device: a sealed request filed under an id derived from the
//! link code, the sealed approval, and whether the approving device completed the link. All of
//! it is opaque here and expires after `LINK_TTL_SECS`.

use chapar_types::limits::LINKS_PENDING_MAX;
use rusqlite::{Connection, OptionalExtension, params};

use super::ops::{is_unique_violation, num};
use super::sql;
use crate::*;

pub(super) fn create_link(
    c: &Connection,
    link_id: &[u8],
    request: &[u8],
    now_ms: u64,
    expires_ms: u64,
) -> Result<(), StoreError> {
    c.prepare_cached("DELETE FROM links WHERE expires_ms <= ?1")
        .map_err(sql)?
        .execute([num(now_ms)?])
        .map_err(sql)?;
    let pending: i64 = c
        .query_row("SELECT COUNT(*) FROM links", [], |r| r.get(0))
        .map_err(sql)?;
    if pending as usize >= LINKS_PENDING_MAX {
        return Err(StoreError::TooManyLinks);
    }
    c.execute(
        "INSERT INTO links (link_id, request, expires_ms) VALUES (?1, ?2, ?3)",
        params![link_id, request, num(expires_ms)?],
    )
    .map_err(|e| {
        // A 128-bit id derived from a fresh random code: a collision is someone replaying.
        if is_unique_violation(&e) {
            StoreError::Conflict { position: 0 }
        } else {
            sql(e)
        }
    })?;
    Ok(())
}

pub(super) fn link(c: &Connection, link_id: &[u8], now_ms: u64) -> Result<LinkRecord, StoreError> {
    c.query_row(
        "SELECT request, approval, completed FROM links WHERE link_id = ?1 AND expires_ms > ?2",
        params![link_id, num(now_ms)?],
        |r| {
            Ok(LinkRecord {
                sealed_request: r.get(0)?,
                sealed_approval: r.get(1)?,
                completed: r.get(2)?,
            })
        },
    )
    .optional()
    .map_err(sql)?
    .ok_or(StoreError::LinkNotFound)
}

pub(super) fn approve_link(
    c: &Connection,
    link_id: &[u8],
    approval: &[u8],
    now_ms: u64,
) -> Result<(), StoreError> {
    let existing = link(c, link_id, now_ms)?;
    if existing.sealed_approval.is_some() {
        return Err(StoreError::Conflict { position: 0 });
    }
    c.execute(
        "UPDATE links SET approval = ?2 WHERE link_id = ?1",
        params![link_id, approval],
    )
    .map_err(sql)?;
    Ok(())
}

pub(super) fn complete_link(c: &Connection, link_id: &[u8], now_ms: u64) -> Result<(), StoreError> {
    if link(c, link_id, now_ms)?.sealed_approval.is_none() {
        // Completing a link nobody approved makes no sense.
        return Err(StoreError::LinkNotFound);
    }
    c.execute(
        "UPDATE links SET completed = 1 WHERE link_id = ?1",
        [link_id],
    )
    .map_err(sql)?;
    Ok(())
}
