//! What the engine does on its own while connected and idle: apply the log entries the server
//! pushes (or catch up where a push shows a gap), join groups a welcome hint announces, and
//! upload history to the archive once things are quiet.

use chapar_types::GroupId;
use chapar_wire::v1;

use super::device::Device;
use crate::CoreError;

/// How long the engine waits for quiet after pushes before archiving what arrived (uploads
/// are batched).
pub(crate) const ARCHIVE_QUIET_MS: u64 = 5_000;

impl Device {
    /// Handles the pushes that came: an entry next in line is applied; one further ahead
    /// syncs its group; a welcome hint, a resync request or lost pushes sync everything.
    /// Returns whether history waits to be archived.
    pub(crate) async fn handle_pushes(&self) -> Result<bool, CoreError> {
        let (pushes, lost) = self.io.take_pushes();
        let mut everything = lost;
        for push in pushes {
            match push.kind {
                Some(v1::push::Kind::LogEntry(entry)) => {
                    let Ok(group) = GroupId::from_slice(&entry.group_id) else {
                        continue;
                    };
                    match self.read(|tx| tx.chat(group))? {
                        Some(chat) if chat.is_active() && entry.seq == chat.position + 1 => {
                            self.apply_entry(group, &entry).await?;
                        }
                        Some(chat) if chat.is_active() && entry.seq > chat.position => {
                            self.sync_group(group).await?;
                        }
                        _ => continue,
                    }
                    self.prepare_group(group).await?;
                }
                Some(_) => everything = true,
                None => {}
            }
        }
        if everything {
            self.sync_all().await?;
        } else {
            self.send_owed_meta().await?;
        }
        self.read(|tx| tx.has_archive_events())
    }
}
