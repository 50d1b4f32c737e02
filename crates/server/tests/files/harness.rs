//! Test harness for the files API: a real server on port 0 in a temp directory, devices that
//! log in over a real WebSocket and get file tokens, and a small HTTP/1.1 client over a raw
//! TCP socket (so a test can also send half a request and hang up). Failed expectations print
//! the request and the whole response.
#![allow(dead_code)] // each test module uses part of the harness

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chapar_client::connection::Connection;
use chapar_crypto::identity::{self, SecretKey};
use chapar_server::{FilesConfig, ServerConfig};
use chapar_types::{DeviceId, ErrorCode, Username};
use chapar_wire::v1::{self, client_frame::Request, response::Result as Reply};
use rand::RngCore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A running in-process server.
pub struct TestServer {
    pub url: String,
    pub addr: SocketAddr,
    /// The operators' listener (`/metrics`).
    pub metrics: SocketAddr,
    pub data: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// A server running elsewhere (another process), with its data under `dir`.
    pub fn external(
        addr: SocketAddr,
        metrics: SocketAddr,
        data: PathBuf,
        dir: tempfile::TempDir,
    ) -> Self {
        Self {
            url: format!("http://{addr}"),
            addr,
            metrics,
            data,
            _dir: dir,
        }
    }
}

/// Starts a server with default file settings.
pub async fn start() -> TestServer {
    start_with(FilesConfig::default()).await
}

/// Starts a server with `files` settings.
pub async fn start_with(files: FilesConfig) -> TestServer {
    start_configured(files, chapar_server::Limits::for_tests()).await
}

/// Starts a server with `files` settings and `limits`.
pub async fn start_configured(files: FilesConfig, limits: chapar_server::Limits) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), data.clone());
    config.files = files;
    config.limits = limits;
    tokio::spawn(chapar_server::run(
        config,
        move |addr| {
            let _ = tx.send(addr);
        },
        std::future::pending(),
    ));
    let bound: chapar_server::Bound = rx.await.expect("server started");
    let addr = bound.address;
    TestServer {
        url: format!("http://{addr}"),
        addr,
        metrics: bound.metrics,
        data,
        _dir: dir,
    }
}

/// A logged-in device, its keys, and a file token.
pub struct Device {
    pub conn: Connection,
    pub id: DeviceId,
    pub username: String,
    pub account_key: SecretKey,
    pub token: String,
}

impl Device {
    /// `Authorization` for this device.
    pub fn auth(&self) -> (&'static str, String) {
        ("Authorization", format!("Bearer {}", self.token))
    }
}

/// The error code of a request that must fail.
pub fn code(result: Result<Reply, chapar_client::CoreError>) -> ErrorCode {
    match result {
        Err(e) => e
            .code()
            .unwrap_or_else(|| panic!("not a server error: {e}")),
        Ok(reply) => panic!("expected an error, got {reply:?}"),
    }
}

/// Asks for a file token over the WebSocket.
pub async fn file_token(conn: &Connection) -> (String, u64) {
    match conn
        .request(Request::FileToken(v1::FileToken {}))
        .await
        .unwrap()
    {
        Reply::FileTokenOk(ok) => (ok.token, ok.expires_ms),
        other => panic!("FileToken answered {other:?}"),
    }
}

/// The keys of an account being registered and of its first device.
pub struct NewAccount {
    pub account: SecretKey,
    pub device_key: SecretKey,
    pub id: DeviceId,
}

/// A well-formed `Register` of `name` on `conn`, proof of work included; tests change its
/// fields to break it.
pub fn registration(conn: &Connection, name: &str) -> (v1::Register, NewAccount) {
    let mut rng = rand::thread_rng();
    let keys = NewAccount {
        account: SecretKey::generate(&mut rng),
        device_key: SecretKey::generate(&mut rng),
        id: DeviceId(rng.next_u64()),
    };
    let username = Username::parse(name).unwrap();
    let request = v1::Register {
        username: name.into(),
        account_key: keys.account.public().to_vec(),
        device: Some(v1::DeviceCert {
            device_id: keys.id.0,
            device_key: keys.device_key.public().to_vec(),
            account_signature: identity::certify_device(
                &keys.account,
                &username,
                keys.id,
                &keys.device_key.public(),
            ),
        }),
        challenge_signature: identity::answer_challenge(
            &keys.device_key,
            conn.challenge(),
            keys.id,
            conn.server_id(),
        ),
        key_packages: vec![vec![1, 2, 3]],
        last_resort_key_package: vec![9],
        sealed_name: Vec::new(),
        proof_of_work: conn.prove_registration(name),
        invite_code: String::new(),
    };
    (request, keys)
}

