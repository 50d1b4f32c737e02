//! Protocol-level tests against a real server on port 0 over real WebSockets: login rules,
//! delivery-service rules and bad input. Each failure names the request that misbehaved.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the report

use chapar_client::connection::Connection;
use chapar_crypto::identity::{self, SecretKey};
use chapar_types::limits::{FRAME_BYTES_MAX, MESSAGE_CIPHERTEXT_BYTES_MAX};
use chapar_types::{DeviceId, ErrorCode, Username};
use chapar_wire::v1::{self, client_frame::Request, response::Result as Reply};
use futures_util::{SinkExt, StreamExt};
use rand::RngCore;
use tokio_tungstenite::tungstenite::Message;

/// Shares the files tests' server and login harness.
#[path = "files/harness.rs"]
mod harness;

use harness::{Device, TestServer, code, register, start};

async fn create_group(device: &Device) -> Vec<u8> {
    let mut id = vec![0u8; 16];
    rand::thread_rng().fill_bytes(&mut id);
    device
        .conn
        .request(Request::CreateGroup(v1::CreateGroup {
            group_id: id.clone(),
        }))
        .await
        .unwrap();
    id
}

fn send(group: &[u8], epoch: u64, message_id: u8, ciphertext: Vec<u8>) -> Request {
    Request::SendMessage(v1::SendMessage {
        group_id: group.to_vec(),
        epoch,
        message_id: vec![message_id; 16],
        ciphertext,
        roster_version: 0,
        ..Default::default()
    })
}

#[tokio::test]
async fn retried_sends_are_stored_once() {
    let server = start().await;
    let alice = register(&server, "alice").await;
    let group = create_group(&alice).await;
    let Reply::Appended(first) = alice
        .conn
        .request(send(&group, 0, 7, vec![1; 50]))
        .await
        .unwrap()
    else {
        panic!()
    };
    let Reply::Appended(retry) = alice
        .conn
        .request(send(&group, 0, 7, vec![2; 50]))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        first.seq, retry.seq,
        "a retry with the same message id lands at the same position"
    );
    let Reply::LogPage(page) = alice
        .conn
        .request(Request::FetchLog(v1::FetchLog {
            group_id: group.clone(),
            after_seq: 0,
            limit: 10,
        }))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(page.entries.len(), 1);
    assert_eq!(
        page.entries[0].payload,
        vec![1; 50],
        "the first attempt's bytes are kept"
    );
}

#[tokio::test]
async fn stale_epochs_and_commits_off_the_head_are_refused_with_the_current_position() {
    let server = start().await;
    let alice = register(&server, "alice").await;
    let group = create_group(&alice).await;
    alice
        .conn
        .request(send(&group, 0, 1, vec![1]))
        .await
        .unwrap();
    let stale = alice.conn.request(send(&group, 3, 2, vec![1])).await;
    assert_eq!(code(stale), ErrorCode::StaleEpoch);
    let commit = |epoch, seen_seq| {
        Request::SubmitCommit(v1::SubmitCommit {
            group_id: group.clone(),
            epoch,
            seen_seq,
            commit: vec![0xC0; 10],
            welcome: vec![],
            added_devices: vec![],
            removed_devices: vec![],
            added_key_packages: vec![],
        })
    };
    // The committer has not seen entry 1: refused.
    assert_eq!(
        code(alice.conn.request(commit(0, 0)).await),
        ErrorCode::StaleEpoch
    );
    let Reply::Appended(ok) = alice.conn.request(commit(0, 1)).await.unwrap() else {
        panic!()
    };
    assert_eq!((ok.seq, ok.epoch), (2, 1));
    // The same commit again is now against an old epoch.
    assert_eq!(
        code(alice.conn.request(commit(0, 1)).await),
        ErrorCode::StaleEpoch
    );
}

#[tokio::test]
async fn unknown_names_and_non_members_get_clear_codes() {
    let server = start().await;
    let alice = register(&server, "alice").await;
    let mallory = register(&server, "mallory").await;
    let group = create_group(&alice).await;
    let fetch = |g: Vec<u8>| {
        Request::FetchLog(v1::FetchLog {
            group_id: g,
            after_seq: 0,
            limit: 10,
        })
    };
    assert_eq!(
        code(alice.conn.request(fetch(vec![0xAB; 16])).await),
        ErrorCode::UnknownGroup
    );
    assert_eq!(
        code(alice.conn.request(fetch(vec![1, 2, 3])).await),
        ErrorCode::BadRequest
    );
    assert_eq!(
        code(mallory.conn.request(fetch(group.clone())).await),
        ErrorCode::NotMember
    );
    assert_eq!(
        code(mallory.conn.request(send(&group, 0, 1, vec![1])).await),
        ErrorCode::NotMember
    );
    let claim = |name: &str| {
        Request::ClaimKeyPackages(v1::ClaimKeyPackages {
            username: name.into(),
            devices: Vec::new(),
        })
    };
    assert_eq!(
        code(alice.conn.request(claim("nobody")).await),
        ErrorCode::UnknownUser
    );
    assert_eq!(
        code(alice.conn.request(claim("NOT VALID")).await),
        ErrorCode::InvalidUsername
    );
    let huge = alice
        .conn
        .request(send(
            &group,
            0,
            1,
            vec![0; MESSAGE_CIPHERTEXT_BYTES_MAX + 1],
        ))
        .await;
    assert_eq!(code(huge), ErrorCode::TooLarge);
}

