//! The Chapar server: the MLS delivery service and its HTTP/WebSocket API.
//!
//! - [`service`]: domain rules (registration proofs, device logins, limits) over a
//!   [`chapar_store::Store`]; knows nothing of HTTP or protobuf.
//! - [`api`]: the axum router (`/healthz`, `/metrics`, `/v1/ws`), and the protocol session that
//!   runs over any transport of ordered frames (WebSocket, length-prefixed byte streams); the
//!   only module that knows HTTP and the wire format.
//! - [`hub`]: in-process fan-out to connected devices (the seam for NATS later).
//! - [`metrics`]: Prometheus counters.
//! - `tls`: TLS on the public listener, from PEM files ([`TlsFiles`]).
//! - Files: [`service::files`] holds the rules (limits, quotas, references, garbage collection),
//!   `api::files` the tus and download endpoints under `/v1/files`.
//!
//! The server stores and forwards ciphertext only, and never logs payloads.

pub mod api;
mod error;
pub mod hub;
pub mod limits;
mod listener;
pub mod metrics;
pub mod service;
mod tls;

pub use error::ServiceError;
pub use limits::Limits;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use chapar_store::Store;
use chapar_store::postgres::PgStore;
use chapar_store::sqlite::SqliteStore;
use metrics::Metrics;

