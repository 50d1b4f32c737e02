//! An account's devices, from the device's side: linking a new one (both ends), listing and
//! revoking them, and the recovery key (setting, rotating, recovering with it).
//!
//! Linking, in order (see `docs/multi-device.md` for the threat model):
//! 1. The new device files a request under an id derived from a fresh link code and shows the
//!    code. The request (its device id and key, name, and an ephemeral X25519 key) is encrypted
//!    under a key derived from the code, so the server learns nothing from it.
//! 2. An existing device, given the code, reads the request, shows both fingerprints, and on
//!    confirmation certifies the new device key with the account key, registers the device,
//!    and seals the account secrets to the ephemeral key (mixing in the code).
//! 3. The new device opens them, learns its account, makes its key packages and uploads them.
//! 4. The approving device waits for those, adds the device to every group (the roster check
//!    does it), archives the history up to there, and marks the link completed.
//! 5. The new device replays the archive and catches up from the logs.

use std::time::{Duration, Instant};

use chapar_crypto::account::{LinkCode, RecoveryKey, device_fingerprint};
use chapar_crypto::identity::{self, SecretKey};
use chapar_crypto::mls;
use chapar_crypto::seal::{self, SealSecret};
use chapar_types::limits::DEVICE_NAME_BYTES_MAX;
use chapar_types::signed::recovery_challenge_payload;
use chapar_types::{DeviceId, ErrorCode, Username};
use chapar_wire::content::{
    AccountSecrets, LinkApprovalBody, LinkRequestBody, RecoveryPublic, account_sync,
};
use chapar_wire::v1::{self, client_frame::Request, response::Result as Reply};
use prost::Message as _;
use rand::RngCore;

use crate::ClientError;
use crate::account_keys::{AccountKeys, link_aad, recovery_aad};
use crate::archive::Restored;
use crate::client::{Client, Identity, KEY_PACKAGE_BATCH, save_identity};
use crate::connection::Connection;
use crate::provider::Provider;

/// How often a waiting device asks the server whether the other side has moved.
const LINK_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long the approving device waits for the new device to come online with key packages.
pub const LINK_PEER_WAIT: Duration = Duration::from_secs(120);

const LINK_REQUEST: &str = "chapar link request v1";
const LINK_APPROVAL: &str = "chapar link approval v1";

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

/// How a link ended on the new device.
#[derive(Debug, Clone)]
pub struct Linked {
    /// The account joined.
    pub username: String,
    /// This device.
    pub device: DeviceId,
    /// The approving device's fingerprint (the new device could not see it before).
    pub approver_fingerprint: String,
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

/// A device of the account, as `devices` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceInfo {
    /// The device id (16 hex digits).
    pub id: String,
    /// Its name, if it opens with this device's keys.
    pub name: Option<String>,
    /// This is the device running the command.
    pub current: bool,
    /// When it was added, milliseconds since the Unix epoch.
    pub added_ms: u64,
    /// Its last login, if any.
    pub last_seen_ms: Option<u64>,
    /// When it was revoked, if it was.
    pub revoked_ms: Option<u64>,
    /// Its key fingerprint.
    pub fingerprint: String,
}

/// What a recovery restored.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// This new device.
    pub device: DeviceId,
    /// Devices revoked by the recovery.
    pub revoked: usize,
    /// What the archive brought back.
    pub restored: Restored,
    /// Chats on this device now.
    pub chats: usize,
}

fn check_name(name: &str) -> Result<(), ClientError> {
    if name.len() > DEVICE_NAME_BYTES_MAX {
        return Err(ClientError::Usage(format!(
            "a device name has at most {DEVICE_NAME_BYTES_MAX} bytes"
        )));
    }
    Ok(())
}

fn decode<M: prost::Message + Default>(bytes: &[u8], what: &str) -> Result<M, ClientError> {
    M::decode(bytes).map_err(|_| ClientError::Protocol(format!("undecodable {what}")))
}

/// One-time and last-resort key packages for a device, made on `local`'s MLS storage.
fn key_packages(client: &Client, me: &Identity) -> Result<(Vec<Vec<u8>>, Vec<u8>), ClientError> {
    let signer = me.signer();
    client.local.transaction(|l| {
        let provider = Provider::new(l.conn());
        let one_time = (0..KEY_PACKAGE_BATCH)
            .map(|_| mls::new_key_package(&provider, &signer, false))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((one_time, mls::new_key_package(&provider, &signer, true)?))
    })
}

impl Client {
    fn require_empty_profile(&self) -> Result<(), ClientError> {
        if self.me.is_some() {
            return Err(ClientError::Profile(
                "this profile already belongs to an account; use a new --profile".into(),
            ));
        }
        Ok(())
    }

