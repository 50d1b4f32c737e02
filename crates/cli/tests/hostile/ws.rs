//! Raw TCP from a chosen source address and a hand-made WebSocket: the upgrade, client frames
//! shaped as an attacker shapes them (a client library would refuse to send them), and `Ws`, a
//! minimal protocol client for the spammers' setup and log-ins.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use chapar_wire::v1::{self, client_frame::Request, response::Result as Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The upgrade every WebSocket here asks for (its key is RFC 6455's sample nonce).
const UPGRADE_REQUEST: &[u8] = b"GET /v1/ws HTTP/1.1\r\nHost: chapar\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";
/// The WebSocket opcodes the test sends or reads.
pub const OP_TEXT: u8 = 1;
pub const OP_BINARY: u8 = 2;
const OP_CLOSE: u8 = 8;

/// A TCP connection to `server` from `source` (any address of 127/8), given 10 s.
pub async fn connect(source: Ipv4Addr, server: SocketAddr) -> Result<TcpStream, String> {
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    socket
        .bind(SocketAddr::from((source, 0)))
        .map_err(|e| format!("bind {source}: {e}"))?;
    match tokio::time::timeout(Duration::from_secs(10), socket.connect(server)).await {
        Ok(Ok(tcp)) => Ok(tcp),
        Ok(Err(e)) => Err(format!("connect from {source}: {e}")),
        Err(_) => Err(format!("connect from {source}: no answer in 10 s")),
    }
}

/// Why a WebSocket upgrade did not happen.
pub enum NoUpgrade {
    /// Closed before any answer: refused by a cap.
    Refused,
    Other(String),
}

/// Asks for a WebSocket and reads the answer's head; returns the bytes that followed it.
pub async fn upgrade(tcp: &mut TcpStream) -> Result<Vec<u8>, NoUpgrade> {
    if tcp.write_all(UPGRADE_REQUEST).await.is_err() {
        return Err(NoUpgrade::Refused);
    }
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(15), tcp.read(&mut buffer))
            .await
            .map_err(|_| NoUpgrade::Other("no answer to the upgrade in 15 s".into()))?;
        match read {
            Ok(0) | Err(_) if head.is_empty() => return Err(NoUpgrade::Refused),
            Ok(0) | Err(_) => {
                return Err(NoUpgrade::Other(format!(
                    "closed mid-answer: {:?}",
                    String::from_utf8_lossy(&head)
                )));
            }
            Ok(n) => head.extend_from_slice(&buffer[..n]),
        }
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            if !head.starts_with(b"HTTP/1.1 101") {
                return Err(NoUpgrade::Other(format!(
                    "upgrade answered {:?}",
                    String::from_utf8_lossy(&head[..end])
                )));
            }
            return Ok(head.split_off(end + 4));
        }
        if head.len() > 8 * 1024 {
            return Err(NoUpgrade::Other("an endless answer head".into()));
        }
    }
}

/// A client frame's header announcing `len` payload bytes. The mask key is zero, so the payload
/// goes as it is (a masked frame all the same, as clients must send).
pub fn frame_header(opcode: u8, len: u64) -> Vec<u8> {
    let mut header = vec![0x80 | opcode];
    if len < 126 {
        header.push(0x80 | len as u8);
    } else if len <= u64::from(u16::MAX) {
        header.push(0x80 | 126);
        header.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        header.push(0x80 | 127);
        header.extend_from_slice(&len.to_be_bytes());
    }
    header.extend_from_slice(&[0; 4]);
    header
}

pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = frame_header(opcode, payload.len() as u64);
    frame.extend_from_slice(payload);
    frame
}

/// A protocol connection the test reads (the spammers' setup and log-ins).
pub struct Ws {
    pub tcp: TcpStream,
    buffer: Vec<u8>,
    next_id: u64,
}

impl Ws {
    pub async fn open(server: SocketAddr, source: Ipv4Addr) -> Result<Self, String> {
        let mut tcp = connect(source, server).await?;
        let buffer = upgrade(&mut tcp).await.map_err(|no| match no {
            NoUpgrade::Refused => "upgrade refused".to_owned(),
            NoUpgrade::Other(why) => why,
        })?;
        Ok(Self {
            tcp,
            buffer,
            next_id: 1,
        })
    }

    /// Sends `request` and reads up to its answer (an error answer is an `Err`).
    pub async fn request(&mut self, request: Request) -> Result<Reply, String> {
        let id = self.next_id;
        self.next_id += 1;
        let bytes = chapar_wire::encode(&v1::ClientFrame {
            request_id: id,
            request: Some(request),
        });
        self.tcp
            .write_all(&frame(OP_BINARY, &bytes))
            .await
            .map_err(|e| format!("write: {e}"))?;
        loop {
            while let Some((opcode, payload)) = self.take_frame() {
                if opcode == OP_CLOSE {
                    return Err("the server closed the connection".into());
                }
                if opcode != OP_BINARY {
                    continue;
                }
                let frame: v1::ServerFrame =
                    chapar_wire::decode(&payload).map_err(|e| format!("decode: {e}"))?;
                if let Some(v1::server_frame::Kind::Response(response)) = frame.kind
                    && response.request_id == id
                {
                    return match response.result {
                        Some(Reply::Error(e)) => Err(format!("error {}: {}", e.code, e.message)),
                        Some(reply) => Ok(reply),
                        None => Err("an empty response".into()),
                    };
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout(Duration::from_secs(20), self.tcp.read(&mut chunk)).await {
                Err(_) => return Err("no answer in 20 s".into()),
                Ok(Ok(0)) => return Err("the server closed the connection".into()),
                Ok(Err(e)) => return Err(format!("read: {e}")),
                Ok(Ok(n)) => self.buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Takes one whole server frame (unmasked, never fragmented) from the buffer.
    fn take_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let b = &self.buffer;
        if b.len() < 2 {
            return None;
        }
        let (len, at) = match b[1] & 0x7F {
            126 if b.len() >= 4 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 if b.len() >= 10 => (
                u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => return None,
            short => (usize::from(short), 2),
        };
        if b.len() < at + len {
            return None;
        }
        let opcode = b[0] & 0x0F;
        let payload = b[at..at + len].to_vec();
        self.buffer.drain(..at + len);
        Some((opcode, payload))
    }

    pub async fn hello(&mut self) -> Result<v1::HelloOk, String> {
        match self
            .request(Request::Hello(v1::Hello {
                protocol_version: chapar_wire::PROTOCOL_VERSION,
                ..Default::default()
            }))
            .await?
        {
            Reply::HelloOk(ok) => Ok(ok),
            other => Err(format!("Hello answered {other:?}")),
        }
    }
}
