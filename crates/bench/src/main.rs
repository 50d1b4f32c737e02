//! `chapar-bench`: drives a real Chapar server over real connections and reports throughput,
//! latency percentiles, CPU and memory; optionally the same workload on NATS JetStream.
//!
//! Each scenario runs end to end (real MLS in every client) by default, or with
//! `--server-only` (clients send opaque bytes, so the figures are the server's alone).

mod conn;
mod device;
mod nats;
mod pacer;
mod scenario;
mod server;
mod stats;

use std::time::Duration;

use clap::{Parser, Subcommand};
use rand::RngCore;
use serde_json::{Value, json};

/// Load generator for Chapar.
#[derive(Parser)]
#[command(name = "chapar-bench", version, about)]
struct Cli {
    /// Drive this server instead of starting one (then no CPU/RSS figures).
    #[arg(long, global = true)]
    server: Option<String>,
    /// Seconds each measured phase runs.
    #[arg(long, global = true, default_value_t = 10.0)]
    duration: f64,
    /// Clients send opaque bytes instead of real MLS: measures the server alone.
    #[arg(long, global = true)]
    server_only: bool,
    /// Print one JSON object instead of a human summary.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Device pairs exchanging messages at a fixed offered rate, or ramping with --max.
    Pairs(scenario::pairs::Args),
    /// One sender into groups of many devices.
    Fanout(scenario::fanout::Args),
    /// Many authenticated idle connections: RSS per connection, connect rate.
    Idle(scenario::idle::Args),
    /// A device offline while messages arrive, then catching up.
    Catchup(scenario::catchup::Args),
    /// A new device linked to an account with a long history, restoring all of it.
    History(scenario::history::Args),
    /// Minutes of mixed traffic, connection churn and file transfers: RSS and p99 per interval.
    Soak(scenario::soak::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Room for the idle scenario's sockets, in this process and the server it starts.
    let fd_limit = server::raise_fd_limit(300_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(&cli, fd_limit))?;
    if cli.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

async fn run(cli: &Cli, fd_limit: u64) -> anyhow::Result<Value> {
    let server = server::ServerUnderTest::start_or_use(cli.server.as_deref())?;
    let mut tag = [0u8; 3];
    rand::thread_rng().fill_bytes(&mut tag);
    let common = scenario::Common {
        server: server.addr()?,
        server_only: cli.server_only,
        run_tag: format!("b{:02x}{:02x}{:02x}_", tag[0], tag[1], tag[2]),
    };
    let duration = Duration::from_secs_f64(cli.duration);
    let mode = if cli.server_only {
        "server-only"
    } else {
        "end-to-end"
    };
    let mark = server.cpu_mark();
    let (name, headline, details) = match &cli.scenario {
        Scenario::Pairs(args) => {
            let (chapar, nats) = scenario::pairs::run(&common, args, duration, &server).await?;
            let r = &chapar.result;
            let ratios = nats.as_ref().map(|n| {
                json!({
                    "messages_per_sec": r.messages_per_sec / n.result.messages_per_sec.max(1e-9),
                    "p50": r.latency.p50_ms / n.result.latency.p50_ms.max(1e-9),
                    "p99": r.latency.p99_ms / n.result.latency.p99_ms.max(1e-9),
                })
            });
            (
                "pairs",
                json!({"messages_per_sec": r.messages_per_sec, "p50_ms": r.latency.p50_ms, "p99_ms": r.latency.p99_ms}),
                json!({"pairs": args.pairs, "size_bytes": args.size, "chapar": chapar, "nats_jetstream": nats, "chapar_over_nats": ratios}),
            )
        }
        Scenario::Fanout(args) => {
            let sizes = scenario::fanout::run(&common, args).await?;
            let biggest = sizes.last();
            (
                "fanout",
                json!({
                    "messages_per_sec": biggest.map(|s| s.burst_deliveries_per_sec),
                    "p50_ms": biggest.map(|s| s.time_to_last_member.p50_ms),
                    "p99_ms": biggest.map(|s| s.time_to_last_member.p99_ms),
                }),
                json!({"sizes": sizes}),
            )
        }
        Scenario::Idle(args) => {
            let steps = scenario::idle::run(&common, args, &server, fd_limit).await?;
            let last = steps.last();
            (
                "idle",
                json!({"messages_per_sec": null, "p50_ms": null, "p99_ms": null,
                       "rss_per_connection_bytes": last.and_then(|s| s.rss_per_connection_bytes)}),
                json!({"steps": steps}),
            )
        }
        Scenario::Catchup(args) => {
            let report = scenario::catchup::run(&common, args).await?;
            let total = report.fetch_secs + report.decrypt_secs;
            (
                "catchup",
                json!({"messages_per_sec": report.messages as f64 / total.max(1e-9), "p50_ms": null, "p99_ms": null}),
                json!(report),
            )
        }
        Scenario::History(args) => {
            let rows = scenario::history::run(&common, args).await?;
            let last = rows.last();
            (
                "history",
                json!({
                    "messages_per_sec": last.map(|r| r.messages as f64 / r.link_secs.max(1e-9)),
                    "p50_ms": null,
                    "p99_ms": null,
                }),
                json!({"sizes": rows}),
            )
        }
        Scenario::Soak(args) => {
            let rows = scenario::soak::run(&common, args, &server).await?;
            let last = rows.last();
            (
                "soak",
                json!({
                    "messages_per_sec": last.map(|r| r.pairs.messages_per_sec),
                    "p50_ms": last.map(|r| r.pairs.latency.p50_ms),
                    "p99_ms": last.map(|r| r.pairs.latency.p99_ms),
                }),
                json!({"intervals": rows}),
            )
        }
    };
    let usage = server.usage_since(&mark);
    let mut out = json!({
        "scenario": name,
        "mode": mode,
        "server_rss_bytes": usage.peak_rss_bytes,
        "server_cpu_percent": usage.cpu_percent,
        "details": details,
    });
    if let (Value::Object(out), Value::Object(head)) = (&mut out, headline) {
        out.extend(head);
    }
    Ok(out)
}
