//! The light client: accepts chain data only with proofs the enclave checks itself.
//!
//! A batch is a run of headers starting right after the current head, linked by parent hashes
//! and ending at a header with a finality certificate (one per batch: the hash chain binds the
//! rest). Each message comes with its Merkle proof against its block's outbox root and must be
//! the next of its stream. A witness (a certified header at or after the batch end, with state
//! proofs of where each stream's next message lives) shows that no message was left out.
//! Invariant: messages are handed on exactly once, in chain order, with no gap.

use commonware_codec::{Copying, DecodeExt};
use phala_api::pruntime::{StreamProof, SyncBatch, TrustAnchor};
use phala_api::{
    rpc::{HeaderJson, parse_digest},
    verify_certificate,
};
use phala_chain::{
    merkle::{self, MerkleProof},
    mq::MessageLocation,
};
use phala_types::{Address, Destination, Digest, DownwardMessage, Header};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use thiserror::Error;

/// Most headers in one batch.
pub const MAX_BATCH_HEADERS: usize = 20_000;

/// Where the light client stands: the last verified header and the next sequence per stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LightState {
    pub height: u64,
    pub hash: String,
    /// Timestamp (ms) of the last verified header.
    #[serde(default)]
    pub timestamp: u64,
    pub streams: Vec<(Destination, u64)>,
    /// Height up to which every stream's messages were handed on: `height`, or the block
    /// before the next message of a stream joined late that is still catching up. What
    /// queries may claim to be fresh to.
    #[serde(default)]
    pub complete_to: u64,
}

/// Why a batch was refused. Nothing of a refused batch is applied.
#[derive(Debug, Error)]
pub enum SyncError {
    #[error("empty batch")]
    Empty,
    #[error("batch of {0} headers is larger than {MAX_BATCH_HEADERS}")]
    TooLarge(usize),
    #[error("expected block {expected} next, got {got} (old or skipped block)")]
    NotNext { expected: u64, got: u64 },
    #[error("block {0} does not extend the verified chain (parent hash mismatch)")]
    BrokenChain(u64),
    #[error("malformed input: {0}")]
    Malformed(String),
    #[error("finality certificate refused for block {height}: {reason}")]
    Certificate { height: u64, reason: String },
    #[error("message at block {height} index {index} is outside the batch")]
    OutsideBatch { height: u64, index: u32 },
    #[error("message at block {height} index {index} does not match the block's outbox root")]
    BadMessageProof { height: u64, index: u32 },
    #[error("message for {0:?} is not for this pRuntime")]
    NotMine(Destination),
    #[error("messages out of chain order at block {height} index {index}")]
    OutOfOrder { height: u64, index: u32 },
    #[error("stream {destination:?}: expected message {expected}, got {got} (gap or repeat)")]
    Sequence {
        destination: Destination,
        expected: u64,
        got: u64,
    },
    #[error("witness is at block {witness}, before the batch end {end}")]
    EarlyWitness { witness: u64, end: u64 },
    #[error("no stream proof for {0:?}")]
    MissingStreamProof(Destination),
    #[error("stream proof for {0:?} does not verify")]
    BadStreamProof(Destination),
    #[error("backfilled message {sequence} of {destination:?} does not match the chain's record")]
    BadBackfill {
        destination: Destination,
        sequence: u64,
    },
    #[error("the proof of this pRuntime's upward sequence is missing or does not verify")]
    BadOriginProof,
    #[error("stream {destination:?}: message {sequence} was left out of the batch")]
    MissingMessage {
        destination: Destination,
        sequence: u64,
    },
}

/// A batch that passed every check: the messages to process, and the state to commit after.
pub struct Verified {
    pub messages: Vec<DownwardMessage>,
    pub next: LightState,
    pub headers: usize,
    /// The chain's proven next upward sequence for this pRuntime (when the witness had it):
    /// its signed messages below it are on chain.
    pub origin_next: Option<u64>,
}

