//! An account's devices: listing them (with names only the account can read) and revoking one.
//!
//! Revoking a device: the server stops serving it at once; this device's sync removes it from
//! every group (the roster check); a new archive key generation goes to the remaining devices
//! through the self group, so the revoked device cannot read history archived from then on even
//! with the server's help; and if the revoked device set the current recovery key, the recovery
//! key is replaced too (it may have planted one it knows).

use chapar_crypto::account::device_fingerprint;
use chapar_crypto::{identity, mls};
use chapar_types::DeviceId;
use chapar_wire::v1::{self, client_frame::Request, response::Result as Reply};

use super::device::{Device, unexpected};
use super::self_group::RECOVERY_SET_BY;
use crate::model::{DeviceInfo, Revoked};
use crate::storage::ChatKind;
use crate::{CoreError, Usage};

impl Device {
    /// The account's devices as the server lists them, and its current recovery auth key.
    pub(crate) async fn device_list(&self) -> Result<(Vec<v1::DeviceInfo>, Vec<u8>), CoreError> {
        self.connect().await?;
        let Reply::DeviceList(list) = self.call(Request::ListDevices(v1::ListDevices {})).await?
        else {
            return Err(unexpected("DeviceList"));
        };
        Ok((list.devices, list.recovery_auth_key))
    }

    /// Active chats whose MLS members include `device` (only self groups, if `only_self`).
    pub(crate) fn groups_containing(
        &self,
        device: DeviceId,
        only_self: bool,
    ) -> Result<usize, CoreError> {
        self.read(|tx| {
            let provider = self.mls(tx);
            let mut count = 0;
            for chat in tx.chats()? {
                if !chat.is_active() || (only_self && chat.kind != ChatKind::SelfGroup) {
                    continue;
                }
                if let Some(group) = mls::load_group(&provider, chat.group)?
                    && mls::members(&group)
                        .iter()
                        .any(|m| m.identity.device == device)
                {
                    count += 1;
                }
            }
            Ok(count)
        })
    }

    /// How many chats this device is an active member of (the self group included).
    pub(crate) fn active_groups(&self) -> Result<usize, CoreError> {
        Ok(self
            .read(|tx| tx.chats())?
            .iter()
            .filter(|c| c.is_active())
            .count())
    }

    /// The account's devices: every active one, then the most recently revoked.
    pub(crate) async fn devices(&self) -> Result<Vec<DeviceInfo>, CoreError> {
        let (listed, _) = self.device_list().await?;
        let me = self.me()?;
        let keys = self.account_keys()?;
        Ok(listed
            .into_iter()
            .filter_map(|d| {
                let cert = d.device?;
                let id = DeviceId(cert.device_id);
                Some(DeviceInfo {
                    id,
                    name: keys.open_device_name(&me.username, id, &d.sealed_name),
                    current: id == me.device,
                    added_ms: d.created_ms,
                    last_seen_ms: (d.last_seen_ms > 0).then_some(d.last_seen_ms),
                    revoked_ms: (d.revoked_ms > 0).then_some(d.revoked_ms),
                    fingerprint: device_fingerprint(&cert.device_key),
                })
            })
            .collect())
    }

    /// Revokes another device of the account (see the module docs for everything it does).
    pub(crate) async fn revoke_device(&self, device: DeviceId) -> Result<Revoked, CoreError> {
        self.connect().await?;
        let me = self.me()?;
        if device == me.device {
            return Err(Usage::CannotRevokeSelf.into());
        }
        self.call(Request::RevokeDevice(v1::RevokeDevice {
            device_id: device.0,
            account_signature: identity::sign_revocation(&me.account_key, &me.username, device),
        }))
        .await?;
        self.write(|tx| tx.remember_revoked(&me.username, device))?;
        // The server moved the account's roster version: the sync's roster check removes the
        // device from every group this device is in.
        self.sync_all().await?;
        if self.groups_containing(device, true)? > 0 {
            return Err(Usage::RevocationUnfinished(device).into());
        }
        self.rotate_archive_key().await?;
        let new_recovery_key = if self.read(|tx| tx.counter(RECOVERY_SET_BY))? == device.0 {
            Some(self.set_new_recovery_key().await?)
        } else {
            None
        };
        Ok(Revoked {
            chats_left_with_it: self.groups_containing(device, false)?,
            new_recovery_key,
        })
    }

    /// Starts a new archive key generation, tells the account's devices, and reseals the
    /// recovery bundle so a recovery can read history written under it.
    pub(crate) async fn rotate_archive_key(&self) -> Result<(), CoreError> {
        // The profile is the truth: the self group may have brought a generation since.
        let (generation, key) = self.write(|tx| {
            let mut keys = crate::account_keys::AccountKeys::load(tx)?
                .ok_or_else(|| CoreError::Profile("this profile has no account keys".into()))?;
            let rotated = keys.rotate(&self.env)?;
            keys.save(tx)?;
            Ok(rotated)
        })?;
        self.announce_archive_key(generation, &key).await?;
        self.reseal_recovery_bundle().await
    }
}
