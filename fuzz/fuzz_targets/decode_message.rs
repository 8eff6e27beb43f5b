//! Any bytes given to the message-queue decoders either fail to decode or are the canonical
//! encoding of the message they decode to. The same input is tried as both message kinds.

#![no_main]

use commonware_codec::{Copying, DecodeExt, Encode};
use libfuzzer_sys::fuzz_target;
use phala_chain::merkle;
use phala_types::{DownwardMessage, UpwardMessage};

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = UpwardMessage::decode(Copying(data)) {
        assert_eq!(
            &message.encode()[..],
            data,
            "non-canonical upward message encoding"
        );
        let _ = message.signing_payload();
    }
    if let Ok(message) = DownwardMessage::decode(Copying(data)) {
        assert_eq!(
            &message.encode()[..],
            data,
            "non-canonical downward message encoding"
        );
        let _ = merkle::message_leaf(&message);
    }
});
