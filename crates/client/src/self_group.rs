//! The self group: an MLS group whose members are the account's own devices and nobody else.
//! It carries what the devices share but peers must not see: read positions, new archive keys
//! after a revocation, a new recovery public key. Being an ordinary MLS group, it follows the
//! account's devices like every chat (a revoked device is removed from it, so it never learns
//! the archive key made after its revocation).
//!
//! What makes a group the self group is its membership, checked every time from the MLS state,
//! never a label: an account-sync message is sent to, and believed from, only a group whose
//! every member is a device of this account. (A stolen device could otherwise label a group
//! that includes a stranger and have the next archive key sent there.)

use chapar_crypto::mls;
use chapar_crypto::seal::SymmetricKey;
use chapar_types::{DeviceId, GroupId, Seq};
use chapar_wire::content::{AccountSync, ArchiveKey, account_sync, app_message::Body};
use chapar_wire::v1::{self, client_frame::Request};

use crate::ClientError;
use crate::account_keys::AccountKeys;
use crate::client::{Client, Target, now_ms};
use crate::local::{Chat, Local};
use crate::provider::Provider;

/// Kind of the self group in the profile's chat list.
pub(crate) const SELF_KIND: &str = "self";
/// Profile key: the device that set the current recovery key.
pub(crate) const RECOVERY_SET_BY: &str = "recovery_set_by";

/// Whether every member of `group`'s MLS state is a device of `me`.
pub(crate) fn only_my_devices(
    local: &Local,
    group: GroupId,
    me: &str,
) -> Result<bool, ClientError> {
    let provider = Provider::new(local.conn());
    Ok(mls::load_group(&provider, group)?.is_some_and(|g| {
        let members = mls::members(&g);
        !members.is_empty() && members.iter().all(|m| m.identity.username.as_str() == me)
    }))
}

/// Applies an account-sync message from `sender`'s device `sender_device` in `group`. Returns
/// whether it was believed (only then does it belong in the archive).
pub(crate) fn apply_incoming(
    local: &Local,
    group: GroupId,
    sender: &str,
    sender_device: DeviceId,
    me: &str,
    sync: &AccountSync,
) -> Result<bool, ClientError> {
    if sender != me || !only_my_devices(local, group, me)? {
        tracing::warn!(%group, "ignoring account-sync message outside the self group");
        return Ok(false);
    }
    match &sync.kind {
        Some(account_sync::Kind::Read(marker)) => apply_read(local, marker)?,
        Some(account_sync::Kind::ArchiveKey(key)) => {
            let Some(mut keys) = AccountKeys::load(local)? else {
                return Ok(true);
            };
            match SymmetricKey::from_bytes(&key.key) {
                Ok(new) => {
                    if keys.add_archive_key(key.generation, new) {
                        keys.save(local)?;
                    }
                }
                // A malformed key must not wedge the self group; the sender's next rotation
                // or a relink repairs it.
                Err(_) => tracing::warn!(%group, "ignoring a malformed archive key"),
            }
        }
        Some(account_sync::Kind::Recovery(recovery)) => {
            let Some(mut keys) = AccountKeys::load(local)? else {
                return Ok(true);
            };
            keys.recovery = Some(recovery.clone());
            keys.save(local)?;
            local.set_u64(RECOVERY_SET_BY, sender_device.0)?;
            local.push_notice(&format!(
                "Your account's recovery key was replaced by your device {sender_device}. If \
                 that was not you, revoke that device and run `chapar recovery-key --rotate`."
            ))?;
        }
        None => {}
    }
    Ok(true)
}

/// Applies what of an archived account-sync message still matters on a new device.
pub(crate) fn apply_restored(local: &Local, sync: &AccountSync) -> Result<(), ClientError> {
    match &sync.kind {
        Some(account_sync::Kind::Read(marker)) => apply_read(local, marker),
        // Keys come with the link approval or the recovery bundle, never from the archive.
        _ => Ok(()),
    }
}

fn apply_read(local: &Local, marker: &chapar_wire::content::ReadMarker) -> Result<(), ClientError> {
    if let Ok(group) = GroupId::from_slice(&marker.group_id) {
        local.mark_read(group, marker.seq)?;
    }
    Ok(())
}

/// Whether an account-sync message belongs in the archive: read markers do; keys never do (a
/// revoked device that kept an older archive key must not read newer keys from the archive).
pub(crate) fn archivable(sync: &AccountSync) -> bool {
    matches!(sync.kind, Some(account_sync::Kind::Read(_)))
}

impl Client {
    /// Creates the self group if this profile has none and is the account's only device (a
    /// fresh registration or a recovery). Other devices are added to the existing one.
    pub(crate) async fn ensure_self_group(&mut self) -> Result<(), ClientError> {
        if !self.self_groups()?.is_empty() {
            return Ok(());
        }
        let (local, conn, me) = self.parts()?;
        let group = GroupId(crate::client::random16());
        conn.request(Request::CreateGroup(v1::CreateGroup {
            group_id: group.as_bytes().to_vec(),
        }))
        .await?;
        let signer = me.signer();
        local.transaction(|l| {
            let provider = Provider::new(l.conn());
            mls::create_group(&provider, &signer, group)?;
            l.insert_chat(&Chat::new(group, SELF_KIND, "active", 0), now_ms())
        })?;
        Ok(())
    }

    /// The active groups made only of this account's devices.
    pub(crate) fn self_groups(&self) -> Result<Vec<GroupId>, ClientError> {
        let me = self.me()?.username.to_string();
        let mut out = Vec::new();
        for chat in self.local.chats()? {
            if chat.kind == SELF_KIND
                && chat.state == "active"
                && only_my_devices(&self.local, chat.group, &me)?
            {
                out.push(chat.group);
            }
        }
        Ok(out)
    }

    /// Sends an account-sync message to the account's other devices.
    pub(crate) async fn send_account_sync(
        &mut self,
        kind: account_sync::Kind,
    ) -> Result<(), ClientError> {
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
        &mut self,
        generation: u32,
        key: &SymmetricKey,
    ) -> Result<(), ClientError> {
        self.send_account_sync(account_sync::Kind::ArchiveKey(ArchiveKey {
            generation,
            key: key.as_bytes().to_vec(),
        }))
        .await
    }

    /// Marks a chat read up to its newest message, here and on the account's other devices.
    /// Returns the position it is read to.
    pub async fn mark_read(&mut self, target: &Target) -> Result<Seq, ClientError> {
        self.connect().await?;
        let group = self.resolve(target).await?;
        let chat = self
            .local
            .chat(group)?
            .ok_or_else(|| ClientError::Usage("no such chat on this device".into()))?;
        let seq = chat.position;
        self.local.mark_read(group, seq)?;
        self.send_account_sync(account_sync::Kind::Read(chapar_wire::content::ReadMarker {
            group_id: group.as_bytes().to_vec(),
            seq,
        }))
        .await?;
        Ok(seq)
    }
}
