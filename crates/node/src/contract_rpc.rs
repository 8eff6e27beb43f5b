//! RPC methods about confidential contracts: what the chain knows of them (never their state,
//! which only the cluster's enclaves hold).
//!
//! - `contract(id)`: the record, the newest report and recent events;
//! - `contract_report(id, index)`: the report of one call;
//! - `code(hash)`: uploaded code (pherry hands it to the workers, which check its hash).

use crate::rpc::{RpcContext, bad_params, not_found};
use commonware_codec::{Copying, DecodeExt};
use jsonrpsee::{RpcModule, types::ErrorObjectOwned, types::Params};
use phala_api::{params, rpc::ContractInfo};
use phala_chain::contracts::keys;
use phala_types::{ContractRecord, ReportRecord};

/// Most events `contract` returns.
const RECENT_EVENTS: u64 = 32;
/// How many of the newest calls `contract` looks through for the latest report: a contract
/// whose calls nobody reports must not make each `contract` call scan all of them.
const REPORT_LOOKBACK: u64 = 64;

pub fn register(module: &mut RpcModule<RpcContext>) -> anyhow::Result<()> {
    module.register_method("contract", |params, ctx, _| contract(params, ctx))?;
    module.register_method("contract_report", |params, ctx, _| {
        contract_report(params, ctx)
    })?;
    module.register_method("code", |params, ctx, _| code(params, ctx))?;
    Ok(())
}

fn report(ctx: &RpcContext, id: &[u8; 32], index: u64) -> Option<ReportRecord> {
    let bytes = ctx.ledger.value(&keys::report(id, index))?;
    ReportRecord::decode(Copying(&bytes)).ok()
}

fn contract(params: Params<'_>, ctx: &RpcContext) -> Result<ContractInfo, ErrorObjectOwned> {
    let id = params::contract_id(params.as_str()).map_err(bad_params)?;
    let record = ctx
        .ledger
        .value(&keys::contract(&id))
        .and_then(|bytes| ContractRecord::decode(Copying(&bytes)).ok())
        .ok_or_else(|| not_found(format!("no contract {}", hex::encode(id))))?;
    let latest_report = (record.commands.saturating_sub(REPORT_LOOKBACK)..=record.commands)
        .rev()
        .find_map(|index| report(ctx, &id, index));
    let event_count = ctx
        .ledger
        .value(&keys::event_count(&id))
        .and_then(|v| v.try_into().ok())
        .map_or(0, u64::from_be_bytes);
    let recent_events = (event_count.saturating_sub(RECENT_EVENTS)..event_count)
        .filter_map(|n| ctx.ledger.value(&keys::event(&id, n)))
        .map(|bytes| String::from_utf8(bytes.clone()).unwrap_or_else(|_| hex::encode(bytes)))
        .collect();
    Ok(ContractInfo {
        record,
        latest_report,
        event_count,
        recent_events,
    })
}

fn contract_report(
    params: Params<'_>,
    ctx: &RpcContext,
) -> Result<Option<ReportRecord>, ErrorObjectOwned> {
    let (id, index) = params::contract_report(params.as_str()).map_err(bad_params)?;
    Ok(report(ctx, &id, index))
}

fn code(params: Params<'_>, ctx: &RpcContext) -> Result<String, ErrorObjectOwned> {
    let hash = params::code_hash(params.as_str()).map_err(bad_params)?;
    ctx.ledger
        .value(&keys::code(&hash))
        .map(hex::encode)
        .ok_or_else(|| not_found(format!("no code with hash {}", hex::encode(hash))))
}
