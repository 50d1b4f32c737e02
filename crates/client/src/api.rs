//! The commands a native client runs, each one engine job run to its end over the
//! connection. The rules are all in `chapar-core`; this only connects first and waits.

use chapar_core::model::{
    ApprovalPreview, Approved, ChatMessage, ChatSummary, DeviceInfo, LinkPreview, Linked,
    Recovered, Revoked, Target,
};
use chapar_core::{CoreError, Question};
use chapar_types::{DeviceId, GroupId, MessageId, Username};

use crate::client::{Client, Hooks, NoHooks};

impl Client {
    /// The profile's username, once it has an account.
    pub fn username(&self) -> Option<&Username> {
        self.engine.username()
    }

    /// Creates an account with this profile as its first device. Returns the recovery key, to
    /// be shown to the user once and never stored.
    pub async fn register(
        &mut self,
        server: &str,
        username: &str,
        device_name: &str,
        invite_code: &str,
    ) -> Result<String, CoreError> {
        self.connect_to(server).await?;
        let job = self
            .engine
            .register(server, username, device_name, invite_code);
        self.run(job, &mut NoHooks).await
    }

    /// Makes this empty profile a new device of an account on `server`: `on_code` gets the
    /// link code to show (and this device's fingerprint), `confirm` decides whether to join the
    /// account that approved it. Waits up to `wait_ms` for the approval.
    pub async fn link(
        &mut self,
        server: &str,
        device_name: &str,
        wait_ms: u64,
        on_code: impl FnMut(&str, &str),
        confirm: impl FnMut(&ApprovalPreview) -> bool,
    ) -> Result<Linked, CoreError> {
        struct Linking<C, F>(C, F);
        impl<C: FnMut(&str, &str), F: FnMut(&ApprovalPreview) -> bool> Hooks for Linking<C, F> {
            fn question(&mut self, question: &Question) -> bool {
                match question {
                    Question::JoinAccount(preview) => (self.1)(preview),
                    Question::ApproveDevice(_) => false,
                }
            }
            fn link_code(&mut self, code: &str, fingerprint: &str) {
                (self.0)(code, fingerprint);
            }
        }
        self.connect_to(server).await?;
        let job = self.engine.link(server, device_name, wait_ms);
        self.run(job, &mut Linking(on_code, confirm)).await
    }

    /// Approves the link whose code the user typed, once `confirm` (shown both fingerprints)
    /// says yes; adds the new device to every chat.
    pub async fn approve_link(
        &mut self,
        code: &str,
        confirm: impl FnMut(&LinkPreview) -> bool,
    ) -> Result<Approved, CoreError> {
        struct Approving<F>(F);
        impl<F: FnMut(&LinkPreview) -> bool> Hooks for Approving<F> {
            fn question(&mut self, question: &Question) -> bool {
                match question {
                    Question::ApproveDevice(preview) => (self.0)(preview),
                    Question::JoinAccount(_) => false,
                }
            }
        }
        self.connect().await?;
        let job = self.engine.approve_link(code);
        self.run(job, &mut Approving(confirm)).await
    }

    /// Restores `username` on this empty profile with the recovery key.
    pub async fn recover(
        &mut self,
        server: &str,
        username: &str,
        recovery_key: &str,
        device_name: &str,
        revoke_others: bool,
    ) -> Result<Recovered, CoreError> {
        let username = Username::parse(username).map_err(chapar_core::Usage::from)?;
        self.connect_to(server).await?;
        let job = self
            .engine
            .recover(server, &username, recovery_key, device_name, revoke_others);
        self.run(job, &mut NoHooks).await
    }

    /// Fetches, decrypts and stores everything new; returns what changed.
    pub async fn sync(&mut self) -> Result<Vec<ChatMessage>, CoreError> {
        self.run_connected(|e| e.sync()).await
    }

    /// Sends a text message; returns it once the server acknowledged it.
    pub async fn send_text(
        &mut self,
        target: &Target,
        text: &str,
        reply_to: Option<MessageId>,
    ) -> Result<ChatMessage, CoreError> {
        self.run_connected(|e| e.send_text(target, text, reply_to))
            .await
    }

    /// Edits one of your messages.
    pub async fn edit(
        &mut self,
        target: &Target,
        id: MessageId,
        text: &str,
    ) -> Result<(), CoreError> {
        self.run_connected(|e| e.edit(target, id, text)).await
    }

    /// Deletes one of your messages for everyone.
    pub async fn delete(&mut self, target: &Target, id: MessageId) -> Result<(), CoreError> {
        self.run_connected(|e| e.delete(target, id)).await
    }

    /// Adds (or with `remove`, withdraws) a reaction.
    pub async fn react(
        &mut self,
        target: &Target,
        id: MessageId,
        emoji: &str,
        remove: bool,
    ) -> Result<(), CoreError> {
        self.run_connected(|e| e.react(target, id, emoji, remove))
            .await
    }

    /// Creates a group chat named `name` with `members`; returns its id.
    pub async fn create_group(
        &mut self,
        name: &str,
        members: &[Username],
    ) -> Result<GroupId, CoreError> {
        self.run_connected(|e| e.create_group(name, members)).await
    }

    /// Adds every device of `user` to a group.
    pub async fn add_member(&mut self, group: GroupId, user: &Username) -> Result<(), CoreError> {
        self.run_connected(|e| e.add_member(group, user)).await
    }

    /// Removes every device of `user` from a group.
    pub async fn remove_member(
        &mut self,
        group: GroupId,
        user: &Username,
    ) -> Result<(), CoreError> {
        self.run_connected(|e| e.remove_member(group, user)).await
    }

    /// Leaves a group with every device of the account.
    pub async fn leave(&mut self, group: GroupId) -> Result<(), CoreError> {
        self.run_connected(|e| e.leave(group)).await
    }

    /// Marks a chat read up to its newest message, on every device of the account.
    pub async fn mark_read(&mut self, target: &Target) -> Result<u64, CoreError> {
        self.run_connected(|e| e.mark_read(target)).await
    }

    /// The safety number for the conversation with `user`.
    pub async fn fingerprint(&mut self, user: &Username) -> Result<String, CoreError> {
        self.run_connected(|e| e.fingerprint(user)).await
    }

    /// Trusts the changed key the server presents for `user`, after the user compared the
    /// safety number; false if there was no change to trust.
    pub async fn trust(&mut self, user: &Username) -> Result<bool, CoreError> {
        self.run_connected(|e| e.trust(user)).await
    }

    /// The account's devices.
    pub async fn devices(&mut self) -> Result<Vec<DeviceInfo>, CoreError> {
        self.run_connected(|e| e.devices()).await
    }

    /// Revokes another device of the account.
    pub async fn revoke_device(&mut self, device: DeviceId) -> Result<Revoked, CoreError> {
        self.run_connected(|e| e.revoke_device(device)).await
    }

    /// Replaces the recovery key; returns the new one to show.
    pub async fn rotate_recovery_key(&mut self) -> Result<String, CoreError> {
        self.run_connected(|e| e.rotate_recovery_key()).await
    }

    /// Local history of a chat, oldest first.
    pub fn messages(&self, target: &Target) -> Result<Vec<ChatMessage>, CoreError> {
        self.engine.messages(target)
    }

    /// The devices in a chat's MLS group.
    pub fn members(&self, target: &Target) -> Result<Vec<(Username, DeviceId)>, CoreError> {
        self.engine.members(target)
    }

    /// Every chat on this device, with its unread count.
    pub fn chats(&self) -> Result<Vec<ChatSummary>, CoreError> {
        self.engine.chats()
    }
}
