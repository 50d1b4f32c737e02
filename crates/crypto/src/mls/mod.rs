//! MLS groups whose members are devices, wrapped to the operations Chapar needs.
//!
//! Each leaf carries a basic credential naming its account and device with the account key's
//! certificate of the leaf's signature key (the device key); every leaf that enters a group,
//! through a welcome or a commit, is authenticated by the caller before it counts
//! ([`leaf`]).
//! Handshake and application messages are both sent as MLS `PrivateMessage`s, so the server sees
//! neither content nor who was added; clients tell the server the device ids it must route to.

use chapar_types::{DeviceId, GroupId};
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use sha2::Digest as _;

use crate::CryptoError;
use crate::identity::SecretKey;

/// The one ciphersuite Chapar uses: X25519, AES-128-GCM, SHA-256, Ed25519.
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// How far a sender's messages may arrive out of order, and how many of a sender's messages may
/// be skipped, before decryption gives up. Pipelined sends can be reordered by the server.
const OUT_OF_ORDER_TOLERANCE: u32 = 64;
const MAXIMUM_FORWARD_DISTANCE: u32 = 10_000;

pub use openmls::group::MlsGroup;

mod changes;
mod leaf;
pub use changes::*;
pub use leaf::{Authenticate, DeviceIdentity, GroupMember};

/// A device's MLS signing identity: its leaf credential (with the account's certificate) and
/// the key that signs for it.
pub struct DeviceSigner {
    identity: DeviceIdentity,
    certificate: Vec<u8>,
    keys: SignatureKeyPair,
}

impl DeviceSigner {
    /// Builds the MLS signer from the device key and the account key's `certificate` of it
    /// ([`crate::identity::certify_device`]).
    pub fn new(identity: DeviceIdentity, device_key: &SecretKey, certificate: Vec<u8>) -> Self {
        let keys = SignatureKeyPair::from_raw(
            CIPHERSUITE.signature_algorithm(),
            device_key.to_bytes().to_vec(),
            device_key.public().to_vec(),
        );
        Self {
            identity,
            certificate,
            keys,
        }
    }

    /// Builds the signer of a device certified by `account_key` here and now (tests, tools).
    pub fn certified(
        identity: DeviceIdentity,
        device_key: &SecretKey,
        account_key: &SecretKey,
    ) -> Self {
        let certificate = crate::identity::certify_device(
            account_key,
            &identity.username,
            identity.device,
            &device_key.public(),
        );
        Self::new(identity, device_key, certificate)
    }

    /// Who this signer is.
    pub fn identity(&self) -> &DeviceIdentity {
        &self.identity
    }

    fn credential_with_key(&self) -> CredentialWithKey {
        CredentialWithKey {
            credential: BasicCredential::new(leaf::credential_bytes(
                &self.identity,
                &self.certificate,
            ))
            .into(),
            signature_key: self.keys.public().into(),
        }
    }
}

/// A commit to send to the delivery service, with the routing facts the server needs.
pub struct OutgoingCommit {
    /// The serialized MLS commit.
    pub commit: Vec<u8>,
    /// The serialized MLS Welcome for added devices, if any were added.
    pub welcome: Option<Vec<u8>>,
    /// Devices this commit adds.
    pub added: Vec<DeviceId>,
    /// The SHA-256 of each added device's key package, in the order of `added`.
    pub added_key_packages: Vec<[u8; 32]>,
    /// Devices this commit removes.
    pub removed: Vec<DeviceId>,
}

/// What processing one incoming handshake or application message produced.
#[derive(Debug)]
pub enum Incoming {
    /// An application message's plaintext, with its verified sender leaf.
    Application {
        /// The sending leaf.
        sender: GroupMember,
        /// The decrypted bytes.
        plaintext: Vec<u8>,
    },
    /// A proposal, queued until someone commits it.
    Proposal {
        /// The proposing leaf.
        sender: GroupMember,
    },
    /// A commit that has been merged: the group is in a new epoch.
    Commit {
        /// The committing leaf.
        sender: GroupMember,
        /// Devices added by the commit.
        added: Vec<DeviceIdentity>,
        /// Devices removed by the commit.
        removed: Vec<DeviceIdentity>,
        /// This device was removed; the group is no longer usable.
        removed_self: bool,
    },
    /// A message this device sent itself, fanned back by the delivery service.
    Own,
}

fn mls_err(e: impl std::fmt::Display) -> CryptoError {
    CryptoError::Mls(e.to_string())
}

fn sender_ratchet() -> SenderRatchetConfiguration {
    SenderRatchetConfiguration::new(OUT_OF_ORDER_TOLERANCE, MAXIMUM_FORWARD_DISTANCE)
}

