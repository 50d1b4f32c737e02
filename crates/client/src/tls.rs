//! TLS for the connections to the server (the protocol's WebSocket and the file endpoints):
//! where a server's address says `https://` or `wss://`, and how its certificate is checked.
//!
//! A server address may carry a *key pin* after `#`, as an invite link does:
//! `https://chat.example:8443#sha256=<base64url>`, the SHA-256 of the server certificate's
//! public key (its DER SubjectPublicKeyInfo). With a pin, the certificate is accepted if and
//! only if its key matches: no certificate authority is needed (a self-signed server works)
//! and none can vouch for another key. Pinning the key, not the certificate, survives a
//! renewal that keeps the key. Without a pin, the certificate must chain to a root of the
//! Mozilla program (compiled in, so the OS store cannot be made to add one) and name the host.
//!
//! Both use rustls on the ring provider; the handshake offers only HTTP/1.1 by ALPN (the
//! server speaks nothing else).

use std::sync::Arc;

use base64::Engine as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest as _, Sha256};

use chapar_core::{CoreError, Usage};
use tokio_tungstenite::tungstenite::http;

/// What marks a key pin in a server address's fragment.
const PIN_PREFIX: &str = "sha256=";
/// The one application protocol offered.
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// A server address split into the URL to connect to and the key pin it carries, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerAddress {
    /// The address without its fragment, e.g. `https://chat.example:8443`.
    pub base: String,
    /// The SHA-256 of the server key the certificate must carry.
    pub pin: Option<[u8; 32]>,
}

impl ServerAddress {
    /// Parses an address as the user gave it; an address with a fragment that is not a
    /// well-formed pin, or a pin on a plain `http://` address, is refused (a pin there would
    /// protect nothing, so it is surely a mistake).
    pub fn parse(server: &str) -> Result<Self, CoreError> {
        let invalid = || CoreError::from(Usage::InvalidServer(server.to_owned()));
        let (base, fragment) = match server.split_once('#') {
            Some((base, fragment)) => (base, Some(fragment)),
            None => (server, None),
        };
        let base = base.trim_end_matches('/').to_owned();
        let pin = match fragment {
            None => None,
            Some(fragment) => {
                let encoded = fragment.strip_prefix(PIN_PREFIX).ok_or_else(invalid)?;
                let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(encoded)
                    .map_err(|_| invalid())?;
                Some(<[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| invalid())?)
            }
        };
        if pin.is_some() && !is_tls(&base) {
            return Err(invalid());
        }
        Ok(Self { base, pin })
    }

    /// Whether the connection is over TLS.
    pub fn is_tls(&self) -> bool {
        is_tls(&self.base)
    }

    /// The host (without an IPv6 address's brackets) and port to connect to.
    pub fn host_port(&self) -> Result<(String, u16), CoreError> {
        let invalid = || CoreError::from(Usage::InvalidServer(self.base.clone()));
        let uri: http::Uri = self.base.parse().map_err(|_| invalid())?;
        let host = uri
            .host()
            .ok_or_else(invalid)?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri
            .port_u16()
            .unwrap_or(if self.is_tls() { 443 } else { 80 });
        Ok((host, port))
    }

    /// This server's address as reached through a relay at `relay` (`host:port`): the same
    /// scheme and key pin, the relay's host and port. What a relay link is.
    pub fn through(&self, relay: &str) -> String {
        let scheme = self.base.split("://").next().unwrap_or("https");
        match &self.pin {
            Some(pin) => format!("{scheme}://{relay}#{}", pin_text(pin)),
            None => format!("{scheme}://{relay}"),
        }
    }

    /// The TLS client configuration for this server.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        client_config(self.pin)
    }
}

/// What a failed TLS handshake with `url` means, for the user: a certificate that is not the
/// pinned key or that nothing vouches for gets a sentence of its own.
pub(crate) fn explain_failure(address: &ServerAddress, url: &str, e: &std::io::Error) -> String {
    let certificate = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)));
    match (certificate, address.pin) {
        (true, Some(_)) => format!(
            "TLS with {url} refused: the server's key is not the one pinned in its address \
             (someone may be intercepting the connection, or the server changed its key)"
        ),
        (true, None) => format!(
            "TLS with {url} refused: its certificate is not vouched for by a known authority \
             ({e}); if the server is self-signed, use its address with the key pin \
             (`#sha256=...`) it prints"
        ),
        (false, _) => format!("TLS with {url} failed: {e}"),
    }
}

fn is_tls(base: &str) -> bool {
    base.starts_with("https://") || base.starts_with("wss://")
}

/// The pin of a certificate: the SHA-256 of its public key (DER SubjectPublicKeyInfo).
pub fn pin_of(certificate_der: &[u8]) -> Result<[u8; 32], CoreError> {
    let der = CertificateDer::from(certificate_der);
    let cert = webpki::EndEntityCert::try_from(&der)
        .map_err(|e| CoreError::Connection(format!("not a certificate: {e}")))?;
    Ok(Sha256::digest(cert.subject_public_key_info().as_ref()).into())
}

/// A pin as it is written after `#` in a server address.
pub fn pin_text(pin: &[u8; 32]) -> String {
    format!(
        "{PIN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pin)
    )
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration that checks the server's certificate against `pin`, or against
/// the Mozilla roots without one.
fn client_config(pin: Option<[u8; 32]>) -> Arc<rustls::ClientConfig> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        // The ring provider supports the default versions; this cannot fail.
        .unwrap_or_else(|_| unreachable!("ring supports TLS 1.2 and 1.3"));
    let mut config = match pin {
        Some(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedKey {
                pin,
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
        None => {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Arc::new(config)
}

/// Accepts exactly the certificates whose key is the pinned one (whoever issued them, for
/// whatever name), and checks that the server holds that key's private half as usual.
#[derive(Debug)]
struct PinnedKey {
    pin: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedKey {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let pin = pin_of(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if pin != self.pin {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the report

    use super::*;

    #[test]
    fn addresses_split_into_base_and_pin() {
        let pin = [7u8; 32];
        let with_pin = format!("https://chat.example:8443/#{}", pin_text(&pin));
        assert_eq!(
            ServerAddress::parse(&with_pin).unwrap(),
            ServerAddress {
                base: "https://chat.example:8443".into(),
                pin: Some(pin)
            }
        );
        let plain = ServerAddress::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!((plain.pin, plain.is_tls()), (None, false));
        let address = ServerAddress::parse(&with_pin).unwrap();
        assert_eq!(address.host_port().unwrap(), ("chat.example".into(), 8443));
        assert_eq!(
            address.through("[::1]:443"),
            format!("https://[::1]:443#{}", pin_text(&pin))
        );
        let v6 = ServerAddress::parse("https://[2001:db8::1]").unwrap();
        assert_eq!(v6.host_port().unwrap(), ("2001:db8::1".into(), 443));
        for bad in [
            "https://a.example#sha256=short",
            "https://a.example#md5=AAAA",
            // A pin on plain HTTP would protect nothing.
            &format!("http://a.example#{}", pin_text(&pin)),
        ] {
            assert!(ServerAddress::parse(bad).is_err(), "{bad}");
        }
    }
}
