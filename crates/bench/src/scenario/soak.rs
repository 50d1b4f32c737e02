//! `soak`: many minutes of mixed traffic against one server, to show that nothing grows: device
//! pairs chatting at a fixed offered rate, connection churn (devices logging in on a fresh
//! connection and going away), and file transfers (tus upload, then download) — all at once.
//! Each interval (a minute by default) reports the server's RSS, the pairs' latency
//! percentiles, and what churn and files did in it; flat rows are the result to look for.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chapar_wire::v1::{self, client_frame::Request, response::Result as Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Common;
use crate::conn::Handler;
use crate::device::{self, Device};
use crate::pacer::{Phase, run_phase};
use crate::server::ServerUnderTest;
use crate::stats::{Latency, Recorder, now_ns};

/// `soak` options.
#[derive(clap::Args, Clone)]
pub struct Args {
    /// Intervals to run.
    #[arg(long, default_value_t = 10)]
    pub intervals: usize,
    /// Seconds per interval (one report row each).
    #[arg(long, default_value_t = 60.0)]
    pub interval_secs: f64,
    /// Device pairs chatting.
    #[arg(long, default_value_t = 10)]
    pub pairs: usize,
    /// Offered messages per second, all pairs together.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Logins on fresh connections per second (each connection closes right after).
    #[arg(long, default_value_t = 5.0)]
    pub churn_per_sec: f64,
    /// Bytes per file (uploaded, then downloaded back).
    #[arg(long, default_value_t = 1 << 20)]
    pub file_bytes: usize,
    /// Files per second.
    #[arg(long, default_value_t = 0.5)]
    pub files_per_sec: f64,
}

/// One interval of the soak.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Interval {
    /// Which interval, from 1.
    pub interval: usize,
    /// Server RSS at its end.
    pub rss_bytes: Option<u64>,
    /// Server CPU over the interval, percent of one core.
    pub cpu_percent: Option<f64>,
    /// The pairs' traffic in it.
    pub pairs: Phase,
    /// Logins on fresh connections completed, and failed.
    pub logins: u64,
    /// Failed logins.
    pub login_errors: u64,
    /// Login latency (connect, hello, authenticate).
    pub login_latency: Latency,
    /// Files uploaded and downloaded back whole.
    pub files: u64,
    /// File round trips that failed.
    pub file_errors: u64,
}

/// Counters the background load bumps; read and reset per interval.
#[derive(Default)]
struct Background {
    logins: Recorder,
    files: AtomicU64,
    file_errors: AtomicU64,
    stop: AtomicBool,
}

fn quiet_handler() -> Handler {
    Arc::new(|_| {})
}

/// Logs `devices` in on fresh connections, round-robin, at `per_sec`.
async fn churn(common: Common, devices: Vec<Arc<Device>>, per_sec: f64, load: Arc<Background>) {
    let interval = Duration::from_secs_f64(1.0 / per_sec.max(1e-3));
    let mut ticks = tokio::time::interval(interval);
    let mut n = 0usize;
    while !load.stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        let Some(device) = devices.get(n % devices.len().max(1)) else {
            return;
        };
        n += 1;
        let started = now_ns();
        match device::login(common.server, None, device, quiet_handler()).await {
            Ok(conn) => {
                load.logins.record_ns(now_ns().saturating_sub(started));
                Recorder::bump(&load.logins.delivered);
                drop(conn);
            }
            Err(_) => Recorder::bump(&load.logins.errors),
        }
    }
}

/// Sends one HTTP/1.1 request with `Connection: close`; returns the status, the headers'
/// text and the body.
async fn http(
    server: std::net::SocketAddr,
    head: String,
    body: &[u8],
) -> anyhow::Result<(u16, String, Vec<u8>)> {
    let mut stream = TcpStream::connect(server).await?;
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no response head")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    Ok((status, head, raw[split + 4..].to_vec()))
}

