//! `phala attest`: checks TEE evidence offline, exactly as the chain will when a worker
//! registers with it.

use anyhow::{Context as _, bail};
use clap::Subcommand;
use phala_attestation::{TeeDetails, Verdict, check_binding, quote_kind, verify_evidence};
use phala_types::registry::{Evidence, TeeKind, report_data};
use serde_json::json;
use std::{
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

/// `phala attest ...`.
#[derive(Subcommand)]
pub enum AttestCommand {
    /// Verifies an SGX or TDX DCAP quote against Intel's collateral and prints what it proves.
    Verify {
        /// The quote: raw bytes, or hex text (an optional 0x prefix and whitespace allowed).
        #[arg(long)]
        quote: PathBuf,
        /// Intel's collateral for the quote, as dcap-qvl's QuoteCollateralV3 JSON.
        #[arg(long)]
        collateral: PathBuf,
        /// Verify as of this Unix time in seconds (default: now).
        #[arg(long)]
        at: Option<u64>,
        /// The worker's x25519 ECDH key (hex) the report data should bind.
        #[arg(long, requires_all = ["genesis", "freshness"])]
        ecdh: Option<String>,
        /// The chain's genesis hash (hex) the report data should bind.
        #[arg(long, requires_all = ["ecdh", "freshness"])]
        genesis: Option<String>,
        /// The chain height the report data should bind.
        #[arg(long, requires_all = ["ecdh", "genesis"])]
        freshness: Option<u64>,
    },
}

/// Runs an `attest` subcommand; `as_json` prints one JSON object instead of text.
pub fn run(command: AttestCommand, as_json: bool) -> anyhow::Result<()> {
    match command {
        AttestCommand::Verify {
            quote,
            collateral,
            at,
            ecdh,
            genesis,
            freshness,
        } => {
            let binding = match (ecdh, genesis, freshness) {
                (Some(ecdh), Some(genesis), Some(freshness)) => Some(Binding {
                    ecdh: parse_hex::<32>(&ecdh).context("--ecdh")?,
                    genesis: parse_hex::<32>(&genesis).context("--genesis")?,
                    freshness,
                }),
                _ => None,
            };
            verify(&quote, &collateral, at, binding.as_ref(), as_json)
        }
    }
}

/// The keys the report data is expected to bind, besides the identity key it names.
struct Binding {
    ecdh: [u8; 32],
    genesis: [u8; 32],
    freshness: u64,
}

fn verify(
    quote_path: &Path,
    collateral_path: &Path,
    at: Option<u64>,
    binding: Option<&Binding>,
    as_json: bool,
) -> anyhow::Result<()> {
    let quote = read_quote(quote_path)?;
    let collateral = std::fs::read(collateral_path)
        .with_context(|| format!("cannot read {}", collateral_path.display()))?;
    let now = match at {
        Some(at) => at,
        None => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("the clock is before 1970")?
            .as_secs(),
    };
    let evidence = match quote_kind(&quote)? {
        TeeKind::Tdx => Evidence::Tdx {
            quote: quote.into(),
            collateral: collateral.into(),
        },
        _ => Evidence::SgxDcap {
            quote: quote.into(),
            collateral: collateral.into(),
        },
    };
    let verdict = verify_evidence(&evidence, now).context("the quote is refused")?;
    let identity = verdict.identity_key();
    // Whether the report data binds exactly the given keys, with the identity key it names.
    let bound = binding.map(|b| {
        let expected = report_data(&identity, &b.ecdh, &b.genesis, b.freshness);
        check_binding(&verdict, &expected)
    });

    if as_json {
        let mut out = json!({
            "verified_at": now,
            "verdict": verdict,
            "identity_key": identity.to_string(),
        });
        if let Some(bound) = &bound {
            out["binding"] = match bound {
                Ok(()) => json!({ "binds": true }),
                Err(error) => json!({ "binds": false, "reason": error.to_string() }),
            };
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_verdict(&verdict, now);
        println!("report data names identity key {identity}");
        match &bound {
            Some(Ok(())) => println!("binding      the report data binds exactly these keys"),
            Some(Err(error)) => println!("binding      NO: {error}"),
            None => {}
        }
    }
    if let Some(Err(error)) = bound {
        bail!("{error}");
    }
    Ok(())
}

fn print_verdict(verdict: &Verdict, now: u64) {
    println!("verified     {} quote, as of Unix time {now}", verdict.kind);
    match &verdict.details {
        TeeDetails::Sgx(sgx) => {
            println!("MRENCLAVE    {}", hex::encode(sgx.mr_enclave));
            println!("MRSIGNER     {}", hex::encode(sgx.mr_signer));
            println!("ISV product  {}   ISV SVN {}", sgx.isv_prod_id, sgx.isv_svn);
        }
        TeeDetails::Tdx(tdx) => {
            println!("MRTD         {}", hex::encode(tdx.mr_td));
            for (index, rtmr) in tdx.rtmrs.iter().enumerate() {
                println!("RTMR{index}        {}", hex::encode(rtmr));
            }
        }
        TeeDetails::Simulated => {
            println!(
                "measurement  {} (simulated)",
                hex::encode(&verdict.measurement)
            );
        }
    }
    println!("TCB status   {}", verdict.tcb_status);
    println!("confidence   {} of 5", verdict.confidence);
    let advisories = if verdict.advisory_ids.is_empty() {
        "none".to_string()
    } else {
        verdict.advisory_ids.join(", ")
    };
    println!("advisories   {advisories}");
    println!("report data  {}", hex::encode(verdict.report_data));
}

/// Reads a quote file, raw or hex. A raw quote's first byte is its version (3, 4 or 5), never
/// a printable character, so a file that is all hex digits (after an optional `0x` and
/// whitespace) is hex text, and anything else is raw bytes.
fn read_quote(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return Ok(bytes);
    };
    let text = text.trim();
    let text = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    let digits: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return hex::decode(&digits)
            .with_context(|| format!("{} is odd-length hex", path.display()));
    }
    Ok(bytes)
}

fn parse_hex<const N: usize>(text: &str) -> anyhow::Result<[u8; N]> {
    let text = text.strip_prefix("0x").unwrap_or(text);
    let bytes = hex::decode(text).context("not hex")?;
    let len = bytes.len();
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("{len} bytes, expected {N}"))
}
