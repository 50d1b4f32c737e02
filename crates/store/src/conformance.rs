//! The conformance suite every [`Store`] backend must pass, unchanged.
//!
//! Each check starts from fresh names, so the suite runs against any empty or non-empty store.
//! A backend's own test calls [`run_all`]; failures panic with what was expected.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test suite: a panic is the report

use chapar_types::{DeviceId, GroupId, MessageId};

use crate::*;

/// Runs every check.
pub async fn run_all<S: Store>(store: &S) {
    accounts_and_devices(store).await;
    key_packages_are_claimed_once_and_last_resort_stays(store).await;
    log_orders_dedups_and_enforces_epochs(store).await;
    commits_route_welcomes_and_membership_windows(store).await;
    proposals_block_commits_that_did_not_see_them(store).await;
    concurrent_appends_get_distinct_consecutive_seqs(store).await;
    devices_are_added_limited_and_revoked(store).await;
    links_expire_and_keep_one_approval(store).await;
    recovery_records_change_only_as_expected(store).await;
    archives_accept_only_progress(store).await;
    files::run_all(store).await;
    groups::run_all(store).await;
}

/// Registers `name` with one device `device` holding two one-time key packages.
pub async fn seed_account<S: Store>(store: &S, name: &str, device: u64) {
    store
        .create_account(NewAccount {
            username: name.into(),
            account_key: vec![1; 32],
            device: device_record(name, device),
            key_packages: vec![vec![10], vec![11]],
            last_resort_key_package: vec![99],
        })
        .await
        .expect("create account");
}

fn device_record(name: &str, device: u64) -> DeviceRecord {
    DeviceRecord {
        device: DeviceId(device),
        username: name.into(),
        device_key: vec![2; 32],
        account_signature: vec![3; 64],
        created_ms: 1_000,
        revoked_ms: None,
        sealed_name: vec![0x5E; 4],
        last_seen_ms: None,
        revocation_signature: None,
    }
}

fn new_device(name: &str, device: u64) -> NewDevice {
    NewDevice {
        device: device_record(name, device),
        key_packages: vec![vec![20], vec![21]],
        last_resort_key_package: vec![98],
        revoke_others: false,
    }
}

fn unique(tag: u8) -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    // Different runs against one persistent store must not collide: mix in the time.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (t << 8) ^ (NEXT.fetch_add(1, Ordering::Relaxed) << 4) ^ u64::from(tag)
}

fn name(prefix: &str) -> String {
    format!("{prefix}_{}", unique(0) % 1_000_000_000_000)
}

fn app(group: GroupId, sender: u64, epoch: u64, id: u8) -> Append {
    Append {
        group,
        sender: DeviceId(sender),
        epoch,
        now_ms: 5,
        payload: vec![id; 10],
        kind: AppendKind::Application {
            message_id: MessageId([id; 16]),
            roster_version: u64::MAX,
        },
    }
}

pub(crate) fn commit(
    group: GroupId,
    sender: u64,
    epoch: u64,
    seen: u64,
    added: Vec<u64>,
    removed: Vec<u64>,
) -> Append {
    Append {
        group,
        sender: DeviceId(sender),
        epoch,
        now_ms: 6,
        payload: vec![0xC0; 20],
        kind: AppendKind::Commit {
            seen_seq: seen,
            added: added.into_iter().map(DeviceId).collect(),
            added_key_packages: Vec::new(),
            removed: removed.into_iter().map(DeviceId).collect(),
            welcome: Some(vec![0xEE; 8]),
        },
    }
}

/// A commit as [`commit`] makes it, with a key package claimed by `sender`'s account for
/// each added device (as a client claims them before it adds anyone).
pub(crate) async fn claimed_commit<S: Store>(
    store: &S,
    group: GroupId,
    sender: u64,
    epoch: u64,
    seen: u64,
    added: Vec<u64>,
    removed: Vec<u64>,
) -> Append {
    use sha2::{Digest as _, Sha256};
    let mut digests = Vec::new();
    for device in &added {
        let owner = store
            .device(DeviceId(*device))
            .await
            .unwrap()
            .expect("an added device exists")
            .username;
        let claimed = store
            .claim_key_packages(&owner, DeviceId(sender), vec![DeviceId(*device)], true)
            .await
            .unwrap();
        let package = &claimed.first().expect("a key package to claim").key_package;
        digests.push(Sha256::digest(package).into());
    }
    let mut append = commit(group, sender, epoch, seen, added, removed);
    if let AppendKind::Commit {
        added_key_packages, ..
    } = &mut append.kind
    {
        *added_key_packages = digests;
    }
    append
}