/// Registers a fresh account `name` with one device.
pub async fn register(server: &TestServer, name: &str) -> Device {
    let conn = Connection::open(&server.url).await.unwrap();
    let (request, keys) = registration(&conn, name);
    let reply = conn.request(Request::Register(request)).await.unwrap();
    assert!(matches!(reply, Reply::AuthOk(_)), "register: {reply:?}");
    let (token, _) = file_token(&conn).await;
    Device {
        conn,
        id: keys.id,
        username: name.into(),
        account_key: keys.account,
        token,
    }
}

/// Claims a key package of `user`'s device as `by`, and returns its SHA-256: what a commit
/// that adds the device must name.
pub async fn claim(by: &Device, user: &str) -> Vec<u8> {
    use sha2::Digest as _;
    let reply = by
        .conn
        .request(Request::ClaimKeyPackages(v1::ClaimKeyPackages {
            username: user.into(),
            devices: Vec::new(),
        }))
        .await
        .unwrap();
    let Reply::KeyPackages(packages) = reply else {
        panic!("claim: {reply:?}");
    };
    sha2::Sha256::digest(&packages.devices[0].key_package).to_vec()
}

/// Adds a second device to `first`'s account and logs it in on its own connection.
pub async fn add_device(server: &TestServer, first: &Device) -> Device {
    let mut rng = rand::thread_rng();
    let (device_key, id) = (SecretKey::generate(&mut rng), DeviceId(rng.next_u64()));
    let username = Username::parse(&first.username).unwrap();
    first
        .conn
        .request(Request::AddDevice(v1::AddDevice {
            device: Some(v1::DeviceCert {
                device_id: id.0,
                device_key: device_key.public().to_vec(),
                account_signature: identity::certify_device(
                    &first.account_key,
                    &username,
                    id,
                    &device_key.public(),
                ),
            }),
            key_packages: Vec::new(),
            last_resort_key_package: Vec::new(),
            sealed_name: Vec::new(),
        }))
        .await
        .unwrap();
    let conn = Connection::open(&server.url).await.unwrap();
    let reply = conn
        .request(Request::Authenticate(v1::Authenticate {
            device_id: id.0,
            challenge_signature: identity::answer_challenge(
                &device_key,
                conn.challenge(),
                id,
                conn.server_id(),
            ),
        }))
        .await
        .unwrap();
    assert!(matches!(reply, Reply::AuthOk(_)), "authenticate: {reply:?}");
    let (token, _) = file_token(&conn).await;
    Device {
        conn,
        id,
        username: first.username.clone(),
        account_key: SecretKey::generate(&mut rng),
        token,
    }
}

/// An HTTP response, read to the end.
pub struct Response {
    pub request: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "request: {}", self.request)?;
        writeln!(f, "status: {}", self.status)?;
        for (name, value) in &self.headers {
            writeln!(f, "{name}: {value}")?;
        }
        if self.body.len() <= 512 {
            write!(f, "body: {:?}", String::from_utf8_lossy(&self.body))
        } else {
            write!(f, "body: {} bytes", self.body.len())
        }
    }
}

impl Response {
    /// A header's value (names compare case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A header that must be there, as a number.
    pub fn number(&self, name: &str) -> u64 {
        self.header(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no numeric {name} header in\n{self:?}"))
    }

    /// The stable code of a JSON error body.
    pub fn error_code(&self) -> String {
        let body: serde_json::Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not a JSON error body:\n{self:?}"));
        body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in\n{self:?}"))
            .to_owned()
    }

    /// Asserts the status, printing everything on failure.
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(self.status, status, "unexpected status:\n{self:?}");
        self
    }

    /// Asserts the status and the error code.
    pub fn expect_error(self, status: u16, code: &str) -> Self {
        let response = self.expect(status);
        assert_eq!(
            response.error_code(),
            code,
            "unexpected code:\n{response:?}"
        );
        response
    }
}

