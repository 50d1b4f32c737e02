//! GET `/v1/files/{id}`: a complete blob, whole (200) or one byte range (206), streamed from
//! the blob store in bounded chunks, so memory does not grow with the blob. `If-Range` is not
//! supported (a blob never changes once complete).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chapar_store::Store;
use chapar_types::ErrorCode;

use super::range::{Requested, resolve};
use super::{HttpError, authorize, blob_id, check_tus_version};
use crate::service::Service;

/// GET: the blob's bytes.
pub(super) async fn download<S: Store>(
    State(service): State<Arc<Service<S>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    check_tus_version(&headers, false)?;
    let who = authorize(&service, &headers).await?;
    let id = blob_id(&id)?;
    let length = service.blob_length(&who, id).await?;
    let requested = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map_or(Requested::Whole, |v| resolve(v, length));
    let (status, range) = match requested {
        Requested::Whole => (StatusCode::OK, 0..length),
        Requested::Part(range) => (StatusCode::PARTIAL_CONTENT, range),
        Requested::Unsatisfiable => {
            let mut response = HttpError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                ErrorCode::BadRequest,
                format!("the range lies outside the blob's {length} bytes"),
            )
            .into_response();
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{length}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return Ok(response);
        }
    };
    let mut response_headers = HeaderMap::new();
    response_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    response_headers.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(range.end - range.start),
    );
    response_headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // The bytes never change, but they are one account's business: no shared caches.
    response_headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        let value = format!("bytes {}-{}/{length}", range.start, range.end - 1);
        if let Ok(value) = HeaderValue::from_str(&value) {
            response_headers.insert(header::CONTENT_RANGE, value);
        }
    }
    let stream = service.read_blob(&who, id, range).await?;
    Ok((status, response_headers, Body::from_stream(stream)).into_response())
}
