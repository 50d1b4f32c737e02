//! A deterministic simulator for Chapar engines, in the style of quinn-proto's test `Pair` and
//! TigerBeetle's simulator: several [`Engine`]s (devices), the real delivery service
//! (`chapar-server`'s session and service over a SQLite store in a temporary directory)
//! reached without sockets, one manual clock, and a scheduler driven by a seed that picks
//! what happens next and can drop, delay, duplicate and reorder replies and pushes, cut
//! connections and crash devices (reopening them from their profiles).
//!
//! A run is a function of its seed: the same seed takes the same path (the server's own
//! timestamps and MLS ciphertexts differ, nothing the engines decide on). A failing test
//! prints its seed; `CHAPAR_SIM_SEED=<seed>` replays just that one.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use chapar_core::{Clock as _, CoreError, Engine, Env, Event, Job, ManualClock, Profile};
use chapar_server::api::InProcess;
use chapar_server::service::Service;
use chapar_store::sqlite::SqliteStore;
use chapar_wire::v1::{self, client_frame::Request};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// Where the simulated clock starts (ms since the Unix epoch).
pub const CLOCK_START_MS: u64 = 1_700_000_000_000;
/// Most scheduler steps one [`Sim::run`] or [`Sim::settle`] may take before the run is
/// declared stuck.
pub const STEPS_MAX: usize = 200_000;
/// Most simulated time one [`Sim::run`] or [`Sim::settle`] may let pass.
pub const SIMULATED_MS_MAX: u64 = 24 * 3600 * 1000;

/// Which faults the scheduler injects, in parts per thousand of the chances it has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// A reply is lost, and its connection drops with it (the request may have been done).
    pub drop_reply: u32,
    /// A push is lost (the log still has the entry).
    pub drop_push: u32,
    /// A push arrives twice.
    pub duplicate_push: u32,
    /// Most steps a reply or push may be held back, letting later ones overtake it.
    pub delay_steps_max: u64,
}

impl Faults {
    /// A rough network: replies lost (with their connections), pushes lost, doubled and
    /// reordered.
    pub fn rough() -> Self {
        Self {
            drop_reply: 30,
            drop_push: 100,
            duplicate_push: 100,
            delay_steps_max: 6,
        }
    }
}

/// A device in the simulation.
pub type DeviceIx = usize;

/// Something a device's transport will hand its engine.
struct Arrival {
    due_step: u64,
    frame: Bytes,
}

type Matcher = Box<dyn Fn(&Request) -> bool>;

struct Node {
    name: String,
    path: PathBuf,
    seed: [u8; 32],
    engine: Option<Engine>,
    conn: Option<InProcess<SqliteStore>>,
    /// Frames the engine sent that the server has not taken yet, in order.
    outbox: VecDeque<Vec<u8>>,
    /// Replies and pushes on their way to the engine.
    inbox: Vec<Arrival>,
    /// Frames matching this wait in the outbox until released.
    hold: Option<Matcher>,
    /// The reply to the next request matching this is lost (and the connection with it, if
    /// the flag says so).
    lose_reply: Option<(Matcher, bool)>,
    /// Events the engine emitted.
    events: Vec<Event>,
    /// What the device answers its engine's questions (approve a device, join an account).
    answer: bool,
}

/// The simulation: see the module docs.
pub struct Sim {
    /// The seed of this run.
    pub seed: u64,
    /// The faults injected from now on.
    pub faults: Faults,
    /// The clock every engine runs on.
    pub clock: ManualClock,
    runtime: tokio::runtime::Runtime,
    service: Arc<Service<SqliteStore>>,
    rng: ChaCha8Rng,
    nodes: Vec<Node>,
    step: u64,
    dir: tempfile::TempDir,
}

