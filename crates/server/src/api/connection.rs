//! One WebSocket connection: handshake, login, then requests and pushes.
//!
//! The reader loop decodes frames and answers the handshake itself (it changes the connection's
//! state); every later request runs in its own task, at most
//! [`REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX`] at once, so a slow store call does not stall the
//! connection. A single writer task owns the socket's sending half and drains a bounded queue
//! shared by responses (which wait for room) and pushes (which are dropped when there is none,
//! flagging the connection so the client is told to resynchronise).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket};
use chapar_store::{Append, AppendKind, Store};
use chapar_types::limits::{
    COMMIT_DEVICE_CHANGES_MAX, FRAME_BYTES_MAX, HANDSHAKE_BYTES_MAX, MESSAGE_CIPHERTEXT_BYTES_MAX,
    PUSH_QUEUE_DEPTH_MAX, REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX,
};
use chapar_types::signed::CHALLENGE_BYTES;
use chapar_types::{DeviceId, ErrorCode};
use chapar_wire::v1::{self, client_frame::Request, response::Result as Reply};
use futures_util::{SinkExt, StreamExt};
use rand::RngCore;
use tokio::sync::{Semaphore, mpsc};

use super::convert;
use crate::ServiceError;
use crate::hub::PushTarget;
use crate::service::devices::Recovery;
use crate::service::{Authenticated, Registration, Service};

/// Most frames written to the socket before one flush.
const WRITE_BATCH_FRAMES_MAX: usize = 64;

/// Most link requests one connection may file: a new device files one, and anonymous
/// connections must not be able to fill the server's pending links alone.
const LINKS_PER_CONNECTION_MAX: usize = 4;

/// What the connection has established so far.
struct Session {
    challenge: [u8; CHALLENGE_BYTES],
    hello: bool,
    who: Option<Arc<Authenticated>>,
    links_created: usize,
}

