//! Micro-benchmarks (divan): MLS operations by group size, the wire codec, the SQLite store's
//! append and range read, and file chunk encryption.
//!
//! Group sizes go up to 10,000 members; building those groups takes a while once per size.
//! `CHAPAR_BENCH_MAX_MEMBERS=100` caps the sizes (CI's smoke run uses it).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)] // benchmark code

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use chapar_crypto::identity::SecretKey;
use chapar_crypto::mls::{self, DeviceIdentity, DeviceSigner, MlsGroup, VerifiedKeyPackage};
use chapar_types::{DeviceId, GroupId, Username};
use divan::Bencher;
use openmls_rust_crypto::OpenMlsRustCrypto;

fn main() {
    divan::main();
}

const SIZES: &[usize] = &[2, 100, 1_000, 10_000];

fn capped(n: usize) -> bool {
    let cap = std::env::var("CHAPAR_BENCH_MAX_MEMBERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX);
    n > cap
}

/// One account key certifies every benchmark device (the cost of checking a leaf is the
/// same whichever account it names).
fn account() -> &'static SecretKey {
    static KEY: OnceLock<SecretKey> = OnceLock::new();
    KEY.get_or_init(|| SecretKey::generate(&mut rand::thread_rng()))
}

fn signer(i: usize) -> DeviceSigner {
    let key = SecretKey::generate(&mut rand::thread_rng());
    DeviceSigner::certified(
        DeviceIdentity {
            username: Username::parse(&format!("user{i}")).unwrap(),
            device: DeviceId(i as u64),
        },
        &key,
        account(),
    )
}

/// The check a client makes of every leaf a welcome or commit brings in.
fn authenticate(member: &mls::GroupMember) -> Result<(), chapar_crypto::CryptoError> {
    member.verify(&account().public())
}

/// A group of `n` members as member 0 (the committer) and member 1 (a receiver) see it.
struct Fixture {
    alice: (OpenMlsRustCrypto, DeviceSigner, MlsGroup),
    bob: (OpenMlsRustCrypto, DeviceSigner, MlsGroup),
    spare: Option<VerifiedKeyPackage>,
    spare_bytes: Vec<u8>,
}

fn fixture(n: usize) -> Arc<Mutex<Fixture>> {
    static CACHE: OnceLock<Mutex<HashMap<usize, Arc<Mutex<Fixture>>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Mutex::default);
    if let Some(f) = cache.lock().unwrap().get(&n) {
        return f.clone();
    }
    let started = std::time::Instant::now();
    let pa = OpenMlsRustCrypto::default();
    let sa = signer(0);
    let mut ga = mls::create_group(&pa, &sa, GroupId([n as u8; 16])).unwrap();
    // Everyone but bob shares one provider: their private keys are irrelevant here.
    let others = OpenMlsRustCrypto::default();
    let pb = OpenMlsRustCrypto::default();
    let sb = signer(1);
    let mut packages = vec![
        mls::verify_key_package(&pa, &mls::new_key_package(&pb, &sb, false).unwrap()).unwrap(),
    ];
    for i in 2..n {
        let kp = mls::new_key_package(&others, &signer(i), false).unwrap();
        packages.push(mls::verify_key_package(&pa, &kp).unwrap());
    }
    let out = mls::add_members(&mut ga, &pa, &sa, packages).unwrap();
    mls::merge_pending_commit(&mut ga, &pa).unwrap();
    let gb = mls::join_group(
        &pb,
        GroupId([n as u8; 16]),
        &out.welcome.unwrap(),
        &mut authenticate,
    )
    .unwrap();
    let spare_signer = signer(n + 1);
    let spare_bytes = mls::new_key_package(&others, &spare_signer, false).unwrap();
    let spare = Some(mls::verify_key_package(&pa, &spare_bytes).unwrap());
    eprintln!(
        "(built a {n}-member group in {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    let f = Arc::new(Mutex::new(Fixture {
        alice: (pa, sa, ga),
        bob: (pb, sb, gb),
        spare,
        spare_bytes,
    }));
    cache.lock().unwrap().insert(n, f.clone());
    f
}

mod mls_ops {
    use super::*;

    #[divan::bench(sample_count = 10, sample_size = 1)]
    fn create_group(bencher: Bencher) {
        let provider = OpenMlsRustCrypto::default();
        let s = signer(0);
        let mut i = 0u8;
        bencher.bench_local(|| {
            i = i.wrapping_add(1);
            let mut id = [0u8; 16];
            id[0] = i;
            id[1..9].copy_from_slice(&rand::random::<u64>().to_be_bytes());
            mls::create_group(&provider, &s, GroupId(id)).unwrap()
        });
    }

