//! The self group: an MLS group whose members are the account's own devices and nobody else.
//! It carries what the devices share but peers must not see: read positions, new archive keys
//! after a revocation, a new recovery public key. Being an ordinary MLS group, it follows the
//! account's devices like every chat (a revoked device is removed from it, so it never learns
//! the archive key made after its revocation).
//!
//! Which group is the self group is a fact each device records (`AccountKeys::self_group`):
//! the device that creates it records it, and it travels to new devices inside the sealed link
//! approval and the recovery bundle. It is never inferred from a group's members or from a
//! label a message carries: anyone can make a group whose every leaf claims to be this
//! account (and a revoked device, which still holds the account key, can even certify such
//! leaves). On top of that, an account-sync message is sent to, and believed from, the
//! recorded group only while every member of it is a device of this account.

use chapar_crypto::mls;
use chapar_crypto::seal::SymmetricKey;
use chapar_types::{DeviceId, GroupId, Seq, Username};
use chapar_wire::content::{AccountSync, ArchiveKey, ReadMarker, account_sync, app_message::Body};
use chapar_wire::v1::{self, client_frame::Request};

use super::device::Device;
use crate::account_keys::AccountKeys;
use crate::events::Warning;
use crate::model::Target;
use crate::provider::Provider;
use crate::storage::{Chat, ChatKind, ChatState, Tx};
use crate::{CoreError, Usage};

/// Profile key: the device that set the current recovery key.
pub(crate) const RECOVERY_SET_BY: &str = "recovery_set_by";

/// Whether every member of `group`'s MLS state is a device of `me`.
pub(crate) fn only_my_devices(
    provider: &Provider<'_>,
    group: GroupId,
    me: &Username,
) -> Result<bool, CoreError> {
    Ok(mls::load_group(provider, group)?.is_some_and(|g| {
        let members = mls::members(&g);
        !members.is_empty() && members.iter().all(|m| m.identity.username == *me)
    }))
}

/// Whether `group` is the self group this device recorded.
pub(crate) fn is_self_group(tx: &Tx<'_>, group: GroupId) -> Result<bool, CoreError> {
    Ok(AccountKeys::load(tx)?.is_some_and(|k| k.self_group == Some(group)))
}

/// Applies an account-sync message from `sender`'s device `sender_device` in `group`. Returns
/// whether it was believed (only then does it belong in the archive).
#[allow(clippy::too_many_arguments)] // who said what, where, and to whom
pub(crate) fn apply_incoming(
    device: &Device,
    provider: &Provider<'_>,
    tx: &Tx<'_>,
    group: GroupId,
    sender: &Username,
    sender_device: DeviceId,
    me: &Username,
    sync: &AccountSync,
) -> Result<bool, CoreError> {
    if sender != me || !is_self_group(tx, group)? || !only_my_devices(provider, group, me)? {
        tracing::warn!(%group, "ignoring an account-sync message outside the self group");
        return Ok(false);
    }
    match &sync.kind {
        Some(account_sync::Kind::Read(marker)) => apply_read(tx, marker)?,
        Some(account_sync::Kind::ArchiveKey(key)) => {
            let Some(mut keys) = AccountKeys::load(tx)? else {
                return Ok(true);
            };
            match SymmetricKey::from_bytes(&key.key) {
                Ok(new) if keys.is_sane_generation(key.generation) => {
                    if keys.add_archive_key(key.generation, new) {
                        keys.save(tx)?;
                    }
                }
                // A generation far past the newest would stay newest for good (no rotation
                // could go above it): whoever sent it is not rotating as devices do.
                Ok(_) => {
                    tracing::warn!(%group, generation = key.generation, "ignoring an archive key generation out of line");
                }
                // A malformed key must not wedge the self group; the sender's next rotation
                // or a relink repairs it.
                Err(_) => tracing::warn!(%group, "ignoring a malformed archive key"),
            }
        }
        Some(account_sync::Kind::Recovery(recovery)) => {
            let Some(mut keys) = AccountKeys::load(tx)? else {
                return Ok(true);
            };
            keys.recovery = Some(recovery.clone());
            keys.save(tx)?;
            tx.set_counter(RECOVERY_SET_BY, sender_device.0)?;
            device.warn(Warning::RecoveryKeyReplaced { by: sender_device });
        }
        None => {}
    }
    Ok(true)
}

