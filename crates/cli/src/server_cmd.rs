//! `chapar server`: configuration from a file, environment variables and flags (flags win),
//! logging, and a clean shutdown on SIGINT or SIGTERM.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use chapar_server::{FilesConfig, ServerConfig};
use chapar_types::limits::{FILE_UNREFERENCED_GRACE_SECS_MIN, FILE_UPLOAD_EXPIRY_SECS_MIN};
use clap::Args;

/// Server options. Each can also come from the config file.
#[derive(Args)]
pub struct ServerArgs {
    /// Address to listen on (port 0 picks a free port) [default: 127.0.0.1:8080]
    #[arg(long, env = "CHAPAR_LISTEN")]
    listen: Option<SocketAddr>,
    /// Address of the operators' listener, `/metrics` and `/healthz`; keep it local
    /// [default: 127.0.0.1:9464]
    #[arg(long, env = "CHAPAR_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    limits: crate::server_limits::LimitArgs,
    /// Data directory: database and files [default: ./chapar-data]
    #[arg(long, env = "CHAPAR_DATA")]
    data: Option<PathBuf>,
    /// PostgreSQL database for many nodes on one database, e.g.
    /// postgres://chapar@db.internal:5432/chapar (plain TCP: a private network or loopback);
    /// files and keys stay in --data [default: SQLite in --data]
    #[arg(long, env = "CHAPAR_DATABASE", hide_env_values = true)]
    database: Option<String>,
    /// TOML config file with `listen`, `metrics_listen`, `data`, `database`, `tls_cert`,
    /// `tls_key` and `camouflage` keys, the file settings
    /// below (`file_max_bytes`, `file_quota_bytes`, `upload_expiry`, `gc_interval`,
    /// `gc_grace`, `gc_at_startup`), and a `[limits]` table (docs/limits.md).
    #[arg(long, env = "CHAPAR_CONFIG")]
    config: Option<PathBuf>,
    /// TLS certificate chain (PEM, leaf first) for the public listener, with --tls-key;
    /// without them the server speaks plain HTTP (loopback, or behind a TLS proxy)
    #[arg(long, env = "CHAPAR_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) of --tls-cert
    #[arg(long, env = "CHAPAR_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Camouflage: serve the protocol only under a secret path (made once, kept in the data
    /// directory, part of the address printed) and an ordinary web site to everyone else
    #[arg(long, env = "CHAPAR_CAMOUFLAGE")]
    camouflage: bool,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "CHAPAR_LOG_JSON")]
    log_json: bool,
    /// Largest file upload, in bytes of ciphertext: a file plus 16 bytes per MiB, so 4 GiB
    /// files need 4 GiB + 64 KiB; e.g. 4097MiB or 4296015872 [default: 4 GiB + 1 MiB]
    #[arg(long, env = "CHAPAR_FILE_MAX_BYTES", value_parser = parse_bytes)]
    file_max_bytes: Option<u64>,
    /// Storage per account for files, e.g. 20GiB [default: 20GiB]
    #[arg(long, env = "CHAPAR_FILE_QUOTA_BYTES", value_parser = parse_bytes)]
    file_quota_bytes: Option<u64>,
    /// How long an unfinished upload is kept after its last chunk, 1m to 365days, e.g. 24h
    /// [default: 24h]
    #[arg(long, env = "CHAPAR_UPLOAD_EXPIRY", value_parser = humantime::parse_duration)]
    upload_expiry: Option<Duration>,
    /// Time between file garbage collections, up to 365days, e.g. 10m [default: 10m]
    #[arg(long, env = "CHAPAR_GC_INTERVAL", value_parser = humantime::parse_duration)]
    gc_interval: Option<Duration>,
    /// How long a file no message references is kept, 1m to 365days, e.g. 24h [default: 24h]
    #[arg(long, env = "CHAPAR_GC_GRACE", value_parser = humantime::parse_duration)]
    gc_grace: Option<Duration>,
    /// Collect file garbage once at start too [default: true]
    #[arg(long, env = "CHAPAR_GC_AT_STARTUP", value_name = "BOOL", action = clap::ArgAction::Set)]
    gc_at_startup: Option<bool>,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    metrics_listen: Option<SocketAddr>,
    #[serde(default)]
    limits: crate::server_limits::LimitsFile,
    data: Option<PathBuf>,
    database: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    camouflage: Option<bool>,
    file_max_bytes: Option<ByteSize>,
    file_quota_bytes: Option<ByteSize>,
    upload_expiry: Option<String>,
    gc_interval: Option<String>,
    gc_grace: Option<String>,
    gc_at_startup: Option<bool>,
}