/// Where the server listens and keeps its data.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Address of the operators' listener, `/metrics` and `/healthz` (keep it local: traffic
    /// figures are not for the public); port 0 picks a free port.
    pub metrics_listen: SocketAddr,
    /// Limits on clients.
    pub limits: Limits,
    /// Directory holding the database, the file token key and files (`files/`).
    pub data_dir: PathBuf,
    /// A PostgreSQL database (`postgres://user@host:port/db`) instead of the SQLite file in
    /// `data_dir`, for several nodes on one database; `None` is the embedded default.
    pub database: Option<String>,
    /// Limits, quotas and garbage collection for files.
    pub files: FilesConfig,
    /// TLS for the public listener; `None` serves plain HTTP (loopback, development, or
    /// behind a TLS proxy).
    pub tls: Option<TlsFiles>,
    /// Camouflage: the protocol only under a secret entry path (kept in the data directory),
    /// an ordinary web site for everyone else (`api::camouflaged_router`).
    pub camouflage: bool,
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data directory or database could not be opened.
    #[error("cannot open the data directory {path}: {detail}")]
    Storage {
        /// The directory.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// The database could not be reached or migrated.
    #[error("database: {0}")]
    Database(String),
    /// The listen address could not be bound, or serving failed.
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    /// A setting the server cannot run with.
    #[error("configuration: {0}")]
    Config(#[from] service::files::FilesConfigError),
    /// A limit the server cannot run with.
    #[error("configuration: {0}")]
    Limits(#[from] limits::LimitsError),
    /// The TLS certificate or key cannot be used.
    #[error("configuration: {0}")]
    Tls(#[from] tls::TlsError),
}

/// Where a started server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    /// The public listener (the protocol, files).
    pub address: SocketAddr,
    /// The operators' listener (`/metrics`, `/healthz`).
    pub metrics: SocketAddr,
    /// Whether the public listener speaks TLS.
    pub tls: bool,
    /// The secret entry path of a server in camouflage (clients' addresses end in it).
    pub entry: Option<String>,
}

/// Opens the service over the data directory `config` names (the database, the file token key
/// and files), creating it if needed. The store is the SQLite file there, whatever
/// [`ServerConfig::database`] says: [`run`] is what honours it.
pub fn open_service(
    config: &ServerConfig,
) -> Result<Arc<service::Service<SqliteStore>>, ServerError> {
    prepare_data_dir(config)?;
    let store = SqliteStore::open(&config.data_dir.join("chapar.db"))
        .map_err(|e| storage_error(config, e))?;
    service_over(config, store)
}

/// Opens the service on the PostgreSQL database at `url`, with files and keys in the data
/// directory.
pub async fn open_postgres_service(
    config: &ServerConfig,
    url: &str,
) -> Result<Arc<service::Service<PgStore>>, ServerError> {
    prepare_data_dir(config)?;
    let store = PgStore::connect(url)
        .await
        .map_err(|e| ServerError::Database(e.to_string()))?;
    service_over(config, store)
}

/// Checks the settings, then creates the data directory: a bad setting must not leave
/// anything behind.
fn prepare_data_dir(config: &ServerConfig) -> Result<(), ServerError> {
    config.files.validate()?;
    config.limits.validate()?;
    std::fs::create_dir_all(&config.data_dir).map_err(|e| storage_error(config, e))
}

fn storage_error(config: &ServerConfig, detail: impl std::fmt::Display) -> ServerError {
    ServerError::Storage {
        path: config.data_dir.clone(),
        detail: detail.to_string(),
    }
}

/// The service over `store`, with the files and the server identity of the data directory.
fn service_over<S: Store>(
    config: &ServerConfig,
    store: S,
) -> Result<Arc<service::Service<S>>, ServerError> {
    let files = service::files::Files::open(&config.data_dir, config.files.clone())
        .map_err(|detail| storage_error(config, detail))?;
    let server_id = service::key_file::load_or_create(
        &config.data_dir.join("server.id"),
        "server identity",
        "every device of every account refuses to log in until relinked",
        || {
            let mut id = [0u8; chapar_types::signed::SERVER_ID_BYTES];
            rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut id);
            id
        },
    )
    .map_err(|e| storage_error(config, e))?;
    Ok(Arc::new(service::Service::new(
        store,
        files,
        config.limits.clone(),
        server_id,
    )))
}

/// Opens storage, binds the listeners and serves until `shutdown` resolves. `on_ready` is
/// called with the bound addresses once the server accepts connections.
pub async fn run(
    config: ServerConfig,
    on_ready: impl FnOnce(Bound),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let tls = config.tls.as_ref().map(TlsFiles::acceptor).transpose()?;
    let entry = config
        .camouflage
        .then(|| entry_path(&config.data_dir))
        .transpose()?;
    match config.database.clone() {
        Some(url) => {
            let service = open_postgres_service(&config, &url).await?;
            serve(config, service, tls, entry, on_ready, shutdown).await
        }
        None => {
            let service = open_service(&config)?;
            serve(config, service, tls, entry, on_ready, shutdown).await
        }
    }
}

/// Serves `service` on the listeners `config` names until `shutdown` resolves.
async fn serve<S: Store>(
    config: ServerConfig,
    service: Arc<service::Service<S>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    entry: Option<String>,
    on_ready: impl FnOnce(Bound),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let gc = service::files::gc::spawn_file_gc(service.clone());
    let listener = listen(config.listen)?;
    let operators = tokio::net::TcpListener::bind(config.metrics_listen).await?;
    let bound = Bound {
        address: listener.local_addr()?,
        metrics: operators.local_addr()?,
        tls: tls.is_some(),
        entry: entry.clone(),
    };
    tracing::info!(
        address = %bound.address,
        metrics = %bound.metrics,
        data = %config.data_dir.display(),
        database = if config.database.is_some() { "postgres" } else { "sqlite" },
        "chapar server listening"
    );
    on_ready(bound);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let metrics = tokio::spawn(listener::serve(
        operators,
        None,
        api::operators_router(service.clone()),
        config.limits.clone(),
        Arc::new(Metrics::default()),
        until_stopped(stopped.clone()),
    ));
    let public_routes = match &entry {
        Some(entry) => api::camouflaged_router(service.clone(), entry),
        None => api::router(service.clone()),
    };
    let public = listener::serve(
        listener,
        tls,
        public_routes,
        config.limits.clone(),
        service.metrics.clone(),
        until_stopped(stopped),
    );
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    public.await;
    let _ = metrics.await;
    gc.abort();
    tracing::info!("chapar server stopped");
    Ok(())
}

pub use service::files::FilesConfig;
pub use tls::{TlsError, TlsFiles};

impl ServerConfig {
    /// A server on `listen` keeping its data in `data_dir`, with every other setting at its
    /// default.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            listen,
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            limits: Limits::default(),
            data_dir,
            files: FilesConfig::default(),
            tls: None,
            camouflage: false,
            database: None,
        }
    }
}

/// Bytes of a camouflaged server's entry secret (its path: 22 base64url characters).
const ENTRY_SECRET_BYTES: usize = 16;

/// The secret entry path of a server in camouflage, made once and kept in `data_dir`.
fn entry_path(data_dir: &std::path::Path) -> Result<String, ServerError> {
    std::fs::create_dir_all(data_dir)?;
    let secret = service::key_file::load_or_create::<ENTRY_SECRET_BYTES>(
        &data_dir.join("entry.secret"),
        "camouflage entry secret",
        "every client's address changes",
        rand::random,
    )?;
    Ok(data_encoding::BASE64URL_NOPAD.encode(&secret))
}

/// Most connections the kernel queues for `accept` (the default, 128, overflows when
/// thousands of clients reconnect at once after a network change, and each waits seconds).
const LISTEN_BACKLOG: u32 = 4096;

/// A listening socket on `address` with room for [`LISTEN_BACKLOG`] pending connections.
fn listen(address: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As std's bind does: a restarted server may bind while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}
