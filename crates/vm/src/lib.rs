//! The contract VM: WebAssembly on wasmtime (Cranelift), configured so that every worker of a
//! cluster computes the same result from the same command, and no contract can hurt the worker.
//!
//! - Deterministic: canonical NaNs, no threads, no relaxed SIMD, no other non-deterministic
//!   proposal; time and randomness only through the host calls, which the caller makes
//!   deterministic for commands (see [`Call::random_seed`]).
//! - Bounded: fuel metering (the gas of commands), an epoch deadline for queries (wall clock;
//!   each on its own engine so code carries only its own checks),
//!   memory, stack, table and instance limits, size limits on every host call; call depth by
//!   a counter instrumented into the module ([`depth`]), the same on every machine.
//! - Transactional: a call returns its writes; a failed, trapped or out-of-gas call returns an
//!   error and no writes, so the contract's state is unchanged.
//!
//! The host interface is documented in `docs/contracts.md`.

pub mod depth;
mod host;

use sha2::{Digest as _, Sha256};
use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use thiserror::Error;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module, OptLevel,
    PoolingAllocationConfig, Store, Trap,
};

pub use host::Writes;

/// Limits every contract lives under (documented in `docs/contracts.md`). Those that shape
/// what goes on chain are the wire limits of `phala_types::contracts`, so a call's report
/// always fits an upward message.
pub mod limits {
    use phala_types::contracts as wire;

    /// Largest contract code accepted.
    pub const MAX_CODE: usize = wire::MAX_CODE;
    /// Largest linear memory of a contract.
    pub const MAX_MEMORY: usize = 16 * 1024 * 1024;
    /// Deepest stack a call may reach, in wasm values: the deterministic rule
    /// ([`crate::depth`]).
    pub const MAX_STACK_HEIGHT: u32 = 16 * 1024;
    /// The native stack wasmtime may use: a backstop above what [`MAX_STACK_HEIGHT`] allows
    /// (64 bytes per counted value, where a compiled frame takes at most 8-16 per value plus
    /// its fixed overhead), and within the 2 MiB of the threads calls run on.
    pub const MAX_STACK: usize = 1024 * 1024;
    /// Longest storage key.
    pub const MAX_KEY: usize = 1024;
    /// Largest storage value.
    pub const MAX_VALUE: usize = 64 * 1024;
    /// Largest input of a call.
    pub const MAX_INPUT: usize = wire::MAX_INPUT;
    /// Largest output of a call.
    pub const MAX_OUTPUT: usize = 64 * 1024;
    /// Most events plus messages one call may emit.
    pub const MAX_EMITS: usize = wire::MAX_REPORT_EMITS;
    /// Longest message topic.
    pub const MAX_TOPIC: usize = wire::MAX_MESSAGE_TOPIC;
    /// Largest event or message payload.
    pub const MAX_EMIT: usize = wire::MAX_EMIT;
    /// Most bytes of events, topics and message payloads one call may emit in all.
    pub const MAX_EMIT_TOTAL: usize = wire::MAX_EMIT_TOTAL;
    /// Most keys one call may write (set or remove); the write set is held in memory until
    /// the call ends, in queries too.
    pub const MAX_WRITES: usize = 1_024;
    /// Most bytes (keys and values) one call may write.
    pub const MAX_WRITE_BYTES: usize = 1024 * 1024;
    /// Host-call budget of a query, in the units commands pay as gas: queries have no fuel
    /// (their loops are bounded by time), but their host calls cost the worker all the same.
    pub const QUERY_HOST_BUDGET: u64 = 10_000_000;
    /// Wall-clock bound of a query.
    pub const QUERY_TIMEOUT_MS: u64 = 100;
    /// Queries running at once in one VM; more are refused as busy. Commands never wait for
    /// them: they run on their own engine with its own [`COMMAND_SLOTS`].
    pub const MAX_CONCURRENT_QUERIES: usize = 32;
    /// Instance slots for commands and `init` (a worker executes them one at a time).
    pub const COMMAND_SLOTS: usize = 8;
}

