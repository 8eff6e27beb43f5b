//! How long verifying one real quote takes (what a registration costs the chain's state
//! transition): the SGX and TDX samples, each verified `ITERATIONS` times after a warm-up.
//!
//! `cargo bench -p phala-attestation` (no criterion: it prints mean, p50 and p99).

use phala_attestation::verify_evidence;
use phala_types::registry::Evidence;
use std::time::Instant;

const ITERATIONS: usize = 200;
const WARM_UP: usize = 10;
/// 2025-07-01T00:00:00Z, inside both samples' collateral windows (see tests/common/mod.rs).
const AT: u64 = 1_751_328_000;

fn main() {
    let cases = [
        (
            "sgx",
            Evidence::SgxDcap {
                quote: include_bytes!("../testdata/sgx_quote").to_vec().into(),
                collateral: include_bytes!("../testdata/sgx_quote_collateral.json")
                    .to_vec()
                    .into(),
            },
        ),
        (
            "tdx",
            Evidence::Tdx {
                quote: include_bytes!("../testdata/tdx_quote").to_vec().into(),
                collateral: include_bytes!("../testdata/tdx_quote_collateral.json")
                    .to_vec()
                    .into(),
            },
        ),
    ];
    println!("verify_evidence, {ITERATIONS} iterations after {WARM_UP} warm-up runs:");
    for (name, evidence) in &cases {
        for _ in 0..WARM_UP {
            verify_evidence(evidence, AT).expect("the sample verifies");
        }
        let mut micros: Vec<f64> = (0..ITERATIONS)
            .map(|_| {
                let start = Instant::now();
                let verdict = verify_evidence(evidence, AT).expect("the sample verifies");
                let elapsed = start.elapsed();
                std::hint::black_box(verdict);
                elapsed.as_secs_f64() * 1e6
            })
            .collect();
        micros.sort_by(f64::total_cmp);
        let mean = micros.iter().sum::<f64>() / micros.len() as f64;
        let percentile =
            |p: f64| micros[((micros.len() as f64 * p).ceil() as usize).saturating_sub(1)];
        println!(
            "  {name}: mean {mean:>8.0} µs   p50 {:>8.0} µs   p99 {:>8.0} µs   ({:.0} quotes/s)",
            percentile(0.50),
            percentile(0.99),
            1e6 / mean
        );
    }
}