/// Makes a key package for this device. A last-resort package may be used more than once;
/// one-time packages are consumed by the first group that uses them.
pub fn new_key_package<P: OpenMlsProvider>(
    provider: &P,
    signer: &DeviceSigner,
    last_resort: bool,
) -> Result<Vec<u8>, CryptoError> {
    // The leaf must declare the last-resort extension for a last-resort package to be valid.
    let capabilities =
        Capabilities::new(None, None, Some(&[ExtensionType::LastResort]), None, None);
    let mut builder = KeyPackage::builder().leaf_node_capabilities(capabilities);
    if last_resort {
        builder = builder.mark_as_last_resort();
    }
    let bundle = builder
        .build(
            CIPHERSUITE,
            provider,
            &signer.keys,
            signer.credential_with_key(),
        )
        .map_err(mls_err)?;
    bundle
        .key_package()
        .tls_serialize_detached()
        .map_err(mls_err)
}

/// A key package checked for validity, with the device it claims to belong to.
#[derive(Clone)]
pub struct VerifiedKeyPackage {
    key_package: KeyPackage,
    /// The device the leaf credential names.
    pub identity: DeviceIdentity,
    /// The leaf's signature key, which the caller compares with the device certificate.
    pub signature_key: Vec<u8>,
    /// The certificate the leaf's credential carries.
    pub certificate: Vec<u8>,
    /// The SHA-256 of the key package as the server handed it out (how the delivery
    /// service recognises the claim a commit uses).
    pub sha256: [u8; 32],
}

impl VerifiedKeyPackage {
    /// The leaf this key package would add, for [`Authenticate`].
    pub fn member(&self) -> GroupMember {
        GroupMember {
            identity: self.identity.clone(),
            signature_key: self.signature_key.clone(),
            certificate: self.certificate.clone(),
        }
    }
}

/// Parses and verifies a key package's own signatures and lifetime.
pub fn verify_key_package<P: OpenMlsProvider>(
    provider: &P,
    bytes: &[u8],
) -> Result<VerifiedKeyPackage, CryptoError> {
    let key_package = KeyPackageIn::tls_deserialize_exact(bytes)
        .map_err(|e| CryptoError::MalformedMls(e.to_string()))?
        .validate(provider.crypto(), ProtocolVersion::Mls10)
        .map_err(mls_err)?;
    let leaf = key_package.leaf_node();
    let member = GroupMember::from_leaf(leaf.credential(), leaf.signature_key().as_slice())?;
    Ok(VerifiedKeyPackage {
        identity: member.identity,
        signature_key: member.signature_key,
        certificate: member.certificate,
        sha256: sha2::Sha256::digest(bytes).into(),
        key_package,
    })
}

/// Creates a new group with this device as its only member.
pub fn create_group<P: OpenMlsProvider>(
    provider: &P,
    signer: &DeviceSigner,
    group_id: GroupId,
) -> Result<MlsGroup, CryptoError> {
    let config = MlsGroupCreateConfig::builder()
        .ciphersuite(CIPHERSUITE)
        .use_ratchet_tree_extension(true)
        .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
        .sender_ratchet_configuration(sender_ratchet())
        .build();
    MlsGroup::new_with_group_id(
        provider,
        &signer.keys,
        &config,
        openmls::group::GroupId::from_slice(group_id.as_bytes()),
        signer.credential_with_key(),
    )
    .map_err(mls_err)
}

/// Loads a group's state from the provider's storage.
pub fn load_group<P: OpenMlsProvider>(
    provider: &P,
    group_id: GroupId,
) -> Result<Option<MlsGroup>, CryptoError> {
    MlsGroup::load(
        provider.storage(),
        &openmls::group::GroupId::from_slice(group_id.as_bytes()),
    )
    .map_err(|e| CryptoError::Storage(format!("{e:?}")))
}

/// Joins group `group_id` from a Welcome addressed to one of this device's key packages, if
/// `auth` accepts every leaf of its tree. A Welcome for any other group is refused (the server
/// labels welcomes; it must not be able to redirect one). State left from an earlier
/// membership of the same group (the device was removed and is added again) is deleted first:
/// callers only join groups they are not an active member of, and undo a refused join's
/// storage changes (the caller's transaction).
pub fn join_group<P: OpenMlsProvider>(
    provider: &P,
    group_id: GroupId,
    welcome: &[u8],
    auth: &mut dyn Authenticate,
) -> Result<MlsGroup, CryptoError> {
    let message = MlsMessageIn::tls_deserialize_exact(welcome)
        .map_err(|e| CryptoError::MalformedMls(e.to_string()))?;
    let MlsMessageBodyIn::Welcome(welcome) = message.extract() else {
        return Err(CryptoError::MalformedMls("not a welcome".into()));
    };
    let config = MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
        .sender_ratchet_configuration(sender_ratchet())
        .build();
    if let Some(mut old) = load_group(provider, group_id)? {
        old.delete(provider.storage())
            .map_err(|e| CryptoError::Storage(format!("{e:?}")))?;
    }
    let staged =
        StagedWelcome::new_from_welcome(provider, &config, welcome, None).map_err(mls_err)?;
    if staged.group_context().group_id().as_slice() != group_id.as_bytes() {
        return Err(CryptoError::Mls(
            "the welcome is for a different group".into(),
        ));
    }
    leaf::check_welcome(&staged, auth)?;
    staged.into_group(provider).map_err(mls_err)
}

