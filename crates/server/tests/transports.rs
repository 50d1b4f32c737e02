//! The transport seam, on both ends: one service behind two listeners (WebSocket, and
//! length-prefixed frames over plain TCP), and real clients on each talking to each other.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the report

use std::net::SocketAddr;
use std::sync::Arc;

use chapar_client::transport::FramedTcpDialer;
use chapar_client::{Client, Target};
use chapar_server::ServerConfig;
use chapar_store::sqlite::SqliteStore;
use chapar_types::Username;
use chapar_types::limits::FRAME_BYTES_MAX;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

type Service = Arc<chapar_server::service::Service<SqliteStore>>;

/// One service, listening for WebSockets on one port and framed TCP on another.
struct Listeners {
    websocket: SocketAddr,
    framed: SocketAddr,
    _dir: tempfile::TempDir,
}

async fn start() -> Listeners {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("data"));
    config.limits = chapar_server::Limits::for_tests();
    let service: Service = chapar_server::open_service(&config).unwrap();
    let websocket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let framed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addresses = (
        websocket.local_addr().unwrap(),
        framed.local_addr().unwrap(),
    );
    tokio::spawn(axum::serve(websocket, chapar_server::api::router(service.clone())).into_future());
    tokio::spawn(async move {
        while let Ok((tcp, peer)) = framed.accept().await {
            tokio::spawn(chapar_server::api::stream::serve_stream(
                service.clone(),
                Some(peer.ip()),
                tcp,
            ));
        }
    });
    Listeners {
        websocket: addresses.0,
        framed: addresses.1,
        _dir: dir,
    }
}

#[tokio::test]
async fn clients_on_two_transports_talk_through_one_server() {
    let server = start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut alice = Client::open(&profiles.path().join("alice")).unwrap();
    alice
        .register(
            &format!("http://{}", server.websocket),
            "alice",
            "phone",
            "",
        )
        .await
        .unwrap();
    let mut bob =
        Client::open_with(&profiles.path().join("bob"), Box::new(FramedTcpDialer)).unwrap();
    bob.register(&format!("tcp://{}", server.framed), "bob", "laptop", "")
        .await
        .unwrap();
    let to_bob = Target::User(Username::parse("bob").unwrap());
    let to_alice = Target::User(Username::parse("alice").unwrap());

    alice
        .send_text(&to_bob, "over a websocket", None)
        .await
        .unwrap();
    let arrived = bob.sync().await.unwrap();
    assert_eq!(
        arrived.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        ["over a websocket"],
        "bob, on framed TCP, gets alice's message"
    );
    bob.send_text(&to_alice, "over a byte stream", None)
        .await
        .unwrap();
    let arrived = alice.sync().await.unwrap();
    assert_eq!(
        arrived.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        ["over a byte stream"]
    );
    let history: Vec<String> = bob
        .messages(&to_alice)
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(history, ["over a websocket", "over a byte stream"]);
}

#[tokio::test]
async fn a_stream_announcing_a_frame_over_the_limit_is_closed_unread() {
    let server = start().await;
    let mut tcp = tokio::net::TcpStream::connect(server.framed).await.unwrap();
    let announced = u32::try_from(FRAME_BYTES_MAX + 1).unwrap();
    tcp.write_all(&announced.to_be_bytes()).await.unwrap();
    let mut rest = Vec::new();
    // Closed (or reset) well before the timeout, and nothing answered: the length alone
    // ends it, before any of the announced bytes is read or buffered.
    let _closed_or_reset = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tcp.read_to_end(&mut rest),
    )
    .await
    .expect("the server closes the stream");
    assert!(
        rest.is_empty(),
        "nothing is answered to an oversized frame: {rest:?}"
    );
}
