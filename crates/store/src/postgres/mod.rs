//! The PostgreSQL backend, for many stateless server nodes on one database.
//!
//! Every write is one transaction at SERIALIZABLE: PostgreSQL then guarantees what SQLite's
//! single writer guarantees by construction (no two appends take the same position, a roster
//! version is above every other, a quota is checked against what is really stored). A
//! transaction that loses a conflict (SQLSTATE 40001, or 40P01 for a deadlock) is run again
//! from the start on a fresh snapshot, up to [`SERIALIZATION_ATTEMPTS_MAX`] times with a
//! growing, jittered pause, so CockroachDB- or YugabyteDB-style retries are handled too.
//!
//! Appends to one group are ordered by its `groups` row, read `FOR UPDATE` first. Within a
//! node, appends to the same group also queue on one of [`GROUP_LOCK_SHARDS`] local locks
//! before their transaction begins: they wait for each other instead of all but one failing
//! with 40001 and retrying; across nodes, the row lock and the retry do it.
//!
//! A write is answered only after its `COMMIT` returned, with `synchronous_commit = on` set on
//! every connection: acknowledged means in the database's flushed WAL.

mod accounts;
mod files;
mod key_packages;
mod log;
mod schema;
#[cfg(any(test, feature = "conformance"))]
pub mod test_database;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chapar_types::{DeviceId, GroupId};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use crate::*;

/// Connections each node keeps to the database at most.
pub const POOL_CONNECTIONS_MAX: usize = 16;
/// How long a store call waits for a free connection, or for a new one to open.
pub const POOL_WAIT: Duration = Duration::from_secs(10);
/// How often a transaction runs before a serialization failure is reported as a backend error.
pub const SERIALIZATION_ATTEMPTS_MAX: u32 = 12;
/// Local locks that queue appends to the same group within a node.
pub const GROUP_LOCK_SHARDS: usize = 256;

/// Why a transaction did not commit: an answer for the caller, or a conflict to run again.
#[derive(Debug)]
enum Failure {
    Store(StoreError),
    Retry(tokio_postgres::Error),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl Failure {
    fn into_store(self) -> StoreError {
        match self {
            Self::Store(e) => e,
            Self::Retry(e) => StoreError::Backend(describe(&e)),
        }
    }
}

/// Maps a database error: conflicts are retried, a full disk is said so, the rest is a
/// backend error whose detail goes to the server log.
fn pg(e: tokio_postgres::Error) -> Failure {
    match e.code() {
        Some(code)
            if *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED =>
        {
            Failure::Retry(e)
        }
        Some(code) if *code == SqlState::DISK_FULL => Failure::Store(StoreError::Full),
        _ => Failure::Store(StoreError::Backend(describe(&e))),
    }
}

/// The database's own message where there is one (the driver's `Display` says only "db
/// error").
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// `taken` for a unique violation, else as [`pg`].
fn unique_or(e: tokio_postgres::Error, taken: StoreError) -> Failure {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        Failure::Store(taken)
    } else {
        pg(e)
    }
}

type Tx<'a> = deadpool_postgres::Transaction<'a>;
type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Runs a statement (prepared once per connection), returning its rows.
async fn rows(tx: &Tx<'_>, sql: &str, params: Params<'_>) -> Result<Vec<Row>, Failure> {
    let statement = tx.prepare_cached(sql).await.map_err(pg)?;
    tx.query(&statement, params).await.map_err(pg)
}

/// Runs a statement returning at most one row.
async fn opt(tx: &Tx<'_>, sql: &str, params: Params<'_>) -> Result<Option<Row>, Failure> {
    let statement = tx.prepare_cached(sql).await.map_err(pg)?;
    tx.query_opt(&statement, params).await.map_err(pg)
}

/// Runs a statement returning exactly one row.
async fn one(tx: &Tx<'_>, sql: &str, params: Params<'_>) -> Result<Row, Failure> {
    let statement = tx.prepare_cached(sql).await.map_err(pg)?;
    tx.query_one(&statement, params).await.map_err(pg)
}

/// Runs a statement, returning how many rows it changed.
async fn exec(tx: &Tx<'_>, sql: &str, params: Params<'_>) -> Result<u64, Failure> {
    let statement = tx.prepare_cached(sql).await.map_err(pg)?;
    tx.execute(&statement, params).await.map_err(pg)
}

// PostgreSQL's integers are signed; device ids are random 64-bit values and round-trip by bit
// pattern, ordered numbers must stay below 2^63 (`OutOfRange` otherwise, as in SQLite).
fn dev(d: DeviceId) -> i64 {
    d.0 as i64
}

fn to_dev(n: i64) -> DeviceId {
    DeviceId(n as u64)
}

fn num(n: u64) -> Result<i64, Failure> {
    i64::try_from(n).map_err(|_| Failure::Store(StoreError::OutOfRange(n)))
}

/// A stored non-negative number back in the domain.
fn unum(n: i64) -> u64 {
    n.max(0) as u64
}

