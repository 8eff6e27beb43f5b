//! RPC methods for relayers (pherry): what a pRuntime's light client needs, each piece with the
//! proof that lets the enclave check it, so the relayer itself is never trusted.
//!
//! - `headers(from, limit)`: consecutive headers ending at a certified one, with its certificate;
//! - `stream_messages(destination, from_sequence, to_height)`: a stream's messages, with proofs;
//! - `stream_witness([[destination, sequence], ...], origin?, backfill?)`: a certified head
//!   and, per stream, a state proof of where message `sequence` lives (or that it does not
//!   exist yet), a proof of the origin's next upward sequence, and proofs of the `backfill`
//!   messages (old messages of a stream a pRuntime joins late: the proven value holds the
//!   message's leaf, so the message needs no old header);
//! - `workers()`: the registry's worker records (a listing, unproven).

use crate::ledger::BlockOutbox;
use crate::rpc::{RpcContext, bad_params, not_found};
use commonware_codec::{Copying, DecodeExt, Encode};
use jsonrpsee::{RpcModule, types::ErrorObjectOwned, types::Params};
use phala_api::{
    params::{self, WitnessRequest},
    rpc::{HeaderJson, HeadersJson, OutboxMessageJson, ProofJson, StreamProof, Witness},
};
use phala_chain::{mq::MessageLocation, registry};
use phala_types::{WorkerRecord, limits};
use std::sync::Arc;

/// Most headers per `headers` call.
const MAX_HEADERS: u64 = 20_000;
/// Messages after which `stream_messages` stops at the next block boundary. It never splits a
/// block, so a relayer asking for one block gets all its messages: at most
/// `MAX_BLOCK_MESSAGES` (a block can send no more), so an answer holds fewer than twice that.
const MESSAGE_COUNT: usize = limits::MAX_BLOCK_MESSAGES;
/// Encoded message bytes after which `stream_messages` stops at the next block boundary. One
/// MiB, plus one block's messages (no more than the block's 8 MiB, whose transactions carry
/// their payloads), hex-encoded, with a proof of at most 12 siblings for each of fewer than
/// 8,192 messages, stay within `MAX_RESPONSE_BYTES`.
const MESSAGE_BYTES: usize = 1024 * 1024;
/// How far past the asked range `headers` looks for a certified block to end on.
const CERTIFICATE_SEARCH: u64 = 64;

pub fn register(module: &mut RpcModule<RpcContext>) -> anyhow::Result<()> {
    module.register_async_method("headers", |params, ctx, _| headers(params, ctx))?;
    module.register_async_method("stream_messages", |params, ctx, _| {
        stream_messages(params, ctx)
    })?;
    module.register_async_method("stream_witness", |params, ctx, _| {
        stream_witness(params, ctx)
    })?;
    module.register_method("workers", |_, ctx, _| workers(ctx))?;
    Ok(())
}

async fn headers(
    params: Params<'static>,
    ctx: Arc<RpcContext>,
) -> Result<HeadersJson, ErrorObjectOwned> {
    let (from, limit) = params::headers(params.as_str()).map_err(bad_params)?;
    let head = ctx.ledger.head().height;
    if from == 0 || from > head {
        return Err(not_found(format!(
            "no finalized block {from} (head is {head})"
        )));
    }
    let wanted_end = from
        .saturating_add(limit.clamp(1, MAX_HEADERS) - 1)
        .min(head);
    // End on the nearest certified block: below the wanted end if one is there, else above.
    let mut end = None;
    for height in (from..=wanted_end)
        .rev()
        .chain(wanted_end + 1..=(wanted_end + CERTIFICATE_SEARCH).min(head))
    {
        if let Some(certificate) = ctx.blocks.finalization(height).await {
            end = Some((height, certificate));
            break;
        }
    }
    let (end, certificate) =
        end.ok_or_else(|| not_found(format!("no certified block near {wanted_end} yet")))?;
    // Headers come from the ledger's index: no body is loaded, nothing goes through the
    // consensus actors' mailboxes.
    let mut headers = Vec::with_capacity((end - from + 1) as usize);
    for height in from..=end {
        let header = ctx
            .ledger
            .finalized_header(height)
            .await
            .map_err(crate::rpc::history_failed)?
            .ok_or_else(|| not_found(format!("header {height} is not kept on this node")))?;
        headers.push(HeaderJson::from_header(&header));
    }
    Ok(HeadersJson {
        headers,
        certificate: hex::encode(certificate),
    })
}

