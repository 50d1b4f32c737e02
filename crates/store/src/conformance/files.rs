//! Conformance checks for files: upload bookkeeping, quotas (with a minimum charge per blob
//! and a cap on unfinished uploads), blob references kept with messages, and what garbage
//! collection may and may not forget.

use chapar_types::{BlobId, DeviceId};

use super::{app, name, new_group, seed_account, unique};
use crate::*;

/// Runs every file check.
pub async fn run_all<S: Store>(store: &S) {
    uploads_commit_only_forward_and_within_quota(store).await;
    tiny_uploads_cost_the_minimum_and_unfinished_ones_are_capped(store).await;
    messages_reference_only_complete_blobs(store).await;
    a_delete_drops_only_the_deleted_entrys_own_references(store).await;
    garbage_is_unreferenced_too_long_or_expired(store).await;
    uploads_are_deleted_only_by_their_owner_and_unreferenced(store).await;
}

fn blob() -> BlobId {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&unique(9).to_be_bytes());
    id[8..].copy_from_slice(&unique(10).to_be_bytes());
    BlobId(id)
}

fn new_upload(username: &str, device: u64, length: u64, now_ms: u64) -> NewUpload {
    NewUpload {
        id: blob(),
        username: username.into(),
        device: DeviceId(device),
        length,
        now_ms,
        expires_ms: now_ms + 1_000,
    }
}

/// A complete blob of `username`, finished at `now_ms`.
async fn complete_blob<S: Store>(store: &S, username: &str, device: u64, now_ms: u64) -> BlobId {
    let upload = new_upload(username, device, 10, now_ms);
    let id = upload.id;
    assert_eq!(
        store.create_upload(upload, u64::MAX).await.unwrap(),
        UploadCreated::Created
    );
    assert!(matches!(
        store.commit_upload(id, 0, 10, now_ms, now_ms + 1_000).await,
        Ok(UploadCommitted::Committed(_))
    ));
    let record = store.complete_upload(id, now_ms).await.unwrap().unwrap();
    assert!(record.is_complete());
    id
}

async fn record<S: Store>(store: &S, id: BlobId) -> UploadRecord {
    store.upload(id).await.unwrap().expect("upload exists")
}

async fn uploads_commit_only_forward_and_within_quota<S: Store>(store: &S) {
    let owner = name("frank");
    let d = unique(11);
    seed_account(store, &owner, d).await;
    let first = new_upload(&owner, d, 6_000, 100);
    let id = first.id;
    assert_eq!(
        store.create_upload(first.clone(), 10_500).await.unwrap(),
        UploadCreated::Created
    );
    assert_eq!(
        record(store, id).await,
        first.record(),
        "a new upload is stored as NewUpload::record says"
    );
    assert_eq!(
        store.create_upload(first, u64::MAX).await,
        Err(StoreError::Conflict { position: 0 }),
        "an id is used once"
    );
    assert_eq!(
        store
            .create_upload(new_upload(&owner, d, 4_501, 100), 10_500)
            .await
            .unwrap(),
        UploadCreated::QuotaExceeded { used_bytes: 6_000 },
        "an unfinished upload counts with its declared length"
    );
    assert_eq!(store.file_usage(&owner).await.unwrap(), 6_000);
    assert_eq!(
        store
            .create_upload(new_upload(&owner, d, 4_500, 100), 10_500)
            .await
            .unwrap(),
        UploadCreated::Created,
        "up to the quota exactly"
    );
    assert_eq!(store.file_usage(&owner).await.unwrap(), 10_500);

    let fresh = record(store, id).await;
    assert_eq!(
        (fresh.committed, fresh.length, fresh.username.as_str()),
        (0, 6_000, owner.as_str())
    );
    assert_eq!(
        (fresh.device, fresh.created_ms, fresh.expires_ms),
        (DeviceId(d), 100, 1_100)
    );
    assert_eq!(
        (fresh.completed_ms, fresh.references),
        (None, 0),
        "new uploads are neither complete nor referenced"
    );

    let Ok(UploadCommitted::Committed(after)) = store.commit_upload(id, 0, 2_500, 200, 5_000).await
    else {
        panic!("commit from the current offset")
    };
    assert_eq!(
        (after.committed, after.updated_ms, after.expires_ms),
        (2_500, 200, 5_000)
    );
    assert!(
        matches!(
            store.commit_upload(id, 0, 3_000, 300, 5_000).await,
            Ok(UploadCommitted::OffsetMoved(r)) if r.committed == 2_500
        ),
        "a commit from an old offset changes nothing"
    );
    assert!(
        store
            .commit_upload(id, 2_500, 6_001, 300, 5_000)
            .await
            .is_err(),
        "no commit past the declared length"
    );
    assert_eq!(
        store.commit_upload(blob(), 0, 1, 300, 5_000).await,
        Ok(UploadCommitted::NotFound)
    );
    assert_eq!(
        store
            .complete_upload(id, 300)
            .await
            .unwrap()
            .unwrap()
            .completed_ms,
        None,
        "an upload completes only once every byte is committed"
    );
    assert!(matches!(
        store.commit_upload(id, 2_500, 6_000, 400, 5_000).await,
        Ok(UploadCommitted::Committed(_))
    ));
    let done = store.complete_upload(id, 450).await.unwrap().unwrap();
    assert_eq!(
        (done.completed_ms, done.unreferenced_ms),
        (Some(450), Some(450))
    );
    let again = store.complete_upload(id, 999).await.unwrap().unwrap();
    assert_eq!(
        again.completed_ms,
        Some(450),
        "completing twice keeps the first time"
    );
    assert!(
        matches!(
            store.commit_upload(id, 6_000, 6_000, 500, 5_000).await,
            Ok(UploadCommitted::OffsetMoved(_))
        ),
        "a complete blob takes no more commits"
    );
    assert_eq!(
        store.file_usage(&owner).await.unwrap(),
        10_500,
        "a complete blob counts too"
    );
}

