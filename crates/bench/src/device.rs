//! Simulated devices: keys, registration, and (end-to-end mode) real MLS state in memory.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use anyhow::bail;
use chapar_crypto::identity::{self, SecretKey};
use chapar_crypto::mls::{self, DeviceIdentity, DeviceSigner, MlsGroup};
use chapar_types::{DeviceId, GroupId, Username};
use chapar_wire::v1::{self, client_frame::Request, response::Result as Reply};
use openmls_rust_crypto::OpenMlsRustCrypto;
use rand::RngCore;
use sha2::Digest as _;

use crate::conn::{BenchConn, Handler};

/// Real MLS state of one device (end-to-end mode).
pub struct Mls {
    /// Crypto and in-memory storage.
    pub provider: OpenMlsRustCrypto,
    /// The device's signer.
    pub signer: DeviceSigner,
    /// The group it is in.
    pub group: Mutex<Option<MlsGroup>>,
}

/// One simulated device with its connection.
pub struct Device {
    /// The account.
    pub username: String,
    /// Device id.
    pub id: DeviceId,
    /// Device key, to log in again on other connections.
    pub key: SecretKey,
    /// Connection to the server.
    pub conn: BenchConn,
    /// MLS state in end-to-end mode.
    pub mls: Option<Mls>,
}

/// The n-th of many loopback source addresses (127.0.1.1, 127.0.1.2, ...), so that many
/// connections are not limited to one address's ephemeral port range.
pub fn source_address(n: usize, spread: usize) -> Option<IpAddr> {
    if spread <= 1 {
        return None;
    }
    let k = (n % spread) as u8;
    Some(IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1 + k)))
}

/// Registers a fresh account `name` with one device and returns it connected and logged in.
pub async fn register(
    server: SocketAddr,
    name: &str,
    e2e: bool,
    handler: Handler,
) -> anyhow::Result<Device> {
    let mut rng = rand::thread_rng();
    let (account, key, id) = (
        SecretKey::generate(&mut rng),
        SecretKey::generate(&mut rng),
        DeviceId(rng.next_u64()),
    );
    let username = Username::parse(name).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mls = e2e.then(|| Mls {
        provider: OpenMlsRustCrypto::default(),
        signer: DeviceSigner::certified(
            DeviceIdentity {
                username: username.clone(),
                device: id,
            },
            &key,
            &account,
        ),
        group: Mutex::new(None),
    });
    let (key_packages, last_resort) = match &mls {
        Some(m) => (
            vec![mls::new_key_package(&m.provider, &m.signer, false)?],
            mls::new_key_package(&m.provider, &m.signer, true)?,
        ),
        None => (vec![vec![1; 64]], vec![2; 64]),
    };
    let conn = BenchConn::open(server, None, handler).await?;
    let reply = conn
        .request(Request::Register(v1::Register {
            username: name.into(),
            account_key: account.public().to_vec(),
            device: Some(v1::DeviceCert {
                device_id: id.0,
                device_key: key.public().to_vec(),
                account_signature: identity::certify_device(&account, &username, id, &key.public()),
            }),
            challenge_signature: identity::answer_challenge(
                &key,
                &conn.challenge,
                id,
                &conn.server_id,
            ),
            key_packages,
            last_resort_key_package: last_resort,
            sealed_name: Vec::new(),
            proof_of_work: chapar_types::pow::solve(
                &conn.challenge,
                name,
                conn.registration_pow_bits,
            ),
            invite_code: String::new(),
        }))
        .await?;
    if !matches!(reply, Reply::AuthOk(_)) {
        bail!("expected AuthOk");
    }
    Ok(Device {
        username: name.to_owned(),
        id,
        key,
        conn,
        mls,
    })
}

/// Opens another connection for `device` from `source` and logs it in.
pub async fn login(
    server: SocketAddr,
    source: Option<IpAddr>,
    device: &Device,
    handler: Handler,
) -> anyhow::Result<BenchConn> {
    let conn = BenchConn::open(server, source, handler).await?;
    let reply = conn
        .request(Request::Authenticate(v1::Authenticate {
            device_id: device.id.0,
            challenge_signature: identity::answer_challenge(
                &device.key,
                &conn.challenge,
                device.id,
                &conn.server_id,
            ),
        }))
        .await?;
    if !matches!(reply, Reply::AuthOk(_)) {
        bail!("expected AuthOk");
    }
    Ok(conn)
}

