//! The VM's promises: host calls behave as documented, and every hostile module ends in a clear
//! error with no writes.

use phala_vm::{Call, Entry, Outcome, Vm, VmError, limits};
use std::{collections::BTreeMap, sync::Arc};

/// A module with the required exports around the given body of `handle_command`.
fn module(command_body: &str, extra: &str) -> Vec<u8> {
    let text = format!(
        r#"(module
            (import "phala_v1" "storage_set" (func $set (param i32 i32 i32 i32)))
            (import "phala_v1" "storage_get" (func $get (param i32 i32 i32 i32) (result i64)))
            (import "phala_v1" "output_write" (func $out (param i32 i32)))
            (import "phala_v1" "fail" (func $fail (param i32 i32)))
            (import "phala_v1" "random" (func $random (param i32 i32)))
            (import "phala_v1" "caller" (func $caller (param i32)))
            (import "phala_v1" "emit_event" (func $event (param i32 i32)))
            (memory (export "memory") 1)
            (data (i32.const 0) "key")
            (data (i32.const 16) "value")
            (data (i32.const 32) "no, thank you")
            (func (export "init"))
            (func (export "handle_command") {command_body})
            (func (export "handle_query")
                ;; answers the stored value of "key"
                (drop (call $get (i32.const 0) (i32.const 3) (i32.const 100) (i32.const 64)))
                (call $out (i32.const 100) (i32.const 5)))
            {extra}
        )"#
    );
    wat::parse_str(text).expect("test module parses")
}

fn call(entry: Entry, fuel: u64) -> Call {
    Call {
        entry,
        contract: [1; 32],
        caller: [2; 32],
        height: 7,
        time_ms: 1_000,
        input: Vec::new(),
        fuel,
        random_seed: [3; 32],
    }
}

fn run(code: &[u8], entry: Entry, fuel: u64) -> Result<Outcome, VmError> {
    let vm = Vm::new().expect("vm");
    let hash = vm.load(code)?;
    let state: BTreeMap<Vec<u8>, Vec<u8>> = [(b"key".to_vec(), b"first".to_vec())].into();
    vm.call(&hash, Arc::new(state), call(entry, fuel))
        .map_err(|failure| failure.error)
}

const SET_KEY: &str = "(call $set (i32.const 0) (i32.const 3) (i32.const 16) (i32.const 5))";

#[test]
fn a_command_returns_its_writes_and_gas() {
    let outcome = run(&module(SET_KEY, ""), Entry::Command, 1_000_000).expect("runs");
    assert_eq!(
        outcome.writes.get(b"key".as_slice()),
        Some(&Some(b"value".to_vec()))
    );
    assert!(
        outcome.gas_used >= 5_000,
        "storage_set is charged: {}",
        outcome.gas_used
    );
}

#[test]
fn a_query_reads_state_and_its_writes_are_discarded() {
    let body = format!("(func $q {SET_KEY})");
    let outcome = run(&module("", &body), Entry::Query, 0).expect("runs");
    assert_eq!(outcome.output, b"first");
    assert!(outcome.writes.is_empty());
}

#[test]
fn a_refusal_carries_the_contract_message_and_no_writes() {
    let body = format!("{SET_KEY} (call $fail (i32.const 32) (i32.const 13))");
    let error = run(&module(&body, ""), Entry::Command, 1_000_000).unwrap_err();
    assert_eq!(error, VmError::Refused("no, thank you".into()));
}

#[test]
fn a_failed_command_still_reports_the_gas_it_burned() {
    // A loop of 10,000 iterations, then a storage write, then a refusal.
    let body = format!(
        "(local $i i32) (loop $spin (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br_if $spin (i32.lt_u (local.get $i) (i32.const 10000))))
         {SET_KEY} (call $fail (i32.const 32) (i32.const 13))"
    );
    let vm = Vm::new().expect("vm");
    let hash = vm.load(&module(&body, "")).expect("loads");
    let failure = vm
        .call(
            &hash,
            Arc::new(BTreeMap::new()),
            call(Entry::Command, 1_000_000),
        )
        .unwrap_err();
    assert_eq!(failure.error, VmError::Refused("no, thank you".into()));
    assert!(
        (40_000..1_000_000).contains(&failure.gas_used),
        "{}",
        failure.gas_used
    );
    // Out of gas burns the whole limit.
    let failure = vm
        .call(
            &hash,
            Arc::new(BTreeMap::new()),
            call(Entry::Command, 5_000),
        )
        .unwrap_err();
    assert_eq!(
        (failure.error, failure.gas_used),
        (VmError::OutOfGas { limit: 5_000 }, 5_000)
    );
}

