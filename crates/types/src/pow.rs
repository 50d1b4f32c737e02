//! Registration's proof of work: a nonce whose hash, over the connection's challenge and the
//! username asked for, starts with a given number of zero bits. It makes registering cost
//! about a second on a phone (at the default 20 bits) without a phone number, and cannot be
//! done ahead: the challenge is fresh for every connection. Pure computation, so it runs the
//! same in the browser.

use sha2::{Digest, Sha256};

const DOMAIN: &[u8] = b"chapar registration pow v1\0";

/// The most work a server may ask (leading zero bits) and a client will do: 2^24 hashes is
/// seconds on a desktop and under a minute on a phone, so a hostile server cannot make its
/// clients spin for hours (2^32 would).
pub const BITS_MAX: u8 = 24;

fn hash(challenge: &[u8], username: &str, nonce: u64) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(DOMAIN);
    hasher.update((challenge.len() as u64).to_be_bytes());
    hasher.update(challenge);
    hasher.update((username.len() as u64).to_be_bytes());
    hasher.update(username.as_bytes());
    hasher.update(nonce.to_be_bytes());
    hasher.finalize().into()
}

fn leading_zero_bits(hash: &[u8; 32]) -> u32 {
    let mut bits = 0;
    for byte in hash {
        if *byte == 0 {
            bits += 8;
        } else {
            return bits + byte.leading_zeros();
        }
    }
    bits
}

/// Whether `nonce` proves `bits` bits of work for registering `username` on the connection
/// whose challenge is `challenge`.
pub fn verify(challenge: &[u8], username: &str, bits: u8, nonce: u64) -> bool {
    leading_zero_bits(&hash(challenge, username, nonce)) >= u32::from(bits)
}

/// The first nonce that proves `bits` bits of work (about 2^bits hashes).
pub fn solve(challenge: &[u8], username: &str, bits: u8) -> u64 {
    (0..u64::MAX)
        .find(|nonce| verify(challenge, username, bits, *nonce))
        .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_solution_verifies_for_its_challenge_and_name_only() {
        let challenge = [7u8; 32];
        let nonce = solve(&challenge, "alice", 12);
        assert!(verify(&challenge, "alice", 12, nonce));
        assert!(verify(&challenge, "alice", 0, 12345), "no work asked");
        // The same nonce for another name, or on another connection, is (all but surely) no
        // proof: each has a 1 in 4096 chance.
        let other_names = (0..20)
            .filter(|n| verify(&challenge, &format!("user{n}"), 12, nonce))
            .count();
        let other_challenges = (0..20u8)
            .filter(|n| verify(&[*n; 32], "alice", 12, nonce))
            .count();
        assert!(other_names + other_challenges < 3);
    }
}