/// Serves one upgraded WebSocket until either side closes it.
pub(super) async fn serve<S: Store>(service: Arc<Service<S>>, socket: WebSocket) {
    let metrics = &service.metrics;
    metrics.connections_open.fetch_add(1, Ordering::Relaxed);
    metrics.connections_total.fetch_add(1, Ordering::Relaxed);

    let (mut sink, mut stream) = socket.split();
    let (out, mut out_rx) = mpsc::channel::<Bytes>(PUSH_QUEUE_DEPTH_MAX);
    let lagged = Arc::new(AtomicBool::new(false));
    let kick = Arc::new(tokio::sync::Notify::new());
    let connection_id = service.hub.next_connection_id();

    let writer = tokio::spawn({
        let lagged = lagged.clone();
        async move {
            let resync = Bytes::from(chapar_wire::encode(&convert::push(v1::push::Kind::Resync(
                v1::Empty {},
            ))));
            'writing: while let Some(frame) = out_rx.recv().await {
                // Write whatever else is already queued before flushing: one syscall for many
                // frames under load, and no added delay when there is only one.
                let mut next = Some(frame);
                let mut written = 0;
                while let Some(frame) = next.take() {
                    if sink.feed(Message::Binary(frame)).await.is_err() {
                        break 'writing;
                    }
                    written += 1;
                    if written < WRITE_BATCH_FRAMES_MAX {
                        next = out_rx.try_recv().ok();
                    }
                }
                if lagged.swap(false, Ordering::Relaxed)
                    && sink.feed(Message::Binary(resync.clone())).await.is_err()
                {
                    break;
                }
                if sink.flush().await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        }
    });

    let mut session = Session {
        challenge: [0; CHALLENGE_BYTES],
        hello: false,
        who: None,
        links_created: 0,
    };
    rand::thread_rng().fill_bytes(&mut session.challenge);
    let permits = Arc::new(Semaphore::new(REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX));

    loop {
        let message = tokio::select! {
            message = stream.next() => message,
            () = kick.notified() => {
                tracing::info!(connection = connection_id, "closing the connection of a revoked device");
                break;
            }
        };
        let Some(message) = message else { break };
        let bytes = match message {
            Ok(Message::Binary(bytes)) => bytes,
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(Message::Text(_)) => {
                let error = ServiceError::bad_request(
                    "text frames are not part of the protocol; send binary frames",
                );
                if send(&out, convert::response(0, Err(error))).await.is_err() {
                    break;
                }
                continue;
            }
            Ok(Message::Close(_)) | Err(_) => break,
        };
        let frame: v1::ClientFrame = match chapar_wire::decode(&bytes) {
            Ok(frame) => frame,
            Err(e) => {
                tracing::debug!(error = %e, "malformed frame");
                let code = if bytes.len() > FRAME_BYTES_MAX {
                    ErrorCode::TooLarge
                } else {
                    ErrorCode::BadRequest
                };
                if send(
                    &out,
                    convert::response(0, Err(ServiceError::new(code, e.to_string()))),
                )
                .await
                .is_err()
                {
                    break;
                }
                continue;
            }
        };
        let request_id = frame.request_id;
        let Some(request) = frame.request else {
            let _ = send(
                &out,
                convert::response(request_id, Err(ServiceError::bad_request("empty request"))),
            )
            .await;
            continue;
        };
        match request {
            Request::Hello(_)
            | Request::Register(_)
            | Request::Authenticate(_)
            | Request::RecoverDevice(_)
            | Request::CreateLink(_)
            | Request::FetchLinkApproval(_)
            | Request::FetchRecovery(_) => {
                let started = Instant::now();
                // Boxed: the handshake's state (registration, signature checks) is large and
                // needed once; inline it would stay in every idle connection's future.
                let result = Box::pin(handshake(&service, &mut session, request)).await;
                record(&service, started, &result);
                if let Some(who) = &session.who
                    && result.is_ok()
                    && matches!(result, Ok(Reply::AuthOk(_)))
                {
                    service.hub.attach(
                        who.device,
                        PushTarget {
                            id: connection_id,
                            queue: out.clone(),
                            lagged: lagged.clone(),
                            kick: kick.clone(),
                        },
                    );
                    // A revocation between the login check and the attach found nothing to
                    // kick: look again now that the connection can be found.
                    if service.require_active(who).await.is_err() {
                        kick.notify_one();
                    }
                }
                if send(&out, convert::response(request_id, result))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            request => {
                let Some(who) = session.who.clone() else {
                    let error = if session.hello {
                        ServiceError::new(
                            ErrorCode::Unauthenticated,
                            "log in (Register or Authenticate) first",
                        )
                    } else {
                        ServiceError::bad_request("send Hello first")
                    };
                    if send(&out, convert::response(request_id, Err(error)))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    continue;
                };
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let (service, out) = (service.clone(), out.clone());
                tokio::spawn(async move {
                    let started = Instant::now();
                    let result = handle(&service, &who, connection_id, request).await;
                    record(&service, started, &result);
                    let _ = send(&out, convert::response(request_id, result)).await;
                    drop(permit);
                });
            }
        }
    }

    if let Some(who) = &session.who {
        service.hub.detach(who.device, connection_id);
    }
    drop(out);
    let _ = writer.await;
    service
        .metrics
        .connections_open
        .fetch_sub(1, Ordering::Relaxed);
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

async fn send(out: &mpsc::Sender<Bytes>, frame: v1::ServerFrame) -> Result<(), ()> {
    out.send(Bytes::from(chapar_wire::encode(&frame)))
        .await
        .map_err(|_| ())
}

async fn handshake<S: Store>(
    service: &Service<S>,
    session: &mut Session,
    request: Request,
) -> Result<Reply, ServiceError> {
    match request {
        Request::Hello(hello) => {
            if hello.protocol_version < 1 {
                return Err(ServiceError::new(
                    ErrorCode::UnsupportedVersion,
                    format!(
                        "this server speaks protocol version {}",
                        chapar_wire::PROTOCOL_VERSION
                    ),
                ));
            }
            session.hello = true;
            Ok(Reply::HelloOk(v1::HelloOk {
                protocol_version: hello.protocol_version.min(chapar_wire::PROTOCOL_VERSION),
                capabilities: chapar_wire::CAPABILITIES
                    .iter()
                    .map(|c| (*c).to_owned())
                    .collect(),
                challenge: session.challenge.to_vec(),
                server_time_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0),
                frame_bytes_max: FRAME_BYTES_MAX as u32,
            }))
        }
        _ if !session.hello => Err(ServiceError::bad_request("send Hello first")),
        Request::CreateLink(c) => {
            if session.links_created >= LINKS_PER_CONNECTION_MAX {
                return Err(ServiceError::new(
                    ErrorCode::TooLarge,
                    format!("at most {LINKS_PER_CONNECTION_MAX} link requests per connection"),
                ));
            }
            service.create_link(c.link_id, c.sealed_request).await?;
            session.links_created += 1;
            Ok(Reply::Ok(v1::Empty {}))
        }
        Request::FetchLinkApproval(f) => {
            let (sealed_approval, completed) = service.fetch_link_approval(f.link_id).await?;
            Ok(Reply::LinkApproval(v1::LinkApproval {
                sealed_approval,
                completed,
            }))
        }
        Request::FetchRecovery(f) => {
            let record = service
                .fetch_recovery(&session.challenge, &f.username, &f.signature)
                .await?;
            Ok(Reply::RecoveryBundle(v1::RecoveryBundle {
                sealed_bundle: record.sealed_bundle,
                auth_key: record.auth_key,
            }))
        }
        _ if session.who.is_some() => Err(ServiceError::bad_request(
            "this connection is already logged in",
        )),
        Request::RecoverDevice(r) => {
            let device = convert::new_device(
                r.device,
                r.key_packages,
                r.last_resort_key_package,
                r.sealed_name,
            )?;
            let who = service
                .recover_device(
                    &session.challenge,
                    Recovery {
                        username: r.username,
                        recovery_signature: r.recovery_signature,
                        challenge_signature: r.challenge_signature,
                        device,
                        revoke_others: r.revoke_others,
                    },
                )
                .await?;
            Ok(log_in(session, who, 0))
        }
        Request::Register(r) => {
            let device = convert::new_device(
                r.device,
                r.key_packages,
                r.last_resort_key_package,
                r.sealed_name,
            )?;
            let who = service
                .register(
                    &session.challenge,
                    Registration {
                        username: r.username,
                        account_key: r.account_key,
                        device,
                        challenge_signature: r.challenge_signature,
                    },
                )
                .await?;
            Ok(log_in(session, who, 0))
        }
        Request::Authenticate(a) => {
            let (who, remaining) = service
                .authenticate(
                    &session.challenge,
                    DeviceId(a.device_id),
                    &a.challenge_signature,
                )
                .await?;
            Ok(log_in(session, who, remaining))
        }
        _ => Err(ServiceError::bad_request("not a handshake request")),
    }
}

/// Logs the connection in as `who` and makes the reply that says so.
fn log_in(session: &mut Session, who: Authenticated, key_packages_remaining: u32) -> Reply {
    let reply = v1::AuthOk {
        username: who.username.to_string(),
        key_packages_remaining,
    };
    session.who = Some(Arc::new(who));
    Reply::AuthOk(reply)
}

fn too_large(what: &str, limit: usize) -> ServiceError {
    ServiceError::new(
        ErrorCode::TooLarge,
        format!("{what} is larger than {limit} bytes"),
    )
}

async fn handle<S: Store>(
    service: &Service<S>,
    who: &Authenticated,
    connection_id: u64,
    request: Request,
) -> Result<Reply, ServiceError> {
    let append = match request {
        Request::UploadKeyPackages(u) => {
            service
                .upload_key_packages(who, u.key_packages, u.last_resort_key_package)
                .await?;
            return Ok(Reply::Ok(v1::Empty {}));
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
            let account = service.account(&g.username).await?;
            return Ok(Reply::Account(v1::Account {
                username: account.username.clone(),
                account_key: account.account_key.clone(),
                devices: account
                    .devices
                    .iter()
                    // Only devices that logged in: a linked device that never came online has
                    // no key packages, and nobody should try to add it.
                    .filter(|d| d.revoked_ms.is_none() && d.last_seen_ms.is_some())
                    .map(convert::device_cert)
                    .collect(),
                pending_devices: account
                    .devices
                    .iter()
                    .filter(|d| d.revoked_ms.is_none() && d.last_seen_ms.is_none())
                    .map(|d| d.device.0)
                    .collect(),
            }));
        }
        Request::CreateGroup(c) => {
            service
                .create_group(who, convert::group_id(&c.group_id)?)
                .await?;
            return Ok(Reply::Ok(v1::Empty {}));
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
        Request::Ping(_) => return Ok(Reply::Ok(v1::Empty {})),
        Request::FetchLink(f) => {
            return Ok(Reply::LinkRequest(v1::LinkRequest {
                sealed_request: service.fetch_link(who, f.link_id).await?,
            }));
        }
        Request::ApproveLink(a) => {
            service
                .approve_link(who, a.link_id, a.sealed_approval)
                .await?;
            return Ok(Reply::Ok(v1::Empty {}));
        }
        Request::AddDevice(a) => {
            let device = convert::new_device(
                a.device,
                a.key_packages,
                a.last_resort_key_package,
                a.sealed_name,
            )?;
            service.add_device(who, device).await?;
            return Ok(Reply::Ok(v1::Empty {}));
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
            return Ok(Reply::Ok(v1::Empty {}));
        }
        Request::CompleteLink(c) => {
            service.complete_link(who, c.link_id).await?;
            return Ok(Reply::Ok(v1::Empty {}));
        }
        Request::SetRecovery(r) => {
            service
                .set_recovery(who, r.auth_key, r.sealed_bundle, r.expected_auth_key)
                .await?;
            return Ok(Reply::Ok(v1::Empty {}));
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
            return Ok(Reply::Ok(v1::Empty {}));
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
            if m.ciphertext.len() > MESSAGE_CIPHERTEXT_BYTES_MAX {
                return Err(too_large("the message", MESSAGE_CIPHERTEXT_BYTES_MAX));
            }
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
            return append_and_push(service, who, connection_id, append, refs).await;
        }
        Request::SubmitCommit(c) => {
            if c.commit.len() + c.welcome.len() > HANDSHAKE_BYTES_MAX {
                return Err(too_large("the commit", HANDSHAKE_BYTES_MAX));
            }
            if c.added_devices.len() + c.removed_devices.len() > COMMIT_DEVICE_CHANGES_MAX {
                return Err(ServiceError::new(
                    ErrorCode::TooLarge,
                    format!("a commit may change at most {COMMIT_DEVICE_CHANGES_MAX} devices"),
                ));
            }
            Append {
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
            }
        }
        Request::SubmitProposal(p) => {
            if p.proposal.len() > HANDSHAKE_BYTES_MAX {
                return Err(too_large("the proposal", HANDSHAKE_BYTES_MAX));
            }
            Append {
                group: convert::group_id(&p.group_id)?,
                sender: who.device,
                epoch: p.epoch,
                now_ms: 0,
                payload: p.proposal,
                kind: AppendKind::Proposal {
                    self_remove: p.self_remove,
                },
            }
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
    append_and_push(service, who, connection_id, append, None).await
}

/// Appends durably, then pushes the new entry to the group's connected members.
async fn append_and_push<S: Store>(
    service: &Service<S>,
    who: &Authenticated,
    connection_id: u64,
    append: Append,
    refs: Option<chapar_store::BlobRefs>,
) -> Result<Reply, ServiceError> {
    let kind = match append.kind {
        AppendKind::Application { .. } => chapar_store::EntryKind::Application,
        AppendKind::Commit { .. } => chapar_store::EntryKind::Commit,
        AppendKind::Proposal { .. } => chapar_store::EntryKind::Proposal,
    };
    let message_id = match &append.kind {
        AppendKind::Application { message_id, .. } => Some(*message_id),
        _ => None,
    };
    let (group, epoch) = (append.group, append.epoch);
    // Keep the payload for the push without copying it for the common case of no listeners:
    // the store takes ownership, so clone only the bytes we will push.
    let payload = append.payload.clone();
    let appended = service.append(who, append, refs).await?;
    if !appended.duplicate {
        let entry = chapar_store::LogEntry {
            group,
            seq: appended.seq,
            kind,
            epoch,
            sender: who.device,
            message_id,
            payload,
            server_ms: appended.server_ms,
        };
        let frame = Bytes::from(chapar_wire::encode(&convert::push(
            v1::push::Kind::LogEntry(convert::log_entry(&entry)),
        )));
        service
            .hub
            .push(&appended.recipients, &frame, Some(connection_id));
        if !appended.welcomed.is_empty() {
            let hint = Bytes::from(chapar_wire::encode(&convert::push(
                v1::push::Kind::Welcome(v1::Empty {}),
            )));
            service.hub.push(&appended.welcomed, &hint, None);
        }
    }
    Ok(Reply::Appended(v1::Appended {
        seq: appended.seq,
        epoch: appended.epoch,
        server_time_ms: appended.server_ms,
    }))
}
