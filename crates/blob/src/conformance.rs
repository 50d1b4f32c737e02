//! The conformance suite every [`BlobStore`] backend must pass, unchanged.
//!
//! Each check uses fresh random ids, so the suite runs against an empty or a shared store. A
//! backend's own test calls [`run_all`]; failures panic with what was expected.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test suite: a panic is the report

use bytes::Bytes;
use futures_util::StreamExt;

use crate::*;

/// Runs every check.
pub async fn run_all<B: BlobStore + ?Sized>(store: &B) {
    appends_commit_finalize_and_read_back(store).await;
    uncommitted_bytes_are_discarded(store).await;
    partial_blobs_are_not_readable_and_offsets_are_checked(store).await;
    finalize_is_idempotent_and_zero_length_works(store).await;
    concurrent_finalizes_all_succeed(store).await;
    deletes_and_listings(store).await;
}

fn fresh_id() -> BlobId {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&t.to_be_bytes());
    id[8..].copy_from_slice(&NEXT.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    BlobId(id)
}

/// Deterministic bytes that differ at every offset a test might confuse.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(u32::from(seed)) as u8)
        .collect()
}

async fn append_all<B: BlobStore + ?Sized>(
    store: &B,
    id: BlobId,
    offset: u64,
    data: &[u8],
    chunk: usize,
) -> u64 {
    let mut appender = store.append(id, offset).await.expect("open append");
    for piece in data.chunks(chunk.max(1)) {
        appender
            .write(Bytes::copy_from_slice(piece))
            .await
            .expect("write");
    }
    let committed = appender.commit().await.expect("commit");
    assert_eq!(committed.write_error, None);
    committed.length
}

async fn read_all<B: BlobStore + ?Sized>(store: &B, id: BlobId, range: Range<u64>) -> Vec<u8> {
    let mut stream = store.read(id, range.clone()).await.expect("read");
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("read chunk");
        assert!(
            chunk.len() <= READ_CHUNK_BYTES_MAX,
            "a read chunk of {} bytes is over the bound",
            chunk.len()
        );
        out.extend_from_slice(&chunk);
    }
    out
}

async fn appends_commit_finalize_and_read_back<B: BlobStore + ?Sized>(store: &B) {
    let id = fresh_id();
    let data = pattern(3 * 1024 * 1024 + 123, 1);
    store.create(id).await.expect("create");
    // Three appends of different chunk sizes, as three resumed PATCH requests would be.
    let first = append_all(store, id, 0, &data[..1_000_000], 65_536).await;
    assert_eq!(first, 1_000_000);
    let second = append_all(store, id, first, &data[1_000_000..2_500_000], 7_777).await;
    assert_eq!(second, 2_500_000);
    let third = append_all(store, id, second, &data[2_500_000..], 1 << 20).await;
    assert_eq!(third, data.len() as u64);
    store.finalize(id, third).await.expect("finalize");

    let len = data.len() as u64;
    assert_eq!(read_all(store, id, 0..len).await, data, "whole blob");
    assert_eq!(
        read_all(store, id, 10..20).await,
        &data[10..20],
        "inner range"
    );
    assert_eq!(
        read_all(store, id, len - 5..len).await,
        &data[data.len() - 5..],
        "tail"
    );
    assert!(read_all(store, id, 7..7).await.is_empty(), "empty range");
    assert!(
        store.read(id, 0..len + 1).await.is_err(),
        "a range past the end is refused"
    );
}

async fn uncommitted_bytes_are_discarded<B: BlobStore + ?Sized>(store: &B) {
    let id = fresh_id();
    store.create(id).await.expect("create");
    let good = append_all(store, id, 0, b"committed-", 4).await;
    // An append abandoned without commit (a chunk whose checksum failed, or a cut request).
    let mut abandoned = store.append(id, good).await.expect("open append");
    abandoned
        .write(Bytes::from(vec![0xEE; 300_000]))
        .await
        .expect("write");
    drop(abandoned);
    // The next append at the committed length replaces whatever the abandoned one left.
    let end = append_all(store, id, good, b"and-more", 3).await;
    assert_eq!(end, 18);
    let stored = list(store).await.into_iter().find(|b| b.id == id);
    assert_eq!(
        stored.map(|b| b.bytes),
        Some(18),
        "the abandoned append's bytes past the committed length are gone"
    );
    // Even leftovers past the last commit vanish at finalize.
    let mut leftover = store.append(id, end).await.expect("open append");
    leftover
        .write(Bytes::from_static(b"JUNK"))
        .await
        .expect("write");
    let _ = leftover.commit().await.expect("commit");
    store.finalize(id, end).await.expect("finalize");
    assert_eq!(read_all(store, id, 0..end).await, b"committed-and-more");
}

