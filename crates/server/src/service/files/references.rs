//! Messages that carry files. The server cannot read a message, so its sender names the blobs
//! it carries; the store records those references with the message, in one transaction, and a
//! blob stays as long as one is left. A delete-for-everyone message names the entry it deletes
//! (`deleted_seq`) and may drop that entry's references, if its own account made them: the
//! same blob in another message (sent twice, or forwarded by anyone) stays.

use chapar_store::{Append, AppendKind, Appended, BlobRefs, Store};
use chapar_types::ErrorCode;
use chapar_types::limits::BLOBS_PER_MESSAGE_MAX;

use crate::error::ServiceError;
use crate::service::Service;

impl<S: Store> Service<S> {
    /// Appends an application message that references blobs (or drops references), durably,
    /// once [`Service::append`] has stamped it.
    pub(crate) async fn append_referencing(
        &self,
        append: Append,
        refs: BlobRefs,
    ) -> Result<Appended, ServiceError> {
        if !matches!(append.kind, AppendKind::Application { .. }) {
            return Err(ServiceError::bad_request(
                "only application messages reference blobs",
            ));
        }
        if refs.add.len() > BLOBS_PER_MESSAGE_MAX || refs.drop.len() > BLOBS_PER_MESSAGE_MAX {
            return Err(ServiceError::new(
                ErrorCode::TooLarge,
                format!("a message references at most {BLOBS_PER_MESSAGE_MAX} blobs"),
            ));
        }
        if !refs.drop.is_empty() && refs.deleted_seq == 0 {
            // A client from before `deleted_seq`: the store drops nothing (which of the
            // account's messages was deleted is unknown); the blob stays until log retention.
            tracing::debug!("a delete without deleted_seq drops no references");
        }
        let (added, dropped) = (refs.add.len(), refs.drop.len());
        let appended = self.store.append_referencing(append, refs).await?;
        if !appended.duplicate {
            tracing::debug!(
                seq = appended.seq,
                added,
                dropped,
                "message references blobs"
            );
        }
        Ok(appended)
    }
}
