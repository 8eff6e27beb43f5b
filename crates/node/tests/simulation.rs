//! Deterministic simulations of whole validator networks: the production actors
//! (`engine::start_validator`) on commonware's deterministic runtime and simulated p2p, under
//! random transfer load, partitions, message loss, crashes and a Byzantine proposer.
//!
//! Every run checks: all honest nodes finalized the same chain; total issuance constant after
//! every block; no transaction applied twice; every admitted transaction finalized.
//! A failing run names its seed: `SIM_SEED=<seed> cargo test -p phala-node --test simulation`.

use commonware_cryptography::{Signer as _, ed25519};
use commonware_p2p::simulated::{Config as NetConfig, Link, Network, Oracle};
use commonware_runtime::{
    Clock, Handle, Quota, Runner as _, Spawner, Supervisor as _, deterministic,
};
use commonware_utils::{NZU32, NZUsize, Probability, TestRng};
use phala_client::api::TxStatus;
use phala_crypto::Keypair;
use phala_node::{
    engine::{self, Channels, ValidatorConfig, channel},
    ledger::Ledger,
    spec::{ChainSpec, GenesisOptions, Scheme, ValidatorKey, generate_with},
};
use phala_types::{Call, Digest, Transaction, UNIT};
use std::{sync::Arc, time::Duration};

type Ctx = deterministic::Context;

/// What can go wrong during a run.
#[derive(Clone, Copy, Debug)]
enum Fault {
    None,
    /// Validator 0 is cut off from the rest for a while, then reconnected.
    Partition,
    /// Every link drops this percentage of messages.
    Loss(u64),
    /// Validator 0 is crashed and later restarted from its storage.
    CrashRestart,
    /// Validator 0 proposes blocks with a wrong state root.
    InvalidProposer,
}

#[derive(Debug)]
struct Scenario {
    validators: usize,
    blocks: u64,
    fault: Fault,
}

fn keys(n: usize) -> Vec<Keypair> {
    (0..n)
        .map(|i| Keypair::dev(&format!("sim-validator-{i}")))
        .collect()
}

fn spec(n: usize) -> (ChainSpec, Vec<ValidatorKey>) {
    let options = GenesisOptions {
        chain_id: "sim".into(),
        validators: n,
        host: "127.0.0.1".parse().unwrap(),
        base_port: 30_000,
        dev: true,
        block_interval_ms: 100,
        extra_accounts: vec![],
        extra_balance: 0,
        timestamp: Some(0),
    };
    generate_with(&options, &keys(n), TestRng::new(0)).expect("genesis")
}

fn new_ledger(spec: &ChainSpec) -> Arc<Ledger> {
    let (ledger, _) = Ledger::at_genesis(spec);
    ledger.enable_audit();
    Arc::new(ledger)
}

async fn start_validator(
    context: Ctx,
    oracle: &Oracle<ed25519::PublicKey, Ctx>,
    spec: &ChainSpec,
    key: &ValidatorKey,
    index: usize,
    ledger: Arc<Ledger>,
) {
    let (keypair, share) = key.keys().expect("genesis wrote valid keys");
    let me = keypair.private_key().public_key();
    let scheme = Scheme::signer(
        &spec.namespace(),
        spec.participants().unwrap(),
        spec.sharing().unwrap(),
        share,
    )
    .expect("share matches the sharing");
    let control = oracle.control(me.clone());
    let quota = Quota::per_second(NZU32!(100_000));
    let register = async |id| control.register(id, quota).await.expect("register channel");
    let channels = Channels {
        votes: register(channel::VOTES).await,
        certificates: register(channel::CERTIFICATES).await,
        certificate_fetch: register(channel::CERTIFICATE_FETCH).await,
        blocks: register(channel::BLOCKS).await,
        backfill: register(channel::BACKFILL).await,
        transactions: register(channel::TRANSACTIONS).await,
    };
    let (_, genesis) = spec.genesis();
    let config = ValidatorConfig {
        me,
        scheme,
        partition: format!("validator-{index}"),
        genesis,
        leader_timeout: Duration::from_secs(1),
    };
    let _ = engine::start_validator(
        context,
        config,
        channels,
        control.clone(),
        oracle.manager(),
        ledger,
    )
    .await;
}

