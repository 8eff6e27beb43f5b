//! Seeded simulation of the secure-worker layer: a certified chain (the real state machine, a
//! real BLS threshold certificate on every block), 1-3 gatekeeper and 4 worker pRuntimes (real
//! `Pruntime`s on disk, simulated TEE), and a relayer for each that runs at random times with
//! random batch sizes, while pRuntimes crash and restart from their sealed checkpoints (some in
//! the middle of a sync) and relayers now and then turn Byzantine (a dropped, reordered or
//! altered message, cut headers, a spoiled certificate: each refused with nothing applied). The
//! admin registers nothing by hand: relayers register their workers, then the admin admits the
//! gatekeepers, assigns two workers to each of two clusters and rotates the master key twice. Meanwhile
//! users deploy the analytics contract on both clusters and send it random encrypted commands:
//! most succeed, some are refused by the contract, run out of gas or arrive tampered.
//!
//! Invariants at the end of every run: every gatekeeper holds the same master key of every
//! generation and it matches the public key the chain recorded; every worker holds the cluster
//! keys of its cluster for every generation, equal to what the master keys derive; every
//! pRuntime has read exactly the messages its streams hold (no gap, no repeat); no honest batch
//! was refused and no key delivery failed; every worker of a cluster executed every command of
//! its contracts and holds the same state commitment, which matches the chain's reports, and no
//! report was disputed. A failing seed prints `PRUNTIME_SIM_SEED=…`.

use commonware_codec::{Copying, DecodeExt, Encode};
use phala_api::{
    pruntime::{Info, Mode, RegistrationRequest, SyncBatch, TrustAnchor},
    query::seal_command,
    rpc::{HeaderJson, OutboxMessageJson, ProofJson, StreamProof, Witness},
};
use phala_chain::{
    BlockContext, Runtime, commitment::mocks::TestState, contracts::keys as contract_keys, merkle,
    mq::MessageLocation, registry, state::Overlay,
};
use phala_crypto::Keypair;
use phala_node::{
    certify::Certifier,
    spec::{ChainSpec, GenesisOptions, dev_operator, generate_with},
};
use phala_pruntime::{
    Options, Pruntime, PruntimeError,
    keys::{cluster_key, master_public_key},
    tee::Simulated,
};
use phala_types::{
    Address, Call, ContractId, ContractInstantiated, Destination, DownwardMessage, Header,
    ReportRecord, SignedTransaction, Transaction, UNIT,
    contracts::{contract_id, topics as contract_topics},
    registry::decode_payload,
};
use phala_types::{ContractsCall, MqCall, RegistryCall};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::path::PathBuf;

/// The chain: state machine, headers, certificates and outboxes by height.
struct Chain {
    spec: ChainSpec,
    runtime: Runtime,
    db: TestState,
    certifier: Certifier,
    headers: Vec<Header>,
    certificates: Vec<Vec<u8>>,
    outboxes: Vec<Vec<DownwardMessage>>,
    pending: Vec<SignedTransaction>,
}

impl Chain {
    fn new() -> Self {
        Self::with_validators(7)
    }

    /// A chain whose validator keys and group key derive from `seed` (another seed: another
    /// validator set with another group key, under the same chain id).
    fn with_validators(seed: u64) -> Self {
        let options = GenesisOptions {
            base_port: 30_000,
            timestamp: Some(1_700_000_000_000),
            ..GenesisOptions::local_dev("pruntime-sim", 4)
        };
        let keys: Vec<_> = (0..4)
            .map(|i| Keypair::dev(&format!("sim-{seed}-{i}")))
            .collect();
        let (spec, validator_keys) =
            generate_with(&options, &keys, commonware_utils::TestRng::new(seed)).unwrap();
        let certifier = Certifier::new(&spec, &validator_keys).unwrap();
        let runtime = Runtime::new(spec.hash(), spec.genesis.clone());
        let (changes, genesis) = spec.genesis().unwrap();
        let mut db = TestState::default();
        db.apply(&changes);
        assert_eq!(db.root(), genesis.header.state_root);
        Chain {
            spec,
            runtime,
            db,
            certifier,
            headers: vec![genesis.header],
            certificates: vec![Vec::new()],
            outboxes: vec![Vec::new()],
            pending: Vec::new(),
        }
    }

    fn height(&self) -> u64 {
        self.headers.len() as u64 - 1
    }

    fn anchor(&self) -> (TrustAnchor, String) {
        let anchor = TrustAnchor {
            chain_id: self.spec.chain_id.clone(),
            genesis_hash: hex::encode(self.spec.hash()),
            identity: self.spec.identity.clone(),
            namespace: hex::encode(self.spec.namespace()),
        };
        (anchor, hex::encode(self.headers[0].hash()))
    }