/// Checks batches against a trust anchor.
pub struct LightClient {
    genesis: Digest,
    identity: Vec<u8>,
    namespace: Vec<u8>,
}

impl LightClient {
    pub fn new(anchor: &TrustAnchor) -> Result<Self, SyncError> {
        let malformed = |what: &str| SyncError::Malformed(format!("trust anchor {what}"));
        Ok(LightClient {
            genesis: parse_digest(&anchor.genesis_hash).map_err(|_| malformed("genesis hash"))?,
            identity: hex::decode(&anchor.identity).map_err(|_| malformed("identity"))?,
            namespace: hex::decode(&anchor.namespace).map_err(|_| malformed("namespace"))?,
        })
    }

    /// The genesis hash the anchor names.
    pub fn genesis(&self) -> &Digest {
        &self.genesis
    }

    /// The state before the first block: the genesis block is height 0, its hash the anchor's
    /// genesis header hash, which the first batch's block 1 must name as parent.
    pub fn initial(genesis_header_hash: String, streams: &[Destination]) -> LightState {
        LightState {
            height: 0,
            hash: genesis_header_hash,
            timestamp: 0,
            streams: streams.iter().map(|d| (*d, 0)).collect(),
            complete_to: 0,
        }
    }

    /// Verifies a batch on top of `state` for the pRuntime `me`, without changing anything.
    pub fn verify(
        &self,
        state: &LightState,
        me: &Address,
        batch: &SyncBatch,
    ) -> Result<Verified, SyncError> {
        let headers = self.verify_headers(state, &batch.headers)?;
        let last = headers.last().ok_or(SyncError::Empty)?;
        self.check_certificate(last, &batch.certificate)?;
        let witness = self.witness_header(last, batch)?;
        let mut streams: BTreeMap<Destination, u64> = state.streams.iter().copied().collect();
        let mut messages = verify_backfill(&witness, state.height, &mut streams, batch)?;
        let catching_up: BTreeSet<Destination> = messages.iter().map(|m| m.destination).collect();
        messages.extend(verify_messages(&headers, &mut streams, batch)?);
        let span = (state.height, last);
        let complete_to = check_streams(&witness, span, &catching_up, &streams, batch)?;
        let origin_next = origin_next(&witness, me, batch)?;
        Ok(Verified {
            origin_next,
            messages,
            next: LightState {
                height: last.height,
                hash: hex::encode(last.hash()),
                timestamp: last.timestamp,
                streams: streams.into_iter().collect(),
                complete_to,
            },
            headers: headers.len(),
        })
    }

    fn verify_headers(
        &self,
        state: &LightState,
        batch: &[HeaderJson],
    ) -> Result<Vec<Header>, SyncError> {
        if batch.is_empty() {
            return Err(SyncError::Empty);
        }
        if batch.len() > MAX_BATCH_HEADERS {
            return Err(SyncError::TooLarge(batch.len()));
        }
        let mut parent = parse_digest(&state.hash).map_err(|e| SyncError::Malformed(e.0))?;
        let mut headers = Vec::with_capacity(batch.len());
        for (offset, json) in batch.iter().enumerate() {
            let header = json.to_header().map_err(|e| SyncError::Malformed(e.0))?;
            let expected = state.height + 1 + offset as u64;
            if header.height != expected {
                return Err(SyncError::NotNext {
                    expected,
                    got: header.height,
                });
            }
            if header.parent != parent {
                return Err(SyncError::BrokenChain(header.height));
            }
            parent = header.hash();
            headers.push(header);
        }
        Ok(headers)
    }

    fn check_certificate(&self, header: &Header, certificate: &str) -> Result<(), SyncError> {
        let refused = |reason: String| SyncError::Certificate {
            height: header.height,
            reason,
        };
        let bytes = hex::decode(certificate).map_err(|e| refused(e.to_string()))?;
        verify_certificate(&self.namespace, &self.identity, &header.hash(), &bytes)
            .map_err(|e| refused(e.to_string()))
    }

