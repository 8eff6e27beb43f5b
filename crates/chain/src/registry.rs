//! The worker registry: the attestation policy, registered workers, the gatekeeper set and the
//! master public key, plus the routing of the gatekeepers' key messages.
//!
//! Invariants:
//! - a worker is recorded only with evidence that verifies under the policy at the block's time
//!   and whose report data binds exactly its keys, this chain and a recent height;
//! - simulated evidence is refused on any chain whose genesis is not `dev`;
//! - gatekeeper messages with the same topic and payload take effect once (the first copy):
//!   gatekeepers run the same deterministic logic and all send them.

use crate::{
    BlockContext, TxError,
    config::GenesisConfig,
    module::{Env, Module, Origin},
    mq::{self, Outbox},
    state::{Overlay, StateRead},
    weights::{self, Weight},
};
use bytes::Bytes;
use commonware_codec::{Copying, Decode, Encode, RangeCfg};
use commonware_cryptography::{Hasher, Sha256};
use phala_types::{
    Address, AttestationPolicy, ClusterAssignment, Destination, Digest, Evidence, GatekeeperJoined,
    KeyDelivery, MasterPublicKey, RegistryCall, SignedRegistration, UpwardMessage, WorkerRecord,
    registry::{decode_payload, topics},
};
use serde::{Deserialize, Serialize};

/// The registry module.
pub struct Registry;

impl Module for Registry {
    const PREFIX: &'static [u8] = b"registry/";
    type Call = RegistryCall;

    fn genesis<S: StateRead + ?Sized>(state: &mut Overlay<S>, config: &GenesisConfig) {
        let config = &config.registry;
        state.set(keys::POLICY.to_vec(), config.policy.encode().to_vec());
        if let Some(admin) = config.admin {
            state.set(keys::ADMIN.to_vec(), admin.0.to_vec());
        }
        for cluster in &config.clusters {
            state.set(keys::cluster(*cluster), Vec::new());
        }
    }

    fn weight(call: &RegistryCall) -> Weight {
        match call {
            RegistryCall::RegisterWorker(signed) => {
                let verification = match signed.registration.evidence {
                    Evidence::Simulated { .. } => 0,
                    Evidence::SgxDcap { .. } | Evidence::Tdx { .. } => weights::DCAP_VERIFICATION,
                };
                weights::SIGNATURE + verification + weights::writes(3)
            }
            RegistryCall::SetAttestationPolicy(_) | RegistryCall::CreateCluster { .. } => {
                weights::writes(1)
            }
            RegistryCall::AddGatekeeper(_)
            | RegistryCall::AssignCluster { .. }
            | RegistryCall::RotateMasterKey => weights::writes(6),
        }
    }

    fn dispatch<S: StateRead + ?Sized>(
        env: &mut Env<'_, '_, S>,
        origin: &Origin,
        call: &RegistryCall,
    ) -> Result<(), TxError> {
        let (state, outbox, block) = (&mut *env.state, &mut *env.outbox, env.block);
        let signer = &origin.signer;
        let event = match call {
            RegistryCall::RegisterWorker(signed) => {
                let registration = RegistrationContext {
                    genesis: env.genesis_hash,
                    dev: env.config.dev,
                    block,
                };
                register(state, &registration, signer, signed)?;
                Event::WorkerRegistered {
                    worker: signed.registration.identity,
                    operator: *signer,
                }
            }
            RegistryCall::SetAttestationPolicy(policy) => {
                set_policy(state, signer, policy, env.config.dev)?;
                Event::PolicySet
            }
            RegistryCall::AddGatekeeper(worker) => {
                add_gatekeeper(state, outbox, block, signer, worker)?;
                Event::GatekeeperAdded { worker: *worker }
            }
            RegistryCall::AssignCluster { worker, cluster } => {
                assign_cluster(state, outbox, block, signer, worker, *cluster)?;
                Event::ClusterAssigned {
                    worker: *worker,
                    cluster: *cluster,
                }
            }
            RegistryCall::RotateMasterKey => {
                rotate_master_key(state, outbox, block, signer)?;
                Event::MasterKeyRotationOrdered
            }
            RegistryCall::CreateCluster { cluster } => {
                create_cluster(state, signer, *cluster)?;
                Event::ClusterCreated { cluster: *cluster }
            }
        };
        env.emit(event);
        Ok(())
    }

