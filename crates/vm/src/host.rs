//! The host side of interface `phala_v1`: what a contract may ask of the worker, each call
//! metered and bounded.

use crate::{Call, Entry, Outcome, State, limits};
use sha2::{Digest as _, Sha256};
use std::{collections::BTreeMap, sync::Arc};
use wasmtime::{Caller, Linker, Memory, StoreLimits, StoreLimitsBuilder};

/// A call's storage writes: `None` removes the key.
pub type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// The import module; its name carries the interface version.
const MODULE: &str = "phala_v1";

/// Fuel every host call costs, on top of its own.
const CALL_COST: u64 = 100;

/// A host call ended the contract's call.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HostError {
    /// The contract called `fail`.
    #[error("{0}")]
    Refused(String),
    /// The contract broke a limit or passed bad pointers.
    #[error("{0}")]
    Rule(String),
    #[error("out of gas")]
    OutOfGas,
}

type HostResult<T> = Result<T, wasmtime::Error>;

fn rule(message: impl Into<String>) -> wasmtime::Error {
    wasmtime::Error::new(HostError::Rule(message.into()))
}

/// What the store holds for one call.
pub(crate) struct HostState {
    pub(crate) memory: Option<Memory>,
    pub(crate) limits: StoreLimits,
    state: Arc<dyn State>,
    call: Call,
    writes: Writes,
    /// Bytes of keys and values in `writes` (bounded by `limits::MAX_WRITE_BYTES`).
    write_bytes: usize,
    /// What a query may still spend on host calls (`limits::QUERY_HOST_BUDGET`).
    query_budget: u64,
    output: Vec<u8>,
    events: Vec<Vec<u8>>,
    messages: Vec<(Vec<u8>, Vec<u8>)>,
    random_counter: u64,
}

impl HostState {
    pub(crate) fn new(state: Arc<dyn State>, call: Call) -> Self {
        HostState {
            memory: None,
            limits: StoreLimitsBuilder::new()
                .memory_size(limits::MAX_MEMORY)
                .memories(1)
                .tables(4)
                .table_elements(65_536)
                .instances(1)
                .trap_on_grow_failure(true)
                .build(),
            state,
            call,
            writes: Writes::new(),
            write_bytes: 0,
            query_budget: limits::QUERY_HOST_BUDGET,
            output: Vec::new(),
            events: Vec::new(),
            messages: Vec::new(),
            random_counter: 0,
        }
    }

    pub(crate) fn into_outcome(self, gas_used: u64) -> Outcome {
        let query = self.call.entry == Entry::Query;
        Outcome {
            output: self.output,
            // A query's writes, events and messages are discarded: queries change nothing.
            writes: if query { Writes::new() } else { self.writes },
            events: if query { Vec::new() } else { self.events },
            messages: if query { Vec::new() } else { self.messages },
            gas_used,
        }
    }

    fn read(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.writes.get(key) {
            Some(written) => written.clone(),
            None => self.state.get(key),
        }
    }

    /// Adds a write to the call's write set, refusing one beyond its count or byte bound.
    fn write(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) -> HostResult<()> {
        let bytes = key.len() + value.as_ref().map_or(0, Vec::len);
        if self.writes.len() >= limits::MAX_WRITES && !self.writes.contains_key(&key) {
            return Err(rule(format!(
                "more than {} keys written in one call",
                limits::MAX_WRITES
            )));
        }
        if self.write_bytes + bytes > limits::MAX_WRITE_BYTES {
            return Err(rule(format!(
                "more than {} bytes written in one call",
                limits::MAX_WRITE_BYTES
            )));
        }
        self.write_bytes += bytes;
        self.writes.insert(key, value);
        Ok(())
    }

    /// Refuses an emission beyond the call's count or byte budget (so its report always fits
    /// one upward message).
    fn check_emit(&self, bytes: usize) -> HostResult<()> {
        if self.events.len() + self.messages.len() >= limits::MAX_EMITS {
            return Err(rule(format!(
                "more than {} events and messages in one call",
                limits::MAX_EMITS
            )));
        }
        let total: usize = self.events.iter().map(Vec::len).sum::<usize>()
            + self
                .messages
                .iter()
                .map(|(topic, payload)| topic.len() + payload.len())
                .sum::<usize>();
        if total + bytes > limits::MAX_EMIT_TOTAL {
            return Err(rule(format!(
                "more than {} bytes of events and messages in one call",
                limits::MAX_EMIT_TOTAL
            )));
        }
        Ok(())
    }
}

