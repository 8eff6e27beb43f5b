//! Confidential contracts, the chain's part: code by hash, instantiation, encrypted
//! commands with prepaid gas, the gatekeepers' contract keys and the workers' reports.
//!
//! The chain never sees a contract's inputs or state: it orders encrypted commands into the
//! cluster's stream ([`Destination::Cluster`]), which every worker of the cluster executes.
//!
//! Invariants:
//! - a contract's public key is set once, by the first gatekeeper copy; commands are accepted
//!   only once it is set;
//! - a command's index is its position in the contract's calls (0 is `init`), so every report
//!   names exactly one call; each worker of the cluster counts once per call, and the first
//!   report that disagrees with the first one is kept as evidence;
//! - a command's gas (`gas_limit × gas_price`) waits in [`GAS_ESCROW`] until the first report
//!   of its call: then the gas used is paid as a fee and the rest goes back to the sender.
//!   The escrow's balance is always the sum of the prepaid calls not yet reported;
//! - a contract's state is bounded by its storage quota, bought by a deposit its deployer
//!   locks in [`STORAGE_DEPOSITS`] (`quota × deposit_per_byte`, at most `max_storage_quota`):
//!   the deposits account's balance is always at least the sum of the contracts'
//!   `storage_deposit` (more only if someone transferred to it: that is locked for good).
//!   Workers refuse a call that would grow the state past the quota; quota changes reach them
//!   in the cluster stream, in order with the commands. Lowering the quota returns the
//!   deposit above it, never below the state size that at least [`SIZE_CONFIRMATIONS`]
//!   workers reported, undisputed, for the last call.

use crate::{
    BlockContext, TxError, balances,
    balances::FeeSchedule,
    config::GenesisConfig,
    module::{Env, Module, Origin},
    mq::{self, Outbox},
    registry,
    state::{Overlay, StateRead},
    weights::{self, Weight},
};
use bytes::Bytes;
use commonware_codec::{Copying, DecodeExt, Encode};
use phala_types::{
    Address, Balance, ContractCommand, ContractInstantiated, ContractPublicKey, ContractQuota,
    ContractRecord, ContractReport, ContractsCall, Destination, ReportRecord, UpwardMessage,
    contracts::{CodeHash, ContractId, Dispute, contract_id, topics},
    registry::decode_payload,
};
use serde::{Deserialize, Serialize};

/// The contracts module.
pub struct Contracts;

impl Module for Contracts {
    const PREFIX: &'static [u8] = b"contracts/";
    type Call = ContractsCall;

    fn genesis<S: StateRead + ?Sized>(_state: &mut Overlay<S>, _config: &GenesisConfig) {}

    fn weight(call: &ContractsCall) -> Weight {
        match call {
            ContractsCall::UploadCode { .. } => weights::writes(1),
            // The record, two stream messages (2 writes each), the deployer's and the
            // deposits' balances, and the deployer's nonce; and the code every worker of the
            // cluster receives and loads.
            ContractsCall::Instantiate { .. } => weights::writes(8) + weights::INSTANTIATION,
            ContractsCall::Command { .. } => weights::writes(6),
            ContractsCall::SetStorageQuota { .. } => weights::writes(5),
        }
    }

