//! Files: a gibibyte crosses end to end with its digest checked, surviving an upload killed at
//! random points and a download killed midway; a chunk damaged on the server's disk is caught
//! and reported; photos carry thumbnails; forwarding and stickers re-use what was uploaded.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::harness::{BIN, Server, User, files_under};

/// Writes a file of `size` bytes in which every MiB differs (so a chunk in the wrong place
/// shows), and returns its SHA-256.
fn make_file(path: &Path, size: u64) -> Vec<u8> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut digest = Sha256::new();
    let mut block = vec![0u8; 1 << 20];
    let mut written = 0u64;
    let mut index = 0u64;
    while written < size {
        for (i, byte) in block.iter_mut().enumerate() {
            *byte = (i as u64 ^ index.wrapping_mul(0x9E37_79B9)) as u8;
        }
        block[..8].copy_from_slice(&index.to_be_bytes());
        let take = (size - written).min(block.len() as u64) as usize;
        file.write_all(&block[..take]).unwrap();
        digest.update(&block[..take]);
        written += take as u64;
        index += 1;
    }
    file.flush().unwrap();
    digest.finalize().to_vec()
}

fn digest_of(path: &Path) -> Vec<u8> {
    let mut file = std::fs::File::open(path).unwrap();
    let mut digest = Sha256::new();
    std::io::copy(&mut file, &mut digest).unwrap();
    digest.finalize().to_vec()
}

/// Every blob file the server holds (completed ones).
fn blobs(server: &Server) -> Vec<PathBuf> {
    files_under(&server.data.join("files").join("complete"))
}

/// Runs `chapar` as `user` in the background and kills it once `after` has passed, or once it
/// printed `lines` progress lines on stderr. Returns whether it was killed (rather than done).
fn run_and_kill(user: &User, args: &[&str], after: Duration) -> bool {
    let mut child = Command::new(BIN)
        .arg("--profile")
        .arg(&user.profile)
        .args(args)
        .env_remove("CHAPAR_PROFILE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    // Drain stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in BufReader::new(stderr).lines() {});
    let deadline = Instant::now() + after;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill(); // SIGKILL: nothing is cleaned up.
    let _ = child.wait();
    true
}

/// A small random-looking number from the clock, for kill times that differ run to run.
fn jitter_ms(max: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    nanos % max
}

#[test]
fn a_gibibyte_crosses_resuming_after_kills_and_keeps_its_digest() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let alice = server.register(dir.path(), "alice");
    let bob = server.register(dir.path(), "bob");
    alice.send("@bob", "a big one is coming");
    let source = dir.path().join("big.bin");
    let expected = make_file(&source, 1 << 30);
    let path = source.to_str().unwrap();

    // Kill the upload at three random points; each run resumes where the server has it.
    let mut kills = 0;
    for _ in 0..3 {
        let after = Duration::from_millis(300 + jitter_ms(1500));
        if run_and_kill(
            &alice,
            &["send-file", "@bob", path, "--caption", "big"],
            after,
        ) {
            kills += 1;
        }
    }
    let id = alice
        .ok(&["send-file", "@bob", path, "--caption", "big"])
        .trim()
        .to_owned();
    assert!(
        kills > 0,
        "the upload finished before any kill; the test proved nothing"
    );
    assert_eq!(
        blobs(&server).len(),
        1,
        "one upload, however often it resumed"
    );

    bob.sync();
    let message = bob
        .messages("@alice")
        .into_iter()
        .find(|m| m["id"] == id.as_str())
        .expect("bob has the file message");
    assert_eq!(message["file"]["size"], 1u64 << 30);
    assert_eq!(message["file"]["name"], "big.bin");
    assert_eq!(message["file"]["kind"], "file");
    assert_eq!(message["text"], "big");

    // Kill the download once midway too, then finish it and check every byte.
    let out = dir.path().join("received.bin");
    let out_str = out.to_str().unwrap();
    let killed = run_and_kill(
        &bob,
        &["download", &id, "--out", out_str],
        Duration::from_millis(400 + jitter_ms(600)),
    );
    if killed {
        assert!(
            !out.exists(),
            "an unfinished download is not where the file goes"
        );
    }
    let printed = bob.ok(&["download", &id, "--out", out_str]);
    assert_eq!(printed.trim(), out_str);
    assert_eq!(
        digest_of(&out),
        expected,
        "the downloaded file is the sent one"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty(), "partial files left: {leftovers:?}");
}

