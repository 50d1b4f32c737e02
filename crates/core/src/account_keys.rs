//! The secrets an account's devices share besides the account key: the archive key ring (one
//! key per generation; history and device names are encrypted under the newest) and the public
//! halves of the recovery key (bundles are sealed to it). Kept in the profile, handed to a new
//! device inside the sealed link approval, and sealed to the recovery key on the server.
//!
//! Every sealed item binds what it is and whose it is in its associated data (labels below), so
//! the server cannot move a sealed name to another device or a segment to another group.

use chapar_crypto::seal::{self, SymmetricKey};
use chapar_types::{DeviceId, GroupId, Seq, Username};
use chapar_wire::content::{AccountSecrets, ArchiveKey, RecoveryPublic};
use prost::Message as _;

use crate::CoreError;
use crate::env::Env;
use crate::storage::Tx;

/// Profile key under which the key ring and recovery publics are stored.
const PROFILE_KEY: &str = "account_secrets";
/// Most archive key generations kept (each revocation adds one): about 40 bytes each sealed,
/// so the ring fits in a link approval and a recovery bundle (64 KiB).
pub(crate) const ARCHIVE_KEY_GENERATIONS_MAX: usize = 1000;
/// Low bits of a generation number that are random: two devices rotating at the same moment
/// make different generations, and both keys survive in everyone's ring.
const GENERATION_RANDOM_BITS: u32 = 16;

