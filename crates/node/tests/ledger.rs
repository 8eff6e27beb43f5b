//! The ledger's block checks, without consensus: what a validator votes for or against.

mod common;

use commonware_utils::TestRng;
use phala_chain::{BlockContext, TxError, merkle};
use phala_crypto::Keypair;
use phala_node::{
    ledger::{BlockRejection, Ledger},
    spec::{ChainSpec, GenesisOptions, generate_with},
};
use phala_types::{Block, Call, Transaction, UNIT};
use phala_types::{MqCall, RegistryCall};

async fn setup() -> (ChainSpec, Ledger, Ledger) {
    let keys: Vec<Keypair> = (0..4)
        .map(|i| Keypair::dev(&format!("ledger-validator-{i}")))
        .collect();
    let options = GenesisOptions::local_dev("ledger-test", 4);
    let (spec, _) = generate_with(&options, &keys, TestRng::new(1)).unwrap();
    let a = Ledger::for_testing(&spec).await.0;
    let b = Ledger::for_testing(&spec).await.0;
    (spec, a, b)
}

async fn propose(proposer: &Ledger, spec: &ChainSpec) -> Block {
    let parent = proposer.head();
    let ctx = BlockContext {
        height: parent.height + 1,
        timestamp: parent.timestamp + spec.block_interval_ms,
        proposer: spec.validators[0].address,
    };
    proposer
        .build(&parent, ctx)
        .await
        .expect("parent is the head")
}

#[tokio::test]
async fn valid_block_is_accepted_whether_or_not_its_transactions_were_seen() {
    let (spec, proposer, verifier) = setup().await;
    proposer
        .submit(common::transfer(&spec, "alice", 0))
        .unwrap();
    let block = propose(&proposer, &spec).await;
    assert_eq!(block.transactions.len(), 1);
    // The verifier never saw the transaction: it checks the signature itself.
    verifier
        .execute(&block, &spec.validators[0].address)
        .await
        .unwrap();
    verifier.finalize(&block).await.unwrap();
    proposer.finalize(&block).await.unwrap();
    assert_eq!(verifier.head(), proposer.head());
}

/// A finalized transaction's status carries its events, whether the node built the block,
/// verified it, or only replayed it at finalization (a follower, a restart).
#[tokio::test]
async fn a_finalized_transaction_reports_its_events() {
    let (spec, proposer, verifier) = setup().await;
    let replayer = Ledger::for_testing(&spec).await.0;
    let hash = proposer
        .submit(common::transfer(&spec, "alice", 0))
        .unwrap();
    let block = propose(&proposer, &spec).await;
    verifier
        .execute(&block, &spec.validators[0].address)
        .await
        .unwrap();
    for ledger in [&proposer, &verifier, &replayer] {
        ledger.finalize(&block).await.unwrap();
        let phala_api::rpc::TxStatus::Finalized { events, .. } =
            ledger.tx_status(&hash).await.unwrap()
        else {
            panic!("finalized");
        };
        assert_eq!(
            events,
            vec![serde_json::json!({
                "module": "balances",
                "event": "transfer",
                "from": Keypair::dev("alice").address().to_string(),
                "to": Keypair::dev("bob").address().to_string(),
                "amount": UNIT.to_string(),
            })]
        );
    }
}

#[tokio::test]
async fn tampered_signature_is_rejected_even_if_the_original_was_seen() {
    let (spec, proposer, verifier) = setup().await;
    let stx = common::transfer(&spec, "alice", 0);
    proposer.submit(stx.clone()).unwrap();
    verifier.submit(stx).unwrap();
    let honest = propose(&proposer, &spec).await;
    let mut transactions = honest.transactions.clone();
    transactions[0].signature[5] ^= 1;
    let mut header = honest.header.clone();
    header.tx_root = merkle::tx_root(&transactions);
    let forged = Block::new(header, transactions);
    match verifier.execute(&forged, &spec.validators[0].address).await {
        Err(BlockRejection::Invalid(invalid)) => assert_eq!(invalid.error, TxError::BadSignature),
        other => panic!("expected a bad signature, got {other:?}"),
    }
    verifier
        .execute(&honest, &spec.validators[0].address)
        .await
        .unwrap();
}

