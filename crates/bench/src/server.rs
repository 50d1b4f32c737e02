//! The server under test: either one this tool starts (the `chapar` binary next to this one, in a
//! temp directory) or an external one given by URL. For a local server it reads CPU time and
//! memory from `/proc`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ, 100 on Linux x86_64).
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// The limits of the server the tool starts: none that a load generator would meet.
const BENCH_LIMITS: &str = "[limits]
connections_max = 1000000
connections_per_address_max = 1000000
registration_pow_bits = 0
registrations_per_address_per_hour = 1000000000
claims_per_account_pair_per_hour = 1000000000
one_time_claims_per_account_per_hour = 1000000000
device_changes_per_account_per_hour = 1000000000
account_bytes_per_day = 1000000000000000
";

/// A server to drive.
pub struct ServerUnderTest {
    /// Base URL, `http://host:port`.
    pub url: String,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

/// CPU and memory of the server over a measured phase.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ProcessUsage {
    /// Server CPU time over wall time, in percent of one core.
    pub cpu_percent: Option<f64>,
    /// Peak resident set size since the server started.
    pub peak_rss_bytes: Option<u64>,
    /// Resident set size at the end of the phase.
    pub rss_bytes: Option<u64>,
}

/// A started measurement of CPU use.
pub struct CpuMark {
    ticks: Option<u64>,
    at: Instant,
}

fn chapar_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name("chapar");
    if !path.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p chapar -p chapar-bench`",
            path.display()
        );
    }
    Ok(path)
}

impl ServerUnderTest {
    /// Uses `url` if given, else starts a fresh server in a temp directory.
    pub fn start_or_use(url: Option<&str>) -> anyhow::Result<Self> {
        if let Some(url) = url {
            return Ok(Self {
                url: url.trim_end_matches('/').to_owned(),
                child: None,
                _dir: None,
            });
        }
        let dir = tempfile::tempdir()?;
        // Every benchmark client comes from 127.0.0.1 and registers by the thousand: lift
        // the caps, rate limits and registration's proof of work, which measure nothing here.
        // (The hostile-client test and crates/server/tests measure them.)
        let config = dir.path().join("chapar.toml");
        std::fs::write(&config, BENCH_LIMITS)?;
        let mut child = Command::new(chapar_binary()?)
            .args(["server", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir.path().join("data"))
            .arg("--config")
            .arg(&config)
            .args(["--metrics-listen", "127.0.0.1:0"])
            .env("CHAPAR_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting chapar server")?;
        let stdout = child.stdout.take().context("server stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let url = line
            .rsplit(' ')
            .next()
            .map(str::trim)
            .unwrap_or_default()
            .to_owned();
        if !url.starts_with("http://") {
            bail!("server did not report its address: {line:?}");
        }
        Ok(Self {
            url,
            child: Some(child),
            _dir: Some(dir),
        })
    }

    /// The `host:port` part of the URL.
    pub fn addr(&self) -> anyhow::Result<std::net::SocketAddr> {
        Ok(self.url.trim_start_matches("http://").parse()?)
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn proc_file(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(format!("/proc/{}/{name}", self.pid()?)).ok()
    }

    fn cpu_ticks(&self) -> Option<u64> {
        let stat = self.proc_file("stat")?;
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
    }

    fn status_kib(&self, key: &str) -> Option<u64> {
        let status = self.proc_file("status")?;
        let line = status.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Current resident set size.
    pub fn rss_bytes(&self) -> Option<u64> {
        self.status_kib("VmRSS:").map(|k| k * 1024)
    }

    /// Starts measuring CPU.
    pub fn cpu_mark(&self) -> CpuMark {
        CpuMark {
            ticks: self.cpu_ticks(),
            at: Instant::now(),
        }
    }

    /// CPU since `mark`, with memory now.
    pub fn usage_since(&self, mark: &CpuMark) -> ProcessUsage {
        let wall = mark.at.elapsed().as_secs_f64();
        let cpu_percent = match (mark.ticks, self.cpu_ticks()) {
            (Some(a), Some(b)) if wall > 0.0 => {
                Some((b - a) as f64 / CLOCK_TICKS_PER_SEC / wall * 100.0)
            }
            _ => None,
        };
        ProcessUsage {
            cpu_percent,
            peak_rss_bytes: self.status_kib("VmHWM:").map(|k| k * 1024),
            rss_bytes: self.rss_bytes(),
        }
    }
}

impl Drop for ServerUnderTest {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Raises this process's open-file limit as far as allowed (children inherit it).
pub fn raise_fd_limit(wanted: u64) -> u64 {
    let (_, hard) = rlimit::Resource::NOFILE.get().unwrap_or((1024, 1024));
    // Root may raise the hard limit too; others get the soft limit raised to the hard one.
    if hard < wanted && rlimit::Resource::NOFILE.set(wanted, wanted).is_ok() {
        return wanted;
    }
    let target = wanted.min(hard);
    let _ = rlimit::Resource::NOFILE.set(target, hard);
    rlimit::Resource::NOFILE
        .get()
        .map(|(soft, _)| soft)
        .unwrap_or(target)
}
