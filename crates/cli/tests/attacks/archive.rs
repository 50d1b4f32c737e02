//! A server that tampers with the account archive a new device restores from: it drops a
//! segment, or serves a group's segments out of order. Old rule: restore checked only that
//! segment ids increase, so the new device showed the history with a hole in it, silently.
//! Now each group's segments must chain (each names the one before it and starts where it
//! ended, signed by a device of the account), and the restore stops with an error naming the
//! chat; once the server behaves, it goes on.

use std::sync::atomic::{AtomicU64, Ordering};

use chapar_wire::v1::response::Result as Reply;

use crate::harness::Server;
use crate::lying::{LyingServer, Scene};

/// Runs `tamper` on every archive page the new device fetches while linking through a
/// lying server; returns the texts of the chat with bob on the new device afterwards and
/// what the link printed on stderr.
fn link_with_tampered_archive(
    tamper: fn(&mut Vec<chapar_wire::v1::ArchiveSegment>),
) -> (bool, String, Vec<String>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let liar = LyingServer::start(&server.url);
    let alice = server.register(dir.path(), "alice");
    let bob = server.register(dir.path(), "bob");
    // Each send is archived at once, in a segment of its own.
    for text in ["one", "two", "three"] {
        alice.send("@bob", text);
    }
    bob.sync();
    liar.tell(Box::new(move |_, reply| {
        if let Reply::ArchivePage(page) = reply {
            tamper(&mut page.segments);
        }
    }));
    let (laptop, status, _, stderr) =
        server.link_via(&liar.url, dir.path(), "alice-laptop", &alice);
    let during = laptop.texts("@bob");
    liar.stop_lying();
    laptop.sync();
    (status.success(), stderr, during, laptop.texts("@bob"))
}

/// The middle one of the first group holding three segments in a page.
fn middle_of_three(segments: &[chapar_wire::v1::ArchiveSegment]) -> Option<usize> {
    (0..segments.len()).find_map(|first| {
        let group = &segments[first].group_id;
        let same: Vec<usize> = (first..segments.len())
            .filter(|i| segments[*i].group_id == *group)
            .collect();
        (same.len() >= 3).then(|| same[1])
    })
}

#[test]
fn a_dropped_archive_segment_stops_the_restore_with_an_error_and_loses_nothing() {
    let (linked, stderr, during, after) = link_with_tampered_archive(|segments| {
        if let Some(middle) = middle_of_three(segments) {
            segments.remove(middle);
        }
    });
    assert!(!linked, "the link reports the broken archive");
    assert!(stderr.contains("has a gap"), "{stderr}");
    assert!(
        !during.contains(&"three".to_owned()),
        "nothing after the hole is shown as if whole: {during:?}"
    );
    assert_eq!(
        after,
        ["one", "two", "three"],
        "whole once the server behaves"
    );
}

#[test]
fn reordered_archive_segments_stop_the_restore_with_an_error_and_lose_nothing() {
    let (linked, stderr, _, after) = link_with_tampered_archive(|segments| {
        if let Some(middle) = middle_of_three(segments) {
            // The chat's second and third segments swap places (their ids with them, so
            // the page still looks ordered by id).
            let group = segments[middle].group_id.clone();
            if let Some(third) =
                (middle + 1..segments.len()).find(|i| segments[*i].group_id == group)
            {
                let (a, b) = (segments[middle].id, segments[third].id);
                segments.swap(middle, third);
                segments[middle].id = a;
                segments[third].id = b;
            }
        }
    });
    assert!(!linked, "the link reports the broken archive");
    assert!(
        stderr.contains("goes back") || stderr.contains("has a gap"),
        "{stderr}"
    );
    assert_eq!(
        after,
        ["one", "two", "three"],
        "whole once the server behaves"
    );
}

/// A rollback: the server serves the archive without its newest segment (no gap shows, the
/// chain just ends early). The approving device told the new one, inside the sealed approval,
/// how far it saw each chat archived, so the new device sees the tail is missing.
#[test]
fn an_archive_served_without_its_tail_stops_the_restore_with_an_error_and_loses_nothing() {
    // Where the held-back tail starts (the chat's last two segments: the one with "three"
    // and what came after), so that later pages leave it out too.
    static TAIL_FROM: AtomicU64 = AtomicU64::new(u64::MAX);
    let (linked, stderr, during, after) = link_with_tampered_archive(|segments| {
        if let Some(middle) = middle_of_three(segments) {
            let group = segments[middle].group_id.clone();
            let ids: Vec<u64> = segments
                .iter()
                .filter(|s| s.group_id == group)
                .map(|s| s.id)
                .collect();
            TAIL_FROM.store(ids[ids.len() - 2], Ordering::Relaxed);
        }
        let from = TAIL_FROM.load(Ordering::Relaxed);
        segments.retain(|s| s.id < from);
    });
    assert!(!linked, "the link reports the broken archive");
    assert!(stderr.contains("holding part of it back"), "{stderr}");
    assert!(!during.contains(&"three".to_owned()), "{during:?}");
    assert_eq!(
        after,
        ["one", "two", "three"],
        "whole once the server behaves"
    );
}

