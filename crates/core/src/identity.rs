//! Who this profile is: its server, account and device, with the account key and device key,
//! and what they sign (the device certificate, a connection's login answer, key packages).

use chapar_crypto::identity::{self, SecretKey};
use chapar_crypto::mls::{self, DeviceIdentity, DeviceSigner};
use chapar_types::{DeviceId, Username};
use chapar_wire::v1;

use crate::CoreError;
use crate::account_keys::AccountKeys;
use crate::storage::Tx;

/// One-time key packages uploaded at registration and whenever the server runs low.
pub(crate) const KEY_PACKAGE_BATCH: usize = 20;
/// Profile key set once the device's last-resort key package is on the server.
pub(crate) const LAST_RESORT_UPLOADED: &str = "last_resort_uploaded";
/// Profile key: until when (ms since the epoch) a new device replays what arrives in the
/// archive on each sync; 0 once done.
pub(crate) const RESTORE_UNTIL: &str = "restore_until";

/// Who this profile is.
pub struct Identity {
    /// The server's address, as the user gave it.
    pub server: String,
    /// The account.
    pub username: Username,
    /// This device.
    pub device: DeviceId,
    /// The account's identity key (every device of the account holds it).
    pub account_key: SecretKey,
    /// This device's key (its MLS signature key).
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

    /// This device's answer to a connection's login challenge, for the server `server_id`.
    pub(crate) fn answer(&self, challenge: &[u8], server_id: &[u8]) -> Vec<u8> {
        identity::answer_challenge(&self.device_key, challenge, self.device, server_id)
    }

    /// The MLS signer of this device's leaves (each carries the account's certificate).
    pub(crate) fn signer(&self) -> DeviceSigner {
        DeviceSigner::certified(
            DeviceIdentity {
                username: self.username.clone(),
                device: self.device,
            },
            &self.device_key,
            &self.account_key,
        )
    }

    /// The leaf check for groups this device joins or processes commits of: a leaf counts
    /// only if its certificate verifies under the account key pinned for its username (this
    /// account's own key for its own devices, which never changes).
    pub(crate) fn authenticator<'a>(
        &'a self,
        tx: &'a Tx<'_>,
    ) -> impl FnMut(&mls::GroupMember) -> Result<(), chapar_crypto::CryptoError> + 'a {
        let own = self.account_key.public();
        move |member: &mls::GroupMember| {
            let user = &member.identity.username;
            if *user == self.username {
                return member.verify(&own);
            }
            match tx.pinned_key(user) {
                Ok(Some(key)) => member.verify(&key),
                Ok(None) => Err(chapar_crypto::CryptoError::UnknownAccounts(vec![
                    user.clone(),
                ])),
                Err(e) => Err(chapar_crypto::CryptoError::Storage(e.to_string())),
            }
        }
    }

    /// Reads the identity from the profile (None: no account yet).
    pub(crate) fn load(tx: &Tx<'_>) -> Result<Option<Self>, CoreError> {
        let (Some(server), Some(username), Some(device), Some(account_key), Some(device_key)) = (
            tx.value("server")?,
            tx.value("username")?,
            tx.value("device_id")?,
            tx.value("account_key")?,
            tx.value("device_key")?,
        ) else {
            return Ok(None);
        };
        let bad = || CoreError::Profile("the profile's identity is damaged".into());
        let device = <[u8; 8]>::try_from(device.as_slice()).map_err(|_| bad())?;
        Ok(Some(Self {
            server: String::from_utf8(server).map_err(|_| bad())?,
            username: Username::parse(&String::from_utf8_lossy(&username)).map_err(|_| bad())?,
            device: DeviceId(u64::from_be_bytes(device)),
            account_key: SecretKey::from_bytes(&account_key)?,
            device_key: SecretKey::from_bytes(&device_key)?,
        }))
    }

    /// Stores this identity and the account's keys in the profile. `restore_from` is the
    /// time from which the archive is replayed on each sync (a linked or recovered device), or
    /// `None` for a new account.
    pub(crate) fn save(
        &self,
        tx: &Tx<'_>,
        keys: &AccountKeys,
        restore_from: Option<u64>,
        now_ms: u64,
    ) -> Result<(), CoreError> {
        tx.set_counter(RESTORE_UNTIL, restore_from.unwrap_or(0))?;
        tx.set_value("server", self.server.as_bytes())?;
        tx.set_value("username", self.username.as_str().as_bytes())?;
        tx.set_value("device_id", &self.device.0.to_be_bytes())?;
        tx.set_value("account_key", &self.account_key.to_bytes())?;
        tx.set_value("device_key", &self.device_key.to_bytes())?;
        keys.save(tx)?;
        tx.pin_key(&self.username, &self.account_key.public(), now_ms)
    }
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

/// A batch of one-time key packages (and a last-resort one, or an empty vector), made with
/// `provider` (whose storage keeps their private keys).
pub(crate) fn make_key_packages(
    provider: &crate::provider::Provider<'_>,
    me: &Identity,
    last_resort: bool,
) -> Result<(Vec<Vec<u8>>, Vec<u8>), CoreError> {
    let signer = me.signer();
    let one_time = (0..KEY_PACKAGE_BATCH)
        .map(|_| mls::new_key_package(provider, &signer, false))
        .collect::<Result<Vec<_>, _>>()?;
    let last_resort = if last_resort {
        mls::new_key_package(provider, &signer, true)?
    } else {
        Vec::new()
    };
    Ok((one_time, last_resort))
}
