//! Bearer tokens for the HTTP files API.
//!
//! A device asks for a token over its authenticated WebSocket (`FileToken`) and sends it as
//! `Authorization: Bearer <token>` on HTTP requests, which carry no login of their own. The
//! token is stateless: the device id and expiry, authenticated by HMAC-SHA256 under a server
//! secret (`<data_dir>/token.key`, created with mode 0600 on first start, written whole
//! through a temporary file and a rename). Every request still reads the device, so a revoked
//! device's tokens stop working at once.
//!
//! Layout (66 characters of unpadded base64url): version `1` (1 byte), device id (8, big
//! endian), expiry in ms since the Unix epoch (8, big endian), HMAC-SHA256 over a domain label
//! and those 17 bytes (32).

use std::path::Path;

use chapar_store::Store;
use chapar_types::limits::FILE_TOKEN_TTL_SECS;
use chapar_types::{DeviceId, ErrorCode, Username};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::ServiceError;
use crate::service::{Authenticated, Service, now_ms};

/// Bytes of the server's token secret.
pub const TOKEN_KEY_BYTES: usize = 32;

const TOKEN_VERSION: u8 = 1;
/// Bytes of a decoded token: version, device id, expiry, MAC.
const TOKEN_BYTES: usize = 1 + 8 + 8 + 32;
/// Keeps these MACs from ever being valid for anything else the key might sign.
const TOKEN_DOMAIN: &[u8] = b"chapar-file-token\0";

fn random_key() -> [u8; TOKEN_KEY_BYTES] {
    let mut key = [0u8; TOKEN_KEY_BYTES];
    rand::thread_rng().fill_bytes(&mut key);
    key
}

/// The server's token secret. Zeroized on drop and without `Debug`, so it cannot be logged.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct TokenKey([u8; TOKEN_KEY_BYTES]);

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token at all.
    #[error("malformed token")]
    Malformed,
    /// Not made with this server's key, or altered.
    #[error("token signature does not verify")]
    BadSignature,
    /// Past its expiry.
    #[error("token expired")]
    Expired,
}

impl TokenKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        Self(random_key())
    }

    /// Reads the key at `path`, or creates it (mode 0600) if there is none.
    ///
    /// A new key is written whole to a temporary file beside `path`, synced, and renamed into
    /// place (then the directory is synced), so a crash leaves either no key (a new one is
    /// made at the next start) or a whole one, never a short file the server refuses.
    pub fn load_or_create(path: &Path) -> std::io::Result<Self> {
        crate::service::key_file::load_or_create(
            path,
            "file token key",
            "existing file tokens stop working",
            random_key,
        )
        .map(Self)
    }

    fn mac(&self, signed: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(TOKEN_DOMAIN);
        mac.update(signed);
        mac
    }

    /// A token for `device`, valid until `expires_ms`.
    pub fn mint(&self, device: DeviceId, expires_ms: u64) -> String {
        let mut token = Vec::with_capacity(TOKEN_BYTES);
        token.push(TOKEN_VERSION);
        token.extend_from_slice(&device.0.to_be_bytes());
        token.extend_from_slice(&expires_ms.to_be_bytes());
        let tag = self.mac(&token).finalize().into_bytes();
        token.extend_from_slice(&tag);
        data_encoding::BASE64URL_NOPAD.encode(&token)
    }

    /// The device a token was minted for, if it verifies and has not expired at `now_ms`.
    pub fn verify(&self, token: &str, now_ms: u64) -> Result<DeviceId, TokenError> {
        let bytes = data_encoding::BASE64URL_NOPAD
            .decode(token.as_bytes())
            .map_err(|_| TokenError::Malformed)?;
        if bytes.len() != TOKEN_BYTES || bytes[0] != TOKEN_VERSION {
            return Err(TokenError::Malformed);
        }
        let (signed, tag) = bytes.split_at(17);
        // Constant-time comparison.
        self.mac(signed)
            .verify_slice(tag)
            .map_err(|_| TokenError::BadSignature)?;
        let field = |range: std::ops::Range<usize>| {
            signed
                .get(range)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .ok_or(TokenError::Malformed)
        };
        let (device, expires_ms) = (field(1..9)?, field(9..17)?);
        if expires_ms <= now_ms {
            return Err(TokenError::Expired);
        }
        Ok(DeviceId(device))
    }
}

