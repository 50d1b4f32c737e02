//! File commands: `send-file`, `download`, `forward`, `sticker ...`. Transfers show a progress
//! bar (bytes, rate, time left) on a terminal, and a plain line every few seconds otherwise.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chapar_client::files::{FileOptions, Progress, parse_kind};
use chapar_client::{Client, CoreError as ClientError, Target};
use chapar_types::ErrorCode;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};

use crate::output;

/// How often progress is printed when stderr is not a terminal.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// `chapar sticker ...`
#[derive(Subcommand)]
pub enum StickerCommand {
    /// Make a sticker pack from pictures (each `PATH` or `PATH=EMOJI`); prints its id.
    Create {
        /// The pack's name.
        name: String,
        /// Pictures, optionally with the emoji each stands for.
        #[arg(required = true)]
        stickers: Vec<String>,
    },
    /// List installed sticker packs.
    List,
    /// Send an installed pack to a chat, so its members can install it.
    Share {
        /// @username or group id.
        target: String,
        /// The pack's id.
        pack: String,
    },
    /// Install the pack a message shared.
    Install {
        /// The id of the message that shared it.
        message_id: String,
        /// The chat the message is in (only needed if its id is in several).
        #[arg(long)]
        chat: Option<String>,
    },
    /// Send a sticker from an installed pack.
    Send {
        /// @username or group id.
        target: String,
        /// The pack's id.
        pack: String,
        /// Which sticker (0 for the first).
        index: usize,
    },
}

/// Shows a transfer's progress.
struct Meter {
    bar: Option<ProgressBar>,
    what: String,
    last_line: Instant,
}

impl Meter {
    fn new(what: &str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            if let Ok(style) = ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec}, {eta} left",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(what.to_owned());
            bar
        });
        Self {
            bar,
            what: what.to_owned(),
            last_line: Instant::now() - PLAIN_PROGRESS_EVERY,
        }
    }

    fn update(&mut self, p: Progress) {
        match &self.bar {
            Some(bar) => {
                bar.set_length(p.total);
                bar.set_position(p.done);
            }
            None => {
                if self.last_line.elapsed() >= PLAIN_PROGRESS_EVERY || p.done == p.total {
                    self.last_line = Instant::now();
                    let percent = (p.done * 100).checked_div(p.total).unwrap_or(100);
                    eprintln!(
                        "{}: {} of {} bytes ({percent}%)",
                        self.what, p.done, p.total
                    );
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `chapar send-file`: prints the message id once the server has the message.
pub async fn send_file(
    client: &mut Client,
    target: &str,
    path: &Path,
    caption: Option<String>,
    kind: Option<&str>,
) -> anyhow::Result<()> {
    let kind = kind
        .map(|k| {
            parse_kind(k).ok_or_else(|| {
                anyhow::anyhow!("--as takes photo, video, voice, file or sticker, not {k:?}")
            })
        })
        .transpose()?;
    let mut meter = Meter::new("uploading");
    let sent = client
        .send_file(
            &Target::parse(target)?,
            path,
            FileOptions {
                caption,
                kind,
                reply_to: None,
            },
            |p| meter.update(p),
        )
        .await;
    meter.finish();
    if let Err(e) = &sent
        && worth_retrying(e)
    {
        eprintln!("The upload can resume: run the same command again.");
    }
    println!("{}", sent?.id);
    Ok(())
}

/// Whether running the same transfer again may succeed (the network or the server's disk),
/// as opposed to a refusal that will not change (too large, over quota).
fn worth_retrying(e: &ClientError) -> bool {
    match e {
        ClientError::Connection(_) => true,
        ClientError::Server { code, .. } => matches!(
            code,
            ErrorCode::Unavailable
                | ErrorCode::StorageFull
                | ErrorCode::UploadBusy
                | ErrorCode::Internal
        ),
        _ => false,
    }
}

/// `chapar download`: prints where the file went.
pub async fn download(
    client: &mut Client,
    id: chapar_types::MessageId,
    chat: Option<&Target>,
    out: Option<PathBuf>,
) -> anyhow::Result<()> {
    let mut meter = Meter::new("downloading");
    let saved = client
        .download(id, chat, out.as_deref(), |p| meter.update(p))
        .await;
    meter.finish();
    if let Err(e) = &saved
        && worth_retrying(e)
    {
        eprintln!("The download can resume: run the same command again.");
    }
    println!("{}", saved?.display());
    Ok(())
}

/// A sticker pack id as typed: 32 hex digits.
fn pack_id(text: &str) -> anyhow::Result<[u8; 16]> {
    hex::decode(text)
        .ok()
        .and_then(|id| <[u8; 16]>::try_from(id.as_slice()).ok())
        .ok_or_else(|| anyhow::anyhow!("{text:?} is not a sticker pack id"))
}

/// `chapar sticker ...`
pub async fn sticker(client: &mut Client, command: StickerCommand) -> anyhow::Result<()> {
    match command {
        StickerCommand::Create { name, stickers } => {
            let stickers: Vec<(PathBuf, String)> = stickers
                .iter()
                .map(|s| match s.rsplit_once('=') {
                    Some((path, emoji)) => (PathBuf::from(path), emoji.to_owned()),
                    None => (PathBuf::from(s), String::new()),
                })
                .collect();
            println!(
                "{}",
                hex::encode(client.create_sticker_pack(&name, &stickers).await?)
            );
        }
        StickerCommand::List => {
            for pack in client.sticker_packs()? {
                println!(
                    "{}\t{}\t{}",
                    hex::encode(pack.id),
                    output::printable(&pack.name, false),
                    output::printable(&pack.stickers.join(" "), false)
                );
            }
        }
        StickerCommand::Share { target, pack } => {
            let sent = client
                .share_sticker_pack(&Target::parse(&target)?, pack_id(&pack)?)
                .await?;
            println!("{}", sent.id);
        }
        StickerCommand::Install { message_id, chat } => {
            let id = crate::message_id(&message_id)?;
            let chat = chat.as_deref().map(Target::parse).transpose()?;
            println!(
                "{}",
                hex::encode(client.install_sticker_pack(id, chat.as_ref())?)
            );
        }
        StickerCommand::Send {
            target,
            pack,
            index,
        } => {
            let sent = client
                .send_sticker(&Target::parse(&target)?, pack_id(&pack)?, index)
                .await?;
            output::print_message(client.engine(), &sent, false);
        }
    }
    Ok(())
}
