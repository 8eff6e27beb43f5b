//! The state machine as users see it: genesis, transfers and fees, every rejection reason,
//! block validity, the message queue with its outbox proofs, and the state commitment.

use bytes::Bytes;
use commonware_codec::{DecodeExt, Encode, EncodeSize, Error as CodecError};
use phala_chain::{
    BlockContext, Executed, InvalidBlock, Runtime, TxError,
    balances::{self, Account},
    balances::{Allocation, FeeSchedule, FeeSplit},
    commitment::mocks::TestState,
    config::{GenesisConfig, GenesisError},
    failure_record, merkle,
    module::Event,
    mq,
    state::{Changes, Overlay, Pending},
    weights,
};
use phala_crypto::Keypair;
use phala_types::{
    Address, Balance, Call, Destination, Digest, SignedTransaction, TOTAL_SUPPLY, Transaction,
    UNIT, UpwardMessage, limits,
};
use phala_types::{BalancesCall, MqCall, RegistryCall};
use std::collections::BTreeMap;

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

const GENESIS: Digest = Digest([0x42; 32]);
const BASE_FEE: Balance = 1_000_000;
const PER_BYTE: Balance = 1_000;
const SPLIT: FeeSplit = FeeSplit {
    burn: 50,
    author: 30,
    treasury: 20,
};
/// Far enough in the future for every test.
const FAR: u64 = 1_000_000;

/// The ten dev accounts the tests move PHA between; the first four hold the whole supply.
const NAMES: [&str; 10] = [
    "alice", "bob", "charlie", "dave", "eve", "ferdie", "grace", "heidi", "ivan", "judy",
];

fn key(name: &str) -> Keypair {
    Keypair::dev(name)
}

/// A test account by name; `treasury` is the chain's keyless treasury.
fn addr(name: &str) -> Address {
    match name {
        "treasury" => phala_types::system::TREASURY,
        _ => key(name).address(),
    }
}

fn fees() -> FeeSchedule {
    FeeSchedule {
        base: BASE_FEE,
        per_byte: PER_BYTE,
        per_weight: 0,
        split: SPLIT,
        treasury: addr("treasury"),
    }
}

fn genesis_config() -> GenesisConfig {
    GenesisConfig {
        timestamp: 1_700_000_000_000,
        fees: fees(),
        allocations: vec![
            Allocation {
                address: addr("alice"),
                balance: 400_000_000 * UNIT,
            },
            Allocation {
                address: addr("bob"),
                balance: 300_000_000 * UNIT,
            },
            Allocation {
                address: addr("charlie"),
                balance: 200_000_000 * UNIT,
            },
            Allocation {
                address: addr("dave"),
                balance: 100_000_000 * UNIT,
            },
        ],
        upward_origins: vec![addr("worker-1")],
        // Dev: the allocations go to dev names (see the production rules below).
        dev: true,
        registry: Default::default(),
        contracts: Default::default(),
    }
}

/// The least fee of a transaction, computed here independently of `Runtime::minimum_fee`.
fn min_fee(tx: &Transaction) -> Balance {
    // The signature is 64 bytes whatever it is, and the fee field's width does not depend on
    // its value, so the size is known before signing.
    let size = SignedTransaction {
        tx: tx.clone(),
        signature: [0; 64],
    }
    .encode_size();
    BASE_FEE + PER_BYTE * size as Balance
}

/// Signs a transaction for the test chain; `fee: None` pays exactly the minimum.
fn signed(
    from: &Keypair,
    nonce: u64,
    fee: Option<Balance>,
    expiry: u64,
    call: Call,
) -> SignedTransaction {
    let mut tx = Transaction {
        signer: from.address(),
        nonce,
        fee: 0,
        expiry,
        call,
    };
    tx.fee = fee.unwrap_or_else(|| min_fee(&tx));
    from.sign_transaction(&GENESIS, tx)
}

fn transfer(from: &Keypair, nonce: u64, to: Address, amount: Balance) -> SignedTransaction {
    signed(
        from,
        nonce,
        None,
        FAR,
        Call::Balances(BalancesCall::Transfer { to, amount }),
    )
}

/// An upward message signed by `origin`.
fn upward(origin: &Keypair, sequence: u64, topic: &[u8], payload: &[u8]) -> UpwardMessage {
    let mut message = UpwardMessage {
        origin: Address::default(),
        topic: Bytes::copy_from_slice(topic),
        payload: Bytes::copy_from_slice(payload),
        sequence,
        signature: [0; 64],
    };
    origin.sign_upward(&GENESIS, &mut message);
    message
}

/// `relayer` submits `message` with the minimum fee.
fn relay(relayer: &Keypair, nonce: u64, message: UpwardMessage) -> SignedTransaction {
    signed(
        relayer,
        nonce,
        None,
        FAR,
        Call::Mq(MqCall::SubmitUpward(message)),
    )
}

/// A chain: the runtime and its committed state, advanced block by block.
struct Chain {
    runtime: Runtime,
    db: TestState,
    height: u64,
    proposer: Address,
}

impl Chain {
    fn new() -> Self {
        let config = genesis_config();
        config.validate().expect("test genesis is valid");
        let runtime = Runtime::new(GENESIS, config);
        let mut db = TestState::default();
        db.apply(&runtime.genesis_changes());
        let chain = Chain {
            runtime,
            db,
            height: 0,
            proposer: addr("validator"),
        };
        chain.assert_supply();
        chain
    }

    /// The context of the next block.
    fn ctx(&self) -> BlockContext {
        BlockContext {
            height: self.height + 1,
            timestamp: 1_700_000_000_000 + self.height,
            proposer: self.proposer,
        }
    }

    /// Executes `txs` as the next block, without committing it.
    fn execute(&self, txs: &[SignedTransaction]) -> Result<Executed, InvalidBlock> {
        self.runtime
            .execute_block(&self.db, Changes::new(), &self.ctx(), txs)
    }

    /// The error of `stx` alone as the next block.
    fn reject(&self, stx: &SignedTransaction) -> TxError {
        let err = self
            .execute(std::slice::from_ref(stx))
            .expect_err("transaction must be rejected");
        assert_eq!(err.index, 0);
        err.error
    }

    /// Commits `stx` alone as the next block, whose call must fail: returns why, after
    /// checking that it was included, paid its fee, used its nonce, recorded its failure and
    /// changed nothing else.
    fn fail(&mut self, stx: &SignedTransaction) -> TxError {
        let before = self.account(&stx.tx.signer);
        let executed = self
            .execute(std::slice::from_ref(stx))
            .expect("a failing call is included");
        let [(0, error)] = executed.failures.as_slice() else {
            panic!("the call must fail: {:?}", executed.failures);
        };
        let error = error.clone();
        assert!(
            executed.outbox.messages.is_empty(),
            "a failed call sends nothing"
        );
        assert!(executed.events.is_empty(), "a failed call emits nothing");
        let fee_keys = [
            balances::keys::account(&stx.tx.signer),
            balances::keys::account(&self.proposer),
            balances::keys::account(&addr("treasury")),
            balances::keys::BURNED.to_vec(),
            balances::keys::last_failure(&stx.tx.signer),
        ];
        for key in executed.changes.keys() {
            assert!(fee_keys.contains(key), "a failed call wrote {key:?}");
        }
        self.commit_executed(&executed);
        let after = self.account(&stx.tx.signer);
        assert_eq!(after.nonce, before.nonce + 1, "the nonce is used");
        if stx.tx.signer != self.proposer {
            assert_eq!(after.free, before.free - stx.tx.fee, "the fee is paid");
        }
        let record = Overlay::new(&self.db).get(&balances::keys::last_failure(&stx.tx.signer));
        assert_eq!(record, Some(failure_record(stx.tx.nonce, &error)));
        error
    }

    /// Executes and commits the next block; checks the speculative root and the supply.
    fn commit(&mut self, txs: &[SignedTransaction]) -> Executed {
        let executed = self.execute(txs).expect("block is valid");
        self.commit_executed(&executed);
        executed
    }

