//! What registering costs and what one account may do, against a real server on port 0 with
//! small limits: the proof of work (and its default), invite-only registration, the rate
//! limits on registrations, key package claims and device changes, the daily write budget and
//! the key package quota. Each refusal has its stable error code, and another account (or the
//! same one, for what is not limited) is unaffected. Also: numbers from the network past 2^63
//! are refused instead of wrapping.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the report

use chapar_client::CoreError;
use chapar_client::connection::Connection;
use chapar_server::{FilesConfig, Limits};
use chapar_types::{ErrorCode, pow};
use chapar_wire::v1::{self, client_frame::Request, response::Result as Reply};

#[path = "files/harness.rs"]
mod harness;

use harness::{Device, TestServer, add_device, code, register, registration, start_configured};

async fn serve(limits: Limits) -> TestServer {
    start_configured(FilesConfig::default(), limits).await
}

/// Registers `name` on a new connection after `change` edits the request.
async fn try_register(
    server: &TestServer,
    name: &str,
    change: impl FnOnce(&mut v1::Register),
) -> Result<Reply, CoreError> {
    let conn = Connection::open(&server.url).await.unwrap();
    let (mut request, _) = registration(&conn, name);
    change(&mut request);
    conn.request(Request::Register(request)).await
}

#[tokio::test]
async fn registering_needs_the_servers_proof_of_work_and_the_default_is_twenty_bits() {
    assert_eq!(Limits::default().registration_pow_bits, 20);
    let server = serve(Limits {
        registration_pow_bits: Limits::default().registration_pow_bits,
        ..Limits::for_tests()
    })
    .await;
    let conn = Connection::open(&server.url).await.unwrap();
    let (mut request, _) = registration(&conn, "alice");
    // A proof of 8 bits (what tests ask for) is not one of 20.
    let weak = (0..)
        .find(|n| {
            pow::verify(conn.challenge(), "alice", 8, *n)
                && !pow::verify(conn.challenge(), "alice", 20, *n)
        })
        .unwrap();
    request.proof_of_work = weak;
    assert_eq!(
        code(conn.request(Request::Register(request.clone())).await),
        ErrorCode::ProofOfWorkRequired
    );
    // The proof is bound to its connection's challenge: a solution made on another is no
    // proof here (all but surely).
    let elsewhere = Connection::open(&server.url).await.unwrap();
    let (mut replayed, _) = registration(&elsewhere, "alice");
    replayed.proof_of_work = conn.prove_registration("alice");
    assert_eq!(
        code(elsewhere.request(Request::Register(replayed)).await),
        ErrorCode::ProofOfWorkRequired
    );
    // The real thing: the client library solves what HelloOk asked for.
    request.proof_of_work = conn.prove_registration("alice");
    assert!(pow::verify(
        conn.challenge(),
        "alice",
        20,
        request.proof_of_work
    ));
    let reply = conn.request(Request::Register(request)).await.unwrap();
    assert!(matches!(reply, Reply::AuthOk(_)), "{reply:?}");
}

#[tokio::test]
async fn an_invite_only_server_registers_only_with_one_of_its_codes() {
    let server = serve(Limits {
        invite_codes: vec!["spring-2027".into()],
        ..Limits::for_tests()
    })
    .await;
    assert_eq!(
        code(try_register(&server, "alice", |_| {}).await),
        ErrorCode::InviteRequired
    );
    assert_eq!(
        code(try_register(&server, "alice", |r| r.invite_code = "spring-2026".into()).await),
        ErrorCode::InviteRequired
    );
    let reply = try_register(&server, "alice", |r| r.invite_code = "spring-2027".into())
        .await
        .unwrap();
    assert!(matches!(reply, Reply::AuthOk(_)), "{reply:?}");
}

