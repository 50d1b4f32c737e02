//! The native driver: a [`chapar_core::Engine`] run over a [`Transport`] on tokio, with the
//! system clock, randomness from the operating system, and the profile lock.
//!
//! The driver holds no rules. Its loop sends what the engine wants sent, hands the engine what
//! arrives and the time, answers the engine's questions through the caller's hooks, and
//! returns a job's result once it ended.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chapar_core::model::ChatMessage;
use chapar_core::{Clock, CoreError, Engine, Env, Event, Job, Profile, Question, Usage, Warning};
use rand::RngCore as _;

use crate::lock::ProfileLock;
use crate::transport::{Dialer, Transport, WebSocketDialer};

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// What a caller wants to see or decide while a job runs. Every method has a default: see
/// nothing, decide no.
pub trait Hooks {
    /// A question from the engine; the answer lets the job go on (`true`) or stops it.
    fn question(&mut self, _question: &Question) -> bool {
        false
    }
    /// A new device's link code, to show while it waits.
    fn link_code(&mut self, _code: &str, _fingerprint: &str) {}
    /// Whether messages are shown as they come (with the warnings gathered up to each).
    fn listening(&self) -> bool {
        false
    }
    /// A message arrived or changed (only while listening); `engine` answers questions about
    /// it (its chat, say).
    fn message(&mut self, _engine: &Engine, _message: &ChatMessage, _warnings: &[Warning]) {}
}

/// Hooks that see nothing and decide no.
pub struct NoHooks;

impl Hooks for NoHooks {}

/// Warnings kept for the caller before the oldest are dropped (a `listen` that shows no
/// message for a long time must not grow).
pub const WARNINGS_KEPT_MAX: usize = 256;
/// How long one address is given to connect (TCP, TLS and the WebSocket handshake) before
/// the next is tried: enough for a few round trips on a throttled link, short enough that a
/// silently blocked address costs seconds.
pub const ROUTE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(8);
/// Longest the driver sleeps before looking at the engine again.
const WAIT_MAX: Duration = Duration::from_secs(24 * 3600);

/// What woke the driver up.
enum Input {
    Frame(Vec<u8>),
    Closed,
    Timeout,
}

/// A device of an account, with its local profile and a connection when it needs one.
pub struct Client {
    pub(crate) engine: Engine,
    pub(crate) lock: ProfileLock,
    dialer: Box<dyn Dialer>,
    transport: Option<Box<dyn Transport>>,
    /// The address the transport reached the server at (the server's own, or a relay's).
    via: Option<String>,
    warnings: Vec<Warning>,
}

impl Client {
    /// Opens (creating) the profile in `dir`, to connect over WebSocket.
    pub fn open(dir: &Path) -> Result<Self, CoreError> {
        Self::open_with(dir, Box::new(WebSocketDialer))
    }

