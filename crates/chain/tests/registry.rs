//! The worker registry in the state transition: who may register, with what evidence, and how
//! the gatekeepers' key messages are routed (first copy wins).

use bytes::Bytes;
use commonware_codec::Encode;
use phala_chain::{TxError, config::GenesisError, registry, state::Overlay};
use phala_types::{
    AttestationPolicy, Call, Destination, Evidence, KeyDelivery, MasterPublicKey,
    SignedRegistration,
    registry::{HexMeasurement32, SgxRule, topics},
};
use phala_types::{MqCall, RegistryCall};

mod common;

use common::*;

#[test]
fn a_dev_chain_registers_a_simulated_worker_and_makes_it_an_origin() {
    let mut chain = Chain::new(true, AttestationPolicy::dev());
    let worker = Enclave::new("worker-a");
    worker.register(&mut chain, &key("op1"), false).unwrap();
    let record = chain.worker(&worker.identity).expect("recorded");
    assert_eq!(record.operator, key("op1").address());
    assert_eq!(record.ecdh, worker.ecdh);
    assert_eq!(record.tee, phala_types::TeeKind::Simulated);
    assert_eq!(record.measurement, vec![0xaa; 32]);
    assert_eq!(record.confidence, 1);
    assert_eq!((record.cores, record.benchmark), (4, 1_000));
    assert_eq!((record.registered_at, record.attested_at), (1, 1));
    let state = Overlay::new(&chain.db);
    assert_eq!(
        phala_chain::mq::next_sequence(&state, &worker.identity.address()),
        Some(0)
    );

    // Re-attestation keeps the registration height and moves the attestation height.
    worker.register(&mut chain, &key("op1"), false).unwrap();
    let record = chain.worker(&worker.identity).unwrap();
    assert_eq!((record.registered_at, record.attested_at), (1, 2));
}

#[test]
fn production_chains_refuse_simulated_evidence() {
    let mut policy = AttestationPolicy::dev();
    let mut chain = Chain::new(false, policy.clone());
    let worker = Enclave::new("worker-a");
    let error = refused(worker.register(&mut chain, &key("op1"), false));
    assert!(error.to_string().contains("dev chains only"), "{error}");
    assert!(chain.worker(&worker.identity).is_none());

    // And a production genesis cannot even allow them, nor can its admin later.
    let mut config = chain.runtime.config().clone();
    policy.allow_simulated = true;
    config.registry.policy = policy.clone();
    assert_eq!(config.validate(), Err(GenesisError::SimulatedOnProduction));
    let error = refused(chain.apply(
        &key("admin"),
        Call::Registry(RegistryCall::SetAttestationPolicy(policy)),
    ));
    assert!(error.to_string().contains("simulated"), "{error}");
}

#[test]
fn the_policy_decides_which_simulated_measurements_pass() {
    let mut policy = AttestationPolicy::dev();
    policy.simulated = vec![HexMeasurement32([0xbb; 32])];
    let mut chain = Chain::new(true, policy);
    let error = refused(Enclave::new("w").register(&mut chain, &key("op1"), false));
    assert_eq!(error.code(), "attestation_refused");
}

#[test]
fn registrations_must_be_signed_by_the_worker_and_sent_by_its_operator() {
    let mut chain = Chain::new(true, AttestationPolicy::dev());
    let worker = Enclave::new("worker-a");
    // Someone else submits the worker's registration: the operator named is not the signer.
    let signed = worker
        .identity
        .sign_registration(&GENESIS, worker.registration(&key("op1"), 0, false));
    let error = refused(chain.apply(
        &key("op2"),
        Call::Registry(RegistryCall::RegisterWorker(signed.clone())),
    ));
    assert!(matches!(error, TxError::NotOperator { .. }), "{error}");
    // The operator rewrites the registration to itself: the identity signature breaks.
    let mut stolen = signed.clone();
    stolen.registration.operator = key("op2").address();
    let error = refused(chain.apply(
        &key("op2"),
        Call::Registry(RegistryCall::RegisterWorker(stolen)),
    ));
    assert_eq!(error, TxError::BadRegistrationSignature);
    // Signed by another key than the identity it registers.
    let forged = SignedRegistration {
        signature: key("mallory")
            .sign_registration(&GENESIS, signed.registration.clone())
            .signature,
        registration: signed.registration,
    };
    assert_eq!(
        refused(chain.apply(
            &key("op1"),
            Call::Registry(RegistryCall::RegisterWorker(forged))
        )),
        TxError::BadRegistrationSignature
    );
}