/// The interval of the epoch ticker that bounds queries in wall-clock time.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// SHA-256 of a contract's code: its identity on chain and in the module cache.
pub type CodeHash = [u8; 32];

/// The hash the chain and the VM name code by.
pub fn code_hash(code: &[u8]) -> CodeHash {
    Sha256::digest(code).into()
}

/// Which entry point to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Init,
    Command,
    Query,
}

impl Entry {
    fn export(self) -> &'static str {
        match self {
            Entry::Init => "init",
            Entry::Command => "handle_command",
            Entry::Query => "handle_query",
        }
    }
}

/// Everything one call of a contract sees besides its state.
#[derive(Debug, Clone)]
pub struct Call {
    pub entry: Entry,
    pub contract: [u8; 32],
    /// The account that sent the command or query (the deployer for `init`).
    pub caller: [u8; 32],
    pub height: u64,
    /// Block timestamp in milliseconds.
    pub time_ms: u64,
    pub input: Vec<u8>,
    /// Fuel for `init` and commands (their gas limit); queries are bounded by
    /// [`limits::QUERY_TIMEOUT_MS`] instead and ignore it.
    pub fuel: u64,
    /// Seed of the `random` host call: derived from the contract key and the command's position
    /// for commands (deterministic, secret), fresh randomness for queries.
    pub random_seed: [u8; 32],
}

/// What a successful call produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub output: Vec<u8>,
    pub writes: Writes,
    pub events: Vec<Vec<u8>>,
    pub messages: Vec<(Vec<u8>, Vec<u8>)>,
    pub gas_used: u64,
}

/// A contract's state: what its storage calls read.
pub trait State: Send + Sync {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;
}

impl State for BTreeMap<Vec<u8>, Vec<u8>> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        BTreeMap::get(self, key).cloned()
    }
}

/// Why code could not be loaded or a call did not succeed. A call that fails changes nothing.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum VmError {
    #[error("code of {size} bytes exceeds the {limit}-byte limit")]
    CodeTooLarge { size: usize, limit: usize },
    #[error("invalid contract module: {0}")]
    InvalidModule(String),
    #[error("no code loaded with hash {0}")]
    UnknownCode(String),
    #[error("input of {size} bytes exceeds the {limit}-byte limit")]
    InputTooLarge { size: usize, limit: usize },
    #[error("out of gas (limit {limit})")]
    OutOfGas { limit: u64 },
    #[error("the query ran longer than {0} ms")]
    Timeout(u64),
    #[error("the contract refused: {0}")]
    Refused(String),
    #[error("the contract broke a host rule: {0}")]
    HostRule(String),
    #[error("the contract trapped: {0}")]
    Trap(String),
    #[error("the call nested deeper than the stack limit ({limit} values)")]
    CallTooDeep { limit: u32 },
    #[error("{0} queries are already running; ask again shortly")]
    Busy(usize),
}

/// A call that did not succeed: why, and the gas it burned before it stopped, which a command
/// pays all the same (a contract cannot be made to work for free by failing late).
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{error}")]
pub struct Failure {
    pub error: VmError,
    pub gas_used: u64,
}

impl From<VmError> for Failure {
    /// A failure before any code ran: no gas used.
    fn from(error: VmError) -> Self {
        Failure { error, gas_used: 0 }
    }
}

/// Compiled code ready to instantiate, once per engine.
struct Loaded {
    metered: InstancePre<host::HostState>,
    timed: InstancePre<host::HostState>,
}

/// An engine with the host interface linked into it.
struct Runtime {
    engine: Engine,
    linker: Linker<host::HostState>,
}

