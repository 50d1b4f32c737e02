//! Changing a group: building a commit, submitting it at the log's head, and settling it.
//!
//! A commit has three states: built (openmls holds it as the group's pending commit, and the
//! profile has a [`PendingCommit`] row for it, written in the same transaction), sent (the
//! server may have stored it), and settled (merged, or discarded). Built and sent are one row:
//! both are settled by submitting again. It is settled only by what the server says for sure:
//!
//! - `Appended`: it is in the log; merge it.
//! - `stale_epoch`: the server did not store it (it takes a commit only at the head the
//!   commit names); discard it, catch up, build again.
//! - any other refusal: not stored; discard it.
//! - no answer (a timeout, a dropped connection): the outcome is unknown, so the commit stays
//!   pending, and nothing new is built in the group until a sync has settled it. The log's
//!   entry right after the head it was built at says: this commit (same SHA-256) means merge;
//!   anything else means it can never be stored, discard. If the log has nothing there yet,
//!   the same request is submitted again: the server stores it at most once, since it takes a
//!   commit only at its `seen_seq`.

use chapar_crypto::mls::{self, DeviceSigner, MlsGroup, OutgoingCommit};
use chapar_types::{ErrorCode, GroupId, Seq};
use chapar_wire::v1::{self, client_frame::Request, response::Result as Reply};
use prost::Message as _;
use sha2::{Digest as _, Sha256};

use super::device::{Device, unexpected};
use crate::CoreError;
use crate::provider::Provider;
use crate::storage::{PendingCommit, Tx};

/// How often a commit is rebuilt after a stale-epoch refusal before giving up.
pub(crate) const STALE_RETRIES_MAX: usize = 8;

/// What a commit builder made: a commit, or `None` when there is nothing to do (after
/// catching up, someone else may have made the change already).
pub(crate) type Built = Option<OutgoingCommit>;

/// How a commit attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Committed {
    /// The server stored it at this position, and it is merged.
    At(Seq),
    /// There was nothing to commit.
    NothingToDo,
}

/// How settling a group's pending commit against one log entry went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    /// The entry is the commit: it was merged.
    Merged,
    /// The entry is something else in the commit's place: the commit was discarded.
    Discarded,
    /// The entry does not decide it.
    Open,
}

pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Whether a pending commit adds devices: once it is merged, they are owed the chat's meta.
fn adds_devices(pending: &PendingCommit) -> bool {
    v1::SubmitCommit::decode(pending.request.as_slice())
        .is_ok_and(|request| !request.added_devices.is_empty())
}

/// The error for a pending commit openmls no longer holds: the device cannot follow the group
/// past its own commit, and going on as if it could would leave it an epoch behind for good.
fn lost(group: GroupId) -> CoreError {
    CoreError::Profile(format!(
        "the state of this device's own commit in chat {group} is lost"
    ))
}

/// Merges a group's pending commit (the log holds it) and settles it, in the caller's
/// transaction; owes the chat's meta to the devices it added.
fn merge_in(
    provider: &Provider<'_>,
    tx: &Tx<'_>,
    pending: &PendingCommit,
) -> Result<(), CoreError> {
    let group = pending.group;
    let mut state = mls::load_group(provider, group)?
        .filter(mls::has_pending_commit)
        .ok_or_else(|| lost(group))?;
    mls::merge_pending_commit(&mut state, provider)?;
    tx.settle_commit(group)?;
    if adds_devices(pending) {
        tx.set_meta_owed(group, true)?;
    }
    Ok(())
}

/// Decides a pending commit by the log entry at `seq` (its payload and whether this device
/// sent it as a commit), inside the transaction that processes that entry.
pub(crate) fn settle_by_entry(
    provider: &Provider<'_>,
    tx: &Tx<'_>,
    group: GroupId,
    seq: Seq,
    own_commit_payload: Option<&[u8]>,
) -> Result<Settled, CoreError> {
    let Some(pending) = tx.pending_commit(group)? else {
        return Ok(Settled::Open);
    };
    if seq <= pending.seen_seq {
        return Ok(Settled::Open);
    }
    let ours = own_commit_payload.is_some_and(|payload| sha256(payload) == pending.sha256);
    if ours && seq == pending.seen_seq + 1 {
        merge_in(provider, tx, &pending)?;
        return Ok(Settled::Merged);
    }
    // Another entry took the only place the commit could have: it can never be stored.
    discard(provider, tx, group)?;
    Ok(Settled::Discarded)
}

/// Discards a group's pending commit (the server cannot store it).
fn discard(provider: &Provider<'_>, tx: &Tx<'_>, group: GroupId) -> Result<(), CoreError> {
    if let Some(mut state) = mls::load_group(provider, group)?
        && mls::has_pending_commit(&state)
    {
        mls::discard_pending_commit(&mut state, provider)?;
    }
    tx.settle_commit(group)
}

/// Merges a group's pending commit, which the server stored at `seq`.
fn merge(provider: &Provider<'_>, tx: &Tx<'_>, group: GroupId, seq: Seq) -> Result<(), CoreError> {
    let Some(pending) = tx.pending_commit(group)? else {
        return Err(lost(group));
    };
    merge_in(provider, tx, &pending)?;
    // The commit is the entry at `seq`, and the head was `seq - 1` when it was built: this
    // device has processed everything up to it.
    match tx.chat(group)? {
        Some(chat) if chat.position < seq => tx.set_position(group, seq),
        _ => Ok(()),
    }
}

