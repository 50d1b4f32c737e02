//! The tus 1.0.0 endpoints: OPTIONS (discovery and CORS preflight), POST (creation), HEAD
//! (offset), PATCH (append), DELETE (termination), and `X-HTTP-Method-Override` for clients
//! behind proxies that only pass GET and POST.
//!
//! PATCH runs the append in its own task: if the client disconnects mid-body, axum drops the
//! handler, but the append still commits what arrived (or, with a checksum, nothing) and
//! releases the upload.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chapar_store::{Store, UploadRecord};
use chapar_types::ErrorCode;

use super::{
    HttpError, TUS_RESUMABLE, TUS_VERSION, UPLOAD_EXPIRES, UPLOAD_LENGTH, UPLOAD_OFFSET, authorize,
    blob_id, check_tus_version, header_u64, http_date,
};
use crate::service::Service;
use crate::service::files::upload::{Append, Checksum, ChecksumAlgorithm};

const TUS_EXTENSIONS: &str = "creation,termination,checksum,expiration";
const UPLOAD_CONTENT_TYPE: &str = "application/offset+octet-stream";
/// Seconds a browser may cache a preflight answer.
const CORS_MAX_AGE_SECS: &str = "86400";
const ALLOWED_METHODS: &str = "POST, HEAD, PATCH, DELETE, GET, OPTIONS";
const ALLOWED_HEADERS: &str = "Authorization, Origin, X-Requested-With, X-Request-ID, \
     X-HTTP-Method-Override, Content-Type, Upload-Length, Upload-Offset, Tus-Resumable, \
     Upload-Metadata, Upload-Defer-Length, Upload-Concat, Upload-Checksum, Range";

/// Headers every successful tus response carries, plus the upload's offset and expiry.
fn upload_headers(upload: &UploadRecord) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION));
    headers.insert(UPLOAD_OFFSET, HeaderValue::from(upload.committed));
    if !upload.is_complete() {
        headers.insert(UPLOAD_EXPIRES, http_date(upload.expires_ms));
    }
    headers
}

/// OPTIONS: what this server supports, and the CORS preflight answer. No authentication.
pub(super) async fn options<S: Store>(State(service): State<Arc<Service<S>>>) -> Response {
    let algorithms = ChecksumAlgorithm::ALL
        .iter()
        .map(|a| a.name())
        .collect::<Vec<_>>()
        .join(",");
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: HeaderValue| {
        headers.insert(HeaderName::from_static(name), value);
    };
    put("tus-resumable", HeaderValue::from_static(TUS_VERSION));
    put("tus-version", HeaderValue::from_static(TUS_VERSION));
    put("tus-extension", HeaderValue::from_static(TUS_EXTENSIONS));
    put(
        "tus-max-size",
        HeaderValue::from(service.files.config().upload_bytes_max),
    );
    put(
        "tus-checksum-algorithm",
        HeaderValue::from_str(&algorithms).unwrap_or(HeaderValue::from_static("sha1")),
    );
    put(
        "access-control-allow-methods",
        HeaderValue::from_static(ALLOWED_METHODS),
    );
    put(
        "access-control-allow-headers",
        HeaderValue::from_static(ALLOWED_HEADERS),
    );
    put(
        "access-control-max-age",
        HeaderValue::from_static(CORS_MAX_AGE_SECS),
    );
    (StatusCode::NO_CONTENT, headers).into_response()
}

/// POST: creates an upload of `Upload-Length` bytes; answers 201 with its `Location`.
pub(super) async fn create<S: Store>(
    State(service): State<Arc<Service<S>>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    check_tus_version(&headers, true)?;
    let who = authorize(&service, &headers).await?;
    if headers.contains_key("upload-defer-length") {
        return Err(HttpError::bad_request(
            "Upload-Defer-Length is not supported: send Upload-Length",
        ));
    }
    if headers.contains_key("upload-concat") {
        return Err(HttpError::bad_request(
            "the concatenation extension is not supported",
        ));
    }
    let length = header_u64(&headers, &UPLOAD_LENGTH)?
        .ok_or_else(|| HttpError::bad_request("Upload-Length is required"))?;
    // Upload-Metadata is deliberately never read: it may name the file in clear.
    let upload = service.create_upload(&who, length).await?;
    let mut headers = upload_headers(&upload);
    headers.remove(UPLOAD_OFFSET);
    // The path as the client asked for it, entry prefix included (`api::camouflaged_router`).
    let location = format!("{}/{}", uri.path().trim_end_matches('/'), upload.id);
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(&location).map_err(|_| {
            HttpError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                "internal server error",
            )
        })?,
    );
    Ok((StatusCode::CREATED, headers).into_response())
}

