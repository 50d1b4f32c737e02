//! Protocol frames over an ordered byte stream (a TCP connection, a TLS or camouflage tunnel,
//! a relay's pipe): each frame is a 4-byte big-endian length, then that many bytes, at most
//! [`FRAME_BYTES_MAX`] (see `docs/protocol.md`, section 2). A longer length closes the
//! connection before anything is read into memory.

use std::sync::Arc;

use chapar_store::Store;
use chapar_types::limits::FRAME_BYTES_MAX;
use futures_util::StreamExt as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use super::session::{self, Inbound};
use crate::service::Service;

/// The codec of length-prefixed frames (clients use the same, in `chapar_client::transport`).
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .big_endian()
        .max_frame_length(FRAME_BYTES_MAX)
        .new_codec()
}

/// Serves the protocol over `io` (from `peer`, if known) until either side closes it.
pub async fn serve_stream<S, T>(service: Arc<Service<S>>, peer: Option<std::net::IpAddr>, io: T)
where
    S: Store,
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, write) = tokio::io::split(io);
    let frames = FramedRead::new(read, codec())
        .map(|frame| frame.map(|bytes| Inbound::Frame(bytes.freeze())));
    let sink = FramedWrite::new(write, codec());
    session::serve(service, peer, frames, sink).await;
}