/// The seeds a test runs: `CHAPAR_SIM_SEED` alone if set, else `CHAPAR_SIM_SEEDS` of them
/// (default `default`) from a fixed start.
pub fn seeds(default: u64) -> Vec<u64> {
    if let Some(one) = std::env::var("CHAPAR_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![one];
    }
    let count = std::env::var("CHAPAR_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    (1..=count).collect()
}

/// Runs `test` once per seed; a panic is reported with its seed, then re-raised.
pub fn for_each_seed(default: u64, test: impl Fn(u64)) {
    for seed in seeds(default) {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| test(seed)));
        if let Err(panic) = outcome {
            eprintln!("simulation failed with seed {seed}: rerun with CHAPAR_SIM_SEED={seed}");
            std::panic::resume_unwind(panic);
        }
    }
}

fn request_of(frame: &[u8]) -> Option<Request> {
    chapar_wire::decode::<v1::ClientFrame>(frame)
        .ok()
        .and_then(|f| f.request)
}

impl Sim {
    /// A simulation with no device yet, seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the service");
        let dir = tempfile::Builder::new()
            .prefix("chapar-sim-")
            .tempdir_in(if std::path::Path::new("/dev/shm").is_dir() {
                "/dev/shm"
            } else {
                "/tmp"
            })
            .expect("a temporary directory");
        let mut config = chapar_server::ServerConfig::new(
            "127.0.0.1:0".parse().expect("an address"),
            dir.path().join("server"),
        );
        config.limits = chapar_server::Limits::for_tests();
        let service = chapar_server::open_service(&config).expect("the service opens");
        Self {
            seed,
            faults: Faults::default(),
            clock: ManualClock::new(CLOCK_START_MS),
            runtime,
            service,
            rng: ChaCha8Rng::seed_from_u64(seed),
            nodes: Vec::new(),
            step: 0,
            dir,
        }
    }

    /// Adds a device with an empty profile, connected.
    pub fn add_device(&mut self, name: &str) -> DeviceIx {
        let path = self.dir.path().join(format!("{name}.db"));
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        self.nodes.push(Node {
            name: name.to_owned(),
            path,
            seed,
            engine: None,
            conn: None,
            outbox: VecDeque::new(),
            inbox: Vec::new(),
            hold: None,
            lose_reply: None,
            events: Vec::new(),
            answer: true,
        });
        let ix = self.nodes.len() - 1;
        self.open(ix);
        self.connect(ix);
        ix
    }

    fn open(&mut self, ix: DeviceIx) {
        let node = &mut self.nodes[ix];
        let profile = Profile::open(&node.path).expect("the profile opens");
        // A reopened device draws fresh randomness, as a restarted process would.
        node.seed[0] = node.seed[0].wrapping_add(1);
        let env = Env::new(self.clock.clone(), node.seed);
        node.engine = Some(Engine::new(profile, env).expect("the engine starts"));
    }

    /// The engine of device `ix`.
    pub fn engine(&mut self, ix: DeviceIx) -> &mut Engine {
        let name = self.nodes[ix].name.clone();
        self.nodes[ix]
            .engine
            .as_mut()
            .unwrap_or_else(|| panic!("{name} is crashed"))
    }

    /// The events device `ix` emitted so far, taken.
    pub fn take_events(&mut self, ix: DeviceIx) -> Vec<Event> {
        std::mem::take(&mut self.nodes[ix].events)
    }

    /// Connects device `ix` (a fresh connection).
    pub fn connect(&mut self, ix: DeviceIx) {
        let node = &mut self.nodes[ix];
        if node.conn.is_some() {
            return;
        }
        node.conn = Some(InProcess::new(self.service.clone()));
        node.inbox.clear();
        node.outbox.clear();
        if let Some(engine) = node.engine.as_mut() {
            engine.on_connected();
        }
    }

    /// Cuts device `ix`'s connection: what was in flight either way is lost.
    pub fn disconnect(&mut self, ix: DeviceIx) {
        let node = &mut self.nodes[ix];
        node.conn = None;
        node.inbox.clear();
        node.outbox.clear();
        if let Some(engine) = node.engine.as_mut() {
            engine.on_disconnected();
        }
    }

    /// Kills device `ix` at once (no goodbye), then starts it again from its profile,
    /// connected.
    pub fn crash_and_restart(&mut self, ix: DeviceIx) {
        self.disconnect(ix);
        self.nodes[ix].engine = None;
        self.open(ix);
        self.connect(ix);
    }

    /// Frames of device `ix` matching `matcher` stay in its outbox until [`Self::release`].
    pub fn hold(&mut self, ix: DeviceIx, matcher: impl Fn(&Request) -> bool + 'static) {
        self.nodes[ix].hold = Some(Box::new(matcher));
    }

    /// Runs until device `ix` has a held frame waiting.
    pub fn run_until_held(&mut self, ix: DeviceIx) {
        let name = self.nodes[ix].name.clone();
        self.run_until(&format!("{name} holding a frame"), |sim| {
            sim.collect();
            sim.is_holding(ix)
        });
    }

    /// Lets held frames of device `ix` go.
    pub fn release(&mut self, ix: DeviceIx) {
        self.nodes[ix].hold = None;
    }

    /// Whether device `ix` has a held frame waiting.
    pub fn is_holding(&self, ix: DeviceIx) -> bool {
        let node = &self.nodes[ix];
        node.hold.as_ref().is_some_and(|hold| {
            node.outbox
                .front()
                .and_then(|f| request_of(f))
                .is_some_and(|r| hold(&r))
        })
    }

    /// The reply to device `ix`'s next request matching `matcher` is lost, and its
    /// connection with it (the server did the request).
    pub fn lose_reply(&mut self, ix: DeviceIx, matcher: impl Fn(&Request) -> bool + 'static) {
        self.nodes[ix].lose_reply = Some((Box::new(matcher), true));
    }

    /// The reply to device `ix`'s next request matching `matcher` is lost, and the connection
    /// stays (the request times out on the engine's clock).
    pub fn lose_reply_quietly(
        &mut self,
        ix: DeviceIx,
        matcher: impl Fn(&Request) -> bool + 'static,
    ) {
        self.nodes[ix].lose_reply = Some((Box::new(matcher), false));
    }

    fn chance(&mut self, per_mille: u32) -> bool {
        per_mille > 0 && self.rng.next_u32() % 1000 < per_mille
    }

    fn delay(&mut self) -> u64 {
        match self.faults.delay_steps_max {
            0 => 0,
            max => self.rng.next_u64() % (max + 1),
        }
    }

    /// Moves frames and events out of every engine: frames to the outboxes, events to the
    /// nodes (questions are answered yes, as a user approving would).
    /// What device `ix` answers its engine's questions from now on (yes, unless told).
    pub fn set_answer(&mut self, ix: DeviceIx, answer: bool) {
        self.nodes[ix].answer = answer;
    }

    fn collect(&mut self) {
        for node in &mut self.nodes {
            let answer = node.answer;
            let Some(engine) = node.engine.as_mut() else {
                continue;
            };
            loop {
                let mut moved = false;
                while let Some(frame) = engine.poll_transmit() {
                    moved = true;
                    if node.conn.is_some() {
                        node.outbox.push_back(frame);
                    }
                }
                while let Some(event) = engine.poll_event() {
                    moved = true;
                    if let Event::Question { job, .. } = &event {
                        engine.answer(*job, answer);
                    }
                    node.events.push(event);
                }
                if !moved {
                    break;
                }
            }
        }
    }

    /// One thing happens, chosen by the seed. Returns false if nothing could happen.
    pub fn step(&mut self) -> bool {
        self.collect();
        self.step += 1;
        // What can happen: a device's next frame reaches the server, or something due
        // reaches a device.
        let mut choices: Vec<(DeviceIx, bool)> = Vec::new();
        for (ix, node) in self.nodes.iter().enumerate() {
            let held = node.hold.as_ref().is_some_and(|hold| {
                node.outbox
                    .front()
                    .and_then(|f| request_of(f))
                    .is_some_and(|r| hold(&r))
            });
            if node.conn.is_some() && !node.outbox.is_empty() && !held {
                choices.push((ix, true));
            }
            if node.inbox.iter().any(|a| a.due_step <= self.step) {
                choices.push((ix, false));
            }
        }
        if choices.is_empty() {
            // Nothing in flight: let a disconnected device with work reconnect, as a driver
            // would, before any time passes.
            let waiting = self
                .nodes
                .iter()
                .position(|n| n.conn.is_none() && n.engine.as_ref().is_some_and(|e| !e.is_idle()));
            if let Some(ix) = waiting {
                self.connect(ix);
                return true;
            }
            // Anything still held back only waits for later steps.
            if self.nodes.iter().any(|n| !n.inbox.is_empty()) {
                return true;
            }
            return false;
        }
        let (ix, to_server) = choices[(self.rng.next_u32() as usize) % choices.len()];
        if to_server {
            self.deliver_to_server(ix);
        } else {
            self.deliver_to_device(ix);
        }
        true
    }

    fn deliver_to_server(&mut self, ix: DeviceIx) {
        let Some(frame) = self.nodes[ix].outbox.pop_front() else {
            return;
        };
        let request = request_of(&frame);
        let Some(conn) = self.nodes[ix].conn.as_mut() else {
            return;
        };
        let reply = self.runtime.block_on(conn.request(&frame));
        let scripted = match (&self.nodes[ix].lose_reply, &request) {
            (Some((matcher, cut)), Some(request)) if matcher(request) => Some(*cut),
            _ => None,
        };
        if scripted.is_some() {
            self.nodes[ix].lose_reply = None;
        }
        if scripted == Some(false) {
            // Lost on the way back; the connection stays.
        } else if scripted == Some(true) || self.chance(self.faults.drop_reply) {
            self.disconnect(ix);
        } else {
            let due_step = self.step + self.delay();
            self.nodes[ix].inbox.push(Arrival {
                due_step,
                frame: reply,
            });
        }
        // What the request made the server push, to every connected device.
        for other in 0..self.nodes.len() {
            let pushes = match self.nodes[other].conn.as_mut() {
                Some(conn) => conn.take_pushes(),
                None => continue,
            };
            for push in pushes {
                if self.chance(self.faults.drop_push) {
                    continue;
                }
                let copies = if self.chance(self.faults.duplicate_push) {
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    let due_step = self.step + self.delay();
                    self.nodes[other].inbox.push(Arrival {
                        due_step,
                        frame: push.clone(),
                    });
                }
            }
        }
    }

    fn deliver_to_device(&mut self, ix: DeviceIx) {
        let step = self.step;
        let node = &mut self.nodes[ix];
        let Some(at) = node.inbox.iter().position(|a| a.due_step <= step) else {
            return;
        };
        let arrival = node.inbox.remove(at);
        if let Some(engine) = node.engine.as_mut() {
            engine.on_frame(&arrival.frame);
        }
    }

    /// Lets simulated time pass to the next moment an engine waits for. Returns false if no
    /// engine waits for anything.
    fn advance_clock(&mut self) -> bool {
        let next = self
            .nodes
            .iter()
            .filter_map(|n| n.engine.as_ref()?.next_timeout())
            .min();
        let Some(next) = next else {
            return false;
        };
        self.clock.set(next);
        for node in &mut self.nodes {
            if let Some(engine) = node.engine.as_mut() {
                engine.handle_timeout();
            }
        }
        true
    }

    /// Steps (and lets time pass when nothing else can happen) until `done` holds.
    fn run_until(&mut self, what: &str, mut done: impl FnMut(&mut Self) -> bool) {
        let started_ms = self.clock.now_ms();
        for _ in 0..STEPS_MAX {
            if done(self) {
                return;
            }
            if self.step() {
                continue;
            }
            // Time passes only for a job waiting on it; background timers of idle engines
            // (the archive's) pass only when a test lets time pass.
            let busy = self
                .nodes
                .iter()
                .any(|n| n.engine.as_ref().is_some_and(|e| !e.is_idle()));
            if !busy || self.clock.now_ms() - started_ms > SIMULATED_MS_MAX || !self.advance_clock()
            {
                break;
            }
        }
        if !done(self) {
            let clock = self.clock.now_ms() - CLOCK_START_MS;
            let nodes: Vec<String> = self
                .nodes
                .iter()
                .map(|n| {
                    format!(
                        "{}: {}, {}, {} to send, {} to receive, next timeout {:?}",
                        n.name,
                        if n.conn.is_some() {
                            "connected"
                        } else {
                            "disconnected"
                        },
                        match &n.engine {
                            None => "crashed",
                            Some(e) if e.is_idle() => "idle",
                            Some(_) => "busy",
                        },
                        n.outbox.len(),
                        n.inbox.len(),
                        n.engine
                            .as_ref()
                            .and_then(Engine::next_timeout)
                            .map(|t| t.saturating_sub(CLOCK_START_MS)),
                    )
                })
                .collect();
            panic!(
                "seed {}: {what} did not happen (step {}, clock +{clock} ms)\n{}",
                self.seed,
                self.step,
                nodes.join("\n")
            );
        }
    }

    /// Runs until job `job` of device `ix` ended; returns its result.
    pub fn run<T: 'static>(&mut self, ix: DeviceIx, job: Job<T>) -> Result<T, CoreError> {
        let mut result = None;
        let name = self.nodes[ix].name.clone();
        self.run_until(&format!("{name}'s job {:?}", job.id()), |sim| {
            if result.is_none() {
                result = sim.nodes[ix]
                    .engine
                    .as_mut()
                    .and_then(|e| e.take_result(&job));
            }
            result.is_some()
        });
        result.unwrap_or_else(|| panic!("seed {}: no result", self.seed))
    }

    /// Runs until every job in `jobs` ended; returns their results in the same order.
    pub fn run_all<T: 'static>(
        &mut self,
        jobs: Vec<(DeviceIx, Job<T>)>,
    ) -> Vec<Result<T, CoreError>> {
        let mut results: Vec<Option<Result<T, CoreError>>> = jobs.iter().map(|_| None).collect();
        self.run_until("every job", |sim| {
            for ((ix, job), result) in jobs.iter().zip(results.iter_mut()) {
                if result.is_none() {
                    *result = sim.nodes[*ix]
                        .engine
                        .as_mut()
                        .and_then(|e| e.take_result(job));
                }
            }
            results.iter().all(Option::is_some)
        });
        results.into_iter().flatten().collect()
    }

    /// Runs until device `ix` emitted an event `pick` chooses; returns what it chose.
    pub fn run_until_event<T>(
        &mut self,
        ix: DeviceIx,
        mut pick: impl FnMut(&Event) -> Option<T>,
    ) -> T {
        let mut found = None;
        let name = self.nodes[ix].name.clone();
        self.run_until(&format!("an event of {name}"), |sim| {
            sim.collect();
            if found.is_none() {
                found = sim.nodes[ix].events.iter().find_map(&mut pick);
            }
            found.is_some()
        });
        found.unwrap_or_else(|| panic!("seed {}: no event", self.seed))
    }

    /// Starts a job on device `ix` and runs until it ended.
    pub fn exec<T: 'static>(
        &mut self,
        ix: DeviceIx,
        start: impl FnOnce(&mut Engine) -> Job<T>,
    ) -> Result<T, CoreError> {
        let job = start(self.engine(ix));
        self.run(ix, job)
    }

    /// Runs until nothing is in flight and no engine has anything to do now.
    pub fn settle(&mut self) {
        self.run_until("settling", |sim| {
            sim.collect();
            sim.nodes.iter().all(|n| {
                n.outbox.is_empty()
                    && n.inbox.is_empty()
                    && n.engine.as_ref().is_none_or(|e| !e.has_work())
            })
        });
    }

    /// Lets `ms` of simulated time pass, firing every timer due meanwhile (the archive's
    /// background uploads, say), and runs until settled.
    pub fn pass_time(&mut self, ms: u64) {
        let until = self.clock.now_ms().saturating_add(ms);
        loop {
            self.settle();
            let next = self
                .nodes
                .iter()
                .filter_map(|n| n.engine.as_ref()?.next_timeout())
                .min();
            match next {
                Some(next) if next <= until => {
                    self.clock.set(next);
                    for node in &mut self.nodes {
                        if let Some(engine) = node.engine.as_mut() {
                            engine.handle_timeout();
                        }
                    }
                }
                _ => break,
            }
        }
        self.clock.set(until);
    }
}
