//! The profile lock: one process at a time uses a profile (a lock file beside its database).
//! MLS commits are built, sent and merged in separate steps, and two processes must not
//! interleave them. `listen` lets go of the lock while it waits, so other commands still work
//! beside it.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use chapar_core::CoreError;

/// How long opening a profile waits for another process using it.
const PROFILE_LOCK_WAIT: Duration = Duration::from_secs(60);
/// How often a waiting process tries the profile lock again.
const PROFILE_LOCK_RETRY: Duration = Duration::from_millis(20);

/// Why the lock was not taken (yet).
enum LockWait {
    /// Another process holds it; try again.
    Busy,
    /// Another process held it for too long.
    TimedOut,
    /// The lock file failed.
    Failed(std::io::Error),
}

impl LockWait {
    fn into_error(self) -> CoreError {
        match self {
            Self::Busy | Self::TimedOut => CoreError::Profile(
                "the profile is in use by another chapar process (is `chapar listen` stuck?)"
                    .into(),
            ),
            Self::Failed(e) => CoreError::Profile(format!("cannot lock the profile: {e}")),
        }
    }
}

/// The lock on one profile directory.
pub(crate) struct ProfileLock {
    file: File,
    held: bool,
}

impl ProfileLock {
    /// Takes the lock of the profile in `dir`, waiting for another process to let go.
    pub(crate) fn take(dir: &Path) -> Result<Self, CoreError> {
        let file = File::create(dir.join("profile.lock"))
            .map_err(|e| CoreError::Profile(format!("cannot create the profile lock: {e}")))?;
        let deadline = Instant::now() + PROFILE_LOCK_WAIT;
        let mut locking = try_locking(&file, deadline);
        while let Err(LockWait::Busy) = locking {
            // Opening a profile is the one place the driver may block: nothing runs yet.
            std::thread::sleep(PROFILE_LOCK_RETRY);
            locking = try_locking(&file, deadline);
        }
        locking.map_err(LockWait::into_error)?;
        Ok(Self { file, held: true })
    }

    /// Lets other processes use the profile.
    pub(crate) fn release(&mut self) {
        if self.held && self.file.unlock().is_ok() {
            self.held = false;
        }
    }

    /// Takes the profile back after [`Self::release`], waiting for another process to finish.
    pub(crate) async fn retake(&mut self) -> Result<(), CoreError> {
        if self.held {
            return Ok(());
        }
        let deadline = Instant::now() + PROFILE_LOCK_WAIT;
        loop {
            match try_locking(&self.file, deadline) {
                Ok(()) => {
                    self.held = true;
                    return Ok(());
                }
                Err(LockWait::Busy) => tokio::time::sleep(PROFILE_LOCK_RETRY).await,
                Err(other) => return Err(other.into_error()),
            }
        }
    }
}

fn try_locking(lock: &File, deadline: Instant) -> Result<(), LockWait> {
    match lock.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => Err(LockWait::Busy),
        Err(std::fs::TryLockError::WouldBlock) => Err(LockWait::TimedOut),
        Err(std::fs::TryLockError::Error(e)) => Err(LockWait::Failed(e)),
    }
}
