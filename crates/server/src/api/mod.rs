//! HTTP routes and the protocol endpoints. The only module that knows HTTP and protobuf.
//!
//! - `session`: one connection speaking the protocol, over any transport of ordered frames.
//! - `ws`: the WebSocket transport (`/v1/ws`); [`stream`]: length-prefixed frames over any
//!   byte stream.
//! - `files`: the files API (tus uploads and ranged downloads under `/v1/files`).
//! - `cover`: what a server in camouflage answers those who do not know its entry path.

mod convert;
mod cover;
mod files;
mod session;
pub mod stream;
mod ws;

pub use session::{InProcess, Inbound, serve};

use std::sync::Arc;

use axum::Router;
use std::net::SocketAddr;

use axum::Extension;
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use chapar_store::Store;
use chapar_types::limits::FRAME_BYTES_MAX;

use crate::service::Service;

/// Bytes tungstenite reads per socket read. Frames larger than this simply take several reads.
const WS_READ_BUFFER_BYTES: usize = 2 * 1024;

/// Bytes of outgoing frames gathered before tungstenite writes to the socket; the connection
/// writer flushes after each batch, so this only merges frames that are already queued.
const WS_WRITE_BUFFER_BYTES: usize = 8 * 1024;

/// The server's public routes: the protocol, files, and a health check.
pub fn router<S: Store>(service: Arc<Service<S>>) -> Router {
    protocol_routes(service).route("/healthz", get(|| async { "ok\n" }))
}

/// The public routes of a server in camouflage: the protocol and files only under
/// `/<entry>`, and an ordinary web site ([`cover`]) for everything else.
pub fn camouflaged_router<S: Store>(service: Arc<Service<S>>, entry: &str) -> Router {
    Router::new()
        .nest(&format!("/{entry}"), protocol_routes(service))
        .fallback(cover::page)
}

fn protocol_routes<S: Store>(service: Arc<Service<S>>) -> Router {
    Router::new()
        .route("/v1/ws", get(websocket::<S>))
        .merge(files::routes::<S>())
        .with_state(service)
}

/// The operators' routes, for a local listener: metrics and a health check.
pub fn operators_router<S: Store>(service: Arc<Service<S>>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics::<S>))
        .with_state(service)
}

async fn metrics<S: Store>(State(service): State<Arc<Service<S>>>) -> impl IntoResponse {
    let mut text = service.metrics.render();
    // The gauge lives with the slots it counts, not among the counters.
    let name = "chapar_file_transfers_running";
    text.push_str(&format!(
        "# HELP {name} File transfers (PATCH and GET bodies) running now.\n\
         # TYPE {name} gauge\n{name} {}\n",
        service.files.transfers_running()
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

async fn websocket<S: Store>(
    State(service): State<Arc<Service<S>>>,
    // Absent where the router is served without connection info (in tests).
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    upgrade: WebSocketUpgrade,
) -> impl IntoResponse {
    let peer = peer.map(|Extension(ConnectInfo(address))| address.ip());
    upgrade
        .max_message_size(FRAME_BYTES_MAX)
        .max_frame_size(FRAME_BYTES_MAX)
        // tungstenite zero-fills its whole read buffer on every read and keeps it per
        // connection: the 128 KiB default cost both CPU (memset) and idle memory.
        .read_buffer_size(WS_READ_BUFFER_BYTES)
        .write_buffer_size(WS_WRITE_BUFFER_BYTES)
        .on_upgrade(move |socket| ws::serve(service, peer, socket))
}
