//! The contracts a worker runs: instantiation, encrypted commands in chain order, state sealed
//! with each contract's key, and the reports that let the chain compare workers.
//!
//! Invariants:
//! - every worker of a cluster applies the cluster stream's messages in the same order with the
//!   same inputs (commands carry their block's height and time), so the state commitment after
//!   call `n` is the same on every honest worker;
//! - a call that fails (cannot be decrypted, traps, runs out of gas, is refused, or would grow
//!   the state past the contract's storage quota) changes nothing but is still reported, so gas
//!   and failures are visible on chain; a call may always shrink the state, even one above a
//!   lowered quota;
//! - messages of the cluster stream wait, in order, until the worker holds the cluster key they
//!   need (a worker that joins late reads the stream from its start).

use crate::keys::{KeyState, Outgoing, contract_key};
use crate::seal::Sealer;
use bytes::Bytes;
use commonware_codec::{Copying, DecodeExt, Encode};
use phala_crypto::secrets::{self, EcdhKeypair};
use phala_types::{
    Address, ContractCommand, ContractInstantiated, ContractQuota, ContractReport, DownwardMessage,
    contracts::{CodeHash, ContractId, command_info, entry_bytes, labels, topics},
    registry::decode_payload,
};
use phala_vm::{Call, Entry, Failure, Outcome, Vm, VmError};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};
use thiserror::Error;

/// Gas of a contract's `init` (paid by the deployer's transaction fee).
pub const INIT_GAS: u64 = 1_000_000_000;
const STATE_SEAL_PURPOSE: &[u8] = b"phala/contract-state-seal/v1";
const COMMAND_RANDOM_LABEL: &[u8] = b"phala/contract-command-random/v1";

/// A contract's key-value state.
pub type ContractState = BTreeMap<Vec<u8>, Vec<u8>>;

/// Why a batch's contract messages could not be applied (the whole batch is refused).
#[derive(Debug, Error)]
pub enum ContractError {
    #[error("code {0} of an instantiated contract is missing; the relayer must include it")]
    MissingCode(String),
    #[error("code store: {0}")]
    Io(String),
    #[error("sealed state of contract {0} does not open")]
    Corrupt(String),
}

/// One contract this worker runs.
#[derive(Clone)]
pub struct Instance {
    pub id: ContractId,
    pub code_hash: CodeHash,
    pub cluster: u32,
    pub generation: u32,
    pub deployer: Address,
    key: [u8; 32],
    /// The x25519 pair derived from `key`, kept because every query needs it.
    ecdh: Arc<EcdhKeypair>,
    pub state: Arc<ContractState>,
    /// Index of the next call (commands start at 1; 0 is `init`).
    pub next_call: u64,
    /// Commitment of `state`.
    pub commitment: [u8; 32],
    /// The bytes of state a call may grow it to ([`entry_bytes`]), set by the chain.
    pub quota: u64,
    /// The bytes `state` counts against `quota`.
    pub state_bytes: u64,
    /// Height of the block of the last applied call.
    pub height: u64,
    /// Why the contract cannot run (its code does not load or `init` failed), if so.
    pub broken: Option<String>,
}

impl Instance {
    /// A contract with empty state and no code (test and fuzz fixtures: it answers every call
    /// with a refusal).
    #[cfg(any(test, feature = "mocks"))]
    pub(crate) fn bare(id: ContractId, key: [u8; 32], quota: u64) -> Self {
        Instance {
            id,
            code_hash: [0; 32],
            cluster: 0,
            generation: 1,
            deployer: Address::default(),
            key,
            ecdh: Arc::new(EcdhKeypair::from_seed(&key)),
            state: Arc::new(ContractState::new()),
            next_call: 1,
            commitment: commitment(&id, &ContractState::new()),
            quota,
            state_bytes: 0,
            height: 1,
            broken: Some("no code (a fixture)".into()),
        }
    }

    /// The x25519 keypair commands and queries are encrypted to.
    pub fn ecdh(&self) -> &EcdhKeypair {
        &self.ecdh
    }

