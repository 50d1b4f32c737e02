//! Sealing small secrets outside MLS: symmetric AEAD under an account key, and sealing to an
//! X25519 public key (the recovery key, a linking device's ephemeral key).
//!
//! One AEAD everywhere: AES-256-GCM with a random 96-bit nonce in front of the ciphertext. Keys
//! here encrypt at most millions of small items over their life, far below the 2^32 random-nonce
//! bound. Every call binds `aad` (what the bytes are for and whose they are), so a sealed item
//! cannot be replayed in another place.
//!
//! `seal_to` is ECIES over X25519: an ephemeral key pair, HKDF-SHA256 over the shared secret,
//! both public keys and an optional pre-shared secret (the link code), then AES-256-GCM. Mixing
//! in the pre-shared secret means a sealed approval is bound to whoever knew the code.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use rand_core::{CryptoRng, RngCore};
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::CryptoError;

/// Length of a symmetric key, in bytes.
pub const KEY_BYTES: usize = 32;
/// Length of the nonce in front of every ciphertext.
pub const NONCE_BYTES: usize = 12;
/// Length of the authentication tag.
pub const TAG_BYTES: usize = 16;
/// Length of an X25519 public key.
pub const PUBLIC_KEY_BYTES: usize = 32;

/// A 256-bit symmetric key. Zeroized on drop; no `Debug`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SymmetricKey([u8; KEY_BYTES]);

impl SymmetricKey {
    /// A fresh random key.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut key = [0u8; KEY_BYTES];
        rng.fill_bytes(&mut key);
        Self(key)
    }

    /// A key from its bytes (which must be exactly [`KEY_BYTES`] long).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        bytes
            .try_into()
            .map(Self)
            .map_err(|_| CryptoError::MalformedKey)
    }

    /// The key's bytes, for sealing it inside something else.
    pub fn as_bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }

    /// Derives a sub-key for one purpose (`label`) from this key.
    pub fn derive(&self, label: &str) -> Self {
        derive_key(&self.0, label)
    }

    pub(crate) fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new((&self.0).into())
    }
}

/// HKDF-SHA256 of `secret` with `label` as the info string.
pub fn derive_key(secret: &[u8], label: &str) -> SymmetricKey {
    let mut key = [0u8; KEY_BYTES];
    // A 32-byte output is always within HKDF-SHA256's limit of 255 * 32 bytes.
    #[allow(clippy::expect_used)]
    Hkdf::<Sha256>::new(None, secret)
        .expand(label.as_bytes(), &mut key)
        .expect("32 bytes is a valid HKDF output length");
    SymmetricKey(key)
}

/// Encrypts `plaintext` under `key`, binding `aad`. Returns nonce || ciphertext || tag.
pub fn encrypt<R: RngCore + CryptoRng>(
    key: &SymmetricKey,
    aad: &[u8],
    plaintext: &[u8],
    rng: &mut R,
) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_BYTES];
    rng.fill_bytes(&mut nonce);
    let mut out = Vec::with_capacity(NONCE_BYTES + plaintext.len() + TAG_BYTES);
    out.extend_from_slice(&nonce);
    // AES-GCM encryption fails only for inputs beyond 64 GiB, far above any caller's limit.
    #[allow(clippy::expect_used)]
    let sealed = key
        .cipher()
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("plaintext within AES-GCM's length limit");
    out.extend_from_slice(&sealed);
    out
}

/// Decrypts what [`encrypt`] produced with the same key and `aad`.
pub fn decrypt(key: &SymmetricKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < NONCE_BYTES + TAG_BYTES {
        return Err(CryptoError::Decrypt);
    }
    let (nonce, body) = sealed.split_at(NONCE_BYTES);
    key.cipher()
        .decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad })
        .map_err(|_| CryptoError::Decrypt)
}

/// An X25519 secret key that sealed items are opened with. Zeroized on drop; no `Debug`.
pub struct SealSecret(StaticSecret);

impl SealSecret {
    /// A fresh random key.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        Self(StaticSecret::random_from_rng(rng))
    }

    /// A key from 32 secret bytes (for keys derived from a recovery key).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(StaticSecret::from(bytes))
    }

    /// The public key to seal to.
    pub fn public(&self) -> [u8; PUBLIC_KEY_BYTES] {
        PublicKey::from(&self.0).to_bytes()
    }
}

