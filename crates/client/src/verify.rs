//! Checks that make a client independent of the node's honesty.

use crate::api::{AccountJson, ChainInfo, HeaderJson, parse_digest};
use commonware_codec::{Copying, DecodeExt};
use commonware_consensus::simplex::{
    scheme::bls12381_threshold::standard as threshold, types::Finalization,
};
use commonware_cryptography::{
    bls12381::primitives::{group::G2, variant::MinSig},
    ed25519,
};
use phala_chain::{balances::Account, state::keys};
use phala_types::Digest;

type Scheme = threshold::Scheme<ed25519::PublicKey, MinSig>;

/// Why a proof or certificate does not hold.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("malformed input: {0}")]
    Malformed(String),
    #[error("the state proof does not hold: {0}")]
    Proof(String),
    #[error("the proven account differs from the one reported")]
    AccountMismatch,
    #[error("the certificate is for block {certified}, not {expected}")]
    WrongBlock { certified: String, expected: String },
    #[error("the certificate's signature does not verify against the chain's group key")]
    BadSignature,
}

/// Checks an account answer: its proof against the reported state root proves exactly the
/// reported nonce and balance. (That the state root is final is a separate check:
/// [`verify_finalization`] on the header carrying it.)
pub fn verify_account(account: &AccountJson) -> Result<(), VerifyError> {
    let root =
        parse_digest(&account.state_root).map_err(|e| VerifyError::Malformed(e.to_string()))?;
    let proof = account
        .proof
        .to_proof()
        .map_err(|e| VerifyError::Malformed(e.to_string()))?;
    let value = proof
        .verify(&root, &keys::account(&account.address))
        .map_err(|e| VerifyError::Proof(e.to_string()))?;
    let proven = value
        .and_then(|bytes| Account::decode(&bytes))
        .unwrap_or_default();
    if proven.nonce != account.nonce || proven.free != account.free {
        return Err(VerifyError::AccountMismatch);
    }
    Ok(())
}

/// Checks that `finalization_hex` certifies the block whose header has exactly these fields,
/// with the chain's group key: all a light client needs to trust a block.
pub fn verify_finalization(
    info: &ChainInfo,
    header: &HeaderJson,
    finalization_hex: &str,
) -> Result<(), VerifyError> {
    let malformed = |what: &str| VerifyError::Malformed(what.to_string());
    let bytes = hex::decode(finalization_hex).map_err(|_| malformed("certificate is not hex"))?;
    // The hash is recomputed from the fields: a node cannot pair a real certificate with a
    // forged header.
    let block = header
        .to_header()
        .map_err(|e| VerifyError::Malformed(e.to_string()))?
        .hash();
    let identity = hex::decode(&info.identity).map_err(|_| malformed("identity is not hex"))?;
    let namespace = hex::decode(&info.namespace).map_err(|_| malformed("namespace is not hex"))?;
    verify_certificate(&namespace, &identity, &block, &bytes)
}

/// Checks that the encoded `finalization` certifies the block with digest `block`, under the
/// consensus `namespace` and the chain's group key `identity` (96 bytes): the light-client
/// check, shared by every component that accepts blocks from an untrusted source.
pub fn verify_certificate(
    namespace: &[u8],
    identity: &[u8],
    block: &Digest,
    finalization: &[u8],
) -> Result<(), VerifyError> {
    let finalization = Finalization::<Scheme, Digest>::decode(Copying(finalization))
        .map_err(|e| VerifyError::Malformed(format!("certificate: {e}")))?;
    if finalization.proposal.payload != *block {
        return Err(VerifyError::WrongBlock {
            certified: hex::encode(finalization.proposal.payload),
            expected: hex::encode(block),
        });
    }
    let identity = G2::decode(Copying(identity))
        .map_err(|_| VerifyError::Malformed("identity".to_string()))?;
    let verifier = Scheme::certificate_verifier(namespace, identity);
    let mut rng = commonware_utils::sys_rng();
    if finalization.verify(&mut rng, &verifier, &commonware_parallel::Sequential) {
        Ok(())
    } else {
        Err(VerifyError::BadSignature)
    }
}
