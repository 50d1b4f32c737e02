//! `chapar`: the Chapar server and client in one binary.
//!
//! `chapar server` runs the server and `chapar relay` a relay; every other subcommand is a
//! client command acting on one profile directory. `args` defines the command line; this file
//! dispatches it and prints; the work is in `chapar-server`, `chapar-relay` and
//! `chapar-client`.

mod args;
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
use args::{Cli, Command, GroupCommand, RelaysCommand};
use chapar_client::{Client, Target};
use chapar_types::{GroupId, MessageId, Username};
use clap::Parser as _;

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
            // A link that cannot lead to this account's server (plain HTTP to a TLS server,
            // another key pin) is refused before it is kept.
            let server = client
                .engine()
                .server()
                .ok_or(chapar_client::Usage::NoAccount)?;
            chapar_client::tls::ServerAddress::parse(server)?.through_relay(&link)?;
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
