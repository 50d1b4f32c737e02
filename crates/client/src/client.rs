//! The client: an account's device, with its profile, and a connection when it needs one.

use std::collections::HashMap;
use std::path::Path;

use chapar_crypto::identity::{self, SecretKey};
use chapar_crypto::mls::{
    self, DeviceIdentity, DeviceSigner, MlsGroup, OutgoingCommit, VerifiedKeyPackage,
};
use chapar_crypto::safety_number::safety_number;
use chapar_types::limits::{GROUP_NAME_BYTES_MAX, MESSAGE_TEXT_BYTES_MAX};
use chapar_types::{DeviceId, ErrorCode, GroupId, MessageId, Seq, Username};
use chapar_wire::content::{self, AppMessage, app_message::Body};
use chapar_wire::v1::{self, client_frame::Request, response::Result as Reply};
use prost::Message as _;
use rand::RngCore;

use crate::ClientError;
use crate::account_keys::AccountKeys;
use crate::archive::{self, RESTORE_UNTIL};
use crate::connection::Connection;
use crate::history::{self, ChatMessage};
use crate::local::{Chat, Local};
use crate::provider::Provider;
use crate::self_group::SELF_KIND;
use crate::sync::{self, Seen};

/// One-time key packages uploaded at registration and whenever the server runs low.
pub(crate) const KEY_PACKAGE_BATCH: usize = 20;
/// Below this many one-time key packages on the server, the device uploads a new batch.
const KEY_PACKAGE_LOW_WATER: u32 = 5;
/// How long `listen` waits for quiet before archiving what arrived (uploads are batched).
const LISTEN_ARCHIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
/// Profile key set once the device's last-resort key package is on the server.
pub(crate) const LAST_RESORT_UPLOADED: &str = "last_resort_uploaded";
/// How often a send or commit is rebuilt after a stale-epoch refusal before giving up.
const STALE_RETRIES_MAX: usize = 8;

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn random16() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

/// Who this profile is.
pub(crate) struct Identity {
    pub server: String,
    pub username: Username,
    pub device: DeviceId,
    pub account_key: SecretKey,
    pub device_key: SecretKey,
}

impl Identity {
    /// This device's certificate, signed by the account key.
    pub(crate) fn certificate(&self) -> v1::DeviceCert {
        let device_key = self.device_key.public().to_vec();
        v1::DeviceCert {
            device_id: self.device.0,
            account_signature: identity::certify_device(
                &self.account_key,
                &self.username,
                self.device,
                &device_key,
            ),
            device_key,
        }
    }

    /// This device's answer to a connection's login challenge.
    pub(crate) fn answer(&self, challenge: &[u8]) -> Vec<u8> {
        identity::answer_challenge(&self.device_key, challenge, self.device)
    }

    pub(crate) fn signer(&self) -> DeviceSigner {
        DeviceSigner::new(
            DeviceIdentity {
                username: self.username.clone(),
                device: self.device,
            },
            &self.device_key,
        )
    }

    pub(crate) fn load(local: &Local) -> Result<Option<Self>, ClientError> {
        let (Some(server), Some(username), Some(device), Some(account_key), Some(device_key)) = (
            local.get("server")?,
            local.get("username")?,
            local.device_id()?,
            local.get("account_key")?,
            local.get("device_key")?,
        ) else {
            return Ok(None);
        };
        let bad = || ClientError::Profile("the profile is damaged".into());
        Ok(Some(Self {
            server: String::from_utf8(server).map_err(|_| bad())?,
            username: Username::parse(&String::from_utf8_lossy(&username)).map_err(|_| bad())?,
            device,
            account_key: SecretKey::from_bytes(&account_key)?,
            device_key: SecretKey::from_bytes(&device_key)?,
        }))
    }
}

/// A batch of one-time key packages for `me` (and a last-resort one, or an empty vector), made
/// on the profile's MLS storage in one transaction.
pub(crate) fn make_key_packages(
    local: &Local,
    me: &Identity,
    last_resort: bool,
) -> Result<(Vec<Vec<u8>>, Vec<u8>), ClientError> {
    let signer = me.signer();
    local.transaction(|l| {
        let provider = Provider::new(l.conn());
        let one_time = (0..KEY_PACKAGE_BATCH)
            .map(|_| mls::new_key_package(&provider, &signer, false))
            .collect::<Result<Vec<_>, _>>()?;
        let last_resort = if last_resort {
            mls::new_key_package(&provider, &signer, true)?
        } else {
            Vec::new()
        };
        Ok((one_time, last_resort))
    })
}

/// Whether `cert` is a device certificate of `user` signed by `account_key`.
pub(crate) fn verify_cert(account_key: &[u8], user: &Username, cert: &v1::DeviceCert) -> bool {
    identity::verify_device_cert(
        account_key,
        user,
        DeviceId(cert.device_id),
        &cert.device_key,
        &cert.account_signature,
    )
    .is_ok()
}

/// What to do when the server presents an account key that differs from the pinned one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyChange {
    /// The user asked for this account (adding them, a fingerprint): warn loudly and pin the
    /// new key, as messengers do after a reinstall.
    Warn,
    /// Background work (bringing groups' devices up to date): keep the old pin, do nothing.
    Refuse,
}

