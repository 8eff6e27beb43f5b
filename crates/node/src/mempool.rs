//! Transactions waiting for a block: validated on admission, bounded, served to the block
//! builder in arrival order per sender and nonce order within a sender.

use phala_chain::{Runtime, TxError, balances::Account};
use phala_types::{Address, Digest, SignedTransaction};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// Most transactions held at once.
pub const MAX_POOL: usize = 200_000;
/// How far past its account nonce a sender may queue.
pub const MAX_NONCE_GAP: u64 = 4_096;
/// How many rejection reasons are remembered for status queries.
const REMEMBERED_REJECTIONS: usize = 100_000;

/// Why the mempool refused a transaction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    #[error(transparent)]
    Invalid(#[from] TxError),
    #[error("nonce {got} is too far ahead of the account's nonce {expected}")]
    NonceGap { expected: u64, got: u64 },
    #[error("a transaction with nonce {0} from this account is already pending")]
    NonceTaken(u64),
    #[error("transaction already known")]
    Duplicate,
    #[error("mempool is full")]
    Full,
    #[error("the node is verifying as many quotes as it will; retry in {retry_after_ms} ms")]
    Busy { retry_after_ms: u64 },
}

impl AdmissionError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            AdmissionError::Invalid(e) => e.code(),
            AdmissionError::NonceGap { .. } => "nonce_gap",
            AdmissionError::NonceTaken(_) => "nonce_taken",
            AdmissionError::Duplicate => "duplicate",
            AdmissionError::Full => "mempool_full",
            AdmissionError::Busy { .. } => "busy",
        }
    }
}

struct Entry {
    tx: SignedTransaction,
    hash: Digest,
    arrival: u64,
}

/// The pool.
#[derive(Default)]
pub struct Mempool {
    by_sender: HashMap<Address, BTreeMap<u64, Entry>>,
    by_hash: HashMap<Digest, (Address, u64)>,
    arrivals: u64,
    rejected: HashMap<Digest, (String, String)>,
    rejected_order: VecDeque<Digest>,
}

impl Mempool {
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    pub fn contains(&self, hash: &Digest) -> bool {
        self.by_hash.contains_key(hash)
    }

    /// Every check of [`Mempool::admit`], inserting nothing: the node runs it before a
    /// transaction's expensive checks (a registration's quote), so a transaction the pool would
    /// refuse anyway (a duplicate, expired, a nonce out of reach or taken, funds already
    /// promised, a full pool) costs no verification.
    pub fn precheck(
        &self,
        runtime: &Runtime,
        account: Account,
        height: u64,
        stx: &SignedTransaction,
    ) -> Result<(), AdmissionError> {
        let hash = stx.hash();
        if self.by_hash.contains_key(&hash) {
            return Err(AdmissionError::Duplicate);
        }
        if self.by_hash.len() >= MAX_POOL {
            return Err(AdmissionError::Full);
        }
        let tx = &stx.tx;
        if tx.expiry < height {
            return Err(TxError::Expired {
                expiry: tx.expiry,
                height,
            }
            .into());
        }
        let minimum = runtime.minimum_fee(stx);
        if tx.fee < minimum {
            return Err(TxError::FeeTooLow {
                offered: tx.fee,
                minimum,
            }
            .into());
        }
        if tx.nonce < account.nonce {
            return Err(TxError::BadNonce {
                expected: account.nonce,
                got: tx.nonce,
            }
            .into());
        }
        if tx.nonce >= account.nonce + MAX_NONCE_GAP {
            return Err(AdmissionError::NonceGap {
                expected: account.nonce,
                got: tx.nonce,
            });
        }
        let queue = self.by_sender.get(&tx.signer);
        if queue.is_some_and(|q| q.contains_key(&tx.nonce)) {
            return Err(AdmissionError::NonceTaken(tx.nonce));
        }
        let queued_spend: u128 = queue
            .map(|q| q.values().map(|e| spend(&e.tx)).sum())
            .unwrap_or(0);
        let needed = queued_spend.saturating_add(spend(stx));
        if account.free < needed {
            return Err(TxError::InsufficientFunds {
                needed,
                available: account.free,
            }
            .into());
        }
        Ok(())
    }

