//! The sealed form of an archive segment: how a device seals one group's stretch of history,
//! and how a device of the account opens one and checks who wrote it.
//!
//! A segment's ciphertext is encrypted under the account's archive key, so only the account's
//! devices read it, with the account, group, stretch and key generation in its associated
//! data, so the server cannot move it. Inside, a [`SealedSegment`] carries the body, the
//! [`link`] to the group's previous segment (the SHA-256 of its ciphertext) and the signature
//! of the device that wrote it with the account's certificate of that device's key. Holding
//! an archive key is therefore not enough to write history: a revoked device keeps the keys
//! it had, but what it writes after the account moved on does not chain (see the readers,
//! `restore` and `archive::follow_archive`).
//!
//! The link travels inside the sealed envelope rather than only in the associated data, so a
//! reader that opens a segment can say *which* check failed (a fork, a step back) instead of
//! seeing a segment that does not decrypt.

use chapar_crypto::{identity, seal};
use chapar_types::{DeviceId, GroupId, Seq, Username};
use chapar_wire::content::{ArchiveBody, SealedSegment};
use chapar_wire::v1;
use prost::Message as _;
use sha2::{Digest as _, Sha256};

use crate::account_keys::{AccountKeys, segment_aad};
use crate::env::Env;
use crate::identity::Identity;

/// Key label of the archive segments' key, derived from the account's archive key.
const SEGMENT_KEY_LABEL: &str = "chapar archive segments v2";
/// At most what sealing adds to a body's encoded length: the AEAD's nonce and tag, and the
/// envelope (a 32-byte link, the device id, its 32-byte key, two 64-byte signatures, and the
/// fields' tags and lengths, well under the slack counted here).
pub(super) const SEGMENT_OVERHEAD_BYTES: usize = seal::NONCE_BYTES + seal::TAG_BYTES + 256;

/// A segment opened and checked: it decrypts under the account's key of its generation, and
/// a device certified by the account's key signed it.
#[cfg_attr(test, derive(Clone))]
pub(super) struct Opened {
    pub group: GroupId,
    pub body: ArchiveBody,
    /// The link to the group's previous segment (empty: the group's first).
    pub previous: Vec<u8>,
    /// This segment's own link, for the one after it.
    pub link: Vec<u8>,
    pub generation: u32,
}

/// Why a segment was not opened.
pub(super) enum Unopened {
    /// Sealed under a generation newer than any this device holds: it learns the key from its
    /// self group later.
    NewerKey,
    /// Damaged, made up, or not written by a device of the account: skipped.
    Refused(String),
}

/// The link of a segment: the SHA-256 of its ciphertext.
pub(super) fn link(ciphertext: &[u8]) -> Vec<u8> {
    Sha256::digest(ciphertext).to_vec()
}

/// The stretch of a group's log a segment covers, and the link to the segment before it.
pub(super) struct Stretch<'a> {
    pub group: GroupId,
    pub from: Seq,
    pub through: Seq,
    pub previous: &'a [u8],
}

/// Seals `body` as this device's segment of `stretch`, under the newest archive key.
pub(super) fn seal(
    env: &Env,
    me: &Identity,
    keys: &AccountKeys,
    stretch: &Stretch<'_>,
    body: &ArchiveBody,
) -> Vec<u8> {
    let (generation, key) = keys.latest();
    let aad = segment_aad(
        &me.username,
        stretch.group,
        stretch.from,
        stretch.through,
        generation,
    );
    let body = body.encode_to_vec();
    let certificate = me.certificate();
    let envelope = SealedSegment {
        signature: identity::sign_archive_segment(&me.device_key, &aad, stretch.previous, &body),
        body,
        previous: stretch.previous.to_vec(),
        device_id: certificate.device_id,
        device_key: certificate.device_key,
        certificate: certificate.account_signature,
    };
    env.with_rng(|rng| {
        seal::encrypt(
            &key.derive(SEGMENT_KEY_LABEL),
            &aad,
            &envelope.encode_to_vec(),
            rng,
        )
    })
}

/// Opens a segment of this device's account archive and checks its writer; what it refuses
/// is logged.
pub(super) fn open(
    me: &Identity,
    keys: &AccountKeys,
    segment: &v1::ArchiveSegment,
) -> Result<Opened, Unopened> {
    let opened = check(&me.username, &me.account_key.public(), keys, segment);
    if let Err(Unopened::Refused(why)) = &opened {
        tracing::warn!(
            segment = segment.id,
            why,
            "an archive segment was refused; skipped"
        );
    }
    opened
}

