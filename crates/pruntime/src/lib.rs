//! pRuntime: the program that runs inside a worker's TEE.
//!
//! It trusts only what it can verify: finalized chain data through its [`light`] client, and
//! its own sealed state. It generates its identity and ECDH keys inside ([`runtime`]), proves
//! them to the chain with TEE evidence ([`tee`]), and in gatekeeper mode creates and hands out
//! the network's keys ([`keys`]). The HTTP API ([`server`]) is how pherry feeds it.

pub mod api;
pub mod client;
pub mod contracts;
pub mod keys;
pub mod light;
pub mod query;
pub mod runtime;
pub mod seal;
pub mod server;
pub mod tee;

pub use runtime::{Options, Pruntime, PruntimeError};
