//! The deterministic state transition: genesis, transactions and blocks.

use crate::{
    TxError,
    balances::{self, Balances, keys},
    config::GenesisConfig,
    contracts::Contracts,
    module::{Env, Event, Module, Origin},
    mq::{self, Mq, Outbox},
    registry::{self, Registry},
    state::{Changes, Overlay, StateRead},
    weights::{self, Weight},
};
use commonware_codec::EncodeSize;
use phala_types::{
    Address, Balance, BalancesCall, Call, ContractsCall, Digest, Evidence, MqCall, RegistryCall,
    SignedTransaction, Transaction, UpwardMessage, limits,
    registry::{MAX_COLLATERAL, MAX_QUOTE},
};

/// What a block needs from consensus besides its transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockContext {
    pub height: u64,
    pub timestamp: u64,
    pub proposer: Address,
}

/// The result of executing a block: its writes, its downward messages, which of its
/// transactions failed (included, fee and nonce paid, effects rolled back) and the events of
/// those that applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Executed {
    pub changes: Changes,
    pub outbox: Outbox,
    /// `(index in the block, why its call failed)`, in block order.
    pub failures: Vec<(u32, TxError)>,
    /// `(index in the block, what happened)`, in block order.
    pub events: Vec<(u32, Event)>,
}

/// How a transaction that may be included ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its call took effect.
    Applied,
    /// Its call failed after the fee and nonce were paid: it is included, pays its fee, and
    /// its call's effects are rolled back (so failing late, after expensive work, costs the
    /// sender, not the proposer).
    Failed(TxError),
}

/// A block whose transaction at `index` is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("transaction {index} is invalid: {error}")]
pub struct InvalidBlock {
    pub index: usize,
    pub error: TxError,
}

/// The chain's state machine for one chain (one genesis).
#[derive(Debug, Clone)]
pub struct Runtime {
    genesis_hash: Digest,
    config: GenesisConfig,
}

impl Runtime {
    pub fn new(genesis_hash: Digest, config: GenesisConfig) -> Self {
        Runtime {
            genesis_hash,
            config,
        }
    }

    pub fn genesis_hash(&self) -> &Digest {
        &self.genesis_hash
    }

    pub fn config(&self) -> &GenesisConfig {
        &self.config
    }

    /// The writes that create the genesis state, each module's in [`crate::module::LAYERS`]
    /// order.
    pub fn genesis_changes(&self) -> Changes {
        let empty = std::collections::BTreeMap::<Vec<u8>, Vec<u8>>::new();
        let mut state = Overlay::new(&empty);
        Balances::genesis(&mut state, &self.config);
        Mq::genesis(&mut state, &self.config);
        Registry::genesis(&mut state, &self.config);
        Contracts::genesis(&mut state, &self.config);
        state.into_changes()
    }

    /// The least fee `stx` must pay, by its size and weight.
    pub fn minimum_fee(&self, stx: &SignedTransaction) -> Balance {
        let size = stx.encode_size();
        weights::minimum_fee(&self.config.fees, size, weights::weight(stx, size))
    }

    /// Checks what does not depend on state: size, form and signature.
    pub fn check_stateless(&self, stx: &SignedTransaction) -> Result<(), TxError> {
        self.check_form(stx)?;
        if !phala_crypto::verify_transaction(&self.genesis_hash, stx) {
            return Err(TxError::BadSignature);
        }
        Ok(())
    }