    fn keys(&self) -> Result<&AccountKeys, ClientError> {
        self.keys.as_ref().ok_or_else(|| {
            ClientError::Profile("this profile has no account keys; link it again".into())
        })
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
            &link_aad(LINK_REQUEST, &link_id),
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

    /// Waits (up to `wait`) for an existing device to approve the link, joins the account,
    /// waits for the approving device to add this one to every chat, and catches up.
    pub async fn finish_link(
        &mut self,
        pending: PendingLink,
        wait: Duration,
    ) -> Result<Linked, ClientError> {
        self.require_empty_profile()?;
        let link_id = pending.code.link_id();
        let deadline = Instant::now() + wait;
        let (sealed, _) = poll_approval(&pending.conn, &link_id, deadline, false).await?;
        let body: LinkApprovalBody = decode(
            &seal::open_sealed(
                &pending.ephemeral,
                pending.code.approval_psk().as_bytes(),
                &link_aad(LINK_APPROVAL, &link_id),
                &sealed,
            )?,
            "link approval",
        )?;
        let secrets = body
            .secrets
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
        let keys = AccountKeys::from_secrets(&secrets)?;
        let me = Identity {
            server: pending.server.clone(),
            username: username.clone(),
            device: pending.device,
            account_key,
            device_key: SecretKey::from_bytes(&pending.device_key.to_bytes())?,
        };
        let (one_time, last_resort) = key_packages(self, &me)?;
        self.local
            .transaction(|l| save_identity(l, &me, &keys, true))?;
        self.me = Some(me);
        self.keys = Some(keys);
        self.connect().await?;
        {
            let (_, conn, _) = self.parts()?;
            conn.request(Request::UploadKeyPackages(v1::UploadKeyPackages {
                key_packages: one_time,
                last_resort_key_package: last_resort,
            }))
            .await?;
        }
        let completed = poll_approval(&pending.conn, &link_id, deadline, true)
            .await
            .is_ok();
        self.sync_inner().await?;
        let restored = self.last_restore;
        let (link_sent, link_received) = pending.conn.traffic();
        let (sent, received) = self.parts()?.1.traffic();
        Ok(Linked {
            username: username.to_string(),
            device: pending.device,
            approver_fingerprint: device_fingerprint(&body.approver_device_key),
            completed,
            restored,
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
                &link_aad(LINK_REQUEST, &link_id),
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
        let keys = self.keys()?.clone();
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
            &link_aad(LINK_APPROVAL, &link_id),
            &approval.encode_to_vec(),
            &mut rand::thread_rng(),
        )?;
        conn.request(Request::ApproveLink(v1::ApproveLink {
            link_id: link_id.to_vec(),
            sealed_approval: sealed,
        }))
        .await?;
        let online = self.wait_for_key_packages(device).await?;
        // The roster check of the sync adds the new device to every group, and the sync
        // archives everything up to there.
        self.sync_inner().await?;
        let chats = self.chats_with_device(device)?;
        let completed = online && chats == self.active_chats()?;
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
            let listed = self.device_list().await?;
            if listed.iter().any(|d| {
                d.device.as_ref().is_some_and(|c| c.device_id == device.0) && d.key_packages > 0
            }) {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(LINK_POLL_INTERVAL).await;
        }
    }

    /// Active chats (the self group included) whose MLS members include `device`.
    fn chats_with_device(&self, device: DeviceId) -> Result<usize, ClientError> {
        let provider = Provider::new(self.local.conn());
        let mut count = 0;
        for chat in self.local.chats()? {
            if chat.state != "active" {
                continue;
            }
            if let Some(group) = mls::load_group(&provider, chat.group)?
                && mls::members(&group)
                    .iter()
                    .any(|m| m.identity.device == device)
            {
                count += 1;
            }
        }
        Ok(count)
    }

    fn active_chats(&self) -> Result<usize, ClientError> {
        Ok(self
            .local
            .chats()?
            .iter()
            .filter(|c| c.state == "active")
            .count())
    }

    async fn device_list(&mut self) -> Result<Vec<v1::DeviceInfo>, ClientError> {
        self.connect().await?;
        let (_, conn, _) = self.parts()?;
        let Reply::DeviceList(list) = conn
            .request(Request::ListDevices(v1::ListDevices {}))
            .await?
        else {
            return Err(ClientError::Protocol("expected DeviceList".into()));
        };
        Ok(list.devices)
    }

    /// The account's devices, revoked ones included, oldest first.
    pub async fn devices(&mut self) -> Result<Vec<DeviceInfo>, ClientError> {
        let listed = self.device_list().await?;
        let me = self.me()?;
        let keys = self.keys()?;
        Ok(listed
            .into_iter()
            .filter_map(|d| {
                let cert = d.device?;
                let id = DeviceId(cert.device_id);
                Some(DeviceInfo {
                    id: id.to_string(),
                    name: keys.open_device_name(&me.username, id, &d.sealed_name),
                    current: id == me.device,
                    added_ms: d.created_ms,
                    last_seen_ms: (d.last_seen_ms > 0).then_some(d.last_seen_ms),
                    revoked_ms: (d.revoked_ms > 0).then_some(d.revoked_ms),
                    fingerprint: device_fingerprint(&cert.device_key),
                })
            })
            .collect())
    }

    /// Revokes another device of the account: the server stops serving it at once, this device
    /// removes it from every group, and the archive key is replaced so that it cannot read
    /// history archived from now on even with the server's help.
    pub async fn revoke_device(&mut self, device: DeviceId) -> Result<(), ClientError> {
        self.connect().await?;
        let (_, conn, me) = self.parts()?;
        if device == me.device {
            return Err(ClientError::Usage(
                "a device cannot revoke itself; revoke it from another device".into(),
            ));
        }
        conn.request(Request::RevokeDevice(v1::RevokeDevice {
            device_id: device.0,
        }))
        .await?;
        // The server moved the account's roster version: the sync's roster check removes the
        // device from every group this device is in.
        self.sync_inner().await?;
        if self.self_group_contains(device)? {
            return Err(ClientError::Usage(
                "the device is revoked, but is still in your devices' group; run `chapar sync` \
                 and revoke again to finish"
                    .into(),
            ));
        }
        self.rotate_archive_key().await
    }

    fn self_group_contains(&self, device: DeviceId) -> Result<bool, ClientError> {
        let provider = Provider::new(self.local.conn());
        for chat in self.local.chats()? {
            if chat.kind == crate::self_group::SELF_KIND
                && chat.state == "active"
                && let Some(group) = mls::load_group(&provider, chat.group)?
                && mls::members(&group)
                    .iter()
                    .any(|m| m.identity.device == device)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Starts a new archive key generation, tells the account's devices, and reseals the
    /// recovery bundle so a recovery can read history written under it.
    async fn rotate_archive_key(&mut self) -> Result<(), ClientError> {
        let mut keys = self.keys()?.clone();
        let (generation, key) = keys.rotate();
        keys.save(&self.local)?;
        self.keys = Some(keys);
        self.announce_archive_key(generation, &key).await?;
        self.reseal_recovery_bundle().await
    }

    /// Stores a fresh recovery bundle (same recovery key) after the key ring changed.
    async fn reseal_recovery_bundle(&mut self) -> Result<(), ClientError> {
        let keys = self.keys()?.clone();
        let Some(recovery) = keys.recovery.clone() else {
            return Ok(());
        };
        let (_, conn, me) = self.parts()?;
        let bundle = keys.seal_recovery_bundle(
            &me.username,
            &me.account_key.to_bytes(),
            &recovery.seal_public_key,
        )?;
        conn.request(Request::SetRecovery(v1::SetRecovery {
            auth_key: recovery.auth_public_key.clone(),
            sealed_bundle: bundle,
            expected_auth_key: recovery.auth_public_key,
        }))
        .await?;
        Ok(())
    }

    /// Makes a new recovery key, stores the bundle sealed to it and tells the account's other
    /// devices. Returns the key to show; it is stored nowhere.
    pub(crate) async fn set_new_recovery_key(&mut self) -> Result<String, ClientError> {
        let recovery_key = RecoveryKey::generate(&mut rand::thread_rng());
        let publics = RecoveryPublic {
            seal_public_key: recovery_key.seal_secret().public().to_vec(),
            auth_public_key: recovery_key.auth_key().public().to_vec(),
        };
        let mut keys = self.keys()?.clone();
        let expected = keys
            .recovery
            .as_ref()
            .map(|r| r.auth_public_key.clone())
            .unwrap_or_default();
        keys.recovery = Some(publics.clone());
        let (_, conn, me) = self.parts()?;
        let bundle = keys.seal_recovery_bundle(
            &me.username,
            &me.account_key.to_bytes(),
            &publics.seal_public_key,
        )?;
        let stored = conn
            .request(Request::SetRecovery(v1::SetRecovery {
                auth_key: publics.auth_public_key.clone(),
                sealed_bundle: bundle,
                expected_auth_key: expected,
            }))
            .await;
        match stored {
            Ok(_) => {}
            Err(e) if e.code() == Some(ErrorCode::Conflict) => {
                return Err(ClientError::Usage(
                    "another device changed the recovery key at the same time; run `chapar sync` \
                     and try again"
                        .into(),
                ));
            }
            Err(e) => return Err(e),
        }
        keys.save(&self.local)?;
        self.keys = Some(keys);
        self.send_account_sync(account_sync::Kind::Recovery(publics))
            .await?;
        Ok(recovery_key.display())
    }

    /// Replaces the recovery key; the old one stops working. Returns the new one to show.
    pub async fn rotate_recovery_key(&mut self) -> Result<String, ClientError> {
        self.connect().await?;
        // Learn of a rotation another device made, so the new bundle replaces the current one.
        self.sync_inner().await?;
        self.set_new_recovery_key().await
    }

    /// Restores `username` on this (empty) profile with the recovery key, after every other
    /// device was lost. With `revoke_others`, the old devices are revoked at once and the
    /// archive key is replaced.
    pub async fn recover(
        &mut self,
        server: &str,
        username: &str,
        recovery_key: &str,
        device_name: &str,
        revoke_others: bool,
    ) -> Result<Recovered, ClientError> {
        self.require_empty_profile()?;
        check_name(device_name)?;
        let username = Username::parse(username).map_err(|e| ClientError::Usage(e.to_string()))?;
        let recovery_key = RecoveryKey::parse(recovery_key).map_err(|_| {
            ClientError::Usage("that is not a recovery key (groups of letters and digits)".into())
        })?;
        let server = server.trim_end_matches('/').to_owned();
        let conn = Connection::open(&server).await?;
        let auth = recovery_key.auth_key();
        let recovery_signature = identity::sign(
            &auth,
            &recovery_challenge_payload(conn.challenge(), &username),
        );
        let bundle = conn
            .request(Request::FetchRecovery(v1::FetchRecovery {
                username: username.to_string(),
                signature: recovery_signature.clone(),
            }))
            .await
            .map_err(|e| match e.code() {
                Some(ErrorCode::AuthenticationFailed) => ClientError::Usage(
                    "the recovery key is wrong for this account (or the account has none)".into(),
                ),
                _ => e,
            })?;
        let Reply::RecoveryBundle(bundle) = bundle else {
            return Err(ClientError::Protocol("expected RecoveryBundle".into()));
        };
        let secrets: AccountSecrets = decode(
            &seal::open_sealed(
                &recovery_key.seal_secret(),
                &[],
                &recovery_aad(&username),
                &bundle.sealed_bundle,
            )?,
            "recovery bundle",
        )?;
        let keys = AccountKeys::from_secrets(&secrets)?;
        let mut rng = rand::thread_rng();
        let me = Identity {
            server: server.clone(),
            username: username.clone(),
            device: DeviceId(rng.next_u64()),
            account_key: SecretKey::from_bytes(&secrets.account_secret_key)?,
            device_key: SecretKey::generate(&mut rng),
        };
        let (one_time, last_resort) = key_packages(self, &me)?;
        let device_key = me.device_key.public().to_vec();
        let reply = conn
            .request(Request::RecoverDevice(v1::RecoverDevice {
                username: username.to_string(),
                recovery_signature,
                device: Some(v1::DeviceCert {
                    device_id: me.device.0,
                    account_signature: identity::certify_device(
                        &me.account_key,
                        &username,
                        me.device,
                        &device_key,
                    ),
                    device_key,
                }),
                challenge_signature: identity::answer_challenge(
                    &me.device_key,
                    conn.challenge(),
                    me.device,
                ),
                key_packages: one_time,
                last_resort_key_package: last_resort,
                sealed_name: keys.seal_device_name(&username, me.device, device_name),
                revoke_others,
            }))
            .await?;
        if !matches!(reply, Reply::AuthOk(_)) {
            return Err(ClientError::Protocol("expected AuthOk".into()));
        }
        let device = me.device;
        self.local
            .transaction(|l| save_identity(l, &me, &keys, true))?;
        self.me = Some(me);
        self.keys = Some(keys);
        self.conn = Some(conn);
        let listed = self.device_list().await?;
        let revoked = listed
            .iter()
            .filter(|d| {
                d.revoked_ms > 0 && d.device.as_ref().is_some_and(|c| c.device_id != device.0)
            })
            .count();
        let active = listed.iter().filter(|d| d.revoked_ms == 0).count();
        if active == 1 {
            // Nobody is left to add this device to the account's own group: start a new one.
            self.ensure_self_group().await?;
        }
        self.sync_inner().await?;
        if revoke_others {
            // The lost devices may be in someone else's hands: history archived from now on
            // uses a key they never had.
            self.rotate_archive_key().await?;
        }
        Ok(Recovered {
            device,
            revoked,
            restored: self.last_restore,
            chats: self.chats()?.len(),
        })
    }
}

/// Polls a link's approval until it is there (or, with `completed`, until the approving device
/// marked it completed), or `deadline` passes.
async fn poll_approval(
    conn: &Connection,
    link_id: &[u8],
    deadline: Instant,
    completed: bool,
) -> Result<(Vec<u8>, bool), ClientError> {
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
            return Ok((approval.sealed_approval, approval.completed));
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