/// Applies what of an archived account-sync message still matters on a new device.
pub(crate) fn apply_restored(tx: &Tx<'_>, sync: &AccountSync) -> Result<(), CoreError> {
    match &sync.kind {
        Some(account_sync::Kind::Read(marker)) => apply_read(tx, marker),
        // Keys come with the link approval or the recovery bundle, never from the archive.
        _ => Ok(()),
    }
}

fn apply_read(tx: &Tx<'_>, marker: &ReadMarker) -> Result<(), CoreError> {
    if let Ok(group) = GroupId::from_slice(&marker.group_id) {
        tx.mark_read(group, marker.seq)?;
    }
    Ok(())
}

/// Whether an account-sync message belongs in the archive: read markers do; keys never do (a
/// revoked device that kept an older archive key must not read newer keys from the archive).
pub(crate) fn archivable(sync: &AccountSync) -> bool {
    matches!(sync.kind, Some(account_sync::Kind::Read(_)))
}

impl Device {
    /// Creates the self group if this profile has no active one (a fresh registration, or a
    /// recovery with no other device left) and records it. Other devices are added to the
    /// existing one.
    pub(crate) async fn ensure_self_group(&self) -> Result<(), CoreError> {
        if !self.self_groups()?.is_empty() {
            return Ok(());
        }
        let group = GroupId(self.env.random());
        self.call(Request::CreateGroup(v1::CreateGroup {
            group_id: group.as_bytes().to_vec(),
        }))
        .await?;
        let signer = self.me()?.signer();
        let replaced = self.write(|tx| {
            mls::create_group(&self.mls(tx), &signer, group)?;
            tx.insert_chat(
                &Chat::new(group, ChatKind::SelfGroup, ChatState::Active, 0),
                self.now_ms(),
            )?;
            let mut keys = AccountKeys::load(tx)?
                .ok_or_else(|| CoreError::Profile("the profile has no account keys".into()))?;
            let replaced = keys.self_group.replace(group).is_some();
            keys.save(tx)?;
            Ok(replaced)
        })?;
        if replaced {
            // A recovery that runs later must learn the new one.
            self.reseal_recovery_bundle().await?;
        }
        Ok(())
    }

    /// The recorded self group, while it is active and made only of this account's devices
    /// (none or one).
    pub(crate) fn self_groups(&self) -> Result<Vec<GroupId>, CoreError> {
        let me = &self.me()?.username;
        self.read(|tx| {
            let Some(group) = AccountKeys::load(tx)?.and_then(|k| k.self_group) else {
                return Ok(Vec::new());
            };
            let provider = self.mls(tx);
            let active = tx.chat(group)?.is_some_and(|c| c.is_active());
            Ok(if active && only_my_devices(&provider, group, me)? {
                vec![group]
            } else {
                Vec::new()
            })
        })
    }

    /// Sends an account-sync message to the account's other devices.
    pub(crate) async fn send_account_sync(
        &self,
        kind: account_sync::Kind,
    ) -> Result<(), CoreError> {
        for group in self.self_groups()? {
            self.send_body(
                group,
                Body::AccountSync(AccountSync {
                    kind: Some(kind.clone()),
                }),
            )
            .await?;
        }
        Ok(())
    }

    /// Announces a new archive key to the account's devices.
    pub(crate) async fn announce_archive_key(
        &self,
        generation: u32,
        key: &SymmetricKey,
    ) -> Result<(), CoreError> {
        self.send_account_sync(account_sync::Kind::ArchiveKey(ArchiveKey {
            generation,
            key: key.as_bytes().to_vec(),
        }))
        .await
    }

    /// Marks a chat read up to its newest message, here and on the account's other devices.
    /// Returns the position it is read to.
    pub(crate) async fn mark_read(&self, target: &Target) -> Result<Seq, CoreError> {
        self.connect().await?;
        let group = self.existing_chat(target).await?;
        let seq = self.write(|tx| {
            let chat = tx.chat(group)?.ok_or(Usage::NoSuchChat)?;
            tx.mark_read(group, chat.position)?;
            Ok(chat.position)
        })?;
        self.send_account_sync(account_sync::Kind::Read(ReadMarker {
            group_id: group.as_bytes().to_vec(),
            seq,
        }))
        .await?;
        Ok(seq)
    }
}
