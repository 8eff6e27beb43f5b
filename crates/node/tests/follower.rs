//! A follower against a lying upstream: a certified header served with a forged body is
//! refused as malformed (the follower moves to another upstream), never applied.

mod common;

use commonware_codec::Encode;
use commonware_utils::TestRng;
use jsonrpsee::{RpcModule, server::Server, types::ErrorObjectOwned};
use phala_api::rpc::{BlockJson, HeaderJson, Health};
use phala_chain::BlockContext;
use phala_crypto::Keypair;
use phala_node::{
    certify::Certifier,
    follower::{FollowError, VerifiedChain, sync_round},
    ledger::Ledger,
    spec::{ChainSpec, GenesisOptions, generate_with},
};
use phala_types::Block;

fn chain() -> (ChainSpec, Certifier) {
    let keys: Vec<Keypair> = (0..4)
        .map(|i| Keypair::dev(&format!("follower-validator-{i}")))
        .collect();
    let options = GenesisOptions::local_dev("follower-test", 4);
    let (spec, keys) = generate_with(&options, &keys, TestRng::new(3)).unwrap();
    let certifier = Certifier::new(&spec, &keys).unwrap();
    (spec, certifier)
}

/// Block 1 of the chain, with one transfer.
async fn first_block(spec: &ChainSpec) -> Block {
    let (proposer, _) = Ledger::for_testing(spec).await;
    proposer.submit(common::transfer(spec, "alice", 0)).unwrap();
    let parent = proposer.head();
    let ctx = BlockContext {
        height: 1,
        timestamp: parent.timestamp + spec.block_interval_ms,
        proposer: spec.validators[0].address,
    };
    proposer.build(&parent, ctx).await.unwrap()
}

/// An upstream that serves `raw` as block 1 with a genuine certificate of `block`.
async fn upstream(block: &Block, raw: Vec<u8>, certificate: Vec<u8>) -> String {
    let answer = BlockJson {
        header: HeaderJson::from_header(&block.header),
        transactions: Vec::new(),
        finalization: Some(hex::encode(certificate)),
        raw: hex::encode(raw),
    };
    let mut module = RpcModule::new(answer);
    module
        .register_method("health", |_, _, _| {
            Ok::<_, ErrorObjectOwned>(Health {
                finalized_height: 1,
                finalized_age_ms: 0,
                mempool: 0,
                validator: None,
                replaying: false,
            })
        })
        .unwrap();
    module
        .register_method("block", |_, answer, _| {
            Ok::<_, ErrorObjectOwned>(answer.clone())
        })
        .unwrap();
    let server = Server::builder().build("127.0.0.1:0").await.unwrap();
    let address = server.local_addr().unwrap();
    let handle = server.start(module);
    std::mem::forget(handle);
    format!("http://{address}")
}

#[tokio::test]
async fn a_certified_header_with_a_forged_body_is_refused() {
    let (spec, certifier) = chain();
    let block = first_block(&spec).await;
    let certificate = certifier.certify(1, block.header.hash()).unwrap();
    // The same header (so the certificate verifies) over another body.
    let mut body = block.transactions.clone();
    body.push(common::transfer(&spec, "charlie", 0));
    let forged = Block::new(block.header.clone(), body).encode().to_vec();

    let (ledger, genesis) = Ledger::for_testing(&spec).await;
    let chain = VerifiedChain::new(genesis);
    let liar =
        phala_client::Client::new(&upstream(&block, forged, certificate.clone()).await).unwrap();
    match sync_round(&spec, &ledger, &chain, &liar).await {
        Err(FollowError::Malformed { height: 1, reason }) => {
            assert!(reason.contains("tx_root"), "{reason}")
        }
        other => panic!("a forged body must be refused as malformed, got {other:?}"),
    }
    assert_eq!(ledger.head().height, 0, "nothing was applied");
    assert_eq!(chain.height(), 0, "nothing was stored");

    // An honest upstream then serves the true block, which is applied.
    let honest = block.encode().to_vec();
    let honest = phala_client::Client::new(&upstream(&block, honest, certificate).await).unwrap();
    assert_eq!(
        sync_round(&spec, &ledger, &chain, &honest).await.unwrap(),
        1
    );
    assert_eq!(ledger.head(), block.header);
}
