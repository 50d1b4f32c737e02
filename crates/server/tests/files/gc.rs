//! Garbage collection on a server with short periods: referenced blobs stay, unreferenced ones
//! go after the grace period, unfinished uploads after their expiry, orphaned bytes at the
//! next sweep; a delete drops only the deleted message's references, and only its own
//! account's.

use std::time::Duration;

use chapar_server::FilesConfig;
use chapar_types::ErrorCode;
use chapar_wire::v1::{self, client_frame::Request, response::Result as Reply};
use rand::RngCore;

use crate::harness::*;

const GRACE: Duration = Duration::from_millis(1_500);
const INTERVAL: Duration = Duration::from_millis(200);

fn blob_bytes(path: &str) -> Vec<u8> {
    hex(id_of(path))
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn message(group: &[u8], epoch: u64, id: u8, add: Vec<Vec<u8>>) -> Request {
    Request::SendMessage(v1::SendMessage {
        group_id: group.to_vec(),
        epoch,
        message_id: vec![id; 16],
        ciphertext: vec![0xCC; 40],
        roster_version: u64::MAX,
        blob_ids: add,
        ..Default::default()
    })
}

/// A delete-for-everyone of the entry at `deleted_seq` (0: as a client that predates the
/// field sends it) that carried `blob`.
fn delete(group: &[u8], epoch: u64, id: u8, blob: Vec<u8>, deleted_seq: u64) -> Request {
    Request::SendMessage(v1::SendMessage {
        group_id: group.to_vec(),
        epoch,
        message_id: vec![id; 16],
        ciphertext: vec![0xDD; 40],
        roster_version: u64::MAX,
        unreferenced_blob_ids: vec![blob],
        deleted_seq,
        ..Default::default()
    })
}

/// Sends `request`; the log position it was appended at.
async fn appended(device: &Device, request: Request) -> u64 {
    match device.conn.request(request).await.unwrap() {
        Reply::Appended(a) => a.seq,
        other => panic!("expected Appended, got {other:?}"),
    }
}

async fn gone(server: &TestServer, device: &Device, path: &str) -> bool {
    head(server, device, path).await.status == 404
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_keeps_referenced_blobs_and_forgets_the_rest() {
    let server = start_with(FilesConfig {
        unreferenced_grace: GRACE,
        upload_expiry: GRACE,
        gc_interval: INTERVAL,
        ..FilesConfig::default()
    })
    .await;
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let mut group = vec![0u8; 16];
    rand::thread_rng().fill_bytes(&mut group);
    alice
        .conn
        .request(Request::CreateGroup(v1::CreateGroup {
            group_id: group.clone(),
        }))
        .await
        .unwrap();
    let claimed = claim(&alice, "bob").await;
    alice
        .conn
        .request(Request::SubmitCommit(v1::SubmitCommit {
            group_id: group.clone(),
            epoch: 0,
            seen_seq: 0,
            commit: vec![0xC0; 10],
            welcome: vec![0xEE; 10],
            added_devices: vec![bob.id.0],
            removed_devices: vec![],
            added_key_packages: vec![claimed],
        }))
        .await
        .unwrap();

    let kept = upload(&server, &alice, b"sent in a message").await;
    let dropped = upload(&server, &alice, b"never sent").await;
    let unfinished = create(&server, &alice, 100).await;
    assert_eq!(
        code(
            alice
                .conn
                .request(message(&group, 1, 1, vec![blob_bytes(&unfinished)]))
                .await
        ),
        ErrorCode::UnknownBlob,
        "an unfinished upload cannot be sent"
    );
    assert_eq!(
        code(
            alice
                .conn
                .request(message(&group, 1, 1, vec![vec![7; 16]]))
                .await
        ),
        ErrorCode::UnknownBlob
    );
    assert_eq!(
        code(
            alice
                .conn
                .request(message(&group, 1, 1, vec![vec![7; 3]]))
                .await
        ),
        ErrorCode::BadRequest
    );
    assert_eq!(
        code(
            alice
                .conn
                .request(message(&group, 1, 1, vec![vec![7; 16]; 33]))
                .await
        ),
        ErrorCode::TooLarge
    );
    let sent = appended(&alice, message(&group, 1, 1, vec![blob_bytes(&kept)])).await;
    // Bytes with no record at all, as a crash between forgetting and deleting leaves them.
    let orphan = server
        .data
        .join("files/complete/ab/ab00000000000000000000000000000f");
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, b"orphan").unwrap();
    // A stray file where only directories belong: not ours to delete, and no reason to stop.
    let stray = server.data.join("files/complete/README");
    std::fs::write(&stray, b"not a blob").unwrap();

    eventually(GRACE * 6, "the unreferenced blob goes", || {
        gone(&server, &alice, &dropped)
    })
    .await;
    eventually(GRACE * 6, "the expired upload goes", || {
        gone(&server, &alice, &unfinished)
    })
    .await;
    eventually(GRACE * 6, "the orphan goes", || async { !orphan.exists() }).await;
    let r = get(&server, &bob, &kept, &[]).await.expect(200);
    assert_eq!(r.body, b"sent in a message");
    let mut remaining: Vec<String> = files_under(&server.data.join("files"))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    remaining.sort();
    let mut expected = vec!["README".to_owned(), id_of(&kept).to_owned()];
    expected.sort();
    assert_eq!(
        remaining, expected,
        "only the referenced blob's bytes (and the stray file) are left"
    );

    // Bob deleting alice's message "for everyone" cannot drop alice's reference.
    appended(&bob, delete(&group, 1, 2, blob_bytes(&kept), sent)).await;
    // The same file sent twice in the chat: deleting one message keeps it for the other.
    let again = appended(&alice, message(&group, 1, 3, vec![blob_bytes(&kept)])).await;
    appended(&alice, delete(&group, 1, 4, blob_bytes(&kept), sent)).await;
    // A client that predates deleted_seq cannot say which message went: nothing is dropped.
    appended(&alice, delete(&group, 1, 5, blob_bytes(&kept), 0)).await;
    tokio::time::sleep(GRACE + INTERVAL * 3).await;
    get(&server, &bob, &kept, &[]).await.expect(200);
    // Alice deleting the last message that carries it does; it goes after the grace period.
    appended(&alice, delete(&group, 1, 6, blob_bytes(&kept), again)).await;
    eventually(
        GRACE * 6,
        "the blob whose last message was deleted goes",
        || gone(&server, &alice, &kept),
    )
    .await;
    let text = crate::harness::metrics(&server).await;
    assert!(
        text.contains("chapar_file_blobs_deleted_total 4"),
        "two unreferenced blobs, one expired upload, one orphan:\n{text}"
    );
}
