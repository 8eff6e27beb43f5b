//! Verifies the evidence a worker's TEE produced, judges it by the chain's attestation policy,
//! and checks that it binds the keys the worker registers.
//!
//! Three steps, each its own function so that tools can run them apart, and [`attest`] runs all
//! three in order for the chain's state transition:
//!
//! 1. [`verify_evidence`]: cryptography. An SGX or TDX DCAP quote is verified with
//!    [dcap-qvl](https://github.com/Phala-Network/dcap-qvl) against Intel's collateral as of a
//!    given time (signatures, certificate chains to Intel's root, CRLs, validity windows, TCB
//!    status); debug enclaves and TDs and revoked platforms are refused. Simulated evidence
//!    carries no proof at all and yields a verdict flagged insecure.
//! 2. [`appraise`]: the [`AttestationPolicy`]: which measurements are admitted, and the lowest
//!    confidence level (see [`Verdict::confidence`]).
//! 3. [`check_binding`]: the 64 bytes of report data must be exactly those the registration
//!    expects (see [`phala_types::registry::report_data`]).
//!
//! Everything here is a pure function of its inputs (the time is a parameter, never read from
//! the clock), and no input bytes can make it panic.

mod time;

use dcap_qvl::{
    QuoteCollateralV3, QuotePolicy, TcbStatus,
    configs::RingConfig,
    quote::{Quote, Report},
    verify::QuoteVerifier,
};
use phala_types::{
    Address,
    registry::{AttestationPolicy, Evidence, MAX_COLLATERAL, MAX_QUOTE, SgxRule, TeeKind},
};
use serde::Serialize;

/// `tee_type` of an SGX quote header.
const TEE_TYPE_SGX: u32 = 0x0000_0000;
/// `tee_type` of a TDX quote header.
const TEE_TYPE_TDX: u32 = 0x0000_0081;
/// Length of a DCAP quote header.
const QUOTE_HEADER_LEN: usize = 48;

/// What verified evidence says about the TEE: what it runs, how trustworthy its platform is,
/// and the report data it chose. Serializable for `phala attest verify --json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// The kind of TEE the evidence came from.
    pub kind: TeeKind,
    /// The primary measurement, the one a policy names: MRENCLAVE (SGX, 32 bytes), MRTD (TDX,
    /// 48 bytes), or the claimed measurement of simulated evidence (32 bytes).
    #[serde(serialize_with = "hex_serde::bytes")]
    pub measurement: Vec<u8>,
    /// Every measurement of the TEE, by kind.
    pub details: TeeDetails,
    /// Intel's TCB status of the platform (`UpToDate`, `OutOfDate`, ...), or `Simulated`.
    pub tcb_status: String,
    /// Intel security advisories that apply to the platform.
    pub advisory_ids: Vec<String>,
    /// How far the platform can be trusted, from 1 (weakest) to 5, from the TCB status:
    ///
    /// | confidence | TCB status |
    /// |---|---|
    /// | 5 | `UpToDate` |
    /// | 4 | `SWHardeningNeeded` |
    /// | 3 | `ConfigurationNeeded`, `ConfigurationAndSWHardeningNeeded` |
    /// | 2 | `OutOfDate`, `TDRelaunchAdvised`, `TDRelaunchAdvisedConfigurationNeeded` |
    /// | 1 | `OutOfDateConfigurationNeeded`, and all simulated evidence |
    ///
    /// `Revoked` platforms are refused outright.
    pub confidence: u8,
    /// True for simulated evidence: nothing was proven, the host merely claimed it.
    pub insecure: bool,
    /// The 64 bytes the TEE put in its report: for a Phala worker, a SHA-256 binding hash of
    /// its keys, chain and freshness height, then its identity public key.
    #[serde(serialize_with = "hex_serde::bytes")]
    pub report_data: [u8; 64],
}

impl Verdict {
    /// The identity key named by bytes 32..64 of the report data, as a worker's report data
    /// carries it (the caller still has to [`check_binding`] to know it is bound).
    pub fn identity_key(&self) -> Address {
        let mut key = [0u8; 32];
        key.copy_from_slice(&self.report_data[32..]);
        Address(key)
    }
}