    /// Randomness for queries: fresh, never derived from the contract key.
    pub fn query_seed() -> [u8; 32] {
        rand::random()
    }
}

/// What the checkpoint keeps of an instance: everything but the key, with the state sealed
/// under the contract key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedInstance {
    pub code_hash: String,
    pub cluster: u32,
    pub generation: u32,
    pub deployer: Address,
    pub next_call: u64,
    pub commitment: String,
    pub quota: u64,
    pub height: u64,
    pub broken: Option<String>,
    /// Hex of the state encrypted with a key derived from the contract key.
    pub state: String,
}

/// Code by hash, on disk (code is public; its hash is checked on every load).
pub struct CodeStore {
    dir: PathBuf,
}

impl CodeStore {
    pub fn new(dir: &Path) -> Result<Self, ContractError> {
        let dir = dir.join("code");
        std::fs::create_dir_all(&dir).map_err(|e| ContractError::Io(e.to_string()))?;
        Ok(CodeStore { dir })
    }

    /// Stores code the relayer supplied, keyed by its own hash.
    pub fn put(&self, code: &[u8]) -> Result<CodeHash, ContractError> {
        let hash = phala_vm::code_hash(code);
        let path = self.path(&hash);
        if !path.exists() {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, code)
                .and_then(|_| std::fs::rename(&tmp, &path))
                .map_err(|e| ContractError::Io(e.to_string()))?;
        }
        Ok(hash)
    }

    /// Code with this hash, if stored and intact.
    pub fn get(&self, hash: &CodeHash) -> Option<Vec<u8>> {
        let code = std::fs::read(self.path(hash)).ok()?;
        (phala_vm::code_hash(&code) == *hash).then_some(code)
    }

    fn path(&self, hash: &CodeHash) -> PathBuf {
        self.dir.join(format!("{}.wasm", hex::encode(hash)))
    }
}

/// The contracts of this worker.
#[derive(Clone)]
pub struct Contracts {
    vm: Arc<Vm>,
    pub instances: BTreeMap<ContractId, Instance>,
}

impl Contracts {
    pub fn new(vm: Arc<Vm>) -> Self {
        Contracts {
            vm,
            instances: BTreeMap::new(),
        }
    }

    pub fn vm(&self) -> &Arc<Vm> {
        &self.vm
    }

    /// Whether `message` (of a cluster stream) can be applied with the keys held now.
    pub fn ready(&self, keys: &KeyState, message: &DownwardMessage) -> bool {
        if message.topic.as_ref() != topics::INSTANTIATED {
            return true;
        }
        match decode_payload::<ContractInstantiated>(&message.payload) {
            Ok(inst) => keys.cluster_key_of(inst.cluster, inst.generation).is_some(),
            Err(_) => true,
        }
    }

    /// Applies one cluster-stream message; returns the report to send up.
    pub fn apply(
        &mut self,
        keys: &KeyState,
        code: &CodeStore,
        message: &DownwardMessage,
    ) -> Result<Vec<Outgoing>, ContractError> {
        let topic = message.topic.as_ref();
        // The chain built these payloads; a malformed one is skipped (defence in depth).
        let report = if topic == topics::INSTANTIATED {
            match decode_payload::<ContractInstantiated>(&message.payload) {
                Ok(inst) => self.instantiate(keys, code, &inst)?,
                Err(_) => None,
            }
        } else if topic == topics::COMMAND {
            match decode_payload::<ContractCommand>(&message.payload) {
                Ok(command) => self.command(&command),
                Err(_) => None,
            }
        } else if topic == topics::QUOTA {
            if let Ok(change) = decode_payload::<ContractQuota>(&message.payload)
                && let Some(instance) = self.instances.get_mut(&change.contract)
            {
                instance.quota = change.quota;
            }
            None
        } else {
            None
        };
        Ok(report
            .map(|r| (topics::REPORT, Bytes::from(r.encode().to_vec())))
            .into_iter()
            .collect())
    }

