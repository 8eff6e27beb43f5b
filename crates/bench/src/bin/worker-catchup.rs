//! Worker catch-up through the real path: a local network (1 validator, 1 gatekeeper, 2 workers
//! in one cluster, each a `pruntime` process with simulated TEE and its `pherry` process) runs
//! the confidential analytics contract. One worker's pherry is stopped while users send
//! encrypted commands for `--blocks` blocks; then it is started again and the worker catches up
//! over pherry and the pRuntime's HTTP API (`/sync`), executing every command it missed and
//! reporting each. Reports blocks per second of catch-up, the commands executed, and the
//! pRuntime's CPU seconds (from /proc).
//!
//! `cargo build --release && ./target/release/worker-catchup [--blocks 600] [--senders 4]`

use anyhow::{Context as _, ensure};
use clap::Parser;
use phala_bench::cpu_seconds;
use phala_cli::{
    demo::{ANALYTICS_WASM, analytics_deployment},
    devnet::{Devnet, DevnetOptions, free_ports},
    workers::Workers,
};
use phala_client::{Client, contract_ops, pruntime::PruntimeClient};
use phala_crypto::Keypair;
use phala_types::ContractId;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Blocks the worker misses.
    #[arg(long, default_value_t = 600)]
    blocks: u64,
    /// Users sending commands at once while the worker is away (each waits for its command;
    /// at most 6).
    #[arg(long, default_value_t = 4)]
    senders: usize,
    #[arg(long, default_value_t = 100)]
    block_interval_ms: u64,
}

const WAIT: Duration = Duration::from_secs(300);
const SENDERS: [&str; 6] = ["bob", "charlie", "dave", "eve", "ferdie", "alice"];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut options = DevnetOptions::new(1)?;
    options.block_interval_ms = args.block_interval_ms;
    let mut devnet = Devnet::start(options)?;
    let result = run(&args, &mut devnet).await;
    devnet.stop();
    result
}

async fn run(args: &Args, devnet: &mut Devnet) -> anyhow::Result<()> {
    devnet.wait_ready(Duration::from_secs(60)).await?;
    let nodes = vec![devnet.rpc_url(0)];
    let mut workers = Workers::start(devnet.dir(), &nodes, 1, 2, free_ports(3)).await?;
    let result = measure(args, &nodes[0], &mut workers).await;
    workers.stop();
    result
}

async fn measure(args: &Args, rpc: &str, workers: &mut Workers) -> anyhow::Result<()> {
    let node = Client::new(rpc)?;
    let alice = Keypair::dev("alice");
    eprintln!("starting the network and deploying the analytics contract ...");
    workers.bootstrap(&node, &alice, WAIT).await?;
    let code = contract_ops::upload_code(&node, &alice, ANALYTICS_WASM).await?;
    let record = contract_ops::instantiate(&node, &alice, analytics_deployment(code), WAIT).await?;
    let contract = record.id;
    let index = workers
        .processes
        .iter()
        .rposition(|p| !p.gatekeeper)
        .context("no worker")?;
    let pruntime = PruntimeClient::new(&workers.processes[index].api)?;
    let pid = workers.processes[index]
        .pruntime_pid()
        .context("the worker is not running")?;

    workers.kill_pherry(index)?;
    let away_from = pruntime.info().await?.height;
    eprintln!(
        "worker away from block {away_from}; {} users send commands for {} blocks ...",
        args.senders, args.blocks
    );
    let commands = send_commands(&node, &contract, args, away_from + args.blocks).await?;
    let target = node.health().await?.finalized_height;

    let cpu_before = cpu_seconds(pid)?;
    let started = Instant::now();
    workers.restart_pherry(index)?;
    let deadline = started + WAIT;
    let mut height = away_from;
    while height < target {
        ensure!(Instant::now() < deadline, "the worker does not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
        height = pruntime.info().await?.height;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid)? - cpu_before;
    let blocks = target - away_from;
    println!(
        "{}",
        serde_json::json!({
            "blocks": blocks,
            "commands": commands,
            "seconds": elapsed,
            "blocks_per_second": (blocks as f64 / elapsed).round(),
            "commands_per_second": (commands as f64 / elapsed).round(),
            "pruntime_cpu_seconds": cpu,
        })
    );
    Ok(())
}

/// Sends commands from `args.senders` users at once until the chain reaches `until`; how many.
async fn send_commands(
    node: &Client,
    contract: &ContractId,
    args: &Args,
    until: u64,
) -> anyhow::Result<u64> {
    let mut sent = 0;
    let mut value = 0u64;
    while node.health().await?.finalized_height < until {
        let round = SENDERS.iter().take(args.senders).map(|who| {
            value += 1;
            let input = format!("submit salary {}", 4_000 + value % 3_000);
            async move {
                contract_ops::command(
                    node,
                    &Keypair::dev(who),
                    contract,
                    input.as_bytes(),
                    10_000_000,
                )
                .await
            }
        });
        for result in futures::future::join_all(round).await {
            result?;
            sent += 1;
        }
    }
    Ok(sent)
}
