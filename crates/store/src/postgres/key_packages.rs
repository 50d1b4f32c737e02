//! Key packages in PostgreSQL: uploads within the account's byte quota, claims (one-time
//! packages handed out once, the last-resort one kept), and the claim records a commit must
//! use up to add a device.

use chapar_types::DeviceId;
use chapar_types::limits::{CLAIMS_KEPT_PER_ACCOUNT_MAX, KEY_PACKAGES_STORED_PER_DEVICE_MAX};
use sha2::{Digest as _, Sha256};

use super::accounts::{account, owner};
use super::{Failure, Tx, dev, exec, one, opt, unum};
use crate::*;

pub(super) async fn add_key_packages(
    tx: &Tx<'_>,
    device: DeviceId,
    one_time: &[Vec<u8>],
    last_resort: Option<&[u8]>,
) -> Result<u32, Failure> {
    const INSERT: &str =
        "INSERT INTO key_packages (device_id, last_resort, data) VALUES ($1, $2, $3)";
    for kp in one_time {
        exec(tx, INSERT, &[&dev(device), &false, kp]).await?;
    }
    if let Some(kp) = last_resort {
        exec(
            tx,
            "DELETE FROM key_packages WHERE device_id = $1 AND last_resort",
            &[&dev(device)],
        )
        .await?;
        exec(tx, INSERT, &[&dev(device), &true, &kp]).await?;
    }
    // Keep the newest packages within the per-device limit.
    exec(
        tx,
        "DELETE FROM key_packages WHERE device_id = $1 AND NOT last_resort AND id NOT IN
           (SELECT id FROM key_packages WHERE device_id = $1 AND NOT last_resort
            ORDER BY id DESC LIMIT $2)",
        &[&dev(device), &(KEY_PACKAGES_STORED_PER_DEVICE_MAX as i64)],
    )
    .await?;
    key_package_count(tx, device).await
}

pub(super) async fn key_package_bytes(tx: &Tx<'_>, username: &str) -> Result<u64, Failure> {
    let row = one(
        tx,
        "SELECT COALESCE(SUM(octet_length(k.data)), 0)::BIGINT FROM key_packages k
           JOIN devices d ON d.device_id = k.device_id
          WHERE d.username = $1 AND d.revoked_ms IS NULL",
        &[&username],
    )
    .await?;
    Ok(unum(row.get(0)))
}

/// `KeyPackageQuota` if `device`'s account keeps more than `max` bytes of key packages.
pub(super) async fn check_key_package_quota(
    tx: &Tx<'_>,
    device: DeviceId,
    max: u64,
) -> Result<(), Failure> {
    let username = owner(tx, device)
        .await?
        .ok_or(StoreError::UnknownDevice(device))?;
    let stored = key_package_bytes(tx, &username).await?;
    if stored > max {
        return Err(StoreError::KeyPackageQuota { stored }.into());
    }
    Ok(())
}

pub(super) async fn key_package_count(tx: &Tx<'_>, device: DeviceId) -> Result<u32, Failure> {
    let row = one(
        tx,
        "SELECT COUNT(*) FROM key_packages WHERE device_id = $1 AND NOT last_resort",
        &[&dev(device)],
    )
    .await?;
    Ok(u32::try_from(unum(row.get(0))).unwrap_or(u32::MAX))
}

pub(super) async fn claim_key_packages(
    tx: &Tx<'_>,
    username: &str,
    except: DeviceId,
    only: &[DeviceId],
    one_time: bool,
) -> Result<Vec<ClaimedKeyPackage>, Failure> {
    let Some(account) = account(tx, username).await? else {
        return Ok(Vec::new());
    };
    let claimer = owner(tx, except).await?;
    let mut claimed = Vec::new();
    for device in account.devices {
        if device.revoked_ms.is_some()
            || device.device == except
            || !(only.is_empty() || only.contains(&device.device))
        {
            continue;
        }
        // One-time packages first (false sorts first), oldest first; only the last-resort
        // one when one-time packages are not to be given out.
        let Some(found) = opt(
            tx,
            "SELECT id, last_resort, data FROM key_packages
             WHERE device_id = $1 AND (last_resort OR $2)
             ORDER BY last_resort, id LIMIT 1",
            &[&dev(device.device), &one_time],
        )
        .await?
        else {
            continue;
        };
        let (id, last_resort, key_package): (i64, bool, Vec<u8>) =
            (found.get(0), found.get(1), found.get(2));
        if !last_resort {
            exec(tx, "DELETE FROM key_packages WHERE id = $1", &[&id]).await?;
        }
        if let Some(claimer) = &claimer {
            record_claim(tx, claimer, device.device, &key_package).await?;
        }
        claimed.push(ClaimedKeyPackage {
            device,
            key_package,
        });
    }
    Ok(claimed)
}

/// Records that account `claimer` was handed `key_package` of `device`, keeping the newest
/// [`CLAIMS_KEPT_PER_ACCOUNT_MAX`] of its claims.
async fn record_claim(
    tx: &Tx<'_>,
    claimer: &str,
    device: DeviceId,
    key_package: &[u8],
) -> Result<(), Failure> {
    let digest: [u8; 32] = Sha256::digest(key_package).into();
    exec(
        tx,
        "INSERT INTO claims (claimer, device_id, kp_sha256) VALUES ($1, $2, $3)",
        &[&claimer, &dev(device), &digest.as_slice()],
    )
    .await?;
    exec(
        tx,
        "DELETE FROM claims WHERE claimer = $1 AND id <= (
             SELECT id FROM claims WHERE claimer = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
        &[&claimer, &(CLAIMS_KEPT_PER_ACCOUNT_MAX as i64)],
    )
    .await?;
    Ok(())
}

/// Uses up a claim of the account of `committer`: `key_package_sha256` of `device`. A commit
/// that adds a device needs one (`None`: the commit named none).
pub(super) async fn use_claim(
    tx: &Tx<'_>,
    committer: DeviceId,
    device: DeviceId,
    key_package_sha256: Option<&[u8; 32]>,
) -> Result<(), Failure> {
    let key_package_sha256 = key_package_sha256.ok_or(StoreError::Unclaimed(device))?;
    let used = exec(
        tx,
        "DELETE FROM claims WHERE id = (
             SELECT id FROM claims
             WHERE claimer = (SELECT username FROM devices WHERE device_id = $1)
               AND device_id = $2 AND kp_sha256 = $3
             ORDER BY id LIMIT 1)",
        &[
            &dev(committer),
            &dev(device),
            &key_package_sha256.as_slice(),
        ],
    )
    .await?;
    if used == 0 {
        return Err(StoreError::Unclaimed(device).into());
    }
    Ok(())
}
