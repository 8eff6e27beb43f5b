//! pRuntime: the program that runs inside a worker's TEE.
//!
//! It trusts only what it can verify: finalized chain data through its [`light`] client, and
//! its own sealed state. It generates its identity and ECDH keys inside ([`runtime`]), proves
//! them to the chain with TEE evidence ([`tee`]), and in gatekeeper mode creates and hands out
//! the network's keys ([`keys`]). The HTTP API ([`server`], its types in `phala_api::pruntime`)
//! is how pherry feeds it. It links no HTTP client and no node RPC code: only the I/O-free
//! `phala-api` wire types and checks.

pub mod contracts;
pub mod keys;
pub mod light;
pub mod query;
pub mod runtime;
pub mod seal;
pub mod server;
pub mod tee;

pub use runtime::{Options, Pruntime, PruntimeError};

/// Fixtures for fuzzing and tests: never built into the `pruntime` binary.
#[cfg(feature = "mocks")]
pub mod mocks {
    use crate::{
        contracts::{Contracts, Instance},
        query::QueryView,
    };
    use phala_types::contracts::ContractId;
    use std::sync::Arc;

    /// A worker's query view holding one code-less contract `id` (its key derived from `id`),
    /// so that a query reaches the signature check and decryption.
    pub fn query_view(id: ContractId) -> QueryView {
        let vm = Arc::new(phala_vm::Vm::new().expect("the VM starts"));
        let mut contracts = Contracts::new(vm);
        contracts.instances.insert(id, Instance::bare(id, id, 0));
        QueryView::new(contracts, phala_crypto::Keypair::generate(), 10, 0)
    }
}

/// The trusted core's boundary, checked on its manifest: no HTTP client, no node RPC code, no
/// node (ARCHITECTURE.md, "Boundaries").
#[cfg(test)]
mod boundary {
    const FORBIDDEN: &[&str] = &[
        "phala-client",
        "phala-node",
        "pherry",
        "jsonrpsee",
        "reqwest",
    ];

    #[test]
    fn the_enclave_program_links_no_http_client_and_no_node_code() {
        let manifest = include_str!("../Cargo.toml");
        let dependencies = manifest
            .split("[dependencies]")
            .nth(1)
            .and_then(|rest| rest.split("\n[").next())
            .expect("a [dependencies] table");
        for line in dependencies.lines() {
            let name = line.split(['=', '.', ' ']).next().unwrap_or_default();
            assert!(!FORBIDDEN.contains(&name), "pRuntime depends on {name}");
        }
    }
}
