//! The transport seam: anything that carries ordered binary frames between this device and
//! the server. The engine speaks protocol frames; a transport only moves them. WebSocket is
//! the one implementation today; the censorship-resistant transports and relays add others
//! and copy no rule.

use futures_util::future::BoxFuture;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use chapar_core::{CoreError, Usage};
use chapar_types::limits::FRAME_BYTES_MAX;

/// How long connecting may take before it is given up.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Ordered binary frames to and from the server.
pub trait Transport: Send {
    /// Sends one frame.
    fn send(&mut self, frame: Vec<u8>) -> BoxFuture<'_, Result<(), CoreError>>;
    /// The next frame from the server; `None` once the transport is closed. Cancel-safe: a
    /// receive given up (for a timer) loses no frame.
    fn recv(&mut self) -> BoxFuture<'_, Result<Option<Vec<u8>>, CoreError>>;
    /// Closes the transport politely.
    fn close(&mut self) -> BoxFuture<'_, ()>;
}

/// Opens transports to a server.
pub trait Dialer: Send + Sync {
    /// Connects to `server` (as the user gave it, e.g. `http://127.0.0.1:8080`).
    fn dial<'a>(&'a self, server: &'a str) -> BoxFuture<'a, Result<Box<dyn Transport>, CoreError>>;
}

/// Turns `http://host:port` (or `ws://...`) into the WebSocket endpoint URL.
pub fn endpoint(server: &str) -> Result<String, CoreError> {
    let base = server.trim_end_matches('/');
    let base = if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if base.starts_with("ws://") || base.starts_with("wss://") {
        base.to_owned()
    } else {
        return Err(Usage::InvalidServer(server.to_owned()).into());
    };
    Ok(if base.ends_with("/v1/ws") {
        base
    } else {
        format!("{base}/v1/ws")
    })
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Frames as WebSocket binary messages.
pub struct WebSocket {
    socket: Socket,
}

/// Dials [`WebSocket`]s.
#[derive(Debug, Default, Clone, Copy)]
pub struct WebSocketDialer;

impl WebSocket {
    /// Connects to `server`'s WebSocket endpoint.
    pub async fn connect(server: &str) -> Result<Self, CoreError> {
        let url = endpoint(server)?;
        let mut config = WebSocketConfig::default();
        config.max_message_size = Some(FRAME_BYTES_MAX);
        config.max_frame_size = Some(FRAME_BYTES_MAX);
        let (socket, _) = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_tungstenite::connect_async_with_config(&url, Some(config), true),
        )
        .await
        .map_err(|_| CoreError::Connection(format!("timed out connecting to {url}")))?
        .map_err(|e| CoreError::Connection(format!("cannot connect to {url}: {e}")))?;
        Ok(Self { socket })
    }
}

impl Transport for WebSocket {
    fn send(&mut self, frame: Vec<u8>) -> BoxFuture<'_, Result<(), CoreError>> {
        Box::pin(async move {
            self.socket
                .send(Message::Binary(frame.into()))
                .await
                .map_err(|e| CoreError::Connection(format!("sending: {e}")))
        })
    }

    fn recv(&mut self) -> BoxFuture<'_, Result<Option<Vec<u8>>, CoreError>> {
        Box::pin(async move {
            loop {
                match self.socket.next().await {
                    Some(Ok(Message::Binary(bytes))) => return Ok(Some(bytes.to_vec())),
                    Some(Ok(Message::Close(_))) | None => return Ok(None),
                    // Pings are answered by tungstenite; text is not part of the protocol.
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(CoreError::Connection(format!("receiving: {e}"))),
                }
            }
        })
    }

    fn close(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = self.socket.close(None).await;
        })
    }
}

impl Dialer for WebSocketDialer {
    fn dial<'a>(&'a self, server: &'a str) -> BoxFuture<'a, Result<Box<dyn Transport>, CoreError>> {
        Box::pin(
            async move { Ok(Box::new(WebSocket::connect(server).await?) as Box<dyn Transport>) },
        )
    }
}