/// Starts a validator in its own supervised task so that aborting the task crashes it.
fn spawn_validator(
    context: &Ctx,
    oracle: &Oracle<ed25519::PublicKey, Ctx>,
    spec: &ChainSpec,
    key: &ValidatorKey,
    index: usize,
    ledger: Arc<Ledger>,
) -> Handle<()> {
    let (oracle, spec) = (oracle.clone(), spec.clone());
    let key = ValidatorKey {
        secret: key.secret.clone(),
        share: key.share.clone(),
    };
    context
        .child("validator")
        .with_attribute("index", index)
        .spawn(move |context| async move {
            start_validator(context.child("node"), &oracle, &spec, &key, index, ledger).await;
            futures::future::pending::<()>().await;
        })
}

/// Sends random transfers among the dev accounts to random validators; returns the hashes
/// admitted.
struct Load {
    accounts: Vec<Keypair>,
    nonces: Vec<u64>,
    rng: u64,
    admitted: Vec<Digest>,
}

impl Load {
    fn new(seed: u64) -> Self {
        let accounts: Vec<Keypair> = phala_node::spec::DEV_ACCOUNTS
            .iter()
            .map(|n| Keypair::dev(n))
            .collect();
        Load {
            nonces: vec![0; accounts.len()],
            accounts,
            rng: seed | 1,
            admitted: Vec::new(),
        }
    }

