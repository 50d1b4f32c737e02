//! Who may do what: bearer tokens from the WebSocket, their expiry and key, revoked devices,
//! and other accounts' uploads.

use chapar_server::service::files::TokenKey;
use chapar_types::DeviceId;
use chapar_wire::v1::{self, client_frame::Request};

use crate::harness::*;

#[tokio::test]
async fn requests_need_a_valid_unexpired_token_from_this_server() {
    let server = start().await;
    let alice = register(&server, "alice").await;
    let (_, expires_ms) = file_token(&alice.conn).await;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let day_ms = 24 * 3600 * 1000;
    assert!(
        expires_ms > now_ms + day_ms - 60_000 && expires_ms <= now_ms + day_ms + 60_000,
        "tokens live 24 h"
    );

    let mut headers = vec![("Tus-Resumable", "1.0.0".to_owned())];
    headers.push(("Upload-Length", "5".into()));
    let r = request(&server, "POST", "/v1/files", &headers, b"")
        .await
        .expect_error(401, "unauthenticated");
    assert_eq!(r.header("WWW-Authenticate"), Some("Bearer"));

    let with = |token: String| {
        let mut h = headers.clone();
        h.push(("Authorization", format!("Bearer {token}")));
        h
    };
    request(&server, "POST", "/v1/files", &with("garbage".into()), b"")
        .await
        .expect_error(401, "unauthenticated");
    // A token minted under another key.
    let foreign = TokenKey::generate().mint(alice.id, u64::MAX);
    request(&server, "POST", "/v1/files", &with(foreign), b"")
        .await
        .expect_error(401, "unauthenticated");
    // A token minted under this server's key, but expired.
    let key = TokenKey::load_or_create(&server.data.join("token.key")).unwrap();
    let expired = key.mint(alice.id, now_ms - 1);
    let r = request(&server, "POST", "/v1/files", &with(expired), b"")
        .await
        .expect_error(401, "unauthenticated");
    assert!(
        String::from_utf8_lossy(&r.body).contains("expired"),
        "{r:?}"
    );
    // The server's key signs for devices that do not exist only in tests like this one.
    let ghost = key.mint(DeviceId(12345), u64::MAX);
    request(&server, "POST", "/v1/files", &with(ghost), b"")
        .await
        .expect_error(401, "unauthenticated");
    // The key file is private to the server.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(server.data.join("token.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "token.key is readable by others");

    let valid = key.mint(alice.id, now_ms + 60_000);
    request(&server, "POST", "/v1/files", &with(valid), b"")
        .await
        .expect(201);
    // The scheme name is case-insensitive.
    let mut lower = headers.clone();
    lower.push(("Authorization", format!("bearer {}", alice.token)));
    request(&server, "POST", "/v1/files", &lower, b"")
        .await
        .expect(201);
}

#[tokio::test]
async fn a_revoked_device_is_refused_at_once() {
    let server = start().await;
    let alice = register(&server, "alice").await;
    let laptop = add_device(&server, &alice).await;
    let path = upload(&server, &alice, b"shared").await;
    get(&server, &laptop, &path, &[]).await.expect(200);
    alice
        .conn
        .request(Request::RevokeDevice(v1::RevokeDevice {
            device_id: laptop.id.0,
            account_signature: chapar_crypto::identity::sign_revocation(
                &alice.account_key,
                &chapar_types::Username::parse("alice").unwrap(),
                laptop.id,
            ),
        }))
        .await
        .unwrap();
    get(&server, &laptop, &path, &[])
        .await
        .expect_error(403, "device_revoked");
    let mut headers = tus(&laptop);
    headers.push(("Upload-Length", "5".into()));
    request(&server, "POST", "/v1/files", &headers, b"")
        .await
        .expect_error(403, "device_revoked");
    get(&server, &alice, &path, &[]).await.expect(200);
}

#[tokio::test]
async fn uploads_belong_to_their_account_but_blobs_are_readable_by_id() {
    let server = start().await;
    let alice = register(&server, "alice").await;
    let mallory = register(&server, "mallory").await;
    let laptop = add_device(&server, &alice).await;
    let unfinished = create(&server, &alice, 10).await;
    patch(&server, &alice, &unfinished, 0, b"12345")
        .await
        .expect(204);
    head(&server, &mallory, &unfinished).await.expect(404);
    patch(&server, &mallory, &unfinished, 5, b"67890")
        .await
        .expect_error(404, "unknown_blob");
    request(&server, "DELETE", &unfinished, &tus(&mallory), b"")
        .await
        .expect_error(404, "unknown_blob");
    get(&server, &mallory, &unfinished, &[])
        .await
        .expect_error(404, "unknown_blob");
    // Another device of the same account may resume it.
    let r = head(&server, &laptop, &unfinished).await.expect(200);
    assert_eq!(r.number("Upload-Offset"), 5);
    patch(&server, &laptop, &unfinished, 5, b"67890")
        .await
        .expect(204);
    // Once complete, anyone with the id may read it (the id is the capability).
    let r = get(&server, &mallory, &unfinished, &[]).await.expect(200);
    assert_eq!(r.body, b"1234567890");
    request(&server, "DELETE", &unfinished, &tus(&mallory), b"")
        .await
        .expect_error(404, "unknown_blob");
}
