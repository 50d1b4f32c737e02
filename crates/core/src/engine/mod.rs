//! The engine: one device of an account, driven from outside.
//!
//! A driver (the native one in `chapar-client`, the web client's worker) owns the transport
//! and the clock's real time. It hands the engine what happens (`on_connected`,
//! `on_frame`, `on_disconnected`, `handle_timeout`, `answer`), and takes out what the engine
//! wants done (`poll_transmit`: frames to send; `next_timeout`: when to call back;
//! `poll_event`: typed events for the user). Commands (send a message, create a group, approve
//! a device...) start [`Job`]s; a job's result is taken with [`Engine::take_result`] once
//! [`Event::Done`] says it ended.
//!
//! Jobs run one at a time, in the order they were asked for, so two flows never interleave
//! their MLS changes. While no job runs and the device is logged in, the engine does its own
//! background work: it applies what the server pushes and archives history once quiet.

mod account;
mod archive;
mod chats;
mod commit;
mod device;
mod devices;
mod files;
mod io;
mod link;
mod messages;
mod pushes;
mod recovery;
mod roster;
pub(crate) mod self_group;
mod send;
mod sync;

use std::any::Any;
use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use chapar_types::{DeviceId, GroupId, MessageId, Username};
use chapar_wire::content::{self, StickerPack, app_message::Body};

pub use files::{FileToken, STICKERS_PER_PACK_MAX};
pub use io::{EVENTS_QUEUED_MAX, REQUEST_TIMEOUT_MS};
pub use link::LINK_PEER_WAIT_MS;

use device::Device;

use crate::CoreError;
use crate::env::Env;
use crate::events::{Event, JobId};
use crate::history;
use crate::model::{
    Approved, ChatMessage, ChatSummary, DeviceInfo, InstalledPack, Linked, Recovered, Revoked,
    Target,
};
use crate::storage::{Chat, Profile};

/// Results of ended jobs kept for [`Engine::take_result`] before the oldest are dropped.
pub const RESULTS_KEPT_MAX: usize = 256;

/// A started job whose result is a `T`.
#[derive(Debug)]
pub struct Job<T> {
    id: JobId,
    result: PhantomData<fn() -> T>,
}

impl<T> Job<T> {
    /// The job's id, as events name it.
    pub fn id(&self) -> JobId {
        self.id
    }
}

type JobFuture = Pin<Box<dyn Future<Output = Box<dyn Any>>>>;

struct Running {
    id: JobId,
    future: JobFuture,
    /// A job a caller asked for (its result is kept); background work is not.
    asked: bool,
}

/// A device of an account, sans I/O. See the module docs.
pub struct Engine {
    device: Rc<Device>,
    queue: VecDeque<Running>,
    current: Option<Running>,
    results: BTreeMap<JobId, Box<dyn Any>>,
    next_job: u64,
    /// When history that came by push is to be archived (after [`pushes::ARCHIVE_QUIET_MS`]
    /// of quiet).
    archive_due_ms: Rc<Cell<Option<u64>>>,
}

impl Engine {
    /// An engine over `profile`, with the clock and randomness of `env`.
    pub fn new(profile: Profile, env: Env) -> Result<Self, CoreError> {
        Ok(Self {
            device: Rc::new(Device::new(profile, env)?),
            queue: VecDeque::new(),
            current: None,
            results: BTreeMap::new(),
            next_job: 1,
            archive_due_ms: Rc::new(Cell::new(None)),
        })
    }

    // ---- the driver's side ----

    /// The transport is up (a fresh connection: nothing is established on it yet).
    pub fn on_connected(&mut self) {
        self.device.io.connected();
        self.drive();
    }

    /// The transport went away. Requests waiting for replies fail; their outcome is unknown.
    pub fn on_disconnected(&mut self) {
        self.device.io.disconnected();
        self.drive();
    }

    /// A frame arrived from the server.
    pub fn on_frame(&mut self, frame: &[u8]) {
        self.device.io.received(frame);
        self.drive();
    }

