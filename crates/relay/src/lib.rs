//! `chapar relay`: a forwarder volunteers run in front of a Chapar server, as MTProxy or a Tor
//! bridge is run, so that people whose network blocks the server's address reach it through
//! the relay's. It forwards the bytes of each client connection to the server and back, and
//! nothing else: it holds no key, parses nothing, and cannot tell one message type from
//! another. Clients speak TLS *through* it to the server, checking the server's key pin (the
//! pin in a relay link is the server's), so the relay sees only a TLS stream; and the server's
//! identity, which a device's login is bound to, is the server's, so a relay cannot log in
//! for anyone either.
//!
//! Limits (named in [`RelayLimits`]): connections at once, in all and per address (an IPv6
//! /64 counts as one address, as on the server); a deadline to reach the server; an idle
//! deadline (no byte either way); and a fixed buffer per direction, so memory is bounded by
//! the connection cap. The operators' listener serves `/metrics` (sessions, bytes, refusals).
//!
//! Not here yet: the camouflage and looks-like-nothing transports (a censor that blocks by
//! protocol or SNI still sees TLS, and the relay answers probes as the server would), and
//! bandwidth shaping per client.

mod metrics;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

pub use metrics::RelayMetrics;

/// Bytes buffered per direction of a connection.
pub const RELAY_BUFFER_BYTES: usize = 16 * 1024;

/// The relay's limits on clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayLimits {
    /// Connections open at once, in all.
    pub connections_max: usize,
    /// Connections open at once from one address (an IPv6 /64 is one).
    pub connections_per_address_max: usize,
    /// How long reaching the server may take.
    pub connect_timeout: Duration,
    /// How long a connection may go without a byte either way; the protocol's own pings
    /// (every 25 s from a listening client) keep a live one open.
    pub idle_timeout: Duration,
}

impl Default for RelayLimits {
    fn default() -> Self {
        Self {
            connections_max: 4_096,
            connections_per_address_max: 64,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// Where the relay listens and what it forwards to.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The address clients connect to.
    pub listen: SocketAddr,
    /// The operators' listener (`/metrics`); keep it local.
    pub metrics_listen: SocketAddr,
    /// The server's `host:port`.
    pub upstream: String,
    /// Limits on clients.
    pub limits: RelayLimits,
}

/// Where a started relay listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// The clients' listener.
    pub address: SocketAddr,
    /// The operators' listener.
    pub metrics: SocketAddr,
}

/// Why the relay could not run.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// A listener could not be bound.
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
}

/// Connections open now per address, and in all.
#[derive(Default)]
struct Open {
    per_address: HashMap<IpAddr, usize>,
    total: usize,
}

/// A connection's place in [`Open`], given back on drop.
struct Slot {
    open: Arc<Mutex<Open>>,
    address: IpAddr,
    metrics: Arc<RelayMetrics>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.per_address.get_mut(&self.address) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.per_address.remove(&self.address);
            }
        }
        self.metrics.session_ended();
    }
}

fn admit(
    open: &Arc<Mutex<Open>>,
    limits: &RelayLimits,
    peer: IpAddr,
    metrics: &Arc<RelayMetrics>,
) -> Result<Slot, &'static str> {
    let address = chapar_types::net::address_key(Some(peer));
    let mut guard = open.lock().unwrap_or_else(|p| p.into_inner());
    if guard.total >= limits.connections_max {
        return Err("connections_max");
    }
    let count = guard.per_address.entry(address).or_insert(0);
    if *count >= limits.connections_per_address_max {
        return Err("connections_per_address_max");
    }
    *count += 1;
    guard.total += 1;
    metrics.session_started();
    Ok(Slot {
        open: open.clone(),
        address,
        metrics: metrics.clone(),
    })
}

