//! TLS on the real server and client: `chapar server --tls-cert --tls-key` with a self-signed
//! certificate, clients that reach it through the address it prints (which carries the key
//! pin), the protocol and file transfers over it, and what a network observer sees: the
//! traffic passes a recording relay, and neither usernames, texts nor file names are in it.
//! A wrong pin, no pin (no authority vouches for a self-signed certificate) and plain HTTP
//! are refused with an error that says so.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::harness::Server;

/// Writes a self-signed certificate for 127.0.0.1 and localhost, and its key, under `dir`.
pub fn self_signed(dir: &Path) -> (String, String) {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, signing_key.serialize_pem()).unwrap();
    (
        cert_path.to_str().unwrap().to_owned(),
        key_path.to_str().unwrap().to_owned(),
    )
}

/// A TCP relay to `upstream` that keeps every byte passing through, both ways.
struct Recorder {
    address: String,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Recorder {
    fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (upstream, kept) = (upstream.to_owned(), seen.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let kept = kept.clone();
                    std::thread::spawn(move || {
                        let mut buffer = [0u8; 16 * 1024];
                        while let Ok(n @ 1..) = from.read(&mut buffer) {
                            kept.lock().unwrap().extend_from_slice(&buffer[..n]);
                            if to.write_all(&buffer[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        Self { address, seen }
    }

    fn saw(&self, needle: &str) -> bool {
        let seen = self.seen.lock().unwrap();
        seen.windows(needle.len()).any(|w| w == needle.as_bytes())
    }
}

#[test]
fn clients_talk_over_tls_to_the_pinned_key_and_an_observer_sees_none_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    // A short handshake deadline, to see a stalled TLS handshake closed (below).
    let config = dir.path().join("server.toml");
    std::fs::write(&config, "[limits]\nhandshake_timeout = \"1s\"\n").unwrap();
    let server = Server::start_with(
        dir.path(),
        "127.0.0.1:0",
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--config",
            config.to_str().unwrap(),
        ],
    );
    let (scheme_and_host, pin) = server.url.split_once('#').expect("the address has a pin");
    assert!(scheme_and_host.starts_with("https://"), "{}", server.url);
    assert!(pin.starts_with("sha256="), "{}", server.url);

    // Everyone reaches the server through the recording relay, with the printed pin.
    let recorder = Recorder::start(&server.addr);
    let relayed = format!("https://{}#{pin}", recorder.address);
    let (alice, _) = server.register_via(&relayed, dir.path(), "alice_tls_user");
    let (bob, _) = server.register_via(&relayed, dir.path(), "bob_tls_user");
    let text = "MARKER_text_over_tls_51ab";
    alice.send("@bob_tls_user", text);
    let file_name = "MARKER_file_over_tls_c3d4.txt";
    let file = dir.path().join(file_name);
    std::fs::write(&file, "MARKER_file_body_over_tls_e5f6".repeat(10_000)).unwrap();
    let sent = alice
        .ok(&["send-file", "@bob_tls_user", file.to_str().unwrap()])
        .trim()
        .to_owned();
    bob.sync();
    assert_eq!(bob.texts("@alice_tls_user")[0], text);
    let received = dir.path().join("received.txt");
    bob.ok(&["download", &sent, "--out", received.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(&received).unwrap(),
        std::fs::read(&file).unwrap()
    );
    // The relay carried it all, and saw none of it.
    assert!(recorder.seen.lock().unwrap().len() > 300_000);
    for marker in [
        "alice_tls_user",
        "bob_tls_user",
        "MARKER_file_body_over_tls_e5f6",
        "/v1/ws",
        "/v1/files",
    ] {
        assert!(!recorder.saw(marker), "an observer saw {marker:?}");
    }

    // A wrong pin, no pin, and plain HTTP are each refused, and say why.
    let mallory = server.user(dir.path(), "mallory");
    let other_pin = format!("sha256={}", "A".repeat(43));
    for (address, says) in [
        (
            format!("{scheme_and_host}#{other_pin}"),
            "not the one pinned",
        ),
        (scheme_and_host.to_owned(), "not vouched for"),
        (format!("http://{}", server.addr), "connect"),
    ] {
        let err = mallory.fails(&["register", "--server", &address, "--username", "mallory"]);
        assert!(err.contains(says), "{address}: {err}");
    }

    // A client that stalls the handshake (silent, or half a ClientHello) is closed at the
    // handshake deadline.
    let mut silent = TcpStream::connect(&server.addr).unwrap();
    let mut half = TcpStream::connect(&server.addr).unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    let started = std::time::Instant::now();
    for tcp in [&mut silent, &mut half] {
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let mut byte = [0u8; 1];
        assert!(matches!(tcp.read(&mut byte), Ok(0) | Err(_)));
        let took = started.elapsed();
        assert!(
            took >= std::time::Duration::from_millis(700)
                && took < std::time::Duration::from_secs(8),
            "closed at the 1 s deadline, give or take: {took:?}"
        );
    }
}
