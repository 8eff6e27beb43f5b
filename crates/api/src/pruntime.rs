//! The pRuntime's HTTP API types and its start-up anchor, shared with pherry (which only
//! relays them) and the CLI.

use crate::rpc::{HeaderJson, OutboxMessageJson};
pub use crate::rpc::{StreamProof, Witness};
use phala_types::{Address, Destination, TeeKind};
use serde::{Deserialize, Serialize};

/// What the enclave trusts about the chain: fixed at first start and sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustAnchor {
    pub chain_id: String,
    /// Hash of the chain spec; the genesis block's parent and every signature's chain binding.
    pub genesis_hash: String,
    /// The BLS group public key (hex) that certifies finality.
    pub identity: String,
    /// The namespace certificates are signed under (hex).
    pub namespace: String,
}

/// The file a pRuntime is started with: the trust anchor and the genesis block's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorFile {
    #[serde(flatten)]
    pub anchor: TrustAnchor,
    pub genesis_block: String,
}

/// Largest `POST /sync` body a pRuntime takes; pherry builds every batch to fit (one block's
/// messages and codes always do).
pub const MAX_SYNC_BODY: usize = 64 * 1024 * 1024;

/// Chain data for the light client: `POST /sync`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncBatch {
    /// Consecutive headers, the first right after the pRuntime's head.
    pub headers: Vec<HeaderJson>,
    /// Finality certificate (hex) of the last header.
    pub certificate: String,
    /// Every message of this pRuntime's streams in these blocks, in chain order, with proofs.
    pub messages: Vec<OutboxMessageJson>,
    pub witness: Witness,
    /// Messages of streams this pRuntime joined late, older than `headers` (hex encodings),
    /// proven by `witness.backfill` in the same order.
    #[serde(default)]
    pub backfill: Vec<String>,
    /// Code of the contracts these messages instantiate (hex); the pRuntime checks each hash.
    #[serde(default)]
    pub codes: Vec<String>,
}

/// What `POST /sync` reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncOutcome {
    pub height: u64,
    pub messages: usize,
    /// Sequence the next egress message will get.
    pub egress_next: u64,
}

/// Whether the pRuntime serves contracts or holds the master key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Worker,
    Gatekeeper,
}

/// `GET /info`: who this pRuntime is and how far it has synced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Info {
    pub identity: Address,
    /// x25519 public key secrets are sealed to (hex).
    pub ecdh: String,
    pub mode: Mode,
    pub tee: TeeKind,
    /// True for the simulated TEE: nothing this pRuntime holds is protected.
    pub insecure: bool,
    pub chain_id: String,
    pub genesis_hash: String,
    pub height: u64,
    pub hash: String,
    pub streams: Vec<(Destination, u64)>,
    pub egress_next: u64,
    /// Master key generations held (gatekeepers).
    pub master_generations: Vec<u32>,
    /// `(cluster, generation)` keys held.
    pub cluster_keys: Vec<(u32, u32)>,
    pub benchmark: u64,
    pub cores: u32,
}

/// `POST /registration`: asks for a signed registration with fresh evidence.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegistrationRequest {
    pub operator: Address,
    /// A recent finalized height, bound into the report data.
    pub freshness: u64,
}

/// The signed registration, encoded (hex), ready for `RegistryCall::RegisterWorker`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegistrationResponse {
    pub registration: String,
}

/// `GET /egress?from=N`: signed upward messages from sequence N on (hex encodings).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Egress {
    pub messages: Vec<String>,
}

/// An error answer: the reason, for logs and operators.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}
