//! The `frame_codec` target's body: protobuf frames and the length-prefixed stream framing.
//!
//! Protobuf: the input is decoded as a `ClientFrame`, a `ServerFrame` and a content
//! `AppMessage`; whatever decodes must encode, decode back to the same value, and encode to
//! the same bytes again.
//!
//! Framing: the first byte picks how many bytes arrive at a time (1 to 256), the rest is the
//! byte stream. The server's codec (`chapar_server::api::stream::codec`) and the client's
//! (`chapar_client::transport::frame_codec`), fed piece by piece, and the client's `Framed`
//! transport reading the stream from a pipe, must all find exactly the frames a plain
//! reference reader finds (a 4-byte big-endian length, at most `FRAME_BYTES_MAX`), and fail
//! exactly where it fails (a length over the limit, or a frame cut off by the end; a stream
//! that ends right after a length may also end cleanly, as tokio-util's codec has it).
//! Encoding each frame must give its length and its bytes.

use std::fmt::Debug;

use bytes::{Bytes, BytesMut};
use chapar_client::transport::{Framed, Transport as _};
use chapar_types::limits::FRAME_BYTES_MAX;
use chapar_wire::{content, v1};
use tokio::io::AsyncWriteExt as _;
use tokio_util::codec::{Decoder as _, Encoder as _, LengthDelimitedCodec};

use crate::script::Reader;
use crate::server::runtime;

/// Runs one input.
pub fn run(data: &[u8]) {
    round_trip::<v1::ClientFrame>(data);
    round_trip::<v1::ServerFrame>(data);
    round_trip::<content::AppMessage>(data);

    let mut reader = Reader::new(data);
    let piece = usize::from(reader.u8().unwrap_or(0)) + 1;
    let stream = reader.rest();
    let (expected, cut_after_length) = reference(stream);
    let readers = [
        (
            "the server's codec",
            by_pieces(chapar_server::api::stream::codec(), stream, piece),
        ),
        (
            "the client's codec",
            by_pieces(chapar_client::transport::frame_codec(), stream, piece),
        ),
        ("the client's Framed transport", through_transport(stream)),
    ];
    for (who, read) in readers {
        assert_eq!(read.frames, expected.frames, "{who} finds other frames");
        // tokio-util's codec takes a stream that ends right after a length, before any byte
        // of its frame, for a clean end; either way the connection is over.
        assert!(
            read.failed == expected.failed || cut_after_length,
            "{who} {} where the reference {}",
            if read.failed { "fails" } else { "ends cleanly" },
            if expected.failed {
                "fails"
            } else {
                "ends cleanly"
            },
        );
    }
    for frame in &expected.frames {
        let mut out = BytesMut::new();
        chapar_server::api::stream::codec()
            .encode(Bytes::copy_from_slice(frame), &mut out)
            .expect("a frame under the limit encodes");
        assert_eq!(&out[..4], &(frame.len() as u32).to_be_bytes());
        assert_eq!(&out[4..], &frame[..]);
    }
}

fn round_trip<M: prost::Message + Default + PartialEq + Debug>(data: &[u8]) {
    let Ok(message) = chapar_wire::decode::<M>(data) else {
        return;
    };
    let bytes = chapar_wire::encode(&message);
    let again: M = chapar_wire::decode(&bytes).expect("our own encoding decodes");
    assert_eq!(again, message, "decode(encode(m)) != m");
    assert_eq!(chapar_wire::encode(&again), bytes, "encoding is not stable");
}

/// What a reader found in a stream: its frames, and whether it ended in an error.
#[derive(Debug)]
struct Read {
    frames: Vec<Vec<u8>>,
    failed: bool,
}

/// The framing as `docs/protocol.md` section 2 describes it; also whether the stream ends
/// right after a length, before any byte of its (non-empty) frame.
fn reference(mut stream: &[u8]) -> (Read, bool) {
    let mut frames = Vec::new();
    loop {
        if stream.is_empty() {
            let read = Read {
                frames,
                failed: false,
            };
            return (read, false);
        }
        let Some((length, rest)) = stream.split_first_chunk::<4>() else {
            let read = Read {
                frames,
                failed: true,
            };
            return (read, false);
        };
        let length = u32::from_be_bytes(*length) as usize;
        if length > FRAME_BYTES_MAX || rest.len() < length {
            let cut_after_length = length <= FRAME_BYTES_MAX && rest.is_empty();
            let read = Read {
                frames,
                failed: true,
            };
            return (read, cut_after_length);
        }
        frames.push(rest[..length].to_vec());
        stream = &rest[length..];
    }
}

/// Feeds `stream` to `codec` `piece` bytes at a time, then ends it.
fn by_pieces(mut codec: LengthDelimitedCodec, stream: &[u8], piece: usize) -> Read {
    let mut buffer = BytesMut::new();
    let mut frames = Vec::new();
    for part in stream.chunks(piece) {
        buffer.extend_from_slice(part);
        loop {
            match codec.decode(&mut buffer) {
                Ok(Some(frame)) => frames.push(frame.to_vec()),
                Ok(None) => break,
                Err(_) => {
                    return Read {
                        frames,
                        failed: true,
                    };
                }
            }
        }
    }
    loop {
        match codec.decode_eof(&mut buffer) {
            Ok(Some(frame)) => frames.push(frame.to_vec()),
            Ok(None) => {
                return Read {
                    frames,
                    failed: false,
                };
            }
            Err(_) => {
                return Read {
                    frames,
                    failed: true,
                };
            }
        }
    }
}

/// Reads `stream` through the client's `Framed` transport over an in-memory pipe.
fn through_transport(stream: &[u8]) -> Read {
    runtime().block_on(async {
        let (mut server, client) = tokio::io::duplex(stream.len() + 1);
        server.write_all(stream).await.expect("the pipe has room");
        drop(server);
        let mut transport = Framed::new(client);
        let mut frames = Vec::new();
        loop {
            match transport.recv().await {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => {
                    return Read {
                        frames,
                        failed: false,
                    };
                }
                Err(_) => {
                    return Read {
                        frames,
                        failed: true,
                    };
                }
            }
        }
    })
}
