//! Linking a new device to an account, from both ends.
//!
//! 1. The new device files a request under an id derived from a fresh link code and shows the
//!    code. The request (its device id and key, name, and an ephemeral X25519 key) is encrypted
//!    under a key derived from the code, so the server learns nothing from it.
//! 2. An existing device, given the code, reads the request, shows both fingerprints, and on
//!    confirmation certifies the new device key with the account key, registers the device,
//!    and seals the account secrets to the ephemeral key (mixing in the code).
//! 3. The new device opens them, shows which account it is joining and asks, then logs in and
//!    uploads its key packages (it could not make them before knowing its account's name).
//! 4. The approving device waits for those, adds the device to every group (the roster check
//!    does it), archives the history up to there, and marks the link completed.
//! 5. The new device replays the archive and catches up from the logs.
//!
//! See `docs/multi-device.md` for the threat model.

use chapar_crypto::account::{LinkCode, device_fingerprint};
use chapar_crypto::identity::{self, SecretKey};
use chapar_crypto::seal::{self, SealSecret};
use chapar_types::limits::{DEVICE_NAME_BYTES_MAX, LINK_ARCHIVE_HEADS_MAX};
use chapar_types::{DeviceId, GroupId, Username};
use chapar_wire::content::{ArchiveHead, LinkApprovalBody, LinkRequestBody};
use chapar_wire::v1::{self, client_frame::Request, response::Result as Reply};
use prost::Message as _;

use super::archive::RESTORE_WINDOW_MS;
use super::device::{Device, unexpected};
use crate::account_keys::{AccountKeys, link_aad};
use crate::events::{Event, Question};
use crate::identity::{Identity, RESTORE_UNTIL};
use crate::model::{ApprovalPreview, Approved, LinkPreview, Linked};
use crate::storage::ChainHead;
use crate::{CoreError, Usage};

/// How often a waiting device asks the server whether the other side has moved.
const LINK_POLL_INTERVAL_MS: u64 = 100;
/// How long the approving device waits for the new device to come online with key packages.
pub const LINK_PEER_WAIT_MS: u64 = 120_000;

/// Associated-data labels of the sealed request and approval (distinct from the key
/// derivation labels in `chapar_crypto::account`).
const REQUEST_AAD: &str = "chapar link request aad v1";
const APPROVAL_AAD: &str = "chapar link approval aad v1";

pub(crate) fn check_name(name: &str) -> Result<(), CoreError> {
    if name.len() > DEVICE_NAME_BYTES_MAX {
        return Err(Usage::TooLong {
            what: "a device name",
            max: DEVICE_NAME_BYTES_MAX,
        }
        .into());
    }
    Ok(())
}

pub(crate) fn decode<M: prost::Message + Default>(
    bytes: &[u8],
    what: &str,
) -> Result<M, CoreError> {
    M::decode(bytes).map_err(|_| CoreError::Protocol(format!("undecodable {what}")))
}

impl Device {
    pub(crate) fn require_empty_profile(&self) -> Result<(), CoreError> {
        if self.me.get().is_some() {
            return Err(Usage::AlreadyRegistered.into());
        }
        Ok(())
    }

    /// Makes this profile device `me` of its account with the account's keys. `restore_until`
    /// is until when the archive is replayed on each sync (`Some` for a linked or recovered
    /// device).
    pub(crate) fn become_device(
        &self,
        me: Identity,
        keys: &AccountKeys,
        restore_until: Option<u64>,
    ) -> Result<(), CoreError> {
        self.write(|tx| me.save(tx, keys, restore_until, self.now_ms()))?;
        self.me
            .set(me)
            .map_err(|_| CoreError::from(Usage::AlreadyRegistered))
    }

