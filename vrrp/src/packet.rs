//! Pure VRRPv3 codec for IPv4 (RFC 5798 §5, as updated by RFC 9568 §5).
//!
//! This module turns bytes into [`Advertisement`]s and back, with every
//! validation RFC 9568 §7.1 asks of a receiver that can be done on the packet
//! alone (IP TTL 255, protocol 112, version 3, type 1, length against the
//! address count, checksum). Checks that need configuration (the VRID, the
//! address list) live in [`Advertisement::check_against`]. Nothing here does
//! I/O or reads a clock; the driver (`crate::driver`) owns the sockets, the
//! state machine (`crate::state`) owns the protocol logic.
//!
//! Checksum: RFC 5798 §5.2.8 computes the checksum over the VRRP message plus
//! the IPv4 pseudo-header, and keepalived and FRR send that form by default.
//! RFC 9568 §5.2.8 says the IPv4 checksum covers the VRRP message only. Both
//! are supported through [`ChecksumMode`]; we send the pseudo-header form by
//! default (it interoperates with keepalived) and accept both on receive.
//!
//! IPv6 is not implemented yet, but addresses are [`IpAddr`] and the
//! checksum helper takes the pseudo-header as bytes, so adding it means a
//! second pair of `encode`/`decode` entry points, not a new data model.

use std::net::{IpAddr, Ipv4Addr};

/// IP protocol number of VRRP (RFC 5798 §5.1.1.3).
pub const VRRP_PROTOCOL: u8 = 112;
/// The IP TTL every VRRP packet is sent with, and the only one accepted
/// (RFC 5798 §5.1.1.3, RFC 9568 §7.1: a router MUST drop others, so an
/// advert cannot have crossed a router).
pub const VRRP_TTL: u8 = 255;
/// DSCP CS6 (network control), what keepalived sends (TOS byte 0xc0).
pub const VRRP_TOS: u8 = 0xc0;
/// The VRRP IPv4 multicast group (RFC 5798 §5.1.1.2).
pub const VRRP_MULTICAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// VRRP version handled here.
pub const VRRP_VERSION: u8 = 3;
/// The only VRRP packet type (RFC 5798 §5.2.2).
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// Largest advertisement interval: the field is 12 bits of centiseconds.
pub const MAX_ADVERT_INTERVAL_CS: u16 = 0x0fff;
/// Length of the fixed part of a VRRP message (before the addresses).
pub const VRRP_HEADER_LEN: usize = 8;
/// Length of an IPv4 header without options.
pub const IPV4_HEADER_LEN: usize = 20;

/// How the VRRP checksum is computed for IPv4.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ChecksumMode {
    /// VRRP message plus the IPv4 pseudo-header (RFC 5798 §5.2.8 as written;
    /// keepalived's and FRR's default). Our default for sending.
    #[default]
    PseudoHeader,
    /// VRRP message only (RFC 9568 §5.2.8).
    MessageOnly,
}

impl ChecksumMode {
    /// Stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ChecksumMode::PseudoHeader => "pseudo_header",
            ChecksumMode::MessageOnly => "message_only",
        }
    }
}

/// Which checksum forms a receiver accepts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ChecksumAccept {
    /// Accept either form (default: peers differ, both are in the field).
    #[default]
    Either,
    /// Accept only this form.
    Only(ChecksumMode),
}