    fn dispatch<S: StateRead + ?Sized>(
        env: &mut Env<'_, '_, S>,
        origin: &Origin,
        call: &ContractsCall,
    ) -> Result<(), TxError> {
        let (state, outbox, block) = (&mut *env.state, &mut *env.outbox, env.block);
        let config = &env.config.contracts;
        let signer = &origin.signer;
        let event = match call {
            ContractsCall::UploadCode { code } => Event::CodeUploaded {
                code_hash: hex::encode(upload_code(state, code)?),
            },
            ContractsCall::Instantiate {
                code_hash,
                cluster,
                salt,
                storage_quota,
                input,
            } => {
                let args = Instantiation {
                    code_hash,
                    cluster: *cluster,
                    salt,
                    storage_quota: *storage_quota,
                    input,
                };
                let id = instantiate(state, outbox, block, config, signer, args)?;
                Event::Instantiated {
                    contract: hex::encode(id),
                    cluster: *cluster,
                }
            }
            ContractsCall::Command {
                contract,
                gas_limit,
                encapped,
                ciphertext,
            } => {
                let sealed = SealedCommand {
                    contract,
                    nonce: origin.nonce,
                    gas_limit: *gas_limit,
                    encapped,
                    ciphertext,
                };
                let index = command(state, outbox, block, config, signer, sealed)?;
                Event::CommandQueued {
                    contract: hex::encode(contract),
                    index,
                }
            }
            ContractsCall::SetStorageQuota { contract, quota } => {
                set_storage_quota(state, outbox, block, config, signer, contract, *quota)?;
                Event::StorageQuotaSet {
                    contract: hex::encode(contract),
                    quota: *quota,
                }
            }
        };
        env.emit(event);
        Ok(())
    }

    fn on_upward<S: StateRead + ?Sized>(
        env: &mut Env<'_, '_, S>,
        message: &UpwardMessage,
    ) -> Result<bool, TxError> {
        handle_upward(env.state, env.outbox, env.block, &env.config.fees, message)
    }
}

/// What happened in the contracts module (contracts' own events are in the state, under
/// [`keys::event`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum Event {
    /// Code was stored (or was already) under its hash (hex).
    CodeUploaded { code_hash: String },
    /// A contract (hex id) was created on a cluster.
    Instantiated { contract: String, cluster: u32 },
    /// A command became call `index` of the contract (hex id): its report will name it.
    CommandQueued { contract: String, index: u64 },
    /// The deployer set the contract's storage quota (bytes).
    StorageQuotaSet { contract: String, quota: u64 },
}

/// Gas settings, fixed at genesis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContractsConfig {
    /// PHA (in its smallest unit) per unit of gas.
    #[serde(with = "phala_types::amount::u128_string")]
    pub gas_price: Balance,
    /// The most gas one command may buy.
    pub max_gas: u64,
    /// PHA (in its smallest unit) locked per byte of a contract's storage quota.
    #[serde(
        default = "default_deposit_per_byte",
        with = "phala_types::amount::u128_string"
    )]
    pub deposit_per_byte: Balance,
    /// The largest storage quota of one contract (bytes): every worker of its cluster keeps,
    /// hashes and seals that state.
    #[serde(default = "default_max_storage_quota")]
    pub max_storage_quota: u64,
}

impl Default for ContractsConfig {
    fn default() -> Self {
        ContractsConfig {
            // 10^-9 PHA per gas: a million gas costs 0.001 PHA.
            gas_price: 1_000,
            max_gas: 10_000_000_000,
            deposit_per_byte: default_deposit_per_byte(),
            max_storage_quota: default_max_storage_quota(),
        }
    }
}

/// 10^-6 PHA per byte: a MiB of contract state locks about 1.05 PHA.
fn default_deposit_per_byte() -> Balance {
    1_000_000
}

/// 4 MiB per contract.
fn default_max_storage_quota() -> u64 {
    4 * 1024 * 1024
}

/// The account that holds prepaid gas until its call is reported (a keyless system account).
pub use phala_types::system::GAS_ESCROW;
/// The account that holds storage deposits (a keyless system account).
pub use phala_types::system::STORAGE_DEPOSITS;

/// Where contract data lives in the state.
pub mod keys {
    /// Prefix of contract records; the node lists contracts by it.
    pub const CONTRACT_PREFIX: &[u8] = b"contracts/contract/";

    pub fn code(hash: &[u8; 32]) -> Vec<u8> {
        [b"contracts/code/".as_slice(), hash].concat()
    }

    pub fn contract(id: &[u8; 32]) -> Vec<u8> {
        [CONTRACT_PREFIX, id].concat()
    }

    pub fn report(id: &[u8; 32], index: u64) -> Vec<u8> {
        [b"contracts/report/".as_slice(), id, &index.to_be_bytes()].concat()
    }

