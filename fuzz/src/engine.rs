//! The `engine_replies` target's body: the client engine (`chapar_core::Engine`, on an
//! in-memory profile, a manual clock and a fixed seed) fed whatever a server might send.
//!
//! Input: byte 0 picks the first job (see [`JOBS`]; 0 is registering as alice), started right
//! after `on_connected`. Then operations, each a byte (modulo 8) and its arguments:
//! - [`OP_FRAME`], a chunk: handed to `on_frame` as it is.
//! - [`OP_REPLY`], a chunk: if it decodes as a response, it is made the reply to the
//!   engine's newest request (its request id rewritten), so the fuzzer need not guess ids.
//! - [`OP_TIME`], 4 bytes: the clock moves that many ms, then `handle_timeout`.
//! - [`OP_RECONNECT`]: `on_disconnected`, then `on_connected`.
//! - [`OP_JOB`], a byte and, for some jobs, a chunk: starts another job (at most
//!   [`JOBS_MAX`] in all).
//! - [`OP_ANSWER`], a byte: answers the newest question, yes if the byte is odd.
//! - [`OP_DISCONNECT`]: `on_disconnected` (frames then go nowhere until a reconnect).
//! - [`OP_BACKGROUND`], a byte: background work on (odd) or off.
//!
//! After each operation every frame the engine wants to send is taken (and must decode as a
//! `ClientFrame` no larger than `FRAME_BYTES_MAX`), and every event.
//!
//! Checked: nothing panics, and what the engine sends is well-formed. One thing is capped:
//! a `HelloOk` asking for a registration proof of work of more than [`POW_BITS_MAX`] bits is
//! lowered to it before the engine sees it. The engine solves what the server asks, up to
//! `chapar_types::pow::BITS_MAX` (24) bits, as designed (a server sets the price of registering
//! on it), and 2^24 hashes would still turn every such input into a timeout.
//!
//! The seed corpus (`seeds`) holds real conversations: alice's engine, with this seed and
//! clock, against the real service, with everything the server sent her recorded as
//! [`OP_FRAME`]s. Replayed here, they take the engine the same way (its decisions depend only
//! on its seed, its clock and what it receives), so mutations start from deep states: a
//! registered device, a welcome into bob's group, messages to decrypt.

use chapar_core::model::Target;
use chapar_core::{Engine, Env, Event, JobId, ManualClock, Profile};
use chapar_types::limits::FRAME_BYTES_MAX;
use chapar_types::{DeviceId, Username};
use chapar_wire::v1::{self, response::Result as Reply};

use crate::script::Reader;

/// Hands a chunk to `on_frame` as it is.
pub const OP_FRAME: u8 = 0;
/// Hands a chunk to `on_frame` as the reply to the newest request.
pub const OP_REPLY: u8 = 1;
/// Moves the clock.
pub const OP_TIME: u8 = 2;
/// Drops the connection and makes a new one.
pub const OP_RECONNECT: u8 = 3;
/// Starts a job.
pub const OP_JOB: u8 = 4;
/// Answers the newest question.
pub const OP_ANSWER: u8 = 5;
/// Drops the connection.
pub const OP_DISCONNECT: u8 = 6;
/// Turns background work on or off.
pub const OP_BACKGROUND: u8 = 7;

/// Most operations one input runs.
pub const OPS_MAX: usize = 512;
/// Most jobs one input starts.
pub const JOBS_MAX: usize = 8;
/// The most proof-of-work bits the engine is asked for (see the module docs).
pub const POW_BITS_MAX: u32 = 10;

/// Where the engine's clock starts (ms since the Unix epoch).
pub const START_MS: u64 = 1_700_000_000_000;
/// The engine's seed: alice's, in the seeds and here alike.
pub const ALICE_SEED: [u8; 32] = [7; 32];
/// The server the engine is told it talks to.
pub const SERVER: &str = "test://fuzz";

/// The jobs [`OP_JOB`] and byte 0 pick from (modulo their number).
pub const JOBS: [&str; 16] = [
    "register",
    "link",
    "recover",
    "sync",
    "resolve",
    "send_text",
    "create_group",
    "devices",
    "file_token",
    "approve_link",
    "fingerprint",
    "rotate_recovery_key",
    "mark_read",
    "leave",
    "send_to_group",
    "revoke_device",
];

/// The index of job `name` in [`JOBS`].
pub fn job_index(name: &str) -> u8 {
    JOBS.iter().position(|j| *j == name).expect("a job in JOBS") as u8
}

/// Alice's engine on a fresh in-memory profile, on `clock`.
pub fn alice_engine(clock: &ManualClock) -> Engine {
    Engine::new(
        Profile::in_memory().expect("an in-memory profile"),
        Env::new(clock.clone(), ALICE_SEED),
    )
    .expect("the engine starts")
}

/// Where an input left the engine (the seeds check that replaying them gets there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Whether it has an account.
    pub registered: bool,
    /// How many chats it is in.
    pub chats: usize,
}

struct Harness {
    engine: Engine,
    clock: ManualClock,
    newest_request: u64,
    question: Option<JobId>,
    jobs: usize,
}

