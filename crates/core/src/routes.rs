//! Which address to reach the account's server at: the one the account was made on, and the
//! relays the user added since, in the order that fits what has worked, with a polite backoff
//! from an address that failed (a censor's residual block punishes every retry, so an address
//! that just failed is tried again only after a wait that doubles, unless nothing else is
//! left). A route is only ever a way to the same server: the driver checks the server's own
//! TLS identity through a relay (`chapar_client::tls::ServerAddress::through_relay`), and
//! counts a route as working only once logged in there (a server with another identity is
//! refused at log-in: the identity is pinned).
//!
//! The state is kept in the profile as JSON (value [`ROUTES_KEY`]); deciding is pure, over a
//! clock reading, so it has deterministic tests.

use serde::{Deserialize, Serialize};

use crate::CoreError;
use crate::storage::Tx;

/// Profile key of the routes' state.
const ROUTES_KEY: &str = "routes";
/// Most relays a profile keeps.
pub const RELAYS_MAX: usize = 16;
/// Longest relay address kept.
pub const RELAY_ADDRESS_BYTES_MAX: usize = 512;
/// The first wait after an address failed; it doubles with each failure in a row.
pub const ROUTE_BACKOFF_MIN_MS: u64 = 10_000;
/// The longest wait before an address that keeps failing is tried again.
pub const ROUTE_BACKOFF_MAX_MS: u64 = 3_600_000;

/// One address and how it has fared.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Route {
    address: String,
    /// Failures in a row.
    failures: u32,
    /// Not tried again before this time (ms since the epoch), unless nothing else is left.
    retry_at_ms: u64,
    /// When it last worked.
    worked_ms: u64,
}

/// The relays and how every address has fared.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routes {
    /// The relays, in the order they were added (the server's own address is not here).
    relays: Vec<String>,
    /// How each address fared, the server's own included.
    health: Vec<Route>,
}

impl Routes {
    /// Reads the routes from the profile.
    pub fn load(tx: &Tx<'_>) -> Result<Self, CoreError> {
        Ok(match tx.value(ROUTES_KEY)? {
            // Damaged state costs only the order: start afresh rather than fail to connect.
            Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            None => Self::default(),
        })
    }

    /// Writes the routes to the profile.
    pub fn save(&self, tx: &Tx<'_>) -> Result<(), CoreError> {
        let bytes = serde_json::to_vec(self)
            .map_err(|e| CoreError::Profile(format!("cannot encode the routes: {e}")))?;
        tx.set_value(ROUTES_KEY, &bytes)
    }

    /// The relays added, oldest first.
    pub fn relays(&self) -> &[String] {
        &self.relays
    }

    /// Adds a relay (once). Returns whether it is new.
    pub fn add_relay(&mut self, address: &str) -> Result<bool, CoreError> {
        if address.len() > RELAY_ADDRESS_BYTES_MAX {
            return Err(CoreError::Usage(crate::Usage::InvalidServer(
                address.chars().take(64).collect(),
            )));
        }
        if self.relays.iter().any(|r| r == address) {
            return Ok(false);
        }
        if self.relays.len() >= RELAYS_MAX {
            return Err(CoreError::Usage(crate::Usage::TooManyRelays(RELAYS_MAX)));
        }
        self.relays.push(address.to_owned());
        Ok(true)
    }

    /// Removes a relay. Returns whether it was there.
    pub fn remove_relay(&mut self, address: &str) -> bool {
        let before = self.relays.len();
        self.relays.retain(|r| r != address);
        self.health.retain(|h| h.address != address);
        self.relays.len() != before
    }

    /// The addresses to try now, in order: those not waiting out a failure, the one that
    /// worked most recently first (the server's own address first among equals, then relays
    /// as added); then those still waiting, soonest ready first, so that a connection is
    /// always attempted somewhere.
    pub fn order(&self, server: &str, now_ms: u64) -> Vec<String> {
        let all = std::iter::once(server).chain(self.relays.iter().map(String::as_str));
        let mut ready = Vec::new();
        let mut waiting = Vec::new();
        for (rank, address) in all.enumerate() {
            let route = self.route(address).cloned().unwrap_or_default();
            if route.retry_at_ms <= now_ms {
                ready.push((std::cmp::Reverse(route.worked_ms), rank, address));
            } else {
                waiting.push((route.retry_at_ms, rank, address));
            }
        }
        ready.sort();
        waiting.sort();
        ready
            .into_iter()
            .map(|(_, _, a)| a.to_owned())
            .chain(waiting.into_iter().map(|(_, _, a)| a.to_owned()))
            .collect()
    }

