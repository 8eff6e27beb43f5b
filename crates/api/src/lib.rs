//! The wire between the node, the pRuntime and clients, and the checks each side makes on it.
//!
//! Everything here is pure: no sockets, files, clocks or async. The pRuntime (the trusted
//! core) links this crate and nothing that speaks HTTP; `phala-client` wraps it in HTTP
//! clients; the node serves its types.
//!
//! - [`rpc`]: the node's JSON-RPC types, with state proofs in wire form.
//! - [`params`]: the node's RPC params, decoded and bounded before any work.
//! - [`pruntime`]: the pRuntime's HTTP API types and its trust anchor.
//! - [`query`]: the encrypted command and query format, signing payloads and receipts.
//! - [`verify`]: finality certificates against the group key, state proofs against roots.
//! - [`receipt`]: whether a query receipt is good, on proven chain records.

pub mod params;
pub mod pruntime;
pub mod query;
pub mod receipt;
pub mod rpc;
mod verify;

pub use verify::{
    TrustedChain, VerifyError, verify_account, verify_certificate, verify_finalization,
    verify_headers, verify_values,
};

/// This crate's boundary, checked on its manifest and sources: nothing that does I/O.
#[cfg(test)]
mod boundary {
    const FORBIDDEN_CRATES: &[&str] = &["reqwest", "jsonrpsee", "tokio", "axum", "hyper"];
    const FORBIDDEN_CALLS: &[&str] = &["std::fs", "std::net", "SystemTime", "Instant::now"];
    const SOURCES: &[&str] = &[
        include_str!("params.rs"),
        include_str!("pruntime.rs"),
        include_str!("query.rs"),
        include_str!("receipt.rs"),
        include_str!("rpc.rs"),
        include_str!("verify.rs"),
    ];

    #[test]
    fn the_wire_crate_does_no_io() {
        let manifest = include_str!("../Cargo.toml");
        for line in manifest.lines() {
            let name = line.split(['=', '.', ' ']).next().unwrap_or_default();
            assert!(
                !FORBIDDEN_CRATES.contains(&name),
                "phala-api depends on {name}"
            );
        }
        for source in SOURCES {
            for call in FORBIDDEN_CALLS {
                assert!(!source.contains(call), "phala-api uses {call}");
            }
        }
    }
}
