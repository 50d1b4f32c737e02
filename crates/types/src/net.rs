//! Addresses as limits count them: shared by the server and the relay, so a subscriber gets the
//! same one budget from both.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The key for an address's limits: an IPv4 address, or an IPv6 address's /64 (one subscriber
/// usually has a whole /64, so counting each /128 would give them 2^64 budgets). A transport
/// that knows no address gets one shared key: it never bypasses a limit.
pub fn address_key(peer: Option<IpAddr>) -> IpAddr {
    match peer {
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Some(IpAddr::V4(v4)) => IpAddr::V4(v4),
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}
