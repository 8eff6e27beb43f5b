//! Deterministic simulations of whole validator networks: the production actors
//! (`engine::start_validator`) on commonware's deterministic runtime and simulated p2p, under
//! random transfer load, partitions, message loss, crashes, a loss of quorum, and Byzantine
//! validators (wrong state roots, invalid transactions, timestamp games, withheld votes, a
//! leader that sends different bodies under one header, a peer that serves forged bodies on
//! backfill).
//!
//! Every run checks: no honest node stalls; all nodes finalized and stored the same chain
//! (same blocks, same bodies); total issuance constant after every block; no transaction
//! applied twice; every admitted transaction finalized.
//! A failing run names its seed: `SIM_SEED=<seed> cargo test -p phala-node --test simulation`.

mod byzantine;

use byzantine::{Rewrite, Tamper};
use commonware_codec::Encode;
use commonware_consensus::types::Height;
use commonware_cryptography::{Signer as _, ed25519};
use commonware_p2p::simulated::{Config as NetConfig, Link, Network, Oracle};
use commonware_runtime::{
    Clock, Handle, Quota, Runner as _, Spawner, Supervisor as _, deterministic,
};
use commonware_utils::{NZU32, NZUsize, Probability, TestRng};
use phala_api::rpc::TxStatus;
use phala_crypto::Keypair;
use phala_node::{
    engine::{self, Channels, Marshal, ValidatorConfig, channel},
    ledger::{Ledger, Misbehaviour},
    spec::{ChainSpec, GenesisOptions, Scheme, ValidatorKey, generate_with},
};
use phala_types::BalancesCall;
use phala_types::{Call, Digest, SignedTransaction, Transaction, UNIT};
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

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
    /// Validator 0 proposes blocks carrying a transaction with a broken signature.
    InvalidTransactions,
    /// Validator 0 proposes timestamps too early, far in the future, or at the edge of drift.
    TimestampGames,
    /// Validator 0 never sends a vote.
    WithheldVotes,
    /// Validator 0, when leader, sends one honest validator a forged body under the true
    /// header (the others get the true block).
    EquivocatingLeader,
    /// Validator 0 answers backfill requests with forged bodies; validator 1 is cut off for a
    /// while so that it must backfill.
    ForgedBackfill,
    /// f validators are cut off (the rest go on), then the network splits in halves (no
    /// quorum: nothing finalizes), then everything heals.
    QuorumLoss,
}

impl Fault {
    /// How validator 0's proposals are wrong, if they are.
    fn misbehaviour(self) -> Option<Misbehaviour> {
        match self {
            Fault::InvalidProposer => Some(Misbehaviour::WrongStateRoot),
            Fault::InvalidTransactions => Some(Misbehaviour::InvalidTransaction),
            Fault::TimestampGames => Some(Misbehaviour::TimestampGames),
            _ => None,
        }
    }
}

/// How a validator's outgoing messages are tampered with, per channel.
#[derive(Clone, Default)]
struct Rewrites {
    votes: Option<Rewrite>,
    blocks: Option<Rewrite>,
    backfill: Option<Rewrite>,
}

impl Rewrites {
    /// Validator 0's network behaviour under `fault`; `victim` is the validator it targets.
    fn for_fault(fault: Fault, victim: &ed25519::PublicKey) -> Self {
        match fault {
            Fault::WithheldVotes => Rewrites {
                votes: Some(byzantine::withhold()),
                ..Rewrites::default()
            },
            Fault::EquivocatingLeader => Rewrites {
                blocks: Some(byzantine::equivocating_blocks(vec![victim.clone()], bait())),
                ..Rewrites::default()
            },
            Fault::ForgedBackfill => Rewrites {
                backfill: Some(byzantine::forged_backfill(bait())),
                ..Rewrites::default()
            },
            _ => Rewrites::default(),
        }
    }
}