#[tokio::test]
async fn a_new_device_brings_a_bounded_number_of_key_packages() {
    let server = serve(Limits::for_tests()).await;
    let many = chapar_types::limits::KEY_PACKAGES_AT_REGISTER_MAX + 1;
    assert_eq!(
        code(
            try_register(&server, "alice", |r| r.key_packages =
                vec![vec![1; 100]; many])
            .await
        ),
        ErrorCode::TooLarge
    );
    let reply = try_register(&server, "alice", |r| {
        r.key_packages = vec![vec![1; 100]; many - 1];
    })
    .await
    .unwrap();
    assert!(matches!(reply, Reply::AuthOk(_)), "{reply:?}");
}

#[tokio::test]
async fn one_address_registers_a_few_accounts_an_hour() {
    let server = serve(Limits {
        registrations_per_address_per_hour: 2,
        ..Limits::for_tests()
    })
    .await;
    let alice = register(&server, "alice").await;
    register(&server, "bob").await;
    assert_eq!(
        code(try_register(&server, "carol", |_| {}).await),
        ErrorCode::RateLimited
    );
    // What registered still works, and logging in is not registering.
    let reply = alice
        .conn
        .request(Request::FileToken(v1::FileToken {}))
        .await
        .unwrap();
    assert!(matches!(reply, Reply::FileTokenOk(_)), "{reply:?}");
    add_device(&server, &alice).await;
}

fn claim(name: &str) -> Request {
    Request::ClaimKeyPackages(v1::ClaimKeyPackages {
        username: name.into(),
        devices: Vec::new(),
    })
}

async fn claims(device: &Device, name: &str) -> Result<Reply, CoreError> {
    device.conn.request(claim(name)).await
}

#[tokio::test]
async fn nobody_drains_another_accounts_key_packages() {
    let server = serve(Limits {
        claims_per_account_pair_per_hour: 3,
        ..Limits::for_tests()
    })
    .await;
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let carol = register(&server, "carol").await;
    for _ in 0..3 {
        claims(&bob, "alice").await.unwrap();
    }
    assert_eq!(code(claims(&bob, "alice").await), ErrorCode::RateLimited);
    // The limit is per pair: bob may still claim carol's, and carol alice's.
    claims(&bob, "carol").await.unwrap();
    claims(&carol, "alice").await.unwrap();
    // An account's own devices are not limited (it adds its own new devices).
    add_device(&server, &alice).await;
    for _ in 0..5 {
        claims(&alice, "alice").await.unwrap();
    }
}

/// The key package a claim of `name` by `device` got.
async fn claimed_package(device: &Device, name: &str) -> Vec<u8> {
    match claims(device, name).await.unwrap() {
        Reply::KeyPackages(k) => k.devices[0].key_package.clone(),
        other => panic!("ClaimKeyPackages answered {other:?}"),
    }
}

#[tokio::test]
async fn past_its_hourly_give_out_an_account_serves_its_last_resort_package() {
    let server = serve(Limits {
        one_time_claims_per_account_per_hour: 2,
        ..Limits::for_tests()
    })
    .await;
    let alice = register(&server, "alice").await;
    alice.conn.request(upload(3, 5)).await.unwrap();
    let mut claimers = Vec::new();
    for name in ["bob", "carol", "dave"] {
        claimers.push(register(&server, name).await);
    }
    // The harness registered one one-time package [1, 2, 3] and the last-resort [9].
    assert_eq!(claimed_package(&claimers[0], "alice").await, vec![1, 2, 3]);
    assert_eq!(claimed_package(&claimers[1], "alice").await, vec![3; 5]);
    assert_eq!(
        claimed_package(&claimers[2], "alice").await,
        vec![9],
        "a third claimer gets the last-resort package, though one-time ones are left"
    );
    // Bob's own one-time packages are still given out.
    assert_eq!(claimed_package(&claimers[2], "bob").await, vec![1, 2, 3]);
}

