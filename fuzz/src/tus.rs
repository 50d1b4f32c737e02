//! The `tus_headers` target's body: the files API's header parsers, reached through the real
//! router (`chapar_server::api::router`) with HTTP requests whose method, path, headers and
//! body come from the input, so every header is parsed exactly as a request would have it
//! parsed (`Tus-Resumable`, `Authorization`, `Upload-Length`, `Upload-Offset`,
//! `Upload-Checksum`, `Upload-Metadata`, `Upload-Defer-Length`, `Upload-Concat`,
//! `Content-Type`, `Content-Length`, `Range`, `X-HTTP-Method-Override`). The parsers are
//! private to `api::files`; going through the router needs no change to their visibility.
//! The public parsers beside them (`TokenKey::verify`, `BlobId`'s `FromStr`,
//! `ChecksumAlgorithm::from_name`) are called directly with the input too.
//!
//! Input: byte 0 the method, byte 1 the path (a complete blob, an unfinished upload, an
//! unknown id, the collection, or a chunk of the input), byte 2 the `Authorization` header
//! (a valid file token, none, or built from a chunk), then up to [`HEADERS_MAX`] headers, each
//! a byte naming it and a chunk with its value (values `http` refuses are left out), and
//! the rest is the body.
//!
//! Checked: nothing panics; no answer is a 500; a `GET` of the complete blob answers 200
//! with the whole blob, 206 with exactly the bytes its `Content-Range` names (within the
//! blob, and as many as `Content-Length` says), or 416 with `Content-Range: bytes */<length>`.
//!
//! One service per process (a fresh one per input would cost more than the parsing): it
//! holds one complete blob and one unfinished upload, made at start. Requests that would
//! change them are pointed elsewhere (a `DELETE`, or a `PATCH` of the unfinished upload, goes
//! to an unknown id), and an upload a `POST` creates is deleted at once, so each input meets
//! the same state.

use std::sync::OnceLock;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use chapar_server::service::Authenticated;
use chapar_server::service::files::token::TokenKey;
use chapar_server::service::files::upload::ChecksumAlgorithm;
use chapar_types::{BlobId, Username};
use tower_service::Service as _;

use crate::script::Reader;
use crate::server::{Server, alice, runtime};

/// Most headers one input sets.
pub const HEADERS_MAX: usize = 12;
/// The complete blob's length (its bytes are `0, 1, 2, ...` modulo 251).
pub const BLOB_BYTES: u64 = 1000;
/// The unfinished upload's declared length.
pub const UPLOAD_BYTES: u64 = 5000;

/// The methods byte 0 picks from (the last: a method named by a chunk of the input).
pub const METHODS: [&str; 8] = [
    "GET", "HEAD", "PATCH", "DELETE", "POST", "OPTIONS", "PUT", "",
];

/// The headers a header's first byte picks from.
pub const HEADERS: [&str; 16] = [
    "tus-resumable",
    "upload-length",
    "upload-offset",
    "upload-checksum",
    "upload-metadata",
    "upload-defer-length",
    "upload-concat",
    "content-type",
    "content-length",
    "range",
    "x-http-method-override",
    "authorization",
    "if-range",
    "upload-expires",
    "origin",
    "access-control-request-method",
];

/// Where byte 1 sends the request.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The complete blob.
    Blob,
    /// The unfinished upload.
    Upload,
    /// An id nobody has.
    Unknown,
    /// `/v1/files`.
    Collection,
    /// A path from the input.
    Input,
}

/// The targets byte 1 picks from.
pub const TARGETS: [Target; 5] = [
    Target::Blob,
    Target::Upload,
    Target::Unknown,
    Target::Collection,
    Target::Input,
];

struct Fixture {
    // Kept for as long as the router serves it.
    _server: Server,
    router: Router,
    token: String,
    blob: String,
    upload: String,
    tokens: TokenKey,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| runtime().block_on(Fixture::new()))
}

