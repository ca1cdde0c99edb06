//! Node-to-node RPC over TCP: length-prefixed bincode 2 frames, authenticated with the
//! cluster token.
//!
//! ```text
//!  frame   := u32 big-endian length | bincode payload   (length <= MAX_FRAME; <= 4 KiB
//!                                                        before authentication)
//!  server  → ServerHello { nonce_s }
//!  client  → ClientHello { from, nonce_c, mac = HMAC-SHA256(token, "client" | nonce_s) }
//!  server  → ServerProof { mac = HMAC-SHA256(token, "server" | nonce_c) }   (or closes)
//!  then    client → Request, server → Reply, one at a time per connection
//! ```
//!
//! Both sides prove they hold the token without sending it. A peer that fails the
//! handshake, sends an oversized frame or bytes that do not decode is logged, counted in
//! [`NetworkStats`] and disconnected; nothing it sent reaches Raft.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ha::{Condition, VrrpState};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use crate::state::{Command, Response};
use crate::store::encode;
use crate::types::{Member, NodeId, Raft, TypeConfig};

/// Largest frame after authentication: a batch of log entries or a snapshot chunk.
pub const MAX_FRAME: usize = 64 << 20;
/// Largest frame before authentication: an unauthenticated peer cannot make us allocate.
const MAX_HELLO_FRAME: usize = 4 << 10;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes exceeds the limit of {1}")]
    TooLarge(usize, usize),
    #[error("undecodable frame: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("unencodable message: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("peer failed authentication")]
    Auth,
    #[error("peer wanted node {wanted}, this is node {actual}")]
    WrongNode { wanted: NodeId, actual: NodeId },
    #[error("timed out")]
    Timeout,
    #[error("unexpected message")]
    Unexpected,
}

/// Counters the node exports as metrics.
#[derive(Debug, Default)]
pub struct NetworkStats {
    pub auth_failures: AtomicU64,
    pub bad_frames: AtomicU64,
    pub connections_accepted: AtomicU64,
}

#[derive(Serialize, Deserialize)]
struct ServerHello {
    nonce: [u8; 32],
}

#[derive(Serialize, Deserialize)]
struct ClientHello {
    from: NodeId,
    /// The node the client means to reach: a stale or mistyped address that lands on
    /// another node is refused instead of feeding it a foreign log.
    to: NodeId,
    nonce: [u8; 32],
    mac: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct ServerProof {
    mac: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
pub enum Request {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A write forwarded by a follower to the leader.
    Propose(Command),
    /// A membership change forwarded to the leader.
    Membership(MembershipChange),
    /// High availability: reports, progress and leadership hand-over.
    Peer(PeerRequest),
}

/// Requests between nodes about failover, outside Raft's own protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerRequest {
    /// The node's [`NodeReport`] (VRRP state, tracked conditions, how far behind).
    Report,
    /// The node's Raft progress: a follower compares its own with the leader's.
    Progress,
    /// Asks the leader to let `to` take leadership (see [`Local::step_down`]).
    StepDown { to: NodeId },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerReply {
    Report(Option<NodeReport>),
    Progress(Progress),
    /// `Ok(last log index)`: stand once your log reaches it.
    StepDown(Result<u64, String>),
}

/// A node's Raft position, as its own metrics show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub term: u64,
    pub leader: Option<NodeId>,
    pub last_log_index: u64,
    pub applied_index: u64,
    /// Milliseconds since this node last heard from a leader (AppendEntries, heartbeats
    /// included); 0 on the leader itself, `None` when it never has.
    pub leader_contact_ms: Option<u64>,
}

/// What a node tells peers (and the API) about its fitness to be master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    pub node_id: NodeId,
    pub role: crate::model::Role,
    /// `None` without VRRP.
    pub vrrp_state: Option<VrrpState>,
    pub configured_priority: Option<u8>,
    pub effective_priority: Option<u8>,
    /// Tracked conditions failing now (each lowers the priority to 1).
    pub failing: Vec<Condition>,
    /// The node holds back (priority 1) after handing the VIP over in a drill.
    pub yielded: bool,
    /// Applied entries behind the leader's last log index, last time it was asked.
    pub lag_entries: Option<u64>,
    pub caught_up: bool,
    pub revision: u64,
}

/// Adding or removing a cluster member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    Add { id: NodeId, member: Member },
    Remove { id: NodeId },
}

