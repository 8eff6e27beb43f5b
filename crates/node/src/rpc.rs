//! JSON-RPC 2.0 over HTTP and WebSocket on one port (`docs/rpc.md` lists every method).
//! Every handler answers bad input with a JSON-RPC error; none can panic or block consensus.

use crate::{engine::Marshal, follower::VerifiedChain, ledger::Ledger};
use commonware_codec::Encode;
use commonware_consensus::{marshal::Identifier, types::Height};
use jsonrpsee::{
    RpcModule,
    server::{
        BatchRequestConfig, Methods, Server, ServerConfig, ServerHandle, SubscriptionMessage,
        middleware::rpc::RpcServiceBuilder, serve_with_graceful_shutdown, stop_channel,
    },
    types::{ErrorObjectOwned, Params},
};
use phala_api::{
    params::{self, BlockRef, ParamsError},
    rpc::{
        AccountJson, BlockJson, ChainInfo, FinalizedHead, HeaderJson, Health, OutboxMessageJson,
        ProofJson, ProvenValueJson, StateValueJson, StateValuesJson, TxStatus,
    },
};
use phala_types::{Address, Block, SignedTransaction};
use std::{net::SocketAddr, sync::Arc};

/// Application error codes, outside the range JSON-RPC and jsonrpsee reserve for themselves.
pub mod code {
    /// The transaction was refused; `data.code` says why.
    pub const TX_REJECTED: i32 = 1001;
    /// Asked for something that does not exist (yet).
    pub const NOT_FOUND: i32 = 1002;
    /// The connection spent its request budget; `data.retry_after_ms` says when to retry.
    pub const OVER_BUDGET: i32 = phala_client::OVER_BUDGET;
}

/// What the handlers share.
pub struct RpcContext {
    pub ledger: Arc<Ledger>,
    pub blocks: BlockSource,
    /// On a follower: where submitted transactions are forwarded.
    pub upstream: Option<phala_client::Client>,
    pub info: ChainInfo,
    pub validator: Option<Address>,
}

/// What clients need to know about the chain, from its spec.
pub fn chain_info(spec: &crate::spec::ChainSpec) -> ChainInfo {
    ChainInfo {
        chain_id: spec.chain_id.clone(),
        genesis_hash: hex::encode(spec.hash()),
        identity: spec.identity.clone(),
        namespace: hex::encode(spec.namespace()),
        dev: spec.genesis.dev,
        fees: spec.genesis.fees,
        validators: spec.validators.iter().map(|v| v.address).collect(),
    }
}

/// Where finalized blocks and their certificates come from.
pub enum BlockSource {
    /// A validator's marshal archives.
    Marshal(Marshal),
    /// A follower's verified chain.
    Verified(Arc<VerifiedChain>),
}

impl BlockSource {
    pub(crate) async fn block(&self, height: u64) -> Option<Arc<Block>> {
        match self {
            BlockSource::Marshal(m) => m
                .get_block(Height::new(height))
                .await
                .map(|b| b.inner_shared()),
            BlockSource::Verified(chain) => chain.block(height),
        }
    }

    /// The encoded finalization certificate stored for this height, if any.
    pub(crate) async fn finalization(&self, height: u64) -> Option<Vec<u8>> {
        match self {
            BlockSource::Marshal(m) => m
                .get_finalization(Height::new(height))
                .await
                .map(|f| f.encode().to_vec()),
            BlockSource::Verified(chain) => chain.finalization(height),
        }
    }

    async fn height_of(&self, digest: &phala_types::Digest) -> Option<u64> {
        match self {
            BlockSource::Marshal(m) => m.get_info(digest).await.map(|(h, _)| h.get()),
            BlockSource::Verified(chain) => chain.height_of(digest),
        }
    }

    /// The highest height with a stored certificate.
    async fn latest(&self) -> u64 {
        match self {
            BlockSource::Marshal(m) => m
                .get_info(Identifier::Latest)
                .await
                .map(|(h, _)| h.get())
                .unwrap_or(0),
            BlockSource::Verified(chain) => chain.height(),
        }
    }
}

