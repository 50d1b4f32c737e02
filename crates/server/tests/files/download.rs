//! Ranged downloads: whole, partial (206), suffix and open ranges, unsatisfiable (416), and
//! bytes served exactly as stored.

use crate::harness::*;

#[tokio::test]
async fn ranges_are_served_as_rfc_9110_says() {
    let server = start().await;
    let alice = register(&server, "alice").await;
    let data = pattern(1_000, 7);
    let path = upload(&server, &alice, &data).await;

    let whole = get(&server, &alice, &path, &[]).await.expect(200);
    assert_eq!(whole.body, data);
    assert_eq!(whole.number("Content-Length"), 1_000);
    assert_eq!(whole.header("Accept-Ranges"), Some("bytes"));
    assert_eq!(
        whole.header("Content-Type"),
        Some("application/octet-stream")
    );
    assert_eq!(whole.header("Access-Control-Allow-Origin"), Some("*"));

    let cases: [(&str, std::ops::Range<usize>); 5] = [
        ("bytes=0-99", 0..100),
        ("bytes=900-", 900..1_000),
        ("bytes=-10", 990..1_000),
        ("bytes=500-5000", 500..1_000),
        ("bytes=999-999", 999..1_000),
    ];
    for (range, expected) in cases {
        let r = get(&server, &alice, &path, &[("Range", range.into())])
            .await
            .expect(206);
        assert_eq!(r.body, &data[expected.clone()], "{range}");
        assert_eq!(
            r.header("Content-Range"),
            Some(format!("bytes {}-{}/1000", expected.start, expected.end - 1).as_str()),
            "{range}"
        );
        assert_eq!(r.number("Content-Length"), expected.len() as u64);
    }

    let r = get(&server, &alice, &path, &[("Range", "bytes=1000-".into())])
        .await
        .expect(416);
    assert_eq!(r.header("Content-Range"), Some("bytes */1000"));
    get(&server, &alice, &path, &[("Range", "bytes=-0".into())])
        .await
        .expect(416);
    // Several ranges at once are not supported: the whole blob comes back, as RFC 9110 allows.
    let r = get(&server, &alice, &path, &[("Range", "bytes=0-1,5-6".into())])
        .await
        .expect(200);
    assert_eq!(r.body, data);

    let unfinished = create(&server, &alice, 10).await;
    get(&server, &alice, &unfinished, &[])
        .await
        .expect_error(404, "unknown_blob");
    get(
        &server,
        &alice,
        "/v1/files/ffffffffffffffffffffffffffffffff",
        &[],
    )
    .await
    .expect_error(404, "unknown_blob");
    get(&server, &alice, "/v1/files/not-an-id", &[])
        .await
        .expect_error(404, "unknown_blob");
    // HEAD on a complete blob tells its size.
    let r = head(&server, &alice, &path).await.expect(200);
    assert_eq!(r.number("Upload-Length"), 1_000);
}

#[tokio::test]
async fn a_flipped_byte_on_disk_is_served_as_stored() {
    let server = start().await;
    let alice = register(&server, "alice").await;
    let data = pattern(70_000, 8);
    let path = upload(&server, &alice, &data).await;
    let id = id_of(&path);
    let stored = server.data.join("files/complete").join(&id[..2]).join(id);
    let mut bytes = std::fs::read(&stored).unwrap();
    assert_eq!(bytes, data, "the blob is stored as uploaded");
    bytes[54_321] ^= 0x40;
    std::fs::write(&stored, &bytes).unwrap();
    let served = get(&server, &alice, &path, &[]).await.expect(200).body;
    assert_eq!(
        served, bytes,
        "the server serves what it has; detecting the damage is the client's job"
    );
    assert_ne!(served, data);
}

#[tokio::test]
async fn a_get_whose_bytes_went_meanwhile_is_a_404() {
    let server = start().await;
    let alice = register(&server, "alice").await;
    let path = upload(&server, &alice, &pattern(100, 9)).await;
    // What a DELETE or garbage collection between the GET's check and its read leaves: a
    // record whose bytes are gone.
    let id = id_of(&path);
    let bytes = server.data.join("files/complete").join(&id[..2]).join(id);
    std::fs::remove_file(bytes).unwrap();
    get(&server, &alice, &path, &[])
        .await
        .expect_error(404, "unknown_blob");
}
