//! The engine's boundary with the world, seen from inside: frames to send, replies awaited,
//! timers, questions for the user, events, and pushes, all as plain data.
//!
//! Flows are written as `async fn`s that await [`Io::call`], [`Io::after`] and [`Io::ask`].
//! Nothing here blocks or touches a socket: awaiting a reply means the job is suspended (the
//! future returns `Pending`) until the driver feeds the reply to `Engine::on_frame`, and the
//! engine polls the job again. The compiler turns each flow into the state machine one would
//! otherwise write by hand ("waiting for the reply to request 17"); what must survive a crash
//! (the outbox, pending commits, cursors) is in the profile, not in these futures.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use chapar_types::ErrorCode;
use chapar_types::limits::PUSH_QUEUE_DEPTH_MAX;
use chapar_wire::v1::{self, client_frame::Request, response::Result as Reply};

use crate::CoreError;
use crate::env::Env;
use crate::events::{Event, JobId, Question};

/// How long a request waits for its reply before it fails (its outcome then unknown).
pub const REQUEST_TIMEOUT_MS: u64 = 30_000;
/// Events kept for the user before the oldest are dropped (a client that never reads its
/// events must not grow the engine without bound; a dropped event loses nothing stored).
/// Questions and job ends are never dropped: a job waits on one, a caller on the other.
pub const EVENTS_QUEUED_MAX: usize = 4_096;
/// How long a question waits for the user before it counts as "no".
pub const QUESTION_TIMEOUT_MS: u64 = 10 * 60 * 1000;

/// What the current transport has established.
#[derive(Debug, Default)]
struct Session {
    /// The transport is up.
    connected: bool,
    /// The server's login challenge for this connection, once `Hello` was answered.
    challenge: Option<Vec<u8>>,
    /// The proof of work registering on this connection needs (leading zero bits).
    registration_pow_bits: u8,
    /// The identity the server presented in `HelloOk`.
    server_id: Vec<u8>,
    /// This device logged in on this connection.
    logged_in: bool,
}

/// A request's reply, once it came (or failed).
enum Slot {
    Waiting { deadline_ms: u64 },
    Done(Result<Reply, CoreError>),
}

#[derive(Default)]
struct State {
    session: Session,
    next_request_id: u64,
    outgoing: VecDeque<Vec<u8>>,
    waiting: HashMap<u64, Slot>,
    /// Timer id → deadline.
    timers: BTreeMap<u64, u64>,
    next_timer_id: u64,
    events: VecDeque<Event>,
    pushes: VecDeque<v1::Push>,
    /// Pushes were dropped (more than [`PUSH_QUEUE_DEPTH_MAX`] waited): the next background
    /// pass syncs everything instead.
    pushes_lost: bool,
    answers: HashMap<JobId, bool>,
    /// Jobs waiting for an answer.
    asking: std::collections::HashSet<JobId>,
    current_job: Option<JobId>,
    bytes_sent: u64,
    bytes_received: u64,
    /// When a frame last went either way on this connection.
    last_activity_ms: u64,
}

/// The engine's I/O state, shared by its jobs.
pub(crate) struct Io {
    env: Rc<Env>,
    state: RefCell<State>,
}

impl Io {
    pub(crate) fn new(env: Rc<Env>) -> Self {
        Self {
            env,
            state: RefCell::new(State {
                // 0 is what the server answers undecodable frames with.
                next_request_id: 1,
                ..State::default()
            }),
        }
    }

