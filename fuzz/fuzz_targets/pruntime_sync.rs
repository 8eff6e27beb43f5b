//! Any bytes as a `POST /sync` body: the pRuntime's light client decodes and verifies it
//! against a fixed trust anchor, refusing it with an error, never panicking.

#![no_main]

use libfuzzer_sys::fuzz_target;
use phala_api::pruntime::{SyncBatch, TrustAnchor};
use phala_pruntime::light::LightClient;
use phala_types::{Address, Destination};

fuzz_target!(|data: &[u8]| {
    let Ok(batch) = serde_json::from_slice::<SyncBatch>(data) else {
        return;
    };
    let anchor = TrustAnchor {
        chain_id: "fuzz".into(),
        genesis_hash: "11".repeat(32),
        // Any 96 bytes: certificates are checked against it, and refused.
        identity: "22".repeat(96),
        namespace: "33".repeat(8),
    };
    let light = LightClient::new(&anchor).expect("a well-formed anchor");
    let me = Address([4; 32]);
    let streams = [
        Destination::All,
        Destination::Worker(me),
        Destination::Cluster(0),
    ];
    let state = LightClient::initial("55".repeat(32), &streams);
    let _ = light.verify(&state, &me, &batch);
});
