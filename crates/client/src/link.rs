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

use std::time::{Duration, Instant};

use chapar_crypto::account::{LinkCode, device_fingerprint};
use chapar_crypto::identity::{self, SecretKey};
use chapar_crypto::seal::{self, SealSecret};
use chapar_types::limits::DEVICE_NAME_BYTES_MAX;
use chapar_types::{DeviceId, Username};
use chapar_wire::content::{LinkApprovalBody, LinkRequestBody};
use chapar_wire::v1::{self, client_frame::Request, response::Result as Reply};
use prost::Message as _;
use rand::RngCore;

use crate::ClientError;
use crate::account_keys::{AccountKeys, link_aad};
use crate::archive::{RESTORE_UNTIL, RESTORE_WINDOW, Restored};
use crate::client::{Client, Identity, now_ms, save_identity};
use crate::connection::Connection;

/// How often a waiting device asks the server whether the other side has moved.
const LINK_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long the approving device waits for the new device to come online with key packages.
pub const LINK_PEER_WAIT: Duration = Duration::from_secs(120);

/// Associated-data labels of the sealed request and approval (distinct from the key
/// derivation labels in `chapar_crypto::account`).
const REQUEST_AAD: &str = "chapar link request aad v1";
const APPROVAL_AAD: &str = "chapar link approval aad v1";

/// A link request this profile filed and is waiting on.
pub struct PendingLink {
    server: String,
    code: LinkCode,
    ephemeral: SealSecret,
    device: DeviceId,
    device_key: SecretKey,
    conn: Connection,
}

impl PendingLink {
    /// The code to show (and to put in a QR code).
    pub fn code(&self) -> String {
        self.code.display()
    }

    /// This new device's fingerprint, to compare with what the approving device shows.
    pub fn fingerprint(&self) -> String {
        device_fingerprint(&self.device_key.public())
    }
}

/// What the approving device shows before asking for confirmation.
#[derive(Debug, Clone)]
pub struct LinkPreview {
    /// The new device's id.
    pub device: DeviceId,
    /// The name it asked for.
    pub name: String,
    /// Its key's fingerprint (the new device shows the same).
    pub fingerprint: String,
    /// This (approving) device's fingerprint.
    pub approver_fingerprint: String,
}

/// What the new device shows before joining the account that approved it.
#[derive(Debug, Clone)]
pub struct ApprovalPreview {
    /// The account that approved the link.
    pub username: String,
    /// The approving device's fingerprint.
    pub approver_fingerprint: String,
}

/// How a link ended on the new device.
#[derive(Debug, Clone)]
pub struct Linked {
    /// The account joined.
    pub username: String,
    /// This device.
    pub device: DeviceId,
    /// The approving device finished adding this one to every chat before the wait ran out.
    pub completed: bool,
    /// What the archive brought back.
    pub restored: Restored,
    /// Chats on this device now.
    pub chats: usize,
    /// Protocol bytes this device sent while linking and catching up.
    pub bytes_sent: u64,
    /// Protocol bytes this device received while linking and catching up.
    pub bytes_received: u64,
}

/// How an approval ended on the approving device.
#[derive(Debug, Clone)]
pub struct Approved {
    /// The new device.
    pub device: DeviceId,
    /// The new device came online in time and was added to every chat.
    pub completed: bool,
    /// Chats the new device is in now.
    pub chats: usize,
}

pub(crate) fn check_name(name: &str) -> Result<(), ClientError> {
    if name.len() > DEVICE_NAME_BYTES_MAX {
        return Err(ClientError::Usage(format!(
            "a device name has at most {DEVICE_NAME_BYTES_MAX} bytes"
        )));
    }
    Ok(())
}

pub(crate) fn decode<M: prost::Message + Default>(
    bytes: &[u8],
    what: &str,
) -> Result<M, ClientError> {
    M::decode(bytes).map_err(|_| ClientError::Protocol(format!("undecodable {what}")))
}

impl Client {
    pub(crate) fn require_empty_profile(&self) -> Result<(), ClientError> {
        if self.me.is_some() {
            return Err(ClientError::Profile(
                "this profile already belongs to an account; use a new --profile".into(),
            ));
        }
        Ok(())
    }

    /// Makes this profile device `me` of its account, with the account's keys, to replay the
    /// archive on its next sync.
    pub(crate) fn become_device(
        &mut self,
        me: Identity,
        keys: AccountKeys,
    ) -> Result<(), ClientError> {
        self.local
            .transaction(|l| save_identity(l, &me, &keys, true))?;
        self.me = Some(me);
        self.keys = Some(keys);
        Ok(())
    }

