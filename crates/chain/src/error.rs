//! Why a transaction cannot be applied. Each variant is a reason a user can act on.

use phala_types::{Address, Balance, format_pha};
use thiserror::Error;

/// Why a transaction cannot be applied. Its form, expiry, fee, nonce or funds being wrong makes
/// it invalid: it never enters a block, and a block containing one is invalid. Any other error
/// is its call failing once its fee is paid: it is included as failed (see `Runtime::apply`).
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum TxError {
    #[error("bad signature")]
    BadSignature,
    #[error("transaction is {size} bytes, the limit is {limit}")]
    Oversized { size: usize, limit: usize },
    #[error("transaction expired at height {expiry}, the chain is at {height}")]
    Expired { expiry: u64, height: u64 },
    #[error("wrong nonce: expected {expected}, got {got}")]
    BadNonce { expected: u64, got: u64 },
    #[error("fee {} is below the minimum {} for this transaction", format_pha(*offered), format_pha(*minimum))]
    FeeTooLow { offered: Balance, minimum: Balance },
    #[error("insufficient funds: {} needed, {} available", format_pha(*needed), format_pha(*available))]
    InsufficientFunds { needed: Balance, available: Balance },
    #[error("transfer of zero")]
    ZeroTransfer,
    #[error("upward message origin {0} is not registered")]
    UnknownOrigin(Address),
    #[error("upward message from {origin} has sequence {got}, expected {expected}")]
    BadSequence {
        origin: Address,
        expected: u64,
        got: u64,
    },
    #[error("upward message signature is invalid")]
    BadOriginSignature,
    #[error("{0} is not the registry admin")]
    NotAdmin(Address),
    #[error("the registration names operator {operator}, but {signer} signed the transaction")]
    NotOperator { operator: Address, signer: Address },
    #[error("the registration is not signed by the identity key it registers")]
    BadRegistrationSignature,
    #[error("attestation refused: {0}")]
    Attestation(String),
    #[error(
        "attestation made at height {freshness} is not fresh at height {height} (window {window} blocks)"
    )]
    StaleAttestation {
        freshness: u64,
        height: u64,
        window: u64,
    },
    #[error(
        "worker {worker}'s attestation from height {attested_at} expired ({window} blocks); it must attest again"
    )]
    AttestationExpired {
        worker: Address,
        attested_at: u64,
        window: u64,
    },
    #[error("worker {0} is not registered")]
    UnknownWorker(Address),
    #[error("worker {0} is already a gatekeeper")]
    AlreadyGatekeeper(Address),
    #[error("worker {0} did not register as a gatekeeper")]
    NotGatekeeperCandidate(Address),
    #[error("{0} is not a gatekeeper")]
    NotGatekeeper(Address),
    #[error("there is no master key yet")]
    NoMasterKey,
    #[error("a master key rotation is already under way")]
    RotationPending,
    #[error("malformed payload for topic {0}")]
    BadPayload(String),
    #[error("chain state is corrupt: {0}")]
    Corrupt(&'static str),
    #[error("cluster {0} already exists")]
    ClusterExists(u32),
    #[error("cluster {0} does not exist")]
    UnknownCluster(u32),
    #[error("the code is not a WebAssembly module")]
    NotWasm,
    #[error("no code with hash {0} was uploaded")]
    UnknownCode(String),
    #[error("contract {0} already exists (use another salt)")]
    ContractExists(String),
    #[error("contract {0} does not exist")]
    UnknownContract(String),
    #[error("contract {0} has no public key yet; wait for the gatekeepers to publish it")]
    ContractNotReady(String),
    #[error("gas limit {got} is outside 1..={max}")]
    BadGasLimit { got: u64, max: u64 },
    #[error("worker {worker} is not in cluster {cluster}")]
    NotInCluster { worker: Address, cluster: u32 },
    #[error("contract {contract} has no call {index} to report")]
    UnknownCall { contract: String, index: u64 },
    #[error("the block's transactions weigh more than {limit}")]
    BlockTooHeavy { limit: u64 },
    #[error("the block's transactions send more than {limit} downward messages")]
    TooManyMessages { limit: usize },
    #[error("a storage quota of {got} bytes is above the chain's limit of {max}")]
    QuotaTooLarge { got: u64, max: u64 },
    #[error("only contract {contract}'s deployer {deployer} may change its storage quota")]
    NotDeployer { contract: String, deployer: Address },
    #[error(
        "contract {contract} keeps {used} bytes of state (reported for its last call), more than the asked quota"
    )]
    QuotaBelowUsage { contract: String, used: u64 },
    #[error(
        "contract {contract}'s call {call} is not reported by two workers in agreement yet; lowering its quota waits until they say how much state it keeps"
    )]
    UsageUnknown { contract: String, call: u64 },
}

impl TxError {
    /// A stable machine-readable code for RPC clients.
    pub fn code(&self) -> &'static str {
        match self {
            TxError::BadSignature => "bad_signature",
            TxError::Oversized { .. } => "oversized",
            TxError::Expired { .. } => "expired",
            TxError::BadNonce { .. } => "bad_nonce",
            TxError::FeeTooLow { .. } => "fee_too_low",
            TxError::InsufficientFunds { .. } => "insufficient_funds",
            TxError::ZeroTransfer => "zero_transfer",
            TxError::UnknownOrigin(_) => "unknown_origin",
            TxError::BadSequence { .. } => "bad_sequence",
            TxError::BadOriginSignature => "bad_origin_signature",
            TxError::NotAdmin(_) => "not_admin",
            TxError::NotOperator { .. } => "not_operator",
            TxError::BadRegistrationSignature => "bad_registration_signature",
            TxError::Attestation(_) => "attestation_refused",
            TxError::StaleAttestation { .. } => "stale_attestation",
            TxError::AttestationExpired { .. } => "attestation_expired",
            TxError::UnknownWorker(_) => "unknown_worker",
            TxError::AlreadyGatekeeper(_) => "already_gatekeeper",
            TxError::NotGatekeeperCandidate(_) => "not_gatekeeper_candidate",
            TxError::NotGatekeeper(_) => "not_gatekeeper",
            TxError::NoMasterKey => "no_master_key",
            TxError::RotationPending => "rotation_pending",
            TxError::BadPayload(_) => "bad_payload",
            TxError::Corrupt(_) => "corrupt_state",
            TxError::ClusterExists(_) => "cluster_exists",
            TxError::UnknownCluster(_) => "unknown_cluster",
            TxError::NotWasm => "not_wasm",
            TxError::UnknownCode(_) => "unknown_code",
            TxError::ContractExists(_) => "contract_exists",
            TxError::UnknownContract(_) => "unknown_contract",
            TxError::ContractNotReady(_) => "contract_not_ready",
            TxError::BadGasLimit { .. } => "bad_gas_limit",
            TxError::NotInCluster { .. } => "not_in_cluster",
            TxError::UnknownCall { .. } => "unknown_call",
            TxError::BlockTooHeavy { .. } => "block_too_heavy",
            TxError::TooManyMessages { .. } => "too_many_messages",
            TxError::QuotaTooLarge { .. } => "quota_too_large",
            TxError::NotDeployer { .. } => "not_deployer",
            TxError::QuotaBelowUsage { .. } => "quota_below_usage",
            TxError::UsageUnknown { .. } => "usage_unknown",
        }
    }
}
