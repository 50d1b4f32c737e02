//! The domain rules of the delivery service, independent of any transport.
//!
//! The service checks who may do what (registration proofs, device logins, size limits) and
//! delegates ordering and durability to the [`Store`]. It never sees plaintext: every payload it
//! handles is MLS ciphertext or sealed by the account, and it logs ids and sizes only.
//!
//! This file holds accounts, key packages and the group logs; [`devices`] holds linking,
//! revocation and recovery; [`archive`] the accounts' encrypted history archives; [`files`]
//! encrypted file transfers (uploads, downloads, references, garbage collection);
//! [`session`] what one connection may do, [`submit`] appending with its limits and
//! fan-out, [`quotas`] what one account or address may do, and [`rate`] the token buckets
//! behind it.

pub mod archive;
pub mod devices;
pub mod files;
pub(crate) mod key_file;
pub mod quotas;
pub mod rate;
pub mod session;
pub mod submit;

use std::sync::Arc;

use chapar_store::{
    AccountRecord, Append, Appended, BlobRefs, ClaimedKeyPackage, GroupHead, LogPage, NewAccount,
    Store, WelcomeRecord,
};
use chapar_types::limits::{
    GROUP_LIST_PAGE_MAX, KEY_PACKAGE_BYTES_MAX, KEY_PACKAGES_AT_REGISTER_MAX,
    KEY_PACKAGES_PER_UPLOAD_MAX, SYNC_PAGE_ENTRIES_MAX,
};
use chapar_types::signed::{SERVER_ID_BYTES, challenge_payload};
use chapar_types::{DeviceId, ErrorCode, GroupId, Seq, Username};
use ed25519_dalek::{Signature, VerifyingKey};

use crate::error::ServiceError;
use crate::hub::Hub;
use crate::limits::Limits;
use crate::metrics::{LimitHit, Metrics};
pub use quotas::Rates;
use quotas::{GROUP_CHARGE_BYTES, append_charge};

/// An authenticated device on a connection.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The device.
    pub device: DeviceId,
    /// Its account.
    pub username: Username,
}

/// A registration request, as the api layer decoded it.
pub struct Registration {
    /// Requested username (not yet validated).
    pub username: String,
    /// Ed25519 public account key.
    pub account_key: Vec<u8>,
    /// The first device, certified by the account key, with its key material.
    pub device: devices::NewDeviceRequest,
    /// The device key's signature over the login challenge.
    pub challenge_signature: Vec<u8>,
    /// The proof of work over the connection's challenge (see `chapar_types::pow`).
    pub proof_of_work: u64,
    /// The invite code it carries (empty if none).
    pub invite_code: String,
    /// The address it came from, if the transport knows it.
    pub peer: Option<std::net::IpAddr>,
}

/// The delivery service: store, live fan-out and metrics.
pub struct Service<S> {
    /// Durable state.
    pub store: S,
    /// Connected devices.
    pub hub: Hub,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Limits on clients.
    pub limits: Limits,
    /// Rate limits, per address and per account.
    pub rates: Rates,
    /// File storage, tokens and their configuration.
    pub files: files::Files,
    /// This server's identity, which devices bind their login answers to.
    pub server_id: [u8; SERVER_ID_BYTES],
}

pub(crate) fn verify(key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let Ok(key) = <[u8; 32]>::try_from(key) else {
        return false;
    };
    let Ok(key) = VerifyingKey::from_bytes(&key) else {
        return false;
    };
    let Ok(signature) = Signature::from_slice(signature) else {
        return false;
    };
    key.verify_strict(message, &signature).is_ok()
}

/// Checks that a new device's key answered this connection's challenge for this server.
pub(crate) fn check_challenge(
    server_id: &[u8],
    challenge: &[u8],
    device: DeviceId,
    device_key: &[u8],
    signature: &[u8],
) -> Result<(), ServiceError> {
    if verify(
        device_key,
        &challenge_payload(challenge, device, server_id),
        signature,
    ) {
        Ok(())
    } else {
        Err(ServiceError::new(
            ErrorCode::AuthenticationFailed,
            "the challenge signature does not verify",
        ))
    }
}

