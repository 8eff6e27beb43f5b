//! Sync batches: what pherry gathers from a node for a pRuntime's light client. Nothing here
//! is trusted: the pRuntime checks every header, certificate, message and proof itself.

use anyhow::Context;
use commonware_codec::{Copying, DecodeExt};
use phala_api::pruntime::{Info, SyncBatch};
use phala_client::Client;
use phala_types::{
    ContractInstantiated, Destination, DownwardMessage, contracts::topics, registry::decode_payload,
};

/// Builds the next sync batch for a pRuntime from a node: up to `limit` headers after the
/// pRuntime's head (ending at a certified one), every message of its streams in them with
/// proofs, the older messages of streams it joined late (backfill), the code of contracts
/// instantiated in its cluster, and a witness that nothing was left out.
pub async fn build_batch(node: &Client, info: &Info, limit: u64) -> anyhow::Result<SyncBatch> {
    let headers = node.headers(info.height + 1, limit).await?;
    let last = headers
        .headers
        .last()
        .map(|h| h.height)
        .context("the node returned no headers")?;
    let mut messages = Vec::new();
    let mut after = Vec::new();
    for (destination, next) in &info.streams {
        let found = node.stream_messages(*destination, *next, last).await?;
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
    for message in old.iter().chain(&messages_new) {
        let decoded = decode_message(&message.message)?;
        if let Some(code_hash) = instantiated_code(&decoded) {
            codes.push(hex::encode(node.code(&code_hash).await?));
        }
        if message.height <= info.height {
            backfill_keys.push((decoded.destination, decoded.sequence));
            backfill.push(message.message.clone());
        }
    }
    let witness = node
        .stream_witness(&after, Some(info.identity), &backfill_keys)
        .await?;
    Ok(SyncBatch {
        headers: headers.headers,
        certificate: headers.certificate,
        messages: messages_new,
        witness,
        backfill,
        codes,
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
