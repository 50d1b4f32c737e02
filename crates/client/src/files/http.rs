//! The server's file endpoints, over HTTP: a tus 1.0 client for resumable uploads (create,
//! offset, append with a per-request SHA-1 checksum) and ranged downloads. Requests carry a
//! short-lived bearer token the device gets over its WebSocket. Bodies are ciphertext only.

use std::time::Duration;

use base64::Engine as _;
use chapar_types::ErrorCode;
use sha1::{Digest as _, Sha1};

use chapar_core::CoreError as ClientError;

/// The tus protocol version spoken.
const TUS_VERSION: &str = "1.0.0";
/// How long to wait for a server to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a transfer may go without a single byte moving before it is given up (it can be
/// resumed): generous, for heavily throttled links.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Most bytes of an error body read (for its message); the rest is never read.
const ERROR_BODY_BYTES_MAX: usize = 4096;
/// Longest an error body is kept for the message shown to the user.
const ERROR_BODY_CHARS_MAX: usize = 300;

/// An HTTP client for one server's file endpoints, with the device's current token.
pub(crate) struct FileHttp {
    client: reqwest::Client,
    base: String,
    token: String,
}

fn transport(e: reqwest::Error) -> ClientError {
    ClientError::Connection(format!("file transfer: {e}"))
}

