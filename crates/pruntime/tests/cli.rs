//! The `pruntime` binary's command line.

use std::process::Command;

/// The insecure simulated TEE is never a silent default: the operator names the TEE.
#[test]
fn the_tee_must_be_named() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_pruntime"))
        .args(["--data-dir", &dir.path().display().to_string()])
        .args(["--anchor", "anchor.json"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--tee"), "{stderr}");
    assert!(
        !dir.path().join("keys.sealed").exists(),
        "nothing was created"
    );
}