/// Takes `cost` fuel, or ends the call out of gas. Queries have no fuel (time bounds their
/// loops): their host calls draw on the query's own budget instead.
fn charge(caller: &mut Caller<'_, HostState>, cost: u64) -> HostResult<()> {
    if caller.data().call.entry == Entry::Query {
        let host = caller.data_mut();
        let cost = cost.saturating_add(CALL_COST);
        if host.query_budget < cost {
            host.query_budget = 0;
            return Err(wasmtime::Error::new(HostError::OutOfGas));
        }
        host.query_budget -= cost;
        return Ok(());
    }
    let fuel = caller.get_fuel()?;
    let cost = cost.saturating_add(CALL_COST);
    if fuel < cost {
        caller.set_fuel(0)?;
        return Err(wasmtime::Error::new(HostError::OutOfGas));
    }
    caller.set_fuel(fuel - cost)
}

fn memory(caller: &Caller<'_, HostState>) -> HostResult<Memory> {
    caller
        .data()
        .memory
        .ok_or_else(|| rule("the contract has no memory"))
}

/// Copies `len` bytes at `ptr` out of the contract's memory, refusing more than `limit`.
fn read_bytes(
    caller: &Caller<'_, HostState>,
    ptr: i32,
    len: i32,
    limit: usize,
    what: &str,
) -> HostResult<Vec<u8>> {
    let len = usize::try_from(len).map_err(|_| rule(format!("negative {what} length")))?;
    if len > limit {
        return Err(rule(format!("{what} of {len} bytes exceeds {limit}")));
    }
    let start = usize::try_from(ptr).map_err(|_| rule(format!("negative {what} pointer")))?;
    let data = memory(caller)?.data(caller);
    start
        .checked_add(len)
        .and_then(|end| data.get(start..end))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| rule(format!("{what} lies outside memory")))
}

fn write_bytes(caller: &mut Caller<'_, HostState>, ptr: i32, bytes: &[u8]) -> HostResult<()> {
    let start = usize::try_from(ptr).map_err(|_| rule("negative pointer"))?;
    let memory = memory(caller)?;
    memory
        .write(caller, start, bytes)
        .map_err(|_| rule("destination lies outside memory"))
}

/// Registers every import of `phala_v1`.
pub(crate) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    link_io(linker)?;
    link_storage(linker)?;
    link_context(linker)?;
    link_effects(linker)
}

fn link_io(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        MODULE,
        "input_len",
        |mut caller: Caller<'_, HostState>| -> HostResult<i32> {
            charge(&mut caller, 0)?;
            Ok(caller.data().call.input.len() as i32)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "input_read",
        |mut caller: Caller<'_, HostState>, dst: i32| -> HostResult<()> {
            let input = caller.data().call.input.clone();
            charge(&mut caller, input.len() as u64)?;
            write_bytes(&mut caller, dst, &input)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "output_write",
        |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| -> HostResult<()> {
            let output = read_bytes(&caller, ptr, len, limits::MAX_OUTPUT, "output")?;
            charge(&mut caller, output.len() as u64)?;
            caller.data_mut().output = output;
            Ok(())
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fail",
        |caller: Caller<'_, HostState>, ptr: i32, len: i32| -> HostResult<()> {
            let message = read_bytes(&caller, ptr, len, limits::MAX_OUTPUT, "error message")?;
            Err(wasmtime::Error::new(HostError::Refused(
                String::from_utf8_lossy(&message).into_owned(),
            )))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "log",
        |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| -> HostResult<()> {
            let line = read_bytes(&caller, ptr, len, limits::MAX_EMIT, "log line")?;
            charge(&mut caller, line.len() as u64)?;
            if cfg!(debug_assertions) {
                eprintln!("contract log: {}", String::from_utf8_lossy(&line));
            }
            Ok(())
        },
    )?;
    Ok(())
}

