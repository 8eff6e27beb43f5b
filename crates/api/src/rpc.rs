//! The JSON shapes of the node's RPC API (documented in `docs/rpc.md`). Binary values travel
//! as lowercase hex; amounts as decimal strings because JSON numbers lose precision past 2^53.

use phala_chain::{balances::FeeSchedule, commitment::StateProof};
use phala_types::{Address, Destination, Digest};
use serde::{Deserialize, Serialize};

/// What a client needs to know to talk to a chain.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChainInfo {
    pub chain_id: String,
    /// Hash of the chain spec; transactions sign over it so they cannot be replayed elsewhere.
    pub genesis_hash: String,
    /// The 96-byte BLS group public key that verifies every finality certificate.
    pub identity: String,
    /// The consensus namespace certificates are signed under.
    pub namespace: String,
    pub dev: bool,
    pub fees: FeeSchedule,
    pub validators: Vec<Address>,
}

/// A block header as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderJson {
    pub hash: String,
    pub height: u64,
    pub parent: String,
    pub timestamp: u64,
    pub tx_root: String,
    pub state_root: String,
    pub outbox_root: String,
    pub epoch: u64,
    pub proposer: Address,
}

impl HeaderJson {
    /// Rebuilds the header from its fields; its hash is then computed, never taken on trust.
    pub fn to_header(&self) -> Result<phala_types::Header, MalformedProof> {
        Ok(phala_types::Header {
            height: self.height,
            parent: parse_digest(&self.parent)?,
            timestamp: self.timestamp,
            tx_root: parse_digest(&self.tx_root)?,
            state_root: parse_digest(&self.state_root)?,
            outbox_root: parse_digest(&self.outbox_root)?,
            epoch: self.epoch,
            proposer: self.proposer,
        })
    }

    pub fn from_header(header: &phala_types::Header) -> Self {
        HeaderJson {
            hash: hex::encode(header.hash()),
            height: header.height,
            parent: hex::encode(header.parent),
            timestamp: header.timestamp,
            tx_root: hex::encode(header.tx_root),
            state_root: hex::encode(header.state_root),
            outbox_root: hex::encode(header.outbox_root),
            epoch: header.epoch,
            proposer: header.proposer,
        }
    }
}

/// A finalized block with its transactions and, when stored, its finality certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockJson {
    pub header: HeaderJson,
    /// Hashes of the transactions, in order.
    pub transactions: Vec<String>,
    /// The hex-encoded finalization certificate (83 bytes at small views) of this block, if it
    /// was finalized directly rather than through a descendant.
    pub finalization: Option<String>,
    /// The encoded block, hex.
    pub raw: String,
}

/// The latest finalized block and the certificate that proves it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinalizedHead {
    pub header: HeaderJson,
    /// Height of the certified block (the head, or a descendant of it if the head was
    /// finalized implicitly) and its hex-encoded finalization.
    pub certified_height: u64,
    pub finalization: Option<String>,
}

/// Largest answer a node sends and a client reads (a full block, hex-encoded, or a block's
/// messages with their proofs, with room to spare); methods whose answers could be longer
/// stop early and say where to go on.
pub const MAX_RESPONSE_BYTES: u32 = 4 * phala_types::limits::MAX_BLOCK_SIZE as u32;

/// Where a transaction stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum TxStatus {
    /// In the mempool, waiting for a block.
    Pending,
    /// In a finalized block; never reverts. `failed` says why its call failed, if it did:
    /// the fee was paid and the nonce used, but the call's effects were rolled back.
    Finalized {
        height: u64,
        index: u32,
        block: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failed: Option<TxFailure>,
        /// What the transaction caused, if its call applied: one object per event, named by
        /// `module` and `event` (see docs/rpc.md).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        events: Vec<serde_json::Value>,
    },
    /// Dropped before inclusion, with the reason.
    Rejected { code: String, reason: String },
    /// Never seen (or forgotten after a restart while still pending).
    Unknown,
}

/// Why an included transaction's call failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxFailure {
    /// A stable machine-readable code (`TxError::code`).
    pub code: String,
    pub reason: String,
}

/// An account as stored, with the proof of it against the state root of `height`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountJson {
    pub address: Address,
    pub nonce: u64,
    #[serde(with = "phala_types::amount::u128_string")]
    pub free: u128,
    pub height: u64,
    pub state_root: String,
    pub proof: ProofJson,
}

