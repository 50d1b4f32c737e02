//! Chats and their members: finding the chat a target names (creating a direct chat on first
//! use), creating groups, adding and removing users, leaving, and checking the account keys and
//! device certificates that every added device must carry.

use chapar_crypto::mls::{self, VerifiedKeyPackage};
use chapar_crypto::safety_number::safety_number;
use chapar_types::limits::GROUP_NAME_BYTES_MAX;
use chapar_types::{DeviceId, GroupId, Username};
use chapar_wire::content::{self, app_message::Body};
use chapar_wire::v1::{self, client_frame::Request, response::Result as Reply};

use super::device::{Device, unexpected};
use super::sync::record_state;
use crate::events::{Event, Warning};
use crate::identity::verify_cert;
use crate::model::Target;
use crate::storage::{Chat, ChatKind, ChatState};
use crate::{CoreError, Usage};

/// Profile key: the last wrong key the server presented for this account (warned about).
const OWN_KEY_MISREPORTED: &str = "own_key_misreported";

impl Device {
    /// The chat a target names, creating the direct chat on first use.
    pub(crate) async fn resolve(&self, target: &Target) -> Result<GroupId, CoreError> {
        match target {
            Target::Group(group) => {
                if self
                    .read(|tx| tx.chat(*group))?
                    .is_none_or(|c| !c.is_active())
                {
                    // Perhaps this device was just added: the welcome is waiting.
                    self.sync_all().await?;
                }
                match self.read(|tx| tx.chat(*group))? {
                    Some(chat) if chat.kind == ChatKind::SelfGroup => {
                        Err(Usage::SelfGroupIsNotAChat.into())
                    }
                    Some(chat) if chat.is_active() => Ok(*group),
                    Some(_) => Err(Usage::NoLongerMember(*group).into()),
                    None => Err(Usage::UnknownGroup(*group).into()),
                }
            }
            Target::User(user) => {
                if *user == self.me()?.username {
                    return Err(Usage::DirectChatWithSelf.into());
                }
                // Nothing goes to someone whose key changed until the user trusts it.
                if self.read(|tx| tx.has_key_change(user))? {
                    return Err(Usage::KeyNotTrusted(user.clone()).into());
                }
                if let Some(group) = self.active_direct_chat(user)? {
                    return Ok(group);
                }
                // The other side may have started the chat already.
                self.sync_all().await?;
                if let Some(group) = self.active_direct_chat(user)? {
                    return Ok(group);
                }
                self.create_chat(ChatKind::Direct, user.as_str(), std::slice::from_ref(user))
                    .await
            }
        }
    }

    /// The chat a target names, if this device has it: never creates one, and reaches a
    /// contact whose key changed (marking a chat read tells only this account's devices).
    pub(crate) async fn existing_chat(&self, target: &Target) -> Result<GroupId, CoreError> {
        match target {
            Target::Group(_) => self.resolve(target).await,
            Target::User(user) => self
                .active_direct_chat(user)?
                .ok_or_else(|| Usage::NoSuchChat.into()),
        }
    }

    /// The active direct chat with `user`: one whose members are only this account's and
    /// `user`'s devices, whatever its label says (a member may have added someone, or called a
    /// group a direct chat).
    fn active_direct_chat(&self, user: &Username) -> Result<Option<GroupId>, CoreError> {
        let me = &self.me()?.username;
        self.read(|tx| {
            let provider = self.mls(tx);
            for chat in tx.direct_chats(user)? {
                if !chat.is_active() {
                    continue;
                }
                let only_us = mls::load_group(&provider, chat.group)?.is_some_and(|state| {
                    mls::members(&state)
                        .iter()
                        .all(|m| m.identity.username == *me || m.identity.username == *user)
                });
                if only_us {
                    return Ok(Some(chat.group));
                }
            }
            Ok(None)
        })
    }

    /// Creates a group chat named `name` with `members` and returns its id.
    pub(crate) async fn create_group(
        &self,
        name: &str,
        members: &[Username],
    ) -> Result<GroupId, CoreError> {
        if name.len() > GROUP_NAME_BYTES_MAX {
            return Err(Usage::TooLong {
                what: "a group name",
                max: GROUP_NAME_BYTES_MAX,
            }
            .into());
        }
        self.connect().await?;
        self.create_chat(ChatKind::Group, name, members).await
    }

