//! What a node reports of its fitness to be VRRP master: its VRRP state and the tracked
//! conditions that lower its priority (shared by the peer reports, `/v1/status`, `ctl`).
//!
//! Both travel as their strings, in JSON and in the peers' bincode frames alike
//! (`serde(into, try_from)`), so the wire reads as it did when they were plain strings.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A VRRP instance's state (RFC 5798 §6.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(into = "String", try_from = "String", rename_all = "lowercase")]
pub enum VrrpState {
    Initialize,
    Backup,
    Master,
}

impl VrrpState {
    pub fn as_str(self) -> &'static str {
        match self {
            VrrpState::Initialize => "initialize",
            VrrpState::Backup => "backup",
            VrrpState::Master => "master",
        }
    }
}

/// A tracked condition failing now: each lowers the node's VRRP priority to 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(into = "String", try_from = "String")]
pub enum Condition {
    /// No model applied yet, or a bind failed.
    #[serde(rename = "data plane not listening")]
    DataPlaneNotListening,
    /// No server of any backend is usable from this node.
    #[serde(rename = "no usable server")]
    NoUsableServer,
    /// The replica is far behind the Raft leader, or cannot reach one.
    #[serde(rename = "replica far behind")]
    ReplicaFarBehind,
    /// The node handed the VIP over in a failover drill and holds back.
    #[serde(rename = "yielded in a failover drill")]
    Yielded,
}

impl Condition {
    pub const ALL: [Condition; 4] = [
        Condition::DataPlaneNotListening,
        Condition::NoUsableServer,
        Condition::ReplicaFarBehind,
        Condition::Yielded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Condition::DataPlaneNotListening => "data plane not listening",
            Condition::NoUsableServer => "no usable server",
            Condition::ReplicaFarBehind => "replica far behind",
            Condition::Yielded => "yielded in a failover drill",
        }
    }
}

/// A string that names no known state or condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}")]
pub struct Unknown {
    kind: &'static str,
    value: String,
}

impl TryFrom<String> for VrrpState {
    type Error = Unknown;
    fn try_from(value: String) -> Result<Self, Unknown> {
        [VrrpState::Initialize, VrrpState::Backup, VrrpState::Master]
            .into_iter()
            .find(|s| s.as_str() == value)
            .ok_or(Unknown {
                kind: "VRRP state",
                value,
            })
    }
}

impl TryFrom<String> for Condition {
    type Error = Unknown;
    fn try_from(value: String) -> Result<Self, Unknown> {
        Condition::ALL
            .into_iter()
            .find(|c| c.as_str() == value)
            .ok_or(Unknown {
                kind: "condition",
                value,
            })
    }
}

impl From<VrrpState> for String {
    fn from(s: VrrpState) -> String {
        s.as_str().to_string()
    }
}

impl From<Condition> for String {
    fn from(c: Condition) -> String {
        c.as_str().to_string()
    }
}

impl fmt::Display for VrrpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_conditions_travel_as_their_strings() {
        for s in [VrrpState::Initialize, VrrpState::Backup, VrrpState::Master] {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<VrrpState>(&json).unwrap(), s);
        }
        for c in Condition::ALL {
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{c}\""));
            assert_eq!(serde_json::from_str::<Condition>(&json).unwrap(), c);
        }
        assert!(serde_json::from_str::<VrrpState>("\"Master\"").is_err());
    }
}
