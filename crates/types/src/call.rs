//! What a transaction asks the chain to do: a [`Call`] names the chain module that handles it,
//! then one of that module's calls. Each module's calls are one enum, so a module's dispatcher
//! and weights cover exactly its own calls, and a new module adds a variant here without
//! touching the others' encodings.
//!
//! Encoding: the module's tag (one byte), then the call's tag within the module (one byte),
//! then the call's fields in order. The tags are fixed by [`conformance`] vectors.

use crate::contracts::{CodeHash, ContractId, MAX_CODE, MAX_INPUT, MAX_SEALED};
use crate::{Address, AttestationPolicy, Balance, SignedRegistration, UpwardMessage};
use bytes::{BufMut, Bytes};
use commonware_codec::{Buf, EncodeSize, Error as CodecError, RangeCfg, Read, ReadExt, Write};

/// A call, by the module that handles it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// The PHA token (tag 0).
    Balances(BalancesCall),
    /// The message queue (tag 1).
    Mq(MqCall),
    /// The worker registry (tag 2).
    Registry(RegistryCall),
    /// Confidential contracts (tag 3).
    Contracts(ContractsCall),
}

/// Calls of the balances module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BalancesCall {
    /// Moves PHA from the signer to another account.
    Transfer { to: Address, amount: Balance },
}

/// Calls of the message queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MqCall {
    /// Relays a message signed by a registered origin (pherry pays the fee, the origin signs).
    SubmitUpward(UpwardMessage),
}

/// Calls of the worker registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistryCall {
    /// Registers (or re-attests) the worker whose identity key signed the registration; the
    /// transaction's signer must be its operator.
    RegisterWorker(SignedRegistration),
    /// Admin: replaces the attestation policy (governance will take this over).
    SetAttestationPolicy(AttestationPolicy),
    /// Admin: admits a registered worker to the gatekeeper set.
    AddGatekeeper(Address),
    /// Admin: places a registered worker in a cluster; the gatekeepers send it the cluster key.
    AssignCluster { worker: Address, cluster: u32 },
    /// Admin: orders the gatekeepers to create the next master key generation.
    RotateMasterKey,
    /// Admin: creates a cluster, a set of workers that replicate the same contracts.
    CreateCluster { cluster: u32 },
}

/// Calls of the contracts module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContractsCall {
    /// Stores contract code on chain, by its SHA-256 hash.
    UploadCode { code: Bytes },
    /// Instantiates uploaded code on a cluster; `input` (public) goes to the contract's `init`.
    /// The signer locks a storage deposit buying `storage_quota` bytes of contract state.
    Instantiate {
        code_hash: CodeHash,
        cluster: u32,
        salt: [u8; 32],
        storage_quota: u64,
        input: Bytes,
    },
    /// Sends a contract a command encrypted to its public key (HPKE, with
    /// [`crate::contracts::command_info`]); the signer buys `gas_limit` gas.
    Command {
        contract: ContractId,
        gas_limit: u64,
        encapped: [u8; 32],
        ciphertext: Bytes,
    },
    /// The deployer changes its contract's storage quota: the deposit grows with it, or the
    /// part above the state the workers last reported comes back.
    SetStorageQuota { contract: ContractId, quota: u64 },
}

impl Call {
    /// PHA the call moves out of the signer's balance, besides the fee.
    pub fn moves(&self) -> Balance {
        match self {
            Call::Balances(BalancesCall::Transfer { amount, .. }) => *amount,
            _ => 0,
        }
    }
}

impl Write for Call {
    fn write(&self, buf: &mut impl BufMut) {
        match self {
            Call::Balances(call) => {
                0u8.write(buf);
                call.write(buf);
            }
            Call::Mq(call) => {
                1u8.write(buf);
                call.write(buf);
            }
            Call::Registry(call) => {
                2u8.write(buf);
                call.write(buf);
            }
            Call::Contracts(call) => {
                3u8.write(buf);
                call.write(buf);
            }
        }
    }
}

impl EncodeSize for Call {
    fn encode_size(&self) -> usize {
        1 + match self {
            Call::Balances(call) => call.encode_size(),
            Call::Mq(call) => call.encode_size(),
            Call::Registry(call) => call.encode_size(),
            Call::Contracts(call) => call.encode_size(),
        }
    }
}

impl Read for Call {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        match u8::read(buf)? {
            0 => Ok(Call::Balances(BalancesCall::read(buf)?)),
            1 => Ok(Call::Mq(MqCall::read(buf)?)),
            2 => Ok(Call::Registry(RegistryCall::read(buf)?)),
            3 => Ok(Call::Contracts(ContractsCall::read(buf)?)),
            tag => Err(CodecError::InvalidEnum(tag)),
        }
    }
}

impl Write for BalancesCall {
    fn write(&self, buf: &mut impl BufMut) {
        match self {
            BalancesCall::Transfer { to, amount } => {
                0u8.write(buf);
                to.write(buf);
                amount.write(buf);
            }
        }
    }
}

