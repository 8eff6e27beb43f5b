//! The well-known development accounts. Their keys are derived from their names, so anyone can
//! compute them: dev chains fund them for convenience, production chains must never name one
//! (a production genesis that does is refused, and the CLI resolves the names only on dev
//! chains).

use crate::Keypair;
use phala_types::Address;

/// The funded dev accounts a user names on the command line.
pub const DEV_ACCOUNTS: [&str; 6] = ["alice", "bob", "charlie", "dave", "eve", "ferdie"];

/// Funded dev accounts that operate `phala dev`'s workers (one per pherry, so their nonces
/// never collide with a user's).
pub const DEV_OPERATORS: usize = 16;

/// The dev account that operates pRuntime `index` in `phala dev`.
pub fn dev_operator(index: usize) -> Keypair {
    Keypair::dev(&format!("operator-{index}"))
}

/// Every dev name whose key a chain might have been given, the former dev treasury included.
fn names() -> impl Iterator<Item = String> {
    DEV_ACCOUNTS
        .iter()
        .map(|name| name.to_string())
        .chain(std::iter::once("treasury".to_string()))
        .chain((0..DEV_OPERATORS).map(|i| format!("operator-{i}")))
}

/// The dev name `address` belongs to, if it is a dev account's.
pub fn dev_name(address: &Address) -> Option<String> {
    names().find(|name| Keypair::dev(name).address() == *address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_keys_are_recognised_and_others_are_not() {
        assert_eq!(dev_name(&Keypair::dev("alice").address()).unwrap(), "alice");
        assert_eq!(
            dev_name(&dev_operator(15).address()).unwrap(),
            "operator-15"
        );
        assert_eq!(dev_name(&Keypair::generate().address()), None);
    }

    #[test]
    fn system_accounts_have_no_key() {
        for (name, address) in phala_types::system::ALL {
            assert!(
                crate::public_key(&address).is_err(),
                "the {name} account is an ed25519 point: someone could hold its key"
            );
            assert_eq!(dev_name(&address), None);
        }
    }
}