/// Stores a device's identity and the account's keys in its profile. `restore` marks that the
/// archive must be replayed on the next sync (a linked or recovered device).
pub(crate) fn save_identity(
    l: &Local,
    me: &Identity,
    keys: &AccountKeys,
    restore: bool,
) -> Result<(), ClientError> {
    // One replay now; a link that did not complete extends the window.
    l.set_u64(RESTORE_UNTIL, if restore { now_ms() } else { 0 })?;
    l.set("server", me.server.as_bytes())?;
    l.set("username", me.username.as_str().as_bytes())?;
    l.set("device_id", &me.device.0.to_be_bytes())?;
    l.set("account_key", &me.account_key.to_bytes())?;
    l.set("device_key", &me.device_key.to_bytes())?;
    keys.save(l)?;
    l.pin_key(&me.username, &me.account_key.public(), now_ms())
}

/// Whether the server refused a message for a reason that sending it again cannot change.
fn refused_for_good(e: &ClientError) -> bool {
    matches!(
        e.code(),
        Some(
            ErrorCode::BadRequest
                | ErrorCode::TooLarge
                | ErrorCode::UnknownBlob
                | ErrorCode::UnknownGroup
                | ErrorCode::NotMember
        )
    )
}

/// What a command addresses: a person (their 1:1 chat) or a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `@username`: the direct chat with this user.
    User(Username),
    /// A group id.
    Group(GroupId),
}

impl Target {
    /// Parses `@name` or a 32-hex-digit group id.
    pub fn parse(text: &str) -> Result<Self, ClientError> {
        if text.starts_with('@') {
            return Username::parse(text)
                .map(Self::User)
                .map_err(|e| ClientError::Usage(e.to_string()));
        }
        text.parse().map(Self::Group).map_err(|_| {
            ClientError::Usage(format!("{text:?} is neither @username nor a group id"))
        })
    }
}

/// A device of an account, with its local profile.
pub struct Client {
    pub(crate) local: Local,
    pub(crate) me: Option<Identity>,
    pub(crate) keys: Option<AccountKeys>,
    pub(crate) conn: Option<Connection>,
    pub(crate) warnings: Vec<String>,
    /// What the last archive replay brought back (a new device's first sync).
    pub(crate) last_restore: archive::Restored,
}

impl Client {
    /// Opens the profile in `dir` (creating an empty one).
    pub fn open(dir: &Path) -> Result<Self, ClientError> {
        let local = Local::open(dir)?;
        let me = Identity::load(&local)?;
        let keys = AccountKeys::load(&local)?;
        Ok(Self {
            local,
            me,
            keys,
            conn: None,
            warnings: Vec::new(),
            last_restore: archive::Restored::default(),
        })
    }

    /// Warnings gathered since the last call (identity key changes, unverifiable devices).
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// The profile's username, once registered.
    pub fn username(&self) -> Option<&Username> {
        self.me.as_ref().map(|m| &m.username)
    }

    pub(crate) fn me(&self) -> Result<&Identity, ClientError> {
        self.me.as_ref().ok_or_else(|| {
            ClientError::Profile(
                "this profile has no account yet: run `chapar register` first".into(),
            )
        })
    }

    /// Creates an account with this profile as its first device, named `device_name`. Returns
    /// the recovery key, to be shown to the user once and never stored.
    pub async fn register(
        &mut self,
        server: &str,
        username: &str,
        device_name: &str,
    ) -> Result<String, ClientError> {
        if self.me.is_some() {
            return Err(ClientError::Profile(
                "this profile already has an account; use another --profile".into(),
            ));
        }
        let username = Username::parse(username).map_err(|e| ClientError::Usage(e.to_string()))?;
        let mut rng = rand::thread_rng();
        let me = Identity {
            server: server.trim_end_matches('/').to_owned(),
            username: username.clone(),
            device: DeviceId(rng.next_u64()),
            account_key: SecretKey::generate(&mut rng),
            device_key: SecretKey::generate(&mut rng),
        };
        let (key_packages, last_resort) = make_key_packages(&self.local, &me, true)?;
        let keys = AccountKeys::generate();
        let sealed_name = keys.seal_device_name(&username, me.device, device_name);
        let conn = Connection::open(&me.server).await?;
        let reply = conn
            .request(Request::Register(v1::Register {
                username: username.to_string(),
                account_key: me.account_key.public().to_vec(),
                device: Some(me.certificate()),
                challenge_signature: me.answer(conn.challenge()),
                key_packages,
                last_resort_key_package: last_resort,
                sealed_name,
            }))
            .await?;
        if !matches!(reply, Reply::AuthOk(_)) {
            return Err(ClientError::Protocol("expected AuthOk".into()));
        }
        self.local.transaction(|l| {
            save_identity(l, &me, &keys, false)?;
            l.set_u64(LAST_RESORT_UPLOADED, 1)
        })?;
        self.me = Some(me);
        self.keys = Some(keys);
        self.conn = Some(conn);
        self.ensure_self_group().await?;
        self.set_new_recovery_key().await
    }