    /// Marks that `worker` reported call `index` of contract `id`.
    pub fn reported(id: &[u8; 32], index: u64, worker: &[u8; 32]) -> Vec<u8> {
        [
            b"contracts/reported/".as_slice(),
            id,
            &index.to_be_bytes(),
            worker,
        ]
        .concat()
    }

    /// The gas prepaid for call `index` of contract `id`, until its first report.
    pub fn prepaid(id: &[u8; 32], index: u64) -> Vec<u8> {
        [b"contracts/prepaid/".as_slice(), id, &index.to_be_bytes()].concat()
    }

    /// The number of events a contract emitted.
    pub fn event_count(id: &[u8; 32]) -> Vec<u8> {
        [b"contracts/event-count/".as_slice(), id].concat()
    }

    pub fn event(id: &[u8; 32], number: u64) -> Vec<u8> {
        [b"contracts/event/".as_slice(), id, &number.to_be_bytes()].concat()
    }
}

fn short(id: &[u8; 32]) -> String {
    hex::encode(id)
}

pub fn contract<S: StateRead + ?Sized>(
    state: &Overlay<S>,
    id: &ContractId,
) -> Option<ContractRecord> {
    let bytes = state.get(&keys::contract(id))?;
    ContractRecord::decode(Copying(&bytes)).ok()
}

fn set_contract<S: StateRead + ?Sized>(state: &mut Overlay<S>, record: &ContractRecord) {
    state.set(keys::contract(&record.id), record.encode().to_vec());
}

/// Stores code by its hash. Uploading the same code again changes nothing.
fn upload_code<S: StateRead + ?Sized>(
    state: &mut Overlay<S>,
    code: &Bytes,
) -> Result<CodeHash, TxError> {
    // Full validation needs a VM; the chain checks the module header and workers refuse
    // (and report) code that does not load.
    if !code.starts_with(b"\0asm\x01\0\0\0") {
        return Err(TxError::NotWasm);
    }
    let hash = phala_types::contracts::code_hash(code);
    let key = keys::code(&hash);
    if state.get(&key).is_none() {
        state.set(key, code.to_vec());
    }
    Ok(hash)
}

/// The arguments of an instantiation.
struct Instantiation<'a> {
    code_hash: &'a CodeHash,
    cluster: u32,
    salt: &'a [u8; 32],
    storage_quota: u64,
    input: &'a Bytes,
}

/// Creates a contract and tells its cluster and the gatekeepers.
fn instantiate<S: StateRead + ?Sized>(
    state: &mut Overlay<S>,
    outbox: &mut Outbox,
    ctx: &BlockContext,
    config: &ContractsConfig,
    deployer: &Address,
    args: Instantiation<'_>,
) -> Result<ContractId, TxError> {
    if state.get(&keys::code(args.code_hash)).is_none() {
        return Err(TxError::UnknownCode(short(args.code_hash)));
    }
    if !registry::cluster_exists(state, args.cluster) {
        return Err(TxError::UnknownCluster(args.cluster));
    }
    let generation = registry::master_generation(state);
    if generation == 0 {
        return Err(TxError::NoMasterKey);
    }
    let id = contract_id(deployer, args.code_hash, args.cluster, args.salt);
    if contract(state, &id).is_some() {
        return Err(TxError::ContractExists(short(&id)));
    }
    let storage_deposit = deposit_for(config, args.storage_quota)?;
    if storage_deposit > 0 {
        balances::transfer(state, deployer, &STORAGE_DEPOSITS, storage_deposit)?;
    }
    set_contract(
        state,
        &ContractRecord {
            id,
            code_hash: *args.code_hash,
            deployer: *deployer,
            cluster: args.cluster,
            generation,
            instantiated: ctx.height,
            public_key: None,
            commands: 0,
            storage_quota: args.storage_quota,
            storage_deposit,
        },
    );
    let message = ContractInstantiated {
        contract: id,
        code_hash: *args.code_hash,
        deployer: *deployer,
        cluster: args.cluster,
        generation,
        height: ctx.height,
        timestamp: ctx.timestamp,
        storage_quota: args.storage_quota,
        input: phala_types::contracts::Blob(args.input.clone()),
    };
    let payload = Bytes::from(message.encode().to_vec());
    for destination in [Destination::Cluster(args.cluster), Destination::Gatekeepers] {
        mq::send(
            state,
            outbox,
            ctx,
            destination,
            topics::INSTANTIATED,
            payload.clone(),
        );
    }
    Ok(id)
}

