#!/usr/bin/env bash
# Tests and builds the example contracts in contracts/ to WebAssembly, reproducibly, with
# Debian's rustc 1.63 (`apt-get install rustc cargo libstd-rust-dev-wasm32 lld`), and writes
# contracts/wasm/<name>.wasm. With --check it builds into a temporary directory and fails if a
# committed .wasm differs from the rebuilt one.
#
# The contracts and the SDK are copied to a fresh directory first: the node's workspace
# manifest needs a newer cargo, and a fixed layout with remapped paths makes the output
# independent of where the repository is checked out.
set -euo pipefail
export PATH=/usr/bin:/bin
repo="$(cd "$(dirname "$0")/.." && pwd)"
check=false
[[ "${1:-}" == "--check" ]] && check=true

# A fixed path: cargo hashes a path dependency's location into symbol names.
work=/tmp/phala-contracts-build
rm -rf "$work"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/crates"
cp -r "$repo/crates/contract-sdk" "$work/crates/"
mkdir -p "$work/contracts"
for item in Cargo.toml Cargo.lock analytics vault auction kernel; do
    [[ -e "$repo/contracts/$item" ]] && cp -r "$repo/contracts/$item" "$work/contracts/"
done
rm -rf "$work/crates/contract-sdk/target" "$work"/contracts/*/target

export CARGO_TARGET_DIR="$work/target"
export CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"
export RUSTFLAGS="--remap-path-prefix=$work=/build --remap-path-prefix=$CARGO_HOME=/cargo"
cd "$work/contracts"
# Checking builds exactly the committed lockfile; a rebuild refreshes it.
locked=()
$check && locked=(--locked)
echo "== contract unit tests (native)"
if ! out="$(cargo test --quiet "${locked[@]}" 2>&1)"; then
    echo "$out" >&2
    exit 1
fi
echo "$out" | grep "test result" || true
echo "== wasm build"
# Every contract, the benchmark kernel included, is plain WebAssembly MVP: the VM's call-depth
# instrumentation (wasm-instrument) parses no SIMD, so a module with SIMD does not load.
cargo build --quiet --release --target wasm32-unknown-unknown "${locked[@]}" --workspace
$check || cp Cargo.lock "$repo/contracts/Cargo.lock"

status=0
for name in analytics vault auction kernel; do
    built="$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/$name.wasm"
    committed="$repo/contracts/wasm/$name.wasm"
    if $check; then
        if ! cmp -s "$built" "$committed"; then
            echo "contracts/wasm/$name.wasm differs from a fresh build: run scripts/build-contracts.sh and commit the result" >&2
            status=1
        else
            echo "contracts/wasm/$name.wasm matches ($(wc -c <"$built") bytes)"
        fi
    else
        mkdir -p "$repo/contracts/wasm"
        cp "$built" "$committed"
        echo "contracts/wasm/$name.wasm: $(wc -c <"$committed") bytes, sha256 $(sha256sum "$committed" | cut -d' ' -f1)"
    fi
done
exit $status