/// Why a received packet was dropped. One variant per reason, `Copy`, with a
/// stable [`DecodeError::as_str`] label used as a metrics label value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than an IPv4 header, or than the lengths it announces.
    #[error("packet truncated")]
    Truncated,
    /// Not an IPv4 header, or a header length/total length that makes no sense.
    #[error("malformed IPv4 header")]
    BadIpHeader,
    /// IP protocol is not 112.
    #[error("IP protocol is not VRRP (112)")]
    NotVrrp,
    /// IP TTL is not 255 (RFC 9568 §7.1).
    #[error("IP TTL is not 255")]
    TtlNot255,
    /// VRRP version is not 3.
    #[error("VRRP version is not 3")]
    BadVersion,
    /// VRRP type is not 1 (advertisement).
    #[error("VRRP type is not advertisement (1)")]
    BadType,
    /// The VRRP payload length does not match 8 + 4 × address count.
    #[error("VRRP length does not match the address count")]
    LengthMismatch,
    /// Checksum wrong in every accepted form.
    #[error("bad VRRP checksum")]
    BadChecksum,
    /// Advertisement interval of zero: it would make every timer fire at once.
    #[error("advertisement interval is zero")]
    ZeroInterval,
    /// Not the VRID of this virtual router (RFC 9568 §7.1).
    #[error("VRID not configured here")]
    WrongVrid,
    /// The address list differs from ours and the sender is not the owner
    /// (RFC 5798 §7.1: MUST drop unless priority is 255).
    #[error("address list does not match the configuration")]
    AddressMismatch,
    /// Our own advertisement looped back to us.
    #[error("own advertisement")]
    OwnPacket,
    /// Unicast mode: the sender is not a configured peer.
    #[error("sender is not a configured unicast peer")]
    UnknownPeer,
}

impl DecodeError {
    /// Every variant, for pre-registering metric series.
    pub const ALL: [DecodeError; 13] = [
        DecodeError::Truncated,
        DecodeError::BadIpHeader,
        DecodeError::NotVrrp,
        DecodeError::TtlNot255,
        DecodeError::BadVersion,
        DecodeError::BadType,
        DecodeError::LengthMismatch,
        DecodeError::BadChecksum,
        DecodeError::ZeroInterval,
        DecodeError::WrongVrid,
        DecodeError::AddressMismatch,
        DecodeError::OwnPacket,
        DecodeError::UnknownPeer,
    ];

    /// Stable label for metrics and logs; never change an existing value.
    pub fn as_str(self) -> &'static str {
        match self {
            DecodeError::Truncated => "truncated",
            DecodeError::BadIpHeader => "bad_ip_header",
            DecodeError::NotVrrp => "not_vrrp",
            DecodeError::TtlNot255 => "ttl_not_255",
            DecodeError::BadVersion => "bad_version",
            DecodeError::BadType => "bad_type",
            DecodeError::LengthMismatch => "length_mismatch",
            DecodeError::BadChecksum => "bad_checksum",
            DecodeError::ZeroInterval => "zero_interval",
            DecodeError::WrongVrid => "wrong_vrid",
            DecodeError::AddressMismatch => "address_mismatch",
            DecodeError::OwnPacket => "own_packet",
            DecodeError::UnknownPeer => "unknown_peer",
        }
    }

    /// Index into [`DecodeError::ALL`], for array-based counters.
    pub fn index(self) -> usize {
        match self {
            DecodeError::Truncated => 0,
            DecodeError::BadIpHeader => 1,
            DecodeError::NotVrrp => 2,
            DecodeError::TtlNot255 => 3,
            DecodeError::BadVersion => 4,
            DecodeError::BadType => 5,
            DecodeError::LengthMismatch => 6,
            DecodeError::BadChecksum => 7,
            DecodeError::ZeroInterval => 8,
            DecodeError::WrongVrid => 9,
            DecodeError::AddressMismatch => 10,
            DecodeError::OwnPacket => 11,
            DecodeError::UnknownPeer => 12,
        }
    }
}

/// Why an advertisement cannot be encoded (a configuration bug, never input).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// Interval is zero or does not fit in 12 bits of centiseconds.
    #[error("advertisement interval {0} cs is outside 1..=4095")]
    BadInterval(u16),
    /// More than 255 addresses.
    #[error("too many addresses ({0}, at most 255)")]
    TooManyAddresses(usize),
    /// An IPv6 address in an IPv4 advertisement.
    #[error("address family mismatch")]
    FamilyMismatch,
    /// VRID 0 is not valid (RFC 5798 §5.2.3: 1-255).
    #[error("VRID 0 is not valid")]
    BadVrid,
}