pub(crate) fn invalid_params(message: impl Into<String>) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(
        jsonrpsee::types::error::INVALID_PARAMS_CODE,
        message.into(),
        None::<()>,
    )
}

pub(crate) fn not_found(message: impl Into<String>) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(code::NOT_FOUND, message.into(), None::<()>)
}

/// Refused params, answered as invalid params (`-32602`).
pub(crate) fn bad_params(error: ParamsError) -> ErrorObjectOwned {
    invalid_params(error.to_string())
}

async fn submit_transaction(
    params: Params<'static>,
    ctx: Arc<RpcContext>,
) -> Result<String, ErrorObjectOwned> {
    let stx = params::transaction(params.as_str()).map_err(|error| match error {
        ParamsError::Oversized { .. } => ErrorObjectOwned::owned(
            code::TX_REJECTED,
            error.to_string(),
            Some(serde_json::json!({ "code": "oversized" })),
        ),
        other => bad_params(other),
    })?;
    if let Some(upstream) = &ctx.upstream {
        return forward(upstream, &stx).await;
    }
    let ledger = ctx.ledger.clone();
    let admitted = off_workers(move || ledger.submit(stx)).await?;
    admitted.map(hex::encode).map_err(|error| {
        ErrorObjectOwned::owned(
            code::TX_REJECTED,
            format!("transaction rejected: {error}"),
            Some(serde_json::json!({ "code": error.code() })),
        )
    })
}

/// `submit_transactions([hex, ...])`: admits many transactions with one batched signature
/// check; answers, in order, `{"hash": ...}` or `{"error": {"code", "message"}}` for each.
async fn submit_transactions(
    params: Params<'static>,
    ctx: Arc<RpcContext>,
) -> Result<Vec<serde_json::Value>, ErrorObjectOwned> {
    let decoded = params::transactions(params.as_str()).map_err(bad_params)?;
    if let Some(upstream) = &ctx.upstream {
        let mut answers = Vec::with_capacity(decoded.len());
        for stx in &decoded {
            answers.push(match forward(upstream, stx).await {
                Ok(hash) => serde_json::json!({ "hash": hash }),
                Err(error) => serde_json::json!({ "error": { "code": error.data().map(|d| d.get().to_string()), "message": error.message() } }),
            });
        }
        return Ok(answers);
    }
    let ledger = ctx.ledger.clone();
    let results = off_workers(move || ledger.submit_batch(decoded)).await?;
    Ok(results
        .into_iter()
        .map(|result| match result {
            Ok(hash) => serde_json::json!({ "hash": hex::encode(hash) }),
            Err(error) => serde_json::json!({ "error": { "code": error.code(), "message": error.to_string() } }),
        })
        .collect())
}

/// Runs CPU-heavy admission (signature checks) on the blocking pool, so the async workers
/// that consensus runs on stay responsive.
async fn off_workers<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ErrorObjectOwned> {
    tokio::task::spawn_blocking(work).await.map_err(|_| {
        ErrorObjectOwned::owned(
            jsonrpsee::types::error::INTERNAL_ERROR_CODE,
            "admission failed",
            None::<()>,
        )
    })
}

/// A follower hands transactions to its upstream, passing its verdict through unchanged.
async fn forward(
    upstream: &phala_client::Client,
    stx: &SignedTransaction,
) -> Result<String, ErrorObjectOwned> {
    match upstream.submit(stx).await {
        Ok(hash) => Ok(hex::encode(hash)),
        Err(phala_client::Error::Rpc {
            code,
            message,
            data,
        }) => Err(ErrorObjectOwned::owned(code, message, data)),
        Err(other) => Err(ErrorObjectOwned::owned(
            jsonrpsee::types::error::INTERNAL_ERROR_CODE,
            format!("cannot forward to the upstream node: {other}"),
            None::<()>,
        )),
    }
}

