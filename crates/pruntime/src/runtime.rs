//! The pRuntime itself: sealed keys, the light client's position, the key state, and the
//! signed messages waiting to go up. Everything that must survive a crash is in one sealed
//! checkpoint written after each accepted batch, so a restart resumes exactly where the last
//! accepted batch left off, and re-syncing the same blocks produces the same messages.

use crate::{
    contracts::{CodeStore, ContractError, Contracts, SealedInstance, decode_pending},
    keys::{KeyState, Me, Outgoing},
    light::{LightClient, LightState, SyncError},
    query::QueryView,
    seal::{SealError, Sealer},
    tee::{Tee, TeeError},
};
use bytes::Bytes;
use commonware_codec::{Copying, DecodeExt, Encode};
use phala_api::pruntime::{Info, Mode, RegistrationRequest, SyncBatch, SyncOutcome, TrustAnchor};
use phala_crypto::{Keypair, secrets::EcdhKeypair};
use phala_types::{
    Address, ClusterAssignment, Destination, DownwardMessage, SignedRegistration, TeeKind,
    UpwardMessage, WorkerRegistration,
    registry::{decode_payload, report_data, topics},
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;

const KEYS_FILE: &str = "keys.sealed";
const CHECKPOINT_FILE: &str = "checkpoint.sealed";
/// Most signed messages kept waiting for the chain.
const MAX_EGRESS: usize = 65_536;

/// Why the pRuntime cannot start or do what was asked.
#[derive(Debug, Error)]
pub enum PruntimeError {
    #[error(transparent)]
    Tee(#[from] TeeError),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error(transparent)]
    Contract(#[from] ContractError),
    /// The chain accepted more of this pRuntime's upward messages than its checkpoint ever
    /// produced: the host restarted it from an older copy of its sealed state. It stops here,
    /// rather than sign those sequences again with other contents.
    #[error(
        "the chain accepted upward messages up to sequence {accepted} from this pRuntime, but its checkpoint only produced {produced}: it was rolled back to an older checkpoint and will not continue"
    )]
    RolledBack { accepted: u64, produced: u64 },
    #[error("{0}")]
    Invalid(String),
}

/// The secrets generated inside at first start, bound to the chain they were made for.
#[derive(Serialize, Deserialize)]
struct SealedKeys {
    identity: [u8; 32],
    ecdh: [u8; 32],
    mode: Mode,
    /// SHA-256 of the trust anchor and genesis block: these keys serve this chain only.
    chain: String,
}

/// Everything else that must survive a restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Checkpoint {
    anchor: TrustAnchor,
    genesis_block: String,
    light: LightState,
    keys: KeyState,
    /// Sequence of `egress[0]`.
    egress_base: u64,
    /// Signed upward messages not yet known to be on chain (hex encodings).
    egress: Vec<String>,
    /// The contracts this worker runs, their state sealed with their keys.
    #[serde(default)]
    contracts: BTreeMap<String, SealedInstance>,
    /// Cluster-stream messages waiting for a key (hex encodings), in order.
    #[serde(default)]
    pending: Vec<String>,
}

impl Checkpoint {
    fn egress_next(&self) -> u64 {
        self.egress_base + self.egress.len() as u64
    }
}

/// What the operator chooses when starting a pRuntime.
pub struct Options {
    pub data_dir: PathBuf,
    pub anchor: TrustAnchor,
    /// Hash of the genesis block (height 0), which block 1 names as parent.
    pub genesis_block: String,
    pub mode: Mode,
    pub cores: u32,
}

/// A running pRuntime.
pub struct Pruntime {
    tee: Box<dyn Tee>,
    sealer: Sealer,
    dir: PathBuf,
    identity: Keypair,
    ecdh: EcdhKeypair,
    mode: Mode,
    light: LightClient,
    checkpoint: Checkpoint,
    contracts: Contracts,
    code: CodeStore,
    benchmark: u64,
    cores: u32,
}

impl Pruntime {
    /// Opens the sealed keys and checkpoint in `data_dir`, creating them at first start.
    /// A restart with another chain or mode than the sealed one is refused.
    pub fn open(tee: Box<dyn Tee>, options: Options) -> Result<Self, PruntimeError> {
        let vm = phala_vm::Vm::new().map_err(|e| PruntimeError::Invalid(e.to_string()))?;
        Self::open_with_vm(tee, options, Arc::new(vm))
    }

