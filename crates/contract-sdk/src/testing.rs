//! A mock host for native unit tests: set the caller and block, call a contract's entry points
//! with the host's semantics (a failed call leaves storage unchanged; a query's writes are
//! discarded), and inspect storage, events and messages.

use crate::{Address, Contract};
use std::cell::RefCell;
use std::collections::BTreeMap;

/// Everything the mock host holds.
#[derive(Default, Clone)]
pub struct MockEnv {
    pub storage: BTreeMap<Vec<u8>, Vec<u8>>,
    pub caller: Address,
    pub contract: Address,
    pub height: u64,
    pub time_ms: u64,
    pub input: Vec<u8>,
    pub output: Vec<u8>,
    pub events: Vec<Vec<u8>>,
    pub messages: Vec<(Vec<u8>, Vec<u8>)>,
    pub logs: Vec<String>,
    random_counter: u64,
}

thread_local! {
    static ENV: RefCell<MockEnv> = RefCell::new(MockEnv::default());
}

/// Runs `f` on the mock environment.
pub fn with_env<R>(f: impl FnOnce(&mut MockEnv) -> R) -> R {
    ENV.with(|env| f(&mut env.borrow_mut()))
}

/// Starts from an empty environment.
pub fn reset() {
    with_env(|env| *env = MockEnv::default());
}

/// Sets the block the next calls see.
pub fn set_block(height: u64, time_ms: u64) {
    with_env(|env| {
        env.height = height;
        env.time_ms = time_ms;
    });
}

/// A deterministic test account.
pub fn account(n: u8) -> Address {
    [n; 32]
}

/// Calls `init` as `caller`; on error the storage is restored.
pub fn call_init<C: Contract>(caller: Address, input: &str) -> Result<(), String> {
    transactional(caller, input, |input| C::init(input).map(|_| Vec::new())).map(|_| ())
}

/// Calls `command` as `caller`; on error the storage is restored.
pub fn call_command<C: Contract>(caller: Address, input: &str) -> Result<(), String> {
    transactional(caller, input, |input| C::command(input).map(|_| Vec::new())).map(|_| ())
}

/// Calls `query` as `caller` and returns its answer as text; its writes are discarded.
pub fn call_query<C: Contract>(caller: Address, input: &str) -> Result<String, String> {
    let saved = with_env(|env| env.clone());
    let result = transactional(caller, input, C::query);
    with_env(|env| {
        env.storage = saved.storage;
        env.events = saved.events;
        env.messages = saved.messages;
    });
    result.map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

fn transactional(
    caller: Address,
    input: &str,
    call: impl FnOnce(&[u8]) -> Result<Vec<u8>, String>,
) -> Result<Vec<u8>, String> {
    let saved = with_env(|env| {
        env.caller = caller;
        env.input = input.as_bytes().to_vec();
        env.clone()
    });
    let result = call(input.as_bytes());
    if result.is_err() {
        with_env(|env| *env = saved);
    }
    result
}

/// The mock behind the host calls.
pub(crate) mod host {
    use super::with_env;
    use crate::Address;

    pub fn input() -> Vec<u8> {
        with_env(|env| env.input.clone())
    }

    pub fn output(bytes: &[u8]) {
        with_env(|env| env.output = bytes.to_vec())
    }

    pub fn fail(message: &str) -> ! {
        panic!("contract failed: {}", message)
    }

    pub fn storage_get(key: &[u8]) -> Option<Vec<u8>> {
        with_env(|env| env.storage.get(key).cloned())
    }

    pub fn storage_set(key: &[u8], value: &[u8]) {
        with_env(|env| env.storage.insert(key.to_vec(), value.to_vec()));
    }

    pub fn storage_remove(key: &[u8]) {
        with_env(|env| env.storage.remove(key));
    }

    pub fn caller() -> Address {
        with_env(|env| env.caller)
    }

    pub fn contract_id() -> Address {
        with_env(|env| env.contract)
    }

    pub fn block_height() -> u64 {
        with_env(|env| env.height)
    }

    pub fn block_time() -> u64 {
        with_env(|env| env.time_ms)
    }

    pub fn random(out: &mut [u8]) {
        with_env(|env| {
            for byte in out.iter_mut() {
                env.random_counter = env
                    .random_counter
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                *byte = (env.random_counter >> 56) as u8;
            }
        })
    }

    pub fn emit_event(bytes: &[u8]) {
        with_env(|env| env.events.push(bytes.to_vec()))
    }

    pub fn send_message(topic: &[u8], payload: &[u8]) {
        with_env(|env| env.messages.push((topic.to_vec(), payload.to_vec())))
    }

    pub fn log(line: &str) {
        with_env(|env| env.logs.push(line.to_string()))
    }
}