/// Uploads `data` as a new file and downloads it back.
async fn file_round_trip(
    server: std::net::SocketAddr,
    token: &str,
    data: &[u8],
) -> anyhow::Result<()> {
    let common = format!(
        "Host: {server}\r\nConnection: close\r\nTus-Resumable: 1.0.0\r\nAuthorization: Bearer {token}\r\n"
    );
    let create = format!(
        "POST /v1/files HTTP/1.1\r\n{common}Upload-Length: {}\r\nContent-Length: 0\r\n\r\n",
        data.len()
    );
    let (status, head, _) = http(server, create, b"").await?;
    if status != 201 {
        bail!("create answered {status}");
    }
    let location = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("location")
                .then(|| value.trim().to_owned())
        })
        .context("no Location")?;
    let path = location
        .find("/v1/files/")
        .map(|at| location[at..].to_owned())
        .context("Location is not a file")?;
    let patch = format!(
        "PATCH {path} HTTP/1.1\r\n{common}Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: {}\r\n\r\n",
        data.len()
    );
    let (status, _, _) = http(server, patch, data).await?;
    if status != 204 {
        bail!("PATCH answered {status}");
    }
    let get = format!("GET {path} HTTP/1.1\r\n{common}\r\n");
    let (status, _, body) = http(server, get, b"").await?;
    if status != 200 || body != data {
        bail!("GET answered {status} with {} bytes", body.len());
    }
    Ok(())
}

/// Moves files for `device` at `per_sec`, one at a time.
async fn files(common: Common, device: Arc<Device>, args: Args, load: Arc<Background>) {
    let data: Vec<u8> = (0..args.file_bytes).map(|i| (i % 251) as u8).collect();
    let interval = Duration::from_secs_f64(1.0 / args.files_per_sec.max(1e-3));
    let mut ticks = tokio::time::interval(interval);
    while !load.stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        let token = match device
            .conn
            .request(Request::FileToken(v1::FileToken {}))
            .await
        {
            Ok(Reply::FileTokenOk(ok)) => ok.token,
            _ => {
                load.file_errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        match file_round_trip(common.server, &token, &data).await {
            Ok(()) => load.files.fetch_add(1, Ordering::Relaxed),
            Err(_) => load.file_errors.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Runs the soak; one row per interval.
pub async fn run(
    common: &Common,
    args: &Args,
    server: &ServerUnderTest,
) -> anyhow::Result<Vec<Interval>> {
    let recorder = Arc::new(Recorder::default());
    let (senders, devices) =
        super::pairs::chapar_senders(common, args.pairs, 200, &recorder).await?;
    let uploader = Arc::new(
        device::register(
            common.server,
            &common.username("soakfiles", 0),
            false,
            quiet_handler(),
        )
        .await?,
    );
    let load = Arc::new(Background::default());
    let background = [
        tokio::spawn(churn(
            common.clone(),
            devices,
            args.churn_per_sec,
            load.clone(),
        )),
        tokio::spawn(files(common.clone(), uploader, args.clone(), load.clone())),
    ];
    let mut rows = Vec::with_capacity(args.intervals);
    for interval in 1..=args.intervals {
        let (mark, started) = (server.cpu_mark(), Instant::now());
        recorder.reset();
        let pairs = run_phase(
            &senders,
            args.rate,
            Duration::from_secs_f64(args.interval_secs),
            &recorder,
        )
        .await;
        let usage = server.usage_since(&mark);
        rows.push(Interval {
            interval,
            rss_bytes: server.rss_bytes(),
            cpu_percent: usage.cpu_percent,
            pairs,
            logins: Recorder::get(&load.logins.delivered),
            login_errors: Recorder::get(&load.logins.errors),
            login_latency: load.logins.latency(),
            files: load.files.swap(0, Ordering::Relaxed),
            file_errors: load.file_errors.swap(0, Ordering::Relaxed),
        });
        load.logins.reset();
        eprintln!(
            "soak: interval {interval}/{} done in {:.0} s",
            args.intervals,
            started.elapsed().as_secs_f64()
        );
    }
    load.stop.store(true, Ordering::Relaxed);
    for task in background {
        task.abort();
    }
    Ok(rows)
}
