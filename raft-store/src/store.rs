//! Durable Raft storage in one redb file under `data_dir`: the log, the vote, the
//! committed index and the current snapshot. The state machine lives in memory and is
//! rebuilt on start from the stored snapshot plus the committed log after it.
//!
//! ```text
//!  redb "raft.redb"
//!   ├── log:  index → bincode(Entry)
//!   └── meta: "vote" | "committed" | "last_purged" | "snapshot" → bincode(..)
//! ```
//!
//! redb commits are fsync'd (`Durability::Immediate`, its default), so an entry that
//! openraft was told is flushed survives a crash. Calls are short and made on openraft's
//! own tasks; they block for one fsync at most.

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine};
use openraft::{
    AnyError, EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader,
    RaftSnapshotBuilder, StorageIOError,
};
use parking_lot::RwLock;
use redb::{Database, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::state::{Change, ClusterState, Response};
use crate::types::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig, Vote,
};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Db(String),
    #[error("storage: raft.redb is open in another process")]
    AlreadyOpen,
    #[error("encoding: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("decoding: {0}")]
    Decode(#[from] bincode::error::DecodeError),
}

macro_rules! db_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.to_string())
            }
        }
    )*};
}
db_error_from!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, bincode::error::EncodeError> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::error::DecodeError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard()).map(|(v, _)| v)
}

fn io_error(subject: ErrorSubject<u64>, verb: ErrorVerb, e: StoreError) -> StorageError {
    StorageError::IO {
        source: StorageIOError::new(subject, verb, AnyError::new(&e)),
    }
}

fn read_logs_error(e: impl Into<StoreError>) -> StorageError {
    io_error(ErrorSubject::Logs, ErrorVerb::Read, e.into())
}

fn write_logs_error(e: impl Into<StoreError>) -> StorageError {
    io_error(ErrorSubject::Logs, ErrorVerb::Write, e.into())
}

/// Runs CPU- or fsync-heavy storage work off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Db(format!("storage task failed: {e}")))?
}

/// Opens (or creates) the store in `data_dir`.
pub fn open(data_dir: &Path) -> Result<Arc<Database>, StoreError> {
    std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Db(e.to_string()))?;
    let db = match Database::create(data_dir.join("raft.redb")) {
        Ok(db) => db,
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(StoreError::AlreadyOpen),
        Err(e) => return Err(e.into()),
    };
    let tx = db.begin_write()?;
    tx.open_table(LOG)?;
    tx.open_table(META)?;
    tx.commit()?;
    Ok(Arc::new(db))
}

fn get_meta<T: DeserializeOwned>(db: &Database, key: &str) -> Result<Option<T>, StoreError> {
    let tx = db.begin_read()?;
    let table = tx.open_table(META)?;
    match table.get(key)? {
        Some(bytes) => Ok(Some(decode(bytes.value())?)),
        None => Ok(None),
    }
}

fn put_meta<T: Serialize>(db: &Database, key: &str, value: &T) -> Result<(), StoreError> {
    let bytes = encode(value)?;
    let tx = db.begin_write()?;
    tx.open_table(META)?.insert(key, bytes.as_slice())?;
    tx.commit()?;
    Ok(())
}

/// True when this data_dir has never been part of a cluster (no vote, no log).
pub fn is_empty(db: &Database) -> Result<bool, StoreError> {
    let tx = db.begin_read()?;
    let log_empty = tx.open_table(LOG)?.first()?.is_none();
    let no_vote = tx.open_table(META)?.get("vote")?.is_none();
    Ok(log_empty && no_vote)
}

