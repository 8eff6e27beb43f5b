//! The on-disk state database and the [`Store`] interface the node drives it through.

use super::{
    entry, hashed_key,
    proof::{CHUNK, Encoding, Family, StateProof},
    split_entry,
};
use crate::state::Changes;
use commonware_codec::RangeCfg;
use commonware_cryptography::Sha256;
use commonware_parallel::Sequential;
use commonware_runtime::{Runner as _, Spawner, buffer::paged::CacheRef, deterministic};
use commonware_storage::{
    Context,
    journal::contiguous::variable::Config as JournalConfig,
    merkle::full::Config as MerkleConfig,
    qmdb::{
        any::ordered::Update,
        current::{VariableConfig, batch::MerkleizedBatch, ordered::variable},
        floor::Proportional,
    },
    translator::EightCap,
};
use commonware_utils::{NZU16, NZU64, NZUsize};
use futures::TryStreamExt as _;
use phala_types::Digest;
use std::{collections::BTreeMap, future::Future, pin::Pin, sync::Arc};

/// Every committed key-value pair, in key order.
pub type Entries = BTreeMap<Vec<u8>, Vec<u8>>;

/// How the state's operation log is configured (its codec limits one entry's size).
type DbConfig = VariableConfig<EightCap, ((), (RangeCfg<usize>, ())), Sequential>;

/// A boxed future, so that [`Store`] can be a trait object whatever runtime backs it.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A block's writes, merkleized over its parent's: its root is the block's state root. Held in
/// memory until the block is finalized (then applied) or abandoned (then dropped).
pub type Batch = Arc<MerkleizedBatch<Family, Digest, Update<Digest, Encoding>, CHUNK, Sequential>>;

type Db<E> = variable::Db<Family, E, Digest, Vec<u8>, Sha256, EightCap, CHUNK, Sequential>;

/// Why the state database failed. A failure while applying a finalized block is fatal for the
/// node: the database is closed and the node must restart from what is durable.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database: {0}")]
    Db(String),
    #[error("state database holds a malformed entry")]
    Malformed,
    #[error("state database is closed after an earlier failure")]
    Closed,
    #[error("the batch no longer extends the applied state")]
    Stale,
}

impl<F: commonware_storage::merkle::Family> From<commonware_storage::qmdb::Error<F>>
    for StoreError
{
    fn from(error: commonware_storage::qmdb::Error<F>) -> Self {
        StoreError::Db(error.to_string())
    }
}

/// The authenticated state as the node uses it: speculative batches for proposed blocks, one
/// durable commit per finalized block, proofs against the applied root.
pub trait Store: Send + Sync {
    /// The root of the applied state.
    fn root(&self) -> Digest;

    /// The height of the last applied block (`None`: nothing applied yet, not even genesis).
    fn height(&self) -> BoxFuture<'_, Result<Option<u64>, StoreError>>;

    /// Merkleizes the writes of the block at `height` over `parent` (`None`: the applied state).
    fn merkleize<'a>(
        &'a self,
        parent: Option<&'a Batch>,
        changes: &'a Changes,
        height: u64,
    ) -> BoxFuture<'a, Result<Batch, StoreError>>;

    /// Applies a batch (and any unapplied ancestors) and makes it durable. A batch that does not
    /// extend the applied state is refused as [`StoreError::Stale`], the store unchanged.
    fn apply(&mut self, batch: Batch) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Proves `key`'s value or absence against [`Store::root`].
    fn prove<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<StateProof, StoreError>>;

    /// Every applied key-value pair, in key order.
    fn load(&self) -> BoxFuture<'_, Result<Entries, StoreError>>;
}

/// Blocks between syncs of the database's bitmap (which shortens the next start) followed by
/// pruning the operation log below its inactivity floor (which bounds the disk it uses): at
/// every committed height that is a multiple of it, whenever the process started.
const MAINTENANCE_INTERVAL: u64 = 1_024;

/// Pages (4 KiB) of the state database's read cache: 128 MiB. A block's writes read the
/// operations they replace; served from this cache rather than by a blocking read each, they
/// keep a block's cost near its writes' as the state grows (`benches/state_db.rs`).
const PAGE_CACHE_PAGES: usize = 32_768;

/// A [`Store`] on a commonware runtime's storage.
pub struct StateStore<E: Context + Spawner> {
    /// `None` once a mutation failed: QMDB's mutators consume the handle.
    db: Option<Db<E>>,
}

/// Opens (or creates) the state database in `partition` of the context's storage, recovering the
/// last durable commit: a batch applied but not committed when the process died is discarded.
pub async fn open<E: Context + Spawner>(
    context: E,
    partition: &str,
) -> Result<StateStore<E>, StoreError> {
    let db = Db::init(context, config(partition), None).await?;
    Ok(StateStore { db: Some(db) })
}