async fn stream_messages(
    params: Params<'static>,
    ctx: Arc<RpcContext>,
) -> Result<Vec<OutboxMessageJson>, ErrorObjectOwned> {
    let (destination, from, to_height) =
        params::stream_messages(params.as_str()).map_err(bad_params)?;
    let mut out: Vec<OutboxMessageJson> = Vec::new();
    let mut bytes = 0;
    // Consecutive messages often share a block: its outbox is looked up once for all of them.
    let mut block: Option<(u64, Option<BlockOutbox>)> = None;
    for sequence in from..=u64::MAX {
        let key = phala_chain::mq::keys::stream_message(&destination, sequence);
        let Some(location) = ctx
            .ledger
            .value(&key)
            .as_deref()
            .and_then(MessageLocation::decode)
        else {
            break;
        };
        if location.height > to_height {
            break;
        }
        let new_block = out.last().is_some_and(|m| m.height != location.height);
        if new_block && (bytes >= MESSAGE_BYTES || out.len() >= MESSAGE_COUNT) {
            break;
        }
        if block
            .as_ref()
            .is_none_or(|(height, _)| *height != location.height)
        {
            let outbox = ctx
                .ledger
                .outbox(location.height)
                .await
                .map_err(crate::rpc::history_failed)?;
            block = Some((location.height, outbox));
        }
        let outbox = block.as_ref().and_then(|(_, outbox)| outbox.as_ref());
        let proven = outbox.and_then(|outbox| outbox.proven(location.index as usize));
        let Some((message, proof)) = proven else {
            return Err(not_found(format!(
                "the outbox of block {} is not kept on this node",
                location.height
            )));
        };
        let encoded = message.encode();
        bytes += encoded.len();
        out.push(OutboxMessageJson {
            height: location.height,
            index: location.index,
            message: hex::encode(encoded),
            leaf_count: proof.leaf_count,
            siblings: proof.siblings.iter().map(hex::encode).collect(),
        });
    }
    Ok(out)
}

async fn stream_witness(
    params: Params<'static>,
    ctx: Arc<RpcContext>,
) -> Result<Witness, ErrorObjectOwned> {
    let WitnessRequest {
        streams,
        origin,
        backfill,
    } = params::stream_witness(params.as_str()).map_err(bad_params)?;
    let mut keys: Vec<_> = streams
        .iter()
        .chain(&backfill)
        .map(|(d, s)| phala_chain::mq::keys::stream_message(d, *s))
        .collect();
    keys.extend(origin.map(|o| phala_chain::mq::keys::origin_sequence(&o)));
    let (mut values, header) = ctx
        .ledger
        .state_values(&keys)
        .await
        .map_err(crate::rpc::store_failed)?;
    let origin = origin
        .and_then(|_| values.pop())
        .map(|(_, p)| ProofJson::from_proof(&p));
    let backfill_values = values.split_off(streams.len());
    let certificate = ctx
        .blocks
        .finalization(header.height)
        .await
        .ok_or_else(|| {
            not_found(format!(
                "head {} has no certificate of its own yet; retry",
                header.height
            ))
        })?;
    Ok(Witness {
        header: HeaderJson::from_header(&header),
        certificate: hex::encode(certificate),
        streams: streams
            .iter()
            .zip(values)
            .map(|((destination, sequence), (_, proof))| StreamProof {
                destination: *destination,
                sequence: *sequence,
                proof: ProofJson::from_proof(&proof),
            })
            .collect(),
        origin,
        backfill: backfill
            .iter()
            .zip(backfill_values)
            .map(|((destination, sequence), (_, proof))| StreamProof {
                destination: *destination,
                sequence: *sequence,
                proof: ProofJson::from_proof(&proof),
            })
            .collect(),
    })
}

fn workers(ctx: &RpcContext) -> Result<Vec<WorkerRecord>, ErrorObjectOwned> {
    Ok(ctx
        .ledger
        .scan(registry::keys::WORKER_PREFIX)
        .iter()
        .filter_map(|bytes| WorkerRecord::decode(Copying(bytes)).ok())
        .collect())
}