/// A state value (absent: `null`) with its proof against the state root of `height`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateValueJson {
    pub key: String,
    pub value: Option<String>,
    pub height: u64,
    pub state_root: String,
    pub proof: ProofJson,
}

/// Several state values, each with its proof against the one state root of `height`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateValuesJson {
    pub height: u64,
    pub state_root: String,
    /// One per key asked, in the order asked.
    pub values: Vec<ProvenValueJson>,
}

/// One value of [`StateValuesJson`] (absent: `null`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProvenValueJson {
    pub key: String,
    pub value: Option<String>,
    pub proof: ProofJson,
}

/// A [`StateProof`] as JSON: its canonical bytes in hex (see docs/rpc.md, "State proofs").
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProofJson {
    pub proof: String,
}

/// Why JSON does not hold a well-formed proof.
#[derive(Debug, thiserror::Error)]
#[error("malformed proof: {0}")]
pub struct MalformedProof(pub String);

fn digest_from_hex(text: &str) -> Result<Digest, MalformedProof> {
    let bytes = hex::decode(text).map_err(|e| MalformedProof(e.to_string()))?;
    let array: [u8; 32] = bytes
        .try_into()
        .map_err(|_| MalformedProof("digest is not 32 bytes".into()))?;
    Ok(Digest(array))
}

/// Parses a 32-byte hex digest, as found in headers.
pub fn parse_digest(text: &str) -> Result<Digest, MalformedProof> {
    digest_from_hex(text)
}

impl ProofJson {
    pub fn from_proof(proof: &StateProof) -> Self {
        ProofJson {
            proof: hex::encode(proof.to_bytes()),
        }
    }

    pub fn to_proof(&self) -> Result<StateProof, MalformedProof> {
        let bytes = hex::decode(&self.proof).map_err(|e| MalformedProof(e.to_string()))?;
        StateProof::decode(&bytes).map_err(|e| MalformedProof(e.to_string()))
    }
}

/// Node liveness for operators and load balancers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    pub finalized_height: u64,
    /// Milliseconds since the last finalized block's timestamp.
    pub finalized_age_ms: u64,
    pub mempool: usize,
    pub validator: Option<Address>,
    /// True while the node replays stored blocks after a restart.
    pub replaying: bool,
}

/// A downward message of a block with its proof against the block's outbox root.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxMessageJson {
    pub height: u64,
    pub index: u32,
    /// The encoded `DownwardMessage`, hex.
    pub message: String,
    pub leaf_count: u32,
    pub siblings: Vec<String>,
}

/// Pushed to subscribers for every finalized block, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinalizedEvent {
    pub header: HeaderJson,
    pub transactions: u32,
    pub messages: u32,
}

/// Proof that a run of blocks left no queue message out: a certified header, and for each
/// stream, a state proof of where its next message lives (or that it does not exist yet).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Witness {
    pub header: HeaderJson,
    /// Finality certificate of `header` (hex).
    pub certificate: String,
    pub streams: Vec<StreamProof>,
    /// When asked for an origin: a state proof of its next upward sequence (`mq/origin/<id>`),
    /// which tells a pRuntime which of its signed messages are on chain.
    #[serde(default)]
    pub origin: Option<ProofJson>,
    /// When asked for old stream messages (a pRuntime joining a stream late): state proofs of
    /// where each lives and its Merkle leaf, against `header`.
    #[serde(default)]
    pub backfill: Vec<StreamProof>,
}

/// A state proof of the key `mq/stream/<destination><sequence>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamProof {
    pub destination: Destination,
    pub sequence: u64,
    pub proof: ProofJson,
}

/// Consecutive finalized headers ending at a certified one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeadersJson {
    pub headers: Vec<HeaderJson>,
    /// Finality certificate of the last header (hex).
    pub certificate: String,
}

/// `contract`: what the chain knows of a contract.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContractInfo {
    pub record: phala_types::ContractRecord,
    /// The report of the newest call any worker reported.
    pub latest_report: Option<phala_types::ReportRecord>,
    /// How many events the contract emitted.
    pub event_count: u64,
    /// The newest events (at most 32), oldest first, as UTF-8 where they are text, else hex.
    pub recent_events: Vec<String>,
}