    fn on_upward<S: StateRead + ?Sized>(
        env: &mut Env<'_, '_, S>,
        message: &UpwardMessage,
    ) -> Result<bool, TxError> {
        handle_upward(env.state, env.outbox, env.block, message)
    }
}

/// What happened in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum Event {
    /// A worker registered or renewed its attestation.
    WorkerRegistered { worker: Address, operator: Address },
    /// The admin replaced the attestation policy.
    PolicySet,
    /// The admin admitted a gatekeeper.
    GatekeeperAdded { worker: Address },
    /// The admin placed a worker in a cluster.
    ClusterAssigned { worker: Address, cluster: u32 },
    /// The admin ordered a new master key generation.
    MasterKeyRotationOrdered,
    /// The admin created a cluster.
    ClusterCreated { cluster: u32 },
}

/// The registry's genesis settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// The account allowed the admin calls until governance replaces it.
    pub admin: Option<Address>,
    pub policy: AttestationPolicy,
    /// Clusters that exist from genesis (the admin creates more).
    #[serde(default)]
    pub clusters: Vec<u32>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        let mut policy = AttestationPolicy::dev();
        policy.allow_simulated = false;
        RegistryConfig {
            admin: None,
            policy,
            clusters: Vec::new(),
        }
    }
}

/// Where the registry keeps its data.
pub mod keys {
    use phala_types::Address;

    pub const POLICY: &[u8] = b"registry/policy";
    pub const ADMIN: &[u8] = b"registry/admin";
    pub const GATEKEEPERS: &[u8] = b"registry/gatekeepers";
    /// The newest master key generation recorded (absent: none yet).
    pub const MASTER_GENERATION: &[u8] = b"registry/master-generation";
    /// The generation a rotation order asked for and the gatekeepers have not published yet.
    pub const PENDING_ROTATION: &[u8] = b"registry/pending-rotation";
    /// Prefix of every worker record; the node lists workers by it.
    pub const WORKER_PREFIX: &[u8] = b"registry/worker/";

    pub fn worker(identity: &Address) -> Vec<u8> {
        [WORKER_PREFIX, &identity.0].concat()
    }

    pub fn master_key(generation: u32) -> Vec<u8> {
        [
            b"registry/master-key/".as_slice(),
            &generation.to_be_bytes(),
        ]
        .concat()
    }

    /// Marks a cluster as created (an empty value).
    pub fn cluster(cluster: u32) -> Vec<u8> {
        [b"registry/cluster/".as_slice(), &cluster.to_be_bytes()].concat()
    }

    /// Marks a gatekeeper message as handled (the first copy won).
    pub fn seen(digest: &[u8]) -> Vec<u8> {
        [b"registry/seen/".as_slice(), digest].concat()
    }
}

const MAX_GATEKEEPERS: usize = 256;

/// The policy in force.
pub fn policy<S: StateRead + ?Sized>(state: &Overlay<S>) -> Result<AttestationPolicy, TxError> {
    let bytes = state.get(keys::POLICY).ok_or(TxError::Corrupt("policy"))?;
    decode_payload(&bytes).map_err(|_| TxError::Corrupt("policy"))
}

/// A worker's record, if registered.
pub fn worker<S: StateRead + ?Sized>(
    state: &Overlay<S>,
    identity: &Address,
) -> Option<WorkerRecord> {
    decode_payload(&state.get(&keys::worker(identity))?).ok()
}

fn set_worker<S: StateRead + ?Sized>(state: &mut Overlay<S>, record: &WorkerRecord) {
    state.set(keys::worker(&record.identity), record.encode().to_vec());
}

/// The gatekeeper set, in the order they joined.
pub fn gatekeepers<S: StateRead + ?Sized>(state: &Overlay<S>) -> Vec<Address> {
    let cfg = (RangeCfg::new(..=MAX_GATEKEEPERS), ());
    state
        .get(keys::GATEKEEPERS)
        .and_then(|bytes| Vec::<Address>::decode_cfg(Copying(bytes.as_slice()), &cfg).ok())
        .unwrap_or_default()
}

/// The newest recorded master key generation, 0 before the first.
pub fn master_generation<S: StateRead + ?Sized>(state: &Overlay<S>) -> u32 {
    state
        .get(keys::MASTER_GENERATION)
        .and_then(|v| v.try_into().ok().map(u32::from_be_bytes))
        .unwrap_or(0)
}

