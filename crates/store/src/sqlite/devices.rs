//! A device's life after registration: added to its account by another device (or by
//! recovery), logging in, and revocation. Each change to an account's active devices moves its
//! roster version past every other account's, so the groups it is in notice (see
//! `ops::device_groups`).

use chapar_types::DeviceId;
use chapar_types::limits::DEVICES_PER_ACCOUNT_MAX;
use rusqlite::{Connection, OptionalExtension, params};

use super::cache::GroupCache;
use super::key_packages::add_key_packages;
use super::ops::{dev, insert_device, num};
use super::sql;
use crate::*;

/// Gives `username` a roster version above every account's.
fn bump_roster_version(c: &Connection, username: &str) -> Result<(), StoreError> {
    c.prepare_cached(
        "UPDATE accounts SET roster_version =
           (SELECT COALESCE(MAX(roster_version), 0) + 1 FROM accounts) WHERE username = ?1",
    )
    .map_err(sql)?
    .execute([username])
    .map_err(sql)?;
    Ok(())
}

pub(super) fn add_device(
    c: &Connection,
    cache: &mut GroupCache,
    new: &NewDevice,
) -> Result<(), StoreError> {
    let username = &new.device.username;
    let exists = c
        .query_row(
            "SELECT 1 FROM accounts WHERE username = ?1",
            [username],
            |_| Ok(()),
        )
        .optional()
        .map_err(sql)?;
    if exists.is_none() {
        return Err(StoreError::UnknownUser);
    }
    if new.revoke_others {
        let others: Vec<i64> = c
            .prepare("SELECT device_id FROM devices WHERE username = ?1 AND revoked_ms IS NULL")
            .map_err(sql)?
            .query_map([username], |r| r.get(0))
            .map_err(sql)?
            .collect::<Result<_, _>>()
            .map_err(sql)?;
        for other in others {
            revoke(c, cache, DeviceId(other as u64), new.device.created_ms)?;
        }
    }
    let active: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM devices WHERE username = ?1 AND revoked_ms IS NULL",
            [username],
            |r| r.get(0),
        )
        .map_err(sql)?;
    if active as usize >= DEVICES_PER_ACCOUNT_MAX {
        return Err(StoreError::TooManyDevices);
    }
    insert_device(c, &new.device)?;
    // Groups with a member of this account have a new roster version.
    cache.clear();
    add_key_packages(
        c,
        new.device.device,
        &new.key_packages,
        Some(&new.last_resort_key_package),
    )?;
    bump_roster_version(c, username)
}

pub(super) fn revoke_device(
    c: &Connection,
    cache: &mut GroupCache,
    device: DeviceId,
    now_ms: u64,
) -> Result<(), StoreError> {
    let username: Option<String> = c
        .query_row(
            "SELECT username FROM devices WHERE device_id = ?1",
            [dev(device)],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql)?;
    let Some(username) = username else {
        return Err(StoreError::UnknownDevice(device));
    };
    revoke(c, cache, device, now_ms)?;
    bump_roster_version(c, &username)
}

pub(super) fn set_revocation_proof(
    c: &Connection,
    device: DeviceId,
    signature: &[u8],
) -> Result<(), StoreError> {
    c.execute(
        "UPDATE devices SET revocation_signature = ?2
         WHERE device_id = ?1 AND revoked_ms IS NOT NULL AND revocation_signature IS NULL",
        params![dev(device), signature],
    )
    .map_err(sql)?;
    Ok(())
}

/// Marks the device revoked, deletes its key packages and ends its memberships at each group's
/// head: from now on the device can neither log in nor be pushed anything.
fn revoke(
    c: &Connection,
    cache: &mut GroupCache,
    device: DeviceId,
    now_ms: u64,
) -> Result<(), StoreError> {
    c.execute(
        "UPDATE devices SET revoked_ms = ?2 WHERE device_id = ?1 AND revoked_ms IS NULL",
        params![dev(device), num(now_ms)?],
    )
    .map_err(sql)?;
    c.execute(
        "DELETE FROM key_packages WHERE device_id = ?1",
        [dev(device)],
    )
    .map_err(sql)?;
    c.execute(
        "UPDATE members SET left_seq =
           (SELECT head_seq FROM groups WHERE groups.group_id = members.group_id)
         WHERE device_id = ?1 AND left_seq IS NULL",
        [dev(device)],
    )
    .map_err(sql)?;
    // The writer's cache lists current members; revocation is rare, so start it over.
    cache.clear();
    Ok(())
}

/// Records a login. A device's first login makes it visible to others (it has key packages
/// now), so its account's roster version moves and the groups add it.
pub(super) fn touch_device(
    c: &Connection,
    cache: &mut GroupCache,
    device: DeviceId,
    now_ms: u64,
) -> Result<(), StoreError> {
    let first: Option<(String, Option<i64>)> = c
        .prepare_cached("SELECT username, last_seen_ms FROM devices WHERE device_id = ?1")
        .map_err(sql)?
        .query_row([dev(device)], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(sql)?;
    c.prepare_cached("UPDATE devices SET last_seen_ms = ?2 WHERE device_id = ?1")
        .map_err(sql)?
        .execute(params![dev(device), num(now_ms)?])
        .map_err(sql)?;
    if let Some((username, None)) = first {
        cache.clear();
        bump_roster_version(c, &username)?;
    }
    Ok(())
}
