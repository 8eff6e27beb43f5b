//! The worst call of each RPC method a stranger may make, at the largest inputs the chain and
//! the params decoders allow: what one request costs the node that serves it. Requests go
//! through the node's real `RpcModule` in process (params decoding, the handler, the JSON
//! answer), without HTTP and without the per-connection budget that limits how often they come.
//!
//! The chain it serves: a dev chain with 14,000 funded accounts (a proof's depth grows with the
//! log of the state, so a state ten times larger adds about 3 siblings per proof; a larger
//! one is out of reach here because every block re-hashes the whole state, which issue 11's
//! authenticated store removes), 2,000 registered workers, 12,000 small relayed upward messages
//! in blocks filled to the weight limit (about 1,780 downward messages each: the count limit
//! of `stream_messages` binds), 800 messages of 32 KiB (about 127 a block: its byte budget binds),
//! a block of contract code filled to the size a leader builds (4 MiB), and 20,000 empty
//! blocks (the longest `headers` range), every block certified. Not measured: `contract` and
//! `contract_report` (state lookups like `state_value`, which need a cluster with keys), and
//! the calls that answer from memory (`health`, `chain_info`, `transaction_status`,
//! `finalized_head`). A block of commands would carry about 3.6 times more downward messages
//! than a block of relayed ones, and a block of contract reports (16 messages each) about 16
//! times more; `outbox` costs in proportion to them. `submit_transactions` is measured with
//! transfers: registrations verify at most `ledger::QUOTES_PER_SECOND` quotes a second.
//!
//! `cargo bench -p phala-node --bench rpc_worst_case` (prints p50 and max of 10 calls, the
//! request and answer sizes, their ratio: what a byte of request makes the node send, the
//! units the call reserves before it runs (`rpc_budget::reserve`, which should be about the
//! worst case) and those its slowest run was charged (`rpc_budget::units`: its time in units
//! of 10 µs), and how many such calls one connection's budget pays each second).

use anyhow::{Context, anyhow};
use bytes::Bytes;
use commonware_codec::{Encode, EncodeSize};
use commonware_cryptography::{Hasher, Sha256};
use commonware_utils::TestRng;
use futures::executor::block_on;
use phala_api::params::{MAX_BACKFILL, MAX_STATE_KEY, MAX_STATE_VALUES, MAX_SUBMIT_BATCH};
use phala_chain::BlockContext;
use phala_crypto::Keypair;
use phala_node::{
    certify::Certifier,
    follower::VerifiedChain,
    ledger::Ledger,
    mempool::AdmissionError,
    rpc::{self, BlockSource, RpcContext},
    rpc_budget,
    spec::{ChainSpec, GenesisOptions, generate_with},
};
use phala_types::{
    Address, BalancesCall, Call, ContractsCall, Evidence, MqCall, RegistryCall, SignedTransaction,
    Transaction, UNIT, UpwardMessage, WorkerRegistration, limits, registry::report_data,
};
use serde_json::{Value, json};
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

const ACCOUNTS: usize = 10_000;
const WORKERS: usize = 2_000;
const MESSAGE_BLOCKS: usize = 6;
const LARGE_MESSAGE_BLOCKS: usize = 4;
const EMPTY_BLOCKS: u64 = 20_000;
const CODE_SIZE: usize = phala_types::contracts::MAX_CODE;
const RUNS: usize = 10;

/// A certified chain served by one in-process RPC module.
struct Fixture {
    spec: ChainSpec,
    /// The spec's hash, kept: hashing a spec of many allocations takes a while.
    genesis: phala_types::Digest,
    ledger: Arc<Ledger>,
    chain: Arc<VerifiedChain>,
    certifier: Certifier,
    /// Fee payers: enough of them that no sender's nonces run past the mempool's gap.
    payers: Vec<Keypair>,
    nonces: Vec<u64>,
}

