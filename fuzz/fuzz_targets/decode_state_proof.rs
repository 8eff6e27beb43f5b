//! Any bytes given as a state proof (what `account`, `state_value(s)` and `stream_witness`
//! answers carry, hex-decoded) either fail to decode or are the canonical encoding of the proof
//! they decode to, and verifying a decoded proof never panics, whatever key and root.

#![no_main]

use libfuzzer_sys::fuzz_target;
use phala_chain::commitment::StateProof;
use phala_types::Digest;

fuzz_target!(|data: &[u8]| {
    let Some((&key_length, rest)) = data.split_first() else {
        return;
    };
    let (key, bytes) = rest.split_at(usize::from(key_length).min(rest.len()));
    if let Ok(proof) = StateProof::decode(bytes) {
        assert_eq!(proof.to_bytes(), bytes, "non-canonical state proof encoding");
        let _ = proof.verify(&Digest([0; 32]), key);
        let _ = proof.verify(&Digest([0xff; 32]), key);
    }
});
