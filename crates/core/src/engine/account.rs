//! Creating an account, and catching up with everything (the sync every command starts
//! from).

use chapar_crypto::identity::SecretKey;
use chapar_crypto::mls;
use chapar_types::{DeviceId, GroupId, Username};
use chapar_wire::v1::{self, client_frame::Request, response::Result as Reply};

use super::device::{Device, unexpected};
use super::sync::behind;
use crate::account_keys::AccountKeys;
use crate::events::Warning;
use crate::identity::{self, Identity, LAST_RESORT_UPLOADED, RESTORE_UNTIL};
use crate::{CoreError, Usage};

impl Device {
    /// Creates an account `username` on `server` with this profile as its first device, named
    /// `device_name`. Returns the recovery key, to be shown to the user once and never stored.
    pub(crate) async fn register(
        &self,
        server: &str,
        username: &str,
        device_name: &str,
        invite_code: &str,
    ) -> Result<String, CoreError> {
        self.require_empty_profile()?;
        super::link::check_name(device_name)?;
        let username = Username::parse(username).map_err(Usage::from)?;
        let me = Identity {
            server: server.trim_end_matches('/').to_owned(),
            username: username.clone(),
            device: DeviceId(self.env.random_u64()),
            account_key: self.env.with_rng(SecretKey::generate),
            device_key: self.env.with_rng(SecretKey::generate),
        };
        let challenge = self.hello().await?;
        let (key_packages, last_resort) =
            self.write(|tx| identity::make_key_packages(&self.mls(tx), &me, true))?;
        // The server's identity is pinned here, at first contact, for every later log-in.
        let server_id = self.io.server_id();
        let keys = AccountKeys::generate(&self.env, server_id.clone());
        let reply = self
            .call(Request::Register(v1::Register {
                username: username.to_string(),
                account_key: me.account_key.public().to_vec(),
                device: Some(me.certificate()),
                challenge_signature: me.answer(&challenge, &server_id),
                key_packages,
                last_resort_key_package: last_resort,
                sealed_name: keys.seal_device_name(&self.env, &username, me.device, device_name),
                // About 2^bits hashes: a second or so at the default, on a phone.
                proof_of_work: chapar_types::pow::solve(
                    &challenge,
                    username.as_str(),
                    self.io.registration_pow_bits(),
                ),
                invite_code: invite_code.to_owned(),
            }))
            .await?;
        if !matches!(reply, Reply::AuthOk(_)) {
            return Err(unexpected("AuthOk"));
        }
        self.become_device(me, &keys, None)?;
        self.write(|tx| tx.set_counter(LAST_RESORT_UPLOADED, 1))?;
        self.io.set_logged_in();
        self.ensure_self_group().await?;
        self.set_new_recovery_key().await
    }

    /// Joins welcomed groups, replays the archive on a new device, processes every group's
    /// new entries and settles this device's pending commits, commits pending proposals, brings
    /// groups in line with their accounts' devices, tells new members what their chats are,
    /// and uploads new history to the archive. What the user should see is noted for the job.
    pub(crate) async fn sync_all(&self) -> Result<(), CoreError> {
        self.connect().await?;
        self.sync_welcomes().await?;
        // A new device replays the archive before reading the logs, so that edits and
        // reactions in the logs find the messages they refer to.
        let restore_until = self.read(|tx| tx.counter(RESTORE_UNTIL))?;
        if restore_until > 0 {
            self.restore_archive().await?;
            if self.now_ms() >= restore_until {
                self.write(|tx| tx.set_counter(RESTORE_UNTIL, 0))?;
            }
        }
        let heads = self.heads().await?;
        for group in self.read(|tx| behind(tx, &heads))? {
            self.sync_group(group).await?;
            // One chat whose commit cannot be settled now must not stop every other one.
            if let Err(e) = self.prepare_group(group).await {
                if e.outcome_unknown() {
                    return Err(e);
                }
                self.warn(Warning::CommitUnsettled {
                    group,
                    reason: e.to_string(),
                });
            }
        }
        for chat in self.read(|tx| tx.chats())? {
            if chat.is_active() {
                self.commit_proposals_in(chat.group).await?;
            }
        }
        self.reconcile_rosters(&heads).await?;
        self.send_owed_meta().await?;
        let archived = heads.iter().map(|h| (h.group, h.archived_seq)).collect();
        self.upload_archive(&archived, false).await;
        Ok(())
    }

    /// Commits the proposals (members leaving) in `group` that nobody has committed yet.
    pub(crate) async fn commit_proposals_in(&self, group: GroupId) -> Result<(), CoreError> {
        let pending = self.read(|tx| {
            Ok(mls::load_group(&self.mls(tx), group)?
                .is_some_and(|g| g.pending_proposals().next().is_some()))
        })?;
        if pending {
            self.commit(group, |state, provider, signer| {
                Ok(mls::commit_pending_proposals(state, provider, signer)?)
            })
            .await?;
        }
        Ok(())
    }

    /// Makes a group ready for a new message: its last commit settled, and proposals waiting
    /// in it committed (MLS refuses to encrypt past either).
    pub(crate) async fn prepare_group(&self, group: GroupId) -> Result<(), CoreError> {
        self.settle_pending_commit(group).await?;
        self.commit_proposals_in(group).await
    }

    /// Tells the members of every chat owed its meta (devices added by a commit of this
    /// device) what the chat is.
    pub(crate) async fn send_owed_meta(&self) -> Result<(), CoreError> {
        for group in self.read(|tx| tx.chats_owed_meta())? {
            if let Some(chat) = self.read(|tx| tx.chat(group))? {
                self.send_group_meta(&chat).await?;
            }
        }
        Ok(())
    }
}