    fn commit_executed(&mut self, executed: &Executed) {
        let speculative = self.db.root_with(&executed.changes);
        self.db.apply(&executed.changes);
        assert_eq!(
            self.db.root(),
            speculative,
            "root_with must predict the applied root"
        );
        self.height += 1;
        self.assert_supply();
    }

    fn account(&self, address: &Address) -> Account {
        balances::account(&Overlay::new(&self.db), address)
    }

    fn free(&self, name: &str) -> Balance {
        self.account(&addr(name)).free
    }

    fn nonce(&self, name: &str) -> u64 {
        self.account(&addr(name)).nonce
    }

    fn burned(&self) -> Balance {
        balances::burned(&Overlay::new(&self.db))
    }

    /// Every account balance in state, plus the burned amount.
    fn issuance(&self) -> Balance {
        let balances: Balance = self
            .db
            .scan_prefix(balances::keys::ACCOUNT_PREFIX)
            .map(|(_, value)| Account::decode(value).expect("stored accounts decode").free)
            .sum();
        balances + self.burned()
    }

    fn assert_supply(&self) {
        assert_eq!(
            self.issuance(),
            TOTAL_SUPPLY,
            "balances + burned must equal the total supply"
        );
    }
}

/// The parts of `fee` as `balances::charge_fee` documents them: author and treasury get their
/// percentage rounded down, the remainder is burned.
fn split(fee: Balance) -> (Balance, Balance, Balance) {
    let author = fee * SPLIT.author as Balance / 100;
    let treasury = fee * SPLIT.treasury as Balance / 100;
    (fee - author - treasury, author, treasury)
}

// ---------------------------------------------------------------------------------------------
// Genesis
// ---------------------------------------------------------------------------------------------

#[test]
fn genesis_validation_rejects_bad_configs() {
    assert_eq!(genesis_config().validate(), Ok(()));

    let mut short = genesis_config();
    short.allocations[3].balance -= 1;
    assert_eq!(
        short.validate(),
        Err(GenesisError::Supply(TOTAL_SUPPLY - 1))
    );

    let mut over = genesis_config();
    over.allocations.push(Allocation {
        address: addr("eve"),
        balance: 1,
    });
    assert_eq!(over.validate(), Err(GenesisError::Supply(TOTAL_SUPPLY + 1)));

    let mut overflow = genesis_config();
    overflow.allocations.push(Allocation {
        address: addr("eve"),
        balance: Balance::MAX,
    });
    assert!(
        matches!(overflow.validate(), Err(GenesisError::Supply(_))),
        "overflow must not wrap"
    );

    let mut empty = genesis_config();
    empty.allocations.clear();
    assert_eq!(empty.validate(), Err(GenesisError::Supply(0)));

    // Twice the same account, still summing to the supply.
    let mut duplicate = genesis_config();
    duplicate.allocations[3].address = addr("alice");
    assert_eq!(
        duplicate.validate(),
        Err(GenesisError::DuplicateAllocation(addr("alice")))
    );

    let mut split_low = genesis_config();
    split_low.fees.split = FeeSplit {
        burn: 50,
        author: 30,
        treasury: 19,
    };
    assert_eq!(split_low.validate(), Err(GenesisError::FeeSplit(99)));

    let mut split_high = genesis_config();
    split_high.fees.split = FeeSplit {
        burn: 200,
        author: 30,
        treasury: 20,
    };
    assert_eq!(split_high.validate(), Err(GenesisError::FeeSplit(250)));

    // The treasury must be keyless, on every chain.
    let mut keyed_treasury = genesis_config();
    keyed_treasury.fees.treasury = addr("alice");
    assert_eq!(
        keyed_treasury.validate(),
        Err(GenesisError::TreasuryWithKey(addr("alice")))
    );
}

/// A chain spec is read strictly: a misspelt or moved setting (clusters once sat under
/// `contracts`) is an error, never silently dropped from a genesis.
#[test]
fn a_genesis_with_an_unknown_setting_does_not_load() {
    let config = Chain::new().runtime.config().clone();
    let json = serde_json::to_value(&config).unwrap();
    assert_eq!(
        serde_json::from_value::<GenesisConfig>(json.clone()).unwrap(),
        config
    );
    for (section, field) in [
        ("contracts", "clusters"),
        ("registry", "admn"),
        ("fees", "bse"),
    ] {
        let mut wrong = json.clone();
        wrong[section][field] = serde_json::json!([0]);
        let error = serde_json::from_value::<GenesisConfig>(wrong).unwrap_err();
        assert!(error.to_string().contains("unknown field"), "{error}");
    }
}

#[test]
fn a_production_genesis_refuses_every_dev_key() {
    let production = |change: &dyn Fn(&mut GenesisConfig)| {
        let mut config = genesis_config();
        config.dev = false;
        for (allocation, name) in config.allocations.iter_mut().zip(["a", "b", "c", "d"]) {
            allocation.address = addr(&format!("holder-{name}"));
        }
        change(&mut config);
        config.validate()
    };
    assert_eq!(production(&|_| {}), Ok(()));
    let refused = |change: &dyn Fn(&mut GenesisConfig)| match production(change) {
        Err(GenesisError::DevKey { role, name, .. }) => (role, name),
        other => panic!("expected a dev key to be refused, got {other:?}"),
    };
    assert_eq!(
        refused(&|c| c.allocations[0].address = addr("alice")),
        ("allocation", "alice".into())
    );
    assert_eq!(
        refused(&|c| c.allocations[2].address = addr("operator-3")),
        ("allocation", "operator-3".into())
    );
    assert_eq!(
        refused(&|c| c.registry.admin = Some(addr("ferdie"))),
        ("admin", "ferdie".into())
    );
    assert_eq!(
        refused(&|c| c.upward_origins.push(key("treasury").address())),
        ("upward origin", "treasury".into())
    );
}

#[test]
fn genesis_state_holds_the_allocations_and_origins() {
    let chain = Chain::new();
    for allocation in &genesis_config().allocations {
        assert_eq!(
            chain.account(&allocation.address),
            Account {
                nonce: 0,
                free: allocation.balance
            }
        );
    }
    for name in &NAMES[4..] {
        assert_eq!(
            chain.account(&addr(name)),
            Account::default(),
            "{name} has nothing"
        );
    }
    assert_eq!(chain.burned(), 0);
    assert_eq!(chain.issuance(), TOTAL_SUPPLY);
    let state = Overlay::new(&chain.db);
    assert_eq!(mq::next_sequence(&state, &addr("worker-1")), Some(0));
    assert_eq!(mq::next_sequence(&state, &addr("worker-2")), None);
    // The state is exactly the four accounts, the one origin and the attestation policy.
    assert_eq!(chain.db.len(), 6);
    // Genesis is deterministic.
    assert_eq!(
        chain.runtime.genesis_changes(),
        Chain::new().runtime.genesis_changes()
    );
}

// ---------------------------------------------------------------------------------------------
// Transfers and fees
// ---------------------------------------------------------------------------------------------

#[test]
fn transfer_moves_amount_bumps_nonce_and_splits_the_fee() {
    let mut chain = Chain::new();
    let alice = key("alice");
    let amount = 12_345 * UNIT + 678;
    let mut tx = Transaction {
        signer: alice.address(),
        nonce: 0,
        fee: 0,
        expiry: FAR,
        call: Call::Balances(BalancesCall::Transfer {
            to: addr("bob"),
            amount,
        }),
    };
    // A fee that is not a multiple of 100, so that rounding shows.
    let fee = min_fee(&tx) + 57;
    tx.fee = fee;
    assert_eq!(fee, 1_178_057, "a transfer is 178 bytes");
    let stx = alice.sign_transaction(&GENESIS, tx);
    assert_eq!(chain.runtime.check_stateless(&stx), Ok(()));

    let (alice0, bob0) = (chain.free("alice"), chain.free("bob"));
    let executed = chain.commit(&[stx]);
    assert!(executed.outbox.messages.is_empty());

    let (to_burn, to_author, to_treasury) = split(fee);
    assert_eq!(
        (to_burn, to_author, to_treasury),
        (589_029, 353_417, 235_611)
    );
    assert_eq!(
        chain.account(&addr("alice")),
        Account {
            nonce: 1,
            free: alice0 - amount - fee
        }
    );
    assert_eq!(
        chain.account(&addr("bob")),
        Account {
            nonce: 0,
            free: bob0 + amount
        }
    );
    assert_eq!(
        chain.account(&addr("validator")),
        Account {
            nonce: 0,
            free: to_author
        }
    );
    assert_eq!(
        chain.account(&addr("treasury")),
        Account {
            nonce: 0,
            free: to_treasury
        }
    );
    assert_eq!(chain.burned(), to_burn);

    // Fees accumulate across blocks.
    let stx = transfer(&alice, 1, addr("bob"), 1);
    let fee2 = stx.tx.fee;
    chain.commit(&[stx]);
    let (burn2, author2, treasury2) = split(fee2);
    assert_eq!(chain.free("validator"), to_author + author2);
    assert_eq!(chain.free("treasury"), to_treasury + treasury2);
    assert_eq!(chain.burned(), to_burn + burn2);
    assert_eq!(chain.nonce("alice"), 2);
}