fn seal_key(
    shared: &[u8; 32],
    ephemeral: &[u8; 32],
    recipient: &[u8; 32],
    psk: &[u8],
) -> SymmetricKey {
    let mut ikm = Vec::with_capacity(96 + psk.len());
    ikm.extend_from_slice(shared);
    ikm.extend_from_slice(ephemeral);
    ikm.extend_from_slice(recipient);
    ikm.extend_from_slice(psk);
    let key = derive_key(&ikm, "chapar seal v1");
    ikm.zeroize();
    key
}

/// Seals `plaintext` so that only the holder of the secret behind `recipient` (and, if `psk` is
/// not empty, who also knows `psk`) can open it. Returns ephemeral public key || nonce ||
/// ciphertext || tag.
pub fn seal_to<R: RngCore + CryptoRng>(
    recipient: &[u8],
    psk: &[u8],
    aad: &[u8],
    plaintext: &[u8],
    rng: &mut R,
) -> Result<Vec<u8>, CryptoError> {
    let recipient: [u8; 32] = recipient
        .try_into()
        .map_err(|_| CryptoError::MalformedKey)?;
    let ephemeral = StaticSecret::random_from_rng(&mut *rng);
    let ephemeral_public = PublicKey::from(&ephemeral).to_bytes();
    let shared = ephemeral.diffie_hellman(&PublicKey::from(recipient));
    if !shared.was_contributory() {
        return Err(CryptoError::MalformedKey);
    }
    let key = seal_key(shared.as_bytes(), &ephemeral_public, &recipient, psk);
    let mut out = ephemeral_public.to_vec();
    out.extend_from_slice(&encrypt(&key, aad, plaintext, rng));
    Ok(out)
}

/// Opens what [`seal_to`] sealed to `secret`'s public key, with the same `psk` and `aad`.
pub fn open_sealed(
    secret: &SealSecret,
    psk: &[u8],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < PUBLIC_KEY_BYTES {
        return Err(CryptoError::Decrypt);
    }
    let (ephemeral, body) = sealed.split_at(PUBLIC_KEY_BYTES);
    let ephemeral: [u8; 32] = ephemeral.try_into().map_err(|_| CryptoError::Decrypt)?;
    let shared = secret.0.diffie_hellman(&PublicKey::from(ephemeral));
    if !shared.was_contributory() {
        return Err(CryptoError::Decrypt);
    }
    let key = seal_key(shared.as_bytes(), &ephemeral, &secret.public(), psk);
    decrypt(&key, aad, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_round_trip_binds_key_and_aad() {
        let mut rng = rand::thread_rng();
        let key = SymmetricKey::generate(&mut rng);
        let sealed = encrypt(&key, b"here", b"secret", &mut rng);
        assert_eq!(decrypt(&key, b"here", &sealed).expect("opens"), b"secret");
        assert!(decrypt(&key, b"there", &sealed).is_err());
        let other = SymmetricKey::generate(&mut rng);
        assert!(decrypt(&other, b"here", &sealed).is_err());
        let mut flipped = sealed.clone();
        flipped[NONCE_BYTES] ^= 1;
        assert!(decrypt(&key, b"here", &flipped).is_err());
        assert!(decrypt(&key, b"here", &sealed[..10]).is_err());
    }

    #[test]
    fn sealed_items_need_the_secret_and_the_psk() {
        let mut rng = rand::thread_rng();
        let secret = SealSecret::generate(&mut rng);
        let sealed = seal_to(&secret.public(), b"code", b"aad", b"keys", &mut rng).expect("seal");
        assert_eq!(
            open_sealed(&secret, b"code", b"aad", &sealed).expect("opens"),
            b"keys"
        );
        assert!(open_sealed(&secret, b"guess", b"aad", &sealed).is_err());
        assert!(open_sealed(&secret, b"code", b"other", &sealed).is_err());
        let stranger = SealSecret::generate(&mut rng);
        assert!(open_sealed(&stranger, b"code", b"aad", &sealed).is_err());
        // The all-zero point would give a known shared secret: refused.
        assert!(seal_to(&[0; 32], b"", b"", b"x", &mut rng).is_err());
    }
}
