//! Deciding whether a query receipt is good, on chain records already proven against a
//! certified state root (`phala-client`'s `verify_receipt` fetches and proves them): signed by
//! a current worker of the contract's cluster, for its code, at a finalized height, with a
//! state some worker reported.

use crate::query::receipt_signature_valid;
use phala_types::{
    Address, AttestationPolicy, ContractRecord, QueryReceipt, ReportRecord, TeeKind, WorkerRecord,
};

/// How far back a receipt's state commitment is looked for: the reports of the contract's last
/// `REPORT_WINDOW + 1` calls (the newest and the 64 before it).
pub const REPORT_WINDOW: u64 = 64;

/// What checking a receipt against the chain found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReceiptCheck {
    pub worker: Address,
    pub tee: TeeKind,
    pub confidence: u8,
    pub cluster: u32,
    pub code_hash: String,
    /// The call whose reported state commitment is the receipt's.
    pub reported_call: u64,
    /// How many workers reported that call (with no dispute: every report agreed).
    pub confirmations: u32,
    /// Whether that call's first report came from another worker than the receipt's: with one
    /// confirmation and `false`, only the receipt's own worker vouches for its state.
    pub reported_by_another: bool,
    /// The finalized height the records were proven at.
    pub proven_at: u64,
}

/// Why a receipt is not good.
#[derive(Debug, thiserror::Error)]
pub enum ReceiptError {
    #[error(
        "the worker's signature over the receipt is invalid (a field was changed, or another key signed it)"
    )]
    BadSignature,
    #[error("worker {0} is not registered on this chain")]
    UnknownWorker(Address),
    #[error("worker {worker}'s attestation expired at block {expired}")]
    Expired { worker: Address, expired: u64 },
    #[error("contract {0} does not exist on this chain")]
    UnknownContract(String),
    #[error("worker {worker} is not in the contract's cluster {cluster}")]
    WrongCluster { worker: Address, cluster: u32 },
    #[error("the receipt names code {receipt}, the contract runs {chain}")]
    WrongCode { receipt: String, chain: String },
    #[error("the receipt is for block {receipt}, after the chain's finalized block {head}")]
    FromTheFuture { receipt: u64, head: u64 },
    #[error(
        "the receipt's state commitment matches no report on chain of calls {from}..={to}: no worker of the cluster vouched for that state"
    )]
    Unreported { from: u64, to: u64 },
    #[error(
        "the receipt's state is the one first reported for call {call}, but worker {worker} disputed that report: the cluster does not agree on it"
    )]
    Disputed { call: u64, worker: Address },
}

/// What the chain holds about a receipt, every record proven at `height`.
#[derive(Debug, Clone)]
pub struct ReceiptEvidence {
    pub height: u64,
    pub worker: Option<WorkerRecord>,
    pub policy: AttestationPolicy,
    pub contract: Option<ContractRecord>,
    /// The reports of calls `first_call..`, in call order (`None`: not reported yet).
    pub first_call: u64,
    pub reports: Vec<Option<ReportRecord>>,
}