/// A VRRPv3 advertisement (RFC 5798 §5.1, RFC 9568 §5.1).
///
/// ```text
///     0                   1                   2                   3
///     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
///    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///    |                    IPv4 Fields or IPv6 Fields                 |
///   ...                                                             ...
///    |                                                               |
///    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///    |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
///    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///    |(rsvd) |     Max Adver Int     |          Checksum             |
///    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///    |                                                               |
///    +                                                               +
///    |                       IPvX Address(es)                        |
///    +                                                               +
///    +                                                               +
///    +                                                               +
///    +                                                               +
///    |                                                               |
///    +                                                               +
///    |                                                               |
///    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
///
/// Version is 3, Type is 1. Max Adver Int is 12 bits of **centiseconds**
/// (100 = 1 s). The checksum is carried by the encoder, not stored here.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Advertisement {
    /// Virtual router id, 1-255.
    pub vrid: u8,
    /// Sender's priority: 255 = address owner, 0 = master resigning.
    pub priority: u8,
    /// Max Adver Int in centiseconds (1..=4095).
    pub max_advert_int_cs: u16,
    /// The virtual addresses, all of one family.
    pub addrs: Vec<IpAddr>,
}

/// The IPv4 header fields VRRP cares about (RFC 5798 §5.1.1). Options are
/// never sent; on receive they are skipped.
///
/// ```text
///     0                   1                   2                   3
///     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
///    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///    |Version|  IHL  |Type of Service|          Total Length         |
///    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///    |         Identification        |Flags|      Fragment Offset    |
///    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///    |  TTL = 255    | Protocol = 112|         Header Checksum       |
///    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///    |                 Source Address (primary IPv4 address)         |
///    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///    |                Destination Address (224.0.0.18)               |
///    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv4Header {
    /// Type of service byte (we send 0xc0).
    pub tos: u8,
    /// Identification (the kernel fills it in when zero on a raw socket).
    pub id: u16,
    /// Time to live (255 on send; anything else is dropped on receive).
    pub ttl: u8,
    /// Source: the sender's primary address on the interface.
    pub src: Ipv4Addr,
    /// Destination: 224.0.0.18 or a unicast peer.
    pub dst: Ipv4Addr,
}

impl Ipv4Header {
    /// A header as VRRP sends it: TOS 0xc0, TTL 255, id left to the kernel.
    pub fn vrrp(src: Ipv4Addr, dst: Ipv4Addr) -> Self {
        Ipv4Header {
            tos: VRRP_TOS,
            id: 0,
            ttl: VRRP_TTL,
            src,
            dst,
        }
    }
}

/// A decoded IPv4 VRRP packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedV4 {
    /// The IPv4 header fields.
    pub ip: Ipv4Header,
    /// The advertisement.
    pub advert: Advertisement,
    /// Which checksum form the sender used (for logs; a peer using the other
    /// form than ours is worth knowing about).
    pub checksum: ChecksumMode,
}

