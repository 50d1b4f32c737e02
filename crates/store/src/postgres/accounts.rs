//! Accounts in PostgreSQL: registration, devices (adding, logging in, revocation, each moving
//! the account's roster version past every other account's), the link rendezvous and the
//! recovery record (key packages are in `key_packages`). Every function runs inside the caller's
//! transaction; writers inside a serializable one.

use chapar_types::DeviceId;
use chapar_types::limits::{DEVICES_PER_ACCOUNT_MAX, LINKS_PENDING_MAX};
use tokio_postgres::Row;

use super::key_packages::add_key_packages;
use super::{Failure, Tx, dev, exec, num, one, opt, rows, to_dev, unique_or, unum};
use crate::*;

const DEVICE_COLUMNS: &str = "device_id, username, device_key, account_signature, created_ms, \
                              revoked_ms, sealed_name, last_seen_ms, revocation_signature";

fn device_from_row(row: &Row) -> DeviceRecord {
    DeviceRecord {
        device: to_dev(row.get(0)),
        username: row.get(1),
        device_key: row.get(2),
        account_signature: row.get(3),
        created_ms: unum(row.get(4)),
        revoked_ms: row.get::<_, Option<i64>>(5).map(unum),
        sealed_name: row.get(6),
        last_seen_ms: row.get::<_, Option<i64>>(7).map(unum),
        revocation_signature: row.get(8),
    }
}

pub(super) async fn create_account(tx: &Tx<'_>, a: &NewAccount) -> Result<(), Failure> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO accounts (username, account_key, created_ms) VALUES ($1, $2, $3)",
        )
        .await
        .map_err(super::pg)?;
    tx.execute(
        &stmt,
        &[&a.username, &a.account_key, &num(a.device.created_ms)?],
    )
    .await
    .map_err(|e| unique_or(e, StoreError::UsernameTaken))?;
    insert_device(tx, &a.device).await?;
    add_key_packages(
        tx,
        a.device.device,
        &a.key_packages,
        Some(&a.last_resort_key_package),
    )
    .await?;
    Ok(())
}

async fn insert_device(tx: &Tx<'_>, d: &DeviceRecord) -> Result<(), Failure> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO devices (device_id, username, device_key, account_signature, created_ms,
                                  sealed_name, last_seen_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .await
        .map_err(super::pg)?;
    let last_seen = d.last_seen_ms.map(num).transpose()?;
    tx.execute(
        &stmt,
        &[
            &dev(d.device),
            &d.username,
            &d.device_key,
            &d.account_signature,
            &num(d.created_ms)?,
            &d.sealed_name,
            &last_seen,
        ],
    )
    .await
    .map_err(|e| unique_or(e, StoreError::DeviceExists))?;
    Ok(())
}

pub(super) async fn account(tx: &Tx<'_>, username: &str) -> Result<Option<AccountRecord>, Failure> {
    let Some(row) = opt(
        tx,
        "SELECT account_key FROM accounts WHERE username = $1",
        &[&username],
    )
    .await?
    else {
        return Ok(None);
    };
    let devices = rows(
        tx,
        &format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE username = $1 ORDER BY created_ms, device_id"
        ),
        &[&username],
    )
    .await?;
    Ok(Some(AccountRecord {
        username: username.to_owned(),
        account_key: row.get(0),
        devices: devices.iter().map(device_from_row).collect(),
    }))
}

pub(super) async fn device(tx: &Tx<'_>, device: DeviceId) -> Result<Option<DeviceRecord>, Failure> {
    let row = opt(
        tx,
        &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE device_id = $1"),
        &[&dev(device)],
    )
    .await?;
    Ok(row.as_ref().map(device_from_row))
}