impl EncodeSize for BalancesCall {
    fn encode_size(&self) -> usize {
        1 + match self {
            BalancesCall::Transfer { .. } => 32 + 16,
        }
    }
}

impl Read for BalancesCall {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        match u8::read(buf)? {
            0 => Ok(BalancesCall::Transfer {
                to: Address::read(buf)?,
                amount: u128::read(buf)?,
            }),
            tag => Err(CodecError::InvalidEnum(tag)),
        }
    }
}

impl Write for MqCall {
    fn write(&self, buf: &mut impl BufMut) {
        match self {
            MqCall::SubmitUpward(message) => {
                0u8.write(buf);
                message.write(buf);
            }
        }
    }
}

impl EncodeSize for MqCall {
    fn encode_size(&self) -> usize {
        1 + match self {
            MqCall::SubmitUpward(message) => message.encode_size(),
        }
    }
}

impl Read for MqCall {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        match u8::read(buf)? {
            0 => Ok(MqCall::SubmitUpward(UpwardMessage::read(buf)?)),
            tag => Err(CodecError::InvalidEnum(tag)),
        }
    }
}

impl Write for RegistryCall {
    fn write(&self, buf: &mut impl BufMut) {
        match self {
            RegistryCall::RegisterWorker(registration) => {
                0u8.write(buf);
                registration.write(buf);
            }
            RegistryCall::SetAttestationPolicy(policy) => {
                1u8.write(buf);
                policy.write(buf);
            }
            RegistryCall::AddGatekeeper(worker) => {
                2u8.write(buf);
                worker.write(buf);
            }
            RegistryCall::AssignCluster { worker, cluster } => {
                3u8.write(buf);
                worker.write(buf);
                cluster.write(buf);
            }
            RegistryCall::RotateMasterKey => 4u8.write(buf),
            RegistryCall::CreateCluster { cluster } => {
                5u8.write(buf);
                cluster.write(buf);
            }
        }
    }
}

impl EncodeSize for RegistryCall {
    fn encode_size(&self) -> usize {
        1 + match self {
            RegistryCall::RegisterWorker(registration) => registration.encode_size(),
            RegistryCall::SetAttestationPolicy(policy) => policy.encode_size(),
            RegistryCall::AddGatekeeper(_) => 32,
            RegistryCall::AssignCluster { .. } => 32 + 4,
            RegistryCall::RotateMasterKey => 0,
            RegistryCall::CreateCluster { .. } => 4,
        }
    }
}

impl Read for RegistryCall {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        match u8::read(buf)? {
            0 => Ok(RegistryCall::RegisterWorker(SignedRegistration::read(buf)?)),
            1 => Ok(RegistryCall::SetAttestationPolicy(AttestationPolicy::read(
                buf,
            )?)),
            2 => Ok(RegistryCall::AddGatekeeper(Address::read(buf)?)),
            3 => Ok(RegistryCall::AssignCluster {
                worker: Address::read(buf)?,
                cluster: u32::read(buf)?,
            }),
            4 => Ok(RegistryCall::RotateMasterKey),
            5 => Ok(RegistryCall::CreateCluster {
                cluster: u32::read(buf)?,
            }),
            tag => Err(CodecError::InvalidEnum(tag)),
        }
    }
}

impl Write for ContractsCall {
    fn write(&self, buf: &mut impl BufMut) {
        match self {
            ContractsCall::UploadCode { code } => {
                0u8.write(buf);
                code.write(buf);
            }
            ContractsCall::Instantiate {
                code_hash,
                cluster,
                salt,
                storage_quota,
                input,
            } => {
                1u8.write(buf);
                code_hash.write(buf);
                cluster.write(buf);
                salt.write(buf);
                storage_quota.write(buf);
                input.write(buf);
            }
            ContractsCall::Command {
                contract,
                gas_limit,
                encapped,
                ciphertext,
            } => {
                2u8.write(buf);
                contract.write(buf);
                gas_limit.write(buf);
                encapped.write(buf);
                ciphertext.write(buf);
            }
            ContractsCall::SetStorageQuota { contract, quota } => {
                3u8.write(buf);
                contract.write(buf);
                quota.write(buf);
            }
        }
    }
}

impl EncodeSize for ContractsCall {
    fn encode_size(&self) -> usize {
        1 + match self {
            ContractsCall::UploadCode { code } => code.encode_size(),
            ContractsCall::Instantiate { input, .. } => 32 + 4 + 32 + 8 + input.encode_size(),
            ContractsCall::Command { ciphertext, .. } => 32 + 8 + 32 + ciphertext.encode_size(),
            ContractsCall::SetStorageQuota { .. } => 32 + 8,
        }
    }
}

