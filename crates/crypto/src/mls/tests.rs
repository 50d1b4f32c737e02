//! The group operations against each other, with in-memory providers, and the leaf checks
//! against crafted impostors.

use std::collections::HashMap;

use super::*;
use chapar_types::Username;
use openmls_rust_crypto::OpenMlsRustCrypto;

/// Account keys by username, and what a checker has pinned of them.
#[derive(Default)]
struct Accounts {
    keys: HashMap<String, SecretKey>,
}

impl Accounts {
    fn account(&mut self, name: &str) -> &SecretKey {
        self.keys
            .entry(name.to_owned())
            .or_insert_with(|| SecretKey::generate(&mut rand::thread_rng()))
    }

    /// A device of `name`, certified by that account's key.
    fn device(&mut self, name: &str, id: u64) -> DeviceSigner {
        let key = SecretKey::generate(&mut rand::thread_rng());
        DeviceSigner::certified(identity(name, id), &key, self.account(name))
    }

    /// A checker that has pinned every account key made so far.
    fn pinned(&self) -> impl FnMut(&GroupMember) -> Result<(), CryptoError> + use<> {
        let pins: HashMap<String, [u8; 32]> = self
            .keys
            .iter()
            .map(|(name, key)| (name.clone(), key.public()))
            .collect();
        move |member: &GroupMember| match pins.get(member.identity.username.as_str()) {
            Some(key) => member.verify(key),
            None => Err(CryptoError::UnknownAccounts(vec![
                member.identity.username.clone(),
            ])),
        }
    }
}

fn identity(name: &str, id: u64) -> DeviceIdentity {
    DeviceIdentity {
        username: Username::parse(name).expect("valid"),
        device: DeviceId(id),
    }
}

/// The rule before leaves were authenticated: any leaf counts.
fn anyone(_: &GroupMember) -> Result<(), CryptoError> {
    Ok(())
}

fn key_package(provider: &OpenMlsRustCrypto, signer: &DeviceSigner) -> VerifiedKeyPackage {
    let bytes = new_key_package(provider, signer, false).expect("kp");
    verify_key_package(provider, &bytes).expect("valid kp")
}