/// A size in a config file: a number of bytes, or text like "20GiB".
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum ByteSize {
    Bytes(u64),
    Text(String),
}

impl ByteSize {
    fn bytes(&self) -> anyhow::Result<u64> {
        match self {
            Self::Bytes(n) => Ok(*n),
            Self::Text(text) => parse_bytes(text).map_err(anyhow::Error::msg),
        }
    }
}

/// Parses a byte size: digits with an optional unit, `K`/`KiB`, `M`/`MiB`, `G`/`GiB`, `T`/`TiB`
/// (powers of 1024) or `KB`, `MB`, `GB`, `TB` (powers of 1000), in any case.
fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 4294967296, 512MiB, 20GiB)"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use KiB, MiB, GiB, TiB)"
            ));
        }
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too large"))
}

fn file_duration(value: Option<&String>, key: &str) -> anyhow::Result<Option<Duration>> {
    value
        .map(|text| {
            humantime::parse_duration(text)
                .with_context(|| format!("config key {key}: {text:?} is not a duration"))
        })
        .transpose()
}

/// The configuration in force: each setting from the flags (or their environment variables,
/// which clap reads), else the file, else the default.
fn resolve(args: &ServerArgs, file: FileConfig) -> anyhow::Result<ServerConfig> {
    let mut config = ServerConfig::new(
        args.listen
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
        args.data
            .clone()
            .or(file.data)
            .unwrap_or_else(|| PathBuf::from("chapar-data")),
    );
    config.metrics_listen = args
        .metrics_listen
        .or(file.metrics_listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9464)));
    config.limits = crate::server_limits::resolve(&args.limits, file.limits)?;
    config.tls = match (
        args.tls_cert.clone().or(file.tls_cert),
        args.tls_key.clone().or(file.tls_key),
    ) {
        (Some(certificate), Some(key)) => Some(chapar_server::TlsFiles { certificate, key }),
        (None, None) => None,
        _ => anyhow::bail!("TLS needs both a certificate (--tls-cert) and its key (--tls-key)"),
    };
    config.camouflage = args.camouflage || file.camouflage.unwrap_or(false);
    config.database = args.database.clone().or(file.database);
    if let Some(url) = &config.database
        && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
    {
        anyhow::bail!("--database must be a postgres:// address, not {url:?}");
    }
    let defaults = FilesConfig::default();
    let file_bytes = |value: Option<&ByteSize>| value.map(ByteSize::bytes).transpose();
    config.files = FilesConfig {
        upload_bytes_max: args
            .file_max_bytes
            .or(file_bytes(file.file_max_bytes.as_ref())?)
            .unwrap_or(defaults.upload_bytes_max),
        quota_bytes_per_account: args
            .file_quota_bytes
            .or(file_bytes(file.file_quota_bytes.as_ref())?)
            .unwrap_or(defaults.quota_bytes_per_account),
        upload_expiry: args
            .upload_expiry
            .or(file_duration(file.upload_expiry.as_ref(), "upload_expiry")?)
            .unwrap_or(defaults.upload_expiry),
        gc_interval: args
            .gc_interval
            .or(file_duration(file.gc_interval.as_ref(), "gc_interval")?)
            .unwrap_or(defaults.gc_interval),
        unreferenced_grace: args
            .gc_grace
            .or(file_duration(file.gc_grace.as_ref(), "gc_grace")?)
            .unwrap_or(defaults.unreferenced_grace),
        gc_at_startup: args
            .gc_at_startup
            .or(file.gc_at_startup)
            .unwrap_or(defaults.gc_at_startup),
        // Fixed limits (chapar_types::limits), not settings: they bound memory.
        transfers_in_flight_max: defaults.transfers_in_flight_max,
        transfers_per_account_max: defaults.transfers_per_account_max,
        transfers_per_device_max: defaults.transfers_per_device_max,
        download_idle_timeout: defaults.download_idle_timeout,
    };
    // The server refuses what it cannot run with (zero, past a year, sizes past i64::MAX);
    // an operator also gets a floor of a minute, below which clients could not resume an
    // upload or send the message for a file they just uploaded.
    config.files.validate()?;
    for (setting, value, min_secs) in [
        (
            "upload_expiry (--upload-expiry, CHAPAR_UPLOAD_EXPIRY)",
            config.files.upload_expiry,
            FILE_UPLOAD_EXPIRY_SECS_MIN,
        ),
        (
            "gc_grace (--gc-grace, CHAPAR_GC_GRACE)",
            config.files.unreferenced_grace,
            FILE_UNREFERENCED_GRACE_SECS_MIN,
        ),
    ] {
        let min = Duration::from_secs(min_secs);
        if value < min {
            anyhow::bail!(
                "{setting} must be at least {}, not {}",
                humantime::format_duration(min),
                humantime::format_duration(value)
            );
        }
    }
    Ok(config)
}

