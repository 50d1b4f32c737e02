//! Rate limits: a token bucket per key (an address, an account, a pair of accounts), holding
//! at most `capacity` tokens and refilled at `capacity` per `period`. A token is one request,
//! or one byte for the accounts' daily write budget. In memory, per process (a restart forgets
//! them, which only ever helps a client); at most `keys_max` keys are tracked, buckets full
//! again are forgotten first, and past that new keys are refused, so the limiter itself cannot
//! be grown by a client with many addresses.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most addresses, or pairs of accounts, one limiter tracks at once.
pub const RATE_KEYS_MAX: usize = 100_000;
/// Most accounts one limiter tracks at once (about 100 bytes each).
pub const RATE_ACCOUNTS_MAX: usize = 1_000_000;

const HOUR: Duration = Duration::from_secs(3600);

pub use chapar_types::net::address_key;

const DAY: Duration = Duration::from_secs(24 * 3600);

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A token bucket per key.
pub struct RateLimiter<K> {
    capacity: f64,
    per_second: f64,
    keys_max: usize,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `capacity` tokens a key per `period`, in bursts of up to as many, for at most
    /// `keys_max` keys.
    pub fn new(capacity: u64, period: Duration, keys_max: usize) -> Self {
        let capacity = capacity.max(1) as f64;
        Self {
            capacity,
            per_second: capacity / period.as_secs_f64().max(1.0),
            keys_max,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// `per_hour` requests a key an hour, for up to [`RATE_KEYS_MAX`] keys.
    pub fn per_hour(per_hour: u32) -> Self {
        Self::new(u64::from(per_hour), HOUR, RATE_KEYS_MAX)
    }

    /// `bytes` a day an account, for up to [`RATE_ACCOUNTS_MAX`] accounts.
    pub fn bytes_per_day(bytes: u64) -> Self {
        Self::new(bytes, DAY, RATE_ACCOUNTS_MAX)
    }

    /// Takes a token for `key` if it has one; returns whether it had.
    pub fn allow(&self, key: &K) -> bool {
        self.take_at(key, 1, Instant::now())
    }

    /// Takes `cost` tokens for `key` if it has them all; returns whether it had.
    pub fn take(&self, key: &K, cost: u64) -> bool {
        self.take_at(key, cost, Instant::now())
    }

    /// Gives back `cost` tokens taken for work that was then refused (never past full).
    pub fn give_back(&self, key: &K, cost: u64) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bucket) = buckets.get_mut(key) {
            bucket.tokens = (bucket.tokens + cost as f64).min(self.capacity);
        }
    }

    fn refilled(&self, bucket: &Bucket, now: Instant) -> f64 {
        let seconds = now.saturating_duration_since(bucket.at).as_secs_f64();
        (bucket.tokens + seconds * self.per_second).min(self.capacity)
    }

    fn take_at(&self, key: &K, cost: u64, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !buckets.contains_key(key) && buckets.len() >= self.keys_max {
            // Forget the keys whose buckets are full again: they are as if never seen. If
            // none is, forget the fullest, rather than refuse every new key: a table filled
            // by one attacker must not lock everyone else out.
            buckets.retain(|_, bucket| self.refilled(bucket, now) < self.capacity);
            if buckets.len() >= self.keys_max {
                let fullest = buckets
                    .iter()
                    .max_by(|a, b| self.refilled(a.1, now).total_cmp(&self.refilled(b.1, now)))
                    .map(|(key, _)| key.clone());
                if let Some(fullest) = fullest {
                    buckets.remove(&fullest);
                }
            }
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: self.capacity,
            at: now,
        });
        let tokens = self.refilled(bucket, now);
        let cost = cost as f64;
        if tokens >= cost {
            *bucket = Bucket {
                tokens: tokens - cost,
                at: now,
            };
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the report

    use super::*;

    #[test]
    fn a_key_gets_its_burst_then_waits_and_others_are_unaffected() {
        let limiter = RateLimiter::per_hour(3);
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.take_at(&"a", 1, start));
        }
        assert!(!limiter.take_at(&"a", 1, start), "the burst is spent");
        assert!(limiter.take_at(&"b", 1, start), "another key is unaffected");
        let later = start + HOUR / 3;
        assert!(limiter.take_at(&"a", 1, later), "a token came back");
        assert!(!limiter.take_at(&"a", 1, later));
    }

    #[test]
    fn bytes_are_refused_whole_and_come_back_over_the_day() {
        let limiter = RateLimiter::bytes_per_day(1000);
        let start = Instant::now();
        assert!(limiter.take_at(&"a", 600, start));
        assert!(!limiter.take_at(&"a", 600, start), "not part of it");
        assert!(limiter.take_at(&"a", 400, start), "what is left still fits");
        assert!(limiter.take_at(&"a", 500, start + DAY / 2));
    }

    #[test]
    fn past_its_keys_a_limiter_forgets_the_fullest_bucket_not_new_keys() {
        let limiter = RateLimiter::new(2, HOUR, 2);
        let start = Instant::now();
        assert!(limiter.take_at(&1, 2, start));
        assert!(limiter.take_at(&2, 1, start));
        assert!(limiter.take_at(&3, 1, start), "a new key is let in...");
        assert!(
            !limiter.take_at(&1, 1, start),
            "...the emptiest bucket is kept"
        );
        assert!(
            limiter.buckets.lock().unwrap().len() <= 2,
            "the table keeps its size"
        );
    }

    #[test]
    fn tokens_given_back_count_again() {
        let limiter = RateLimiter::bytes_per_day(100);
        let start = Instant::now();
        assert!(limiter.take_at(&"a", 100, start));
        limiter.give_back(&"a", 60);
        assert!(limiter.take_at(&"a", 60, start));
        assert!(!limiter.take_at(&"a", 1, start));
    }

    #[test]
    fn addresses_are_keyed_by_ipv4_address_or_ipv6_slash_64() {
        let ip = |text: &str| Some(text.parse::<std::net::IpAddr>().unwrap());
        assert_eq!(
            address_key(ip("2001:db8:1:2::1")),
            address_key(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            address_key(ip("2001:db8:1:2::1")),
            address_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            address_key(ip("::ffff:10.0.0.1")),
            address_key(ip("10.0.0.1"))
        );
        assert_eq!(
            address_key(None),
            address_key(None),
            "no address is one shared key"
        );
    }
}