#[test]
fn evidence_must_bind_the_registered_keys_chain_and_a_fresh_height() {
    let mut chain = Chain::new(true, AttestationPolicy::dev());
    chain.advance(5);
    let worker = Enclave::new("worker-a");
    let other = Enclave::new("worker-bb");
    // Evidence made for another worker's keys, re-signed by this identity.
    let mut registration = worker.registration(&key("op1"), chain.height, false);
    registration.evidence = other
        .registration(&key("op1"), chain.height, false)
        .evidence;
    let signed = worker.identity.sign_registration(&GENESIS, registration);
    let error = refused(chain.apply(
        &key("op1"),
        Call::Registry(RegistryCall::RegisterWorker(signed)),
    ));
    assert!(error.to_string().contains("binds other keys"), "{error}");
    // A freshness height too old for the policy window, or in the future.
    for freshness in [0, chain.height + 5] {
        let mut policy = AttestationPolicy::dev();
        policy.freshness_blocks = 2;
        let mut strict = Chain::new(true, policy);
        strict.advance(5);
        let signed = worker
            .identity
            .sign_registration(&GENESIS, worker.registration(&key("op1"), freshness, false));
        let error = refused(strict.apply(
            &key("op1"),
            Call::Registry(RegistryCall::RegisterWorker(signed)),
        ));
        assert!(matches!(error, TxError::StaleAttestation { .. }), "{error}");
    }
}

#[test]
fn someone_elses_real_sgx_quote_is_refused() {
    // The real sample quote verifies (right time, allowed enclave), but its report data binds
    // another program's keys, not this worker's.
    let verdict = phala_attestation::verify_evidence(
        &Evidence::SgxDcap {
            quote: Bytes::from_static(SGX_QUOTE),
            collateral: Bytes::from_static(SGX_COLLATERAL),
        },
        SGX_SAMPLE_TIME_MS / 1000,
    )
    .expect("the sample quote verifies");
    let mut policy = AttestationPolicy::dev();
    policy.allow_simulated = false;
    policy.sgx = vec![SgxRule::MrEnclave {
        mr_enclave: verdict.measurement.clone().try_into().unwrap(),
    }];
    let mut chain = Chain::new(false, policy);
    chain.timestamp = SGX_SAMPLE_TIME_MS;
    let worker = Enclave::new("worker-a");
    let mut registration = worker.registration(&key("op1"), 0, false);
    registration.evidence = Evidence::SgxDcap {
        quote: Bytes::from_static(SGX_QUOTE),
        collateral: Bytes::from_static(SGX_COLLATERAL),
    };
    let signed = worker
        .identity
        .sign_registration(&GENESIS, registration.clone());
    let error = refused(chain.apply(
        &key("op1"),
        Call::Registry(RegistryCall::RegisterWorker(signed)),
    ));
    assert!(error.to_string().contains("binds other keys"), "{error}");

    // A tampered copy: its claimed binding is checked first (a parse) and refuses it.
    let mut tampered = SGX_QUOTE.to_vec();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    registration.evidence = Evidence::SgxDcap {
        quote: Bytes::from(tampered),
        collateral: Bytes::from_static(SGX_COLLATERAL),
    };
    let signed = worker.identity.sign_registration(&GENESIS, registration);
    let error = refused(chain.apply(
        &key("op1"),
        Call::Registry(RegistryCall::RegisterWorker(signed)),
    ));
    assert_eq!(error.code(), "attestation_refused");
    assert!(chain.worker(&worker.identity).is_none());

    // Both failed after their fee was taken, so both were included and paid for: a spammer
    // resubmitting quotes pays for every check it causes.
    let operator = phala_chain::balances::account(&Overlay::new(&chain.db), &key("op1").address());
    assert_eq!(operator.nonce, 2);
    assert_eq!(operator.free, 1_000 * phala_types::UNIT - 2);
}

