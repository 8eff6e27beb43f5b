//! A ledger on disk: it reopens where it stopped, replaying nothing, and a crash at any point of
//! finalizing a block loses nothing finalized.

mod common;

use commonware_runtime::{Runner as _, Supervisor as _, deterministic};
use commonware_utils::TestRng;
use phala_api::rpc::TxStatus;
use phala_chain::{
    BlockContext,
    commitment::{self, Batch, BoxFuture, Entries, StateProof, Store, StoreError},
    state::Changes,
};
use phala_crypto::Keypair;
use phala_node::{
    history::DiskHistory,
    ledger::{Ledger, Storage},
    spec::{ChainSpec, GenesisOptions, generate_with},
};
use phala_types::{Block, Digest};

fn spec() -> ChainSpec {
    let keys: Vec<Keypair> = (0..4)
        .map(|i| Keypair::dev(&format!("restart-validator-{i}")))
        .collect();
    let options = GenesisOptions::local_dev("restart-test", 4);
    generate_with(&options, &keys, TestRng::new(7)).unwrap().0
}

/// Builds the next block from the ledger's mempool.
async fn next_block(ledger: &Ledger, spec: &ChainSpec) -> Block {
    let parent = ledger.head();
    let ctx = BlockContext {
        height: parent.height + 1,
        timestamp: parent.timestamp + spec.block_interval_ms,
        proposer: spec.validators[0].address,
    };
    ledger
        .build(&parent, ctx)
        .await
        .expect("the parent is the head")
}

async fn bob(ledger: &Ledger) -> u128 {
    let (account, proof, header) = ledger
        .account(&Keypair::dev("bob").address())
        .await
        .unwrap();
    let key = phala_chain::balances::keys::account(&Keypair::dev("bob").address());
    assert!(
        proof.verify(&header.state_root, &key).is_ok(),
        "proofs hold against the head"
    );
    account.free
}

#[test]
fn a_ledger_reopens_at_its_last_committed_block_without_replaying() {
    let spec = spec();
    let first = spec.clone();
    let ((head, hash, balance), checkpoint) =
        deterministic::Runner::default().start_and_recover(|context| async move {
            let spec = first;
            let (ledger, _) = Ledger::open_on(context.child("ledger"), "ledger", &spec, None)
                .await
                .unwrap();
            let hash = ledger.submit(common::transfer(&spec, "alice", 0)).unwrap();
            for _ in 0..3 {
                let block = next_block(&ledger, &spec).await;
                ledger.finalize(&block).await.unwrap();
            }
            (ledger.head(), hash, bob(&ledger).await)
        });
    deterministic::Runner::from(checkpoint).start(|context| async move {
        let (ledger, _) = Ledger::open_on(context.child("ledger"), "ledger", &spec, None)
            .await
            .unwrap();
        assert_eq!(ledger.head(), head, "opens at its last block");
        assert_eq!(bob(&ledger).await, balance);
        assert!(matches!(
            ledger.tx_status(&hash).await.unwrap(),
            TxStatus::Finalized { height: 1, .. }
        ));
        assert_eq!(
            ledger.finalized_header(head.height).await.unwrap(),
            Some(head.clone())
        );
        // And it goes on from there.
        ledger.submit(common::transfer(&spec, "alice", 1)).unwrap();
        let block = next_block(&ledger, &spec).await;
        assert_eq!(block.header.height, head.height + 1);
        ledger.finalize(&block).await.unwrap();
        assert_eq!(bob(&ledger).await, balance + phala_types::UNIT);
    });
}

/// The state database of a disk that fails when a block is committed.
struct FailingCommit(Box<dyn Store>);

impl Store for FailingCommit {
    fn root(&self) -> Digest {
        self.0.root()
    }

    fn height(&self) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        self.0.height()
    }

    fn merkleize<'a>(
        &'a self,
        parent: Option<&'a Batch>,
        changes: &'a Changes,
        height: u64,
    ) -> BoxFuture<'a, Result<Batch, StoreError>> {
        self.0.merkleize(parent, changes, height)
    }

    fn apply(&mut self, batch: Batch) -> BoxFuture<'_, Result<(), StoreError>> {
        if batch.root() == self.0.root() {
            return self.0.apply(batch);
        }
        Box::pin(async { Err(StoreError::Db("the disk failed".into())) })
    }

    fn prove<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<StateProof, StoreError>> {
        self.0.prove(key)
    }

    fn load(&self) -> BoxFuture<'_, Result<Entries, StoreError>> {
        self.0.load()
    }
}

/// The node dies after a finalized block was recorded in the history but before its state was
/// committed: it reopens at the block before, and applies the block again when marshal
/// delivers it again (it was never acknowledged).
#[test]
fn a_crash_between_the_history_and_the_state_loses_nothing_finalized() {
    let spec = spec();
    let (genesis_ledger, _) = futures::executor::block_on(Ledger::for_testing(&spec));
    genesis_ledger
        .submit(common::transfer(&spec, "alice", 0))
        .unwrap();
    let block = futures::executor::block_on(next_block(&genesis_ledger, &spec));
    let hash = block.tx_hashes()[0];
    futures::executor::block_on(genesis_ledger.finalize(&block)).unwrap();
    let expected = futures::executor::block_on(bob(&genesis_ledger));
    let first = (spec.clone(), block.clone());
    let (_, checkpoint) =
        deterministic::Runner::default().start_and_recover(|context| async move {
            let (spec, block) = first;
            // Genesis commits normally; block 1's commit fails.
            let (ledger, _) = Ledger::open_on(context.child("ledger"), "ledger", &spec, None)
                .await
                .unwrap();
            drop(ledger);
            let context = context.child("failing");
            let store = commitment::open(context.child("state"), "ledger-state")
                .await
                .unwrap();
            let history = DiskHistory::open(context.child("history"), "ledger-history")
                .await
                .unwrap();
            let storage = Storage {
                store: Box::new(FailingCommit(Box::new(store))),
                history: Box::new(history),
                retention: None,
            };
            let (ledger, _) = Ledger::open(&spec, storage).await.unwrap();
            assert!(ledger.finalize(&block).await.is_err(), "the commit failed");
        });
    deterministic::Runner::from(checkpoint).start(|context| async move {
        let (ledger, _) = Ledger::open_on(context.child("ledger"), "ledger", &spec, None)
            .await
            .unwrap();
        assert_eq!(ledger.head().height, 0, "the state was not committed");
        assert!(
            !matches!(
                ledger.tx_status(&hash).await.unwrap(),
                TxStatus::Finalized { .. }
            ),
            "a transaction recorded but not committed is not final yet"
        );
        ledger.finalize(&block).await.unwrap();
        assert_eq!(ledger.head(), block.header);
        assert_eq!(bob(&ledger).await, expected);
        assert!(matches!(
            ledger.tx_status(&hash).await.unwrap(),
            TxStatus::Finalized { height: 1, .. }
        ));
    });
}
