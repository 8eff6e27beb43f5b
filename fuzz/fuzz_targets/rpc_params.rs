//! Any text as the params of every node RPC method: each decoder refuses it with an error or
//! returns values within the method's bounds; none panics.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        phala_api::params::decode_all(Some(text));
    }
});