impl Fixture {
    fn new(origin: &Keypair) -> anyhow::Result<Self> {
        let keys = vec![Keypair::dev("rpc-bench-validator")];
        let payers: Vec<Keypair> = (0..MAX_SUBMIT_BATCH as u64)
            .map(|i| Keypair::from_secret(Sha256::hash(&[&i.to_be_bytes()]).0))
            .collect();
        let mut options = GenesisOptions::local_dev("rpc-bench", 1);
        options.extra_accounts = payers.iter().map(Keypair::address).collect();
        options.extra_accounts.extend(
            (0..ACCOUNTS as u64).map(|i| Address(Sha256::hash(&[b"a", &i.to_be_bytes()]).0)),
        );
        options.extra_balance = 1_000 * UNIT;
        let (mut spec, validator_keys) = generate_with(&options, &keys, TestRng::new(9))?;
        spec.genesis.upward_origins.push(origin.address());
        let (ledger, genesis) = block_on(Ledger::for_testing(&spec));
        let certifier = Certifier::new(&spec, &validator_keys)?;
        let nonces = vec![0; payers.len()];
        Ok(Fixture {
            genesis: spec.hash(),
            spec,
            ledger: Arc::new(ledger),
            chain: Arc::new(VerifiedChain::new(genesis)),
            certifier,
            payers,
            nonces,
        })
    }

    /// Signs `call` by payer `who` with its next nonce.
    fn sign(&mut self, who: usize, call: Call) -> SignedTransaction {
        let payer = &self.payers[who];
        let tx = Transaction {
            signer: payer.address(),
            nonce: self.nonces[who],
            // Above every call's minimum here (a 192 KiB upload's is about 0.017 PHA).
            fee: UNIT / 20,
            expiry: u64::MAX,
            call,
        };
        self.nonces[who] += 1;
        payer.sign_transaction(&self.genesis, tx)
    }

    fn submit(&self, txs: Vec<SignedTransaction>) -> anyhow::Result<()> {
        for result in self.ledger.submit_batch(txs) {
            result.map_err(|e| anyhow!("admission: {e}"))?;
        }
        Ok(())
    }

    /// Builds, finalizes and certifies the next block from the mempool; its height and size.
    fn next_block(&self) -> anyhow::Result<(u64, usize)> {
        let parent = self.ledger.head();
        let ctx = BlockContext {
            height: parent.height + 1,
            timestamp: parent.timestamp + 1,
            proposer: self.spec.validators[0].address,
        };
        let block = block_on(self.ledger.build(&parent, ctx)).context("build")?;
        block_on(self.ledger.finalize(&block))?;
        let certificate = self.certifier.certify(ctx.height, block.header.hash())?;
        let size = block.encode_size();
        self.chain.push_certified(&self.spec, block, certificate)?;
        Ok((ctx.height, size))
    }

    fn module(&self) -> anyhow::Result<jsonrpsee::RpcModule<RpcContext>> {
        rpc::module(RpcContext {
            ledger: self.ledger.clone(),
            blocks: BlockSource::Verified(self.chain.clone()),
            upstream: None,
            info: rpc::chain_info(&self.spec),
            validator: None,
        })
    }
}

/// Registers [`WORKERS`] workers with simulated evidence (a dev chain).
fn register_workers(fixture: &mut Fixture) -> anyhow::Result<()> {
    let genesis = fixture.genesis;
    let txs: Vec<SignedTransaction> = (0..WORKERS)
        .map(|i| {
            let identity = Keypair::from_secret(Sha256::hash(&[b"w", &i.to_be_bytes()]).0);
            let operator = fixture.payers[i].address();
            let registration = WorkerRegistration {
                identity: identity.address(),
                ecdh: [7; 32],
                operator,
                cores: 4,
                benchmark: 1_000,
                freshness: 0,
                gatekeeper: false,
                evidence: Evidence::Simulated {
                    measurement: [0xaa; 32],
                    report_data: report_data(&identity.address(), &[7; 32], genesis.as_ref(), 0),
                },
            };
            let signed = identity.sign_registration(&genesis, registration);
            fixture.sign(i, Call::Registry(RegistryCall::RegisterWorker(signed)))
        })
        .collect();
    // The node verifies at most `QUOTES_PER_SECOND` registrations: wait as it says.
    for tx in txs {
        loop {
            match fixture.ledger.submit(tx.clone()) {
                Ok(_) => break,
                Err(AdmissionError::Busy { retry_after_ms }) => {
                    std::thread::sleep(Duration::from_millis(retry_after_ms))
                }
                Err(error) => return Err(anyhow!("admission: {error}")),
            }
        }
    }
    while fixture.ledger.mempool_len() > 0 {
        fixture.next_block()?;
    }
    Ok(())
}

