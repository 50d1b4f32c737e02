//! Prometheus metrics in the text exposition format, kept with atomics (no registry crate).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the request latency histogram, in seconds.
const LATENCY_BUCKETS_SECONDS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

/// A limit a client met (see `crate::limits`): counted per limit in `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    /// A connection refused: the server holds its most connections.
    ConnectionsMax,
    /// A connection refused: its address holds its most connections.
    ConnectionsPerAddress,
    /// A protocol connection closed: it did not log in in time.
    LoginTimeout,
    /// A protocol connection closed: its client went quiet.
    IdleTimeout,
    /// A protocol connection closed: its client stopped taking frames.
    WriteTimeout,
    /// A push dropped: the connection's byte budget was full (its client resynchronises).
    ConnectionBytes,
    /// A registration refused: its address registered too often.
    RegistrationRate,
    /// A registration refused: no valid invite.
    Invite,
    /// A claim of another account's key packages refused: too often.
    ClaimRate,
    /// A device added or revoked too often.
    DeviceChangeRate,
    /// An account wrote its most bytes today.
    AccountBytes,
    /// An account keeps its most key package bytes.
    KeyPackageBytes,
    /// A download cut off: its client did not take the next bytes in time.
    DownloadIdle,
    /// A device's oldest connection closed: it opened more than its most.
    ConnectionsPerDevice,
    /// A socket closed: a write to it made no progress for the write timeout (HTTP
    /// included; a protocol connection's own write timeout usually comes first).
    SocketWriteTimeout,
    /// A claim served last-resort packages: the account gave out its most one-time ones.
    OneTimeClaims,
    /// A registration refused: its proof of work falls short.
    ProofOfWork,
    /// A link request refused: its address filed too many this hour.
    LinkRate,
}

impl LimitHit {
    const ALL: [Self; 18] = [
        Self::ConnectionsMax,
        Self::ConnectionsPerAddress,
        Self::LoginTimeout,
        Self::IdleTimeout,
        Self::WriteTimeout,
        Self::ConnectionBytes,
        Self::RegistrationRate,
        Self::Invite,
        Self::ClaimRate,
        Self::DeviceChangeRate,
        Self::AccountBytes,
        Self::KeyPackageBytes,
        Self::DownloadIdle,
        Self::ConnectionsPerDevice,
        Self::SocketWriteTimeout,
        Self::OneTimeClaims,
        Self::ProofOfWork,
        Self::LinkRate,
    ];

    /// The label value in `/metrics`.
    pub fn name(self) -> &'static str {
        match self {
            Self::ConnectionsMax => "connections_max",
            Self::ConnectionsPerAddress => "connections_per_address_max",
            Self::LoginTimeout => "login_timeout",
            Self::IdleTimeout => "idle_timeout",
            Self::WriteTimeout => "write_timeout",
            Self::ConnectionBytes => "connection_bytes_max",
            Self::RegistrationRate => "registrations_per_address_per_hour",
            Self::Invite => "invite_codes",
            Self::ClaimRate => "claims_per_account_pair_per_hour",
            Self::DeviceChangeRate => "device_changes_per_account_per_hour",
            Self::AccountBytes => "account_bytes_per_day",
            Self::KeyPackageBytes => "key_package_bytes_per_account_max",
            Self::DownloadIdle => "download_idle_timeout",
            Self::ConnectionsPerDevice => "connections_per_device_max",
            Self::SocketWriteTimeout => "socket_write_timeout",
            Self::OneTimeClaims => "one_time_claims_per_account_per_hour",
            Self::ProofOfWork => "registration_pow_bits",
            Self::LinkRate => "links_per_address_per_hour",
        }
    }
}

/// The server's counters.
#[derive(Default)]
pub struct Metrics {
    /// Limits met, by [`LimitHit`].
    limit_hits: [AtomicU64; LimitHit::ALL.len()],
    /// Connections (HTTP or WebSocket) open now.
    pub sockets_open: AtomicI64,
    /// Open WebSocket connections.
    pub connections_open: AtomicI64,
    /// WebSocket connections accepted since start.
    pub connections_total: AtomicU64,
    /// Requests handled.
    pub requests_total: AtomicU64,
    /// Requests that ended in an error response.
    pub request_errors_total: AtomicU64,
    /// Application messages stored (not counting idempotent retries).
    pub messages_total: AtomicU64,
    /// Commits and proposals stored.
    pub handshakes_total: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_SECONDS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
    /// File bytes committed by uploads.
    pub file_bytes_uploaded_total: AtomicU64,
    /// File bytes sent by downloads.
    pub file_bytes_downloaded_total: AtomicU64,
    /// Uploads that became complete blobs.
    pub file_uploads_completed_total: AtomicU64,
    /// Blobs and uploads deleted by garbage collection.
    pub file_blobs_deleted_total: AtomicU64,
}

