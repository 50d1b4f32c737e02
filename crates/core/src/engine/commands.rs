//! The engine's commands and reads: what a client asks of a device. Each command starts a
//! [`Job`]; reads answer at once from the profile.

use chapar_types::{DeviceId, GroupId, MessageId, Username};
use chapar_wire::content::{self, StickerPack, app_message::Body};

use super::files::FileToken;
use super::{Engine, Job};
use crate::env::Env;
use crate::history;
use crate::model::{
    Approved, ChatMessage, ChatSummary, DeviceInfo, InstalledPack, Linked, Recovered, Revoked,
    Target,
};
use crate::routes::Routes;
use crate::storage::{Chat, Profile};
use crate::{CoreError, Usage};

impl Engine {
    // ---- who this is, and what it has (no network) ----

    /// The profile's account, once it has one.
    pub fn username(&self) -> Option<&Username> {
        self.device.me.get().map(|me| &me.username)
    }

    /// This device, once the profile has an account.
    pub fn device_id(&self) -> Option<DeviceId> {
        self.device.me.get().map(|me| me.device)
    }

    /// The server the account is on.
    pub fn server(&self) -> Option<&str> {
        self.device.me.get().map(|me| me.server.as_str())
    }

    /// The addresses to reach the account's server at now, best first: its own and the
    /// relays added, ordered by what worked, with a backoff from what failed
    /// ([`crate::routes`]).
    pub fn routes(&self) -> Result<Vec<String>, CoreError> {
        let server = self.server().ok_or(Usage::NoAccount)?.to_owned();
        let now = self.device.env.now_ms();
        self.device
            .profile
            .read(|tx| Ok(Routes::load(tx)?.order(&server, now)))
    }

    /// Records whether reaching the server at `address` worked.
    pub fn route_tried(&self, address: &str, worked: bool) -> Result<(), CoreError> {
        let now = self.device.env.now_ms();
        self.device.profile.write(|tx| {
            let mut routes = Routes::load(tx)?;
            if worked {
                routes.worked(address, now);
            } else {
                routes.failed(address, now);
            }
            routes.save(tx)
        })
    }

    /// The relays added to this profile, oldest first.
    pub fn relays(&self) -> Result<Vec<String>, CoreError> {
        self.device
            .profile
            .read(|tx| Ok(Routes::load(tx)?.relays().to_vec()))
    }

    /// Adds a relay address (a relay link) to try when the server's own address fails.
    /// Returns whether it is new.
    pub fn add_relay(&self, address: &str) -> Result<bool, CoreError> {
        let known_scheme = ["http://", "https://", "ws://", "wss://"]
            .iter()
            .any(|scheme| address.starts_with(scheme));
        if !known_scheme {
            return Err(Usage::InvalidServer(address.to_owned()).into());
        }
        self.device.profile.write(|tx| {
            let mut routes = Routes::load(tx)?;
            let added = routes.add_relay(address)?;
            routes.save(tx)?;
            Ok(added)
        })
    }

    /// Removes a relay. Returns whether it was there.
    pub fn remove_relay(&self, address: &str) -> Result<bool, CoreError> {
        self.device.profile.write(|tx| {
            let mut routes = Routes::load(tx)?;
            let removed = routes.remove_relay(address);
            routes.save(tx)?;
            Ok(removed)
        })
    }

    /// The profile (for a driver's own bookkeeping, such as uploads in progress).
    pub fn profile(&self) -> &Profile {
        &self.device.profile
    }

    /// The random number generator and clock the engine runs on.
    pub fn env(&self) -> &Env {
        &self.device.env
    }

    /// Local history of a chat (every direct chat with the user, for `@user`), oldest first.
    pub fn messages(&self, target: &Target) -> Result<Vec<ChatMessage>, CoreError> {
        self.device.messages(target)
    }

    /// One message as it is now.
    pub fn message(&self, group: GroupId, id: MessageId) -> Result<Option<ChatMessage>, CoreError> {
        self.device.read(|tx| history::message(tx, group, id))
    }

    /// The devices in a chat's MLS group.
    pub fn members(&self, target: &Target) -> Result<Vec<(Username, DeviceId)>, CoreError> {
        self.device.members(target)
    }

    /// Every chat (not the self group) with its unread count, oldest first.
    pub fn chats(&self) -> Result<Vec<ChatSummary>, CoreError> {
        self.device.chat_list()
    }

    /// One chat as this device knows it.
    pub fn chat(&self, group: GroupId) -> Result<Option<Chat>, CoreError> {
        self.device.read(|tx| tx.chat(group))
    }