/// Users read what a transaction did from its events: each names its module and kind, in a
/// JSON shape the node serves as is; a failed call's events are rolled back with it.
#[test]
fn applied_calls_emit_their_modules_events_and_failed_calls_none() {
    let mut chain = Chain::new();
    let alice = key("alice");
    let not_admin = signed(
        &alice,
        1,
        None,
        FAR,
        Call::Registry(RegistryCall::AddGatekeeper(addr("bob"))),
    );
    let executed = chain.commit(&[transfer(&alice, 0, addr("bob"), 5), not_admin]);
    assert_eq!(executed.failures.len(), 1);
    let transfer_event = Event::Balances(balances::Event::Transfer {
        from: alice.address(),
        to: addr("bob"),
        amount: 5,
    });
    assert_eq!(executed.events, vec![(0, transfer_event.clone())]);
    assert_eq!(
        serde_json::to_value(&transfer_event).unwrap(),
        serde_json::json!({
            "module": "balances",
            "event": "transfer",
            "from": alice.address().to_string(),
            "to": addr("bob").to_string(),
            "amount": "5",
        })
    );
}

#[test]
fn transfer_to_self_and_by_the_author_only_costs_the_fee() {
    let mut chain = Chain::new();
    let alice = key("alice");
    let before = chain.free("alice");
    let stx = transfer(&alice, 0, alice.address(), 5 * UNIT);
    let fee = stx.tx.fee;
    chain.commit(&[stx]);
    assert_eq!(
        chain.account(&addr("alice")),
        Account {
            nonce: 1,
            free: before - fee
        }
    );

    // Alice proposes: she gets back the author's share of her own fee.
    chain.proposer = addr("alice");
    let before = chain.free("alice");
    let stx = transfer(&alice, 1, addr("bob"), 7);
    let fee = stx.tx.fee;
    chain.commit(&[stx]);
    let (_, to_author, _) = split(fee);
    assert_eq!(chain.free("alice"), before - 7 - fee + to_author);
}

#[test]
fn an_account_can_be_drained_to_exactly_zero() {
    let mut chain = Chain::new();
    let alice = key("alice");
    let eve = key("eve");
    let probe = transfer(&eve, 0, addr("bob"), 1);
    let fee = probe.tx.fee;
    chain.commit(&[transfer(&alice, 0, eve.address(), fee + 10)]);
    chain.commit(&[transfer(&eve, 0, addr("bob"), 10)]);
    assert_eq!(chain.account(&eve.address()), Account { nonce: 1, free: 0 });
    // Nothing left for the next fee.
    assert_eq!(
        chain.reject(&transfer(&eve, 1, addr("bob"), 1)),
        TxError::InsufficientFunds {
            needed: fee + 1,
            available: 0
        }
    );
}

// ---------------------------------------------------------------------------------------------
// Rejections
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_nonces_are_rejected() {
    let mut chain = Chain::new();
    let alice = key("alice");
    assert_eq!(
        chain.reject(&transfer(&alice, 1, addr("bob"), UNIT)),
        TxError::BadNonce {
            expected: 0,
            got: 1
        },
        "too high"
    );
    assert_eq!(
        chain.reject(&transfer(&alice, u64::MAX, addr("bob"), UNIT)),
        TxError::BadNonce {
            expected: 0,
            got: u64::MAX
        },
        "far too high"
    );
    chain.commit(&[transfer(&alice, 0, addr("bob"), UNIT)]);
    assert_eq!(
        chain.reject(&transfer(&alice, 0, addr("bob"), 2 * UNIT)),
        TxError::BadNonce {
            expected: 1,
            got: 0
        },
        "too low"
    );
    assert_eq!(
        chain.reject(&transfer(&alice, 2, addr("bob"), UNIT)),
        TxError::BadNonce {
            expected: 1,
            got: 2
        },
        "too high after one"
    );
}

#[test]
fn expired_transactions_are_rejected() {
    let mut chain = Chain::new();
    chain.height = 9; // the next block is 10
    let alice = key("alice");
    let call = Call::Balances(BalancesCall::Transfer {
        to: addr("bob"),
        amount: UNIT,
    });
    let late = signed(&alice, 0, None, 9, call.clone());
    assert_eq!(
        chain.reject(&late),
        TxError::Expired {
            expiry: 9,
            height: 10
        }
    );
    let zero = signed(&alice, 0, None, 0, call.clone());
    assert_eq!(
        chain.reject(&zero),
        TxError::Expired {
            expiry: 0,
            height: 10
        }
    );
    // The expiry height itself is still fine.
    let last = signed(&alice, 0, None, 10, call);
    chain.commit(&[last]);
    assert_eq!(chain.nonce("alice"), 1);
}

#[test]
fn fees_below_the_minimum_are_rejected() {
    let mut chain = Chain::new();
    let alice = key("alice");
    let call = Call::Balances(BalancesCall::Transfer {
        to: addr("bob"),
        amount: UNIT,
    });
    let exact = transfer(&alice, 0, addr("bob"), UNIT);
    let minimum = exact.tx.fee;
    assert_eq!(minimum, chain.runtime.minimum_fee(&exact));
    let low = signed(&alice, 0, Some(minimum - 1), FAR, call.clone());
    assert_eq!(
        chain.reject(&low),
        TxError::FeeTooLow {
            offered: minimum - 1,
            minimum
        }
    );
    let none = signed(&alice, 0, Some(0), FAR, call);
    assert_eq!(
        chain.reject(&none),
        TxError::FeeTooLow {
            offered: 0,
            minimum
        }
    );

    // A larger transaction costs more: the per-byte part counts every encoded byte.
    let message = upward(&key("worker-1"), 0, b"t", &[7; 1000]);
    let big = relay(&alice, 0, message.clone());
    let big_min = BASE_FEE + PER_BYTE * big.encode_size() as Balance;
    assert_eq!(big.tx.fee, big_min);
    let low = signed(
        &alice,
        0,
        Some(big_min - 1),
        FAR,
        Call::Mq(MqCall::SubmitUpward(message)),
    );
    assert_eq!(
        chain.reject(&low),
        TxError::FeeTooLow {
            offered: big_min - 1,
            minimum: big_min
        }
    );

    chain.commit(&[exact]);
}