/// The deposit a quota of `quota` bytes locks; refuses one above the chain's limit.
fn deposit_for(config: &ContractsConfig, quota: u64) -> Result<Balance, TxError> {
    if quota > config.max_storage_quota {
        return Err(TxError::QuotaTooLarge {
            got: quota,
            max: config.max_storage_quota,
        });
    }
    Ok(config.deposit_per_byte.saturating_mul(quota as Balance))
}

/// The deployer changes its contract's storage quota. Raising it locks more deposit at
/// once; lowering it returns the deposit above the new quota, but only once the workers have
/// reported the contract's last call and never below the state they reported for it. The
/// cluster learns the new quota in stream order, so every worker applies it between the same
/// two calls.
fn set_storage_quota<S: StateRead + ?Sized>(
    state: &mut Overlay<S>,
    outbox: &mut Outbox,
    ctx: &BlockContext,
    config: &ContractsConfig,
    signer: &Address,
    id: &ContractId,
    quota: u64,
) -> Result<(), TxError> {
    let mut record = contract(state, id).ok_or(TxError::UnknownContract(short(id)))?;
    if record.deployer != *signer {
        return Err(TxError::NotDeployer {
            contract: short(id),
            deployer: record.deployer,
        });
    }
    let deposit = deposit_for(config, quota)?;
    if quota < record.storage_quota {
        let used = reported_state_bytes(state, &record)?;
        if quota < used {
            return Err(TxError::QuotaBelowUsage {
                contract: short(id),
                used,
            });
        }
    }
    if deposit > record.storage_deposit {
        balances::transfer(
            state,
            signer,
            &STORAGE_DEPOSITS,
            deposit - record.storage_deposit,
        )?;
    } else if deposit < record.storage_deposit {
        balances::transfer(
            state,
            &STORAGE_DEPOSITS,
            signer,
            record.storage_deposit - deposit,
        )?;
    }
    record.storage_quota = quota;
    record.storage_deposit = deposit;
    set_contract(state, &record);
    let message = ContractQuota {
        contract: *id,
        quota,
    };
    mq::send(
        state,
        outbox,
        ctx,
        Destination::Cluster(record.cluster),
        topics::QUOTA,
        Bytes::from(message.encode().to_vec()),
    );
    Ok(())
}

/// How many workers must agree on the state size of a contract's last call, with no dispute,
/// before its quota may be lowered: the size decides a refund, so one lying worker must not.
pub const SIZE_CONFIRMATIONS: u32 = 2;

/// The state size the workers agreed on for the contract's last call.
fn reported_state_bytes<S: StateRead + ?Sized>(
    state: &Overlay<S>,
    record: &ContractRecord,
) -> Result<u64, TxError> {
    state
        .get(&keys::report(&record.id, record.commands))
        .and_then(|bytes| ReportRecord::decode(Copying(&bytes)).ok())
        .filter(|report| report.dispute.is_none() && report.confirmations >= SIZE_CONFIRMATIONS)
        .map(|report| report.state_bytes)
        .ok_or(TxError::UsageUnknown {
            contract: short(&record.id),
            call: record.commands,
        })
}

/// An encrypted command as the transaction carries it.
struct SealedCommand<'a> {
    contract: &'a ContractId,
    nonce: u64,
    gas_limit: u64,
    encapped: &'a [u8; 32],
    ciphertext: &'a Bytes,
}