#[derive(Serialize, Deserialize)]
pub enum Reply {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    Propose(Result<Response, ProposeError>),
    Membership(Result<(), ProposeError>),
    Peer(PeerReply),
}

/// Why a proposal was not committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ProposeError {
    #[error("this node is not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("no quorum: {0}")]
    Unavailable(String),
    #[error("node {0} is not a member of the cluster")]
    NoSuchMember(NodeId),
}

fn nonce() -> [u8; 32] {
    let mut n = [0u8; 32];
    // getrandom only fails on platforms without an entropy source.
    getrandom::getrandom(&mut n).expect("system entropy source");
    n
}

fn mac(token: &[u8], label: &[u8], nonce: &[u8]) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(token).expect("HMAC accepts any key length");
    m.update(label);
    m.update(nonce);
    m
}

async fn write_frame<T: Serialize>(stream: &mut TcpStream, message: &T) -> Result<(), WireError> {
    let payload = encode(message)?;
    if payload.len() > MAX_FRAME {
        return Err(WireError::TooLarge(payload.len(), MAX_FRAME));
    }
    let mut frame = Vec::with_capacity(4 + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    stream.write_all(&frame).await?;
    Ok(())
}

async fn read_frame<T: DeserializeOwned>(
    stream: &mut TcpStream,
    max: usize,
) -> Result<T, WireError> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(WireError::TooLarge(len, max));
    }
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await?;
    let value = bincode::serde::decode_from_slice(
        &payload,
        bincode::config::standard().with_limit::<MAX_FRAME>(),
    )?
    .0;
    Ok(value)
}

fn client_mac(token: &[u8], server_nonce: &[u8], from: NodeId, to: NodeId) -> Hmac<Sha256> {
    let mut m = mac(token, b"ballast-raft client", server_nonce);
    m.update(&from.to_be_bytes());
    m.update(&to.to_be_bytes());
    m
}

/// Client half of the handshake; proves the token and checks the server's proof.
async fn client_handshake(
    stream: &mut TcpStream,
    from: NodeId,
    to: NodeId,
    token: &[u8],
) -> Result<(), WireError> {
    let hello: ServerHello = read_frame(stream, MAX_HELLO_FRAME).await?;
    let my_nonce = nonce();
    let proof = client_mac(token, &hello.nonce, from, to)
        .finalize()
        .into_bytes()
        .to_vec();
    write_frame(
        stream,
        &ClientHello {
            from,
            to,
            nonce: my_nonce,
            mac: proof,
        },
    )
    .await?;
    let answer: ServerProof = read_frame(stream, MAX_HELLO_FRAME)
        .await
        .map_err(|_| WireError::Auth)?;
    mac(token, b"ballast-raft server", &my_nonce)
        .verify_slice(&answer.mac)
        .map_err(|_| WireError::Auth)
}

/// Server half; returns the peer's node id once it has proven the token.
async fn server_handshake(
    stream: &mut TcpStream,
    me: NodeId,
    token: &[u8],
) -> Result<NodeId, WireError> {
    let my_nonce = nonce();
    write_frame(stream, &ServerHello { nonce: my_nonce }).await?;
    let hello: ClientHello = read_frame(stream, MAX_HELLO_FRAME).await?;
    client_mac(token, &my_nonce, hello.from, hello.to)
        .verify_slice(&hello.mac)
        .map_err(|_| WireError::Auth)?;
    if hello.to != me {
        return Err(WireError::WrongNode {
            wanted: hello.to,
            actual: me,
        });
    }
    let proof = mac(token, b"ballast-raft server", &hello.nonce)
        .finalize()
        .into_bytes()
        .to_vec();
    write_frame(stream, &ServerProof { mac: proof }).await?;
    Ok(hello.from)
}

