//! The attacker's kit: a test-only client that talks the real protocol to the real server
//! over a real WebSocket and crafts its own MLS messages, with whatever leaf credentials it
//! likes. It is an ordinary registered account (Mallory) unless a test hands it a key it
//! stole.
#![allow(dead_code)] // each attack uses part of the kit

use chapar_client::connection::Connection;
use chapar_crypto::identity::{self, SecretKey};
use chapar_crypto::mls::{self, DeviceIdentity, DeviceSigner, MlsGroup, VerifiedKeyPackage};
use chapar_types::{DeviceId, GroupId, Username};
use chapar_wire::content::{self, AppMessage, app_message::Body};
use chapar_wire::v1::{self, client_frame::Request, response::Result as Reply};
use openmls_rust_crypto::OpenMlsRustCrypto;
use prost::Message as _;
use rand::RngCore as _;

/// A registered account whose one device signs its MLS leaves with `signer`, a credential of
/// the attacker's choosing.
pub struct Attacker {
    pub conn: Connection,
    pub device: DeviceId,
    provider: OpenMlsRustCrypto,
    signer: DeviceSigner,
}

impl Attacker {
    /// Registers `username` (its own account key, its own device) on `url`, with real key
    /// packages; its MLS leaves claim to be device `claims.1` of `claims.0` (itself if
    /// `None`), certified by `certifier` (the attacker's own account key, unless it stole one).
    pub async fn register(
        url: &str,
        username: &str,
        claims: Option<(&str, u64)>,
        certifier: Option<&SecretKey>,
    ) -> Self {
        let mut rng = rand::thread_rng();
        let account = SecretKey::generate(&mut rng);
        let device_key = SecretKey::generate(&mut rng);
        let device = DeviceId(rng.next_u64());
        let name = Username::parse(username).unwrap();
        let (claimed_name, claimed_device) = claims.unwrap_or((username, device.0));
        let leaf = DeviceIdentity {
            username: Username::parse(claimed_name).unwrap(),
            device: DeviceId(claimed_device),
        };
        let signer = DeviceSigner::certified(leaf, &device_key, certifier.unwrap_or(&account));
        let provider = OpenMlsRustCrypto::default();
        let one_time = mls::new_key_package(&provider, &signer, false).unwrap();
        let last_resort = mls::new_key_package(&provider, &signer, true).unwrap();
        let conn = Connection::open(url).await.unwrap();
        let reply = conn
            .request(Request::Register(v1::Register {
                username: username.into(),
                account_key: account.public().to_vec(),
                device: Some(v1::DeviceCert {
                    device_id: device.0,
                    device_key: device_key.public().to_vec(),
                    account_signature: identity::certify_device(
                        &account,
                        &name,
                        device,
                        &device_key.public(),
                    ),
                }),
                challenge_signature: identity::answer_challenge(
                    &device_key,
                    conn.challenge(),
                    device,
                    conn.server_id(),
                ),
                key_packages: vec![one_time],
                last_resort_key_package: last_resort,
                sealed_name: Vec::new(),
                proof_of_work: conn.prove_registration(username),
                invite_code: String::new(),
            }))
            .await
            .unwrap();
        assert!(matches!(reply, Reply::AuthOk(_)), "register: {reply:?}");
        Self {
            conn,
            device,
            provider,
            signer,
        }
    }

    /// Joins the first group this device was welcomed into (an attacker checks nothing).
    pub async fn join_first_welcome(&self) -> (GroupId, MlsGroup) {
        let Reply::WelcomePage(page) = self
            .conn
            .request(Request::FetchWelcomes(v1::FetchWelcomes {
                after_id: 0,
                limit: 10,
            }))
            .await
            .unwrap()
        else {
            panic!("expected welcomes");
        };
        let welcome = page.welcomes.first().expect("a welcome");
        let group = GroupId::from_slice(&welcome.group_id).unwrap();
        let state =
            mls::join_group(&self.provider, group, &welcome.welcome, &mut |_: &_| Ok(())).unwrap();
        (group, state)
    }

    /// The head of `group` as the server lists it for this device.
    async fn head(&self, group: GroupId) -> v1::GroupHead {
        let Reply::GroupList(list) = self
            .conn
            .request(Request::ListGroups(v1::ListGroups::default()))
            .await
            .unwrap()
        else {
            panic!("expected the group list");
        };
        list.groups
            .into_iter()
            .find(|g| g.group_id == group.as_bytes())
            .expect("a member of the group")
    }

