//! The engine: one device of an account, driven from outside.
//!
//! A driver (the native one in `chapar-client`, the web client's worker) owns the transport
//! and the clock's real time. It hands the engine what happens (`on_connected`,
//! `on_frame`, `on_disconnected`, `handle_timeout`, `answer`), and takes out what the engine
//! wants done (`poll_transmit`: frames to send; `next_timeout`: when to call back;
//! `poll_event`: typed events for the user). Commands (send a message, create a group, approve
//! a device...) start [`Job`]s; a job's result is taken with [`Engine::take_result`] once
//! [`Event::Done`] says it ended.
//!
//! Jobs run one at a time, in the order they were asked for, so two flows never interleave
//! their MLS changes. While no job runs and the device is logged in, the engine does its own
//! background work: it applies what the server pushes and archives history once quiet.

mod account;
mod archive;
mod chats;
mod commands;
mod commit;
mod device;
mod devices;
mod files;
mod io;
mod link;
mod messages;
mod pushes;
mod recovery;
mod restore;
mod roster;
mod segment;
pub(crate) mod self_group;
mod send;
mod sync;
mod welcomes;

use std::any::Any;
use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

pub use files::{FileToken, STICKERS_PER_PACK_MAX};
pub use io::{EVENTS_QUEUED_MAX, QUESTION_TIMEOUT_MS, REQUEST_TIMEOUT_MS};
pub use link::LINK_PEER_WAIT_MS;

use device::Device;

use crate::CoreError;
use crate::env::Env;
use crate::events::{Event, JobId};
use crate::storage::Profile;

/// How long background work waits before trying again after it failed.
pub const BACKGROUND_RETRY_MS: u64 = 5_000;
/// After this long with nothing said either way, an idle logged-in engine sends a `Ping`, so
/// the server (which closes connections quiet for its idle timeout, 5 minutes by default)
/// and anything in between keep the connection.
pub const KEEPALIVE_MS: u64 = 60_000;

/// Results of ended jobs kept for [`Engine::take_result`] before the oldest are dropped.
pub const RESULTS_KEPT_MAX: usize = 256;

/// A started job whose result is a `T`.
#[derive(Debug)]
pub struct Job<T> {
    id: JobId,
    result: PhantomData<fn() -> T>,
}

impl<T> Job<T> {
    /// The job's id, as events name it.
    pub fn id(&self) -> JobId {
        self.id
    }
}

type JobFuture = Pin<Box<dyn Future<Output = Box<dyn Any>>>>;

struct Running {
    id: JobId,
    future: JobFuture,
    /// A job a caller asked for (its result is kept); background work is not.
    asked: bool,
}

/// A device of an account, sans I/O. See the module docs.
pub struct Engine {
    device: Rc<Device>,
    queue: VecDeque<Running>,
    current: Option<Running>,
    results: BTreeMap<JobId, Box<dyn Any>>,
    next_job: u64,
    /// When history that came by push is to be archived (after [`pushes::ARCHIVE_QUIET_MS`]
    /// of quiet).
    archive_due_ms: Rc<Cell<Option<u64>>>,
    /// Background work failed: not before this time again.
    retry_at_ms: Rc<Cell<Option<u64>>>,
    /// Whether the engine works on its own while idle (see [`Engine::set_background`]).
    background: bool,
}

impl Engine {
    /// An engine over `profile`, with the clock and randomness of `env`.
    pub fn new(profile: Profile, env: Env) -> Result<Self, CoreError> {
        Ok(Self {
            device: Rc::new(Device::new(profile, env)?),
            queue: VecDeque::new(),
            current: None,
            results: BTreeMap::new(),
            next_job: 1,
            archive_due_ms: Rc::new(Cell::new(None)),
            retry_at_ms: Rc::new(Cell::new(None)),
            background: true,
        })
    }

    /// Whether the engine applies pushes and archives history on its own while idle (on by
    /// default). A driver that runs one command and exits turns it off, so no background
    /// commit is cut off halfway.
    pub fn set_background(&mut self, on: bool) {
        self.background = on;
        self.drive();
    }

    /// Whether background work may run now.
    fn background_ready(&self) -> bool {
        self.background
            && self.device.io.is_logged_in()
            && self
                .retry_at_ms
                .get()
                .is_none_or(|at| at <= self.device.now_ms())
    }

    /// When background work is due next, if it waits for time.
    fn background_deadline(&self) -> Option<u64> {
        if !(self.background && self.is_idle() && self.device.io.is_logged_in()) {
            return None;
        }
        let retry = self.retry_at_ms.get();
        let archive = self.archive_due_ms.get();
        if self.device.io.has_pushes() {
            // Pushes go at once, unless a failure made them wait.
            return retry;
        }
        // Archiving waits for its time, and for the retry time after a failure.
        let archive = archive.map(|at| retry.map_or(at, |retry| at.max(retry)));
        let keepalive = self
            .device
            .io
            .last_activity_ms()
            .saturating_add(KEEPALIVE_MS);
        Some(archive.map_or(keepalive, |at| at.min(keepalive)))
    }

    // ---- the driver's side ----

    /// The transport is up (a fresh connection: nothing is established on it yet).
    pub fn on_connected(&mut self) {
        self.device.io.connected();
        self.drive();
    }

    /// The transport went away. Requests waiting for replies fail; their outcome is unknown.
    pub fn on_disconnected(&mut self) {
        self.device.io.disconnected();
        self.drive();
    }

    /// A frame arrived from the server.
    pub fn on_frame(&mut self, frame: &[u8]) {
        self.device.io.received(frame);
        self.drive();
    }

