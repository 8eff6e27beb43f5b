//! Wire types shared by every component of the network: addresses, PHA amounts, transactions,
//! blocks and queue messages, each with one canonical binary encoding (commonware-codec) that
//! hashes and signatures are computed over.

mod address;
pub mod amount;
mod block;
mod call;
pub mod contracts;
pub mod merkle;
mod mq;
pub mod registry;
mod tx;

pub use address::{ADDRESS_HRP, Address, AddressError};
pub use amount::{AmountError, Balance, DECIMALS, TOTAL_SUPPLY, UNIT, format_pha, parse_pha};
pub use block::{Block, Header};
pub use call::{BalancesCall, Call, ContractsCall, MqCall, RegistryCall};
pub use commonware_cryptography::sha256::Digest;
pub use contracts::{
    ContractCommand, ContractId, ContractInstantiated, ContractPublicKey, ContractQuota,
    ContractRecord, ContractReport, QueryReceipt, ReportRecord,
};
pub use mq::{Destination, DownwardMessage, UpwardMessage};
pub use registry::{
    AttestationPolicy, ClusterAssignment, Evidence, GatekeeperJoined, KeyDelivery, MasterPublicKey,
    SignedRegistration, TeeKind, WorkerRecord, WorkerRegistration,
};
pub use tx::{SignedTransaction, Transaction};

/// Size limits enforced by every decoder, so that no peer or user can make us allocate freely.
pub mod limits {
    /// Largest encoded transaction accepted anywhere.
    /// Room for the largest contract code upload (192 KiB) with its framing.
    pub const MAX_TX_SIZE: usize = 200 * 1024;
    /// Most transactions in one block.
    pub const MAX_BLOCK_TXS: usize = 20_000;
    /// Largest encoded block (also the p2p message bound).
    pub const MAX_BLOCK_SIZE: usize = 8 * 1024 * 1024;
    /// Longest downward message topic (room for the relay prefix of an upward one).
    pub const MAX_TOPIC: usize = 128;
    /// Longest upward message topic.
    pub const MAX_UPWARD_TOPIC: usize = 64;
    /// Largest message payload.
    pub const MAX_PAYLOAD: usize = 32 * 1024;
    /// Most downward messages one block may send. A relayer fetches a block's messages in one
    /// answer, so a block must never hold more than an answer may (`stream_messages` stops
    /// at a block boundary once it holds this many); no call sends more than a few.
    pub const MAX_BLOCK_MESSAGES: usize = 4_096;
}

/// Accounts that belong to the chain itself. No private key exists for any of them: their bytes
/// are not an ed25519 point (a label, then a last byte picked to leave the curve; checked by a
/// test in `phala-crypto`), so no signature can ever verify under them and only the chain's
/// own rules move their balances.
pub mod system {
    use crate::Address;

    /// Receives the treasury's share of fees and the supply not allocated at genesis; spent
    /// only by the chain's rules (governance, later).
    pub const TREASURY: Address = Address(*b"phala/system/treasury/v1\0\0\0\0\0\0\0\x01");
    /// Holds a command's prepaid gas until the call is reported.
    pub const GAS_ESCROW: Address = Address(*b"phala/contracts/gas-escrow/v1\0\0\x02");
    /// Holds the storage deposits deployers lock for their contracts' state quotas.
    pub const STORAGE_DEPOSITS: Address = Address(*b"phala/contracts/storage-deposit\x05");

    /// Every system account, by name.
    pub const ALL: [(&str, Address); 3] = [
        ("treasury", TREASURY),
        ("gas escrow", GAS_ESCROW),
        ("storage deposits", STORAGE_DEPOSITS),
    ];
}

/// Domain-separation labels: every signature names what it signs, so that no signature can be
/// replayed as another kind of statement.
pub mod namespace {
    /// Account signatures over transactions.
    pub const TRANSACTION: &[u8] = b"phala/tx/v1";
    /// Origin signatures over upward messages.
    pub const UPWARD: &[u8] = b"phala/mq-upward/v1";
    /// Consensus votes and certificates (suffixed by the chain id by the node).
    pub const CONSENSUS: &[u8] = b"phala/consensus/v1";
    /// The binding of a worker's keys into its TEE report data.
    pub const ATTESTATION: &[u8] = b"phala/attestation/v1";
    /// Identity-key signatures over worker registrations.
    pub const REGISTRATION: &[u8] = b"phala/registration/v1";
}