    /// The MLS epoch this device is at in a chat, and whether it holds a commit not settled
    /// yet (for diagnostics and tests: two members at different epochs cannot read each
    /// other).
    pub fn epoch(&self, group: GroupId) -> Result<Option<(u64, bool)>, CoreError> {
        self.device.read(|tx| {
            let state = chapar_crypto::mls::load_group(&self.device.mls(tx), group)?;
            Ok(state.map(|g| {
                (
                    chapar_crypto::mls::epoch(&g),
                    chapar_crypto::mls::has_pending_commit(&g),
                )
            }))
        })
    }

    /// The file message `id` carries (in `chat`, if the id is in several chats), with its chat.
    pub fn file_of(
        &self,
        id: MessageId,
        chat: Option<&Target>,
    ) -> Result<(GroupId, content::File), CoreError> {
        self.device.file_named(id, chat)
    }

    /// The installed sticker packs.
    pub fn sticker_packs(&self) -> Result<Vec<InstalledPack>, CoreError> {
        self.device.sticker_packs()
    }

    /// Installs the pack a message shared; returns its id.
    pub fn install_sticker_pack(
        &self,
        message: MessageId,
        chat: Option<&Target>,
    ) -> Result<[u8; 16], CoreError> {
        self.device.install_sticker_pack(message, chat)
    }

    // ---- commands: each starts a job ----

    /// Creates an account with this profile as its first device; the result is the recovery
    /// key, to show once.
    pub fn register(
        &mut self,
        server: &str,
        username: &str,
        device_name: &str,
        invite_code: &str,
    ) -> Job<String> {
        let (server, username, name, invite) = (
            server.to_owned(),
            username.to_owned(),
            device_name.to_owned(),
            invite_code.to_owned(),
        );
        self.spawn(|d| async move { d.register(&server, &username, &name, &invite).await })
    }

    /// Makes this empty profile a new device of an account (see `link`): emits the code, asks
    /// [`crate::Question::JoinAccount`], and waits up to `wait_ms` for approval.
    pub fn link(&mut self, server: &str, device_name: &str, wait_ms: u64) -> Job<Linked> {
        let (server, name) = (server.to_owned(), device_name.to_owned());
        self.spawn(move |d| async move { d.link(&server, &name, wait_ms).await })
    }

    /// Approves a new device by the code it shows; asks [`crate::Question::ApproveDevice`].
    pub fn approve_link(&mut self, code: &str) -> Job<Approved> {
        let code = code.to_owned();
        self.spawn(|d| async move { d.approve_link(&code).await })
    }

    /// Restores an account on this empty profile with its recovery key.
    pub fn recover(
        &mut self,
        server: &str,
        username: &Username,
        recovery_key: &str,
        device_name: &str,
        revoke_others: bool,
    ) -> Job<Recovered> {
        let (server, username, key, name) = (
            server.to_owned(),
            username.clone(),
            recovery_key.to_owned(),
            device_name.to_owned(),
        );
        self.spawn(move |d| async move {
            d.recover(&server, &username, &key, &name, revoke_others)
                .await
        })
    }

    /// Logs in on the connection the driver just made (the account's server, whatever address
    /// was dialled; another server's identity is `WrongServer`).
    pub fn log_in(&mut self) -> Job<()> {
        self.spawn(|d| async move { d.connect().await })
    }

    /// The chat a target names, creating the direct chat with a user on first use.
    pub fn resolve(&mut self, target: &Target) -> Job<GroupId> {
        let target = target.clone();
        self.spawn(move |d| async move {
            d.connect().await?;
            d.resolve(&target).await
        })
    }

    /// Fetches, decrypts and stores everything new; the result is what changed, as it is now.
    pub fn sync(&mut self) -> Job<Vec<ChatMessage>> {
        self.spawn(|d| async move {
            d.take_seen();
            d.sync_all().await?;
            let mut out = Vec::new();
            for (group, id) in d.take_seen() {
                out.extend(d.read(|tx| history::message(tx, group, id))?);
            }
            Ok(out)
        })
    }

    /// Sends a text message; the result is the message once the server acknowledged it.
    pub fn send_text(
        &mut self,
        target: &Target,
        text: &str,
        reply_to: Option<MessageId>,
    ) -> Job<ChatMessage> {
        let (target, text) = (target.clone(), text.to_owned());
        self.spawn(move |d| async move { d.send_text(&target, &text, reply_to).await })
    }

    /// Edits one of this account's messages.
    pub fn edit(&mut self, target: &Target, id: MessageId, text: &str) -> Job<()> {
        let body = Body::Edit(content::Edit {
            target: id.as_bytes().to_vec(),
            text: text.to_owned(),
        });
        self.change(target, body)
    }

    /// Deletes one of this account's messages for everyone.
    pub fn delete(&mut self, target: &Target, id: MessageId) -> Job<()> {
        let body = Body::Delete(content::Delete {
            target: id.as_bytes().to_vec(),
        });
        self.change(target, body)
    }