async fn transaction_status(
    params: Params<'static>,
    ctx: Arc<RpcContext>,
) -> Result<TxStatus, ErrorObjectOwned> {
    let hash = params::tx_hash(params.as_str()).map_err(bad_params)?;
    ctx.ledger.tx_status(&hash).await.map_err(history_failed)
}

/// The history failed to read a finalized block: the node's fault, not the caller's.
pub(crate) fn history_failed(error: crate::history::HistoryError) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(
        jsonrpsee::types::error::INTERNAL_ERROR_CODE,
        format!("cannot read the history: {error}"),
        None::<()>,
    )
}

/// The state database failed to prove a value: the node's fault, not the caller's.
pub(crate) fn store_failed(error: phala_chain::commitment::StoreError) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(
        jsonrpsee::types::error::INTERNAL_ERROR_CODE,
        format!("cannot prove the state: {error}"),
        None::<()>,
    )
}

async fn account(
    params: Params<'static>,
    ctx: Arc<RpcContext>,
) -> Result<AccountJson, ErrorObjectOwned> {
    let address = params::address(params.as_str()).map_err(bad_params)?;
    let (account, proof, header) = ctx.ledger.account(&address).await.map_err(store_failed)?;
    Ok(AccountJson {
        address,
        nonce: account.nonce,
        free: account.free,
        height: header.height,
        state_root: hex::encode(header.state_root),
        proof: ProofJson::from_proof(&proof),
    })
}

async fn state_value(
    params: Params<'static>,
    ctx: Arc<RpcContext>,
) -> Result<StateValueJson, ErrorObjectOwned> {
    let key = params::state_key(params.as_str()).map_err(bad_params)?;
    let (value, proof, header) = ctx.ledger.state_value(&key).await.map_err(store_failed)?;
    Ok(StateValueJson {
        key: hex::encode(&key),
        value: value.map(hex::encode),
        height: header.height,
        state_root: hex::encode(header.state_root),
        proof: ProofJson::from_proof(&proof),
    })
}

/// `state_values([key_hex, ...])`: several values proven against one state root, so a client
/// can check records that must agree (a worker, its contract, the policy) at one height.
async fn state_values(
    params: Params<'static>,
    ctx: Arc<RpcContext>,
) -> Result<StateValuesJson, ErrorObjectOwned> {
    let keys = params::state_keys(params.as_str()).map_err(bad_params)?;
    let (values, header) = ctx.ledger.state_values(&keys).await.map_err(store_failed)?;
    Ok(StateValuesJson {
        height: header.height,
        state_root: hex::encode(header.state_root),
        values: keys
            .iter()
            .zip(values)
            .map(|(key, (value, proof))| ProvenValueJson {
                key: hex::encode(key),
                value: value.map(hex::encode),
                proof: ProofJson::from_proof(&proof),
            })
            .collect(),
    })
}

/// `block(height | hash | null)`: a finalized block; `null` or no parameter means the head.
async fn block(
    params: Params<'static>,
    ctx: Arc<RpcContext>,
) -> Result<BlockJson, ErrorObjectOwned> {
    let head = ctx.ledger.head().height;
    let height = match params::block_ref(params.as_str()).map_err(bad_params)? {
        BlockRef::Head => head,
        BlockRef::Height(height) => height,
        BlockRef::Hash(digest) => ctx
            .blocks
            .height_of(&digest)
            .await
            .ok_or_else(|| not_found("no finalized block with this hash"))?,
    };
    if height > head {
        return Err(not_found(format!(
            "block {height} is not finalized yet (head is {head})"
        )));
    }
    let block = ctx
        .blocks
        .block(height)
        .await
        .ok_or_else(|| not_found(format!("block {height} is not stored on this node")))?;
    let finalization = ctx.blocks.finalization(height).await.map(hex::encode);
    Ok(BlockJson {
        header: HeaderJson::from_header(&block.header),
        transactions: block.tx_hashes().iter().map(hex::encode).collect(),
        finalization,
        raw: hex::encode(block.encode()),
    })
}

