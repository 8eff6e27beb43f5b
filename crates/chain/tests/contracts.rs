//! The contracts module in the state transition: what instantiation needs, what a command costs
//! and where it goes, and how workers' reports of each call are recorded, confirmed and
//! disputed.

mod common;

use bytes::Bytes;
use common::*;
use commonware_codec::{Copying, DecodeExt, Encode};
use phala_chain::{
    TxError,
    contracts::{self, ContractsConfig, keys},
    mq,
    state::{Overlay, StateRead},
};
use phala_types::{
    AttestationPolicy, Call, ContractCommand, ContractId, ContractPublicKey, ContractRecord,
    ContractReport, Destination, MasterPublicKey, ReportRecord,
    contracts::{code_hash, topics},
    registry::{decode_payload, topics as registry_topics},
};
use phala_types::{BalancesCall, ContractsCall, MqCall, RegistryCall};

/// The smallest byte string the chain takes as WebAssembly (workers load the real thing).
const CODE: &[u8] = b"\0asm\x01\0\0\0 a module";
/// The storage quota `instantiate` buys.
const QUOTA: u64 = 10_000;

/// A dev chain whose gatekeeper holds master key generation 1, with workers `w1`, `w2` in
/// cluster 0 and `w3` in cluster 1.
struct Network {
    chain: Chain,
    gatekeeper: Enclave,
    w1: Enclave,
    w2: Enclave,
    w3: Enclave,
}

impl Network {
    fn new() -> Self {
        Self::on(Chain::new(true, AttestationPolicy::dev()))
    }

    /// The network on `chain`.
    fn on(mut chain: Chain) -> Self {
        let admin = key("admin");
        let mut gatekeeper = Enclave::new("gk");
        gatekeeper.register(&mut chain, &key("op1"), true).unwrap();
        chain
            .apply(
                &admin,
                Call::Registry(RegistryCall::AddGatekeeper(gatekeeper.identity.address())),
            )
            .unwrap();
        let master = MasterPublicKey {
            generation: 1,
            public_key: [9; 32],
        };
        let message = gatekeeper.upward(
            registry_topics::PUBLISH_MASTER_KEY,
            master.encode().to_vec(),
        );
        chain
            .apply(&key("op1"), Call::Mq(MqCall::SubmitUpward(message)))
            .unwrap();
        let (w1, w2, w3) = (
            Enclave::new("w-1"),
            Enclave::new("w-22"),
            Enclave::new("w-333"),
        );
        for (worker, cluster) in [(&w1, 0), (&w2, 0), (&w3, 1)] {
            worker.register(&mut chain, &key("op2"), false).unwrap();
            let call = Call::Registry(RegistryCall::AssignCluster {
                worker: worker.identity.address(),
                cluster,
            });
            chain.apply(&admin, call).unwrap();
        }
        Network {
            chain,
            gatekeeper,
            w1,
            w2,
            w3,
        }
    }

    /// op3 uploads `CODE` and instantiates it on cluster 0.
    fn deploy(&mut self, salt: u8) -> Result<ContractId, TxError> {
        self.chain.apply(
            &key("op3"),
            Call::Contracts(ContractsCall::UploadCode {
                code: Bytes::from_static(CODE),
            }),
        )?;
        self.chain.apply(&key("op3"), instantiate(0, salt))?;
        Ok(phala_types::contracts::contract_id(
            &key("op3").address(),
            &code_hash(CODE),
            0,
            &[salt; 32],
        ))
    }

    fn publish_key(&mut self, contract: ContractId, key_byte: u8) -> Result<(), String> {
        let payload = ContractPublicKey {
            contract,
            public_key: [key_byte; 32],
        };
        self.gatekeeper
            .send(
                &mut self.chain,
                &key("op1"),
                topics::PUBLISH_KEY,
                payload.encode().to_vec(),
            )
            .map(drop)
    }

    fn record(&self, contract: &ContractId) -> ContractRecord {
        contracts::contract(&Overlay::new(&self.chain.db), contract).expect("a contract")
    }

    fn report_record(&self, contract: &ContractId, index: u64) -> Option<ReportRecord> {
        let bytes = self.chain.db.get(&keys::report(contract, index))?;
        Some(ReportRecord::decode(Copying(bytes.as_slice())).unwrap())
    }
}

