//! Secure workers end to end through the real binaries: a validator, gatekeeper and worker
//! pRuntimes (simulated TEE) each relayed by its pherry; registration, master key handover,
//! cluster key delivery, rotation, a `kill -9` of a pRuntime and of the node, and a relayer's
//! attacks on a pRuntime's light client.

use commonware_codec::{Copying, DecodeExt, Encode};
use phala_api::{
    pruntime::{Info, RegistrationRequest},
    rpc::TxStatus,
};
use phala_cli::{
    devnet::{Devnet, DevnetOptions, free_ports, sibling_binary},
    workers::{DEV_CLUSTER, Workers, wait_until, write_anchor},
};
use phala_client::{
    Client,
    pruntime::{PruntimeClient, PruntimeError},
};
use phala_crypto::Keypair;
use phala_types::{Block, Call, DownwardMessage, SignedRegistration};
use phala_types::{MqCall, RegistryCall};
use pherry::batch::build_batch;
use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

async fn start_chain() -> Devnet {
    let mut options = DevnetOptions::new(1).expect("phala-node is built");
    options.rpc_port = free_ports(1);
    options.p2p_port = free_ports(1);
    let mut devnet = Devnet::start(options).expect("devnet starts");
    devnet
        .wait_ready(Duration::from_secs(60))
        .await
        .expect("ready");
    devnet
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_register_receive_keys_rotate_and_survive_a_crash() {
    let mut devnet = start_chain().await;
    let nodes = vec![devnet.rpc_url(0)];
    let node = Client::new(&nodes[0]).unwrap();
    let admin = Keypair::dev("alice");
    let mut workers = Workers::start(devnet.dir(), &nodes, 2, 3, free_ports(5))
        .await
        .expect("pRuntimes start");
    workers
        .bootstrap(&node, &admin, Duration::from_secs(120))
        .await
        .expect("registration, master key handover and cluster keys");

    let records = node.workers().await.unwrap();
    assert_eq!(records.len(), 5);
    assert_eq!(records.iter().filter(|r| r.gatekeeper).count(), 2);
    assert!(
        records
            .iter()
            .all(|r| r.confidence == 1 && r.tee == phala_types::TeeKind::Simulated)
    );
    let infos = workers.infos(Duration::from_secs(10)).await.unwrap();
    for (process, info) in workers.processes.iter().zip(&infos) {
        let record = records
            .iter()
            .find(|r| r.identity == info.identity)
            .unwrap();
        assert_eq!(record.gatekeeper, process.gatekeeper, "{}", process.name);
        assert_eq!(
            record.ecdh,
            <[u8; 32]>::try_from(hex::decode(&info.ecdh).unwrap()).unwrap()
        );
        if !process.gatekeeper {
            assert_eq!(record.cluster, Some(DEV_CLUSTER));
        }
    }

    // kill -9 one worker's pRuntime; it resumes from its sealed checkpoint with the same keys.
    let before = PruntimeClient::new(&workers.processes[2].api)
        .unwrap()
        .info()
        .await
        .unwrap();
    workers.kill_pruntime(2).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    workers.restart_pruntime(2).unwrap();
    let client = PruntimeClient::new(&workers.processes[2].api).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    wait_until(deadline, "the restarted pRuntime to catch up", || async {
        Ok(client.info().await?.height > before.height)
    })
    .await
    .unwrap();
    let after = client.info().await.unwrap();
    assert_eq!(after.identity, before.identity);
    assert_eq!(after.ecdh, before.ecdh);
    assert_eq!(after.cluster_keys, before.cluster_keys);

    // The node every pherry relays through crashes and restarts: they reconnect and go on.
    devnet.kill(0).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    devnet.restart(0).unwrap();
    devnet.wait_ready(Duration::from_secs(60)).await.unwrap();

    // Rotation: the gatekeepers make generation 2 and re-deliver cluster keys, the restarted
    // worker included; generation 1 stays for decrypting old data.
    node.execute(&admin, Call::Registry(RegistryCall::RotateMasterKey))
        .await
        .unwrap();
    workers
        .wait_for_keys(&node, Instant::now() + Duration::from_secs(60), 2)
        .await
        .expect("generation 2 keys everywhere");
    for process in &workers.processes {
        let info = PruntimeClient::new(&process.api)
            .unwrap()
            .info()
            .await
            .unwrap();
        if process.gatekeeper {
            assert_eq!(info.master_generations, vec![1, 2], "{}", process.name);
        } else {
            assert_eq!(
                info.cluster_keys,
                vec![(DEV_CLUSTER, 1), (DEV_CLUSTER, 2)],
                "{}",
                process.name
            );
        }
    }

    // Every worker of the cluster that was never interrupted and the restarted one agree on
    // their stream positions at the same height: nothing was skipped or processed twice.
    let deadline = Instant::now() + Duration::from_secs(30);
    wait_until(deadline, "workers to agree", || async {
        let a = PruntimeClient::new(&workers.processes[2].api)?
            .info()
            .await?;
        let b = PruntimeClient::new(&workers.processes[3].api)?
            .info()
            .await?;
        Ok(a.height == b.height && a.streams[0] == b.streams[0])
    })
    .await
    .unwrap();

    // A signed upward message the chain already accepted cannot be relayed again.
    let replayed = find_upward_message(&node).await;
    let stx = node
        .sign_call(
            &Keypair::dev("bob"),
            Call::Mq(MqCall::SubmitUpward(replayed)),
            None,
        )
        .await
        .unwrap();
    let hash = node.submit(&stx).await.unwrap();
    let status = node
        .wait_final(&hash, Duration::from_secs(30))
        .await
        .unwrap();
    // It is included as failed: the relayer pays for the signature check, nothing is applied.
    assert!(
        matches!(&status, TxStatus::Finalized { failed: Some(failure), .. } if failure.code == "bad_sequence"),
        "a replayed message must be refused: {status:?}"
    );
}

/// An upward message from a finalized block (a gatekeeper's or worker's).
async fn find_upward_message(node: &Client) -> phala_types::UpwardMessage {
    let head = node.health().await.unwrap().finalized_height;
    for height in 1..=head {
        let block = node.block(Some(height)).await.unwrap();
        let block = Block::decode(Copying(&hex::decode(&block.raw).unwrap())).unwrap();
        for stx in block.transactions {
            if let Call::Mq(MqCall::SubmitUpward(message)) = stx.tx.call {
                return message;
            }
        }
    }
    panic!("no upward message on chain");
}

/// A pRuntime with no pherry: the test is its (malicious) relayer.
struct Standalone {
    child: Child,
    api: PruntimeClient,
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn standalone(devnet: &Devnet, node: &Client) -> Standalone {
    let dir = devnet.dir().join("standalone");
    std::fs::create_dir_all(&dir).unwrap();
    let anchor = dir.join("anchor.json");
    write_anchor(node, &anchor).await.unwrap();
    let port = free_ports(1);
    let child = Command::new(sibling_binary("pruntime", "PHALA_PRUNTIME_BIN").unwrap())
        .args(["--data-dir", &dir.display().to_string()])
        .args(["--anchor", &anchor.display().to_string()])
        .args(["--tee", "simulated"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let api = PruntimeClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    wait_until(deadline, "the pRuntime", || async {
        Ok(api.info().await.is_ok())
    })
    .await
    .unwrap();
    Standalone { child, api }
}

fn refusal(result: Result<impl std::fmt::Debug, PruntimeError>) -> String {
    match result.expect_err("the batch must be refused") {
        PruntimeError::Refused { reason, .. } => reason,
        other => panic!("expected a refusal, got {other}"),
    }
}

async fn height(api: &PruntimeClient) -> u64 {
    api.info().await.unwrap().height
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayer_cannot_replay_skip_reorder_forge_or_fake_finality() {
    let devnet = start_chain().await;
    let node = Client::new(&devnet.rpc_url(0)).unwrap();
    let admin = Keypair::dev("alice");
    // Two messages on the `All` stream: master keys published by a gatekeeper, twice.
    let mut workers = Workers::start(devnet.dir(), &[devnet.rpc_url(0)], 1, 0, free_ports(1))
        .await
        .unwrap();
    workers
        .bootstrap(&node, &admin, Duration::from_secs(120))
        .await
        .unwrap();
    node.execute(&admin, Call::Registry(RegistryCall::RotateMasterKey))
        .await
        .unwrap();
    workers
        .wait_for_keys(&node, Instant::now() + Duration::from_secs(60), 2)
        .await
        .unwrap();
    workers.stop();

    let pruntime = standalone(&devnet, &node).await;
    let api = &pruntime.api;
    let info: Info = api.info().await.unwrap();
    let head = node.health().await.unwrap().finalized_height;
    let batch = build_batch(&node, &info, head).await.unwrap();
    assert!(
        batch.messages.len() >= 2,
        "the All stream has both publications"
    );

    // Skipped: a message left out.
    let mut skipped = batch.clone();
    skipped.messages.remove(0);
    let error = refusal(api.sync(&skipped).await);
    assert!(
        error.contains("gap or repeat") || error.contains("left out"),
        "{error}"
    );
    // The last message left out, with a witness made for the truncated stream: the witness
    // itself shows the missing message lives inside the batch.
    let mut tail = batch.clone();
    tail.messages.pop();
    let truncated: Vec<_> = info
        .streams
        .iter()
        .map(|(destination, next)| {
            let kept = tail
                .messages
                .iter()
                .filter(|m| {
                    let bytes = hex::decode(&m.message).unwrap();
                    DownwardMessage::decode(Copying(&bytes))
                        .unwrap()
                        .destination
                        == *destination
                })
                .count() as u64;
            (*destination, next + kept)
        })
        .collect();
    tail.witness = node.stream_witness(&truncated, None, &[]).await.unwrap();
    let error = refusal(api.sync(&tail).await);
    assert!(error.contains("left out"), "{error}");
    // An unrelated witness does not prove anything either.
    let mut stale = batch.clone();
    stale.messages.pop();
    assert!(refusal(api.sync(&stale).await).contains("does not verify"));

    // Reordered.
    let mut reordered = batch.clone();
    reordered.messages.swap(0, 1);
    let error = refusal(api.sync(&reordered).await);
    assert!(
        error.contains("out of chain order") || error.contains("gap or repeat"),
        "{error}"
    );

    // Forged: a message body changed.
    let mut forged = batch.clone();
    let bytes = hex::decode(&forged.messages[0].message).unwrap();
    let mut message = DownwardMessage::decode(Copying(&bytes)).unwrap();
    message.payload = b"forged".to_vec().into();
    forged.messages[0].message = hex::encode(message.encode());
    assert!(refusal(api.sync(&forged).await).contains("does not match the block's outbox root"));

    // A header changed under its certificate, and a certificate of another block.
    let mut tampered = batch.clone();
    tampered.headers[0].timestamp += 1;
    let error = refusal(api.sync(&tampered).await);
    assert!(error.contains("parent hash mismatch"), "{error}");
    let mut foreign = batch.clone();
    let other = node
        .block(Some(1))
        .await
        .unwrap()
        .finalization
        .expect("block 1 is certified");
    foreign.certificate = other;
    assert!(refusal(api.sync(&foreign).await).contains("finality certificate refused"));
    let mut garbage = batch.clone();
    garbage.certificate = "00".repeat(83);
    assert!(refusal(api.sync(&garbage).await).contains("finality certificate refused"));
    assert_eq!(
        height(api).await,
        0,
        "nothing of a refused batch is applied"
    );

    // The honest batch is accepted; replaying it (or any old block) is refused.
    api.sync(&batch).await.expect("an honest batch");
    let synced = height(api).await;
    assert!(synced >= head);
    let error = refusal(api.sync(&batch).await);
    assert!(error.contains("old or skipped block"), "{error}");
    assert_eq!(height(api).await, synced);

    // Its registration cannot be taken over by another operator.
    let signed = api
        .registration(&RegistrationRequest {
            operator: Keypair::dev("operator-15").address(),
            freshness: synced,
        })
        .await
        .unwrap();
    let signed =
        SignedRegistration::decode(Copying(&hex::decode(&signed.registration).unwrap())).unwrap();
    let error = node
        .execute(
            &Keypair::dev("bob"),
            Call::Registry(RegistryCall::RegisterWorker(signed.clone())),
        )
        .await
        .expect_err("bob is not the operator");
    assert!(error.to_string().contains("operator"), "{error}");
    node.execute(
        &Keypair::dev("operator-15"),
        Call::Registry(RegistryCall::RegisterWorker(signed)),
    )
    .await
    .expect("its own operator registers it");
}
