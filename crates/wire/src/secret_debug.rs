//! `Debug` for the content messages that carry secret keys: it names the fields and hides the
//! keys, so logging such a value by mistake leaks nothing.

use std::fmt;

use crate::content::{AccountSecrets, ArchiveKey, File, LinkApprovalBody};

const HIDDEN: &str = "<secret>";

impl fmt::Debug for ArchiveKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArchiveKey")
            .field("generation", &self.generation)
            .field("key", &HIDDEN)
            .finish()
    }
}

impl fmt::Debug for AccountSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountSecrets")
            .field("username", &self.username)
            .field("account_secret_key", &HIDDEN)
            .field("archive_keys", &self.archive_keys)
            .field("recovery", &self.recovery)
            .finish()
    }
}

impl fmt::Debug for LinkApprovalBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkApprovalBody")
            .field("secrets", &self.secrets)
            .field("approver_device", &self.approver_device)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The name and caption are private too: a log line must not carry them.
        f.debug_struct("File")
            .field("blob_id", &self.blob_id)
            .field("key", &HIDDEN)
            .field("size", &self.size)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_never_print() {
        let secrets = AccountSecrets {
            username: "alice".into(),
            account_secret_key: vec![0xAB; 32],
            archive_keys: vec![ArchiveKey {
                generation: 7,
                key: vec![0xCD; 32],
            }],
            recovery: None,
            self_group_id: Vec::new(),
            server_id: Vec::new(),
        };
        let approval = LinkApprovalBody {
            secrets: Some(secrets),
            ..Default::default()
        };
        let printed = format!("{approval:?}");
        assert!(printed.contains("alice") && printed.contains("generation: 7"));
        assert!(
            !printed.contains("171") && !printed.contains("205"),
            "{printed}"
        );
        let file = File {
            key: vec![0xAB; 32],
            name: "plans-xyzzy.pdf".into(),
            caption: "do not share".into(),
            ..Default::default()
        };
        let printed = format!("{file:?}");
        assert!(
            !printed.contains("171") && !printed.contains("xyzzy") && !printed.contains("share"),
            "{printed}"
        );
    }
}