/// The measurements of a TEE, by kind: what policy rules are matched against.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TeeDetails {
    /// Simulated evidence: only [`Verdict::measurement`], which proves nothing.
    Simulated,
    /// An SGX enclave.
    Sgx(SgxDetails),
    /// A TDX trust domain.
    Tdx(TdxDetails),
}

/// The identity of an SGX enclave, as [`SgxRule`]s name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SgxDetails {
    /// Hash of the enclave's initial code and data.
    #[serde(serialize_with = "hex_serde::bytes")]
    pub mr_enclave: [u8; 32],
    /// Hash of the key that signed the enclave.
    #[serde(serialize_with = "hex_serde::bytes")]
    pub mr_signer: [u8; 32],
    /// The signer's product id for this enclave.
    pub isv_prod_id: u16,
    /// The enclave's security version.
    pub isv_svn: u16,
}

/// The identity of a TDX trust domain, as [`phala_types::registry::TdxRule`]s name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TdxDetails {
    /// Measurement of the TD's initial memory (its firmware).
    #[serde(serialize_with = "hex_serde::bytes")]
    pub mr_td: [u8; 48],
    /// Runtime measurement registers 0-3 (firmware configuration, kernel, command line, and
    /// whatever the guest extends into RTMR3).
    #[serde(serialize_with = "hex_serde::list")]
    pub rtmrs: [[u8; 48]; 4],
}

/// Why evidence was refused. Each variant names what was wrong, so that an operator can fix
/// it and the chain can report it. Large byte arrays are boxed to keep the error small.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AttestationError {
    /// The quote bytes are not a DCAP quote.
    #[error("the quote is malformed: {0}")]
    MalformedQuote(String),
    /// The collateral is not dcap-qvl's `QuoteCollateralV3` JSON.
    #[error("the collateral is malformed: {0}")]
    MalformedCollateral(String),
    /// The evidence variant and the quote's header disagree.
    #[error("the evidence is {claimed} but its quote is a {found} quote")]
    KindMismatch { claimed: TeeKind, found: TeeKind },
    /// A collateral item's validity ended before the verification time.
    #[error(
        "the collateral's {item} expired at {} (verification time {})",
        time::format_rfc3339(*.expired_at),
        time::format_rfc3339(*.now)
    )]
    CollateralExpired {
        item: &'static str,
        expired_at: u64,
        now: u64,
    },
    /// A collateral item was issued after the verification time.
    #[error(
        "the collateral's {item} is only valid from {} (verification time {})",
        time::format_rfc3339(*.valid_from),
        time::format_rfc3339(*.now)
    )]
    CollateralNotYetValid {
        item: &'static str,
        valid_from: u64,
        now: u64,
    },
    /// A signature, certificate chain, CRL or collateral check failed (dcap-qvl's reason).
    #[error("the quote does not verify: {0}")]
    Invalid(String),
    /// A certificate chain the evidence carries does not end at Intel's SGX root CA.
    #[error("the {0} does not end at Intel's SGX root certificate")]
    UntrustedRoot(&'static str),
    /// Intel revoked the platform's TCB or one of its certificates.
    #[error("the platform is revoked by Intel: {0}")]
    Revoked(String),
    /// The enclave or TD runs in debug mode (or TD profiling): the host can read its memory.
    #[error("the {0} runs in debug mode: the host can read its memory")]
    DebugMode(TeeKind),
    /// The policy does not admit simulated TEEs.
    #[error("simulated TEEs are not allowed by the policy")]
    SimulatedNotAllowed,
    /// The policy admits simulated TEEs, but not this measurement.
    #[error("simulated measurement {} is not allowed by the policy", hex::encode(.0))]
    SimulatedMeasurementNotAllowed([u8; 32]),
    /// No SGX rule admits this enclave.
    #[error(
        "MRENCLAVE {} (MRSIGNER {}, product {isv_prod_id}) is not allowed by the policy",
        hex::encode(.mr_enclave),
        hex::encode(.mr_signer)
    )]
    SgxEnclaveNotAllowed {
        mr_enclave: [u8; 32],
        mr_signer: [u8; 32],
        isv_prod_id: u16,
    },
    /// A signer rule names this enclave's signer and product, but at a higher security version.
    #[error(
        "ISV SVN {isv_svn} of product {isv_prod_id} by MRSIGNER {} is below the policy's minimum {min_isv_svn}",
        hex::encode(.mr_signer)
    )]
    SgxSvnTooLow {
        mr_signer: [u8; 32],
        isv_prod_id: u16,
        isv_svn: u16,
        min_isv_svn: u16,
    },
    /// No TDX rule names this MRTD.
    #[error("MRTD {} is not allowed by the policy", hex::encode(.0))]
    MrTdNotAllowed([u8; 48]),
    /// A TDX rule names this MRTD, but one of its RTMRs differs.
    #[error(
        "RTMR{index} {} does not match the policy's {} for MRTD {}",
        hex::encode(.found.as_slice()),
        hex::encode(.expected.as_slice()),
        hex::encode(.mr_td.as_slice())
    )]
    RtmrMismatch {
        mr_td: Box<[u8; 48]>,
        index: usize,
        found: Box<[u8; 48]>,
        expected: Box<[u8; 48]>,
    },
    /// The platform is less trustworthy than the policy requires.
    #[error(
        "confidence {confidence} (TCB status {tcb_status}) is below the policy's minimum {min_confidence}"
    )]
    ConfidenceTooLow {
        confidence: u8,
        tcb_status: String,
        min_confidence: u8,
    },
    /// The report data is not the expected binding: the quote was made for other keys, another
    /// chain or another freshness height.
    #[error(
        "the quote's report data binds other keys: found {}, expected {}",
        hex::encode(.found.as_slice()),
        hex::encode(.expected.as_slice())
    )]
    ReportDataMismatch {
        found: Box<[u8; 64]>,
        expected: Box<[u8; 64]>,
    },
}