#[test]
fn insufficient_funds_are_rejected_without_charging_anything() {
    let mut chain = Chain::new();
    let alice = key("alice");
    let eve = key("eve");
    let fee = transfer(&eve, 0, addr("bob"), 1).tx.fee;

    // Eve has nothing at all.
    assert_eq!(
        chain.reject(&transfer(&eve, 0, addr("bob"), 1)),
        TxError::InsufficientFunds {
            needed: fee + 1,
            available: 0
        }
    );

    // Not even the fee.
    chain.commit(&[transfer(&alice, 0, eve.address(), fee - 1)]);
    assert_eq!(
        chain.reject(&transfer(&eve, 0, addr("bob"), 1)),
        TxError::InsufficientFunds {
            needed: fee + 1,
            available: fee - 1
        }
    );
    let relay_fee = relay(&eve, 0, upward(&key("worker-1"), 0, b"t", b"p"))
        .tx
        .fee;
    assert!(relay_fee > fee - 1);
    assert_eq!(
        chain.reject(&relay(&eve, 0, upward(&key("worker-1"), 0, b"t", b"p"))),
        TxError::InsufficientFunds {
            needed: relay_fee,
            available: fee - 1
        },
        "the fee alone"
    );

    // The fee but not the fee and the amount.
    chain.commit(&[transfer(&alice, 1, eve.address(), 6)]);
    assert_eq!(chain.free("eve"), fee + 5);
    assert_eq!(
        chain.reject(&transfer(&eve, 0, addr("bob"), 6)),
        TxError::InsufficientFunds {
            needed: fee + 6,
            available: fee + 5
        }
    );
    // A huge amount does not overflow into acceptance.
    assert_eq!(
        chain.reject(&transfer(&eve, 0, addr("bob"), Balance::MAX)),
        TxError::InsufficientFunds {
            needed: Balance::MAX,
            available: fee + 5
        }
    );
    assert_eq!(
        chain.account(&eve.address()),
        Account {
            nonce: 0,
            free: fee + 5
        }
    );
    chain.commit(&[transfer(&eve, 0, addr("bob"), 5)]);
    assert_eq!(chain.account(&eve.address()), Account { nonce: 1, free: 0 });
}

#[test]
fn zero_transfers_are_rejected_and_charge_nothing() {
    let chain = Chain::new();
    let alice = key("alice");
    let stx = transfer(&alice, 0, addr("bob"), 0);
    // It can never succeed, so it is refused at admission, for free.
    assert_eq!(
        chain.runtime.check_stateless(&stx),
        Err(TxError::ZeroTransfer)
    );
    assert_eq!(chain.reject(&stx), TxError::ZeroTransfer);
    // Building drops it with no effect at all: no fee, no nonce.
    let (included, executed, dropped) =
        chain
            .runtime
            .build_block(&chain.db, Changes::new(), &chain.ctx(), [stx.clone()]);
    assert!(included.is_empty());
    assert_eq!(executed, Executed::default());
    assert_eq!(dropped, vec![(stx, TxError::ZeroTransfer)]);
}

#[test]
fn bad_signatures_are_rejected() {
    let chain = Chain::new();
    let alice = key("alice");
    let good = transfer(&alice, 0, addr("bob"), UNIT);
    assert_eq!(chain.runtime.check_stateless(&good), Ok(()));

    // Content changed after signing.
    let mut more = good.clone();
    more.tx.call = Call::Balances(BalancesCall::Transfer {
        to: addr("bob"),
        amount: 1_000 * UNIT,
    });
    assert_eq!(
        chain.runtime.check_stateless(&more),
        Err(TxError::BadSignature)
    );

    // Signature bit flipped.
    let mut flipped = good.clone();
    flipped.signature[10] ^= 1;
    assert_eq!(
        chain.runtime.check_stateless(&flipped),
        Err(TxError::BadSignature)
    );

    // Signed by someone else than the signer field says.
    let mut impostor = key("mallory").sign_transaction(&GENESIS, good.tx.clone());
    assert_eq!(
        chain.runtime.check_stateless(&impostor),
        Err(TxError::BadSignature)
    );
    impostor.signature = [0; 64];
    assert_eq!(
        chain.runtime.check_stateless(&impostor),
        Err(TxError::BadSignature)
    );

    // Signed for another chain.
    let other_chain = alice.sign_transaction(&Digest([0x43; 32]), good.tx.clone());
    assert_eq!(
        chain.runtime.check_stateless(&other_chain),
        Err(TxError::BadSignature)
    );

    // A signer that is not a curve point.
    let mut not_a_key = good.clone();
    not_a_key.tx.signer = Address([0xff; 32]);
    assert_eq!(
        chain.runtime.check_stateless(&not_a_key),
        Err(TxError::BadSignature)
    );

    // In a block, the bad one is found by index, wherever it is.
    let bob = key("bob");
    let others = [
        transfer(&bob, 0, addr("alice"), UNIT),
        transfer(&bob, 1, addr("alice"), UNIT),
    ];
    for bad in [&more, &flipped, &impostor, &other_chain, &not_a_key] {
        for index in 0..=2 {
            let mut txs = others.to_vec();
            txs.insert(index, bad.clone());
            assert_eq!(
                chain.execute(&txs),
                Err(InvalidBlock {
                    index,
                    error: TxError::BadSignature
                }),
                "bad signature at {index}"
            );
        }
    }
    assert!(chain.execute(&[good]).is_ok());
}

/// The largest transaction the codec can produce: a relayed upward message with the longest
/// topic and payload.
fn largest_decodable_tx() -> SignedTransaction {
    let message = upward(
        &key("worker-1"),
        0,
        &[b't'; limits::MAX_UPWARD_TOPIC],
        &vec![1; limits::MAX_PAYLOAD],
    );
    relay(&key("alice"), 0, message)
}

#[test]
fn oversized_transactions_cannot_be_decoded() {
    // MAX_PAYLOAD (32 KiB) keeps every decodable transaction well below MAX_TX_SIZE (64 KiB):
    // an oversized transaction cannot arrive over the wire, so the first line of defence is the
    // codec refusing any payload above MAX_PAYLOAD. Both facts are checked here; the runtime's own
    // size check (for transactions built in memory) is checked by the next test.
    let largest = largest_decodable_tx();
    assert!(
        largest.encode_size() < limits::MAX_TX_SIZE,
        "{} bytes",
        largest.encode_size()
    );
    let decoded = SignedTransaction::decode(largest.encode()).expect("largest transaction decodes");
    assert_eq!(decoded, largest);

    let too_long = |payload: usize, topic: usize| {
        let message = upward(&key("worker-1"), 0, &vec![b't'; topic], &vec![1; payload]);
        (message.clone(), relay(&key("alice"), 0, message))
    };
    let (message, stx) = too_long(limits::MAX_PAYLOAD + 1, 1);
    assert!(matches!(
        UpwardMessage::decode(message.encode()),
        Err(CodecError::InvalidLength(_))
    ));
    assert!(matches!(
        SignedTransaction::decode(stx.encode()),
        Err(CodecError::InvalidLength(_))
    ));
    let (message, stx) = too_long(1, limits::MAX_UPWARD_TOPIC + 1);
    assert!(matches!(
        UpwardMessage::decode(message.encode()),
        Err(CodecError::InvalidLength(_))
    ));
    assert!(matches!(
        SignedTransaction::decode(stx.encode()),
        Err(CodecError::InvalidLength(_))
    ));
}

#[test]
fn oversized_transactions_built_in_memory_are_rejected() {
    let chain = Chain::new();
    let message = upward(&key("worker-1"), 0, b"big", &vec![0; limits::MAX_TX_SIZE]);
    let stx = relay(&key("alice"), 0, message);
    let size = stx.encode_size();
    assert!(size > limits::MAX_TX_SIZE);
    let oversized = TxError::Oversized {
        size,
        limit: limits::MAX_TX_SIZE,
    };
    // Its signature is valid; only its size is wrong.
    assert!(phala_crypto::verify_transaction(&GENESIS, &stx));
    assert_eq!(chain.runtime.check_stateless(&stx), Err(oversized.clone()));
    let bob = key("bob");
    let block = [transfer(&bob, 0, addr("alice"), UNIT), stx.clone()];
    assert_eq!(
        chain.execute(&block),
        Err(InvalidBlock {
            index: 1,
            error: oversized.clone()
        })
    );

    // Next to a badly signed transaction, the block is rejected for the first invalid one, with
    // that one's own error.
    let mut bad = transfer(&bob, 0, addr("alice"), UNIT);
    bad.signature[0] ^= 1;
    assert_eq!(
        chain.execute(&[stx.clone(), bad.clone()]),
        Err(InvalidBlock {
            index: 0,
            error: oversized
        })
    );
    assert_eq!(
        chain.execute(&[bad, stx]),
        Err(InvalidBlock {
            index: 0,
            error: TxError::BadSignature
        })
    );
}

// ---------------------------------------------------------------------------------------------
// Blocks
// ---------------------------------------------------------------------------------------------

