//! Any bytes given to the block decoder either fail to decode (within the codec's limits) or are
//! the canonical encoding of the block they decode to, whose body its header commits to.

#![no_main]

use commonware_codec::{Copying, DecodeExt, Encode};
use libfuzzer_sys::fuzz_target;
use phala_chain::merkle;
use phala_types::Block;

fuzz_target!(|data: &[u8]| {
    if let Ok(block) = Block::decode(Copying(data)) {
        assert_eq!(&block.encode()[..], data, "non-canonical block encoding");
        // A decoded block's body is the one its header commits to.
        assert_eq!(merkle::tx_root(&block.transactions), block.header.tx_root);
    }
});
