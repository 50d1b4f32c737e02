//! A lean protocol connection for load generation: setup requests are awaited; hot-path sends
//! are fire-and-forget, their acknowledgements counted by the reader task, and pushes handed to
//! a callback on the reader task (no per-message allocation beyond decoding).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use chapar_types::ErrorCode;
use chapar_types::limits::FRAME_BYTES_MAX;
use chapar_wire::v1::{self, client_frame::Request, response::Result as Reply};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Frames queued for the socket before senders wait.
const OUTGOING_QUEUE_DEPTH_MAX: usize = 4096;
/// How long a TCP connect may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Request ids at or above this are fire-and-forget sends.
const NOWAIT_ID_BASE: u64 = 1 << 62;

/// What the reader task reports.
pub enum Event<'a> {
    /// A pushed log entry.
    Entry(&'a v1::LogEntry),
    /// A fire-and-forget request was acknowledged.
    Acked,
    /// A fire-and-forget request failed.
    Failed,
}

/// Callback for events, run on the connection's reader task.
pub type Handler = Arc<dyn Fn(Event<'_>) + Send + Sync>;

/// One connection.
pub struct BenchConn {
    out: mpsc::Sender<Message>,
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Reply>>>>,
    next_id: AtomicU64,
    next_nowait: AtomicU64,
    /// The login challenge.
    pub challenge: Vec<u8>,
    /// The server's identity, which login answers are bound to.
    pub server_id: Vec<u8>,
    /// The proof of work the server asks of a registration (the bench's server asks none).
    pub registration_pow_bits: u8,
}

impl BenchConn {
    /// Connects from `source` (a loopback address, to spread over many port ranges) and says Hello.
    pub async fn open(
        server: SocketAddr,
        source: Option<IpAddr>,
        handler: Handler,
    ) -> anyhow::Result<Self> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(server))
            .await
            .context("tcp connect timed out")?
            .context("tcp connect")?;
        stream.set_nodelay(true)?;
        let mut config = WebSocketConfig::default();
        config.max_message_size = Some(FRAME_BYTES_MAX);
        config.read_buffer_size = 16 * 1024;
        config.write_buffer_size = 0;
        let url = format!("ws://{server}/v1/ws");
        let (ws, _) =
            tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::channel::<Message>(OUTGOING_QUEUE_DEPTH_MAX);
        tokio::spawn(async move {
            while let Some(first) = out_rx.recv().await {
                // Batch whatever is queued into one flush.
                let mut batch = vec![first];
                while let Ok(more) = out_rx.try_recv() {
                    batch.push(more);
                    if batch.len() >= 64 {
                        break;
                    }
                }
                for m in batch {
                    if sink.feed(m).await.is_err() {
                        return;
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
            // Dropped: close the WebSocket, or the reader's half would keep it open until the
            // server's idle timeout.
            let _ = sink.close().await;
        });
        let pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Reply>>>> = Arc::default();
        tokio::spawn({
            let pending = pending.clone();
            async move {
                while let Some(Ok(message)) = stream.next().await {
                    let Message::Binary(bytes) = message else {
                        continue;
                    };
                    let Ok(frame) = chapar_wire::decode::<v1::ServerFrame>(&bytes) else {
                        continue;
                    };
                    match frame.kind {
                        Some(v1::server_frame::Kind::Push(v1::Push {
                            kind: Some(v1::push::Kind::LogEntry(entry)),
                        })) => {
                            handler(Event::Entry(&entry));
                        }
                        Some(v1::server_frame::Kind::Response(r))
                            if r.request_id >= NOWAIT_ID_BASE =>
                        {
                            match r.result {
                                Some(Reply::Error(_)) => handler(Event::Failed),
                                _ => handler(Event::Acked),
                            }
                        }
                        Some(v1::server_frame::Kind::Response(r)) => {
                            let waiter = pending
                                .lock()
                                .ok()
                                .and_then(|mut p| p.remove(&r.request_id));
                            if let (Some(waiter), Some(result)) = (waiter, r.result) {
                                let _ = waiter.send(result);
                            }
                        }
                        _ => {}
                    }
                }
            }
        });
        let mut conn = Self {
            out,
            pending,
            next_id: AtomicU64::new(1),
            next_nowait: AtomicU64::new(NOWAIT_ID_BASE),
            challenge: Vec::new(),
            server_id: Vec::new(),
            registration_pow_bits: 0,
        };
        let Reply::HelloOk(ok) = conn
            .request(Request::Hello(v1::Hello {
                protocol_version: chapar_wire::PROTOCOL_VERSION,
                ..Default::default()
            }))
            .await?
        else {
            bail!("expected HelloOk");
        };
        conn.challenge = ok.challenge;
        conn.server_id = ok.server_id;
        conn.registration_pow_bits = u8::try_from(ok.registration_pow_bits)?;
        Ok(conn)
    }

    /// Sends a request and waits for its response; a server error is an `Err`.
    pub async fn request(&self, request: Request) -> anyhow::Result<Reply> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .insert(id, tx);
        let frame = chapar_wire::encode(&v1::ClientFrame {
            request_id: id,
            request: Some(request),
        });
        self.out
            .send(Message::Binary(frame.into()))
            .await
            .context("connection closed")?;
        match tokio::time::timeout(std::time::Duration::from_secs(120), rx)
            .await
            .context("request timed out")?
            .context("connection closed")?
        {
            Reply::Error(e) => bail!(
                "server error {}: {}",
                ErrorCode::from_u32(e.code),
                e.message
            ),
            reply => Ok(reply),
        }
    }

    /// Sends a request without waiting; its outcome arrives as [`Event::Acked`] or [`Event::Failed`].
    pub async fn send_nowait(&self, request: Request) -> anyhow::Result<()> {
        let id = self.next_nowait.fetch_add(1, Ordering::Relaxed);
        let frame = chapar_wire::encode(&v1::ClientFrame {
            request_id: id,
            request: Some(request),
        });
        self.out
            .send(Message::Binary(frame.into()))
            .await
            .context("connection closed")
    }
}
