//! One connection speaking the protocol, over any transport that carries ordered frames: the
//! WebSocket (`api::ws`), a length-prefixed byte stream (`api::stream`), and the transports
//! still to come. This decodes frames, hands each request to the service, and encodes what
//! goes back; every rule (limits, login, links per connection, fan-out) is the service's.
//!
//! The reader loop answers the handshake itself (it changes the session); every later request
//! runs in its own task, at most [`REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX`] at once, so a slow
//! store call does not stall the connection. A single writer task owns the transport's sending
//! half and drains a bounded queue shared by responses (which wait for room) and pushes (which
//! are dropped when there is none, flagging the connection so the client is told to
//! resynchronise).
//!
//! Here: the reader loop. `requests`: each request to its service call. `outgoing`: the
//! writer and the byte budget of what is queued. `in_process`: the same session driven by
//! calls, for the simulator.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chapar_store::{Append, AppendKind, Store};
use chapar_types::limits::{
    FRAME_BYTES_MAX, PAGE_BYTES_MAX, PUSH_QUEUE_DEPTH_MAX, REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX,
};
use chapar_types::{DeviceId, ErrorCode};
use chapar_wire::v1::{self, client_frame::Request, response::Result as Reply};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::convert;
use crate::ServiceError;
use crate::hub::{Outgoing, PushTarget};
use crate::metrics::{LimitHit, Metrics};
use crate::service::devices::Recovery;
use crate::service::session::Session;
use crate::service::{Authenticated, Registration, Service};

mod in_process;
mod outgoing;
mod requests;

pub use in_process::InProcess;
use outgoing::*;
use requests::*;

/// What a transport hands the session.
#[derive(Debug)]
pub enum Inbound {
    /// One protocol frame.
    Frame(Bytes),
    /// Something the transport received that is not a protocol frame (a WebSocket text
    /// message): answered with `bad_request`, and the connection stays.
    NotAFrame,
}

/// A connection's share of memory (see `Limits::connection_bytes_max`): requests being
/// handled and frames waiting to be written hold permits of it, one per byte.
type Budget = Arc<Semaphore>;

