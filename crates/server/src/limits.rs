//! Every limit the server holds clients to, named, with its default: connections, what one
//! connection may keep in memory, registration's cost, and what one account may write or ask
//! for. A client that meets one is slowed down (backpressure), refused with a stable error
//! code, or disconnected, never allowed to grow the server. `docs/limits.md` lists them with
//! their reasons.

use std::time::Duration;

/// The server's limits on clients. [`Limits::default`] is what `chapar server` runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most connections open at once (HTTP and WebSocket together).
    pub connections_max: usize,
    /// Most connections open at once from one address. (Behind a relay or proxy every client
    /// has the relay's address; the address a proxy reports is not trusted yet.)
    pub connections_per_address_max: usize,
    /// Most logged-in connections of one device; past it its oldest is closed.
    pub connections_per_device_max: usize,
    /// Longest from accepting a connection to a complete HTTP request head, and between
    /// requests on a kept-alive connection.
    pub handshake_timeout: Duration,
    /// Longest a protocol connection may stay without logging in.
    pub login_timeout: Duration,
    /// Longest a protocol connection may go without a frame from its client (clients send
    /// a `Ping` when they have nothing else to say).
    pub idle_timeout: Duration,
    /// Longest the server waits for a client to take a frame it is sending.
    pub write_timeout: Duration,
    /// Bytes one protocol connection may hold at once: requests being handled plus responses
    /// and pushes waiting to be written. Past it the server stops reading from it (requests)
    /// or drops pushes and asks it to resynchronise.
    pub connection_bytes_max: usize,
    /// Leading zero bits the registration proof of work must have (each bit doubles the
    /// work: 20 is about a second on a phone).
    pub registration_pow_bits: u8,
    /// Registrations one address may make per hour.
    pub registrations_per_address_per_hour: u32,
    /// Invite codes, one of which a registration must carry; none: anyone may register.
    pub invite_codes: Vec<String>,
    /// Bytes one account may write per day to group logs, welcomes and its archive.
    pub account_bytes_per_day: u64,
    /// Bytes of key packages one account may keep on the server, all devices together.
    pub key_package_bytes_per_account_max: u64,
    /// Times per hour one account may claim key packages of one other account.
    pub claims_per_account_pair_per_hour: u32,
    /// Claims per hour that get one of an account's one-time key packages, whoever makes
    /// them; past it, claims get its last-resort packages, so no crowd of accounts can drain
    /// the one-time ones.
    pub one_time_claims_per_account_per_hour: u32,
    /// Devices one account may add or revoke per hour (recoveries included).
    pub device_changes_per_account_per_hour: u32,
    /// Anonymous link requests one address may file per hour (the server holds 10,000 at
    /// most, for everyone).
    pub links_per_address_per_hour: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connections_max: 10_000,
            connections_per_address_max: 256,
            connections_per_device_max: 16,
            handshake_timeout: Duration::from_secs(10),
            login_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            write_timeout: Duration::from_secs(30),
            connection_bytes_max: 4 * 1024 * 1024,
            registration_pow_bits: 20,
            registrations_per_address_per_hour: 10,
            invite_codes: Vec::new(),
            account_bytes_per_day: 256 * 1024 * 1024,
            key_package_bytes_per_account_max: 2 * 1024 * 1024,
            claims_per_account_pair_per_hour: 120,
            one_time_claims_per_account_per_hour: 100,
            device_changes_per_account_per_hour: 20,
            links_per_address_per_hour: 30,
        }
    }
}

/// A [`Limits`] setting the server cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("limit {setting} must be {expected}, not {got}")]
pub struct LimitsError {
    /// The setting's name, as in the config file.
    pub setting: &'static str,
    /// What it may be.
    pub expected: &'static str,
    /// What it was.
    pub got: String,
}