#[test]
fn an_infinite_loop_runs_out_of_gas() {
    let body = format!("{SET_KEY} (loop $forever (br $forever))");
    let error = run(&module(&body, ""), Entry::Command, 1_000_000).unwrap_err();
    assert_eq!(error, VmError::OutOfGas { limit: 1_000_000 });
}

#[test]
fn an_infinite_loop_in_a_query_is_stopped() {
    let text = r#"(module
        (memory (export "memory") 1)
        (func (export "init")) (func (export "handle_command"))
        (func (export "handle_query") (loop $forever (br $forever))))"#;
    let error = run(&wat::parse_str(text).unwrap(), Entry::Query, 0).unwrap_err();
    assert_eq!(error, VmError::Timeout(100));
}

#[test]
fn queries_beyond_the_limit_are_refused_as_busy_and_commands_still_run() {
    let spin = r#"(module
        (import "phala_v1" "storage_set" (func $set (param i32 i32 i32 i32)))
        (memory (export "memory") 1)
        (data (i32.const 0) "key")
        (func (export "init"))
        (func (export "handle_command") (call $set (i32.const 0) (i32.const 3) (i32.const 0) (i32.const 3)))
        (func (export "handle_query") (loop $forever (br $forever))))"#;
    let vm = Arc::new(Vm::new().expect("vm"));
    let spinning = vm.load(&wat::parse_str(spin).unwrap()).expect("loads");
    let quick = vm.load(&module(SET_KEY, "")).expect("loads");
    let state: Arc<BTreeMap<Vec<u8>, Vec<u8>>> = Arc::new(BTreeMap::new());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Every place taken by a query that runs until its deadline, again and again.
    let threads: Vec<_> = (0..limits::MAX_CONCURRENT_QUERIES)
        .map(|_| {
            let (vm, state, stop) = (vm.clone(), state.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = vm.call(&spinning, state.clone(), call(Entry::Query, 0));
                }
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut busy = false;
    while !busy && std::time::Instant::now() < deadline {
        if vm.queries_running() < limits::MAX_CONCURRENT_QUERIES {
            std::thread::yield_now();
            continue;
        }
        busy = matches!(
            vm.call(&quick, state.clone(), call(Entry::Query, 0))
                .map_err(|failure| failure.error),
            Err(VmError::Busy(_))
        );
    }
    let command = vm.call(&spinning, state.clone(), call(Entry::Command, 1_000_000));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for thread in threads {
        thread.join().expect("no panic");
    }
    assert!(busy, "a query beyond the limit was never refused");
    let command = command.expect("a command runs while queries fill every place");
    assert_eq!(command.writes.len(), 1);
    // Once the queries are over, queries run again.
    assert!(vm.call(&quick, state, call(Entry::Query, 0)).is_ok());
}

#[test]
fn a_huge_allocation_traps() {
    let body = format!("{SET_KEY} (drop (memory.grow (i32.const 1000)))");
    let error = run(&module(&body, ""), Entry::Command, 1_000_000).unwrap_err();
    assert!(matches!(error, VmError::Trap(_)), "{error}");
    // Within the limit, growing works.
    let body = format!(
        "(if (i32.eq (memory.grow (i32.const 255)) (i32.const -1)) (then unreachable)) {SET_KEY}"
    );
    assert!(run(&module(&body, ""), Entry::Command, 1_000_000).is_ok());
}

#[test]
fn a_trap_is_reported() {
    let body = format!("{SET_KEY} unreachable");
    let error = run(&module(&body, ""), Entry::Command, 1_000_000).unwrap_err();
    assert!(
        matches!(&error, VmError::Trap(m) if m.contains("unreachable")),
        "{error}"
    );
}

#[test]
fn unbounded_recursion_stops_at_the_deterministic_depth_limit() {
    let extra = "(func $deep (param i32) (call $deep (i32.add (local.get 0) (i32.const 1))))";
    let error = run(
        &module("(call $deep (i32.const 0))", extra),
        Entry::Command,
        u64::MAX / 4,
    )
    .unwrap_err();
    assert_eq!(
        error,
        VmError::CallTooDeep {
            limit: limits::MAX_STACK_HEIGHT
        }
    );
}

/// Recursion `depth` calls deep through a function with `locals` i64 locals.
fn recursion(depth: u32, locals: usize) -> Vec<u8> {
    let declared = "(local i64)".repeat(locals);
    let extra = format!(
        "(func $down (param i32) {declared}
            (if (local.get 0) (then (call $down (i32.sub (local.get 0) (i32.const 1))))))"
    );
    module(&format!("(call $down (i32.const {depth}))"), &extra)
}

