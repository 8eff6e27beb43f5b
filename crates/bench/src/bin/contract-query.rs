//! Encrypted query benchmark: a local network (1 validator, 1 gatekeeper, 1 worker, simulated
//! TEE) runs the confidential analytics contract with a few data points, then an analyst's
//! authorized `aggregate` query is sent to the worker's `/query` over loopback HTTP.
//!
//! Both ways of asking are measured: signed queries (each sealed with HPKE and signed, `/query`)
//! and queries in a session (`/session/query`, keyed from one signed opening).
//!
//! - **Round trip**, one query at a time: seal (and sign) the request, POST it, the worker
//!   verifies, decrypts, runs the contract and seals the signed answer, the client opens it and
//!   checks the receipt's signature. p50 / p90 / p99 over `--queries`.
//! - **Throughput**, `--concurrency` queries in flight for `--seconds`, requests sealed
//!   beforehand and answers opened afterwards (both outside the window, checked all the same),
//!   so the window measures the worker. Queries per second, and queries per CPU-second of the
//!   pRuntime process (from /proc): the per-core figure, independent of what else shares the
//!   machine.

use anyhow::{Context as _, bail, ensure};
use clap::Parser;
use futures::{StreamExt as _, stream};
use phala_api::query::{PreparedQuery, PreparedSessionQuery, QueryResponse, prepare_query};
use phala_bench::cpu_seconds;
use phala_cli::{
    demo::{ANALYTICS_WASM, analytics_deployment},
    devnet::{Devnet, DevnetOptions, free_ports},
    workers::Workers,
};
use phala_client::{
    Client,
    contract_ops::{self, open_session, send_query, send_session_query},
    pruntime::PruntimeClient,
};
use phala_crypto::Keypair;
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
    let record = contract_ops::instantiate(&node, &alice, analytics_deployment(code), WAIT).await?;
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
    let expected = b"group=salary count=3 sum=16100".as_slice();
    let plain = || {
        prepare_query(&alice, &contract, &public_key, QUERY, min_height)
            .map(Prepared::Plain)
            .map_err(anyhow::Error::from)
    };
    let opening = prepare_query(&alice, &contract, &public_key, b"", 0)?;
    let session = open_session(&http, &worker.api, opening).await?;
    let in_session = || Ok(Prepared::Session(session.prepare(QUERY, min_height)));
    let ask = Asker {
        http: &http,
        worker: &worker.api,
        expected,
        pid,
    };
    let mut figures = serde_json::Map::new();
    for (mode, prepare) in [
        ("signed", &plain as &dyn Fn() -> anyhow::Result<Prepared>),
        ("session", &in_session),
    ] {
        eprintln!("{mode} queries ...");
        let measured = ask.measure(args, prepare).await?;
        if !args.json {
            measured.print(mode, args.concurrency);
        }
        figures.insert(mode.into(), measured.json(args.concurrency));
    }
    if args.json {
        println!("{}", serde_json::Value::Object(figures));
    }
    Ok(())
}

/// A query ready to send: signed and sealed on its own, or in a session.
enum Prepared {
    Plain(PreparedQuery),
    Session(PreparedSessionQuery),
}

impl Prepared {
    async fn send(
        &self,
        http: &reqwest::Client,
        worker: &str,
    ) -> Result<QueryResponse, contract_ops::QueryFailure> {
        match self {
            Prepared::Plain(query) => send_query(http, worker, &query.request).await,
            Prepared::Session(query) => send_session_query(http, worker, &query.query).await,
        }
    }

    fn check(&self, response: &QueryResponse, expected: &[u8]) -> anyhow::Result<()> {
        let answer = match self {
            Prepared::Plain(query) => query.open(response)?,
            Prepared::Session(query) => query.open(response)?,
        };
        match answer {
            Ok(answer) if answer.starts_with(expected) => Ok(()),
            other => bail!("unexpected answer: {other:?}"),
        }
    }
}

