//! Group logs in PostgreSQL: creating a group, appending (state loaded under the group row's
//! lock, [`rules::plan_append`] decides, this module writes the plan), reading pages of the
//! log, welcomes and a device's groups, and accounts' history archives.

use chapar_types::{DeviceId, GroupId, MessageId, Seq};
use tokio_postgres::Row;

use super::{
    Failure, Tx, backend, dev, exec, insert_numbered, num, one, opt, rows, to_dev, unique_or, unum,
};
use crate::paging::page_of;
use crate::rules::{self, Decision, EarlierEntry, GroupState};
use crate::*;

fn group_id(bytes: &[u8]) -> Result<GroupId, Failure> {
    GroupId::from_slice(bytes).map_err(backend)
}

pub(super) async fn create_group(
    tx: &Tx<'_>,
    group: GroupId,
    creator: DeviceId,
    now_ms: u64,
) -> Result<(), Failure> {
    let g = group.as_bytes();
    let statement = tx
        .prepare_cached(
            "INSERT INTO groups (group_id, epoch, head_seq, last_proposal_seq, created_ms)
             VALUES ($1, 0, 0, 0, $2)",
        )
        .await
        .map_err(super::pg)?;
    tx.execute(&statement, &[&g, &num(now_ms)?])
        .await
        .map_err(|e| unique_or(e, StoreError::GroupExists))?;
    exec(
        tx,
        "INSERT INTO members (group_id, device_id, joined_seq) VALUES ($1, $2, 0)",
        &[&g, &dev(creator)],
    )
    .await?;
    Ok(())
}

/// The group's roster version: the highest roster version of the accounts that have a current
/// member in it, or whose member device was revoked (after a recovery revoked every old device,
/// the account may have no current member left, and the others must still notice).
async fn roster_version(tx: &Tx<'_>, group: GroupId) -> Result<u64, Failure> {
    let row = one(
        tx,
        "SELECT COALESCE(MAX(a.roster_version), 0)::BIGINT FROM members m
         JOIN devices d ON d.device_id = m.device_id
         JOIN accounts a ON a.username = d.username
         WHERE m.group_id = $1 AND (m.left_seq IS NULL OR d.revoked_ms IS NOT NULL)",
        &[&group.as_bytes()],
    )
    .await?;
    Ok(unum(row.get(0)))
}

/// Loads the group's state and locks its row until the transaction ends (the group's advisory
/// lock, taken before the transaction, already queues appends; the row lock also covers
/// writers that do not take it).
async fn lock_group(tx: &Tx<'_>, group: GroupId) -> Result<GroupState, Failure> {
    let g = group.as_bytes();
    let Some(row) = opt(
        tx,
        "SELECT epoch, head_seq, last_proposal_seq FROM groups WHERE group_id = $1 FOR UPDATE",
        &[&g],
    )
    .await?
    else {
        return Err(StoreError::UnknownGroup.into());
    };
    let members = rows(
        tx,
        "SELECT device_id FROM members WHERE group_id = $1 AND left_seq IS NULL ORDER BY device_id",
        &[&g],
    )
    .await?
    .iter()
    .map(|r| to_dev(r.get(0)))
    .collect();
    Ok(GroupState {
        epoch: unum(row.get(0)),
        head_seq: unum(row.get(1)),
        last_proposal_seq: unum(row.get(2)),
        members,
        roster_version: roster_version(tx, group).await?,
    })
}

