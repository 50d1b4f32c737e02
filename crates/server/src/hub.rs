//! In-process fan-out: which connections belong to which device, and pushing frames to them.
//!
//! This is the seam where a multi-node deployment will publish to NATS instead. A push never
//! blocks the sender: a connection whose queue is full misses the push and is flagged `lagged`,
//! so its writer tells the client to resynchronise (see `api::connection`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use chapar_types::DeviceId;
use tokio::sync::{Notify, mpsc};

/// One connection's push queue and its lagged flag.
#[derive(Clone)]
pub struct PushTarget {
    /// Connection id, unique within this process.
    pub id: u64,
    /// Encoded frames for the connection's writer.
    pub queue: mpsc::Sender<Bytes>,
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
    pub fn attach(&self, device: DeviceId, target: PushTarget) {
        if let Ok(mut devices) = self.devices.lock() {
            devices.entry(device).or_default().push(target);
        }
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

    /// Pushes `frame` to every connection of every device in `recipients` except connection
    /// `skip` (the one that sent it, which gets a response instead).
    pub fn push(&self, recipients: &[DeviceId], frame: &Bytes, skip: Option<u64>) {
        let Ok(devices) = self.devices.lock() else {
            return;
        };
        for device in recipients {
            for target in devices.get(device).into_iter().flatten() {
                if Some(target.id) == skip {
                    continue;
                }
                if target.queue.try_send(frame.clone()).is_err() {
                    target.lagged.store(true, Ordering::Relaxed);
                }
            }
        }
    }
}
