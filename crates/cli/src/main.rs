//! `phala`: the command line for users and operators of the network.

use clap::{Parser, Subcommand};
use phala_cli::{
    commands,
    devnet::{Devnet, DevnetOptions},
    workers::Workers,
};
use phala_client::Client;
use std::{path::PathBuf, time::Duration};

mod attest;

#[derive(Parser)]
#[command(
    name = "phala",
    version,
    about = "Use the Phala-style confidential cloud: accounts, transfers, blocks, a local network"
)]
struct Cli {
    /// The node's JSON-RPC endpoint.
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:9944",
        env = "PHALA_RPC"
    )]
    rpc: String,
    /// Print one JSON object instead of human-readable text.
    #[arg(long, global = true)]
    json: bool,
    /// The chain spec whose group key answers are checked against (trust no node for it).
    /// Without it, the chain a node first answered for is remembered by genesis hash under
    /// `$PHALA_HOME` (default `~/.phala`) and held to thereafter.
    #[arg(long, global = true, env = "PHALA_SPEC")]
    spec: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Starts a local network on 127.0.0.1 in a fresh temporary directory and runs until Ctrl-C.
    Dev {
        #[arg(long, default_value_t = 4)]
        validators: usize,
        /// Validator i serves RPC on this port + i.
        #[arg(long, default_value_t = 9944)]
        rpc_port: u16,
        /// Validator i listens for peers on this port + i.
        #[arg(long, default_value_t = 30333)]
        p2p_port: u16,
        #[arg(long, default_value_t = 100)]
        block_interval_ms: u64,
        /// Worker pRuntimes (simulated TEE) besides one gatekeeper pRuntime per validator.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// pRuntime i serves its API on this port + i.
        #[arg(long, default_value_t = 8000)]
        worker_port: u16,
        /// Runs the confidential analytics demo, then stops the network (exit 0 only if every
        /// step did what it should).
        #[arg(long)]
        demo: bool,
        /// With --demo: keep the network running afterwards.
        #[arg(long, requires = "demo")]
        keep: bool,
    },
    /// Confidential contracts: upload, instantiate, call, query, verify-receipt.
    Contract {
        #[command(subcommand)]
        command: phala_cli::contract::ContractCommand,
    },
    /// Secure workers.
    Worker {
        #[command(subcommand)]
        command: WorkerCommand,
    },
    /// Accounts.
    Account {
        #[command(subcommand)]
        command: AccountCommand,
    },
    /// Sends PHA, then waits until the transfer is final.
    Transfer {
        /// A dev account name (alice, bob, ...) or a key file.
        #[arg(long)]
        from: String,
        /// An address (pha1...) or a dev account name.
        #[arg(long)]
        to: String,
        /// Amount in PHA, e.g. 1.5.
        #[arg(long)]
        amount: String,
        /// Return once the node accepted it, without waiting for finality.
        #[arg(long)]
        no_wait: bool,
    },
    /// Shows a finalized block (the latest by default) and checks its finality certificate.
    Block { height: Option<u64> },
    /// Keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// TEE evidence: verify a worker's SGX or TDX quote offline, as the chain does.
    Attest {
        #[command(subcommand)]
        command: attest::AttestCommand,
    },
}

#[derive(Subcommand)]
enum AccountCommand {
    /// Balance and nonce, checked against the state root with the node's proof.
    Show { who: String },
}

