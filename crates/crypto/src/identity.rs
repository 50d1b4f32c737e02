//! Account and device keys, and the exact byte strings they sign.
//!
//! An account has one Ed25519 identity key. It signs a certificate for each device key; a device
//! key is also the device's MLS signature key, so a member of any group can check that a leaf
//! belongs to the account it claims. A device logs in by signing the server's random challenge.
//! The signed byte strings themselves are defined in `chapar_types::signed`.

use chapar_types::signed::{archive_segment_payload, challenge_payload, device_cert_payload};
use chapar_types::{DeviceId, Username};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use rand_core::{CryptoRng, RngCore};

use crate::CryptoError;

/// A secret Ed25519 key: an account identity key or a device key. It zeroizes on drop and has
/// no `Debug`, so it cannot end up in a log.
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// A fresh random key.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        Self(SigningKey::generate(rng))
    }

    /// Restores a key from its 32 secret bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::MalformedKey)?;
        Ok(Self(SigningKey::from_bytes(&bytes)))
    }

    /// The 32 secret bytes, for the local key store only.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public half.
    pub fn public(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.0.sign(message).to_bytes().to_vec()
    }
}

/// Signs a device certificate with the account identity key.
pub fn certify_device(
    account: &SecretKey,
    username: &Username,
    device: DeviceId,
    device_key: &[u8],
) -> Vec<u8> {
    account.sign(&device_cert_payload(username, device, device_key))
}

/// Signs the revocation of device `device` of `username` with the account identity key.
pub fn sign_revocation(account: &SecretKey, username: &Username, device: DeviceId) -> Vec<u8> {
    account.sign(&chapar_types::signed::revocation_payload(username, device))
}

/// Checks that `account_key` signed the revocation of device `device` of `username`.
pub fn verify_revocation(
    account_key: &[u8],
    username: &Username,
    device: DeviceId,
    signature: &[u8],
) -> Result<(), CryptoError> {
    verify(
        account_key,
        &chapar_types::signed::revocation_payload(username, device),
        signature,
    )
}

/// Signs the server's recovery challenge with the key derived from the recovery key.
pub fn answer_recovery_challenge(
    recovery_auth: &SecretKey,
    challenge: &[u8],
    username: &Username,
    server_id: &[u8],
) -> Vec<u8> {
    recovery_auth.sign(&chapar_types::signed::recovery_challenge_payload(
        challenge, username, server_id,
    ))
}

/// Signs the server's login challenge with the device key, for the server `server_id`.
pub fn answer_challenge(
    device_key: &SecretKey,
    challenge: &[u8],
    device: DeviceId,
    server_id: &[u8],
) -> Vec<u8> {
    device_key.sign(&challenge_payload(challenge, device, server_id))
}

/// Signs an archive segment this device uploads (see
/// `chapar_types::signed::archive_segment_payload`).
pub fn sign_archive_segment(
    device_key: &SecretKey,
    associated_data: &[u8],
    previous: &[u8],
    body: &[u8],
) -> Vec<u8> {
    device_key.sign(&archive_segment_payload(associated_data, previous, body))
}

/// Checks that the device key `device_key` signed an archive segment.
pub fn verify_archive_segment(
    device_key: &[u8],
    associated_data: &[u8],
    previous: &[u8],
    body: &[u8],
    signature: &[u8],
) -> Result<(), CryptoError> {
    verify(
        device_key,
        &archive_segment_payload(associated_data, previous, body),
        signature,
    )
}

/// Verifies an Ed25519 signature in strict mode (no malleable signatures, no weak keys).
pub fn verify(public_key: &[u8], message: &[u8], signature: &[u8]) -> Result<(), CryptoError> {
    let key: [u8; 32] = public_key
        .try_into()
        .map_err(|_| CryptoError::MalformedKey)?;
    let key = VerifyingKey::from_bytes(&key).map_err(|_| CryptoError::MalformedKey)?;
    let signature = Signature::from_slice(signature).map_err(|_| CryptoError::MalformedKey)?;
    key.verify_strict(message, &signature)
        .map_err(|_| CryptoError::BadSignature)
}

/// Checks that `account_key` certified `device_key` as device `device` of `username`.
pub fn verify_device_cert(
    account_key: &[u8],
    username: &Username,
    device: DeviceId,
    device_key: &[u8],
    signature: &[u8],
) -> Result<(), CryptoError> {
    verify(
        account_key,
        &device_cert_payload(username, device, device_key),
        signature,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_verify_only_for_what_was_signed() {
        let mut rng = rand::thread_rng();
        let account = SecretKey::generate(&mut rng);
        let device = SecretKey::generate(&mut rng);
        let alice = Username::parse("alice").expect("valid");
        let mallory = Username::parse("mallory").expect("valid");
        let sig = certify_device(&account, &alice, DeviceId(7), &device.public());
        assert!(
            verify_device_cert(
                &account.public(),
                &alice,
                DeviceId(7),
                &device.public(),
                &sig
            )
            .is_ok()
        );
        assert!(
            verify_device_cert(
                &account.public(),
                &mallory,
                DeviceId(7),
                &device.public(),
                &sig
            )
            .is_err()
        );
        assert!(
            verify_device_cert(
                &account.public(),
                &alice,
                DeviceId(8),
                &device.public(),
                &sig
            )
            .is_err()
        );
        // A certificate signature cannot pass as a login answer.
        assert!(
            verify(
                &account.public(),
                &challenge_payload(&[0; 32], DeviceId(7), &[1; 32]),
                &sig
            )
            .is_err()
        );
    }

    #[test]
    fn secret_keys_round_trip() {
        let key = SecretKey::generate(&mut rand::thread_rng());
        let back = SecretKey::from_bytes(&key.to_bytes()).expect("32 bytes");
        assert_eq!(back.public(), key.public());
        assert!(SecretKey::from_bytes(&[1, 2, 3]).is_err());
    }
}