pub(crate) fn require_admin<S: StateRead + ?Sized>(
    state: &Overlay<S>,
    signer: &Address,
) -> Result<(), TxError> {
    match state.get(keys::ADMIN) {
        Some(admin) if admin == signer.0 => Ok(()),
        _ => Err(TxError::NotAdmin(*signer)),
    }
}

/// Refuses a worker whose attestation has expired (`reattest_blocks` after it was made), so a
/// worker the policy no longer vouches for cannot speak for itself or be given keys.
pub fn require_current<S: StateRead + ?Sized>(
    state: &Overlay<S>,
    identity: &Address,
    height: u64,
) -> Result<(), TxError> {
    let Some(record) = worker(state, identity) else {
        return Ok(()); // Not a worker: a genesis origin.
    };
    let window = policy(state)?.reattest_blocks;
    if record.attested_at.saturating_add(window) < height {
        return Err(TxError::AttestationExpired {
            worker: *identity,
            attested_at: record.attested_at,
            window,
        });
    }
    Ok(())
}

/// The facts a registration is judged against.
pub struct RegistrationContext<'a> {
    pub genesis: &'a Digest,
    /// A dev chain: the only kind that may accept simulated evidence.
    pub dev: bool,
    pub block: &'a BlockContext,
}

/// Registers a worker, or renews its attestation. The transaction's signer must be the
/// operator the worker's identity key named.
fn register<S: StateRead + ?Sized>(
    state: &mut Overlay<S>,
    ctx: &RegistrationContext<'_>,
    signer: &Address,
    signed: &SignedRegistration,
) -> Result<(), TxError> {
    let verdict = check_registration(state, ctx, signer, signed)?;
    let registration = &signed.registration;
    let height = ctx.block.height;
    let previous = worker(state, &registration.identity);
    let record = WorkerRecord {
        identity: registration.identity,
        ecdh: registration.ecdh,
        operator: registration.operator,
        tee: registration.evidence.kind(),
        measurement: verdict.measurement.clone(),
        confidence: verdict.confidence,
        cores: registration.cores,
        benchmark: registration.benchmark,
        registered_at: previous.as_ref().map_or(height, |p| p.registered_at),
        attested_at: height,
        gatekeeper_candidate: registration.gatekeeper,
        gatekeeper: previous.as_ref().is_some_and(|p| p.gatekeeper),
        cluster: previous.as_ref().and_then(|p| p.cluster),
    };
    set_worker(state, &record);
    mq::register_origin(state, &registration.identity);
    Ok(())
}

/// Every check of [`register`], writing nothing: the node runs it when a registration enters
/// its mempool (against its committed state and time), so evidence that does not verify never
/// reaches a block and costs no leader its slot.
pub fn check_registration<S: StateRead + ?Sized>(
    state: &Overlay<S>,
    ctx: &RegistrationContext<'_>,
    signer: &Address,
    signed: &SignedRegistration,
) -> Result<phala_attestation::Verdict, TxError> {
    let registration = &signed.registration;
    if registration.operator != *signer {
        return Err(TxError::NotOperator {
            operator: registration.operator,
            signer: *signer,
        });
    }
    if !phala_crypto::verify_registration(ctx.genesis, signed) {
        return Err(TxError::BadRegistrationSignature);
    }
    if matches!(registration.evidence, Evidence::Simulated { .. }) && !ctx.dev {
        return Err(TxError::Attestation(
            "simulated evidence is accepted on dev chains only".into(),
        ));
    }
    let policy = policy(state)?;
    let height = ctx.block.height;
    if registration.freshness > height || height - registration.freshness > policy.freshness_blocks
    {
        return Err(TxError::StaleAttestation {
            freshness: registration.freshness,
            height,
            window: policy.freshness_blocks,
        });
    }
    let expected = registration.expected_report_data(ctx.genesis.as_ref());
    let verdict = phala_attestation::attest(
        &registration.evidence,
        &policy,
        &expected,
        ctx.block.timestamp / 1000,
    )
    .map_err(|error| TxError::Attestation(error.to_string()))?;
    if let Some(previous) = worker(state, &registration.identity)
        && previous.ecdh != registration.ecdh
    {
        return Err(TxError::Attestation(
            "a registered worker cannot change its ECDH key".into(),
        ));
    }
    Ok(verdict)
}