fn backend(e: impl std::fmt::Display) -> Failure {
    Failure::Store(StoreError::Backend(e.to_string()))
}

/// Runs `$body` in a serializable transaction bound to `$tx`, committing after it; after a
/// serialization failure, runs it again from the start (so the body must only read what it
/// is given and the database). `$body` may `.await` and use `?` on [`Failure`].
macro_rules! serializable {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let store: &PgStore = $store;
        let mut attempt = 0u32;
        loop {
            let mut client = store.client().await?;
            let outcome: Result<_, Failure> = async {
                let $tx = client
                    .build_transaction()
                    .isolation_level(IsolationLevel::Serializable)
                    .start()
                    .await
                    .map_err(pg)?;
                let value = $body;
                store.before_commit(&$tx).await?;
                $tx.commit().await.map_err(pg)?;
                Ok(value)
            }
            .await;
            match outcome {
                Ok(value) => break Ok(value),
                Err(Failure::Store(e)) => break Err(e),
                Err(Failure::Retry(e)) => {
                    attempt += 1;
                    store.retries.fetch_add(1, Ordering::Relaxed);
                    if attempt >= SERIALIZATION_ATTEMPTS_MAX {
                        tracing::warn!(error = %e, attempt, "store: giving up after conflicts");
                        break Err(StoreError::Backend(describe(&e)));
                    }
                    tokio::time::sleep(retry_pause(attempt)).await;
                }
            }
        }
    }};
}

/// Runs `$body` in a read-only transaction on one snapshot (REPEATABLE READ, which a
/// read-only transaction never has to retry).
macro_rules! snapshot {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let store: &PgStore = $store;
        let mut client = store.client().await?;
        let outcome: Result<_, Failure> = async {
            let $tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(pg)?;
            let value = $body;
            $tx.commit().await.map_err(pg)?;
            Ok(value)
        }
        .await;
        outcome.map_err(Failure::into_store)
    }};
}

/// The pause before attempt `attempt + 1`: 1, 2, 4 ... ms up to 64 ms, each up to half again
/// at random, so conflicting transactions do not meet again in step.
fn retry_pause(attempt: u32) -> Duration {
    let base = 1u64 << attempt.min(6);
    let jitter = rand_below(base / 2 + 1);
    Duration::from_millis(base + jitter)
}

/// A cheap random number below `n` (timing jitter only; no secrets).
fn rand_below(n: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(n);
    hasher.finish() % n.max(1)
}

/// The PostgreSQL store. Cheap to share behind an `Arc`.
pub struct PgStore {
    pool: Pool,
    group_locks: Vec<tokio::sync::Mutex<()>>,
    /// Transactions run again after a conflict, since the store opened (for `/metrics`).
    retries: AtomicU64,
    #[cfg(test)]
    injected_conflicts: std::sync::atomic::AtomicU32,
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`; plain TCP, so on a
    /// trusted network or loopback) and brings its schema up to date.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Backend(format!("database address: {e}")))?;
        config
            .options("-c synchronous_commit=on")
            .application_name("chapar")
            .connect_timeout(POOL_WAIT);
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_CONNECTIONS_MAX)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .build()
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let store = Self {
            pool,
            group_locks: (0..GROUP_LOCK_SHARDS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            retries: AtomicU64::new(0),
            #[cfg(test)]
            injected_conflicts: std::sync::atomic::AtomicU32::new(0),
        };
        let mut client = store.client().await?;
        schema::migrate(&mut client)
            .await
            .map_err(Failure::into_store)?;
        Ok(store)
    }

    /// Transactions run again after a serialization conflict since the store opened.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| {
            tracing::error!(error = %e, "store: no database connection");
            StoreError::Unavailable
        })
    }

    /// The local lock that queues appends to `group` on this node.
    fn group_lock(&self, group: GroupId) -> &tokio::sync::Mutex<()> {
        let shard = group.as_bytes().first().copied().unwrap_or(0) as usize;
        &self.group_locks[shard % GROUP_LOCK_SHARDS]
    }

    /// Test hook: the next `n` write transactions fail with SQLSTATE 40001, raised by the
    /// database just before their commit, after all their work.
    #[cfg(test)]
    fn inject_conflicts(&self, n: u32) {
        self.injected_conflicts.store(n, Ordering::SeqCst);
    }

    #[cfg(test)]
    async fn before_commit(&self, tx: &Tx<'_>) -> Result<(), Failure> {
        let injected =
            self.injected_conflicts
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if injected.is_ok() {
            tx.batch_execute(
                "DO $$ BEGIN RAISE EXCEPTION 'injected conflict' \
                 USING ERRCODE = 'serialization_failure'; END $$",
            )
            .await
            .map_err(pg)?;
        }
        Ok(())
    }

    #[cfg(not(test))]
    async fn before_commit(&self, _tx: &Tx<'_>) -> Result<(), Failure> {
        Ok(())
    }
}

// After the macros, which it uses.
mod store_impls;

#[cfg(test)]
mod tests;
