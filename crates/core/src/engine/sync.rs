//! Catching up: processing each group's log in order from the device's position (after the
//! welcomes, `welcomes`), one entry per transaction (MLS state, history, archive events and
//! position move together, so a crash mid-sync neither skips nor repeats an entry).

use chapar_crypto::CryptoError;
use chapar_crypto::mls::{self, Incoming};
use chapar_types::limits::GROUP_LIST_PAGE_MAX;
use chapar_types::{DeviceId, ErrorCode, GroupId, MessageId, Username};
use chapar_wire::content::{AppMessage, app_message::Body, archive_event};
use chapar_wire::v1::{self, client_frame::Request, response::Result as Reply};
use prost::Message as _;

use super::archive;
use super::commit::{self, Settled};
use super::device::{Device, unexpected};
use super::self_group;
use crate::CoreError;
use crate::events::{Event, Warning};
use crate::history::{self, Applied};
use crate::identity::Identity;
use crate::provider::Provider;
use crate::storage::{ChatState, Tx};

/// Most groups a device takes from the server's group list (its pages are bounded; their
/// number is bounded here, so a lying server cannot grow the list without end).
const GROUPS_LISTED_MAX: usize = 100_000;
/// Log entries fetched per request.
const FETCH_PAGE_ENTRIES: u32 = 200;

/// One group as the server lists it for this device.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub group: GroupId,
    pub head_seq: u64,
    pub archived_seq: u64,
    pub roster_version: u64,
}