    /// The witness's certified header, at or after the batch's end.
    fn witness_header(&self, end: &Header, batch: &SyncBatch) -> Result<Header, SyncError> {
        let witness = &batch.witness;
        let header = witness
            .header
            .to_header()
            .map_err(|e| SyncError::Malformed(e.0))?;
        if header.height < end.height {
            return Err(SyncError::EarlyWitness {
                witness: header.height,
                end: end.height,
            });
        }
        if header.hash() != end.hash() {
            self.check_certificate(&header, &witness.certificate)?;
        }
        Ok(header)
    }
}

/// Checks the witness: no stream's next message lies in the batch's blocks (after `before`,
/// up to `end`), except for a stream joined late that is `catching_up` (it got old messages
/// in this batch) or whose next message lies at or before `before`: its old messages did not
/// all fit this batch, and they come as backfill in the next ones, its newer messages after
/// them (nothing is skipped: every stream is taken in sequence). Returns the height up to
/// which every stream's messages are handed on: `end`, or the block before the next message
/// of a stream still catching up.
fn check_streams(
    header: &Header,
    (before, end): (u64, &Header),
    catching_up: &BTreeSet<Destination>,
    streams: &BTreeMap<Destination, u64>,
    batch: &SyncBatch,
) -> Result<u64, SyncError> {
    let mut complete_to = end.height;
    for (destination, next) in streams {
        let proof = find_proof(&batch.witness.streams, destination)?;
        let key = phala_chain::mq::keys::stream_message(destination, *next);
        let value = proof
            .proof
            .to_proof()
            .ok()
            .and_then(|p| p.verify(&header.state_root, &key).ok())
            .ok_or(SyncError::BadStreamProof(*destination))?;
        let Some(value) = value else {
            continue;
        };
        let location =
            MessageLocation::decode(&value).ok_or(SyncError::BadStreamProof(*destination))?;
        if location.height > end.height {
            continue;
        }
        if location.height > before && !catching_up.contains(destination) {
            return Err(SyncError::MissingMessage {
                destination: *destination,
                sequence: *next,
            });
        }
        complete_to = complete_to.min(location.height.saturating_sub(1));
    }
    Ok(complete_to)
}

/// The chain's proven next upward sequence of `me`. Always required: it is how the pRuntime
/// learns what the chain accepted from it, and the chain is its rollback counter.
fn origin_next(header: &Header, me: &Address, batch: &SyncBatch) -> Result<Option<u64>, SyncError> {
    let proof = batch
        .witness
        .origin
        .as_ref()
        .ok_or(SyncError::BadOriginProof)?;
    let value = proof
        .to_proof()
        .ok()
        .and_then(|p| {
            p.verify(
                &header.state_root,
                &phala_chain::mq::keys::origin_sequence(me),
            )
            .ok()
        })
        .ok_or(SyncError::BadOriginProof)?;
    match value {
        None => Ok(Some(0)),
        Some(bytes) => {
            let bytes: [u8; 8] = bytes.try_into().map_err(|_| SyncError::BadOriginProof)?;
            Ok(Some(u64::from_be_bytes(bytes)))
        }
    }
}

fn find_proof<'a>(
    proofs: &'a [StreamProof],
    destination: &Destination,
) -> Result<&'a StreamProof, SyncError> {
    proofs
        .iter()
        .find(|p| p.destination == *destination)
        .ok_or(SyncError::MissingStreamProof(*destination))
}

