//! The attack connection kinds: half-open HTTP (nothing, half a head, or a head trickled
//! byte by byte) and WebSockets that stay silent or send huge, partial, garbage or
//! meaningless frames. Each is opened, held until the server closes it, and recorded.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use chapar_types::limits::FRAME_BYTES_MAX;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::attack::Attack;
use crate::kind::{Kind, NEVER_CLOSED, Outcome, Record, ended, failed};
use crate::ws::{NoUpgrade, OP_BINARY, OP_TEXT, frame, frame_header, upgrade};

/// A small xorshift generator: the attack's bytes need not be good randomness, only varied.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Reads until the server closes `tcp` (end of stream or reset), at most `NEVER_CLOSED`
/// after `from`; returns whether it closed.
async fn until_closed(tcp: &mut TcpStream, from: Instant) -> bool {
    let deadline = tokio::time::Instant::from_std(from + NEVER_CLOSED);
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// One half-open HTTP connection: nothing or half a head, or a head trickled byte by byte.
pub async fn half_open(attack: &Attack, source: Ipv4Addr, kind: Kind, variant: usize) -> Record {
    let (permit, tcp) = attack.connect(source).await;
    let mut tcp = match tcp {
        Ok(tcp) => tcp,
        Err(e) => return failed(kind, e),
    };
    drop(permit);
    attack.opened();
    let opened = Instant::now();
    let closed = if kind == Kind::Slowloris {
        let _ = tcp
            .write_all(b"GET /v1/ws HTTP/1.1\r\nHost: chapar\r\nX-Slow: ")
            .await;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut buffer = [0u8; 1024];
        let deadline = tokio::time::Instant::from_std(opened + NEVER_CLOSED);
        loop {
            tokio::select! {
                read = tcp.read(&mut buffer) => match read {
                    Ok(0) | Err(_) => break true,
                    Ok(_) => {}
                },
                _ = tick.tick() => {
                    if tcp.write_all(b"a").await.is_err() {
                        break true;
                    }
                }
                () = tokio::time::sleep_until(deadline) => break false,
            }
        }
    } else {
        if variant % 2 == 1 {
            let _ = tcp
                .write_all(b"GET /v1/ws HTTP/1.1\r\nHost: chapar\r\nUpgrade: websocket\r\n")
                .await;
        }
        until_closed(&mut tcp, opened).await
    };
    attack.closed();
    ended(kind, opened, closed)
}

/// One WebSocket attack connection of `kind`. `answered`, if given, hears once when the
/// upgrade was answered (or refused, or failed).
pub async fn websocket(
    attack: &Attack,
    source: Ipv4Addr,
    kind: Kind,
    rng: &mut Rng,
    answered: Option<&tokio::sync::mpsc::Sender<()>>,
) -> Record {
    let answer = || {
        if let Some(answered) = answered {
            let _ = answered.try_send(());
        }
    };
    let (permit, tcp) = attack.connect(source).await;
    let mut tcp = match tcp {
        Ok(tcp) => tcp,
        Err(e) => {
            answer();
            return failed(kind, e);
        }
    };
    attack.opened();
    let asked = Instant::now();
    let upgraded = upgrade(&mut tcp).await;
    drop(permit);
    answer();
    if let Err(no) = upgraded {
        attack.closed();
        let now = Instant::now();
        return Record {
            kind,
            outcome: match no {
                NoUpgrade::Refused => Outcome::Refused(now - asked),
                NoUpgrade::Other(why) => Outcome::Failed(why),
            },
            ended: now,
        };
    }
    let opened = Instant::now();
    let bytes = match kind {
        Kind::HugeFrame => {
            let mut bytes = frame_header(OP_BINARY, 1 << 40);
            bytes.extend(rng.bytes(1024));
            bytes
        }
        Kind::OverMaxFrame => {
            let mut bytes = frame_header(OP_BINARY, FRAME_BYTES_MAX as u64 + 1);
            bytes.extend(rng.bytes(64 * 1024));
            bytes
        }
        Kind::PartialFrame => {
            let mut bytes = frame_header(OP_BINARY, FRAME_BYTES_MAX as u64);
            bytes.extend(rng.bytes(FRAME_BYTES_MAX * 3 / 4));
            bytes
        }
        Kind::Garbage => rng.bytes(4 * 1024),
        Kind::BadMessages => {
            let mut bytes = frame(OP_TEXT, b"hello?");
            for _ in 0..8 {
                let len = 1 + rng.below(16 * 1024);
                bytes.extend(frame(OP_BINARY, &rng.bytes(len)));
            }
            bytes
        }
        _ => Vec::new(),
    };
    // A write the server cut off means it closed the connection: that is the end too.
    let closed = tcp.write_all(&bytes).await.is_err() || until_closed(&mut tcp, opened).await;
    attack.closed();
    ended(kind, opened, closed)
}