    fn instantiate(
        &mut self,
        keys: &KeyState,
        code: &CodeStore,
        inst: &ContractInstantiated,
    ) -> Result<Option<ContractReport>, ContractError> {
        if self.instances.contains_key(&inst.contract) {
            return Ok(None);
        }
        let Some(cluster_key) = keys.cluster_key_of(inst.cluster, inst.generation) else {
            return Ok(None);
        };
        let bytes = code
            .get(&inst.code_hash)
            .ok_or_else(|| ContractError::MissingCode(hex::encode(inst.code_hash)))?;
        let key = contract_key(&cluster_key, &inst.contract);
        let mut instance = Instance {
            id: inst.contract,
            code_hash: inst.code_hash,
            cluster: inst.cluster,
            generation: inst.generation,
            deployer: inst.deployer,
            key,
            ecdh: Arc::new(EcdhKeypair::from_seed(&key)),
            state: Arc::new(ContractState::new()),
            next_call: 1,
            commitment: commitment(&inst.contract, &ContractState::new()),
            quota: inst.storage_quota,
            state_bytes: 0,
            height: inst.height,
            broken: None,
        };
        let result = self.vm.load(&bytes).map_err(Failure::from).and_then(|_| {
            let call = Call {
                entry: Entry::Init,
                contract: inst.contract,
                caller: inst.deployer.0,
                height: inst.height,
                time_ms: inst.timestamp,
                input: inst.input.0.to_vec(),
                fuel: INIT_GAS,
                random_seed: command_seed(&instance.key, 0, inst.height),
            };
            self.vm.call(&inst.code_hash, instance.state.clone(), call)
        });
        if let Err(error) = &result {
            instance.broken = Some(error.to_string());
        }
        let report = apply_outcome(&mut instance, 0, result);
        if !report.succeeded && instance.broken.is_none() {
            // `init` ran but its state would not fit the quota: the contract never starts
            // half-initialised.
            instance.broken = Some("init would exceed the storage quota".into());
        }
        self.instances.insert(inst.contract, instance);
        Ok(Some(report))
    }

    fn command(&mut self, command: &ContractCommand) -> Option<ContractReport> {
        let instance = self.instances.get_mut(&command.contract)?;
        if command.index != instance.next_call {
            tracing::warn!(
                contract = %hex::encode(command.contract),
                expected = instance.next_call,
                got = command.index,
                "command out of order; skipped"
            );
            return None;
        }
        instance.height = command.height;
        let result = match &instance.broken {
            Some(reason) => Err(Failure::from(VmError::Refused(format!(
                "the contract cannot run: {reason}"
            )))),
            None => instance
                .ecdh()
                .open(
                    &command_info(&command.contract, &command.sender, command.nonce),
                    &command.encapped,
                    &command.ciphertext.0,
                )
                .map_err(|_| {
                    Failure::from(VmError::Refused(
                        "the command does not decrypt with this contract's key".into(),
                    ))
                })
                .and_then(|input| {
                    let call = Call {
                        entry: Entry::Command,
                        contract: command.contract,
                        caller: command.sender.0,
                        height: command.height,
                        time_ms: command.timestamp,
                        input,
                        fuel: command.gas_limit,
                        random_seed: command_seed(&instance.key, command.index, command.height),
                    };
                    self.vm
                        .call(&instance.code_hash, instance.state.clone(), call)
                }),
        };
        if let Err(error) = &result {
            tracing::debug!(contract = %hex::encode(command.contract), %error, "command failed");
        }
        Some(apply_outcome(instance, command.index, result))
    }

    /// Seals every instance for the checkpoint, reusing the sealed copy of each instance that
    /// ran no call and got no new quota since (every call, failed or not, advances
    /// `next_call`).
    pub fn seal(
        &self,
        previous: &BTreeMap<String, SealedInstance>,
    ) -> BTreeMap<String, SealedInstance> {
        self.instances
            .values()
            .map(|instance| {
                let id = hex::encode(instance.id);
                let sealed = match previous.get(&id) {
                    Some(sealed)
                        if sealed.next_call == instance.next_call
                            && sealed.quota == instance.quota =>
                    {
                        sealed.clone()
                    }
                    _ => seal_instance(instance),
                };
                (id, sealed)
            })
            .collect()
    }