    /// Admits a transaction whose size and signature the caller already checked
    /// ([`Runtime::check_stateless`], kept outside the pool's lock because it is the costly part),
    /// judged against the signer's committed `account` at `height` (the next block's height).
    pub fn admit(
        &mut self,
        runtime: &Runtime,
        account: Account,
        height: u64,
        stx: SignedTransaction,
    ) -> Result<Digest, AdmissionError> {
        self.precheck(runtime, account, height, &stx)?;
        let hash = stx.hash();
        let tx = &stx.tx;
        let queue = self.by_sender.entry(tx.signer).or_default();
        self.arrivals += 1;
        self.by_hash.insert(hash, (tx.signer, tx.nonce));
        queue.insert(
            tx.nonce,
            Entry {
                tx: stx,
                hash,
                arrival: self.arrivals,
            },
        );
        Ok(hash)
    }

    /// Candidates for the next block: senders by their oldest pending arrival, each sender's
    /// transactions that run on without a gap from its account nonce (`next_nonce`, as of the
    /// parent block), in nonce order. Those after a gap wait: however many a sender queues,
    /// none of them costs a leader anything until the gap is filled.
    pub fn candidates(
        &self,
        limit: usize,
        next_nonce: impl Fn(&Address) -> u64,
    ) -> Vec<SignedTransaction> {
        let mut senders: Vec<(u64, Vec<&Entry>)> = self
            .by_sender
            .iter()
            .filter_map(|(sender, queue)| {
                let next = next_nonce(sender);
                let ready: Vec<&Entry> = queue
                    .range(next..)
                    .zip(next..)
                    .take_while(|((nonce, _), expected)| *nonce == expected)
                    .map(|((_, entry), _)| entry)
                    .collect();
                let oldest = ready.iter().map(|e| e.arrival).min()?;
                Some((oldest, ready))
            })
            .collect();
        senders.sort_by_key(|(arrival, _)| *arrival);
        senders
            .into_iter()
            .flat_map(|(_, ready)| ready.into_iter().map(|e| e.tx.clone()))
            .take(limit)
            .collect()
    }

    /// Forgets a transaction, remembering why if it was rejected.
    pub fn remove(&mut self, hash: &Digest, rejection: Option<&TxError>) {
        if let Some((sender, nonce)) = self.by_hash.remove(hash)
            && let Some(queue) = self.by_sender.get_mut(&sender)
        {
            queue.remove(&nonce);
            if queue.is_empty() {
                self.by_sender.remove(&sender);
            }
        }
        if let Some(error) = rejection {
            self.remember_rejection(*hash, error.code().into(), error.to_string());
        }
    }

    /// Drops the sender's transactions that a finalized block made stale (nonce below the
    /// account's).
    pub fn prune(&mut self, sender: &Address, account_nonce: u64) {
        let Some(queue) = self.by_sender.get(sender) else {
            return;
        };
        let stale: Vec<Digest> = queue.range(..account_nonce).map(|(_, e)| e.hash).collect();
        for hash in stale {
            self.remove(&hash, None);
        }
    }

    /// Drops every transaction whose expiry is below `height`.
    pub fn prune_expired(&mut self, height: u64) {
        let expired: Vec<(Digest, TxError)> = self
            .by_sender
            .values()
            .flat_map(|q| q.values())
            .filter(|e| e.tx.tx.expiry < height)
            .map(|e| {
                (
                    e.hash,
                    TxError::Expired {
                        expiry: e.tx.tx.expiry,
                        height,
                    },
                )
            })
            .collect();
        for (hash, error) in expired {
            self.remove(&hash, Some(&error));
        }
    }

    /// Why a transaction was rejected, if it was recently.
    pub fn rejection(&self, hash: &Digest) -> Option<&(String, String)> {
        self.rejected.get(hash)
    }

    pub fn remember_rejection(&mut self, hash: Digest, code: String, reason: String) {
        if self.rejected.insert(hash, (code, reason)).is_none() {
            self.rejected_order.push_back(hash);
            if self.rejected_order.len() > REMEMBERED_REJECTIONS
                && let Some(old) = self.rejected_order.pop_front()
            {
                self.rejected.remove(&old);
            }
        }
    }
}

/// What a transaction can take from its signer's balance.
fn spend(stx: &SignedTransaction) -> u128 {
    stx.tx.fee.saturating_add(stx.tx.call.moves())
}
