//! The SQLite store against the conformance suite, and what only this backend does: disk
//! full, reopening, the write queue's byte budget.

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("chapar.db")).expect("open");
    crate::conformance::run_all(&store).await;
}

#[test]
fn a_full_disk_is_reported_as_such() {
    let full =
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL), None);
    assert_eq!(sql(full), StoreError::Full);
    let other = rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
        None,
    );
    assert!(matches!(sql(other), StoreError::Backend(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_wait_for_room_in_the_queues_byte_budget_and_all_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteStore::open(&dir.path().join("chapar.db")).expect("open"));
    // Larger than the whole budget: charged as all of it, never waiting forever.
    assert_eq!(store.write_sized(usize::MAX, |_| Ok(1)).await, Ok(1));
    // Many jobs of a third of the budget each: at most three queue at once, all run.
    let (started, ran) = (Instant::now(), Arc::new(AtomicUsize::new(0)));
    let jobs: Vec<_> = (0..12)
        .map(|_| {
            let (store, ran) = (store.clone(), ran.clone());
            tokio::spawn(async move {
                store
                    .write_sized(WRITE_QUEUE_BYTES_MAX / 3, move |_| {
                        // The writer is slow: the queue fills up behind it.
                        std::thread::sleep(Duration::from_millis(5));
                        ran.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    })
                    .await
            })
        })
        .collect();
    for job in jobs {
        assert_eq!(job.await.expect("joined"), Ok(()));
    }
    assert_eq!(ran.load(Ordering::SeqCst), 12);
    assert_eq!(
        store.queued_bytes.available_permits(),
        WRITE_QUEUE_BYTES_MAX,
        "every byte came back"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("chapar.db");
    {
        let store = SqliteStore::open(&path).expect("open");
        crate::conformance::seed_account(&store, "persist", 1).await;
    }
    let store = SqliteStore::open(&path).expect("reopen");
    assert!(store.account("persist").await.expect("read").is_some());
}
