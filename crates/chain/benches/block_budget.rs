//! How long a leader spends building a block when its mempool is full of the costliest
//! transactions that fail late: registrations carrying a real SGX quote whose report data was
//! rewritten to bind the registering worker's keys, so that it fails only at the end of DCAP
//! verification (about a millisecond each). Building stops
//! once what it tried weighs `weights::BUILD_BUDGET`, so the time is bounded whatever the
//! mempool holds; transfers are measured alongside for comparison.
//!
//! `cargo bench -p phala-chain --bench block_budget` (prints mean, p50 and max of 5 builds).

use bytes::Bytes;
use phala_chain::{
    BlockContext, Runtime,
    balances::{Allocation, FeeSchedule, FeeSplit},
    commitment::mocks::TestState,
    config::GenesisConfig,
    registry::RegistryConfig,
    weights,
};
use phala_crypto::Keypair;
use phala_types::{
    AttestationPolicy, Call, Digest, Evidence, SignedTransaction, TOTAL_SUPPLY, Transaction, UNIT,
    WorkerRegistration, system,
};
use phala_types::{BalancesCall, RegistryCall};
use std::time::{Duration, Instant};

const GENESIS: Digest = Digest([7; 32]);
/// 2025-07-01T00:00:00Z, inside the SGX sample's collateral window.
const SAMPLE_TIME_MS: u64 = 1_751_328_000_000;
const CANDIDATES: usize = 2_000;
const RUNS: usize = 5;

fn runtime(accounts: &[Keypair]) -> (Runtime, TestState) {
    let mut allocations: Vec<Allocation> = accounts
        .iter()
        .map(|key| Allocation {
            address: key.address(),
            balance: 1_000 * UNIT,
        })
        .collect();
    allocations.push(Allocation {
        address: system::TREASURY,
        balance: TOTAL_SUPPLY - accounts.len() as u128 * 1_000 * UNIT,
    });
    let config = GenesisConfig {
        timestamp: SAMPLE_TIME_MS,
        fees: FeeSchedule {
            base: 1,
            per_byte: 0,
            per_weight: 0,
            split: FeeSplit {
                burn: 100,
                author: 0,
                treasury: 0,
            },
            treasury: system::TREASURY,
        },
        allocations,
        upward_origins: Vec::new(),
        dev: true,
        registry: RegistryConfig {
            admin: None,
            policy: AttestationPolicy::dev(),
            clusters: Vec::new(),
        },
        contracts: Default::default(),
    };
    let runtime = Runtime::new(GENESIS, config);
    let mut db = TestState::default();
    db.apply(&runtime.genesis_changes());
    (runtime, db)
}

fn signed(key: &Keypair, call: Call) -> SignedTransaction {
    let tx = Transaction {
        signer: key.address(),
        nonce: 0,
        fee: 1,
        expiry: u64::MAX,
        call,
    };
    key.sign_transaction(&GENESIS, tx)
}

/// Where an SGX (v3) quote carries its report data: after the 48-byte header, the last 64
/// bytes of the 384-byte enclave report.
const SGX_REPORT_DATA: std::ops::Range<usize> = 368..432;

/// A registration by `operator` with the real SGX sample quote whose report data is rewritten
/// to bind this worker's keys: it passes every cheap check, then fails DCAP verification only
/// at the enclave report's signature, after nearly all of the work (the costliest failure).
fn registration(operator: &Keypair) -> SignedTransaction {
    let worker = Keypair::generate();
    let mut registration = WorkerRegistration {
        identity: worker.address(),
        ecdh: [9; 32],
        operator: operator.address(),
        cores: 1,
        benchmark: 1,
        freshness: 1,
        gatekeeper: false,
        evidence: Evidence::Simulated {
            measurement: [0; 32],
            report_data: [0; 64],
        },
    };
    let mut quote = include_bytes!("../../attestation/testdata/sgx_quote").to_vec();
    quote[SGX_REPORT_DATA].copy_from_slice(&registration.expected_report_data(GENESIS.as_ref()));
    registration.evidence = Evidence::SgxDcap {
        quote: Bytes::from(quote),
        collateral: Bytes::from_static(include_bytes!(
            "../../attestation/testdata/sgx_quote_collateral.json"
        )),
    };
    let registration = worker.sign_registration(&GENESIS, registration);
    signed(
        operator,
        Call::Registry(RegistryCall::RegisterWorker(registration)),
    )
}

fn measure(name: &str, runtime: &Runtime, db: &TestState, candidates: &[SignedTransaction]) {
    let ctx = BlockContext {
        height: 1,
        timestamp: SAMPLE_TIME_MS + 1_000,
        proposer: Keypair::dev("validator").address(),
    };
    let mut times = Vec::new();
    let mut tried = 0;
    for _ in 0..RUNS {
        let start = Instant::now();
        let (included, _, dropped) =
            runtime.build_block(db, Default::default(), &ctx, candidates.iter().cloned());
        times.push(start.elapsed());
        tried = included.len() + dropped.len();
    }
    times.sort();
    let mean = times.iter().sum::<Duration>() / RUNS as u32;
    println!(
        "{name}: {} candidates, {tried} tried per block; build time mean {mean:.1?}, p50 {:.1?}, max {:.1?}",
        candidates.len(),
        times[RUNS / 2],
        times[RUNS - 1],
    );
}

fn main() {
    let accounts: Vec<Keypair> = (0..CANDIDATES).map(|_| Keypair::generate()).collect();
    let (runtime, db) = runtime(&accounts);
    println!(
        "budget: {} ms of reference time per block tried ({} ms kept)",
        weights::BUILD_BUDGET / 1_000_000,
        weights::MAX_BLOCK_WEIGHT / 1_000_000
    );
    let registrations: Vec<_> = accounts.iter().map(registration).collect();
    measure("failing DCAP registrations", &runtime, &db, &registrations);
    let transfers: Vec<_> = accounts
        .iter()
        .map(|key| {
            let to = Keypair::dev("bob").address();
            signed(
                key,
                Call::Balances(BalancesCall::Transfer { to, amount: UNIT }),
            )
        })
        .collect();
    measure("transfers", &runtime, &db, &transfers);
}