async fn new_group<S: Store>(store: &S, creator: u64) -> GroupId {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&unique(1).to_be_bytes());
    id[8..].copy_from_slice(&creator.to_be_bytes());
    let group = GroupId(id);
    store
        .create_group(group, DeviceId(creator), 1)
        .await
        .expect("create group");
    group
}

async fn accounts_and_devices<S: Store>(store: &S) {
    let alice = name("alice");
    let d = unique(2);
    seed_account(store, &alice, d).await;
    let account = store
        .account(&alice)
        .await
        .unwrap()
        .expect("account exists");
    assert_eq!(account.devices, vec![device_record(&alice, d)]);
    assert_eq!(
        store.device(DeviceId(d)).await.unwrap(),
        Some(device_record(&alice, d))
    );
    assert!(store.account(&name("nobody")).await.unwrap().is_none());

    let again = store
        .create_account(NewAccount {
            username: alice.clone(),
            account_key: vec![9; 32],
            device: device_record(&alice, unique(3)),
            key_packages: vec![],
            last_resort_key_package: vec![1],
        })
        .await;
    assert_eq!(again, Err(StoreError::UsernameTaken));
    // The failed registration left nothing behind.
    assert_eq!(
        store.account(&alice).await.unwrap().unwrap().devices.len(),
        1
    );
}