fn instantiate(cluster: u32, salt: u8) -> Call {
    Call::Contracts(ContractsCall::Instantiate {
        code_hash: code_hash(CODE),
        cluster,
        salt: [salt; 32],
        storage_quota: QUOTA,
        input: Bytes::from_static(b"init"),
    })
}

fn command(contract: ContractId, gas_limit: u64) -> Call {
    Call::Contracts(ContractsCall::Command {
        contract,
        gas_limit,
        encapped: [5; 32],
        ciphertext: Bytes::from_static(b"sealed input"),
    })
}

/// `worker`'s report of call `index`, relayed by its operator.
fn report(
    network: &mut Network,
    worker: fn(&mut Network) -> (&mut Chain, &mut Enclave),
    report: &ContractReport,
) -> Result<(), String> {
    let (chain, enclave) = worker(network);
    let payload = report.encode().to_vec();
    enclave
        .send(chain, &key("op2"), topics::REPORT, payload)
        .map(drop)
}

fn a_report(contract: ContractId, index: u64, commitment: u8) -> ContractReport {
    ContractReport {
        contract,
        index,
        commitment: [commitment; 32],
        gas_used: 1_234,
        succeeded: true,
        state_bytes: 500,
        events: vec![
            Bytes::from_static(b"first event"),
            Bytes::from_static(b"second"),
        ],
        messages: vec![(Bytes::from_static(b"ping"), Bytes::from_static(b"payload"))],
    }
}

#[test]
fn code_is_stored_once_by_hash_and_must_look_like_webassembly() {
    let mut network = Network::new();
    let chain = &mut network.chain;
    let not_wasm = Call::Contracts(ContractsCall::UploadCode {
        code: Bytes::from_static(b"#!/bin/sh\nrm -rf /"),
    });
    assert_eq!(
        refused(chain.apply(&key("op3"), not_wasm)),
        TxError::NotWasm
    );
    for _ in 0..2 {
        let call = Call::Contracts(ContractsCall::UploadCode {
            code: Bytes::from_static(CODE),
        });
        chain.apply(&key("op3"), call).unwrap();
    }
    assert_eq!(
        chain.db.get(&keys::code(&code_hash(CODE))),
        Some(CODE.to_vec())
    );
}

#[test]
fn instantiation_needs_code_a_cluster_and_a_master_key() {
    let mut bare = Chain::new(true, AttestationPolicy::dev());
    let upload = Call::Contracts(ContractsCall::UploadCode {
        code: Bytes::from_static(CODE),
    });
    assert!(matches!(
        refused(bare.apply(&key("op3"), instantiate(0, 1))),
        TxError::UnknownCode(_)
    ));
    bare.apply(&key("op3"), upload).unwrap();
    assert_eq!(
        refused(bare.apply(&key("op3"), instantiate(7, 1))),
        TxError::UnknownCluster(7)
    );
    assert_eq!(
        refused(bare.apply(&key("op3"), instantiate(0, 1))),
        TxError::NoMasterKey
    );

    let mut network = Network::new();
    let id = network.deploy(1).unwrap();
    let record = network.record(&id);
    assert_eq!(
        (record.cluster, record.generation, record.commands),
        (0, 1, 0)
    );
    assert_eq!(record.deployer, key("op3").address());
    assert_eq!(record.public_key, None);
    // The cluster and the gatekeepers were told, in that order.
    let outbox = network.chain.outboxes.last().unwrap();
    let told: Vec<_> = downward(outbox, topics::INSTANTIATED)
        .into_iter()
        .map(|(destination, _)| destination)
        .collect();
    assert_eq!(
        told,
        vec![Destination::Cluster(0), Destination::Gatekeepers]
    );
    assert!(matches!(
        refused(network.deploy(1)),
        TxError::ContractExists(_)
    ));
    assert_ne!(
        network.deploy(2).unwrap(),
        id,
        "another salt, another contract"
    );
}

