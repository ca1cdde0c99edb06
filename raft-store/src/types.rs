//! openraft's type configuration for Ballast, in one place (STYLE item 10).

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::model::Role;
use crate::state::{Command, Response};

pub use crate::state::NodeId;

/// What the cluster knows of each member: where to reach it and what it does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Member {
    /// Raft address (`host:port`); empty for a single-node cluster without a Raft port.
    pub raft: String,
    /// API address, for forwarding and for `ballast ctl`.
    pub api: String,
    pub role: Role,
}

impl Member {
    /// Members 1..=n, all lb nodes, at these Raft addresses and without API addresses:
    /// a cluster of replicas in one process (tests, benchmarks).
    pub fn local_cluster(
        raft: &[std::net::SocketAddr],
    ) -> std::collections::BTreeMap<NodeId, Member> {
        (1..)
            .zip(raft)
            .map(|(id, addr)| {
                let member = Member {
                    raft: addr.to_string(),
                    api: String::new(),
                    role: Role::Lb,
                };
                (id, member)
            })
            .collect()
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} raft={} api={}",
            self.role.as_str(),
            self.raft,
            self.api
        )
    }
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Member>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type RaftMetrics = openraft::RaftMetrics<NodeId, Member>;
