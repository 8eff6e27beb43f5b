//! pherry's command line refuses bad input with a clear reason instead of relaying as nobody.
//! (Also makes `cargo test` build the `pherry` binary that the end-to-end tests start.)

use std::process::Command;

fn pherry(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pherry"))
        .args(args)
        .output()
        .expect("pherry runs")
}

#[test]
fn an_operator_is_required() {
    let output = pherry(&[
        "--node",
        "http://127.0.0.1:1",
        "--pruntime",
        "http://127.0.0.1:1",
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--operator-key FILE or --operator-dev NAME"),
        "{stderr}"
    );
}

#[test]
fn an_unreadable_operator_key_is_refused() {
    let output = pherry(&["--operator-key", "/nonexistent/operator.json"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/operator.json"), "{stderr}");
}

#[test]
fn a_key_file_and_a_dev_name_are_exclusive() {
    let output = pherry(&["--operator-key", "k.json", "--operator-dev", "alice"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot be used with"));
}