/// Runs the server until a shutdown signal.
pub async fn run_server(args: ServerArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str::<FileConfig>(&text)
                .with_context(|| format!("parsing {}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let config = resolve(&args, file)?;
    // The address clients are given carries the pin of the certificate's key, so a
    // self-signed server needs no certificate authority (`chapar_client::tls`).
    let pin = match &config.tls {
        Some(files) => {
            let leaf = files.leaf()?;
            Some(chapar_client::tls::pin_text(&chapar_client::tls::pin_of(
                &leaf,
            )?))
        }
        None => None,
    };
    init_logging(args.log_json);
    // One descriptor per connection: use all the open-file room the system allows.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    chapar_server::run(
        config,
        |bound| {
            // Scripts and tests read these lines to learn the ports. Written, not printed: a
            // reader that closed stdout must not stop the server.
            let mut stdout = std::io::stdout().lock();
            // The address clients are given: scheme, host and port, the entry path of a
            // server in camouflage, and the key pin.
            let scheme = if bound.tls { "https" } else { "http" };
            let entry = bound.entry.map(|e| format!("/{e}")).unwrap_or_default();
            let pin = pin.map(|p| format!("#{p}")).unwrap_or_default();
            let _ = writeln!(
                stdout,
                "chapar server listening on {scheme}://{}{entry}{pin}",
                bound.address
            );
            let _ = writeln!(stdout, "metrics on http://{}/metrics", bound.metrics);
            let _ = stdout.flush();
        },
        shutdown_signal(),
    )
    .await?;
    Ok(())
}

pub(crate) fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CHAPAR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

pub(crate) async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutdown signal received");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the report

    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        server: ServerArgs,
    }

    fn args(flags: &[&str]) -> ServerArgs {
        let mut argv = vec!["chapar"];
        argv.extend_from_slice(flags);
        Cli::try_parse_from(argv).unwrap().server
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("20GiB"), Ok(20 << 30));
        assert_eq!(parse_bytes("512 mib"), Ok(512 << 20));
        assert_eq!(parse_bytes("3GB"), Ok(3_000_000_000));
        assert!(parse_bytes("12 parsecs").is_err());
        assert!(parse_bytes("GiB").is_err());
        assert!(parse_bytes("99999999999TiB").is_err());
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let file: FileConfig = toml::from_str(
            r#"
            file_max_bytes = "1GiB"
            file_quota_bytes = 5000
            upload_expiry = "2h"
            gc_interval = "30s"
            gc_grace = "1h"
            gc_at_startup = false
            "#,
        )
        .unwrap();
        let config = resolve(
            &args(&["--file-max-bytes", "2MiB", "--gc-grace", "5m"]),
            file,
        )
        .unwrap();
        let files = config.files;
        assert_eq!(files.upload_bytes_max, 2 << 20, "flag");
        assert_eq!(files.unreferenced_grace, Duration::from_secs(300), "flag");
        assert_eq!(files.quota_bytes_per_account, 5000, "file");
        assert_eq!(files.upload_expiry, Duration::from_secs(7200), "file");
        assert_eq!(files.gc_interval, Duration::from_secs(30), "file");
        assert!(!files.gc_at_startup, "file");

        let defaults = resolve(&args(&[]), FileConfig::default()).unwrap();
        assert_eq!(defaults.files, FilesConfig::default());
        assert!(
            resolve(&args(&["--gc-interval", "0s"]), FileConfig::default()).is_err(),
            "a zero interval would spin"
        );
        let bad: FileConfig = toml::from_str("gc_grace = \"soon\"").unwrap();
        assert!(resolve(&args(&[]), bad).is_err());
    }

    #[test]
    fn the_database_comes_from_the_flag_or_the_file_and_defaults_to_sqlite() {
        assert_eq!(
            resolve(&args(&[]), FileConfig::default()).unwrap().database,
            None
        );
        let file: FileConfig = toml::from_str("database = \"postgres://f@h/db\"").unwrap();
        assert_eq!(
            resolve(&args(&[]), file).unwrap().database.as_deref(),
            Some("postgres://f@h/db")
        );
        let file: FileConfig = toml::from_str("database = \"postgres://f@h/db\"").unwrap();
        let flag = resolve(&args(&["--database", "postgresql://g@h/db"]), file).unwrap();
        assert_eq!(
            flag.database.as_deref(),
            Some("postgresql://g@h/db"),
            "flag wins"
        );
        let wrong = resolve(
            &args(&["--database", "mysql://h/db"]),
            FileConfig::default(),
        );
        assert!(wrong.is_err(), "only PostgreSQL");
    }

    #[test]
    fn durations_and_sizes_outside_sane_ranges_are_refused_at_startup() {
        let refused = |flags: &[&str]| match resolve(&args(flags), FileConfig::default()) {
            Ok(_) => panic!("{flags:?} accepted"),
            Err(e) => format!("{e:#}"),
        };
        for flag in ["--upload-expiry", "--gc-grace"] {
            let zero = refused(&[flag, "0s"]);
            assert!(zero.contains("not 0s"), "{zero}");
            let short = refused(&[flag, "59s"]);
            assert!(short.contains("at least 1m"), "{short}");
            // Would overflow now + expiry, or pass year 9999 in Upload-Expires.
            let long = refused(&[flag, "366days"]);
            assert!(long.contains("at most 365 days"), "{long}");
            let absurd = refused(&[flag, "500000000years"]);
            assert!(absurd.contains("at most 365 days"), "{absurd}");
            for fine in ["1m", "365days"] {
                assert!(resolve(&args(&[flag, fine]), FileConfig::default()).is_ok());
            }
        }
        assert!(refused(&["--gc-interval", "400days"]).contains("gc_interval"));
        // SQL stores sizes as signed 64-bit numbers.
        assert!(refused(&["--file-max-bytes", "9223372036854775808"]).contains("file_max_bytes"));
        let file: FileConfig = toml::from_str("upload_expiry = \"10s\"").unwrap();
        assert!(
            resolve(&args(&[]), file).is_err(),
            "the file is checked too"
        );
    }

    #[test]
    fn the_default_upload_limit_fits_a_4_gib_file() {
        // A 4 GiB file is 4096 chunks of 1 MiB, each with a 16-byte tag.
        let ciphertext = (4u64 << 30) + 4096 * 16;
        assert!(FilesConfig::default().upload_bytes_max >= ciphertext);
        assert!(parse_bytes("4097MiB").unwrap() >= ciphertext);
        assert!(
            parse_bytes("4GiB").unwrap() < ciphertext,
            "why the help says 4097MiB"
        );
    }
}