/// Accepts peers until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    me: NodeId,
    local: Arc<Local>,
    token: Arc<[u8]>,
    stats: Arc<NetworkStats>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                stats.connections_accepted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(serve_peer(
                    stream,
                    peer,
                    me,
                    local.clone(),
                    token.clone(),
                    stats.clone(),
                ));
            }
            Err(e) => {
                warn!(error = %e, "raft accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_peer(
    mut stream: TcpStream,
    peer: SocketAddr,
    me: NodeId,
    local: Arc<Local>,
    token: Arc<[u8]>,
    stats: Arc<NetworkStats>,
) {
    let raft = &local.raft;
    let _ = stream.set_nodelay(true);
    let from =
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, server_handshake(&mut stream, me, &token))
            .await
            .unwrap_or(Err(WireError::Timeout))
        {
            Ok(from) => from,
            Err(e) => {
                if matches!(e, WireError::Auth) {
                    stats.auth_failures.fetch_add(1, Ordering::Relaxed);
                } else {
                    stats.bad_frames.fetch_add(1, Ordering::Relaxed);
                }
                warn!(%peer, reason = %e, "raft peer refused");
                return;
            }
        };
    debug!(%peer, from, "raft peer authenticated");
    loop {
        let request: Request = match read_frame(&mut stream, MAX_FRAME).await {
            Ok(r) => r,
            Err(WireError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return,
            Err(e) => {
                stats.bad_frames.fetch_add(1, Ordering::Relaxed);
                warn!(%peer, from, reason = %e, "dropping raft connection");
                return;
            }
        };
        let reply = match request {
            Request::AppendEntries(rpc) => {
                let reply = raft.append_entries(rpc).await;
                // Anything but a higher vote means a current leader reached us.
                if matches!(
                    reply,
                    Ok(AppendEntriesResponse::Success
                        | AppendEntriesResponse::PartialSuccess(_)
                        | AppendEntriesResponse::Conflict)
                ) {
                    *local.last_append.lock() = Some(tokio::time::Instant::now());
                }
                Reply::AppendEntries(reply)
            }
            Request::Vote(rpc) => Reply::Vote(raft.vote(rpc).await),
            Request::InstallSnapshot(rpc) => {
                Reply::InstallSnapshot(raft.install_snapshot(rpc).await)
            }
            Request::Propose(command) => Reply::Propose(local.propose(command).await),
            Request::Membership(change) => {
                Reply::Membership(change_membership_local(raft, change).await)
            }
            Request::Peer(PeerRequest::Report) => Reply::Peer(PeerReply::Report(local.report())),
            Request::Peer(PeerRequest::Progress) => {
                Reply::Peer(PeerReply::Progress(local.progress()))
            }
            Request::Peer(PeerRequest::StepDown { to }) => {
                Reply::Peer(PeerReply::StepDown(local.step_down(to).await))
            }
        };
        if let Err(e) = write_frame(&mut stream, &reply).await {
            debug!(%peer, error = %e, "raft reply failed");
            return;
        }
    }
}

/// Produces this node's [`NodeReport`]; installed by the node once VRRP runs.
pub type Reporter = Arc<dyn Fn() -> NodeReport + Send + Sync>;

/// How long a leader stops heartbeats and refuses writes to hand leadership over. The
/// followers' leader lease (openraft: `election_timeout_max`) must run out inside it.
pub const STEP_DOWN_WINDOW: Duration = Duration::from_secs(8);
/// How long a stepping-down leader waits for the new one to have the whole log.
const STEP_DOWN_CATCH_UP: Duration = Duration::from_secs(2);
/// How often a stepping-down leader checks whether VRRP made it master again.
const STEP_DOWN_RECHECK: Duration = Duration::from_millis(200);

/// This node's side of the peer protocol: its Raft, plus what it answers beyond Raft.
pub struct Local {
    pub raft: Raft,
    me: NodeId,
    /// While set (until the instant), this leader refuses writes and sends no
    /// heartbeats, so the followers' leases expire and the node it hands over to can
    /// win an election. openraft 0.9 has no leadership transfer of its own.
    stepping_down: parking_lot::Mutex<Option<tokio::time::Instant>>,
    reporter: parking_lot::RwLock<Option<Reporter>>,
    /// When a leader's AppendEntries last arrived (see [`Progress::leader_contact_ms`]).
    last_append: parking_lot::Mutex<Option<tokio::time::Instant>>,
}

impl Local {
    pub fn new(me: NodeId, raft: Raft) -> Arc<Self> {
        Arc::new(Local {
            raft,
            me,
            stepping_down: parking_lot::Mutex::new(None),
            reporter: parking_lot::RwLock::new(None),
            last_append: parking_lot::Mutex::new(None),
        })
    }

    /// Milliseconds since a leader was last heard from (0 when this node leads).
    pub fn leader_contact_ms(&self) -> Option<u64> {
        if self.raft.metrics().borrow().state == openraft::ServerState::Leader {
            return Some(0);
        }
        (*self.last_append.lock()).map(|t| t.elapsed().as_millis() as u64)
    }

    pub fn set_reporter(&self, reporter: Reporter) {
        *self.reporter.write() = Some(reporter);
    }

    pub fn report(&self) -> Option<NodeReport> {
        let reporter = self.reporter.read().clone();
        reporter.map(|r| r())
    }

    pub fn progress(&self) -> Progress {
        let m = self.raft.metrics().borrow().clone();
        Progress {
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            leader_contact_ms: self.leader_contact_ms(),
        }
    }

    pub fn is_stepping_down(&self) -> bool {
        let mut until = self.stepping_down.lock();
        match *until {
            Some(t) if tokio::time::Instant::now() < t => true,
            Some(_) => {
                *until = None;
                false
            }
            None => false,
        }
    }

    fn is_vrrp_master(&self) -> bool {
        self.report()
            .is_some_and(|r| r.vrrp_state == Some(VrrpState::Master))
    }

    /// Writes through this node's Raft if it leads and is not handing over.
    pub async fn propose(&self, command: Command) -> Result<Response, ProposeError> {
        if self.is_stepping_down() {
            return Err(ProposeError::NotLeader { leader: None });
        }
        propose_local(&self.raft, command).await
    }

    /// Lets `to` become leader: for [`STEP_DOWN_WINDOW`], or until another node
    /// leads, no heartbeats, no writes and no own candidacy here. `to` campaigns in
    /// the meantime. Answers at once.
    ///
    /// Writes stop first, then it waits (bounded) until `to` has the whole log: a
    /// candidate with a shorter log than a voter's cannot win, and would only keep
    /// raising the term. Answers with the last log index `to` must reach.
    pub async fn step_down(self: &Arc<Self>, to: NodeId) -> Result<u64, String> {
        let leader = self.raft.metrics().borrow().current_leader;
        if leader != Some(self.me) {
            return Err(format!("node {} is not the leader", self.me));
        }
        // A VRRP master keeps Raft leadership, so that its stick writes stay local. Two
        // masters exist only while VRRP settles (after a partition heals); handing over
        // to the one about to be preempted left the cluster without heartbeats for the
        // whole window, a candidate raising the term, once that one went back to backup.
        // The asking node asks again, and gets it once this node is backup.
        if self.is_vrrp_master() {
            return Err(format!(
                "node {} is the VRRP master: it keeps Raft leadership",
                self.me
            ));
        }
        {
            let mut until = self.stepping_down.lock();
            if until.is_none() {
                *until = Some(tokio::time::Instant::now() + STEP_DOWN_WINDOW);
            } else {
                return Ok(self.raft.metrics().borrow().last_log_index.unwrap_or(0));
            }
        }
        tracing::info!(to, "handing raft leadership over");
        let mut metrics = self.raft.metrics();
        let caught_up = |m: &crate::types::RaftMetrics| {
            let last = m.last_log_index;
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(&to).copied().flatten())
                .map(|l| l.index);
            last.is_none() || matched >= last
        };
        let _ = tokio::time::timeout(STEP_DOWN_CATCH_UP, metrics.wait_for(caught_up)).await;
        let last = self.raft.metrics().borrow().last_log_index.unwrap_or(0);
        self.raft.runtime_config().heartbeat(false);
        self.raft.runtime_config().elect(false);
        let me = self.clone();
        tokio::spawn(async move {
            let mut metrics = me.raft.metrics();
            let deadline = tokio::time::Instant::now() + STEP_DOWN_WINDOW;
            loop {
                let leader = metrics.borrow().current_leader;
                if leader.is_some() && leader != Some(me.me) {
                    break;
                }
                // VRRP made this node master again (the successor was preempted): it
                // leads on rather than stay silent for the rest of the window.
                if me.is_vrrp_master() {
                    break;
                }
                let wake = deadline.min(tokio::time::Instant::now() + STEP_DOWN_RECHECK);
                if let Ok(Err(_)) = tokio::time::timeout_at(wake, metrics.changed()).await {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
            }
            me.raft.runtime_config().heartbeat(true);
            me.raft.runtime_config().elect(true);
            *me.stepping_down.lock() = None;
            let leader = metrics.borrow().current_leader;
            tracing::info!(?leader, "raft leadership hand-over finished");
        });
        Ok(last)
    }
}

/// Writes through this node's Raft if it leads; bounded so that a leader without a
/// quorum answers instead of hanging.
pub async fn propose_local(raft: &Raft, command: Command) -> Result<Response, ProposeError> {
    use openraft::error::ClientWriteError;
    match tokio::time::timeout(PROPOSE_TIMEOUT, raft.client_write(command)).await {
        Err(_) => Err(ProposeError::Unavailable(format!(
            "not committed within {PROPOSE_TIMEOUT:?}: a majority of the cluster is unreachable"
        ))),
        Ok(Ok(written)) => Ok(written.data),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
            Err(ProposeError::NotLeader {
                leader: f.leader_id,
            })
        }
        Ok(Err(e)) => Err(ProposeError::Unavailable(e.to_string())),
    }
}

