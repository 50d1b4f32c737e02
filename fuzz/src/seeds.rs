//! The seed corpus: a few valid inputs per target, made from real frames.
//!
//! The richest come from [`conversation`]: alice's and bob's engines against the real
//! service (bob creates a chat with alice and writes to it, alice syncs and answers), with
//! every frame either side sent and everything the server sent alice recorded. Alice's
//! recording is an `engine_replies` script that replays the conversation; the frames are
//! seeds for `frame_codec` and `dispatcher`. The rest are written by hand here.

use std::path::Path;

use chapar_core::model::Target;
use chapar_core::{Engine, Env, Event, ManualClock, Profile};
use chapar_server::api::InProcess;
use chapar_store::sqlite::SqliteStore;
use chapar_types::Username;
use chapar_wire::v1::{self, client_frame::Request, response::Result as Reply};

use crate::engine::{self, OP_ANSWER, OP_FRAME, OP_JOB, OP_REPLY, OP_TIME, job_index};
use crate::script::Writer;
use crate::server::{Server, frame, runtime};
use crate::{dispatcher, tus};

mod requests;
use requests::{handshake_requests, requests};

/// Writes `target`'s seeds into `dir` (created if needed); returns how many.
pub fn write(target: &str, dir: &Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let seeds = match target {
        "frame_codec" => frame_codec(),
        "dispatcher" => dispatcher(),
        "tus_headers" => tus_headers(),
        "engine_replies" => engine_replies(),
        other => {
            return Err(std::io::Error::other(format!("no target {other}")));
        }
    };
    for (name, bytes) in &seeds {
        std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
    }
    Ok(seeds.len())
}

/// A conversation between two engines and the real service.
pub struct Conversation {
    /// Alice's `engine_replies` script at each job's end (the last is the whole of it).
    pub alice_scripts: Vec<(String, Vec<u8>)>,
    /// Where alice's engine was at the end.
    pub alice_summary: engine::Summary,
    /// Every frame alice's engine sent.
    pub alice_sent: Vec<Vec<u8>>,
    /// Every frame bob's engine sent.
    pub bob_sent: Vec<Vec<u8>>,
    /// Everything the server sent alice.
    pub alice_received: Vec<Vec<u8>>,
}

struct Node {
    engine: Engine,
    conn: InProcess<SqliteStore>,
    sent: Vec<Vec<u8>>,
    received: Vec<Vec<u8>>,
}

/// Runs both engines until neither has anything to do; alice's side goes into `script`.
fn settle(nodes: &mut [Node; 2], script: &mut Writer) {
    loop {
        let mut moved = false;
        for (ix, node) in nodes.iter_mut().enumerate() {
            let recording = ix == 0;
            loop {
                let mut arrived = Vec::new();
                // One request at a time, answered before the next is taken.
                if let Some(frame) = node.engine.poll_transmit() {
                    let reply = runtime().block_on(node.conn.request(&frame));
                    node.sent.push(frame);
                    arrived.push(reply.to_vec());
                }
                arrived.extend(node.conn.take_pushes().into_iter().map(|p| p.to_vec()));
                if arrived.is_empty() {
                    break;
                }
                moved = true;
                for frame in arrived {
                    if recording {
                        script.u8(OP_FRAME).chunk(&frame);
                    }
                    node.engine.on_frame(&frame);
                    node.received.push(frame);
                }
            }
            while let Some(event) = node.engine.poll_event() {
                if let Event::Question { job, .. } = event {
                    moved = true;
                    if recording {
                        script.u8(OP_ANSWER).u8(1);
                    }
                    node.engine.answer(job, true);
                }
            }
        }
        if !moved {
            return;
        }
    }
}