/// Takes the command's gas into escrow and appends the command to its cluster's stream;
/// returns its call index.
fn command<S: StateRead + ?Sized>(
    state: &mut Overlay<S>,
    outbox: &mut Outbox,
    ctx: &BlockContext,
    config: &ContractsConfig,
    sender: &Address,
    command: SealedCommand<'_>,
) -> Result<u64, TxError> {
    let mut record = contract(state, command.contract)
        .ok_or(TxError::UnknownContract(short(command.contract)))?;
    if record.public_key.is_none() {
        return Err(TxError::ContractNotReady(short(command.contract)));
    }
    if command.gas_limit == 0 || command.gas_limit > config.max_gas {
        return Err(TxError::BadGasLimit {
            got: command.gas_limit,
            max: config.max_gas,
        });
    }
    let prepaid = Prepaid {
        sender: *sender,
        gas_limit: command.gas_limit,
        gas_price: config.gas_price,
    };
    if prepaid.total() > 0 {
        balances::transfer(state, sender, &GAS_ESCROW, prepaid.total())?;
    }
    record.commands += 1;
    set_contract(state, &record);
    state.set(keys::prepaid(&record.id, record.commands), prepaid.encode());
    let message = ContractCommand {
        contract: record.id,
        index: record.commands,
        sender: *sender,
        nonce: command.nonce,
        gas_limit: command.gas_limit,
        height: ctx.height,
        timestamp: ctx.timestamp,
        encapped: *command.encapped,
        ciphertext: phala_types::contracts::Blob(command.ciphertext.clone()),
    };
    mq::send(
        state,
        outbox,
        ctx,
        Destination::Cluster(record.cluster),
        topics::COMMAND,
        Bytes::from(message.encode().to_vec()),
    );
    Ok(record.commands)
}

/// Gas a command paid for in advance.
struct Prepaid {
    sender: Address,
    gas_limit: u64,
    gas_price: Balance,
}

impl Prepaid {
    fn total(&self) -> Balance {
        // Saturates only beyond the total supply, which no sender can pay.
        self.gas_price.saturating_mul(self.gas_limit as Balance)
    }

    fn encode(&self) -> Vec<u8> {
        [
            self.sender.0.as_slice(),
            &self.gas_limit.to_be_bytes(),
            &self.gas_price.to_be_bytes(),
        ]
        .concat()
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        Some(Prepaid {
            sender: Address(bytes.get(..32)?.try_into().ok()?),
            gas_limit: u64::from_be_bytes(bytes.get(32..40)?.try_into().ok()?),
            gas_price: Balance::from_be_bytes(bytes.get(40..56)?.try_into().ok()?),
        })
    }
}

/// Settles call `index`'s prepaid gas on its first report: what it used is charged as a fee
/// (split like any fee), the rest goes back to the sender.
fn settle_gas<S: StateRead + ?Sized>(
    state: &mut Overlay<S>,
    ctx: &BlockContext,
    fees: &FeeSchedule,
    report: &ContractReport,
) -> Result<(), TxError> {
    let key = keys::prepaid(&report.contract, report.index);
    let Some(prepaid) = state.get(&key).and_then(|bytes| Prepaid::decode(&bytes)) else {
        return Ok(());
    };
    state.remove(key);
    let used = report.gas_used.min(prepaid.gas_limit);
    let cost = prepaid.gas_price.saturating_mul(used as Balance);
    balances::charge_fee(state, fees, &GAS_ESCROW, &ctx.proposer, cost)?;
    let refund = prepaid.total() - cost;
    if refund > 0 {
        balances::transfer(state, &GAS_ESCROW, &prepaid.sender, refund)?;
    }
    Ok(())
}

/// Handles contract topics of an accepted upward message; `false` if the topic is not one.
fn handle_upward<S: StateRead + ?Sized>(
    state: &mut Overlay<S>,
    outbox: &mut Outbox,
    ctx: &BlockContext,
    fees: &FeeSchedule,
    message: &UpwardMessage,
) -> Result<bool, TxError> {
    let topic = message.topic.as_ref();
    let bad_payload = |_| TxError::BadPayload(String::from_utf8_lossy(topic).into_owned());
    if topic == topics::PUBLISH_KEY {
        let key: ContractPublicKey = decode_payload(&message.payload).map_err(bad_payload)?;
        publish_key(state, &message.origin, &key)?;
        Ok(true)
    } else if topic == topics::REPORT {
        let report =
            ContractReport::decode(Copying(message.payload.as_ref())).map_err(bad_payload)?;
        on_report(state, outbox, ctx, fees, &message.origin, &report)?;
        Ok(true)
    } else {
        Ok(false)
    }
}

