//! The attack as a whole: its size and pacing, the source addresses it comes from, the state
//! its slots share (`Attack`), and the loops that keep every slot at full strength until it
//! stops, among them the one that fills an address to its cap and knocks past it.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::connections::{Rng, half_open, websocket};
use crate::kind::{Kind, Record};
use crate::setup::CONNECTIONS_PER_ADDRESS_MAX;
use crate::ws::connect;

/// Attack slots of each kind (scaled down if the open-file limit is too low for them all).
pub const HALF_OPEN_SLOTS: usize = 1_500;
pub const SLOWLORIS_SLOTS: usize = 500;
pub const SILENT_SLOTS: usize = 1_000;
/// Slots for each of the five frame attacks (`FRAME_KINDS`).
pub const FRAME_SLOTS_PER_KIND: usize = 60;
/// Connections past the per-address cap, opened while the cap is full.
pub const CAP_EXTRA: usize = 44;
/// The attack stops this long after it began even if the pair is still chatting.
pub const ATTACK_MAX: Duration = Duration::from_secs(40);
/// The shortest attack cycle: connections refused or closed at once must not become a flood.
pub const CYCLE_MIN: Duration = Duration::from_secs(1);
/// Connections being opened (connect plus upgrade) at once, and the least time between two
/// connects (2,000 a second, well above what the slots need once in place). Unpaced, the
/// slots' connects come in bursts of thousands that overflow the server's listen queue: the
/// kernel then drops handshakes (the client believes it is connected, the server has not
/// accepted it), which blurs the timings and can leave a silent client with a connection the
/// server never had.
const CONNECTS_AT_ONCE: usize = 128;
const CONNECT_INTERVAL: Duration = Duration::from_micros(500);

/// What every attack slot shares.
pub struct Attack {
    pub server: SocketAddr,
    pub stop: AtomicBool,
    connecting: Semaphore,
    /// When the next connection may be opened (see `CONNECT_INTERVAL`).
    next_connect: std::sync::Mutex<Instant>,
    /// Attack connections the test holds open now, and at most.
    pub open: AtomicUsize,
    pub open_peak: AtomicUsize,
    pub attempted: AtomicUsize,
}

impl Attack {
    /// The shared state of an attack on `server`, before any connection.
    pub fn new(server: SocketAddr) -> Self {
        Self {
            server,
            stop: AtomicBool::new(false),
            connecting: Semaphore::new(CONNECTS_AT_ONCE),
            next_connect: std::sync::Mutex::new(Instant::now()),
            open: AtomicUsize::new(0),
            open_peak: AtomicUsize::new(0),
            attempted: AtomicUsize::new(0),
        }
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Opens an attack connection from `source`: at most `CONNECTS_AT_ONCE` being opened and
    /// one per `CONNECT_INTERVAL`. The permit is for the caller to hold until the connection
    /// is in place.
    pub async fn connect(
        &self,
        source: Ipv4Addr,
    ) -> (tokio::sync::SemaphorePermit<'_>, Result<TcpStream, String>) {
        let permit = self.connecting.acquire().await.unwrap();
        self.attempted.fetch_add(1, Ordering::Relaxed);
        let at = {
            let mut next = self.next_connect.lock().unwrap();
            let at = (*next).max(Instant::now());
            *next = at + CONNECT_INTERVAL;
            at
        };
        tokio::time::sleep_until(at.into()).await;
        (permit, connect(source, self.server).await)
    }

    pub fn opened(&self) {
        let now = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.open_peak.fetch_max(now, Ordering::Relaxed);
    }

    pub fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The main attack's source addresses: 127.0.0.2 to 127.0.0.249.
pub fn attack_source(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 2 + (index % 248) as u8)
}
/// The address filled to its cap.
const CAP_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 250);
/// The spammers' addresses: 127.0.0.251 and up, one each (registrations are limited per
/// address).
pub fn spammer_source(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 251 + index as u8)
}

/// Runs one attack slot until the attack stops; returns what became of each connection.
pub async fn slot(attack: Arc<Attack>, index: usize, kind: Kind, seed: u64) -> Vec<Record> {
    let mut rng = Rng::new(seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let source = attack_source(index);
    let mut records = Vec::new();
    let mut cycle = 0;
    while !attack.stopped() {
        let started = Instant::now();
        records.push(match kind {
            Kind::HalfOpen | Kind::Slowloris => {
                half_open(&attack, source, kind, index + cycle).await
            }
            _ => websocket(&attack, source, kind, &mut rng, None).await,
        });
        cycle += 1;
        if attack.stopped() {
            break;
        }
        tokio::time::sleep_until(tokio::time::Instant::from_std(started + CYCLE_MIN)).await;
    }
    records
}

/// Fills the per-address cap from `CAP_SOURCE` with WebSockets that never log in, then knocks
/// `CAP_EXTRA` more times from there. Returns the connections' tasks and when the last extra
/// was answered.
pub async fn fill_the_cap(attack: &Arc<Attack>) -> (Vec<JoinHandle<Vec<Record>>>, Instant) {
    let mut tasks = Vec::new();
    for (kind, count) in [
        (Kind::CapHeld, CONNECTIONS_PER_ADDRESS_MAX),
        (Kind::CapExtra, CAP_EXTRA),
    ] {
        let (answered, mut answers) = tokio::sync::mpsc::channel(count);
        for index in 0..count {
            let (attack, answered) = (attack.clone(), answered.clone());
            tasks.push(tokio::spawn(async move {
                let mut rng = Rng::new(index as u64);
                vec![websocket(&attack, CAP_SOURCE, kind, &mut rng, Some(&answered)).await]
            }));
        }
        for _ in 0..count {
            answers.recv().await;
        }
    }
    (tasks, Instant::now())
}
