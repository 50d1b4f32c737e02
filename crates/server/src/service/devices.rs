//! Multi-device rules: linking a new device through a sealed rendezvous, adding it to the
//! account, listing and revoking devices, and recovery.
//!
//! Who may add a device to an account is the heart of it. A device certificate signed by the
//! account key is necessary but not enough: every device holds the account key, so a stolen and
//! revoked device could otherwise mint itself a fresh identity. The server therefore accepts a
//! new device only from a logged-in, active device of the same account ([`Service::add_device`])
//! or with a signature by the recovery key, which no device stores ([`Service::recover_device`]).

use chapar_store::{AccountRecord, DeviceRecord, NewDevice, RecoveryRecord, Store};
use chapar_types::limits::{
    DEVICE_NAME_SEALED_BYTES_MAX, DEVICES_LISTED_MAX, LINK_REQUEST_BYTES_MAX,
    LINK_SEALED_BYTES_MAX, LINK_TTL_SECS, RECOVERY_BUNDLE_BYTES_MAX,
};
use chapar_types::signed::{device_cert_payload, recovery_challenge_payload, revocation_payload};
use chapar_types::{DeviceId, ErrorCode, Username};

use super::{Authenticated, Service, check_challenge, check_key_packages, now_ms, verify};
use crate::error::ServiceError;

/// Length of a link rendezvous id.
const LINK_ID_BYTES: usize = 16;
/// Length of an Ed25519 public key.
const PUBLIC_KEY_BYTES: usize = 32;

/// A device certificate and the new device's key material, as the api layer decoded them.
pub struct NewDeviceRequest {
    /// The new device's id.
    pub device: DeviceId,
    /// Its Ed25519 public key.
    pub device_key: Vec<u8>,
    /// The account key's signature over its certificate.
    pub account_signature: Vec<u8>,
    /// Its one-time key packages.
    pub key_packages: Vec<Vec<u8>>,
    /// Its last-resort key package.
    pub last_resort_key_package: Vec<u8>,
    /// Its name, sealed by the account.
    pub sealed_name: Vec<u8>,
}

/// A recovery, as the api layer decoded it.
pub struct Recovery {
    /// The account to recover.
    pub username: String,
    /// The recovery key's signature over this connection's challenge.
    pub recovery_signature: Vec<u8>,
    /// The new device's signature over this connection's challenge.
    pub challenge_signature: Vec<u8>,
    /// The new device.
    pub device: NewDeviceRequest,
    /// Revoke every other device of the account.
    pub revoke_others: bool,
}

/// Checks a certificate for a new device of `username` under `account_key`, and the key
/// material it brings. A device that `logs_in_now` (registered or recovered: it knows its name
/// and makes its key packages up front) must carry a last-resort key package; a linked device
/// uploads its own once approved, and is listed to others only once it has logged in.
pub(super) fn certify_device(
    username: &Username,
    account_key: &[u8],
    request: NewDeviceRequest,
    logs_in_now: bool,
) -> Result<NewDevice, ServiceError> {
    if request.device_key.len() != PUBLIC_KEY_BYTES {
        return Err(ServiceError::bad_request("a device key has 32 bytes"));
    }
    if !verify(
        account_key,
        &device_cert_payload(username, request.device, &request.device_key),
        &request.account_signature,
    ) {
        return Err(ServiceError::new(
            ErrorCode::AuthenticationFailed,
            "the device certificate does not verify under the account key",
        ));
    }
    if logs_in_now && request.last_resort_key_package.is_empty() {
        return Err(ServiceError::bad_request(
            "a last-resort key package is required",
        ));
    }
    check_key_packages(&request.key_packages, &request.last_resort_key_package)?;
    check_sealed_name(&request.sealed_name)?;
    Ok(NewDevice {
        device: DeviceRecord {
            device: request.device,
            username: username.as_str().to_owned(),
            device_key: request.device_key,
            account_signature: request.account_signature,
            created_ms: now_ms(),
            revoked_ms: None,
            sealed_name: request.sealed_name,
            last_seen_ms: logs_in_now.then(now_ms),
            revocation_signature: None,
        },
        key_packages: request.key_packages,
        last_resort_key_package: request.last_resort_key_package,
        revoke_others: false,
    })
}

