//! `phala account show` and `phala block` against a node that lies: a balance with a proof
//! that holds against a state root no certificate covers, or another chain's group key. The
//! CLI must refuse, naming the node, instead of printing the lie.

use commonware_utils::TestRng;
use jsonrpsee::{RpcModule, server::Server, types::ErrorObjectOwned};
use phala_api::rpc::{AccountJson, HeaderJson, HeadersJson, ProofJson};
use phala_chain::{balances::Account, commitment::mocks::TestState, state::Changes};
use phala_crypto::Keypair;
use phala_node::{
    certify::Certifier,
    rpc::chain_info,
    spec::{ChainSpec, GenesisOptions, generate_with},
};
use phala_types::{Header, UNIT};
use std::process::Command;

fn chain(seed: u64) -> (ChainSpec, Certifier) {
    let keys: Vec<Keypair> = (0..4)
        .map(|i| Keypair::dev(&format!("liar-validator-{i}")))
        .collect();
    let options = GenesisOptions::local_dev("liar-test", 4);
    let (spec, keys) = generate_with(&options, &keys, TestRng::new(seed)).unwrap();
    let certifier = Certifier::new(&spec, &keys).unwrap();
    (spec, certifier)
}

/// What the liar serves: its chain info, the fabricated account, the headers.
#[derive(Clone)]
struct Lies {
    info: phala_api::rpc::ChainInfo,
    account: AccountJson,
    headers: HeadersJson,
}

async fn liar(lies: Lies) -> String {
    let mut module = RpcModule::new(lies);
    module
        .register_method("chain_info", |_, lies, _| {
            Ok::<_, ErrorObjectOwned>(lies.info.clone())
        })
        .unwrap();
    module
        .register_method("account", |_, lies, _| {
            Ok::<_, ErrorObjectOwned>(lies.account.clone())
        })
        .unwrap();
    module
        .register_method("headers", |_, lies, _| {
            Ok::<_, ErrorObjectOwned>(lies.headers.clone())
        })
        .unwrap();
    let server = Server::builder().build("127.0.0.1:0").await.unwrap();
    let address = server.local_addr().unwrap();
    std::mem::forget(server.start(module));
    format!("http://{address}")
}

/// Block 1 of the liar's making, over `state`.
fn header_over(state: &TestState) -> Header {
    Header {
        height: 1,
        parent: phala_types::Digest([1; 32]),
        timestamp: 100,
        tx_root: phala_types::Digest([2; 32]),
        state_root: state.root(),
        outbox_root: phala_types::Digest([3; 32]),
        epoch: 0,
        proposer: Default::default(),
    }
}

/// A state in which `who` holds a billion PHA, and its proof: internally consistent.
fn fabricated(who: &Keypair) -> (AccountJson, Header) {
    let mut state = TestState::default();
    let rich = Account {
        nonce: 0,
        free: 1_000_000_000 * UNIT,
    };
    let key = phala_chain::balances::keys::account(&who.address());
    state.apply(&Changes::from([(key.clone(), Some(rich.encode()))]));
    let header = header_over(&state);
    let account = AccountJson {
        address: who.address(),
        nonce: 0,
        free: rich.free,
        height: 1,
        state_root: hex::encode(state.root()),
        proof: ProofJson::from_proof(&state.prove(&key)),
    };
    (account, header)
}

