//! `chapar`: the Chapar server and client in one binary.
//!
//! `chapar server` runs the server; every other subcommand is a client command acting on one
//! profile directory. This file only parses arguments and prints; the work is in
//! `chapar-server` and `chapar-client`.

mod devices_cmd;
mod files_cmd;
mod output;
mod relay_cmd;
mod server_cmd;
mod server_limits;
mod words;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use chapar_client::{Client, Target};
use chapar_types::{GroupId, MessageId, Username};
use clap::{Parser, Subcommand};

/// Chapar: end-to-end encrypted messaging that survives censorship.
#[derive(Parser)]
#[command(name = "chapar", version, about)]
struct Cli {
    /// Profile directory for client commands (keys, MLS state, history).
    #[arg(long, global = true, env = "CHAPAR_PROFILE")]
    profile: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server until SIGINT or SIGTERM.
    Server(Box<server_cmd::ServerArgs>),
    /// Run a volunteer relay in front of a server until SIGINT or SIGTERM; prints the relay
    /// link clients use as their server address.
    Relay(relay_cmd::RelayArgs),
    /// Create an account; this profile becomes its first device. Prints the recovery key once.
    Register {
        /// Server URL, e.g. http://127.0.0.1:8080
        #[arg(long)]
        server: String,
        /// Lowercase a-z, 0-9 and _, 3 to 32 characters.
        #[arg(long)]
        username: String,
        /// This device's name, seen only by your own devices [default: the host name]
        #[arg(long)]
        device_name: Option<String>,
        /// The invite code, on a server that registers by invitation only.
        #[arg(long, default_value = "")]
        invite: String,
    },
    /// Make this (empty) profile a new device of an existing account: prints a link code (and
    /// a QR code), waits for another device to approve it, then shows the full history.
    Link {
        /// Server URL, e.g. http://127.0.0.1:8080
        #[arg(long)]
        server: String,
        /// This device's name [default: the host name]
        #[arg(long)]
        device_name: Option<String>,
    },
    /// Approve or revoke devices of your account.
    #[command(subcommand)]
    Device(devices_cmd::DeviceCommand),
    /// List your account's devices.
    Devices {
        /// One JSON object per line (id, name, current, added, last_seen, revoked).
        #[arg(long)]
        json: bool,
    },
    /// Replace your recovery key; prints the new one alone on stdout.
    RecoveryKey {
        /// Make a new key (the old one stops working).
        #[arg(long, required = true)]
        rotate: bool,
    },
    /// Restore your account and its full history on this (empty) profile with your recovery
    /// key, after your other devices are lost. Revokes the old devices unless told not to.
    Recover {
        /// Server URL, e.g. http://127.0.0.1:8080
        #[arg(long)]
        server: String,
        /// Your username.
        #[arg(long)]
        username: String,
        /// The recovery key you wrote down; `-` reads it from stdin (so it does not show in the
        /// process list).
        #[arg(long, env = "CHAPAR_RECOVERY_KEY", hide_env_values = true)]
        recovery_key: String,
        /// This device's name [default: the host name]
        #[arg(long)]
        device_name: Option<String>,
        /// Keep the old devices instead of revoking them.
        #[arg(long)]
        keep_devices: bool,
    },
    /// Send a file, photo, video or voice note (encrypted here; the upload resumes if the
    /// command is run again after an interruption). Prints the message id.
    SendFile {
        /// @username or group id.
        target: String,
        /// The file.
        path: PathBuf,
        /// A caption shown with it.
        #[arg(long)]
        caption: Option<String>,
        /// What it shows as: photo, video, voice, file or sticker [default: from its name]
        #[arg(long = "as")]
        kind: Option<String>,
    },
    /// Download the file of a message (resumable; the digest is checked). Prints where it went.
    Download {
        /// The message's id, as `messages --json` shows it.
        message_id: String,
        /// Where to put it (a new file, or a directory) [default: its name, here]
        #[arg(long)]
        out: Option<PathBuf>,
        /// The chat the message is in (only needed if its id is in several).
        #[arg(long)]
        chat: Option<String>,
    },
    /// Send the file of a message to another chat, without uploading it again.
    Forward {
        /// The message's id.
        message_id: String,
        /// @username or group id.
        target: String,
        /// The chat the message is in (only needed if its id is in several).
        #[arg(long)]
        from: Option<String>,
    },
    /// Make, share, install and send sticker packs.
    #[command(subcommand)]
    Sticker(files_cmd::StickerCommand),
    /// Mark a chat read up to its newest message, on all your devices.
    Read {
        /// @username or group id.
        target: String,
    },
    /// Send a text message to @user (a 1:1 chat, created on first use) or a group id. Prints the
    /// message id once the server has acknowledged it.
    Send {
        /// @username or group id.
        target: String,
        /// The text.
        text: String,
        /// Id of the message this replies to.
        #[arg(long)]
        reply_to: Option<String>,
    },
    /// Edit one of your messages.
    Edit {
        /// @username or group id.
        target: String,
        /// Id of the message to edit.
        id: String,
        /// The new text.
        text: String,
    },
    /// Delete one of your messages for everyone.
    Delete {
        /// @username or group id.
        target: String,
        /// Id of the message to delete.
        id: String,
    },
    /// React to a message with an emoji.
    React {
        /// @username or group id.
        target: String,
        /// Id of the message.
        id: String,
        /// The reaction.
        emoji: String,
        /// Withdraw the reaction instead.
        #[arg(long)]
        remove: bool,
    },
    /// Manage group chats.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Fetch, decrypt and store everything new; print new messages.
    Sync {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Print a chat's local history, oldest first.
    Messages {
        /// @username or group id.
        target: String,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// List the chats on this device.
    Chats,
    /// Stay connected and print messages as they arrive.
    Listen {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Show the safety number to compare with @user out of band.
    Fingerprint {
        /// @username
        user: String,
    },
    /// Trust @user's changed identity key, after comparing the safety number `fingerprint`
    /// shows with them. Until then nothing is sent to them or added for them.
    Trust {
        /// @username
        user: String,
    },
    /// Relays: other addresses of the account's server, tried in turn when one is blocked.
    #[command(subcommand)]
    Relays(RelaysCommand),
}

#[derive(Subcommand)]
enum RelaysCommand {
    /// The relays this profile tries, oldest first.
    List,
    /// Add a relay link (as `chapar relay` prints it, or as received in a chat).
    Add {
        /// e.g. https://relay.example:443#sha256=...
        link: String,
    },
    /// Stop using a relay.
    Remove {
        /// The link as added.
        link: String,
    },
}

#[derive(Subcommand)]
enum GroupCommand {
    /// Create a group; prints its id.
    Create {
        /// The group's name (travels only inside MLS).
        name: String,
        /// A member to add (repeatable).
        #[arg(long = "member", required = true)]
        members: Vec<String>,
    },
    /// Add every device of a user to the group.
    Add {
        /// Group id.
        group: String,
        /// @username
        user: String,
    },
    /// Remove every device of a user from the group.
    Remove {
        /// Group id.
        group: String,
        /// @username
        user: String,
    },
    /// Leave the group.
    Leave {
        /// Group id.
        group: String,
    },
    /// List the devices in a chat (@username or group id).
    Members {
        /// @username or group id.
        target: String,
    },
}

fn default_profile() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("chapar")
}

fn user(text: &str) -> anyhow::Result<Username> {
    Username::parse(text).map_err(|e| anyhow::anyhow!("{text:?}: {e}"))
}

fn group(text: &str) -> anyhow::Result<GroupId> {
    text.parse()
        .map_err(|_| anyhow::anyhow!("{text:?} is not a group id (32 hex digits)"))
}

pub(crate) fn message_id(text: &str) -> anyhow::Result<MessageId> {
    text.parse()
        .map_err(|_| anyhow::anyhow!("{text:?} is not a message id (32 hex digits)"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let is_server = matches!(cli.command, Command::Server(_) | Command::Relay(_));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Server(args) => server_cmd::run_server(*args).await,
            Command::Relay(args) => relay_cmd::run_relay(args).await,
            command => {
                init_client_logging();
                client_command(cli.profile.unwrap_or_else(default_profile), command).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if is_server {
                tracing::error!("{e:#}");
            }
            eprintln!("error: {}", words::chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn init_client_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CHAPAR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn client_command(profile: PathBuf, command: Command) -> anyhow::Result<()> {
    let mut client =
        Client::open(&profile).with_context(|| format!("opening profile {}", profile.display()))?;
    let result = run_client(&mut client, command).await;
    print_warnings(&client.take_warnings());
    result.map_err(|e| {
        let revoked = e
            .downcast_ref::<chapar_client::CoreError>()
            .and_then(|c| c.code())
            == Some(chapar_types::ErrorCode::DeviceRevoked);
        if revoked {
            anyhow::anyhow!(
                "this device was revoked by another device of your account: it can no longer \
                 send or receive (device_revoked). To use this machine again, link it anew \
                 with `chapar link` on a new profile"
            )
        } else {
            e
        }
    })
}

/// Prints warnings on stderr, one per line.
pub(crate) fn print_warnings(warnings: &[chapar_client::Warning]) {
    for line in warnings.iter().filter_map(words::warning) {
        eprintln!("{line}");
    }
}

async fn run_client(client: &mut Client, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Server(_) | Command::Relay(_) => unreachable!("handled by main"),
        Command::Register {
            server,
            username,
            device_name,
            invite,
        } => {
            let name = device_name.unwrap_or_else(devices_cmd::default_device_name);
            let recovery_key = client.register(&server, &username, &name, &invite).await?;
            println!("registered @{}", username.trim_start_matches('@'));
            println!("recovery key: {recovery_key}");
            eprintln!(
                "Write the recovery key down and keep it safe. With it and your username you can \
                 restore your account and its history on a new device if you lose all of yours; \
                 without it, nothing can be restored. It is shown only now."
            );
        }
        Command::Link {
            server,
            device_name,
        } => {
            let name = device_name.unwrap_or_else(devices_cmd::default_device_name);
            devices_cmd::link(client, &server, &name).await?;
        }
        Command::Device(command) => devices_cmd::device(client, command).await?,
        Command::Devices { json } => devices_cmd::devices(client, json).await?,
        Command::RecoveryKey { rotate: _ } => devices_cmd::rotate_recovery_key(client).await?,
        Command::Recover {
            server,
            username,
            recovery_key,
            device_name,
            keep_devices,
        } => {
            let name = device_name.unwrap_or_else(devices_cmd::default_device_name);
            devices_cmd::recover(
                client,
                &server,
                &username,
                &recovery_key,
                &name,
                keep_devices,
            )
            .await?;
        }
        Command::SendFile {
            target,
            path,
            caption,
            kind,
        } => files_cmd::send_file(client, &target, &path, caption, kind.as_deref()).await?,
        Command::Download {
            message_id: id,
            out,
            chat,
        } => {
            let chat = chat.as_deref().map(Target::parse).transpose()?;
            files_cmd::download(client, message_id(&id)?, chat.as_ref(), out).await?
        }
        Command::Forward {
            message_id: id,
            target,
            from,
        } => {
            let from = from.as_deref().map(Target::parse).transpose()?;
            let sent = client
                .forward(message_id(&id)?, from.as_ref(), &Target::parse(&target)?)
                .await?;
            println!("{}", sent.id);
        }
        Command::Sticker(command) => files_cmd::sticker(client, command).await?,
        Command::Read { target } => {
            client.mark_read(&Target::parse(&target)?).await?;
        }
        Command::Send {
            target,
            text,
            reply_to,
        } => {
            let reply_to = reply_to.as_deref().map(message_id).transpose()?;
            let sent = client
                .send_text(&Target::parse(&target)?, &text, reply_to)
                .await?;
            println!("{}", sent.id);
        }
        Command::Edit { target, id, text } => {
            client
                .edit(&Target::parse(&target)?, message_id(&id)?, &text)
                .await?
        }
        Command::Delete { target, id } => {
            client
                .delete(&Target::parse(&target)?, message_id(&id)?)
                .await?
        }
        Command::React {
            target,
            id,
            emoji,
            remove,
        } => {
            client
                .react(&Target::parse(&target)?, message_id(&id)?, &emoji, remove)
                .await?;
        }
        Command::Group(GroupCommand::Create { name, members }) => {
            let members = members
                .iter()
                .map(|m| user(m))
                .collect::<anyhow::Result<Vec<_>>>()?;
            println!("{}", client.create_group(&name, &members).await?);
        }
        Command::Group(GroupCommand::Add { group: g, user: u }) => {
            client.add_member(group(&g)?, &user(&u)?).await?
        }
        Command::Group(GroupCommand::Remove { group: g, user: u }) => {
            client.remove_member(group(&g)?, &user(&u)?).await?
        }
        Command::Group(GroupCommand::Leave { group: g }) => client.leave(group(&g)?).await?,
        Command::Group(GroupCommand::Members { target }) => {
            for (user, device) in client.members(&Target::parse(&target)?)? {
                println!("@{user}\t{device}");
            }
        }
        Command::Sync { json } => {
            for message in client.sync().await? {
                output::print_message(client.engine(), &message, json);
            }
        }
        Command::Messages { target, json } => {
            for message in client.messages(&Target::parse(&target)?)? {
                output::print_message(client.engine(), &message, json);
            }
        }
        Command::Relays(RelaysCommand::List) => {
            for relay in client.engine().relays()? {
                println!("{relay}");
            }
        }
        Command::Relays(RelaysCommand::Add { link }) => {
            // Checked as a server address is (scheme, key pin) before it is kept.
            chapar_client::tls::ServerAddress::parse(&link)?;
            if !client.engine().add_relay(&link)? {
                eprintln!("already there");
            }
        }
        Command::Relays(RelaysCommand::Remove { link }) => {
            if !client.engine().remove_relay(&link)? {
                anyhow::bail!("no such relay: {link}");
            }
        }
        Command::Chats => {
            for summary in client.chats()? {
                let chat = &summary.chat;
                println!(
                    "{}\t{}\t{}\t{}\t{} unread",
                    output::label(chat),
                    chat.kind.as_str(),
                    chat.state.as_str(),
                    output::printable(&chat.name, false),
                    summary.unread
                );
            }
        }
        Command::Listen { json } => {
            client
                .listen(|engine, message, warnings| {
                    print_warnings(warnings);
                    output::print_message(engine, message, json);
                })
                .await?;
        }
        Command::Fingerprint { user: u } => {
            let u = user(&u)?;
            let number = client.fingerprint(&u).await?;
            println!("Safety number with @{u}:\n{number}");
            println!(
                "Compare it with @{u} in person or over a call; if it differs, someone is in the middle."
            );
        }
        Command::Trust { user: u } => {
            let u = user(&u)?;
            if client.trust(&u).await? {
                println!("Trusting the new identity key of @{u}.");
            } else {
                println!("The identity key of @{u} has not changed; nothing to trust.");
            }
        }
    }
    Ok(())
}