/// Which kind of TEE made a DCAP quote, from its header (SGX or TDX), so that a tool can build
/// the right [`Evidence`] variant. Reads only the header: it proves nothing.
pub fn quote_kind(quote: &[u8]) -> Result<TeeKind, AttestationError> {
    let Some(header) = quote.get(..QUOTE_HEADER_LEN) else {
        return Err(AttestationError::MalformedQuote(format!(
            "{} bytes, shorter than a quote header ({QUOTE_HEADER_LEN})",
            quote.len()
        )));
    };
    match u32::from_le_bytes([header[4], header[5], header[6], header[7]]) {
        TEE_TYPE_SGX => Ok(TeeKind::SgxDcap),
        TEE_TYPE_TDX => Ok(TeeKind::Tdx),
        other => Err(AttestationError::MalformedQuote(format!(
            "unknown TEE type {other:#x} in the header"
        ))),
    }
}

/// Intel's SGX root CA certificate (DER; SHA-256
/// `44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3`, as Intel publishes it):
/// the one trust anchor of every SGX and TDX quote, pinned here rather than taken from a
/// dependency's default.
pub const INTEL_SGX_ROOT_CA: &[u8] = include_bytes!("intel_sgx_root_ca.der");

/// Refuses evidence whose certificate chains (the quote's PCK chain, or the collateral's copy
/// of it, and the collateral's issuer chains) end at any certificate but [`INTEL_SGX_ROOT_CA`].
/// Path validation alone would still reach Intel's root through the intermediates and ignore a
/// substituted root, but a chain that names another root is never one Intel issued.
fn check_roots(quote: &Quote, collateral: &QuoteCollateralV3) -> Result<(), AttestationError> {
    let pck = match &collateral.pck_certificate_chain {
        Some(chain) => chain.as_bytes(),
        None => quote
            .raw_cert_chain()
            .map_err(|e| AttestationError::MalformedQuote(format!("{e:#}")))?,
    };
    let chains = [
        ("PCK certificate chain", pck),
        (
            "PCK CRL issuer chain",
            collateral.pck_crl_issuer_chain.as_bytes(),
        ),
        (
            "TCB info issuer chain",
            collateral.tcb_info_issuer_chain.as_bytes(),
        ),
        (
            "QE identity issuer chain",
            collateral.qe_identity_issuer_chain.as_bytes(),
        ),
    ];
    for (what, chain) in chains {
        let certificates =
            pem::parse_many(chain).map_err(|_| AttestationError::UntrustedRoot(what))?;
        let root = certificates
            .iter()
            .rfind(|block| block.tag() == "CERTIFICATE")
            .ok_or(AttestationError::UntrustedRoot(what))?;
        if root.contents() != INTEL_SGX_ROOT_CA {
            return Err(AttestationError::UntrustedRoot(what));
        }
    }
    Ok(())
}

