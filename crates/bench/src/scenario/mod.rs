//! The load scenarios. Each sets up devices over real connections, runs, and returns a report
//! that serializes to one JSON object.

pub mod catchup;
pub mod fanout;
pub mod history;
pub mod idle;
pub mod pairs;
pub mod soak;

use std::sync::{Arc, OnceLock};

use crate::conn::{Event, Handler};
use crate::device::{self, Device};
use crate::stats::{Recorder, now_ns};

/// Options every scenario shares.
#[derive(Clone)]
pub struct Common {
    /// The server's address.
    pub server: std::net::SocketAddr,
    /// Clients send opaque bytes instead of real MLS.
    pub server_only: bool,
    /// A prefix that keeps usernames unique across runs against one server.
    pub run_tag: String,
}

impl Common {
    /// A unique username for device `n` of a scenario.
    pub fn username(&self, what: &str, n: usize) -> String {
        format!("{}{what}{n}", self.run_tag)
    }

    /// Registers a device whose pushes are timed into `recorder`.
    pub async fn timed_device(
        &self,
        name: &str,
        recorder: &Arc<Recorder>,
    ) -> anyhow::Result<Arc<Device>> {
        let cell = Arc::new(OnceLock::new());
        let device = Arc::new(
            device::register(
                self.server,
                name,
                !self.server_only,
                timing_handler(cell.clone(), recorder.clone()),
            )
            .await?,
        );
        let _ = cell.set(device.clone());
        Ok(device)
    }
}

/// A handler that decrypts (end-to-end mode) each pushed entry, reads its send stamp and records
/// the latency; acknowledgements and failures are counted.
pub fn timing_handler(device: Arc<OnceLock<Arc<Device>>>, recorder: Arc<Recorder>) -> Handler {
    Arc::new(move |event| match event {
        Event::Entry(entry) => {
            let mls = device.get().and_then(|d| d.mls.as_ref());
            match device::open(mls, &entry.payload)
                .as_deref()
                .and_then(device::stamp_of)
            {
                Some(stamp) => {
                    recorder.record_ns(now_ns().saturating_sub(stamp));
                    Recorder::bump(&recorder.delivered);
                }
                None => Recorder::bump(&recorder.errors),
            }
        }
        Event::Acked => Recorder::bump(&recorder.acked),
        Event::Failed => Recorder::bump(&recorder.errors),
    })
}