async fn key_packages_are_claimed_once_and_last_resort_stays<S: Store>(store: &S) {
    let bob = name("bob");
    let d = unique(4);
    seed_account(store, &bob, d).await;
    assert_eq!(store.key_package_count(DeviceId(d)).await.unwrap(), 2);
    // Without one-time packages, the last-resort one is given and the others stay.
    let last_resort = store
        .claim_key_packages(&bob, DeviceId(0), vec![], false)
        .await
        .unwrap();
    assert_eq!(last_resort.len(), 1);
    assert_eq!(last_resort[0].key_package, vec![99]);
    assert_eq!(store.key_package_count(DeviceId(d)).await.unwrap(), 2);
    let mut seen = Vec::new();
    for _ in 0..4 {
        let claimed = store
            .claim_key_packages(&bob, DeviceId(0), vec![], true)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        seen.push(claimed[0].key_package.clone());
    }
    assert_eq!(seen, vec![vec![10], vec![11], vec![99], vec![99]]);
    assert_eq!(store.key_package_count(DeviceId(d)).await.unwrap(), 0);
    assert_eq!(
        store.key_package_bytes(&bob).await.unwrap(),
        1,
        "only the last-resort package is left"
    );
    assert_eq!(
        store
            .add_key_packages(DeviceId(d), vec![vec![12]], Some(vec![98]), u64::MAX)
            .await
            .unwrap(),
        1
    );
    // Past the account's quota nothing is added, the last-resort package included.
    assert_eq!(
        store
            .add_key_packages(DeviceId(d), vec![vec![13; 10]], Some(vec![97; 10]), 11)
            .await,
        Err(StoreError::KeyPackageQuota { stored: 21 })
    );
    assert_eq!(store.key_package_bytes(&bob).await.unwrap(), 2);
    assert_eq!(store.key_package_count(DeviceId(d)).await.unwrap(), 1);
    // The claiming device never gets its own packages.
    assert!(
        store
            .claim_key_packages(&bob, DeviceId(d), vec![], true)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn log_orders_dedups_and_enforces_epochs<S: Store>(store: &S) {
    let carol = name("carol");
    let d = unique(5);
    seed_account(store, &carol, d).await;
    let group = new_group(store, d).await;
    assert_eq!(
        store.create_group(group, DeviceId(d), 1).await,
        Err(StoreError::GroupExists)
    );

    let first = store.append(app(group, d, 0, 1)).await.unwrap();
    assert_eq!((first.seq, first.duplicate), (1, false));
    assert_eq!(first.recipients, vec![DeviceId(d)]);
    let retry = store.append(app(group, d, 0, 1)).await.unwrap();
    assert_eq!((retry.seq, retry.duplicate), (1, true));
    assert_eq!(store.append(app(group, d, 0, 2)).await.unwrap().seq, 2);

    assert_eq!(
        store.append(app(group, d, 7, 3)).await,
        Err(StoreError::StaleEpoch {
            current_epoch: 0,
            head_seq: 2
        })
    );
    assert_eq!(
        store.append(app(group, unique(6), 0, 3)).await,
        Err(StoreError::NotMember)
    );
    assert_eq!(
        store.append(app(GroupId([0xAB; 16]), d, 0, 3)).await,
        Err(StoreError::UnknownGroup)
    );

    let page = store.read_log(group, DeviceId(d), 0, 10).await.unwrap();
    assert_eq!(
        page.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(page.entries[0].payload, vec![1; 10]);
    assert_eq!(page.entries[0].message_id, Some(MessageId([1; 16])));
    assert_eq!(page.head_seq, 2);
    let page = store.read_log(group, DeviceId(d), 1, 1).await.unwrap();
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].seq, 2);
}

async fn commits_route_welcomes_and_membership_windows<S: Store>(store: &S) {
    let (a, b) = (unique(7), unique(8));
    seed_account(store, &name("dave"), a).await;
    seed_account(store, &name("erin"), b).await;
    let group = new_group(store, a).await;
    store.append(app(group, a, 0, 1)).await.unwrap();

    let ghost = unique(9);
    assert_eq!(
        store
            .append(commit(group, a, 0, 1, vec![ghost], vec![]))
            .await,
        Err(StoreError::UnknownDevice(DeviceId(ghost)))
    );
    let added = store
        .append(claimed_commit(store, group, a, 0, 1, vec![b], vec![]).await)
        .await
        .unwrap();
    assert_eq!((added.seq, added.epoch), (2, 1));
    assert_eq!(added.welcomed, vec![DeviceId(b)]);
    let welcomes = store.read_welcomes(DeviceId(b), 0, 10).await.unwrap();
    assert_eq!(welcomes.len(), 1);
    assert_eq!((welcomes[0].group, welcomes[0].seq), (group, 2));
    assert!(
        store
            .read_welcomes(DeviceId(b), welcomes[0].id, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // The old epoch is closed; the new member reads only what follows its addition.
    assert!(matches!(
        store.append(app(group, a, 0, 2)).await,
        Err(StoreError::StaleEpoch {
            current_epoch: 1,
            ..
        })
    ));
    store.append(app(group, b, 1, 3)).await.unwrap();
    let seen_by_b = store.read_log(group, DeviceId(b), 0, 10).await.unwrap();
    assert_eq!(
        seen_by_b.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![3]
    );

    let removed = store
        .append(commit(group, a, 1, 3, vec![], vec![b]))
        .await
        .unwrap();
    assert!(
        removed.recipients.contains(&DeviceId(b)),
        "the removed device hears of its removal"
    );
    store.append(app(group, a, 2, 4)).await.unwrap();
    let after = store.read_log(group, DeviceId(b), 3, 10).await.unwrap();
    assert_eq!(
        after.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![removed.seq]
    );
    assert!(after.membership_ended);
    assert_eq!(
        store.append(app(group, b, 2, 5)).await,
        Err(StoreError::NotMember)
    );

    let heads = store.device_groups(DeviceId(b), None, 1000).await.unwrap();
    let head = heads
        .iter()
        .find(|h| h.group == group)
        .expect("b's group listed");
    assert_eq!(
        (head.joined_seq, head.left_seq, head.head_seq),
        (2, Some(4), 5)
    );
}

async fn proposals_block_commits_that_did_not_see_them<S: Store>(store: &S) {
    let (a, b) = (unique(10), unique(11));
    seed_account(store, &name("fay"), a).await;
    seed_account(store, &name("gus"), b).await;
    let group = new_group(store, a).await;
    store
        .append(claimed_commit(store, group, a, 0, 0, vec![b], vec![]).await)
        .await
        .unwrap();
    let leave = store
        .append(Append {
            group,
            sender: DeviceId(b),
            epoch: 1,
            now_ms: 7,
            payload: vec![0xAA],
            kind: AppendKind::Proposal { self_remove: true },
        })
        .await
        .unwrap();
    assert_eq!(leave.seq, 2);
    // The leaver stops receiving at once.
    assert_eq!(
        store.append(app(group, b, 1, 1)).await,
        Err(StoreError::NotMember)
    );
    // A commit made without seeing the proposal is refused; one that saw it is accepted.
    assert!(matches!(
        store.append(commit(group, a, 1, 1, vec![], vec![])).await,
        Err(StoreError::StaleEpoch { head_seq: 2, .. })
    ));
    let ok = store
        .append(commit(group, a, 1, 2, vec![], vec![b]))
        .await
        .unwrap();
    assert_eq!(ok.epoch, 2);
}

async fn concurrent_appends_get_distinct_consecutive_seqs<S: Store>(store: &S) {
    let a = unique(12);
    seed_account(store, &name("hal"), a).await;
    let group = new_group(store, a).await;
    let appends = (0..200u16).map(|i| {
        let mut append = app(group, a, 0, 0);
        let mut id = [0u8; 16];
        id[..2].copy_from_slice(&i.to_be_bytes());
        append.kind = AppendKind::Application {
            message_id: MessageId(id),
            roster_version: u64::MAX,
        };
        store.append(append)
    });
    let mut seqs: Vec<u64> = futures_join_all(appends)
        .await
        .into_iter()
        .map(|r| r.unwrap().seq)
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
}

async fn roster_version<S: Store>(store: &S, device: u64, group: GroupId) -> u64 {
    store
        .device_groups(DeviceId(device), None, 1000)
        .await
        .unwrap()
        .iter()
        .find(|h| h.group == group)
        .expect("group listed")
        .roster_version
}

async fn devices_are_added_limited_and_revoked<S: Store>(store: &S) {
    use chapar_types::limits::DEVICES_PER_ACCOUNT_MAX;
    let (ivy, jon) = (name("ivy"), name("jon"));
    let (i1, j1) = (unique(13), unique(14));
    seed_account(store, &ivy, i1).await;
    seed_account(store, &jon, j1).await;
    let group = new_group(store, j1).await;
    store
        .append(claimed_commit(store, group, j1, 0, 0, vec![i1], vec![]).await)
        .await
        .unwrap();
    let before = roster_version(store, j1, group).await;

    // A second device of ivy: listed, claimable on its own, and the group's roster moves on.
    let i2 = unique(15);
    store.add_device(new_device(&ivy, i2)).await.unwrap();
    assert_eq!(store.account(&ivy).await.unwrap().unwrap().devices.len(), 2);
    let after_add = roster_version(store, j1, group).await;
    assert!(after_add > before, "{after_add} > {before}");
    // A sender that has not looked at the new roster is refused; one that has is not.
    let mut unaware = app(group, j1, 1, 11);
    unaware.kind = AppendKind::Application {
        message_id: MessageId([11; 16]),
        roster_version: before,
    };
    assert_eq!(
        store.append(unaware.clone()).await,
        Err(StoreError::StaleRoster { current: after_add })
    );
    unaware.kind = AppendKind::Application {
        message_id: MessageId([11; 16]),
        roster_version: after_add,
    };
    store.append(unaware).await.unwrap();
    let only = store
        .claim_key_packages(&ivy, DeviceId(j1), vec![DeviceId(i2)], true)
        .await
        .unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].device.device, DeviceId(i2));
    assert_eq!(only[0].device.sealed_name, vec![0x5E; 4]);
    assert_eq!(
        store.add_device(new_device(&ivy, i2)).await,
        Err(StoreError::DeviceExists)
    );
    assert_eq!(
        store
            .add_device(new_device(&name("nobody"), unique(16)))
            .await,
        Err(StoreError::UnknownUser)
    );
    store.touch_device(DeviceId(i2), 4_242).await.unwrap();
    assert_eq!(
        store
            .device(DeviceId(i2))
            .await
            .unwrap()
            .unwrap()
            .last_seen_ms,
        Some(4_242)
    );

    // i2 joins the group, then is revoked: it reads nothing after, cannot append or be re-added.
    let joined = store
        .append(claimed_commit(store, group, j1, 1, 2, vec![i2], vec![]).await)
        .await
        .unwrap();
    store.revoke_device(DeviceId(i2), 5_000).await.unwrap();
    let revoked = store.device(DeviceId(i2)).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_ms, Some(5_000));
    assert!(roster_version(store, j1, group).await > after_add);
    assert_eq!(
        store.append(app(group, i2, 2, 9)).await,
        Err(StoreError::NotMember)
    );
    let later = store.append(app(group, j1, 2, 10)).await.unwrap();
    assert!(
        !later.recipients.contains(&DeviceId(i2)),
        "a revoked device is pushed nothing"
    );
    let page = store
        .read_log(group, DeviceId(i2), joined.seq, 10)
        .await
        .unwrap();
    assert!(page.entries.is_empty() && page.membership_ended);
    assert_eq!(
        store
            .append(commit(group, j1, 2, later.seq, vec![i2], vec![]))
            .await,
        Err(StoreError::UnknownDevice(DeviceId(i2)))
    );
    assert!(
        store
            .claim_key_packages(&ivy, DeviceId(j1), vec![DeviceId(i2)], true)
            .await
            .unwrap()
            .is_empty()
    );

    // The account's active devices are bounded; revoked ones do not count.
    let mut added = 1; // i1 is active
    while added < DEVICES_PER_ACCOUNT_MAX {
        store
            .add_device(new_device(&ivy, unique(17)))
            .await
            .unwrap();
        added += 1;
    }
    assert_eq!(
        store.add_device(new_device(&ivy, unique(18))).await,
        Err(StoreError::TooManyDevices)
    );

    // Recovery revokes every other device in the same step.
    let recovered = unique(19);
    let mut device = new_device(&ivy, recovered);
    device.revoke_others = true;
    store.add_device(device).await.unwrap();
    let account = store.account(&ivy).await.unwrap().unwrap();
    let active: Vec<DeviceId> = account
        .devices
        .iter()
        .filter(|d| d.revoked_ms.is_none())
        .map(|d| d.device)
        .collect();
    assert_eq!(active, vec![DeviceId(recovered)]);
}