impl Fixture {
    async fn new() -> Self {
        let server = Server::open();
        let who = alice();
        let mut conn = server.connect();
        who.greet(&mut conn, true).await;
        let (token, _) = server.service.file_token(&Authenticated {
            device: who.device,
            username: Username::parse(who.username).expect("a valid name"),
        });
        let router = chapar_server::api::router(server.service.clone());
        let mut fixture = Self {
            _server: server,
            router,
            token,
            blob: String::new(),
            upload: String::new(),
            tokens: TokenKey::generate(),
        };
        fixture.blob = fixture.create(BLOB_BYTES).await;
        let bytes: Vec<u8> = (0..BLOB_BYTES).map(|i| (i % 251) as u8).collect();
        let patch = Request::builder()
            .method(Method::PATCH)
            .uri(&fixture.blob)
            .header("tus-resumable", "1.0.0")
            .header("authorization", format!("Bearer {}", fixture.token))
            .header("content-type", "application/offset+octet-stream")
            .header("upload-offset", "0")
            .body(Body::from(bytes))
            .expect("a valid request");
        let response = fixture.call(patch).await;
        assert_eq!(
            response.status(),
            StatusCode::NO_CONTENT,
            "the blob is stored"
        );
        fixture.upload = fixture.create(UPLOAD_BYTES).await;
        fixture
    }

    async fn call(&self, request: Request<Body>) -> Response<Body> {
        match self.router.clone().call(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    /// Creates an upload of `length` bytes; returns its path.
    async fn create(&self, length: u64) -> String {
        let post = Request::builder()
            .method(Method::POST)
            .uri("/v1/files")
            .header("tus-resumable", "1.0.0")
            .header("authorization", format!("Bearer {}", self.token))
            .header("upload-length", length.to_string())
            .body(Body::empty())
            .expect("a valid request");
        let response = self.call(post).await;
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "the upload is created"
        );
        location(&response).expect("a created upload has a Location")
    }
}

fn location<B>(response: &Response<B>) -> Option<String> {
    response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let fixture = fixture();
    let mut reader = Reader::new(data);
    let method_ix = usize::from(reader.u8().unwrap_or(0)) % METHODS.len();
    let target = TARGETS[usize::from(reader.u8().unwrap_or(0)) % TARGETS.len()];
    let auth = reader.u8().unwrap_or(0) % 4;
    let method = match METHODS[method_ix] {
        "" => {
            let name = reader.chunk().unwrap_or_default();
            match Method::from_bytes(name) {
                Ok(method) => method,
                Err(_) => return,
            }
        }
        name => Method::from_bytes(name.as_bytes()).expect("a known method"),
    };

    let mut headers: Vec<(HeaderName, HeaderValue)> = Vec::new();
    match auth {
        0 => headers.push((
            HeaderName::from_static("authorization"),
            HeaderValue::from_str(&format!("Bearer {}", fixture.token)).expect("a token"),
        )),
        1 => {}
        2 => {
            let value = reader.chunk().unwrap_or_default();
            check_public_parsers(fixture, value);
            if let Ok(value) = HeaderValue::from_bytes(value) {
                headers.push((HeaderName::from_static("authorization"), value));
            }
        }
        _ => {
            let mut value = b"Bearer ".to_vec();
            value.extend_from_slice(reader.chunk().unwrap_or_default());
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                headers.push((HeaderName::from_static("authorization"), value));
            }
        }
    }
    let input_path = (target == Target::Input).then(|| reader.chunk().unwrap_or_default());
    while headers.len() < HEADERS_MAX {
        let (Some(name), Some(value)) = (reader.u8(), reader.chunk()) else {
            break;
        };
        let name = HEADERS[usize::from(name) % HEADERS.len()];
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.push((HeaderName::from_static(name), value));
        }
    }
    let body = reader.rest().to_vec();

    // Requests that would change the fixture's state go to an id nobody has.
    let overrides = headers
        .iter()
        .filter(|(name, _)| name == "x-http-method-override")
        .map(|(_, v)| v.as_bytes().to_ascii_uppercase())
        .collect::<Vec<_>>();
    let writes = |method: &[u8]| method == b"DELETE" || method == b"PATCH";
    let changes = |target: Target| match target {
        Target::Blob => {
            method == Method::DELETE
                || (method == Method::POST && overrides.iter().any(|m| m == b"DELETE"))
        }
        Target::Upload => {
            writes(method.as_str().as_bytes())
                || (method == Method::POST && overrides.iter().any(|m| writes(m)))
        }
        _ => false,
    };
    let unknown = format!("/v1/files/{}", "ab".repeat(16));
    let path = match target {
        _ if changes(target) => unknown,
        Target::Blob => fixture.blob.clone(),
        Target::Upload => fixture.upload.clone(),
        Target::Unknown => unknown,
        Target::Collection => "/v1/files".to_owned(),
        Target::Input => {
            let text = String::from_utf8_lossy(input_path.unwrap_or_default()).into_owned();
            if text.contains(&fixture.blob[10..]) || text.contains(&fixture.upload[10..]) {
                return;
            }
            format!("/v1/files/{text}")
        }
    };
    let mut request = Request::builder().method(method.clone()).uri(path.as_str());
    for (name, value) in &headers {
        request = request.header(name.clone(), value.clone());
    }
    let Ok(request) = request.body(Body::from(body)) else {
        // A path `http` does not take as a URI.
        return;
    };
    runtime().block_on(async {
        let response = fixture.call(request).await;
        let status = response.status();
        assert_ne!(
            status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{method} {path} with {headers:?} is a 500"
        );
        let created = (status == StatusCode::CREATED)
            .then(|| location(&response))
            .flatten();
        let ranged = method == Method::GET && target == Target::Blob && !changes(target);
        let head = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap_or_default();
        if ranged && auth == 0 {
            check_download(status, &head, &body);
        }
        if let Some(created) = created {
            // Put the fixture back as it was.
            let delete = Request::builder()
                .method(Method::DELETE)
                .uri(&created)
                .header("tus-resumable", "1.0.0")
                .header("authorization", format!("Bearer {}", fixture.token))
                .body(Body::empty())
                .expect("a valid request");
            let status = fixture.call(delete).await.status();
            assert_eq!(status, StatusCode::NO_CONTENT, "a created upload deletes");
        }
    });
}