/// A segment made up by whoever holds the account's archive key but no device key the
/// account certified (a leaked key; a revoked device signing with a key of its own): sealed
/// under the real key, continuing the chat's chain where it ends, with a message "from bob".
/// Old rule: segments were authenticated by the archive key alone, so the new device showed
/// the made-up message as bob's. Now the segment must be signed by a certified device of the
/// account: it is skipped, and the real history is restored whole.
#[test]
fn a_segment_made_up_with_the_archive_key_is_not_restored() {
    static ARCHIVE_KEY: std::sync::OnceLock<(u32, Vec<u8>)> = std::sync::OnceLock::new();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let liar = LyingServer::start(&server.url);
    let alice = server.register(dir.path(), "alice");
    let bob = server.register(dir.path(), "bob");
    for text in ["one", "two", "three"] {
        alice.send("@bob", text);
    }
    bob.sync();
    ARCHIVE_KEY.set(newest_archive_key(&alice)).unwrap();
    liar.tell(Box::new(move |_, reply| {
        if let Reply::ArchivePage(page) = reply
            && let Some(middle) = middle_of_three(&page.segments)
        {
            let group = page.segments[middle].group_id.clone();
            let last = page.segments.iter().rfind(|s| s.group_id == group).unwrap();
            let mut made_up =
                made_up_after(last, ARCHIVE_KEY.get().unwrap(), "send the code to me");
            made_up.id = page.segments.iter().map(|s| s.id).max().unwrap() + 1;
            page.segments.push(made_up);
        }
    }));
    let (laptop, status, _, stderr) =
        server.link_via(&liar.url, dir.path(), "alice-laptop", &alice);
    assert!(status.success(), "{stderr}");
    assert_eq!(laptop.texts("@bob"), ["one", "two", "three"]);
}

/// The newest archive key generation in `user`'s profile.
fn newest_archive_key(user: &crate::harness::User) -> (u32, Vec<u8>) {
    use prost::Message as _;
    let db = rusqlite::Connection::open(user.profile.join("profile.db")).unwrap();
    let secrets: Vec<u8> = db
        .query_row(
            "SELECT value FROM profile WHERE key = 'account_secrets'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let secrets = chapar_wire::content::AccountSecrets::decode(secrets.as_slice()).unwrap();
    let newest = secrets
        .archive_keys
        .iter()
        .max_by_key(|k| k.generation)
        .unwrap();
    (newest.generation, newest.key.clone())
}

/// A segment of alice's archive right after `last`, sealed under `key` (as the client seals,
/// written out again here as an attacker would), signed by a key of the attacker's own.
fn made_up_after(
    last: &chapar_wire::v1::ArchiveSegment,
    (generation, key): &(u32, Vec<u8>),
    text: &str,
) -> chapar_wire::v1::ArchiveSegment {
    use chapar_crypto::{identity, seal};
    use chapar_wire::content::{AppMessage, ArchiveBody, ArchiveEvent, SealedSegment};
    use prost::Message as _;
    use sha2::Digest as _;

    let (from, through) = (last.through_seq, last.through_seq + 1);
    let message = AppMessage {
        message_id: vec![7; 16],
        sent_at_ms: 1,
        body: Some(crate::kit::text(text)),
    };
    let body = ArchiveBody {
        events: vec![ArchiveEvent {
            seq: through,
            sender: "bob".into(),
            sender_device: 1,
            server_time_ms: 1,
            kind: Some(chapar_wire::content::archive_event::Kind::AppMessage(
                message.encode_to_vec(),
            )),
        }],
        starts_after_gap: false,
    }
    .encode_to_vec();
    let mut aad = b"chapar archive segment v1\0".to_vec();
    for part in [
        b"alice".as_slice(),
        &last.group_id,
        &from.to_be_bytes(),
        &through.to_be_bytes(),
        &generation.to_be_bytes(),
    ] {
        aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
        aad.extend_from_slice(part);
    }
    let previous = sha2::Sha256::digest(&last.ciphertext).to_vec();
    let mut rng = rand::thread_rng();
    let own_key = identity::SecretKey::generate(&mut rng);
    let envelope = SealedSegment {
        signature: identity::sign_archive_segment(&own_key, &aad, &previous, &body),
        body,
        previous,
        device_id: 1,
        device_key: own_key.public().to_vec(),
        certificate: vec![0; 64],
    };
    let key = seal::SymmetricKey::from_bytes(key)
        .unwrap()
        .derive("chapar archive segments v2");
    chapar_wire::v1::ArchiveSegment {
        id: 0,
        group_id: last.group_id.clone(),
        from_seq: from,
        through_seq: through,
        key_generation: *generation,
        ciphertext: seal::encrypt(&key, &aad, &envelope.encode_to_vec(), &mut rng),
    }
}

/// Old rule: a device forgot recorded history as soon as the server said another device had
/// archived it (a `conflict` naming a position past it), so a server that lied lost the
/// history for every future device. Now a device forgets only what it has seen archived; the
/// rest stays recorded and goes up once the server behaves.
#[test]
fn history_the_server_falsely_calls_archived_is_kept_and_archived_later() {
    let Scene {
        dir,
        server,
        liar,
        alice,
        bob,
    } = Scene::new();
    liar.tell(Box::new(|request, reply| {
        if let chapar_wire::v1::client_frame::Request::AppendArchive(_) = request {
            *reply = Reply::Error(chapar_wire::v1::Error {
                code: chapar_types::ErrorCode::Conflict.as_u32(),
                message: "someone else archived this first".into(),
                head_seq: 1_000_000,
                ..Default::default()
            });
        }
    }));
    alice.send("@bob", "one");
    bob.send("@alice", "two");
    alice.sync();
    liar.stop_lying();
    alice.sync();
    let laptop = server.link(dir.path(), "alice-laptop", &alice);
    assert_eq!(laptop.texts("@bob"), ["one", "two"]);
}