async fn tiny_uploads_cost_the_minimum_and_unfinished_ones_are_capped<S: Store>(store: &S) {
    use chapar_types::limits::{
        FILE_QUOTA_CHARGE_MIN_BYTES as MIN, FILE_UNFINISHED_UPLOADS_PER_ACCOUNT_MAX as CAP,
    };
    let owner = name("mona");
    let d = unique(18);
    seed_account(store, &owner, d).await;
    for length in [0, 1, MIN] {
        assert_eq!(
            store
                .create_upload(new_upload(&owner, d, length, 100), 3 * MIN)
                .await
                .unwrap(),
            UploadCreated::Created
        );
    }
    assert_eq!(store.file_usage(&owner).await.unwrap(), 3 * MIN);
    assert_eq!(
        store
            .create_upload(new_upload(&owner, d, 0, 100), 3 * MIN)
            .await
            .unwrap(),
        UploadCreated::QuotaExceeded {
            used_bytes: 3 * MIN
        },
        "an empty upload is not free"
    );

    let hoarder = name("nils");
    let h = unique(19);
    seed_account(store, &hoarder, h).await;
    let mut ids = Vec::new();
    for _ in 0..CAP {
        let upload = new_upload(&hoarder, h, 1, 100);
        ids.push(upload.id);
        assert_eq!(
            store.create_upload(upload, u64::MAX).await.unwrap(),
            UploadCreated::Created
        );
    }
    assert_eq!(
        store
            .create_upload(new_upload(&hoarder, h, 1, 100), u64::MAX)
            .await
            .unwrap(),
        UploadCreated::TooManyUnfinished { unfinished: CAP }
    );
    // Finishing one makes room (complete blobs count against the quota only).
    assert!(matches!(
        store.commit_upload(ids[0], 0, 1, 200, 5_000).await,
        Ok(UploadCommitted::Committed(_))
    ));
    store.complete_upload(ids[0], 200).await.unwrap();
    assert_eq!(
        store
            .create_upload(new_upload(&hoarder, h, 1, 100), u64::MAX)
            .await
            .unwrap(),
        UploadCreated::Created
    );
    // So does terminating one.
    assert_eq!(
        store.delete_upload(ids[1], &hoarder).await.unwrap(),
        UploadDeleted::Deleted
    );
    assert_eq!(
        store
            .create_upload(new_upload(&hoarder, h, 1, 100), u64::MAX)
            .await
            .unwrap(),
        UploadCreated::Created
    );
}