/// Calls the parsers that are public on a string from the input.
fn check_public_parsers(fixture: &Fixture, value: &[u8]) {
    let text = String::from_utf8_lossy(value);
    let _ = fixture.tokens.verify(&text, 0);
    let _ = fixture.tokens.verify(&text, u64::MAX);
    let _ = text.parse::<BlobId>();
    let _ = ChecksumAlgorithm::from_name(&text);
}

/// A download of the complete blob is the whole of it, or exactly the range it says.
fn check_download(status: StatusCode, head: &axum::http::HeaderMap, body: &[u8]) {
    let range = head.get("content-range").and_then(|v| v.to_str().ok());
    let length = head
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match status {
        StatusCode::OK => {
            assert_eq!(body.len() as u64, BLOB_BYTES, "200 sends the whole blob");
            assert_eq!(length, Some(BLOB_BYTES));
            assert!(range.is_none(), "200 with a Content-Range");
        }
        StatusCode::PARTIAL_CONTENT => {
            let range = range.expect("206 names its range");
            let (span, total) = range
                .strip_prefix("bytes ")
                .and_then(|r| r.split_once('/'))
                .unwrap_or_else(|| panic!("a malformed Content-Range {range:?}"));
            assert_eq!(total, BLOB_BYTES.to_string());
            let (first, last) = span
                .split_once('-')
                .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
                .unwrap_or_else(|| panic!("a malformed Content-Range {range:?}"));
            assert!(
                first <= last && last < BLOB_BYTES,
                "{range} outside the blob"
            );
            assert_eq!(length, Some(last - first + 1), "Content-Length of {range}");
            assert_eq!(body.len() as u64, last - first + 1, "body of {range}");
            let expected: Vec<u8> = (first..=last).map(|i| (i % 251) as u8).collect();
            assert_eq!(body, &expected[..], "the bytes of {range}");
        }
        StatusCode::RANGE_NOT_SATISFIABLE => {
            assert_eq!(range, Some(format!("bytes */{BLOB_BYTES}").as_str()));
        }
        // Refused for another reason (a bad Tus-Resumable, say): nothing to check here.
        _ => {}
    }
}
