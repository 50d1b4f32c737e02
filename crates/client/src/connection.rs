//! A raw protocol connection over any [`Transport`]: the handshake, requests matched to
//! their responses by id, and a queue of server pushes. For tests and tools that speak the
//! protocol directly (the server's protocol tests); devices use `chapar_core::Engine`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chapar_types::ErrorCode;
use chapar_types::limits::PUSH_QUEUE_DEPTH_MAX;
use chapar_wire::v1::{self, client_frame::Request, response::Result as Reply};
use tokio::sync::{mpsc, oneshot};

use crate::transport::{Transport, WebSocket};
use chapar_core::CoreError as ClientError;

/// How long a request may wait for its response before the client gives up.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests queued for sending before `request` waits.
const OUTGOING_QUEUE_DEPTH_MAX: usize = 256;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Reply>>>>;

/// Bytes of protocol frames one connection sent and received (WebSocket framing excluded).
#[derive(Debug, Default)]
pub struct Traffic {
    /// Frame bytes sent.
    pub sent: AtomicU64,
    /// Frame bytes received.
    pub received: AtomicU64,
}

/// Hands a frame from the server to the request waiting for it, or queues it as a push.
fn deliver(pending: &Pending, pushes: &mpsc::Sender<v1::Push>, bytes: &[u8]) {
    let Ok(frame) = chapar_wire::decode::<v1::ServerFrame>(bytes) else {
        tracing::warn!("undecodable frame from server");
        return;
    };
    match frame.kind {
        Some(v1::server_frame::Kind::Response(r)) => {
            let waiter = pending
                .lock()
                .ok()
                .and_then(|mut p| p.remove(&r.request_id));
            if let (Some(waiter), Some(result)) = (waiter, r.result) {
                let _ = waiter.send(result);
            }
        }
        Some(v1::server_frame::Kind::Push(p)) => {
            // A full queue means nobody is listening; the next sync catches up.
            let _ = pushes.try_send(p);
        }
        None => {}
    }
}

/// An open connection that has completed `Hello`.
pub struct Connection {
    out: mpsc::Sender<Vec<u8>>,
    pending: Pending,
    next_id: AtomicU64,
    pushes: Mutex<Option<mpsc::Receiver<v1::Push>>>,
    challenge: Vec<u8>,
    /// The server's identity, as it presented it.
    server_id: Vec<u8>,
    /// The proof of work the server asks of a registration on this connection.
    registration_pow_bits: u8,
    traffic: Arc<Traffic>,
}

impl Connection {
    /// Connects to `server` over WebSocket and performs the version handshake.
    pub async fn open(server: &str) -> Result<Self, ClientError> {
        Self::over(Box::new(WebSocket::connect(server).await?)).await
    }

    /// Performs the version handshake over `transport`.
    pub async fn over(mut transport: Box<dyn Transport>) -> Result<Self, ClientError> {
        let (out, mut out_rx) = mpsc::channel::<Vec<u8>>(OUTGOING_QUEUE_DEPTH_MAX);
        let (push_tx, push_rx) = mpsc::channel(PUSH_QUEUE_DEPTH_MAX);
        let pending: Pending = Arc::default();
        let traffic = Arc::new(Traffic::default());
        tokio::spawn({
            let pending = pending.clone();
            let traffic = traffic.clone();
            async move {
                loop {
                    tokio::select! {
                        frame = out_rx.recv() => match frame {
                            Some(frame) => if transport.send(frame).await.is_err() { break },
                            None => break,
                        },
                        received = transport.recv() => {
                            let Ok(Some(bytes)) = received else { break };
                            traffic.received.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                            deliver(&pending, &push_tx, &bytes);
                        }
                    }
                }
                transport.close().await;
                // Dropping the waiters makes every outstanding request fail with "closed".
                if let Ok(mut p) = pending.lock() {
                    p.clear();
                }
            }
        });

        let mut connection = Self {
            out,
            pending,
            next_id: AtomicU64::new(1),
            pushes: Mutex::new(Some(push_rx)),
            challenge: Vec::new(),
            server_id: Vec::new(),
            registration_pow_bits: 0,
            traffic,
        };
        let hello = connection
            .request(Request::Hello(v1::Hello {
                protocol_version: chapar_wire::PROTOCOL_VERSION,
                capabilities: chapar_wire::CAPABILITIES
                    .iter()
                    .map(|c| (*c).to_owned())
                    .collect(),
                client_agent: concat!("chapar/", env!("CARGO_PKG_VERSION")).into(),
            }))
            .await?;
        let Reply::HelloOk(ok) = hello else {
            return Err(ClientError::Protocol("expected HelloOk".into()));
        };
        connection.challenge = ok.challenge;
        connection.server_id = ok.server_id;
        connection.registration_pow_bits =
            u8::try_from(ok.registration_pow_bits).map_err(|_| {
                ClientError::Protocol("the server asks for an absurd proof of work".into())
            })?;
        Ok(connection)
    }

    /// Bytes sent and received on this connection so far.
    pub fn traffic(&self) -> (u64, u64) {
        (
            self.traffic.sent.load(Ordering::Relaxed),
            self.traffic.received.load(Ordering::Relaxed),
        )
    }

    /// The server's login challenge for this connection.
    pub fn challenge(&self) -> &[u8] {
        &self.challenge
    }

    /// The identity the server presented, which login answers are bound to.
    pub fn server_id(&self) -> &[u8] {
        &self.server_id
    }

    /// A proof of the work the server asks for registering `username` on this connection
    /// (see `chapar_types::pow`).
    pub fn prove_registration(&self, username: &str) -> u64 {
        chapar_types::pow::solve(&self.challenge, username, self.registration_pow_bits)
    }

    /// Takes the push queue (once).
    pub fn take_pushes(&self) -> Option<mpsc::Receiver<v1::Push>> {
        self.pushes.lock().ok().and_then(|mut p| p.take())
    }

    /// Sends a request and waits for its response. A server error becomes [`ClientError::Server`].
    pub async fn request(&self, request: Request) -> Result<Reply, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .map_err(|_| ClientError::Connection("connection state poisoned".into()))?
            .insert(id, tx);
        let frame = chapar_wire::encode(&v1::ClientFrame {
            request_id: id,
            request: Some(request),
        });
        self.traffic
            .sent
            .fetch_add(frame.len() as u64, Ordering::Relaxed);
        self.out
            .send(frame)
            .await
            .map_err(|_| ClientError::Connection("connection closed".into()))?;
        let reply = tokio::time::timeout(REQUEST_TIMEOUT, rx)
            .await
            .map_err(|_| {
                if let Ok(mut p) = self.pending.lock() {
                    p.remove(&id);
                }
                ClientError::Connection("the server did not answer in time".into())
            })?
            .map_err(|_| {
                ClientError::Connection("connection closed before the server answered".into())
            })?;
        match reply {
            Reply::Error(e) => {
                let code = ErrorCode::from_u32(e.code);
                let position = if code == ErrorCode::StaleRoster {
                    e.roster_version
                } else {
                    e.head_seq
                };
                Err(ClientError::Server {
                    code,
                    message: e.message,
                    position,
                })
            }
            other => Ok(other),
        }
    }
}