/// Fills `blocks` blocks with relayed upward messages of `payload` bytes (one downward
/// message each, on the `All` stream), continuing the origin's `sequence`; the height of the
/// first block, how many messages it holds, and the stream sequence of its first message.
fn fill_message_blocks(
    fixture: &mut Fixture,
    origin: &Keypair,
    sequence: &mut u64,
    blocks: usize,
    payload: usize,
) -> anyhow::Result<(u64, usize, u64)> {
    let genesis = fixture.genesis;
    let first_sequence = *sequence;
    let mut first = None;
    for _ in 0..blocks {
        // More than a block holds, from one payer so their order is the origin's.
        let per_block = if payload > 1_000 { 200 } else { 2_000 };
        let txs: Vec<SignedTransaction> = (0..per_block)
            .map(|_| {
                let mut message = UpwardMessage {
                    origin: origin.address(),
                    topic: Bytes::from_static(b"bench"),
                    payload: Bytes::from(vec![0x5a; payload]),
                    sequence: *sequence,
                    signature: [0; 64],
                };
                *sequence += 1;
                origin.sign_upward(&genesis, &mut message);
                fixture.sign(0, Call::Mq(MqCall::SubmitUpward(message)))
            })
            .collect();
        fixture.submit(txs)?;
        let (height, _) = fixture.next_block()?;
        let messages = block_on(fixture.ledger.outbox(height))?.map_or(0, |o| o.messages.len());
        first.get_or_insert((height, messages));
    }
    while fixture.ledger.mempool_len() > 0 {
        fixture.next_block()?;
    }
    let (height, messages) = first.context("no message block")?;
    Ok((height, messages, first_sequence))
}

/// One block of contract code, as large as a leader builds; its height, size and one hash.
fn fill_code_block(fixture: &mut Fixture) -> anyhow::Result<(u64, usize, [u8; 32])> {
    let codes: Vec<Bytes> = (0..40u8)
        .map(|i| {
            let mut code = b"\0asm\x01\0\0\0".to_vec();
            code.resize(CODE_SIZE, i);
            Bytes::from(code)
        })
        .collect();
    let hash = phala_types::contracts::code_hash(&codes[0]);
    let txs = codes
        .into_iter()
        .enumerate()
        .map(|(i, code)| fixture.sign(i + 1, Call::Contracts(ContractsCall::UploadCode { code })))
        .collect();
    fixture.submit(txs)?;
    let (height, size) = fixture.next_block()?;
    while fixture.ledger.mempool_len() > 0 {
        fixture.next_block()?;
    }
    Ok((height, size, hash))
}

/// A request's answer size and the p50 and max of [`RUNS`] calls.
struct Measured {
    request: usize,
    answer: usize,
    p50: Duration,
    max: Duration,
}

