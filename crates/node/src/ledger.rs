//! The node's view of the chain: the committed (finalized) state, the speculative results of
//! blocks that are proposed or verified but not yet final, the mempool, and the indexes the RPC
//! serves. Consensus, the finalizer and the RPC server share one [`Ledger`].
//!
//! Locks: `store` (async) is taken before `history` (async), `inner` and `state`; `inner`
//! before `state`. The head, the store and the in-memory `state` advance together under the
//! store's write lock, so whoever holds its read lock sees one consistent version: executions
//! (whose roots are merkleized over the applied store) and proofs (which must match the head
//! they are served with). Finalizing records the block in the history before it takes the
//! write lock, so the history's syncs hold up no execution.
//!
//! Invariants: `store` and `state` are exactly the genesis state plus every finalized block up
//! to `head`, applied once each in height order, one durable store batch per block; a
//! speculative result holds its block's own writes and their batch (chained to its parent's);
//! the state a child executes over is the committed state plus the writes of its unfinalized
//! ancestors, gathered by walking parent links to the head (so bounded by the unfinalized
//! depth); a speculative block whose ancestry no longer reaches the head (a dead fork) is
//! dropped when a block is finalized.

use crate::{
    history::{BlockRecord, DiskHistory, HeaderRecord, History, HistoryError},
    mempool::{AdmissionError, Mempool},
};
use phala_api::rpc::{FinalizedEvent, HeaderJson, TxFailure, TxStatus};
use phala_chain::{
    BlockContext, Runtime, TxError, balances,
    commitment::{self, Batch, StateProof, Store, StoreError},
    merkle,
    module::Event,
    mq::Outbox,
    registry::{self, RegistrationContext},
    state::{Changes, Overlay, Pending, StateRead},
};
use phala_types::RegistryCall;
use phala_types::{
    Address, Block, Call, Digest, DownwardMessage, Header, SignedTransaction, limits,
};
use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard},
};
use tokio::sync::broadcast;

/// The committed key-value pairs, in memory for synchronous reads during execution.
type Entries = BTreeMap<Vec<u8>, Vec<u8>>;

/// A block's execution result kept until the block is finalized or abandoned.
struct Speculative {
    header: Header,
    /// The block's own writes.
    changes: Changes,
    /// The block's writes merkleized over its parent's batch.
    batch: Batch,
    outbox: Arc<BlockOutbox>,
    failures: Vec<(u32, TxError)>,
    events: Vec<(u32, Event)>,
}

struct Inner {
    head: Header,
    head_digest: Digest,
    speculative: HashMap<Digest, Speculative>,
    mempool: Mempool,
    /// The sequence number the next finalized block's first transaction gets.
    next_tx: u64,
    replaying: bool,
    /// Client transactions admitted here and not yet relayed to peers.
    gossip: Vec<SignedTransaction>,
    /// Test hook: count invariant violations instead of trusting them.
    audit: Option<Audit>,
    /// Test hook: propose wrong blocks, as a Byzantine validator would.
    misbehaviour: Option<Misbehaviour>,
}

/// How a Byzantine validator's proposals are wrong (a test hook: see
/// [`Ledger::misbehave_for_testing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// A state root that execution does not give.
    WrongStateRoot,
    /// A transaction with a broken signature, under a header that commits to it.
    InvalidTransaction,
    /// Timestamps too close to the parent's, far in the future, or just inside the drift
    /// honest validators tolerate, in turn.
    TimestampGames,
}

/// Invariant violations seen while applying finalized blocks (tests turn this on).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Audit {
    /// Blocks after which balances plus burned fees differed from the total supply.
    pub issuance_violations: u64,
    /// Transactions finalized a second time.
    pub duplicate_transactions: u64,
}

