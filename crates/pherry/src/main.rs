//! `pherry`: relays between a chain node and a pRuntime. Untrusted: it can only delay.

use anyhow::Context;
use clap::Parser;
use jsonrpsee::{core::client::SubscriptionClientT, rpc_params, ws_client::WsClientBuilder};
use phala_client::Client;
use phala_crypto::Keypair;
use pherry::relay::{Progress, Relay};
use std::{path::PathBuf, time::Duration};

/// Relays finalized blocks and proofs to a pRuntime and its signed messages to the chain.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The node's RPC endpoint (HTTP; the WebSocket subscription uses the same port).
    #[arg(long, default_value = "http://127.0.0.1:9944")]
    node: String,
    /// The pRuntime's API.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pruntime: String,
    /// The operator's key file (pays fees, owns the worker).
    #[arg(long, conflicts_with = "operator_dev")]
    operator_key: Option<PathBuf>,
    /// A dev account as operator (dev chains only).
    #[arg(long)]
    operator_dev: Option<String>,
    /// Most headers per sync batch.
    #[arg(long, default_value_t = 5_000)]
    batch: u64,
    /// Only relay: do not register the worker.
    #[arg(long)]
    no_register: bool,
}

/// How often pherry checks whether the worker must attest again.
const REGISTRATION_CHECK: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let operator = match (&args.operator_key, &args.operator_dev) {
        (Some(path), _) => Keypair::load(path)?,
        (None, Some(name)) => Keypair::dev(name),
        (None, None) => anyhow::bail!("pass --operator-key FILE or --operator-dev NAME"),
    };
    let relay = Relay {
        node: Client::new(&args.node)?,
        pruntime: phala_client::pruntime::PruntimeClient::new(&args.pruntime)?,
        operator,
        batch: args.batch.max(1),
        egress_held_until: Default::default(),
    };
    let ws_url = args.node.replacen("http", "ws", 1);
    let mut progress = Progress::default();
    // When the registration was last checked (re-attestation is due before expiry).
    let mut checked: Option<std::time::Instant> = None;
    loop {
        // Wake on every finalized block; fall back to polling while the node is unreachable.
        let subscription = async {
            let ws = WsClientBuilder::default().build(&ws_url).await?;
            let sub = ws
                .subscribe::<serde_json::Value, _>(
                    "subscribe_finalized",
                    rpc_params![],
                    "unsubscribe_finalized",
                )
                .await?;
            anyhow::Ok((ws, sub))
        }
        .await;
        let (_ws, mut sub) = match subscription {
            Ok(pair) => (Some(pair.0), Some(pair.1)),
            Err(e) => {
                tracing::warn!(error = %e, "node subscription unavailable; polling");
                (None, None)
            }
        };
        loop {
            let due = checked.is_none_or(|at| at.elapsed() > REGISTRATION_CHECK);
            if !args.no_register && due {
                match register(&relay).await {
                    Ok(()) => checked = Some(std::time::Instant::now()),
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "registration failed; will retry")
                    }
                }
            }
            let caught_up = match relay.round().await {
                Ok(round) => {
                    progress.update(&round);
                    round.synced_to >= round.head
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "relay round failed; will retry");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    false
                }
            };
            if !caught_up {
                continue;
            }
            match sub.as_mut() {
                Some(sub) => {
                    let next = tokio::time::timeout(Duration::from_secs(2), sub.next()).await;
                    if let Ok(None) | Ok(Some(Err(_))) = next {
                        break; // Subscription lost: reconnect.
                    }
                }
                None => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    break; // Try to subscribe again.
                }
            }
        }
    }
}

async fn register(relay: &Relay) -> anyhow::Result<()> {
    let info = relay
        .pruntime
        .info()
        .await
        .context("pRuntime unreachable")?;
    relay.ensure_registered(&info).await?;
    Ok(())
}
