//! How many transfers run at once: a device or an account past its own limit gets 429
//! `too_many_transfers`, anyone past the server-wide limit 503 `unavailable`, both with
//! `Retry-After`; requests that move no body (HEAD, POST) are not transfers; slots come back
//! when transfers end, and a download nobody reads ends at its idle timeout.

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

/// Waits until the server runs `n` transfers: a slot is taken a moment after its request is
/// sent and given back a moment after its response is read, so a test that counts slots
/// must let them settle first.
async fn running_settles_at(server: &TestServer, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let want = format!("\nchapar_file_transfers_running {n}\n");
    loop {
        let text = metrics(server).await;
        if text.contains(&want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never {n} transfers running:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
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

    running_settles_at(&server, 0).await;
    let alice_slow = [
        slow_patch(&server, &alice).await,
        slow_patch(&server, &alice).await,
    ];
    running_settles_at(&server, 2).await;
    let r = get(&server, &alice, &blob, &[]).await;
    assert_eq!(r.error_code(), "too_many_transfers", "{r:?}");
    assert!(r.header("Retry-After").is_some(), "{r:?}");
    // A PATCH is a transfer too.
    let path = create(&server, &alice, 10).await;
    patch(&server, &alice, &path, 0, b"0123456789")
        .await
        .expect_error(429, "too_many_transfers");
    // Another device still has its own.
    assert_eq!(get(&server, &bob, &blob, &[]).await.expect(200).body, data);

    // Bob's download must have given its slot back, or his slow PATCH would be the one refused.
    running_settles_at(&server, 2).await;
    let bob_slow = slow_patch(&server, &bob).await;
    running_settles_at(&server, 3).await;
    let r = get(&server, &carol, &blob, &[]).await;
    assert_eq!(r.error_code(), "unavailable", "{r:?}");
    assert_eq!(r.header("Retry-After"), Some("1"), "{r:?}");
    // Requests that move no body are not transfers.
    head(&server, &carol, &blob).await.expect(200);
    create(&server, &carol, 10).await;

    drop(alice_slow);
    drop(bob_slow);
    running_settles_at(&server, 0).await;
    let r = get(&server, &carol, &blob, &[]).await.expect(200);
    assert_eq!(r.body, data);
    assert_eq!(
        get(&server, &alice, &blob, &[]).await.expect(200).body,
        data
    );
    patch(&server, &alice, &path, 0, b"0123456789")
        .await
        .expect(204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_devices_of_one_account_share_its_transfers() {
    let server = start_with(FilesConfig {
        transfers_in_flight_max: 10,
        transfers_per_account_max: 2,
        transfers_per_device_max: 2,
        ..FilesConfig::default()
    })
    .await;
    let phone = register(&server, "alice").await;
    let laptop = add_device(&server, &phone).await;
    let bob = register(&server, "bob").await;
    let data = pattern(1_000, 4);
    let blob = upload(&server, &bob, &data).await;
    let _slow = [
        slow_patch(&server, &phone).await,
        slow_patch(&server, &laptop).await,
    ];
    // The phone runs one of its two, but the account runs both of its own.
    let r = get_until(&server, &phone, &blob, 429).await;
    assert_eq!(r.error_code(), "too_many_transfers", "{r:?}");
    assert!(
        String::from_utf8_lossy(&r.body).contains("this account"),
        "{r:?}"
    );
    assert_eq!(get(&server, &bob, &blob, &[]).await.expect(200).body, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_nobody_reads_is_cut_off_and_gives_its_slot_back() {
    let server = start_with(FilesConfig {
        transfers_per_device_max: 1,
        download_idle_timeout: Duration::from_millis(300),
        ..FilesConfig::default()
    })
    .await;
    let alice = register(&server, "alice").await;
    // More than the socket buffers on both sides hold, so the server must wait for reads.
    let data = pattern(24 << 20, 5);
    let blob = upload(&server, &alice, &data).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(server.addr).await.unwrap();
    let head = format!(
        "GET {blob} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
        server.addr, alice.token
    );
    tokio::io::AsyncWriteExt::write_all(&mut stalled, head.as_bytes())
        .await
        .unwrap();
    // Its response has begun, so it holds the device's one slot...
    let mut status = [0u8; 12];
    tokio::io::AsyncReadExt::read_exact(&mut stalled, &mut status)
        .await
        .unwrap();
    assert_eq!(&status, b"HTTP/1.1 200");
    let r = get(&server, &alice, &blob, &[]).await;
    assert_eq!(r.error_code(), "too_many_transfers", "{r:?}");
    // ...until the idle timeout cuts it off: the next download runs and is whole.
    let r = get_until(&server, &alice, &blob, 200).await;
    assert!(r.body == data, "the download after is whole");
    let text = metrics(&server).await;
    assert!(
        text.contains("chapar_limit_hits_total{limit=\"download_idle_timeout\"} 1"),
        "{text}"
    );
    drop(stalled);
}