fn account_show(url: &str, spec: Option<&std::path::Path>, who: &Keypair) -> (bool, String) {
    let home = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_phala"));
    command.env("PHALA_HOME", home.path()).args([
        "--rpc",
        url,
        "account",
        "show",
        &who.address().to_string(),
    ]);
    if let Some(spec) = spec {
        command.arg("--spec").arg(spec);
    }
    let out = command.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balance_no_certificate_covers_is_refused() {
    let (spec, certifier) = chain(5);
    let who = Keypair::generate();
    let (account, header) = fabricated(&who);
    // The node's certificate is genuine, but for another block than the header it shows.
    let other = Header {
        timestamp: 101,
        ..header.clone()
    };
    let certificate = certifier.certify(1, other.hash()).unwrap();
    let lies = Lies {
        info: chain_info(&spec),
        account,
        headers: HeadersJson {
            headers: vec![HeaderJson::from_header(&header)],
            certificate: hex::encode(certificate),
        },
    };
    let url = liar(lies.clone()).await;
    let (ok, output) = account_show(&url, None, &who);
    assert!(!ok, "the lie was printed: {output}");
    assert!(
        output.contains(&format!("the node at {url} lied")),
        "{output}"
    );
    assert!(!output.contains("1000000000"), "{output}");

    // With a certificate of its own making (another group key): refused against the spec,
    // whatever the node says its group key is.
    let (liars_spec, liars_certifier) = chain(6);
    let certificate = liars_certifier.certify(1, header.hash()).unwrap();
    let lies = Lies {
        info: chain_info(&liars_spec),
        headers: HeadersJson {
            headers: vec![HeaderJson::from_header(&header)],
            certificate: hex::encode(certificate),
        },
        ..lies
    };
    let url = liar(lies).await;
    let dir = tempfile::tempdir().unwrap();
    let spec_file = dir.path().join("spec.json");
    spec.save(&spec_file).unwrap();
    let (ok, output) = account_show(&url, Some(&spec_file), &who);
    assert!(!ok, "the lie was printed: {output}");
    assert!(
        output.contains("lied") && output.contains("another chain"),
        "{output}"
    );
}

/// A chain state holding everything a receipt rests on: a worker in cluster 1, the policy, a
/// contract on cluster 1 and a report of its call 0 with `commitment`.
fn receipt_state(worker: &Keypair, contract: [u8; 32], commitment: [u8; 32]) -> TestState {
    use commonware_codec::Encode;
    use phala_chain::{contracts, registry};
    use phala_types::{AttestationPolicy, ContractRecord, ReportRecord, TeeKind, WorkerRecord};
    let record = WorkerRecord {
        identity: worker.address(),
        ecdh: [5; 32],
        operator: worker.address(),
        tee: TeeKind::Simulated,
        measurement: vec![6; 32],
        confidence: 1,
        cores: 1,
        benchmark: 1,
        registered_at: 1,
        attested_at: 1,
        gatekeeper_candidate: false,
        gatekeeper: false,
        cluster: Some(1),
    };
    let contract_record = ContractRecord {
        id: contract,
        code_hash: [8; 32],
        deployer: worker.address(),
        cluster: 1,
        generation: 0,
        instantiated: 1,
        public_key: Some([9; 32]),
        commands: 0,
        storage_quota: 0,
        storage_deposit: 0,
    };
    let report = ReportRecord {
        index: 0,
        reporter: worker.address(),
        commitment,
        gas_used: 1,
        succeeded: true,
        state_bytes: 0,
        height: 1,
        confirmations: 1,
        dispute: None,
    };
    let mut state = TestState::default();
    state.apply(&Changes::from([
        (
            registry::keys::worker(&worker.address()),
            Some(record.encode().to_vec()),
        ),
        (
            registry::keys::POLICY.to_vec(),
            Some(AttestationPolicy::dev().encode().to_vec()),
        ),
        (
            contracts::keys::contract(&contract),
            Some(contract_record.encode().to_vec()),
        ),
        (
            contracts::keys::report(&contract, 0),
            Some(report.encode().to_vec()),
        ),
    ]));
    state
}

/// Serves `state_values` from `state` (with proofs against its root) and `headers` as given.
async fn state_server(
    info: phala_api::rpc::ChainInfo,
    state: std::sync::Arc<TestState>,
    headers: HeadersJson,
) -> String {
    use phala_api::rpc::{ProvenValueJson, StateValuesJson};
    use phala_chain::state::StateRead;
    let mut module = RpcModule::new((info, state, headers));
    module
        .register_method("chain_info", |_, ctx, _| {
            Ok::<_, ErrorObjectOwned>(ctx.0.clone())
        })
        .unwrap();
    module
        .register_method("headers", |_, ctx, _| {
            Ok::<_, ErrorObjectOwned>(ctx.2.clone())
        })
        .unwrap();
    module
        .register_method("state_values", |params, ctx, _| {
            let (hexes,): (Vec<String>,) = params.parse()?;
            let state = &ctx.1;
            let values = hexes
                .iter()
                .map(|text| {
                    let key = hex::decode(text).unwrap();
                    ProvenValueJson {
                        key: text.clone(),
                        value: state.get(&key).map(hex::encode),
                        proof: ProofJson::from_proof(&state.prove(&key)),
                    }
                })
                .collect();
            Ok::<_, ErrorObjectOwned>(StateValuesJson {
                height: 1,
                state_root: hex::encode(state.root()),
                values,
            })
        })
        .unwrap();
    let server = Server::builder().build("127.0.0.1:0").await.unwrap();
    let address = server.local_addr().unwrap();
    std::mem::forget(server.start(module));
    format!("http://{address}")
}

/// `verify-receipt` proves the worker, the policy, the contract and its reports against a
/// certified state root: a receipt checks out against a node that proves it, and a node whose
/// proofs rest on a root no certificate covers is named a liar (before, these records were read
/// over plain RPC and believed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_is_checked_only_against_certified_records() {
    use phala_api::TrustedChain;
    use phala_client::{Client, Error, receipt};
    use phala_types::{QueryReceipt, contracts::labels};
    let (spec, certifier) = chain(7);
    let worker = Keypair::generate();
    let contract = [7; 32];
    let state = std::sync::Arc::new(receipt_state(&worker, contract, [3; 32]));
    let header = header_over(&state);
    let mut good = QueryReceipt {
        contract,
        code_hash: [8; 32],
        request_hash: [1; 32],
        response_hash: [2; 32],
        height: 1,
        state_commitment: [3; 32],
        worker: worker.address(),
        signature: [0; 64],
    };
    good.signature = worker.sign(labels::RECEIPT, &good.signing_payload());
    let info = chain_info(&spec);
    let trust = TrustedChain::from_info(&info);

    let certified = HeadersJson {
        headers: vec![HeaderJson::from_header(&header)],
        certificate: hex::encode(certifier.certify(1, header.hash()).unwrap()),
    };
    let url = state_server(info.clone(), state.clone(), certified).await;
    let check = receipt::verify_receipt(&Client::new(&url).unwrap(), &trust, &good)
        .await
        .expect("a receipt proven against certified records verifies");
    assert_eq!((check.reported_call, check.cluster), (0, 1));

    // The same records, but the certificate covers another block than the one whose state
    // root the proofs rest on.
    let other = Header {
        timestamp: 101,
        ..header.clone()
    };
    let uncertified = HeadersJson {
        headers: vec![HeaderJson::from_header(&header)],
        certificate: hex::encode(certifier.certify(1, other.hash()).unwrap()),
    };
    let url = state_server(info, state, uncertified).await;
    match receipt::verify_receipt(&Client::new(&url).unwrap(), &trust, &good).await {
        Err(receipt::VerifyReceiptError::Node(Error::Lied { url: named, .. })) => {
            assert_eq!(named, url)
        }
        other => panic!("expected the node to be named a liar, got {other:?}"),
    }
}
