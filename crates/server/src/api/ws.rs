//! The WebSocket transport: each binary message is one protocol frame.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use chapar_store::Store;
use futures_util::{SinkExt as _, StreamExt as _};

use super::session::{self, Inbound};
use crate::service::Service;

/// Serves the protocol over an upgraded WebSocket from `peer` until either side closes it.
pub(super) async fn serve<S: Store>(
    service: Arc<Service<S>>,
    peer: Option<std::net::IpAddr>,
    socket: WebSocket,
) {
    let (sink, stream) = socket.split();
    let frames = stream.filter_map(|message| {
        std::future::ready(match message {
            Ok(Message::Binary(bytes)) => Some(Ok(Inbound::Frame(bytes))),
            Ok(Message::Text(_)) => Some(Ok(Inbound::NotAFrame)),
            // Answered by the WebSocket layer itself.
            Ok(Message::Ping(_) | Message::Pong(_)) => None,
            // A close ends the stream like an error does.
            Ok(Message::Close(_)) => Some(Err(())),
            Err(_) => Some(Err(())),
        })
    });
    let sink =
        sink.with(|bytes: Bytes| std::future::ready(Ok::<_, axum::Error>(Message::Binary(bytes))));
    session::serve(service, peer, Box::pin(frames), Box::pin(sink)).await;
}
