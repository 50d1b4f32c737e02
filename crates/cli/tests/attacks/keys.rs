//! A server that lies about account keys and accounts: it presents another key for the
//! user's own account or a contact's, with a device of its own certified by that key, or
//! says a contact does not exist. Old rule: a user-started claim re-pinned whatever key the
//! server sent (with a warning line) and added its devices to every group, the self group
//! included, and `unknown_user` made every co-member remove that user's devices for good.

use crate::harness::User;
use crate::kit::Forged;
use crate::lying::{Scene, asks_about, unknown_user};

/// A forged device id no real device has.
const FORGED: u64 = 0x0bad_0bad_0bad_0bad;

fn pinned_key(user: &User, whose: &str) -> Vec<u8> {
    let db = rusqlite::Connection::open(user.profile.join("profile.db")).unwrap();
    db.query_row(
        "SELECT account_key FROM contacts WHERE username = ?1",
        [whose],
        |r| r.get(0),
    )
    .unwrap()
}

/// Every device id in every chat of `user`, as `group members` lists them.
fn all_members(user: &User, chats: &[&str]) -> String {
    chats
        .iter()
        .map(|c| user.members(c).join("\n"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_server_lying_about_the_own_key_adds_no_device_and_changes_no_key() {
    let Scene {
        dir: _dir,
        server: _server,
        liar,
        alice,
        bob,
    } = Scene::new();
    alice.send("@bob", "hello");
    let own = pinned_key(&alice, "alice");
    let forged = Forged::device_of("alice", FORGED);
    liar.tell(Box::new(move |request, reply| {
        if asks_about(request) == Some("alice") {
            forged.lie_about(reply);
        }
    }));
    let out = alice.run(&["group", "create", "club", "--member", "@bob"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("not yours"), "{stderr}");
    let club = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    // The same lie again is not warned about again.
    let again = alice.run(&["group", "create", "club2", "--member", "@bob"]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{stderr}");
    assert!(!stderr.contains("not yours"), "warned once: {stderr}");
    alice.sync();
    assert_eq!(
        pinned_key(&alice, "alice"),
        own,
        "the own key never changes"
    );
    let members = all_members(&alice, &[&club, "@bob"]);
    assert!(
        !members.contains(&format!("{FORGED:016x}")),
        "no forged device anywhere: {members}"
    );
    bob.sync();
    assert_eq!(bob.texts("@alice"), ["hello"]);
}

#[test]
fn a_server_lying_about_a_contacts_key_blocks_sending_and_repins_nothing() {
    let Scene {
        dir: _dir,
        server: _server,
        liar,
        alice,
        bob,
    } = Scene::new();
    alice.send("@bob", "hello");
    let real = pinned_key(&alice, "bob");
    let forged = Forged::device_of("bob", FORGED);
    liar.tell(Box::new(move |request, reply| {
        if asks_about(request) == Some("bob") {
            forged.lie_about(reply);
        }
    }));
    let out = alice.run(&["fingerprint", "@bob"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NEW identity key for @bob"),
        "{out:?}"
    );
    let refused = alice.fails(&["send", "@bob", "are you there?"]);
    assert!(refused.contains("chapar trust @bob"), "{refused}");
    let refused = alice.fails(&["group", "create", "club", "--member", "@bob"]);
    assert!(refused.contains("chapar trust @bob"), "{refused}");
    // Reading and marking read send bob nothing, so they go on.
    alice.ok(&["read", "@bob"]);
    alice.sync();
    assert_eq!(pinned_key(&alice, "bob"), real, "nothing re-pinned");
    assert!(
        !alice
            .members("@bob")
            .join(" ")
            .contains(&format!("{FORGED:016x}")),
        "no forged device added"
    );
    // The server tells the truth again: the change is forgotten, and nothing was lost.
    liar.stop_lying();
    alice.ok(&["fingerprint", "@bob"]);
    alice.send("@bob", "still here");
    bob.sync();
    assert_eq!(bob.texts("@alice"), ["hello", "still here"]);
}

#[test]
fn a_server_saying_a_contact_is_gone_removes_none_of_their_devices() {
    let Scene {
        dir,
        server,
        liar,
        alice,
        bob,
    } = Scene::new();
    alice.send("@bob", "hello");
    bob.sync();
    let before = alice.members("@bob");
    // Bob's account changes (a second device), so alice checks the chat's devices, and the
    // server answers that bob does not exist.
    let laptop = server.link(dir.path(), "bob-laptop", &bob);
    liar.tell(Box::new(|request, reply| {
        if asks_about(request) == Some("bob") {
            *reply = unknown_user();
        }
    }));
    alice.sync();
    let during = alice.members("@bob");
    for member in &before {
        assert!(during.contains(member), "{member} kept: {during:?}");
    }
    alice.send("@bob", "still here");
    bob.sync();
    assert_eq!(bob.texts("@alice"), ["hello", "still here"]);
    // Told the truth again, alice adds the new device as usual.
    liar.stop_lying();
    alice.sync();
    assert!(
        alice.members("@bob").len() > before.len(),
        "the laptop is added"
    );
    laptop.sync();
}

/// Old rule: a device the server stopped listing was removed from every group and
/// remembered as revoked for good. Now only the account's signed revocation removes it.
#[test]
fn a_device_the_server_stops_listing_without_the_accounts_proof_stays() {
    let Scene {
        dir,
        server,
        liar,
        alice,
        bob,
    } = Scene::new();
    let laptop = server.link(dir.path(), "bob-laptop", &bob);
    alice.send("@bob", "hello");
    laptop.sync();
    let laptop_id = laptop.device_id();
    assert!(alice.members("@bob").join(" ").contains(&laptop_id));
    // Bob's account changes (a third device); the server hides the laptop from alice.
    let hidden = laptop_id.clone();
    liar.tell(Box::new(move |request, reply| {
        if asks_about(request) == Some("bob")
            && let chapar_wire::v1::response::Result::Account(account) = reply
        {
            account
                .devices
                .retain(|d| format!("{:016x}", d.device_id) != hidden);
        }
    }));
    let _tablet = server.link(dir.path(), "bob-tablet", &bob);
    alice.sync();
    assert!(
        alice.members("@bob").join(" ").contains(&laptop_id),
        "the laptop stays: {:?}",
        alice.members("@bob")
    );
    alice.send("@bob", "still here");
    laptop.sync();
    assert_eq!(laptop.texts("@alice"), ["hello", "still here"]);
}
