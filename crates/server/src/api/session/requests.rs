//! Requests to service calls: the handshake (hello, registration, log-in, recovery and the
//! anonymous link requests, which change the session), and everything a logged-in device may
//! ask, each translated from protobuf and back.

use super::*;

pub(super) async fn handshake<S: Store>(
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
            server_id: service.server_id.to_vec(),
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

pub(super) async fn handle<S: Store>(
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
                revocations: peer
                    .account
                    .devices
                    .iter()
                    .rev()
                    .filter_map(|d| {
                        Some(v1::DeviceRevocation {
                            device_id: d.device.0,
                            account_signature: d.revocation_signature.clone()?,
                        })
                    })
                    .take(chapar_types::limits::DEVICES_LISTED_MAX)
                    .collect(),
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
        Request::ListGroups(list) => {
            let after = if list.after_group_id.is_empty() {
                None
            } else {
                Some(
                    chapar_types::GroupId::from_slice(&list.after_group_id).map_err(|_| {
                        ServiceError::new(ErrorCode::BadRequest, "after_group_id is not a group id")
                    })?,
                )
            };
            let heads = service.groups(who, after, list.limit).await?;
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
            service
                .revoke_device(who, DeviceId(r.device_id), r.account_signature)
                .await?;
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
                    added_key_packages: c
                        .added_key_packages
                        .iter()
                        .map(|h| {
                            <[u8; 32]>::try_from(h.as_slice()).map_err(|_| {
                                ServiceError::new(
                                    ErrorCode::BadRequest,
                                    "added_key_packages holds SHA-256 digests (32 bytes each)",
                                )
                            })
                        })
                        .collect::<Result<_, _>>()?,
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