/// Whether a recursion succeeds is decided by the instrumented counter, in wasm values, not by
/// the native stack (whose use per frame depends on the machine and the build): the deepest
/// recursion that succeeds shrinks with the frame's declared size exactly as the counter
/// predicts, and one step deeper fails with the depth error, never a native stack overflow.
#[test]
fn call_depth_is_decided_by_the_counter_not_the_machine() {
    let deepest = |locals: usize| {
        let succeeds = |depth: u32| run(&recursion(depth, locals), Entry::Command, u64::MAX / 4);
        let (mut low, mut high) = (0u32, 1 << 20);
        while low + 1 < high {
            let middle = low + (high - low) / 2;
            match succeeds(middle) {
                Ok(_) => low = middle,
                Err(VmError::CallTooDeep { .. }) => high = middle,
                Err(other) => panic!("depth {middle} failed otherwise: {other}"),
            }
        }
        low
    };
    let small = deepest(0);
    let large = deepest(100);
    assert!(small > 1_000, "{small}");
    // Each frame of the large function counts 100 more values.
    let per_frame = |depth: u32| limits::MAX_STACK_HEIGHT / (depth + 1);
    let extra = per_frame(large) as i64 - per_frame(small) as i64;
    assert!((98..=102).contains(&extra), "{small} vs {large}: {extra}");
    // The same limits on a second VM (a fresh engine and compilation).
    assert_eq!(deepest(0), small);
}

#[test]
fn pointers_outside_memory_break_a_host_rule() {
    let body = "(call $set (i32.const 65530) (i32.const 100) (i32.const 0) (i32.const 1))";
    let error = run(&module(body, ""), Entry::Command, 1_000_000).unwrap_err();
    assert!(matches!(error, VmError::HostRule(_)), "{error}");
    let body = "(call $set (i32.const 0) (i32.const -1) (i32.const 0) (i32.const 1))";
    let error = run(&module(body, ""), Entry::Command, 1_000_000).unwrap_err();
    assert!(matches!(error, VmError::HostRule(_)), "{error}");
}

#[test]
fn too_many_events_break_a_host_rule() {
    let extra = "(func $many (local i32) (loop $l (call $event (i32.const 0) (i32.const 3)) (local.set 0 (i32.add (local.get 0) (i32.const 1))) (br_if $l (i32.lt_u (local.get 0) (i32.const 17)))))";
    let error = run(&module("(call $many)", extra), Entry::Command, 10_000_000).unwrap_err();
    assert!(matches!(error, VmError::HostRule(_)), "{error}");
}