#[test]
fn a_chunk_damaged_on_the_server_is_reported_not_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let alice = server.register(dir.path(), "alice");
    let bob = server.register(dir.path(), "bob");
    alice.send("@bob", "hi");
    let source = dir.path().join("report.pdf");
    make_file(&source, 3 * (1 << 20) + 12_345);
    let id = alice
        .ok(&["send-file", "@bob", source.to_str().unwrap()])
        .trim()
        .to_owned();
    // Flip one byte in the second chunk of the stored ciphertext.
    let stored = blobs(&server);
    assert_eq!(stored.len(), 1);
    let mut bytes = std::fs::read(&stored[0]).unwrap();
    bytes[(1 << 20) + 5_000] ^= 0x01;
    std::fs::write(&stored[0], &bytes).unwrap();

    bob.sync();
    let out = dir.path().join("report-copy.pdf");
    let err = bob.fails(&["download", &id, "--out", out.to_str().unwrap()]);
    assert!(
        err.contains("chunk 1") && err.contains("does not verify"),
        "{err}"
    );
    assert!(!out.exists(), "nothing unverified is handed over");
}

#[test]
fn photos_carry_thumbnails_and_forwarding_uploads_nothing_again() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let alice = server.register(dir.path(), "alice");
    let bob = server.register(dir.path(), "bob");
    let carol = server.register(dir.path(), "carol");
    alice.send("@bob", "look");
    // A small PNG, written by hand: 2x1 pixels, red and blue.
    let png = dir.path().join("tiny.png");
    std::fs::write(&png, tiny_png()).unwrap();
    let id = alice
        .ok(&[
            "send-file",
            "@bob",
            png.to_str().unwrap(),
            "--caption",
            "the view",
        ])
        .trim()
        .to_owned();
    bob.sync();
    let photo = bob
        .messages("@alice")
        .into_iter()
        .find(|m| m["id"] == id.as_str())
        .unwrap();
    assert_eq!(photo["file"]["kind"], "photo");
    assert_eq!(photo["file"]["thumbnail"], true);
    assert_eq!(
        (
            photo["file"]["width"].as_u64(),
            photo["file"]["height"].as_u64()
        ),
        (Some(2), Some(1))
    );

    // Bob forwards it to carol: a new message, the same ciphertext.
    let before = blobs(&server).len();
    let forwarded = bob.ok(&["forward", &id, "@carol"]).trim().to_owned();
    assert_eq!(blobs(&server).len(), before, "nothing was uploaded again");
    carol.sync();
    let out = dir.path().join("from-bob.png");
    carol.ok(&["download", &forwarded, "--out", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), tiny_png());

    // A voice note says what it is.
    let voice = dir.path().join("note.ogg");
    make_file(&voice, 10_000);
    let id = alice
        .ok(&[
            "send-file",
            "@bob",
            voice.to_str().unwrap(),
            "--as",
            "voice",
        ])
        .trim()
        .to_owned();
    bob.sync();
    let note = bob
        .messages("@alice")
        .into_iter()
        .find(|m| m["id"] == id.as_str())
        .unwrap();
    assert_eq!(note["file"]["kind"], "voice");
    let err = alice.fails(&["send-file", "@bob", voice.to_str().unwrap(), "--as", "gif"]);
    assert!(err.contains("--as takes"), "{err}");
}