async fn messages_reference_only_complete_blobs<S: Store>(store: &S) {
    let owner = name("gina");
    let d = unique(12);
    seed_account(store, &owner, d).await;
    let group = new_group(store, d).await;
    let unfinished = new_upload(&owner, d, 10, 100);
    let unfinished_id = unfinished.id;
    store.create_upload(unfinished, u64::MAX).await.unwrap();
    let unknown = blob();
    let refs = |add: Vec<BlobId>| BlobRefs {
        add,
        ..BlobRefs::default()
    };

    assert_eq!(
        store
            .append_referencing(app(group, d, 0, 1), refs(vec![unknown]))
            .await,
        Err(StoreError::UnknownBlob(unknown))
    );
    assert_eq!(
        store
            .append_referencing(app(group, d, 0, 1), refs(vec![unfinished_id]))
            .await,
        Err(StoreError::UnknownBlob(unfinished_id)),
        "an unfinished upload cannot be sent"
    );
    let complete = complete_blob(store, &owner, d, 100).await;
    let sent = store
        .append_referencing(app(group, d, 0, 1), refs(vec![complete, complete]))
        .await
        .unwrap();
    assert_eq!(
        sent.seq, 1,
        "refused messages left no trace in the log (or the writer's view of it)"
    );
    let referenced = record(store, complete).await;
    assert_eq!(
        (referenced.references, referenced.unreferenced_ms),
        (1, None)
    );
    let retry = store
        .append_referencing(app(group, d, 0, 1), refs(vec![complete]))
        .await
        .unwrap();
    assert!(retry.duplicate);
    assert_eq!(
        record(store, complete).await.references,
        1,
        "a retried message adds no reference"
    );
    // Forwarding: another message, the same blob.
    store
        .append_referencing(app(group, d, 0, 2), refs(vec![complete]))
        .await
        .unwrap();
    assert_eq!(record(store, complete).await.references, 2);
    assert_eq!(store.append(app(group, d, 0, 3)).await.unwrap().seq, 3);
}

async fn a_delete_drops_only_the_deleted_entrys_own_references<S: Store>(store: &S) {
    let (alice, bob) = (name("hana"), name("ivan"));
    let (a, b) = (unique(13), unique(14));
    seed_account(store, &alice, a).await;
    seed_account(store, &bob, b).await;
    let group = new_group(store, a).await;
    let other_group = new_group(store, a).await;
    store
        .append(super::claimed_commit(store, group, a, 0, 0, vec![b], vec![]).await)
        .await
        .unwrap();
    let id = complete_blob(store, &alice, a, 100).await;
    let carry = || BlobRefs {
        add: vec![id],
        ..BlobRefs::default()
    };
    let delete = |deleted_seq| BlobRefs {
        drop: vec![id],
        deleted_seq,
        ..BlobRefs::default()
    };
    // Alice sends the file twice in one chat and once in another; Bob forwards it.
    let first = store
        .append_referencing(app(group, a, 1, 1), carry())
        .await
        .unwrap()
        .seq;
    let second = store
        .append_referencing(app(group, a, 1, 2), carry())
        .await
        .unwrap()
        .seq;
    let elsewhere = store
        .append_referencing(app(other_group, a, 0, 3), carry())
        .await
        .unwrap()
        .seq;
    let forwarded = store
        .append_referencing(app(group, b, 1, 4), carry())
        .await
        .unwrap()
        .seq;
    assert_ne!(first, elsewhere, "the check below needs distinct positions");
    assert_eq!(record(store, id).await.references, 4);

    let references = |id| async move { record(store, id).await.references };
    store
        .append_referencing(app(group, b, 1, 5), delete(first))
        .await
        .unwrap();
    assert_eq!(
        references(id).await,
        4,
        "another account cannot drop alice's reference"
    );
    store
        .append_referencing(app(group, a, 1, 6), delete(0))
        .await
        .unwrap();
    assert_eq!(
        references(id).await,
        4,
        "without deleted_seq (an old client) nothing is dropped"
    );
    store
        .append_referencing(app(group, a, 1, 7), delete(forwarded))
        .await
        .unwrap();
    assert_eq!(
        references(id).await,
        4,
        "alice cannot drop the reference bob's forward made"
    );
    store
        .append_referencing(app(other_group, a, 0, 8), delete(first))
        .await
        .unwrap();
    assert_eq!(
        references(id).await,
        4,
        "a position in one group means nothing in another"
    );
    store
        .append_referencing(app(group, a, 1, 9), delete(first))
        .await
        .unwrap();
    let after = record(store, id).await;
    assert_eq!(
        (after.references, after.unreferenced_ms),
        (3, None),
        "deleting one of two messages of a chat that carry a blob keeps it for the other"
    );
    store
        .append_referencing(app(group, a, 1, 10), delete(second))
        .await
        .unwrap();
    store
        .append_referencing(app(other_group, a, 0, 11), delete(elsewhere))
        .await
        .unwrap();
    assert_eq!(references(id).await, 1, "only bob's forward is left");
    let mut last = app(group, b, 1, 12);
    last.now_ms = 777;
    store
        .append_referencing(last, delete(forwarded))
        .await
        .unwrap();
    let dropped = record(store, id).await;
    assert_eq!(
        (dropped.references, dropped.unreferenced_ms),
        (0, Some(777)),
        "the last reference goes, and the grace period starts"
    );
}