/// Admin: replaces the policy. A production (non-dev) chain never allows simulated evidence
/// (registration refuses it there regardless).
fn set_policy<S: StateRead + ?Sized>(
    state: &mut Overlay<S>,
    signer: &Address,
    new: &AttestationPolicy,
    dev: bool,
) -> Result<(), TxError> {
    require_admin(state, signer)?;
    new.validate()
        .map_err(|e| TxError::BadPayload(e.to_string()))?;
    if new.allow_simulated && !dev {
        return Err(TxError::BadPayload(
            "a production chain cannot allow simulated TEEs".into(),
        ));
    }
    state.set(keys::POLICY.to_vec(), new.encode().to_vec());
    Ok(())
}

/// Admin: admits a registered worker that asked to be a gatekeeper. The first gatekeeper of a
/// chain without a master key is told to create it.
fn add_gatekeeper<S: StateRead + ?Sized>(
    state: &mut Overlay<S>,
    outbox: &mut Outbox,
    ctx: &BlockContext,
    signer: &Address,
    identity: &Address,
) -> Result<(), TxError> {
    require_admin(state, signer)?;
    let mut record = worker(state, identity).ok_or(TxError::UnknownWorker(*identity))?;
    require_current(state, identity, ctx.height)?;
    if !record.gatekeeper_candidate {
        return Err(TxError::NotGatekeeperCandidate(*identity));
    }
    let mut set = gatekeepers(state);
    if set.contains(identity) {
        return Err(TxError::AlreadyGatekeeper(*identity));
    }
    if set.len() >= MAX_GATEKEEPERS {
        return Err(TxError::Corrupt("gatekeeper set full"));
    }
    let bootstrap = set.is_empty() && master_generation(state) == 0;
    set.push(*identity);
    state.set(keys::GATEKEEPERS.to_vec(), set.encode().to_vec());
    record.gatekeeper = true;
    set_worker(state, &record);
    let joined = GatekeeperJoined {
        identity: *identity,
        ecdh: record.ecdh,
        bootstrap,
    };
    let payload = Bytes::from(joined.encode().to_vec());
    mq::send(
        state,
        outbox,
        ctx,
        Destination::Gatekeepers,
        topics::GATEKEEPER_JOINED,
        payload,
    );
    Ok(())
}

/// Admin: places a registered worker in a cluster; the gatekeepers send it the cluster key.
fn assign_cluster<S: StateRead + ?Sized>(
    state: &mut Overlay<S>,
    outbox: &mut Outbox,
    ctx: &BlockContext,
    signer: &Address,
    identity: &Address,
    cluster: u32,
) -> Result<(), TxError> {
    require_admin(state, signer)?;
    check_cluster_id(cluster)?;
    if !cluster_exists(state, cluster) {
        return Err(TxError::UnknownCluster(cluster));
    }
    let mut record = worker(state, identity).ok_or(TxError::UnknownWorker(*identity))?;
    require_current(state, identity, ctx.height)?;
    record.cluster = Some(cluster);
    set_worker(state, &record);
    let assignment = ClusterAssignment {
        worker: *identity,
        ecdh: record.ecdh,
        cluster,
    };
    let payload = Bytes::from(assignment.encode().to_vec());
    // The gatekeepers send the cluster key; the worker starts reading the cluster's stream.
    for destination in [Destination::Gatekeepers, Destination::Worker(*identity)] {
        mq::send(
            state,
            outbox,
            ctx,
            destination,
            topics::WORKER_ASSIGNED,
            payload.clone(),
        );
    }
    Ok(())
}

/// Admin: orders the next master key generation.
fn rotate_master_key<S: StateRead + ?Sized>(
    state: &mut Overlay<S>,
    outbox: &mut Outbox,
    ctx: &BlockContext,
    signer: &Address,
) -> Result<(), TxError> {
    require_admin(state, signer)?;
    let current = master_generation(state);
    if current == 0 {
        return Err(TxError::NoMasterKey);
    }
    if state.get(keys::PENDING_ROTATION).is_some() {
        return Err(TxError::RotationPending);
    }
    let next = current
        .checked_add(1)
        .ok_or(TxError::Corrupt("master key generations"))?;
    state.set(keys::PENDING_ROTATION.to_vec(), next.to_be_bytes().to_vec());
    let payload = Bytes::copy_from_slice(&next.to_be_bytes());
    mq::send(
        state,
        outbox,
        ctx,
        Destination::Gatekeepers,
        topics::ROTATE_MASTER_KEY,
        payload,
    );
    Ok(())
}

