//! A server in camouflage (`chapar server --camouflage`): to anyone who does not know its
//! entry path it is a fresh nginx (its default page, its 404 and 405 pages, `Server: nginx`),
//! whatever they ask for, the protocol's own paths and a WebSocket upgrade included; clients
//! given the address it prints (which ends in the entry path) chat and send files as usual.

use std::io::{Read as _, Write as _};

use crate::harness::Server;

/// Sends `request` as it is and returns the whole response.
fn exchange(addr: &str, request: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

fn get(addr: &str, path: &str) -> String {
    exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
}

#[test]
fn a_camouflaged_server_looks_like_nginx_to_a_prober_and_works_for_its_clients() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), "127.0.0.1:0", &["--camouflage"]);
    let entry = server.url.rsplit('/').next().unwrap().to_owned();
    assert_eq!(entry.len(), 22, "{}", server.url);

    // Clients with the address work as ever, files included (the upload's Location keeps the
    // entry path).
    let alice = server.register(dir.path(), "alice");
    let bob = server.register(dir.path(), "bob");
    alice.send("@bob", "behind the cover");
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "hidden in plain sight".repeat(1_000)).unwrap();
    let sent = alice
        .ok(&["send-file", "@bob", file.to_str().unwrap()])
        .trim()
        .to_owned();
    bob.sync();
    assert_eq!(bob.texts("@alice")[0], "behind the cover");
    let received = dir.path().join("received.txt");
    bob.ok(&["download", &sent, "--out", received.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(&received).unwrap(),
        std::fs::read(&file).unwrap()
    );

    // A prober sees nginx.
    let root = get(&server.addr, "/");
    assert!(root.starts_with("HTTP/1.1 200 OK"), "{root}");
    assert!(root.contains("Server: nginx\r\n"), "{root}");
    assert!(root.contains("<h1>Welcome to nginx!</h1>"), "{root}");
    let wrong_entry = format!("/{}/v1/ws", "A".repeat(22));
    for path in [
        "/v1/ws",
        "/v1/files",
        "/healthz",
        "/metrics",
        "/favicon.ico",
        wrong_entry.as_str(),
    ] {
        let answer = get(&server.addr, path);
        assert!(
            answer.starts_with("HTTP/1.1 404 Not Found"),
            "{path}: {answer}"
        );
        assert!(
            answer.contains("<hr><center>nginx</center>"),
            "{path}: {answer}"
        );
        assert!(
            !answer.to_lowercase().contains("chapar"),
            "{path}: {answer}"
        );
    }
    let upgrade = exchange(
        &server.addr,
        &format!(
            "GET /v1/ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            server.addr
        ),
    );
    assert!(upgrade.starts_with("HTTP/1.1 404"), "{upgrade}");
    let post = exchange(
        &server.addr,
        &format!(
            "POST / HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            server.addr
        ),
    );
    assert!(post.starts_with("HTTP/1.1 405 Not Allowed"), "{post}");
}