/// Checks a sealed device name's size.
pub(crate) fn check_sealed_name(sealed_name: &[u8]) -> Result<(), ServiceError> {
    if sealed_name.len() > DEVICE_NAME_SEALED_BYTES_MAX {
        return Err(ServiceError::new(
            ErrorCode::TooLarge,
            format!("a sealed device name has at most {DEVICE_NAME_SEALED_BYTES_MAX} bytes"),
        ));
    }
    Ok(())
}

fn check_link_id(link_id: &[u8]) -> Result<(), ServiceError> {
    if link_id.len() != LINK_ID_BYTES {
        return Err(ServiceError::bad_request(format!(
            "a link id has {LINK_ID_BYTES} bytes"
        )));
    }
    Ok(())
}

fn check_sealed(what: &str, bytes: &[u8], max: usize) -> Result<(), ServiceError> {
    if bytes.is_empty() {
        return Err(ServiceError::bad_request(format!("{what} is empty")));
    }
    if bytes.len() > max {
        return Err(ServiceError::new(
            ErrorCode::TooLarge,
            format!("{what} is larger than {max} bytes"),
        ));
    }
    Ok(())
}

fn parse_username(raw: &str) -> Result<Username, ServiceError> {
    Username::parse(raw).map_err(|e| ServiceError::new(ErrorCode::InvalidUsername, e.to_string()))
}

impl<S: Store> Service<S> {
    /// Files a new device's sealed link request (anonymous) for [`LINK_TTL_SECS`].
    pub async fn create_link(&self, link_id: Vec<u8>, sealed: Vec<u8>) -> Result<(), ServiceError> {
        check_link_id(&link_id)?;
        check_sealed("the link request", &sealed, LINK_REQUEST_BYTES_MAX)?;
        let now = now_ms();
        self.store
            .create_link(link_id, sealed, now, now + LINK_TTL_SECS * 1000)
            .await?;
        Ok(())
    }

    /// The sealed request filed under `link_id`, for a logged-in device that was shown the code.
    pub async fn fetch_link(
        &self,
        who: &Authenticated,
        link_id: Vec<u8>,
    ) -> Result<Vec<u8>, ServiceError> {
        self.require_active(who).await?;
        check_link_id(&link_id)?;
        Ok(self.store.link(link_id, now_ms()).await?.sealed_request)
    }

    /// Leaves the sealed approval for the new device; only the first one is kept.
    pub async fn approve_link(
        &self,
        who: &Authenticated,
        link_id: Vec<u8>,
        sealed: Vec<u8>,
    ) -> Result<(), ServiceError> {
        self.require_active(who).await?;
        check_link_id(&link_id)?;
        check_sealed("the link approval", &sealed, LINK_SEALED_BYTES_MAX)?;
        self.store.approve_link(link_id, sealed, now_ms()).await?;
        tracing::info!(user = %who.username, device = %who.device, "link approved");
        Ok(())
    }

    /// The approval of a link once there is one, and whether the approving device has finished
    /// adding the new device to the account's groups (anonymous; the new device polls).
    pub async fn fetch_link_approval(
        &self,
        link_id: Vec<u8>,
    ) -> Result<(Vec<u8>, bool), ServiceError> {
        check_link_id(&link_id)?;
        let link = self.store.link(link_id, now_ms()).await?;
        Ok((link.sealed_approval.unwrap_or_default(), link.completed))
    }

    /// Marks a link completed: the new device is in every group the account is in.
    pub async fn complete_link(
        &self,
        who: &Authenticated,
        link_id: Vec<u8>,
    ) -> Result<(), ServiceError> {
        self.require_active(who).await?;
        check_link_id(&link_id)?;
        self.store.complete_link(link_id, now_ms()).await?;
        Ok(())
    }

