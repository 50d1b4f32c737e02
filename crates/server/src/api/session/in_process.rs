//! The session driven by calls instead of a transport, for the deterministic simulator.

use super::*;

/// A connection driven by calls instead of a transport (the deterministic simulator): each
/// request is answered before the call returns, and pushes wait in a queue until taken. It
/// runs exactly the session of [`super::serve`], minus the concurrency.
pub struct InProcess<S: Store> {
    service: Arc<Service<S>>,
    session: Session,
    queue: mpsc::Receiver<Outgoing>,
    target: PushTarget,
}

impl<S: Store> InProcess<S> {
    /// A fresh connection to `service`.
    pub fn new(service: Arc<Service<S>>) -> Self {
        let session = Session::new(&service, None);
        let (queue_tx, queue) = mpsc::channel(PUSH_QUEUE_DEPTH_MAX);
        let target = PushTarget {
            id: session.connection_id,
            queue: queue_tx,
            budget: Arc::new(Semaphore::new(service.limits.connection_bytes_max)),
            lagged: Arc::new(AtomicBool::new(false)),
            kick: Arc::new(tokio::sync::Notify::new()),
        };
        Self {
            service,
            session,
            queue,
            target,
        }
    }

    /// Answers one frame: returns the encoded response.
    pub async fn request(&mut self, bytes: &[u8]) -> Bytes {
        let (request_id, result) = match decode_frame(bytes) {
            Err((request_id, error)) => (request_id, Err(error)),
            Ok((request_id, request)) if is_handshake(&request) => {
                let result = handshake(&self.service, &mut self.session, request).await;
                if let (Ok(Reply::AuthOk(_)), Some(who)) = (&result, self.session.who()) {
                    self.service.attach(who, self.target.clone()).await;
                }
                (request_id, result)
            }
            Ok((request_id, request)) => match self.session.require_login() {
                Ok(who) => (
                    request_id,
                    handle(&self.service, &who, self.session.connection_id, request).await,
                ),
                Err(error) => (request_id, Err(error)),
            },
        };
        Bytes::from(chapar_wire::encode(&convert::response(request_id, result)))
    }

    /// The pushes queued for this connection since the last call, encoded (and a resync
    /// request if some were dropped).
    pub fn take_pushes(&mut self) -> Vec<Bytes> {
        let mut out = Vec::new();
        while let Ok(outgoing) = self.queue.try_recv() {
            out.push(match outgoing {
                Outgoing::Frame(bytes, _) => bytes,
                Outgoing::Push(push, _) => push
                    .encoded
                    .get_or_init(|| convert::encode_push(&push.kind))
                    .clone(),
            });
        }
        if self.target.lagged.swap(false, Ordering::Relaxed) {
            out.push(Bytes::from(chapar_wire::encode(&convert::push(
                v1::push::Kind::Resync(v1::Empty {}),
            ))));
        }
        out
    }
}

impl<S: Store> Drop for InProcess<S> {
    fn drop(&mut self) {
        self.service.detach(&self.session);
    }
}
