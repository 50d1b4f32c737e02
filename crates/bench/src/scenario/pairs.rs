//! `pairs`: N device pairs, each pair a group of two, both sides sending to the other at a fixed
//! offered rate (or ramping up to find the highest sustained rate), optionally side by side with
//! the same workload on NATS JetStream.

use std::sync::Arc;
use std::time::Duration;

use chapar_wire::v1::{self, client_frame::Request};

use super::Common;
use crate::device::{self, Device, message_id, stamped_payload};
use crate::nats::{self, NatsConn, NatsServer};
use crate::pacer::{Phase, SendFn, run_phase};
use crate::server::ServerUnderTest;
use crate::stats::{Recorder, now_ns};

/// `pairs` options.
#[derive(clap::Args, Clone)]
pub struct Args {
    /// Device pairs.
    #[arg(long, default_value_t = 20)]
    pub pairs: usize,
    /// Offered messages per second, all senders together.
    #[arg(long, default_value_t = 10_000.0)]
    pub rate: f64,
    /// Ramp the rate up (×1.5 per step) until the server stops keeping up; report the best step.
    #[arg(long)]
    pub max: bool,
    /// First rate of the ramp.
    #[arg(long, default_value_t = 2_000.0)]
    pub rate_start: f64,
    /// A step keeps up when it delivers ≥ 95% of the offered rate with p99 at most this.
    #[arg(long, default_value_t = 100.0)]
    pub max_p99_ms: f64,
    /// Plaintext bytes per message.
    #[arg(long, default_value_t = 200)]
    pub size: usize,
    /// Also run the same workload against NATS JetStream (file store) and report ratios.
    #[arg(long)]
    pub nats: bool,
}

/// What one target (Chapar or NATS) did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TargetReport {
    /// The best (or only) phase.
    pub result: Phase,
    /// Every phase of a ramp.
    pub steps: Vec<Phase>,
    /// Server CPU over all phases, percent of one core.
    pub server_cpu_percent: Option<f64>,
    /// Server peak RSS.
    pub server_peak_rss_bytes: Option<u64>,
}

/// Sets up `pairs` Chapar pairs sending `size`-byte messages; returns one send function per
/// device, and the devices.
pub(crate) async fn chapar_senders(
    common: &Common,
    pairs: usize,
    size: usize,
    recorder: &Arc<Recorder>,
) -> anyhow::Result<(Vec<SendFn>, Vec<Arc<Device>>)> {
    let (mut senders, mut devices): (Vec<SendFn>, _) = (Vec::new(), Vec::new());
    for p in 0..pairs {
        let a = common
            .timed_device(&common.username("pa", p), recorder)
            .await?;
        let b = common
            .timed_device(&common.username("pb", p), recorder)
            .await?;
        let (group, epoch) = device::form_group(&[a.clone(), b.clone()]).await?;
        devices.extend([a.clone(), b.clone()]);
        for dev in [a, b] {
            // Message ids must stay unique across phases, or the server dedups them as retries.
            let ids = Arc::new(std::sync::atomic::AtomicU64::new(0));
            senders.push(Arc::new(move |due, counter| {
                let dev = dev.clone();
                let id = ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Box::pin(async move {
                    let ciphertext = device::seal(&dev, &stamped_payload(due, counter, size))?;
                    dev.conn
                        .send_nowait(Request::SendMessage(v1::SendMessage {
                            group_id: group.as_bytes().to_vec(),
                            epoch,
                            message_id: message_id(dev.id, id),
                            ciphertext,
                            // The load generator never changes devices, so rosters stay at version 0.
                            roster_version: 0,
                            ..Default::default()
                        }))
                        .await
                })
            }));
        }
    }
    Ok((senders, devices))
}

