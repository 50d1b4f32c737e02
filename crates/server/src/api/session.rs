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

/// Most frames written to the transport before one flush.
const WRITE_BATCH_FRAMES_MAX: usize = 64;

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

/// What a request's answer may take, reserved from the budget before it runs when that is
/// more than a small frame: pages of the log, welcomes, the archive, groups, devices and
/// claimed key packages. Without it, 64 of them in flight would build ~50 MiB of answers
/// outside the budget while they wait for room.
fn answer_reserve(request: &Request) -> u32 {
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

/// The writer: drains the connection's queue into the transport, encoding each push once for
/// all of its recipients. A frame the client does not take within `write_timeout` ends it.
async fn write<W: Sink<Bytes> + Unpin>(
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

/// Queues a response, with its bytes' share of the budget (waiting for room, which only the
/// writer frees).
async fn respond(
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
async fn respond_within(
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

async fn handshake<S: Store>(
    service: &Service<S>,
    session: &mut Session,
    request: Request,
) -> Result<Reply, ServiceError> {
    if let Request::Hello(hello) = request {
        if hello.protocol_version < 1 {
            return Err(ServiceError::new(
                ErrorCode::UnsupportedVersion,
                format!(
                    "this server speaks protocol version {}",
                    chapar_wire::PROTOCOL_VERSION
                ),
            ));
        }
        session.said_hello();
        return Ok(Reply::HelloOk(v1::HelloOk {
            protocol_version: hello.protocol_version.min(chapar_wire::PROTOCOL_VERSION),
            capabilities: chapar_wire::CAPABILITIES
                .iter()
                .map(|c| (*c).to_owned())
                .collect(),
            challenge: session.challenge().to_vec(),
            server_time_ms: crate::service::now_ms(),
            frame_bytes_max: FRAME_BYTES_MAX as u32,
            registration_pow_bits: u32::from(service.limits.registration_pow_bits),
            invite_required: !service.limits.invite_codes.is_empty(),
        }));
    }
    session.require_hello()?;
    match request {
        Request::CreateLink(c) => {
            service
                .create_link_on(session, c.link_id, c.sealed_request)
                .await?;
            return Ok(Reply::Ok(v1::Empty {}));
        }
        Request::FetchLinkApproval(f) => {
            let (sealed_approval, completed) = service.fetch_link_approval(f.link_id).await?;
            return Ok(Reply::LinkApproval(v1::LinkApproval {
                sealed_approval,
                completed,
            }));
        }
        Request::FetchRecovery(f) => {
            let record = service
                .fetch_recovery(session.challenge(), &f.username, &f.signature)
                .await?;
            return Ok(Reply::RecoveryBundle(v1::RecoveryBundle {
                sealed_bundle: record.sealed_bundle,
                auth_key: record.auth_key,
            }));
        }
        _ => {}
    }
    session.require_anonymous()?;
    let (who, key_packages_remaining) = match request {
        Request::RecoverDevice(r) => {
            let device = convert::new_device(
                r.device,
                r.key_packages,
                r.last_resort_key_package,
                r.sealed_name,
            )?;
            let recovery = Recovery {
                username: r.username,
                recovery_signature: r.recovery_signature,
                challenge_signature: r.challenge_signature,
                device,
                revoke_others: r.revoke_others,
            };
            (
                service
                    .recover_device(session.challenge(), recovery)
                    .await?,
                0,
            )
        }
        Request::Register(r) => {
            let device = convert::new_device(
                r.device,
                r.key_packages,
                r.last_resort_key_package,
                r.sealed_name,
            )?;
            let registration = Registration {
                username: r.username,
                account_key: r.account_key,
                device,
                challenge_signature: r.challenge_signature,
                proof_of_work: r.proof_of_work,
                invite_code: r.invite_code,
                peer: session.peer,
            };
            (
                service.register(session.challenge(), registration).await?,
                0,
            )
        }
        Request::Authenticate(a) => {
            service
                .authenticate(
                    session.challenge(),
                    DeviceId(a.device_id),
                    &a.challenge_signature,
                )
                .await?
        }
        _ => return Err(ServiceError::bad_request("not a handshake request")),
    };
    let who = session.logged_in(who);
    Ok(Reply::AuthOk(v1::AuthOk {
        username: who.username.to_string(),
        key_packages_remaining,
    }))
}

async fn handle<S: Store>(
    service: &Service<S>,
    who: &Authenticated,
    connection_id: u64,
    request: Request,
) -> Result<Reply, ServiceError> {
    let ok = || Ok(Reply::Ok(v1::Empty {}));
    let (append, refs) = match request {
        Request::UploadKeyPackages(u) => {
            service
                .upload_key_packages(who, u.key_packages, u.last_resort_key_package)
                .await?;
            return ok();
        }
        Request::ClaimKeyPackages(c) => {
            let only = c.devices.into_iter().map(DeviceId).collect();
            let (account, claimed) = service.claim_key_packages(who, &c.username, only).await?;
            return Ok(Reply::KeyPackages(v1::KeyPackages {
                account_key: account.account_key,
                devices: claimed
                    .iter()
                    .map(|k| v1::DeviceKeyPackage {
                        device: Some(convert::device_cert(&k.device)),
                        key_package: k.key_package.clone(),
                    })
                    .collect(),
            }));
        }
        Request::GetAccount(g) => {
            let peer = service.peer_account(&g.username).await?;
            return Ok(Reply::Account(v1::Account {
                username: peer.account.username.clone(),
                account_key: peer.account.account_key.clone(),
                devices: peer.devices.iter().map(convert::device_cert).collect(),
                pending_devices: peer.pending.iter().map(|d| d.device.0).collect(),
            }));
        }
        Request::CreateGroup(c) => {
            service
                .create_group(who, convert::group_id(&c.group_id)?)
                .await?;
            return ok();
        }
        Request::FetchLog(f) => {
            let page = service
                .read_log(who, convert::group_id(&f.group_id)?, f.after_seq, f.limit)
                .await?;
            return Ok(Reply::LogPage(v1::LogPage {
                entries: page.entries.iter().map(convert::log_entry).collect(),
                head_seq: page.head_seq,
                membership_ended: page.membership_ended,
            }));
        }
        Request::FetchWelcomes(f) => {
            let welcomes = service.read_welcomes(who, f.after_id, f.limit).await?;
            return Ok(Reply::WelcomePage(v1::WelcomePage {
                welcomes: welcomes
                    .into_iter()
                    .map(|w| v1::Welcome {
                        id: w.id,
                        group_id: w.group.as_bytes().to_vec(),
                        seq: w.seq,
                        welcome: w.welcome,
                        sender_device: w.sender.0,
                    })
                    .collect(),
            }));
        }
        Request::ListGroups(_) => {
            let heads = service.groups(who).await?;
            return Ok(Reply::GroupList(v1::GroupList {
                groups: heads
                    .into_iter()
                    .map(|h| v1::GroupHead {
                        group_id: h.group.as_bytes().to_vec(),
                        head_seq: h.head_seq,
                        joined_seq: h.joined_seq,
                        left_seq: h.left_seq.unwrap_or(0),
                        archived_seq: h.archived_seq,
                        roster_version: h.roster_version,
                    })
                    .collect(),
            }));
        }
        Request::Ping(_) => return ok(),
        Request::FetchLink(f) => {
            return Ok(Reply::LinkRequest(v1::LinkRequest {
                sealed_request: service.fetch_link(who, f.link_id).await?,
            }));
        }
        Request::ApproveLink(a) => {
            service
                .approve_link(who, a.link_id, a.sealed_approval)
                .await?;
            return ok();
        }
        Request::AddDevice(a) => {
            let device = convert::new_device(
                a.device,
                a.key_packages,
                a.last_resort_key_package,
                a.sealed_name,
            )?;
            service.add_device(who, device).await?;
            return ok();
        }
        Request::ListDevices(_) => {
            let (devices, recovery_auth_key) = service.list_devices(who).await?;
            return Ok(Reply::DeviceList(v1::DeviceList {
                devices: devices
                    .iter()
                    .map(|(d, key_packages)| convert::device_info(d, *key_packages))
                    .collect(),
                recovery_auth_key,
            }));
        }
        Request::RevokeDevice(r) => {
            service.revoke_device(who, DeviceId(r.device_id)).await?;
            return ok();
        }
        Request::CompleteLink(c) => {
            service.complete_link(who, c.link_id).await?;
            return ok();
        }
        Request::SetRecovery(r) => {
            service
                .set_recovery(who, r.auth_key, r.sealed_bundle, r.expected_auth_key)
                .await?;
            return ok();
        }
        Request::AppendArchive(a) => {
            service
                .append_archive(
                    who,
                    chapar_store::ArchiveSegment {
                        id: 0,
                        group: convert::group_id(&a.group_id)?,
                        from_seq: a.from_seq,
                        through_seq: a.through_seq,
                        key_generation: a.key_generation,
                        ciphertext: a.ciphertext,
                    },
                )
                .await?;
            return ok();
        }
        Request::FetchArchive(f) => {
            let segments = service.read_archive(who, f.after_id, f.limit).await?;
            return Ok(Reply::ArchivePage(v1::ArchivePage {
                segments: segments
                    .into_iter()
                    .map(|s| v1::ArchiveSegment {
                        id: s.id,
                        group_id: s.group.as_bytes().to_vec(),
                        from_seq: s.from_seq,
                        through_seq: s.through_seq,
                        key_generation: s.key_generation,
                        ciphertext: s.ciphertext,
                    })
                    .collect(),
            }));
        }
        Request::FileToken(_) => {
            let (token, expires_ms) = service.file_token(who);
            return Ok(Reply::FileTokenOk(v1::FileTokenOk { token, expires_ms }));
        }
        Request::SendMessage(m) => {
            let refs = convert::blob_refs(&m.blob_ids, &m.unreferenced_blob_ids, m.deleted_seq)?;
            let append = Append {
                group: convert::group_id(&m.group_id)?,
                sender: who.device,
                epoch: m.epoch,
                now_ms: 0,
                payload: m.ciphertext,
                kind: AppendKind::Application {
                    message_id: convert::message_id(&m.message_id)?,
                    roster_version: m.roster_version,
                },
            };
            (append, refs)
        }
        Request::SubmitCommit(c) => {
            let append = Append {
                group: convert::group_id(&c.group_id)?,
                sender: who.device,
                epoch: c.epoch,
                now_ms: 0,
                payload: c.commit,
                kind: AppendKind::Commit {
                    seen_seq: c.seen_seq,
                    added: c.added_devices.into_iter().map(DeviceId).collect(),
                    removed: c.removed_devices.into_iter().map(DeviceId).collect(),
                    welcome: (!c.welcome.is_empty()).then_some(c.welcome),
                },
            };
            (append, None)
        }
        Request::SubmitProposal(p) => {
            let append = Append {
                group: convert::group_id(&p.group_id)?,
                sender: who.device,
                epoch: p.epoch,
                now_ms: 0,
                payload: p.proposal,
                kind: AppendKind::Proposal {
                    self_remove: p.self_remove,
                },
            };
            (append, None)
        }
        Request::Hello(_)
        | Request::Register(_)
        | Request::Authenticate(_)
        | Request::RecoverDevice(_)
        | Request::CreateLink(_)
        | Request::FetchLinkApproval(_)
        | Request::FetchRecovery(_) => {
            return Err(ServiceError::bad_request(
                "this connection is already logged in",
            ));
        }
    };
    let appended = service.submit(who, connection_id, append, refs).await?;
    Ok(Reply::Appended(v1::Appended {
        seq: appended.seq,
        epoch: appended.epoch,
        server_time_ms: appended.server_ms,
    }))
}

/// A connection driven by calls instead of a transport (the deterministic simulator): each
/// request is answered before the call returns, and pushes wait in a queue until taken. It
/// runs exactly the session above, minus the concurrency.
pub struct InProcess<S: Store> {
    service: Arc<Service<S>>,
    session: Session,
    queue: mpsc::Receiver<Outgoing>,
    target: PushTarget,
}

impl<S: Store> InProcess<S> {
    /// A fresh connection to `service`.
    pub fn new(service: Arc<Service<S>>) -> Self {
        let session = Session::new(&service, None);
        let (queue_tx, queue) = mpsc::channel(PUSH_QUEUE_DEPTH_MAX);
        let target = PushTarget {
            id: session.connection_id,
            queue: queue_tx,
            budget: Arc::new(Semaphore::new(service.limits.connection_bytes_max)),
            lagged: Arc::new(AtomicBool::new(false)),
            kick: Arc::new(tokio::sync::Notify::new()),
        };
        Self {
            service,
            session,
            queue,
            target,
        }
    }

    /// Answers one frame: returns the encoded response.
    pub async fn request(&mut self, bytes: &[u8]) -> Bytes {
        let (request_id, result) = match decode_frame(bytes) {
            Err((request_id, error)) => (request_id, Err(error)),
            Ok((request_id, request)) if is_handshake(&request) => {
                let result = handshake(&self.service, &mut self.session, request).await;
                if let (Ok(Reply::AuthOk(_)), Some(who)) = (&result, self.session.who()) {
                    self.service.attach(who, self.target.clone()).await;
                }
                (request_id, result)
            }
            Ok((request_id, request)) => match self.session.require_login() {
                Ok(who) => (
                    request_id,
                    handle(&self.service, &who, self.session.connection_id, request).await,
                ),
                Err(error) => (request_id, Err(error)),
            },
        };
        Bytes::from(chapar_wire::encode(&convert::response(request_id, result)))
    }

    /// The pushes queued for this connection since the last call, encoded (and a resync
    /// request if some were dropped).
    pub fn take_pushes(&mut self) -> Vec<Bytes> {
        let mut out = Vec::new();
        while let Ok(outgoing) = self.queue.try_recv() {
            out.push(match outgoing {
                Outgoing::Frame(bytes, _) => bytes,
                Outgoing::Push(push, _) => push
                    .encoded
                    .get_or_init(|| convert::encode_push(&push.kind))
                    .clone(),
            });
        }
        if self.target.lagged.swap(false, Ordering::Relaxed) {
            out.push(Bytes::from(chapar_wire::encode(&convert::push(
                v1::push::Kind::Resync(v1::Empty {}),
            ))));
        }
        out
    }
}

impl<S: Store> Drop for InProcess<S> {
    fn drop(&mut self) {
        self.service.detach(&self.session);
    }
}
