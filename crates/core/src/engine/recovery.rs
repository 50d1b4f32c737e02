//! The recovery key: set at registration, replaced on request (or when the device that set it
//! is revoked), and used to restore the account on a new device after every other device is
//! lost.
//!
//! The key itself is shown once and stored nowhere. The server keeps the public half of the
//! key derived from it for authentication, and the account's secrets (account key, archive key
//! generations, recovery public keys) sealed to another key derived from it. Devices keep both
//! public halves so they can reseal the bundle when the archive key changes.

use chapar_crypto::account::RecoveryKey;
use chapar_crypto::identity::{self, SecretKey};
use chapar_crypto::seal;
use chapar_types::{DeviceId, ErrorCode, Username};
use chapar_wire::content::{AccountSecrets, RecoveryPublic, account_sync};
use chapar_wire::v1::{self, client_frame::Request, response::Result as Reply};

use super::device::{Device, unexpected};
use super::link::{check_name, decode};
use super::self_group::RECOVERY_SET_BY;
use crate::account_keys::{AccountKeys, recovery_aad};
use crate::events::Warning;
use crate::identity::{self as ident, Identity, LAST_RESORT_UPLOADED};
use crate::model::Recovered;
use crate::{CoreError, Usage};

impl Device {
    /// Stores a fresh recovery bundle (same recovery key) after the key ring changed. Skipped,
    /// with a warning, if the account's recovery key is not the one this device knows (another
    /// device replaced it, and its bundle carries that device's key ring).
    pub(crate) async fn reseal_recovery_bundle(&self) -> Result<(), CoreError> {
        let keys = self.account_keys()?;
        let Some(recovery) = keys.recovery.clone() else {
            return Ok(());
        };
        let (_, current) = self.device_list().await?;
        if current != recovery.auth_public_key {
            self.warn(Warning::RecoveryBundleStale);
            return Ok(());
        }
        let expected = recovery.auth_public_key.clone();
        self.store_recovery_bundle(&keys, &recovery, expected).await
    }

    /// Seals `keys` to the recovery key `publics` and stores the bundle, if the server's
    /// recovery key is still `expected`.
    async fn store_recovery_bundle(
        &self,
        keys: &AccountKeys,
        publics: &RecoveryPublic,
        expected: Vec<u8>,
    ) -> Result<(), CoreError> {
        let me = self.me()?;
        let bundle = keys.seal_recovery_bundle(
            &self.env,
            &me.username,
            &me.account_key.to_bytes(),
            &publics.seal_public_key,
        )?;
        self.call(Request::SetRecovery(v1::SetRecovery {
            auth_key: publics.auth_public_key.clone(),
            sealed_bundle: bundle,
            expected_auth_key: expected,
        }))
        .await?;
        Ok(())
    }

    /// Makes a new recovery key, stores the bundle sealed to it and tells the account's other
    /// devices. Returns the key to show; it is stored nowhere.
    pub(crate) async fn set_new_recovery_key(&self) -> Result<String, CoreError> {
        let recovery_key = self.env.with_rng(RecoveryKey::generate);
        let publics = RecoveryPublic {
            seal_public_key: recovery_key.seal_secret().public().to_vec(),
            auth_public_key: recovery_key.auth_key().public().to_vec(),
        };
        // Replace whatever the server has now, even if this device missed a rotation.
        let (_, expected) = self.device_list().await?;
        let mut keys = self.account_keys()?;
        keys.recovery = Some(publics.clone());
        match self.store_recovery_bundle(&keys, &publics, expected).await {
            Ok(()) => {}
            Err(e) if e.code() == Some(ErrorCode::Conflict) => {
                return Err(Usage::RecoveryKeyRace.into());
            }
            Err(e) => return Err(e),
        }
        let device = self.me()?.device;
        self.write(|tx| {
            keys.save(tx)?;
            tx.set_counter(RECOVERY_SET_BY, device.0)
        })?;
        self.send_account_sync(account_sync::Kind::Recovery(publics))
            .await?;
        Ok(recovery_key.display())
    }

