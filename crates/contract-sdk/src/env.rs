//! What a call knows about its context, and its public effects.

use crate::{host, Address};

/// The account that sent this command or query (the deployer during `init`).
pub fn caller() -> Address {
    host::caller()
}

/// This contract's id.
pub fn contract_id() -> Address {
    host::contract_id()
}

/// The height of the block holding the command (for a query: the worker's latest block).
pub fn block_height() -> u64 {
    host::block_height()
}

/// That block's timestamp in milliseconds since the Unix epoch.
pub fn block_time() -> u64 {
    host::block_time()
}

/// Fills `out` with random bytes: the same on every worker in commands (secret, derived from
/// the contract key), truly random in queries.
pub fn random_bytes(out: &mut [u8]) {
    host::random(out)
}

/// A random `u64` (see [`random_bytes`]).
pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    random_bytes(&mut bytes);
    u64::from_le_bytes(bytes)
}

/// A public event, recorded on chain. Never put secrets in events.
pub fn emit_event(event: &[u8]) {
    host::emit_event(event)
}

/// A public message the chain re-publishes to every worker as `contract/<id>/<topic>`.
pub fn send_message(topic: &[u8], payload: &[u8]) {
    host::send_message(topic, payload)
}

/// A debug line in the worker's log (dev networks).
pub fn log(line: &str) {
    host::log(line)
}
