//! What a data plane hands to another process in a live upgrade: its listening sockets,
//! every connection with the state needed to resume it exactly, and the tables that
//! decide where clients go (stick entries, health).
//!
//! ```text
//!   old process                                   new process
//!   DataPlane::freeze ──▶ Handover ──(the node sends it: metadata + descriptors)──▶
//!        │                                        DataPlane::offer_listeners, apply_model,
//!        │ (on failure) DataPlane::thaw           import_state, adopt(go)
//! ```
//!
//! Everything here is plain data: the sockets are std ones (registered with no poller),
//! the metadata is serializable. How it travels (a Unix socket, SCM_RIGHTS) is the
//! node's business, not the plane's.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// One established client/server pair: where it belongs and where its byte streams
/// stand. A resumed relay first writes the bytes in flight, then reads on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnMeta {
    pub frontend: String,
    pub backend: String,
    pub server: String,
    /// The client's address as accepted (its IP is the stick key).
    pub peer: SocketAddr,
    /// Unix ms when the client connected.
    pub started_ms: u64,
    /// Client → server bytes read so far.
    pub bytes_in: u64,
    /// Server → client bytes read so far.
    pub bytes_out: u64,
    /// Client bytes read and not yet written to the server.
    pub up_in_flight: Vec<u8>,
    /// Server bytes read and not yet written to the client.
    pub down_in_flight: Vec<u8>,
    /// The client's FIN has been passed on to the server: nothing more comes up.
    pub client_fin: bool,
    /// The server's FIN has been passed on to the client.
    pub server_fin: bool,
}

/// A client connection not yet on a server: waiting for a `maxconn` slot, still
/// connecting, or accepted just as the plane froze. The new process places it as if it
/// had just arrived (its stick entry sends it to the same server), with the bytes it has
/// sent so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitingMeta {
    pub frontend: String,
    pub peer: SocketAddr,
    /// What the client sent before any server took it.
    pub first: Vec<u8>,
    pub started_ms: u64,
}

/// A listening port: the address it was configured as (the plane's key, which may
/// differ from the bound one when the config asks for port 0) and its frontend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerMeta {
    pub addr: SocketAddr,
    pub frontend: String,
}

/// One server's health as this node's plane knows it: its own probes' verdict (once it
/// has probed) and the cluster's. Carried so a new process neither flaps a server nor
/// waits for `rise` probes to trust it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerHealthCarry {
    pub backend: String,
    pub server: String,
    pub probed: bool,
    pub up: bool,
    pub replicated_up: bool,
}

/// One backend's stick entries as this node holds them, decisions not yet replicated
/// included: (client, server, last seen in Unix ms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StickCarry {
    pub backend: String,
    pub entries: Vec<(IpAddr, String, u64)>,
}

/// One counter of the plane's metrics, so that it continues in the new process instead
/// of starting again from 0 (a reset counter reads as a huge rate to `rate()` users
/// who do not expect one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterCarry {
    pub of: CounterOf,
    /// The counter's name within its object (e.g. `total`, `bytes_in`).
    pub name: String,
    pub value: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CounterOf {
    Frontend(String),
    Backend(String),
    Server { backend: String, server: String },
}

/// The plane's tables and counters, carried with the connections.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaneState {
    pub sticks: Vec<StickCarry>,
    pub health: Vec<ServerHealthCarry>,
    pub counters: Vec<CounterCarry>,
}

/// Everything a frozen plane hands over.
#[derive(Debug, Default)]
pub struct Handover {
    /// Every socket of every port's SO_REUSEPORT group. Duplicates: the frozen plane
    /// keeps its own, so a thaw listens again at once.
    pub listeners: Vec<(ListenerMeta, Vec<std::net::TcpListener>)>,
    /// (state, client socket, server socket).
    pub connections: Vec<(ConnMeta, std::net::TcpStream, std::net::TcpStream)>,
    pub waiting: Vec<(WaitingMeta, std::net::TcpStream)>,
    pub state: PlaneState,
    /// Unix ms when the relays stopped.
    pub frozen_at_ms: u64,
    /// Connections that could not be parked within the freeze's bound (still running
    /// here). A hand-over with any is refused: thaw.
    pub stragglers: usize,
    /// Connections that ended while being parked because their bytes in flight could
    /// not be read back exactly (reset rather than continued with a hole).
    pub lost: usize,
}

impl Handover {
    /// Bytes read and not yet written, over every connection and direction.
    pub fn bytes_in_flight(&self) -> u64 {
        bytes_in_flight(
            self.connections.iter().map(|(m, _, _)| m),
            self.waiting.iter().map(|(m, _)| m),
        )
    }

    /// Listening sockets, over every port.
    pub fn listener_sockets(&self) -> usize {
        self.listeners.iter().map(|(_, group)| group.len()).sum()
    }
}

/// Bytes read and not yet written by these connections (both directions) and sent by
/// these waiting clients before any server took them.
pub fn bytes_in_flight<'a>(
    connections: impl Iterator<Item = &'a ConnMeta>,
    waiting: impl Iterator<Item = &'a WaitingMeta>,
) -> u64 {
    let connections: usize = connections
        .map(|m| m.up_in_flight.len() + m.down_in_flight.len())
        .sum();
    let waiting: usize = waiting.map(|m| m.first.len()).sum();
    (connections + waiting) as u64
}

/// A connection as it parks itself when the plane freezes.
pub(super) enum Parked {
    Established(ConnMeta, std::net::TcpStream, std::net::TcpStream),
    Waiting(WaitingMeta, std::net::TcpStream),
}

/// What [`super::DataPlane::adopt`] started.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Adopted {
    pub connections: usize,
    pub waiting: usize,
}
