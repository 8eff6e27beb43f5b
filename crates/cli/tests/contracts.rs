//! Confidential contracts end to end through the real binaries: a validator, a gatekeeper and
//! worker pRuntimes with their pherries. Deployment, encrypted commands executed identically by
//! every worker of the cluster, encrypted queries with receipts, the attacks a user relies on
//! being refused, a worker's death, and a late worker catching up from the chain.

use bytes::Bytes;
use phala_api::{
    TrustedChain,
    query::{prepare_query, seal_command},
    rpc::TxStatus,
};
use phala_cli::{
    devnet::{Devnet, DevnetOptions, free_ports},
    workers::{DEV_CLUSTER, Workers, wait_until},
};
use phala_client::{
    Client,
    contract_ops::{self, QueryFailure},
    receipt::verify_receipt,
};
use phala_crypto::Keypair;
use phala_types::{Call, ReportRecord, contracts::ContractId};
use phala_types::{ContractsCall, RegistryCall};
use std::time::{Duration, Instant};

const VAULT: &[u8] = include_bytes!("../../../contracts/wasm/vault.wasm");
const GAS: u64 = 10_000_000;
const WAIT: Duration = Duration::from_secs(90);

async fn start_chain() -> Devnet {
    let mut options = DevnetOptions::new(1).expect("phala-node is built");
    options.rpc_port = free_ports(1);
    options.p2p_port = free_ports(1);
    let mut devnet = Devnet::start(options).expect("devnet starts");
    devnet.wait_ready(WAIT).await.expect("ready");
    devnet
}

/// Waits until `workers` workers reported call `index`, and returns the record.
async fn confirmed(node: &Client, contract: &ContractId, index: u64, workers: u32) -> ReportRecord {
    let deadline = Instant::now() + WAIT;
    let what = format!("{workers} reports of call {index}");
    wait_until(deadline, &what, || async {
        Ok(node
            .contract_report(contract, index)
            .await?
            .is_some_and(|r| r.confirmations >= workers))
    })
    .await
    .unwrap();
    node.contract_report(contract, index)
        .await
        .unwrap()
        .unwrap()
}

async fn send(
    node: &Client,
    signer: &Keypair,
    contract: &ContractId,
    input: &str,
    gas: u64,
) -> u64 {
    contract_ops::command(node, signer, contract, input.as_bytes(), gas)
        .await
        .expect("command included")
        .index
}

async fn ask(
    node: &Client,
    worker: &str,
    caller: &Keypair,
    contract: &ContractId,
    input: &str,
) -> Result<contract_ops::QueryOutcome, QueryFailure> {
    let http = reqwest::Client::new();
    contract_ops::query(node, &http, worker, caller, contract, input.as_bytes(), 20).await
}

