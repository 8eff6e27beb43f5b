//! Sync batches: what pherry gathers from a node for a pRuntime's light client. Nothing here
//! is trusted: the pRuntime checks every header, certificate, message and proof itself.

use anyhow::Context;
use commonware_codec::{Copying, DecodeExt};
use phala_api::{
    params::MAX_BACKFILL,
    pruntime::{Info, MAX_SYNC_BODY, SyncBatch},
    rpc::StreamProof,
};
use phala_chain::mq::{MessageLocation, keys::stream_message};
use phala_chain::weights::MAX_BLOCK_INSTANTIATIONS;
use phala_client::Client;
use phala_types::{
    ContractInstantiated, Destination, Digest, DownwardMessage,
    contracts::{MAX_CODE, topics},
    limits,
    registry::decode_payload,
};
use std::collections::BTreeSet;

/// Builds the next sync batch for a pRuntime from a node: up to `limit` headers after the
/// pRuntime's head (ending at a certified one), every message of its streams in them with
/// proofs, the older messages of streams it joined late (backfill), the code of contracts
/// instantiated in its cluster, and a witness that nothing was left out. A node answers
/// `stream_messages` in bounded pieces (a count and a byte budget): when the blocks asked for
/// hold more, or any answer fails, the batch is built again over half as many blocks, down
/// to one. A stream joined late catches up over as many batches as its old messages need,
/// at most `MAX_BACKFILL` a batch. A batch larger than a pRuntime takes (`MAX_SYNC_BODY`)
/// is built again with half its old messages, or over half as many blocks; one block without
/// old messages always fits (see [`ONE_BLOCK_BOUND`]).
pub async fn build_batch(node: &Client, info: &Info, limit: u64) -> anyhow::Result<SyncBatch> {
    let mut limit = limit.max(1);
    let mut backfill = MAX_BACKFILL;
    loop {
        // An answer too large to send is an error from the node: also a reason to ask less.
        let attempt = try_batch(node, info, limit, backfill).await;
        let too_large = match &attempt {
            Ok(attempt) => {
                attempt.oversized || serde_json::to_vec(&attempt.batch)?.len() > MAX_SYNC_BODY
            }
            Err(_) => false,
        };
        match attempt.map(|a| (a.batch, a.complete)) {
            Ok((batch, true)) if !too_large => return Ok(batch),
            Ok((batch, _)) if too_large && !batch.backfill.is_empty() => {
                backfill = batch.backfill.len() / 2;
            }
            Ok(_) if limit == 1 => anyhow::bail!(
                "the node cut the messages of block {} short, or they do not fit a batch",
                info.height + 1
            ),
            Err(error) if limit == 1 => return Err(error),
            Ok(_) | Err(_) => limit /= 2,
        }
    }
}

/// The most one block can put in a batch, beside its header and witness: its downward messages
/// (whose payloads come from the block's own transactions, at most `MAX_BLOCK_SIZE` together
/// and each reaching a pRuntime at most twice, as an instantiation reaches a gatekeeper in
/// the cluster; plus each message's topic, framing and a proof of at most 13 siblings, all
/// hex-encoded JSON) and the code of the contracts it instantiates.
pub const ONE_BLOCK_BOUND: usize = 2 * 2 * limits::MAX_BLOCK_SIZE
    + limits::MAX_BLOCK_MESSAGES * (2 * (limits::MAX_TOPIC + 128) + 13 * 67 + 128)
    + MAX_BLOCK_INSTANTIATIONS as usize * (2 * MAX_CODE + 4);
const _: () = assert!(ONE_BLOCK_BOUND + 1024 * 1024 <= MAX_SYNC_BODY);

/// What one attempt of [`build_batch`] gathered.
struct Attempt {
    batch: SyncBatch,
    /// False if the node left messages of the batch's blocks out.
    complete: bool,
    /// True if its codes alone outgrew a batch (the rest were not fetched).
    oversized: bool,
}