    /// The next frame to send, if any. Call until `None` after every other call.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.device.io.poll_transmit()
    }

    /// When (ms since the Unix epoch, on the environment's clock) [`Self::handle_timeout`]
    /// should be called next.
    pub fn next_timeout(&self) -> Option<u64> {
        // Background work runs only while idle and logged in: a deadline it cannot act on
        // would have the driver wake up for nothing, again and again.
        [self.device.io.next_deadline(), self.background_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Time has passed: requests past their deadline fail, sleeping jobs wake.
    pub fn handle_timeout(&mut self) {
        self.device.io.expire();
        self.drive();
    }

    /// The next event for the user, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.device.io.poll_event()
    }

    /// Answers the question job `job` asked ([`Event::Question`]).
    pub fn answer(&mut self, job: JobId, yes: bool) {
        self.device.io.answer(job, yes);
        self.drive();
    }

    /// The result of a job that ended ([`Event::Done`]); `None` before that (or if it was
    /// taken already).
    pub fn take_result<T: 'static>(&mut self, job: &Job<T>) -> Option<Result<T, CoreError>> {
        let result = self.results.remove(&job.id)?;
        result
            .downcast::<Result<T, CoreError>>()
            .ok()
            .map(|boxed| *boxed)
    }

    /// No job is running or waiting.
    pub fn is_idle(&self) -> bool {
        self.current.is_none() && self.queue.is_empty()
    }

    /// Something is to be done now: a job, pushes to apply, or history due for the archive.
    pub fn has_work(&self) -> bool {
        let now = self.device.now_ms();
        !self.is_idle()
            || (self.background_ready()
                && (self.device.io.has_pushes()
                    || self.archive_due_ms.get().is_some_and(|due| due <= now)
                    || self
                        .device
                        .io
                        .last_activity_ms()
                        .saturating_add(KEEPALIVE_MS)
                        <= now))
    }

    /// Protocol bytes sent and received through this engine so far.
    pub fn traffic(&self) -> (u64, u64) {
        self.device.io.traffic()
    }

    fn spawn<T, F>(&mut self, make: impl FnOnce(Rc<Device>) -> F) -> Job<T>
    where
        T: 'static,
        F: Future<Output = Result<T, CoreError>> + 'static,
    {
        let id = JobId(self.next_job);
        self.next_job += 1;
        let job = make(self.device.clone());
        self.queue.push_back(Running {
            id,
            future: Box::pin(async move { Box::new(job.await) as Box<dyn Any> }),
            asked: true,
        });
        self.drive();
        Job {
            id,
            result: PhantomData,
        }
    }

    /// Work the engine does on its own while idle and logged in.
    fn background(&mut self) -> Option<Running> {
        if !self.background_ready() {
            return None;
        }
        let device = self.device.clone();
        let (due, retry) = (self.archive_due_ms.clone(), self.retry_at_ms.clone());
        let now = device.now_ms();
        let future: JobFuture = if device.io.has_pushes() {
            Box::pin(async move {
                match device.handle_pushes().await {
                    Ok(archive) => {
                        retry.set(None);
                        if archive {
                            due.set(Some(
                                device.now_ms().saturating_add(pushes::ARCHIVE_QUIET_MS),
                            ));
                        }
                    }
                    Err(e) => {
                        // Nothing is lost (the log has it all), but nothing may be left
                        // behind either: catch up on everything, a little later.
                        tracing::warn!(error = %e, "could not apply what the server pushed");
                        device.io.mark_pushes_lost();
                        retry.set(Some(device.now_ms().saturating_add(BACKGROUND_RETRY_MS)));
                    }
                }
                Box::new(()) as Box<dyn Any>
            })
        } else if self
            .device
            .io
            .last_activity_ms()
            .saturating_add(KEEPALIVE_MS)
            <= now
        {
            Box::pin(async move {
                let ping = chapar_wire::v1::client_frame::Request::Ping(chapar_wire::v1::Ping {});
                if let Err(e) = device.call(ping).await {
                    tracing::debug!(error = %e, "keep-alive ping failed");
                }
                Box::new(()) as Box<dyn Any>
            })
        } else if due.get().is_some_and(|at| at <= now) {
            due.set(None);
            Box::pin(async move {
                device.upload_archive(&Default::default(), false).await;
                // What is still recorded (a follower waiting for the leader) goes later.
                if device.read(|tx| tx.has_archive_events()).unwrap_or(false) {
                    due.set(Some(
                        device.now_ms().saturating_add(archive::FOLLOWER_DELAY_MS),
                    ));
                }
                Box::new(()) as Box<dyn Any>
            })
        } else {
            return None;
        };
        let id = JobId(self.next_job);
        self.next_job += 1;
        Some(Running {
            id,
            future,
            asked: false,
        })
    }

    /// Polls jobs until the current one waits for something from outside.
    fn drive(&mut self) {
        let mut context = Context::from_waker(Waker::noop());
        loop {
            if self.current.is_none() {
                self.current = match self.queue.pop_front() {
                    Some(next) => Some(next),
                    None => self.background(),
                };
            }
            let Some(running) = self.current.as_mut() else {
                break;
            };
            self.device.io.set_current_job(Some(running.id));
            let Poll::Ready(result) = running.future.as_mut().poll(&mut context) else {
                break;
            };
            let (id, asked) = (running.id, running.asked);
            self.current = None;
            self.device.io.job_ended(id);
            if asked {
                if self.results.len() >= RESULTS_KEPT_MAX {
                    self.results.pop_first();
                }
                self.results.insert(id, result);
                self.device.io.emit(Event::Done(id));
            }
        }
        self.device.io.set_current_job(None);
    }
}
