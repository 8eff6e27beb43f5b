//! `phala-bench`: starts a local network of `phala-node` validators on 127.0.0.1, floods it
//! with pre-signed transfers over JSON-RPC batch requests, and measures how many are finalized
//! per second and how long each took from submission to finality.
//!
//! Timing: a transaction's submit time is taken just before its batch request is sent; its
//! finality time is when validator 0 pushed the `finalized` event of the block holding it over
//! the WebSocket subscription (the block's transaction hashes are then fetched with `block`).

use anyhow::{Context as _, anyhow, bail};
use clap::Parser;
use commonware_codec::Encode as _;
use jsonrpsee::{
    core::client::{ClientT as _, SubscriptionClientT as _},
    http_client::{HttpClient, HttpClientBuilder},
    rpc_params,
    ws_client::WsClientBuilder,
};
use phala_api::rpc::FinalizedEvent;
use phala_cli::devnet::{Devnet, DevnetOptions};
use phala_crypto::Keypair;
use phala_types::BalancesCall;
use phala_types::{Address, Call, Transaction, UNIT};
use serde::{Deserialize, Serialize};
use std::{
    collections::{BTreeMap, HashMap},
    net::TcpListener,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

/// Balance of every bench account at genesis.
const ACCOUNT_BALANCE: u128 = 1_000 * UNIT;
/// How far past the current head the transactions stay includable, in blocks.
const EXPIRY_BLOCKS: u64 = 1_000_000;
/// Request and response size limit of the benchmark's RPC clients (blocks can be megabytes).
const MAX_RPC_BYTES: u32 = 64 * 1024 * 1024;
/// The mempool refuses nonces this far past the account's (`MAX_NONCE_GAP` in phala-node).
const MAX_NONCE_GAP: usize = 4_096;

/// Signed transfers finalized per second and finality latency on a local validator network.
#[derive(Parser, Debug, Clone)]
#[command(name = "phala-bench", version)]
struct Args {
    /// Validator processes to start.
    #[arg(long, default_value_t = 4)]
    validators: usize,
    /// Funded sender accounts (`bench-<i>` dev keys, 1000 PHA each at genesis).
    #[arg(long, default_value_t = 2_000)]
    accounts: usize,
    /// Transfers to sign and submit.
    #[arg(long, default_value_t = 50_000)]
    transactions: usize,
    /// Offered load in transactions per second; 0 submits as fast as the nodes accept.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Transactions per JSON-RPC batch request [default: 256; with --rate, at most 10 ms of
    /// the rate so the offered load stays smooth].
    #[arg(long)]
    batch: Option<usize>,
    /// Parallel submitters, spread round-robin over the validators' RPC ports.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Least milliseconds between blocks (chain spec).
    #[arg(long, default_value_t = 100)]
    block_interval_ms: u64,
    /// First RPC port (validator i uses rpc-port + i) [default: free ports].
    #[arg(long)]
    rpc_port: Option<u16>,
    /// First p2p port (validator i uses p2p-port + i) [default: free ports].
    #[arg(long)]
    p2p_port: Option<u16>,
    /// Seconds to wait for finality after the last submission before giving up.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Copy the validators' logs into this directory before the network is removed.
    #[arg(long)]
    keep_logs: Option<PathBuf>,
    /// Print one JSON object with the figures instead of a table.
    #[arg(long)]
    json: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
    /// Also print every finalized block seen (height, size, timing) on stderr.
    #[arg(long)]
    timeline: bool,
}

impl Args {
    fn batch(&self) -> usize {
        match self.batch {
            Some(batch) => batch,
            None if self.rate > 0.0 => ((self.rate / 100.0) as usize).clamp(1, 256),
            None => 256,
        }
    }
}

/// A transfer ready to send: its hash and the hex of its encoding.
struct Prepared {
    hash: [u8; 32],
    hex: String,
}

/// What the submitters and the finality watcher record, shared.
struct Shared {
    t0: Instant,
    /// `t0` on the wall clock, in milliseconds since the Unix epoch (block timestamps use it).
    t0_wall_ms: f64,
    /// Per transaction: nanoseconds since `t0` plus one when sent (0: not yet).
    submitted_at: Vec<AtomicU64>,
    /// Per transaction: nanoseconds since `t0` plus one when seen finalized (0: not yet).
    finalized_at: Vec<AtomicU64>,
    by_hash: HashMap<[u8; 32], u32>,
    sent: AtomicUsize,
    accepted: AtomicUsize,
    rejected: AtomicUsize,
    finalized: AtomicUsize,
    rejections: Mutex<BTreeMap<String, usize>>,
    /// When the last batch response came back.
    submit_done_at: AtomicU64,
    height: AtomicU64,
    blocks: Mutex<Vec<BlockSeen>>,
}

impl Shared {
    fn now(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64 + 1
    }

    fn reject(&self, reason: String) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        *self
            .rejections
            .lock()
            .expect("not poisoned")
            .entry(reason)
            .or_default() += 1;
    }
}