    /// [`Pruntime::open`] sharing a VM (and its module cache) with other pRuntimes in the
    /// same process, as the simulation tests do.
    pub fn open_with_vm(
        tee: Box<dyn Tee>,
        options: Options,
        vm: Arc<phala_vm::Vm>,
    ) -> Result<Self, PruntimeError> {
        let sealer = Sealer::new(&tee.sealing_key()?);
        let dir = options.data_dir.clone();
        let chain = chain_binding(&options);
        let (keys, created) = load_or_create_keys(&sealer, &dir, options.mode, &chain)?;
        if keys.mode != options.mode {
            return Err(PruntimeError::Invalid(format!(
                "this pRuntime was created in {:?} mode",
                keys.mode
            )));
        }
        if keys.chain != chain {
            return Err(PruntimeError::Invalid(
                "this pRuntime's keys are sealed to another chain".into(),
            ));
        }
        let light = LightClient::new(&options.anchor)?;
        let identity = Keypair::from_secret(keys.identity);
        let label = checkpoint_label(&identity.address());
        let sealed =
            sealer
                .read(&dir.join(CHECKPOINT_FILE), &label)
                .map_err(|error| match error {
                    SealError::Corrupt(_) => PruntimeError::Invalid(
                        "the sealed checkpoint is not this identity's (or is corrupt)".into(),
                    ),
                    other => other.into(),
                })?;
        let checkpoint = match sealed {
            // Keys without their checkpoint would let the host replay this identity from
            // genesis on a chain of its making: refused.
            None if !created => {
                return Err(PruntimeError::Invalid(
                    "the sealed checkpoint is missing; this identity cannot start over".into(),
                ));
            }
            Some(bytes) => {
                let checkpoint: Checkpoint = serde_json::from_slice(&bytes)
                    .map_err(|e| PruntimeError::Invalid(format!("checkpoint: {e}")))?;
                if checkpoint.anchor != options.anchor
                    || checkpoint.genesis_block != options.genesis_block
                {
                    return Err(PruntimeError::Invalid(
                        "this pRuntime is sealed to another chain".into(),
                    ));
                }
                checkpoint
            }
            None => Checkpoint {
                light: LightClient::initial(
                    options.genesis_block.clone(),
                    &streams(keys.mode, Keypair::from_secret(keys.identity).address()),
                ),
                anchor: options.anchor,
                genesis_block: options.genesis_block,
                keys: KeyState::default(),
                egress_base: 0,
                egress: Vec::new(),
                contracts: BTreeMap::new(),
                pending: Vec::new(),
            },
        };
        let code = CodeStore::new(&dir)?;
        let mut contracts = Contracts::new(vm);
        contracts.restore(&checkpoint.keys, &code, &checkpoint.contracts)?;
        let pruntime = Pruntime {
            tee,
            sealer,
            dir,
            identity,
            ecdh: EcdhKeypair::from_seed(&keys.ecdh),
            mode: keys.mode,
            light,
            checkpoint,
            contracts,
            code,
            benchmark: benchmark(),
            cores: options.cores,
        };
        if created {
            // Keys and their first checkpoint exist together from now on.
            pruntime.save(&pruntime.checkpoint)?;
        }
        Ok(pruntime)
    }

    pub fn identity(&self) -> Address {
        self.identity.address()
    }

    pub fn height(&self) -> u64 {
        self.checkpoint.light.height
    }

    pub fn keys(&self) -> &KeyState {
        &self.checkpoint.keys
    }

    pub fn info(&self) -> Info {
        let cp = &self.checkpoint;
        Info {
            identity: self.identity(),
            ecdh: hex::encode(self.ecdh.public()),
            mode: self.mode,
            tee: self.tee.kind(),
            insecure: self.tee.kind() == TeeKind::Simulated,
            chain_id: cp.anchor.chain_id.clone(),
            genesis_hash: cp.anchor.genesis_hash.clone(),
            height: cp.light.height,
            hash: cp.light.hash.clone(),
            streams: cp.light.streams.clone(),
            egress_next: cp.egress_next(),
            master_generations: cp.keys.master.keys().copied().collect(),
            cluster_keys: cp
                .keys
                .cluster_keys
                .iter()
                .map(|k| (k.cluster, k.generation))
                .collect(),
            benchmark: self.benchmark,
            cores: self.cores,
        }
    }

    /// A registration signed by the identity key, with evidence binding both keys, the chain
    /// and `freshness`.
    pub fn registration(
        &self,
        request: &RegistrationRequest,
    ) -> Result<SignedRegistration, PruntimeError> {
        let genesis = *self.light.genesis();
        let identity = self.identity();
        let report = report_data(
            &identity,
            &self.ecdh.public(),
            genesis.as_ref(),
            request.freshness,
        );
        let registration = WorkerRegistration {
            identity,
            ecdh: self.ecdh.public(),
            operator: request.operator,
            cores: self.cores,
            benchmark: self.benchmark,
            freshness: request.freshness,
            gatekeeper: self.mode == Mode::Gatekeeper,
            evidence: self.tee.evidence(&report)?,
        };
        Ok(self.identity.sign_registration(&genesis, registration))
    }

