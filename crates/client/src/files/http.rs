//! The server's file endpoints, over HTTP: a tus 1.0 client for resumable uploads (create,
//! offset, append with a per-request SHA-1 checksum) and ranged downloads. Requests carry a
//! short-lived bearer token the device gets over its WebSocket. Bodies are ciphertext only.

use std::time::Duration;

use base64::Engine as _;
use chapar_types::ErrorCode;
use sha1::{Digest as _, Sha1};

use crate::ClientError;

/// The tus protocol version spoken.
const TUS_VERSION: &str = "1.0.0";
/// How long to wait for a server to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
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
    let body = response.text().await.unwrap_or_default();
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
    /// A client for `server` (its `http://host:port` base) with `token`.
    pub fn new(server: &str, token: String) -> Result<Self, ClientError> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(transport)?;
        Ok(Self {
            client,
            base: server.trim_end_matches('/').to_owned(),
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
        Ok(
            if location.starts_with("http://") || location.starts_with("https://") {
                location.to_owned()
            } else {
                format!("{}/{}", self.base, location.trim_start_matches('/'))
            },
        )
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
        let offset = response
            .headers()
            .get("Upload-Offset")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ClientError::Protocol("no Upload-Offset in the answer".into()))?;
        Ok(Some(offset))
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
        response
            .headers()
            .get("Upload-Offset")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ClientError::Protocol("no Upload-Offset in the answer".into()))
    }

    /// Starts downloading blob `blob` (hex id) from byte `from`; the response streams the rest.
    pub async fn download(&self, blob: &str, from: u64) -> Result<reqwest::Response, ClientError> {
        let response = self
            .request(
                reqwest::Method::GET,
                &format!("{}/v1/files/{blob}", self.base),
            )
            .header(reqwest::header::RANGE, format!("bytes={from}-"))
            .send()
            .await
            .map_err(transport)?;
        let expected = if from == 0 {
            [
                reqwest::StatusCode::OK,
                reqwest::StatusCode::PARTIAL_CONTENT,
            ]
        } else {
            [reqwest::StatusCode::PARTIAL_CONTENT; 2]
        };
        if !expected.contains(&response.status()) {
            return Err(refusal(response).await);
        }
        Ok(response)
    }
}