#[test]
fn sticker_packs_are_shared_installed_and_sent_without_uploading() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let alice = server.register(dir.path(), "alice");
    let bob = server.register(dir.path(), "bob");
    alice.send("@bob", "stickers!");
    let first = dir.path().join("cat.png");
    let second = dir.path().join("dog.png");
    std::fs::write(&first, tiny_png()).unwrap();
    std::fs::write(&second, tiny_png()).unwrap();
    let pack = alice
        .ok(&[
            "sticker",
            "create",
            "pets",
            &format!("{}=🐱", first.display()),
            &format!("{}=🐶", second.display()),
        ])
        .trim()
        .to_owned();
    let uploaded = blobs(&server).len();
    assert_eq!(uploaded, 2);
    let shared = alice
        .ok(&["sticker", "share", "@bob", &pack])
        .trim()
        .to_owned();
    bob.sync();
    let installed = bob.ok(&["sticker", "install", &shared]).trim().to_owned();
    assert_eq!(installed, pack);
    assert!(bob.ok(&["sticker", "list"]).contains("pets\t🐱 🐶"));
    bob.ok(&["sticker", "send", "@alice", &pack, "1"]);
    assert_eq!(
        blobs(&server).len(),
        uploaded,
        "sending a sticker uploads nothing"
    );
    alice.sync();
    let last = alice.messages("@bob").pop().unwrap();
    assert_eq!(last["file"]["kind"], "sticker");
    assert_eq!(last["file"]["name"], "dog.png");
}

#[test]
fn files_at_chunk_and_request_boundaries_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let alice = server.register(dir.path(), "alice");
    let bob = server.register(dir.path(), "bob");
    alice.send("@bob", "sizes");
    const MIB: u64 = 1 << 20;
    // Empty, one byte, around one chunk, and around one request of eight chunks.
    for size in [0, 1, MIB - 1, MIB, MIB + 1, 8 * MIB, 8 * MIB + 1] {
        let source = dir.path().join(format!("size-{size}.bin"));
        let expected = make_file(&source, size);
        let id = alice
            .ok(&["send-file", "@bob", source.to_str().unwrap()])
            .trim()
            .to_owned();
        bob.sync();
        let out = dir.path().join(format!("got-{size}.bin"));
        bob.ok(&["download", &id, "--out", out.to_str().unwrap()]);
        assert_eq!(digest_of(&out), expected, "size {size}");
    }
}

#[test]
fn downloads_never_overwrite_and_names_from_senders_stay_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let alice = server.register(dir.path(), "alice");
    let bob = server.register(dir.path(), "bob");
    alice.send("@bob", "names");
    let source = dir.path().join("notes.txt");
    let expected = make_file(&source, 5_000);
    let id = alice
        .ok(&["send-file", "@bob", source.to_str().unwrap()])
        .trim()
        .to_owned();
    bob.sync();
    // Into a directory: the sender's name, then the next free one; nothing is replaced.
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let inbox_arg = inbox.to_str().unwrap();
    let first = bob.ok(&["download", &id, "--out", inbox_arg]);
    let second = bob.ok(&["download", &id, "--out", inbox_arg]);
    assert_eq!(first.trim(), inbox.join("notes.txt").to_str().unwrap());
    assert_eq!(second.trim(), inbox.join("notes (1).txt").to_str().unwrap());
    assert_eq!(digest_of(&inbox.join("notes (1).txt")), expected);
    // An existing file named explicitly is refused, and left as it was.
    let mine = dir.path().join("mine.txt");
    std::fs::write(&mine, b"my own file").unwrap();
    let err = bob.fails(&["download", &id, "--out", mine.to_str().unwrap()]);
    assert!(err.contains("exists already"), "{err}");
    assert_eq!(std::fs::read(&mine).unwrap(), b"my own file");
}