/// Applies a membership change through this node's Raft if it leads. Adding waits
/// until the new node has caught up as a learner, then makes it a voter.
pub async fn change_membership_local(
    raft: &Raft,
    change: MembershipChange,
) -> Result<(), ProposeError> {
    use openraft::error::ClientWriteError;
    use openraft::ChangeMembers;
    let map = |e: RaftError<NodeId, ClientWriteError<NodeId, Member>>| match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ProposeError::NotLeader {
            leader: f.leader_id,
        },
        other => ProposeError::Unavailable(other.to_string()),
    };
    match change {
        MembershipChange::Add { id, member } => {
            // Bounded: a node that cannot be reached or cannot catch up is taken out
            // again instead of being replicated to forever.
            match tokio::time::timeout(LEARNER_CATCH_UP, raft.add_learner(id, member, true)).await {
                Ok(result) => {
                    result.map_err(map)?;
                }
                Err(_) => {
                    let _ = raft
                        .change_membership(ChangeMembers::RemoveNodes([id].into()), false)
                        .await;
                    return Err(ProposeError::Unavailable(format!(
                        "node {id} did not catch up within {LEARNER_CATCH_UP:?} (is it running with [cluster] join = true, and reachable?); it was not added"
                    )));
                }
            }
            raft.change_membership(ChangeMembers::AddVoterIds([id].into()), false)
                .await
                .map_err(map)?;
        }
        MembershipChange::Remove { id } => {
            let known = raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .get_node(&id)
                .is_some();
            if !known {
                return Err(ProposeError::NoSuchMember(id));
            }
            raft.change_membership(ChangeMembers::RemoveVoters([id].into()), false)
                .await
                .map_err(map)?;
            raft.change_membership(ChangeMembers::RemoveNodes([id].into()), false)
                .await
                .map_err(map)?;
        }
    }
    Ok(())
}