fn config(partition: &str) -> DbConfig {
    let page_cache = CacheRef::new(NZU16!(4_096), NZUsize!(PAGE_CACHE_PAGES));
    VariableConfig {
        merkle_config: MerkleConfig {
            journal_partition: format!("{partition}-tree"),
            metadata_partition: format!("{partition}-tree-pins"),
            items_per_blob: NZU64!(65_536),
            write_buffer: NZUsize!(1 << 20),
            replay_buffer: NZUsize!(1 << 20),
            strategy: Sequential,
            page_cache: page_cache.clone(),
        },
        journal_config: JournalConfig {
            partition: format!("{partition}-ops"),
            items_per_section: NZU64!(16_384),
            compression: None,
            codec_config: ((), ((..=super::proof::MAX_ENTRY).into(), ())),
            page_cache,
            write_buffer: NZUsize!(1 << 20),
            replay_buffer: NZUsize!(8 << 20),
        },
        grafted_metadata_partition: format!("{partition}-bitmap"),
        translator: EightCap,
        init_cache: Some(NZUsize!(65_536)),
        init_buffer: NZUsize!(8 << 20),
        init_concurrency: (),
    }
}

/// The root of a state whose first block (genesis, height 0) writes `changes`, computed in memory.
pub fn genesis_root(changes: &Changes) -> Result<Digest, StoreError> {
    let changes = changes.clone();
    deterministic::Runner::default().start(|context| async move {
        let store = open(context, "genesis").await?;
        Ok(store.merkleize(None, &changes, 0).await?.root())
    })
}

impl<E: Context + Spawner> StateStore<E> {
    /// Removes the database from storage.
    pub async fn destroy(mut self) -> Result<(), StoreError> {
        let db = self.db.take().ok_or(StoreError::Closed)?;
        Ok(db.destroy().await?)
    }

    fn db(&self) -> Result<&Db<E>, StoreError> {
        self.db.as_ref().ok_or(StoreError::Closed)
    }

    async fn apply_and_commit(&mut self, batch: Batch) -> Result<(), StoreError> {
        self.db()?
            .validate_batch(&batch)
            .map_err(|_| StoreError::Stale)?;
        let db = self.db.take().ok_or(StoreError::Closed)?;
        let mut db = db.apply_batch(batch).await?.commit().await?;
        let height = decode_height(db.get_metadata().await?)?;
        if height.is_some_and(|height| height.is_multiple_of(MAINTENANCE_INTERVAL)) {
            db = db.sync().await?;
            let boundary = db.sync_boundary();
            db = db.prune(boundary).await?;
        }
        self.db = Some(db);
        Ok(())
    }
}

/// The block height a batch's commit metadata records.
fn decode_height(metadata: Option<Vec<u8>>) -> Result<Option<u64>, StoreError> {
    let Some(metadata) = metadata else {
        return Ok(None);
    };
    let bytes: [u8; 8] = metadata.try_into().map_err(|_| StoreError::Malformed)?;
    Ok(Some(u64::from_be_bytes(bytes)))
}

impl<E: Context + Spawner> Store for StateStore<E> {
    fn root(&self) -> Digest {
        self.db.as_ref().map_or(Digest([0; 32]), Db::root)
    }

