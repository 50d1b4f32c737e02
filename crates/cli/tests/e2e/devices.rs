//! Multi-device: linked devices show the complete history and stay in step; a revoked device
//! reads nothing new and leaves every group; the recovery key restores an account and its
//! history after every device is gone.

use serde_json::Value;

use crate::harness::Server;

/// (text, edited, deleted, reactions) of each message, for comparing histories.
fn summary(messages: &[Value]) -> Vec<(String, bool, bool, String)> {
    messages
        .iter()
        .map(|m| {
            (
                m["text"].as_str().unwrap().to_owned(),
                m["edited"].as_bool().unwrap(),
                m["deleted"].as_bool().unwrap(),
                m["reactions"].to_string(),
            )
        })
        .collect()
}

fn unread(chats: &str, label: &str) -> String {
    chats
        .lines()
        .find(|l| l.starts_with(label))
        .and_then(|l| l.rsplit('\t').next())
        .unwrap_or_else(|| panic!("{label} not in {chats}"))
        .to_owned()
}

#[test]
fn three_devices_share_the_full_history_and_stay_in_step() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let alice1 = server.register(dir.path(), "alice");
    let bob = server.register(dir.path(), "bob");
    let carol = server.register(dir.path(), "carol");

    // History before any second device: a direct chat with an edit and a reaction, and a group.
    let first = alice1.send("@bob", "first, with a typo");
    alice1.ok(&["edit", "@bob", &first, "first, fixed"]);
    bob.sync();
    bob.ok(&["react", "@alice", &first, "👍"]);
    bob.send("@alice", "bob answers");
    let group = alice1
        .ok(&[
            "group", "create", "tea club", "--member", "@bob", "--member", "@carol",
        ])
        .trim()
        .to_owned();
    alice1.send(&group, "alice in the group");
    carol.sync();
    carol.send(&group, "carol in the group");
    alice1.sync();

    let alice2 = server.link(dir.path(), "alice-laptop", &alice1);
    assert_eq!(
        summary(&alice2.messages("@bob")),
        summary(&alice1.messages("@bob")),
        "the linked device shows the direct chat as the first device does"
    );
    assert_eq!(
        alice2.texts(&group),
        ["alice in the group", "carol in the group"]
    );
    assert!(alice2.ok(&["chats"]).contains("tea club"));

    // More history, then a third device approved by the second.
    alice2.send(&group, "from the laptop");
    bob.sync();
    let bye = bob.send("@alice", "before the tablet");
    let alice3 = server.link(dir.path(), "alice-tablet", &alice2);
    alice1.sync();
    let expected = summary(&alice1.messages("@bob"));
    assert_eq!(summary(&alice3.messages("@bob")), expected);
    assert_eq!(expected[0].0, "first, fixed");
    assert!(expected[0].1, "the edit came along");
    assert!(expected[0].3.contains("👍"), "the reaction came along");
    assert_eq!(
        alice3.texts(&group),
        [
            "alice in the group",
            "carol in the group",
            "from the laptop"
        ]
    );

    // A message from one device reaches the others, and the other side.
    let live = alice1.send("@bob", "sent from the phone");
    for device in [&alice2, &alice3, &bob] {
        device.sync();
        let messages = device.messages(if device.name == "bob" {
            "@alice"
        } else {
            "@bob"
        });
        let last = messages.last().unwrap();
        assert_eq!(
            (
                last["id"].as_str().unwrap(),
                last["sender"].as_str().unwrap()
            ),
            (live.as_str(), "@alice")
        );
    }
    alice3.send(&group, "tablet to the group");
    carol.sync();
    assert_eq!(carol.texts(&group).last().unwrap(), "tablet to the group");

    // Edits, deletes and reactions from any device reach all of them.
    alice3.ok(&["delete", "@bob", &live]);
    alice2.ok(&["react", "@bob", &bye, "🎉"]);
    for device in [&alice1, &alice2, &alice3] {
        device.sync();
        let messages = device.messages("@bob");
        let deleted = messages.iter().find(|m| m["id"] == live.as_str()).unwrap();
        assert_eq!(deleted["deleted"], true);
        let reacted = messages.iter().find(|m| m["id"] == bye.as_str()).unwrap();
        assert!(reacted["reactions"].to_string().contains("🎉"));
    }

    // Read positions follow the user from device to device.
    bob.send("@alice", "unread until read");
    alice2.sync();
    // bob's three messages: "bob answers", "before the tablet", "unread until read".
    assert_eq!(unread(&alice2.ok(&["chats"]), "@bob"), "3 unread");
    alice1.sync();
    alice1.ok(&["read", "@bob"]);
    alice2.sync();
    assert_eq!(unread(&alice2.ok(&["chats"]), "@bob"), "0 unread");

    // Every device is listed once, with names only the account can read.
    let devices = alice3.devices();
    assert_eq!(devices.len(), 3, "{devices:?}");
    assert_eq!(devices.iter().filter(|d| d["current"] == true).count(), 1);
    let names: Vec<&str> = devices.iter().filter_map(|d| d["name"].as_str()).collect();
    assert!(names.contains(&"alice-laptop") && names.contains(&"alice-tablet"));
}

