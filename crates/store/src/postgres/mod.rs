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
/// Longest wait for a lock (a group's, or a row's): past it the call fails as unavailable
/// instead of waiting on a node that hangs while holding one.
pub const LOCK_WAIT: Duration = Duration::from_secs(10);
/// Longest a statement runs before the database cancels it.
pub const STATEMENT_TIME_MAX: Duration = Duration::from_secs(30);
/// Longest a transaction may sit idle (its node stalled) before the database ends it and
/// releases its locks.
pub const IDLE_IN_TRANSACTION_MAX: Duration = Duration::from_secs(30);
/// TCP keepalive idle time on both ends, so a vanished node's connection (and its locks) is
/// noticed in about a minute, not hours.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);

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
        // A lock or statement past its time: something holds on too long; say so, do not pile
        // up more waiters.
        Some(code)
            if *code == SqlState::LOCK_NOT_AVAILABLE || *code == SqlState::QUERY_CANCELED =>
        {
            tracing::warn!(error = %describe(&e), "store: database wait timed out");
            Failure::Store(StoreError::Unavailable)
        }
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

/// A retry for a unique violation (a concurrent writer took the same `MAX + 1` id: PostgreSQL
/// reports that as 40001 under SERIALIZABLE, CockroachDB and YugabyteDB as 23505), else as
/// [`pg`].
fn retry_on_unique(e: tokio_postgres::Error) -> Failure {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        Failure::Retry(e)
    } else {
        pg(e)
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

/// Runs an `INSERT ... SELECT MAX(id) + 1 ... RETURNING id`: a concurrent writer taking the
/// same id is a conflict to retry, whatever the database calls it ([`retry_on_unique`]).
async fn insert_numbered(tx: &Tx<'_>, sql: &str, params: Params<'_>) -> Result<Row, Failure> {
    let statement = tx.prepare_cached(sql).await.map_err(pg)?;
    tx.query_one(&statement, params)
        .await
        .map_err(retry_on_unique)
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
///
/// With `lock = Some(key)`, the connection first takes the session advisory lock `key` and
/// holds it until the transaction has ended: the transaction's snapshot is then taken after
/// the lock is granted, so writers of one key queue instead of all but one failing with
/// 40001 (a row lock taken inside the transaction comes after its snapshot, and would).
///
/// A refusal (`Failure::Store`) rolls back and is answered from the transaction's reads: it
/// writes nothing, so no invariant rests on it, and the caller's next try sees fresh state.
macro_rules! serializable {
    ($store:expr, |$tx:ident| $body:expr) => {
        serializable!($store, lock = None, |$tx| $body)
    };
    ($store:expr, lock = $lock:expr, |$tx:ident| $body:expr) => {{
        let store: &PgStore = $store;
        let lock: Option<i64> = $lock;
        let mut attempt = 0u32;
        loop {
            let mut client = store.client().await?;
            let locked = match lock {
                Some(key) => super::lock_session(&client, key).await.map(|()| Some(key)),
                None => Ok(None),
            };
            let held = locked.as_ref().ok().copied().flatten();
            let outcome: Result<_, Failure> = match locked {
                Err(e) => Err(e),
                Ok(_) => {
                    async {
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
                    .await
                }
            };
            if let Some(key) = held {
                super::unlock_session(client, key).await;
            } else {
                // Back to the pool before any pause: backing-off writers must not hold every
                // connection.
                drop(client);
            }
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

/// Takes the session advisory lock `key` on `client` (waiting at most `LOCK_WAIT`).
async fn lock_session(client: &deadpool_postgres::Object, key: i64) -> Result<(), Failure> {
    let statement = client
        .prepare_cached("SELECT pg_advisory_lock($1)")
        .await
        .map_err(pg)?;
    client.execute(&statement, &[&key]).await.map_err(pg)?;
    Ok(())
}

/// Releases the session advisory lock `key`; a connection that cannot say it released it is
/// closed rather than returned to the pool still holding it.
async fn unlock_session(client: deadpool_postgres::Object, key: i64) {
    let released = match client.prepare_cached("SELECT pg_advisory_unlock($1)").await {
        Ok(statement) => client.execute(&statement, &[&key]).await.is_ok(),
        Err(_) => false,
    };
    if !released {
        tracing::warn!("store: closing a connection that may still hold a group lock");
        drop(deadpool_postgres::Object::take(client));
    }
}

/// The advisory-lock key of a group: 64 bits of a hash of its id (two groups sharing one
/// only queue behind each other).
fn group_lock_key(group: GroupId) -> i64 {
    use sha2::{Digest as _, Sha256};
    let digest = Sha256::new()
        .chain_update(b"chapar group lock")
        .chain_update(group.as_bytes())
        .finalize();
    let mut key = [0u8; 8];
    key.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(key)
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

/// The pause before attempt `attempt + 1`: 2, 4, 8 ... ms up to 64 ms, each up to half again
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
    shard_hasher: std::collections::hash_map::RandomState,
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
        let ms = |d: Duration| d.as_millis();
        config
            .options(format!(
                "-c synchronous_commit=on -c lock_timeout={} -c statement_timeout={} \
                 -c idle_in_transaction_session_timeout={} -c tcp_keepalives_idle={} \
                 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3",
                ms(LOCK_WAIT),
                ms(STATEMENT_TIME_MAX),
                ms(IDLE_IN_TRANSACTION_MAX),
                KEEPALIVE_IDLE.as_secs(),
            ))
            .application_name("chapar")
            .connect_timeout(POOL_WAIT)
            .keepalives(true)
            .keepalives_idle(KEEPALIVE_IDLE);
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
            shard_hasher: std::collections::hash_map::RandomState::new(),
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

    /// The local lock that queues appends to `group` on this node: chosen by a keyed hash of
    /// the whole id, so nobody can pick group ids that share a victim's lock.
    fn group_lock(&self, group: GroupId) -> &tokio::sync::Mutex<()> {
        use std::hash::BuildHasher as _;
        let shard = self.shard_hasher.hash_one(group) as usize;
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
