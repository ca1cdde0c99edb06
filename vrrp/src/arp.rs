//! Pure builder of the gratuitous ARP frame a new master broadcasts for each
//! IPv4 virtual address (RFC 9568 §6.4.1: "broadcast a gratuitous ARP
//! request ... for each IPv4 address associated with the virtual router").
//!
//! The frame matches what keepalived sends (see shared/vrrp-keepalived-wire.md):
//! an ARP *request*, Ethernet destination broadcast, sender IP = target IP =
//! the VIP, target hardware address ff:ff:ff:ff:ff:ff, sender hardware
//! address = the interface's own MAC (we do not use the virtual MAC, so the
//! switches learn the real port of the new master). The driver
//! (`crate::driver`) puts the bytes on the wire with pnet datalink.
//!
//! ```text
//!  Ethernet: | dst ff:ff:ff:ff:ff:ff | src MAC | ethertype 0x0806 |
//!  ARP:      | htype 1 | ptype 0x0800 | hlen 6 | plen 4 | oper 1 (request) |
//!            | sha = MAC | spa = VIP | tha = ff:ff:ff:ff:ff:ff | tpa = VIP |
//! ```

use std::net::Ipv4Addr;

/// Ethernet broadcast address.
pub const BROADCAST: [u8; 6] = [0xff; 6];
/// Length of the frame built here (no padding: the NIC pads to 60 bytes).
pub const GARP_FRAME_LEN: usize = 42;

/// Build the gratuitous ARP request frame announcing `vip` at `mac`.
pub fn gratuitous_arp(mac: [u8; 6], vip: Ipv4Addr) -> [u8; GARP_FRAME_LEN] {
    let mut f = [0u8; GARP_FRAME_LEN];
    f[0..6].copy_from_slice(&BROADCAST);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&1u16.to_be_bytes()); // request
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&vip.octets());
    f[32..38].copy_from_slice(&BROADCAST);
    f[38..42].copy_from_slice(&vip.octets());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_garp_frame_matches_keepalived() {
        let want = crate::test_util::hex(
            "ffffffffffff 0200c612000b 0806 | 0001 0800 06 04 0001 0200c612000b c6120064 ffffffffffff c6120064",
        );
        let got = gratuitous_arp(
            [0x02, 0x00, 0xc6, 0x12, 0x00, 0x0b],
            Ipv4Addr::new(198, 18, 0, 100),
        );
        assert_eq!(got.to_vec(), want);
    }
}