    /// Applies one transaction whose signature was already checked. An error means the
    /// transaction is invalid here (it may not be included, and nothing changes), such as
    /// [`TxError::TooManyMessages`] when its messages would take `outbox` past
    /// [`limits::MAX_BLOCK_MESSAGES`] (it fits a later block); an [`Outcome`] means it is
    /// included, its call applied (its events appended to `events`) or failed.
    pub fn apply<S: StateRead + ?Sized>(
        &self,
        state: &mut Overlay<S>,
        outbox: &mut Outbox,
        events: &mut Vec<Event>,
        ctx: &BlockContext,
        stx: &SignedTransaction,
    ) -> Result<Outcome, TxError> {
        let start = state.checkpoint();
        if let Err(error) = self.pay(state, ctx, stx) {
            state.restore(start);
            return Err(error);
        }
        let mut env = Env {
            state,
            outbox,
            events,
            block: ctx,
            genesis_hash: &self.genesis_hash,
            config: &self.config,
        };
        let paid = env.mark();
        let dispatched = dispatch(&mut env, &stx.tx);
        if env.outbox.messages.len() > limits::MAX_BLOCK_MESSAGES {
            env.rollback(paid);
            state.restore(start);
            return Err(TxError::TooManyMessages {
                limit: limits::MAX_BLOCK_MESSAGES,
            });
        }
        let outcome = match dispatched {
            Ok(()) => Outcome::Applied,
            Err(error) => {
                env.rollback(paid);
                let tx = &stx.tx;
                env.state.set(
                    keys::last_failure(&tx.signer),
                    failure_record(tx.nonce, &error),
                );
                Outcome::Failed(error)
            }
        };
        state.commit();
        Ok(outcome)
    }

    /// Checks what makes a transaction includable (expiry, fee, nonce, funds) and takes its
    /// nonce and fee.
    fn pay<S: StateRead + ?Sized>(
        &self,
        state: &mut Overlay<S>,
        ctx: &BlockContext,
        stx: &SignedTransaction,
    ) -> Result<(), TxError> {
        let tx = &stx.tx;
        if tx.expiry < ctx.height {
            return Err(TxError::Expired {
                expiry: tx.expiry,
                height: ctx.height,
            });
        }
        let minimum = self.minimum_fee(stx);
        if tx.fee < minimum {
            return Err(TxError::FeeTooLow {
                offered: tx.fee,
                minimum,
            });
        }
        let mut account = balances::account(state, &tx.signer);
        if tx.nonce != account.nonce {
            return Err(TxError::BadNonce {
                expected: account.nonce,
                got: tx.nonce,
            });
        }
        let needed = tx.fee.saturating_add(tx.call.moves());
        if account.free < needed {
            return Err(TxError::InsufficientFunds {
                needed,
                available: account.free,
            });
        }
        account.nonce += 1;
        balances::set_account(state, &tx.signer, account);
        balances::charge_fee(state, &self.config.fees, &tx.signer, &ctx.proposer, tx.fee)
    }

    /// Executes a proposed block over `base`: every transaction must be valid, signatures
    /// included (checked in one batch), or the whole block is invalid.
    pub fn execute_block<S: StateRead + ?Sized>(
        &self,
        base: &S,
        pending: Changes,
        ctx: &BlockContext,
        txs: &[SignedTransaction],
    ) -> Result<Executed, InvalidBlock> {
        if !phala_crypto::verify_transactions_batch(&self.genesis_hash, txs) {
            // Report the first transaction that fails on its own, with its own reason.
            let (index, error) = txs
                .iter()
                .enumerate()
                .find_map(|(index, stx)| {
                    self.check_stateless(stx).err().map(|error| (index, error))
                })
                .unwrap_or((0, TxError::BadSignature));
            return Err(InvalidBlock { index, error });
        }
        self.replay_block(base, pending, ctx, txs)
    }

