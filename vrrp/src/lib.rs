//! `ballast-vrrp`: VRRPv3 (RFC 5798, updated by RFC 9568) for Ballast's
//! floating IP.
//!
//! Layers, from the bottom (DESIGN "Pure cores, thin drivers"):
//!
//! ```text
//!   packet  — pure codec: bytes <-> Advertisement, every RFC 9568 §7.1 check
//!   arp     — pure builder of the gratuitous ARP frame
//!   state   — pure state machine of one virtual router: handle(now, Event)
//!             -> Vec<Action>, next_deadline(); no clock, no I/O
//!   driver  — (Linux) one tokio task per virtual router: raw socket (pnet,
//!             receive loop on its own thread), VIPs via rtnetlink, GARP via
//!             pnet datalink, notify command, status watch channel; or, for
//!             demos and labs without root, the same packets over UDP (no VIP)
//! ```
//!
//! The crate is multi-instance: every virtual router is an independent
//! [`state::Router`] and, on Linux, an independent `driver::VrrpInstance`,
//! so a node can run several VRIDs (DESIGN "Beyond the pair"). Addresses are
//! [`std::net::IpAddr`] throughout so IPv6 can be added; only IPv4 is
//! implemented.

pub mod arp;
pub mod packet;
pub mod state;

#[cfg(target_os = "linux")]
pub mod driver;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod test_util;

pub use packet::{Advertisement, ChecksumAccept, ChecksumMode, DecodeError};
pub use state::{Action, Event, Router, RouterConfig, TransitionReason, VrrpState};