    fn next(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn send_some(&mut self, spec: &ChainSpec, ledgers: &[Arc<Ledger>], live: &[bool]) {
        let count = self.next() % 8;
        for _ in 0..count {
            let from = (self.next() % self.accounts.len() as u64) as usize;
            let to = (self.next() % self.accounts.len() as u64) as usize;
            let amount = 1 + self.next() % (10 * UNIT as u64);
            let target = (self.next() % ledgers.len() as u64) as usize;
            if !live[target] {
                continue;
            }
            let height = ledgers[target].head().height;
            let tx = Transaction {
                signer: self.accounts[from].address(),
                nonce: self.nonces[from],
                fee: UNIT / 100,
                expiry: height + 10_000,
                call: Call::Transfer {
                    to: self.accounts[to].address(),
                    amount: amount as u128,
                },
            };
            let stx = self.accounts[from].sign_transaction(&spec.hash(), tx);
            if let Ok(hash) = ledgers[target].submit(stx) {
                self.nonces[from] += 1;
                self.admitted.push(hash);
            }
        }
    }
}

fn min_height(ledgers: &[Arc<Ledger>]) -> u64 {
    ledgers.iter().map(|l| l.head().height).min().unwrap_or(0)
}

async fn wait_for_height(
    context: &Ctx,
    ledgers: &[Arc<Ledger>],
    height: u64,
    load: &mut Load,
    spec: &ChainSpec,
    live: &[bool],
) {
    while ledgers
        .iter()
        .zip(live)
        .any(|(l, live)| *live && l.head().height < height)
    {
        load.send_some(spec, ledgers, live);
        context.sleep(Duration::from_millis(50)).await;
    }
}

async fn link_all(
    oracle: &Oracle<ed25519::PublicKey, Ctx>,
    peers: &[ed25519::PublicKey],
    link: &Link,
) {
    for a in peers {
        for b in peers {
            if a != b {
                oracle
                    .add_link(a.clone(), b.clone(), link.clone())
                    .await
                    .unwrap();
            }
        }
    }
}

async fn isolate(
    oracle: &Oracle<ed25519::PublicKey, Ctx>,
    peers: &[ed25519::PublicKey],
    victim: usize,
) {
    for (i, other) in peers.iter().enumerate() {
        if i != victim {
            oracle
                .remove_link(peers[victim].clone(), other.clone())
                .await
                .unwrap();
            oracle
                .remove_link(other.clone(), peers[victim].clone())
                .await
                .unwrap();
        }
    }
}

async fn reconnect(
    oracle: &Oracle<ed25519::PublicKey, Ctx>,
    peers: &[ed25519::PublicKey],
    victim: usize,
    link: &Link,
) {
    for (i, other) in peers.iter().enumerate() {
        if i != victim {
            oracle
                .add_link(peers[victim].clone(), other.clone(), link.clone())
                .await
                .unwrap();
            oracle
                .add_link(other.clone(), peers[victim].clone(), link.clone())
                .await
                .unwrap();
        }
    }
}

/// Runs one scenario with one seed and checks every invariant; panics naming the seed.
fn run(scenario: &Scenario, seed: u64) {
    let config = deterministic::Config::new()
        .with_seed(seed)
        .with_timeout(Some(Duration::from_secs(3_600)));
    let validators = scenario.validators;
    let blocks = scenario.blocks;
    let fault = scenario.fault;
    deterministic::Runner::new(config).start(|context| async move {
        let (spec, keys) = spec(validators);
        let peers: Vec<ed25519::PublicKey> = spec.participants().unwrap().into_iter().collect();
        // Key files are in spec order; the engine's peer order is sorted.
        let peer_index = |spec_index: usize| {
            peers
                .iter()
                .position(|p| p.as_ref() == spec.validators[spec_index].address.0)
                .unwrap()
        };
        let (network, oracle) = Network::new_with_peers(
            context.child("network"),
            NetConfig {
                max_size: engine::max_message_size(validators as u32),
                max_peers_per_set: NZUsize!(validators),
                disconnect_on_block: true,
                tracked_peer_sets: NZUsize!(1),
            },
            peers.clone(),
        )
        .await;
        network.start();
        let loss_percent = match fault {
            Fault::Loss(percent) => percent,
            _ => 0,
        };
        let link = Link {
            latency: Duration::from_millis(20),
            jitter: Duration::from_millis(10),
            success_rate: Probability::new(100 - loss_percent, 100).expect("a probability"),
        };
        link_all(&oracle, &peers, &link).await;

        let mut ledgers: Vec<Arc<Ledger>> = (0..validators).map(|_| new_ledger(&spec)).collect();
        if matches!(fault, Fault::InvalidProposer) {
            ledgers[0].corrupt_proposals_for_testing();
        }
        let mut handles: Vec<Handle<()>> = (0..validators)
            .map(|i| spawn_validator(&context, &oracle, &spec, &keys[i], i, ledgers[i].clone()))
            .collect();
        let mut live = vec![true; validators];
        let mut load = Load::new(seed);

        match fault {
            Fault::Partition => {
                wait_for_height(&context, &ledgers, blocks / 4, &mut load, &spec, &live).await;
                isolate(&oracle, &peers, peer_index(0)).await;
                let stuck = ledgers[0].head().height;
                live[0] = false;
                wait_for_height(&context, &ledgers, blocks / 2, &mut load, &spec, &live).await;
                assert!(
                    ledgers[0].head().height <= stuck + 1,
                    "seed {seed}: an isolated validator kept finalizing"
                );
                reconnect(&oracle, &peers, peer_index(0), &link).await;
                live[0] = true;
            }
            Fault::CrashRestart => {
                wait_for_height(&context, &ledgers, blocks / 4, &mut load, &spec, &live).await;
                handles[0].abort();
                live[0] = false;
                let crashed_at = ledgers[0].head().height;
                wait_for_height(&context, &ledgers, blocks / 2, &mut load, &spec, &live).await;
                // Restart from storage with a fresh in-memory ledger, as a real restart would.
                let before: Vec<Digest> = (0..=crashed_at)
                    .map(|h| ledgers[0].finalized_digest(h).unwrap())
                    .collect();
                ledgers[0] = new_ledger(&spec);
                handles[0] =
                    spawn_validator(&context, &oracle, &spec, &keys[0], 0, ledgers[0].clone());
                live[0] = true;
                wait_for_height(&context, &ledgers, blocks * 3 / 4, &mut load, &spec, &live).await;
                for (height, digest) in before.iter().enumerate() {
                    assert_eq!(
                        ledgers[0].finalized_digest(height as u64).as_ref(),
                        Some(digest),
                        "seed {seed}: restarted validator lost or changed block {height}"
                    );
                }
            }
            _ => {}
        }
        wait_for_height(&context, &ledgers, blocks, &mut load, &spec, &live).await;

        // Let the admitted transactions drain: all must finalize everywhere.
        let admitted = load.admitted.clone();
        let mut rounds = 0;
        while !admitted.iter().all(|h| {
            ledgers
                .iter()
                .all(|l| matches!(l.tx_status(h), TxStatus::Finalized { .. }))
        }) {
            rounds += 1;
            assert!(
                rounds < 2_000,
                "seed {seed}: admitted transactions never finalized: {:?}",
                admitted.iter().find_map(|h| ledgers
                    .iter()
                    .map(|l| l.tx_status(h))
                    .find(|s| !matches!(s, TxStatus::Finalized { .. })))
            );
            context.sleep(Duration::from_millis(50)).await;
        }

        let height = min_height(&ledgers);
        for h in 0..=height {
            let reference = ledgers[0].finalized_digest(h);
            for (i, ledger) in ledgers.iter().enumerate() {
                assert_eq!(
                    ledger.finalized_digest(h),
                    reference,
                    "seed {seed}: validator {i} forked at height {h}"
                );
            }
        }
        for (i, ledger) in ledgers.iter().enumerate() {
            let audit = ledger.audit().expect("audit on");
            assert_eq!(
                audit.issuance_violations, 0,
                "seed {seed}: validator {i} broke the total issuance"
            );
            assert_eq!(
                audit.duplicate_transactions, 0,
                "seed {seed}: validator {i} applied a transaction twice"
            );
            assert_eq!(
                ledger.total_issuance(),
                phala_types::TOTAL_SUPPLY,
                "seed {seed}"
            );
        }
        assert!(
            !admitted.is_empty(),
            "seed {seed}: the load generator admitted nothing"
        );
        if matches!(fault, Fault::InvalidProposer) {
            let byzantine = &spec.validators[0].address;
            assert!(
                ledgers[1]
                    .proposers_since_genesis()
                    .iter()
                    .all(|p| p != byzantine),
                "seed {seed}: a block with a wrong state root was finalized"
            );
        }
        drop(handles);
    });
}

/// The seeds to run: `SIM_SEED` replays one; `SIM_SEEDS=n` runs seeds 1..=n; else the default.
fn seeds(default: u64) -> Vec<u64> {
    match std::env::var("SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("SIM_SEED is a number")],
        Err(_) => {
            let count = std::env::var("SIM_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(default);
            (1..=count).collect()
        }
    }
}

fn run_seeds(scenario: Scenario, default_seeds: u64) {
    for seed in seeds(default_seeds) {
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&scenario, seed)));
        if let Err(panic) = result {
            eprintln!(
                "simulation {scenario:?} failed with seed {seed}; replay with SIM_SEED={seed}"
            );
            std::panic::resume_unwind(panic);
        }
    }
}

