//! Conformance checks for who a commit can reach: the group list comes in pages in group-id
//! order, a commit cannot reach devices that are not members by naming them as removed, and
//! it adds a device only with a key package its committer's account claimed.

use chapar_types::DeviceId;

use super::{claimed_commit, commit, name, new_group, seed_account, unique};
use crate::*;

/// Runs every group-listing check.
pub async fn run_all<S: Store>(store: &S) {
    the_group_list_comes_in_pages(store).await;
    a_commit_removes_only_members(store).await;
    a_commit_adds_only_devices_its_account_claimed(store).await;
    revocation_proofs_are_kept_for_revoked_devices_once(store).await;
}

async fn revocation_proofs_are_kept_for_revoked_devices_once<S: Store>(store: &S) {
    let device = unique(46);
    seed_account(store, &name("rita"), device).await;
    store
        .set_revocation_proof(DeviceId(device), vec![1; 64])
        .await
        .unwrap();
    assert_eq!(
        revocation_proof(store, device).await,
        None,
        "an active device has no revocation"
    );
    store.revoke_device(DeviceId(device), 7_000).await.unwrap();
    store
        .set_revocation_proof(DeviceId(device), vec![2; 64])
        .await
        .unwrap();
    store
        .set_revocation_proof(DeviceId(device), vec![3; 64])
        .await
        .unwrap();
    assert_eq!(
        revocation_proof(store, device).await,
        Some(vec![2; 64]),
        "the first proof stays"
    );
}

async fn a_commit_adds_only_devices_its_account_claimed<S: Store>(store: &S) {
    let (adder, victim, other) = (unique(43), unique(44), unique(45));
    let victim_name = name("vera");
    seed_account(store, &name("adam"), adder).await;
    seed_account(store, &victim_name, victim).await;
    seed_account(store, &name("olga"), other).await;
    let group = new_group(store, adder).await;
    assert_eq!(
        store
            .append(commit(group, adder, 0, 0, vec![victim], vec![]))
            .await,
        Err(StoreError::Unclaimed(DeviceId(victim))),
        "no claim at all"
    );
    // Another account's claim is not the adder's.
    let theirs = claimed_commit(store, group, other, 0, 0, vec![victim], vec![]).await;
    let mut borrowed = commit(group, adder, 0, 0, vec![victim], vec![]);
    borrowed.kind = theirs.kind;
    assert_eq!(
        store.append(borrowed).await,
        Err(StoreError::Unclaimed(DeviceId(victim)))
    );
    let own = claimed_commit(store, group, adder, 0, 0, vec![victim], vec![]).await;
    let again = own.clone();
    store.append(own).await.expect("a claimed device is added");
    // A claim is used once: the same key package does not add the device to another group.
    let second = new_group(store, adder).await;
    let mut reused = again;
    reused.group = second;
    assert_eq!(
        store.append(reused).await,
        Err(StoreError::Unclaimed(DeviceId(victim)))
    );
}

async fn the_group_list_comes_in_pages<S: Store>(store: &S) {
    let device = unique(40);
    seed_account(store, &name("paula"), device).await;
    let mut groups = Vec::new();
    for _ in 0..5 {
        groups.push(new_group(store, device).await);
    }
    groups.sort();
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .device_groups(DeviceId(device), after, 2)
            .await
            .unwrap();
        assert!(page.len() <= 2, "a page holds at most its limit");
        let Some(last) = page.last() else { break };
        after = Some(last.group);
        listed.extend(page.iter().map(|h| h.group));
    }
    assert_eq!(listed, groups, "every group once, in group-id order");
}

async fn a_commit_removes_only_members<S: Store>(store: &S) {
    let (member, stranger) = (unique(41), unique(42));
    seed_account(store, &name("mira"), member).await;
    seed_account(store, &name("stan"), stranger).await;
    let group = new_group(store, member).await;
    let appended = store
        .append(commit(group, member, 0, 0, vec![], vec![stranger]))
        .await
        .unwrap();
    assert!(
        !appended.recipients.contains(&DeviceId(stranger)),
        "a stranger named as removed is not pushed to"
    );
    assert!(
        store
            .device_groups(DeviceId(stranger), None, 10)
            .await
            .unwrap()
            .is_empty(),
        "nor does it gain a group"
    );
}

async fn revocation_proof<S: Store>(store: &S, device: u64) -> Option<Vec<u8>> {
    store
        .device(DeviceId(device))
        .await
        .unwrap()
        .unwrap()
        .revocation_signature
}
