//! The SQL behind each [`crate::Store`] method. Writers run inside the writer's savepoint;
//! readers on a pooled reader connection.

use chapar_types::{DeviceId, GroupId, MessageId, Seq};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::cache::GroupCache;
use super::{backend, sql};
use crate::rules::{self, Decision, EarlierEntry};
use crate::*;

// SQLite stores integers as i64; ids and sequence numbers are u64 in the domain. Device ids
// are random 64-bit values, so they round-trip through i64 by bit pattern.
pub(super) fn dev(d: DeviceId) -> i64 {
    d.0 as i64
}

pub(super) fn to_dev(n: i64) -> DeviceId {
    DeviceId(n as u64)
}

/// An ordered number (position, epoch, time, size, cursor) as SQLite's i64, or
/// `OutOfRange`: a value from the network at or past 2^63 must not turn negative and compare
/// before everything.
pub(super) fn num(n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::OutOfRange(n))
}

pub(super) use crate::paging::page_of;

pub(super) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

fn device_from_row(row: &Row<'_>) -> rusqlite::Result<DeviceRecord> {
    Ok(DeviceRecord {
        device: to_dev(row.get(0)?),
        username: row.get(1)?,
        device_key: row.get(2)?,
        account_signature: row.get(3)?,
        created_ms: row.get::<_, i64>(4)? as u64,
        revoked_ms: row.get::<_, Option<i64>>(5)?.map(|n| n as u64),
        sealed_name: row.get(6)?,
        last_seen_ms: row.get::<_, Option<i64>>(7)?.map(|n| n as u64),
        revocation_signature: row.get(8)?,
    })
}

const DEVICE_COLUMNS: &str = "device_id, username, device_key, account_signature, created_ms, \
                              revoked_ms, sealed_name, last_seen_ms, revocation_signature";

pub(super) fn create_account(c: &Connection, a: &NewAccount) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO accounts (username, account_key, created_ms) VALUES (?1, ?2, ?3)",
        params![a.username, a.account_key, num(a.device.created_ms)?],
    )
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::UsernameTaken
        } else {
            sql(e)
        }
    })?;
    insert_device(c, &a.device)?;
    super::key_packages::add_key_packages(
        c,
        a.device.device,
        &a.key_packages,
        Some(&a.last_resort_key_package),
    )?;
    Ok(())
}

pub(super) fn insert_device(c: &Connection, d: &DeviceRecord) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO devices (device_id, username, device_key, account_signature, created_ms, sealed_name, last_seen_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            dev(d.device),
            d.username,
            d.device_key,
            d.account_signature,
            num(d.created_ms)?,
            d.sealed_name,
            d.last_seen_ms.map(num).transpose()?,
        ],
    )
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::DeviceExists
        } else {
            sql(e)
        }
    })?;
    Ok(())
}

pub(super) fn account(c: &Connection, username: &str) -> Result<Option<AccountRecord>, StoreError> {
    let Some(account_key) = c
        .query_row(
            "SELECT account_key FROM accounts WHERE username = ?1",
            [username],
            |r| r.get::<_, Vec<u8>>(0),
        )
        .optional()
        .map_err(sql)?
    else {
        return Ok(None);
    };
    let mut stmt = c
        .prepare_cached(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE username = ?1 ORDER BY created_ms, device_id"
        ))
        .map_err(sql)?;
    let devices = stmt
        .query_map([username], device_from_row)
        .map_err(sql)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql)?;
    Ok(Some(AccountRecord {
        username: username.to_owned(),
        account_key,
        devices,
    }))
}

pub(super) fn device(c: &Connection, device: DeviceId) -> Result<Option<DeviceRecord>, StoreError> {
    c.query_row(
        &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE device_id = ?1"),
        [dev(device)],
        device_from_row,
    )
    .optional()
    .map_err(sql)
}

pub(super) fn create_group(
    c: &Connection,
    group: GroupId,
    creator: DeviceId,
    now_ms: u64,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO groups (group_id, epoch, head_seq, last_proposal_seq, created_ms) VALUES (?1, 0, 0, 0, ?2)",
        params![group.as_bytes(), num(now_ms)?],
    )
    .map_err(|e| if is_unique_violation(&e) { StoreError::GroupExists } else { sql(e) })?;
    c.execute(
        "INSERT INTO members (group_id, device_id, joined_seq) VALUES (?1, ?2, 0)",
        params![group.as_bytes(), dev(creator)],
    )
    .map_err(sql)?;
    Ok(())
}

/// A group's last sequence number, for readers.
fn head_seq(c: &Connection, group: GroupId) -> Result<u64, StoreError> {
    c.prepare_cached("SELECT head_seq FROM groups WHERE group_id = ?1")
        .map_err(sql)?
        .query_row([group.as_bytes()], |r| r.get::<_, i64>(0).map(|n| n as u64))
        .optional()
        .map_err(sql)?
        .ok_or(StoreError::UnknownGroup)
}