/// Alice's and bob's conversation (see the module docs).
pub fn conversation() -> Conversation {
    let server = Server::open();
    let clock = ManualClock::new(engine::START_MS);
    let mut nodes = [
        Node {
            engine: engine::alice_engine(&clock),
            conn: server.connect(),
            sent: Vec::new(),
            received: Vec::new(),
        },
        Node {
            engine: Engine::new(
                Profile::in_memory().expect("an in-memory profile"),
                Env::new(clock.clone(), [9; 32]),
            )
            .expect("the engine starts"),
            conn: server.connect(),
            sent: Vec::new(),
            received: Vec::new(),
        },
    ];
    let alice_name = Username::parse("alice").expect("a valid name");
    let bob_name = Username::parse("bob").expect("a valid name");
    let mut script = Writer::new();
    let mut scripts = Vec::new();
    for node in nodes.iter_mut() {
        node.engine.on_connected();
    }

    // Byte 0 is the first job: alice registers.
    script.u8(job_index("register"));
    let _ = nodes[0]
        .engine
        .register(engine::SERVER, "alice", "phone", "");
    settle(&mut nodes, &mut script);
    scripts.push(("engine-register".to_owned(), script.clone_bytes()));

    let _ = nodes[1].engine.register(engine::SERVER, "bob", "phone", "");
    settle(&mut nodes, &mut script);
    let _ = nodes[1].engine.create_group("friends", &[alice_name]);
    settle(&mut nodes, &mut script);
    if let Some(group) = nodes[1]
        .engine
        .chats()
        .ok()
        .and_then(|c| c.into_iter().find(|c| c.chat.name == "friends"))
        .map(|c| c.chat.group)
    {
        let _ = nodes[1]
            .engine
            .send_text(&Target::Group(group), "hello alice", None);
        settle(&mut nodes, &mut script);
    }

    script.u8(OP_JOB).u8(job_index("sync"));
    let _ = nodes[0].engine.sync();
    settle(&mut nodes, &mut script);
    scripts.push(("engine-sync".to_owned(), script.clone_bytes()));

    script.u8(OP_JOB).u8(job_index("send_text"));
    let _ = nodes[0]
        .engine
        .send_text(&Target::User(bob_name), "hello bob", None);
    settle(&mut nodes, &mut script);
    scripts.push(("engine-direct-chat".to_owned(), script.clone_bytes()));

    let [alice_node, bob_node] = nodes;
    Conversation {
        alice_summary: engine::Summary {
            registered: alice_node.engine.username().is_some(),
            chats: alice_node.engine.chats().map_or(0, |c| c.len()),
        },
        alice_scripts: scripts,
        alice_sent: alice_node.sent,
        bob_sent: bob_node.sent,
        alice_received: alice_node.received,
    }
}

impl Writer {
    fn clone_bytes(&mut self) -> Vec<u8> {
        let bytes = self.finish();
        self.raw(&bytes);
        bytes
    }
}

fn request_of(frame: &[u8]) -> Option<Request> {
    chapar_wire::decode::<v1::ClientFrame>(frame)
        .ok()
        .and_then(|f| f.request)
}

fn is_handshake(frame: &[u8]) -> bool {
    matches!(
        request_of(frame),
        Some(Request::Hello(_) | Request::Register(_) | Request::Authenticate(_))
    )
}

fn frame_codec() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for (i, request) in requests().into_iter().enumerate() {
        seeds.push((format!("client-{i}"), frame(i as u64 + 1, request)));
    }
    for (i, bytes) in handshake_requests().into_iter().enumerate() {
        seeds.push((format!("handshake-{i}"), bytes));
    }
    let conversation = conversation();
    // The largest frames each side sent and received: real MLS messages and key packages.
    let mut real: Vec<(String, Vec<u8>)> = Vec::new();
    for (side, frames) in [
        ("alice-sent", &conversation.alice_sent),
        ("bob-sent", &conversation.bob_sent),
        ("alice-received", &conversation.alice_received),
    ] {
        let mut frames: Vec<&Vec<u8>> = frames.iter().collect();
        frames.sort_by_key(|f| std::cmp::Reverse(f.len()));
        frames.dedup();
        for (i, frame) in frames.into_iter().take(4).enumerate() {
            real.push((format!("{side}-{i}"), frame.clone()));
        }
    }
    // Stream framing: byte 0 is the piece size, then frames behind their lengths.
    let framed = |frames: &[Vec<u8>]| {
        let mut out = Vec::new();
        for frame in frames {
            out.extend_from_slice(&(frame.len() as u32).to_be_bytes());
            out.extend_from_slice(frame);
        }
        out
    };
    let small: Vec<Vec<u8>> = requests()
        .into_iter()
        .take(4)
        .map(|r| frame(1, r))
        .collect();
    for piece in [0u8, 6, 255] {
        let mut seed = vec![piece];
        seed.extend(framed(&small));
        seeds.push((format!("stream-{piece}"), seed));
    }
    let mut too_long = vec![3u8];
    too_long.extend_from_slice(&(1u32 << 21).to_be_bytes());
    too_long.extend_from_slice(&[0; 16]);
    seeds.push(("stream-too-long".into(), too_long));
    let mut cut = vec![1u8];
    cut.extend(framed(&small[..1]));
    cut.extend_from_slice(&[0, 0, 0, 9, 1, 2]);
    seeds.push(("stream-cut".into(), cut));
    seeds.extend(real);
    seeds
}