fn check(
    username: &Username,
    account_key: &[u8],
    keys: &AccountKeys,
    segment: &v1::ArchiveSegment,
) -> Result<Opened, Unopened> {
    let refused = |why: &str| Unopened::Refused(why.to_owned());
    let group = GroupId::from_slice(&segment.group_id).map_err(|_| refused("bad group id"))?;
    let generation = segment.key_generation;
    let Some(key) = keys.archive_key(generation) else {
        // Only a generation one rotation ahead is waited for: a made-up one far ahead must not
        // stop a device reading the archive for good.
        return Err(
            if generation > keys.latest().0 && keys.is_sane_generation(generation) {
                Unopened::NewerKey
            } else {
                refused("no key for its generation")
            },
        );
    };
    let aad = segment_aad(
        username,
        group,
        segment.from_seq,
        segment.through_seq,
        generation,
    );
    let plaintext = seal::decrypt(&key.derive(SEGMENT_KEY_LABEL), &aad, &segment.ciphertext)
        .map_err(|_| refused("it does not decrypt"))?;
    let envelope =
        SealedSegment::decode(plaintext.as_slice()).map_err(|_| refused("it does not decode"))?;
    let device = DeviceId(envelope.device_id);
    identity::verify_device_cert(
        account_key,
        username,
        device,
        &envelope.device_key,
        &envelope.certificate,
    )
    .map_err(|_| refused("its writer is not a device the account certified"))?;
    identity::verify_archive_segment(
        &envelope.device_key,
        &aad,
        &envelope.previous,
        &envelope.body,
        &envelope.signature,
    )
    .map_err(|_| refused("its signature does not verify"))?;
    let body = ArchiveBody::decode(envelope.body.as_slice())
        .map_err(|_| refused("its body does not decode"))?;
    Ok(Opened {
        group,
        body,
        previous: envelope.previous,
        link: link(&segment.ciphertext),
        generation,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the report

    use chapar_crypto::identity::SecretKey;
    use chapar_wire::content::ArchiveEvent;

    use super::*;
    use crate::env::ManualClock;

    struct Fixture {
        env: Env,
        me: Identity,
        keys: AccountKeys,
        group: GroupId,
    }

    fn fixture() -> Fixture {
        let env = Env::new(ManualClock::new(1), [9; 32]);
        let me = Identity {
            server: "http://localhost".into(),
            username: Username::parse("alice").unwrap(),
            device: DeviceId(7),
            account_key: env.with_rng(SecretKey::generate),
            device_key: env.with_rng(SecretKey::generate),
        };
        let keys = AccountKeys::generate(&env, vec![1; 32]);
        let group = GroupId::from_slice(&[3; 16]).unwrap();
        Fixture {
            env,
            me,
            keys,
            group,
        }
    }

    fn body(text: &str) -> ArchiveBody {
        ArchiveBody {
            events: vec![ArchiveEvent {
                seq: 2,
                sender: "bob".into(),
                sender_device: 1,
                server_time_ms: 5,
                kind: Some(chapar_wire::content::archive_event::Kind::AppMessage(
                    text.into(),
                )),
            }],
            starts_after_gap: false,
        }
    }

    fn segment(f: &Fixture, ciphertext: Vec<u8>) -> v1::ArchiveSegment {
        v1::ArchiveSegment {
            id: 1,
            group_id: f.group.as_bytes().to_vec(),
            from_seq: 1,
            through_seq: 2,
            key_generation: f.keys.latest().0,
            ciphertext,
        }
    }

    fn sealed_by(f: &Fixture, writer: &Identity, previous: &[u8]) -> v1::ArchiveSegment {
        let stretch = Stretch {
            group: f.group,
            from: 1,
            through: 2,
            previous,
        };
        segment(f, seal(&f.env, writer, &f.keys, &stretch, &body("hi")))
    }

    /// Seals an envelope as given, under the account's archive key (what anyone holding the
    /// key, such as a revoked device, can do).
    fn sealed_envelope(f: &Fixture, envelope: &SealedSegment) -> v1::ArchiveSegment {
        let (generation, key) = f.keys.latest();
        let aad = segment_aad(&f.me.username, f.group, 1, 2, generation);
        let ciphertext = f.env.with_rng(|rng| {
            seal::encrypt(
                &key.derive(SEGMENT_KEY_LABEL),
                &aad,
                &envelope.encode_to_vec(),
                rng,
            )
        });
        segment(f, ciphertext)
    }

    fn refusal(result: Result<Opened, Unopened>) -> String {
        match result {
            Ok(_) => panic!("opened"),
            Err(Unopened::NewerKey) => "newer key".into(),
            Err(Unopened::Refused(why)) => why,
        }
    }

    #[test]
    fn a_sealed_segment_opens_with_its_body_and_links() {
        let f = fixture();
        let sealed = sealed_by(&f, &f.me, b"previous link");
        let opened = open(&f.me, &f.keys, &sealed).ok().unwrap();
        assert_eq!(opened.group, f.group);
        assert_eq!(opened.body, body("hi"));
        assert_eq!(opened.previous, b"previous link");
        assert_eq!(opened.link, link(&sealed.ciphertext));
        assert_eq!(opened.generation, f.keys.latest().0);
    }

    #[test]
    fn a_segment_moved_to_another_stretch_or_group_does_not_open() {
        let f = fixture();
        let mut moved = sealed_by(&f, &f.me, b"");
        moved.through_seq = 3;
        assert_eq!(refusal(open(&f.me, &f.keys, &moved)), "it does not decrypt");
        let mut moved = sealed_by(&f, &f.me, b"");
        moved.group_id = vec![4; 16];
        assert_eq!(refusal(open(&f.me, &f.keys, &moved)), "it does not decrypt");
    }

    #[test]
    fn a_segment_under_an_unknown_newer_key_waits() {
        let f = fixture();
        let mut newer = sealed_by(&f, &f.me, b"");
        newer.key_generation += 1;
        assert_eq!(refusal(open(&f.me, &f.keys, &newer)), "newer key");
    }

    #[test]
    fn a_segment_written_by_a_key_the_account_never_certified_is_refused() {
        let f = fixture();
        // A revoked device kept the archive key, but signs with a key of its own making and
        // presents a certificate of the real device.
        let impostor = Identity {
            device_key: f.env.with_rng(SecretKey::generate),
            ..fixture_identity(&f)
        };
        let forged = sealed_by(&f, &impostor, b"");
        let mut envelope = envelope_of(&f, &forged);
        let real = f.me.certificate();
        envelope.certificate = real.account_signature;
        assert_eq!(
            refusal(open(&f.me, &f.keys, &sealed_envelope(&f, &envelope))),
            "its writer is not a device the account certified"
        );
        // Or it presents the real device's key and certificate, but cannot sign for it.
        envelope.device_key = real.device_key;
        assert_eq!(
            refusal(open(&f.me, &f.keys, &sealed_envelope(&f, &envelope))),
            "its signature does not verify"
        );
        // Another account's certified device is not this account's.
        let stranger = Identity {
            account_key: f.env.with_rng(SecretKey::generate),
            ..fixture_identity(&f)
        };
        assert_eq!(
            refusal(open(&f.me, &f.keys, &sealed_by(&f, &stranger, b""))),
            "its writer is not a device the account certified"
        );
    }

    #[test]
    fn the_link_and_body_cannot_be_changed_under_the_signature() {
        let f = fixture();
        let sealed = sealed_by(&f, &f.me, b"one link");
        let mut envelope = envelope_of(&f, &sealed);
        envelope.previous = b"another link".to_vec();
        assert_eq!(
            refusal(open(&f.me, &f.keys, &sealed_envelope(&f, &envelope))),
            "its signature does not verify"
        );
        let mut envelope = envelope_of(&f, &sealed);
        envelope.body = body("bye").encode_to_vec();
        assert_eq!(
            refusal(open(&f.me, &f.keys, &sealed_envelope(&f, &envelope))),
            "its signature does not verify"
        );
    }

    #[test]
    fn sealing_adds_no_more_than_the_overhead_counted() {
        let f = fixture();
        let mut full = body("");
        let room = chapar_types::limits::ARCHIVE_SEGMENT_BYTES_MAX - SEGMENT_OVERHEAD_BYTES;
        full.events[0].kind = Some(chapar_wire::content::archive_event::Kind::AppMessage(
            vec![0; room - 30],
        ));
        // The length prefixes grew by a few bytes: the body is just under its room.
        assert!((room - 30..=room).contains(&full.encoded_len()));
        let stretch = Stretch {
            group: f.group,
            from: u64::MAX - 1,
            through: u64::MAX,
            previous: &[0xff; 32],
        };
        let sealed = seal(&f.env, &f.me, &f.keys, &stretch, &full);
        assert!(sealed.len() <= chapar_types::limits::ARCHIVE_SEGMENT_BYTES_MAX);
    }

    /// A copy of the fixture's identity (keys copied by value).
    fn fixture_identity(f: &Fixture) -> Identity {
        Identity {
            server: f.me.server.clone(),
            username: f.me.username.clone(),
            device: f.me.device,
            account_key: SecretKey::from_bytes(&f.me.account_key.to_bytes()).unwrap(),
            device_key: SecretKey::from_bytes(&f.me.device_key.to_bytes()).unwrap(),
        }
    }

    fn envelope_of(f: &Fixture, sealed: &v1::ArchiveSegment) -> SealedSegment {
        let (_, key) = f.keys.latest();
        let aad = segment_aad(&f.me.username, f.group, 1, 2, sealed.key_generation);
        let plaintext =
            seal::decrypt(&key.derive(SEGMENT_KEY_LABEL), &aad, &sealed.ciphertext).unwrap();
        SealedSegment::decode(plaintext.as_slice()).unwrap()
    }
}
