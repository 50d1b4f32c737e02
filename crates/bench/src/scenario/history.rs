//! `history`: what it costs to bring a newly linked device up to date. An account gets a
//! history of N messages across C direct chats (half sent by it one at a time, half received
//! and synced in bulk), all through the real client SDK, so the archive is segmented the way
//! real use segments it. Then a new device links and restores; the report gives the time from
//! approval to a complete history, and the bytes the new device moved, for each N.
//!
//! Always end to end (the SDK does real MLS); `--server-only` does not apply.

use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;
use chapar_client::{Client, Target};
use chapar_types::Username;

use super::Common;

/// `history` options.
#[derive(clap::Args, Clone)]
pub struct Args {
    /// History sizes to measure, in messages (a fresh account for each).
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000")]
    pub messages: Vec<usize>,
    /// Direct chats the history is spread over (at least one).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..))]
    pub chats: u16,
    /// Plaintext bytes per message.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
}

/// One history size's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    /// Messages in the history.
    pub messages: usize,
    /// Chats they are spread over.
    pub chats: u16,
    /// Seconds to write the history (not part of the cost of linking).
    pub fill_secs: f64,
    /// Seconds from the approving device's first request to the new device showing everything.
    pub link_secs: f64,
    /// Seconds the approving device spent (adding the device to every chat, archiving).
    pub approve_secs: f64,
    /// History events the new device restored from the archive.
    pub restored_events: u64,
    /// Archive segments it downloaded.
    pub archive_segments: u64,
    /// Archive ciphertext bytes it downloaded.
    pub archive_bytes: u64,
    /// All protocol bytes the new device received (archive, welcomes, logs, ...).
    pub bytes_received: u64,
    /// All protocol bytes the new device sent.
    pub bytes_sent: u64,
    /// Messages the new device shows once linked (must equal `messages`).
    pub messages_shown: usize,
}

fn text(size: usize, n: usize) -> String {
    let mut text = format!("message {n} ");
    while text.len() < size {
        text.push('x');
    }
    text
}

async fn registered(dir: &Path, url: &str, name: &str) -> anyhow::Result<(Client, Username)> {
    let mut client = Client::open(&dir.join(name))?;
    client.register(url, name, "bench", "").await?;
    Ok((client, Username::parse(name)?))
}

/// Measures each history size in turn.
pub async fn run(common: &Common, args: &Args) -> anyhow::Result<Vec<Row>> {
    let url = format!("http://{}", common.server);
    let mut rows = Vec::new();
    for (round, &messages) in args.messages.iter().enumerate() {
        let dir = tempfile::tempdir()?;
        let tag = format!("{}{round}", common.run_tag);
        let (mut alice, alice_name) = registered(dir.path(), &url, &format!("{tag}a")).await?;
        let mut peers = Vec::new();
        for i in 0..args.chats {
            peers.push(registered(dir.path(), &url, &format!("{tag}p{i}")).await?);
        }
        let per_chat = messages / usize::from(args.chats);
        let fill = Instant::now();
        // Half of each chat is the account's own messages, sent one by one...
        let mut n = 0;
        for (_, peer) in &peers {
            for _ in 0..per_chat / 2 {
                alice
                    .send_text(&Target::User(peer.clone()), &text(args.size, n), None)
                    .await?;
                n += 1;
            }
        }
        // ...and half arrives from the other side and is synced in one go.
        for (peer, _) in &mut peers {
            peer.sync().await?;
            for _ in per_chat / 2..per_chat {
                peer.send_text(&Target::User(alice_name.clone()), &text(args.size, n), None)
                    .await?;
                n += 1;
            }
        }
        alice.sync().await?;
        let fill_secs = fill.elapsed().as_secs_f64();

        let mut laptop = Client::open(&dir.path().join("laptop"))?;
        // The new device shows its code while it waits; the approving device takes it from
        // there, as a person would type it.
        let (code_tx, code_rx) = tokio::sync::oneshot::channel::<String>();
        let mut code_tx = Some(code_tx);
        let started = Instant::now();
        let (linked, approved) = tokio::join!(
            laptop.link(
                &url,
                "laptop",
                600_000,
                |code, _| {
                    if let Some(tx) = code_tx.take() {
                        let _ = tx.send(code.to_owned());
                    }
                },
                |_| true
            ),
            async {
                let approved = match code_rx.await {
                    Ok(code) => alice.approve_link(&code, |_| true).await,
                    Err(_) => Err(chapar_client::CoreError::Protocol(
                        "the new device showed no code".into(),
                    )),
                };
                (approved, started.elapsed().as_secs_f64())
            }
        );
        let link_secs = started.elapsed().as_secs_f64();
        let linked = linked.context("linking")?;
        let approve_secs = approved.1;
        approved.0.context("approving")?;
        let mut shown = 0;
        for (_, peer) in &peers {
            shown += laptop.messages(&Target::User(peer.clone()))?.len();
        }
        rows.push(Row {
            messages: n,
            chats: args.chats,
            fill_secs,
            link_secs,
            approve_secs,
            restored_events: linked.restored.events,
            archive_segments: linked.restored.segments,
            archive_bytes: linked.restored.bytes,
            bytes_received: linked.bytes_received,
            bytes_sent: linked.bytes_sent,
            messages_shown: shown,
        });
    }
    Ok(rows)
}