async fn links_expire_and_keep_one_approval<S: Store>(store: &S) {
    let id = unique(20).to_be_bytes().to_vec();
    store
        .create_link(id.clone(), vec![1, 2, 3], 1_000, 2_000)
        .await
        .unwrap();
    let link = store.link(id.clone(), 1_500).await.unwrap();
    assert_eq!(
        (link.sealed_request, link.sealed_approval, link.completed),
        (vec![1, 2, 3], None, false)
    );
    assert_eq!(
        store.complete_link(id.clone(), 1_550).await,
        Err(StoreError::LinkNotFound),
        "only an approved link can be completed"
    );
    store
        .approve_link(id.clone(), vec![4], 1_600)
        .await
        .unwrap();
    assert_eq!(
        store.approve_link(id.clone(), vec![5], 1_700).await,
        Err(StoreError::Conflict { position: 0 })
    );
    assert_eq!(
        store.link(id.clone(), 1_800).await.unwrap().sealed_approval,
        Some(vec![4])
    );
    store.complete_link(id.clone(), 1_850).await.unwrap();
    assert!(store.link(id.clone(), 1_900).await.unwrap().completed);
    assert_eq!(
        store.link(id.clone(), 2_000).await,
        Err(StoreError::LinkNotFound)
    );
    assert_eq!(
        store.approve_link(id.clone(), vec![6], 2_500).await,
        Err(StoreError::LinkNotFound)
    );
    assert_eq!(
        store.link(b"never filed".to_vec(), 0).await,
        Err(StoreError::LinkNotFound)
    );
}