    /// Files a link request with `server` and returns the code to show.
    pub async fn start_link(
        &mut self,
        server: &str,
        device_name: &str,
    ) -> Result<PendingLink, ClientError> {
        self.require_empty_profile()?;
        check_name(device_name)?;
        let mut rng = rand::thread_rng();
        let code = LinkCode::generate(&mut rng);
        let ephemeral = SealSecret::generate(&mut rng);
        let device = DeviceId(rng.next_u64());
        let device_key = SecretKey::generate(&mut rng);
        let body = LinkRequestBody {
            device_id: device.0,
            device_key: device_key.public().to_vec(),
            device_name: device_name.to_owned(),
            ephemeral_public_key: ephemeral.public().to_vec(),
        };
        let link_id = code.link_id();
        let sealed = seal::encrypt(
            &code.request_key(),
            &link_aad(REQUEST_AAD, &link_id),
            &body.encode_to_vec(),
            &mut rng,
        );
        let server = server.trim_end_matches('/').to_owned();
        let conn = Connection::open(&server).await?;
        conn.request(Request::CreateLink(v1::CreateLink {
            link_id: link_id.to_vec(),
            sealed_request: sealed,
        }))
        .await?;
        Ok(PendingLink {
            server,
            code,
            ephemeral,
            device,
            device_key,
            conn,
        })
    }

    /// Waits (up to `wait`) for an existing device to approve the link, asks `confirm` whether
    /// to join the account that approved it, joins, waits for the approving device to add this
    /// one to every chat, and catches up.
    pub async fn finish_link(
        &mut self,
        pending: PendingLink,
        wait: Duration,
        confirm: impl FnOnce(&ApprovalPreview) -> bool,
    ) -> Result<Linked, ClientError> {
        self.require_empty_profile()?;
        let link_id = pending.code.link_id();
        let deadline = Instant::now() + wait;
        let sealed = poll_approval(&pending.conn, &link_id, deadline, false).await?;
        let body: LinkApprovalBody = decode(
            &seal::open_sealed(
                &pending.ephemeral,
                pending.code.approval_psk().as_bytes(),
                &link_aad(APPROVAL_AAD, &link_id),
                &sealed,
            )?,
            "link approval",
        )?;
        let secrets = body
            .secrets
            .as_ref()
            .ok_or_else(|| ClientError::Protocol("the approval carries no account".into()))?;
        let username = Username::parse(&secrets.username)
            .map_err(|_| ClientError::Protocol("the approval names no valid account".into()))?;
        let account_key = SecretKey::from_bytes(&secrets.account_secret_key)?;
        identity::verify_device_cert(
            &account_key.public(),
            &username,
            pending.device,
            &pending.device_key.public(),
            &body.account_signature,
        )?;
        // Whoever saw the code could approve it from their own account: let the user check.
        let preview = ApprovalPreview {
            username: username.to_string(),
            approver_fingerprint: device_fingerprint(&body.approver_device_key),
        };
        if !confirm(&preview) {
            return Err(ClientError::Usage(format!(
                "not joining @{username}: this device stays unlinked"
            )));
        }
        let keys = AccountKeys::from_secrets(secrets)?;
        let me = Identity {
            server: pending.server.clone(),
            username: username.clone(),
            device: pending.device,
            account_key,
            device_key: SecretKey::from_bytes(&pending.device_key.to_bytes())?,
        };
        self.become_device(me, keys)?;
        // Logging in uploads the first key packages, the last-resort one included.
        self.connect().await?;
        let completed = poll_approval(&pending.conn, &link_id, deadline, true)
            .await
            .is_ok();
        if !completed {
            // The other devices will archive the rest; keep replaying what arrives for a while.
            self.local
                .set_u64(RESTORE_UNTIL, now_ms() + RESTORE_WINDOW.as_millis() as u64)?;
        }
        self.sync_inner().await?;
        let (link_sent, link_received) = pending.conn.traffic();
        let (sent, received) = self.parts()?.1.traffic();
        Ok(Linked {
            username: username.to_string(),
            device: pending.device,
            completed,
            restored: self.last_restore,
            chats: self.chats()?.len(),
            bytes_sent: link_sent + sent,
            bytes_received: link_received + received,
        })
    }