    /// Sends `request` and waits for its reply. A server error becomes [`CoreError::Server`];
    /// no connection, a closed one or no answer in time become [`CoreError::Connection`].
    pub(crate) fn call(&self, request: Request) -> Call<'_> {
        Call {
            io: self,
            stage: Stage::Start(Some(Box::new(request))),
        }
    }

    /// A timer that fires `ms` milliseconds from now on the environment's clock.
    pub(crate) fn after(&self, ms: u64) -> Timer<'_> {
        let deadline_ms = self.env.now_ms().saturating_add(ms);
        let mut state = self.state.borrow_mut();
        let id = state.next_timer_id;
        state.next_timer_id += 1;
        state.timers.insert(id, deadline_ms);
        Timer {
            io: self,
            id,
            deadline_ms,
        }
    }

    /// Asks the user `question` and waits for the answer (`Engine::answer`), at most
    /// [`QUESTION_TIMEOUT_MS`]: then it is "no".
    pub(crate) fn ask(&self, question: Question) -> Ask<'_> {
        Ask {
            io: self,
            question: Some(question),
            timer: None,
        }
    }

    /// Tells the user something.
    pub(crate) fn emit(&self, event: Event) {
        let mut state = self.state.borrow_mut();
        if state.events.len() >= EVENTS_QUEUED_MAX {
            let droppable = state
                .events
                .iter()
                .position(|e| !matches!(e, Event::Question { .. } | Event::Done(_)));
            if let Some(at) = droppable {
                state.events.remove(at);
            }
        }
        state.events.push_back(event);
    }

    fn send_frame(&self, request: Request) -> Result<u64, CoreError> {
        let mut state = self.state.borrow_mut();
        if !state.session.connected {
            return Err(CoreError::Connection("not connected".into()));
        }
        let id = state.next_request_id;
        state.next_request_id += 1;
        let frame = chapar_wire::encode(&v1::ClientFrame {
            request_id: id,
            request: Some(request),
        });
        state.bytes_sent += frame.len() as u64;
        state.last_activity_ms = self.env.now_ms();
        state.outgoing.push_back(frame);
        let deadline_ms = self.env.now_ms().saturating_add(REQUEST_TIMEOUT_MS);
        state.waiting.insert(id, Slot::Waiting { deadline_ms });
        Ok(id)
    }

    fn take_reply(&self, id: u64) -> Option<Result<Reply, CoreError>> {
        let mut state = self.state.borrow_mut();
        match state.waiting.remove(&id) {
            Some(Slot::Done(result)) => Some(result),
            Some(waiting) => {
                state.waiting.insert(id, waiting);
                None
            }
            None => Some(Err(CoreError::Connection(
                "the request was forgotten".into(),
            ))),
        }
    }

    // ---- the driver's side, through `Engine` ----

    /// A fresh transport is up: whatever the old one carried is gone with it.
    pub(crate) fn connected(&self) {
        self.disconnected();
        let mut state = self.state.borrow_mut();
        state.session.connected = true;
        state.last_activity_ms = self.env.now_ms();
    }

    /// When a frame last went either way.
    pub(crate) fn last_activity_ms(&self) -> u64 {
        self.state.borrow().last_activity_ms
    }

    /// The transport went away: every waiting request fails, its outcome unknown.
    pub(crate) fn disconnected(&self) {
        let mut state = self.state.borrow_mut();
        state.session = Session::default();
        state.outgoing.clear();
        for slot in state.waiting.values_mut() {
            if matches!(slot, Slot::Waiting { .. }) {
                *slot = Slot::Done(Err(CoreError::Connection(
                    "the connection closed before the server answered".into(),
                )));
            }
        }
    }

    /// A frame from the server: a reply goes to its request, a push to the push queue.
    pub(crate) fn received(&self, bytes: &[u8]) {
        let mut state = self.state.borrow_mut();
        state.bytes_received += bytes.len() as u64;
        state.last_activity_ms = self.env.now_ms();
        let frame = match chapar_wire::decode::<v1::ServerFrame>(bytes) {
            Ok(frame) => frame,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable frame from the server");
                return;
            }
        };
        match frame.kind {
            Some(v1::server_frame::Kind::Response(response)) => {
                let Some(slot) = state.waiting.get_mut(&response.request_id) else {
                    // A reply after its request timed out, or to a request this engine never
                    // sent: nobody waits for it.
                    return;
                };
                if !matches!(slot, Slot::Waiting { .. }) {
                    return;
                }
                *slot = Slot::Done(match response.result {
                    Some(Reply::Error(e)) => Err(server_error(e)),
                    Some(reply) => Ok(reply),
                    None => Err(CoreError::Protocol("a response without a result".into())),
                });
            }
            Some(v1::server_frame::Kind::Push(push)) => {
                if state.pushes.len() >= PUSH_QUEUE_DEPTH_MAX {
                    state.pushes_lost = true;
                } else {
                    state.pushes.push_back(push);
                }
            }
            None => {}
        }
    }

    /// Fails requests whose time is up.
    pub(crate) fn expire(&self) {
        let now = self.env.now_ms();
        let mut state = self.state.borrow_mut();
        for slot in state.waiting.values_mut() {
            if let Slot::Waiting { deadline_ms } = slot
                && *deadline_ms <= now
            {
                *slot = Slot::Done(Err(CoreError::Connection(
                    "the server did not answer in time".into(),
                )));
            }
        }
    }

    /// The earliest time something is due (a timer, a request's timeout).
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        let state = self.state.borrow();
        let timers = state.timers.values().copied();
        let requests = state.waiting.values().filter_map(|slot| match slot {
            Slot::Waiting { deadline_ms } => Some(*deadline_ms),
            Slot::Done(_) => None,
        });
        timers.chain(requests).min()
    }

    pub(crate) fn poll_transmit(&self) -> Option<Vec<u8>> {
        self.state.borrow_mut().outgoing.pop_front()
    }

    pub(crate) fn poll_event(&self) -> Option<Event> {
        self.state.borrow_mut().events.pop_front()
    }

    pub(crate) fn answer(&self, job: JobId, yes: bool) {
        let mut state = self.state.borrow_mut();
        // Only a job that asked keeps an answer: anything else would never be taken.
        if state.asking.contains(&job) {
            state.answers.insert(job, yes);
        }
    }

    /// Forgets what an ended job was asked and answered.
    pub(crate) fn job_ended(&self, job: JobId) {
        let mut state = self.state.borrow_mut();
        state.answers.remove(&job);
        state.asking.remove(&job);
    }

    /// Pushes could not be applied: the next background pass catches up on everything.
    pub(crate) fn mark_pushes_lost(&self) {
        self.state.borrow_mut().pushes_lost = true;
    }

    pub(crate) fn set_current_job(&self, job: Option<JobId>) {
        self.state.borrow_mut().current_job = job;
    }

    // ---- what jobs ask about the session ----

    pub(crate) fn challenge(&self) -> Option<Vec<u8>> {
        self.state.borrow().session.challenge.clone()
    }

    pub(crate) fn set_challenge(
        &self,
        challenge: Vec<u8>,
        registration_pow_bits: u8,
        server_id: Vec<u8>,
    ) {
        let mut state = self.state.borrow_mut();
        state.session.challenge = Some(challenge);
        state.session.registration_pow_bits = registration_pow_bits;
        state.session.server_id = server_id;
    }

    /// The identity the server presented on this connection (empty before `Hello`).
    pub(crate) fn server_id(&self) -> Vec<u8> {
        self.state.borrow().session.server_id.clone()
    }

    pub(crate) fn registration_pow_bits(&self) -> u8 {
        self.state.borrow().session.registration_pow_bits
    }

    pub(crate) fn is_logged_in(&self) -> bool {
        self.state.borrow().session.logged_in
    }

    pub(crate) fn set_logged_in(&self) {
        self.state.borrow_mut().session.logged_in = true;
    }

    /// Protocol bytes sent and received so far.
    pub(crate) fn traffic(&self) -> (u64, u64) {
        let state = self.state.borrow();
        (state.bytes_sent, state.bytes_received)
    }

    /// The pushes waiting, and whether some were dropped.
    pub(crate) fn take_pushes(&self) -> (Vec<v1::Push>, bool) {
        let mut state = self.state.borrow_mut();
        let lost = std::mem::take(&mut state.pushes_lost);
        (state.pushes.drain(..).collect(), lost)
    }

    pub(crate) fn has_pushes(&self) -> bool {
        let state = self.state.borrow();
        !state.pushes.is_empty() || state.pushes_lost
    }
}

