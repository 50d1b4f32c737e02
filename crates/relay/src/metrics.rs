//! The relay's counters, served as Prometheus text on the operators' listener: sessions open
//! and in all, bytes each way, and refusals by reason. Nothing per client is kept.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;

/// Why a connection was refused or cut, as counted.
const REASONS: [&str; 4] = [
    "connections_max",
    "connections_per_address_max",
    "upstream_unreachable",
    "idle_timeout",
];

/// The relay's counters.
#[derive(Default)]
pub struct RelayMetrics {
    sessions_open: AtomicI64,
    sessions_total: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    refused: Mutex<[u64; REASONS.len()]>,
}

impl RelayMetrics {
    pub(crate) fn session_started(&self) {
        self.sessions_open.fetch_add(1, Ordering::Relaxed);
        self.sessions_total.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn session_ended(&self) {
        self.sessions_open.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn bytes_up(&self, n: usize) {
        self.bytes_up.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn bytes_down(&self, n: usize) {
        self.bytes_down.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn refused(&self, reason: &str) {
        if let Some(i) = REASONS.iter().position(|r| *r == reason) {
            self.refused.lock().unwrap_or_else(|p| p.into_inner())[i] += 1;
        }
    }

    /// The counters as Prometheus text.
    pub fn render(&self) -> String {
        let mut out = format!(
            "# TYPE chapar_relay_sessions_open gauge\nchapar_relay_sessions_open {}\n\
             # TYPE chapar_relay_sessions_total counter\nchapar_relay_sessions_total {}\n\
             # TYPE chapar_relay_bytes_total counter\n\
             chapar_relay_bytes_total{{direction=\"up\"}} {}\n\
             chapar_relay_bytes_total{{direction=\"down\"}} {}\n\
             # TYPE chapar_relay_refused_total counter\n",
            self.sessions_open.load(Ordering::Relaxed),
            self.sessions_total.load(Ordering::Relaxed),
            self.bytes_up.load(Ordering::Relaxed),
            self.bytes_down.load(Ordering::Relaxed),
        );
        let refused = *self.refused.lock().unwrap_or_else(|p| p.into_inner());
        for (reason, count) in REASONS.iter().zip(refused) {
            out.push_str(&format!(
                "chapar_relay_refused_total{{reason=\"{reason}\"}} {count}\n"
            ));
        }
        out
    }
}

/// Serves `/metrics` and `/healthz` on `listener`.
pub(crate) async fn serve(listener: TcpListener, metrics: std::sync::Arc<RelayMetrics>) {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move { metrics.render() }
            }),
        );
    if let Err(e) = axum::serve(listener, router).await {
        tracing::warn!(error = %e, "the relay's metrics listener stopped");
    }
}