fn text(outcome: &contract_ops::QueryOutcome) -> String {
    String::from_utf8(outcome.answer.clone().expect("answered")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contracts_run_confidentially_identically_and_survive_a_worker() {
    let mut devnet = start_chain().await;
    let nodes = vec![devnet.rpc_url(0)];
    let node = Client::new(&nodes[0]).unwrap();
    let trust = TrustedChain::from_info(&node.chain_info().await.unwrap());
    let alice = Keypair::dev("alice");
    let bob = Keypair::dev("bob");
    let eve = Keypair::dev("eve");
    let base_port = free_ports(4);
    let mut workers = Workers::start(devnet.dir(), &nodes, 1, 2, base_port)
        .await
        .expect("pRuntimes start");
    workers
        .bootstrap(&node, &alice, WAIT)
        .await
        .expect("keys delivered");
    let (worker0, worker1) = (
        workers.processes[1].api.clone(),
        workers.processes[2].api.clone(),
    );

    // Deploy: init runs on both workers and they agree.
    let code = contract_ops::upload_code(&node, &alice, VAULT)
        .await
        .unwrap();
    let deployment = contract_ops::Deployment {
        code_hash: code,
        cluster: DEV_CLUSTER,
        salt: [7; 32],
        storage_quota: contract_ops::DEFAULT_STORAGE_QUOTA,
        input: b"supply 1000",
    };
    let record = contract_ops::instantiate(&node, &alice, deployment, WAIT)
        .await
        .unwrap();
    let vault = record.id;
    let init = confirmed(&node, &vault, 0, 2).await;
    assert!(init.succeeded && init.dispute.is_none());

    // An encrypted transfer, executed identically by both workers.
    let bob_address = bob.address().to_string();
    let index = send(
        &node,
        &alice,
        &vault,
        &format!("transfer {bob_address} 300"),
        GAS,
    )
    .await;
    let transfer = confirmed(&node, &vault, index, 2).await;
    assert!(transfer.succeeded, "{transfer:?}");
    assert!(transfer.dispute.is_none());
    assert_ne!(transfer.commitment, init.commitment);

    // Both workers answer bob's private balance from the same state, with valid receipts.
    for worker in [&worker0, &worker1] {
        let wait = Instant::now() + WAIT;
        wait_until(wait, "the worker to apply the transfer", || async {
            Ok(ask(&node, worker, &bob, &vault, "balance")
                .await
                .is_ok_and(|o| text(&o) == "balance=300"))
        })
        .await
        .unwrap();
        let outcome = ask(&node, worker, &bob, &vault, "balance").await.unwrap();
        assert_eq!(outcome.receipt.state_commitment, transfer.commitment);
        let check = verify_receipt(&node, &trust, &outcome.receipt)
            .await
            .unwrap();
        assert_eq!(check.reported_call, index);
    }
    // Nobody else learns bob's balance: eve asks and sees her own.
    let eves = ask(&node, &worker0, &eve, &vault, "balance").await.unwrap();
    assert_eq!(text(&eves), "balance=0");

    // A receipt with any field changed does not verify.
    let good = ask(&node, &worker0, &bob, &vault, "balance")
        .await
        .unwrap()
        .receipt;
    let mut variants = Vec::new();
    for field in 0..8 {
        let mut receipt = good.clone();
        match field {
            0 => receipt.contract[0] ^= 1,
            1 => receipt.code_hash[0] ^= 1,
            2 => receipt.request_hash[0] ^= 1,
            3 => receipt.response_hash[0] ^= 1,
            4 => receipt.height -= 1,
            5 => receipt.state_commitment[0] ^= 1,
            6 => receipt.worker = eve.address(),
            _ => receipt.signature[0] ^= 1,
        }
        variants.push(receipt);
    }
    for (field, receipt) in variants.iter().enumerate() {
        assert!(
            verify_receipt(&node, &trust, receipt).await.is_err(),
            "receipt with field {field} changed verified"
        );
    }

    // Out of gas: the command fails and the state does not change.
    let index = send(
        &node,
        &alice,
        &vault,
        &format!("transfer {bob_address} 1"),
        1_000,
    )
    .await;
    let out_of_gas = confirmed(&node, &vault, index, 2).await;
    assert!(!out_of_gas.succeeded);
    assert_eq!(out_of_gas.commitment, transfer.commitment);
    assert_eq!(
        out_of_gas.gas_used, 1_000,
        "out of gas pays its whole limit"
    );
    // Every command so far is reported, so its gas is settled: none is left in escrow.
    let escrow = node
        .account(&phala_chain::contracts::GAS_ESCROW)
        .await
        .unwrap();
    assert_eq!(escrow.free, 0);

    // A tampered ciphertext: included (the chain cannot tell), refused by the enclaves.
    let public_key = record.public_key.unwrap();
    let nonce = node.account(&alice.address()).await.unwrap().nonce;
    let (encapped, mut ciphertext) = seal_command(
        &public_key,
        &vault,
        &alice.address(),
        nonce,
        format!("transfer {bob_address} 5").as_bytes(),
    )
    .unwrap();
    ciphertext[3] ^= 0x40;
    let tampered = Call::Contracts(ContractsCall::Command {
        contract: vault,
        gas_limit: GAS,
        encapped,
        ciphertext: Bytes::from(ciphertext),
    });
    node.execute(&alice, tampered).await.unwrap();
    let index = node.contract(&vault).await.unwrap().record.commands;
    let refused = confirmed(&node, &vault, index, 2).await;
    assert!(!refused.succeeded);
    assert_eq!(refused.commitment, transfer.commitment);

    // A replayed command: the same signed transaction again is refused by its nonce; its
    // ciphertext copied into eve's transaction does not decrypt (it is bound to alice's nonce).
    let nonce = node.account(&alice.address()).await.unwrap().nonce;
    let (encapped, ciphertext) = seal_command(
        &public_key,
        &vault,
        &alice.address(),
        nonce,
        format!("transfer {bob_address} 7").as_bytes(),
    )
    .unwrap();
    let call = Call::Contracts(ContractsCall::Command {
        contract: vault,
        gas_limit: GAS,
        encapped,
        ciphertext: Bytes::from(ciphertext),
    });
    let stx = node
        .sign_call(&alice, call.clone(), Some(nonce))
        .await
        .unwrap();
    let hash = node.submit(&stx).await.unwrap();
    assert!(!matches!(
        node.wait_final(&hash, WAIT).await.unwrap(),
        TxStatus::Rejected { .. }
    ));
    let applied = node.contract(&vault).await.unwrap().record.commands;
    assert!(confirmed(&node, &vault, applied, 2).await.succeeded);
    let replay = node.submit(&stx).await;
    let replay_rejected = match replay {
        Err(_) => true,
        Ok(hash) => matches!(
            node.wait_final(&hash, WAIT).await,
            Ok(TxStatus::Rejected { .. }) | Err(_)
        ),
    };
    assert!(replay_rejected, "a replayed transaction must be refused");
    node.execute(&eve, call).await.unwrap();
    let copied = node.contract(&vault).await.unwrap().record.commands;
    let copy = confirmed(&node, &vault, copied, 2).await;
    assert!(!copy.succeeded, "a copied ciphertext must not run as eve");
    let answer = ask(&node, &worker0, &bob, &vault, "balance").await.unwrap();
    assert_eq!(text(&answer), "balance=307");

    // Queries the worker refuses: another caller's signature, a stale worker.
    let mut prepared = prepare_query(&bob, &vault, &public_key, b"balance", 0).unwrap();
    prepared.request.caller = eve.address();
    let forged =
        contract_ops::send_query(&reqwest::Client::new(), &worker0, &prepared.request).await;
    assert!(
        matches!(&forged, Err(QueryFailure::Refused(m)) if m.contains("signature")),
        "{forged:?}"
    );
    let head = node.health().await.unwrap().finalized_height;
    let future = prepare_query(&bob, &vault, &public_key, b"balance", head + 1_000).unwrap();
    let stale = contract_ops::send_query(&reqwest::Client::new(), &worker0, &future.request).await;
    assert!(
        matches!(&stale, Err(QueryFailure::Refused(m)) if m.contains("behind")),
        "{stale:?}"
    );

    // A query session: one signed, encrypted opening, then cheap queries keyed from it, each
    // with a receipt that verifies on chain; a session is bound to its caller, worker and keys.
    let http = reqwest::Client::new();
    let opening = prepare_query(&bob, &vault, &public_key, b"", 0).unwrap();
    let session = contract_ops::open_session(&http, &worker0, opening)
        .await
        .unwrap();
    for _ in 0..2 {
        let prepared = session.prepare(b"balance", 0);
        let response = contract_ops::send_session_query(&http, &worker0, &prepared.query)
            .await
            .unwrap();
        assert_eq!(prepared.open(&response).unwrap().unwrap(), b"balance=307");
        verify_receipt(&node, &trust, &response.receipt)
            .await
            .unwrap();
    }
    let mut tampered = session.prepare(b"balance", 0);
    let mut bytes = hex::decode(&tampered.query.ciphertext).unwrap();
    bytes[0] ^= 1;
    tampered.query.ciphertext = hex::encode(bytes);
    let refused = contract_ops::send_session_query(&http, &worker0, &tampered.query).await;
    assert!(
        matches!(&refused, Err(QueryFailure::Refused(m)) if m.contains("decrypt")),
        "{refused:?}"
    );
    // An oversized body is refused before the worker decodes it.
    let mut huge = session.prepare(b"balance", 0);
    huge.query.ciphertext = "00".repeat(512 * 1024);
    let refused = contract_ops::send_session_query(&http, &worker0, &huge.query).await;
    assert!(
        matches!(&refused, Err(QueryFailure::Refused(m)) if m.contains("413")),
        "{refused:?}"
    );
    let elsewhere =
        contract_ops::send_session_query(&http, &worker1, &session.prepare(b"balance", 0).query)
            .await;
    assert!(
        matches!(&elsewhere, Err(QueryFailure::Refused(m)) if m.contains("session")),
        "another worker does not know the session: {elsewhere:?}"
    );
    let mut forged = prepare_query(&bob, &vault, &public_key, b"", 0).unwrap();
    forged.request.caller = eve.address();
    assert!(
        contract_ops::open_session(&http, &worker0, forged)
            .await
            .is_err(),
        "a session opened in another caller's name"
    );

    // Availability: worker 0 dies, worker 1 keeps answering.
    workers.kill_pruntime(1).unwrap();
    let outcome = ask(&node, &worker1, &bob, &vault, "balance").await.unwrap();
    assert_eq!(text(&outcome), "balance=307");

    // A new worker joins the cluster, catches up from the chain, and answers identically.
    workers.add(&nodes, false, base_port + 3).unwrap();
    let newcomer = workers.processes[3].api.clone();
    let info = phala_client::pruntime::PruntimeClient::new(&newcomer).unwrap();
    let deadline = Instant::now() + WAIT;
    wait_until(deadline, "the new worker to register", || async {
        let id = info.info().await?.identity;
        Ok(node.workers().await?.iter().any(|w| w.identity == id))
    })
    .await
    .unwrap();
    let id = info.info().await.unwrap().identity;
    node.execute(
        &alice,
        Call::Registry(RegistryCall::AssignCluster {
            worker: id,
            cluster: DEV_CLUSTER,
        }),
    )
    .await
    .unwrap();
    wait_until(deadline, "the new worker to catch up", || async {
        Ok(ask(&node, &newcomer, &bob, &vault, "balance")
            .await
            .is_ok_and(|o| text(&o) == "balance=307"))
    })
    .await
    .unwrap();
    let late = ask(&node, &newcomer, &bob, &vault, "balance")
        .await
        .unwrap();
    assert_eq!(
        late.receipt.state_commitment,
        outcome.receipt.state_commitment
    );
    verify_receipt(&node, &trust, &late.receipt).await.unwrap();

    workers.stop();
    devnet.stop();
}