#[test]
fn invalid_modules_are_refused_at_load() {
    let vm = Vm::new().unwrap();
    assert!(matches!(
        vm.load(b"not wasm"),
        Err(VmError::InvalidModule(_))
    ));
    let missing =
        wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "init")))"#).unwrap();
    assert!(
        matches!(vm.load(&missing), Err(VmError::InvalidModule(m)) if m.contains("handle_command"))
    );
    let unknown_import = wat::parse_str(
        r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1) (func (export "init")) (func (export "handle_command")) (func (export "handle_query")))"#,
    )
    .unwrap();
    assert!(matches!(
        vm.load(&unknown_import),
        Err(VmError::InvalidModule(_))
    ));
    let huge = vec![0u8; limits::MAX_CODE + 1];
    assert!(matches!(vm.load(&huge), Err(VmError::CodeTooLarge { .. })));
    let threads = wat::parse_str(
        r#"(module (memory (export "memory") 1 1 shared) (func (export "init")) (func (export "handle_command")) (func (export "handle_query")))"#,
    );
    if let Ok(threads) = threads {
        assert!(matches!(vm.load(&threads), Err(VmError::InvalidModule(_))));
    }
}

#[test]
fn nans_are_canonical() {
    // A NaN with a payload, divided: without canonicalisation the payload can leak through and
    // differ between machines.
    let body = r#"(i32.store (i32.const 48)
                    (i32.reinterpret_f32 (f32.div (f32.reinterpret_i32 (i32.const 0x7fa00001)) (f32.const 1))))
                  (call $set (i32.const 0) (i32.const 3) (i32.const 48) (i32.const 4))"#;
    let outcome = run(&module(body, ""), Entry::Command, 1_000_000).unwrap();
    let bits = outcome.writes[b"key".as_slice()].clone().unwrap();
    assert_eq!(u32::from_le_bytes(bits.try_into().unwrap()), 0x7fc0_0000);
}

#[test]
fn command_randomness_follows_the_seed() {
    let body = "(call $random (i32.const 48) (i32.const 40)) (call $set (i32.const 0) (i32.const 3) (i32.const 48) (i32.const 40))";
    let code = module(body, "");
    let vm = Vm::new().unwrap();
    let hash = vm.load(&code).unwrap();
    let draw = |seed: [u8; 32]| {
        let mut c = call(Entry::Command, 1_000_000);
        c.random_seed = seed;
        vm.call(&hash, Arc::new(BTreeMap::new()), c).unwrap().writes[b"key".as_slice()].clone()
    };
    assert_eq!(draw([3; 32]), draw([3; 32]));
    assert_ne!(draw([3; 32]), draw([4; 32]));
}

#[test]
fn an_oversized_input_is_refused() {
    let vm = Vm::new().unwrap();
    let hash = vm.load(&module("", "")).unwrap();
    let mut c = call(Entry::Command, 1_000);
    c.input = vec![0; limits::MAX_INPUT + 1];
    assert!(matches!(
        vm.call(&hash, Arc::new(BTreeMap::new()), c)
            .map_err(|failure| failure.error),
        Err(VmError::InputTooLarge { .. })
    ));
}

#[test]
fn emitting_more_bytes_than_a_report_carries_breaks_a_host_rule() {
    // 16 events of 4 KiB each: within the count and the per-event size, over the total.
    let extra = "(func $big (local i32) (loop $l (call $event (i32.const 0) (i32.const 4096)) (local.set 0 (i32.add (local.get 0) (i32.const 1))) (br_if $l (i32.lt_u (local.get 0) (i32.const 16)))))";
    let error = run(&module("(call $big)", extra), Entry::Command, 100_000_000).unwrap_err();
    assert!(
        matches!(&error, VmError::HostRule(m) if m.contains("bytes of events")),
        "{error}"
    );
    // Exactly the total is fine.
    let extra = "(func $big (local i32) (loop $l (call $event (i32.const 0) (i32.const 4096)) (local.set 0 (i32.add (local.get 0) (i32.const 1))) (br_if $l (i32.lt_u (local.get 0) (i32.const 4)))))";
    let outcome = run(&module("(call $big)", extra), Entry::Command, 100_000_000).unwrap();
    assert_eq!(outcome.events.len() * 4096, limits::MAX_EMIT_TOTAL);
}

