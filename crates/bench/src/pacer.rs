//! Open-loop load: every sender's send times are fixed in advance (rate ÷ senders apart, senders
//! staggered), and latency is measured from the *scheduled* time, so a slow server cannot hide
//! its latency by slowing the senders down (no coordinated omission). How far the senders fell
//! behind their schedule is reported separately.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::stats::{Latency, Recorder, now_ns};

/// Sends one stamped payload: `(scheduled_ns, counter)`.
pub type SendFn =
    Arc<dyn Fn(u64, u64) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> + Send + Sync>;

/// What one phase at a fixed offered rate produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Phase {
    /// Offered messages per second (all senders together).
    pub offered_per_sec: f64,
    /// Delivered messages per second over the sending window.
    pub messages_per_sec: f64,
    /// Messages scheduled and sent.
    pub sent: u64,
    /// Sends the server acknowledged.
    pub acked: u64,
    /// Messages the receivers got.
    pub delivered: u64,
    /// Failed sends.
    pub errors: u64,
    /// Scheduled-send-to-receive latency.
    pub latency: Latency,
    /// How late senders were against their schedule (the tool's own lag).
    pub sender_lag: Latency,
}

/// Runs every sender at `rate` total for `duration`, then waits (bounded) for stragglers.
pub async fn run_phase(
    senders: &[SendFn],
    rate: f64,
    duration: Duration,
    recorder: &Arc<Recorder>,
) -> Phase {
    let n = senders.len().max(1) as u64;
    let interval_ns = ((n as f64 / rate) * 1e9) as u64;
    let start = now_ns() + 20_000_000;
    let end = start + duration.as_nanos() as u64;
    let lag = Arc::new(Recorder::default());
    let mut tasks = Vec::new();
    for (i, send) in senders.iter().enumerate() {
        let (send, lag) = (send.clone(), lag.clone());
        let offset = interval_ns * i as u64 / n;
        tasks.push(tokio::spawn(async move {
            let mut sent = 0u64;
            loop {
                let due = start + offset + sent * interval_ns;
                if due >= end {
                    return sent;
                }
                let now = now_ns();
                if due > now {
                    tokio::time::sleep(Duration::from_nanos(due - now)).await;
                }
                lag.record_ns(now_ns().saturating_sub(due));
                if send(due, sent).await.is_err() {
                    return sent;
                }
                sent += 1;
            }
        }));
    }
    let mut sent = 0;
    for task in tasks {
        sent += task.await.unwrap_or(0);
    }
    let send_window = (end - start) as f64 / 1e9;
    let deadline = now_ns() + 5_000_000_000;
    while Recorder::get(&recorder.delivered) + Recorder::get(&recorder.errors) < sent
        && now_ns() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let delivered = recorder.delivered.load(Ordering::Relaxed);
    Phase {
        offered_per_sec: rate,
        messages_per_sec: delivered as f64 / send_window,
        sent,
        acked: Recorder::get(&recorder.acked),
        delivered,
        errors: Recorder::get(&recorder.errors),
        latency: recorder.latency(),
        sender_lag: lag.latency(),
    }
}
