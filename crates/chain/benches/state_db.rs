//! The authenticated state at scale: what a block's root (merkleize) and commit cost, and what
//! a proof costs and weighs, as the number of keys grows. A block's cost should depend on its
//! own writes (O(changes · log n)), not on the size of the state.
//!
//! `cargo bench -p phala-chain --bench state_db [-- KEYS ...]` (default: 10000 1000000), on the
//! tokio runtime with storage in a temporary directory. Each size is filled in batches of
//! 100,000 keys; then 20 blocks of 1,000 writes (900 updates, 100 new keys) are merkleized and
//! committed, and 1,000 present and 1,000 absent keys are proven and verified.

use commonware_cryptography::{Hasher as _, Sha256};
use commonware_runtime::{Runner as _, Supervisor as _, tokio};
use phala_chain::{
    commitment::{self, Store},
    state::Changes,
};
use std::time::{Duration, Instant};

const FILL_BATCH: u64 = 100_000;
const BLOCKS: u64 = 20;
const BLOCK_WRITES: u64 = 1_000;
const PROOFS: u64 = 1_000;

/// The state key of account `i` (as the balances module writes them).
fn key(i: u64) -> Vec<u8> {
    let mut key = b"balances/account/".to_vec();
    key.extend_from_slice(&Sha256::hash(&[&i.to_be_bytes()]).0);
    key
}

/// An account value (nonce u64 ‖ free u128), varied by `salt`.
fn value(i: u64, salt: u64) -> Vec<u8> {
    let mut value = salt.to_be_bytes().to_vec();
    value.extend_from_slice(&u128::from(i).to_be_bytes());
    value
}

/// A xorshift generator: the same keys on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn mean(total: Duration, n: u64) -> f64 {
    total.as_secs_f64() * 1e3 / n as f64
}

async fn measure(context: tokio::Context, keys: u64) {
    let mut store = commitment::open(context, &format!("bench-{keys}"))
        .await
        .expect("open");
    let mut height = 0;
    let started = Instant::now();
    let mut filled = 0;
    while filled < keys {
        let end = (filled + FILL_BATCH).min(keys);
        let changes: Changes = (filled..end).map(|i| (key(i), Some(value(i, 0)))).collect();
        let batch = store.merkleize(None, &changes, height).await.expect("fill");
        store.apply(batch).await.expect("fill");
        height += 1;
        filled = end;
    }
    let fill = started.elapsed();

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut merkleize, mut commit) = (Duration::ZERO, Duration::ZERO);
    let mut next_new = keys;
    for block in 0..BLOCKS {
        let mut changes = Changes::new();
        for _ in 0..BLOCK_WRITES - BLOCK_WRITES / 10 {
            let i = rng.below(keys);
            changes.insert(key(i), Some(value(i, block + 1)));
        }
        for _ in 0..BLOCK_WRITES / 10 {
            changes.insert(key(next_new), Some(value(next_new, 0)));
            next_new += 1;
        }
        let started = Instant::now();
        let batch = store
            .merkleize(None, &changes, height)
            .await
            .expect("merkleize");
        merkleize += started.elapsed();
        let started = Instant::now();
        store.apply(batch).await.expect("commit");
        commit += started.elapsed();
        height += 1;
    }

    let root = store.root();
    let (mut prove_present, mut verify_present, mut bytes_present) =
        (Duration::ZERO, Duration::ZERO, 0);
    let (mut prove_absent, mut verify_absent, mut bytes_absent) =
        (Duration::ZERO, Duration::ZERO, 0);
    for _ in 0..PROOFS {
        let present = key(rng.below(keys));
        let absent = key(next_new + rng.below(keys));
        for (key, prove, verify, bytes) in [
            (
                present,
                &mut prove_present,
                &mut verify_present,
                &mut bytes_present,
            ),
            (
                absent,
                &mut prove_absent,
                &mut verify_absent,
                &mut bytes_absent,
            ),
        ] {
            let started = Instant::now();
            let proof = store.prove(&key).await.expect("prove");
            *prove += started.elapsed();
            *bytes += proof.to_bytes().len();
            let started = Instant::now();
            proof
                .verify(&root, &key)
                .expect("a proof of the store verifies");
            *verify += started.elapsed();
        }
    }
    println!(
        "{keys:>10} keys  fill {:>7.1} s ({:>7.0} keys/s)  block of {BLOCK_WRITES}: merkleize {:>6.2} ms, commit {:>6.2} ms  \
         present proof {:>5} B prove {:.3} ms verify {:.3} ms  absent proof {:>5} B prove {:.3} ms verify {:.3} ms",
        fill.as_secs_f64(),
        keys as f64 / fill.as_secs_f64(),
        mean(merkleize, BLOCKS),
        mean(commit, BLOCKS),
        bytes_present / PROOFS as usize,
        mean(prove_present, PROOFS),
        mean(verify_present, PROOFS),
        bytes_absent / PROOFS as usize,
        mean(prove_absent, PROOFS),
        mean(verify_absent, PROOFS),
    );
}

fn main() {
    let sizes: Vec<u64> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with('-'))
        .filter_map(|arg| arg.replace('_', "").parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![10_000, 1_000_000]
    } else {
        sizes
    };
    let directory = std::env::temp_dir().join(format!("phala-state-bench-{}", std::process::id()));
    let config = tokio::Config::new().with_storage_directory(directory.clone());
    tokio::Runner::new(config).start(|context| async move {
        for keys in sizes {
            measure(context.child("size"), keys).await;
        }
    });
    let _ = std::fs::remove_dir_all(directory);
}
