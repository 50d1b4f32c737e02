//! Accepting connections: the caps on connections open at once (in all, and per address), TLS
//! where the server has a certificate (the handshake inside the connection's task, under the
//! handshake deadline), and HTTP/1.1 on each with a deadline for every request head. A refused connection is closed at
//! once, before anything is read from it, and counted in `/metrics`.
//!
//! A connection counts until its socket closes, also after a WebSocket upgrade took it over
//! from HTTP: the count rides on the socket itself ([`Counted`]).

use std::collections::HashMap;
use std::future::Future as _;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tower_service::Service as _;

use crate::limits::Limits;
use crate::metrics::{LimitHit, Metrics};

/// How long shutting down waits for open HTTP requests to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Connections open now, in all and per address.
struct Admission {
    per_address: Mutex<HashMap<IpAddr, usize>>,
    total: Mutex<usize>,
    total_max: usize,
    per_address_max: usize,
}

/// A connection's place in the counts, given back when its socket closes.
struct Admitted {
    admission: Arc<Admission>,
    address: IpAddr,
    metrics: Arc<Metrics>,
}

impl Admission {
    fn admit(
        self: &Arc<Self>,
        address: IpAddr,
        metrics: &Arc<Metrics>,
    ) -> Result<Admitted, LimitHit> {
        // Poisoned counts are still counts: a panic elsewhere must not stop admissions.
        let mut total = self.total.lock().unwrap_or_else(|p| p.into_inner());
        if *total >= self.total_max {
            return Err(LimitHit::ConnectionsMax);
        }
        let mut per_address = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        let count = per_address.entry(address).or_insert(0);
        if *count >= self.per_address_max {
            return Err(LimitHit::ConnectionsPerAddress);
        }
        *count += 1;
        *total += 1;
        metrics.sockets_open.fetch_add(1, Ordering::Relaxed);
        Ok(Admitted {
            admission: self.clone(),
            address,
            metrics: metrics.clone(),
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut total = self
            .admission
            .total
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *total = total.saturating_sub(1);
        let mut per_address = self
            .admission
            .per_address
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(count) = per_address.get_mut(&self.address) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                per_address.remove(&self.address);
            }
        }
        self.metrics.sockets_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A socket that keeps its connection's place in the counts for as long as it is open, and
/// fails a write that cannot make progress for `write_timeout`: hyper has no write timeout of
/// its own, so without this a client that never reads would hold a download (and its socket)
/// forever.
struct Counted {
    tcp: TcpStream,
    _admitted: Admitted,
    write_timeout: Duration,
    /// Set while a write waits for the client to read.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    metrics: Arc<Metrics>,
}

impl Counted {
    /// Passes a write's result on, turning one that has been pending for `write_timeout`
    /// into a `TimedOut` error.
    fn timed<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if result.is_ready() {
            self.stalled = None;
            return result;
        }
        let timeout = self.write_timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if stalled.as_mut().poll(cx).is_ready() {
            self.stalled = None;
            self.metrics.hit(LimitHit::SocketWriteTimeout);
            return Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()));
        }
        Poll::Pending
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.tcp).poll_write(cx, buf);
        self.timed(cx, result)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let result = Pin::new(&mut self.tcp).poll_flush(cx);
        self.timed(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let result = Pin::new(&mut self.tcp).poll_shutdown(cx);
        self.timed(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        self.timed(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

/// Serves HTTP/1.1 (and upgrades) on one connection until it ends, or finishes its request
/// and closes once `stopping` says so.
async fn serve_connection<S, T>(
    http: &hyper::server::conn::http1::Builder,
    socket: S,
    service: T,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> hyper::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: hyper::service::HttpService<hyper::body::Incoming> + Send + 'static,
    T::Future: Send + 'static,
    T::ResBody: Send + 'static,
    <T::ResBody as hyper::body::Body>::Data: Send,
    <T::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connection = http
        .serve_connection(TokioIo::new(socket), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        ended = &mut connection => ended,
        // The guard `wait_for` returns is dropped before awaiting again.
        _ = async { drop(stopping.wait_for(|stop| *stop).await) } => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    }
}

/// Serves `router` on `listener` (over TLS with `tls`) within `limits` until `shutdown`
/// resolves.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    limits: Limits,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let admission = Arc::new(Admission {
        per_address: Mutex::new(HashMap::new()),
        total: Mutex::new(0),
        total_max: limits.connections_max,
        per_address_max: limits.connections_per_address_max,
    });
    let mut make_service = router.into_make_service_with_connect_info::<SocketAddr>();
    // Every connection holds a receiver: told to stop, it finishes its request and closes;
    // the sender learns when the last one is gone.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.handshake_timeout)
        // As most web servers write them (a camouflaged server passes for nginx).
        .title_case_headers(true)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, say: wait a little rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let address = crate::service::rate::address_key(Some(peer.ip()));
        let admitted = match admission.admit(address, &metrics) {
            Ok(admitted) => admitted,
            Err(limit) => {
                metrics.hit(limit);
                tracing::debug!(%peer, limit = limit.name(), "connection refused");
                continue;
            }
        };
        // Small frames must leave at once: Nagle's algorithm plus delayed ACKs would add tens
        // of milliseconds to pushes and acknowledgements.
        let _ = tcp.set_nodelay(true);
        let Ok(service) = make_service.call(peer).await;
        let socket = Counted {
            tcp,
            _admitted: admitted,
            write_timeout: limits.write_timeout,
            stalled: None,
            metrics: metrics.clone(),
        };
        let (http, tls, stopping) = (http.clone(), tls.clone(), stopping.clone());
        let handshake_timeout = limits.handshake_timeout;
        tokio::spawn(async move {
            let service = TowerToHyperService::new(service);
            let ended = match tls {
                None => serve_connection(&http, socket, service, stopping).await,
                Some(tls) => {
                    match tokio::time::timeout(handshake_timeout, tls.accept(socket)).await {
                        Ok(Ok(socket)) => serve_connection(&http, socket, service, stopping).await,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    drop(stopping);
    let _ = stop.send(true);
    if tokio::time::timeout(SHUTDOWN_GRACE, stop.closed())
        .await
        .is_err()
    {
        tracing::info!("stopping with HTTP requests still open");
    }
}
