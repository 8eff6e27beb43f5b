//! Appraisal by the chain's policy, the report-data binding, and `attest` running both after
//! verification.

mod common;

use common::*;
use phala_attestation::{
    AttestationError, Verdict, appraise, attest, check_binding, claimed_report_data,
    verify_evidence,
};
use phala_types::{
    Address,
    registry::{
        AttestationPolicy, Evidence, HexMeasurement, HexMeasurement32, SgxRule, TdxRule,
        report_data,
    },
};

fn sgx_verdict() -> Verdict {
    verify_evidence(&sgx(SGX_QUOTE, SGX_COLLATERAL), AT).unwrap()
}

fn tdx_verdict() -> Verdict {
    verify_evidence(&tdx(TDX_QUOTE, TDX_COLLATERAL), AT).unwrap()
}

/// A production-like policy (no simulation) admitting nothing yet.
fn policy() -> AttestationPolicy {
    AttestationPolicy {
        allow_simulated: false,
        min_confidence: 1,
        ..AttestationPolicy::dev()
    }
}

fn with_sgx(rules: Vec<SgxRule>) -> AttestationPolicy {
    AttestationPolicy {
        sgx: rules,
        ..policy()
    }
}

fn with_tdx(rules: Vec<TdxRule>) -> AttestationPolicy {
    AttestationPolicy {
        tdx: rules,
        ..policy()
    }
}

fn tdx_rule(rtmrs: [Option<&str>; 4]) -> TdxRule {
    TdxRule {
        mr_td: hex48(TDX_MR_TD),
        rtmrs: rtmrs.map(|rtmr| rtmr.map(|text| HexMeasurement(hex48(text)))),
    }
}

#[test]
fn allowed_mrenclave_passes() {
    let policy = with_sgx(vec![
        SgxRule::MrEnclave {
            mr_enclave: [7; 32],
        },
        SgxRule::MrEnclave {
            mr_enclave: hex32(SGX_MR_ENCLAVE),
        },
    ]);
    appraise(&sgx_verdict(), &policy).unwrap();
}

#[test]
fn other_mrenclave_is_refused() {
    let policy = with_sgx(vec![SgxRule::MrEnclave {
        mr_enclave: [7; 32],
    }]);
    let error = appraise(&sgx_verdict(), &policy).unwrap_err();
    assert_eq!(
        error,
        AttestationError::SgxEnclaveNotAllowed {
            mr_enclave: hex32(SGX_MR_ENCLAVE),
            mr_signer: hex32(SGX_MR_SIGNER),
            isv_prod_id: 0,
        }
    );
    let message = error.to_string();
    assert!(
        message.contains(SGX_MR_ENCLAVE) && message.contains("not allowed by the policy"),
        "{message}"
    );
    // A policy with TDX rules only admits no SGX enclave either.
    assert!(matches!(
        appraise(&sgx_verdict(), &with_tdx(vec![tdx_rule([None; 4])])),
        Err(AttestationError::SgxEnclaveNotAllowed { .. })
    ));
}

#[test]
fn signer_rule_checks_product_and_min_svn() {
    let signer = |isv_prod_id, min_isv_svn| SgxRule::Signer {
        mr_signer: hex32(SGX_MR_SIGNER),
        isv_prod_id,
        min_isv_svn,
    };
    appraise(&sgx_verdict(), &with_sgx(vec![signer(0, 0)])).unwrap();

    let error = appraise(&sgx_verdict(), &with_sgx(vec![signer(0, 2), signer(0, 1)])).unwrap_err();
    assert_eq!(
        error,
        AttestationError::SgxSvnTooLow {
            mr_signer: hex32(SGX_MR_SIGNER),
            isv_prod_id: 0,
            isv_svn: 0,
            min_isv_svn: 1,
        }
    );
    assert!(
        error.to_string().contains("below the policy's minimum 1"),
        "{error}"
    );

    assert!(matches!(
        appraise(&sgx_verdict(), &with_sgx(vec![signer(1, 0)])),
        Err(AttestationError::SgxEnclaveNotAllowed { .. })
    ));
    let other_signer = SgxRule::Signer {
        mr_signer: [9; 32],
        isv_prod_id: 0,
        min_isv_svn: 0,
    };
    assert!(matches!(
        appraise(&sgx_verdict(), &with_sgx(vec![other_signer])),
        Err(AttestationError::SgxEnclaveNotAllowed { .. })
    ));
}