    async fn create_chat(
        &self,
        kind: ChatKind,
        name: &str,
        members: &[Username],
    ) -> Result<GroupId, CoreError> {
        let me = self.me()?;
        let mut packages = Vec::new();
        for user in members.iter().filter(|u| **u != me.username) {
            let claimed = self.claim_verified(user, &[]).await?;
            if claimed.is_empty() {
                return Err(Usage::NoDeviceToAdd(user.clone()).into());
            }
            packages.extend(claimed);
        }
        // This account's other devices.
        packages.extend(self.claim_verified(&me.username, &[]).await?);
        let group = GroupId(self.env.random());
        self.call(Request::CreateGroup(v1::CreateGroup {
            group_id: group.as_bytes().to_vec(),
        }))
        .await?;
        let signer = me.signer();
        self.write(|tx| {
            mls::create_group(&self.mls(tx), &signer, group)?;
            let chat = match kind {
                ChatKind::Direct => Chat {
                    peer: Username::parse(name).ok(),
                    ..Chat::new(group, kind, ChatState::Active, 0)
                },
                _ => Chat {
                    name: name.to_owned(),
                    ..Chat::new(group, kind, ChatState::Active, 0)
                },
            };
            tx.insert_chat(&chat, self.now_ms())
        })?;
        self.io.emit(Event::ChatJoined(group));
        self.add_packages(group, packages).await?;
        Ok(group)
    }

    /// Adds verified key packages to a group and tells the new members what the chat is.
    pub(crate) async fn add_packages(
        &self,
        group: GroupId,
        packages: Vec<VerifiedKeyPackage>,
    ) -> Result<(), CoreError> {
        if packages.is_empty() {
            return Ok(());
        }
        self.commit(group, |state, provider, signer| {
            // Built anew on each attempt: after catching up, someone may have added some of
            // these devices already.
            let present: Vec<DeviceId> = mls::members(state)
                .iter()
                .map(|m| m.identity.device)
                .collect();
            let add: Vec<_> = packages
                .iter()
                .filter(|k| !present.contains(&k.identity.device))
                .cloned()
                .collect();
            if add.is_empty() {
                return Ok(None);
            }
            Ok(Some(mls::add_members(state, provider, signer, add)?))
        })
        .await?;
        // Whoever merged it (this commit, or a settled one), the added devices learn what the
        // chat is.
        self.send_owed_meta().await
    }

    /// Tells a group's (new) members what the chat is.
    pub(crate) async fn send_group_meta(&self, chat: &Chat) -> Result<(), CoreError> {
        let meta = match chat.kind {
            ChatKind::Direct => content::GroupMeta {
                kind: content::ChatKind::Direct as i32,
                name: chat
                    .peer
                    .as_ref()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default(),
            },
            ChatKind::SelfGroup => content::GroupMeta {
                kind: content::ChatKind::Self_ as i32,
                name: String::new(),
            },
            ChatKind::Group => content::GroupMeta {
                kind: content::ChatKind::Group as i32,
                name: chat.name.clone(),
            },
        };
        let group = chat.group;
        // Queued means told: the outbox delivers it.
        self.send_body_and(group, Body::GroupMeta(meta), |tx| {
            tx.set_meta_owed(group, false)
        })
        .await?;
        Ok(())
    }

    /// Claims one key package per device of `user` (only the listed devices, all if empty;
    /// never this device) and checks each against the account key, pinning the key on first
    /// use. Nothing is claimed from an account whose key is not the pinned one: that waits
    /// for the user's `trust`.
    pub(crate) async fn claim_verified(
        &self,
        user: &Username,
        only: &[DeviceId],
    ) -> Result<Vec<VerifiedKeyPackage>, CoreError> {
        let Reply::KeyPackages(reply) = self
            .call(Request::ClaimKeyPackages(v1::ClaimKeyPackages {
                username: user.to_string(),
                devices: only.iter().map(|d| d.0).collect(),
            }))
            .await?
        else {
            return Err(unexpected("KeyPackages"));
        };
        if !self.check_account_key(user, &reply.account_key)? {
            if *user == self.me()?.username {
                // A server lying about this account's own key adds no device (it was warned
                // about); this device's own work goes on.
                return Ok(Vec::new());
            }
            return Err(Usage::KeyNotTrusted(user.clone()).into());
        }
        let mut verified = Vec::new();
        self.read(|tx| {
            let provider = self.mls(tx);
            for device in reply.devices {
                let Some(cert) = device.device else { continue };
                if !only.is_empty() && !only.contains(&DeviceId(cert.device_id)) {
                    // Not what was asked for: the server has no say in who joins.
                    continue;
                }
                let checked = (if verify_cert(&reply.account_key, user, &cert) {
                    Ok(())
                } else {
                    Err(chapar_crypto::CryptoError::BadSignature)
                })
                .and_then(|()| mls::verify_key_package(&provider, &device.key_package))
                .and_then(|kp| {
                    let matches = kp.identity.username == *user
                        && kp.identity.device.0 == cert.device_id
                        && kp.signature_key == cert.device_key;
                    if !matches {
                        return Err(chapar_crypto::CryptoError::KeyPackageMismatch);
                    }
                    // The certificate the leaf itself carries is what every other member
                    // checks: one that does not verify would have them refuse the commit
                    // (and end the chat), so it is never committed.
                    kp.member().verify(&reply.account_key)?;
                    Ok(kp)
                });
                match checked {
                    Ok(kp) => verified.push(kp),
                    Err(e) => self.warn(Warning::UnverifiableDevice {
                        user: user.clone(),
                        reason: e.to_string(),
                    }),
                }
            }
            Ok(())
        })?;
        Ok(verified)
    }

