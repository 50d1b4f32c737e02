//! Who a leaf is, and the proof of it that every leaf carries.
//!
//! A leaf's basic credential holds `username:device-id-hex:certificate-hex`, where the
//! certificate is the account key's signature over the device certificate payload (username,
//! device id and the leaf's signature key, `chapar_types::signed::device_cert_payload`). So a
//! leaf proves itself to anyone who knows the account key: no server lookup, no trust in who
//! added it. The check itself needs the account key *the checker pinned* for that username;
//! this module finds every leaf a welcome or commit brings in and hands each to the caller's
//! [`Authenticate`], which looks the key up.
//!
//! What counts as a new leaf (RFC 9420 leaves this to the application, §5.3.1 and §13.4.4;
//! openmls 0.9 has no validation callback): every leaf of a welcome's ratchet tree; in a
//! commit, the committer's update-path leaf (which must keep the committer's identity) and
//! every Add and Update. Chapar uses no other proposal type, so a commit or proposal carrying
//! one is refused; a standalone proposal may only be a member removing itself (leaving).

use chapar_types::{DeviceId, Username};
use data_encoding::HEXLOWER;
use openmls::prelude::*;

use crate::CryptoError;
use crate::identity;

/// Who a leaf is: an account and one of its devices.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceIdentity {
    /// The account.
    pub username: Username,
    /// The device.
    pub device: DeviceId,
}

/// A leaf as a group's state (or a welcome, or a commit) presents it.
#[derive(Debug, Clone)]
pub struct GroupMember {
    /// Account and device the leaf claims.
    pub identity: DeviceIdentity,
    /// The leaf's signature key: the device key.
    pub signature_key: Vec<u8>,
    /// The account key's signature over the device certificate (as the credential carries it;
    /// not yet checked).
    pub certificate: Vec<u8>,
}

impl GroupMember {
    /// Checks the leaf's certificate against `account_key`, the key the caller pinned for
    /// the leaf's username.
    pub fn verify(&self, account_key: &[u8]) -> Result<(), CryptoError> {
        identity::verify_device_cert(
            account_key,
            &self.identity.username,
            self.identity.device,
            &self.signature_key,
            &self.certificate,
        )
        .map_err(|_| {
            CryptoError::Unauthenticated(format!(
                "device {} of @{} is not certified by the account key this device trusts",
                self.identity.device, self.identity.username
            ))
        })
    }

    pub(crate) fn from_leaf(
        credential: &Credential,
        signature_key: &[u8],
    ) -> Result<Self, CryptoError> {
        let (identity, certificate) = parse_credential(credential)?;
        Ok(Self {
            identity,
            signature_key: signature_key.to_vec(),
            certificate,
        })
    }
}

/// Decides whether one leaf may be in a group: `Ok` if its certificate verifies under the
/// account key the caller pinned for its username. A caller that has no key pinned for the
/// username answers [`CryptoError::UnknownAccounts`]; the operation then fails with every
/// account it lacks, and the caller fetches their keys and tries again.
pub trait Authenticate {
    /// Checks one leaf.
    fn authenticate(&mut self, member: &GroupMember) -> Result<(), CryptoError>;
}

impl<F: FnMut(&GroupMember) -> Result<(), CryptoError>> Authenticate for F {
    fn authenticate(&mut self, member: &GroupMember) -> Result<(), CryptoError> {
        self(member)
    }
}

/// The credential bytes of a certified device.
pub(crate) fn credential_bytes(identity: &DeviceIdentity, certificate: &[u8]) -> Vec<u8> {
    format!(
        "{}:{}:{}",
        identity.username,
        identity.device,
        HEXLOWER.encode(certificate)
    )
    .into_bytes()
}

fn parse_credential(credential: &Credential) -> Result<(DeviceIdentity, Vec<u8>), CryptoError> {
    let bad = |what: &str| CryptoError::Unauthenticated(format!("a leaf's credential: {what}"));
    let basic =
        BasicCredential::try_from(credential.clone()).map_err(|_| bad("not a basic credential"))?;
    let text = std::str::from_utf8(basic.identity()).map_err(|_| bad("not text"))?;
    let mut parts = text.split(':');
    let (Some(name), Some(device), Some(certificate), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("not username:device:certificate"));
    };
    let identity = DeviceIdentity {
        username: Username::parse(name).map_err(|_| bad("bad username"))?,
        device: device.parse().map_err(|_| bad("bad device id"))?,
    };
    let certificate = HEXLOWER
        .decode(certificate.as_bytes())
        .map_err(|_| bad("bad certificate"))?;
    // One encoding per identity: what parses must be exactly what this device would write.
    if credential_bytes(&identity, &certificate) != basic.identity() {
        return Err(bad("not in its one canonical form"));
    }
    Ok((identity, certificate))
}

