//! tus 1.0.0 against the real server: discovery, creation, offsets, appends, checksums,
//! termination, limits, and appends cut off mid-body.

use std::time::Duration;

use chapar_server::FilesConfig;

use crate::harness::*;

#[tokio::test]
async fn options_needs_no_token_and_announces_what_the_server_supports() {
    let server = start_with(FilesConfig {
        upload_bytes_max: 123_456,
        ..FilesConfig::default()
    })
    .await;
    for path in ["/v1/files", "/v1/files/00112233445566778899aabbccddeeff"] {
        let r = request(&server, "OPTIONS", path, &[], b"")
            .await
            .expect(204);
        assert_eq!(r.header("Tus-Version"), Some("1.0.0"), "{r:?}");
        assert_eq!(r.header("Tus-Resumable"), Some("1.0.0"), "{r:?}");
        assert_eq!(
            r.header("Tus-Extension"),
            Some("creation,termination,checksum,expiration")
        );
        assert_eq!(r.number("Tus-Max-Size"), 123_456);
        assert!(r.header("Tus-Checksum-Algorithm").unwrap().contains("sha1"));
        assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"));
        let methods = r.header("Access-Control-Allow-Methods").unwrap();
        for method in ["POST", "HEAD", "PATCH", "DELETE", "GET"] {
            assert!(methods.contains(method), "{method} not allowed:\n{r:?}");
        }
        let allowed = r.header("Access-Control-Allow-Headers").unwrap();
        for header in ["Authorization", "Upload-Checksum", "Upload-Offset", "Range"] {
            assert!(allowed.contains(header), "{header} not allowed:\n{r:?}");
        }
    }
}

#[tokio::test]
async fn create_head_patch_and_delete_answer_as_tus_says() {
    let server = start().await;
    let alice = register(&server, "alice").await;
    // A standard client may put the file name in Upload-Metadata; it must leave no trace.
    let marker = "MARKER_secret_file_name_3b9f.pdf";
    let mut headers = tus(&alice);
    headers.push(("Upload-Length", "10".into()));
    headers.push((
        "Upload-Metadata",
        format!(
            "filename {}",
            data_encoding::BASE64.encode(marker.as_bytes())
        ),
    ));
    let created = request(&server, "POST", "/v1/files", &headers, b"")
        .await
        .expect(201);
    let path = created.header("Location").unwrap().to_owned();
    assert!(
        path.starts_with("/v1/files/") && id_of(&path).len() == 32,
        "Location is /v1/files/<32 hex digits>:\n{created:?}"
    );
    assert_eq!(created.header("Tus-Resumable"), Some("1.0.0"));
    let expires = created.header("Upload-Expires").unwrap();
    assert!(
        httpdate::parse_http_date(expires).is_ok(),
        "Upload-Expires is an HTTP date: {expires}"
    );
    let exposed = created.header("Access-Control-Expose-Headers").unwrap();
    assert!(exposed.contains("Location") && exposed.contains("Upload-Offset"));

    // tuspy sends an empty Upload-Metadata header on creation.
    let mut empty = tus(&alice);
    empty.push(("Upload-Length", "1".into()));
    empty.push(("Upload-Metadata", String::new()));
    request(&server, "POST", "/v1/files", &empty, b"")
        .await
        .expect(201);

    let fresh = head(&server, &alice, &path).await.expect(200);
    assert_eq!(fresh.number("Upload-Offset"), 0);
    assert_eq!(fresh.number("Upload-Length"), 10);
    assert_eq!(fresh.header("Cache-Control"), Some("no-store"));
    assert!(fresh.header("Upload-Expires").is_some());

    let data = b"0123456789";
    let first = patch(&server, &alice, &path, 0, &data[..4])
        .await
        .expect(204);
    assert_eq!(first.number("Upload-Offset"), 4);
    assert!(first.header("Upload-Expires").is_some(), "{first:?}");
    patch(&server, &alice, &path, 0, &data[..4])
        .await
        .expect_error(409, "offset_mismatch");
    assert_eq!(
        head(&server, &alice, &path).await.number("Upload-Offset"),
        4
    );

    let mut wrong_type = patch_headers(&alice, 4);
    wrong_type[2] = ("Content-Type", "application/octet-stream".into());
    request(&server, "PATCH", &path, &wrong_type, b"45")
        .await
        .expect(415);
    let no_version: Vec<_> = patch_headers(&alice, 4)
        .into_iter()
        .filter(|(n, _)| *n != "Tus-Resumable")
        .collect();
    let r = request(&server, "PATCH", &path, &no_version, b"45")
        .await
        .expect_error(412, "unsupported_version");
    assert_eq!(r.header("Tus-Version"), Some("1.0.0"));
    patch(&server, &alice, &path, 4, b"4567890")
        .await
        .expect_error(413, "too_large");
    assert_eq!(
        head(&server, &alice, &path).await.number("Upload-Offset"),
        4
    );
    let no_offset: Vec<_> = patch_headers(&alice, 4)
        .into_iter()
        .filter(|(n, _)| *n != "Upload-Offset")
        .collect();
    request(&server, "PATCH", &path, &no_offset, b"45")
        .await
        .expect_error(400, "bad_request");

    let last = patch(&server, &alice, &path, 4, &data[4..])
        .await
        .expect(204);
    assert_eq!(last.number("Upload-Offset"), 10);
    assert_eq!(
        last.header("Upload-Expires"),
        None,
        "a complete blob does not expire like an upload"
    );
    let done = head(&server, &alice, &path).await.expect(200);
    assert_eq!(
        (done.number("Upload-Offset"), done.number("Upload-Length")),
        (10, 10)
    );
    // A repeated final empty PATCH is harmless.
    patch(&server, &alice, &path, 10, b"").await.expect(204);
    assert_eq!(
        get(&server, &alice, &path, &[]).await.expect(200).body,
        data
    );

    request(&server, "DELETE", &path, &tus(&alice), b"")
        .await
        .expect(204);
    head(&server, &alice, &path).await.expect(404);
    get(&server, &alice, &path, &[])
        .await
        .expect_error(404, "unknown_blob");
    request(&server, "DELETE", &path, &tus(&alice), b"")
        .await
        .expect_error(404, "unknown_blob");

    for file in files_under(&server.data) {
        let bytes = std::fs::read(&file).unwrap();
        for needle in [
            marker.as_bytes(),
            data_encoding::BASE64.encode(marker.as_bytes()).as_bytes(),
        ] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "Upload-Metadata was stored in {}",
                file.display()
            );
        }
    }
}

