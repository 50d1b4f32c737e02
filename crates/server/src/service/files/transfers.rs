//! Slots for file transfers. Every PATCH holds a write buffer and a body frame while its body
//! streams in, and every GET a read chunk while its body streams out, so the number running
//! at once is what bounds the server's memory for files. A transfer takes a slot from a
//! server-wide semaphore, one from its account's count and one from its device's, and gives
//! all back when it ends (for a GET, when its response body is dropped: sent, stalled, or
//! abandoned by the client).
//!
//! The device's and the account's counts come first, so a client over its own limit is told
//! so (429, retry when one of yours ends) without touching the server-wide slots, which only
//! run out under load (503, retry later). The account's limit is below the server's, so the
//! devices of one account cannot take every slot between them.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use chapar_types::{DeviceId, ErrorCode, Username};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ServiceError;

/// Transfers running per key. A count in a map rather than a semaphore per key, so a device or
/// account with nothing running costs nothing: its entry goes with its last transfer.
struct Counts<K>(Mutex<HashMap<K, usize>>);

impl<K: Hash + Eq + Clone> Counts<K> {
    fn count(map: &HashMap<K, usize>, key: &K) -> usize {
        map.get(key).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, usize>> {
        // A poisoned map still holds valid counts: a panic elsewhere must not leak slots.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn release(&self, key: &K) {
        let mut counts = self.lock();
        if let Some(count) = counts.get_mut(key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(key);
            }
        }
    }
}

/// Transfers running now, server-wide, per account and per device.
pub(crate) struct TransferSlots {
    all: Arc<Semaphore>,
    per_account: Arc<Counts<Username>>,
    per_device: Arc<Counts<DeviceId>>,
    all_max: usize,
    per_account_max: usize,
    per_device_max: usize,
}

/// A running transfer's slots, given back when dropped.
#[must_use = "the slot is given back as soon as the permit is dropped"]
pub struct TransferPermit {
    _all: OwnedSemaphorePermit,
    account: Username,
    device: DeviceId,
    per_account: Arc<Counts<Username>>,
    per_device: Arc<Counts<DeviceId>>,
}

impl Drop for TransferPermit {
    fn drop(&mut self) {
        self.per_device.release(&self.device);
        self.per_account.release(&self.account);
    }
}

fn too_many(whose: &str, max: usize) -> ServiceError {
    ServiceError::new(
        ErrorCode::TooManyTransfers,
        format!(
            "{whose} runs {max} file transfers already, the most it may; retry when one has ended"
        ),
    )
}

impl TransferSlots {
    /// Room for `all_max` transfers in all, `per_account_max` per account and
    /// `per_device_max` per device.
    pub(crate) fn new(all_max: usize, per_account_max: usize, per_device_max: usize) -> Self {
        Self {
            all: Arc::new(Semaphore::new(all_max)),
            per_account: Arc::new(Counts(Mutex::default())),
            per_device: Arc::new(Counts(Mutex::default())),
            all_max,
            per_account_max,
            per_device_max,
        }
    }

    /// Transfers running now, server-wide (for the operators' gauge).
    pub(crate) fn running(&self) -> usize {
        self.all_max.saturating_sub(self.all.available_permits())
    }

    /// A slot for a transfer by `device` of `account`, or why there is none now.
    pub(crate) fn try_acquire(
        &self,
        account: &Username,
        device: DeviceId,
    ) -> Result<TransferPermit, ServiceError> {
        // Lock order: accounts, then devices (everywhere).
        let mut accounts = self.per_account.lock();
        let mut devices = self.per_device.lock();
        let (by_account, by_device) = (
            Counts::count(&accounts, account),
            Counts::count(&devices, &device),
        );
        if by_device >= self.per_device_max {
            return Err(too_many("this device", self.per_device_max));
        }
        if by_account >= self.per_account_max {
            return Err(too_many("this account", self.per_account_max));
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
        accounts.insert(account.clone(), by_account + 1);
        devices.insert(device, by_device + 1);
        Ok(TransferPermit {
            _all: all,
            account: account.clone(),
            device,
            per_account: self.per_account.clone(),
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
        let slots = TransferSlots::new(3, 3, 2);
        let user = Username::parse("someone").unwrap();
        let (a, b, c) = (DeviceId(1), DeviceId(2), DeviceId(3));
        let others: Vec<_> = [11, 12, 13]
            .map(|n| Username::parse(&format!("user{n}")).unwrap())
            .into();
        let a1 = slots.try_acquire(&others[0], a).unwrap();
        let a2 = slots.try_acquire(&others[0], a).unwrap();
        assert_eq!(
            refused(slots.try_acquire(&others[0], a)),
            ErrorCode::TooManyTransfers
        );
        let b1 = slots.try_acquire(&others[1], b).unwrap();
        assert_eq!(
            refused(slots.try_acquire(&others[2], c)),
            ErrorCode::Unavailable,
            "three in all"
        );
        assert_eq!(
            refused(slots.try_acquire(&others[0], a)),
            ErrorCode::TooManyTransfers,
            "a device over its own limit is told so first"
        );
        drop(a1);
        let c1 = slots.try_acquire(&others[2], c).unwrap();
        drop((a2, b1, c1));
        assert!(
            slots.per_device.lock().is_empty(),
            "idle devices leave no entry"
        );
        assert!(slots.per_account.lock().is_empty(), "idle accounts neither");
        let again: Vec<_> = [a, b, c]
            .into_iter()
            .map(|d| slots.try_acquire(&user, d).unwrap())
            .collect();
        assert_eq!(again.len(), 3, "one account, three devices");
    }

    #[test]
    fn the_devices_of_one_account_share_its_slots() {
        let slots = TransferSlots::new(10, 3, 2);
        let (user, other) = (
            Username::parse("someone").unwrap(),
            Username::parse("other").unwrap(),
        );
        let held: Vec<_> = [1, 1, 2]
            .map(|d| slots.try_acquire(&user, DeviceId(d)).unwrap())
            .into();
        assert_eq!(
            refused(slots.try_acquire(&user, DeviceId(3))),
            ErrorCode::TooManyTransfers,
            "a third device of a full account waits"
        );
        assert!(
            slots.try_acquire(&other, DeviceId(4)).is_ok(),
            "others do not"
        );
        drop(held);
    }
}