#[test]
fn three_members_talk_and_a_removed_one_cannot_read() {
    let mut accounts = Accounts::default();
    let providers: Vec<OpenMlsRustCrypto> = (0..3).map(|_| OpenMlsRustCrypto::default()).collect();
    let signers = [
        accounts.device("alice", 1),
        accounts.device("bob", 2),
        accounts.device("carol", 3),
    ];
    let mut alice = create_group(&providers[0], &signers[0], GroupId([1; 16])).expect("create");

    let kps: Vec<_> = (1..3)
        .map(|i| key_package(&providers[i], &signers[i]))
        .collect();
    assert_eq!(kps[0].identity.username.as_str(), "bob");
    let out = add_members(&mut alice, &providers[0], &signers[0], kps).expect("add");
    assert_eq!(out.added, vec![DeviceId(2), DeviceId(3)]);
    merge_pending_commit(&mut alice, &providers[0]).expect("merge");
    let welcome = out.welcome.expect("welcome");
    let mut bob = join_group(
        &providers[1],
        GroupId([1; 16]),
        &welcome,
        &mut accounts.pinned(),
    )
    .expect("bob joins");
    let mut carol = join_group(
        &providers[2],
        GroupId([1; 16]),
        &welcome,
        &mut accounts.pinned(),
    )
    .expect("carol joins");
    assert_eq!(epoch(&alice), epoch(&bob));

    let ct = encrypt(&mut alice, &providers[0], &signers[0], b"hello").expect("encrypt");
    for (group, provider) in [(&mut bob, &providers[1]), (&mut carol, &providers[2])] {
        match process(group, provider, &ct, &mut accounts.pinned()).expect("decrypt") {
            Incoming::Application { sender, plaintext } => {
                assert_eq!(plaintext, b"hello");
                assert_eq!(sender.identity.device, DeviceId(1));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    let out =
        remove_devices(&mut alice, &providers[0], &signers[0], &[DeviceId(3)]).expect("remove");
    merge_pending_commit(&mut alice, &providers[0]).expect("merge");
    match process(&mut bob, &providers[1], &out.commit, &mut accounts.pinned()).expect("bob") {
        Incoming::Commit {
            removed,
            removed_self,
            ..
        } => {
            assert_eq!(removed[0].device, DeviceId(3));
            assert!(!removed_self);
        }
        other => panic!("unexpected {other:?}"),
    }
    match process(
        &mut carol,
        &providers[2],
        &out.commit,
        &mut accounts.pinned(),
    )
    .expect("carol")
    {
        Incoming::Commit { removed_self, .. } => assert!(removed_self),
        other => panic!("unexpected {other:?}"),
    }
    let secret = encrypt(&mut alice, &providers[0], &signers[0], b"after").expect("encrypt");
    assert!(process(&mut carol, &providers[2], &secret, &mut accounts.pinned()).is_err());
    assert!(matches!(
        process(&mut bob, &providers[1], &secret, &mut accounts.pinned()),
        Ok(Incoming::Application { .. })
    ));
}

#[test]
fn leaving_is_a_proposal_another_member_commits() {
    let mut accounts = Accounts::default();
    let (pa, pb) = (OpenMlsRustCrypto::default(), OpenMlsRustCrypto::default());
    let (sa, sb) = (accounts.device("alice", 1), accounts.device("bob", 2));
    let mut alice = create_group(&pa, &sa, GroupId([2; 16])).expect("create");
    let out = add_members(&mut alice, &pa, &sa, vec![key_package(&pb, &sb)]).expect("add");
    merge_pending_commit(&mut alice, &pa).expect("merge");
    let welcome = out.welcome.expect("welcome");
    let mut bob =
        join_group(&pb, GroupId([2; 16]), &welcome, &mut accounts.pinned()).expect("join");
    let proposal = leave_group(&mut bob, &pb, &sb).expect("leave");
    assert!(matches!(
        process(&mut alice, &pa, &proposal, &mut accounts.pinned()),
        Ok(Incoming::Proposal { .. })
    ));
    let commit = commit_pending_proposals(&mut alice, &pa, &sa)
        .expect("commit")
        .expect("some");
    assert_eq!(commit.removed, vec![DeviceId(2)]);
}

/// Mallory's own account certifies a leaf that claims to be Bob's device: a label is all the
/// old rule looked at.
fn impostor(accounts: &mut Accounts, claims: &str, id: u64) -> DeviceSigner {
    let key = SecretKey::generate(&mut rand::thread_rng());
    let mallory = SecretKey::from_bytes(&accounts.account("mallory").to_bytes()).expect("key");
    DeviceSigner::certified(identity(claims, id), &key, &mallory)
}

#[test]
fn a_welcome_whose_tree_holds_an_impostor_is_refused() {
    let mut accounts = Accounts::default();
    accounts.account("bob");
    let (pm, pi, pa) = (
        OpenMlsRustCrypto::default(),
        OpenMlsRustCrypto::default(),
        OpenMlsRustCrypto::default(),
    );
    let mallory = accounts.device("mallory", 1);
    let fake_bob = impostor(&mut accounts, "bob", 2);
    let alice = accounts.device("alice", 3);
    let mut group = create_group(&pm, &mallory, GroupId([3; 16])).expect("create");
    let packages = vec![key_package(&pi, &fake_bob), key_package(&pa, &alice)];
    let out = add_members(&mut group, &pm, &mallory, packages).expect("add");
    let welcome = out.welcome.expect("welcome");

    let refused = join_group(&pa, GroupId([3; 16]), &welcome, &mut accounts.pinned());
    match refused {
        Err(CryptoError::Unauthenticated(why)) => assert!(why.contains("@bob"), "{why}"),
        other => panic!("joined: {:?}", other.map(|_| ())),
    }
    // The negative control: under the old rule (any leaf counts) the same welcome is joined.
    let pa2 = OpenMlsRustCrypto::default();
    let alice2 = accounts.device("alice", 4);
    let mut group = create_group(&pm, &mallory, GroupId([4; 16])).expect("create");
    let packages = vec![key_package(&pi, &fake_bob), key_package(&pa2, &alice2)];
    let out = add_members(&mut group, &pm, &mallory, packages).expect("add");
    assert!(
        join_group(
            &pa2,
            GroupId([4; 16]),
            &out.welcome.expect("w"),
            &mut anyone
        )
        .is_ok()
    );
}

#[test]
fn unpinned_accounts_are_asked_for_all_at_once_not_guessed() {
    let mut accounts = Accounts::default();
    let (pa, pc, pd) = (
        OpenMlsRustCrypto::default(),
        OpenMlsRustCrypto::default(),
        OpenMlsRustCrypto::default(),
    );
    let alice = accounts.device("alice", 1);
    let knows_only_alice = accounts.pinned();
    let (carol, dave) = (accounts.device("carol", 2), accounts.device("dave", 3));
    let mut group = create_group(&pa, &alice, GroupId([5; 16])).expect("create");
    let packages = vec![key_package(&pc, &carol), key_package(&pd, &dave)];
    let out = add_members(&mut group, &pa, &alice, packages).expect("add");
    let mut check = knows_only_alice;
    match join_group(&pc, GroupId([5; 16]), &out.welcome.expect("w"), &mut check) {
        Err(CryptoError::UnknownAccounts(names)) => {
            let mut names: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
            names.sort();
            assert_eq!(
                names,
                ["carol", "dave"],
                "every unknown account in one pass"
            );
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[test]
fn a_commit_that_adds_an_impostor_is_not_merged() {
    let mut accounts = Accounts::default();
    accounts.account("bob");
    let (pa, pm, pi) = (
        OpenMlsRustCrypto::default(),
        OpenMlsRustCrypto::default(),
        OpenMlsRustCrypto::default(),
    );
    let alice = accounts.device("alice", 1);
    let mallory = accounts.device("mallory", 2);
    let fake_bob = impostor(&mut accounts, "bob", 3);
    let mut theirs = create_group(&pa, &alice, GroupId([6; 16])).expect("create");
    let out = add_members(&mut theirs, &pa, &alice, vec![key_package(&pm, &mallory)]).expect("+m");
    merge_pending_commit(&mut theirs, &pa).expect("merge");
    let mut mine = join_group(
        &pm,
        GroupId([6; 16]),
        &out.welcome.expect("w"),
        &mut accounts.pinned(),
    )
    .expect("mallory is a real member");

    let out = add_members(&mut mine, &pm, &mallory, vec![key_package(&pi, &fake_bob)]).expect("+");
    let before = epoch(&theirs);
    match process(&mut theirs, &pa, &out.commit, &mut accounts.pinned()) {
        Err(CryptoError::Unauthenticated(why)) => assert!(why.contains("@bob"), "{why}"),
        other => panic!("merged: {other:?}"),
    }
    assert_eq!(epoch(&theirs), before, "not merged");
    assert!(
        members(&theirs)
            .iter()
            .all(|m| m.identity.username.as_str() != "bob")
    );
}

#[test]
fn a_member_cannot_take_another_identity_in_its_update_path() {
    let mut accounts = Accounts::default();
    let (pa, pm) = (OpenMlsRustCrypto::default(), OpenMlsRustCrypto::default());
    let alice = accounts.device("alice", 1);
    let mallory = accounts.device("mallory", 2);
    let mut theirs = create_group(&pa, &alice, GroupId([7; 16])).expect("create");
    let out = add_members(&mut theirs, &pa, &alice, vec![key_package(&pm, &mallory)]).expect("+m");
    merge_pending_commit(&mut theirs, &pa).expect("merge");
    let mut mine = join_group(
        &pm,
        GroupId([7; 16]),
        &out.welcome.expect("w"),
        &mut accounts.pinned(),
    )
    .expect("join");
    // Mallory's next leaf claims to be another of her own devices: certified, but not who
    // committed.
    let other = accounts.device("mallory", 9);
    let bundle = mine
        .self_update_with_new_signer(
            &pm,
            &mallory.keys,
            NewSignerBundle {
                signer: &other.keys,
                credential_with_key: other.credential_with_key(),
            },
            LeafNodeParameters::default(),
        )
        .expect("self update");
    let commit = serialize(bundle.commit()).expect("bytes");
    match process(&mut theirs, &pa, &commit, &mut accounts.pinned()) {
        Err(CryptoError::Unauthenticated(why)) => assert!(why.contains("tried to become"), "{why}"),
        other => panic!("merged: {other:?}"),
    }
}

#[test]
fn a_standalone_proposal_other_than_leaving_is_refused() {
    let mut accounts = Accounts::default();
    let (pa, pm, pc) = (
        OpenMlsRustCrypto::default(),
        OpenMlsRustCrypto::default(),
        OpenMlsRustCrypto::default(),
    );
    let alice = accounts.device("alice", 1);
    let mallory = accounts.device("mallory", 2);
    let carol = accounts.device("carol", 3);
    let mut theirs = create_group(&pa, &alice, GroupId([8; 16])).expect("create");
    let out = add_members(&mut theirs, &pa, &alice, vec![key_package(&pm, &mallory)]).expect("+m");
    merge_pending_commit(&mut theirs, &pa).expect("merge");
    let mut mine = join_group(
        &pm,
        GroupId([8; 16]),
        &out.welcome.expect("w"),
        &mut accounts.pinned(),
    )
    .expect("join");
    let kp = key_package(&pc, &carol).key_package;
    let (proposal, _) = mine
        .propose_add_member(&pm, &mallory.keys, &kp)
        .expect("propose");
    let bytes = serialize(&proposal).expect("bytes");
    assert!(matches!(
        process(&mut theirs, &pa, &bytes, &mut accounts.pinned()),
        Err(CryptoError::Unauthenticated(_))
    ));
    assert!(
        theirs.pending_proposals().next().is_none(),
        "nothing queued"
    );
}
