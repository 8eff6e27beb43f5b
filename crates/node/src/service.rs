//! `phala-node run`: one validator process on the tokio runtime with authenticated p2p,
//! JSON-RPC and Prometheus metrics. Everything durable lives under the data directory; a
//! restart (clean or `kill -9`) continues from it.

use crate::{
    engine::{self, Channels, ValidatorConfig, channel},
    ledger::Ledger,
    rpc::{self, RpcContext},
    spec::{ChainSpec, Scheme, ValidatorKey},
};
use anyhow::{Context as _, anyhow, bail};
use commonware_cryptography::{ChaCha20Poly1305, Signer as _};
use commonware_p2p::{Address as PeerAddress, AddressableManager as _, authenticated::lookup};
use commonware_runtime::{
    Clock, Quota, Runner as _, Spawner as _, Supervisor as _, telemetry::metrics::MetricsExt as _,
    tokio as runtime,
};
use commonware_stream::{
    cups::{self, Cups},
    sake::{self, Sake},
};
use commonware_utils::{NZU32, NZUsize, ordered::Map};
use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};
use tracing::{error, info};

/// How `phala-node run` was asked to run.
pub struct RunOptions {
    pub spec: PathBuf,
    pub key: PathBuf,
    pub data: PathBuf,
    pub rpc: SocketAddr,
    pub metrics: Option<SocketAddr>,
    pub log_level: tracing::Level,
    pub threads: usize,
    /// Finalized blocks whose headers, messages and transaction statuses are kept (`None`:
    /// all of them).
    pub retention: Option<u64>,
}

/// Runs until a fatal error; Ctrl-C or SIGTERM end the process (storage is crash-safe).
pub fn run(options: RunOptions) -> anyhow::Result<()> {
    let spec = ChainSpec::load(&options.spec)?;
    let (keypair, share) = ValidatorKey::load(&options.key)?;
    let index = spec
        .validators
        .iter()
        .position(|v| v.address == keypair.address())
        .ok_or_else(|| {
            anyhow!(
                "key {} is not a validator of chain {}",
                keypair.address(),
                spec.chain_id
            )
        })?;
    let scheme = Scheme::signer(
        &spec.namespace(),
        spec.participants()?,
        spec.sharing()?,
        share,
    )
    .ok_or_else(|| anyhow!("the key file's share does not belong to this chain's group key"))?;
    std::fs::create_dir_all(&options.data)
        .with_context(|| format!("cannot create data directory {}", options.data.display()))?;
    let config = runtime::Config::new()
        .with_worker_threads(options.threads)
        .with_storage_directory(options.data.join("storage"))
        .with_tcp_nodelay(Some(true))
        .with_catch_panics(false);
    runtime::Runner::new(config).start(|context| async move {
        runtime::telemetry::init(
            context.child("telemetry"),
            runtime::telemetry::Logs { level: options.log_level, json: false },
            options.metrics,
            None,
        );
        let me = keypair.private_key().public_key();
        let listen = spec.validators[index].p2p;
        let handshake = Cups::<_, ChaCha20Poly1305>::new(
            Sake {
                signer: keypair.private_key().clone(),
                synchrony_bound: Duration::from_secs(5),
                max_handshake_age: Duration::from_secs(10),
                version: sake::Version::V1,
            },
            cups::Version::V1,
        );
        let validators = spec.validators.len();
        let max_message = engine::max_message_size(validators as u32);
        let mut p2p_config = if spec.genesis.dev {
            lookup::Config::local(handshake, &spec.namespace(), listen, NZUsize!(validators), max_message, NZUsize!(1024))
        } else {
            lookup::Config::recommended(handshake, &spec.namespace(), listen, NZUsize!(validators), max_message, NZUsize!(1024))
        };
        p2p_config.allow_private_ips = true;
        let (mut network, mut oracle) = lookup::Network::new(context.child("p2p"), p2p_config);
        let peers: Map<_, PeerAddress> = spec
            .participants()
            .expect("checked at load")
            .into_iter()
            .map(|pk| {
                let address = spec.validators.iter().find(|v| v.address.0 == pk.as_ref()).expect("listed").p2p;
                (pk, PeerAddress::Symmetric(address))
            })
            .collect::<Vec<_>>()
            .try_into()
            .expect("validators are unique");
        let _ = oracle.track(0, peers);
        let quota = Quota::per_second(NZU32!(10_000));
        let channels = Channels {
            votes: network.register(channel::VOTES, quota),
            certificates: network.register(channel::CERTIFICATES, quota),
            certificate_fetch: network.register(channel::CERTIFICATE_FETCH, quota),
            blocks: network.register(channel::BLOCKS, quota),
            backfill: network.register(channel::BACKFILL, quota),
            transactions: network.register(channel::TRANSACTIONS, quota),
        };
        network.start();

        let (ledger, genesis) =
            Ledger::open_on(context.child("ledger"), LEDGER_PARTITION, &spec, options.retention)
                .await?;
        info!(height = ledger.head().height, "opened the ledger");
        let ledger = Arc::new(ledger);
        let validator_config = ValidatorConfig {
            me,
            scheme,
            partition: "chain".into(),
            genesis,
            leader_timeout: Duration::from_secs(1),
        };
        let (marshal, finalizer) = engine::start_validator(
            context.child("validator"),
            validator_config,
            channels,
            oracle.clone(),
            oracle,
            ledger.clone(),
        )
        .await;

        let info = rpc::chain_info(&spec);
        let rpc_context = RpcContext {
            ledger: ledger.clone(),
            blocks: rpc::BlockSource::Marshal(marshal),
            upstream: None,
            info,
            validator: Some(keypair.address()),
        };
        let (rpc_address, _rpc) = match rpc::serve(options.rpc, rpc_context).await {
            Ok(served) => served,
            Err(error) => {
                error!(%error, "cannot serve RPC");
                std::process::exit(1);
            }
        };
        info!(%rpc_address, validator = %keypair.address(), chain = %spec.chain_id, "node running");
        spawn_metrics(&context, ledger);
        match finalizer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error),
            Err(error) => Err(anyhow!("finalizer stopped: {error:?}")),
        }
    })
    .map_err(|e| {
        error!(%e, "node stopped");
        e
    })?;
    bail!("the node stopped unexpectedly")
}