    /// Records that `address` worked.
    pub fn worked(&mut self, address: &str, now_ms: u64) {
        let route = self.route_mut(address);
        route.failures = 0;
        route.retry_at_ms = 0;
        route.worked_ms = now_ms;
    }

    /// Records that `address` failed: it waits [`ROUTE_BACKOFF_MIN_MS`], doubled for each
    /// failure in a row before, at most [`ROUTE_BACKOFF_MAX_MS`].
    pub fn failed(&mut self, address: &str, now_ms: u64) {
        let route = self.route_mut(address);
        let doublings = route.failures.min(20);
        route.failures = route.failures.saturating_add(1);
        let wait = ROUTE_BACKOFF_MIN_MS
            .saturating_mul(1 << doublings)
            .min(ROUTE_BACKOFF_MAX_MS);
        route.retry_at_ms = now_ms.saturating_add(wait);
    }

    fn route(&self, address: &str) -> Option<&Route> {
        self.health.iter().find(|h| h.address == address)
    }

    fn route_mut(&mut self, address: &str) -> &mut Route {
        if let Some(i) = self.health.iter().position(|h| h.address == address) {
            return &mut self.health[i];
        }
        // Health is kept for the server's address and the relays only (at most
        // RELAYS_MAX + 1 entries): forget the oldest stranger first.
        if self.health.len() > RELAYS_MAX {
            self.health.remove(0);
        }
        self.health.push(Route {
            address: address.to_owned(),
            ..Route::default()
        });
        let last = self.health.len() - 1;
        &mut self.health[last]
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the report

    use super::*;

    const SERVER: &str = "https://chat.example#sha256=x";
    const A: &str = "https://a.example#sha256=x";
    const B: &str = "https://b.example#sha256=x";

    fn routes() -> Routes {
        let mut routes = Routes::default();
        routes.add_relay(A).unwrap();
        routes.add_relay(B).unwrap();
        routes
    }

    #[test]
    fn the_server_comes_first_then_relays_as_added() {
        assert_eq!(routes().order(SERVER, 0), [SERVER, A, B]);
    }

    #[test]
    fn what_worked_last_is_tried_first() {
        let mut routes = routes();
        routes.worked(B, 100);
        assert_eq!(routes.order(SERVER, 200), [B, SERVER, A]);
    }

    #[test]
    fn a_failed_address_waits_a_doubling_time_and_is_tried_at_most_three_times_in_a_minute() {
        let mut routes = routes();
        let mut now = 0;
        let mut attempts = 0;
        // The server's address is blocked for a minute and a half (a residual block): it is
        // tried whenever it comes first, and fails each time.
        while now < 60_000 {
            if routes.order(SERVER, now)[0] == SERVER {
                attempts += 1;
                routes.failed(SERVER, now);
            }
            now += 1_000;
        }
        assert!(attempts <= 3, "{attempts} attempts");
        // Meanwhile a relay comes first.
        assert_eq!(routes.order(SERVER, now)[0], A);
        // Everything failing still leaves an address to try: the soonest ready.
        routes.failed(A, now);
        routes.failed(B, now + 1);
        assert_eq!(routes.order(SERVER, now + 2).len(), 3);
        // Working again clears the record.
        routes.worked(SERVER, now + 3);
        assert_eq!(routes.order(SERVER, now + 4)[0], SERVER);
    }

    #[test]
    fn relays_are_kept_once_and_within_their_limit() {
        let mut routes = routes();
        assert!(!routes.add_relay(A).unwrap());
        for i in 2..RELAYS_MAX {
            routes.add_relay(&format!("https://r{i}.example")).unwrap();
        }
        assert!(routes.add_relay("https://one-too-many.example").is_err());
        assert!(routes.remove_relay(A));
        assert!(!routes.remove_relay(A));
        assert!(
            routes
                .add_relay(&"x".repeat(RELAY_ADDRESS_BYTES_MAX + 1))
                .is_err()
        );
    }
}