    /// Adds (or with `remove`, withdraws) a reaction.
    pub fn react(&mut self, target: &Target, id: MessageId, emoji: &str, remove: bool) -> Job<()> {
        let body = Body::Reaction(content::Reaction {
            target: id.as_bytes().to_vec(),
            emoji: emoji.to_owned(),
            remove,
        });
        self.change(target, body)
    }

    fn change(&mut self, target: &Target, body: Body) -> Job<()> {
        let target = target.clone();
        self.spawn(move |d| async move { d.send_change(&target, body).await })
    }

    /// Creates a group chat; the result is its id.
    pub fn create_group(&mut self, name: &str, members: &[Username]) -> Job<GroupId> {
        let (name, members) = (name.to_owned(), members.to_vec());
        self.spawn(move |d| async move { d.create_group(&name, &members).await })
    }

    /// Adds every device of `user` to a group.
    pub fn add_member(&mut self, group: GroupId, user: &Username) -> Job<()> {
        let user = user.clone();
        self.spawn(move |d| async move { d.add_member(group, &user).await })
    }

    /// Removes every device of `user` from a group.
    pub fn remove_member(&mut self, group: GroupId, user: &Username) -> Job<()> {
        let user = user.clone();
        self.spawn(move |d| async move { d.remove_member(group, &user).await })
    }

    /// Leaves a group with every device of the account.
    pub fn leave(&mut self, group: GroupId) -> Job<()> {
        self.spawn(move |d| async move { d.leave(group).await })
    }

    /// Marks a chat read, here and on the account's other devices.
    pub fn mark_read(&mut self, target: &Target) -> Job<u64> {
        let target = target.clone();
        self.spawn(move |d| async move { d.mark_read(&target).await })
    }

    /// The safety number for the conversation with `user`.
    pub fn fingerprint(&mut self, user: &Username) -> Job<String> {
        let user = user.clone();
        self.spawn(move |d| async move { d.fingerprint(&user).await })
    }

    /// Trusts the changed key the server presents for `user` (after comparing the safety
    /// number `fingerprint` shows); the result says whether there was a change to trust.
    pub fn trust(&mut self, user: &Username) -> Job<bool> {
        let user = user.clone();
        self.spawn(move |d| async move { d.trust(&user).await })
    }

    /// The account's devices.
    pub fn devices(&mut self) -> Job<Vec<DeviceInfo>> {
        self.spawn(|d| async move { d.devices().await })
    }

    /// Revokes another device of the account.
    pub fn revoke_device(&mut self, device: DeviceId) -> Job<Revoked> {
        self.spawn(move |d| async move { d.revoke_device(device).await })
    }

    /// Replaces the recovery key; the result is the new one, to show once.
    pub fn rotate_recovery_key(&mut self) -> Job<String> {
        self.spawn(|d| async move { d.rotate_recovery_key().await })
    }

    /// A fresh token for the server's file endpoints.
    pub fn file_token(&mut self) -> Job<FileToken> {
        self.spawn(|d| async move { d.file_token().await })
    }

    /// Sends a file message (the file uploaded already). `forget_upload` names the driver's
    /// record of the upload, forgotten once the message is queued.
    pub fn send_file(
        &mut self,
        target: &Target,
        file: content::File,
        forget_upload: Option<String>,
    ) -> Job<ChatMessage> {
        let target = target.clone();
        self.spawn(move |d| async move { d.send_file(&target, file, forget_upload).await })
    }

    /// Sends the file of a message to another chat, without uploading it again.
    pub fn forward(
        &mut self,
        id: MessageId,
        from: Option<&Target>,
        target: &Target,
    ) -> Job<ChatMessage> {
        let (from, target) = (from.cloned(), target.clone());
        self.spawn(move |d| async move { d.forward(id, from.as_ref(), &target).await })
    }

    /// Installs a new sticker pack (its pictures uploaded already) and shares it with the
    /// account's other devices; the result is its id.
    pub fn add_sticker_pack(&mut self, pack: StickerPack) -> Job<[u8; 16]> {
        self.spawn(move |d| async move { d.add_sticker_pack(pack).await })
    }

    /// Sends an installed sticker pack to a chat.
    pub fn share_sticker_pack(&mut self, target: &Target, pack: [u8; 16]) -> Job<ChatMessage> {
        let target = target.clone();
        self.spawn(move |d| async move { d.share_sticker_pack(&target, pack).await })
    }

    /// Sends sticker `index` of an installed pack.
    pub fn send_sticker(
        &mut self,
        target: &Target,
        pack: [u8; 16],
        index: usize,
    ) -> Job<ChatMessage> {
        let target = target.clone();
        self.spawn(move |d| async move { d.send_sticker(&target, pack, index).await })
    }
}
