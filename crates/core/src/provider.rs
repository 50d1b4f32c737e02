//! The openmls provider the engine runs MLS with: RustCrypto for the primitives, the engine's
//! own random number generator (from [`Env`]), and storage over the current profile
//! transaction, so MLS state changes commit with the history they produce.
//!
//! openmls's HPKE backend draws its encapsulation randomness from the operating system itself;
//! that keeps ciphertexts fresh but never decides what the engine does, so a replayed
//! conversation takes the same path.

use openmls_rust_crypto::RustCrypto;
use openmls_traits::OpenMlsProvider;
use openmls_traits::random::OpenMlsRand;

use crate::env::Env;
use crate::storage::Tx;
use crate::storage::mls::MlsStorage;

/// Randomness for openmls from the engine's environment.
pub struct EnvRand<'a>(&'a Env);

/// The environment's generator cannot fail.
#[derive(Debug, thiserror::Error)]
#[error("randomness unavailable")]
pub struct NoRandomness;

impl OpenMlsRand for EnvRand<'_> {
    type Error = NoRandomness;

    fn random_array<const N: usize>(&self) -> Result<[u8; N], Self::Error> {
        Ok(self.0.random::<N>())
    }

    fn random_vec(&self, len: usize) -> Result<Vec<u8>, Self::Error> {
        let mut out = vec![0u8; len];
        self.0
            .with_rng(|rng| rand_core::RngCore::fill_bytes(rng, &mut out));
        Ok(out)
    }
}

/// An openmls provider over one profile transaction.
pub struct Provider<'a> {
    crypto: &'a RustCrypto,
    rand: EnvRand<'a>,
    storage: MlsStorage<'a>,
}

impl<'a> Provider<'a> {
    /// A provider whose MLS state reads and writes go through `tx`.
    pub fn new(crypto: &'a RustCrypto, env: &'a Env, tx: &'a Tx<'a>) -> Self {
        Self {
            crypto,
            rand: EnvRand(env),
            storage: MlsStorage::new(tx),
        }
    }
}

impl<'a> OpenMlsProvider for Provider<'a> {
    type CryptoProvider = RustCrypto;
    type RandProvider = EnvRand<'a>;
    type StorageProvider = MlsStorage<'a>;

    fn storage(&self) -> &Self::StorageProvider {
        &self.storage
    }

    fn crypto(&self) -> &Self::CryptoProvider {
        self.crypto
    }

    fn rand(&self) -> &Self::RandProvider {
        &self.rand
    }
}
