//! Keeping each group's members in line with its accounts' device lists.
//!
//! When an account gains a device (linked or recovered) or loses one (revoked), every group
//! with a member of that account must add or remove the device. The server cannot do it: it
//! holds no group keys. So any member may: the server raises a group's roster version whenever
//! a member account's devices change, and a device that sees a version it has not checked asks
//! for the accounts' device lists, verifies every certificate against the account key it has
//! pinned, and commits the difference in one commit. Several members may try at once; the
//! delivery service accepts one commit per epoch, and the others find nothing left to do after
//! catching up.
//!
//! What the server says is checked, never trusted: an account whose identity key differs from
//! the pinned one is left alone (with a loud warning), key packages must belong to the devices
//! asked for, a device is removed only on the account's signed proof of its revocation (not
//! because the server stopped listing it), and a device this client once saw revoked is never
//! added back, whatever the server lists later.

use std::collections::{BTreeMap, HashMap};

use chapar_crypto::mls;
use chapar_types::{DeviceId, ErrorCode, GroupId, Username};
use chapar_wire::v1::{self, client_frame::Request, response::Result as Reply};

use super::device::{Device, unexpected};
use super::sync::Head;
use crate::CoreError;
use crate::events::Warning;
use crate::identity::verify_cert;

/// An account's devices as the roster check sees them.
#[derive(Debug, Clone, Default)]
struct Devices {
    /// Active, logged in, certificate verified: belong in the account's groups.
    active: Vec<DeviceId>,
    /// Added but not yet logged in: neither added nor removed for now.
    pending: Vec<DeviceId>,
    /// Revoked, with the account's signed proof of it: removed from the account's groups.
    revoked: Vec<DeviceId>,
}

/// Accounts' devices, looked up once per sync (None: the account is not trusted).
type AccountCache = HashMap<Username, Option<Devices>>;

/// How checking one group's roster ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checked {
    /// The group's devices match its accounts' lists.
    Complete,
    /// Checked, but a device could not be added yet (it has no key package); the next sync
    /// tries again.
    Partial,
}

impl Device {
    /// Checks every active group whose roster version moved since this device last checked.
    pub(crate) async fn reconcile_rosters(&self, heads: &[Head]) -> Result<(), CoreError> {
        let mut accounts = AccountCache::new();
        for head in heads {
            let Some(chat) = self.read(|tx| tx.chat(head.group))? else {
                continue;
            };
            if !chat.is_active() || head.roster_version <= chat.roster_seen {
                continue;
            }
            if let Err(e) = self
                .reconcile_group(head.group, head.roster_version, &mut accounts)
                .await
            {
                if e.outcome_unknown() {
                    return Err(e);
                }
                self.warn(Warning::RosterNotUpdated {
                    group: head.group,
                    reason: e.to_string(),
                    sent_anyway: false,
                });
            }
        }
        Ok(())
    }