async fn partial_blobs_are_not_readable_and_offsets_are_checked<B: BlobStore + ?Sized>(store: &B) {
    let id = fresh_id();
    assert_eq!(
        store.read(fresh_id(), 0..0).await.err(),
        Some(BlobError::NotFound),
        "a blob that never existed"
    );
    store.create(id).await.expect("create");
    append_all(store, id, 0, b"12345", 2).await;
    assert!(
        store.read(id, 0..5).await.is_err(),
        "a partial blob is not readable"
    );
    assert!(
        store.append(id, 9).await.is_err(),
        "an append past what is stored is refused"
    );
    assert!(
        store.append(fresh_id(), 3).await.is_err(),
        "an append past 0 to a missing blob is refused"
    );
    assert!(
        store.finalize(id, 9).await.is_err(),
        "finalizing more than is stored is refused"
    );
    // A lost partial blob is recreated by an append at offset 0.
    let lost = fresh_id();
    assert_eq!(append_all(store, lost, 0, b"again", 5).await, 5);
    store.finalize(lost, 5).await.expect("finalize");
    assert_eq!(read_all(store, lost, 0..5).await, b"again");
}

async fn finalize_is_idempotent_and_zero_length_works<B: BlobStore + ?Sized>(store: &B) {
    let id = fresh_id();
    store.create(id).await.expect("create");
    store.finalize(id, 0).await.expect("finalize empty");
    store.finalize(id, 0).await.expect("finalize again");
    assert!(read_all(store, id, 0..0).await.is_empty());
    assert!(
        store.finalize(id, 4).await.is_err(),
        "finalizing with another length is refused"
    );
}

/// The last PATCH and a HEAD or GET may finish the same upload at the same moment: every one
/// of them must succeed, and the blob must read back whole.
async fn concurrent_finalizes_all_succeed<B: BlobStore + ?Sized>(store: &B) {
    for round in 0..32u8 {
        let id = fresh_id();
        let data = pattern(1_000 + usize::from(round), round);
        let len = data.len() as u64;
        store.create(id).await.expect("create");
        append_all(store, id, 0, &data, 4_096).await;
        let results = futures_util::future::join_all((0..4).map(|_| store.finalize(id, len))).await;
        for result in results {
            assert_eq!(
                result,
                Ok(()),
                "round {round}: a concurrent finalize failed"
            );
        }
        assert_eq!(read_all(store, id, 0..len).await, data, "round {round}");
        store.delete(id).await.expect("delete");
    }
}

async fn deletes_and_listings<B: BlobStore + ?Sized>(store: &B) {
    let (partial, complete) = (fresh_id(), fresh_id());
    store.create(partial).await.expect("create");
    append_all(store, partial, 0, b"half", 4).await;
    store.create(complete).await.expect("create");
    append_all(store, complete, 0, b"whole", 5).await;
    store.finalize(complete, 5).await.expect("finalize");

    let listed = list(store).await;
    let find = |id| listed.iter().find(|b: &&ListedBlob| b.id == id).cloned();
    assert_eq!(
        find(partial).map(|b| b.complete),
        Some(false),
        "partial blob listed"
    );
    assert_eq!(
        find(complete).map(|b| (b.complete, b.bytes)),
        Some((true, 5)),
        "complete blob listed with its size"
    );

    store.delete(partial).await.expect("delete partial");
    store.delete(complete).await.expect("delete complete");
    store
        .delete(complete)
        .await
        .expect("deleting twice is fine");
    store
        .delete(fresh_id())
        .await
        .expect("deleting a missing blob is fine");
    assert_eq!(
        store.read(complete, 0..5).await.err(),
        Some(BlobError::NotFound)
    );
    let listed = list(store).await;
    assert!(
        !listed.iter().any(|b| b.id == partial || b.id == complete),
        "deleted blobs are not listed"
    );
}

async fn list<B: BlobStore + ?Sized>(store: &B) -> Vec<ListedBlob> {
    let mut listing = store.list();
    let mut out = Vec::new();
    while let Some(item) = listing.next().await {
        out.push(item.expect("listing"));
    }
    out
}
