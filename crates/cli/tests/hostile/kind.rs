//! What an attack connection does (`Kind`), how long the server may keep each kind, and how
//! one ended (`Outcome`, `Record`).

use std::time::{Duration, Instant};

use crate::setup::{HANDSHAKE_TIMEOUT, LOGIN_TIMEOUT, WRITE_TIMEOUT};

/// Slack on every deadline: the machine may be loaded (CI runners have two cores).
const MARGIN: Duration = Duration::from_secs(5);
/// A connection still open this long after it began is reported as never closed.
pub const NEVER_CLOSED: Duration = Duration::from_secs(30);

/// What an attack connection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Connects and sends nothing, or half a request head, then waits.
    HalfOpen,
    /// Sends a request head one byte every 250 ms, never finishing it.
    Slowloris,
    /// Upgrades to a WebSocket and never says anything.
    Silent,
    /// Like `Silent`, from the one address filled to its cap.
    CapHeld,
    /// One more connection from the full address: refused unread (or, if a place freed up,
    /// held like `Silent`).
    CapExtra,
    /// Announces a frame of 2^40 bytes.
    HugeFrame,
    /// Announces a frame one byte over `FRAME_BYTES_MAX` and starts sending it.
    OverMaxFrame,
    /// Sends three quarters of a frame of exactly `FRAME_BYTES_MAX` bytes, then stalls.
    PartialFrame,
    /// Sends random bytes (mostly not WebSocket framing).
    Garbage,
    /// Sends well-framed messages that are not protocol frames (a text one, random binary).
    BadMessages,
    /// Logged in, asks for large log pages without end and never reads.
    Spammer,
}

pub const FRAME_KINDS: [Kind; 5] = [
    Kind::HugeFrame,
    Kind::OverMaxFrame,
    Kind::PartialFrame,
    Kind::Garbage,
    Kind::BadMessages,
];

impl Kind {
    /// How long the server may keep a connection of this kind: (at least, at most). "At
    /// least" tells a connection held to its deadline from one refused or dropped early.
    pub fn bounds(self) -> (Duration, Duration) {
        match self {
            Self::HalfOpen | Self::Slowloris => {
                (HANDSHAKE_TIMEOUT * 3 / 4, HANDSHAKE_TIMEOUT + MARGIN)
            }
            Self::Silent
            | Self::CapHeld
            | Self::CapExtra
            | Self::PartialFrame
            | Self::BadMessages => (LOGIN_TIMEOUT * 3 / 4, LOGIN_TIMEOUT + MARGIN),
            Self::HugeFrame | Self::OverMaxFrame | Self::Garbage => {
                (Duration::ZERO, LOGIN_TIMEOUT + MARGIN)
            }
            // The writer gives up on a frame after the write timeout, then waits as long again
            // for the close frame to go out; filling the client's buffers comes first.
            Self::Spammer => (WRITE_TIMEOUT * 3 / 4, 2 * WRITE_TIMEOUT + 2 * MARGIN),
        }
    }
}

/// How one attack connection ended.
#[derive(Debug)]
pub enum Outcome {
    /// The server closed it this long after it was in place.
    Closed(Duration),
    /// The server closed it before answering anything (a connection cap).
    Refused(Duration),
    /// Still open after `NEVER_CLOSED`.
    NeverClosed,
    /// The attack itself failed (could not connect, an unexpected answer).
    Failed(String),
}

#[derive(Debug)]
pub struct Record {
    pub kind: Kind,
    pub outcome: Outcome,
    /// When its end was seen.
    pub ended: Instant,
}

pub fn ended(kind: Kind, opened: Instant, closed: bool) -> Record {
    let now = Instant::now();
    Record {
        kind,
        outcome: if closed {
            Outcome::Closed(now - opened)
        } else {
            Outcome::NeverClosed
        },
        ended: now,
    }
}

pub fn failed(kind: Kind, why: String) -> Record {
    let now = Instant::now();
    Record {
        kind,
        outcome: Outcome::Failed(why),
        ended: now,
    }
}