    /// Makes this empty profile a new device of an account on `server`: files a link request,
    /// shows its code ([`Event::LinkCode`]), waits up to `wait_ms` for an existing device to
    /// approve it, asks whether to join the account that approved it, joins, waits for the
    /// approving device to add this one to every chat, and catches up.
    pub(crate) async fn link(
        &self,
        server: &str,
        device_name: &str,
        wait_ms: u64,
    ) -> Result<Linked, CoreError> {
        self.require_empty_profile()?;
        check_name(device_name)?;
        let code = self.env.with_rng(LinkCode::generate);
        let ephemeral = self.env.with_rng(SealSecret::generate);
        let device = DeviceId(self.env.random_u64());
        let device_key = self.env.with_rng(SecretKey::generate);
        let body = LinkRequestBody {
            device_id: device.0,
            device_key: device_key.public().to_vec(),
            device_name: device_name.to_owned(),
            ephemeral_public_key: ephemeral.public().to_vec(),
        };
        let link_id = code.link_id();
        let sealed = self.env.with_rng(|rng| {
            seal::encrypt(
                &code.request_key(),
                &link_aad(REQUEST_AAD, &link_id),
                &body.encode_to_vec(),
                rng,
            )
        });
        self.hello().await?;
        self.call(Request::CreateLink(v1::CreateLink {
            link_id: link_id.to_vec(),
            sealed_request: sealed,
        }))
        .await?;
        self.io.emit(Event::LinkCode {
            code: code.display(),
            fingerprint: device_fingerprint(&device_key.public()),
        });
        let deadline = self.now_ms().saturating_add(wait_ms);
        let sealed = self
            .poll_approval(&link_id, deadline, false)
            .await?
            .ok_or(Usage::LinkTimedOut)?;
        let body: LinkApprovalBody = decode(
            &seal::open_sealed(
                &ephemeral,
                code.approval_psk().as_bytes(),
                &link_aad(APPROVAL_AAD, &link_id),
                &sealed,
            )?,
            "link approval",
        )?;
        let secrets = body
            .secrets
            .as_ref()
            .ok_or_else(|| CoreError::Protocol("the approval carries no account".into()))?;
        let username = Username::parse(&secrets.username)
            .map_err(|_| CoreError::Protocol("the approval names no valid account".into()))?;
        let account_key = SecretKey::from_bytes(&secrets.account_secret_key)?;
        identity::verify_device_cert(
            &account_key.public(),
            &username,
            device,
            &device_key.public(),
            &body.account_signature,
        )?;
        // Whoever saw the code could approve it from their own account: let the user check.
        let preview = ApprovalPreview {
            username: username.clone(),
            approver_fingerprint: device_fingerprint(&body.approver_device_key),
        };
        if !self.io.ask(Question::JoinAccount(preview)).await {
            return Err(Usage::LinkDeclined(username).into());
        }
        let mut keys = AccountKeys::from_secrets(secrets)?;
        keys.require_server(&self.io.server_id())?;
        let me = Identity {
            server: server.trim_end_matches('/').to_owned(),
            username: username.clone(),
            device,
            account_key,
            device_key,
        };
        // One replay on the next sync; a link the approving device does not complete keeps
        // replaying what arrives for a while, as the account's other devices archive it.
        self.become_device(me, &keys, Some(self.now_ms()))?;
        // What the approving device saw archived: the restore must get at least as far.
        self.write(|tx| {
            for head in body.archive_heads.iter().take(LINK_ARCHIVE_HEADS_MAX) {
                if let Ok(group) = GroupId::from_slice(&head.group_id) {
                    let head = ChainHead {
                        through: head.through_seq,
                        link: head.link.clone(),
                        generation: 0,
                    };
                    tx.expect_archive_head(group, &head)?;
                }
            }
            Ok(())
        })?;
        // Logging in uploads the first key packages, the last-resort one included.
        self.connect().await?;
        let completed = self
            .poll_approval(&link_id, deadline, true)
            .await?
            .is_some();
        if !completed {
            let until = self.now_ms().saturating_add(RESTORE_WINDOW_MS);
            self.write(|tx| tx.set_counter(RESTORE_UNTIL, until))?;
        }
        self.sync_all().await?;
        let (bytes_sent, bytes_received) = self.io.traffic();
        Ok(Linked {
            username,
            device,
            completed,
            restored: self.restored.get(),
            chats: self.chat_list()?.len(),
            bytes_sent,
            bytes_received,
        })
    }

