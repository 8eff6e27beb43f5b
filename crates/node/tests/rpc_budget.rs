//! The RPC's request budgets: a call costs the time its handler took, each connection and the
//! whole server regain a fixed amount of handler time a second, and a client that spends its
//! budget is refused, told when to retry, while other connections are served.

mod common;

use commonware_utils::TestRng;
use jsonrpsee::{
    RpcModule,
    core::client::ClientT,
    http_client::{HttpClient, HttpClientBuilder},
    rpc_params,
    server::{Server, middleware::rpc::RpcServiceBuilder},
    types::ErrorObjectOwned,
};
use phala_crypto::Keypair;
use phala_node::{
    follower::VerifiedChain,
    ledger::Ledger,
    rpc::{self, BlockSource, RpcContext, code},
    rpc_budget::{Buckets, Budget},
    spec::{GenesisOptions, generate_with},
};
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

/// A server whose methods take as long as asked: `spin` keeps its thread busy (a synchronous
/// handler), `sleep` waits (an asynchronous one, which still holds the server's resources).
async fn serve_timed_methods() -> String {
    let mut module = RpcModule::new(());
    module
        .register_method("spin", |params, _, _| {
            let ms: u64 = params.one()?;
            let until = Instant::now() + Duration::from_millis(ms);
            while Instant::now() < until {
                std::hint::spin_loop();
            }
            Ok::<_, ErrorObjectOwned>(ms)
        })
        .unwrap();
    // Under the name of a heavy method, so that it reserves as much.
    module
        .register_method("block", |_, _, _| Ok::<_, ErrorObjectOwned>(0u64))
        .unwrap();
    module
        .register_async_method("sleep", |params, _, _| async move {
            let ms: u64 = params.one()?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, ErrorObjectOwned>(ms)
        })
        .unwrap();
    let buckets = Arc::new(Buckets::default());
    let server = Server::builder()
        .set_rpc_middleware(
            RpcServiceBuilder::new().layer_fn(move |service| Budget::new(service, buckets.clone())),
        )
        .build("127.0.0.1:0")
        .await
        .unwrap();
    let url = format!("http://{}", server.local_addr().unwrap());
    std::mem::forget(server.start(module));
    url
}

fn client_of(url: &str) -> HttpClient {
    HttpClientBuilder::default().build(url).unwrap()
}

/// The wait an over-budget refusal names, or `None` if the call was served.
async fn refusal(client: &impl ClientT, method: &str, ms: u64) -> Option<Duration> {
    match client.request::<u64, _>(method, rpc_params![ms]).await {
        Ok(_) => None,
        Err(jsonrpsee::core::ClientError::Call(error)) => {
            assert_eq!(error.code(), code::OVER_BUDGET, "{}", error.message());
            let data: serde_json::Value =
                serde_json::from_str(error.data().unwrap().get()).unwrap();
            Some(Duration::from_millis(
                data["retry_after_ms"].as_u64().unwrap(),
            ))
        }
        Err(other) => panic!("{other}"),
    }
}

/// Quick calls cost next to nothing, however many a client makes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_calls_are_never_refused() {
    let url = serve_timed_methods().await;
    let client = client_of(&url);
    for _ in 0..2_000 {
        assert_eq!(refusal(&client, "spin", 0).await, None);
    }
}

/// One call that keeps the server busy for longer than a connection's whole burst leaves the
/// connection in debt: its next call, however quick, waits until the debt is paid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_call_is_paid_for_before_the_next_one_runs() {
    let url = serve_timed_methods().await;
    // One WebSocket: every call on the same connection (an HTTP client may open another).
    let client = jsonrpsee::ws_client::WsClientBuilder::default()
        .build(url.replace("http://", "ws://"))
        .await
        .unwrap();
    assert_eq!(refusal(&client, "spin", 700).await, None);
    // 70,000 units spent from a bucket of 50,000: 20,000 units of debt, 0.8 s of refill.
    let wait = refusal(&client, "spin", 0).await.expect("in debt");
    assert!(wait >= Duration::from_millis(600), "{wait:?}");
    // Another connection is served meanwhile, and this one once it waited.
    assert_eq!(refusal(&client_of(&url), "spin", 0).await, None);
    tokio::time::sleep(wait + Duration::from_millis(50)).await;
    assert_eq!(refusal(&client, "spin", 0).await, None);
}