/// Binds the listeners and relays until `shutdown` resolves. `on_ready` is called with the
/// bound addresses once the relay accepts connections.
pub async fn run(
    config: RelayConfig,
    on_ready: impl FnOnce(Bound),
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RelayError> {
    let listener = TcpListener::bind(config.listen).await?;
    let operators = TcpListener::bind(config.metrics_listen).await?;
    let metrics = Arc::new(RelayMetrics::default());
    on_ready(Bound {
        address: listener.local_addr()?,
        metrics: operators.local_addr()?,
    });
    tracing::info!(upstream = %config.upstream, "chapar relay listening");
    let metrics_server = tokio::spawn(metrics::serve(operators, metrics.clone()));
    let open = Arc::new(Mutex::new(Open::default()));
    let config = Arc::new(config);
    tokio::pin!(shutdown);
    loop {
        let (client, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, say: wait a little rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let slot = match admit(&open, &config.limits, peer.ip(), &metrics) {
            Ok(slot) => slot,
            Err(limit) => {
                metrics.refused(limit);
                continue;
            }
        };
        let (config, metrics) = (config.clone(), metrics.clone());
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(why) = forward(client, &config, &metrics).await {
                tracing::debug!(why, "relayed connection ended");
            }
        });
    }
    metrics_server.abort();
    Ok(())
}

/// Connects to the server and moves bytes both ways until both sides have closed, or the
/// connection goes idle (no byte either way for the idle deadline). The two directions run
/// side by side, so a write waiting in one never holds up the other.
async fn forward(
    client: TcpStream,
    config: &RelayConfig,
    metrics: &RelayMetrics,
) -> Result<(), &'static str> {
    let _ = client.set_nodelay(true);
    let server = match tokio::time::timeout(
        config.limits.connect_timeout,
        TcpStream::connect(&config.upstream),
    )
    .await
    {
        Ok(Ok(server)) => server,
        _ => {
            metrics.refused("upstream_unreachable");
            return Err("the server cannot be reached");
        }
    };
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let started = tokio::time::Instant::now();
    // Milliseconds since `started` of the last byte moved either way.
    let last_moved = std::sync::atomic::AtomicU64::new(0);
    let idle = config.limits.idle_timeout;
    let up = pump(client_read, server_write, &last_moved, started, idle, |n| {
        metrics.bytes_up(n)
    });
    let down = pump(server_read, client_write, &last_moved, started, idle, |n| {
        metrics.bytes_down(n)
    });
    let (up, down) = tokio::join!(up, down);
    if up.is_err() || down.is_err() {
        metrics.refused("idle_timeout");
        return Err("idle");
    }
    Ok(())
}

/// Moves bytes from `from` to `to` until `from` ends (then half-closes `to`), or nothing has
/// moved either way (`last_moved`, shared with the other direction) for `idle`.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    last_moved: &std::sync::atomic::AtomicU64,
    started: tokio::time::Instant,
    idle: Duration,
    count: impl Fn(usize),
) -> Result<(), ()> {
    use std::sync::atomic::Ordering;
    let mut buffer = vec![0u8; RELAY_BUFFER_BYTES];
    let since_start = || u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    loop {
        let read = match tokio::time::timeout(idle, from.read(&mut buffer)).await {
            Ok(read) => read,
            Err(_) => {
                // Quiet this way; the other may still be busy.
                let quiet_ms = since_start().saturating_sub(last_moved.load(Ordering::Relaxed));
                if u128::from(quiet_ms) < idle.as_millis() {
                    continue;
                }
                return Err(());
            }
        };
        match read {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return Ok(());
            }
            Ok(n) => {
                count(n);
                last_moved.store(since_start(), Ordering::Relaxed);
                timed(idle, to.write_all(&buffer[..n])).await?;
                last_moved.store(since_start(), Ordering::Relaxed);
            }
        }
    }
}

async fn timed<T>(
    limit: Duration,
    write: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T, ()> {
    match tokio::time::timeout(limit, write).await {
        Ok(Ok(value)) => Ok(value),
        _ => Err(()),
    }
}