    fn height(&self) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        Box::pin(async move { decode_height(self.db()?.get_metadata().await?) })
    }

    fn merkleize<'a>(
        &'a self,
        parent: Option<&'a Batch>,
        changes: &'a Changes,
        height: u64,
    ) -> BoxFuture<'a, Result<Batch, StoreError>> {
        Box::pin(async move {
            let db = self.db()?;
            let mut batch = match parent {
                Some(parent) => parent.new_batch::<Sha256>(),
                None => db.new_batch(),
            };
            for (key, value) in changes {
                batch = batch.write(hashed_key(key), value.as_ref().map(|v| entry(key, v)));
            }
            let metadata = Some(height.to_be_bytes().to_vec());
            Ok(batch.merkleize(db, metadata, &mut Proportional).await?)
        })
    }

    fn apply(&mut self, batch: Batch) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.apply_and_commit(batch))
    }

    fn prove<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<StateProof, StoreError>> {
        Box::pin(async move {
            let db = self.db()?;
            let hashed = hashed_key(key);
            match db.get(&hashed).await? {
                Some(stored) => {
                    let (_, value) = split_entry(&stored).ok_or(StoreError::Malformed)?;
                    let value = value.to_vec();
                    let proof = db.key_value_proof(hashed).await?;
                    Ok(StateProof::Present { value, proof })
                }
                None => Ok(StateProof::Absent(db.exclusion_proof(&hashed).await?)),
            }
        })
    }

    fn load(&self) -> BoxFuture<'_, Result<Entries, StoreError>> {
        Box::pin(async move {
            let db = self.db()?;
            db.stream_range(..)
                .map_err(StoreError::from)
                .and_then(|(_, stored)| async move {
                    let (key, value) = split_entry(&stored).ok_or(StoreError::Malformed)?;
                    Ok((key.to_vec(), value.to_vec()))
                })
                .try_collect()
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commitment::{ProofError, mocks::TestState};

    fn changes(pairs: &[(&str, Option<&str>)]) -> Changes {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec())))
            .collect()
    }

    fn state(keys: &[&str]) -> TestState {
        let mut state = TestState::default();
        let values: Vec<String> = keys.iter().map(|k| format!("v-{k}")).collect();
        let pairs: Vec<_> = keys
            .iter()
            .zip(&values)
            .map(|(k, v)| (*k, Some(v.as_str())))
            .collect();
        state.apply(&changes(&pairs));
        state
    }

    /// Pins the root's definition (QMDB version, floor policy, chunk size, entry and metadata
    /// encodings): any change is a hard fork and must fail here first.
    #[test]
    fn the_genesis_root_of_a_fixed_state_is_fixed() {
        let root = genesis_root(&changes(&[("a", Some("1")), ("b", Some("2"))])).unwrap();
        assert_eq!(
            hex::encode(root),
            "428702899c50b15d6a79c951c903dd1acb015b000f3e7400bc64530a644c87cd"
        );
        let state = state(&[]);
        let mut applied = TestState::default();
        applied.apply(&changes(&[("a", Some("1")), ("b", Some("2"))]));
        assert_eq!(applied.root(), root, "a store's first batch is genesis");
        assert_ne!(state.root(), root);
    }

    #[test]
    fn proves_values_and_absences() {
        let state = state(&["b", "d", "f"]);
        let root = state.root();
        for key in ["b", "d", "f"] {
            let proof = state.prove(key.as_bytes());
            assert_eq!(
                proof.verify(&root, key.as_bytes()),
                Ok(Some(format!("v-{key}").into_bytes()))
            );
            let decoded = StateProof::decode(&proof.to_bytes()).unwrap();
            assert_eq!(decoded, proof, "proofs survive their encoding");
        }
        for key in ["a", "c", "e", "g"] {
            let proof = state.prove(key.as_bytes());
            assert_eq!(proof.verify(&root, key.as_bytes()), Ok(None), "{key}");
            assert_eq!(StateProof::decode(&proof.to_bytes()).unwrap(), proof);
        }
    }

    #[test]
    fn rejects_proofs_that_lie() {
        let state = state(&["b", "d", "f"]);
        let root = state.root();
        // A presence proof cannot be passed off as another key's value.
        let proof = state.prove(b"d");
        assert_eq!(proof.verify(&root, b"b"), Err(ProofError::Inclusion));
        // A changed value breaks it.
        let StateProof::Present { proof: inner, .. } = proof.clone() else {
            panic!("d is present");
        };
        let forged = StateProof::Present {
            value: b"rich".to_vec(),
            proof: inner,
        };
        assert_eq!(forged.verify(&root, b"d"), Err(ProofError::Inclusion));
        // An absence proof cannot hide a present key.
        let absent = state.prove(b"c");
        for key in ["b", "d", "f"] {
            assert_eq!(
                absent.verify(&root, key.as_bytes()),
                Err(ProofError::Exclusion)
            );
        }
        // Against another root nothing holds.
        let other = super::tests::state(&["b", "d"]).root();
        assert_eq!(proof.verify(&other, b"d"), Err(ProofError::Inclusion));
        assert_eq!(absent.verify(&other, b"c"), Err(ProofError::Exclusion));
        // Bytes that are not a proof are refused, not trusted.
        let mut bytes = proof.to_bytes();
        bytes.push(0);
        assert!(StateProof::decode(&bytes).is_err(), "trailing bytes");
        assert!(StateProof::decode(&[7]).is_err(), "unknown tag");
        assert!(StateProof::decode(&[]).is_err(), "empty");
    }

    #[test]
    fn speculative_roots_equal_applied_roots() {
        let mut state = state(&["b", "d", "f"]);
        let writes = changes(&[
            ("a", Some("1")),
            ("d", None),
            ("f", Some("2")),
            ("z", Some("3")),
        ]);
        let speculative = state.root_with(&writes);
        state.apply(&writes);
        assert_eq!(speculative, state.root());
        assert_eq!(state.len(), 4);
        assert_eq!(state.prove(b"d").verify(&state.root(), b"d"), Ok(None));
    }

    /// A chain of unapplied batches (blocks proposed on proposed blocks) gives the roots that
    /// applying them one by one gives, and applying the tip applies its ancestors.
    #[test]
    fn child_batches_chain_and_apply_with_their_ancestors() {
        use crate::commitment::mocks::RemoteStore;
        use futures::executor::block_on;
        let blocks = [
            changes(&[("a", Some("1")), ("b", Some("2"))]),
            changes(&[("a", None), ("c", Some("3"))]),
            changes(&[("b", Some("4"))]),
        ];
        let mut sequential = TestState::default();
        let mut expected = Vec::new();
        for block in &blocks {
            sequential.apply(block);
            expected.push(sequential.root());
        }
        let mut store = RemoteStore::start();
        // Unapplied ancestors stay alive while their descendants are in use, as the ledger's
        // speculative blocks keep them.
        let mut batches: Vec<Batch> = Vec::new();
        for (height, block) in blocks.iter().enumerate() {
            let batch = block_on(store.merkleize(batches.last(), block, height as u64)).unwrap();
            assert_eq!(batch.root(), expected[height], "block {height}");
            batches.push(batch);
        }
        block_on(store.apply(batches[2].clone())).unwrap();
        assert_eq!(store.root(), expected[2]);
        assert_eq!(block_on(store.height()).unwrap(), Some(2));
        let loaded = block_on(store.load()).unwrap();
        assert_eq!(
            loaded,
            sequential
                .scan_prefix(b"")
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect()
        );
    }

    /// A batch applied but not committed when the process dies is gone at the next start: the
    /// store opens at its last durable block.
    #[test]
    fn a_crash_before_the_commit_reopens_at_the_last_durable_block() {
        let first = changes(&[("a", Some("1"))]);
        let second = changes(&[("b", Some("2"))]);
        let (durable_root, checkpoint) =
            deterministic::Runner::default().start_and_recover(|context| {
                let (first, second) = (first.clone(), second.clone());
                async move {
                    let mut store = open(context, "state").await.unwrap();
                    let batch = store.merkleize(None, &first, 0).await.unwrap();
                    store.apply(batch).await.unwrap();
                    let root = store.root();
                    let db = store.db.take().unwrap();
                    let batch = store_batch(&db, &second).await;
                    let _unsynced = db.apply_batch(batch).await.unwrap();
                    root
                }
            });
        deterministic::Runner::from(checkpoint).start(|context| async move {
            let store = open(context, "state").await.unwrap();
            assert_eq!(store.height().await.unwrap(), Some(0));
            assert_eq!(store.root(), durable_root);
            let loaded = store.load().await.unwrap();
            assert_eq!(loaded.len(), 1);
            assert_eq!(loaded.get(&b"a"[..]), Some(&b"1".to_vec()));
        });
    }

    /// Maintenance (sync, then pruning the log below its floor) changes no root, and a batch
    /// merkleized before it (a proposed block) still applies after it with the root a store
    /// never pruned gives: nodes that pruned at other times agree.
    #[test]
    fn pruning_changes_no_root() {
        use commonware_runtime::Supervisor as _;
        deterministic::Runner::default().start(|context| async move {
            let mut pruned = open(context.child("pruned"), "pruned").await.unwrap();
            let mut kept = open(context.child("kept"), "kept").await.unwrap();
            let block = |height: u64| -> Changes {
                (0..5u8)
                    .map(|k| (vec![k], Some(height.to_be_bytes().to_vec())))
                    .collect()
            };
            for height in 0..200 {
                for store in [&mut pruned, &mut kept] {
                    let batch = store.merkleize(None, &block(height), height).await.unwrap();
                    store.apply(batch).await.unwrap();
                }
            }
            let proposed = pruned.merkleize(None, &block(200), 200).await.unwrap();
            let db = pruned.db.take().unwrap().sync().await.unwrap();
            let boundary = db.sync_boundary();
            assert!(*boundary > 0, "there is something to prune");
            pruned.db = Some(db.prune(boundary).await.unwrap());
            assert_eq!(pruned.root(), kept.root());
            pruned.apply(proposed).await.unwrap();
            let batch = kept.merkleize(None, &block(200), 200).await.unwrap();
            kept.apply(batch).await.unwrap();
            assert_eq!(pruned.root(), kept.root());
            let proof = pruned.prove(&[3]).await.unwrap();
            assert_eq!(
                proof.verify(&pruned.root(), &[3]),
                Ok(Some(200u64.to_be_bytes().to_vec()))
            );
        });
    }

    async fn store_batch(db: &Db<deterministic::Context>, changes: &Changes) -> Batch {
        let mut batch = db.new_batch();
        for (key, value) in changes {
            batch = batch.write(hashed_key(key), value.as_ref().map(|v| entry(key, v)));
        }
        batch
            .merkleize(db, Some(1u64.to_be_bytes().to_vec()), &mut Proportional)
            .await
            .unwrap()
    }
}