#[test]
fn an_empty_block_is_valid_and_changes_no_value() {
    let mut chain = Chain::new();
    let root = chain.db.root();
    let values: Vec<(Vec<u8>, Vec<u8>)> = chain
        .db
        .scan_prefix(b"")
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    assert_eq!(chain.execute(&[]), Ok(Executed::default()));
    let (included, executed, dropped) =
        chain
            .runtime
            .build_block(&chain.db, Changes::new(), &chain.ctx(), []);
    assert!(included.is_empty() && dropped.is_empty());
    assert_eq!(executed, Executed::default());
    chain.commit(&[]);
    chain.commit(&[]);
    assert!(
        chain
            .db
            .scan_prefix(b"")
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .eq(values)
    );
    assert_ne!(chain.db.root(), root, "the root commits to every block");
}

#[test]
fn a_block_with_an_invalid_transaction_is_rejected_at_its_index() {
    let chain = Chain::new();
    let alice = key("alice");
    let bob = key("bob");
    let good = [
        transfer(&alice, 0, addr("bob"), UNIT),
        transfer(&bob, 0, addr("alice"), UNIT),
        transfer(&alice, 1, addr("bob"), UNIT),
    ];
    assert!(chain.execute(&good).is_ok());
    let cases: Vec<(SignedTransaction, TxError)> = vec![
        (
            transfer(&alice, 5, addr("bob"), UNIT),
            TxError::BadNonce {
                expected: 2,
                got: 5,
            },
        ),
        (transfer(&alice, 2, addr("bob"), 0), TxError::ZeroTransfer),
        (
            signed(
                &alice,
                2,
                None,
                0,
                Call::Balances(BalancesCall::Transfer {
                    to: addr("bob"),
                    amount: 1,
                }),
            ),
            TxError::Expired {
                expiry: 0,
                height: 1,
            },
        ),
        (
            signed(
                &alice,
                2,
                Some(1),
                FAR,
                Call::Balances(BalancesCall::Transfer {
                    to: addr("bob"),
                    amount: 1,
                }),
            ),
            TxError::FeeTooLow {
                offered: 1,
                minimum: min_fee(&transfer(&alice, 2, addr("bob"), 1).tx),
            },
        ),
    ];
    for (bad, error) in cases {
        let mut txs = good.to_vec();
        txs.push(bad.clone());
        assert_eq!(
            chain.execute(&txs),
            Err(InvalidBlock {
                index: 3,
                error: error.clone()
            })
        );
        txs.push(transfer(&bob, 1, addr("alice"), UNIT));
        assert_eq!(chain.execute(&txs), Err(InvalidBlock { index: 3, error }));
    }
}

#[test]
fn no_transaction_applies_twice() {
    let mut chain = Chain::new();
    let alice = key("alice");
    let stx = transfer(&alice, 0, addr("bob"), UNIT);
    // Twice in one block.
    assert_eq!(
        chain.execute(&[stx.clone(), stx.clone()]),
        Err(InvalidBlock {
            index: 1,
            error: TxError::BadNonce {
                expected: 1,
                got: 0
            }
        })
    );
    let next = transfer(&alice, 1, addr("bob"), UNIT);
    assert_eq!(
        chain.execute(&[stx.clone(), next.clone(), stx.clone()]),
        Err(InvalidBlock {
            index: 2,
            error: TxError::BadNonce {
                expected: 2,
                got: 0
            }
        })
    );
    // Once applied, in any later block.
    let bob_before = chain.free("bob");
    chain.commit(std::slice::from_ref(&stx));
    assert_eq!(chain.free("bob"), bob_before + UNIT);
    assert_eq!(
        chain.reject(&stx),
        TxError::BadNonce {
            expected: 1,
            got: 0
        }
    );
    chain.commit(std::slice::from_ref(&next));
    chain.commit(&[]);
    for old in [&stx, &next] {
        assert_eq!(
            chain.reject(old),
            TxError::BadNonce {
                expected: 2,
                got: old.tx.nonce
            }
        );
    }
    // And building never includes it.
    let (included, _, dropped) = chain.runtime.build_block(
        &chain.db,
        Changes::new(),
        &chain.ctx(),
        [stx.clone(), next.clone()],
    );
    assert!(included.is_empty());
    assert_eq!(dropped.len(), 2);
    assert_eq!(chain.free("bob"), bob_before + 2 * UNIT);
}

#[test]
fn build_block_keeps_valid_drops_invalid_and_re_executes_identically() {
    let mut chain = Chain::new();
    let alice = key("alice");
    let bob = key("bob");
    let eve = key("eve");
    let worker = key("worker-1");
    chain.commit(&[transfer(&alice, 0, addr("charlie"), UNIT)]);
    chain.proposer = addr("dave");

    let candidates: Vec<(SignedTransaction, Option<TxError>)> = vec![
        (transfer(&alice, 1, eve.address(), 10 * UNIT), None),
        (
            transfer(&alice, 1, addr("bob"), UNIT),
            Some(TxError::BadNonce {
                expected: 2,
                got: 1,
            }),
        ),
        (
            relay(&bob, 0, upward(&worker, 0, b"register", b"hello")),
            None,
        ),
        (
            transfer(&bob, 1, addr("alice"), 0),
            Some(TxError::ZeroTransfer),
        ),
        // Eve spends what she received earlier in the same block.
        (transfer(&eve, 0, addr("judy"), 3 * UNIT), None),
        // A replayed message: included as failed (checked below), its fee paid.
        (
            relay(&bob, 1, upward(&worker, 0, b"register", b"again")),
            None,
        ),
        (relay(&bob, 2, upward(&worker, 1, b"heartbeat", b"1")), None),
        (
            signed(
                &alice,
                2,
                None,
                1,
                Call::Balances(BalancesCall::Transfer {
                    to: addr("bob"),
                    amount: 1,
                }),
            ),
            Some(TxError::Expired {
                expiry: 1,
                height: 2,
            }),
        ),
        (
            transfer(&key("ivan"), 0, addr("bob"), 1),
            Some(TxError::InsufficientFunds {
                needed: min_fee(&transfer(&key("ivan"), 0, addr("bob"), 1).tx) + 1,
                available: 0,
            }),
        ),
        (transfer(&alice, 2, addr("bob"), UNIT), None),
    ];
    let (included, executed, dropped) = chain.runtime.build_block(
        &chain.db,
        Changes::new(),
        &chain.ctx(),
        candidates.iter().map(|(stx, _)| stx.clone()),
    );
    let expected_included: Vec<_> = candidates
        .iter()
        .filter(|(_, e)| e.is_none())
        .map(|(stx, _)| stx.clone())
        .collect();
    let expected_dropped: Vec<_> = candidates
        .iter()
        .filter_map(|(stx, e)| e.clone().map(|e| (stx.clone(), e)))
        .collect();
    assert_eq!(included, expected_included);
    assert_eq!(dropped, expected_dropped);
    let replay = TxError::BadSequence {
        origin: worker.address(),
        expected: 1,
        got: 0,
    };
    assert_eq!(executed.failures, vec![(3, replay)]);
    assert_eq!(executed.outbox.messages.len(), 2);

    // Another node re-executes the proposal to the same changes and outbox.
    assert_eq!(chain.execute(&included), Ok(executed.clone()));
    assert_eq!(
        chain
            .runtime
            .replay_block(&chain.db, Changes::new(), &chain.ctx(), &included),
        Ok(executed.clone())
    );
    chain.commit_executed(&executed);
    assert_eq!(chain.free("judy"), 3 * UNIT);
    assert_eq!(chain.nonce("alice"), 3);
    assert_eq!(chain.nonce("bob"), 3, "the failed replay used a nonce");
    assert_eq!(chain.nonce("eve"), 1);
    assert_eq!(chain.nonce("ivan"), 0);
}

// ---------------------------------------------------------------------------------------------
// Message queue
// ---------------------------------------------------------------------------------------------

fn relayed_topic(origin: &Address, topic: &[u8]) -> Vec<u8> {
    let mut out = b"from/".to_vec();
    out.extend_from_slice(&origin.0);
    out.push(b'/');
    out.extend_from_slice(topic);
    out
}