    /// The next frame to send, if any. Call until `None` after every other call.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.device.io.poll_transmit()
    }

    /// When (ms since the Unix epoch, on the environment's clock) [`Self::handle_timeout`]
    /// should be called next.
    pub fn next_timeout(&self) -> Option<u64> {
        // Background work runs only while idle and logged in: a deadline it cannot act on
        // would have the driver wake up for nothing, again and again.
        let archive = (self.is_idle() && self.device.io.is_logged_in())
            .then(|| self.archive_due_ms.get())
            .flatten();
        [self.device.io.next_deadline(), archive]
            .into_iter()
            .flatten()
            .min()
    }

    /// Time has passed: requests past their deadline fail, sleeping jobs wake.
    pub fn handle_timeout(&mut self) {
        self.device.io.expire();
        self.drive();
    }

    /// The next event for the user, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.device.io.poll_event()
    }

    /// Answers the question job `job` asked ([`Event::Question`]).
    pub fn answer(&mut self, job: JobId, yes: bool) {
        self.device.io.answer(job, yes);
        self.drive();
    }

    /// The result of a job that ended ([`Event::Done`]); `None` before that (or if it was
    /// taken already).
    pub fn take_result<T: 'static>(&mut self, job: &Job<T>) -> Option<Result<T, CoreError>> {
        let result = self.results.remove(&job.id)?;
        result
            .downcast::<Result<T, CoreError>>()
            .ok()
            .map(|boxed| *boxed)
    }

    /// No job is running or waiting.
    pub fn is_idle(&self) -> bool {
        self.current.is_none() && self.queue.is_empty()
    }

    /// Something is to be done now: a job, pushes to apply, or history due for the archive.
    pub fn has_work(&self) -> bool {
        !self.is_idle()
            || (self.device.io.is_logged_in()
                && (self.device.io.has_pushes()
                    || self
                        .archive_due_ms
                        .get()
                        .is_some_and(|due| due <= self.device.now_ms())))
    }

    /// Protocol bytes sent and received through this engine so far.
    pub fn traffic(&self) -> (u64, u64) {
        self.device.io.traffic()
    }

    fn spawn<T, F>(&mut self, make: impl FnOnce(Rc<Device>) -> F) -> Job<T>
    where
        T: 'static,
        F: Future<Output = Result<T, CoreError>> + 'static,
    {
        let id = JobId(self.next_job);
        self.next_job += 1;
        let job = make(self.device.clone());
        self.queue.push_back(Running {
            id,
            future: Box::pin(async move { Box::new(job.await) as Box<dyn Any> }),
            asked: true,
        });
        self.drive();
        Job {
            id,
            result: PhantomData,
        }
    }

    /// Work the engine does on its own while idle and logged in.
    fn background(&mut self) -> Option<Running> {
        let io = &self.device.io;
        if !io.is_logged_in() {
            return None;
        }
        let device = self.device.clone();
        let due = self.archive_due_ms.clone();
        let future: JobFuture = if io.has_pushes() {
            Box::pin(async move {
                match device.handle_pushes().await {
                    Ok(true) => due.set(Some(device.now_ms() + pushes::ARCHIVE_QUIET_MS)),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "could not apply what the server pushed"),
                }
                Box::new(()) as Box<dyn Any>
            })
        } else if due.get().is_some_and(|at| at <= device.now_ms()) {
            due.set(None);
            Box::pin(async move {
                device.upload_archive(&Default::default(), false).await;
                Box::new(()) as Box<dyn Any>
            })
        } else {
            return None;
        };
        let id = JobId(self.next_job);
        self.next_job += 1;
        Some(Running {
            id,
            future,
            asked: false,
        })
    }

    /// Polls jobs until the current one waits for something from outside.
    fn drive(&mut self) {
        let mut context = Context::from_waker(Waker::noop());
        loop {
            if self.current.is_none() {
                self.current = match self.queue.pop_front() {
                    Some(next) => Some(next),
                    None => self.background(),
                };
            }
            let Some(running) = self.current.as_mut() else {
                break;
            };
            self.device.io.set_current_job(Some(running.id));
            let Poll::Ready(result) = running.future.as_mut().poll(&mut context) else {
                break;
            };
            let (id, asked) = (running.id, running.asked);
            self.current = None;
            if asked {
                if self.results.len() >= RESULTS_KEPT_MAX {
                    self.results.pop_first();
                }
                self.results.insert(id, result);
                self.device.io.emit(Event::Done(id));
            }
        }
        self.device.io.set_current_job(None);
    }

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
    pub fn register(&mut self, server: &str, username: &str, device_name: &str) -> Job<String> {
        let (server, username, name) = (
            server.to_owned(),
            username.to_owned(),
            device_name.to_owned(),
        );
        self.spawn(|d| async move { d.register(&server, &username, &name).await })
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
            let seen = d.sync_all().await?;
            let mut out = Vec::new();
            for (group, id) in seen {
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