impl<S: Store> Service<S> {
    /// A file token for the caller's device, and when it expires (ms since the Unix epoch).
    pub fn file_token(&self, who: &Authenticated) -> (String, u64) {
        let expires_ms = now_ms().saturating_add(FILE_TOKEN_TTL_SECS * 1000);
        (self.files.tokens.mint(who.device, expires_ms), expires_ms)
    }

    /// The device behind a bearer token, if the token verifies, has not expired, and the
    /// device is still active.
    pub async fn authorize_file_token(&self, token: &str) -> Result<Authenticated, ServiceError> {
        let device = self.files.tokens.verify(token, now_ms()).map_err(|e| {
            let message = match e {
                TokenError::Expired => "the file token expired; ask for a new one",
                TokenError::Malformed | TokenError::BadSignature => "invalid file token",
            };
            ServiceError::new(ErrorCode::Unauthenticated, message)
        })?;
        let unknown = || ServiceError::new(ErrorCode::Unauthenticated, "invalid file token");
        let record = self.store.device(device).await?.ok_or_else(unknown)?;
        if record.revoked_ms.is_some() {
            return Err(ServiceError::new(
                ErrorCode::DeviceRevoked,
                "this device was revoked",
            ));
        }
        let username = Username::parse(&record.username).map_err(|_| unknown())?;
        Ok(Authenticated { device, username })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the report

    use super::*;

    #[test]
    fn tokens_verify_only_unaltered_unexpired_and_under_their_key() {
        let key = TokenKey::generate();
        let token = key.mint(DeviceId(42), 2_000);
        assert_eq!(token.len(), 66);
        assert_eq!(key.verify(&token, 1_999), Ok(DeviceId(42)));
        assert_eq!(key.verify(&token, 2_000), Err(TokenError::Expired));
        assert_eq!(
            TokenKey::generate().verify(&token, 0),
            Err(TokenError::BadSignature)
        );
        let mut bytes = data_encoding::BASE64URL_NOPAD
            .decode(token.as_bytes())
            .unwrap();
        bytes[5] ^= 1; // another device id
        let altered = data_encoding::BASE64URL_NOPAD.encode(&bytes);
        assert_eq!(key.verify(&altered, 0), Err(TokenError::BadSignature));
        assert_eq!(key.verify("not a token", 0), Err(TokenError::Malformed));
        assert_eq!(key.verify("", 0), Err(TokenError::Malformed));
    }

    #[test]
    fn the_key_file_is_private_and_reused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.key");
        let first = TokenKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = TokenKey::load_or_create(&path).unwrap();
        let token = first.mint(DeviceId(1), u64::MAX);
        assert_eq!(again.verify(&token, 0), Ok(DeviceId(1)));
        std::fs::write(&path, b"short").unwrap();
        assert!(TokenKey::load_or_create(&path).is_err());
    }

    #[test]
    fn a_crash_while_creating_the_key_leaves_no_short_key() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.key");
        // What a crash between creating and writing the temporary file leaves behind, with
        // a mode too open: never read as the key, and replaced.
        let temporary = dir.path().join("token.key.tmp");
        std::fs::write(&temporary, b"short").unwrap();
        std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o644)).unwrap();
        let key = TokenKey::load_or_create(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap().len(), TOKEN_KEY_BYTES);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!temporary.exists(), "the temporary file became the key");
        let token = key.mint(DeviceId(3), u64::MAX);
        let again = TokenKey::load_or_create(&path).unwrap();
        assert_eq!(again.verify(&token, 0), Ok(DeviceId(3)));
    }
}
