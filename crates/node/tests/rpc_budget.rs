//! The RPC's request budget per connection: a client that calls without pause is refused once
//! its connection spent its budget, told when to retry, while other connections are served.

use commonware_utils::TestRng;
use jsonrpsee::{core::client::ClientT, http_client::HttpClientBuilder, rpc_params};
use phala_crypto::Keypair;
use phala_node::{
    follower::VerifiedChain,
    ledger::Ledger,
    rpc::{self, BlockSource, RpcContext, code},
    spec::{GenesisOptions, generate_with},
};
use std::sync::Arc;

async fn serve() -> String {
    let keys: Vec<Keypair> = (0..4)
        .map(|i| Keypair::dev(&format!("budget-validator-{i}")))
        .collect();
    let options = GenesisOptions::local_dev("budget-test", 4);
    let (spec, _) = generate_with(&options, &keys, TestRng::new(3)).unwrap();
    let (ledger, genesis) = Ledger::at_genesis(&spec);
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
    format!("http://{address}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_spends_its_budget_waits_and_others_are_served() {
    let url = serve().await;
    let greedy = HttpClientBuilder::default().build(&url).unwrap();
    let mut refused = None;
    for call in 0..1_000 {
        let answer: Result<serde_json::Value, _> = greedy.request("workers", rpc_params![]).await;
        if let Err(jsonrpsee::core::ClientError::Call(error)) = answer {
            refused = Some((call, error));
            break;
        }
    }
    let (calls, error) = refused.expect("the budget never ran out");
    assert_eq!(error.code(), code::OVER_BUDGET);
    assert!(error.message().contains("retry in"), "{}", error.message());
    // The burst, give or take what refilled while the calls ran.
    assert!(calls >= 15, "refused after {calls} calls");

    // Another connection is served meanwhile.
    let other = HttpClientBuilder::default().build(&url).unwrap();
    let health: serde_json::Value = other.request("health", rpc_params![]).await.unwrap();
    assert_eq!(health["finalized_height"], 0);

    // And the greedy one again once its budget refilled.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let workers: serde_json::Value = greedy.request("workers", rpc_params![]).await.unwrap();
    assert!(workers.is_array());
}