/// The storage partition prefix of the ledger's state and history.
const LEDGER_PARTITION: &str = "ledger";

/// Publishes the ledger's figures as Prometheus gauges once a second.
fn spawn_metrics(context: &runtime::Context, ledger: Arc<Ledger>) {
    let height = context.gauge(
        "chain_finalized_height",
        "Height of the last applied finalized block",
    );
    let mempool = context.gauge(
        "chain_mempool_transactions",
        "Transactions waiting in the mempool",
    );
    context
        .child("chain_metrics")
        .spawn(move |context| async move {
            loop {
                height.set(ledger.head().height as i64);
                mempool.set(ledger.mempool_len() as i64);
                context.sleep(Duration::from_secs(1)).await;
            }
        });
}

/// How `phala-node follow` was asked to run.
pub struct FollowOptions {
    pub spec: PathBuf,
    pub data: PathBuf,
    pub upstreams: Vec<String>,
    /// As [`RunOptions::retention`].
    pub retention: Option<u64>,
    pub rpc: SocketAddr,
    pub log_level: tracing::Level,
}

/// Runs a follower: verifies the chain from upstream nodes and serves RPC. Its state and history
/// live under the data directory, but its verified blocks only in memory, so after a restart it
/// verifies the chain again from genesis.
pub fn follow(options: FollowOptions) -> anyhow::Result<()> {
    let spec = ChainSpec::load(&options.spec)?;
    if options.upstreams.is_empty() {
        bail!("give at least one --upstream node");
    }
    tracing_subscriber::fmt()
        .with_max_level(options.log_level)
        .init();
    let upstreams = options
        .upstreams
        .iter()
        .map(|url| phala_client::Client::new(url))
        .collect::<Result<Vec<_>, _>>()?;
    let forward = phala_client::Client::new(&options.upstreams[0])?;
    // The follower keeps its verified blocks in memory (not yet on disk), so it starts over:
    // what a previous run stored is removed.
    let storage = options.data.join("storage");
    if storage.exists() {
        std::fs::remove_dir_all(&storage)
            .with_context(|| format!("cannot clear {}", storage.display()))?;
    }
    std::fs::create_dir_all(&options.data)
        .with_context(|| format!("cannot create data directory {}", options.data.display()))?;
    let config = runtime::Config::new()
        .with_storage_directory(storage)
        .with_catch_panics(false);
    runtime::Runner::new(config).start(|context| async move {
        let (ledger, genesis) = Ledger::open_on(
            context.child("ledger"),
            LEDGER_PARTITION,
            &spec,
            options.retention,
        )
        .await?;
        let ledger = Arc::new(ledger);
        let chain = Arc::new(crate::follower::VerifiedChain::new(genesis));
        let rpc_context = RpcContext {
            ledger: ledger.clone(),
            blocks: rpc::BlockSource::Verified(chain.clone()),
            upstream: Some(forward),
            info: rpc::chain_info(&spec),
            validator: None,
        };
        let (rpc_address, _rpc) = rpc::serve(options.rpc, rpc_context).await?;
        info!(%rpc_address, chain = %spec.chain_id, "follower running");
        crate::follower::follow(spec, ledger, chain, upstreams).await;
        Ok(())
    })
}
