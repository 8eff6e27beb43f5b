//! The deterministic state transition: genesis, transactions and blocks.

use crate::{
    TxError, balances,
    config::GenesisConfig,
    contracts,
    mq::{self, Outbox},
    registry::{self, RegistrationContext},
    state::{Changes, Overlay, StateRead, keys},
    weights::{self, Weight},
};
use commonware_codec::EncodeSize;
use phala_types::{
    Address, Balance, Call, Digest, Evidence, SignedTransaction, Transaction, UpwardMessage,
    limits,
    registry::{MAX_COLLATERAL, MAX_QUOTE},
};

/// What a block needs from consensus besides its transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockContext {
    pub height: u64,
    pub timestamp: u64,
    pub proposer: Address,
}

/// The result of executing a block: its writes, its downward messages, and which of its
/// transactions failed (included, fee and nonce paid, effects rolled back).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Executed {
    pub changes: Changes,
    pub outbox: Outbox,
    /// `(index in the block, why its call failed)`, in block order.
    pub failures: Vec<(u32, TxError)>,
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

    /// The writes that create the genesis state.
    pub fn genesis_changes(&self) -> Changes {
        let empty = std::collections::BTreeMap::<Vec<u8>, Vec<u8>>::new();
        let mut state = Overlay::new(&empty);
        for allocation in &self.config.allocations {
            let account = balances::Account {
                nonce: 0,
                free: allocation.balance,
            };
            balances::set_account(&mut state, &allocation.address, account);
        }
        for origin in &self.config.upward_origins {
            mq::register_origin(&mut state, origin);
        }
        registry::genesis(&mut state, &self.config.registry);
        contracts::genesis(&mut state, &self.config.contracts);
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
    /// transaction is invalid here (it may not be included, and nothing changes); an
    /// [`Outcome`] means it is included, its call applied or failed.
    pub fn apply<S: StateRead + ?Sized>(
        &self,
        state: &mut Overlay<S>,
        outbox: &mut Outbox,
        ctx: &BlockContext,
        stx: &SignedTransaction,
    ) -> Result<Outcome, TxError> {
        let start = state.checkpoint();
        if let Err(error) = self.pay(state, ctx, stx) {
            state.restore(start);
            return Err(error);
        }
        let paid = state.checkpoint();
        let outbox_len = outbox.messages.len();
        let outcome = match self.dispatch(state, outbox, ctx, &stx.tx) {
            Ok(()) => Outcome::Applied,
            Err(error) => {
                state.restore(paid);
                outbox.messages.truncate(outbox_len);
                let tx = &stx.tx;
                state.set(
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

    /// Runs a call whose fee and nonce were paid.
    fn dispatch<S: StateRead + ?Sized>(
        &self,
        state: &mut Overlay<S>,
        outbox: &mut Outbox,
        ctx: &BlockContext,
        tx: &Transaction,
    ) -> Result<(), TxError> {
        let signer = &tx.signer;
        match &tx.call {
            Call::Transfer { to, amount } => balances::transfer(state, signer, to, *amount),
            Call::SubmitUpward(message) => {
                registry::require_current(state, &message.origin, ctx.height)?;
                mq::accept_upward(state, &self.genesis_hash, message)?;
                // The message is consumed from here on: if its topic's handler refuses it, its
                // effects are undone and the refusal recorded, so one message the chain will
                // never accept cannot block every later message of its sender.
                let checkpoint = state.checkpoint();
                let outbox_len = outbox.messages.len();
                if let Err(error) = self.deliver_upward(state, outbox, ctx, message) {
                    state.restore(checkpoint);
                    outbox.messages.truncate(outbox_len);
                    mq::record_refusal(state, message, &error);
                }
                Ok(())
            }
            Call::RegisterWorker(signed) => {
                let registration = RegistrationContext {
                    genesis: &self.genesis_hash,
                    dev: self.config.dev,
                    block: ctx,
                };
                registry::register(state, &registration, signer, signed)
            }
            Call::SetAttestationPolicy(policy) => {
                registry::set_policy(state, signer, policy, self.config.dev)
            }
            Call::AddGatekeeper(worker) => {
                registry::add_gatekeeper(state, outbox, ctx, signer, worker)
            }
            Call::AssignCluster { worker, cluster } => {
                registry::assign_cluster(state, outbox, ctx, signer, worker, *cluster)
            }
            Call::RotateMasterKey => registry::rotate_master_key(state, outbox, ctx, signer),
            Call::CreateCluster { cluster } => contracts::create_cluster(state, signer, *cluster),
            Call::UploadCode { code } => contracts::upload_code(state, code).map(|_| ()),
            Call::Instantiate {
                code_hash,
                cluster,
                salt,
                storage_quota,
                input,
            } => {
                let args = contracts::Instantiation {
                    code_hash,
                    cluster: *cluster,
                    salt,
                    storage_quota: *storage_quota,
                    input,
                };
                let config = &self.config.contracts;
                contracts::instantiate(state, outbox, ctx, config, signer, args).map(|_| ())
            }
            Call::SetStorageQuota { contract, quota } => {
                let config = &self.config.contracts;
                contracts::set_storage_quota(state, outbox, ctx, config, signer, contract, *quota)
            }
            Call::Command {
                contract,
                gas_limit,
                encapped,
                ciphertext,
            } => {
                let command = contracts::Command {
                    contract,
                    nonce: tx.nonce,
                    gas_limit: *gas_limit,
                    encapped,
                    ciphertext,
                };
                let config = &self.config;
                contracts::command(state, outbox, ctx, &config.contracts, signer, command)
            }
        }
    }

    /// Hands an accepted upward message to the module its topic belongs to (registry,
    /// contracts), or re-publishes it to every worker.
    fn deliver_upward<S: StateRead + ?Sized>(
        &self,
        state: &mut Overlay<S>,
        outbox: &mut Outbox,
        ctx: &BlockContext,
        message: &UpwardMessage,
    ) -> Result<(), TxError> {
        if !registry::on_upward(state, outbox, ctx, message)?
            && !contracts::on_upward(state, outbox, ctx, &self.config.fees, message)?
        {
            mq::relay(state, outbox, ctx, message);
        }
        Ok(())
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
            let outcome = self
                .apply(&mut state, &mut outbox, ctx, stx)
                .map_err(|error| InvalidBlock { index, error })?;
            if let Outcome::Failed(error) = outcome {
                failures.push((index as u32, error));
            }
        }
        Ok(Executed {
            changes: state.into_changes(),
            outbox,
            failures,
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
            Call::SubmitUpward(message) => {
                message.topic.len() <= limits::MAX_UPWARD_TOPIC
                    && message.payload.len() <= limits::MAX_PAYLOAD
            }
            Call::RegisterWorker(signed) => match &signed.registration.evidence {
                Evidence::SgxDcap { quote, collateral } | Evidence::Tdx { quote, collateral } => {
                    quote.len() <= MAX_QUOTE && collateral.len() <= MAX_COLLATERAL
                }
                Evidence::Simulated { .. } => true,
            },
            Call::UploadCode { code } => code.len() <= phala_types::contracts::MAX_CODE,
            Call::Instantiate { input, .. } => input.len() <= phala_types::contracts::MAX_INPUT,
            Call::Command { ciphertext, .. } => {
                ciphertext.len() <= phala_types::contracts::MAX_SEALED
            }
            _ => true,
        };
        if !within_limits {
            return Err(oversized);
        }
        if let Call::Transfer { amount: 0, .. } = stx.tx.call {
            return Err(TxError::ZeroTransfer);
        }
        Ok(())
    }

    /// Builds a block body from candidates (already signature-checked, in priority order):
    /// keeps each that may be included (its call applied or failed), stops at the block limits (size, count, weight) or once the
    /// candidates it tried, dropped ones included, weigh [`weights::BUILD_BUDGET`], and
    /// returns those it dropped.
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
            let applied = self
                .check_form(&stx)
                .and_then(|()| self.apply(&mut state, &mut outbox, ctx, &stx));
            match applied {
                Ok(outcome) => {
                    if let Outcome::Failed(error) = outcome {
                        failures.push((included.len() as u32, error));
                    }
                    bytes += size;
                    block_weight += weight;
                    included.push(stx);
                }
                Err(error) => dropped.push((stx, error)),
            }
        }
        (
            included,
            Executed {
                changes: state.into_changes(),
                outbox,
                failures,
            },
            dropped,
        )
    }
}

/// The record of an account's last failed transaction, under [`keys::last_failure`]: its
/// nonce (8 bytes, big-endian), then the error's code (UTF-8). It puts the outcome under the
/// state root, so validators agree on it and a client can prove it.
pub fn failure_record(nonce: u64, error: &TxError) -> Vec<u8> {
    [nonce.to_be_bytes().as_slice(), error.code().as_bytes()].concat()
}