/// Calls `method` [`RUNS`] times, with `params(run)`.
async fn measure(
    module: &jsonrpsee::RpcModule<RpcContext>,
    method: &str,
    params: impl Fn(usize) -> Value,
) -> anyhow::Result<Measured> {
    let mut times = Vec::with_capacity(RUNS);
    let (mut request_size, mut answer) = (0, 0);
    for run in 0..RUNS {
        let request =
            json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params(run)}).to_string();
        request_size = request.len();
        let start = Instant::now();
        let (response, _) = module.raw_json_request(&request, 1).await?;
        times.push(start.elapsed());
        let parsed: Value = serde_json::from_str(response.get())?;
        if let Some(error) = parsed.get("error") {
            return Err(anyhow!("{method} failed: {error}"));
        }
        // In process nothing caps the answer; a served one must fit what clients read.
        anyhow::ensure!(
            response.get().len() <= rpc::MAX_RESPONSE_BYTES as usize,
            "{method} answered {} bytes, more than the server sends",
            response.get().len()
        );
        answer = response.get().len();
    }
    times.sort();
    Ok(Measured {
        request: request_size,
        answer,
        p50: times[RUNS / 2],
        max: times[RUNS - 1],
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let origin = Keypair::dev("rpc-bench-origin");
    let setup = Instant::now();
    let mut fixture = Fixture::new(&origin)?;
    register_workers(&mut fixture)?;
    let mut sequence = 0;
    let (message_block, messages, _) =
        fill_message_blocks(&mut fixture, &origin, &mut sequence, MESSAGE_BLOCKS, 7)?;
    // Messages as large as a relayed payload may be: the byte budget, not the count, binds.
    let (_, large_messages, large_from) = fill_message_blocks(
        &mut fixture,
        &origin,
        &mut sequence,
        LARGE_MESSAGE_BLOCKS,
        limits::MAX_PAYLOAD,
    )?;
    let (code_block, code_block_size, code_hash) = fill_code_block(&mut fixture)?;
    for _ in 0..EMPTY_BLOCKS {
        fixture.next_block()?;
    }
    let head = fixture.ledger.head().height;
    println!(
        "setup {:.1} s: {ACCOUNTS} accounts, {WORKERS} workers, {messages} messages in block \
         {message_block} ({large_messages} of 32 KiB in the first large one), a \
         {code_block_size}-byte block {code_block}, head {head}",
        setup.elapsed().as_secs_f64()
    );

    let module = fixture.module()?;
    let long_key = |i: usize| hex::encode(vec![i as u8; MAX_STATE_KEY]);
    let streams: Vec<Value> = (0..16u64).map(|i| json!([{"kind": "all"}, i])).collect();
    let backfill: Vec<Value> = (0..MAX_BACKFILL as u64)
        .map(|i| json!([{"kind": "all"}, i]))
        .collect();
    // Transfers admitted by the mempool: a fresh batch for every run; in the second set one
    // signature is bad, so the batched check fails and each is checked alone.
    let mut batches = |bad: bool| -> Vec<Value> {
        (0..RUNS)
            .map(|_| {
                let to = fixture.payers[0].address();
                let batch: Vec<String> = (0..MAX_SUBMIT_BATCH)
                    .map(|i| {
                        let call = Call::Balances(BalancesCall::Transfer { to, amount: 1 });
                        let mut stx = fixture.sign(i, call);
                        if bad && i == MAX_SUBMIT_BATCH - 1 {
                            stx.signature[0] ^= 1;
                        }
                        hex::encode(stx.encode())
                    })
                    .collect();
                json!([batch])
            })
            .collect()
    };
    let (good_batches, bad_batches) = (batches(false), batches(true));
    let fixed = |params: Value| move |_: usize| params.clone();
    type Params = Box<dyn Fn(usize) -> Value>;
    // (what is measured, the method, its params by run)
    let cases: Vec<(&str, &str, Params)> = vec![
        (
            "account",
            "account",
            Box::new(fixed(json!([fixture.payers[1].address()]))),
        ),
        (
            "state_value",
            "state_value",
            Box::new(fixed(json!([long_key(1)]))),
        ),
        (
            "state_values",
            "state_values",
            Box::new(fixed(json!([(0..MAX_STATE_VALUES)
                .map(long_key)
                .collect::<Vec<_>>()]))),
        ),
        ("outbox", "outbox", Box::new(fixed(json!([message_block])))),
        (
            "stream_messages (count)",
            "stream_messages",
            Box::new(fixed(json!([{"kind": "all"}, 0, head]))),
        ),
        (
            "stream_messages (bytes)",
            "stream_messages",
            Box::new(fixed(json!([{"kind": "all"}, large_from, head]))),
        ),
        (
            "stream_witness",
            "stream_witness",
            Box::new(fixed(json!([streams, origin.address(), backfill]))),
        ),
        (
            "headers",
            "headers",
            Box::new(fixed(json!([1, EMPTY_BLOCKS]))),
        ),
        ("block", "block", Box::new(fixed(json!([code_block])))),
        (
            "code",
            "code",
            Box::new(fixed(json!([hex::encode(code_hash)]))),
        ),
        ("workers", "workers", Box::new(fixed(json!([])))),
        (
            "submit_transactions",
            "submit_transactions",
            Box::new(move |run: usize| good_batches[run].clone()),
        ),
        (
            "submit (1 bad sig)",
            "submit_transactions",
            Box::new(move |run: usize| bad_batches[run].clone()),
        ),
    ];
    println!(
        "{:<24} {:>10} {:>10} {:>12} {:>12} {:>8} {:>9} {:>9} {:>8}",
        "method", "p50", "max", "request B", "answer B", "ratio", "reserved", "charged", "calls/s"
    );
    for (label, method, params) in cases {
        let reserved = rpc_budget::reserve(method, params(0).to_string().len());
        let m = measure(&module, method, params).await?;
        let charged = rpc_budget::units(m.max);
        println!(
            "{label:<24} {:>8.2}ms {:>8.2}ms {:>12} {:>12} {:>8.1} {reserved:>9} {charged:>9} {:>8.1}",
            m.p50.as_secs_f64() * 1e3,
            m.max.as_secs_f64() * 1e3,
            m.request,
            m.answer,
            m.answer as f64 / m.request as f64,
            rpc_budget::BUDGET_PER_SECOND as f64 / rpc_budget::units(m.p50) as f64,
        );
    }
    Ok(())
}
