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
/// What marks the name a certificate must be valid for, in a server address's fragment.
const NAME_PREFIX: &str = "name=";
/// The one application protocol offered.
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// A server address split into the URL to connect to and what the certificate found there
/// must prove: the key pin the address carries, if any, or else the name it must be valid
/// for (the host's own, unless this is the server reached through a relay: then the
/// server's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerAddress {
    /// The address without its fragment, e.g. `https://chat.example:8443`.
    pub base: String,
    /// The SHA-256 of the server key the certificate must carry.
    pub pin: Option<[u8; 32]>,
    /// The name the certificate must be valid for, where it is not the host dialled (a relay
    /// in front of a server without a pin; `#name=` in the fragment).
    pub tls_name: Option<String>,
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
        let (mut pin, mut tls_name) = (None, None);
        for part in fragment.into_iter().flat_map(|f| f.split('&')) {
            if let Some(encoded) = part.strip_prefix(PIN_PREFIX) {
                let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(encoded)
                    .map_err(|_| invalid())?;
                let parsed = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| invalid())?;
                if pin.replace(parsed).is_some() {
                    return Err(invalid());
                }
            } else if let Some(name) = part.strip_prefix(NAME_PREFIX) {
                if name.is_empty() || tls_name.replace(name.to_owned()).is_some() {
                    return Err(invalid());
                }
            } else {
                return Err(invalid());
            }
        }
        // A pin or name on plain HTTP would protect nothing: surely a mistake.
        if (pin.is_some() || tls_name.is_some()) && !is_tls(&base) {
            return Err(invalid());
        }
        Ok(Self {
            base,
            pin,
            tls_name,
        })
    }

    /// The address as text, as [`Self::parse`] reads it.
    pub fn to_text(&self) -> String {
        let mut parts = Vec::new();
        if let Some(pin) = &self.pin {
            parts.push(pin_text(pin));
        }
        if let Some(name) = &self.tls_name {
            parts.push(format!("{NAME_PREFIX}{name}"));
        }
        if parts.is_empty() {
            self.base.clone()
        } else {
            format!("{}#{}", self.base, parts.join("&"))
        }
    }

    /// This server reached through the relay whose link is `relay`: the relay's host and port
    /// with this server's scheme, and the certificate checked as this server's (its pin, or
    /// its name), whatever the link says. So a relay, or a link sent by someone else, can
    /// change where the connection goes but never whom it must reach: a relay that ends TLS
    /// itself is refused. A link over plain HTTP to a server with TLS, or with another key pin,
    /// is refused.
    pub fn through_relay(&self, relay: &str) -> Result<Self, CoreError> {
        let link = Self::parse(relay)?;
        let refused = |why: &str| {
            CoreError::from(Usage::RelayRefused(format!(
                "{}: {why}",
                relay.chars().take(80).collect::<String>()
            )))
        };
        if self.is_tls() && !link.is_tls() {
            return Err(refused("plain HTTP to a server with TLS"));
        }
        if link.pin.is_some() && link.pin != self.pin {
            return Err(refused("its key pin is not this server's"));
        }
        let (host, port) = link.host_port()?;
        let (server_host, _) = self.host_port()?;
        // The server's own path (a server in camouflage has its entry there), not the link's.
        let path = self.path();
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let scheme = self.base.split("://").next().unwrap_or("https");
        Ok(Self {
            base: format!("{scheme}://{authority}{path}"),
            pin: self.pin,
            tls_name: match (self.pin, self.is_tls()) {
                (None, true) => Some(self.tls_name.clone().unwrap_or(server_host)),
                _ => None,
            },
        })
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
        let path = self.path();
        match &self.pin {
            Some(pin) => format!("{scheme}://{relay}{path}#{}", pin_text(pin)),
            None => format!("{scheme}://{relay}{path}"),
        }
    }

    /// The path of the base (a server in camouflage has its entry there), without a
    /// trailing slash; empty for none.
    fn path(&self) -> String {
        self.base
            .parse::<http::Uri>()
            .map(|uri| uri.path().trim_end_matches('/').to_owned())
            .unwrap_or_default()
    }

    /// The TLS client configuration for this server.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        client_config(self.pin, self.tls_name.as_deref())
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
/// the Mozilla roots without one (for `tls_name` where given, else for the host dialled).
fn client_config(pin: Option<[u8; 32]>, tls_name: Option<&str>) -> Arc<rustls::ClientConfig> {
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
            let roots = Arc::new(rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            });
            let named = tls_name.and_then(|name| ServerName::try_from(name.to_owned()).ok());
            match named {
                Some(name) => {
                    match rustls::client::WebPkiServerVerifier::builder_with_provider(
                        roots.clone(),
                        provider.clone(),
                    )
                    .build()
                    {
                        Ok(webpki) => builder
                            .dangerous()
                            .with_custom_certificate_verifier(Arc::new(NamedFor { webpki, name }))
                            .with_no_client_auth(),
                        // Roots that cannot build a verifier (none can fail here): plain check.
                        Err(_) => builder.with_root_certificates(roots).with_no_client_auth(),
                    }
                }
                None => builder.with_root_certificates(roots).with_no_client_auth(),
            }
        }
    };
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Arc::new(config)
}

/// The Mozilla-roots check, for a name other than the host dialled: a server reached through
/// a relay must prove it is the server, not the relay.
#[derive(Debug)]
struct NamedFor {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for NamedFor {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.webpki
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
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
                pin: Some(pin),
                tls_name: None,
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
            "https://a.example#name=",
            &format!("https://a.example#{}&{}", pin_text(&pin), pin_text(&pin)),
            // A pin on plain HTTP would protect nothing.
            &format!("http://a.example#{}", pin_text(&pin)),
        ] {
            assert!(ServerAddress::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_relay_changes_where_a_connection_goes_never_whom_it_must_reach() {
        let pin = [7u8; 32];
        let pinned =
            ServerAddress::parse(&format!("https://chat.example:8443#{}", pin_text(&pin))).unwrap();
        // The link's own pin, if any, must be the server's; the server's is what is checked.
        let via = pinned
            .through_relay(&format!("https://relay.example:443#{}", pin_text(&pin)))
            .unwrap();
        assert_eq!(
            (via.base.as_str(), via.pin, via.tls_name.as_deref()),
            ("https://relay.example:443", Some(pin), None)
        );
        assert_eq!(
            pinned.through_relay("https://relay.example").unwrap().pin,
            Some(pin)
        );
        for refused in [
            format!("https://relay.example#{}", pin_text(&[8; 32])),
            "http://relay.example:80".to_owned(),
        ] {
            assert!(pinned.through_relay(&refused).is_err(), "{refused}");
        }
        // Without a pin, the certificate must be the server's name's, not the relay's.
        let hidden = ServerAddress::parse(&format!(
            "https://chat.example/Entry_secret-1#{}",
            pin_text(&pin)
        ))
        .unwrap();
        assert_eq!(
            hidden.through_relay("https://relay.example").unwrap().base,
            "https://relay.example:443/Entry_secret-1"
        );
        let named = ServerAddress::parse("https://chat.example").unwrap();
        let via = named.through_relay("https://[2001:db8::1]:443").unwrap();
        assert_eq!(via.base, "https://[2001:db8::1]:443");
        assert_eq!(via.tls_name.as_deref(), Some("chat.example"));
        assert_eq!(ServerAddress::parse(&via.to_text()).unwrap(), via);
    }
}
