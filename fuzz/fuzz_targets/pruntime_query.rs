//! Any bytes as a `POST /query`, `/session` or `/session/query` body, against a worker that
//! runs contract `[7; 32]`: refused with an error (malformed, bad signature, undecryptable,
//! stale, unknown contract), never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use phala_api::query::{QueryRequest, SessionQuery, session_query_hash};
use phala_pruntime::{mocks, query::QueryView};
use std::sync::LazyLock;

static VIEW: LazyLock<QueryView> = LazyLock::new(|| mocks::query_view([7; 32]));

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = serde_json::from_slice::<QueryRequest>(data) {
        let _ = VIEW.answer(&request);
        let _ = VIEW.open_session(&request);
    }
    if let Ok(query) = serde_json::from_slice::<SessionQuery>(data) {
        let _ = session_query_hash(&query);
    }
});
