//! pRuntime catch-up benchmark: a local chain runs to `--blocks` with a steady load of queue
//! messages on the stream every worker reads, then a fresh pRuntime (in this process, simulated
//! TEE) catches up from genesis in batches, as pherry feeds it. Reports blocks per second for
//! the enclave's own work (verify certificate, header chain, message proofs, completeness
//! witness, process, seal checkpoint) and for the whole catch-up including the node's RPC.

use bytes::Bytes;
use clap::Parser;
use phala_api::pruntime::{AnchorFile, Mode};
use phala_cli::devnet::{Devnet, DevnetOptions};
use phala_client::{Client, pruntime::anchor_from};
use phala_crypto::Keypair;
use phala_pruntime::{Options, Pruntime, tee::Simulated};
use phala_types::{Call, Evidence, UpwardMessage, WorkerRegistration, registry::report_data};
use phala_types::{MqCall, RegistryCall};
use pherry::batch::build_batch;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Chain length to catch up on.
    #[arg(long, default_value_t = 5_000)]
    blocks: u64,
    /// Queue messages relayed to every worker per second while the chain grows.
    #[arg(long, default_value_t = 20)]
    messages_per_second: u64,
    /// Headers per sync batch.
    #[arg(long, default_value_t = 5_000)]
    batch: u64,
    #[arg(long, default_value_t = 10)]
    block_interval_ms: u64,
    #[arg(long, default_value_t = 29_944)]
    rpc_port: u16,
    #[arg(long, default_value_t = 32_333)]
    p2p_port: u16,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut options = DevnetOptions::new(1)?;
    options.rpc_port = args.rpc_port;
    options.p2p_port = args.p2p_port;
    options.block_interval_ms = args.block_interval_ms;
    let mut devnet = Devnet::start(options)?;
    devnet.wait_ready(Duration::from_secs(60)).await?;
    let node = Client::new(&devnet.rpc_url(0))?;
    let info = node.chain_info().await?;
    let genesis = phala_api::rpc::parse_digest(&info.genesis_hash)?;

    // A registered origin whose upward messages the chain relays to every worker.
    let origin = Keypair::generate();
    let operator = Keypair::dev("operator-0");
    let freshness = node.health().await?.finalized_height;
    let ecdh = [9u8; 32];
    let registration = WorkerRegistration {
        identity: origin.address(),
        ecdh,
        operator: operator.address(),
        cores: 1,
        benchmark: 0,
        freshness,
        gatekeeper: false,
        evidence: Evidence::Simulated {
            measurement: [0xaa; 32],
            report_data: report_data(&origin.address(), &ecdh, genesis.as_ref(), freshness),
        },
    };
    let signed = origin.sign_registration(&genesis, registration);
    node.execute(
        &operator,
        Call::Registry(RegistryCall::RegisterWorker(signed)),
    )
    .await?;

    eprintln!(
        "growing the chain to {} blocks with {} messages/s ...",
        args.blocks, args.messages_per_second
    );
    let mut sequence = 0u64;
    let mut nonce = node.account(&operator.address()).await?.nonce;
    let tick = Duration::from_millis(100);
    loop {
        let head = node.health().await?.finalized_height;
        if head >= args.blocks {
            break;
        }
        for _ in 0..args.messages_per_second / 10 {
            let mut message = UpwardMessage {
                origin: origin.address(),
                topic: Bytes::from_static(b"bench/ping"),
                payload: Bytes::from(sequence.to_be_bytes().to_vec()),
                sequence,
                signature: [0; 64],
            };
            origin.sign_upward(&genesis, &mut message);
            let stx = node
                .sign_call(
                    &operator,
                    Call::Mq(MqCall::SubmitUpward(message)),
                    Some(nonce),
                )
                .await?;
            node.submit(&stx).await?;
            sequence += 1;
            nonce += 1;
        }
        tokio::time::sleep(tick).await;
    }

    let dir = tempfile::tempdir()?;
    let AnchorFile {
        anchor,
        genesis_block,
    } = anchor_from(&node).await?;
    let tee = Box::new(Simulated::open(dir.path(), [0xaa; 32])?);
    let mut pruntime = Pruntime::open(
        tee,
        Options {
            data_dir: dir.path().to_path_buf(),
            anchor,
            genesis_block,
            mode: Mode::Worker,
            cores: 1,
        },
    )?;

    let target = node.health().await?.finalized_height;
    eprintln!("catching up on {target} blocks ...");
    let (mut fetch, mut enclave) = (Duration::ZERO, Duration::ZERO);
    let (mut batches, mut messages) = (0, 0);
    let started = Instant::now();
    while pruntime.height() < target {
        let info = pruntime.info();
        let limit = args.batch.min(target - info.height);
        let t = Instant::now();
        let batch = build_batch(&node, &info, limit).await?;
        fetch += t.elapsed();
        let t = Instant::now();
        let outcome = pruntime.sync(&batch)?;
        enclave += t.elapsed();
        batches += 1;
        messages += outcome.messages;
    }
    let total = started.elapsed();
    let blocks = pruntime.height();
    let rate = |d: Duration| blocks as f64 / d.as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "blocks": blocks,
            "messages": messages,
            "batches": batches,
            "batch": args.batch,
            "enclave_seconds": enclave.as_secs_f64(),
            "enclave_blocks_per_second": rate(enclave).round(),
            "node_rpc_seconds": fetch.as_secs_f64(),
            "end_to_end_blocks_per_second": rate(total).round(),
        })
    );
    devnet.stop();
    Ok(())
}