/// Makes a group of `members` (the first one creates it): real MLS in end-to-end mode, an opaque
/// stand-in commit otherwise. Returns the group id and the epoch to send in.
pub async fn form_group(members: &[Arc<Device>]) -> anyhow::Result<(GroupId, u64)> {
    let Some(creator) = members.first() else {
        bail!("empty group")
    };
    let mut id = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut id);
    let group = GroupId(id);
    creator
        .conn
        .request(Request::CreateGroup(v1::CreateGroup {
            group_id: id.to_vec(),
        }))
        .await?;
    let added: Vec<u64> = members[1..].iter().map(|m| m.id.0).collect();
    // A device is added only with a key package claimed from the server (it checks).
    let mut claimed = Vec::with_capacity(added.len());
    for member in &members[1..] {
        let Reply::KeyPackages(reply) = creator
            .conn
            .request(Request::ClaimKeyPackages(v1::ClaimKeyPackages {
                username: member.username.clone(),
                devices: vec![member.id.0],
            }))
            .await?
        else {
            bail!("expected key packages for {}", member.username)
        };
        let Some(package) = reply.devices.into_iter().next() else {
            bail!("no key package left for {}", member.username)
        };
        claimed.push(package.key_package);
    }
    let added_key_packages: Vec<Vec<u8>> = claimed
        .iter()
        .map(|kp| sha2::Sha256::digest(kp).to_vec())
        .collect();
    let (commit, welcome) = match &creator.mls {
        Some(m) => {
            let mut g = mls::create_group(&m.provider, &m.signer, group)?;
            let packages = claimed
                .iter()
                .map(|kp| Ok(mls::verify_key_package(&m.provider, kp)?))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let out = mls::add_members(&mut g, &m.provider, &m.signer, packages)?;
            mls::merge_pending_commit(&mut g, &m.provider)?;
            let welcome = out.welcome.clone().unwrap_or_default();
            for member in &members[1..] {
                let theirs = member
                    .mls
                    .as_ref()
                    .ok_or_else(|| anyhow::anyhow!("mixed modes"))?;
                let joined =
                    mls::join_group(&theirs.provider, group, &welcome, &mut trust_every_leaf)?;
                *theirs
                    .group
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))? = Some(joined);
            }
            *m.group.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = Some(g);
            (out.commit, welcome)
        }
        None => (vec![0xC0; 256], vec![0xEE; 256]),
    };
    if !added.is_empty() {
        creator
            .conn
            .request(Request::SubmitCommit(v1::SubmitCommit {
                group_id: id.to_vec(),
                epoch: 0,
                seen_seq: 0,
                commit,
                welcome,
                added_devices: added,
                removed_devices: vec![],
                added_key_packages,
            }))
            .await?;
    }
    Ok((group, 1))
}

/// The payload a sender puts on the wire: `plain` as is (server-only mode) or encrypted.
pub fn seal(device: &Device, plain: &[u8]) -> anyhow::Result<Vec<u8>> {
    match &device.mls {
        None => Ok(plain.to_vec()),
        Some(m) => {
            let mut guard = m.group.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            let g = guard.as_mut().ok_or_else(|| anyhow::anyhow!("no group"))?;
            Ok(mls::encrypt(g, &m.provider, &m.signer, plain)?)
        }
    }
}

/// The load tool does not authenticate leaves: it measures the server, and every member is
/// its own. (What checking costs a client is in the micro-benchmarks.)
fn trust_every_leaf(_: &mls::GroupMember) -> Result<(), chapar_crypto::CryptoError> {
    Ok(())
}

/// The plaintext of a received payload: as is, or decrypted.
pub fn open(mls_state: Option<&Mls>, payload: &[u8]) -> Option<Vec<u8>> {
    match mls_state {
        None => Some(payload.to_vec()),
        Some(m) => {
            let mut guard = m.group.lock().ok()?;
            let g = guard.as_mut()?;
            match mls::process(g, &m.provider, payload, &mut trust_every_leaf).ok()? {
                mls::Incoming::Application { plaintext, .. } => Some(plaintext),
                _ => None,
            }
        }
    }
}

/// A 200-byte payload that starts with the scheduled send time and a message counter.
pub fn stamped_payload(scheduled_ns: u64, counter: u64, size: usize) -> Vec<u8> {
    let mut p = vec![0x5A; size.max(16)];
    p[..8].copy_from_slice(&scheduled_ns.to_be_bytes());
    p[8..16].copy_from_slice(&counter.to_be_bytes());
    p
}

/// Reads the scheduled send time from a stamped payload.
pub fn stamp_of(plain: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(plain.get(..8)?.try_into().ok()?))
}

/// A unique 16-byte message id from a device id and a counter.
pub fn message_id(device: DeviceId, counter: u64) -> Vec<u8> {
    let mut id = Vec::with_capacity(16);
    id.extend_from_slice(&device.0.to_be_bytes());
    id.extend_from_slice(&counter.to_be_bytes());
    id
}