impl Device {
    /// Builds a commit with `make`, submits it at the log's head and merges it once accepted.
    /// A stale-epoch refusal discards it, catches up and builds it again (`make` runs again on
    /// the newer state, so it must build from what it is given, not from what it saw before).
    pub(crate) async fn commit(
        &self,
        group: GroupId,
        mut make: impl FnMut(&mut MlsGroup, &Provider<'_>, &DeviceSigner) -> Result<Built, CoreError>,
    ) -> Result<Committed, CoreError> {
        let signer = self.me()?.signer();
        for _ in 0..STALE_RETRIES_MAX {
            // Nothing new is built in a group whose last commit's fate is unknown.
            self.settle_pending_commit(group).await?;
            let built = self.write(|tx| {
                let provider = self.mls(tx);
                let mut state = mls::load_group(&provider, group)?
                    .ok_or_else(|| CoreError::Profile(format!("no MLS state for chat {group}")))?;
                let chat = tx
                    .chat(group)?
                    .ok_or_else(|| CoreError::Profile(format!("chat {group} is not recorded")))?;
                let epoch = mls::epoch(&state);
                let Some(out) = make(&mut state, &provider, &signer)? else {
                    return Ok(None);
                };
                let request = v1::SubmitCommit {
                    group_id: group.as_bytes().to_vec(),
                    epoch,
                    seen_seq: chat.position,
                    commit: out.commit,
                    welcome: out.welcome.unwrap_or_default(),
                    added_devices: out.added.iter().map(|d| d.0).collect(),
                    removed_devices: out.removed.iter().map(|d| d.0).collect(),
                    added_key_packages: out.added_key_packages.iter().map(|h| h.to_vec()).collect(),
                };
                tx.record_pending_commit(
                    &PendingCommit {
                        group,
                        epoch,
                        seen_seq: chat.position,
                        sha256: sha256(&request.commit),
                        request: request.encode_to_vec(),
                    },
                    self.now_ms(),
                )?;
                Ok(Some(request))
            })?;
            let Some(request) = built else {
                return Ok(Committed::NothingToDo);
            };
            match self.submit(group, request, Attempt::First).await? {
                Submitted::Stored(seq) => return Ok(Committed::At(seq)),
                Submitted::Stale => self.sync_group(group).await?,
            }
        }
        Err(CoreError::Server {
            code: ErrorCode::StaleEpoch,
            message: "the group kept changing; try again".into(),
            position: 0,
        })
    }

    /// Submits a pending commit and settles it by the answer (see the module docs). An
    /// unknown outcome is an error, and the commit stays pending.
    async fn submit(
        &self,
        group: GroupId,
        request: v1::SubmitCommit,
        attempt: Attempt,
    ) -> Result<Submitted, CoreError> {
        match self.call(Request::SubmitCommit(request)).await {
            Ok(Reply::Appended(appended)) => {
                self.write(|tx| merge(&self.mls(tx), tx, group, appended.seq))?;
                Ok(Submitted::Stored(appended.seq))
            }
            // Something answered, but not what a stored commit gets: it stays unsettled.
            Ok(_) => Err(unexpected("Appended")),
            Err(e) if e.code() == Some(ErrorCode::StaleEpoch) => {
                // This submission was not stored. After a first one, nothing else can be; an
                // earlier submission of the same commit may be, and the log will say.
                if attempt == Attempt::First {
                    self.write(|tx| discard(&self.mls(tx), tx, group))?;
                }
                Ok(Submitted::Stale)
            }
            Err(e) if e.outcome_unknown() => Err(e),
            // The group is gone for this device: nothing of it can be stored any more.
            Err(e)
                if matches!(
                    e.code(),
                    Some(ErrorCode::NotMember | ErrorCode::UnknownGroup)
                ) =>
            {
                self.write(|tx| discard(&self.mls(tx), tx, group))?;
                Err(e)
            }
            // A first submission refused is not in the log. A repeat refused says nothing of
            // the first one (the server may still be storing it): only the log settles it.
            Err(e) => {
                if attempt == Attempt::First {
                    self.write(|tx| discard(&self.mls(tx), tx, group))?;
                }
                Err(e)
            }
        }
    }

    /// Settles a group's pending commit, if it has one: catches up to the head (the entry
    /// after the commit's head decides it), and if the log has nothing there yet, submits the
    /// same commit again. Returns with the commit settled, or with the error that kept it
    /// open.
    pub(crate) async fn settle_pending_commit(&self, group: GroupId) -> Result<(), CoreError> {
        if self.read(|tx| tx.pending_commit(group))?.is_none() {
            return Ok(());
        }
        self.sync_group(group).await?;
        let Some(pending) = self.read(|tx| tx.pending_commit(group))? else {
            return Ok(());
        };
        let request = v1::SubmitCommit::decode(pending.request.as_slice())
            .map_err(|_| CoreError::Profile("a pending commit is damaged".into()))?;
        match self.submit(group, request, Attempt::Again).await? {
            Submitted::Stored(_) => Ok(()),
            // The head moved after the sync: the entry now there decides it.
            Submitted::Stale => self.sync_group(group).await,
        }
    }
}

/// What the server did with a submitted commit.
enum Submitted {
    Stored(Seq),
    Stale,
}

/// Whether a submission is a commit's first, or a repeat after an unknown outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    First,
    Again,
}
