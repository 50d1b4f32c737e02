//! The delivery service's rules for appending to a group's log, once, outside any backend.
//!
//! A backend loads the group's [`GroupState`], asks [`plan_append`] what an [`Append`] does,
//! and applies the [`AppendPlan`] in its own transaction: the rules (membership, the current
//! epoch, commits only at the log's head, the roster version, idempotent message ids, which
//! removals count, who is welcomed and who hears of the entry) are not woven through SQL, and
//! every backend enforces the same ones. The only fact the rules need from the log itself, an
//! earlier entry with the same sender and message id, they ask for through a callback, so a
//! backend looks it up only when the rules get that far.
//!
//! What stays with the backend: that an added device exists and is not revoked, then that the
//! committer's account claimed the key package the commit names for it and has not used it
//! (`Unclaimed`, also where the commit names none); both need its tables, in that order.

use chapar_types::{DeviceId, Epoch, MessageId, Seq};

use crate::{Append, AppendKind, Appended, StoreError};

/// A group's delivery-service state, as a backend keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    /// The current epoch.
    pub epoch: Epoch,
    /// The log's last position.
    pub head_seq: Seq,
    /// The position of the last proposal.
    pub last_proposal_seq: Seq,
    /// Current members, in no particular order.
    pub members: Vec<DeviceId>,
    /// The highest roster version among the accounts with a member here.
    pub roster_version: u64,
}

/// An earlier entry with the same sender and message id: a retried send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EarlierEntry {
    /// Its position.
    pub seq: Seq,
    /// The epoch it was made in.
    pub epoch: Epoch,
    /// Server time recorded with it.
    pub server_ms: u64,
}

/// What an accepted append writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendPlan {
    /// The new entry's position.
    pub seq: Seq,
    /// The group's epoch after it.
    pub epoch: Epoch,
    /// The position of the last proposal after it.
    pub last_proposal_seq: Seq,
    /// The application message's id, stored for idempotency.
    pub message_id: Option<MessageId>,
    /// Devices a commit adds (a membership window starts here), each with the SHA-256 of the
    /// key package it joins with, whose claim the backend must use up (`None`: the commit
    /// named none, which no claim matches).
    pub added: Vec<(DeviceId, Option<[u8; 32]>)>,
    /// Members whose membership ends at this entry.
    pub ended: Vec<DeviceId>,
    /// Whether the commit's welcome is stored for the added devices.
    pub stores_welcome: bool,
    /// Whether accounts may have joined or left (the backend recomputes the roster version).
    pub changes_members: bool,
}

/// What [`plan_append`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A retry of an earlier append: nothing is written, and this is the answer.
    Duplicate(Appended),
    /// A new entry, to write as planned.
    Append(AppendPlan),
}

/// Decides what `append` does to a group in `state`. `earlier` finds an earlier application
/// message of the same sender with the same id (called at most once, only for an
/// application message from a member).
pub fn plan_append(
    state: &GroupState,
    append: &Append,
    earlier: impl FnOnce(MessageId) -> Result<Option<EarlierEntry>, StoreError>,
) -> Result<Decision, StoreError> {
    if !state.members.contains(&append.sender) {
        return Err(StoreError::NotMember);
    }
    let stale = StoreError::StaleEpoch {
        current_epoch: state.epoch,
        head_seq: state.head_seq,
    };
    // A retry is answered as the first attempt was, whatever happened to the group since.
    if let AppendKind::Application { message_id, .. } = &append.kind
        && let Some(first) = earlier(*message_id)?
    {
        return Ok(Decision::Duplicate(Appended {
            seq: first.seq,
            epoch: first.epoch,
            server_ms: first.server_ms,
            duplicate: true,
            recipients: Vec::new(),
            welcomed: Vec::new(),
        }));
    }
    if append.epoch != state.epoch {
        return Err(stale);
    }
    let seq = state.head_seq + 1;
    let mut plan = AppendPlan {
        seq,
        epoch: state.epoch,
        last_proposal_seq: state.last_proposal_seq,
        message_id: None,
        added: Vec::new(),
        ended: Vec::new(),
        stores_welcome: false,
        changes_members: false,
    };
    match &append.kind {
        AppendKind::Application {
            message_id,
            roster_version,
        } => {
            // The sender must have seen the group's devices as they are now.
            if *roster_version < state.roster_version {
                return Err(StoreError::StaleRoster {
                    current: state.roster_version,
                });
            }
            plan.message_id = Some(*message_id);
        }
        AppendKind::Proposal { self_remove } => {
            plan.last_proposal_seq = seq;
            if *self_remove {
                plan.ended.push(append.sender);
            }
        }
        AppendKind::Commit {
            seen_seq,
            added,
            added_key_packages,
            removed,
            welcome,
        } => {
            // A commit must be made at the head of the log: the committer has processed every
            // proposal (none is silently dropped) and every message of the closing epoch (none
            // becomes undecryptable for it).
            if *seen_seq != state.head_seq {
                return Err(stale);
            }
            plan.epoch += 1;
            plan.changes_members = true;
            for (i, device) in added.iter().enumerate() {
                plan.added
                    .push((*device, added_key_packages.get(i).copied()));
            }
            // Only members can be removed: a listed device that is not one is ignored (it is
            // neither marked nor pushed to, so a commit cannot reach strangers).
            plan.ended.extend(
                removed
                    .iter()
                    .filter(|d| state.members.contains(d))
                    .copied(),
            );
            plan.stores_welcome = welcome.is_some() && !added.is_empty();
        }
    }
    Ok(Decision::Append(plan))
}

