//! 1:1 and group chats, offline delivery, edits, deletes, reactions, leaving, live pushes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{BIN, Server};

#[test]
fn direct_chat_delivers_offline_messages_and_replies() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let alice = server.register(dir.path(), "alice");
    let bob = server.register(dir.path(), "bob");

    // Bob is offline (no process running) while alice writes.
    let first = alice.send("@bob", "hello bob");
    alice.send("@bob", "are you there?");
    let new = bob.sync();
    assert_eq!(new.len(), 2, "{new:?}");
    assert_eq!(new[0]["text"], "hello bob");
    assert_eq!(new[0]["sender"], "@alice");
    assert_eq!(new[0]["chat"], "@alice");
    assert_eq!(new[0]["id"], first.as_str());
    let sent_at = new[0]["sent_at"].as_str().unwrap();
    assert!(
        sent_at.ends_with('Z') && sent_at.len() == 20,
        "RFC 3339: {sent_at}"
    );

    // A second sync returns nothing new: no duplicates.
    assert!(bob.sync().is_empty());

    let reply = bob.ok(&["send", "@alice", "yes!", "--reply-to", &first]);
    alice.sync();
    let history = alice.messages("@bob");
    let texts: Vec<_> = history
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["hello bob", "are you there?", "yes!"]);
    assert_eq!(history[2]["reply_to"], first.as_str());
    assert_eq!(history[2]["id"], reply.trim());
    // Both sides reuse the one direct chat rather than opening another.
    assert_eq!(alice.ok(&["chats"]).lines().count(), 1);
    assert_eq!(bob.ok(&["chats"]).lines().count(), 1);
}

#[test]
fn group_of_three_and_a_removed_member_cannot_read_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let alice = server.register(dir.path(), "alice");
    let bob = server.register(dir.path(), "bob");
    let carol = server.register(dir.path(), "carol");

    let group = alice
        .ok(&[
            "group",
            "create",
            "book club",
            "--member",
            "@bob",
            "--member",
            "@carol",
        ])
        .trim()
        .to_owned();
    assert_eq!(group.len(), 32, "group id: {group}");
    alice.send(&group, "welcome all");
    bob.sync();
    bob.send(&group, "hi from bob");
    carol.sync();
    assert_eq!(carol.texts(&group), ["welcome all", "hi from bob"]);
    assert!(
        carol.ok(&["chats"]).contains("book club"),
        "the group name travels inside MLS"
    );

    alice.ok(&["group", "remove", &group, "@carol"]);
    alice.send(&group, "carol cannot read this");
    bob.sync();
    assert_eq!(
        bob.texts(&group),
        ["welcome all", "hi from bob", "carol cannot read this"]
    );
    carol.sync();
    assert_eq!(carol.texts(&group), ["welcome all", "hi from bob"]);
    assert!(carol.ok(&["chats"]).contains("removed"));
    let refused = carol.fails(&["send", &group, "let me in"]);
    assert!(refused.contains("no longer a member"), "{refused}");

    // Adding her back lets her read what follows, not what she missed.
    alice.ok(&["group", "add", &group, "@carol"]);
    alice.send(&group, "welcome back");
    carol.sync();
    let texts = carol.texts(&group);
    assert_eq!(texts.last().map(String::as_str), Some("welcome back"));
    assert!(!texts.iter().any(|t| t == "carol cannot read this"));
}

#[test]
fn leaving_a_group_stops_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let alice = server.register(dir.path(), "alice");
    let bob = server.register(dir.path(), "bob");
    let carol = server.register(dir.path(), "carol");
    let group = alice
        .ok(&[
            "group", "create", "trio", "--member", "@bob", "--member", "@carol",
        ])
        .trim()
        .to_owned();
    bob.sync();
    bob.ok(&["group", "leave", &group]);
    // Alice's next sync commits bob's departure, then her message goes to carol only.
    alice.sync();
    alice.send(&group, "after bob left");
    carol.sync();
    assert_eq!(carol.texts(&group), ["after bob left"]);
    bob.sync();
    assert!(bob.texts(&group).is_empty());
}