/// Why a proposed block is refused.
#[derive(Debug, thiserror::Error)]
pub enum BlockRejection {
    #[error("unknown parent")]
    UnknownParent,
    #[error("{0}")]
    Header(&'static str),
    #[error(transparent)]
    Invalid(#[from] phala_chain::InvalidBlock),
    #[error("the state database failed: {0}")]
    Store(#[from] StoreError),
}

/// A finalized block that does not extend the head or does not re-execute to its roots: the
/// node cannot continue safely.
#[derive(Debug, thiserror::Error)]
#[error("finalized block {height} cannot be applied: {reason}")]
pub struct FatalBlock {
    pub height: u64,
    pub reason: String,
}

/// Shared chain state of one node.
pub struct Ledger {
    runtime: Runtime,
    block_interval_ms: u64,
    store: tokio::sync::RwLock<Box<dyn Store>>,
    history: tokio::sync::RwLock<Box<dyn History>>,
    /// Finalized blocks kept in the history (`None`: all of them).
    retention: Option<u64>,
    state: RwLock<Entries>,
    inner: Mutex<Inner>,
    events: broadcast::Sender<FinalizedEvent>,
    /// Quote verifications at admission: at most [`QUOTES_PER_SECOND`] however many clients
    /// and peers send registrations.
    quotes: Mutex<crate::rpc_budget::Bucket>,
}

/// Registrations whose evidence the node verifies per second at admission (a DCAP quote takes
/// about a millisecond); more wait, refused as `busy` with the time to retry.
pub const QUOTES_PER_SECOND: u32 = 50;

/// Why a ledger cannot open its state.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error("the data directory holds another chain (its genesis differs from the spec's)")]
    OtherChain,
    #[error("the state database is at block {height} but the history does not match it")]
    Inconsistent { height: u64 },
    #[error("cannot build the genesis state: {0}")]
    Genesis(String),
}

/// What a ledger must not lose, on disk: the state database and the history of finalized
/// blocks, kept for `retention` blocks (`None`: archive mode, everything).
pub struct Storage {
    pub store: Box<dyn Store>,
    pub history: Box<dyn History>,
    pub retention: Option<u64>,
}

impl Ledger {
    /// Opens a ledger where its storage left it: at the last block whose state was committed
    /// (a fresh storage gets the genesis block). Nothing is replayed: the time this takes
    /// depends on the size of the state, not on the length of the chain.
    pub async fn open(
        spec: &crate::spec::ChainSpec,
        storage: Storage,
    ) -> Result<(Self, Block), OpenError> {
        let Storage {
            mut store,
            mut history,
            retention,
        } = storage;
        let (changes, genesis) = spec
            .genesis()
            .map_err(|e| OpenError::Genesis(e.to_string()))?;
        if store.height().await?.is_none() {
            let record = BlockRecord {
                header: HeaderRecord {
                    header: genesis.header.clone(),
                    first_tx: 0,
                    transactions: 0,
                },
                messages: Vec::new(),
            };
            history.record(record, Vec::new()).await?;
            let batch = store.merkleize(None, &changes, 0).await?;
            store.apply(batch).await?;
        }
        let height = store.height().await?.unwrap_or(0);
        let head = history
            .header(height)
            .await?
            .ok_or(OpenError::Inconsistent { height })?;
        if head.header.state_root != store.root() {
            return Err(OpenError::Inconsistent { height });
        }
        if let Some(first) = history.header(0).await?
            && first.header != genesis.header
        {
            return Err(OpenError::OtherChain);
        }
        let entries = store.load().await?;
        let runtime = Runtime::new(spec.hash(), spec.genesis.clone());
        let (events, _) = broadcast::channel(1024);
        let ledger = Ledger {
            runtime,
            block_interval_ms: spec.block_interval_ms,
            store: tokio::sync::RwLock::new(store),
            history: tokio::sync::RwLock::new(history),
            retention,
            state: RwLock::new(entries),
            inner: Mutex::new(Inner {
                head_digest: head.header.hash(),
                next_tx: head.next_tx(),
                head: head.header,
                speculative: HashMap::new(),
                mempool: Mempool::default(),
                replaying: true,
                gossip: Vec::new(),
                audit: None,
                misbehaviour: None,
            }),
            events,
            quotes: Mutex::new(crate::rpc_budget::Bucket::new(
                QUOTES_PER_SECOND,
                2 * QUOTES_PER_SECOND,
            )),
        };
        Ok((ledger, genesis))
    }

    /// Opens a ledger on the storage of a commonware runtime, in partitions prefixed
    /// `partition` (see [`Ledger::open`]).
    pub async fn open_on<E: commonware_storage::Context + commonware_runtime::Spawner>(
        context: E,
        partition: &str,
        spec: &crate::spec::ChainSpec,
        retention: Option<u64>,
    ) -> Result<(Self, Block), OpenError> {
        let store = commitment::open(context.child("state"), &format!("{partition}-state")).await?;
        let history =
            DiskHistory::open(context.child("history"), &format!("{partition}-history")).await?;
        let storage = Storage {
            store: Box::new(store),
            history: Box::new(history),
            retention,
        };
        Ledger::open(spec, storage).await
    }

    /// A ledger at the genesis of `spec` over a test database on its own thread and a history
    /// in memory (test-only).
    #[cfg(any(test, feature = "mocks"))]
    pub async fn for_testing(spec: &crate::spec::ChainSpec) -> (Self, Block) {
        let storage = Storage {
            store: Box::new(phala_chain::commitment::mocks::RemoteStore::start()),
            history: Box::new(crate::history::MemoryHistory::default()),
            retention: None,
        };
        Ledger::open(spec, storage)
            .await
            .expect("a fresh store opens")
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn state(&self) -> RwLockReadGuard<'_, Entries> {
        self.state
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    pub fn block_interval_ms(&self) -> u64 {
        self.block_interval_ms
    }

    /// The last finalized header.
    pub fn head(&self) -> Header {
        self.inner().head.clone()
    }

    /// Whether a block's result is known (it is the head or was executed speculatively).
    pub fn knows(&self, digest: &Digest) -> bool {
        let inner = self.inner();
        inner.head_digest == *digest || inner.speculative.contains_key(digest)
    }

    /// The header of a known block.
    pub fn known_header(&self, digest: &Digest) -> Option<Header> {
        let inner = self.inner();
        if inner.head_digest == *digest {
            return Some(inner.head.clone());
        }
        inner.speculative.get(digest).map(|s| s.header.clone())
    }

    /// The writes from the committed state through `digest` (its unfinalized ancestors' and
    /// its own, later ones winning), and its batch (`None`: it is the head, whose state is the
    /// applied store). `None` if its ancestry does not reach the head.
    fn changes_to(&self, digest: &Digest) -> Option<(Changes, Option<Batch>)> {
        let inner = self.inner();
        let mut chain = Vec::new();
        let mut cursor = *digest;
        while cursor != inner.head_digest {
            let block = inner.speculative.get(&cursor)?;
            chain.push(block);
            cursor = block.header.parent;
        }
        let batch = chain.first().map(|block| block.batch.clone());
        let mut pending = Changes::new();
        for block in chain.into_iter().rev() {
            pending.extend(block.changes.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        Some((pending, batch))
    }

    pub fn set_replaying(&self, replaying: bool) {
        self.inner().replaying = replaying;
    }

    pub fn replaying(&self) -> bool {
        self.inner().replaying
    }

    /// Builds the body and header of a block on `parent` from the mempool.
    pub async fn build(&self, parent: &Header, ctx: BlockContext) -> Option<Block> {
        let store = self.store.read().await;
        let parent_digest = parent.hash();
        let (pending, parent_batch) = self.changes_to(&parent_digest)?;
        let (txs, executed, dropped) = {
            let state = self.state();
            let parent_state = Pending {
                base: &*state,
                changes: &pending,
            };
            // Senders' nonces as of the parent.
            let candidates = {
                let overlay = Overlay::new(&parent_state);
                self.inner()
                    .mempool
                    .candidates(limits::MAX_BLOCK_TXS, |sender| {
                        balances::account(&overlay, sender).nonce
                    })
            };
            self.runtime
                .build_block(&parent_state, Changes::new(), &ctx, candidates)
        };
        let batch = match store
            .merkleize(parent_batch.as_ref(), &executed.changes, ctx.height)
            .await
        {
            Ok(batch) => batch,
            Err(error) => {
                tracing::warn!(%error, height = ctx.height, "cannot merkleize a proposal");
                return None;
            }
        };
        {
            let mut inner = self.inner();
            for (stx, error) in dropped {
                // A lower nonce may be in an unfinalized ancestor, a higher one waits its turn:
                // both stay until finalization settles them.
                if !matches!(error, TxError::BadNonce { .. }) {
                    inner.mempool.remove(&stx.hash(), Some(&error));
                }
            }
        }
        let outbox = Arc::new(BlockOutbox::new(executed.outbox));
        let mut txs = txs;
        let mut header = Header {
            height: ctx.height,
            parent: parent_digest,
            timestamp: ctx.timestamp,
            tx_root: Digest([0; 32]), // set by `Block::seal`
            state_root: batch.root(),
            outbox_root: outbox.tree.root(),
            epoch: 0,
            proposer: ctx.proposer,
        };
        let misbehaviour = self.inner().misbehaviour;
        if let Some(misbehaviour) = misbehaviour {
            misbehave(misbehaviour, parent, &mut header, &mut txs);
        }
        let block = Block::seal(header, txs);
        self.inner().speculative.insert(
            block.header.hash(),
            Speculative {
                header: block.header.clone(),
                changes: executed.changes,
                batch,
                outbox,
                failures: executed.failures,
                events: executed.events,
            },
        );
        Some(block)
    }

    /// Fully checks a proposed block on a known parent and keeps its result.
    pub async fn execute(&self, block: &Block, leader: &Address) -> Result<(), BlockRejection> {
        let store = self.store.read().await;
        let digest = block.header.hash();
        if self.knows(&digest) {
            return Ok(());
        }
        let parent = self
            .known_header(&block.header.parent)
            .ok_or(BlockRejection::UnknownParent)?;
        let header = &block.header;
        self.check_header(header, &parent, leader)?;
        if !block.body_matches_header() {
            return Err(BlockRejection::Header(
                "transaction root does not match the body",
            ));
        }
        let (pending, parent_batch) = self
            .changes_to(&header.parent)
            .ok_or(BlockRejection::UnknownParent)?;
        self.verify_unseen_signatures(block)?;
        let ctx = BlockContext {
            height: header.height,
            timestamp: header.timestamp,
            proposer: header.proposer,
        };
        let executed = {
            let state = self.state();
            let parent_state = Pending {
                base: &*state,
                changes: &pending,
            };
            self.runtime
                .replay_block(&parent_state, Changes::new(), &ctx, &block.transactions)?
        };
        let batch = store
            .merkleize(parent_batch.as_ref(), &executed.changes, header.height)
            .await?;
        if header.state_root != batch.root() {
            return Err(BlockRejection::Header(
                "state root does not match execution",
            ));
        }
        let outbox = Arc::new(BlockOutbox::new(executed.outbox));
        if header.outbox_root != outbox.tree.root() {
            return Err(BlockRejection::Header(
                "outbox root does not match execution",
            ));
        }
        self.inner().speculative.insert(
            digest,
            Speculative {
                header: header.clone(),
                changes: executed.changes,
                batch,
                outbox,
                failures: executed.failures,
                events: executed.events,
            },
        );
        Ok(())
    }

    /// The checks of a proposal's header that need no execution.
    fn check_header(
        &self,
        header: &Header,
        parent: &Header,
        leader: &Address,
    ) -> Result<(), BlockRejection> {
        if header.height != parent.height + 1 {
            return Err(BlockRejection::Header(
                "height is not the parent's plus one",
            ));
        }
        if header.epoch != 0 {
            return Err(BlockRejection::Header("wrong epoch"));
        }
        if header.proposer != *leader {
            return Err(BlockRejection::Header("proposer is not the round's leader"));
        }
        if header.timestamp < parent.timestamp + self.block_interval_ms {
            return Err(BlockRejection::Header(
                "timestamp too close to the parent's",
            ));
        }
        Ok(())
    }

    /// Checks the signatures of a block's transactions, in one batch, except those this node
    /// already verified when admitting them to its mempool (the same hash is the same signed
    /// bytes): with gossip, most signatures are checked once per node, not twice.
    fn verify_unseen_signatures(&self, block: &Block) -> Result<(), BlockRejection> {
        let unseen: Vec<(usize, SignedTransaction)> = {
            let inner = self.inner();
            block
                .transactions
                .iter()
                .zip(block.tx_hashes())
                .enumerate()
                .filter(|(_, (_, hash))| !inner.mempool.contains(hash))
                .map(|(i, (stx, _))| (i, stx.clone()))
                .collect()
        };
        let batch: Vec<SignedTransaction> = unseen.iter().map(|(_, stx)| stx.clone()).collect();
        if phala_crypto::verify_transactions_batch(self.runtime.genesis_hash(), &batch) {
            return Ok(());
        }
        let (index, error) = unseen
            .iter()
            .find_map(|(i, stx)| self.runtime.check_stateless(stx).err().map(|e| (*i, e)))
            .unwrap_or((0, TxError::BadSignature));
        Err(phala_chain::InvalidBlock { index, error }.into())
    }

    /// Applies a finalized block: it is recorded in the history, its writes become one durable
    /// batch of the store, then the head moves. Idempotent: a block at or below the head is
    /// ignored.
    pub async fn finalize(&self, block: &Block) -> Result<(), FatalBlock> {
        let header = &block.header;
        let digest = header.hash();
        let fatal = |reason: &str| FatalBlock {
            height: header.height,
            reason: reason.into(),
        };
        let result = {
            let store = self.store.read().await;
            let (head_height, head_digest, speculative) = {
                let mut inner = self.inner();
                (
                    inner.head.height,
                    inner.head_digest,
                    inner.speculative.remove(&digest),
                )
            };
            if header.height <= head_height {
                return Ok(());
            }
            if header.parent != head_digest || header.height != head_height + 1 {
                return Err(fatal("it does not extend the finalized head"));
            }
            // Decoding refuses such bodies; this guards blocks built in memory.
            if !block.body_matches_header() {
                return Err(fatal("its transactions do not match its tx_root"));
            }
            match speculative {
                Some(result) => result,
                None => self.reexecute(&**store, block).await?,
            }
        };
        self.record(block, &result).await?;
        let store = self.store.write().await;
        self.commit(store, block, result).await?;
        self.prune_history(header.height).await
    }

    /// Commits a recorded block's writes and moves the head (under the store's write lock).
    async fn commit(
        &self,
        mut store: tokio::sync::RwLockWriteGuard<'_, Box<dyn Store>>,
        block: &Block,
        result: Speculative,
    ) -> Result<(), FatalBlock> {
        let header = &block.header;
        let digest = header.hash();
        if self.inner().head_digest != header.parent {
            return Err(FatalBlock {
                height: header.height,
                reason: "the head moved while the block was recorded".into(),
            });
        }
        apply_to_store(&mut **store, &result).await?;
        let Speculative {
            changes, outbox, ..
        } = result;
        // Head and state advance together under the store's write lock and the inner lock, so
        // no reader ever pairs the new state with the old head.
        let mut inner = self.inner();
        let nonces: Vec<(Address, u64)> = {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            for (key, value) in changes {
                match value {
                    Some(value) => state.insert(key, value),
                    None => state.remove(&key),
                };
            }
            block
                .transactions
                .iter()
                .map(|stx| (stx.tx.signer, account_in(&state, &stx.tx.signer).nonce))
                .collect()
        };
        inner.head = header.clone();
        inner.head_digest = digest;
        drop_dead_forks(&mut inner.speculative, digest);
        inner.next_tx += block.transactions.len() as u64;
        for hash in block.tx_hashes() {
            inner.mempool.remove(hash, None);
        }
        for (sender, nonce) in nonces {
            inner.mempool.prune(&sender, nonce);
        }
        inner.mempool.prune_expired(header.height + 1);
        let messages = outbox.messages.len() as u32;
        let audit = inner.audit.is_some();
        drop(inner);
        if audit
            && self.total_issuance() != phala_types::TOTAL_SUPPLY
            && let Some(audit) = self.inner().audit.as_mut()
        {
            audit.issuance_violations += 1;
        }
        let _ = self.events.send(FinalizedEvent {
            header: HeaderJson::from_header(header),
            transactions: block.transactions.len() as u32,
            messages,
        });
        Ok(())
    }

    /// Records a finalized block and its transactions' statuses in the history (before its
    /// state is committed: see `history`).
    async fn record(&self, block: &Block, result: &Speculative) -> Result<(), FatalBlock> {
        let header = &block.header;
        let fatal = |error: HistoryError| FatalBlock {
            height: header.height,
            reason: format!("the history failed: {error}"),
        };
        let (first_tx, audit) = {
            let inner = self.inner();
            (inner.next_tx, inner.audit.is_some())
        };
        let statuses = finalized_statuses(block, result);
        let record = BlockRecord {
            header: HeaderRecord {
                header: header.clone(),
                first_tx,
                transactions: block.transactions.len() as u32,
            },
            messages: result.outbox.messages.clone(),
        };
        let mut history = self.history.write().await;
        if audit {
            let mut duplicates = 0;
            for (hash, _) in &statuses {
                if history.transaction(*hash).await.map_err(fatal)?.is_some() {
                    duplicates += 1;
                }
            }
            if let Some(audit) = self.inner().audit.as_mut() {
                audit.duplicate_transactions += duplicates;
            }
        }
        history.record(record, statuses).await.map_err(fatal)
    }

    /// Forgets the history below the retention (after the block at `height` is committed, so
    /// the committed block's header is always kept and the ledger can reopen).
    async fn prune_history(&self, height: u64) -> Result<(), FatalBlock> {
        let Some(retention) = self.retention else {
            return Ok(());
        };
        if !height.is_multiple_of(PRUNE_INTERVAL) || height <= retention {
            return Ok(());
        }
        self.history
            .write()
            .await
            .prune(height - retention)
            .await
            .map_err(|error| FatalBlock {
                height,
                reason: format!("the history failed: {error}"),
            })
    }

    /// Executes a finalized block that this node never executed (it was replaying, or
    /// following) and checks it against its header.
    async fn reexecute(&self, store: &dyn Store, block: &Block) -> Result<Speculative, FatalBlock> {
        let header = &block.header;
        let fatal = |reason: String| FatalBlock {
            height: header.height,
            reason,
        };
        let ctx = BlockContext {
            height: header.height,
            timestamp: header.timestamp,
            proposer: header.proposer,
        };
        let executed = {
            let state = self.state();
            self.runtime
                .replay_block(&*state, Changes::new(), &ctx, &block.transactions)
                .map_err(|e| fatal(e.to_string()))?
        };
        let batch = store
            .merkleize(None, &executed.changes, header.height)
            .await
            .map_err(|e| fatal(e.to_string()))?;
        if batch.root() != header.state_root {
            return Err(fatal("its state root does not match re-execution".into()));
        }
        Ok(Speculative {
            header: header.clone(),
            changes: executed.changes,
            batch,
            outbox: Arc::new(BlockOutbox::new(executed.outbox)),
            failures: executed.failures,
            events: executed.events,
        })
    }

    /// Admits a client's transaction to the mempool and queues it for gossip.
    pub fn submit(&self, stx: SignedTransaction) -> Result<Digest, AdmissionError> {
        self.submit_batch(vec![stx])
            .pop()
            .expect("one result per transaction")
    }

    /// Admits a client's batch and queues the admitted transactions for gossip. Results are in
    /// input order.
    pub fn submit_batch(
        &self,
        batch: Vec<SignedTransaction>,
    ) -> Vec<Result<Digest, AdmissionError>> {
        let results = self.admit_batch(&batch);
        let admitted = batch
            .into_iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|(stx, _)| stx);
        self.inner().gossip.extend(admitted);
        results
    }

    /// Admits a batch relayed by a peer (not relayed further).
    pub fn admit_from_peer(&self, batch: Vec<SignedTransaction>) {
        self.admit_batch(&batch);
    }

    /// Admits each transaction of a batch on its own merits, checking the signatures in one
    /// batch (several times cheaper than one by one); if any is bad, each is checked alone so
    /// the good ones still get in.
    fn admit_batch(&self, batch: &[SignedTransaction]) -> Vec<Result<Digest, AdmissionError>> {
        let verified = phala_crypto::verify_transactions_batch(self.runtime.genesis_hash(), batch);
        batch
            .iter()
            .map(|stx| self.admit_checked(stx.clone(), verified))
            .collect()
    }

    /// Admits a transaction; `signature_verified` skips the signature check (done in a batch).
    fn admit_checked(
        &self,
        stx: SignedTransaction,
        signature_verified: bool,
    ) -> Result<Digest, AdmissionError> {
        let hash = stx.hash();
        let checked = if signature_verified {
            self.runtime.check_form(&stx)
        } else {
            self.runtime.check_stateless(&stx)
        };
        let checked = checked
            .map_err(AdmissionError::from)
            .and_then(|()| self.check_expensive(&stx, &hash));
        if let Err(error) = checked {
            if !matches!(
                error,
                AdmissionError::Duplicate | AdmissionError::Busy { .. }
            ) {
                self.inner().mempool.remember_rejection(
                    hash,
                    error.code().into(),
                    error.to_string(),
                );
            }
            return Err(error);
        }
        let mut inner = self.inner();
        let account = account_in(&self.state(), &stx.tx.signer);
        let height = inner.head.height + 1;
        let result = inner.mempool.admit(&self.runtime, account, height, stx);
        if let Err(error) = &result
            && !matches!(error, AdmissionError::Duplicate)
        {
            inner
                .mempool
                .remember_rejection(hash, error.code().into(), error.to_string());
        }
        result
    }

    /// Runs, once at admission, the checks that cost a leader most if they fail in a block:
    /// a registration's evidence is verified against the committed state and the head's time.
    /// Only after everything cheap: the pool's own checks (the signer can pay, its nonce is
    /// free and within reach, not a duplicate), a refusal remembered for the same bytes, the
    /// node's verification throttle, and inside `attest` the quote's claimed binding, so a
    /// stranger cannot make the node verify quotes for free.
    fn check_expensive(
        &self,
        stx: &SignedTransaction,
        hash: &Digest,
    ) -> Result<(), AdmissionError> {
        let Call::Registry(RegistryCall::RegisterWorker(signed)) = &stx.tx.call else {
            return Ok(());
        };
        {
            let inner = self.inner();
            let account = account_in(&self.state(), &stx.tx.signer);
            inner
                .mempool
                .precheck(&self.runtime, account, inner.head.height + 1, stx)?;
            if let Some((code, reason)) = inner.mempool.rejection(hash)
                && code == "attestation_refused"
            {
                let reason = reason
                    .strip_prefix("attestation refused: ")
                    .unwrap_or(reason);
                return Err(TxError::Attestation(reason.into()).into());
            }
        }
        self.quotes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(1)
            .map_err(|wait| AdmissionError::Busy {
                retry_after_ms: wait.as_millis() as u64 + 1,
            })?;
        let head = self.head();
        let block = BlockContext {
            height: head.height + 1,
            timestamp: head.timestamp,
            proposer: Address::default(),
        };
        let ctx = RegistrationContext {
            genesis: self.runtime.genesis_hash(),
            dev: self.runtime.config().dev,
            block: &block,
        };
        let state = self.state();
        let overlay = Overlay::new(&*state);
        registry::check_registration(&overlay, &ctx, &stx.tx.signer, signed)
            .map(drop)
            .map_err(AdmissionError::from)
    }

    /// Takes up to `limit` transactions waiting to be gossiped.
    pub fn take_gossip(&self, limit: usize) -> Vec<SignedTransaction> {
        let mut inner = self.inner();
        let take = inner.gossip.len().min(limit);
        inner.gossip.drain(..take).collect()
    }

    /// The digest of the finalized block at `height`.
    pub async fn finalized_digest(&self, height: u64) -> Result<Option<Digest>, HistoryError> {
        Ok(self
            .finalized_header(height)
            .await?
            .map(|header| header.hash()))
    }

    /// The finalized header at `height` (`None`: not finalized yet, or pruned).
    pub async fn finalized_header(&self, height: u64) -> Result<Option<Header>, HistoryError> {
        if height > self.head().height {
            return Ok(None);
        }
        let record = self.history.read().await.header(height).await?;
        Ok(record.map(|record| record.header))
    }

    /// Makes this node propose wrong blocks, to test that honest validators refuse them.
    /// Never used outside tests.
    pub fn misbehave_for_testing(&self, misbehaviour: Misbehaviour) {
        self.inner().misbehaviour = Some(misbehaviour);
    }

    /// Turns on invariant auditing after every finalized block (costs a full state scan).
    pub fn enable_audit(&self) {
        self.inner().audit = Some(Audit::default());
    }

    /// The invariant violations counted so far, if auditing is on.
    pub fn audit(&self) -> Option<Audit> {
        self.inner().audit
    }

    /// A transaction's status. The mempool is asked first: a block's transactions are recorded
    /// as finalized before they leave it, so no moment shows them as neither.
    pub async fn tx_status(&self, hash: &Digest) -> Result<TxStatus, HistoryError> {
        if self.inner().mempool.contains(hash) {
            return Ok(TxStatus::Pending);
        }
        let recorded = self.history.read().await.transaction(*hash).await?;
        // A block recorded but not committed when the node stopped is not final here yet.
        if let Some(status) = recorded
            && !matches!(status, TxStatus::Finalized { height, .. } if height > self.head().height)
        {
            return Ok(status);
        }
        Ok(match self.inner().mempool.rejection(hash) {
            Some((code, reason)) => TxStatus::Rejected {
                code: code.clone(),
                reason: reason.clone(),
            },
            None => TxStatus::Unknown,
        })
    }

    /// A committed account, with its proof and the header it is proven against.
    pub async fn account(
        &self,
        address: &Address,
    ) -> Result<(balances::Account, StateProof, Header), StoreError> {
        let key = balances::keys::account(address);
        let (value, proof, head) = self.state_value(&key).await?;
        let account = value
            .as_deref()
            .and_then(balances::Account::decode)
            .unwrap_or_default();
        Ok((account, proof, head))
    }

    /// Any committed state value with its proof and the header it is proven against.
    pub async fn state_value(
        &self,
        key: &[u8],
    ) -> Result<(Option<Vec<u8>>, StateProof, Header), StoreError> {
        let (mut values, head) = self.state_values(&[key.to_vec()]).await?;
        let (value, proof) = values.pop().expect("one value per key");
        Ok((value, proof, head))
    }

    /// A committed value, unproven (for the node's own lookups).
    pub fn value(&self, key: &[u8]) -> Option<Vec<u8>> {
        StateRead::get(&*self.state(), key)
    }

    /// Several committed values with proofs against one head. The store's read lock pins the
    /// head: finalization waits until the proofs are made.
    pub async fn state_values(
        &self,
        keys: &[Vec<u8>],
    ) -> Result<(Vec<ProvenValue>, Header), StoreError> {
        let store = self.store.read().await;
        let head = self.head();
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            let proof = store.prove(key).await?;
            values.push((proof.value().map(<[u8]>::to_vec), proof));
        }
        Ok((values, head))
    }

    /// Committed values whose keys start with `prefix` (unproven: for listings).
    pub fn scan(&self, prefix: &[u8]) -> Vec<Vec<u8>> {
        scan_prefix(&self.state(), prefix)
            .map(|(_, v)| v.to_vec())
            .collect()
    }

    /// The downward messages a finalized block produced, with their tree (`None`: not
    /// finalized yet, or pruned).
    pub async fn outbox(&self, height: u64) -> Result<Option<BlockOutbox>, HistoryError> {
        if height > self.head().height {
            return Ok(None);
        }
        let messages = self.history.read().await.messages(height).await?;
        Ok(messages.map(BlockOutbox::from_messages))
    }

    pub fn mempool_len(&self) -> usize {
        self.inner().mempool.len()
    }

    /// A subscription to finalized blocks.
    pub fn subscribe(&self) -> broadcast::Receiver<FinalizedEvent> {
        self.events.subscribe()
    }

    /// Sum of all balances plus burned fees (equals the total supply in a correct chain).
    pub fn total_issuance(&self) -> u128 {
        let state = self.state();
        let overlay = Overlay::new(&*state);
        let burned = balances::burned(&overlay);
        scan_prefix(&state, balances::keys::ACCOUNT_PREFIX)
            .filter_map(|(_, v)| balances::Account::decode(v))
            .map(|a| a.free)
            .sum::<u128>()
            + burned
    }
}

/// Spoils a proposal the way a Byzantine validator would (tests only).
fn misbehave(
    misbehaviour: Misbehaviour,
    parent: &Header,
    header: &mut Header,
    txs: &mut Vec<SignedTransaction>,
) {
    match misbehaviour {
        Misbehaviour::WrongStateRoot => header.state_root = Digest([0xab; 32]),
        Misbehaviour::InvalidTransaction => {
            if let Some(mut forged) = txs.first().cloned() {
                forged.signature[0] ^= 1;
                txs.push(forged);
            }
        }
        Misbehaviour::TimestampGames => {
            header.timestamp = match header.height % 3 {
                0 => parent.timestamp + 1,
                1 => header.timestamp + 3_600_000,
                _ => header.timestamp + 1_500,
            }
        }
    }
}

/// A block's downward messages and their Merkle tree, built once when the block is executed:
/// its root is checked against the header, and every proof served once the block is final
/// comes from it in O(log n).
pub struct BlockOutbox {
    pub messages: Vec<DownwardMessage>,
    pub tree: merkle::Tree,
}

impl BlockOutbox {
    fn new(outbox: Outbox) -> Self {
        Self::from_messages(outbox.messages)
    }

    fn from_messages(messages: Vec<DownwardMessage>) -> Self {
        let tree = merkle::Tree::of_outbox(&messages);
        BlockOutbox { messages, tree }
    }

    /// Message `index` with its proof against the block's outbox root.
    pub fn proven(&self, index: usize) -> Option<(&DownwardMessage, merkle::MerkleProof)> {
        Some((self.messages.get(index)?, self.tree.proof(index)?))
    }
}

/// Makes a finalized block's writes durable. A batch merkleized over a store state that has
/// since moved (it cannot be applied) is merkleized again over the applied state, and must give
/// the same root.
async fn apply_to_store(store: &mut dyn Store, result: &Speculative) -> Result<(), FatalBlock> {
    let header = &result.header;
    let fatal = |error: StoreError| FatalBlock {
        height: header.height,
        reason: format!("the state database failed: {error}"),
    };
    let wrong_root = || FatalBlock {
        height: header.height,
        reason: "its writes give another state root over the applied state".into(),
    };
    match store.apply(result.batch.clone()).await {
        Err(StoreError::Stale) => {
            let batch = store
                .merkleize(None, &result.changes, header.height)
                .await
                .map_err(fatal)?;
            if batch.root() != header.state_root {
                return Err(wrong_root());
            }
            store.apply(batch).await.map_err(fatal)?;
        }
        other => other.map_err(fatal)?,
    }
    if store.root() != header.state_root {
        return Err(wrong_root());
    }
    Ok(())
}

/// Keeps only the speculative blocks whose ancestry reaches the new head `head`: the others
/// are on forks that can no longer be finalized.
fn drop_dead_forks(speculative: &mut HashMap<Digest, Speculative>, head: Digest) {
    let mut by_height: Vec<(u64, Digest, Digest)> = speculative
        .iter()
        .map(|(digest, s)| (s.header.height, *digest, s.header.parent))
        .collect();
    by_height.sort();
    let mut live = std::collections::BTreeSet::from([head]);
    for (_, digest, parent) in by_height {
        if live.contains(&parent) {
            live.insert(digest);
        }
    }
    speculative.retain(|digest, _| live.contains(digest));
}

/// Blocks between two prunings of the history.
const PRUNE_INTERVAL: u64 = 1_024;

/// The statuses of a finalized block's transactions, in block order, as `transaction_status`
/// serves them.
fn finalized_statuses(block: &Block, result: &Speculative) -> Vec<(Digest, TxStatus)> {
    let digest = hex::encode(block.header.hash());
    let mut failures = result.failures.iter().peekable();
    let mut events = result.events.iter().peekable();
    block
        .tx_hashes()
        .iter()
        .enumerate()
        .map(|(index, hash)| {
            let index = index as u32;
            let failed = failures
                .next_if(|(i, _)| *i == index)
                .map(|(_, error)| TxFailure {
                    code: error.code().into(),
                    reason: error.to_string(),
                });
            let events = std::iter::from_fn(|| events.next_if(|(i, _)| *i == index))
                .filter_map(|(_, event)| serde_json::to_value(event).ok())
                .collect();
            let status = TxStatus::Finalized {
                height: block.header.height,
                index,
                block: digest.clone(),
                failed,
                events,
            };
            (*hash, status)
        })
        .collect()
}

/// The committed pairs whose keys start with `prefix`, in key order.
fn scan_prefix<'a>(
    entries: &'a Entries,
    prefix: &'a [u8],
) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
    entries
        .range(prefix.to_vec()..)
        .take_while(move |(k, _)| k.starts_with(prefix))
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
}

/// A state value (absent: `None`) with its proof.
pub type ProvenValue = (Option<Vec<u8>>, StateProof);

fn account_in(state: &Entries, address: &Address) -> balances::Account {
    balances::account(&Overlay::new(state), address)
}