#[test]
fn the_size_limit_and_the_quota_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        "127.0.0.1:0",
        &[
            "--file-max-bytes",
            "1500000",
            "--file-quota-bytes",
            "2500000",
        ],
    );
    let alice = server.register(dir.path(), "alice");
    server.register(dir.path(), "bob");
    alice.send("@bob", "files with limits");
    let big = dir.path().join("too-big.bin");
    make_file(&big, 2_000_000);
    let err = alice.fails(&["send-file", "@bob", big.to_str().unwrap()]);
    assert!(err.contains("too_large"), "{err}");
    // Two files of a megabyte fit in the quota; the third does not.
    for n in 0..2 {
        let file = dir.path().join(format!("ok-{n}.bin"));
        make_file(&file, 1_000_000);
        alice.ok(&["send-file", "@bob", file.to_str().unwrap()]);
    }
    let third = dir.path().join("one-too-many.bin");
    make_file(&third, 1_000_000);
    let err = alice.fails(&["send-file", "@bob", third.to_str().unwrap()]);
    assert!(err.contains("quota_exceeded"), "{err}");
}

#[test]
fn a_queued_message_the_server_refuses_for_good_does_not_block_the_device() {
    use prost::Message as _;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let alice = server.register(dir.path(), "alice");
    let bob = server.register(dir.path(), "bob");
    alice.send("@bob", "before");
    // A file message naming a blob the server never had sits in alice's outbox (as after a
    // crash, or a forward of a file that is gone).
    let db = rusqlite::Connection::open(alice.profile.join("profile.db")).unwrap();
    let group: Vec<u8> = db
        .query_row(
            "SELECT group_id FROM chats WHERE kind = 'direct'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let body = chapar_wire::content::AppMessage {
        message_id: vec![0x42; 16],
        sent_at_ms: 1,
        body: Some(chapar_wire::content::app_message::Body::File(
            chapar_wire::content::File {
                blob_id: vec![0x99; 16],
                key: vec![1; 32],
                chunk_bytes: 1 << 20,
                ..Default::default()
            },
        )),
    }
    .encode_to_vec();
    db.execute(
        "INSERT INTO outbox (group_id, message_id, body, created_ms) VALUES (?1, ?2, ?3, 0)",
        rusqlite::params![group, vec![0x42u8; 16], body],
    )
    .unwrap();
    drop(db);
    let out = alice.run(&["sync"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused and dropped"));
    alice.send("@bob", "after");
    bob.sync();
    assert_eq!(bob.texts("@alice"), ["before", "after"]);
}

#[test]
fn a_file_changed_between_attempts_is_uploaded_afresh_not_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let alice = server.register(dir.path(), "alice");
    let bob = server.register(dir.path(), "bob");
    alice.send("@bob", "versions");
    let path = dir.path().join("draft.bin");
    make_file(&path, 256 << 20);
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
    let path_arg = path.to_str().unwrap();
    let mut killed = false;
    for attempt in 0..10 {
        // Kill early enough that part of the file is on the server, not all of it.
        let after = Duration::from_millis(150 + 100 * attempt);
        killed = run_and_kill(&alice, &["send-file", "@bob", path_arg], after);
        let partial = std::fs::read_dir(server.data.join("files").join("partial"))
            .map(|d| d.count())
            .unwrap_or(0);
        if killed && partial > 0 {
            break;
        }
    }
    assert!(
        killed,
        "the upload always finished before the kill; nothing was tested"
    );
    // Same size, same modification time, other bytes: what `cp -p` of another file does.
    let mut bytes = std::fs::read(&path).unwrap();
    for byte in bytes.iter_mut().take(64 << 20) {
        *byte = byte.wrapping_add(1);
    }
    std::fs::write(&path, &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    let expected = digest_of(&path);
    let id = alice.ok(&["send-file", "@bob", path_arg]).trim().to_owned();
    bob.sync();
    let out = dir.path().join("received.bin");
    bob.ok(&["download", &id, "--out", out.to_str().unwrap()]);
    assert_eq!(digest_of(&out), expected, "the new content arrived whole");
}

/// A valid 2x1 PNG: one red and one blue pixel.
pub fn tiny_png() -> Vec<u8> {
    let image = image::RgbImage::from_raw(2, 1, vec![255, 0, 0, 0, 0, 255]).unwrap();
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
    bytes.into_inner()
}