pub(super) async fn append(tx: &Tx<'_>, a: &Append) -> Result<Appended, Failure> {
    let mut state = lock_group(tx, a.group).await?;
    // The rules ask for an earlier entry synchronously; look it up first (one indexed read,
    // and only for application messages, the only kind that carries an id).
    let earlier = match &a.kind {
        AppendKind::Application { message_id, .. } => {
            find_duplicate(tx, a.group, a.sender, *message_id).await?
        }
        _ => None,
    };
    let plan = match rules::plan_append(&state, a, |_| Ok(earlier))? {
        Decision::Duplicate(answer) => return Ok(answer),
        Decision::Append(plan) => plan,
    };
    let (g, seq) = (a.group.as_bytes(), num(plan.seq)?);
    for (device, key_package) in &plan.added {
        add_member(tx, a.group, *device, seq).await?;
        super::key_packages::use_claim(tx, a.sender, *device, key_package.as_ref()).await?;
    }
    if plan.stores_welcome
        && let AppendKind::Commit {
            welcome: Some(welcome),
            added,
            ..
        } = &a.kind
    {
        store_welcome(tx, a.group, seq, a.sender, welcome, added).await?;
    }
    for device in &plan.ended {
        exec(
            tx,
            "UPDATE members SET left_seq = $3
             WHERE group_id = $1 AND device_id = $2 AND left_seq IS NULL",
            &[&g, &dev(*device), &seq],
        )
        .await?;
    }
    let message_id = plan.message_id.as_ref().map(|m| m.as_bytes());
    exec(
        tx,
        "INSERT INTO log (group_id, seq, kind, epoch, sender, message_id, payload, server_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &g,
            &seq,
            &kind_of(&a.kind).as_i64(),
            &num(a.epoch)?,
            &dev(a.sender),
            &message_id,
            &a.payload,
            &num(a.now_ms)?,
        ],
    )
    .await?;
    exec(
        tx,
        "UPDATE groups SET epoch = $2, head_seq = $3, last_proposal_seq = $4 WHERE group_id = $1",
        &[&g, &num(plan.epoch)?, &seq, &num(plan.last_proposal_seq)?],
    )
    .await?;
    Ok(plan.apply(&mut state, a.now_ms))
}

fn kind_of(kind: &AppendKind) -> EntryKind {
    match kind {
        AppendKind::Application { .. } => EntryKind::Application,
        AppendKind::Commit { .. } => EntryKind::Commit,
        AppendKind::Proposal { .. } => EntryKind::Proposal,
    }
}

async fn find_duplicate(
    tx: &Tx<'_>,
    group: GroupId,
    sender: DeviceId,
    message_id: MessageId,
) -> Result<Option<EarlierEntry>, Failure> {
    let row = opt(
        tx,
        "SELECT seq, epoch, server_ms FROM log
         WHERE group_id = $1 AND sender = $2 AND message_id = $3",
        &[&group.as_bytes(), &dev(sender), &message_id.as_bytes()],
    )
    .await?;
    Ok(row.map(|r| EarlierEntry {
        seq: unum(r.get(0)),
        epoch: unum(r.get(1)),
        server_ms: unum(r.get(2)),
    }))
}

async fn add_member(
    tx: &Tx<'_>,
    group: GroupId,
    device: DeviceId,
    seq: i64,
) -> Result<(), Failure> {
    // Only active devices can be added: a revoked device must not come back through a commit.
    if opt(
        tx,
        "SELECT 1 FROM devices WHERE device_id = $1 AND revoked_ms IS NULL",
        &[&dev(device)],
    )
    .await?
    .is_none()
    {
        return Err(StoreError::UnknownDevice(device).into());
    }
    // A device that left and is added again starts a new membership window.
    exec(
        tx,
        "INSERT INTO members (group_id, device_id, joined_seq) VALUES ($1, $2, $3)
         ON CONFLICT (group_id, device_id) DO UPDATE SET joined_seq = $3, left_seq = NULL",
        &[&group.as_bytes(), &dev(device), &seq],
    )
    .await?;
    Ok(())
}

async fn store_welcome(
    tx: &Tx<'_>,
    group: GroupId,
    seq: i64,
    sender: DeviceId,
    welcome: &[u8],
    recipients: &[DeviceId],
) -> Result<(), Failure> {
    let welcome_id: i64 = one(
        tx,
        "INSERT INTO welcomes (group_id, seq, sender, data) VALUES ($1, $2, $3, $4) RETURNING id",
        &[&group.as_bytes(), &seq, &dev(sender), &welcome],
    )
    .await?
    .get(0);
    // Numbered per device: a reader paging "after id N" never misses a row that commits late.
    for device in recipients {
        insert_numbered(
            tx,
            "INSERT INTO inbox (device_id, id, welcome_id)
             SELECT $1, COALESCE(MAX(id), 0) + 1, $2 FROM inbox WHERE device_id = $1
             RETURNING id",
            &[&dev(*device), &welcome_id],
        )
        .await?;
    }
    Ok(())
}

