//! What each call costs a validator, declared in advance: a call's weight is an upper bound on
//! the time its execution takes, in nanoseconds on the reference machine (the 2-core VM where
//! `cargo bench -p phala-attestation` times a DCAP verification and
//! `cargo bench -p phala-chain --bench block_budget` times block building). Blocks are bounded by weight,
//! fees grow with it, and building a block stops once the weight of what it *tried* (kept or
//! dropped) reaches a budget, so a mempool full of expensive transactions that fail late
//! cannot make a leader miss its slot.

use crate::balances::FeeSchedule;
use phala_types::{Balance, SignedTransaction};

/// A call's weight: nanoseconds of execution on the reference machine, at most.
pub type Weight = u64;

/// Every transaction: its share of a batched signature check, nonce and fee (two account
/// writes and the fee split), its index entries.
pub const TX_BASE: Weight = 40_000;
/// Per encoded byte: decoding, hashing, storing.
pub const PER_BYTE: Weight = 20;
/// One state write beyond the base (a record, a stream message location, an event).
pub const STATE_WRITE: Weight = 3_000;
/// Checking an upward message's origin signature (a single ed25519 verification).
pub const SIGNATURE: Weight = 60_000;
/// Verifying a DCAP quote against its collateral (about 1 ms measured, with room).
pub const DCAP_VERIFICATION: Weight = 2_500_000;

/// Most weight one block may carry: a fraction of a block interval, so verification keeps up.
pub const MAX_BLOCK_WEIGHT: Weight = 400_000_000;
/// Most weight a leader spends trying candidates for one block, the ones it drops included.
pub const BUILD_BUDGET: Weight = MAX_BLOCK_WEIGHT + MAX_BLOCK_WEIGHT / 2;

/// Most contracts one block instantiates. Every worker of a contract's cluster receives its
/// code (up to 192 KiB) in the sync batch that carries the block, and loads it: a block's
/// codes must fit one batch, whatever a deployer does.
pub const MAX_BLOCK_INSTANTIATIONS: Weight = 32;
/// What an instantiation weighs beyond its writes: its share of a block, priced by the code
/// its cluster's workers receive and load rather than by a validator's time, so that a block
/// holds at most [`MAX_BLOCK_INSTANTIATIONS`].
pub const INSTANTIATION: Weight = MAX_BLOCK_WEIGHT / MAX_BLOCK_INSTANTIATIONS;
const _: () = assert!((MAX_BLOCK_INSTANTIATIONS + 1) * INSTANTIATION > MAX_BLOCK_WEIGHT);

/// The heaviest transaction by a validator's time: the largest DCAP registration (an
/// instantiation weighs more, for its workers' sake).
const HEAVIEST: Weight = TX_BASE
    + PER_BYTE * phala_types::limits::MAX_TX_SIZE as Weight
    + SIGNATURE
    + DCAP_VERIFICATION
    + 3 * STATE_WRITE;
// A block has room for 50 of the heaviest transactions, and a leader tries at least a block.
const _: () = assert!(MAX_BLOCK_WEIGHT / HEAVIEST >= 50);
const _: () = assert!(BUILD_BUDGET >= MAX_BLOCK_WEIGHT);

/// The weight of `stx`, whose encoding is `size` bytes: the base, its bytes, and what its
/// module declares for its call.
pub fn weight(stx: &SignedTransaction, size: usize) -> Weight {
    TX_BASE + PER_BYTE * size as Weight + crate::runtime::call_weight(&stx.tx.call)
}

/// The weight of `n` state writes.
pub const fn writes(n: Weight) -> Weight {
    n * STATE_WRITE
}

/// The least fee of a transaction of `size` bytes and `weight`: `base + per_byte × size +
/// per_weight × weight`.
pub fn minimum_fee(fees: &FeeSchedule, size: usize, weight: Weight) -> Balance {
    fees.per_byte
        .saturating_mul(size as Balance)
        .saturating_add(fees.per_weight.saturating_mul(weight as Balance))
        .saturating_add(fees.base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fee_grows_with_the_weight() {
        let fees = FeeSchedule {
            base: 1_000,
            per_byte: 10,
            per_weight: 3,
            split: crate::balances::FeeSplit {
                burn: 100,
                author: 0,
                treasury: 0,
            },
            treasury: phala_types::system::TREASURY,
        };
        assert_eq!(minimum_fee(&fees, 100, 0), 2_000);
        assert_eq!(
            minimum_fee(&fees, 100, DCAP_VERIFICATION),
            2_000 + 3 * DCAP_VERIFICATION as Balance
        );
        let greedy = FeeSchedule {
            per_weight: Balance::MAX,
            ..fees
        };
        assert_eq!(minimum_fee(&greedy, 1, 2), Balance::MAX, "saturates");
    }
}