impl AppendPlan {
    /// Moves `state` past the applied plan (the roster version stays for the backend to
    /// recompute where [`Self::changes_members`]) and returns the answer: the entry goes to
    /// the members that were there before it, and to those whose membership it ends (new
    /// members start reading after it, as their welcome says).
    pub fn apply(&self, state: &mut GroupState, server_ms: u64) -> Appended {
        state.members.retain(|d| !self.ended.contains(d));
        let joined: Vec<DeviceId> = self.added.iter().map(|(device, _)| *device).collect();
        let mut recipients: Vec<DeviceId> = state
            .members
            .iter()
            .filter(|d| !joined.contains(d))
            .copied()
            .collect();
        recipients.extend(&self.ended);
        for device in &joined {
            if !state.members.contains(device) {
                state.members.push(*device);
            }
        }
        (state.epoch, state.head_seq, state.last_proposal_seq) =
            (self.epoch, self.seq, self.last_proposal_seq);
        Appended {
            seq: self.seq,
            epoch: self.epoch,
            server_ms,
            duplicate: false,
            recipients,
            welcomed: if self.stores_welcome {
                joined
            } else {
                Vec::new()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the report

    use chapar_types::GroupId;

    use super::*;

    const ALICE: DeviceId = DeviceId(1);
    const BOB: DeviceId = DeviceId(2);
    const CAROL: DeviceId = DeviceId(3);

    fn state() -> GroupState {
        GroupState {
            epoch: 4,
            head_seq: 10,
            last_proposal_seq: 7,
            members: vec![ALICE, BOB],
            roster_version: 3,
        }
    }

    fn append(sender: DeviceId, epoch: Epoch, kind: AppendKind) -> Append {
        Append {
            group: GroupId::from_slice(&[1; 16]).unwrap(),
            sender,
            epoch,
            now_ms: 99,
            payload: vec![1, 2, 3],
            kind,
        }
    }

    fn message(id: u8, roster_version: u64) -> AppendKind {
        AppendKind::Application {
            message_id: MessageId::from_slice(&[id; 16]).unwrap(),
            roster_version,
        }
    }

    fn commit(seen_seq: Seq, added: &[DeviceId], removed: &[DeviceId]) -> AppendKind {
        AppendKind::Commit {
            seen_seq,
            added: added.to_vec(),
            added_key_packages: added.iter().map(|d| [d.0 as u8; 32]).collect(),
            removed: removed.to_vec(),
            welcome: Some(vec![9]),
        }
    }

    fn none(_: MessageId) -> Result<Option<EarlierEntry>, StoreError> {
        Ok(None)
    }

    fn planned(decision: Decision) -> AppendPlan {
        match decision {
            Decision::Append(plan) => plan,
            Decision::Duplicate(answer) => panic!("a duplicate: {answer:?}"),
        }
    }

    #[test]
    fn a_message_from_a_member_at_the_current_epoch_goes_to_the_others_in_order() {
        let mut group = state();
        let plan = planned(plan_append(&group, &append(ALICE, 4, message(1, 3)), none).unwrap());
        assert_eq!((plan.seq, plan.epoch, plan.changes_members), (11, 4, false));
        let answer = plan.apply(&mut group, 99);
        assert_eq!(answer.recipients, [ALICE, BOB]);
        assert_eq!((group.head_seq, group.epoch), (11, 4));
    }

    #[test]
    fn strangers_stale_epochs_and_stale_rosters_are_refused() {
        let group = state();
        assert_eq!(
            plan_append(&group, &append(CAROL, 4, message(1, 3)), none),
            Err(StoreError::NotMember)
        );
        assert_eq!(
            plan_append(&group, &append(ALICE, 3, message(1, 3)), none),
            Err(StoreError::StaleEpoch {
                current_epoch: 4,
                head_seq: 10
            })
        );
        assert_eq!(
            plan_append(&group, &append(ALICE, 4, message(1, 2)), none),
            Err(StoreError::StaleRoster { current: 3 })
        );
    }

    #[test]
    fn a_retried_message_is_answered_as_the_first_even_after_the_epoch_moved() {
        let group = state();
        let first = EarlierEntry {
            seq: 5,
            epoch: 2,
            server_ms: 50,
        };
        let decision = plan_append(&group, &append(ALICE, 2, message(1, 0)), |_| {
            Ok(Some(first))
        })
        .unwrap();
        let Decision::Duplicate(answer) = decision else {
            panic!("not a duplicate")
        };
        assert_eq!((answer.seq, answer.epoch, answer.duplicate), (5, 2, true));
        // A stranger's retry is not looked up at all.
        let looked = std::cell::Cell::new(false);
        let _ = plan_append(&group, &append(CAROL, 4, message(1, 3)), |_| {
            looked.set(true);
            Ok(None)
        });
        assert!(!looked.get());
    }

    #[test]
    fn a_commit_only_at_the_head_moves_the_epoch_and_ends_only_members() {
        let mut group = state();
        assert!(matches!(
            plan_append(&group, &append(ALICE, 4, commit(9, &[], &[BOB])), none),
            Err(StoreError::StaleEpoch { .. })
        ));
        let plan = planned(
            plan_append(
                &group,
                &append(ALICE, 4, commit(10, &[CAROL], &[BOB, DeviceId(77)])),
                none,
            )
            .unwrap(),
        );
        assert_eq!(plan.ended, [BOB], "a stranger listed as removed is ignored");
        assert_eq!(plan.added, [(CAROL, Some([3; 32]))]);
        assert!(plan.stores_welcome && plan.changes_members);
        let answer = plan.apply(&mut group, 99);
        // The removed member hears of its removal; the new one starts after this entry.
        assert_eq!(answer.recipients, [ALICE, BOB]);
        assert_eq!(answer.welcomed, [CAROL]);
        assert_eq!(group.members, [ALICE, CAROL]);
        assert_eq!(group.epoch, 5);
    }

    #[test]
    fn an_added_device_without_a_named_key_package_is_left_for_the_claim_check_to_refuse() {
        let mut kind = commit(10, &[CAROL], &[]);
        if let AppendKind::Commit {
            added_key_packages, ..
        } = &mut kind
        {
            added_key_packages.clear();
        }
        let plan = planned(plan_append(&state(), &append(ALICE, 4, kind), none).unwrap());
        assert_eq!(plan.added, [(CAROL, None)]);
    }

    #[test]
    fn a_self_remove_proposal_ends_the_sender_and_keeps_the_epoch() {
        let mut group = state();
        let plan = planned(
            plan_append(
                &group,
                &append(BOB, 4, AppendKind::Proposal { self_remove: true }),
                none,
            )
            .unwrap(),
        );
        assert_eq!((plan.epoch, plan.last_proposal_seq), (4, 11));
        let answer = plan.apply(&mut group, 99);
        assert_eq!(answer.recipients, [ALICE, BOB]);
        assert_eq!(group.members, [ALICE]);
    }
}