/// Refuses a new device that brings more than [`KEY_PACKAGES_AT_REGISTER_MAX`] one-time key
/// packages.
pub(crate) fn check_new_device_packages(
    device: &devices::NewDeviceRequest,
) -> Result<(), ServiceError> {
    if device.key_packages.len() > KEY_PACKAGES_AT_REGISTER_MAX {
        return Err(ServiceError::new(
            ErrorCode::TooLarge,
            format!(
                "a new device brings at most {KEY_PACKAGES_AT_REGISTER_MAX} key packages; upload \
                 more once logged in"
            ),
        ));
    }
    Ok(())
}

pub(crate) fn check_key_packages(
    packages: &[Vec<u8>],
    last_resort: &[u8],
) -> Result<(), ServiceError> {
    if packages.len() > KEY_PACKAGES_PER_UPLOAD_MAX {
        return Err(ServiceError::new(
            ErrorCode::TooLarge,
            format!("at most {KEY_PACKAGES_PER_UPLOAD_MAX} key packages per upload"),
        ));
    }
    if packages
        .iter()
        .any(|k| k.is_empty() || k.len() > KEY_PACKAGE_BYTES_MAX)
        || last_resort.len() > KEY_PACKAGE_BYTES_MAX
    {
        return Err(ServiceError::new(
            ErrorCode::TooLarge,
            format!("a key package is empty or larger than {KEY_PACKAGE_BYTES_MAX} bytes"),
        ));
    }
    Ok(())
}