    /// Executes a block whose signatures are known good (it was finalized, or verified before).
    pub fn replay_block<S: StateRead + ?Sized>(
        &self,
        base: &S,
        pending: Changes,
        ctx: &BlockContext,
        txs: &[SignedTransaction],
    ) -> Result<Executed, InvalidBlock> {
        let mut state = Overlay::with_changes(base, pending);
        let mut outbox = Outbox::default();
        let mut failures = Vec::new();
        let mut events = Vec::new();
        let mut weight: Weight = 0;
        for (index, stx) in txs.iter().enumerate() {
            self.check_form(stx)
                .map_err(|error| InvalidBlock { index, error })?;
            weight = weight.saturating_add(weights::weight(stx, stx.encode_size()));
            if weight > weights::MAX_BLOCK_WEIGHT {
                let error = TxError::BlockTooHeavy {
                    limit: weights::MAX_BLOCK_WEIGHT,
                };
                return Err(InvalidBlock { index, error });
            }
            let mut applied = Vec::new();
            let outcome = self
                .apply(&mut state, &mut outbox, &mut applied, ctx, stx)
                .map_err(|error| InvalidBlock { index, error })?;
            if let Outcome::Failed(error) = outcome {
                failures.push((index as u32, error));
            }
            events.extend(applied.into_iter().map(|event| (index as u32, event)));
        }
        Ok(Executed {
            changes: state.into_changes(),
            outbox,
            failures,
            events,
        })
    }

    /// The checks of [`Runtime::check_stateless`] short of the signature: size limits, and
    /// calls that can never succeed (a zero transfer), refused at admission for free rather
    /// than included as failed.
    pub fn check_form(&self, stx: &SignedTransaction) -> Result<(), TxError> {
        let size = stx.encode_size();
        let oversized = TxError::Oversized {
            size,
            limit: limits::MAX_TX_SIZE,
        };
        if size > limits::MAX_TX_SIZE {
            return Err(oversized);
        }
        // The decoder refuses these, so only a transaction built in memory can carry them; a
        // block holding one could not be decoded by peers, so the runtime refuses it too.
        let within_limits = match &stx.tx.call {
            Call::Mq(MqCall::SubmitUpward(message)) => {
                message.topic.len() <= limits::MAX_UPWARD_TOPIC
                    && message.payload.len() <= limits::MAX_PAYLOAD
            }
            Call::Registry(RegistryCall::RegisterWorker(signed)) => {
                match &signed.registration.evidence {
                    Evidence::SgxDcap { quote, collateral }
                    | Evidence::Tdx { quote, collateral } => {
                        quote.len() <= MAX_QUOTE && collateral.len() <= MAX_COLLATERAL
                    }
                    Evidence::Simulated { .. } => true,
                }
            }
            Call::Contracts(ContractsCall::UploadCode { code }) => {
                code.len() <= phala_types::contracts::MAX_CODE
            }
            Call::Contracts(ContractsCall::Instantiate { input, .. }) => {
                input.len() <= phala_types::contracts::MAX_INPUT
            }
            Call::Contracts(ContractsCall::Command { ciphertext, .. }) => {
                ciphertext.len() <= phala_types::contracts::MAX_SEALED
            }
            _ => true,
        };
        if !within_limits {
            return Err(oversized);
        }
        if let Call::Balances(BalancesCall::Transfer { amount: 0, .. }) = stx.tx.call {
            return Err(TxError::ZeroTransfer);
        }
        Ok(())
    }

    /// Builds a block body from candidates (already signature-checked, in priority order):
    /// keeps each that may be included (its call applied or failed), stops at the block
    /// limits (size, count, weight) or once the candidates it tried, dropped ones included,
    /// weigh [`weights::BUILD_BUDGET`], and returns those it dropped. A candidate whose
    /// messages do not fit the block's ([`limits::MAX_BLOCK_MESSAGES`]) is neither kept nor
    /// dropped: it waits for the next block.
    pub fn build_block<S: StateRead + ?Sized>(
        &self,
        base: &S,
        pending: Changes,
        ctx: &BlockContext,
        candidates: impl IntoIterator<Item = SignedTransaction>,
    ) -> (
        Vec<SignedTransaction>,
        Executed,
        Vec<(SignedTransaction, TxError)>,
    ) {
        let mut state = Overlay::with_changes(base, pending);
        let mut outbox = Outbox::default();
        let mut included = Vec::new();
        let mut failures = Vec::new();
        let mut events = Vec::new();
        let mut dropped = Vec::new();
        let mut bytes = 0usize;
        let (mut block_weight, mut tried): (Weight, Weight) = (0, 0);
        for stx in candidates {
            let size = stx.encode_size();
            let weight = weights::weight(&stx, size);
            if included.len() >= limits::MAX_BLOCK_TXS
                || bytes + size > limits::MAX_BLOCK_SIZE / 2
                || block_weight + weight > weights::MAX_BLOCK_WEIGHT
                || tried + weight > weights::BUILD_BUDGET
            {
                break;
            }
            tried += weight;
            let mut emitted = Vec::new();
            let applied = self
                .check_form(&stx)
                .and_then(|()| self.apply(&mut state, &mut outbox, &mut emitted, ctx, &stx));
            match applied {
                Ok(outcome) => {
                    let index = included.len() as u32;
                    if let Outcome::Failed(error) = outcome {
                        failures.push((index, error));
                    }
                    events.extend(emitted.into_iter().map(|event| (index, event)));
                    bytes += size;
                    block_weight += weight;
                    included.push(stx);
                }
                // The block's messages are full: the transaction waits for the next block, and
                // those that send none may still fill the rest.
                Err(TxError::TooManyMessages { .. }) => {}
                Err(error) => dropped.push((stx, error)),
            }
        }
        (
            included,
            Executed {
                changes: state.into_changes(),
                outbox,
                failures,
                events,
            },
            dropped,
        )
    }
}