    /// Finalizes a block of the pending transactions that still apply.
    fn produce(&mut self) {
        let parent = self.headers.last().unwrap().clone();
        let ctx = BlockContext {
            height: parent.height + 1,
            timestamp: parent.timestamp + 100,
            proposer: Keypair::dev("sim-0").address(),
        };
        let candidates = std::mem::take(&mut self.pending);
        let (txs, executed, _dropped) =
            self.runtime
                .build_block(&self.db, Default::default(), &ctx, candidates);
        self.db.apply(&executed.changes);
        let header = Header {
            height: ctx.height,
            parent: parent.hash(),
            timestamp: ctx.timestamp,
            tx_root: merkle::tx_root(&txs),
            state_root: self.db.root(),
            outbox_root: merkle::outbox_root(&executed.outbox.messages),
            epoch: 0,
            proposer: ctx.proposer,
        };
        let certificate = self.certifier.certify(ctx.height, header.hash()).unwrap();
        self.headers.push(header);
        self.certificates.push(certificate);
        self.outboxes.push(executed.outbox.messages);
    }

    /// The nonce `signer`'s next submitted transaction gets.
    fn next_nonce(&self, signer: &Keypair) -> u64 {
        let state = Overlay::new(&self.db);
        let queued = self
            .pending
            .iter()
            .filter(|t| t.tx.signer == signer.address())
            .count();
        phala_chain::balances::account(&state, &signer.address()).nonce + queued as u64
    }

    fn submit(&mut self, signer: &Keypair, call: Call) {
        let nonce = self.next_nonce(signer);
        let tx = Transaction {
            signer: signer.address(),
            nonce,
            fee: UNIT,
            expiry: self.height() + 100,
            call,
        };
        self.pending
            .push(signer.sign_transaction(&self.spec.hash(), tx));
    }

    fn value(&self, key: &[u8]) -> Option<Vec<u8>> {
        use phala_chain::state::StateRead;
        self.db.get(key)
    }

    /// The batch an honest relayer sends next: every old message, up to 1,000 blocks.
    fn next_batch(&self, info: &Info) -> SyncBatch {
        self.batch(
            info.height,
            &info.streams,
            &info.identity,
            1_000,
            usize::MAX,
        )
    }

    /// What pherry builds from a node's relayer RPCs, from this chain directly, with at most
    /// `backfill_cap` old messages of streams joined late (the rest in later batches, as
    /// pherry does past what one witness proves).
    fn batch(
        &self,
        height: u64,
        streams: &[(Destination, u64)],
        origin: &Address,
        limit: u64,
        backfill_cap: usize,
    ) -> SyncBatch {
        let last = (height + limit).min(self.height());
        let headers = (height + 1..=last)
            .map(|h| HeaderJson::from_header(&self.headers[h as usize]))
            .collect();
        let mut messages = Vec::new();
        let mut after = Vec::new();
        let mut backfilled = 0;
        for (destination, next) in streams {
            let mut sequence = *next;
            while let Some(location) = self
                .value(&phala_chain::mq::keys::stream_message(
                    destination,
                    sequence,
                ))
                .and_then(|v| MessageLocation::decode(&v))
                .filter(|l| l.height <= last)
            {
                if location.height <= height {
                    if backfilled == backfill_cap {
                        break;
                    }
                    backfilled += 1;
                }
                let outbox = &self.outboxes[location.height as usize];
                let leaves: Vec<_> = outbox.iter().map(merkle::message_leaf).collect();
                let proof = merkle::prove(&leaves, location.index as usize).unwrap();
                messages.push(OutboxMessageJson {
                    height: location.height,
                    index: location.index,
                    message: hex::encode(outbox[location.index as usize].encode()),
                    leaf_count: proof.leaf_count,
                    siblings: proof.siblings.iter().map(hex::encode).collect(),
                });
                sequence += 1;
            }
            after.push((*destination, sequence));
        }
        messages.sort_by_key(|m| (m.height, m.index));
        // Streams joined late: their old messages are proven by state (as the node does).
        let split = messages.partition_point(|m| m.height <= height);
        let new_messages = messages.split_off(split);
        let mut backfill = Vec::new();
        let mut backfill_proofs = Vec::new();
        let mut codes = Vec::new();
        for message in messages.iter().chain(&new_messages) {
            let decoded =
                DownwardMessage::decode(Copying(&hex::decode(&message.message).unwrap())).unwrap();
            if decoded.topic.as_ref() == contract_topics::INSTANTIATED
                && matches!(decoded.destination, Destination::Cluster(_))
            {
                let inst: ContractInstantiated = decode_payload(&decoded.payload).unwrap();
                let code = self.value(&contract_keys::code(&inst.code_hash)).unwrap();
                codes.push(hex::encode(code));
            }
            if message.height <= height {
                let key =
                    phala_chain::mq::keys::stream_message(&decoded.destination, decoded.sequence);
                backfill_proofs.push(StreamProof {
                    destination: decoded.destination,
                    sequence: decoded.sequence,
                    proof: ProofJson::from_proof(&self.db.prove(&key)),
                });
                backfill.push(message.message.clone());
            }
        }
        let messages = new_messages;
        let head = self.height();
        let witness = Witness {
            header: HeaderJson::from_header(&self.headers[head as usize]),
            certificate: hex::encode(&self.certificates[head as usize]),
            streams: after
                .iter()
                .map(|(destination, sequence)| StreamProof {
                    destination: *destination,
                    sequence: *sequence,
                    proof: ProofJson::from_proof(&self.db.prove(
                        &phala_chain::mq::keys::stream_message(destination, *sequence),
                    )),
                })
                .collect(),
            origin: Some(ProofJson::from_proof(
                &self
                    .db
                    .prove(&phala_chain::mq::keys::origin_sequence(origin)),
            )),
            backfill: backfill_proofs,
        };
        SyncBatch {
            headers,
            certificate: hex::encode(&self.certificates[last as usize]),
            messages,
            witness,
            backfill,
            codes,
        }
    }
}