    /// Checks one group's devices after the server said its roster moved on (`stale_roster`).
    /// If the check fails for any reason but the connection, it is recorded as done so the
    /// message can go out (with a warning); the next sync tries again.
    pub(crate) async fn check_roster(&self, group: GroupId) -> Result<(), CoreError> {
        let heads = self.heads().await?;
        let Some(head) = heads.into_iter().find(|h| h.group == group) else {
            return Ok(());
        };
        match self
            .reconcile_group(group, head.roster_version, &mut AccountCache::new())
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.outcome_unknown() => Err(e),
            Err(e) => {
                self.warn(Warning::RosterNotUpdated {
                    group,
                    reason: e.to_string(),
                    sent_anyway: true,
                });
                self.write(|tx| tx.set_roster_checked(group, head.roster_version))
            }
        }
    }

    /// The active devices of `user` whose certificates verify under the pinned account key,
    /// minus devices seen revoked before, and the account's devices not yet online.
    async fn verified_devices(
        &self,
        user: &Username,
        cache: &mut AccountCache,
    ) -> Result<Option<Devices>, CoreError> {
        if let Some(known) = cache.get(user) {
            return Ok(known.clone());
        }
        let reply = self
            .call(Request::GetAccount(v1::GetAccount {
                username: user.to_string(),
            }))
            .await;
        let account = match reply {
            Ok(Reply::Account(account)) => account,
            Ok(_) => return Err(unexpected("Account")),
            // The server's word that an account is gone removes none of its devices.
            Err(e) if e.code() == Some(ErrorCode::UnknownUser) => {
                cache.insert(user.clone(), None);
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let devices = if self.check_account_key(user, &account.account_key)? {
            let mut devices = Vec::new();
            for cert in &account.devices {
                let device = DeviceId(cert.device_id);
                if !verify_cert(&account.account_key, user, cert) {
                    continue;
                }
                if self.read(|tx| tx.was_revoked(user, device))? {
                    self.warn(Warning::RevokedDeviceListed {
                        user: user.clone(),
                        device,
                    });
                    continue;
                }
                devices.push(device);
            }
            // An account is never without a device: a list with none is the server's word
            // against every device in the group, and is not acted on. (A device the server
            // revoked stops receiving the group's entries at once anyway.)
            if devices.is_empty() {
                cache.insert(user.clone(), None);
                return Ok(None);
            }
            let revoked = account
                .revocations
                .iter()
                .filter(|r| {
                    chapar_crypto::identity::verify_revocation(
                        &account.account_key,
                        user,
                        DeviceId(r.device_id),
                        &r.account_signature,
                    )
                    .is_ok()
                })
                .map(|r| DeviceId(r.device_id))
                .collect();
            Some(Devices {
                active: devices,
                pending: account
                    .pending_devices
                    .iter()
                    .map(|d| DeviceId(*d))
                    .collect(),
                revoked,
            })
        } else {
            None
        };
        cache.insert(user.clone(), devices.clone());
        Ok(devices)
    }

    /// Adds the missing devices of the group's accounts and removes their revoked ones, then
    /// records that the group was checked at roster `version` (as seen, if every missing
    /// device could be added; as checked only, so the next sync tries again, if one had no key
    /// package).
    async fn reconcile_group(
        &self,
        group: GroupId,
        version: u64,
        cache: &mut AccountCache,
    ) -> Result<(), CoreError> {
        let me = self.me()?.device;
        let Some((members, leaving)) = self.read(|tx| {
            Ok(mls::load_group(&self.mls(tx), group)?
                .map(|g| (mls::members(&g), mls::pending_removals(&g))))
        })?
        else {
            return Ok(());
        };
        // Devices on their way out (a pending leave) do not make their account a member.
        let mut present: BTreeMap<Username, Vec<DeviceId>> = BTreeMap::new();
        for member in members
            .iter()
            .filter(|m| !leaving.contains(&m.identity.device))
        {
            present
                .entry(member.identity.username.clone())
                .or_default()
                .push(member.identity.device);
        }
        let mut missing: Vec<(Username, Vec<DeviceId>)> = Vec::new();
        let mut stale: Vec<DeviceId> = Vec::new();
        // A device left in the group for want of a revocation proof: not done yet.
        let mut unproven = false;
        for (user, devices) in &present {
            let Some(listed) = self.verified_devices(user, cache).await? else {
                continue;
            };
            let absent: Vec<DeviceId> = listed
                .active
                .iter()
                .filter(|d| !devices.contains(d))
                .copied()
                .collect();
            if !absent.is_empty() {
                missing.push((user.clone(), absent));
            }
            let gone = |d: &&DeviceId| {
                !listed.active.contains(d) && !listed.pending.contains(d) && **d != me
            };
            for device in devices.iter().filter(gone) {
                if !listed.revoked.contains(device) {
                    // The server no longer lists it, but the account has not said so: it
                    // stays (checked again at the next sync, when the proof may be there).
                    tracing::warn!(%group, user = %user, %device, "a device is no longer listed, without the account's proof of its revocation; kept");
                    unproven = true;
                    continue;
                }
                // Remember it: a server that lists it again later is not believed.
                self.write(|tx| tx.remember_revoked(user, *device))?;
                stale.push(*device);
            }
        }
        if missing.is_empty() && stale.is_empty() {
            return self.write(|tx| {
                if unproven {
                    tx.set_roster_checked(group, version)
                } else {
                    tx.set_roster_seen(group, version)
                }
            });
        }
        let mut packages = Vec::new();
        let mut wanted = 0;
        for (user, devices) in &missing {
            wanted += devices.len();
            packages.extend(self.claim_verified(user, devices).await?);
        }
        let checked = if packages.len() == wanted && !unproven {
            Checked::Complete
        } else {
            Checked::Partial
        };
        if packages.is_empty() && stale.is_empty() {
            return self.write(|tx| tx.set_roster_checked(group, version));
        }
        self.commit(group, |state, provider, signer| {
            // After a stale-epoch retry someone else may have done part of the work.
            let now: Vec<DeviceId> = mls::members(state)
                .iter()
                .map(|m| m.identity.device)
                .collect();
            let add: Vec<_> = packages
                .iter()
                .filter(|k| !now.contains(&k.identity.device))
                .cloned()
                .collect();
            let remove: Vec<DeviceId> = stale.iter().filter(|d| now.contains(d)).copied().collect();
            if add.is_empty() && remove.is_empty() {
                return Ok(None);
            }
            Ok(Some(mls::change_devices(
                state, provider, signer, add, &remove,
            )?))
        })
        .await?;
        self.write(|tx| match checked {
            Checked::Complete => tx.set_roster_seen(group, version),
            Checked::Partial => tx.set_roster_checked(group, version),
        })?;
        // New devices learn what the chat is (whichever commit added them).
        self.send_owed_meta().await
    }
}
