//! One connection's rules, whatever transport carries it: its login challenge, what it has
//! established (hello, login), what an anonymous connection may do (a bounded number of link
//! requests), and what joins or leaves the push fan-out when it logs in and closes. The api
//! layer decodes frames and calls these; a second transport copies none of them.

use std::net::IpAddr;
use std::sync::Arc;

use chapar_store::{AccountRecord, DeviceRecord, Store};
use chapar_types::ErrorCode;
use chapar_types::signed::CHALLENGE_BYTES;
use rand::RngCore;

use super::{Authenticated, Service};
use crate::error::ServiceError;
use crate::hub::PushTarget;

/// Most link requests one connection may file: a new device files one, and anonymous
/// connections must not be able to fill the server's pending links alone.
pub const LINKS_PER_CONNECTION_MAX: usize = 4;

/// What one connection has established so far.
pub struct Session {
    challenge: [u8; CHALLENGE_BYTES],
    hello: bool,
    who: Option<Arc<Authenticated>>,
    links_created: usize,
    /// The connection's id in the hub.
    pub connection_id: u64,
    /// The address the connection came from, if the transport knows it.
    pub peer: Option<IpAddr>,
}

impl Session {
    /// A fresh connection from `peer`, with its own random challenge.
    pub fn new<S>(service: &Service<S>, peer: Option<IpAddr>) -> Self {
        let mut challenge = [0; CHALLENGE_BYTES];
        rand::thread_rng().fill_bytes(&mut challenge);
        Self {
            challenge,
            hello: false,
            who: None,
            links_created: 0,
            connection_id: service.hub.next_connection_id(),
            peer,
        }
    }

    /// The challenge a device signs to log in on this connection.
    pub fn challenge(&self) -> &[u8] {
        &self.challenge
    }

    /// The version handshake is done.
    pub fn said_hello(&mut self) {
        self.hello = true;
    }

    /// The logged-in device, if any.
    pub fn who(&self) -> Option<&Arc<Authenticated>> {
        self.who.as_ref()
    }

    /// Anything but `Hello` needs it first.
    pub fn require_hello(&self) -> Result<(), ServiceError> {
        if self.hello {
            Ok(())
        } else {
            Err(ServiceError::bad_request("send Hello first"))
        }
    }

    /// The device requests after login act as.
    pub fn require_login(&self) -> Result<Arc<Authenticated>, ServiceError> {
        self.require_hello()?;
        self.who.clone().ok_or_else(|| {
            ServiceError::new(
                ErrorCode::Unauthenticated,
                "log in (Register or Authenticate) first",
            )
        })
    }

    /// Logging in again on a logged-in connection is refused.
    pub fn require_anonymous(&self) -> Result<(), ServiceError> {
        match self.who {
            Some(_) => Err(ServiceError::bad_request(
                "this connection is already logged in",
            )),
            None => Ok(()),
        }
    }

    /// Records that the connection is logged in as `who`.
    pub fn logged_in(&mut self, who: Authenticated) -> Arc<Authenticated> {
        let who = Arc::new(who);
        self.who = Some(who.clone());
        who
    }
}

/// An account as other users see it: the devices to add to groups, and those not to touch.
pub struct PeerAccount {
    /// The account record (username, account key).
    pub account: AccountRecord,
    /// Active devices that have logged in (and so have key packages).
    pub devices: Vec<DeviceRecord>,
    /// Devices added that never logged in: neither added to groups yet nor removed.
    pub pending: Vec<DeviceRecord>,
}

impl<S: Store> Service<S> {
    /// Files a link request from this connection, at most [`LINKS_PER_CONNECTION_MAX`] of them.
    pub async fn create_link_on(
        &self,
        session: &mut Session,
        link_id: Vec<u8>,
        sealed: Vec<u8>,
    ) -> Result<(), ServiceError> {
        if session.links_created >= LINKS_PER_CONNECTION_MAX {
            return Err(ServiceError::new(
                ErrorCode::TooLarge,
                format!("at most {LINKS_PER_CONNECTION_MAX} link requests per connection"),
            ));
        }
        if !self
            .rates
            .links
            .allow(&super::rate::address_key(session.peer))
        {
            self.metrics.hit(crate::metrics::LimitHit::LinkRate);
            return Err(ServiceError::new(
                ErrorCode::RateLimited,
                format!(
                    "at most {} link requests an hour from one address; try later",
                    self.limits.links_per_address_per_hour
                ),
            ));
        }
        self.create_link(link_id, sealed).await?;
        session.links_created += 1;
        Ok(())
    }

    /// Joins a logged-in connection to the fan-out. A revocation between the login check and
    /// now found nothing to close: it is checked again once the connection can be found.
    pub async fn attach(&self, who: &Authenticated, target: PushTarget) {
        let kick = target.kick.clone();
        let closed = self
            .hub
            .attach(who.device, target, self.limits.connections_per_device_max);
        for _ in 0..closed {
            self.metrics
                .hit(crate::metrics::LimitHit::ConnectionsPerDevice);
        }
        if self.require_active(who).await.is_err() {
            kick.notify_one();
        }
    }

    /// Takes a closed connection out of the fan-out.
    pub fn detach(&self, session: &Session) {
        if let Some(who) = &session.who {
            self.hub.detach(who.device, session.connection_id);
        }
    }

    /// `username`'s account as other users see it.
    pub async fn peer_account(&self, username: &str) -> Result<PeerAccount, ServiceError> {
        let account = self.account(username).await?;
        let (devices, pending) = account
            .devices
            .iter()
            .filter(|d| d.revoked_ms.is_none())
            .cloned()
            // A linked device that never came online has no key packages: nobody should try
            // to add it yet.
            .partition(|d| d.last_seen_ms.is_some());
        Ok(PeerAccount {
            account,
            devices,
            pending,
        })
    }
}