    /// Compares `key`, which the server presents for `user`, with the pinned account key
    /// (pinning it on first contact). Returns whether it is the pinned key. A different key is
    /// never pinned here: it is recorded, warned about once, and waits for the user's word
    /// ([`Device::trust`]); this account's own key never changes at all.
    pub(crate) fn check_account_key(&self, user: &Username, key: &[u8]) -> Result<bool, CoreError> {
        let me = self.me()?;
        if *user == me.username {
            let own = me.account_key.public();
            // Warned about once per wrong key, not at every claim that repeats it.
            if key != own
                && self.write(|tx| {
                    let news = tx.value(OWN_KEY_MISREPORTED)?.as_deref() != Some(key);
                    tx.set_value(OWN_KEY_MISREPORTED, key)?;
                    Ok(news)
                })?
            {
                self.warn(Warning::OwnKeyMisreported);
            }
            return Ok(key == own);
        }
        let now = self.now_ms();
        let (trusted, news) = self.write(|tx| match tx.pinned_key(user)? {
            Some(pinned) if pinned == key => {
                tx.clear_presented_key(user)?;
                Ok((true, false))
            }
            Some(_) => Ok((false, tx.present_key(user, key)?)),
            None => {
                tx.pin_key(user, key, now)?;
                Ok((true, false))
            }
        })?;
        // Told once it is recorded.
        if news {
            self.warn(Warning::KeyChanged { user: user.clone() });
        }
        Ok(trusted)
    }

    /// The account `user` as the server lists it, with its key checked (see
    /// [`Self::check_account_key`]).
    async fn account(&self, user: &Username) -> Result<(v1::Account, bool), CoreError> {
        let Reply::Account(account) = self
            .call(Request::GetAccount(v1::GetAccount {
                username: user.to_string(),
            }))
            .await?
        else {
            return Err(unexpected("Account"));
        };
        let trusted = self.check_account_key(user, &account.account_key)?;
        Ok((account, trusted))
    }

    /// Trusts the key the server now presents for `user` in place of the pinned one, on the
    /// user's word (after comparing the safety number [`Self::fingerprint`] showed). Returns
    /// false if there was no change to trust. Groups with `user` are checked again at the next
    /// sync, so their devices follow the new key.
    pub(crate) async fn trust(&self, user: &Username) -> Result<bool, CoreError> {
        self.connect().await?;
        let (account, trusted) = self.account(user).await?;
        if trusted {
            return Ok(false);
        }
        let now = self.now_ms();
        self.write(|tx| {
            // Only the key whose safety number `fingerprint` last showed may be trusted: a
            // server that presents another now (or showed the pinned one to `fingerprint`
            // and a new one here) is not trusted on the strength of that comparison.
            if tx.shown_key(user)?.as_deref() != Some(account.account_key.as_slice()) {
                return Err(Usage::KeyChangedAgain(user.clone()).into());
            }
            tx.pin_key(user, &account.account_key, now)?;
            tx.forget_roster_checks()
        })?;
        self.sync_all().await?;
        Ok(true)
    }
    /// Adds every device of `user` to a group.
    pub(crate) async fn add_member(
        &self,
        group: GroupId,
        user: &Username,
    ) -> Result<(), CoreError> {
        self.connect().await?;
        self.sync_all().await?;
        let group = self.resolve(&Target::Group(group)).await?;
        // A retry after an unknown outcome finds the first attempt's commit settled here, and
        // claims no key packages for devices that are in already.
        self.settle_pending_commit(group).await?;
        if self.is_member(group, user)? {
            return self.send_owed_meta().await;
        }
        let packages = self.claim_verified(user, &[]).await?;
        if packages.is_empty() {
            return Err(Usage::NoDeviceToAdd(user.clone()).into());
        }
        self.add_packages(group, packages).await
    }

