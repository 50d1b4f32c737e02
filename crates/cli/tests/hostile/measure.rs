//! What the test measures of the server and the machine while the attack runs: the server's
//! resident memory, the kernel's listen-queue overflows, `/metrics` read and parsed, and how
//! late this process's own timers fire.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::harness;

/// Resident and peak resident memory of process `pid`, in bytes.
pub fn memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// The kernel's count of connections dropped because a listen queue was full (this network
/// namespace, all listeners).
pub fn listen_overflows() -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find_map(|(name, value)| (name == "ListenOverflows").then(|| value.parse().ok()))
        .flatten()
        .unwrap_or(0)
}

/// GET /metrics from the operators' listener.
pub async fn metrics_text(addr: &str) -> String {
    let addr = addr.to_owned();
    let get = tokio::task::spawn_blocking(move || harness::http_get(&addr, "/metrics").1);
    tokio::time::timeout(Duration::from_secs(10), get)
        .await
        .expect("/metrics answers")
        .unwrap()
}

/// A metric's value: `name` is the whole name with labels, e.g. `chapar_sockets_open`.
pub fn metric(text: &str, name: &str) -> i64 {
    let prefix = format!("{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

/// How many times `/metrics` says the server met `limit`.
pub fn limit_hits(text: &str, limit: &str) -> i64 {
    metric(
        text,
        &format!("chapar_limit_hits_total{{limit=\"{limit}\"}}"),
    )
}

/// What the sampler saw of the server while the attack ran.
#[derive(Default)]
pub struct Samples {
    pub rss_bytes_first: u64,
    pub rss_bytes_peak: u64,
    pub sockets_open_peak: i64,
    count: u64,
}

/// Samples the server (process `pid`, operators' listener `metrics_addr`) until `sampling` is
/// cleared: its RSS every 100 ms, its open sockets with every other sample.
pub fn spawn_sampler(
    pid: u32,
    metrics_addr: String,
    sampling: Arc<AtomicBool>,
) -> JoinHandle<Samples> {
    tokio::spawn(async move {
        let mut samples = Samples::default();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        while sampling.load(Ordering::Relaxed) {
            tick.tick().await;
            if let Some((rss, _)) = memory(pid) {
                if samples.count == 0 {
                    samples.rss_bytes_first = rss;
                }
                samples.rss_bytes_peak = samples.rss_bytes_peak.max(rss);
            }
            if samples.count % 2 == 0 {
                let text = metrics_text(&metrics_addr).await;
                samples.sockets_open_peak = samples
                    .sockets_open_peak
                    .max(metric(&text, "chapar_sockets_open"));
            }
            samples.count += 1;
        }
        samples
    })
}

/// Measures until `sampling` is cleared how late this process's own timers fire, the worst in
/// `lag_max_micros`: a close seen late may be the test's lateness.
pub fn spawn_canary(sampling: Arc<AtomicBool>, lag_max_micros: Arc<AtomicUsize>) -> JoinHandle<()> {
    tokio::spawn(async move {
        while sampling.load(Ordering::Relaxed) {
            let asked = Instant::now();
            tokio::time::sleep(Duration::from_millis(10)).await;
            let late = asked.elapsed().saturating_sub(Duration::from_millis(10));
            lag_max_micros.fetch_max(late.as_micros() as usize, Ordering::Relaxed);
        }
    })
}
