//! The state every job of the engine shares ([`Device`]: the profile, the identity, the I/O
//! boundary, the environment), and the session on the current connection: the version
//! handshake, log-in, topping up key packages and sending what the outbox holds.

use std::cell::{Cell, OnceCell, RefCell};
use std::rc::Rc;

use chapar_types::signed::SERVER_ID_BYTES;
use chapar_types::{GroupId, MessageId};
use chapar_wire::v1::{self, client_frame::Request, response::Result as Reply};
use openmls_rust_crypto::RustCrypto;

use super::io::Io;
use crate::account_keys::AccountKeys;
use crate::env::Env;
use crate::events::{Event, Warning};
use crate::identity::{self, Identity, LAST_RESORT_UPLOADED};
use crate::model::Restored;
use crate::provider::Provider;
use crate::storage::{Profile, Tx};
use crate::{CoreError, Usage};

/// Below this many one-time key packages on the server, the device uploads a new batch.
const KEY_PACKAGE_LOW_WATER: u32 = 5;

/// Everything the engine's jobs share.
pub(crate) struct Device {
    pub env: Rc<Env>,
    pub profile: Profile,
    pub crypto: RustCrypto,
    pub io: Io,
    /// Who this profile is, once it has an account (set once: register, link or recover).
    pub me: OnceCell<Identity>,
    /// What archive replays brought back since the engine started.
    pub restored: Cell<Restored>,
    /// Messages that arrived or changed during the current job, in order (what a `sync`
    /// shows), at most [`SEEN_KEPT_MAX`].
    seen: RefCell<Vec<(GroupId, MessageId)>>,
}

/// Messages noted per job for what a `sync` shows; past it, the oldest are forgotten (they
/// were emitted as events all the same).
pub(crate) const SEEN_KEPT_MAX: usize = 10_000;

impl Device {
    pub(crate) fn new(profile: Profile, env: Env) -> Result<Self, CoreError> {
        let env = Rc::new(env);
        let me = OnceCell::new();
        if let Some(identity) = profile.read(Identity::load)? {
            let _ = me.set(identity);
        }
        Ok(Self {
            io: Io::new(env.clone()),
            env,
            profile,
            crypto: RustCrypto::default(),
            me,
            restored: Cell::new(Restored::default()),
            seen: RefCell::new(Vec::new()),
        })
    }

    /// Notes that a message arrived or changed.
    pub(crate) fn note_seen(&self, group: GroupId, id: MessageId) {
        let mut seen = self.seen.borrow_mut();
        if seen.len() >= SEEN_KEPT_MAX {
            seen.remove(0);
        }
        seen.push((group, id));
    }

    /// The messages noted since the last call.
    pub(crate) fn take_seen(&self) -> Vec<(GroupId, MessageId)> {
        std::mem::take(&mut self.seen.borrow_mut())
    }

    /// This profile's identity, or [`Usage::NoAccount`].
    pub(crate) fn me(&self) -> Result<&Identity, CoreError> {
        self.me.get().ok_or_else(|| Usage::NoAccount.into())
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.env.now_ms()
    }

    /// Runs `f` in a read transaction.
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, CoreError>,
    ) -> Result<T, CoreError> {
        self.profile.read(f)
    }

    /// Runs `f` in a write transaction.
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, CoreError>,
    ) -> Result<T, CoreError> {
        self.profile.write(f)
    }

    /// The MLS provider over `tx`.
    pub(crate) fn mls<'a>(&'a self, tx: &'a Tx<'a>) -> Provider<'a> {
        Provider::new(&self.crypto, &self.env, tx)
    }

    /// Sends a request and waits for its reply.
    pub(crate) async fn call(&self, request: Request) -> Result<Reply, CoreError> {
        self.io.call(request).await
    }

    pub(crate) fn warn(&self, warning: Warning) {
        self.io.emit(Event::Warning(warning));
    }

    /// The account's keys other than the account key, from the profile (the truth: another
    /// job or process may have added a generation).
    pub(crate) fn account_keys(&self) -> Result<AccountKeys, CoreError> {
        self.read(AccountKeys::load)?.ok_or_else(|| {
            CoreError::Profile("this profile has no account keys; link it again".into())
        })
    }

    /// Says `Hello` on this connection if not done yet; returns the connection's challenge.
    pub(crate) async fn hello(&self) -> Result<Vec<u8>, CoreError> {
        if let Some(challenge) = self.io.challenge() {
            return Ok(challenge);
        }
        let reply = self
            .call(Request::Hello(v1::Hello {
                protocol_version: chapar_wire::PROTOCOL_VERSION,
                capabilities: chapar_wire::CAPABILITIES
                    .iter()
                    .map(|c| (*c).to_owned())
                    .collect(),
                client_agent: concat!("chapar/", env!("CARGO_PKG_VERSION")).into(),
            }))
            .await?;
        let Reply::HelloOk(ok) = reply else {
            return Err(unexpected("HelloOk"));
        };
        // More than the most a server may ask would take a phone minutes: treat it as that most, and
        // let the server say no.
        let most = chapar_types::pow::BITS_MAX;
        let bits = u8::try_from(ok.registration_pow_bits.min(u32::from(most))).unwrap_or(most);
        if ok.server_id.len() != SERVER_ID_BYTES {
            return Err(CoreError::Protocol(
                "the server presents no identity of the right size".into(),
            ));
        }
        self.io
            .set_challenge(ok.challenge.clone(), bits, ok.server_id);
        Ok(ok.challenge)
    }

    /// Logs in on this connection if not done yet: tops up key packages, then sends what the
    /// outbox holds (the server deduplicates what it had already).
    pub(crate) async fn connect(&self) -> Result<(), CoreError> {
        if self.io.is_logged_in() {
            return Ok(());
        }
        let challenge = self.hello().await?;
        let me = self.me()?;
        // The server the account is on, whatever address was dialled: a relay passes its
        // identity on unchanged, another server does not have it.
        let server_id = self.account_keys()?.server_id;
        if server_id != self.io.server_id() {
            return Err(Usage::WrongServer.into());
        }
        let reply = self
            .call(Request::Authenticate(v1::Authenticate {
                device_id: me.device.0,
                challenge_signature: me.answer(&challenge, &server_id),
            }))
            .await?;
        let Reply::AuthOk(ok) = reply else {
            return Err(unexpected("AuthOk"));
        };
        self.io.set_logged_in();
        // A linked device uploads its first key packages here, with its last-resort one; any
        // device tops up when the server runs low.
        let needs_last_resort = self.read(|tx| tx.counter(LAST_RESORT_UPLOADED))? == 0;
        if ok.key_packages_remaining < KEY_PACKAGE_LOW_WATER || needs_last_resort {
            let (fresh, last_resort) =
                self.write(|tx| identity::make_key_packages(&self.mls(tx), me, needs_last_resort))?;
            self.call(Request::UploadKeyPackages(v1::UploadKeyPackages {
                key_packages: fresh,
                last_resort_key_package: last_resort,
            }))
            .await?;
            self.write(|tx| tx.set_counter(LAST_RESORT_UPLOADED, 1))?;
        }
        self.flush_outbox().await
    }
}

/// The error for a reply of the wrong kind.
pub(crate) fn unexpected(what: &str) -> CoreError {
    CoreError::Protocol(format!("expected {what}"))
}
