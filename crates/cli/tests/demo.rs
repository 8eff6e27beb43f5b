//! The README's first command: `phala dev --demo` runs the confidential analytics demo on a
//! fresh local network and exits 0 only if every step did what it should.

use phala_cli::devnet::free_ports;
use std::process::Command;

#[test]
fn the_demo_runs_every_step_and_exits_zero() {
    let rpc = free_ports(1).to_string();
    let p2p = free_ports(1).to_string();
    let workers = free_ports(3).to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_phala"))
        .args(["dev", "--demo", "--validators", "1", "--workers", "2"])
        .args([
            "--rpc-port",
            &rpc,
            "--p2p-port",
            &p2p,
            "--worker-port",
            &workers,
        ])
        .output()
        .expect("phala runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        "count=4 sum=23100",
        "refused: not authorized to query aggregates",
        "refused: group rare has fewer than 3 participants",
        "a copy with one field changed is refused",
        "demo complete",
    ] {
        assert!(
            stdout.contains(expected),
            "missing `{expected}` in:\n{stdout}"
        );
    }
}