/// How long an added node may take to catch up before the change is abandoned.
pub const LEARNER_CATCH_UP: Duration = Duration::from_secs(30);

/// How long a write may wait for a commit before the caller is told there is no quorum.
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Creates one client per peer for openraft, and for forwarding proposals.
#[derive(Clone)]
pub struct Network {
    from: NodeId,
    token: Arc<[u8]>,
}

impl Network {
    pub fn new(from: NodeId, token: Arc<[u8]>) -> Self {
        Network { from, token }
    }

    pub fn client(&self, target: NodeId, addr: &str) -> PeerClient {
        PeerClient {
            from: self.from,
            target,
            addr: addr.to_string(),
            token: self.token.clone(),
            stream: None,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerClient {
        self.client(target, &node.raft)
    }
}

/// One persistent, authenticated connection to a peer, reopened on failure.
pub struct PeerClient {
    from: NodeId,
    target: NodeId,
    addr: String,
    token: Arc<[u8]>,
    stream: Option<TcpStream>,
}

impl PeerClient {
    pub async fn call(&mut self, request: &Request, ttl: Duration) -> Result<Reply, WireError> {
        let result = tokio::time::timeout(ttl, self.exchange(request))
            .await
            .unwrap_or(Err(WireError::Timeout));
        if result.is_err() {
            // The connection may hold half a frame: never reuse it.
            self.stream = None;
        }
        result
    }

    async fn exchange(&mut self, request: &Request) -> Result<Reply, WireError> {
        if self.stream.is_none() {
            let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr))
                .await
                .map_err(|_| WireError::Timeout)??;
            let _ = stream.set_nodelay(true);
            client_handshake(&mut stream, self.from, self.target, &self.token).await?;
            self.stream = Some(stream);
        }
        let stream = self.stream.as_mut().ok_or(WireError::Unexpected)?;
        write_frame(stream, request).await?;
        read_frame(stream, MAX_FRAME).await
    }

