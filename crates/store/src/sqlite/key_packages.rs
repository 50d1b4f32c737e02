//! Key packages in SQLite: adding (within the per-device count and the account's byte
//! quota), counting, claiming one per device (one-time first, unless withheld), and the
//! claims a commit must use up to add a device (table `claims`).

use chapar_types::DeviceId;
use chapar_types::limits::{CLAIMS_KEPT_PER_ACCOUNT_MAX, KEY_PACKAGES_STORED_PER_DEVICE_MAX};
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest as _, Sha256};

use super::ops::{account, dev};
use super::sql;
use crate::*;

pub(super) fn add_key_packages(
    c: &Connection,
    device: DeviceId,
    one_time: &[Vec<u8>],
    last_resort: Option<&[u8]>,
) -> Result<u32, StoreError> {
    let mut insert = c
        .prepare_cached(
            "INSERT INTO key_packages (device_id, last_resort, data) VALUES (?1, ?2, ?3)",
        )
        .map_err(sql)?;
    for kp in one_time {
        insert.execute(params![dev(device), 0, kp]).map_err(sql)?;
    }
    if let Some(kp) = last_resort {
        c.execute(
            "DELETE FROM key_packages WHERE device_id = ?1 AND last_resort = 1",
            [dev(device)],
        )
        .map_err(sql)?;
        insert.execute(params![dev(device), 1, kp]).map_err(sql)?;
    }
    // Keep the newest packages within the per-device limit.
    c.execute(
        "DELETE FROM key_packages WHERE device_id = ?1 AND last_resort = 0 AND id NOT IN
           (SELECT id FROM key_packages WHERE device_id = ?1 AND last_resort = 0 ORDER BY id DESC LIMIT ?2)",
        params![dev(device), KEY_PACKAGES_STORED_PER_DEVICE_MAX as i64],
    )
    .map_err(sql)?;
    key_package_count(c, device)
}

pub(super) fn key_package_bytes(c: &Connection, username: &str) -> Result<u64, StoreError> {
    c.query_row(
        "SELECT COALESCE(SUM(LENGTH(k.data)), 0) FROM key_packages k
           JOIN devices d ON d.device_id = k.device_id
          WHERE d.username = ?1 AND d.revoked_ms IS NULL",
        [username],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n.max(0) as u64)
    .map_err(sql)
}

/// `KeyPackageQuota` if `device`'s account keeps more than `max` bytes of key packages.
pub(super) fn check_key_package_quota(
    c: &Connection,
    device: DeviceId,
    max: u64,
) -> Result<(), StoreError> {
    let username: String = c
        .query_row(
            "SELECT username FROM devices WHERE device_id = ?1",
            [dev(device)],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql)?
        .ok_or(StoreError::UnknownDevice(device))?;
    let stored = key_package_bytes(c, &username)?;
    if stored > max {
        return Err(StoreError::KeyPackageQuota { stored });
    }
    Ok(())
}

pub(super) fn key_package_count(c: &Connection, device: DeviceId) -> Result<u32, StoreError> {
    c.query_row(
        "SELECT COUNT(*) FROM key_packages WHERE device_id = ?1 AND last_resort = 0",
        [dev(device)],
        |r| r.get::<_, u32>(0),
    )
    .map_err(sql)
}

pub(super) fn claim_key_packages(
    c: &Connection,
    username: &str,
    except: DeviceId,
    only: &[DeviceId],
    one_time: bool,
) -> Result<Vec<ClaimedKeyPackage>, StoreError> {
    let Some(account) = account(c, username)? else {
        return Ok(Vec::new());
    };
    let mut claimed = Vec::new();
    for device in account.devices {
        if device.revoked_ms.is_some()
            || device.device == except
            || !(only.is_empty() || only.contains(&device.device))
        {
            continue;
        }
        // One-time packages first (lowest last_resort), oldest first; only the last-resort
        // one when one-time packages are not to be given out.
        let found = c
            .query_row(
                "SELECT id, last_resort, data FROM key_packages
                 WHERE device_id = ?1 AND last_resort >= ?2
                 ORDER BY last_resort, id LIMIT 1",
                params![dev(device.device), i64::from(!one_time)],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, bool>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                    ))
                },
            )
            .optional()
            .map_err(sql)?;
        let Some((id, last_resort, key_package)) = found else {
            continue;
        };
        if !last_resort {
            c.execute("DELETE FROM key_packages WHERE id = ?1", [id])
                .map_err(sql)?;
        }
        record_claim(c, except, device.device, &key_package)?;
        claimed.push(ClaimedKeyPackage {
            device,
            key_package,
        });
    }
    Ok(claimed)
}

/// Records that the account of device `claimer` was handed `key_package` of `device`, keeping
/// the newest [`CLAIMS_KEPT_PER_ACCOUNT_MAX`] of its claims. A claimer that is no device (a
/// tool) records nothing.
fn record_claim(
    c: &Connection,
    claimer: DeviceId,
    device: DeviceId,
    key_package: &[u8],
) -> Result<(), StoreError> {
    let Some(account) = c
        .query_row(
            "SELECT username FROM devices WHERE device_id = ?1",
            [dev(claimer)],
            |r| r.get::<_, String>(0),
        )
        .optional()
        .map_err(sql)?
    else {
        return Ok(());
    };
    let digest: [u8; 32] = Sha256::digest(key_package).into();
    c.prepare_cached("INSERT INTO claims (claimer, device_id, kp_sha256) VALUES (?1, ?2, ?3)")
        .map_err(sql)?
        .execute(params![account, dev(device), digest.as_slice()])
        .map_err(sql)?;
    c.prepare_cached(
        "DELETE FROM claims WHERE claimer = ?1 AND id <= (
             SELECT id FROM claims WHERE claimer = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
    )
    .map_err(sql)?
    .execute(params![account, CLAIMS_KEPT_PER_ACCOUNT_MAX as i64])
    .map_err(sql)?;
    Ok(())
}

/// Uses up a claim of the account of `committer`: `key_package_sha256` of `device`. A commit
/// that adds a device needs one (`None`: the commit named none).
pub(super) fn use_claim(
    c: &Connection,
    committer: DeviceId,
    device: DeviceId,
    key_package_sha256: Option<&[u8; 32]>,
) -> Result<(), StoreError> {
    let key_package_sha256 = key_package_sha256.ok_or(StoreError::Unclaimed(device))?;
    let used = c
        .prepare_cached(
            "DELETE FROM claims WHERE id = (
                 SELECT id FROM claims
                 WHERE claimer = (SELECT username FROM devices WHERE device_id = ?1)
                   AND device_id = ?2 AND kp_sha256 = ?3
                 ORDER BY id LIMIT 1)",
        )
        .map_err(sql)?
        .execute(params![
            dev(committer),
            dev(device),
            key_package_sha256.as_slice()
        ])
        .map_err(sql)?;
    if used == 0 {
        return Err(StoreError::Unclaimed(device));
    }
    Ok(())
}