// A call sends at most a report's messages and a few of its own: far fewer than a block may
// hold, so a transaction alone always fits an empty block (one that did not would stay in
// the pool for ever).
const _: () = assert!(4 * phala_types::contracts::MAX_REPORT_EMITS <= limits::MAX_BLOCK_MESSAGES);

/// The dispatcher: runs a call whose fee and nonce were paid in the module it names.
fn dispatch<S: StateRead + ?Sized>(
    env: &mut Env<'_, '_, S>,
    tx: &Transaction,
) -> Result<(), TxError> {
    let origin = Origin {
        signer: tx.signer,
        nonce: tx.nonce,
    };
    match &tx.call {
        Call::Balances(call) => Balances::dispatch(env, &origin, call),
        Call::Mq(call) => {
            let MqCall::SubmitUpward(message) = call;
            registry::require_current(env.state, &message.origin, env.block.height)?;
            Mq::dispatch(env, &origin, call)?;
            deliver_upward(env, message);
            Ok(())
        }
        Call::Registry(call) => Registry::dispatch(env, &origin, call),
        Call::Contracts(call) => Contracts::dispatch(env, &origin, call),
    }
}

/// The weight each module declares for `call` (see [`weights::weight`]).
pub(crate) fn call_weight(call: &Call) -> Weight {
    match call {
        Call::Balances(call) => Balances::weight(call),
        Call::Mq(call) => Mq::weight(call),
        Call::Registry(call) => Registry::weight(call),
        Call::Contracts(call) => Contracts::weight(call),
    }
}

/// Hands an accepted upward message to the module its topic belongs to, or re-publishes it
/// to every worker. The message is consumed either way: if its module refuses it, what the
/// module did is undone and the refusal recorded, so one message the chain will never accept
/// cannot block every later message of its sender.
fn deliver_upward<S: StateRead + ?Sized>(env: &mut Env<'_, '_, S>, message: &UpwardMessage) {
    let before = env.mark();
    let delivered = Registry::on_upward(env, message).and_then(|taken| {
        if taken {
            Ok(true)
        } else {
            Contracts::on_upward(env, message)
        }
    });
    match delivered {
        Ok(true) => {}
        Ok(false) => mq::relay(env.state, env.outbox, env.block, message),
        Err(error) => {
            env.rollback(before);
            mq::record_refusal(env, message, &error);
        }
    }
}

/// The record of an account's last failed transaction, under [`keys::last_failure`]: its
/// nonce (8 bytes, big-endian), then the error's code (UTF-8). It puts the outcome under the
/// state root, so validators agree on it and a client can prove it.
pub fn failure_record(nonce: u64, error: &TxError) -> Vec<u8> {
    [nonce.to_be_bytes().as_slice(), error.code().as_bytes()].concat()
}
