//! The PHA token: accounts with a nonce and a free balance, transfers, and fees.
//!
//! Invariant: the sum of all balances plus [`keys::BURNED`] equals [`TOTAL_SUPPLY`] after every
//! block. Nothing mints after genesis.

use crate::{
    TxError,
    config::GenesisConfig,
    module::{Env, Module, Origin},
    state::{Overlay, StateRead},
    weights::{self, Weight},
};
use phala_types::{Address, Balance, BalancesCall};
use serde::{Deserialize, Serialize};

/// The balances module.
pub struct Balances;

impl Module for Balances {
    const PREFIX: &'static [u8] = b"balances/";
    type Call = BalancesCall;

    fn genesis<S: StateRead + ?Sized>(state: &mut Overlay<S>, config: &GenesisConfig) {
        for allocation in &config.allocations {
            let account = Account {
                nonce: 0,
                free: allocation.balance,
            };
            set_account(state, &allocation.address, account);
        }
    }

    fn weight(call: &BalancesCall) -> Weight {
        match call {
            BalancesCall::Transfer { .. } => weights::writes(2),
        }
    }

    fn dispatch<S: StateRead + ?Sized>(
        env: &mut Env<'_, '_, S>,
        origin: &Origin,
        call: &BalancesCall,
    ) -> Result<(), TxError> {
        match call {
            BalancesCall::Transfer { to, amount } => {
                transfer(env.state, &origin.signer, to, *amount)?;
                env.emit(Event::Transfer {
                    from: origin.signer,
                    to: *to,
                    amount: *amount,
                });
                Ok(())
            }
        }
    }
}

/// What happened in the balances module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum Event {
    /// `amount` moved from `from` to `to` (fees are not transfers).
    Transfer {
        from: Address,
        to: Address,
        #[serde(with = "phala_types::amount::u128_string")]
        amount: Balance,
    },
}

/// Where the module keeps its data.
pub mod keys {
    use phala_types::Address;

    /// Prefix of every account record: balances plus [`BURNED`] are the total supply.
    pub const ACCOUNT_PREFIX: &[u8] = b"balances/account/";

    /// An account record (nonce and free balance).
    pub fn account(address: &Address) -> Vec<u8> {
        [ACCOUNT_PREFIX, &address.0].concat()
    }

    /// The last transaction of `address` whose call failed ([`crate::runtime::failure_record`]).
    pub fn last_failure(address: &Address) -> Vec<u8> {
        [b"balances/failure/".as_slice(), &address.0].concat()
    }

    /// PHA burned by fees so far; balances plus this equal the total supply.
    pub const BURNED: &[u8] = b"balances/burned";
}

/// How a fee is divided, in percent; the parts sum to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeeSplit {
    pub burn: u8,
    pub author: u8,
    pub treasury: u8,
}

/// The minimum fee of a transaction: `base + per_byte × encoded size + per_weight × weight`
/// (see [`crate::weights`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeeSchedule {
    #[serde(with = "phala_types::amount::u128_string")]
    pub base: Balance,
    #[serde(with = "phala_types::amount::u128_string")]
    pub per_byte: Balance,
    /// Per unit of weight (a nanosecond of validator time), so that costly calls cost more.
    #[serde(default, with = "phala_types::amount::u128_string")]
    pub per_weight: Balance,
    pub split: FeeSplit,
    pub treasury: Address,
}

/// One account's balance at genesis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allocation {
    pub address: Address,
    #[serde(with = "phala_types::amount::u128_string")]
    pub balance: Balance,
}

/// An account record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Account {
    /// The nonce the account's next transaction must carry.
    pub nonce: u64,
    #[serde(with = "phala_types::amount::u128_string")]
    pub free: Balance,
}

impl Account {
    pub fn encode(&self) -> Vec<u8> {
        [
            self.nonce.to_be_bytes().as_slice(),
            &self.free.to_be_bytes(),
        ]
        .concat()
    }

    /// Decodes a stored account; `None` for bytes that are not one.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != 24 {
            return None;
        }
        Some(Account {
            nonce: u64::from_be_bytes(bytes[..8].try_into().ok()?),
            free: u128::from_be_bytes(bytes[8..].try_into().ok()?),
        })
    }
}

pub fn account<S: StateRead + ?Sized>(state: &Overlay<S>, address: &Address) -> Account {
    state
        .get(&keys::account(address))
        .and_then(|b| Account::decode(&b))
        .unwrap_or_default()
}

pub fn set_account<S: StateRead + ?Sized>(
    state: &mut Overlay<S>,
    address: &Address,
    account: Account,
) {
    let key = keys::account(address);
    if account == Account::default() {
        state.remove(key);
    } else {
        state.set(key, account.encode());
    }
}

pub fn burned<S: StateRead + ?Sized>(state: &Overlay<S>) -> Balance {
    state.get_u128(keys::BURNED).unwrap_or(0)
}

/// Moves `amount` from `from` to `to`, or fails without changing anything.
pub fn transfer<S: StateRead + ?Sized>(
    state: &mut Overlay<S>,
    from: &Address,
    to: &Address,
    amount: Balance,
) -> Result<(), TxError> {
    if amount == 0 {
        return Err(TxError::ZeroTransfer);
    }
    let mut sender = account(state, from);
    if sender.free < amount {
        return Err(TxError::InsufficientFunds {
            needed: amount,
            available: sender.free,
        });
    }
    sender.free -= amount;
    set_account(state, from, sender);
    let mut receiver = account(state, to);
    // Cannot overflow: every balance is at most the total supply, which fits in u128 many times.
    receiver.free += amount;
    set_account(state, to, receiver);
    Ok(())
}

/// Charges `fee` to `payer` and splits it between burn, the block author and the treasury.
/// The author's and treasury's parts are rounded down; the remainder is burned.
pub fn charge_fee<S: StateRead + ?Sized>(
    state: &mut Overlay<S>,
    schedule: &FeeSchedule,
    payer: &Address,
    author: &Address,
    fee: Balance,
) -> Result<(), TxError> {
    let mut account_ = account(state, payer);
    if account_.free < fee {
        return Err(TxError::InsufficientFunds {
            needed: fee,
            available: account_.free,
        });
    }
    account_.free -= fee;
    set_account(state, payer, account_);
    // Cannot overflow: `fee` is at most the payer's balance, so at most the total supply.
    let to_author = fee * schedule.split.author as u128 / 100;
    let to_treasury = fee * schedule.split.treasury as u128 / 100;
    let to_burn = fee - to_author - to_treasury;
    for (who, part) in [(author, to_author), (&schedule.treasury, to_treasury)] {
        if part > 0 {
            let mut account_ = account(state, who);
            account_.free += part;
            set_account(state, who, account_);
        }
    }
    let burned = burned(state) + to_burn;
    state.set(keys::BURNED.to_vec(), burned.to_be_bytes().to_vec());
    Ok(())
}