impl Read for ContractsCall {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        match u8::read(buf)? {
            0 => Ok(ContractsCall::UploadCode {
                code: Bytes::read_cfg(buf, &RangeCfg::new(..=MAX_CODE))?,
            }),
            1 => Ok(ContractsCall::Instantiate {
                code_hash: <[u8; 32]>::read(buf)?,
                cluster: u32::read(buf)?,
                salt: <[u8; 32]>::read(buf)?,
                storage_quota: u64::read(buf)?,
                input: Bytes::read_cfg(buf, &RangeCfg::new(..=MAX_INPUT))?,
            }),
            2 => Ok(ContractsCall::Command {
                contract: <[u8; 32]>::read(buf)?,
                gas_limit: u64::read(buf)?,
                encapped: <[u8; 32]>::read(buf)?,
                ciphertext: Bytes::read_cfg(buf, &RangeCfg::new(..=MAX_SEALED))?,
            }),
            3 => Ok(ContractsCall::SetStorageQuota {
                contract: <[u8; 32]>::read(buf)?,
                quota: u64::read(buf)?,
            }),
            tag => Err(CodecError::InvalidEnum(tag)),
        }
    }
}

/// Conformance vectors: the exact bytes of every call's encoding (the fields a transaction's
/// signature covers), so that a reordered field or a renumbered tag fails here instead of
/// silently forking the chain.
#[cfg(test)]
mod conformance {
    use super::*;
    use commonware_codec::{DecodeExt, Encode};

    fn check(call: Call, hex: &str) {
        let bytes = call.encode();
        assert_eq!(hex::encode(&bytes), hex, "{call:?}");
        assert_eq!(Call::decode(bytes).unwrap(), call);
    }

    #[test]
    fn balances_and_mq_calls_are_fixed() {
        let ones = "01".repeat(32);
        check(
            Call::Balances(BalancesCall::Transfer {
                to: Address([1; 32]),
                amount: 0x0203,
            }),
            &format!("0000{ones}{:032x}", 0x0203),
        );
        let message = UpwardMessage {
            origin: Address([1; 32]),
            sequence: 2,
            topic: Bytes::from_static(b"t"),
            payload: Bytes::from_static(b"p"),
            signature: [3; 64],
        };
        let tail = hex::encode(commonware_codec::Encode::encode(&message));
        check(
            Call::Mq(MqCall::SubmitUpward(message)),
            &format!("0100{tail}"),
        );
    }

    #[test]
    fn registry_calls_are_fixed() {
        let ones = "01".repeat(32);
        let registration = crate::WorkerRegistration {
            identity: Address([1; 32]),
            ecdh: [2; 32],
            operator: Address([3; 32]),
            cores: 4,
            benchmark: 5,
            freshness: 6,
            gatekeeper: true,
            evidence: crate::Evidence::Simulated {
                measurement: [7; 32],
                report_data: [8; 64],
            },
        };
        check(
            Call::Registry(RegistryCall::RegisterWorker(SignedRegistration {
                registration,
                signature: [9; 64],
            })),
            &format!(
                "0200{ones}{}{}00000004{}{}0100{}{}{}",
                "02".repeat(32),
                "03".repeat(32),
                "0000000000000005",
                "0000000000000006",
                "07".repeat(32),
                "08".repeat(64),
                "09".repeat(64)
            ),
        );
        check(
            Call::Registry(RegistryCall::AddGatekeeper(Address([1; 32]))),
            &format!("0202{ones}"),
        );
        check(
            Call::Registry(RegistryCall::AssignCluster {
                worker: Address([1; 32]),
                cluster: 5,
            }),
            &format!("0203{ones}00000005"),
        );
        check(Call::Registry(RegistryCall::RotateMasterKey), "0204");
        check(
            Call::Registry(RegistryCall::CreateCluster { cluster: 7 }),
            "020500000007",
        );
        let policy = AttestationPolicy::dev();
        let tail = hex::encode(commonware_codec::Encode::encode(&policy));
        check(
            Call::Registry(RegistryCall::SetAttestationPolicy(policy)),
            &format!("0201{tail}"),
        );
    }

    #[test]
    fn contracts_calls_are_fixed() {
        let ones = "01".repeat(32);
        check(
            Call::Contracts(ContractsCall::UploadCode {
                code: Bytes::from_static(b"\0asm"),
            }),
            "0300040061736d",
        );
        check(
            Call::Contracts(ContractsCall::Instantiate {
                code_hash: [1; 32],
                cluster: 2,
                salt: [3; 32],
                storage_quota: 4,
                input: Bytes::from_static(b"in"),
            }),
            &format!(
                "0301{ones}00000002{}000000000000000402696e",
                "03".repeat(32)
            ),
        );
        check(
            Call::Contracts(ContractsCall::Command {
                contract: [1; 32],
                gas_limit: 9,
                encapped: [2; 32],
                ciphertext: Bytes::from_static(b"c"),
            }),
            &format!("0302{ones}0000000000000009{}0163", "02".repeat(32)),
        );
        check(
            Call::Contracts(ContractsCall::SetStorageQuota {
                contract: [1; 32],
                quota: 7,
            }),
            &format!("0303{ones}0000000000000007"),
        );
    }
}