impl Metrics {
    /// Counts a limit a client met.
    pub fn hit(&self, limit: LimitHit) {
        let at = LimitHit::ALL.iter().position(|l| *l == limit).unwrap_or(0);
        self.limit_hits[at].fetch_add(1, Ordering::Relaxed);
    }

    /// How often `limit` was met.
    pub fn hits(&self, limit: LimitHit) -> u64 {
        let at = LimitHit::ALL.iter().position(|l| *l == limit).unwrap_or(0);
        self.limit_hits[at].load(Ordering::Relaxed)
    }

    /// Records one request's handling time.
    pub fn observe_latency(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        for (bound, bucket) in LATENCY_BUCKETS_SECONDS.iter().zip(&self.latency_buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let counters = [
            (
                "chapar_connections_total",
                "WebSocket connections accepted.",
                load(&self.connections_total),
            ),
            (
                "chapar_requests_total",
                "Requests handled.",
                load(&self.requests_total),
            ),
            (
                "chapar_request_errors_total",
                "Requests answered with an error.",
                load(&self.request_errors_total),
            ),
            (
                "chapar_messages_total",
                "Application messages stored.",
                load(&self.messages_total),
            ),
            (
                "chapar_handshakes_total",
                "MLS commits and proposals stored.",
                load(&self.handshakes_total),
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP chapar_connections_open Open WebSocket connections.\n# TYPE chapar_connections_open gauge\nchapar_connections_open {}",
            self.connections_open.load(Ordering::Relaxed)
        );
        let name = "chapar_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to handle a request.\n# TYPE {name} histogram"
        );
        for (bound, bucket) in LATENCY_BUCKETS_SECONDS.iter().zip(&self.latency_buckets) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", load(bucket));
        }
        let count = load(&self.latency_count);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            load(&self.latency_sum_micros) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
        self.render_files(&mut out);
        self.render_limits(&mut out);
        out
    }

    fn render_limits(&self, out: &mut String) {
        let refused =
            self.hits(LimitHit::ConnectionsMax) + self.hits(LimitHit::ConnectionsPerAddress);
        let _ = writeln!(
            out,
            "# HELP chapar_connections_refused_total Connections refused by a connection cap.\n\
             # TYPE chapar_connections_refused_total counter\nchapar_connections_refused_total {refused}"
        );
        let _ = writeln!(
            out,
            "# HELP chapar_sockets_open Connections open now (HTTP and WebSocket).\n\
             # TYPE chapar_sockets_open gauge\nchapar_sockets_open {}",
            self.sockets_open.load(Ordering::Relaxed)
        );
        let name = "chapar_limit_hits_total";
        let _ = writeln!(
            out,
            "# HELP {name} Limits clients met.\n# TYPE {name} counter"
        );
        for limit in LimitHit::ALL {
            let _ = writeln!(
                out,
                "{name}{{limit=\"{}\"}} {}",
                limit.name(),
                self.hits(limit)
            );
        }
    }

    fn render_files(&self, out: &mut String) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let counters = [
            (
                "chapar_file_bytes_uploaded_total",
                "File bytes committed by uploads.",
                load(&self.file_bytes_uploaded_total),
            ),
            (
                "chapar_file_bytes_downloaded_total",
                "File bytes sent by downloads.",
                load(&self.file_bytes_downloaded_total),
            ),
            (
                "chapar_file_uploads_completed_total",
                "Uploads that became complete blobs.",
                load(&self.file_uploads_completed_total),
            ),
            (
                "chapar_file_blobs_deleted_total",
                "Blobs and uploads deleted by garbage collection.",
                load(&self.file_blobs_deleted_total),
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.observe_latency(Duration::from_micros(300));
        m.observe_latency(Duration::from_millis(20));
        let text = m.render();
        assert!(text.contains("chapar_request_duration_seconds_bucket{le=\"0.0005\"} 1"));
        assert!(text.contains("chapar_request_duration_seconds_bucket{le=\"0.025\"} 2"));
        assert!(text.contains("chapar_request_duration_seconds_count 2"));
    }
}