/// A dispatcher script: the preamble, the transport, then chunks.
fn dispatcher_script(preamble: u8, stream: bool, chunks: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut script = Writer::new();
    script.u8(preamble).u8(u8::from(stream));
    for (control, bytes) in chunks.iter().take(dispatcher::CHUNKS_MAX) {
        script.u8(*control).chunk(bytes);
    }
    script.finish()
}

fn dispatcher() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    let logged_in: Vec<(u8, Vec<u8>)> = requests()
        .into_iter()
        .enumerate()
        .map(|(i, request)| {
            // Bob fetches what alice's commit sent him; everyone else is alice.
            let to_b = matches!(request, Request::FetchWelcomes(_) | Request::GetAccount(_));
            let control = if to_b { dispatcher::TO_B } else { 0 };
            let request_id = 100 + i as u64;
            let request = match request {
                Request::GetAccount(_) => Request::GetAccount(v1::GetAccount {
                    username: "alice".into(),
                }),
                other => other,
            };
            (control, frame(request_id, request))
        })
        .collect();
    seeds.push(("in-process".into(), dispatcher_script(0, false, &logged_in)));
    seeds.push(("stream".into(), dispatcher_script(0, true, &logged_in)));
    let handshakes: Vec<(u8, Vec<u8>)> = handshake_requests()
        .into_iter()
        .map(|bytes| (0, bytes))
        .collect();
    seeds.push((
        "handshakes".into(),
        dispatcher_script(1, false, &handshakes),
    ));
    seeds.push((
        "handshakes-stream".into(),
        dispatcher_script(1, true, &handshakes),
    ));
    seeds.push((
        "no-hello".into(),
        dispatcher_script(
            2,
            false,
            &[
                (0, frame(1, Request::Ping(v1::Ping {}))),
                (0, vec![0xff, 0x01]),
            ],
        ),
    ));
    let mut raw = logged_in[..3].to_vec();
    raw.push((dispatcher::RAW, vec![0, 0, 0, 5, 8, 1]));
    raw.push((dispatcher::RAW, vec![0xff, 0xff, 0xff, 0xff]));
    seeds.push(("stream-raw".into(), dispatcher_script(0, true, &raw)));
    // What the engines really sent once logged in: alice's on A, bob's on B.
    let conversation = conversation();
    let mut real: Vec<(u8, Vec<u8>)> = Vec::new();
    for (control, frames) in [
        (0, &conversation.alice_sent),
        (dispatcher::TO_B, &conversation.bob_sent),
    ] {
        real.extend(
            frames
                .iter()
                .filter(|f| !is_handshake(f))
                .take(dispatcher::CHUNKS_MAX / 2)
                .map(|f| (control, f.clone())),
        );
    }
    seeds.push(("engines".into(), dispatcher_script(0, false, &real)));
    seeds
}

/// A tus_headers script: method, target and authorization bytes, headers, then the body.
fn tus_script(method: &str, target: tus::Target, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut script = Writer::new();
    let method = tus::METHODS
        .iter()
        .position(|m| *m == method)
        .expect("a method in METHODS");
    let target = tus::TARGETS
        .iter()
        .position(|t| *t == target)
        .expect("a target in TARGETS");
    script.u8(method as u8).u8(target as u8).u8(0);
    for (name, value) in headers {
        let name = tus::HEADERS
            .iter()
            .position(|h| h == name)
            .expect("a header in HEADERS");
        script.u8(name as u8).chunk(value.as_bytes());
    }
    script.raw(body);
    script.finish()
}

