//! The chain node: consensus wiring, the ledger that executes blocks, the mempool, the chain
//! spec with its genesis dealer, and the JSON-RPC server. `phala-node` (main.rs) is the binary;
//! the simulation tests drive the same `engine::start_validator` on the deterministic runtime.

pub mod application;
pub mod certify;
pub mod contract_rpc;
pub mod engine;
pub mod follower;
pub mod gossip;
pub mod history;
pub mod ledger;
pub mod mempool;
pub mod relay_rpc;
pub mod rpc;
pub mod rpc_budget;
pub mod service;
pub mod spec;
