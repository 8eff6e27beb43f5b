//! `phala-node`: create a chain (`genesis`) and run a validator (`run`).

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use phala_node::{
    service::{self, FollowOptions, RunOptions},
    spec::{GenesisOptions, generate},
};
use std::{net::SocketAddr, path::PathBuf};

#[derive(Parser)]
#[command(
    name = "phala-node",
    version,
    about = "A validator of the Phala-style confidential cloud chain"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Creates a chain: writes `spec.json` and one `validator-<i>.json` key file per validator.
    /// The dealer's secrets exist only in memory and are gone when this command exits.
    Genesis {
        /// Directory to write the files into (created if missing).
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 4)]
        validators: usize,
        #[arg(long, default_value = "phala-dev")]
        chain_id: String,
        /// Host the validators' p2p ports are reachable on.
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        /// Validator i listens on base-port + i.
        #[arg(long, default_value_t = 30_333)]
        base_port: u16,
        /// A development chain: funds the dev accounts (alice, bob, ...).
        #[arg(long)]
        dev: bool,
        /// Least milliseconds between blocks.
        #[arg(long, default_value_t = 100)]
        block_interval_ms: u64,
        /// The registry admin (until governance): an address, never a dev name.
        #[arg(long)]
        admin: Option<phala_types::Address>,
        /// A genesis balance, `ADDRESS=PHA` (repeatable); the rest of the supply goes to the
        /// keyless treasury.
        #[arg(long = "allocation", value_parser = parse_allocation)]
        allocations: Vec<phala_chain::balances::Allocation>,
    },
    /// Runs a validator until stopped; restarting with the same data directory resumes.
    Run {
        #[arg(long)]
        spec: PathBuf,
        /// The validator's key file written by `genesis`.
        #[arg(long)]
        key: PathBuf,
        /// Where blocks, certificates and consensus journals are stored.
        #[arg(long)]
        data: PathBuf,
        /// JSON-RPC (HTTP and WebSocket) listen address.
        #[arg(long, default_value = "127.0.0.1:9944")]
        rpc: SocketAddr,
        /// Prometheus metrics listen address (GET /metrics).
        #[arg(long)]
        metrics: Option<SocketAddr>,
        #[arg(long, default_value = "info")]
        log_level: tracing::Level,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Keep the headers, messages and transaction statuses of the last BLOCKS finalized
        /// blocks only (default: all of them, an archive node).
        #[arg(long, value_name = "BLOCKS", value_parser = clap::value_parser!(u64).range(1..))]
        retention: Option<u64>,
    },
    /// Follows a chain without validating it: pulls finalized blocks from upstream nodes, checks
    /// each against its finality certificate and by re-execution, and serves the same RPC.
    Follow {
        #[arg(long)]
        spec: PathBuf,
        /// Directory for the follower's state (created if missing).
        #[arg(long)]
        data: PathBuf,
        /// An upstream node's RPC URL; repeat for fallbacks. Trusted for availability only.
        #[arg(long = "upstream", required = true)]
        upstreams: Vec<String>,
        #[arg(long, default_value = "127.0.0.1:9955")]
        rpc: SocketAddr,
        #[arg(long, default_value = "info")]
        log_level: tracing::Level,
        /// Keep the headers, messages and transaction statuses of the last BLOCKS finalized
        /// blocks only (default: all of them, an archive node).
        #[arg(long, value_name = "BLOCKS", value_parser = clap::value_parser!(u64).range(1..))]
        retention: Option<u64>,
    },
}

/// Parses `ADDRESS=PHA` (an amount in PHA, decimals allowed).
fn parse_allocation(text: &str) -> Result<phala_chain::balances::Allocation, String> {
    let (address, amount) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not ADDRESS=PHA"))?;
    Ok(phala_chain::balances::Allocation {
        address: address.parse().map_err(|e| format!("{e}"))?,
        balance: phala_types::parse_pha(amount).map_err(|e| format!("{e}"))?,
    })
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Genesis {
            out,
            validators,
            chain_id,
            host,
            base_port,
            dev,
            block_interval_ms,
            admin,
            allocations,
        } => {
            let options = GenesisOptions {
                chain_id,
                validators,
                host,
                base_port,
                dev,
                block_interval_ms,
                extra_accounts: Vec::new(),
                extra_balance: 0,
                allocations,
                admin,
                timestamp: None,
            };
            let (spec, keys) = generate(&options)?;
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            spec.save(&out.join("spec.json"))?;
            for (i, key) in keys.iter().enumerate() {
                let path = out.join(format!("validator-{i}.json"));
                std::fs::write(&path, serde_json::to_string_pretty(key)?)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                restrict(&path)?;
            }
            println!(
                "wrote spec.json and {} validator key files to {}",
                keys.len(),
                out.display()
            );
            println!("genesis hash {}", hex::encode(spec.hash()));
            Ok(())
        }
        Command::Run {
            spec,
            key,
            data,
            rpc,
            metrics,
            log_level,
            threads,
            retention,
        } => service::run(RunOptions {
            spec,
            key,
            data,
            rpc,
            metrics,
            log_level,
            threads,
            retention,
        }),
        Command::Follow {
            spec,
            data,
            upstreams,
            rpc,
            log_level,
            retention,
        } => service::follow(FollowOptions {
            spec,
            data,
            upstreams,
            retention,
            rpc,
            log_level,
        }),
    }
}

/// Makes a secret file readable by its owner only.
fn restrict(path: &std::path::Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}