    /// Opens (creating) the profile in `dir`, to connect with `dialer`.
    pub fn open_with(dir: &Path, dialer: Box<dyn Dialer>) -> Result<Self, CoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            CoreError::Profile(format!(
                "cannot create profile directory {}: {e}",
                dir.display()
            ))
        })?;
        let lock = ProfileLock::take(dir)?;
        let profile = Profile::open(&dir.join("profile.db"))?;
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        let mut engine = Engine::new(profile, Env::new(SystemClock, seed))?;
        // One command, then exit: nothing may start in the background and be cut off when
        // the process ends. `listen` turns it on.
        engine.set_background(false);
        Ok(Self {
            engine,
            lock,
            dialer,
            transport: None,
            via: None,
            warnings: Vec::new(),
        })
    }

    /// The engine, for reads that need no network.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Warnings gathered since the last call.
    pub fn take_warnings(&mut self) -> Vec<Warning> {
        std::mem::take(&mut self.warnings)
    }

    /// Protocol bytes sent and received so far.
    pub fn traffic(&self) -> (u64, u64) {
        self.engine.traffic()
    }

    /// Connects to `server` unless connected already.
    pub(crate) async fn connect_to(&mut self, server: &str) -> Result<(), CoreError> {
        if self.transport.is_none() {
            self.transport = Some(self.dialer.dial(server).await?);
            self.via = Some(server.to_owned());
            self.engine.on_connected();
        }
        Ok(())
    }

    /// Connects to the account's server unless connected already: at its own address or a
    /// relay's, best first ([`chapar_core::routes`]), each given [`ROUTE_ATTEMPT_TIMEOUT`],
    /// recording what worked and what failed. The last failure is the error.
    pub(crate) async fn connect(&mut self) -> Result<(), CoreError> {
        if self.transport.is_some() {
            return Ok(());
        }
        let server = self
            .engine
            .server()
            .ok_or(CoreError::Usage(Usage::NoAccount))?
            .to_owned();
        let mut last_error = CoreError::Usage(Usage::NoAccount);
        for route in self.engine.routes()? {
            let failure = match self.try_route(&server, &route).await {
                Ok(()) => {
                    self.engine.route_tried(&route, true)?;
                    return Ok(());
                }
                Err(e) => e,
            };
            tracing::info!(%route, error = %failure, "cannot reach the server here; trying the next address");
            self.engine.route_tried(&route, false)?;
            self.transport = None;
            self.engine.on_disconnected();
            last_error = failure;
        }
        Err(last_error)
    }

    /// Dials `route` (the server's own address, or a relay link: then the server's TLS
    /// identity is what the certificate must prove, [`crate::tls::ServerAddress::through_relay`])
    /// and logs in there, within [`ROUTE_ATTEMPT_TIMEOUT`]. A route counts as working only
    /// once logged in: one that reaches another server, or goes quiet after the handshake,
    /// fails like a refused one.
    async fn try_route(&mut self, server: &str, route: &str) -> Result<(), CoreError> {
        let dialled = if route == server {
            route.to_owned()
        } else {
            crate::tls::ServerAddress::parse(server)?
                .through_relay(route)?
                .to_text()
        };
        let attempt = async {
            self.transport = Some(self.dialer.dial(&dialled).await?);
            self.via = Some(dialled.clone());
            self.engine.on_connected();
            let job = self.engine.log_in();
            self.run(job, &mut NoHooks).await
        };
        tokio::time::timeout(ROUTE_ATTEMPT_TIMEOUT, attempt)
            .await
            .map_err(|_| {
                CoreError::Connection(format!("timed out reaching the server at {route}"))
            })?
    }

    /// The address the current (or last) connection reached the server at.
    pub(crate) fn via(&self) -> Option<&str> {
        self.via.as_deref().or(self.engine.server())
    }

    /// Runs the engine until `job` ends; returns its result.
    pub(crate) async fn run<T: 'static>(
        &mut self,
        job: Job<T>,
        hooks: &mut dyn Hooks,
    ) -> Result<T, CoreError> {
        loop {
            self.settle(hooks).await;
            if let Some(result) = self.engine.take_result(&job) {
                return result;
            }
            let input = self.wait().await?;
            self.feed(input);
        }
    }

    /// Connects, then runs `job`.
    pub(crate) async fn run_connected<T: 'static>(
        &mut self,
        start: impl FnOnce(&mut Engine) -> Job<T>,
    ) -> Result<T, CoreError> {
        self.connect().await?;
        let job = start(&mut self.engine);
        self.run(job, &mut NoHooks).await
    }

    /// Sends what the engine has to send and handles its events, until neither is left.
    async fn settle(&mut self, hooks: &mut dyn Hooks) {
        loop {
            let mut busy = false;
            while let Some(frame) = self.engine.poll_transmit() {
                busy = true;
                let Some(transport) = self.transport.as_mut() else {
                    continue;
                };
                if transport.send(frame).await.is_err() {
                    self.transport = None;
                    self.engine.on_disconnected();
                }
            }
            while let Some(event) = self.engine.poll_event() {
                busy = true;
                self.on_event(event, hooks);
            }
            if !busy {
                return;
            }
        }
    }

    fn on_event(&mut self, event: Event, hooks: &mut dyn Hooks) {
        match event {
            Event::Warning(warning) => {
                if self.warnings.len() >= WARNINGS_KEPT_MAX {
                    self.warnings.remove(0);
                }
                self.warnings.push(warning);
            }
            Event::Question { job, question } => {
                let yes = hooks.question(&question);
                self.engine.answer(job, yes);
            }
            Event::LinkCode { code, fingerprint } => hooks.link_code(&code, &fingerprint),
            // Shown as they come only while listening; a command's result says what it
            // brought, and its warnings are kept for the end.
            Event::Message { message, .. } if hooks.listening() => {
                let warnings = self.take_warnings();
                hooks.message(&self.engine, &message, &warnings);
            }
            Event::Message { .. } => {}
            Event::ChatJoined(_) | Event::ChatEnded(_) | Event::Done(_) => {}
        }
    }

    /// Waits for the next input: a frame, the transport closing, or the engine's timeout.
    async fn wait(&mut self) -> Result<Input, CoreError> {
        let deadline = self.engine.next_timeout().map(|at| {
            let now = SystemClock.now_ms();
            tokio::time::Instant::now()
                + Duration::from_millis(at.saturating_sub(now)).min(WAIT_MAX)
        });
        let Some(transport) = self.transport.as_mut() else {
            let Some(deadline) = deadline else {
                // Nothing can move the engine on: no connection and nothing due.
                return Err(CoreError::Connection("not connected".into()));
            };
            tokio::time::sleep_until(deadline).await;
            return Ok(Input::Timeout);
        };
        let sleep = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        Ok(tokio::select! {
            received = transport.recv() => match received {
                Ok(Some(frame)) => Input::Frame(frame),
                Ok(None) | Err(_) => Input::Closed,
            },
            () = sleep => Input::Timeout,
        })
    }

    fn feed(&mut self, input: Input) {
        match input {
            Input::Frame(frame) => self.engine.on_frame(&frame),
            Input::Closed => {
                self.transport = None;
                self.engine.on_disconnected();
            }
            Input::Timeout => self.engine.handle_timeout(),
        }
    }

    /// Stays connected and calls `on_message` for every message that arrives or changes,
    /// until the connection drops. Between pushes the profile is unlocked, so other commands
    /// can use it.
    pub async fn listen(
        &mut self,
        mut on_message: impl FnMut(&Engine, &ChatMessage, &[Warning]),
    ) -> Result<(), CoreError> {
        for message in self.sync().await? {
            let warnings = self.take_warnings();
            on_message(&self.engine, &message, &warnings);
        }
        struct Listening<'a>(&'a mut dyn FnMut(&Engine, &ChatMessage, &[Warning]));
        impl Hooks for Listening<'_> {
            fn listening(&self) -> bool {
                true
            }
            fn message(&mut self, engine: &Engine, message: &ChatMessage, warnings: &[Warning]) {
                (self.0)(engine, message, warnings);
            }
        }
        let mut hooks = Listening(&mut on_message);
        self.engine.set_background(true);
        loop {
            self.settle(&mut hooks).await;
            if self.transport.is_none() {
                return Err(CoreError::Connection(
                    "the server closed the connection".into(),
                ));
            }
            if !self.engine.has_work() {
                self.lock.release();
            }
            let input = self.wait().await?;
            self.lock.retake().await?;
            self.feed(input);
        }
    }

    /// Closes the connection, if any.
    pub async fn disconnect(&mut self) {
        if let Some(mut transport) = self.transport.take() {
            transport.close().await;
            self.engine.on_disconnected();
        }
    }
}
