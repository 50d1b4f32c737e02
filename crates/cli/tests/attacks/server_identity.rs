//! A server that is not the one the account is on: a device pins its server's identity when
//! its account is made and refuses to log in to one that presents another (a DNS hijack, a
//! seized address serving a fresh server), instead of answering its challenge.

use crate::harness::Server;

#[test]
fn a_device_refuses_to_log_in_to_a_server_with_another_identity() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let alice = server.register(dir.path(), "alice");
    alice.sync();
    let addr = server.addr.clone();
    server.kill9();
    // Another server at the same address (its identity is new; the old data is gone).
    let data = server.data.clone();
    std::fs::remove_dir_all(&data).unwrap();
    let impostor = Server::start_on(dir.path(), &addr);
    let refused = alice.fails(&["sync"]);
    assert!(
        refused.contains("not the one this account is on"),
        "{refused}"
    );
    // It answered no challenge: the impostor (logging every failed request at debug level)
    // saw no log-in attempt, which it would have refused for an unknown device.
    let log = impostor.log_text();
    assert!(
        log.contains("request failed") || log.contains("listening"),
        "{log}"
    );
    assert!(!log.contains("authentication_failed"), "{log}");
}
