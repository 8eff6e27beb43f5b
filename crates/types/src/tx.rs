//! Transactions: a call signed by an account, with a nonce against replay, a fee, and an expiry
//! height after which it can never be included.

use crate::{Address, Balance, Call};
use bytes::BufMut;
use commonware_codec::Buf;
use commonware_codec::{Encode, EncodeSize, Error as CodecError, Read, ReadExt, Write};
use commonware_cryptography::{Hasher, Sha256, sha256::Digest};

/// The signed part of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    pub signer: Address,
    /// Must equal the signer's account nonce; each applied transaction increments it.
    pub nonce: u64,
    /// Paid in full by the signer, then split between burn, block author and treasury.
    pub fee: Balance,
    /// The last height at which this transaction may be included.
    pub expiry: u64,
    pub call: Call,
}

impl Write for Transaction {
    fn write(&self, buf: &mut impl BufMut) {
        self.signer.write(buf);
        self.nonce.write(buf);
        self.fee.write(buf);
        self.expiry.write(buf);
        self.call.write(buf);
    }
}

impl EncodeSize for Transaction {
    fn encode_size(&self) -> usize {
        32 + 8 + 16 + 8 + self.call.encode_size()
    }
}

impl Read for Transaction {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        Ok(Transaction {
            signer: Address::read(buf)?,
            nonce: u64::read(buf)?,
            fee: u128::read(buf)?,
            expiry: u64::read(buf)?,
            call: Call::read(buf)?,
        })
    }
}

/// A transaction with the signer's ed25519 signature over its encoding, under the
/// [`crate::namespace::TRANSACTION`] domain and the chain's genesis hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedTransaction {
    pub tx: Transaction,
    pub signature: [u8; 64],
}

impl SignedTransaction {
    /// The transaction's identity: SHA-256 of its full encoding, signature included.
    pub fn hash(&self) -> Digest {
        Sha256::hash(&[&self.encode()])
    }
}

impl Write for SignedTransaction {
    fn write(&self, buf: &mut impl BufMut) {
        self.tx.write(buf);
        self.signature.write(buf);
    }
}

impl EncodeSize for SignedTransaction {
    fn encode_size(&self) -> usize {
        self.tx.encode_size() + 64
    }
}

impl Read for SignedTransaction {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        Ok(SignedTransaction {
            tx: Transaction::read(buf)?,
            signature: <[u8; 64]>::read(buf)?,
        })
    }
}
