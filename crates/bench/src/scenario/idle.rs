//! `idle`: many authenticated, idle connections. Reports the server's resident memory per
//! connection and the connect-and-login rate, at each requested count.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};

use super::Common;
use crate::conn::{BenchConn, Handler};
use crate::device::{self, Device};
use crate::server::ServerUnderTest;

/// `idle` options.
#[derive(clap::Args, Clone)]
pub struct Args {
    /// Connection counts to reach, in order (cumulative).
    #[arg(long, value_delimiter = ',', default_value = "10000,50000,100000")]
    pub connections: Vec<usize>,
    /// Accounts the connections log in as (round robin).
    #[arg(long, default_value_t = 100)]
    pub devices: usize,
    /// Loopback source addresses to spread connections over (each has ~28k ports).
    #[arg(long, default_value_t = 16)]
    pub sources: usize,
    /// Connections opened at once.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
}

/// One step's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    /// Connections asked for.
    pub requested: usize,
    /// Connections held.
    pub connections: usize,
    /// Fewer were opened than asked because of the open-file limit of this machine.
    pub limited_by_fd_limit: bool,
    /// Server RSS with them open.
    pub server_rss_bytes: Option<u64>,
    /// (RSS now − RSS before any connection) ÷ connections.
    pub rss_per_connection_bytes: Option<f64>,
    /// Connections opened and logged in per second in this step.
    pub connects_per_sec: f64,
}

/// Opens connections step by step and measures.
pub async fn run(
    common: &Common,
    args: &Args,
    server: &ServerUnderTest,
    fd_limit: u64,
) -> anyhow::Result<Vec<Step>> {
    // Each process (this one and the server) needs one descriptor per connection, plus slack.
    let ceiling = (fd_limit as usize).saturating_sub(args.devices + 500);
    let noop: Handler = Arc::new(|_| {});
    let devices: Vec<Arc<Device>> = stream::iter(0..args.devices)
        .map(|i| {
            let name = common.username("idle", i);
            let (addr, noop) = (common.server, noop.clone());
            async move { anyhow::Ok(Arc::new(device::register(addr, &name, false, noop).await?)) }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = server.rss_bytes();
    let mut held: Vec<BenchConn> = Vec::new();
    let mut steps = Vec::new();
    for &requested in &args.connections {
        let target = requested.min(ceiling);
        if target < requested {
            eprintln!("  (open-file limit {fd_limit}: holding {target} instead of {requested})");
        }
        let start = Instant::now();
        let from = held.len();
        let opened: Vec<anyhow::Result<BenchConn>> = stream::iter(from..target)
            .map(|i| {
                let device = devices[i % devices.len()].clone();
                let (addr, noop, spread) = (common.server, noop.clone(), args.sources);
                async move {
                    device::login(addr, device::source_address(i, spread), &device, noop).await
                }
            })
            .buffer_unordered(args.concurrency)
            .collect()
            .await;
        for conn in opened {
            held.push(conn?);
        }
        let connects_per_sec = (target - from) as f64 / start.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss = server.rss_bytes();
        let per = match (rss, baseline) {
            (Some(now), Some(base)) => Some(now.saturating_sub(base) as f64 / held.len() as f64),
            _ => None,
        };
        eprintln!(
            "  {:>7} connections: server RSS {:>6} MiB, {:>8} bytes/connection, {:>6.0} connects/s",
            held.len(),
            rss.map_or(0, |r| r >> 20),
            per.map_or_else(|| "?".into(), |p| format!("{p:.0}")),
            connects_per_sec
        );
        steps.push(Step {
            requested,
            connections: held.len(),
            limited_by_fd_limit: target < requested,
            server_rss_bytes: rss,
            rss_per_connection_bytes: per,
            connects_per_sec,
        });
    }
    drop(held);
    Ok(steps)
}