    /// One member added to an n-member group (commit built, then discarded).
    #[divan::bench(args = SIZES, sample_count = 10, sample_size = 1)]
    fn add_member(bencher: Bencher, n: usize) {
        if capped(n) {
            return;
        }
        let f = fixture(n);
        let mut f = f.lock().unwrap();
        bencher.bench_local(|| {
            let kp = f.spare.take().unwrap();
            let (p, s, g) = &mut f.alice;
            let out = mls::add_members(g, p, s, vec![kp]).unwrap();
            mls::discard_pending_commit(g, p).unwrap();
            let again = mls::verify_key_package(&f.alice.0, &f.spare_bytes).unwrap();
            f.spare = Some(again);
            out.commit.len()
        });
    }

    /// A commit with an update path (the expensive kind) in an n-member group, then discarded.
    #[divan::bench(args = SIZES, sample_count = 10, sample_size = 1)]
    fn commit_update(bencher: Bencher, n: usize) {
        if capped(n) {
            return;
        }
        let f = fixture(n);
        let mut f = f.lock().unwrap();
        let (p, s, g) = &mut f.alice;
        bencher.bench_local(|| {
            let out = mls::update_own_keys(g, p, s).unwrap();
            mls::discard_pending_commit(g, p).unwrap();
            out.commit.len()
        });
    }

    /// Removing one member from an n-member group (commit built, then discarded).
    #[divan::bench(args = SIZES, sample_count = 10, sample_size = 1)]
    fn remove_member(bencher: Bencher, n: usize) {
        if capped(n) || n < 2 {
            return;
        }
        let f = fixture(n);
        let mut f = f.lock().unwrap();
        let (p, s, g) = &mut f.alice;
        bencher.bench_local(|| {
            let out = mls::remove_devices(g, p, s, &[DeviceId(1)]).unwrap();
            mls::discard_pending_commit(g, p).unwrap();
            out.commit.len()
        });
    }

    /// Processing (verifying and merging) a commit that adds one member, as a receiver does.
    #[divan::bench(args = SIZES, sample_count = 5, sample_size = 1)]
    fn process_commit(bencher: Bencher, n: usize) {
        if capped(n) {
            return;
        }
        // A fresh pair of views per size, since processing advances the receiver's epoch.
        let f = fixture(n);
        let mut f = f.lock().unwrap();
        let f = &mut *f;
        bencher
            .with_inputs(|| {
                let kp = mls::verify_key_package(&f.alice.0, &f.spare_bytes).unwrap();
                let (p, s, g) = &mut f.alice;
                let out = mls::update_own_keys(g, p, s).unwrap();
                mls::merge_pending_commit(g, p).unwrap();
                drop(kp);
                out.commit
            })
            .bench_local_values(|commit| {
                let (p, _, g) = &mut f.bob;
                mls::process(g, p, &commit, &mut authenticate).unwrap()
            });
    }

    #[divan::bench(args = SIZES, sample_count = 20, sample_size = 50)]
    fn encrypt_200_bytes(bencher: Bencher, n: usize) {
        if capped(n) {
            return;
        }
        let f = fixture(n);
        let mut f = f.lock().unwrap();
        let (p, s, g) = &mut f.alice;
        let plain = [7u8; 200];
        bencher.bench_local(|| mls::encrypt(g, p, s, &plain).unwrap());
    }

    #[divan::bench(args = SIZES, sample_count = 20, sample_size = 50)]
    fn decrypt_200_bytes(bencher: Bencher, n: usize) {
        if capped(n) {
            return;
        }
        let f = fixture(n);
        let mut f = f.lock().unwrap();
        let f = &mut *f;
        let plain = [7u8; 200];
        bencher
            .with_inputs(|| {
                let (p, s, g) = &mut f.alice;
                mls::encrypt(g, p, s, &plain).unwrap()
            })
            .bench_local_values(|ct| {
                let (p, _, g) = &mut f.bob;
                mls::process(g, p, &ct, &mut authenticate).unwrap()
            });
    }
}

mod file_chunks {
    //! Sealing and opening one 1 MiB file chunk (AES-256-GCM, RustCrypto with AES-NI and
    //! CLMUL detected at run time). Divide 1 MiB by the time for the per-core throughput.
    use chapar_crypto::file::{self, CHUNK_BYTES, FileKey};

    #[divan::bench(sample_count = 20, sample_size = 5)]
    fn seal_1mib(bencher: divan::Bencher) {
        let key = FileKey::generate(&mut rand::thread_rng());
        bencher
            .with_inputs(|| {
                // Room for the tag, as the upload path reserves it.
                let mut chunk = Vec::with_capacity(file::SEALED_CHUNK_BYTES);
                chunk.resize(CHUNK_BYTES, 7u8);
                chunk
            })
            .bench_local_values(|mut chunk| {
                file::seal_chunk(&key, 3, false, &mut chunk);
                chunk
            });
    }