/// A pRuntime with its relayer's operator account; reopened from disk after a crash.
struct Node {
    dir: PathBuf,
    mode: Mode,
    operator: Keypair,
    pruntime: Option<Pruntime>,
    registered: bool,
    crashes: u32,
    /// Forged batches its (sometimes Byzantine) relayer sent, all of which were refused.
    forgeries: u32,
}

impl Node {
    /// A worker pRuntime opened on `chain`, driven by the test itself (no registration).
    fn standalone(dir: &std::path::Path, chain: &Chain) -> Self {
        let mut node = Node {
            dir: dir.to_path_buf(),
            mode: Mode::Worker,
            operator: dev_operator(0),
            pruntime: None,
            registered: true,
            crashes: 0,
            forgeries: 0,
        };
        node.open(chain);
        node
    }

    fn open(&mut self, chain: &Chain) {
        let (anchor, genesis_block) = chain.anchor();
        let tee = Box::new(Simulated::open(&self.dir, [0xaa; 32]).unwrap());
        let options = Options {
            data_dir: self.dir.clone(),
            anchor,
            genesis_block,
            mode: self.mode,
            cores: 1,
        };
        self.pruntime = Some(Pruntime::open(tee, options).unwrap());
    }

    fn pruntime(&mut self) -> &mut Pruntime {
        self.pruntime.as_mut().unwrap()
    }

    /// One relayer round: register once, sync one batch, relay the egress.
    fn relay(&mut self, chain: &mut Chain, rng: &mut StdRng) {
        if !self.registered {
            let request = RegistrationRequest {
                operator: self.operator.address(),
                freshness: chain.height(),
            };
            let signed = self.pruntime().registration(&request).unwrap();
            let operator = self.operator.clone();
            chain.submit(
                &operator,
                Call::Registry(RegistryCall::RegisterWorker(signed)),
            );
            self.registered = true;
        }
        let info = self.pruntime().info();
        if info.height < chain.height() {
            let batch = chain.batch(
                info.height,
                &info.streams,
                &info.identity,
                rng.gen_range(1..=30),
                if rng.gen_bool(0.3) {
                    rng.gen_range(0..3)
                } else {
                    usize::MAX
                },
            );
            if rng.gen_bool(0.05) {
                self.forge(&batch, rng);
            }
            if rng.gen_bool(0.01) {
                // Crash in the middle of the sync: its work is lost before its checkpoint
                // replaced the old one, and nothing it produced went out.
                self.crash_during(&batch, chain);
                return;
            }
            self.pruntime()
                .sync(&batch)
                .unwrap_or_else(|e| panic!("an honest batch was refused: {e}"));
            self.check_freshness(chain);
        }
        let identity = self.pruntime().identity();
        let Some(next) = chain
            .value(&phala_chain::mq::keys::origin_sequence(&identity))
            .map(|v| u64::from_be_bytes(v.try_into().unwrap()))
        else {
            return;
        };
        let in_flight = chain
            .pending
            .iter()
            .any(|t| t.tx.signer == self.operator.address());
        if in_flight {
            return;
        }
        let operator = self.operator.clone();
        for message in self.pruntime().egress(next).unwrap() {
            chain.submit(&operator, Call::Mq(MqCall::SubmitUpward(message)));
        }
    }
}