impl Runtime {
    fn new(bound: Bound, cpu: Cpu) -> Result<Self, VmError> {
        let engine =
            Engine::new(&config(bound, cpu)).map_err(|e| VmError::InvalidModule(e.to_string()))?;
        if bound == Bound::Time {
            start_ticker(&engine);
        }
        let mut linker = Linker::new(&engine);
        host::link(&mut linker).map_err(|e| VmError::InvalidModule(e.to_string()))?;
        Ok(Runtime { engine, linker })
    }

    fn compile(&self, code: &[u8]) -> Result<InstancePre<host::HostState>, VmError> {
        let module =
            Module::new(&self.engine, code).map_err(|e| VmError::InvalidModule(e.to_string()))?;
        for export in ["memory", "init", "handle_command", "handle_query"] {
            if module.get_export(export).is_none() {
                return Err(VmError::InvalidModule(format!("missing export `{export}`")));
            }
        }
        self.linker
            .instantiate_pre(&module)
            .map_err(|e| VmError::InvalidModule(format!("{e:#}")))
    }
}

/// What stops a runaway call. Each kind of call gets an engine compiled for its bound alone,
/// since every check the code carries costs time in every loop (both cost 1.8x → 2.2x native
/// on the matrix kernel, see benches/kernel.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    /// Fuel: deterministic, the gas of `init` and commands.
    Fuel,
    /// A wall-clock epoch deadline: queries, which need not agree across workers.
    Time,
}

/// The VM: an engine per [`Bound`], and the compiled modules by code hash.
pub struct Vm {
    metered: Runtime,
    timed: Runtime,
    modules: Mutex<HashMap<CodeHash, Arc<Loaded>>>,
    queries: AtomicUsize,
}

/// The instructions Cranelift may compile contracts to. Results and gas are the same either
/// way (fuel counts wasm operators, not machine instructions); only speed differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cpu {
    /// Every extension this machine has: the fastest code, what workers run.
    Host,
    /// Baseline x86-64 (SSE2, what `rustc` targets by default): for measuring the VM against
    /// native code built for the same instructions (`benches/kernel.rs`).
    Baseline,
}

/// Cranelift's x86-64 extension flags, all off for [`Cpu::Baseline`].
const X86_64_EXTENSIONS: [&str; 19] = [
    "has_sse3",
    "has_ssse3",
    "has_cmpxchg16b",
    "has_sse41",
    "has_sse42",
    "has_avx",
    "has_avx2",
    "has_fma",
    "has_avx_vnni",
    "has_avx512bitalg",
    "has_avx512dq",
    "has_avx512vl",
    "has_avx512vbmi",
    "has_avx512f",
    "has_avx512vnni",
    "has_popcnt",
    "has_bmi1",
    "has_bmi2",
    "has_lzcnt",
];

impl Vm {
    /// A VM with the deterministic configuration and a running epoch ticker, compiling for
    /// this machine's CPU.
    pub fn new() -> Result<Self, VmError> {
        Self::for_cpu(Cpu::Host)
    }

    /// A VM compiling for `cpu`.
    pub fn for_cpu(cpu: Cpu) -> Result<Self, VmError> {
        Ok(Vm {
            metered: Runtime::new(Bound::Fuel, cpu)?,
            timed: Runtime::new(Bound::Time, cpu)?,
            modules: Mutex::new(HashMap::new()),
            queries: AtomicUsize::new(0),
        })
    }

    /// Validates and compiles code (once per hash) and returns its hash.
    pub fn load(&self, code: &[u8]) -> Result<CodeHash, VmError> {
        let hash = code_hash(code);
        if self.is_loaded(&hash) {
            return Ok(hash);
        }
        let loaded = self.compile(code)?;
        self.lock().insert(hash, Arc::new(loaded));
        Ok(hash)
    }

    /// Whether code with this hash is compiled and cached.
    pub fn is_loaded(&self, hash: &CodeHash) -> bool {
        self.lock().contains_key(hash)
    }

    /// Queries running now (at most [`limits::MAX_CONCURRENT_QUERIES`]).
    pub fn queries_running(&self) -> usize {
        self.queries
            .load(Ordering::Acquire)
            .min(limits::MAX_CONCURRENT_QUERIES)
    }

