//! What the chain's state-transition tests share: a chain applying one transaction per block,
//! and a pRuntime stand-in that registers and signs upward messages.
#![allow(dead_code)]

use bytes::Bytes;
use phala_chain::{
    BlockContext, Outcome, Runtime, TxError,
    balances::{Allocation, FeeSchedule, FeeSplit},
    commitment::mocks::TestState,
    config::GenesisConfig,
    contracts::ContractsConfig,
    failure_record,
    module::Event,
    mq::{self, Outbox},
    registry::{self, RegistryConfig},
    state::Overlay,
};
use phala_crypto::Keypair;
use phala_types::{
    AttestationPolicy, Call, Destination, Digest, Evidence, SignedTransaction, TOTAL_SUPPLY,
    Transaction, UNIT, UpwardMessage, WorkerRegistration, registry::report_data,
};
use phala_types::{BalancesCall, MqCall, RegistryCall};

pub const GENESIS: Digest = Digest([42; 32]);
/// Inside the validity window of the SGX sample collateral (see phala-attestation's tests).
pub const SGX_SAMPLE_TIME_MS: u64 = 1_751_328_000_000;
pub const SGX_QUOTE: &[u8] = include_bytes!("../../../attestation/testdata/sgx_quote");
pub const SGX_COLLATERAL: &[u8] =
    include_bytes!("../../../attestation/testdata/sgx_quote_collateral.json");

pub fn key(name: &str) -> Keypair {
    Keypair::dev(name)
}

/// A chain state with a runtime, applying one transaction per block.
pub struct Chain {
    pub runtime: Runtime,
    pub db: TestState,
    pub height: u64,
    pub timestamp: u64,
    pub outboxes: Vec<Outbox>,
    /// Every event of every applied call, in order.
    pub events: Vec<Event>,
}

impl Chain {
    pub fn new(dev: bool, policy: AttestationPolicy) -> Self {
        let all_burned = FeeSplit {
            burn: 100,
            author: 0,
            treasury: 0,
        };
        Self::with_fee_split(dev, policy, all_burned)
    }

