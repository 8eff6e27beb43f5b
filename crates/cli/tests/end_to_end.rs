//! End to end through the real binaries on 127.0.0.1: a 4-validator network of `phala-node`
//! processes, the `phala` CLI, JSON-RPC with proofs, bad input, and a `kill -9` under load.

use commonware_codec::Encode as _;
use jsonrpsee::{
    core::{ClientError, client::ClientT, params::ArrayParams},
    http_client::HttpClientBuilder,
    rpc_params,
};
use phala_api::{rpc::TxStatus, verify_account, verify_finalization};
use phala_cli::devnet::{Devnet, DevnetOptions, free_ports};
use phala_client::Client;
use phala_crypto::Keypair;
use phala_types::BalancesCall;
use phala_types::{Call, Digest, SignedTransaction, Transaction, UNIT};
use std::{process::Command, time::Duration};

async fn start(validators: usize) -> Devnet {
    let mut options = DevnetOptions::new(validators).expect("phala-node is built");
    options.rpc_port = free_ports(validators as u16);
    options.p2p_port = free_ports(validators as u16);
    let mut devnet = Devnet::start(options).expect("devnet starts");
    devnet
        .wait_ready(Duration::from_secs(60))
        .await
        .expect("devnet ready");
    devnet
}

fn phala(devnet: &Devnet, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_phala"))
        .arg("--rpc")
        .arg(devnet.rpc_url(0))
        .args(args)
        .output()
        .expect("phala runs")
}

