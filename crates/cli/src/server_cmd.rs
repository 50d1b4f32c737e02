//! `chapar server`: configuration from a file, environment variables and flags (flags win),
//! logging, and a clean shutdown on SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use chapar_server::ServerConfig;
use clap::Args;

/// Server options. Each can also come from the config file.
#[derive(Args)]
pub struct ServerArgs {
    /// Address to listen on (port 0 picks a free port) [default: 127.0.0.1:8080]
    #[arg(long, env = "CHAPAR_LISTEN")]
    listen: Option<SocketAddr>,
    /// Data directory: database and files [default: ./chapar-data]
    #[arg(long, env = "CHAPAR_DATA")]
    data: Option<PathBuf>,
    /// TOML config file with `listen` and `data` keys.
    #[arg(long, env = "CHAPAR_CONFIG")]
    config: Option<PathBuf>,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "CHAPAR_LOG_JSON")]
    log_json: bool,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data: Option<PathBuf>,
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
    let config = ServerConfig {
        listen: args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
        data_dir: args
            .data
            .or(file.data)
            .unwrap_or_else(|| PathBuf::from("chapar-data")),
    };
    init_logging(args.log_json);
    // One descriptor per connection: use all the open-file room the system allows.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    chapar_server::run(
        config,
        |address| {
            // Scripts and tests read this line to learn the port.
            println!("chapar server listening on http://{address}");
        },
        shutdown_signal(),
    )
    .await?;
    Ok(())
}

fn init_logging(json: bool) {
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

async fn shutdown_signal() {
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