#[tokio::test]
async fn wrong_roots_proposer_or_timestamp_are_rejected() {
    let (spec, proposer, verifier) = setup().await;
    proposer
        .submit(common::transfer(&spec, "alice", 0))
        .unwrap();
    let honest = propose(&proposer, &spec).await;
    let leader = spec.validators[0].address;
    let mutate = |change: &dyn Fn(&mut phala_types::Header)| {
        let mut header = honest.header.clone();
        change(&mut header);
        Block::new(header, honest.transactions.clone())
    };
    let cases: Vec<(&str, Block)> = vec![
        (
            "state root",
            mutate(&|h| h.state_root = phala_types::Digest([1; 32])),
        ),
        (
            "outbox root",
            mutate(&|h| h.outbox_root = phala_types::Digest([2; 32])),
        ),
        (
            "tx root",
            mutate(&|h| h.tx_root = phala_types::Digest([3; 32])),
        ),
        ("timestamp", mutate(&|h| h.timestamp = 1)),
        ("height", mutate(&|h| h.height = 5)),
        ("epoch", mutate(&|h| h.epoch = 1)),
    ];
    for (what, block) in cases {
        assert!(
            verifier.execute(&block, &leader).await.is_err(),
            "a wrong {what} was accepted"
        );
    }
    assert!(
        verifier
            .execute(&honest, &spec.validators[1].address)
            .await
            .is_err(),
        "a block by a non-leader was accepted"
    );
    verifier.execute(&honest, &leader).await.unwrap();
    // Finalizing twice is harmless; a block that does not extend the head is fatal.
    verifier.finalize(&honest).await.unwrap();
    verifier.finalize(&honest).await.unwrap();
    let orphan = mutate(&|h| {
        h.height = 2;
        h.parent = phala_types::Digest([9; 32]);
    });
    assert!(verifier.finalize(&orphan).await.is_err());
}

/// A registration by `operator` (signer, with `nonce`) of a fresh worker whose simulated
/// evidence binds nothing of the worker's: it never attests.
fn unbound_registration(
    spec: &ChainSpec,
    operator: &Keypair,
    nonce: u64,
) -> phala_types::SignedTransaction {
    let worker = Keypair::generate();
    let registration = phala_types::WorkerRegistration {
        identity: worker.address(),
        ecdh: [1; 32],
        operator: operator.address(),
        cores: 1,
        benchmark: 1,
        freshness: 0,
        gatekeeper: false,
        evidence: phala_types::Evidence::Simulated {
            measurement: [0xaa; 32],
            report_data: [0; 64],
        },
    };
    let tx = Transaction {
        signer: operator.address(),
        nonce,
        fee: UNIT / 10,
        expiry: 1_000,
        call: Call::Registry(RegistryCall::RegisterWorker(
            worker.sign_registration(&spec.hash(), registration),
        )),
    };
    operator.sign_transaction(&spec.hash(), tx)
}

/// A registration whose evidence does not hold is refused when it reaches the mempool (before,
/// it waited there for a leader to spend its slot verifying it).
#[tokio::test]
async fn a_registration_that_does_not_attest_never_enters_the_mempool() {
    let (spec, ledger, _) = setup().await;
    let alice = Keypair::dev("alice");
    let error = ledger
        .submit(unbound_registration(&spec, &alice, 0))
        .unwrap_err();
    assert_eq!(error.code(), "attestation_refused", "{error}");
    assert_eq!(ledger.mempool_len(), 0);

    // Evidence is looked at only for a signer that can pay: an unfunded account (or a used
    // nonce) is refused first, so replaying public quotes costs the node no verification.
    let stranger = Keypair::generate();
    let error = ledger
        .submit(unbound_registration(&spec, &stranger, 0))
        .unwrap_err();
    assert_eq!(error.code(), "insufficient_funds", "{error}");
}

/// However many registrations arrive, the node verifies at most `QUOTES_PER_SECOND` (after a
/// burst of twice that); the rest are refused as `busy`, to retry, not remembered as bad.
#[tokio::test]
async fn quote_verification_at_admission_is_throttled() {
    let (spec, ledger, _) = setup().await;
    let alice = Keypair::dev("alice");
    let attempts = 3 * phala_node::ledger::QUOTES_PER_SECOND as u64;
    let codes: Vec<&str> = (0..attempts)
        .map(|nonce| {
            let registration = unbound_registration(&spec, &alice, nonce);
            ledger.submit(registration).unwrap_err().code()
        })
        .collect();
    let busy = codes.iter().filter(|code| **code == "busy").count();
    let verified = codes
        .iter()
        .filter(|code| **code == "attestation_refused")
        .count();
    assert_eq!(busy + verified, codes.len(), "{codes:?}");
    assert!(busy > 0, "never throttled");
    assert!(
        verified >= 2 * phala_node::ledger::QUOTES_PER_SECOND as usize,
        "{verified}"
    );
}

