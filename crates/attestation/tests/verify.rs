//! Cryptographic verification of real SGX and TDX quotes, and of tampered copies of them.

mod common;

use common::*;
use phala_attestation::{AttestationError, TeeDetails, quote_kind, verify_evidence};
use phala_types::registry::{Evidence, TeeKind};

fn refused(evidence: &Evidence, now: u64) -> AttestationError {
    verify_evidence(evidence, now).expect_err("the evidence must be refused")
}

/// The quote does not verify, and dcap-qvl's reason mentions `needle`.
fn assert_invalid(error: AttestationError, needle: &str) {
    match &error {
        AttestationError::Invalid(reason) if reason.contains(needle) => {}
        other => panic!("expected an invalid quote ({needle}), got {other:?}"),
    }
}

#[test]
fn real_sgx_quote_verifies() {
    let verdict = verify_evidence(&sgx(SGX_QUOTE, SGX_COLLATERAL), AT).unwrap();
    assert_eq!(verdict.kind, TeeKind::SgxDcap);
    assert_eq!(hex::encode(&verdict.measurement), SGX_MR_ENCLAVE);
    let TeeDetails::Sgx(details) = verdict.details else {
        panic!("SGX details expected, got {:?}", verdict.details);
    };
    assert_eq!(hex::encode(details.mr_enclave), SGX_MR_ENCLAVE);
    assert_eq!(hex::encode(details.mr_signer), SGX_MR_SIGNER);
    assert_eq!((details.isv_prod_id, details.isv_svn), (0, 0));
    assert_eq!(verdict.tcb_status, "ConfigurationAndSWHardeningNeeded");
    assert_eq!(verdict.advisory_ids, ["INTEL-SA-00289", "INTEL-SA-00615"]);
    assert_eq!(verdict.confidence, 3);
    assert!(!verdict.insecure);
    assert_eq!(&verdict.report_data[..13], b"Hello, world!");
    assert!(verdict.report_data[13..].iter().all(|b| *b == 0));
}

#[test]
fn real_tdx_quote_verifies() {
    let verdict = verify_evidence(&tdx(TDX_QUOTE, TDX_COLLATERAL), AT).unwrap();
    assert_eq!(verdict.kind, TeeKind::Tdx);
    assert_eq!(hex::encode(&verdict.measurement), TDX_MR_TD);
    let TeeDetails::Tdx(details) = verdict.details else {
        panic!("TDX details expected, got {:?}", verdict.details);
    };
    assert_eq!(hex::encode(details.mr_td), TDX_MR_TD);
    for (found, expected) in details.rtmrs.iter().zip(TDX_RTMRS) {
        assert_eq!(hex::encode(found), expected);
    }
    assert_eq!(verdict.tcb_status, "UpToDate");
    assert!(verdict.advisory_ids.is_empty());
    assert_eq!(verdict.confidence, 5);
    assert!(!verdict.insecure);
}

#[test]
fn real_td15_quote_v5_verifies() {
    let verdict = verify_evidence(&tdx(TD15EX_QUOTE, TD15EX_COLLATERAL), TD15EX_AT).unwrap();
    assert_eq!(verdict.kind, TeeKind::Tdx);
    assert_eq!(verdict.tcb_status, "UpToDate");
    assert_eq!(verdict.confidence, 5);
    assert!(matches!(verdict.details, TeeDetails::Tdx(_)));
}

#[test]
fn platform_below_every_tcb_level_is_refused() {
    // A real TDX quote from a platform older than every TCB level of its collateral.
    let error = refused(
        &tdx(TDX_OUTDATED_QUOTE, TDX_OUTDATED_COLLATERAL),
        OUTDATED_AT,
    );
    assert_invalid(error, "No matching TCB level");
}

#[test]
fn verdict_serializes_as_hex() {
    let verdict = verify_evidence(&sgx(SGX_QUOTE, SGX_COLLATERAL), AT).unwrap();
    let json = serde_json::to_value(&verdict).unwrap();
    assert_eq!(json["kind"], "sgx-dcap");
    assert_eq!(json["measurement"], SGX_MR_ENCLAVE);
    assert_eq!(json["details"]["sgx"]["mr_signer"], SGX_MR_SIGNER);
    assert_eq!(json["confidence"], 3);
    assert_eq!(json["report_data"], hex::encode(verdict.report_data));
    let json = serde_json::to_value(verify_evidence(&tdx(TDX_QUOTE, TDX_COLLATERAL), AT).unwrap())
        .unwrap();
    assert_eq!(json["details"]["tdx"]["rtmrs"][2], TDX_RTMRS[2]);
}