/// HEAD: the upload's offset and length (and, for a complete blob, its download size).
pub(super) async fn status<S: Store>(
    State(service): State<Arc<Service<S>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    check_tus_version(&headers, false)?;
    let who = authorize(&service, &headers).await?;
    let upload = service.upload_status(&who, blob_id(&id)?).await?;
    let mut headers = upload_headers(&upload);
    headers.insert(UPLOAD_LENGTH, HeaderValue::from(upload.length));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if upload.is_complete() {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(upload.length));
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    Ok((StatusCode::OK, headers).into_response())
}

/// Reads `Upload-Checksum: <algorithm> <base64 digest>`.
fn checksum(headers: &HeaderMap) -> Result<Option<Checksum>, HttpError> {
    let Some(value) = headers.get("upload-checksum") else {
        return Ok(None);
    };
    let malformed = || HttpError::bad_request("Upload-Checksum must be '<algorithm> <base64>'");
    let (name, digest) = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().split_once(' '))
        .ok_or_else(malformed)?;
    let algorithm = ChecksumAlgorithm::from_name(name).ok_or_else(|| {
        HttpError::bad_request(format!(
            "checksum algorithm {name:?} is not supported (see Tus-Checksum-Algorithm)"
        ))
    })?;
    let digest = data_encoding::BASE64
        .decode(digest.trim().as_bytes())
        .map_err(|_| malformed())?;
    Ok(Some(Checksum { algorithm, digest }))
}

/// PATCH: appends the body at `Upload-Offset`; answers 204 with the new offset.
pub(super) async fn append<S: Store>(
    State(service): State<Arc<Service<S>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    check_tus_version(&headers, true)?;
    let who = authorize(&service, &headers).await?;
    let id = blob_id(&id)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    if content_type.as_deref() != Some(UPLOAD_CONTENT_TYPE) {
        return Err(HttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::BadRequest,
            format!("a PATCH body must be Content-Type: {UPLOAD_CONTENT_TYPE}"),
        ));
    }
    let offset = header_u64(&headers, &UPLOAD_OFFSET)?
        .ok_or_else(|| HttpError::bad_request("Upload-Offset is required"))?;
    let append = Append {
        id,
        offset,
        chunk_bytes: header_u64(&headers, &header::CONTENT_LENGTH)?,
        length: header_u64(&headers, &UPLOAD_LENGTH)?,
        checksum: checksum(&headers)?,
    };
    let stream = body.into_data_stream();
    let task = tokio::spawn(async move { service.append_upload(&who, append, stream).await });
    let appended = task.await.map_err(|e| {
        tracing::error!(blob = %id, error = %e, "append task failed");
        HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "internal server error",
        )
    })?;
    match (appended.result, appended.upload) {
        (Ok(()), Some(upload)) => {
            Ok((StatusCode::NO_CONTENT, upload_headers(&upload)).into_response())
        }
        (Ok(()), None) => Err(HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "internal server error",
        )),
        (Err(e), upload) => {
            let mut error = HttpError::from(e);
            error.offset = upload.map(|u| u.committed);
            Err(error)
        }
    }
}

/// DELETE: forgets the caller's upload or unreferenced blob.
pub(super) async fn terminate<S: Store>(
    State(service): State<Arc<Service<S>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    check_tus_version(&headers, true)?;
    let who = authorize(&service, &headers).await?;
    service.terminate_upload(&who, blob_id(&id)?).await?;
    Ok((
        StatusCode::NO_CONTENT,
        [(TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION))],
    )
        .into_response())
}

/// POST with `X-HTTP-Method-Override`: the method the client meant.
pub(super) async fn method_override<S: Store>(
    state: State<Arc<Service<S>>>,
    id: Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let method = headers
        .get("x-http-method-override")
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_uppercase);
    match method.as_deref() {
        Some("PATCH") => append(state, id, headers, body).await.into_response(),
        Some("DELETE") => terminate(state, id, headers).await.into_response(),
        Some("HEAD") => status(state, id, headers).await.into_response(),
        Some("GET") => super::download::download(state, id, headers)
            .await
            .into_response(),
        _ => HttpError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::BadRequest,
            "POST creates uploads at /v1/files; use PATCH, HEAD, DELETE or GET here",
        )
        .into_response(),
    }
}
