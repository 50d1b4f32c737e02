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
    accounts::run_all(store).await;
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

mod accounts;
mod files;
mod groups;
