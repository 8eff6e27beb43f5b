mod common;
use common::*;
#[test]
fn explore() {
    let mut ok = vec![];
    for at in 0..SGX_QUOTE.len() {
        if phala_attestation::verify_evidence(&sgx(&flipped(SGX_QUOTE, at), SGX_COLLATERAL), AT).is_ok() { ok.push(at); }
    }
    println!("{} malleable: {:?}", ok.len(), ok);
    for &at in ok.iter().take(20) { println!("{at}: {:?}", String::from_utf8_lossy(&SGX_QUOTE[at.saturating_sub(10)..(at+10).min(SGX_QUOTE.len())])); }
}
