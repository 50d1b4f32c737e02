//! Catching up: joining groups from welcomes, then processing each group's log in order from
//! the device's position, one entry per local transaction (MLS state, history and position
//! move together, so a crash mid-sync neither skips nor repeats an entry).

use chapar_crypto::mls::{self, Incoming};
use chapar_types::{DeviceId, GroupId, MessageId};
use chapar_wire::content::{AppMessage, app_message::Body, archive_event};
use chapar_wire::v1::{self, client_frame::Request, response::Result as Reply};
use prost::Message as _;

use crate::client::{Identity, now_ms};
use crate::connection::Connection;
use crate::history::{self, Applied};
use crate::local::{Chat, Local};
use crate::provider::Provider;
use crate::{ClientError, archive, self_group};

/// Log entries fetched per request.
const FETCH_PAGE_ENTRIES: u32 = 200;
/// Welcomes fetched per request.
const FETCH_PAGE_WELCOMES: u32 = 50;

/// Something the user should see: a message that arrived or changed.
pub(crate) type Seen = (GroupId, MessageId);

/// Joins every group this device was welcomed into since the last sync.
pub(crate) async fn sync_welcomes(
    local: &Local,
    conn: &Connection,
    me: &Identity,
) -> Result<Vec<GroupId>, ClientError> {
    let mut joined = Vec::new();
    loop {
        let cursor = local.get_u64("welcome_cursor")?;
        let Reply::WelcomePage(page) = conn
            .request(Request::FetchWelcomes(v1::FetchWelcomes {
                after_id: cursor,
                limit: FETCH_PAGE_WELCOMES,
            }))
            .await?
        else {
            return Err(ClientError::Protocol("expected WelcomePage".into()));
        };
        if page.welcomes.is_empty() {
            return Ok(joined);
        }
        for welcome in page.welcomes {
            let Ok(group) = GroupId::from_slice(&welcome.group_id) else {
                continue;
            };
            local.transaction(|l| {
                let existing = l.chat(group)?;
                if existing.as_ref().is_none_or(|c| c.state != "active") {
                    let provider = Provider::new(l.conn());
                    match mls::join_group(&provider, group, &welcome.welcome) {
                        Ok(_) if existing.is_some() => {
                            // Known from before (left, or restored from the archive): keep
                            // what it is, start reading after the welcome.
                            l.rejoin_chat(group, welcome.seq)?;
                            joined.push(group);
                        }
                        Ok(_) => {
                            l.insert_chat(
                                &Chat::new(group, "group", "active", welcome.seq),
                                now_ms(),
                            )?;
                            joined.push(group);
                        }
                        Err(e) => {
                            tracing::warn!(%group, error = %e, "could not join group from welcome")
                        }
                    }
                }
                l.set_u64("welcome_cursor", welcome.id)
            })?;
        }
        let _ = me;
    }
}

/// Processes every new entry of one group's log.
pub(crate) async fn sync_group(
    local: &Local,
    conn: &Connection,
    me: &Identity,
    group: GroupId,
) -> Result<Vec<Seen>, ClientError> {
    let mut seen = Vec::new();
    loop {
        let Some(chat) = local.chat(group)? else {
            return Ok(seen);
        };
        if chat.state != "active" {
            return Ok(seen);
        }
        let reply = conn
            .request(Request::FetchLog(v1::FetchLog {
                group_id: group.as_bytes().to_vec(),
                after_seq: chat.position,
                limit: FETCH_PAGE_ENTRIES,
            }))
            .await;
        let page = match reply {
            Ok(Reply::LogPage(page)) => page,
            Ok(_) => return Err(ClientError::Protocol("expected LogPage".into())),
            Err(e) if e.code() == Some(chapar_types::ErrorCode::NotMember) => {
                local.transaction(|l| {
                    l.set_state(group, "removed")?;
                    record_state(l, me, group, chat.position, "removed")
                })?;
                return Ok(seen);
            }
            Err(e) => return Err(e),
        };
        let last = page.entries.last().map(|e| e.seq);
        for entry in &page.entries {
            seen.extend(apply_entry(local, me, group, entry)?);
        }
        if page.membership_ended {
            local.transaction(|l| {
                if l.chat(group)?.is_some_and(|c| c.state == "active") {
                    l.set_state(group, "removed")?;
                    record_state(l, me, group, last.unwrap_or(chat.position), "removed")?;
                }
                Ok(())
            })?;
            return Ok(seen);
        }
        match last {
            Some(last) if last < page.head_seq => continue,
            _ => break,
        }
    }
    // Everything up to the head is processed: a commit of ours still pending was never accepted.
    local.transaction(|l| {
        let provider = Provider::new(l.conn());
        if let Some(mut g) = mls::load_group(&provider, group)?
            && mls::has_pending_commit(&g)
        {
            mls::discard_pending_commit(&mut g, &provider)?;
        }
        Ok(())
    })?;
    Ok(seen)
}

