//! Streaming encryption of files: each file gets a fresh random key, and its content is cut
//! into fixed-size chunks, each encrypted and authenticated on its own with AES-256-GCM.
//!
//! The construction is STREAM (Hoang, Reyhanitabar, Rogaway, Vizár, 2015): chunk `i` is sealed
//! with the nonce `i` (8 bytes, big-endian) || 3 zero bytes || `last` (1 byte: 1 for the final
//! chunk, else 0). Because the nonce carries the chunk's position, a chunk moved to another place
//! does not open; because it carries the "last" flag, a file cut short at a chunk boundary does
//! not open either (its new last chunk was sealed as not last). The key is used for one file
//! only, so nonces never repeat. Every chunk is [`CHUNK_BYTES`] of plaintext except the last,
//! which has 0 to [`CHUNK_BYTES`] bytes (an empty file is one empty last chunk).
//!
//! Chunks have fixed sizes, so any chunk can be read, decrypted or re-encrypted alone: uploads
//! and downloads resume mid-file, and a re-encrypted chunk is byte-for-byte what was sent before
//! (the same key and nonce give the same ciphertext), which is what lets an upload resume at
//! any byte the server acknowledged.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Nonce, Tag};

use crate::CryptoError;
use crate::seal::SymmetricKey;

/// Plaintext bytes per chunk (1 MiB): large enough that the 16-byte tag costs nothing, small
/// enough that a damaged chunk is found and refetched quickly.
pub const CHUNK_BYTES: usize = 1 << 20;
/// Authentication tag per chunk.
pub const TAG_BYTES: usize = 16;
/// Ciphertext bytes of a full chunk.
pub const SEALED_CHUNK_BYTES: usize = CHUNK_BYTES + TAG_BYTES;

/// Associated data of every chunk: what the bytes are.
const CHUNK_AAD: &[u8] = b"chapar file chunk v1";

/// A file's key: a fresh 256-bit key per file (zeroized on drop, no `Debug`).
pub type FileKey = SymmetricKey;

/// The shape of an encrypted file of a given plaintext size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Plaintext bytes.
    pub plain_bytes: u64,
}

impl Layout {
    /// The layout of a file of `plain_bytes`.
    pub fn new(plain_bytes: u64) -> Self {
        Self { plain_bytes }
    }

    /// Chunks in the file (at least one: an empty file is one empty chunk).
    pub fn chunks(&self) -> u64 {
        self.plain_bytes.div_ceil(CHUNK_BYTES as u64).max(1)
    }

    /// Ciphertext bytes of the whole file (saturating: callers check sizes against
    /// `FILE_PLAINTEXT_BYTES_MAX` first, far below where it would matter).
    pub fn sealed_bytes(&self) -> u64 {
        self.plain_bytes
            .saturating_add(self.chunks().saturating_mul(TAG_BYTES as u64))
    }

    /// Plaintext bytes of chunk `index` (0 past the last chunk).
    pub fn plain_len(&self, index: u64) -> usize {
        if index + 1 < self.chunks() {
            CHUNK_BYTES
        } else {
            self.plain_bytes
                .saturating_sub(index.saturating_mul(CHUNK_BYTES as u64)) as usize
        }
    }

    /// Whether chunk `index` is the last.
    pub fn is_last(&self, index: u64) -> bool {
        index + 1 == self.chunks()
    }

    /// Where chunk `index` starts in the ciphertext.
    pub fn sealed_offset(&self, index: u64) -> u64 {
        index * SEALED_CHUNK_BYTES as u64
    }

    /// Where chunk `index` starts in the plaintext.
    pub fn plain_offset(&self, index: u64) -> u64 {
        index * CHUNK_BYTES as u64
    }

    /// The chunk that holds ciphertext byte `offset`.
    pub fn chunk_at_sealed(&self, offset: u64) -> u64 {
        offset / SEALED_CHUNK_BYTES as u64
    }
}

fn nonce(index: u64, last: bool) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[..8].copy_from_slice(&index.to_be_bytes());
    nonce[11] = u8::from(last);
    nonce
}

/// Encrypts chunk `index` of a file in place: `buffer` holds the plaintext and gets the tag
/// appended. `last` says whether this is the file's final chunk.
pub fn seal_chunk(key: &FileKey, index: u64, last: bool, buffer: &mut Vec<u8>) {
    // Encryption fails only past AES-GCM's 64 GiB per-message limit, far above CHUNK_BYTES.
    #[allow(clippy::expect_used)]
    let tag = key
        .cipher()
        .encrypt_in_place_detached(Nonce::from_slice(&nonce(index, last)), CHUNK_AAD, buffer)
        .expect("a chunk is far below AES-GCM's length limit");
    buffer.extend_from_slice(&tag);
}

