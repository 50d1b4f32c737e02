//! A volunteer relay (`chapar relay`) in front of a TLS server: it prints a link with its own
//! address and the server's key pin; a user who can reach only the relay registers, chats
//! and sends a file through it with one who reaches the server directly; the relay counts the
//! sessions and bytes it carried, and refuses connections past its per-address cap.

use std::io::{BufRead as _, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::{BIN, Server, http_get};
use crate::tls::self_signed;

/// A running relay.
struct Relay {
    child: Child,
    /// What it printed for clients.
    link: String,
    /// Its operators' listener.
    metrics: String,
}

impl Relay {
    fn start(server: &str, options: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(["relay", "--server", server, "--listen", "127.0.0.1:0"])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .args(options)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chapar relay");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut line = || lines.next().expect("the relay prints its link").unwrap();
        let link = line().rsplit(' ').next().unwrap().to_owned();
        let metrics = line()
            .rsplit(' ')
            .next()
            .unwrap()
            .trim_start_matches("http://")
            .trim_end_matches("/metrics")
            .to_owned();
        Self {
            child,
            link,
            metrics,
        }
    }

    fn address(&self) -> String {
        self.link
            .trim_start_matches("https://")
            .split('#')
            .next()
            .unwrap()
            .to_owned()
    }

    fn counter(&self, name: &str) -> u64 {
        let (_, body) = http_get(&self.metrics, "/metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{body}"))
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server under `dir` with the certificate and key files given.
fn tls_server(dir: &std::path::Path, cert: &str, key: &str) -> Server {
    Server::start_with(dir, "127.0.0.1:0", &["--tls-cert", cert, "--tls-key", key])
}

#[test]
fn a_user_who_reaches_only_a_relay_chats_with_one_who_reaches_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let server = tls_server(dir.path(), &cert, &key);
    let relay = Relay::start(&server.url, &["--connections-per-address-max", "6"]);
    let pin = server.url.split_once('#').unwrap().1;
    assert_eq!(relay.link, format!("https://{}#{pin}", relay.address()));

    let alice = server.register(dir.path(), "alice");
    let (bob, _) = server.register_via(&relay.link, dir.path(), "bob");
    alice.send("@bob", "through the relay?");
    bob.sync();
    assert_eq!(bob.texts("@alice"), ["through the relay?"]);
    bob.send("@alice", "yes, all the way");
    let file = dir.path().join("photo.bin");
    std::fs::write(&file, vec![7u8; 300_000]).unwrap();
    bob.ok(&["send-file", "@alice", file.to_str().unwrap()]);
    alice.sync();
    assert_eq!(
        alice.texts("@bob")[..2],
        ["through the relay?", "yes, all the way"]
    );
    assert!(relay.counter("chapar_relay_sessions_total") >= 3);
    assert!(relay.counter("chapar_relay_bytes_total{direction=\"up\"}") > 300_000);

    // Past the per-address cap, a connection is closed unread, and counted.
    let held: Vec<TcpStream> = (0..6)
        .map(|_| TcpStream::connect(relay.address()).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut refused = TcpStream::connect(relay.address()).unwrap();
    refused
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(matches!(
        std::io::Read::read(&mut refused, &mut byte),
        Ok(0) | Err(_)
    ));
    assert!(
        relay.counter("chapar_relay_refused_total{reason=\"connections_per_address_max\"}") >= 1
    );
    drop(held);
}

/// The address a device reached the server at goes dark (here: its relay stops, so a
/// connection is refused at once); the device falls back to another relay it was given, at
/// once, for messages and files alike, and next time starts with the one that worked.
#[test]
fn a_device_whose_address_is_blocked_falls_back_to_another_relay() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let server = tls_server(dir.path(), &cert, &key);
    let first = Relay::start(&server.url, &[]);
    let second = Relay::start(&server.url, &[]);
    // A relay to another server that happens to use the same TLS key: its link passes every
    // check a link can get, and only logging in shows it is not the account's server.
    let elsewhere_dir = tempfile::tempdir().unwrap();
    let elsewhere = tls_server(elsewhere_dir.path(), &cert, &key);
    let wrong = Relay::start(&elsewhere.url, &[]);
    let alice = server.register(dir.path(), "alice");
    let (bob, _) = server.register_via(&first.link, dir.path(), "bob");
    bob.ok(&["relays", "add", &wrong.link]);
    bob.ok(&["relays", "add", &second.link]);
    assert_eq!(
        bob.ok(&["relays", "list"]).trim(),
        format!("{}\n{}", wrong.link, second.link)
    );
    // A link that is not an address, that carries another key pin, or that is plain HTTP
    // to a server with TLS, is refused before it is kept: a relay changes where a
    // connection goes, never whom it must reach.
    bob.fails(&["relays", "add", "https://relay.example#md5=nope"]);
    let other_pin = format!("sha256={}", "A".repeat(43));
    let err = bob.fails(&[
        "relays",
        "add",
        &format!("https://relay.example#{other_pin}"),
    ]);
    assert!(err.contains("not this server's"), "{err}");
    let err = bob.fails(&["relays", "add", "http://relay.example:80"]);
    assert!(err.contains("plain HTTP"), "{err}");
    alice.send("@bob", "one");
    bob.sync();
    assert_eq!(bob.texts("@alice"), ["one"]);
    let through_second = second.counter("chapar_relay_sessions_total");

    drop(first);
    alice.send("@bob", "two");
    let started = std::time::Instant::now();
    bob.sync();
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "fell back at once: {:?}",
        started.elapsed()
    );
    assert_eq!(bob.texts("@alice"), ["one", "two"]);
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "through the second relay").unwrap();
    bob.ok(&["send-file", "@alice", file.to_str().unwrap()]);
    alice.sync();
    let last = alice.messages("@bob").pop().unwrap();
    assert_eq!(last["file"]["name"], "notes.txt", "{last}");
    assert!(second.counter("chapar_relay_sessions_total") >= through_second + 2);
    // The relay to the other server was tried once, on the way (it reached a server, but
    // not this account's), and not again while it waits out its failure.
    let wrong_sessions = wrong.counter("chapar_relay_sessions_total");
    assert_eq!(wrong_sessions, 1, "tried once");
    bob.sync();
    assert_eq!(wrong.counter("chapar_relay_sessions_total"), wrong_sessions);
}