/// Admin: creates a cluster.
fn create_cluster<S: StateRead + ?Sized>(
    state: &mut Overlay<S>,
    signer: &Address,
    cluster: u32,
) -> Result<(), TxError> {
    require_admin(state, signer)?;
    check_cluster_id(cluster)?;
    if cluster_exists(state, cluster) {
        return Err(TxError::ClusterExists(cluster));
    }
    state.set(keys::cluster(cluster), Vec::new());
    Ok(())
}

/// Refuses the cluster id kept back for "no cluster".
fn check_cluster_id(cluster: u32) -> Result<(), TxError> {
    if cluster == u32::MAX {
        return Err(TxError::BadPayload(format!(
            "cluster id {cluster} is reserved"
        )));
    }
    Ok(())
}

/// Whether `cluster` was created (at genesis or by the admin).
pub fn cluster_exists<S: StateRead + ?Sized>(state: &Overlay<S>, cluster: u32) -> bool {
    state.get(&keys::cluster(cluster)).is_some()
}

/// Acts on an accepted upward message with a registry topic; `Ok(false)` if the topic is not
/// the registry's.
fn handle_upward<S: StateRead + ?Sized>(
    state: &mut Overlay<S>,
    outbox: &mut Outbox,
    ctx: &BlockContext,
    message: &UpwardMessage,
) -> Result<bool, TxError> {
    let topic = message.topic.as_ref();
    if topic != topics::PUBLISH_MASTER_KEY && topic != topics::DELIVER_KEY {
        return Ok(false);
    }
    let set = gatekeepers(state);
    if !set.contains(&message.origin) {
        return Err(TxError::NotGatekeeper(message.origin));
    }
    let bad_payload = |_| TxError::BadPayload(String::from_utf8_lossy(topic).into_owned());
    // Gatekeepers send identical copies; the first one takes effect.
    let seen = keys::seen(Sha256::hash(&[topic, &message.payload]).as_ref());
    if state.get(&seen).is_some() {
        return Ok(true);
    }
    state.set(seen, Vec::new());
    if topic == topics::PUBLISH_MASTER_KEY {
        let key: MasterPublicKey = decode_payload(&message.payload).map_err(bad_payload)?;
        if set.first() != Some(&message.origin) {
            return Err(TxError::NotGatekeeper(message.origin));
        }
        publish_master_key(state, outbox, ctx, &key);
    } else {
        let delivery: KeyDelivery = decode_payload(&message.payload).map_err(bad_payload)?;
        if worker(state, &delivery.recipient).is_none() {
            return Err(TxError::UnknownWorker(delivery.recipient));
        }
        let destination = Destination::Worker(delivery.recipient);
        mq::send(
            state,
            outbox,
            ctx,
            destination,
            topics::DELIVER_KEY,
            message.payload.clone(),
        );
    }
    Ok(true)
}

/// Records the master key generation the chain is waiting for, from the first gatekeeper of the
/// set (others, repeated or unordered ones are ignored: the first copy wins).
fn publish_master_key<S: StateRead + ?Sized>(
    state: &mut Overlay<S>,
    outbox: &mut Outbox,
    ctx: &BlockContext,
    key: &MasterPublicKey,
) {
    // Only the generation the chain is waiting for: the first, or the one a rotation ordered.
    let expected = master_generation(state).checked_add(1);
    let ordered = match state.get(keys::PENDING_ROTATION) {
        Some(pending) => pending.try_into().ok().map(u32::from_be_bytes),
        None => (master_generation(state) == 0).then_some(1),
    };
    if Some(key.generation) != expected || ordered != expected {
        return;
    }
    state.set(keys::master_key(key.generation), key.public_key.to_vec());
    state.set(
        keys::MASTER_GENERATION.to_vec(),
        key.generation.to_be_bytes().to_vec(),
    );
    state.remove(keys::PENDING_ROTATION.to_vec());
    let payload = Bytes::from(key.encode().to_vec());
    mq::send(
        state,
        outbox,
        ctx,
        Destination::All,
        topics::MASTER_KEY_PUBLISHED,
        payload,
    );
}
