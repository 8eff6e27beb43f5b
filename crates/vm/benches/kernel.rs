//! Contract execution against native code: the kernels of `contracts/kernel/src/kernels.rs`
//! run natively (this file includes that source) and inside the VM as the committed `kernel`
//! contract, as a metered command (what the chain's gas pays for) and as a query (epoch bound,
//! no gas accounting). Both are built with opt-level 3 and for the same instructions: the VM
//! compiles for baseline x86-64 (`Cpu::Baseline`), as rustc does for the native side by
//! default; the goal is at most 2x native. The last column is the command again on a VM that
//! uses every extension of this CPU (`Cpu::Host`, what workers run).
//!
//! `cargo bench -p phala-vm --bench kernel` (prints the median of each and the ratio).

#[path = "../../../contracts/kernel/src/kernels.rs"]
mod kernels;

use phala_vm::{Call, Cpu, Entry, Vm};
use std::{
    collections::BTreeMap,
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant},
};

const KERNEL_WASM: &[u8] = include_bytes!("../../../contracts/wasm/kernel.wasm");
/// Each case runs for about this long (after a warm-up of a tenth of it).
const BUDGET: Duration = Duration::from_secs(2);

struct Case {
    input: &'static str,
    native: fn() -> u64,
}

fn main() {
    let cases = [
        Case {
            input: "matmul 64",
            native: || u64::from(kernels::matmul(black_box(64))),
        },
        Case {
            input: "matmul 160",
            native: || u64::from(kernels::matmul(black_box(160))),
        },
        Case {
            input: "mix 65536 16",
            native: || kernels::mix(black_box(65_536), black_box(16)),
        },
        Case {
            input: "matmul 1",
            native: || u64::from(kernels::matmul(black_box(1))),
        },
    ];
    // `cargo bench -p phala-vm --bench kernel -- matmul` runs the cases whose input contains
    // "matmul"; an exact input runs that case alone.
    let filter = std::env::args()
        .skip(1)
        .find(|arg| !arg.starts_with("--"))
        .unwrap_or_default();
    let vm = Vm::for_cpu(Cpu::Baseline).expect("the VM starts");
    let host_vm = Vm::new().expect("the VM starts");
    let code = vm.load(KERNEL_WASM).expect("the kernel contract loads");
    host_vm
        .load(KERNEL_WASM)
        .expect("the kernel contract loads");
    let state: Arc<BTreeMap<Vec<u8>, Vec<u8>>> = Arc::new(BTreeMap::new());
    println!(
        "{:<14} {:>12} {:>12} {:>8} {:>12} {:>8} {:>14} {:>12} {:>8}",
        "kernel",
        "native",
        "command",
        "ratio",
        "query",
        "ratio",
        "gas (command)",
        "host CPU",
        "ratio"
    );
    let exact = cases.iter().any(|case| case.input == filter);
    let selected = cases.iter().filter(|case| {
        if exact {
            case.input == filter
        } else {
            case.input.contains(&filter)
        }
    });
    for case in selected {
        let expected = (case.native)();
        let call = |entry| Call {
            entry,
            contract: [1; 32],
            caller: [2; 32],
            height: 1,
            time_ms: 0,
            input: case.input.as_bytes().to_vec(),
            fuel: 100_000_000_000,
            random_seed: [3; 32],
        };
        let query = || {
            let outcome = vm
                .call(&code, state.clone(), call(Entry::Query))
                .expect("the query runs");
            assert_eq!(outcome.output, expected.to_string().into_bytes());
        };
        let mut gas = 0;
        let command = |vm: &Vm| {
            let outcome = vm
                .call(&code, state.clone(), call(Entry::Command))
                .expect("the command runs");
            assert_eq!(outcome.writes.len(), 1, "the command stores its result");
            outcome.gas_used
        };
        let native = median(|| {
            black_box((case.native)());
        });
        let metered = median(|| gas = command(&vm));
        let unmetered = median(query);
        let host = median(|| assert_eq!(command(&host_vm), gas, "the same gas"));
        println!(
            "{:<14} {:>12} {:>12} {:>7.2}x {:>12} {:>7.2}x {:>14} {:>12} {:>7.2}x",
            case.input,
            show(native),
            show(metered),
            metered.as_secs_f64() / native.as_secs_f64(),
            show(unmetered),
            unmetered.as_secs_f64() / native.as_secs_f64(),
            gas,
            show(host),
            host.as_secs_f64() / native.as_secs_f64()
        );
    }
}

/// The median duration of `run`, repeated for about `BUDGET` after a warm-up.
fn median(mut run: impl FnMut()) -> Duration {
    let warm_up = Instant::now();
    while warm_up.elapsed() < BUDGET / 10 {
        run();
    }
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < BUDGET || samples.len() < 5 {
        let one = Instant::now();
        run();
        samples.push(one.elapsed());
    }
    samples.sort();
    samples[samples.len() / 2]
}

fn show(duration: Duration) -> String {
    let micros = duration.as_secs_f64() * 1e6;
    if micros >= 1_000.0 {
        format!("{:.2} ms", micros / 1_000.0)
    } else {
        format!("{micros:.1} µs")
    }
}