pub(super) async fn read_log(
    tx: &Tx<'_>,
    group: GroupId,
    device: DeviceId,
    after: Seq,
    limit: u32,
) -> Result<LogPage, Failure> {
    let g = group.as_bytes();
    let Some(head) = opt(tx, "SELECT head_seq FROM groups WHERE group_id = $1", &[&g]).await?
    else {
        return Err(StoreError::UnknownGroup.into());
    };
    let head = unum(head.get(0));
    let Some(window) = opt(
        tx,
        "SELECT joined_seq, left_seq FROM members WHERE group_id = $1 AND device_id = $2",
        &[&g, &dev(device)],
    )
    .await?
    else {
        return Err(StoreError::NotMember.into());
    };
    let (joined, left) = (
        unum(window.get(0)),
        window.get::<_, Option<i64>>(1).map(unum),
    );
    // A member sees entries after the one that added it, up to the one that ended its membership.
    let from = after.max(joined);
    let until = left.unwrap_or(u64::MAX >> 1);
    let found = rows(
        tx,
        "SELECT seq, kind, epoch, sender, message_id, payload, server_ms FROM log
         WHERE group_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4",
        &[&g, &num(from)?, &num(until)?, &i64::from(limit)],
    )
    .await?;
    let entries = found.iter().map(|r| Ok::<_, Failure>(log_entry(group, r)));
    let entries = page_of(entries, |e| e.payload.len())?;
    let last = entries.last().map_or(from, |e| e.seq);
    Ok(LogPage {
        entries,
        head_seq: head,
        membership_ended: left.is_some_and(|l| last >= l),
    })
}

fn log_entry(group: GroupId, r: &Row) -> LogEntry {
    let message_id: Option<Vec<u8>> = r.get(4);
    LogEntry {
        group,
        seq: unum(r.get(0)),
        kind: EntryKind::from_i64(r.get(1)).unwrap_or(EntryKind::Application),
        epoch: unum(r.get(2)),
        sender: to_dev(r.get(3)),
        message_id: message_id.and_then(|m| MessageId::from_slice(&m).ok()),
        payload: r.get(5),
        server_ms: unum(r.get(6)),
    }
}

pub(super) async fn read_welcomes(
    tx: &Tx<'_>,
    device: DeviceId,
    after_id: u64,
    limit: u32,
) -> Result<Vec<WelcomeRecord>, Failure> {
    let found = rows(
        tx,
        "SELECT inbox.id, w.group_id, w.seq, w.sender, w.data FROM inbox
         JOIN welcomes w ON w.id = inbox.welcome_id
         WHERE inbox.device_id = $1 AND inbox.id > $2 ORDER BY inbox.id LIMIT $3",
        &[&dev(device), &num(after_id)?, &i64::from(limit)],
    )
    .await?;
    let welcomes = found.iter().map(|r| {
        Ok(WelcomeRecord {
            id: unum(r.get(0)),
            group: group_id(r.get(1))?,
            seq: unum(r.get(2)),
            sender: to_dev(r.get(3)),
            welcome: r.get(4),
        })
    });
    page_of(welcomes, |w| w.welcome.len())
}

