//! `phala dev --demo`: the confidential analytics contract end to end on the local network.
//! Each step checks what it should; the first that does not ends the demo with an error.

use crate::contract::DEFAULT_GAS;
use anyhow::{Context as _, bail, ensure};
use phala_client::{
    Client,
    contract_ops::{self, QueryOutcome},
    receipt,
};
use phala_crypto::Keypair;
use std::time::Duration;

/// The analytics contract, built from `contracts/analytics` (see `scripts/build-contracts.sh`).
pub const ANALYTICS_WASM: &[u8] = include_bytes!("../../../contracts/wasm/analytics.wasm");

/// A fresh analytics contract on cluster 0 (groups need at least 3 participants), as the demo
/// and the query benchmark deploy it.
pub fn analytics_deployment(code_hash: [u8; 32]) -> contract_ops::Deployment<'static> {
    contract_ops::Deployment {
        code_hash,
        cluster: 0,
        salt: rand::random(),
        storage_quota: contract_ops::DEFAULT_STORAGE_QUOTA,
        input: b"min_group 3",
    }
}

const WAIT: Duration = Duration::from_secs(90);

/// Runs the demo against a ready network: `worker` is a worker pRuntime's API.
pub async fn run(node: &Client, worker: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().timeout(WAIT).build()?;
    let alice = Keypair::dev("alice");
    step("alice uploads the confidential analytics contract");
    let code = contract_ops::upload_code(node, &alice, ANALYTICS_WASM).await?;
    done(&format!("code hash {}", hex::encode(code)));

    step("alice instantiates it on cluster 0 (groups need at least 3 participants)");
    let record = contract_ops::instantiate(node, &alice, analytics_deployment(code), WAIT).await?;
    let contract = record.id;
    done(&format!(
        "contract {}; the gatekeepers published its public key",
        hex::encode(contract)
    ));

    let points = [
        ("bob", 5200),
        ("charlie", 6100),
        ("dave", 4800),
        ("eve", 7000),
    ];
    for (who, value) in points {
        step(&format!(
            "{who} submits a private data point (encrypted to the contract)"
        ));
        submit(node, who, &contract, &format!("submit salary {value}")).await?;
    }
    step("ferdie alone submits to group `rare`");
    submit(node, "ferdie", &contract, "submit rare 9000").await?;

    step("alice (the analyst) queries the aggregate of `salary`");
    let outcome = query(node, &http, worker, &alice, &contract, "aggregate salary").await?;
    let answer = outcome
        .answer
        .as_ref()
        .map(|a| String::from_utf8_lossy(a).into_owned());
    match &answer {
        Ok(text) if text.contains("count=4") && text.contains("sum=23100") => {
            done(&format!("answer: {text}"))
        }
        other => bail!("unexpected answer to the authorized query: {other:?}"),
    }

    step("bob (not an analyst) asks for the same aggregate");
    let refused = query(
        node,
        &http,
        worker,
        &Keypair::dev("bob"),
        &contract,
        "aggregate salary",
    )
    .await?;
    match &refused.answer {
        Err(message) if message.contains("not authorized") => done(&format!("refused: {message}")),
        other => bail!("bob's query should have been refused, got {other:?}"),
    }

    step("alice asks for `rare`, which has a single participant");
    let small = query(node, &http, worker, &alice, &contract, "aggregate rare").await?;
    match &small.answer {
        Err(message) if message.contains("fewer than") => done(&format!("refused: {message}")),
        other => bail!("a group below the minimum should have been refused, got {other:?}"),
    }

    step("anyone checks alice's receipt against the chain");
    // The demo's own chain, as a user would remember it at first use.
    let trust = phala_api::TrustedChain::from_info(&node.chain_info().await?);
    let check = receipt::verify_receipt(node, &trust, &outcome.receipt).await?;
    done(&format!(
        "signed by registered worker {} ({:?}) of cluster {}, running code {}",
        check.worker, check.tee, check.cluster, check.code_hash
    ));
    let mut tampered = outcome.receipt.clone();
    tampered.height = tampered.height.saturating_sub(1);
    ensure!(
        receipt::verify_receipt(node, &trust, &tampered)
            .await
            .is_err(),
        "a receipt with a changed field must not verify"
    );
    done("a copy with one field changed is refused");
    println!("demo complete: every step did what it should");
    Ok(())
}

async fn submit(node: &Client, who: &str, contract: &[u8; 32], input: &str) -> anyhow::Result<()> {
    let signer = Keypair::dev(who);
    let sent =
        contract_ops::command(node, &signer, contract, input.as_bytes(), DEFAULT_GAS).await?;
    let report = contract_ops::wait_report(node, contract, sent.index, WAIT).await?;
    ensure!(
        report.succeeded,
        "{who}'s command {} failed in the contract",
        sent.index
    );
    done(&format!(
        "command {} executed by the cluster; gas {}; the chain saw only ciphertext",
        sent.index, report.gas_used
    ));
    Ok(())
}

async fn query(
    node: &Client,
    http: &reqwest::Client,
    worker: &str,
    caller: &Keypair,
    contract: &[u8; 32],
    input: &str,
) -> anyhow::Result<QueryOutcome> {
    contract_ops::query(node, http, worker, caller, contract, input.as_bytes(), 20)
        .await
        .with_context(|| format!("query `{input}`"))
}

fn step(text: &str) {
    println!("==> {text}");
}

fn done(text: &str) {
    println!("    ok: {text}");
}