/// A client that opens many connections buys no more than the server's budget: once many
/// connections together held the server for seconds, a new connection waits too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_share_the_servers_budget() {
    let url = serve_timed_methods().await;
    let flood: Vec<_> = (0..32)
        .map(|_| {
            let client = client_of(&url);
            tokio::spawn(async move { refusal(&client, "sleep", 200).await })
        })
        .collect();
    for call in flood {
        call.await.unwrap();
    }
    // 32 calls of 0.2 s: 640,000 units from a server bucket of 300,000.
    let wait = refusal(&client_of(&url), "spin", 0)
        .await
        .expect("the server spent its budget");
    assert!(wait >= Duration::from_secs(1), "{wait:?}");
}

/// The node's own server runs behind the budget: a connection that keeps submitting large
/// batches of transactions is refused once it spent its budget, and served again after the
/// wait the refusal names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_a_connection_that_keeps_submitting_large_batches() {
    let keys: Vec<Keypair> = (0..4)
        .map(|i| Keypair::dev(&format!("budget-validator-{i}")))
        .collect();
    let options = GenesisOptions::local_dev("budget-test", 4);
    let (spec, _) = generate_with(&options, &keys, TestRng::new(3)).unwrap();
    let (ledger, genesis) = Ledger::for_testing(&spec).await;
    let ctx = RpcContext {
        ledger: Arc::new(ledger),
        blocks: BlockSource::Verified(Arc::new(VerifiedChain::new(genesis))),
        upstream: None,
        info: rpc::chain_info(&spec),
        validator: None,
    };
    let (address, handle) = rpc::serve("127.0.0.1:0".parse().unwrap(), ctx)
        .await
        .unwrap();
    std::mem::forget(handle);
    let url = format!("http://{address}");

    // Transfers from an account with nothing: each is decoded, checked and refused.
    let batch: Vec<String> = (0..phala_api::params::MAX_SUBMIT_BATCH as u64)
        .map(|nonce| {
            let stx = common::transfer(&spec, "budget-stranger", nonce);
            hex::encode(commonware_codec::Encode::encode(&stx))
        })
        .collect();
    // One WebSocket, so that every call is on the same connection.
    let greedy = jsonrpsee::ws_client::WsClientBuilder::default()
        .build(url.replace("http://", "ws://"))
        .await
        .unwrap();
    let mut refused = None;
    for _ in 0..2_000 {
        let answer: Result<serde_json::Value, _> = greedy
            .request("submit_transactions", rpc_params![batch.clone()])
            .await;
        if let Err(jsonrpsee::core::ClientError::Call(error)) = answer {
            refused = Some(error);
            break;
        }
    }
    let error = refused.expect("the budget never ran out");
    assert_eq!(error.code(), code::OVER_BUDGET);
    assert!(error.message().contains("retry in"), "{}", error.message());
    let data: serde_json::Value = serde_json::from_str(error.data().unwrap().get()).unwrap();
    let wait = Duration::from_millis(data["retry_after_ms"].as_u64().unwrap());

    let other = client_of(&url);
    let health: serde_json::Value = other.request("health", rpc_params![]).await.unwrap();
    assert_eq!(health["finalized_height"], 0);
    tokio::time::sleep(wait + Duration::from_millis(50)).await;
    let status: Result<serde_json::Value, _> = greedy.request("health", rpc_params![]).await;
    assert!(status.is_ok(), "{status:?}");
}

/// A JSON-RPC batch reserves for all its calls together: one that reserves more than a
/// connection can ever hold is refused outright (its calls may come one by one), so a batch
/// cannot run unmetered work beyond a connection's burst.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_reserving_more_than_a_connection_holds_is_refused() {
    let url = serve_timed_methods().await;
    let client = client_of(&url);
    let batch = |calls: usize| {
        let mut batch = jsonrpsee::core::params::BatchRequestBuilder::new();
        for _ in 0..calls {
            batch.insert("block", rpc_params![]).unwrap();
        }
        batch
    };
    // Four heavy calls reserve 40,000 of a connection's 50,000: served.
    let served = client.batch_request::<u64>(batch(4)).await.unwrap();
    assert_eq!(served.num_successful_calls(), 4);
    // Six reserve 60,000: never payable, refused with a reason.
    let calls: Vec<_> = (0..6)
        .map(|id| serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "block", "params": []}))
        .collect();
    let answer = post(&url, &serde_json::to_string(&calls).unwrap());
    assert_eq!(answer["error"]["code"], -32600, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("smaller batches"), "{message}");
}

/// POSTs `body` to `url` over plain HTTP/1.1 and returns the JSON answer.
fn post(url: &str, body: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let address = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let json = answer.split("\r\n\r\n").nth(1).unwrap();
    serde_json::from_str(json).unwrap()
}
