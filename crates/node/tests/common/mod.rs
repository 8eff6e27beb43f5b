//! What the node's tests share.

use phala_crypto::Keypair;
use phala_node::spec::ChainSpec;
use phala_types::{BalancesCall, Call, SignedTransaction, Transaction, UNIT};

/// A transfer of 1 PHA from the dev account `from` to bob, at `nonce`.
pub fn transfer(spec: &ChainSpec, from: &str, nonce: u64) -> SignedTransaction {
    let key = Keypair::dev(from);
    let tx = Transaction {
        signer: key.address(),
        nonce,
        fee: UNIT / 100,
        expiry: 1_000,
        call: Call::Balances(BalancesCall::Transfer {
            to: Keypair::dev("bob").address(),
            amount: UNIT,
        }),
    };
    key.sign_transaction(&spec.hash(), tx)
}