// The default seed counts add up to 60 runs per `cargo test`; the ignored test below runs
// every scenario over many more (`cargo test -p phala-node --test simulation -- --ignored`).

#[test]
fn four_validators_finalize_under_load() {
    run_seeds(
        Scenario {
            validators: 4,
            blocks: 200,
            fault: Fault::None,
        },
        40,
    );
}

#[test]
fn seven_validators_finalize_under_load() {
    run_seeds(
        Scenario {
            validators: 7,
            blocks: 200,
            fault: Fault::None,
        },
        4,
    );
}

#[test]
fn partitioned_validator_heals() {
    run_seeds(
        Scenario {
            validators: 4,
            blocks: 120,
            fault: Fault::Partition,
        },
        4,
    );
}

#[test]
fn lossy_links() {
    run_seeds(
        Scenario {
            validators: 4,
            blocks: 100,
            fault: Fault::Loss(10),
        },
        4,
    );
}

#[test]
fn crashed_validator_restarts_from_storage() {
    run_seeds(
        Scenario {
            validators: 4,
            blocks: 120,
            fault: Fault::CrashRestart,
        },
        4,
    );
}

#[test]
fn invalid_proposals_are_never_finalized() {
    run_seeds(
        Scenario {
            validators: 4,
            blocks: 80,
            fault: Fault::InvalidProposer,
        },
        4,
    );
}

#[test]
#[ignore = "long: many seeds of every scenario (nightly)"]
fn many_seeds_every_scenario() {
    let count = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    for (validators, blocks, fault) in [
        (4, 200, Fault::None),
        (7, 200, Fault::None),
        (4, 120, Fault::Partition),
        (4, 100, Fault::Loss(20)),
        (4, 120, Fault::CrashRestart),
        (4, 80, Fault::InvalidProposer),
    ] {
        let scenario = Scenario {
            validators,
            blocks,
            fault,
        };
        for seed in 1_000..1_000 + count {
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&scenario, seed)));
            if let Err(panic) = result {
                eprintln!(
                    "simulation {scenario:?} failed with seed {seed}; replay with SIM_SEED={seed}"
                );
                std::panic::resume_unwind(panic);
            }
        }
    }
}
