//! `fanout`: one sender into groups of 10, 100 and 1,000 devices. Reports the time until the last
//! member has each message (messages sent 50 ms apart) and deliveries per second for a burst.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chapar_wire::v1::{self, client_frame::Request};
use futures_util::{StreamExt, stream};

use super::Common;
use crate::conn::{Event, Handler};
use crate::device::{self, Device, message_id, stamped_payload};
use crate::stats::{Latency, Recorder, now_ns};

/// `fanout` options.
#[derive(clap::Args, Clone)]
pub struct Args {
    /// Group sizes (devices, sender included).
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    pub sizes: Vec<usize>,
    /// Messages sent one at a time, 50 ms apart.
    #[arg(long, default_value_t = 20)]
    pub messages: u64,
    /// Messages sent back to back for the throughput figure.
    #[arg(long, default_value_t = 50)]
    pub burst: u64,
    /// Plaintext bytes per message.
    #[arg(long, default_value_t = 200)]
    pub size: usize,
}

/// One group size's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SizeReport {
    /// Devices in the group.
    pub members: usize,
    /// Time from send until the last member had the message, over the spaced messages.
    pub time_to_last_member: Latency,
    /// Per-delivery latency over the spaced messages.
    pub delivery_latency: Latency,
    /// Deliveries per second during the burst.
    pub burst_deliveries_per_sec: f64,
    /// Deliveries that never arrived (either phase).
    pub missing: u64,
}

type Arrivals = Arc<Mutex<Vec<(u64, u64)>>>;

fn arrival_handler(device: Arc<OnceLock<Arc<Device>>>, arrivals: Arrivals) -> Handler {
    Arc::new(move |event| {
        if let Event::Entry(entry) = event {
            let mls = device.get().and_then(|d| d.mls.as_ref());
            if let Some(plain) = device::open(mls, &entry.payload)
                && let (Some(stamp), Some(counter)) = (
                    device::stamp_of(&plain),
                    plain
                        .get(8..16)
                        .and_then(|b| b.try_into().ok())
                        .map(u64::from_be_bytes),
                )
                && let Ok(mut a) = arrivals.lock()
            {
                a.push((counter, now_ns().saturating_sub(stamp)));
            }
        }
    })
}

async fn wait_for(arrivals: &Arrivals, count: usize, limit: Duration) {
    let deadline = now_ns() + limit.as_nanos() as u64;
    while arrivals.lock().map(|a| a.len()).unwrap_or(0) < count && now_ns() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs every size in turn.
pub async fn run(common: &Common, args: &Args) -> anyhow::Result<Vec<SizeReport>> {
    let mut reports = Vec::new();
    for (round, &members) in args.sizes.iter().enumerate() {
        let arrivals: Arrivals = Arc::default();
        let sender = common
            .timed_device(
                &common.username(&format!("f{round}s"), 0),
                &Arc::new(Recorder::default()),
            )
            .await?;
        let others: Vec<Arc<Device>> = stream::iter(1..members)
            .map(|i| {
                let arrivals = arrivals.clone();
                let name = common.username(&format!("f{round}m"), i);
                let (server, e2e) = (common.server, !common.server_only);
                async move {
                    let cell = Arc::new(OnceLock::new());
                    let device = Arc::new(
                        device::register(
                            server,
                            &name,
                            e2e,
                            arrival_handler(cell.clone(), arrivals),
                        )
                        .await?,
                    );
                    let _ = cell.set(device.clone());
                    anyhow::Ok(device)
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;
        let mut group_members = vec![sender.clone()];
        group_members.extend(others);
        eprintln!("fanout: forming a group of {members}");
        let (group, epoch) = device::form_group(&group_members).await?;
        let send = |counter: u64| {
            let sender = sender.clone();
            let size = args.size;
            async move {
                let ciphertext = device::seal(&sender, &stamped_payload(now_ns(), counter, size))?;
                sender
                    .conn
                    .request(Request::SendMessage(v1::SendMessage {
                        group_id: group.as_bytes().to_vec(),
                        epoch,
                        message_id: message_id(sender.id, counter),
                        ciphertext,
                        // The load generator never changes devices, so rosters stay at version 0.
                        roster_version: 0,
                        ..Default::default()
                    }))
                    .await
                    .map(drop)
            }
        };
        let receivers = (members - 1) as u64;
        for k in 0..args.messages {
            send(k).await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        wait_for(
            &arrivals,
            (args.messages * receivers) as usize,
            Duration::from_secs(30),
        )
        .await;
        let spaced: Vec<(u64, u64)> = arrivals
            .lock()
            .map(|mut a| std::mem::take(&mut *a))
            .unwrap_or_default();
        let (last, each) = (Recorder::default(), Recorder::default());
        for k in 0..args.messages {
            let worst = spaced
                .iter()
                .filter(|(c, _)| *c == k)
                .map(|(_, ns)| *ns)
                .max()
                .unwrap_or(0);
            last.record_ns(worst);
        }
        for (_, ns) in &spaced {
            each.record_ns(*ns);
        }
        let start = now_ns();
        for k in 0..args.burst {
            send(args.messages + k).await?;
        }
        wait_for(
            &arrivals,
            (args.burst * receivers) as usize,
            Duration::from_secs(60),
        )
        .await;
        let elapsed = (now_ns() - start) as f64 / 1e9;
        let burst = arrivals.lock().map(|a| a.len()).unwrap_or(0) as u64;
        let expected = (args.messages + args.burst) * receivers;
        let report = SizeReport {
            members,
            time_to_last_member: last.latency(),
            delivery_latency: each.latency(),
            burst_deliveries_per_sec: burst as f64 / elapsed,
            missing: expected.saturating_sub(spaced.len() as u64 + burst),
        };
        eprintln!(
            "  {members:>5} members: last member after p50 {:.2} ms, max {:.2} ms; burst {:.0} deliveries/s",
            report.time_to_last_member.p50_ms,
            report.time_to_last_member.max_ms,
            report.burst_deliveries_per_sec
        );
        reports.push(report);
    }
    Ok(reports)
}