/// A valid transaction that no honest block contains: the extra body of forged blocks.
fn bait() -> SignedTransaction {
    let from = phala_node::spec::dev_operator(0);
    let tx = Transaction {
        signer: from.address(),
        nonce: 0,
        fee: UNIT / 100,
        expiry: u64::MAX,
        call: Call::Balances(BalancesCall::Transfer {
            to: Keypair::dev("bob").address(),
            amount: UNIT,
        }),
    };
    from.sign_transaction(&spec(4).0.hash(), tx)
}

#[derive(Debug, Clone, Copy)]
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
        base_port: 30_000,
        ..GenesisOptions::local_dev("sim", n)
    };
    generate_with(&options, &keys(n), TestRng::new(0)).expect("genesis")
}

/// Validator `index`'s ledger on its storage in the simulated runtime: where it left it, if it
/// ran before.
async fn open_ledger(context: &Ctx, spec: &ChainSpec, index: usize) -> Arc<Ledger> {
    let partition = format!("ledger-{index}");
    let (ledger, _) = Ledger::open_on(context.child("ledger"), &partition, spec, None)
        .await
        .expect("the ledger opens");
    ledger.enable_audit();
    Arc::new(ledger)
}

/// Where a validator's marshal mailbox is put once started, to read its stored blocks.
type MarshalSlot = Arc<Mutex<Option<Marshal>>>;

#[allow(clippy::too_many_arguments)]
async fn start_validator(
    context: Ctx,
    oracle: &Oracle<ed25519::PublicKey, Ctx>,
    spec: &ChainSpec,
    key: &ValidatorKey,
    index: usize,
    ledger: Arc<Ledger>,
    rewrites: Rewrites,
    slot: MarshalSlot,
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
    let others: Vec<ed25519::PublicKey> = spec
        .participants()
        .unwrap()
        .into_iter()
        .filter(|p| *p != me)
        .collect();
    let register = async |id, rewrite: Option<Rewrite>| {
        let (sender, receiver) = control.register(id, quota).await.expect("register channel");
        (Tamper::new(sender, others.clone(), rewrite), receiver)
    };
    let channels = Channels {
        votes: register(channel::VOTES, rewrites.votes).await,
        certificates: register(channel::CERTIFICATES, None).await,
        certificate_fetch: register(channel::CERTIFICATE_FETCH, None).await,
        blocks: register(channel::BLOCKS, rewrites.blocks).await,
        backfill: register(channel::BACKFILL, rewrites.backfill).await,
        transactions: register(channel::TRANSACTIONS, None).await,
    };
    let (_, genesis) = spec.genesis().expect("genesis");
    let config = ValidatorConfig {
        me,
        scheme,
        partition: format!("validator-{index}"),
        genesis,
        leader_timeout: Duration::from_secs(1),
    };
    let (marshal, _) = engine::start_validator(
        context,
        config,
        channels,
        control.clone(),
        oracle.manager(),
        ledger,
    )
    .await;
    *slot.lock().unwrap() = Some(marshal);
}