#[test]
fn a_revoked_device_reads_nothing_new_and_leaves_every_group() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let alice1 = server.register(dir.path(), "alice");
    let bob = server.register(dir.path(), "bob");
    alice1.send("@bob", "before");
    let group = alice1
        .ok(&["group", "create", "pair", "--member", "@bob"])
        .trim()
        .to_owned();
    let alice2 = server.link(dir.path(), "alice-old-phone", &alice1);
    let (a1, a2) = (alice1.device_id(), alice2.device_id());
    bob.sync();
    assert!(bob.members(&group).iter().any(|m| m.ends_with(&a2)));

    let out = alice1.ok(&["device", "revoke", &a2]);
    assert!(out.contains("revoked"), "{out}");
    bob.send("@alice", "after the revocation");
    bob.send(&group, "group after the revocation");

    // The revoked device is told so, and has nothing new.
    let err = alice2.fails(&["sync"]);
    assert!(err.contains("revoked"), "{err}");
    let err = alice2.fails(&["send", "@bob", "can I still write?"]);
    assert!(err.contains("revoked"), "{err}");
    assert_eq!(alice2.texts("@bob"), ["before"]);
    // The other side's groups no longer contain it; they still contain the first device.
    bob.sync();
    for chat in ["@alice", group.as_str()] {
        let members = bob.members(chat);
        assert!(
            !members.iter().any(|m| m.ends_with(&a2)),
            "{chat}: {members:?}"
        );
        assert!(
            members.iter().any(|m| m.ends_with(&a1)),
            "{chat}: {members:?}"
        );
    }
    // The remaining device reads on.
    alice1.sync();
    assert_eq!(alice1.texts("@bob"), ["before", "after the revocation"]);
    let devices = alice1.devices();
    let revoked = devices.iter().find(|d| d["id"] == a2.as_str()).unwrap();
    assert!(revoked["revoked"].is_string(), "{revoked}");
    // A device cannot revoke itself, and nobody revokes a stranger's device.
    assert!(alice1.fails(&["device", "revoke", &a1]).contains("itself"));
    let bob_id = bob.device_id();
    assert!(
        alice1
            .fails(&["device", "revoke", &bob_id])
            .contains("not a device of")
    );
}

#[test]
fn the_recovery_key_restores_the_account_and_its_full_history() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let (alice1, first_key) = server.register_with_key(dir.path(), "alice");
    let bob = server.register(dir.path(), "bob");
    let hello = alice1.send("@bob", "hello bob");
    alice1.ok(&["edit", "@bob", &hello, "hello bob (edited)"]);
    bob.sync();
    bob.send("@alice", "hi alice");
    let group = alice1
        .ok(&["group", "create", "book club", "--member", "@bob"])
        .trim()
        .to_owned();
    alice1.send(&group, "chapter one");
    let alice2 = server.link(dir.path(), "alice-second", &alice1);
    alice2.send(&group, "chapter two");
    alice1.sync();
    let before = summary(&alice1.messages("@bob"));

    // A new key replaces the first one.
    let rotated = alice1.ok(&["recovery-key", "--rotate"]);
    let key = rotated.trim().to_owned();
    assert_eq!(key.lines().count(), 1, "the key alone on stdout: {rotated}");
    assert_ne!(key, first_key);

    // Every device of alice is lost.
    std::fs::remove_dir_all(&alice1.profile).unwrap();
    std::fs::remove_dir_all(&alice2.profile).unwrap();

    let alice = server.user(dir.path(), "alice-recovered");
    let recover = |key: &str| {
        alice.run(&[
            "recover",
            "--server",
            &server.url,
            "--username",
            "alice",
            "--recovery-key",
            key,
        ])
    };
    let refused = recover(&first_key);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("recovery key is wrong"));
    let wrong_shape = recover("not-a-key");
    assert!(!wrong_shape.status.success());
    let out = recover(&key.to_lowercase());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("2 old devices revoked"), "{stdout}");

    // The full history is back, with the edit, before anyone else did anything.
    assert_eq!(summary(&alice.messages("@bob")), before);
    assert_eq!(before[0].0, "hello bob (edited)");
    assert_eq!(alice.texts(&group), ["chapter one", "chapter two"]);
    assert!(alice.ok(&["chats"]).contains("book club"));

    // The chats go on where they were: bob's devices add the new device to them.
    bob.send("@alice", "welcome back");
    bob.send(&group, "chapter three");
    alice.sync();
    assert_eq!(alice.texts("@bob").last().unwrap(), "welcome back");
    assert_eq!(alice.texts(&group).last().unwrap(), "chapter three");
    alice.send("@bob", "glad to be back");
    bob.sync();
    assert_eq!(bob.texts("@alice").last().unwrap(), "glad to be back");
    assert_eq!(
        bob.ok(&["chats"]).lines().count(),
        2,
        "no second direct chat"
    );
    let devices = alice.devices();
    assert_eq!(
        devices.iter().filter(|d| d["revoked"].is_null()).count(),
        1,
        "{devices:?}"
    );
}

