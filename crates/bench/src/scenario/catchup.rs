//! `catchup`: one device is offline while N messages arrive in its chat; it then connects and
//! fetches everything (and, end to end, decrypts it). Reports the time to fetch and to decrypt.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::bail;
use chapar_wire::v1::{self, client_frame::Request, response::Result as Reply};
use tokio::sync::Semaphore;

use super::Common;
use crate::conn::{Event, Handler};
use crate::device::{self, Device, message_id, stamped_payload};

/// `catchup` options.
#[derive(clap::Args, Clone)]
pub struct Args {
    /// Messages that arrive while the device is offline.
    #[arg(long, default_value_t = 100_000)]
    pub messages: u64,
    /// Sends in flight at once while filling.
    #[arg(long, default_value_t = 256)]
    pub window: usize,
    /// Plaintext bytes per message.
    #[arg(long, default_value_t = 200)]
    pub size: usize,
}

/// The figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Messages fetched.
    pub messages: u64,
    /// Seconds to fetch them all.
    pub fetch_secs: f64,
    /// Seconds to decrypt them all (end-to-end mode; 0 server-only).
    pub decrypt_secs: f64,
    /// Bytes fetched (payloads).
    pub bytes: u64,
    /// Seconds the sender took to fill the chat.
    pub fill_secs: f64,
}

/// Fills the chat, then times the catch-up.
pub async fn run(common: &Common, args: &Args) -> anyhow::Result<Report> {
    let window = Arc::new(Semaphore::new(args.window));
    let sender_cell = Arc::new(OnceLock::new());
    let handler: Handler = {
        let window = window.clone();
        Arc::new(move |event| {
            if matches!(event, Event::Acked | Event::Failed) {
                window.add_permits(1);
            }
        })
    };
    let sender = Arc::new(
        device::register(
            common.server,
            &common.username("cus", 0),
            !common.server_only,
            handler,
        )
        .await?,
    );
    let _ = sender_cell.set(sender.clone());
    let noop: Handler = Arc::new(|_| {});
    let offline: Arc<Device> = Arc::new(
        device::register(
            common.server,
            &common.username("cur", 0),
            !common.server_only,
            noop.clone(),
        )
        .await?,
    );
    let (group, epoch) = device::form_group(&[sender.clone(), offline.clone()]).await?;

    let fill = Instant::now();
    for counter in 0..args.messages {
        window.acquire().await?.forget();
        let ciphertext = device::seal(&sender, &stamped_payload(0, counter, args.size))?;
        sender
            .conn
            .send_nowait(Request::SendMessage(v1::SendMessage {
                group_id: group.as_bytes().to_vec(),
                epoch,
                message_id: message_id(sender.id, counter),
                ciphertext,
                // The load generator never changes devices, so rosters stay at version 0.
                roster_version: 0,
                ..Default::default()
            }))
            .await?;
    }
    let _ = tokio::time::timeout(
        Duration::from_secs(60),
        window.acquire_many(args.window as u32),
    )
    .await;
    let fill_secs = fill.elapsed().as_secs_f64();
    eprintln!(
        "catchup: filled {} messages in {fill_secs:.1} s",
        args.messages
    );

    // The offline device comes back on a new connection and reads the log from the start.
    let conn = device::login(common.server, None, &offline, noop).await?;
    let start = Instant::now();
    let (mut after, mut payloads, mut bytes) = (0u64, Vec::new(), 0u64);
    loop {
        let Reply::LogPage(page) = conn
            .request(Request::FetchLog(v1::FetchLog {
                group_id: group.as_bytes().to_vec(),
                after_seq: after,
                limit: 500,
            }))
            .await?
        else {
            bail!("expected LogPage");
        };
        let Some(last) = page.entries.last().map(|e| e.seq) else {
            break;
        };
        after = last;
        for entry in page.entries {
            bytes += entry.payload.len() as u64;
            if entry.kind == v1::EntryKind::Application as i32 {
                payloads.push(entry.payload);
            }
        }
        if after >= page.head_seq {
            break;
        }
    }
    let fetch_secs = start.elapsed().as_secs_f64();
    let decrypt = Instant::now();
    let mut readable = 0u64;
    if offline.mls.is_some() {
        for payload in &payloads {
            if device::open(offline.mls.as_ref(), payload).is_some() {
                readable += 1;
            }
        }
        if readable != payloads.len() as u64 {
            bail!("only {readable} of {} messages decrypted", payloads.len());
        }
    }
    let decrypt_secs = if offline.mls.is_some() {
        decrypt.elapsed().as_secs_f64()
    } else {
        0.0
    };
    Ok(Report {
        messages: payloads.len() as u64,
        fetch_secs,
        decrypt_secs,
        bytes,
        fill_secs,
    })
}