/// A query that writes 64 KiB values in a loop: its write set was unbounded (a worker grew by
/// hundreds of MB under 32 such queries, at no cost to the caller).
#[test]
fn a_query_cannot_grow_its_write_set_without_bound() {
    let extra = r#"(func $flood (local i32)
        (loop $l
            (i32.store (i32.const 0) (local.get 0))
            (call $set (i32.const 0) (i32.const 4) (i32.const 1024) (i32.const 65536))
            (local.set 0 (i32.add (local.get 0) (i32.const 1)))
            (br $l)))"#;
    let code = module_with_query("(call $flood)", extra);
    // The query's host-call budget (10 gas a byte written) ends it before 1 MiB is held.
    let error = run(&code, Entry::Query, 0).unwrap_err();
    assert!(matches!(error, VmError::OutOfGas { .. }), "{error}");
    // A command with all the gas it wants meets the write-set bound itself.
    let error = run(&code, Entry::Command, u64::MAX / 2).unwrap_err();
    assert!(
        matches!(&error, VmError::HostRule(m) if m.contains("bytes written")),
        "{error}"
    );
}

/// A query that loops over cheap host calls is stopped by its host-call budget, not only by
/// the wall clock. (Lookups of a missing 1 KiB key: about 5,000 of them spend the budget in a
/// few milliseconds, far inside the clock's 100 ms even on a loaded machine.)
#[test]
fn a_querys_host_calls_are_metered() {
    let extra = r#"(func $spin
        (loop $l (drop (call $get (i32.const 0) (i32.const 1024) (i32.const 0) (i32.const 0)))
        (br $l)))"#;
    let error = run(&module_with_query("(call $spin)", extra), Entry::Query, 0).unwrap_err();
    assert!(
        matches!(error, VmError::OutOfGas { limit } if limit == limits::QUERY_HOST_BUDGET),
        "{error}"
    );
}

/// A module whose `handle_query` and `handle_command` both run `body`.
fn module_with_query(body: &str, extra: &str) -> Vec<u8> {
    let text = format!(
        r#"(module
            (import "phala_v1" "storage_set" (func $set (param i32 i32 i32 i32)))
            (import "phala_v1" "random" (func $random (param i32 i32)))
            (import "phala_v1" "storage_get" (func $get (param i32 i32 i32 i32) (result i64)))
            (memory (export "memory") 2)
            (func (export "init"))
            (func (export "handle_command") {body})
            (func (export "handle_query") {body})
            {extra}
        )"#
    );
    wat::parse_str(text).expect("test module parses")
}

/// A module that writes a global it does not have is invalid as uploaded, even though, once
/// instrumented, that index would name the depth counter (which it could then reset to recurse
/// until the native stack decides): it is refused before instrumentation.
#[test]
fn a_module_cannot_reach_the_depth_counter() {
    let extra = "(global $mine (mut i32) (i32.const 0))
        (func $reset (global.set 1 (i32.const 0)))";
    let error = run(&module("(call $reset)", extra), Entry::Command, 1_000_000).unwrap_err();
    assert!(matches!(error, VmError::InvalidModule(_)), "{error}");
}

/// Compiling for baseline x86-64 changes the machine code, never the outcome: the same
/// output, writes and gas as on this CPU's every extension (what the kernel benchmark relies
/// on to compare the VM with baseline native code).
#[test]
fn baseline_cpu_code_gives_the_same_outcome_and_gas() {
    let kernel = include_bytes!("../../../contracts/wasm/kernel.wasm");
    let state: Arc<BTreeMap<Vec<u8>, Vec<u8>>> = Arc::new(BTreeMap::new());
    let outcome = |cpu| {
        let vm = Vm::for_cpu(cpu).expect("vm");
        let hash = vm.load(kernel).expect("loads");
        let mut call = call(Entry::Command, 10_000_000_000);
        call.input = b"mix 4096 4".to_vec();
        let outcome = vm.call(&hash, state.clone(), call).expect("runs");
        (outcome.output, outcome.writes, outcome.gas_used)
    };
    assert_eq!(
        outcome(phala_vm::Cpu::Baseline),
        outcome(phala_vm::Cpu::Host)
    );
}
