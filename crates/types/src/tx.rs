//! Transactions: a call signed by an account, with a nonce against replay, a fee, and an expiry
//! height after which it can never be included.

use crate::contracts::{CodeHash, ContractId, MAX_CODE, MAX_INPUT, MAX_SEALED};
use crate::{Address, AttestationPolicy, Balance, SignedRegistration, UpwardMessage};
use bytes::BufMut;
use bytes::Bytes;
use commonware_codec::Buf;
use commonware_codec::RangeCfg;
use commonware_codec::{Encode, EncodeSize, Error as CodecError, Read, ReadExt, Write};
use commonware_cryptography::{Hasher, Sha256, sha256::Digest};

/// What a transaction asks the chain to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// Moves PHA from the signer to another account.
    Transfer { to: Address, amount: Balance },
    /// Relays a message signed by a registered origin (pherry pays the fee, the origin signs).
    SubmitUpward(UpwardMessage),
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
            Call::Transfer { amount, .. } => *amount,
            _ => 0,
        }
    }
}

impl Write for Call {
    fn write(&self, buf: &mut impl BufMut) {
        match self {
            Call::Transfer { to, amount } => {
                0u8.write(buf);
                to.write(buf);
                amount.write(buf);
            }
            Call::SubmitUpward(message) => {
                1u8.write(buf);
                message.write(buf);
            }
            Call::RegisterWorker(registration) => {
                2u8.write(buf);
                registration.write(buf);
            }
            Call::SetAttestationPolicy(policy) => {
                3u8.write(buf);
                policy.write(buf);
            }
            Call::AddGatekeeper(worker) => {
                4u8.write(buf);
                worker.write(buf);
            }
            Call::AssignCluster { worker, cluster } => {
                5u8.write(buf);
                worker.write(buf);
                cluster.write(buf);
            }
            Call::RotateMasterKey => 6u8.write(buf),
            Call::CreateCluster { cluster } => {
                7u8.write(buf);
                cluster.write(buf);
            }
            Call::UploadCode { code } => {
                8u8.write(buf);
                code.write(buf);
            }
            Call::Instantiate {
                code_hash,
                cluster,
                salt,
                storage_quota,
                input,
            } => {
                9u8.write(buf);
                code_hash.write(buf);
                cluster.write(buf);
                salt.write(buf);
                storage_quota.write(buf);
                input.write(buf);
            }
            Call::Command {
                contract,
                gas_limit,
                encapped,
                ciphertext,
            } => {
                10u8.write(buf);
                contract.write(buf);
                gas_limit.write(buf);
                encapped.write(buf);
                ciphertext.write(buf);
            }
            Call::SetStorageQuota { contract, quota } => {
                11u8.write(buf);
                contract.write(buf);
                quota.write(buf);
            }
        }
    }
}

impl EncodeSize for Call {
    fn encode_size(&self) -> usize {
        1 + match self {
            Call::Transfer { .. } => 32 + 16,
            Call::SubmitUpward(message) => message.encode_size(),
            Call::RegisterWorker(registration) => registration.encode_size(),
            Call::SetAttestationPolicy(policy) => policy.encode_size(),
            Call::AddGatekeeper(_) => 32,
            Call::AssignCluster { .. } => 32 + 4,
            Call::RotateMasterKey => 0,
            Call::CreateCluster { .. } => 4,
            Call::UploadCode { code } => code.encode_size(),
            Call::Instantiate { input, .. } => 32 + 4 + 32 + 8 + input.encode_size(),
            Call::Command { ciphertext, .. } => 32 + 8 + 32 + ciphertext.encode_size(),
            Call::SetStorageQuota { .. } => 32 + 8,
        }
    }
}

impl Read for Call {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        match u8::read(buf)? {
            0 => Ok(Call::Transfer {
                to: Address::read(buf)?,
                amount: u128::read(buf)?,
            }),
            1 => Ok(Call::SubmitUpward(UpwardMessage::read(buf)?)),
            2 => Ok(Call::RegisterWorker(SignedRegistration::read(buf)?)),
            3 => Ok(Call::SetAttestationPolicy(AttestationPolicy::read(buf)?)),
            4 => Ok(Call::AddGatekeeper(Address::read(buf)?)),
            5 => Ok(Call::AssignCluster {
                worker: Address::read(buf)?,
                cluster: u32::read(buf)?,
            }),
            6 => Ok(Call::RotateMasterKey),
            7 => Ok(Call::CreateCluster {
                cluster: u32::read(buf)?,
            }),
            8 => Ok(Call::UploadCode {
                code: Bytes::read_cfg(buf, &RangeCfg::new(..=MAX_CODE))?,
            }),
            9 => Ok(Call::Instantiate {
                code_hash: <[u8; 32]>::read(buf)?,
                cluster: u32::read(buf)?,
                salt: <[u8; 32]>::read(buf)?,
                storage_quota: u64::read(buf)?,
                input: Bytes::read_cfg(buf, &RangeCfg::new(..=MAX_INPUT))?,
            }),
            10 => Ok(Call::Command {
                contract: <[u8; 32]>::read(buf)?,
                gas_limit: u64::read(buf)?,
                encapped: <[u8; 32]>::read(buf)?,
                ciphertext: Bytes::read_cfg(buf, &RangeCfg::new(..=MAX_SEALED))?,
            }),
            11 => Ok(Call::SetStorageQuota {
                contract: <[u8; 32]>::read(buf)?,
                quota: u64::read(buf)?,
            }),
            tag => Err(CodecError::InvalidEnum(tag)),
        }
    }
}

/// The signed part of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    pub signer: Address,
    /// Must equal the signer's account nonce; each applied transaction increments it.
    pub nonce: u64,
    /// Paid in full by the signer, then split between burn, block author and treasury.
    pub fee: Balance,
    /// The last height at which this transaction may be included.
    pub expiry: u64,
    pub call: Call,
}

impl Write for Transaction {
    fn write(&self, buf: &mut impl BufMut) {
        self.signer.write(buf);
        self.nonce.write(buf);
        self.fee.write(buf);
        self.expiry.write(buf);
        self.call.write(buf);
    }
}

impl EncodeSize for Transaction {
    fn encode_size(&self) -> usize {
        32 + 8 + 16 + 8 + self.call.encode_size()
    }
}

impl Read for Transaction {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        Ok(Transaction {
            signer: Address::read(buf)?,
            nonce: u64::read(buf)?,
            fee: u128::read(buf)?,
            expiry: u64::read(buf)?,
            call: Call::read(buf)?,
        })
    }
}

/// A transaction with the signer's ed25519 signature over its encoding, under the
/// [`crate::namespace::TRANSACTION`] domain and the chain's genesis hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedTransaction {
    pub tx: Transaction,
    pub signature: [u8; 64],
}

impl SignedTransaction {
    /// The transaction's identity: SHA-256 of its full encoding, signature included.
    pub fn hash(&self) -> Digest {
        Sha256::hash(&[&self.encode()])
    }
}

impl Write for SignedTransaction {
    fn write(&self, buf: &mut impl BufMut) {
        self.tx.write(buf);
        self.signature.write(buf);
    }
}

impl EncodeSize for SignedTransaction {
    fn encode_size(&self) -> usize {
        self.tx.encode_size() + 64
    }
}

impl Read for SignedTransaction {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        Ok(SignedTransaction {
            tx: Transaction::read(buf)?,
            signature: <[u8; 64]>::read(buf)?,
        })
    }
}
