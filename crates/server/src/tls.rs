//! TLS on the public listener: the certificate chain and private key from PEM files, rustls
//! on the ring provider, TLS 1.2 and 1.3, HTTP/1.1 by ALPN. The handshake runs inside each
//! connection's task under the handshake deadline, so a client that stalls it holds only its
//! own connection slot. The operators' listener stays plain (it is meant for localhost).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The PEM files of the server's certificate chain (leaf first) and its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub certificate: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why the TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("TLS: {path}: {detail}")]
pub struct TlsError {
    path: PathBuf,
    detail: String,
}

fn error(path: &Path, detail: impl ToString) -> TlsError {
    TlsError {
        path: path.to_owned(),
        detail: detail.to_string(),
    }
}

impl TlsFiles {
    /// The leaf certificate, DER (what a key pin is taken from).
    pub fn leaf(&self) -> Result<CertificateDer<'static>, TlsError> {
        self.chain()?
            .into_iter()
            .next()
            .ok_or_else(|| error(&self.certificate, "holds no certificate"))
    }

    fn chain(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        CertificateDer::pem_file_iter(&self.certificate)
            .map_err(|e| error(&self.certificate, e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| error(&self.certificate, e))
    }

    /// The acceptor for the public listener.
    pub(crate) fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
        let chain = self.chain()?;
        if chain.is_empty() {
            return Err(error(&self.certificate, "holds no certificate"));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| error(&self.key, e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| error(&self.certificate, e))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| error(&self.key, format!("does not fit the certificate: {e}")))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}
