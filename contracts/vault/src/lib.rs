//! A private token: balances only their owners can read, transfers nobody else can see.
//!
//! - init: `supply <n>` credits the deployer with n units.
//! - command `transfer <pha1-address> <amount>`.
//! - query `balance`: `balance=<n>`, the caller's own; query `supply`: `supply=<n>`.

use phala_contract_sdk::{address, env, phala_contract, storage, Address, Contract};

const SUPPLY: &[u8] = b"supply";

pub struct Vault;

phala_contract!(Vault);

fn balance_key(who: &Address) -> Vec<u8> {
    [b"balance/".as_slice(), who].concat()
}

fn balance(who: &Address) -> Result<u128, String> {
    Ok(storage::get_value(&balance_key(who))?.unwrap_or(0))
}

fn set_balance(who: &Address, amount: u128) {
    if amount == 0 {
        storage::remove(&balance_key(who));
    } else {
        storage::set_value(&balance_key(who), &amount);
    }
}

fn words(input: &[u8]) -> Result<Vec<&str>, String> {
    let text = std::str::from_utf8(input).map_err(|_| "the input is not UTF-8 text".to_string())?;
    Ok(text.split_whitespace().collect())
}

fn amount(text: &str) -> Result<u128, String> {
    text.parse()
        .map_err(|_| format!("`{}` is not a whole number of units", text))
}

impl Contract for Vault {
    fn init(input: &[u8]) -> Result<(), String> {
        let supply = match words(input)?.as_slice() {
            ["supply", n] => amount(n)?,
            _ => return Err("init input is `supply <n>`".into()),
        };
        storage::set_value(SUPPLY, &supply);
        set_balance(&env::caller(), supply);
        Ok(())
    }

    fn command(input: &[u8]) -> Result<(), String> {
        match words(input)?.as_slice() {
            ["transfer", to, value] => {
                let to = address::parse(to)?;
                let value = amount(value)?;
                if value == 0 {
                    return Err("cannot transfer zero".into());
                }
                let from = env::caller();
                let available = balance(&from)?;
                if available < value {
                    return Err(format!(
                        "insufficient balance: {} needed, {} available",
                        value, available
                    ));
                }
                set_balance(&from, available - value);
                // Cannot overflow: the total never exceeds the supply.
                set_balance(&to, balance(&to)? + value);
                Ok(())
            }
            _ => Err("command: `transfer <address> <amount>`".into()),
        }
    }

    fn query(input: &[u8]) -> Result<Vec<u8>, String> {
        match words(input)?.as_slice() {
            ["balance"] => Ok(format!("balance={}", balance(&env::caller())?).into_bytes()),
            ["supply"] => {
                let supply: u128 = storage::get_value(SUPPLY)?.unwrap_or(0);
                Ok(format!("supply={}", supply).into_bytes())
            }
            _ => Err("queries: `balance`, `supply`".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use phala_contract_sdk::testing::{account, call_command, call_init, call_query, reset};

    #[test]
    fn transfers_move_private_balances() {
        reset();
        call_init::<Vault>(account(1), "supply 1000").unwrap();
        let bob = address::format(&account(2));
        call_command::<Vault>(account(1), &format!("transfer {} 300", bob)).unwrap();
        assert_eq!(call_query::<Vault>(account(1), "balance"), Ok("balance=700".into()));
        assert_eq!(call_query::<Vault>(account(2), "balance"), Ok("balance=300".into()));
        assert_eq!(call_query::<Vault>(account(3), "balance"), Ok("balance=0".into()));
        assert_eq!(call_query::<Vault>(account(3), "supply"), Ok("supply=1000".into()));
    }

    #[test]
    fn bad_transfers_are_refused() {
        reset();
        call_init::<Vault>(account(1), "supply 10").unwrap();
        let bob = address::format(&account(2));
        assert!(call_command::<Vault>(account(1), &format!("transfer {} 11", bob)).is_err());
        assert!(call_command::<Vault>(account(1), &format!("transfer {} 0", bob)).is_err());
        assert!(call_command::<Vault>(account(2), &format!("transfer {} 1", bob)).is_err());
        assert!(call_command::<Vault>(account(1), "transfer nobody 1").is_err());
        assert_eq!(call_query::<Vault>(account(1), "balance"), Ok("balance=10".into()));
        reset();
        assert!(call_init::<Vault>(account(1), "supply lots").is_err());
    }
}
