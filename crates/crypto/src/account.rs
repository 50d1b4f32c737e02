//! Secrets people handle by hand: the recovery key written down at registration, the one-time
//! link code a new device shows, and the device fingerprints compared while linking.
//!
//! Both the recovery key and the link code are random bytes printed in unpadded base32 (letters
//! and the digits 2 to 7) in groups of four, and parsed back ignoring case, spaces and dashes,
//! and reading the look-alikes 0, 1 and 8 as O, I and B. Everything the server needs is derived from them one way, so the server
//! never learns the secret itself:
//!
//! - recovery key → an Ed25519 key that authenticates recovery requests, and an X25519 key the
//!   account's devices seal the recovery bundle to;
//! - link code → the rendezvous id the server files the request under, and the key the request
//!   is encrypted with.

use data_encoding::{BASE32_NOPAD, HEXLOWER};
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::CryptoError;
use crate::identity::SecretKey;
use crate::seal::{SealSecret, SymmetricKey, derive_key};

/// Random bytes in a recovery key: 160 bits, 32 base32 characters.
pub const RECOVERY_KEY_BYTES: usize = 20;
/// Random bytes in a link code: 120 bits, 24 base32 characters.
pub const LINK_CODE_BYTES: usize = 15;
/// Length of the rendezvous id derived from a link code.
pub const LINK_ID_BYTES: usize = 16;

/// `text` in groups of four characters joined by `separator`.
fn in_fours(text: &str, separator: &str) -> String {
    text.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(separator)
}

fn grouped(bytes: &[u8]) -> String {
    in_fours(&BASE32_NOPAD.encode(bytes), "-")
}

fn ungrouped<const N: usize>(text: &str) -> Result<[u8; N], CryptoError> {
    let cleaned: String = text
        .chars()
        .filter(|c| !matches!(c, '-' | ' ' | '\t' | '\n' | '\r'))
        .map(|c| match c.to_ascii_uppercase() {
            // Digits base32 does not use, read as the letters they are mistaken for.
            '0' => 'O',
            '1' => 'I',
            '8' => 'B',
            c => c,
        })
        .collect();
    let bytes = BASE32_NOPAD
        .decode(cleaned.as_bytes())
        .map_err(|_| CryptoError::MalformedKey)?;
    bytes.try_into().map_err(|_| CryptoError::MalformedKey)
}

/// The account's recovery key. Shown once; never stored on a device or the server.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct RecoveryKey([u8; RECOVERY_KEY_BYTES]);

impl RecoveryKey {
    /// A fresh random recovery key.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut key = [0u8; RECOVERY_KEY_BYTES];
        rng.fill_bytes(&mut key);
        Self(key)
    }

    /// Parses the printed form (case, spaces and dashes do not matter).
    pub fn parse(text: &str) -> Result<Self, CryptoError> {
        ungrouped(text).map(Self)
    }

    /// The form to print: groups of four base32 characters.
    pub fn display(&self) -> String {
        grouped(&self.0)
    }

    /// The key that signs recovery requests; the server stores its public half.
    pub fn auth_key(&self) -> SecretKey {
        let derived = derive_key(&self.0, "chapar recovery auth v1");
        // Any 32 bytes are a valid Ed25519 secret key.
        #[allow(clippy::expect_used)]
        SecretKey::from_bytes(derived.as_bytes()).expect("32 bytes")
    }

    /// The key the recovery bundle is sealed to; devices keep its public half.
    pub fn seal_secret(&self) -> SealSecret {
        SealSecret::from_bytes(*derive_key(&self.0, "chapar recovery seal v1").as_bytes())
    }
}

/// The one-time code a new device shows and an existing device types (or scans) to approve it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct LinkCode([u8; LINK_CODE_BYTES]);

impl LinkCode {
    /// A fresh random code.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut code = [0u8; LINK_CODE_BYTES];
        rng.fill_bytes(&mut code);
        Self(code)
    }

    /// Parses the printed form.
    pub fn parse(text: &str) -> Result<Self, CryptoError> {
        ungrouped(text).map(Self)
    }

    /// The form to print and to put in the QR code.
    pub fn display(&self) -> String {
        grouped(&self.0)
    }

    /// The id the server files the request under. One-way: the server cannot recover the code.
    pub fn link_id(&self) -> [u8; LINK_ID_BYTES] {
        let digest = Sha256::new()
            .chain_update(b"chapar link id v1\0")
            .chain_update(self.0)
            .finalize();
        let mut id = [0u8; LINK_ID_BYTES];
        id.copy_from_slice(&digest[..LINK_ID_BYTES]);
        id
    }

    /// The key the new device's request is encrypted with.
    pub fn request_key(&self) -> SymmetricKey {
        derive_key(&self.0, "chapar link request v1")
    }

    /// The secret mixed into the sealed approval, binding it to whoever knew the code.
    pub fn approval_psk(&self) -> SymmetricKey {
        derive_key(&self.0, "chapar link approval v1")
    }
}

/// A short fingerprint of a device key, for people to compare while linking: 16 hex digits in
/// groups of four.
pub fn device_fingerprint(device_key: &[u8]) -> String {
    let digest = Sha256::new()
        .chain_update(b"chapar device fingerprint v1\0")
        .chain_update(device_key)
        .finalize();
    in_fours(&HEXLOWER.encode(&digest[..8]), " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_keys_survive_printing_and_sloppy_typing() {
        let mut rng = rand::thread_rng();
        let key = RecoveryKey::generate(&mut rng);
        let shown = key.display();
        assert_eq!(shown.len(), 32 + 7, "{shown}");
        let typed = shown.to_lowercase().replace('-', " ");
        let back = RecoveryKey::parse(&typed).expect("parses");
        assert_eq!(back.auth_key().public(), key.auth_key().public());
        assert_eq!(back.seal_secret().public(), key.seal_secret().public());
        assert!(RecoveryKey::parse("ABCD-EFGH").is_err());
        // Look-alike digits are read as the letters they stand for.
        let misread = shown.replace('O', "0").replace('I', "1").replace('B', "8");
        assert_eq!(
            RecoveryKey::parse(&misread)
                .expect("parses")
                .auth_key()
                .public(),
            key.auth_key().public()
        );

        let code = LinkCode::generate(&mut rng);
        let again = LinkCode::parse(&code.display()).expect("parses");
        assert_eq!(again.link_id(), code.link_id());
        assert_eq!(code.display().len(), 24 + 5);
        let other = LinkCode::generate(&mut rng);
        assert_ne!(other.link_id(), code.link_id());
    }

    #[test]
    fn recovery_derivations_are_independent() {
        let key = RecoveryKey::generate(&mut rand::thread_rng());
        assert_ne!(key.auth_key().public(), key.seal_secret().public());
        assert_eq!(device_fingerprint(&[1; 32]).len(), 19);
        assert_ne!(device_fingerprint(&[1; 32]), device_fingerprint(&[2; 32]));
    }
}
