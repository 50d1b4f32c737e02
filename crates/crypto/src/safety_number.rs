//! Safety numbers: 60 digits two people read to each other to confirm that each holds the
//! other's real account key. Both sides compute the same number: the two (username, key) pairs
//! are sorted before hashing.

use chapar_types::Username;
use sha2::{Digest, Sha512};

/// Hash iterations, as in Signal's numeric fingerprints: costly to grind for a near-collision,
/// cheap to compute once.
const ITERATIONS: usize = 5200;

/// The safety number of a conversation between two accounts, as 12 groups of 5 digits.
pub fn safety_number(a: (&Username, &[u8]), b: (&Username, &[u8])) -> String {
    let mut halves = [half(a.0, a.1), half(b.0, b.1)];
    halves.sort();
    halves.join(" ")
}

/// Thirty digits derived from one account's name and key.
fn half(username: &Username, key: &[u8]) -> String {
    let mut digest = Sha512::new()
        .chain_update(b"chapar safety number v1\0")
        .chain_update(key)
        .chain_update(username.as_str().as_bytes())
        .finalize();
    for _ in 1..ITERATIONS {
        digest = Sha512::new()
            .chain_update(digest)
            .chain_update(key)
            .finalize();
    }
    digest[..30]
        .chunks(5)
        .map(|chunk| {
            let n = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            format!("{:05}", n % 100_000)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_see_the_same_number_and_keys_change_it() {
        let alice = Username::parse("alice").expect("valid");
        let bob = Username::parse("bob").expect("valid");
        let n1 = safety_number((&alice, &[1; 32]), (&bob, &[2; 32]));
        let n2 = safety_number((&bob, &[2; 32]), (&alice, &[1; 32]));
        assert_eq!(n1, n2);
        assert_eq!(n1.split(' ').count(), 12);
        assert_ne!(n1, safety_number((&alice, &[1; 32]), (&bob, &[3; 32])));
    }
}