pub(super) fn append(
    c: &Connection,
    cache: &mut GroupCache,
    a: Append,
) -> Result<Appended, StoreError> {
    let mut state = cache.get(c, a.group)?;
    let plan = match rules::plan_append(&state, &a, |id| find_duplicate(c, a.group, a.sender, id))?
    {
        Decision::Duplicate(answer) => return Ok(answer),
        Decision::Append(plan) => plan,
    };
    let seq = plan.seq;
    for (device, key_package) in &plan.added {
        add_member(c, a.group, *device, seq)?;
        super::key_packages::use_claim(c, a.sender, *device, key_package.as_ref())?;
    }
    if plan.stores_welcome
        && let AppendKind::Commit {
            welcome: Some(welcome),
            added,
            ..
        } = &a.kind
    {
        store_welcome(c, a.group, seq, a.sender, welcome, added)?;
    }
    for device in &plan.ended {
        c.execute(
            "UPDATE members SET left_seq = ?3 WHERE group_id = ?1 AND device_id = ?2 AND left_seq IS NULL",
            params![a.group.as_bytes(), dev(*device), num(seq)?],
        )
        .map_err(sql)?;
    }
    c.prepare_cached(
        "INSERT INTO log (group_id, seq, kind, epoch, sender, message_id, payload, server_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .map_err(sql)?
    .execute(params![
        a.group.as_bytes(),
        num(seq)?,
        kind_of(&a.kind).as_i64(),
        num(a.epoch)?,
        dev(a.sender),
        plan.message_id.as_ref().map(|m| m.as_bytes()),
        a.payload,
        num(a.now_ms)?,
    ])
    .map_err(sql)?;
    c.prepare_cached(
        "UPDATE groups SET epoch = ?2, head_seq = ?3, last_proposal_seq = ?4 WHERE group_id = ?1",
    )
    .map_err(sql)?
    .execute(params![
        a.group.as_bytes(),
        num(plan.epoch)?,
        num(seq)?,
        num(plan.last_proposal_seq)?
    ])
    .map_err(sql)?;
    // Only now, with every write done, does the writer's view of the group change.
    let answer = plan.apply(&mut state, a.now_ms);
    if plan.changes_members {
        // Accounts may have joined or left the group.
        state.roster_version = super::cache::roster_version(c, a.group)?;
    }
    cache.put(a.group, state);
    Ok(answer)
}

fn kind_of(kind: &AppendKind) -> EntryKind {
    match kind {
        AppendKind::Application { .. } => EntryKind::Application,
        AppendKind::Commit { .. } => EntryKind::Commit,
        AppendKind::Proposal { .. } => EntryKind::Proposal,
    }
}

fn find_duplicate(
    c: &Connection,
    group: GroupId,
    sender: DeviceId,
    message_id: MessageId,
) -> Result<Option<EarlierEntry>, StoreError> {
    c.prepare_cached(
        "SELECT seq, epoch, server_ms FROM log WHERE group_id = ?1 AND sender = ?2 AND message_id = ?3",
    )
    .map_err(sql)?
    .query_row(params![group.as_bytes(), dev(sender), message_id.as_bytes()], |r| {
        Ok(EarlierEntry {
            seq: r.get::<_, i64>(0)? as u64,
            epoch: r.get::<_, i64>(1)? as u64,
            server_ms: r.get::<_, i64>(2)? as u64,
        })
    })
    .optional()
    .map_err(sql)
}

fn add_member(
    c: &Connection,
    group: GroupId,
    device: DeviceId,
    seq: Seq,
) -> Result<(), StoreError> {
    // Only active devices can be added: a revoked device must not come back through a commit.
    let exists = c
        .query_row(
            "SELECT 1 FROM devices WHERE device_id = ?1 AND revoked_ms IS NULL",
            [dev(device)],
            |_| Ok(()),
        )
        .optional()
        .map_err(sql)?;
    if exists.is_none() {
        return Err(StoreError::UnknownDevice(device));
    }
    // A device that left and is added again starts a new membership window.
    c.execute(
        "INSERT INTO members (group_id, device_id, joined_seq) VALUES (?1, ?2, ?3)
         ON CONFLICT (group_id, device_id) DO UPDATE SET joined_seq = ?3, left_seq = NULL",
        params![group.as_bytes(), dev(device), num(seq)?],
    )
    .map_err(sql)?;
    Ok(())
}

fn store_welcome(
    c: &Connection,
    group: GroupId,
    seq: Seq,
    sender: DeviceId,
    welcome: &[u8],
    recipients: &[DeviceId],
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO welcomes (group_id, seq, sender, data) VALUES (?1, ?2, ?3, ?4)",
        params![group.as_bytes(), num(seq)?, dev(sender), welcome],
    )
    .map_err(sql)?;
    let welcome_id = c.last_insert_rowid();
    let mut insert = c
        .prepare_cached("INSERT INTO inbox (device_id, welcome_id) VALUES (?1, ?2)")
        .map_err(sql)?;
    for device in recipients {
        insert
            .execute(params![dev(*device), welcome_id])
            .map_err(sql)?;
    }
    Ok(())
}

