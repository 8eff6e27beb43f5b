//! `phala attest verify` through the real binary, on the real SGX and TDX samples of
//! `crates/attestation/testdata` (dcap-qvl's, MIT).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// 2025-07-01T00:00:00Z: inside both samples' collateral windows (see
/// crates/attestation/tests/common/mod.rs for the dates).
const AT: &str = "1751328000";
/// 2025-08-01T00:00:00Z: after every nextUpdate of both collaterals.
const AFTER_EXPIRY: &str = "1754006400";
const SGX_MR_ENCLAVE: &str = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb";
const TDX_MR_TD: &str = "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7";

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../attestation/testdata")
        .join(name)
}

fn phala(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_phala"))
        .args(args)
        .output()
        .expect("phala runs")
}

fn verify(quote: &Path, collateral: &str, extra: &[&str]) -> std::process::Output {
    let collateral = testdata(collateral);
    let mut args = vec![
        "attest",
        "verify",
        "--quote",
        quote.to_str().unwrap(),
        "--collateral",
        collateral.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    phala(&args)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn sgx_sample_verifies() {
    let out = verify(
        &testdata("sgx_quote"),
        "sgx_quote_collateral.json",
        &["--at", AT],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("MRENCLAVE    {SGX_MR_ENCLAVE}")),
        "{stdout}"
    );
    assert!(
        stdout.contains("ConfigurationAndSWHardeningNeeded"),
        "{stdout}"
    );
    assert!(stdout.contains("confidence   3 of 5"), "{stdout}");
    assert!(
        stdout.contains("INTEL-SA-00289, INTEL-SA-00615"),
        "{stdout}"
    );
    assert!(
        stdout.contains("report data names identity key pha1"),
        "{stdout}"
    );
}

#[test]
fn hex_tdx_quote_verifies_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let hex_quote = dir.path().join("tdx_quote.hex");
    let raw = std::fs::read(testdata("tdx_quote")).unwrap();
    std::fs::write(&hex_quote, format!("0x{}\n", hex::encode(raw))).unwrap();
    let out = verify(
        &hex_quote,
        "tdx_quote_collateral.json",
        &["--at", AT, "--json"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["verdict"]["kind"], "tdx");
    assert_eq!(json["verdict"]["measurement"], TDX_MR_TD);
    assert_eq!(json["verdict"]["tcb_status"], "UpToDate");
    assert_eq!(json["verdict"]["confidence"], 5);
    assert!(
        json["identity_key"].as_str().unwrap().starts_with("pha1"),
        "{json}"
    );
}

#[test]
fn tampered_quote_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tampered = dir.path().join("sgx_quote");
    let mut quote = std::fs::read(testdata("sgx_quote")).unwrap();
    quote[48 + 64] ^= 1; // first byte of MRENCLAVE
    std::fs::write(&tampered, quote).unwrap();
    let out = verify(&tampered, "sgx_quote_collateral.json", &["--at", AT]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("signature is invalid"), "{stderr}");
}

#[test]
fn expired_collateral_is_refused() {
    let out = verify(
        &testdata("sgx_quote"),
        "sgx_quote_collateral.json",
        &["--at", AFTER_EXPIRY],
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("QE identity expired at 2025-07-19T10:01:18Z"),
        "{stderr}"
    );
}

#[test]
fn binding_to_other_keys_is_reported() {
    // The sample's report data is "Hello, world!", which binds no worker's keys.
    let zero = "00".repeat(32);
    let out = verify(
        &testdata("sgx_quote"),
        "sgx_quote_collateral.json",
        &[
            "--at",
            AT,
            "--ecdh",
            &zero,
            "--genesis",
            &zero,
            "--freshness",
            "1",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stdout).contains("binding      NO"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("binds other keys"),
        "{}",
        text(&out.stderr)
    );
}