/// Records a contract's public key from a gatekeeper; later copies change nothing.
fn publish_key<S: StateRead + ?Sized>(
    state: &mut Overlay<S>,
    origin: &Address,
    key: &ContractPublicKey,
) -> Result<(), TxError> {
    if !registry::gatekeepers(state).contains(origin) {
        return Err(TxError::NotGatekeeper(*origin));
    }
    let mut record =
        contract(state, &key.contract).ok_or(TxError::UnknownContract(short(&key.contract)))?;
    if record.public_key.is_none() {
        record.public_key = Some(key.public_key);
        set_contract(state, &record);
    }
    Ok(())
}

/// Records a worker's report of one call: the first sets the record (and publishes its events
/// and messages), identical ones confirm it, a different one is kept as a dispute.
fn on_report<S: StateRead + ?Sized>(
    state: &mut Overlay<S>,
    outbox: &mut Outbox,
    ctx: &BlockContext,
    fees: &FeeSchedule,
    worker: &Address,
    report: &ContractReport,
) -> Result<(), TxError> {
    let record = contract(state, &report.contract)
        .ok_or(TxError::UnknownContract(short(&report.contract)))?;
    let in_cluster = registry::worker(state, worker).and_then(|w| w.cluster);
    if in_cluster != Some(record.cluster) {
        return Err(TxError::NotInCluster {
            worker: *worker,
            cluster: record.cluster,
        });
    }
    if report.index > record.commands {
        return Err(TxError::UnknownCall {
            contract: short(&report.contract),
            index: report.index,
        });
    }
    let reported = keys::reported(&report.contract, report.index, &worker.0);
    if state.get(&reported).is_some() {
        return Ok(());
    }
    state.set(reported, Vec::new());
    let key = keys::report(&report.contract, report.index);
    let existing = state
        .get(&key)
        .and_then(|bytes| ReportRecord::decode(Copying(&bytes)).ok());
    let updated = match existing {
        None => {
            settle_gas(state, ctx, fees, report)?;
            publish_effects(state, outbox, ctx, report);
            ReportRecord {
                index: report.index,
                reporter: *worker,
                commitment: report.commitment,
                gas_used: report.gas_used,
                succeeded: report.succeeded,
                state_bytes: report.state_bytes,
                height: ctx.height,
                confirmations: 1,
                dispute: None,
            }
        }
        Some(mut first) => {
            let agrees = first.commitment == report.commitment
                && first.succeeded == report.succeeded
                && first.gas_used == report.gas_used
                && first.state_bytes == report.state_bytes;
            if agrees {
                first.confirmations += 1;
            } else if first.dispute.is_none() {
                first.dispute = Some(Dispute {
                    worker: *worker,
                    commitment: report.commitment,
                });
            }
            first
        }
    };
    state.set(key, updated.encode().to_vec());
    Ok(())
}

/// Stores a call's events and re-publishes its messages as `contract/<id>/<topic>`.
fn publish_effects<S: StateRead + ?Sized>(
    state: &mut Overlay<S>,
    outbox: &mut Outbox,
    ctx: &BlockContext,
    report: &ContractReport,
) {
    let count_key = keys::event_count(&report.contract);
    let mut count = state.get_u64(&count_key).unwrap_or(0);
    for event in &report.events {
        state.set(keys::event(&report.contract, count), event.to_vec());
        count += 1;
    }
    if !report.events.is_empty() {
        state.set(count_key, count.to_be_bytes().to_vec());
    }
    for (topic, payload) in &report.messages {
        let full = [
            b"contract/".as_slice(),
            hex::encode(report.contract).as_bytes(),
            b"/",
            topic,
        ]
        .concat();
        mq::send(state, outbox, ctx, Destination::All, &full, payload.clone());
    }
}
