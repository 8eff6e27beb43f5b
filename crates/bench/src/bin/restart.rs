//! Restart time against chain length. A ledger on disk (the state database and the history, in
//! the partitions `phala-node run` uses) on the tokio runtime finalizes blocks of `--transfers`
//! signed transfers each, built and finalized as a one-validator chain does, without consensus;
//! at each length of `--blocks` it is closed and opened again, and the time `Ledger::open`
//! takes is printed (with the data directory's size). Opening reads the state's key-value
//! pairs back, so it should depend on the number of accounts, not on the chain's length.
//!
//! Not included: marshal's and simplex's own start (their archives and journal), which a
//! `phala-node run` restart adds.
//!
//! `cargo build --release -p phala-bench && ./target/release/restart [--blocks 10000,100000]
//! [--transfers 4] [--accounts 2000] [--json]`

use clap::Parser;
use commonware_runtime::{Runner as _, Supervisor as _, tokio};
use phala_chain::BlockContext;
use phala_crypto::Keypair;
use phala_node::{
    ledger::Ledger,
    spec::{ChainSpec, GenesisOptions, generate_with},
};
use phala_types::{BalancesCall, Call, SignedTransaction, Transaction, UNIT};
use std::{path::Path, time::Instant};

#[derive(Parser)]
struct Args {
    /// Chain lengths at which to restart, ascending.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    blocks: Vec<u64>,
    /// Transfers per block.
    #[arg(long, default_value_t = 4)]
    transfers: u64,
    /// Funded accounts at genesis (the size of the state).
    #[arg(long, default_value_t = 2_000)]
    accounts: u64,
    /// Print one JSON object per restart.
    #[arg(long)]
    json: bool,
}

fn spec(accounts: &[Keypair]) -> anyhow::Result<ChainSpec> {
    let mut options = GenesisOptions::local_dev("restart-bench", 1);
    options.extra_accounts = accounts.iter().map(Keypair::address).collect();
    options.extra_balance = 1_000 * UNIT;
    let keys = vec![Keypair::dev("restart-bench-validator")];
    Ok(generate_with(&options, &keys, commonware_utils::TestRng::new(1))?.0)
}

/// Transfer number `n` of the run: account `n % accounts` pays one unit to the next account.
fn transfer(spec: &ChainSpec, accounts: &[Keypair], n: u64) -> SignedTransaction {
    let count = accounts.len() as u64;
    let from = &accounts[(n % count) as usize];
    let to = &accounts[((n + 1) % count) as usize];
    let tx = Transaction {
        signer: from.address(),
        nonce: n / count,
        fee: UNIT / 100,
        expiry: u64::MAX,
        call: Call::Balances(BalancesCall::Transfer {
            to: to.address(),
            amount: 1,
        }),
    };
    from.sign_transaction(&spec.hash(), tx)
}

fn directory_bytes(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => directory_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.accounts > 1, "give at least 2 accounts");
    let accounts: Vec<Keypair> = (0..args.accounts)
        .map(|i| Keypair::dev(&format!("bench-{i}")))
        .collect();
    let spec = spec(&accounts)?;
    let directory = tempfile::tempdir()?;
    let storage = directory.path().to_path_buf();
    let config = tokio::Config::new().with_storage_directory(storage.clone());
    tokio::Runner::new(config).start(|context| async move {
        let open = || Ledger::open_on(context.child("ledger"), "ledger", &spec, None);
        let (mut ledger, _) = open().await?;
        let mut sent = 0;
        for &target in &args.blocks {
            while ledger.head().height < target {
                let batch = (sent..sent + args.transfers)
                    .map(|n| transfer(&spec, &accounts, n))
                    .collect();
                sent += args.transfers;
                for result in ledger.submit_batch(batch) {
                    result?;
                }
                let parent = ledger.head();
                let ctx = BlockContext {
                    height: parent.height + 1,
                    timestamp: parent.timestamp + spec.block_interval_ms,
                    proposer: spec.validators[0].address,
                };
                let block = ledger
                    .build(&parent, ctx)
                    .await
                    .ok_or_else(|| anyhow::anyhow!("cannot build on the head"))?;
                ledger.finalize(&block).await?;
            }
            drop(ledger);
            let started = Instant::now();
            ledger = open().await?.0;
            let seconds = started.elapsed().as_secs_f64();
            // Of which: building the genesis state in memory to know the genesis block.
            let started = Instant::now();
            spec.genesis()?;
            let genesis_seconds = started.elapsed().as_secs_f64();
            let bytes = directory_bytes(&storage);
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "blocks": ledger.head().height,
                        "accounts": args.accounts,
                        "transfers_per_block": args.transfers,
                        "open_seconds": seconds,
                        "genesis_seconds": genesis_seconds,
                        "data_bytes": bytes,
                    })
                );
            } else {
                println!(
                    "after {:>7} blocks ({} accounts, {} transfers/block): open {:.3} s (genesis {:.3} s), data {:.1} MiB",
                    ledger.head().height,
                    args.accounts,
                    args.transfers,
                    seconds,
                    genesis_seconds,
                    bytes as f64 / (1 << 20) as f64
                );
            }
        }
        Ok(())
    })
}