#[test]
fn verification_is_deterministic() {
    let evidence = tdx(TDX_QUOTE, TDX_COLLATERAL);
    let first = verify_evidence(&evidence, AT).unwrap();
    for _ in 0..3 {
        assert_eq!(verify_evidence(&evidence, AT).unwrap(), first);
    }
}

#[test]
fn flipped_signature_byte_is_refused() {
    let error = refused(
        &sgx(&flipped(SGX_QUOTE, SGX_SIGNATURE_AT), SGX_COLLATERAL),
        AT,
    );
    assert_invalid(error, "signature is invalid");
    let error = refused(
        &tdx(&flipped(TDX_QUOTE, TDX_SIGNATURE_AT), TDX_COLLATERAL),
        AT,
    );
    assert_invalid(error, "signature is invalid");
}

#[test]
fn changed_report_data_is_refused() {
    let error = refused(
        &sgx(&flipped(SGX_QUOTE, SGX_REPORT_DATA_AT), SGX_COLLATERAL),
        AT,
    );
    assert_invalid(error, "signature is invalid");
}

#[test]
fn changed_measurement_is_refused() {
    let error = refused(
        &sgx(&flipped(SGX_QUOTE, SGX_MR_ENCLAVE_AT), SGX_COLLATERAL),
        AT,
    );
    assert_invalid(error, "signature is invalid");
    let error = refused(&tdx(&flipped(TDX_QUOTE, TDX_MR_TD_AT), TDX_COLLATERAL), AT);
    assert_invalid(error, "signature is invalid");
}

#[test]
fn expired_collateral_is_refused() {
    // The earliest nextUpdate among the expired items is named: the SGX QE identity's.
    let error = refused(&sgx(SGX_QUOTE, SGX_COLLATERAL), AFTER_EXPIRY);
    assert_eq!(
        error,
        AttestationError::CollateralExpired {
            item: "QE identity",
            expired_at: 1_752_919_278, // 2025-07-19T10:01:18Z
            now: AFTER_EXPIRY,
        }
    );
    assert!(
        error.to_string().contains("2025-07-19T10:01:18Z"),
        "{error}"
    );

    // Only the TDX collateral's PCK CRL has expired at this time.
    let error = refused(&tdx(TDX_QUOTE, TDX_COLLATERAL), TDX_CRL_ONLY_EXPIRED);
    assert_eq!(
        error,
        AttestationError::CollateralExpired {
            item: "PCK CRL",
            expired_at: 1_752_919_235, // 2025-07-19T10:00:35Z
            now: TDX_CRL_ONLY_EXPIRED,
        }
    );
}