#[test]
fn edits_deletes_and_reactions_reach_everyone() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let alice = server.register(dir.path(), "alice");
    let bob = server.register(dir.path(), "bob");

    let typo = alice.send("@bob", "helo");
    let doomed = alice.send("@bob", "oops, wrong chat");
    bob.sync();
    alice.ok(&["edit", "@bob", &typo, "hello"]);
    alice.ok(&["delete", "@bob", &doomed]);
    bob.ok(&["react", "@alice", &typo, "👍"]);
    // Only the author may edit: bob's attempt is ignored by everyone.
    bob.ok(&["edit", "@alice", &typo, "bob was here"]);
    alice.sync();
    bob.sync();
    for (user, chat) in [(&alice, "@bob"), (&bob, "@alice")] {
        let history = user.messages(chat);
        assert_eq!(history.len(), 2, "{history:?}");
        assert_eq!(history[0]["text"], "hello");
        assert_eq!(history[0]["edited"], true);
        assert_eq!(history[0]["reactions"][0]["emoji"], "👍");
        assert_eq!(history[0]["reactions"][0]["by"], "@bob");
        assert_eq!(history[1]["deleted"], true);
        assert_eq!(history[1]["text"], "");
    }
    bob.ok(&["react", "@alice", &typo, "👍", "--remove"]);
    alice.sync();
    assert_eq!(
        alice.messages("@bob")[0]["reactions"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

#[test]
fn listen_prints_messages_as_they_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let alice = server.register(dir.path(), "alice");
    let bob = server.register(dir.path(), "bob");
    alice.send("@bob", "before listening");

    let mut listener = Command::new(BIN)
        .arg("--profile")
        .arg(&bob.profile)
        .args(["listen", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = listener.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = |what: &str| {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("listen printed nothing for {what}"));
        serde_json::from_str::<serde_json::Value>(&line).unwrap()
    };
    assert_eq!(next("the backlog")["text"], "before listening");
    alice.send("@bob", "live one");
    assert_eq!(next("a pushed message")["text"], "live one");
    alice.send("@bob", "live two");
    assert_eq!(next("a second push")["text"], "live two");
    let _ = listener.kill();
    let _ = listener.wait();
}

#[test]
fn mistakes_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let alice = server.register(dir.path(), "alice");

    let taken = server.user(dir.path(), "alice2").fails(&[
        "register",
        "--server",
        &server.url,
        "--username",
        "alice",
    ]);
    assert!(taken.contains("taken"), "{taken}");
    let invalid = server.user(dir.path(), "x").fails(&[
        "register",
        "--server",
        &server.url,
        "--username",
        "Not-Valid",
    ]);
    assert!(invalid.contains("a-z, 0-9 and _"), "{invalid}");
    let unknown = alice.fails(&["send", "@nobody_here", "hi"]);
    assert!(unknown.contains("no user @nobody_here"), "{unknown}");
    let bad_group = alice.fails(&["send", "0123456789abcdef0123456789abcdef", "hi"]);
    assert!(bad_group.contains("unknown group"), "{bad_group}");
    let bad_target = alice.fails(&["send", "bob", "hi"]);
    assert!(
        bad_target.contains("neither @username nor a group id"),
        "{bad_target}"
    );
    let unregistered = server.user(dir.path(), "ghost").fails(&["sync"]);
    assert!(unregistered.contains("chapar register"), "{unregistered}");
    let down = alice.run(&["--help"]);
    assert!(down.status.success());
}

#[test]
fn a_changed_identity_key_is_flagged_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let alice = server.register(dir.path(), "alice");
    let bob = server.register(dir.path(), "bob");
    alice.send("@bob", "pins bob's key");
    let number = alice.ok(&["fingerprint", "@bob"]);
    assert_eq!(
        number,
        bob.ok(&["fingerprint", "@alice"]).replace("@alice", "@bob"),
        "both sides see one number"
    );
    assert!(alice.fails_quietly_on_key_change().is_empty());

    // Simulate the server handing out a different key for bob: alice's pinned key no longer matches.
    let db = rusqlite::Connection::open(alice.profile.join("profile.db")).unwrap();
    db.execute(
        "UPDATE contacts SET account_key = zeroblob(32) WHERE username = 'bob'",
        [],
    )
    .unwrap();
    drop(db);
    let out = alice.run(&["fingerprint", "@bob"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("NEW identity key for @bob"), "{stderr}");
    // Nothing is re-pinned on the server's word: the key stays the pinned one, and starting
    // a group with bob is refused until alice trusts the new key.
    let pinned = || -> Vec<u8> {
        let db = rusqlite::Connection::open(alice.profile.join("profile.db")).unwrap();
        db.query_row(
            "SELECT account_key FROM contacts WHERE username = 'bob'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(pinned(), vec![0u8; 32], "not re-pinned");
    let refused = alice.fails(&["group", "create", "club", "--member", "@bob"]);
    assert!(refused.contains("chapar trust @bob"), "{refused}");
    assert!(
        alice
            .ok(&["trust", "@bob"])
            .contains("Trusting the new identity key"),
        "trusted on the user's word"
    );
    assert_ne!(pinned(), vec![0u8; 32]);
    alice.ok(&["group", "create", "club", "--member", "@bob"]);
    assert!(alice.ok(&["trust", "@bob"]).contains("nothing to trust"));
}