async fn recovery_records_change_only_as_expected<S: Store>(store: &S) {
    let kim = name("kim");
    seed_account(store, &kim, unique(21)).await;
    assert_eq!(store.recovery(&kim).await.unwrap(), None);
    let first = RecoveryRecord {
        auth_key: vec![1; 32],
        sealed_bundle: vec![2; 40],
    };
    assert_eq!(
        store.set_recovery(&kim, first.clone(), vec![9; 32]).await,
        Err(StoreError::Conflict { position: 0 })
    );
    store
        .set_recovery(&kim, first.clone(), vec![])
        .await
        .unwrap();
    assert_eq!(store.recovery(&kim).await.unwrap(), Some(first.clone()));
    let second = RecoveryRecord {
        auth_key: vec![3; 32],
        sealed_bundle: vec![4; 40],
    };
    assert_eq!(
        store.set_recovery(&kim, second.clone(), vec![]).await,
        Err(StoreError::Conflict { position: 0 })
    );
    store
        .set_recovery(&kim, second.clone(), first.auth_key)
        .await
        .unwrap();
    assert_eq!(store.recovery(&kim).await.unwrap(), Some(second));
    assert_eq!(
        store
            .set_recovery(
                &name("nobody"),
                RecoveryRecord {
                    auth_key: vec![],
                    sealed_bundle: vec![]
                },
                vec![]
            )
            .await,
        Err(StoreError::UnknownUser)
    );
}