    /// Verifies and applies a batch; on any error nothing changes.
    pub fn sync(&mut self, batch: &SyncBatch) -> Result<SyncOutcome, PruntimeError> {
        let verified = self
            .light
            .verify(&self.checkpoint.light, &self.identity(), batch)?;
        // The chain is the rollback counter: every message it accepted from this identity was
        // produced, and sealed, before this batch.
        let produced = self.checkpoint.egress_next();
        if let Some(accepted) = verified.origin_next
            && accepted > produced
        {
            return Err(PruntimeError::RolledBack { accepted, produced });
        }
        for code in &batch.codes {
            let bytes = hex::decode(code)
                .map_err(|e| PruntimeError::Invalid(format!("contract code: {e}")))?;
            self.code.put(&bytes)?;
        }
        let mut next = self.checkpoint.clone();
        let mut contracts = self.contracts.clone();
        let mut pending: VecDeque<DownwardMessage> = next
            .pending
            .iter()
            .filter_map(|m| decode_pending(m))
            .collect();
        let mut joined = Vec::new();
        let me = Me {
            identity: self.identity(),
            ecdh: &self.ecdh,
            gatekeeper: self.mode == Mode::Gatekeeper,
        };
        for message in &verified.messages {
            let mut out = next.keys.handle(&me, message);
            joined.extend(self.joined_cluster(message));
            if let Destination::Cluster(_) = message.destination {
                pending.push_back(message.clone());
            }
            // Apply every waiting cluster message whose key is now held, in order.
            while let Some(front) = pending.front() {
                if !contracts.ready(&next.keys, front) {
                    break;
                }
                out.extend(contracts.apply(&next.keys, &self.code, front)?);
                pending.pop_front();
            }
            self.queue(&mut next, out);
        }
        if next.egress.len() > MAX_EGRESS {
            return Err(PruntimeError::Invalid(
                "too many messages waiting for the chain; is pherry submitting them?".into(),
            ));
        }
        next.light = verified.next;
        for cluster in joined {
            // A worker serves one cluster: moved to another, it stops reading and running the
            // old one's contracts (the chain would refuse its reports of them anyway).
            let stream = Destination::Cluster(cluster);
            let other_cluster =
                |d: &Destination| matches!(d, Destination::Cluster(_)) && *d != stream;
            next.light.streams.retain(|(d, _)| !other_cluster(d));
            pending.retain(|m| !other_cluster(&m.destination));
            contracts.instances.retain(|_, i| i.cluster == cluster);
            if !next.light.streams.iter().any(|(d, _)| *d == stream) {
                next.light.streams.push((stream, 0));
                // Nothing of the new stream is read yet: queries claim no freshness until
                // the next batch proves how far it is.
                next.light.complete_to = 0;
            }
        }
        // Drop what the chain has provably accepted (never on a caller's word).
        if let Some(accepted) = verified.origin_next {
            let drop = accepted
                .saturating_sub(next.egress_base)
                .min(next.egress.len() as u64);
            next.egress.drain(..drop as usize);
            next.egress_base += drop;
        }
        next.contracts = contracts.seal(&self.checkpoint.contracts);
        next.pending = pending.iter().map(|m| hex::encode(m.encode())).collect();
        self.save(&next)?;
        self.checkpoint = next;
        self.contracts = contracts;
        Ok(SyncOutcome {
            height: self.checkpoint.light.height,
            messages: verified.messages.len(),
            egress_next: self.checkpoint.egress_next(),
        })
    }

    /// The cluster a message tells this worker it joined, if it does.
    fn joined_cluster(&self, message: &DownwardMessage) -> Option<u32> {
        let mine = Destination::Worker(self.identity());
        if self.mode != Mode::Worker
            || message.destination != mine
            || message.topic.as_ref() != topics::WORKER_ASSIGNED
        {
            return None;
        }
        let assignment: ClusterAssignment = decode_payload(&message.payload).ok()?;
        (assignment.worker == self.identity()).then_some(assignment.cluster)
    }

    /// Signs and queues upward messages.
    fn queue(&self, next: &mut Checkpoint, out: Vec<Outgoing>) {
        for (topic, payload) in out {
            let sequence = next.egress_next();
            next.egress.push(self.sign_upward(topic, payload, sequence));
        }
    }

