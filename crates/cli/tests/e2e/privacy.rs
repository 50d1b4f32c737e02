//! The server never sees plaintext: after a scripted conversation full of marker strings, no
//! byte of the server's data directory (database, WAL, everything) and no line of its debug log
//! contains any marker. The conversation includes everything multi-device stores on the
//! server: a linked device with a marker name, the history archive, a read marker, the
//! recovery bundle (and the recovery key itself must not be there).

use crate::harness::{Server, files_under};

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn server_data_and_logs_never_contain_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let (alice, recovery_key) = server.register_with_key(dir.path(), "alice");
    let bob = server.register(dir.path(), "bob");
    let carol = server.register(dir.path(), "carol");

    let markers = [
        "MARKER_direct_text_7f3a",
        "MARKER_group_name_91bc",
        "MARKER_group_text_44de",
        "MARKER_edit_text_0c1d",
        "MARKER_reaction_e5f2",
        "MARKER_reply_text_b8a9",
    ];
    let first = alice.send("@bob", markers[0]);
    let group = alice
        .ok(&[
            "group", "create", markers[1], "--member", "@bob", "--member", "@carol",
        ])
        .trim()
        .to_owned();
    alice.send(&group, markers[2]);
    alice.ok(&["edit", "@bob", &first, markers[3]]);
    bob.sync();
    bob.ok(&["react", "@alice", &first, markers[4]]);
    bob.ok(&["send", &group, markers[5], "--reply-to", &first]);
    alice.sync();
    carol.sync();
    // A file whose content, name and caption are markers.
    let file_marker = "MARKER_file_content_7a7a";
    let file_name = "MARKER_file_name_3c3c.txt";
    let caption = "MARKER_caption_9e9e";
    let file = dir.path().join(file_name);
    std::fs::write(&file, file_marker.repeat(100_000)).unwrap();
    let sent = alice
        .ok(&[
            "send-file",
            "@bob",
            file.to_str().unwrap(),
            "--caption",
            caption,
        ])
        .trim()
        .to_owned();
    bob.sync();
    let received = dir.path().join("received.txt");
    bob.ok(&["download", &sent, "--out", received.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(&received).unwrap(),
        std::fs::read(&file).unwrap()
    );
    // A second device named with a marker; it restores the history from the archive.
    let device_name = "MARKER_device_name_5d6e";
    let laptop = server.link(dir.path(), device_name, &alice);
    alice.ok(&["read", "@bob"]);
    laptop.sync();
    // The conversation really happened, so the check below can fail.
    assert!(carol.texts(&group).contains(&markers[5].to_owned()));
    assert_eq!(alice.messages("@bob")[0]["text"], markers[3]);
    assert_eq!(laptop.messages("@bob")[0]["text"], markers[3]);
    let names: Vec<_> = alice
        .devices()
        .into_iter()
        .map(|d| d["name"].clone())
        .collect();
    assert!(names.contains(&device_name.into()), "{names:?}");

    // Stop the server cleanly so the WAL is checkpointed, then look at every byte it left.
    assert!(server.terminate(), "server did not shut down cleanly");
    let db = rusqlite::Connection::open(server.data.join("chapar.db")).unwrap();
    let count = |sql: &str| db.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    assert!(
        count("SELECT COUNT(*) FROM archive") > 0,
        "the archive was written"
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM accounts WHERE recovery_bundle IS NOT NULL"),
        3,
        "every account stored a recovery bundle"
    );
    assert!(count("SELECT COUNT(*) FROM devices WHERE length(sealed_name) > 0") >= 4);
    drop(db);
    let mut secrets: Vec<String> = markers.iter().map(|m| (*m).to_owned()).collect();
    secrets.push(device_name.to_owned());
    secrets.extend([file_marker, file_name, caption].map(str::to_owned));
    secrets.push(recovery_key.clone());
    secrets.push(recovery_key.replace('-', ""));
    let mut files = files_under(&server.data);
    files.push(server.log.clone());
    assert!(
        files.len() >= 2,
        "expected a database and a log, found {files:?}"
    );
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        for secret in &secrets {
            assert!(
                !contains(&bytes, secret.as_bytes()),
                "{secret} found in {}",
                file.display()
            );
        }
    }
    // And the markers are on the clients, so the search would have found them there.
    let client_files = files_under(&alice.profile);
    let found = client_files
        .iter()
        .any(|f| contains(&std::fs::read(f).unwrap(), markers[3].as_bytes()));
    assert!(found, "sanity: the client's own store holds the plaintext");
}
