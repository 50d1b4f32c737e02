//! What the engine tells its user: typed events, taken out with `Engine::poll_event`. A client
//! renders them (the CLI prints lines, the web client updates its views); none of them is a
//! sentence.

use chapar_types::{DeviceId, GroupId, Username};

use crate::model::{ApprovalPreview, ChatMessage, LinkPreview};

/// Identifies one job (a command the engine is carrying out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub u64);

/// How a message changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It is new here.
    New,
    /// Its text changed.
    Edited,
    /// It was deleted for everyone.
    Deleted,
    /// A reaction was added or withdrawn.
    Reaction,
}

/// Something the user should know about.
#[derive(Debug, Clone)]
pub enum Event {
    /// A message arrived or changed. `message` is its state after the change.
    Message {
        /// What happened to it.
        change: Change,
        /// The message now (boxed: it is much larger than every other event).
        message: Box<ChatMessage>,
    },
    /// This device joined a chat (it was added, or it created one).
    ChatJoined(GroupId),
    /// This device is no longer a member of a chat (it left, or was removed).
    ChatEnded(GroupId),
    /// A warning: something is wrong or suspicious, and nothing was lost because of it.
    Warning(Warning),
    /// A new device's link code, to show (and draw as a QR code) while it waits.
    LinkCode {
        /// The code.
        code: String,
        /// This new device's fingerprint, to compare with what the approving device shows.
        fingerprint: String,
    },
    /// A job needs the user's answer (`Engine::answer`) before it goes on.
    Question {
        /// The job asking.
        job: JobId,
        /// What it asks.
        question: Question,
    },
    /// A job ended; its result is taken with `Engine::take_result`.
    Done(JobId),
}

/// A question a job asks the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Question {
    /// Approve this new device? (On the approving device, after comparing fingerprints.)
    ApproveDevice(LinkPreview),
    /// Join this account? (On the new device: whoever saw the code could have approved it.)
    JoinAccount(ApprovalPreview),
}

/// Something wrong or suspicious. Each says what was decided, so nothing is silent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// The server presents an identity key for `user` that differs from the pinned one.
    /// Nothing changes because of it: the old key stays pinned, nothing is claimed from the
    /// account and none of its devices is added or removed, until the user compares safety
    /// numbers and trusts the new key.
    KeyChanged {
        /// Whose key.
        user: Username,
    },
    /// The server presents an identity key for this account that is not its own (the own
    /// key never changes): a server that lies, or one under attack.
    OwnKeyMisreported,
    /// A welcome was refused: a member of the group it offers is not who it claims (its
    /// certificate does not verify under the pinned key). The group was not joined.
    WelcomeRefused {
        /// The group offered.
        group: GroupId,
        /// What failed.
        reason: String,
    },
    /// A change to a chat's members was refused: a device it adds is not who it claims. It
    /// was not merged; the group moved on without this device, so the chat ends here.
    MembersRefused {
        /// The chat.
        group: GroupId,
        /// What failed.
        reason: String,
    },
    /// A device of `user` whose certificate or key package does not verify was skipped.
    UnverifiableDevice {
        /// Whose device.
        user: Username,
        /// What failed.
        reason: String,
    },
    /// The server lists again a device this device saw revoked; it is not added back.
    RevokedDeviceListed {
        /// Whose device.
        user: Username,
        /// Which.
        device: DeviceId,
    },
    /// A chat's devices could not be brought in line with its accounts' devices now; the next
    /// sync tries again.
    RosterNotUpdated {
        /// The chat.
        group: GroupId,
        /// What failed.
        reason: String,
        /// A message was sent anyway (it would otherwise never go).
        sent_anyway: bool,
    },
    /// A commit of this device could not be settled now (its chat's next message waits for
    /// it); the next sync tries again.
    CommitUnsettled {
        /// The chat.
        group: GroupId,
        /// What failed.
        reason: String,
    },
    /// A queued message could not be sent now; it stays queued for the next connection.
    QueuedMessageWaiting {
        /// Its chat.
        group: GroupId,
        /// Why.
        reason: String,
    },
    /// A queued message was refused by the server for good and dropped from the outbox.
    QueuedMessageDropped {
        /// Its chat.
        group: GroupId,
        /// Why.
        reason: String,
    },
    /// Another device of the account replaced the recovery key.
    RecoveryKeyReplaced {
        /// The device that did.
        by: DeviceId,
    },
    /// The recovery bundle was not resealed: another device replaced the recovery key and this
    /// one has not heard of it yet, so a recovery may not read the newest history.
    RecoveryBundleStale,
    /// History could not be uploaded to the archive now; it stays recorded and goes later.
    ArchiveDeferred {
        /// What failed.
        reason: String,
    },
    /// A segment of the account archive does not continue its chat's chain (the server forked
    /// or replaced it, or a revoked device wrote it): this device keeps its own copy of that
    /// history and does not build on the segment.
    ArchiveRefused {
        /// The chat's group id.
        group: String,
        /// Which check failed.
        reason: String,
    },
}