fn tus_headers() -> Vec<(String, Vec<u8>)> {
    use tus::Target::{Blob, Collection, Unknown, Upload};
    let v = ("tus-resumable", "1.0.0");
    let octets = ("content-type", "application/offset+octet-stream");
    vec![
        (
            "create".into(),
            tus_script(
                "POST",
                Collection,
                &[
                    v,
                    ("upload-length", "100"),
                    ("upload-metadata", "filename d29ybGQ="),
                ],
                b"",
            ),
        ),
        (
            "create-deferred".into(),
            tus_script("POST", Collection, &[v, ("upload-defer-length", "1")], b""),
        ),
        ("status".into(), tus_script("HEAD", Upload, &[v], b"")),
        (
            "append".into(),
            tus_script(
                "PATCH",
                Blob,
                &[
                    v,
                    octets,
                    ("upload-offset", "1000"),
                    ("content-length", "0"),
                    ("upload-length", "1000"),
                ],
                b"",
            ),
        ),
        (
            "append-checksum".into(),
            tus_script(
                "PATCH",
                Unknown,
                &[
                    v,
                    octets,
                    ("upload-offset", "0"),
                    ("upload-checksum", "sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0="),
                ],
                b"hello world",
            ),
        ),
        (
            "append-sha256".into(),
            tus_script(
                "PATCH",
                Upload,
                &[
                    v,
                    ("content-type", "Application/Offset+Octet-Stream; charset=x"),
                    ("upload-offset", " 0 "),
                    (
                        "upload-checksum",
                        "sha256 uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=",
                    ),
                ],
                b"hello world",
            ),
        ),
        (
            "range".into(),
            tus_script("GET", Blob, &[("range", "bytes=10-19")], b""),
        ),
        (
            "range-suffix".into(),
            tus_script("GET", Blob, &[("range", "bytes=-100")], b""),
        ),
        (
            "range-open".into(),
            tus_script("GET", Blob, &[("range", "bytes=990-")], b""),
        ),
        (
            "range-past".into(),
            tus_script("GET", Blob, &[("range", "bytes=5000-6000")], b""),
        ),
        (
            "override".into(),
            tus_script(
                "POST",
                Blob,
                &[v, ("x-http-method-override", "get"), ("range", "bytes=0-0")],
                b"",
            ),
        ),
        ("delete".into(), tus_script("DELETE", Unknown, &[v], b"")),
        (
            "options".into(),
            tus_script(
                "OPTIONS",
                Collection,
                &[
                    ("origin", "https://example.org"),
                    ("access-control-request-method", "PATCH"),
                ],
                b"",
            ),
        ),
        (
            "bad-version".into(),
            tus_script("PATCH", Upload, &[("tus-resumable", "0.2.2"), octets], b""),
        ),
    ]
}

fn engine_replies() -> Vec<(String, Vec<u8>)> {
    let conversation = conversation();
    let replayed = engine::run(
        &conversation
            .alice_scripts
            .last()
            .expect("the conversation has scripts")
            .1,
    );
    eprintln!(
        "the conversation leaves alice at {:?}",
        conversation.alice_summary
    );
    if replayed != conversation.alice_summary {
        eprintln!(
            "warning: replaying the conversation ends at {replayed:?}, the conversation at {:?}",
            conversation.alice_summary
        );
    }
    let mut seeds = conversation.alice_scripts;
    // The handshake by hand, through the retargeting operation, then a timeout.
    let mut script = Writer::new();
    script.u8(job_index("register"));
    let hello_ok = |bits| {
        chapar_wire::encode(&v1::ServerFrame {
            kind: Some(v1::server_frame::Kind::Response(v1::Response {
                request_id: 0,
                result: Some(Reply::HelloOk(v1::HelloOk {
                    protocol_version: 1,
                    capabilities: vec!["mls-rfc9420".into()],
                    challenge: vec![1; 32],
                    server_time_ms: engine::START_MS,
                    frame_bytes_max: 1 << 20,
                    registration_pow_bits: bits,
                    invite_required: false,
                    server_id: vec![2; 32],
                })),
            })),
        })
    };
    script.u8(OP_REPLY).chunk(&hello_ok(4));
    let error = chapar_wire::encode(&v1::ServerFrame {
        kind: Some(v1::server_frame::Kind::Response(v1::Response {
            request_id: 0,
            result: Some(Reply::Error(v1::Error {
                code: 9,
                message: "taken".into(),
                ..Default::default()
            })),
        })),
    });
    script.u8(OP_REPLY).chunk(&error);
    script.u8(OP_TIME).u32(60_000);
    seeds.push(("engine-handshake".into(), script.finish()));
    // A push of each kind to an idle engine that logged in.
    let registered = seeds[0].1.clone();
    for (name, kind) in [
        ("resync", v1::push::Kind::Resync(v1::Empty {})),
        ("welcome", v1::push::Kind::Welcome(v1::Empty {})),
        (
            "log-entry",
            v1::push::Kind::LogEntry(v1::LogEntry {
                group_id: vec![1; 16],
                seq: 1,
                kind: v1::EntryKind::Application as i32,
                epoch: 1,
                sender_device: 5,
                payload: vec![0; 40],
                server_time_ms: engine::START_MS,
                message_id: vec![2; 16],
            }),
        ),
    ] {
        let mut script = Writer::new();
        script.raw(&registered);
        let push = chapar_wire::encode(&v1::ServerFrame {
            kind: Some(v1::server_frame::Kind::Push(v1::Push { kind: Some(kind) })),
        });
        script.u8(OP_FRAME).chunk(&push);
        seeds.push((format!("engine-push-{name}"), script.finish()));
    }
    seeds
}
