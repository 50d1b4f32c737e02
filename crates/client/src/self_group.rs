//! The self group: an MLS group whose members are the account's own devices and nobody else.
//! It carries what the devices share but peers must not see: read positions, new archive keys
//! after a revocation, a new recovery public key. Being an ordinary MLS group, it follows the
//! account's devices like every chat (a revoked device is removed from it, so it never learns
//! the archive key made after its revocation).

use chapar_crypto::mls;
use chapar_crypto::seal::SymmetricKey;
use chapar_types::{GroupId, Seq};
use chapar_wire::content::{AccountSync, ArchiveKey, account_sync, app_message::Body};
use chapar_wire::v1::{self, client_frame::Request};

use crate::account_keys::AccountKeys;
use crate::client::{Client, Target, now_ms};
use crate::local::{Chat, Local};
use crate::provider::Provider;
use crate::{ClientError, archive};

/// Kind of the self group in the profile's chat list.
pub(crate) const SELF_KIND: &str = "self";

/// Applies an account-sync message from `sender` in `group`. Only messages from the account's
/// own devices, in a group this device knows as its self group, are believed.
pub(crate) fn apply_incoming(
    local: &Local,
    group: GroupId,
    sender: &str,
    me: &str,
    sync: &AccountSync,
) -> Result<(), ClientError> {
    let is_self = local.chat(group)?.is_some_and(|c| c.kind == SELF_KIND);
    if !is_self || sender != me {
        tracing::warn!(%group, "ignoring account-sync message outside the self group");
        return Ok(());
    }
    match &sync.kind {
        Some(account_sync::Kind::Read(marker)) => apply_read(local, marker),
        Some(account_sync::Kind::ArchiveKey(key)) => {
            let Some(mut keys) = AccountKeys::load(local)? else {
                return Ok(());
            };
            if keys.add_archive_key(key.generation, SymmetricKey::from_bytes(&key.key)?) {
                keys.save(local)?;
            }
            Ok(())
        }
        Some(account_sync::Kind::Recovery(recovery)) => {
            let Some(mut keys) = AccountKeys::load(local)? else {
                return Ok(());
            };
            keys.recovery = Some(recovery.clone());
            keys.save(local)
        }
        None => Ok(()),
    }
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
        if self.self_groups()?.next().is_some() {
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
            l.insert_chat(
                &Chat {
                    group,
                    kind: SELF_KIND.into(),
                    name: String::new(),
                    peer: None,
                    position: 0,
                    state: "active".into(),
                    read_seq: 0,
                    roster_seen: 0,
                },
                now_ms(),
            )
        })?;
        Ok(())
    }

    fn self_groups(&self) -> Result<impl Iterator<Item = GroupId>, ClientError> {
        Ok(self
            .local
            .chats()?
            .into_iter()
            .filter(|c| c.kind == SELF_KIND && c.state == "active")
            .map(|c| c.group))
    }

    /// Sends an account-sync message to the account's other devices.
    pub(crate) async fn send_account_sync(
        &mut self,
        kind: account_sync::Kind,
    ) -> Result<(), ClientError> {
        let groups: Vec<GroupId> = self.self_groups()?.collect();
        for group in groups {
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
        self.upload_archive_quietly().await;
        Ok(seq)
    }

    /// Uploads recorded history the archive lacks; a failure is logged, not returned, because
    /// the events stay recorded and the next sync uploads them.
    pub(crate) async fn upload_archive_quietly(&mut self) {
        let result = match (self.parts(), self.keys.as_ref()) {
            (Ok((local, conn, me)), Some(keys)) => {
                archive::upload(local, conn, me, keys, &Default::default()).await
            }
            _ => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not upload history to the archive; will retry");
        }
    }
}