fn server_error(e: v1::Error) -> CoreError {
    let code = ErrorCode::from_u32(e.code);
    let position = if code == ErrorCode::StaleRoster {
        e.roster_version
    } else {
        e.head_seq
    };
    CoreError::Server {
        code,
        message: e.message,
        position,
    }
}

enum Stage {
    /// Boxed: requests are large, and a call is mostly waiting.
    Start(Option<Box<Request>>),
    Waiting(u64),
    Done,
}

/// A request on its way: see [`Io::call`].
pub(crate) struct Call<'a> {
    io: &'a Io,
    stage: Stage,
}

impl Future for Call<'_> {
    type Output = Result<Reply, CoreError>;

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match &mut this.stage {
            Stage::Start(request) => {
                let Some(request) = request.take() else {
                    return Poll::Pending;
                };
                match this.io.send_frame(*request) {
                    Ok(id) => {
                        this.stage = Stage::Waiting(id);
                        Poll::Pending
                    }
                    Err(e) => {
                        this.stage = Stage::Done;
                        Poll::Ready(Err(e))
                    }
                }
            }
            Stage::Waiting(id) => match this.io.take_reply(*id) {
                Some(result) => {
                    this.stage = Stage::Done;
                    Poll::Ready(result)
                }
                None => Poll::Pending,
            },
            Stage::Done => Poll::Pending,
        }
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if let Stage::Waiting(id) = self.stage {
            self.io.state.borrow_mut().waiting.remove(&id);
        }
    }
}

/// A wait on the environment's clock: see [`Io::after`].
pub(crate) struct Timer<'a> {
    io: &'a Io,
    id: u64,
    deadline_ms: u64,
}

impl Future for Timer<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if self.io.env.now_ms() >= self.deadline_ms {
            self.io.state.borrow_mut().timers.remove(&self.id);
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        self.io.state.borrow_mut().timers.remove(&self.id);
    }
}

/// A question waiting for the user: see [`Io::ask`].
pub(crate) struct Ask<'a> {
    io: &'a Io,
    question: Option<Question>,
    timer: Option<Timer<'a>>,
}

impl Future for Ask<'_> {
    type Output = bool;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        let this = self.get_mut();
        let Some(job) = this.io.state.borrow().current_job else {
            return Poll::Ready(false);
        };
        if let Some(question) = this.question.take() {
            this.io.state.borrow_mut().asking.insert(job);
            this.io.emit(Event::Question { job, question });
            this.timer = Some(this.io.after(QUESTION_TIMEOUT_MS));
            return Poll::Pending;
        }
        let answer = this.io.state.borrow_mut().answers.remove(&job);
        if let Some(answer) = answer {
            this.io.state.borrow_mut().asking.remove(&job);
            return Poll::Ready(answer);
        }
        match this.timer.as_mut().map(|t| Pin::new(t).poll(cx)) {
            // Unanswered for too long: no.
            Some(Poll::Ready(())) => {
                this.io.state.borrow_mut().asking.remove(&job);
                Poll::Ready(false)
            }
            _ => Poll::Pending,
        }
    }
}