#[test]
fn only_a_gatekeeper_publishes_a_contract_key_and_the_first_copy_wins() {
    let mut network = Network::new();
    let id = network.deploy(1).unwrap();
    // Refused, and consumed: the worker's next message is not held up by it.
    let payload = ContractPublicKey {
        contract: id,
        public_key: [1; 32],
    };
    let error = network
        .w1
        .send(
            &mut network.chain,
            &key("op2"),
            topics::PUBLISH_KEY,
            payload.encode().to_vec(),
        )
        .unwrap_err();
    assert!(error.starts_with("not_gatekeeper"), "{error}");
    assert_eq!(network.w1.sequence, 1);
    let error = network.publish_key([7; 32], 3).unwrap_err();
    assert!(error.starts_with("unknown_contract"), "{error}");
    network.publish_key(id, 3).unwrap();
    network.publish_key(id, 4).unwrap();
    assert_eq!(network.record(&id).public_key, Some([3; 32]));
}

#[test]
fn a_command_waits_for_the_key_pays_for_its_gas_and_goes_to_its_cluster() {
    let mut network = Network::new();
    let id = network.deploy(1).unwrap();
    let user = key("op3");
    assert!(matches!(
        refused(network.chain.apply(&user, command(id, 1_000))),
        TxError::ContractNotReady(_)
    ));
    network.publish_key(id, 3).unwrap();
    let max = ContractsConfig::default().max_gas;
    for gas in [0, max + 1] {
        assert_eq!(
            refused(network.chain.apply(&user, command(id, gas))),
            TxError::BadGasLimit { got: gas, max }
        );
    }
    assert!(matches!(
        refused(network.chain.apply(&user, command([8; 32], 1_000))),
        TxError::UnknownContract(_)
    ));

    let balance = |network: &Network| {
        phala_chain::balances::account(&Overlay::new(&network.chain.db), &user.address()).free
    };
    let before = balance(&network);
    let gas = 2_000_000;
    let outbox = network.chain.apply(&user, command(id, gas)).unwrap();
    let price = ContractsConfig::default().gas_price;
    assert_eq!(
        before - balance(&network),
        1 + price * gas as u128,
        "the fee plus the gas"
    );
    let sent = &outbox.messages[0];
    assert_eq!(
        (sent.destination, sent.topic.as_ref()),
        (Destination::Cluster(0), topics::COMMAND)
    );
    let message: ContractCommand = decode_payload(&sent.payload).unwrap();
    assert_eq!((message.index, message.sender), (1, user.address()));
    assert_eq!(message.gas_limit, gas);
    assert_eq!(message.ciphertext.0.as_ref(), b"sealed input");
    network.chain.apply(&user, command(id, gas)).unwrap();
    assert_eq!(network.record(&id).commands, 2);

    // Gas the sender cannot pay for: refused, and no call is counted.
    let rest = balance(&network) - price * 1_000_000;
    let drain = Call::Balances(BalancesCall::Transfer {
        to: key("op1").address(),
        amount: rest,
    });
    network.chain.apply(&user, drain).unwrap();
    assert!(matches!(
        refused(network.chain.apply(&user, command(id, 1_000_000))),
        TxError::InsufficientFunds { .. }
    ));
    assert_eq!(network.record(&id).commands, 2);
}