    /// Approves the link whose code the user typed: shows `confirm` both fingerprints, then
    /// certifies and registers the new device, hands it the account's secrets, waits for it to
    /// come online and adds it to every chat.
    pub async fn approve_link(
        &mut self,
        code: &str,
        confirm: impl FnOnce(&LinkPreview) -> bool,
    ) -> Result<Approved, ClientError> {
        let code = LinkCode::parse(code).map_err(|_| {
            ClientError::Usage("that is not a link code (groups of letters and digits)".into())
        })?;
        self.connect().await?;
        let link_id = code.link_id();
        let (_, conn, me) = self.parts()?;
        let Reply::LinkRequest(request) = conn
            .request(Request::FetchLink(v1::FetchLink {
                link_id: link_id.to_vec(),
            }))
            .await?
        else {
            return Err(ClientError::Protocol("expected LinkRequest".into()));
        };
        let body: LinkRequestBody = decode(
            &seal::decrypt(
                &code.request_key(),
                &link_aad(REQUEST_AAD, &link_id),
                &request.sealed_request,
            )
            .map_err(|_| ClientError::Usage("the link code does not match the request".into()))?,
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
        if !confirm(&preview) {
            return Err(ClientError::Usage("the link was not approved".into()));
        }
        let keys = self.account_keys()?.clone();
        let (_, conn, me) = self.parts()?;
        let account_signature =
            identity::certify_device(&me.account_key, &me.username, device, &body.device_key);
        conn.request(Request::AddDevice(v1::AddDevice {
            device: Some(v1::DeviceCert {
                device_id: device.0,
                device_key: body.device_key.clone(),
                account_signature: account_signature.clone(),
            }),
            key_packages: Vec::new(),
            last_resort_key_package: Vec::new(),
            sealed_name: keys.seal_device_name(&me.username, device, &body.device_name),
        }))
        .await?;
        let approval = LinkApprovalBody {
            secrets: Some(keys.to_secrets(me.username.as_str(), &me.account_key.to_bytes())),
            account_signature,
            approver_device: me.device.0,
            approver_device_key: me.device_key.public().to_vec(),
        };
        let sealed = seal::seal_to(
            &body.ephemeral_public_key,
            code.approval_psk().as_bytes(),
            &link_aad(APPROVAL_AAD, &link_id),
            &approval.encode_to_vec(),
            &mut rand::thread_rng(),
        )?;
        conn.request(Request::ApproveLink(v1::ApproveLink {
            link_id: link_id.to_vec(),
            sealed_approval: sealed,
        }))
        .await?;
        let online = self.wait_for_key_packages(device).await?;
        // The roster check of the sync adds the new device to every group; then everything up
        // to there goes into the archive, whichever device would normally upload it.
        self.sync_inner().await?;
        self.upload_archive(&Default::default(), true).await;
        let chats = self.groups_containing(device, false)?;
        let completed = online && chats == self.active_groups()?;
        if completed {
            let (_, conn, _) = self.parts()?;
            conn.request(Request::CompleteLink(v1::CompleteLink {
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
    async fn wait_for_key_packages(&mut self, device: DeviceId) -> Result<bool, ClientError> {
        let deadline = Instant::now() + LINK_PEER_WAIT;
        loop {
            let (listed, _) = self.device_list().await?;
            let ready = listed.iter().any(|d| {
                d.device.as_ref().is_some_and(|c| c.device_id == device.0) && d.key_packages > 0
            });
            if ready {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(LINK_POLL_INTERVAL).await;
        }
    }
}

/// Polls a link's approval until it is there (or, with `completed`, until the approving device
/// marked it completed), or `deadline` passes. Returns the sealed approval.
async fn poll_approval(
    conn: &Connection,
    link_id: &[u8],
    deadline: Instant,
    completed: bool,
) -> Result<Vec<u8>, ClientError> {
    loop {
        let reply = conn
            .request(Request::FetchLinkApproval(v1::FetchLinkApproval {
                link_id: link_id.to_vec(),
            }))
            .await?;
        let Reply::LinkApproval(approval) = reply else {
            return Err(ClientError::Protocol("expected LinkApproval".into()));
        };
        let ready = if completed {
            approval.completed
        } else {
            !approval.sealed_approval.is_empty()
        };
        if ready {
            return Ok(approval.sealed_approval);
        }
        if Instant::now() >= deadline {
            return Err(ClientError::Usage(if completed {
                "the approving device did not finish adding this device in time; your other \
                 devices will add it to your chats when they next sync"
                    .into()
            } else {
                "no device approved this link in time; run `chapar link` again".into()
            }));
        }
        tokio::time::sleep(LINK_POLL_INTERVAL).await;
    }
}