/// Decides on proven records alone whether a receipt is good: signed by a registered worker
/// whose attestation is current, in the contract's cluster, for the code the contract runs, at
/// a finalized height, with a state commitment some worker reported for one of the contract's
/// recent calls.
pub fn check_receipt(
    receipt: &QueryReceipt,
    evidence: &ReceiptEvidence,
) -> Result<ReceiptCheck, ReceiptError> {
    if !receipt_signature_valid(receipt) {
        return Err(ReceiptError::BadSignature);
    }
    let worker = evidence
        .worker
        .as_ref()
        .filter(|w| w.identity == receipt.worker)
        .ok_or(ReceiptError::UnknownWorker(receipt.worker))?;
    let policy = &evidence.policy;
    // As the chain counts it (`registry::require_current`).
    let expired = worker.attested_at.saturating_add(policy.reattest_blocks);
    if evidence.height > expired {
        return Err(ReceiptError::Expired {
            worker: receipt.worker,
            expired,
        });
    }
    let record = evidence
        .contract
        .as_ref()
        .filter(|c| c.id == receipt.contract)
        .ok_or_else(|| ReceiptError::UnknownContract(hex::encode(receipt.contract)))?;
    if worker.cluster != Some(record.cluster) {
        return Err(ReceiptError::WrongCluster {
            worker: receipt.worker,
            cluster: record.cluster,
        });
    }
    if record.code_hash != receipt.code_hash {
        return Err(ReceiptError::WrongCode {
            receipt: hex::encode(receipt.code_hash),
            chain: hex::encode(record.code_hash),
        });
    }
    if receipt.height > evidence.height {
        return Err(ReceiptError::FromTheFuture {
            receipt: receipt.height,
            head: evidence.height,
        });
    }
    let last_call = evidence.first_call + evidence.reports.len().saturating_sub(1) as u64;
    let reported_call = evidence
        .reports
        .iter()
        .enumerate()
        .rev()
        .map(|(offset, report)| (evidence.first_call + offset as u64, report))
        .find_map(|(index, report)| {
            report
                .as_ref()
                .filter(|r| r.index == index && r.commitment == receipt.state_commitment)
                .map(|r| (index, r))
        })
        .ok_or(ReceiptError::Unreported {
            from: evidence.first_call,
            to: last_call,
        })?;
    let (reported_call, report) = reported_call;
    if let Some(dispute) = &report.dispute {
        return Err(ReceiptError::Disputed {
            call: reported_call,
            worker: dispute.worker,
        });
    }
    Ok(ReceiptCheck {
        worker: receipt.worker,
        tee: worker.tee,
        confidence: worker.confidence,
        cluster: record.cluster,
        code_hash: hex::encode(record.code_hash),
        reported_call,
        confirmations: report.confirmations,
        reported_by_another: report.reporter != receipt.worker,
        proven_at: evidence.height,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use phala_crypto::Keypair;
    use phala_types::contracts::labels;

    /// A good receipt and the chain records that make it good.
    fn setting() -> (Keypair, QueryReceipt, ReceiptEvidence) {
        let worker = Keypair::generate();
        let contract = [7; 32];
        let code_hash = [8; 32];
        let mut receipt = QueryReceipt {
            contract,
            code_hash,
            request_hash: [1; 32],
            response_hash: [2; 32],
            height: 90,
            state_commitment: [3; 32],
            worker: worker.address(),
            signature: [0; 64],
        };
        sign(&worker, &mut receipt);
        let record = WorkerRecord {
            identity: worker.address(),
            ecdh: [5; 32],
            operator: Address::default(),
            tee: TeeKind::Simulated,
            measurement: vec![6; 32],
            confidence: 1,
            cores: 1,
            benchmark: 1,
            registered_at: 40,
            attested_at: 50,
            gatekeeper_candidate: false,
            gatekeeper: false,
            cluster: Some(1),
        };
        let mut policy = AttestationPolicy::dev();
        policy.reattest_blocks = 100;
        let report = |index: u64, commitment: [u8; 32]| ReportRecord {
            index,
            reporter: worker.address(),
            commitment,
            gas_used: 1,
            succeeded: true,
            state_bytes: 0,
            height: 80,
            confirmations: 1,
            dispute: None,
        };
        let evidence = ReceiptEvidence {
            height: 100,
            worker: Some(record),
            policy,
            contract: Some(ContractRecord {
                id: contract,
                code_hash,
                deployer: Address::default(),
                cluster: 1,
                generation: 0,
                instantiated: 10,
                public_key: Some([9; 32]),
                commands: 3,
                storage_quota: 0,
                storage_deposit: 0,
            }),
            first_call: 0,
            reports: vec![
                Some(report(0, [0; 32])),
                Some(report(1, [3; 32])),
                Some(report(2, [4; 32])),
                None,
            ],
        };
        (worker, receipt, evidence)
    }

    fn sign(worker: &Keypair, receipt: &mut QueryReceipt) {
        receipt.signature = worker.sign(labels::RECEIPT, &receipt.signing_payload());
    }

    #[test]
    fn a_good_receipt_names_the_call_whose_state_it_answers_from() {
        let (_, receipt, evidence) = setting();
        let check = check_receipt(&receipt, &evidence).unwrap();
        assert_eq!(check.reported_call, 1);
        assert_eq!(check.cluster, 1);
        assert_eq!(check.proven_at, 100);
    }

    /// Each refusal, on a receipt that is validly signed by the worker it names (so none is
    /// caught by the signature).
    #[test]
    fn every_refusal_is_reached_past_a_valid_signature() {
        let (worker, receipt, evidence) = setting();
        let refuse = |receipt: &QueryReceipt, evidence: &ReceiptEvidence| {
            check_receipt(receipt, evidence).expect_err("must be refused")
        };

        let mut unknown = evidence.clone();
        unknown.worker = None;
        assert!(matches!(
            refuse(&receipt, &unknown),
            ReceiptError::UnknownWorker(_)
        ));

        let mut expired = evidence.clone();
        expired.height = 151;
        assert!(matches!(
            refuse(&receipt, &expired),
            ReceiptError::Expired { expired: 150, .. }
        ));

        let mut moved = evidence.clone();
        if let Some(record) = moved.worker.as_mut() {
            record.cluster = Some(2);
        }
        assert!(matches!(
            refuse(&receipt, &moved),
            ReceiptError::WrongCluster { cluster: 1, .. }
        ));

        let mut other_code = receipt.clone();
        other_code.code_hash = [0xee; 32];
        sign(&worker, &mut other_code);
        assert!(matches!(
            refuse(&other_code, &evidence),
            ReceiptError::WrongCode { .. }
        ));

        let mut future = receipt.clone();
        future.height = 101;
        sign(&worker, &mut future);
        assert!(matches!(
            refuse(&future, &evidence),
            ReceiptError::FromTheFuture {
                receipt: 101,
                head: 100
            }
        ));

        let mut unreported = receipt.clone();
        unreported.state_commitment = [0x55; 32];
        sign(&worker, &mut unreported);
        assert!(matches!(
            refuse(&unreported, &evidence),
            ReceiptError::Unreported { from: 0, to: 3 }
        ));

        let mut no_contract = evidence.clone();
        no_contract.contract = None;
        assert!(matches!(
            refuse(&receipt, &no_contract),
            ReceiptError::UnknownContract(_)
        ));

        let mut tampered = receipt.clone();
        tampered.height -= 1;
        assert!(matches!(
            refuse(&tampered, &evidence),
            ReceiptError::BadSignature
        ));
    }

    /// A report another worker disputed does not vouch for the state, whoever signed it.
    #[test]
    fn a_disputed_report_vouches_for_nothing() {
        let (_, receipt, mut evidence) = setting();
        if let Some(Some(report)) = evidence.reports.get_mut(1) {
            report.dispute = Some(phala_types::contracts::Dispute {
                worker: Address::default(),
                commitment: [9; 32],
            });
        }
        assert!(matches!(
            check_receipt(&receipt, &evidence),
            Err(ReceiptError::Disputed { call: 1, .. })
        ));
    }

    /// A report stored under another call's index does not vouch for this one.
    #[test]
    fn a_report_counts_only_under_its_own_index() {
        let (_, receipt, mut evidence) = setting();
        if let Some(Some(report)) = evidence.reports.get_mut(1) {
            report.index = 7;
        }
        assert!(matches!(
            check_receipt(&receipt, &evidence),
            Err(ReceiptError::Unreported { .. })
        ));
    }
}