/// The account that owns `device`, if the device exists.
pub(super) async fn owner(tx: &Tx<'_>, device: DeviceId) -> Result<Option<String>, Failure> {
    let row = opt(
        tx,
        "SELECT username FROM devices WHERE device_id = $1",
        &[&dev(device)],
    )
    .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Gives `username` a roster version above every account's. Serializable: two accounts
/// changing at once cannot both take the same one.
async fn bump_roster_version(tx: &Tx<'_>, username: &str) -> Result<(), Failure> {
    exec(
        tx,
        "UPDATE accounts SET roster_version =
           (SELECT COALESCE(MAX(roster_version), 0) + 1 FROM accounts) WHERE username = $1",
        &[&username],
    )
    .await?;
    Ok(())
}

pub(super) async fn add_device(tx: &Tx<'_>, new: &NewDevice) -> Result<(), Failure> {
    let username = &new.device.username;
    if opt(
        tx,
        "SELECT 1 FROM accounts WHERE username = $1",
        &[username],
    )
    .await?
    .is_none()
    {
        return Err(StoreError::UnknownUser.into());
    }
    if new.revoke_others {
        let others = rows(
            tx,
            "SELECT device_id FROM devices WHERE username = $1 AND revoked_ms IS NULL",
            &[username],
        )
        .await?;
        for other in others {
            revoke(tx, to_dev(other.get(0)), new.device.created_ms).await?;
        }
    }
    let active: i64 = one(
        tx,
        "SELECT COUNT(*) FROM devices WHERE username = $1 AND revoked_ms IS NULL",
        &[username],
    )
    .await?
    .get(0);
    if unum(active) as usize >= DEVICES_PER_ACCOUNT_MAX {
        return Err(StoreError::TooManyDevices.into());
    }
    insert_device(tx, &new.device).await?;
    add_key_packages(
        tx,
        new.device.device,
        &new.key_packages,
        Some(&new.last_resort_key_package),
    )
    .await?;
    bump_roster_version(tx, username).await
}

pub(super) async fn revoke_device(
    tx: &Tx<'_>,
    device: DeviceId,
    now_ms: u64,
) -> Result<(), Failure> {
    let username = owner(tx, device)
        .await?
        .ok_or(StoreError::UnknownDevice(device))?;
    revoke(tx, device, now_ms).await?;
    bump_roster_version(tx, &username).await
}

pub(super) async fn set_revocation_proof(
    tx: &Tx<'_>,
    device: DeviceId,
    signature: &[u8],
) -> Result<(), Failure> {
    exec(
        tx,
        "UPDATE devices SET revocation_signature = $2
         WHERE device_id = $1 AND revoked_ms IS NOT NULL AND revocation_signature IS NULL",
        &[&dev(device), &signature],
    )
    .await?;
    Ok(())
}

/// Marks the device revoked, deletes its key packages and ends its memberships at each group's
/// head: from now on the device can neither log in nor be pushed anything.
async fn revoke(tx: &Tx<'_>, device: DeviceId, now_ms: u64) -> Result<(), Failure> {
    exec(
        tx,
        "UPDATE devices SET revoked_ms = $2 WHERE device_id = $1 AND revoked_ms IS NULL",
        &[&dev(device), &num(now_ms)?],
    )
    .await?;
    exec(
        tx,
        "DELETE FROM key_packages WHERE device_id = $1",
        &[&dev(device)],
    )
    .await?;
    exec(
        tx,
        "UPDATE members SET left_seq =
           (SELECT head_seq FROM groups WHERE groups.group_id = members.group_id)
         WHERE device_id = $1 AND left_seq IS NULL",
        &[&dev(device)],
    )
    .await?;
    Ok(())
}

/// Records a login. A device's first login makes it visible to others (it has key packages
/// now), so its account's roster version moves and the groups add it.
pub(super) async fn touch_device(
    tx: &Tx<'_>,
    device: DeviceId,
    now_ms: u64,
) -> Result<(), Failure> {
    let first = opt(
        tx,
        "SELECT username, last_seen_ms FROM devices WHERE device_id = $1",
        &[&dev(device)],
    )
    .await?;
    exec(
        tx,
        "UPDATE devices SET last_seen_ms = $2 WHERE device_id = $1",
        &[&dev(device), &num(now_ms)?],
    )
    .await?;
    if let Some(row) = first
        && row.get::<_, Option<i64>>(1).is_none()
    {
        bump_roster_version(tx, row.get(0)).await?;
    }
    Ok(())
}

pub(super) async fn create_link(
    tx: &Tx<'_>,
    link_id: &[u8],
    request: &[u8],
    now_ms: u64,
    expires_ms: u64,
) -> Result<(), Failure> {
    exec(
        tx,
        "DELETE FROM links WHERE expires_ms <= $1",
        &[&num(now_ms)?],
    )
    .await?;
    let pending: i64 = one(tx, "SELECT COUNT(*) FROM links", &[]).await?.get(0);
    if unum(pending) as usize >= LINKS_PENDING_MAX {
        return Err(StoreError::TooManyLinks.into());
    }
    let stmt = tx
        .prepare_cached("INSERT INTO links (link_id, request, expires_ms) VALUES ($1, $2, $3)")
        .await
        .map_err(super::pg)?;
    // A 128-bit id derived from a fresh random code: a collision is someone replaying.
    tx.execute(&stmt, &[&link_id, &request, &num(expires_ms)?])
        .await
        .map_err(|e| unique_or(e, StoreError::Conflict { position: 0 }))?;
    Ok(())
}

pub(super) async fn link(tx: &Tx<'_>, link_id: &[u8], now_ms: u64) -> Result<LinkRecord, Failure> {
    let row = opt(
        tx,
        "SELECT request, approval, completed FROM links WHERE link_id = $1 AND expires_ms > $2",
        &[&link_id, &num(now_ms)?],
    )
    .await?
    .ok_or(StoreError::LinkNotFound)?;
    Ok(LinkRecord {
        sealed_request: row.get(0),
        sealed_approval: row.get(1),
        completed: row.get(2),
    })
}

pub(super) async fn approve_link(
    tx: &Tx<'_>,
    link_id: &[u8],
    approval: &[u8],
    now_ms: u64,
) -> Result<(), Failure> {
    if link(tx, link_id, now_ms).await?.sealed_approval.is_some() {
        return Err(StoreError::Conflict { position: 0 }.into());
    }
    exec(
        tx,
        "UPDATE links SET approval = $2 WHERE link_id = $1",
        &[&link_id, &approval],
    )
    .await?;
    Ok(())
}

pub(super) async fn complete_link(tx: &Tx<'_>, link_id: &[u8], now_ms: u64) -> Result<(), Failure> {
    if link(tx, link_id, now_ms).await?.sealed_approval.is_none() {
        // Completing a link nobody approved makes no sense.
        return Err(StoreError::LinkNotFound.into());
    }
    exec(
        tx,
        "UPDATE links SET completed = TRUE WHERE link_id = $1",
        &[&link_id],
    )
    .await?;
    Ok(())
}

pub(super) async fn set_recovery(
    tx: &Tx<'_>,
    username: &str,
    record: &RecoveryRecord,
    expected_auth_key: &[u8],
) -> Result<(), Failure> {
    let current = opt(
        tx,
        "SELECT recovery_auth_key FROM accounts WHERE username = $1",
        &[&username],
    )
    .await?
    .ok_or(StoreError::UnknownUser)?;
    let current: Option<Vec<u8>> = current.get(0);
    if current.unwrap_or_default() != expected_auth_key {
        return Err(StoreError::Conflict { position: 0 }.into());
    }
    exec(
        tx,
        "UPDATE accounts SET recovery_auth_key = $2, recovery_bundle = $3 WHERE username = $1",
        &[&username, &record.auth_key, &record.sealed_bundle],
    )
    .await?;
    Ok(())
}

pub(super) async fn recovery(
    tx: &Tx<'_>,
    username: &str,
) -> Result<Option<RecoveryRecord>, Failure> {
    // Both columns are set together; an account without them has no recovery key.
    let row = opt(
        tx,
        "SELECT recovery_auth_key, recovery_bundle FROM accounts
         WHERE username = $1 AND recovery_auth_key IS NOT NULL AND recovery_bundle IS NOT NULL",
        &[&username],
    )
    .await?;
    Ok(row.map(|r| RecoveryRecord {
        auth_key: r.get(0),
        sealed_bundle: r.get(1),
    }))
}