    #[divan::bench(sample_count = 20, sample_size = 5)]
    fn open_1mib(bencher: divan::Bencher) {
        let key = FileKey::generate(&mut rand::thread_rng());
        let mut sealed = vec![7u8; CHUNK_BYTES];
        file::seal_chunk(&key, 3, false, &mut sealed);
        bencher
            .with_inputs(|| sealed.clone())
            .bench_local_values(|mut chunk| {
                file::open_chunk(&key, 3, false, &mut chunk).unwrap();
                chunk
            });
    }
}

mod codec {
    use super::*;
    use chapar_wire::v1::{self, client_frame::Request};

    fn frame() -> v1::ClientFrame {
        v1::ClientFrame {
            request_id: 42,
            request: Some(Request::SendMessage(v1::SendMessage {
                group_id: vec![1; 16],
                epoch: 3,
                message_id: vec![2; 16],
                ciphertext: vec![3; 300],
                roster_version: 0,
                ..Default::default()
            })),
        }
    }

    #[divan::bench]
    fn encode_send_message() -> Vec<u8> {
        chapar_wire::encode(divan::black_box(&frame()))
    }

    #[divan::bench]
    fn decode_send_message(bencher: Bencher) {
        let bytes = chapar_wire::encode(&frame());
        bencher.bench(|| chapar_wire::decode::<v1::ClientFrame>(divan::black_box(&bytes)).unwrap());
    }
}

mod store {
    use super::*;
    use chapar_store::sqlite::SqliteStore;
    use chapar_store::{AccountStore, Append, AppendKind, DeviceRecord, LogStore, NewAccount};
    use chapar_types::MessageId;

    struct StoreFixture {
        runtime: tokio::runtime::Runtime,
        store: Arc<SqliteStore>,
        group: GroupId,
        next: std::sync::atomic::AtomicU64,
        _dir: tempfile::TempDir,
    }

    fn fixture() -> &'static StoreFixture {
        static F: OnceLock<StoreFixture> = OnceLock::new();
        F.get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let dir = tempfile::tempdir().unwrap();
            let store = runtime.block_on(async {
                let store = Arc::new(SqliteStore::open(&dir.path().join("bench.db")).unwrap());
                let device = DeviceRecord {
                    device: DeviceId(1),
                    username: "bench".into(),
                    device_key: vec![0; 32],
                    account_signature: vec![0; 64],
                    created_ms: 0,
                    revoked_ms: None,
                    sealed_name: Vec::new(),
                    last_seen_ms: None,
                    revocation_signature: None,
                };
                store
                    .create_account(NewAccount {
                        username: "bench".into(),
                        account_key: vec![0; 32],
                        device,
                        key_packages: vec![],
                        last_resort_key_package: vec![1],
                    })
                    .await
                    .unwrap();
                store
                    .create_group(GroupId([9; 16]), DeviceId(1), 0)
                    .await
                    .unwrap();
                store
            });
            StoreFixture {
                runtime,
                store,
                group: GroupId([9; 16]),
                next: Default::default(),
                _dir: dir,
            }
        })
    }

    fn append(f: &'static StoreFixture) -> impl std::future::Future<Output = ()> {
        let n = f.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&n.to_be_bytes());
        let store = f.store.clone();
        let group = f.group;
        async move {
            store
                .append(Append {
                    group,
                    sender: DeviceId(1),
                    epoch: 0,
                    now_ms: 0,
                    payload: vec![5; 300],
                    kind: AppendKind::Application {
                        roster_version: 0,
                        message_id: MessageId(id),
                    },
                })
                .await
                .unwrap();
        }
    }

    /// One append, waiting for its own fsync (no batching possible).
    #[divan::bench(sample_count = 20, sample_size = 5)]
    fn append_one(bencher: Bencher) {
        let f = fixture();
        bencher.bench(|| f.runtime.block_on(append(f)));
    }

    /// 256 concurrent appends: group commit shares fsyncs among them.
    #[divan::bench(sample_count = 10, sample_size = 1)]
    fn append_256_concurrent(bencher: Bencher) {
        let f = fixture();
        bencher.bench(|| {
            f.runtime.block_on(async {
                let tasks: Vec<_> = (0..256).map(|_| tokio::spawn(append(f))).collect();
                for t in tasks {
                    t.await.unwrap();
                }
            })
        });
    }

    /// Reading a page of 500 entries.
    #[divan::bench(sample_count = 20, sample_size = 5)]
    fn read_500(bencher: Bencher) {
        let f = fixture();
        f.runtime.block_on(async {
            let tasks: Vec<_> = (0..600).map(|_| tokio::spawn(append(f))).collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
        bencher.bench(|| {
            f.runtime
                .block_on(f.store.read_log(f.group, DeviceId(1), 0, 500))
                .unwrap()
                .entries
                .len()
        });
    }
}