/// Adding a device to a group takes a key package its committer's account claimed, each
/// used once: flooding someone with junk groups costs a (rate-limited) claim per group.
/// Under the old rule any registered device could be added to any number of groups.
#[tokio::test]
async fn a_commit_adds_only_devices_whose_key_packages_its_account_claimed() {
    let server = start().await;
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let add_bob = |group: &[u8], claimed: Vec<Vec<u8>>| {
        Request::SubmitCommit(v1::SubmitCommit {
            group_id: group.to_vec(),
            epoch: 0,
            seen_seq: 0,
            commit: vec![0xC0; 10],
            welcome: vec![0xEE; 10],
            added_devices: vec![bob.id.0],
            removed_devices: vec![],
            added_key_packages: claimed,
        })
    };
    let first = create_group(&alice).await;
    let refused = alice.conn.request(add_bob(&first, vec![])).await;
    assert_eq!(code(refused), ErrorCode::BadRequest);
    let invented = alice.conn.request(add_bob(&first, vec![vec![7; 32]])).await;
    assert_eq!(code(invented), ErrorCode::BadRequest);
    let claimed = harness::claim(&alice, "bob").await;
    assert!(matches!(
        alice
            .conn
            .request(add_bob(&first, vec![claimed.clone()]))
            .await
            .unwrap(),
        Reply::Appended(_)
    ));
    let second = create_group(&alice).await;
    let reused = alice.conn.request(add_bob(&second, vec![claimed])).await;
    assert_eq!(code(reused), ErrorCode::BadRequest, "a claim is used once");
}

/// A login answer is bound to the identity of the server the device's account is on, not to
/// whoever asks. A phishing server that relays this server's challenge to a device gets an
/// answer signed for the server that device believes it talks to, and that answer is refused
/// here. Under the old rule (challenge and device only) the relayed answer logged in.
#[tokio::test]
async fn a_login_answer_made_for_another_server_is_refused() {
    let (here, phisher) = (start().await, start().await);
    let conn = Connection::open(&here.url).await.unwrap();
    let (request, keys) = harness::registration(&conn, "alice");
    assert!(matches!(
        conn.request(Request::Register(request)).await.unwrap(),
        Reply::AuthOk(_)
    ));
    let phishing = Connection::open(&phisher.url).await.unwrap();
    assert_ne!(
        phishing.server_id(),
        conn.server_id(),
        "each server has its own identity"
    );
    assert_eq!(phishing.server_id().len(), 32);
    let relayed_to = Connection::open(&here.url).await.unwrap();
    let answer = |server_id: &[u8]| {
        Request::Authenticate(v1::Authenticate {
            device_id: keys.id.0,
            challenge_signature: identity::answer_challenge(
                &keys.device_key,
                relayed_to.challenge(),
                keys.id,
                server_id,
            ),
        })
    };
    assert_eq!(
        code(relayed_to.request(answer(phishing.server_id())).await),
        ErrorCode::AuthenticationFailed
    );
    assert!(matches!(
        relayed_to.request(answer(conn.server_id())).await.unwrap(),
        Reply::AuthOk(_)
    ));
}

