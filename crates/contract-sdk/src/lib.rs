//! Write confidential contracts in Rust.
//!
//! A contract implements [`Contract`] and names its type in [`phala_contract!`]; built for
//! `wasm32-unknown-unknown` it exports the entry points the worker's VM calls (host interface
//! `phala_v1`, see `docs/contracts.md`). Built natively, the host is a mock ([`testing`]), so
//! contract logic is unit-tested with `cargo test` like any crate.
//!
//! The SDK has no dependencies, so contracts build with Debian's rustc 1.63.

pub mod address;
pub mod codec;
pub mod env;
mod host;
pub mod storage;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

/// An account: the 32 bytes of its ed25519 public key.
pub type Address = [u8; 32];

/// A contract's three entry points. An `Err` aborts the call: the worker keeps the state as it
/// was and the message goes back to the caller.
pub trait Contract {
    /// Runs once when the contract is instantiated; the caller is the deployer.
    fn init(input: &[u8]) -> Result<(), String>;
    /// Runs each command, in chain order, on every worker of the cluster.
    fn command(input: &[u8]) -> Result<(), String>;
    /// Answers a query; its storage writes are discarded.
    fn query(input: &[u8]) -> Result<Vec<u8>, String>;
}

/// Glue between the host's entry points and a [`Contract`] (used by [`phala_contract!`]).
pub mod entry {
    use super::{host, Contract};

    /// Calls `C::init` with the call's input.
    pub fn init<C: Contract>() {
        finish(C::init(&host::input()).map(|_| Vec::new()));
    }

    /// Calls `C::command` with the call's input.
    pub fn command<C: Contract>() {
        finish(C::command(&host::input()).map(|_| Vec::new()));
    }

    /// Calls `C::query` with the call's input.
    pub fn query<C: Contract>() {
        finish(C::query(&host::input()));
    }

    fn finish(result: Result<Vec<u8>, String>) {
        match result {
            Ok(output) => host::output(&output),
            Err(message) => host::fail(&message),
        }
    }
}

/// Exports `init`, `handle_command` and `handle_query` for a [`Contract`] type (on wasm32
/// only; natively, tests call the type through [`testing`]).
#[macro_export]
macro_rules! phala_contract {
    ($contract:ty) => {
        #[cfg(target_arch = "wasm32")]
        #[no_mangle]
        pub extern "C" fn init() {
            $crate::entry::init::<$contract>();
        }

        #[cfg(target_arch = "wasm32")]
        #[no_mangle]
        pub extern "C" fn handle_command() {
            $crate::entry::command::<$contract>();
        }

        #[cfg(target_arch = "wasm32")]
        #[no_mangle]
        pub extern "C" fn handle_query() {
            $crate::entry::query::<$contract>();
        }
    };
}
