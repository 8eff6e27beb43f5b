//! Quote verification never panics: any bytes as an SGX or TDX quote, with the real sample
//! collateral or with fuzzed collateral, give a verdict or a clear error.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use phala_types::Evidence;

const SGX_COLLATERAL: &[u8] =
    include_bytes!("../../crates/attestation/testdata/sgx_quote_collateral.json");
const TDX_COLLATERAL: &[u8] =
    include_bytes!("../../crates/attestation/testdata/tdx_quote_collateral.json");
/// Inside the sample collateral's validity window.
const AT: u64 = 1_751_328_000;

fuzz_target!(|data: &[u8]| {
    let quote = Bytes::copy_from_slice(data);
    let split = data.len() / 2;
    for evidence in [
        Evidence::SgxDcap {
            quote: quote.clone(),
            collateral: Bytes::from_static(SGX_COLLATERAL),
        },
        Evidence::Tdx {
            quote: quote.clone(),
            collateral: Bytes::from_static(TDX_COLLATERAL),
        },
        Evidence::SgxDcap {
            quote: Bytes::copy_from_slice(&data[..split]),
            collateral: Bytes::copy_from_slice(&data[split..]),
        },
    ] {
        let _ = phala_attestation::verify_evidence(&evidence, AT);
    }
});
