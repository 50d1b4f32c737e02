//! Taking welcomes: joining the groups this device was added to, after checking that every
//! member of each is who it claims (the account keys of people seen for the first time are
//! looked up and pinned first). A welcome that does not open or is refused is skipped with a
//! warning; the welcome cursor moves past every welcome either way.

use chapar_crypto::CryptoError;
use chapar_crypto::mls;
use chapar_types::limits::ACCOUNTS_LEARNT_PER_CHANGE_MAX;
use chapar_types::{ErrorCode, GroupId, Username};
use chapar_wire::v1::{self, client_frame::Request, response::Result as Reply};

use super::device::{Device, unexpected};
use crate::CoreError;
use crate::events::{Event, Warning};
use crate::storage::{Chat, ChatKind, ChatState, Tx};

/// Welcomes fetched per request.
const FETCH_PAGE_WELCOMES: u32 = 50;
/// Profile key of the last welcome processed.
const WELCOME_CURSOR: &str = "welcome_cursor";

impl Device {
    /// Joins every group this device was welcomed into since the last sync.
    pub(crate) async fn sync_welcomes(&self) -> Result<(), CoreError> {
        loop {
            let cursor = self.read(|tx| tx.counter(WELCOME_CURSOR))?;
            let Reply::WelcomePage(page) = self
                .call(Request::FetchWelcomes(v1::FetchWelcomes {
                    after_id: cursor,
                    limit: FETCH_PAGE_WELCOMES,
                }))
                .await?
            else {
                return Err(unexpected("WelcomePage"));
            };
            if page.welcomes.is_empty() {
                return Ok(());
            }
            if page.welcomes.iter().any(|w| w.id <= cursor) {
                return Err(CoreError::Protocol(
                    "the server sent welcomes out of order".into(),
                ));
            }
            for welcome in page.welcomes {
                self.take_welcome(&welcome).await?;
            }
        }
    }

    /// Joins the group `welcome` offers if every member of it is who it claims (learning the
    /// account keys of people seen for the first time), then moves the welcome cursor past it.
    async fn take_welcome(&self, welcome: &v1::Welcome) -> Result<(), CoreError> {
        let group = GroupId::from_slice(&welcome.group_id).ok();
        let mut learnt = false;
        loop {
            let joining = self.write(|tx| {
                let joining = match group {
                    Some(group) => self.join(tx, group, welcome)?,
                    None => Joining::Skipped,
                };
                if !matches!(joining, Joining::NeedKeys(_)) {
                    tx.set_counter(WELCOME_CURSOR, welcome.id)?;
                }
                Ok(joining)
            })?;
            match (joining, group) {
                (Joining::Joined, Some(group)) => self.io.emit(Event::ChatJoined(group)),
                (Joining::NeedKeys(names), _) if !learnt => {
                    self.learn_accounts(&names).await?;
                    learnt = true;
                    continue;
                }
                (Joining::NeedKeys(names), Some(group)) => {
                    self.write(|tx| tx.set_counter(WELCOME_CURSOR, welcome.id))?;
                    self.warn(Warning::WelcomeRefused {
                        group,
                        reason: format!("{} have no account here", names_list(&names)),
                    });
                }
                (Joining::Refused(reason), Some(group)) => {
                    self.warn(Warning::WelcomeRefused { group, reason });
                }
                _ => {}
            }
            return Ok(());
        }
    }

    /// Joins `group` from `welcome` unless this device is an active member already.
    fn join(
        &self,
        tx: &Tx<'_>,
        group: GroupId,
        welcome: &v1::Welcome,
    ) -> Result<Joining, CoreError> {
        let existing = tx.chat(group)?;
        if existing.as_ref().is_some_and(Chat::is_active) {
            return Ok(Joining::Skipped);
        }
        if existing.is_some() && super::self_group::is_self_group(tx, group)? {
            // The self group is never joined again from a welcome: whoever sends one may hold
            // a stolen account key. A device that lost it is linked again.
            return Ok(Joining::Refused(
                "a welcome back into this account's own group (link this device again)".into(),
            ));
        }
        let me = self.me()?;
        // A welcome that does not open, or is refused, must leave nothing behind (joining
        // first deletes what an earlier membership left).
        let joined = tx.attempt(|tx| {
            Ok(mls::join_group(
                &self.mls(tx),
                group,
                &welcome.welcome,
                &mut me.authenticator(tx),
            )?)
        })?;
        match joined {
            Ok(_) => {}
            Err(CoreError::Crypto(CryptoError::UnknownAccounts(names))) => {
                return Ok(Joining::NeedKeys(names));
            }
            Err(CoreError::Crypto(CryptoError::Unauthenticated(reason))) => {
                tracing::warn!(%group, %reason, "refused a welcome");
                return Ok(Joining::Refused(reason));
            }
            Err(e) => {
                tracing::warn!(%group, error = %e, "could not join a group from its welcome");
                return Ok(Joining::Skipped);
            }
        }
        if existing.is_some() {
            // Known from before (left, or restored from the archive): start reading after the
            // welcome, and forget what it was said to be (a direct chat's peer, a name):
            // its members say again what it is now.
            tx.rejoin_chat(group, welcome.seq)?;
        } else {
            // The self group is the one this device recorded; every other group is a chat
            // until its members say what kind (a group-meta message).
            let kind = if super::self_group::is_self_group(tx, group)? {
                ChatKind::SelfGroup
            } else {
                ChatKind::Group
            };
            tx.insert_chat(
                &Chat::new(group, kind, ChatState::Active, welcome.seq),
                self.now_ms(),
            )?;
            // The first of the account's devices in the group: no device of the account can
            // ever archive what came before the welcome, so nothing is waited for (received
            // messages are archived from here at once).
            let provider = self.mls(tx);
            let others_of_mine = mls::load_group(&provider, group)?.is_some_and(|state| {
                mls::members(&state)
                    .iter()
                    .any(|m| m.identity.username == me.username && m.identity.device != me.device)
            });
            if !others_of_mine {
                tx.record_from_the_start(group)?;
            }
        }
        // A pending commit from an earlier membership means nothing in this one.
        tx.settle_commit(group)?;
        Ok(Joining::Joined)
    }

    /// Pins the account keys of `names` seen for the first time (trust on first use, as the
    /// server lists them; safety numbers catch a server that lies here). A name the server
    /// does not know stays unpinned, so leaves claiming it are refused.
    pub(crate) async fn learn_accounts(&self, names: &[Username]) -> Result<(), CoreError> {
        for name in names.iter().take(ACCOUNTS_LEARNT_PER_CHANGE_MAX) {
            if self.read(|tx| tx.pinned_key(name))?.is_some() {
                continue;
            }
            let reply = self
                .call(Request::GetAccount(v1::GetAccount {
                    username: name.to_string(),
                }))
                .await;
            match reply {
                Ok(Reply::Account(account)) => {
                    self.check_account_key(name, &account.account_key)?;
                }
                Ok(_) => return Err(unexpected("Account")),
                Err(e) if e.code() == Some(ErrorCode::UnknownUser) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// How taking a welcome ended.
enum Joining {
    Joined,
    /// Not joined, and nothing to say: already a member, or a welcome that does not open
    /// (logged).
    Skipped,
    /// A member is not who it claims.
    Refused(String),
    /// Accounts to learn the keys of first.
    NeedKeys(Vec<Username>),
}

pub(super) fn names_list(names: &[Username]) -> String {
    names
        .iter()
        .map(|n| format!("@{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
