//! The requests the seeds are made of: every request a logged-in device makes, and the
//! handshake requests an anonymous connection makes, each written out by hand.

use chapar_wire::v1::{self, client_frame::Request};

use crate::server::{alice, frame};

const GROUP: [u8; 16] = [0x11; 16];

/// Requests a logged-in device makes, by hand.
pub(super) fn requests() -> Vec<Request> {
    vec![
        Request::CreateGroup(v1::CreateGroup {
            group_id: GROUP.to_vec(),
        }),
        Request::SubmitCommit(v1::SubmitCommit {
            group_id: GROUP.to_vec(),
            epoch: 0,
            seen_seq: 0,
            commit: vec![1; 40],
            welcome: vec![2; 40],
            added_devices: vec![2],
            removed_devices: vec![],
            added_key_packages: vec![vec![4; 32]],
        }),
        Request::SendMessage(v1::SendMessage {
            group_id: GROUP.to_vec(),
            epoch: 1,
            message_id: vec![3; 16],
            ciphertext: vec![4; 60],
            roster_version: 1,
            ..Default::default()
        }),
        Request::SubmitProposal(v1::SubmitProposal {
            group_id: GROUP.to_vec(),
            epoch: 1,
            proposal: vec![5; 30],
            self_remove: false,
        }),
        Request::FetchLog(v1::FetchLog {
            group_id: GROUP.to_vec(),
            after_seq: 0,
            limit: 10,
        }),
        Request::FetchWelcomes(v1::FetchWelcomes {
            after_id: 0,
            limit: 10,
        }),
        Request::ListGroups(v1::ListGroups::default()),
        Request::GetAccount(v1::GetAccount {
            username: "bob".into(),
        }),
        Request::ClaimKeyPackages(v1::ClaimKeyPackages {
            username: "bob".into(),
            devices: vec![],
        }),
        Request::UploadKeyPackages(v1::UploadKeyPackages {
            key_packages: vec![vec![6; 50]],
            last_resort_key_package: vec![],
        }),
        Request::Ping(v1::Ping {}),
        Request::ListDevices(v1::ListDevices {}),
        Request::FileToken(v1::FileToken {}),
        Request::AppendArchive(v1::AppendArchive {
            group_id: GROUP.to_vec(),
            from_seq: 1,
            through_seq: 2,
            key_generation: 1,
            ciphertext: vec![7; 40],
        }),
        Request::FetchArchive(v1::FetchArchive {
            after_id: 0,
            limit: 5,
        }),
        Request::SetRecovery(v1::SetRecovery {
            auth_key: vec![8; 32],
            sealed_bundle: vec![9; 64],
            expected_auth_key: vec![],
        }),
        Request::FetchLink(v1::FetchLink {
            link_id: vec![10; 16],
        }),
        Request::ApproveLink(v1::ApproveLink {
            link_id: vec![10; 16],
            sealed_approval: vec![11; 40],
        }),
        Request::CompleteLink(v1::CompleteLink {
            link_id: vec![10; 16],
        }),
        Request::RevokeDevice(v1::RevokeDevice {
            device_id: 2,
            account_signature: vec![5; 64],
        }),
    ]
}

/// Handshake requests an anonymous connection makes, by hand.
pub(super) fn handshake_requests() -> Vec<Vec<u8>> {
    let challenge = crate::server::Challenge {
        nonce: vec![0; 32],
        server_id: vec![1; 32],
    };
    vec![
        alice().register_frame(7, &challenge),
        alice().authenticate_frame(8, &challenge),
        frame(
            9,
            Request::CreateLink(v1::CreateLink {
                link_id: vec![10; 16],
                sealed_request: vec![12; 40],
            }),
        ),
        frame(
            10,
            Request::FetchLinkApproval(v1::FetchLinkApproval {
                link_id: vec![10; 16],
            }),
        ),
        frame(
            11,
            Request::FetchRecovery(v1::FetchRecovery {
                username: "alice".into(),
                signature: vec![13; 64],
            }),
        ),
        frame(
            12,
            Request::RecoverDevice(v1::RecoverDevice {
                username: "alice".into(),
                recovery_signature: vec![14; 64],
                device: Some(v1::DeviceCert {
                    device_id: 3,
                    device_key: vec![15; 32],
                    account_signature: vec![16; 64],
                }),
                challenge_signature: vec![17; 64],
                key_packages: vec![vec![18; 40]],
                last_resort_key_package: vec![19; 40],
                sealed_name: vec![],
                revoke_others: false,
            }),
        ),
    ]
}