fn link_storage(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        MODULE,
        "storage_get",
        |mut caller: Caller<'_, HostState>,
         key_ptr: i32,
         key_len: i32,
         dst: i32,
         cap: i32|
         -> HostResult<i64> {
            let key = read_bytes(&caller, key_ptr, key_len, limits::MAX_KEY, "key")?;
            let Some(value) = caller.data().read(&key) else {
                charge(&mut caller, 1_000 + key.len() as u64)?;
                return Ok(-1);
            };
            charge(&mut caller, 1_000 + (key.len() + value.len()) as u64)?;
            let cap = usize::try_from(cap).map_err(|_| rule("negative buffer capacity"))?;
            let copied = value.len().min(cap);
            write_bytes(&mut caller, dst, &value[..copied])?;
            Ok(value.len() as i64)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "storage_set",
        |mut caller: Caller<'_, HostState>,
         key_ptr: i32,
         key_len: i32,
         value_ptr: i32,
         value_len: i32|
         -> HostResult<()> {
            let key = read_bytes(&caller, key_ptr, key_len, limits::MAX_KEY, "key")?;
            let value = read_bytes(&caller, value_ptr, value_len, limits::MAX_VALUE, "value")?;
            charge(&mut caller, 5_000 + 10 * (key.len() + value.len()) as u64)?;
            caller.data_mut().write(key, Some(value))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "storage_remove",
        |mut caller: Caller<'_, HostState>, key_ptr: i32, key_len: i32| -> HostResult<()> {
            let key = read_bytes(&caller, key_ptr, key_len, limits::MAX_KEY, "key")?;
            charge(&mut caller, 2_000 + key.len() as u64)?;
            caller.data_mut().write(key, None)
        },
    )?;
    Ok(())
}

fn link_context(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        MODULE,
        "caller",
        |mut caller: Caller<'_, HostState>, dst: i32| -> HostResult<()> {
            charge(&mut caller, 32)?;
            let who = caller.data().call.caller;
            write_bytes(&mut caller, dst, &who)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "contract_id",
        |mut caller: Caller<'_, HostState>, dst: i32| -> HostResult<()> {
            charge(&mut caller, 32)?;
            let id = caller.data().call.contract;
            write_bytes(&mut caller, dst, &id)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "block_height",
        |mut caller: Caller<'_, HostState>| -> HostResult<i64> {
            charge(&mut caller, 0)?;
            Ok(caller.data().call.height as i64)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "block_time",
        |mut caller: Caller<'_, HostState>| -> HostResult<i64> {
            charge(&mut caller, 0)?;
            Ok(caller.data().call.time_ms as i64)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "random",
        |mut caller: Caller<'_, HostState>, dst: i32, len: i32| -> HostResult<()> {
            let len = usize::try_from(len).map_err(|_| rule("negative random length"))?;
            if len > limits::MAX_VALUE {
                return Err(rule(format!(
                    "random of {len} bytes exceeds {}",
                    limits::MAX_VALUE
                )));
            }
            charge(&mut caller, len as u64)?;
            let bytes = random_bytes(caller.data_mut(), len);
            write_bytes(&mut caller, dst, &bytes)
        },
    )?;
    Ok(())
}

fn link_effects(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        MODULE,
        "emit_event",
        |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| -> HostResult<()> {
            let event = read_bytes(&caller, ptr, len, limits::MAX_EMIT, "event")?;
            charge(&mut caller, 2_000 + 10 * event.len() as u64)?;
            caller.data().check_emit(event.len())?;
            caller.data_mut().events.push(event);
            Ok(())
        },
    )?;
    linker.func_wrap(
        MODULE,
        "send_message",
        |mut caller: Caller<'_, HostState>,
         topic_ptr: i32,
         topic_len: i32,
         ptr: i32,
         len: i32|
         -> HostResult<()> {
            let topic = read_bytes(
                &caller,
                topic_ptr,
                topic_len,
                limits::MAX_TOPIC,
                "message topic",
            )?;
            let payload = read_bytes(&caller, ptr, len, limits::MAX_EMIT, "message")?;
            charge(
                &mut caller,
                2_000 + 10 * (topic.len() + payload.len()) as u64,
            )?;
            caller.data().check_emit(topic.len() + payload.len())?;
            caller.data_mut().messages.push((topic, payload));
            Ok(())
        },
    )?;
    Ok(())
}

/// SHA-256 in counter mode over the call's seed: deterministic for a deterministic seed.
fn random_bytes(host: &mut HostState, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    while out.len() < len {
        let block = Sha256::new()
            .chain_update(b"phala/contract-random/v1")
            .chain_update(host.call.random_seed)
            .chain_update(host.random_counter.to_be_bytes())
            .finalize();
        host.random_counter += 1;
        out.extend_from_slice(&block);
    }
    out.truncate(len);
    out
}