#[tokio::test]
async fn creation_refuses_what_it_does_not_support() {
    let server = start().await;
    let alice = register(&server, "alice").await;
    let mut deferred = tus(&alice);
    deferred.push(("Upload-Defer-Length", "1".into()));
    request(&server, "POST", "/v1/files", &deferred, b"")
        .await
        .expect_error(400, "bad_request");
    let mut concat = tus(&alice);
    concat.push(("Upload-Length", "5".into()));
    concat.push(("Upload-Concat", "partial".into()));
    request(&server, "POST", "/v1/files", &concat, b"")
        .await
        .expect_error(400, "bad_request");
    request(&server, "POST", "/v1/files", &tus(&alice), b"")
        .await
        .expect_error(400, "bad_request");
    let mut old = vec![alice.auth(), ("Tus-Resumable", "0.2.2".into())];
    old.push(("Upload-Length", "5".into()));
    request(&server, "POST", "/v1/files", &old, b"")
        .await
        .expect_error(412, "unsupported_version");
    // An empty upload is complete at once.
    let mut empty = tus(&alice);
    empty.push(("Upload-Length", "0".into()));
    let created = request(&server, "POST", "/v1/files", &empty, b"")
        .await
        .expect(201);
    let path = created.header("Location").unwrap();
    let r = get(&server, &alice, path, &[]).await.expect(200);
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn a_checksum_mismatch_commits_nothing() {
    let server = start().await;
    let alice = register(&server, "alice").await;
    let data = pattern(300_000, 1);
    let path = create(&server, &alice, data.len() as u64).await;

    let mut good = patch_headers(&alice, 0);
    good.push(sha1_checksum(&data[..100_000]));
    let r = request(&server, "PATCH", &path, &good, &data[..100_000])
        .await
        .expect(204);
    assert_eq!(r.number("Upload-Offset"), 100_000);

    let mut bad = patch_headers(&alice, 100_000);
    bad.push(sha1_checksum(&data[..100_000])); // the digest of other bytes
    let r = request(&server, "PATCH", &path, &bad, &data[100_000..200_000])
        .await
        .expect_error(460, "checksum_mismatch");
    assert_eq!(r.number("Upload-Offset"), 100_000, "nothing was committed");
    assert_eq!(
        head(&server, &alice, &path).await.number("Upload-Offset"),
        100_000
    );

    let mut unsupported = patch_headers(&alice, 100_000);
    unsupported.push(("Upload-Checksum", "md5 AAAAAAAAAAAAAAAAAAAAAA==".into()));
    request(
        &server,
        "PATCH",
        &path,
        &unsupported,
        &data[100_000..200_000],
    )
    .await
    .expect_error(400, "bad_request");
    let mut garbled = patch_headers(&alice, 100_000);
    garbled.push(("Upload-Checksum", "sha1 !!!".into()));
    request(&server, "PATCH", &path, &garbled, &data[100_000..200_000])
        .await
        .expect_error(400, "bad_request");

    // SHA-256 works too, and the rest of the upload arrives intact.
    let mut sha256 = patch_headers(&alice, 100_000);
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(&data[100_000..]);
    sha256.push((
        "Upload-Checksum",
        format!("sha256 {}", data_encoding::BASE64.encode(&digest)),
    ));
    request(&server, "PATCH", &path, &sha256, &data[100_000..])
        .await
        .expect(204);
    assert_eq!(
        get(&server, &alice, &path, &[]).await.expect(200).body,
        data
    );
}

#[tokio::test]
async fn a_patch_cut_mid_body_keeps_what_arrived_and_resumes() {
    let server = start().await;
    let alice = register(&server, "alice").await;
    let data = pattern(1_000, 2);
    let path = create(&server, &alice, 1_000).await;
    request_cut(
        &server,
        "PATCH",
        &path,
        &patch_headers(&alice, 0),
        1_000,
        &data[..400],
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the 400 bytes that arrived count",
        || {
            let (server, alice, path) = (&server, &alice, &path);
            async move { head(server, alice, path).await.number("Upload-Offset") == 400 }
        },
    )
    .await;
    let r = patch(&server, &alice, &path, 400, &data[400..])
        .await
        .expect(204);
    assert_eq!(r.number("Upload-Offset"), 1_000);
    assert_eq!(
        get(&server, &alice, &path, &[]).await.expect(200).body,
        data
    );
}

#[tokio::test]
async fn a_checksummed_patch_cut_mid_body_keeps_nothing() {
    let server = start().await;
    let alice = register(&server, "alice").await;
    let data = pattern(1_000, 3);
    let path = create(&server, &alice, 1_000).await;
    let mut headers = patch_headers(&alice, 0);
    headers.push(sha1_checksum(&data));
    request_cut(&server, "PATCH", &path, &headers, 1_000, &data[..400]).await;
    // The whole chunk at offset 0 must succeed once the cut request is done: had its 400 bytes
    // counted, this would be an offset mismatch.
    let mut status = 0;
    for _ in 0..200 {
        let r = request(&server, "PATCH", &path, &headers, &data).await;
        status = r.status;
        if r.status != 423 {
            let r = r.expect(204);
            assert_eq!(r.number("Upload-Offset"), 1_000);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 204, "the cut request never let go of the upload");
    assert_eq!(
        get(&server, &alice, &path, &[]).await.expect(200).body,
        data
    );
}

#[tokio::test]
async fn one_request_at_a_time_writes_to_an_upload() {
    let server = start().await;
    let alice = register(&server, "alice").await;
    let data = pattern(1_000, 9);
    let path = create(&server, &alice, 1_000).await;
    let slow = request_open(
        &server,
        "PATCH",
        &path,
        &patch_headers(&alice, 0),
        1_000,
        &data[..100],
    )
    .await;
    // Give the first request time to begin. A probe at the wrong offset changes nothing if it
    // gets in first anyway (409), so it cannot take the upload from the first request.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut busy = false;
    for _ in 0..100 {
        let r = patch(&server, &alice, &path, 1, &data[1..]).await;
        if r.status == 423 {
            assert_eq!(r.error_code(), "upload_busy", "{r:?}");
            busy = true;
            break;
        }
        assert_eq!(
            r.status, 409,
            "only busy or, before the first request began, a mismatch:\n{r:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        busy,
        "a second PATCH was never refused while the first was writing"
    );
    // Termination waits its turn too.
    request(&server, "DELETE", &path, &tus(&alice), b"")
        .await
        .expect_error(423, "upload_busy");
    drop(slow);
    eventually(Duration::from_secs(10), "the first request lets go", || {
        let (server, alice, path) = (&server, &alice, &path);
        async move { head(server, alice, path).await.number("Upload-Offset") == 100 }
    })
    .await;
    let mut done = false;
    for _ in 0..100 {
        let r = patch(&server, &alice, &path, 100, &data[100..]).await;
        if r.status == 204 {
            done = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(done, "the upload stayed busy after its request ended");
    assert_eq!(
        get(&server, &alice, &path, &[]).await.expect(200).body,
        data
    );
}

#[tokio::test]
async fn size_limit_and_quota_are_enforced_with_clear_codes() {
    let server = start_with(FilesConfig {
        upload_bytes_max: 10_000,
        quota_bytes_per_account: 25_000,
        ..FilesConfig::default()
    })
    .await;
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let mut too_big = tus(&alice);
    too_big.push(("Upload-Length", "10001".into()));
    let r = request(&server, "POST", "/v1/files", &too_big, b"")
        .await
        .expect_error(413, "too_large");
    assert_eq!(r.header("Content-Type"), Some("application/json"));

    let first = upload(&server, &alice, &pattern(10_000, 4)).await;
    let _unfinished = create(&server, &alice, 10_000).await;
    let mut over = tus(&alice);
    over.push(("Upload-Length", "6000".into()));
    request(&server, "POST", "/v1/files", &over, b"")
        .await
        .expect_error(403, "quota_exceeded");
    // Quotas are per account.
    create(&server, &bob, 10_000).await;
    // Deleting a blob gives its room back.
    request(&server, "DELETE", &first, &tus(&alice), b"")
        .await
        .expect(204);
    request(&server, "POST", "/v1/files", &over, b"")
        .await
        .expect(201);
}

#[tokio::test]
async fn tiny_files_are_not_free_and_unfinished_uploads_are_capped() {
    use chapar_types::limits::{
        FILE_QUOTA_CHARGE_MIN_BYTES as MIN, FILE_UNFINISHED_UPLOADS_PER_ACCOUNT_MAX as CAP,
    };
    let server = start_with(FilesConfig {
        quota_bytes_per_account: 3 * MIN,
        ..FilesConfig::default()
    })
    .await;
    let alice = register(&server, "alice").await;
    // Empty and one-byte files each count as the minimum charge.
    for data in [&b""[..], b"x", b"yz"] {
        upload(&server, &alice, data).await;
    }
    let mut empty = tus(&alice);
    empty.push(("Upload-Length", "0".into()));
    let r = request(&server, "POST", "/v1/files", &empty, b"")
        .await
        .expect_error(403, "quota_exceeded");
    assert!(
        String::from_utf8_lossy(&r.body).contains(&MIN.to_string()),
        "the message names the minimum charge:\n{r:?}"
    );

    // On a server with room, the count of unfinished uploads is what stops a hoarder.
    let server = start().await;
    let bob = register(&server, "bob").await;
    let mut paths = Vec::new();
    for _ in 0..CAP {
        paths.push(create(&server, &bob, 10).await);
    }
    let mut one_more = tus(&bob);
    one_more.push(("Upload-Length", "10".into()));
    request(&server, "POST", "/v1/files", &one_more, b"")
        .await
        .expect_error(403, "too_many_uploads");
    // Finishing one makes room again.
    patch(&server, &bob, &paths[0], 0, b"0123456789")
        .await
        .expect(204);
    request(&server, "POST", "/v1/files", &one_more, b"")
        .await
        .expect(201);
}

#[tokio::test]
async fn a_full_disk_answers_507_and_keeps_the_upload_consistent() {
    let server = start().await;
    let alice = register(&server, "alice").await;
    let path = create(&server, &alice, 100).await;
    let partial = server.data.join("files/partial").join(id_of(&path));
    std::fs::remove_file(&partial).unwrap();
    // /dev/full fails every write with ENOSPC.
    std::os::unix::fs::symlink("/dev/full", &partial).unwrap();
    let r = patch(&server, &alice, &path, 0, &pattern(100, 5))
        .await
        .expect_error(507, "storage_full");
    assert_eq!(r.number("Upload-Offset"), 0);
    assert_eq!(
        head(&server, &alice, &path).await.number("Upload-Offset"),
        0
    );
    // Room again: the upload resumes where it was.
    std::fs::remove_file(&partial).unwrap();
    patch(&server, &alice, &path, 0, &pattern(100, 5))
        .await
        .expect(204);
    assert_eq!(
        get(&server, &alice, &path, &[]).await.expect(200).body,
        pattern(100, 5)
    );
}

#[tokio::test]
async fn method_override_reaches_patch_and_delete() {
    let server = start().await;
    let alice = register(&server, "alice").await;
    let path = create(&server, &alice, 3).await;
    let mut headers = patch_headers(&alice, 0);
    headers.push(("X-HTTP-Method-Override", "PATCH".into()));
    let r = request(&server, "POST", &path, &headers, b"abc")
        .await
        .expect(204);
    assert_eq!(r.number("Upload-Offset"), 3);
    let mut delete = tus(&alice);
    delete.push(("X-HTTP-Method-Override", "DELETE".into()));
    request(&server, "POST", &path, &delete, b"")
        .await
        .expect(204);
    head(&server, &alice, &path).await.expect(404);
    request(&server, "POST", &path, &tus(&alice), b"")
        .await
        .expect(405);
}

#[tokio::test]
async fn metrics_count_file_traffic() {
    let server = start().await;
    let alice = register(&server, "alice").await;
    let path = upload(&server, &alice, &pattern(5_000, 6)).await;
    get(&server, &alice, &path, &[("Range", "bytes=0-999".into())])
        .await
        .expect(206);
    let text = crate::harness::metrics(&server).await;
    for line in [
        "chapar_file_bytes_uploaded_total 5000",
        "chapar_file_bytes_downloaded_total 1000",
        "chapar_file_uploads_completed_total 1",
        "chapar_file_blobs_deleted_total 0",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
}

#[tokio::test]
async fn bytes_past_the_committed_offset_are_cut_back_on_the_next_append() {
    let server = start().await;
    let alice = register(&server, "alice").await;
    let data = pattern(1_000, 12);
    let path = create(&server, &alice, 1_000).await;
    patch(&server, &alice, &path, 0, &data[..300])
        .await
        .expect(204);
    // What a crash between writing a chunk and committing it leaves: bytes on disk that the
    // store never counted.
    let partial = server.data.join("files/partial").join(id_of(&path));
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&partial)
        .unwrap();
    std::io::Write::write_all(&mut file, &[0xEE; 500]).unwrap();
    drop(file);
    assert_eq!(
        head(&server, &alice, &path).await.number("Upload-Offset"),
        300
    );
    patch(&server, &alice, &path, 300, &data[300..600])
        .await
        .expect(204);
    assert_eq!(std::fs::metadata(&partial).unwrap().len(), 600);
    patch(&server, &alice, &path, 600, &data[600..])
        .await
        .expect(204);
    assert_eq!(
        get(&server, &alice, &path, &[]).await.expect(200).body,
        data
    );
}

#[tokio::test]
async fn an_upload_committed_but_not_finished_is_finished_on_the_next_request() {
    let server = start().await;
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    // Two uploads whose every byte is committed but that were never finished: one for the
    // owner's HEAD to find, one for a recipient's GET.
    let mut stuck = Vec::new();
    for seed in [13, 14] {
        let data = pattern(64, seed);
        let path = create(&server, &alice, 64).await;
        // A plain file where the blob's directory should be: finishing fails after every byte
        // is committed, as a crash between the two would leave it. (Nothing is complete on
        // this server yet, so the directory does not exist.)
        let blocker = server.data.join("files/complete").join(&id_of(&path)[..2]);
        std::fs::write(&blocker, b"in the way").unwrap();
        patch(&server, &alice, &path, 0, &data)
            .await
            .expect_error(500, "internal");
        std::fs::remove_file(&blocker).unwrap();
        stuck.push((path, data));
    }
    let (by_owner, by_recipient) = (&stuck[0], &stuck[1]);
    let r = head(&server, &alice, &by_owner.0).await.expect(200);
    assert_eq!(
        (r.number("Upload-Offset"), r.number("Upload-Length")),
        (64, 64)
    );
    assert_eq!(
        get(&server, &alice, &by_owner.0, &[])
            .await
            .expect(200)
            .body,
        by_owner.1
    );
    // A recipient's GET finishes it too: it need not wait for the owner to come back.
    assert_eq!(
        get(&server, &bob, &by_recipient.0, &[])
            .await
            .expect(200)
            .body,
        by_recipient.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_patch_racing_heads_and_gets_fails_none_of_them() {
    let server = start().await;
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    for round in 0..16u8 {
        let data = pattern(2_000, round);
        let path = create(&server, &alice, 2_000).await;
        patch(&server, &alice, &path, 0, &data[..1_999])
            .await
            .expect(204);
        let (last, owner_head, owner_get, bob_head, bob_get) = tokio::join!(
            patch(&server, &alice, &path, 1_999, &data[1_999..]),
            head(&server, &alice, &path),
            get(&server, &alice, &path, &[]),
            head(&server, &bob, &path),
            get(&server, &bob, &path, &[]),
        );
        last.expect(204);
        owner_head.expect(200);
        for r in [owner_get, bob_head, bob_get] {
            // Before the last chunk is committed the blob is not there yet (404); after, it
            // is whole. Never a 500.
            assert!(
                r.status == 404 || (r.status == 200 && (r.body.is_empty() || r.body == data)),
                "round {round}:\n{r:?}"
            );
        }
        assert_eq!(get(&server, &bob, &path, &[]).await.expect(200).body, data);
    }
}
