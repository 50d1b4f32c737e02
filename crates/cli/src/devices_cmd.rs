//! Multi-device commands: `link`, `device approve|revoke`, `devices`, `recovery-key`,
//! `recover`. Output rules: what a script needs goes to stdout alone on its line (the link
//! code first, the recovery key); explanations, fingerprints and the QR code go to stderr.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use anyhow::Context as _;
use chapar_client::{ApprovalPreview, Client, LINK_PEER_WAIT_MS, LinkPreview};
use chapar_types::DeviceId;
use clap::Subcommand;
use qrcode::QrCode;
use qrcode::render::unicode::Dense1x2;

use crate::output::rfc3339;

/// `chapar device ...`
#[derive(Subcommand)]
pub enum DeviceCommand {
    /// Approve a new device of your account, given the code it shows.
    Approve {
        /// The link code the new device shows.
        code: String,
        /// Approve without asking (for scripts). Compare the fingerprints anyway.
        #[arg(long)]
        yes: bool,
    },
    /// Revoke another device of your account: it is removed from every chat at once and can
    /// no longer fetch anything.
    Revoke {
        /// The device id, as `chapar devices` shows it.
        device_id: String,
    },
}

/// The name a device gets unless told otherwise: the machine's host name.
pub fn default_device_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "chapar".into())
}

fn print_qr(code: &str) {
    match QrCode::new(code.as_bytes()) {
        Ok(qr) => {
            let art = qr
                .render::<Dense1x2>()
                .dark_color(Dense1x2::Light)
                .light_color(Dense1x2::Dark)
                .build();
            eprintln!("{art}");
        }
        Err(e) => eprintln!("(cannot draw a QR code: {e})"),
    }
}

/// `chapar link`: prints the code on stdout's first line, waits for approval, then catches up.
pub async fn link(client: &mut Client, server: &str, name: &str) -> anyhow::Result<()> {
    let show_code = |code: &str, fingerprint: &str| {
        {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{code}");
            let _ = stdout.flush();
        }
        print_qr(code);
        eprintln!(
            "On a device already signed in, run:\n\n    chapar device approve {code}\n\n\
             and check that it shows this device's fingerprint: {fingerprint}\n\
             Waiting for approval (up to {} minutes)...",
            chapar_types::limits::LINK_TTL_SECS / 60
        );
    };
    let linked = client
        .link(
            server,
            name,
            chapar_types::limits::LINK_TTL_SECS * 1000,
            show_code,
            confirm_account,
        )
        .await?;
    if !linked.completed {
        eprintln!(
            "The approving device has not finished adding this one to every chat; the rest \
             arrives when your devices next sync."
        );
    }
    println!(
        "linked to @{} as device {}: {} chats, {} messages restored from the archive",
        linked.username, linked.device, linked.chats, linked.restored.events
    );
    Ok(())
}

/// Shows which account approved this device; asks on a terminal (whoever saw the code could
/// have approved it from their own account).
fn confirm_account(preview: &ApprovalPreview) -> bool {
    eprintln!(
        "Approved by @{}, from the device with fingerprint {}.",
        preview.username, preview.approver_fingerprint
    );
    if !std::io::stdin().is_terminal() {
        return true;
    }
    ask_yes_no(&format!(
        "Join @{}'s account on this device?",
        preview.username
    ))
}

fn confirm_on_terminal(preview: &LinkPreview) -> bool {
    eprintln!(
        "A new device asks to join your account:\n  name:        {}\n  device id:   {}\n  \
         fingerprint: {}   (the new device shows the same)\n  this device: {}",
        preview.name, preview.device, preview.fingerprint, preview.approver_fingerprint
    );
    if !std::io::stdin().is_terminal() {
        eprintln!("Not a terminal: pass --yes to approve from a script.");
        return false;
    }
    ask_yes_no("Approve it? It will see all your chats and their history.")
}

/// Asks `question` on the terminal; anything but yes (or no answer) is no.
fn ask_yes_no(question: &str) -> bool {
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim(), "y" | "Y" | "yes")
}