#[test]
fn gas_waits_in_escrow_until_the_first_report_which_refunds_the_rest() {
    let mut network = Network::new();
    let id = network.deploy(1).unwrap();
    network.publish_key(id, 3).unwrap();
    let user = key("op3");
    let free = |network: &Network, who: &phala_types::Address| {
        phala_chain::balances::account(&Overlay::new(&network.chain.db), who).free
    };
    let price = ContractsConfig::default().gas_price;
    let (gas, used) = (2_000_000u64, 1_234u64);
    network.chain.apply(&user, command(id, gas)).unwrap();
    network.chain.apply(&user, command(id, 1_000)).unwrap();
    let escrowed = price * (gas + 1_000) as u128;
    assert_eq!(free(&network, &contracts::GAS_ESCROW), escrowed);

    // The first report of call 1 charges what it used and refunds the rest.
    let before = free(&network, &user.address());
    let burned_before = phala_chain::balances::burned(&Overlay::new(&network.chain.db));
    report(
        &mut network,
        |n| (&mut n.chain, &mut n.w1),
        &a_report(id, 1, 1),
    )
    .unwrap();
    let refund = price * (gas - used) as u128;
    assert_eq!(free(&network, &user.address()) - before, refund);
    assert_eq!(
        free(&network, &contracts::GAS_ESCROW),
        escrowed - price * gas as u128
    );
    assert!(
        phala_chain::balances::burned(&Overlay::new(&network.chain.db)) > burned_before,
        "the gas used is paid as a fee (partly burned)"
    );
    // A confirming report settles nothing again.
    report(
        &mut network,
        |n| (&mut n.chain, &mut n.w2),
        &a_report(id, 1, 1),
    )
    .unwrap();
    assert_eq!(free(&network, &user.address()) - before, refund);

    // A report claiming more gas than the limit charges the limit, no more.
    let mut greedy = a_report(id, 2, 1);
    greedy.gas_used = u64::MAX;
    report(&mut network, |n| (&mut n.chain, &mut n.w1), &greedy).unwrap();
    assert_eq!(free(&network, &user.address()) - before, refund);
    assert_eq!(free(&network, &contracts::GAS_ESCROW), 0);
}

/// With fees split between burning, the block author and the treasury, escrowing gas and
/// settling it (charged as a fee, the rest refunded) creates and destroys nothing: after every
/// block the balances plus what was burned are the total supply, and the escrow holds exactly
/// the gas of the calls not yet reported.
#[test]
fn gas_escrow_and_settlement_conserve_the_supply_under_a_real_fee_split() {
    let split = phala_chain::balances::FeeSplit {
        burn: 20,
        author: 50,
        treasury: 30,
    };
    let mut network = Network::on(Chain::with_fee_split(true, AttestationPolicy::dev(), split));
    let id = network.deploy(1).unwrap();
    network.publish_key(id, 3).unwrap();
    let supply = phala_types::TOTAL_SUPPLY;
    assert_eq!(network.chain.issuance(), supply);
    let balance = |network: &Network, who: &phala_types::Address| {
        phala_chain::balances::account(&Overlay::new(&network.chain.db), who).free
    };
    let price = ContractsConfig::default().gas_price;
    let treasury_before = balance(&network, &phala_types::system::TREASURY);
    let author_before = balance(&network, &key("validator").address());

    let limits: Vec<u64> = (1..=12).map(|i| 1_000 + i * 97_531).collect();
    for limit in &limits {
        network
            .chain
            .apply(&key("op3"), command(id, *limit))
            .unwrap();
        assert_eq!(network.chain.issuance(), supply);
    }
    let mut outstanding: u128 = limits.iter().map(|l| price * *l as u128).sum();
    assert_eq!(balance(&network, &contracts::GAS_ESCROW), outstanding);

    for (index, limit) in (1..).zip(&limits) {
        let mut first = a_report(id, index, 7);
        // Some use part of their gas, some claim more than their limit (charged the limit).
        first.gas_used = if index % 3 == 0 {
            u64::MAX
        } else {
            limit / index
        };
        report(&mut network, |n| (&mut n.chain, &mut n.w1), &first).unwrap();
        outstanding -= price * *limit as u128;
        assert_eq!(
            network.chain.issuance(),
            supply,
            "after settling call {index}"
        );
        assert_eq!(balance(&network, &contracts::GAS_ESCROW), outstanding);
        // A confirmation settles nothing again.
        report(&mut network, |n| (&mut n.chain, &mut n.w2), &first).unwrap();
        assert_eq!(network.chain.issuance(), supply);
        assert_eq!(balance(&network, &contracts::GAS_ESCROW), outstanding);
    }
    assert_eq!(outstanding, 0);
    assert!(balance(&network, &phala_types::system::TREASURY) > treasury_before);
    assert!(balance(&network, &key("validator").address()) > author_before);
}