#[derive(Subcommand)]
enum WorkerCommand {
    /// Registered workers and gatekeepers with their TEE and confidence level.
    List,
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Creates a new account key file and prints its address.
    Generate {
        #[arg(long)]
        out: PathBuf,
    },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(error) = run(cli).await {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = || Client::new(&cli.rpc);
    match cli.command {
        Command::Dev {
            validators,
            rpc_port,
            p2p_port,
            block_interval_ms,
            workers,
            worker_port,
            demo,
            keep,
        } => {
            let mut options = DevnetOptions::new(validators)?;
            options.rpc_port = rpc_port;
            options.p2p_port = p2p_port;
            options.block_interval_ms = block_interval_ms;
            let mode = match (demo, keep) {
                (false, _) => DevMode::Serve,
                (true, false) => DevMode::Demo,
                (true, true) => DevMode::DemoThenServe,
            };
            dev(options, workers, worker_port, mode, cli.json).await
        }
        Command::Contract { command } => {
            phala_cli::contract::run(&client()?, cli.spec.as_deref(), command, cli.json).await
        }
        Command::Worker {
            command: WorkerCommand::List,
        } => phala_cli::workers::list(&client()?, cli.json).await,
        Command::Account {
            command: AccountCommand::Show { who },
        } => {
            let client = client()?;
            let trust = commands::trusted_chain(&client, cli.spec.as_deref()).await?;
            commands::account_show(&client, &trust, &who, cli.json).await
        }
        Command::Transfer {
            from,
            to,
            amount,
            no_wait,
        } => commands::transfer(&client()?, &from, &to, &amount, no_wait, cli.json).await,
        Command::Block { height } => {
            let client = client()?;
            let trust = commands::trusted_chain(&client, cli.spec.as_deref()).await?;
            commands::block(&client, &trust, height, cli.json).await
        }
        Command::Key {
            command: KeyCommand::Generate { out },
        } => commands::key_generate(&out),
        Command::Attest { command } => attest::run(command, cli.json),
    }
}

/// What `phala dev` does once the network is up.
#[derive(Clone, Copy, PartialEq, Eq)]
enum DevMode {
    Serve,
    Demo,
    DemoThenServe,
}

async fn dev(
    options: DevnetOptions,
    workers: usize,
    worker_port: u16,
    mode: DevMode,
    as_json: bool,
) -> anyhow::Result<()> {
    if options.validators == 0 {
        anyhow::bail!("at least one validator");
    }
    if mode != DevMode::Serve && workers == 0 {
        anyhow::bail!("the demo needs at least one worker");
    }
    let mut devnet = Devnet::start(options)?;
    if !as_json {
        println!(
            "starting {} validators in {} ...",
            devnet.validators(),
            devnet.dir().display()
        );
    }
    devnet.wait_ready(Duration::from_secs(60)).await?;
    if !as_json {
        println!(
            "starting {} gatekeeper and {workers} worker pRuntimes (SIMULATED TEE: insecure, dev only) ...",
            devnet.validators()
        );
    }
    let nodes: Vec<String> = (0..devnet.validators())
        .map(|i| devnet.rpc_url(i))
        .collect();
    let mut secure_workers = Workers::start(
        devnet.dir(),
        &nodes,
        devnet.validators(),
        workers,
        worker_port,
    )
    .await?;
    let node = phala_client::Client::new(&nodes[0])?;
    let admin = phala_crypto::Keypair::dev("alice");
    secure_workers
        .bootstrap(&node, &admin, Duration::from_secs(120))
        .await?;
    if mode != DevMode::Serve {
        let worker = secure_workers
            .processes
            .iter()
            .find(|p| !p.gatekeeper)
            .map(|p| p.api.clone())
            .unwrap_or_default();
        let result = phala_cli::demo::run(&node, &worker).await;
        if mode == DevMode::Demo || result.is_err() {
            secure_workers.stop();
            devnet.stop();
            return result;
        }
    }
    let accounts: Vec<_> = phala_node::spec::DEV_ACCOUNTS
        .iter()
        .map(|name| (name.to_string(), phala_crypto::Keypair::dev(name).address()))
        .collect();
    let rpc: Vec<String> = (0..devnet.validators())
        .map(|i| devnet.rpc_url(i))
        .collect();
    if as_json {
        let accounts: serde_json::Map<String, serde_json::Value> = accounts
            .iter()
            .map(|(n, a)| (n.clone(), serde_json::json!(a.to_string())))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "rpc": rpc[0],
                "validators_rpc": rpc,
                "chain_id": devnet.spec().chain_id,
                "genesis_hash": hex::encode(devnet.spec().hash()),
                "data_dir": devnet.dir(),
                "accounts": accounts,
                "pruntimes": secure_workers.processes.iter().map(|p| serde_json::json!({
                    "name": p.name, "api": p.api, "gatekeeper": p.gatekeeper,
                })).collect::<Vec<_>>(),
            })
        );
    } else {
        println!(
            "local network ready: {} validators, chain {}",
            devnet.validators(),
            devnet.spec().chain_id
        );
        println!(
            "  RPC          {}   (validators: {})",
            rpc[0],
            rpc.join(", ")
        );
        println!("  data & logs  {}", devnet.dir().display());
        println!("  dev accounts (10,000,000 PHA each):");
        for (name, address) in &accounts {
            println!("    {name:<8} {address}");
        }
        println!("  pRuntimes (each relayed by its pherry):");
        for process in &secure_workers.processes {
            println!("    {:<13} {}", process.name, process.api);
        }
        phala_cli::workers::list(&node, false).await?;
        if let Some(worker) = secure_workers.processes.iter().find(|p| !p.gatekeeper) {
            println!("contracts: export PHALA_WORKER={}", worker.api);
        }
        println!("try:  phala transfer --from alice --to bob --amount 1.5");
        println!("      phala worker list");
        println!("      phala block");
        println!("Ctrl-C stops the network and deletes its data.");
    }
    wait_for_shutdown().await;
    if !as_json {
        println!("stopping ...");
    }
    secure_workers.stop();
    devnet.stop();
    Ok(())
}

async fn wait_for_shutdown() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("can listen for SIGTERM");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