async fn finalized_head(ctx: Arc<RpcContext>) -> Result<FinalizedHead, ErrorObjectOwned> {
    let header = ctx.ledger.head();
    let latest = ctx.blocks.latest().await;
    // The head is certified by its own finalization or by a nearby descendant's.
    for height in header.height..=latest.clamp(header.height, header.height + 64) {
        if let Some(finalization) = ctx.blocks.finalization(height).await {
            return Ok(FinalizedHead {
                header: HeaderJson::from_header(&header),
                certified_height: height,
                finalization: Some(hex::encode(finalization)),
            });
        }
    }
    Ok(FinalizedHead {
        header: HeaderJson::from_header(&header),
        certified_height: header.height,
        finalization: None,
    })
}

async fn outbox(
    params: Params<'static>,
    ctx: Arc<RpcContext>,
) -> Result<Vec<OutboxMessageJson>, ErrorObjectOwned> {
    let height = params::height(params.as_str()).map_err(bad_params)?;
    let outbox = ctx.ledger.outbox(height).await.map_err(history_failed)?;
    let Some(outbox) = outbox else {
        return Ok(Vec::new());
    };
    Ok((0..outbox.messages.len())
        .filter_map(|index| {
            let (message, proof) = outbox.proven(index)?;
            Some(OutboxMessageJson {
                height,
                index: index as u32,
                message: hex::encode(message.encode()),
                leaf_count: proof.leaf_count,
                siblings: proof.siblings.iter().map(hex::encode).collect(),
            })
        })
        .collect())
}

fn health(ctx: &RpcContext) -> Health {
    let head = ctx.ledger.head();
    Health {
        finalized_height: head.height,
        finalized_age_ms: crate::spec::now_ms().saturating_sub(head.timestamp),
        mempool: ctx.ledger.mempool_len(),
        validator: ctx.validator,
        replaying: ctx.ledger.replaying(),
    }
}

/// The RPC module with every method registered.
pub fn module(ctx: RpcContext) -> anyhow::Result<RpcModule<RpcContext>> {
    let mut module = RpcModule::new(ctx);
    module.register_method("chain_info", |_, ctx, _| {
        Ok::<_, ErrorObjectOwned>(ctx.info.clone())
    })?;
    module.register_async_method("submit_transaction", |params, ctx, _| {
        submit_transaction(params, ctx)
    })?;
    module.register_async_method("submit_transactions", |params, ctx, _| {
        submit_transactions(params, ctx)
    })?;
    module.register_async_method("transaction_status", |params, ctx, _| {
        transaction_status(params, ctx)
    })?;
    module.register_async_method("account", |params, ctx, _| account(params, ctx))?;
    module.register_async_method("state_value", |params, ctx, _| state_value(params, ctx))?;
    module.register_async_method("state_values", |params, ctx, _| state_values(params, ctx))?;
    module.register_async_method("block", |params, ctx, _| block(params, ctx))?;
    module.register_async_method("finalized_head", |_, ctx, _| finalized_head(ctx))?;
    module.register_async_method("outbox", |params, ctx, _| outbox(params, ctx))?;
    module.register_method("health", |_, ctx, _| Ok::<_, ErrorObjectOwned>(health(ctx)))?;
    crate::relay_rpc::register(&mut module)?;
    crate::contract_rpc::register(&mut module)?;
    module.register_subscription(
        "subscribe_finalized",
        "finalized",
        "unsubscribe_finalized",
        |_, pending, ctx, _| async move {
            let mut events = ctx.ledger.subscribe();
            let sink = pending.accept().await?;
            loop {
                let event = match events.recv().await {
                    Ok(event) => event,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
                };
                let message = SubscriptionMessage::from(serde_json::value::to_raw_value(&event)?);
                if sink.send(message).await.is_err() {
                    return Ok(());
                }
            }
        },
    )?;
    Ok(module)
}