#[tokio::test]
async fn login_is_required_and_checked() {
    let server = start().await;
    register(&server, "alice").await;
    let conn = Connection::open(&server.url).await.unwrap();
    let fetch = Request::ListGroups(v1::ListGroups::default());
    assert_eq!(
        code(conn.request(fetch.clone()).await),
        ErrorCode::Unauthenticated
    );
    let forged = SecretKey::generate(&mut rand::thread_rng());
    let bad = conn
        .request(Request::Authenticate(v1::Authenticate {
            device_id: 42,
            challenge_signature: identity::answer_challenge(
                &forged,
                conn.challenge(),
                DeviceId(42),
                conn.server_id(),
            ),
        }))
        .await;
    assert_eq!(code(bad), ErrorCode::AuthenticationFailed);
    // A registration whose device certificate was not signed by the account key is refused.
    let (account, device_key) = (
        SecretKey::generate(&mut rand::thread_rng()),
        SecretKey::generate(&mut rand::thread_rng()),
    );
    let wrong = Username::parse("someone_else").unwrap();
    let register = conn
        .request(Request::Register(v1::Register {
            username: "eve".into(),
            account_key: account.public().to_vec(),
            device: Some(v1::DeviceCert {
                device_id: 5,
                device_key: device_key.public().to_vec(),
                account_signature: identity::certify_device(
                    &account,
                    &wrong,
                    DeviceId(5),
                    &device_key.public(),
                ),
            }),
            challenge_signature: identity::answer_challenge(
                &device_key,
                conn.challenge(),
                DeviceId(5),
                conn.server_id(),
            ),
            key_packages: vec![],
            last_resort_key_package: vec![9],
            sealed_name: Vec::new(),
            proof_of_work: conn.prove_registration("eve"),
            invite_code: String::new(),
        }))
        .await;
    assert_eq!(code(register), ErrorCode::AuthenticationFailed);
}

async fn raw(
    server: &TestServer,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!("{}/v1/ws", server.url.replace("http://", "ws://"));
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

async fn next_response(
    ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
) -> v1::Response {
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(bytes))) => {
                let frame: v1::ServerFrame = chapar_wire::decode(&bytes).unwrap();
                if let Some(v1::server_frame::Kind::Response(r)) = frame.kind {
                    return r;
                }
            }
            Some(Ok(_)) => continue,
            other => panic!("connection ended: {other:?}"),
        }
    }
}

fn error_code(r: &v1::Response) -> Option<ErrorCode> {
    match &r.result {
        Some(Reply::Error(e)) => Some(ErrorCode::from_u32(e.code)),
        _ => None,
    }
}

#[tokio::test]
async fn malformed_frames_get_errors_and_the_connection_survives() {
    let server = start().await;
    let mut ws = raw(&server).await;
    ws.send(Message::Binary(vec![0xFF, 0xFF, 0xFF, 0x01, 0x02].into()))
        .await
        .unwrap();
    assert_eq!(
        error_code(&next_response(&mut ws).await),
        Some(ErrorCode::BadRequest)
    );
    ws.send(Message::Text("hello?".into())).await.unwrap();
    assert_eq!(
        error_code(&next_response(&mut ws).await),
        Some(ErrorCode::BadRequest)
    );
    let ping = v1::ClientFrame {
        request_id: 9,
        request: Some(Request::Ping(v1::Ping {})),
    };
    ws.send(Message::Binary(chapar_wire::encode(&ping).into()))
        .await
        .unwrap();
    let r = next_response(&mut ws).await;
    assert_eq!(
        (r.request_id, error_code(&r)),
        (9, Some(ErrorCode::BadRequest)),
        "Hello must come first"
    );
    let hello = v1::ClientFrame {
        request_id: 10,
        request: Some(Request::Hello(v1::Hello {
            protocol_version: 1,
            ..Default::default()
        })),
    };
    ws.send(Message::Binary(chapar_wire::encode(&hello).into()))
        .await
        .unwrap();
    assert!(matches!(
        next_response(&mut ws).await.result,
        Some(Reply::HelloOk(_))
    ));
    let old = v1::ClientFrame {
        request_id: 11,
        request: Some(Request::Hello(v1::Hello {
            protocol_version: 0,
            ..Default::default()
        })),
    };
    ws.send(Message::Binary(chapar_wire::encode(&old).into()))
        .await
        .unwrap();
    assert_eq!(
        error_code(&next_response(&mut ws).await),
        Some(ErrorCode::UnsupportedVersion)
    );
}

#[tokio::test]
async fn oversized_frames_and_vanishing_clients_do_not_hurt_others() {
    let server = start().await;
    let alice = register(&server, "alice").await;
    let group = create_group(&alice).await;

    let mut big = raw(&server).await;
    let _ = big
        .send(Message::Binary(vec![0u8; FRAME_BYTES_MAX + 1].into()))
        .await;
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match big.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return true,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert_eq!(ended, Ok(true), "an oversized frame closes that connection");

    // A client that sends a request and disappears without reading the answer.
    let mut vanishing = raw(&server).await;
    let hello = v1::ClientFrame {
        request_id: 1,
        request: Some(Request::Hello(v1::Hello {
            protocol_version: 1,
            ..Default::default()
        })),
    };
    vanishing
        .send(Message::Binary(chapar_wire::encode(&hello).into()))
        .await
        .unwrap();
    drop(vanishing);

    let Reply::Appended(appended) = alice
        .conn
        .request(send(&group, 0, 1, vec![1]))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(appended.seq, 1, "the server keeps serving everyone else");
}