#[test]
fn gatekeepers_are_admitted_by_the_admin_and_their_copies_count_once() {
    let mut chain = Chain::new(true, AttestationPolicy::dev());
    let admin = key("admin");
    let mut gk1 = Enclave::new("gk-1");
    let mut gk2 = Enclave::new("gk-22");
    let worker = Enclave::new("worker-333");
    gk1.register(&mut chain, &key("op1"), true).unwrap();
    gk2.register(&mut chain, &key("op2"), true).unwrap();
    worker.register(&mut chain, &key("op3"), false).unwrap();

    let add = |who: &Enclave| Call::Registry(RegistryCall::AddGatekeeper(who.identity.address()));
    assert!(matches!(
        refused(chain.apply(&key("op1"), add(&gk1))),
        TxError::NotAdmin(_)
    ));
    assert!(matches!(
        refused(chain.apply(&admin, add(&worker))),
        TxError::NotGatekeeperCandidate(_)
    ));
    assert_eq!(
        refused(chain.apply(&admin, Call::Registry(RegistryCall::RotateMasterKey))),
        TxError::NoMasterKey
    );

    // The first gatekeeper is told to bootstrap the master key.
    let outbox = chain.apply(&admin, add(&gk1)).unwrap();
    assert_eq!(
        downward(&outbox, topics::GATEKEEPER_JOINED),
        vec![(Destination::Gatekeepers, 0)]
    );
    let joined: phala_types::GatekeeperJoined =
        phala_types::registry::decode_payload(&outbox.messages[0].payload).unwrap();
    assert!(joined.bootstrap);
    assert!(matches!(
        refused(chain.apply(&admin, add(&gk1))),
        TxError::AlreadyGatekeeper(_)
    ));

    // It publishes the master public key; the chain records it and tells everyone.
    let public = MasterPublicKey {
        generation: 1,
        public_key: [9; 32],
    };
    let message = gk1.upward(topics::PUBLISH_MASTER_KEY, public.encode().to_vec());
    let outbox = chain
        .apply(&key("op1"), Call::Mq(MqCall::SubmitUpward(message)))
        .unwrap();
    assert_eq!(
        downward(&outbox, topics::MASTER_KEY_PUBLISHED),
        vec![(Destination::All, 0)]
    );
    assert_eq!(registry::master_generation(&Overlay::new(&chain.db)), 1);

    // A second gatekeeper joins, not as bootstrapper.
    let outbox = chain.apply(&admin, add(&gk2)).unwrap();
    let joined: phala_types::GatekeeperJoined =
        phala_types::registry::decode_payload(&outbox.messages[0].payload).unwrap();
    assert!(!joined.bootstrap);
    assert_eq!(outbox.messages[0].sequence, 1);

    // Both gatekeepers deliver the same sealed key to the worker: one copy goes down.
    let delivery = KeyDelivery {
        recipient: worker.identity.address(),
        key_kind: KeyDelivery::cluster(0),
        generation: 1,
        encapped: [1; 32],
        ciphertext: [2; 48],
    };
    let first = gk1.upward(topics::DELIVER_KEY, delivery.encode().to_vec());
    let outbox = chain
        .apply(&key("op1"), Call::Mq(MqCall::SubmitUpward(first)))
        .unwrap();
    let to_worker = Destination::Worker(worker.identity.address());
    assert_eq!(downward(&outbox, topics::DELIVER_KEY), vec![(to_worker, 0)]);
    let copy = gk2.upward(topics::DELIVER_KEY, delivery.encode().to_vec());
    let outbox = chain
        .apply(&key("op2"), Call::Mq(MqCall::SubmitUpward(copy)))
        .unwrap();
    assert!(outbox.messages.is_empty(), "the second copy is absorbed");

    // A worker cannot speak for the gatekeepers.
    let mut worker = worker;
    let payload = delivery.encode().to_vec();
    let error = worker
        .send(&mut chain, &key("op3"), topics::DELIVER_KEY, payload)
        .unwrap_err();
    assert!(error.starts_with("not_gatekeeper"), "{error}");

    // Rotation: ordered once until the next generation is published.
    let outbox = chain
        .apply(&admin, Call::Registry(RegistryCall::RotateMasterKey))
        .unwrap();
    assert_eq!(
        downward(&outbox, topics::ROTATE_MASTER_KEY),
        vec![(Destination::Gatekeepers, 2)]
    );
    assert_eq!(
        refused(chain.apply(&admin, Call::Registry(RegistryCall::RotateMasterKey))),
        TxError::RotationPending
    );
    let next = MasterPublicKey {
        generation: 2,
        public_key: [10; 32],
    };
    let message = gk1.upward(topics::PUBLISH_MASTER_KEY, next.encode().to_vec());
    chain
        .apply(&key("op1"), Call::Mq(MqCall::SubmitUpward(message)))
        .unwrap();
    assert_eq!(registry::master_generation(&Overlay::new(&chain.db)), 2);
    chain
        .apply(&admin, Call::Registry(RegistryCall::RotateMasterKey))
        .unwrap();
}

