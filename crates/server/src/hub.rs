//! In-process fan-out: which connections belong to which device, and pushing to them.
//!
//! This is the seam where a multi-node deployment will publish to NATS instead. A push never
//! blocks the sender: a connection whose queue is full misses the push and is flagged `lagged`,
//! so its writer tells the client to resynchronise (see `api::session`).
//!
//! Pushes are domain values ([`Push`]); a connection's writer encodes one for its transport
//! the first time any connection needs it, and every other recipient reuses those bytes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use chapar_store::LogEntry;
use chapar_types::DeviceId;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};

/// What a push tells a device.
#[derive(Debug, Clone)]
pub enum PushKind {
    /// A new entry of one of its groups' logs.
    Entry(LogEntry),
    /// A welcome waits for it.
    Welcome,
}

/// A push, with its encoding once some connection made it.
#[derive(Debug)]
pub struct Push {
    /// What it says.
    pub kind: PushKind,
    /// Its frame, encoded once for all recipients.
    pub encoded: OnceLock<Bytes>,
}

impl Push {
    /// A push of `kind`, not encoded yet.
    pub fn new(kind: PushKind) -> Arc<Self> {
        Arc::new(Self {
            kind,
            encoded: OnceLock::new(),
        })
    }
}

/// What a connection's writer sends: a response already encoded, or a push, each holding its
/// bytes' share of the connection's budget until it is written.
#[derive(Debug)]
pub enum Outgoing {
    /// An encoded response frame.
    Frame(Bytes, Option<OwnedSemaphorePermit>),
    /// A push, shared with the other recipients.
    Push(Arc<Push>, OwnedSemaphorePermit),
}

impl Push {
    /// About the bytes this push takes in a connection's queue (its payload and framing),
    /// what it is charged against the connection's budget.
    pub fn charge(&self) -> u32 {
        let payload = match &self.kind {
            PushKind::Entry(entry) => entry.payload.len(),
            PushKind::Welcome => 0,
        };
        u32::try_from(payload + PUSH_FRAMING_BYTES).unwrap_or(u32::MAX)
    }
}

/// What a push's frame adds to its payload, about (ids, positions, protobuf framing).
const PUSH_FRAMING_BYTES: usize = 128;

/// One connection's push queue and its lagged flag.
#[derive(Clone)]
pub struct PushTarget {
    /// Connection id, unique within this process.
    pub id: u64,
    /// What the connection's writer sends.
    pub queue: mpsc::Sender<Outgoing>,
    /// The connection's byte budget (see `Limits::connection_bytes_max`).
    pub budget: Arc<Semaphore>,
    /// Set when a push was dropped because the queue was full.
    pub lagged: Arc<AtomicBool>,
    /// Notified when the device is revoked: the connection must close at once.
    pub kick: Arc<Notify>,
}

/// The registry of connected devices.
#[derive(Default)]
pub struct Hub {
    devices: Mutex<HashMap<DeviceId, Vec<PushTarget>>>,
    next_id: AtomicU64,
}

impl Hub {
    /// A fresh connection id.
    pub fn next_connection_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers an authenticated connection of `device`.
    /// Adds a connection of `device`, closing its oldest ones beyond `per_device_max` (a
    /// phone that changed networks leaves half-open ones behind; one device must not hold
    /// thousands). Returns how many it closed.
    pub fn attach(&self, device: DeviceId, target: PushTarget, per_device_max: usize) -> usize {
        let Ok(mut devices) = self.devices.lock() else {
            return 0;
        };
        let targets = devices.entry(device).or_default();
        let mut closed = 0;
        while !targets.is_empty() && targets.len() >= per_device_max.max(1) {
            targets.remove(0).kick.notify_one();
            closed += 1;
        }
        targets.push(target);
        closed
    }

    /// Removes a connection.
    pub fn detach(&self, device: DeviceId, connection: u64) {
        if let Ok(mut devices) = self.devices.lock()
            && let Some(targets) = devices.get_mut(&device)
        {
            targets.retain(|t| t.id != connection);
            if targets.is_empty() {
                devices.remove(&device);
            }
        }
    }

    /// Closes every connection of `device` (it was revoked).
    pub fn kick(&self, device: DeviceId) {
        let Ok(devices) = self.devices.lock() else {
            return;
        };
        for target in devices.get(&device).into_iter().flatten() {
            // notify_one keeps a permit if the connection is not waiting right now.
            target.kick.notify_one();
        }
    }

    /// Pushes `push` to every connection of every device in `recipients` except connection
    /// `skip` (the one that sent it, which gets a response instead). A connection whose queue
    /// or byte budget is full misses it and is flagged to resynchronise. Returns how many
    /// connections missed it.
    pub fn push(&self, recipients: &[DeviceId], push: &Arc<Push>, skip: Option<u64>) -> usize {
        let Ok(devices) = self.devices.lock() else {
            return 0;
        };
        let mut missed = 0;
        for device in recipients {
            for target in devices.get(device).into_iter().flatten() {
                if Some(target.id) == skip {
                    continue;
                }
                let sent = target
                    .budget
                    .clone()
                    .try_acquire_many_owned(push.charge())
                    .ok()
                    .is_some_and(|permit| {
                        target
                            .queue
                            .try_send(Outgoing::Push(push.clone(), permit))
                            .is_ok()
                    });
                if !sent {
                    target.lagged.store(true, Ordering::Relaxed);
                    missed += 1;
                }
            }
        }
        missed
    }
}
