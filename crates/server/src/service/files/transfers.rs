//! Slots for file transfers. Every PATCH holds a write buffer and a body frame while its body
//! streams in, and every GET a read chunk while its body streams out, so the number running
//! at once is what bounds the server's memory for files. A transfer takes a slot from a
//! server-wide semaphore and one from its device's count, and gives both back when it ends
//! (for a GET, when its response body is dropped: sent, or the client went away).
//!
//! The device's count comes first, so a device over its own limit is told so (429, retry when
//! one of yours ends) without touching the server-wide slots, which only run out under load
//! (503, retry later).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chapar_types::{DeviceId, ErrorCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ServiceError;

/// Transfers running now, server-wide and per device.
pub(crate) struct TransferSlots {
    all: Arc<Semaphore>,
    /// Transfers per device. A count in a map rather than a semaphore per device, so a device
    /// with nothing running costs nothing: its entry goes with its last transfer.
    per_device: Arc<Mutex<HashMap<DeviceId, usize>>>,
    all_max: usize,
    per_device_max: usize,
}

/// A running transfer's slots, given back when dropped.
#[must_use = "the slot is given back as soon as the permit is dropped"]
pub struct TransferPermit {
    _all: OwnedSemaphorePermit,
    device: DeviceId,
    per_device: Arc<Mutex<HashMap<DeviceId, usize>>>,
}

impl Drop for TransferPermit {
    fn drop(&mut self) {
        // A poisoned map still holds valid counts: a panic elsewhere must not leak slots.
        let mut counts = self.per_device.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.device) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.device);
            }
        }
    }
}

impl TransferSlots {
    /// Room for `all_max` transfers in all, `per_device_max` per device.
    pub(crate) fn new(all_max: usize, per_device_max: usize) -> Self {
        Self {
            all: Arc::new(Semaphore::new(all_max)),
            per_device: Arc::new(Mutex::new(HashMap::new())),
            all_max,
            per_device_max,
        }
    }

    /// A slot for a transfer by `device`, or why there is none now.
    pub(crate) fn try_acquire(&self, device: DeviceId) -> Result<TransferPermit, ServiceError> {
        let mut counts = self.per_device.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.get(&device).copied().unwrap_or(0);
        if count >= self.per_device_max {
            return Err(ServiceError::new(
                ErrorCode::TooManyTransfers,
                format!(
                    "this device runs {} file transfers already, the most it may; retry when \
                     one has ended",
                    self.per_device_max
                ),
            ));
        }
        let Ok(all) = self.all.clone().try_acquire_owned() else {
            tracing::warn!(
                max = self.all_max,
                "file transfers at the server-wide limit"
            );
            return Err(ServiceError::new(
                ErrorCode::Unavailable,
                "the server is running as many file transfers as it may; retry shortly",
            ));
        };
        counts.insert(device, count + 1);
        Ok(TransferPermit {
            _all: all,
            device,
            per_device: self.per_device.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the report

    use super::*;

    fn refused(result: Result<TransferPermit, ServiceError>) -> ErrorCode {
        match result {
            Ok(_) => panic!("expected a refusal"),
            Err(e) => e.code,
        }
    }

    #[test]
    fn slots_are_limited_per_device_and_in_all_and_come_back() {
        let slots = TransferSlots::new(3, 2);
        let (a, b, c) = (DeviceId(1), DeviceId(2), DeviceId(3));
        let a1 = slots.try_acquire(a).unwrap();
        let a2 = slots.try_acquire(a).unwrap();
        assert_eq!(refused(slots.try_acquire(a)), ErrorCode::TooManyTransfers);
        let b1 = slots.try_acquire(b).unwrap();
        assert_eq!(
            refused(slots.try_acquire(c)),
            ErrorCode::Unavailable,
            "three in all"
        );
        assert_eq!(
            refused(slots.try_acquire(a)),
            ErrorCode::TooManyTransfers,
            "a device over its own limit is told so first"
        );
        drop(a1);
        let c1 = slots.try_acquire(c).unwrap();
        drop((a2, b1, c1));
        assert!(
            slots.per_device.lock().unwrap().is_empty(),
            "idle devices leave no entry"
        );
        let again: Vec<_> = [a, b, c]
            .into_iter()
            .map(|d| slots.try_acquire(d).unwrap())
            .collect();
        assert_eq!(again.len(), 3);
    }
}