async fn archives_accept_only_progress<S: Store>(store: &S) {
    let (lea, max) = (name("lea"), name("max"));
    let (l1, m1) = (unique(22), unique(23));
    seed_account(store, &lea, l1).await;
    seed_account(store, &max, m1).await;
    let group = new_group(store, l1).await;
    for i in 1..=9 {
        store.append(app(group, l1, 0, i)).await.unwrap();
    }
    let segment = |from: u64, through: u64| ArchiveSegment {
        id: 0,
        group,
        from_seq: from,
        through_seq: through,
        key_generation: 1,
        ciphertext: vec![from as u8; 8],
    };
    let first = store
        .append_archive(&lea, DeviceId(l1), segment(0, 5), 1)
        .await
        .unwrap();
    assert_eq!(
        store
            .append_archive(&lea, DeviceId(l1), segment(0, 5), 2)
            .await,
        Err(StoreError::Conflict { position: 5 })
    );
    assert_eq!(
        store
            .append_archive(&lea, DeviceId(l1), segment(3, 4), 2)
            .await,
        Err(StoreError::Conflict { position: 5 })
    );
    // Overlap is fine as long as it reaches further.
    let second = store
        .append_archive(&lea, DeviceId(l1), segment(3, 9), 3)
        .await
        .unwrap();
    assert!(second > first);
    // Nothing is archived beyond the log's head.
    assert_eq!(
        store
            .append_archive(&lea, DeviceId(l1), segment(9, 10), 3)
            .await,
        Err(StoreError::BeyondHead)
    );
    // Only members archive a group.
    assert_eq!(
        store
            .append_archive(&max, DeviceId(m1), segment(0, 2), 3)
            .await,
        Err(StoreError::NotMember)
    );
    let all = store.read_archive(&lea, 0, 10).await.unwrap();
    assert_eq!(
        all.iter()
            .map(|s| (s.from_seq, s.through_seq))
            .collect::<Vec<_>>(),
        vec![(0, 5), (3, 9)]
    );
    assert_eq!(all[1].ciphertext, vec![3; 8]);
    assert_eq!(store.read_archive(&lea, first, 10).await.unwrap().len(), 1);
    assert!(store.read_archive(&max, 0, 10).await.unwrap().is_empty());
    let head = store
        .device_groups(DeviceId(l1), None, 1000)
        .await
        .unwrap()
        .into_iter()
        .find(|h| h.group == group)
        .expect("listed");
    assert_eq!(head.archived_seq, 9);
}

/// Polls futures concurrently without pulling in a futures crate.
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut outputs: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if outputs[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => outputs[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future completed"))
        .collect()
}

mod files;
mod groups;