#[test]
fn min_confidence_is_enforced() {
    // The SGX sample is ConfigurationAndSWHardeningNeeded: confidence 3.
    let rules = vec![SgxRule::MrEnclave {
        mr_enclave: hex32(SGX_MR_ENCLAVE),
    }];
    let at_least = |min_confidence| AttestationPolicy {
        min_confidence,
        ..with_sgx(rules.clone())
    };
    appraise(&sgx_verdict(), &at_least(3)).unwrap();
    let error = appraise(&sgx_verdict(), &at_least(4)).unwrap_err();
    assert_eq!(
        error,
        AttestationError::ConfidenceTooLow {
            confidence: 3,
            tcb_status: "ConfigurationAndSWHardeningNeeded".to_string(),
            min_confidence: 4,
        }
    );
    // The TDX sample is UpToDate: confidence 5 passes any minimum.
    let policy = AttestationPolicy {
        min_confidence: 5,
        ..with_tdx(vec![tdx_rule([None; 4])])
    };
    appraise(&tdx_verdict(), &policy).unwrap();
}

#[test]
fn tdx_rules_match_mrtd_and_named_rtmrs() {
    let verdict = tdx_verdict();
    appraise(&verdict, &with_tdx(vec![tdx_rule([None; 4])])).unwrap();
    appraise(&verdict, &with_tdx(vec![tdx_rule(TDX_RTMRS.map(Some))])).unwrap();

    let wrong = "11".repeat(48);
    let error = appraise(
        &verdict,
        &with_tdx(vec![tdx_rule([None, None, Some(&wrong), None])]),
    )
    .unwrap_err();
    assert_eq!(
        error,
        AttestationError::RtmrMismatch {
            mr_td: Box::new(hex48(TDX_MR_TD)),
            index: 2,
            found: Box::new(hex48(TDX_RTMRS[2])),
            expected: Box::new([0x11; 48]),
        }
    );
    assert!(error.to_string().starts_with("RTMR2 "), "{error}");

    // A second rule for the same MRTD that matches admits it.
    let policy = with_tdx(vec![
        tdx_rule([None, None, Some(&wrong), None]),
        tdx_rule([Some(TDX_RTMRS[0]), None, None, Some(TDX_RTMRS[3])]),
    ]);
    appraise(&verdict, &policy).unwrap();

    let other = TdxRule {
        mr_td: [3; 48],
        rtmrs: [None; 4],
    };
    let error = appraise(&verdict, &with_tdx(vec![other])).unwrap_err();
    assert_eq!(error, AttestationError::MrTdNotAllowed(hex48(TDX_MR_TD)));
    assert!(error.to_string().contains(TDX_MR_TD), "{error}");
}

fn simulated(measurement: [u8; 32], report_data: [u8; 64]) -> Evidence {
    Evidence::Simulated {
        measurement,
        report_data,
    }
}

#[test]
fn simulated_evidence_is_flagged_and_needs_the_policy() {
    let verdict = verify_evidence(&simulated([5; 32], [0; 64]), 0).unwrap();
    assert!(verdict.insecure);
    assert_eq!(verdict.confidence, 1);
    assert_eq!(verdict.measurement, vec![5; 32]);

    assert_eq!(
        appraise(&verdict, &policy()),
        Err(AttestationError::SimulatedNotAllowed)
    );
    appraise(&verdict, &AttestationPolicy::dev()).unwrap();

    let listed = |measurements: Vec<[u8; 32]>| AttestationPolicy {
        simulated: measurements.into_iter().map(HexMeasurement32).collect(),
        ..AttestationPolicy::dev()
    };
    appraise(&verdict, &listed(vec![[1; 32], [5; 32]])).unwrap();
    let error = appraise(&verdict, &listed(vec![[1; 32]])).unwrap_err();
    assert_eq!(
        error,
        AttestationError::SimulatedMeasurementNotAllowed([5; 32])
    );
    assert!(error.to_string().contains(&hex::encode([5; 32])), "{error}");

    // Simulated evidence has confidence 1: a policy asking for more refuses it.
    let demanding = AttestationPolicy {
        min_confidence: 2,
        ..AttestationPolicy::dev()
    };
    assert!(matches!(
        appraise(&verdict, &demanding),
        Err(AttestationError::ConfidenceTooLow { confidence: 1, .. })
    ));
}