/// A transaction whose call fails once in a block (here an upward message from an origin that
/// is not registered: its signature check is the expensive part) is included, pays its fee and
/// reports why it failed; before, it was dropped for free and could be resubmitted forever.
#[tokio::test]
async fn a_call_that_fails_in_a_block_is_included_and_pays_its_fee() {
    let (spec, proposer, verifier) = setup().await;
    let alice = Keypair::dev("alice");
    let stranger = Keypair::generate();
    let mut message = phala_types::UpwardMessage {
        origin: stranger.address(),
        topic: bytes::Bytes::from_static(b"spam"),
        payload: bytes::Bytes::from_static(b"spam"),
        sequence: 0,
        signature: [0; 64],
    };
    stranger.sign_upward(&spec.hash(), &mut message);
    let tx = Transaction {
        signer: alice.address(),
        nonce: 0,
        fee: UNIT / 10,
        expiry: 1_000,
        call: Call::Mq(MqCall::SubmitUpward(message)),
    };
    let stx = alice.sign_transaction(&spec.hash(), tx);
    let hash = proposer.submit(stx).unwrap();
    let before = proposer.account(&alice.address()).await.unwrap().0;
    let block = propose(&proposer, &spec).await;
    assert_eq!(block.transactions.len(), 1, "the failing call is included");
    verifier
        .execute(&block, &spec.validators[0].address)
        .await
        .unwrap();
    verifier.finalize(&block).await.unwrap();
    proposer.finalize(&block).await.unwrap();
    assert_eq!(verifier.head(), proposer.head());
    for ledger in [&proposer, &verifier] {
        let after = ledger.account(&alice.address()).await.unwrap().0;
        assert_eq!(after.nonce, before.nonce + 1);
        assert_eq!(after.free, before.free - UNIT / 10, "the fee is paid");
        match ledger.tx_status(&hash).await.unwrap() {
            phala_api::rpc::TxStatus::Finalized {
                failed: Some(failure),
                ..
            } => assert_eq!(failure.code, "unknown_origin"),
            other => panic!("expected a failed transaction, got {other:?}"),
        }
    }
}

/// Transactions queued after a nonce gap cost a leader nothing: however many a sender queues
/// (here instantiations, each a thirty-second of a block's weight, which a leader would count
/// against what it may try), the next block still carries everyone else's.
#[tokio::test]
async fn transactions_after_a_nonce_gap_never_crowd_out_a_block() {
    let (spec, proposer, _) = setup().await;
    let bob = Keypair::dev("bob");
    for nonce in 1..=100u64 {
        let tx = Transaction {
            signer: bob.address(),
            nonce,
            fee: UNIT,
            expiry: 1_000,
            call: Call::Contracts(phala_types::ContractsCall::Instantiate {
                code_hash: [7; 32],
                cluster: 0,
                salt: [nonce as u8; 32],
                storage_quota: 1_000,
                input: bytes::Bytes::new(),
            }),
        };
        proposer
            .submit(bob.sign_transaction(&spec.hash(), tx))
            .unwrap();
    }
    let hash = proposer
        .submit(common::transfer(&spec, "alice", 0))
        .unwrap();
    let block = propose(&proposer, &spec).await;
    let included: Vec<_> = block.transactions.iter().map(|tx| tx.hash()).collect();
    assert_eq!(included, vec![hash]);
}

/// Blocks on a fork that finalization excludes are dropped, with their descendants: nothing
/// builds or votes on them, and speculative results do not pile up; the finalized branch's
/// descendants stay and finalize.
#[tokio::test]
async fn finalizing_a_block_drops_the_forks_it_excludes() {
    let (spec, ledger, _) = setup().await;
    let genesis = ledger.head();
    let at = |parent: &phala_types::Header, offset: u64| BlockContext {
        height: parent.height + 1,
        timestamp: parent.timestamp + spec.block_interval_ms + offset,
        proposer: spec.validators[0].address,
    };
    let kept = ledger.build(&genesis, at(&genesis, 0)).await.unwrap();
    let dead = ledger.build(&genesis, at(&genesis, 1)).await.unwrap();
    assert_ne!(kept.header.hash(), dead.header.hash());
    let kept_child = ledger
        .build(&kept.header, at(&kept.header, 0))
        .await
        .unwrap();
    let dead_child = ledger
        .build(&dead.header, at(&dead.header, 0))
        .await
        .unwrap();
    assert!(ledger.knows(&dead_child.header.hash()));

    ledger.finalize(&kept).await.unwrap();
    assert!(
        !ledger.knows(&dead.header.hash()),
        "the excluded sibling is dropped"
    );
    assert!(
        !ledger.knows(&dead_child.header.hash()),
        "and its descendants with it"
    );
    assert!(
        ledger
            .build(&dead_child.header, at(&dead_child.header, 0))
            .await
            .is_none(),
        "nothing builds on a dead fork"
    );
    assert!(ledger.knows(&kept_child.header.hash()));
    ledger.finalize(&kept_child).await.unwrap();
    assert_eq!(ledger.head(), kept_child.header);
}