    /// A chain whose fees (and settled gas) are split as `split` says.
    pub fn with_fee_split(dev: bool, policy: AttestationPolicy, split: FeeSplit) -> Self {
        let treasury = phala_types::system::TREASURY;
        let mut allocations: Vec<Allocation> = ["admin", "op1", "op2", "op3"]
            .iter()
            .map(|n| Allocation {
                address: key(n).address(),
                balance: 1_000 * UNIT,
            })
            .collect();
        allocations.push(Allocation {
            address: treasury,
            balance: TOTAL_SUPPLY - 4_000 * UNIT,
        });
        let config = GenesisConfig {
            timestamp: 1_700_000_000_000,
            fees: FeeSchedule {
                base: 1,
                per_byte: 0,
                per_weight: 0,
                split,
                treasury,
            },
            allocations,
            upward_origins: Vec::new(),
            dev,
            registry: RegistryConfig {
                admin: Some(key("admin").address()),
                policy,
                clusters: vec![0, 1],
            },
            contracts: ContractsConfig::default(),
        };
        let runtime = Runtime::new(GENESIS, config);
        let mut db = TestState::default();
        db.apply(&runtime.genesis_changes());
        Chain {
            runtime,
            db,
            height: 0,
            timestamp: 1_700_000_000_000,
            outboxes: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Applies `call` as the next block. A call that fails is included all the same (its fee
    /// paid, its failure recorded, its effects undone): that is committed and its error
    /// returned; an invalid transaction changes nothing.
    pub fn apply(&mut self, signer: &Keypair, call: Call) -> Result<Outbox, TxError> {
        let ctx = self.next_ctx();
        let stx = self.sign_next(signer, [call]).remove(0);
        let nonce = stx.tx.nonce;
        (self.height, self.timestamp) = (ctx.height, ctx.timestamp);
        let mut state = Overlay::new(&self.db);
        let mut outbox = Outbox::default();
        let mut events = Vec::new();
        let outcome = self
            .runtime
            .apply(&mut state, &mut outbox, &mut events, &ctx, &stx)?;
        let changes = state.into_changes();
        self.db.apply(&changes);
        self.outboxes.push(outbox.clone());
        self.events.extend(events.iter().cloned());
        match outcome {
            Outcome::Applied => Ok(outbox),
            Outcome::Failed(error) => {
                assert!(outbox.messages.is_empty(), "a failed call sends nothing");
                assert!(events.is_empty(), "a failed call emits nothing");
                let recorded = Overlay::new(&self.db).get(
                    &phala_chain::balances::keys::last_failure(&signer.address()),
                );
                assert_eq!(recorded, Some(failure_record(nonce, &error)));
                Err(error)
            }
        }
    }

    /// The context of the next block.
    pub fn next_ctx(&self) -> BlockContext {
        BlockContext {
            height: self.height + 1,
            timestamp: self.timestamp + 1_000,
            proposer: key("validator").address(),
        }
    }

    /// `calls` signed by `signer` for the next block, with its next nonces in order.
    pub fn sign_next(
        &self,
        signer: &Keypair,
        calls: impl IntoIterator<Item = Call>,
    ) -> Vec<SignedTransaction> {
        let state = Overlay::new(&self.db);
        let first = phala_chain::balances::account(&state, &signer.address()).nonce;
        let expiry = self.height + 1 + 10;
        calls
            .into_iter()
            .zip(first..)
            .map(|(call, nonce)| {
                let tx = Transaction {
                    signer: signer.address(),
                    nonce,
                    fee: 1,
                    expiry,
                    call,
                };
                signer.sign_transaction(&GENESIS, tx)
            })
            .collect()
    }

    /// Moves the chain forward by `blocks` blocks of one transfer each.
    pub fn advance(&mut self, blocks: u64) {
        for _ in 0..blocks {
            let call = Call::Balances(BalancesCall::Transfer {
                to: key("op2").address(),
                amount: 1,
            });
            self.apply(&key("op3"), call).unwrap();
        }
    }

    /// Every account's balance plus what fees burned: the total supply, always.
    pub fn issuance(&self) -> phala_types::Balance {
        let accounts: phala_types::Balance = self
            .db
            .scan_prefix(phala_chain::balances::keys::ACCOUNT_PREFIX)
            .map(|(_, value)| {
                phala_chain::balances::Account::decode(value)
                    .expect("stored accounts decode")
                    .free
            })
            .sum();
        accounts + phala_chain::balances::burned(&Overlay::new(&self.db))
    }

    pub fn worker(&self, identity: &Keypair) -> Option<phala_types::WorkerRecord> {
        registry::worker(&Overlay::new(&self.db), &identity.address())
    }
}

/// A pRuntime stand-in: identity and ECDH keys, signing registrations and upward messages.
pub struct Enclave {
    pub identity: Keypair,
    pub ecdh: [u8; 32],
    pub sequence: u64,
}

impl Enclave {
    pub fn new(name: &str) -> Self {
        Enclave {
            identity: key(name),
            ecdh: phala_crypto::secrets::EcdhKeypair::from_seed(&[name.len() as u8; 32]).public(),
            sequence: 0,
        }
    }

    pub fn registration(
        &self,
        operator: &Keypair,
        freshness: u64,
        gatekeeper: bool,
    ) -> WorkerRegistration {
        WorkerRegistration {
            identity: self.identity.address(),
            ecdh: self.ecdh,
            operator: operator.address(),
            cores: 4,
            benchmark: 1_000,
            freshness,
            gatekeeper,
            evidence: Evidence::Simulated {
                measurement: [0xaa; 32],
                report_data: report_data(
                    &self.identity.address(),
                    &self.ecdh,
                    GENESIS.as_ref(),
                    freshness,
                ),
            },
        }
    }

    pub fn register(
        &self,
        chain: &mut Chain,
        operator: &Keypair,
        gatekeeper: bool,
    ) -> Result<Outbox, TxError> {
        let signed = self.identity.sign_registration(
            &GENESIS,
            self.registration(operator, chain.height, gatekeeper),
        );
        chain.apply(
            operator,
            Call::Registry(RegistryCall::RegisterWorker(signed)),
        )
    }

    pub fn upward(&mut self, topic: &[u8], payload: Vec<u8>) -> UpwardMessage {
        let mut message = UpwardMessage {
            origin: self.identity.address(),
            topic: Bytes::copy_from_slice(topic),
            payload: Bytes::from(payload),
            sequence: self.sequence,
            signature: [0; 64],
        };
        self.sequence += 1;
        self.identity.sign_upward(&GENESIS, &mut message);
        message
    }
}

impl Enclave {
    /// Signs and relays an upward message through `operator`; `Err("<code>: <reason>")` if the
    /// chain refused it. A message its topic's handler refuses is consumed all the same (the
    /// refusal is recorded and its sequence used); one refused before (origin, signature,
    /// sequence, attestation) is not, and its sequence is free again.
    pub fn send(
        &mut self,
        chain: &mut Chain,
        operator: &Keypair,
        topic: &[u8],
        payload: Vec<u8>,
    ) -> Result<Outbox, String> {
        let message = self.upward(topic, payload);
        let (origin, sequence) = (message.origin, message.sequence);
        match chain.apply(operator, Call::Mq(MqCall::SubmitUpward(message))) {
            Err(error) => {
                self.sequence -= 1;
                Err(format!("{}: {error}", error.code()))
            }
            Ok(outbox) => match mq::refusal(&Overlay::new(&chain.db), &origin, sequence) {
                Some(refusal) => Err(refusal),
                None => Ok(outbox),
            },
        }
    }
}

pub fn refused<T: std::fmt::Debug>(result: Result<T, TxError>) -> TxError {
    result.expect_err("the call must be refused")
}

pub fn downward(outbox: &Outbox, topic: &[u8]) -> Vec<(Destination, u64)> {
    outbox
        .messages
        .iter()
        .filter(|m| m.topic.as_ref() == topic)
        .map(|m| (m.destination, m.sequence))
        .collect()
}
