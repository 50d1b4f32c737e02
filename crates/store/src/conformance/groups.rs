//! Conformance checks for what a device is told about its groups: the group list comes in
//! pages in group-id order, and a commit cannot reach devices that are not members by naming
//! them as removed.

use chapar_types::DeviceId;

use super::{commit, name, new_group, seed_account, unique};
use crate::*;

/// Runs every group-listing check.
pub async fn run_all<S: Store>(store: &S) {
    the_group_list_comes_in_pages(store).await;
    a_commit_removes_only_members(store).await;
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
