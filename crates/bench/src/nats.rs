//! The side-by-side anchor: NATS JetStream with a file store, started on a free loopback port, and
//! a minimal client of the NATS text protocol (CONNECT, SUB, PUB with a reply subject, MSG,
//! PING/PONG) so the client side has the same shape as Chapar's: one connection per device,
//! publish and wait for the store's acknowledgement, receive pushes.
//!
//! Written here rather than pulling `async-nats` (and its TLS stack) into the build for a load
//! tool that needs six protocol verbs.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Largest message payload this client accepts from the server.
const PAYLOAD_BYTES_MAX: usize = 1024 * 1024;

/// A NATS server with JetStream on a temp directory.
pub struct NatsServer {
    child: Child,
    /// `127.0.0.1:port`.
    pub addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts `nats-server` (Debian's package) with JetStream on a free port.
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nats-server (apt-get install nats-server)")?;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        for _ in 0..100 {
            if std::net::TcpStream::connect(addr).is_ok() {
                return Ok(Self {
                    child,
                    addr,
                    _dir: dir,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("nats-server did not start")
    }

    /// Peak RSS of the server process.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
            .map(|k| k * 1024)
    }

    /// CPU ticks used so far.
    pub fn cpu_ticks(&self) -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A message delivered on a subscription.
pub struct Delivery {
    /// Subscription id.
    pub sid: u64,
    /// Payload bytes.
    pub payload: Vec<u8>,
}

/// One client connection.
pub struct NatsConn {
    out: mpsc::Sender<Vec<u8>>,
}

impl NatsConn {
    /// Connects, subscribes to `subjects` (sid = index + 1), and hands deliveries to `on_message`.
    pub async fn open(
        addr: std::net::SocketAddr,
        subjects: &[String],
        on_message: Arc<dyn Fn(Delivery) + Send + Sync>,
    ) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (read, mut write) = stream.into_split();
        let mut reader = BufReader::new(read);
        let mut line = String::new();
        reader.read_line(&mut line).await?; // INFO
        let mut hello =
            String::from("CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1}\r\n");
        for (i, subject) in subjects.iter().enumerate() {
            hello.push_str(&format!("SUB {subject} {}\r\n", i + 1));
        }
        hello.push_str("PING\r\n");
        write.write_all(hello.as_bytes()).await?;
        let (out, mut out_rx) = mpsc::channel::<Vec<u8>>(4096);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let pong_out = out.clone();
        tokio::spawn(async move {
            while let Some(first) = out_rx.recv().await {
                let mut buf = first;
                while let Ok(more) = out_rx.try_recv() {
                    buf.extend_from_slice(&more);
                    if buf.len() > 64 * 1024 {
                        break;
                    }
                }
                if write.write_all(&buf).await.is_err() {
                    return;
                }
            }
        });
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.first().copied() {
                    Some("MSG") => {
                        let (Some(sid), Some(len)) = (
                            words.get(2).and_then(|s| s.parse().ok()),
                            words.last().and_then(|s| s.parse::<usize>().ok()),
                        ) else {
                            return;
                        };
                        if len > PAYLOAD_BYTES_MAX {
                            return;
                        }
                        let mut payload = vec![0; len + 2];
                        if reader.read_exact(&mut payload).await.is_err() {
                            return;
                        }
                        payload.truncate(len);
                        on_message(Delivery { sid, payload });
                    }
                    Some("PING") => {
                        let _ = pong_out.send(b"PONG\r\n".to_vec()).await;
                    }
                    Some("PONG") => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                    }
                    _ => {}
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .context("NATS handshake timed out")??;
        Ok(Self { out })
    }

    /// Publishes `payload` to `subject`, asking for a reply on `reply` (JetStream's ack).
    pub async fn publish(&self, subject: &str, reply: &str, payload: &[u8]) -> anyhow::Result<()> {
        let mut frame = format!("PUB {subject} {reply} {}\r\n", payload.len()).into_bytes();
        frame.extend_from_slice(payload);
        frame.extend_from_slice(b"\r\n");
        self.out.send(frame).await.context("NATS connection closed")
    }
}

/// Creates a file-backed JetStream stream capturing `subjects`.
pub async fn create_stream(
    addr: std::net::SocketAddr,
    name: &str,
    subjects: &str,
) -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::channel(1);
    let on_message: Arc<dyn Fn(Delivery) + Send + Sync> = Arc::new(move |d| {
        let _ = tx.try_send(d.payload);
    });
    let conn = NatsConn::open(addr, &["_INBOX.setup".to_owned()], on_message).await?;
    let config = format!(
        r#"{{"name":"{name}","subjects":["{subjects}"],"storage":"file","retention":"limits","num_replicas":1}}"#
    );
    conn.publish(
        &format!("$JS.API.STREAM.CREATE.{name}"),
        "_INBOX.setup",
        config.as_bytes(),
    )
    .await?;
    let reply = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await?
        .context("no reply")?;
    let text = String::from_utf8_lossy(&reply);
    if text.contains("\"error\"") {
        bail!("stream creation failed: {text}");
    }
    Ok(())
}