/// Where queries go and what they must answer.
struct Asker<'a> {
    http: &'a reqwest::Client,
    worker: &'a str,
    expected: &'a [u8],
    pid: u32,
}

/// One mode's figures.
struct Measured {
    latencies: Vec<Duration>,
    count: usize,
    elapsed: Duration,
    cpu: f64,
}

impl Asker<'_> {
    async fn round_trip(&self, query: Prepared) -> anyhow::Result<()> {
        let response = query.send(self.http, self.worker).await?;
        query.check(&response, self.expected)
    }

    async fn measure(
        &self,
        args: &Args,
        prepare: &dyn Fn() -> anyhow::Result<Prepared>,
    ) -> anyhow::Result<Measured> {
        for _ in 0..100 {
            self.round_trip(prepare()?).await?;
        }
        let mut latencies = Vec::with_capacity(args.queries);
        for _ in 0..args.queries {
            let started = Instant::now();
            self.round_trip(prepare()?).await?;
            latencies.push(started.elapsed());
        }
        latencies.sort();

        let window = Duration::from_secs(args.seconds);
        // Requests sealed beforehand and sent round-robin (a query may be asked again: each
        // copy gets its own answer, and the worker does the same work).
        let prepared: Vec<Prepared> = (0..2_000).map(|_| prepare()).collect::<Result<_, _>>()?;
        let cpu_before = cpu_seconds(self.pid)?;
        let started = Instant::now();
        let answered: Vec<_> = stream::iter(prepared.iter().cycle())
            .take_while(|_| std::future::ready(started.elapsed() < window))
            .map(|query| async move { (query, query.send(self.http, self.worker).await) })
            .buffer_unordered(args.concurrency)
            .collect()
            .await;
        let elapsed = started.elapsed();
        let cpu = cpu_seconds(self.pid)? - cpu_before;
        for (query, response) in &answered {
            let response = response
                .as_ref()
                .map_err(|e| anyhow::anyhow!("a query failed: {e}"))?;
            query.check(response, self.expected)?;
        }
        Ok(Measured {
            latencies,
            count: answered.len(),
            elapsed,
            cpu,
        })
    }
}

impl Measured {
    fn percentile_ms(&self, p: usize) -> f64 {
        let index = (self.latencies.len() * p / 100).min(self.latencies.len().saturating_sub(1));
        self.latencies
            .get(index)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    }

    fn per_second(&self) -> f64 {
        (self.count as f64 / self.elapsed.as_secs_f64()).round()
    }

    fn per_core_second(&self) -> f64 {
        (self.count as f64 / self.cpu).round()
    }

    fn json(&self, concurrency: usize) -> serde_json::Value {
        serde_json::json!({
            "round_trip_ms": {
                "p50": self.percentile_ms(50),
                "p90": self.percentile_ms(90),
                "p99": self.percentile_ms(99),
                "queries": self.latencies.len(),
            },
            "throughput": {
                "concurrency": concurrency,
                "queries": self.count,
                "seconds": self.elapsed.as_secs_f64(),
                "queries_per_second": self.per_second(),
                "pruntime_cpu_seconds": self.cpu,
                "queries_per_core_second": self.per_core_second(),
            },
        })
    }

    fn print(&self, mode: &str, concurrency: usize) {
        println!(
            "{mode:<8} round trip p50 {:.3} ms   p90 {:.3} ms   p99 {:.3} ms   ({} queries, one at a time)",
            self.percentile_ms(50),
            self.percentile_ms(90),
            self.percentile_ms(99),
            self.latencies.len()
        );
        println!(
            "{mode:<8} throughput {} queries/s with {concurrency} in flight; the pRuntime used {:.2} CPU-s for {} queries: {} queries per core-second",
            self.per_second(),
            self.cpu,
            self.count,
            self.per_core_second()
        );
    }
}