/// The permits for `bytes` bytes of the budget (a frame is at most a few MiB).
fn bytes_of(bytes: usize) -> u32 {
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// Serves one connection until either side closes it, or it breaks a limit: it must log in
/// within `login_timeout`, send something within every `idle_timeout`, take every frame
/// within `write_timeout`, and keep at most `connection_bytes_max` bytes of requests and
/// output (beyond it the server stops reading it, and drops pushes for a resync). `peer` is
/// the address it came from, if the transport knows it. `frames` yields what arrives (an
/// error or its end closes the connection); `sink` takes encoded frames to send.
pub async fn serve<S, R, W, E>(
    service: Arc<Service<S>>,
    peer: Option<IpAddr>,
    mut frames: R,
    sink: W,
) where
    S: Store,
    R: Stream<Item = Result<Inbound, E>> + Unpin + Send,
    W: Sink<Bytes> + Unpin + Send + 'static,
{
    let metrics = service.metrics.clone();
    metrics.connections_open.fetch_add(1, Ordering::Relaxed);
    metrics.connections_total.fetch_add(1, Ordering::Relaxed);
    let limits = &service.limits;

    let (out, out_rx) = mpsc::channel::<Outgoing>(PUSH_QUEUE_DEPTH_MAX);
    let lagged = Arc::new(AtomicBool::new(false));
    let kick = Arc::new(tokio::sync::Notify::new());
    let budget: Budget = Arc::new(Semaphore::new(limits.connection_bytes_max));
    let mut writer = tokio::spawn(write(
        sink,
        out_rx,
        lagged.clone(),
        limits.write_timeout,
        metrics.clone(),
    ));

    let mut session = Session::new(&service, peer);
    let permits = Arc::new(Semaphore::new(REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX));
    let login_deadline = tokio::time::Instant::now() + limits.login_timeout;
    let mut idle_deadline = tokio::time::Instant::now() + limits.idle_timeout;

    loop {
        let (deadline, limit) = if session.who().is_none() && login_deadline < idle_deadline {
            (login_deadline, LimitHit::LoginTimeout)
        } else {
            (idle_deadline, LimitHit::IdleTimeout)
        };
        let next = tokio::select! {
            next = frames.next() => next,
            () = kick.notified() => {
                tracing::info!(connection = session.connection_id, "closing a connection: its device was revoked, or opened too many");
                break;
            }
            // The writer gave up (the client stopped reading, or went away).
            _ = &mut writer => break,
            () = tokio::time::sleep_until(deadline) => {
                metrics.hit(limit);
                tracing::debug!(connection = session.connection_id, limit = limit.name(), "closing a connection");
                break;
            }
        };
        idle_deadline = tokio::time::Instant::now() + limits.idle_timeout;
        let bytes = match next {
            Some(Ok(Inbound::Frame(bytes))) => bytes,
            Some(Ok(Inbound::NotAFrame)) => {
                let error = ServiceError::bad_request(
                    "text frames are not part of the protocol; send binary frames",
                );
                if respond(&out, &budget, 0, Err(error)).await.is_err() {
                    break;
                }
                continue;
            }
            Some(Err(_)) | None => break,
        };
        // The request's bytes count until it is answered; with the budget spent, reading
        // waits for room (backpressure), and a client that does not read meets the write
        // timeout.
        let Ok(held) = budget
            .clone()
            .acquire_many_owned(bytes_of(bytes.len()))
            .await
        else {
            break;
        };
        let (request_id, request) = match decode_frame(&bytes) {
            Ok(decoded) => decoded,
            Err((request_id, error)) => {
                drop(held);
                if respond(&out, &budget, request_id, Err(error))
                    .await
                    .is_err()
                {
                    break;
                }
                continue;
            }
        };
        drop(bytes);
        if is_handshake(&request) {
            let started = Instant::now();
            // Boxed: the handshake's state (registration, signature checks) is large and
            // needed once; inline it would stay in every idle connection's future.
            let result = Box::pin(handshake(&service, &mut session, request)).await;
            record(&service, started, &result);
            if let (Ok(Reply::AuthOk(_)), Some(who)) = (&result, session.who()) {
                let target = PushTarget {
                    id: session.connection_id,
                    queue: out.clone(),
                    budget: budget.clone(),
                    lagged: lagged.clone(),
                    kick: kick.clone(),
                };
                service.attach(who, target).await;
            }
            drop(held);
            if respond(&out, &budget, request_id, result).await.is_err() {
                break;
            }
            continue;
        }
        let who = match session.require_login() {
            Ok(who) => who,
            Err(error) => {
                drop(held);
                if respond(&out, &budget, request_id, Err(error))
                    .await
                    .is_err()
                {
                    break;
                }
                continue;
            }
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let reserved = match answer_reserve(&request) {
            0 => None,
            bytes => match budget.clone().acquire_many_owned(bytes).await {
                Ok(reserved) => Some(reserved),
                Err(_) => break,
            },
        };
        let (service, out, budget) = (service.clone(), out.clone(), budget.clone());
        let connection_id = session.connection_id;
        tokio::spawn(async move {
            let started = Instant::now();
            let result = handle(&service, &who, connection_id, request).await;
            record(&service, started, &result);
            // The request's share goes before the response takes its own: a response never
            // waits for room that only a waiting response could free.
            drop(held);
            let _ = respond_within(&out, &budget, request_id, result, reserved).await;
            drop(permit);
        });
    }

    service.detach(&session);
    drop(out);
    // Requests still running finish and queue their answers; the writer ends when they have
    // (or at its write timeout). Bounded anyway: nothing may hold a closed connection.
    if !writer.is_finished()
        && tokio::time::timeout(limits.write_timeout * 2, &mut writer)
            .await
            .is_err()
    {
        writer.abort();
    }
    metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
}

/// A frame's request and its id, or the error to answer (with the id, if it could be read).
fn decode_frame(bytes: &[u8]) -> Result<(u64, Request), (u64, ServiceError)> {
    let frame: v1::ClientFrame = chapar_wire::decode(bytes).map_err(|e| {
        tracing::debug!(error = %e, "malformed frame");
        let code = if bytes.len() > FRAME_BYTES_MAX {
            ErrorCode::TooLarge
        } else {
            ErrorCode::BadRequest
        };
        (0, ServiceError::new(code, e.to_string()))
    })?;
    match frame.request {
        Some(request) => Ok((frame.request_id, request)),
        None => Err((frame.request_id, ServiceError::bad_request("empty request"))),
    }
}

fn is_handshake(request: &Request) -> bool {
    matches!(
        request,
        Request::Hello(_)
            | Request::Register(_)
            | Request::Authenticate(_)
            | Request::RecoverDevice(_)
            | Request::CreateLink(_)
            | Request::FetchLinkApproval(_)
            | Request::FetchRecovery(_)
    )
}

fn record<S>(service: &Service<S>, started: Instant, result: &Result<Reply, ServiceError>) {
    let metrics = &service.metrics;
    metrics.requests_total.fetch_add(1, Ordering::Relaxed);
    metrics.observe_latency(started.elapsed());
    if let Err(e) = result {
        metrics.request_errors_total.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(code = %e.code, "request failed");
    }
}