    /// Connects and logs in if not connected yet; tops up key packages; retries queued sends.
    pub(crate) async fn connect(&mut self) -> Result<(), ClientError> {
        if self.conn.is_some() {
            return Ok(());
        }
        let me = self.me()?;
        let conn = Connection::open(&me.server).await?;
        let reply = conn
            .request(Request::Authenticate(v1::Authenticate {
                device_id: me.device.0,
                challenge_signature: me.answer(conn.challenge()),
            }))
            .await?;
        let Reply::AuthOk(ok) = reply else {
            return Err(ClientError::Protocol("expected AuthOk".into()));
        };
        // A linked device uploads its first key packages here, with its last-resort one; any
        // device tops up when the server runs low.
        let needs_last_resort = self.local.get_u64(LAST_RESORT_UPLOADED)? == 0;
        if ok.key_packages_remaining < KEY_PACKAGE_LOW_WATER || needs_last_resort {
            let (fresh, last_resort) = make_key_packages(&self.local, me, needs_last_resort)?;
            conn.request(Request::UploadKeyPackages(v1::UploadKeyPackages {
                key_packages: fresh,
                last_resort_key_package: last_resort,
            }))
            .await?;
            self.local.set_u64(LAST_RESORT_UPLOADED, 1)?;
        }
        if self.keys.is_none() {
            // A profile made before accounts had archive keys: start a key ring.
            let keys = AccountKeys::generate();
            keys.save(&self.local)?;
            self.keys = Some(keys);
        }
        self.conn = Some(conn);
        self.flush_outbox().await
    }

    pub(crate) fn parts(&self) -> Result<(&Local, &Connection, &Identity), ClientError> {
        let conn = self
            .conn
            .as_ref()
            .ok_or_else(|| ClientError::Connection("not connected".into()))?;
        Ok((&self.local, conn, self.me()?))
    }