impl Node {
    /// Queries claim freshness only to a height every stream was handed on to: below the
    /// next message of a stream that is still catching up.
    fn check_freshness(&mut self, chain: &Chain) {
        let info = self.pruntime().info();
        let fresh_to = self.pruntime().query_view().height();
        assert!(fresh_to <= info.height);
        for (destination, next) in &info.streams {
            let key = phala_chain::mq::keys::stream_message(destination, *next);
            if let Some(location) = chain.value(&key).and_then(|v| MessageLocation::decode(&v))
                && location.height <= info.height
            {
                assert!(
                    fresh_to < location.height,
                    "queries fresh to {fresh_to}, but {destination:?} has message {next} at {} unread",
                    location.height
                );
            }
        }
    }

    /// A Byzantine relayer's try: the batch altered in one of the ways a relayer can (drop,
    /// reorder or alter a message, cut the headers, spoil the certificate). It must be
    /// refused with nothing applied.
    fn forge(&mut self, batch: &SyncBatch, rng: &mut StdRng) {
        let mut forged = batch.clone();
        let changed = match rng.gen_range(0..5) {
            // (Dropping the last messages of a stream that is catching up only delays it.)
            0 if !forged.messages.is_empty() && forged.backfill.is_empty() => {
                let index = rng.gen_range(0..forged.messages.len());
                forged.messages.remove(index);
                true
            }
            1 if forged.messages.len() >= 2 => {
                let last = forged.messages.len() - 1;
                forged.messages.swap(0, last);
                true
            }
            2 if !forged.messages.is_empty() => {
                let message = &mut forged.messages[0].message;
                let flipped = if message.ends_with('0') { '1' } else { '0' };
                message.pop();
                message.push(flipped);
                true
            }
            3 if forged.headers.len() >= 2 => {
                forged.headers.pop();
                true
            }
            _ => {
                let flipped = if forged.certificate.ends_with('0') {
                    '1'
                } else {
                    '0'
                };
                forged.certificate.pop();
                forged.certificate.push(flipped);
                true
            }
        };
        if !changed {
            return;
        }
        let before = self.pruntime().info();
        assert!(
            self.pruntime().sync(&forged).is_err(),
            "a forged batch was accepted"
        );
        let after = self.pruntime().info();
        assert_eq!(
            (before.height, before.streams, before.egress_next),
            (after.height, after.streams, after.egress_next),
            "a refused batch changed the pRuntime"
        );
        self.forgeries += 1;
    }

    /// Syncs `batch`, then crashes before the new checkpoint took the old one's place: the old
    /// checkpoint stays, a half-written temporary file is left behind, and the pRuntime
    /// reopens from disk.
    fn crash_during(&mut self, batch: &SyncBatch, chain: &Chain) {
        let checkpoint = self.dir.join("checkpoint.sealed");
        let old = std::fs::read(&checkpoint).unwrap();
        self.pruntime()
            .sync(batch)
            .unwrap_or_else(|e| panic!("an honest batch was refused: {e}"));
        self.pruntime = None;
        std::fs::write(&checkpoint, old).unwrap();
        std::fs::write(self.dir.join("checkpoint.tmp"), b"half a checkp").unwrap();
        self.crashes += 1;
        self.open(chain);
    }
}

const ANALYTICS_WASM: &[u8] = include_bytes!("../../../contracts/wasm/analytics.wasm");
const SENDERS: [&str; 4] = ["bob", "charlie", "dave", "eve"];
/// Commands every run sends at least, before it may settle.
const MIN_COMMANDS: u32 = 30;

/// The users' part: ferdie deploys the analytics contract on both clusters, then random
/// senders send it encrypted commands.
#[derive(Default)]
struct Users {
    contracts: Vec<ContractId>,
    sent: u32,
}

impl Users {
    fn act(&mut self, chain: &mut Chain, rng: &mut StdRng, clusters_exist: bool) {
        if self.contracts.is_empty() {
            if clusters_exist {
                self.deploy(chain);
            }
            return;
        }
        if !rng.gen_bool(0.05) {
            return;
        }
        let id = self.contracts[rng.gen_range(0..self.contracts.len())];
        let state = Overlay::new(&chain.db);
        let Some(public_key) =
            phala_chain::contracts::contract(&state, &id).and_then(|record| record.public_key)
        else {
            return;
        };
        let sender = Keypair::dev(SENDERS[rng.gen_range(0..SENDERS.len())]);
        let input = match rng.gen_range(0..10) {
            0 => "submit Not-A-Group! 1".to_string(),
            1 => "gibberish".to_string(),
            _ => format!(
                "submit g{} {}",
                rng.gen_range(0..3),
                rng.gen_range(0..1_000_000)
            ),
        };
        let nonce = chain.next_nonce(&sender);
        let (encapped, mut ciphertext) =
            seal_command(&public_key, &id, &sender.address(), nonce, input.as_bytes()).unwrap();
        if rng.gen_bool(0.05) {
            ciphertext[0] ^= 1;
        }
        let gas_limit = if rng.gen_bool(0.05) {
            1_000
        } else {
            10_000_000
        };
        let call = Call::Contracts(ContractsCall::Command {
            contract: id,
            gas_limit,
            encapped,
            ciphertext: ciphertext.into(),
        });
        chain.submit(&sender, call);
        self.sent += 1;
    }