#[test]
fn leaving_takes_every_device_of_the_account_and_stays_left() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let alice1 = server.register(dir.path(), "alice");
    let bob = server.register(dir.path(), "bob");
    let group = alice1
        .ok(&["group", "create", "short stay", "--member", "@bob"])
        .trim()
        .to_owned();
    let alice2 = server.link(dir.path(), "alice-two", &alice1);
    alice1.ok(&["group", "leave", &group]);
    bob.send(&group, "after alice left");
    alice2.sync();
    assert!(
        !alice2
            .texts(&group)
            .contains(&"after alice left".to_owned()),
        "the account's other device left too"
    );
    // A later change to alice's devices does not bring her back into the group.
    let _alice3 = server.link(dir.path(), "alice-three", &alice2);
    bob.send(&group, "still without alice");
    bob.sync();
    let members = bob.members(&group);
    assert!(members.iter().all(|m| m.starts_with("@bob")), "{members:?}");
}

#[test]
fn revoking_the_device_that_set_the_recovery_key_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let alice1 = server.register(dir.path(), "alice");
    let alice2 = server.link(dir.path(), "alice-suspect", &alice1);
    // The second device sets a recovery key of its own choosing.
    let planted = alice2.ok(&["recovery-key", "--rotate"]).trim().to_owned();
    let synced = alice1.run(&["sync"]);
    let notice = String::from_utf8_lossy(&synced.stderr);
    assert!(
        notice.contains("recovery key was replaced by your device"),
        "the other device is told: {notice}"
    );
    let revoke = alice1.run(&["device", "revoke", &alice2.device_id()]);
    assert!(revoke.status.success());
    let stdout = String::from_utf8_lossy(&revoke.stdout);
    let replaced = stdout
        .lines()
        .find_map(|l| l.strip_prefix("new recovery key: "))
        .unwrap_or_else(|| panic!("no new recovery key in {stdout}"))
        .to_owned();
    // The planted key no longer opens anything; the new one does.
    let stranger = server.user(dir.path(), "alice-thief");
    let stolen = stranger.run(&[
        "recover",
        "--server",
        &server.url,
        "--username",
        "alice",
        "--recovery-key",
        &planted,
    ]);
    assert!(!stolen.status.success());
    let owner = server.user(dir.path(), "alice-again");
    owner.ok(&[
        "recover",
        "--server",
        &server.url,
        "--username",
        "alice",
        "--recovery-key",
        &replaced,
        "--keep-devices",
    ]);
}

#[test]
fn ten_devices_on_one_account_all_read_the_same_chat() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let first = server.register(dir.path(), "alice");
    let bob = server.register(dir.path(), "bob");
    first.send("@bob", "before the others");
    // Each new device is approved by the one before it.
    let mut devices = vec![first];
    for n in 2..=10 {
        let next = server.link(dir.path(), &format!("alice-{n}"), devices.last().unwrap());
        devices.push(next);
    }
    assert_eq!(devices[9].devices().len(), 10);
    bob.send("@alice", "to all ten");
    for device in &devices {
        device.sync();
        assert_eq!(
            device.texts("@bob"),
            ["before the others", "to all ten"],
            "{}",
            device.profile.display()
        );
    }
    bob.sync();
    assert_eq!(
        bob.members("@alice").len(),
        11,
        "ten devices of alice, one of bob"
    );
}

/// Issue 14, bug 6: a chat the contact started was joined from a welcome, and the first device
/// waited a day to archive it (for an older device of its own that never existed), so a linked
/// device said "1 messages restored" and showed nothing. The first device of an account in a
/// group now archives what it receives at once.
#[test]
fn a_chat_the_contact_started_is_whole_on_a_linked_and_a_recovered_device() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let (phone, key) = server.register_with_key(dir.path(), "alice");
    let bob = server.register(dir.path(), "bob");
    bob.send("@alice", "bob writes first");
    phone.sync();
    assert_eq!(phone.texts("@bob"), ["bob writes first"]);
    phone.ok(&["read", "@bob"]);

    let laptop = server.link(dir.path(), "alice-laptop", &phone);
    assert_eq!(laptop.texts("@bob"), ["bob writes first"], "linked device");
    bob.send("@alice", "and again");
    laptop.sync();
    assert_eq!(laptop.texts("@bob"), ["bob writes first", "and again"]);
    phone.sync();

    std::fs::remove_dir_all(&phone.profile).unwrap();
    std::fs::remove_dir_all(&laptop.profile).unwrap();
    let recovered = server.user(dir.path(), "alice-recovered");
    recovered.ok(&[
        "recover",
        "--server",
        &server.url,
        "--username",
        "alice",
        "--recovery-key",
        &key,
    ]);
    assert_eq!(
        recovered.texts("@bob"),
        ["bob writes first", "and again"],
        "recovered device"
    );
}