    /// Replaces the recovery key; the old one stops working. Returns the new one to show.
    pub(crate) async fn rotate_recovery_key(&self) -> Result<String, CoreError> {
        self.connect().await?;
        // Learn of archive keys other devices made, so the new bundle carries them all.
        self.sync_all().await?;
        self.set_new_recovery_key().await
    }

    /// Restores `username` on this (empty) profile with the recovery key, after every other
    /// device was lost. With `revoke_others`, the old devices are revoked at once and the
    /// archive key is replaced.
    pub(crate) async fn recover(
        &self,
        server: &str,
        username: &Username,
        recovery_key: &str,
        device_name: &str,
        revoke_others: bool,
    ) -> Result<Recovered, CoreError> {
        self.require_empty_profile()?;
        check_name(device_name)?;
        let recovery_key =
            RecoveryKey::parse(recovery_key).map_err(|_| Usage::InvalidRecoveryKey)?;
        let challenge = self.hello().await?;
        let server_id = self.io.server_id();
        let recovery_signature = identity::answer_recovery_challenge(
            &recovery_key.auth_key(),
            &challenge,
            username,
            &server_id,
        );
        let bundle = self
            .call(Request::FetchRecovery(v1::FetchRecovery {
                username: username.to_string(),
                signature: recovery_signature.clone(),
            }))
            .await
            .map_err(|e| match e.code() {
                Some(ErrorCode::AuthenticationFailed) => Usage::WrongRecoveryKey.into(),
                _ => e,
            })?;
        let Reply::RecoveryBundle(bundle) = bundle else {
            return Err(unexpected("RecoveryBundle"));
        };
        let secrets: AccountSecrets = decode(
            &seal::open_sealed(
                &recovery_key.seal_secret(),
                &[],
                &recovery_aad(username),
                &bundle.sealed_bundle,
            )?,
            "recovery bundle",
        )?;
        let mut keys = AccountKeys::from_secrets(&secrets)?;
        keys.require_server(&server_id)?;
        let me = Identity {
            server: server.trim_end_matches('/').to_owned(),
            username: username.clone(),
            device: DeviceId(self.env.random_u64()),
            account_key: SecretKey::from_bytes(&secrets.account_secret_key)?,
            device_key: self.env.with_rng(SecretKey::generate),
        };
        let (one_time, last_resort) =
            self.write(|tx| ident::make_key_packages(&self.mls(tx), &me, true))?;
        let reply = self
            .call(Request::RecoverDevice(v1::RecoverDevice {
                username: username.to_string(),
                recovery_signature,
                device: Some(me.certificate()),
                challenge_signature: me.answer(&challenge, &server_id),
                key_packages: one_time,
                last_resort_key_package: last_resort,
                sealed_name: keys.seal_device_name(&self.env, username, me.device, device_name),
                revoke_others,
            }))
            .await?;
        if !matches!(reply, Reply::AuthOk(_)) {
            return Err(unexpected("AuthOk"));
        }
        let device = me.device;
        self.become_device(me, &keys, Some(self.now_ms()))?;
        self.write(|tx| tx.set_counter(LAST_RESORT_UPLOADED, 1))?;
        self.io.set_logged_in();
        let (listed, _) = self.device_list().await?;
        if revoke_others {
            // The server revoked the others on the recovery key's word; contacts remove them
            // only on the account's own proof, which this device can now give.
            for cert in listed
                .iter()
                .filter(|d| d.revoked_ms > 0)
                .filter_map(|d| d.device.as_ref())
                .filter(|c| c.device_id != device.0)
            {
                let lost = DeviceId(cert.device_id);
                self.call(Request::RevokeDevice(v1::RevokeDevice {
                    device_id: lost.0,
                    account_signature: identity::sign_revocation(
                        &self.me()?.account_key,
                        username,
                        lost,
                    ),
                }))
                .await?;
            }
        }
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
        self.sync_all().await?;
        if revoke_others {
            // The lost devices may be in someone else's hands: history archived from now on
            // uses a key they never had.
            self.rotate_archive_key().await?;
        }
        Ok(Recovered {
            device,
            revoked,
            restored: self.restored.get(),
            chats: self.chat_list()?.len(),
        })
    }
}
