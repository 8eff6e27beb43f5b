//! The chain's state machine: modules of one shape ([`module`]) over a key-value state, executed
//! deterministically block by block. It knows nothing of consensus, storage or networking;
//! the node feeds it blocks and commits the changes it returns.

pub mod balances;
pub mod commitment;
pub mod config;
pub mod contracts;
mod error;
pub mod module;
pub mod mq;
pub mod registry;
mod runtime;
pub mod state;
pub mod weights;

pub use error::TxError;
/// Transaction and outbox roots (with the wire types, since block decoding checks them).
pub use phala_types::merkle;
pub use runtime::{BlockContext, Executed, InvalidBlock, Outcome, Runtime, failure_record};