/// `chapar device ...`
pub async fn device(client: &mut Client, command: DeviceCommand) -> anyhow::Result<()> {
    match command {
        DeviceCommand::Approve { code, yes } => {
            let approved = client
                .approve_link(&code, |preview| {
                    if yes {
                        eprintln!(
                            "Approving device {} ({}), fingerprint {}",
                            preview.device, preview.name, preview.fingerprint
                        );
                        true
                    } else {
                        confirm_on_terminal(preview)
                    }
                })
                .await?;
            if approved.completed {
                println!(
                    "approved device {}: added to {} chats",
                    approved.device, approved.chats
                );
            } else {
                println!(
                    "approved device {}, but it did not come online within {} seconds; your \
                     devices add it to your chats when it does",
                    approved.device,
                    LINK_PEER_WAIT_MS / 1000
                );
            }
        }
        DeviceCommand::Revoke { device_id } => {
            let device: DeviceId = device_id
                .parse()
                .map_err(|_| anyhow::anyhow!("{device_id:?} is not a device id (16 hex digits)"))?;
            let revoked = client.revoke_device(device).await?;
            println!("revoked device {device}");
            if revoked.chats_left_with_it > 0 {
                eprintln!(
                    "It is still in {} of your chats (their devices could not be updated now); \
                     your next `chapar sync` tries again.",
                    revoked.chats_left_with_it
                );
            }
            if let Some(key) = revoked.new_recovery_key {
                println!("new recovery key: {key}");
                eprintln!(
                    "The revoked device had set your recovery key, so it was replaced. Write the \
                     new one down; the old one no longer works."
                );
            }
        }
    }
    Ok(())
}

/// `chapar devices`
pub async fn devices(client: &mut Client, json: bool) -> anyhow::Result<()> {
    for d in client.devices().await? {
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "id": d.id.to_string(),
                    "name": d.name,
                    "current": d.current,
                    "added": rfc3339(d.added_ms as i64),
                    "last_seen": d.last_seen_ms.map(|t| rfc3339(t as i64)),
                    "revoked": d.revoked_ms.map(|t| rfc3339(t as i64)),
                    "fingerprint": d.fingerprint,
                })
            );
        } else {
            let state = match (d.revoked_ms, d.current) {
                (Some(t), _) => format!("revoked {}", rfc3339(t as i64)),
                (None, true) => "this device".into(),
                (None, false) => match d.last_seen_ms {
                    Some(t) => format!("last seen {}", rfc3339(t as i64)),
                    None => "never seen".into(),
                },
            };
            println!(
                "{}\t{}\tadded {}\t{}",
                d.id,
                d.name.as_deref().unwrap_or("(unnamed)"),
                rfc3339(d.added_ms as i64),
                state
            );
        }
    }
    Ok(())
}

/// `chapar recovery-key --rotate`
pub async fn rotate_recovery_key(client: &mut Client) -> anyhow::Result<()> {
    let key = client.rotate_recovery_key().await?;
    println!("{key}");
    eprintln!(
        "This is your new recovery key; the old one no longer works. Write it down and keep it \
         somewhere safe: with it and your username, anyone can take over your account. It is \
         not stored anywhere, so it cannot be shown again."
    );
    Ok(())
}

/// `chapar recover`
pub async fn recover(
    client: &mut Client,
    server: &str,
    username: &str,
    recovery_key: &str,
    name: &str,
    keep_devices: bool,
) -> anyhow::Result<()> {
    let typed;
    let recovery_key = if recovery_key == "-" {
        // Read from stdin, so the key does not show in the process list or shell history.
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        typed = line;
        typed.trim()
    } else {
        recovery_key
    };
    let recovered = client
        .recover(server, username, recovery_key, name, !keep_devices)
        .await
        .context("recovery failed")?;
    println!(
        "recovered @{} as device {}: {} chats, {} messages restored; {} old devices revoked",
        username.trim_start_matches('@'),
        recovered.device,
        recovered.chats,
        recovered.restored.events,
        recovered.revoked
    );
    eprintln!(
        "Your contacts' devices add this one to your chats as they come online. Make a new \
         recovery key with `chapar recovery-key --rotate` if the old one may have been seen."
    );
    Ok(())
}
