//! A lying server: a WebSocket proxy in front of the real server that passes every frame on
//! unchanged until a test gives it a lie to tell, then rewrites the server's answers to the
//! requests it picks (another account key, an invented device, `unknown_user`). It plays a
//! malicious or compromised operator against real `chapar` processes, which talk to it as to
//! their server.
#![allow(dead_code)] // each attack tells its own lie

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chapar_wire::v1::{self, client_frame::Request, response::Result as Reply};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{Server, User};

/// Rewrites the real server's answer to one request.
pub type Lie = Box<dyn Fn(&Request, &mut Reply) + Send + Sync>;

/// The proxy; dropped, it stops taking connections.
pub struct LyingServer {
    /// Where clients connect (`ws://…/v1/ws`).
    pub url: String,
    lie: Arc<Mutex<Option<Lie>>>,
    _runtime: tokio::runtime::Runtime,
}

impl LyingServer {
    /// A proxy for the real server at `upstream` (its `http://…` or `ws://…` URL), honest
    /// for now.
    pub fn start(upstream: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let lie: Arc<Mutex<Option<Lie>>> = Arc::default();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("ws://{}/v1/ws", listener.local_addr().unwrap());
        let upstream = format!(
            "{}/v1/ws",
            upstream
                .trim_end_matches('/')
                .trim_end_matches("/v1/ws")
                .replacen("http://", "ws://", 1)
        );
        let shared = lie.clone();
        runtime.spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(relay(socket, upstream.clone(), shared.clone()));
            }
        });
        Self {
            url,
            lie,
            _runtime: runtime,
        }
    }

    /// From now on, answers are rewritten by `lie`.
    pub fn tell(&self, lie: Lie) {
        *self.lie.lock().unwrap() = Some(lie);
    }

    /// From now on, answers pass unchanged.
    pub fn stop_lying(&self) {
        *self.lie.lock().unwrap() = None;
    }
}

/// One client connection, relayed to its own upstream connection.
async fn relay(socket: tokio::net::TcpStream, upstream: String, lie: Arc<Mutex<Option<Lie>>>) {
    let Ok(client) = tokio_tungstenite::accept_async(socket).await else {
        return;
    };
    let Ok((server, _)) = tokio_tungstenite::connect_async(upstream.as_str()).await else {
        return;
    };
    let (mut to_client, mut from_client) = client.split();
    let (mut to_server, mut from_server) = server.split();
    // What each request was, to know which answer to rewrite.
    let asked: Arc<Mutex<HashMap<u64, Request>>> = Arc::default();
    let noted = asked.clone();
    let upward = async move {
        while let Some(Ok(message)) = from_client.next().await {
            if let Message::Binary(bytes) = &message
                && let Ok(frame) = chapar_wire::decode::<v1::ClientFrame>(bytes)
                && let Some(request) = frame.request
            {
                noted.lock().unwrap().insert(frame.request_id, request);
            }
            if to_server.send(message).await.is_err() {
                break;
            }
        }
    };
    let downward = async move {
        while let Some(Ok(mut message)) = from_server.next().await {
            if let Message::Binary(bytes) = &message
                && let Ok(mut frame) = chapar_wire::decode::<v1::ServerFrame>(bytes)
                && let Some(v1::server_frame::Kind::Response(response)) = &mut frame.kind
                && let Some(result) = &mut response.result
                && let Some(request) = asked.lock().unwrap().remove(&response.request_id)
                && let Some(lie) = lie.lock().unwrap().as_ref()
            {
                lie(&request, result);
                message = Message::Binary(chapar_wire::encode(&frame).into());
            }
            if to_client.send(message).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        () = upward => {}
        () = downward => {}
    }
}

/// The error a server sends for an unknown user.
pub fn unknown_user() -> Reply {
    Reply::Error(v1::Error {
        code: chapar_types::ErrorCode::UnknownUser.as_u32(),
        message: "no such user".into(),
        ..Default::default()
    })
}

/// The user a request asks about (`GetAccount`, `ClaimKeyPackages`), if it is one of those.
pub fn asks_about(request: &Request) -> Option<&str> {
    match request {
        Request::GetAccount(get) => Some(&get.username),
        Request::ClaimKeyPackages(claim) => Some(&claim.username),
        _ => None,
    }
}

/// A real server, a lying server in front of it, Alice registered through the liar (it is
/// her server) and Bob straight at the real one.
pub struct Scene {
    pub dir: tempfile::TempDir,
    pub server: Server,
    pub liar: LyingServer,
    pub alice: User,
    pub bob: User,
}

impl Scene {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(dir.path());
        let liar = LyingServer::start(&server.url);
        let alice = server.user(dir.path(), "alice");
        alice.ok(&["register", "--server", &liar.url, "--username", "alice"]);
        let bob = server.register(dir.path(), "bob");
        Self {
            dir,
            server,
            liar,
            alice,
            bob,
        }
    }
}
