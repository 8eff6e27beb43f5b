//! Encrypted query benchmark: a local network (1 validator, 1 gatekeeper, 1 worker, simulated
//! TEE) runs the confidential analytics contract with a few data points, then an analyst's
//! authorized `aggregate` query is sent to the worker's `/query` over loopback HTTP.
//!
//! - **Round trip**, one query at a time: seal and sign the request (HPKE + ed25519), POST it,
//!   the worker verifies, decrypts, runs the contract and seals the signed answer, the client
//!   opens it and checks the receipt's signature. p50 / p90 / p99 over `--queries`.
//! - **Throughput**, `--concurrency` queries in flight for `--seconds`, requests sealed
//!   beforehand and answers opened afterwards (both outside the window, checked all the same),
//!   so the window measures the worker. Queries per second, and queries per CPU-second of the
//!   pRuntime process (from /proc): the per-core figure, independent of what else shares the
//!   machine.

use anyhow::{Context as _, bail, ensure};
use clap::Parser;
use futures::{StreamExt as _, stream};
use phala_cli::{
    demo::ANALYTICS_WASM,
    devnet::{Devnet, DevnetOptions, free_ports},
    workers::Workers,
};
use phala_client::{
    Client,
    contract_ops::{self, send_query},
    contracts::{PreparedQuery, prepare_query},
};
use phala_crypto::Keypair;
use phala_pruntime::client::PruntimeClient;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Sequential queries for the round-trip figures.
    #[arg(long, default_value_t = 2_000)]
    queries: usize,
    /// Queries in flight during the throughput window.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Length of the throughput window.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

const WAIT: Duration = Duration::from_secs(120);
const QUERY: &[u8] = b"aggregate salary";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut options = DevnetOptions::new(1)?;
    options.block_interval_ms = 100;
    let mut devnet = Devnet::start(options)?;
    let result = run(&args, &mut devnet).await;
    devnet.stop();
    result
}

async fn run(args: &Args, devnet: &mut Devnet) -> anyhow::Result<()> {
    devnet.wait_ready(Duration::from_secs(60)).await?;
    let nodes = vec![devnet.rpc_url(0)];
    let mut workers = Workers::start(devnet.dir(), &nodes, 1, 1, free_ports(2)).await?;
    let result = measure(args, &nodes[0], &workers).await;
    workers.stop();
    result
}