    /// Approves the link whose code the user typed: asks the user to compare both
    /// fingerprints, then certifies and registers the new device, hands it the account's
    /// secrets, waits for it to come online and adds it to every chat.
    pub(crate) async fn approve_link(&self, code: &str) -> Result<Approved, CoreError> {
        let code = LinkCode::parse(code).map_err(|_| Usage::InvalidLinkCode)?;
        self.connect().await?;
        let me = self.me()?;
        let link_id = code.link_id();
        let Reply::LinkRequest(request) = self
            .call(Request::FetchLink(v1::FetchLink {
                link_id: link_id.to_vec(),
            }))
            .await?
        else {
            return Err(unexpected("LinkRequest"));
        };
        let body: LinkRequestBody = decode(
            &seal::decrypt(
                &code.request_key(),
                &link_aad(REQUEST_AAD, &link_id),
                &request.sealed_request,
            )
            .map_err(|_| Usage::LinkCodeMismatch)?,
            "link request",
        )?;
        let device = DeviceId(body.device_id);
        check_name(&body.device_name)?;
        let preview = LinkPreview {
            device,
            name: body.device_name.clone(),
            fingerprint: device_fingerprint(&body.device_key),
            approver_fingerprint: device_fingerprint(&me.device_key.public()),
        };
        if !self.io.ask(Question::ApproveDevice(preview)).await {
            return Err(Usage::LinkNotApproved.into());
        }
        let keys = self.account_keys()?;
        let account_signature =
            identity::certify_device(&me.account_key, &me.username, device, &body.device_key);
        self.call(Request::AddDevice(v1::AddDevice {
            device: Some(v1::DeviceCert {
                device_id: device.0,
                device_key: body.device_key.clone(),
                account_signature: account_signature.clone(),
            }),
            key_packages: Vec::new(),
            last_resort_key_package: Vec::new(),
            sealed_name: keys.seal_device_name(&self.env, &me.username, device, &body.device_name),
        }))
        .await?;
        let archive_heads = self
            .read(|tx| tx.archive_heads(LINK_ARCHIVE_HEADS_MAX))?
            .into_iter()
            .map(|(group, head)| ArchiveHead {
                group_id: group.as_bytes().to_vec(),
                through_seq: head.through,
                link: head.link,
            })
            .collect();
        let approval = LinkApprovalBody {
            secrets: Some(keys.to_secrets(me.username.as_str(), &me.account_key.to_bytes())),
            account_signature,
            approver_device: me.device.0,
            approver_device_key: me.device_key.public().to_vec(),
            archive_heads,
        };
        let sealed = self.env.with_rng(|rng| {
            seal::seal_to(
                &body.ephemeral_public_key,
                code.approval_psk().as_bytes(),
                &link_aad(APPROVAL_AAD, &link_id),
                &approval.encode_to_vec(),
                rng,
            )
        })?;
        self.call(Request::ApproveLink(v1::ApproveLink {
            link_id: link_id.to_vec(),
            sealed_approval: sealed,
        }))
        .await?;
        let online = self.wait_for_key_packages(device).await?;
        // The roster check of the sync adds the new device to every group; then everything up
        // to there goes into the archive, whichever device would normally upload it.
        self.sync_all().await?;
        self.upload_archive(&Default::default(), true).await;
        let chats = self.groups_containing(device, false)?;
        let completed = online && chats == self.active_groups()?;
        if completed {
            self.call(Request::CompleteLink(v1::CompleteLink {
                link_id: link_id.to_vec(),
            }))
            .await?;
        }
        Ok(Approved {
            device,
            completed,
            chats,
        })
    }

    /// Polls the device list until `device` has key packages on the server.
    async fn wait_for_key_packages(&self, device: DeviceId) -> Result<bool, CoreError> {
        let deadline = self.now_ms().saturating_add(LINK_PEER_WAIT_MS);
        loop {
            let (listed, _) = self.device_list().await?;
            let ready = listed.iter().any(|d| {
                d.device.as_ref().is_some_and(|c| c.device_id == device.0) && d.key_packages > 0
            });
            if ready {
                return Ok(true);
            }
            if self.now_ms() >= deadline {
                return Ok(false);
            }
            self.io.after(LINK_POLL_INTERVAL_MS).await;
        }
    }

    /// Polls a link's approval until it is there (or, with `completed`, until the approving
    /// device marked it completed), or `deadline` passes (then `None`). Returns the sealed
    /// approval.
    async fn poll_approval(
        &self,
        link_id: &[u8],
        deadline: u64,
        completed: bool,
    ) -> Result<Option<Vec<u8>>, CoreError> {
        loop {
            let reply = self
                .call(Request::FetchLinkApproval(v1::FetchLinkApproval {
                    link_id: link_id.to_vec(),
                }))
                .await?;
            let Reply::LinkApproval(approval) = reply else {
                return Err(unexpected("LinkApproval"));
            };
            let ready = if completed {
                approval.completed
            } else {
                !approval.sealed_approval.is_empty()
            };
            if ready {
                return Ok(Some(approval.sealed_approval));
            }
            if self.now_ms() >= deadline {
                return Ok(None);
            }
            self.io.after(LINK_POLL_INTERVAL_MS).await;
        }
    }
}