/// Starts a validator in its own supervised task so that aborting the task crashes it.
#[allow(clippy::too_many_arguments)]
fn spawn_validator(
    context: &Ctx,
    oracle: &Oracle<ed25519::PublicKey, Ctx>,
    spec: &ChainSpec,
    key: &ValidatorKey,
    index: usize,
    ledger: Arc<Ledger>,
    rewrites: Rewrites,
    slot: MarshalSlot,
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
            let node = context.child("node");
            start_validator(node, &oracle, &spec, &key, index, ledger, rewrites, slot).await;
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
                call: Call::Balances(BalancesCall::Transfer {
                    to: self.accounts[to].address(),
                    amount: amount as u128,
                }),
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

/// Sends load until every live validator reaches `height`. An honest validator that stops
/// finalizing is a bug: past a generous bound this panics naming it.
async fn wait_for_height(
    context: &Ctx,
    ledgers: &[Arc<Ledger>],
    height: u64,
    load: &mut Load,
    spec: &ChainSpec,
    live: &[bool],
) {
    let start = context.current();
    let bound = Duration::from_secs(120 + 2 * height.saturating_sub(min_height(ledgers)));
    loop {
        let behind = ledgers
            .iter()
            .zip(live)
            .position(|(l, live)| *live && l.head().height < height);
        let Some(behind) = behind else {
            return;
        };
        let waited = context.current().duration_since(start).unwrap_or_default();
        assert!(
            waited < bound,
            "validator {behind} stalled at height {} (waiting for {height})",
            ledgers[behind].head().height
        );
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

/// Sends load for `duration` of simulated time.
async fn load_for(
    context: &Ctx,
    duration: Duration,
    ledgers: &[Arc<Ledger>],
    load: &mut Load,
    spec: &ChainSpec,
    live: &[bool],
) {
    let start = context.current();
    while context.current().duration_since(start).unwrap_or_default() < duration {
        load.send_some(spec, ledgers, live);
        context.sleep(Duration::from_millis(50)).await;
    }
}

/// Links exactly the pairs of peers `connected` names (by peer index).
async fn connect(
    oracle: &Oracle<ed25519::PublicKey, Ctx>,
    peers: &[ed25519::PublicKey],
    connected: impl Fn(usize, usize) -> bool,
    link: &Link,
) {
    for (a, from) in peers.iter().enumerate() {
        for (b, to) in peers.iter().enumerate() {
            if a == b {
                continue;
            }
            let _ = oracle.remove_link(from.clone(), to.clone()).await;
            if connected(a, b) {
                oracle
                    .add_link(from.clone(), to.clone(), link.clone())
                    .await
                    .unwrap();
            }
        }
    }
}

/// Every stored block of every validator, encoded, up to `height`.
async fn stored_blocks(slots: &[MarshalSlot], height: u64) -> Vec<Vec<Vec<u8>>> {
    let mut all = Vec::new();
    for slot in slots {
        let marshal = slot.lock().unwrap().clone().expect("validator started");
        let mut blocks = Vec::new();
        for h in 1..=height {
            let block = marshal.get_block(Height::new(h)).await;
            blocks.push(block.map(|b| b.encode().to_vec()).unwrap_or_default());
        }
        all.push(blocks);
    }
    all
}

fn now_ms(context: &Ctx) -> u64 {
    context
        .current()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The network of one run: validators, their ledgers and marshal slots, the load.
struct Net {
    spec: ChainSpec,
    keys: Vec<ValidatorKey>,
    peers: Vec<ed25519::PublicKey>,
    oracle: Oracle<ed25519::PublicKey, Ctx>,
    link: Link,
    ledgers: Vec<Arc<Ledger>>,
    slots: Vec<MarshalSlot>,
    handles: Vec<Handle<()>>,
    live: Vec<bool>,
    load: Load,
}

impl Net {
    /// The peer index (sorted engine order) of the validator at `spec_index`.
    fn peer(&self, spec_index: usize) -> usize {
        self.peers
            .iter()
            .position(|p| p.as_ref() == self.spec.validators[spec_index].address.0)
            .unwrap()
    }

    fn spawn(&self, context: &Ctx, index: usize, rewrites: Rewrites) -> Handle<()> {
        spawn_validator(
            context,
            &self.oracle,
            &self.spec,
            &self.keys[index],
            index,
            self.ledgers[index].clone(),
            rewrites,
            self.slots[index].clone(),
        )
    }

    async fn wait(&mut self, context: &Ctx, height: u64) {
        wait_for_height(
            context,
            &self.ledgers,
            height,
            &mut self.load,
            &self.spec,
            &self.live,
        )
        .await;
    }

    async fn load_for(&mut self, context: &Ctx, duration: Duration) {
        load_for(
            context,
            duration,
            &self.ledgers,
            &mut self.load,
            &self.spec,
            &self.live,
        )
        .await;
    }

    /// Connects the validators by group (`groups[i]` for the validator at spec index i).
    async fn partition(&self, groups: &[usize]) {
        self.connect(|a, b| groups[a] == groups[b]).await;
    }

    /// Links exactly the pairs of validators (by spec index) `connected` names.
    async fn connect(&self, connected: impl Fn(usize, usize) -> bool) {
        let spec_index: Vec<usize> = (0..self.peers.len())
            .map(|peer| {
                (0..self.peers.len())
                    .find(|&i| self.peer(i) == peer)
                    .unwrap()
            })
            .collect();
        let by_peer = |a: usize, b: usize| connected(spec_index[a], spec_index[b]);
        connect(&self.oracle, &self.peers, by_peer, &self.link).await;
    }
}

/// Runs the fault's middle phase (partitions, crashes), checking what must hold during it.
async fn disturb(context: &Ctx, net: &mut Net, fault: Fault, blocks: u64, seed: u64) {
    let n = net.ledgers.len();
    match fault {
        Fault::Partition | Fault::ForgedBackfill => {
            // A partition victim must catch up by backfill afterwards.
            let victim = if matches!(fault, Fault::Partition) {
                0
            } else {
                1
            };
            net.wait(context, blocks / 4).await;
            let mut groups = vec![0; n];
            groups[victim] = 1;
            net.partition(&groups).await;
            let stuck = net.ledgers[victim].head().height;
            net.live[victim] = false;
            net.wait(context, blocks / 2).await;
            assert!(
                net.ledgers[victim].head().height <= stuck + 1,
                "seed {seed}: an isolated validator kept finalizing"
            );
            if matches!(fault, Fault::ForgedBackfill) {
                // First the victim reaches only the forging validator 0, so it must backfill
                // from it (honest nodes go on among themselves and with 0).
                net.connect(|a, b| a != victim && b != victim || a == 0 || b == 0)
                    .await;
                net.load_for(context, Duration::from_secs(10)).await;
            }
            net.partition(&vec![0; n]).await;
            net.live[victim] = true;
        }
        Fault::QuorumLoss => {
            let f = (n - 1) / 3;
            net.wait(context, blocks / 4).await;
            // f validators cut off: the others still finalize.
            let groups: Vec<usize> = (0..n).map(|i| usize::from(i >= n - f)).collect();
            net.partition(&groups).await;
            for i in n - f..n {
                net.live[i] = false;
            }
            net.wait(context, blocks / 2).await;
            // Halves: no side has a quorum, nothing may finalize.
            let groups: Vec<usize> = (0..n).map(|i| usize::from(i >= n / 2)).collect();
            net.partition(&groups).await;
            net.load_for(context, Duration::from_secs(2)).await;
            // Laggards may still catch up to what was final (and a block certified just before
            // the split may reach only one side), but nothing new is finalized.
            let final_height = net.ledgers.iter().map(|l| l.head().height + 1).max();
            net.load_for(context, Duration::from_secs(10)).await;
            for (i, ledger) in net.ledgers.iter().enumerate() {
                assert!(
                    Some(ledger.head().height) <= final_height,
                    "seed {seed}: validator {i} finalized without a quorum"
                );
            }
            net.partition(&vec![0; n]).await;
            net.live = vec![true; n];
        }
        Fault::CrashRestart => {
            net.wait(context, blocks / 4).await;
            net.handles[0].abort();
            net.live[0] = false;
            let crashed_at = net.ledgers[0].head().height;
            net.wait(context, blocks / 2).await;
            // Restart from storage with a fresh in-memory ledger, as a real restart would.
            let mut before: Vec<Digest> = Vec::new();
            for h in 0..=crashed_at {
                before.push(digest_at(&net.ledgers[0], h).await.unwrap());
            }
            // The crashed ledger's storage is closed before it is opened again.
            let crashed = net.ledgers.remove(0);
            let crashed_head = crashed.head();
            drop(crashed);
            net.ledgers
                .insert(0, open_ledger(context, &net.spec, 0).await);
            assert_eq!(
                net.ledgers[0].head(),
                crashed_head,
                "seed {seed}: the restarted ledger opens where it stopped, replaying nothing"
            );
            net.handles[0] = net.spawn(context, 0, Rewrites::default());
            net.live[0] = true;
            net.wait(context, blocks * 3 / 4).await;
            for (height, digest) in before.iter().enumerate() {
                assert_eq!(
                    digest_at(&net.ledgers[0], height as u64).await.as_ref(),
                    Some(digest),
                    "seed {seed}: restarted validator lost or changed block {height}"
                );
            }
        }
        _ => {}
    }
}

/// The digest of the finalized block at `height`, if the ledger has it.
async fn digest_at(ledger: &Ledger, height: u64) -> Option<Digest> {
    ledger
        .finalized_digest(height)
        .await
        .expect("history reads")
}

/// The first admitted transaction some validator does not report finalized, with its status.
async fn unfinalized(net: &Net) -> Option<(Digest, TxStatus)> {
    for hash in &net.load.admitted {
        for ledger in &net.ledgers {
            let status = ledger.tx_status(hash).await.expect("history reads");
            if !matches!(status, TxStatus::Finalized { .. }) {
                return Some((*hash, status));
            }
        }
    }
    None
}

/// Waits until every admitted transaction is finalized on every validator.
async fn drain(context: &Ctx, net: &Net, seed: u64) {
    let mut rounds = 0;
    while let Some(missing) = unfinalized(net).await {
        rounds += 1;
        assert!(
            rounds < 2_000,
            "seed {seed}: admitted transactions never finalized: {missing:?}"
        );
        context.sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !net.load.admitted.is_empty(),
        "seed {seed}: the load generator admitted nothing"
    );
}

/// The invariants every run ends with.
async fn check_agreement(context: &Ctx, net: &Net, fault: Fault, seed: u64) {
    let height = min_height(&net.ledgers);
    for h in 0..=height {
        let reference = digest_at(&net.ledgers[1], h).await;
        for (i, ledger) in net.ledgers.iter().enumerate() {
            assert_eq!(
                digest_at(ledger, h).await,
                reference,
                "seed {seed}: validator {i} forked at height {h}"
            );
        }
    }
    // The same bodies are stored everywhere: no forged copy was ever kept.
    let stored = stored_blocks(&net.slots, height).await;
    for (i, blocks) in stored.iter().enumerate() {
        for (h, block) in blocks.iter().enumerate() {
            assert!(
                *block == stored[1][h] && !block.is_empty(),
                "seed {seed}: validator {i} stores another block {} than validator 1",
                h + 1
            );
        }
    }
    for (i, ledger) in net.ledgers.iter().enumerate() {
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
    let byzantine = &net.spec.validators[0].address;
    if matches!(fault, Fault::InvalidProposer) {
        for h in 0..=net.ledgers[1].head().height {
            let header = net.ledgers[1]
                .finalized_header(h)
                .await
                .expect("history reads");
            assert!(
                header.is_some_and(|header| header.proposer != *byzantine),
                "seed {seed}: a block with a wrong state root was finalized (height {h})"
            );
        }
    }
    if matches!(fault, Fault::TimestampGames) {
        let head = net.ledgers[1].head();
        assert!(
            head.timestamp <= now_ms(context) + 3_000,
            "seed {seed}: the chain's time ran ahead of the validators' clocks"
        );
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

        let mut ledgers: Vec<Arc<Ledger>> = Vec::with_capacity(validators);
        for index in 0..validators {
            ledgers.push(open_ledger(&context, &spec, index).await);
        }
        if let Some(misbehaviour) = fault.misbehaviour() {
            ledgers[0].misbehave_for_testing(misbehaviour);
        }
        let mut net = Net {
            spec,
            keys,
            peers,
            oracle,
            link,
            ledgers,
            slots: (0..validators).map(|_| MarshalSlot::default()).collect(),
            handles: Vec::new(),
            live: vec![true; validators],
            load: Load::new(seed),
        };
        let victim = net.peers[net.peer(1)].clone();
        for i in 0..validators {
            let rewrites = match i {
                0 => Rewrites::for_fault(fault, &victim),
                _ => Rewrites::default(),
            };
            let handle = net.spawn(&context, i, rewrites);
            net.handles.push(handle);
        }

        disturb(&context, &mut net, fault, blocks, seed).await;
        net.wait(&context, blocks).await;
        drain(&context, &net, seed).await;
        check_agreement(&context, &net, fault, seed).await;
        drop(net.handles);
    });
}

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

// Every scenario runs over the same number of seeds by default (`SIM_SEEDS` overrides it);
// the ignored test below runs every scenario over many more
// (`cargo test -p phala-node --test simulation -- --ignored`).
const SEEDS: u64 = 6;

/// Every scenario: (validators, blocks, fault).
const SCENARIOS: [(usize, u64, Fault); 13] = [
    (4, 200, Fault::None),
    (7, 200, Fault::None),
    (4, 120, Fault::Partition),
    (4, 100, Fault::Loss(10)),
    (4, 120, Fault::CrashRestart),
    (4, 80, Fault::InvalidProposer),
    (4, 80, Fault::InvalidTransactions),
    (4, 80, Fault::TimestampGames),
    (4, 80, Fault::WithheldVotes),
    (4, 100, Fault::EquivocatingLeader),
    (4, 120, Fault::ForgedBackfill),
    (4, 120, Fault::QuorumLoss),
    (7, 80, Fault::QuorumLoss),
];

fn scenario(index: usize) -> Scenario {
    let (validators, blocks, fault) = SCENARIOS[index];
    Scenario {
        validators,
        blocks,
        fault,
    }
}

#[test]
fn four_validators_finalize_under_load() {
    run_seeds(scenario(0), SEEDS);
}

#[test]
fn seven_validators_finalize_under_load() {
    run_seeds(scenario(1), SEEDS);
}

#[test]
fn partitioned_validator_heals() {
    run_seeds(scenario(2), SEEDS);
}

#[test]
fn lossy_links() {
    run_seeds(scenario(3), SEEDS);
}

#[test]
fn crashed_validator_restarts_from_storage() {
    run_seeds(scenario(4), SEEDS);
}

#[test]
fn wrong_state_roots_are_never_finalized() {
    run_seeds(scenario(5), SEEDS);
}

#[test]
fn invalid_transactions_are_never_finalized() {
    run_seeds(scenario(6), SEEDS);
}

#[test]
fn timestamp_games_do_not_move_the_chains_clock() {
    run_seeds(scenario(7), SEEDS);
}

#[test]
fn withheld_votes_do_not_stop_finality() {
    run_seeds(scenario(8), SEEDS);
}

#[test]
fn a_leader_equivocating_on_bodies_halts_nobody() {
    run_seeds(scenario(9), SEEDS);
}

#[test]
fn forged_bodies_on_backfill_are_refused() {
    run_seeds(scenario(10), SEEDS);
}

#[test]
fn four_validators_survive_a_loss_of_quorum() {
    run_seeds(scenario(11), SEEDS);
}

#[test]
fn seven_validators_survive_a_loss_of_quorum() {
    run_seeds(scenario(12), SEEDS);
}

#[test]
#[ignore = "long: many seeds of every scenario (nightly)"]
fn many_seeds_every_scenario() {
    let count = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    for index in 0..SCENARIOS.len() {
        let scenario = scenario(index);
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