/// Runs one input.
pub fn run(data: &[u8]) -> Summary {
    let mut reader = Reader::new(data);
    let clock = ManualClock::new(START_MS);
    let mut harness = Harness {
        engine: alice_engine(&clock),
        clock,
        newest_request: 0,
        question: None,
        jobs: 0,
    };
    harness.engine.on_connected();
    let first = reader.u8().unwrap_or(0);
    harness.job(first, &mut reader);
    harness.pump();
    for _ in 0..OPS_MAX {
        let Some(op) = reader.u8() else {
            break;
        };
        match op % 8 {
            OP_FRAME => {
                let frame = reader.chunk().unwrap_or_default();
                harness.feed(frame, false);
            }
            OP_REPLY => {
                let frame = reader.chunk().unwrap_or_default();
                harness.feed(frame, true);
            }
            OP_TIME => {
                let ms = reader.u32().unwrap_or(0);
                harness.clock.advance(u64::from(ms));
                harness.engine.handle_timeout();
            }
            OP_RECONNECT => {
                harness.engine.on_disconnected();
                harness.engine.on_connected();
            }
            OP_JOB => {
                let which = reader.u8().unwrap_or(0);
                harness.job(which, &mut reader);
            }
            OP_ANSWER => {
                let yes = reader.u8().unwrap_or(0) % 2 == 1;
                if let Some(job) = harness.question.take() {
                    harness.engine.answer(job, yes);
                }
            }
            OP_DISCONNECT => harness.engine.on_disconnected(),
            _ => {
                let on = reader.u8().unwrap_or(0) % 2 == 1;
                harness.engine.set_background(on);
            }
        }
        harness.pump();
    }
    Summary {
        registered: harness.engine.username().is_some(),
        chats: harness.engine.chats().map_or(0, |c| c.len()),
    }
}

fn first_group(engine: &Engine) -> Option<chapar_types::GroupId> {
    let chats = engine.chats().ok()?;
    chats.into_iter().next().map(|c| c.chat.group)
}

fn bob() -> Username {
    Username::parse("bob").expect("a valid name")
}

impl Harness {
    /// Takes out every frame and event.
    fn pump(&mut self) {
        while let Some(frame) = self.engine.poll_transmit() {
            assert!(
                frame.len() <= FRAME_BYTES_MAX,
                "the engine sends a frame of {} bytes",
                frame.len()
            );
            let decoded: v1::ClientFrame =
                chapar_wire::decode(&frame).expect("the engine's frames decode");
            assert!(decoded.request.is_some(), "the engine sends an empty frame");
            self.newest_request = decoded.request_id;
        }
        while let Some(event) = self.engine.poll_event() {
            if let Event::Question { job, .. } = event {
                self.question = Some(job);
            }
        }
    }

    fn feed(&mut self, frame: &[u8], retarget: bool) {
        let decoded = chapar_wire::decode::<v1::ServerFrame>(frame).ok();
        let Some(mut decoded) = decoded else {
            self.engine.on_frame(frame);
            return;
        };
        let mut changed = false;
        if let Some(v1::server_frame::Kind::Response(response)) = &mut decoded.kind {
            if retarget {
                response.request_id = self.newest_request;
                changed = true;
            }
            if let Some(Reply::HelloOk(ok)) = &mut response.result
                && ok.registration_pow_bits > POW_BITS_MAX
            {
                ok.registration_pow_bits = POW_BITS_MAX;
                changed = true;
            }
        }
        if changed {
            self.engine.on_frame(&chapar_wire::encode(&decoded));
        } else {
            self.engine.on_frame(frame);
        }
    }

    /// Starts job `which` of [`JOBS`], with arguments from `reader` where it takes any.
    fn job(&mut self, which: u8, reader: &mut Reader<'_>) {
        if self.jobs == JOBS_MAX {
            return;
        }
        self.jobs += 1;
        let text = |reader: &mut Reader<'_>| {
            String::from_utf8_lossy(reader.chunk().unwrap_or_default()).into_owned()
        };
        let engine = &mut self.engine;
        match JOBS[usize::from(which) % JOBS.len()] {
            "register" => {
                let _ = engine.register(SERVER, "alice", "phone", "");
            }
            "link" => {
                let _ = engine.link(SERVER, "tablet", 60_000);
            }
            "recover" => {
                let key = text(reader);
                let alice = Username::parse("alice").expect("a valid name");
                let _ = engine.recover(SERVER, &alice, &key, "laptop", false);
            }
            "sync" => {
                let _ = engine.sync();
            }
            "resolve" => {
                let _ = engine.resolve(&Target::User(bob()));
            }
            "send_text" => {
                let _ = engine.send_text(&Target::User(bob()), "hello", None);
            }
            "create_group" => {
                let _ = engine.create_group("friends", &[bob()]);
            }
            "devices" => {
                let _ = engine.devices();
            }
            "file_token" => {
                let _ = engine.file_token();
            }
            "approve_link" => {
                let code = text(reader);
                let _ = engine.approve_link(&code);
            }
            "fingerprint" => {
                let _ = engine.fingerprint(&bob());
            }
            "rotate_recovery_key" => {
                let _ = engine.rotate_recovery_key();
            }
            "mark_read" => {
                let _ = engine.mark_read(&Target::User(bob()));
            }
            "leave" => {
                if let Some(group) = first_group(engine) {
                    let _ = engine.leave(group);
                }
            }
            "send_to_group" => {
                if let Some(group) = first_group(engine) {
                    let _ = engine.send_text(&Target::Group(group), "hi all", None);
                }
            }
            _ => {
                let device = reader.u32().map_or(2, u64::from);
                let _ = engine.revoke_device(DeviceId(device));
            }
        }
    }
}