/// Largest request body (a batch of transactions).
pub const MAX_REQUEST_BYTES: u32 = 16 * 1024 * 1024;
/// Largest response body (clients accept as much).
pub use phala_api::rpc::MAX_RESPONSE_BYTES;

/// Most requests (or WebSocket sessions) served at once; each client has its own request
/// budget (`rpc_budget`).
pub const MAX_CONNECTIONS: u32 = 256;
/// Most subscriptions one connection holds: each finalized block is sent to every one.
pub const MAX_SUBSCRIPTIONS: u32 = 4;
/// Most calls in one JSON-RPC batch (a batch reserves its calls' budget together).
pub const MAX_BATCH_CALLS: u32 = 64;
/// Threads of the runtime the RPC runs on.
const RPC_THREADS: usize = 2;

/// The runtime every RPC server of this process runs on: its own threads, so that clients,
/// however many and however demanding, never hold up consensus tasks (which run on the
/// node's runtime) and the other way round.
fn rpc_runtime() -> anyhow::Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(RPC_THREADS)
        .thread_name("rpc")
        .enable_all()
        .build()?;
    Ok(RUNTIME.get_or_init(|| runtime))
}

/// Serves the module on `address` (HTTP and WebSocket), on the RPC's own runtime, with a
/// request budget per client (`rpc_budget`): each connection's requests carry its peer's
/// address.
pub async fn serve(
    address: SocketAddr,
    ctx: RpcContext,
) -> anyhow::Result<(SocketAddr, ServerHandle)> {
    let methods: Methods = module(ctx)?.into();
    let started = rpc_runtime()?.spawn(async move {
        // Room for a JSON-RPC batch of many transactions; each is still held to MAX_TX_SIZE.
        let config = ServerConfig::builder()
            .max_request_body_size(MAX_REQUEST_BYTES)
            .max_response_body_size(MAX_RESPONSE_BYTES)
            .max_connections(MAX_CONNECTIONS)
            .max_subscriptions_per_connection(MAX_SUBSCRIPTIONS)
            .set_batch_request_config(BatchRequestConfig::Limit(MAX_BATCH_CALLS))
            .build();
        let buckets = Arc::new(crate::rpc_budget::Buckets::default());
        let budgets = RpcServiceBuilder::new()
            .layer_fn(move |service| crate::rpc_budget::Budget::new(service, buckets.clone()));
        let builder = Server::builder()
            .set_config(config)
            .set_rpc_middleware(budgets)
            .to_service_builder();
        let listener = tokio::net::TcpListener::bind(address).await?;
        let local = listener.local_addr()?;
        let (stop, handle) = stop_channel();
        tokio::spawn(async move {
            loop {
                let (socket, peer) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            // Out of descriptors, say: wait rather than spin.
                            tracing::warn!(%error, "rpc: accepting a connection failed");
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                    () = stop.clone().shutdown() => break,
                };
                if let Err(error) = socket.set_nodelay(true) {
                    tracing::debug!(%error, "rpc: no TCP_NODELAY");
                }
                let service = WithPeer {
                    inner: builder.clone().build(methods.clone(), stop.clone()),
                    peer: crate::rpc_budget::Peer(peer.ip()),
                };
                tokio::spawn(serve_with_graceful_shutdown(
                    socket,
                    service,
                    stop.clone().shutdown(),
                ));
            }
        });
        anyhow::Ok((local, handle))
    });
    started.await?
}

/// A connection's service, which puts its peer's address in every request's extensions
/// (where the request budgets find their client).
#[derive(Clone)]
struct WithPeer<S> {
    inner: S,
    peer: crate::rpc_budget::Peer,
}

impl<S, B> tower::Service<http::Request<B>> for WithPeer<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        request.extensions_mut().insert(self.peer);
        self.inner.call(request)
    }
}