struct Worker {
    identity: Address,
    ecdh: [u8; 32],
    genesis: [u8; 32],
    freshness: u64,
}

impl Worker {
    fn new() -> Self {
        Worker {
            identity: Address([0xA1; 32]),
            ecdh: [0xEC; 32],
            genesis: [0x6E; 32],
            freshness: 1234,
        }
    }

    fn report_data(&self) -> [u8; 64] {
        report_data(&self.identity, &self.ecdh, &self.genesis, self.freshness)
    }
}

#[test]
fn matching_binding_is_accepted() {
    let worker = Worker::new();
    let evidence = simulated([5; 32], worker.report_data());
    let verdict = attest(
        &evidence,
        &AttestationPolicy::dev(),
        &worker.report_data(),
        0,
    )
    .unwrap();
    assert_eq!(verdict.identity_key(), worker.identity);

    // The real SGX sample binds "Hello, world!".
    let mut hello = [0u8; 64];
    hello[..13].copy_from_slice(b"Hello, world!");
    check_binding(&sgx_verdict(), &hello).unwrap();
}

#[test]
fn binding_mismatch_is_refused() {
    let worker = Worker::new();
    let evidence = simulated([5; 32], worker.report_data());
    let others = [
        Worker {
            ecdh: [0xED; 32],
            ..Worker::new()
        },
        Worker {
            genesis: [0x6F; 32],
            ..Worker::new()
        },
        Worker {
            freshness: 1235,
            ..Worker::new()
        },
        Worker {
            identity: Address([0xA2; 32]),
            ..Worker::new()
        },
    ];
    for other in others {
        let error = attest(
            &evidence,
            &AttestationPolicy::dev(),
            &other.report_data(),
            0,
        )
        .unwrap_err();
        assert_eq!(
            error,
            AttestationError::ReportDataMismatch {
                found: Box::new(worker.report_data()),
                expected: Box::new(other.report_data()),
            }
        );
        assert!(error.to_string().contains("binds other keys"), "{error}");
    }
    assert!(matches!(
        check_binding(&sgx_verdict(), &worker.report_data()),
        Err(AttestationError::ReportDataMismatch { .. })
    ));
}

/// `attest` compares the claimed report data first (a parse), so a genuine quote replayed for
/// other keys costs no DCAP verification; then it verifies, then appraises, then checks the
/// verified binding.
#[test]
fn attest_binds_then_verifies_then_appraises() {
    let worker = Worker::new();
    let wrong_binding = [0u8; 64];
    let mut hello = [0u8; 64];
    hello[..13].copy_from_slice(b"Hello, world!");
    // Binding first: collateral that would fail verification is never looked at.
    assert!(matches!(
        attest(
            &sgx(SGX_QUOTE, b"not collateral"),
            &policy(),
            &wrong_binding,
            AT
        ),
        Err(AttestationError::ReportDataMismatch { .. })
    ));
    assert!(matches!(
        attest(
            &simulated([5; 32], worker.report_data()),
            &policy(),
            &wrong_binding,
            0
        ),
        Err(AttestationError::ReportDataMismatch { .. })
    ));
    // Policy after binding.
    assert_eq!(
        attest(
            &simulated([5; 32], worker.report_data()),
            &policy(),
            &worker.report_data(),
            0
        ),
        Err(AttestationError::SimulatedNotAllowed)
    );
    // Verification before policy.
    let tampered = sgx(&flipped(SGX_QUOTE, SGX_SIGNATURE_AT), SGX_COLLATERAL);
    assert!(matches!(
        attest(&tampered, &policy(), &hello, AT),
        Err(AttestationError::Invalid(_))
    ));
    // A real quote through every step.
    let policy = with_sgx(vec![SgxRule::MrEnclave {
        mr_enclave: hex32(SGX_MR_ENCLAVE),
    }]);
    let verdict = attest(&sgx(SGX_QUOTE, SGX_COLLATERAL), &policy, &hello, AT).unwrap();
    assert_eq!(verdict, sgx_verdict());
    assert_eq!(
        claimed_report_data(&sgx(SGX_QUOTE, SGX_COLLATERAL)),
        Ok(hello)
    );
}
