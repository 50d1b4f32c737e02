//! Prometheus metrics in the text exposition format, kept with atomics (no registry crate).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the request latency histogram, in seconds.
const LATENCY_BUCKETS_SECONDS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

/// The server's counters.
#[derive(Default)]
pub struct Metrics {
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
        out
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