#[test]
fn upward_messages_are_accepted_in_sequence_and_relayed_downward() {
    let mut chain = Chain::new();
    let alice = key("alice");
    let worker = key("worker-1");
    let origin = worker.address();

    // Sequence 1 before 0 is a gap: the relayer pays for the signature check all the same.
    assert_eq!(
        chain.fail(&relay(&alice, 0, upward(&worker, 1, b"t", b"p"))),
        TxError::BadSequence {
            origin,
            expected: 0,
            got: 1
        }
    );

    let first = upward(&worker, 0, b"keys", b"first payload");
    let executed = chain.commit(&[relay(&alice, 1, first.clone())]);
    assert_eq!(executed.outbox.messages.len(), 1);
    let message = &executed.outbox.messages[0];
    assert_eq!(message.destination, Destination::All);
    assert_eq!(
        message.topic.as_ref(),
        relayed_topic(&origin, b"keys").as_slice()
    );
    assert_eq!(message.payload.as_ref(), b"first payload");
    assert_eq!(
        mq::next_sequence(&Overlay::new(&chain.db), &origin),
        Some(1)
    );

    // The same message again, in a new transaction: a replay.
    assert_eq!(
        chain.fail(&relay(&alice, 2, first)),
        TxError::BadSequence {
            origin,
            expected: 1,
            got: 0
        }
    );
    // A gap.
    assert_eq!(
        chain.fail(&relay(&alice, 3, upward(&worker, 2, b"t", b"p"))),
        TxError::BadSequence {
            origin,
            expected: 1,
            got: 2
        }
    );

    // Sequence 1 then 2 in one block: one downward message each, in order.
    let executed = chain.commit(&[
        relay(&alice, 4, upward(&worker, 1, b"a", b"one")),
        relay(&alice, 5, upward(&worker, 2, b"b", b"two")),
    ]);
    let got: Vec<_> = executed
        .outbox
        .messages
        .iter()
        .map(|m| (m.topic.to_vec(), m.payload.to_vec()))
        .collect();
    assert_eq!(
        got,
        vec![
            (relayed_topic(&origin, b"a"), b"one".to_vec()),
            (relayed_topic(&origin, b"b"), b"two".to_vec())
        ]
    );
    assert_eq!(
        mq::next_sequence(&Overlay::new(&chain.db), &origin),
        Some(3)
    );
}

#[test]
fn upward_messages_need_a_registered_origin_and_its_signature() {
    let mut chain = Chain::new();
    let alice = key("alice");
    let stranger = key("worker-2");
    assert_eq!(
        chain.fail(&relay(&alice, 0, upward(&stranger, 0, b"t", b"p"))),
        TxError::UnknownOrigin(stranger.address())
    );

    let worker = key("worker-1");
    let mut tampered = upward(&worker, 0, b"t", b"pay 1 PHA");
    tampered.payload = Bytes::from_static(b"pay 9 PHA");
    assert_eq!(
        chain.fail(&relay(&alice, 1, tampered)),
        TxError::BadOriginSignature
    );

    let mut retopic = upward(&worker, 0, b"t", b"p");
    retopic.topic = Bytes::from_static(b"u");
    assert_eq!(
        chain.fail(&relay(&alice, 2, retopic)),
        TxError::BadOriginSignature
    );

    // Signed by someone else in the registered origin's name.
    let mut forged = upward(&stranger, 0, b"t", b"p");
    forged.origin = worker.address();
    assert_eq!(
        chain.fail(&relay(&alice, 3, forged)),
        TxError::BadOriginSignature
    );

    // Signed for another chain.
    let mut other_chain = UpwardMessage {
        origin: worker.address(),
        topic: Bytes::from_static(b"t"),
        payload: Bytes::from_static(b"p"),
        sequence: 0,
        signature: [0; 64],
    };
    worker.sign_upward(&Digest([0x43; 32]), &mut other_chain);
    assert_eq!(
        chain.fail(&relay(&alice, 4, other_chain)),
        TxError::BadOriginSignature
    );

    // Each was included as failed: the relayer paid for every signature check, and nothing
    // else changed (`Chain::fail` checks each).
    assert_eq!(chain.nonce("alice"), 5);
    assert_eq!(
        mq::next_sequence(&Overlay::new(&chain.db), &worker.address()),
        Some(0)
    );
}

#[test]
fn outbox_messages_are_proven_by_the_outbox_root() {
    let mut chain = Chain::new();
    let alice = key("alice");
    let worker = key("worker-1");
    let txs: Vec<_> = (0..5u64)
        .map(|i| {
            relay(
                &alice,
                i,
                upward(&worker, i, format!("topic-{i}").as_bytes(), &[i as u8; 40]),
            )
        })
        .collect();
    let executed = chain.commit(&txs);
    let messages = &executed.outbox.messages;
    assert_eq!(messages.len(), 5);
    let root = merkle::outbox_root(messages);
    let leaves: Vec<Digest> = messages.iter().map(merkle::message_leaf).collect();
    assert_eq!(merkle::root(&leaves), root);
    for (index, message) in messages.iter().enumerate() {
        let proof = merkle::prove(&leaves, index).expect("index in range");
        let leaf = merkle::message_leaf(message);
        assert!(
            merkle::verify(&root, &leaf, index as u32, &proof),
            "message {index}"
        );
        // Wrong index.
        for other in 0..messages.len() as u32 + 1 {
            if other != index as u32 {
                assert!(
                    !merkle::verify(&root, &leaf, other, &proof),
                    "message {index} at {other}"
                );
            }
        }
        // Tampered message.
        let mut tampered = message.clone();
        tampered.payload = Bytes::from_static(b"forged");
        assert!(!merkle::verify(
            &root,
            &merkle::message_leaf(&tampered),
            index as u32,
            &proof
        ));
        let mut redirected = message.clone();
        redirected.destination = Destination::Gatekeepers;
        assert!(!merkle::verify(
            &root,
            &merkle::message_leaf(&redirected),
            index as u32,
            &proof
        ));
        // Another block's root.
        assert!(!merkle::verify(
            &merkle::outbox_root(&messages[..4]),
            &leaf,
            index as u32,
            &proof
        ));
    }
    assert!(merkle::prove(&leaves, messages.len()).is_none());
    // The root commits to the order.
    let mut reversed = messages.clone();
    reversed.reverse();
    assert_ne!(merkle::outbox_root(&reversed), root);
}

// ---------------------------------------------------------------------------------------------
// State commitment
// ---------------------------------------------------------------------------------------------

#[test]
fn a_blocks_root_is_predicted_before_it_is_applied_and_commits_to_history() {
    let mut chain = Chain::new();
    let alice = key("alice");
    let genesis_root = chain.db.root();
    let executed = chain
        .execute(&[
            transfer(&alice, 0, addr("eve"), UNIT),
            relay(&alice, 1, upward(&key("worker-1"), 0, b"t", b"p")),
        ])
        .unwrap();
    let speculative = chain.db.root_with(&executed.changes);
    assert_ne!(speculative, genesis_root);
    chain.db.apply(&executed.changes);
    assert_eq!(chain.db.root(), speculative);

    // The root commits to history, block by block: the same blocks give the same root, the
    // same contents written in other batches do not.
    let mut replayed = TestState::default();
    replayed.apply(&chain.runtime.genesis_changes());
    replayed.apply(&executed.changes);
    assert_eq!(replayed.root(), chain.db.root());
    let mut at_once = TestState::default();
    let mut all = chain.runtime.genesis_changes();
    all.extend(executed.changes.clone());
    at_once.apply(&all);
    assert_ne!(at_once.root(), chain.db.root());

    // Executing over an unfinalized parent's writes (as a leader does) writes what executing
    // over them applied does: the block's own writes, hence its root, do not depend on whether
    // its parent was finalized yet.
    let mut base = TestState::default();
    base.apply(&chain.runtime.genesis_changes());
    let ctx = BlockContext {
        height: 2,
        timestamp: 0,
        proposer: addr("validator"),
    };
    let next = [transfer(&alice, 2, addr("bob"), UNIT)];
    let parent = Pending {
        base: &base,
        changes: &executed.changes,
    };
    let over_pending = chain
        .runtime
        .execute_block(&parent, Changes::new(), &ctx, &next)
        .unwrap();
    let over_applied = chain
        .runtime
        .execute_block(&chain.db, Changes::new(), &ctx, &next)
        .unwrap();
    assert_eq!(over_pending.changes, over_applied.changes);
    assert_eq!(over_applied.outbox, over_pending.outbox);

    // Removing a key (a zero genesis allocation writes a deletion) is predicted too.
    let mut deletions = Changes::new();
    deletions.insert(balances::keys::account(&addr("eve")), None);
    deletions.insert(balances::keys::account(&addr("nobody")), None);
    let speculative = chain.db.root_with(&deletions);
    chain.db.apply(&deletions);
    assert_eq!(chain.db.root(), speculative);
}

