//! How the CLI words what the engine reports as data: warnings, and errors where the CLI has
//! something to add (which command to run next). Everything the engine says is typed; these
//! sentences are the CLI's.

use chapar_client::{CoreError, Usage, Warning};

/// A warning, as a line for stderr.
pub fn warning(warning: &Warning) -> Option<String> {
    Some(match warning {
        Warning::KeyChanged { user } => format!(
            "WARNING: the server presents a NEW identity key for @{user}. Someone may be \
             impersonating them, or they reinstalled. Nothing goes to them until you compare \
             safety numbers (`chapar fingerprint @{user}`) and run `chapar trust @{user}`."
        ),
        Warning::OwnKeyMisreported => "WARNING: the server presents an identity key for YOUR \
             account that is not yours. It is ignored; your key never changes."
            .into(),
        Warning::WelcomeRefused { group, reason } => format!(
            "WARNING: refused to join chat {group}: a member is not who it claims ({reason})"
        ),
        Warning::MembersRefused { group, reason } => format!(
            "WARNING: chat {group} added a device that is not who it claims ({reason}); the \
             change was refused and the chat ends here. Its history stays readable."
        ),
        Warning::UnverifiableDevice { user, reason } => {
            format!("skipping a device of @{user} that does not verify: {reason}")
        }
        Warning::RevokedDeviceListed { user, device } => format!(
            "WARNING: the server lists device {device} of @{user} again, which was revoked; it is \
             not added back."
        ),
        Warning::RosterNotUpdated {
            group,
            reason,
            sent_anyway: false,
        } => format!("could not bring the devices of chat {group} up to date: {reason}"),
        Warning::RosterNotUpdated {
            group,
            reason,
            sent_anyway: true,
        } => format!(
            "could not bring the devices of chat {group} up to date ({reason}); sending anyway"
        ),
        Warning::CommitUnsettled { group, reason } => format!(
            "a change to chat {group} is not settled yet ({reason}); `chapar sync` tries again"
        ),
        Warning::QueuedMessageWaiting { group, reason } => {
            format!("a queued message to chat {group} could not go yet ({reason}); it stays queued")
        }
        Warning::QueuedMessageDropped { group, reason } => {
            format!("a queued message to chat {group} was refused and dropped: {reason}")
        }
        Warning::RecoveryKeyReplaced { by } => format!(
            "Your account's recovery key was replaced by your device {by}. If that was not you, \
             revoke that device and run `chapar recovery-key --rotate`."
        ),
        Warning::RecoveryBundleStale => "Your recovery key was replaced on another device that \
             this one has not heard from yet; run `chapar sync` and `chapar recovery-key --rotate` \
             to be sure a recovery can read all of your history."
            .into(),
        Warning::ArchiveRefused { group, reason } => format!(
            "WARNING: the archive of chat {group} was tampered with ({reason}); this device \
             keeps its own copy of that history and does not build on it."
        ),
        // Already in the log (at warn level); history stays recorded and goes later.
        Warning::ArchiveDeferred { .. } => return None,
    })
}

/// An error of the engine or driver, worded for the terminal.
pub fn error(e: &CoreError) -> String {
    match e {
        CoreError::Usage(usage) => usage_error(usage),
        CoreError::Queued(why) => format!(
            "not sent yet ({why}); the message is saved and goes out the next time chapar connects"
        ),
        other => other.to_string(),
    }
}

fn usage_error(usage: &Usage) -> String {
    match usage {
        Usage::NoAccount => "this profile has no account yet: run `chapar register` first".into(),
        Usage::AlreadyRegistered => {
            "this profile already belongs to an account; use another --profile".into()
        }
        Usage::LinkTimedOut => {
            "no device approved this link in time; run `chapar link` again".into()
        }
        Usage::InvalidLinkCode => "that is not a link code (groups of letters and digits)".into(),
        Usage::InvalidRecoveryKey => {
            "that is not a recovery key (groups of letters and digits)".into()
        }
        Usage::RevocationUnfinished(_) => "the device is revoked, but is still in your devices' \
             own group, so no new archive key was made; run `chapar sync`, then revoke it again \
             to finish"
            .into(),
        Usage::AmbiguousMessage(id) => {
            format!("message {id} is in more than one chat; name the chat with --chat")
        }
        Usage::NoFileMessage(id) => {
            format!("no file message {id} on this device (run `chapar sync`?)")
        }
        Usage::UnknownStickerPack => {
            "no such sticker pack installed (see `chapar sticker list`)".into()
        }
        Usage::KeyNotTrusted(user) => format!(
            "the identity key of @{user} changed and is not trusted yet: compare safety numbers \
             (`chapar fingerprint @{user}`), then run `chapar trust @{user}`"
        ),
        Usage::KeyChangedAgain(user) => format!(
            "the identity key of @{user} changed again: run `chapar fingerprint @{user}` again"
        ),
        Usage::FileExists(path) => {
            format!("{path} exists already; choose another --out or move it away")
        }
        other => other.to_string(),
    }
}

/// A whole error chain as one line, with the engine's errors worded by [`error`] (which
/// says what their own sources say, so the chain stops there).
pub fn chain(e: &anyhow::Error) -> String {
    let mut parts = Vec::new();
    for cause in e.chain() {
        if let Some(core) = cause.downcast_ref::<CoreError>() {
            parts.push(error(core));
            break;
        }
        parts.push(cause.to_string());
    }
    parts.join(": ")
}