/// Sets up the same pairs on NATS: publish to the peer's subject with a JetStream ack inbox.
async fn nats_senders(
    server: &NatsServer,
    args: &Args,
    recorder: &Arc<Recorder>,
) -> anyhow::Result<Vec<SendFn>> {
    nats::create_stream(server.addr, "BENCH", "pairs.>").await?;
    let mut senders: Vec<SendFn> = Vec::new();
    for p in 0..args.pairs {
        for side in 0..2 {
            let rec = recorder.clone();
            let inbox = format!("_INBOX.{p}.{side}");
            let on_message: Arc<dyn Fn(nats::Delivery) + Send + Sync> = Arc::new(move |d| {
                if d.sid == 1 {
                    match device::stamp_of(&d.payload) {
                        Some(stamp) => {
                            rec.record_ns(now_ns().saturating_sub(stamp));
                            Recorder::bump(&rec.delivered);
                        }
                        None => Recorder::bump(&rec.errors),
                    }
                } else if d.payload.windows(7).any(|w| w == b"\"error\"") {
                    Recorder::bump(&rec.errors);
                } else {
                    Recorder::bump(&rec.acked);
                }
            });
            let conn = Arc::new(
                NatsConn::open(
                    server.addr,
                    &[format!("pairs.{p}.{side}"), inbox.clone()],
                    on_message,
                )
                .await?,
            );
            let (to, size) = (format!("pairs.{p}.{}", 1 - side), args.size);
            senders.push(Arc::new(move |due, counter| {
                let (conn, to, inbox) = (conn.clone(), to.clone(), inbox.clone());
                Box::pin(async move {
                    conn.publish(&to, &inbox, &stamped_payload(due, counter, size))
                        .await
                })
            }));
        }
    }
    Ok(senders)
}

async fn drive(
    senders: &[SendFn],
    args: &Args,
    duration: Duration,
    recorder: &Arc<Recorder>,
) -> TargetReport {
    if !args.max {
        recorder.reset();
        let result = run_phase(senders, args.rate, duration, recorder).await;
        return TargetReport {
            steps: vec![result.clone()],
            result,
            server_cpu_percent: None,
            server_peak_rss_bytes: None,
        };
    }
    let mut steps: Vec<Phase> = Vec::new();
    let mut rate = args.rate_start;
    loop {
        recorder.reset();
        let phase = run_phase(senders, rate, duration, recorder).await;
        let kept_up = phase.messages_per_sec >= 0.95 * rate
            && phase.latency.p99_ms <= args.max_p99_ms
            && phase.errors == 0;
        eprintln!(
            "  offered {:>9.0}/s  delivered {:>9.0}/s  p50 {:>7.2} ms  p99 {:>8.2} ms  errors {}  {}",
            rate,
            phase.messages_per_sec,
            phase.latency.p50_ms,
            phase.latency.p99_ms,
            phase.errors,
            if kept_up { "kept up" } else { "fell behind" }
        );
        steps.push(phase);
        if !kept_up || steps.len() >= 16 {
            break;
        }
        rate *= 1.5;
    }
    let best = steps
        .iter()
        .rev()
        .find(|p| {
            p.messages_per_sec >= 0.95 * p.offered_per_sec
                && p.latency.p99_ms <= args.max_p99_ms
                && p.errors == 0
        })
        .unwrap_or(&steps[0])
        .clone();
    TargetReport {
        result: best,
        steps,
        server_cpu_percent: None,
        server_peak_rss_bytes: None,
    }
}

/// Runs the scenario against Chapar (and NATS if asked).
pub async fn run(
    common: &Common,
    args: &Args,
    duration: Duration,
    server: &ServerUnderTest,
) -> anyhow::Result<(TargetReport, Option<TargetReport>)> {
    let recorder = Arc::new(Recorder::default());
    let (senders, _) = chapar_senders(common, args.pairs, args.size, &recorder).await?;
    eprintln!("chapar: {} senders", senders.len());
    let mark = server.cpu_mark();
    let mut chapar = drive(&senders, args, duration, &recorder).await;
    let usage = server.usage_since(&mark);
    (chapar.server_cpu_percent, chapar.server_peak_rss_bytes) =
        (usage.cpu_percent, usage.peak_rss_bytes);
    drop(senders);
    let nats = if args.nats {
        let server = NatsServer::start()?;
        let recorder = Arc::new(Recorder::default());
        let senders = nats_senders(&server, args, &recorder).await?;
        eprintln!("nats jetstream: {} senders", senders.len());
        let (ticks, at) = (server.cpu_ticks(), std::time::Instant::now());
        let mut report = drive(&senders, args, duration, &recorder).await;
        report.server_cpu_percent = match (ticks, server.cpu_ticks()) {
            (Some(a), Some(b)) => Some((b - a) as f64 / 100.0 / at.elapsed().as_secs_f64() * 100.0),
            _ => None,
        };
        report.server_peak_rss_bytes = server.peak_rss_bytes();
        Some(report)
    } else {
        None
    };
    Ok((chapar, nats))
}
