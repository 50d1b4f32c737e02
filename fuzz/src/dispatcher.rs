//! The `dispatcher` target's body: the request dispatcher (`chapar_server::api`'s session)
//! with a real service on a fresh temporary SQLite store, fed frames from the input.
//!
//! Input: byte 0 picks the preamble, the same on both connections: `0` hello and register
//! (alice on connection A, bob on connection B, so requests get past the login check and
//! pushes fan out between them), `1` hello only (the handshake requests are fuzzed), `2`
//! nothing. Byte 1 picks connection A's transport: even, `InProcess` (the simulator's
//! connection: each request answered before the call returns); odd, the real concurrent
//! session over a length-prefixed byte stream (`api::stream::serve_stream` on an in-memory
//! pipe). Connection B is always `InProcess`. Then chunks follow, each a control byte and a
//! 2-byte length with that many bytes: bit 0 of the control byte sends it on B instead of A;
//! bit 1, on A's byte stream, writes the bytes as they are instead of as one frame behind
//! its length (so the stream's framing is fuzzed too).
//!
//! Checked: nothing panics; on `InProcess`, every frame gets exactly one response, echoing
//! the frame's request id (0 for a frame that does not decode), and every push decodes; on
//! the byte stream, the session ends once the client stops sending (within
//! [`SESSION_SECS_MAX`]), every frame it sends back decodes, and, where only whole frames
//! were sent, at most one response comes per frame, each for a request id that was sent.
//!
//! A fresh store per input keeps every run a function of its input alone (a shared one
//! would grow, and a crash could depend on the inputs before it); in `/dev/shm` it costs
//! a few milliseconds. The runtime is created once per process.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use chapar_wire::v1;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::AsyncWriteExt as _;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::script::Reader;
use crate::server::{Server, alice, bob, challenge_of, hello_frame, runtime};

/// Most chunks one input sends (the rest of the input is ignored).
pub const CHUNKS_MAX: usize = 64;
/// Longest the byte-stream session may take to end after the client stops sending.
pub const SESSION_SECS_MAX: u64 = 20;

/// The control byte's bit that sends a chunk on connection B.
pub const TO_B: u8 = 1;
/// The control byte's bit that writes a chunk to A's byte stream unframed.
pub const RAW: u8 = 2;

struct Chunk<'a> {
    to_b: bool,
    raw: bool,
    bytes: &'a [u8],
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut reader = Reader::new(data);
    let preamble = reader.u8().unwrap_or(0) % 3;
    let stream = reader.u8().unwrap_or(0) % 2 == 1;
    let mut chunks = Vec::new();
    while let (Some(control), Some(bytes)) = (reader.u8(), reader.chunk()) {
        if chunks.len() == CHUNKS_MAX {
            break;
        }
        chunks.push(Chunk {
            to_b: control & TO_B != 0,
            raw: control & RAW != 0,
            bytes,
        });
    }
    runtime().block_on(async {
        let server = Server::open();
        let mut b = server.connect();
        if preamble < 2 {
            bob().greet(&mut b, preamble == 0).await;
        }
        if stream {
            over_stream(&server, &mut b, preamble, &chunks).await;
        } else {
            let mut a = server.connect();
            if preamble < 2 {
                alice().greet(&mut a, preamble == 0).await;
            }
            for chunk in &chunks {
                let conn = if chunk.to_b { &mut b } else { &mut a };
                let response = conn.request(chunk.bytes).await;
                check_response(chunk.bytes, &response);
                for push in conn.take_pushes() {
                    check_push(&push);
                }
            }
        }
    });
}

/// The request id a server answers `frame` with: its own, or 0 if it does not decode.
fn request_id_of(frame: &[u8]) -> u64 {
    chapar_wire::decode::<v1::ClientFrame>(frame).map_or(0, |f| f.request_id)
}

fn check_response(frame: &[u8], response: &[u8]) {
    let decoded: v1::ServerFrame =
        chapar_wire::decode(response).expect("the server's response decodes");
    let Some(v1::server_frame::Kind::Response(response)) = decoded.kind else {
        panic!("a request was answered with {decoded:?}, not a response");
    };
    assert_eq!(
        response.request_id,
        request_id_of(frame),
        "the response names another request"
    );
    assert!(response.result.is_some(), "a response without a result");
}

