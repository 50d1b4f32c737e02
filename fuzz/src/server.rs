//! A real `chapar-server` service over a SQLite store in a temporary directory (in `/dev/shm`
//! where there is one, so the store's fsyncs cost next to nothing; see [`stores_dir`]), one
//! Tokio runtime per process, and identities the harness makes itself (account and device
//! keys from fixed seeds), so that a session can log in without an engine.

use std::sync::{Arc, OnceLock};

use chapar_server::api::InProcess;
use chapar_server::service::Service;
use chapar_store::sqlite::SqliteStore;
use chapar_types::signed::{challenge_payload, device_cert_payload};
use chapar_types::{DeviceId, Username};
use chapar_wire::v1::{self, client_frame::Request, response::Result as Reply};
use ed25519_dalek::{Signer as _, SigningKey};

/// The process's runtime: one thread, created once (a runtime per input would cost more than
/// most inputs).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a Tokio runtime")
    })
}

/// Where stores are made: `$CHAPAR_FUZZ_STORES` (`run.sh` sets it, and removes it after the
/// run: the store of a process's last input is still there when libFuzzer exits), else
/// `/dev/shm`, else `/tmp`.
fn stores_dir() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("CHAPAR_FUZZ_STORES") {
        return dir.into();
    }
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.into()
    } else {
        std::env::temp_dir()
    }
}

/// A service on its own store; the directory goes when this is dropped.
pub struct Server {
    /// The service.
    pub service: Arc<Service<SqliteStore>>,
    // Dropped after the service (fields drop in order).
    _dir: tempfile::TempDir,
}

impl Server {
    /// A fresh service on an empty store: the test limits, with registration's proof of work
    /// free (0 bits), so the harness registers without hashing.
    pub fn open() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("chapar-fuzz-")
            .tempdir_in(stores_dir())
            .expect("a temporary directory");
        let mut config = chapar_server::ServerConfig::new(
            "127.0.0.1:0".parse().expect("an address"),
            dir.path().join("server"),
        );
        config.limits = chapar_server::Limits::for_tests();
        config.limits.registration_pow_bits = 0;
        // The store's writer thread and channels are made inside the runtime.
        let _entered = runtime().enter();
        let service = chapar_server::open_service(&config).expect("the service opens");
        Self { service, _dir: dir }
    }

    /// A fresh connection to the service, driven by calls.
    pub fn connect(&self) -> InProcess<SqliteStore> {
        InProcess::new(self.service.clone())
    }
}

/// An account with one device, made by the harness (not by an engine).
pub struct Identity {
    /// The account's name.
    pub username: &'static str,
    /// Its device.
    pub device: DeviceId,
    account_key: SigningKey,
    device_key: SigningKey,
}

/// The harness's first account (device 1).
pub fn alice() -> Identity {
    Identity::new("alice", 1)
}

/// The harness's second account (device 2).
pub fn bob() -> Identity {
    Identity::new("bob", 2)
}

/// A `Hello` frame.
pub fn hello_frame(request_id: u64) -> Vec<u8> {
    frame(
        request_id,
        Request::Hello(v1::Hello {
            protocol_version: chapar_wire::PROTOCOL_VERSION,
            capabilities: Vec::new(),
            client_agent: "chapar-fuzz".into(),
        }),
    )
}

/// Encodes a client frame.
pub fn frame(request_id: u64, request: Request) -> Vec<u8> {
    chapar_wire::encode(&v1::ClientFrame {
        request_id,
        request: Some(request),
    })
}

/// The result in an encoded server frame, if it is a response.
pub fn reply_of(bytes: &[u8]) -> Option<Reply> {
    match chapar_wire::decode::<v1::ServerFrame>(bytes).ok()?.kind? {
        v1::server_frame::Kind::Response(response) => response.result,
        v1::server_frame::Kind::Push(_) => None,
    }
}

/// What a login answer signs over: a connection's challenge and the server's identity.
pub struct Challenge {
    /// The connection's random challenge.
    pub nonce: Vec<u8>,
    /// The server's identity.
    pub server_id: Vec<u8>,
}

/// The challenge in an encoded `HelloOk` response.
pub fn challenge_of(bytes: &[u8]) -> Option<Challenge> {
    match reply_of(bytes)? {
        Reply::HelloOk(ok) => Some(Challenge {
            nonce: ok.challenge,
            server_id: ok.server_id,
        }),
        _ => None,
    }
}

impl Identity {
    fn new(username: &'static str, device: u64) -> Self {
        let seed = |label: u8| {
            let mut seed = [label; 32];
            seed[..username.len()].copy_from_slice(username.as_bytes());
            seed
        };
        Self {
            username,
            device: DeviceId(device),
            account_key: SigningKey::from_bytes(&seed(1)),
            device_key: SigningKey::from_bytes(&seed(2)),
        }
    }

    fn answer(&self, challenge: &Challenge) -> Vec<u8> {
        self.device_key
            .sign(&challenge_payload(
                &challenge.nonce,
                self.device,
                &challenge.server_id,
            ))
            .to_bytes()
            .to_vec()
    }

    /// A `Register` frame answering `challenge`. The key packages are opaque bytes: the
    /// server never parses MLS.
    pub fn register_frame(&self, request_id: u64, challenge: &Challenge) -> Vec<u8> {
        let username = Username::parse(self.username).expect("a valid username");
        let device_key = self.device_key.verifying_key().to_bytes().to_vec();
        let account_signature = self
            .account_key
            .sign(&device_cert_payload(&username, self.device, &device_key))
            .to_bytes()
            .to_vec();
        frame(
            request_id,
            Request::Register(v1::Register {
                username: self.username.into(),
                account_key: self.account_key.verifying_key().to_bytes().to_vec(),
                device: Some(v1::DeviceCert {
                    device_id: self.device.0,
                    device_key,
                    account_signature,
                }),
                challenge_signature: self.answer(challenge),
                key_packages: vec![vec![0x4b; 64], vec![0x4c; 64]],
                last_resort_key_package: vec![0x4d; 64],
                sealed_name: Vec::new(),
                proof_of_work: 0,
                invite_code: String::new(),
            }),
        )
    }

    /// An `Authenticate` frame answering `challenge`.
    pub fn authenticate_frame(&self, request_id: u64, challenge: &Challenge) -> Vec<u8> {
        frame(
            request_id,
            Request::Authenticate(v1::Authenticate {
                device_id: self.device.0,
                challenge_signature: self.answer(challenge),
            }),
        )
    }

    /// Says hello on `conn` and, if `register`, registers this identity there. Panics if the
    /// server refuses: the harness's own requests are valid.
    pub async fn greet(&self, conn: &mut InProcess<SqliteStore>, register: bool) {
        let hello = conn.request(&hello_frame(1)).await;
        let challenge = challenge_of(&hello).expect("the server answers Hello with HelloOk");
        if register {
            let reply = conn.request(&self.register_frame(2, &challenge)).await;
            assert!(
                matches!(reply_of(&reply), Some(Reply::AuthOk(_))),
                "the harness's registration of {} is refused: {:?}",
                self.username,
                reply_of(&reply)
            );
        }
    }
}