    fn deploy(&mut self, chain: &mut Chain) {
        let deployer = Keypair::dev("ferdie");
        let code_hash = phala_types::contracts::code_hash(ANALYTICS_WASM);
        chain.submit(
            &deployer,
            Call::Contracts(ContractsCall::UploadCode {
                code: ANALYTICS_WASM.to_vec().into(),
            }),
        );
        for cluster in [0, 1] {
            let salt = [cluster as u8; 32];
            chain.submit(
                &deployer,
                Call::Contracts(ContractsCall::Instantiate {
                    code_hash,
                    cluster,
                    salt,
                    storage_quota: 64 * 1024,
                    input: b"min_group 2".to_vec().into(),
                }),
            );
            let id = contract_id(&deployer.address(), &code_hash, cluster, &salt);
            self.contracts.push(id);
        }
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
enum Phase {
    Registering,
    Admitting,
    Assigning,
    Generation(u32),
    Settling,
    /// A worker of cluster 0 was moved to cluster 1 half-way through the commands: it joins
    /// cluster 1's stream late and catches up on its old messages (backfill).
    Moved,
}

/// Workers in every run: two per cluster, so that a cluster's workers can disagree.
const WORKERS: usize = 4;

fn run(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut chain = Chain::new();
    let dir = tempfile::tempdir().unwrap();
    let gatekeepers = 1 + (seed % 3) as usize;
    let mut nodes: Vec<Node> = (0..gatekeepers + WORKERS)
        .map(|i| Node {
            dir: dir.path().join(format!("pruntime-{i}")),
            mode: if i < gatekeepers {
                Mode::Gatekeeper
            } else {
                Mode::Worker
            },
            operator: dev_operator(i),
            pruntime: None,
            registered: false,
            crashes: 0,
            forgeries: 0,
        })
        .collect();
    for node in &mut nodes {
        std::fs::create_dir_all(&node.dir).unwrap();
        node.open(&chain);
    }
    let admin = Keypair::dev("alice");
    let mut phase = Phase::Registering;
    let mut users = Users::default();
    let mut settle = 0;
    for step in 0..20_000 {
        if rng.gen_bool(0.5) {
            chain.produce();
        }
        for node in nodes.iter_mut() {
            if rng.gen_bool(0.3) {
                node.relay(&mut chain, &mut rng);
            }
            if rng.gen_bool(0.01) {
                // kill -9: the in-memory pRuntime is gone; it reopens from its sealed files.
                node.pruntime = None;
                node.crashes += 1;
                node.open(&chain);
            }
        }
        phase = advance(phase, &mut chain, &mut nodes, &admin, gatekeepers, &users);
        users.act(&mut chain, &mut rng, phase > Phase::Admitting);
        if phase == Phase::Moved && users.sent >= MIN_COMMANDS {
            settle += 1;
            if settle > 200 {
                break;
            }
        }
        assert!(step < 19_999, "no progress: stuck in {phase:?}");
    }
    // A last block, and every pRuntime synced to it, streams joined late included (a relayer
    // may have left part of their old messages for a later batch).
    chain.produce();
    for node in &mut nodes {
        while node.pruntime().height() < chain.height() {
            let info = node.pruntime().info();
            let batch = chain.next_batch(&info);
            node.pruntime().sync(&batch).unwrap();
        }
    }
    check(&chain, &mut nodes);
    let calls = check_contracts(&chain, &mut nodes, &users);
    let crashes: u32 = nodes.iter().map(|n| n.crashes).sum();
    let forgeries: u32 = nodes.iter().map(|n| n.forgeries).sum();
    assert!(forgeries > 0, "the Byzantine relayer never struck");
    eprintln!(
        "seed {seed}: {gatekeepers} gatekeepers, {WORKERS} workers, {} blocks, {crashes} pRuntime crashes, {forgeries} forged batches refused, {} commands sent, {calls} calls executed",
        chain.height(),
        users.sent
    );
}

/// The admin's script: each step once the previous one has visibly taken effect.
fn advance(
    phase: Phase,
    chain: &mut Chain,
    nodes: &mut [Node],
    admin: &Keypair,
    gatekeepers: usize,
    users: &Users,
) -> Phase {
    let state = Overlay::new(&chain.db);
    let records: Vec<_> = nodes
        .iter_mut()
        .map(|n| registry::worker(&state, &n.pruntime().identity()))
        .collect();
    let admin_busy = chain.pending.iter().any(|t| t.tx.signer == admin.address());
    if admin_busy {
        return phase;
    }
    match phase {
        Phase::Registering if records.iter().all(Option::is_some) => {
            for node in &mut nodes[..gatekeepers] {
                let id = node.pruntime().identity();
                chain.submit(admin, Call::Registry(RegistryCall::AddGatekeeper(id)));
            }
            Phase::Admitting
        }
        Phase::Admitting if registry::master_generation(&state) >= 1 => {
            // The dev genesis has cluster 0; the admin creates cluster 1.
            chain.submit(
                admin,
                Call::Registry(RegistryCall::CreateCluster { cluster: 1 }),
            );
            for (i, node) in nodes[gatekeepers..].iter_mut().enumerate() {
                let worker = node.pruntime().identity();
                chain.submit(
                    admin,
                    Call::Registry(RegistryCall::AssignCluster {
                        worker,
                        cluster: (i % 2) as u32,
                    }),
                );
            }
            Phase::Assigning
        }
        Phase::Assigning if holds(nodes, gatekeepers, 1) => {
            chain.submit(admin, Call::Registry(RegistryCall::RotateMasterKey));
            Phase::Generation(2)
        }
        Phase::Generation(g) if holds(nodes, gatekeepers, g) => {
            if g < 3 {
                chain.submit(admin, Call::Registry(RegistryCall::RotateMasterKey));
                Phase::Generation(g + 1)
            } else {
                Phase::Settling
            }
        }
        Phase::Settling if users.sent >= MIN_COMMANDS / 2 => {
            let worker = nodes[gatekeepers].pruntime().identity();
            chain.submit(
                admin,
                Call::Registry(RegistryCall::AssignCluster { worker, cluster: 1 }),
            );
            Phase::Moved
        }
        other => other,
    }
}

/// Every gatekeeper holds master generation `g` and every worker its cluster key of `g`.
fn holds(nodes: &mut [Node], gatekeepers: usize, g: u32) -> bool {
    nodes.iter_mut().enumerate().all(|(i, node)| {
        let keys = node.pruntime().keys();
        if i < gatekeepers {
            keys.master.contains_key(&g)
        } else {
            keys.cluster_keys.iter().any(|k| k.generation == g)
        }
    })
}

fn check(chain: &Chain, nodes: &mut [Node]) {
    let state = Overlay::new(&chain.db);
    let gatekeeper_keys: Vec<_> = nodes
        .iter_mut()
        .filter(|n| n.mode == Mode::Gatekeeper)
        .map(|n| n.pruntime().keys().master.clone())
        .collect();
    let master = &gatekeeper_keys[0];
    assert_eq!(master.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
    for held in &gatekeeper_keys {
        assert_eq!(held, master, "gatekeepers disagree on the master keys");
    }
    for (generation, key) in master {
        let recorded = chain
            .value(&registry::keys::master_key(*generation))
            .unwrap();
        assert_eq!(
            recorded,
            master_public_key(key).to_vec(),
            "generation {generation}"
        );
    }
    for node in nodes.iter_mut() {
        let (mode, crashes) = (node.mode, node.crashes);
        let pruntime = node.pruntime();
        let identity = pruntime.identity();
        assert_eq!(pruntime.keys().refused_deliveries, 0);
        if mode == Mode::Worker {
            let cluster = registry::worker(&state, &identity)
                .unwrap()
                .cluster
                .unwrap();
            // Every generation of its cluster's key (a worker moved away from a cluster keeps
            // the keys it held there).
            let mut held: Vec<_> = pruntime.keys().cluster_keys.clone();
            held.retain(|k| k.cluster == cluster);
            held.sort_by_key(|k| k.generation);
            let expected: Vec<_> = master
                .iter()
                .map(|(g, m)| (cluster, *g, cluster_key(m, cluster)))
                .collect();
            let held: Vec<_> = held
                .iter()
                .map(|k| (k.cluster, k.generation, k.key))
                .collect();
            assert_eq!(
                held, expected,
                "worker {identity} (crashed {crashes} times)"
            );
        }
        // Caught up, every stream read exactly to the chain's count.
        assert_eq!(pruntime.height(), chain.height());
        for (destination, next) in pruntime.info().streams {
            let count = chain
                .value(&phala_chain::mq::keys::stream_next(&destination))
                .map_or(0, |v| u64::from_be_bytes(v.try_into().unwrap()));
            assert_eq!(next, count, "{destination:?} of {identity}");
        }
    }
}

/// Every worker of each contract's cluster executed every command and holds the same state
/// commitment; every report on chain agrees with it, undisputed. Returns the calls executed.
fn check_contracts(chain: &Chain, nodes: &mut [Node], users: &Users) -> u64 {
    let state = Overlay::new(&chain.db);
    assert_eq!(
        users.contracts.len(),
        2,
        "the contracts were never deployed"
    );
    let mut calls = 0;
    for id in &users.contracts {
        let record = phala_chain::contracts::contract(&state, id).expect("instantiated");
        let mut replicas = Vec::new();
        for node in nodes.iter_mut().filter(|n| n.mode == Mode::Worker) {
            let pruntime = node.pruntime();
            let worker = registry::worker(&state, &pruntime.identity()).unwrap();
            if worker.cluster != Some(record.cluster) {
                continue;
            }
            let instance = pruntime
                .contracts()
                .instances
                .get(id)
                .unwrap_or_else(|| panic!("worker {} lacks a contract", worker.identity));
            assert!(instance.broken.is_none(), "{:?}", instance.broken);
            assert_eq!(
                instance.next_call,
                record.commands + 1,
                "worker {} skipped or repeated a call",
                worker.identity
            );
            replicas.push((worker.identity, instance.commitment, instance.state.clone()));
        }
        assert!(
            !replicas.is_empty(),
            "cluster {} has no worker",
            record.cluster
        );
        for (worker, commitment, contract_state) in &replicas {
            assert_eq!(
                (commitment, contract_state),
                (&replicas[0].1, &replicas[0].2),
                "worker {worker} diverged from {}",
                replicas[0].0
            );
        }
        // Every recorded report is undisputed; the last call's, if reported, is the replicas'.
        let mut reported = 0;
        for index in 0..=record.commands {
            let key = phala_chain::contracts::keys::report(id, index);
            let Some(bytes) = chain.value(&key) else {
                continue;
            };
            let report = ReportRecord::decode(Copying(&bytes)).unwrap();
            assert_eq!(report.dispute, None, "call {index} was disputed");
            reported += 1;
            if index == record.commands {
                assert_eq!(report.commitment, replicas[0].1, "the chain's last report");
            }
        }
        assert!(reported > 0, "no call of the contract was ever reported");
        calls += record.commands + 1;
    }
    calls
}

fn seeds() -> Vec<u64> {
    if let Ok(seed) = std::env::var("PRUNTIME_SIM_SEED") {
        return vec![seed.parse().expect("PRUNTIME_SIM_SEED is a number")];
    }
    let count = std::env::var("PRUNTIME_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    (0..count).collect()
}

#[test]
fn keys_and_contract_states_agree_under_random_relaying_commands_and_crashes() {
    for seed in seeds() {
        let result = std::panic::catch_unwind(|| run(seed));
        if let Err(panic) = result {
            eprintln!("failing seed: PRUNTIME_SIM_SEED={seed}");
            std::panic::resume_unwind(panic);
        }
    }
}

#[test]
fn a_certificate_from_another_validator_set_is_refused() {
    let mut chain = Chain::new();
    let foreign = Chain::with_validators(8);
    assert_ne!(foreign.spec.identity, chain.spec.identity);
    for _ in 0..3 {
        chain.produce();
    }
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::standalone(dir.path(), &chain);
    let info = node.pruntime().info();
    let mut batch = chain.batch(0, &info.streams, &info.identity, 3, usize::MAX);
    // Well formed and over the right block, but signed by a group this chain never had.
    let last = chain.headers[3].hash();
    batch.certificate = hex::encode(foreign.certifier.certify(3, last).unwrap());
    let error = node.pruntime().sync(&batch).unwrap_err().to_string();
    assert!(error.contains("finality certificate refused"), "{error}");
    assert_eq!(node.pruntime().height(), 0);
    // The same batch with this chain's certificate is accepted.
    batch.certificate = hex::encode(&chain.certificates[3]);
    node.pruntime().sync(&batch).unwrap();
    assert_eq!(node.pruntime().height(), 3);
}

#[test]
fn sealed_keys_serve_only_their_chain_and_never_start_over() {
    let chain = Chain::new();
    let other = Chain::with_validators(9);
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::standalone(dir.path(), &chain);
    let identity = node.pruntime().identity();
    node.pruntime = None;
    // The same sealed identity pointed at another chain (another group key): refused.
    let (anchor, genesis_block) = other.anchor();
    let open = |anchor, genesis_block| {
        let tee = Box::new(Simulated::open(dir.path(), [0xaa; 32]).unwrap());
        let options = Options {
            data_dir: dir.path().to_path_buf(),
            anchor,
            genesis_block,
            mode: Mode::Worker,
            cores: 1,
        };
        Pruntime::open(tee, options).map(|p| p.identity())
    };
    let error = open(anchor, genesis_block).unwrap_err().to_string();
    assert!(error.contains("another chain"), "{error}");
    // Its own chain: the same identity resumes (even before it ever synced).
    let (anchor, genesis_block) = chain.anchor();
    assert_eq!(
        open(anchor.clone(), genesis_block.clone()).unwrap(),
        identity
    );
    // Its checkpoint deleted, so the host could replay it from genesis: refused.
    std::fs::remove_file(dir.path().join("checkpoint.sealed")).unwrap();
    let error = open(anchor, genesis_block).unwrap_err().to_string();
    assert!(error.contains("checkpoint is missing"), "{error}");
}

/// The host restarts a gatekeeper from an older copy of its sealed checkpoint, taken before it
/// published its master key. Replaying the same blocks, it would make and sign another key
/// under the sequence the chain already accepted; instead, the chain's record of its next
/// sequence (proven in every batch) shows that it produced less than the chain accepted, and
/// it refuses to go on. A checkpoint sealed for another identity does not even open.
#[test]
fn a_rolled_back_or_swapped_checkpoint_is_refused() {
    let mut chain = Chain::new();
    let mut rng = StdRng::seed_from_u64(11);
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node {
        dir: dir.path().join("gatekeeper"),
        mode: Mode::Gatekeeper,
        operator: dev_operator(0),
        pruntime: None,
        registered: false,
        crashes: 0,
        forgeries: 0,
    };
    std::fs::create_dir_all(&node.dir).unwrap();
    node.open(&chain);
    let identity = node.pruntime().identity();
    let registered =
        |chain: &Chain| registry::worker(&Overlay::new(&chain.db), &identity).is_some();
    while !registered(&chain) {
        node.relay(&mut chain, &mut rng);
        chain.produce();
    }
    let checkpoint = node.dir.join("checkpoint.sealed");
    let before_publishing = std::fs::read(&checkpoint).unwrap();
    chain.submit(
        &Keypair::dev("alice"),
        Call::Registry(RegistryCall::AddGatekeeper(identity)),
    );
    let accepted = |chain: &Chain| {
        chain
            .value(&phala_chain::mq::keys::origin_sequence(&identity))
            .map_or(0, |v| u64::from_be_bytes(v.try_into().unwrap()))
    };
    for _ in 0..500 {
        if accepted(&chain) > 0 {
            break;
        }
        chain.produce();
        node.relay(&mut chain, &mut rng);
    }
    assert!(
        accepted(&chain) > 0,
        "the gatekeeper never published its key"
    );
    chain.produce();

    // Rolled back: the old checkpoint, then a batch up to the chain's head.
    node.pruntime = None;
    std::fs::write(&checkpoint, &before_publishing).unwrap();
    node.open(&chain);
    let info = node.pruntime().info();
    let batch = chain.next_batch(&info);
    match node.pruntime().sync(&batch) {
        Err(PruntimeError::RolledBack { accepted, produced }) => {
            assert!(accepted > produced, "{accepted} > {produced}")
        }
        other => panic!("a rolled-back pRuntime went on: {other:?}"),
    }
    assert_eq!(
        node.pruntime().info().height,
        info.height,
        "nothing applied"
    );

    // Another pRuntime's checkpoint in its place, on the same machine (the same sealing key).
    let worker_dir = dir.path().join("worker");
    std::fs::create_dir_all(&worker_dir).unwrap();
    std::fs::copy(
        node.dir.join("simulated-sealing.key"),
        worker_dir.join("simulated-sealing.key"),
    )
    .unwrap();
    let mut other = Node::standalone(&worker_dir, &chain);
    other.pruntime = None;
    std::fs::write(other.dir.join("checkpoint.sealed"), &before_publishing).unwrap();
    let (anchor, genesis_block) = chain.anchor();
    let tee = Box::new(Simulated::open(&other.dir, [0xaa; 32]).unwrap());
    let options = Options {
        data_dir: other.dir.clone(),
        anchor,
        genesis_block,
        mode: Mode::Worker,
        cores: 1,
    };
    let error = Pruntime::open(tee, options)
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("not this identity's"), "{error}");
}