/// Runs the caller's check over leaves, collecting every account it does not know yet, so
/// that one round of lookups serves a whole welcome or commit.
struct Checker<'a> {
    auth: &'a mut dyn Authenticate,
    unknown: Vec<Username>,
}

impl<'a> Checker<'a> {
    fn new(auth: &'a mut dyn Authenticate) -> Self {
        Self {
            auth,
            unknown: Vec::new(),
        }
    }

    fn check(&mut self, member: &GroupMember) -> Result<(), CryptoError> {
        match self.auth.authenticate(member) {
            Err(CryptoError::UnknownAccounts(names)) => {
                for name in names {
                    if !self.unknown.contains(&name) {
                        self.unknown.push(name);
                    }
                }
                Ok(())
            }
            other => other,
        }
    }

    fn finish(self) -> Result<(), CryptoError> {
        if self.unknown.is_empty() {
            Ok(())
        } else {
            Err(CryptoError::UnknownAccounts(self.unknown))
        }
    }
}

/// Every leaf of a welcome's tree must pass.
pub(crate) fn check_welcome(
    staged: &StagedWelcome,
    auth: &mut dyn Authenticate,
) -> Result<(), CryptoError> {
    let mut checker = Checker::new(auth);
    let mut devices = std::collections::HashSet::new();
    for member in staged.members() {
        let member = GroupMember::from_leaf(&member.credential, &member.signature_key)?;
        unique_device(&mut devices, &member)?;
        checker.check(&member)?;
    }
    checker.finish()
}

/// Device ids are unique on the server, and devices are told apart by id alone: a tree
/// holding one id twice (another account certifying a leaf with someone else's device id)
/// would have that device removed or left out along with its double.
fn unique_device(
    seen: &mut std::collections::HashSet<DeviceId>,
    member: &GroupMember,
) -> Result<(), CryptoError> {
    if seen.insert(member.identity.device) {
        Ok(())
    } else {
        Err(CryptoError::Unauthenticated(format!(
            "two leaves claim device {}",
            member.identity.device
        )))
    }
}

/// The committer's new leaf keeps its identity, and every Add and Update passes; any other
/// proposal type is refused.
pub(crate) fn check_commit(
    staged: &StagedCommit,
    committer: &GroupMember,
    members: &[GroupMember],
    auth: &mut dyn Authenticate,
) -> Result<(), CryptoError> {
    let mut checker = Checker::new(auth);
    let mut devices: std::collections::HashSet<DeviceId> =
        members.iter().map(|m| m.identity.device).collect();
    if let Some(leaf) = staged.update_path_leaf_node() {
        let member = GroupMember::from_leaf(leaf.credential(), leaf.signature_key().as_slice())?;
        if member.identity != committer.identity {
            return Err(CryptoError::Unauthenticated(format!(
                "device {} of @{} tried to become device {} of @{}",
                committer.identity.device,
                committer.identity.username,
                member.identity.device,
                member.identity.username
            )));
        }
        checker.check(&member)?;
    }
    for queued in staged.queued_proposals() {
        if let Some(added) = check_proposal(queued.proposal(), &mut checker)? {
            unique_device(&mut devices, &added)?;
        }
    }
    checker.finish()
}

/// A proposal inside a commit: Adds and Updates bring leaves that must pass (an Add's is
/// returned, to check it is a new device); Removes bring none; nothing else is used by
/// Chapar.
fn check_proposal(
    proposal: &Proposal,
    checker: &mut Checker<'_>,
) -> Result<Option<GroupMember>, CryptoError> {
    let (leaf, adds) = match proposal {
        Proposal::Add(add) => (add.key_package().leaf_node(), true),
        Proposal::Update(update) => (update.leaf_node(), false),
        Proposal::Remove(_) => return Ok(None),
        other => {
            return Err(CryptoError::Unauthenticated(format!(
                "a {:?} proposal, which Chapar does not use",
                other.proposal_type()
            )));
        }
    };
    let member = GroupMember::from_leaf(leaf.credential(), leaf.signature_key().as_slice())?;
    checker.check(&member)?;
    Ok(adds.then_some(member))
}

/// A standalone proposal must be its sender leaving: the only one Chapar makes. (Anything
/// else would wait in the queue until this device committed it, unchecked.)
pub(crate) fn check_standalone_proposal(
    proposal: &QueuedProposal,
    sender: LeafNodeIndex,
) -> Result<(), CryptoError> {
    match proposal.proposal() {
        Proposal::Remove(remove) if remove.removed() == sender => Ok(()),
        other => Err(CryptoError::Unauthenticated(format!(
            "a standalone {:?} proposal: members may only propose to leave",
            other.proposal_type()
        ))),
    }
}
