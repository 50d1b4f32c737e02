//! Chapar's end-to-end cryptography, with no I/O.
//!
//! - [`identity`]: the account identity key that certifies device keys, the device key that
//!   answers the server's login challenge, and the byte strings each of them signs.
//! - [`account`]: the recovery key, the link code and device fingerprints: secrets and numbers
//!   people handle by hand, and what is derived from them.
//! - [`file`]: streaming encryption of files in fixed-size, individually authenticated chunks
//!   (STREAM over AES-256-GCM), so transfers resume mid-file and damage is found chunk by chunk.
//! - [`seal`]: AEAD for account-level secrets (the history archive, device names) and sealing to
//!   an X25519 public key (recovery bundles, link approvals).
//! - [`safety_number`]: the number two people compare out of band to detect a swapped key.
//! - [`mls`]: every chat is an MLS group (RFC 9420, `openmls`) whose members are devices. This
//!   module wraps the handful of group operations Chapar uses, generic over the openmls provider
//!   so that the caller chooses where MLS state lives (a SQLite file natively, memory in tests).
//!
//! Randomness comes from the provider or an `rng` argument; nothing here reads a clock.

pub mod account;
pub mod file;
pub mod identity;
pub mod mls;
pub mod safety_number;
pub mod seal;

use chapar_types::Username;

/// Why a cryptographic operation failed. Messages are safe to show to a user.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// A key or signature has the wrong length or encoding.
    #[error("malformed key or signature")]
    MalformedKey,
    /// A signature did not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// An MLS message, key package or welcome could not be parsed.
    #[error("malformed MLS message: {0}")]
    MalformedMls(String),
    /// A key package does not belong to the device its certificate names.
    #[error("key package does not match the device certificate")]
    KeyPackageMismatch,
    /// openmls refused an operation (wrong epoch, not a member, decryption failure, ...).
    #[error("MLS: {0}")]
    Mls(String),
    /// Sealed bytes did not open: wrong key, wrong context, or tampered with.
    #[error("cannot decrypt: wrong key or damaged data")]
    Decrypt,
    /// A leaf in a welcome or commit is not what it claims: its certificate does not verify
    /// under the pinned account key, its credential is malformed, or it changes identity.
    #[error("not authenticated: {0}")]
    Unauthenticated(String),
    /// Leaves name accounts whose keys the caller has not pinned yet: fetch them, then try
    /// again.
    #[error("account keys not known yet: {0:?}")]
    UnknownAccounts(Vec<Username>),
    /// The MLS state store failed.
    #[error("MLS state storage: {0}")]
    Storage(String),
}