/// Verifies evidence cryptographically as of `now_secs` (Unix seconds) and says what it shows.
///
/// SGX and TDX: the collateral is parsed, every collateral item must be valid at `now_secs`,
/// the quote must verify against Intel's root of trust (dcap-qvl), its kind must match the
/// evidence variant, and debug enclaves/TDs and revoked platforms are refused. Simulated
/// evidence is not checked at all: its verdict is flagged [`Verdict::insecure`].
pub fn verify_evidence(evidence: &Evidence, now_secs: u64) -> Result<Verdict, AttestationError> {
    match evidence {
        Evidence::Simulated {
            measurement,
            report_data,
        } => Ok(Verdict {
            kind: TeeKind::Simulated,
            measurement: measurement.to_vec(),
            details: TeeDetails::Simulated,
            tcb_status: "Simulated".to_string(),
            advisory_ids: Vec::new(),
            confidence: 1,
            insecure: true,
            report_data: *report_data,
        }),
        Evidence::SgxDcap { quote, collateral } => {
            verify_dcap(TeeKind::SgxDcap, quote, collateral, now_secs)
        }
        Evidence::Tdx { quote, collateral } => {
            verify_dcap(TeeKind::Tdx, quote, collateral, now_secs)
        }
    }
}

fn verify_dcap(
    claimed: TeeKind,
    quote: &[u8],
    collateral: &[u8],
    now_secs: u64,
) -> Result<Verdict, AttestationError> {
    check_quote_size(quote)?;
    if collateral.len() > MAX_COLLATERAL {
        return Err(AttestationError::MalformedCollateral(format!(
            "{} bytes, more than the {MAX_COLLATERAL} allowed",
            collateral.len()
        )));
    }
    let found = quote_kind(quote)?;
    if found != claimed {
        return Err(AttestationError::KindMismatch { claimed, found });
    }
    let parsed =
        Quote::parse(quote).map_err(|e| AttestationError::MalformedQuote(format!("{e:#}")))?;
    let collateral: QuoteCollateralV3 = serde_json::from_slice(collateral)
        .map_err(|e| AttestationError::MalformedCollateral(e.to_string()))?;
    check_collateral_dates(&collateral, now_secs)?;
    check_roots(&parsed, &collateral)?;

    // Debug mode is checked below on the verified report, to refuse it with its own error.
    let verifier = QuoteVerifier::new(INTEL_SGX_ROOT_CA.to_vec())
        .with_config::<RingConfig>()
        .allow_debug(true);
    // dcap-qvl is written not to panic on any input; this is the belt to its braces, since a
    // panic here would take down the chain's state transition.
    let verified = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        verifier.verify_with_policy(
            quote,
            collateral,
            now_secs,
            &QuotePolicy::claims_only(now_secs),
        )
    }))
    .map_err(|_| AttestationError::Invalid("the quote verifier panicked".to_string()))?;
    let claims = verified.map_err(|error| {
        // dcap-qvl reports errors as text; 0.7 words a revoked TCB "TCB status is invalid:
        // Revoked" and a revoked certificate (webpki) "CertRevoked".
        let reason = format!("{error:#}");
        if reason.contains("Revoked") {
            AttestationError::Revoked(reason)
        } else {
            AttestationError::Invalid(reason)
        }
    })?;

    let confidence = match claims.tcb.status {
        TcbStatus::UpToDate => 5,
        TcbStatus::SWHardeningNeeded => 4,
        TcbStatus::ConfigurationNeeded | TcbStatus::ConfigurationAndSWHardeningNeeded => 3,
        TcbStatus::OutOfDate
        | TcbStatus::TDRelaunchAdvised
        | TcbStatus::TDRelaunchAdvisedConfigurationNeeded => 2,
        TcbStatus::OutOfDateConfigurationNeeded => 1,
        TcbStatus::Revoked => {
            return Err(AttestationError::Revoked("TCB status Revoked".to_string()));
        }
    };

    let (measurement, details, report_data) = match &claims.report {
        Report::SgxEnclave(report) => {
            if claimed != TeeKind::SgxDcap {
                return Err(AttestationError::KindMismatch {
                    claimed,
                    found: TeeKind::SgxDcap,
                });
            }
            // ATTRIBUTES.DEBUG is bit 1 of the first byte.
            if report.attributes[0] & 0x02 != 0 {
                return Err(AttestationError::DebugMode(TeeKind::SgxDcap));
            }
            let details = SgxDetails {
                mr_enclave: report.mr_enclave,
                mr_signer: report.mr_signer,
                isv_prod_id: report.isv_prod_id,
                isv_svn: report.isv_svn,
            };
            (
                report.mr_enclave.to_vec(),
                TeeDetails::Sgx(details),
                report.report_data,
            )
        }
        report => {
            let Some(td) = report.as_td10() else {
                return Err(AttestationError::Invalid(
                    "the quote carries neither an enclave nor a TD report".to_string(),
                ));
            };
            if claimed != TeeKind::Tdx {
                return Err(AttestationError::KindMismatch {
                    claimed,
                    found: TeeKind::Tdx,
                });
            }
            // The first byte of TDATTRIBUTES is the "TD under debug" group: DEBUG and the
            // profiling bits. Any of them set makes the TD untrusted.
            if td.td_attributes[0] != 0 {
                return Err(AttestationError::DebugMode(TeeKind::Tdx));
            }
            let details = TdxDetails {
                mr_td: td.mr_td,
                rtmrs: [td.rt_mr0, td.rt_mr1, td.rt_mr2, td.rt_mr3],
            };
            (td.mr_td.to_vec(), TeeDetails::Tdx(details), td.report_data)
        }
    };

    Ok(Verdict {
        kind: claimed,
        measurement,
        details,
        tcb_status: claims.tcb.status.to_string(),
        advisory_ids: claims.tcb.advisory_ids,
        confidence,
        insecure: false,
        report_data,
    })
}