async fn garbage_is_unreferenced_too_long_or_expired<S: Store>(store: &S) {
    let owner = name("jana");
    let d = unique(15);
    seed_account(store, &owner, d).await;
    let group = new_group(store, d).await;
    // Far in the future, so that no other check's blobs are this old or expired.
    let base = 4_000_000_000_000;
    let referenced = complete_blob(store, &owner, d, base).await;
    store
        .append_referencing(
            app(group, d, 0, 1),
            BlobRefs {
                add: vec![referenced],
                ..BlobRefs::default()
            },
        )
        .await
        .unwrap();
    let old = complete_blob(store, &owner, d, base).await;
    let young = complete_blob(store, &owner, d, base + 5_000).await;
    let mut expiring = new_upload(&owner, d, 10, base);
    expiring.expires_ms = base + 2_000;
    let expired = expiring.id;
    store.create_upload(expiring, u64::MAX).await.unwrap();
    let mut lasting = new_upload(&owner, d, 10, base);
    lasting.expires_ms = base + 1_000_000;
    let unexpired = lasting.id;
    store.create_upload(lasting, u64::MAX).await.unwrap();

    let mut collected = Vec::new();
    loop {
        let batch = store
            .collect_garbage(base + 3_000, base + 1_000, 100)
            .await
            .unwrap();
        let done = batch.len() < 100;
        collected.extend(batch);
        if done {
            break;
        }
    }
    let find = |id| collected.iter().find(|g: &&Garbage| g.id == id).copied();
    assert_eq!(
        find(old).map(|g| g.complete),
        Some(true),
        "unreferenced past the grace period"
    );
    assert_eq!(
        find(expired).map(|g| g.complete),
        Some(false),
        "unfinished and expired"
    );
    assert_eq!(find(referenced), None, "referenced blobs stay");
    assert_eq!(find(young), None, "unreferenced within the grace period");
    assert_eq!(find(unexpired), None, "unfinished but not expired");
    assert!(store.upload(old).await.unwrap().is_none());
    assert!(store.upload(expired).await.unwrap().is_none());
    assert_eq!(
        store
            .known_blobs(vec![old, referenced, young, expired, unexpired])
            .await
            .unwrap(),
        vec![referenced, young, unexpired]
    );
    assert!(
        store
            .collect_garbage(base + 3_000, base + 1_000, 0)
            .await
            .unwrap()
            .is_empty(),
        "a limit of 0 collects nothing"
    );
}

async fn uploads_are_deleted_only_by_their_owner_and_unreferenced<S: Store>(store: &S) {
    let (owner, other) = (name("kian"), name("lena"));
    let d = unique(16);
    seed_account(store, &owner, d).await;
    seed_account(store, &other, unique(17)).await;
    let group = new_group(store, d).await;
    let unfinished = new_upload(&owner, d, 10, 100);
    let unfinished_id = unfinished.id;
    store.create_upload(unfinished, u64::MAX).await.unwrap();
    assert_eq!(
        store.delete_upload(unfinished_id, &other).await.unwrap(),
        UploadDeleted::NotFound,
        "not another account's to delete"
    );
    assert_eq!(
        store.delete_upload(unfinished_id, &owner).await.unwrap(),
        UploadDeleted::Deleted
    );
    assert!(store.upload(unfinished_id).await.unwrap().is_none());
    assert_eq!(
        store.delete_upload(unfinished_id, &owner).await.unwrap(),
        UploadDeleted::NotFound
    );
    let sent = complete_blob(store, &owner, d, 100).await;
    store
        .append_referencing(
            app(group, d, 0, 1),
            BlobRefs {
                add: vec![sent],
                ..BlobRefs::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        store.delete_upload(sent, &owner).await.unwrap(),
        UploadDeleted::Referenced
    );
    assert_eq!(
        store.file_usage(&owner).await.unwrap(),
        chapar_types::limits::FILE_QUOTA_CHARGE_MIN_BYTES,
        "a 10-byte blob counts as the minimum charge"
    );
}
