//! The files API over HTTP: tus 1.0.0 resumable uploads (core, creation, termination,
//! checksum, expiration) and ranged downloads under `/v1/files`, with CORS for browsers.
//!
//! Requests carry `Authorization: Bearer <file token>` (minted over the WebSocket); `OPTIONS`
//! needs none. Errors are a status code and a small JSON body with a stable code name:
//! `{"error": "quota_exceeded", "message": "..."}`. `Upload-Metadata` is accepted and never
//! read, stored or logged: a standard client may put a file name there in clear.
//!
//! [`tus`] holds the upload endpoints, [`download`] the ranged GET, [`range`] the `Range`
//! header. The rules behind them are in `service::files`.

mod download;
mod range;
mod tus;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::map_response;
use axum::response::{IntoResponse, Response};
use axum::routing::{head, post};
use chapar_store::Store;
use chapar_types::{BlobId, ErrorCode};

use crate::ServiceError;
use crate::service::{Authenticated, Service};

/// The tus version this server speaks.
const TUS_VERSION: &str = "1.0.0";

/// Seconds a client refused for load (503) or for its device's running transfers (429) is
/// asked to wait: transfer slots come back as soon as a transfer ends, so a short wait is
/// usually enough.
const RETRY_AFTER_SECS: u64 = 1;

const TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");
const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
const UPLOAD_EXPIRES: HeaderName = HeaderName::from_static("upload-expires");

/// Response headers browser scripts must be able to read (everything tus and ranges use).
const EXPOSED_HEADERS: &str = "Location, Upload-Offset, Upload-Length, Upload-Metadata, \
     Upload-Expires, Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size, \
     Tus-Checksum-Algorithm, Content-Range, Accept-Ranges, Content-Length";

/// The files routes.
pub(super) fn routes<S: Store>() -> Router<Arc<Service<S>>> {
    Router::new()
        .route(
            "/v1/files",
            post(tus::create::<S>).options(tus::options::<S>),
        )
        .route(
            "/v1/files/{id}",
            head(tus::status::<S>)
                .patch(tus::append::<S>)
                .delete(tus::terminate::<S>)
                .get(download::download::<S>)
                .post(tus::method_override::<S>)
                .options(tus::options::<S>),
        )
        .layer(map_response(cors))
}

/// Lets browser clients on any origin use the API: requests authenticate with a bearer token,
/// never cookies, so no origin gains anything it could not do from a script of its own.
async fn cors(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED_HEADERS),
    );
    response
}

/// A failed request: status, stable code, message, and the upload's offset when known.
#[derive(Debug)]
struct HttpError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    offset: Option<u64>,
}

impl HttpError {
    fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            offset: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }
}

/// 460 Checksum Mismatch, from the tus checksum extension.
fn checksum_mismatch_status() -> StatusCode {
    StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST)
}

impl From<ServiceError> for HttpError {
    fn from(e: ServiceError) -> Self {
        let status = match e.code {
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthenticated | ErrorCode::AuthenticationFailed => {
                StatusCode::UNAUTHORIZED
            }
            ErrorCode::DeviceRevoked | ErrorCode::QuotaExceeded | ErrorCode::TooManyUploads => {
                StatusCode::FORBIDDEN
            }
            ErrorCode::UnknownBlob => StatusCode::NOT_FOUND,
            ErrorCode::UploadExpired => StatusCode::GONE,
            ErrorCode::OffsetMismatch | ErrorCode::BlobReferenced | ErrorCode::Conflict => {
                StatusCode::CONFLICT
            }
            ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::ChecksumMismatch => checksum_mismatch_status(),
            ErrorCode::UploadBusy => StatusCode::LOCKED,
            ErrorCode::TooManyTransfers => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
            ErrorCode::UnsupportedVersion => StatusCode::PRECONDITION_FAILED,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.code, e.message)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        // Codes and statuses only: never a header or byte the client sent.
        tracing::debug!(status = self.status.as_u16(), code = %self.code, "files request failed");
        let body = serde_json::json!({ "error": self.code.as_str(), "message": self.message });
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        let headers = response.headers_mut();
        headers.insert(TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION));
        if self.status == StatusCode::PRECONDITION_FAILED {
            headers.insert(
                HeaderName::from_static("tus-version"),
                HeaderValue::from_static(TUS_VERSION),
            );
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if matches!(
            self.status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        ) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        if let Some(offset) = self.offset {
            headers.insert(UPLOAD_OFFSET, HeaderValue::from(offset));
        }
        response
    }
}

/// Checks `Tus-Resumable`. GET and HEAD may omit it (a browser may fetch the URL directly);
/// any other version is refused.
fn check_tus_version(headers: &HeaderMap, required: bool) -> Result<(), HttpError> {
    match headers.get(TUS_RESUMABLE) {
        Some(v) if v == TUS_VERSION => Ok(()),
        None if !required => Ok(()),
        _ => Err(HttpError::new(
            StatusCode::PRECONDITION_FAILED,
            ErrorCode::UnsupportedVersion,
            "this server speaks tus 1.0.0: send Tus-Resumable: 1.0.0",
        )),
    }
}

/// The device behind the request's bearer token.
async fn authorize<S: Store>(
    service: &Service<S>,
    headers: &HeaderMap,
) -> Result<Authenticated, HttpError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .ok_or_else(|| {
            HttpError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthenticated,
                "send Authorization: Bearer <file token> (request one over the WebSocket)",
            )
        })?;
    Ok(service.authorize_file_token(token).await?)
}

/// Reads a blob id from the path; anything else is an unknown blob.
fn blob_id(text: &str) -> Result<BlobId, HttpError> {
    text.parse().map_err(|_| {
        HttpError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownBlob,
            "no upload or blob has this id",
        )
    })
}

/// Reads a header holding a non-negative integer; absent is `None`, malformed is an error.
fn header_u64(headers: &HeaderMap, name: &HeaderName) -> Result<Option<u64>, HttpError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    HttpError::bad_request(format!("{name} must be a non-negative integer"))
                })
        })
        .transpose()
}

/// The last instant an HTTP date can say (9999-12-31T23:59:59Z), in ms since the Unix epoch:
/// `httpdate` panics on later times.
const HTTP_DATE_MS_MAX: u64 = 253_402_300_799_000;

/// An HTTP date (IMF-fixdate), as `Upload-Expires` wants it. Times past what a date can say
/// are clamped (configuration keeps expiries far below it; this keeps a panic out of reach).
fn http_date(ms: u64) -> HeaderValue {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.min(HTTP_DATE_MS_MAX));
    HeaderValue::from_str(&httpdate::fmt_http_date(time))
        .unwrap_or_else(|_| HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the report

    use super::*;

    #[test]
    fn http_dates_are_clamped_to_year_9999_instead_of_panicking() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(HTTP_DATE_MS_MAX), "Fri, 31 Dec 9999 23:59:59 GMT");
        assert_eq!(http_date(u64::MAX), "Fri, 31 Dec 9999 23:59:59 GMT");
    }
}
