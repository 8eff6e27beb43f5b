//! A production (non-dev) genesis through the real binaries: no dev account is funded, the
//! treasury has no key, dev names are refused on this chain, and the admin the genesis names
//! can run the registry.

use phala_chain::balances::Allocation;
use phala_cli::devnet::{Devnet, DevnetOptions, Production, free_ports};
use phala_client::Client;
use phala_crypto::Keypair;
use phala_types::RegistryCall;
use phala_types::{AttestationPolicy, Call, TOTAL_SUPPLY, UNIT, system};
use std::{process::Command, time::Duration};

fn phala(devnet: &Devnet, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_phala"))
        .arg("--rpc")
        .arg(devnet.rpc_url(0))
        .args(args)
        .output()
        .expect("phala runs")
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_production_chain_has_no_dev_keys_and_its_admin_runs_the_registry() {
    let keys = tempfile::tempdir().unwrap();
    let admin = Keypair::generate();
    let holder = Keypair::generate();
    let holder_file = keys.path().join("holder.json");
    holder.save(&holder_file).unwrap();
    let mut options = DevnetOptions::new(1).expect("phala-node is built");
    options.rpc_port = free_ports(1);
    options.p2p_port = free_ports(1);
    options.production = Some(Production {
        admin: admin.address(),
        allocations: [&admin, &holder]
            .iter()
            .map(|key| Allocation {
                address: key.address(),
                balance: 1_000 * UNIT,
            })
            .collect(),
    });
    let mut devnet = Devnet::start(options).expect("devnet starts");
    devnet.wait_ready(Duration::from_secs(60)).await.unwrap();
    let client = Client::new(&devnet.rpc_url(0)).unwrap();

    // No dev account has anything; the keyless treasury holds the rest of the supply.
    let info = client.chain_info().await.unwrap();
    assert!(!info.dev);
    assert_eq!(info.fees.treasury, system::TREASURY);
    let alice = client.account(&Keypair::dev("alice").address()).await;
    assert_eq!(alice.unwrap().free, 0);
    let treasury = client.account(&system::TREASURY).await.unwrap();
    assert!(treasury.free >= TOTAL_SUPPLY - 2_000 * UNIT);

    // Dev names mean nothing here; `treasury` is not a name for a key at all.
    let holder_address = holder.address().to_string();
    let out = phala(
        &devnet,
        &[
            "transfer",
            "--from",
            "alice",
            "--to",
            &holder_address,
            "--amount",
            "1",
        ],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not a dev chain"), "{}", stderr(&out));
    let out = phala(
        &devnet,
        &[
            "transfer",
            "--from",
            "treasury",
            "--to",
            &holder_address,
            "--amount",
            "1",
        ],
    );
    assert!(
        !out.status.success(),
        "the treasury has no key to sign with"
    );
    let out = phala(&devnet, &["account", "show", "bob"]);
    assert!(stderr(&out).contains("not a dev chain"), "{}", stderr(&out));

    // A key file works.
    let admin_address = admin.address().to_string();
    let holder_path = holder_file.display().to_string();
    let out = phala(
        &devnet,
        &[
            "transfer",
            "--from",
            &holder_path,
            "--to",
            &admin_address,
            "--amount",
            "1.5",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // The admin creates a cluster and changes the policy; nobody else may.
    client
        .execute(
            &admin,
            Call::Registry(RegistryCall::CreateCluster { cluster: 3 }),
        )
        .await
        .unwrap();
    let mut policy = devnet.spec().genesis.registry.policy.clone();
    assert!(!policy.allow_simulated);
    policy.min_confidence = 4;
    client
        .execute(
            &admin,
            Call::Registry(RegistryCall::SetAttestationPolicy(policy)),
        )
        .await
        .unwrap();
    let error = client
        .execute(
            &holder,
            Call::Registry(RegistryCall::CreateCluster { cluster: 4 }),
        )
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("not the registry admin"),
        "{error}"
    );
    let simulated = AttestationPolicy::dev();
    let error = client
        .execute(
            &admin,
            Call::Registry(RegistryCall::SetAttestationPolicy(simulated)),
        )
        .await
        .unwrap_err();
    assert!(error.to_string().contains("simulated"), "{error}");
}

/// `phala-node genesis` refuses to make a production chain with a key anyone can compute.
#[test]
fn a_production_genesis_naming_a_dev_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = phala_cli::devnet::node_binary().unwrap();
    let alice = Keypair::dev("alice").address().to_string();
    let out = Command::new(&node)
        .args(["genesis", "--out", &dir.path().display().to_string()])
        .args(["--validators", "1", "--admin", &alice])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("alice"), "{}", stderr(&out));
    let allocation = format!("{}=5", Keypair::dev("operator-2").address());
    let out = Command::new(&node)
        .args(["genesis", "--out", &dir.path().display().to_string()])
        .args(["--validators", "1", "--allocation", &allocation])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("operator-2"), "{}", stderr(&out));
}