/// A finalized block seen during the run.
struct BlockSeen {
    height: u64,
    timestamp_ms: u64,
    /// When validator 0 announced it (as in `Shared`).
    seen_at: u64,
    transactions: usize,
    ours: usize,
}

/// The part of a `block` answer the benchmark needs.
#[derive(Deserialize)]
struct BlockTxs {
    header: BlockHeader,
    transactions: Vec<String>,
}

#[derive(Deserialize)]
struct BlockHeader {
    height: u64,
    timestamp: u64,
}

/// The figures of one run.
#[derive(Serialize, Debug)]
struct Report {
    validators: usize,
    accounts: usize,
    transactions: usize,
    /// Offered transactions per second (`null`: as fast as possible).
    rate: Option<f64>,
    batch: usize,
    concurrency: usize,
    block_interval_ms: u64,
    submitted: usize,
    accepted: usize,
    rejected: usize,
    rejections: BTreeMap<String, usize>,
    finalized: usize,
    /// Accepted but never seen finalized before the timeout: they count as infinitely late in
    /// the latency percentiles (`null` in JSON), not left out.
    unfinalized: usize,
    timed_out: bool,
    /// From the first submission to the last batch answer.
    submit_secs: f64,
    /// Transactions admitted per second by the RPC (the offered load's ceiling).
    submit_tps: f64,
    /// From the first submission to the last finalization.
    duration_secs: f64,
    /// Finalized transactions over `duration_secs`.
    throughput_tps: f64,
    latency_ms: Latency,
    /// Blocks from the first to the last holding a benchmark transaction, inclusive.
    blocks: usize,
    avg_txs_per_block: f64,
    max_txs_per_block: usize,
    /// Average header-timestamp gap between those blocks.
    avg_block_interval_ms: f64,
    /// Mean over finalized transactions of the time from their block's proposal (its header
    /// timestamp) to its finalization being seen; the rest of the latency is waiting for
    /// inclusion (mempool, gossip, full blocks).
    mean_proposal_to_final_ms: f64,
}

#[derive(Serialize, Debug, Default)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.validators == 0 || args.accounts == 0 || args.transactions == 0 {
        bail!("--validators, --accounts and --transactions must be at least 1");
    }
    if args.batch() == 0 || args.concurrency == 0 {
        bail!("--batch and --concurrency must be at least 1");
    }
    if !(args.rate >= 0.0 && args.rate.is_finite()) {
        bail!("--rate must be a non-negative number");
    }
    if args.transactions.div_ceil(args.accounts) > MAX_NONCE_GAP {
        bail!(
            "{} transactions over {} accounts need nonces past the mempool's window of {MAX_NONCE_GAP}; use more --accounts",
            args.transactions,
            args.accounts
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        tokio::select! {
            result = run(args) => result,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted; validators stopped")),
        }
    })
}