pub(super) fn read_log(
    c: &Connection,
    group: GroupId,
    device: DeviceId,
    after: Seq,
    limit: u32,
) -> Result<LogPage, StoreError> {
    let head = head_seq(c, group)?;
    let window = c
        .query_row(
            "SELECT joined_seq, left_seq FROM members WHERE group_id = ?1 AND device_id = ?2",
            params![group.as_bytes(), dev(device)],
            |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, Option<i64>>(1)?.map(|n| n as u64),
                ))
            },
        )
        .optional()
        .map_err(sql)?;
    let Some((joined, left)) = window else {
        return Err(StoreError::NotMember);
    };
    // A member sees entries after the one that added it, up to the one that ended its membership.
    let from = after.max(joined);
    let until = left.unwrap_or(u64::MAX >> 1);
    let mut stmt = c
        .prepare_cached(
            "SELECT seq, kind, epoch, sender, message_id, payload, server_ms FROM log
             WHERE group_id = ?1 AND seq > ?2 AND seq <= ?3 ORDER BY seq LIMIT ?4",
        )
        .map_err(sql)?;
    let entries = stmt
        .query_map(
            params![group.as_bytes(), num(from)?, num(until)?, i64::from(limit)],
            |r| {
                let message_id: Option<Vec<u8>> = r.get(4)?;
                Ok(LogEntry {
                    group,
                    seq: r.get::<_, i64>(0)? as u64,
                    kind: EntryKind::from_i64(r.get(1)?).unwrap_or(EntryKind::Application),
                    epoch: r.get::<_, i64>(2)? as u64,
                    sender: to_dev(r.get(3)?),
                    message_id: message_id.and_then(|m| MessageId::from_slice(&m).ok()),
                    payload: r.get(5)?,
                    server_ms: r.get::<_, i64>(6)? as u64,
                })
            },
        )
        .map_err(sql)?;
    let entries = page_of(entries.map(|row| row.map_err(sql)), |e| e.payload.len())?;
    let last = entries.last().map_or(from, |e| e.seq);
    Ok(LogPage {
        entries,
        head_seq: head,
        membership_ended: left.is_some_and(|l| last >= l),
    })
}

pub(super) fn read_welcomes(
    c: &Connection,
    device: DeviceId,
    after_id: u64,
    limit: u32,
) -> Result<Vec<WelcomeRecord>, StoreError> {
    let mut stmt = c
        .prepare_cached(
            "SELECT inbox.id, w.group_id, w.seq, w.sender, w.data FROM inbox
             JOIN welcomes w ON w.id = inbox.welcome_id
             WHERE inbox.device_id = ?1 AND inbox.id > ?2 ORDER BY inbox.id LIMIT ?3",
        )
        .map_err(sql)?;
    let rows = stmt
        .query_map(
            params![dev(device), num(after_id)?, i64::from(limit)],
            |r| {
                let group: Vec<u8> = r.get(1)?;
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    group,
                    r.get::<_, i64>(2)? as u64,
                    to_dev(r.get(3)?),
                    r.get(4)?,
                ))
            },
        )
        .map_err(sql)?;
    let welcomes = rows.map(|row| {
        let (id, group, seq, sender, welcome) = row.map_err(sql)?;
        Ok(WelcomeRecord {
            id,
            group: GroupId::from_slice(&group).map_err(backend)?,
            seq,
            sender,
            welcome,
        })
    });
    page_of(welcomes, |w| w.welcome.len())
}

pub(super) fn device_groups(
    c: &Connection,
    device: DeviceId,
    after: Option<GroupId>,
    limit: u32,
) -> Result<Vec<GroupHead>, StoreError> {
    // Every group id is 16 bytes, so the empty blob sorts before all of them.
    let after = after.map(|g| g.as_bytes().to_vec()).unwrap_or_default();
    let mut stmt = c
        .prepare_cached(
            "SELECT g.group_id, g.head_seq, m.joined_seq, m.left_seq,
               COALESCE((SELECT ah.through_seq FROM archive_heads ah
                         WHERE ah.username = me.username AND ah.group_id = g.group_id), 0)
             FROM members m
             JOIN groups g ON g.group_id = m.group_id
             JOIN devices me ON me.device_id = m.device_id
             WHERE m.device_id = ?1 AND m.group_id > ?2
             ORDER BY m.group_id
             LIMIT ?3",
        )
        .map_err(sql)?;
    let rows = stmt
        .query_map(params![dev(device), after, limit], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)? as u64,
                r.get::<_, Option<i64>>(3)?.map(|n| n as u64),
                r.get::<_, i64>(4)? as u64,
            ))
        })
        .map_err(sql)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql)?;
    rows.into_iter()
        .map(|(group, head_seq, joined_seq, left_seq, archived_seq)| {
            let group = GroupId::from_slice(&group).map_err(backend)?;
            Ok(GroupHead {
                group,
                head_seq,
                joined_seq,
                left_seq,
                archived_seq,
                roster_version: super::cache::roster_version(c, group)?,
            })
        })
        .collect()
}
