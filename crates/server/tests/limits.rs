//! Connection limits against a real server on port 0, with small limits so each is met in a
//! second: the caps on connections, and the deadlines for a request head, a log-in and a
//! silent client. Each closed or refused connection is counted in `/metrics`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the report

use std::time::{Duration, Instant};

use chapar_server::{FilesConfig, Limits};
use chapar_wire::v1::{self, client_frame::Request};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

#[path = "files/harness.rs"]
mod harness;

use harness::{TestServer, metrics, register, start_configured};

fn small() -> Limits {
    Limits {
        connections_per_address_max: 8,
        handshake_timeout: Duration::from_millis(500),
        login_timeout: Duration::from_millis(800),
        idle_timeout: Duration::from_millis(1500),
        ..Limits::for_tests()
    }
}

/// Reads until the server closes `tcp`; returns how long that took.
async fn closed_after(tcp: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut buffer = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(20), tcp.read(&mut buffer))
            .await
            .expect("the server closes the connection")
        {
            Ok(0) | Err(_) => return started.elapsed(),
            Ok(_) => continue,
        }
    }
}

fn counter(text: &str, limit: &str) -> u64 {
    let line = format!("chapar_limit_hits_total{{limit=\"{limit}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&line))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line} in:\n{text}"))
}

#[tokio::test]
async fn a_connection_past_the_per_address_cap_is_closed_unread_and_counted() {
    let server = start_configured(FilesConfig::default(), small()).await;
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // Let the server admit them before the next one knocks.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut refused = TcpStream::connect(server.addr).await.unwrap();
    let _ = refused
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let took = closed_after(&mut refused).await;
    assert!(
        took < Duration::from_millis(400),
        "refused at once, not timed out: {took:?}"
    );
    let text = metrics(&server).await;
    assert!(counter(&text, "connections_per_address_max") >= 1, "{text}");
    assert!(
        text.contains("chapar_connections_refused_total 1"),
        "{text}"
    );
    // A place frees up when one closes.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, _) = http(&server, "/healthz").await;
    assert!(status.contains("200"), "{status}");
}

async fn http(server: &TestServer, path: &str) -> (String, String) {
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

#[tokio::test]
async fn a_half_sent_request_head_is_closed_at_the_handshake_deadline() {
    let server = start_configured(FilesConfig::default(), small()).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut half = TcpStream::connect(server.addr).await.unwrap();
    half.write_all(b"GET /v1/ws HTTP/1.1\r\nHost: ")
        .await
        .unwrap();
    let started = Instant::now();
    for tcp in [&mut silent, &mut half] {
        closed_after(tcp).await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(5),
            "closed at the 500 ms deadline, give or take: {took:?}"
        );
    }
}

async fn websocket(
    server: &TestServer,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>> {
    let (socket, _) = tokio_tungstenite::connect_async(format!("ws://{}/v1/ws", server.addr))
        .await
        .unwrap();
    socket
}

/// Waits for the server to end `socket`; returns how long that took.
async fn ended_after(
    socket: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
) -> Duration {
    let started = Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .expect("the server ends the connection")
        {
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return started.elapsed(),
            Some(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn a_websocket_that_never_logs_in_is_closed_at_the_login_deadline() {
    let server = start_configured(FilesConfig::default(), small()).await;
    let mut socket = websocket(&server).await;
    // Saying hello (and only that) does not count as logging in.
    let hello = chapar_wire::encode(&v1::ClientFrame {
        request_id: 1,
        request: Some(Request::Hello(v1::Hello {
            protocol_version: 1,
            ..Default::default()
        })),
    });
    socket.send(Message::Binary(hello.into())).await.unwrap();
    let took = ended_after(&mut socket).await;
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(5),
        "closed at the 800 ms deadline: {took:?}"
    );
    assert_eq!(counter(&metrics(&server).await, "login_timeout"), 1);
}

#[tokio::test]
async fn a_logged_in_client_that_goes_quiet_is_closed_at_the_idle_deadline_and_a_talking_one_is_not()
 {
    let server = start_configured(FilesConfig::default(), small()).await;
    let quiet = register(&server, "quiet").await;
    let talker = register(&server, "talker").await;
    let started = Instant::now();
    // The talker pings every half second for three seconds: it stays.
    while started.elapsed() < Duration::from_secs(3) {
        talker
            .conn
            .request(Request::Ping(v1::Ping {}))
            .await
            .expect("a talking client keeps its connection");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The quiet one was closed after 1.5 s of silence.
    assert!(
        quiet
            .conn
            .request(Request::Ping(v1::Ping {}))
            .await
            .is_err()
    );
    assert!(counter(&metrics(&server).await, "idle_timeout") >= 1);
}
