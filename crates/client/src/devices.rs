//! An account's devices: listing them (with names only the account can read) and revoking one.
//!
//! Revoking a device: the server stops serving it at once; this device's sync removes it from
//! every group (the roster check); a new archive key generation goes to the remaining devices
//! through the self group, so the revoked device cannot read history archived from then on even
//! with the server's help; and if the revoked device set the current recovery key, the recovery
//! key is replaced too (it may have planted one it knows).

use chapar_crypto::account::device_fingerprint;
use chapar_crypto::mls;
use chapar_types::DeviceId;
use chapar_wire::v1::{self, client_frame::Request, response::Result as Reply};

use crate::ClientError;
use crate::account_keys::AccountKeys;
use crate::client::Client;
use crate::provider::Provider;
use crate::self_group::{RECOVERY_SET_BY, SELF_KIND};

/// A device of the account, as `devices` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceInfo {
    /// The device id (16 hex digits).
    pub id: String,
    /// Its name, if it opens with this device's keys.
    pub name: Option<String>,
    /// This is the device running the command.
    pub current: bool,
    /// When it was added, milliseconds since the Unix epoch.
    pub added_ms: u64,
    /// Its last login, if any.
    pub last_seen_ms: Option<u64>,
    /// When it was revoked, if it was.
    pub revoked_ms: Option<u64>,
    /// Its key fingerprint.
    pub fingerprint: String,
}

/// What a revocation did besides revoking.
#[derive(Debug, Clone, Default)]
pub struct Revoked {
    /// Chats that still contain the device (the roster check failed there; the next sync of
    /// any member retries).
    pub chats_left_with_it: usize,
    /// A new recovery key, if the revoked device had set the old one.
    pub new_recovery_key: Option<String>,
}

impl Client {
    pub(crate) fn account_keys(&self) -> Result<&AccountKeys, ClientError> {
        self.keys.as_ref().ok_or_else(|| {
            ClientError::Profile("this profile has no account keys; link it again".into())
        })
    }

    /// The account's devices as the server lists them, and its current recovery auth key.
    pub(crate) async fn device_list(
        &mut self,
    ) -> Result<(Vec<v1::DeviceInfo>, Vec<u8>), ClientError> {
        self.connect().await?;
        let (_, conn, _) = self.parts()?;
        let Reply::DeviceList(list) = conn
            .request(Request::ListDevices(v1::ListDevices {}))
            .await?
        else {
            return Err(ClientError::Protocol("expected DeviceList".into()));
        };
        Ok((list.devices, list.recovery_auth_key))
    }

    /// Active groups whose MLS members include `device` (only self groups, if `only_self`).
    pub(crate) fn groups_containing(
        &self,
        device: DeviceId,
        only_self: bool,
    ) -> Result<usize, ClientError> {
        let provider = Provider::new(self.local.conn());
        let mut count = 0;
        for chat in self.local.chats()? {
            if chat.state != "active" || (only_self && chat.kind != SELF_KIND) {
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
    }

    pub(crate) fn active_groups(&self) -> Result<usize, ClientError> {
        Ok(self
            .local
            .chats()?
            .iter()
            .filter(|c| c.state == "active")
            .count())
    }

    /// The account's devices: every active one, then the most recently revoked.
    pub async fn devices(&mut self) -> Result<Vec<DeviceInfo>, ClientError> {
        let (listed, _) = self.device_list().await?;
        let me = self.me()?;
        let keys = self.account_keys()?;
        Ok(listed
            .into_iter()
            .filter_map(|d| {
                let cert = d.device?;
                let id = DeviceId(cert.device_id);
                Some(DeviceInfo {
                    id: id.to_string(),
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
    pub async fn revoke_device(&mut self, device: DeviceId) -> Result<Revoked, ClientError> {
        self.connect().await?;
        let (_, conn, me) = self.parts()?;
        if device == me.device {
            return Err(ClientError::Usage(
                "a device cannot revoke itself; revoke it from another device".into(),
            ));
        }
        conn.request(Request::RevokeDevice(v1::RevokeDevice {
            device_id: device.0,
        }))
        .await?;
        let username = me.username.to_string();
        self.local.remember_revoked(&username, device)?;
        // The server moved the account's roster version: the sync's roster check removes the
        // device from every group this device is in.
        self.sync_inner().await?;
        if self.groups_containing(device, true)? > 0 {
            return Err(ClientError::Usage(
                "the device is revoked, but is still in your devices' own group, so no new archive \
                 key was made; run `chapar sync`, then revoke it again to finish"
                    .into(),
            ));
        }
        self.rotate_archive_key().await?;
        let new_recovery_key = if self.local.get_u64(RECOVERY_SET_BY)? == device.0 {
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
    pub(crate) async fn rotate_archive_key(&mut self) -> Result<(), ClientError> {
        // The profile is the truth: the self group may have brought a generation since.
        let mut keys = AccountKeys::load(&self.local)?
            .ok_or_else(|| ClientError::Profile("this profile has no account keys".into()))?;
        let (generation, key) = keys.rotate();
        keys.save(&self.local)?;
        self.keys = Some(keys);
        self.announce_archive_key(generation, &key).await?;
        self.reseal_recovery_bundle().await
    }
}