    fn unreachable<E: std::error::Error>(e: WireError) -> RPCError<NodeId, Member, E> {
        match e {
            WireError::Io(_)
            | WireError::Timeout
            | WireError::Auth
            | WireError::WrongNode { .. } => RPCError::Unreachable(Unreachable::new(&e)),
            _ => RPCError::Network(NetworkError::new(&e)),
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        match self
            .call(&Request::AppendEntries(rpc), option.hard_ttl())
            .await
        {
            Ok(Reply::AppendEntries(Ok(r))) => Ok(r),
            Ok(Reply::AppendEntries(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(Self::unreachable(WireError::Unexpected)),
            Err(e) => Err(Self::unreachable(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self
            .call(&Request::InstallSnapshot(rpc), option.hard_ttl())
            .await
        {
            Ok(Reply::InstallSnapshot(Ok(r))) => Ok(r),
            Ok(Reply::InstallSnapshot(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(Self::unreachable(WireError::Unexpected)),
            Err(e) => Err(Self::unreachable(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        match self.call(&Request::Vote(rpc), option.hard_ttl()).await {
            Ok(Reply::Vote(Ok(r))) => Ok(r),
            Ok(Reply::Vote(Err(e))) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Ok(_) => Err(Self::unreachable(WireError::Unexpected)),
            Err(e) => Err(Self::unreachable(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::decode;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn handshake_succeeds_with_the_same_token() {
        let (mut c, mut s) = pair().await;
        let server = tokio::spawn(async move { server_handshake(&mut s, 1, b"secret").await });
        client_handshake(&mut c, 7, 1, b"secret").await.unwrap();
        assert_eq!(server.await.unwrap().unwrap(), 7);
    }

    #[tokio::test]
    async fn handshake_fails_both_ways_with_a_wrong_token() {
        let (mut c, mut s) = pair().await;
        let server = tokio::spawn(async move { server_handshake(&mut s, 1, b"secret").await });
        let client = client_handshake(&mut c, 7, 1, b"guess").await;
        assert!(matches!(server.await.unwrap(), Err(WireError::Auth)));
        assert!(matches!(client, Err(WireError::Auth)));
    }

    #[tokio::test]
    async fn handshake_refuses_a_client_that_wanted_another_node() {
        let (mut c, mut s) = pair().await;
        let server = tokio::spawn(async move { server_handshake(&mut s, 1, b"secret").await });
        let client = client_handshake(&mut c, 7, 2, b"secret").await;
        assert!(matches!(
            server.await.unwrap(),
            Err(WireError::WrongNode {
                wanted: 2,
                actual: 1
            })
        ));
        assert!(client.is_err());
    }

    #[tokio::test]
    async fn oversized_and_garbage_frames_are_rejected_before_allocation() {
        let (mut c, mut s) = pair().await;
        c.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let r: Result<ClientHello, _> = read_frame(&mut s, MAX_HELLO_FRAME).await;
        assert!(matches!(r, Err(WireError::TooLarge(_, MAX_HELLO_FRAME))));

        let (mut c, mut s) = pair().await;
        c.write_all(&[0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff])
            .await
            .unwrap();
        let r: Result<ClientHello, _> = read_frame(&mut s, MAX_HELLO_FRAME).await;
        assert!(matches!(r, Err(WireError::Decode(_))));

        let (mut c, mut s) = pair().await;
        c.write_all(&[0, 0, 0, 9, 1, 2]).await.unwrap();
        drop(c);
        let r: Result<ClientHello, _> = read_frame(&mut s, MAX_HELLO_FRAME).await;
        assert!(matches!(r, Err(WireError::Io(_))), "truncated frame");
    }

    #[test]
    fn requests_round_trip_through_bincode() {
        let cmd = Command::Sweep { now_ms: 42 };
        let bytes = encode(&Request::Propose(cmd.clone())).unwrap();
        match decode::<Request>(&bytes).unwrap() {
            Request::Propose(c) => assert_eq!(c, cmd),
            _ => panic!("wrong variant"),
        }
    }
}
