//! Checking a query receipt against the chain while trusting no node: the worker's record, the
//! attestation policy, the contract's record and its recent reports are each proven against a
//! state root that a finality certificate under the trusted group key covers
//! ([`Client::proven_values`]); [`check_receipt`] then decides on those proven records alone.

use crate::{Client, Error};
use commonware_codec::{Copying, DecodeExt};
use phala_api::{
    TrustedChain,
    query::receipt_signature_valid,
    receipt::{REPORT_WINDOW, ReceiptCheck, ReceiptError, ReceiptEvidence, check_receipt},
};
use phala_chain::{contracts::keys, registry};
use phala_types::{AttestationPolicy, ContractRecord, QueryReceipt, ReportRecord, WorkerRecord};
use std::time::{Duration, Instant};

/// How long [`verify_receipt`] waits for the report of the call a fresh receipt's state
/// follows (reports reach the chain a few blocks after the call).
pub const REPORT_WAIT: Duration = Duration::from_secs(20);

/// Why a receipt could not be verified: the node failed or lied, or the receipt is not good.
#[derive(Debug, thiserror::Error)]
pub enum VerifyReceiptError {
    #[error(transparent)]
    Node(#[from] Error),
    #[error(transparent)]
    Refused(#[from] ReceiptError),
}

/// Checks a receipt against the chain, proving every record it rests on under `trust`; a node
/// that lies is named in the error. A fresh receipt whose call's report has not reached the
/// chain yet is waited for, up to [`REPORT_WAIT`].
pub async fn verify_receipt(
    client: &Client,
    trust: &TrustedChain,
    receipt: &QueryReceipt,
) -> Result<ReceiptCheck, VerifyReceiptError> {
    if !receipt_signature_valid(receipt) {
        return Err(ReceiptError::BadSignature.into());
    }
    let deadline = Instant::now() + REPORT_WAIT;
    loop {
        let evidence = evidence(client, trust, receipt).await?;
        match check_receipt(receipt, &evidence) {
            Err(ReceiptError::Unreported { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            other => return Ok(other?),
        }
    }
}

/// Reads and proves the records a receipt rests on: first the worker, the policy and the
/// contract, then the reports of the contract's last [`REPORT_WINDOW`] calls.
async fn evidence(
    client: &Client,
    trust: &TrustedChain,
    receipt: &QueryReceipt,
) -> Result<ReceiptEvidence, Error> {
    let records = [
        registry::keys::worker(&receipt.worker),
        registry::keys::POLICY.to_vec(),
        keys::contract(&receipt.contract),
    ];
    let proven = client.proven_values(trust, &records).await?;
    let [worker, policy, contract] = proven.values.as_slice() else {
        return Err(Error::Malformed("one value per key".into()));
    };
    let worker = worker.as_deref().map(decode::<WorkerRecord>).transpose()?;
    let policy = policy
        .as_deref()
        .map(decode::<AttestationPolicy>)
        .transpose()?
        .ok_or_else(|| Error::Malformed("the chain has no attestation policy".into()))?;
    let contract = contract
        .as_deref()
        .map(decode::<ContractRecord>)
        .transpose()?;
    let (first_call, reports) = match &contract {
        Some(record) => {
            let first = record.commands.saturating_sub(REPORT_WINDOW);
            let keys: Vec<_> = (first..=record.commands)
                .map(|index| keys::report(&receipt.contract, index))
                .collect();
            let reports = client.proven_values(trust, &keys).await?.values;
            let reports = reports
                .iter()
                .map(|value| value.as_deref().map(decode::<ReportRecord>).transpose())
                .collect::<Result<_, _>>()?;
            (first, reports)
        }
        None => (0, Vec::new()),
    };
    Ok(ReceiptEvidence {
        height: proven.header.height,
        worker,
        policy,
        contract,
        first_call,
        reports,
    })
}

/// Decodes a proven record (one that does not decode is the chain's own bytes: a bug, not a lie).
fn decode<T: DecodeExt<()>>(bytes: &[u8]) -> Result<T, Error> {
    T::decode(Copying(bytes)).map_err(|e| Error::Malformed(format!("a proven record: {e}")))
}