/// Writes a request head (with `Connection: close`) for a body of `body_len` bytes.
fn request_head(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body_len: Option<usize>,
) -> String {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(len) = body_len
        && !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        head.push_str(&format!("Content-Length: {len}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// Sends one request and reads the whole response.
pub async fn request(
    server: &TestServer,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Response {
    let with_body = !body.is_empty() || matches!(method, "POST" | "PATCH" | "DELETE");
    let head = request_head(
        server.addr,
        method,
        path,
        headers,
        with_body.then_some(body.len()),
    );
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .expect("response within 30 s")
        .unwrap();
    parse_response(format!("{method} {path}"), &raw, method == "HEAD")
}

/// Sends a request head announcing `announced` body bytes, then only `sent`, then hangs up.
pub async fn request_cut(
    server: &TestServer,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    announced: usize,
    sent: &[u8],
) {
    let stream = request_open(server, method, path, headers, announced, sent).await;
    // Let the server read what was sent before the connection goes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(stream);
}

/// Sends a request head announcing `announced` body bytes and only `sent` of them, and keeps
/// the connection open: the request is in flight until the returned stream is dropped.
pub async fn request_open(
    server: &TestServer,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    announced: usize,
    sent: &[u8],
) -> TcpStream {
    let head = request_head(server.addr, method, path, headers, Some(announced));
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(sent).await.unwrap();
    stream.flush().await.unwrap();
    stream
}

fn parse_response(request: String, raw: &[u8], head_only: bool) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("{request}: no response head in {raw:?}"));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{request}: bad status line in {head}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let rest = &raw[split + 4..];
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if head_only {
        Vec::new()
    } else if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Response {
        request,
        status,
        headers,
        body,
    }
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = std::str::from_utf8(&rest[..line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = line_end + 2;
        out.extend_from_slice(&rest[start..start + size]);
        rest = &rest[start + size + 2..];
    }
}

/// tus headers for a device: version and token.
pub fn tus(device: &Device) -> Vec<(&'static str, String)> {
    vec![("Tus-Resumable", "1.0.0".into()), device.auth()]
}

/// Headers for a PATCH at `offset`.
pub fn patch_headers(device: &Device, offset: u64) -> Vec<(&'static str, String)> {
    let mut headers = tus(device);
    headers.push(("Content-Type", "application/offset+octet-stream".into()));
    headers.push(("Upload-Offset", offset.to_string()));
    headers
}

/// `Upload-Checksum` for `data` with SHA-1.
pub fn sha1_checksum(data: &[u8]) -> (&'static str, String) {
    use sha1::Digest as _;
    let digest = sha1::Sha1::digest(data);
    (
        "Upload-Checksum",
        format!("sha1 {}", data_encoding::BASE64.encode(&digest)),
    )
}

/// Creates an upload of `length` bytes; returns its path (`/v1/files/<id>`).
pub async fn create(server: &TestServer, device: &Device, length: u64) -> String {
    let mut headers = tus(device);
    headers.push(("Upload-Length", length.to_string()));
    let response = request(server, "POST", "/v1/files", &headers, b"")
        .await
        .expect(201);
    response
        .header("Location")
        .unwrap_or_else(|| panic!("no Location in\n{response:?}"))
        .to_owned()
}

/// Appends `data` at `offset`; returns the response.
pub async fn patch(
    server: &TestServer,
    device: &Device,
    path: &str,
    offset: u64,
    data: &[u8],
) -> Response {
    request(server, "PATCH", path, &patch_headers(device, offset), data).await
}

/// Uploads `data` as a complete blob in one PATCH; returns its path.
pub async fn upload(server: &TestServer, device: &Device, data: &[u8]) -> String {
    let path = create(server, device, data.len() as u64).await;
    let response = patch(server, device, &path, 0, data).await.expect(204);
    assert_eq!(response.number("Upload-Offset"), data.len() as u64);
    path
}

/// GET with optional extra headers.
pub async fn get(
    server: &TestServer,
    device: &Device,
    path: &str,
    extra: &[(&'static str, String)],
) -> Response {
    let mut headers = vec![device.auth()];
    headers.extend_from_slice(extra);
    request(server, "GET", path, &headers, b"").await
}

/// HEAD as tus clients send it.
pub async fn head(server: &TestServer, device: &Device, path: &str) -> Response {
    request(server, "HEAD", path, &tus(device), b"").await
}

/// Deterministic test bytes.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8 ^ seed)
        .collect()
}

/// Polls `check` every 50 ms until it holds or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within {limit:?}");
}

/// The id part of a `/v1/files/<id>` path.
pub fn id_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap()
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// The server's `/metrics` text, from its operators' listener.
pub async fn metrics(server: &TestServer) -> String {
    let operators = TestServer {
        url: format!("http://{}", server.metrics),
        addr: server.metrics,
        metrics: server.metrics,
        data: server.data.clone(),
        _dir: tempfile::tempdir().unwrap(),
    };
    let response = request(&operators, "GET", "/metrics", &[], b"")
        .await
        .expect(200);
    String::from_utf8(response.body).unwrap()
}