impl Device {
    /// Processes every new entry of one group's log, up to its head. What the user should
    /// see is emitted as events and noted for the job ([`Device::take_seen`]).
    pub(crate) async fn sync_group(&self, group: GroupId) -> Result<(), CoreError> {
        loop {
            let Some(chat) = self.read(|tx| tx.chat(group))? else {
                return Ok(());
            };
            if !chat.is_active() {
                return Ok(());
            }
            let reply = self
                .call(Request::FetchLog(v1::FetchLog {
                    group_id: group.as_bytes().to_vec(),
                    after_seq: chat.position,
                    limit: FETCH_PAGE_ENTRIES,
                }))
                .await;
            let page = match reply {
                Ok(Reply::LogPage(page)) => page,
                Ok(_) => return Err(unexpected("LogPage")),
                Err(e) if e.code() == Some(ErrorCode::NotMember) => {
                    self.end_membership(group, chat.position, ChatState::Removed)?;
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            let last = page.entries.last().map(|e| e.seq);
            for entry in &page.entries {
                self.apply_entry(group, entry).await?;
            }
            if page.membership_ended {
                self.end_membership(group, last.unwrap_or(chat.position), ChatState::Removed)?;
                return Ok(());
            }
            match last {
                // A page that does not move past the position would be asked for forever.
                Some(last) if last <= chat.position => {
                    return Err(CoreError::Protocol(format!(
                        "the server's log page for chat {group} does not move on"
                    )));
                }
                Some(last) if last < page.head_seq => continue,
                _ => return Ok(()),
            }
        }
    }

    /// Records that this device's membership of `group` ended at `seq`, if it was active.
    pub(crate) fn end_membership(
        &self,
        group: GroupId,
        seq: u64,
        state: ChatState,
    ) -> Result<(), CoreError> {
        let me = self.me()?;
        let ended = self.write(|tx| {
            if !tx.chat(group)?.is_some_and(|c| c.is_active()) {
                return Ok(false);
            }
            tx.set_state(group, state)?;
            tx.settle_commit(group)?;
            record_state(tx, me, group, seq, state, self.now_ms())?;
            Ok(true)
        })?;
        if ended {
            self.io.emit(Event::ChatEnded(group));
        }
        Ok(())
    }

    /// Applies one log entry in its own transaction and moves the chat's position past it;
    /// emits what the user should see. An entry whose new members name accounts seen for the
    /// first time waits until their keys are learnt; one whose new members are not who they
    /// claim is refused, and the chat ends here (its next epoch would hold them).
    pub(crate) async fn apply_entry(
        &self,
        group: GroupId,
        entry: &v1::LogEntry,
    ) -> Result<(), CoreError> {
        let me = self.me()?;
        let mut learnt = false;
        let outcome = loop {
            let outcome = self.write(|tx| {
                let Some(chat) = tx.chat(group)? else {
                    return Ok(None);
                };
                if entry.seq <= chat.position || !chat.is_active() {
                    return Ok(None); // already processed (a push racing a sync), or not ours now
                }
                let provider = self.mls(tx);
                let outcome = self.apply_in(&provider, tx, me, group, entry, learnt)?;
                if outcome.need_keys.is_empty() {
                    tx.set_position(group, entry.seq)?;
                }
                Ok(Some(outcome))
            })?;
            match outcome {
                Some(outcome) if !outcome.need_keys.is_empty() => {
                    self.learn_accounts(&outcome.need_keys).await?;
                    learnt = true;
                }
                Some(outcome) => break outcome,
                None => return Ok(()),
            }
        };
        if let Some(reason) = outcome.refused {
            self.warn(Warning::MembersRefused { group, reason });
        }
        if outcome.removed {
            self.io.emit(Event::ChatEnded(group));
        }
        let Some((change, id)) = outcome.applied.shown() else {
            return Ok(());
        };
        if let Some(message) = self.read(|tx| history::message(tx, group, id))? {
            self.io.emit(Event::Message {
                change,
                message: Box::new(message),
            });
        }
        self.note_seen(group, id);
        Ok(())
    }

    /// Applies one entry inside the caller's transaction. `learnt`: the keys of accounts
    /// seen for the first time were asked for already (a name still unknown now has no
    /// account, and its leaf is refused).
    fn apply_in(
        &self,
        provider: &Provider<'_>,
        tx: &Tx<'_>,
        me: &Identity,
        group: GroupId,
        entry: &v1::LogEntry,
        learnt: bool,
    ) -> Result<EntryOutcome, CoreError> {
        let mut outcome = EntryOutcome::default();
        let own = DeviceId(entry.sender_device) == me.device;
        let kind = v1::EntryKind::try_from(entry.kind);
        // A commit is recognised as this device's own by its bytes, not by the server's label:
        // a mislabelled own commit still merges, and a mislabelled foreign one is processed.
        let is_commit = kind == Ok(v1::EntryKind::Commit);
        let commit_payload = is_commit.then_some(entry.payload.as_slice());
        if commit::settle_by_entry(provider, tx, group, entry.seq, commit_payload)?
            == Settled::Merged
        {
            return Ok(outcome);
        }
        if own && !is_commit {
            if kind == Ok(v1::EntryKind::Application)
                && let Ok(id) = MessageId::from_slice(&entry.message_id)
            {
                archive::record_own(tx, me, group, id, entry.seq, self.now_ms())?;
                tx.mark_sent(group, id, entry.seq)?;
            }
            return Ok(outcome);
        }
        let Some(mut state) = mls::load_group(provider, group)? else {
            return Ok(outcome);
        };
        // An entry that cannot be processed must not wedge the chat: undo its partial state
        // change, note it, and move on.
        let processed = tx.attempt(|tx| {
            let incoming = mls::process(
                &mut state,
                provider,
                &entry.payload,
                &mut me.authenticator(tx),
            )?;
            self.on_incoming(provider, tx, me, group, entry, incoming)
        })?;
        let refused = match processed {
            Ok(done) => return Ok(done),
            Err(CoreError::Crypto(CryptoError::UnknownAccounts(names))) if !learnt => {
                outcome.need_keys = names;
                return Ok(outcome);
            }
            Err(CoreError::Crypto(CryptoError::UnknownAccounts(names))) => {
                format!(
                    "{} have no account here",
                    super::welcomes::names_list(&names)
                )
            }
            Err(CoreError::Crypto(CryptoError::Unauthenticated(reason))) => reason,
            Err(e) => {
                tracing::warn!(%group, seq = entry.seq, error = %e, "could not process a log entry");
                return Ok(outcome);
            }
        };
        // Not merged: this device stays in the epoch before it, which the group has left, so
        // the chat ends here for this device (what it holds stays readable).
        tracing::warn!(%group, seq = entry.seq, %refused, "refused a change of members");
        tx.set_state(group, ChatState::Removed)?;
        tx.settle_commit(group)?;
        record_state(tx, me, group, entry.seq, ChatState::Removed, self.now_ms())?;
        outcome.refused = Some(refused);
        outcome.removed = true;
        Ok(outcome)
    }

    fn on_incoming(
        &self,
        provider: &Provider<'_>,
        tx: &Tx<'_>,
        me: &Identity,
        group: GroupId,
        entry: &v1::LogEntry,
        incoming: Incoming,
    ) -> Result<EntryOutcome, CoreError> {
        match incoming {
            Incoming::Application { sender, plaintext } => {
                if sender.identity.device.0 != entry.sender_device {
                    tracing::warn!(%group, seq = entry.seq, "the server-claimed sender differs from the MLS sender; using MLS");
                }
                let Ok(message) = AppMessage::decode(plaintext.as_slice()) else {
                    tracing::warn!(%group, seq = entry.seq, "undecodable application payload");
                    return Ok(EntryOutcome::default());
                };
                let sender_name = &sender.identity.username;
                let archivable = match &message.body {
                    Some(Body::AccountSync(sync)) => {
                        let believed = self_group::apply_incoming(
                            self,
                            provider,
                            tx,
                            group,
                            sender_name,
                            sender.identity.device,
                            &me.username,
                            sync,
                        )?;
                        believed && self_group::archivable(sync)
                    }
                    _ => true,
                };
                if archivable {
                    archive::record(
                        tx,
                        group,
                        entry.seq,
                        archive_event::Kind::AppMessage(plaintext.clone()),
                        sender_name,
                        sender.identity.device,
                        entry.server_time_ms,
                        self.now_ms(),
                    )?;
                }
                if matches!(message.body, Some(Body::AccountSync(_))) {
                    return Ok(EntryOutcome::default());
                }
                let applied = history::apply(
                    tx,
                    group,
                    sender_name,
                    sender.identity.device,
                    Some(entry.seq),
                    &message,
                )?;
                Ok(EntryOutcome {
                    applied,
                    ..EntryOutcome::default()
                })
            }
            Incoming::Commit {
                removed_self: true, ..
            } => {
                tx.set_state(group, ChatState::Removed)?;
                record_state(tx, me, group, entry.seq, ChatState::Removed, self.now_ms())?;
                Ok(EntryOutcome {
                    removed: true,
                    ..EntryOutcome::default()
                })
            }
            Incoming::Commit { .. } | Incoming::Proposal { .. } | Incoming::Own => {
                Ok(EntryOutcome::default())
            }
        }
    }

    /// Every group the server lists for this device, a page at a time.
    pub(crate) async fn heads(&self) -> Result<Vec<Head>, CoreError> {
        let mut heads: Vec<Head> = Vec::new();
        loop {
            let after = heads.last().map(|h| h.group.as_bytes().to_vec());
            let Reply::GroupList(list) = self
                .call(Request::ListGroups(v1::ListGroups {
                    after_group_id: after.clone().unwrap_or_default(),
                    limit: GROUP_LIST_PAGE_MAX,
                }))
                .await?
            else {
                return Err(unexpected("GroupList"));
            };
            let full = list.groups.len() >= GROUP_LIST_PAGE_MAX as usize;
            let page: Vec<Head> = list
                .groups
                .into_iter()
                .filter_map(|h| {
                    Some(Head {
                        group: GroupId::from_slice(&h.group_id).ok()?,
                        head_seq: h.head_seq,
                        archived_seq: h.archived_seq,
                        roster_version: h.roster_version,
                    })
                })
                .collect();
            // A page must move on, or it would be asked for forever.
            if page
                .first()
                .zip(after.as_deref())
                .is_some_and(|(first, after)| first.group.as_bytes()[..] <= *after)
            {
                return Err(CoreError::Protocol(
                    "the server's group list does not move on".into(),
                ));
            }
            let empty = page.is_empty();
            heads.extend(page);
            if heads.len() > GROUPS_LISTED_MAX {
                return Err(CoreError::Protocol(format!(
                    "the server lists more than {GROUPS_LISTED_MAX} groups for this device"
                )));
            }
            if !full || empty {
                return Ok(heads);
            }
        }
    }
}

/// What processing one entry did that the user sees.
#[derive(Debug, Clone)]
struct EntryOutcome {
    applied: Applied,
    /// This device was removed from the group by it (or refused it).
    removed: bool,
    /// Why its new members were refused.
    refused: Option<String>,
    /// Accounts to learn the keys of before the entry can be checked (not applied yet).
    need_keys: Vec<Username>,
}

impl Default for EntryOutcome {
    fn default() -> Self {
        Self {
            applied: Applied::Nothing,
            removed: false,
            refused: None,
            need_keys: Vec::new(),
        }
    }
}

/// The active chats whose server head is ahead of this device's position, or that hold a
/// pending commit (it settles at the head).
pub(crate) fn behind(tx: &Tx<'_>, heads: &[Head]) -> Result<Vec<GroupId>, CoreError> {
    let mut out = Vec::new();
    for head in heads {
        if let Some(chat) = tx.chat(head.group)?
            && chat.is_active()
            && (head.head_seq > chat.position || tx.pending_commit(head.group)?.is_some())
        {
            out.push(head.group);
        }
    }
    Ok(out)
}

/// Records in the archive that this device's membership of `group` ended at `seq`.
pub(crate) fn record_state(
    tx: &Tx<'_>,
    me: &Identity,
    group: GroupId,
    seq: u64,
    state: ChatState,
    now_ms: u64,
) -> Result<(), CoreError> {
    archive::record(
        tx,
        group,
        seq,
        archive_event::Kind::ChatState(state.as_str().to_owned()),
        &me.username,
        me.device,
        now_ms,
        now_ms,
    )
}
