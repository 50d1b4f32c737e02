//! What one account or address may do: the rate limiters the service keeps, what each write
//! costs an account's daily budget, and the checks that charge, refund and refuse (every
//! value in `docs/limits.md`).

use chapar_store::{Append, Store};
use chapar_types::{ErrorCode, Username};

use super::{Authenticated, Service, rate};
use crate::error::ServiceError;
use crate::limits::Limits;
use crate::metrics::LimitHit;

/// The rate limits the service keeps (see [`Limits`]).
pub struct Rates {
    /// Registrations per address.
    pub registrations: rate::RateLimiter<std::net::IpAddr>,
    /// Claims of one account's key packages by another.
    pub claims: rate::RateLimiter<(Username, Username)>,
    /// Devices added or revoked per account.
    pub device_changes: rate::RateLimiter<Username>,
    /// Bytes written per account per day to logs, welcomes and the archive.
    pub account_bytes: rate::RateLimiter<Username>,
    /// Anonymous link requests per address.
    pub links: rate::RateLimiter<std::net::IpAddr>,
    /// Claims of one account's one-time key packages, by anyone else.
    pub one_time_claims: rate::RateLimiter<Username>,
}

impl Rates {
    /// The limiters for `limits`.
    pub fn new(limits: &Limits) -> Self {
        Self {
            registrations: rate::RateLimiter::per_hour(limits.registrations_per_address_per_hour),
            claims: rate::RateLimiter::per_hour(limits.claims_per_account_pair_per_hour),
            device_changes: rate::RateLimiter::per_hour(limits.device_changes_per_account_per_hour),
            account_bytes: rate::RateLimiter::bytes_per_day(limits.account_bytes_per_day),
            links: rate::RateLimiter::per_hour(limits.links_per_address_per_hour),
            one_time_claims: rate::RateLimiter::new(
                u64::from(limits.one_time_claims_per_account_per_hour),
                std::time::Duration::from_secs(3600),
                rate::RATE_ACCOUNTS_MAX,
            ),
        }
    }
}

/// What one log entry costs an account's daily budget at least: its row, index entries and
/// pushes cost the server that much whatever the payload.
pub const ENTRY_CHARGE_MIN_BYTES: usize = 256;
/// What a commit costs the budget per device it adds or removes (member and inbox rows).
pub const DEVICE_CHANGE_CHARGE_BYTES: usize = 256;
/// What creating a group costs the budget.
pub const GROUP_CHARGE_BYTES: usize = 1024;

/// What `append` costs its sender's daily budget.
pub(crate) fn append_charge(append: &Append) -> usize {
    let changes = match &append.kind {
        chapar_store::AppendKind::Commit { added, removed, .. } => added.len() + removed.len(),
        _ => 0,
    };
    append.bytes().max(ENTRY_CHARGE_MIN_BYTES) + changes * DEVICE_CHANGE_CHARGE_BYTES
}

impl<S: Store> Service<S> {
    /// Charges `bytes` written to a log, a welcome or the archive to `who`'s account;
    /// refuses them past its daily budget.
    pub(crate) fn charge_writes(
        &self,
        who: &Authenticated,
        bytes: usize,
    ) -> Result<(), ServiceError> {
        if self.rates.account_bytes.take(&who.username, bytes as u64) {
            return Ok(());
        }
        self.metrics.hit(LimitHit::AccountBytes);
        Err(ServiceError::new(
            ErrorCode::QuotaExceeded,
            format!(
                "the account wrote its {} bytes for today to chats and its archive; try later",
                self.limits.account_bytes_per_day
            ),
        ))
    }

    /// Gives back `bytes` charged for a write that was then not stored.
    pub(crate) fn refund_writes(&self, who: &Authenticated, bytes: usize) {
        self.rates
            .account_bytes
            .give_back(&who.username, bytes as u64);
    }

    /// Refuses `adding` bytes of key packages if the account would keep more than its limit.
    pub(crate) async fn check_key_package_bytes(
        &self,
        username: &Username,
        adding: usize,
    ) -> Result<(), ServiceError> {
        let stored = self.store.key_package_bytes(username.as_str()).await?;
        if stored.saturating_add(adding as u64) <= self.limits.key_package_bytes_per_account_max {
            return Ok(());
        }
        self.metrics.hit(LimitHit::KeyPackageBytes);
        Err(ServiceError::new(
            ErrorCode::QuotaExceeded,
            format!(
                "the account keeps {stored} bytes of key packages and may keep {}; upload fewer",
                self.limits.key_package_bytes_per_account_max
            ),
        ))
    }
}
