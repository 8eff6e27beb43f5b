//! `phala account show` and `phala block` against a node that lies: a balance with a proof
//! that holds against a state root no certificate covers, or another chain's group key. The
//! CLI must refuse, naming the node, instead of printing the lie.

use commonware_utils::TestRng;
use jsonrpsee::{RpcModule, server::Server, types::ErrorObjectOwned};
use phala_chain::{
    balances::Account,
    commitment::StateDb,
    state::{Changes, keys},
};
use phala_client::api::{AccountJson, HeaderJson, HeadersJson, ProofJson};
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
    let options = GenesisOptions {
        chain_id: "liar-test".into(),
        validators: 4,
        host: "127.0.0.1".parse().unwrap(),
        base_port: 1,
        dev: true,
        block_interval_ms: 100,
        extra_accounts: vec![],
        extra_balance: 0,
        allocations: vec![],
        admin: None,
        timestamp: Some(0),
    };
    let (spec, keys) = generate_with(&options, &keys, TestRng::new(seed)).unwrap();
    let certifier = Certifier::new(&spec, &keys).unwrap();
    (spec, certifier)
}

/// What the liar serves: its chain info, the fabricated account, the headers.
#[derive(Clone)]
struct Lies {
    info: phala_client::api::ChainInfo,
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

/// A state in which `who` holds a billion PHA, and its proof: internally consistent.
fn fabricated(who: &Keypair) -> (AccountJson, Header) {
    let mut state = StateDb::default();
    let rich = Account {
        nonce: 0,
        free: 1_000_000_000 * UNIT,
    };
    let key = keys::account(&who.address());
    state.apply(&Changes::from([(key.clone(), Some(rich.encode()))]));
    let header = Header {
        height: 1,
        parent: phala_types::Digest([1; 32]),
        timestamp: 100,
        tx_root: phala_types::Digest([2; 32]),
        state_root: state.root(),
        outbox_root: phala_types::Digest([3; 32]),
        epoch: 0,
        proposer: Default::default(),
    };
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