#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    pub fn new(db: Arc<Database>) -> Self {
        LogStore { db }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let tx = self.db.begin_read().map_err(read_logs_error)?;
        let table = tx.open_table(LOG).map_err(read_logs_error)?;
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let mut entries = Vec::new();
        for item in table.range(start..).map_err(read_logs_error)? {
            let (key, value) = item.map_err(read_logs_error)?;
            if !range.contains(&key.value()) {
                break;
            }
            entries.push(decode(value.value()).map_err(read_logs_error)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> =
            get_meta(&self.db, "last_purged").map_err(read_logs_error)?;
        let tx = self.db.begin_read().map_err(read_logs_error)?;
        let table = tx.open_table(LOG).map_err(read_logs_error)?;
        let last = match table.last().map_err(read_logs_error)? {
            Some((_, value)) => {
                let entry: Entry = decode(value.value()).map_err(read_logs_error)?;
                Some(entry.log_id)
            }
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        put_meta(&self.db, "vote", vote)
            .map_err(|e| io_error(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        get_meta(&self.db, "vote").map_err(|e| io_error(ErrorSubject::Vote, ErrorVerb::Read, e))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        put_meta(&self.db, "committed", &committed).map_err(write_logs_error)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(get_meta::<Option<LogId>>(&self.db, "committed")
            .map_err(read_logs_error)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Encoding and the fsync run on a blocking thread: they must not stall the
        // tasks that answer heartbeats.
        let entries: Vec<Entry> = entries.into_iter().collect();
        let db = self.db.clone();
        let result = blocking(move || -> Result<(), StoreError> {
            let tx = db.begin_write()?;
            {
                let mut table = tx.open_table(LOG)?;
                for entry in &entries {
                    table.insert(entry.log_id.index, encode(entry)?.as_slice())?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await;
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(write_logs_error(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let tx = self.db.begin_write().map_err(write_logs_error)?;
        tx.open_table(LOG)
            .map_err(write_logs_error)?
            .retain_in(log_id.index.., |_, _| false)
            .map_err(write_logs_error)?;
        tx.commit().map_err(write_logs_error)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        put_meta(&self.db, "last_purged", &log_id).map_err(write_logs_error)?;
        let tx = self.db.begin_write().map_err(write_logs_error)?;
        tx.open_table(LOG)
            .map_err(write_logs_error)?
            .retain_in(..=log_id.index, |_, _| false)
            .map_err(write_logs_error)?;
        tx.commit().map_err(write_logs_error)
    }
}

/// Mirrors committed changes somewhere else (the node's data plane). Called with the
/// state machine locked: implementations must be quick and must not read the replica.
pub trait Observer: Send + Sync + 'static {
    fn on_change(&self, state: &ClusterState, change: &Change);
    /// The whole state was replaced (start-up restore, snapshot installed).
    fn on_reset(&self, state: &ClusterState);
}

/// The applied state, shared between openraft's state machine task and readers.
#[derive(Default)]
pub struct Applied {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub state: ClusterState,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    state: ClusterState,
}

#[derive(Clone)]
pub struct StateMachine {
    db: Arc<Database>,
    applied: Arc<RwLock<Applied>>,
    observer: Arc<dyn Observer>,
}

impl StateMachine {
    /// Restores the state from the stored snapshot, if any; openraft then re-applies the
    /// committed log after it.
    pub fn open(db: Arc<Database>, observer: Arc<dyn Observer>) -> Result<Self, StoreError> {
        let mut applied = Applied::default();
        if let Some(stored) = get_meta::<StoredSnapshot>(&db, "snapshot")? {
            let body: SnapshotBody = decode(&stored.data)?;
            applied.last_applied = body.last_applied;
            applied.membership = body.membership;
            applied.state = body.state;
        }
        observer.on_reset(&applied.state);
        Ok(StateMachine {
            db,
            applied: Arc::new(RwLock::new(applied)),
            observer,
        })
    }

    pub fn applied(&self) -> Arc<RwLock<Applied>> {
        self.applied.clone()
    }
}

fn sm_error(verb: ErrorVerb, e: impl Into<StoreError>) -> StorageError {
    io_error(ErrorSubject::StateMachine, verb, e.into())
}

fn snapshot_error(verb: ErrorVerb, e: impl Into<StoreError>) -> StorageError {
    io_error(ErrorSubject::Snapshot(None), verb, e.into())
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let started = std::time::Instant::now();
        // Copy under the lock, encode outside it: applying goes on meanwhile.
        let (body, entries) = {
            let applied = self.applied.read();
            let body = SnapshotBody {
                last_applied: applied.last_applied,
                membership: applied.membership.clone(),
                state: applied.state.clone(),
            };
            (body, applied.state.stick_len())
        };
        let snapshot_id = match body.last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, body.state.revision),
            None => format!("empty-{}", body.state.revision),
        };
        let meta = SnapshotMeta {
            last_log_id: body.last_applied,
            last_membership: body.membership.clone(),
            snapshot_id,
        };
        let db = self.db.clone();
        let stored_meta = meta.clone();
        let data = blocking(move || {
            let data = encode(&body)?;
            put_meta(
                &db,
                "snapshot",
                &StoredSnapshot {
                    meta: stored_meta,
                    data: data.clone(),
                },
            )?;
            Ok(data)
        })
        .await
        .map_err(|e| snapshot_error(ErrorVerb::Write, e))?;
        tracing::info!(
            snapshot = %meta.snapshot_id,
            bytes = data.len(),
            stick_entries = entries,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "snapshot built"
        );
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = self.applied.read();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut applied = self.applied.write();
        let mut responses = Vec::new();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => responses.push(Response {
                    revision: applied.state.revision,
                    error: None,
                }),
                EntryPayload::Normal(command) => {
                    let (response, change) = applied.state.apply(command);
                    if change != Change::None {
                        self.observer.on_change(&applied.state, &change);
                    }
                    responses.push(response);
                }
                EntryPayload::Membership(membership) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                    responses.push(Response {
                        revision: applied.state.revision,
                        error: None,
                    });
                }
            }
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let started = std::time::Instant::now();
        let data = snapshot.into_inner();
        let db = self.db.clone();
        let stored_meta = meta.clone();
        let body: SnapshotBody = blocking(move || {
            let body: SnapshotBody = decode(&data)?;
            put_meta(
                &db,
                "snapshot",
                &StoredSnapshot {
                    meta: stored_meta,
                    data,
                },
            )?;
            Ok(body)
        })
        .await
        .map_err(|e| snapshot_error(ErrorVerb::Write, e))?;
        let mut applied = self.applied.write();
        applied.last_applied = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        applied.state = body.state;
        self.observer.on_reset(&applied.state);
        tracing::info!(
            snapshot = %meta.snapshot_id,
            stick_entries = applied.state.stick_len(),
            revision = applied.state.revision,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "snapshot installed"
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let stored: Option<StoredSnapshot> =
            get_meta(&self.db, "snapshot").map_err(|e| sm_error(ErrorVerb::Read, e))?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

/// An observer that ignores everything (witness nodes, tests).
pub struct NoObserver;

impl Observer for NoObserver {
    fn on_change(&self, _: &ClusterState, _: &Change) {}
    fn on_reset(&self, _: &ClusterState) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::StorageError as OpenraftStorageError;

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, StateMachine), OpenraftStorageError<u64>>
        {
            let dir = tempfile::tempdir().expect("tempdir");
            let db = open(dir.path()).expect("open");
            let sm = StateMachine::open(db.clone(), Arc::new(NoObserver)).expect("sm");
            Ok((dir, LogStore::new(db), sm))
        }
    }

    /// openraft's own conformance suite for log stores and state machines.
    #[test]
    fn openraft_storage_suite() {
        // test_all runs its own runtime.
        Suite::test_all(Builder).expect("storage suite");
    }
}
