//! `chapar relay`: runs a volunteer relay in front of a server (`chapar_relay`), and prints
//! the relay link clients use: the relay's address with the server's scheme and key pin.

use std::io::Write as _;
use std::net::SocketAddr;

use chapar_client::tls::ServerAddress;
use clap::Args;

/// Relay options.
#[derive(Args)]
pub struct RelayArgs {
    /// The server's address as its operator gives it, with its key pin, e.g.
    /// https://chat.example:8443#sha256=...
    #[arg(long, env = "CHAPAR_RELAY_SERVER")]
    server: String,
    /// Address to listen on for clients (port 0 picks a free port)
    #[arg(long, env = "CHAPAR_RELAY_LISTEN", default_value = "0.0.0.0:443")]
    listen: SocketAddr,
    /// The `host:port` clients reach this relay at, for the printed link [default: the
    /// listen address]
    #[arg(long, env = "CHAPAR_RELAY_PUBLIC")]
    public: Option<String>,
    /// Address of the operators' listener (`/metrics`, `/healthz`); keep it local
    #[arg(
        long,
        env = "CHAPAR_RELAY_METRICS_LISTEN",
        default_value = "127.0.0.1:9465"
    )]
    metrics_listen: SocketAddr,
    /// Most client connections open at once
    #[arg(long, default_value_t = chapar_relay::RelayLimits::default().connections_max)]
    connections_max: usize,
    /// Most client connections open at once from one address (an IPv6 /64 is one)
    #[arg(long, default_value_t = chapar_relay::RelayLimits::default().connections_per_address_max)]
    connections_per_address_max: usize,
}

/// Runs the relay until a shutdown signal.
pub async fn run_relay(args: RelayArgs) -> anyhow::Result<()> {
    let server = ServerAddress::parse(&args.server)?;
    if !server.is_tls() {
        eprintln!(
            "warning: {} is plain HTTP: this relay (and anyone on its path) sees everything \
             the server does; relay a server with TLS and a key pin",
            server.base
        );
    }
    let (host, port) = server.host_port()?;
    let upstream = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let config = chapar_relay::RelayConfig {
        listen: args.listen,
        metrics_listen: args.metrics_listen,
        upstream,
        limits: chapar_relay::RelayLimits {
            connections_max: args.connections_max,
            connections_per_address_max: args.connections_per_address_max,
            ..chapar_relay::RelayLimits::default()
        },
    };
    crate::server_cmd::init_logging(false);
    let public = args.public.clone();
    chapar_relay::run(
        config,
        |bound| {
            // Scripts and tests read these lines. Written, not printed: a reader that closed
            // stdout must not stop the relay.
            let mut stdout = std::io::stdout().lock();
            let reach = public.unwrap_or_else(|| bound.address.to_string());
            let _ = writeln!(stdout, "chapar relay link: {}", server.through(&reach));
            let _ = writeln!(stdout, "metrics on http://{}/metrics", bound.metrics);
            let _ = stdout.flush();
        },
        crate::server_cmd::shutdown_signal(),
    )
    .await?;
    Ok(())
}