    /// Adds a device to the caller's account (the caller approved a link).
    pub async fn add_device(
        &self,
        who: &Authenticated,
        request: NewDeviceRequest,
    ) -> Result<(), ServiceError> {
        self.require_active(who).await?;
        super::check_new_device_packages(&request)?;
        self.device_change_allowed(&who.username)?;
        let adding = request.key_packages.iter().map(Vec::len).sum::<usize>()
            + request.last_resort_key_package.len();
        self.check_key_package_bytes(&who.username, adding).await?;
        let device = request.device;
        let account = self.account_of(&who.username).await?;
        let new = certify_device(&who.username, &account.account_key, request, false)?;
        self.store.add_device(new).await?;
        tracing::info!(user = %who.username, by = %who.device, %device, "device added");
        Ok(())
    }

    /// The caller's account's devices (every active one, then the most recently revoked, at
    /// most [`DEVICES_LISTED_MAX`]) with how many one-time key packages each has left, and the
    /// account's recovery authentication key.
    pub async fn list_devices(
        &self,
        who: &Authenticated,
    ) -> Result<(Vec<(DeviceRecord, u32)>, Vec<u8>), ServiceError> {
        self.require_active(who).await?;
        let mut devices = self.account_of(&who.username).await?.devices;
        // Active first (oldest first), then revoked, newest revocation first.
        devices.sort_by_key(|d| (d.revoked_ms.is_some(), std::cmp::Reverse(d.revoked_ms)));
        devices.truncate(DEVICES_LISTED_MAX);
        let mut out = Vec::with_capacity(devices.len());
        for device in devices {
            let key_packages = self.store.key_package_count(device.device).await?;
            out.push((device, key_packages));
        }
        let recovery = self
            .store
            .recovery(who.username.as_str())
            .await?
            .map(|r| r.auth_key)
            .unwrap_or_default();
        Ok((out, recovery))
    }

    /// Refuses account-level requests from a device revoked after its connection logged in.
    pub(crate) async fn require_active(&self, who: &Authenticated) -> Result<(), ServiceError> {
        match self.store.device(who.device).await? {
            Some(record) if record.revoked_ms.is_none() => Ok(()),
            _ => Err(ServiceError::new(
                ErrorCode::DeviceRevoked,
                "this device was revoked",
            )),
        }
    }

    /// Revokes another device of the caller's account and closes its connections, keeping
    /// the account's signed proof of it (`signature`, over `revocation_payload`). For a device
    /// revoked already (by a recovery), it only keeps the proof.
    pub async fn revoke_device(
        &self,
        who: &Authenticated,
        device: DeviceId,
        signature: Vec<u8>,
    ) -> Result<(), ServiceError> {
        self.require_active(who).await?;
        if device == who.device {
            return Err(ServiceError::bad_request(
                "a device cannot revoke itself; revoke it from another device of the account",
            ));
        }
        let record = self.store.device(device).await?;
        let Some(record) = record.filter(|r| r.username == who.username.as_str()) else {
            return Err(ServiceError::bad_request(format!(
                "device {device} is not a device of @{}",
                who.username
            )));
        };
        let account = self.account(who.username.as_str()).await?;
        if !verify(
            &account.account_key,
            &revocation_payload(&who.username, device),
            &signature,
        ) {
            return Err(ServiceError::new(
                ErrorCode::AuthenticationFailed,
                "the revocation is not signed by the account key",
            ));
        }
        if record.revoked_ms.is_none() {
            // Only a new revocation is a change; proving an old one costs nothing.
            self.device_change_allowed(&who.username)?;
            self.store.revoke_device(device, now_ms()).await?;
        }
        self.store.set_revocation_proof(device, signature).await?;
        self.hub.kick(device);
        tracing::info!(user = %who.username, by = %who.device, %device, "device revoked");
        Ok(())
    }