/// Keeps the longest prefix of `items` whose sizes add up to at most
/// [`chapar_types::limits::PAGE_BYTES_MAX`] (and at least the first item), so that a page
/// always fits in one frame. The client asks again from where the page stopped.
pub(crate) fn fit_page<T>(mut items: Vec<T>, size: impl Fn(&T) -> usize) -> Vec<T> {
    let mut total = 0;
    let keep = items
        .iter()
        .position(|item| {
            total += size(item);
            total > chapar_types::limits::PAGE_BYTES_MAX
        })
        .map_or(items.len(), |over| over.max(1));
    items.truncate(keep);
    items
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl<S: Store> Service<S> {
    /// A service over `store`, with `files` for file transfers, holding clients to
    /// `limits`.
    pub fn new(
        store: S,
        files: files::Files,
        limits: Limits,
        server_id: [u8; SERVER_ID_BYTES],
    ) -> Self {
        Self {
            store,
            hub: Hub::default(),
            metrics: Arc::new(Metrics::default()),
            rates: Rates::new(&limits),
            limits,
            files,
            server_id,
        }
    }

    /// Creates an account after checking that the account key certified the device key and the
    /// device key answered this connection's challenge.
    pub async fn register(
        &self,
        challenge: &[u8],
        r: Registration,
    ) -> Result<Authenticated, ServiceError> {
        let limits = &self.limits;
        let username = Username::parse(&r.username)
            .map_err(|e| ServiceError::new(ErrorCode::InvalidUsername, e.to_string()))?;
        if !chapar_types::pow::verify(
            challenge,
            username.as_str(),
            limits.registration_pow_bits,
            r.proof_of_work,
        ) {
            self.metrics.hit(LimitHit::ProofOfWork);
            return Err(ServiceError::new(
                ErrorCode::ProofOfWorkRequired,
                format!(
                    "registering needs a proof of work of {} bits over this connection's challenge",
                    limits.registration_pow_bits
                ),
            ));
        }
        // After the work, and counted with the address's registrations: guessing invite
        // codes costs a proof each, and a few an hour.
        let address = rate::address_key(r.peer);
        if !limits.invite_codes.is_empty() && !limits.invite_codes.contains(&r.invite_code) {
            self.metrics.hit(LimitHit::Invite);
            self.rates.registrations.allow(&address);
            return Err(ServiceError::new(
                ErrorCode::InviteRequired,
                "this server registers accounts by invitation only",
            ));
        }
        check_new_device_packages(&r.device)?;
        let device = r.device.device;
        let first = devices::certify_device(&username, &r.account_key, r.device, true)?;
        check_challenge(
            &self.server_id,
            challenge,
            device,
            &first.device.device_key,
            &r.challenge_signature,
        )?;
        // Counted once the request is well-formed and proven: squatting names costs as much
        // as taking them.
        if !self.rates.registrations.allow(&address) {
            self.metrics.hit(LimitHit::RegistrationRate);
            return Err(ServiceError::new(
                ErrorCode::RateLimited,
                format!(
                    "at most {} registrations an hour from one address; try later",
                    limits.registrations_per_address_per_hour
                ),
            ));
        }
        self.store
            .create_account(NewAccount {
                username: username.as_str().to_owned(),
                account_key: r.account_key,
                device: first.device,
                key_packages: first.key_packages,
                last_resort_key_package: first.last_resort_key_package,
            })
            .await?;
        tracing::info!(user = %username, %device, "registered");
        Ok(Authenticated { device, username })
    }

    /// Logs a device in by its signature over this connection's challenge. Returns how many
    /// one-time key packages it has left, so it can top them up.
    pub async fn authenticate(
        &self,
        challenge: &[u8],
        device: DeviceId,
        signature: &[u8],
    ) -> Result<(Authenticated, u32), ServiceError> {
        let failed = || {
            ServiceError::new(
                ErrorCode::AuthenticationFailed,
                "unknown device or bad signature",
            )
        };
        let record = self.store.device(device).await?.ok_or_else(failed)?;
        if !verify(
            &record.device_key,
            &challenge_payload(challenge, device, &self.server_id),
            signature,
        ) {
            return Err(failed());
        }
        if record.revoked_ms.is_some() {
            return Err(ServiceError::new(
                ErrorCode::DeviceRevoked,
                "this device was revoked",
            ));
        }
        let username = Username::parse(&record.username).map_err(|_| failed())?;
        let remaining = self.store.key_package_count(device).await?;
        self.store.touch_device(device, now_ms()).await?;
        Ok((Authenticated { device, username }, remaining))
    }

    /// Adds key packages for the caller's device.
    pub async fn upload_key_packages(
        &self,
        who: &Authenticated,
        one_time: Vec<Vec<u8>>,
        last_resort: Vec<u8>,
    ) -> Result<u32, ServiceError> {
        check_key_packages(&one_time, &last_resort)?;
        let adding = one_time.iter().map(Vec::len).sum::<usize>() + last_resort.len();
        self.check_key_package_bytes(&who.username, adding).await?;
        let last_resort = (!last_resort.is_empty()).then_some(last_resort);
        Ok(self
            .store
            .add_key_packages(
                who.device,
                one_time,
                last_resort,
                self.limits.key_package_bytes_per_account_max,
            )
            .await?)
    }

    /// The public account record of `username`.
    pub async fn account(&self, username: &str) -> Result<AccountRecord, ServiceError> {
        let name = Username::parse(username)
            .map_err(|e| ServiceError::new(ErrorCode::InvalidUsername, e.to_string()))?;
        self.store
            .account(name.as_str())
            .await?
            .ok_or_else(|| ServiceError::new(ErrorCode::UnknownUser, format!("no user @{name}")))
    }

    /// Claims one key package per active device of `username` (other than the caller's), or
    /// only for `only` when it is not empty.
    pub async fn claim_key_packages(
        &self,
        who: &Authenticated,
        username: &str,
        only: Vec<DeviceId>,
    ) -> Result<(AccountRecord, Vec<ClaimedKeyPackage>), ServiceError> {
        if only.len() > chapar_types::limits::DEVICES_PER_ACCOUNT_MAX {
            return Err(ServiceError::new(
                ErrorCode::TooLarge,
                "more devices asked for than an account can have",
            ));
        }
        let account = self.account(username).await?;
        // Each claim uses up one-time packages: nobody may drain another account's.
        let mut one_time = true;
        if account.username != who.username.as_str() {
            let target = Username::parse(&account.username).map_err(|_| {
                ServiceError::new(ErrorCode::Internal, "a stored username is invalid")
            })?;
            if !self
                .rates
                .claims
                .allow(&(who.username.clone(), target.clone()))
            {
                self.metrics.hit(LimitHit::ClaimRate);
                return Err(ServiceError::new(
                    ErrorCode::RateLimited,
                    format!(
                        "at most {} claims of one account's key packages an hour; try later",
                        self.limits.claims_per_account_pair_per_hour
                    ),
                ));
            }
            // Past the account's own hourly give-out, however many claimers there are, its
            // last-resort packages serve (a new chat still works; its first epoch just
            // lacks the one-time package's forward secrecy).
            one_time = self.rates.one_time_claims.allow(&target);
            if !one_time {
                self.metrics.hit(LimitHit::OneTimeClaims);
            }
        }
        let claimed = self
            .store
            .claim_key_packages(&account.username, who.device, only, one_time)
            .await?;
        Ok((account, claimed))
    }

    /// Registers a new group with the caller as its only member.
    pub async fn create_group(
        &self,
        who: &Authenticated,
        group: GroupId,
    ) -> Result<(), ServiceError> {
        self.charge_writes(who, GROUP_CHARGE_BYTES)?;
        if let Err(e) = self.store.create_group(group, who.device, now_ms()).await {
            self.refund_writes(who, GROUP_CHARGE_BYTES);
            return Err(e.into());
        }
        Ok(())
    }

    /// Appends to a group's log (durably) and returns where it landed.
    pub async fn append(
        &self,
        who: &Authenticated,
        mut append: Append,
        refs: Option<BlobRefs>,
    ) -> Result<Appended, ServiceError> {
        let charge = append_charge(&append);
        self.charge_writes(who, charge)?;
        append.sender = who.device;
        append.now_ms = now_ms();
        let is_message = matches!(append.kind, chapar_store::AppendKind::Application { .. });
        let appended = match refs {
            Some(refs) => self.append_referencing(append, refs).await,
            None => self.store.append(append).await.map_err(ServiceError::from),
        };
        // What was not stored is not charged: a co-member's traffic that makes our commit
        // stale must not spend our day.
        let appended = match appended {
            Ok(appended) if !appended.duplicate => appended,
            Ok(duplicate) => {
                self.refund_writes(who, charge);
                duplicate
            }
            Err(e) => {
                self.refund_writes(who, charge);
                return Err(e);
            }
        };
        if !appended.duplicate {
            let counter = if is_message {
                &self.metrics.messages_total
            } else {
                &self.metrics.handshakes_total
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(appended)
    }

    /// A page of a group's log, as far as the caller may see it.
    pub async fn read_log(
        &self,
        who: &Authenticated,
        group: GroupId,
        after: Seq,
        limit: u32,
    ) -> Result<LogPage, ServiceError> {
        let limit = limit.clamp(1, SYNC_PAGE_ENTRIES_MAX);
        let mut page = self.store.read_log(group, who.device, after, limit).await?;
        let complete = page.entries.len();
        page.entries = fit_page(page.entries, |e| e.payload.len());
        if page.entries.len() < complete {
            // The end of the membership was among the entries cut off.
            page.membership_ended = false;
        }
        Ok(page)
    }

    /// Welcomes waiting for the caller.
    pub async fn read_welcomes(
        &self,
        who: &Authenticated,
        after_id: u64,
        limit: u32,
    ) -> Result<Vec<WelcomeRecord>, ServiceError> {
        let limit = limit.clamp(1, SYNC_PAGE_ENTRIES_MAX);
        let welcomes = self
            .store
            .read_welcomes(who.device, after_id, limit)
            .await?;
        Ok(fit_page(welcomes, |w| w.welcome.len()))
    }

    /// The caller's groups and their heads.
    pub async fn groups(
        &self,
        who: &Authenticated,
        after: Option<GroupId>,
        limit: u32,
    ) -> Result<Vec<GroupHead>, ServiceError> {
        let limit = match limit {
            0 => GROUP_LIST_PAGE_MAX,
            n => n.min(GROUP_LIST_PAGE_MAX),
        };
        Ok(self.store.device_groups(who.device, after, limit).await?)
    }
}