fn check_push(push: &[u8]) {
    let decoded: v1::ServerFrame = chapar_wire::decode(push).expect("a push decodes");
    assert!(
        matches!(decoded.kind, Some(v1::server_frame::Kind::Push(_))),
        "a push that is not a push: {decoded:?}"
    );
}

/// Connection A over the real session on a byte stream; B's chunks go in between.
async fn over_stream(
    server: &Server,
    b: &mut chapar_server::api::InProcess<chapar_store::sqlite::SqliteStore>,
    preamble: u8,
    chunks: &[Chunk<'_>],
) {
    let (client, server_end) = tokio::io::duplex(64 * 1024);
    let session = tokio::spawn(chapar_server::api::stream::serve_stream(
        server.service.clone(),
        None,
        server_end,
    ));
    let (read, write) = tokio::io::split(client);
    let mut frames = FramedRead::new(read, chapar_server::api::stream::codec());
    let mut sink = FramedWrite::new(write, chapar_server::api::stream::codec());

    // The preamble waits for each answer (the handshake is answered inline, in order).
    if preamble < 2 {
        sink.send(Bytes::from(hello_frame(1)))
            .await
            .expect("the session reads");
        let hello = frames
            .next()
            .await
            .and_then(Result::ok)
            .expect("the session answers Hello");
        let challenge = challenge_of(&hello).expect("Hello is answered with HelloOk");
        if preamble == 0 {
            sink.send(Bytes::from(alice().register_frame(2, &challenge)))
                .await
                .expect("the session reads");
            let reply = frames
                .next()
                .await
                .and_then(Result::ok)
                .expect("the session answers Register");
            assert!(
                matches!(
                    crate::server::reply_of(&reply),
                    Some(v1::response::Result::AuthOk(_))
                ),
                "the harness's registration of alice is refused"
            );
        }
    }

    // Whatever the session sends from here on is read by a task of its own, so that neither
    // side waits for the other to read.
    let reader = tokio::spawn(async move {
        let mut received = Vec::new();
        while let Some(Ok(frame)) = frames.next().await {
            received.push(frame.freeze());
        }
        received
    });
    let mut sent: BTreeMap<u64, usize> = BTreeMap::new();
    let mut whole_frames_only = true;
    for chunk in chunks {
        if chunk.to_b {
            let response = b.request(chunk.bytes).await;
            check_response(chunk.bytes, &response);
            for push in b.take_pushes() {
                check_push(&push);
            }
            continue;
        }
        // A write fails once the session has closed the connection (a length over the
        // limit, a revoked device): the rest is not sent.
        let written = if chunk.raw {
            whole_frames_only = false;
            sink.get_mut().write_all(chunk.bytes).await.is_ok()
        } else {
            *sent.entry(request_id_of(chunk.bytes)).or_default() += 1;
            sink.send(Bytes::copy_from_slice(chunk.bytes)).await.is_ok()
        };
        if !written {
            break;
        }
    }
    let _ = sink.get_mut().shutdown().await;
    drop(sink);
    let limit = Duration::from_secs(SESSION_SECS_MAX);
    tokio::time::timeout(limit, session)
        .await
        .expect("the session ends once its client stops sending")
        .expect("the session's task does not panic");
    let received = tokio::time::timeout(limit, reader)
        .await
        .expect("the session's output ends with it")
        .expect("the reader does not panic");
    for frame in &received {
        let decoded: v1::ServerFrame =
            chapar_wire::decode(frame).expect("what the session sends decodes");
        if let Some(v1::server_frame::Kind::Response(response)) = decoded.kind
            && whole_frames_only
        {
            let left = sent.get_mut(&response.request_id).unwrap_or_else(|| {
                panic!(
                    "a response to request {}, which was not sent (or answered twice)",
                    response.request_id
                )
            });
            assert!(*left > 0, "request {} answered twice", response.request_id);
            *left -= 1;
        }
    }
}
