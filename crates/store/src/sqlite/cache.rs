//! What the writer thread remembers about groups between appends: each one's
//! [`GroupState`] (epoch, head, last proposal, current members and roster version). The writer is the only one that changes these rows, so
//! the cache is exact as long as it is dropped whenever a batch fails to commit or an account's
//! devices change.

use std::collections::HashMap;

use chapar_types::{DeviceId, GroupId};
use rusqlite::Connection;

use super::sql;
use crate::StoreError;
use crate::rules::GroupState;

/// Groups remembered at most; past it the cache starts over (a miss costs two reads).
pub const GROUP_CACHE_ENTRIES_MAX: usize = 65_536;

/// The group's roster version: the highest roster version of the accounts that have a current
/// member in it, or whose member device was revoked (after a recovery revoked every old device,
/// the account may have no current member left, and the others must still notice).
pub fn roster_version(c: &Connection, group: GroupId) -> Result<u64, StoreError> {
    c.prepare_cached(
        "SELECT COALESCE(MAX(a.roster_version), 0) FROM members m
         JOIN devices d ON d.device_id = m.device_id
         JOIN accounts a ON a.username = d.username
         WHERE m.group_id = ?1 AND (m.left_seq IS NULL OR d.revoked_ms IS NOT NULL)",
    )
    .map_err(sql)?
    .query_row([group.as_bytes()], |r| r.get::<_, i64>(0))
    .map(|n| n as u64)
    .map_err(sql)
}

/// The writer's cache.
#[derive(Default)]
pub struct GroupCache {
    groups: HashMap<GroupId, GroupState>,
}

impl GroupCache {
    /// The group's state, read from the database on a miss.
    pub fn get(&mut self, c: &Connection, group: GroupId) -> Result<GroupState, StoreError> {
        if let Some(cached) = self.groups.get(&group) {
            return Ok(cached.clone());
        }
        let state = c
            .prepare_cached(
                "SELECT epoch, head_seq, last_proposal_seq FROM groups WHERE group_id = ?1",
            )
            .map_err(sql)?
            .query_row([group.as_bytes()], |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, i64>(2)? as u64,
                ))
            });
        let (epoch, head_seq, last_proposal_seq) = match state {
            Ok(state) => state,
            Err(rusqlite::Error::QueryReturnedNoRows) => return Err(StoreError::UnknownGroup),
            Err(e) => return Err(sql(e)),
        };
        let members = c
            .prepare_cached(
                "SELECT device_id FROM members WHERE group_id = ?1 AND left_seq IS NULL",
            )
            .map_err(sql)?
            .query_map([group.as_bytes()], |r| {
                r.get::<_, i64>(0).map(|d| DeviceId(d as u64))
            })
            .map_err(sql)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql)?;
        let cached = GroupState {
            epoch,
            head_seq,
            last_proposal_seq,
            members,
            roster_version: roster_version(c, group)?,
        };
        if self.groups.len() >= GROUP_CACHE_ENTRIES_MAX {
            self.groups.clear();
        }
        self.groups.insert(group, cached.clone());
        Ok(cached)
    }

    /// Records a group's state after a successful append.
    pub fn put(&mut self, group: GroupId, state: GroupState) {
        self.groups.insert(group, state);
    }

    /// Forgets everything (after a failed batch, the database is the truth again).
    pub fn clear(&mut self) {
        self.groups.clear();
    }
}
