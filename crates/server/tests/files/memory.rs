//! Memory: a server's resident set must not grow with file size. A 1 GiB file goes up in one
//! PATCH and comes back in one GET through a server in its own process, and the server's peak
//! RSS (`VmHWM`) after it is compared with its peak after a small file.
//!
//! Ignored by default (it moves 2 GiB). Run it with `scripts/files-memory.sh`, or:
//! `cargo test -p chapar-server --test files -- --ignored --exact --nocapture
//!  memory::server_rss_does_not_grow_with_file_size`
//! (`CHAPAR_FILES_MEMORY_BYTES` changes the size).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use sha2::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

/// Set (to a data directory) in the helper process that runs the server.
const SERVER_ENV: &str = "CHAPAR_FILES_MEMORY_SERVER_DATA";
const BLOCK_BYTES: usize = 1024 * 1024;
/// Most the server's peak RSS may grow between a small file and a large one.
const RSS_GROWTH_BYTES_MAX: u64 = 32 * 1024 * 1024;

/// The helper process: runs a server until killed. A no-op unless started by the test below.
#[test]
#[ignore = "the server process of server_rss_does_not_grow_with_file_size"]
fn server_process() {
    let Some(data) = std::env::var_os(SERVER_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut config = chapar_server::ServerConfig::new("127.0.0.1:0".parse().unwrap(), data.into());
    config.limits = chapar_server::Limits::for_tests();
    runtime
        .block_on(chapar_server::run(
            config,
            |bound| println!("LISTENING {} {}", bound.address, bound.metrics),
            std::future::pending(),
        ))
        .unwrap();
}

struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl ServerProcess {
    fn peak_rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
    }
}

/// The n-th block of the test file: random bytes, different in every block.
fn block(random: &[u8], n: u64) -> Vec<u8> {
    let mut block = random.to_vec();
    block[..8].copy_from_slice(&n.to_be_bytes());
    block
}

/// Uploads `size` bytes in one PATCH and downloads them; returns seconds up and down.
async fn round_trip(server: &TestServer, device: &Device, size: u64, random: &[u8]) -> (f64, f64) {
    let path = create(server, device, size).await;
    let mut headers = format!(
        "PATCH {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {size}\r\n",
        server.addr
    );
    for (name, value) in patch_headers(device, 0) {
        headers.push_str(&format!("{name}: {value}\r\n"));
    }
    headers.push_str("\r\n");
    let started = Instant::now();
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(headers.as_bytes()).await.unwrap();
    let mut sent_hash = sha2::Sha256::new();
    let (mut sent, mut n) = (0u64, 0u64);
    while sent < size {
        let mut data = block(random, n);
        data.truncate((size - sent).min(BLOCK_BYTES as u64) as usize);
        sent_hash.update(&data);
        stream.write_all(&data).await.unwrap();
        sent += data.len() as u64;
        n += 1;
    }
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 204"),
        "PATCH answered {answer}"
    );
    let up = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let (name, value) = device.auth();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{name}: {value}\r\n\r\n",
        server.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buffer = vec![0u8; BLOCK_BYTES];
    let mut head = Vec::new();
    let mut received_hash = sha2::Sha256::new();
    let mut received = 0u64;
    loop {
        let n = stream.read(&mut buffer).await.unwrap();
        if n == 0 {
            break;
        }
        let mut bytes = &buffer[..n];
        if head.is_empty() || !head.ends_with(b"\r\n\r\n") {
            // Still in the response head: keep it, hash what follows.
            let mut split = None;
            for (i, byte) in bytes.iter().enumerate() {
                head.push(*byte);
                if head.ends_with(b"\r\n\r\n") {
                    split = Some(i + 1);
                    break;
                }
            }
            let Some(split) = split else { continue };
            bytes = &bytes[split..];
        }
        received_hash.update(bytes);
        received += bytes.len() as u64;
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200"), "GET answered {head}");
    assert_eq!(received, size, "the whole blob came back");
    assert_eq!(
        received_hash.finalize(),
        sent_hash.finalize(),
        "the blob came back unchanged"
    );
    (up, started.elapsed().as_secs_f64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "moves 2 GiB; run with scripts/files-memory.sh"]
async fn server_rss_does_not_grow_with_file_size() {
    let size: u64 = std::env::var("CHAPAR_FILES_MEMORY_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "memory::server_process",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(SERVER_ENV, &data)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let process = ServerProcess(child);
    let mut lines = BufReader::new(stdout).lines();
    let (addr, metrics) = loop {
        let line = lines
            .next()
            .expect("the server process printed its address")
            .unwrap();
        // libtest prints "test name ... " without a newline before the test's own output.
        if let Some((_, addresses)) = line.split_once("LISTENING ") {
            let (addr, metrics) = addresses.trim().split_once(' ').unwrap();
            break (addr.parse().unwrap(), metrics.parse().unwrap());
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let server = TestServer::external(addr, metrics, data, dir);
    let alice = register(&server, "alice").await;
    let mut random = vec![0u8; BLOCK_BYTES];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut random);

    let idle = process.peak_rss_bytes();
    round_trip(&server, &alice, 16 * BLOCK_BYTES as u64, &random).await;
    let small = process.peak_rss_bytes();
    let (up, down) = round_trip(&server, &alice, size, &random).await;
    let large = process.peak_rss_bytes();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "server peak RSS: {:.1} MiB idle, {:.1} MiB after a 16 MiB file, {:.1} MiB after a \
         {:.0} MiB file (up {:.1} s = {:.0} MiB/s, down {:.1} s = {:.0} MiB/s)",
        mib(idle),
        mib(small),
        mib(large),
        mib(size),
        up,
        mib(size) / up,
        down,
        mib(size) / down
    );
    assert!(
        large <= small + RSS_GROWTH_BYTES_MAX,
        "peak RSS grew by {:.1} MiB with a {:.0} MiB file",
        mib(large - small),
        mib(size)
    );
}
