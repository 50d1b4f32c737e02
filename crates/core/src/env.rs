//! What the engine takes from the world instead of reaching for it: the time and a source of
//! randomness. A native driver passes the system clock and an RNG seeded from the operating
//! system; tests pass a [`ManualClock`] and a fixed seed, so a whole conversation replays
//! exactly.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

/// A source of the current time, in milliseconds since the Unix epoch.
pub trait Clock {
    /// Now.
    fn now_ms(&self) -> u64;
}

/// A clock that moves only when told to (tests, the simulator).
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Rc<Cell<u64>>);

impl ManualClock {
    /// A clock showing `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        Self(Rc::new(Cell::new(now_ms)))
    }

    /// Moves the clock to `now_ms` (never back).
    pub fn set(&self, now_ms: u64) {
        self.0.set(self.0.get().max(now_ms));
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.0.set(self.0.get().saturating_add(ms));
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.get()
    }
}

/// The engine's environment: its clock and its random number generator (ChaCha20, seeded by
/// the caller: from the operating system in a driver, from a test's seed in a test).
pub struct Env {
    clock: Box<dyn Clock>,
    rng: RefCell<ChaCha20Rng>,
}

impl Env {
    /// An environment with `clock`, and randomness expanded from `seed`.
    pub fn new(clock: impl Clock + 'static, seed: [u8; 32]) -> Self {
        Self {
            clock: Box::new(clock),
            rng: RefCell::new(ChaCha20Rng::from_seed(seed)),
        }
    }

    /// Now, in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Runs `f` with the random number generator.
    pub fn with_rng<T>(&self, f: impl FnOnce(&mut ChaCha20Rng) -> T) -> T {
        f(&mut self.rng.borrow_mut())
    }

    /// `N` random bytes.
    pub fn random<const N: usize>(&self) -> [u8; N] {
        let mut out = [0u8; N];
        self.rng.borrow_mut().fill_bytes(&mut out);
        out
    }

    /// A random u64.
    pub fn random_u64(&self) -> u64 {
        self.rng.borrow_mut().next_u64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_randomness_and_the_clock_moves_only_when_told() {
        let clock = ManualClock::new(1_000);
        let a = Env::new(clock.clone(), [7; 32]);
        let b = Env::new(clock.clone(), [7; 32]);
        assert_eq!(a.random::<16>(), b.random::<16>());
        assert_eq!(a.now_ms(), 1_000);
        clock.advance(500);
        assert_eq!(b.now_ms(), 1_500);
        clock.set(10);
        assert_eq!(a.now_ms(), 1_500, "a manual clock never goes back");
    }
}