/// Applies one log entry in its own transaction and moves the chat's position past it.
pub(crate) fn apply_entry(
    local: &Local,
    me: &Identity,
    group: GroupId,
    entry: &v1::LogEntry,
) -> Result<Option<Seen>, ClientError> {
    local.transaction(|l| {
        let Some(chat) = l.chat(group)? else { return Ok(None) };
        if entry.seq <= chat.position {
            return Ok(None); // already processed (a push racing a sync)
        }
        let provider = Provider::new(l.conn());
        let Some(mut g) = mls::load_group(&provider, group)? else {
            l.set_position(group, entry.seq)?;
            return Ok(None);
        };
        let mut result = None;
        if DeviceId(entry.sender_device) == me.device {
            match v1::EntryKind::try_from(entry.kind) {
                Ok(v1::EntryKind::Application) => {
                    if let Ok(id) = MessageId::from_slice(&entry.message_id) {
                        archive::record_own(l, me, group, id, entry.seq)?;
                        l.mark_sent(group, id, entry.seq)?;
                    }
                }
                Ok(v1::EntryKind::Commit) if mls::has_pending_commit(&g) => {
                    // Accepted, but we stopped before merging it: merge now.
                    mls::merge_pending_commit(&mut g, &provider)?;
                }
                _ => {}
            }
        } else {
            l.conn().execute_batch("SAVEPOINT mls")?;
            match mls::process(&mut g, &provider, &entry.payload) {
                Ok(incoming) => {
                    l.conn().execute_batch("RELEASE mls")?;
                    result = on_incoming(l, me, group, entry, incoming)?;
                }
                Err(e) => {
                    // An entry we cannot process must not wedge the chat: undo its partial state
                    // change, note it, and move on.
                    l.conn().execute_batch("ROLLBACK TO mls; RELEASE mls")?;
                    tracing::warn!(%group, seq = entry.seq, error = %e, "could not process a log entry");
                }
            }
        }
        l.set_position(group, entry.seq)?;
        Ok(result)
    })
}

/// Records in the archive that this device's membership of `group` ended at `seq`.
pub(crate) fn record_state(
    l: &Local,
    me: &Identity,
    group: GroupId,
    seq: u64,
    state: &str,
) -> Result<(), ClientError> {
    archive::record(
        l,
        group,
        seq,
        archive_event::Kind::ChatState(state.to_owned()),
        me.username.as_str(),
        me.device,
        now_ms(),
    )
}

fn on_incoming(
    l: &Local,
    me: &Identity,
    group: GroupId,
    entry: &v1::LogEntry,
    incoming: Incoming,
) -> Result<Option<Seen>, ClientError> {
    match incoming {
        Incoming::Application { sender, plaintext } => {
            if sender.identity.device.0 != entry.sender_device {
                tracing::warn!(%group, seq = entry.seq, "server-claimed sender differs from the MLS sender; using MLS");
            }
            let Ok(message) = AppMessage::decode(plaintext.as_slice()) else {
                tracing::warn!(%group, seq = entry.seq, "undecodable application payload");
                return Ok(None);
            };
            let sender_name = sender.identity.username.as_str();
            let archivable = match &message.body {
                Some(Body::AccountSync(sync)) => {
                    let believed = self_group::apply_incoming(
                        l,
                        group,
                        sender_name,
                        sender.identity.device,
                        me.username.as_str(),
                        sync,
                    )?;
                    believed && self_group::archivable(sync)
                }
                _ => true,
            };
            if archivable {
                archive::record(
                    l,
                    group,
                    entry.seq,
                    archive_event::Kind::AppMessage(plaintext.clone()),
                    sender_name,
                    sender.identity.device,
                    entry.server_time_ms,
                )?;
            }
            if matches!(message.body, Some(Body::AccountSync(_))) {
                return Ok(None);
            }
            let applied = history::apply(
                l,
                group,
                sender.identity.username.as_str(),
                sender.identity.device,
                Some(entry.seq),
                &message,
            )?;
            Ok(match applied {
                Applied::Message(g, id) => Some((g, id)),
                Applied::Nothing => None,
            })
        }
        Incoming::Commit {
            removed_self: true, ..
        } => {
            l.set_state(group, "removed")?;
            record_state(l, me, group, entry.seq, "removed")?;
            Ok(None)
        }
        Incoming::Commit { .. } | Incoming::Proposal { .. } | Incoming::Own => Ok(None),
    }
}

/// One group as the server lists it for this device.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub group: GroupId,
    pub head_seq: u64,
    pub archived_seq: u64,
    pub roster_version: u64,
}

/// Every group the server lists for this device.
pub(crate) async fn heads(conn: &Connection) -> Result<Vec<Head>, ClientError> {
    let Reply::GroupList(list) = conn.request(Request::ListGroups(v1::ListGroups {})).await? else {
        return Err(ClientError::Protocol("expected GroupList".into()));
    };
    Ok(list
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
        .collect())
}

/// The active chats whose server head is ahead of this device's position.
pub(crate) fn behind(local: &Local, heads: &[Head]) -> Result<Vec<GroupId>, ClientError> {
    let mut out = Vec::new();
    for head in heads {
        if let Some(chat) = local.chat(head.group)?
            && chat.state == "active"
            && head.head_seq > chat.position
        {
            out.push(head.group);
        }
    }
    Ok(out)
}