    /// Whether any device of `user` is in `group` (and not on its way out).
    fn is_member(&self, group: GroupId, user: &Username) -> Result<bool, CoreError> {
        self.read(|tx| {
            let Some(state) = mls::load_group(&self.mls(tx), group)? else {
                return Ok(false);
            };
            let leaving = mls::pending_removals(&state);
            Ok(mls::members(&state)
                .iter()
                .any(|m| m.identity.username == *user && !leaving.contains(&m.identity.device)))
        })
    }

    /// Removes every device of `user` from a group.
    pub(crate) async fn remove_member(
        &self,
        group: GroupId,
        user: &Username,
    ) -> Result<(), CoreError> {
        self.connect().await?;
        self.sync_all().await?;
        let group = self.resolve(&Target::Group(group)).await?;
        // A retry after an unknown outcome: the first attempt may have removed them already.
        self.settle_pending_commit(group).await?;
        if !self.is_member(group, user)? {
            return Err(Usage::NotInGroup(user.clone()).into());
        }
        self.commit(group, |state, provider, signer| {
            let devices: Vec<DeviceId> = mls::members(state)
                .into_iter()
                .filter(|m| m.identity.username == *user)
                .map(|m| m.identity.device)
                .collect();
            if devices.is_empty() {
                return Ok(None);
            }
            Ok(Some(mls::remove_devices(
                state, provider, signer, &devices,
            )?))
        })
        .await?;
        Ok(())
    }

    /// Leaves a group with every device of the account: removes the account's other devices
    /// in one commit, then proposes this device's removal; the server stops delivering to it
    /// at once and the next member to sync commits it. (A device leaving alone would be added
    /// back by the next roster check, its account being still in the group.)
    pub(crate) async fn leave(&self, group: GroupId) -> Result<(), CoreError> {
        self.connect().await?;
        self.sync_all().await?;
        let group = self.resolve(&Target::Group(group)).await?;
        let me = self.me()?;
        self.commit(group, |state, provider, signer| {
            let mine: Vec<DeviceId> = mls::members(state)
                .into_iter()
                .filter(|m| m.identity.username == me.username && m.identity.device != me.device)
                .map(|m| m.identity.device)
                .collect();
            if mine.is_empty() {
                return Ok(None);
            }
            Ok(Some(mls::remove_devices(state, provider, signer, &mine)?))
        })
        .await?;
        // A proposal cannot be made while a commit is pending.
        self.settle_pending_commit(group).await?;
        let signer = me.signer();
        let (proposal, epoch) = self.write(|tx| {
            let provider = self.mls(tx);
            let mut state = mls::load_group(&provider, group)?
                .ok_or_else(|| CoreError::Profile(format!("no MLS state for chat {group}")))?;
            Ok((
                mls::leave_group(&mut state, &provider, &signer)?,
                mls::epoch(&state),
            ))
        })?;
        let reply = self
            .call(Request::SubmitProposal(v1::SubmitProposal {
                group_id: group.as_bytes().to_vec(),
                epoch,
                proposal,
                self_remove: true,
            }))
            .await;
        let appended = match reply {
            Ok(Reply::Appended(appended)) => appended,
            failed => {
                // This device's own leave proposal must not stay queued: MLS encrypts nothing
                // past it, and it cannot commit it itself. If the server did store it, the
                // membership ended there, and the next sync says so.
                self.write(|tx| {
                    let provider = self.mls(tx);
                    if let Some(mut state) = mls::load_group(&provider, group)? {
                        mls::clear_pending_proposals(&mut state, &provider)?;
                    }
                    Ok(())
                })?;
                return Err(match failed {
                    Ok(_) => unexpected("Appended"),
                    Err(e) => e,
                });
            }
        };
        self.write(|tx| {
            tx.set_state(group, ChatState::Left)?;
            record_state(tx, me, group, appended.seq, ChatState::Left, self.now_ms())
        })?;
        self.io.emit(Event::ChatEnded(group));
        self.upload_archive(&Default::default(), false).await;
        Ok(())
    }

    /// The safety number for the conversation with `user`, over the key the server presents
    /// now: the pinned one, or a changed one (warned about) that [`Self::trust`] would pin.
    pub(crate) async fn fingerprint(&self, user: &Username) -> Result<String, CoreError> {
        self.connect().await?;
        let (account, _) = self.account(user).await?;
        self.write(|tx| tx.set_shown_key(user, &account.account_key))?;
        let me = self.me()?;
        let mine = me.account_key.public();
        Ok(safety_number(
            (&me.username, &mine),
            (user, &account.account_key),
        ))
    }
}