    /// Restores instances from a checkpoint; keys come from the key state.
    pub fn restore(
        &mut self,
        keys: &KeyState,
        code: &CodeStore,
        sealed: &BTreeMap<String, SealedInstance>,
    ) -> Result<(), ContractError> {
        for (id_hex, sealed) in sealed {
            let instance = unseal_instance(keys, id_hex, sealed)?;
            if instance.broken.is_none() {
                let bytes = code
                    .get(&instance.code_hash)
                    .ok_or_else(|| ContractError::MissingCode(sealed.code_hash.clone()))?;
                self.vm
                    .load(&bytes)
                    .map_err(|e| ContractError::Io(e.to_string()))?;
            }
            self.instances.insert(instance.id, instance);
        }
        Ok(())
    }
}

/// Applies a call's result to the instance and builds its report.
fn apply_outcome(
    instance: &mut Instance,
    index: u64,
    result: Result<Outcome, Failure>,
) -> ContractReport {
    instance.next_call = index + 1;
    let result = result.and_then(|outcome| within_quota(instance, outcome));
    let (succeeded, gas_used, events, messages) = match result {
        Ok((outcome, state_bytes)) => {
            if !outcome.writes.is_empty() {
                let state = Arc::make_mut(&mut instance.state);
                for (key, value) in outcome.writes {
                    match value {
                        Some(value) => state.insert(key, value),
                        None => state.remove(&key),
                    };
                }
                instance.commitment = commitment(&instance.id, &instance.state);
                instance.state_bytes = state_bytes;
            }
            (true, outcome.gas_used, outcome.events, outcome.messages)
        }
        // A failed call pays for the gas it burned (all of it when it ran out).
        Err(failure) => (false, failure.gas_used, Vec::new(), Vec::new()),
    };
    ContractReport {
        contract: instance.id,
        index,
        commitment: instance.commitment,
        gas_used,
        succeeded,
        state_bytes: instance.state_bytes,
        events: events.into_iter().map(Bytes::from).collect(),
        messages: messages
            .into_iter()
            .map(|(topic, payload)| (Bytes::from(topic), Bytes::from(payload)))
            .collect(),
    }
}

/// The state's size after `outcome`'s writes, or the call's failure if that grows the state
/// past its quota (the call's gas is still paid: it did the work).
fn within_quota(instance: &Instance, outcome: Outcome) -> Result<(Outcome, u64), Failure> {
    let mut size = instance.state_bytes;
    for (key, value) in &outcome.writes {
        if let Some(old) = instance.state.get(key) {
            size = size.saturating_sub(entry_bytes(key, old));
        }
        if let Some(new) = value {
            size = size.saturating_add(entry_bytes(key, new));
        }
    }
    if size > instance.quota && size > instance.state_bytes {
        return Err(Failure {
            gas_used: outcome.gas_used,
            error: VmError::Refused(format!(
                "the call would grow the contract's state to {size} bytes, past its storage quota of {} (the deployer raises it with SetStorageQuota)",
                instance.quota
            )),
        });
    }
    Ok((outcome, size))
}

/// The bytes a state counts against its quota.
pub fn state_bytes(state: &ContractState) -> u64 {
    state
        .iter()
        .map(|(key, value)| entry_bytes(key, value))
        .sum()
}

/// The commitment of a contract's state: SHA-256 over its id and every entry in key order.
pub fn commitment(id: &ContractId, state: &ContractState) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(labels::STATE);
    hasher.update(id);
    for (key, value) in state {
        hasher.update((key.len() as u32).to_be_bytes());
        hasher.update(key);
        hasher.update((value.len() as u32).to_be_bytes());
        hasher.update(value);
    }
    hasher.finalize().into()
}

/// The secret seed of the `random` host call for call `index`: every worker draws the same,
/// nobody without the contract key can predict it.
fn command_seed(key: &[u8; 32], index: u64, height: u64) -> [u8; 32] {
    let context = [index.to_be_bytes(), height.to_be_bytes()].concat();
    secrets::derive_key(key, COMMAND_RANDOM_LABEL, &context)
}

