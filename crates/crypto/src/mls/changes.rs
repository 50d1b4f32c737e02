//! Changes to a group's members and keys that this device commits or proposes, and the
//! pending commit's fate (merged once the server accepted it, discarded once it refused it).

use chapar_types::DeviceId;
use openmls::prelude::*;

use super::{
    DeviceSigner, MlsGroup, OutgoingCommit, VerifiedKeyPackage, member_at, mls_err, serialize,
    to_group_member,
};
use crate::CryptoError;

/// Adds devices. The commit stays pending until [`merge_pending_commit`] (after the server
/// accepted it) or [`discard_pending_commit`] (after it refused it).
pub fn add_members<P: OpenMlsProvider>(
    group: &mut MlsGroup,
    provider: &P,
    signer: &DeviceSigner,
    key_packages: Vec<VerifiedKeyPackage>,
) -> Result<OutgoingCommit, CryptoError> {
    let added = key_packages.iter().map(|k| k.identity.device).collect();
    let added_key_packages = key_packages.iter().map(|k| k.sha256).collect();
    let packages: Vec<KeyPackage> = key_packages.into_iter().map(|k| k.key_package).collect();
    let (commit, welcome, _) = group
        .add_members(provider, &signer.keys, &packages)
        .map_err(mls_err)?;
    Ok(OutgoingCommit {
        commit: serialize(&commit)?,
        welcome: Some(serialize(&welcome)?),
        added,
        added_key_packages,
        removed: Vec::new(),
    })
}

/// Removes every leaf that belongs to one of `devices`.
pub fn remove_devices<P: OpenMlsProvider>(
    group: &mut MlsGroup,
    provider: &P,
    signer: &DeviceSigner,
    devices: &[DeviceId],
) -> Result<OutgoingCommit, CryptoError> {
    let mut leaves = Vec::new();
    let mut removed = Vec::new();
    for member in group.members() {
        if let Ok(m) = to_group_member(&member)
            && devices.contains(&m.identity.device)
        {
            leaves.push(member.index);
            removed.push(m.identity.device);
        }
    }
    if leaves.is_empty() {
        return Err(CryptoError::Mls(
            "none of those devices is in the group".into(),
        ));
    }
    let (commit, welcome, _) = group
        .remove_members(provider, &signer.keys, &leaves)
        .map_err(mls_err)?;
    Ok(OutgoingCommit {
        commit: serialize(&commit)?,
        welcome: welcome.as_ref().map(serialize).transpose()?,
        added: Vec::new(),
        added_key_packages: Vec::new(),
        removed,
    })
}

/// Adds and removes devices in one commit: how a group is brought in line with its accounts'
/// device lists after a device is linked, revoked or recovered.
pub fn change_devices<P: OpenMlsProvider>(
    group: &mut MlsGroup,
    provider: &P,
    signer: &DeviceSigner,
    add: Vec<VerifiedKeyPackage>,
    remove: &[DeviceId],
) -> Result<OutgoingCommit, CryptoError> {
    let mut leaves = Vec::new();
    let mut removed = Vec::new();
    for member in group.members() {
        if let Ok(m) = to_group_member(&member)
            && remove.contains(&m.identity.device)
        {
            leaves.push(member.index);
            removed.push(m.identity.device);
        }
    }
    if leaves.is_empty() && add.is_empty() {
        return Err(CryptoError::Mls("nothing to change".into()));
    }
    let added = add.iter().map(|k| k.identity.device).collect();
    let added_key_packages = add.iter().map(|k| k.sha256).collect();
    let packages: Vec<KeyPackage> = add.into_iter().map(|k| k.key_package).collect();
    let bundle = group
        .commit_builder()
        .propose_removals(leaves)
        .propose_adds(packages)
        .load_psks(provider.storage())
        .map_err(mls_err)?
        .build(provider.rand(), provider.crypto(), &signer.keys, |_| true)
        .map_err(mls_err)?
        .stage_commit(provider)
        .map_err(mls_err)?;
    let (commit, welcome, _) = bundle.into_messages();
    Ok(OutgoingCommit {
        commit: serialize(&commit)?,
        welcome: welcome.as_ref().map(serialize).transpose()?,
        added,
        added_key_packages,
        removed,
    })
}

/// Commits the proposals other members made (such as a member leaving), if there are any.
pub fn commit_pending_proposals<P: OpenMlsProvider>(
    group: &mut MlsGroup,
    provider: &P,
    signer: &DeviceSigner,
) -> Result<Option<OutgoingCommit>, CryptoError> {
    if group.pending_proposals().next().is_none() {
        return Ok(None);
    }
    let mut removed = Vec::new();
    for proposal in group.pending_proposals() {
        if let Proposal::Remove(remove) = proposal.proposal()
            && let Ok(m) = member_at(group, remove.removed())
        {
            removed.push(m.identity.device);
        }
    }
    let (commit, welcome, _) = group
        .commit_to_pending_proposals(provider, &signer.keys)
        .map_err(mls_err)?;
    Ok(Some(OutgoingCommit {
        commit: serialize(&commit)?,
        welcome: welcome.as_ref().map(serialize).transpose()?,
        added: Vec::new(),
        added_key_packages: Vec::new(),
        removed,
    }))
}

/// Refreshes this device's leaf keys with a commit carrying an update path (post-compromise
/// security: keys a thief copied stop working after the next epoch).
pub fn update_own_keys<P: OpenMlsProvider>(
    group: &mut MlsGroup,
    provider: &P,
    signer: &DeviceSigner,
) -> Result<OutgoingCommit, CryptoError> {
    let bundle = group
        .self_update(provider, &signer.keys, LeafNodeParameters::default())
        .map_err(mls_err)?;
    Ok(OutgoingCommit {
        commit: serialize(bundle.commit())?,
        welcome: None,
        added: Vec::new(),
        added_key_packages: Vec::new(),
        removed: Vec::new(),
    })
}

/// Makes the proposal by which this device leaves the group.
pub fn leave_group<P: OpenMlsProvider>(
    group: &mut MlsGroup,
    provider: &P,
    signer: &DeviceSigner,
) -> Result<Vec<u8>, CryptoError> {
    let proposal = group.leave_group(provider, &signer.keys).map_err(mls_err)?;
    serialize(&proposal)
}

/// Applies this device's own commit once the server has accepted it.
pub fn merge_pending_commit<P: OpenMlsProvider>(
    group: &mut MlsGroup,
    provider: &P,
) -> Result<(), CryptoError> {
    group.merge_pending_commit(provider).map_err(mls_err)
}

/// Drops this device's own commit after the server refused it.
pub fn discard_pending_commit<P: OpenMlsProvider>(
    group: &mut MlsGroup,
    provider: &P,
) -> Result<(), CryptoError> {
    group
        .clear_pending_commit(provider.storage())
        .map_err(|e| CryptoError::Storage(format!("{e:?}")))
}

/// Forgets the proposals waiting for a commit (this device's own leave, when the server may
/// not have it: proposals cannot wait beside new messages).
pub fn clear_pending_proposals<P: OpenMlsProvider>(
    group: &mut MlsGroup,
    provider: &P,
) -> Result<(), CryptoError> {
    group
        .clear_pending_proposals(provider.storage())
        .map_err(|e| CryptoError::Storage(format!("{e:?}")))
}

/// True while this device has a commit the server has not yet accepted or refused.
pub fn has_pending_commit(group: &MlsGroup) -> bool {
    group.pending_commit().is_some()
}