    /// Adds `victims` to `group` in a commit at the log's head, and merges it.
    pub async fn add(
        &self,
        group: GroupId,
        state: &mut MlsGroup,
        victims: Vec<(DeviceId, VerifiedKeyPackage)>,
    ) {
        let head = self.head(group).await;
        let devices: Vec<u64> = victims.iter().map(|(d, _)| d.0).collect();
        let claimed: Vec<Vec<u8>> = victims.iter().map(|(_, kp)| kp.sha256.to_vec()).collect();
        let packages = victims.into_iter().map(|(_, kp)| kp).collect();
        let out = mls::add_members(state, &self.provider, &self.signer, packages).unwrap();
        let reply = self
            .conn
            .request(Request::SubmitCommit(v1::SubmitCommit {
                group_id: group.as_bytes().to_vec(),
                epoch: mls::epoch(state),
                seen_seq: head.head_seq,
                commit: out.commit,
                welcome: out.welcome.unwrap_or_default(),
                added_devices: devices,
                removed_devices: Vec::new(),
                added_key_packages: claimed,
            }))
            .await
            .unwrap();
        assert!(matches!(reply, Reply::Appended(_)), "commit: {reply:?}");
        mls::merge_pending_commit(state, &self.provider).unwrap();
    }

    /// Claims a key package of every device of `user`, as anyone may.
    pub async fn claim(&self, user: &str) -> Vec<(DeviceId, VerifiedKeyPackage)> {
        let Reply::KeyPackages(reply) = self
            .conn
            .request(Request::ClaimKeyPackages(v1::ClaimKeyPackages {
                username: user.into(),
                devices: Vec::new(),
            }))
            .await
            .unwrap()
        else {
            panic!("expected key packages");
        };
        reply
            .devices
            .iter()
            .map(|d| {
                let id = DeviceId(d.device.as_ref().unwrap().device_id);
                (
                    id,
                    mls::verify_key_package(&self.provider, &d.key_package).unwrap(),
                )
            })
            .collect()
    }

    /// Creates a group on the server whose only member is this device (with its crafted
    /// leaf), then adds `victims` in one commit with a welcome. Returns the group and its
    /// state.
    pub async fn group_with(
        &self,
        victims: Vec<(DeviceId, VerifiedKeyPackage)>,
    ) -> (GroupId, MlsGroup) {
        let mut bytes = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut bytes);
        let group = GroupId(bytes);
        self.conn
            .request(Request::CreateGroup(v1::CreateGroup {
                group_id: group.as_bytes().to_vec(),
            }))
            .await
            .unwrap();
        let mut state = mls::create_group(&self.provider, &self.signer, group).unwrap();
        self.add(group, &mut state, victims).await;
        (group, state)
    }

    /// Sends `body` into `group` as this device's crafted leaf.
    pub async fn send(&self, group: GroupId, state: &mut MlsGroup, body: Body) {
        let mut id = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut id);
        let message = AppMessage {
            message_id: id.to_vec(),
            sent_at_ms: 1,
            body: Some(body),
        };
        let ciphertext = mls::encrypt(
            state,
            &self.provider,
            &self.signer,
            &message.encode_to_vec(),
        )
        .unwrap();
        let roster_version = self.head(group).await.roster_version;
        let reply = self
            .conn
            .request(Request::SendMessage(v1::SendMessage {
                group_id: group.as_bytes().to_vec(),
                epoch: mls::epoch(state),
                message_id: id.to_vec(),
                ciphertext,
                roster_version,
                ..Default::default()
            }))
            .await
            .unwrap();
        assert!(matches!(reply, Reply::Appended(_)), "send: {reply:?}");
    }
}

/// A text message body.
pub fn text(text: &str) -> Body {
    Body::Text(content::Text {
        text: text.into(),
        reply_to: Vec::new(),
    })
}

/// An account key and one device of it made up by a server: the device's certificate and a
/// real MLS key package, so that a client believing the key would add the device.
pub struct Forged {
    pub account_key: Vec<u8>,
    pub device: v1::DeviceCert,
    pub key_package: Vec<u8>,
}

impl Forged {
    /// A forged device `id` of `username`.
    pub fn device_of(username: &str, id: u64) -> Self {
        let mut rng = rand::thread_rng();
        let (account, device_key) = (SecretKey::generate(&mut rng), SecretKey::generate(&mut rng));
        let name = Username::parse(username).unwrap();
        let signer = DeviceSigner::certified(
            DeviceIdentity {
                username: name.clone(),
                device: DeviceId(id),
            },
            &device_key,
            &account,
        );
        let key_package =
            mls::new_key_package(&OpenMlsRustCrypto::default(), &signer, false).unwrap();
        Self {
            account_key: account.public().to_vec(),
            device: v1::DeviceCert {
                device_id: id,
                device_key: device_key.public().to_vec(),
                account_signature: identity::certify_device(
                    &account,
                    &name,
                    DeviceId(id),
                    &device_key.public(),
                ),
            },
            key_package,
        }
    }

    /// Rewrites an answer about the account: the forged key, and the forged device beside
    /// (or instead of) the real ones.
    pub fn lie_about(&self, reply: &mut Reply) {
        match reply {
            Reply::Account(account) => {
                account.account_key.clone_from(&self.account_key);
                account.devices.push(self.device.clone());
            }
            Reply::KeyPackages(packages) => {
                packages.account_key.clone_from(&self.account_key);
                packages.devices.push(v1::DeviceKeyPackage {
                    device: Some(self.device.clone()),
                    key_package: self.key_package.clone(),
                });
            }
            _ => {}
        }
    }
}