/// One's-complement sum of 16-bit big-endian words (RFC 1071), not folded
/// or inverted. An odd trailing byte is padded with zero.
fn sum16(mut acc: u32, bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The IPv4 pseudo-header (src, dst, zero, protocol, length) summed.
fn pseudo_v4(src: Ipv4Addr, dst: Ipv4Addr, len: usize) -> u32 {
    let mut acc = sum16(0, &src.octets());
    acc = sum16(acc, &dst.octets());
    acc += u32::from(VRRP_PROTOCOL);
    // Length fits: a VRRP message is at most 8 + 255 * 16 bytes.
    acc + (len as u32 & 0xffff)
}

/// The VRRP checksum for `msg` (its checksum field must be zero, or the
/// result is the verification sum: 0 when the checksum is right).
pub fn vrrp_checksum_v4(msg: &[u8], src: Ipv4Addr, dst: Ipv4Addr, mode: ChecksumMode) -> u16 {
    let start = match mode {
        ChecksumMode::PseudoHeader => pseudo_v4(src, dst, msg.len()),
        ChecksumMode::MessageOnly => 0,
    };
    !fold(sum16(start, msg))
}

/// The IPv4 header checksum (RFC 791) over `hdr` with its checksum field
/// zeroed, or 0 when verifying a header that carries a correct one.
pub fn ipv4_header_checksum(hdr: &[u8]) -> u16 {
    !fold(sum16(0, hdr))
}

impl Advertisement {
    /// Length of the VRRP message for IPv4.
    pub fn len_v4(&self) -> usize {
        VRRP_HEADER_LEN + 4 * self.addrs.len()
    }

    fn check_encodable(&self) -> Result<(), EncodeError> {
        if self.vrid == 0 {
            return Err(EncodeError::BadVrid);
        }
        if self.max_advert_int_cs == 0 || self.max_advert_int_cs > MAX_ADVERT_INTERVAL_CS {
            return Err(EncodeError::BadInterval(self.max_advert_int_cs));
        }
        if self.addrs.len() > 255 {
            return Err(EncodeError::TooManyAddresses(self.addrs.len()));
        }
        Ok(())
    }

    /// Encode the VRRP message (no IP header) for IPv4 with the checksum
    /// computed in `mode` for the given source and destination.
    pub fn encode_v4(
        &self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        mode: ChecksumMode,
    ) -> Result<Vec<u8>, EncodeError> {
        self.check_encodable()?;
        let mut out = Vec::with_capacity(self.len_v4());
        out.push((VRRP_VERSION << 4) | TYPE_ADVERTISEMENT);
        out.push(self.vrid);
        out.push(self.priority);
        out.push(self.addrs.len() as u8);
        // The 4 reserved bits are sent as zero (RFC 5798 §5.2.6).
        out.extend_from_slice(&(self.max_advert_int_cs & MAX_ADVERT_INTERVAL_CS).to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        for a in &self.addrs {
            match a {
                IpAddr::V4(v4) => out.extend_from_slice(&v4.octets()),
                IpAddr::V6(_) => return Err(EncodeError::FamilyMismatch),
            }
        }
        let ck = vrrp_checksum_v4(&out, src, dst, mode);
        out[6..8].copy_from_slice(&ck.to_be_bytes());
        Ok(out)
    }

    /// Encode a whole IPv4 packet (header without options + VRRP message),
    /// as sent on a raw socket with `IP_HDRINCL`. DF is not set (keepalived
    /// does not set it either); the header checksum is filled in.
    pub fn encode_ipv4_packet(
        &self,
        ip: &Ipv4Header,
        mode: ChecksumMode,
    ) -> Result<Vec<u8>, EncodeError> {
        let msg = self.encode_v4(ip.src, ip.dst, mode)?;
        let total = (IPV4_HEADER_LEN + msg.len()) as u16;
        let mut out = Vec::with_capacity(usize::from(total));
        out.push(0x45); // version 4, IHL 5 words
        out.push(ip.tos);
        out.extend_from_slice(&total.to_be_bytes());
        out.extend_from_slice(&ip.id.to_be_bytes());
        out.extend_from_slice(&[0, 0]); // flags, fragment offset
        out.push(ip.ttl);
        out.push(VRRP_PROTOCOL);
        out.extend_from_slice(&[0, 0]); // header checksum, below
        out.extend_from_slice(&ip.src.octets());
        out.extend_from_slice(&ip.dst.octets());
        let ck = ipv4_header_checksum(&out);
        out[10..12].copy_from_slice(&ck.to_be_bytes());
        out.extend_from_slice(&msg);
        Ok(out)
    }

    /// Decode a VRRP message (no IP header) that arrived over IPv4 from
    /// `src` to `dst`. Checks version, type, length and checksum
    /// (RFC 9568 §7.1); VRID and addresses are checked by
    /// [`Advertisement::check_against`].
    pub fn decode_v4(
        msg: &[u8],
        src: Ipv4Addr,
        dst: Ipv4Addr,
        accept: ChecksumAccept,
    ) -> Result<(Advertisement, ChecksumMode), DecodeError> {
        if msg.len() < VRRP_HEADER_LEN {
            return Err(DecodeError::Truncated);
        }
        if msg[0] >> 4 != VRRP_VERSION {
            return Err(DecodeError::BadVersion);
        }
        if msg[0] & 0x0f != TYPE_ADVERTISEMENT {
            return Err(DecodeError::BadType);
        }
        let count = usize::from(msg[3]);
        let want = VRRP_HEADER_LEN + 4 * count;
        if msg.len() < want {
            return Err(DecodeError::Truncated);
        }
        // Extra bytes after the announced addresses mean the sender and we
        // disagree on the layout: drop rather than guess (RFC 9568 §7.1).
        if msg.len() != want {
            return Err(DecodeError::LengthMismatch);
        }
        // A correct checksum sums (with the field itself) to 0xffff, which
        // vrrp_checksum_v4 inverts to 0.
        let ok = |mode| vrrp_checksum_v4(msg, src, dst, mode) == 0;
        let mode = match accept {
            ChecksumAccept::Either if ok(ChecksumMode::PseudoHeader) => ChecksumMode::PseudoHeader,
            ChecksumAccept::Either if ok(ChecksumMode::MessageOnly) => ChecksumMode::MessageOnly,
            ChecksumAccept::Only(m) if ok(m) => m,
            _ => return Err(DecodeError::BadChecksum),
        };
        let max_advert_int_cs = u16::from_be_bytes([msg[4], msg[5]]) & MAX_ADVERT_INTERVAL_CS;
        if max_advert_int_cs == 0 {
            return Err(DecodeError::ZeroInterval);
        }
        let addrs = msg[VRRP_HEADER_LEN..]
            .chunks_exact(4)
            .map(|c| IpAddr::V4(Ipv4Addr::new(c[0], c[1], c[2], c[3])))
            .collect();
        Ok((
            Advertisement {
                vrid: msg[1],
                priority: msg[2],
                max_advert_int_cs,
                addrs,
            },
            mode,
        ))
    }

    /// Decode a whole IPv4 packet as a raw IPv4 socket returns it on Linux
    /// (header included, total length in network order). Checks the IPv4
    /// fields (version, lengths, protocol 112, TTL 255) then the message.
    /// The IPv4 header checksum is the kernel's job and is not re-checked.
    pub fn decode_ipv4_packet(
        buf: &[u8],
        accept: ChecksumAccept,
    ) -> Result<ReceivedV4, DecodeError> {
        if buf.len() < IPV4_HEADER_LEN {
            return Err(DecodeError::Truncated);
        }
        if buf[0] >> 4 != 4 {
            return Err(DecodeError::BadIpHeader);
        }
        let ihl = usize::from(buf[0] & 0x0f) * 4;
        if ihl < IPV4_HEADER_LEN {
            return Err(DecodeError::BadIpHeader);
        }
        let total = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        if total < ihl {
            return Err(DecodeError::BadIpHeader);
        }
        if buf.len() < total || buf.len() < ihl {
            return Err(DecodeError::Truncated);
        }
        if buf[9] != VRRP_PROTOCOL {
            return Err(DecodeError::NotVrrp);
        }
        let ip = Ipv4Header {
            tos: buf[1],
            id: u16::from_be_bytes([buf[4], buf[5]]),
            ttl: buf[8],
            src: Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]),
            dst: Ipv4Addr::new(buf[16], buf[17], buf[18], buf[19]),
        };
        // RFC 9568 §7.1: MUST verify the TTL is 255 and drop otherwise.
        if ip.ttl != VRRP_TTL {
            return Err(DecodeError::TtlNot255);
        }
        // Trailing bytes past the IP total length (Ethernet padding) are
        // not part of the message.
        let (advert, checksum) =
            Advertisement::decode_v4(&buf[ihl..total], ip.src, ip.dst, accept)?;
        Ok(ReceivedV4 {
            ip,
            advert,
            checksum,
        })
    }

    /// The configuration-dependent receive checks of RFC 9568 §7.1: the
    /// VRID must be ours; the address list should match ours, and when it
    /// does not the packet is dropped unless the sender is the owner
    /// (priority 255). Order of addresses does not matter.
    pub fn check_against(&self, vrid: u8, addrs: &[IpAddr]) -> Result<(), DecodeError> {
        if self.vrid != vrid {
            return Err(DecodeError::WrongVrid);
        }
        let same = self.addrs.len() == addrs.len() && self.addrs.iter().all(|a| addrs.contains(a));
        if !same && self.priority != 255 {
            return Err(DecodeError::AddressMismatch);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_util::hex;

    const LB1: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
    const LB2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 12);
    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);

    /// (src, priority, interval cs, IPv4 header hex, pseudo-header message
    /// hex, message-only checksum) from shared/vrrp-keepalived-wire.md.
    const GOLDEN: [(Ipv4Addr, u8, u16, &str, &str, u16); 4] = [
        (
            LB1,
            150,
            100,
            "45c0002000010000ff70147dc612000be0000012",
            "313396010064cb43c6120064",
            0x71f0,
        ),
        (
            LB1,
            0,
            100,
            "45c0002000060000ff701478c612000be0000012",
            "3133000100646144c6120064",
            0x07f1,
        ),
        (
            LB2,
            100,
            100,
            "45c0002000010000ff70147cc612000ce0000012",
            "313364010064fd42c6120064",
            0xa3f0,
        ),
        (
            LB1,
            150,
            10,
            "45c0002000010000ff70147dc612000be0000012",
            "31339601000acb9dc6120064",
            0x724a,
        ),
    ];

    fn advert(priority: u8, cs: u16) -> Advertisement {
        Advertisement {
            vrid: 51,
            priority,
            max_advert_int_cs: cs,
            addrs: vec![IpAddr::V4(VIP)],
        }
    }

    fn message_only_bytes(pseudo_hex: &str, ck: u16) -> Vec<u8> {
        let mut m = hex(pseudo_hex);
        m[6..8].copy_from_slice(&ck.to_be_bytes());
        m
    }

    #[test]
    fn golden_encode_pseudo_header_full_ip_packet() {
        for (src, prio, cs, ip_hex, msg_hex, _) in GOLDEN {
            let ip_in = hex(ip_hex);
            let hdr = Ipv4Header {
                tos: VRRP_TOS,
                id: u16::from_be_bytes([ip_in[4], ip_in[5]]),
                ttl: 255,
                src,
                dst: VRRP_MULTICAST_V4,
            };
            let got = advert(prio, cs)
                .encode_ipv4_packet(&hdr, ChecksumMode::PseudoHeader)
                .expect("encode");
            let mut want = ip_in;
            want.extend(hex(msg_hex));
            assert_eq!(got, want, "prio {prio} interval {cs}");
        }
    }

    #[test]
    fn golden_encode_message_only() {
        for (src, prio, cs, _, msg_hex, ck) in GOLDEN {
            let got = advert(prio, cs)
                .encode_v4(src, VRRP_MULTICAST_V4, ChecksumMode::MessageOnly)
                .expect("encode");
            assert_eq!(
                got,
                message_only_bytes(msg_hex, ck),
                "prio {prio} interval {cs}"
            );
        }
    }

    #[test]
    fn golden_decode_both_forms_accepted_by_default() {
        for (src, prio, cs, ip_hex, msg_hex, ck) in GOLDEN {
            let mut pkt = hex(ip_hex);
            pkt.extend(hex(msg_hex));
            let r =
                Advertisement::decode_ipv4_packet(&pkt, ChecksumAccept::Either).expect("decode");
            assert_eq!(r.advert, advert(prio, cs));
            assert_eq!(r.checksum, ChecksumMode::PseudoHeader);
            assert_eq!(r.ip.src, src);
            assert_eq!(r.ip.dst, VRRP_MULTICAST_V4);
            assert_eq!(r.ip.ttl, 255);
            assert_eq!(r.ip.tos, 0xc0);

            let mut pkt = hex(ip_hex);
            pkt.extend(message_only_bytes(msg_hex, ck));
            let r =
                Advertisement::decode_ipv4_packet(&pkt, ChecksumAccept::Either).expect("decode");
            assert_eq!(r.advert, advert(prio, cs));
            assert_eq!(r.checksum, ChecksumMode::MessageOnly);
        }
    }

    #[test]
    fn golden_ip_header_checksums_verify() {
        for (_, _, _, ip_hex, _, _) in GOLDEN {
            assert_eq!(ipv4_header_checksum(&hex(ip_hex)), 0);
        }
    }

    #[test]
    fn strict_checksum_modes_reject_the_other_form() {
        let (src, _, _, ip_hex, msg_hex, ck) = GOLDEN[0];
        let mut pseudo = hex(ip_hex);
        pseudo.extend(hex(msg_hex));
        let mut only = hex(ip_hex);
        only.extend(message_only_bytes(msg_hex, ck));
        let strict_rfc = ChecksumAccept::Only(ChecksumMode::MessageOnly);
        let strict_ka = ChecksumAccept::Only(ChecksumMode::PseudoHeader);
        assert_eq!(
            Advertisement::decode_ipv4_packet(&pseudo, strict_rfc),
            Err(DecodeError::BadChecksum)
        );
        assert!(Advertisement::decode_ipv4_packet(&only, strict_rfc).is_ok());
        assert_eq!(
            Advertisement::decode_ipv4_packet(&only, strict_ka),
            Err(DecodeError::BadChecksum)
        );
        assert!(Advertisement::decode_ipv4_packet(&pseudo, strict_ka).is_ok());
        // The pseudo-header binds the source: the same bytes from another
        // source fail in that mode.
        let msg = hex(msg_hex);
        assert!(Advertisement::decode_v4(&msg, src, VRRP_MULTICAST_V4, strict_ka).is_ok());
        assert_eq!(
            Advertisement::decode_v4(&msg, LB2, VRRP_MULTICAST_V4, strict_ka),
            Err(DecodeError::BadChecksum)
        );
    }

    fn good_packet() -> Vec<u8> {
        let mut p = hex(GOLDEN[0].3);
        p.extend(hex(GOLDEN[0].4));
        p
    }

    fn decode(p: &[u8]) -> Result<ReceivedV4, DecodeError> {
        Advertisement::decode_ipv4_packet(p, ChecksumAccept::Either)
    }

    #[test]
    fn drops_each_reason() {
        let good = good_packet();
        assert!(decode(&good).is_ok());

        let mut p = good.clone();
        p[8] = 64;
        assert_eq!(decode(&p), Err(DecodeError::TtlNot255));

        let mut p = good.clone();
        p[9] = 17;
        assert_eq!(decode(&p), Err(DecodeError::NotVrrp));

        let mut p = good.clone();
        p[0] = 0x65;
        assert_eq!(decode(&p), Err(DecodeError::BadIpHeader));

        let mut p = good.clone();
        p[0] = 0x44;
        assert_eq!(decode(&p), Err(DecodeError::BadIpHeader));

        let mut p = good.clone();
        p[20] = 0x21; // VRRPv2
        assert_eq!(decode(&p), Err(DecodeError::BadVersion));

        let mut p = good.clone();
        p[20] = 0x32;
        assert_eq!(decode(&p), Err(DecodeError::BadType));

        let mut p = good.clone();
        p[23] = 2; // claims two addresses, carries one
        assert_eq!(decode(&p), Err(DecodeError::Truncated));

        let mut p = good.clone();
        p[23] = 0; // claims none, carries one
        assert_eq!(decode(&p), Err(DecodeError::LengthMismatch));

        let mut p = good.clone();
        p[26] ^= 0x01;
        assert_eq!(decode(&p), Err(DecodeError::BadChecksum));

        let mut p = good.clone();
        p[31] ^= 0x01; // address changed, checksum not
        assert_eq!(decode(&p), Err(DecodeError::BadChecksum));

        // Total length larger than the buffer.
        let mut p = good.clone();
        p[3] = 0x40;
        assert_eq!(decode(&p), Err(DecodeError::Truncated));
    }

    #[test]
    fn zero_interval_is_dropped() {
        let mut a = advert(100, 100);
        let mut msg = a
            .encode_v4(LB1, VRRP_MULTICAST_V4, ChecksumMode::MessageOnly)
            .expect("encode");
        msg[4] = 0;
        msg[5] = 0;
        msg[6] = 0;
        msg[7] = 0;
        let ck = vrrp_checksum_v4(&msg, LB1, VRRP_MULTICAST_V4, ChecksumMode::MessageOnly);
        msg[6..8].copy_from_slice(&ck.to_be_bytes());
        assert_eq!(
            Advertisement::decode_v4(&msg, LB1, VRRP_MULTICAST_V4, ChecksumAccept::Either),
            Err(DecodeError::ZeroInterval)
        );
        a.max_advert_int_cs = 0;
        assert_eq!(
            a.encode_v4(LB1, VRRP_MULTICAST_V4, ChecksumMode::PseudoHeader),
            Err(EncodeError::BadInterval(0))
        );
    }

    #[test]
    fn every_prefix_is_rejected_without_panic() {
        let good = good_packet();
        for n in 0..good.len() {
            assert!(decode(&good[..n]).is_err(), "prefix of {n} bytes accepted");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: xorshift bytes, some with a VRRP-ish
        // header so the deeper paths run too.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..20_000 {
            let len = (next() % 80) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if i % 2 == 0 && len >= 24 {
                buf[0] = 0x45;
                buf[8] = 255;
                buf[9] = 112;
                buf[20] = 0x31;
            }
            let _ = decode(&buf);
        }
    }

    #[test]
    fn ethernet_padding_after_total_length_is_ignored() {
        let mut p = good_packet();
        p.extend_from_slice(&[0; 14]);
        assert!(decode(&p).is_ok());
    }

    #[test]
    fn ip_options_are_skipped() {
        let good = good_packet();
        let mut p = Vec::new();
        p.push(0x46); // IHL 6
        p.extend_from_slice(&good[1..20]);
        p.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
        p.extend_from_slice(&good[20..]);
        p[3] += 4;
        let r = decode(&p).expect("decode");
        assert_eq!(r.advert.priority, 150);
    }

    #[test]
    fn check_against_vrid_and_addresses() {
        let a = advert(150, 100);
        let ours = [IpAddr::V4(VIP)];
        assert_eq!(a.check_against(51, &ours), Ok(()));
        assert_eq!(a.check_against(52, &ours), Err(DecodeError::WrongVrid));
        let other = [IpAddr::V4(Ipv4Addr::new(198, 18, 0, 101))];
        assert_eq!(
            a.check_against(51, &other),
            Err(DecodeError::AddressMismatch)
        );
        // The owner's view of the addresses wins (RFC 5798 §7.1).
        let owner = advert(255, 100);
        assert_eq!(owner.check_against(51, &other), Ok(()));
    }

    #[test]
    fn encode_rejects_bad_configuration() {
        let mut a = advert(100, 4096);
        assert_eq!(
            a.encode_v4(LB1, VRRP_MULTICAST_V4, ChecksumMode::PseudoHeader),
            Err(EncodeError::BadInterval(4096))
        );
        a.max_advert_int_cs = 100;
        a.vrid = 0;
        assert_eq!(
            a.encode_v4(LB1, VRRP_MULTICAST_V4, ChecksumMode::PseudoHeader),
            Err(EncodeError::BadVrid)
        );
        a.vrid = 51;
        a.addrs = vec!["2001:db8::1".parse().expect("v6")];
        assert_eq!(
            a.encode_v4(LB1, VRRP_MULTICAST_V4, ChecksumMode::PseudoHeader),
            Err(EncodeError::FamilyMismatch)
        );
    }

    #[test]
    fn decode_error_labels_are_unique_and_indexed() {
        let mut seen = std::collections::BTreeSet::new();
        for (i, e) in DecodeError::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
            assert!(seen.insert(e.as_str()));
        }
    }

    #[test]
    fn multiple_addresses_roundtrip() {
        let a = Advertisement {
            vrid: 7,
            priority: 200,
            max_advert_int_cs: 4095,
            addrs: (1..=5)
                .map(|i| IpAddr::V4(Ipv4Addr::new(198, 18, 1, i)))
                .collect(),
        };
        let hdr = Ipv4Header::vrrp(LB1, VRRP_MULTICAST_V4);
        for mode in [ChecksumMode::PseudoHeader, ChecksumMode::MessageOnly] {
            let p = a.encode_ipv4_packet(&hdr, mode).expect("encode");
            assert_eq!(p.len(), 20 + 8 + 20);
            let r = decode(&p).expect("decode");
            assert_eq!(r.advert, a);
            assert_eq!(r.checksum, mode);
        }
    }
}