    /// Sends messages that were queued but never acknowledged (the server deduplicates).
    async fn flush_outbox(&mut self) -> Result<(), ClientError> {
        for (group, id, body) in self.local.outbox()? {
            if self.local.chat(group)?.is_none_or(|c| c.state != "active") {
                self.local.mark_sent(group, id, 0)?;
                continue;
            }
            // A retried delete no longer knows the file it deleted (the local copy is gone):
            // the blob then stays referenced, which costs space, never data.
            let references = crate::files::references::of(&self.local, group, &body);
            match self.deliver(group, id, &body, &references).await {
                Ok(_) => {}
                Err(e) if refused_for_good(&e) => {
                    // Sending it again would be refused again: drop it rather than let it
                    // block every later command.
                    self.local.mark_sent(group, id, 0)?;
                    self.warnings.push(format!(
                        "a queued message to chat {group} was refused and dropped: {e}"
                    ));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Fetches everything new: welcomes, then every chat's log. Returns what the user should see.
    pub async fn sync(&mut self) -> Result<Vec<ChatMessage>, ClientError> {
        self.connect().await?;
        let seen = self.sync_inner().await?;
        self.render(&seen)
    }

    /// Joins welcomed groups, replays the archive on a new device, processes every group's
    /// new entries, commits pending proposals, brings groups in line with their accounts'
    /// devices, and uploads new history to the archive.
    pub(crate) async fn sync_inner(&mut self) -> Result<Vec<Seen>, ClientError> {
        let (local, conn, me) = self.parts()?;
        let mut seen = Vec::new();
        sync::sync_welcomes(local, conn, me).await?;
        // A new device replays the archive before reading the logs, so that edits and
        // reactions in the logs find the messages they refer to.
        let restore_until = local.get_u64(RESTORE_UNTIL)?;
        if restore_until > 0
            && let Some(keys) = &self.keys
        {
            let restored = archive::restore(local, conn, me, keys).await?;
            if now_ms() >= restore_until {
                local.set_u64(RESTORE_UNTIL, 0)?;
            }
            self.last_restore += restored;
        }
        let (local, conn, me) = self.parts()?;
        let heads = sync::heads(conn).await?;
        for group in sync::behind(local, &heads)? {
            seen.extend(sync::sync_group(local, conn, me, group).await?);
        }
        self.commit_pending_proposals().await?;
        self.reconcile_rosters(&heads).await?;
        // The self group may have brought a new archive key.
        self.keys = AccountKeys::load(&self.local)?.or(self.keys.take());
        let archived = heads.iter().map(|h| (h.group, h.archived_seq)).collect();
        self.upload_archive(&archived, false).await;
        self.warnings.extend(self.local.take_notices()?);
        Ok(seen)
    }

    /// Uploads recorded history the archive lacks (see `archive::upload`). A failure is a
    /// warning, not an error: the events stay recorded and a later sync uploads them.
    pub(crate) async fn upload_archive(&mut self, archived: &HashMap<GroupId, Seq>, force: bool) {
        let result = match (self.parts(), self.keys.as_ref()) {
            (Ok((local, conn, me)), Some(keys)) => {
                archive::upload(local, conn, me, keys, archived, force).await
            }
            _ => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not upload history to the archive; will retry");
        }
    }

    /// Commits proposals (members leaving) that nobody has committed yet.
    async fn commit_pending_proposals(&mut self) -> Result<(), ClientError> {
        for chat in self.local.chats()? {
            if chat.state != "active" {
                continue;
            }
            let provider = Provider::new(self.local.conn());
            let pending = mls::load_group(&provider, chat.group)?
                .is_some_and(|g| g.pending_proposals().next().is_some());
            if pending {
                self.commit(chat.group, |g, p, s| {
                    mls::commit_pending_proposals(g, p, s)?
                        .ok_or_else(|| ClientError::Usage("nothing to commit".into()))
                })
                .await
                .or_else(|e| {
                    if matches!(e, ClientError::Usage(_)) {
                        Ok(0)
                    } else {
                        Err(e)
                    }
                })?;
            }
        }
        Ok(())
    }

    fn render(&self, seen: &[Seen]) -> Result<Vec<ChatMessage>, ClientError> {
        let mut out = Vec::new();
        for (group, id) in seen {
            let label = self
                .local
                .chat(*group)?
                .map(|c| c.label())
                .unwrap_or_else(|| group.to_string());
            out.extend(history::message(&self.local, &label, *group, *id)?);
        }
        Ok(out)
    }

    /// The chat a target names, creating the direct chat on first use.
    pub(crate) async fn resolve(&mut self, target: &Target) -> Result<GroupId, ClientError> {
        match target {
            Target::Group(group) => {
                if self.local.chat(*group)?.is_none_or(|c| c.state != "active") {
                    // Perhaps we were just added: the welcome is waiting.
                    self.sync_inner().await?;
                }
                match self.local.chat(*group)? {
                    Some(chat) if chat.kind == SELF_KIND => Err(ClientError::Usage(
                        "that is the group of your own devices, not a chat".into(),
                    )),
                    Some(chat) if chat.state == "active" => Ok(*group),
                    Some(_) => Err(ClientError::Usage(format!(
                        "you are no longer a member of {group}"
                    ))),
                    None => Err(ClientError::Usage(format!("unknown group {group}"))),
                }
            }
            Target::User(user) => {
                if Some(user) == self.username() {
                    return Err(ClientError::Usage(
                        "a direct chat needs another user".into(),
                    ));
                }
                if let Some(chat) = self
                    .local
                    .direct_chats(user)?
                    .into_iter()
                    .find(|c| c.state == "active")
                {
                    return Ok(chat.group);
                }
                // The other side may have started the chat already.
                self.sync_inner().await?;
                if let Some(chat) = self
                    .local
                    .direct_chats(user)?
                    .into_iter()
                    .find(|c| c.state == "active")
                {
                    return Ok(chat.group);
                }
                self.create_chat("direct", user.as_str(), std::slice::from_ref(user))
                    .await
            }
        }
    }

    /// Creates a group chat named `name` with `members` and returns its id.
    pub async fn create_group(
        &mut self,
        name: &str,
        members: &[Username],
    ) -> Result<GroupId, ClientError> {
        if name.len() > GROUP_NAME_BYTES_MAX {
            return Err(ClientError::Usage(format!(
                "a group name has at most {GROUP_NAME_BYTES_MAX} bytes"
            )));
        }
        self.connect().await?;
        self.create_chat("group", name, members).await
    }

    async fn create_chat(
        &mut self,
        kind: &str,
        name: &str,
        members: &[Username],
    ) -> Result<GroupId, ClientError> {
        self.connect().await?;
        let me = self.me()?.username.clone();
        let mut packages = Vec::new();
        for user in members.iter().filter(|u| **u != me) {
            let claimed = self.claim_verified(user).await?;
            if claimed.is_empty() {
                return Err(ClientError::Server {
                    code: ErrorCode::NoKeyPackage,
                    message: format!("@{user} has no device that can be added"),
                    position: 0,
                });
            }
            packages.extend(claimed);
        }
        packages.extend(self.claim_verified(&me).await?); // my other devices
        let group = GroupId(random16());
        let (local, conn, me_id) = self.parts()?;
        conn.request(Request::CreateGroup(v1::CreateGroup {
            group_id: group.as_bytes().to_vec(),
        }))
        .await?;
        let signer = me_id.signer();
        local.transaction(|l| {
            let provider = Provider::new(l.conn());
            mls::create_group(&provider, &signer, group)?;
            let peer = (kind == "direct").then(|| name.to_owned());
            let name = if kind == "direct" {
                String::new()
            } else {
                name.to_owned()
            };
            l.insert_chat(
                &Chat {
                    name,
                    peer,
                    ..Chat::new(group, kind, "active", 0)
                },
                now_ms(),
            )
        })?;
        self.add_packages(group, packages).await?;
        Ok(group)
    }

    /// Adds verified key packages to a group and tells the new members what the chat is.
    pub(crate) async fn add_packages(
        &mut self,
        group: GroupId,
        packages: Vec<VerifiedKeyPackage>,
    ) -> Result<(), ClientError> {
        if packages.is_empty() {
            return Ok(());
        }
        let mut packages = Some(packages);
        self.commit(group, move |g, p, s| {
            let packages = packages
                .take()
                .ok_or_else(|| ClientError::Usage("key packages already used".into()))?;
            Ok(mls::add_members(g, p, s, packages)?)
        })
        .await?;
        let chat = self
            .local
            .chat(group)?
            .ok_or_else(|| ClientError::Usage("chat vanished".into()))?;
        self.send_group_meta(&chat).await
    }

    /// Tells a group's (new) members what the chat is.
    pub(crate) async fn send_group_meta(&mut self, chat: &Chat) -> Result<(), ClientError> {
        let meta = match chat.kind.as_str() {
            "direct" => content::GroupMeta {
                kind: content::ChatKind::Direct as i32,
                name: chat.peer.clone().unwrap_or_default(),
            },
            SELF_KIND => content::GroupMeta {
                kind: content::ChatKind::Self_ as i32,
                name: String::new(),
            },
            _ => content::GroupMeta {
                kind: content::ChatKind::Group as i32,
                name: chat.name.clone(),
            },
        };
        self.send_body(chat.group, Body::GroupMeta(meta)).await?;
        Ok(())
    }

    /// Builds a commit with `make`, submits it at the log's head and merges it once accepted.
    /// A stale-epoch refusal discards it, catches up and builds it again.
    pub(crate) async fn commit(
        &mut self,
        group: GroupId,
        mut make: impl FnMut(
            &mut MlsGroup,
            &Provider<'_>,
            &DeviceSigner,
        ) -> Result<OutgoingCommit, ClientError>,
    ) -> Result<Seq, ClientError> {
        for _ in 0..STALE_RETRIES_MAX {
            let (local, conn, me) = self.parts()?;
            let signer = me.signer();
            let (out, epoch, seen) = local.transaction(|l| {
                let provider = Provider::new(l.conn());
                let mut g = mls::load_group(&provider, group)?
                    .ok_or_else(|| ClientError::Usage(format!("no MLS state for {group}")))?;
                let chat = l
                    .chat(group)?
                    .ok_or_else(|| ClientError::Usage(format!("unknown chat {group}")))?;
                let epoch = mls::epoch(&g);
                Ok((make(&mut g, &provider, &signer)?, epoch, chat.position))
            })?;
            let reply = conn
                .request(Request::SubmitCommit(v1::SubmitCommit {
                    group_id: group.as_bytes().to_vec(),
                    epoch,
                    seen_seq: seen,
                    commit: out.commit,
                    welcome: out.welcome.unwrap_or_default(),
                    added_devices: out.added.iter().map(|d| d.0).collect(),
                    removed_devices: out.removed.iter().map(|d| d.0).collect(),
                }))
                .await;
            match reply {
                Ok(Reply::Appended(appended)) => {
                    local.transaction(|l| {
                        let provider = Provider::new(l.conn());
                        if let Some(mut g) = mls::load_group(&provider, group)? {
                            mls::merge_pending_commit(&mut g, &provider)?;
                        }
                        l.set_position(group, appended.seq)
                    })?;
                    return Ok(appended.seq);
                }
                Ok(_) => return Err(ClientError::Protocol("expected Appended".into())),
                Err(e) if e.code() == Some(ErrorCode::StaleEpoch) => {
                    // sync_group discards the refused pending commit once it reaches the head.
                    sync::sync_group(local, conn, me, group).await?;
                }
                Err(e) => {
                    local.transaction(|l| {
                        let provider = Provider::new(l.conn());
                        if let Some(mut g) = mls::load_group(&provider, group)? {
                            mls::discard_pending_commit(&mut g, &provider)?;
                        }
                        Ok(())
                    })?;
                    return Err(e);
                }
            }
        }
        Err(ClientError::Server {
            code: ErrorCode::StaleEpoch,
            message: "the group kept changing; try again".into(),
            position: 0,
        })
    }

    /// Claims one key package per device of `user` (other than this one) and checks each against
    /// the account key, pinning the key on first use and warning loudly if it changed.
    async fn claim_verified(
        &mut self,
        user: &Username,
    ) -> Result<Vec<VerifiedKeyPackage>, ClientError> {
        self.claim_verified_devices(user, &[], KeyChange::Warn)
            .await
    }

    /// Like [`Self::claim_verified`], for only the listed devices (all if empty), and with a
    /// choice of what a changed account key means: with [`KeyChange::Refuse`] nothing is
    /// claimed from an account whose key is not the pinned one.
    pub(crate) async fn claim_verified_devices(
        &mut self,
        user: &Username,
        only: &[DeviceId],
        on_key_change: KeyChange,
    ) -> Result<Vec<VerifiedKeyPackage>, ClientError> {
        let (_, conn, _) = self.parts()?;
        let Reply::KeyPackages(reply) = conn
            .request(Request::ClaimKeyPackages(v1::ClaimKeyPackages {
                username: user.to_string(),
                devices: only.iter().map(|d| d.0).collect(),
            }))
            .await?
        else {
            return Err(ClientError::Protocol("expected KeyPackages".into()));
        };
        if !self.check_account_key(user, &reply.account_key, on_key_change)? {
            return Ok(Vec::new());
        }
        let provider = Provider::new(self.local.conn());
        let mut verified = Vec::new();
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
                if matches {
                    Ok(kp)
                } else {
                    Err(chapar_crypto::CryptoError::KeyPackageMismatch)
                }
            });
            match checked {
                Ok(kp) => verified.push(kp),
                Err(e) => self.warnings.push(format!(
                    "skipping a device of @{user} that does not verify: {e}"
                )),
            }
        }
        Ok(verified)
    }

    /// Compares `key` with the account key pinned for `user` (pinning it on first contact).
    /// Returns whether the key is the pinned one now; a change is always warned about, and
    /// re-pinned only with [`KeyChange::Warn`].
    pub(crate) fn check_account_key(
        &mut self,
        user: &Username,
        key: &[u8],
        on_change: KeyChange,
    ) -> Result<bool, ClientError> {
        match self.local.pinned_key(user)? {
            Some(pinned) if pinned == key => Ok(true),
            Some(_) => {
                self.warnings.push(format!(
                    "WARNING: the identity key of @{user} has CHANGED. Someone may be impersonating them, \
                     or they reinstalled. Compare safety numbers with `chapar fingerprint @{user}` before trusting new messages."
                ));
                if on_change == KeyChange::Refuse {
                    return Ok(false);
                }
                self.local.pin_key(user, key, now_ms())?;
                Ok(true)
            }
            None => {
                self.local.pin_key(user, key, now_ms())?;
                Ok(true)
            }
        }
    }

    /// Adds every device of `user` to a group.
    pub async fn add_member(&mut self, group: GroupId, user: &Username) -> Result<(), ClientError> {
        self.connect().await?;
        self.sync_inner().await?;
        let group = self.resolve(&Target::Group(group)).await?;
        let packages = self.claim_verified(user).await?;
        if packages.is_empty() {
            return Err(ClientError::Server {
                code: ErrorCode::NoKeyPackage,
                message: format!("@{user} has no device that can be added"),
                position: 0,
            });
        }
        self.add_packages(group, packages).await
    }

    /// Removes every device of `user` from a group.
    pub async fn remove_member(
        &mut self,
        group: GroupId,
        user: &Username,
    ) -> Result<(), ClientError> {
        self.connect().await?;
        self.sync_inner().await?;
        let group = self.resolve(&Target::Group(group)).await?;
        let user = user.clone();
        self.commit(group, move |g, p, s| {
            let devices: Vec<DeviceId> = mls::members(g)
                .into_iter()
                .filter(|m| m.identity.username == user)
                .map(|m| m.identity.device)
                .collect();
            if devices.is_empty() {
                return Err(ClientError::Usage(format!("@{user} is not in this group")));
            }
            Ok(mls::remove_devices(g, p, s, &devices)?)
        })
        .await?;
        Ok(())
    }

    /// Leaves a group with every device of the account: removes the account's other devices
    /// in one commit, then proposes this device's removal; the server stops delivering to it at
    /// once and the next member to sync commits it. (A device leaving alone would be added
    /// back by the next roster check, its account being still in the group.)
    pub async fn leave(&mut self, group: GroupId) -> Result<(), ClientError> {
        self.connect().await?;
        self.sync_inner().await?;
        let group = self.resolve(&Target::Group(group)).await?;
        let (username, device) = (self.me()?.username.clone(), self.me()?.device);
        let removed = self
            .commit(group, move |g, p, s| {
                let mine: Vec<DeviceId> = mls::members(g)
                    .into_iter()
                    .filter(|m| m.identity.username == username && m.identity.device != device)
                    .map(|m| m.identity.device)
                    .collect();
                if mine.is_empty() {
                    return Err(ClientError::Usage("no other device here".into()));
                }
                Ok(mls::remove_devices(g, p, s, &mine)?)
            })
            .await;
        match removed {
            Ok(_) | Err(ClientError::Usage(_)) => {}
            Err(e) => return Err(e),
        }
        let (local, conn, me) = self.parts()?;
        let signer = me.signer();
        let (proposal, epoch) = local.transaction(|l| {
            let provider = Provider::new(l.conn());
            let mut g = mls::load_group(&provider, group)?
                .ok_or_else(|| ClientError::Usage(format!("no MLS state for {group}")))?;
            Ok((
                mls::leave_group(&mut g, &provider, &signer)?,
                mls::epoch(&g),
            ))
        })?;
        let reply = conn
            .request(Request::SubmitProposal(v1::SubmitProposal {
                group_id: group.as_bytes().to_vec(),
                epoch,
                proposal,
                self_remove: true,
            }))
            .await?;
        let seq = match reply {
            Reply::Appended(appended) => appended.seq,
            _ => return Err(ClientError::Protocol("expected Appended".into())),
        };
        local.transaction(|l| {
            l.set_state(group, "left")?;
            sync::record_state(l, me, group, seq, "left")
        })?;
        self.upload_archive(&HashMap::new(), false).await;
        Ok(())
    }

    /// Sends a text message; returns it once the server acknowledged it.
    pub async fn send_text(
        &mut self,
        target: &Target,
        text: &str,
        reply_to: Option<MessageId>,
    ) -> Result<ChatMessage, ClientError> {
        if text.len() > MESSAGE_TEXT_BYTES_MAX {
            return Err(ClientError::Usage(format!(
                "a message has at most {MESSAGE_TEXT_BYTES_MAX} bytes"
            )));
        }
        self.connect().await?;
        let group = self.resolve(target).await?;
        let body = Body::Text(content::Text {
            text: text.to_owned(),
            reply_to: reply_to.map(|r| r.as_bytes().to_vec()).unwrap_or_default(),
        });
        self.send_and_show(group, body).await
    }

    /// Edits one of your messages.
    pub async fn edit(
        &mut self,
        target: &Target,
        id: MessageId,
        text: &str,
    ) -> Result<(), ClientError> {
        self.connect().await?;
        let group = self.resolve(target).await?;
        self.send_body(
            group,
            Body::Edit(content::Edit {
                target: id.as_bytes().to_vec(),
                text: text.to_owned(),
            }),
        )
        .await
        .map(drop)
    }

    /// Deletes one of your messages for everyone.
    pub async fn delete(&mut self, target: &Target, id: MessageId) -> Result<(), ClientError> {
        self.connect().await?;
        let group = self.resolve(target).await?;
        self.send_body(
            group,
            Body::Delete(content::Delete {
                target: id.as_bytes().to_vec(),
            }),
        )
        .await
        .map(drop)
    }

    /// Adds (or with `remove`, withdraws) a reaction.
    pub async fn react(
        &mut self,
        target: &Target,
        id: MessageId,
        emoji: &str,
        remove: bool,
    ) -> Result<(), ClientError> {
        self.connect().await?;
        let group = self.resolve(target).await?;
        self.send_body(
            group,
            Body::Reaction(content::Reaction {
                target: id.as_bytes().to_vec(),
                emoji: emoji.to_owned(),
                remove,
            }),
        )
        .await
        .map(drop)
    }

    /// Stores the message locally and in the outbox, then delivers it and archives it.
    pub(crate) async fn send_body(
        &mut self,
        group: GroupId,
        body: Body,
    ) -> Result<MessageId, ClientError> {
        self.send_body_and(group, body, |_| Ok(())).await
    }

    /// Like [`Self::send_body`], running `also` in the transaction that queues the message
    /// (what must change exactly when the message is on its way, such as forgetting the
    /// upload it carries, so that running `send-file` again cannot send it twice).
    pub(crate) async fn send_body_and(
        &mut self,
        group: GroupId,
        body: Body,
        also: impl FnOnce(&Local) -> Result<(), ClientError>,
    ) -> Result<MessageId, ClientError> {
        let me = self.me()?;
        let id = MessageId(random16());
        let message = AppMessage {
            message_id: id.as_bytes().to_vec(),
            sent_at_ms: now_ms() as i64,
            body: Some(body),
        };
        let bytes = message.encode_to_vec();
        // Before the message changes local history: a delete still finds its file here.
        let references = crate::files::references::of(&self.local, group, &bytes);
        crate::files::references::check(&bytes, &references)?;
        let (name, device) = (me.username.clone(), me.device);
        self.local.transaction(|l| {
            history::apply(l, group, name.as_str(), device, None, &message)?;
            l.queue_outgoing(group, id, &bytes, now_ms())?;
            also(l)
        })?;
        match self.deliver(group, id, &bytes, &references).await {
            Ok(_) => {}
            Err(ClientError::Connection(e)) => {
                // It is in the outbox: the next connection sends it.
                return Err(ClientError::Queued(e));
            }
            Err(e) => return Err(e),
        }
        self.upload_archive(&HashMap::new(), false).await;
        Ok(id)
    }

    /// Encrypts for the current epoch and sends until acknowledged; re-encrypts after catching up
    /// if the epoch moved. The ratchet state is committed before the ciphertext leaves.
    async fn deliver(
        &mut self,
        group: GroupId,
        id: MessageId,
        body: &[u8],
        references: &crate::files::references::References,
    ) -> Result<Seq, ClientError> {
        for _ in 0..STALE_RETRIES_MAX {
            let (local, conn, me) = self.parts()?;
            let signer = me.signer();
            let (ciphertext, epoch) = local.transaction(|l| {
                let provider = Provider::new(l.conn());
                let mut g = mls::load_group(&provider, group)?
                    .ok_or_else(|| ClientError::Usage(format!("no MLS state for {group}")))?;
                Ok((
                    mls::encrypt(&mut g, &provider, &signer, body)?,
                    mls::epoch(&g),
                ))
            })?;
            let reply = conn
                .request(Request::SendMessage(v1::SendMessage {
                    group_id: group.as_bytes().to_vec(),
                    epoch,
                    message_id: id.as_bytes().to_vec(),
                    ciphertext,
                    roster_version: local.roster_checked(group)?,
                    blob_ids: references.carried.clone(),
                    unreferenced_blob_ids: references.dropped.clone(),
                    deleted_seq: references.deleted_seq,
                }))
                .await;
            match reply {
                Ok(Reply::Appended(appended)) => {
                    local.transaction(|l| {
                        archive::record_own(l, me, group, id, appended.seq)?;
                        l.mark_sent(group, id, appended.seq)
                    })?;
                    return Ok(appended.seq);
                }
                Ok(_) => return Err(ClientError::Protocol("expected Appended".into())),
                Err(e) if e.code() == Some(ErrorCode::StaleEpoch) => {
                    sync::sync_group(local, conn, me, group).await?;
                }
                Err(e) if e.code() == Some(ErrorCode::StaleRoster) => {
                    // A member account gained or lost a device: add or remove it first, so
                    // the message reaches exactly the devices it should.
                    // Boxed: checking may send (the chat's meta to added devices), which delivers.
                    Box::pin(self.check_roster(group)).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::Server {
            code: ErrorCode::StaleEpoch,
            message: "the group kept changing; try again".into(),
            position: 0,
        })
    }

    /// Local history of a chat (all direct chats with the user, for `@user`), oldest first.
    pub fn messages(&self, target: &Target) -> Result<Vec<ChatMessage>, ClientError> {
        let chats = match target {
            Target::Group(group) => self.local.chat(*group)?.into_iter().collect(),
            Target::User(user) => self.local.direct_chats(user)?,
        };
        if chats.is_empty() {
            return Err(ClientError::Usage("no such chat on this device".into()));
        }
        let mut out = Vec::new();
        for chat in chats {
            out.extend(history::chat_history(
                &self.local,
                &chat.label(),
                chat.group,
            )?);
        }
        Ok(out)
    }

    /// The devices in a chat's MLS group, as (`@username`, device id) pairs sorted by name.
    pub fn members(&self, target: &Target) -> Result<Vec<(String, DeviceId)>, ClientError> {
        let chat = match target {
            Target::Group(group) => self.local.chat(*group)?,
            Target::User(user) => self
                .local
                .direct_chats(user)?
                .into_iter()
                .find(|c| c.state == "active"),
        }
        .ok_or_else(|| ClientError::Usage("no such chat on this device".into()))?;
        let provider = Provider::new(self.local.conn());
        let mut out: Vec<(String, DeviceId)> = mls::load_group(&provider, chat.group)?
            .map(|g| mls::members(&g))
            .unwrap_or_default()
            .into_iter()
            .map(|m| (format!("@{}", m.identity.username), m.identity.device))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Every chat on this device (not the self group), with its unread count.
    pub fn chats(&self) -> Result<Vec<(Chat, u64)>, ClientError> {
        let me = self.username().map(|u| u.to_string()).unwrap_or_default();
        self.local
            .chats()?
            .into_iter()
            .filter(|c| c.kind != SELF_KIND)
            .map(|c| {
                let unread = self.local.unread(c.group, &me)?;
                Ok((c, unread))
            })
            .collect()
    }

    /// The safety number for the conversation with `user`.
    pub async fn fingerprint(&mut self, user: &Username) -> Result<String, ClientError> {
        self.connect().await?;
        let (_, conn, _) = self.parts()?;
        let Reply::Account(account) = conn
            .request(Request::GetAccount(v1::GetAccount {
                username: user.to_string(),
            }))
            .await?
        else {
            return Err(ClientError::Protocol("expected Account".into()));
        };
        self.check_account_key(user, &account.account_key, KeyChange::Warn)?;
        let me = self.me()?;
        let mine = me.account_key.public();
        Ok(safety_number(
            (&me.username, &mine),
            (user, &account.account_key),
        ))
    }

    /// Stays connected and calls `on_message` for every message that arrives, until the
    /// connection drops.
    pub async fn listen(
        &mut self,
        mut on_message: impl FnMut(&ChatMessage, &[String]),
    ) -> Result<(), ClientError> {
        self.connect().await?;
        let seen = self.sync_inner().await?;
        for m in self.render(&seen)? {
            on_message(&m, &self.take_warnings());
        }
        let mut pushes = self
            .conn
            .as_ref()
            .and_then(|c| c.take_pushes())
            .ok_or_else(|| ClientError::Connection("pushes already taken".into()))?;
        loop {
            // Other commands may use the profile while this one waits.
            self.local.unlock();
            let next = tokio::time::timeout(LISTEN_ARCHIVE_INTERVAL, pushes.recv()).await;
            self.local.relock().await?;
            let push = match next {
                Ok(Some(push)) => push,
                Ok(None) => break,
                Err(_) => {
                    // Quiet for a while: archive what came in, in one go.
                    if archive::has_pending(&self.local)? {
                        self.upload_archive(&HashMap::new(), false).await;
                    }
                    continue;
                }
            };
            let seen = match push.kind {
                Some(v1::push::Kind::LogEntry(entry)) => {
                    let Ok(group) = GroupId::from_slice(&entry.group_id) else {
                        continue;
                    };
                    let (local, conn, me) = self.parts()?;
                    match local.chat(group)? {
                        Some(chat) if chat.state == "active" && entry.seq == chat.position + 1 => {
                            sync::apply_entry(local, me, group, &entry)?
                                .into_iter()
                                .collect()
                        }
                        Some(chat) if chat.state == "active" && entry.seq > chat.position => {
                            sync::sync_group(local, conn, me, group).await?
                        }
                        _ => Vec::new(),
                    }
                }
                Some(_) => self.sync_inner().await?,
                None => Vec::new(),
            };
            self.commit_pending_proposals().await?;
            // The self group may have brought a new archive key.
            self.keys = AccountKeys::load(&self.local)?.or(self.keys.take());
            self.warnings.extend(self.local.take_notices()?);
            for m in self.render(&seen)? {
                on_message(&m, &self.take_warnings());
            }
        }
        Err(ClientError::Connection(
            "the server closed the connection".into(),
        ))
    }
}