/// Most leading zero bits a proof of work may ask for (past it, registering takes minutes on a phone).
pub const REGISTRATION_POW_BITS_MAX: u8 = chapar_types::pow::BITS_MAX;
/// The smallest connection budget: one whole frame must fit, or nothing could be answered.
pub const CONNECTION_BYTES_MIN: usize = 2 * chapar_types::limits::FRAME_BYTES_MAX;
/// The largest connection budget (its permits must fit a semaphore, and one connection
/// holding more is an operator's mistake).
pub const CONNECTION_BYTES_MAX: usize = 1 << 30;

impl Limits {
    /// Limits for tests: generous, with registration's proof of work nearly free (8 bits).
    pub fn for_tests() -> Self {
        Self {
            registration_pow_bits: 8,
            registrations_per_address_per_hour: 1_000_000,
            claims_per_account_pair_per_hour: 1_000_000,
            one_time_claims_per_account_per_hour: 1_000_000,
            device_changes_per_account_per_hour: 1_000_000,
            links_per_address_per_hour: 1_000_000,
            ..Self::default()
        }
    }

    /// Refuses settings the server cannot run with.
    pub fn validate(&self) -> Result<(), LimitsError> {
        let positive = |setting, value: u64| {
            if value == 0 {
                Err(LimitsError {
                    setting,
                    expected: "above 0",
                    got: value.to_string(),
                })
            } else {
                Ok(())
            }
        };
        positive("connections_max", self.connections_max as u64)?;
        positive(
            "connections_per_address_max",
            self.connections_per_address_max as u64,
        )?;
        positive(
            "connections_per_device_max",
            self.connections_per_device_max as u64,
        )?;
        for (setting, value) in [
            ("handshake_timeout", self.handshake_timeout),
            ("login_timeout", self.login_timeout),
            ("idle_timeout", self.idle_timeout),
            ("write_timeout", self.write_timeout),
        ] {
            if value.is_zero() || value > Duration::from_secs(24 * 3600) {
                return Err(LimitsError {
                    setting,
                    expected: "between 1 ms and 24 hours",
                    got: format!("{value:?}"),
                });
            }
        }
        if !(CONNECTION_BYTES_MIN..=CONNECTION_BYTES_MAX).contains(&self.connection_bytes_max) {
            return Err(LimitsError {
                setting: "connection_bytes_max",
                expected: "between two frames (2 MiB) and 1 GiB",
                got: self.connection_bytes_max.to_string(),
            });
        }
        if self.registration_pow_bits > REGISTRATION_POW_BITS_MAX {
            return Err(LimitsError {
                setting: "registration_pow_bits",
                expected: "at most 24",
                got: self.registration_pow_bits.to_string(),
            });
        }
        positive(
            "registrations_per_address_per_hour",
            u64::from(self.registrations_per_address_per_hour),
        )?;
        positive("account_bytes_per_day", self.account_bytes_per_day)?;
        positive(
            "key_package_bytes_per_account_max",
            self.key_package_bytes_per_account_max,
        )?;
        positive(
            "claims_per_account_pair_per_hour",
            u64::from(self.claims_per_account_pair_per_hour),
        )?;
        positive(
            "one_time_claims_per_account_per_hour",
            u64::from(self.one_time_claims_per_account_per_hour),
        )?;
        positive(
            "device_changes_per_account_per_hour",
            u64::from(self.device_changes_per_account_per_hour),
        )?;
        positive(
            "links_per_address_per_hour",
            u64::from(self.links_per_address_per_hour),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the report

    use super::*;

    #[test]
    fn the_defaults_are_valid_and_ask_a_second_of_work_to_register() {
        let defaults = Limits::default();
        assert_eq!(defaults.validate(), Ok(()));
        assert_eq!(defaults.registration_pow_bits, 20);
        assert_eq!(Limits::for_tests().validate(), Ok(()));
        let broken = Limits {
            connection_bytes_max: 1024,
            ..Limits::default()
        };
        assert_eq!(
            broken.validate().unwrap_err().setting,
            "connection_bytes_max"
        );
    }
}