fn aad(label: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut out = label.as_bytes().to_vec();
    out.push(0);
    for part in parts {
        // Length-prefixed, so no two different part lists give the same bytes.
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// Associated data of an archive segment.
pub(crate) fn segment_aad(
    username: &Username,
    group: GroupId,
    from: Seq,
    through: Seq,
    generation: u32,
) -> Vec<u8> {
    aad(
        "chapar archive segment v1",
        &[
            username.as_str().as_bytes(),
            group.as_bytes(),
            &from.to_be_bytes(),
            &through.to_be_bytes(),
            &generation.to_be_bytes(),
        ],
    )
}

/// Label of the sub-key device names are sealed under.
const DEVICE_NAME_KEY: &str = "chapar device names v1";

/// Associated data of a sealed device name.
fn device_name_aad(username: &Username, device: DeviceId) -> Vec<u8> {
    aad(
        "chapar device name v1",
        &[username.as_str().as_bytes(), &device.0.to_be_bytes()],
    )
}

/// A generation number above `after`: the next count in the high bits, random low bits;
/// none once the count is spent (65,535 rotations).
fn next_generation(after: u32, env: &Env) -> Option<u32> {
    let count = (after >> GENERATION_RANDOM_BITS) + 1;
    (count <= u32::MAX >> GENERATION_RANDOM_BITS).then(|| generation_at(count, env))
}

/// A generation number of rotation `count`, with random low bits.
fn generation_at(count: u32, env: &Env) -> u32 {
    let random = (env.random_u64() as u32) & ((1 << GENERATION_RANDOM_BITS) - 1);
    count << GENERATION_RANDOM_BITS | random
}

/// Associated data of the recovery bundle.
pub(crate) fn recovery_aad(username: &Username) -> Vec<u8> {
    aad("chapar recovery bundle v1", &[username.as_str().as_bytes()])
}

/// Associated data of a link request or approval.
pub(crate) fn link_aad(kind: &str, link_id: &[u8]) -> Vec<u8> {
    aad(kind, &[link_id])
}

/// The account's shared secrets other than the account key.
#[derive(Clone)]
pub(crate) struct AccountKeys {
    /// Archive keys by generation, ascending.
    archive: Vec<(u32, SymmetricKey)>,
    /// Public halves of the recovery key, once one was set.
    pub recovery: Option<RecoveryPublic>,
    /// The account's self group, as the device that made it recorded it.
    pub self_group: Option<GroupId>,
    /// The identity of the server the account is on, pinned when it was made.
    pub server_id: Vec<u8>,
}

impl AccountKeys {
    /// A new account's keys on the server `server_id`: one archive key, no recovery key yet.
    pub fn generate(env: &Env, server_id: Vec<u8>) -> Self {
        Self {
            archive: vec![(generation_at(1, env), env.with_rng(SymmetricKey::generate))],
            recovery: None,
            self_group: None,
            server_id,
        }
    }

    /// Reads the keys from the profile.
    pub fn load(tx: &Tx<'_>) -> Result<Option<Self>, CoreError> {
        let Some(bytes) = tx.value(PROFILE_KEY)? else {
            return Ok(None);
        };
        let secrets = AccountSecrets::decode(bytes.as_slice())
            .map_err(|_| CoreError::Profile("the profile's account keys are damaged".into()))?;
        Self::from_secrets(&secrets).map(Some)
    }

    /// Writes the keys to the profile.
    pub fn save(&self, tx: &Tx<'_>) -> Result<(), CoreError> {
        let secrets = self.to_secrets("", &[]);
        tx.set_value(PROFILE_KEY, &secrets.encode_to_vec())
    }

    /// The keys carried in sealed account secrets.
    pub fn from_secrets(secrets: &AccountSecrets) -> Result<Self, CoreError> {
        let mut archive = Vec::new();
        for key in &secrets.archive_keys {
            archive.push((key.generation, SymmetricKey::from_bytes(&key.key)?));
        }
        archive.sort_by_key(|(generation, _)| *generation);
        // Keep the newest generations.
        let excess = archive.len().saturating_sub(ARCHIVE_KEY_GENERATIONS_MAX);
        archive.drain(..excess);
        if archive.is_empty() {
            return Err(CoreError::Protocol(
                "the account secrets carry no archive key".into(),
            ));
        }
        Ok(Self {
            archive,
            recovery: secrets.recovery.clone(),
            self_group: GroupId::from_slice(&secrets.self_group_id).ok(),
            server_id: secrets.server_id.clone(),
        })
    }

    /// Everything a new device needs, with the account key.
    pub fn to_secrets(&self, username: &str, account_secret_key: &[u8]) -> AccountSecrets {
        AccountSecrets {
            username: username.to_owned(),
            account_secret_key: account_secret_key.to_vec(),
            archive_keys: self
                .archive
                .iter()
                .map(|(generation, key)| ArchiveKey {
                    generation: *generation,
                    key: key.as_bytes().to_vec(),
                })
                .collect(),
            recovery: self.recovery.clone(),
            self_group_id: self
                .self_group
                .map(|g| g.as_bytes().to_vec())
                .unwrap_or_default(),
            server_id: self.server_id.clone(),
        }
    }

    /// Checks that the account these secrets belong to is on the server that presented
    /// `server_id` (a new device learns where its account is from its own devices, not from
    /// the server it dialled).
    pub fn require_server(&mut self, server_id: &[u8]) -> Result<(), CoreError> {
        if self.server_id.is_empty() {
            self.server_id = server_id.to_vec();
        }
        if self.server_id != server_id {
            return Err(crate::Usage::WrongServer.into());
        }
        Ok(())
    }

    /// The newest archive key and its generation.
    pub fn latest(&self) -> (u32, &SymmetricKey) {
        // Never empty: construction refuses an empty ring.
        let (generation, key) = &self.archive[self.archive.len() - 1];
        (*generation, key)
    }

    /// The archive key of one generation.
    pub fn archive_key(&self, generation: u32) -> Option<&SymmetricKey> {
        self.archive
            .iter()
            .find(|(g, _)| *g == generation)
            .map(|(_, key)| key)
    }

    /// Adds a generation (from a rotation); returns false if it was known already. Past
    /// [`ARCHIVE_KEY_GENERATIONS_MAX`] the oldest generation is dropped.
    pub fn add_archive_key(&mut self, generation: u32, key: SymmetricKey) -> bool {
        if self.archive_key(generation).is_some() {
            return false;
        }
        self.archive.push((generation, key));
        self.archive.sort_by_key(|(g, _)| *g);
        if self.archive.len() > ARCHIVE_KEY_GENERATIONS_MAX {
            self.archive.remove(0);
        }
        true
    }

    /// Whether `generation` may join the ring: at most one rotation past the newest known
    /// (devices rotate from the newest they hold, and every rotation reaches every device
    /// through the self group's ordered log). Anything further would stay the newest for good.
    pub fn is_sane_generation(&self, generation: u32) -> bool {
        let count = |g: u32| g >> GENERATION_RANDOM_BITS;
        count(generation) <= count(self.latest().0).saturating_add(1)
    }

    /// A fresh key of a generation strictly above the newest, added to the ring.
    pub fn rotate(&mut self, env: &Env) -> Result<(u32, SymmetricKey), CoreError> {
        let generation = next_generation(self.latest().0, env).ok_or_else(|| {
            CoreError::Profile("the account has used every archive key generation".into())
        })?;
        let key = env.with_rng(SymmetricKey::generate);
        self.add_archive_key(generation, key.clone());
        Ok((generation, key))
    }

    /// Seals a device name: the key generation (4 bytes) and the ciphertext.
    pub fn seal_device_name(
        &self,
        env: &Env,
        username: &Username,
        device: DeviceId,
        name: &str,
    ) -> Vec<u8> {
        let (generation, key) = self.latest();
        let mut out = generation.to_be_bytes().to_vec();
        out.extend_from_slice(&env.with_rng(|rng| {
            seal::encrypt(
                &key.derive(DEVICE_NAME_KEY),
                &device_name_aad(username, device),
                name.as_bytes(),
                &mut *rng,
            )
        }));
        out
    }

    /// Opens a sealed device name (None if it is missing or does not open).
    pub fn open_device_name(
        &self,
        username: &Username,
        device: DeviceId,
        sealed: &[u8],
    ) -> Option<String> {
        let (generation, body) = sealed.split_at_checked(4)?;
        let generation = u32::from_be_bytes(generation.try_into().ok()?);
        let key = self.archive_key(generation)?;
        let name = seal::decrypt(
            &key.derive(DEVICE_NAME_KEY),
            &device_name_aad(username, device),
            body,
        )
        .ok()?;
        String::from_utf8(name).ok()
    }

    /// Seals the account's secrets to the recovery key's public half.
    pub fn seal_recovery_bundle(
        &self,
        env: &Env,
        username: &Username,
        account_secret_key: &[u8],
        seal_public: &[u8],
    ) -> Result<Vec<u8>, CoreError> {
        let secrets = self.to_secrets(username.as_str(), account_secret_key);
        Ok(env.with_rng(|rng| {
            seal::seal_to(
                seal_public,
                &[],
                &recovery_aad(username),
                &secrets.encode_to_vec(),
                rng,
            )
        })?)
    }
}
