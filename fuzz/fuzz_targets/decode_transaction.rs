//! Any bytes given to the transaction decoder either fail to decode or are the canonical
//! encoding of what they decode to (no malleability: one transaction, one encoding, one hash).

#![no_main]

use commonware_codec::{Copying, DecodeExt, Encode};
use libfuzzer_sys::fuzz_target;
use phala_types::SignedTransaction;

fuzz_target!(|data: &[u8]| {
    if let Ok(stx) = SignedTransaction::decode(Copying(data)) {
        assert_eq!(
            &stx.encode()[..],
            data,
            "non-canonical transaction encoding"
        );
        let _ = stx.hash();
    }
});
