//! The transport seam: anything that carries ordered binary frames between this device and
//! the server. The engine speaks protocol frames; a transport only moves them. Two
//! implementations today: [`WebSocket`], and [`Framed`] (length-prefixed frames over any byte
//! stream, the framing every tunnel to come carries). The censorship-resistant transports and
//! relays add others and copy no rule.

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::codec::{Framed as CodecFramed, LengthDelimitedCodec};

use chapar_core::{CoreError, Usage};

use crate::tls::ServerAddress;
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

/// Turns `http://host:port` (or `https://`, `ws://`, `wss://`; a key pin after `#` is left
/// out) into the WebSocket endpoint URL.
pub fn endpoint(server: &str) -> Result<String, CoreError> {
    let address = ServerAddress::parse(server)?;
    let base = address.base.as_str();
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

/// A byte stream to the server: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Socket = tokio_tungstenite::WebSocketStream<Box<dyn Io>>;

/// Opens the byte stream to `url`'s host: TCP, wrapped in TLS where `address` says so, with
/// the certificate checked as `crate::tls` describes.
async fn open_stream(address: &ServerAddress, url: &str) -> Result<Box<dyn Io>, CoreError> {
    let (host, port) = address.host_port()?;
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| CoreError::Connection(format!("cannot connect to {url}: {e}")))?;
    // Small frames must leave at once (Nagle's algorithm would hold them back).
    let _ = tcp.set_nodelay(true);
    if !address.is_tls() {
        return Ok(Box::new(tcp));
    }
    let name = rustls::pki_types::ServerName::try_from(host)
        .map_err(|_| CoreError::from(Usage::InvalidServer(address.base.clone())))?;
    let tls = tokio_rustls::TlsConnector::from(address.client_config())
        .connect(name, tcp)
        .await
        .map_err(|e| CoreError::Connection(crate::tls::explain_failure(address, url, &e)))?;
    Ok(Box::new(tls))
}

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
        let address = ServerAddress::parse(server)?;
        let url = endpoint(server)?;
        let mut config = WebSocketConfig::default();
        config.max_message_size = Some(FRAME_BYTES_MAX);
        config.max_frame_size = Some(FRAME_BYTES_MAX);
        let connecting = async {
            let stream = open_stream(&address, &url).await?;
            tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(config))
                .await
                .map_err(|e| CoreError::Connection(format!("cannot connect to {url}: {e}")))
        };
        let (socket, _) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| CoreError::Connection(format!("timed out connecting to {url}")))??;
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

/// The codec of length-prefixed frames: a 4-byte big-endian length, then the frame, at most
/// [`FRAME_BYTES_MAX`] bytes (`docs/protocol.md`, section 2).
pub fn frame_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .big_endian()
        .max_frame_length(FRAME_BYTES_MAX)
        .new_codec()
}

/// Frames over an ordered byte stream, each behind its length.
pub struct Framed<T> {
    io: CodecFramed<T, LengthDelimitedCodec>,
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Framed<T> {
    /// Frames over `io`.
    pub fn new(io: T) -> Self {
        Self {
            io: CodecFramed::new(io, frame_codec()),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for Framed<T> {
    fn send(&mut self, frame: Vec<u8>) -> BoxFuture<'_, Result<(), CoreError>> {
        Box::pin(async move {
            self.io
                .send(Bytes::from(frame))
                .await
                .map_err(|e| CoreError::Connection(format!("sending: {e}")))
        })
    }

    fn recv(&mut self) -> BoxFuture<'_, Result<Option<Vec<u8>>, CoreError>> {
        Box::pin(async move {
            match self.io.next().await {
                Some(Ok(frame)) => Ok(Some(frame.to_vec())),
                Some(Err(e)) => Err(CoreError::Connection(format!("receiving: {e}"))),
                None => Ok(None),
            }
        })
    }

    fn close(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = futures_util::SinkExt::<Bytes>::close(&mut self.io).await;
        })
    }
}

/// Dials [`Framed`] TCP connections: the server is given as `tcp://host:port`.
#[derive(Debug, Default, Clone, Copy)]
pub struct FramedTcpDialer;

impl Dialer for FramedTcpDialer {
    fn dial<'a>(&'a self, server: &'a str) -> BoxFuture<'a, Result<Box<dyn Transport>, CoreError>> {
        Box::pin(async move {
            let address = server
                .strip_prefix("tcp://")
                .ok_or_else(|| CoreError::from(Usage::InvalidServer(server.to_owned())))?;
            let tcp =
                tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address))
                    .await
                    .map_err(|_| {
                        CoreError::Connection(format!("timed out connecting to {address}"))
                    })?
                    .map_err(|e| {
                        CoreError::Connection(format!("cannot connect to {address}: {e}"))
                    })?;
            let _ = tcp.set_nodelay(true);
            Ok(Box::new(Framed::new(tcp)) as Box<dyn Transport>)
        })
    }
}