#[tokio::test]
async fn an_account_changes_its_devices_a_few_times_an_hour() {
    let server = serve(Limits {
        device_changes_per_account_per_hour: 3,
        ..Limits::for_tests()
    })
    .await;
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let (second, third) = (
        add_device(&server, &alice).await,
        add_device(&server, &alice).await,
    );
    let revoke = |owner: &Device, device: &Device| {
        let username = chapar_types::Username::parse(&owner.username).unwrap();
        Request::RevokeDevice(v1::RevokeDevice {
            device_id: device.id.0,
            account_signature: chapar_crypto::identity::sign_revocation(
                &owner.account_key,
                &username,
                device.id,
            ),
        })
    };
    alice.conn.request(revoke(&alice, &second)).await.unwrap();
    let bobs = add_device(&server, &bob).await;
    // Alice's fourth change is refused; bob's account has its own budget.
    assert_eq!(
        code(alice.conn.request(revoke(&alice, &third)).await),
        ErrorCode::RateLimited
    );
    // Proving a revocation made already is no change.
    alice.conn.request(revoke(&alice, &second)).await.unwrap();
    bob.conn.request(revoke(&bob, &bobs)).await.unwrap();
}

async fn create_group(device: &Device, tag: u8) -> Vec<u8> {
    let id = vec![tag; 16];
    device
        .conn
        .request(Request::CreateGroup(v1::CreateGroup {
            group_id: id.clone(),
        }))
        .await
        .unwrap();
    id
}

fn send(group: &[u8], message_id: u8, bytes: usize) -> Request {
    Request::SendMessage(v1::SendMessage {
        group_id: group.to_vec(),
        epoch: 0,
        message_id: vec![message_id; 16],
        ciphertext: vec![7; bytes],
        ..Default::default()
    })
}

#[tokio::test]
async fn an_account_writes_its_daily_bytes_and_then_waits_while_others_write_on() {
    let server = serve(Limits {
        // Creating the group costs 1,024 of them (GROUP_CHARGE_BYTES).
        account_bytes_per_day: 11_000,
        ..Limits::for_tests()
    })
    .await;
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let (ours, theirs) = (create_group(&alice, 1).await, create_group(&bob, 2).await);
    // Refused appends are not charged: sends in a stale epoch cost nothing.
    for n in 10..20 {
        let mut stale = send(&ours, n, 4_000);
        if let Request::SendMessage(m) = &mut stale {
            m.epoch = 7;
        }
        assert_eq!(code(alice.conn.request(stale).await), ErrorCode::StaleEpoch);
    }
    alice.conn.request(send(&ours, 1, 4_000)).await.unwrap();
    alice.conn.request(send(&ours, 2, 4_000)).await.unwrap();
    assert_eq!(
        code(alice.conn.request(send(&ours, 3, 4_000)).await),
        ErrorCode::QuotaExceeded
    );
    // What is left still fits, and nothing refused was stored.
    alice.conn.request(send(&ours, 4, 1_000)).await.unwrap();
    let Reply::LogPage(page) = alice
        .conn
        .request(Request::FetchLog(v1::FetchLog {
            group_id: ours,
            after_seq: 0,
            limit: 10,
        }))
        .await
        .unwrap()
    else {
        panic!("FetchLog answers a page")
    };
    assert_eq!(page.entries.len(), 3);
    for n in 1..=2 {
        bob.conn.request(send(&theirs, n, 4_000)).await.unwrap();
    }
    // The archive counts too.
    let segment = Request::AppendArchive(v1::AppendArchive {
        group_id: vec![1; 16],
        from_seq: 0,
        through_seq: 1,
        key_generation: 0,
        ciphertext: vec![5; 2_000],
    });
    assert_eq!(
        code(alice.conn.request(segment).await),
        ErrorCode::QuotaExceeded
    );
}

fn upload(packages: usize, bytes: usize) -> Request {
    Request::UploadKeyPackages(v1::UploadKeyPackages {
        key_packages: vec![vec![3; bytes]; packages],
        last_resort_key_package: Vec::new(),
    })
}