#[test]
fn collateral_not_yet_issued_is_refused() {
    let error = refused(&sgx(SGX_QUOTE, SGX_COLLATERAL), BEFORE_ISSUE);
    assert!(
        matches!(
            error,
            AttestationError::CollateralNotYetValid {
                item: "TCB info",
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn collateral_with_forged_dates_is_refused() {
    // Extending the TCB info's nextUpdate gets past the date check, not past Intel's signature.
    let mut collateral: serde_json::Value = serde_json::from_slice(SGX_COLLATERAL).unwrap();
    let tcb_info = collateral["tcb_info"].as_str().unwrap().replace(
        "\"nextUpdate\":\"2025-07-19T10:56:11Z\"",
        "\"nextUpdate\":\"2035-07-19T10:56:11Z\"",
    );
    assert_ne!(collateral["tcb_info"].as_str().unwrap(), tcb_info);
    collateral["tcb_info"] = tcb_info.into();
    let collateral = serde_json::to_vec(&collateral).unwrap();
    let error = refused(&sgx(SGX_QUOTE, &collateral), AT);
    assert_invalid(error, "Signature is invalid for tcb_info");
}

#[test]
fn collateral_of_the_other_quote_is_refused() {
    assert_invalid(refused(&sgx(SGX_QUOTE, TDX_COLLATERAL), AT), "QE Identity");
    assert_invalid(refused(&tdx(TDX_QUOTE, SGX_COLLATERAL), AT), "QE Identity");
}

#[test]
fn quote_of_the_other_kind_is_refused() {
    assert_eq!(
        refused(&tdx(SGX_QUOTE, SGX_COLLATERAL), AT),
        AttestationError::KindMismatch {
            claimed: TeeKind::Tdx,
            found: TeeKind::SgxDcap,
        }
    );
    assert_eq!(
        refused(&sgx(TDX_QUOTE, TDX_COLLATERAL), AT),
        AttestationError::KindMismatch {
            claimed: TeeKind::SgxDcap,
            found: TeeKind::Tdx,
        }
    );
}

#[test]
fn quote_kind_reads_the_header() {
    assert_eq!(quote_kind(SGX_QUOTE), Ok(TeeKind::SgxDcap));
    assert_eq!(quote_kind(TDX_QUOTE), Ok(TeeKind::Tdx));
    assert_eq!(quote_kind(TD15EX_QUOTE), Ok(TeeKind::Tdx));
    assert!(matches!(
        quote_kind(&SGX_QUOTE[..47]),
        Err(AttestationError::MalformedQuote(_))
    ));
    let mut unknown = SGX_QUOTE.to_vec();
    unknown[4] = 0x42;
    assert!(matches!(
        quote_kind(&unknown),
        Err(AttestationError::MalformedQuote(_))
    ));
}

#[test]
fn malformed_collateral_is_refused() {
    for collateral in [&b""[..], b"not json", b"{}", b"{\"tcb_info\": 3}"] {
        assert!(
            matches!(
                refused(&sgx(SGX_QUOTE, collateral), AT),
                AttestationError::MalformedCollateral(_)
            ),
            "{collateral:?}"
        );
    }
}

#[test]
fn oversized_inputs_are_refused() {
    let mut quote = SGX_QUOTE.to_vec();
    quote.resize(phala_types::registry::MAX_QUOTE + 1, 0);
    assert!(matches!(
        refused(&sgx(&quote, SGX_COLLATERAL), AT),
        AttestationError::MalformedQuote(_)
    ));
    let collateral = vec![b' '; phala_types::registry::MAX_COLLATERAL + 1];
    assert!(matches!(
        refused(&sgx(SGX_QUOTE, &collateral), AT),
        AttestationError::MalformedCollateral(_)
    ));
}

/// Refused, and not because the verifier panicked (which `verify_evidence` would catch).
fn assert_refused_cleanly(result: Result<phala_attestation::Verdict, AttestationError>) {
    match result {
        Err(AttestationError::Invalid(reason)) if reason.contains("panicked") => {
            panic!("the verifier panicked")
        }
        Err(_) => {}
        Ok(verdict) => panic!("corrupted evidence verified: {verdict:?}"),
    }
}

#[test]
fn truncated_quotes_are_errors_not_panics() {
    for len in 0..SGX_QUOTE.len() {
        assert_refused_cleanly(verify_evidence(&sgx(&SGX_QUOTE[..len], SGX_COLLATERAL), AT));
    }
    // The TDX sample ends with 70 bytes of padding after its signed data and certificates;
    // cutting into the padding leaves a valid quote.
    let signed_end = TDX_QUOTE.len() - 70;
    for len in 0..signed_end {
        assert_refused_cleanly(verify_evidence(&tdx(&TDX_QUOTE[..len], TDX_COLLATERAL), AT));
    }
    verify_evidence(&tdx(&TDX_QUOTE[..signed_end], TDX_COLLATERAL), AT).unwrap();
}

/// A fixed xorshift generator: the same "random" inputs on every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_quotes_are_errors_not_panics() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for round in 0..2000 {
        let len = rng.below(6000);
        let mut quote: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Half of them get a real header, so that parsing goes deeper than the first bytes.
        if round % 2 == 0 {
            let header = &SGX_QUOTE[..48.min(len)];
            quote[..header.len()].copy_from_slice(header);
        }
        assert_refused_cleanly(verify_evidence(&sgx(&quote, SGX_COLLATERAL), AT));
    }
}

#[test]
fn corrupted_bytes_are_errors_not_panics() {
    // Every 7th byte of the SGX quote up to its PCK certificate chain: the signed header and
    // report, the signature, attestation key, QE report, its signature and auth data.
    for at in (0..SGX_CERT_CHAIN_AT).step_by(7) {
        assert_refused_cleanly(verify_evidence(
            &sgx(&flipped(SGX_QUOTE, at), SGX_COLLATERAL),
            AT,
        ));
    }
    // The PEM chain that follows is transport, not signed content: a changed line break, or a
    // change in the root CA copy (the verifier uses its own), still verifies. Nothing panics.
    for at in (SGX_CERT_CHAIN_AT..SGX_QUOTE.len()).step_by(7) {
        let result = verify_evidence(&sgx(&flipped(SGX_QUOTE, at), SGX_COLLATERAL), AT);
        if let Err(AttestationError::Invalid(reason)) = &result {
            assert!(!reason.contains("panicked"), "the verifier panicked");
        }
    }
    // Within the PCK leaf certificate's body, any change breaks the chain.
    let leaf = SGX_CERT_CHAIN_AT + 2 + 4 + "-----BEGIN CERTIFICATE-----\n".len();
    for at in (leaf..leaf + 600)
        .filter(|at| SGX_QUOTE[*at] != b'\n')
        .step_by(5)
    {
        assert_refused_cleanly(verify_evidence(
            &sgx(&flipped(SGX_QUOTE, at), SGX_COLLATERAL),
            AT,
        ));
    }
    // Every 97th byte of the collateral JSON (hex digits, quotes, keys).
    let mut rng = XorShift(7);
    for at in (0..SGX_COLLATERAL.len()).step_by(97) {
        let mut collateral = SGX_COLLATERAL.to_vec();
        collateral[at] = b"0123456789abcdef\"{}:,x "[rng.below(23)];
        if collateral == SGX_COLLATERAL {
            continue;
        }
        let result = verify_evidence(&sgx(SGX_QUOTE, &collateral), AT);
        // Whitespace or a same-valued hex digit case change may leave it valid; nothing may panic.
        if let Err(AttestationError::Invalid(reason)) = &result {
            assert!(!reason.contains("panicked"), "the verifier panicked");
        }
    }
}

/// `chain` (PEM) with its last certificate replaced by a copy of the one before it.
fn without_root(chain: &[u8]) -> String {
    let mut blocks = pem::parse_many(chain).unwrap();
    assert!(blocks.len() >= 2, "a chain ending at the root");
    let last = blocks.len() - 1;
    blocks[last] = blocks[last - 1].clone();
    pem::encode_many(&blocks)
}

/// Each chain the evidence carries must end at Intel's root itself. Path validation alone still
/// reaches Intel's root through the intermediates (so a chain naming another root verified
/// before this check), but no chain Intel issues names any other root.
#[test]
fn a_chain_that_ends_at_another_root_is_refused() {
    let quote_chain = dcap_qvl::quote::Quote::parse(SGX_QUOTE)
        .unwrap()
        .raw_cert_chain()
        .unwrap()
        .to_vec();
    let original: serde_json::Value = serde_json::from_slice(SGX_COLLATERAL).unwrap();
    let cases = [
        (
            "pck_certificate_chain",
            quote_chain.clone(),
            "PCK certificate chain",
        ),
        (
            "tcb_info_issuer_chain",
            original["tcb_info_issuer_chain"]
                .as_str()
                .unwrap()
                .as_bytes()
                .to_vec(),
            "TCB info issuer chain",
        ),
        (
            "qe_identity_issuer_chain",
            original["qe_identity_issuer_chain"]
                .as_str()
                .unwrap()
                .as_bytes()
                .to_vec(),
            "QE identity issuer chain",
        ),
    ];
    for (field, chain, what) in cases {
        let mut collateral = original.clone();
        collateral[field] = without_root(&chain).into();
        let collateral = serde_json::to_vec(&collateral).unwrap();
        match refused(&sgx(SGX_QUOTE, &collateral), AT) {
            AttestationError::UntrustedRoot(named) => assert_eq!(named, what),
            other => panic!("{field}: expected an untrusted root, got {other:?}"),
        }
    }
    // The quote's own chain, given again in the collateral, is fine.
    let mut collateral = original;
    collateral["pck_certificate_chain"] = String::from_utf8(quote_chain).unwrap().into();
    let collateral = serde_json::to_vec(&collateral).unwrap();
    verify_evidence(&sgx(SGX_QUOTE, &collateral), AT).expect("the genuine chain verifies");
}

#[test]
fn the_pinned_root_is_intels() {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(phala_attestation::INTEL_SGX_ROOT_CA);
    assert_eq!(
        hex::encode(digest),
        "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
    );
}
