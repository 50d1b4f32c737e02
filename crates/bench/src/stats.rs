//! Latency histograms and the figures a scenario reports.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;

/// Collects latencies (nanoseconds) and counters from many tasks.
pub struct Recorder {
    hist: Mutex<Histogram<u64>>,
    /// Messages delivered to a receiver.
    pub delivered: AtomicU64,
    /// Sends acknowledged by the server.
    pub acked: AtomicU64,
    /// Sends or deliveries that failed.
    pub errors: AtomicU64,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            // 1 µs to 100 s at 3 significant digits.
            hist: Mutex::new(
                Histogram::new_with_bounds(1_000, 100_000_000_000, 3)
                    .unwrap_or_else(|_| Histogram::new(3).expect("valid sigfig")),
            ),
            delivered: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Samples.
    pub samples: u64,
}

impl Recorder {
    /// Records one latency.
    pub fn record_ns(&self, ns: u64) {
        if let Ok(mut h) = self.hist.lock() {
            let _ = h.record(ns.max(1_000));
        }
    }

    /// Clears everything, between phases.
    pub fn reset(&self) {
        if let Ok(mut h) = self.hist.lock() {
            h.reset();
        }
        for counter in [&self.delivered, &self.acked, &self.errors] {
            counter.store(0, Ordering::Relaxed);
        }
    }

    /// Counts one event.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The percentiles so far.
    pub fn latency(&self) -> Latency {
        let Ok(h) = self.hist.lock() else {
            return Latency::default();
        };
        let ms = |ns: u64| ns as f64 / 1e6;
        Latency {
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            samples: h.len(),
        }
    }

    /// Counter value.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Nanoseconds since the first call: the shared clock of senders and receivers.
pub fn now_ns() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_nanos() as u64
}