#[test]
fn reports_are_recorded_once_per_worker_confirmed_and_disputed() {
    let mut network = Network::new();
    let id = network.deploy(1).unwrap();
    network.publish_key(id, 3).unwrap();

    // Only workers of the contract's cluster report, and only calls that exist.
    // Refusals are recorded and the messages consumed, so the workers go on.
    let error = report(
        &mut network,
        |n| (&mut n.chain, &mut n.w3),
        &a_report(id, 0, 1),
    )
    .unwrap_err();
    assert!(error.starts_with("not_in_cluster"), "{error}");
    let error = report(
        &mut network,
        |n| (&mut n.chain, &mut n.gatekeeper),
        &a_report(id, 0, 1),
    )
    .unwrap_err();
    assert!(error.starts_with("not_in_cluster"), "{error}");
    let error = report(
        &mut network,
        |n| (&mut n.chain, &mut n.w1),
        &a_report(id, 1, 1),
    )
    .unwrap_err();
    assert!(error.starts_with("unknown_call"), "{error}");

    // The first report sets the record, stores the events and re-publishes the messages.
    report(
        &mut network,
        |n| (&mut n.chain, &mut n.w1),
        &a_report(id, 0, 1),
    )
    .unwrap();
    let record = network.report_record(&id, 0).unwrap();
    assert_eq!(record.reporter, network.w1.identity.address());
    assert_eq!((record.commitment, record.gas_used), ([1; 32], 1_234));
    assert_eq!((record.confirmations, record.dispute), (1, None));
    let topic = format!("contract/{}/ping", hex::encode(id));
    let outbox = network.chain.outboxes.last().unwrap();
    let relayed: Vec<_> = downward(outbox, topic.as_bytes())
        .into_iter()
        .map(|(destination, _)| destination)
        .collect();
    assert_eq!(relayed, vec![Destination::All]);
    let events = |network: &Network| {
        let count = network
            .chain
            .db
            .get(&keys::event_count(&id))
            .map_or(0, |v| u64::from_be_bytes(v.try_into().unwrap()));
        (0..count)
            .map(|n| network.chain.db.get(&keys::event(&id, n)).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        events(&network),
        vec![b"first event".to_vec(), b"second".to_vec()]
    );

    // The same worker again counts nothing; another with the same result confirms, without
    // storing the events twice.
    report(
        &mut network,
        |n| (&mut n.chain, &mut n.w1),
        &a_report(id, 0, 1),
    )
    .unwrap();
    assert_eq!(network.report_record(&id, 0).unwrap().confirmations, 1);
    report(
        &mut network,
        |n| (&mut n.chain, &mut n.w2),
        &a_report(id, 0, 1),
    )
    .unwrap();
    assert_eq!(network.report_record(&id, 0).unwrap().confirmations, 2);
    assert_eq!(events(&network).len(), 2);

    // A different result for a call is kept as evidence against the worker that sent it.
    network
        .chain
        .apply(&key("op3"), command(id, 1_000))
        .unwrap();
    report(
        &mut network,
        |n| (&mut n.chain, &mut n.w1),
        &a_report(id, 1, 1),
    )
    .unwrap();
    let mut other = a_report(id, 1, 2);
    other.events.clear();
    report(&mut network, |n| (&mut n.chain, &mut n.w2), &other).unwrap();
    let record = network.report_record(&id, 1).unwrap();
    assert_eq!(record.confirmations, 1);
    let dispute = record.dispute.expect("a dispute");
    assert_eq!(dispute.worker, network.w2.identity.address());
    assert_eq!(dispute.commitment, [2; 32]);
    assert_eq!(events(&network).len(), 4, "only the first report's events");
}

/// A pRuntime never takes a signed message back: if the chain refused one without consuming
/// it, every later message of the worker would wait behind it forever.
#[test]
fn a_refused_report_never_blocks_the_workers_next_messages() {
    let mut network = Network::new();
    let id = network.deploy(1).unwrap();
    network.publish_key(id, 3).unwrap();
    let w1 = network.w1.identity.address();
    let admin = key("admin");
    let move_w1 = Call::Registry(RegistryCall::AssignCluster {
        worker: w1,
        cluster: 1,
    });
    network.chain.apply(&admin, move_w1).unwrap();

    // The moved worker's report of a cluster-0 call, then its next message, as its pRuntime
    // signed them: in sequence, never re-signed.
    let stale = network
        .w1
        .upward(topics::REPORT, a_report(id, 0, 1).encode().to_vec());
    let next = network.w1.upward(b"hello", b"world".to_vec());
    let sequence = stale.sequence;
    network
        .chain
        .apply(&key("op2"), Call::Mq(MqCall::SubmitUpward(stale)))
        .unwrap();
    let refusal = mq::refusal(&Overlay::new(&network.chain.db), &w1, sequence).unwrap();
    assert!(refusal.starts_with("not_in_cluster"), "{refusal}");
    let refused = mq::Event::Refused {
        origin: w1,
        sequence,
        code: "not_in_cluster".into(),
    };
    assert_eq!(
        network.chain.events.last(),
        Some(&phala_chain::module::Event::Mq(refused)),
        "the relayer's operator sees the refusal"
    );
    assert!(network.report_record(&id, 0).is_none(), "nothing applied");
    let outbox = network
        .chain
        .apply(&key("op2"), Call::Mq(MqCall::SubmitUpward(next)))
        .unwrap();
    assert_eq!(outbox.messages.len(), 1, "the next message is relayed");

    // The cluster's other worker reports as usual.
    report(
        &mut network,
        |n| (&mut n.chain, &mut n.w2),
        &a_report(id, 0, 1),
    )
    .unwrap();
    assert!(network.report_record(&id, 0).is_some());
}

fn free(network: &Network, who: &phala_types::Address) -> phala_types::Balance {
    phala_chain::balances::account(&Overlay::new(&network.chain.db), who).free
}

/// Instantiation locks `quota × deposit_per_byte` in the deposits account and tells the
/// cluster the quota; a quota above the chain's limit is refused (and pays its fee).
#[test]
fn instantiation_locks_a_deposit_for_its_storage_quota() {
    let mut network = Network::new();
    let config = ContractsConfig::default();
    let deployer = key("op3").address();
    let before = free(&network, &deployer);
    let id = network.deploy(1).unwrap();
    let deposit = config.deposit_per_byte * QUOTA as u128;
    assert_eq!(
        before - free(&network, &deployer),
        2 + deposit,
        "two fees and the deposit"
    );
    assert_eq!(free(&network, &contracts::STORAGE_DEPOSITS), deposit);
    let record = network.record(&id);
    assert_eq!(
        (record.storage_quota, record.storage_deposit),
        (QUOTA, deposit)
    );
    let sent = network.chain.outboxes.last().unwrap();
    let message: phala_types::ContractInstantiated =
        decode_payload(&sent.messages[0].payload).unwrap();
    assert_eq!(message.storage_quota, QUOTA);
    assert_eq!(network.chain.issuance(), phala_types::TOTAL_SUPPLY);

    let mut too_large = instantiate(0, 2);
    if let Call::Contracts(ContractsCall::Instantiate { storage_quota, .. }) = &mut too_large {
        *storage_quota = config.max_storage_quota + 1;
    }
    assert_eq!(
        refused(network.chain.apply(&key("op3"), too_large)),
        TxError::QuotaTooLarge {
            got: config.max_storage_quota + 1,
            max: config.max_storage_quota
        }
    );
    assert_eq!(free(&network, &contracts::STORAGE_DEPOSITS), deposit);
}

/// Only the deployer changes the quota. Raising it locks more at once; lowering it waits
/// until the last call is reported, never goes below the state reported for it, and returns
/// exactly the deposit above the new quota. Every change reaches the cluster in stream order.
#[test]
fn the_deployer_alone_changes_the_quota_and_gets_back_what_it_frees() {
    let mut network = Network::new();
    let per_byte = ContractsConfig::default().deposit_per_byte;
    let id = network.deploy(1).unwrap();
    let deployer = key("op3");
    let set = |quota| {
        Call::Contracts(ContractsCall::SetStorageQuota {
            contract: id,
            quota,
        })
    };
    assert!(matches!(
        refused(network.chain.apply(&key("op1"), set(0))),
        TxError::NotDeployer { .. }
    ));

    let outbox = network.chain.apply(&deployer, set(3 * QUOTA)).unwrap();
    assert_eq!(
        free(&network, &contracts::STORAGE_DEPOSITS),
        per_byte * 3 * QUOTA as u128
    );
    let change: phala_types::ContractQuota = decode_payload(&outbox.messages[0].payload).unwrap();
    assert_eq!(
        (
            outbox.messages[0].destination,
            outbox.messages[0].topic.as_ref(),
            change.quota
        ),
        (Destination::Cluster(0), topics::QUOTA, 3 * QUOTA)
    );

    // `init` (call 0) is not reported yet: how much state it keeps is unknown.
    assert!(matches!(
        refused(network.chain.apply(&deployer, set(QUOTA))),
        TxError::UsageUnknown { call: 0, .. }
    ));
    // One worker's word is not enough: its size decides a refund.
    report(
        &mut network,
        |n| (&mut n.chain, &mut n.w1),
        &a_report(id, 0, 1),
    )
    .unwrap();
    assert!(matches!(
        refused(network.chain.apply(&deployer, set(QUOTA))),
        TxError::UsageUnknown { call: 0, .. }
    ));
    report(
        &mut network,
        |n| (&mut n.chain, &mut n.w2),
        &a_report(id, 0, 1),
    )
    .unwrap();
    assert_eq!(
        refused(network.chain.apply(&deployer, set(499))),
        TxError::QuotaBelowUsage {
            contract: hex::encode(id),
            used: 500
        }
    );
    let before = free(&network, &deployer.address());
    network.chain.apply(&deployer, set(500)).unwrap();
    assert_eq!(
        free(&network, &deployer.address()) - before,
        per_byte * (3 * QUOTA - 500) as u128 - 1,
        "the freed deposit, less the fee"
    );
    assert_eq!(free(&network, &contracts::STORAGE_DEPOSITS), per_byte * 500);
    assert_eq!(network.record(&id).storage_deposit, per_byte * 500);
    assert_eq!(network.chain.issuance(), phala_types::TOTAL_SUPPLY);
}

/// A worker that reports the right state commitment with another state size is disputed:
/// the size decides refunds, so it must be agreed like the rest, and a disputed size lowers
/// nothing.
#[test]
fn a_report_of_another_state_size_is_disputed() {
    let mut network = Network::new();
    let id = network.deploy(1).unwrap();
    report(
        &mut network,
        |n| (&mut n.chain, &mut n.w1),
        &a_report(id, 0, 1),
    )
    .unwrap();
    let mut smaller = a_report(id, 0, 1);
    smaller.state_bytes = 1;
    report(&mut network, |n| (&mut n.chain, &mut n.w2), &smaller).unwrap();
    let record = network.report_record(&id, 0).unwrap();
    assert_eq!(record.confirmations, 1);
    assert_eq!(
        record.dispute.map(|d| d.worker),
        Some(network.w2.identity.address())
    );
    // A first reporter that understated the size cannot get the deployer a refund: a
    // disputed size is no ground for lowering the quota.
    let lower = Call::Contracts(ContractsCall::SetStorageQuota {
        contract: id,
        quota: 0,
    });
    assert!(matches!(
        refused(network.chain.apply(&key("op3"), lower)),
        TxError::UsageUnknown { .. }
    ));
}

/// Every key the modules wrote lives under its module's prefix, so the next module's keys can
/// never collide with an earlier one's (and each module's data can be listed alone).
#[test]
fn every_state_key_lives_under_its_modules_prefix() {
    use phala_chain::{
        balances::Balances, contracts::Contracts, module::Module, mq::Mq, registry::Registry,
    };
    let mut network = Network::new();
    let id = network.deploy(1).unwrap();
    network.publish_key(id, 3).unwrap();
    network
        .chain
        .apply(&key("op3"), command(id, 1_000))
        .unwrap();
    report(
        &mut network,
        |n| (&mut n.chain, &mut n.w1),
        &a_report(id, 1, 1),
    )
    .unwrap();
    let prefixes = [
        Balances::PREFIX,
        Mq::PREFIX,
        Registry::PREFIX,
        Contracts::PREFIX,
    ];
    let db = &network.chain.db;
    for (key, _) in db.scan_prefix(b"") {
        let owner = prefixes.iter().find(|prefix| key.starts_with(prefix));
        assert!(
            owner.is_some(),
            "{} has no module",
            String::from_utf8_lossy(key)
        );
    }
    for prefix in prefixes {
        let module = String::from_utf8_lossy(prefix);
        assert!(db.scan_prefix(prefix).next().is_some(), "{module} wrote");
    }
}

/// Reports re-publish up to `MAX_REPORT_EMITS` messages each, the most a call sends. A block
/// holds at most `MAX_BLOCK_MESSAGES` downward messages, so a relayer always fetches a block's
/// messages in one answer: a builder stops before the report that would overflow (it waits
/// for the next block), and a block past the limit is invalid at that report.
#[test]
fn a_blocks_downward_messages_are_capped() {
    use phala_chain::state::Changes;
    use phala_types::{contracts::MAX_REPORT_EMITS, limits::MAX_BLOCK_MESSAGES};
    let mut network = Network::new();
    let id = network.deploy(1).unwrap();
    network.publish_key(id, 3).unwrap();
    let reports = (MAX_BLOCK_MESSAGES / MAX_REPORT_EMITS + 1) as u64;
    for _ in 0..reports {
        network
            .chain
            .apply(&key("op3"), command(id, 10_000))
            .unwrap();
    }
    let relays: Vec<_> = (0..reports)
        .map(|index| {
            let mut full = a_report(id, index, 1);
            full.events.clear();
            full.messages = (0..MAX_REPORT_EMITS)
                .map(|m| (Bytes::from(format!("t{m}")), Bytes::from_static(b"p")))
                .collect();
            let message = network.w1.upward(topics::REPORT, full.encode().to_vec());
            Call::Mq(MqCall::SubmitUpward(message))
        })
        .collect();
    let chain = &network.chain;
    let txs = chain.sign_next(&key("op2"), relays);
    let ctx = chain.next_ctx();
    let invalid = chain
        .runtime
        .execute_block(&chain.db, Changes::new(), &ctx, &txs)
        .unwrap_err();
    assert_eq!(invalid.index as u64, reports - 1);
    assert_eq!(
        invalid.error,
        TxError::TooManyMessages {
            limit: MAX_BLOCK_MESSAGES
        }
    );
    let (included, executed, dropped) =
        chain
            .runtime
            .build_block(&chain.db, Changes::new(), &ctx, txs.iter().cloned());
    assert_eq!((included.len() as u64, dropped.len()), (reports - 1, 0));
    assert_eq!(executed.outbox.messages.len(), MAX_BLOCK_MESSAGES);
    let replayed = chain
        .runtime
        .execute_block(&chain.db, Changes::new(), &ctx, &included)
        .unwrap();
    assert_eq!(replayed, executed);
}

/// Every worker of a cluster receives the code of each contract instantiated on it in the
/// batch that carries the block: a block instantiates at most `MAX_BLOCK_INSTANTIATIONS`
/// contracts, so its codes always fit one batch however many a deployer sends.
#[test]
fn a_block_instantiates_at_most_a_batch_of_codes() {
    use phala_chain::{state::Changes, weights::MAX_BLOCK_INSTANTIATIONS};
    let mut network = Network::new();
    network.deploy(0).unwrap();
    let chain = &network.chain;
    let instantiations = (0..2 * MAX_BLOCK_INSTANTIATIONS).map(|n| instantiate(0, 1 + n as u8));
    let txs = chain.sign_next(&key("op3"), instantiations);
    let ctx = chain.next_ctx();
    let (included, executed, dropped) =
        chain
            .runtime
            .build_block(&chain.db, Changes::new(), &ctx, txs.iter().cloned());
    assert!(dropped.is_empty() && executed.failures.is_empty());
    let instantiated = executed
        .outbox
        .messages
        .iter()
        .filter(|m| m.topic.as_ref() == topics::INSTANTIATED)
        .filter(|m| matches!(m.destination, Destination::Cluster(_)))
        .count();
    assert_eq!(instantiated, included.len());
    assert!(
        (MAX_BLOCK_INSTANTIATIONS / 2..=MAX_BLOCK_INSTANTIATIONS)
            .contains(&(included.len() as u64)),
        "{} instantiations in a block",
        included.len()
    );
    let invalid = chain
        .runtime
        .execute_block(&chain.db, Changes::new(), &ctx, &txs)
        .unwrap_err();
    assert!(matches!(invalid.error, TxError::BlockTooHeavy { .. }));
}