fn encode_state(state: &ContractState) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in state {
        out.extend_from_slice(&(key.len() as u32).to_be_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value);
    }
    out
}

fn decode_state(mut bytes: &[u8]) -> Option<ContractState> {
    let mut state = ContractState::new();
    let take = |bytes: &mut &[u8]| -> Option<Vec<u8>> {
        let len = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        let item = bytes.get(4..4 + len)?.to_vec();
        *bytes = &bytes[4 + len..];
        Some(item)
    };
    while !bytes.is_empty() {
        let key = take(&mut bytes)?;
        let value = take(&mut bytes)?;
        state.insert(key, value);
    }
    Some(state)
}

fn seal_instance(instance: &Instance) -> SealedInstance {
    let sealer = Sealer::for_secret(&instance.key, STATE_SEAL_PURPOSE);
    let state = sealer
        .encrypt(&instance.id, &encode_state(&instance.state))
        .unwrap_or_default();
    SealedInstance {
        code_hash: hex::encode(instance.code_hash),
        cluster: instance.cluster,
        generation: instance.generation,
        deployer: instance.deployer,
        next_call: instance.next_call,
        commitment: hex::encode(instance.commitment),
        quota: instance.quota,
        height: instance.height,
        broken: instance.broken.clone(),
        state: hex::encode(state),
    }
}

fn unseal_instance(
    keys: &KeyState,
    id_hex: &str,
    sealed: &SealedInstance,
) -> Result<Instance, ContractError> {
    let corrupt = || ContractError::Corrupt(id_hex.to_string());
    let id: ContractId = hex_array(id_hex).ok_or_else(corrupt)?;
    let cluster_key = keys
        .cluster_key_of(sealed.cluster, sealed.generation)
        .ok_or_else(corrupt)?;
    let key = contract_key(&cluster_key, &id);
    let sealer = Sealer::for_secret(&key, STATE_SEAL_PURPOSE);
    let bytes = hex::decode(&sealed.state).map_err(|_| corrupt())?;
    let state = sealer
        .decrypt(&id, &bytes)
        .and_then(|plain| decode_state(&plain))
        .ok_or_else(corrupt)?;
    let commitment_now = commitment(&id, &state);
    let size = state_bytes(&state);
    if hex::encode(commitment_now) != sealed.commitment {
        return Err(corrupt());
    }
    Ok(Instance {
        id,
        code_hash: hex_array(&sealed.code_hash).ok_or_else(corrupt)?,
        cluster: sealed.cluster,
        generation: sealed.generation,
        deployer: sealed.deployer,
        key,
        ecdh: Arc::new(EcdhKeypair::from_seed(&key)),
        state: Arc::new(state),
        next_call: sealed.next_call,
        commitment: commitment_now,
        quota: sealed.quota,
        state_bytes: size,
        height: sealed.height,
        broken: sealed.broken.clone(),
    })
}

fn hex_array(text: &str) -> Option<[u8; 32]> {
    hex::decode(text).ok()?.try_into().ok()
}

