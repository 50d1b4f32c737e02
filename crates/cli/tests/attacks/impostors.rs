//! Leaves that are not who they claim: in a welcome's tree, and posing as the victim's own
//! devices.

use chapar_crypto::identity::SecretKey;
use chapar_wire::content::{self, AccountSync, ArchiveKey, account_sync, app_message::Body};
use prost::Message as _;

use crate::harness::{Server, User};
use crate::kit::{Attacker, text};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The victim's chats as `chats` lists them: (label, kind) of each.
fn chats(user: &User) -> Vec<(String, String)> {
    user.ok(&["chats"])
        .lines()
        .filter_map(|l| {
            let mut cols = l.split('\t');
            Some((cols.next()?.to_owned(), cols.next()?.to_owned()))
        })
        .collect()
}

/// Old rule: Mallory's client, changed in one line to label its leaf `bob`, made a group with
/// Alice and posted; Alice's `sync` joined silently and showed the post from "@bob". Now the
/// leaf's certificate (Mallory's account signed it) does not verify under the key Alice pinned
/// for bob, and the welcome is refused.
#[test]
fn an_impostor_leaf_in_a_welcome_is_refused_and_its_posts_never_show() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let alice = server.register(dir.path(), "alice");
    let bob = server.register(dir.path(), "bob");
    alice.send("@bob", "hello bob");
    bob.sync();
    let rt = runtime();
    rt.block_on(async {
        let mallory = Attacker::register(&server.url, "mallory", Some(("bob", 7)), None).await;
        let victims = mallory.claim("alice").await;
        let (group, mut state) = mallory.group_with(victims).await;
        mallory
            .send(group, &mut state, text("it is me, bob: send me the code"))
            .await;
    });
    let out = alice.run(&["sync"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("refused to join chat") && stderr.contains("@bob"),
        "{stderr}"
    );
    let listed = chats(&alice);
    assert_eq!(listed.len(), 1, "only the real chat with bob: {listed:?}");
    let texts = alice.texts("@bob");
    assert!(
        !texts.iter().any(|t| t.contains("send me the code")),
        "{texts:?}"
    );
    // Nothing lost: the real chat goes on.
    bob.send("@alice", "still me");
    alice.sync();
    assert!(alice.texts("@bob").contains(&"still me".to_owned()));
}

/// Old rule: any member could add a leaf labelled `bob:<x>` to a group and post, edit or
/// delete as @bob (authorship compared usernames). Mallory, a real member of Alice's group,
/// adds a device of a second account of hers whose leaf claims to be Bob's, then posts as it.
/// Now Alice's device refuses the commit (the certificate is not Bob's account's), tells her,
/// and the post never shows; the group ends for her, its history kept.
#[test]
fn an_impostor_added_by_a_members_commit_is_refused_and_its_posts_never_show() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let alice = server.register(dir.path(), "alice");
    let bob = server.register(dir.path(), "bob");
    alice.send("@bob", "hello bob");
    bob.sync();
    let rt = runtime();
    let mallory = rt.block_on(Attacker::register(&server.url, "mallory", None, None));
    let club = alice
        .ok(&["group", "create", "club", "--member", "@mallory"])
        .trim()
        .to_owned();
    alice.send(&club, "welcome, mallory");
    rt.block_on(async {
        let puppet_id = rand::random::<u64>();
        let puppet =
            Attacker::register(&server.url, "mallory_two", Some(("bob", puppet_id)), None).await;
        let (group, mut state) = mallory.join_first_welcome().await;
        let fake_bob = mallory.claim("mallory_two").await;
        mallory.add(group, &mut state, fake_bob).await;
        mallory
            .send(group, &mut state, text("bob here: please share the code"))
            .await;
        drop(puppet);
    });
    let out = alice.run(&["sync"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("not who it claims") && stderr.contains("@bob"),
        "{stderr}"
    );
    let texts = alice.texts(&club);
    assert!(
        !texts.iter().any(|t| t.contains("share the code")),
        "{texts:?}"
    );
    assert!(
        texts.contains(&"welcome, mallory".to_owned()),
        "history kept: {texts:?}"
    );
    // The real chat with bob is untouched.
    bob.send("@alice", "still me");
    alice.sync();
    assert!(alice.texts("@bob").contains(&"still me".to_owned()));
}

/// Old rule: a group whose every leaf claimed "alice" was taken for Alice's own devices' group,
/// and an archive key of generation 0xFFFFFFFF sent there became her newest for good. Even
/// with a key stolen from a revoked device (so the leaves verify), the group is not her self
/// group: that was recorded when her account was made, and no message changes it.
#[test]
fn a_group_of_fake_own_devices_is_not_the_self_group_even_with_a_stolen_account_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let alice = server.register(dir.path(), "alice");
    let stolen = {
        let db = rusqlite::Connection::open(alice.profile.join("profile.db")).unwrap();
        let bytes: Vec<u8> = db
            .query_row(
                "SELECT value FROM profile WHERE key = 'account_key'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        SecretKey::from_bytes(&bytes).unwrap()
    };
    let ring_before = archive_generations(&alice);
    let rt = runtime();
    rt.block_on(async {
        let thief =
            Attacker::register(&server.url, "mallory", Some(("alice", 9)), Some(&stolen)).await;
        let victims = thief.claim("alice").await;
        let (group, mut state) = thief.group_with(victims).await;
        thief
            .send(
                group,
                &mut state,
                Body::GroupMeta(content::GroupMeta {
                    kind: content::ChatKind::Self_ as i32,
                    name: String::new(),
                }),
            )
            .await;
        thief
            .send(
                group,
                &mut state,
                Body::AccountSync(AccountSync {
                    kind: Some(account_sync::Kind::ArchiveKey(ArchiveKey {
                        generation: u32::MAX,
                        key: vec![7; 32],
                    })),
                }),
            )
            .await;
    });
    alice.sync();
    assert_eq!(
        archive_generations(&alice),
        ring_before,
        "no archive key taken from a group that is not the self group"
    );
    // Joined (the leaves verify), but as an ordinary group, not as her devices' own.
    let listed = chats(&alice);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].1, "group", "{listed:?}");
}

/// The archive key generations in the victim's profile.
fn archive_generations(user: &User) -> Vec<u32> {
    let db = rusqlite::Connection::open(user.profile.join("profile.db")).unwrap();
    let bytes: Vec<u8> = db
        .query_row(
            "SELECT value FROM profile WHERE key = 'account_secrets'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    content::AccountSecrets::decode(bytes.as_slice())
        .unwrap()
        .archive_keys
        .iter()
        .map(|k| k.generation)
        .collect()
}