    /// The contracts this worker runs, as of the last accepted batch.
    pub fn contracts(&self) -> &Contracts {
        &self.contracts
    }

    /// What queries are answered from: the contracts as of the last accepted batch, fresh to
    /// the height every stream was handed on to (less than the synced height while a stream
    /// joined late catches up: a receipt never claims messages the worker has not seen).
    pub fn query_view(&self) -> QueryView {
        QueryView::new(
            self.contracts.clone(),
            self.identity.clone(),
            self.checkpoint.light.complete_to,
            self.checkpoint.light.timestamp,
        )
    }

    /// Signed messages from sequence `from` on. Nothing is dropped on the caller's word: a
    /// message leaves only once a sync batch proves the chain accepted it.
    pub fn egress(&self, from: u64) -> Result<Vec<UpwardMessage>, PruntimeError> {
        let cp = &self.checkpoint;
        let skip = from.saturating_sub(cp.egress_base) as usize;
        cp.egress
            .iter()
            .skip(skip)
            .map(|hex_message| {
                let bytes = hex::decode(hex_message)
                    .map_err(|e| PruntimeError::Invalid(format!("egress: {e}")))?;
                UpwardMessage::decode(Copying(&bytes))
                    .map_err(|e| PruntimeError::Invalid(format!("egress: {e}")))
            })
            .collect()
    }

    fn sign_upward(&self, topic: &[u8], payload: Bytes, sequence: u64) -> String {
        let mut message = UpwardMessage {
            origin: self.identity(),
            topic: Bytes::copy_from_slice(topic),
            payload,
            sequence,
            signature: [0; 64],
        };
        self.identity
            .sign_upward(self.light.genesis(), &mut message);
        hex::encode(message.encode())
    }

    fn save(&self, checkpoint: &Checkpoint) -> Result<(), PruntimeError> {
        let bytes = serde_json::to_vec(checkpoint)
            .map_err(|e| PruntimeError::Invalid(format!("checkpoint: {e}")))?;
        let label = checkpoint_label(&self.identity());
        self.sealer
            .write(&self.dir.join(CHECKPOINT_FILE), &label, &bytes)?;
        Ok(())
    }
}

/// The label a checkpoint is sealed under: bound to the identity whose state it is, so a
/// host cannot hand one pRuntime another's checkpoint (on one machine they share a sealing key).
fn checkpoint_label(identity: &Address) -> Vec<u8> {
    [b"checkpoint/".as_slice(), &identity.0].concat()
}

/// The streams a pRuntime reads: everyone's, its own, and the gatekeepers' in gatekeeper mode.
pub fn streams(mode: Mode, identity: Address) -> Vec<Destination> {
    let mut streams = vec![Destination::All, Destination::Worker(identity)];
    if mode == Mode::Gatekeeper {
        streams.push(Destination::Gatekeepers);
    }
    streams
}

/// The sealed keys, and whether they were just created.
fn load_or_create_keys(
    sealer: &Sealer,
    dir: &Path,
    mode: Mode,
    chain: &str,
) -> Result<(SealedKeys, bool), PruntimeError> {
    let path = dir.join(KEYS_FILE);
    if let Some(bytes) = sealer.read(&path, b"keys")? {
        let keys = serde_json::from_slice(&bytes)
            .map_err(|e| PruntimeError::Invalid(format!("sealed keys: {e}")))?;
        return Ok((keys, false));
    }
    let keys = SealedKeys {
        identity: rand::random(),
        ecdh: rand::random(),
        mode,
        chain: chain.to_string(),
    };
    let bytes = serde_json::to_vec(&keys).map_err(|e| PruntimeError::Invalid(e.to_string()))?;
    sealer.write(&path, b"keys", &bytes)?;
    Ok((keys, true))
}

/// What the keys are bound to: the trust anchor and the genesis block.
fn chain_binding(options: &Options) -> String {
    use commonware_cryptography::{Hasher, Sha256};
    let anchor = serde_json::to_vec(&options.anchor).unwrap_or_default();
    hex::encode(Sha256::hash(&[&anchor, options.genesis_block.as_bytes()]))
}

/// A rough CPU score: SHA-256 compressions of a 1 KiB block per millisecond over 20 ms.
fn benchmark() -> u64 {
    use commonware_cryptography::{Hasher, Sha256};
    let block = [7u8; 1024];
    let start = std::time::Instant::now();
    let mut rounds = 0u64;
    while start.elapsed() < std::time::Duration::from_millis(20) {
        for _ in 0..64 {
            std::hint::black_box(Sha256::hash(&[&block]));
        }
        rounds += 64;
    }
    rounds / 20
}