/// Devices that a pending Remove proposal (a member leaving) takes out of the group at the next
/// commit.
pub fn pending_removals(group: &MlsGroup) -> Vec<DeviceId> {
    group
        .pending_proposals()
        .filter_map(|p| match p.proposal() {
            Proposal::Remove(remove) => member_at(group, remove.removed()).ok(),
            _ => None,
        })
        .map(|m| m.identity.device)
        .collect()
}

/// The group's current members.
pub fn members(group: &MlsGroup) -> Vec<GroupMember> {
    group
        .members()
        .filter_map(|m| to_group_member(&m).ok())
        .collect()
}

fn to_group_member(member: &Member) -> Result<GroupMember, CryptoError> {
    GroupMember::from_leaf(&member.credential, &member.signature_key)
}

fn member_at(group: &MlsGroup, index: LeafNodeIndex) -> Result<GroupMember, CryptoError> {
    let member = group
        .member_at(index)
        .ok_or_else(|| CryptoError::Mls("no member at sender leaf".into()))?;
    to_group_member(&member)
}

fn serialize(message: &MlsMessageOut) -> Result<Vec<u8>, CryptoError> {
    message.to_bytes().map_err(mls_err)
}

/// Encrypts an application message for the group's current epoch.
pub fn encrypt<P: OpenMlsProvider>(
    group: &mut MlsGroup,
    provider: &P,
    signer: &DeviceSigner,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let message = group
        .create_message(provider, &signer.keys, plaintext)
        .map_err(mls_err)?;
    serialize(&message)
}

/// Processes one message from the group's log: decrypts application messages, queues proposals
/// (a member leaving, the only kind Chapar makes) and merges commits (so the group moves to
/// the next epoch) if `auth` accepts every leaf the commit brings in. A refused commit is not
/// merged; the caller undoes the storage changes processing made (its transaction).
pub fn process<P: OpenMlsProvider>(
    group: &mut MlsGroup,
    provider: &P,
    bytes: &[u8],
    auth: &mut dyn Authenticate,
) -> Result<Incoming, CryptoError> {
    let message = MlsMessageIn::tls_deserialize_exact(bytes)
        .map_err(|e| CryptoError::MalformedMls(e.to_string()))?
        .try_into_protocol_message()
        .map_err(mls_err)?;
    let processed = group.process_message(provider, message).map_err(mls_err)?;
    let (sender, sender_index) = match processed.sender() {
        Sender::Member(index) => (member_at(group, *index)?, *index),
        _ => return Err(CryptoError::Mls("message from a non-member".into())),
    };
    match processed.into_content() {
        ProcessedMessageContent::ApplicationMessage(app) => Ok(Incoming::Application {
            sender,
            plaintext: app.into_bytes(),
        }),
        ProcessedMessageContent::ProposalMessage(proposal) => {
            leaf::check_standalone_proposal(&proposal, sender_index)?;
            group
                .store_pending_proposal(provider.storage(), *proposal)
                .map_err(|e| CryptoError::Storage(format!("{e:?}")))?;
            Ok(Incoming::Proposal { sender })
        }
        ProcessedMessageContent::OwnPendingCommit | ProcessedMessageContent::OwnPrivateMessage => {
            Ok(Incoming::Own)
        }
        ProcessedMessageContent::ExternalJoinProposalMessage(_) => {
            Err(CryptoError::Mls("external joins are not used".into()))
        }
        ProcessedMessageContent::StagedCommitMessage(staged) => {
            leaf::check_commit(&staged, &sender, &members(group), auth)?;
            let added = staged
                .add_proposals()
                .filter_map(|p| {
                    let leaf = p.add_proposal().key_package().leaf_node();
                    GroupMember::from_leaf(leaf.credential(), leaf.signature_key().as_slice()).ok()
                })
                .map(|m| m.identity)
                .collect();
            let removed = staged
                .remove_proposals()
                .filter_map(|p| member_at(group, p.remove_proposal().removed()).ok())
                .map(|m| m.identity)
                .collect();
            let removed_self = staged.self_removed();
            group
                .merge_staged_commit(provider, *staged)
                .map_err(mls_err)?;
            Ok(Incoming::Commit {
                sender,
                added,
                removed,
                removed_self,
            })
        }
    }
}

/// The group's current epoch.
pub fn epoch(group: &MlsGroup) -> u64 {
    group.epoch().as_u64()
}

#[cfg(test)]
mod tests;