/// Refuses collateral used outside its validity window, naming the item that is out of date.
/// dcap-qvl enforces the same dates; reading them here gives the refusal a precise reason.
/// Items whose dates do not parse are left to dcap-qvl, which refuses them.
fn check_collateral_dates(
    collateral: &QuoteCollateralV3,
    now: u64,
) -> Result<(), AttestationError> {
    #[derive(serde::Deserialize)]
    struct Dates {
        #[serde(rename = "issueDate")]
        issue_date: String,
        #[serde(rename = "nextUpdate")]
        next_update: String,
    }
    // (item, issued, nextUpdate, expired). JSON items are valid through their nextUpdate
    // second (dcap-qvl); a CRL is expired from its nextUpdate second on (webpki).
    let mut windows: Vec<(&'static str, Option<u64>, u64, bool)> = Vec::new();
    for (item, json) in [
        ("TCB info", &collateral.tcb_info),
        ("QE identity", &collateral.qe_identity),
    ] {
        if let Ok(dates) = serde_json::from_str::<Dates>(json) {
            let issued = time::parse_rfc3339(&dates.issue_date);
            let next = time::parse_rfc3339(&dates.next_update);
            let expired = next.is_some_and(|next| now > next);
            windows.push((item, issued, next.unwrap_or(u64::MAX), expired));
        }
    }
    for (item, der) in [
        ("root CA CRL", &collateral.root_ca_crl),
        ("PCK CRL", &collateral.pck_crl),
    ] {
        if let Some(next) = time::crl_next_update(der) {
            windows.push((item, None, next, now >= next));
        }
    }

    let expired = windows
        .iter()
        .filter(|window| window.3)
        .min_by_key(|window| window.2);
    if let Some(&(item, _, expired_at, _)) = expired {
        return Err(AttestationError::CollateralExpired {
            item,
            expired_at,
            now,
        });
    }
    let early = windows
        .iter()
        .filter_map(|&(item, issued, _, _)| {
            issued
                .filter(|&issued| now < issued)
                .map(|issued| (item, issued))
        })
        .max_by_key(|&(_, issued)| issued);
    if let Some((item, valid_from)) = early {
        return Err(AttestationError::CollateralNotYetValid {
            item,
            valid_from,
            now,
        });
    }
    Ok(())
}

/// Judges a verdict by the chain's policy: whether its measurements are admitted and its
/// platform trustworthy enough.
///
/// Simulated evidence needs `allow_simulated` (and its measurement in `simulated`, unless that
/// list is empty); an SGX enclave must match some [`SgxRule`]; a TD must match some
/// [`phala_types::registry::TdxRule`] (MRTD exactly, and every RTMR the rule names); and the
/// confidence must reach `min_confidence`.
pub fn appraise(verdict: &Verdict, policy: &AttestationPolicy) -> Result<(), AttestationError> {
    match &verdict.details {
        TeeDetails::Simulated => {
            if !policy.allow_simulated {
                return Err(AttestationError::SimulatedNotAllowed);
            }
            let measurement: [u8; 32] =
                verdict.measurement.as_slice().try_into().map_err(|_| {
                    AttestationError::MalformedQuote(format!(
                        "a simulated measurement has 32 bytes, not {}",
                        verdict.measurement.len()
                    ))
                })?;
            if !policy.simulated.is_empty() && !policy.simulated.iter().any(|m| m.0 == measurement)
            {
                return Err(AttestationError::SimulatedMeasurementNotAllowed(
                    measurement,
                ));
            }
        }
        TeeDetails::Sgx(sgx) => appraise_sgx(sgx, &policy.sgx)?,
        TeeDetails::Tdx(tdx) => appraise_tdx(tdx, &policy.tdx)?,
    }
    if verdict.confidence < policy.min_confidence {
        return Err(AttestationError::ConfidenceTooLow {
            confidence: verdict.confidence,
            tcb_status: verdict.tcb_status.clone(),
            min_confidence: policy.min_confidence,
        });
    }
    Ok(())
}

fn appraise_sgx(sgx: &SgxDetails, rules: &[SgxRule]) -> Result<(), AttestationError> {
    let admits = |rule: &SgxRule| match rule {
        SgxRule::MrEnclave { mr_enclave } => *mr_enclave == sgx.mr_enclave,
        SgxRule::Signer {
            mr_signer,
            isv_prod_id,
            min_isv_svn,
        } => {
            *mr_signer == sgx.mr_signer
                && *isv_prod_id == sgx.isv_prod_id
                && sgx.isv_svn >= *min_isv_svn
        }
    };
    if rules.iter().any(admits) {
        return Ok(());
    }
    // The nearest miss: a signer rule for this product that wants a newer version.
    let lowest_required = rules
        .iter()
        .filter_map(|rule| match rule {
            SgxRule::Signer {
                mr_signer,
                isv_prod_id,
                min_isv_svn,
            } if *mr_signer == sgx.mr_signer && *isv_prod_id == sgx.isv_prod_id => {
                Some(*min_isv_svn)
            }
            _ => None,
        })
        .min();
    Err(match lowest_required {
        Some(min_isv_svn) => AttestationError::SgxSvnTooLow {
            mr_signer: sgx.mr_signer,
            isv_prod_id: sgx.isv_prod_id,
            isv_svn: sgx.isv_svn,
            min_isv_svn,
        },
        None => AttestationError::SgxEnclaveNotAllowed {
            mr_enclave: sgx.mr_enclave,
            mr_signer: sgx.mr_signer,
            isv_prod_id: sgx.isv_prod_id,
        },
    })
}

fn appraise_tdx(
    tdx: &TdxDetails,
    rules: &[phala_types::registry::TdxRule],
) -> Result<(), AttestationError> {
    let mut first_mismatch = None;
    for rule in rules.iter().filter(|rule| rule.mr_td == tdx.mr_td) {
        let mismatch =
            rule.rtmrs
                .iter()
                .zip(&tdx.rtmrs)
                .enumerate()
                .find_map(|(index, (expected, found))| match expected {
                    Some(expected) if expected.0 != *found => {
                        Some(AttestationError::RtmrMismatch {
                            mr_td: Box::new(tdx.mr_td),
                            index,
                            found: Box::new(*found),
                            expected: Box::new(expected.0),
                        })
                    }
                    _ => None,
                });
        match mismatch {
            None => return Ok(()),
            Some(error) => {
                first_mismatch.get_or_insert(error);
            }
        }
    }
    Err(first_mismatch.unwrap_or(AttestationError::MrTdNotAllowed(tdx.mr_td)))
}

/// Checks that the verdict's report data is exactly `expected`, i.e. that the quote was made
/// for the keys, chain and freshness height being registered and cannot be replayed for others.
pub fn check_binding(verdict: &Verdict, expected: &[u8; 64]) -> Result<(), AttestationError> {
    if verdict.report_data != *expected {
        return Err(AttestationError::ReportDataMismatch {
            found: Box::new(verdict.report_data),
            expected: Box::new(*expected),
        });
    }
    Ok(())
}

/// Refuses a quote longer than any real one, before parsing it.
fn check_quote_size(quote: &[u8]) -> Result<(), AttestationError> {
    if quote.len() > MAX_QUOTE {
        return Err(AttestationError::MalformedQuote(format!(
            "{} bytes, more than the {MAX_QUOTE} allowed",
            quote.len()
        )));
    }
    Ok(())
}

/// The report data the evidence claims, read without verifying anything (a parse): cheap, so
/// evidence made for other keys (a replayed quote) is refused before the costly verification.
pub fn claimed_report_data(evidence: &Evidence) -> Result<[u8; 64], AttestationError> {
    let quote = match evidence {
        Evidence::Simulated { report_data, .. } => return Ok(*report_data),
        Evidence::SgxDcap { quote, .. } | Evidence::Tdx { quote, .. } => quote,
    };
    check_quote_size(quote)?;
    let parsed =
        Quote::parse(quote).map_err(|e| AttestationError::MalformedQuote(format!("{e:#}")))?;
    match &parsed.report {
        Report::SgxEnclave(report) => Ok(report.report_data),
        report => report.as_td10().map(|td| td.report_data).ok_or_else(|| {
            AttestationError::Invalid(
                "the quote carries neither an enclave nor a TD report".to_string(),
            )
        }),
    }
}

/// Everything the chain checks before it registers a worker: the claimed report data against
/// `expected_report_data` (cheap, first), [`verify_evidence`] as of `now_secs`, [`appraise`]
/// by `policy`, then [`check_binding`] of the verified report data. Deterministic in its
/// inputs, and never panics.
pub fn attest(
    evidence: &Evidence,
    policy: &AttestationPolicy,
    expected_report_data: &[u8; 64],
    now_secs: u64,
) -> Result<Verdict, AttestationError> {
    let claimed = claimed_report_data(evidence)?;
    if claimed != *expected_report_data {
        return Err(AttestationError::ReportDataMismatch {
            found: Box::new(claimed),
            expected: Box::new(*expected_report_data),
        });
    }
    let verdict = verify_evidence(evidence, now_secs)?;
    appraise(&verdict, policy)?;
    check_binding(&verdict, expected_report_data)?;
    Ok(verdict)
}

/// Bytes as lowercase hex strings in JSON.
mod hex_serde {
    use serde::{Serializer, ser::SerializeSeq};

    pub fn bytes<T: AsRef<[u8]>, S: Serializer>(bytes: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn list<T: AsRef<[u8]>, S: Serializer>(items: &[T], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(items.len()))?;
        for item in items {
            seq.serialize_element(&hex::encode(item))?;
        }
        seq.end()
    }
}