    /// Runs one entry point of loaded code over `state`.
    pub fn call(
        &self,
        code: &CodeHash,
        state: Arc<dyn State>,
        call: Call,
    ) -> Result<Outcome, Failure> {
        let loaded = self
            .lock()
            .get(code)
            .cloned()
            .ok_or_else(|| VmError::UnknownCode(hex(code)))?;
        if call.input.len() > limits::MAX_INPUT {
            return Err(VmError::InputTooLarge {
                size: call.input.len(),
                limit: limits::MAX_INPUT,
            }
            .into());
        }
        let entry = call.entry;
        let _slot = match entry {
            Entry::Query => Some(QuerySlot::take(&self.queries)?),
            _ => None,
        };
        let fuel = call.fuel;
        if entry == Entry::Query {
            let mut store = Store::new(&self.timed.engine, host::HostState::new(state, call));
            store.limiter(|host| &mut host.limits);
            store.set_epoch_deadline(limits::QUERY_TIMEOUT_MS / EPOCH_TICK.as_millis() as u64);
            run(&mut store, &loaded.timed, entry)
                .map_err(|error| Failure::from(classify(error, limits::QUERY_HOST_BUDGET)))?;
            return Ok(store.into_data().into_outcome(0));
        }
        // Commands are bounded by fuel alone: a wall-clock bound would not be deterministic.
        let mut store = Store::new(&self.metered.engine, host::HostState::new(state, call));
        store.limiter(|host| &mut host.limits);
        store
            .set_fuel(fuel)
            .map_err(|e| VmError::Trap(e.to_string()))?;
        let result = run(&mut store, &loaded.metered, entry);
        let gas_used = fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        result.map_err(|error| Failure {
            error: classify(error, fuel),
            gas_used,
        })?;
        Ok(store.into_data().into_outcome(gas_used))
    }

