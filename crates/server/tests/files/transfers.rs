//! How many transfers run at once: a device past its own limit gets 429 `too_many_transfers`,
//! anyone past the server-wide limit 503 `unavailable`, both with `Retry-After`; requests that
//! move no body (HEAD, POST) are not transfers; slots come back when transfers end.

use std::time::Duration;

use chapar_server::FilesConfig;

use crate::harness::*;

/// Opens a PATCH that sends 10 of 1,000 announced bytes and then waits: a transfer in flight
/// until the returned stream is dropped.
async fn slow_patch(server: &TestServer, device: &Device) -> tokio::net::TcpStream {
    let path = create(server, device, 1_000).await;
    request_open(
        server,
        "PATCH",
        &path,
        &patch_headers(device, 0),
        1_000,
        &[7; 10],
    )
    .await
}

/// GETs `path` until it answers `status` (the slow PATCHes take their slots a moment after
/// their requests are sent); returns that response.
async fn get_until(server: &TestServer, device: &Device, path: &str, status: u16) -> Response {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(server, device, path, &[]).await;
        if r.status == status {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never {status}; last:\n{r:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_are_limited_per_device_and_server_wide() {
    let server = start_with(FilesConfig {
        transfers_in_flight_max: 3,
        transfers_per_device_max: 2,
        ..FilesConfig::default()
    })
    .await;
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let carol = register(&server, "carol").await;
    let data = pattern(1_000, 3);
    let blob = upload(&server, &carol, &data).await;

    let alice_slow = [
        slow_patch(&server, &alice).await,
        slow_patch(&server, &alice).await,
    ];
    let r = get_until(&server, &alice, &blob, 429).await;
    assert_eq!(r.error_code(), "too_many_transfers", "{r:?}");
    assert!(r.header("Retry-After").is_some(), "{r:?}");
    // A PATCH is a transfer too.
    let path = create(&server, &alice, 10).await;
    patch(&server, &alice, &path, 0, b"0123456789")
        .await
        .expect_error(429, "too_many_transfers");
    // Another device still has its own.
    assert_eq!(get(&server, &bob, &blob, &[]).await.expect(200).body, data);

    let bob_slow = slow_patch(&server, &bob).await;
    let r = get_until(&server, &carol, &blob, 503).await;
    assert_eq!(r.error_code(), "unavailable", "{r:?}");
    assert_eq!(r.header("Retry-After"), Some("1"), "{r:?}");
    // Requests that move no body are not transfers.
    head(&server, &carol, &blob).await.expect(200);
    create(&server, &carol, 10).await;

    drop(alice_slow);
    drop(bob_slow);
    let r = get_until(&server, &carol, &blob, 200).await;
    assert_eq!(r.body, data);
    assert_eq!(
        get(&server, &alice, &blob, &[]).await.expect(200).body,
        data
    );
    patch(&server, &alice, &path, 0, b"0123456789")
        .await
        .expect(204);
}