/// A refused request as a client error: the stable code and message of the server's
/// `{"error": "<code>", "message": "..."}` body, else a code that fits the HTTP status.
async fn refusal(response: reqwest::Response) -> ClientError {
    let status = response.status();
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while body.len() < ERROR_BODY_BYTES_MAX {
        match futures_util::StreamExt::next(&mut stream).await {
            Some(Ok(bytes)) => body.extend_from_slice(&bytes),
            _ => break,
        }
    }
    body.truncate(ERROR_BODY_BYTES_MAX);
    let body = String::from_utf8_lossy(&body).into_owned();
    let parsed = serde_json::from_str::<serde_json::Value>(&body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let code = field("error")
        .and_then(|name| ErrorCode::from_name(&name))
        .unwrap_or(match status.as_u16() {
            401 | 403 => ErrorCode::Unauthenticated,
            404 | 410 => ErrorCode::UnknownBlob,
            409 => ErrorCode::OffsetMismatch,
            413 => ErrorCode::TooLarge,
            460 => ErrorCode::ChecksumMismatch,
            503 => ErrorCode::Unavailable,
            507 => ErrorCode::StorageFull,
            _ => ErrorCode::Internal,
        });
    let mut message: String = field("message")
        .unwrap_or(body)
        .chars()
        .take(ERROR_BODY_CHARS_MAX)
        .collect();
    if message.trim().is_empty() {
        message = format!("HTTP {status}");
    }
    ClientError::Server {
        code,
        message,
        position: 0,
    }
}

impl FileHttp {
    /// A client for `server` (its `http://host:port` or `https://` base, with its key pin if
    /// any) with `token`.
    pub fn new(server: &str, token: String) -> Result<Self, ClientError> {
        let address = crate::tls::ServerAddress::parse(server)?;
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(IDLE_TIMEOUT)
            // The same certificate check as the protocol connection's (`crate::tls`). Given
            // for plain HTTP too: reqwest would otherwise build a TLS configuration of its own
            // and find no crypto provider chosen for the process.
            .use_preconfigured_tls(address.client_config().as_ref().clone())
            .build()
            .map_err(transport)?;
        Ok(Self {
            client,
            base: address.base,
            token,
        })
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, url)
            .bearer_auth(&self.token)
            .header("Tus-Resumable", TUS_VERSION)
    }

    /// Creates an upload of `length` bytes; returns its absolute URL.
    pub async fn create(&self, length: u64) -> Result<String, ClientError> {
        let response = self
            .request(reqwest::Method::POST, &format!("{}/v1/files", self.base))
            .header("Upload-Length", length)
            .send()
            .await
            .map_err(transport)?;
        if response.status() != reqwest::StatusCode::CREATED {
            return Err(refusal(response).await);
        }
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ClientError::Protocol("an upload was created without a Location".into())
            })?;
        // Resolved as a browser would (RFC 3986), against the URL the upload was created at:
        // the server's base may have a path of its own (a server in camouflage).
        let created_at = reqwest::Url::parse(&format!("{}/v1/files", self.base))
            .map_err(|e| ClientError::Protocol(format!("a bad server address: {e}")))?;
        Ok(created_at
            .join(location)
            .map_err(|e| ClientError::Protocol(format!("a bad upload Location: {e}")))?
            .to_string())
    }

    /// How many bytes of the upload at `url` the server has; None if it no longer exists.
    pub async fn offset(&self, url: &str) -> Result<Option<u64>, ClientError> {
        let response = self
            .request(reqwest::Method::HEAD, url)
            .send()
            .await
            .map_err(transport)?;
        match response.status().as_u16() {
            404 | 410 => return Ok(None),
            200 | 204 => {}
            _ => return Err(refusal(response).await),
        }
        upload_offset(&response).map(Some)
    }

    /// Appends `body` at `offset`, with its SHA-1 for the server to check; returns the new
    /// offset.
    pub async fn append(&self, url: &str, offset: u64, body: Vec<u8>) -> Result<u64, ClientError> {
        let checksum = base64::engine::general_purpose::STANDARD.encode(Sha1::digest(&body));
        let response = self
            .request(reqwest::Method::PATCH, url)
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", offset)
            .header("Upload-Checksum", format!("sha1 {checksum}"))
            .body(body)
            .send()
            .await
            .map_err(transport)?;
        if response.status() != reqwest::StatusCode::NO_CONTENT {
            return Err(refusal(response).await);
        }
        upload_offset(&response)
    }

    /// Ends an upload the client will not finish (tus termination), so it stops counting
    /// against the account's quota.
    pub async fn terminate(&self, url: &str) -> Result<(), ClientError> {
        let response = self
            .request(reqwest::Method::DELETE, url)
            .send()
            .await
            .map_err(transport)?;
        match response.status().as_u16() {
            204 | 404 | 410 => Ok(()),
            _ => Err(refusal(response).await),
        }
    }

    /// Starts downloading blob `blob` (hex id, `total` bytes long) from byte `from`; the
    /// response streams the rest. The server must answer with exactly that range of a blob of
    /// that length, or nothing is read.
    pub async fn download(
        &self,
        blob: &str,
        from: u64,
        total: u64,
    ) -> Result<reqwest::Response, ClientError> {
        let response = self
            .request(
                reqwest::Method::GET,
                &format!("{}/v1/files/{blob}", self.base),
            )
            .header(reqwest::header::RANGE, format!("bytes={from}-"))
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if status != reqwest::StatusCode::OK && status != reqwest::StatusCode::PARTIAL_CONTENT {
            return Err(refusal(response).await);
        }
        let header = |name: reqwest::header::HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let range = header(reqwest::header::CONTENT_RANGE);
        let length = header(reqwest::header::CONTENT_LENGTH).and_then(|l| l.parse::<u64>().ok());
        let as_expected = match status {
            // The whole blob: only right when that is what was asked for.
            reqwest::StatusCode::OK => from == 0 && length.is_none_or(|l| l == total),
            _ => range.as_deref() == Some(format!("bytes {from}-{}/{total}", total - 1).as_str()),
        };
        if !as_expected {
            return Err(ClientError::Protocol(format!(
                "the server answered a different range ({}) than the file's ({from}- of {total})",
                range.unwrap_or_else(|| "none".into())
            )));
        }
        Ok(response)
    }
}

/// The `Upload-Offset` a tus answer carries.
fn upload_offset(response: &reqwest::Response) -> Result<u64, ClientError> {
    response
        .headers()
        .get("Upload-Offset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ClientError::Protocol("no Upload-Offset in the answer".into()))
}