async fn transfer_tx(
    client: &Client,
    from: &Keypair,
    to: &Keypair,
    nonce: u64,
    amount: u128,
) -> SignedTransaction {
    let info = client.chain_info().await.unwrap();
    let genesis = phala_api::rpc::parse_digest(&info.genesis_hash).unwrap();
    let head = client.health().await.unwrap().finalized_height;
    let tx = Transaction {
        signer: from.address(),
        nonce,
        fee: UNIT / 1000,
        expiry: head + 600,
        call: Call::Balances(BalancesCall::Transfer {
            to: to.address(),
            amount,
        }),
    };
    from.sign_transaction(&genesis, tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_blocks_proofs_and_bad_input() {
    let devnet = start(4).await;
    let client = Client::new(&devnet.rpc_url(0)).unwrap();
    let bob = Keypair::dev("bob");
    let before = client.account(&bob.address()).await.unwrap().free;

    // A transfer through the CLI is final when the command returns.
    let out = phala(
        &devnet,
        &[
            "--json", "transfer", "--from", "alice", "--to", "bob", "--amount", "2.5",
        ],
    );
    assert!(
        out.status.success(),
        "transfer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["status"]["status"], "finalized");

    // Any node reports the new balance with a proof that checks against its state root.
    let other = Client::new(&devnet.rpc_url(2)).unwrap();
    let mut account = other.account(&bob.address()).await.unwrap();
    for _ in 0..100 {
        if account.free == before + 5 * UNIT / 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        account = other.account(&bob.address()).await.unwrap();
    }
    assert_eq!(account.free, before + 5 * UNIT / 2);
    verify_account(&account).expect("proof verifies");
    let mut lie = account.clone();
    lie.free += 1;
    assert!(
        verify_account(&lie).is_err(),
        "a changed balance must not verify"
    );

    // Blocks carry finality certificates that verify against the group key alone.
    let info = client.chain_info().await.unwrap();
    let head = client.finalized_head().await.unwrap();
    let certified = client.block(Some(head.certified_height)).await.unwrap();
    let certificate = certified
        .finalization
        .as_ref()
        .expect("certified block has its certificate");
    verify_finalization(&info, &certified.header, certificate).expect("certificate verifies");
    let parent = client
        .block(Some(certified.header.height - 1))
        .await
        .unwrap();
    assert!(
        verify_finalization(&info, &parent.header, certificate).is_err(),
        "certificate is for one block only"
    );
    let out = phala(&devnet, &["block"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("certificate"));

    // Bad input: each a clear JSON-RPC error.
    let raw = HttpClientBuilder::default()
        .build(devnet.rpc_url(0))
        .unwrap();
    let code = |result: Result<serde_json::Value, ClientError>| match result {
        Err(ClientError::Call(error)) => (
            error.code(),
            error
                .data()
                .map(|d| d.get().to_string())
                .unwrap_or_default(),
            error.message().to_string(),
        ),
        other => panic!("expected a JSON-RPC error, got {other:?}"),
    };
    let (c, _, _) = code(raw.request("no_such_method", rpc_params![]).await);
    assert_eq!(c, -32601);
    let (c, _, _) = code(raw.request("account", rpc_params!["not-an-address"]).await);
    assert_eq!(c, -32602);
    let (c, _, _) = code(raw.request("submit_transaction", rpc_params!["zz"]).await);
    assert_eq!(c, -32602);
    let (c, _, _) = code(raw.request("submit_transaction", rpc_params!["00ff"]).await);
    assert_eq!(c, -32602);
    let (c, _, _) = code(raw.request("block", rpc_params![u64::MAX]).await);
    assert_eq!(c, 1002);

    let alice = Keypair::dev("alice");
    let nonce = client.account(&alice.address()).await.unwrap().nonce;
    let submit = |stx: SignedTransaction| {
        let raw = &raw;
        async move {
            let mut params = ArrayParams::new();
            params.insert(hex::encode(stx.encode())).unwrap();
            code(raw.request("submit_transaction", params).await)
        }
    };
    let mut bad_signature = transfer_tx(&client, &alice, &bob, nonce, UNIT).await;
    bad_signature.signature[0] ^= 1;
    let (c, data, _) = submit(bad_signature).await;
    assert_eq!((c, data.contains("bad_signature")), (1001, true));
    let (_, data, _) =
        submit(transfer_tx(&client, &alice, &bob, nonce.saturating_sub(1), UNIT).await).await;
    assert!(data.contains("bad_nonce"), "{data}");
    let mut expired = transfer_tx(&client, &alice, &bob, nonce, UNIT).await;
    expired.tx.expiry = 0;
    let expired = alice.sign_transaction(
        &phala_api::rpc::parse_digest(&info.genesis_hash).unwrap(),
        expired.tx,
    );
    let (_, data, _) = submit(expired).await;
    assert!(data.contains("expired"), "{data}");
    let (_, data, message) =
        submit(transfer_tx(&client, &alice, &bob, nonce, 1_000_000_000 * UNIT).await).await;
    assert!(data.contains("insufficient_funds"), "{data}");
    assert!(
        message.contains("PHA"),
        "amounts are shown in PHA: {message}"
    );
    let mut cheap = transfer_tx(&client, &alice, &bob, nonce, UNIT).await;
    cheap.tx.fee = 1;
    let cheap = alice.sign_transaction(
        &phala_api::rpc::parse_digest(&info.genesis_hash).unwrap(),
        cheap.tx,
    );
    let (_, data, _) = submit(cheap).await;
    assert!(data.contains("fee_too_low"), "{data}");
    // A batch: each transaction gets its own verdict, in order.
    let good = transfer_tx(&client, &alice, &bob, nonce, UNIT).await;
    let mut forged = transfer_tx(&client, &alice, &bob, nonce + 1, UNIT).await;
    forged.signature[9] ^= 1;
    let answers: Vec<serde_json::Value> = raw
        .request(
            "submit_transactions",
            rpc_params![vec![
                hex::encode(good.encode()),
                hex::encode(forged.encode())
            ]],
        )
        .await
        .unwrap();
    assert_eq!(answers[0]["hash"], hex::encode(good.hash()));
    assert_eq!(answers[1]["error"]["code"], "bad_signature");
    let oversized = "00".repeat(phala_types::limits::MAX_TX_SIZE + 1);
    let (c, data, _) = code(
        raw.request("submit_transaction", rpc_params![oversized])
            .await,
    );
    assert_eq!((c, data.contains("oversized")), (1001, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_validator_restarts_and_catches_up_under_load() {
    let mut devnet = start(4).await;
    let clients: Vec<Client> = (0..4)
        .map(|i| Client::new(&devnet.rpc_url(i)).unwrap())
        .collect();
    let charlie = Keypair::dev("charlie");
    let dave = Keypair::dev("dave");
    let mut hashes = Vec::new();
    let mut nonce = clients[1].account(&charlie.address()).await.unwrap().nonce;

    let send =
        async |count: usize, hashes: &mut Vec<Digest>, nonce: &mut u64, clients: &[Client]| {
            for i in 0..count {
                let target = &clients[1 + i % 3];
                let stx = transfer_tx(target, &charlie, &dave, *nonce, UNIT).await;
                hashes.push(target.submit(&stx).await.expect("admitted"));
                *nonce += 1;
            }
        };
    send(20, &mut hashes, &mut nonce, &clients).await;
    devnet.kill(0).expect("kill -9");
    send(40, &mut hashes, &mut nonce, &clients).await;
    let height_while_down = clients[1].health().await.unwrap().finalized_height;
    devnet.restart(0).expect("restart");
    send(20, &mut hashes, &mut nonce, &clients).await;

    // Every admitted transfer is finalized, once.
    for hash in &hashes {
        let status = clients[2]
            .wait_final(hash, Duration::from_secs(60))
            .await
            .unwrap();
        assert!(matches!(status, TxStatus::Finalized { .. }), "{status:?}");
    }
    // The restarted validator catches up past where the others were while it was down ...
    let mut caught_up = false;
    for _ in 0..600 {
        if let Ok(health) = clients[0].health().await
            && health.finalized_height > height_while_down + 5
            && !health.replaying
        {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        caught_up,
        "validator 0 did not catch up; see {}",
        devnet.log_path(0).display()
    );
    // ... and agrees with the others on every block, including those finalized before the crash.
    let top = clients[0]
        .health()
        .await
        .unwrap()
        .finalized_height
        .min(clients[1].health().await.unwrap().finalized_height);
    for height in 1..=top {
        let ours = clients[0].block(Some(height)).await.unwrap().header.hash;
        let theirs = clients[1].block(Some(height)).await.unwrap().header.hash;
        assert_eq!(ours, theirs, "block {height} differs after restart");
    }
    let dave_balance = clients[0].account(&dave.address()).await.unwrap();
    verify_account(&dave_balance).unwrap();
    assert_eq!(dave_balance.nonce, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_verifies_the_chain_and_serves_it() {
    let devnet = start(4).await;
    let port = free_ports(1);
    let mut follower = Command::new(phala_cli::devnet::node_binary().unwrap())
        .arg("follow")
        .arg("--spec")
        .arg(devnet.dir().join("spec.json"))
        .arg("--data")
        .arg(devnet.dir().join("follower"))
        .arg("--upstream")
        .arg(devnet.rpc_url(1))
        .arg("--upstream")
        .arg(devnet.rpc_url(2))
        .arg("--rpc")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--log-level")
        .arg("warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("follower starts");
    let result = async {
        let follower_rpc = Client::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let validator = Client::new(&devnet.rpc_url(0)).unwrap();
        // A transfer submitted to the follower is forwarded and finalized.
        let alice = Keypair::dev("alice");
        let eve = Keypair::dev("eve");
        let mut ready = false;
        for _ in 0..300 {
            if follower_rpc
                .health()
                .await
                .is_ok_and(|h| h.finalized_height >= 3)
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ready, "follower did not sync");
        let nonce = validator.account(&alice.address()).await.unwrap().nonce;
        let stx = transfer_tx(&validator, &alice, &eve, nonce, 3 * UNIT).await;
        let hash = follower_rpc.submit(&stx).await.expect("forwarded");
        let status = follower_rpc
            .wait_final(&hash, Duration::from_secs(60))
            .await
            .unwrap();
        assert!(matches!(status, TxStatus::Finalized { .. }), "{status:?}");
        // The follower agrees with the validators on every block and serves verifiable state.
        let top = follower_rpc.health().await.unwrap().finalized_height;
        for height in 1..=top {
            let ours = follower_rpc.block(Some(height)).await.unwrap().header.hash;
            let theirs = validator.block(Some(height)).await.unwrap().header.hash;
            assert_eq!(ours, theirs, "block {height}");
        }
        let account = follower_rpc.account(&eve.address()).await.unwrap();
        verify_account(&account).unwrap();
        let info = follower_rpc.chain_info().await.unwrap();
        let head = follower_rpc.finalized_head().await.unwrap();
        verify_finalization(
            &info,
            &head.header,
            head.finalization.as_deref().expect("certified head"),
        )
        .unwrap();
        // A rejection by the upstream comes back with its reason.
        let mut bad = transfer_tx(&validator, &alice, &eve, nonce + 1, UNIT).await;
        bad.signature[0] ^= 1;
        match follower_rpc.submit(&bad).await {
            Err(phala_client::Error::Rpc { code, data, .. }) => {
                assert_eq!(code, 1001);
                assert_eq!(data.unwrap()["code"], "bad_signature");
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
    .await;
    let _ = follower.kill();
    let _ = follower.wait();
    result
}