    /// Stores the caller's account recovery record, if the caller knows the current one.
    pub async fn set_recovery(
        &self,
        who: &Authenticated,
        auth_key: Vec<u8>,
        sealed_bundle: Vec<u8>,
        expected_auth_key: Vec<u8>,
    ) -> Result<(), ServiceError> {
        self.require_active(who).await?;
        if auth_key.len() != PUBLIC_KEY_BYTES {
            return Err(ServiceError::bad_request(
                "the recovery key must be 32 bytes",
            ));
        }
        check_sealed(
            "the recovery bundle",
            &sealed_bundle,
            RECOVERY_BUNDLE_BYTES_MAX,
        )?;
        self.store
            .set_recovery(
                who.username.as_str(),
                RecoveryRecord {
                    auth_key,
                    sealed_bundle,
                },
                expected_auth_key,
            )
            .await?;
        Ok(())
    }

    /// Checks a recovery-key signature over this connection's challenge; returns the record.
    async fn proven_recovery(
        &self,
        challenge: &[u8],
        username: &Username,
        signature: &[u8],
    ) -> Result<RecoveryRecord, ServiceError> {
        let failed = || {
            ServiceError::new(
                ErrorCode::AuthenticationFailed,
                "the recovery key is wrong, or the account has none",
            )
        };
        let record = self
            .store
            .recovery(username.as_str())
            .await?
            .ok_or_else(failed)?;
        if !verify(
            &record.auth_key,
            &recovery_challenge_payload(challenge, username, &self.server_id),
            signature,
        ) {
            return Err(failed());
        }
        Ok(record)
    }

    /// The sealed recovery bundle, for whoever proves knowledge of the recovery key.
    pub async fn fetch_recovery(
        &self,
        challenge: &[u8],
        username: &str,
        signature: &[u8],
    ) -> Result<RecoveryRecord, ServiceError> {
        let username = parse_username(username)?;
        self.proven_recovery(challenge, &username, signature).await
    }

    /// Registers a new device with the recovery key's authority and logs it in; with
    /// `revoke_others`, every other device is revoked and disconnected in the same step.
    pub async fn recover_device(
        &self,
        challenge: &[u8],
        r: Recovery,
    ) -> Result<Authenticated, ServiceError> {
        let username = parse_username(&r.username)?;
        super::check_new_device_packages(&r.device)?;
        self.proven_recovery(challenge, &username, &r.recovery_signature)
            .await?;
        check_challenge(
            &self.server_id,
            challenge,
            r.device.device,
            &r.device.device_key,
            &r.challenge_signature,
        )?;
        // A recovery adds a device (and may revoke the others): it counts as a change, and
        // its packages against the account's quota, as `add_device` does.
        self.device_change_allowed(&username)?;
        if !r.revoke_others {
            let adding = r.device.key_packages.iter().map(Vec::len).sum::<usize>()
                + r.device.last_resort_key_package.len();
            self.check_key_package_bytes(&username, adding).await?;
        }
        let device = r.device.device;
        let account = self.account_of(&username).await?;
        let new = NewDevice {
            revoke_others: r.revoke_others,
            ..certify_device(&username, &account.account_key, r.device, true)?
        };
        self.store.add_device(new).await?;
        if r.revoke_others {
            for old in account.devices.iter().filter(|d| d.revoked_ms.is_none()) {
                self.hub.kick(old.device);
            }
        }
        tracing::info!(user = %username, %device, revoke_others = r.revoke_others, "account recovered");
        Ok(Authenticated { device, username })
    }

    /// Counts a device added or revoked by `who`'s account; refuses past the hourly limit (a
    /// member looping them would make every co-member's next message stale).
    fn device_change_allowed(&self, username: &Username) -> Result<(), ServiceError> {
        if self.rates.device_changes.allow(username) {
            return Ok(());
        }
        self.metrics.hit(crate::metrics::LimitHit::DeviceChangeRate);
        Err(ServiceError::new(
            ErrorCode::RateLimited,
            format!(
                "an account adds or revokes at most {} devices an hour; try later",
                self.limits.device_changes_per_account_per_hour
            ),
        ))
    }

    /// The account with its devices, or `UnknownUser`.
    async fn account_of(&self, username: &Username) -> Result<AccountRecord, ServiceError> {
        self.store.account(username.as_str()).await?.ok_or_else(|| {
            ServiceError::new(ErrorCode::UnknownUser, format!("no user @{username}"))
        })
    }
}