#[test]
fn only_the_admin_changes_the_policy_and_the_new_policy_applies() {
    let mut chain = Chain::new(true, AttestationPolicy::dev());
    let mut strict = AttestationPolicy::dev();
    strict.simulated = vec![HexMeasurement32([0xbb; 32])];
    let call = Call::Registry(RegistryCall::SetAttestationPolicy(strict.clone()));
    assert!(matches!(
        refused(chain.apply(&key("op1"), call.clone())),
        TxError::NotAdmin(_)
    ));
    Enclave::new("before")
        .register(&mut chain, &key("op1"), false)
        .unwrap();
    chain.apply(&key("admin"), call).unwrap();
    assert_eq!(registry::policy(&Overlay::new(&chain.db)).unwrap(), strict);
    // The enclave measuring 0xaa… is no longer admitted.
    let error = refused(Enclave::new("after").register(&mut chain, &key("op2"), false));
    assert_eq!(error.code(), "attestation_refused");
}

#[test]
fn only_the_ordered_generation_from_the_first_gatekeeper_is_recorded() {
    let mut chain = Chain::new(true, AttestationPolicy::dev());
    let admin = key("admin");
    let mut gk1 = Enclave::new("gk-1");
    let mut gk2 = Enclave::new("gk-22");
    gk1.register(&mut chain, &key("op1"), true).unwrap();
    gk2.register(&mut chain, &key("op2"), true).unwrap();
    chain
        .apply(
            &admin,
            Call::Registry(RegistryCall::AddGatekeeper(gk1.identity.address())),
        )
        .unwrap();
    chain
        .apply(
            &admin,
            Call::Registry(RegistryCall::AddGatekeeper(gk2.identity.address())),
        )
        .unwrap();
    let publish = |generation| {
        MasterPublicKey {
            generation,
            public_key: [generation as u8; 32],
        }
        .encode()
        .to_vec()
    };
    // The second gatekeeper may not create the network's master key.
    let error = gk2
        .send(
            &mut chain,
            &key("op2"),
            topics::PUBLISH_MASTER_KEY,
            publish(1),
        )
        .unwrap_err();
    assert!(error.starts_with("not_gatekeeper"), "{error}");
    let message = gk1.upward(topics::PUBLISH_MASTER_KEY, publish(1));
    chain
        .apply(&key("op1"), Call::Mq(MqCall::SubmitUpward(message)))
        .unwrap();
    // A generation nobody ordered is ignored, even from the first gatekeeper.
    let message = gk1.upward(topics::PUBLISH_MASTER_KEY, publish(2));
    let outbox = chain
        .apply(&key("op1"), Call::Mq(MqCall::SubmitUpward(message)))
        .unwrap();
    assert!(outbox.messages.is_empty());
    assert_eq!(registry::master_generation(&Overlay::new(&chain.db)), 1);
}

#[test]
fn an_expired_attestation_silences_a_worker_until_it_attests_again() {
    let mut policy = AttestationPolicy::dev();
    policy.reattest_blocks = 3;
    let mut chain = Chain::new(true, policy);
    let mut worker = Enclave::new("worker-a");
    worker.register(&mut chain, &key("op1"), false).unwrap();
    let message = worker.upward(b"hello", b"1".to_vec());
    chain
        .apply(&key("op1"), Call::Mq(MqCall::SubmitUpward(message)))
        .unwrap();
    chain.advance(4);
    let message = worker.upward(b"hello", b"2".to_vec());
    let error = refused(chain.apply(&key("op1"), Call::Mq(MqCall::SubmitUpward(message.clone()))));
    assert_eq!(error.code(), "attestation_expired");
    let assign = Call::Registry(RegistryCall::AssignCluster {
        worker: worker.identity.address(),
        cluster: 1,
    });
    assert_eq!(
        refused(chain.apply(&key("admin"), assign.clone())).code(),
        "attestation_expired"
    );
    // Attesting again restores it.
    worker.register(&mut chain, &key("op1"), false).unwrap();
    chain
        .apply(&key("op1"), Call::Mq(MqCall::SubmitUpward(message)))
        .unwrap();
    chain.apply(&key("admin"), assign).unwrap();
    // The reserved cluster id and an unusable policy are refused.
    let reserved = Call::Registry(RegistryCall::AssignCluster {
        worker: worker.identity.address(),
        cluster: u32::MAX,
    });
    assert_eq!(
        refused(chain.apply(&key("admin"), reserved)).code(),
        "bad_payload"
    );
    let mut unusable = AttestationPolicy::dev();
    unusable.min_confidence = 0;
    let call = Call::Registry(RegistryCall::SetAttestationPolicy(unusable));
    assert_eq!(
        refused(chain.apply(&key("admin"), call)).code(),
        "bad_payload"
    );
}