    fn compile(&self, code: &[u8]) -> Result<Loaded, VmError> {
        if code.len() > limits::MAX_CODE {
            return Err(VmError::CodeTooLarge {
                size: code.len(),
                limit: limits::MAX_CODE,
            });
        }
        // Validated as uploaded, before instrumentation: an index that is out of range in the
        // original (say, to the global the counter becomes) must not turn valid by it.
        Module::validate(&self.metered.engine, code)
            .map_err(|e| VmError::InvalidModule(format!("{e:#}")))?;
        let code = depth::instrument(code)?;
        Ok(Loaded {
            metered: self.metered.compile(&code)?,
            timed: self.timed.compile(&code)?,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CodeHash, Arc<Loaded>>> {
        self.modules
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One of the [`limits::MAX_CONCURRENT_QUERIES`] query places, given back on drop.
struct QuerySlot<'a>(&'a AtomicUsize);

impl<'a> QuerySlot<'a> {
    fn take(running: &'a AtomicUsize) -> Result<Self, VmError> {
        let before = running.fetch_add(1, Ordering::AcqRel);
        let slot = QuerySlot(running);
        if before >= limits::MAX_CONCURRENT_QUERIES {
            return Err(VmError::Busy(before));
        }
        Ok(slot)
    }
}

impl Drop for QuerySlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn run(
    store: &mut Store<host::HostState>,
    pre: &InstancePre<host::HostState>,
    entry: Entry,
) -> wasmtime::Result<()> {
    let instance = pre.instantiate(&mut *store)?;
    let memory = instance
        .get_memory(&mut *store, "memory")
        .ok_or_else(|| wasmtime::Error::msg("export `memory` is not a memory"))?;
    store.data_mut().memory = Some(memory);
    let function = instance.get_typed_func::<(), ()>(&mut *store, entry.export())?;
    function.call(&mut *store, ()).map_err(|error| {
        if depth::exceeded(&instance, &mut *store) {
            wasmtime::Error::new(TooDeep)
        } else {
            error
        }
    })
}

/// A trap at the depth limit (see [`depth::exceeded`]).
#[derive(Debug, Error)]
#[error("call depth limit")]
struct TooDeep;

/// Turns a wasmtime error into what the caller is told.
fn classify(error: wasmtime::Error, fuel: u64) -> VmError {
    if let Some(host) = error.downcast_ref::<host::HostError>() {
        return match host {
            host::HostError::Refused(message) => VmError::Refused(message.clone()),
            host::HostError::Rule(message) => VmError::HostRule(message.clone()),
            host::HostError::OutOfGas => VmError::OutOfGas { limit: fuel },
        };
    }
    if error.is::<TooDeep>() {
        return VmError::CallTooDeep {
            limit: limits::MAX_STACK_HEIGHT,
        };
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => VmError::OutOfGas { limit: fuel },
        Some(Trap::Interrupt) => VmError::Timeout(limits::QUERY_TIMEOUT_MS),
        Some(trap) => VmError::Trap(trap.to_string()),
        None => VmError::Trap(format!("{error:#}")),
    }
}

/// Threads are compiled out (wasmtime's `threads` feature is off); everything else that could
/// differ between machines is switched off here.
fn config(bound: Bound, cpu: Cpu) -> Config {
    let mut config = Config::new();
    if cpu == Cpu::Baseline && cfg!(target_arch = "x86_64") {
        for flag in X86_64_EXTENSIONS {
            // SAFETY: turning an extension off only keeps Cranelift from emitting its
            // instructions; the code runs on any x86-64.
            unsafe {
                config.cranelift_flag_set(flag, "false");
            }
        }
    }
    config
        .consume_fuel(bound == Bound::Fuel)
        .epoch_interruption(bound == Bound::Time)
        .cranelift_nan_canonicalization(true)
        .cranelift_opt_level(OptLevel::Speed)
        .wasm_relaxed_simd(false)
        .wasm_multi_memory(false)
        .wasm_memory64(false)
        .wasm_wide_arithmetic(false)
        .wasm_custom_page_sizes(false)
        .max_wasm_stack(limits::MAX_STACK);
    // Instances come from a pool of pre-reserved slots, reset between calls. Each slot keeps
    // the default 4 GiB reservation, so memory accesses need no bounds checks. A slot's dirty
    // pages (found with PAGEMAP_SCAN) are reset in place up to 2 MiB instead of being unmapped,
    // so the next call takes no page faults: instantiation went from 24 to 13 µs (see
    // benches/kernel.rs, `matmul 1`) and at most 2 MiB stays resident per slot.
    let slots = match bound {
        Bound::Fuel => limits::COMMAND_SLOTS,
        Bound::Time => limits::MAX_CONCURRENT_QUERIES,
    } as u32;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_core_instances(slots)
        .total_memories(slots)
        .total_tables(slots)
        .max_memory_size(limits::MAX_MEMORY)
        .pagemap_scan(wasmtime::Enabled::Auto)
        .linear_memory_keep_resident(2 << 20)
        .table_keep_resident(1 << 16);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

/// Advances every engine's epoch on one background thread: a query's deadline counts ticks.
fn start_ticker(engine: &Engine) {
    static ENGINES: OnceLock<Mutex<Vec<wasmtime::EngineWeak>>> = OnceLock::new();
    let mut started = false;
    let engines = ENGINES.get_or_init(|| {
        started = true;
        Mutex::new(Vec::new())
    });
    engines
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(engine.weak());
    if started {
        std::thread::Builder::new()
            .name("vm-epoch".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(EPOCH_TICK);
                    let mut engines = engines.lock().unwrap_or_else(|p| p.into_inner());
                    engines.retain(|weak| match weak.upgrade() {
                        Some(engine) => {
                            engine.increment_epoch();
                            true
                        }
                        None => false,
                    });
                }
            })
            .ok();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