/// One attempt of [`build_batch`], with at most `backfill` old messages.
async fn try_batch(
    node: &Client,
    info: &Info,
    limit: u64,
    backfill: usize,
) -> anyhow::Result<Attempt> {
    let headers = node.headers(info.height + 1, limit).await?;
    let last = headers
        .headers
        .last()
        .map(|h| h.height)
        .context("the node returned no headers")?;
    let mut messages = Vec::new();
    let mut after = Vec::new();
    // Streams joined late, and how many old messages the batch proves for them.
    let (mut backfilling, mut backfilled) = (BTreeSet::new(), 0);
    for (destination, next) in &info.streams {
        let mut found = node.stream_messages(*destination, *next, last).await?;
        // A stream joined late starts with old messages, proven by state: this batch carries
        // those of them one witness can prove, the rest and the stream's newer messages
        // come in the next batches (as old ones by then).
        let old = found.partition_point(|m| m.height <= info.height);
        if old > 0 {
            found.truncate(old.min(backfill - backfilled));
            backfilled += found.len();
            backfilling.insert(*destination);
        }
        after.push((*destination, next + found.len() as u64));
        messages.extend(found);
    }
    messages.sort_by_key(|m| (m.height, m.index));
    // Messages from before this batch belong to streams joined late: proven by state instead.
    let split = messages.partition_point(|m| m.height <= info.height);
    let messages_new = messages.split_off(split);
    let old = messages;
    let mut backfill = Vec::with_capacity(old.len());
    let mut backfill_keys = Vec::with_capacity(old.len());
    let mut codes = Vec::new();
    // Each code once, however many of the batch's contracts run it, and no more than a
    // batch holds.
    let mut fetched = BTreeSet::new();
    let mut code_bytes = 0;
    for message in old.iter().chain(&messages_new) {
        let decoded = decode_message(&message.message)?;
        if let Some(code_hash) = instantiated_code(&decoded)
            && code_bytes <= MAX_SYNC_BODY
            && fetched.insert(code_hash)
        {
            let code = hex::encode(node.code(&code_hash).await?);
            code_bytes += code.len();
            codes.push(code);
        }
        if message.height <= info.height {
            backfill_keys.push((decoded.destination, decoded.sequence));
            backfill.push(message.message.clone());
        }
    }
    let witness = node
        .stream_witness(&after, Some(info.identity), &backfill_keys)
        .await?;
    let normal = witness
        .streams
        .iter()
        .filter(|stream| !backfilling.contains(&stream.destination));
    let root = witness
        .header
        .to_header()
        .map(|h| h.state_root)
        .unwrap_or(Digest([0; 32]));
    let complete = !left_out(normal, &root, info.height, last);
    let batch = SyncBatch {
        headers: headers.headers,
        certificate: headers.certificate,
        messages: messages_new,
        witness,
        backfill,
        codes,
    };
    Ok(Attempt {
        batch,
        complete,
        oversized: code_bytes > MAX_SYNC_BODY,
    })
}

/// Whether the witness shows a stream message in the batch's blocks (after `before`, up to
/// `last`) past those fetched: the node's answer was cut short. (One at or before `before`
/// is an old message of a stream joined late, for the next batch.) A proof that does not hold
/// under `root` shows nothing: a lying node only makes the pRuntime refuse the batch.
fn left_out<'a>(
    streams: impl IntoIterator<Item = &'a StreamProof>,
    root: &Digest,
    before: u64,
    last: u64,
) -> bool {
    streams.into_iter().any(|stream| {
        let key = stream_message(&stream.destination, stream.sequence);
        stream
            .proof
            .to_proof()
            .ok()
            .and_then(|proof| proof.verify(root, &key).ok().flatten())
            .and_then(|value| MessageLocation::decode(&value))
            .is_some_and(|location| location.height > before && location.height <= last)
    })
}

fn decode_message(text: &str) -> anyhow::Result<DownwardMessage> {
    let bytes = hex::decode(text).context("the node sent a message that is not hex")?;
    DownwardMessage::decode(Copying(&bytes)).context("the node sent a malformed message")
}

/// The code a cluster-stream message needs: that of the contract it instantiates.
fn instantiated_code(message: &DownwardMessage) -> Option<[u8; 32]> {
    if !matches!(message.destination, Destination::Cluster(_))
        || message.topic.as_ref() != topics::INSTANTIATED
    {
        return None;
    }
    decode_payload::<ContractInstantiated>(&message.payload)
        .ok()
        .map(|i| i.code_hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use phala_api::rpc::ProofJson;
    use phala_chain::{commitment::mocks::TestState, state::Changes};

    /// A state holding message 7 of the broadcast stream at height `height`, and of the
    /// gatekeepers' stream at height 10.
    fn state_with(height: Option<u64>) -> TestState {
        let location = |height| {
            Some(
                MessageLocation {
                    height,
                    index: 0,
                    leaf: Digest::from([0; 32]),
                }
                .encode(),
            )
        };
        let mut changes = Changes::new();
        if let Some(height) = height {
            changes.insert(stream_message(&Destination::All, 7), location(height));
        }
        changes.insert(stream_message(&Destination::Gatekeepers, 7), location(10));
        let mut state = TestState::default();
        state.apply(&changes);
        state
    }

    fn proof_of(state: &TestState, destination: Destination, sequence: u64) -> StreamProof {
        StreamProof {
            destination,
            sequence,
            proof: ProofJson::from_proof(&state.prove(&stream_message(&destination, sequence))),
        }
    }

    fn cut(height: Option<u64>) -> bool {
        let state = state_with(height);
        left_out(
            &[proof_of(&state, Destination::All, 7)],
            &state.root(),
            9,
            12,
        )
    }

    /// A batch whose witness shows the next message of a stream inside the batch was cut
    /// short by the node: pherry must ask for fewer blocks, or the pRuntime refuses it forever.
    #[test]
    fn a_message_inside_the_batch_past_those_fetched_means_the_answer_was_cut() {
        assert!(cut(Some(10)));
        assert!(cut(Some(12)));
        assert!(!cut(Some(13)), "after the batch");
        assert!(
            !cut(Some(9)),
            "an old message of a stream joined late, for the next batch"
        );
        assert!(!cut(None), "no such message yet");
        let state = state_with(None);
        let mut mislabelled = proof_of(&state, Destination::All, 7);
        mislabelled.proof = proof_of(&state, Destination::Gatekeepers, 7).proof;
        assert!(
            !left_out(&[mislabelled], &state.root(), 9, 12),
            "another stream's message is not this one's"
        );
        let honest = state_with(Some(10));
        assert!(
            !left_out(
                &[proof_of(&honest, Destination::All, 7)],
                &state.root(),
                9,
                12
            ),
            "a proof that does not hold under the witness's root shows nothing"
        );
    }
}