async fn run(args: Args) -> anyhow::Result<()> {
    let progress = !args.quiet;
    let note = |text: String| {
        if progress {
            eprintln!("{text}");
        }
    };
    let batch = args.batch();

    let keys: Vec<Keypair> = (0..args.accounts)
        .map(|i| Keypair::dev(&format!("bench-{i}")))
        .collect();
    let (rpc_port, p2p_port) = pick_ports(&args)?;
    let mut options = DevnetOptions::new(args.validators)?;
    options.rpc_port = rpc_port;
    options.p2p_port = p2p_port;
    options.block_interval_ms = args.block_interval_ms;
    options.extra_accounts = keys.iter().map(Keypair::address).collect();
    options.extra_balance = ACCOUNT_BALANCE;
    note(format!(
        "starting {} validators (rpc {}.., p2p {}..) with {} funded accounts",
        args.validators, rpc_port, p2p_port, args.accounts
    ));
    let mut devnet = Devnet::start(options)?;
    let outcome = bench(&args, batch, &mut devnet, &keys).await;
    if let Some(dir) = &args.keep_logs {
        std::fs::create_dir_all(dir)?;
        for i in 0..devnet.validators() {
            let _ = std::fs::copy(devnet.log_path(i), dir.join(format!("node-{i}.log")));
        }
        note(format!("validator logs copied to {}", dir.display()));
    }
    devnet.stop();
    let report = outcome?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

async fn bench(
    args: &Args,
    batch: usize,
    devnet: &mut Devnet,
    keys: &[Keypair],
) -> anyhow::Result<Report> {
    let progress = !args.quiet;
    devnet
        .wait_ready(Duration::from_secs(60))
        .await
        .context("the network did not start")?;
    let client = phala_client::Client::new(&devnet.rpc_url(0))?;
    let info = client.chain_info().await?;
    let genesis = phala_api::rpc::parse_digest(&info.genesis_hash)?;
    let head = client.health().await?.finalized_height;

    // Sign everything up front: transaction i is account i % accounts' nonce i / accounts.
    let started = Instant::now();
    let sink = Keypair::dev("alice").address();
    let recipients: Vec<Address> = (0..keys.len())
        .map(|a| {
            if keys.len() == 1 {
                sink
            } else {
                keys[(a + 1) % keys.len()].address()
            }
        })
        .collect();
    let unsigned = |i: usize, fee: u128| {
        let a = i % keys.len();
        Transaction {
            signer: keys[a].address(),
            nonce: (i / keys.len()) as u64,
            fee,
            expiry: head + EXPIRY_BLOCKS,
            call: Call::Balances(BalancesCall::Transfer {
                to: recipients[a],
                amount: 1,
            }),
        }
    };
    // The encoded size, and so the fee, does not depend on the fee's value (fixed width).
    let fee = phala_client::minimum_fee(
        &info.fees,
        &keys[0].sign_transaction(&genesis, unsigned(0, 0)),
    );
    let txs = sign_all(args.transactions, |i| {
        let stx = keys[i % keys.len()].sign_transaction(&genesis, unsigned(i, fee));
        Prepared {
            hash: stx.hash().0,
            hex: hex::encode(stx.encode()),
        }
    });
    if progress {
        eprintln!(
            "signed {} transfers in {:.2} s (fee {fee} units each)",
            txs.len(),
            started.elapsed().as_secs_f64()
        );
    }
    let by_hash: HashMap<[u8; 32], u32> = txs
        .iter()
        .enumerate()
        .map(|(i, tx)| (tx.hash, i as u32))
        .collect();
    if by_hash.len() != txs.len() {
        bail!("two prepared transactions have the same hash");
    }
    let n = txs.len();
    let shared = Arc::new(Shared {
        t0: Instant::now(),
        t0_wall_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs_f64()
            * 1e3,
        submitted_at: (0..n).map(|_| AtomicU64::new(0)).collect(),
        finalized_at: (0..n).map(|_| AtomicU64::new(0)).collect(),
        by_hash,
        sent: AtomicUsize::new(0),
        accepted: AtomicUsize::new(0),
        rejected: AtomicUsize::new(0),
        finalized: AtomicUsize::new(0),
        rejections: Mutex::new(BTreeMap::new()),
        submit_done_at: AtomicU64::new(0),
        height: AtomicU64::new(head),
        blocks: Mutex::new(Vec::new()),
    });

    // Watch finality on validator 0 before anything is sent.
    let ws_url = devnet.rpc_url(0).replacen("http://", "ws://", 1);
    let ws = WsClientBuilder::default()
        .max_response_size(MAX_RPC_BYTES)
        .max_buffer_capacity_per_subscription(65_536)
        .build(&ws_url)
        .await
        .with_context(|| format!("cannot open a WebSocket to {ws_url}"))?;
    let mut subscription = ws
        .subscribe::<FinalizedEvent, _>(
            "subscribe_finalized",
            rpc_params![],
            "unsubscribe_finalized",
        )
        .await
        .context("subscribe_finalized")?;
    let start_height = client.health().await?.finalized_height;
    let (events_tx, mut events_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, u64)>();
    let receiver = {
        let shared = shared.clone();
        tokio::spawn(async move {
            while let Some(event) = subscription.next().await {
                let at = shared.now();
                match event {
                    Ok(event) => {
                        if events_tx.send((event.header.height, at)).is_err() {
                            break;
                        }
                    }
                    Err(error) => eprintln!("undecodable finalized event: {error}"),
                }
            }
        })
    };
    let fetcher = {
        let shared = shared.clone();
        let http = rpc_client(&devnet.rpc_url(0))?;
        tokio::spawn(async move {
            let mut last = start_height;
            while let Some((height, at)) = events_rx.recv().await {
                // Events can be missed by a lagging subscriber: fill gaps from `block`, timed
                // at the event that revealed them.
                for h in last + 1..=height {
                    let block: BlockTxs = match http.request("block", rpc_params![h]).await {
                        Ok(block) => block,
                        Err(error) => {
                            eprintln!("cannot fetch block {h}: {error}");
                            continue;
                        }
                    };
                    let mut ours = 0;
                    for hash in &block.transactions {
                        let Some(index) = hex::decode(hash)
                            .ok()
                            .and_then(|b| <[u8; 32]>::try_from(b).ok())
                            .and_then(|b| shared.by_hash.get(&b).copied())
                        else {
                            continue;
                        };
                        ours += 1;
                        if shared.finalized_at[index as usize].swap(at, Ordering::Relaxed) == 0 {
                            shared.finalized.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    shared.blocks.lock().expect("not poisoned").push(BlockSeen {
                        height: block.header.height,
                        timestamp_ms: block.header.timestamp,
                        seen_at: at,
                        transactions: block.transactions.len(),
                        ours,
                    });
                    shared.height.store(h, Ordering::Relaxed);
                }
                last = last.max(height);
            }
        })
    };

    // Submit.
    let txs = Arc::new(txs);
    let next_batch = Arc::new(AtomicUsize::new(0));
    let send_start = Instant::now();
    let mut submitters = Vec::new();
    for j in 0..args.concurrency {
        let http = rpc_client(&devnet.rpc_url(j % devnet.validators()))?;
        let (txs, shared, next_batch) = (txs.clone(), shared.clone(), next_batch.clone());
        let rate = args.rate;
        submitters.push(tokio::spawn(async move {
            loop {
                let start = next_batch.fetch_add(1, Ordering::Relaxed) * batch;
                if start >= txs.len() {
                    break;
                }
                let end = (start + batch).min(txs.len());
                // At a fixed rate, latency counts from the time a transaction was due, not from
                // when a backed-up submitter got to send it (no coordinated omission).
                let sent_at = if rate > 0.0 {
                    let due = send_start + Duration::from_secs_f64(start as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                    due.saturating_duration_since(shared.t0).as_nanos() as u64 + 1
                } else {
                    shared.now()
                };
                let hexes: Vec<&str> = txs[start..end].iter().map(|tx| tx.hex.as_str()).collect();
                for at in &shared.submitted_at[start..end] {
                    at.store(sent_at, Ordering::Relaxed);
                }
                shared.sent.fetch_add(end - start, Ordering::Relaxed);
                let response = submit_waiting_for_budget(&http, hexes).await;
                match response {
                    Ok(answers) => {
                        for answer in answers {
                            match answer.get("error") {
                                None => {
                                    shared.accepted.fetch_add(1, Ordering::Relaxed);
                                }
                                Some(error) => shared.reject(
                                    error["code"].as_str().unwrap_or("unknown").to_string(),
                                ),
                            }
                        }
                    }
                    Err(error) => {
                        let text = error.to_string();
                        let reason = if text.contains("413") {
                            "request body too large for the node (HTTP 413): use a smaller --batch"
                                .to_string()
                        } else {
                            format!("request failed: {text}")
                        };
                        for _ in start..end {
                            shared.reject(reason.clone());
                        }
                    }
                }
                shared
                    .submit_done_at
                    .fetch_max(shared.now(), Ordering::Relaxed);
            }
        }));
    }
    let progress_task = progress.then(|| {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                eprintln!(
                    "[{:6.1} s] sent {:>7}  accepted {:>7}  rejected {:>5}  finalized {:>7}  height {}",
                    shared.t0.elapsed().as_secs_f64(),
                    shared.sent.load(Ordering::Relaxed),
                    shared.accepted.load(Ordering::Relaxed),
                    shared.rejected.load(Ordering::Relaxed),
                    shared.finalized.load(Ordering::Relaxed),
                    shared.height.load(Ordering::Relaxed),
                );
            }
        })
    });
    for submitter in submitters {
        submitter.await.context("a submitter panicked")?;
    }

    // Wait for everything accepted to be finalized.
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let timed_out = loop {
        let accepted = shared.accepted.load(Ordering::Relaxed);
        if shared.finalized.load(Ordering::Relaxed) >= accepted {
            break false;
        }
        if Instant::now() > deadline {
            break true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    if let Some(task) = progress_task {
        task.abort();
    }
    receiver.abort();
    fetcher.abort();
    drop(ws);
    Ok(report(args, batch, &shared, timed_out))
}

/// An HTTP JSON-RPC client with room for large batches and blocks.
fn rpc_client(url: &str) -> anyhow::Result<HttpClient> {
    Ok(HttpClientBuilder::default()
        .max_request_size(MAX_RPC_BYTES)
        .max_response_size(MAX_RPC_BYTES)
        .request_timeout(Duration::from_secs(120))
        .build(url)?)
}

/// Builds `count` items with `make`, spread over all cores.
fn sign_all(count: usize, make: impl Fn(usize) -> Prepared + Sync) -> Vec<Prepared> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(count);
    let chunk = count.div_ceil(threads);
    let make = &make;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t * chunk..((t + 1) * chunk).min(count))
                        .map(make)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a signing thread panicked"))
            .collect()
    })
}