/// Decodes a hex cluster-stream message kept in the checkpoint.
pub fn decode_pending(text: &str) -> Option<DownwardMessage> {
    let bytes = hex::decode(text).ok()?;
    DownwardMessage::decode(Copying(&bytes)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(quota: u64) -> Instance {
        Instance::bare([1; 32], [4; 32], quota)
    }

    /// A call that writes `writes` (a `None` value deletes) and emits one event.
    fn call(writes: &[(&[u8], Option<usize>)]) -> Result<Outcome, Failure> {
        Ok(Outcome {
            output: Vec::new(),
            writes: writes
                .iter()
                .map(|(key, len)| (key.to_vec(), len.map(|len| vec![7; len])))
                .collect(),
            events: vec![b"event".to_vec()],
            messages: Vec::new(),
            gas_used: 42,
        })
    }

    /// A contract cannot grow its state past the quota its deployer paid for: the call that
    /// would is reported failed (its gas paid, its writes and events dropped), while calls
    /// within the quota, and calls that shrink the state, go through; the reported size is
    /// the state's, entry overhead included.
    #[test]
    fn state_grows_only_within_the_storage_quota() {
        let mut contract = instance(1_000);
        let report = apply_outcome(&mut contract, 1, call(&[(b"a", Some(500))]));
        assert!(report.succeeded);
        assert_eq!(report.state_bytes, 1 + 500 + 32);

        let before = contract.commitment;
        let report = apply_outcome(&mut contract, 2, call(&[(b"b", Some(500))]));
        assert!(
            !report.succeeded,
            "533 + 533 bytes exceed the quota of 1000"
        );
        assert_eq!((report.gas_used, report.events.len()), (42, 0));
        assert_eq!((report.commitment, report.state_bytes), (before, 533));
        assert_eq!(contract.next_call, 3, "the failed call still counts");

        // Replacing a value by a larger one counts only the difference.
        let report = apply_outcome(&mut contract, 3, call(&[(b"a", Some(900))]));
        assert!(report.succeeded);
        assert_eq!(report.state_bytes, 1 + 900 + 32);
    }

    #[test]
    fn a_lowered_quota_still_lets_the_state_shrink() {
        let mut contract = instance(10_000);
        apply_outcome(
            &mut contract,
            1,
            call(&[(b"a", Some(4_000)), (b"b", Some(4_000))]),
        );
        contract.quota = 100;
        let report = apply_outcome(&mut contract, 2, call(&[(b"a", Some(4_001))]));
        assert!(!report.succeeded, "growing while above the quota");
        let report = apply_outcome(&mut contract, 3, call(&[(b"a", None), (b"b", Some(10))]));
        assert!(report.succeeded, "shrinking is always allowed");
        assert_eq!(report.state_bytes, 1 + 10 + 32);
        assert_eq!(report.state_bytes, state_bytes(&contract.state));
    }

    /// A quota change from the cluster stream applies to the next calls, and sends nothing up
    /// (it is not a call).
    #[test]
    fn the_cluster_stream_changes_the_quota_in_order() {
        let vm = Arc::new(Vm::new().unwrap());
        let mut contracts = Contracts::new(vm);
        contracts.instances.insert([1; 32], instance(100));
        let dir = tempfile::tempdir().unwrap();
        let change = ContractQuota {
            contract: [1; 32],
            quota: 5_000,
        };
        let message = DownwardMessage {
            destination: phala_types::Destination::Cluster(0),
            topic: Bytes::from_static(topics::QUOTA),
            payload: Bytes::from(change.encode().to_vec()),
            sequence: 3,
        };
        let code = CodeStore::new(dir.path()).unwrap();
        let sent = contracts
            .apply(&KeyState::default(), &code, &message)
            .unwrap();
        assert!(sent.is_empty());
        assert_eq!(contracts.instances[&[1; 32]].quota, 5_000);
    }

    /// A checkpoint taken after a quota change keeps the new quota, although no call ran.
    #[test]
    fn a_quota_change_alone_is_sealed() {
        let vm = Arc::new(Vm::new().unwrap());
        let mut contracts = Contracts::new(vm);
        contracts.instances.insert([1; 32], instance(100));
        let before = contracts.seal(&BTreeMap::new());
        contracts.instances.get_mut(&[1; 32]).unwrap().quota = 900;
        let after = contracts.seal(&before);
        assert_eq!(after[&hex::encode([1; 32])].quota, 900);
    }

    /// The quota and the size survive the checkpoint.
    #[test]
    fn sealing_keeps_the_quota_and_recounts_the_size() {
        let mut contract = instance(5_000);
        apply_outcome(&mut contract, 1, call(&[(b"k", Some(100))]));
        let sealed = seal_instance(&contract);
        assert_eq!(sealed.quota, 5_000);
        let sealer = Sealer::for_secret(&contract.key, STATE_SEAL_PURPOSE);
        let plain = sealer
            .decrypt(&contract.id, &hex::decode(&sealed.state).unwrap())
            .unwrap();
        let state = decode_state(&plain).unwrap();
        assert_eq!(state_bytes(&state), contract.state_bytes);
    }
}