// ---------------------------------------------------------------------------------------------
// Randomized: many blocks of valid and invalid transfers against a reference model
// ---------------------------------------------------------------------------------------------

/// xorshift64*: deterministic, good enough to pick test cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// What the chain should do, written from the documented rules alone.
#[derive(Clone)]
struct Model {
    accounts: BTreeMap<Address, Account>,
    burned: Balance,
    sequence: u64,
}

impl Model {
    fn new(config: &GenesisConfig) -> Self {
        let accounts = config
            .allocations
            .iter()
            .map(|a| {
                (
                    a.address,
                    Account {
                        nonce: 0,
                        free: a.balance,
                    },
                )
            })
            .collect();
        Model {
            accounts,
            burned: 0,
            sequence: 0,
        }
    }

    fn account(&self, address: &Address) -> Account {
        self.accounts.get(address).copied().unwrap_or_default()
    }

    /// Applies `stx` to the model: `Err` if it is invalid (not included), `Ok(Some(_))` if it
    /// is included but its call fails (fee and nonce paid, nothing else).
    fn apply(
        &mut self,
        stx: &SignedTransaction,
        ctx: &BlockContext,
    ) -> Result<Option<TxError>, TxError> {
        let tx = &stx.tx;
        if let Call::Balances(BalancesCall::Transfer { amount: 0, .. }) = tx.call {
            return Err(TxError::ZeroTransfer); // refused for its form, before anything else
        }
        if tx.expiry < ctx.height {
            return Err(TxError::Expired {
                expiry: tx.expiry,
                height: ctx.height,
            });
        }
        let minimum = min_fee(tx);
        if tx.fee < minimum {
            return Err(TxError::FeeTooLow {
                offered: tx.fee,
                minimum,
            });
        }
        let mut signer = self.account(&tx.signer);
        if tx.nonce != signer.nonce {
            return Err(TxError::BadNonce {
                expected: signer.nonce,
                got: tx.nonce,
            });
        }
        let amount = tx.call.moves();
        let needed = tx.fee.saturating_add(amount);
        if signer.free < needed {
            return Err(TxError::InsufficientFunds {
                needed,
                available: signer.free,
            });
        }
        let failure = match &tx.call {
            Call::Balances(BalancesCall::Transfer { .. }) => None,
            Call::Mq(MqCall::SubmitUpward(message)) if message.sequence != self.sequence => {
                Some(TxError::BadSequence {
                    origin: message.origin,
                    expected: self.sequence,
                    got: message.sequence,
                })
            }
            Call::Mq(MqCall::SubmitUpward(_)) => {
                self.sequence += 1;
                None
            }
            other => unreachable!("the model makes no {other:?}"),
        };
        signer.nonce += 1;
        signer.free -= needed;
        self.accounts.insert(tx.signer, signer);
        if let (Call::Balances(BalancesCall::Transfer { to, amount }), None) = (&tx.call, &failure)
        {
            self.accounts.entry(*to).or_default().free += amount;
        }
        let (to_burn, to_author, to_treasury) = split(tx.fee);
        self.accounts.entry(ctx.proposer).or_default().free += to_author;
        self.accounts.entry(addr("treasury")).or_default().free += to_treasury;
        self.burned += to_burn;
        Ok(failure)
    }
}

#[test]
fn randomized_blocks_match_the_model_and_conserve_supply() {
    let mut chain = Chain::new();
    let mut model = Model::new(chain.runtime.config());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let keys: Vec<Keypair> = NAMES.iter().map(|n| key(n)).collect();
    let worker = key("worker-1");
    let proposers = [
        addr("validator"),
        addr("alice"),
        addr("treasury"),
        addr("eve"),
    ];
    let mut history: Vec<SignedTransaction> = Vec::new();
    let (mut total_included, mut total_failed, mut total_dropped) = (0, 0, 0);
    let mut reasons = std::collections::BTreeSet::new();

    for _ in 0..120 {
        chain.proposer = *rng.pick(&proposers);
        let ctx = chain.ctx();
        // Predict each candidate against a scratch copy, in order, as the builder applies them.
        let mut scratch = model.clone();
        let mut candidates = Vec::new();
        let mut expected = Vec::new();
        for _ in 0..rng.below(25) {
            let stx = if !history.is_empty() && rng.chance(5) {
                // A replay of an already applied transaction.
                rng.pick(&history).clone()
            } else {
                // Mostly signers that can pay, so that most blocks move real money.
                let mut from = rng.pick(&keys);
                for _ in 0..4 {
                    if scratch.account(&from.address()).free > 10 * BASE_FEE || rng.chance(20) {
                        break;
                    }
                    from = rng.pick(&keys);
                }
                let account = scratch.account(&from.address());
                let mut nonce = account.nonce;
                if rng.chance(6) {
                    nonce = nonce.wrapping_add(1 + rng.below(3));
                } else if rng.chance(6) && nonce > 0 {
                    nonce -= 1;
                }
                let expiry = match rng.below(20) {
                    0 => ctx.height - 1,
                    1 => ctx.height,
                    _ => ctx.height + rng.below(50),
                };
                let call = if rng.chance(8) {
                    let sequence = if rng.chance(80) {
                        scratch.sequence
                    } else {
                        rng.below(scratch.sequence + 3)
                    };
                    let payload: Vec<u8> = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
                    Call::Mq(MqCall::SubmitUpward(upward(
                        &worker, sequence, b"random", &payload,
                    )))
                } else {
                    let probe = Transaction {
                        signer: from.address(),
                        nonce,
                        fee: 0,
                        expiry,
                        call: Call::Balances(BalancesCall::Transfer {
                            to: Address::default(),
                            amount: 0,
                        }),
                    };
                    let fee = min_fee(&probe);
                    let spendable = account.free.saturating_sub(fee);
                    let amount = match rng.below(10) {
                        0 => 0,
                        1 => spendable,
                        2 => spendable + 1,
                        3 => spendable / 2 + 1,
                        4 => Balance::MAX,
                        5 => 1 + rng.below(1 << 50) as Balance * rng.below(1 << 20) as Balance,
                        _ => 1 + rng.next() as Balance % (spendable / 4 + 1),
                    };
                    Call::Balances(BalancesCall::Transfer {
                        to: rng.pick(&keys).address(),
                        amount,
                    })
                };
                let mut tx = Transaction {
                    signer: from.address(),
                    nonce,
                    fee: 0,
                    expiry,
                    call,
                };
                let minimum = min_fee(&tx);
                tx.fee = match rng.below(20) {
                    0 => minimum - 1,
                    1 => minimum - 1 - rng.below(minimum as u64 - 1) as Balance,
                    2..=9 => minimum,
                    _ => minimum + rng.below(100_000) as Balance,
                };
                from.sign_transaction(&GENESIS, tx)
            };
            let outcome = scratch.apply(&stx, &ctx);
            candidates.push(stx.clone());
            expected.push((stx, outcome));
        }

        let (included, executed, dropped) =
            chain
                .runtime
                .build_block(&chain.db, Changes::new(), &ctx, candidates);
        let expected_included: Vec<_> = expected
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(stx, _)| stx.clone())
            .collect();
        let expected_failures: Vec<_> = expected
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .enumerate()
            .filter_map(|(i, failure)| failure.clone().map(|e| (i as u32, e)))
            .collect();
        let expected_dropped: Vec<_> = expected
            .iter()
            .filter_map(|(stx, r)| r.clone().err().map(|e| (stx.clone(), e)))
            .collect();
        assert_eq!(included, expected_included, "block {}", ctx.height);
        assert_eq!(executed.failures, expected_failures, "block {}", ctx.height);
        assert_eq!(dropped, expected_dropped, "block {}", ctx.height);
        total_failed += expected_failures.len();
        let upwards = included
            .iter()
            .filter(|s| matches!(s.tx.call, Call::Mq(MqCall::SubmitUpward(_))))
            .count();
        assert_eq!(
            executed.outbox.messages.len(),
            upwards - expected_failures.len()
        );
        total_included += included.len();
        total_dropped += dropped.len();
        reasons.extend(dropped.iter().map(|(_, e)| e.code()));
        reasons.extend(executed.failures.iter().map(|(_, e)| e.code()));

        // Validators re-execute the proposal to the same result.
        assert_eq!(
            chain.execute(&included),
            Ok(executed.clone()),
            "block {}",
            ctx.height
        );
        // Any dropped transaction appended makes the block invalid at its index (unless an
        // earlier transaction now makes it valid, e.g. a nonce gap filled).
        if let Some((bad, _)) = dropped.first() {
            let mut with_bad = included.clone();
            with_bad.push(bad.clone());
            if let Err(err) = chain.execute(&with_bad) {
                assert_eq!(err.index, included.len());
            }
        }

        chain.commit_executed(&executed); // checks root_with and the supply invariant
        model = scratch;
        history.extend(included);

        for address in keys
            .iter()
            .map(Keypair::address)
            .chain([addr("validator"), addr("treasury")])
        {
            assert_eq!(
                chain.account(&address),
                model.account(&address),
                "{address} at {}",
                ctx.height
            );
        }
        assert_eq!(chain.burned(), model.burned);
        assert_eq!(
            mq::next_sequence(&Overlay::new(&chain.db), &worker.address()),
            Some(model.sequence)
        );
        let model_total: Balance =
            model.accounts.values().map(|a| a.free).sum::<Balance>() + model.burned;
        assert_eq!(model_total, TOTAL_SUPPLY);
    }

    println!(
        "{total_included} included ({total_failed} failed), {total_dropped} dropped: {reasons:?}"
    );
    // The sequence really exercised every path and every kind of rejection or failure it can
    // produce.
    assert!(total_included > 500, "{total_included} included");
    assert!(total_dropped > 300, "{total_dropped} dropped");
    assert!(total_failed > 5, "{total_failed} failed");
    for code in [
        "bad_nonce",
        "expired",
        "fee_too_low",
        "insufficient_funds",
        "zero_transfer",
        "bad_sequence",
    ] {
        assert!(reasons.contains(code), "no {code} in {reasons:?}");
    }
    assert!(chain.burned() > 0);
}

