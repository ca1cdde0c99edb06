//! Gratuitous ARP on a new master, through pnet datalink (an `AF_PACKET`
//! socket on the interface). Blocking: the instance task runs it with
//! `spawn_blocking`. The frame comes from the pure `crate::arp` builder.
//!
//! RFC 9568 §6.4.1/§6.4.2: a new master broadcasts a gratuitous ARP for
//! each IPv4 VIP so hosts and switches update their caches at once.
//! keepalived sends 5 at once and 5 more 5 s later; both are configurable
//! in [`super::GarpConfig`].

use std::io;
use std::net::Ipv4Addr;

use pnet::datalink::{self, Channel};

use crate::arp::gratuitous_arp;

/// Send `count` rounds of one gratuitous ARP per VIP on `iface` (looked up
/// once at spawn: enumerating interfaces on the takeover path costs time
/// the clients are waiting); returns the number of frames sent.
///
/// The `AF_PACKET` socket is opened per burst and closed right after:
/// kept open, it would receive a copy of every frame on a busy interface.
pub(super) fn send_burst(
    iface: &datalink::NetworkInterface,
    mac: [u8; 6],
    vips: &[Ipv4Addr],
    count: u32,
) -> io::Result<u64> {
    let mut tx = match datalink::channel(iface, datalink::Config::default())? {
        Channel::Ethernet(tx, _rx) => tx,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "not an Ethernet channel",
            ))
        }
    };
    let mut sent = 0;
    for _ in 0..count {
        for vip in vips {
            let frame = gratuitous_arp(mac, *vip);
            match tx.send_to(&frame, None) {
                Some(Ok(())) => sent += 1,
                Some(Err(e)) => return Err(e),
                None => return Err(io::Error::other("datalink send returned nothing")),
            }
        }
    }
    Ok(sent)
}