pub(super) async fn device_groups(
    tx: &Tx<'_>,
    device: DeviceId,
    after: Option<GroupId>,
    limit: u32,
) -> Result<Vec<GroupHead>, Failure> {
    // Every group id is 16 bytes, so the empty string sorts before all of them.
    let after = after.map(|g| g.as_bytes().to_vec()).unwrap_or_default();
    let found = rows(
        tx,
        "SELECT g.group_id, g.head_seq, m.joined_seq, m.left_seq,
           COALESCE((SELECT ah.through_seq FROM archive_heads ah
                     WHERE ah.username = me.username AND ah.group_id = g.group_id), 0)
         FROM members m
         JOIN groups g ON g.group_id = m.group_id
         JOIN devices me ON me.device_id = m.device_id
         WHERE m.device_id = $1 AND m.group_id > $2
         ORDER BY m.group_id
         LIMIT $3",
        &[&dev(device), &after, &i64::from(limit)],
    )
    .await?;
    let mut heads = Vec::with_capacity(found.len());
    for r in &found {
        let group = group_id(r.get(0))?;
        heads.push(GroupHead {
            group,
            head_seq: unum(r.get(1)),
            joined_seq: unum(r.get(2)),
            left_seq: r.get::<_, Option<i64>>(3).map(unum),
            archived_seq: unum(r.get(4)),
            roster_version: roster_version(tx, group).await?,
        });
    }
    Ok(heads)
}

pub(super) async fn append_archive(
    tx: &Tx<'_>,
    username: &str,
    device: DeviceId,
    segment: &ArchiveSegment,
    now_ms: u64,
) -> Result<u64, Failure> {
    let g = segment.group.as_bytes();
    // Only a device that is or was in the group may archive it: no positions for made-up groups.
    if opt(
        tx,
        "SELECT 1 FROM members WHERE group_id = $1 AND device_id = $2",
        &[&g, &dev(device)],
    )
    .await?
    .is_none()
    {
        return Err(StoreError::NotMember.into());
    }
    // Nothing can be archived beyond the log: a bad position would hide real history.
    let head: i64 = one(tx, "SELECT head_seq FROM groups WHERE group_id = $1", &[&g])
        .await?
        .get(0);
    if segment.through_seq > unum(head) {
        return Err(StoreError::BeyondHead.into());
    }
    let archived = opt(
        tx,
        "SELECT through_seq FROM archive_heads WHERE username = $1 AND group_id = $2",
        &[&username, &g],
    )
    .await?
    .map_or(0, |r| unum(r.get(0)));
    if segment.through_seq <= archived {
        return Err(StoreError::Conflict { position: archived }.into());
    }
    let through = num(segment.through_seq)?;
    // Numbered per account, for the same reason as the inbox.
    let id: i64 = insert_numbered(
        tx,
        "INSERT INTO archive (username, id, group_id, from_seq, through_seq, key_generation,
                              data, created_ms)
         SELECT $1, COALESCE(MAX(id), 0) + 1, $2, $3, $4, $5, $6, $7
           FROM archive WHERE username = $1
         RETURNING id",
        &[
            &username,
            &g,
            &num(segment.from_seq)?,
            &through,
            &i64::from(segment.key_generation),
            &segment.ciphertext,
            &num(now_ms)?,
        ],
    )
    .await?
    .get(0);
    exec(
        tx,
        "INSERT INTO archive_heads (username, group_id, through_seq) VALUES ($1, $2, $3)
         ON CONFLICT (username, group_id) DO UPDATE SET through_seq = $3",
        &[&username, &g, &through],
    )
    .await?;
    Ok(unum(id))
}

pub(super) async fn read_archive(
    tx: &Tx<'_>,
    username: &str,
    after_id: u64,
    limit: u32,
) -> Result<Vec<ArchiveSegment>, Failure> {
    let found = rows(
        tx,
        "SELECT id, group_id, from_seq, through_seq, key_generation, data FROM archive
         WHERE username = $1 AND id > $2 ORDER BY id LIMIT $3",
        &[&username, &num(after_id)?, &i64::from(limit)],
    )
    .await?;
    let segments = found.iter().map(|r| {
        Ok(ArchiveSegment {
            id: unum(r.get(0)),
            group: group_id(r.get(1))?,
            from_seq: unum(r.get(2)),
            through_seq: unum(r.get(3)),
            key_generation: u32::try_from(r.get::<_, i64>(4)).map_err(backend)?,
            ciphertext: r.get(5),
        })
    });
    page_of(segments, |s| s.ciphertext.len())
}