#[tokio::test]
async fn an_account_keeps_a_bounded_amount_of_key_packages() {
    let server = serve(Limits {
        key_package_bytes_per_account_max: 5_000,
        ..Limits::for_tests()
    })
    .await;
    // Registering stored 4 bytes (see the harness).
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    alice.conn.request(upload(4, 1_000)).await.unwrap();
    assert_eq!(
        code(alice.conn.request(upload(1, 1_000)).await),
        ErrorCode::QuotaExceeded
    );
    // Another device of the account shares the quota; another account has its own.
    let second = add_device(&server, &alice).await;
    assert_eq!(
        code(second.conn.request(upload(1, 1_000)).await),
        ErrorCode::QuotaExceeded
    );
    bob.conn.request(upload(4, 1_000)).await.unwrap();
    // Claimed packages leave the quota.
    claims(&bob, "alice").await.unwrap();
    alice.conn.request(upload(1, 900)).await.unwrap();
}

#[tokio::test]
async fn positions_past_two_to_the_sixty_third_are_refused_not_wrapped() {
    let server = serve(Limits::for_tests()).await;
    let alice = register(&server, "alice").await;
    let group = create_group(&alice, 1).await;
    alice.conn.request(send(&group, 1, 10)).await.unwrap();
    let fetch = |after_seq| {
        Request::FetchLog(v1::FetchLog {
            group_id: group.clone(),
            after_seq,
            limit: 10,
        })
    };
    for past in [1 << 63, u64::MAX] {
        assert_eq!(
            code(alice.conn.request(fetch(past)).await),
            ErrorCode::BadRequest,
            "after_seq {past}"
        );
        let welcomes = Request::FetchWelcomes(v1::FetchWelcomes {
            after_id: past,
            limit: 10,
        });
        assert_eq!(
            code(alice.conn.request(welcomes).await),
            ErrorCode::BadRequest
        );
        let archive = Request::FetchArchive(v1::FetchArchive {
            after_id: past,
            limit: 10,
        });
        assert_eq!(
            code(alice.conn.request(archive).await),
            ErrorCode::BadRequest
        );
    }
    // The largest position that fits is just past the end; from 0 the entry is there.
    let Reply::LogPage(page) = alice.conn.request(fetch((1 << 63) - 1)).await.unwrap() else {
        panic!()
    };
    assert!(page.entries.is_empty());
    let Reply::LogPage(page) = alice.conn.request(fetch(0)).await.unwrap() else {
        panic!()
    };
    assert_eq!(page.entries.len(), 1);
}

#[tokio::test]
async fn one_address_files_a_few_link_requests_an_hour() {
    let server = serve(Limits {
        links_per_address_per_hour: 2,
        ..Limits::for_tests()
    })
    .await;
    let link = |n: u8| {
        Request::CreateLink(v1::CreateLink {
            link_id: vec![n; 16],
            sealed_request: vec![1; 100],
        })
    };
    for n in 0..2 {
        let conn = Connection::open(&server.url).await.unwrap();
        conn.request(link(n)).await.unwrap();
    }
    let conn = Connection::open(&server.url).await.unwrap();
    assert_eq!(code(conn.request(link(9)).await), ErrorCode::RateLimited);
}

#[tokio::test]
async fn a_device_holds_a_few_connections_and_its_oldest_go_first() {
    let server = serve(Limits {
        connections_per_device_max: 2,
        ..Limits::for_tests()
    })
    .await;
    let first = Connection::open(&server.url).await.unwrap();
    let (request, keys) = registration(&first, "alice");
    first.request(Request::Register(request)).await.unwrap();
    let mut conns = vec![first];
    for _ in 0..2 {
        let conn = Connection::open(&server.url).await.unwrap();
        let login = Request::Authenticate(v1::Authenticate {
            device_id: keys.id.0,
            challenge_signature: chapar_crypto::identity::answer_challenge(
                &keys.device_key,
                conn.challenge(),
                keys.id,
                conn.server_id(),
            ),
        });
        conn.request(login).await.unwrap();
        conns.push(conn);
    }
    let ping = || Request::Ping(v1::Ping {});
    // The oldest was closed when the third logged in; the two newest still answer.
    harness::eventually(
        std::time::Duration::from_secs(5),
        "the oldest connection closes",
        || async { conns[0].request(ping()).await.is_err() },
    )
    .await;
    for conn in &conns[1..] {
        conn.request(ping()).await.unwrap();
    }
}