/// Old messages of streams joined late: each proven by the witness header's state (where it
/// lives and its leaf), strictly before the batch, in chain order, next in its stream.
fn verify_backfill(
    witness: &Header,
    before: u64,
    streams: &mut BTreeMap<Destination, u64>,
    batch: &SyncBatch,
) -> Result<Vec<DownwardMessage>, SyncError> {
    if batch.backfill.len() != batch.witness.backfill.len() {
        return Err(SyncError::Malformed(
            "backfill messages and proofs differ in number".into(),
        ));
    }
    let mut previous: Option<(u64, u32)> = None;
    let mut out = Vec::with_capacity(batch.backfill.len());
    for (text, proof) in batch.backfill.iter().zip(&batch.witness.backfill) {
        let bytes = hex::decode(text).map_err(|e| SyncError::Malformed(e.to_string()))?;
        let message = DownwardMessage::decode(Copying(&bytes))
            .map_err(|e| SyncError::Malformed(format!("backfill message: {e}")))?;
        let destination = message.destination;
        let refused = || SyncError::BadBackfill {
            destination,
            sequence: message.sequence,
        };
        if (proof.destination, proof.sequence) != (destination, message.sequence) {
            return Err(refused());
        }
        let key = phala_chain::mq::keys::stream_message(&destination, message.sequence);
        let location = proof
            .proof
            .to_proof()
            .ok()
            .and_then(|p| p.verify(&witness.state_root, &key).ok())
            .flatten()
            .and_then(|value| MessageLocation::decode(&value))
            .ok_or_else(refused)?;
        if location.leaf != merkle::message_leaf(&message) || location.height > before {
            return Err(refused());
        }
        let position = (location.height, location.index);
        if previous.is_some_and(|p| p >= position) {
            return Err(SyncError::OutOfOrder {
                height: location.height,
                index: location.index,
            });
        }
        previous = Some(position);
        let expected = streams
            .get_mut(&destination)
            .ok_or(SyncError::NotMine(destination))?;
        if message.sequence != *expected {
            return Err(SyncError::Sequence {
                destination,
                expected: *expected,
                got: message.sequence,
            });
        }
        *expected += 1;
        out.push(message);
    }
    Ok(out)
}

fn verify_messages(
    headers: &[Header],
    streams: &mut BTreeMap<Destination, u64>,
    batch: &SyncBatch,
) -> Result<Vec<DownwardMessage>, SyncError> {
    let first = headers[0].height;
    let mut previous: Option<(u64, u32)> = None;
    let mut out = Vec::with_capacity(batch.messages.len());
    for proven in &batch.messages {
        let (height, index) = (proven.height, proven.index);
        let header = height
            .checked_sub(first)
            .and_then(|offset| headers.get(offset as usize))
            .ok_or(SyncError::OutsideBatch { height, index })?;
        if previous.is_some_and(|p| p >= (height, index)) {
            return Err(SyncError::OutOfOrder { height, index });
        }
        previous = Some((height, index));
        let bytes =
            hex::decode(&proven.message).map_err(|e| SyncError::Malformed(e.to_string()))?;
        let message = DownwardMessage::decode(Copying(&bytes))
            .map_err(|e| SyncError::Malformed(format!("message: {e}")))?;
        let proof = parse_merkle_proof(proven.leaf_count, &proven.siblings)?;
        if !merkle::verify(
            &header.outbox_root,
            &merkle::message_leaf(&message),
            index,
            &proof,
        ) {
            return Err(SyncError::BadMessageProof { height, index });
        }
        let expected = streams
            .get_mut(&message.destination)
            .ok_or(SyncError::NotMine(message.destination))?;
        if message.sequence != *expected {
            return Err(SyncError::Sequence {
                destination: message.destination,
                expected: *expected,
                got: message.sequence,
            });
        }
        *expected += 1;
        out.push(message);
    }
    Ok(out)
}

fn parse_merkle_proof(leaf_count: u32, siblings: &[String]) -> Result<MerkleProof, SyncError> {
    let siblings = siblings
        .iter()
        .map(|s| parse_digest(s).map_err(|e| SyncError::Malformed(e.0)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(MerkleProof {
        leaf_count,
        siblings,
    })
}