async fn measure(args: &Args, rpc: &str, workers: &Workers) -> anyhow::Result<()> {
    let node = Client::new(rpc)?;
    let alice = Keypair::dev("alice");
    eprintln!("starting the network and deploying the analytics contract ...");
    workers.bootstrap(&node, &alice, WAIT).await?;
    let worker = workers
        .processes
        .iter()
        .find(|p| !p.gatekeeper)
        .context("no worker")?;
    let pid = worker.pruntime_pid().context("the worker is not running")?;
    let code = contract_ops::upload_code(&node, &alice, ANALYTICS_WASM).await?;
    let record = contract_ops::instantiate(
        &node,
        &alice,
        &code,
        0,
        rand::random(),
        b"min_group 3",
        WAIT,
    )
    .await?;
    let contract = record.id;
    let public_key = record.public_key.context("the contract has no key")?;
    let mut last = 0;
    for (who, value) in [("bob", 5200), ("charlie", 6100), ("dave", 4800)] {
        let input = format!("submit salary {value}");
        let sent = contract_ops::command(
            &node,
            &Keypair::dev(who),
            &contract,
            input.as_bytes(),
            10_000_000,
        )
        .await?;
        last = sent.index;
    }
    contract_ops::wait_report(&node, &contract, last, WAIT).await?;
    // The worker has executed the commands once their report is on chain; the chain's height
    // then is one every query may ask the worker to have reached.
    let min_height = node.health().await?.finalized_height;
    let pruntime = PruntimeClient::new(&worker.api)?;
    let deadline = Instant::now() + WAIT;
    while pruntime.info().await?.height < min_height {
        ensure!(Instant::now() < deadline, "the worker does not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let http = reqwest::Client::builder().timeout(WAIT).build()?;
    let prepare = || prepare_query(&alice, &contract, &public_key, QUERY, min_height);
    let expected = b"group=salary count=3 sum=16100".as_slice();

    eprintln!("warming up ...");
    for _ in 0..100 {
        round_trip(&http, &worker.api, prepare()?, expected).await?;
    }

    eprintln!("{} sequential round trips ...", args.queries);
    let mut latencies = Vec::with_capacity(args.queries);
    for _ in 0..args.queries {
        let started = Instant::now();
        round_trip(&http, &worker.api, prepare()?, expected).await?;
        latencies.push(started.elapsed());
    }
    latencies.sort();

    eprintln!(
        "{} s with {} queries in flight ...",
        args.seconds, args.concurrency
    );
    let window = Duration::from_secs(args.seconds);
    // Requests sealed beforehand and sent round-robin (a query may be asked again: each copy
    // gets its own answer, and the worker does the same work).
    let prepared: Vec<PreparedQuery> = (0..2_000).map(|_| prepare()).collect::<Result<_, _>>()?;
    let cpu_before = cpu_seconds(pid)?;
    let started = Instant::now();
    let answered: Vec<_> = stream::iter(prepared.iter().cycle())
        .take_while(|_| std::future::ready(started.elapsed() < window))
        .map(|query| {
            let http = &http;
            async move { (query, send_query(http, &worker.api, &query.request).await) }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let cpu = cpu_seconds(pid)? - cpu_before;
    for (query, response) in &answered {
        let response = response
            .as_ref()
            .map_err(|e| anyhow::anyhow!("a query failed: {e}"))?;
        check(query, response, expected)?;
    }
    let count = answered.len();

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let percentile = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];
    let figures = serde_json::json!({
        "round_trip_ms": {
            "p50": ms(percentile(50)),
            "p90": ms(percentile(90)),
            "p99": ms(percentile(99)),
            "max": latencies.last().map(|d| ms(*d)),
            "queries": latencies.len(),
        },
        "throughput": {
            "concurrency": args.concurrency,
            "queries": count,
            "seconds": elapsed.as_secs_f64(),
            "queries_per_second": (count as f64 / elapsed.as_secs_f64()).round(),
            "pruntime_cpu_seconds": cpu,
            "queries_per_core_second": (count as f64 / cpu).round(),
        },
    });
    if args.json {
        println!("{figures}");
    } else {
        let t = &figures["throughput"];
        println!(
            "round trip   p50 {:.3} ms   p90 {:.3} ms   p99 {:.3} ms   ({} queries, one at a time)",
            ms(percentile(50)),
            ms(percentile(90)),
            ms(percentile(99)),
            latencies.len()
        );
        println!(
            "throughput   {} queries/s with {} in flight; the pRuntime used {:.2} CPU-s for {} queries: {} queries per core-second",
            t["queries_per_second"], args.concurrency, cpu, count, t["queries_per_core_second"]
        );
    }
    Ok(())
}

/// One query from sealed request to opened, checked answer.
async fn round_trip(
    http: &reqwest::Client,
    worker: &str,
    query: PreparedQuery,
    expected: &[u8],
) -> anyhow::Result<()> {
    let response = send_query(http, worker, &query.request).await?;
    check(&query, &response, expected)
}

fn check(
    query: &PreparedQuery,
    response: &phala_client::contracts::QueryResponse,
    expected: &[u8],
) -> anyhow::Result<()> {
    match query.open(response)? {
        Ok(answer) if answer.starts_with(expected) => Ok(()),
        other => bail!("unexpected answer: {other:?}"),
    }
}

/// User plus system CPU time of a process so far, from /proc/<pid>/stat.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let after = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..13)
        .context("malformed stat")?
        .iter()
        .map(|f| f.parse::<u64>())
        .sum::<Result<_, _>>()?;
    // The kernel's USER_HZ, 100 on Linux.
    Ok(ticks as f64 / 100.0)
}
