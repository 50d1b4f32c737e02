//! What goes out on a connection: the writer task that drains its queue into the transport
//! (batched, each push encoded once, every write bounded by the write timeout), and the
//! queueing of responses against the connection's byte budget (an answer's room reserved
//! before it runs where it can be a page; an answer larger than a frame refused).

use super::*;

/// Most frames written to the transport before one flush.
pub(super) const WRITE_BATCH_FRAMES_MAX: usize = 64;

/// What a request's answer may take, reserved from the budget before it runs when that is
/// more than a small frame: pages of the log, welcomes, the archive, groups, devices and
/// claimed key packages. Without it, 64 of them in flight would build ~50 MiB of answers
/// outside the budget while they wait for room.
pub(super) fn answer_reserve(request: &Request) -> u32 {
    // Room for the page and its framing.
    const PAGE_ANSWER_BYTES: usize = PAGE_BYTES_MAX + 64 * 1024;
    match request {
        Request::FetchLog(_)
        | Request::FetchWelcomes(_)
        | Request::FetchArchive(_)
        | Request::ListGroups(_)
        | Request::ListDevices(_)
        | Request::GetAccount(_)
        | Request::ClaimKeyPackages(_)
        | Request::FetchLink(_) => bytes_of(PAGE_ANSWER_BYTES),
        _ => 0,
    }
}

/// The writer: drains the connection's queue into the transport, encoding each push once for
/// all of its recipients. A frame the client does not take within `write_timeout` ends it.
pub(super) async fn write<W: Sink<Bytes> + Unpin>(
    mut sink: W,
    mut queue: mpsc::Receiver<Outgoing>,
    lagged: Arc<AtomicBool>,
    write_timeout: Duration,
    metrics: Arc<Metrics>,
) {
    let resync = Bytes::from(chapar_wire::encode(&convert::push(v1::push::Kind::Resync(
        v1::Empty {},
    ))));
    let timed_out = || metrics.hit(LimitHit::WriteTimeout);
    'writing: while let Some(first) = queue.recv().await {
        // Write whatever else is already queued before flushing: one syscall for many frames
        // under load, and no added delay when there is only one.
        let mut next = Some(first);
        let mut written = 0;
        while let Some(outgoing) = next.take() {
            // The budget's share is given back once the frame is handed to the transport.
            let bytes = match outgoing {
                Outgoing::Frame(bytes, _share) => bytes,
                Outgoing::Push(push, _share) => push
                    .encoded
                    .get_or_init(|| convert::encode_push(&push.kind))
                    .clone(),
            };
            match tokio::time::timeout(write_timeout, sink.feed(bytes)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break 'writing,
                Err(_) => {
                    timed_out();
                    break 'writing;
                }
            }
            written += 1;
            if written < WRITE_BATCH_FRAMES_MAX {
                next = queue.try_recv().ok();
            }
        }
        if lagged.swap(false, Ordering::Relaxed) {
            match tokio::time::timeout(write_timeout, sink.feed(resync.clone())).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break,
                Err(_) => {
                    timed_out();
                    break;
                }
            }
        }
        match tokio::time::timeout(write_timeout, sink.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break,
            Err(_) => {
                timed_out();
                break;
            }
        }
    }
    // A client that stopped reading would hold this close forever: bounded too.
    let _ = tokio::time::timeout(write_timeout, sink.close()).await;
}

/// Queues a response, with its bytes' share of the budget (waiting for room, which only the
/// writer frees).
pub(super) async fn respond(
    out: &mpsc::Sender<Outgoing>,
    budget: &Budget,
    request_id: u64,
    result: Result<Reply, ServiceError>,
) -> Result<(), ()> {
    respond_within(out, budget, request_id, result, None).await
}

/// Like [`respond`], taking the response's share from `reserved` where it fits (the rest of
/// the reservation goes back). An answer larger than a frame, which no client could read
/// and which could wait forever for room, is replaced by a `too_large` error.
pub(super) async fn respond_within(
    out: &mpsc::Sender<Outgoing>,
    budget: &Budget,
    request_id: u64,
    result: Result<Reply, ServiceError>,
    reserved: Option<OwnedSemaphorePermit>,
) -> Result<(), ()> {
    let mut frame = chapar_wire::encode(&convert::response(request_id, result));
    if frame.len() > FRAME_BYTES_MAX {
        tracing::warn!(
            bytes = frame.len(),
            "an answer larger than a frame was refused"
        );
        let error = ServiceError::new(
            ErrorCode::TooLarge,
            "the answer would be larger than a frame; ask for less at a time",
        );
        frame = chapar_wire::encode(&convert::response(request_id, Err(error)));
    }
    let needed = bytes_of(frame.len());
    let share = match reserved {
        Some(mut reserved) if reserved.num_permits() >= needed as usize => {
            // What is left of `reserved` is dropped, and given back, here.
            reserved.split(needed as usize)
        }
        _ => None,
    };
    let share = match share {
        Some(share) => share,
        None => budget
            .clone()
            .acquire_many_owned(needed)
            .await
            .map_err(|_| ())?,
    };
    out.send(Outgoing::Frame(Bytes::from(frame), Some(share)))
        .await
        .map_err(|_| ())
}