/// Decrypts chunk `index` in place: `buffer` holds ciphertext and tag, and is left holding the
/// plaintext. Fails (leaving `buffer` unspecified) if the chunk was changed, moved, or is not
/// the `last` chunk it claims to be.
pub fn open_chunk(
    key: &FileKey,
    index: u64,
    last: bool,
    buffer: &mut Vec<u8>,
) -> Result<(), CryptoError> {
    if buffer.len() < TAG_BYTES {
        return Err(CryptoError::Decrypt);
    }
    let tag_at = buffer.len() - TAG_BYTES;
    let tag = Tag::clone_from_slice(&buffer[tag_at..]);
    buffer.truncate(tag_at);
    key.cipher()
        .decrypt_in_place_detached(
            Nonce::from_slice(&nonce(index, last)),
            CHUNK_AAD,
            buffer,
            &tag,
        )
        .map_err(|_| CryptoError::Decrypt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::RngCore as _;

    fn seal_all(key: &FileKey, plain: &[u8]) -> Vec<Vec<u8>> {
        let layout = Layout::new(plain.len() as u64);
        (0..layout.chunks())
            .map(|i| {
                let start = layout.plain_offset(i) as usize;
                let mut buffer = plain[start..start + layout.plain_len(i)].to_vec();
                seal_chunk(key, i, layout.is_last(i), &mut buffer);
                buffer
            })
            .collect()
    }

    #[test]
    fn layouts_add_up() {
        assert_eq!(Layout::new(0).chunks(), 1);
        assert_eq!(Layout::new(0).sealed_bytes(), 16);
        let exact = Layout::new(2 * CHUNK_BYTES as u64);
        assert_eq!(exact.chunks(), 2);
        assert_eq!(exact.plain_len(1), CHUNK_BYTES);
        let odd = Layout::new(2 * CHUNK_BYTES as u64 + 5);
        assert_eq!(odd.chunks(), 3);
        assert_eq!(odd.plain_len(2), 5);
        assert_eq!(odd.sealed_bytes(), 2 * CHUNK_BYTES as u64 + 5 + 48);
        assert_eq!(odd.chunk_at_sealed(SEALED_CHUNK_BYTES as u64), 1);
        assert_eq!(odd.chunk_at_sealed(SEALED_CHUNK_BYTES as u64 - 1), 0);
        let four_gib = Layout::new(4 << 30);
        assert_eq!(four_gib.sealed_bytes(), (4 << 30) + 4096 * 16);
    }

    #[test]
    fn chunks_round_trip_and_resealing_is_deterministic() {
        let mut rng = rand::thread_rng();
        let key = FileKey::generate(&mut rng);
        let mut plain = vec![0u8; CHUNK_BYTES + 1000];
        rng.fill_bytes(&mut plain);
        let sealed = seal_all(&key, &plain);
        assert_eq!(sealed, seal_all(&key, &plain), "same key, same ciphertext");
        let layout = Layout::new(plain.len() as u64);
        let mut back = Vec::new();
        for (i, chunk) in sealed.iter().enumerate() {
            let mut buffer = chunk.clone();
            open_chunk(&key, i as u64, layout.is_last(i as u64), &mut buffer).expect("opens");
            back.extend_from_slice(&buffer);
        }
        assert_eq!(back, plain);
    }

    #[test]
    fn tampering_reordering_and_truncation_are_detected() {
        let mut rng = rand::thread_rng();
        let key = FileKey::generate(&mut rng);
        let plain = vec![7u8; 2 * CHUNK_BYTES + 10];
        let sealed = seal_all(&key, &plain);
        // A flipped byte.
        let mut flipped = sealed[1].clone();
        flipped[100] ^= 1;
        assert!(open_chunk(&key, 1, false, &mut flipped).is_err());
        // A chunk in another place.
        let mut moved = sealed[0].clone();
        assert!(open_chunk(&key, 1, false, &mut moved).is_err());
        // The file cut after its second chunk: that chunk was not sealed as the last.
        let mut cut = sealed[1].clone();
        assert!(open_chunk(&key, 1, true, &mut cut).is_err());
        // Another file's key.
        let other = FileKey::generate(&mut rng);
        let mut foreign = sealed[0].clone();
        assert!(open_chunk(&other, 0, false, &mut foreign).is_err());
        let mut short = vec![1u8; 3];
        assert!(open_chunk(&key, 0, true, &mut short).is_err());
    }
}
