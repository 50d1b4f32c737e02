//! The PostgreSQL store against the conformance suite, and what only this backend does:
//! retrying serialization failures, and appends from several nodes to one group. Each test
//! runs on a fresh database of its own ([`TestDatabase`]).

use std::sync::Arc;

use chapar_types::{DeviceId, GroupId, MessageId};

use super::test_database::TestDatabase;
use super::*;
use crate::conformance::seed_account;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_the_conformance_suite() {
    let Some(db) = TestDatabase::create("postgres_passes_the_conformance_suite").await else {
        return;
    };
    let store = PgStore::connect(&db.url).await.expect("connect");
    crate::conformance::run_all(&store).await;
    // Migrating again (a second node starting) changes nothing and fails nothing.
    let again = PgStore::connect(&db.url).await.expect("connect again");
    assert!(again.account("nobody").await.expect("read").is_none());
    drop((store, again));
    db.drop_database().await;
}

fn message(group: GroupId, sender: u64, id: u16) -> Append {
    let mut message_id = [0u8; 16];
    message_id[..2].copy_from_slice(&id.to_be_bytes());
    Append {
        group,
        sender: DeviceId(sender),
        epoch: 0,
        now_ms: 7,
        payload: vec![1; 32],
        kind: AppendKind::Application {
            message_id: MessageId(message_id),
            roster_version: u64::MAX,
        },
    }
}

async fn one_member_group(store: &PgStore, account: &str, device: u64, group: u8) -> GroupId {
    seed_account(store, account, device).await;
    let group = GroupId([group; 16]);
    store
        .create_group(group, DeviceId(device), 1)
        .await
        .expect("create group");
    group
}

/// Every sequence number from 1 to `head`, each once.
async fn assert_log_is_dense(store: &PgStore, group: GroupId, device: u64, head: u64) {
    let mut seqs = Vec::new();
    let mut after = 0;
    loop {
        let page = store
            .read_log(group, DeviceId(device), after, 500)
            .await
            .expect("read log");
        assert_eq!(page.head_seq, head);
        let Some(last) = page.entries.last() else {
            break;
        };
        after = last.seq;
        seqs.extend(page.entries.iter().map(|e| e.seq));
    }
    assert_eq!(seqs, (1..=head).collect::<Vec<_>>(), "no gaps, no repeats");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serialization_failures_are_retried_from_the_start() {
    let Some(db) = TestDatabase::create("serialization_failures_are_retried_from_the_start").await
    else {
        return;
    };
    let store = PgStore::connect(&db.url).await.expect("connect");
    let group = one_member_group(&store, "retry", 11, 3).await;

    // Each of these writes fails at its commit three times, after all its work, then commits.
    store.inject_conflicts(3);
    let first = store.append(message(group, 11, 1)).await.expect("append");
    assert_eq!((first.seq, first.duplicate), (1, false));
    assert_eq!(store.retries(), 3);
    store.inject_conflicts(3);
    seed_account(&store, "retry_two", 12).await;
    assert_eq!(store.retries(), 6);
    assert!(store.account("retry_two").await.expect("read").is_some());

    // Retried work is not done twice: the next append takes the next position, and a
    // retried send is still recognised.
    store.inject_conflicts(2);
    assert_eq!(
        store
            .append(message(group, 11, 2))
            .await
            .expect("append")
            .seq,
        2
    );
    let again = store.append(message(group, 11, 1)).await.expect("append");
    assert_eq!((again.seq, again.duplicate), (1, true));
    assert_log_is_dense(&store, group, 11, 2).await;

    // Past the limit the caller hears of it, and nothing was written.
    store.inject_conflicts(SERIALIZATION_ATTEMPTS_MAX);
    let refused = store.append(message(group, 11, 3)).await;
    assert!(
        matches!(refused, Err(StoreError::Backend(_))),
        "{refused:?}"
    );
    assert_log_is_dense(&store, group, 11, 2).await;
    drop(store);
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_appending_to_one_group_take_consecutive_positions() {
    let Some(db) =
        TestDatabase::create("two_nodes_appending_to_one_group_take_consecutive_positions").await
    else {
        return;
    };
    // Two stores on one database are two nodes: they share no local lock.
    let node_a = Arc::new(PgStore::connect(&db.url).await.expect("connect a"));
    let node_b = Arc::new(PgStore::connect(&db.url).await.expect("connect b"));
    let group = one_member_group(&node_a, "nodes", 21, 5).await;
    const PER_TASK: u16 = 15;
    let tasks: Vec<_> = (0..6u16)
        .map(|task| {
            let node = if task % 2 == 0 { &node_a } else { &node_b }.clone();
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..PER_TASK {
                    let appended = node
                        .append(message(group, 21, task * PER_TASK + i))
                        .await
                        .expect("append");
                    assert!(!appended.duplicate);
                    seqs.push(appended.seq);
                }
                seqs
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        let seqs = task.await.expect("joined");
        // Each writer's own appends are in the order it made them.
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        all.extend(seqs);
    }
    all.sort_unstable();
    let total = 6 * u64::from(PER_TASK);
    assert_eq!(all, (1..=total).collect::<Vec<_>>());
    assert_log_is_dense(&node_b, group, 21, total).await;
    // They queued on the group's lock instead of conflicting: no transaction ran twice.
    assert_eq!(node_a.retries() + node_b.retries(), 0);
    drop((node_a, node_b));
    db.drop_database().await;
}
