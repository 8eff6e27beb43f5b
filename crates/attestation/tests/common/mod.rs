//! The real quotes in `testdata/` (dcap-qvl's samples) and times inside and outside their
//! collateral's validity windows.
#![allow(dead_code)]

use phala_types::registry::Evidence;

/// 2025-07-01T00:00:00Z: inside the validity window of both `sgx_quote_collateral.json` and
/// `tdx_quote_collateral.json`. The windows are the intersection of every item's dates:
/// - SGX: TCB info 2025-06-19T10:56:11Z..2025-07-19T10:56:11Z, QE identity
///   2025-06-19T10:01:18Z..2025-07-19T10:01:18Z, PCK CRL 2025-06-19T10:23:18Z..2025-07-19T10:23:18Z,
///   root CA CRL 2025-03-20T11:21:57Z..2026-04-03T11:21:57Z: valid from 2025-06-19T10:56:11Z
///   through 2025-07-19T10:01:18Z.
/// - TDX: TCB info 2025-06-19T10:16:03Z..2025-07-19T10:16:03Z, QE identity
///   2025-06-19T10:32:27Z..2025-07-19T10:32:27Z, PCK CRL 2025-06-19T10:00:35Z..2025-07-19T10:00:35Z,
///   same root CA CRL: valid from 2025-06-19T10:32:27Z to 2025-07-19T10:00:35Z.
pub const AT: u64 = 1_751_328_000;
/// 2025-08-01T00:00:00Z: after every nextUpdate of both collaterals.
pub const AFTER_EXPIRY: u64 = 1_754_006_400;
/// 2025-06-01T00:00:00Z: before both collaterals were issued.
pub const BEFORE_ISSUE: u64 = 1_748_736_000;
/// 2025-07-19T10:05:00Z: the TDX collateral's PCK CRL (nextUpdate 10:00:35) has expired, its
/// TCB info and QE identity (10:16:03, 10:32:27) have not.
pub const TDX_CRL_ONLY_EXPIRED: u64 = 1_752_919_500;
/// 2026-03-01T00:00:00Z: inside `tdx_quote_outdated_collateral.json`'s window
/// (2026-02-18T10:58:51Z to 2026-03-20T10:41:15Z, its PCK CRL's nextUpdate).
pub const OUTDATED_AT: u64 = 1_772_323_200;
/// 2026-10-20T00:00:00Z: inside `tdx_quote_td15ex_collateral.json`'s window
/// (2026-10-08T00:28:26Z, its PCK CRL's thisUpdate, to 2026-11-06T23:45:11Z, its QE identity's
/// nextUpdate).
pub const TD15EX_AT: u64 = 1_792_454_400;

pub const SGX_QUOTE: &[u8] = include_bytes!("../../testdata/sgx_quote");
pub const SGX_COLLATERAL: &[u8] = include_bytes!("../../testdata/sgx_quote_collateral.json");
pub const TDX_QUOTE: &[u8] = include_bytes!("../../testdata/tdx_quote");
pub const TDX_COLLATERAL: &[u8] = include_bytes!("../../testdata/tdx_quote_collateral.json");
pub const TDX_OUTDATED_QUOTE: &[u8] = include_bytes!("../../testdata/tdx_quote_outdated");
pub const TDX_OUTDATED_COLLATERAL: &[u8] =
    include_bytes!("../../testdata/tdx_quote_outdated_collateral.json");
pub const TD15EX_QUOTE: &[u8] = include_bytes!("../../testdata/tdx_quote_td15ex");
pub const TD15EX_COLLATERAL: &[u8] =
    include_bytes!("../../testdata/tdx_quote_td15ex_collateral.json");

/// The SGX sample's measurements.
pub const SGX_MR_ENCLAVE: &str = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb";
pub const SGX_MR_SIGNER: &str = "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6";
/// The TDX sample's MRTD and RTMR0-3.
pub const TDX_MR_TD: &str = "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7";
pub const TDX_RTMRS: [&str; 4] = [
    "44c0197b39157fdd7a4dcc44767f9d6b0bb3977c7a8e347b8492f827fe9d9e5c48aca29b220b80b6a540cf994b9bc9c0",
    "0084452c01668329d4bc06acdf58a7205c26743304509973949e5619bf81a6a7aea8c323c173019b3093d54e579e9378",
    "d833feef2cd945148aa38ead2c53e9b7f138190aaaebfc551dccd829fc207aa3ba80b70870d7330733642e01d48c3132",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
];

/// Offsets in the SGX sample (a v3 quote: 48-byte header, 384-byte enclave report, then the
/// 4-byte auth data length and the auth data, which starts with the ISV report signature).
pub const SGX_MR_ENCLAVE_AT: usize = 48 + 64;
pub const SGX_REPORT_DATA_AT: usize = 48 + 320;
pub const SGX_SIGNATURE_AT: usize = 48 + 384 + 4;
/// Where the SGX sample's certification data starts (its type, length, then the PEM chain):
/// after the signature (64), attestation key (64), QE report (384), QE report signature (64)
/// and the QE auth data (2 + 32).
pub const SGX_CERT_CHAIN_AT: usize = SGX_SIGNATURE_AT + 64 + 64 + 384 + 64 + 2 + 32;
/// Offset of MRTD in the TDX sample (v4: header, then TEE_TCB_SVN, MRSEAM, MRSIGNERSEAM,
/// SEAMATTRIBUTES, TDATTRIBUTES, XFAM).
pub const TDX_MR_TD_AT: usize = 48 + 16 + 48 + 48 + 8 + 8 + 8;
pub const TDX_SIGNATURE_AT: usize = 48 + 584 + 4;

pub fn sgx(quote: &[u8], collateral: &[u8]) -> Evidence {
    Evidence::SgxDcap {
        quote: quote.to_vec().into(),
        collateral: collateral.to_vec().into(),
    }
}

pub fn tdx(quote: &[u8], collateral: &[u8]) -> Evidence {
    Evidence::Tdx {
        quote: quote.to_vec().into(),
        collateral: collateral.to_vec().into(),
    }
}

/// A copy of `bytes` with the byte at `at` flipped.
pub fn flipped(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut copy = bytes.to_vec();
    copy[at] ^= 0x01;
    copy
}

pub fn hex32(text: &str) -> [u8; 32] {
    hex::decode(text).unwrap().try_into().unwrap()
}

pub fn hex48(text: &str) -> [u8; 48] {
    hex::decode(text).unwrap().try_into().unwrap()
}
