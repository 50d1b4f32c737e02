//! Conformance checks for what happens to accounts over time: devices added (within the
//! limit) and revoked (their memberships ended, never added back), link rendezvous, recovery
//! records, and the accounts' history archives (only progress is accepted).

use chapar_types::{DeviceId, GroupId, MessageId};

use super::{app, claimed_commit, commit, name, new_device, new_group, seed_account, unique};
use crate::*;

/// Runs every account check.
pub async fn run_all<S: Store>(store: &S) {
    devices_are_added_limited_and_revoked(store).await;
    links_expire_and_keep_one_approval(store).await;
    recovery_records_change_only_as_expected(store).await;
    archives_accept_only_progress(store).await;
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
