//! The FetchLog spammers: logged-in accounts whose groups hold large log entries, and that
//! ask for whole log pages without end and never read. Each is registered once, then logs in
//! again and again for as long as the attack lasts.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use chapar_crypto::identity::{self, SecretKey};
use chapar_types::{DeviceId, Username};
use chapar_wire::v1::{self, client_frame::Request, response::Result as Reply};
use tokio::io::AsyncWriteExt;

use crate::attack::{Attack, CYCLE_MIN, spammer_source};
use crate::kind::{Kind, NEVER_CLOSED, Record, ended, failed};
use crate::ws::{OP_BINARY, Ws, frame};

/// Logged-in accounts that ask for large log pages and never read.
pub const SPAMMERS: usize = 3;

/// Bytes of each log entry the spammers' groups hold, and entries per group: a page of them
/// is about 720 KiB, under `PAGE_BYTES_MAX`.
const SPAM_ENTRY_BYTES: usize = 180 * 1024;
const SPAM_ENTRIES: u8 = 4;

/// An account that spams: its device's keys and a group whose log pages are large.
pub struct Spammer {
    source: Ipv4Addr,
    device_key: SecretKey,
    device: DeviceId,
    group: Vec<u8>,
}

/// Registers spammer `index` over its own connection and fills its group's log.
pub async fn register_spammer(server: SocketAddr, index: usize) -> Spammer {
    let source = spammer_source(index);
    let name = format!("spammer{index}");
    let seed = 0x40 + index as u8;
    // Fixed keys: this account's secrets protect nothing.
    let account = SecretKey::from_bytes(&[seed; 32]).unwrap();
    let device_key = SecretKey::from_bytes(&[seed | 0x80; 32]).unwrap();
    let device = DeviceId(0x5EED_0000 + index as u64);
    let mut ws = Ws::open(server, source).await.unwrap();
    let hello = ws.hello().await.unwrap();
    let registration = v1::Register {
        username: name.clone(),
        account_key: account.public().to_vec(),
        device: Some(v1::DeviceCert {
            device_id: device.0,
            device_key: device_key.public().to_vec(),
            account_signature: identity::certify_device(
                &account,
                &Username::parse(&name).unwrap(),
                device,
                &device_key.public(),
            ),
        }),
        challenge_signature: identity::answer_challenge(
            &device_key,
            &hello.challenge,
            device,
            &hello.server_id,
        ),
        key_packages: vec![vec![1, 2, 3]],
        last_resort_key_package: vec![9],
        sealed_name: Vec::new(),
        proof_of_work: chapar_types::pow::solve(
            &hello.challenge,
            &name,
            u8::try_from(hello.registration_pow_bits).unwrap(),
        ),
        invite_code: String::new(),
    };
    let reply = ws.request(Request::Register(registration)).await.unwrap();
    assert!(matches!(reply, Reply::AuthOk(_)), "register: {reply:?}");
    let group = vec![seed; 16];
    ws.request(Request::CreateGroup(v1::CreateGroup {
        group_id: group.clone(),
    }))
    .await
    .unwrap();
    for entry in 0..SPAM_ENTRIES {
        let reply = ws
            .request(Request::SendMessage(v1::SendMessage {
                group_id: group.clone(),
                epoch: 0,
                message_id: vec![entry; 16],
                ciphertext: vec![entry; SPAM_ENTRY_BYTES],
                roster_version: 0,
                ..Default::default()
            }))
            .await
            .unwrap();
        assert!(matches!(reply, Reply::Appended(_)), "send: {reply:?}");
    }
    Spammer {
        source,
        device_key,
        device,
        group,
    }
}

/// One spamming connection: logs in (reading only for that), then asks for the whole log
/// over and over and never reads again. The server must stop reading it, give up writing to
/// it, and close it; the test sees the close as a failed write.
async fn spam(attack: &Attack, spammer: &Spammer) -> (Record, u64) {
    attack.attempted.fetch_add(1, Ordering::Relaxed);
    let mut ws = match Ws::open(attack.server, spammer.source).await {
        Ok(ws) => ws,
        Err(e) => return (failed(Kind::Spammer, e), 0),
    };
    attack.opened();
    let logged_in = async {
        let hello = ws.hello().await?;
        let challenge_signature = identity::answer_challenge(
            &spammer.device_key,
            &hello.challenge,
            spammer.device,
            &hello.server_id,
        );
        ws.request(Request::Authenticate(v1::Authenticate {
            device_id: spammer.device.0,
            challenge_signature,
        }))
        .await
    }
    .await;
    if !matches!(logged_in, Ok(Reply::AuthOk(_))) {
        attack.closed();
        return (failed(Kind::Spammer, format!("log-in: {logged_in:?}")), 0);
    }
    let request = frame(
        OP_BINARY,
        &chapar_wire::encode(&v1::ClientFrame {
            request_id: 1_000,
            request: Some(Request::FetchLog(v1::FetchLog {
                group_id: spammer.group.clone(),
                after_seq: 0,
                limit: 500,
            })),
        }),
    );
    let opened = Instant::now();
    let deadline = tokio::time::Instant::from_std(opened + NEVER_CLOSED);
    let mut sent = 0;
    let closed = loop {
        match tokio::time::timeout_at(deadline, ws.tcp.write_all(&request)).await {
            Err(_) => break false,
            Ok(Err(_)) => break true,
            Ok(Ok(())) => sent += 1,
        }
    };
    attack.closed();
    (ended(Kind::Spammer, opened, closed), sent)
}

pub async fn spam_slot(attack: Arc<Attack>, spammer: Spammer) -> (Vec<Record>, u64) {
    let mut records = Vec::new();
    let mut requests = 0;
    while !attack.stopped() {
        let started = Instant::now();
        let (record, sent) = spam(&attack, &spammer).await;
        records.push(record);
        requests += sent;
        if attack.stopped() {
            break;
        }
        tokio::time::sleep_until(tokio::time::Instant::from_std(started + CYCLE_MIN)).await;
    }
    (records, requests)
}