// ---------------------------------------------------------------------------------------------
// Codec: the property of the fuzz targets (fuzz/), on mutations of valid encodings
// ---------------------------------------------------------------------------------------------

/// Mutates `bytes` a little: flips, overwrites, truncates, extends, inserts or removes bytes.
fn mutate(rng: &mut Rng, bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for _ in 0..1 + rng.below(3) {
        let at = if out.is_empty() {
            0
        } else {
            rng.below(out.len() as u64) as usize
        };
        match rng.below(6) {
            0 if !out.is_empty() => out[at] ^= 1 << rng.below(8),
            1 if !out.is_empty() => out[at] = rng.next() as u8,
            2 => out.truncate(at),
            3 => out.push(rng.next() as u8),
            4 => out.insert(at, rng.next() as u8),
            _ if !out.is_empty() => {
                out.remove(at);
            }
            _ => {}
        }
    }
    out
}

/// Decodes `bytes` as `T`; if that succeeds, the encoding must give back exactly `bytes`.
fn assert_canonical<T: DecodeExt<()> + Encode + std::fmt::Debug>(bytes: &[u8]) -> bool {
    match T::decode(bytes.to_vec()) {
        Ok(value) => {
            assert_eq!(
                &value.encode()[..],
                bytes,
                "non-canonical encoding of {value:?}"
            );
            true
        }
        Err(_) => false,
    }
}

#[test]
fn decoders_accept_only_canonical_encodings() {
    use phala_types::{Block, DownwardMessage, Header};
    let alice = key("alice");
    let worker = key("worker-1");
    let txs = vec![
        transfer(&alice, 0, addr("bob"), UNIT),
        relay(&alice, 1, upward(&worker, 0, b"topic", b"payload")),
        relay(&alice, 2, upward(&worker, 1, b"", &[9; 200])),
    ];
    let header = Header {
        height: 7,
        parent: Digest([1; 32]),
        timestamp: 1_700_000_000_000,
        tx_root: merkle::tx_root(&txs),
        state_root: Digest([2; 32]),
        outbox_root: Digest([3; 32]),
        epoch: 0,
        proposer: addr("validator"),
    };
    let block = Block::new(header, txs.clone());
    let downward = DownwardMessage {
        destination: Destination::Worker(addr("worker-1")),
        sequence: 7,
        topic: Bytes::from_static(b"from/x/y"),
        payload: Bytes::from_static(b"z"),
    };
    let Call::Mq(MqCall::SubmitUpward(up)) = txs[1].tx.call.clone() else {
        unreachable!()
    };

    let decoded = Block::decode(block.encode()).expect("a block decodes");
    assert_eq!(decoded, block);
    assert_eq!(decoded.header.hash(), block.header.hash());

    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("tx", txs[0].encode().to_vec()),
        ("tx", txs[2].encode().to_vec()),
        ("block", block.encode().to_vec()),
        ("up", up.encode().to_vec()),
        ("down", downward.encode().to_vec()),
    ];
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let mut accepted = 0;
    for (kind, seed) in &seeds {
        assert!(match *kind {
            "tx" => assert_canonical::<SignedTransaction>(seed),
            "block" => assert_canonical::<Block>(seed),
            "up" => assert_canonical::<UpwardMessage>(seed),
            _ => assert_canonical::<DownwardMessage>(seed),
        });
        for _ in 0..2_000 {
            let bytes = mutate(&mut rng, seed);
            // Every decoder sees every input, as the fuzz targets do.
            for ok in [
                assert_canonical::<SignedTransaction>(&bytes),
                assert_canonical::<Block>(&bytes),
                assert_canonical::<UpwardMessage>(&bytes),
                assert_canonical::<DownwardMessage>(&bytes),
            ] {
                accepted += ok as usize;
            }
        }
    }
    // Mutations inside fixed fields decode; the test is only meaningful if some do.
    assert!(accepted > 1_000, "{accepted} mutated inputs decoded");
}

#[test]
fn blocks_are_bounded_by_weight_and_builders_by_what_they_try() {
    let chain = Chain::new();
    let alice = key("alice");
    let one = transfer(&alice, 0, addr("bob"), 1);
    let per_tx = weights::weight(&one, one.encode_size());
    let count = weights::MAX_BLOCK_WEIGHT / per_tx + 1;
    let txs: Vec<_> = (0..count)
        .map(|nonce| transfer(&alice, nonce, addr("bob"), 1))
        .collect();
    // One transaction too many: the block is invalid at that transaction.
    let error = chain.execute(&txs).unwrap_err();
    assert_eq!(error.index as u64, count - 1);
    assert_eq!(
        error.error,
        TxError::BlockTooHeavy {
            limit: weights::MAX_BLOCK_WEIGHT
        }
    );
    // A builder stops at the limit, and its block is valid.
    let ctx = chain.ctx();
    let (included, _, dropped) =
        chain
            .runtime
            .build_block(&chain.db, Changes::new(), &ctx, txs.iter().cloned());
    assert_eq!((included.len() as u64, dropped.len()), (count - 1, 0));
    chain.execute(&included).unwrap();
    // Candidates that all fail are tried only up to the build budget.
    let failing = (0..2 * count).map(|n| transfer(&alice, 1_000_000 + n, addr("bob"), 1));
    let (included, _, dropped) =
        chain
            .runtime
            .build_block(&chain.db, Changes::new(), &ctx, failing);
    assert!(included.is_empty());
    assert_eq!(dropped.len() as u64, weights::BUILD_BUDGET / per_tx);
}