/// The requested ports, or runs of free ones (validator i uses base + i).
fn pick_ports(args: &Args) -> anyhow::Result<(u16, u16)> {
    let n = args.validators as u16;
    let free_run = |base: u16, avoid: Option<u16>| {
        (0..n).all(|i| {
            let port = base.checked_add(i);
            port.is_some_and(|p| {
                avoid.is_none_or(|a| p < a || p >= a + n)
                    && TcpListener::bind(("127.0.0.1", p)).is_ok()
            })
        })
    };
    let find = |avoid: Option<u16>| -> anyhow::Result<u16> {
        for _ in 0..100 {
            let probe = TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port();
            if free_run(probe, avoid) {
                return Ok(probe);
            }
        }
        bail!("cannot find {n} free consecutive ports; pass --rpc-port and --p2p-port")
    };
    let rpc = match args.rpc_port {
        Some(port) => port,
        None => find(args.p2p_port)?,
    };
    let p2p = match args.p2p_port {
        Some(port) => port,
        None => find(Some(rpc))?,
    };
    Ok((rpc, p2p))
}

fn report(args: &Args, batch: usize, shared: &Shared, timed_out: bool) -> Report {
    let secs = |ns: u64| ns.saturating_sub(1) as f64 / 1e9;
    let first_submit = shared
        .submitted_at
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .filter(|&t| t > 0)
        .min()
        .unwrap_or(1);
    let mut latencies = Vec::new();
    let mut last_final = first_submit;
    for (sent, done) in shared.submitted_at.iter().zip(&shared.finalized_at) {
        let (sent, done) = (sent.load(Ordering::Relaxed), done.load(Ordering::Relaxed));
        if sent > 0 && done > 0 {
            latencies.push(done.saturating_sub(sent) as f64 / 1e6);
            last_final = last_final.max(done);
        }
    }
    // Accepted transactions that never finalized count as infinitely late, so the
    // percentiles they reach say so instead of leaving them out.
    let finalized = shared.finalized.load(Ordering::Relaxed);
    let accepted = shared.accepted.load(Ordering::Relaxed);
    let unfinalized = accepted.saturating_sub(finalized);
    latencies.extend(std::iter::repeat_n(f64::INFINITY, unfinalized));
    latencies.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        if latencies.is_empty() {
            return 0.0;
        }
        let rank = ((p * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
        latencies[rank - 1]
    };
    let latency = Latency {
        p50: percentile(0.50),
        p90: percentile(0.90),
        p99: percentile(0.99),
        max: latencies.last().copied().unwrap_or(0.0),
        mean: if finalized == 0 {
            0.0
        } else {
            latencies.iter().filter(|l| l.is_finite()).sum::<f64>() / finalized as f64
        },
    };
    let duration = secs(last_final) - secs(first_submit);
    let submit_secs = secs(shared.submit_done_at.load(Ordering::Relaxed)) - secs(first_submit);

    let blocks = shared.blocks.lock().expect("not poisoned");
    // Seconds after the first submission that a block was proposed (its header timestamp, on
    // this machine's clock like everything else) and that its finalization was seen.
    let proposed =
        |b: &BlockSeen| (b.timestamp_ms as f64 - shared.t0_wall_ms) / 1e3 - secs(first_submit);
    let seen = |b: &BlockSeen| secs(b.seen_at) - secs(first_submit);
    if args.timeline {
        eprintln!("height  proposed_s  finalized_s  txs  bench_txs");
        for b in blocks.iter() {
            eprintln!(
                "{:>6}  {:>10.3}  {:>11.3}  {:>5}  {:>9}",
                b.height,
                proposed(b),
                seen(b),
                b.transactions,
                b.ours
            );
        }
    }
    let ours: usize = blocks.iter().map(|b| b.ours).sum();
    let mean_proposal_to_final_ms = if ours == 0 {
        0.0
    } else {
        blocks
            .iter()
            .map(|b| (seen(b) - proposed(b)) * 1e3 * b.ours as f64)
            .sum::<f64>()
            / ours as f64
    };
    let first = blocks.iter().position(|b| b.ours > 0);
    let last = blocks.iter().rposition(|b| b.ours > 0);
    let window = match (first, last) {
        (Some(first), Some(last)) => &blocks[first..=last],
        _ => &blocks[..0],
    };
    let avg_block_interval_ms = match (window.first(), window.last()) {
        (Some(a), Some(b)) if b.height > a.height => {
            (b.timestamp_ms - a.timestamp_ms) as f64 / (b.height - a.height) as f64
        }
        _ => 0.0,
    };
    Report {
        validators: args.validators,
        accounts: args.accounts,
        transactions: args.transactions,
        rate: (args.rate > 0.0).then_some(args.rate),
        batch,
        concurrency: args.concurrency,
        block_interval_ms: args.block_interval_ms,
        submitted: shared.sent.load(Ordering::Relaxed),
        accepted,
        rejected: shared.rejected.load(Ordering::Relaxed),
        rejections: shared.rejections.lock().expect("not poisoned").clone(),
        finalized,
        unfinalized,
        timed_out,
        submit_secs,
        submit_tps: if submit_secs > 0.0 {
            accepted as f64 / submit_secs
        } else {
            0.0
        },
        duration_secs: duration,
        throughput_tps: if duration > 0.0 {
            finalized as f64 / duration
        } else {
            0.0
        },
        latency_ms: latency,
        blocks: window.len(),
        avg_txs_per_block: if window.is_empty() {
            0.0
        } else {
            window.iter().map(|b| b.ours).sum::<usize>() as f64 / window.len() as f64
        },
        max_txs_per_block: window.iter().map(|b| b.ours).max().unwrap_or(0),
        avg_block_interval_ms,
        mean_proposal_to_final_ms,
    }
}

fn print_table(r: &Report) {
    let rate = match r.rate {
        Some(rate) => format!("{rate} tx/s offered"),
        None => "max rate".into(),
    };
    println!(
        "phala-bench: {} validator(s), {} accounts, {} transfers, {rate}, batch {} x {} submitters, block interval {} ms",
        r.validators, r.accounts, r.transactions, r.batch, r.concurrency, r.block_interval_ms
    );
    println!(
        "  submitted    {:>9}   accepted {}, rejected {}",
        r.submitted, r.accepted, r.rejected
    );
    for (reason, count) in &r.rejections {
        println!("    rejected   {count:>9}   {reason}");
    }
    println!(
        "  finalized    {:>9}   {}",
        r.finalized,
        if r.timed_out {
            format!("({} accepted never finalized: timed out)", r.unfinalized)
        } else {
            "(all accepted)".into()
        }
    );
    println!(
        "  submission   {:>9.2} s {:>9.0} tx/s admitted by RPC",
        r.submit_secs, r.submit_tps
    );
    println!(
        "  duration     {:>9.2} s   first submit to last finalization",
        r.duration_secs
    );
    println!("  throughput   {:>9.0} tx/s finalized", r.throughput_tps);
    let l = &r.latency_ms;
    println!(
        "  latency ms   p50 {:.0}   p90 {:.0}   p99 {:.0}   max {:.0}   mean {:.0}",
        l.p50, l.p90, l.p99, l.max, l.mean
    );
    println!(
        "  blocks       {:>9}   avg {:.0} tx/block, max {}, avg interval {:.0} ms",
        r.blocks, r.avg_txs_per_block, r.max_txs_per_block, r.avg_block_interval_ms
    );
    println!(
        "  finality     {:>9.0} ms mean from a block's proposal to its finalization",
        r.mean_proposal_to_final_ms
    );
}

/// Submits a batch, waiting as long as the node says whenever the connection has spent its
/// request budget (as `phala-client` does): the wait counts in the batch's latency.
async fn submit_waiting_for_budget(
    http: &HttpClient,
    hexes: Vec<&str>,
) -> Result<Vec<serde_json::Value>, jsonrpsee::core::ClientError> {
    loop {
        let response = http
            .request("submit_transactions", rpc_params![hexes.clone()])
            .await;
        match &response {
            Err(jsonrpsee::core::ClientError::Call(error))
                if error.code() == phala_client::OVER_BUDGET =>
            {
                let wait = error
                    .data()
                    .and_then(|data| serde_json::from_str::<serde_json::Value>(data.get()).ok())
                    .and_then(|data| data["retry_after_ms"].as_u64())
                    .unwrap_or(100);
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            _ => return response,
        }
    }
}
